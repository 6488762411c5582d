/* log.h: timestamped, leveled log lines to stderr or a file; thread-safe. */
#ifndef UMDQ_LOG_H
#define UMDQ_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level;

/* prog names the process in each line; path NULL logs to stderr. Returns 0 or UMDQ_EIO.
 * Lines look like "2026-11-26T03:57:51.123Z umdqd[1234] WARN message". */
int log_init(const char *prog, const char *path, log_level min);
void log_set_level(log_level min);
void log_msg(log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_close(void);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
