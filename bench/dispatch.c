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
#include "cluster.h"

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

static int cluster_kill_strays(const cluster *c) { return kill_strays(c, 0); }

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
