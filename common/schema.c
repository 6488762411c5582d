/* schema.c: lookup, defaults and validation of job configs over the key table in schema_keys.c:
 * per-key type, range and kind checks, unknown keys with a suggestion, and the cross-key checks
 * (width vs heads, patch vs image side, data path, precision vs device, command present). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "jsonx.h"
#include "schema.h"
#include "template.h"
#include "umdq.h"
#include "util.h"

/* ---- lookup: the table sorted by path, built once ------------------------------------------- */

static const schema_key **sorted_keys; /* nkeys pointers into umdq_job_schema, sorted by path */
static int nkeys;
static pthread_once_t sorted_once = PTHREAD_ONCE_INIT;
static const schema_key *sorted_stack[256];

static int key_ptr_cmp(const void *a, const void *b) {
    return strcmp((*(const schema_key *const *)a)->path, (*(const schema_key *const *)b)->path);
}

static void build_sorted(void) {
    int n = 0;
    while (umdq_job_schema[n].path && n < (int)(sizeof sorted_stack / sizeof sorted_stack[0])) {
        sorted_stack[n] = &umdq_job_schema[n];
        n++;
    }
    qsort(sorted_stack, (size_t)n, sizeof sorted_stack[0], key_ptr_cmp);
    sorted_keys = sorted_stack;
    nkeys = n;
}

const schema_key *schema_find(const char *path) {
    if (!path) return NULL;
    pthread_once(&sorted_once, build_sorted);
    int lo = 0, hi = nkeys - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(path, sorted_keys[mid]->path);
        if (c == 0) return sorted_keys[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

/* 1 when some key starts with path + "." (path is an object of keys, like "model"). */
static int is_prefix(const char *path, size_t n) {
    pthread_once(&sorted_once, build_sorted);
    /* keys starting with path + "." sort together; find the first key >= path + "." */
    int lo = 0, hi = nkeys;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        const char *k = sorted_keys[mid]->path;
        int c = strncmp(k, path, n);
        if (c == 0) c = (unsigned char)k[n] < '.' ? -1 : (unsigned char)k[n] == '.' ? 0 : 1;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < nkeys && strncmp(sorted_keys[lo]->path, path, n) == 0 && sorted_keys[lo]->path[n] == '.';
}

/* The free-form key ("params") that path lies under, or NULL. */
static const schema_key *free_parent(const char *path) {
    char buf[256];
    size_t n = strlen(path);
    if (n >= sizeof buf) return NULL;
    memcpy(buf, path, n + 1);
    for (char *dot = strrchr(buf, '.'); dot; dot = strrchr(buf, '.')) {
        *dot = 0;
        const schema_key *k = schema_find(buf);
        if (k) return k->type == SCHEMA_FREE ? k : NULL;
    }
    return NULL;
}

cJSON *schema_default(const schema_key *k) {
    if (!k || !k->dflt) return NULL;
    return cJSON_Parse(k->dflt);
}

/* ---- messages ------------------------------------------------------------------------------- */

/* A short description of v for "got ..." ("1.5", "\"abc\"", "an object"). */
static void describe(const cJSON *v, char *buf, size_t n) {
    if (!v) snprintf(buf, n, "nothing");
    else if (cJSON_IsNumber(v)) {
        if (json_canonical_number(v->valuedouble, buf, n) != 0) snprintf(buf, n, "a non-finite number");
    } else if (cJSON_IsString(v)) {
        const char *s = v->valuestring ? v->valuestring : "";
        if (strlen(s) > 40) snprintf(buf, n, "\"%.37s...\"", s);
        else snprintf(buf, n, "\"%s\"", s);
    } else if (cJSON_IsBool(v)) snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNull(v)) snprintf(buf, n, "null");
    else if (cJSON_IsArray(v)) snprintf(buf, n, "an array");
    else if (cJSON_IsObject(v)) snprintf(buf, n, "an object");
    else snprintf(buf, n, "an unknown value");
}

/* "[0, 1)", "(0, inf)" for a numeric key. */
static void interval(const schema_key *k, char *buf, size_t n) {
    char lo[40], hi[40];
    if (k->flags & SCHEMA_NO_MIN) snprintf(lo, sizeof lo, "-inf");
    else json_canonical_number(k->min, lo, sizeof lo);
    if ((k->flags & SCHEMA_NO_MAX) || isinf(k->max)) snprintf(hi, sizeof hi, "inf");
    else json_canonical_number(k->max, hi, sizeof hi);
    snprintf(buf, n, "%c%s, %s%c", (k->flags & (SCHEMA_MIN_OPEN | SCHEMA_NO_MIN)) ? '(' : '[', lo, hi,
             (k->flags & (SCHEMA_MAX_OPEN | SCHEMA_NO_MAX)) || isinf(k->max) ? ')' : ']');
}

static int enum_has(const char *choices, const char *s) {
    size_t n = strlen(s);
    for (const char *p = choices; p && *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

/* 0 when v is a valid value of k (type and range); else 1 with a message in msg. Kind and sweep
 * rules are not checked here. */
static int value_problem(const schema_key *k, const cJSON *v, char *msg, size_t n) {
    char got[64];
    switch (k->type) {
    case SCHEMA_INT:
    case SCHEMA_NUMBER: {
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
            describe(v, got, sizeof got);
            snprintf(msg, n, "must be %s, got %s", k->type == SCHEMA_INT ? "an integer" : "a number", got);
            return 1;
        }
        double d = v->valuedouble;
        if (k->type == SCHEMA_INT && d != floor(d)) {
            describe(v, got, sizeof got);
            snprintf(msg, n, "must be an integer, got %s", got);
            return 1;
        }
        int low = !(k->flags & SCHEMA_NO_MIN) && ((k->flags & SCHEMA_MIN_OPEN) ? d <= k->min : d < k->min);
        int high = !(k->flags & SCHEMA_NO_MAX) && ((k->flags & SCHEMA_MAX_OPEN) ? d >= k->max : d > k->max);
        if (low || high) {
            char range[96];
            interval(k, range, sizeof range);
            describe(v, got, sizeof got);
            snprintf(msg, n, "must be in %s, got %s", range, got);
            return 1;
        }
        return 0;
    }
    case SCHEMA_BOOL:
        if (cJSON_IsBool(v)) return 0;
        describe(v, got, sizeof got);
        snprintf(msg, n, "must be true or false, got %s", got);
        return 1;
    case SCHEMA_STRING:
        if (cJSON_IsString(v)) return 0;
        describe(v, got, sizeof got);
        snprintf(msg, n, "must be a string, got %s", got);
        return 1;
    case SCHEMA_ENUM: {
        if (cJSON_IsString(v) && enum_has(k->choices, v->valuestring)) return 0;
        if ((k->flags & SCHEMA_OR_BOOL) && cJSON_IsBool(v)) return 0;
        char list[160];
        size_t len = 0;
        list[0] = 0;
        for (const char *p = k->choices; p && *p && len < sizeof list - 8;) {
            const char *bar = strchr(p, '|');
            int w = bar ? (int)(bar - p) : (int)strlen(p);
            len += (size_t)snprintf(list + len, sizeof list - len, "%s\"%.*s\"", len ? ", " : "", w, p);
            p = bar ? bar + 1 : NULL;
        }
        describe(v, got, sizeof got);
        snprintf(msg, n, "must be %sone of %s, got %s",
                 (k->flags & SCHEMA_OR_BOOL) ? "true, false or " : "", list, got);
        return 1;
    }
    case SCHEMA_FREE:
        if (cJSON_IsObject(v)) return 0;
        describe(v, got, sizeof got);
        snprintf(msg, n, "must be an object, got %s", got);
        return 1;
    }
    snprintf(msg, n, "has an unknown type");
    return 1;
}

/* Rules that depend on where the key is used: reserved keys, sweep-set keys, kind. 0 or 1 with
 * a message. kind NULL = unknown (not checked). */
static int usage_problem(const schema_key *k, const char *kind, int in_sweep, char *msg, size_t n) {
    if (k->flags & SCHEMA_RESERVED) {
        snprintf(msg, n, "%s is not available in this version", k->path);
        return 1;
    }
    if (in_sweep && (k->flags & SCHEMA_NOT_IN_SWEEP)) {
        if (strcmp(k->path, "seed") == 0) snprintf(msg, n, "seed is set by the sweep's \"seeds\"");
        else snprintf(msg, n, "%s is set by the sweep", k->path);
        return 1;
    }
    /* SCHEMA_UMD_ONLY keys are allowed in kind command jobs too: a researcher's own training
     * script is swept over the same keys ("--mask {umd.mask_ratio}"), checked the same way. */
    if (kind && (k->flags & SCHEMA_COMMAND_ONLY) && strcmp(kind, "command") != 0) {
        snprintf(msg, n, "only for kind command");
        return 1;
    }
    return 0;
}

static int edit_distance(const char *a, size_t na, const char *b, size_t nb) {
    int row[128];
    if (nb >= sizeof row / sizeof row[0]) return 1000;
    for (size_t j = 0; j <= nb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= nb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

static const char *last_segment(const char *p, size_t n, size_t *len) {
    const char *s = p + n;
    while (s > p && s[-1] != '.') s--;
    *len = (size_t)(p + n - s);
    return s;
}

/* "unknown key" with the closest known key or object within edit distance 2, else a key with
 * the same last name ("mask_ratio" -> "umd.mask_ratio"). */
static void unknown_message(const char *path, char *msg, size_t n) {
    pthread_once(&sorted_once, build_sorted);
    const char *best = NULL;
    size_t bestlen = 0;
    int bestd = 3;
    size_t plen = strlen(path), pl_len;
    const char *pleaf = last_segment(path, plen, &pl_len);
    const char *leaf_match = NULL;
    for (int i = 0; i < nkeys; i++) {
        const char *k = sorted_keys[i]->path;
        for (size_t len = 1;; len++) {
            if (k[len] != '.' && k[len] != 0) continue;
            int d = edit_distance(path, plen, k, len);
            if (d < bestd) {
                bestd = d;
                best = k;
                bestlen = len;
            }
            if (k[len] == 0) break;
        }
        /* the leaf alone: the first such key in table order, so a core key ("umd.mask_ratio")
         * wins over a later section that reuses its name ("finetune.mask_ratio") */
        const char *t = umdq_job_schema[i].path;
        size_t kl_len;
        const char *kleaf = last_segment(t, strlen(t), &kl_len);
        if (!leaf_match && kl_len == pl_len && strncmp(kleaf, pleaf, pl_len) == 0) leaf_match = t;
    }
    if (best) snprintf(msg, n, "unknown key (did you mean \"%.*s\"?)", (int)bestlen, best);
    else if (leaf_match) snprintf(msg, n, "unknown key (did you mean \"%s\"?)", leaf_match);
    else snprintf(msg, n, "unknown key");
}

int schema_check_path(const char *path, char *msg, size_t n) {
    if (!path || !*path) {
        snprintf(msg, n, "empty key");
        return UMDQ_EINVAL;
    }
    size_t len = strlen(path);
    if (path[0] == '.' || path[len - 1] == '.' || strstr(path, "..")) {
        snprintf(msg, n, "a dotted key cannot have an empty part");
        return UMDQ_EINVAL;
    }
    if (schema_find(path) || is_prefix(path, len) || free_parent(path)) return 0;
    unknown_message(path, msg, n);
    return UMDQ_EINVAL;
}

/* ---- walking a config ----------------------------------------------------------------------- */

typedef struct {
    const char *kind; /* "umd", "command" or NULL when unknown */
    int in_sweep;
    errlist *errs;
    int added;
} walk_ctx;

static void add(walk_ctx *w, const char *path, const char *msg) {
    int before = errlist_count(w->errs);
    errlist_add(w->errs, path, "%s", msg);
    w->added += errlist_count(w->errs) - before;
}

static void check_key(walk_ctx *w, const schema_key *k, const char *path, const cJSON *v) {
    char msg[400];
    if (usage_problem(k, w->kind, w->in_sweep, msg, sizeof msg) ||
        value_problem(k, v, msg, sizeof msg))
        add(w, path, msg);
}

static void walk_object(walk_ctx *w, strbuf *path, const cJSON *obj);

/* v found at path (path holds the dotted key). */
static void walk_value(walk_ctx *w, strbuf *path, const cJSON *v) {
    char msg[400];
    if (cJSON_IsRaw(v)) return; /* a placeholder filled in later (sweep.c) */
    const schema_key *k = schema_find(path->data);
    if (k) {
        check_key(w, k, path->data, v);
        return;
    }
    if (is_prefix(path->data, path->len)) {
        if (cJSON_IsObject(v)) {
            walk_object(w, path, v);
        } else {
            char got[64];
            describe(v, got, sizeof got);
            snprintf(msg, sizeof msg, "must be an object, got %s", got);
            add(w, path->data, msg);
        }
        return;
    }
    const schema_key *fp = free_parent(path->data);
    if (fp) {
        if (usage_problem(fp, w->kind, w->in_sweep, msg, sizeof msg)) add(w, path->data, msg);
        return;
    }
    unknown_message(path->data, msg, sizeof msg);
    add(w, path->data, msg);
}

static void walk_object(walk_ctx *w, strbuf *path, const cJSON *obj) {
    size_t mark = path->len;
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *name = c->string ? c->string : "";
        if (mark) strbuf_append(path, ".", 1);
        strbuf_puts(path, name);
        if (path->oom) return;
        if (!*name || strchr(name, '.')) {
            char msg[300];
            if (!*name) snprintf(msg, sizeof msg, "empty key");
            else snprintf(msg, sizeof msg, "a key name cannot contain \".\": write nested objects, "
                          "as in {\"%.*s\": {\"%s\": ...}}", (int)(strchr(name, '.') - name), name,
                          strchr(name, '.') + 1);
            add(w, path->data, msg);
        } else {
            walk_value(w, path, c);
        }
        path->len = mark;
        path->data[mark] = 0;
    }
}

int schema_validate_at(const char *path, const cJSON *v, const char *kind, int in_sweep, errlist *errs) {
    walk_ctx w = {kind, in_sweep, errs, 0};
    strbuf p;
    strbuf_init(&p);
    if (!path || !*path) {
        if (!cJSON_IsObject(v)) add(&w, "", "a job config must be a JSON object");
        else walk_object(&w, &p, v);
    } else {
        strbuf_puts(&p, path);
        walk_value(&w, &p, v);
    }
    if (p.oom) add(&w, path ? path : "", "out of memory");
    strbuf_free(&p);
    return w.added;
}

/* ---- cross-key checks ----------------------------------------------------------------------- */

const char *const schema_cross_paths[SCHEMA_CROSS_N + 1] = {
    "kind", "command", "model.width", "model.heads", "model.patch", "data.dataset", "data.path",
    "data.image_size", "train.device", "train.precision", NULL};
enum { X_KIND, X_COMMAND, X_WIDTH, X_HEADS, X_PATCH, X_DATASET, X_DATAPATH, X_IMAGESIZE, X_DEVICE,
       X_PRECISION };

static const schema_key *cross_keys[SCHEMA_CROSS_N];
static cJSON *cross_defaults[SCHEMA_CROSS_N]; /* owned for the life of the process */
static pthread_once_t cross_once = PTHREAD_ONCE_INIT;

static void build_cross(void) {
    for (int i = 0; i < SCHEMA_CROSS_N; i++) {
        cross_keys[i] = schema_find(schema_cross_paths[i]);
        cross_defaults[i] = schema_default(cross_keys[i]);
    }
}

/* The value in effect for cross key i: the given one when valid, the default when absent, NULL
 * when invalid (its own error is reported elsewhere) or absent without a default. */
static const cJSON *effective(const cJSON *const *values, int i) {
    char msg[8];
    const cJSON *v = values[i];
    if (!v) return cross_defaults[i];
    if (!cross_keys[i] || value_problem(cross_keys[i], v, msg, sizeof msg)) return NULL;
    return v;
}

static const char *eff_str(const cJSON *const *values, int i) {
    const cJSON *v = effective(values, i);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int eff_int(const cJSON *const *values, int i, long long *out) {
    const cJSON *v = effective(values, i);
    /* out-of-range values are refused by their own range check; converting them is undefined */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= -9e18 && v->valuedouble <= 9e18)) return 0;
    *out = (long long)v->valuedouble;
    return 1;
}

int schema_check_cross(const cJSON *const values[SCHEMA_CROSS_N], errlist *errs) {
    pthread_once(&cross_once, build_cross);
    int before = errlist_count(errs);
    const char *kind = eff_str(values, X_KIND);
    if (!kind) return 0;
    if (strcmp(kind, "command") == 0) {
        if (!values[X_COMMAND]) errlist_add(errs, "command", "required for kind command");
        return errlist_count(errs) - before;
    }
    long long width, heads, patch, side = 0;
    if (eff_int(values, X_WIDTH, &width) && eff_int(values, X_HEADS, &heads) &&
        (width % 2 != 0 || width % heads != 0))
        errlist_add(errs, "model.width", "must be even and a multiple of model.heads (%lld), got %lld",
                    heads, width);
    const char *dataset = eff_str(values, X_DATASET);
    if (dataset) {
        if (strcmp(dataset, "fashion-mnist") == 0 || strcmp(dataset, "mnist") == 0) side = 28;
        else if (strcmp(dataset, "cifar10") == 0) side = 32;
        else if (strcmp(dataset, "imagenet64") == 0) side = 64;
        else if (strcmp(dataset, "synthetic") == 0 && !eff_int(values, X_IMAGESIZE, &side)) side = 0;
        if ((strcmp(dataset, "mnist") == 0 || strcmp(dataset, "cifar10") == 0 ||
             strcmp(dataset, "imagenet64") == 0) && !values[X_DATAPATH])
            errlist_add(errs, "data.path", "required for data.dataset %s (the directory of its files)",
                        dataset);
    }
    if (side > 0 && eff_int(values, X_PATCH, &patch) && side % patch != 0)
        errlist_add(errs, "model.patch", "must divide the image side (%lld for %s), got %lld", side,
                    dataset, patch);
    const char *device = eff_str(values, X_DEVICE), *precision = eff_str(values, X_PRECISION);
    if (device && precision && strcmp(device, "cpu") == 0 && strcmp(precision, "fp32") != 0)
        errlist_add(errs, "train.precision", "%s needs train.device cuda (or auto on a GPU worker)",
                    precision);
    return errlist_count(errs) - before;
}

/* ---- a whole job config --------------------------------------------------------------------- */

int schema_validate_job(const cJSON *config, int in_sweep, errlist *errs) {
    int before = errlist_count(errs);
    if (!cJSON_IsObject(config)) {
        errlist_add(errs, "", "a job config must be a JSON object");
        return errlist_count(errs) - before;
    }
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(config, "kind");
    const char *kind = NULL;
    if (!kv) kind = "umd";
    else if (cJSON_IsString(kv) && (strcmp(kv->valuestring, "umd") == 0 || strcmp(kv->valuestring, "command") == 0))
        kind = kv->valuestring;
    schema_validate_at("", config, kind, in_sweep, errs);
    const cJSON *values[SCHEMA_CROSS_N];
    for (int i = 0; i < SCHEMA_CROSS_N; i++) values[i] = json_path_get(config, schema_cross_paths[i]);
    schema_check_cross(values, errs);
    const cJSON *cmd = values[X_COMMAND];
    if (kind && strcmp(kind, "command") == 0 && cJSON_IsString(cmd)) {
        char *out = NULL;
        template_render(cmd->valuestring, config, NULL, &out, errs);
        free(out);
    }
    return errlist_count(errs) - before;
}
