/* jobgroup.c: the record of the running attempt's process group and the start-up sweep of the
 * groups that dead workers left (see jobgroup.h). */
#include "jobgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "umdq.h"

#define RECORD_MAGIC "umdq-group"
#define RECORD_VERSION 1
#define RECORD_PREFIX ".umdq-group."

struct jobgroup {
    int fd;                    /* the record file, owned */
    char path[4200];
    pid_t worker;
    unsigned long long start;  /* the worker's start time, clock ticks after boot */
    pid_t session;
};

int jobgroup_proc_stat(pid_t pid, char *state, unsigned long long *start, pid_t *pgrp, pid_t *session) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return UMDQ_ENOTFOUND;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return UMDQ_ENOTFOUND;
    buf[n] = 0;
    /* "pid (comm) state ppid pgrp session ...": comm may hold anything, so parse after its last ')' */
    char *p = strrchr(buf, ')');
    if (!p) return UMDQ_ENOTFOUND;
    char st;
    int ppid, group, sess;
    unsigned long long v[16];
    /* fields 3 .. 22: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
     * stime cutime cstime priority nice threads itrealvalue starttime */
    if (sscanf(p + 1, " %c %d %d %d %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu",
               &st, &ppid, &group, &sess, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8],
               &v[9], &v[10], &v[11], &v[12], &v[13], &v[14], &v[15]) != 20)
        return UMDQ_ENOTFOUND;
    if (state) *state = st;
    if (start) *start = v[15];
    if (pgrp) *pgrp = group;
    if (session) *session = sess;
    return 0;
}

static int record_write(jobgroup *g, pid_t pgid, pid_t sid, int64_t job, int64_t attempt) {
    char line[JOBGROUP_RECORD_LEN + 1];
    int n = snprintf(line, sizeof line, "%s %d worker %d %llu group %d %d job %lld %lld", RECORD_MAGIC,
                     RECORD_VERSION, (int)g->worker, g->start, (int)pgid, (int)sid, (long long)job,
                     (long long)attempt);
    if (n < 0 || n >= JOBGROUP_RECORD_LEN) return UMDQ_EIO;
    memset(line + n, ' ', (size_t)(JOBGROUP_RECORD_LEN - 1 - n));
    line[JOBGROUP_RECORD_LEN - 1] = '\n';
    ssize_t w = pwrite(g->fd, line, JOBGROUP_RECORD_LEN, 0);
    return w == JOBGROUP_RECORD_LEN ? 0 : UMDQ_EIO;
}

int jobgroup_new(const char *workdir, jobgroup **out, char *err, size_t errlen) {
    *out = NULL;
    jobgroup *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return UMDQ_ENOMEM;
    }
    g->fd = -1;
    g->worker = getpid();
    g->session = getsid(0);
    if (jobgroup_proc_stat(g->worker, NULL, &g->start, NULL, NULL) != 0) g->start = 0;
    snprintf(g->path, sizeof g->path, "%.4000s/" RECORD_PREFIX "%d", workdir, (int)g->worker);
    g->fd = open(g->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (g->fd < 0 || record_write(g, 0, 0, 0, 0) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", g->path, strerror(errno));
        jobgroup_destroy(&g);
        return UMDQ_EIO;
    }
    *out = g;
    return 0;
}

void jobgroup_destroy(jobgroup **gp) {
    if (!gp || !*gp) return;
    jobgroup *g = *gp;
    if (g->fd >= 0) {
        close(g->fd);
        unlink(g->path);
    }
    free(g);
    *gp = NULL;
}

int jobgroup_set(jobgroup *g, pid_t pgid, int64_t job, int64_t attempt) {
    if (!g) return 0;
    return record_write(g, pgid, pgid > 0 ? g->session : 0, job, attempt);
}

/* 1 when a live process (not a zombie) of group pgid in session sid exists. */
static int group_alive_in_session(pid_t pgid, pid_t sid) {
    if (kill(-pgid, 0) != 0 && errno == ESRCH) return 0;
    DIR *d = opendir("/proc");
    if (!d) return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        pid_t pg, ss;
        char state;
        if (jobgroup_proc_stat((pid_t)pid, &state, NULL, &pg, &ss) == 0 && pg == pgid && ss == sid && state != 'Z')
            found = 1;
    }
    closedir(d);
    return found;
}

int jobgroup_sweep(const char *workdir, int *killed, char *err, size_t errlen) {
    int n = 0;
    if (killed) *killed = 0;
    DIR *d = opendir(workdir);
    if (!d) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "cannot read %s: %s", workdir, strerror(errno));
        return UMDQ_EIO;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, RECORD_PREFIX, sizeof RECORD_PREFIX - 1) != 0) continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        char text[512];
        ssize_t len = read(fd, text, sizeof text - 1);
        close(fd);
        if (len < 0) continue;
        text[len] = 0;
        int version = 0, wpid = 0, pgid = 0, sid = 0;
        unsigned long long wstart = 0;
        long long job = 0, attempt = 0;
        char magic[16];
        if (sscanf(text, "%15s %d worker %d %llu group %d %d job %lld %lld", magic, &version, &wpid, &wstart, &pgid,
                   &sid, &job, &attempt) != 8 ||
            strcmp(magic, RECORD_MAGIC) != 0 || version != RECORD_VERSION) {
            log_warn("%s/%s is not a process group record of this umdq-worker (want \"%s %d ...\"); left alone",
                     workdir, e->d_name, RECORD_MAGIC, RECORD_VERSION);
            continue;
        }
        if (wpid == getpid()) continue;
        unsigned long long start;
        char wstate;
        if (wpid > 0 && jobgroup_proc_stat(wpid, &wstate, &start, NULL, NULL) == 0 && start == wstart && wstate != 'Z')
            continue; /* its writer lives */
        if (pgid > 1 && group_alive_in_session(pgid, sid)) {
            if (kill(-pgid, SIGKILL) == 0) {
                n++;
                log_warn("killed process group %d of job %lld attempt %lld, left running by worker pid %d, "
                         "which is gone", pgid, job, attempt, wpid);
            } else {
                log_warn("cannot kill process group %d of job %lld attempt %lld left by worker pid %d: %s", pgid,
                         job, attempt, wpid, strerror(errno));
            }
        }
        unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
    if (killed) *killed = n;
    return 0;
}
