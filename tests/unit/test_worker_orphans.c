/* test_worker_orphans.c: nothing of a job outlives its worker. A real umdq-worker process, driven by
 * a ROUTER socket that speaks the daemon's side of docs/protocol.md, runs a job and is killed with
 * SIGKILL: the job's processes (the sh of a command and what sh started, a umd trainer child) are
 * gone within 2 s. A worker started on a workdir whose dead predecessor left a process group
 * running kills that group (and only such groups). Jobs that end leave no process behind: this
 * test is a child subreaper, so anything orphaned below the worker would become its child.
 * umdq-uses: worker umd common */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "jobgroup.h"
#include "t.h"
#include "umd.h"
#include "umdq.h"
#include "util.h"

static char tmp_root[256], workdir[300];
static char worker_bin[1024];
static void *zctx, *router;
static char endpoint[256];
static pid_t worker_pid;
static char worker_rid[256];

static int rm_one(const char *p, const struct stat *s, int f, struct FTW *w) {
    (void)s;
    (void)w;
    return f == FTW_DP ? rmdir(p) : unlink(p);
}

/* ---- a worker and the daemon's side of its socket ----------------------------------------------- */

static pid_t spawn_worker(const char *name) {
    char logpath[512];
    snprintf(logpath, sizeof logpath, "%s/worker.log", tmp_root);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(logpath, "a", stderr);
        (void)f;
        execl(worker_bin, "umdq-worker", "--connect", endpoint, "--cpu", "--name", name, "--workdir", workdir,
              "--grace-ms", "3000", (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The next message of type from the worker within ms (caller deletes), others dropped; NULL if none. */
static cJSON *expect(const char *type, int ms) {
    int64_t end = mono_ms() + ms;
    for (;;) {
        int64_t left = end - mono_ms();
        if (left <= 0) return NULL;
        zmq_pollitem_t it = {.socket = router, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, (long)left) <= 0) continue;
        char rid[256];
        int n = zmq_recv(router, rid, sizeof rid - 1, 0);
        if (n < 0) continue;
        rid[n] = 0;
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, router, 0);
        cJSON *o = cJSON_ParseWithLength(zmq_msg_data(&m), zmq_msg_size(&m));
        zmq_msg_close(&m);
        if (!o) continue;
        snprintf(worker_rid, sizeof worker_rid, "%s", rid);
        const cJSON *t = cJSON_GetObjectItem(o, "t");
        if (cJSON_IsString(t) && strcmp(t->valuestring, type) == 0) return o;
        cJSON_Delete(o);
    }
}

static void send_to_worker(cJSON *msg) {
    char *text = cJSON_PrintUnformatted(msg);
    zmq_send(router, worker_rid, strlen(worker_rid), ZMQ_SNDMORE);
    zmq_send(router, text, strlen(text), 0);
    free(text);
    cJSON_Delete(msg);
}

static cJSON *msg_new(const char *type) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "t", type);
    cJSON_AddNumberToObject(m, "v", 1);
    return m;
}

/* A worker that said hello and was welcomed; its pid, or -1. */
static pid_t welcomed_worker(const char *name) {
    worker_pid = spawn_worker(name);
    cJSON *h = expect("hello", 10000);
    if (!h) return -1;
    cJSON_Delete(h);
    cJSON *m = msg_new("welcome");
    cJSON_AddStringToObject(m, "worker", name);
    cJSON_AddStringToObject(m, "epoch", "0badcafe");
    cJSON_AddNumberToObject(m, "heartbeat_ms", 200);
    cJSON_AddStringToObject(m, "http", "http://127.0.0.1:1");
    cJSON_AddStringToObject(m, "token", "t");
    send_to_worker(m);
    return worker_pid;
}

static cJSON *job_msg(int64_t job, const char *kind, cJSON *config) {
    char lease[33];
    snprintf(lease, sizeof lease, "%032llx", (unsigned long long)job);
    cJSON *m = msg_new("job");
    cJSON_AddNumberToObject(m, "job", (double)job);
    cJSON_AddNumberToObject(m, "attempt", 1);
    cJSON_AddStringToObject(m, "lease", lease);
    cJSON_AddNumberToObject(m, "sweep", 1);
    cJSON_AddStringToObject(m, "kind", kind);
    cJSON_AddItemToObject(m, "config", config);
    cJSON_AddNumberToObject(m, "seed", 1);
    cJSON_AddNumberToObject(m, "stall_timeout", 0);
    return m;
}

static void send_command(int64_t job, const char *command) {
    cJSON *config = cJSON_CreateObject();
    cJSON_AddStringToObject(config, "kind", "command");
    cJSON_AddStringToObject(config, "command", command);
    send_to_worker(job_msg(job, "command", config));
}

static void kill_worker(void) {
    if (worker_pid <= 0) return;
    kill(worker_pid, SIGKILL);
    waitpid(worker_pid, NULL, 0);
    worker_pid = 0;
}

/* ---- processes ---------------------------------------------------------------------------------- */

/* 1 when pid does not run (no such process, or a zombie). */
static int process_gone(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 1;
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

/* The pids (up to max) of running processes whose argv is exactly {"sleep", arg}. */
static int find_sleep(const char *arg, pid_t *out, int max) {
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *e;
    while (d && n < max && (e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        char path[64], cmd[256];
        snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        ssize_t len = read(fd, cmd, sizeof cmd - 1);
        close(fd);
        if (len <= 0) continue;
        cmd[len] = 0;
        if (strcmp(cmd, "sleep") == 0 && (size_t)len == 6 + strlen(arg) + 1 && strcmp(cmd + 6, arg) == 0 &&
            !process_gone((pid_t)pid))
            out[n++] = (pid_t)pid;
    }
    if (d) closedir(d);
    return n;
}

/* Wait up to ms for every pid to be gone; the milliseconds it took, or -1. */
static int64_t wait_gone(const pid_t *pids, int n, int ms) {
    int64_t t0 = mono_ms();
    for (;;) {
        int all = 1;
        for (int i = 0; i < n; i++) all &= process_gone(pids[i]);
        if (all) return mono_ms() - t0;
        if (mono_ms() - t0 > ms) return -1;
        usleep(10000);
    }
}

/* Reap what has ended among our children (the worker's orphans come to us, a subreaper). */
static void reap_all(void) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

/* How many children this process has (zombies included), the worker aside. */
static int stray_children(void) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0) return 0;
    buf[len] = 0;
    int n = 0;
    for (char *s = buf, *end;; s = end) {
        long pid = strtol(s, &end, 10);
        if (end == s) break;
        if (pid == worker_pid) continue;
        n++;
        char sp[64], line[512] = "";
        snprintf(sp, sizeof sp, "/proc/%ld/stat", pid);
        int sfd = open(sp, O_RDONLY);
        if (sfd >= 0) {
            ssize_t k = read(sfd, line, sizeof line - 1);
            close(sfd);
            if (k > 0) line[k] = 0;
        }
        printf("stray child: %s\n", line);
    }
    return n;
}

/* ---- tests -------------------------------------------------------------------------------------- */

/* Wait up to ms for pid, once our child (a subreaper inherits the orphans of its descendants), to
 * end, and reap it; 0 when it did. */
static int reap_within(pid_t pid, int ms) {
    int64_t t0 = mono_ms();
    while (mono_ms() - t0 <= ms) {
        pid_t w = waitpid(pid, NULL, WNOHANG);
        if (w == pid || (w < 0 && errno == ECHILD && process_gone(pid))) return 0;
        usleep(10000);
    }
    return -1;
}

/* `sleep` behind `sh -c` (sh forks it): SIGKILL of the worker, and the sleep is gone within 2 s,
 * the whole process group with it (the child the worker forked included). */
static void orphan_case(const char *name, const char *command, const char *sleep_arg, int64_t job) {
    T_REQUIRE(welcomed_worker(name) > 0);
    send_command(job, command);
    cJSON *s = expect("started", 5000);
    T_REQUIRE(s != NULL);
    pid_t leader = (pid_t)cJSON_GetObjectItem(s, "pid")->valuedouble;
    cJSON_Delete(s);
    pid_t pids[8];
    int n = 0;
    int64_t t0 = mono_ms();
    while ((n = find_sleep(sleep_arg, pids, 8)) == 0 && mono_ms() - t0 < 5000) usleep(10000);
    T_REQUIRE(n == 1);
    usleep(100000);
    kill_worker();
    int64_t took = wait_gone(pids, n, 2000);
    T_CHECK_MSG(took >= 0, "sleep %s (pid %d) still runs 2 s after the worker was killed", sleep_arg, (int)pids[0]);
    if (took < 0) kill(pids[0], SIGKILL);
    T_CHECK_MSG(reap_within(leader, 2000 - (int)(took > 0 ? took : 0)) == 0,
                "the job's process group leader %d still runs", (int)leader);
    /* zombies of the group (sh, the sleep) come to us: reaped until the group is gone (a member
     * killed with the rest may still be on its way out for a moment), within 1 s */
    int64_t t1 = mono_ms();
    int gone;
    while (!(gone = kill(-leader, 0) != 0 && errno == ESRCH) && mono_ms() - t1 < 1000) {
        reap_all();
        usleep(10000);
    }
    T_CHECK_MSG(gone, "process group %d still exists 1 s after its leader was reaped", (int)leader);
}

static void test_worker_orphans_command_killed(void) {
    char arg[32], cmd[128];
    snprintf(arg, sizeof arg, "300.%d1", (int)getpid());
    snprintf(cmd, sizeof cmd, "sleep %s", arg);
    orphan_case("orphan/a", cmd, arg, 1);
}

/* The same for a job that ignores SIGTERM: SIGKILL after the orphan grace. */
static void test_worker_orphans_term_ignored(void) {
    char arg[32], cmd[160];
    snprintf(arg, sizeof arg, "300.%d2", (int)getpid());
    snprintf(cmd, sizeof cmd, "trap '' TERM; sleep %s; echo never", arg);
    orphan_case("orphan/b", cmd, arg, 2);
}

/* A umd job: the trainer runs in the worker's forked child, which dies with the worker. */
static void test_worker_orphans_umd_killed(void) {
    if (!umd_backend_available("cpu")) T_SKIP("the trainer has no CPU backend in this build");
    T_REQUIRE(welcomed_worker("orphan/c") > 0);
    cJSON *config = cJSON_Parse(
        "{\"kind\": \"umd\", \"data\": {\"dataset\": \"synthetic\", \"image_size\": 8, \"train_size\": 32,"
        " \"test_size\": 8}, \"model\": {\"patch\": 4, \"width\": 16, \"depth\": 1, \"dec_depth\": 1,"
        " \"heads\": 2, \"cls_tokens\": 1}, \"train\": {\"steps\": 100000000, \"batch\": 4, \"log_every\": 1000,"
        " \"threads\": 1, \"device\": \"cpu\"}}");
    T_REQUIRE(config != NULL);
    send_to_worker(job_msg(3, "umd", config));
    cJSON *s = expect("started", 5000);
    T_REQUIRE(s != NULL);
    pid_t child = (pid_t)cJSON_GetObjectItem(s, "pid")->valuedouble;
    cJSON_Delete(s);
    T_REQUIRE(child > 0 && !process_gone(child));
    usleep(300000);
    T_REQUIRE(!process_gone(child));
    kill_worker();
    T_CHECK_MSG(reap_within(child, 2000) == 0, "the umd child %d still runs 2 s after the worker was killed",
                (int)child);
    reap_all();
}

/* A process group in a new process group of this session, running `sleep arg`; its pid. */
static pid_t start_group(const char *arg, int new_session) {
    pid_t p = fork();
    if (p == 0) {
        if (new_session) setsid();
        else setpgid(0, 0);
        execlp("sleep", "sleep", arg, (char *)NULL);
        _exit(127);
    }
    if (!new_session) setpgid(p, p); /* a group leader could not setsid */
    return p;
}

static void write_record(const char *name, pid_t wpid, unsigned long long wstart, pid_t pgid, pid_t sid) {
    char path[600], line[JOBGROUP_RECORD_LEN + 1], err[256];
    int n = snprintf(line, sizeof line, "umdq-group 1 worker %d %llu group %d %d job 7 1", (int)wpid, wstart,
                     (int)pgid, (int)sid);
    memset(line + n, ' ', (size_t)(JOBGROUP_RECORD_LEN - 1 - n));
    line[JOBGROUP_RECORD_LEN - 1] = '\n';
    line[JOBGROUP_RECORD_LEN] = 0;
    snprintf(path, sizeof path, "%s/%s", workdir, name);
    T_REQUIRE(write_file_atomic(path, line, JOBGROUP_RECORD_LEN, 0644, err, sizeof err) == 0);
}

static int file_exists(const char *name) {
    char path[600];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", workdir, name);
    return stat(path, &st) == 0;
}

/* A worker starting on a workdir kills the group a dead predecessor recorded, and leaves alone a
 * live writer's group and a recorded pgid that now names a group of another session. */
static void test_worker_orphans_sweep(void) {
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    char a1[32], a2[32], a3[32];
    snprintf(a1, sizeof a1, "300.%d3", (int)getpid());
    snprintf(a2, sizeof a2, "300.%d4", (int)getpid());
    snprintf(a3, sizeof a3, "300.%d5", (int)getpid());
    pid_t left = start_group(a1, 0), live = start_group(a2, 0), other = start_group(a3, 1);
    T_REQUIRE(left > 0 && live > 0 && other > 0);
    usleep(50000);
    unsigned long long self_start = 0;
    T_REQUIRE(jobgroup_proc_stat(getpid(), NULL, &self_start, NULL, NULL) == 0);
    pid_t sid = getsid(0);
    write_record(".umdq-group.1000001", dead, 12345, left, sid);      /* a dead worker's group */
    write_record(".umdq-group.1000002", getpid(), self_start, live, sid); /* a live writer's */
    write_record(".umdq-group.1000003", dead, 12345, other, sid);     /* another session now */
    T_REQUIRE(welcomed_worker("orphan/d") > 0);
    int64_t took = wait_gone(&left, 1, 2000);
    T_CHECK_MSG(took >= 0, "the dead worker's group %d still runs", (int)left);
    T_CHECK(!file_exists(".umdq-group.1000001"));
    T_CHECK(!process_gone(live));
    T_CHECK(file_exists(".umdq-group.1000002"));
    T_CHECK(!process_gone(other));
    usleep(300000); /* the sweep has run: nothing else goes */
    T_CHECK(!process_gone(live));
    T_CHECK(!process_gone(other));
    /* the worker's own record names no attempt while it is idle */
    char name[64];
    snprintf(name, sizeof name, ".umdq-group.%d", (int)worker_pid);
    T_CHECK(file_exists(name));
    kill(worker_pid, SIGTERM);
    waitpid(worker_pid, NULL, 0);
    worker_pid = 0;
    T_CHECK_MSG(!file_exists(name), "a worker that stops cleanly removes its record");
    kill(live, SIGKILL);
    kill(other, SIGKILL);
    kill(left, SIGKILL);
    waitpid(live, NULL, 0);
    waitpid(other, NULL, 0);
    waitpid(left, NULL, 0);
    char path[600];
    snprintf(path, sizeof path, "%s/.umdq-group.1000002", workdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/.umdq-group.1000003", workdir);
    unlink(path);
}

/* Jobs that end (one leaving a background process) leave nothing: no zombie, no stray process, no
 * scratch directory. */
static void test_worker_orphans_none_left(void) {
    T_REQUIRE(welcomed_worker("orphan/e") > 0);
    for (int j = 10; j < 16; j++) {
        send_command(j, j == 12 ? "sleep 100 & echo bye" : "true");
        cJSON *f = expect("finished", 10000);
        T_REQUIRE(f != NULL);
        const cJSON *st = cJSON_GetObjectItem(f, "status");
        T_CHECK(cJSON_IsString(st) && strcmp(st->valuestring, "succeeded") == 0);
        cJSON_Delete(f);
        cJSON *ack = msg_new("ack");
        cJSON_AddNumberToObject(ack, "job", j);
        cJSON_AddNumberToObject(ack, "attempt", 1);
        send_to_worker(ack);
    }
    usleep(200000);
    T_EQ_INT(stray_children(), 0);
    DIR *d = opendir(workdir);
    int scratch = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "job-1", 5) != 0 || strlen(e->d_name) != 8) continue; /* job-1x-1 */
        printf("left: %s\n", e->d_name);
        scratch++;
    }
    if (d) closedir(d);
    T_EQ_INT(scratch, 0);
    kill(worker_pid, SIGTERM);
    waitpid(worker_pid, NULL, 0);
    worker_pid = 0;
    /* a worker that stops cleanly leaves no spare scratch directory and no record */
    d = opendir(workdir);
    int left = 0;
    while (d && (e = readdir(d)) != NULL) left += e->d_name[0] == '.' && e->d_name[1] && strcmp(e->d_name, "..") != 0;
    if (d) closedir(d);
    T_EQ_INT(left, 0);
}

int main(void) {
    const char *build = getenv("UMDQ_BUILD");
    snprintf(worker_bin, sizeof worker_bin, "%s/bin/umdq-worker", build ? build : "build");
    if (access(worker_bin, X_OK) != 0) {
        printf("SKIP test_worker_orphans: %s is not built\n", worker_bin);
        return 0;
    }
    snprintf(tmp_root, sizeof tmp_root, "%s/umdq-worker-orphans-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp_root)) {
        printf("FAIL test_worker_orphans: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    snprintf(workdir, sizeof workdir, "%s/work", tmp_root);
    mkdir_p(workdir, 0755);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    zctx = zmq_ctx_new();
    router = zmq_socket(zctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(router, "tcp://127.0.0.1:*") != 0) {
        printf("FAIL test_worker_orphans: bind: %s\n", zmq_strerror(errno));
        return 1;
    }
    size_t n = sizeof endpoint;
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, endpoint, &n);
    T_RUN(test_worker_orphans_command_killed);
    kill_worker();
    T_RUN(test_worker_orphans_term_ignored);
    kill_worker();
    T_RUN(test_worker_orphans_umd_killed);
    kill_worker();
    T_RUN(test_worker_orphans_sweep);
    kill_worker();
    T_RUN(test_worker_orphans_none_left);
    kill_worker();
    if (t_nfail) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "tail -n 30 %s/worker.log", tmp_root);
        if (system(cmd) != 0) printf("(no worker log)\n");
    }
    /* whatever a failed test left (its descendants are our children, a subreaper's) */
    for (int round = 0; round < 3; round++) {
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
        int fd = open(path, O_RDONLY);
        ssize_t len = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0) close(fd);
        if (len <= 0) break;
        buf[len] = 0;
        for (char *p = buf, *end;; p = end) {
            long pid = strtol(p, &end, 10);
            if (end == p) break;
            kill((pid_t)pid, SIGKILL);
        }
        usleep(50000);
        reap_all();
    }
    zmq_close(router);
    zmq_ctx_term(zctx);
    nftw(tmp_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return t_done();
}
