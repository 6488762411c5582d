/* zmq_fuzz.c: random frames from ZeroMQ DEALER sockets against a running umdqd (tests/long/fuzz.sh).
 *
 *   zmq_fuzz ENDPOINT SECONDS SEED OUTDIR [TAKEN_NAME]
 *
 * Several DEALER peers (new routing ids from time to time, some binary) send the daemon's ROUTER:
 * JSON objects with the protocol's types and field names whose values have wrong types, wrong
 * ranges or are missing; reports (started, metrics, result, log, finished, busy) carrying the
 * leases of real attempts the daemon handed to a peer that said a proper hello, with mutated
 * bodies; hellos that claim TAKEN_NAME (a live real worker's name); raw bytes, cut JSON, empty,
 * multi-frame and oversized messages. It answers `who` with a hello now and then and keeps the
 * leases of the `job` messages it gets.
 *
 * Prints a summary. Exit status 0; 2 on a usage or ZeroMQ error. The same SEED sends the same
 * messages (up to timing). Whether the daemon survived is for the caller to check; the last
 * messages sent are kept in OUTDIR/zmq-fuzz-last-N.bin (N = 0 the most recent). Not built by the
 * Makefile. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define NPEERS 4
#define RING 16
#define NLEASES 64

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

typedef struct {
    char *data;
    size_t len, cap;
} buf;

static void buf_put(buf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            fprintf(stderr, "zmq_fuzz: out of memory\n");
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
    char tmp[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Leases of real attempts handed to our peers. */
typedef struct {
    long long job, attempt;
    char lease[80];
} lease_ref;
static lease_ref leases[NLEASES];
static int nleases;
static const char *taken_name = "fz-real";

/* ---- values ----------------------------------------------------------------------------------- */

static void a_string(buf *b) {
    static const char *const s[] = {"", "x", "cpu", "cuda:0", "cuda", "command", "umd", "succeeded", "failed",
                                    "cancelled", "preempted", "stale", "\\u0000", "\\ud800", "\\n\\t", "\xc3\x28",
                                    "0123456789abcdef0123456789abcdef", "{params.x}", "hb", "hello", "../../x"};
    if (chance(5)) { /* a long string */
        size_t n = chance(80) ? below(5000) : 70000 + below(200000);
        buf_puts(b, "\"");
        for (size_t i = 0; i < n; i++) buf_put(b, &"abcdefgh"[below(8)], 1);
        buf_puts(b, "\"");
        return;
    }
    buf_printf(b, "\"%s\"", PICK(s));
}

static void a_number(buf *b) {
    static const char *const n[] = {"0", "-1", "1", "2", "3", "1.5", "-0", "1e308", "1e999", "-1e999", "9007199254740993",
                                    "9223372036854775807", "18446744073709551616", "2147483648", "-2147483649",
                                    "4294967296", "1e-320", "0.1", "100000", "1000000000000"};
    if (chance(40)) buf_printf(b, "%d", (int)below(40));
    else buf_puts(b, PICK(n));
}

static void any_value(buf *b, int depth);

static void an_array(buf *b, int depth) {
    buf_puts(b, "[");
    int n = (int)below(depth > 3 ? 2 : 5);
    for (int i = 0; i < n; i++) {
        if (i) buf_puts(b, ",");
        any_value(b, depth + 1);
    }
    buf_puts(b, "]");
}

static void an_object(buf *b, int depth) {
    static const char *const keys[] = {"job", "attempt", "lease", "step", "t", "v", "x", "loss", "", "kinds",
                                       "gpu_name", "memory_mb", "status", "results"};
    buf_puts(b, "{");
    int n = (int)below(depth > 3 ? 2 : 5);
    for (int i = 0; i < n; i++) {
        if (i) buf_puts(b, ",");
        buf_printf(b, "\"%s%s\":", PICK(keys), chance(30) ? "2" : ""); /* no repeated keys, mostly */
        any_value(b, depth + 1);
    }
    buf_puts(b, "}");
}

static void any_value(buf *b, int depth) {
    switch (below(depth > 4 ? 4 : 6)) {
    case 0: a_number(b); break;
    case 1: a_string(b); break;
    case 2: buf_puts(b, PICK(((const char *[]){"null", "true", "false"}))); break;
    case 3: a_number(b); break;
    case 4: an_array(b, depth); break;
    default: an_object(b, depth);
    }
}

/* A value for a field that wants kind 'i' (integer), 's' (string), 'o' (object), 'a' (array):
 * mostly right, often wrong. */
static void field_value(buf *b, char kind, int real_int, const char *real_str) {
    if (chance(30)) { /* wrong: anything */
        any_value(b, 1);
        return;
    }
    switch (kind) {
    case 'i': if (real_int >= 0 && chance(70)) buf_printf(b, "%d", real_int); else a_number(b); break;
    case 's': if (real_str && chance(70)) buf_printf(b, "\"%s\"", real_str); else a_string(b); break;
    case 'o': an_object(b, 1); break;
    default: an_array(b, 1);
    }
}

/* ---- messages --------------------------------------------------------------------------------- */

static void running_obj(buf *b, const lease_ref *l) {
    if (chance(20)) {
        any_value(b, 2);
        return;
    }
    buf_puts(b, "{\"job\":");
    field_value(b, 'i', l ? (int)l->job : -1, NULL);
    buf_puts(b, ",\"attempt\":");
    field_value(b, 'i', l ? (int)l->attempt : -1, NULL);
    buf_puts(b, ",\"lease\":");
    field_value(b, 's', -1, l ? l->lease : NULL);
    buf_puts(b, ",\"step\":");
    field_value(b, 'i', (int)below(1000), NULL);
    buf_puts(b, "}");
}

static void points(buf *b) {
    if (chance(15)) {
        any_value(b, 1);
        return;
    }
    buf_puts(b, "[");
    int n = chance(95) ? (int)below(20) : 900 + (int)below(300);
    for (int i = 0; i < n; i++) {
        if (i) buf_puts(b, ",");
        if (chance(85)) {
            buf_puts(b, "[");
            field_value(b, 's', -1, PICK(((const char *[]){"loss", "m", "lr", "", "a.b"})));
            buf_puts(b, ",");
            field_value(b, 'i', (int)below(100), NULL);
            buf_puts(b, ",");
            a_number(b);
            buf_puts(b, "]");
        } else {
            any_value(b, 2);
        }
    }
    buf_puts(b, "]");
}

static void finished_body(buf *b, const lease_ref *l, int wrap) {
    if (wrap) buf_puts(b, "{\"t\":\"finished\",\"v\":1,");
    else buf_puts(b, "{");
    buf_puts(b, "\"job\":");
    field_value(b, 'i', l ? (int)l->job : -1, NULL);
    buf_puts(b, ",\"attempt\":");
    field_value(b, 'i', l ? (int)l->attempt : -1, NULL);
    buf_puts(b, ",\"lease\":");
    field_value(b, 's', -1, l ? l->lease : NULL);
    buf_puts(b, ",\"status\":");
    field_value(b, 's', -1, PICK(((const char *[]){"succeeded", "failed", "cancelled", "preempted", "exploded"})));
    if (chance(80)) {
        buf_puts(b, ",\"exit_code\":");
        field_value(b, 'i', (int)below(3), NULL);
    }
    if (chance(80)) {
        buf_puts(b, ",\"signal\":");
        if (chance(50)) buf_puts(b, "null");
        else field_value(b, 'i', (int)below(70), NULL);
    }
    if (chance(80)) {
        buf_puts(b, ",\"error\":");
        field_value(b, 's', -1, "boom");
    }
    if (chance(80)) {
        buf_puts(b, ",\"results\":");
        if (chance(60)) {
            buf_puts(b, "{\"y\":");
            any_value(b, 2);
            buf_puts(b, ",\"z\":");
            any_value(b, 2);
            buf_puts(b, "}");
        } else {
            any_value(b, 1);
        }
    }
    buf_puts(b, "}");
}

static void hello(buf *b, const char *name, const lease_ref *l) {
    buf_puts(b, "{\"t\":\"hello\",\"v\":1,\"name\":");
    field_value(b, 's', -1, name);
    buf_puts(b, ",\"host\":");
    field_value(b, 's', -1, "fuzzhost");
    buf_puts(b, ",\"device\":");
    field_value(b, 's', -1, "cpu");
    buf_puts(b, ",\"backend\":");
    field_value(b, 's', -1, chance(80) ? "cpu" : "cuda");
    buf_puts(b, ",\"pid\":");
    field_value(b, 'i', 4242, NULL);
    buf_puts(b, ",\"capabilities\":");
    static const char *const caps[] = {"{\"kinds\":[\"command\"]}",
                                       "{\"kinds\":[\"command\",\"umd\"],\"gpu_name\":null,\"memory_mb\":1}",
                                       "{\"kinds\":\"command\"}", "{\"kinds\":[1,null,{}]}", "{}"};
    if (chance(70)) buf_puts(b, PICK(caps));
    else any_value(b, 1);
    buf_puts(b, ",\"running\":");
    if (chance(60)) buf_puts(b, "null");
    else running_obj(b, l);
    buf_puts(b, ",\"finished\":");
    if (chance(60)) {
        buf_puts(b, "[]");
    } else {
        buf_puts(b, "[");
        int n = (int)below(4);
        for (int i = 0; i < n; i++) {
            if (i) buf_puts(b, ",");
            if (chance(80)) finished_body(b, l, 1);
            else any_value(b, 2);
        }
        buf_puts(b, "]");
    }
    buf_puts(b, "}");
}

static void a_report(buf *b, const char *type, const lease_ref *l) {
    buf_printf(b, "{\"t\":\"%s\",\"v\":", type);
    if (chance(95)) buf_puts(b, "1");
    else any_value(b, 2);
    buf_puts(b, ",\"job\":");
    field_value(b, 'i', l ? (int)l->job : -1, NULL);
    buf_puts(b, ",\"attempt\":");
    field_value(b, 'i', l ? (int)l->attempt : -1, NULL);
    buf_puts(b, ",\"lease\":");
    field_value(b, 's', -1, l ? l->lease : NULL);
    if (strcmp(type, "started") == 0) {
        buf_puts(b, ",\"pid\":");
        field_value(b, 'i', 4242, NULL);
    } else if (strcmp(type, "metrics") == 0) {
        buf_puts(b, ",\"points\":");
        points(b);
    } else if (strcmp(type, "result") == 0) {
        buf_puts(b, ",\"results\":");
        if (chance(70)) an_object(b, 1);
        else any_value(b, 1);
    } else if (strcmp(type, "log") == 0) {
        buf_puts(b, ",\"offset\":");
        if (chance(30)) buf_printf(b, "%u", below(200));
        else a_number(b);
        buf_puts(b, ",\"data\":");
        field_value(b, 's', -1, "some output\\n");
    }
    buf_puts(b, "}");
}

/* One message into b, from a peer that holds lease l (or NULL). */
static void a_message(buf *b, const char *name, const lease_ref *l) {
    switch (below(14)) {
    case 0: hello(b, chance(15) ? taken_name : name, l); break;
    case 1: case 2:
        buf_puts(b, "{\"t\":\"hb\",\"v\":1");
        if (chance(90)) {
            buf_puts(b, ",\"running\":");
            if (chance(40)) buf_puts(b, "null");
            else running_obj(b, l);
        }
        buf_puts(b, "}");
        break;
    case 3: a_report(b, "started", l); break;
    case 4: case 5: a_report(b, "metrics", l); break;
    case 6: a_report(b, "result", l); break;
    case 7: a_report(b, "log", l); break;
    case 8: case 9: finished_body(b, l, 1); break;
    case 10: a_report(b, "busy", l); break;
    case 11: { /* an unknown or odd type, or no type */
        buf_puts(b, "{");
        if (chance(70)) {
            buf_puts(b, "\"t\":");
            static const char *const types[] = {"welcome", "job", "ack", "who", "cancel", "reject", "HB", ""};
            field_value(b, 's', -1, PICK(types));
            buf_puts(b, ",");
        }
        buf_puts(b, "\"v\":1}");
        break;
    }
    case 12: any_value(b, 0); break;
    default: { /* bytes */
        size_t n = below(300);
        for (size_t i = 0; i < n; i++) {
            char c = (char)below(256);
            buf_put(b, &c, 1);
        }
    }
    }
    if (chance(5) && b->len > 1) { /* cut */
        b->len = below((unsigned)b->len);
        b->data[b->len] = 0;
    }
}

/* ---- peers ------------------------------------------------------------------------------------ */

typedef struct {
    void *sock;
    char name[64];
    int said_hello;
    lease_ref mine;   /* the attempt the daemon gave this peer (job 0 = none) */
} peer;

static void *zctx;
static peer peers[NPEERS];
static const char *endpoint;
static long nsent, nrecv, nrejected, njobs, nnew;

static void peer_open(peer *p, int i) {
    if (p->sock) zmq_close(p->sock);
    p->sock = zmq_socket(zctx, ZMQ_DEALER);
    int linger = 0, hwm = 10000;
    zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(p->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    char rid[256];
    size_t rlen;
    snprintf(p->name, sizeof p->name, "fz/%d-%u", i, below(1000));
    if (chance(80)) {
        rlen = (size_t)snprintf(rid, sizeof rid, "%s#%016llx", p->name, (unsigned long long)rnd());
    } else { /* a binary routing id (ZeroMQ refuses a leading zero byte) */
        rlen = 1 + below(255);
        for (size_t k = 0; k < rlen; k++) rid[k] = (char)below(256);
        if (!rid[0]) rid[0] = 1;
    }
    zmq_setsockopt(p->sock, ZMQ_ROUTING_ID, rid, rlen);
    if (zmq_connect(p->sock, endpoint) != 0) {
        fprintf(stderr, "zmq_fuzz: connect %s: %s\n", endpoint, zmq_strerror(errno));
        exit(2);
    }
    p->said_hello = 0;
    p->mine.job = 0;
    nnew++;
}

static buf ring[RING];
static int ring_next;

static void send_frames(peer *p, const buf *b, int frames) {
    buf *slot = &ring[ring_next];
    ring_next = (ring_next + 1) % RING;
    slot->len = 0;
    buf_put(slot, b->data ? b->data : "", b->len);
    for (int f = 0; f < frames; f++) {
        int more = f + 1 < frames ? ZMQ_SNDMORE : 0;
        if (zmq_send(p->sock, b->data ? b->data : "", f == 0 ? b->len : below(10), ZMQ_DONTWAIT | more) < 0) break;
    }
    nsent++;
}

/* A well-formed hello for p, with what it runs. */
static void proper_hello(peer *p) {
    buf b = {0};
    buf_printf(&b, "{\"t\":\"hello\",\"v\":1,\"name\":\"%s\",\"host\":\"fuzzhost\",\"device\":\"cpu\",\"backend\":\"cpu\","
                   "\"pid\":4242,\"capabilities\":{\"kinds\":[\"command\"]},\"running\":",
               p->name);
    if (p->mine.job) buf_printf(&b, "{\"job\":%lld,\"attempt\":%lld,\"lease\":\"%s\",\"step\":0}", p->mine.job,
                                p->mine.attempt, p->mine.lease);
    else buf_puts(&b, "null");
    buf_puts(&b, ",\"finished\":[]}");
    send_frames(p, &b, 1);
    p->said_hello = 1;
    free(b.data);
}

/* Pull a JSON integer / string field out of a daemon message (no JSON library needed here). */
static long long field_int(const char *m, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(m, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : 0;
}
static void field_str(const char *m, const char *key, char *out, size_t n) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(m, pat);
    out[0] = 0;
    if (!p) return;
    p += strlen(pat);
    size_t k = 0;
    while (p[k] && p[k] != '"' && k + 1 < n) k++;
    memcpy(out, p, k);
    out[k] = 0;
}

static void receive(peer *p) {
    for (int i = 0; i < 100; i++) {
        char m[8192];
        int n = zmq_recv(p->sock, m, sizeof m - 1, ZMQ_DONTWAIT);
        if (n < 0) return;
        if (n > (int)sizeof m - 1) n = sizeof m - 1;
        m[n] = 0;
        nrecv++;
        if (strstr(m, "\"t\":\"job\"")) {
            lease_ref l;
            l.job = field_int(m, "job");
            l.attempt = field_int(m, "attempt");
            field_str(m, "lease", l.lease, sizeof l.lease);
            if (l.job > 0 && l.lease[0]) {
                p->mine = l;
                leases[nleases < NLEASES ? nleases++ : (int)below(NLEASES)] = l;
                njobs++;
            }
        } else if (strstr(m, "\"t\":\"who\"")) {
            if (chance(70)) proper_hello(p);
        } else if (strstr(m, "\"t\":\"reject\"")) {
            nrejected++;
            p->said_hello = 0;
        } else if (strstr(m, "\"t\":\"ack\"")) {
            if (p->mine.job == field_int(m, "job")) p->mine.job = 0;
        }
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: zmq_fuzz ENDPOINT SECONDS SEED OUTDIR [TAKEN_NAME]\n");
        return 2;
    }
    endpoint = argv[1];
    double seconds = atof(argv[2]);
    rng_state = strtoull(argv[3], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    const char *outdir = argv[4];
    if (argc > 5) taken_name = argv[5];
    zctx = zmq_ctx_new();
    if (!zctx) return 2;
    for (int i = 0; i < NPEERS; i++) peer_open(&peers[i], i);
    double end = now_s() + seconds;
    long big = 0;
    while (now_s() < end) {
        int i = (int)below(NPEERS);
        peer *p = &peers[i];
        receive(p);
        if (chance(1)) peer_open(p, i); /* a new peer (a restarted worker) */
        if (!p->said_hello && chance(30)) proper_hello(p);
        const lease_ref *l = p->mine.job && chance(60) ? &p->mine
                             : nleases && chance(60)    ? &leases[below((unsigned)nleases)]
                                                        : NULL;
        buf b = {0};
        int frames = 1;
        if (chance(1) && big < 5) { /* larger than the protocol's 4 MiB */
            size_t n = (4u << 20) + 1 + below(1000);
            buf_puts(&b, "{\"t\":\"log\",\"v\":1,\"data\":\"");
            while (b.len < n) buf_puts(&b, "xxxxxxxxxxxxxxxx");
            buf_puts(&b, "\"}");
            big++;
        } else {
            a_message(&b, p->name, l);
            if (chance(3)) frames = chance(50) ? 0 : 2 + (int)below(3);
        }
        if (frames == 0) { /* an empty frame */
            b.len = 0;
            frames = 1;
        }
        send_frames(p, &b, frames);
        free(b.data);
        if (nsent % 200 == 0) usleep(20000); /* let the daemon breathe: this is about content, not load */
    }
    for (int i = 0; i < RING; i++) {
        buf *b = &ring[(ring_next - 1 - i + 2 * RING) % RING];
        char path[4096];
        snprintf(path, sizeof path, "%s/zmq-fuzz-last-%d.bin", outdir, i);
        FILE *f = fopen(path, "wb");
        if (f) {
            fwrite(b->data ? b->data : "", 1, b->len, f);
            fclose(f);
        }
    }
    printf("zmq_fuzz: %ld messages in %.0f s from %ld peers; %ld received, %ld job messages, %ld rejects\n", nsent,
           seconds, nnew, nrecv, njobs, nrejected);
    for (int i = 0; i < NPEERS; i++) zmq_close(peers[i].sock);
    zmq_ctx_term(zctx);
    return 0;
}
