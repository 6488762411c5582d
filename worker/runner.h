/* runner.h: one attempt's child process, as the worker parent sees it.
 *
 * runner_new forks a child in its own process group, in the attempt's scratch directory, with
 * stdout, stderr and a report pipe captured. Kind "umd" calls umd_run() in the forked child (threads
 * only), whose events become report lines; the child dies with the worker (PR_SET_PDEATHSIG).
 *
 * With the daemon's HTTP address and token in the spec, a umd child first downloads the job's
 * checkpoint artifact (ckpt.umd, when an earlier attempt uploaded one) and resumes from it,
 * reporting the result "resumed_from_step"; it uploads every checkpoint the trainer completes and
 * the sample grid PNG its "sample_grid" result names (worker/artifacts.h). A umd child reports its
 * results in one line once the run has succeeded (none from an attempt stopped half-way).
 *
 * Kind "command": the forked child is a small supervisor. It starts `/bin/sh -c CMD` (the command
 * template rendered, the config written to $UMDQ_WORKDIR/config.json, the report pipe on fd 3) in
 * its own process group with posix_spawn, waits for it and ends the way sh ended (the same exit
 * code, or killed by the same signal), so the parent sees the job's own status. It exists because
 * a shell forks (rather than execs) the programs it runs, and a parent-death signal reaches only
 * the direct child: the supervisor takes SIGHUP as its parent-death signal and then stops the whole
 * group (SIGTERM, SIGKILL after RUNNER_ORPHAN_GRACE_MS), so nothing of a job outlives a worker that
 * is killed outright. A SIGTERM sent to the supervisor goes on to the group, and SIGKILL follows
 * after the spec's grace. As a child subreaper it also inherits what sh leaves behind when sh ends
 * (background jobs, daemons that left the group) and kills it before it ends itself.
 *
 * The parent never blocks on a runner: it polls runner_fds(), calls runner_pump() when one is
 * readable or at runner_deadline_ms(), and takes what the child produced:
 *   - curve points (runner_take_points), results (runner_take_results), the latest step;
 *   - the combined stdout + stderr bytes with their offsets (runner_take_log), including notes
 *     about malformed report lines;
 *   - the last RUNNER_TAIL bytes of stderr (runner_stderr_tail), for the error of a failed attempt.
 * runner_done() is true once the child has exited, whatever it left in its process group has
 * been killed and the pipes are drained; runner_exit() then says how it ended. */
#ifndef UMDQ_WORKER_RUNNER_H
#define UMDQ_WORKER_RUNNER_H
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RUNNER_TAIL (64u << 10)   /* bytes of stderr kept for finished.error */
#define RUNNER_MAX_FDS 3

typedef struct runner runner;

typedef struct {
    const char *kind;          /* "command" or "umd"; borrowed during runner_new */
    const cJSON *config;       /* the job config without "seed"; borrowed during runner_new */
    int64_t job, attempt, sweep, seed;
    const char *scratch;       /* the attempt's scratch directory; created (emptied when it exists)
                                  by runner_new; borrowed during runner_new */
    const char *cuda_devices;  /* CUDA_VISIBLE_DEVICES for the child, NULL = leave as inherited;
                                  borrowed during runner_new */
    int grace_ms;              /* SIGTERM -> SIGKILL delay of a command's supervisor when it is sent
                                  SIGTERM by someone else than runner_stop; <= 0: RUNNER_GRACE_MS */
    const char *http_url;      /* kind umd: the daemon's HTTP address for the artifact store
                                  (artifacts.h), NULL = unknown: checkpoints stay in the scratch
                                  directory and the attempt starts fresh; borrowed during runner_new */
    const char *token;         /* the daemon's API token, with http_url; borrowed during runner_new */
} runner_spec;

#define RUNNER_GRACE_MS 3000        /* the supervisor's default grace */
#define RUNNER_ORPHAN_GRACE_MS 500  /* SIGTERM -> SIGKILL once the worker is gone */

typedef struct {
    int exit_code;   /* exit status, or -1 when the child died by a signal */
    int signal;      /* the signal that killed it, or 0 */
    int stopped;     /* runner_stop was called before the child ended */
} runner_exit_info;

/* Fork the child. On success *out is owned by the caller (runner_destroy). A bad command
 * template or an unusable scratch directory fails here with UMDQ_EINVAL / UMDQ_EIO and a message;
 * nothing is left running. */
int runner_new(const runner_spec *spec, runner **out, char *err, size_t errlen);

/* Kill what is still running (SIGKILL to the process group), reap it, close the pipes, free.
 * Accepts NULL, NULLs the pointer. Does not remove the scratch directory. */
void runner_destroy(runner **r);

pid_t runner_pid(const runner *r);

/* The pipe fds to wait on for input (at most RUNNER_MAX_FDS); returns how many. A pipe whose
 * output the parent has not taken yet beyond a bound is left out (back-pressure on the child). */
int runner_fds(const runner *r, int *fds);

/* Read what the pipes hold (never blocks; a bounded amount per call), notice the child's exit,
 * send SIGKILL when a stop's grace has run out. now is mono_ms(). */
void runner_pump(runner *r, int64_t now);

/* The next time (mono_ms) runner_pump must run even without input, or -1 for none. */
int64_t runner_deadline_ms(const runner *r);

/* SIGTERM to the job now (a command's supervisor passes it on to the process group, so each
 * process gets it once; a umd child gets it itself), SIGKILL to the process group after grace_ms.
 * A second call only shortens the grace. */
void runner_stop(runner *r, int grace_ms, int64_t now);

int runner_done(const runner *r);
/* How the child ended; valid once runner_done(). Borrowed. */
const runner_exit_info *runner_exit(const runner *r);

/* The step heartbeats carry: that of the latest progress line, or while the child has printed
 * none, the highest step of its metric lines (0 before any). */
int64_t runner_step(const runner *r);
/* Progress lines the child has written so far (the same step again counts: a sign of life during
 * an evaluation). */
int64_t runner_beats(const runner *r);

/* Curve points not yet taken. */
size_t runner_points_pending(const runner *r);
/* Up to max points as a JSON array of [key, step, value], oldest first, removed from the queue.
 * Caller owns (cJSON_Delete); NULL when none are pending (or out of memory). */
cJSON *runner_take_points(runner *r, size_t max);

/* Results that arrived since the last take, as an object {key: number or string}. Caller owns;
 * NULL when there are none. */
cJSON *runner_take_results(runner *r);
/* Every result so far (the first value of each key wins). Borrowed until runner_destroy. */
const cJSON *runner_results(const runner *r);

/* Log bytes (combined stdout + stderr, in the order read) not yet taken. */
size_t runner_log_pending(const runner *r);
/* Take up to max bytes of log: *offset is the position of the first byte in the attempt's log,
 * *data (caller frees) is NUL-terminated valid UTF-8 of exactly *len bytes (invalid bytes and
 * NULs are replaced by '?', one for one, so offsets stay byte offsets). A multi-byte character
 * cut by the end of what was read is held back until it is complete or the child is done.
 * Returns 0 with *len == 0 when nothing is ready, or UMDQ_ENOMEM. */
int runner_take_log(runner *r, size_t max, int64_t *offset, char **data, size_t *len);

/* The last RUNNER_TAIL bytes of the child's stderr, as raw bytes (may cut a character).
 * Caller frees; NULL on out of memory. *len receives the length. */
char *runner_stderr_tail(const runner *r, size_t *len);

/* Replace invalid UTF-8 and NUL bytes of s[0..len) by '?', in place. */
void runner_utf8_sanitize(char *s, size_t len);

/* Remove an attempt's scratch directory without holding up the caller and without starting a
 * process. One that holds only its config.json (a command that wrote nothing there) is kept as the
 * process's one spare, renamed to ".spare-PID" next to it, and the next runner_new in the same
 * workdir renames it into place instead of creating a directory and a file (on ext4 without a
 * journal, creating inodes grows slower with every inode freed in the last minutes). Otherwise a
 * directory of a few entries (RUNNER_DISCARD_SYNC) is removed at once, and a larger one is renamed
 * aside (".trash-...") and removed by the runner's one long-lived remover thread. After a 0 return,
 * path is gone. 0, or UMDQ_EIO with a message. Not thread-safe: call it from the thread that
 * calls runner_new. */
#define RUNNER_DISCARD_SYNC 64
int runner_scratch_discard(const char *path, char *err, size_t errlen);
/* Remove the spare scratch directory, if any (when the process stops). */
void runner_scratch_spare_remove(void);
/* Hand what an earlier process left in dir to the remover thread: ".trash-*" entries, and the
 * ".spare-PID" directories of processes that no longer exist. */
void runner_scratch_discard_stale(const char *dir);
/* Remove a directory tree now. 0 or UMDQ_EIO with a message naming the first path that failed.
 * Thread-safe (no process-wide state). */
int runner_remove_tree(const char *path, char *err, size_t errlen);

#endif
