/* test_daemon_store.c: the daemon's SQLite store on real database files: migrations, submit dedupe,
 * the job state machine, leases, results, metrics, logs and batches.
 * umdq-uses: daemon common */
#include <errno.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sha256.h"
#include "store.h"
#include "t.h"
#include "umdq.h"
#include "util.h"

static char tmpdir[256];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void tmp_clean(void) {
    if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh store in its own directory under tmpdir. */
static store *fresh_store(const char *tag) {
    char dir[512], db[600], logs[600], err[512];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, tag);
    snprintf(db, sizeof db, "%s/umdq.db", dir);
    snprintf(logs, sizeof logs, "%s/logs", dir);
    mkdir_p(logs, 0755);
    store *st = NULL;
    int rc = store_open(db, logs, &st, err, sizeof err);
    T_CHECK_MSG(rc == 0, "store_open: %s", err);
    return st;
}

/* A sweep of n command jobs params.x = first..first+n-1 (seed 0), owned by the caller. */
static sweep *make_sweep(const char *name, int first, int n, int priority, int max_attempts, int on_failure) {
    sweep *sw = calloc(1, sizeof *sw);
    sw->name = strdup(name);
    char spec[256];
    snprintf(spec, sizeof spec, "{\"name\":\"%s\",\"n\":%d}", name, n);
    sw->spec = strdup(spec);
    sw->priority = priority;
    sw->max_attempts = max_attempts;
    sw->retry_on_failure = on_failure;
    sw->njobs = n;
    sw->jobs = calloc((size_t)n, sizeof *sw->jobs);
    for (int i = 0; i < n; i++) {
        char cfg[256];
        snprintf(cfg, sizeof cfg, "{\"command\":\"echo {params.x}\",\"kind\":\"command\",\"params\":{\"x\":%d}}", first + i);
        sw->jobs[i].idx = i;
        sw->jobs[i].config = strdup(cfg);
        sha256_hex(cfg, strlen(cfg), sw->jobs[i].hash);
        sw->jobs[i].seed = 0;
        sw->jobs[i].kind = "command";
    }
    sw->nswept = 1;
    sw->swept = calloc(1, sizeof *sw->swept);
    sw->swept[0] = strdup("params.x");
    return sw;
}

/* Replace job i's config with a umd config naming a device. */
static void set_umd(sweep *sw, int i, const char *device) {
    char cfg[256];
    snprintf(cfg, sizeof cfg, "{\"kind\":\"umd\",\"name\":\"j%d\",\"train\":{\"device\":\"%s\"}}", i, device);
    free(sw->jobs[i].config);
    sw->jobs[i].config = strdup(cfg);
    sha256_hex(cfg, strlen(cfg), sw->jobs[i].hash);
    sw->jobs[i].kind = "umd";
}

static void free_sweep(sweep *sw) {
    if (!sw) return;
    for (int i = 0; i < sw->njobs; i++) free(sw->jobs[i].config);
    for (int i = 0; i < sw->nswept; i++) free(sw->swept[i]);
    free(sw->swept);
    free(sw->jobs);
    free(sw->name);
    free(sw->spec);
    free(sw);
}

/* One integer from a query on the store's own connection (-1 on error). */
static long long q_int(store *st, const char *sql) {
    sqlite3_stmt *s = NULL;
    long long v = -1;
    if (sqlite3_prepare_v2(store_db(st), sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* One text from a query, copied into buf. */
static const char *q_text(store *st, const char *sql, char *buf, size_t n) {
    sqlite3_stmt *s = NULL;
    snprintf(buf, n, "(none)");
    if (sqlite3_prepare_v2(store_db(st), sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW &&
        sqlite3_column_text(s, 0))
        snprintf(buf, n, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return buf;
}

static const char *job_state(store *st, int64_t job, char *buf, size_t n) {
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT state FROM jobs WHERE id = %lld", (long long)job);
    return q_text(st, sql, buf, n);
}

static const store_worker_fit cmd_worker = {"host/w0", "cpu", STORE_KIND_COMMAND};

/* Submit a sweep of n command jobs and claim the first for cmd_worker. */
static store *setup_claimed(const char *tag, int max_attempts, int on_failure, store_dispatch *d) {
    char err[512];
    store *st = fresh_store(tag);
    if (!st) return NULL;
    sweep *sw = make_sweep(tag, 0, 1, 0, max_attempts, on_failure);
    store_submit_result res;
    int rc = store_submit(st, sw, &res, err, sizeof err);
    free_sweep(sw);
    T_CHECK_MSG(rc == 0, "submit: %s", err);
    rc = store_claim(st, &cmd_worker, d, err, sizeof err);
    T_CHECK_MSG(rc == 0, "claim: %s", err);
    return st;
}

/* ---- tests ------------------------------------------------------------------------------------------ */

static void test_daemon_store_migrations(void) {
    char err[512], db[600];
    store *st = fresh_store("mig");
    T_REQUIRE(st);
    T_CHECK(store_known_version() >= 1);
    T_EQ_INT(store_user_version(st), store_known_version());
    T_EQ_INT(store_migrations_applied(st), store_known_version());
    T_EQ_INT(q_int(st, "SELECT count(*) FROM sqlite_master WHERE name IN ('sweeps','jobs','attempts','metrics',"
                       "'results','workers','events')"), 7);
    char mode[32];
    T_EQ_STR(q_text(st, "PRAGMA journal_mode", mode, sizeof mode), "wal");
    store_destroy(&st);
    T_CHECK(st == NULL);

    snprintf(db, sizeof db, "%s/mig/umdq.db", tmpdir);
    T_REQUIRE(store_open(db, NULL, &st, err, sizeof err) == 0);
    T_EQ_INT(store_migrations_applied(st), 0);
    T_EQ_INT(store_user_version(st), store_known_version());
    /* a database from a newer umdq */
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", store_known_version() + 1);
    T_REQUIRE(sqlite3_exec(store_db(st), sql, NULL, NULL, NULL) == SQLITE_OK);
    store_destroy(&st);
    err[0] = 0;
    T_EQ_INT(store_open(db, NULL, &st, err, sizeof err), UMDQ_EFORMAT);
    T_CHECK(st == NULL);
    T_CONTAINS(err, "newer");
    store_destroy(&st); /* NULL is fine */
}

static void test_daemon_store_submit_dedupe(void) {
    char err[512], buf[256];
    store *st = fresh_store("dedupe");
    T_REQUIRE(st);
    store_submit_result res;
    sweep *sw = make_sweep("dd", 0, 5, 2, 3, 0);
    T_REQUIRE(store_submit(st, sw, &res, err, sizeof err) == 0);
    T_EQ_INT(res.jobs, 5);
    T_EQ_INT(res.added, 5);
    T_EQ_INT(res.existing, 0);
    int64_t sid = res.sweep_id;
    T_CHECK(sid > 0);
    T_REQUIRE(store_submit(st, sw, &res, err, sizeof err) == 0);
    T_EQ_INT(res.sweep_id, sid);
    T_EQ_INT(res.added, 0);
    T_EQ_INT(res.existing, 5);
    int64_t preview_id = 0;
    int existing = -1;
    T_REQUIRE(store_submit_preview(store_db(st), sw, &preview_id, &existing, err, sizeof err) == 0);
    T_EQ_INT(preview_id, sid);
    T_EQ_INT(existing, 5);
    free_sweep(sw);
    /* the same sweep grown by two points: only those are added, and the spec is the latest */
    sw = make_sweep("dd", 0, 7, 2, 3, 0);
    T_REQUIRE(store_submit(st, sw, &res, err, sizeof err) == 0);
    T_EQ_INT(res.added, 2);
    T_EQ_INT(res.existing, 5);
    free_sweep(sw);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM jobs"), 7);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM sweeps"), 1);
    T_EQ_STR(q_text(st, "SELECT spec FROM sweeps", buf, sizeof buf), "{\"name\":\"dd\",\"n\":7}");
    T_EQ_INT(q_int(st, "SELECT count(*) FROM jobs WHERE state = 'QUEUED' AND priority = 2"), 7);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM events WHERE kind = 'submitted'"), 7);
    /* another sweep with the same configs is its own set of jobs */
    sw = make_sweep("other", 0, 3, 0, 3, 0);
    T_REQUIRE(store_submit(st, sw, &res, err, sizeof err) == 0);
    T_EQ_INT(res.added, 3);
    free_sweep(sw);
    store_destroy(&st);
}

static void test_daemon_store_claim_finish(void) {
    char err[512], state[16], buf[64];
    store_dispatch d;
    store *st = setup_claimed("claim", 3, 0, &d);
    T_REQUIRE(st);
    T_EQ_INT(d.attempt, 1);
    T_EQ_INT((int)strlen(d.lease), STORE_LEASE_HEX);
    T_EQ_STR(d.kind, "command");
    T_CONTAINS(d.config, "\"params\":{\"x\":0}");
    T_EQ_STR(job_state(st, d.job, buf, sizeof buf), "RUNNING");
    T_EQ_STR(q_text(st, "SELECT worker_id FROM attempts", buf, sizeof buf), "host/w0");
    T_EQ_INT(store_lease_check(st, d.job, 1, d.lease), 0);
    T_EQ_INT(store_lease_check(st, d.job, 1, "00000000000000000000000000000000"), UMDQ_ESTALE);
    T_EQ_INT(store_lease_check(st, d.job, 2, d.lease), UMDQ_ESTALE);
    /* nothing else to claim */
    store_dispatch d2;
    T_EQ_INT(store_claim(st, &cmd_worker, &d2, err, sizeof err), UMDQ_ENOTFOUND);
    T_EQ_INT(store_started(st, d.job, 1, d.lease, 4242, err, sizeof err), 0);
    int advanced = 0;
    char reason[16];
    T_EQ_INT(store_heartbeat(st, d.job, 1, d.lease, 10, &advanced, reason, err, sizeof err), 0);
    T_EQ_INT(advanced, 1);
    T_EQ_STR(reason, "");
    T_EQ_INT(store_heartbeat(st, d.job, 1, d.lease, 10, &advanced, reason, err, sizeof err), 0);
    T_EQ_INT(advanced, 0);
    T_EQ_INT(q_int(st, "SELECT step FROM jobs"), 10);
    /* a stale report changes nothing */
    store_finish_report rep = {"succeeded", 1, 0, 0, 0, NULL, NULL};
    T_EQ_INT(store_finish(st, d.job, 1, "ffffffffffffffffffffffffffffffff", &rep, state, err, sizeof err), UMDQ_ESTALE);
    T_EQ_STR(job_state(st, d.job, buf, sizeof buf), "RUNNING");
    cJSON *results = cJSON_Parse("{\"acc\": 0.5, \"net\": \"cls-v1\"}");
    rep.results = results;
    T_EQ_INT(store_finish(st, d.job, 1, d.lease, &rep, state, err, sizeof err), 0);
    T_EQ_STR(state, "SUCCEEDED");
    T_EQ_STR(job_state(st, d.job, buf, sizeof buf), "SUCCEEDED");
    T_EQ_STR(q_text(st, "SELECT state FROM attempts", buf, sizeof buf), "SUCCEEDED");
    T_EQ_INT(q_int(st, "SELECT exit_code FROM attempts"), 0);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM results"), 2);
    T_EQ_STR(q_text(st, "SELECT text FROM results WHERE key = 'net'", buf, sizeof buf), "cls-v1");
    /* the same finished again (a resend): stale, nothing changes */
    T_EQ_INT(store_finish(st, d.job, 1, d.lease, &rep, state, err, sizeof err), UMDQ_ESTALE);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM attempts"), 1);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM events WHERE kind = 'finished'"), 1);
    T_CHECK(q_int(st, "SELECT count(*) FROM events WHERE kind IN ('dispatched', 'started')") == 2);
    cJSON_Delete(results);
    store_dispatch_clear(&d);
    store_destroy(&st);
}

static void test_daemon_store_lost_until_failed(void) {
    char err[512], state[16], buf[64];
    store_dispatch d;
    store *st = setup_claimed("lost", 3, 0, &d);
    T_REQUIRE(st);
    int64_t job = d.job;
    for (int n = 1; n <= 3; n++) {
        T_EQ_INT(d.attempt, n);
        T_EQ_INT(store_lost(st, job, n, "worker gone", state, err, sizeof err), 0);
        T_EQ_STR(state, n < 3 ? "QUEUED" : "FAILED");
        /* the lost attempt's late report is stale */
        T_EQ_INT(store_lease_check(st, job, n, d.lease), UMDQ_ESTALE);
        T_EQ_INT(store_lost(st, job, n, "again", state, err, sizeof err), UMDQ_ESTALE);
        store_dispatch_clear(&d);
        if (n < 3) T_REQUIRE(store_claim(st, &cmd_worker, &d, err, sizeof err) == 0);
    }
    T_EQ_STR(job_state(st, job, buf, sizeof buf), "FAILED");
    T_EQ_INT(q_int(st, "SELECT count(*) FROM attempts WHERE state = 'LOST'"), 3);
    T_CONTAINS(q_text(st, "SELECT error FROM attempts WHERE n = 3", buf, sizeof buf), "lost: worker gone");
    T_EQ_INT(store_claim(st, &cmd_worker, &d, err, sizeof err), UMDQ_ENOTFOUND);
    /* preempted counts like lost */
    store_destroy(&st);
    st = setup_claimed("preempt", 2, 0, &d);
    T_REQUIRE(st);
    store_finish_report rep = {"preempted", 0, 0, 1, 15, "worker stopping", NULL};
    T_EQ_INT(store_finish(st, d.job, 1, d.lease, &rep, state, err, sizeof err), 0);
    T_EQ_STR(state, "QUEUED");
    store_dispatch_clear(&d);
    T_REQUIRE(store_claim(st, &cmd_worker, &d, err, sizeof err) == 0);
    T_EQ_INT(store_finish(st, d.job, 2, d.lease, &rep, state, err, sizeof err), 0);
    T_EQ_STR(state, "FAILED");
    store_dispatch_clear(&d);
    store_destroy(&st);
}

static void test_daemon_store_failed_retry_policy(void) {
    char err[512], state[16], buf[64];
    store_dispatch d;
    store_finish_report rep = {"failed", 1, 3, 0, 0, "exit 3", NULL};
    store *st = setup_claimed("noretry", 3, 0, &d);
    T_REQUIRE(st);
    T_EQ_INT(store_finish(st, d.job, 1, d.lease, &rep, state, err, sizeof err), 0);
    T_EQ_STR(state, "FAILED");
    T_EQ_STR(q_text(st, "SELECT error FROM attempts", buf, sizeof buf), "exit 3");
    store_dispatch_clear(&d);
    store_destroy(&st);

    st = setup_claimed("retry", 2, 1, &d);
    T_REQUIRE(st);
    T_EQ_INT(store_finish(st, d.job, 1, d.lease, &rep, state, err, sizeof err), 0);
    T_EQ_STR(state, "QUEUED");
    store_dispatch_clear(&d);
    T_REQUIRE(store_claim(st, &cmd_worker, &d, err, sizeof err) == 0);
    T_EQ_INT(d.attempt, 2);
    T_EQ_INT(store_finish(st, d.job, 2, d.lease, &rep, state, err, sizeof err), 0);
    T_EQ_STR(state, "FAILED"); /* out of attempts */
    store_dispatch_clear(&d);
    store_destroy(&st);
}

static void test_daemon_store_cancel_requeue(void) {
    char err[512], state[16], buf[64];
    store *st = fresh_store("cancel");
    T_REQUIRE(st);
    store_submit_result res;
    sweep *sw = make_sweep("cancel", 0, 3, 0, 1, 0);
    T_REQUIRE(store_submit(st, sw, &res, err, sizeof err) == 0);
    free_sweep(sw);
    /* QUEUED -> CANCELLED: nothing to stop */
    store_open_attempt open;
    T_EQ_INT(store_job_cancel(st, 3, &open, err, sizeof err), 0);
    T_EQ_INT(open.job, 0);
    T_EQ_STR(job_state(st, 3, buf, sizeof buf), "CANCELLED");
    T_EQ_INT(store_job_cancel(st, 3, &open, err, sizeof err), UMDQ_ESTATE);
    T_EQ_INT(store_job_cancel(st, 99, &open, err, sizeof err), UMDQ_ENOTFOUND);
    /* RUNNING -> CANCELLED at once; the open attempt is handed back to be stopped */
    store_dispatch d;
    T_REQUIRE(store_claim(st, &cmd_worker, &d, err, sizeof err) == 0);
    T_EQ_INT(d.job, 1);
    T_EQ_INT(store_job_cancel(st, 1, &open, err, sizeof err), 0);
    T_EQ_INT(open.job, 1);
    T_EQ_INT(open.attempt, 1);
    T_EQ_STR(open.lease, d.lease);
    T_EQ_STR(open.worker, "host/w0");
    T_EQ_STR(job_state(st, 1, buf, sizeof buf), "CANCELLED");
    /* its reports are still taken until it ends; the job stays CANCELLED */
    T_EQ_INT(store_lease_check(st, 1, 1, d.lease), 0);
    char reason[16];
    T_EQ_INT(store_heartbeat(st, 1, 1, d.lease, 5, NULL, reason, err, sizeof err), 0);
    T_EQ_STR(reason, "cancelled");
    store_finish_report rep = {"cancelled", 0, 0, 1, 15, NULL, NULL};
    T_EQ_INT(store_finish(st, 1, 1, d.lease, &rep, state, err, sizeof err), 0);
    T_EQ_STR(state, "CANCELLED");
    T_EQ_STR(q_text(st, "SELECT state FROM attempts WHERE job_id = 1", buf, sizeof buf), "CANCELLED");
    store_dispatch_clear(&d);
    /* requeue: final -> QUEUED with the budget extended; QUEUED / RUNNING refuse */
    T_EQ_INT(store_job_requeue(st, 1, err, sizeof err), 0);
    T_EQ_STR(job_state(st, 1, buf, sizeof buf), "QUEUED");
    T_EQ_INT(q_int(st, "SELECT max_attempts FROM jobs WHERE id = 1"), 2);
    T_EQ_INT(store_job_requeue(st, 1, err, sizeof err), UMDQ_ESTATE);
    T_REQUIRE(store_claim(st, &cmd_worker, &d, err, sizeof err) == 0);
    T_EQ_INT(d.job, 1);
    T_EQ_INT(d.attempt, 2);
    T_EQ_INT(store_job_requeue(st, 1, err, sizeof err), UMDQ_ESTATE);
    /* requeue of a cancelled job whose attempt is still stopping closes that attempt */
    T_EQ_INT(store_job_cancel(st, 1, &open, err, sizeof err), 0);
    T_EQ_INT(store_job_requeue(st, 1, err, sizeof err), 0);
    T_EQ_INT(store_lease_check(st, 1, 2, d.lease), UMDQ_ESTALE);
    store_dispatch_clear(&d);
    /* sweep-wide */
    int n = 0, nopen = 0;
    store_open_attempt *list = NULL;
    T_REQUIRE(store_claim(st, &cmd_worker, &d, err, sizeof err) == 0);
    T_EQ_INT(store_sweep_cancel(st, res.sweep_id, &n, &list, &nopen, err, sizeof err), 0);
    T_EQ_INT(n, 2); /* jobs 1 (running) and 2 (queued); 3 was cancelled already */
    T_EQ_INT(nopen, 1);
    T_EQ_INT(list[0].job, d.job);
    free(list);
    T_EQ_INT(store_sweep_requeue(st, res.sweep_id, &n, err, sizeof err), 0);
    T_EQ_INT(n, 3);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM jobs WHERE state = 'QUEUED'"), 3);
    store_dispatch_clear(&d);
    store_destroy(&st);
}

static void test_daemon_store_results_once(void) {
    char err[512], state[16], buf[64];
    store_dispatch d;
    store *st = setup_claimed("results", 3, 0, &d);
    T_REQUIRE(st);
    cJSON *r1 = cJSON_Parse("{\"acc\": 0.5}"), *r2 = cJSON_Parse("{\"acc\": 0.9, \"fid\": 12.5}");
    T_EQ_INT(store_results(st, d.job, 1, d.lease, r1, err, sizeof err), 0);
    T_EQ_INT(store_results(st, d.job, 1, d.lease, r2, err, sizeof err), 0);
    T_EQ_STR(q_text(st, "SELECT value FROM results WHERE key = 'acc'", buf, sizeof buf), "0.5");
    T_EQ_INT(q_int(st, "SELECT count(*) FROM results"), 2);
    store_finish_report rep = {"succeeded", 1, 0, 0, 0, NULL, r2};
    T_EQ_INT(store_finish(st, d.job, 1, d.lease, &rep, state, err, sizeof err), 0);
    T_EQ_STR(q_text(st, "SELECT value FROM results WHERE key = 'acc'", buf, sizeof buf), "0.5");
    T_EQ_INT(q_int(st, "SELECT count(*) FROM results"), 2);
    /* after the attempt ended, its lease is stale */
    T_EQ_INT(store_results(st, d.job, 1, d.lease, r2, err, sizeof err), UMDQ_ESTALE);
    cJSON *bad = cJSON_Parse("[1]");
    T_EQ_INT(store_results(st, d.job, 1, d.lease, bad, err, sizeof err), UMDQ_EPROTO);
    cJSON_Delete(bad);
    cJSON_Delete(r1);
    cJSON_Delete(r2);
    store_dispatch_clear(&d);
    store_destroy(&st);
}

static void test_daemon_store_metrics_idempotent(void) {
    char err[512];
    store_dispatch d;
    store *st = setup_claimed("metrics", 3, 0, &d);
    T_REQUIRE(st);
    cJSON *pts = cJSON_Parse("[[\"loss\", 1, 0.5], [\"loss\", 2, 0.4], [\"lr\", 1, 0.001]]");
    int added = -1;
    T_EQ_INT(store_metrics(st, d.job, 1, d.lease, 0, 0, pts, &added, err, sizeof err), 0);
    T_EQ_INT(added, 3);
    T_EQ_INT(store_metrics(st, d.job, 1, d.lease, 0, 0, pts, &added, err, sizeof err), 0);
    T_EQ_INT(added, 0);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM metrics"), 3);
    cJSON_Delete(pts);
    /* one malformed point refuses the message whole */
    pts = cJSON_Parse("[[\"loss\", 3, 0.3], [\"loss\", 1.5, 0.2]]");
    T_EQ_INT(store_metrics(st, d.job, 1, d.lease, 0, 0, pts, &added, err, sizeof err), UMDQ_EPROTO);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM metrics"), 3);
    cJSON_Delete(pts);
    pts = cJSON_Parse("[[\"loss\", 3, 0.3]]");
    T_EQ_INT(store_metrics(st, d.job, 1, "0123456789abcdef0123456789abcdef", 0, 0, pts, &added, err, sizeof err), UMDQ_ESTALE);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM metrics"), 3);
    cJSON_Delete(pts);
    store_dispatch_clear(&d);
    store_destroy(&st);
}

static void test_daemon_store_log_append(void) {
    char err[512], path[600];
    store_dispatch d;
    store *st = setup_claimed("log", 3, 0, &d);
    T_REQUIRE(st);
    T_EQ_INT(store_started(st, d.job, 1, d.lease, 1, err, sizeof err), 0);
    /* no output yet, no file: the header line comes with the first bytes */
    snprintf(path, sizeof path, "%s/log/logs/%lld.log", tmpdir, (long long)d.job);
    struct stat sb;
    T_CHECK(stat(path, &sb) != 0 && errno == ENOENT);
    T_EQ_INT(store_log(st, d.job, 1, d.lease, 0, -1, "", 0, err, sizeof err), 0);
    T_CHECK(stat(path, &sb) != 0 && errno == ENOENT);
    T_EQ_INT(store_log(st, d.job, 1, d.lease, 0, -1, "hello ", 6, err, sizeof err), 0);
    T_EQ_INT(store_log(st, d.job, 1, d.lease, 0, -1, "hello ", 6, err, sizeof err), 0);    /* replay */
    T_EQ_INT(store_log(st, d.job, 1, d.lease, 3, -1, "lo world\n", 9, err, sizeof err), 0); /* overlap */
    T_EQ_INT(store_log(st, d.job, 1, d.lease, 20, -1, "after a gap", 11, err, sizeof err), 0);
    T_EQ_INT(q_int(st, "SELECT log_bytes FROM attempts"), 31);
    /* the next attempt starts with its own header line */
    T_EQ_INT(store_lost(st, d.job, 1, "test", NULL, err, sizeof err), 0);
    store_dispatch_clear(&d);
    T_REQUIRE(store_claim(st, &cmd_worker, &d, err, sizeof err) == 0);
    T_EQ_INT(store_log(st, d.job, 2, d.lease, 0, -1, "second\n", 7, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/log/logs/%lld.log", tmpdir, (long long)d.job);
    char *text = NULL;
    size_t len = 0;
    T_REQUIRE(read_file(path, &text, &len, 1 << 20, err, sizeof err) == 0);
    T_EQ_STR(text, "== attempt 1 on host/w0 ==\nhello world\n[umdqd: 8 bytes of output are missing here]\n"
                   "after a gap\n== attempt 2 on host/w0 ==\nsecond\n");
    free(text);
    store_dispatch_clear(&d);
    store_destroy(&st);
}

/* Log bytes written by a turn that did not commit (umdqd killed between the write and the commit)
 * are cut before the next append, so the bytes sent again are in the log once. Numbered metrics
 * move the attempt's watermark only when they are the next one. */
static void test_daemon_store_watermarks(void) {
    char err[512], path[600];
    store_dispatch d;
    store *st = setup_claimed("marks", 3, 0, &d);
    T_REQUIRE(st);
    T_EQ_INT(store_log(st, d.job, 1, d.lease, 0, 0, "one\n", 4, err, sizeof err), 0);
    store_batch_begin(st);
    T_EQ_INT(store_log(st, d.job, 1, d.lease, 4, 0, "two\n", 4, err, sizeof err), 0);
    store_batch_abort(st); /* the turn is undone; the bytes are in the file */
    store_marks mk;
    T_EQ_INT(store_marks_get(st, d.job, 1, d.lease, &mk, err, sizeof err), 0);
    T_EQ_INT(mk.log_bytes, 4);
    T_EQ_INT(store_log(st, d.job, 1, d.lease, 4, 0, "two\n", 4, err, sizeof err), 0);
    T_EQ_INT(store_log(st, d.job, 1, d.lease, 12, 4, "four\n", 5, err, sizeof err), 0); /* waits for 8..12 */
    T_EQ_INT(store_log(st, d.job, 1, d.lease, 8, 8, "3333", 4, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/marks/logs/%lld.log", tmpdir, (long long)d.job);
    char *text = NULL;
    size_t len = 0;
    T_REQUIRE(read_file(path, &text, &len, 1 << 20, err, sizeof err) == 0);
    T_EQ_STR(text, "== attempt 1 on host/w0 ==\none\ntwo\n3333");
    free(text);

    cJSON *pts = cJSON_Parse("[[\"m\", 1, 1]]");
    T_EQ_INT(store_metrics(st, d.job, 1, d.lease, 2, 1, pts, NULL, err, sizeof err), 0); /* 1 is missing */
    T_EQ_INT(store_marks_get(st, d.job, 1, d.lease, &mk, err, sizeof err), 0);
    T_EQ_INT(mk.metrics_seq, 0);
    T_EQ_INT(store_metrics(st, d.job, 1, d.lease, 1, 1, pts, NULL, err, sizeof err), 0);
    T_EQ_INT(store_metrics(st, d.job, 1, d.lease, 2, 1, pts, NULL, err, sizeof err), 0);
    T_EQ_INT(store_marks_get(st, d.job, 1, d.lease, &mk, err, sizeof err), 0);
    T_EQ_INT(mk.metrics_seq, 2);
    cJSON_Delete(pts);
    /* a malformed numbered message counts as delivered */
    pts = cJSON_Parse("[[\"m\", 1.5, 1]]");
    T_EQ_INT(store_metrics(st, d.job, 1, d.lease, 3, 3, pts, NULL, err, sizeof err), UMDQ_EPROTO);
    T_EQ_INT(store_marks_get(st, d.job, 1, d.lease, &mk, err, sizeof err), 0);
    T_EQ_INT(mk.metrics_seq, 3);
    cJSON_Delete(pts);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM metrics"), 1);
    T_EQ_INT(store_marks_get(st, d.job, 1, "0123456789abcdef0123456789abcdef", &mk, err, sizeof err), UMDQ_ESTALE);
    store_dispatch_clear(&d);
    store_destroy(&st);
}

/* Sweeps whose sweep_counts row differs from a count of their jobs (0 when all agree). */
static long long counts_off(store *st) {
    return q_int(st, "SELECT count(*) FROM sweeps s LEFT JOIN sweep_counts c ON c.sweep_id = s.id WHERE "
                     "c.sweep_id IS NULL OR c.total != (SELECT count(*) FROM jobs WHERE sweep_id = s.id) OR "
                     "c.queued != (SELECT count(*) FROM jobs WHERE sweep_id = s.id AND state = 'QUEUED') OR "
                     "c.running != (SELECT count(*) FROM jobs WHERE sweep_id = s.id AND state = 'RUNNING') OR "
                     "c.succeeded != (SELECT count(*) FROM jobs WHERE sweep_id = s.id AND state = 'SUCCEEDED') OR "
                     "c.failed != (SELECT count(*) FROM jobs WHERE sweep_id = s.id AND state = 'FAILED') OR "
                     "c.lost != (SELECT count(*) FROM jobs WHERE sweep_id = s.id AND state = 'LOST') OR "
                     "c.preempted != (SELECT count(*) FROM jobs WHERE sweep_id = s.id AND state = 'PREEMPTED') OR "
                     "c.cancelled != (SELECT count(*) FROM jobs WHERE sweep_id = s.id AND state = 'CANCELLED')");
}

/* sweep_counts follows every job transition in the transaction that makes it (a rolled-back batch
 * takes its counts back too), and migration 2 counts the jobs of a version 1 database. */
static void test_daemon_store_sweep_counts(void) {
    char err[512];
    store *st = fresh_store("counts");
    T_REQUIRE(st);
    store_submit_result res;
    sweep *a = make_sweep("ca", 0, 5, 0, 2, 0), *b = make_sweep("cb", 0, 3, 0, 1, 0);
    T_REQUIRE(store_submit(st, a, &res, err, sizeof err) == 0);
    int64_t sa = res.sweep_id;
    T_REQUIRE(store_submit(st, b, &res, err, sizeof err) == 0);
    T_REQUIRE(store_submit(st, a, &res, err, sizeof err) == 0); /* nothing new */
    T_EQ_INT(counts_off(st), 0);
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT total * 10 + queued FROM sweep_counts WHERE sweep_id = %lld", (long long)sa);
    T_EQ_INT(q_int(st, sql), 55);
    store_dispatch d[4];
    for (int i = 0; i < 4; i++) T_REQUIRE(store_claim(st, &cmd_worker, &d[i], err, sizeof err) == 0);
    T_EQ_INT(counts_off(st), 0);
    store_finish_report ok = {"succeeded", 1, 0, 0, 0, NULL, NULL}, bad = {"failed", 1, 2, 0, 0, "x", NULL};
    T_EQ_INT(store_finish(st, d[0].job, d[0].attempt, d[0].lease, &ok, NULL, err, sizeof err), 0);
    T_EQ_INT(store_finish(st, d[1].job, d[1].attempt, d[1].lease, &bad, NULL, err, sizeof err), 0);
    T_EQ_INT(store_lost(st, d[2].job, d[2].attempt, "test", NULL, err, sizeof err), 0);
    T_EQ_INT(store_unclaim(st, d[3].job, d[3].attempt, d[3].lease, err, sizeof err), 0);
    T_EQ_INT(counts_off(st), 0);
    /* a batch that is rolled back leaves the counts as they were */
    store_batch_begin(st);
    int n = 0, nopen = 0;
    store_open_attempt *list = NULL;
    T_EQ_INT(store_sweep_cancel(st, sa, &n, &list, &nopen, err, sizeof err), 0);
    free(list);
    store_batch_abort(st);
    T_EQ_INT(counts_off(st), 0);
    snprintf(sql, sizeof sql, "SELECT cancelled FROM sweep_counts WHERE sweep_id = %lld", (long long)sa);
    T_EQ_INT(q_int(st, sql), 0);
    T_EQ_INT(store_sweep_cancel(st, sa, &n, &list, &nopen, err, sizeof err), 0);
    free(list);
    T_EQ_INT(counts_off(st), 0);
    T_EQ_INT(q_int(st, sql), n);
    T_EQ_INT(store_sweep_requeue(st, sa, &n, err, sizeof err), 0);
    T_EQ_INT(counts_off(st), 0);
    for (int i = 0; i < 4; i++) store_dispatch_clear(&d[i]);
    free_sweep(a);
    free_sweep(b);

    /* a version 1 database with jobs: migration 2 counts them (and migration 3 adds a column) */
    T_REQUIRE(sqlite3_exec(store_db(st), "DROP TRIGGER sweep_counts_new; DROP TRIGGER sweep_counts_job_new; "
                                         "DROP TRIGGER sweep_counts_job_state; DROP TRIGGER sweep_counts_job_gone; "
                                         "DROP TRIGGER sweep_counts_sweep_gone; DROP TABLE sweep_counts; "
                                         "DROP INDEX jobs_sweep_started; DROP INDEX jobs_sweep_finished; "
                                         "ALTER TABLE attempts DROP COLUMN metrics_seq; ALTER TABLE attempts DROP COLUMN log_end; "
                                         "PRAGMA user_version = 1",
                           NULL, NULL, NULL) == SQLITE_OK);
    store_destroy(&st);
    char db[600];
    snprintf(db, sizeof db, "%s/counts/umdq.db", tmpdir);
    T_REQUIRE(store_open(db, NULL, &st, err, sizeof err) == 0);
    T_EQ_INT(store_migrations_applied(st), store_known_version() - 1);
    T_EQ_INT(counts_off(st), 0);
    T_EQ_INT(q_int(st, "SELECT sum(total) FROM sweep_counts"), 8);
    store_destroy(&st);
}

static void test_daemon_store_batch(void) {
    char err[512];
    store *st = fresh_store("batch");
    T_REQUIRE(st);
    store_submit_result res;
    sweep *a = make_sweep("a", 0, 2, 0, 3, 0), *b = make_sweep("b", 0, 2, 0, 3, 0);
    store_batch_begin(st);
    T_EQ_INT(store_batch_dirty(st), 0);
    T_EQ_INT(store_submit(st, a, &res, err, sizeof err), 0);
    T_EQ_INT(store_batch_dirty(st), 1);
    store_batch_abort(st);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM jobs"), 0);
    /* a failing mutation inside a batch leaves the others */
    store_batch_begin(st);
    T_EQ_INT(store_submit(st, a, &res, err, sizeof err), 0);
    T_EQ_INT(store_job_requeue(st, 1, err, sizeof err), UMDQ_ESTATE);
    T_EQ_INT(store_job_cancel(st, 77, NULL, err, sizeof err), UMDQ_ENOTFOUND);
    T_EQ_INT(store_submit(st, b, &res, err, sizeof err), 0);
    T_EQ_INT(store_batch_commit(st, err, sizeof err), 0);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM jobs"), 4);
    free_sweep(a);
    free_sweep(b);
    store_destroy(&st);
}

static void test_daemon_store_dispatch_fit_and_order(void) {
    char err[512];
    store *st = fresh_store("fit");
    T_REQUIRE(st);
    store_submit_result res;
    sweep *low = make_sweep("low", 0, 1, 0, 3, 0), *high = make_sweep("high", 100, 4, 5, 3, 0);
    set_umd(high, 1, "cuda");
    set_umd(high, 2, "cpu");
    set_umd(high, 3, "auto");
    T_REQUIRE(store_submit(st, low, &res, err, sizeof err) == 0);
    T_REQUIRE(store_submit(st, high, &res, err, sizeof err) == 0);
    free_sweep(low);
    free_sweep(high);
    /* high: jobs 2 (command), 3 (umd cuda), 4 (umd cpu), 5 (umd auto); low: job 1 */
    store_dispatch d;
    store_worker_fit cpu_umd = {"h/cpu", "cpu", STORE_KIND_UMD};
    T_REQUIRE(store_claim(st, &cpu_umd, &d, err, sizeof err) == 0);
    T_EQ_INT(d.job, 4);
    T_EQ_INT((long long)d.stall_timeout, 1800);
    store_dispatch_clear(&d);
    store_worker_fit gpu = {"h/gpu", "cuda", STORE_KIND_UMD | STORE_KIND_COMMAND};
    T_REQUIRE(store_claim(st, &gpu, &d, err, sizeof err) == 0);
    T_EQ_INT(d.job, 2); /* highest priority, oldest */
    T_EQ_INT((long long)d.stall_timeout, 0);
    store_dispatch_clear(&d);
    T_REQUIRE(store_claim(st, &gpu, &d, err, sizeof err) == 0);
    T_EQ_INT(d.job, 3);
    store_dispatch_clear(&d);
    T_REQUIRE(store_claim(st, &cpu_umd, &d, err, sizeof err) == 0);
    T_EQ_INT(d.job, 5);
    store_dispatch_clear(&d);
    T_EQ_INT(store_claim(st, &cpu_umd, &d, err, sizeof err), UMDQ_ENOTFOUND); /* job 1 is a command */
    T_REQUIRE(store_claim(st, &gpu, &d, err, sizeof err) == 0);
    T_EQ_INT(d.job, 1);
    store_dispatch_clear(&d);
    store_destroy(&st);
}

static void test_daemon_store_stall_and_busy(void) {
    char err[512], state[16], buf[128];
    store_dispatch d;
    store *st = setup_claimed("stall", 3, 0, &d);
    T_REQUIRE(st);
    /* `busy`: the attempt is taken back, uncounted */
    T_EQ_INT(store_unclaim(st, d.job, 1, d.lease, err, sizeof err), 0);
    T_EQ_STR(job_state(st, d.job, buf, sizeof buf), "QUEUED");
    T_EQ_INT(q_int(st, "SELECT attempts FROM jobs"), 0);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM attempts"), 0);
    T_EQ_INT(store_lease_check(st, d.job, 1, d.lease), UMDQ_ESTALE);
    char old[STORE_LEASE_HEX + 1];
    snprintf(old, sizeof old, "%s", d.lease);
    store_dispatch_clear(&d);
    T_REQUIRE(store_claim(st, &cmd_worker, &d, err, sizeof err) == 0);
    T_EQ_INT(d.attempt, 1);
    T_CHECK(strcmp(old, d.lease) != 0);
    /* a stalled attempt ends FAILED whatever the worker says */
    T_EQ_INT(store_mark_cancel(st, d.job, 1, "stalled", err, sizeof err), 0);
    store_finish_report rep = {"cancelled", 0, 0, 1, 15, NULL, NULL};
    T_EQ_INT(store_finish(st, d.job, 1, d.lease, &rep, state, err, sizeof err), 0);
    T_EQ_STR(q_text(st, "SELECT state FROM attempts", buf, sizeof buf), "FAILED");
    T_CONTAINS(q_text(st, "SELECT error FROM attempts", buf, sizeof buf), "stalled: no progress for");
    T_EQ_STR(state, "FAILED"); /* retry.on_failure is off */
    T_EQ_INT(store_mark_cancel(st, d.job, 1, "stalled", err, sizeof err), UMDQ_ESTALE);
    store_dispatch_clear(&d);
    store_destroy(&st);
}

static void test_daemon_store_workers(void) {
    char err[512], buf[64];
    store *st = fresh_store("workers");
    T_REQUIRE(st);
    T_EQ_INT(store_worker_hello(st, "h/a", "h", "cpu", "cpu", "{\"kinds\":[\"command\"]}", 10, "IDLE", err, sizeof err), 0);
    T_EQ_INT(store_worker_hello(st, "h/b", "h", "cuda:0", "cuda", "{}", 11, "BUSY", err, sizeof err), 0);
    T_EQ_INT(store_worker_hello(st, "h/a", "h", "cpu", "cpu", "{}", 12, "IDLE", err, sizeof err), 0);
    T_EQ_INT(q_int(st, "SELECT count(*) FROM workers"), 2);
    T_EQ_INT(q_int(st, "SELECT pid FROM workers WHERE id = 'h/a'"), 12);
    const char *live[] = {"h/a"};
    T_EQ_INT(store_workers_dead_except(st, live, 1, err, sizeof err), 0);
    T_EQ_STR(q_text(st, "SELECT state FROM workers WHERE id = 'h/b'", buf, sizeof buf), "DEAD");
    T_EQ_STR(q_text(st, "SELECT state FROM workers WHERE id = 'h/a'", buf, sizeof buf), "IDLE");
    T_EQ_INT(store_worker_seen(st, "h/a", "BUSY", err, sizeof err), 0);
    T_EQ_STR(q_text(st, "SELECT state FROM workers WHERE id = 'h/a'", buf, sizeof buf), "BUSY");
    store_destroy(&st);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/umdq-store-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        printf("FAIL test_daemon_store: mkdtemp\n");
        return 1;
    }
    T_RUN(test_daemon_store_migrations);
    T_RUN(test_daemon_store_submit_dedupe);
    T_RUN(test_daemon_store_claim_finish);
    T_RUN(test_daemon_store_lost_until_failed);
    T_RUN(test_daemon_store_failed_retry_policy);
    T_RUN(test_daemon_store_cancel_requeue);
    T_RUN(test_daemon_store_results_once);
    T_RUN(test_daemon_store_metrics_idempotent);
    T_RUN(test_daemon_store_log_append);
    T_RUN(test_daemon_store_watermarks);
    T_RUN(test_daemon_store_sweep_counts);
    T_RUN(test_daemon_store_batch);
    T_RUN(test_daemon_store_dispatch_fit_and_order);
    T_RUN(test_daemon_store_stall_and_busy);
    T_RUN(test_daemon_store_workers);
    tmp_clean();
    return t_done();
}
