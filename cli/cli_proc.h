/* cli_proc.h: the processes `umdq up` starts and `umdq down` stops: finding the programs,
 * starting them detached, pid files, liveness and stopping. */
#ifndef UMDQ_CLI_PROC_H
#define UMDQ_CLI_PROC_H
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* The path of program name: next to the running executable (/proc/self/exe) when it is there
 * and executable, else the first match on $PATH. Caller frees; NULL and a message when absent. */
char *proc_find_program(const char *name, char *err, size_t errlen);

/* Start argv (argv[0] a path, argv NULL-terminated; borrowed) detached from this process: double
 * fork, setsid (the program leads its own session and process group), stdin from /dev/null,
 * stdout and stderr appended to log_path (NULL = /dev/null), default signal handling, no other
 * inherited file descriptors. Returns once the program was exec'd: 0 with *pid set, or UMDQ_EIO
 * with the reason (for example "No such file or directory"). */
int proc_spawn_detached(char *const argv[], const char *log_path, pid_t *pid, char *err,
                        size_t errlen);

/* 1 when pid exists and is not a zombie, else 0. */
int proc_alive(pid_t pid);

/* 1 when pid runs the program name ("umdqd"): its argv[0] has that base name, or the kernel's
 * command name (comm) is that name, as for a script started through its #! line; else 0. */
int proc_is_program(pid_t pid, const char *name);

/* The pids in process group pgid, other than pgid itself, that are alive (at most max).
 * Returns how many were found. */
int proc_group_members(pid_t pgid, pid_t *out, int max);

/* The live descendants of pid (children, their children, ...; at most max), whatever their
 * process group. Returns how many were found. */
int proc_descendants(pid_t pid, pid_t *out, int max);

/* Poll until none of pids[0..n) is alive or timeout_s passes. Returns how many are still alive. */
int proc_wait_gone(const pid_t *pids, int n, double timeout_s);

/* A pid file holds one decimal pid. 0 with *pid, or UMDQ_ENOTFOUND (absent or not a pid). */
int pidfile_read(const char *path, pid_t *pid);
/* Write pid atomically; 0 or UMDQ_EIO with a message. */
int pidfile_write(const char *path, pid_t pid, char *err, size_t errlen);

/* Copy the last nlines lines of the file at path to out, each prefixed with prefix; nothing when
 * the file is missing. */
void file_tail(const char *path, int nlines, const char *prefix, FILE *out);

#endif
