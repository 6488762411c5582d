/* http_fuzz.c: random and mutated HTTP requests against a running umdqd (tests/long/fuzz.sh).
 *
 *   http_fuzz PORT TOKEN SECONDS SEED OUTDIR [SPEC.json ...]
 *
 * Sends requests to 127.0.0.1:PORT for SECONDS: random methods, the API's paths with mutated ids,
 * names and query arguments, right/wrong/missing Host and token headers, wrong Content-Length and
 * broken chunked bodies, mutated sweep specs (the SPEC files) and random JSON or bytes as bodies,
 * requests cut short, sent in pieces or pipelined. Every 100 requests (and at the end) a
 * well-formed GET /api/health must answer 200 within 10 s.
 *
 * Prints a summary (requests, answers by status class). Exit status: 0 when the daemon kept
 * serving and never answered 500; 1 otherwise, with the last requests saved as
 * OUTDIR/http-fuzz-last-N.bin (N = 0 is the most recent) and each request answered 500 as
 * OUTDIR/http-fuzz-500-K.bin. The same SEED sends the same requests. HTTP_FUZZ_VERBOSE=1 prints
 * each request's first line, answer and time on stderr. Not built by the Makefile. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RING 16
#define MAX_RATE 250
#define CUT_RATE 1.0 /* requests cut short per second, at most */

static uint64_t rng_state;

static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}
static unsigned below(unsigned n) { return n ? (unsigned)(rnd() % n) : 0; }
static int chance(unsigned percent) { return below(100) < percent; }
#define PICK(arr) (arr)[below((unsigned)(sizeof(arr) / sizeof((arr)[0])))]

/* A growable byte buffer. */
typedef struct {
    char *data;
    size_t len, cap;
} buf;

static void buf_put(buf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            fprintf(stderr, "http_fuzz: out of memory\n");
            exit(2);
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}
static void buf_puts(buf *b, const char *s) { buf_put(b, s, strlen(s)); }
static void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(buf *b, const char *fmt, ...) {
    char tmp[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static int port;
static const char *token, *outdir;
static buf specs[32];
static int nspecs;

/* ---- pieces of requests --------------------------------------------------------------------- */

static const char *an_id(void) {
    static char tmp[64];
    static const char *const odd[] = {"0", "-1", "00001", "1e3", "0x10", "abc", "%31", "1.5", "99999999999999999999",
                                      "9223372036854775807", "18446744073709551617", "", "..", "%00", "1/", " 1",
                                      "chaos", "fuzz-sweep", "it's", "%2e%2e"};
    if (chance(70)) {
        snprintf(tmp, sizeof tmp, "%u", 1 + below(chance(80) ? 6 : 100000));
        return tmp;
    }
    return PICK(odd);
}

static const char *a_name(void) {
    static char tmp[300];
    static const char *const names[] = {"ckpt.bin", "a.png", "..", ".", ".hidden", "a%2fb", "%2e%2e%2ftoken", "a b",
                                        "x..y", "-", "_", "A.B-c_9", "%00", "..%2f..%2fumdq.db", "con", "a\\b"};
    if (chance(10)) {
        size_t n = 100 + below(200);
        for (size_t i = 0; i < n; i++) tmp[i] = "abcxyz._-"[below(9)];
        tmp[n] = 0;
        return tmp;
    }
    return PICK(names);
}

static const char *a_number(void) {
    static char tmp[64];
    static const char *const odd[] = {"-1", "0", "-9223372036854775808", "9223372036854775807", "99999999999999999999",
                                      "NaN", "", "1e9", "0x7fffffff", "-0", "2147483648", "100001", " 5", "5 "};
    if (chance(50)) {
        snprintf(tmp, sizeof tmp, "%u", below(5000));
        return tmp;
    }
    return PICK(odd);
}

static void path_for(buf *p) {
    switch (below(18)) {
    case 0: buf_puts(p, "/api/sweeps"); break;
    case 1: buf_puts(p, chance(70) ? "/api/sweeps?dry_run=1" : "/api/sweeps?dry_run=yes&x=%zz"); break;
    case 2:
        buf_printf(p, "/api/sweeps/%s", an_id());
        if (chance(50))
            buf_printf(p, "?jobs=%s&state=%s", chance(50) ? "0" : a_number(), chance(50) ? "QUEUED" : "NOPE");
        break;
    case 3: buf_printf(p, "/api/sweeps/%s/cancel", an_id()); break;
    case 4: buf_printf(p, "/api/sweeps/%s/requeue%s", an_id(), chance(50) ? "?failed=1" : ""); break;
    case 5: buf_printf(p, "/api/jobs/%s", an_id()); break;
    case 6:
        buf_printf(p, "/api/jobs/%s/metrics?key=%s&max_points=%s", an_id(), chance(50) ? "loss" : "%ff%00",
                   a_number());
        break;
    case 7: buf_printf(p, "/api/jobs/%s/log?offset=%s&max=%s", an_id(), a_number(), a_number()); break;
    case 8: buf_printf(p, "/api/jobs/%s/cancel", an_id()); break;
    case 9: buf_printf(p, "/api/jobs/%s/requeue", an_id()); break;
    case 10: buf_puts(p, "/api/workers"); break;
    case 11: buf_printf(p, "/api/artifacts/%s/%s", an_id(), a_name()); break;
    case 12: buf_printf(p, "/api/artifacts/%s", an_id()); break;
    case 13: buf_puts(p, "/api/health"); break;
    case 14: buf_puts(p, "/metrics"); break;
    case 15: buf_puts(p, PICK(((const char *[]){"/", "/index.html", "/app.js", "/api", "/api/", "//api//sweeps//",
                                                "/api/sweeps/1/cancel/x/y/z", "*", "http://127.0.0.1/api/health",
                                                "/api/%2e%2e/token", "/../token", "/api/jobs/1/log/"}))); break;
    case 16: { /* a long path */
        size_t n = chance(50) ? 300 : 5000 + below(60000);
        buf_puts(p, "/api/");
        for (size_t i = 0; i < n; i++) buf_put(p, chance(5) ? "/" : "a", 1);
        break;
    }
    default: { /* random bytes after a slash */
        buf_puts(p, "/");
        size_t n = below(64);
        for (size_t i = 0; i < n; i++) {
            char c = (char)(33 + below(94));
            buf_put(p, &c, 1);
        }
    }
    }
    if (chance(5)) buf_puts(p, "?");
    if (chance(3)) buf_puts(p, "#frag");
}

static void mutate(buf *b) {
    int rounds = 1 + (int)below(8);
    for (int r = 0; r < rounds && b->len > 0; r++) {
        size_t at = below((unsigned)b->len);
        switch (below(7)) {
        case 0: b->data[at] = (char)below(256); break;                       /* a byte */
        case 1: b->data[at] ^= (char)(1 << below(8)); break;                 /* a bit */
        case 2: b->len = at; b->data[at] = 0; break;                         /* cut */
        case 3: { /* repeat a slice */
            size_t n = 1 + below((unsigned)(b->len - at < 64 ? b->len - at : 64));
            char tmp[64];
            memcpy(tmp, b->data + at, n);
            buf_put(b, tmp, n);
            break;
        }
        case 4: { /* an interesting token */
            static const char *const toks[] = {"1e999", "-0", "null", "[]", "{}", "\"\\u0000\"", "\"\\ud800\"",
                                               "99999999",
                                               "\"grid\"", "\"zip\"", "\"list\"", "\"seeds\"", "1000", "true", ",", ":",
                                               "\"kind\":\"command\"", "\"{params.x}\"", "[[[[[[[[", "\xff\xfe"};
            const char *t = PICK(toks);
            buf_puts(b, t);
            break;
        }
        case 5: memset(b->data + at, b->data[at], (b->len - at) / 2); break;
        default: { /* delete a slice */
            size_t n = below((unsigned)(b->len - at));
            memmove(b->data + at, b->data + at + n, b->len - at - n);
            b->len -= n;
            b->data[b->len] = 0;
        }
        }
    }
}

static void random_json(buf *b, int depth) {
    switch (depth > 6 ? below(4) : below(7)) {
    case 0:
        buf_puts(b, PICK(((const char *[]){"null", "true", "false", "0", "-1", "1e308", "1.5", "\"\"", "\"x\""})));
        break;
    case 1: buf_printf(b, "%d", (int)below(2000) - 1000); break;
    case 2:
        buf_printf(b, "\"%s\"", PICK(((const char *[]){"umd", "command", "grid", "a.b", "{params.x}", "\\n", "\\u00e9"})));
        break;
    case 3: buf_printf(b, "%g", (double)rnd() / 1e10); break;
    case 4: case 5: {
        static const char *const keys[] = {"name", "base", "grid", "zip", "list", "seeds", "priority", "retry", "kind",
                                           "command", "params", "params.x", "umd.r_t0", "model.width", "train.steps",
                                           "max_attempts", "on_failure", "description", "x"};
        buf_puts(b, "{");
        int n = (int)below(6);
        for (int i = 0; i < n; i++) {
            if (i) buf_puts(b, ",");
            buf_printf(b, "\"%s\":", PICK(keys));
            random_json(b, depth + 1);
        }
        buf_puts(b, "}");
        break;
    }
    default: {
        buf_puts(b, "[");
        int n = (int)below(6);
        for (int i = 0; i < n; i++) {
            if (i) buf_puts(b, ",");
            random_json(b, depth + 1);
        }
        buf_puts(b, "]");
    }
    }
}

static void body_for(buf *b) {
    switch (below(6)) {
    case 0: case 1:
        if (nspecs) {
            buf *s = &specs[below((unsigned)nspecs)];
            buf_put(b, s->data, s->len);
            if (chance(80)) mutate(b);
            break;
        }
        /* fall through */
    case 2: random_json(b, 0); if (chance(30)) mutate(b); break;
    case 3: { /* random bytes */
        size_t n = chance(90) ? below(4096) : below(1u << 20);
        for (size_t i = 0; i < n; i++) {
            char c = (char)below(256);
            buf_put(b, &c, 1);
        }
        break;
    }
    case 4: break; /* empty */
    default: { /* a deep nest */
        size_t n = 500 + below(5000);
        for (size_t i = 0; i < n; i++) buf_puts(b, chance(50) ? "[" : "{\"a\":");
    }
    }
}

/* One request into r; *complete is 1 when its framing is whole (Content-Length matches). */
static void build_request(buf *r, int *complete) {
    static const char *const methods[] = {"GET", "GET", "GET", "POST", "POST", "POST", "PUT", "PUT", "DELETE",
                                          "HEAD", "OPTIONS", "PATCH", "get", "TRACE", "CONNECT", "", "G\x01T",
                                          "POSTPOSTPOSTPOSTPOSTPOSTPOSTPOST"};
    buf path = {0}, body = {0};
    path_for(&path);
    if (chance(10)) mutate(&path);
    const char *method = PICK(methods);
    int has_body = strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ? chance(90) : chance(5);
    if (has_body) body_for(&body);
    static const char *const versions[] = {"HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", "", "HTTP/0.9", "HTTP/9.9"};
    const char *version = chance(90) ? "HTTP/1.1" : PICK(versions);
    buf_printf(r, "%s %s %s\r\n", method, path.data ? path.data : "", version);
    switch (below(20)) {
    case 0: break; /* no Host */
    case 1: buf_puts(r, "Host: evil.example\r\n"); break;
    case 2: buf_printf(r, "Host: 127.0.0.1:%d\r\nHost: other\r\n", port); break;
    case 3: buf_printf(r, "Host: localhost:%d\r\n", port); break;
    default: buf_printf(r, "Host: 127.0.0.1:%d\r\n", port);
    }
    switch (below(12)) {
    case 0: break;
    case 1: buf_puts(r, "Authorization: Bearer 0000\r\n"); break;
    case 2: buf_printf(r, "Authorization: Basic %s\r\n", token); break;
    case 3: buf_printf(r, "Authorization: Bearer %.*s\r\n", (int)below((unsigned)strlen(token)), token); break;
    case 4: buf_printf(r, "Authorization: Bearer %s%s\r\n", token, "x"); break;
    case 5: buf_printf(r, "Authorization: bearer    %s\r\n", token); break;
    default: buf_printf(r, "Authorization: Bearer %s\r\n", token);
    }
    int chunked = has_body && chance(15);
    *complete = 1;
    if (has_body && !chunked) {
        switch (below(10)) {
        case 0: break; /* no length */
        case 1: buf_printf(r, "Content-Length: %zu\r\n", body.len + 1 + below(100)); *complete = 0; break;
        case 2: if (body.len) buf_printf(r, "Content-Length: %u\r\n", below((unsigned)body.len)); break;
        case 3: buf_puts(r, PICK(((const char *[]){"Content-Length: -1\r\n", "Content-Length: abc\r\n",
                                                  "Content-Length: 99999999999999999999999\r\n",
                                                  "Content-Length: 9000000\r\n", "Content-Length: 5000000000\r\n",
                                                  "Content-Length: 1\r\nContent-Length: 2\r\n"})));
                *complete = 0; break;
        default: buf_printf(r, "Content-Length: %zu\r\n", body.len);
        }
    } else if (chunked) {
        buf_puts(r, "Transfer-Encoding: chunked\r\n");
    }
    if (chance(50)) buf_puts(r, PICK(((const char *[]){"Content-Type: application/json\r\n", "Content-Type: text/plain\r\n",
                                                      "Content-Type: multipart/form-data; boundary=x\r\n",
                                                      "Content-Type: application/x-www-form-urlencoded\r\n"})));
    if (chance(10)) buf_puts(r, PICK(((const char *[]){"X-Junk\r\n", ": empty\r\n", "X-A: \x01\x02\r\n", " folded: x\r\n",
                                                      "Expect: 100-continue\r\n", "Connection: keep-alive\r\n",
                                                      "Range: bytes=5-1\r\n", "Accept-Encoding: gzip\r\n"})));
    if (chance(3)) { /* a long header */
        size_t n = 1000 + below(70000);
        buf_puts(r, "X-Long: ");
        for (size_t i = 0; i < n; i++) buf_put(r, "z", 1);
        buf_puts(r, "\r\n");
    }
    buf_puts(r, "Connection: close\r\n\r\n");
    if (chunked) {
        size_t at = 0;
        while (at < body.len) {
            size_t n = 1 + below(4096);
            if (n > body.len - at) n = body.len - at;
            if (chance(5)) buf_printf(r, "%zx;ext=1\r\n", n + (chance(50) ? 7 : 0));
            else buf_printf(r, "%zx\r\n", n);
            buf_put(r, body.data + at, n);
            buf_puts(r, chance(97) ? "\r\n" : "X");
            at += n;
        }
        buf_puts(r, chance(90) ? "0\r\n\r\n" : "zz\r\n");
    } else if (body.len) {
        buf_put(r, body.data, body.len);
    }
    free(path.data);
    free(body.data);
}

/* ---- the wire --------------------------------------------------------------------------------- */

static int connect_daemon(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Read what comes until EOF or timeout_s; the status code of the first status line, 0 when none. */
static int read_status(int fd, double timeout_s, int *eof) {
    char head[64];
    size_t have = 0;
    double end = now_s() + timeout_s;
    *eof = 0;
    for (;;) {
        double left = end - now_s();
        if (left <= 0) break;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r <= 0) break;
        char tmp[65536];
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0) {
            *eof = 1;
            break;
        }
        if (have < sizeof head - 1) {
            size_t k = (size_t)n < sizeof head - 1 - have ? (size_t)n : sizeof head - 1 - have;
            memcpy(head + have, tmp, k);
            have += k;
        }
    }
    head[have] = 0;
    int code = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &code) != 1) code = 0;
    return code;
}

/* ---- bookkeeping ------------------------------------------------------------------------------ */

static buf ring[RING];
static int ring_next;
static long nreq, nclass[6], nnone, n500, ncut;

static void remember(const buf *r) {
    buf *slot = &ring[ring_next];
    ring_next = (ring_next + 1) % RING;
    slot->len = 0;
    buf_put(slot, r->data, r->len);
}

static void save(const char *name, const buf *b) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", outdir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(b->data, 1, b->len, f);
    fclose(f);
}

static void save_ring(void) {
    for (int i = 0; i < RING; i++) {
        buf *b = &ring[(ring_next - 1 - i + 2 * RING) % RING];
        if (!b->len) continue;
        char name[64];
        snprintf(name, sizeof name, "http-fuzz-last-%d.bin", i);
        save(name, b);
    }
    fprintf(stderr, "http_fuzz: the last %d requests are in %s/http-fuzz-last-N.bin (0 = most recent)\n", RING, outdir);
}

/* A well-formed health check: 200 within 10 s. */
static int healthy(void) {
    int fd = connect_daemon();
    if (fd < 0) return 0;
    buf r = {0};
    buf_printf(&r, "GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
                   "Connection: close\r\n\r\n", port, token);
    int eof, code = send_all(fd, r.data, r.len) == 0 ? read_status(fd, 10, &eof) : 0;
    close(fd);
    free(r.data);
    return code == 200;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: http_fuzz PORT TOKEN SECONDS SEED OUTDIR [SPEC.json ...]\n");
        return 2;
    }
    port = atoi(argv[1]);
    token = argv[2];
    double seconds = atof(argv[3]);
    rng_state = strtoull(argv[4], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    outdir = argv[5];
    signal(SIGPIPE, SIG_IGN);
    int verbose = getenv("HTTP_FUZZ_VERBOSE") != NULL;
    for (int i = 6; i < argc && nspecs < 32; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) continue;
        char tmp[65536];
        size_t n = fread(tmp, 1, sizeof tmp, f);
        fclose(f);
        buf_put(&specs[nspecs++], tmp, n);
    }
    double start = now_s(), end = start + seconds;
    int status = 0;
    while (now_s() < end) {
        /* at most MAX_RATE connections a second, so closed connections waiting out TIME_WAIT never
         * use up the loopback's ephemeral ports */
        double ahead = (double)nreq / MAX_RATE - (now_s() - start);
        if (ahead > 0) usleep((useconds_t)(ahead * 1e6));
        buf r = {0};
        int complete;
        build_request(&r, &complete);
        if (chance(5)) { /* two requests in one go */
            int c2;
            build_request(&r, &c2);
        }
        remember(&r);
        int fd = connect_daemon();
        if (fd < 0) {
            fprintf(stderr, "http_fuzz: cannot connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
            status = 1;
            free(r.data);
            break;
        }
        nreq++;
        int how = (int)below(10), eof = 0, code = 0;
        /* umdqd keeps a connection whose client went away mid-request until its 120 s timeout
         * (tests/long/fuzz.sh checks that on its own): cut requests are kept below a rate that
         * leaves most of its 256 connections free, so the rest of the run still gets answers */
        if (how <= 1 && ncut >= 20 + (long)((now_s() - start) * CUT_RATE)) how = 3;
        if (how <= 1) ncut++;
        double t0 = now_s();
        if (how == 0) { /* cut short, then close at once */
            send_all(fd, r.data, below((unsigned)r.len));
        } else if (how == 1) { /* cut short, half-close, read what comes (the server may wait on) */
            send_all(fd, r.data, below((unsigned)r.len));
            shutdown(fd, SHUT_WR);
            code = read_status(fd, 0.25, &eof);
        } else if (how == 2) { /* in pieces */
            size_t at = 0;
            while (at < r.len) {
                size_t n = 1 + below(64);
                if (n > r.len - at) n = r.len - at;
                if (send_all(fd, r.data + at, n) != 0) break;
                at += n;
                if (chance(10)) usleep(1000);
            }
            code = read_status(fd, complete ? 5 : 1, &eof);
        } else {
            if (send_all(fd, r.data, r.len) == 0) code = read_status(fd, complete ? 5 : 1, &eof);
        }
        close(fd);
        if (verbose) {
            const char *nl = memchr(r.data, '\r', r.len);
            static const char *const hows[] = {"cut", "cut+read", "pieces", "whole"};
            int first = nl ? (int)(nl - r.data) < 200 ? (int)(nl - r.data) : 200 : 60;
            fprintf(stderr, "%5.2fs %d %s: %.*s\n", now_s() - t0, code, hows[how < 3 ? how : 3], first, r.data);
        }
        if (code >= 100 && code < 600) nclass[code / 100]++;
        else nnone++;
        if (code == 500) {
            char name[64];
            snprintf(name, sizeof name, "http-fuzz-500-%ld.bin", n500);
            save(name, &r);
            if (n500 < 5) fprintf(stderr, "http_fuzz: HTTP 500 for request %ld (saved as %s)\n", nreq, name);
            n500++;
            status = 1;
        }
        free(r.data);
        if (nreq % 100 == 0 && !healthy()) {
            fprintf(stderr, "http_fuzz: GET /api/health failed after request %ld\n", nreq);
            status = 1;
            break;
        }
    }
    if (status == 0 && !healthy()) {
        fprintf(stderr, "http_fuzz: GET /api/health failed at the end\n");
        status = 1;
    }
    printf("http_fuzz: %ld requests in %.0f s (%ld cut short): %ld 2xx, %ld 3xx, %ld 4xx, %ld 5xx (%ld of them 500), "
           "%ld without an answer\n", nreq, seconds, ncut, nclass[2], nclass[3], nclass[4], nclass[5], n500, nnone);
    if (status != 0) save_ring();
    return status;
}
