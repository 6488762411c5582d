/* supervise.c: the --all-gpus parent: start, watch and restart one worker process per GPU. */
#include "supervise.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "umdq.h"
#include "util.h"

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 60000
#define HEALTHY_MS 60000   /* a worker that ran this long restarts after the minimum back-off */
#define MAX_ARGS 64

typedef struct {
    pid_t pid;             /* 0 when not running */
    int64_t started;       /* mono ms */
    int64_t restart_at;    /* mono ms, when pid == 0 */
    int backoff_ms;
} slot;

static int sup_pipe[2] = {-1, -1};
static volatile sig_atomic_t sup_stop;

static void sup_on_signal(int sig) {
    int saved = errno;
    if (sig != SIGCHLD) sup_stop = 1;
    if (sup_pipe[1] >= 0) {
        ssize_t w = write(sup_pipe[1], "x", 1);
        (void)w;
    }
    errno = saved;
}

static pid_t spawn(const char *exe, const char *const *argv) {
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGCHLD, &sa, NULL);
        sigaction(SIGPIPE, &sa, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(exe, (char *const *)argv);
        fprintf(stderr, "umdq-worker: cannot run %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    int saved = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return pid;
}

int supervise_run(const char *exe, const char *const *common_args, const supervise_gpu *gpus, int ngpus,
                  int stop_ms, char *err, size_t errlen) {
    int rc = 0;
    slot *slots = NULL;
    const char *argv[MAX_ARGS];
    int nbase = 0;
    while (common_args[nbase]) nbase++;
    if (nbase + 5 > MAX_ARGS) {
        snprintf(err, errlen, "too many arguments");
        return UMDQ_EINVAL;
    }
    memcpy(argv, common_args, (size_t)nbase * sizeof *argv);

    if (pipe2(sup_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return UMDQ_EIO;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sup_on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);

    slots = calloc((size_t)ngpus, sizeof *slots);
    if (!slots) {
        snprintf(err, errlen, "out of memory");
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    for (int i = 0; i < ngpus; i++) {
        slots[i].backoff_ms = BACKOFF_MIN_MS;
        slots[i].restart_at = 0; /* start now */
    }

    int64_t stop_deadline = -1;
    for (;;) {
        int64_t now = mono_ms();
        /* reap */
        for (;;) {
            int st;
            pid_t p = waitpid(-1, &st, WNOHANG);
            if (p <= 0) break;
            for (int i = 0; i < ngpus; i++) {
                if (slots[i].pid != p) continue;
                slots[i].pid = 0;
                char how[64];
                if (WIFSIGNALED(st)) snprintf(how, sizeof how, "was killed by signal %d", WTERMSIG(st));
                else snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(st));
                if (now - slots[i].started >= HEALTHY_MS) slots[i].backoff_ms = BACKOFF_MIN_MS;
                slots[i].restart_at = now + slots[i].backoff_ms;
                if (!sup_stop)
                    log_warn("worker %s (pid %d) %s; restarting it in %d s", gpus[i].name, (int)p, how,
                             slots[i].backoff_ms / 1000);
                slots[i].backoff_ms *= 2;
                if (slots[i].backoff_ms > BACKOFF_MAX_MS) slots[i].backoff_ms = BACKOFF_MAX_MS;
            }
        }

        int alive = 0;
        for (int i = 0; i < ngpus; i++) alive += slots[i].pid > 0;
        if (sup_stop) {
            if (stop_deadline < 0) {
                log_info("stopping %d worker%s", alive, alive == 1 ? "" : "s");
                for (int i = 0; i < ngpus; i++)
                    if (slots[i].pid > 0) kill(slots[i].pid, SIGTERM);
                stop_deadline = now + stop_ms;
            } else if (now >= stop_deadline) {
                for (int i = 0; i < ngpus; i++)
                    if (slots[i].pid > 0) kill(slots[i].pid, SIGKILL);
                stop_deadline = now + 60000; /* SIGKILL once; then only wait for the reaping */
            }
            if (alive == 0) break;
        } else {
            for (int i = 0; i < ngpus; i++) {
                if (slots[i].pid > 0 || now < slots[i].restart_at) continue;
                argv[nbase] = "--gpu";
                argv[nbase + 1] = gpus[i].id;
                argv[nbase + 2] = "--name";
                argv[nbase + 3] = gpus[i].name;
                argv[nbase + 4] = NULL;
                pid_t p = spawn(exe, argv);
                if (p < 0) {
                    log_error("cannot start the worker for GPU %s: %s", gpus[i].id, strerror(errno));
                    slots[i].restart_at = now + slots[i].backoff_ms;
                    continue;
                }
                slots[i].pid = p;
                slots[i].started = now;
                log_info("worker %s (GPU %s) started as pid %d", gpus[i].name, gpus[i].id, (int)p);
            }
        }

        int64_t wake = now + 1000;
        for (int i = 0; i < ngpus; i++)
            if (slots[i].pid == 0 && slots[i].restart_at < wake) wake = slots[i].restart_at;
        if (stop_deadline >= 0 && stop_deadline < wake) wake = stop_deadline;
        int timeout = wake > now ? (int)(wake - now) : 0;
        struct pollfd pfd = {.fd = sup_pipe[0], .events = POLLIN};
        poll(&pfd, 1, timeout);
        char drain[64];
        while (read(sup_pipe[0], drain, sizeof drain) > 0) {}
    }

fail:
    free(slots);
    close(sup_pipe[0]);
    close(sup_pipe[1]);
    sup_pipe[0] = sup_pipe[1] = -1;
    return rc;
}
