/* jobgroup.h: the process group of the attempt a worker runs, written down in its workdir, so that a
 * later worker on the same workdir can kill what a dead one left running.
 *
 * A worker that dies outright normally takes its attempt with it (runner.h: the parent-death
 * signal of the attempt's child). The record covers what that cannot: the supervisor itself killed
 * with the worker, or a job that leaves processes behind in the moment between its end and the
 * worker's reaping. Each worker process keeps one small file, <workdir>/.umdq-group.<pid>, that
 * names the worker (pid, start time) and the process group (pgid, session) of its running attempt,
 * or none. It is rewritten in place (one pwrite, no fsync) when an attempt starts and ends, and
 * removed when the worker exits cleanly. At start a worker calls jobgroup_sweep, which looks at every
 * such file in the workdir whose writer is gone and kills the group it names when that group still
 * has a process in the recorded session (a recycled pgid elsewhere is left alone).
 *
 * File format, one line of exactly JOBGROUP_RECORD_LEN bytes:
 *   "umdq-group 1 worker PID START group PGID SID job JOB ATTEMPT" (PGID 0: no attempt), padded
 *   with spaces, ending with '\n'. START is the worker's start time in clock ticks after boot
 *   (field 22 of /proc/PID/stat), so a recycled worker pid is not mistaken for the writer. */
#ifndef UMDQ_WORKER_JOBGROUP_H
#define UMDQ_WORKER_JOBGROUP_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define JOBGROUP_RECORD_LEN 160

typedef struct jobgroup jobgroup;

/* Create this process's record file in workdir (an existing directory), saying "no attempt". On
 * success *out is owned by the caller (jobgroup_destroy). */
int jobgroup_new(const char *workdir, jobgroup **out, char *err, size_t errlen);
/* Remove the record file and free. Accepts NULL, NULLs the pointer. */
void jobgroup_destroy(jobgroup **g);

/* The attempt (job, attempt) now runs in process group pgid (pgid 0: none runs). 0 or UMDQ_EIO. */
int jobgroup_set(jobgroup *g, pid_t pgid, int64_t job, int64_t attempt);

/* Kill (SIGKILL) the process groups that records of dead workers in workdir name and that still
 * have a member in the recorded session; remove those records. Records of live workers (this one
 * included) are left alone. *killed (may be NULL) receives how many groups were killed; what was
 * killed is logged. 0, or UMDQ_EIO when workdir cannot be read. */
int jobgroup_sweep(const char *workdir, int *killed, char *err, size_t errlen);

/* State ('R', 'S', 'Z', ...), start time (clock ticks after boot), process group and session of
 * pid from /proc/PID/stat. 0, or UMDQ_ENOTFOUND when there is no such process. Any pointer may be
 * NULL. */
int jobgroup_proc_stat(pid_t pid, char *state, unsigned long long *start, pid_t *pgrp, pid_t *session);

#endif
