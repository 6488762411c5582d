/* test_cli_cmd.c: the real umdq binary ($UMDQ_BUILD/bin/umdq) as a subprocess: --help of every
 * subcommand, exit codes of bad usage and of an unreachable daemon, and, when umdqd and
 * umdq-worker are built, a whole session: up, submit, wait, ls, export, resubmit, cancel, down.
 * umdq-uses: common */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "t.h"
#include "util.h"

static char tmpdir[256];   /* the test's temporary directory (removed at the end) */
static char umdq_bin[1100];
static char bin_dir[1024];

/* What one run of umdq produced. */
typedef struct {
    int rc;       /* exit code, or 128 + signal */
    char *out;    /* stdout, owned */
    char *err;    /* stderr, owned */
} run_result;

static void run_free(run_result *r) {
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

static char *slurp(const char *path) {
    char *data = NULL;
    size_t len = 0;
    char err[256];
    if (read_file(path, &data, &len, 64 << 20, err, sizeof err) != 0) return strdup("");
    return data;
}

/* Run umdq with args (NULL-terminated), stdin from stdin_path (NULL = /dev/null). */
static run_result run_umdq(const char *stdin_path, const char *const *args) {
    run_result r = {-1, NULL, NULL};
    char out_path[512], err_path[512];
    snprintf(out_path, sizeof out_path, "%s/run.out", tmpdir);
    snprintf(err_path, sizeof err_path, "%s/run.err", tmpdir);
    const char *argv[64];
    int n = 0;
    argv[n++] = umdq_bin;
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int in = open(stdin_path ? stdin_path : "/dev/null", O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0 || err < 0) _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        execv(umdq_bin, (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = slurp(out_path);
    r.err = slurp(err_path);
    return r;
}

#define RUN(...) run_umdq(NULL, (const char *const[]){__VA_ARGS__, NULL})

/* Run umdq on a pseudo-terminal (stdout and stderr both); out gets everything it wrote. With
 * no_color NO_COLOR=1 is set for it. */
static run_result run_umdq_tty(int no_color, const char *const *args) {
    run_result r = {-1, NULL, NULL};
    const char *argv[64];
    int n = 0;
    argv[n++] = umdq_bin;
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    fflush(stdout);
    int master = -1;
    struct winsize ws = {24, 100, 0, 0};
    pid_t pid = forkpty(&master, NULL, NULL, &ws);
    if (pid < 0) return r;
    if (pid == 0) {
        if (no_color) setenv("NO_COLOR", "1", 1);
        else unsetenv("NO_COLOR");
        setenv("TERM", "xterm", 1);
        execv(umdq_bin, (char *const *)argv);
        _exit(127);
    }
    strbuf b;
    strbuf_init(&b);
    char buf[4096];
    for (;;) {
        ssize_t k = read(master, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break; /* EIO once the child has closed the terminal */
        strbuf_append(&b, buf, (size_t)k);
    }
    close(master);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = b.data ? strbuf_steal(&b) : strdup("");
    r.err = strdup("");
    return r;
}

#define RUN_TTY(no_color, ...) run_umdq_tty(no_color, (const char *const[]){__VA_ARGS__, NULL})

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* A loopback port nothing listens on (bound, then released). */
static int closed_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 1;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0) close(s);
    return port;
}

static const char *const subcommands[] = {"up", "down", "submit", "ls", "show", "wait", "logs",
                                          "cancel", "requeue", "export", "workers", "dashboard"};
#define NSUB ((int)(sizeof subcommands / sizeof subcommands[0]))

static void test_cli_help_every_command(void) {
    run_result r = RUN("--help");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.out, "Usage: umdq [--home DIR] COMMAND");
    for (int i = 0; i < NSUB; i++) {
        char line[64];
        snprintf(line, sizeof line, "\n  %-9s ", subcommands[i]);
        T_CONTAINS(r.out, line);
    }
    T_CONTAINS(r.out, "\n  train     ");
    run_free(&r);

    for (int i = 0; i < NSUB; i++) {
        run_result h = RUN(subcommands[i], "--help");
        char usage[64];
        snprintf(usage, sizeof usage, "Usage: umdq %s", subcommands[i]);
        T_CHECK_MSG(h.rc == 0, "%s --help exited %d", subcommands[i], h.rc);
        T_CONTAINS(h.out, usage);
        T_CONTAINS(h.out, "--home DIR");
        T_CONTAINS(h.out, "Exit codes:");
        T_CHECK_MSG(h.err[0] == 0, "%s --help wrote to stderr: %s", subcommands[i], h.err);
        /* `help CMD` and `CMD -h` print the same text */
        run_result g = RUN("help", subcommands[i]);
        run_result s = RUN(subcommands[i], "-h");
        T_EQ_INT(g.rc, 0);
        T_EQ_STR(g.out, h.out);
        T_EQ_STR(s.out, h.out);
        run_free(&g);
        run_free(&s);
        run_free(&h);
    }
    /* options each subcommand documents */
    struct {
        const char *cmd, *opt;
    } documented[] = {
        {"up", "--port P"}, {"up", "--cpu-workers N"}, {"submit", "--dry-run"},
        {"submit", "--json"}, {"ls", "--state S"}, {"ls", "--json"}, {"show", "--json"},
        {"wait", "--timeout S"}, {"logs", "--follow"}, {"requeue", "--failed"},
        {"export", "--format FMT"}, {"export", "--json"}, {"workers", "--json"},
        {"down", "--timeout S"}, {"dashboard", "--json"},
    };
    for (size_t i = 0; i < sizeof documented / sizeof documented[0]; i++) {
        run_result h = RUN(documented[i].cmd, "--help");
        T_CHECK_MSG(strstr(h.out, documented[i].opt) != NULL, "%s --help lacks %s",
                    documented[i].cmd, documented[i].opt);
        run_free(&h);
    }
    r = RUN("--version");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.out, "umdq 0.1.0");
    run_free(&r);
}

static void test_cli_usage_exit_2(void) {
    char home[512];
    snprintf(home, sizeof home, "%s/usage-home", tmpdir);
    const char *const lines[][6] = {
        {"frob"},
        {"ls", "--bogus"},
        {"ls", "a", "b"},
        {"submit"},
        {"submit", "a.json", "b.json"},
        {"up", "--port", "-1"},
        {"up", "--port", "70000"},
        {"up", "--cpu-workers", "many"},
        {"wait"},
        {"wait", "s1", "--timeout", "soon"},
        {"export", "s1", "--format", "xml"},
        {"logs", "abc"},
        {"requeue", "fmnist"},
        {"show"},
        {"cancel"},
        {"workers", "extra"},
        {"down", "extra"},
        {"help", "a", "b"},
        {"--bogus", "ls"},
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        const char *args[10];
        int n = 0;
        args[n++] = "--home";
        args[n++] = home;
        for (int j = 0; j < 6 && lines[i][j]; j++) args[n++] = lines[i][j];
        args[n] = NULL;
        run_result r = run_umdq(NULL, args);
        T_CHECK_MSG(r.rc == 2, "umdq %s %s: exit %d, want 2 (%s)", lines[i][0],
                    lines[i][1] ? lines[i][1] : "", r.rc, r.err);
        T_CHECK_MSG(strstr(r.err, "Try 'umdq") != NULL, "umdq %s: no hint in '%s'", lines[i][0],
                    r.err);
        T_CHECK_MSG(r.out[0] == 0, "umdq %s wrote to stdout: %s", lines[i][0], r.out);
        run_free(&r);
    }
    run_result r = RUN("--home", home);
    T_EQ_INT(r.rc, 2);
    run_free(&r);
    r = RUN("--home", home, "ls", "--jsno");
    T_CONTAINS(r.err, "did you mean '--json'?");
    run_free(&r);
}

static void test_cli_unreachable_exit_1(void) {
    char home[512], path[600], url[64], spec[600];
    snprintf(home, sizeof home, "%s/dead-home", tmpdir);
    T_REQUIRE(mkdir_p(home, 0700) == 0);
    int port = closed_port();
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    char json[256];
    snprintf(json, sizeof json, "{\"http\": \"%s\", \"zmq\": \"tcp://127.0.0.1:%d\", \"pid\": 1}",
             url, port + 1);
    snprintf(path, sizeof path, "%s/umdqd.json", home);
    write_text(path, json);
    snprintf(path, sizeof path, "%s/token", home);
    write_text(path, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n");
    snprintf(spec, sizeof spec, "%s/spec.json", tmpdir);
    write_text(spec, "{\"name\": \"x\", \"base\": {\"kind\": \"command\", \"command\": \"true\"}}");

    const char *const lines[][4] = {
        {"ls"}, {"ls", "s1"}, {"show", "1"}, {"show", "s1"}, {"wait", "s1", "--timeout", "1"},
        {"logs", "1"}, {"cancel", "1"}, {"cancel", "fmnist"}, {"requeue", "1"},
        {"export", "s1"}, {"workers"}, {"submit", spec},
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        const char *args[8];
        int n = 0;
        args[n++] = "--home";
        args[n++] = home;
        for (int j = 0; j < 4 && lines[i][j]; j++) args[n++] = lines[i][j];
        args[n] = NULL;
        run_result r = run_umdq(NULL, args);
        T_CHECK_MSG(r.rc == 1, "umdq %s: exit %d, want 1", lines[i][0], r.rc);
        T_CHECK_MSG(strstr(r.err, url) != NULL, "umdq %s: '%s' does not name %s", lines[i][0],
                    r.err, url);
        T_CHECK_MSG(strstr(r.err, "umdq up") != NULL, "umdq %s: '%s' does not suggest umdq up",
                    lines[i][0], r.err);
        run_free(&r);
    }

    /* no state at all: the default address is tried and named */
    char empty[512];
    snprintf(empty, sizeof empty, "%s/empty-home", tmpdir);
    run_result r = RUN("--home", empty, "ls");
    T_EQ_INT(r.rc, 1);
    T_CONTAINS(r.err, "http://127.0.0.1:5755");
    run_free(&r);
    /* $UMDQ_HOME is used without --home */
    setenv("UMDQ_HOME", home, 1);
    r = RUN("workers");
    unsetenv("UMDQ_HOME");
    T_EQ_INT(r.rc, 1);
    T_CONTAINS(r.err, url);
    run_free(&r);
}

static void test_cli_submit_bad_input(void) {
    char home[512], path[512];
    snprintf(home, sizeof home, "%s/submit-home", tmpdir);
    snprintf(path, sizeof path, "%s/missing.json", tmpdir);
    run_result r = RUN("--home", home, "submit", path);
    T_EQ_INT(r.rc, 2);
    T_CONTAINS(r.err, "cannot read");
    run_free(&r);
    snprintf(path, sizeof path, "%s/broken.json", tmpdir);
    write_text(path, "{\"name\": \"x\", \"base\": ");
    r = RUN("--home", home, "submit", path);
    T_EQ_INT(r.rc, 2);
    T_CONTAINS(r.err, "not valid JSON");
    run_free(&r);
    /* the same from stdin */
    r = run_umdq(path, (const char *const[]){"--home", home, "submit", "-", NULL});
    T_EQ_INT(r.rc, 2);
    T_CONTAINS(r.err, "stdin is not valid JSON");
    run_free(&r);
}

/* Colour only on a terminal, and never with NO_COLOR. */
static void test_cli_color_rules(void) {
    run_result r = RUN("frob");
    T_EQ_INT(r.rc, 2);
    T_CHECK_MSG(strchr(r.err, '\033') == NULL, "colour on a pipe: %s", r.err);
    run_free(&r);
    r = RUN_TTY(0, "frob");
    T_EQ_INT(r.rc, 2);
    T_CONTAINS(r.out, "\033[1mumdq:\033[0m unknown command 'frob'");
    run_free(&r);
    r = RUN_TTY(1, "frob");
    T_EQ_INT(r.rc, 2);
    T_CONTAINS(r.out, "umdq: unknown command 'frob'");
    T_CHECK_MSG(strchr(r.out, '\033') == NULL, "colour despite NO_COLOR: %s", r.out);
    run_free(&r);
}

static void test_cli_down_when_nothing_runs(void) {
    char home[512];
    snprintf(home, sizeof home, "%s/idle-home", tmpdir);
    T_REQUIRE(mkdir_p(home, 0700) == 0);
    run_result r = RUN("--home", home, "down");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.err, "nothing running");
    run_free(&r);
}

/* ---- the whole session against the real daemon and workers -------------------------------- */

static char e2e_home[512];

static int pid_alive(pid_t pid) {
    char path[64], buf[512];
    if (pid <= 0 || kill(pid, 0) != 0) return 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
}

static pid_t read_pid(const char *path) {
    char *s = slurp(path);
    pid_t p = (pid_t)atoi(s);
    free(s);
    return p;
}

/* Live processes whose command line or working directory mentions the test directory. */
static int procs_in_tmpdir(pid_t *first) {
    int n = 0;
    DIR *d = opendir("/proc");
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long v = strtol(e->d_name, &end, 10);
        if (*end || v <= 0 || v == getpid() || !pid_alive((pid_t)v)) continue;
        char path[64], buf[4096], cwd[1024];
        snprintf(path, sizeof path, "/proc/%ld/cmdline", v);
        int fd = open(path, O_RDONLY);
        ssize_t len = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0) close(fd);
        int hit = 0;
        if (len > 0) {
            for (ssize_t i = 0; i < len; i++)
                if (buf[i] == 0) buf[i] = ' ';
            buf[len] = 0;
            hit = strstr(buf, tmpdir) != NULL;
        }
        snprintf(path, sizeof path, "/proc/%ld/cwd", v);
        ssize_t cl = readlink(path, cwd, sizeof cwd - 1);
        if (cl > 0) {
            cwd[cl] = 0;
            if (strncmp(cwd, tmpdir, strlen(tmpdir)) == 0) hit = 1;
        }
        if (hit) {
            if (n == 0 && first) *first = (pid_t)v;
            n++;
        }
    }
    closedir(d);
    return n;
}

/* The sweep summary named name in `ls --json` output, or NULL. Borrowed from root. */
static const cJSON *find_sweep(const cJSON *root, const char *name) {
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(root, "sweeps")) {
        const cJSON *n = cJSON_GetObjectItem(s, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0) return s;
    }
    return NULL;
}

static int count_of(const cJSON *summary, const char *state) {
    const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(summary, "counts"), state);
    return cJSON_IsNumber(v) ? v->valueint : 0;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_cli_e2e_session(void) {
    char umdqd[1100], worker[1100];
    snprintf(umdqd, sizeof umdqd, "%s/umdqd", bin_dir);
    snprintf(worker, sizeof worker, "%s/umdq-worker", bin_dir);
    if (access(umdqd, X_OK) != 0 || access(worker, X_OK) != 0)
        T_SKIP("umdqd or umdq-worker is not built in %.300s", bin_dir);
    snprintf(e2e_home, sizeof e2e_home, "%s/e2e-home", tmpdir);
    char path[700], spec[600], slow[600];

    /* up: a daemon on free ports and two CPU workers (GPUs hidden, so none are added) */
    setenv("CUDA_VISIBLE_DEVICES", "", 1);
    run_result r = RUN("--home", e2e_home, "up", "--port", "0", "--cpu-workers", "2");
    T_REQUIRE(r.rc == 0 || (fprintf(stdout, "up failed: %s\n", r.err), 0));
    T_CONTAINS(r.err, "started umdqd");
    T_CONTAINS(r.err, "/cpu0");
    T_CONTAINS(r.err, "/cpu1");
    T_CONTAINS(r.err, "HTTP API: http://127.0.0.1:");
    T_CONTAINS(r.err, "dashboard: http://127.0.0.1:");
    T_CONTAINS(r.err, "/#login=");
    T_CONTAINS(r.err, "down");
    run_free(&r);
    /* dashboard: a fresh one-time link on stdout each time */
    r = RUN("--home", e2e_home, "dashboard");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.out, "http://127.0.0.1:");
    T_CONTAINS(r.out, "/#login=");
    run_result r2 = RUN("--home", e2e_home, "dashboard");
    T_CHECK_MSG(strcmp(r.out, r2.out) != 0, "two dashboard links are the same: %s", r.out);
    run_free(&r2);
    run_free(&r);
    snprintf(path, sizeof path, "%s/workers/cpu0.pid", e2e_home);
    T_CHECK(pid_alive(read_pid(path)));
    snprintf(path, sizeof path, "%s/workers/cpu1.pid", e2e_home);
    T_CHECK(pid_alive(read_pid(path)));

    /* up again: nothing new is started */
    r = RUN("--home", e2e_home, "up", "--port", "0", "--cpu-workers", "2");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.err, "umdqd already running");
    T_CHECK_MSG(strstr(r.err, "started") == NULL, "second up started something: %s", r.err);
    run_free(&r);

    /* submit a small command sweep: each job reports score = x */
    snprintf(spec, sizeof spec, "%s/sweep.json", tmpdir);
    write_text(spec,
               "{\"name\": \"cli-e2e\", \"base\": {\"kind\": \"command\", \"command\": "
               "\"printf '{{\\\"umdq\\\": \\\"result\\\", \\\"score\\\": %s}}\\\\n' {params.x}\"},"
               " \"grid\": {\"params.x\": [1, 2, 3]}}");
    r = RUN("--home", e2e_home, "submit", spec);
    T_REQUIRE(r.rc == 0 || (fprintf(stdout, "submit failed: %s\n", r.err), 0));
    T_CONTAINS(r.out, "cli-e2e: 3 jobs, 3 new, 0 already present");
    run_free(&r);

    r = RUN("--home", e2e_home, "wait", "cli-e2e", "--timeout", "60", "--interval", "0.2");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.err, "all 3 jobs succeeded");
    T_CONTAINS(r.err, "cli-e2e: 3/3 done, 0 running, 0 failed");
    T_CHECK_MSG(!strchr(r.err, '\r') && !strchr(r.err, '\033'), "a progress bar on a pipe: %s",
                r.err);
    run_free(&r);
    /* on a terminal: a bar redrawn in place, coloured unless NO_COLOR */
    r = RUN_TTY(0, "--home", e2e_home, "wait", "cli-e2e");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.out, "\r\033[K[\033[32m###");
    T_CONTAINS(r.out, "] 3/3 done");
    run_free(&r);
    r = RUN_TTY(1, "--home", e2e_home, "ls");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.out, "cli-e2e");
    T_CHECK_MSG(strchr(r.out, '\033') == NULL, "colour despite NO_COLOR: %s", r.out);
    run_free(&r);
    r = RUN_TTY(0, "--home", e2e_home, "ls");
    T_CONTAINS(r.out, "\033[32mDONE\033[0m");
    run_free(&r);

    r = RUN("--home", e2e_home, "ls", "--json");
    T_EQ_INT(r.rc, 0);
    cJSON *ls = cJSON_Parse(r.out);
    T_REQUIRE(ls);
    const cJSON *sw = find_sweep(ls, "cli-e2e");
    T_REQUIRE(sw);
    T_EQ_INT(count_of(sw, "SUCCEEDED"), 3);
    int sweep_id = cJSON_GetObjectItem(sw, "id")->valueint;
    cJSON_Delete(ls);
    run_free(&r);

    r = RUN("--home", e2e_home, "ls");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.out, "PROGRESS");
    T_CONTAINS(r.out, "cli-e2e");
    T_CONTAINS(r.out, "3/3");
    run_free(&r);

    r = RUN("--home", e2e_home, "ls", "cli-e2e");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.out, "params.x");
    T_CONTAINS(r.out, "score");
    T_CONTAINS(r.out, "SUCCEEDED");
    run_free(&r);

    /* export: a header, then one row per job whose score equals its x */
    r = RUN("--home", e2e_home, "export", "cli-e2e", "--format", "csv");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.out, "id,state,seed,attempts,params.x,score\r\n");
    int rows = 0, job_id = 0;
    for (char *line = strstr(r.out, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
        int id, seed, attempts, x, score;
        char state[32];
        if (sscanf(line + 2, "%d,%31[A-Z],%d,%d,%d,%d", &id, state, &seed, &attempts, &x,
                   &score) == 6) {
            T_EQ_STR(state, "SUCCEEDED");
            T_EQ_INT(score, x);
            job_id = id;
            rows++;
        }
    }
    T_EQ_INT(rows, 3);
    run_free(&r);
    snprintf(path, sizeof path, "%s/rows.json", tmpdir);
    r = RUN("--home", e2e_home, "export", "cli-e2e", "--json", "-o", path);
    T_EQ_INT(r.rc, 0);
    T_CHECK(r.out[0] == 0);
    run_free(&r);
    char *rows_text = slurp(path);
    cJSON *rows_json = cJSON_Parse(rows_text);
    free(rows_text);
    T_CHECK(cJSON_IsArray(rows_json) && cJSON_GetArraySize(rows_json) == 3);
    T_CHECK(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetArrayItem(rows_json, 0), "score")));
    cJSON_Delete(rows_json);

    char sref[32], jref[32];
    snprintf(sref, sizeof sref, "s%d", sweep_id);
    snprintf(jref, sizeof jref, "%d", job_id);
    r = RUN("--home", e2e_home, "show", jref);
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.out, "SUCCEEDED");
    T_CONTAINS(r.out, "config:");
    T_CONTAINS(r.out, "attempts:");
    run_free(&r);
    r = RUN("--home", e2e_home, "show", sref);
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.out, "cli-e2e");
    run_free(&r);
    r = RUN("--home", e2e_home, "logs", jref);
    T_EQ_INT(r.rc, 0);
    run_free(&r);
    r = RUN("--home", e2e_home, "show", "999999");
    T_EQ_INT(r.rc, 3);
    run_free(&r);
    r = RUN("--home", e2e_home, "ls", "no-such-sweep");
    T_EQ_INT(r.rc, 3);
    run_free(&r);
    /* a finished job cannot be cancelled */
    r = RUN("--home", e2e_home, "cancel", jref);
    T_EQ_INT(r.rc, 1);
    run_free(&r);

    /* resubmitting adds nothing */
    r = RUN("--home", e2e_home, "submit", spec);
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.out, "0 new, 3 already present");
    run_free(&r);

    /* a refused spec names the bad key and exits 2 */
    snprintf(path, sizeof path, "%s/bad.json", tmpdir);
    write_text(path, "{\"name\": \"cli-bad\", \"base\": {\"umd\": {\"mask_ratio\": 1.5}}}");
    r = RUN("--home", e2e_home, "submit", path);
    T_EQ_INT(r.rc, 2);
    T_CONTAINS(r.err, "umd.mask_ratio");
    run_free(&r);

    /* cancel a sweep whose job is running */
    snprintf(slow, sizeof slow, "%s/slow.json", tmpdir);
    write_text(slow, "{\"name\": \"cli-slow\", \"base\": {\"kind\": \"command\", "
                     "\"command\": \"sleep 60\"}}");
    r = RUN("--home", e2e_home, "submit", slow);
    T_EQ_INT(r.rc, 0);
    run_free(&r);
    int running = 0;
    for (int i = 0; i < 200 && !running; i++) {
        r = RUN("--home", e2e_home, "ls", "--json");
        cJSON *j = cJSON_Parse(r.out);
        running = count_of(find_sweep(j, "cli-slow"), "RUNNING") == 1;
        cJSON_Delete(j);
        run_free(&r);
        if (!running) sleep_ms(100);
    }
    T_CHECK_MSG(running, "the slow job never ran");
    r = RUN("--home", e2e_home, "cancel", "cli-slow");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.out, "cancelled 1 job");
    run_free(&r);
    r = RUN("--home", e2e_home, "wait", "cli-slow", "--timeout", "30", "--interval", "0.2");
    T_EQ_INT(r.rc, 4);
    run_free(&r);

    /* a worker that died is started again by the next up; the others are left alone */
    snprintf(path, sizeof path, "%s/workers/cpu1.pid", e2e_home);
    pid_t old1 = read_pid(path);
    T_REQUIRE(old1 > 0 && kill(old1, SIGKILL) == 0);
    for (int i = 0; i < 100 && pid_alive(old1); i++) sleep_ms(50);
    r = RUN("--home", e2e_home, "up", "--port", "0", "--cpu-workers", "2");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.err, "/cpu0 already running");
    T_CONTAINS(r.err, "started ");
    T_CONTAINS(r.err, "/cpu1 (pid");
    run_free(&r);
    pid_t new1 = read_pid(path);
    T_CHECK(new1 != old1 && pid_alive(new1));

    r = RUN("--home", e2e_home, "workers", "--json");
    T_EQ_INT(r.rc, 0);
    cJSON *w = cJSON_Parse(r.out);
    T_CHECK(w && cJSON_GetArraySize(cJSON_GetObjectItem(w, "workers")) == 2);
    cJSON_Delete(w);
    run_free(&r);

    /* down: everything stops, nothing is left behind */
    snprintf(path, sizeof path, "%s/umdqd.json", e2e_home);
    cJSON *state = NULL;
    char *text = slurp(path);
    state = cJSON_Parse(text);
    free(text);
    pid_t dpid = state ? (pid_t)cJSON_GetObjectItem(state, "pid")->valueint : 0;
    cJSON_Delete(state);
    r = RUN("--home", e2e_home, "down");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.err, "stopped umdqd");
    T_CHECK_MSG(strstr(r.err, "killing") == NULL, "down had to kill: %s", r.err);
    run_free(&r);
    T_CHECK(!pid_alive(dpid));
    pid_t left = 0;
    int nleft = procs_in_tmpdir(&left);
    T_CHECK_MSG(nleft == 0, "%d process(es) left behind, e.g. pid %d", nleft, (int)left);
    r = RUN("--home", e2e_home, "down");
    T_EQ_INT(r.rc, 0);
    T_CONTAINS(r.err, "nothing running");
    run_free(&r);
}

/* up on an HTTP port another socket holds: the daemon cannot start, up says why and fails. */
static void test_cli_up_port_taken(void) {
    char umdqd[1100], home[512];
    snprintf(umdqd, sizeof umdqd, "%s/umdqd", bin_dir);
    if (access(umdqd, X_OK) != 0) T_SKIP("umdqd is not built in %.300s", bin_dir);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    T_REQUIRE(s >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    T_REQUIRE(bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 1) == 0 &&
              getsockname(s, (struct sockaddr *)&a, &len) == 0);
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    if (ntohs(a.sin_port) > 65534) {
        close(s);
        T_SKIP("the free port is the last one");
    }
    snprintf(home, sizeof home, "%s/taken-home", tmpdir);
    run_result r = RUN("--home", home, "up", "--port", port, "--cpu-workers", "0");
    close(s);
    T_EQ_INT(r.rc, 1);
    T_CONTAINS(r.err, "umdqd.log");
    T_CHECK_MSG(strstr(r.err, "HTTP API") == NULL, "up claimed success: %s", r.err);
    run_free(&r);
    pid_t p = 0;
    T_CHECK_MSG(procs_in_tmpdir(&p) == 0, "pid %d was left running", (int)p);
}

/* Whatever a failed session left running is stopped before the directory goes. */
static void e2e_cleanup(void) {
    if (!e2e_home[0]) return;
    run_result r = RUN("--home", e2e_home, "down", "--timeout", "5");
    run_free(&r);
    pid_t p = 0;
    for (int i = 0; i < 10 && procs_in_tmpdir(&p) > 0; i++) kill(p, SIGKILL);
}

int main(void) {
    const char *build = getenv("UMDQ_BUILD");
    snprintf(bin_dir, sizeof bin_dir, "%.1000s/bin", build && *build ? build : "build");
    snprintf(umdq_bin, sizeof umdq_bin, "%s/umdq", bin_dir);
    if (access(umdq_bin, X_OK) != 0) {
        printf("SKIP test_cli_cmd: %s is not built\n", umdq_bin);
        return 0;
    }
    snprintf(tmpdir, sizeof tmpdir, "%s/umdq-cli-XXXXXX",
             getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        printf("FAIL test_cli_cmd: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    unsetenv("UMDQ_HOME");
    unsetenv("NO_COLOR");
    T_RUN(test_cli_help_every_command);
    T_RUN(test_cli_usage_exit_2);
    T_RUN(test_cli_unreachable_exit_1);
    T_RUN(test_cli_submit_bad_input);
    T_RUN(test_cli_color_rules);
    T_RUN(test_cli_down_when_nothing_runs);
    T_RUN(test_cli_e2e_session);
    e2e_cleanup();
    T_RUN(test_cli_up_port_taken);
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return t_done();
}
