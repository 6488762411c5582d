/* query.h: the read side of the HTTP API (docs/api.md): JSON documents built from a database
 * connection, normally one of the HTTP threads' read-only connections. Functions return 0 with
 * *out owned by the caller (cJSON_Delete), or a negative UMDQ_E* code and a message. Run several
 * in one read transaction when they must agree. */
#ifndef UMDQ_QUERY_H
#define UMDQ_QUERY_H
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

struct sqlite3;

#define QUERY_LOG_MAX (1u << 20)        /* default and largest `max` of a log read */
#define QUERY_METRICS_DEFAULT 2000      /* default max_points */
#define QUERY_METRICS_MAX 100000

/* A SWEEP reference: a numeric id or a name. UMDQ_ENOTFOUND when there is none. */
int query_sweep_resolve(struct sqlite3 *db, const char *ref, int64_t *id, char *err, size_t errlen);
/* 1 when the job exists, 0 when not, negative on error. */
int query_job_exists(struct sqlite3 *db, int64_t job);

/* {"sweeps": [SWEEP_SUMMARY, ...]}, newest first. */
int query_sweeps(struct sqlite3 *db, cJSON **out, char *err, size_t errlen);
/* {"sweep": SWEEP_SUMMARY + spec + swept, "jobs": [JOB_ROW...]}; state (may be NULL) filters the
 * rows; with_jobs 0 leaves them out. */
int query_sweep(struct sqlite3 *db, int64_t sweep, const char *state, int with_jobs, cJSON **out,
                char *err, size_t errlen);
/* {"job": JOB_ROW + sweep, sweep_name, config, config_hash, "attempts": [...]} */
int query_job(struct sqlite3 *db, int64_t job, cJSON **out, char *err, size_t errlen);
/* {"job": id, "series": [{"key", "points": [[step, value], ...]}]}; key may be NULL (all). */
int query_job_metrics(struct sqlite3 *db, int64_t job, const char *key, int max_points, cJSON **out,
                      char *err, size_t errlen);
/* {"job", "offset", "next", "size", "data", "state"} from log_dir/JOB.log; a negative offset
 * counts from the end; max is capped at QUERY_LOG_MAX. */
int query_job_log(struct sqlite3 *db, const char *log_dir, int64_t job, int64_t offset, int64_t max,
                  cJSON **out, char *err, size_t errlen);
/* {"workers": [...]} */
int query_workers(struct sqlite3 *db, cJSON **out, char *err, size_t errlen);

/* How many jobs are in each state (order of QUERY_JOB_STATES) and workers in each state (order of
 * QUERY_WORKER_STATES). */
#define QUERY_NJOB_STATES 7
#define QUERY_NWORKER_STATES 4
extern const char *const QUERY_JOB_STATES[QUERY_NJOB_STATES];
extern const char *const QUERY_WORKER_STATES[QUERY_NWORKER_STATES];
int query_counts(struct sqlite3 *db, int64_t jobs[QUERY_NJOB_STATES], int64_t workers[QUERY_NWORKER_STATES],
                 char *err, size_t errlen);

/* data[0..len) with invalid UTF-8 replaced by U+FFFD. When at_end is 0, an incomplete sequence at the
 * very end is left out and *used says how many input bytes were taken. Caller frees. */
char *query_utf8_clean(const char *data, size_t len, int at_end, size_t *used);

#endif
