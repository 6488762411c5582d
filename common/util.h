/* util.h: small helpers shared by every part: time, files, randomness, quoting, addresses. */
#ifndef UMDQ_UTIL_H
#define UMDQ_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

int64_t now_ms(void);    /* wall clock, milliseconds since the epoch */
double now_s(void);      /* wall clock, seconds since the epoch (fractional) */
int64_t mono_ms(void);   /* monotonic clock, milliseconds */
double mono_s(void);     /* monotonic clock, seconds (fractional) */
/* "2026-11-26T03:57:51Z" for a wall-clock time in seconds; buf of at least 32 bytes. */
void time_iso8601(double t, char *buf, size_t n);

/* mkdir -p; 0 or UMDQ_EIO. */
int mkdir_p(const char *path, mode_t mode);
/* Read a whole file (at most max bytes, else UMDQ_EINVAL). *data is NUL-terminated, caller frees. */
int read_file(const char *path, char **data, size_t *len, size_t max, char *err, size_t errlen);
/* Write path.tmp, fsync, rename over path, fsync the directory. */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                      char *err, size_t errlen);

/* nhex lower-case hex characters from the kernel's random source, NUL-terminated (out has
 * nhex + 1 bytes). 0 or UMDQ_EIO. */
int random_hex(char *out, size_t nhex);

/* s quoted for /bin/sh: 'it'\''s'. Caller frees; NULL on out of memory. */
char *shell_quote(const char *s);

/* Split "HOST:PORT", "[::1]:PORT" or "tcp://HOST:PORT" (port may be 0 or "*" = any free port,
 * given as 0). 0, or UMDQ_EINVAL with a message. */
int hostport_parse(const char *s, char *host, size_t hostlen, int *port, char *err, size_t errlen);
/* 0 when host is a loopback address (127.0.0.0/8, ::1, localhost); otherwise UMDQ_EINVAL and a
 * message saying that authenticated multi-host transport is not available yet. */
int host_check_loopback(const char *host, char *err, size_t errlen);

/* A bounded string builder (for messages, CSV, SQL). */
typedef struct {
    char *data;   /* owned; NUL-terminated */
    size_t len, cap;
    int oom;      /* set once an allocation failed; further appends are ignored */
} strbuf;
void strbuf_init(strbuf *b);
void strbuf_free(strbuf *b);
void strbuf_append(strbuf *b, const char *s, size_t n);
void strbuf_puts(strbuf *b, const char *s);
void strbuf_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Returns data (caller frees; NULL when an append ran out of memory) and leaves b empty with no
 * allocation (data NULL): it may be appended to again or dropped without strbuf_free. */
char *strbuf_steal(strbuf *b);

#endif
