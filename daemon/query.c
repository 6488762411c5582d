/* query.c: read-only queries behind the HTTP API's GET routes (docs/api.md), as cJSON documents. */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "jsonx.h"
#include "query.h"
#include "schema.h"
#include "umdq.h"
#include "util.h"

const char *const QUERY_JOB_STATES[QUERY_NJOB_STATES] = {"QUEUED", "RUNNING", "SUCCEEDED", "FAILED",
                                                         "LOST", "PREEMPTED", "CANCELLED"};
const char *const QUERY_WORKER_STATES[QUERY_NWORKER_STATES] = {"IDLE", "BUSY", "DEAD", "GONE"};

#define SET_ERR(...) do { if (err && errlen) snprintf(err, errlen, __VA_ARGS__); } while (0)

static int db_err(sqlite3 *db, char *err, size_t errlen) {
    SET_ERR("database: %s", sqlite3_errmsg(db));
    return sqlite3_errcode(db) == SQLITE_NOMEM ? UMDQ_ENOMEM : UMDQ_EIO;
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, char *err, size_t errlen) {
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) return db_err(db, err, errlen);
    return 0;
}

/* obj[name] = column col as a number, string or null. */
static void add_col(cJSON *obj, const char *name, sqlite3_stmt *st, int col) {
    switch (sqlite3_column_type(st, col)) {
    case SQLITE_INTEGER: cJSON_AddNumberToObject(obj, name, (double)sqlite3_column_int64(st, col)); break;
    case SQLITE_FLOAT: cJSON_AddNumberToObject(obj, name, sqlite3_column_double(st, col)); break;
    case SQLITE_TEXT:
    case SQLITE_BLOB: cJSON_AddStringToObject(obj, name, (const char *)sqlite3_column_text(st, col)); break;
    default: cJSON_AddNullToObject(obj, name); break;
    }
}

/* obj[name] = the JSON object in column col, a canonical text the daemon wrote itself, passed
 * through as it is: parsing and printing back a large spec (a grid of thousands of numbers) cost
 * far more than the rest of a sweep summary. Text that is not an object is parsed as by
 * add_json_col. */
static void add_raw_object_col(cJSON *obj, const char *name, sqlite3_stmt *st, int col) {
    const char *text = (const char *)sqlite3_column_text(st, col);
    size_t n = text ? strlen(text) : 0;
    cJSON *v = n >= 2 && text[0] == '{' && text[n - 1] == '}' ? cJSON_CreateRaw(text) : NULL;
    if (!v) v = text ? cJSON_Parse(text) : NULL;
    cJSON_AddItemToObject(obj, name, v ? v : cJSON_CreateNull());
}

/* obj[name] = the JSON text in column col parsed (null when absent or unparsable). */
static void add_json_col(cJSON *obj, const char *name, sqlite3_stmt *st, int col) {
    const char *text = (const char *)sqlite3_column_text(st, col);
    cJSON *v = text ? cJSON_Parse(text) : NULL;
    cJSON_AddItemToObject(obj, name, v ? v : cJSON_CreateNull());
}

int query_sweep_resolve(sqlite3 *db, const char *ref, int64_t *id, char *err, size_t errlen) {
    sqlite3_stmt *st = NULL;
    int rc;
    *id = 0;
    if (!ref || !*ref) {
        SET_ERR("no sweep named");
        return UMDQ_ENOTFOUND;
    }
    char *end = NULL;
    long long n = strtoll(ref, &end, 10);
    int numeric = *end == 0 && ref[0] != '-' && ref[0] != '+';
    /* a name wins over an id only when the text is not a number */
    if ((rc = prepare(db, numeric ? "SELECT id FROM sweeps WHERE id = ?1 OR name = ?2 ORDER BY name = ?2"
                                  : "SELECT id FROM sweeps WHERE name = ?2", &st, err, errlen)) != 0)
        return rc;
    if (numeric) sqlite3_bind_int64(st, 1, n);
    sqlite3_bind_text(st, 2, ref, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
    else if (r == SQLITE_DONE) {
        SET_ERR("no sweep %.200s", ref);
        rc = UMDQ_ENOTFOUND;
    } else rc = db_err(db, err, errlen);
    sqlite3_finalize(st);
    return rc;
}

int query_job_exists(sqlite3 *db, int64_t job) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM jobs WHERE id = ?1", -1, &st, NULL) != SQLITE_OK) return UMDQ_EIO;
    sqlite3_bind_int64(st, 1, job);
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    return r == SQLITE_ROW ? 1 : r == SQLITE_DONE ? 0 : UMDQ_EIO;
}

/* ---- sweeps ------------------------------------------------------------------------------------ */

/* The counts come from sweep_counts (kept by triggers, schema/002_sweep_counts.sql) and the first
 * start and last end from the indexes on (sweep_id, started) and (sweep_id, finished): a summary
 * costs a few lookups however many jobs the sweep has. */
#define SUMMARY_SQL                                                                                  \
    "SELECT s.id, s.name, s.created, s.priority, c.total, c.queued, c.running, c.succeeded, "       \
    "c.failed, c.lost, c.preempted, c.cancelled, "                                                 \
    "(SELECT min(started) FROM jobs WHERE sweep_id = s.id), "                                      \
    "(SELECT max(finished) FROM jobs WHERE sweep_id = s.id), s.spec, s.swept "                     \
    "FROM sweeps s LEFT JOIN sweep_counts c ON c.sweep_id = s.id "

/* SWEEP_SUMMARY of the current row of a SUMMARY_SQL statement. */
static cJSON *summary_of(sqlite3_stmt *st) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int64_t counts[QUERY_NJOB_STATES];
    for (int i = 0; i < QUERY_NJOB_STATES; i++) counts[i] = sqlite3_column_int64(st, 5 + i);
    const char *state = counts[1] > 0 ? "RUNNING" : counts[0] > 0 ? "QUEUED" : "DONE";
    add_col(o, "id", st, 0);
    add_col(o, "name", st, 1);
    cJSON_AddStringToObject(o, "state", state);
    add_col(o, "created", st, 2);
    add_col(o, "priority", st, 3);
    add_col(o, "total", st, 4);
    cJSON *c = cJSON_AddObjectToObject(o, "counts");
    for (int i = 0; i < QUERY_NJOB_STATES; i++) cJSON_AddNumberToObject(c, QUERY_JOB_STATES[i], (double)counts[i]);
    int open = counts[0] + counts[1] > 0;
    int has_started = sqlite3_column_type(st, 12) != SQLITE_NULL;
    int has_finished = !open && sqlite3_column_type(st, 13) != SQLITE_NULL && sqlite3_column_int64(st, 4) > 0;
    double started = sqlite3_column_double(st, 12), finished = sqlite3_column_double(st, 13);
    add_col(o, "started", st, 12);
    if (has_finished) cJSON_AddNumberToObject(o, "finished", finished);
    else cJSON_AddNullToObject(o, "finished");
    double elapsed = 0;
    if (has_started) elapsed = (has_finished ? finished : now_s()) - started;
    cJSON_AddNumberToObject(o, "elapsed", elapsed > 0 ? elapsed : 0);
    return o;
}

int query_sweeps(sqlite3 *db, cJSON **out, char *err, size_t errlen) {
    sqlite3_stmt *st = NULL;
    int rc, r;
    *out = NULL;
    cJSON *doc = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(doc, "sweeps");
    if (!doc || !arr) { rc = UMDQ_ENOMEM; goto fail; }
    if ((rc = prepare(db, SUMMARY_SQL "ORDER BY s.created DESC, s.id DESC", &st, err, errlen)) != 0)
        goto fail;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = summary_of(st);
        if (!o) { rc = UMDQ_ENOMEM; goto fail; }
        cJSON_AddItemToArray(arr, o);
    }
    if (r != SQLITE_DONE) { rc = db_err(db, err, errlen); goto fail; }
    sqlite3_finalize(st);
    *out = doc;
    return 0;
fail:
    sqlite3_finalize(st);
    cJSON_Delete(doc);
    return rc;
}

/* params: {swept key: value in config}. A umd job whose config leaves a swept key out runs with the
 * schema's default, which is shown (a table comparing r_t0 0, 0.5 and 1 then says 0.5, not null). */
static cJSON *params_of(const char *config_text, const cJSON *swept) {
    cJSON *params = cJSON_CreateObject();
    cJSON *cfg = config_text ? cJSON_Parse(config_text) : NULL;
    const char *kind = cfg ? json_get_string(cfg, "kind", "umd") : NULL;
    int umd = kind && strcmp(kind, "umd") == 0;
    const cJSON *k;
    cJSON_ArrayForEach(k, swept) {
        if (!cJSON_IsString(k)) continue;
        const cJSON *v = cfg ? json_path_get(cfg, k->valuestring) : NULL;
        cJSON *dflt = NULL;
        const schema_key *key = !v && umd ? schema_find(k->valuestring) : NULL;
        if (key && !(key->flags & SCHEMA_COMMAND_ONLY)) dflt = schema_default(key);
        cJSON_AddItemToObject(params, k->valuestring,
                              v ? cJSON_Duplicate(v, 1) : dflt ? dflt : cJSON_CreateNull());
    }
    cJSON_Delete(cfg);
    return params;
}

/* results[key] = value or text of the current row (columns: key, value, text from col). */
static void add_result(cJSON *results, sqlite3_stmt *st, int col) {
    const char *key = (const char *)sqlite3_column_text(st, col);
    if (!key || cJSON_GetObjectItemCaseSensitive(results, key)) return;
    if (sqlite3_column_type(st, col + 2) != SQLITE_NULL)
        cJSON_AddStringToObject(results, key, (const char *)sqlite3_column_text(st, col + 2));
    else if (sqlite3_column_type(st, col + 1) != SQLITE_NULL)
        cJSON_AddNumberToObject(results, key, sqlite3_column_double(st, col + 1));
    else
        cJSON_AddNullToObject(results, key);
}

#define JOB_ROW_SQL                                                                                  \
    "SELECT j.id, j.idx, j.kind, j.state, j.attempts, j.max_attempts, j.seed, j.step, j.created, "  \
    "j.started, j.finished, a.worker_id, j.config FROM jobs j "                                     \
    "LEFT JOIN attempts a ON a.job_id = j.id AND a.n = j.attempts "

/* JOB_ROW of the current row of a JOB_ROW_SQL statement, without results. */
static cJSON *job_row_of(sqlite3_stmt *st, const cJSON *swept) {
    static const char *const names[] = {"id", "idx", "kind", "state", "attempts", "max_attempts", "seed",
                                        "step", "created", "started", "finished", "worker"};
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    for (int i = 0; i < 12; i++) add_col(o, names[i], st, i);
    cJSON_AddItemToObject(o, "params", params_of((const char *)sqlite3_column_text(st, 12), swept));
    cJSON_AddNumberToObject(o, "run_seconds", 0); /* filled in by the caller */
    cJSON_AddItemToObject(o, "results", cJSON_CreateObject());
    return o;
}

typedef struct {
    int64_t id;
    cJSON *row; /* borrowed from the jobs array */
} job_ref;

static int job_ref_cmp(const void *a, const void *b) {
    int64_t x = ((const job_ref *)a)->id, y = ((const job_ref *)b)->id;
    return x < y ? -1 : x > y;
}

int query_sweep(sqlite3 *db, int64_t sweep, const char *state, int with_jobs, cJSON **out, char *err, size_t errlen) {
    sqlite3_stmt *st = NULL;
    cJSON *doc = NULL, *swept = NULL;
    job_ref *refs = NULL;
    int rc, r, nrefs = 0, cap = 0;
    *out = NULL;
    if ((rc = prepare(db, SUMMARY_SQL "WHERE s.id = ?1", &st, err, errlen)) != 0) goto fail;
    sqlite3_bind_int64(st, 1, sweep);
    r = sqlite3_step(st);
    if (r == SQLITE_DONE) {
        SET_ERR("no sweep %lld", (long long)sweep);
        rc = UMDQ_ENOTFOUND;
        goto fail;
    }
    if (r != SQLITE_ROW) { rc = db_err(db, err, errlen); goto fail; }
    doc = cJSON_CreateObject();
    cJSON *summary = summary_of(st);
    if (!doc || !summary) { cJSON_Delete(summary); rc = UMDQ_ENOMEM; goto fail; }
    cJSON_AddItemToObject(doc, "sweep", summary);
    add_raw_object_col(summary, "spec", st, 14);
    add_json_col(summary, "swept", st, 15);
    swept = cJSON_GetObjectItemCaseSensitive(summary, "swept");
    sqlite3_finalize(st);
    st = NULL;
    if (!with_jobs) {
        *out = doc;
        return 0;
    }
    cJSON *jobs = cJSON_AddArrayToObject(doc, "jobs");
    if (!jobs) { rc = UMDQ_ENOMEM; goto fail; }
    if ((rc = prepare(db, state ? JOB_ROW_SQL "WHERE j.sweep_id = ?1 AND j.state = ?2 ORDER BY j.idx, j.id"
                                : JOB_ROW_SQL "WHERE j.sweep_id = ?1 ORDER BY j.idx, j.id", &st, err, errlen)) != 0)
        goto fail;
    sqlite3_bind_int64(st, 1, sweep);
    if (state) sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *row = job_row_of(st, swept);
        if (!row) { rc = UMDQ_ENOMEM; goto fail; }
        cJSON_AddItemToArray(jobs, row);
        if (nrefs == cap) {
            cap = cap ? cap * 2 : 256;
            job_ref *grown = realloc(refs, (size_t)cap * sizeof *refs);
            if (!grown) { rc = UMDQ_ENOMEM; goto fail; }
            refs = grown;
        }
        refs[nrefs++] = (job_ref){sqlite3_column_int64(st, 0), row};
    }
    if (r != SQLITE_DONE) { rc = db_err(db, err, errlen); goto fail; }
    sqlite3_finalize(st);
    st = NULL;
    if (nrefs > 0) {
        qsort(refs, (size_t)nrefs, sizeof *refs, job_ref_cmp);
        /* results of each job's latest attempt that has any */
        if ((rc = prepare(db, "SELECT r.job_id, r.key, r.value, r.text FROM results r JOIN jobs j ON j.id = r.job_id "
                              "WHERE j.sweep_id = ?1 AND r.attempt = (SELECT max(attempt) FROM results r2 "
                              "WHERE r2.job_id = r.job_id) ORDER BY r.job_id, r.key", &st, err, errlen)) != 0)
            goto fail;
        sqlite3_bind_int64(st, 1, sweep);
        while ((r = sqlite3_step(st)) == SQLITE_ROW) {
            job_ref key = {sqlite3_column_int64(st, 0), NULL};
            job_ref *hit = bsearch(&key, refs, (size_t)nrefs, sizeof *refs, job_ref_cmp);
            if (hit) add_result(cJSON_GetObjectItemCaseSensitive(hit->row, "results"), st, 1);
        }
        if (r != SQLITE_DONE) { rc = db_err(db, err, errlen); goto fail; }
        sqlite3_finalize(st);
        st = NULL;
        /* run_seconds: the wall time of all of a job's attempts, lost ones included (an open one
         * counts to its last heartbeat): what the job cost its devices */
        if ((rc = prepare(db, "SELECT a.job_id, sum(coalesce(a.ended, a.heartbeat) - a.started) FROM attempts a "
                              "JOIN jobs j ON j.id = a.job_id WHERE j.sweep_id = ?1 GROUP BY a.job_id",
                          &st, err, errlen)) != 0)
            goto fail;
        sqlite3_bind_int64(st, 1, sweep);
        while ((r = sqlite3_step(st)) == SQLITE_ROW) {
            job_ref key = {sqlite3_column_int64(st, 0), NULL};
            job_ref *hit = bsearch(&key, refs, (size_t)nrefs, sizeof *refs, job_ref_cmp);
            if (hit) cJSON_ReplaceItemInObject(hit->row, "run_seconds", cJSON_CreateNumber(sqlite3_column_double(st, 1)));
        }
        if (r != SQLITE_DONE) { rc = db_err(db, err, errlen); goto fail; }
    }
    sqlite3_finalize(st);
    free(refs);
    *out = doc;
    return 0;
fail:
    sqlite3_finalize(st);
    free(refs);
    cJSON_Delete(doc);
    return rc;
}

/* ---- jobs -------------------------------------------------------------------------------------- */

int query_job(sqlite3 *db, int64_t job, cJSON **out, char *err, size_t errlen) {
    sqlite3_stmt *st = NULL;
    cJSON *doc = NULL, *swept = NULL;
    int rc, r;
    *out = NULL;
    if ((rc = prepare(db, "SELECT j.id, j.idx, j.kind, j.state, j.attempts, j.max_attempts, j.seed, j.step, "
                          "j.created, j.started, j.finished, a.worker_id, j.config, s.id, s.name, s.swept, "
                          "j.config_hash FROM jobs j JOIN sweeps s ON s.id = j.sweep_id "
                          "LEFT JOIN attempts a ON a.job_id = j.id AND a.n = j.attempts WHERE j.id = ?1",
                      &st, err, errlen)) != 0)
        goto fail;
    sqlite3_bind_int64(st, 1, job);
    r = sqlite3_step(st);
    if (r == SQLITE_DONE) {
        SET_ERR("no job %lld", (long long)job);
        rc = UMDQ_ENOTFOUND;
        goto fail;
    }
    if (r != SQLITE_ROW) { rc = db_err(db, err, errlen); goto fail; }
    const char *swept_text = (const char *)sqlite3_column_text(st, 15);
    swept = swept_text ? cJSON_Parse(swept_text) : NULL;
    doc = cJSON_CreateObject();
    cJSON *row = job_row_of(st, swept);
    if (!doc || !row) { cJSON_Delete(row); rc = UMDQ_ENOMEM; goto fail; }
    cJSON_AddItemToObject(doc, "job", row);
    add_col(row, "sweep", st, 13);
    add_col(row, "sweep_name", st, 14);
    add_json_col(row, "config", st, 12);
    add_col(row, "config_hash", st, 16);
    sqlite3_finalize(st);
    st = NULL;
    if ((rc = prepare(db, "SELECT key, value, text FROM results WHERE job_id = ?1 AND attempt = "
                          "(SELECT max(attempt) FROM results WHERE job_id = ?1) ORDER BY key", &st, err, errlen)) != 0)
        goto fail;
    sqlite3_bind_int64(st, 1, job);
    cJSON *results = cJSON_GetObjectItemCaseSensitive(row, "results");
    while ((r = sqlite3_step(st)) == SQLITE_ROW) add_result(results, st, 0);
    if (r != SQLITE_DONE) { rc = db_err(db, err, errlen); goto fail; }
    sqlite3_finalize(st);
    st = NULL;
    cJSON *attempts = cJSON_AddArrayToObject(doc, "attempts");
    if ((rc = prepare(db, "SELECT n, worker_id, state, started, heartbeat, ended, exit_code, signal, error, step "
                          "FROM attempts WHERE job_id = ?1 ORDER BY n", &st, err, errlen)) != 0)
        goto fail;
    sqlite3_bind_int64(st, 1, job);
    static const char *const names[] = {"n", "worker", "state", "started", "heartbeat", "ended", "exit_code",
                                        "signal", "error", "step"};
    double run_seconds = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *a = cJSON_CreateObject();
        if (!a) { rc = UMDQ_ENOMEM; goto fail; }
        for (int i = 0; i < 10; i++) add_col(a, names[i], st, i);
        cJSON_AddItemToArray(attempts, a);
        double until = sqlite3_column_type(st, 5) != SQLITE_NULL ? sqlite3_column_double(st, 5) : sqlite3_column_double(st, 4);
        run_seconds += until - sqlite3_column_double(st, 3);
    }
    cJSON_ReplaceItemInObject(row, "run_seconds", cJSON_CreateNumber(run_seconds));
    if (r != SQLITE_DONE) { rc = db_err(db, err, errlen); goto fail; }
    sqlite3_finalize(st);
    cJSON_Delete(swept);
    *out = doc;
    return 0;
fail:
    sqlite3_finalize(st);
    cJSON_Delete(swept);
    cJSON_Delete(doc);
    return rc;
}

/* ---- metrics ----------------------------------------------------------------------------------- */

typedef struct {
    int64_t step;
    double value;
    int null;
} point;

/* Add one series to arr: points (sorted by step, one per step) downsampled to max_points buckets
 * by step, keeping each bucket's first step and mean value. */
static int add_series(cJSON *arr, const char *key, const point *pts, int n, int max_points) {
    cJSON *s = cJSON_CreateObject();
    if (!s) return UMDQ_ENOMEM;
    cJSON_AddStringToObject(s, "key", key);
    cJSON *list = cJSON_AddArrayToObject(s, "points");
    cJSON_AddItemToArray(arr, s);
    if (!list) return UMDQ_ENOMEM;
    if (n <= max_points) {
        for (int i = 0; i < n; i++) {
            cJSON *p = cJSON_CreateArray();
            cJSON_AddItemToArray(p, cJSON_CreateNumber((double)pts[i].step));
            cJSON_AddItemToArray(p, pts[i].null ? cJSON_CreateNull() : cJSON_CreateNumber(pts[i].value));
            cJSON_AddItemToArray(list, p);
        }
        return 0;
    }
    double lo = (double)pts[0].step, span = (double)pts[n - 1].step - lo + 1;
    int i = 0;
    while (i < n) {
        int64_t bucket = (int64_t)(((double)pts[i].step - lo) * max_points / span);
        int64_t first = pts[i].step;
        double sum = 0;
        int cnt = 0;
        for (; i < n && (int64_t)(((double)pts[i].step - lo) * max_points / span) == bucket; i++) {
            if (pts[i].null) continue;
            sum += pts[i].value;
            cnt++;
        }
        cJSON *p = cJSON_CreateArray();
        cJSON_AddItemToArray(p, cJSON_CreateNumber((double)first));
        cJSON_AddItemToArray(p, cnt ? cJSON_CreateNumber(sum / cnt) : cJSON_CreateNull());
        cJSON_AddItemToArray(list, p);
    }
    return 0;
}

int query_job_metrics(sqlite3 *db, int64_t job, const char *key, int max_points, cJSON **out,
                      char *err, size_t errlen) {
    sqlite3_stmt *st = NULL;
    cJSON *doc = NULL;
    point *pts = NULL;
    char *cur = NULL; /* the series being collected, owned */
    int rc, r, n = 0, cap = 0;
    *out = NULL;
    if (max_points <= 0) max_points = QUERY_METRICS_DEFAULT;
    if (max_points > QUERY_METRICS_MAX) max_points = QUERY_METRICS_MAX;
    int exists = query_job_exists(db, job);
    if (exists < 0) return db_err(db, err, errlen);
    if (!exists) {
        SET_ERR("no job %lld", (long long)job);
        return UMDQ_ENOTFOUND;
    }
    doc = cJSON_CreateObject();
    cJSON *series = doc ? cJSON_AddArrayToObject(doc, "series") : NULL;
    if (!series) { rc = UMDQ_ENOMEM; goto fail; }
    cJSON_AddNumberToObject(doc, "job", (double)job);
    /* ordered so that for one (key, step) the latest attempt comes last and wins */
    if ((rc = prepare(db, key ? "SELECT key, step, value FROM metrics WHERE job_id = ?1 AND key = ?2 "
                                "ORDER BY key, step, attempt"
                              : "SELECT key, step, value FROM metrics WHERE job_id = ?1 ORDER BY key, step, attempt",
                      &st, err, errlen)) != 0)
        goto fail;
    sqlite3_bind_int64(st, 1, job);
    if (key) sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    for (;;) {
        r = sqlite3_step(st);
        if (r != SQLITE_ROW && r != SQLITE_DONE) { rc = db_err(db, err, errlen); goto fail; }
        const char *k = r == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        if (cur && (!k || strcmp(k, cur) != 0)) {
            if ((rc = add_series(series, cur, pts, n, max_points)) != 0) goto fail;
            free(cur);
            cur = NULL;
            n = 0;
        }
        if (r == SQLITE_DONE) break;
        if (!cur && !(cur = strdup(k ? k : ""))) { rc = UMDQ_ENOMEM; goto fail; }
        int64_t step = sqlite3_column_int64(st, 1);
        point p = {step, sqlite3_column_double(st, 2), sqlite3_column_type(st, 2) == SQLITE_NULL};
        if (n > 0 && pts[n - 1].step == step) {
            pts[n - 1] = p; /* a later attempt wins the step */
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            point *grown = realloc(pts, (size_t)cap * sizeof *pts);
            if (!grown) { rc = UMDQ_ENOMEM; goto fail; }
            pts = grown;
        }
        pts[n++] = p;
    }
    sqlite3_finalize(st);
    free(pts);
    *out = doc;
    return 0;
fail:
    sqlite3_finalize(st);
    free(pts);
    free(cur);
    cJSON_Delete(doc);
    return rc;
}

/* ---- logs -------------------------------------------------------------------------------------- */

/* Length of the UTF-8 sequence starting at p (at most n bytes available): 1..4 when valid, 0 when
 * the bytes are invalid, -1 when they are a valid but cut-off prefix. */
static int utf8_seq(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    int len;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0;
    unsigned cp = c & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return -1;
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

char *query_utf8_clean(const char *data, size_t len, int at_end, size_t *used) {
    strbuf b;
    strbuf_init(&b);
    const unsigned char *p = (const unsigned char *)data;
    size_t i = 0;
    while (i < len) {
        int k = utf8_seq(p + i, len - i);
        if (k == -1 && !at_end) break;
        if (k <= 0) {
            strbuf_append(&b, "\xEF\xBF\xBD", 3);
            i++;
            continue;
        }
        strbuf_append(&b, (const char *)p + i, (size_t)k);
        i += (size_t)k;
    }
    if (used) *used = i;
    if (!b.data) strbuf_append(&b, "", 0);
    if (!b.data) return strdup("");
    return strbuf_steal(&b);
}

int query_job_log(sqlite3 *db, const char *log_dir, int64_t job, int64_t offset, int64_t max, cJSON **out,
                  char *err, size_t errlen) {
    sqlite3_stmt *st = NULL;
    char *buf = NULL, *text = NULL;
    int rc = 0, fd = -1;
    *out = NULL;
    if ((rc = prepare(db, "SELECT state FROM jobs WHERE id = ?1", &st, err, errlen)) != 0) return rc;
    sqlite3_bind_int64(st, 1, job);
    int r = sqlite3_step(st);
    if (r != SQLITE_ROW) {
        if (r == SQLITE_DONE) {
            SET_ERR("no job %lld", (long long)job);
            rc = UMDQ_ENOTFOUND;
        } else rc = db_err(db, err, errlen);
        sqlite3_finalize(st);
        return rc;
    }
    char state[16];
    snprintf(state, sizeof state, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (max <= 0 || max > QUERY_LOG_MAX) max = QUERY_LOG_MAX;
    char path[4096];
    snprintf(path, sizeof path, "%s/%lld.log", log_dir, (long long)job);
    int64_t size = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        struct stat sb;
        if (fstat(fd, &sb) == 0) size = sb.st_size;
    } else if (errno != ENOENT) {
        SET_ERR("log %s: %s", path, strerror(errno));
        return UMDQ_EIO;
    }
    if (offset < 0) offset = size + offset > 0 ? size + offset : 0;
    if (offset > size) offset = size;
    int64_t want = size - offset < max ? size - offset : max;
    size_t got = 0, used = 0;
    if (want > 0) {
        if (!(buf = malloc((size_t)want))) { rc = UMDQ_ENOMEM; goto fail; }
        while ((int64_t)got < want) {
            ssize_t n = pread(fd, buf + got, (size_t)want - got, offset + (off_t)got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += (size_t)n;
        }
    }
    text = query_utf8_clean(buf ? buf : "", got, offset + (int64_t)got >= size, &used);
    if (!text) { rc = UMDQ_ENOMEM; goto fail; }
    cJSON *doc = cJSON_CreateObject();
    if (!doc) { rc = UMDQ_ENOMEM; goto fail; }
    cJSON_AddNumberToObject(doc, "job", (double)job);
    cJSON_AddNumberToObject(doc, "offset", (double)offset);
    cJSON_AddNumberToObject(doc, "next", (double)(offset + (int64_t)used));
    cJSON_AddNumberToObject(doc, "size", (double)size);
    cJSON_AddStringToObject(doc, "data", text);
    cJSON_AddStringToObject(doc, "state", state);
    *out = doc;
fail:
    if (fd >= 0) close(fd);
    free(buf);
    free(text);
    return rc;
}

/* ---- workers and counts ------------------------------------------------------------------------ */

int query_workers(sqlite3 *db, cJSON **out, char *err, size_t errlen) {
    sqlite3_stmt *st = NULL;
    int rc, r;
    *out = NULL;
    cJSON *doc = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(doc, "workers");
    if (!doc || !arr) { rc = UMDQ_ENOMEM; goto fail; }
    if ((rc = prepare(db, "SELECT w.id, w.host, w.device, w.backend, w.state, a.job_id, a.n, a.step, "
                          "w.last_seen, w.jobs_done, w.first_seen, w.capabilities, w.pid "
                          "FROM workers w LEFT JOIN attempts a ON a.worker_id = w.id AND a.state = 'RUNNING' "
                          "ORDER BY w.id, a.started DESC", &st, err, errlen)) != 0)
        goto fail;
    double now = now_s();
    cJSON *last = NULL;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if (last && strcmp(cJSON_GetObjectItemCaseSensitive(last, "id")->valuestring, id) == 0) continue;
        cJSON *w = cJSON_CreateObject();
        if (!w) { rc = UMDQ_ENOMEM; goto fail; }
        static const char *const names[] = {"id", "host", "device", "backend", "state", "job", "attempt", "step"};
        for (int i = 0; i < 8; i++) add_col(w, names[i], st, i);
        double age = now - sqlite3_column_double(st, 8);
        cJSON_AddNumberToObject(w, "heartbeat_age", age > 0 ? age : 0);
        add_col(w, "jobs_done", st, 9);
        add_col(w, "first_seen", st, 10);
        add_col(w, "last_seen", st, 8);
        add_json_col(w, "capabilities", st, 11);
        add_col(w, "pid", st, 12);
        cJSON_AddItemToArray(arr, w);
        last = w;
    }
    if (r != SQLITE_DONE) { rc = db_err(db, err, errlen); goto fail; }
    sqlite3_finalize(st);
    *out = doc;
    return 0;
fail:
    sqlite3_finalize(st);
    cJSON_Delete(doc);
    return rc;
}

int query_counts(sqlite3 *db, int64_t jobs[QUERY_NJOB_STATES], int64_t workers[QUERY_NWORKER_STATES],
                 char *err, size_t errlen) {
    sqlite3_stmt *st = NULL;
    int rc, r;
    memset(jobs, 0, QUERY_NJOB_STATES * sizeof *jobs);
    memset(workers, 0, QUERY_NWORKER_STATES * sizeof *workers);
    /* job counts from sweep_counts: one row per sweep, not one per job */
    if ((rc = prepare(db, "SELECT 0, 'QUEUED', sum(queued) FROM sweep_counts UNION ALL "
                          "SELECT 0, 'RUNNING', sum(running) FROM sweep_counts UNION ALL "
                          "SELECT 0, 'SUCCEEDED', sum(succeeded) FROM sweep_counts UNION ALL "
                          "SELECT 0, 'FAILED', sum(failed) FROM sweep_counts UNION ALL "
                          "SELECT 0, 'LOST', sum(lost) FROM sweep_counts UNION ALL "
                          "SELECT 0, 'PREEMPTED', sum(preempted) FROM sweep_counts UNION ALL "
                          "SELECT 0, 'CANCELLED', sum(cancelled) FROM sweep_counts UNION ALL "
                          "SELECT 1, state, count(*) FROM workers GROUP BY state", &st, err, errlen)) != 0)
        return rc;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        int table = sqlite3_column_int(st, 0);
        const char *state = (const char *)sqlite3_column_text(st, 1);
        int64_t n = sqlite3_column_int64(st, 2);
        if (!state) continue;
        if (table == 0) {
            for (int i = 0; i < QUERY_NJOB_STATES; i++)
                if (strcmp(state, QUERY_JOB_STATES[i]) == 0) jobs[i] = n;
        } else {
            for (int i = 0; i < QUERY_NWORKER_STATES; i++)
                if (strcmp(state, QUERY_WORKER_STATES[i]) == 0) workers[i] = n;
        }
    }
    if (r != SQLITE_DONE) rc = db_err(db, err, errlen);
    sqlite3_finalize(st);
    return rc;
}
