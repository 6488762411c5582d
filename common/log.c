/* log.c: timestamped, leveled log lines ("2026-11-26T03:57:51.123Z umdqd[1234] WARN msg") to
 * stderr or an append-only file; one mutex keeps lines from different threads whole. */
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

    pthread_mutex_lock(&log_lock);
    FILE *f = log_file ? log_file : stderr;
    fprintf(f, "%s.%03dZ %s[%d] %s %s\n", stamp, (int)(ts.tv_nsec / 1000000), log_prog, (int)getpid(),
            level_name(lvl), msg);
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
