/* sweep.h: a sweep spec (sweep.json) expanded into jobs.
 *
 * Jobs = base overridden by each "list" entry x the cartesian "grid" x the paired "zip" x seeds.
 * Keys of list/grid/zip are dotted paths into the job config. Every expanded config is checked
 * against schema.h; any problem refuses the whole sweep with every bad key path named. Each job's
 * config is canonical JSON (jsonx.h) without the seed; config_hash is the SHA-256 of that text, and
 * (sweep, config_hash, seed) is the dedupe key, so resubmitting a sweep adds only new points. */
#ifndef UMDQ_SWEEP_H
#define UMDQ_SWEEP_H
#include <stddef.h>
#include <stdint.h>
#include "errlist.h"

#define SWEEP_MAX_JOBS 100000

typedef struct {
    int idx;             /* position in the expansion, from 0 */
    char *config;        /* canonical JSON of the job config (with "kind", without "seed"); owned
                            by the sweep: the texts live in the jobs allocation, jobs that differ
                            only in their seed share one text; never freed on its own */
    char hash[65];       /* SHA-256 hex of config */
    int64_t seed;
    const char *kind;    /* "umd" or "command"; borrowed from a static string */
} sweep_job;

typedef struct {
    char *name;          /* owned */
    char *spec;          /* canonical JSON of the whole spec, owned (its grid and zip keys are
                            sorted, so expanding it again gives the same jobs, maybe in another
                            order) */
    int priority;        /* higher runs first; default 0 */
    int max_attempts;    /* retry.max_attempts, default 3 */
    int retry_on_failure;/* retry.on_failure, default 0 */
    int njobs;
    sweep_job *jobs;     /* njobs entries, owned */
    int nswept;
    char **swept;        /* the dotted keys that vary across jobs (grid, zip, list keys), owned */
} sweep;

/* Parse and expand the spec text. On success *out is owned by the caller (sweep_destroy).
 * Jobs are numbered list entry (outermost) x grid (first key slowest) x zip x seeds (innermost).
 * Also refused: a key both in grid and zip or inside another swept key, a list entry setting a
 * swept key, repeated grid values, zip tuples or list entries (they would make the same job
 * twice), "kind" in grid or zip (give each kind a list entry), more than SWEEP_MAX_JOBS jobs.
 * On failure returns UMDQ_EINVAL and errs holds every problem, each with its key path (paths
 * inside the spec such as "grid.umd.mask_ratio[2]" or config paths such as "umd.mask_ratio"). */
int sweep_expand(const char *text, size_t len, sweep **out, errlist *errs);
void sweep_destroy(sweep **s);

#endif
