/* test_worker_artifacts.c: the umd child's artifact client (worker/artifacts.h) against a small
 * real HTTP server on a loopback socket: what a PUT sends (path, token, body), a GET's body in the
 * file, 404 as "nothing stored" with no file left behind, 5xx retried, 4xx not, a dead address
 * named in the error, names refused before any request.
 * umdq-uses: worker common */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "artifacts.h"
#include "t.h"
#include "umdq.h"
#include "util.h"

/* ---- the server: answers each connection with the next scripted status ---------------------------- */

#define MAX_SCRIPT 8

static struct {
    int listen_fd, port;
    int statuses[MAX_SCRIPT], nstatus, next;  /* answers in order; past the end: 500 */
    const char *get_body;                     /* body of a 200 to a GET */
    int requests;
    char method[16], path[256], auth[256];
    char *body;                               /* the last request's body, owned */
    size_t body_len;
    pthread_t thread;
} srv;

static void server_serve_one(int fd) {
    char head[8192];
    size_t n = 0;
    char *end = NULL;
    while (n < sizeof head - 1 && !end) {
        ssize_t r = read(fd, head + n, sizeof head - 1 - n);
        if (r <= 0) return;
        n += (size_t)r;
        head[n] = 0;
        end = strstr(head, "\r\n\r\n");
    }
    if (!end) return;
    size_t have = n - (size_t)(end + 4 - head);
    sscanf(head, "%15s %255s", srv.method, srv.path);
    const char *a = strcasestr(head, "\r\nAuthorization: ");
    srv.auth[0] = 0;
    if (a) sscanf(a + 17, "%255[^\r]", srv.auth);
    const char *cl = strcasestr(head, "\r\nContent-Length: ");
    size_t len = cl ? (size_t)strtoull(cl + 18, NULL, 10) : 0;
    free(srv.body);
    srv.body = malloc(len + 1);
    memcpy(srv.body, end + 4, have < len ? have : len);
    size_t got = have < len ? have : len;
    while (got < len) {
        ssize_t r = read(fd, srv.body + got, len - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    srv.body[got] = 0;
    srv.body_len = got;
    srv.requests++;
    int status = srv.next < srv.nstatus ? srv.statuses[srv.next] : 500;
    srv.next++;
    char out[1024];
    const char *body = status == 200 && strcmp(srv.method, "GET") == 0 ? srv.get_body
                       : status == 201 ? "{\"job\": 5}"
                                       : "{\"error\": \"scripted failure\"}";
    int m = snprintf(out, sizeof out, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s", status,
                     strlen(body), body);
    ssize_t w = write(fd, out, (size_t)m);
    (void)w;
}

static void *server_main(void *arg) {
    (void)arg;
    for (;;) {
        int fd = accept(srv.listen_fd, NULL, NULL);
        if (fd < 0) return NULL;
        server_serve_one(fd);
        close(fd);
    }
}

static void server_start(void) {
    srv.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(srv.listen_fd, (struct sockaddr *)&sa, sizeof sa);
    listen(srv.listen_fd, 16);
    socklen_t sl = sizeof sa;
    getsockname(srv.listen_fd, (struct sockaddr *)&sa, &sl);
    srv.port = ntohs(sa.sin_port);
    pthread_create(&srv.thread, NULL, server_main, NULL);
}

static void script(int a, int b, int c) {
    srv.statuses[0] = a;
    srv.statuses[1] = b;
    srv.statuses[2] = c;
    srv.nstatus = 3;
    srv.next = 0;
    srv.requests = 0;
}

static char url[64], dir[256];

static artifact_store store(int tries) {
    artifact_store s = {url, "tok123", 5, tries};
    return s;
}

/* ---- tests -------------------------------------------------------------------------------------- */

static void test_artifacts_names(void) {
    T_CHECK(artifact_name_ok("ckpt.umd"));
    T_CHECK(artifact_name_ok("samples-0_1.png"));
    T_CHECK(!artifact_name_ok(""));
    T_CHECK(!artifact_name_ok(".hidden"));
    T_CHECK(!artifact_name_ok("a/b"));
    T_CHECK(!artifact_name_ok("a b"));
    char long_name[200];
    memset(long_name, 'a', 129);
    long_name[129] = 0;
    T_CHECK(!artifact_name_ok(long_name));
    long_name[128] = 0;
    T_CHECK(artifact_name_ok(long_name));
    /* a bad name is refused before any request */
    char err[512];
    artifact_store s = store(1);
    script(201, 201, 201);
    T_EQ_INT(artifact_put_file(&s, "../x", "/etc/hostname", err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "bad artifact name");
    T_EQ_INT(srv.requests, 0);
}

static void test_artifacts_put(void) {
    char path[400], err[512];
    snprintf(path, sizeof path, "%s/ck.bin", dir);
    char data[5000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (char)(i * 7 + 3);
    T_REQUIRE(write_file_atomic(path, data, sizeof data, 0644, err, sizeof err) == 0);
    artifact_store s = store(3);
    script(201, 201, 201);
    T_EQ_INT(artifact_put_file(&s, "ckpt.umd", path, err, sizeof err), 0);
    T_EQ_INT(srv.requests, 1);
    T_EQ_STR(srv.method, "PUT");
    T_EQ_STR(srv.path, "/api/artifacts/5/ckpt.umd");
    T_EQ_STR(srv.auth, "Bearer tok123");
    T_EQ_INT(srv.body_len, sizeof data);
    T_CHECK(memcmp(srv.body, data, sizeof data) == 0);

    /* 503 then 201: retried, the whole file sent again */
    script(503, 201, 201);
    T_EQ_INT(artifact_put_file(&s, "ckpt.umd", path, err, sizeof err), 0);
    T_EQ_INT(srv.requests, 2);
    T_EQ_INT(srv.body_len, sizeof data);
    /* 400 is not retried; the daemon's error is in the message */
    script(400, 201, 201);
    T_EQ_INT(artifact_put_file(&s, "ckpt.umd", path, err, sizeof err), UMDQ_EINVAL);
    T_EQ_INT(srv.requests, 1);
    T_CONTAINS(err, "HTTP 400: scripted failure");
    /* 500 every time: given up after the tries */
    script(500, 500, 500);
    T_EQ_INT(artifact_put_file(&s, "ckpt.umd", path, err, sizeof err), UMDQ_EIO);
    T_EQ_INT(srv.requests, 3);
    /* a missing file */
    T_EQ_INT(artifact_put_file(&s, "ckpt.umd", "/nonexistent/ck", err, sizeof err), UMDQ_EIO);
    T_CONTAINS(err, "/nonexistent/ck");
}

static void test_artifacts_get(void) {
    char path[400], err[512];
    snprintf(path, sizeof path, "%s/got.umd", dir);
    artifact_store s = store(3);
    srv.get_body = "checkpoint bytes";
    script(200, 200, 200);
    int64_t bytes = 0;
    T_EQ_INT(artifact_get_file(&s, "ckpt.umd", path, &bytes, err, sizeof err), 0);
    T_EQ_STR(srv.method, "GET");
    T_EQ_STR(srv.path, "/api/artifacts/5/ckpt.umd");
    T_EQ_INT(bytes, 16);
    char *text = NULL;
    size_t len = 0;
    T_REQUIRE(read_file(path, &text, &len, 1 << 20, err, sizeof err) == 0);
    T_EQ_INT(len, 16);
    T_CHECK(memcmp(text, "checkpoint bytes", 16) == 0);
    free(text);
    unlink(path);

    /* 404: nothing stored, nothing written, not retried */
    script(404, 200, 200);
    T_EQ_INT(artifact_get_file(&s, "ckpt.umd", path, &bytes, err, sizeof err), UMDQ_ENOTFOUND);
    T_EQ_INT(srv.requests, 1);
    struct stat sb;
    T_CHECK(stat(path, &sb) != 0);
    char part[420];
    snprintf(part, sizeof part, "%s.part", path);
    T_CHECK(stat(part, &sb) != 0);
    /* 502, 503, then 200 */
    script(502, 503, 200);
    T_EQ_INT(artifact_get_file(&s, "ckpt.umd", path, &bytes, err, sizeof err), 0);
    T_EQ_INT(srv.requests, 3);
    T_EQ_INT(bytes, 16);
}

static void test_artifacts_unreachable(void) {
    /* a port nobody listens on (the server's, after it is closed, is not safe: take a fresh one) */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    char dead[64];
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d", ntohs(sa.sin_port));
    artifact_store s = {dead, "t", 9, 1};
    char path[400], err[512];
    snprintf(path, sizeof path, "%s/x.umd", dir);
    T_EQ_INT(artifact_get_file(&s, "ckpt.umd", path, NULL, err, sizeof err), UMDQ_EIO);
    T_CONTAINS(err, dead);
    close(fd);
    artifact_store none = {NULL, NULL, 9, 1};
    T_EQ_INT(artifact_get_file(&none, "ckpt.umd", path, NULL, err, sizeof err), UMDQ_EINVAL);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(dir, sizeof dir, "%s/umdq-artifacts-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) return 1;
    server_start();
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", srv.port);
    T_RUN(test_artifacts_names);
    T_RUN(test_artifacts_put);
    T_RUN(test_artifacts_get);
    T_RUN(test_artifacts_unreachable);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    int rc = system(cmd);
    (void)rc;
    return t_done();
}
