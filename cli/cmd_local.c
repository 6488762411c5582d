/* cmd_local.c: `umdq up` and `umdq down`: start and stop a local daemon and its workers. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_proc.h"
#include "jsonx.h"
#include "umdq.h"
#include "util.h"

#define UP_WAIT_S 10.0       /* how long up waits for the daemon's health answer */
#define WORKER_WAIT_S 5.0    /* how long up waits for started workers to register */
#define MAX_WORKERS 256

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* "home/rel" into buf. */
static void home_path(const cli_ctx *ctx, const char *rel, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", ctx->home, rel);
}

/* How to repeat --home in a suggested command line: "" or " --home DIR". */
static void home_arg(const cli_ctx *ctx, char *buf, size_t n) {
    if (ctx->home_opt) {
        int plain = strspn(ctx->home, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789/._-+:@%,") == strlen(ctx->home);
        char *q = plain ? NULL : shell_quote(ctx->home);
        snprintf(buf, n, " --home %s", q ? q : ctx->home);
        free(q);
    } else {
        buf[0] = 0;
    }
}

/* 1 when GET /api/health answers {"ok": true} within timeout_s. */
static int daemon_healthy(cli_client *c, double timeout_s) {
    long status = 0;
    cJSON *j = NULL;
    char err[512];
    int ok = client_request(c, "GET", "/api/health", NULL, 0, timeout_s, &status, &j, err,
                            sizeof err) == 0 &&
             status == 200 && j && json_get_bool(j, "ok", 0);
    cJSON_Delete(j);
    return ok;
}

/* The pid of a live umdqd for this home (umdqd.pid, else umdqd.json), or 0. */
static pid_t daemon_pid(const cli_ctx *ctx, cli_client *c) {
    char path[4096];
    pid_t pid = 0;
    home_path(ctx, "umdqd.pid", path, sizeof path);
    if (pidfile_read(path, &pid) == 0 && proc_alive(pid) && proc_is_program(pid, "umdqd"))
        return pid;
    pid = (pid_t)client_daemon_pid(c);
    if (pid > 0 && proc_alive(pid) && proc_is_program(pid, "umdqd")) return pid;
    return 0;
}

/* Wait until the daemon pid answers its health check (umdqd.json naming pid). 0 when it does,
 * else UMDQ_EIO with the reason. */
static int wait_healthy(cli_client *c, pid_t pid, double timeout_s, char *err, size_t errlen) {
    double end = mono_s() + timeout_s;
    for (;;) {
        if (!proc_alive(pid)) {
            snprintf(err, errlen, "umdqd (pid %d) exited during start-up", (int)pid);
            return UMDQ_EIO;
        }
        client_reload(c);
        if (client_has_state(c) && client_daemon_pid(c) == (int)pid && daemon_healthy(c, 1.0))
            return 0;
        if (mono_s() >= end) break;
        sleep_ms(100);
    }
    snprintf(err, errlen, "umdqd (pid %d) did not answer at %s within %.0f s", (int)pid,
             client_has_state(c) ? client_url(c) : "its address", timeout_s);
    return UMDQ_EIO;
}

/* The value after "--connect" in the command line of pid, into buf; 0 when found. */
static int worker_connect_arg(pid_t pid, char *buf, size_t n) {
    char path[64], data[8192];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t len = read(fd, data, sizeof data - 1);
    close(fd);
    if (len <= 0) return -1;
    data[len] = 0;
    for (char *p = data; p < data + len; p += strlen(p) + 1) {
        if (strcmp(p, "--connect") == 0 && p + strlen(p) + 1 < data + len) {
            snprintf(buf, n, "%s", p + strlen(p) + 1);
            return 0;
        }
        if (strncmp(p, "--connect=", 10) == 0) {
            snprintf(buf, n, "%s", p + 10);
            return 0;
        }
    }
    return -1;
}

/* Entries of directory path whose names, after prefix, are all digits (prefix "" = any name
 * not starting with a dot). */
static int count_entries(const char *path, const char *prefix) {
    int n = 0;
    size_t pl = strlen(prefix);
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (pl == 0) {
            n++;
            continue;
        }
        if (strncmp(e->d_name, prefix, pl) != 0 || !e->d_name[pl]) continue;
        const char *p = e->d_name + pl;
        while (*p >= '0' && *p <= '9') p++;
        if (!*p) n++;
    }
    closedir(d);
    return n;
}

/* How many NVIDIA GPUs this process may use: none when CUDA_VISIBLE_DEVICES is set empty or to
 * a negative index, else the driver's count (/proc/driver/nvidia/gpus, else /dev/nvidiaN). */
static int count_gpus(void) {
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (visible && (!*visible || *visible == '-')) return 0;
    int n = count_entries("/proc/driver/nvidia/gpus", "");
    if (n == 0) n = count_entries("/dev", "nvidia");
    return n;
}

typedef struct {
    char slot[32];       /* "cpu0", "gpus": names the pid file and the log */
    char name[160];      /* the worker's name ("host/cpu0"), or "" for --all-gpus */
    int gpus;            /* 1: one `umdq-worker --all-gpus` */
    pid_t pid;           /* running or started process */
    int started;         /* started by this run */
} worker_plan;

/* Start the worker of plan w connected to zmq. 0 or an error reported by the caller. */
static int start_worker(const cli_ctx *ctx, const char *program, const char *zmq, worker_plan *w,
                        char *err, size_t errlen) {
    char log[4096], pidfile[4096], workdir[4096];
    snprintf(log, sizeof log, "%s/logs/worker-%s.log", ctx->home, w->slot);
    snprintf(pidfile, sizeof pidfile, "%s/workers/%s.pid", ctx->home, w->slot);
    snprintf(workdir, sizeof workdir, "%s/work", ctx->home);
    char *argv[12];
    int n = 0;
    argv[n++] = (char *)program;
    argv[n++] = "--connect";
    argv[n++] = (char *)zmq;
    if (w->gpus) {
        argv[n++] = "--all-gpus";
    } else {
        argv[n++] = "--cpu";
        argv[n++] = "--name";
        argv[n++] = w->name;
    }
    argv[n++] = "--workdir";
    argv[n++] = workdir;
    argv[n] = NULL;
    int rc = proc_spawn_detached(argv, log, &w->pid, err, errlen);
    if (rc) return rc;
    w->started = 1;
    return pidfile_write(pidfile, w->pid, err, errlen);
}

/* 1 when every started CPU worker is listed by the daemon (any state but DEAD). */
static int workers_registered(cli_client *c, const worker_plan *plan, int n) {
    long status = 0;
    cJSON *j = NULL;
    char err[256];
    if (client_request(c, "GET", "/api/workers", NULL, 0, 2.0, &status, &j, err, sizeof err) ||
        status != 200 || !j) {
        cJSON_Delete(j);
        return 0;
    }
    int all = 1;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "workers");
    for (int i = 0; i < n && all; i++) {
        if (!plan[i].started || plan[i].gpus) continue;
        int found = 0;
        const cJSON *w;
        cJSON_ArrayForEach(w, list) {
            const char *id = json_get_string(w, "id", "");
            const char *st = json_get_string(w, "state", "");
            if (strcmp(id, plan[i].name) == 0 && (strcmp(st, "IDLE") == 0 ||
                                                   strcmp(st, "BUSY") == 0) &&
                json_get_number(w, "heartbeat_age", 0) < 2.0)
                found = 1;
        }
        all = found;
    }
    cJSON_Delete(j);
    return all;
}

int cmd_up(cli_ctx *ctx, int argc, char **argv) {
    int port = CLI_DEFAULT_PORT, cpu_workers = -1;
    const cli_opt opts[] = {
        {"port", 'p', CLI_INT, "P", "HTTP port of the daemon on 127.0.0.1; workers connect on "
         "P+1; 0 lets the daemon choose both (see DIR/umdqd.json)", "5755", &port, 0, 65534},
        {"cpu-workers", 'n', CLI_INT, "N", "CPU workers to run (named HOST/cpu0, HOST/cpu1, ...) "
         "when the machine has no GPU; on a GPU machine, CPU workers in addition to the GPU "
         "workers", "1 without GPUs, 0 with", &cpu_workers, 0, MAX_WORKERS},
        {NULL, 0, CLI_FLAG, NULL, NULL, NULL, NULL, 0, 0},
    };
    const cli_command cmd = {
        "up", "", NULL,
        "Starts umdqd (--home DIR --http 127.0.0.1:P --zmq tcp://127.0.0.1:P+1) detached, waits "
        "until it answers (10 s; else prints the tail of DIR/umdqd.log), then starts one worker "
        "per GPU (umdq-worker --all-gpus) or N CPU workers, each detached with its log in "
        "DIR/logs/worker-*.log and its pid in DIR/workers/. A daemon that already answers is "
        "reused and only missing workers are started, so running up twice is harmless. umdqd and "
        "umdq-worker are taken from the directory of this umdq, else from PATH.",
        opts, 0, 0};
    int nops = 0;
    int rc = cli_args(ctx, &cmd, argc, argv, &nops);
    if (rc >= 0) return rc;

    cli_client *c = NULL;
    char *daemon_prog = NULL, *worker_prog = NULL;
    char err[1024], path[4096], hostarg[4200];
    worker_plan *plan = NULL;
    int exit_code = UMDQ_EXIT_RUNTIME;
    pid_t dpid = 0;
    int daemon_started = 0;

    rc = cli_connect(ctx, &c);
    if (rc) return rc;
    home_arg(ctx, hostarg, sizeof hostarg);
    const char *dirs[] = {"", "logs", "workers", "work"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        home_path(ctx, dirs[i], path, sizeof path);
        if (mkdir_p(path, 0700) != 0) {
            cli_error(ctx, "cannot create %s: %s", path, strerror(errno));
            goto fail;
        }
    }

    /* the daemon: reuse one that answers (or is starting), else start one */
    dpid = daemon_pid(ctx, c);
    if (dpid && client_has_state(c) && daemon_healthy(c, 2.0)) {
        fprintf(stderr, "umdqd already running (pid %d) at %s\n", (int)dpid, client_url(c));
    } else if (dpid) {
        fprintf(stderr, "umdqd (pid %d) is running; waiting for it to answer\n", (int)dpid);
        if (wait_healthy(c, dpid, UP_WAIT_S, err, sizeof err) != 0) {
            cli_error(ctx, "%s; the end of %s/umdqd.log:", err, ctx->home);
            home_path(ctx, "umdqd.log", path, sizeof path);
            file_tail(path, 20, "  ", stderr);
            goto fail;
        }
        fprintf(stderr, "umdqd already running (pid %d) at %s\n", (int)dpid, client_url(c));
    } else {
        daemon_prog = proc_find_program("umdqd", err, sizeof err);
        if (!daemon_prog) {
            cli_error(ctx, "%s", err);
            goto fail;
        }
        char http[64], zmq[64];
        snprintf(http, sizeof http, "127.0.0.1:%d", port);
        if (port == 0) snprintf(zmq, sizeof zmq, "tcp://127.0.0.1:*");
        else snprintf(zmq, sizeof zmq, "tcp://127.0.0.1:%d", port + 1);
        char *dargv[] = {daemon_prog, "--home", ctx->home, "--http", http, "--zmq", zmq, NULL};
        home_path(ctx, "umdqd.log", path, sizeof path);
        if (proc_spawn_detached(dargv, path, &dpid, err, sizeof err) != 0) {
            cli_error(ctx, "%s", err);
            goto fail;
        }
        if (wait_healthy(c, dpid, UP_WAIT_S, err, sizeof err) != 0) {
            cli_error(ctx, "%s; the end of %s:", err, path);
            file_tail(path, 20, "  ", stderr);
            if (proc_alive(dpid)) {
                kill(dpid, SIGTERM);
                if (proc_wait_gone(&dpid, 1, 3.0)) kill(dpid, SIGKILL);
            }
            goto fail;
        }
        daemon_started = 1;
        fprintf(stderr, "started umdqd (pid %d) at %s, log %s\n", (int)dpid, client_url(c), path);
    }
    const char *zmq = client_zmq(c);
    if (!zmq) {
        cli_error(ctx, "%s/umdqd.json names no ZeroMQ address; cannot start workers", ctx->home);
        goto fail;
    }

    /* the workers: one --all-gpus worker on a GPU machine, N CPU workers */
    int ngpus = count_gpus();
    int ncpu = cpu_workers >= 0 ? cpu_workers : (ngpus > 0 ? 0 : 1);
    int nplan = ncpu + (ngpus > 0);
    plan = calloc((size_t)(nplan ? nplan : 1), sizeof *plan);
    if (!plan) {
        cli_error(ctx, "out of memory");
        goto fail;
    }
    char host[128] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    int k = 0;
    if (ngpus > 0) {
        snprintf(plan[k].slot, sizeof plan[k].slot, "gpus");
        plan[k].gpus = 1;
        k++;
    }
    for (int i = 0; i < ncpu; i++, k++) {
        snprintf(plan[k].slot, sizeof plan[k].slot, "cpu%d", i);
        snprintf(plan[k].name, sizeof plan[k].name, "%s/cpu%d", host, i);
    }
    int nstarted = 0, nrunning = 0;
    for (int i = 0; i < nplan; i++) {
        worker_plan *w = &plan[i];
        const char *label = w->gpus ? "GPU workers (--all-gpus)" : w->name;
        snprintf(path, sizeof path, "%s/workers/%s.pid", ctx->home, w->slot);
        pid_t old = 0;
        if (pidfile_read(path, &old) == 0 && proc_alive(old) &&
            proc_is_program(old, "umdq-worker")) {
            char connected[256];
            if (worker_connect_arg(old, connected, sizeof connected) == 0 &&
                strcmp(connected, zmq) != 0) {
                /* it serves an earlier daemon on another address: replace it */
                fprintf(stderr, "restarting %s (pid %d): it connects to %s, the daemon is at %s\n",
                        label, (int)old, connected, zmq);
                kill(old, SIGTERM);
                if (proc_wait_gone(&old, 1, 10.0)) {
                    kill(-old, SIGKILL);
                    kill(old, SIGKILL);
                    proc_wait_gone(&old, 1, 2.0);
                }
            } else {
                w->pid = old;
                nrunning++;
                fprintf(stderr, "%s already running (pid %d)\n", label, (int)old);
                continue;
            }
        }
        if (!worker_prog) {
            worker_prog = proc_find_program("umdq-worker", err, sizeof err);
            if (!worker_prog) {
                cli_error(ctx, "%s", err);
                goto fail;
            }
        }
        /* no wait for an earlier process of this name: umdqd takes over the name of one that is
         * gone at once, and a worker refused for a live one says hello again for a while */
        if (start_worker(ctx, worker_prog, zmq, w, err, sizeof err) != 0) {
            cli_error(ctx, "cannot start %s: %s", label, err);
            goto fail;
        }
        nstarted++;
        fprintf(stderr, "started %s (pid %d), log %s/logs/worker-%s.log\n", label, (int)w->pid,
                ctx->home, w->slot);
    }

    /* the started workers must stay up and, for named ones, register with the daemon */
    if (nstarted > 0) {
        double end = mono_s() + WORKER_WAIT_S;
        int registered = 0, dead = 0;
        while (!registered && !dead && mono_s() < end) {
            for (int i = 0; i < nplan; i++)
                if (plan[i].started && !proc_alive(plan[i].pid)) dead = 1;
            if (!dead) registered = workers_registered(c, plan, nplan);
            if (!registered && !dead) sleep_ms(100);
        }
        for (int i = 0; i < nplan; i++) {
            if (!plan[i].started || proc_alive(plan[i].pid)) continue;
            cli_error(ctx, "worker %s (pid %d) exited; the end of its log:",
                      plan[i].gpus ? "gpus" : plan[i].name, (int)plan[i].pid);
            snprintf(path, sizeof path, "%s/logs/worker-%s.log", ctx->home, plan[i].slot);
            file_tail(path, 20, "  ", stderr);
            dead = 1;
        }
        if (dead) goto fail;
        if (!registered)
            fprintf(stderr, "note: not every started worker has registered with umdqd yet; see "
                            "`umdq%s workers`\n", hostarg);
    }
    if (nplan == 0) fprintf(stderr, "no workers requested\n");
    else if (nstarted == 0 && !daemon_started)
        fprintf(stderr, "everything was already running (%d worker%s)\n", nrunning,
                nrunning == 1 ? "" : "s");

    const char *url = client_url(c);
    char link[1024];
    if (cli_dashboard_link(c, link, sizeof link, err, sizeof err) == 0)
        fprintf(stderr, "dashboard: %s\n  (a one-time link; `umdq%s dashboard` prints a new one)\n", link, hostarg);
    else
        fprintf(stderr, "dashboard: not available (%s)\n", err);
    fprintf(stderr, "HTTP API: %s/api/ (token in %s/token; see docs/api.md)\n", url, ctx->home);
    fprintf(stderr, "stop with: umdq%s down\n", hostarg);
    exit_code = UMDQ_EXIT_OK;
fail:
    free(plan);
    free(daemon_prog);
    free(worker_prog);
    client_destroy(&c);
    return exit_code;
}

/* A process to stop: its pid, its label, the pid file to remove. */
typedef struct {
    pid_t pid;
    char label[160];
    char pidfile[4096];
} stop_item;

#define MAX_LEFT 256 /* processes tracked per stopped worker */

/* SIGTERM every item, wait up to timeout_s, SIGKILL what is left, each with a message. With
 * sweep_children, the processes the items had started (their descendants when the SIGTERM was
 * sent, and members of their process groups) that outlive them are killed too. Returns how many
 * items needed SIGKILL. */
static int stop_all(stop_item *items, int n, double timeout_s, int sweep_children) {
    pid_t pids[MAX_WORKERS + 1] = {0};
    pid_t (*kids)[MAX_LEFT] = NULL;
    int nkids[MAX_WORKERS + 1] = {0};
    int killed = 0;
    if (n > MAX_WORKERS + 1) n = MAX_WORKERS + 1;
    if (sweep_children) kids = calloc((size_t)n, sizeof *kids);
    for (int i = 0; i < n; i++) {
        pids[i] = items[i].pid;
        if (kids) nkids[i] = proc_descendants(items[i].pid, kids[i], MAX_LEFT);
        kill(items[i].pid, SIGTERM);
    }
    proc_wait_gone(pids, n, timeout_s);
    for (int i = 0; i < n; i++) {
        if (proc_alive(items[i].pid)) {
            fprintf(stderr, "%s (pid %d) did not stop within %.0f s; killing it\n",
                    items[i].label, (int)items[i].pid, timeout_s);
            if (sweep_children) kill(-items[i].pid, SIGKILL);
            kill(items[i].pid, SIGKILL);
            proc_wait_gone(&items[i].pid, 1, 2.0);
            killed++;
        } else {
            fprintf(stderr, "stopped %s (pid %d)\n", items[i].label, (int)items[i].pid);
        }
        if (sweep_children) {
            pid_t left[MAX_LEFT];
            int nleft = proc_group_members(items[i].pid, left, MAX_LEFT);
            for (int j = 0; kids && j < nkids[i] && nleft < MAX_LEFT; j++)
                if (proc_alive(kids[i][j])) left[nleft++] = kids[i][j];
            for (int j = 0; j < nleft; j++) {
                fprintf(stderr, "killing pid %d left behind by %s\n", (int)left[j],
                        items[i].label);
                kill(left[j], SIGKILL);
            }
            if (nleft) proc_wait_gone(left, nleft, 2.0);
        }
        if (items[i].pidfile[0]) unlink(items[i].pidfile);
    }
    free(kids);
    return killed;
}

static int cmp_label(const void *a, const void *b) {
    const stop_item *x = a, *y = b;
    /* "worker cpu2" before "worker cpu10": shorter labels first, then by text */
    size_t lx = strlen(x->label), ly = strlen(y->label);
    if (lx != ly) return lx < ly ? -1 : 1;
    return strcmp(x->label, y->label);
}

int cmd_down(cli_ctx *ctx, int argc, char **argv) {
    double timeout = 10.0;
    const cli_opt opts[] = {
        {"timeout", 't', CLI_NUM, "S", "seconds to wait for each group of processes after "
         "SIGTERM before SIGKILL", "10", &timeout, 0, 3600},
        {NULL, 0, CLI_FLAG, NULL, NULL, NULL, NULL, 0, 0},
    };
    const cli_command cmd = {
        "down", "", NULL,
        "Sends SIGTERM to the workers started by `umdq up` (DIR/workers/*.pid), waits for them, "
        "then does the same for umdqd (DIR/umdqd.pid); what has not stopped in time gets SIGKILL, "
        "with a message. With nothing running it says so and succeeds.",
        opts, 0, 0};
    int nops = 0;
    int rc = cli_args(ctx, &cmd, argc, argv, &nops);
    if (rc >= 0) return rc;

    cli_client *c = NULL;
    stop_item *items = NULL;
    int n = 0;
    char dir[4096];
    rc = cli_connect(ctx, &c);
    if (rc) return rc;
    items = calloc(MAX_WORKERS + 1, sizeof *items);
    if (!items) {
        cli_error(ctx, "out of memory");
        client_destroy(&c);
        return UMDQ_EXIT_RUNTIME;
    }

    /* workers first, so they can report their jobs to a daemon that still listens */
    home_path(ctx, "workers", dir, sizeof dir);
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL && n < MAX_WORKERS) {
            size_t len = strlen(e->d_name);
            if (len < 5 || strcmp(e->d_name + len - 4, ".pid") != 0) continue;
            stop_item *it = &items[n];
            snprintf(it->pidfile, sizeof it->pidfile, "%.3800s/%.255s", dir, e->d_name);
            pid_t pid = 0;
            if (pidfile_read(it->pidfile, &pid) != 0 || !proc_alive(pid) ||
                !proc_is_program(pid, "umdq-worker")) {
                unlink(it->pidfile); /* stale */
                continue;
            }
            it->pid = pid;
            snprintf(it->label, sizeof it->label, "worker %.*s", (int)(len - 4), e->d_name);
            n++;
        }
        closedir(d);
    }
    int nworkers = n;
    qsort(items, (size_t)nworkers, sizeof *items, cmp_label);
    if (nworkers) stop_all(items, nworkers, timeout, 1);

    pid_t dpid = daemon_pid(ctx, c);
    if (dpid) {
        stop_item it;
        memset(&it, 0, sizeof it);
        it.pid = dpid;
        snprintf(it.label, sizeof it.label, "umdqd");
        if (stop_all(&it, 1, timeout, 0) > 0) {
            /* a killed daemon could not remove its state files */
            char path[4096];
            home_path(ctx, "umdqd.json", path, sizeof path);
            unlink(path);
            home_path(ctx, "umdqd.pid", path, sizeof path);
            unlink(path);
        }
    }
    if (!nworkers && !dpid) fprintf(stderr, "nothing running in %s\n", ctx->home);
    free(items);
    client_destroy(&c);
    return UMDQ_EXIT_OK;
}
