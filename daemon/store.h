/* store.h: umdqd's database (SQLite) and job log files: migrations, sweeps, the job state machine.
 *
 * One store is the single writer of umdq.db; only the scheduler thread uses it. Every mutation runs
 * in a transaction (BEGIN IMMEDIATE, WAL, synchronous=FULL). Between store_batch_begin and
 * store_batch_commit the mutations share one transaction (each in its own savepoint, so a failed
 * one leaves no trace), which lets the scheduler apply a burst of worker messages with one fsync
 * and send the resulting messages only after the commit. Outside a batch each mutation commits on
 * its own.
 *
 * Job life (DESIGN.md, docs/protocol.md):
 *   QUEUED --claim--> RUNNING --finish--> SUCCEEDED | FAILED | (QUEUED again, see below)
 *   an attempt ends SUCCEEDED, FAILED, CANCELLED, PREEMPTED or LOST;
 *   LOST / PREEMPTED (and a worker-side cancel) -> QUEUED while attempts < max_attempts, else FAILED;
 *   FAILED -> QUEUED only when the sweep's retry.on_failure is set and attempts < max_attempts;
 *   a user cancel makes the job CANCELLED at once; its open attempt closes when `finished` comes,
 *   and when that says succeeded (the cancel came too late) the job becomes SUCCEEDED after all.
 * Every message about an attempt carries its lease: it is current only while the attempt is the
 * job's latest (n == jobs.attempts) and still open (attempts.state RUNNING). */
#ifndef UMDQ_STORE_H
#define UMDQ_STORE_H
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include "sweep.h"

typedef struct store store;

#define STORE_LEASE_HEX 32
#define STORE_MAX_ERROR (64u << 10) /* bytes of an attempt's error text kept */

/* The highest schema version this build knows (the number of the last schema/NNN_*.sql). */
int store_known_version(void);

/* Open (creating when absent) the database at db_path and apply the migrations it lacks. A
 * database newer than this build is refused with UMDQ_EFORMAT. log_dir (borrowed, copied) is where
 * logs/JOB.log files go; NULL keeps no logs. On success *out is owned by the caller. */
int store_open(const char *db_path, const char *log_dir, store **out, char *err, size_t errlen);
void store_destroy(store **s); /* accepts NULL, NULLs the pointer */
int store_user_version(store *s); /* PRAGMA user_version, or a negative code */
int store_migrations_applied(const store *s); /* migrations store_open applied */
/* Borrowed database handle, for read queries on the scheduler thread (query.h takes any). */
struct sqlite3 *store_db(store *s);

/* Batches: mutations between begin and commit share one transaction. commit returns 0 or UMDQ_EIO
 * (then everything since begin is rolled back). abort rolls back. Nothing is written when no
 * mutation ran.
 *
 * Durability: a transaction that holds a state transition (store_submit, store_claim,
 * store_finish, store_lost, store_unclaim, store_mark_cancel and the user actions) is on disk
 * before its commit returns (the WAL is synced, as synchronous=FULL would). One that holds only
 * reports and bookkeeping (store_started, store_heartbeat, store_metrics, store_results,
 * store_log, store_event, worker rows) is not synced (synchronous=NORMAL): it survives a crash of
 * umdqd, and reaches the disk with the next synced commit or checkpoint; a power loss can take back
 * only such rows. */
void store_batch_begin(store *s);
int store_batch_commit(store *s, char *err, size_t errlen);
void store_batch_abort(store *s);
int store_batch_dirty(const store *s); /* 1 when the open batch has written something */

/* ---- sweeps ---------------------------------------------------------------------------------- */

typedef struct {
    int64_t sweep_id;
    int jobs;     /* jobs in the spec */
    int added;    /* new rows */
    int existing; /* already stored (same sweep, config_hash, seed) */
} store_submit_result;

/* Store an expanded sweep: the sweep row is created or its spec/priority/retry updated to these;
 * jobs are INSERT OR IGNOREd on (sweep, config_hash, seed), so a resubmission adds only new points. */
int store_submit(store *s, const sweep *sw, store_submit_result *res, char *err, size_t errlen);
/* Count how many of sw's jobs are already stored (for a dry run); *sweep_id 0 when the sweep is new. */
int store_submit_preview(struct sqlite3 *db, const sweep *sw, int64_t *sweep_id, int *existing,
                         char *err, size_t errlen);

/* ---- dispatch -------------------------------------------------------------------------------- */

enum { STORE_KIND_UMD = 1, STORE_KIND_COMMAND = 2 };

typedef struct {
    const char *worker;  /* the worker's name (attempts.worker_id), borrowed */
    const char *backend; /* "cpu" or "cuda", borrowed */
    int kinds;           /* STORE_KIND_* bits the worker can run */
} store_worker_fit;

typedef struct {
    int64_t job, attempt, sweep, seed;
    char lease[STORE_LEASE_HEX + 1];
    char kind[16];
    char *config;         /* canonical JSON of the job config (without seed), owned */
    double stall_timeout; /* seconds, 0 = off */
    double waited;        /* seconds the job was QUEUED before this dispatch */
} store_dispatch;

/* Pick the highest-priority, oldest QUEUED job that fits w, open attempt n = attempts + 1 with a
 * fresh lease and make the job RUNNING. 0 and *out filled (store_dispatch_clear frees it), or
 * UMDQ_ENOTFOUND when no job fits. */
int store_claim(store *s, const store_worker_fit *w, store_dispatch *out, char *err, size_t errlen);
void store_dispatch_clear(store_dispatch *d);

/* ---- reports about an attempt (each checks the lease: UMDQ_ESTALE when it is not current) ---- */

/* 0 when (job, attempt, lease) is the job's current open attempt, UMDQ_ESTALE when not. */
int store_lease_check(store *s, int64_t job, int64_t attempt, const char *lease);

/* What of an attempt's reports is stored (docs/protocol.md, "Watermarks"). */
typedef struct {
    int64_t metrics_seq; /* the highest n such that numbered metrics messages 1..n are all stored */
    int64_t log_bytes;   /* bytes of the attempt's output stored (a marked gap counts as stored) */
} store_marks;

/* The watermarks of the current open attempt (job, attempt, lease); UMDQ_ESTALE when it is not. */
int store_marks_get(store *s, int64_t job, int64_t attempt, const char *lease, store_marks *marks,
                    char *err, size_t errlen);
/* The worker forked the attempt's child. (The job's log file is created by the first store_log
 * with bytes, not here.) */
int store_started(store *s, int64_t job, int64_t attempt, const char *lease, int64_t pid,
                  char *err, size_t errlen);
/* A heartbeat for the attempt: records the time and, when step grew, the step. *advanced (may be
 * NULL) is set to 1 when the step grew; cancel_reason (16 bytes, may be NULL) receives why the
 * daemon asked to cancel the attempt ("" when it did not), so a lost `cancel` can be sent again. */
int store_heartbeat(store *s, int64_t job, int64_t attempt, const char *lease, int64_t step,
                    int *advanced, char *cancel_reason, char *err, size_t errlen);
/* points: a JSON array of [key, step, value]; stored INSERT OR IGNORE. A malformed point refuses
 * the whole message (UMDQ_EPROTO): none of it is stored. *added (may be NULL): new rows.
 * seq: the message's number in the attempt (1, 2, ...), 0 for an unnumbered one; from: the oldest
 * number the worker still holds (<= 0: seq). A numbered message moves the attempt's metrics_seq:
 * numbers below from that are not stored are given up (event "metrics_gap"), and seq counts when
 * it is the next one; a message at or below metrics_seq is a replay and changes nothing. A
 * malformed numbered message counts as delivered (it would never come right) but still answers
 * UMDQ_EPROTO. */
int store_metrics(store *s, int64_t job, int64_t attempt, const char *lease, int64_t seq, int64_t from,
                  const cJSON *points, int *added, char *err, size_t errlen);
/* results: a JSON object {key: number or string}; the first write per (job, attempt, key) wins. */
int store_results(store *s, int64_t job, int64_t attempt, const char *lease, const cJSON *results,
                  char *err, size_t errlen);
/* Bytes offset .. offset+len of the attempt's output: only the part past what is stored is
 * appended to logs/JOB.log, after the attempt's header line "== attempt N on WORKER ==" when these
 * are its first bytes. from: the oldest byte the worker still holds (< 0: offset). Bytes below
 * from that are not stored are given up: a line in the log marks the gap. A chunk that starts past
 * what is stored while the worker still holds the bytes before it is not written (they come again
 * first; docs/protocol.md, "Watermarks"). */
int store_log(store *s, int64_t job, int64_t attempt, const char *lease, int64_t offset, int64_t from,
              const char *data, size_t len, char *err, size_t errlen);

typedef struct {
    const char *status;    /* "succeeded", "failed", "cancelled", "preempted" */
    int has_exit_code, exit_code;
    int has_signal, signal;
    const char *error;     /* may be NULL; at most STORE_MAX_ERROR bytes are kept */
    const cJSON *results;  /* object or NULL */
} store_finish_report;

/* The attempt ended. The job moves on (see the top of this file); job_state (at least 16 bytes,
 * may be NULL) receives its new state. UMDQ_ESTALE for a stale lease (nothing changes), UMDQ_EPROTO
 * for an unknown status. */
int store_finish(store *s, int64_t job, int64_t attempt, const char *lease,
                 const store_finish_report *r, char *job_state, char *err, size_t errlen);
/* The attempt's worker is gone (why: "worker host/cpu0 stopped responding"): the attempt becomes
 * LOST and the job is queued again or FAILED. UMDQ_ESTALE when the attempt is not open. */
int store_lost(store *s, int64_t job, int64_t attempt, const char *why, char *job_state,
               char *err, size_t errlen);
/* The worker answered `busy`: the attempt is removed and the job queued again, uncounted. */
int store_unclaim(store *s, int64_t job, int64_t attempt, const char *lease, char *err, size_t errlen);
/* Remember why the daemon sent `cancel` for an open attempt ("stalled"); a stalled attempt ends
 * FAILED with "stalled: no progress for N s" whatever the worker reports. */
int store_mark_cancel(store *s, int64_t job, int64_t attempt, const char *reason,
                      char *err, size_t errlen);

/* ---- user actions ------------------------------------------------------------------------------ */

typedef struct {
    int64_t job, attempt;
    char lease[STORE_LEASE_HEX + 1];
    char worker[256];
} store_open_attempt;

/* QUEUED or RUNNING -> CANCELLED. When an attempt is open, *open (may be NULL) receives it (else
 * open->job is 0) so the scheduler can tell its worker. UMDQ_ESTATE when the job is already final,
 * UMDQ_ENOTFOUND when there is no such job. */
int store_job_cancel(store *s, int64_t job, store_open_attempt *open, char *err, size_t errlen);
/* FAILED, LOST, PREEMPTED, CANCELLED or SUCCEEDED -> QUEUED with the attempt budget extended by the
 * sweep's max_attempts. UMDQ_ESTATE when QUEUED or RUNNING. */
int store_job_requeue(store *s, int64_t job, char *err, size_t errlen);
/* Every QUEUED or RUNNING job of the sweep -> CANCELLED. *open (caller frees) receives the open
 * attempts to stop (*nopen of them). */
int store_sweep_cancel(store *s, int64_t sweep, int *cancelled, store_open_attempt **open,
                       int *nopen, char *err, size_t errlen);
/* Every FAILED, LOST, PREEMPTED or CANCELLED job of the sweep -> QUEUED (as store_job_requeue). */
int store_sweep_requeue(store *s, int64_t sweep, int *requeued, char *err, size_t errlen);

/* ---- workers and housekeeping -------------------------------------------------------------------- */

/* Every open attempt (caller frees *list). */
int store_open_attempts(store *s, store_open_attempt **list, int *n, char *err, size_t errlen);
/* A worker said hello: insert or update its row (state IDLE or BUSY). caps_json: its capabilities. */
int store_worker_hello(store *s, const char *name, const char *host, const char *device,
                       const char *backend, const char *caps_json, int64_t pid, const char *state,
                       char *err, size_t errlen);
/* Update last_seen and, when state is not NULL, the state. */
int store_worker_seen(store *s, const char *name, const char *state, char *err, size_t errlen);
/* Every worker row in IDLE or BUSY whose name is not in live (nlive names) becomes DEAD. */
int store_workers_dead_except(store *s, const char *const *live, int nlive, char *err, size_t errlen);

/* The stall timeout (seconds, 0 = off) of a job. */
int store_job_stall_timeout(store *s, int64_t job, double *seconds);

/* Append an audit event (job may be 0 for none). */
int store_event(store *s, int64_t job, const char *kind, const char *detail);
/* PRAGMA wal_checkpoint(PASSIVE). */
void store_checkpoint(store *s);

#endif
