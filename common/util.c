/* util.c: clocks, files, randomness, shell quoting, host:port parsing and a string builder. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "umdq.h"
#include "util.h"

int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void time_iso8601(double t, char *buf, size_t n) {
    if (!buf || n == 0) return;
    time_t secs = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) {
        snprintf(buf, n, "?");
        return;
    }
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int mkdir_p(const char *path, mode_t mode) {
    if (!path || !*path) return UMDQ_EINVAL;
    char *p = strdup(path);
    if (!p) return UMDQ_ENOMEM;
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, mode) != 0 && errno != EEXIST) {
                rc = UMDQ_EIO;
                goto fail;
            }
            *s = c;
            if (c == 0) break;
        }
    }
    struct stat st;
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) rc = UMDQ_EIO;
fail:
    free(p);
    return rc;
}

int read_file(const char *path, char **data, size_t *len, size_t max, char *err, size_t errlen) {
    int rc = 0;
    char *buf = NULL; /* owned until handed to *data */
    size_t n = 0, cap = 0;
    *data = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return errno == ENOENT ? UMDQ_ENOTFOUND : UMDQ_EIO;
    }
    for (;;) {
        if (cap - n < 2) {
            size_t ncap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                snprintf(err, errlen, "out of memory reading %s", path);
                rc = UMDQ_ENOMEM;
                goto fail;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0) {
            if (errno == EINTR) continue;
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            rc = UMDQ_EIO;
            goto fail;
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n > max) {
            snprintf(err, errlen, "%s is larger than %zu bytes", path, max);
            rc = UMDQ_EINVAL;
            goto fail;
        }
    }
    buf[n] = 0;
    *data = buf;
    if (len) *len = n;
    buf = NULL;
fail:
    free(buf);
    close(fd);
    return rc;
}

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                      char *err, size_t errlen) {
    int rc = 0, fd = -1, dfd = -1;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);  /* owned */
    char *dir = strdup(path);      /* owned */
    if (!tmp || !dir) {
        snprintf(err, errlen, "out of memory");
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    if (fchmod(fd, mode) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) fsync(dfd);
fail:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    if (dfd >= 0) close(dfd);
    free(tmp);
    free(dir);
    return rc;
}

int random_hex(char *out, size_t nhex) {
    static const char digits[] = "0123456789abcdef";
    unsigned char bytes[64];
    size_t done = 0;
    while (done < nhex) {
        size_t want = (nhex - done + 1) / 2;
        if (want > sizeof bytes) want = sizeof bytes;
        size_t got = 0;
        while (got < want) {
            ssize_t r = getrandom(bytes + got, want - got, 0);
            if (r < 0) {
                if (errno == EINTR) continue;
                out[0] = 0;
                return UMDQ_EIO;
            }
            got += (size_t)r;
        }
        for (size_t i = 0; i < want && done < nhex; i++) {
            out[done++] = digits[bytes[i] >> 4];
            if (done < nhex) out[done++] = digits[bytes[i] & 15];
        }
    }
    out[nhex] = 0;
    return 0;
}

char *shell_quote(const char *s) {
    strbuf b;
    strbuf_init(&b);
    strbuf_append(&b, "'", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '\'')
            strbuf_append(&b, "'\\''", 4);
        else
            strbuf_append(&b, p, 1);
    }
    strbuf_append(&b, "'", 1);
    return strbuf_steal(&b);
}

int hostport_parse(const char *s, char *host, size_t hostlen, int *port, char *err, size_t errlen) {
    const char *orig = s;
    if (!s || !*s) {
        snprintf(err, errlen, "empty address (want HOST:PORT)");
        return UMDQ_EINVAL;
    }
    if (strncmp(s, "tcp://", 6) == 0) s += 6;
    const char *h = s, *hend, *colon;
    if (*s == '[') {
        h = s + 1;
        hend = strchr(h, ']');
        if (!hend || hend[1] != ':') {
            snprintf(err, errlen, "bad address \"%s\" (want [IPV6]:PORT)", orig);
            return UMDQ_EINVAL;
        }
        colon = hend + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) {
            snprintf(err, errlen, "bad address \"%s\" (want HOST:PORT)", orig);
            return UMDQ_EINVAL;
        }
        hend = colon;
        if (memchr(h, ':', (size_t)(hend - h))) {
            snprintf(err, errlen, "bad address \"%s\" (write IPv6 hosts as [ADDR]:PORT)", orig);
            return UMDQ_EINVAL;
        }
    }
    size_t hl = (size_t)(hend - h);
    if (hl == 0) {
        snprintf(err, errlen, "bad address \"%s\": no host", orig);
        return UMDQ_EINVAL;
    }
    if (hl >= hostlen) {
        snprintf(err, errlen, "bad address \"%s\": host too long", orig);
        return UMDQ_EINVAL;
    }
    const char *ps = colon + 1;
    long p = 0;
    if (strcmp(ps, "*") == 0) {
        p = 0;
    } else {
        if (!*ps) {
            snprintf(err, errlen, "bad address \"%s\": no port", orig);
            return UMDQ_EINVAL;
        }
        for (const char *q = ps; *q; q++) {
            if (*q < '0' || *q > '9' || q - ps > 5) {
                snprintf(err, errlen, "bad address \"%s\": port must be a number in [0, 65535]", orig);
                return UMDQ_EINVAL;
            }
        }
        p = strtol(ps, NULL, 10);
        if (p > 65535) {
            snprintf(err, errlen, "bad address \"%s\": port must be a number in [0, 65535]", orig);
            return UMDQ_EINVAL;
        }
    }
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (int)p;
    return 0;
}

int host_check_loopback(const char *host, char *err, size_t errlen) {
    struct in_addr a4;
    struct in6_addr a6;
    char buf[64];
    if (!host) host = "";
    size_t n = strlen(host);
    /* accept "[::1]" as well as "::1" */
    if (n >= 2 && n < sizeof buf && host[0] == '[' && host[n - 1] == ']') {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = 0;
    } else {
        snprintf(buf, sizeof buf, "%s", host);
    }
    if (strcasecmp(buf, "localhost") == 0) return 0;
    if (inet_pton(AF_INET, buf, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127) return 0;
    if (inet_pton(AF_INET6, buf, &a6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&a6)) return 0;
        if (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127) return 0;
    }
    snprintf(err, errlen,
             "%s is not a loopback address: authenticated multi-host transport is not available "
             "yet (use 127.0.0.1)", host);
    return UMDQ_EINVAL;
}

void strbuf_init(strbuf *b) {
    b->len = 0;
    b->oom = 0;
    b->cap = 64;
    b->data = malloc(b->cap);
    if (!b->data) {
        b->cap = 0;
        b->oom = 1;
    } else {
        b->data[0] = 0;
    }
}

void strbuf_free(strbuf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int strbuf_reserve(strbuf *b, size_t extra) {
    if (b->oom) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = 1;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void strbuf_append(strbuf *b, const char *s, size_t n) {
    if (strbuf_reserve(b, n) != 0) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

void strbuf_puts(strbuf *b, const char *s) {
    strbuf_append(b, s, strlen(s));
}

void strbuf_printf(strbuf *b, const char *fmt, ...) {
    if (strbuf_reserve(b, 63) != 0) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= b->cap - b->len) {
        if (strbuf_reserve(b, (size_t)n) != 0) {
            if (b->data) b->data[b->len] = 0;
            return;
        }
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

char *strbuf_steal(strbuf *b) {
    char *d = b->data;
    if (b->oom) {
        free(d);
        d = NULL;
    }
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
    return d;
}
