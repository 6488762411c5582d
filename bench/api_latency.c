/* api_latency.c: what the dashboard waits for. A database of --jobs jobs (default 10,000) in one
 * sweep, each with one finished attempt, six results and a loss curve, --points metric points in
 * all (default 1,000,000; one job holds a tenth of them), served by the real HTTP server of umdqd
 * (http_start on a loopback port, read-only connections as in the daemon). Timed over HTTP with a
 * kept-alive connection:
 *   - GET /api/sweeps/1/table, the sweep table the dashboard draws (every job row with params
 *     and results), against the floor: a plain SELECT of the same job rows and results on a
 *     connection of its own, stepping every column (no JSON); GET /api/sweeps/1 (the same rows
 *     as objects) is timed a few times for reference;
 *   - GET /api/jobs/J/metrics?key=loss for the job with the longest curve (downsampled to at most
 *     2,000 points), against a plain SELECT of that curve's rows.
 * Prints p50 and p99 of each and their ratios to the floor, whether the sweep table meets its target
 * (p99 under 50 ms) and the curve its cap. The table is timed for the finished sweep and again with
 * a tenth of its jobs made RUNNING (their results are read on every call). Exit 1 when an answer is
 * wrong (rows missing, a curve over the cap) or a call fails; a slow machine fails nothing.
 *
 *   api_latency [--jobs N] [--points N] [--reps N]
 *
 * Works in a temporary directory it removes (KEEP_TMP=1 keeps it).
 * umdq-uses: daemon common */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <ftw.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "http.h"
#include "latency.h"
#include "mutq.h"
#include "sha256.h"
#include "store.h"
#include "util.h"

#define TARGET_P99_MS 50.0
#define CURVE_CAP 2000

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile(double *v, int n, double q) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)ceil(q * n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int exec_sql(sqlite3 *db, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "api_latency: %s: %s\n", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* One sweep of njobs jobs (a 4-key grid over a UMD-like config), attempts, results and npoints
 * metric points, written straight into the schema that store_open made. */
static int fill(const char *db_path, int njobs, int64_t npoints) {
    sqlite3 *db = NULL;
    sqlite3_stmt *job = NULL, *att = NULL, *res = NULL, *met = NULL;
    int rc = -1;
    if (sqlite3_open(db_path, &db) != SQLITE_OK) goto done;
    if (exec_sql(db, "PRAGMA synchronous=OFF; BEGIN") != 0) goto done;
    if (exec_sql(db, "INSERT INTO sweeps (id, name, spec, created, swept) VALUES (1, 'bench', "
                     "'{\"name\":\"bench\",\"base\":{\"kind\":\"umd\"}}', 1.7e9, "
                     "'[\"umd.mask_ratio\",\"umd.r_t0\",\"optim.lr\",\"model.width\"]')") != 0)
        goto done;
    if (sqlite3_prepare_v2(db, "INSERT INTO jobs (id, sweep_id, idx, kind, config, config_hash, seed, state, "
                               "attempts, created, queued, started, finished, step) VALUES (?1, 1, ?1, 'umd', ?2, "
                               "?3, ?4, 'SUCCEEDED', 1, 1.7e9, 1.7e9, ?5, ?6, ?7)", -1, &job, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO attempts (job_id, n, worker_id, lease_token, state, started, heartbeat, "
                               "ended, exit_code, step) VALUES (?1, 1, ?2, ?3, 'SUCCEEDED', ?4, ?5, ?5, 0, ?6)", -1,
                           &att, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO results (job_id, attempt, key, value, text) VALUES (?1, 1, ?2, ?3, ?4)",
                           -1, &res, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO metrics (job_id, attempt, key, step, value) VALUES (?1, 1, 'loss', ?2, ?3)",
                           -1, &met, NULL) != SQLITE_OK) {
        fprintf(stderr, "api_latency: %s\n", sqlite3_errmsg(db));
        goto done;
    }
    /* a tenth of the points on job 1, the rest spread over the others */
    int64_t big = npoints / 10, rest = npoints - big;
    int64_t each = njobs > 1 ? rest / (njobs - 1) : 0, extra = njobs > 1 ? rest % (njobs - 1) : rest;
    static const char *const keys[] = {"probe_ridge_top1", "probe_knn_top1", "fid", "img_per_s", "final_loss"};
    for (int i = 1; i <= njobs; i++) {
        double mask = 0.1 * (i % 9 + 1), r_t0 = 0.05 * (i / 9 % 10), lr = 1e-4 * (1 + i / 90 % 10);
        int width = 64 << (i / 900 % 3);
        char config[1024], hash[65], lease[32];
        snprintf(config, sizeof config,
                 "{\"data\":{\"dataset\":\"fashion-mnist\",\"path\":\"/usr/share/fashion-mnist\"},\"kind\":\"umd\","
                 "\"model\":{\"depth\":6,\"heads\":4,\"patch\":4,\"width\":%d},\"optim\":{\"beta1\":0.9,"
                 "\"beta2\":0.95,\"lr\":%g,\"warmup\":500,\"weight_decay\":0.05},\"train\":{\"batch\":128,"
                 "\"eval_every\":1000,\"steps\":20000},\"umd\":{\"mask_ratio\":%g,\"r_t0\":%g,\"schedule\":\"cosine\","
                 "\"t_sampling\":\"uniform\"}}", width, lr, mask, r_t0);
        sha256_hex(config, strlen(config), hash);
        snprintf(lease, sizeof lease, "lease-%d", i);
        double t0 = 1.7e9 + i;
        sqlite3_bind_int(job, 1, i);
        sqlite3_bind_text(job, 2, config, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(job, 3, hash, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(job, 4, i); /* the seed: grid points repeat with new seeds */
        sqlite3_bind_double(job, 5, t0);
        sqlite3_bind_double(job, 6, t0 + 600);
        sqlite3_bind_int(job, 7, 20000);
        if (sqlite3_step(job) != SQLITE_DONE) goto step_fail;
        sqlite3_reset(job);
        char worker[32];
        snprintf(worker, sizeof worker, "gpu-host/cuda%d", i % 8);
        sqlite3_bind_int(att, 1, i);
        sqlite3_bind_text(att, 2, worker, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(att, 3, lease, -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(att, 4, t0);
        sqlite3_bind_double(att, 5, t0 + 600);
        sqlite3_bind_int(att, 6, 20000);
        if (sqlite3_step(att) != SQLITE_DONE) goto step_fail;
        sqlite3_reset(att);
        for (int k = 0; k < 6; k++) {
            sqlite3_bind_int(res, 1, i);
            sqlite3_bind_text(res, 2, k < 5 ? keys[k] : "sample_grid", -1, SQLITE_STATIC);
            if (k < 5) {
                sqlite3_bind_double(res, 3, 0.5 + 0.4 * sin(i * 0.37 + k));
                sqlite3_bind_null(res, 4);
            } else {
                sqlite3_bind_null(res, 3);
                sqlite3_bind_text(res, 4, "samples.png", -1, SQLITE_STATIC);
            }
            if (sqlite3_step(res) != SQLITE_DONE) goto step_fail;
            sqlite3_reset(res);
        }
        int64_t n = i == 1 ? big : each + (i == 2 ? extra : 0);
        for (int64_t s = 1; s <= n; s++) {
            sqlite3_bind_int(met, 1, i);
            sqlite3_bind_int64(met, 2, s * 10);
            sqlite3_bind_double(met, 3, 2.3 * exp(-(double)s / (double)(n + 1) * 3) + 0.01 * sin((double)s));
            if (sqlite3_step(met) != SQLITE_DONE) goto step_fail;
            sqlite3_reset(met);
        }
    }
    if (exec_sql(db, "COMMIT") != 0) goto done;
    rc = 0;
    goto done;
step_fail:
    fprintf(stderr, "api_latency: insert: %s\n", sqlite3_errmsg(db));
done:
    sqlite3_finalize(job);
    sqlite3_finalize(att);
    sqlite3_finalize(res);
    sqlite3_finalize(met);
    sqlite3_close(db);
    return rc;
}

typedef struct {
    char *data;
    size_t len;
} body;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    body *b = ud;
    char *grown = realloc(b->data, b->len + size * n + 1);
    if (!grown) return 0;
    memcpy(grown + b->len, p, size * n);
    b->data = grown;
    b->len += size * n;
    b->data[b->len] = 0;
    return size * n;
}

/* GET url reps times; ms[i] the wall time of each; *last the last body (caller frees). */
static int time_get(CURL *curl, const char *url, const char *auth, int reps, double *ms, body *last) {
    struct curl_slist *hdr = curl_slist_append(NULL, auth);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    int rc = 0;
    for (int i = 0; i < reps && rc == 0; i++) {
        body b = {NULL, 0};
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
        double t0 = mono_s();
        CURLcode cc = curl_easy_perform(curl);
        ms[i] = (mono_s() - t0) * 1e3;
        long status = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (cc != CURLE_OK || status != 200) {
            fprintf(stderr, "api_latency: GET %s: %s, HTTP %ld\n", url, curl_easy_strerror(cc), status);
            rc = -1;
        }
        if (i == reps - 1 || rc) {
            free(last->data);
            *last = b;
        } else {
            free(b.data);
        }
    }
    curl_slist_free_all(hdr);
    return rc;
}

/* The floor: step every row of sql (job rows, then results) and read each column. */
static int time_select(sqlite3 *db, const char *const *sqls, int nsql, int64_t bind, int reps, double *ms,
                       int64_t *rows) {
    for (int r = 0; r < reps; r++) {
        double t0 = mono_s();
        volatile size_t bytes = 0;
        *rows = 0;
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        for (int q = 0; q < nsql; q++) {
            sqlite3_stmt *st = NULL;
            if (sqlite3_prepare_v2(db, sqls[q], -1, &st, NULL) != SQLITE_OK) {
                fprintf(stderr, "api_latency: %s\n", sqlite3_errmsg(db));
                return -1;
            }
            sqlite3_bind_int64(st, 1, bind);
            while (sqlite3_step(st) == SQLITE_ROW) {
                int nc = sqlite3_column_count(st);
                for (int c = 0; c < nc; c++) {
                    if (sqlite3_column_type(st, c) == SQLITE_TEXT) bytes += (size_t)sqlite3_column_bytes(st, c);
                    else bytes += (size_t)sqlite3_column_int64(st, c);
                }
                (*rows)++;
            }
            sqlite3_finalize(st);
        }
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        ms[r] = (mono_s() - t0) * 1e3;
    }
    return 0;
}

int main(int argc, char **argv) {
    int njobs = 10000, reps = 200;
    int64_t npoints = 1000000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc) njobs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--points") == 0 && i + 1 < argc) npoints = atoll(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: api_latency [--jobs N] [--points N] [--reps N]\n");
            return 2;
        }
    }
    if (njobs < 1 || reps < 1 || npoints < 0) {
        fprintf(stderr, "api_latency: --jobs and --reps must be at least 1, --points at least 0\n");
        return 2;
    }
    char tmp[] = "/tmp/umdq-api-latency.XXXXXX", db_path[256], logs[256], err[1024];
    if (!mkdtemp(tmp)) {
        perror("api_latency: mkdtemp");
        return 1;
    }
    snprintf(db_path, sizeof db_path, "%s/umdq.db", tmp);
    snprintf(logs, sizeof logs, "%s/logs", tmp);
    mkdir_p(logs, 0755);
    int rc = 1;
    store *st = NULL;
    mutq *q = NULL;
    latency *lat = NULL;
    http_server *http = NULL;
    sqlite3 *db = NULL;
    CURL *curl = NULL;
    body last = {NULL, 0};
    double *ms = calloc((size_t)reps, sizeof *ms), *floor_ms = calloc((size_t)reps, sizeof *floor_ms);
    if (!ms || !floor_ms) goto done;

    /* the schema through the daemon's own migrations, then the rows */
    if (store_open(db_path, logs, &st, err, sizeof err) != 0) {
        fprintf(stderr, "api_latency: %s\n", err);
        goto done;
    }
    store_destroy(&st);
    double t0 = mono_s();
    if (fill(db_path, njobs, npoints) != 0) goto done;
    printf("api_latency: %d jobs, %lld metric points written in %.1f s (%s)\n", njobs, (long long)npoints,
           mono_s() - t0, db_path);

    /* the daemon's HTTP server on a free port */
    int fd = -1, port = 0;
    char host[64];
    if (http_listen("127.0.0.1:0", &fd, host, sizeof host, &port, err, sizeof err) != 0 ||
        mutq_new(&q, err, sizeof err) != 0 || !(lat = latency_new())) {
        fprintf(stderr, "api_latency: %s\n", err);
        goto done;
    }
    char url[128], token[65];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    if (random_hex(token, 64) != 0) goto done;
    http_options ho = {db_path, tmp, token, host, port, url, "", "", q, lat};
    if (http_start(fd, &ho, &http, err, sizeof err) != 0) {
        fprintf(stderr, "api_latency: %s\n", err);
        goto done;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    curl = curl_easy_init();
    if (!curl) goto done;
    char auth[128], target[256];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) goto done;
    int ok = 1;

    /* 0. the full JSON of the sweep (GET /api/sweeps/1), for reference: a few calls */
    snprintf(target, sizeof target, "%s/api/sweeps/1", url);
    int few = reps < 10 ? reps : 10;
    if (time_get(curl, target, auth, few, ms, &last) != 0) goto done;
    printf("for reference, GET /api/sweeps/1 (every job row as an object, %.1f MB): p50 %.1f ms over %d calls\n",
           last.len / 1e6, quantile(ms, few, 0.5), few);

    /* 1. the sweep table: the first call (every config parsed), then the calls after it */
    snprintf(target, sizeof target, "%s/api/sweeps/1/table", url);
    if (time_get(curl, target, auth, 1, ms, &last) != 0) goto done;
    double first_ms = ms[0];
    if (time_get(curl, target, auth, reps, ms, &last) != 0) goto done;
    cJSON *doc = cJSON_Parse(last.data);
    int rows = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "rows"));
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "rows"), 0);
    int nres = cJSON_GetArraySize(cJSON_GetArrayItem(first, 8));
    int nparams = cJSON_GetArraySize(cJSON_GetArrayItem(first, 7));
    cJSON_Delete(doc);
    size_t table_bytes = last.len;
    static const char *const table_sql[] = {
        "SELECT j.id, j.idx, j.state, j.attempts, j.step, j.seed, a.worker_id, a.ended FROM jobs j "
        "LEFT JOIN attempts a ON a.job_id = j.id AND a.n = j.attempts WHERE j.sweep_id = ?1 ORDER BY j.idx, j.id",
        "SELECT r.job_id, r.attempt, r.key, r.value, r.text FROM jobs j JOIN results r ON r.job_id = j.id "
        "WHERE j.sweep_id = ?1",
    };
    int64_t floor_rows = 0;
    if (time_select(db, table_sql, 2, 1, 3, floor_ms, &floor_rows) != 0 ||
        time_select(db, table_sql, 2, 1, reps, floor_ms, &floor_rows) != 0)
        goto done;
    double p50 = quantile(ms, reps, 0.5), p99 = quantile(ms, reps, 0.99);
    double f50 = quantile(floor_ms, reps, 0.5), f99 = quantile(floor_ms, reps, 0.99);
    printf("sweep table  GET /api/sweeps/1/table: %d rows (%d params, %d results each), %.1f MB JSON\n", rows, nparams,
           nres, table_bytes / 1e6);
    printf("  first call (parses every config)   %7.2f ms\n", first_ms);
    printf("  API     p50 %7.2f ms  p99 %7.2f ms  (%d requests of the finished sweep)\n", p50, p99, reps);
    printf("  SELECT  p50 %7.2f ms  p99 %7.2f ms  (%lld rows: jobs + results, every column read)\n", f50, f99,
           (long long)floor_rows);
    printf("  ratio API/SELECT: p50 %.2fx, p99 %.2fx; target p99 < %.0f ms: %s\n", p50 / f50, p99 / f99,
           TARGET_P99_MS, p99 < TARGET_P99_MS ? "met" : "missed on this machine");
    if (rows != njobs) ok = 0;

    /* 1b. the same sweep with a tenth of its jobs running (their results read on every call) */
    sqlite3 *wdb = NULL;
    int nrun = njobs / 10;
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE jobs SET state = 'RUNNING', finished = NULL WHERE id %% 10 = 3 AND id <= %d; "
                              "UPDATE attempts SET state = 'RUNNING', ended = NULL WHERE job_id %% 10 = 3", njobs);
    if (sqlite3_open(db_path, &wdb) != SQLITE_OK || exec_sql(wdb, sql) != 0) {
        sqlite3_close(wdb);
        goto done;
    }
    sqlite3_close(wdb);
    if (time_get(curl, target, auth, reps, ms, &last) != 0) goto done;
    if (time_select(db, table_sql, 2, 1, reps, floor_ms, &floor_rows) != 0) goto done;
    p50 = quantile(ms, reps, 0.5);
    p99 = quantile(ms, reps, 0.99);
    f50 = quantile(floor_ms, reps, 0.5);
    f99 = quantile(floor_ms, reps, 0.99);
    doc = cJSON_Parse(last.data);
    if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "rows")) != njobs) ok = 0;
    cJSON_Delete(doc);
    printf("  with %d of the jobs RUNNING:\n", nrun);
    printf("  API     p50 %7.2f ms  p99 %7.2f ms\n", p50, p99);
    printf("  SELECT  p50 %7.2f ms  p99 %7.2f ms\n", f50, f99);
    printf("  ratio API/SELECT: p50 %.2fx, p99 %.2fx; target p99 < %.0f ms: %s\n", p50 / f50, p99 / f99,
           TARGET_P99_MS, p99 < TARGET_P99_MS ? "met" : "missed on this machine");

    /* 2. the longest curve */
    snprintf(target, sizeof target, "%s/api/jobs/1/metrics?key=loss", url);
    if (time_get(curl, target, auth, 3, ms, &last) != 0) goto done;
    if (time_get(curl, target, auth, reps, ms, &last) != 0) goto done;
    doc = cJSON_Parse(last.data);
    const cJSON *series = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "series"), 0);
    int npts = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(series, "points"));
    cJSON_Delete(doc);
    static const char *const curve_sql[] = {
        "SELECT step, value FROM metrics WHERE job_id = ?1 AND key = 'loss' ORDER BY step"};
    if (time_select(db, curve_sql, 1, 1, reps, floor_ms, &floor_rows) != 0) goto done;
    p50 = quantile(ms, reps, 0.5);
    p99 = quantile(ms, reps, 0.99);
    f50 = quantile(floor_ms, reps, 0.5);
    f99 = quantile(floor_ms, reps, 0.99);
    printf("curve  GET /api/jobs/1/metrics?key=loss: %lld points stored, %d returned (cap %d: %s)\n",
           (long long)floor_rows, npts, CURVE_CAP, npts <= CURVE_CAP && npts > 0 ? "met" : "MISSED");
    printf("  API     p50 %7.2f ms  p99 %7.2f ms\n", p50, p99);
    printf("  SELECT  p50 %7.2f ms  p99 %7.2f ms  (the curve's rows)\n", f50, f99);
    printf("  ratio API/SELECT: p50 %.2fx, p99 %.2fx\n", p50 / f50, p99 / f99);
    if (npts > CURVE_CAP || npts == 0) ok = 0;
    rc = ok ? 0 : 1; /* a slow machine fails nothing: only wrong answers do */
done:
    if (curl) curl_easy_cleanup(curl);
    free(last.data);
    sqlite3_close(db);
    if (q) mutq_close(q);
    http_stop(&http);
    mutq_destroy(&q);
    latency_destroy(&lat);
    free(ms);
    free(floor_ms);
    if (getenv("KEEP_TMP") && strcmp(getenv("KEEP_TMP"), "1") == 0) printf("kept %s\n", tmp);
    else nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
