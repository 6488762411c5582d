/* cli_view.c: the daemon's sweep and job answers turned into tables, counts and export rows. */
#include "cli_view.h"

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

cli_table *view_jobs_table(const cJSON *answer) {
    const cJSON *sweep = cJSON_GetObjectItemCaseSensitive(answer, "sweep");
    const cJSON *swept = cJSON_GetObjectItemCaseSensitive(sweep, "swept");
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(answer, "jobs");
    const char **rkeys = NULL;
    int nr = view_result_keys(jobs, &rkeys);
    int with_seed = seeds_differ(jobs);
    cli_table *t = table_new();
    if (!t || nr < 0) goto fail;
    int rc = table_column(t, "ID", TABLE_RIGHT) | table_column(t, "STATE", TABLE_LEFT) |
             table_column(t, "ATTEMPTS", TABLE_RIGHT);
    if (with_seed) rc |= table_column(t, "SEED", TABLE_RIGHT);
    const cJSON *k;
    cJSON_ArrayForEach(k, swept)
        if (cJSON_IsString(k)) rc |= table_column(t, k->valuestring, TABLE_RIGHT);
    for (int i = 0; i < nr; i++) rc |= table_column(t, rkeys[i], TABLE_RIGHT);
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
    }
    free(rkeys);
    return t;
fail:
    free(rkeys);
    table_destroy(&t);
    return NULL;
}

/* The export's fixed leading columns. */
static const char *const export_fixed[] = {"id", "state", "seed", "attempts"};
#define NFIXED 4

int view_export_csv(const cJSON *answer, strbuf *b) {
    const cJSON *sweep = cJSON_GetObjectItemCaseSensitive(answer, "sweep");
    const cJSON *swept = cJSON_GetObjectItemCaseSensitive(sweep, "swept");
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(answer, "jobs");
    const char **rkeys = NULL;
    int nr = view_result_keys(jobs, &rkeys);
    if (nr < 0) return UMDQ_ENOMEM;
    const cJSON *k;
    int col = 0;
    for (int i = 0; i < NFIXED; i++, col++) {
        if (col) strbuf_append(b, ",", 1);
        csv_append_field(b, export_fixed[i]);
    }
    cJSON_ArrayForEach(k, swept) {
        if (!cJSON_IsString(k)) continue;
        strbuf_append(b, ",", 1);
        csv_append_field(b, k->valuestring);
    }
    for (int i = 0; i < nr; i++) {
        strbuf_append(b, ",", 1);
        csv_append_field(b, rkeys[i]);
    }
    strbuf_append(b, "\r\n", 2);

    int rc = 0;
    const cJSON *job;
    cJSON_ArrayForEach(job, jobs) {
        const cJSON *results = cJSON_GetObjectItemCaseSensitive(job, "results");
        for (int i = 0; i < NFIXED; i++) {
            if (i) strbuf_append(b, ",", 1);
            char *s = fmt_json_export(cJSON_GetObjectItemCaseSensitive(job, export_fixed[i]));
            if (!s) rc = UMDQ_ENOMEM;
            csv_append_field(b, s);
            free(s);
        }
        cJSON_ArrayForEach(k, swept) {
            if (!cJSON_IsString(k)) continue;
            strbuf_append(b, ",", 1);
            char *s = fmt_json_export(swept_value(job, k->valuestring));
            if (!s) rc = UMDQ_ENOMEM;
            csv_append_field(b, s);
            free(s);
        }
        for (int i = 0; i < nr; i++) {
            strbuf_append(b, ",", 1);
            char *s = fmt_json_export(cJSON_GetObjectItemCaseSensitive(results, rkeys[i]));
            if (!s) rc = UMDQ_ENOMEM;
            csv_append_field(b, s);
            free(s);
        }
        strbuf_append(b, "\r\n", 2);
    }
    free(rkeys);
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
    const cJSON *sweep = cJSON_GetObjectItemCaseSensitive(answer, "sweep");
    const cJSON *swept = cJSON_GetObjectItemCaseSensitive(sweep, "swept");
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(answer, "jobs");
    const char **rkeys = NULL;
    int nr = view_result_keys(jobs, &rkeys);
    cJSON *rows = cJSON_CreateArray();
    if (!rows || nr < 0) goto fail;
    const cJSON *job;
    cJSON_ArrayForEach(job, jobs) {
        cJSON *row = cJSON_CreateObject();
        if (!row || !cJSON_AddItemToArray(rows, row)) {
            cJSON_Delete(row);
            goto fail;
        }
        int rc = 0;
        for (int i = 0; i < NFIXED; i++)
            rc |= add_copy(row, export_fixed[i],
                           cJSON_GetObjectItemCaseSensitive(job, export_fixed[i]));
        const cJSON *k;
        cJSON_ArrayForEach(k, swept)
            if (cJSON_IsString(k) && !cJSON_GetObjectItemCaseSensitive(row, k->valuestring))
                rc |= add_copy(row, k->valuestring, swept_value(job, k->valuestring));
        const cJSON *results = cJSON_GetObjectItemCaseSensitive(job, "results");
        for (int i = 0; i < nr; i++)
            if (!cJSON_GetObjectItemCaseSensitive(row, rkeys[i]))
                rc |= add_copy(row, rkeys[i], cJSON_GetObjectItemCaseSensitive(results, rkeys[i]));
        if (rc) goto fail;
    }
    free(rkeys);
    return rows;
fail:
    free(rkeys);
    cJSON_Delete(rows);
    return NULL;
}
