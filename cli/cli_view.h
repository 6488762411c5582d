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

/* 1 when some job row of jobs has kind "umd": its results are compared in fixed columns. */
int view_is_umd_sweep(const cJSON *jobs);

/* The jobs table of a sweep answer ({"sweep": {..., "swept": [...]}, "jobs": [...]}): ID, STATE,
 * ATTEMPTS, SEED (only when the seeds differ), one column per swept key, then for a umd sweep the
 * comparison columns some job has (PROBE, LINEAR, PX-PROBE, PX-LINEAR: top-1 of the ridge and
 * linear probes on the model's features and on pixels, in %; FID; VAL-DENOISE, VAL-MASK; IMG/S;
 * DEV-H) and WALL (run_seconds: the wall time of all its attempts), else one column per result key. Caller owns the table (table_destroy); NULL on out of
 * memory. */
cli_table *view_jobs_table(const cJSON *answer);

/* For a umd sweep with several seeds: one row per variant (the jobs whose swept values are equal),
 * its swept values, SEEDS (how many jobs) and each comparison column as mean±sd over the jobs
 * that have it. NULL when there is nothing to average (one seed, not umd) or on out of memory.
 * Caller owns. */
cli_table *view_seed_table(const cJSON *answer);

/* The FID feature network the jobs' "fid_net" results name (borrowed from jobs), NULL when none;
 * *several is set when they name more than one (their FIDs are then not comparable). */
const char *view_fid_net(const cJSON *jobs, int *several);

/* Export of a sweep answer, one row per job. Columns: id, state, seed; then for a sweep of umd
 * jobs the swept keys, the comparison results probe_ridge_top1, probe_linear_top1,
 * pixel_ridge_top1, pixel_linear_top1, fid, fid_net, fid_samples, val_denoise_loss, val_mask_mse,
 * train_img_per_s, device_hours (always, empty where missing), run_seconds (the wall time of all
 * the job's attempts, lost ones included), attempts, and every other result
 * key (sorted); for other sweeps attempts, the swept keys and every result key (sorted).
 * CSV (RFC 4180, CRLF line ends) into b. */
int view_export_csv(const cJSON *answer, strbuf *b);
/* As JSON: an array of objects with those keys in that order (missing results as null).
 * Caller owns; NULL on out of memory. */
cJSON *view_export_json(const cJSON *answer);

#endif
