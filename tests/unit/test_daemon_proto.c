/* test_daemon_proto.c: the real umdqd binary in a temporary home, driven over HTTP (libcurl) and
 * by a real ZeroMQ DEALER that follows docs/protocol.md as a worker would.
 * umdq-uses: daemon common */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include "jsonx.h"
#include "t.h"
#include "util.h"

static char tmpdir[256];
static char umdqd_bin[1024];
static void *zctx;
/* what a test left behind when it stopped early: cleaned up after each test */
static pid_t live_pids[16];
static void *live_socks[16];

static void track(void **slots, int n, void *v, int add) {
    for (int i = 0; i < n; i++) {
        if (add && !slots[i]) {
            slots[i] = v;
            return;
        }
        if (!add && slots[i] == v) {
            slots[i] = NULL;
            return;
        }
    }
}

/* ---- processes and files -------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void need_daemon(void) {
    if (!umdqd_bin[0] || access(umdqd_bin, X_OK) != 0)
        T_SKIP("umdqd binary not found (set UMDQ_BUILD; tests/run.sh does)");
}

typedef struct {
    pid_t pid;
    char home[512];
    char url[256];
    char zmq[256];
    char token[80];
    int http_port, zmq_port;
} daemon_proc;

/* Run umdqd with args (NULL-terminated, after the program name); stdout+stderr to out_path. */
static pid_t spawn(const char *const *args, const char *out_path) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        const char *argv[16];
        int n = 0;
        argv[n++] = umdqd_bin;
        for (int i = 0; args[i] && n < 15; i++) argv[n++] = args[i];
        argv[n] = NULL;
        execv(umdqd_bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Wait for a child; its exit status, or -1 if it has not exited within ms. */
static int wait_exit(pid_t pid, int ms) {
    for (int i = 0; i < ms / 10; i++) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    return -1;
}

/* --heartbeat-ms for the next daemon_start (NULL: the default) */
static const char *next_heartbeat_ms;

/* Start umdqd in d->home (tagged by tag) on the given addresses; wait for umdqd.json. 0 or -1. */
static int daemon_start(daemon_proc *d, const char *tag, const char *http, const char *zmq) {
    char info[600], out[600];
    if (!d->home[0]) snprintf(d->home, sizeof d->home, "%s/%s", tmpdir, tag);
    snprintf(info, sizeof info, "%s/umdqd.json", d->home);
    snprintf(out, sizeof out, "%s.out", d->home);
    unlink(info);
    const char *args[] = {"--home", d->home, "--http", http, "--zmq", zmq,
                          next_heartbeat_ms ? "--heartbeat-ms" : NULL, next_heartbeat_ms, NULL};
    next_heartbeat_ms = NULL;
    d->pid = spawn(args, out);
    for (int i = 0; i < 16; i++)
        if (!live_pids[i]) {
            live_pids[i] = d->pid;
            break;
        }
    for (int i = 0; i < 1000; i++) {
        char *text = NULL, err[256];
        size_t len;
        if (read_file(info, &text, &len, 1 << 16, err, sizeof err) == 0) {
            cJSON *j = cJSON_Parse(text);
            free(text);
            const cJSON *u = cJSON_GetObjectItem(j, "http"), *z = cJSON_GetObjectItem(j, "zmq");
            if (cJSON_IsString(u) && cJSON_IsString(z)) {
                snprintf(d->url, sizeof d->url, "%s", u->valuestring);
                snprintf(d->zmq, sizeof d->zmq, "%s", z->valuestring);
                d->http_port = atoi(strrchr(d->url, ':') + 1);
                d->zmq_port = atoi(strrchr(d->zmq, ':') + 1);
                cJSON_Delete(j);
                snprintf(info, sizeof info, "%s/token", d->home);
                if (read_file(info, &text, &len, 1024, err, sizeof err) != 0) return -1;
                text[strcspn(text, "\n")] = 0;
                snprintf(d->token, sizeof d->token, "%s", text);
                free(text);
                return 0;
            }
            cJSON_Delete(j);
        }
        if (wait_exit(d->pid, 10) >= 0) return -1;
    }
    return -1;
}

static void daemon_kill(daemon_proc *d, int sig) {
    if (d->pid <= 0) return;
    for (int i = 0; i < 16; i++)
        if (live_pids[i] == d->pid) live_pids[i] = 0;
    kill(d->pid, sig);
    if (wait_exit(d->pid, 10000) < 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
    }
    d->pid = 0;
}

/* ---- HTTP ------------------------------------------------------------------------------------------ */

typedef struct {
    long code;
    char *body;  /* owned */
    cJSON *json; /* owned; NULL when the body is not JSON */
} http_reply;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    strbuf_append((strbuf *)ud, p, size * n);
    return size * n;
}

static void reply_free(http_reply *r) {
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

/* method path [body]; token NULL = none; host NULL = default. */
static http_reply http_call(const daemon_proc *d, const char *method, const char *path, const char *body,
                            const char *token, const char *host) {
    http_reply r = {0, NULL, NULL};
    char url[600], auth[200], hosthdr[300];
    strbuf b;
    strbuf_init(&b);
    CURL *c = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    snprintf(url, sizeof url, "%s%s", d->url, path);
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (host) {
        snprintf(hosthdr, sizeof hosthdr, "Host: %s", host);
        hdrs = curl_slist_append(hdrs, hosthdr);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.code);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    strbuf_append(&b, "", 0);
    r.body = strbuf_steal(&b);
    if (r.body) r.json = cJSON_Parse(r.body);
    return r;
}

static http_reply api(const daemon_proc *d, const char *method, const char *path, const char *body) {
    return http_call(d, method, path, body, d->token, NULL);
}

static double jnum(const cJSON *o, const char *path) {
    const cJSON *v = json_path_get(o, path);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static const char *jstr(const cJSON *o, const char *path) {
    const cJSON *v = json_path_get(o, path);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* GET /api/jobs/ID as JSON (caller deletes). */
static cJSON *get_job(const daemon_proc *d, long long job) {
    char path[64];
    snprintf(path, sizeof path, "/api/jobs/%lld", job);
    http_reply r = api(d, "GET", path, NULL);
    cJSON *j = r.json;
    r.json = NULL;
    reply_free(&r);
    return j;
}

/* Submit a sweep of kind command (JSON text); the new sweep id, or -1. */
static long long submit(const daemon_proc *d, const char *spec) {
    http_reply r = api(d, "POST", "/api/sweeps", spec);
    long long id = r.code == 201 || r.code == 200 ? (long long)jnum(r.json, "sweep.id") : -1;
    T_CHECK_MSG(id > 0, "submit answered %ld: %s", r.code, r.body ? r.body : "");
    reply_free(&r);
    return id;
}

/* ---- the worker peer -------------------------------------------------------------------------------- */

typedef struct {
    void *sock;
    char name[160];
    cJSON *inbox[64];
    int ninbox;
    /* what heartbeats announce */
    long long job, attempt, step;
    char lease[40];
    int64_t next_hb_ms;
    int heartbeats; /* 0: silent */
    char host[128]; /* what hello says: "testhost" unless set */
    long pid;       /* ... and 4321 */
} peer;

static void peer_open(peer *p, const char *endpoint, const char *name) {
    memset(p, 0, sizeof *p);
    char rid[200], hex[17];
    random_hex(hex, 16);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(rid, sizeof rid, "%s#%s", name, hex);
    p->sock = zmq_socket(zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(p->sock, ZMQ_ROUTING_ID, rid, strlen(rid));
    zmq_connect(p->sock, endpoint);
    track(live_socks, 16, p->sock, 1);
    p->heartbeats = 1;
}

static void peer_close(peer *p) {
    for (int i = 0; i < p->ninbox; i++) cJSON_Delete(p->inbox[i]);
    p->ninbox = 0;
    if (p->sock) {
        track(live_socks, 16, p->sock, 0);
        zmq_close(p->sock);
    }
    p->sock = NULL;
}

static void peer_send_raw(peer *p, const void *data, size_t len) { zmq_send(p->sock, data, len, 0); }

static void peer_send(peer *p, cJSON *m) { /* consumes m */
    char *text = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    peer_send_raw(p, text, strlen(text));
    free(text);
}

static cJSON *msg_new(const char *type) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "t", type);
    cJSON_AddNumberToObject(m, "v", 1);
    return m;
}

static cJSON *running_of(peer *p) {
    if (!p->job) return cJSON_CreateNull();
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "job", (double)p->job);
    cJSON_AddNumberToObject(r, "attempt", (double)p->attempt);
    cJSON_AddStringToObject(r, "lease", p->lease);
    cJSON_AddNumberToObject(r, "step", (double)p->step);
    return r;
}

static void peer_hello(peer *p, cJSON *finished) { /* consumes finished (may be NULL) */
    cJSON *m = msg_new("hello");
    cJSON_AddStringToObject(m, "name", p->name);
    cJSON_AddStringToObject(m, "host", p->host[0] ? p->host : "testhost");
    cJSON_AddStringToObject(m, "device", "cpu");
    cJSON_AddStringToObject(m, "backend", "cpu");
    cJSON_AddNumberToObject(m, "pid", p->pid ? (double)p->pid : 4321);
    cJSON *caps = cJSON_AddObjectToObject(m, "capabilities");
    cJSON *kinds = cJSON_AddArrayToObject(caps, "kinds");
    cJSON_AddItemToArray(kinds, cJSON_CreateString("command"));
    cJSON_AddItemToObject(m, "running", running_of(p));
    cJSON_AddItemToObject(m, "finished", finished ? finished : cJSON_CreateArray());
    peer_send(p, m);
}

static void peer_hb(peer *p) {
    cJSON *m = msg_new("hb");
    cJSON_AddItemToObject(m, "running", running_of(p));
    peer_send(p, m);
}

/* A report about the current attempt: {t, v, job, attempt, lease} to add fields to. */
static cJSON *report(peer *p, const char *type) {
    cJSON *m = msg_new(type);
    cJSON_AddNumberToObject(m, "job", (double)p->job);
    cJSON_AddNumberToObject(m, "attempt", (double)p->attempt);
    cJSON_AddStringToObject(m, "lease", p->lease);
    return m;
}

static cJSON *finished_body(peer *p, const char *status) {
    cJSON *m = report(p, "finished");
    cJSON_AddStringToObject(m, "status", status);
    cJSON_AddNumberToObject(m, "exit_code", 0);
    cJSON_AddNullToObject(m, "signal");
    cJSON_AddStringToObject(m, "error", "");
    cJSON *res = cJSON_AddObjectToObject(m, "results");
    cJSON_AddNumberToObject(res, "final", 42);
    return m;
}

/* Send `finished` for the current attempt and, as a worker does, stop announcing it. */
static void peer_finish(peer *p, const char *status) {
    peer_send(p, finished_body(p, status));
    p->job = 0;
}

/* Receive for up to ms (sending heartbeats every 300 ms while p->heartbeats), then return the
 * first message of type (owned by the caller) or NULL. Messages of other types stay in the inbox. */
static cJSON *peer_wait(peer *p, const char *type, int ms) {
    int64_t end = mono_ms() + ms;
    for (;;) {
        for (int i = 0; i < p->ninbox; i++) {
            const cJSON *t = cJSON_GetObjectItem(p->inbox[i], "t");
            if (cJSON_IsString(t) && strcmp(t->valuestring, type) == 0) {
                cJSON *m = p->inbox[i];
                memmove(&p->inbox[i], &p->inbox[i + 1], (size_t)(p->ninbox - i - 1) * sizeof *p->inbox);
                p->ninbox--;
                return m;
            }
        }
        int64_t now = mono_ms();
        if (now >= end) return NULL;
        if (p->heartbeats && now >= p->next_hb_ms) {
            peer_hb(p);
            p->next_hb_ms = now + 300;
        }
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        long wait = end - now < 50 ? (long)(end - now) : 50;
        if (zmq_poll(&it, 1, wait) > 0) {
            char buf[1 << 16];
            int n = zmq_recv(p->sock, buf, sizeof buf - 1, 0);
            if (n < 0) continue;
            buf[n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 1] = 0;
            cJSON *m = cJSON_Parse(buf);
            if (!m) continue;
            if (p->ninbox == 64) {
                cJSON_Delete(p->inbox[0]);
                memmove(&p->inbox[0], &p->inbox[1], 63 * sizeof *p->inbox);
                p->ninbox--;
            }
            p->inbox[p->ninbox++] = m;
        }
    }
}

/* Drop every message of type from the inbox (e.g. `who` answered already). */
static void peer_forget(peer *p, const char *type) {
    cJSON *m;
    while ((m = peer_wait(p, type, 0)) != NULL) cJSON_Delete(m);
}

/* Take the `job` message into the peer's running state; 0 when none came within ms. */
static int peer_take_job(peer *p, int ms, cJSON **job_out) {
    cJSON *j = peer_wait(p, "job", ms);
    if (!j) return 0;
    p->job = (long long)jnum(j, "job");
    p->attempt = (long long)jnum(j, "attempt");
    p->step = 0;
    snprintf(p->lease, sizeof p->lease, "%s", jstr(j, "lease"));
    if (job_out) *job_out = j;
    else cJSON_Delete(j);
    return 1;
}

static void peer_welcomed(peer *p) {
    peer_hello(p, NULL);
    cJSON *w = peer_wait(p, "welcome", 5000);
    T_CHECK_MSG(w != NULL, "no welcome for %s", p->name);
    cJSON_Delete(w);
}

#define SPEC1 "{\"name\": \"%s\", \"base\": {\"kind\": \"command\", \"command\": \"echo {params.x}\", " \
              "\"params\": {\"x\": 0}}, \"grid\": {\"params.x\": [%s]}}"

static long long submit_n(const daemon_proc *d, const char *name, const char *xs) {
    char spec[512];
    snprintf(spec, sizeof spec, SPEC1, name, xs);
    return submit(d, spec);
}

/* ---- tests ------------------------------------------------------------------------------------------ */

static void test_daemon_proto_job_life(void) {
    need_daemon();
    daemon_proc d = {0};
    T_REQUIRE(daemon_start(&d, "life", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    peer p;
    peer_open(&p, d.zmq, "t/life");
    peer_hello(&p, NULL);
    cJSON *w = peer_wait(&p, "welcome", 5000);
    T_REQUIRE(w != NULL);
    T_EQ_STR(jstr(w, "worker"), "t/life");
    T_EQ_INT((long long)jnum(w, "heartbeat_ms"), 1000);
    T_EQ_STR(jstr(w, "token"), d.token);
    T_EQ_STR(jstr(w, "http"), d.url);
    T_EQ_INT((int)strlen(jstr(w, "epoch")) > 0, 1);
    cJSON_Delete(w);

    long long sid = submit_n(&d, "life", "7");
    T_REQUIRE(sid > 0);
    cJSON *job = NULL;
    T_REQUIRE(peer_take_job(&p, 5000, &job));
    T_EQ_INT((long long)jnum(job, "attempt"), 1);
    T_EQ_INT((int)strlen(jstr(job, "lease")), 32);
    T_EQ_STR(jstr(job, "kind"), "command");
    T_EQ_INT((long long)jnum(job, "sweep"), sid);
    T_EQ_INT((long long)jnum(job, "config.params.x"), 7);
    T_EQ_INT((long long)jnum(job, "stall_timeout"), 0);
    T_CHECK(cJSON_IsNumber(cJSON_GetObjectItem(job, "seed")));
    cJSON_Delete(job);

    cJSON *m = report(&p, "started");
    cJSON_AddNumberToObject(m, "pid", 999);
    peer_send(&p, m);
    m = report(&p, "metrics");
    cJSON_AddItemToObject(m, "points", cJSON_Parse("[[\"loss\",1,0.5],[\"loss\",2,0.25],[\"acc\",2,0.75]]"));
    peer_send(&p, m);
    m = report(&p, "metrics"); /* a replay is harmless */
    cJSON_AddItemToObject(m, "points", cJSON_Parse("[[\"loss\",1,0.5]]"));
    peer_send(&p, m);
    m = report(&p, "result");
    cJSON_AddItemToObject(m, "results", cJSON_Parse("{\"probe_acc\": 0.81, \"net\": \"v1\"}"));
    peer_send(&p, m);
    m = report(&p, "log");
    cJSON_AddNumberToObject(m, "offset", 0);
    cJSON_AddStringToObject(m, "data", "line one\n");
    peer_send(&p, m);
    m = report(&p, "log");
    cJSON_AddNumberToObject(m, "offset", 0);
    cJSON_AddStringToObject(m, "data", "line one\nline two\n");
    peer_send(&p, m);
    p.step = 2;
    long long job1 = p.job, att1 = p.attempt;
    char lease1[40];
    snprintf(lease1, sizeof lease1, "%s", p.lease);
    peer_finish(&p, "succeeded");
    cJSON *ack = peer_wait(&p, "ack", 5000);
    T_REQUIRE(ack != NULL);
    T_EQ_INT((long long)jnum(ack, "job"), job1);
    T_EQ_INT((long long)jnum(ack, "attempt"), 1);
    cJSON_Delete(ack);

    cJSON *j = get_job(&d, job1);
    T_EQ_STR(jstr(j, "job.state"), "SUCCEEDED");
    T_EQ_INT((long long)jnum(j, "job.attempts"), 1);
    T_EQ_STR(jstr(j, "job.worker"), "t/life");
    T_NEAR(jnum(j, "job.results.probe_acc"), 0.81, 1e-12, 0);
    T_EQ_STR(jstr(j, "job.results.net"), "v1");
    T_EQ_INT((long long)jnum(j, "job.results.final"), 42);
    const cJSON *px = cJSON_GetObjectItem(json_path_get(j, "job.params"), "params.x");
    T_EQ_INT(cJSON_IsNumber(px) ? px->valueint : -1, 7);
    const cJSON *atts = cJSON_GetObjectItem(j, "attempts");
    T_EQ_INT(cJSON_GetArraySize(atts), 1);
    T_EQ_STR(jstr(cJSON_GetArrayItem(atts, 0), "state"), "SUCCEEDED");
    cJSON_Delete(j);

    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%lld/metrics?key=loss", job1);
    http_reply r = api(&d, "GET", path, NULL);
    T_EQ_INT(r.code, 200);
    const cJSON *series = cJSON_GetObjectItem(r.json, "series");
    T_EQ_INT(cJSON_GetArraySize(series), 1);
    T_EQ_STR(jstr(cJSON_GetArrayItem(series, 0), "key"), "loss");
    T_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(series, 0), "points")), 2);
    reply_free(&r);
    snprintf(path, sizeof path, "/api/jobs/%lld/log", job1);
    r = api(&d, "GET", path, NULL);
    T_EQ_INT(r.code, 200);
    T_EQ_STR(jstr(r.json, "data"), "== attempt 1 on t/life ==\nline one\nline two\n");
    T_EQ_STR(jstr(r.json, "state"), "SUCCEEDED");
    reply_free(&r);
    snprintf(path, sizeof path, "/api/sweeps/%lld", sid);
    r = api(&d, "GET", path, NULL);
    T_EQ_STR(jstr(r.json, "sweep.state"), "DONE");
    T_EQ_INT((long long)jnum(r.json, "sweep.counts.SUCCEEDED"), 1);
    reply_free(&r);

    /* reports with a stale lease: refused and answered with cancel (stale); a stale finished is acked */
    p.job = job1;
    p.attempt = att1;
    snprintf(p.lease, sizeof p.lease, "%s", "0123456789abcdef0123456789abcdef");
    cJSON *m2 = report(&p, "metrics");
    cJSON_AddItemToObject(m2, "points", cJSON_Parse("[[\"loss\",3,9.0]]"));
    p.job = 0;
    peer_send(&p, m2);
    cJSON *cancel = peer_wait(&p, "cancel", 5000);
    T_REQUIRE(cancel != NULL);
    T_EQ_STR(jstr(cancel, "reason"), "stale");
    cJSON_Delete(cancel);
    p.job = job1; /* the right lease, but the attempt has ended */
    snprintf(p.lease, sizeof p.lease, "%s", lease1);
    peer_finish(&p, "failed");
    ack = peer_wait(&p, "ack", 5000);
    T_CHECK(ack != NULL);
    cJSON_Delete(ack);
    j = get_job(&d, job1);
    T_EQ_STR(jstr(j, "job.state"), "SUCCEEDED");
    cJSON_Delete(j);
    snprintf(path, sizeof path, "/api/jobs/%lld/metrics", job1);
    r = api(&d, "GET", path, NULL);
    T_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "series")), 2); /* acc and loss; no step 3 */
    T_CHECK(strstr(r.body, "[3,") == NULL);
    reply_free(&r);
    peer_forget(&p, "cancel");

    /* user cancel of a running job reaches the worker; requeue runs it again */
    long long sid2 = submit_n(&d, "life2", "1");
    T_REQUIRE(sid2 > 0);
    T_REQUIRE(peer_take_job(&p, 5000, NULL));
    snprintf(path, sizeof path, "/api/jobs/%lld/cancel", p.job);
    r = api(&d, "POST", path, "");
    T_EQ_INT(r.code, 200);
    T_EQ_STR(jstr(r.json, "state"), "CANCELLED");
    reply_free(&r);
    cancel = peer_wait(&p, "cancel", 5000);
    T_REQUIRE(cancel != NULL);
    T_EQ_STR(jstr(cancel, "reason"), "cancelled");
    T_EQ_INT((long long)jnum(cancel, "job"), p.job);
    cJSON_Delete(cancel);
    long long job2 = p.job;
    peer_finish(&p, "cancelled");
    ack = peer_wait(&p, "ack", 5000);
    T_CHECK(ack != NULL);
    cJSON_Delete(ack);
    j = get_job(&d, job2);
    T_EQ_STR(jstr(j, "job.state"), "CANCELLED");
    cJSON_Delete(j);
    snprintf(path, sizeof path, "/api/jobs/%lld/requeue", job2);
    r = api(&d, "POST", path, "");
    T_EQ_INT(r.code, 200);
    reply_free(&r);
    T_REQUIRE(peer_take_job(&p, 5000, NULL));
    T_EQ_INT(p.job, job2);
    T_EQ_INT(p.attempt, 2);
    /* `busy`: the job goes back uncounted and comes again */
    m = report(&p, "busy");
    peer_send(&p, m);
    p.job = 0;
    T_REQUIRE(peer_take_job(&p, 5000, NULL));
    T_EQ_INT(p.job, job2);
    T_EQ_INT(p.attempt, 2);
    peer_finish(&p, "succeeded");
    ack = peer_wait(&p, "ack", 5000);
    T_CHECK(ack != NULL);
    cJSON_Delete(ack);
    j = get_job(&d, job2);
    T_EQ_STR(jstr(j, "job.state"), "SUCCEEDED");
    cJSON_Delete(j);

    /* /metrics: Prometheus text that counts the dispatches */
    r = api(&d, "GET", "/metrics", NULL);
    T_EQ_INT(r.code, 200);
    int lines = 0, bad = 0;
    double last_bucket = -1, inf = -1, count = -1;
    for (char *save = NULL, *line = strtok_r(r.body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lines++;
        if (line[0] == '#') {
            if (strncmp(line, "# HELP ", 7) != 0 && strncmp(line, "# TYPE ", 7) != 0) bad++;
            continue;
        }
        char name[128], rest[256];
        double v;
        /* name{labels} value | name value */
        if (sscanf(line, "%127[a-zA-Z0-9_:]%255[^ ] %lf", name, rest, &v) == 3) {
            if (rest[0] != '{' || rest[strlen(rest) - 1] != '}') bad++;
        } else if (sscanf(line, "%127[a-zA-Z0-9_:] %lf", name, &v) != 2) {
            bad++;
            continue;
        }
        if (strcmp(name, "umdq_dispatch_latency_seconds_bucket") == 0) {
            if (v < last_bucket) bad++;
            last_bucket = v;
            if (strstr(line, "+Inf")) inf = v;
        }
        if (strcmp(name, "umdq_dispatch_latency_seconds_count") == 0) count = v;
    }
    T_EQ_INT(bad, 0);
    T_CHECK(lines > 20);
    T_CHECK(count >= 4); /* jobs of life, life2, the requeue and the one after busy */
    T_EQ_INT((long long)inf, (long long)count);
    reply_free(&r);
    r = api(&d, "GET", "/metrics", NULL);
    T_CONTAINS(r.body, "umdq_jobs{state=\"SUCCEEDED\"} 2\n");
    T_CONTAINS(r.body, "umdq_workers{state=\"IDLE\"} 1\n");
    T_CONTAINS(r.body, "umdq_uptime_seconds ");
    reply_free(&r);
    peer_close(&p);
    daemon_kill(&d, SIGTERM);
    char info[600];
    snprintf(info, sizeof info, "%s/umdqd.json", d.home);
    T_CHECK(access(info, F_OK) != 0); /* removed on a clean stop */
}

static void test_daemon_proto_malformed_input(void) {
    need_daemon();
    daemon_proc d = {0};
    T_REQUIRE(daemon_start(&d, "garbage", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    peer p;
    peer_open(&p, d.zmq, "t/garbage");
    p.heartbeats = 0;
    const char *bad[] = {
        "not json", "[1,2,3]", "{\"v\":1}", "{\"t\":\"hb\"}", "{\"t\":\"warp\",\"v\":1}",
        "{\"t\":\"started\",\"v\":1}", "{\"t\":\"metrics\",\"v\":1,\"job\":\"x\",\"attempt\":1,\"lease\":\"a\"}",
        "{\"t\":\"finished\",\"v\":1,\"job\":1}", "{\"t\":\"log\",\"v\":1,\"job\":1,\"attempt\":1,\"lease\":\"a\"}",
        "{\"t\":\"hello\",\"v\":1}", "{\"t\":\"hb\",\"v\":1,\"running\":{\"job\":\"no\"}}", "", "\xff\xfe",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) peer_send_raw(&p, bad[i], strlen(bad[i]));
    /* two frames in one message */
    const char *hb2 = "{\"t\":\"hb\",\"v\":1,\"running\":null}";
    zmq_send(p.sock, hb2, strlen(hb2), ZMQ_SNDMORE);
    zmq_send(p.sock, "extra", 5, 0);
    /* larger than PROTO_MAX_MSG */
    size_t big = (4u << 20) + 100;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    memcpy(huge, "{\"t\":\"hb\",\"v\":1,\"x\":\"", 21);
    peer_send_raw(&p, huge, big);
    free(huge);
    /* the hello without its fields above was rejected with a reason; so is another protocol version */
    cJSON *rej = peer_wait(&p, "reject", 5000);
    T_REQUIRE(rej != NULL);
    T_CONTAINS(jstr(rej, "error"), "name");
    cJSON_Delete(rej);
    const char *v99 = "{\"t\":\"hello\",\"v\":99,\"name\":\"x\"}";
    peer_send_raw(&p, v99, strlen(v99));
    rej = peer_wait(&p, "reject", 5000);
    T_REQUIRE(rej != NULL);
    T_CONTAINS(jstr(rej, "error"), "version");
    cJSON_Delete(rej);
    /* still serving: a proper hello is welcomed, HTTP answers */
    peer_welcomed(&p);
    http_reply r = api(&d, "GET", "/api/health", NULL);
    T_EQ_INT(r.code, 200);
    T_CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r.json, "ok")));
    reply_free(&r);

    /* garbage HTTP on a raw socket */
    const char *junk[] = {"GARBAGE\r\n\r\n", "GET /api/health HTTP/1.1\r\nHost: \r\nContent-Length: -5\r\n\r\n",
                          "POST /api/sweeps HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"half", "\x16\x03\x01\x02\x00\x01",
                          "GET /../../../etc/passwd HTTP/1.0\r\n\r\n"};
    for (size_t i = 0; i < sizeof junk / sizeof *junk; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)d.http_port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
            if (write(s, junk[i], strlen(junk[i])) < 0) { /* the daemon may have closed it */ }
            char buf[512];
            struct timeval tv = {0, 200000};
            setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            if (read(s, buf, sizeof buf) < 0) { /* no answer is fine */ }
        }
        close(s);
    }
    /* bodies that are not a sweep */
    r = api(&d, "POST", "/api/sweeps", "{\"name\": 5, \"base\": []}");
    T_EQ_INT(r.code, 400);
    T_CHECK(cJSON_IsArray(cJSON_GetObjectItem(r.json, "errors")));
    reply_free(&r);
    r = api(&d, "POST", "/api/sweeps", "{{{{");
    T_EQ_INT(r.code, 400);
    reply_free(&r);
    r = api(&d, "GET", "/api/jobs/12345678901234567890", NULL);
    T_EQ_INT(r.code, 404);
    reply_free(&r);
    r = api(&d, "GET", "/api/jobs/1/metrics?max_points=abc", NULL);
    T_CHECK(r.code == 400 || r.code == 404);
    reply_free(&r);
    r = api(&d, "PUT", "/api/artifacts/1/..%2F..%2Fescape", "x");
    T_CHECK(r.code == 400 || r.code == 404);
    reply_free(&r);
    r = api(&d, "GET", "/api/health", NULL);
    T_EQ_INT(r.code, 200);
    reply_free(&r);
    peer_forget(&p, "welcome");
    peer_welcomed(&p); /* the ZeroMQ side still answers too */
    T_CHECK(kill(d.pid, 0) == 0);
    peer_close(&p);
    daemon_kill(&d, SIGTERM);
}

static void test_daemon_proto_auth_and_host(void) {
    need_daemon();
    daemon_proc d = {0};
    T_REQUIRE(daemon_start(&d, "auth", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    http_reply r = http_call(&d, "GET", "/api/sweeps", NULL, NULL, NULL);
    T_EQ_INT(r.code, 401);
    T_EQ_STR(jstr(r.json, "error"), "missing or wrong token");
    reply_free(&r);
    char wrong[80];
    snprintf(wrong, sizeof wrong, "%s", d.token);
    wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
    r = http_call(&d, "GET", "/api/health", NULL, wrong, NULL);
    T_EQ_INT(r.code, 401);
    reply_free(&r);
    r = http_call(&d, "GET", "/metrics", NULL, "short", NULL);
    T_EQ_INT(r.code, 401);
    reply_free(&r);
    r = http_call(&d, "GET", "/api/health", NULL, d.token, "evil.example:80");
    T_EQ_INT(r.code, 421);
    reply_free(&r);
    char host[64];
    snprintf(host, sizeof host, "localhost:%d", d.http_port);
    r = http_call(&d, "GET", "/api/health", NULL, d.token, host);
    T_EQ_INT(r.code, 200);
    reply_free(&r);
    r = http_call(&d, "DELETE", "/api/sweeps", NULL, d.token, NULL);
    T_EQ_INT(r.code, 405);
    reply_free(&r);
    /* the dashboard's page needs no token; any other path outside the API is not found */
    r = http_call(&d, "GET", "/", NULL, NULL, NULL);
    T_EQ_INT(r.code, 200);
    T_CONTAINS(r.body, "app.js");
    reply_free(&r);
    r = http_call(&d, "GET", "/nope", NULL, NULL, NULL);
    T_EQ_INT(r.code, 404);
    T_CHECK(r.json != NULL);
    reply_free(&r);
    /* artifacts: stored atomically, read back, listed */
    long long sid = submit_n(&d, "art", "1");
    T_REQUIRE(sid > 0);
    r = api(&d, "PUT", "/api/artifacts/1/curve.png", "PNGDATA");
    T_EQ_INT(r.code, 201);
    T_EQ_INT((long long)jnum(r.json, "bytes"), 7);
    T_EQ_INT((int)strlen(jstr(r.json, "sha256")), 64);
    reply_free(&r);
    r = api(&d, "GET", "/api/artifacts/1/curve.png", NULL);
    T_EQ_INT(r.code, 200);
    T_EQ_STR(r.body, "PNGDATA");
    reply_free(&r);
    r = api(&d, "GET", "/api/artifacts/1", NULL);
    T_EQ_STR(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(r.json, "artifacts"), 0), "name"), "curve.png");
    reply_free(&r);
    /* sweep-wide actions and listings */
    r = api(&d, "POST", "/api/sweeps/art/cancel", "");
    T_EQ_INT(r.code, 200);
    T_EQ_INT((long long)jnum(r.json, "cancelled"), 1);
    reply_free(&r);
    r = api(&d, "POST", "/api/sweeps/art/requeue?failed=1", "");
    T_EQ_INT(r.code, 200);
    T_EQ_INT((long long)jnum(r.json, "requeued"), 1);
    reply_free(&r);
    r = api(&d, "POST", "/api/sweeps/nosuch/cancel", "");
    T_EQ_INT(r.code, 404);
    reply_free(&r);
    r = api(&d, "GET", "/api/sweeps", NULL);
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItem(r.json, "sweeps"), 0);
    T_EQ_STR(jstr(first, "name"), "art");
    T_EQ_STR(jstr(first, "state"), "QUEUED");
    T_EQ_INT((long long)jnum(first, "counts.QUEUED"), 1);
    T_EQ_INT((long long)jnum(first, "total"), 1);
    reply_free(&r);
    r = api(&d, "GET", "/api/sweeps/art?jobs=0", NULL);
    T_EQ_INT(r.code, 200);
    T_CHECK(cJSON_GetObjectItem(r.json, "jobs") == NULL);
    T_CHECK(cJSON_IsArray(json_path_get(r.json, "sweep.swept")));
    reply_free(&r);
    r = api(&d, "GET", "/api/sweeps/art?state=BOGUS", NULL);
    T_EQ_INT(r.code, 400);
    reply_free(&r);
    char spec[512];
    snprintf(spec, sizeof spec, SPEC1, "art", "1, 2, 3");
    r = api(&d, "POST", "/api/sweeps?dry_run=1", spec);
    T_EQ_INT(r.code, 200);
    T_EQ_INT((long long)jnum(r.json, "new"), 2);
    T_EQ_INT((long long)jnum(r.json, "existing"), 1);
    T_CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r.json, "dry_run")));
    reply_free(&r);
    r = api(&d, "GET", "/api/sweeps/art?jobs=0", NULL);
    T_EQ_INT((long long)jnum(r.json, "sweep.total"), 1); /* a dry run writes nothing */
    reply_free(&r);
    r = api(&d, "PUT", "/api/artifacts/99/x", "a");
    T_EQ_INT(r.code, 404);
    reply_free(&r);
    r = api(&d, "PUT", "/api/artifacts/1/.hidden", "a");
    T_EQ_INT(r.code, 400);
    reply_free(&r);
    daemon_kill(&d, SIGTERM);
}

static void test_daemon_proto_refusals(void) {
    need_daemon();
    char out[600], home[512], *text = NULL, err[256];
    size_t len;
    snprintf(home, sizeof home, "%s/refuse", tmpdir);
    snprintf(out, sizeof out, "%s/refuse-nonloop.out", tmpdir);
    const char *a1[] = {"--home", home, "--http", "0.0.0.0:0", "--zmq", "tcp://127.0.0.1:*", NULL};
    pid_t pid = spawn(a1, out);
    T_EQ_INT(wait_exit(pid, 10000), 2);
    T_REQUIRE(read_file(out, &text, &len, 1 << 16, err, sizeof err) == 0);
    T_CONTAINS(text, "multi-host transport is not available");
    free(text);
    const char *a2[] = {"--home", home, "--http", "127.0.0.1:0", "--zmq", "tcp://10.1.2.3:*", NULL};
    snprintf(out, sizeof out, "%s/refuse-nonloop2.out", tmpdir);
    pid = spawn(a2, out);
    T_EQ_INT(wait_exit(pid, 10000), 2);

    daemon_proc d = {0};
    T_REQUIRE(daemon_start(&d, "refuse", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    snprintf(out, sizeof out, "%s/refuse-second.out", tmpdir);
    const char *a3[] = {"--home", home, "--http", "127.0.0.1:0", "--zmq", "tcp://127.0.0.1:*", NULL};
    pid = spawn(a3, out);
    T_EQ_INT(wait_exit(pid, 10000), 1);
    T_REQUIRE(read_file(out, &text, &len, 1 << 16, err, sizeof err) == 0);
    T_CONTAINS(text, "already running");
    free(text);
    http_reply r = api(&d, "GET", "/api/health", NULL); /* the first one is untouched */
    T_EQ_INT(r.code, 200);
    reply_free(&r);
    daemon_kill(&d, SIGTERM);
}

static void test_daemon_proto_kill_and_restart(void) {
    need_daemon();
    daemon_proc d = {0};
    T_REQUIRE(daemon_start(&d, "restart", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    peer p;
    peer_open(&p, d.zmq, "t/restart");
    peer_welcomed(&p);
    long long sid = submit_n(&d, "restart", "1");
    T_REQUIRE(sid > 0);
    T_REQUIRE(peer_take_job(&p, 5000, NULL));
    cJSON *m = report(&p, "started");
    cJSON_AddNumberToObject(m, "pid", 1);
    peer_send(&p, m);
    p.step = 5;
    peer_wait(&p, "nothing", 400); /* a heartbeat or two with the step */
    char lease[40];
    snprintf(lease, sizeof lease, "%s", p.lease);
    long long job = p.job;

    daemon_kill(&d, SIGKILL);
    char http[64], zmq[80];
    snprintf(http, sizeof http, "127.0.0.1:%d", d.http_port);
    snprintf(zmq, sizeof zmq, "tcp://127.0.0.1:%d", d.zmq_port);
    T_REQUIRE(daemon_start(&d, "restart", http, zmq) == 0);
    /* the worker's next heartbeat is answered `who`; its hello re-announces the attempt */
    cJSON *who = peer_wait(&p, "who", 8000);
    T_REQUIRE(who != NULL);
    cJSON_Delete(who);
    peer_hello(&p, NULL);
    cJSON *w = peer_wait(&p, "welcome", 5000);
    T_REQUIRE(w != NULL);
    cJSON_Delete(w);
    peer_forget(&p, "who");
    T_CHECK(peer_wait(&p, "cancel", 3500) == NULL); /* past the restart grace: the lease is kept */
    T_EQ_STR(p.lease, lease);
    cJSON *j = get_job(&d, job);
    T_EQ_STR(jstr(j, "job.state"), "RUNNING");
    T_EQ_INT((long long)jnum(j, "job.step"), 5);
    cJSON_Delete(j);
    peer_send(&p, finished_body(&p, "succeeded"));
    cJSON *ack = peer_wait(&p, "ack", 5000);
    T_REQUIRE(ack != NULL);
    cJSON_Delete(ack);
    peer_finish(&p, "succeeded"); /* a resend before the ack arrived */
    ack = peer_wait(&p, "ack", 5000);
    T_CHECK(ack != NULL);
    cJSON_Delete(ack);
    j = get_job(&d, job);
    T_EQ_STR(jstr(j, "job.state"), "SUCCEEDED");
    T_EQ_INT((long long)jnum(j, "job.attempts"), 1);
    T_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "attempts")), 1);
    cJSON_Delete(j);
    peer_close(&p);
    daemon_kill(&d, SIGTERM);
}

static void test_daemon_proto_silent_worker(void) {
    need_daemon();
    daemon_proc d = {0};
    T_REQUIRE(daemon_start(&d, "silent", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    peer a;
    peer_open(&a, d.zmq, "t/silent");
    peer_welcomed(&a);
    long long sid = submit_n(&d, "silent", "1");
    T_REQUIRE(sid > 0);
    T_REQUIRE(peer_take_job(&a, 5000, NULL));
    cJSON *m = report(&a, "started");
    cJSON_AddNumberToObject(m, "pid", 1);
    peer_send(&a, m);
    peer_hb(&a);
    int64_t last = mono_ms();
    a.heartbeats = 0; /* silence */
    int lost = 0;
    while (mono_ms() - last < 3500 && !lost) {
        cJSON *j = get_job(&d, a.job);
        const cJSON *att = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "attempts"), 0);
        lost = strcmp(jstr(att, "state"), "LOST") == 0 && strcmp(jstr(j, "job.state"), "QUEUED") == 0;
        cJSON_Delete(j);
        if (!lost) usleep(50000);
    }
    T_CHECK_MSG(lost, "the attempt was not lost and re-queued within 3.5 s");
    http_reply r = api(&d, "GET", "/api/workers", NULL);
    T_EQ_STR(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(r.json, "workers"), 0), "state"), "DEAD");
    reply_free(&r);
    /* another worker gets the job as attempt 2 */
    peer b;
    peer_open(&b, d.zmq, "t/other");
    peer_welcomed(&b);
    T_REQUIRE(peer_take_job(&b, 5000, NULL));
    T_EQ_INT(b.job, a.job);
    T_EQ_INT(b.attempt, 2);
    /* the silent one speaks again: asked `who`, and its re-announced attempt is cancelled as stale */
    peer_hb(&a);
    cJSON *who = peer_wait(&a, "who", 5000);
    T_REQUIRE(who != NULL);
    cJSON_Delete(who);
    peer_hello(&a, cJSON_CreateArray());
    cJSON *w = peer_wait(&a, "welcome", 5000);
    T_CHECK(w != NULL);
    cJSON_Delete(w);
    cJSON *c = peer_wait(&a, "cancel", 5000);
    T_REQUIRE(c != NULL);
    T_EQ_STR(jstr(c, "reason"), "stale");
    T_EQ_INT((long long)jnum(c, "attempt"), 1);
    cJSON_Delete(c);
    peer_finish(&a, "cancelled");
    cJSON *ack = peer_wait(&a, "ack", 5000);
    T_CHECK(ack != NULL);
    cJSON_Delete(ack);
    long long jobb = b.job;
    peer_finish(&b, "succeeded");
    ack = peer_wait(&b, "ack", 5000);
    T_CHECK(ack != NULL);
    cJSON_Delete(ack);
    cJSON *j = get_job(&d, jobb);
    T_EQ_STR(jstr(j, "job.state"), "SUCCEEDED");
    T_EQ_STR(jstr(j, "job.worker"), "t/other");
    cJSON_Delete(j);
    peer_close(&a);
    peer_close(&b);
    daemon_kill(&d, SIGTERM);
}

/* A worker restarted at once under its name: while the old process is alive (or not provably gone:
 * another host) the name is refused with code name_in_use; once the old process on this host no
 * longer exists, the new one is welcomed at once, the old one is DEAD and its attempt LOST and
 * queued again, and the job goes to the new worker as attempt 2. */
static void test_daemon_proto_name_reuse(void) {
    need_daemon();
    daemon_proc d = {0};
    T_REQUIRE(daemon_start(&d, "reuse", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    char host[128] = "";
    gethostname(host, sizeof host - 1);
    pid_t old = fork(); /* stands for the old worker process */
    if (old == 0) {
        pause();
        _exit(0);
    }
    for (int i = 0; i < 16; i++) /* killed after the test if it stops early */
        if (!live_pids[i]) {
            live_pids[i] = old;
            break;
        }
    peer a;
    peer_open(&a, d.zmq, "t/reuse");
    snprintf(a.host, sizeof a.host, "%s", host);
    a.pid = old;
    peer_welcomed(&a);
    long long sid = submit_n(&d, "reuse", "1");
    T_REQUIRE(sid > 0);
    T_REQUIRE(peer_take_job(&a, 5000, NULL));
    cJSON *m = report(&a, "started");
    cJSON_AddNumberToObject(m, "pid", 1);
    peer_send(&a, m);
    peer_wait(&a, "nothing", 300);
    long long job = a.job;

    /* the old process lives: refused, with the code a worker retries on */
    peer b;
    peer_open(&b, d.zmq, "t/reuse");
    snprintf(b.host, sizeof b.host, "%s", host);
    b.pid = getpid();
    b.heartbeats = 0;
    peer_hello(&b, NULL);
    cJSON *rej = peer_wait(&b, "reject", 5000);
    T_REQUIRE(rej != NULL);
    T_EQ_STR(jstr(rej, "code"), "name_in_use");
    T_CONTAINS(jstr(rej, "error"), "in use");
    cJSON_Delete(rej);

    /* the old process dies (SIGKILL, no last word) and a new one says hello at once */
    a.heartbeats = 0;
    kill(old, SIGKILL);
    waitpid(old, NULL, 0);
    for (int i = 0; i < 16; i++)
        if (live_pids[i] == old) live_pids[i] = 0;
    int64_t t0 = mono_ms();
    b.heartbeats = 1;
    peer_hello(&b, NULL);
    cJSON *w = peer_wait(&b, "welcome", 5000);
    T_REQUIRE(w != NULL);
    cJSON_Delete(w);
    T_CHECK_MSG(mono_ms() - t0 < 1000, "welcomed after %lld ms", (long long)(mono_ms() - t0));
    cJSON *j = get_job(&d, job);
    const cJSON *att = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "attempts"), 0);
    T_EQ_STR(jstr(att, "state"), "LOST");
    T_CONTAINS(jstr(att, "error"), "no longer exists");
    cJSON_Delete(j);
    /* the job is the new worker's, as attempt 2 */
    T_REQUIRE(peer_take_job(&b, 5000, NULL));
    T_EQ_INT(b.job, job);
    T_EQ_INT(b.attempt, 2);
    peer_finish(&b, "succeeded");
    cJSON *ack = peer_wait(&b, "ack", 5000);
    T_CHECK(ack != NULL);
    cJSON_Delete(ack);
    j = get_job(&d, job);
    T_EQ_STR(jstr(j, "job.state"), "SUCCEEDED");
    cJSON_Delete(j);
    http_reply r = api(&d, "GET", "/api/workers", NULL);
    const cJSON *wk;
    int live = 0;
    cJSON_ArrayForEach(wk, cJSON_GetObjectItem(r.json, "workers"))
        if (strcmp(jstr(wk, "id"), "t/reuse") == 0) live = strcmp(jstr(wk, "state"), "DEAD") != 0;
    T_CHECK(live);
    reply_free(&r);
    /* a holder on another host (pid 999999 is no process here) is not provably gone either */
    peer c;
    peer_open(&c, d.zmq, "t/reuse-far");
    snprintf(c.host, sizeof c.host, "%s", "some-other-host");
    c.pid = 999999;
    peer_welcomed(&c);
    c.heartbeats = 0;
    peer far;
    peer_open(&far, d.zmq, "t/reuse-far");
    snprintf(far.host, sizeof far.host, "%s", host);
    far.heartbeats = 0;
    peer_hello(&far, NULL);
    cJSON *rej2 = peer_wait(&far, "reject", 5000);
    T_CHECK(rej2 != NULL);
    cJSON_Delete(rej2);
    peer_close(&a);
    peer_close(&b);
    peer_close(&c);
    peer_close(&far);
    daemon_kill(&d, SIGTERM);
}

static void test_daemon_proto_stall(void) {
    need_daemon();
    daemon_proc d = {0};
    T_REQUIRE(daemon_start(&d, "stall", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    peer p;
    peer_open(&p, d.zmq, "t/stall");
    peer_welcomed(&p);
    long long sid = submit(&d, "{\"name\": \"stall\", \"base\": {\"kind\": \"command\", \"command\": \"sleep 100\", "
                               "\"stall_timeout\": 1}}");
    T_REQUIRE(sid > 0);
    cJSON *job = NULL;
    T_REQUIRE(peer_take_job(&p, 5000, &job));
    T_EQ_INT((long long)jnum(job, "stall_timeout"), 1);
    cJSON_Delete(job);
    cJSON *c = peer_wait(&p, "cancel", 5000); /* heartbeats keep step 0 */
    T_REQUIRE(c != NULL);
    T_EQ_STR(jstr(c, "reason"), "stalled");
    cJSON_Delete(c);
    long long jobs = p.job;
    peer_finish(&p, "cancelled");
    cJSON *ack = peer_wait(&p, "ack", 5000);
    T_CHECK(ack != NULL);
    cJSON_Delete(ack);
    cJSON *j = get_job(&d, jobs);
    T_EQ_STR(jstr(j, "job.state"), "FAILED");
    T_CONTAINS(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "attempts"), 0), "error"), "stalled");
    cJSON_Delete(j);
    peer_close(&p);
    daemon_kill(&d, SIGTERM);
}


/* Thousands of messages with every field set to odd values (types, sizes, ranges, nesting), some
 * carrying a real lease: the daemon must keep serving. */
static void test_daemon_proto_fuzz_frames(void) {
    need_daemon();
    daemon_proc d = {0};
    T_REQUIRE(daemon_start(&d, "fuzz", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    T_REQUIRE(submit_n(&d, "fuzz", "1, 2, 3") > 0);
    peer p;
    peer_open(&p, d.zmq, "t/fuzz");
    peer_welcomed(&p);
    T_REQUIRE(peer_take_job(&p, 5000, NULL));
    const char *types[] = {"hello", "hb", "started", "metrics", "result", "log", "finished", "busy", "welcome", "job"};
    const char *fields[] = {"job", "attempt", "lease", "pid", "step", "points", "results", "offset", "data", "status",
                            "exit_code", "signal", "error", "name", "host", "device", "backend", "capabilities",
                            "running", "finished"};
    char longstr[3000];
    memset(longstr, 'z', sizeof longstr - 1);
    longstr[sizeof longstr - 1] = 0;
    unsigned seed = 12345;
    for (int i = 0; i < 3000; i++) {
        cJSON *m = msg_new(types[rand_r(&seed) % 10]);
        int nf = rand_r(&seed) % 8;
        for (int f = 0; f < nf; f++) {
            const char *key = fields[rand_r(&seed) % 20];
            cJSON *v;
            switch (rand_r(&seed) % 18) {
            case 0: v = cJSON_CreateNull(); break;
            case 1: v = cJSON_CreateTrue(); break;
            case 2: v = cJSON_CreateNumber(-1); break;
            case 3: v = cJSON_CreateNumber(1e300); break;
            case 4: v = cJSON_CreateNumber(1152921504606846976.0); break;
            case 5: v = cJSON_CreateNumber(1.5); break;
            case 6: v = cJSON_CreateString(""); break;
            case 7: v = cJSON_CreateString(longstr); break;
            case 8: v = cJSON_CreateArray(); break;
            case 9: v = cJSON_Parse("[[\"k\", 1, 2], [\"k\", -5, null], [1, 2, 3], \"x\"]"); break;
            case 10: v = cJSON_Parse("{\"job\": 1, \"attempt\": 1, \"lease\": \"x\", \"step\": 1e99}"); break;
            case 11: v = cJSON_Parse("{\"kinds\": [\"command\", 5, null], \"a\": {\"b\": [1]}}"); break;
            case 12: v = cJSON_CreateNumber((double)p.job); break;
            case 13: v = cJSON_CreateNumber((double)p.attempt); break;
            case 14: v = cJSON_CreateString(p.lease); break;
            case 15: v = cJSON_CreateString(rand_r(&seed) % 2 ? "succeeded" : "preempted"); break;
            case 16: v = cJSON_Parse("[{\"t\": \"finished\", \"job\": 1, \"attempt\": 1, \"lease\": 7}]"); break;
            default: v = cJSON_CreateNumber(rand_r(&seed) % 5); break;
            }
            cJSON_DeleteItemFromObject(m, key);
            cJSON_AddItemToObject(m, key, v);
        }
        peer_send(&p, m);
        if (i % 500 == 0) peer_wait(&p, "nothing", 20);
    }
    peer_wait(&p, "nothing", 300);
    T_CHECK(kill(d.pid, 0) == 0);
    http_reply r = api(&d, "GET", "/api/health", NULL);
    T_EQ_INT(r.code, 200);
    reply_free(&r);
    r = api(&d, "GET", "/api/sweeps/fuzz", NULL);
    T_EQ_INT(r.code, 200);
    T_EQ_INT((long long)jnum(r.json, "sweep.total"), 3);
    reply_free(&r);
    peer q;
    peer_open(&q, d.zmq, "t/after-fuzz");
    peer_welcomed(&q);
    peer_close(&q);
    peer_close(&p);
    daemon_kill(&d, SIGTERM);
}

/* ---- watermarks, late cancels, names, aborted HTTP clients ------------------------------------------- */

/* One row of a query on the daemon's database (read-only), as text in buf ("" when none). */
static const char *db_text(const daemon_proc *d, const char *sql, char *buf, size_t n) {
    char path[600];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    buf[0] = 0;
    snprintf(path, sizeof path, "%s/umdq.db", d->home);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
            sqlite3_column_text(st, 0))
            snprintf(buf, n, "%s", (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return buf;
}

/* A numbered metrics message of the peer's attempt. */
static cJSON *numbered(peer *p, long long seq, long long from, const char *points) {
    cJSON *m = report(p, "metrics");
    cJSON_AddNumberToObject(m, "seq", (double)seq);
    cJSON_AddNumberToObject(m, "from", (double)from);
    cJSON_AddItemToObject(m, "points", cJSON_Parse(points));
    return m;
}

static cJSON *log_chunk(peer *p, long long offset, long long from, const char *data) {
    cJSON *m = report(p, "log");
    cJSON_AddNumberToObject(m, "offset", (double)offset);
    cJSON_AddNumberToObject(m, "from", (double)from);
    cJSON_AddStringToObject(m, "data", data);
    return m;
}

/* finished (succeeded) saying what the worker sent: metrics messages 1..seq and log bytes 0..log */
static cJSON *finished_marks(peer *p, long long seq, long long log) {
    cJSON *f = finished_body(p, "succeeded");
    cJSON_AddNumberToObject(f, "seq", (double)seq);
    cJSON_AddNumberToObject(f, "log", (double)log);
    return f;
}

static char *job_log(const daemon_proc *d, long long job) {
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%lld/log", job);
    http_reply r = api(d, "GET", path, NULL);
    char *text = strdup(jstr(r.json, "data"));
    reply_free(&r);
    return text;
}

/* Reports lost on the way (a daemon that died before storing them) are sent again by the worker:
 * the daemon stores each exactly once, tells the worker what it has (`stored`, `welcome`), and
 * applies `finished` only once everything the worker says it sent is stored. */
static void test_daemon_proto_watermarks(void) {
    need_daemon();
    daemon_proc d = {0};
    char buf[256], sql[256];
    T_REQUIRE(daemon_start(&d, "marks", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    peer p;
    peer_open(&p, d.zmq, "t/marks");
    peer_welcomed(&p);
    T_REQUIRE(submit_n(&d, "marks", "1, 2") > 0);
    T_REQUIRE(peer_take_job(&p, 5000, NULL));
    long long job = p.job;
    /* message 2 and bytes 3..10 are lost */
    peer_send(&p, numbered(&p, 1, 1, "[[\"m\", 1, 1]]"));
    peer_send(&p, numbered(&p, 3, 1, "[[\"m\", 3, 3]]"));
    peer_send(&p, log_chunk(&p, 0, 0, "aaa"));
    peer_send(&p, log_chunk(&p, 10, 0, "ccc")); /* waits for bytes 3..10, which the worker holds */
    peer_send(&p, finished_marks(&p, 3, 13));
    cJSON *st = peer_wait(&p, "stored", 5000);
    T_REQUIRE(st != NULL);
    T_EQ_INT((long long)jnum(st, "job"), job);
    T_EQ_INT((long long)jnum(st, "attempt"), 1);
    T_EQ_INT((long long)jnum(st, "seq"), 1);
    T_EQ_INT((long long)jnum(st, "log"), 3);
    cJSON_Delete(st);
    T_CHECK(peer_wait(&p, "ack", 500) == NULL);
    cJSON *j = get_job(&d, job);
    T_EQ_STR(jstr(j, "job.state"), "RUNNING");
    cJSON_Delete(j);
    /* the worker, held back, is given no other job */
    T_CHECK(peer_wait(&p, "job", 1200) == NULL);
    /* sent again, oldest first; message 3 and bytes 10..13 once more */
    peer_send(&p, numbered(&p, 2, 2, "[[\"m\", 2, 2]]"));
    peer_send(&p, numbered(&p, 3, 2, "[[\"m\", 3, 3]]"));
    peer_send(&p, log_chunk(&p, 3, 3, "bbbbbbb"));
    peer_send(&p, log_chunk(&p, 10, 3, "ccc"));
    peer_send(&p, finished_marks(&p, 3, 13));
    cJSON *ack = peer_wait(&p, "ack", 5000);
    T_REQUIRE(ack != NULL);
    cJSON_Delete(ack);
    j = get_job(&d, job);
    T_EQ_STR(jstr(j, "job.state"), "SUCCEEDED");
    cJSON_Delete(j);
    snprintf(sql, sizeof sql, "SELECT group_concat(step || '=' || value, ' ') FROM (SELECT step, value FROM metrics "
                              "WHERE job_id = %lld ORDER BY step)", job);
    T_EQ_STR(db_text(&d, sql, buf, sizeof buf), "1=1.0 2=2.0 3=3.0");
    snprintf(sql, sizeof sql, "SELECT metrics_seq || ' ' || log_bytes FROM attempts WHERE job_id = %lld", job);
    T_EQ_STR(db_text(&d, sql, buf, sizeof buf), "3 13");
    char *log = job_log(&d, job);
    T_EQ_STR(log, "== attempt 1 on t/marks ==\naaabbbbbbbccc");
    free(log);

    /* the next job: heartbeats that say the worker holds unconfirmed reports are answered `stored`,
     * and a hello that re-announces the attempt is welcomed with its watermarks */
    p.job = 0;
    T_REQUIRE(peer_take_job(&p, 5000, NULL));
    job = p.job;
    peer_send(&p, numbered(&p, 1, 1, "[[\"m\", 1, 5]]"));
    peer_send(&p, log_chunk(&p, 0, 0, "0123456789"));
    cJSON *hb = msg_new("hb");
    cJSON *run = running_of(&p);
    cJSON_AddNumberToObject(run, "seq", 1);
    cJSON_AddNumberToObject(run, "log", 10);
    cJSON_AddItemToObject(hb, "running", run);
    peer_send(&p, hb);
    st = peer_wait(&p, "stored", 5000);
    T_REQUIRE(st != NULL);
    T_EQ_INT((long long)jnum(st, "seq"), 1);
    T_EQ_INT((long long)jnum(st, "log"), 10);
    cJSON_Delete(st);
    peer_hello(&p, NULL);
    cJSON *w = peer_wait(&p, "welcome", 5000);
    T_REQUIRE(w != NULL);
    const cJSON *marks = cJSON_GetObjectItem(w, "stored");
    T_REQUIRE(cJSON_GetArraySize(marks) == 1);
    T_EQ_INT((long long)jnum(cJSON_GetArrayItem(marks, 0), "job"), job);
    T_EQ_INT((long long)jnum(cJSON_GetArrayItem(marks, 0), "seq"), 1);
    T_EQ_INT((long long)jnum(cJSON_GetArrayItem(marks, 0), "log"), 10);
    cJSON_Delete(w);
    /* messages the worker gave up (its memory bound: "from" past what is stored) are not waited
     * for: an event names the metrics, a line in the log marks the bytes */
    peer_send(&p, numbered(&p, 5, 5, "[[\"m\", 5, 25]]"));
    peer_send(&p, log_chunk(&p, 30, 30, "tail\n"));
    peer_send(&p, finished_marks(&p, 5, 35));
    ack = peer_wait(&p, "ack", 5000);
    T_REQUIRE(ack != NULL);
    cJSON_Delete(ack);
    log = job_log(&d, job);
    T_EQ_STR(log, "== attempt 1 on t/marks ==\n0123456789[umdqd: 20 bytes of output are missing here]\ntail\n");
    free(log);
    snprintf(sql, sizeof sql, "SELECT detail FROM events WHERE job_id = %lld AND kind = 'metrics_gap'", job);
    T_EQ_STR(db_text(&d, sql, buf, sizeof buf), "{\"attempt\":1,\"first\":2,\"last\":4}");
    peer_close(&p);
    daemon_kill(&d, SIGTERM);
}

/* Reports that never come hold `finished` back for 30 heartbeat periods at most: then it is applied
 * without them, and an event says what was missing. */
static void test_daemon_proto_watermarks_give_up(void) {
    need_daemon();
    daemon_proc d = {0};
    char buf[256], sql[256];
    next_heartbeat_ms = "100";
    T_REQUIRE(daemon_start(&d, "giveup", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    peer p;
    peer_open(&p, d.zmq, "t/giveup");
    peer_welcomed(&p);
    T_REQUIRE(submit_n(&d, "giveup", "1") > 0);
    T_REQUIRE(peer_take_job(&p, 5000, NULL));
    long long job = p.job;
    peer_send(&p, numbered(&p, 2, 1, "[[\"m\", 2, 2]]"));
    int64_t t0 = mono_ms();
    cJSON *ack = NULL;
    while (!ack && mono_ms() - t0 < 8000) {
        peer_send(&p, finished_marks(&p, 2, 0));
        ack = peer_wait(&p, "ack", 100);
        peer_forget(&p, "stored");
    }
    T_REQUIRE(ack != NULL);
    cJSON_Delete(ack);
    T_CHECK_MSG(mono_ms() - t0 >= 2500, "applied after %lld ms", (long long)(mono_ms() - t0));
    cJSON *j = get_job(&d, job);
    T_EQ_STR(jstr(j, "job.state"), "SUCCEEDED");
    cJSON_Delete(j);
    snprintf(sql, sizeof sql, "SELECT detail FROM events WHERE job_id = %lld AND kind = 'finished_incomplete'", job);
    T_EQ_STR(db_text(&d, sql, buf, sizeof buf), "{\"attempt\":1,\"metrics\":[0,2],\"log\":[0,0]}");
    peer_close(&p);
    daemon_kill(&d, SIGTERM);
}

/* A user cancel that loses the race with the job's success: the job is SUCCEEDED with its results
 * (once), the late cancel is in the event log, and a requeue of the sweep's failed jobs leaves it. */
static void test_daemon_proto_cancel_too_late(void) {
    need_daemon();
    daemon_proc d = {0};
    char buf[256], sql[256], path[128];
    T_REQUIRE(daemon_start(&d, "late", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    peer p;
    peer_open(&p, d.zmq, "t/late");
    peer_welcomed(&p);
    long long sid = submit_n(&d, "late", "1");
    T_REQUIRE(sid > 0);
    T_REQUIRE(peer_take_job(&p, 5000, NULL));
    long long job = p.job;
    snprintf(path, sizeof path, "/api/jobs/%lld/cancel", job);
    http_reply r = api(&d, "POST", path, "");
    T_EQ_INT(r.code, 200);
    T_EQ_STR(jstr(r.json, "state"), "CANCELLED");
    reply_free(&r);
    /* the child had completed before the cancel reached the worker */
    peer_finish(&p, "succeeded");
    cJSON *ack = peer_wait(&p, "ack", 5000);
    T_REQUIRE(ack != NULL);
    cJSON_Delete(ack);
    cJSON *j = get_job(&d, job);
    T_EQ_STR(jstr(j, "job.state"), "SUCCEEDED");
    T_EQ_INT((long long)jnum(j, "job.results.final"), 42);
    T_EQ_STR(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "attempts"), 0), "state"), "SUCCEEDED");
    cJSON_Delete(j);
    snprintf(sql, sizeof sql, "SELECT detail FROM events WHERE job_id = %lld AND kind = 'cancel_late'", job);
    T_EQ_STR(db_text(&d, sql, buf, sizeof buf), "{\"attempt\":1,\"job\":\"SUCCEEDED\"}");
    snprintf(path, sizeof path, "/api/sweeps/%lld/requeue", sid);
    r = api(&d, "POST", path, "");
    T_EQ_INT(r.code, 200);
    T_EQ_INT((long long)jnum(r.json, "requeued"), 0);
    reply_free(&r);
    T_CHECK(peer_wait(&p, "job", 1500) == NULL);
    snprintf(sql, sizeof sql, "SELECT count(*) || ' ' || count(DISTINCT attempt) FROM results WHERE job_id = %lld", job);
    T_EQ_STR(db_text(&d, sql, buf, sizeof buf), "1 1");
    /* a cancel that the attempt obeyed keeps the job CANCELLED */
    T_REQUIRE(submit_n(&d, "late2", "1") > 0);
    T_REQUIRE(peer_take_job(&p, 5000, NULL));
    job = p.job;
    snprintf(path, sizeof path, "/api/jobs/%lld/cancel", job);
    r = api(&d, "POST", path, "");
    reply_free(&r);
    peer_finish(&p, "cancelled");
    ack = peer_wait(&p, "ack", 5000);
    T_CHECK(ack != NULL);
    cJSON_Delete(ack);
    j = get_job(&d, job);
    T_EQ_STR(jstr(j, "job.state"), "CANCELLED");
    cJSON_Delete(j);
    peer_close(&p);
    daemon_kill(&d, SIGTERM);
}

/* A stale `finished` with another lease, from another peer, for an attempt a worker runs leaves
 * that worker busy: it is given no second job. */
static void test_daemon_proto_stale_finished_keeps_holder(void) {
    need_daemon();
    daemon_proc d = {0};
    T_REQUIRE(daemon_start(&d, "holder", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    peer a, b;
    peer_open(&a, d.zmq, "t/holder");
    peer_welcomed(&a);
    T_REQUIRE(submit_n(&d, "holder", "1, 2") > 0);
    T_REQUIRE(peer_take_job(&a, 5000, NULL));
    peer_open(&b, d.zmq, "t/other-peer");
    b.heartbeats = 0;
    peer_hello(&b, NULL);
    cJSON *w = peer_wait(&b, "welcome", 5000);
    T_REQUIRE(w != NULL);
    cJSON_Delete(w);
    cJSON *jb = NULL;
    T_REQUIRE(peer_take_job(&b, 5000, &jb)); /* the second job */
    cJSON_Delete(jb);
    b.job = a.job;
    b.attempt = a.attempt;
    snprintf(b.lease, sizeof b.lease, "%s", "0123456789abcdef0123456789abcdef");
    peer_send(&b, finished_body(&b, "succeeded"));
    cJSON *ack = peer_wait(&b, "ack", 5000);
    T_CHECK(ack != NULL);
    cJSON_Delete(ack);
    T_REQUIRE(submit_n(&d, "holder2", "3") > 0);
    T_CHECK(peer_wait(&a, "job", 1500) == NULL);
    cJSON *j = get_job(&d, a.job);
    T_EQ_STR(jstr(j, "job.state"), "RUNNING");
    cJSON_Delete(j);
    peer_close(&a);
    peer_close(&b);
    daemon_kill(&d, SIGTERM);
}

/* Names, hosts and devices that are not 1 to 128 printable ASCII characters are refused, and text
 * a peer controls cannot forge a line of umdqd.log. */
static void test_daemon_proto_hello_names(void) {
    need_daemon();
    daemon_proc d = {0};
    char err[256];
    T_REQUIRE(daemon_start(&d, "names", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    char long_name[200];
    memset(long_name, 'x', 129);
    long_name[129] = 0;
    static const struct {
        const char *field, *value;
    } bad[] = {
        {"name", "w1\n2026-01-01T00:00:00.000Z umdqd[1] ERROR FORGED line"},
        {"name", "w2-\xc3\x28"},
        {"name", "w3-\xc3\xa9"}, /* valid UTF-8, but not ASCII */
        {"name", NULL},          /* 129 characters */
        {"name", ""},
        {"host", "h\x1b[2J"},
        {"device", "cpu\x7f"},
        {"backend", "cpu\tx"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        peer p;
        peer_open(&p, d.zmq, "t/ok");
        p.heartbeats = 0;
        cJSON *m = msg_new("hello");
        const char *value = bad[i].value ? bad[i].value : long_name;
        cJSON_AddStringToObject(m, "name", strcmp(bad[i].field, "name") == 0 ? value : "t/ok");
        cJSON_AddStringToObject(m, "host", strcmp(bad[i].field, "host") == 0 ? value : "testhost");
        cJSON_AddStringToObject(m, "device", strcmp(bad[i].field, "device") == 0 ? value : "cpu");
        cJSON_AddStringToObject(m, "backend", strcmp(bad[i].field, "backend") == 0 ? value : "cpu");
        cJSON_AddNumberToObject(m, "pid", 4321);
        cJSON_AddItemToArray(cJSON_AddArrayToObject(cJSON_AddObjectToObject(m, "capabilities"), "kinds"),
                             cJSON_CreateString("command"));
        cJSON_AddNullToObject(m, "running");
        cJSON_AddArrayToObject(m, "finished");
        peer_send(&p, m);
        cJSON *rej = peer_wait(&p, "reject", 5000);
        T_CHECK_MSG(rej != NULL, "hello %zu (%s) was not refused", i, bad[i].field);
        char want[64];
        snprintf(want, sizeof want, "\"%s\" must be 1 to", bad[i].field);
        if (rej) T_CONTAINS(jstr(rej, "error"), want);
        cJSON_Delete(rej);
        T_CHECK(peer_wait(&p, "welcome", 200) == NULL);
        peer_close(&p);
    }
    /* 128 characters are fine */
    long_name[128] = 0;
    peer ok;
    peer_open(&ok, d.zmq, long_name);
    peer_welcomed(&ok);
    /* a message type is peer text too: it reaches the log escaped */
    peer_send(&ok, msg_new("x\n2026-01-01T00:00:00.000Z umdqd[1] ERROR FORGED type"));
    peer_wait(&ok, "nothing", 300);
    http_reply r = api(&d, "GET", "/api/workers", NULL);
    T_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "workers")), 1);
    T_EQ_STR(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(r.json, "workers"), 0), "id"), long_name);
    reply_free(&r);
    peer_close(&ok);
    daemon_kill(&d, SIGTERM);
    char path[600], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/umdqd.log", d.home);
    T_REQUIRE(read_file(path, &text, &len, 1 << 22, err, sizeof err) == 0);
    T_CHECK_MSG(strstr(text, "\n2026-01-01T") == NULL, "a forged line in umdqd.log");
    T_CONTAINS(text, "unknown type \"x\\x0a2026-01-01T00:00:00.000Z umdqd[1] ERRO");
    for (size_t i = 0; i < len; i++) /* every byte printable ASCII or a newline */
        if (!((text[i] >= 0x20 && text[i] < 0x7f) || text[i] == '\n')) {
            T_CHECK_MSG(0, "byte 0x%02x at %zu of umdqd.log", (unsigned char)text[i], i);
            break;
        }
    free(text);
}

/* Clients that send half a request and go away (a killed CLI, a closed tab) must not hold the
 * daemon's connections: after 300 of them the API answers within a second. */
static void test_daemon_proto_http_aborted_clients(void) {
    need_daemon();
    daemon_proc d = {0};
    T_REQUIRE(daemon_start(&d, "aborted", "127.0.0.1:0", "tcp://127.0.0.1:*") == 0);
    char req[200];
    snprintf(req, sizeof req, "GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n", d.http_port); /* unfinished */
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)d.http_port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int made = 0;
    for (int i = 0; i < 300; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) break;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            int one = 1; /* the partial request and the FIN in one segment */
            setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof one);
            if (write(fd, req, strlen(req)) == (ssize_t)strlen(req)) made++;
            shutdown(fd, SHUT_WR);
        }
        close(fd);
    }
    T_EQ_INT(made, 300);
    usleep(200 * 1000);
    int64_t t0 = mono_ms();
    http_reply r = api(&d, "GET", "/api/health", NULL);
    int64_t took = mono_ms() - t0;
    T_EQ_INT(r.code, 200);
    T_CHECK_MSG(took < 1000, "GET /api/health took %lld ms", (long long)took);
    reply_free(&r);
    daemon_kill(&d, SIGTERM);
}

static void cleanup_after_test(void) {
    for (int i = 0; i < 16; i++) {
        if (live_socks[i]) zmq_close(live_socks[i]);
        live_socks[i] = NULL;
        if (live_pids[i] > 0) {
            kill(live_pids[i], SIGKILL);
            waitpid(live_pids[i], NULL, 0);
        }
        live_pids[i] = 0;
    }
}

#define RUN(fn) do { T_RUN(fn); cleanup_after_test(); } while (0)

int main(void) {
    const char *b = getenv("UMDQ_BUILD");
    if (b) snprintf(umdqd_bin, sizeof umdqd_bin, "%s/bin/umdqd", b);
    snprintf(tmpdir, sizeof tmpdir, "%s/umdq-proto-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        printf("FAIL test_daemon_proto: mkdtemp\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    zctx = zmq_ctx_new();
    RUN(test_daemon_proto_job_life);
    RUN(test_daemon_proto_malformed_input);
    RUN(test_daemon_proto_auth_and_host);
    RUN(test_daemon_proto_refusals);
    RUN(test_daemon_proto_kill_and_restart);
    RUN(test_daemon_proto_silent_worker);
    RUN(test_daemon_proto_name_reuse);
    RUN(test_daemon_proto_stall);
    RUN(test_daemon_proto_fuzz_frames);
    RUN(test_daemon_proto_watermarks);
    RUN(test_daemon_proto_watermarks_give_up);
    RUN(test_daemon_proto_cancel_too_late);
    RUN(test_daemon_proto_stale_finished_keeps_holder);
    RUN(test_daemon_proto_hello_names);
    RUN(test_daemon_proto_http_aborted_clients);
    zmq_ctx_term(zctx);
    curl_global_cleanup();
    const char *keep = getenv("KEEP_TMP");
    if (t_done() == 0 && !(keep && strcmp(keep, "1") == 0)) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    else printf("test files kept in %s\n", tmpdir);
    return t_done();
}
