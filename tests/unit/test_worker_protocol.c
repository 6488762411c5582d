/* test_worker_protocol.c: a real umdq-worker process against a ROUTER socket that speaks the
 * daemon's side of docs/protocol.md: hello, welcome, job, started, metrics batches, result, log
 * offsets, heartbeats with the step, finished resent until ack, busy, who, cancel (cancelled,
 * stalled), failed attempts, a daemon that goes away and comes back, SIGTERM (preempted), reject,
 * --all-gpus without a GPU, and the per-GPU supervisor.
 * umdq-uses: worker umd common */
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"
#include "supervise.h"
#include "t.h"
#include "umd.h"
#include "umdq.h"
#include "util.h"

#define HB_MS 200

static char tmp_root[256];
static char worker_bin[1024];
static void *zctx;
static void *router;       /* the daemon's side */
static char endpoint[256]; /* tcp://127.0.0.1:PORT */
static pid_t worker_pid;
static char worker_rid[256];
static cJSON *received;    /* every message from the worker, in order; consumed ones get "_used" */

static int rm_one(const char *p, const struct stat *s, int f, struct FTW *w) {
    (void)s;
    (void)w;
    return f == FTW_DP ? rmdir(p) : unlink(p);
}

static int router_open(const char *bind_to) {
    router = zmq_socket(zctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(router, bind_to) != 0) return -1;
    size_t n = sizeof endpoint;
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, endpoint, &n);
    return 0;
}

static void router_close(void) {
    if (router) zmq_close(router);
    router = NULL;
}

static pid_t spawn_worker(const char *name, const char *logname) {
    char logpath[512], workdir[512];
    snprintf(logpath, sizeof logpath, "%s/%s", tmp_root, logname);
    snprintf(workdir, sizeof workdir, "%s/work", tmp_root);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(logpath, "a", stderr);
        (void)f;
        execl(worker_bin, "umdq-worker", "--connect", endpoint, "--cpu", "--name", name, "--workdir",
              workdir, "--grace-ms", "3000", (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Receive what is there within timeout_ms into `received`; returns how many arrived. */
static int pump(int timeout_ms) {
    int got = 0;
    int64_t end = mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = end - mono_ms();
        zmq_pollitem_t it = {.socket = router, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, got ? 0 : (left > 0 ? (long)left : 0)) <= 0) return got;
        char rid[256];
        int n = zmq_recv(router, rid, sizeof rid - 1, 0);
        if (n < 0) return got;
        rid[n] = 0;
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, router, 0);
        cJSON *o = cJSON_ParseWithLength(zmq_msg_data(&m), zmq_msg_size(&m));
        zmq_msg_close(&m);
        if (!o) continue;
        snprintf(worker_rid, sizeof worker_rid, "%s", rid);
        cJSON_AddStringToObject(o, "_rid", rid);
        cJSON_AddItemToArray(received, o);
        got++;
    }
}

static int64_t num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -999;
}

static const char *str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The first unused message of this type (and job, when job >= 0), waiting up to timeout_ms. */
static cJSON *expect(const char *type, int64_t job, int timeout_ms) {
    int64_t end = mono_ms() + timeout_ms;
    for (;;) {
        cJSON *m;
        cJSON_ArrayForEach(m, received) {
            if (cJSON_GetObjectItem(m, "_used")) continue;
            const char *t = str(m, "t");
            if (!t || strcmp(t, type) != 0) continue;
            if (job >= 0 && num(m, "job") != job) continue;
            cJSON_AddTrueToObject(m, "_used");
            return m;
        }
        int64_t left = end - mono_ms();
        if (left <= 0) return NULL;
        pump((int)(left < 50 ? left : 50));
    }
}

static int count_type(const char *type, int64_t job) {
    int n = 0;
    cJSON *m;
    cJSON_ArrayForEach(m, received) {
        const char *t = str(m, "t");
        if (t && strcmp(t, type) == 0 && (job < 0 || num(m, "job") == job)) n++;
    }
    return n;
}

static void consume_all(void) {
    cJSON *m;
    cJSON_ArrayForEach(m, received) if (!cJSON_GetObjectItem(m, "_used")) cJSON_AddTrueToObject(m, "_used");
}

static void send_to_rid(const char *rid, cJSON *msg) {
    char *text = cJSON_PrintUnformatted(msg);
    zmq_send(router, rid, strlen(rid), ZMQ_SNDMORE);
    zmq_send(router, text, strlen(text), 0);
    free(text);
    cJSON_Delete(msg);
}

static void send_to_worker(cJSON *msg) {
    char *text = cJSON_PrintUnformatted(msg);
    zmq_send(router, worker_rid, strlen(worker_rid), ZMQ_SNDMORE);
    zmq_send(router, text, strlen(text), 0);
    free(text);
    cJSON_Delete(msg);
}

static cJSON *msg_new(const char *type) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "t", type);
    cJSON_AddNumberToObject(m, "v", 1);
    return m;
}

static void lease_of(int64_t job, int64_t attempt, char out[33]) {
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)job, (unsigned long long)attempt);
}

static cJSON *job_msg(int64_t job, int64_t attempt, const char *command, double stall_timeout) {
    char lease[33];
    lease_of(job, attempt, lease);
    cJSON *m = msg_new("job");
    cJSON_AddNumberToObject(m, "job", (double)job);
    cJSON_AddNumberToObject(m, "attempt", (double)attempt);
    cJSON_AddStringToObject(m, "lease", lease);
    cJSON_AddNumberToObject(m, "sweep", 1);
    cJSON_AddStringToObject(m, "kind", "command");
    cJSON *config = cJSON_AddObjectToObject(m, "config");
    cJSON_AddStringToObject(config, "kind", "command");
    cJSON_AddStringToObject(config, "command", command);
    cJSON_AddNumberToObject(m, "seed", 7);
    cJSON_AddNumberToObject(m, "stall_timeout", stall_timeout);
    return m;
}

static void send_job(int64_t job, int64_t attempt, const char *command, double stall_timeout) {
    send_to_worker(job_msg(job, attempt, command, stall_timeout));
}

static void send_simple(const char *type, int64_t job, int64_t attempt, const char *reason, int grace_ms) {
    char lease[33];
    lease_of(job, attempt, lease);
    cJSON *m = msg_new(type);
    cJSON_AddNumberToObject(m, "job", (double)job);
    cJSON_AddNumberToObject(m, "attempt", (double)attempt);
    if (strcmp(type, "ack") != 0) cJSON_AddStringToObject(m, "lease", lease);
    if (reason) cJSON_AddStringToObject(m, "reason", reason);
    if (grace_ms >= 0) cJSON_AddNumberToObject(m, "grace_ms", grace_ms);
    send_to_worker(m);
}

static void send_welcome(void) {
    cJSON *m = msg_new("welcome");
    cJSON_AddStringToObject(m, "worker", "test/cpu0");
    cJSON_AddStringToObject(m, "epoch", "0123abcd");
    cJSON_AddNumberToObject(m, "heartbeat_ms", HB_MS);
    cJSON_AddStringToObject(m, "http", "http://127.0.0.1:1");
    cJSON_AddStringToObject(m, "token", "t");
    send_to_worker(m);
}

static int worker_alive(void) { return worker_pid > 0 && waitpid(worker_pid, NULL, WNOHANG) == 0; }

static int is_hex(const char *s, size_t n) {
    if (!s || strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef", s[i])) return 0;
    return 1;
}

static void test_worker_proto_hello(void) {
    worker_pid = spawn_worker("test/cpu0", "worker.log");
    T_REQUIRE(worker_pid > 0);
    cJSON *h = expect("hello", -1, 10000);
    T_REQUIRE(h != NULL);
    T_CHECK(strncmp(worker_rid, "test/cpu0#", 10) == 0 && is_hex(worker_rid + 10, 16));
    T_EQ_INT(num(h, "v"), 1);
    T_EQ_STR(str(h, "name"), "test/cpu0");
    T_EQ_STR(str(h, "device"), "cpu");
    T_EQ_STR(str(h, "backend"), "cpu");
    T_CHECK(str(h, "host") && str(h, "host")[0]);
    T_EQ_INT(num(h, "pid"), worker_pid);
    T_CHECK(cJSON_IsNull(cJSON_GetObjectItem(h, "running")));
    T_CHECK(cJSON_IsArray(cJSON_GetObjectItem(h, "finished")));
    T_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(h, "finished")), 0);
    const cJSON *kinds = cJSON_GetObjectItem(cJSON_GetObjectItem(h, "capabilities"), "kinds");
    T_REQUIRE(cJSON_IsArray(kinds));
    T_EQ_STR(cJSON_GetArrayItem(kinds, 0)->valuestring, "command");
    T_EQ_INT(cJSON_GetArraySize(kinds), umd_backend_available("cpu") ? 2 : 1);
    send_welcome();
    /* heartbeats follow at the welcome's period */
    T_REQUIRE(expect("hb", -1, 3000) != NULL);
    int64_t t0 = mono_ms();
    T_REQUIRE(expect("hb", -1, 3000) != NULL);
    T_REQUIRE(expect("hb", -1, 3000) != NULL);
    T_CHECK(mono_ms() - t0 < 5 * HB_MS);
}

/* A command job: started, metrics in batches of at most 1000, result, log with contiguous
 * offsets, a heartbeat carrying the step, finished resent until ack, the scratch dir removed. */
static void test_worker_proto_job_succeeds(void) {
    T_REQUIRE(worker_alive());
    send_job(1, 1,
             "i=0; while [ $i -lt 2500 ]; do echo \"{{\\\"step\\\": $i, \\\"loss\\\": $i}}\"; i=$((i+1)); done >&3; "
             "echo '{{\"umdq\": \"progress\", \"step\": 5, \"total\": 10}}'; echo out-text; echo err-text >&2; "
             "sleep 1; echo '{{\"umdq\": \"result\", \"acc\": 0.75}}'",
             0);
    cJSON *s = expect("started", 1, 5000);
    T_REQUIRE(s != NULL);
    T_EQ_INT(num(s, "attempt"), 1);
    T_CHECK(num(s, "pid") > 0);
    char lease[33];
    lease_of(1, 1, lease);
    T_EQ_STR(str(s, "lease"), lease);
    cJSON *f = expect("finished", 1, 15000);
    T_REQUIRE(f != NULL);
    T_EQ_STR(str(f, "status"), "succeeded");
    T_EQ_INT(num(f, "exit_code"), 0);
    T_CHECK(cJSON_IsNull(cJSON_GetObjectItem(f, "signal")));
    T_EQ_STR(str(f, "error"), "");
    T_NEAR(cJSON_GetObjectItem(cJSON_GetObjectItem(f, "results"), "acc")->valuedouble, 0.75, 0, 0);
    T_EQ_STR(str(f, "lease"), lease);

    /* every message before finished: metrics, result, log, hb */
    int npoints = 0, nmetrics = 0, step_hb = 0, order_ok = 1, results_seen = 0;
    static char seen[2500];
    memset(seen, 0, sizeof seen);
    strbuf log;
    strbuf_init(&log);
    int offsets_ok = 1;
    cJSON *m;
    cJSON_ArrayForEach(m, received) {
        const char *t = str(m, "t");
        if (m == f) break;
        if (strcmp(t, "metrics") == 0 && num(m, "job") == 1) {
            nmetrics++;
            T_EQ_STR(str(m, "lease"), lease);
            const cJSON *pts = cJSON_GetObjectItem(m, "points");
            T_CHECK(cJSON_GetArraySize(pts) <= 1000);
            const cJSON *p;
            cJSON_ArrayForEach(p, pts) {
                int st = (int)cJSON_GetArrayItem(p, 1)->valuedouble;
                if (st < 0 || st >= 2500 || strcmp(cJSON_GetArrayItem(p, 0)->valuestring, "loss") != 0 ||
                    cJSON_GetArrayItem(p, 2)->valuedouble != st)
                    order_ok = 0;
                else
                    seen[st] = 1;
                npoints++;
            }
        } else if (strcmp(t, "log") == 0 && num(m, "job") == 1) {
            if (num(m, "offset") != (int64_t)log.len) offsets_ok = 0;
            strbuf_puts(&log, str(m, "data"));
        } else if (strcmp(t, "result") == 0 && num(m, "job") == 1) {
            results_seen++;
            T_NEAR(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "results"), "acc")->valuedouble, 0.75, 0, 0);
        } else if (strcmp(t, "hb") == 0) {
            const cJSON *run = cJSON_GetObjectItem(m, "running");
            if (cJSON_IsObject(run) && num(run, "job") == 1 && num(run, "step") == 5) {
                step_hb = 1;
                T_EQ_STR(str(run, "lease"), lease);
                T_EQ_INT(num(run, "attempt"), 1);
            }
        }
    }
    T_EQ_INT(npoints, 2500);
    T_CHECK(nmetrics >= 3);
    T_CHECK(order_ok);
    int all = 1;
    for (int i = 0; i < 2500; i++) all &= seen[i];
    T_CHECK(all);
    T_EQ_INT(results_seen, 1);
    T_CHECK(step_hb);
    T_CHECK(offsets_ok);
    T_CONTAINS(log.data, "out-text\n");
    T_CONTAINS(log.data, "err-text\n");
    T_CONTAINS(log.data, "\"step\": 5");
    strbuf_free(&log);

    /* resent with the heartbeats until ack, then not any more */
    T_REQUIRE(expect("finished", 1, 3000) != NULL);
    send_simple("ack", 1, 1, NULL, -1);
    pump(2 * HB_MS);
    int before = count_type("finished", 1);
    pump(4 * HB_MS);
    T_EQ_INT(count_type("finished", 1), before);

    char dir[600];
    snprintf(dir, sizeof dir, "%s/work/job-1-1", tmp_root);
    struct stat st;
    int64_t t0 = mono_ms();
    while (stat(dir, &st) == 0 && mono_ms() - t0 < 3000) usleep(20000);
    T_CHECK_MSG(stat(dir, &st) != 0, "%s was not removed", dir);
}

/* busy while running, who re-announces the attempt, cancel ends it as cancelled */
static void test_worker_proto_busy_who_cancel(void) {
    T_REQUIRE(worker_alive());
    send_job(2, 1, "trap '' TERM; echo '{{\"umdq\": \"progress\", \"step\": 3}}'; sleep 100", 0);
    T_REQUIRE(expect("started", 2, 5000) != NULL);
    send_job(3, 1, "true", 0);
    cJSON *b = expect("busy", 3, 3000);
    T_REQUIRE(b != NULL);
    T_EQ_INT(num(b, "attempt"), 1);
    char lease[33];
    lease_of(3, 1, lease);
    T_EQ_STR(str(b, "lease"), lease);

    cJSON *hb = NULL;
    int64_t t0 = mono_ms();
    while (mono_ms() - t0 < 3000) {
        hb = expect("hb", -1, 1000);
        const cJSON *run = hb ? cJSON_GetObjectItem(hb, "running") : NULL;
        if (run && num(run, "step") == 3) break;
    }
    send_to_worker(msg_new("who"));
    cJSON *h = expect("hello", -1, 3000);
    T_REQUIRE(h != NULL);
    const cJSON *run = cJSON_GetObjectItem(h, "running");
    T_REQUIRE(cJSON_IsObject(run));
    T_EQ_INT(num(run, "job"), 2);
    T_EQ_INT(num(run, "attempt"), 1);
    T_EQ_INT(num(run, "step"), 3);
    send_welcome();

    int64_t c0 = mono_ms();
    send_simple("cancel", 2, 1, "cancelled", 300);
    cJSON *f = expect("finished", 2, 5000);
    T_REQUIRE(f != NULL);
    T_CHECK(mono_ms() - c0 < 300 + 1500);
    T_EQ_STR(str(f, "status"), "cancelled");
    T_EQ_INT(num(f, "signal"), SIGKILL);
    T_CHECK(cJSON_IsNull(cJSON_GetObjectItem(f, "exit_code")));
    send_simple("ack", 2, 1, NULL, -1);
}

static void test_worker_proto_failed_and_stalled(void) {
    T_REQUIRE(worker_alive());
    send_job(4, 1, "echo some-output; echo bad-thing-happened >&2; exit 4", 0);
    cJSON *f = expect("finished", 4, 10000);
    T_REQUIRE(f != NULL);
    T_EQ_STR(str(f, "status"), "failed");
    T_EQ_INT(num(f, "exit_code"), 4);
    T_CHECK(cJSON_IsNull(cJSON_GetObjectItem(f, "signal")));
    T_EQ_STR(str(f, "error"), "bad-thing-happened\n");
    send_simple("ack", 4, 1, NULL, -1);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/work/job-4-1/config.json", tmp_root);
    struct stat st;
    T_CHECK_MSG(stat(dir, &st) == 0, "the scratch dir of a failed attempt is kept");

    send_job(5, 1, "sleep 100", 7);
    T_REQUIRE(expect("started", 5, 5000) != NULL);
    send_simple("cancel", 5, 1, "stalled", 1000);
    f = expect("finished", 5, 5000);
    T_REQUIRE(f != NULL);
    T_EQ_STR(str(f, "status"), "failed");
    T_EQ_STR(str(f, "error"), "stalled: no progress for 7 s");
    send_simple("ack", 5, 1, NULL, -1);

    send_job(6, 1, "kill -ABRT $$", 0);
    f = expect("finished", 6, 5000);
    T_REQUIRE(f != NULL);
    T_EQ_STR(str(f, "status"), "failed");
    T_EQ_INT(num(f, "signal"), SIGABRT);
    T_CONTAINS(str(f, "error"), "killed by signal 6 (SIGABRT)");
    send_simple("ack", 6, 1, NULL, -1);

    /* a template that cannot be rendered fails the attempt without a child */
    send_job(7, 1, "echo {missing.key}", 0);
    f = expect("finished", 7, 5000);
    T_REQUIRE(f != NULL);
    T_EQ_STR(str(f, "status"), "failed");
    T_CONTAINS(str(f, "error"), "missing.key");
    send_simple("ack", 7, 1, NULL, -1);
}

/* A umd job: the trainer runs in the attempt's child; its curve and results reach the daemon. */
static void test_worker_proto_umd_job(void) {
    if (!umd_backend_available("cpu")) T_SKIP("the trainer has no CPU backend in this build");
    T_REQUIRE(worker_alive());
    cJSON *m = job_msg(30, 1, "unused", 0);
    cJSON_ReplaceItemInObject(m, "kind", cJSON_CreateString("umd"));
    cJSON_ReplaceItemInObject(m, "config", cJSON_Parse(
        "{\"kind\": \"umd\", \"data\": {\"dataset\": \"synthetic\", \"image_size\": 8, \"train_size\": 32,"
        " \"test_size\": 8}, \"model\": {\"patch\": 4, \"width\": 16, \"depth\": 1, \"dec_depth\": 1,"
        " \"heads\": 2, \"cls_tokens\": 1}, \"train\": {\"steps\": 6, \"batch\": 4, \"log_every\": 2,"
        " \"threads\": 1, \"device\": \"cpu\"}}"));
    send_to_worker(m);
    cJSON *f = expect("finished", 30, 120000);
    T_REQUIRE(f != NULL);
    T_EQ_STR(str(f, "status"), "succeeded");
    T_CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(f, "results")) >= 1);
    int loss_points = 0;
    cJSON *x;
    cJSON_ArrayForEach(x, received) {
        const char *t = str(x, "t");
        if (!t || strcmp(t, "metrics") != 0 || num(x, "job") != 30) continue;
        const cJSON *p;
        cJSON_ArrayForEach(p, cJSON_GetObjectItem(x, "points"))
            if (strcmp(cJSON_GetArrayItem(p, 0)->valuestring, "loss") == 0) loss_points++;
    }
    T_CHECK_MSG(loss_points >= 1, "%d loss points", loss_points);
    send_simple("ack", 30, 1, NULL, -1);
}

/* The daemon goes away while a job runs and a new one binds the same port: the worker's heartbeat
 * gets `who`, and its hello carries the finished report the old daemon never acknowledged. */
static void test_worker_proto_daemon_restart(void) {
    T_REQUIRE(worker_alive());
    send_job(8, 1, "sleep 1; echo '{{\"umdq\": \"result\", \"x\": 1}}'", 0);
    T_REQUIRE(expect("started", 8, 5000) != NULL);
    char again[256];
    snprintf(again, sizeof again, "%s", endpoint);
    router_close();
    usleep(1500 * 1000); /* the job ends while no daemon listens */
    consume_all();
    T_REQUIRE(router_open(again) == 0);
    cJSON *hb = expect("hb", -1, 5000);
    T_REQUIRE(hb != NULL);
    send_to_worker(msg_new("who"));
    cJSON *h = expect("hello", -1, 3000);
    T_REQUIRE(h != NULL);
    T_CHECK(cJSON_IsNull(cJSON_GetObjectItem(h, "running")));
    const cJSON *fin = cJSON_GetObjectItem(h, "finished");
    T_REQUIRE(cJSON_GetArraySize(fin) == 1);
    const cJSON *f = cJSON_GetArrayItem(fin, 0);
    T_EQ_INT(num(f, "job"), 8);
    T_EQ_STR(str(f, "status"), "succeeded");
    T_EQ_INT(num(cJSON_GetObjectItem(f, "results"), "x"), 1);
    send_welcome();
    send_simple("ack", 8, 1, NULL, -1);
}

/* The worker numbers its metrics messages, keeps what the daemon has not confirmed (hb says how
 * much it sent), sends the unconfirmed rest again after a welcome (oldest first, the same offsets),
 * forgets what a `stored` confirms, and says in `finished` what it sent. */
static void test_worker_proto_watermarks(void) {
    T_REQUIRE(worker_alive());
    consume_all();
    send_job(40, 1,
             "for i in 1 2 3; do echo \"{{\\\"umdq\\\": \\\"metric\\\", \\\"step\\\": $i, \\\"m\\\": $i}}\"; "
             "echo line-$i; sleep 0.7; done; sleep 3",
             0);
    T_REQUIRE(expect("started", 40, 5000) != NULL);
    cJSON *m3 = NULL;
    int64_t t0 = mono_ms();
    while (!m3 && mono_ms() - t0 < 8000) {
        cJSON *m = expect("metrics", 40, 500);
        if (m && num(m, "seq") == 3) m3 = m;
    }
    T_REQUIRE(m3 != NULL);
    pump(700); /* the log of the third round */
    /* what was sent: metrics 1..3, all from 1 (nothing confirmed), log chunks end to end */
    int64_t seqs = 0, log_end = 0, first_end = -1;
    int from_ok = 1, offsets_ok = 1;
    cJSON *m;
    cJSON_ArrayForEach(m, received) {
        const char *t = str(m, "t");
        if (!t || num(m, "job") != 40) continue;
        if (strcmp(t, "metrics") == 0) {
            seqs = seqs * 10 + num(m, "seq");
            if (num(m, "from") != 1) from_ok = 0;
        } else if (strcmp(t, "log") == 0) {
            if (num(m, "offset") != log_end || num(m, "from") != 0) offsets_ok = 0;
            log_end += (int64_t)strlen(str(m, "data"));
            if (first_end < 0) first_end = log_end;
        }
    }
    T_EQ_INT(seqs, 123);
    T_CHECK(from_ok);
    T_CHECK(offsets_ok);
    T_REQUIRE(first_end > 0 && log_end > first_end);
    cJSON *hb = NULL;
    for (int i = 0; i < 10 && !hb; i++) {
        cJSON *h = expect("hb", -1, 1000);
        const cJSON *run = h ? cJSON_GetObjectItem(h, "running") : NULL;
        if (run && num(run, "seq") == 3 && num(run, "log") == log_end) hb = h;
    }
    T_CHECK_MSG(hb != NULL, "no heartbeat says what was sent (3 messages, %lld bytes)", (long long)log_end);

    /* a daemon that knows only message 1 and the first chunk: the rest comes again */
    consume_all();
    send_to_worker(msg_new("who"));
    cJSON *h = expect("hello", -1, 3000);
    T_REQUIRE(h != NULL);
    T_EQ_INT(num(cJSON_GetObjectItem(h, "running"), "seq"), 3);
    cJSON *w = msg_new("welcome");
    cJSON_AddStringToObject(w, "worker", "test/cpu0");
    cJSON_AddStringToObject(w, "epoch", "4567cdef");
    cJSON_AddNumberToObject(w, "heartbeat_ms", HB_MS);
    cJSON *marks = cJSON_AddObjectToObject(cJSON_AddArrayToObject(w, "stored"), "");
    cJSON_AddNumberToObject(marks, "job", 40);
    cJSON_AddNumberToObject(marks, "attempt", 1);
    cJSON_AddNumberToObject(marks, "seq", 1);
    cJSON_AddNumberToObject(marks, "log", (double)first_end);
    send_to_worker(w);
    for (int64_t end = mono_ms() + 500; mono_ms() < end;) pump(50);
    int64_t again = 0, again_log = first_end;
    from_ok = offsets_ok = 1;
    cJSON_ArrayForEach(m, received) {
        const char *t = str(m, "t");
        if (!t || num(m, "job") != 40 || cJSON_GetObjectItem(m, "_used")) continue;
        if (strcmp(t, "metrics") == 0) {
            again = again * 10 + num(m, "seq");
            if (num(m, "from") != 2) from_ok = 0;
        } else if (strcmp(t, "log") == 0) {
            if (num(m, "offset") != again_log || num(m, "from") != first_end) offsets_ok = 0;
            again_log += (int64_t)strlen(str(m, "data"));
        }
    }
    T_EQ_INT(again, 23);
    T_CHECK(from_ok);
    T_CHECK(offsets_ok);
    T_EQ_INT(again_log, log_end);

    /* confirmed: heartbeats no longer say what was sent, and nothing comes again */
    cJSON *st = msg_new("stored");
    cJSON_AddNumberToObject(st, "job", 40);
    cJSON_AddNumberToObject(st, "attempt", 1);
    cJSON_AddNumberToObject(st, "seq", 3);
    cJSON_AddNumberToObject(st, "log", (double)log_end);
    send_to_worker(st);
    pump(2 * HB_MS);
    consume_all();
    for (int64_t end = mono_ms() + 3 * HB_MS; mono_ms() < end;) pump(50);
    int hbs = 0, with_marks = 0;
    cJSON_ArrayForEach(m, received) {
        const char *t = str(m, "t");
        if (cJSON_GetObjectItem(m, "_used") || !t) continue;
        if (strcmp(t, "hb") == 0) {
            hbs++;
            if (cJSON_GetObjectItem(cJSON_GetObjectItem(m, "running"), "seq")) with_marks++;
        }
        T_CHECK(strcmp(t, "metrics") != 0 && strcmp(t, "log") != 0);
    }
    T_CHECK(hbs >= 2);
    T_EQ_INT(with_marks, 0);
    cJSON *f = expect("finished", 40, 8000);
    T_REQUIRE(f != NULL);
    T_EQ_STR(str(f, "status"), "succeeded");
    T_EQ_INT(num(f, "seq"), 3);
    T_EQ_INT(num(f, "log"), log_end);
    send_simple("ack", 40, 1, NULL, -1);
}

/* A name the daemon would refuse is refused at start: exit 2. */
static void test_worker_proto_bad_name(void) {
    char long_name[160];
    memset(long_name, 'n', 129);
    long_name[129] = 0;
    const char *names[] = {"a\nb", "w2-\xc3\x28", long_name, "x#y"};
    for (int i = 0; i < 4; i++) {
        pid_t pid = spawn_worker(names[i], "worker-bad-name.log");
        int st = 0;
        int64_t t0 = mono_ms();
        pid_t w = 0;
        while ((w = waitpid(pid, &st, WNOHANG)) == 0 && mono_ms() - t0 < 5000) usleep(20000);
        if (w != pid) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        T_CHECK_MSG(w == pid && WIFEXITED(st) && WEXITSTATUS(st) == 2, "name %d: not refused with exit 2", i);
    }
    char path[600], *text = NULL, err[128];
    size_t len;
    snprintf(path, sizeof path, "%s/worker-bad-name.log", tmp_root);
    T_REQUIRE(read_file(path, &text, &len, 1 << 20, err, sizeof err) == 0);
    T_CONTAINS(text, "--name must be 1 to 128 printable ASCII characters");
    free(text);
}

/* SIGTERM: the running attempt is stopped and reported preempted; after the ack the worker exits 0. */
static void test_worker_proto_sigterm(void) {
    T_REQUIRE(worker_alive());
    send_job(9, 2, "echo '{{\"umdq\": \"progress\", \"step\": 1}}'; sleep 100", 0);
    T_REQUIRE(expect("started", 9, 5000) != NULL);
    usleep(200 * 1000);
    kill(worker_pid, SIGTERM);
    cJSON *f = expect("finished", 9, 6000);
    T_REQUIRE(f != NULL);
    T_EQ_STR(str(f, "status"), "preempted");
    send_simple("ack", 9, 2, NULL, -1);
    int st = 0;
    int64_t t0 = mono_ms();
    pid_t w = 0;
    while ((w = waitpid(worker_pid, &st, WNOHANG)) == 0 && mono_ms() - t0 < 5000) usleep(20000);
    T_REQUIRE(w == worker_pid);
    worker_pid = 0;
    T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_worker_proto_reject(void) {
    pid_t pid = spawn_worker("test/cpu1", "worker-rejected.log");
    worker_pid = pid;
    cJSON *h = expect("hello", -1, 10000);
    T_REQUIRE(h != NULL);
    T_EQ_STR(str(h, "name"), "test/cpu1");
    cJSON *m = msg_new("reject");
    cJSON_AddStringToObject(m, "error", "name test/cpu1 is in use");
    send_to_worker(m);
    int st = 0;
    int64_t t0 = mono_ms();
    pid_t w = 0;
    while ((w = waitpid(pid, &st, WNOHANG)) == 0 && mono_ms() - t0 < 5000) usleep(20000);
    T_REQUIRE(w == pid);
    worker_pid = 0;
    T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    char path[600], *text = NULL, err[128];
    size_t len;
    snprintf(path, sizeof path, "%s/worker-rejected.log", tmp_root);
    T_REQUIRE(read_file(path, &text, &len, 1 << 20, err, sizeof err) == 0);
    T_CONTAINS(text, "name test/cpu1 is in use");
    free(text);
}

/* A hello refused because the name is in use (the daemon has not yet noticed that this worker's
 * predecessor is dead) is said again with back-off, without heartbeats meanwhile; a welcome ends
 * the retries. Refused for ~10 s, the worker gives up: exit 1, saying why. */
static void test_worker_proto_reject_name_in_use(void) {
    cJSON_Delete(received);
    received = cJSON_CreateArray();
    pid_t pid = spawn_worker("test/cpu2", "worker-name-in-use.log");
    worker_pid = pid;
    cJSON *h = expect("hello", -1, 10000);
    T_REQUIRE(h != NULL);
    T_EQ_STR(str(h, "name"), "test/cpu2");
    int64_t t0 = mono_ms();
    for (int i = 0; i < 2; i++) {
        cJSON *m = msg_new("reject");
        cJSON_AddStringToObject(m, "error", "worker name test/cpu2 is already in use by a live worker");
        cJSON_AddStringToObject(m, "code", "name_in_use");
        send_to_worker(m);
        h = expect("hello", -1, 3000);
        T_REQUIRE(h != NULL);
    }
    T_CHECK_MSG(mono_ms() - t0 >= 600 && mono_ms() - t0 < 3000, "two retries after %lld ms",
                (long long)(mono_ms() - t0));
    T_EQ_INT(count_type("hb", -1), 0);
    send_welcome();
    T_REQUIRE(expect("hb", -1, 3000) != NULL);
    T_CHECK(worker_alive());
    kill(pid, SIGTERM);
    int st = 0;
    T_REQUIRE(waitpid(pid, &st, 0) == pid);
    worker_pid = 0;
    T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* refused every time: gives up after about 10 s */
    consume_all();
    pid = spawn_worker("test/cpu3", "worker-name-in-use.log");
    worker_pid = pid;
    t0 = mono_ms();
    int hellos = 0;
    pid_t w = 0;
    while ((w = waitpid(pid, &st, WNOHANG)) == 0 && mono_ms() - t0 < 20000) {
        if (expect("hello", -1, 100)) {
            hellos++;
            cJSON *m = msg_new("reject");
            cJSON_AddStringToObject(m, "error", "worker name test/cpu3 is already in use by a live worker");
            cJSON_AddStringToObject(m, "code", "name_in_use");
            send_to_worker(m);
        }
    }
    T_REQUIRE(w == pid);
    worker_pid = 0;
    int64_t took = mono_ms() - t0;
    T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    T_CHECK_MSG(took >= 9000 && took < 14000, "gave up after %lld ms", (long long)took);
    T_CHECK_MSG(hellos >= 5 && hellos <= 12, "%d hellos", hellos);
    char path[600], *text = NULL, err[128];
    size_t len;
    snprintf(path, sizeof path, "%s/worker-name-in-use.log", tmp_root);
    T_REQUIRE(read_file(path, &text, &len, 1 << 20, err, sizeof err) == 0);
    T_CONTAINS(text, "saying hello again in");
    T_CONTAINS(text, "still refuses this worker after 10 s");
    free(text);
}

/* --all-gpus without a visible GPU: says so and runs one CPU worker. */
static void test_worker_proto_all_gpus_none(void) {
    char logpath[512], workdir[512];
    snprintf(logpath, sizeof logpath, "%s/worker-allgpus.log", tmp_root);
    snprintf(workdir, sizeof workdir, "%s/work", tmp_root);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(logpath, "a", stderr);
        (void)f;
        setenv("CUDA_VISIBLE_DEVICES", "", 1);
        execl(worker_bin, "umdq-worker", "--connect", endpoint, "--all-gpus", "--name", "test/cpu9",
              "--workdir", workdir, (char *)NULL);
        _exit(127);
    }
    worker_pid = pid;
    consume_all();
    cJSON *h = expect("hello", -1, 10000);
    T_REQUIRE(h != NULL);
    T_EQ_STR(str(h, "name"), "test/cpu9");
    T_EQ_STR(str(h, "device"), "cpu");
    kill(pid, SIGTERM);
    int st = 0;
    T_REQUIRE(waitpid(pid, &st, 0) == pid);
    worker_pid = 0;
    T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *text = NULL, err[128];
    size_t len;
    T_REQUIRE(read_file(logpath, &text, &len, 1 << 20, err, sizeof err) == 0);
    T_CONTAINS(text, "no GPU visible");
    free(text);
}

/* The --all-gpus supervisor with two GPU ids: a worker per GPU (backend cuda, device cuda:N, the
 * attempt sees CUDA_VISIBLE_DEVICES=N), a killed worker is started again, SIGTERM stops all. */
static void test_worker_proto_supervise(void) {
    char logpath[512], workdir[512];
    snprintf(logpath, sizeof logpath, "%s/supervisor.log", tmp_root);
    snprintf(workdir, sizeof workdir, "%s/work", tmp_root);
    consume_all();
    pid_t sup = fork();
    if (sup == 0) {
        log_init("test-supervisor", logpath, LOG_INFO);
        const char *args[] = {"umdq-worker", "--connect", endpoint, "--workdir", workdir, "--log", logpath, NULL};
        supervise_gpu gpus[2] = {{"0", "test/gpu0"}, {"1", "test/gpu1"}};
        char err[256];
        int rc = supervise_run(worker_bin, args, gpus, 2, 5000, err, sizeof err);
        _exit(rc == 0 ? 0 : 1);
    }
    T_REQUIRE(sup > 0);
    cJSON *a = expect("hello", -1, 10000), *b = expect("hello", -1, 10000);
    T_REQUIRE(a && b);
    if (strcmp(str(a, "name"), "test/gpu0") != 0) {
        cJSON *t = a;
        a = b;
        b = t;
    }
    T_EQ_STR(str(a, "name"), "test/gpu0");
    T_EQ_STR(str(b, "name"), "test/gpu1");
    T_EQ_STR(str(b, "device"), "cuda:1");
    T_EQ_STR(str(b, "backend"), "cuda");
    const cJSON *kinds = cJSON_GetObjectItem(cJSON_GetObjectItem(b, "capabilities"), "kinds");
    T_EQ_INT(cJSON_GetArraySize(kinds), umd_backend_available("cuda") ? 2 : 1);
    pid_t pa = (pid_t)num(a, "pid");
    char rid_b[256];
    snprintf(rid_b, sizeof rid_b, "%s", str(b, "_rid"));

    send_to_rid(rid_b, job_msg(20, 1, "echo gpu=$CUDA_VISIBLE_DEVICES", 0));
    cJSON *f = expect("finished", 20, 10000);
    T_REQUIRE(f != NULL);
    T_EQ_STR(str(f, "status"), "succeeded");
    int log_ok = 0;
    cJSON *m;
    cJSON_ArrayForEach(m, received) {
        const char *t = str(m, "t");
        if (t && strcmp(t, "log") == 0 && num(m, "job") == 20 && strstr(str(m, "data"), "gpu=1\n")) log_ok = 1;
    }
    T_CHECK(log_ok);
    send_to_rid(rid_b, cJSON_Parse("{\"t\": \"ack\", \"v\": 1, \"job\": 20, \"attempt\": 1}"));
    if (!umd_backend_available("cuda")) {
        cJSON *u = job_msg(21, 1, "unused", 0);
        cJSON_ReplaceItemInObject(u, "kind", cJSON_CreateString("umd"));
        send_to_rid(rid_b, u);
        f = expect("finished", 21, 10000);
        T_REQUIRE(f != NULL);
        T_EQ_STR(str(f, "status"), "failed");
        T_CONTAINS(str(f, "error"), "no cuda backend");
        send_to_rid(rid_b, cJSON_Parse("{\"t\": \"ack\", \"v\": 1, \"job\": 21, \"attempt\": 1}"));
    }

    kill(pa, SIGKILL);
    cJSON *again = NULL;
    int64_t t0 = mono_ms();
    while (mono_ms() - t0 < 8000) {
        again = expect("hello", -1, 500);
        if (again && strcmp(str(again, "name"), "test/gpu0") == 0) break;
        again = NULL;
    }
    T_REQUIRE(again != NULL);
    T_CHECK(num(again, "pid") != pa);

    kill(sup, SIGTERM);
    int st = 0;
    pid_t w = 0;
    t0 = mono_ms();
    while ((w = waitpid(sup, &st, WNOHANG)) == 0 && mono_ms() - t0 < 8000) usleep(20000);
    if (w != sup) {
        kill(sup, SIGKILL);
        waitpid(sup, NULL, 0);
    }
    T_REQUIRE(w == sup);
    T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    T_CHECK(kill((pid_t)num(again, "pid"), 0) != 0);
    T_CHECK(kill((pid_t)num(b, "pid"), 0) != 0);
}

int main(void) {
    const char *build = getenv("UMDQ_BUILD");
    snprintf(worker_bin, sizeof worker_bin, "%s/bin/umdq-worker", build ? build : "build");
    if (access(worker_bin, X_OK) != 0) {
        printf("SKIP test_worker_protocol: %s is not built\n", worker_bin);
        return 0;
    }
    snprintf(tmp_root, sizeof tmp_root, "%s/umdq-worker-proto-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp_root)) {
        printf("FAIL test_worker_protocol: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    zctx = zmq_ctx_new();
    received = cJSON_CreateArray();
    if (router_open("tcp://127.0.0.1:*") != 0) {
        printf("FAIL test_worker_protocol: bind: %s\n", zmq_strerror(errno));
        return 1;
    }
    T_RUN(test_worker_proto_hello);
    T_RUN(test_worker_proto_job_succeeds);
    T_RUN(test_worker_proto_busy_who_cancel);
    T_RUN(test_worker_proto_failed_and_stalled);
    T_RUN(test_worker_proto_umd_job);
    T_RUN(test_worker_proto_daemon_restart);
    T_RUN(test_worker_proto_watermarks);
    T_RUN(test_worker_proto_sigterm);
    T_RUN(test_worker_proto_reject);
    T_RUN(test_worker_proto_bad_name);
    T_RUN(test_worker_proto_reject_name_in_use);
    T_RUN(test_worker_proto_all_gpus_none);
    T_RUN(test_worker_proto_supervise);
    if (worker_pid > 0) {
        kill(worker_pid, SIGKILL);
        waitpid(worker_pid, NULL, 0);
    }
    if (t_nfail) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "tail -n 40 %s/worker.log", tmp_root);
        if (system(cmd) != 0) printf("(no worker log)\n");
    }
    router_close();
    zmq_ctx_term(zctx);
    cJSON_Delete(received);
    nftw(tmp_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return t_done();
}
