/* web_table.c: the compact sweep table of the dashboard (see web_table.h). */
#include "web_table.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "jsonx.h"
#include "umdq.h"

#define SET_ERR(...) do { if (err && errlen) snprintf(err, errlen, __VA_ARGS__); } while (0)

/* What the table keeps of one job: its swept values (a JSON array text in the order of the sweep's
 * swept keys, made once: a config never changes) and the results last read for it. */
typedef struct {
    int key;                     /* index in the sweep cache's keys */
    char *value;                 /* the value as JSON text; owned */
} cached_result;

typedef struct {
    int64_t id;
    char *params;                /* owned */
    cached_result *res;          /* owned */
    int nres;
    int valid;                   /* res still holds when state, attempts and ended are as below */
    char state[12];
    int64_t attempts;
    double ended;                /* the latest attempt's end (-1: none) */
} job_entry;

typedef struct {
    int64_t sweep;               /* 0 = free */
    char *swept;                 /* the swept text the entries were made for; owned */
    job_entry *e;                /* sorted by id; owned */
    int n, cap;
    char **keys;                 /* result keys seen in this sweep; owned */
    int nkeys, capkeys;
    unsigned used;               /* LRU clock */
} sweep_cache;

struct web_table {
    pthread_mutex_t mu;          /* one table is built at a time: it guards the caches */
    sweep_cache c[WEB_TABLE_SWEEPS];
    unsigned clock;
};

int web_table_new(web_table **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return UMDQ_ENOMEM;
    pthread_mutex_init(&(*out)->mu, NULL);
    return 0;
}

static void entry_results_free(job_entry *e) {
    for (int i = 0; i < e->nres; i++) free(e->res[i].value);
    free(e->res);
    e->res = NULL;
    e->nres = 0;
    e->valid = 0;
}

static void cache_clear(sweep_cache *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->e[i].params);
        entry_results_free(&c->e[i]);
    }
    for (int i = 0; i < c->nkeys; i++) free(c->keys[i]);
    free(c->keys);
    free(c->e);
    free(c->swept);
    memset(c, 0, sizeof *c);
}

void web_table_destroy(web_table **tp) {
    if (!tp || !*tp) return;
    for (int i = 0; i < WEB_TABLE_SWEEPS; i++) cache_clear(&(*tp)->c[i]);
    pthread_mutex_destroy(&(*tp)->mu);
    free(*tp);
    *tp = NULL;
}

/* The cache of sweep, made for swept (emptied when it was made for another list). */
static sweep_cache *cache_for(web_table *t, int64_t sweep, const char *swept) {
    sweep_cache *c = NULL;
    for (int i = 0; i < WEB_TABLE_SWEEPS && !c; i++)
        if (t->c[i].sweep == sweep) c = &t->c[i];
    if (!c) {
        c = &t->c[0];
        for (int i = 1; i < WEB_TABLE_SWEEPS; i++)
            if (t->c[i].used < c->used) c = &t->c[i];
        cache_clear(c);
    }
    if (c->swept && strcmp(c->swept, swept) != 0) cache_clear(c);
    if (!c->swept && !(c->swept = strdup(swept))) return NULL;
    c->sweep = sweep;
    c->used = ++t->clock;
    return c;
}

static int entry_cmp(const void *a, const void *b) {
    int64_t x = ((const job_entry *)a)->id, y = ((const job_entry *)b)->id;
    return x < y ? -1 : x > y;
}

static job_entry *cache_get(const sweep_cache *c, int64_t id) {
    job_entry key;
    key.id = id;
    return c->n ? bsearch(&key, c->e, (size_t)c->n, sizeof *c->e, entry_cmp) : NULL;
}

/* The index of a result key in c->keys, added when new; -1 on out of memory. */
static int cache_key(sweep_cache *c, const char *key, int hint) {
    if (hint >= 0 && hint < c->nkeys && strcmp(c->keys[hint], key) == 0) return hint;
    for (int i = 0; i < c->nkeys; i++)
        if (strcmp(c->keys[i], key) == 0) return i;
    if (c->nkeys == c->capkeys) {
        int cap = c->capkeys ? c->capkeys * 2 : 16;
        char **grown = realloc(c->keys, (size_t)cap * sizeof *grown);
        if (!grown) return -1;
        c->keys = grown;
        c->capkeys = cap;
    }
    if (!(c->keys[c->nkeys] = strdup(key))) return -1;
    return c->nkeys++;
}

/* ---- writing ------------------------------------------------------------------------------------------ */

static void put_string(strbuf *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    char buf[256];
    size_t n = 0;
    buf[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (n > sizeof buf - 8) {
            strbuf_append(b, buf, n);
            n = 0;
        }
        if (*p == '"' || *p == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)*p;
        } else if (*p < 0x20) {
            memcpy(buf + n, "\\u00", 4);
            buf[n + 4] = hex[*p >> 4];
            buf[n + 5] = hex[*p & 15];
            n += 6;
        } else {
            buf[n++] = (char)*p;
        }
    }
    buf[n++] = '"';
    strbuf_append(b, buf, n);
}

static void put_int(strbuf *b, int64_t v) {
    char buf[24], *p = buf + sizeof buf;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    strbuf_append(b, p, (size_t)(buf + sizeof buf - p));
}

/* Integral values as integers; others with 10 significant digits; NaN/inf as null. */
static void put_number(strbuf *b, double v) {
    if (!isfinite(v)) {
        strbuf_append(b, "null", 4);
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        put_int(b, (int64_t)v);
        return;
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%.10g", v);
    strbuf_append(b, buf, (size_t)n);
}

/* ---- the query -------------------------------------------------------------------------------------- */

/* A job in a final state whose latest attempt has ended (or that never started) cannot get new
 * results without changing its state or attempts: what was read for it last time still holds. */
static int is_final(const char *state) {
    return strcmp(state, "QUEUED") != 0 && strcmp(state, "RUNNING") != 0;
}

typedef struct {
    int64_t id, idx, attempts, step, seed;
    double ended;                /* -1: no attempt, or one still open (not cacheable) */
    char state[12];
    int worker;                  /* offset in texts, -1 = none */
    int cacheable;               /* final, and its latest attempt (if any) has ended */
    int need;                    /* its results are read in this call */
    int result_attempt;          /* the latest attempt with results read in this call */
    int first, nfresh;           /* results read in this call: fresh[first .. first + nfresh) */
    job_entry *entry;            /* borrowed from the cache */
} row;

typedef struct {
    int64_t id;
    int row;
} row_ref;

static int ref_cmp(const void *a, const void *b) {
    int64_t x = ((const row_ref *)a)->id, y = ((const row_ref *)b)->id;
    return x < y ? -1 : x > y;
}

/* Make sure every row has a cache entry with its params (parsing the configs of new jobs). */
static int fill_params(sqlite3 *db, sweep_cache *c, const cJSON *swept, row *rows, int nrows, char *err,
                       size_t errlen) {
    sqlite3_stmt *st = NULL;
    int rc = 0, added = 0;
    for (int i = 0; i < nrows && rc == 0; i++) {
        if (cache_get(c, rows[i].id)) continue;
        if (!st && sqlite3_prepare_v2(db, "SELECT config FROM jobs WHERE id = ?1", -1, &st, NULL) != SQLITE_OK) {
            SET_ERR("database: %s", sqlite3_errmsg(db));
            return UMDQ_EIO;
        }
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, rows[i].id);
        const char *text = sqlite3_step(st) == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        cJSON *cfg = text ? cJSON_Parse(text) : NULL;
        strbuf b;
        strbuf_init(&b);
        strbuf_append(&b, "[", 1);
        int k = 0;
        const cJSON *key;
        cJSON_ArrayForEach(key, swept) {
            if (k++) strbuf_append(&b, ",", 1);
            const cJSON *v = cJSON_IsString(key) && cfg ? json_path_get(cfg, key->valuestring) : NULL;
            if (!v || json_canonical_append(&b, v) != 0) strbuf_puts(&b, "null");
        }
        strbuf_append(&b, "]", 1);
        cJSON_Delete(cfg);
        char *params = strbuf_steal(&b);
        if (!params) { rc = UMDQ_ENOMEM; break; }
        if (c->n == c->cap) {
            int cap = c->cap ? c->cap * 2 : 1024;
            job_entry *grown = realloc(c->e, (size_t)cap * sizeof *grown);
            if (!grown) { free(params); rc = UMDQ_ENOMEM; break; }
            c->e = grown;
            c->cap = cap;
        }
        memset(&c->e[c->n], 0, sizeof c->e[c->n]);
        c->e[c->n].id = rows[i].id;
        c->e[c->n].params = params;
        c->n++;
        /* keep the entries sorted for cache_get: ids mostly arrive in order */
        if (c->n > 1 && c->e[c->n - 2].id > rows[i].id) added = 1;
    }
    sqlite3_finalize(st);
    if (added) qsort(c->e, (size_t)c->n, sizeof *c->e, entry_cmp);
    for (int i = 0; i < nrows; i++) rows[i].entry = cache_get(c, rows[i].id);
    if (rc == UMDQ_ENOMEM) SET_ERR("out of memory");
    return rc;
}

typedef struct {
    int row, key, attempt;
    char *value;                 /* owned until moved into the row's entry */
} fresh_result;

/* One results row (job_id, attempt, key, value, text at columns 0..4) of a needed job into fresh. */
static int take_result(sqlite3_stmt *st, sweep_cache *c, row *w, int rowix, fresh_result **fresh, int *nfresh,
                       int *capfresh, int *lastkey) {
    int attempt = sqlite3_column_int(st, 1);
    const char *key = (const char *)sqlite3_column_text(st, 2);
    if (!key || attempt < w->result_attempt) return 0;
    if (attempt > w->result_attempt) {
        /* a later attempt: drop what an earlier one reported (its entries are at the end) */
        for (int i = *nfresh - 1; i >= 0 && (*fresh)[i].row == rowix; i--) {
            free((*fresh)[i].value);
            (*nfresh)--;
        }
        w->nfresh = 0;
        w->result_attempt = attempt;
    }
    int k = cache_key(c, key, *lastkey + 1);
    if (k < 0) return UMDQ_ENOMEM;
    *lastkey = k;
    strbuf v;
    strbuf_init(&v);
    if (sqlite3_column_type(st, 4) != SQLITE_NULL) put_string(&v, (const char *)sqlite3_column_text(st, 4));
    else if (sqlite3_column_type(st, 3) == SQLITE_NULL) strbuf_append(&v, "null", 4);
    else put_number(&v, sqlite3_column_double(st, 3));
    char *text = strbuf_steal(&v);
    if (!text) return UMDQ_ENOMEM;
    if (*nfresh == *capfresh) {
        int cap = *capfresh ? *capfresh * 2 : 1024;
        fresh_result *grown = realloc(*fresh, (size_t)cap * sizeof *grown);
        if (!grown) {
            free(text);
            return UMDQ_ENOMEM;
        }
        *fresh = grown;
        *capfresh = cap;
    }
    if (w->nfresh == 0) w->first = *nfresh;
    (*fresh)[(*nfresh)++] = (fresh_result){rowix, k, attempt, text};
    w->nfresh++;
    return 0;
}

static int name_cmp(const void *a, const void *b, void *keys) {
    char *const *k = keys;
    return strcmp(k[*(const int *)a], k[*(const int *)b]);
}

int web_table_query(web_table *t, sqlite3 *db, int64_t sweep, strbuf *out, char *err, size_t errlen) {
    sqlite3_stmt *st = NULL;
    row *rows = NULL;
    row_ref *refs = NULL;
    fresh_result *fresh = NULL;
    int *sorted = NULL, *pos = NULL;
    const char **cells = NULL;
    cJSON *swept = NULL;
    strbuf texts;
    int rc = 0, r, nrows = 0, caprows = 0, nfresh = 0, capfresh = 0, nneed = 0;
    strbuf_init(&texts);
    strbuf_append(&texts, "", 1); /* offsets start at 1 */
    pthread_mutex_lock(&t->mu);

    if (sqlite3_prepare_v2(db, "SELECT swept FROM sweeps WHERE id = ?1", -1, &st, NULL) != SQLITE_OK) goto db_fail;
    sqlite3_bind_int64(st, 1, sweep);
    if ((r = sqlite3_step(st)) != SQLITE_ROW) {
        if (r != SQLITE_DONE) goto db_fail;
        SET_ERR("no sweep %lld", (long long)sweep);
        rc = UMDQ_ENOTFOUND;
        goto done;
    }
    const char *swept_text = (const char *)sqlite3_column_text(st, 0);
    if (!swept_text) swept_text = "[]";
    swept = cJSON_Parse(swept_text);
    if (!cJSON_IsArray(swept)) {
        cJSON_Delete(swept);
        swept = cJSON_CreateArray();
        swept_text = "[]";
    }
    sweep_cache *c = cache_for(t, sweep, swept_text);
    if (!c || !swept) goto oom;
    strbuf_puts(out, "{\"sweep\":");
    put_int(out, sweep);
    strbuf_puts(out, ",\"swept\":");
    strbuf_puts(out, swept_text);
    sqlite3_finalize(st);
    st = NULL;

    /* the job rows, in the sweep's order */
    if (sqlite3_prepare_v2(db, "SELECT j.id, j.idx, j.state, j.attempts, j.step, j.seed, a.worker_id, a.ended "
                               "FROM jobs j LEFT JOIN attempts a ON a.job_id = j.id AND a.n = j.attempts "
                               "WHERE j.sweep_id = ?1 ORDER BY j.idx, j.id", -1, &st, NULL) != SQLITE_OK)
        goto db_fail;
    sqlite3_bind_int64(st, 1, sweep);
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (nrows == caprows) {
            caprows = caprows ? caprows * 2 : 1024;
            row *grown = realloc(rows, (size_t)caprows * sizeof *grown);
            if (!grown) goto oom;
            rows = grown;
        }
        row *w = &rows[nrows++];
        memset(w, 0, sizeof *w);
        w->id = sqlite3_column_int64(st, 0);
        w->idx = sqlite3_column_int64(st, 1);
        snprintf(w->state, sizeof w->state, "%s", (const char *)sqlite3_column_text(st, 2));
        w->attempts = sqlite3_column_int64(st, 3);
        w->step = sqlite3_column_int64(st, 4);
        w->seed = sqlite3_column_int64(st, 5);
        w->worker = -1;
        w->result_attempt = -1;
        if (sqlite3_column_type(st, 6) != SQLITE_NULL) {
            w->worker = (int)texts.len;
            strbuf_append(&texts, (const char *)sqlite3_column_text(st, 6), (size_t)sqlite3_column_bytes(st, 6) + 1);
        }
        int ended = sqlite3_column_type(st, 7) != SQLITE_NULL;
        w->ended = ended ? sqlite3_column_double(st, 7) : -1;
        w->cacheable = is_final(w->state) && (w->attempts == 0 || ended);
    }
    if (r != SQLITE_DONE) goto db_fail;
    sqlite3_finalize(st);
    st = NULL;
    if (texts.oom) goto oom;
    if ((rc = fill_params(db, c, swept, rows, nrows, err, errlen)) != 0) goto done;

    /* results: read for the jobs whose cached ones may be stale */
    for (int i = 0; i < nrows; i++) {
        const job_entry *e = rows[i].entry;
        rows[i].need = !(rows[i].cacheable && e->valid && strcmp(e->state, rows[i].state) == 0 &&
                         e->attempts == rows[i].attempts && e->ended == rows[i].ended);
        nneed += rows[i].need;
    }
    int lastkey = -1;
    if (nneed > nrows / 8) {
        /* many: one pass over the sweep's results */
        refs = malloc((size_t)(nrows ? nrows : 1) * sizeof *refs);
        if (!refs) goto oom;
        for (int i = 0; i < nrows; i++) refs[i] = (row_ref){rows[i].id, i};
        qsort(refs, (size_t)nrows, sizeof *refs, ref_cmp);
        if (sqlite3_prepare_v2(db, "SELECT r.job_id, r.attempt, r.key, r.value, r.text FROM jobs j "
                                   "JOIN results r ON r.job_id = j.id WHERE j.sweep_id = ?1 "
                                   "ORDER BY r.job_id, r.attempt, r.key", -1, &st, NULL) != SQLITE_OK)
            goto db_fail;
        sqlite3_bind_int64(st, 1, sweep);
        while ((r = sqlite3_step(st)) == SQLITE_ROW) {
            row_ref want = {sqlite3_column_int64(st, 0), 0};
            const row_ref *hit = bsearch(&want, refs, (size_t)nrows, sizeof *refs, ref_cmp);
            if (!hit || !rows[hit->row].need) continue;
            if (take_result(st, c, &rows[hit->row], hit->row, &fresh, &nfresh, &capfresh, &lastkey) != 0) goto oom;
        }
        if (r != SQLITE_DONE) goto db_fail;
    } else if (nneed > 0) {
        /* few (the running ones): each job's own */
        if (sqlite3_prepare_v2(db, "SELECT job_id, attempt, key, value, text FROM results WHERE job_id = ?1 "
                                   "ORDER BY attempt, key", -1, &st, NULL) != SQLITE_OK)
            goto db_fail;
        for (int i = 0; i < nrows; i++) {
            if (!rows[i].need) continue;
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, rows[i].id);
            while ((r = sqlite3_step(st)) == SQLITE_ROW)
                if (take_result(st, c, &rows[i], i, &fresh, &nfresh, &capfresh, &lastkey) != 0) goto oom;
            if (r != SQLITE_DONE) goto db_fail;
        }
    }
    sqlite3_finalize(st);
    st = NULL;
    /* what was read replaces the entries' results (each job's rows come together, so fresh holds
     * a row's results side by side) */
    for (int i = 0; i < nrows; i++) {
        row *w = &rows[i];
        if (!w->need) continue;
        job_entry *e = w->entry;
        entry_results_free(e);
        int f = w->first;
        if (w->nfresh > 0) {
            if (!(e->res = malloc((size_t)w->nfresh * sizeof *e->res))) goto oom;
            for (int k = 0; k < w->nfresh; k++, f++) {
                e->res[k] = (cached_result){fresh[f].key, fresh[f].value};
                fresh[f].value = NULL;
            }
            e->nres = w->nfresh;
        }
        e->valid = w->cacheable;
        snprintf(e->state, sizeof e->state, "%s", w->state);
        e->attempts = w->attempts;
        e->ended = w->ended;
    }

    /* the result columns: every key some row has, by name */
    pos = malloc((size_t)(c->nkeys ? c->nkeys : 1) * sizeof *pos);
    sorted = malloc((size_t)(c->nkeys ? c->nkeys : 1) * sizeof *sorted);
    if (!pos || !sorted) goto oom;
    for (int k = 0; k < c->nkeys; k++) pos[k] = -1;
    for (int i = 0; i < nrows; i++)
        for (int k = 0; k < rows[i].entry->nres; k++) pos[rows[i].entry->res[k].key] = 0;
    int ncols = 0;
    for (int k = 0; k < c->nkeys; k++)
        if (pos[k] == 0) sorted[ncols++] = k;
    qsort_r(sorted, (size_t)ncols, sizeof *sorted, name_cmp, c->keys);
    for (int k = 0; k < ncols; k++) pos[sorted[k]] = k;
    cells = malloc((size_t)(ncols ? ncols : 1) * sizeof *cells);
    if (!cells) goto oom;

    strbuf_puts(out, ",\"results\":[");
    for (int k = 0; k < ncols; k++) {
        if (k) strbuf_append(out, ",", 1);
        put_string(out, c->keys[sorted[k]]);
    }
    strbuf_puts(out, "],\"columns\":[\"id\",\"idx\",\"state\",\"attempts\",\"step\",\"seed\",\"worker\",\"params\","
                     "\"results\"],\"rows\":[");
    for (int i = 0; i < nrows; i++) {
        const row *w = &rows[i];
        strbuf_append(out, i ? ",[" : "[", i ? 2 : 1);
        put_int(out, w->id);
        strbuf_append(out, ",", 1);
        put_int(out, w->idx);
        strbuf_append(out, ",", 1);
        put_string(out, w->state);
        strbuf_append(out, ",", 1);
        put_int(out, w->attempts);
        strbuf_append(out, ",", 1);
        put_int(out, w->step);
        strbuf_append(out, ",", 1);
        put_int(out, w->seed);
        strbuf_append(out, ",", 1);
        if (w->worker >= 0) put_string(out, texts.data + w->worker);
        else strbuf_append(out, "null", 4);
        strbuf_append(out, ",", 1);
        strbuf_puts(out, w->entry->params);
        strbuf_append(out, ",[", 2);
        for (int k = 0; k < ncols; k++) cells[k] = NULL;
        for (int k = 0; k < w->entry->nres; k++) cells[pos[w->entry->res[k].key]] = w->entry->res[k].value;
        for (int k = 0; k < ncols; k++) {
            if (k) strbuf_append(out, ",", 1);
            if (cells[k]) strbuf_puts(out, cells[k]);
            else strbuf_append(out, "null", 4);
        }
        strbuf_append(out, "]]", 2);
    }
    strbuf_puts(out, "]}");
    if (out->oom) goto oom;
    goto done;
oom:
    SET_ERR("out of memory");
    rc = UMDQ_ENOMEM;
    goto done;
db_fail:
    SET_ERR("database: %s", sqlite3_errmsg(db));
    rc = UMDQ_EIO;
done:
    pthread_mutex_unlock(&t->mu);
    sqlite3_finalize(st);
    for (int i = 0; i < nfresh; i++) free(fresh[i].value);
    free(fresh);
    free(cells);
    free(sorted);
    free(pos);
    free(refs);
    free(rows);
    cJSON_Delete(swept);
    strbuf_free(&texts);
    return rc;
}
