/* scheduler.c: the scheduler loop: worker protocol over the ROUTER socket, mutations from the HTTP
 * threads, housekeeping and dispatch, all through one store batch per turn (see scheduler.h). */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>
#include "jsonx.h"
#include "log.h"
#include "proto.h"
#include "scheduler.h"
#include "umdq.h"
#include "util.h"

#define HOUSEKEEPING_MS 100
#define MAX_BATCH 1000          /* messages per turn, so mutations and housekeeping are not starved */
#define MAX_RID 256             /* bytes of a routing id */
#define MAX_NAME PROTO_MAX_NAME  /* characters of a worker's name, host or device */
#define MAX_BACKEND 15
#define CANCEL_GRACE_MS 10000   /* SIGTERM -> SIGKILL grace for a user cancel or a stall */
#define STALE_GRACE_MS 2000     /* ... for an orphaned child */
#define CANCEL_RESEND_MS 10000  /* a cancel not followed by `finished` is sent again after this */
#define RECENT_SLOTS 64
#define CHECKPOINT_MS 30000
#define FINISH_HOLD_BEATS 30    /* a `finished` waits at most this many heartbeat periods for the
                                   attempt's reports to be stored */

/* A worker that said hello and has not been declared dead. */
typedef struct {
    unsigned char rid[MAX_RID]; /* ZeroMQ routing id */
    size_t rid_len;
    char name[MAX_NAME + 1], host[MAX_NAME + 1], device[MAX_NAME + 1], backend[MAX_BACKEND + 1];
    int kinds;                  /* STORE_KIND_* */
    int64_t pid;
    int64_t last_seen_ms;       /* monotonic */
    int busy;                   /* 0: IDLE. 1: runs (job, attempt); job 0 = something not known yet */
    int stale;                  /* 1: (job, attempt) is a stale attempt it was told to stop */
    int64_t job, attempt;
    char lease[STORE_LEASE_HEX + 1];
    int64_t since_ms;           /* when it got or re-announced the attempt */
    int64_t step, step_ms;      /* latest step and when it (or beat) last advanced */
    int64_t beat;               /* the running attempt's progress lines, as heartbeats carry it */
    double stall_timeout;
    int64_t cancel_ms;          /* when a cancel for the attempt was last sent; 0 = never */
    int finishing;              /* 1: the attempt has ended on the worker; its `finished` waits for
                                   reports that are not stored yet (docs/protocol.md, "Watermarks") */
    int64_t finish_held_ms;     /* when that `finished` was first held back */
} worker;

/* One message to send after the commit. */
typedef struct {
    unsigned char rid[MAX_RID];
    size_t rid_len;
    char *text;                 /* owned */
    int64_t job, attempt;       /* for a `job` message: undone when it cannot be delivered */
    char lease[STORE_LEASE_HEX + 1];
    double waited;              /* for a `job` message: dispatch latency to record */
} outmsg;

/* Recently sent `who` / stale `cancel`, to answer a flood of reports with one message. */
typedef struct {
    unsigned char rid[MAX_RID];
    size_t rid_len;
    int64_t job, attempt;
    int64_t at_ms;
} recent;

/* An attempt that could not be handed to its worker: put back uncounted on the next turn. */
typedef struct {
    int64_t job, attempt;
    char lease[STORE_LEASE_HEX + 1];
} undelivered;

struct sched {
    sched_options o;            /* strings below are owned copies */
    char *http_url, *token, *epoch;
    char host[256];             /* this machine's host name, for worker_gone */
    worker **workers;           /* owned */
    int nworkers, capworkers;
    outmsg *out;                /* owned; sent after the commit */
    int nout, capout;
    mutation **muts;            /* borrowed from HTTP threads until completed */
    int nmuts, capmuts;
    undelivered *undeliv;       /* owned */
    int nundeliv, capundeliv;
    recent recent[RECENT_SLOTS];
    int recent_next;
    int dispatch_dirty;
    int64_t start_ms, next_housekeeping_ms, next_dispatch_sweep_ms, next_checkpoint_ms;
    int64_t grace_end_ms;
    int grace_done;
    int64_t next_orphan_ms;
    store_open_attempt *orphans; /* open attempts no worker held at the last check; owned */
    int norphans;
    int64_t drop_window_ms;     /* rate limit of the log lines about dropped messages */
    int drop_logged, drop_suppressed;
};

#define DROP_LOG_PER_S 20

/* Lines about dropped messages are limited to DROP_LOG_PER_S a second, so a peer sending garbage
 * cannot fill the disk; the rest are counted and the count is logged. */
static int drop_log_ok(sched *s) {
    int64_t now = mono_ms();
    if (now - s->drop_window_ms >= 1000) {
        if (s->drop_suppressed) log_warn("%d more dropped messages were not logged", s->drop_suppressed);
        s->drop_window_ms = now;
        s->drop_logged = s->drop_suppressed = 0;
    }
    if (s->drop_logged < DROP_LOG_PER_S) {
        s->drop_logged++;
        return 1;
    }
    s->drop_suppressed++;
    return 0;
}

#define log_drop(s, ...) do { if (drop_log_ok(s)) log_warn(__VA_ARGS__); } while (0)

/* ---- small helpers ------------------------------------------------------------------------------- */

#define GROW(arr, n, cap, init)                                                                 \
    ((n) < (cap) ? 0 : grow_array((void **)&(arr), &(cap), sizeof *(arr), (init)))

static int grow_array(void **arr, int *cap, size_t size, int init) {
    int ncap = *cap ? *cap * 2 : init;
    void *p = realloc(*arr, (size_t)ncap * size);
    if (!p) return UMDQ_ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

static const char *json_str(const cJSON *m, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A printable form of a routing id for log lines. */
static void rid_text(const unsigned char *rid, size_t len, char *buf, size_t n) {
    size_t j = 0;
    for (size_t i = 0; i < len && j + 5 < n; i++) {
        unsigned char c = rid[i];
        if (c >= 0x20 && c < 0x7f) buf[j++] = (char)c;
        else j += (size_t)snprintf(buf + j, n - j, "\\x%02x", c);
    }
    buf[j] = 0;
}

static worker *worker_by_rid(sched *s, const unsigned char *rid, size_t len) {
    for (int i = 0; i < s->nworkers; i++)
        if (s->workers[i]->rid_len == len && memcmp(s->workers[i]->rid, rid, len) == 0) return s->workers[i];
    return NULL;
}

static worker *worker_by_name(sched *s, const char *name) {
    for (int i = 0; i < s->nworkers; i++)
        if (strcmp(s->workers[i]->name, name) == 0) return s->workers[i];
    return NULL;
}

static worker *worker_holding(sched *s, int64_t job, int64_t attempt) {
    for (int i = 0; i < s->nworkers; i++) {
        worker *w = s->workers[i];
        if (w->busy && !w->stale && w->job == job && w->attempt == attempt) return w;
    }
    return NULL;
}

static void worker_remove(sched *s, worker *w) {
    for (int i = 0; i < s->nworkers; i++) {
        if (s->workers[i] != w) continue;
        s->workers[i] = s->workers[--s->nworkers];
        free(w);
        return;
    }
}

static void worker_idle(sched *s, worker *w) {
    w->busy = w->stale = w->finishing = 0;
    w->job = w->attempt = 0;
    w->lease[0] = 0;
    w->cancel_ms = 0;
    s->dispatch_dirty = 1;
}

static void worker_assign(worker *w, int64_t job, int64_t attempt, const char *lease, int64_t step,
                          double stall_timeout, int64_t now) {
    w->busy = 1;
    w->stale = 0;
    w->job = job;
    w->attempt = attempt;
    snprintf(w->lease, sizeof w->lease, "%s", lease);
    w->since_ms = now;
    w->step = step;
    w->beat = 0;
    w->step_ms = now;
    w->stall_timeout = stall_timeout;
    w->cancel_ms = 0;
    w->finishing = 0;
}

/* Record the worker's state in its row (last_seen, IDLE/BUSY). */
static void worker_sync(sched *s, worker *w) {
    char err[256];
    if (store_worker_seen(s->o.st, w->name, w->busy ? "BUSY" : "IDLE", err, sizeof err) != 0)
        log_warn("worker %s: %s", w->name, err);
}

/* 1 when a message of this kind went to (rid, job, attempt) within ms; else remembers it and 0. */
static int recently(sched *s, const unsigned char *rid, size_t len, int64_t job, int64_t attempt, int64_t ms) {
    int64_t now = mono_ms();
    for (int i = 0; i < RECENT_SLOTS; i++) {
        recent *r = &s->recent[i];
        if (r->rid_len == len && r->job == job && r->attempt == attempt && memcmp(r->rid, rid, len) == 0 &&
            now - r->at_ms < ms)
            return 1;
    }
    recent *r = &s->recent[s->recent_next];
    s->recent_next = (s->recent_next + 1) % RECENT_SLOTS;
    memcpy(r->rid, rid, len);
    r->rid_len = len;
    r->job = job;
    r->attempt = attempt;
    r->at_ms = now;
    return 0;
}

/* ---- the outbox -------------------------------------------------------------------------------- */

/* Queue msg (consumed) for rid. */
static outmsg *queue_msg(sched *s, const unsigned char *rid, size_t len, cJSON *msg) {
    char *text = proto_print(msg);
    cJSON_Delete(msg);
    if (!text || GROW(s->out, s->nout, s->capout, 16) != 0) {
        free(text);
        log_error("out of memory queueing a message");
        return NULL;
    }
    outmsg *m = &s->out[s->nout++];
    memset(m, 0, sizeof *m);
    memcpy(m->rid, rid, len);
    m->rid_len = len;
    m->text = text;
    return m;
}

static void send_who(sched *s, const unsigned char *rid, size_t len) {
    if (recently(s, rid, len, -1, -1, 500)) return;
    cJSON *m = proto_new("who");
    if (m) queue_msg(s, rid, len, m);
}

static void send_cancel(sched *s, const unsigned char *rid, size_t len, int64_t job, int64_t attempt,
                        const char *lease, const char *reason, int grace_ms) {
    cJSON *m = proto_new("cancel");
    if (!m) return;
    cJSON_AddNumberToObject(m, "job", (double)job);
    cJSON_AddNumberToObject(m, "attempt", (double)attempt);
    cJSON_AddStringToObject(m, "lease", lease ? lease : "");
    cJSON_AddStringToObject(m, "reason", reason);
    cJSON_AddNumberToObject(m, "grace_ms", grace_ms);
    queue_msg(s, rid, len, m);
}

/* A report with a stale lease: refused, and its child told to stop (at most every 2 s). */
static void refuse_stale(sched *s, const unsigned char *rid, size_t len, worker *w, const char *type, int64_t job,
                         int64_t attempt, const char *lease) {
    if (w && w->busy && !w->stale && w->job == job && w->attempt == attempt) w->stale = 1;
    if (recently(s, rid, len, job, attempt, 2000)) return;
    log_info("stale %s for job %lld attempt %lld: refused", type, (long long)job, (long long)attempt);
    char detail[160];
    snprintf(detail, sizeof detail, "{\"attempt\":%lld,\"message\":\"%.40s\"}", (long long)attempt, type);
    if (store_event(s->o.st, job, "stale_report", detail) != 0)
        log_warn("job %lld: cannot record a stale report", (long long)job);
    send_cancel(s, rid, len, job, attempt, lease, "stale", STALE_GRACE_MS);
}

static void send_ack(sched *s, const unsigned char *rid, size_t len, int64_t job, int64_t attempt) {
    cJSON *m = proto_new("ack");
    if (!m) return;
    cJSON_AddNumberToObject(m, "job", (double)job);
    cJSON_AddNumberToObject(m, "attempt", (double)attempt);
    queue_msg(s, rid, len, m);
}

/* {job, attempt, seq, log} into o: what of the attempt's reports is stored. */
static void add_marks(cJSON *o, int64_t job, int64_t attempt, const store_marks *mk) {
    cJSON_AddNumberToObject(o, "job", (double)job);
    cJSON_AddNumberToObject(o, "attempt", (double)attempt);
    cJSON_AddNumberToObject(o, "seq", (double)mk->metrics_seq);
    cJSON_AddNumberToObject(o, "log", (double)mk->log_bytes);
}

/* `stored`: the worker can forget what the marks cover, and sends again what they do not. */
static void send_stored(sched *s, const unsigned char *rid, size_t len, int64_t job, int64_t attempt,
                        const store_marks *mk) {
    cJSON *m = proto_new("stored");
    if (!m) return;
    add_marks(m, job, attempt, mk);
    queue_msg(s, rid, len, m);
}

static void outbox_clear(sched *s) {
    for (int i = 0; i < s->nout; i++) free(s->out[i].text);
    s->nout = 0;
}

/* After the commit: send every queued message. A `job` that cannot reach its worker is undone on
 * the next turn and the worker forgotten (it will be asked `who` when it speaks again). */
static void outbox_flush(sched *s) {
    for (int i = 0; i < s->nout; i++) {
        outmsg *m = &s->out[i];
        int ok = zmq_send(s->o.router, m->rid, m->rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
                 zmq_send(s->o.router, m->text, strlen(m->text), ZMQ_DONTWAIT) >= 0;
        if (!ok) {
            char who[MAX_RID * 4 + 1];
            rid_text(m->rid, m->rid_len, who, sizeof who);
            log_warn("cannot send to %s: %s", who, zmq_strerror(errno));
        }
        if (m->job > 0) {
            if (ok) {
                latency_observe(s->o.lat, m->waited);
            } else if (GROW(s->undeliv, s->nundeliv, s->capundeliv, 8) == 0) {
                undelivered *u = &s->undeliv[s->nundeliv++];
                u->job = m->job;
                u->attempt = m->attempt;
                snprintf(u->lease, sizeof u->lease, "%s", m->lease);
                worker *w = worker_by_rid(s, m->rid, m->rid_len);
                if (w) worker_remove(s, w);
            }
        }
    }
    outbox_clear(s);
}

/* ---- losing attempts ------------------------------------------------------------------------------ */

static void lose_attempt(sched *s, int64_t job, int64_t attempt, const char *why) {
    char err[512], state[16];
    int rc = store_lost(s->o.st, job, attempt, why, state, err, sizeof err);
    if (rc == 0) {
        log_warn("job %lld attempt %lld lost (%s); job is now %s", (long long)job, (long long)attempt, why, state);
        s->dispatch_dirty = 1;
    } else if (rc != UMDQ_ESTALE) {
        log_error("job %lld attempt %lld: %s", (long long)job, (long long)attempt, err);
    }
}

/* 1 when w's process provably no longer exists: it ran on this machine (its hello named this
 * host) and its pid names no process, or a zombie. A worker on another machine, or one whose pid
 * names a live process (perhaps a new one), is not provably gone. */
static int worker_gone(const sched *s, const worker *w) {
    if (!s->host[0] || strcmp(w->host, s->host) != 0 || w->pid <= 0 || w->pid > INT32_MAX) return 0;
    if (kill((pid_t)w->pid, 0) != 0) return errno == ESRCH;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%lld/stat", (long long)w->pid);
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* "pid (comm) state ..." */
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

static void worker_dead(sched *s, worker *w, const char *why) {
    char err[256], reason[512];
    log_warn("worker %s (pid %lld on %s): %s", w->name, (long long)w->pid, w->host, why);
    if (w->busy && !w->stale && w->job > 0) {
        snprintf(reason, sizeof reason, "worker %s %s", w->name, why);
        lose_attempt(s, w->job, w->attempt, reason);
    }
    if (store_worker_seen(s->o.st, w->name, "DEAD", err, sizeof err) != 0) log_warn("worker %s: %s", w->name, err);
    worker_remove(s, w);
}

/* ---- worker messages ---------------------------------------------------------------------------------- */

typedef struct {
    int64_t job, attempt;
    const char *lease;
} lease_ref;

/* An optional integer field: 0 and *out when present, 1 when absent (out untouched), UMDQ_EPROTO
 * when present but not a non-negative integer. */
static int get_opt_count(const cJSON *m, const char *key, int64_t *out, char *err, size_t errlen) {
    if (!cJSON_HasObjectItem(m, key)) return 1;
    int64_t v;
    int rc = proto_get_int(m, key, &v, err, errlen);
    if (rc != 0) return rc;
    if (v < 0) {
        snprintf(err, errlen, "field \"%s\" must not be negative", key);
        return UMDQ_EPROTO;
    }
    *out = v;
    return 0;
}

/* job, attempt, lease of a message; 0 or UMDQ_EPROTO with err. */
static int get_lease_ref(const cJSON *m, lease_ref *r, char *err, size_t errlen) {
    int rc;
    if ((rc = proto_get_int(m, "job", &r->job, err, errlen)) != 0) return rc;
    if ((rc = proto_get_int(m, "attempt", &r->attempt, err, errlen)) != 0) return rc;
    if ((rc = proto_get_str(m, "lease", &r->lease, err, errlen)) != 0) return rc;
    return 0;
}

/* Apply one `finished` body (from a `finished` message or a hello's list) and acknowledge it. */
static void on_finished(sched *s, const unsigned char *rid, size_t len, worker *w, const cJSON *m) {
    char err[512], state[16], status_err[600];
    lease_ref r;
    const char *status;
    int64_t sent_seq = 0, sent_log = 0; /* what the worker says it sent of the attempt's reports */
    if (get_lease_ref(m, &r, err, sizeof err) != 0 || proto_get_str(m, "status", &status, err, sizeof err) != 0 ||
        get_opt_count(m, "seq", &sent_seq, err, sizeof err) < 0 || get_opt_count(m, "log", &sent_log, err, sizeof err) < 0) {
        log_drop(s, "malformed finished dropped: %s", err);
        return;
    }
    /* Applied only once every report the worker sent about the attempt is stored: a report can be
     * lost with a daemon that died before storing it, and the worker sends it again. Until then
     * the worker is told what is stored, and resends the report with its heartbeats. */
    store_marks mk;
    if ((sent_seq > 0 || sent_log > 0) &&
        store_marks_get(s->o.st, r.job, r.attempt, r.lease, &mk, err, sizeof err) == 0 &&
        (mk.metrics_seq < sent_seq || mk.log_bytes < sent_log)) {
        int64_t now = mono_ms();
        int held = w && w->busy && w->finishing && w->job == r.job && w->attempt == r.attempt;
        int64_t hold_ms = FINISH_HOLD_BEATS * (int64_t)s->o.heartbeat_ms;
        if (!held || now - w->finish_held_ms < hold_ms) {
            if (!held && w && (!w->busy || w->stale || w->job == 0 || (w->job == r.job && w->attempt == r.attempt))) {
                worker *other = worker_holding(s, r.job, r.attempt);
                if (other && other != w) worker_idle(s, other);
                worker_assign(w, r.job, r.attempt, r.lease, 0, 0, now);
                w->finishing = 1;
                w->finish_held_ms = now;
                worker_sync(s, w);
                log_info("job %lld attempt %lld ended on %s; its finished waits for reports not stored yet "
                         "(metrics %lld of %lld, log bytes %lld of %lld)", (long long)r.job, (long long)r.attempt,
                         w->name, (long long)mk.metrics_seq, (long long)sent_seq, (long long)mk.log_bytes,
                         (long long)sent_log);
            }
            send_stored(s, rid, len, r.job, r.attempt, &mk);
            return;
        }
        log_warn("job %lld attempt %lld: reports still missing after %d s (metrics %lld of %lld, log bytes %lld of "
                 "%lld): finished applied without them", (long long)r.job, (long long)r.attempt, (int)(hold_ms / 1000),
                 (long long)mk.metrics_seq, (long long)sent_seq, (long long)mk.log_bytes, (long long)sent_log);
        char detail[256];
        snprintf(detail, sizeof detail, "{\"attempt\":%lld,\"metrics\":[%lld,%lld],\"log\":[%lld,%lld]}",
                 (long long)r.attempt, (long long)mk.metrics_seq, (long long)sent_seq, (long long)mk.log_bytes,
                 (long long)sent_log);
        store_event(s->o.st, r.job, "finished_incomplete", detail);
    }
    store_finish_report rep;
    memset(&rep, 0, sizeof rep);
    rep.status = status;
    int64_t v;
    char ignored[64];
    if (proto_get_int(m, "exit_code", &v, ignored, sizeof ignored) == 0 && v >= INT32_MIN && v <= INT32_MAX)
        rep.has_exit_code = 1, rep.exit_code = (int)v;
    if (proto_get_int(m, "signal", &v, ignored, sizeof ignored) == 0 && v >= 0 && v <= 1024)
        rep.has_signal = 1, rep.signal = (int)v;
    rep.error = json_str(m, "error");
    rep.results = cJSON_GetObjectItemCaseSensitive(m, "results");
    if (rep.results && !cJSON_IsObject(rep.results)) rep.results = NULL;
    if (strcmp(status, "succeeded") != 0 && strcmp(status, "failed") != 0 && strcmp(status, "cancelled") != 0 &&
        strcmp(status, "preempted") != 0) {
        snprintf(status_err, sizeof status_err, "unknown status \"%.40s\"%s%.500s", status,
                 rep.error ? ": " : "", rep.error ? rep.error : "");
        rep.status = "failed";
        rep.error = status_err;
    }
    int rc = store_finish(s->o.st, r.job, r.attempt, r.lease, &rep, state, err, sizeof err);
    if (rc == 0) {
        log_info("job %lld attempt %lld %s; job is now %s", (long long)r.job, (long long)r.attempt, rep.status, state);
        if (strcmp(state, "QUEUED") == 0) s->dispatch_dirty = 1;
    } else if (rc == UMDQ_ESTALE) {
        log_info("stale finished for job %lld attempt %lld acknowledged, nothing changed", (long long)r.job,
                 (long long)r.attempt);
        char detail[96];
        snprintf(detail, sizeof detail, "{\"attempt\":%lld,\"message\":\"finished\"}", (long long)r.attempt);
        store_event(s->o.st, r.job, "stale_report", detail);
    } else {
        /* not stored: no ack, so the worker sends it again */
        log_error("job %lld attempt %lld: finished not stored: %s", (long long)r.job, (long long)r.attempt, err);
        return;
    }
    send_ack(s, rid, len, r.job, r.attempt);
    if (w && w->busy && w->job == r.job && w->attempt == r.attempt) {
        worker_idle(s, w);
        worker_sync(s, w);
    }
    /* reported through another connection; a stale report with another lease leaves the holder of
     * the attempt (a peer cannot free a worker it does not know the lease of) */
    worker *holder = worker_holding(s, r.job, r.attempt);
    if (holder && holder != w && (rc == 0 || strcmp(holder->lease, r.lease) == 0)) {
        worker_idle(s, holder);
        worker_sync(s, holder);
    }
}

/* A worker announced that it runs `running` ({job, attempt, lease, step}, or null): keep a current
 * lease, stop a stale one, and notice an attempt it does not run. */
static void on_running(sched *s, worker *w, const cJSON *running) {
    char err[512], why[300];
    int64_t now = mono_ms(), patience = 3 * (int64_t)s->o.heartbeat_ms;
    if (!running || cJSON_IsNull(running)) {
        if (!w->busy || w->finishing) return; /* a finishing attempt ends with its `finished` */
        if (w->stale || w->job == 0) { /* the orphan is gone, or the unknown job it was busy with */
            worker_idle(s, w);
            return;
        }
        /* A `finished` would have come before this. Once the `job` message has had time to arrive,
         * the worker does not run the attempt we gave it. */
        if (now - w->since_ms > patience) {
            snprintf(why, sizeof why, "worker %s does not run it", w->name);
            lose_attempt(s, w->job, w->attempt, why);
            worker_idle(s, w);
        }
        return;
    }
    lease_ref r;
    int64_t step = 0, beat = 0;
    if (!cJSON_IsObject(running) || get_lease_ref(running, &r, err, sizeof err) != 0) {
        log_drop(s, "worker %s: malformed running: %s", w->name, cJSON_IsObject(running) ? err : "not an object");
        return;
    }
    if (proto_get_int(running, "step", &step, err, sizeof err) != 0) step = 0;
    if (proto_get_int(running, "beat", &beat, err, sizeof err) != 0) beat = 0; /* optional */
    int mine = w->busy && !w->stale && w->job == r.job && w->attempt == r.attempt && strcmp(w->lease, r.lease) == 0;
    char cancel_reason[16];
    int rc = store_heartbeat(s->o.st, r.job, r.attempt, r.lease, step, NULL, cancel_reason, err, sizeof err);
    if (rc == UMDQ_ESTALE) {
        if (!recently(s, w->rid, w->rid_len, r.job, r.attempt, CANCEL_RESEND_MS)) {
            log_info("worker %s runs job %lld attempt %lld, which is no longer current: stopping it", w->name,
                     (long long)r.job, (long long)r.attempt);
            send_cancel(s, w->rid, w->rid_len, r.job, r.attempt, r.lease, "stale", STALE_GRACE_MS);
            store_event(s->o.st, r.job, "stale_report", "{\"message\":\"running\"}");
        }
        /* no new work until the stale child's `finished` comes (a current attempt we gave it stays
         * ours: the worker answers `busy` to it, or it is lost for want of news) */
        if (!w->busy || w->stale || w->job == 0 || mine) {
            worker_assign(w, r.job, r.attempt, r.lease, step, 0, now);
            w->stale = 1;
        }
        return;
    }
    if (rc != 0) {
        log_error("worker %s: heartbeat of job %lld: %s", w->name, (long long)r.job, err);
        return;
    }
    if (!mine) { /* after a daemon restart, or after a `busy` answer */
        worker *other = worker_holding(s, r.job, r.attempt);
        if (other && other != w) worker_idle(s, other);
        double stall = 0;
        if (store_job_stall_timeout(s->o.st, r.job, &stall) != 0) stall = 0;
        worker_assign(w, r.job, r.attempt, r.lease, step, stall, now);
        w->beat = beat;
        log_info("worker %s keeps job %lld attempt %lld (step %lld)", w->name, (long long)r.job,
                 (long long)r.attempt, (long long)step);
    } else if (step > w->step || beat > w->beat) { /* a new step, or a sign of life at this one */
        if (step > w->step) w->step = step;
        w->beat = beat;
        w->step_ms = now;
    }
    if (cancel_reason[0] && now - w->cancel_ms > CANCEL_RESEND_MS) {
        send_cancel(s, w->rid, w->rid_len, r.job, r.attempt, r.lease, cancel_reason, CANCEL_GRACE_MS);
        w->cancel_ms = now;
    }
    /* the worker holds reports it has not been told are stored */
    store_marks mk;
    if ((cJSON_HasObjectItem(running, "seq") || cJSON_HasObjectItem(running, "log")) &&
        store_marks_get(s->o.st, r.job, r.attempt, r.lease, &mk, err, sizeof err) == 0)
        send_stored(s, w->rid, w->rid_len, r.job, r.attempt, &mk);
}

/* Append the watermarks of the attempt that ref ({job, attempt, lease, ...}) names to arr, when its
 * lease is current. */
static void add_stored_of(sched *s, cJSON *arr, const cJSON *ref) {
    char err[256];
    lease_ref r;
    store_marks mk;
    if (!arr || !cJSON_IsObject(ref) || get_lease_ref(ref, &r, err, sizeof err) != 0 ||
        store_marks_get(s->o.st, r.job, r.attempt, r.lease, &mk, err, sizeof err) != 0)
        return;
    cJSON *o = cJSON_CreateObject();
    if (!o) return;
    add_marks(o, r.job, r.attempt, &mk);
    cJSON_AddItemToArray(arr, o);
}

static void on_hello(sched *s, const unsigned char *rid, size_t len, const cJSON *m) {
    char err[512];
    const char *name, *host, *device, *backend;
    int64_t pid = 0;
    const char *problem = NULL;
    /* names, hosts and devices go into log lines, the database and the API: printable ASCII only */
    if (proto_get_str(m, "name", &name, err, sizeof err) != 0 || !proto_printable(name, MAX_NAME))
        problem = "hello: field \"name\" must be 1 to 128 printable ASCII characters";
    else if (proto_get_str(m, "host", &host, err, sizeof err) != 0 || !proto_printable(host, MAX_NAME))
        problem = "hello: field \"host\" must be 1 to 128 printable ASCII characters";
    else if (proto_get_str(m, "device", &device, err, sizeof err) != 0 || !proto_printable(device, MAX_NAME))
        problem = "hello: field \"device\" must be 1 to 128 printable ASCII characters";
    else if (proto_get_str(m, "backend", &backend, err, sizeof err) != 0 || !proto_printable(backend, MAX_BACKEND))
        problem = "hello: field \"backend\" must be 1 to 15 printable ASCII characters";
    else if (proto_get_int(m, "pid", &pid, err, sizeof err) != 0)
        problem = err;
    const cJSON *caps = cJSON_GetObjectItemCaseSensitive(m, "capabilities");
    const cJSON *running = cJSON_GetObjectItemCaseSensitive(m, "running");
    const cJSON *finished = cJSON_GetObjectItemCaseSensitive(m, "finished");
    if (!problem && !cJSON_IsObject(caps)) problem = "hello: field \"capabilities\" must be an object";
    if (!problem && running && !cJSON_IsNull(running) && !cJSON_IsObject(running))
        problem = "hello: field \"running\" must be null or an object";
    if (!problem && finished && !cJSON_IsArray(finished)) problem = "hello: field \"finished\" must be an array";
    if (problem) {
        log_drop(s, "bad hello refused: %s", problem);
        cJSON *rj = proto_new("reject");
        if (rj) {
            cJSON_AddStringToObject(rj, "error", problem);
            queue_msg(s, rid, len, rj);
        }
        return;
    }
    int64_t now = mono_ms(), dead_after = 3 * (int64_t)s->o.heartbeat_ms;
    worker *w = worker_by_rid(s, rid, len);
    worker *same = worker_by_name(s, name);
    if (same && same != w) {
        /* a worker restarted at once under its name: its predecessor is dead to us when it has
         * been silent for 3 heartbeats, or at once when its process is provably gone */
        int gone = worker_gone(s, same);
        if (!gone && now - same->last_seen_ms <= dead_after) {
            char msg[512];
            snprintf(msg, sizeof msg, "worker name %s is already in use by a live worker (pid %lld on %s)", name,
                     (long long)same->pid, same->host);
            log_warn("hello refused: %s", msg);
            cJSON *rj = proto_new("reject");
            if (rj) {
                cJSON_AddStringToObject(rj, "error", msg);
                cJSON_AddStringToObject(rj, "code", "name_in_use");
                queue_msg(s, rid, len, rj);
            }
            return;
        }
        worker_dead(s, same, gone ? "is gone (its process no longer exists); a new process took its name"
                                  : "was replaced by a new process with its name");
    }
    if (w && strcmp(w->name, name) != 0) { /* the same peer under another name: start over */
        worker_dead(s, w, "said hello under another name");
        w = NULL;
    }
    if (!w) {
        if (GROW(s->workers, s->nworkers, s->capworkers, 8) != 0 || !(w = calloc(1, sizeof *w))) {
            log_error("out of memory for a worker");
            return;
        }
        s->workers[s->nworkers++] = w;
        memcpy(w->rid, rid, len);
        w->rid_len = len;
        snprintf(w->name, sizeof w->name, "%s", name);
    }
    snprintf(w->host, sizeof w->host, "%s", host);
    snprintf(w->device, sizeof w->device, "%s", device);
    snprintf(w->backend, sizeof w->backend, "%s", backend);
    w->pid = pid;
    w->last_seen_ms = now;
    w->kinds = 0;
    const cJSON *kinds = cJSON_GetObjectItemCaseSensitive(caps, "kinds"), *k;
    cJSON_ArrayForEach(k, kinds) {
        if (!cJSON_IsString(k)) continue;
        if (strcmp(k->valuestring, "umd") == 0) w->kinds |= STORE_KIND_UMD;
        if (strcmp(k->valuestring, "command") == 0) w->kinds |= STORE_KIND_COMMAND;
    }
    char *caps_text = cJSON_PrintUnformatted(caps);
    int rc = store_worker_hello(s->o.st, w->name, host, device, backend, caps_text, pid, "IDLE", err, sizeof err);
    free(caps_text);
    if (rc != 0) log_error("worker %s: %s", w->name, err);
    log_info("worker %s said hello (pid %lld on %s, %s/%s)", w->name, (long long)pid, host, device, backend);

    cJSON *wm = proto_new("welcome");
    const cJSON *f;
    if (wm) {
        cJSON_AddStringToObject(wm, "worker", w->name);
        cJSON_AddStringToObject(wm, "epoch", s->epoch);
        cJSON_AddNumberToObject(wm, "heartbeat_ms", s->o.heartbeat_ms);
        cJSON_AddStringToObject(wm, "http", s->http_url);
        cJSON_AddStringToObject(wm, "token", s->token);
        /* what is stored of the attempts it re-announces: it sends the rest again */
        cJSON *stored = cJSON_AddArrayToObject(wm, "stored");
        add_stored_of(s, stored, running);
        cJSON_ArrayForEach(f, finished) add_stored_of(s, stored, f);
        queue_msg(s, rid, len, wm);
    }
    cJSON_ArrayForEach(f, finished) {
        if (cJSON_IsObject(f)) on_finished(s, rid, len, w, f);
    }
    on_running(s, w, running);
    worker_sync(s, w);
    if (!w->busy) s->dispatch_dirty = 1;
}

static void on_report(sched *s, const unsigned char *rid, size_t len, worker *w, const char *type, const cJSON *m) {
    char err[512];
    lease_ref r;
    if (get_lease_ref(m, &r, err, sizeof err) != 0) {
        log_drop(s, "malformed %s dropped: %s", type, err);
        return;
    }
    int rc;
    if (strcmp(type, "started") == 0) {
        int64_t pid = 0;
        proto_get_int(m, "pid", &pid, err, sizeof err);
        rc = store_started(s->o.st, r.job, r.attempt, r.lease, pid, err, sizeof err);
    } else if (strcmp(type, "metrics") == 0) {
        int64_t seq = 0, from = 0;
        if (get_opt_count(m, "seq", &seq, err, sizeof err) < 0 || get_opt_count(m, "from", &from, err, sizeof err) < 0) {
            log_drop(s, "malformed metrics dropped: %s", err);
            return;
        }
        rc = store_metrics(s->o.st, r.job, r.attempt, r.lease, seq, from, cJSON_GetObjectItemCaseSensitive(m, "points"),
                           NULL, err, sizeof err);
    } else if (strcmp(type, "result") == 0) {
        rc = store_results(s->o.st, r.job, r.attempt, r.lease, cJSON_GetObjectItemCaseSensitive(m, "results"), err,
                           sizeof err);
    } else if (strcmp(type, "log") == 0) {
        int64_t offset, from = -1;
        const char *data;
        if (proto_get_int(m, "offset", &offset, err, sizeof err) != 0 ||
            proto_get_str(m, "data", &data, err, sizeof err) != 0 || get_opt_count(m, "from", &from, err, sizeof err) < 0) {
            log_drop(s, "malformed log dropped: %s", err);
            return;
        }
        rc = store_log(s->o.st, r.job, r.attempt, r.lease, offset, from, data, strlen(data), err, sizeof err);
    } else { /* busy */
        rc = store_unclaim(s->o.st, r.job, r.attempt, r.lease, err, sizeof err);
        if (rc == 0) {
            log_info("worker %s is busy: job %lld goes back to the queue", w ? w->name : "?", (long long)r.job);
            s->dispatch_dirty = 1;
            if (w && w->busy && w->job == r.job && w->attempt == r.attempt) {
                w->job = w->attempt = 0; /* busy with something we will learn from its next heartbeat */
                w->lease[0] = 0;
                w->stale = 0;
            }
        }
    }
    if (rc == UMDQ_ESTALE) refuse_stale(s, rid, len, w, type, r.job, r.attempt, r.lease);
    else if (rc == UMDQ_EPROTO) log_drop(s, "malformed %s for job %lld dropped: %s", type, (long long)r.job, err);
    else if (rc != 0) log_error("%s for job %lld not stored: %s", type, (long long)r.job, err);
}

/* One frame pair from the ROUTER. */
static void on_message(sched *s, const unsigned char *rid, size_t rid_len, const char *data, size_t len) {
    char err[256], who[MAX_RID * 4 + 1];
    cJSON *m = NULL;
    const char *type = NULL;
    rid_text(rid, rid_len, who, sizeof who);
    if (proto_parse(data, len, &m, &type, err, sizeof err) != 0) {
        /* a hello in another protocol version is answered, so its worker can say why it stops */
        cJSON *j = len <= PROTO_MAX_MSG ? json_parse_n(data, len, NULL, 0) : NULL;
        const char *t = json_str(j, "t");
        if (t && strcmp(t, "hello") == 0) {
            cJSON *rj = proto_new("reject");
            if (rj) {
                char msg[400];
                snprintf(msg, sizeof msg, "protocol version mismatch: umdqd %s speaks version %d (%s)", UMDQ_VERSION,
                         UMDQ_PROTOCOL_VERSION, err);
                cJSON_AddStringToObject(rj, "error", msg);
                queue_msg(s, rid, rid_len, rj);
            }
        }
        cJSON_Delete(j);
        log_drop(s, "malformed message from %s dropped: %s", who, err);
        return;
    }
    worker *w = worker_by_rid(s, rid, rid_len);
    if (w) w->last_seen_ms = mono_ms();
    if (strcmp(type, "hello") == 0) {
        on_hello(s, rid, rid_len, m);
    } else if (strcmp(type, "hb") == 0) {
        if (!w) {
            send_who(s, rid, rid_len);
        } else {
            const cJSON *running = cJSON_GetObjectItemCaseSensitive(m, "running");
            if (!cJSON_HasObjectItem(m, "running")) log_drop(s, "hb from %s without running dropped", who);
            else on_running(s, w, running);
            worker_sync(s, w);
        }
    } else if (strcmp(type, "finished") == 0) {
        on_finished(s, rid, rid_len, w, m);
        if (!w) send_who(s, rid, rid_len);
    } else if (strcmp(type, "started") == 0 || strcmp(type, "metrics") == 0 || strcmp(type, "result") == 0 ||
               strcmp(type, "log") == 0 || strcmp(type, "busy") == 0) {
        /* reports are judged by their lease, so none is lost while a worker re-introduces itself */
        on_report(s, rid, rid_len, w, type, m);
        if (!w) send_who(s, rid, rid_len);
    } else {
        log_drop(s, "message of unknown type \"%.40s\" from %s dropped", type, who);
    }
    cJSON_Delete(m);
}

/* Read every message that is ready (at most MAX_BATCH). */
static int drain_router(sched *s) {
    int n = 0;
    zmq_msg_t part;
    while (n < MAX_BATCH) {
        unsigned char rid[MAX_RID];
        size_t rid_len = 0;
        int nparts = 0, bad = 0;
        char *payload = NULL; /* owned */
        size_t plen = 0;
        int more = 1;
        while (more) {
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, s->o.router, nparts == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                int e = errno;
                zmq_msg_close(&part);
                free(payload);
                if (nparts == 0 && (e == EAGAIN || e == EINTR)) return n;
                log_error("receive: %s", zmq_strerror(e));
                return n;
            }
            more = zmq_msg_more(&part);
            size_t sz = zmq_msg_size(&part);
            if (nparts == 0) {
                if (sz > MAX_RID) bad = 1;
                else memcpy(rid, zmq_msg_data(&part), sz), rid_len = sz;
            } else if (nparts == 1 && !bad) {
                if (sz > PROTO_MAX_MSG) {
                    bad = 2;
                    plen = sz;
                } else if ((payload = malloc(sz + 1)) != NULL) {
                    memcpy(payload, zmq_msg_data(&part), sz);
                    payload[sz] = 0;
                    plen = sz;
                }
            }
            nparts++;
            zmq_msg_close(&part);
        }
        n++;
        char who[MAX_RID * 4 + 1];
        rid_text(rid, rid_len, who, sizeof who);
        if (bad == 2) log_drop(s, "message of %zu bytes from %s dropped: larger than %u", plen, who, PROTO_MAX_MSG);
        else if (bad || nparts != 2) log_drop(s, "message with %d frames from %s dropped: want 1", nparts - 1, who);
        else if (!payload) log_error("out of memory receiving a message");
        else on_message(s, rid, rid_len, payload, plen);
        free(payload);
    }
    return n;
}

/* ---- mutations ----------------------------------------------------------------------------------- */

static void cancel_open(sched *s, const store_open_attempt *a) {
    worker *w = worker_holding(s, a->job, a->attempt);
    if (!w) w = worker_by_name(s, a->worker);
    if (!w) return; /* its worker is away; the cancel is sent when it re-announces the attempt */
    send_cancel(s, w->rid, w->rid_len, a->job, a->attempt, a->lease, "cancelled", CANCEL_GRACE_MS);
    if (w->job == a->job && w->attempt == a->attempt) w->cancel_ms = mono_ms();
}

static void apply_mutation(sched *s, mutation *m) {
    store_open_attempt open, *list = NULL;
    int nlist = 0;
    switch (m->kind) {
    case MUT_SUBMIT:
        m->rc = store_submit(s->o.st, m->sw, &m->submit, m->err, sizeof m->err);
        if (m->rc == 0) {
            log_info("sweep %s (%lld): %d jobs, %d new", m->sw->name, (long long)m->submit.sweep_id, m->submit.jobs,
                     m->submit.added);
            s->dispatch_dirty = 1;
        }
        break;
    case MUT_JOB_CANCEL:
        m->rc = store_job_cancel(s->o.st, m->id, &open, m->err, sizeof m->err);
        if (m->rc == 0 && open.job) cancel_open(s, &open);
        break;
    case MUT_JOB_REQUEUE:
        m->rc = store_job_requeue(s->o.st, m->id, m->err, sizeof m->err);
        if (m->rc == 0) s->dispatch_dirty = 1;
        break;
    case MUT_SWEEP_CANCEL:
        m->rc = store_sweep_cancel(s->o.st, m->id, &m->count, &list, &nlist, m->err, sizeof m->err);
        for (int i = 0; i < nlist; i++) cancel_open(s, &list[i]);
        free(list);
        break;
    case MUT_SWEEP_REQUEUE:
        m->rc = store_sweep_requeue(s->o.st, m->id, &m->count, m->err, sizeof m->err);
        if (m->rc == 0) s->dispatch_dirty = 1;
        break;
    default:
        m->rc = UMDQ_EINVAL;
        snprintf(m->err, sizeof m->err, "unknown mutation");
    }
}

static void take_mutations(sched *s) {
    for (mutation *m = mutq_take(s->o.q), *next; m; m = next) {
        next = m->next;
        if (GROW(s->muts, s->nmuts, s->capmuts, 8) != 0) {
            m->rc = UMDQ_ENOMEM;
            snprintf(m->err, sizeof m->err, "out of memory");
            mutq_complete(s->o.q, m);
            continue;
        }
        s->muts[s->nmuts++] = m;
        apply_mutation(s, m);
    }
}

/* After the commit (ok) or a failed one: answer every mutation of the turn. */
static void complete_mutations(sched *s, int commit_rc, const char *commit_err) {
    for (int i = 0; i < s->nmuts; i++) {
        mutation *m = s->muts[i];
        if (commit_rc != 0 && m->rc == 0) {
            m->rc = commit_rc;
            snprintf(m->err, sizeof m->err, "%s", commit_err);
        }
        mutq_complete(s->o.q, m);
    }
    s->nmuts = 0;
}

/* ---- housekeeping and dispatch --------------------------------------------------------------------------- */

static void check_orphans(sched *s, int64_t now) {
    char err[256];
    store_open_attempt *open = NULL;
    int nopen = 0, nkeep = 0;
    if (store_open_attempts(s->o.st, &open, &nopen, err, sizeof err) != 0) {
        log_error("housekeeping: %s", err);
        return;
    }
    /* an attempt no live worker holds: lost at once at the end of the restart grace, otherwise when
     * it was unheld at the previous check too (a worker re-introducing itself gets the time) */
    for (int i = 0; i < nopen; i++) {
        store_open_attempt *a = &open[i];
        if (worker_holding(s, a->job, a->attempt)) continue;
        int before = !s->grace_done;
        for (int j = 0; j < s->norphans && !before; j++)
            before = s->orphans[j].job == a->job && s->orphans[j].attempt == a->attempt;
        if (before) {
            lose_attempt(s, a->job, a->attempt, !s->grace_done ? "its worker did not come back after the daemon restarted"
                                                               : "no worker runs it");
        } else {
            open[nkeep++] = *a;
        }
    }
    free(s->orphans);
    s->orphans = open;
    s->norphans = nkeep;
    if (!s->grace_done) {
        s->grace_done = 1;
        const char **live = calloc((size_t)s->nworkers + 1, sizeof *live);
        if (live) {
            for (int i = 0; i < s->nworkers; i++) live[i] = s->workers[i]->name;
            if (store_workers_dead_except(s->o.st, live, s->nworkers, err, sizeof err) != 0)
                log_error("housekeeping: %s", err);
            free(live);
        }
    }
    s->next_orphan_ms = now + 3 * (int64_t)s->o.heartbeat_ms;
}

static void housekeeping(sched *s, int64_t now) {
    char err[256];
    int64_t dead_after = 3 * (int64_t)s->o.heartbeat_ms;
    for (int i = 0; i < s->nworkers; i++) {
        worker *w = s->workers[i];
        if (now - w->last_seen_ms > dead_after) {
            char why[96];
            snprintf(why, sizeof why, "stopped responding (silent for %.1f s)", (double)(now - w->last_seen_ms) / 1e3);
            worker_dead(s, w, why);
            i--;
            continue;
        }
        if (w->busy && !w->stale && !w->finishing && w->job > 0 && w->stall_timeout > 0 && w->cancel_ms == 0 &&
            (double)(now - w->step_ms) > w->stall_timeout * 1e3) {
            log_warn("job %lld attempt %lld on %s stalled at step %lld for %.0f s: cancelling", (long long)w->job,
                     (long long)w->attempt, w->name, (long long)w->step, w->stall_timeout);
            if (store_mark_cancel(s->o.st, w->job, w->attempt, "stalled", err, sizeof err) == 0) {
                send_cancel(s, w->rid, w->rid_len, w->job, w->attempt, w->lease, "stalled", CANCEL_GRACE_MS);
                w->cancel_ms = now;
            } else {
                log_error("job %lld: %s", (long long)w->job, err);
            }
        }
    }
    if ((!s->grace_done && now >= s->grace_end_ms) || (s->grace_done && now >= s->next_orphan_ms))
        check_orphans(s, now);
    /* put back attempts whose `job` message could not be delivered */
    for (int i = 0; i < s->nundeliv; i++) {
        undelivered *u = &s->undeliv[i];
        if (store_unclaim(s->o.st, u->job, u->attempt, u->lease, err, sizeof err) == 0)
            log_warn("job %lld could not be sent to its worker: back in the queue", (long long)u->job);
    }
    if (s->nundeliv) s->dispatch_dirty = 1;
    s->nundeliv = 0;
    if (now >= s->next_dispatch_sweep_ms) { /* a safety net: look for work once a second anyway */
        s->dispatch_dirty = 1;
        s->next_dispatch_sweep_ms = now + 1000;
    }
}

static void dispatch(sched *s) {
    char err[512];
    if (!s->dispatch_dirty) return;
    s->dispatch_dirty = 0;
    int64_t now = mono_ms();
    for (int i = 0; i < s->nworkers; i++) {
        worker *w = s->workers[i];
        if (w->busy || !w->kinds) continue;
        store_worker_fit fit = {w->name, w->backend, w->kinds};
        store_dispatch d;
        int rc = store_claim(s->o.st, &fit, &d, err, sizeof err);
        if (rc == UMDQ_ENOTFOUND) continue;
        if (rc != 0) {
            log_error("dispatch to %s: %s", w->name, err);
            continue;
        }
        cJSON *m = proto_new("job"), *cfg = cJSON_Parse(d.config);
        if (!m || !cfg) {
            cJSON_Delete(m);
            cJSON_Delete(cfg);
            log_error("job %lld: cannot build its message", (long long)d.job);
            store_unclaim(s->o.st, d.job, d.attempt, d.lease, err, sizeof err);
            store_dispatch_clear(&d);
            continue;
        }
        if (!cJSON_HasObjectItem(cfg, "seed")) cJSON_AddNumberToObject(cfg, "seed", (double)d.seed);
        cJSON_AddNumberToObject(m, "job", (double)d.job);
        cJSON_AddNumberToObject(m, "attempt", (double)d.attempt);
        cJSON_AddStringToObject(m, "lease", d.lease);
        cJSON_AddNumberToObject(m, "sweep", (double)d.sweep);
        cJSON_AddStringToObject(m, "kind", d.kind);
        cJSON_AddItemToObject(m, "config", cfg);
        cJSON_AddNumberToObject(m, "seed", (double)d.seed);
        cJSON_AddNumberToObject(m, "stall_timeout", d.stall_timeout);
        outmsg *om = queue_msg(s, w->rid, w->rid_len, m);
        if (om) {
            om->job = d.job;
            om->attempt = d.attempt;
            snprintf(om->lease, sizeof om->lease, "%s", d.lease);
            om->waited = d.waited;
        }
        worker_assign(w, d.job, d.attempt, d.lease, 0, d.stall_timeout, now);
        worker_sync(s, w);
        log_info("job %lld attempt %lld -> %s", (long long)d.job, (long long)d.attempt, w->name);
        store_dispatch_clear(&d);
    }
}

/* ---- the loop ---------------------------------------------------------------------------------------- */

int sched_new(const sched_options *o, sched **out, char *err, size_t errlen) {
    *out = NULL;
    sched *s = calloc(1, sizeof *s);
    if (!s) return UMDQ_ENOMEM;
    s->o = *o;
    s->http_url = strdup(o->http_url ? o->http_url : "");
    s->token = strdup(o->token ? o->token : "");
    s->epoch = strdup(o->epoch ? o->epoch : "");
    if (!s->http_url || !s->token || !s->epoch) {
        sched_destroy(&s);
        return UMDQ_ENOMEM;
    }
    if (s->o.heartbeat_ms <= 0) s->o.heartbeat_ms = 1000;
    if (gethostname(s->host, sizeof s->host) != 0) s->host[0] = 0;
    s->host[sizeof s->host - 1] = 0;
    if (!o->st || !o->router || !o->q || !o->lat) {
        snprintf(err, errlen, "scheduler: missing store, socket, queue or histogram");
        sched_destroy(&s);
        return UMDQ_EINVAL;
    }
    *out = s;
    return 0;
}

void sched_destroy(sched **sp) {
    if (!sp || !*sp) return;
    sched *s = *sp;
    for (int i = 0; i < s->nworkers; i++) free(s->workers[i]);
    free(s->workers);
    outbox_clear(s);
    free(s->out);
    free(s->muts);
    free(s->undeliv);
    free(s->orphans);
    free(s->http_url);
    free(s->token);
    free(s->epoch);
    free(s);
    *sp = NULL;
}

/* After a failed commit nothing of the turn happened: forget every worker (each is asked `who`
 * when it speaks again and re-announces its attempt) and run the restart grace again. */
static void resync(sched *s, int64_t now) {
    for (int i = 0; i < s->nworkers; i++) free(s->workers[i]);
    s->nworkers = 0;
    s->nundeliv = 0;
    s->grace_done = 0;
    s->grace_end_ms = now + 3 * (int64_t)s->o.heartbeat_ms;
    s->dispatch_dirty = 1;
}

int sched_run(sched *s, volatile sig_atomic_t *stop, char *err, size_t errlen) {
    char cerr[512];
    int64_t now = mono_ms();
    s->start_ms = now;
    s->grace_end_ms = now + 3 * (int64_t)s->o.heartbeat_ms;
    s->next_housekeeping_ms = now + HOUSEKEEPING_MS;
    s->next_checkpoint_ms = now + CHECKPOINT_MS;
    s->dispatch_dirty = 1;
    (void)err;
    (void)errlen;
    while (!*stop) {
        zmq_pollitem_t items[2] = {
            {s->o.router, 0, ZMQ_POLLIN, 0},
            {NULL, mutq_fd(s->o.q), ZMQ_POLLIN, 0},
        };
        now = mono_ms();
        long timeout = s->next_housekeeping_ms > now ? (long)(s->next_housekeeping_ms - now) : 0;
        if (zmq_poll(items, 2, timeout) < 0 && errno != EINTR) {
            log_error("poll: %s", zmq_strerror(errno));
            continue;
        }
        if (*stop) break;
        store_batch_begin(s->o.st);
        /* liveness is judged against the time the socket was last drained, so a long turn (a
         * sweep of many thousand jobs) never makes workers that spoke meanwhile look silent */
        now = mono_ms();
        if (items[0].revents & ZMQ_POLLIN) drain_router(s);
        if (now >= s->next_housekeeping_ms) {
            housekeeping(s, now);
            s->next_housekeeping_ms = now + HOUSEKEEPING_MS;
        }
        if (items[1].revents & ZMQ_POLLIN) take_mutations(s);
        dispatch(s);
        int rc = store_batch_commit(s->o.st, cerr, sizeof cerr);
        if (rc != 0) {
            log_error("commit failed, the turn is undone: %s", cerr);
            outbox_clear(s);
            complete_mutations(s, rc, cerr);
            resync(s, mono_ms());
            continue;
        }
        outbox_flush(s);
        complete_mutations(s, 0, NULL);
        if (now >= s->next_checkpoint_ms) {
            store_checkpoint(s->o.st);
            s->next_checkpoint_ms = now + CHECKPOINT_MS;
        }
    }
    return 0;
}
