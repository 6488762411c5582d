/* worker.c: the worker's event loop: DEALER socket, hello/heartbeat, job/cancel/ack handling,
 * forwarding a runner's output as metrics, result and log messages, and finished reports. */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "jobgroup.h"
#include "journal.h"
#include "jsonx.h"
#include "log.h"
#include "proto.h"
#include "runner.h"
#include "umdq.h"
#include "util.h"

#define FLUSH_MS 500          /* metrics, results and log bytes go out at least this often */
#define MAX_POINTS_MSG 1000   /* points per metrics message (protocol limit) */
#define MAX_LOOP_WAIT_MS 100  /* the loop never sleeps longer (a heartbeat is never later) */
#define SHUTDOWN_ACK_MS 2000  /* on SIGTERM: wait this long for the last finished to be acked */
#define MAX_ERROR (64u << 10) /* finished.error */
#define MSGS_PER_TURN 64      /* incoming messages handled per loop turn */
#define OUT_MSGS_PER_TURN 32  /* outgoing metrics/log messages per loop turn (unless draining) */
#define NAME_RETRY_MS 10000   /* a hello refused because the name is in use is retried this long */
#define NAME_RETRY_FIRST_MS 250 /* ... first after this, then twice as long each time (at most 2 s) */
#define NAME_RETRY_MAX_MS 2000
#define RESEND_MS 3000        /* a report unconfirmed this long while the daemon answers is sent again */

typedef enum {
    STOP_NONE = 0,
    STOP_CANCELLED,  /* cancel, reason "cancelled" or "stale" */
    STOP_STALLED,    /* cancel, reason "stalled" */
    STOP_PREEMPTED   /* the worker is shutting down, or cancel reason "shutdown" */
} stop_reason;

struct worker {
    char *connect, *name, *host, *device, *backend, *cuda_devices, *workdir, *gpu_name; /* owned */
    int grace_ms, umd;
    int64_t memory_mb;

    void *zctx;              /* owned */
    void *sock;              /* DEALER, owned */
    char routing_id[256];
    int heartbeat_ms;
    char epoch[80];          /* of the daemon that last welcomed us */
    char *http_url, *token;  /* the daemon's HTTP address and API token from `welcome` (the umd
                                children's artifact store), owned; NULL until then */

    runner *run;             /* the running attempt, owned; NULL when idle */
    int64_t job, attempt, sweep;
    char lease[80];
    double stall_timeout;    /* s, from the job message */
    int64_t last_step, step_changed; /* for "stalled: no progress for N s" */
    stop_reason stop;
    int64_t last_flush;

    cJSON *unacked;          /* array of finished messages awaiting ack, owned */
    journal **journals;      /* what was sent about the running attempt and the unacknowledged
                                finished ones and is not confirmed stored, oldest attempt first;
                                owned (docs/protocol.md, "Watermarks") */
    int njournals, capjournals;
    int stopping;            /* SIGTERM/SIGINT seen */
    int64_t exit_at;         /* mono ms: give up waiting for acks; -1 not yet set */
    int rejected;
    char reject_error[512];
    int64_t hello_retry_at;  /* mono ms: say hello again (the name was in use); -1 none pending */
    int64_t name_retry_until;/* mono ms: the end of the name-in-use retries; -1 before the first */
    int hello_backoff_ms;
    jobgroup *groups;        /* the record of the running attempt's process group, owned */
    int send_warned;
};

/* ---- signals: a self-pipe wakes the loop ---------------------------------------------------- */

static int sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t sig_term_count;

static void on_signal(int sig) {
    int saved = errno;
    char c = (sig == SIGCHLD) ? 'C' : 'T';
    if (sig != SIGCHLD) sig_term_count++;
    if (sig_pipe[1] >= 0) {
        ssize_t w = write(sig_pipe[1], &c, 1);
        (void)w;
    }
    errno = saved;
}

static int signals_install(char *err, size_t errlen) {
    if (sig_pipe[0] < 0 && pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return UMDQ_EIO;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* ---- sending -------------------------------------------------------------------------------- */

/* Send msg (consumed). Never blocks: a full queue drops the message (finished is resent). */
static void send_msg(worker *w, cJSON *msg) {
    if (!msg) return;
    char *text = proto_print(msg);
    cJSON_Delete(msg);
    if (!text) return;
    size_t n = strlen(text);
    if (zmq_send(w->sock, text, n, ZMQ_DONTWAIT) < 0) {
        if (!w->send_warned)
            log_warn("cannot send to the daemon (%s); messages are dropped until it is reachable",
                     zmq_strerror(errno));
        w->send_warned = 1;
    } else {
        w->send_warned = 0;
    }
    free(text);
}

static cJSON *msg_about_job(worker *w, const char *type) {
    cJSON *m = proto_new(type);
    if (!m) return NULL;
    cJSON_AddNumberToObject(m, "job", (double)w->job);
    cJSON_AddNumberToObject(m, "attempt", (double)w->attempt);
    cJSON_AddStringToObject(m, "lease", w->lease);
    return m;
}

/* ---- journals: reports sent and not yet confirmed stored ------------------------------------ */

static journal *journal_of(worker *w, int64_t job, int64_t attempt) {
    for (int i = 0; i < w->njournals; i++)
        if (journal_job(w->journals[i]) == job && journal_attempt(w->journals[i]) == attempt) return w->journals[i];
    return NULL;
}

/* A new journal for the attempt the worker now runs; NULL when out of memory. */
static journal *journal_start(worker *w) {
    journal *j = NULL;
    if (w->njournals == w->capjournals) {
        int cap = w->capjournals ? 2 * w->capjournals : 4;
        journal **grown = realloc(w->journals, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        w->journals = grown;
        w->capjournals = cap;
    }
    if (journal_new(w->job, w->attempt, w->lease, &j) != 0) return NULL;
    w->journals[w->njournals++] = j;
    return j;
}

static void journal_forget(worker *w, int64_t job, int64_t attempt) {
    for (int i = 0; i < w->njournals; i++) {
        if (journal_job(w->journals[i]) != job || journal_attempt(w->journals[i]) != attempt) continue;
        journal_destroy(&w->journals[i]);
        memmove(&w->journals[i], &w->journals[i + 1], (size_t)(w->njournals - i - 1) * sizeof *w->journals);
        w->njournals--;
        return;
    }
}

/* Send one journal entry: a metrics or log message that says which entries the journal holds. */
static void send_entry(void *ud, const journal *j, const journal_entry *e) {
    worker *w = ud;
    cJSON *m = proto_new(e->is_log ? "log" : "metrics");
    if (!m) return;
    cJSON_AddNumberToObject(m, "job", (double)journal_job(j));
    cJSON_AddNumberToObject(m, "attempt", (double)journal_attempt(j));
    cJSON_AddStringToObject(m, "lease", journal_lease(j));
    if (e->is_log) {
        cJSON_AddNumberToObject(m, "offset", (double)e->offset);
        cJSON_AddNumberToObject(m, "from", (double)journal_from_log(j));
        cJSON_AddStringToObject(m, "data", e->data);
    } else {
        cJSON_AddNumberToObject(m, "seq", (double)e->seq);
        cJSON_AddNumberToObject(m, "from", (double)journal_from_seq(j));
        cJSON_AddRawToObject(m, "points", e->data);
    }
    send_msg(w, m);
}

/* Say once when the memory bound made a journal give entries up. */
static void journal_note_dropped(journal *j) {
    int64_t entries, bytes;
    journal_take_dropped(j, &entries, &bytes);
    if (entries > 0)
        log_warn("job %lld attempt %lld: the daemon has not confirmed %lld bytes of reports for too long: "
                 "%lld of its messages are given up", (long long)journal_job(j), (long long)journal_attempt(j),
                 (long long)bytes, (long long)entries);
}

/* The daemon says what of an attempt it stored (a `stored` message or an entry of `welcome`): forget
 * that. With may_resend, send the rest again when its oldest entry has waited RESEND_MS: the daemon
 * answers in order, so an entry sent that long before is lost (a full send queue dropped it). */
static void handle_stored(worker *w, const cJSON *msg, int may_resend) {
    char perr[256];
    int64_t job, attempt, seq, log;
    if (proto_get_int(msg, "job", &job, perr, sizeof perr) != 0 ||
        proto_get_int(msg, "attempt", &attempt, perr, sizeof perr) != 0 ||
        proto_get_int(msg, "seq", &seq, perr, sizeof perr) != 0 || proto_get_int(msg, "log", &log, perr, sizeof perr) != 0) {
        log_warn("dropped a malformed stored message: %s", perr);
        return;
    }
    journal *j = journal_of(w, job, attempt);
    if (!j) return;
    journal_confirm(j, seq, log);
    int64_t now = mono_ms();
    if (may_resend && journal_unconfirmed(j) && journal_overdue(j, now, RESEND_MS)) {
        log_debug("job %lld attempt %lld: sending again what the daemon has not stored (from metrics %lld, "
                  "log byte %lld)", (long long)job, (long long)attempt, (long long)journal_from_seq(j),
                  (long long)journal_from_log(j));
        journal_resend(j, now, send_entry, w);
    }
}

static cJSON *running_json(worker *w) {
    if (!w->run) return cJSON_CreateNull();
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    cJSON_AddNumberToObject(r, "job", (double)w->job);
    cJSON_AddNumberToObject(r, "attempt", (double)w->attempt);
    cJSON_AddStringToObject(r, "lease", w->lease);
    cJSON_AddNumberToObject(r, "step", (double)runner_step(w->run));
    cJSON_AddNumberToObject(r, "beat", (double)runner_beats(w->run));
    /* while reports wait for confirmation, what was sent: the daemon answers `stored` */
    journal *j = journal_of(w, w->job, w->attempt);
    if (j && journal_unconfirmed(j)) {
        cJSON_AddNumberToObject(r, "seq", (double)journal_sent_seq(j));
        cJSON_AddNumberToObject(r, "log", (double)journal_sent_log(j));
    }
    return r;
}

static void send_hello(worker *w) {
    cJSON *m = proto_new("hello");
    if (!m) return;
    cJSON_AddStringToObject(m, "name", w->name);
    cJSON_AddStringToObject(m, "host", w->host);
    cJSON_AddStringToObject(m, "device", w->device);
    cJSON_AddStringToObject(m, "backend", w->backend);
    cJSON_AddNumberToObject(m, "pid", (double)getpid());
    cJSON *caps = cJSON_AddObjectToObject(m, "capabilities");
    if (caps) {
        cJSON *kinds = cJSON_AddArrayToObject(caps, "kinds");
        if (kinds) {
            cJSON_AddItemToArray(kinds, cJSON_CreateString("command"));
            if (w->umd) cJSON_AddItemToArray(kinds, cJSON_CreateString("umd"));
        }
        if (w->gpu_name) cJSON_AddStringToObject(caps, "gpu_name", w->gpu_name);
        else cJSON_AddNullToObject(caps, "gpu_name");
        if (w->memory_mb >= 0) cJSON_AddNumberToObject(caps, "memory_mb", (double)w->memory_mb);
        else cJSON_AddNullToObject(caps, "memory_mb");
    }
    cJSON_AddItemToObject(m, "running", running_json(w));
    cJSON_AddItemToObject(m, "finished", cJSON_Duplicate(w->unacked, 1));
    send_msg(w, m);
}

static void send_heartbeat(worker *w) {
    cJSON *m = proto_new("hb");
    if (!m) return;
    cJSON_AddItemToObject(m, "running", running_json(w));
    send_msg(w, m);
    cJSON *f;
    cJSON_ArrayForEach(f, w->unacked) send_msg(w, cJSON_Duplicate(f, 1));
}

/* ---- forwarding the child's output ---------------------------------------------------------- */

/* Send what the runner holds: full batches at once, the rest every FLUSH_MS; everything when
 * drain is set (the attempt has ended). */
static void flush_output(worker *w, int64_t now, int drain) {
    runner *r = w->run;
    journal *j = journal_of(w, w->job, w->attempt);
    if (!r || !j) return;
    journal_entry e;
    int timer = drain || now - w->last_flush >= FLUSH_MS;
    int budget = drain ? 1 << 30 : OUT_MSGS_PER_TURN;

    while (budget > 0 && runner_points_pending(r) > 0 &&
           (timer || runner_points_pending(r) >= MAX_POINTS_MSG)) {
        cJSON *pts = runner_take_points(r, MAX_POINTS_MSG);
        if (!pts) break;
        char *text = cJSON_PrintUnformatted(pts);
        cJSON_Delete(pts);
        if (journal_add_metrics(j, text, now, &e) != 0) break;
        send_entry(w, j, &e);
        budget--;
    }
    if (timer) {
        cJSON *res = runner_take_results(r);
        if (res) {
            cJSON *m = msg_about_job(w, "result");
            if (m) {
                cJSON_AddItemToObject(m, "results", res);
                send_msg(w, m);
            } else {
                cJSON_Delete(res);
            }
        }
    }
    while (budget > 0 && runner_log_pending(r) > 0 &&
           (timer || runner_log_pending(r) >= PROTO_MAX_LOG_CHUNK)) {
        int64_t offset;
        char *data;
        size_t len;
        if (runner_take_log(r, PROTO_MAX_LOG_CHUNK, &offset, &data, &len) != 0) break;
        if (len == 0) {
            free(data);
            break;
        }
        if (journal_add_log(j, offset, data, len, now, &e) != 0) break;
        send_entry(w, j, &e);
        budget--;
    }
    journal_note_dropped(j);
    if (timer) w->last_flush = now;
}

/* ---- attempts ------------------------------------------------------------------------------- */

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGTRAP: return "SIGTRAP";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGSEGV: return "SIGSEGV";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
    default: return "signal";
    }
}

/* "reason" then the stderr tail, at most MAX_ERROR bytes (the tail is cut at its front). */
static char *error_text(const char *reason, const char *tail, size_t tail_len) {
    strbuf b;
    strbuf_init(&b);
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > MAX_ERROR / 2) rlen = MAX_ERROR / 2;
    if (rlen) strbuf_append(&b, reason, rlen);
    if (tail_len > 0) {
        if (rlen) strbuf_puts(&b, "\n");
        size_t room = MAX_ERROR - b.len;
        if (tail_len > room) {
            tail += tail_len - room;
            tail_len = room;
        }
        strbuf_append(&b, tail, tail_len);
    }
    char *s = strbuf_steal(&b);
    if (s) runner_utf8_sanitize(s, strlen(s));
    return s;
}

static void report_finished(worker *w, const char *status, int has_code, int code, int sig,
                            const char *error, const cJSON *results) {
    cJSON *m = msg_about_job(w, "finished");
    if (!m) return;
    cJSON_AddStringToObject(m, "status", status);
    if (has_code) cJSON_AddNumberToObject(m, "exit_code", code);
    else cJSON_AddNullToObject(m, "exit_code");
    if (sig > 0) cJSON_AddNumberToObject(m, "signal", sig);
    else cJSON_AddNullToObject(m, "signal");
    cJSON_AddStringToObject(m, "error", error ? error : "");
    cJSON_AddItemToObject(m, "results", results ? cJSON_Duplicate(results, 1) : cJSON_CreateObject());
    /* what was sent about the attempt: the daemon applies this report once all of it is stored */
    const journal *j = journal_of(w, w->job, w->attempt);
    cJSON_AddNumberToObject(m, "seq", j ? (double)journal_sent_seq(j) : 0);
    cJSON_AddNumberToObject(m, "log", j ? (double)journal_sent_log(j) : 0);
    cJSON_AddItemToArray(w->unacked, cJSON_Duplicate(m, 1));
    /* the log line shows the error's last line (the most telling one of a stderr tail) */
    const char *last = error ? error : "";
    size_t n = strlen(last);
    while (n > 0 && last[n - 1] == '\n') n--;
    const char *start = last + n;
    while (start > last && start[-1] != '\n') start--;
    int shown = (int)(last + n - start);
    if (shown > 300) shown = 300;
    if (shown > 0 && strncmp(start, status, (size_t)shown) != 0)
        log_info("job %lld attempt %lld: %s: %.*s", (long long)w->job, (long long)w->attempt, status,
                 shown, start);
    else
        log_info("job %lld attempt %lld: %s", (long long)w->job, (long long)w->attempt, status);
    send_msg(w, m);
    if (w->stopping && w->exit_at < 0) w->exit_at = mono_ms() + SHUTDOWN_ACK_MS;
}

static void scratch_path(const worker *w, int64_t job, int64_t attempt, char *buf, size_t n) {
    snprintf(buf, n, "%s/job-%lld-%lld", w->workdir, (long long)job, (long long)attempt);
}

/* The runner is done: report how the attempt ended and forget it. */
static void attempt_finish(worker *w, int64_t now) {
    flush_output(w, now, 1);
    const runner_exit_info *x = runner_exit(w->run);
    size_t tail_len = 0;
    char *tail = runner_stderr_tail(w->run, &tail_len);
    const char *status;
    char reason[256] = "";
    int show_tail = 0;
    if (w->stop == STOP_CANCELLED) {
        status = "cancelled";
        snprintf(reason, sizeof reason, "cancelled");
    } else if (w->stop == STOP_PREEMPTED) {
        status = "preempted";
        snprintf(reason, sizeof reason, "preempted: the worker is shutting down");
    } else if (w->stop == STOP_STALLED) {
        status = "failed";
        double secs = w->stall_timeout > 0 ? w->stall_timeout : (double)(now - w->step_changed) / 1000.0;
        snprintf(reason, sizeof reason, "stalled: no progress for %.0f s", secs);
    } else if (x->signal == 0 && x->exit_code == 0) {
        status = "succeeded";
    } else {
        status = "failed";
        show_tail = 1;
        if (x->signal > 0)
            snprintf(reason, sizeof reason, "killed by signal %d (%s)", x->signal, signal_name(x->signal));
        else if (tail_len == 0)
            snprintf(reason, sizeof reason, "exited with status %d", x->exit_code);
    }
    char *error = error_text(reason, show_tail ? tail : NULL, show_tail ? tail_len : 0);
    report_finished(w, status, x->signal == 0 && x->exit_code >= 0, x->exit_code, x->signal, error,
                    runner_results(w->run));
    free(error);
    free(tail);
    runner_destroy(&w->run); /* the group is gone now */
    jobgroup_set(w->groups, 0, 0, 0);
    if (strcmp(status, "succeeded") == 0) {
        char dir[4200], derr[1200];
        scratch_path(w, w->job, w->attempt, dir, sizeof dir);
        if (runner_scratch_discard(dir, derr, sizeof derr) != 0) log_warn("%s", derr);
    }
    w->stop = STOP_NONE;
}

static void handle_job(worker *w, const cJSON *msg) {
    char perr[256];
    int64_t job, attempt, seed = 0, sweep = 0;
    const char *lease, *kind;
    if (proto_get_int(msg, "job", &job, perr, sizeof perr) != 0 ||
        proto_get_int(msg, "attempt", &attempt, perr, sizeof perr) != 0 ||
        proto_get_str(msg, "lease", &lease, perr, sizeof perr) != 0 ||
        proto_get_str(msg, "kind", &kind, perr, sizeof perr) != 0) {
        log_warn("dropped a malformed job message: %s", perr);
        return;
    }
    if (strlen(lease) >= sizeof w->lease) {
        log_warn("dropped a job message with an overlong lease");
        return;
    }
    if (w->run && job == w->job && attempt == w->attempt && strcmp(lease, w->lease) == 0) {
        log_info("job %lld attempt %lld is already running here", (long long)job, (long long)attempt);
        return;
    }
    if (w->run || w->stopping) {
        cJSON *m = proto_new("busy");
        if (m) {
            cJSON_AddNumberToObject(m, "job", (double)job);
            cJSON_AddNumberToObject(m, "attempt", (double)attempt);
            cJSON_AddStringToObject(m, "lease", lease);
        }
        log_info("job %lld attempt %lld refused: %s", (long long)job, (long long)attempt,
                 w->run ? "busy" : "shutting down");
        send_msg(w, m);
        return;
    }
    const cJSON *seed_item = cJSON_GetObjectItemCaseSensitive(msg, "seed");
    const cJSON *sweep_item = cJSON_GetObjectItemCaseSensitive(msg, "sweep");
    const cJSON *stall = cJSON_GetObjectItemCaseSensitive(msg, "stall_timeout");
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(msg, "config");
    if (cJSON_IsNumber(seed_item)) seed = (int64_t)seed_item->valuedouble;
    if (cJSON_IsNumber(sweep_item)) sweep = (int64_t)sweep_item->valuedouble;

    w->job = job;
    w->attempt = attempt;
    w->sweep = sweep;
    snprintf(w->lease, sizeof w->lease, "%s", lease);
    w->stall_timeout = cJSON_IsNumber(stall) ? stall->valuedouble : 0;
    w->stop = STOP_NONE;

    char dir[4200], err[2048] = "";
    scratch_path(w, job, attempt, dir, sizeof dir);
    runner_spec spec = {
        .kind = kind, .config = config, .job = job, .attempt = attempt, .sweep = sweep, .seed = seed,
        .scratch = dir, .cuda_devices = w->cuda_devices, .grace_ms = w->grace_ms,
        .http_url = w->http_url, .token = w->token,
    };
    int rc = UMDQ_EINVAL;
    if (strcmp(kind, "umd") == 0 && !w->umd) {
        snprintf(err, sizeof err, "this worker cannot run umd jobs: the trainer has no %s backend",
                 w->backend);
    } else if (!cJSON_IsObject(config)) {
        snprintf(err, sizeof err, "the job message has no config object");
    } else {
        rc = runner_new(&spec, &w->run, err, sizeof err);
    }
    if (rc == 0 && !journal_of(w, job, attempt) && !journal_start(w)) {
        runner_destroy(&w->run);
        snprintf(err, sizeof err, "out of memory");
        rc = UMDQ_ENOMEM;
    }
    if (rc != 0) {
        log_warn("job %lld attempt %lld cannot start: %s", (long long)job, (long long)attempt, err);
        report_finished(w, "failed", 0, 0, 0, err, NULL);
        return;
    }
    if (jobgroup_set(w->groups, runner_pid(w->run), job, attempt) != 0)
        log_warn("cannot record the process group of job %lld attempt %lld", (long long)job, (long long)attempt);
    int64_t now = mono_ms();
    w->last_step = 0;
    w->step_changed = now;
    w->last_flush = now;
    log_info("job %lld attempt %lld (%s) started as pid %d in %s", (long long)job, (long long)attempt,
             kind, (int)runner_pid(w->run), dir);
    cJSON *m = msg_about_job(w, "started");
    if (m) cJSON_AddNumberToObject(m, "pid", (double)runner_pid(w->run));
    send_msg(w, m);
}

static void handle_cancel(worker *w, const cJSON *msg) {
    char perr[256];
    int64_t job, attempt;
    if (proto_get_int(msg, "job", &job, perr, sizeof perr) != 0 ||
        proto_get_int(msg, "attempt", &attempt, perr, sizeof perr) != 0) {
        log_warn("dropped a malformed cancel message: %s", perr);
        return;
    }
    const char *lease = json_get_string(msg, "lease", NULL);
    if (!w->run || job != w->job || attempt != w->attempt || (lease && strcmp(lease, w->lease) != 0)) {
        log_debug("cancel for job %lld attempt %lld, which is not running here", (long long)job,
                  (long long)attempt);
        return;
    }
    const char *reason = json_get_string(msg, "reason", NULL);
    if (!reason) reason = "cancelled";
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(msg, "grace_ms");
    /* the worker's own grace bounds the daemon's, so a cancelled child is gone within grace_ms */
    int grace = w->grace_ms;
    if (cJSON_IsNumber(g) && g->valuedouble >= 0 && g->valuedouble < grace) grace = (int)g->valuedouble;
    if (w->stop == STOP_NONE) {
        if (strcmp(reason, "stalled") == 0) w->stop = STOP_STALLED;
        else if (strcmp(reason, "shutdown") == 0) w->stop = STOP_PREEMPTED;
        else w->stop = STOP_CANCELLED;
    }
    log_info("job %lld attempt %lld: cancel (%s), grace %d ms", (long long)job, (long long)attempt,
             reason, grace);
    runner_stop(w->run, grace, mono_ms());
}

static void handle_ack(worker *w, const cJSON *msg) {
    char perr[256];
    int64_t job, attempt;
    if (proto_get_int(msg, "job", &job, perr, sizeof perr) != 0 ||
        proto_get_int(msg, "attempt", &attempt, perr, sizeof perr) != 0) {
        log_warn("dropped a malformed ack message: %s", perr);
        return;
    }
    int n = cJSON_GetArraySize(w->unacked);
    for (int i = n - 1; i >= 0; i--) {
        const cJSON *f = cJSON_GetArrayItem(w->unacked, i);
        int64_t fj = (int64_t)cJSON_GetObjectItemCaseSensitive(f, "job")->valuedouble;
        int64_t fa = (int64_t)cJSON_GetObjectItemCaseSensitive(f, "attempt")->valuedouble;
        if (fj == job && fa == attempt) cJSON_DeleteItemFromArray(w->unacked, i);
    }
    /* the daemon applied the finished report only with every report of the attempt stored */
    if (!(w->run && job == w->job && attempt == w->attempt)) journal_forget(w, job, attempt);
}

/* A refused hello. A name in use by a live worker may be that of this worker's predecessor, not
 * yet known to be dead: say hello again with back-off for NAME_RETRY_MS. Anything else, or after
 * that, ends the worker (worker_run returns). */
static void handle_reject(worker *w, const cJSON *msg) {
    const char *e = json_get_string(msg, "error", NULL);
    const char *code = json_get_string(msg, "code", NULL);
    snprintf(w->reject_error, sizeof w->reject_error, "%s", e ? e : "(no reason given)");
    int64_t now = mono_ms();
    if (code && strcmp(code, "name_in_use") == 0 && !w->stopping) {
        if (w->name_retry_until < 0) {
            w->name_retry_until = now + NAME_RETRY_MS;
            w->hello_backoff_ms = NAME_RETRY_FIRST_MS;
        }
        if (now + w->hello_backoff_ms <= w->name_retry_until) {
            log_warn("the daemon refused this worker: %s; saying hello again in %d ms (until %d s have passed)",
                     w->reject_error, w->hello_backoff_ms, NAME_RETRY_MS / 1000);
            w->hello_retry_at = now + w->hello_backoff_ms;
            w->hello_backoff_ms *= 2;
            if (w->hello_backoff_ms > NAME_RETRY_MAX_MS) w->hello_backoff_ms = NAME_RETRY_MAX_MS;
            return;
        }
        log_error("the daemon still refuses this worker after %d s: %s", NAME_RETRY_MS / 1000, w->reject_error);
    } else {
        log_error("the daemon rejected this worker: %s", w->reject_error);
    }
    w->rejected = 1;
}

/* Keep the daemon's HTTP address and token that `welcome` carries (a daemon restarted on another
 * port says so in its own welcome). */
static void welcome_http(worker *w, const cJSON *msg) {
    const char *http = json_get_string(msg, "http", NULL);
    const char *token = json_get_string(msg, "token", NULL);
    if (!http || !http[0] || strlen(http) > 1000 || !token || strlen(token) > 1000) {
        if (!w->http_url) log_warn("the daemon's welcome names no HTTP address and token: umd checkpoints stay "
                                   "local and a new attempt cannot resume from them");
        return;
    }
    if (w->http_url && strcmp(w->http_url, http) == 0 && w->token && strcmp(w->token, token) == 0) return;
    char *u = strdup(http), *t = strdup(token);
    if (!u || !t) {
        free(u);
        free(t);
        return;
    }
    free(w->http_url);
    free(w->token);
    w->http_url = u;
    w->token = t;
    log_debug("artifact store at %s", w->http_url);
}

static void handle_message(worker *w, const void *data, size_t len) {
    cJSON *msg = NULL;
    const char *type = NULL;
    char perr[256];
    if (proto_parse(data, len, &msg, &type, perr, sizeof perr) != 0) {
        log_warn("dropped a malformed message from the daemon: %s", perr);
        return;
    }
    if (strcmp(type, "welcome") == 0) {
        const cJSON *hb = cJSON_GetObjectItemCaseSensitive(msg, "heartbeat_ms");
        if (cJSON_IsNumber(hb) && hb->valuedouble >= 50 && hb->valuedouble <= 60000)
            w->heartbeat_ms = (int)hb->valuedouble;
        const char *epoch = json_get_string(msg, "epoch", NULL);
        if (!epoch) epoch = "?";
        if (strcmp(epoch, w->epoch) != 0)
            log_info("registered as %s with the daemon at %s (epoch %s)", w->name, w->connect, epoch);
        snprintf(w->epoch, sizeof w->epoch, "%s", epoch);
        welcome_http(w, msg);
        w->hello_retry_at = -1;
        w->name_retry_until = -1;
        /* a daemon that just learnt of this worker may have lost reports: forget what it says it
         * has, then send the rest again, oldest attempt and oldest report first, before new ones */
        const cJSON *st;
        cJSON_ArrayForEach(st, cJSON_GetObjectItemCaseSensitive(msg, "stored")) {
            if (cJSON_IsObject(st)) handle_stored(w, st, 0);
        }
        int64_t now = mono_ms();
        for (int i = 0; i < w->njournals; i++)
            if (journal_unconfirmed(w->journals[i])) journal_resend(w->journals[i], now, send_entry, w);
    } else if (strcmp(type, "reject") == 0) {
        handle_reject(w, msg);
    } else if (strcmp(type, "who") == 0) {
        if (w->hello_retry_at < 0) send_hello(w); /* else the retry says hello soon */
    } else if (strcmp(type, "job") == 0) {
        handle_job(w, msg);
    } else if (strcmp(type, "cancel") == 0) {
        handle_cancel(w, msg);
    } else if (strcmp(type, "ack") == 0) {
        handle_ack(w, msg);
    } else if (strcmp(type, "stored") == 0) {
        handle_stored(w, msg, 1);
    } else {
        log_warn("dropped a message of unknown type \"%s\" from the daemon", type);
    }
    cJSON_Delete(msg);
}

static void receive_messages(worker *w) {
    for (int i = 0; i < MSGS_PER_TURN && !w->rejected; i++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, w->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        int more = zmq_msg_more(&m);
        if (!more) {
            handle_message(w, zmq_msg_data(&m), zmq_msg_size(&m));
        } else {
            log_warn("dropped a multi-frame message from the daemon");
            while (more) {
                zmq_msg_close(&m);
                zmq_msg_init(&m);
                if (zmq_msg_recv(&m, w->sock, 0) < 0) break;
                more = zmq_msg_more(&m);
            }
        }
        zmq_msg_close(&m);
    }
}

/* ---- the loop ------------------------------------------------------------------------------- */

static void begin_shutdown(worker *w, int64_t now) {
    if (!w->stopping) {
        w->stopping = 1;
        log_info("stopping%s", w->run ? ": stopping the running attempt (preempted)" : "");
        if (w->run) {
            if (w->stop == STOP_NONE) w->stop = STOP_PREEMPTED;
            runner_stop(w->run, w->grace_ms, now);
        } else {
            w->exit_at = now + (cJSON_GetArraySize(w->unacked) > 0 ? SHUTDOWN_ACK_MS : 0);
        }
    } else if (w->run) {
        log_info("second stop signal: killing the running attempt now");
        runner_stop(w->run, 0, now);
    }
}

int worker_run(worker *w, char *err, size_t errlen) {
    int rc = signals_install(err, errlen);
    if (rc != 0) return rc;
    if (mkdir_p(w->workdir, 0755) != 0) {
        snprintf(err, errlen, "cannot create the work directory %s: %s", w->workdir, strerror(errno));
        return UMDQ_EIO;
    }
    /* what a dead predecessor on this workdir left running, and left to remove */
    int killed = 0;
    char serr[512];
    if (jobgroup_sweep(w->workdir, &killed, serr, sizeof serr) != 0) log_warn("%s", serr);
    runner_scratch_discard_stale(w->workdir);
    if (!w->groups && (rc = jobgroup_new(w->workdir, &w->groups, err, errlen)) != 0) return rc;
    log_info("worker %s (%s, backend %s) connecting to %s; kinds: command%s", w->name, w->device,
             w->backend, w->connect, w->umd ? ", umd" : "");
    send_hello(w);
    int64_t next_hb = mono_ms() + w->heartbeat_ms;
    int handled_terms = 0;

    for (;;) {
        int64_t now = mono_ms();
        int64_t wake = next_hb;
        if (w->run) {
            int64_t d = runner_deadline_ms(w->run);
            if (d >= 0 && d < wake) wake = d;
            if ((runner_points_pending(w->run) > 0 || runner_log_pending(w->run) > 0) &&
                w->last_flush + FLUSH_MS < wake)
                wake = w->last_flush + FLUSH_MS;
        }
        if (w->stopping && w->exit_at >= 0 && w->exit_at < wake) wake = w->exit_at;
        if (w->hello_retry_at >= 0 && w->hello_retry_at < wake) wake = w->hello_retry_at;
        long timeout = (long)(wake - now);
        if (timeout < 0) timeout = 0;
        if (timeout > MAX_LOOP_WAIT_MS) timeout = MAX_LOOP_WAIT_MS;

        zmq_pollitem_t items[2 + RUNNER_MAX_FDS];
        int n = 0;
        items[n++] = (zmq_pollitem_t){.socket = w->sock, .events = ZMQ_POLLIN};
        items[n++] = (zmq_pollitem_t){.fd = sig_pipe[0], .events = ZMQ_POLLIN};
        if (w->run) {
            int fds[RUNNER_MAX_FDS];
            int k = runner_fds(w->run, fds);
            for (int i = 0; i < k; i++) items[n++] = (zmq_pollitem_t){.fd = fds[i], .events = ZMQ_POLLIN};
        }
        if (zmq_poll(items, n, timeout) < 0 && errno != EINTR) {
            snprintf(err, errlen, "zmq_poll: %s", zmq_strerror(errno));
            return UMDQ_EIO;
        }
        now = mono_ms();

        char drain[64];
        while (read(sig_pipe[0], drain, sizeof drain) > 0) {}
        while (handled_terms < sig_term_count) {
            handled_terms++;
            begin_shutdown(w, now);
        }

        receive_messages(w);
        if (w->rejected) {
            runner_destroy(&w->run);
            snprintf(err, errlen, "the daemon rejected this worker: %s", w->reject_error);
            return UMDQ_ESTATE;
        }

        if (w->run) {
            runner_pump(w->run, now);
            int64_t step = runner_step(w->run);
            if (step != w->last_step) {
                w->last_step = step;
                w->step_changed = now;
            }
            if (runner_done(w->run)) attempt_finish(w, now);
            else flush_output(w, now, 0);
        }

        if (w->hello_retry_at >= 0 && now >= w->hello_retry_at) {
            w->hello_retry_at = -1;
            send_hello(w);
        }
        if (now >= next_hb) {
            /* while refused, the daemon does not know this peer: a heartbeat would only draw `who` */
            if (w->hello_retry_at < 0) send_heartbeat(w);
            next_hb += w->heartbeat_ms;
            if (next_hb <= now) next_hb = now + w->heartbeat_ms;
        }

        if (w->stopping && !w->run) {
            if (w->exit_at < 0) w->exit_at = now + SHUTDOWN_ACK_MS;
            if (cJSON_GetArraySize(w->unacked) == 0 || now >= w->exit_at) {
                if (cJSON_GetArraySize(w->unacked) > 0)
                    log_warn("exiting with %d finished report(s) not acknowledged by the daemon",
                             cJSON_GetArraySize(w->unacked));
                return 0;
            }
        }
    }
}

/* ---- life ----------------------------------------------------------------------------------- */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int worker_new(const worker_opts *o, worker **out, char *err, size_t errlen) {
    *out = NULL;
    worker *w = calloc(1, sizeof *w);
    int rc = 0;
    if (!w) goto oom;
    w->connect = dup_or_null(o->connect);
    w->name = dup_or_null(o->name);
    w->host = dup_or_null(o->host);
    w->device = dup_or_null(o->device);
    w->backend = dup_or_null(o->backend);
    w->cuda_devices = dup_or_null(o->cuda_devices);
    w->workdir = dup_or_null(o->workdir);
    w->gpu_name = dup_or_null(o->gpu_name);
    w->grace_ms = o->grace_ms;
    w->umd = o->umd;
    w->memory_mb = o->memory_mb;
    w->heartbeat_ms = 1000;
    w->exit_at = -1;
    w->hello_retry_at = -1;
    w->name_retry_until = -1;
    w->unacked = cJSON_CreateArray();
    if (!w->connect || !w->name || !w->host || !w->device || !w->backend || !w->workdir ||
        (o->cuda_devices && !w->cuda_devices) || (o->gpu_name && !w->gpu_name) || !w->unacked)
        goto oom;

    char hex[17];
    if (random_hex(hex, 16) != 0) {
        snprintf(err, errlen, "cannot read random bytes for the routing id");
        rc = UMDQ_EIO;
        goto fail;
    }
    snprintf(w->routing_id, sizeof w->routing_id, "%.200s#%s", w->name, hex);

    w->zctx = zmq_ctx_new();
    if (!w->zctx) goto zfail;
    w->sock = zmq_socket(w->zctx, ZMQ_DEALER);
    if (!w->sock) goto zfail;
    int linger = 0, ivl = 100, ivl_max = 1000, hwm = 1000;
    if (zmq_setsockopt(w->sock, ZMQ_ROUTING_ID, w->routing_id, strlen(w->routing_id)) != 0 ||
        zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(w->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) != 0 ||
        zmq_setsockopt(w->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max) != 0 ||
        zmq_setsockopt(w->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0)
        goto zfail;
    if (zmq_connect(w->sock, w->connect) != 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", w->connect, zmq_strerror(errno));
        rc = UMDQ_EINVAL;
        goto fail;
    }
    *out = w;
    return 0;

zfail:
    snprintf(err, errlen, "ZeroMQ: %s", zmq_strerror(errno));
    rc = UMDQ_EIO;
    goto fail;
oom:
    snprintf(err, errlen, "out of memory");
    rc = UMDQ_ENOMEM;
fail:
    worker_destroy(&w);
    return rc;
}

void worker_destroy(worker **wp) {
    if (!wp || !*wp) return;
    worker *w = *wp;
    runner_destroy(&w->run);
    runner_scratch_spare_remove();
    jobgroup_destroy(&w->groups);
    if (w->sock) zmq_close(w->sock);
    if (w->zctx) zmq_ctx_term(w->zctx);
    cJSON_Delete(w->unacked);
    free(w->http_url);
    free(w->token);
    for (int i = 0; i < w->njournals; i++) journal_destroy(&w->journals[i]);
    free(w->journals);
    free(w->connect);
    free(w->name);
    free(w->host);
    free(w->device);
    free(w->backend);
    free(w->cuda_devices);
    free(w->workdir);
    free(w->gpu_name);
    free(w);
    *wp = NULL;
}
