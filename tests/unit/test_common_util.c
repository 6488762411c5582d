/* test_common_util.c: shell quoting through a real /bin/sh, host:port parsing, the loopback rule,
 * files, random hex, the string builder and log lines. umdq-uses: common */
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "log.h"
#include "t.h"
#include "umdq.h"
#include "util.h"

static char tmpdir[64];

/* Run: /bin/sh -c "printf %s <quoted>" and return what it printed (caller frees). */
static char *sh_echo(const char *quoted) {
    int fds[2];
    if (pipe(fds) != 0) return NULL;
    size_t n = strlen(quoted) + 16;
    char *cmd = malloc(n);
    snprintf(cmd, n, "printf %%s %s", quoted);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    free(cmd);
    close(fds[1]);
    char *out = malloc(65536);
    size_t len = 0;
    ssize_t r;
    while ((r = read(fds[0], out + len, 65535 - len)) > 0) len += (size_t)r;
    out[len] = 0;
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    return out;
}

static void test_common_shell_quote(void) {
    const char *cases[] = {"plain", "", "it's", "a b  c", "$HOME `id` $(id) \"q\" \\ ;|&<>*?[]~#!",
                           "''", "line\nbreak\ttab", "-n", "\xc3\xa9t\xc3\xa9", "{umd.mask_ratio}"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *q = shell_quote(cases[i]);
        T_REQUIRE(q);
        char *back = sh_echo(q);
        T_REQUIRE(back);
        T_CHECK_MSG(strcmp(back, cases[i]) == 0, "case %zu: %s -> %s", i, q, back);
        free(back);
        free(q);
    }
    char *q = shell_quote("it's");
    T_EQ_STR(q, "'it'\\''s'");
    free(q);
}

static void test_common_hostport(void) {
    char host[64], err[256];
    int port = -1;
    T_EQ_INT(hostport_parse("127.0.0.1:5755", host, sizeof host, &port, err, sizeof err), 0);
    T_EQ_STR(host, "127.0.0.1");
    T_EQ_INT(port, 5755);
    T_EQ_INT(hostport_parse("tcp://localhost:0", host, sizeof host, &port, err, sizeof err), 0);
    T_EQ_STR(host, "localhost");
    T_EQ_INT(port, 0);
    T_EQ_INT(hostport_parse("tcp://127.0.0.1:*", host, sizeof host, &port, err, sizeof err), 0);
    T_EQ_INT(port, 0);
    T_EQ_INT(hostport_parse("[::1]:65535", host, sizeof host, &port, err, sizeof err), 0);
    T_EQ_STR(host, "::1");
    T_EQ_INT(port, 65535);
    const char *bad[] = {"", "127.0.0.1", "127.0.0.1:", ":80", "host:65536", "host:12a", "::1:80",
                         "[::1]80", "host:-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        T_CHECK_MSG(hostport_parse(bad[i], host, sizeof host, &port, err, sizeof err) == UMDQ_EINVAL,
                    "accepted \"%s\"", bad[i]);
        T_CHECK_MSG(err[0] != 0, "no message for \"%s\"", bad[i]);
    }
    char tiny[4];
    T_EQ_INT(hostport_parse("localhost:1", tiny, sizeof tiny, &port, err, sizeof err), UMDQ_EINVAL);
}

static void test_common_loopback(void) {
    char err[256];
    const char *ok[] = {"127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST", "::1", "[::1]", "::ffff:127.0.0.1"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        T_CHECK_MSG(host_check_loopback(ok[i], err, sizeof err) == 0, "refused %s: %s", ok[i], err);
    const char *bad[] = {"0.0.0.0", "192.168.1.10", "10.0.0.1", "::", "*", "example.com", "128.0.0.1", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        T_CHECK_MSG(host_check_loopback(bad[i], err, sizeof err) == UMDQ_EINVAL, "accepted %s", bad[i]);
        T_CONTAINS(err, "authenticated multi-host transport is not available yet");
    }
}

static void test_common_files(void) {
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/a/b/c", tmpdir);
    T_EQ_INT(mkdir_p(path, 0755), 0);
    T_EQ_INT(mkdir_p(path, 0755), 0);
    struct stat st;
    T_CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode));
    snprintf(path, sizeof path, "%s/a/b/c/f.txt", tmpdir);
    T_EQ_INT(write_file_atomic(path, "hello\0world", 11, 0600, err, sizeof err), 0);
    T_EQ_INT(write_file_atomic(path, "second", 6, 0600, err, sizeof err), 0);
    T_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    T_CHECK(access(tmp, F_OK) != 0);
    char *data = NULL;
    size_t len = 0;
    T_EQ_INT(read_file(path, &data, &len, 100, err, sizeof err), 0);
    T_EQ_INT(len, 6);
    T_EQ_STR(data, "second");
    free(data);
    T_EQ_INT(read_file(path, &data, &len, 5, err, sizeof err), UMDQ_EINVAL);
    T_CHECK(data == NULL);
    snprintf(path, sizeof path, "%s/missing", tmpdir);
    T_EQ_INT(read_file(path, &data, &len, 100, err, sizeof err), UMDQ_ENOTFOUND);
    T_CONTAINS(err, "missing");
    /* a path under a regular file cannot be made */
    snprintf(path, sizeof path, "%s/a/b/c/f.txt/x", tmpdir);
    T_EQ_INT(mkdir_p(path, 0755), UMDQ_EIO);
}

static void test_common_random_time(void) {
    char a[33], b[33];
    T_EQ_INT(random_hex(a, 32), 0);
    T_EQ_INT(random_hex(b, 32), 0);
    T_EQ_INT((int)strlen(a), 32);
    T_CHECK(strspn(a, "0123456789abcdef") == 32);
    T_CHECK(strcmp(a, b) != 0);
    char odd[8];
    T_EQ_INT(random_hex(odd, 7), 0);
    T_EQ_INT((int)strlen(odd), 7);
    char ts[32];
    time_iso8601(1795665471.5, ts, sizeof ts);
    T_EQ_STR(ts, "2026-11-26T03:57:51Z");
    T_CHECK(now_ms() > 1600000000000LL);
    double m0 = mono_s();
    T_CHECK(mono_s() >= m0 && mono_ms() >= 0);
}

static void test_common_strbuf(void) {
    strbuf b;
    strbuf_init(&b);
    T_EQ_STR(b.data, "");
    for (int i = 0; i < 1000; i++) strbuf_printf(&b, "%d,", i);
    strbuf_puts(&b, "end");
    strbuf_append(&b, "xyz", 1);
    T_CHECK(strncmp(b.data, "0,1,2,", 6) == 0);
    T_CHECK(b.len == strlen(b.data));
    T_CONTAINS(b.data, "998,999,endx");
    char *s = strbuf_steal(&b);
    T_CHECK(b.data == NULL && b.len == 0);
    strbuf_printf(&b, "again %s", "here");
    T_EQ_STR(b.data, "again here");
    strbuf_free(&b);
    free(s);
}

static void test_common_log(void) {
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/x.log", tmpdir);
    T_EQ_INT(log_init("umdqd", path, LOG_INFO), 0);
    log_debug("hidden %d", 1);
    log_warn("shown %d\n", 2);
    log_set_level(LOG_DEBUG);
    log_debug("now shown");
    log_close();
    char *data = NULL;
    size_t len;
    T_EQ_INT(read_file(path, &data, &len, 1 << 20, err, sizeof err), 0);
    T_CHECK(strstr(data, "hidden") == NULL);
    T_CONTAINS(data, " WARN shown 2\n");
    T_CONTAINS(data, " DEBUG now shown\n");
    char pid[32];
    snprintf(pid, sizeof pid, " umdqd[%d] WARN", (int)getpid());
    T_CONTAINS(data, pid);
    /* 2026-11-26T03:57:51.123Z */
    T_CHECK(len > 24 && data[4] == '-' && data[10] == 'T' && data[19] == '.' && data[23] == 'Z');
    free(data);
    snprintf(path, sizeof path, "%s/no/such/dir/x.log", tmpdir);
    T_EQ_INT(log_init("umdqd", path, LOG_INFO), UMDQ_EIO);
    log_close();
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/umdq-test-util-XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    T_RUN(test_common_shell_quote);
    T_RUN(test_common_hostport);
    T_RUN(test_common_loopback);
    T_RUN(test_common_files);
    T_RUN(test_common_random_time);
    T_RUN(test_common_strbuf);
    T_RUN(test_common_log);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) return 1;
    return t_done();
}
