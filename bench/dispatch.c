/* dispatch.c: umdq's overhead per job. 2,000 kind `command` jobs running `true` on 4 CPU workers,
 * timed from the POST of the sweep until every job is SUCCEEDED, against the floor measured in the
 * same run: the same 2,000 fork + exec of `/bin/sh -c true` + waitpid in a plain loop (what a
 * worker's child does for such a job). Prints both times, jobs/s of each, umdq's wall time per job,
 * its overhead per job ((T_umdq - T_loop) / jobs, target under 2 ms), where an attempt's time goes
 * (from the job rows), and the dispatch-latency quantiles estimated from GET /metrics.
 *
 *   dispatch [--jobs N] [--workers N]
 *
 * It starts the real umdqd and umdq-worker ($UMDQ_BUILD/bin, else the bin/ next to this program's
 * build directory) in a temporary home on free loopback ports and removes every process and file
 * at the end (KEEP_TMP=1 keeps the files). Exit status 1 when the work itself failed.
 * umdq-uses: common */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "util.h"

/* ---- the harness: a daemon and its workers in a temporary home ------------------------------- */

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
static void on_interrupt(int sig) { (void)sig; interrupted = 1; }

static void sleep_ms(int ms) {
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* $UMDQ_BUILD/bin, else dirname(argv0)/../bin. 0, or -1 with a message. */
static int find_bindir(const char *argv0, char *out, size_t n) {
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
static pid_t spawn(const char *log, char *const argv[]) {
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
static int alive(pid_t *pid) {
    if (*pid <= 0) return 0;
    int st;
    if (waitpid(*pid, &st, WNOHANG) == 0) return 1;
    *pid = 0;
    return 0;
}

/* SIGTERM, then SIGKILL after ms; reaps. */
static void stop_process(pid_t *pid, int ms) {
    if (*pid <= 0) return;
    kill(*pid, SIGTERM);
    for (int t = 0; t < ms && alive(pid); t += 10) sleep_ms(10);
    if (*pid > 0) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
        *pid = 0;
    }
}

/* Processes of ours that a worker left behind (job process groups): found by the workdir in their
 * environment, which only attempts of these workers have. SIGKILL them; how many there were. */
static int kill_strays(const cluster *c, long job) {
    char want[700], jobvar[64];
    snprintf(want, sizeof want, "UMDQ_WORKDIR=%s/", c->work);
    snprintf(jobvar, sizeof jobvar, "UMDQ_JOB_ID=%ld", job);
    DIR *d = opendir("/proc");
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 1 || pid == (long)getpid()) continue;
        char path[64], env[16384];
        snprintf(path, sizeof path, "/proc/%ld/environ", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t len = read(fd, env, sizeof env - 1);
        close(fd);
        if (len <= 0) continue;
        int mine = 0, this_job = job <= 0;
        env[len] = 0;
        for (ssize_t i = 0; i < len; i += (ssize_t)strlen(env + i) + 1) {
            if (strncmp(env + i, want, strlen(want)) == 0) mine = 1;
            if (strcmp(env + i, jobvar) == 0) this_job = 1;
        }
        if (mine && this_job && kill((pid_t)pid, SIGKILL) == 0) n++;
    }
    closedir(d);
    return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *user) {
    strbuf_append(user, data, size * nmemb);
    return size * nmemb;
}

/* One request; the body lands in out (cleared first). The HTTP status, or -1. */
static long http(cluster *c, const char *method, const char *path, const char *body, strbuf *out) {
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
static cJSON *api(cluster *c, const char *method, const char *path, const char *body) {
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

static double num_at(const cJSON *o, const char *key, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static const char *str_at(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* The last lines of a file, to stderr (what went wrong). */
static void show_tail(const char *path, int lines) {
    char *data = NULL, err[256];
    size_t len = 0;
    if (read_file(path, &data, &len, 64u << 20, err, sizeof err) != 0) return;
    size_t start = len;
    for (int n = 0; start > 0; start--)
        if (data[start - 1] == '\n' && ++n > lines) break;
    fprintf(stderr, "---- %s (last %d lines)\n%s", path, lines, data + start);
    free(data);
}

/* Remove everything: workers first (so none waits for the daemon), the daemon, strays, files. */
static void cluster_stop(cluster *c, int failed) {
    for (int i = 0; i < c->nworkers; i++)
        if (c->wpid[i] > 0) kill(c->wpid[i], SIGTERM);
    for (int i = 0; i < c->nworkers; i++) stop_process(&c->wpid[i], 5000);
    stop_process(&c->daemon, 5000);
    if (c->tmp[0]) kill_strays(c, 0);
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
static int cluster_start(cluster *c, const char *argv0, const char *what) {
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
static int worker_start(cluster *c, const char *name) {
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
static int wait_idle(cluster *c, int ms) {
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

/* ---- the floor ----------------------------------------------------------------------------------- */

/* n x (fork, exec /bin/sh -c true, waitpid), one at a time. Seconds, or < 0 when one failed. */
static double run_loop(int n) {
    double t0 = mono_s();
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            execl("/bin/sh", "sh", "-c", "true", (char *)NULL);
            _exit(127);
        }
        int st;
        if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "loop: /bin/sh -c true failed\n");
            return -1;
        }
    }
    return mono_s() - t0;
}

/* ---- the dispatch-latency histogram ------------------------------------------------------------- */

#define MAX_BUCKETS 32

typedef struct {
    double le[MAX_BUCKETS];   /* upper bounds; the last one is +Inf */
    double cum[MAX_BUCKETS];  /* cumulative counts */
    int n;
    double sum, count;
} histogram;

/* umdq_dispatch_latency_seconds from the Prometheus text; 0 when found. */
static int parse_histogram(const char *text, histogram *h) {
    const char *name = "umdq_dispatch_latency_seconds";
    size_t nl = strlen(name);
    memset(h, 0, sizeof *h);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, name, nl) != 0) continue;
        const char *rest = line + nl;
        if (strncmp(rest, "_bucket{le=\"", 12) == 0 && h->n < MAX_BUCKETS) {
            rest += 12;
            h->le[h->n] = strncmp(rest, "+Inf", 4) == 0 ? INFINITY : strtod(rest, NULL);
            const char *sp = strchr(rest, ' ');
            h->cum[h->n++] = sp ? strtod(sp + 1, NULL) : 0;
        } else if (strncmp(rest, "_sum ", 5) == 0) {
            h->sum = strtod(rest + 5, NULL);
        } else if (strncmp(rest, "_count ", 7) == 0) {
            h->count = strtod(rest + 7, NULL);
        }
    }
    return h->n > 0 && h->count > 0 ? 0 : -1;
}

/* The q-quantile, interpolated linearly inside its bucket (as Prometheus' histogram_quantile does),
 * as text in buf: "> LAST s" when it lies in the +Inf bucket. */
static const char *histogram_quantile(const histogram *h, double q, char *buf, size_t n) {
    double rank = q * h->count, prev_le = 0, prev_cum = 0;
    for (int i = 0; i < h->n; i++) {
        if (h->cum[i] >= rank && h->cum[i] > 0) {
            if (isinf(h->le[i])) break;
            double v = prev_le + (h->le[i] - prev_le) * (rank - prev_cum) / (h->cum[i] - prev_cum);
            if (h->cum[i] == prev_cum) v = h->le[i];
            snprintf(buf, n, "~ %.3f s", v);
            return buf;
        }
        if (!isinf(h->le[i])) prev_le = h->le[i];
        prev_cum = h->cum[i];
    }
    snprintf(buf, n, "> %g s", prev_le);
    return buf;
}

/* ---- where an attempt's time goes ---------------------------------------------------------------- */

typedef struct {
    double started, finished;
    int worker;
} job_span;

static int span_cmp(const void *a, const void *b) {
    const job_span *x = a, *y = b;
    if (x->worker != y->worker) return x->worker - y->worker;
    return x->started < y->started ? -1 : x->started > y->started;
}

static int dbl_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* From the job rows (started = dispatch, finished = `finished` stored): the attempts' durations and
 * the gaps between one worker's consecutive attempts. Printed; 0, or -1 when the rows are missing. */
static int print_breakdown(cluster *c, long sweep, int njobs, double loop_per_job) {
    char path[96];
    snprintf(path, sizeof path, "/api/sweeps/%ld", sweep);
    cJSON *doc = api(c, "GET", path, NULL);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(doc, "jobs"), *j;
    job_span *s = calloc((size_t)njobs + 1, sizeof *s);
    double *dur = calloc((size_t)njobs + 1, sizeof *dur), *gap = calloc((size_t)njobs + 1, sizeof *gap);
    int n = 0, ng = 0, rc = -1;
    if (!doc || !s || !dur || !gap) goto done;
    cJSON_ArrayForEach(j, jobs) {
        if (n == njobs) break;
        const char *w = str_at(j, "worker");
        int wi = -1;
        for (int i = 0; i < c->nworkers; i++)
            if (strcmp(w, c->wname[i]) == 0) wi = i;
        s[n].started = num_at(j, "started", -1);
        s[n].finished = num_at(j, "finished", -1);
        s[n].worker = wi;
        if (wi < 0 || s[n].started < 0 || s[n].finished < s[n].started) continue;
        dur[n] = s[n].finished - s[n].started;
        n++;
    }
    if (n == 0) goto done;
    qsort(s, (size_t)n, sizeof *s, span_cmp);
    for (int i = 1; i < n; i++)
        if (s[i].worker == s[i - 1].worker) gap[ng++] = s[i].started - s[i - 1].finished;
    qsort(dur, (size_t)n, sizeof *dur, dbl_cmp);
    double dsum = 0, gsum = 0;
    for (int i = 0; i < n; i++) dsum += dur[i];
    for (int i = 0; i < ng; i++) gsum += gap[i];
    if (ng) qsort(gap, (size_t)ng, sizeof *gap, dbl_cmp);
    printf("  an attempt, from its dispatch to its `finished` stored (job rows, %d jobs):\n", n);
    printf("      mean %.2f ms, p50 %.2f ms, p99 %.2f ms, max %.2f ms  (the loop's fork + exec + wait: %.2f ms)\n",
           dsum / n * 1e3, dur[n / 2] * 1e3, dur[(int)(0.99 * (n - 1))] * 1e3, dur[n - 1] * 1e3, loop_per_job * 1e3);
    if (ng)
        printf("      a worker's next dispatch after its `finished` is stored: mean %.2f ms, p50 %.2f ms, "
               "max %.2f ms\n",
               gsum / ng * 1e3, gap[ng / 2] * 1e3, gap[ng - 1] * 1e3);
    rc = 0;
done:
    free(s);
    free(dur);
    free(gap);
    cJSON_Delete(doc);
    return rc;
}

/* ---- the benchmark --------------------------------------------------------------------------------- */

/* The sweep: njobs command jobs `true`, one per params.i. Caller frees. */
static char *make_spec(int njobs) {
    strbuf b;
    strbuf_init(&b);
    strbuf_puts(&b, "{\"name\": \"bench-dispatch\", \"base\": {\"kind\": \"command\", \"command\": \"true\", "
                    "\"params\": {\"i\": 0}}, \"grid\": {\"params.i\": [");
    for (int i = 0; i < njobs; i++) strbuf_printf(&b, "%s%d", i ? ", " : "", i);
    strbuf_puts(&b, "]}, \"retry\": {\"max_attempts\": 1}}");
    return strbuf_steal(&b);
}

static int parse_args(int argc, char **argv, int *jobs, int *workers) {
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        long n = v ? strtol(v, &end, 10) : 0;
        if (!v || *end || n < 1) goto usage;
        if (strcmp(o, "--jobs") == 0 && n <= 1000000) *jobs = (int)n;
        else if (strcmp(o, "--workers") == 0 && n <= MAX_WORKERS) *workers = (int)n;
        else goto usage;
        i++;
    }
    return 0;
usage:
    fprintf(stderr, "usage: dispatch [--jobs N (1..1000000, default 2000)] [--workers N (1..%d, default 4)]\n",
            MAX_WORKERS);
    return 2;
}

int main(int argc, char **argv) {
    int njobs = 2000, nworkers = 4, failed = 1;
    if (parse_args(argc, argv, &njobs, &nworkers) != 0) return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    cluster c;
    memset(&c, 0, sizeof c);
    char *spec = NULL;
    long ncores = sysconf(_SC_NPROCESSORS_ONLN);

    /* the floor first, while nothing else of ours runs (a few forks to warm the page cache) */
    if (run_loop(20) < 0) return 1;
    double t_loop = run_loop(njobs);
    if (t_loop < 0) return 1;

    if (cluster_start(&c, argv[0], "dispatch") != 0) goto done;
    for (int i = 0; i < nworkers; i++) {
        char name[64];
        snprintf(name, sizeof name, "bench/cpu%d", i);
        if (worker_start(&c, name) < 0) goto done;
    }
    if (wait_idle(&c, 20000) != 0) goto done;

    spec = make_spec(njobs);
    if (!spec) goto done;
    double t0 = mono_s();
    cJSON *sub = api(&c, "POST", "/api/sweeps", spec);
    double t_post = mono_s() - t0;
    long sweep = (long)num_at(cJSON_GetObjectItemCaseSensitive(sub, "sweep"), "id", -1);
    int added = (int)num_at(sub, "new", -1);
    cJSON_Delete(sub);
    if (sweep < 0 || added != njobs) {
        fprintf(stderr, "the sweep was not accepted whole (%d of %d jobs new)\n", added, njobs);
        goto done;
    }
    char path[96];
    snprintf(path, sizeof path, "/api/sweeps/%ld?jobs=0", sweep);
    double limit = 120 + 0.1 * njobs, t_umdq = -1;
    int succeeded = 0;
    while (!interrupted && mono_s() - t0 < limit) {
        cJSON *doc = api(&c, "GET", path, NULL);
        const cJSON *summary = cJSON_GetObjectItemCaseSensitive(doc, "sweep");
        const cJSON *counts = cJSON_GetObjectItemCaseSensitive(summary, "counts");
        succeeded = (int)num_at(counts, "SUCCEEDED", 0);
        int bad = (int)(num_at(counts, "FAILED", 0) + num_at(counts, "LOST", 0) + num_at(counts, "CANCELLED", 0) +
                        num_at(counts, "PREEMPTED", 0));
        cJSON_Delete(doc);
        if (!counts) goto done;
        if (succeeded == njobs) {
            t_umdq = mono_s() - t0;
            break;
        }
        if (bad) {
            fprintf(stderr, "%d jobs did not succeed\n", bad);
            goto done;
        }
        sleep_ms(20);
    }
    if (t_umdq < 0) {
        fprintf(stderr, "only %d of %d jobs succeeded within %.0f s\n", succeeded, njobs, limit);
        goto done;
    }

    printf("dispatch: %d kind command jobs running `true` on %d CPU workers (%ld cores)\n", njobs, nworkers, ncores);
    printf("  floor  plain loop: fork + exec /bin/sh -c true + waitpid, %d in a row  %9.1f ms  %8.0f jobs/s\n",
           njobs, t_loop * 1e3, njobs / t_loop);
    printf("  umdq   POST /api/sweeps -> all %d SUCCEEDED (polled every 20 ms)      %9.1f ms  %8.0f jobs/s\n", njobs,
           t_umdq * 1e3, njobs / t_umdq);
    printf("         (of which the POST, expanding and storing the sweep: %.1f ms)\n", t_post * 1e3);
    printf("  umdq wall time per job: T_umdq / %d = %.3f ms (the loop: %.3f ms)\n", njobs, t_umdq / njobs * 1e3,
           t_loop / njobs * 1e3);
    double overhead = (t_umdq - t_loop) / njobs;
    printf("  umdq overhead per job: (T_umdq - T_loop) / %d = %.3f ms (target under 2 ms: %s)\n", njobs,
           overhead * 1e3, overhead < 0.002 ? "met" : "missed");
    printf("      note: umdq runs %d jobs at a time on %ld cores, the loop one at a time\n", nworkers, ncores);
    printf("  ratio T_umdq / T_loop = %.2fx\n", t_umdq / t_loop);
    const char *tmpbase = getenv("TMPDIR");
    printf("  (the daemon's home and the workers' scratch directories are under %s; TMPDIR moves them)\n",
           tmpbase && tmpbase[0] ? tmpbase : "/tmp");
    print_breakdown(&c, sweep, njobs, t_loop / njobs);

    strbuf m;
    strbuf_init(&m);
    histogram h;
    if (http(&c, "GET", "/metrics", NULL, &m) == 200 && m.data && parse_histogram(m.data, &h) == 0) {
        printf("  dispatch latency (GET /metrics umdq_dispatch_latency_seconds: QUEUED -> job sent; with the whole\n"
               "  sweep queued at once this is mostly the wait behind the jobs before it):\n");
        char q50[32], q90[32], q99[32];
        printf("      p50 %s, p90 %s, p99 %s, mean %.3f s over %.0f dispatches\n",
               histogram_quantile(&h, 0.5, q50, sizeof q50), histogram_quantile(&h, 0.9, q90, sizeof q90),
               histogram_quantile(&h, 0.99, q99, sizeof q99), h.sum / h.count, h.count);
    } else {
        fprintf(stderr, "GET /metrics: no umdq_dispatch_latency_seconds histogram\n");
        strbuf_free(&m);
        goto done;
    }
    strbuf_free(&m);
    failed = 0;
done:
    if (interrupted) fprintf(stderr, "interrupted\n");
    free(spec);
    cluster_stop(&c, failed);
    curl_global_cleanup();
    return failed;
}
