/* cli_view.c: the daemon's sweep and job answers turned into tables, counts and export rows. */
#include "cli_view.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_fmt.h"
#include "jsonx.h"
#include "umdq.h"

int view_state_final(const char *state) {
    static const char *const final[] = {"SUCCEEDED", "FAILED", "LOST", "PREEMPTED", "CANCELLED"};
    if (!state) return 0;
    for (size_t i = 0; i < sizeof final / sizeof final[0]; i++)
        if (strcmp(state, final[i]) == 0) return 1;
    return 0;
}

static int count_of(const cJSON *counts, const char *state) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(counts, state);
    return cJSON_IsNumber(v) ? (int)v->valuedouble : 0;
}

void view_sweep_counts(const cJSON *summary, view_counts *out) {
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(summary, "counts");
    memset(out, 0, sizeof *out);
    out->queued = count_of(counts, "QUEUED");
    out->running = count_of(counts, "RUNNING");
    out->succeeded = count_of(counts, "SUCCEEDED");
    out->failed = count_of(counts, "FAILED") + count_of(counts, "LOST") +
                  count_of(counts, "PREEMPTED");
    out->cancelled = count_of(counts, "CANCELLED");
    int sum = out->queued + out->running + out->succeeded + out->failed + out->cancelled;
    out->total = (int)json_get_int(summary, "total", sum);
    if (out->total < sum) out->total = sum;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int view_result_keys(const cJSON *jobs, const char ***keys) {
    int n = 0, cap = 0;
    const char **k = NULL;
    const cJSON *job;
    *keys = NULL;
    cJSON_ArrayForEach(job, jobs) {
        const cJSON *r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(job, "results")) {
            if (!r->string) continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                const char **nk = realloc(k, sizeof *k * (size_t)cap);
                if (!nk) {
                    free(k);
                    return -1;
                }
                k = nk;
            }
            k[n++] = r->string;
        }
    }
    if (n == 0) {
        free(k);
        return 0;
    }
    qsort(k, (size_t)n, sizeof *k, cmp_str);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (m == 0 || strcmp(k[m - 1], k[i]) != 0) k[m++] = k[i];
    *keys = k;
    return m;
}

/* 1 when the job rows carry more than one distinct seed. */
static int seeds_differ(const cJSON *jobs) {
    const cJSON *job;
    int have = 0;
    double first = 0;
    cJSON_ArrayForEach(job, jobs) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(job, "seed");
        if (!cJSON_IsNumber(s)) continue;
        if (!have) {
            first = s->valuedouble;
            have = 1;
        } else if (s->valuedouble != first) {
            return 1;
        }
    }
    return 0;
}

/* A swept key's value in a job row: params[key], else the config at the dotted path. */
static const cJSON *swept_value(const cJSON *job, const char *key) {
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(job, "params");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(params, key);
    if (!v) v = json_path_get(cJSON_GetObjectItemCaseSensitive(job, "config"), key);
    return v;
}

/* ---- the comparison of a umd sweep -------------------------------------------------------------- */

typedef enum { CELL_NUMBER, CELL_PERCENT, CELL_TEXT } cell_kind;

/* The results a umd job reports for comparison (trainer/umd.h), in the order tables and exports show
 * them after the swept keys. in_table: a column of `umdq show` (the others are in the export). */
static const struct {
    const char *key, *title;
    cell_kind kind;
    int in_table;
} compare_cols[] = {
    {"probe_ridge_top1", "PROBE", CELL_PERCENT, 1},
    {"probe_linear_top1", "LINEAR", CELL_PERCENT, 1},
    {"pixel_ridge_top1", "PX-PROBE", CELL_PERCENT, 1},
    {"pixel_linear_top1", "PX-LINEAR", CELL_PERCENT, 1},
    {"fid", "FID", CELL_NUMBER, 1},
    {"fid_net", "FID-NET", CELL_TEXT, 0},
    {"fid_samples", "FID-N", CELL_NUMBER, 0},
    {"val_denoise_loss", "VAL-DENOISE", CELL_NUMBER, 1},
    {"val_mask_mse", "VAL-MASK", CELL_NUMBER, 1},
    {"train_img_per_s", "IMG/S", CELL_NUMBER, 1},
    {"device_hours", "DEV-H", CELL_NUMBER, 1},
};
#define NCOMPARE ((int)(sizeof compare_cols / sizeof compare_cols[0]))

static int compare_index(const char *key) {
    for (int i = 0; i < NCOMPARE; i++)
        if (strcmp(compare_cols[i].key, key) == 0) return i;
    return -1;
}

int view_is_umd_sweep(const cJSON *jobs) {
    const cJSON *job;
    cJSON_ArrayForEach(job, jobs) {
        const char *kind = json_get_string(job, "kind", NULL);
        if (kind && strcmp(kind, "umd") == 0) return 1;
    }
    return 0;
}

/* 1 when some job row has result key. */
static int any_result(const cJSON *jobs, const char *key) {
    const cJSON *job;
    cJSON_ArrayForEach(job, jobs)
        if (cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(job, "results"), key)) return 1;
    return 0;
}

/* 1 when some job row has run for a while (run_seconds > 0). */
static int any_run_time(const cJSON *jobs) {
    const cJSON *job;
    cJSON_ArrayForEach(job, jobs) {
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(job, "run_seconds");
        if (cJSON_IsNumber(w) && w->valuedouble > 0) return 1;
    }
    return 0;
}

/* A comparison cell: fractions as percentages ("81.2%"), numbers by fmt_number. */
static void compare_cell(const cJSON *v, cell_kind kind, char *buf, size_t n) {
    if (kind == CELL_PERCENT && cJSON_IsNumber(v)) snprintf(buf, n, "%.1f%%", 100.0 * v->valuedouble);
    else fmt_json_cell(v, buf, n);
}

cli_table *view_jobs_table(const cJSON *answer) {
    const cJSON *sweep = cJSON_GetObjectItemCaseSensitive(answer, "sweep");
    const cJSON *swept = cJSON_GetObjectItemCaseSensitive(sweep, "swept");
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(answer, "jobs");
    const char **rkeys = NULL;
    int umd = view_is_umd_sweep(jobs);
    int nr = umd ? 0 : view_result_keys(jobs, &rkeys);
    int with_seed = seeds_differ(jobs);
    int shown[NCOMPARE] = {0};
    cli_table *t = table_new();
    if (!t || nr < 0) goto fail;
    int rc = table_column(t, "ID", TABLE_RIGHT) | table_column(t, "STATE", TABLE_LEFT) |
             table_column(t, "ATTEMPTS", TABLE_RIGHT);
    if (with_seed) rc |= table_column(t, "SEED", TABLE_RIGHT);
    const cJSON *k;
    cJSON_ArrayForEach(k, swept)
        if (cJSON_IsString(k)) rc |= table_column(t, k->valuestring, TABLE_RIGHT);
    for (int i = 0; i < nr; i++) rc |= table_column(t, rkeys[i], TABLE_RIGHT);
    for (int i = 0; umd && i < NCOMPARE; i++) {
        shown[i] = compare_cols[i].in_table && any_result(jobs, compare_cols[i].key);
        if (shown[i]) rc |= table_column(t, compare_cols[i].title, TABLE_RIGHT);
    }
    int with_wall = umd && any_run_time(jobs);
    if (with_wall) rc |= table_column(t, "WALL", TABLE_RIGHT);
    if (rc) goto fail;

    const cJSON *job;
    cJSON_ArrayForEach(job, jobs) {
        char cell[256];
        if (table_row(t)) goto fail;
        fmt_json_cell(cJSON_GetObjectItemCaseSensitive(job, "id"), cell, sizeof cell);
        table_cell(t, cell);
        const char *state = json_get_string(job, "state", "?");
        table_cell_color(t, fmt_state_color(state), state);
        table_cellf(t, "%lld/%lld", (long long)json_get_int(job, "attempts", 0),
                    (long long)json_get_int(job, "max_attempts", 0));
        if (with_seed) {
            fmt_json_cell(cJSON_GetObjectItemCaseSensitive(job, "seed"), cell, sizeof cell);
            table_cell(t, cell);
        }
        cJSON_ArrayForEach(k, swept) {
            if (!cJSON_IsString(k)) continue;
            fmt_json_cell(swept_value(job, k->valuestring), cell, sizeof cell);
            table_cell(t, cell);
        }
        const cJSON *results = cJSON_GetObjectItemCaseSensitive(job, "results");
        for (int i = 0; i < nr; i++) {
            fmt_json_cell(cJSON_GetObjectItemCaseSensitive(results, rkeys[i]), cell, sizeof cell);
            table_cell(t, cell);
        }
        for (int i = 0; i < NCOMPARE; i++) {
            if (!shown[i]) continue;
            compare_cell(cJSON_GetObjectItemCaseSensitive(results, compare_cols[i].key), compare_cols[i].kind,
                         cell, sizeof cell);
            table_cell(t, cell);
        }
        if (with_wall) {
            const cJSON *w = cJSON_GetObjectItemCaseSensitive(job, "run_seconds");
            if (cJSON_IsNumber(w) && w->valuedouble > 0) fmt_duration(w->valuedouble, cell, sizeof cell);
            else snprintf(cell, sizeof cell, "-");
            table_cell(t, cell);
        }
    }
    free(rkeys);
    return t;
fail:
    free(rkeys);
    table_destroy(&t);
    return NULL;
}

/* ---- mean over seeds ------------------------------------------------------------------------------ */

/* The swept values of a job row as canonical text: jobs with equal text differ only in their seed. */
static char *variant_of(const cJSON *job, const cJSON *swept) {
    cJSON *o = cJSON_CreateObject();
    const cJSON *k;
    cJSON_ArrayForEach(k, swept) {
        if (!cJSON_IsString(k)) continue;
        const cJSON *v = swept_value(job, k->valuestring);
        cJSON_AddItemToObject(o, k->valuestring, v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull());
    }
    char *text = o ? json_canonical(o) : NULL;
    cJSON_Delete(o);
    return text;
}

static void mean_sd_cell(const double *x, int n, cell_kind kind, char *buf, size_t len) {
    if (n == 0) {
        snprintf(buf, len, "-");
        return;
    }
    double mean = 0, ss = 0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) ss += (x[i] - mean) * (x[i] - mean);
    double sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
    if (kind == CELL_PERCENT) {
        if (n > 1) snprintf(buf, len, "%.1f\xc2\xb1%.1f%%", 100 * mean, 100 * sd);
        else snprintf(buf, len, "%.1f%%", 100 * mean);
        return;
    }
    char m[32], d[32];
    fmt_number(mean, m, sizeof m);
    fmt_number(sd, d, sizeof d);
    if (n > 1) snprintf(buf, len, "%s\xc2\xb1%s", m, d);
    else snprintf(buf, len, "%s", m);
}

cli_table *view_seed_table(const cJSON *answer) {
    const cJSON *sweep = cJSON_GetObjectItemCaseSensitive(answer, "sweep");
    const cJSON *swept = cJSON_GetObjectItemCaseSensitive(sweep, "swept");
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(answer, "jobs");
    int n = cJSON_GetArraySize(jobs);
    if (!view_is_umd_sweep(jobs) || !seeds_differ(jobs) || n == 0) return NULL;
    char **variant = calloc((size_t)n, sizeof *variant);
    const cJSON **rows = calloc((size_t)n, sizeof *rows);
    double *x = malloc((size_t)n * sizeof *x);
    int *done = calloc((size_t)n, sizeof *done);
    cli_table *t = NULL;
    int shown[NCOMPARE] = {0}, groups = 0;
    if (!variant || !rows || !x || !done) goto fail;
    int i = 0;
    const cJSON *job;
    cJSON_ArrayForEach(job, jobs) {
        rows[i] = job;
        if (!(variant[i] = variant_of(job, swept))) goto fail;
        i++;
    }
    if (!(t = table_new())) goto fail;
    int rc = 0;
    const cJSON *k;
    cJSON_ArrayForEach(k, swept)
        if (cJSON_IsString(k)) rc |= table_column(t, k->valuestring, TABLE_RIGHT);
    rc |= table_column(t, "SEEDS", TABLE_RIGHT);
    for (int c = 0; c < NCOMPARE; c++) {
        shown[c] = compare_cols[c].in_table && any_result(jobs, compare_cols[c].key);
        if (shown[c]) rc |= table_column(t, compare_cols[c].title, TABLE_RIGHT);
    }
    if (rc) goto fail;
    for (int a = 0; a < n; a++) {
        if (done[a]) continue;
        int members = 0;
        for (int b = a; b < n; b++)
            if (!done[b] && strcmp(variant[a], variant[b]) == 0) {
                done[b] = a + 1; /* group of a */
                members++;
            }
        if (members > 1) groups++;
        if (table_row(t)) goto fail;
        char cell[256];
        cJSON_ArrayForEach(k, swept) {
            if (!cJSON_IsString(k)) continue;
            fmt_json_cell(swept_value(rows[a], k->valuestring), cell, sizeof cell);
            table_cell(t, cell);
        }
        table_cellf(t, "%d", members);
        for (int c = 0; c < NCOMPARE; c++) {
            if (!shown[c]) continue;
            int m = 0;
            for (int b = a; b < n; b++) {
                if (done[b] != a + 1) continue;
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rows[b], "results"),
                                                                  compare_cols[c].key);
                if (cJSON_IsNumber(v)) x[m++] = v->valuedouble;
            }
            mean_sd_cell(x, m, compare_cols[c].kind, cell, sizeof cell);
            table_cell(t, cell);
        }
    }
    if (groups == 0) table_destroy(&t); /* every variant ran once: nothing to average */
    goto done;
fail:
    table_destroy(&t);
done:
    for (int a = 0; variant && a < n; a++) free(variant[a]);
    free(variant);
    free(rows);
    free(x);
    free(done);
    return t;
}

const char *view_fid_net(const cJSON *jobs, int *several) {
    const char *net = NULL;
    *several = 0;
    const cJSON *job;
    cJSON_ArrayForEach(job, jobs) {
        const char *s = json_get_string(cJSON_GetObjectItemCaseSensitive(job, "results"), "fid_net", NULL);
        if (!s) continue;
        if (net && strcmp(net, s) != 0) *several = 1;
        if (!net) net = s;
    }
    return net;
}

/* ---- export ---------------------------------------------------------------------------------------- */

typedef enum { FROM_ROW, FROM_SWEPT, FROM_RESULT } col_from;

typedef struct {
    const char *name; /* borrowed from the answer or static */
    col_from from;
} export_col;

/* The export's columns. Any sweep: id, state, seed; a sweep without umd jobs then attempts, the swept
 * keys and every result key (sorted); a umd sweep the swept keys, the comparison results (all of
 * them, empty where missing), attempts, then every other result key (sorted). Caller frees *cols.
 * Returns how many, or -1 on out of memory. */
static int export_columns(const cJSON *answer, export_col **cols) {
    const cJSON *sweep = cJSON_GetObjectItemCaseSensitive(answer, "sweep");
    const cJSON *swept = cJSON_GetObjectItemCaseSensitive(sweep, "swept");
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(answer, "jobs");
    const char **rkeys = NULL;
    int nr = view_result_keys(jobs, &rkeys);
    if (nr < 0) return -1;
    int umd = view_is_umd_sweep(jobs);
    int cap = 5 + cJSON_GetArraySize(swept) + NCOMPARE + nr;
    export_col *c = malloc((size_t)cap * sizeof *c);
    if (!c) {
        free(rkeys);
        return -1;
    }
    int n = 0;
    c[n++] = (export_col){"id", FROM_ROW};
    c[n++] = (export_col){"state", FROM_ROW};
    c[n++] = (export_col){"seed", FROM_ROW};
    if (!umd) c[n++] = (export_col){"attempts", FROM_ROW};
    const cJSON *k;
    cJSON_ArrayForEach(k, swept)
        if (cJSON_IsString(k)) c[n++] = (export_col){k->valuestring, FROM_SWEPT};
    for (int i = 0; umd && i < NCOMPARE; i++) c[n++] = (export_col){compare_cols[i].key, FROM_RESULT};
    if (umd) c[n++] = (export_col){"run_seconds", FROM_ROW};
    if (umd) c[n++] = (export_col){"attempts", FROM_ROW};
    for (int i = 0; i < nr; i++)
        if (!umd || compare_index(rkeys[i]) < 0) c[n++] = (export_col){rkeys[i], FROM_RESULT};
    free(rkeys);
    *cols = c;
    return n;
}

static const cJSON *export_value(const cJSON *job, const export_col *c) {
    switch (c->from) {
    case FROM_ROW: return cJSON_GetObjectItemCaseSensitive(job, c->name);
    case FROM_SWEPT: return swept_value(job, c->name);
    default: return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(job, "results"), c->name);
    }
}

int view_export_csv(const cJSON *answer, strbuf *b) {
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(answer, "jobs");
    export_col *cols = NULL;
    int nc = export_columns(answer, &cols);
    if (nc < 0) return UMDQ_ENOMEM;
    for (int i = 0; i < nc; i++) {
        if (i) strbuf_append(b, ",", 1);
        csv_append_field(b, cols[i].name);
    }
    strbuf_append(b, "\r\n", 2);
    int rc = 0;
    const cJSON *job;
    cJSON_ArrayForEach(job, jobs) {
        for (int i = 0; i < nc; i++) {
            if (i) strbuf_append(b, ",", 1);
            char *s = fmt_json_export(export_value(job, &cols[i]));
            if (!s) rc = UMDQ_ENOMEM;
            csv_append_field(b, s);
            free(s);
        }
        strbuf_append(b, "\r\n", 2);
    }
    free(cols);
    if (b->oom) rc = UMDQ_ENOMEM;
    return rc;
}

/* Add a copy of v (or null) to obj under key. 0 or UMDQ_ENOMEM. */
static int add_copy(cJSON *obj, const char *key, const cJSON *v) {
    cJSON *c = v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull();
    if (!c) return UMDQ_ENOMEM;
    if (!cJSON_AddItemToObject(obj, key, c)) {
        cJSON_Delete(c);
        return UMDQ_ENOMEM;
    }
    return 0;
}

cJSON *view_export_json(const cJSON *answer) {
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(answer, "jobs");
    export_col *cols = NULL;
    int nc = export_columns(answer, &cols);
    cJSON *rows = cJSON_CreateArray();
    if (!rows || nc < 0) goto fail;
    const cJSON *job;
    cJSON_ArrayForEach(job, jobs) {
        cJSON *row = cJSON_CreateObject();
        if (!row || !cJSON_AddItemToArray(rows, row)) {
            cJSON_Delete(row);
            goto fail;
        }
        int rc = 0;
        for (int i = 0; i < nc; i++)
            if (!cJSON_GetObjectItemCaseSensitive(row, cols[i].name))
                rc |= add_copy(row, cols[i].name, export_value(job, &cols[i]));
        if (rc) goto fail;
    }
    free(cols);
    return rows;
fail:
    free(cols);
    cJSON_Delete(rows);
    return NULL;
}
