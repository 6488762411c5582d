/* cli_proc.c: detached process start, pid files, liveness checks and log tails for umdq up/down. */
#include "cli_proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "umdq.h"
#include "util.h"

char *proc_find_program(const char *name, char *err, size_t errlen) {
    char self[PATH_MAX];
    char path[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = 0;
            snprintf(path, sizeof path, "%s/%s", self, name);
            if (access(path, X_OK) == 0) return strdup(path);
        }
    }
    const char *env = getenv("PATH");
    if (env) {
        const char *p = env;
        while (*p) {
            size_t len = strcspn(p, ":");
            if (len > 0 && len < PATH_MAX) {
                snprintf(path, sizeof path, "%.*s/%s", (int)len, p, name);
                struct stat st;
                if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0)
                    return strdup(path);
            }
            p += len;
            if (*p == ':') p++;
        }
    }
    snprintf(err, errlen, "%s not found next to %s nor on PATH", name, n > 0 ? self : "umdq");
    return NULL;
}

/* Read exactly n bytes unless EOF comes first; returns the bytes read. */
static size_t read_full(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

/* In the grandchild: the process image the program will run in. Never returns. */
static void exec_detached(char *const argv[], const char *log_path, int status_fd) {
    int code;
    pid_t self = getpid();
    if (write(status_fd, &self, sizeof self) != (ssize_t)sizeof self) _exit(127);

    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);

    int in = open("/dev/null", O_RDONLY);
    int out = log_path ? open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644)
                       : open("/dev/null", O_WRONLY);
    if (in < 0 || out < 0) goto fail;
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) goto fail;
    long maxfd = sysconf(_SC_OPEN_MAX);
    if (maxfd < 0 || maxfd > 65536) maxfd = 65536;
    for (int fd = 3; fd < maxfd; fd++)
        if (fd != status_fd) close(fd);
    execv(argv[0], argv);
fail:
    code = errno;
    if (write(status_fd, &code, sizeof code) < 0) _exit(127);
    _exit(127);
}

int proc_spawn_detached(char *const argv[], const char *log_path, pid_t *pid, char *err,
                        size_t errlen) {
    int fds[2] = {-1, -1};
    int rc = 0;
    *pid = 0;
    if (pipe2(fds, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return UMDQ_EIO;
    }
    fflush(NULL);
    pid_t first = fork();
    if (first < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    if (first == 0) {
        close(fds[0]);
        if (setsid() < 0) _exit(1);
        pid_t second = fork();
        if (second < 0) _exit(1);
        if (second == 0) exec_detached(argv, log_path, fds[1]);
        _exit(0);
    }
    close(fds[1]);
    fds[1] = -1;
    int status = 0;
    while (waitpid(first, &status, 0) < 0 && errno == EINTR) {
    }
    pid_t child = 0;
    if (read_full(fds[0], &child, sizeof child) != sizeof child || child <= 0) {
        snprintf(err, errlen, "could not start %s (fork or setsid failed)", argv[0]);
        rc = UMDQ_EIO;
        goto fail;
    }
    int code = 0;
    if (read_full(fds[0], &code, sizeof code) == sizeof code) {
        snprintf(err, errlen, "could not run %s: %s", argv[0], strerror(code));
        rc = UMDQ_EIO;
        goto fail;
    }
    *pid = child;
fail:
    if (fds[0] >= 0) close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
    return rc;
}

/* The state letter of /proc/pid/stat ('R', 'S', 'Z', ...) and the process group, or 0 when the
 * process is gone. */
static char proc_state(pid_t pid, pid_t *pgrp) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *rp = strrchr(buf, ')'); /* the command name may itself hold ')' */
    if (!rp || rp[1] != ' ' || !rp[2]) return 0;
    if (pgrp) {
        int ppid = 0, pg = 0;
        if (sscanf(rp + 3, "%d %d", &ppid, &pg) == 2) *pgrp = (pid_t)pg;
        else *pgrp = 0;
    }
    return rp[2];
}

int proc_alive(pid_t pid) {
    if (pid <= 0) return 0;
    if (kill(pid, 0) != 0 && errno != EPERM) return 0;
    char st = proc_state(pid, NULL);
    return st != 0 && st != 'Z' && st != 'X';
}

int proc_is_program(pid_t pid, const char *name) {
    char path[64], buf[4096];
    /* comm: the base name of the executed file, also for a script run through its #! line
     * (the kernel keeps 15 characters) */
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    int cfd = open(path, O_RDONLY | O_CLOEXEC);
    if (cfd >= 0) {
        ssize_t n = read(cfd, buf, sizeof buf - 1);
        close(cfd);
        if (n > 0) {
            buf[n] = 0;
            buf[strcspn(buf, "\n")] = 0;
            if (strlen(buf) > 0 && strncmp(buf, name, 15) == 0 &&
                (strlen(name) <= 15 ? strlen(buf) == strlen(name) : strlen(buf) == 15))
                return 1;
        }
    }
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0; /* argv[0] ends at the first NUL */
    const char *base = strrchr(buf, '/');
    base = base ? base + 1 : buf;
    return strcmp(base, name) == 0;
}

int proc_group_members(pid_t pgid, pid_t *out, int max) {
    int n = 0;
    DIR *d = opendir("/proc");
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        char *end;
        long v = strtol(e->d_name, &end, 10);
        if (*end || v <= 0 || v == pgid) continue;
        pid_t pg = 0;
        char st = proc_state((pid_t)v, &pg);
        if (st && st != 'Z' && st != 'X' && pg == pgid) out[n++] = (pid_t)v;
    }
    closedir(d);
    return n;
}

int proc_descendants(pid_t pid, pid_t *out, int max) {
    /* one pass over /proc for (pid, parent) pairs, then a breadth-first walk from pid */
    int cap = 1024, n = 0, found = 0;
    pid_t(*pairs)[2] = malloc(sizeof *pairs * (size_t)cap);
    if (!pairs) return 0;
    DIR *d = opendir("/proc");
    if (!d) {
        free(pairs);
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long v = strtol(e->d_name, &end, 10);
        if (*end || v <= 0) continue;
        char path[64], buf[1024];
        snprintf(path, sizeof path, "/proc/%ld/stat", v);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t len = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (len <= 0) continue;
        buf[len] = 0;
        char *rp = strrchr(buf, ')');
        int ppid = 0;
        if (!rp || rp[1] != ' ' || rp[2] == 'Z' || rp[2] == 'X' || sscanf(rp + 3, "%d", &ppid) != 1)
            continue;
        if (n == cap) {
            pid_t(*more)[2] = realloc(pairs, sizeof *pairs * (size_t)cap * 2);
            if (!more) break;
            pairs = more;
            cap *= 2;
        }
        pairs[n][0] = (pid_t)v;
        pairs[n][1] = (pid_t)ppid;
        n++;
    }
    closedir(d);
    /* out doubles as the walk's queue: out[0..found) are known descendants */
    for (int head = -1; head < found && found < max; head++) {
        pid_t parent = head < 0 ? pid : out[head];
        for (int i = 0; i < n && found < max; i++)
            if (pairs[i][1] == parent) out[found++] = pairs[i][0];
    }
    free(pairs);
    return found;
}

int proc_wait_gone(const pid_t *pids, int n, double timeout_s) {
    double end = mono_s() + timeout_s;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < n; i++) alive += proc_alive(pids[i]);
        if (alive == 0 || mono_s() >= end) return alive;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int pidfile_read(const char *path, pid_t *pid) {
    char buf[64];
    *pid = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return UMDQ_ENOTFOUND;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return UMDQ_ENOTFOUND;
    buf[n] = 0;
    char *end;
    long v = strtol(buf, &end, 10);
    while (*end == '\n' || *end == ' ' || *end == '\r') end++;
    if (end == buf || *end || v <= 0 || v > INT_MAX) return UMDQ_ENOTFOUND;
    *pid = (pid_t)v;
    return 0;
}

int pidfile_write(const char *path, pid_t pid, char *err, size_t errlen) {
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d\n", (int)pid);
    return write_file_atomic(path, buf, (size_t)n, 0644, err, errlen);
}

void file_tail(const char *path, int nlines, const char *prefix, FILE *out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t start = size > 65536 ? size - 65536 : 0;
    char *buf = malloc(65537);
    if (!buf || lseek(fd, start, SEEK_SET) < 0) {
        free(buf);
        close(fd);
        return;
    }
    size_t len = read_full(fd, buf, (size_t)(size - start));
    close(fd);
    buf[len] = 0;
    /* walk back nlines line ends (a final newline does not start an empty line) */
    size_t end = len;
    if (end > 0 && buf[end - 1] == '\n') end--;
    size_t pos = end;
    int lines = 0;
    while (pos > 0) {
        if (buf[pos - 1] == '\n' && ++lines == nlines) break;
        pos--;
    }
    const char *p = buf + pos;
    while (p < buf + end) {
        const char *nl = memchr(p, '\n', (size_t)(buf + end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(buf + end - p);
        fprintf(out, "%s%.*s\n", prefix ? prefix : "", (int)l, p);
        p += l + 1;
    }
    free(buf);
}
