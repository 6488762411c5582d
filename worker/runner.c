/* runner.c: one attempt's child process: fork, pipes, report lines, log bytes, stop and reap. */
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "errlist.h"
#include "jsonx.h"
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
    pid_t pid;
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

/* In a fresh child: default dispositions, empty mask (the parent blocked everything around fork). */
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

static void child_common(const char *scratch, const char *cuda_devices, pid_t parent) {
    setpgid(0, 0);
    /* a worker killed outright must not leave its attempt running on the device */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (chdir(scratch) != 0) child_fail("cannot enter the scratch directory", 126);
    if (cuda_devices && setenv("CUDA_VISIBLE_DEVICES", cuda_devices, 1) != 0)
        child_fail("setenv", 127);
}

static void setenv_i64(const char *name, int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    if (setenv(name, buf, 1) != 0) child_fail("setenv", 127);
}

static void command_child(const runner_spec *spec, const char *cmd, int out_w, int err_w, int rep_w,
                          pid_t parent) {
    child_reset_signals();
    child_wire_fds(out_w, err_w, &rep_w, REPORT_FD);
    child_common(spec->scratch, spec->cuda_devices, parent);
    /* the child sees only stdin, stdout, stderr and the report pipe */
    if (close_range(REPORT_FD + 1, ~0u, 0) != 0) {
        long max = sysconf(_SC_OPEN_MAX);
        for (long fd = REPORT_FD + 1; fd < (max > 0 && max < 65536 ? max : 65536); fd++) close((int)fd);
    }
    char config_path[4200];
    snprintf(config_path, sizeof config_path, "%s/config.json", spec->scratch);
    setenv_i64("UMDQ_JOB_ID", spec->job);
    setenv_i64("UMDQ_ATTEMPT", spec->attempt);
    setenv_i64("UMDQ_SEED", spec->seed);
    setenv_i64("UMDQ_SWEEP_ID", spec->sweep);
    setenv_i64("UMDQ_METRICS_FD", REPORT_FD);
    if (setenv("UMDQ_CONFIG", config_path, 1) != 0 || setenv("UMDQ_WORKDIR", spec->scratch, 1) != 0)
        child_fail("setenv", 127);
    child_unblock_signals();
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    child_fail("cannot run /bin/sh", 127);
}

/* ---- kind umd: the trainer in the forked child, its events as report lines ---------------------- */

static volatile sig_atomic_t umd_stop_requested;

static void umd_on_stop_signal(int sig) {
    (void)sig;
    umd_stop_requested = 1;
}

typedef struct {
    int report_fd;
} umd_child_ctx;

static void write_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
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

static void umd_ev_progress(void *ctx, int64_t step, int64_t total, double loss, double img_per_s) {
    umd_child_ctx *c = ctx;
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

static void umd_ev_result(void *ctx, const char *key, double value, const char *text) {
    if (!text && !isfinite(value)) return;
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "umdq", "result");
        if (text) cJSON_AddStringToObject(o, key, text);
        else cJSON_AddNumberToObject(o, key, value);
    }
    umd_emit(ctx, o);
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
    child_common(spec->scratch, spec->cuda_devices, parent);
    child_unblock_signals();

    umd_child_ctx ctx = {rep_w};
    umd_events ev;
    memset(&ev, 0, sizeof ev);
    ev.ctx = &ctx;
    ev.progress = umd_ev_progress;
    ev.metric = umd_ev_metric;
    ev.result = umd_ev_result;
    ev.should_stop = umd_ev_should_stop;
    ev.workdir = spec->scratch;
    /* Checkpoints stay in the scratch directory for now. Uploading them to the daemon's artifact
     * store (ev.checkpoint: PUT /api/artifacts/JOB/ckpt.umd) and resuming a later attempt from
     * the downloaded copy (ev.resume_from) belong here, once the worker passes the daemon's HTTP
     * address and token from `welcome` into runner_spec. */
    ev.checkpoint = NULL;
    ev.resume_from = NULL;

    char err[1024] = "";
    int rc = umd_run(config, &ev, err, sizeof err);
    if (rc == 0) _exit(0);
    if (!err[0]) snprintf(err, sizeof err, "%s", umdq_strerror(rc));
    size_t n = strlen(err);
    write_all(2, err, n);
    write_all(2, "\n", 1);
    _exit(1);
}

/* ---- start, pump, stop -------------------------------------------------------------------------- */

static int prepare_scratch(const char *dir, char *err, size_t errlen) {
    struct stat st;
    if (lstat(dir, &st) == 0) {
        int rc = runner_remove_tree(dir, err, errlen);
        if (rc != 0) return rc;
    }
    if (mkdir_p(dir, 0755) != 0) {
        snprintf(err, errlen, "cannot create the scratch directory %s: %s", dir, strerror(errno));
        return UMDQ_EIO;
    }
    return 0;
}

static int write_text(const char *path, const char *text, char *err, size_t errlen) {
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return UMDQ_EIO;
    }
    int bad = fputs(text, f) < 0 || fputc('\n', f) < 0;
    bad |= fclose(f) != 0;
    if (bad) {
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
    }

    rc = prepare_scratch(spec->scratch, err, errlen);
    if (rc != 0) goto fail;
    if (!is_umd) {
        char path[4200];
        config_text = cJSON_Print(config);
        if (!config_text) goto oom;
        snprintf(path, sizeof path, "%s/config.json", spec->scratch);
        rc = write_text(path, config_text, err, errlen);
        if (rc != 0) goto fail;
    }

    r = calloc(1, sizeof *r);
    if (!r) goto oom;
    r->pid = -1;
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
        else command_child(spec, cmd, pipes[0][1], pipes[1][1], pipes[2][1], parent);
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
        fcntl(r->fd[i], F_SETFL, fcntl(r->fd[i], F_GETFL) | O_NONBLOCK);
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
        kill(-r->pid, SIGTERM);
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

static char remove_failed_path[1024];
static int remove_failed_errno;

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)ftw;
    int rc = (flag == FTW_DP) ? rmdir(path) : unlink(path);
    if (rc != 0 && errno != ENOENT && !remove_failed_path[0]) {
        remove_failed_errno = errno;
        snprintf(remove_failed_path, sizeof remove_failed_path, "%s", path);
    }
    return 0;
}

int runner_remove_tree(const char *path, char *err, size_t errlen) {
    remove_failed_path[0] = 0;
    remove_failed_errno = 0;
    if (nftw(path, remove_one, 32, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove %s: %s", path, strerror(errno));
        return UMDQ_EIO;
    }
    if (remove_failed_path[0]) {
        snprintf(err, errlen, "cannot remove %s: %s", remove_failed_path, strerror(remove_failed_errno));
        return UMDQ_EIO;
    }
    return 0;
}

int runner_remove_tree_async(const char *path) {
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t mid = fork();
    if (mid == 0) {
        /* the middle process exits at once, so the remover is nobody's child to wait for */
        child_reset_signals();
        setsid();
        if (fork() == 0) {
            close_range(3, ~0u, 0);
            char err[64];
            runner_remove_tree(path, err, sizeof err);
            _exit(0);
        }
        _exit(0);
    }
    int fork_errno = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (mid < 0) {
        errno = fork_errno;
        return UMDQ_EIO;
    }
    int st;
    while (waitpid(mid, &st, 0) < 0 && errno == EINTR) {}
    return 0;
}
