/* cluster.h: the benchmarks' harness: the real umdqd and umdq-worker ($UMDQ_BUILD/bin, else the
 * bin/ next to the benchmark's build directory) in a temporary home on free loopback ports, an HTTP
 * client for its API, and the clean-up of every process and file (KEEP_TMP=1 keeps the files).
 * Included by one benchmark each (static functions); the includer defines cluster_kill_strays. */
#ifndef UMDQ_BENCH_CLUSTER_H
#define UMDQ_BENCH_CLUSTER_H
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "util.h"

#define MAX_WORKERS 64

typedef struct {
    char tmp[512];                 /* the temporary directory; removed by cluster_stop */
    char home[600], work[600];     /* tmp/home (the daemon's), tmp/work (the workers') */
    char bindir[PATH_MAX];
    char url[256], zmq[256], token[160];
    pid_t daemon;                  /* 0 when not running */
    pid_t wpid[MAX_WORKERS];       /* 0 when not running */
    char wname[MAX_WORKERS][64];
    int nworkers;
    CURL *curl;                    /* owned; one connection, kept alive */
} cluster;

static volatile sig_atomic_t interrupted;

static inline void on_interrupt(int sig) { (void)sig; interrupted = 1; }

static inline void sleep_ms(int ms) {
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static inline int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* $UMDQ_BUILD/bin, else dirname(argv0)/../bin. 0, or -1 with a message. */
static inline int find_bindir(const char *argv0, char *out, size_t n) {
    const char *build = getenv("UMDQ_BUILD");
    char self[PATH_MAX];
    if (build && build[0]) {
        snprintf(out, n, "%s/bin", build);
    } else {
        ssize_t len = strchr(argv0, '/') ? (realpath(argv0, self) ? (ssize_t)strlen(self) : -1)
                                          : readlink("/proc/self/exe", self, sizeof self - 1);
        if (len < 0) {
            fprintf(stderr, "cannot find where %s lies: %s\n", argv0, strerror(errno));
            return -1;
        }
        self[len] = 0;
        char *slash = strrchr(self, '/');
        if (slash) *slash = 0;
        if ((size_t)snprintf(out, n, "%s/../bin", self) >= n) {
            fprintf(stderr, "path too long: %s/../bin\n", self);
            return -1;
        }
    }
    char p[PATH_MAX + 32];
    const char *bins[] = {"umdqd", "umdq-worker"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", out, bins[i]);
        if (access(p, X_OK) != 0) {
            fprintf(stderr, "%s is not built (set UMDQ_BUILD to the build directory, or run make)\n", p);
            return -1;
        }
    }
    return 0;
}

/* Start argv with stdout and stderr appended to log. The child's pid, or -1. */
static inline pid_t spawn(const char *log, char *const argv[]) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644), null = open("/dev/null", O_RDONLY);
        if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(127);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execv(argv[0], argv);
        _exit(127);
    }
    if (pid < 0) perror("fork");
    return pid;
}

/* 1 while pid runs; reaps it (and sets *pid to 0) once it has ended. */
static inline int alive(pid_t *pid) {
    if (*pid <= 0) return 0;
    int st;
    if (waitpid(*pid, &st, WNOHANG) == 0) return 1;
    *pid = 0;
    return 0;
}

/* SIGTERM, then SIGKILL after ms; reaps. */
static inline void stop_process(pid_t *pid, int ms) {
    if (*pid <= 0) return;
    kill(*pid, SIGTERM);
    for (int t = 0; t < ms && alive(pid); t += 10) sleep_ms(10);
    if (*pid > 0) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
        *pid = 0;
    }
}

static inline size_t on_body(char *data, size_t size, size_t nmemb, void *user) {
    strbuf_append(user, data, size * nmemb);
    return size * nmemb;
}

/* One request; the body lands in out (cleared first). The HTTP status, or -1. */
static inline long http(cluster *c, const char *method, const char *path, const char *body, strbuf *out) {
    char url[1024], auth[256];
    snprintf(url, sizeof url, "%s%s", c->url, path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    h = curl_slist_append(h, "Content-Type: application/json");
    strbuf_free(out);
    strbuf_init(out);
    curl_easy_reset(c->curl); /* keeps the connection */
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, out);
    if (body) {
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (strcmp(method, "GET") != 0) curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
    CURLcode rc = curl_easy_perform(c->curl);
    long status = -1;
    if (rc == CURLE_OK) curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    else fprintf(stderr, "%s %s: %s\n", method, path, curl_easy_strerror(rc));
    curl_slist_free_all(h);
    return status;
}

/* A JSON answer (caller deletes), or NULL with a message when the request failed. */
static inline cJSON *api(cluster *c, const char *method, const char *path, const char *body) {
    strbuf b;
    strbuf_init(&b);
    long status = http(c, method, path, body, &b);
    cJSON *doc = NULL;
    if (status >= 200 && status < 300 && b.data) doc = cJSON_Parse(b.data);
    if (!doc && status > 0)
        fprintf(stderr, "%s %s: HTTP %ld %.300s\n", method, path, status, b.data ? b.data : "");
    strbuf_free(&b);
    return doc;
}

static inline double num_at(const cJSON *o, const char *key, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static inline const char *str_at(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* The last lines of a file, to stderr (what went wrong). */
static inline void show_tail(const char *path, int lines) {
    char *data = NULL, err[256];
    size_t len = 0;
    if (read_file(path, &data, &len, 64u << 20, err, sizeof err) != 0) return;
    size_t start = len;
    for (int n = 0; start > 0; start--)
        if (data[start - 1] == '\n' && ++n > lines) break;
    fprintf(stderr, "---- %s (last %d lines)\n%s", path, lines, data + start);
    free(data);
}

/* Each benchmark kills what its attempts left behind (every process of the cluster's workdir). */
static int cluster_kill_strays(const cluster *c);

/* Remove everything: workers first (so none waits for the daemon), the daemon, strays, files. */
static inline void cluster_stop(cluster *c, int failed) {
    for (int i = 0; i < c->nworkers; i++)
        if (c->wpid[i] > 0) kill(c->wpid[i], SIGTERM);
    for (int i = 0; i < c->nworkers; i++) stop_process(&c->wpid[i], 5000);
    stop_process(&c->daemon, 5000);
    if (c->tmp[0]) cluster_kill_strays(c);
    if (c->curl) curl_easy_cleanup(c->curl);
    c->curl = NULL;
    if (!c->tmp[0]) return;
    if (failed) {
        char p[700];
        snprintf(p, sizeof p, "%s/umdqd.log", c->home);
        show_tail(p, 15);
    }
    const char *keep = getenv("KEEP_TMP");
    if (keep && strcmp(keep, "1") == 0) fprintf(stderr, "files kept in %s\n", c->tmp);
    else nftw(c->tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    c->tmp[0] = 0;
}

/* A temporary home and a daemon on free loopback ports; 0 once GET /api/health answers. */
static inline int cluster_start(cluster *c, const char *argv0, const char *what) {
    memset(c, 0, sizeof *c);
    if (find_bindir(argv0, c->bindir, sizeof c->bindir) != 0) return -1;
    const char *t = getenv("TMPDIR");
    snprintf(c->tmp, sizeof c->tmp, "%s/umdq-bench-%s-XXXXXX", t && t[0] ? t : "/tmp", what);
    if (!mkdtemp(c->tmp)) {
        perror("mkdtemp");
        c->tmp[0] = 0;
        return -1;
    }
    snprintf(c->home, sizeof c->home, "%s/home", c->tmp);
    snprintf(c->work, sizeof c->work, "%s/work", c->tmp);
    if (mkdir_p(c->home, 0700) != 0 || mkdir_p(c->work, 0755) != 0) return -1;
    char bin[PATH_MAX + 16], log[700], json[700], tok[700], err[256];
    snprintf(bin, sizeof bin, "%s/umdqd", c->bindir);
    snprintf(log, sizeof log, "%s/umdqd.out", c->tmp);
    char *argv[] = {bin, "--home", c->home, "--http", "127.0.0.1:0", "--zmq", "tcp://127.0.0.1:*", NULL};
    if ((c->daemon = spawn(log, argv)) < 0) return -1;
    snprintf(json, sizeof json, "%s/umdqd.json", c->home);
    snprintf(tok, sizeof tok, "%s/token", c->home);
    for (int ms = 0;; ms += 20) {
        char *data = NULL;
        size_t len;
        if (read_file(json, &data, &len, 1 << 16, err, sizeof err) == 0) {
            cJSON *d = cJSON_Parse(data);
            free(data);
            snprintf(c->url, sizeof c->url, "%s", str_at(d, "http"));
            snprintf(c->zmq, sizeof c->zmq, "%s", str_at(d, "zmq"));
            cJSON_Delete(d);
            if (c->url[0] && c->zmq[0]) break;
        }
        if (!alive(&c->daemon) || ms > 15000 || interrupted) {
            fprintf(stderr, "umdqd did not start\n");
            show_tail(log, 15);
            return -1;
        }
        sleep_ms(20);
    }
    char *token = NULL;
    size_t len = 0;
    if (read_file(tok, &token, &len, 4096, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    token[strcspn(token, "\r\n")] = 0;
    snprintf(c->token, sizeof c->token, "%s", token);
    free(token);
    if (!(c->curl = curl_easy_init())) return -1;
    cJSON *h = api(c, "GET", "/api/health", NULL);
    int ok = h != NULL;
    cJSON_Delete(h);
    return ok ? 0 : -1;
}

/* Start a CPU worker; its index, or -1. */
static inline int worker_start(cluster *c, const char *name) {
    if (c->nworkers == MAX_WORKERS) return -1;
    int i = c->nworkers;
    char bin[PATH_MAX + 16], log[700];
    snprintf(bin, sizeof bin, "%s/umdq-worker", c->bindir);
    snprintf(log, sizeof log, "%s/worker-%d.out", c->tmp, i);
    snprintf(c->wname[i], sizeof c->wname[i], "%s", name);
    char *argv[] = {bin, "--connect", c->zmq, "--cpu", "--name", c->wname[i], "--workdir", c->work, NULL};
    if ((c->wpid[i] = spawn(log, argv)) < 0) return -1;
    c->nworkers++;
    return i;
}

/* Wait until every running worker of ours is IDLE; 0, or -1 after ms or when one died. */
static inline int wait_idle(cluster *c, int ms) {
    for (int t = 0; t <= ms && !interrupted; t += 20) {
        int want = 0, idle = 0;
        for (int i = 0; i < c->nworkers; i++) {
            if (c->wpid[i] <= 0) continue;
            if (!alive(&c->wpid[i])) {
                fprintf(stderr, "worker %s exited\n", c->wname[i]);
                return -1;
            }
            want++;
        }
        cJSON *doc = api(c, "GET", "/api/workers", NULL);
        const cJSON *w;
        cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(doc, "workers")) {
            for (int i = 0; i < c->nworkers; i++)
                if (c->wpid[i] > 0 && strcmp(str_at(w, "id"), c->wname[i]) == 0 &&
                    strcmp(str_at(w, "state"), "IDLE") == 0)
                    idle++;
        }
        cJSON_Delete(doc);
        if (idle == want) return 0;
        sleep_ms(20);
    }
    fprintf(stderr, "the workers did not all become IDLE\n");
    return -1;
}

#endif
