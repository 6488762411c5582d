/* log.c: timestamped, leveled log lines ("2026-11-26T03:57:51.123Z umdqd[1234] WARN msg") to
 * stderr or an append-only file; one mutex keeps lines from different threads whole. A message is
 * one line of valid UTF-8 whatever it holds: a control character or a byte that is not part of a
 * valid UTF-8 sequence is written as \xNN, so text a peer controls cannot forge a line. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "log.h"
#include "umdq.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_file;          /* owned when log_owned; else stderr (or NULL = stderr) */
static int log_owned;
static char log_prog[64] = "umdq";
static int log_min = LOG_INFO; /* a log_level; read without the lock, so atomic */

static const char *level_name(log_level l) {
    switch (l) {
    case LOG_DEBUG: return "DEBUG";
    case LOG_INFO: return "INFO";
    case LOG_WARN: return "WARN";
    default: return "ERROR";
    }
}

int log_init(const char *prog, const char *path, log_level min) {
    FILE *f = NULL;
    if (path) {
        f = fopen(path, "ae");
        if (!f) return UMDQ_EIO;
        setvbuf(f, NULL, _IOLBF, 0);
    }
    pthread_mutex_lock(&log_lock);
    if (log_owned && log_file) fclose(log_file);
    log_file = f;
    log_owned = f != NULL;
    snprintf(log_prog, sizeof log_prog, "%s", prog ? prog : "umdq");
    __atomic_store_n(&log_min, (int)min, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&log_lock);
    return 0;
}

/* Length of the valid UTF-8 sequence (2 to 4 bytes) at p, or 0 (overlong forms, surrogates and
 * code points past U+10FFFF are not valid). */
static size_t utf8_len(const unsigned char *p) {
    unsigned c = p[0];
    size_t n;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07;
    else return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return n;
}

/* msg with control characters and invalid UTF-8 bytes written as \xNN, into out (n bytes). */
static void escape_line(const char *msg, char *out, size_t n) {
    const unsigned char *p = (const unsigned char *)msg;
    size_t j = 0;
    while (*p && j + 5 < n) {
        size_t k = *p >= 0x80 ? utf8_len(p) : 1;
        if (*p < 0x20 || *p == 0x7f || k == 0) {
            j += (size_t)snprintf(out + j, n - j, "\\x%02x", *p);
            p++;
        } else {
            memcpy(out + j, p, k);
            j += k;
            p += k;
        }
    }
    out[j] = 0;
}

void log_set_level(log_level min) {
    __atomic_store_n(&log_min, (int)min, __ATOMIC_RELAXED);
}

void log_msg(log_level lvl, const char *fmt, ...) {
    if ((int)lvl < __atomic_load_n(&log_min, __ATOMIC_RELAXED)) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[40];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    char line[4 * sizeof msg];
    escape_line(msg, line, sizeof line);

    pthread_mutex_lock(&log_lock);
    FILE *f = log_file ? log_file : stderr;
    fprintf(f, "%s.%03dZ %s[%d] %s %s\n", stamp, (int)(ts.tv_nsec / 1000000), log_prog, (int)getpid(),
            level_name(lvl), line);
    fflush(f);
    pthread_mutex_unlock(&log_lock);
}

void log_close(void) {
    pthread_mutex_lock(&log_lock);
    if (log_owned && log_file) fclose(log_file);
    log_file = NULL;
    log_owned = 0;
    pthread_mutex_unlock(&log_lock);
}
