/* runner.c: one attempt's child process: fork, pipes, report lines, log bytes, stop and reap. */
#include "runner.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "artifacts.h"
#include "ckpt.h"
#include "errlist.h"
#include "jsonx.h"
#include "log.h"
#include "template.h"
#include "umd.h"
#include "umdq.h"
#include "util.h"

#define MAX_LINE (1u << 20)          /* a longer report line is refused */
#define LOG_PENDING_MAX (8u << 20)   /* stop reading stdout/stderr beyond this much untaken log */
#define POINTS_PENDING_MAX 200000    /* stop reading report lines beyond this many untaken points */
#define READ_BUDGET (256u << 10)     /* bytes read from one pipe in one runner_pump */
#define DRAIN_MS 2000                /* after the child exits: wait this long for the pipes' EOF */
#define EXIT_CHECK_MS 100            /* how often the exit is looked for without other wake-ups */
#define REPORT_FD 3                  /* the report pipe in a command child ($UMDQ_METRICS_FD) */

static const char REPORT_PREFIX[] = "{\"umdq\":";
#define REPORT_PREFIX_LEN (sizeof REPORT_PREFIX - 1)

enum { PIPE_OUT = 0, PIPE_ERR = 1, PIPE_REPORT = 2 };

typedef struct {
    char *key;       /* owned */
    int64_t step;
    double value;
} point;

/* The line being assembled from one pipe. */
typedef struct {
    char *buf;       /* owned */
    size_t len, cap;
    int skipping;    /* ignore bytes up to the next newline (not a report line, or too long) */
} linebuf;

struct runner {
    pid_t pid;                  /* the child; also the id of its process group */
    int is_umd;                 /* the trainer runs in the child itself (else: a supervisor and sh) */
    int fd[RUNNER_MAX_FDS];     /* read ends (non-blocking), -1 once closed */
    linebuf line[RUNNER_MAX_FDS]; /* stdout and report lines (stderr is not parsed) */

    char *log;                  /* untaken log bytes are log[log_start .. log_len), owned */
    size_t log_start, log_len, log_cap;
    int64_t log_offset;         /* attempt log offset of log[log_start] */

    char *tail;                 /* ring of the last RUNNER_TAIL stderr bytes, owned */
    size_t tail_pos;            /* next write position */
    int tail_full;

    point *points;              /* queue points[points_head .. npoints), owned */
    size_t points_head, npoints, points_cap;

    cJSON *results_all;         /* owned */
    cJSON *results_new;         /* owned; NULL when nothing new */
    int64_t step;               /* the latest progress step, else the highest metric step */
    int have_progress;
    int64_t beats;              /* progress lines so far: each one is a sign of life */

    int exited;                 /* the child's exit was seen (not reaped yet) */
    int done;                   /* reaped, pipes closed */
    int64_t kill_at;            /* mono ms to send SIGKILL, -1 none */
    int killed;
    int64_t drain_until;        /* mono ms; valid once exited */
    int64_t last_pump;
    runner_exit_info info;
};

/* ---- small helpers ---------------------------------------------------------------------------- */

static int grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    char *p = realloc(*buf, c);
    if (!p) return UMDQ_ENOMEM;
    *buf = p;
    *cap = c;
    return 0;
}

static void log_append(runner *r, const char *data, size_t n) {
    if (r->log_start > 0 && r->log_start >= r->log_len / 2) {
        memmove(r->log, r->log + r->log_start, r->log_len - r->log_start);
        r->log_len -= r->log_start;
        r->log_start = 0;
    }
    if (grow(&r->log, &r->log_cap, r->log_len + n) != 0) return; /* bytes lost; nothing better */
    memcpy(r->log + r->log_len, data, n);
    r->log_len += n;
}

/* A line of our own in the attempt's log (malformed report lines). */
static void log_note(runner *r, const char *why, const char *line, size_t len) {
    char buf[1024];
    size_t show = len > 160 ? 160 : len;
    int n = snprintf(buf, sizeof buf, "umdq-worker: ignored a malformed report line (%s): %.*s%s\n",
                     why, (int)show, line, show < len ? "..." : "");
    if (n < 0) return;
    if ((size_t)n >= sizeof buf) {
        n = sizeof buf - 1;
        buf[n - 1] = '\n';
    }
    for (int i = 0; i < n - 1; i++)
        if (buf[i] == '\n' || buf[i] == '\r') buf[i] = ' ';
    log_append(r, buf, (size_t)n);
}

static void tail_append(runner *r, const char *data, size_t n) {
    if (n >= RUNNER_TAIL) {
        memcpy(r->tail, data + n - RUNNER_TAIL, RUNNER_TAIL);
        r->tail_pos = 0;
        r->tail_full = 1;
        return;
    }
    size_t first = RUNNER_TAIL - r->tail_pos;
    if (first > n) first = n;
    memcpy(r->tail + r->tail_pos, data, first);
    memcpy(r->tail, data + first, n - first);
    size_t pos = r->tail_pos + n;
    if (pos >= RUNNER_TAIL) r->tail_full = 1;
    r->tail_pos = pos % RUNNER_TAIL;
}

static void points_push(runner *r, const char *key, int64_t step, double value) {
    if (r->npoints == r->points_cap) {
        if (r->points_head > 0) {
            memmove(r->points, r->points + r->points_head,
                    (r->npoints - r->points_head) * sizeof *r->points);
            r->npoints -= r->points_head;
            r->points_head = 0;
        }
        if (r->npoints == r->points_cap) {
            size_t c = r->points_cap ? r->points_cap * 2 : 256;
            point *p = realloc(r->points, c * sizeof *p);
            if (!p) return;
            r->points = p;
            r->points_cap = c;
        }
    }
    char *k = strdup(key);
    if (!k) return;
    r->points[r->npoints++] = (point){k, step, value};
}

static int step_of(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return UMDQ_EINVAL;
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || fabs(d) > 9007199254740992.0) return UMDQ_EINVAL;
    *out = (int64_t)d;
    return 0;
}

static void result_add(runner *r, const char *key, const cJSON *v) {
    if (cJSON_GetObjectItemCaseSensitive(r->results_all, key)) return; /* the first value wins */
    cJSON *a = cJSON_IsNumber(v) ? cJSON_CreateNumber(v->valuedouble) : cJSON_CreateString(v->valuestring);
    cJSON *b = cJSON_Duplicate(a, 1);
    if (!r->results_new) r->results_new = cJSON_CreateObject();
    if (!a || !b || !r->results_new) {
        cJSON_Delete(a);
        cJSON_Delete(b);
        return;
    }
    cJSON_AddItemToObject(r->results_all, key, a);
    cJSON_AddItemToObject(r->results_new, key, b);
}

/* One report line (JSON object). from_fd: the report pipe, where "umdq" may be left out. */
static void report_line(runner *r, const char *line, size_t len, int from_fd) {
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t')) len--;
    size_t lead = 0;
    while (lead < len && (line[lead] == ' ' || line[lead] == '\t')) lead++;
    if (lead == len) return; /* blank lines are harmless */
    char err[256];
    const char *where = from_fd ? "fd 3" : "stdout";
    char why[400];
    cJSON *o = json_parse_n(line + lead, len - lead, err, sizeof err);
    if (!o) {
        snprintf(why, sizeof why, "%s: not JSON: %s", where, err);
        log_note(r, why, line, len);
        return;
    }
    const char *type = NULL;
    if (!cJSON_IsObject(o)) {
        snprintf(why, sizeof why, "%s: not a JSON object", where);
        goto malformed;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "umdq");
    if (t) {
        if (!cJSON_IsString(t) || (strcmp(t->valuestring, "metric") != 0 &&
                                   strcmp(t->valuestring, "result") != 0 &&
                                   strcmp(t->valuestring, "progress") != 0)) {
            snprintf(why, sizeof why, "%s: \"umdq\" must be \"metric\", \"result\" or \"progress\"", where);
            goto malformed;
        }
        type = t->valuestring;
    } else {
        type = cJSON_GetObjectItemCaseSensitive(o, "step") ? "metric" : "result";
    }

    if (strcmp(type, "metric") == 0 || strcmp(type, "progress") == 0) {
        int64_t step;
        if (step_of(cJSON_GetObjectItemCaseSensitive(o, "step"), &step) != 0) {
            snprintf(why, sizeof why, "%s: %s line needs an integer \"step\"", where, type);
            goto malformed;
        }
        if (type[0] == 'p') {
            r->step = step;
            r->have_progress = 1;
            r->beats++;
        } else if (!r->have_progress && step > r->step) {
            r->step = step;
        }
        if (type[0] == 'm') {
            const cJSON *it;
            cJSON_ArrayForEach(it, o) {
                if (!it->string || strcmp(it->string, "umdq") == 0 || strcmp(it->string, "step") == 0)
                    continue;
                if (cJSON_IsNumber(it) && isfinite(it->valuedouble))
                    points_push(r, it->string, step, it->valuedouble);
            }
        }
    } else {
        const cJSON *it;
        cJSON_ArrayForEach(it, o) {
            if (!it->string || strcmp(it->string, "umdq") == 0) continue;
            if ((cJSON_IsNumber(it) && isfinite(it->valuedouble)) || cJSON_IsString(it))
                result_add(r, it->string, it);
        }
    }
    cJSON_Delete(o);
    return;
malformed:
    log_note(r, why, line, len);
    cJSON_Delete(o);
}

/* Feed bytes of stdout (which = PIPE_OUT) or the report pipe into its line buffer. */
static void lines_feed(runner *r, int which, const char *data, size_t n) {
    linebuf *lb = &r->line[which];
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t seg = nl ? (size_t)(nl - data) : n;
        if (!lb->skipping) {
            if (lb->len + seg > MAX_LINE) {
                /* on stdout only a line that looks like a report line gets this far */
                log_note(r, which == PIPE_REPORT ? "fd 3: longer than 1 MiB" : "stdout: longer than 1 MiB",
                         lb->buf ? lb->buf : "", lb->len);
                lb->skipping = 1;
                lb->len = 0;
            } else if (grow(&lb->buf, &lb->cap, lb->len + seg + 1) == 0) {
                memcpy(lb->buf + lb->len, data, seg);
                lb->len += seg;
                if (which == PIPE_OUT) {
                    size_t m = lb->len < REPORT_PREFIX_LEN ? lb->len : REPORT_PREFIX_LEN;
                    if (memcmp(lb->buf, REPORT_PREFIX, m) != 0) {
                        lb->skipping = 1;
                        lb->len = 0;
                    }
                }
            } else {
                lb->skipping = 1;
                lb->len = 0;
            }
        }
        if (!nl) break;
        if (!lb->skipping && (which == PIPE_REPORT || lb->len >= REPORT_PREFIX_LEN))
            report_line(r, lb->buf, lb->len, which == PIPE_REPORT);
        lb->len = 0;
        lb->skipping = 0;
        data += seg + 1;
        n -= seg + 1;
    }
}

static void lines_finish(runner *r, int which) {
    linebuf *lb = &r->line[which];
    if (which != PIPE_ERR && !lb->skipping && lb->len > 0 &&
        (which == PIPE_REPORT || lb->len >= REPORT_PREFIX_LEN))
        report_line(r, lb->buf, lb->len, which == PIPE_REPORT);
    lb->len = 0;
    lb->skipping = 0;
}

static int pipe_wanted(const runner *r, int which) {
    size_t log_pending = r->log_len - r->log_start;
    size_t pts = r->npoints - r->points_head;
    switch (which) {
    case PIPE_OUT: return log_pending < LOG_PENDING_MAX && pts < POINTS_PENDING_MAX;
    case PIPE_ERR: return log_pending < LOG_PENDING_MAX;
    default: return pts < POINTS_PENDING_MAX;
    }
}

static void pipe_close(runner *r, int which) {
    if (r->fd[which] >= 0) close(r->fd[which]);
    r->fd[which] = -1;
    lines_finish(r, which);
}

static void pipe_read(runner *r, int which) {
    char buf[65536];
    size_t budget = READ_BUDGET;
    while (r->fd[which] >= 0 && budget > 0 && pipe_wanted(r, which)) {
        ssize_t n = read(r->fd[which], buf, sizeof buf);
        if (n > 0) {
            if (which == PIPE_OUT || which == PIPE_ERR) log_append(r, buf, (size_t)n);
            if (which == PIPE_ERR) tail_append(r, buf, (size_t)n);
            else lines_feed(r, which, buf, (size_t)n);
            budget -= (size_t)n < budget ? (size_t)n : budget;
        } else if (n == 0) {
            pipe_close(r, which);
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            pipe_close(r, which);
        }
    }
}

/* ---- the child --------------------------------------------------------------------------------- */

/* In a fresh child: default dispositions (the parent blocked every signal around fork). */
static void child_reset_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP) sigaction(s, &sa, NULL);
}

static void child_unblock_signals(void) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void child_fail(const char *what, int code) {
    char buf[1200];
    int n = snprintf(buf, sizeof buf, "umdq-worker: %s: %s\n", what, strerror(errno));
    if (n > 0) {
        ssize_t w = write(2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
        (void)w;
    }
    _exit(code);
}

/* Put the three write ends on fds 1, 2 and report_fd (report_fd < 0: leave it where it is) and
 * /dev/null on 0. The fds are first moved above 9 so that none is overwritten by another. */
static void child_wire_fds(int out_w, int err_w, int *rep_w, int report_fd) {
    int o = fcntl(out_w, F_DUPFD, 10), e = fcntl(err_w, F_DUPFD, 10), p = fcntl(*rep_w, F_DUPFD, 10);
    int null = open("/dev/null", O_RDONLY);
    if (o < 0 || e < 0 || p < 0 || null < 0) child_fail("cannot set up the child's pipes", 127);
    if (dup2(null, 0) < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0) child_fail("dup2", 127);
    if (report_fd >= 0) {
        if (dup2(p, report_fd) < 0) child_fail("dup2", 127);
        *rep_w = report_fd;
    } else {
        int q = fcntl(p, F_DUPFD, 3);
        if (q < 0) child_fail("cannot set up the report pipe", 127);
        *rep_w = q;
    }
    close(null);
    close(o);
    close(e);
    if (p != *rep_w) close(p);
}

/* Own process group, the parent-death signal, the scratch directory as cwd. */
static void child_common(const char *scratch, int pdeath_sig, pid_t parent) {
    setpgid(0, 0);
    /* a worker killed outright must not leave its attempt running on the device */
    prctl(PR_SET_PDEATHSIG, pdeath_sig);
    if (getppid() != parent) _exit(127);
    if (chdir(scratch) != 0) child_fail("cannot enter the scratch directory", 126);
}

/* ---- kind command: the supervisor between the worker and sh ------------------------------------ */

#define SUPERVISOR_PDEATH_SIG SIGHUP
#define LEFTOVER_KILL_MS 1000   /* how long the supervisor tries to kill what sh left behind */

extern char **environ;

/* Names the job environment sets; inherited entries of these names are left out (the last one
 * only when the spec sets it). */
static const char *const JOB_VARS[] = {"UMDQ_JOB_ID", "UMDQ_ATTEMPT", "UMDQ_SEED", "UMDQ_SWEEP_ID",
                                       "UMDQ_METRICS_FD", "UMDQ_CONFIG", "UMDQ_WORKDIR",
                                       "CUDA_VISIBLE_DEVICES"};
#define NJOB_VARS ((int)(sizeof JOB_VARS / sizeof JOB_VARS[0]))

/* What the supervisor needs, made by the parent before fork, so that the child allocates nothing:
 * sh's argv and environment. */
typedef struct {
    char *argv[4];   /* "sh", "-c", the command, NULL; the command borrowed from runner_new */
    char **envp;     /* one allocation: the pointer array, then the new "NAME=value" strings */
} command_plan;

/* The job's environment: the worker's own less JOB_VARS, then the job's variables (and
 * CUDA_VISIBLE_DEVICES when the spec sets it). NULL on out of memory. Caller frees. */
static char **job_environment(const runner_spec *spec) {
    strbuf b;
    strbuf_init(&b);
    strbuf_printf(&b, "UMDQ_JOB_ID=%lld%c", (long long)spec->job, 0);
    strbuf_printf(&b, "UMDQ_ATTEMPT=%lld%c", (long long)spec->attempt, 0);
    strbuf_printf(&b, "UMDQ_SEED=%lld%c", (long long)spec->seed, 0);
    strbuf_printf(&b, "UMDQ_SWEEP_ID=%lld%c", (long long)spec->sweep, 0);
    strbuf_printf(&b, "UMDQ_METRICS_FD=%d%c", REPORT_FD, 0);
    strbuf_printf(&b, "UMDQ_CONFIG=%s/config.json%c", spec->scratch, 0);
    strbuf_printf(&b, "UMDQ_WORKDIR=%s%c", spec->scratch, 0);
    if (spec->cuda_devices) strbuf_printf(&b, "CUDA_VISIBLE_DEVICES=%s%c", spec->cuda_devices, 0);
    if (b.oom || !b.data) {
        strbuf_free(&b);
        return NULL;
    }
    size_t ninherit = 0;
    for (char **e = environ; e && *e; e++) ninherit++;
    size_t nptr = ninherit + NJOB_VARS + 1;
    char **envp = malloc(nptr * sizeof *envp + b.len);
    if (!envp) {
        strbuf_free(&b);
        return NULL;
    }
    char *strings = (char *)(envp + nptr);
    memcpy(strings, b.data, b.len);
    size_t n = 0;
    int nfilter = spec->cuda_devices ? NJOB_VARS : NJOB_VARS - 1;
    for (char **e = environ; e && *e; e++) {
        int ours = 0;
        for (int i = 0; i < nfilter && !ours; i++) {
            size_t k = strlen(JOB_VARS[i]);
            ours = strncmp(*e, JOB_VARS[i], k) == 0 && (*e)[k] == '=';
        }
        if (!ours) envp[n++] = *e;
    }
    for (size_t off = 0; off < b.len; off += strlen(strings + off) + 1) envp[n++] = strings + off;
    envp[n] = NULL;
    strbuf_free(&b);
    return envp;
}

/* Kill (SIGKILL) every child of the supervisor and reap them, until none is left or until
 * `until` (mono ms). After sh has ended its children are the processes it left behind, handed to
 * the supervisor (a child subreaper) as their parents end. Gives up at once without /proc. */
static void kill_children(int64_t until) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    for (;;) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0) {}
        if (p < 0 && errno == ECHILD) return;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n < 0) return;
        buf[n] = 0;
        for (char *s = buf, *end; *s; s = end) {
            long pid = strtol(s, &end, 10);
            if (end == s) break;
            if (pid > 1) kill((pid_t)pid, SIGKILL);
        }
        if (mono_ms() >= until) return;
        struct timespec ts = {0, 2 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* End the way sh ended: its exit code, or its signal (without a core file of our own). */
static void forward_status(int st) {
    if (WIFEXITED(st)) _exit(WEXITSTATUS(st));
    int sig = WIFSIGNALED(st) ? WTERMSIG(st) : SIGKILL;
    prctl(PR_SET_DUMPABLE, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(sig, &sa, NULL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    kill(getpid(), sig);
    _exit(128 + sig); /* a signal whose default is to be ignored */
}

/* The supervisor's life after sh started: wait for it, pass SIGTERM on to the group once, stop
 * the group when the worker is gone, and end as sh ended. SIGCHLD, SIGTERM and the parent-death
 * signal are blocked and taken with sigtimedwait, so nothing runs in a signal handler. */
static void supervise(pid_t sh, pid_t parent, int grace_ms, const sigset_t *waitset) {
    pid_t group = getpid();
    int sh_status = 0, sh_done = 0, term_sent = 0;
    int64_t kill_at = -1;
    for (;;) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0)
            if (p == sh) {
                sh_status = st;
                sh_done = 1;
            }
        if (sh_done) break;
        int64_t now = mono_ms();
        if (getppid() != parent) { /* the worker is gone: nobody else will stop this job */
            if (!term_sent) kill(-group, SIGTERM);
            term_sent = 1;
            if (kill_at < 0 || kill_at > now + RUNNER_ORPHAN_GRACE_MS) kill_at = now + RUNNER_ORPHAN_GRACE_MS;
        }
        if (kill_at >= 0 && now >= kill_at) {
            kill_children(now); /* those that left the group, one round */
            kill(-group, SIGKILL); /* the supervisor too: it ends killed, as the job did */
            _exit(128 + SIGKILL);
        }
        struct timespec ts, *tsp = NULL;
        if (kill_at >= 0) {
            int64_t left = kill_at - now;
            ts.tv_sec = (time_t)(left / 1000);
            ts.tv_nsec = (long)(left % 1000) * 1000000L;
            tsp = &ts;
        }
        siginfo_t si;
        int sig = sigtimedwait(waitset, &si, tsp);
        if (sig == SIGTERM && !term_sent) {
            /* once: the supervisor's own copy of this SIGTERM comes back and is ignored */
            term_sent = 1;
            kill(-group, SIGTERM);
            kill_at = mono_ms() + grace_ms;
        }
        /* SIGCHLD, the parent-death signal, a timeout: the loop looks again */
    }
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {}
    if (p == 0) kill_children(mono_ms() + LEFTOVER_KILL_MS);
    forward_status(sh_status);
}

/* The forked child of a command job: set up, start sh, supervise. Never returns. */
static void command_child(const runner_spec *spec, const command_plan *plan, int out_w, int err_w,
                          int rep_w, pid_t parent) {
    child_reset_signals();
    sigset_t waitset, blocked;
    sigemptyset(&waitset);
    sigaddset(&waitset, SIGCHLD);
    sigaddset(&waitset, SIGTERM);
    sigaddset(&waitset, SUPERVISOR_PDEATH_SIG);
    /* signals sent to the whole group are for the job: the supervisor's copy stays pending, so
     * the job, not its supervisor, decides what they do */
    blocked = waitset;
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGQUIT);
    sigaddset(&blocked, SIGUSR1);
    sigaddset(&blocked, SIGUSR2);
    sigprocmask(SIG_SETMASK, &blocked, NULL);
    signal(SIGPIPE, SIG_IGN); /* sh gets the default back from posix_spawn */
    child_wire_fds(out_w, err_w, &rep_w, REPORT_FD);
    child_common(spec->scratch, SUPERVISOR_PDEATH_SIG, parent);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    /* sh sees only stdin, stdout, stderr and the report pipe */
    if (close_range(REPORT_FD + 1, ~0u, 0) != 0) {
        long max = sysconf(_SC_OPEN_MAX);
        for (long fd = REPORT_FD + 1; fd < (max > 0 && max < 65536 ? max : 65536); fd++) close((int)fd);
    }
    posix_spawnattr_t attr;
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE);
    if (posix_spawnattr_init(&attr) != 0 || posix_spawnattr_setsigmask(&attr, &none) != 0 ||
        posix_spawnattr_setsigdefault(&attr, &dflt) != 0 ||
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) != 0)
        child_fail("posix_spawnattr", 127);
    pid_t sh;
    int e = posix_spawn(&sh, "/bin/sh", NULL, &attr, plan->argv, plan->envp);
    if (e != 0) {
        errno = e;
        child_fail("cannot run /bin/sh", 127);
    }
    posix_spawnattr_destroy(&attr);
    /* the pipes' write ends are sh's now; stderr stays for nothing but a last word */
    close(0);
    close(1);
    close(REPORT_FD);
    supervise(sh, parent, spec->grace_ms > 0 ? spec->grace_ms : RUNNER_GRACE_MS, &waitset);
}

/* ---- kind umd: the trainer in the forked child, its events as report lines ---------------------- */

static volatile sig_atomic_t umd_stop_requested;

static void umd_on_stop_signal(int sig) {
    (void)sig;
    umd_stop_requested = 1;
}

typedef struct {
    int report_fd;
    artifact_store store;   /* store.url NULL: no artifact store (nothing uploaded, no resume) */
    cJSON *results;         /* the run's results, reported once it has succeeded; owned */
    const char *workdir;    /* the scratch directory; borrowed */
    int64_t step, total;    /* of the latest progress call: evaluation heartbeats repeat them */
    char phase[64];         /* the evaluation phase last logged */
} umd_child_ctx;

/* 0, or UMDQ_EIO with errno set. */
static int write_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return UMDQ_EIO;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static void umd_emit(umd_child_ctx *c, cJSON *line) {
    char *text = line ? cJSON_PrintUnformatted(line) : NULL;
    if (text) {
        size_t n = strlen(text);
        text[n] = '\n'; /* replaces the NUL; write_all is given the length */
        write_all(c->report_fd, text, n + 1);
    }
    free(text);
    cJSON_Delete(line);
}

/* A line of the worker's own in the attempt's log (stdout: the stderr tail stays the job's). */
static void umd_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void umd_note(const char *fmt, ...) {
    char buf[1400];
    int n = snprintf(buf, sizeof buf, "umdq-worker: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) return;
    n += m;
    if ((size_t)n > sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    write_all(1, buf, (size_t)n);
}

static void umd_ev_progress(void *ctx, int64_t step, int64_t total, double loss, double img_per_s) {
    umd_child_ctx *c = ctx;
    c->step = step;
    c->total = total;
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "umdq", "progress");
        cJSON_AddNumberToObject(o, "step", (double)step);
        cJSON_AddNumberToObject(o, "total", (double)total);
    }
    umd_emit(c, o);
    char buf[160];
    int n = snprintf(buf, sizeof buf, "step %lld/%lld loss %.6g %.1f img/s\n", (long long)step,
                     (long long)total, loss, img_per_s);
    if (n > 0) write_all(1, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* The evaluation's sign of life: a progress line at the last step with the phase (the parent
 * counts every progress line as a beat), and a log line when the phase changes. */
static void umd_ev_eval_progress(void *ctx, const char *phase, int64_t done, int64_t total) {
    umd_child_ctx *c = ctx;
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "umdq", "progress");
        cJSON_AddNumberToObject(o, "step", (double)c->step);
        cJSON_AddNumberToObject(o, "total", (double)c->total);
        cJSON_AddStringToObject(o, "phase", phase);
        cJSON_AddNumberToObject(o, "done", (double)done);
        cJSON_AddNumberToObject(o, "of", (double)total);
    }
    umd_emit(c, o);
    if (strcmp(c->phase, phase) != 0) {
        snprintf(c->phase, sizeof c->phase, "%s", phase);
        umd_note("evaluation: %s", phase);
    }
}

static void umd_ev_metric(void *ctx, const char *key, int64_t step, double value) {
    if (!isfinite(value)) return; /* not representable in JSON */
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "umdq", "metric");
        cJSON_AddNumberToObject(o, "step", (double)step);
        cJSON_AddNumberToObject(o, key, value);
    }
    umd_emit(ctx, o);
}

/* Results whose text names a file in the scratch directory that goes to the artifact store under
 * that name before the result is reported. */
static const char *const UMD_FILE_RESULTS[] = {"sample_grid", NULL};

static void umd_ev_result(void *ctx, const char *key, double value, const char *text) {
    if (!text && !isfinite(value)) return;
    umd_child_ctx *c = ctx;
    for (int i = 0; text && c->store.url && UMD_FILE_RESULTS[i]; i++) {
        if (strcmp(key, UMD_FILE_RESULTS[i]) != 0) continue;
        char path[4400], err[1500];
        snprintf(path, sizeof path, "%s/%s", c->workdir, text);
        artifact_store s = c->store;
        s.tries = 3;
        if (!artifact_name_ok(text))
            umd_note("%s: \"%.200s\" is not an artifact name ([A-Za-z0-9._-]{1,128}): not uploaded", key, text);
        else if (artifact_put_file(&s, text, path, err, sizeof err) != 0)
            umd_note("%s not uploaded: %s", key, err);
        else
            umd_note("%s uploaded as artifact %s", key, text);
    }
    /* held until the run succeeds: an attempt stopped half-way through its evaluation reports
     * none, so a job that is run again records one set of results, the finished attempt's */
    if (!c->results || cJSON_GetObjectItemCaseSensitive(c->results, key)) return; /* the first value wins */
    if (text) cJSON_AddStringToObject(c->results, key, text);
    else cJSON_AddNumberToObject(c->results, key, value);
}

/* A complete checkpoint: upload it as the job's ckpt.umd. A failed upload does not stop the run (a
 * later attempt resumes from an earlier checkpoint, or from the start). */
static int umd_ev_checkpoint(void *ctx, const char *path, int64_t step) {
    umd_child_ctx *c = ctx;
    if (!c->store.url) return 0;
    char err[1500];
    artifact_store s = c->store;
    s.tries = 3;
    double t0 = mono_s();
    if (artifact_put_file(&s, ARTIFACT_CKPT_NAME, path, err, sizeof err) != 0) {
        umd_note("the checkpoint of step %lld is not in the artifact store: %s", (long long)step, err);
        return 0;
    }
    struct stat sb;
    double mb = stat(path, &sb) == 0 ? (double)sb.st_size / 1e6 : 0;
    umd_note("checkpoint of step %lld uploaded (%.1f MB in %.2f s)", (long long)step, mb, mono_s() - t0);
    return 0;
}

/* Before training: fetch the checkpoint an earlier attempt uploaded into <scratch>/resume.umd and set
 * *resume to it, or leave *resume NULL: nothing stored, or the store cannot be asked (then the run
 * starts from step 0, which computes the same trajectory, only later; logged). */
static void umd_fetch_resume(umd_child_ctx *c, char *path, size_t pathlen, const char **resume, int64_t *step) {
    *resume = NULL;
    *step = 0;
    if (!c->store.url) return;
    snprintf(path, pathlen, "%s/resume.umd", c->workdir);
    artifact_store s = c->store;
    s.tries = 4; /* 3.5 s of waits: the daemon that sent the job is up, so a failure is passing */
    int64_t bytes = 0;
    char err[1500];
    int rc = artifact_get_file(&s, ARTIFACT_CKPT_NAME, path, &bytes, err, sizeof err);
    if (rc == UMDQ_ENOTFOUND) return;
    if (rc) {
        umd_note("starting from step 0: the artifact store cannot be asked for a checkpoint: %s", err);
        return;
    }
    umd_ckpt_header h;
    memset(&h, 0, sizeof h);
    char herr[1024];
    if (umd_ckpt_read_header(path, &h, herr, sizeof herr) != 0) {
        umd_note("starting from step 0: the stored checkpoint is unusable: %s", herr);
        unlink(path);
        return;
    }
    cJSON_Delete(h.meta);
    umd_note("resuming from the stored checkpoint of step %lld (%.1f MB)", (long long)h.step, (double)bytes / 1e6);
    *resume = path;
    *step = h.step;
}

static int umd_ev_should_stop(void *ctx) {
    (void)ctx;
    return umd_stop_requested != 0;
}

static void umd_child(const runner_spec *spec, const cJSON *config, int out_w, int err_w, int rep_w,
                      int *read_ends, pid_t parent) {
    child_reset_signals();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = umd_on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (int i = 0; i < RUNNER_MAX_FDS; i++) close(read_ends[i]);
    child_wire_fds(out_w, err_w, &rep_w, -1);
    /* the trainer runs here, threads only: this process is the whole job, and it dies with the
     * worker however the worker dies */
    child_common(spec->scratch, SIGKILL, parent);
    if (spec->cuda_devices && setenv("CUDA_VISIBLE_DEVICES", spec->cuda_devices, 1) != 0)
        child_fail("setenv", 127);
    child_unblock_signals();

    umd_child_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.report_fd = rep_w;
    ctx.workdir = spec->scratch;
    if (spec->http_url && spec->http_url[0]) {
        ctx.store.url = spec->http_url;
        ctx.store.token = spec->token;
        ctx.store.job = spec->job;
        ctx.store.tries = 1;
        curl_global_init(CURL_GLOBAL_DEFAULT);
    }
    umd_events ev;
    memset(&ev, 0, sizeof ev);
    ev.ctx = &ctx;
    ev.progress = umd_ev_progress;
    ev.eval_progress = umd_ev_eval_progress;
    ev.metric = umd_ev_metric;
    ev.result = umd_ev_result;
    ev.should_stop = umd_ev_should_stop;
    ev.checkpoint = umd_ev_checkpoint;
    ev.workdir = spec->scratch;

    char err[1600] = "", resume_path[4300];
    int64_t resume_step = 0;
    umd_fetch_resume(&ctx, resume_path, sizeof resume_path, &ev.resume_from, &resume_step);
    ctx.results = cJSON_CreateObject();
    if (ev.resume_from) umd_ev_result(&ctx, "resumed_from_step", (double)resume_step, NULL);
    int rc = umd_run(config, &ev, err, sizeof err);
    if (rc == 0) {
        if (ctx.results && ctx.results->child && cJSON_AddStringToObject(ctx.results, "umdq", "result"))
            umd_emit(&ctx, ctx.results); /* one line; consumes the object */
        _exit(0);
    }
    if (!err[0]) snprintf(err, sizeof err, "%s", umdq_strerror(rc));
    size_t n = strlen(err);
    write_all(2, err, n);
    write_all(2, "\n", 1);
    _exit(1);
}

/* ---- start, pump, stop -------------------------------------------------------------------------- */

/* The spare scratch directory: the last discarded one that held nothing but config.json, kept
 * at <workdir>/.spare-PID for the next attempt to rename into place. Reusing a directory and its
 * config.json costs the file system no inode: ext4 without a journal skips every inode freed in the
 * last minutes when it allocates one, so creating and removing two inodes per attempt grows slower
 * with every attempt. "" when there is none. Used only by the thread that starts attempts. */
static char spare_dir[4200];

/* <parent of scratch>/.spare-PID into out. */
static void spare_path_for(const char *scratch, char *out, size_t n) {
    const char *slash = strrchr(scratch, '/');
    int plen = slash ? (int)(slash - scratch) : 1;
    snprintf(out, n, "%.*s/.spare-%d", plen, slash ? scratch : ".", (int)getpid());
}

/* An empty scratch directory at dir: one mkdir when all is well; what an earlier try left there is
 * discarded first, missing parents are created. */
static int prepare_scratch(const char *dir, char *err, size_t errlen) {
    int rc = 0;
    if (spare_dir[0]) {
        char spare[4200];
        spare_path_for(dir, spare, sizeof spare);
        if (strcmp(spare, spare_dir) == 0) { /* the same workdir */
            int tries = 2;
            while (tries-- > 0) {
                if (rename(spare_dir, dir) == 0) {
                    spare_dir[0] = 0;
                    return 0;
                }
                if (errno != ENOTEMPTY && errno != EEXIST) break;
                /* an earlier try left dir: discard it, then the spare takes its place */
                if ((rc = runner_scratch_discard(dir, err, errlen)) != 0) return rc;
            }
            if (errno == ENOENT) spare_dir[0] = 0; /* the spare went away */
        }
    }
    if (mkdir(dir, 0755) == 0) return 0;
    if (errno == EEXIST) {
        rc = runner_scratch_discard(dir, err, errlen);
        if (rc == 0 && mkdir(dir, 0755) == 0) return 0;
    } else if (errno == ENOENT && mkdir_p(dir, 0755) == 0) {
        return 0;
    }
    if (rc == 0) {
        snprintf(err, errlen, "cannot create the scratch directory %s: %s", dir, strerror(errno));
        rc = UMDQ_EIO;
    }
    return rc;
}

static int write_text(const char *path, const char *text, char *err, size_t errlen) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return UMDQ_EIO;
    }
    size_t n = strlen(text);
    int rc = write_all(fd, text, n);
    if (close(fd) != 0) rc = UMDQ_EIO;
    if (rc != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return UMDQ_EIO;
    }
    return 0;
}

int runner_new(const runner_spec *spec, runner **out, char *err, size_t errlen) {
    runner *r = NULL;
    cJSON *config = NULL;     /* the job config with "seed", owned */
    char *cmd = NULL;         /* rendered command, owned */
    char *config_text = NULL; /* owned */
    command_plan plan = {{NULL, NULL, NULL, NULL}, NULL}; /* envp owned */
    errlist *errs = NULL;
    int pipes[RUNNER_MAX_FDS][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
    int rc = 0;
    *out = NULL;

    int is_umd = spec->kind && strcmp(spec->kind, "umd") == 0;
    if (!spec->kind || (!is_umd && strcmp(spec->kind, "command") != 0)) {
        snprintf(err, errlen, "unknown job kind \"%s\"", spec->kind ? spec->kind : "(none)");
        rc = UMDQ_EINVAL;
        goto fail;
    }
    if (!cJSON_IsObject(spec->config) || !spec->scratch || !spec->scratch[0]) {
        snprintf(err, errlen, "the job has no config object or no scratch directory");
        rc = UMDQ_EINVAL;
        goto fail;
    }
    config = cJSON_Duplicate(spec->config, 1);
    if (!config) goto oom;
    cJSON_DeleteItemFromObjectCaseSensitive(config, "seed");
    if (!cJSON_AddNumberToObject(config, "seed", (double)spec->seed)) goto oom;

    if (!is_umd) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(spec->config, "command");
        if (!cJSON_IsString(c) || !c->valuestring[0]) {
            snprintf(err, errlen, "command: a kind \"command\" job needs a command string");
            rc = UMDQ_EINVAL;
            goto fail;
        }
        errs = errlist_new();
        if (!errs) goto oom;
        template_builtins b = {spec->seed, spec->job, spec->attempt, spec->sweep};
        if (template_render(c->valuestring, spec->config, &b, &cmd, errs) != 0) {
            char msg[900];
            errlist_format(errs, msg, sizeof msg);
            snprintf(err, errlen, "cannot render the command: %s", msg);
            rc = UMDQ_EINVAL;
            goto fail;
        }
        plan.argv[0] = "sh";
        plan.argv[1] = "-c";
        plan.argv[2] = cmd;
        if (!(plan.envp = job_environment(spec))) goto oom;
    }

    rc = prepare_scratch(spec->scratch, err, errlen);
    if (rc != 0) goto fail;
    if (is_umd) {
        char path[4200];
        snprintf(path, sizeof path, "%s/config.json", spec->scratch);
        unlink(path); /* a reused directory's; a umd job's scratch directory starts empty */
    } else {
        char path[4200];
        config_text = cJSON_Print(config);
        if (!config_text) goto oom;
        size_t n = strlen(config_text);
        config_text[n] = '\n'; /* replaces the NUL: the file ends with a newline */
        char *grown = realloc(config_text, n + 2);
        if (!grown) goto oom;
        config_text = grown;
        config_text[n + 1] = 0;
        snprintf(path, sizeof path, "%s/config.json", spec->scratch);
        rc = write_text(path, config_text, err, errlen);
        if (rc != 0) goto fail;
    }

    r = calloc(1, sizeof *r);
    if (!r) goto oom;
    r->pid = -1;
    r->is_umd = is_umd;
    for (int i = 0; i < RUNNER_MAX_FDS; i++) r->fd[i] = -1;
    r->kill_at = -1;
    r->tail = malloc(RUNNER_TAIL);
    r->results_all = cJSON_CreateObject();
    if (!r->tail || !r->results_all) goto oom;

    for (int i = 0; i < RUNNER_MAX_FDS; i++) {
        if (pipe2(pipes[i], O_CLOEXEC) != 0) {
            snprintf(err, errlen, "pipe: %s", strerror(errno));
            rc = UMDQ_EIO;
            goto fail;
        }
    }

    /* No signal handler of the parent may run in the child between fork and reset. */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        int read_ends[RUNNER_MAX_FDS] = {pipes[0][0], pipes[1][0], pipes[2][0]};
        if (is_umd) umd_child(spec, config, pipes[0][1], pipes[1][1], pipes[2][1], read_ends, parent);
        else command_child(spec, &plan, pipes[0][1], pipes[1][1], pipes[2][1], parent);
        _exit(127);
    }
    int fork_errno = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(fork_errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    setpgid(pid, pid); /* also done by the child; whichever runs first wins the race */
    r->pid = pid;
    r->last_pump = mono_ms();
    for (int i = 0; i < RUNNER_MAX_FDS; i++) {
        close(pipes[i][1]);
        pipes[i][1] = -1;
        r->fd[i] = pipes[i][0];
        pipes[i][0] = -1;
        fcntl(r->fd[i], F_SETFL, O_NONBLOCK); /* a fresh pipe end has no other status flags */
    }
    *out = r;
    r = NULL;
    rc = 0;
    goto fail; /* the cleanup below frees only what the runner did not take */

oom:
    snprintf(err, errlen, "out of memory");
    rc = UMDQ_ENOMEM;
fail:
    for (int i = 0; i < RUNNER_MAX_FDS; i++)
        for (int j = 0; j < 2; j++)
            if (pipes[i][j] >= 0) close(pipes[i][j]);
    runner_destroy(&r);
    errlist_destroy(&errs);
    free(plan.envp);
    free(cmd);
    free(config_text);
    cJSON_Delete(config);
    return rc;
}

static void note_exit(runner *r, const siginfo_t *si, int64_t now) {
    r->exited = 1;
    r->drain_until = now + DRAIN_MS;
    if (si->si_code == CLD_EXITED) {
        r->info.exit_code = si->si_status;
        r->info.signal = 0;
    } else {
        r->info.exit_code = -1;
        r->info.signal = si->si_status;
    }
    /* whatever the child left in its group (background jobs, data loaders) ends with it; the
     * leader is not reaped yet, so its pid still names this group */
    kill(-r->pid, SIGKILL);
}

void runner_pump(runner *r, int64_t now) {
    if (!r || r->done) return;
    r->last_pump = now;
    if (!r->exited) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        int w = waitid(P_PID, (id_t)r->pid, &si, WEXITED | WNOHANG | WNOWAIT);
        if (w == 0 && si.si_pid == r->pid) {
            note_exit(r, &si, now);
        } else if (w < 0 && errno == ECHILD) {
            /* reaped by someone else (SIGCHLD ignored): the status is lost */
            r->exited = 1;
            r->drain_until = now + DRAIN_MS;
            r->info.exit_code = -1;
            r->info.signal = 0;
            kill(-r->pid, SIGKILL);
        }
    }
    if (!r->exited && r->kill_at >= 0 && now >= r->kill_at && !r->killed) {
        kill(-r->pid, SIGKILL);
        r->killed = 1;
    }
    for (int i = 0; i < RUNNER_MAX_FDS; i++) pipe_read(r, i);
    if (r->exited) {
        int open_fds = 0;
        for (int i = 0; i < RUNNER_MAX_FDS; i++) open_fds += r->fd[i] >= 0;
        if (open_fds > 0 && now >= r->drain_until) {
            /* something outside the group still holds a pipe: stop waiting for it */
            for (int i = 0; i < RUNNER_MAX_FDS; i++) pipe_close(r, i);
            open_fds = 0;
        }
        if (open_fds == 0) {
            int st;
            while (waitpid(r->pid, &st, 0) < 0 && errno == EINTR) {}
            r->done = 1;
        }
    }
}

int64_t runner_deadline_ms(const runner *r) {
    if (!r || r->done) return -1;
    if (r->exited) return r->drain_until;
    int64_t d = r->last_pump + EXIT_CHECK_MS;
    if (r->kill_at >= 0 && !r->killed && r->kill_at < d) d = r->kill_at;
    return d;
}

void runner_stop(runner *r, int grace_ms, int64_t now) {
    if (!r || r->done || r->exited) return;
    if (grace_ms < 0) grace_ms = 0;
    int64_t at = now + grace_ms;
    if (!r->info.stopped) {
        r->info.stopped = 1;
        /* a command's supervisor passes SIGTERM on to the group (so each process gets it once) */
        kill(r->is_umd ? -r->pid : r->pid, SIGTERM);
        r->kill_at = at;
    } else if (at < r->kill_at) {
        r->kill_at = at;
    }
}

void runner_destroy(runner **rp) {
    if (!rp || !*rp) return;
    runner *r = *rp;
    if (r->pid > 0 && !r->done) {
        kill(-r->pid, SIGKILL);
        kill(r->pid, SIGKILL);
        int st;
        while (waitpid(r->pid, &st, 0) < 0 && errno == EINTR) {}
    }
    for (int i = 0; i < RUNNER_MAX_FDS; i++) {
        if (r->fd[i] >= 0) close(r->fd[i]);
        free(r->line[i].buf);
    }
    for (size_t i = r->points_head; i < r->npoints; i++) free(r->points[i].key);
    free(r->points);
    free(r->log);
    free(r->tail);
    cJSON_Delete(r->results_all);
    cJSON_Delete(r->results_new);
    free(r);
    *rp = NULL;
}

/* ---- what the child produced ------------------------------------------------------------------- */

pid_t runner_pid(const runner *r) { return r ? r->pid : -1; }
int runner_done(const runner *r) { return r && r->done; }
const runner_exit_info *runner_exit(const runner *r) { return &r->info; }
int64_t runner_step(const runner *r) { return r ? r->step : 0; }
int64_t runner_beats(const runner *r) { return r ? r->beats : 0; }

int runner_fds(const runner *r, int *fds) {
    int n = 0;
    for (int i = 0; i < RUNNER_MAX_FDS; i++)
        if (r->fd[i] >= 0 && pipe_wanted(r, i)) fds[n++] = r->fd[i];
    return n;
}

size_t runner_points_pending(const runner *r) { return r->npoints - r->points_head; }

cJSON *runner_take_points(runner *r, size_t max) {
    size_t n = r->npoints - r->points_head;
    if (n > max) n = max;
    if (n == 0) return NULL;
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return NULL;
    for (size_t i = 0; i < n; i++) {
        point *p = &r->points[r->points_head + i];
        cJSON *e = cJSON_CreateArray();
        if (!e) {
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON_AddItemToArray(arr, e);
        cJSON_AddItemToArray(e, cJSON_CreateString(p->key));
        cJSON_AddItemToArray(e, cJSON_CreateNumber((double)p->step));
        cJSON_AddItemToArray(e, cJSON_CreateNumber(p->value));
        if (cJSON_GetArraySize(e) != 3) {
            cJSON_Delete(arr);
            return NULL;
        }
    }
    for (size_t i = 0; i < n; i++) free(r->points[r->points_head + i].key);
    r->points_head += n;
    if (r->points_head == r->npoints) r->points_head = r->npoints = 0;
    return arr;
}

cJSON *runner_take_results(runner *r) {
    cJSON *n = r->results_new;
    r->results_new = NULL;
    return n;
}

const cJSON *runner_results(const runner *r) { return r->results_all; }

size_t runner_log_pending(const runner *r) { return r->log_len - r->log_start; }

/* Length of the UTF-8 sequence a lead byte starts, 0 for a continuation or invalid byte. */
static int utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

int runner_take_log(runner *r, size_t max, int64_t *offset, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    *offset = r->log_offset;
    size_t avail = r->log_len - r->log_start;
    size_t n = avail < max ? avail : max;
    const unsigned char *p = (const unsigned char *)r->log + r->log_start;
    if (n > 0 && !(r->done && n == avail)) {
        /* hold back a character whose bytes are not all here yet */
        size_t i = n, back = 0;
        while (i > 0 && back < 4 && (p[i - 1] & 0xC0) == 0x80) {
            i--;
            back++;
        }
        if (i > 0) {
            int need = utf8_len(p[i - 1]);
            if (need > 1 && (i - 1) + (size_t)need > n) n = i - 1;
        }
    }
    if (n == 0) return 0;
    char *out = malloc(n + 1);
    if (!out) return UMDQ_ENOMEM;
    memcpy(out, p, n);
    out[n] = 0;
    runner_utf8_sanitize(out, n);
    r->log_start += n;
    r->log_offset += (int64_t)n;
    if (r->log_start == r->log_len) r->log_start = r->log_len = 0;
    *data = out;
    *len = n;
    return 0;
}

char *runner_stderr_tail(const runner *r, size_t *len) {
    size_t n = r->tail_full ? RUNNER_TAIL : r->tail_pos;
    char *out = malloc(n + 1);
    if (!out) return NULL;
    if (r->tail_full) {
        size_t first = RUNNER_TAIL - r->tail_pos;
        memcpy(out, r->tail + r->tail_pos, first);
        memcpy(out + first, r->tail, r->tail_pos);
    } else {
        memcpy(out, r->tail, n);
    }
    out[n] = 0;
    *len = n;
    return out;
}

void runner_utf8_sanitize(char *s, size_t len) {
    unsigned char *p = (unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c == 0) {
            p[i++] = '?';
            continue;
        }
        int need = utf8_len(c);
        if (need == 1) {
            i++;
            continue;
        }
        int ok = need > 1 && i + (size_t)need <= len;
        if (ok) {
            unsigned char c1 = p[i + 1];
            /* second-byte ranges that rule out overlong forms, surrogates and > U+10FFFF */
            unsigned char lo = 0x80, hi = 0xBF;
            if (c == 0xE0) lo = 0xA0;
            else if (c == 0xED) hi = 0x9F;
            else if (c == 0xF0) lo = 0x90;
            else if (c == 0xF4) hi = 0x8F;
            ok = c1 >= lo && c1 <= hi;
            for (int k = 2; ok && k < need; k++) ok = (p[i + (size_t)k] & 0xC0) == 0x80;
        }
        if (ok) {
            i += (size_t)need;
        } else {
            p[i++] = '?';
        }
    }
}

/* ---- scratch directories ------------------------------------------------------------------------ */

#define REMOVE_MAX_DEPTH 128

/* One removal: how many more entries it may remove, and the first failure. */
typedef struct {
    long budget;          /* entries left; the walk stops (returns 1) when it reaches 0 */
    char failed[1024];    /* the first path that could not be removed, "" when none */
    int failed_errno;
} remove_walk;

static void remove_failed(remove_walk *w, const char *dir, const char *name, int e) {
    if (w->failed[0]) return;
    snprintf(w->failed, sizeof w->failed, "%s%s%s", dir, name ? "/" : "", name ? name : "");
    w->failed_errno = e;
}

/* Remove everything in the directory open as dfd (closed here; path names it in messages).
 * 0 when it is empty now (or after failures, recorded in w), 1 when the budget ran out first. */
static int remove_inside(int dfd, const char *path, int depth, remove_walk *w) {
    DIR *d = fdopendir(dfd);
    if (!d) {
        remove_failed(w, path, NULL, errno);
        close(dfd);
        return 0;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
        if (w->budget <= 0) {
            rc = 1;
            break;
        }
        w->budget--;
        if (e->d_type != DT_DIR) {
            if (unlinkat(dirfd(d), name, 0) == 0 || errno == ENOENT) continue;
            if (errno != EISDIR) {
                remove_failed(w, path, name, errno);
                continue;
            }
        }
        if (depth >= REMOVE_MAX_DEPTH) {
            remove_failed(w, path, name, ELOOP);
            continue;
        }
        int sub = openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            if (errno != ENOENT) remove_failed(w, path, name, errno);
            continue;
        }
        char subpath[1024];
        snprintf(subpath, sizeof subpath, "%s/%s", path, name);
        if (remove_inside(sub, subpath, depth + 1, w) == 1) {
            rc = 1;
            break;
        }
        if (unlinkat(dirfd(d), name, AT_REMOVEDIR) != 0 && errno != ENOENT) remove_failed(w, path, name, errno);
    }
    closedir(d);
    return rc;
}

/* Remove path (a directory tree, or one file) within w's budget: 0 when it is gone (or failed: see
 * w), 1 when the budget ran out. */
static int remove_path(const char *path, remove_walk *w) {
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == ENOENT) return 0;
        if ((errno == ENOTDIR || errno == ELOOP) && unlink(path) == 0) return 0;
        remove_failed(w, path, NULL, errno);
        return 0;
    }
    if (remove_inside(dfd, path, 0, w) == 1) return 1;
    if (rmdir(path) != 0 && errno != ENOENT) remove_failed(w, path, NULL, errno);
    return 0;
}

int runner_remove_tree(const char *path, char *err, size_t errlen) {
    remove_walk w;
    memset(&w, 0, sizeof w);
    w.budget = (long)(~0ul >> 1);
    remove_path(path, &w);
    if (w.failed[0]) {
        snprintf(err, errlen, "cannot remove %s: %s", w.failed, strerror(w.failed_errno));
        return UMDQ_EIO;
    }
    return 0;
}

/* The remover thread: removes the trees queued to it, one at a time, for the process's life. */
static pthread_mutex_t remover_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t remover_wake = PTHREAD_COND_INITIALIZER;
static char **remover_queue;   /* owned paths, remover_queue[0 .. remover_n) */
static int remover_n, remover_cap, remover_running;

static void *remover_main(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&remover_lock);
        while (remover_n == 0) pthread_cond_wait(&remover_wake, &remover_lock);
        char *path = remover_queue[--remover_n];
        pthread_mutex_unlock(&remover_lock);
        char err[1100];
        if (runner_remove_tree(path, err, sizeof err) != 0) log_warn("%s", err);
        free(path);
    }
    return NULL;
}

/* Queue path (copied) for the remover thread, starting it on first use. 0 or UMDQ_ENOMEM/EIO. */
static int remover_queue_path(const char *path) {
    char *copy = strdup(path);
    if (!copy) return UMDQ_ENOMEM;
    int rc = 0;
    pthread_mutex_lock(&remover_lock);
    if (!remover_running) {
        pthread_t t;
        pthread_attr_t attr;
        sigset_t all, old;
        sigfillset(&all);
        /* the thread takes no signals: the worker's handlers stay on its main thread */
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, remover_main, NULL) == 0) remover_running = 1;
        else rc = UMDQ_EIO;
        pthread_attr_destroy(&attr);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (rc == 0 && remover_n == remover_cap) {
        int cap = remover_cap ? remover_cap * 2 : 16;
        char **grown = realloc(remover_queue, (size_t)cap * sizeof *grown);
        if (grown) {
            remover_queue = grown;
            remover_cap = cap;
        } else {
            rc = UMDQ_ENOMEM;
        }
    }
    if (rc == 0) {
        remover_queue[remover_n++] = copy;
        copy = NULL;
        pthread_cond_signal(&remover_wake);
    }
    pthread_mutex_unlock(&remover_lock);
    free(copy);
    return rc;
}

/* 1 when directory path holds config.json and nothing else, 0 when it holds anything else or
 * cannot be read. */
static int holds_only_config(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[2048];
    int only = 1, config = 0;
    ssize_t n;
    while (only && (n = getdents64(fd, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n && only;) {
            const struct dirent64 *e = (const struct dirent64 *)(buf + off);
            off += e->d_reclen;
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            if (strcmp(e->d_name, "config.json") == 0 && e->d_type == DT_REG) config = 1;
            else only = 0;
        }
    }
    if (n < 0) only = 0;
    close(fd);
    return only && config;
}

int runner_scratch_discard(const char *path, char *err, size_t errlen) {
    if (!spare_dir[0] && holds_only_config(path)) {
        char spare[4200];
        spare_path_for(path, spare, sizeof spare);
        if (rename(path, spare) == 0) {
            snprintf(spare_dir, sizeof spare_dir, "%s", spare);
            return 0;
        }
    }
    /* a command job that wrote nothing while there is a spare already: two system calls */
    char config[4200];
    snprintf(config, sizeof config, "%s/config.json", path);
    if (unlink(config) != 0 && errno != ENOENT && errno != ENOTDIR) {
        snprintf(err, errlen, "cannot remove %s: %s", config, strerror(errno));
        return UMDQ_EIO;
    }
    if (rmdir(path) == 0 || errno == ENOENT) return 0;
    remove_walk w;
    memset(&w, 0, sizeof w);
    w.budget = RUNNER_DISCARD_SYNC;
    if (remove_path(path, &w) == 1) {
        /* a large tree: out of the way now, removed by the remover thread */
        static unsigned counter;
        char trash[4400], dir[4000];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        const char *base = slash ? slash + 1 : dir;
        if (slash) *slash = 0;
        snprintf(trash, sizeof trash, "%.3990s/.trash-%.100s-%d-%u", slash ? dir : ".", base, (int)getpid(),
                 counter++);
        if (rename(path, trash) != 0) return runner_remove_tree(path, err, errlen);
        if (remover_queue_path(trash) != 0) return runner_remove_tree(trash, err, errlen);
        return 0;
    }
    if (w.failed[0]) {
        snprintf(err, errlen, "cannot remove %s: %s", w.failed, strerror(w.failed_errno));
        return UMDQ_EIO;
    }
    return 0;
}

void runner_scratch_spare_remove(void) {
    if (!spare_dir[0]) return;
    char config[4300];
    snprintf(config, sizeof config, "%s/config.json", spare_dir);
    unlink(config);
    rmdir(spare_dir);
    spare_dir[0] = 0;
}

void runner_scratch_discard_stale(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, ".spare-", 7) == 0) {
            /* a spare of a process that is gone (those of live workers on this workdir stay) */
            char *end;
            long pid = strtol(e->d_name + 7, &end, 10);
            if (*end || pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH)) {
                char path[4200];
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                remover_queue_path(path);
            }
            continue;
        }
        if (strncmp(e->d_name, ".trash-", 7) != 0) continue;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        remover_queue_path(path);
    }
    closedir(d);
}
