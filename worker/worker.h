/* worker.h: one umdq-worker serving one device: the ZeroMQ DEALER to the daemon, heartbeats,
 * and one runner (runner.h) per attempt (docs/protocol.md).
 *
 * worker_run is the event loop. It sends `hello`, a heartbeat every heartbeat period carrying the
 * running attempt and its step, forwards the child's metrics, results and log bytes, reports
 * `finished` and resends it with every heartbeat until the daemon answers `ack`. The metrics and
 * log messages of an attempt stay in its journal (journal.h) until the daemon says they are stored,
 * and what is not is sent again after a `welcome` (a daemon that died may have lost it). Nothing
 * in the loop waits on the child or the disk for long: a heartbeat is never late by more than
 * ~100 ms. */
#ifndef UMDQ_WORKER_WORKER_H
#define UMDQ_WORKER_WORKER_H
#include <stddef.h>
#include <stdint.h>

typedef struct worker worker;

typedef struct {
    const char *connect;       /* the daemon's ZeroMQ endpoint, "tcp://127.0.0.1:5756" */
    const char *name;          /* "host/cpu", "host/gpu0" */
    const char *host;          /* this machine's host name */
    const char *device;        /* "cpu", "cuda:0" */
    const char *backend;       /* "cpu" or "cuda" */
    const char *cuda_devices;  /* CUDA_VISIBLE_DEVICES for the attempt children ("" on a CPU worker) */
    const char *workdir;       /* attempts run in <workdir>/job-<id>-<attempt>; it also holds this
                                  process's .umdq-group.PID record (jobgroup.h) and its spare
                                  scratch directory .spare-PID (runner.h), and may be shared by
                                  several workers */
    int grace_ms;              /* SIGTERM -> SIGKILL delay when an attempt is stopped; a cancel's
                                  grace_ms may shorten it, never lengthen it */
    int umd;                   /* 1 when the trainer has this backend: advertise kind "umd" */
    const char *gpu_name;      /* capabilities.gpu_name, NULL = none */
    int64_t memory_mb;         /* capabilities.memory_mb, < 0 = unknown */
} worker_opts;
/* Every string of worker_opts is copied by worker_new. */

/* Create the socket and connect (ZeroMQ connects in the background: a daemon that is not up yet
 * is fine). On success *out is owned by the caller (worker_destroy). */
int worker_new(const worker_opts *opts, worker **out, char *err, size_t errlen);

/* Serve until SIGTERM or SIGINT (returns 0 after stopping the running attempt, reporting it as
 * preempted and waiting up to ~2 s for the daemon's ack) or until the daemon answers `reject`
 * (returns UMDQ_ESTATE with its error; a reject with code "name_in_use" is first retried for
 * ~10 s, see docs/protocol.md). At start it creates the workdir and kills the process groups that
 * dead workers recorded there (jobgroup_sweep). Installs handlers for SIGTERM, SIGINT and SIGCHLD. */
int worker_run(worker *w, char *err, size_t errlen);

void worker_destroy(worker **w); /* accepts NULL, NULLs the pointer; kills a running child */

#endif
