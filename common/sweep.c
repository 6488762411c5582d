/* sweep.c: a sweep spec expanded into jobs: base overridden by each list entry, x the cartesian
 * grid, x the paired zip, x seeds.
 *
 * Expansion is built for sweeps of many thousands of jobs. Per list entry the config (base plus
 * the entry) is merged and validated once, with a placeholder (a cJSON_Raw item) at every grid
 * and zip key; its canonical text is then split at the placeholders into literal segments. Each
 * grid and zip value is validated once at its key and printed once in canonical form. A job's
 * config text is the entry's segments with the job's value texts in between (no tree is built
 * per job); only the cheap cross-key checks (schema_check_cross) run per job, on values looked up
 * through the placeholders. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "jsonx.h"
#include "schema.h"
#include "sha256.h"
#include "sweep.h"
#include "template.h"
#include "umdq.h"
#include "util.h"

#define SWEEP_NAME_MAX 64

/* One swept key of grid or zip; a hole in every entry's config text. */
typedef struct {
    const char *key;      /* dotted key, borrowed from the spec tree */
    const char *section;  /* "grid" or "zip" */
    int n;                /* number of values */
    const cJSON **value;  /* n items, borrowed */
    char **text;          /* n canonical texts, owned */
    size_t *len;          /* n lengths */
    int bad;              /* the key itself is refused: its values are not checked */
} hole;

/* Where a cross-key value of a job comes from. */
typedef struct {
    const cJSON *constant; /* borrowed from the entry's merged config; NULL = absent or in a hole */
    int hole;              /* -1, or the hole holding the value */
    const char *rest;      /* path below the hole ("" = the hole's value itself), borrowed */
} source;

/* One list entry, merged and cut into segments. */
typedef struct {
    cJSON *merged;        /* base + entry + placeholders, owned */
    const cJSON *entry;   /* the list entry, borrowed (NULL when there is no list) */
    char *tmpl;           /* canonical text with placeholder marks, owned */
    int nseg;             /* segments = holes in text order + 1 */
    const char **seg;     /* nseg pointers into tmpl_clean, owned array */
    size_t *seglen;
    int *seghole;         /* nseg - 1 hole numbers: the hole after segment i */
    char *tmpl_clean;     /* tmpl with the marks cut out (segments point here), owned */
    const char *kind;     /* "umd", "command" or NULL when invalid; static string */
    source src[SCHEMA_CROSS_N];
    int xholes[SCHEMA_CROSS_N]; /* the distinct holes cross values come from */
    int nxholes;
    int xcombos;          /* combinations of their values (0 = too many to remember) */
} entry_plan;

typedef struct {
    errlist *errs;        /* borrowed: where problems go */
    errlist *scratch;     /* owned: problems before their paths are mapped */
    hole *holes;          /* nholes, owned */
    int nholes, ngrid;    /* grid holes come first */
    int zlen;             /* zip length (1 when no zip) */
    entry_plan *entries;  /* nentries, owned */
    int nentries;
    cJSON *base_tree;     /* base with the placeholders, owned: every entry starts from a copy */
    errlist *base_errs[3];/* problems of base_tree checked as kind unknown, umd, command; owned,
                             made when an entry of that kind first needs them */
} expander;

static const char *static_kind(const char *k) {
    if (!k) return NULL;
    if (strcmp(k, "umd") == 0) return "umd";
    if (strcmp(k, "command") == 0) return "command";
    return NULL;
}

/* "umd.mask_ratio must be ..." / "umd.r_t0: unknown key": a problem at config path P as told from
 * a place in the spec. */
static void add_at(errlist *errs, const char *where, const char *cfgpath, const char *msg) {
    if (!cfgpath || !*cfgpath) errlist_add(errs, where, "%s", msg);
    else if (strncmp(msg, "must ", 5) == 0) errlist_add(errs, where, "%s %s", cfgpath, msg);
    else errlist_add(errs, where, "%s: %s", cfgpath, msg);
}

/* 1 when path is key or lies under it ("model.width" under "model"). */
static int under(const char *path, const char *key) {
    size_t n = strlen(key);
    return strncmp(path, key, n) == 0 && (path[n] == 0 || path[n] == '.');
}

static int overlaps(const char *a, const char *b) {
    return under(a, b) || under(b, a);
}

/* ---- the top level of the spec ---------------------------------------------------------------- */

static const char *const top_keys[] = {"name", "base", "grid", "zip", "list", "seeds", "priority",
                                       "retry", "description", NULL};

static int small_distance(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    int row[64];
    if (nb >= 64) return 99;
    for (size_t j = 0; j <= nb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= nb; j++) {
            int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

/* An integral number in [lo, hi]; the range is checked before the integer conversion, which
 * is undefined for values outside long long. */
static int is_int(const cJSON *v, double lo, double hi) {
    return cJSON_IsNumber(v) && v->valuedouble >= lo && v->valuedouble <= hi &&
           v->valuedouble == (double)(long long)v->valuedouble;
}

/* Check the fields other than base/grid/zip/list and fill the sweep's header and seeds. */
static void parse_header(const cJSON *root, sweep *s, int64_t **seeds, int *nseeds, errlist *errs) {
    for (const cJSON *c = root->child; c; c = c->next) {
        int known = 0;
        for (int i = 0; top_keys[i]; i++) known |= strcmp(c->string, top_keys[i]) == 0;
        if (known) continue;
        const char *near = NULL;
        for (int i = 0; top_keys[i] && !near; i++)
            if (small_distance(c->string, top_keys[i]) <= 2) near = top_keys[i];
        if (near) errlist_add(errs, c->string, "unknown key (did you mean \"%s\"?)", near);
        else if (schema_find(c->string) || schema_check_path(c->string, (char[8]){0}, 8) == 0)
            errlist_add(errs, c->string, "unknown key (job config keys go under \"base\")");
        else errlist_add(errs, c->string, "unknown key");
    }

    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    if (!name) {
        errlist_add(errs, "name", "required: 1 to %d characters of A-Z a-z 0-9 . _ -", SWEEP_NAME_MAX);
    } else if (!cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) > SWEEP_NAME_MAX ||
               strspn(name->valuestring, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
                   strlen(name->valuestring)) {
        errlist_add(errs, "name", "must be 1 to %d characters of A-Z a-z 0-9 . _ -", SWEEP_NAME_MAX);
    } else {
        s->name = strdup(name->valuestring);
    }

    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(root, "description");
    if (desc && !cJSON_IsString(desc)) errlist_add(errs, "description", "must be a string");

    const cJSON *prio = cJSON_GetObjectItemCaseSensitive(root, "priority");
    s->priority = 0;
    if (prio) {
        if (!is_int(prio, -1000000000.0, 1000000000.0))
            errlist_add(errs, "priority", "must be an integer in [-1000000000, 1000000000]");
        else s->priority = (int)prio->valuedouble;
    }

    s->max_attempts = 3;
    s->retry_on_failure = 0;
    const cJSON *retry = cJSON_GetObjectItemCaseSensitive(root, "retry");
    if (retry && !cJSON_IsObject(retry)) {
        errlist_add(errs, "retry", "must be an object: {\"max_attempts\": 3, \"on_failure\": false}");
    } else if (retry) {
        for (const cJSON *c = retry->child; c; c = c->next) {
            char path[300];
            snprintf(path, sizeof path, "retry.%s", c->string);
            if (strcmp(c->string, "max_attempts") == 0) {
                if (!is_int(c, 1, 1000)) errlist_add(errs, path, "must be an integer in [1, 1000]");
                else s->max_attempts = (int)c->valuedouble;
            } else if (strcmp(c->string, "on_failure") == 0) {
                if (!cJSON_IsBool(c)) errlist_add(errs, path, "must be true or false");
                else s->retry_on_failure = cJSON_IsTrue(c);
            } else {
                errlist_add(errs, path, "unknown key (retry has max_attempts and on_failure)");
            }
        }
    }

    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(root, "seeds");
    *nseeds = 0;
    *seeds = NULL;
    if (!sd || is_int(sd, 1, SWEEP_MAX_JOBS)) {
        int n = sd ? (int)sd->valuedouble : 1;
        *seeds = malloc((size_t)n * sizeof **seeds);
        if (!*seeds) {
            errlist_add(errs, "seeds", "out of memory");
            return;
        }
        for (int i = 0; i < n; i++) (*seeds)[i] = i;
        *nseeds = n;
    } else if (cJSON_IsArray(sd) && cJSON_GetArraySize(sd) > 0) {
        int n = cJSON_GetArraySize(sd), i = 0, bad = 0;
        *seeds = malloc((size_t)n * sizeof **seeds);
        if (!*seeds) {
            errlist_add(errs, "seeds", "out of memory");
            return;
        }
        for (const cJSON *c = sd->child; c; c = c->next, i++) {
            char path[32];
            snprintf(path, sizeof path, "seeds[%d]", i);
            if (!is_int(c, 0, 4294967295.0)) {
                errlist_add(errs, path, "must be an integer in [0, 4294967295]");
                bad = 1;
                continue;
            }
            (*seeds)[i] = (int64_t)c->valuedouble;
            for (int j = 0; j < i; j++)
                if ((*seeds)[j] == (*seeds)[i]) {
                    errlist_add(errs, path, "repeats seeds[%d] (%lld)", j, (long long)(*seeds)[i]);
                    bad = 1;
                    break;
                }
        }
        *nseeds = bad ? 0 : n;
    } else {
        errlist_add(errs, "seeds", "must be an integer in [1, %d] (seeds 0..n-1) or a non-empty array of "
                    "distinct integers >= 0", SWEEP_MAX_JOBS);
    }
}

/* ---- grid and zip ----------------------------------------------------------------------------- */

static int cmp_text(const void *a, const void *b, void *arg) {
    const char *const *t = arg;
    int x = *(const int *)a, y = *(const int *)b;
    int c = strcmp(t[x], t[y]);
    return c ? c : (x > y) - (x < y);
}

/* Report values of h that repeat an earlier one (same canonical text). */
static void check_repeats(const hole *h, errlist *errs) {
    if (h->n < 2) return;
    int *order = malloc((size_t)h->n * sizeof *order);
    if (!order) return;
    for (int i = 0; i < h->n; i++) order[i] = i;
    qsort_r(order, (size_t)h->n, sizeof *order, cmp_text, h->text);
    for (int i = 1, run = 0; i < h->n; i++) {
        if (strcmp(h->text[order[i]], h->text[order[run]]) != 0) {
            run = i;
            continue;
        }
        char path[400];
        int first = order[run];
        snprintf(path, sizeof path, "%s.%s[%d]", h->section, h->key, order[i]);
        errlist_add(errs, path, "repeats %s.%s[%d] (%s)", h->section, h->key, first, h->text[first]);
    }
    free(order);
}

/* Collect the keys of grid or zip into holes. */
static int collect_holes(expander *x, const cJSON *obj, const char *section, errlist *errs) {
    if (!obj) return 0;
    if (!cJSON_IsObject(obj)) {
        errlist_add(errs, section, "must be an object of dotted key -> array of values");
        return 0;
    }
    for (const cJSON *c = obj->child; c; c = c->next) {
        hole *h = &x->holes[x->nholes++];
        memset(h, 0, sizeof *h);
        h->key = c->string;
        h->section = section;
        char path[400], msg[300];
        snprintf(path, sizeof path, "%s.%s", section, c->string);
        if (schema_check_path(c->string, msg, sizeof msg) != 0) {
            errlist_add(errs, path, "%s", msg);
            h->bad = 1;
        }
        if (!cJSON_IsArray(c) || cJSON_GetArraySize(c) == 0) {
            errlist_add(errs, path, "must be a non-empty array of values");
            h->bad = 1;
            continue;
        }
        h->n = cJSON_GetArraySize(c);
        h->value = calloc((size_t)h->n, sizeof *h->value);
        h->text = calloc((size_t)h->n, sizeof *h->text);
        h->len = calloc((size_t)h->n, sizeof *h->len);
        if (!h->value || !h->text || !h->len) return UMDQ_ENOMEM;
        int i = 0;
        for (const cJSON *v = c->child; v; v = v->next, i++) {
            h->value[i] = v;
            h->text[i] = json_canonical(v);
            if (!h->text[i]) {
                h->text[i] = strdup("null");
                snprintf(path, sizeof path, "%s.%s[%d]", section, c->string, i);
                errlist_add(errs, path, "%s is not a finite JSON value", c->string);
                h->bad = 1;
                if (!h->text[i]) return UMDQ_ENOMEM;
            }
            h->len[i] = strlen(h->text[i]);
        }
        check_repeats(h, errs);
    }
    return 0;
}

/* Keys that overlap (the same key, or one inside the other) across grid and zip. */
static void check_overlaps(expander *x, errlist *errs) {
    for (int i = 0; i < x->nholes; i++)
        for (int j = 0; j < i; j++) {
            hole *a = &x->holes[j], *b = &x->holes[i];
            if (!overlaps(a->key, b->key)) continue;
            char path[400];
            snprintf(path, sizeof path, "%s.%s", b->section, b->key);
            if (strcmp(a->key, b->key) == 0)
                errlist_add(errs, path, "is also in %s: a key is swept by grid or zip, not both", a->section);
            else
                errlist_add(errs, path, "overlaps %s.%s: a key cannot be swept inside another swept key",
                            a->section, a->key);
            b->bad = 1;
        }
    if (x->nholes > x->ngrid) {
        hole *first = &x->holes[x->ngrid];
        for (int i = x->ngrid + 1; i < x->nholes; i++) {
            hole *h = &x->holes[i];
            if (h->n && first->n && h->n != first->n) {
                char path[400];
                snprintf(path, sizeof path, "zip.%s", h->key);
                errlist_add(errs, path, "has %d values but zip.%s has %d: zip lists must have the same length",
                            h->n, first->key, first->n);
            }
        }
        x->zlen = first->n;
        /* repeated zip tuples: sort the joined value texts of each index */
        if (x->zlen > 1) {
            int ok = 1;
            for (int i = x->ngrid; i < x->nholes; i++) ok &= x->holes[i].n == x->zlen;
            char **tuple = ok ? calloc((size_t)x->zlen, sizeof *tuple) : NULL;
            int *order = ok ? malloc((size_t)x->zlen * sizeof *order) : NULL;
            for (int z = 0; tuple && order && z < x->zlen; z++) {
                strbuf t;
                strbuf_init(&t);
                for (int i = x->ngrid; i < x->nholes; i++) {
                    strbuf_puts(&t, x->holes[i].text[z]);
                    strbuf_append(&t, "\x01", 1);
                }
                tuple[z] = strbuf_steal(&t);
                order[z] = z;
                if (!tuple[z]) ok = 0;
            }
            if (ok && tuple && order) {
                qsort_r(order, (size_t)x->zlen, sizeof *order, cmp_text, tuple);
                for (int i = 1, run = 0; i < x->zlen; i++) {
                    if (strcmp(tuple[order[i]], tuple[order[run]]) != 0) {
                        run = i;
                        continue;
                    }
                    char path[32];
                    snprintf(path, sizeof path, "zip[%d]", order[i]);
                    errlist_add(errs, path, "the values at index %d repeat those at index %d", order[i], order[run]);
                }
            }
            for (int z = 0; tuple && z < x->zlen; z++) free(tuple[z]);
            free(tuple);
            free(order);
        }
    }
}

/* ---- list entries ----------------------------------------------------------------------------- */

/* The source of a cross-key value: walk merged along path, stopping at a placeholder. */
static source find_source(const expander *x, const cJSON *merged, const char *path) {
    source s = {NULL, -1, ""};
    const cJSON *cur = merged;
    const char *p = path;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        const cJSON *next = NULL;
        for (const cJSON *c = cJSON_IsObject(cur) ? cur->child : NULL; c; c = c->next)
            if (strncmp(c->string, p, n) == 0 && c->string[n] == 0) {
                next = c;
                break;
            }
        if (!next) return s;
        if (cJSON_IsRaw(next)) {
            s.hole = atoi(next->valuestring + 1);
            if (s.hole < 0 || s.hole >= x->nholes) s.hole = -1;
            s.rest = dot ? dot + 1 : "";
            return s;
        }
        if (!dot) {
            s.constant = next;
            return s;
        }
        cur = next;
        p = dot + 1;
    }
}

/* Split the marked canonical text of a plan into segments and hole numbers. */
static int cut_segments(entry_plan *pl) {
    size_t n = strlen(pl->tmpl);
    int marks = 0;
    for (size_t i = 0; i < n; i++) marks += pl->tmpl[i] == '\x01';
    pl->nseg = marks + 1;
    pl->seg = calloc((size_t)pl->nseg, sizeof *pl->seg);
    pl->seglen = calloc((size_t)pl->nseg, sizeof *pl->seglen);
    pl->seghole = calloc((size_t)pl->nseg, sizeof *pl->seghole);
    pl->tmpl_clean = malloc(n + 1);
    if (!pl->seg || !pl->seglen || !pl->seghole || !pl->tmpl_clean) return UMDQ_ENOMEM;
    size_t out = 0, start = 0;
    int k = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && pl->tmpl[i] != '\x01') {
            pl->tmpl_clean[out++] = pl->tmpl[i];
            continue;
        }
        pl->seg[k] = pl->tmpl_clean + start;
        pl->seglen[k] = out - start;
        if (i == n) break;
        pl->seghole[k] = atoi(pl->tmpl + i + 1);
        while (i < n && pl->tmpl[i] != '\x02') i++;
        start = out;
        k++;
    }
    pl->tmpl_clean[out] = 0;
    return 0;
}

/* base with a placeholder at every grid and zip key. */
static int build_base_tree(expander *x, const cJSON *base) {
    char err[300];
    x->base_tree = base ? cJSON_Duplicate(base, 1) : cJSON_CreateObject();
    if (!x->base_tree) return UMDQ_ENOMEM;
    for (int h = 0; h < x->nholes; h++) {
        char mark[24];
        snprintf(mark, sizeof mark, "\x01%d\x02", h);
        cJSON *raw = cJSON_CreateRaw(mark);
        if (!raw) return UMDQ_ENOMEM;
        if (json_path_set(x->base_tree, x->holes[h].key, raw, err, sizeof err) != 0) {
            char where[400];
            snprintf(where, sizeof where, "%s.%s", x->holes[h].section, x->holes[h].key);
            errlist_add(x->errs, where, "%s", err);
        }
    }
    return 0;
}

/* Merge, validate and cut entry e (entry NULL = no list). The base is validated once per kind
 * and each entry value once at its key: together that is the merged config's validation (a base
 * value an entry replaces is not reported). */
static int plan_entry(expander *x, int e, const cJSON *entry, unsigned *kinds_seen) {
    entry_plan *pl = &x->entries[e];
    char err[300];
    const cJSON *applied[64];   /* entry members set in merged (borrowed), the first 64 */
    int napplied = 0, all_applied = 1;
    pl->entry = entry;
    pl->merged = cJSON_Duplicate(x->base_tree, 1);
    if (!pl->merged) return UMDQ_ENOMEM;
    for (const cJSON *c = entry ? entry->child : NULL; c; c = c->next) {
        char where[400];
        snprintf(where, sizeof where, "list[%d].%s", e, c->string);
        char msg[300];
        if (schema_check_path(c->string, msg, sizeof msg) != 0) {
            errlist_add(x->errs, where, "%s", msg);
            continue;
        }
        int clash = 0;
        for (int h = 0; h < x->nholes && !clash; h++)
            if (overlaps(c->string, x->holes[h].key)) {
                errlist_add(x->errs, where, "%s is also swept by %s.%s: a key is set by list entries "
                            "or swept by grid/zip, not both", c->string, x->holes[h].section,
                            x->holes[h].key);
                clash = 1;
            }
        if (clash) continue;
        cJSON *v = cJSON_Duplicate(c, 1);
        if (!v) return UMDQ_ENOMEM;
        if (json_path_set(pl->merged, c->string, v, err, sizeof err) != 0) {
            errlist_add(x->errs, where, "%s", err);
            continue;
        }
        if (napplied < (int)(sizeof applied / sizeof applied[0])) applied[napplied++] = c;
        else all_applied = 0;
    }
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(pl->merged, "kind");
    if (!kv) {
        if (!cJSON_AddStringToObject(pl->merged, "kind", "umd")) return UMDQ_ENOMEM;
        pl->kind = "umd";
    } else if (cJSON_IsString(kv)) {
        pl->kind = static_kind(kv->valuestring);
    } else {
        pl->kind = NULL;
    }
    int ki = !pl->kind ? 0 : strcmp(pl->kind, "umd") == 0 ? 1 : 2;

    /* the base's problems that this entry does not replace */
    if (!x->base_errs[ki]) {
        if (!(x->base_errs[ki] = errlist_new())) return UMDQ_ENOMEM;
        schema_validate_at("", x->base_tree, pl->kind, 1, x->base_errs[ki]);
    }
    const errlist *be = x->base_errs[ki];
    for (int i = 0; i < errlist_count(be); i++) {
        const char *p = errlist_path(be, i);
        int replaced = 0;
        for (int k = 0; k < napplied && !replaced; k++) replaced = under(p, applied[k]->string);
        if (!replaced) errlist_add(x->errs, p, "%s", errlist_message(be, i));
    }
    /* the entry's values at their keys */
    for (int k = 0; k < napplied; k++) {
        errlist_clear(x->scratch);
        schema_validate_at(applied[k]->string, applied[k], pl->kind, 1, x->scratch);
        for (int i = 0; i < errlist_count(x->scratch); i++) {
            char where[400];
            snprintf(where, sizeof where, "list[%d].%s", e, applied[k]->string);
            add_at(x->errs, where, errlist_path(x->scratch, i), errlist_message(x->scratch, i));
        }
    }
    if (!all_applied) {
        /* an entry of more than 64 keys: check its whole merged config the slow way */
        errlist_clear(x->scratch);
        schema_validate_at("", pl->merged, pl->kind, 1, x->scratch);
        for (int i = 0; i < errlist_count(x->scratch); i++) {
            char where[32];
            snprintf(where, sizeof where, "list[%d]", e);
            add_at(x->errs, where, errlist_path(x->scratch, i), errlist_message(x->scratch, i));
        }
    }

    /* each grid/zip value once per kind in use */
    unsigned kbit = !pl->kind ? 1u : strcmp(pl->kind, "umd") == 0 ? 2u : 4u;
    if (!(*kinds_seen & kbit)) {
        *kinds_seen |= kbit;
        for (int h = 0; h < x->nholes; h++) {
            hole *ho = &x->holes[h];
            if (ho->bad) continue;
            for (int i = 0; i < ho->n; i++) {
                errlist_clear(x->scratch);
                schema_validate_at(ho->key, ho->value[i], pl->kind, 1, x->scratch);
                for (int k = 0; k < errlist_count(x->scratch); k++) {
                    char where[400];
                    snprintf(where, sizeof where, "%s.%s[%d]", ho->section, ho->key, i);
                    add_at(x->errs, where, errlist_path(x->scratch, k), errlist_message(x->scratch, k));
                }
            }
        }
    }

    pl->nxholes = 0;
    pl->xcombos = 1;
    for (int c = 0; c < SCHEMA_CROSS_N; c++) {
        pl->src[c] = find_source(x, pl->merged, schema_cross_paths[c]);
        int h = pl->src[c].hole, seen = h < 0;
        for (int i = 0; i < pl->nxholes && !seen; i++) seen = pl->xholes[i] == h;
        if (seen) continue;
        pl->xholes[pl->nxholes++] = h;
        int n = x->holes[h].n > 0 ? x->holes[h].n : 1;
        pl->xcombos = pl->xcombos && pl->xcombos <= (1 << 16) / n ? pl->xcombos * n : 0;
    }
    if (pl->src[0].hole >= 0) {
        errlist_add(x->errs, x->holes[pl->src[0].hole].section[0] == 'g' ? "grid.kind" : "zip.kind",
                    "kind cannot be swept by grid or zip: give each kind its own list entry");
    }

    pl->tmpl = json_canonical(pl->merged);
    if (!pl->tmpl) {
        char where[32];
        snprintf(where, sizeof where, entry ? "list[%d]" : "base", e);
        errlist_add(x->errs, where, "holds a number that is not finite");
        return 0;
    }
    return cut_segments(pl);
}

/* ---- per job ---------------------------------------------------------------------------------- */

/* The keys each cross-key problem (by its path) depends on, so a problem reported at a key that
 * comes from base can still name the swept value that caused it. Mirrors schema_check_cross. */
static const char *const cross_involves[][4] = {
    {"model.width", "model.width", "model.heads", NULL},
    {"model.patch", "model.patch", "data.dataset", "data.image_size"},
    {"data.path", "data.path", "data.dataset", NULL},
    {"train.precision", "train.precision", "train.device", NULL},
    {"command", "command", "kind", NULL},
};

static int cross_index(const char *path) {
    for (int k = 0; k < SCHEMA_CROSS_N; k++)
        if (strcmp(path, schema_cross_paths[k]) == 0) return k;
    return -1;
}

/* The hole that the problem at path p in this job depends on, or -1. */
static int problem_hole(const entry_plan *pl, const char *p) {
    int c = cross_index(p);
    if (c >= 0 && pl->src[c].hole >= 0) return pl->src[c].hole;
    for (size_t r = 0; r < sizeof cross_involves / sizeof cross_involves[0]; r++) {
        if (strcmp(cross_involves[r][0], p) != 0) continue;
        for (int i = 1; i < 4 && cross_involves[r][i]; i++) {
            c = cross_index(cross_involves[r][i]);
            if (c >= 0 && pl->src[c].hole >= 0) return pl->src[c].hole;
        }
    }
    return -1;
}

/* Map the problems of one job's cross-key or template check (in scratch) to spec locations. */
static void map_job_errors(expander *x, const entry_plan *pl, int e, const int *pick) {
    for (int i = 0; i < errlist_count(x->scratch); i++) {
        const char *p = errlist_path(x->scratch, i), *msg = errlist_message(x->scratch, i);
        int hn = problem_hole(pl, p);
        if (hn >= 0) {
            const hole *h = &x->holes[hn];
            char where[400];
            snprintf(where, sizeof where, "%s.%s[%d]", h->section, h->key, pick[hn]);
            add_at(x->errs, where, p, msg);
            continue;
        }
        const cJSON *k = NULL;
        for (const cJSON *m = pl->entry ? pl->entry->child : NULL; m && !k; m = m->next)
            if (under(p, m->string)) k = m;
        if (k) {
            char where[400];
            snprintf(where, sizeof where, "list[%d].%s", e, k->string);
            add_at(x->errs, where, p, msg);
        } else {
            errlist_add(x->errs, p, "%s", msg);
        }
    }
}

static void cross_check(expander *x, const entry_plan *pl, int e, const int *pick) {
    const cJSON *values[SCHEMA_CROSS_N];
    for (int c = 0; c < SCHEMA_CROSS_N; c++) {
        const source *s = &pl->src[c];
        if (s->hole < 0) {
            values[c] = s->constant;
        } else {
            const cJSON *v = x->holes[s->hole].value ? x->holes[s->hole].value[pick[s->hole]] : NULL;
            values[c] = *s->rest ? json_path_get(v, s->rest) : v;
        }
    }
    errlist_clear(x->scratch);
    if (schema_check_cross(values, x->scratch)) map_job_errors(x, pl, e, pick);
}

/* Kind command: the command's fields must resolve in the job's config. */
static void command_check(expander *x, const entry_plan *pl, int e, const int *pick, const char *text,
                          size_t len) {
    char err[200];
    cJSON *cfg = json_parse_n(text, len, err, sizeof err);
    if (!cfg) return;
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(cfg, "command");
    if (cJSON_IsString(cmd)) {
        char *out = NULL;
        errlist_clear(x->scratch);
        if (template_render(cmd->valuestring, cfg, NULL, &out, x->scratch) != 0)
            map_job_errors(x, pl, e, pick);
        free(out);
    }
    cJSON_Delete(cfg);
}

/* ---- the whole expansion ---------------------------------------------------------------------- */

static void expander_free(expander *x) {
    for (int h = 0; h < x->nholes; h++) {
        hole *ho = &x->holes[h];
        for (int i = 0; ho->text && i < ho->n; i++) free(ho->text[i]);
        free(ho->text);
        free(ho->value);
        free(ho->len);
    }
    free(x->holes);
    for (int e = 0; e < x->nentries; e++) {
        entry_plan *pl = &x->entries[e];
        cJSON_Delete(pl->merged);
        free(pl->tmpl);
        free(pl->tmpl_clean);
        free(pl->seg);
        free(pl->seglen);
        free(pl->seghole);
    }
    free(x->entries);
    cJSON_Delete(x->base_tree);
    for (int k = 0; k < 3; k++) errlist_destroy(&x->base_errs[k]);
    errlist_destroy(&x->scratch);
}

/* Report list entries whose merged configs are the same. */
static void check_entry_repeats(expander *x) {
    if (x->nentries < 2) return;
    char **t = malloc((size_t)x->nentries * sizeof *t);
    int *order = malloc((size_t)x->nentries * sizeof *order);
    if (t && order) {
        int ok = 1;
        for (int e = 0; e < x->nentries; e++) {
            t[e] = x->entries[e].tmpl;
            order[e] = e;
            ok &= t[e] != NULL;
        }
        if (ok) {
            qsort_r(order, (size_t)x->nentries, sizeof *order, cmp_text, t);
            for (int i = 1; i < x->nentries; i++) {
                int a = order[i - 1], b = order[i];
                if (strcmp(t[a], t[b]) == 0) {
                    char where[32];
                    snprintf(where, sizeof where, "list[%d]", b);
                    errlist_add(x->errs, where, "gives the same configs as list[%d]", a);
                }
            }
        }
    }
    free(t);
    free(order);
}

int sweep_expand(const char *text, size_t len, sweep **out, errlist *errs) {
    int rc = 0;
    char err[300];
    sweep *s = NULL;          /* owned until handed to *out */
    cJSON *root = NULL;       /* owned */
    int64_t *seeds = NULL;    /* owned */
    int nseeds = 0;
    int *pick = NULL;         /* owned: the value index of every hole for the current job */
    unsigned char *checked = NULL; /* owned: cross-key combinations already checked (per entry) */
    expander x;
    memset(&x, 0, sizeof x);
    *out = NULL;
    int before = errlist_count(errs);
    x.errs = errs;
    x.scratch = errlist_new();
    s = calloc(1, sizeof *s);
    if (!s || !x.scratch) { rc = UMDQ_ENOMEM; goto fail; }

    root = json_parse_n(text, len, err, sizeof err);
    if (!root) {
        errlist_add(errs, "", "%s", err);
        rc = UMDQ_EINVAL;
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        errlist_add(errs, "", "a sweep spec must be a JSON object");
        rc = UMDQ_EINVAL;
        goto fail;
    }
    parse_header(root, s, &seeds, &nseeds, errs);

    const cJSON *base = cJSON_GetObjectItemCaseSensitive(root, "base");
    if (base && !cJSON_IsObject(base)) {
        errlist_add(errs, "base", "must be an object (the job config every job starts from)");
        base = NULL;
    }
    const cJSON *grid = cJSON_GetObjectItemCaseSensitive(root, "grid");
    const cJSON *zip = cJSON_GetObjectItemCaseSensitive(root, "zip");
    int nkeys = cJSON_GetArraySize(grid) * cJSON_IsObject(grid) + cJSON_GetArraySize(zip) * cJSON_IsObject(zip);
    x.holes = calloc((size_t)nkeys + 1, sizeof *x.holes);
    pick = calloc((size_t)nkeys + 1, sizeof *pick);
    if (!x.holes || !pick) { rc = UMDQ_ENOMEM; goto fail; }
    if (collect_holes(&x, grid, "grid", errs) != 0) { rc = UMDQ_ENOMEM; goto fail; }
    x.ngrid = x.nholes;
    if (collect_holes(&x, zip, "zip", errs) != 0) { rc = UMDQ_ENOMEM; goto fail; }
    x.zlen = 1;
    check_overlaps(&x, errs);
    if (x.zlen < 1) x.zlen = 1;

    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "list");
    int nentries = 1;
    if (list) {
        int ok = cJSON_IsArray(list) && cJSON_GetArraySize(list) > 0;
        for (const cJSON *c = ok ? list->child : NULL; c; c = c->next) ok &= cJSON_IsObject(c);
        if (!ok) {
            errlist_add(errs, "list", "must be a non-empty array of objects (dotted key -> value)");
            list = NULL;
        } else {
            nentries = cJSON_GetArraySize(list);
        }
    }

    /* the number of jobs, before building anything per job */
    double total = (double)nentries * x.zlen * (nseeds ? nseeds : 1);
    for (int h = 0; h < x.ngrid; h++) total *= x.holes[h].n ? x.holes[h].n : 1;
    int too_many = total > SWEEP_MAX_JOBS;
    if (too_many)
        errlist_add(errs, "", "the sweep has %.0f jobs, more than the limit of %d", total, SWEEP_MAX_JOBS);

    if (build_base_tree(&x, base) != 0) { rc = UMDQ_ENOMEM; goto fail; }
    x.entries = calloc((size_t)nentries, sizeof *x.entries);
    if (!x.entries) { rc = UMDQ_ENOMEM; goto fail; }
    x.nentries = nentries;
    unsigned kinds_seen = 0;
    const cJSON *entry = list ? list->child : NULL;
    for (int e = 0; e < nentries && !too_many; e++, entry = entry ? entry->next : NULL)
        if (plan_entry(&x, e, entry, &kinds_seen) != 0) { rc = UMDQ_ENOMEM; goto fail; }
    check_entry_repeats(&x);

    /* swept keys: grid, zip, then list keys in first-seen order */
    s->swept = calloc((size_t)nkeys + 64, sizeof *s->swept);
    if (!s->swept) { rc = UMDQ_ENOMEM; goto fail; }
    int swept_cap = nkeys + 64;
    for (int h = 0; h < x.nholes; h++)
        if (!(s->swept[s->nswept++] = strdup(x.holes[h].key))) { rc = UMDQ_ENOMEM; goto fail; }
    for (const cJSON *en = list ? list->child : NULL; en; en = en->next)
        for (const cJSON *c = en->child; c; c = c->next) {
            int seen = 0;
            for (int i = 0; i < s->nswept && !seen; i++) seen = strcmp(s->swept[i], c->string) == 0;
            if (seen) continue;
            if (s->nswept == swept_cap) {
                char **grown = realloc(s->swept, (size_t)swept_cap * 2 * sizeof *grown);
                if (!grown) { rc = UMDQ_ENOMEM; goto fail; }
                s->swept = grown;
                swept_cap *= 2;
            }
            if (!(s->swept[s->nswept++] = strdup(c->string))) { rc = UMDQ_ENOMEM; goto fail; }
        }

    if (errlist_count(errs) > before || too_many || nseeds == 0) { rc = UMDQ_EINVAL; goto fail; }

    /* Every distinct config (entries x grid x zip; seeds share the text) is written once, into
     * one allocation that holds the job array followed by the texts (sweep_destroy frees
     * s->jobs). Each grid value appears in the same number of configs, so the size is exact. */
    int nconfigs = (int)(total / nseeds), per_entry = nconfigs / x.nentries;
    size_t njobs = (size_t)nconfigs * (size_t)nseeds, head = njobs * sizeof(sweep_job), text_bytes = 0;
    for (int e = 0; e < x.nentries; e++) {
        const entry_plan *pl = &x.entries[e];
        for (int k = 0; k < pl->nseg; k++) {
            text_bytes += (size_t)per_entry * pl->seglen[k];
            if (k + 1 == pl->nseg) continue;
            const hole *h = &x.holes[pl->seghole[k]];
            size_t sum = 0;
            for (int i = 0; i < h->n; i++) sum += h->len[i];
            text_bytes += sum * (size_t)(per_entry / h->n);
        }
        text_bytes += (size_t)per_entry; /* the NULs */
    }
    char *block = malloc(head + text_bytes);
    if (!block) { rc = UMDQ_ENOMEM; goto fail; }
    s->jobs = (sweep_job *)block;
    char *w = block + head, *end = block + head + text_bytes;
    int cfg = 0;
    for (int e = 0; e < x.nentries; e++) {
        entry_plan *pl = &x.entries[e];
        memset(pick, 0, (size_t)(nkeys + 1) * sizeof *pick);
        /* cross-key checks depend only on the values of pl->xholes: each combination once */
        free(checked);
        checked = pl->xcombos ? calloc((size_t)pl->xcombos, 1) : NULL;
        if (pl->xcombos && !checked) { rc = UMDQ_ENOMEM; goto fail; }
        for (;;) { /* grid combinations, the first key slowest */
            for (int z = 0; z < x.zlen; z++) {
                for (int h = x.ngrid; h < x.nholes; h++) pick[h] = z;
                char *cfgtext = w;
                for (int k = 0; k < pl->nseg; k++) {
                    if (w + pl->seglen[k] > end) goto overrun;
                    memcpy(w, pl->seg[k], pl->seglen[k]);
                    w += pl->seglen[k];
                    if (k + 1 < pl->nseg) {
                        const hole *h = &x.holes[pl->seghole[k]];
                        int v = pick[pl->seghole[k]];
                        if (w + h->len[v] > end) goto overrun;
                        memcpy(w, h->text[v], h->len[v]);
                        w += h->len[v];
                    }
                }
                if (w >= end) goto overrun;
                *w++ = 0;
                size_t cfglen = (size_t)(w - 1 - cfgtext);
                if (pl->kind) {
                    int combo = 0;
                    for (int i = 0; checked && i < pl->nxholes; i++)
                        combo = combo * x.holes[pl->xholes[i]].n + pick[pl->xholes[i]];
                    if (!checked || !checked[combo]) cross_check(&x, pl, e, pick);
                    if (checked) checked[combo] = 1;
                }
                if (pl->kind && strcmp(pl->kind, "command") == 0) command_check(&x, pl, e, pick, cfgtext, cfglen);
                unsigned char digest[32];
                char hex[65];
                sha256(cfgtext, cfglen, digest);
                sha256_to_hex(digest, hex);
                for (int k = 0; k < nseeds; k++) {
                    sweep_job *j = &s->jobs[(size_t)cfg * nseeds + k];
                    j->idx = cfg * nseeds + k;
                    j->config = cfgtext;
                    memcpy(j->hash, hex, 65);
                    j->seed = seeds[k];
                    j->kind = pl->kind;
                }
                cfg++;
            }
            int h = x.ngrid - 1;
            for (; h >= 0; h--) {
                if (++pick[h] < x.holes[h].n) break;
                pick[h] = 0;
            }
            if (h < 0) break;
        }
    }
    if (errlist_count(errs) > before) { rc = UMDQ_EINVAL; goto fail; }
    s->njobs = (int)njobs;
    s->spec = json_canonical(root);
    if (!s->spec || !s->name) { rc = UMDQ_ENOMEM; goto fail; }
    *out = s;
    s = NULL;
    goto fail;
overrun: /* cannot happen: the size above is exact */
    errlist_add(errs, "", "internal error: config texts larger than computed");
    rc = UMDQ_EINVAL;
fail:
    if (rc == UMDQ_ENOMEM) errlist_add(errs, "", "out of memory expanding the sweep");
    if (rc != 0 && errlist_count(errs) == before) errlist_add(errs, "", "invalid sweep");
    expander_free(&x);
    free(checked);
    free(pick);
    free(seeds);
    cJSON_Delete(root);
    sweep_destroy(&s);
    return rc;
}

void sweep_destroy(sweep **sp) {
    if (!sp || !*sp) return;
    sweep *s = *sp;
    free(s->name);
    free(s->spec);
    free(s->jobs);
    for (int i = 0; i < s->nswept; i++) free(s->swept[i]);
    free(s->swept);
    free(s);
    *sp = NULL;
}
