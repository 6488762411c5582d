/* cli_view.h: reading the daemon's JSON answers (docs/api.md) into what umdq shows: counts of a
 * sweep, the columns of a jobs table, export rows. */
#ifndef UMDQ_CLI_VIEW_H
#define UMDQ_CLI_VIEW_H
#include <cjson/cJSON.h>

#include "cli_table.h"
#include "util.h"

/* The job states that are final (SUCCEEDED, FAILED, LOST, PREEMPTED, CANCELLED): 1 or 0. */
int view_state_final(const char *state);

/* Counts of a SWEEP_SUMMARY ("counts" object): total, open (QUEUED + RUNNING), running,
 * succeeded, failed (FAILED + LOST + PREEMPTED), cancelled. */
typedef struct {
    int total, queued, running, succeeded, failed, cancelled;
} view_counts;
void view_sweep_counts(const cJSON *summary, view_counts *out);

/* The sorted, distinct keys of the "results" objects of all job rows. *keys is owned by the
 * caller (free the array only: the strings are borrowed from jobs). Returns how many, or -1 on
 * out of memory. */
int view_result_keys(const cJSON *jobs, const char ***keys);

/* The jobs table of a sweep answer ({"sweep": {..., "swept": [...]}, "jobs": [...]}): ID, STATE,
 * ATTEMPTS, SEED (only when the seeds differ), one column per swept key, one per result key.
 * Caller owns the table (table_destroy); NULL on out of memory. */
cli_table *view_jobs_table(const cJSON *answer);

/* Export of a sweep answer: the header names (id, state, seed, attempts, swept keys, result keys)
 * and one row per job. CSV (RFC 4180, CRLF line ends) into b. */
int view_export_csv(const cJSON *answer, strbuf *b);
/* As JSON: an array of objects with those keys in that order (missing results as null).
 * Caller owns; NULL on out of memory. */
cJSON *view_export_json(const cJSON *answer);

#endif
