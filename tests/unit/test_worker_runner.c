/* test_worker_runner.c: the attempt runner on its own, with real child processes: report lines on
 * fd 3 and stdout, log bytes and offsets, the stderr tail, exit codes, signals, cancel of a child
 * that ignores SIGTERM, a umd child whose run fails, visible-GPU parsing.
 * umdq-uses: worker umd common */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices.h"
#include "runner.h"
#include "t.h"
#include "umd.h"
#include "umdq.h"
#include "util.h"

static char tmp_root[256];

static int rm_one(const char *p, const struct stat *s, int f, struct FTW *w) {
    (void)s;
    (void)w;
    return f == FTW_DP ? rmdir(p) : unlink(p);
}

static void tmp_cleanup(void) {
    if (tmp_root[0]) nftw(tmp_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* What a finished runner produced. */
typedef struct {
    cJSON *points;      /* [[key, step, value], ...] in order taken */
    cJSON *results;     /* merged takes */
    strbuf log;
    int offsets_ok;     /* every take started where the previous ended */
    int64_t elapsed_ms;
} collected;

static void collected_free(collected *c) {
    cJSON_Delete(c->points);
    cJSON_Delete(c->results);
    strbuf_free(&c->log);
}

static void collect_some(runner *r, collected *c) {
    cJSON *p;
    while ((p = runner_take_points(r, 1000)) != NULL) {
        cJSON *e;
        while ((e = cJSON_DetachItemFromArray(p, 0)) != NULL) cJSON_AddItemToArray(c->points, e);
        cJSON_Delete(p);
    }
    cJSON *res = runner_take_results(r);
    if (res) {
        cJSON *e;
        while ((e = cJSON_DetachItemFromArray(res, 0)) != NULL) cJSON_AddItemToObject(c->results, e->string, e);
        cJSON_Delete(res);
    }
    for (;;) {
        int64_t off;
        char *data;
        size_t len;
        if (runner_take_log(r, 4096, &off, &data, &len) != 0 || len == 0) break;
        if (off != (int64_t)c->log.len) c->offsets_ok = 0;
        if (strlen(data) != len) c->offsets_ok = 0;
        strbuf_append(&c->log, data, len);
        free(data);
    }
}

/* Drive r until it is done (or timeout_ms passes: then returns nonzero). */
static int drive(runner *r, collected *c, int timeout_ms) {
    int64_t t0 = mono_ms();
    c->points = cJSON_CreateArray();
    c->results = cJSON_CreateObject();
    strbuf_init(&c->log);
    c->offsets_ok = 1;
    while (!runner_done(r)) {
        if (mono_ms() - t0 > timeout_ms) return -1;
        int fds[RUNNER_MAX_FDS];
        struct pollfd pfd[RUNNER_MAX_FDS];
        int n = runner_fds(r, fds);
        for (int i = 0; i < n; i++) pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        int64_t now = mono_ms(), d = runner_deadline_ms(r);
        int wait = d < 0 ? 50 : (int)(d > now ? d - now : 0);
        if (wait > 50) wait = 50;
        poll(pfd, (nfds_t)n, wait);
        runner_pump(r, mono_ms());
        collect_some(r, c);
    }
    collect_some(r, c);
    c->elapsed_ms = mono_ms() - t0;
    return 0;
}

static cJSON *parse_or_null(const char *s) { return cJSON_Parse(s); }

static int start_grace_ms;          /* runner_spec.grace_ms of start_command */
static const char *start_cuda;      /* runner_spec.cuda_devices of start_command */

static runner *start_command(const char *cmd, const char *scratch_name, cJSON **config_out) {
    cJSON *config = cJSON_CreateObject();
    cJSON_AddStringToObject(config, "kind", "command");
    cJSON_AddStringToObject(config, "command", cmd);
    cJSON *params = cJSON_AddObjectToObject(config, "params");
    cJSON_AddNumberToObject(params, "x", 2.5);
    cJSON_AddStringToObject(params, "word", "it's");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, scratch_name);
    runner_spec spec = {.kind = "command", .config = config, .job = 17, .attempt = 2, .sweep = 5,
                        .seed = 42, .scratch = dir, .cuda_devices = start_cuda, .grace_ms = start_grace_ms};
    runner *r = NULL;
    char err[512] = "";
    int rc = runner_new(&spec, &r, err, sizeof err);
    if (rc != 0) fprintf(stderr, "runner_new: %s\n", err);
    if (config_out) *config_out = config;
    else cJSON_Delete(config);
    return r;
}

static int point_is(const cJSON *p, const char *key, int64_t step, double value) {
    return cJSON_GetArraySize(p) == 3 && strcmp(cJSON_GetArrayItem(p, 0)->valuestring, key) == 0 &&
           (int64_t)cJSON_GetArrayItem(p, 1)->valuedouble == step &&
           fabs(cJSON_GetArrayItem(p, 2)->valuedouble - value) < 1e-12;
}

static int has_point(const cJSON *points, const char *key, int64_t step, double value) {
    const cJSON *p;
    cJSON_ArrayForEach(p, points) if (point_is(p, key, step, value)) return 1;
    return 0;
}

/* Report lines on fd 3 and stdout, plain text on both streams, the job's environment, the
 * rendered command and config.json. */
static void test_worker_runner_reports(void) {
    /* report lines hold braces, which a command template writes doubled */
    const char *lines =
        "echo '{\"step\": 1, \"loss\": 0.5, \"lr\": 0.1, \"note\": \"text is not a point\"}' >&3; "
        "echo '{\"umdq\": \"metric\", \"step\": 2, \"loss\": 0.25}' >&3; "
        "echo '{\"acc\": 0.9}' >&3; "
        "echo '{\"umdq\": \"result\", \"acc\": 0.5}' >&3; "
        "echo 'not json at all' >&3; "
        "echo '{\"umdq\": \"bogus\", \"step\": 1}' >&3; "
        "echo '{\"umdq\": \"metric\", \"loss\": 1}' >&3; "
        "echo; "
        "echo 'plain stdout line'; "
        "echo '{\"umdq\": \"metric\", \"step\": 3, \"loss\": 0.125}'; "
        "echo '{\"umdq\": \"result\", \"net\": \"cls-v1\", \"top5\": 0.1}'; "
        "echo '{\"umdq\": broken'; "
        "echo 'a line on stderr' >&2; ";
    const char *rest =
        "echo \"env $UMDQ_JOB_ID $UMDQ_ATTEMPT $UMDQ_SEED $UMDQ_SWEEP_ID $UMDQ_METRICS_FD\"; "
        "echo args x={params.x} w={params.word} s={seed} j={job} a={attempt} sw={sweep}; "
        "test \"$(pwd -P)\" = \"$(cd \"$UMDQ_WORKDIR\" && pwd -P)\" && echo cwd-is-workdir; "
        "test \"$UMDQ_CONFIG\" = \"$UMDQ_WORKDIR/config.json\" && echo config-path-ok; "
        "cp \"$UMDQ_CONFIG\" ../seen-config.json; "
        "echo '{{\"umdq\": \"progress\", \"step\": 7, \"total\": 10}}' >&3";
    strbuf b;
    strbuf_init(&b);
    for (const char *p = lines; *p; p++) {
        if (*p == '{' || *p == '}') strbuf_append(&b, p, 1);
        strbuf_append(&b, p, 1);
    }
    strbuf_puts(&b, rest);
    char *cmd = strbuf_steal(&b);
    T_REQUIRE(cmd != NULL);
    setenv("UMDQ_JOB_ID", "999", 1); /* the worker's own environment never wins over the job's */
    runner *r = start_command(cmd, "job-17-2", NULL);
    unsetenv("UMDQ_JOB_ID");
    T_REQUIRE(r != NULL);
    collected c;
    int rc = drive(r, &c, 20000);
    T_REQUIRE(rc == 0);
    const runner_exit_info *x = runner_exit(r);
    T_EQ_INT(x->exit_code, 0);
    T_EQ_INT(x->signal, 0);
    T_EQ_INT(x->stopped, 0);

    T_EQ_INT(cJSON_GetArraySize(c.points), 4);
    T_CHECK(has_point(c.points, "loss", 1, 0.5));
    T_CHECK(has_point(c.points, "lr", 1, 0.1));
    T_CHECK(has_point(c.points, "loss", 2, 0.25));
    T_CHECK(has_point(c.points, "loss", 3, 0.125));
    /* the first value of a result key wins, as in the daemon */
    T_NEAR(cJSON_GetObjectItem(c.results, "acc")->valuedouble, 0.9, 0, 0);
    T_EQ_STR(cJSON_GetObjectItem(c.results, "net")->valuestring, "cls-v1");
    T_NEAR(cJSON_GetObjectItem(c.results, "top5")->valuedouble, 0.1, 0, 0);
    T_EQ_INT(cJSON_GetArraySize(c.results), 3);
    T_EQ_INT(cJSON_GetArraySize((cJSON *)runner_results(r)), 3);
    T_EQ_INT(runner_step(r), 7);

    T_CHECK(c.offsets_ok);
    T_CONTAINS(c.log.data, "plain stdout line\n");
    T_CONTAINS(c.log.data, "a line on stderr\n");
    /* report lines on stdout stay in the log; those on fd 3 do not */
    T_CONTAINS(c.log.data, "{\"umdq\": \"metric\", \"step\": 3, \"loss\": 0.125}\n");
    T_CHECK(strstr(c.log.data, "{\"acc\": 0.9}") == NULL);
    T_CONTAINS(c.log.data, "malformed report line (fd 3: not JSON");
    T_CONTAINS(c.log.data, "\"umdq\" must be \"metric\", \"result\" or \"progress\"");
    T_CONTAINS(c.log.data, "metric line needs an integer \"step\"");
    T_CONTAINS(c.log.data, "malformed report line (stdout: not JSON");
    T_CONTAINS(c.log.data, "env 17 2 42 5 3\n");
    T_CONTAINS(c.log.data, "args x=2.5 w=it's s=42 j=17 a=2 sw=5\n");
    T_CONTAINS(c.log.data, "cwd-is-workdir\n");
    T_CONTAINS(c.log.data, "config-path-ok\n");

    char path[600];
    snprintf(path, sizeof path, "%s/seen-config.json", tmp_root);
    char *text = NULL;
    size_t len = 0;
    char err[256];
    T_REQUIRE(read_file(path, &text, &len, 1 << 20, err, sizeof err) == 0);
    cJSON *seen = parse_or_null(text);
    free(text);
    T_REQUIRE(seen != NULL);
    T_EQ_INT((int64_t)cJSON_GetObjectItem(seen, "seed")->valuedouble, 42);
    T_EQ_STR(cJSON_GetObjectItem(seen, "command")->valuestring, cmd);
    cJSON_Delete(seen);
    free(cmd);
    collected_free(&c);
    runner_destroy(&r);
    T_CHECK(r == NULL);
}

/* The job's environment: the worker's own, with the job's variables replacing any inherited ones
 * of the same names (each once); CUDA_VISIBLE_DEVICES inherited unless the spec sets it. */
static void test_worker_runner_environment(void) {
    setenv("CUDA_VISIBLE_DEVICES", "7", 1);
    setenv("UMDQ_SEED", "999", 1);
    setenv("UMDQ_TEST_OTHER", "kept", 1);
    const char *cmd = "echo \"$CUDA_VISIBLE_DEVICES $UMDQ_SEED $UMDQ_TEST_OTHER\"; env | grep -c '^UMDQ_SEED='; "
                      "env | grep -c '^CUDA_VISIBLE_DEVICES='";
    runner *r = start_command(cmd, "job-19-1", NULL);
    T_REQUIRE(r != NULL);
    collected c;
    T_REQUIRE(drive(r, &c, 10000) == 0);
    T_EQ_STR(c.log.data, "7 42 kept\n1\n1\n");
    collected_free(&c);
    runner_destroy(&r);
    start_cuda = "3";
    r = start_command(cmd, "job-19-2", NULL);
    start_cuda = NULL;
    T_REQUIRE(r != NULL);
    T_REQUIRE(drive(r, &c, 10000) == 0);
    T_EQ_STR(c.log.data, "3 42 kept\n1\n1\n");
    collected_free(&c);
    runner_destroy(&r);
    unsetenv("CUDA_VISIBLE_DEVICES");
    unsetenv("UMDQ_SEED");
    unsetenv("UMDQ_TEST_OTHER");
}

/* 200 KiB+ on stderr: the log has every byte in order, the tail is exactly the last 64 KiB. */
static void test_worker_runner_stderr_tail(void) {
    runner *r = start_command("seq 1 40000 >&2; exit 3", "job-1-1", NULL);
    T_REQUIRE(r != NULL);
    collected c;
    T_REQUIRE(drive(r, &c, 20000) == 0);
    strbuf want;
    strbuf_init(&want);
    for (int i = 1; i <= 40000; i++) strbuf_printf(&want, "%d\n", i);
    T_REQUIRE(want.len > 200 * 1024);
    T_EQ_INT(runner_exit(r)->exit_code, 3);
    T_EQ_INT(runner_exit(r)->signal, 0);
    T_CHECK(c.offsets_ok);
    T_EQ_INT(c.log.len, want.len);
    T_CHECK(c.log.len == want.len && memcmp(c.log.data, want.data, want.len) == 0);
    size_t tlen = 0;
    char *tail = runner_stderr_tail(r, &tlen);
    T_REQUIRE(tail != NULL);
    T_EQ_INT(tlen, RUNNER_TAIL);
    T_CHECK(memcmp(tail, want.data + want.len - RUNNER_TAIL, RUNNER_TAIL) == 0);
    free(tail);
    strbuf_free(&want);
    collected_free(&c);
    runner_destroy(&r);
}

static void test_worker_runner_exit_and_signal(void) {
    runner *r = start_command("echo oops >&2; exit 5", "job-2-1", NULL);
    T_REQUIRE(r != NULL);
    collected c;
    T_REQUIRE(drive(r, &c, 20000) == 0);
    T_EQ_INT(runner_exit(r)->exit_code, 5);
    size_t tlen;
    char *tail = runner_stderr_tail(r, &tlen);
    T_EQ_STR(tail, "oops\n");
    free(tail);
    collected_free(&c);
    runner_destroy(&r);

    r = start_command("echo before; kill -SEGV $$; echo after", "job-3-1", NULL);
    T_REQUIRE(r != NULL);
    T_REQUIRE(drive(r, &c, 20000) == 0);
    T_EQ_INT(runner_exit(r)->exit_code, -1);
    T_EQ_INT(runner_exit(r)->signal, SIGSEGV);
    T_CONTAINS(c.log.data, "before\n");
    T_CHECK(strstr(c.log.data, "after") == NULL);
    collected_free(&c);
    runner_destroy(&r);

    /* a command that cannot be found: the shell's status 127 and its message */
    r = start_command("/nonexistent/program-umdq", "job-4-1", NULL);
    T_REQUIRE(r != NULL);
    T_REQUIRE(drive(r, &c, 20000) == 0);
    T_EQ_INT(runner_exit(r)->exit_code, 127);
    T_CONTAINS(c.log.data, "/nonexistent/program-umdq");
    collected_free(&c);
    runner_destroy(&r);
}

/* How many children this process has (running or not reaped). */
static int t_children(void) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    int count = 0;
    for (char *t = strtok(buf, " \n"); t; t = strtok(NULL, " \n")) count++;
    return count;
}

static int process_gone(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' && (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

/* A child that ignores SIGTERM, with a grandchild: both are gone within grace + 1 s. */
static void test_worker_runner_cancel(void) {
    runner *r = start_command("trap '' TERM; sleep 100 & echo $! > \"$UMDQ_WORKDIR/gc.pid\"; "
                              "echo started; sleep 100", "job-5-1", NULL);
    T_REQUIRE(r != NULL);
    char pidfile[600];
    snprintf(pidfile, sizeof pidfile, "%s/job-5-1/gc.pid", tmp_root);
    pid_t gc = 0;
    int64_t t0 = mono_ms();
    while (gc <= 0 && mono_ms() - t0 < 10000) {
        runner_pump(r, mono_ms());
        char *text = NULL;
        size_t len;
        char err[128];
        if (read_file(pidfile, &text, &len, 64, err, sizeof err) == 0) gc = atoi(text);
        free(text);
        if (gc <= 0) usleep(20000);
    }
    T_REQUIRE(gc > 0);
    usleep(100000); /* let the shell reach its foreground sleep */
    pid_t leader = runner_pid(r);
    int grace = 500;
    int64_t stop_at = mono_ms();
    runner_stop(r, grace, stop_at);
    collected c;
    T_REQUIRE(drive(r, &c, 10000) == 0);
    int64_t took = mono_ms() - stop_at;
    T_CHECK_MSG(took <= grace + 1000, "stopping took %lld ms", (long long)took);
    T_EQ_INT(runner_exit(r)->stopped, 1);
    T_EQ_INT(runner_exit(r)->signal, SIGKILL);
    T_EQ_INT(runner_exit(r)->exit_code, -1);
    /* the grandchild may linger briefly as a zombie of init; it must not be running */
    int64_t t1 = mono_ms();
    while (!process_gone(gc) && mono_ms() - t1 < 1000) usleep(10000);
    T_CHECK_MSG(process_gone(gc), "grandchild %d still runs", (int)gc);
    T_CHECK(process_gone(leader));
    T_CONTAINS(c.log.data, "started\n");
    collected_free(&c);
    runner_destroy(&r);
}

/* A child that exits leaving a background process holding its pipes: the attempt ends (drive's
 * 10 s limit, not the 100 s sleep) and the leftover process is killed with it. */
static void test_worker_runner_leftovers(void) {
    runner *r = start_command("sleep 100 & echo $! > \"$UMDQ_WORKDIR/bg.pid\"; echo bye", "job-13-1", NULL);
    T_REQUIRE(r != NULL);
    collected c;
    T_REQUIRE(drive(r, &c, 10000) == 0);
    T_EQ_INT(runner_exit(r)->exit_code, 0);
    T_EQ_INT(runner_exit(r)->stopped, 0);
    T_EQ_STR(c.log.data, "bye\n");
    char pidfile[600], *text = NULL, err[128];
    size_t len;
    snprintf(pidfile, sizeof pidfile, "%s/job-13-1/bg.pid", tmp_root);
    T_REQUIRE(read_file(pidfile, &text, &len, 64, err, sizeof err) == 0);
    pid_t bg = atoi(text);
    free(text);
    T_REQUIRE(bg > 0);
    int64_t t0 = mono_ms();
    while (!process_gone(bg) && mono_ms() - t0 < 1000) usleep(10000);
    T_CHECK_MSG(process_gone(bg), "background process %d still runs", (int)bg);
    collected_free(&c);
    runner_destroy(&r);
}

/* Drive r until its log holds want (or timeout_ms): 0 when it does. The log so far lands in c. */
static int drive_until_log(runner *r, collected *c, const char *want, int timeout_ms) {
    memset(c, 0, sizeof *c);
    c->points = cJSON_CreateArray();
    c->results = cJSON_CreateObject();
    strbuf_init(&c->log);
    c->offsets_ok = 1;
    int64_t t0 = mono_ms();
    while ((!c->log.data || !strstr(c->log.data, want)) && mono_ms() - t0 < timeout_ms) {
        usleep(10000);
        runner_pump(r, mono_ms());
        collect_some(r, c);
    }
    return c->log.data && strstr(c->log.data, want) ? 0 : -1;
}

/* runner_stop's SIGTERM reaches each process of the job once, through the supervisor. */
static void test_worker_runner_term_once(void) {
    runner *r = start_command("trap 'n=$((n+1)); echo term$n' TERM; n=0; echo ready; "
                              "while [ $n = 0 ]; do sleep 0.05; done; sleep 0.3; echo total$n", "job-15-1", NULL);
    T_REQUIRE(r != NULL);
    collected c;
    T_REQUIRE(drive_until_log(r, &c, "ready", 10000) == 0);
    collected_free(&c);
    runner_stop(r, 5000, mono_ms());
    T_REQUIRE(drive(r, &c, 10000) == 0);
    T_EQ_INT(runner_exit(r)->exit_code, 0);
    T_CONTAINS(c.log.data, "term1\n");
    T_CONTAINS(c.log.data, "total1\n");
    T_CHECK(strstr(c.log.data, "term2") == NULL);
    collected_free(&c);
    runner_destroy(&r);
}

/* A SIGTERM sent to the supervisor by someone else: passed on to the group; the job ends killed by
 * SIGTERM as sh was; a job that ignores it is SIGKILLed after the spec's grace. */
static void test_worker_runner_supervisor_term(void) {
    runner *r = start_command("echo ready; sleep 100; echo after", "job-16-1", NULL);
    T_REQUIRE(r != NULL);
    collected c;
    T_REQUIRE(drive_until_log(r, &c, "ready", 10000) == 0);
    collected_free(&c);
    usleep(50000); /* let sh reach its sleep */
    kill(runner_pid(r), SIGTERM);
    T_REQUIRE(drive(r, &c, 10000) == 0);
    T_EQ_INT(runner_exit(r)->signal, SIGTERM);
    T_EQ_INT(runner_exit(r)->exit_code, -1);
    T_EQ_INT(runner_exit(r)->stopped, 0);
    T_CHECK(strstr(c.log.data, "after") == NULL);
    collected_free(&c);
    runner_destroy(&r);

    start_grace_ms = 300;
    r = start_command("trap '' TERM; echo ready; sleep 100", "job-16-2", NULL);
    start_grace_ms = 0;
    T_REQUIRE(r != NULL);
    T_REQUIRE(drive_until_log(r, &c, "ready", 10000) == 0);
    collected_free(&c);
    usleep(50000);
    int64_t t0 = mono_ms();
    kill(runner_pid(r), SIGTERM);
    T_REQUIRE(drive(r, &c, 10000) == 0);
    int64_t took = mono_ms() - t0;
    T_EQ_INT(runner_exit(r)->signal, SIGKILL);
    T_CHECK_MSG(took >= 250 && took < 2000, "the group ended after %lld ms (grace 300 ms)", (long long)took);
    collected_free(&c);
    runner_destroy(&r);
}

/* What sh leaves behind outside its process group (setsid) is killed by the supervisor when sh
 * ends; the attempt ends without waiting for it. */
static void test_worker_runner_setsid_leftover(void) {
    runner *r = start_command("setsid sleep 100 </dev/null >/dev/null 2>&1 & echo $! > \"$UMDQ_WORKDIR/s.pid\"; "
                              "sleep 0.2; echo bye", "job-18-1", NULL);
    T_REQUIRE(r != NULL);
    collected c;
    T_REQUIRE(drive(r, &c, 10000) == 0);
    T_EQ_INT(runner_exit(r)->exit_code, 0);
    char pidfile[600], *text = NULL, err[128];
    size_t len;
    snprintf(pidfile, sizeof pidfile, "%s/job-18-1/s.pid", tmp_root);
    T_REQUIRE(read_file(pidfile, &text, &len, 64, err, sizeof err) == 0);
    pid_t p = atoi(text);
    free(text);
    T_REQUIRE(p > 0);
    int64_t t0 = mono_ms();
    while (!process_gone(p) && mono_ms() - t0 < 1000) usleep(10000);
    T_CHECK_MSG(process_gone(p), "the setsid process %d still runs", (int)p);
    collected_free(&c);
    runner_destroy(&r);
}

/* A child that exits on SIGTERM within the grace is not SIGKILLed. */
static void test_worker_runner_cancel_graceful(void) {
    runner *r = start_command("trap 'echo got-term; exit 0' TERM; echo ready; "
                              "while :; do sleep 0.05; done", "job-6-1", NULL);
    T_REQUIRE(r != NULL);
    collected c = {0};
    c.points = cJSON_CreateArray();
    c.results = cJSON_CreateObject();
    strbuf_init(&c.log);
    c.offsets_ok = 1;
    int64_t t0 = mono_ms();
    while ((!c.log.data || !strstr(c.log.data, "ready")) && mono_ms() - t0 < 10000) {
        usleep(20000);
        runner_pump(r, mono_ms());
        collect_some(r, &c);
    }
    T_REQUIRE(c.log.data && strstr(c.log.data, "ready"));
    collected_free(&c);
    runner_stop(r, 5000, mono_ms());
    T_REQUIRE(drive(r, &c, 10000) == 0);
    T_EQ_INT(runner_exit(r)->stopped, 1);
    T_EQ_INT(runner_exit(r)->exit_code, 0);
    T_EQ_INT(runner_exit(r)->signal, 0);
    T_CONTAINS(c.log.data, "got-term");
    collected_free(&c);
    runner_destroy(&r);
}

/* A umd child whose run fails comes back as exit 1 with the trainer's message on stderr. */
static void test_worker_runner_umd_failure(void) {
    /* an invalid config: refused by the placeholder trainer and by the real one alike */
    cJSON *config = cJSON_Parse("{\"kind\": \"umd\", \"model\": {\"width\": -5}, \"train\": {\"steps\": 1}}");
    T_REQUIRE(config != NULL);
    char want[1024] = "";
    cJSON *with_seed = cJSON_Duplicate(config, 1);
    cJSON_AddNumberToObject(with_seed, "seed", 3);
    umd_events ev;
    memset(&ev, 0, sizeof ev);
    int want_rc = umd_run(with_seed, &ev, want, sizeof want);
    cJSON_Delete(with_seed);
    T_REQUIRE(want_rc != 0 && want[0]);

    char dir[512];
    snprintf(dir, sizeof dir, "%s/job-9-1", tmp_root);
    runner_spec spec = {.kind = "umd", .config = config, .job = 9, .attempt = 1, .sweep = 1, .seed = 3,
                        .scratch = dir};
    runner *r = NULL;
    char err[512];
    T_REQUIRE(runner_new(&spec, &r, err, sizeof err) == 0);
    collected c;
    T_REQUIRE(drive(r, &c, 30000) == 0);
    T_EQ_INT(runner_exit(r)->exit_code, 1);
    T_EQ_INT(runner_exit(r)->signal, 0);
    size_t tlen;
    char *tail = runner_stderr_tail(r, &tlen);
    T_CONTAINS(tail, want);
    if (want_rc == UMDQ_EUNSUPPORTED) T_CONTAINS(tail, "not available");
    free(tail);
    collected_free(&c);
    runner_destroy(&r);
    cJSON_Delete(config);
}

/* A umd child that trains (a tiny model on synthetic data): the trainer's events arrive as curve
 * points, progress steps and results, and the run exits 0. Skipped while the trainer lacks the
 * CPU backend. */
static void test_worker_runner_umd_trains(void) {
    if (!umd_backend_available("cpu")) T_SKIP("the trainer has no CPU backend in this build");
    cJSON *config = cJSON_Parse(
        "{\"kind\": \"umd\", \"data\": {\"dataset\": \"synthetic\", \"image_size\": 8, \"train_size\": 32,"
        " \"test_size\": 8}, \"model\": {\"patch\": 4, \"width\": 16, \"depth\": 1, \"dec_depth\": 1,"
        " \"heads\": 2, \"cls_tokens\": 1}, \"train\": {\"steps\": 4, \"batch\": 4, \"log_every\": 2,"
        " \"threads\": 1, \"device\": \"cpu\"}}");
    T_REQUIRE(config != NULL);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/job-14-1", tmp_root);
    runner_spec spec = {.kind = "umd", .config = config, .job = 14, .attempt = 1, .sweep = 1, .seed = 5,
                        .scratch = dir};
    runner *r = NULL;
    char err[512];
    T_REQUIRE(runner_new(&spec, &r, err, sizeof err) == 0);
    collected c;
    T_REQUIRE(drive(r, &c, 120000) == 0);
    size_t tlen;
    char *tail = runner_stderr_tail(r, &tlen);
    T_CHECK_MSG(runner_exit(r)->exit_code == 0, "exit %d: %s", runner_exit(r)->exit_code, tail);
    free(tail);
    T_EQ_INT(runner_exit(r)->signal, 0);
    T_EQ_INT(runner_step(r), 4);
    int loss_points = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, c.points) {
        T_CHECK(cJSON_GetArraySize(p) == 3 && isfinite(cJSON_GetArrayItem(p, 2)->valuedouble));
        if (strcmp(cJSON_GetArrayItem(p, 0)->valuestring, "loss") == 0) loss_points++;
    }
    T_CHECK_MSG(loss_points >= 1, "%d loss points", loss_points);
    T_CHECK(cJSON_GetArraySize(c.results) >= 1);
    T_CONTAINS(c.log.data, "step 4/4");
    collected_free(&c);
    runner_destroy(&r);
    cJSON_Delete(config);
}

static void test_worker_runner_bad_start(void) {
    cJSON *config = cJSON_Parse("{\"kind\": \"command\", \"command\": \"echo {no.such.key}\"}");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/job-10-1", tmp_root);
    runner_spec spec = {.kind = "command", .config = config, .job = 10, .attempt = 1, .scratch = dir};
    runner *r = NULL;
    char err[512] = "";
    T_EQ_INT(runner_new(&spec, &r, err, sizeof err), UMDQ_EINVAL);
    T_CHECK(r == NULL);
    T_CONTAINS(err, "no.such.key");
    spec.kind = "frobnicate";
    T_EQ_INT(runner_new(&spec, &r, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "frobnicate");
    cJSON_Delete(config);
}

/* Bytes that are not UTF-8 become '?' one for one; characters cut by a read are kept whole. */
static void test_worker_runner_utf8(void) {
    char s[] = "ok \xc3\xa9 \xff\xfe x \xe2\x82 \xed\xa0\x80 \xf0\x9f\x98\x80";
    size_t n = sizeof s - 1;
    runner_utf8_sanitize(s, n);
    T_EQ_STR(s, "ok \xc3\xa9 ?? x ?? ??? \xf0\x9f\x98\x80");

    runner *r = start_command("printf 'a\\303\\251b\\377\\000c\\n'", "job-11-1", NULL);
    T_REQUIRE(r != NULL);
    collected c;
    T_REQUIRE(drive(r, &c, 10000) == 0);
    T_EQ_INT(c.log.len, 8);
    T_CHECK(c.log.len == 8 && memcmp(c.log.data, "a\xc3\xa9" "b??c\n", 8) == 0);
    collected_free(&c);
    runner_destroy(&r);
}

/* 1 when dir holds an entry whose name starts with prefix. */
static int has_entry_prefix(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) found = strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return found;
}

/* A scratch directory left by an earlier try is emptied. Discarding a scratch directory: a small
 * one is gone at once; a large one is gone from its place at once and removed by the remover
 * thread soon after; no process is started for either. */
static void test_worker_runner_scratch(void) {
    char dir[512], stale[600];
    snprintf(dir, sizeof dir, "%s/job-12-1", tmp_root);
    snprintf(stale, sizeof stale, "%s/sub/stale.txt", dir);
    char sub[600];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    T_REQUIRE(mkdir_p(sub, 0755) == 0);
    char err[256];
    T_REQUIRE(write_file_atomic(stale, "x", 1, 0644, err, sizeof err) == 0);
    runner *r = start_command("ls -A; mkdir -p a/b/c; echo x > a/b/c/f; echo y > out.txt", "job-12-1", NULL);
    T_REQUIRE(r != NULL);
    collected c;
    T_REQUIRE(drive(r, &c, 10000) == 0);
    T_EQ_STR(c.log.data, "config.json\n");
    collected_free(&c);
    runner_destroy(&r);
    struct stat st;
    T_EQ_INT(runner_scratch_discard(dir, err, sizeof err), 0);
    T_CHECK(stat(dir, &st) != 0 && errno == ENOENT);
    T_CHECK(!has_entry_prefix(tmp_root, ".trash-"));
    T_EQ_INT(runner_scratch_discard(dir, err, sizeof err), 0); /* already gone: fine */

    /* larger than RUNNER_DISCARD_SYNC entries */
    snprintf(dir, sizeof dir, "%s/job-12-2", tmp_root);
    T_REQUIRE(mkdir_p(dir, 0755) == 0);
    for (int i = 0; i < RUNNER_DISCARD_SYNC * 3; i++) {
        char f[700];
        snprintf(f, sizeof f, "%s/%s%d", dir, i % 2 ? "d" : "f", i);
        if (i % 2) T_REQUIRE(mkdir_p(f, 0755) == 0);
        else T_REQUIRE(write_file_atomic(f, "x", 1, 0644, err, sizeof err) == 0);
    }
    T_EQ_INT(runner_scratch_discard(dir, err, sizeof err), 0);
    T_CHECK(stat(dir, &st) != 0 && errno == ENOENT);
    int64_t t0 = mono_ms();
    while (has_entry_prefix(tmp_root, ".trash-") && mono_ms() - t0 < 5000) usleep(10000);
    T_CHECK_MSG(!has_entry_prefix(tmp_root, ".trash-"), "the remover thread left the tree");
    T_CHECK(t_children() == 0);

    /* a runner_new on an existing large directory starts in an empty one */
    T_REQUIRE(mkdir_p(dir, 0755) == 0);
    for (int i = 0; i < RUNNER_DISCARD_SYNC * 2; i++) {
        char f[700];
        snprintf(f, sizeof f, "%s/f%d", dir, i);
        T_REQUIRE(write_file_atomic(f, "x", 1, 0644, err, sizeof err) == 0);
    }
    r = start_command("ls -A | wc -l", "job-12-2", NULL);
    T_REQUIRE(r != NULL);
    T_REQUIRE(drive(r, &c, 10000) == 0);
    T_CONTAINS(c.log.data, "1\n");
    collected_free(&c);
    runner_destroy(&r);
    T_EQ_INT(runner_scratch_discard(dir, err, sizeof err), 0);

    /* a directory that holds only its config.json is kept as the spare and renamed into place for
     * the next attempt, with the new config.json */
    runner_scratch_spare_remove();
    T_CHECK(!has_entry_prefix(tmp_root, ".spare-"));
    snprintf(dir, sizeof dir, "%s/job-12-3", tmp_root);
    r = start_command("true", "job-12-3", NULL);
    T_REQUIRE(r != NULL);
    T_REQUIRE(drive(r, &c, 10000) == 0);
    collected_free(&c);
    runner_destroy(&r);
    T_EQ_INT(runner_scratch_discard(dir, err, sizeof err), 0);
    T_CHECK(stat(dir, &st) != 0 && errno == ENOENT);
    T_CHECK(has_entry_prefix(tmp_root, ".spare-"));
    r = start_command("ls -A; pwd", "job-12-4", NULL);
    T_REQUIRE(r != NULL);
    T_CHECK(!has_entry_prefix(tmp_root, ".spare-"));
    T_REQUIRE(drive(r, &c, 10000) == 0);
    T_CONTAINS(c.log.data, "config.json\n");
    T_CONTAINS(c.log.data, "/job-12-4\n");
    collected_free(&c);
    runner_destroy(&r);
    snprintf(dir, sizeof dir, "%s/job-12-4", tmp_root);
    char cpath[600], *text = NULL;
    size_t len = 0;
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    T_REQUIRE(read_file(cpath, &text, &len, 1 << 16, err, sizeof err) == 0);
    T_CONTAINS(text, "\"ls -A; pwd\"");
    T_CHECK(strstr(text, "\"true\"") == NULL);
    T_CHECK(len > 0 && text[len - 1] == '\n');
    free(text);
    T_EQ_INT(runner_scratch_discard(dir, err, sizeof err), 0);
    T_CHECK(has_entry_prefix(tmp_root, ".spare-"));
    runner_scratch_spare_remove();
    T_CHECK(!has_entry_prefix(tmp_root, ".spare-"));
}

static void test_worker_devices_visible(void) {
    char ids[8][DEVICES_ID_LEN];
    T_EQ_INT(devices_parse_visible("0,1", 2, ids, 8), 2);
    T_EQ_STR(ids[1], "1");
    T_EQ_INT(devices_parse_visible("1, 0,5,2", 4, ids, 8), 2); /* 5 is past the driver's count */
    T_EQ_STR(ids[0], "1");
    T_EQ_INT(devices_parse_visible("-1", 4, ids, 8), 0);
    T_EQ_INT(devices_parse_visible("", 4, ids, 8), 0);
    T_EQ_INT(devices_parse_visible("GPU-8a1b2c3d-0000-1111,1", 4, ids, 8), 2);
    T_EQ_STR(ids[0], "GPU-8a1b2c3d-0000-1111");
    T_EQ_INT(devices_parse_visible("0,0", 4, ids, 8), 1);
    T_EQ_INT(devices_parse_visible("2,3", -1, ids, 8), 2);
    T_EQ_INT(devices_parse_visible("0,1,2", 8, ids, 2), 2);
    T_CHECK(devices_valid_id("3"));
    T_CHECK(!devices_valid_id("3x"));
    T_CHECK(!devices_valid_id("GPU-"));
    T_CHECK(!devices_valid_id("0;rm"));
}

int main(void) {
    snprintf(tmp_root, sizeof tmp_root, "%s/umdq-worker-runner-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp_root)) {
        printf("FAIL test_worker_runner: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    T_RUN(test_worker_runner_reports);
    T_RUN(test_worker_runner_environment);
    T_RUN(test_worker_runner_stderr_tail);
    T_RUN(test_worker_runner_exit_and_signal);
    T_RUN(test_worker_runner_cancel);
    T_RUN(test_worker_runner_cancel_graceful);
    T_RUN(test_worker_runner_leftovers);
    T_RUN(test_worker_runner_term_once);
    T_RUN(test_worker_runner_supervisor_term);
    T_RUN(test_worker_runner_setsid_leftover);
    T_RUN(test_worker_runner_umd_failure);
    T_RUN(test_worker_runner_umd_trains);
    T_RUN(test_worker_runner_bad_start);
    T_RUN(test_worker_runner_utf8);
    T_RUN(test_worker_runner_scratch);
    T_RUN(test_worker_devices_visible);
    tmp_cleanup();
    return t_done();
}
