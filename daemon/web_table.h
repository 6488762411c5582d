/* web_table.h: the dashboard's sweep table, GET /api/sweeps/SWEEP/table (docs/api.md): every job
 * of a sweep as one compact row of columns (swept values and results included), written straight
 * into a buffer rather than built as a cJSON tree, so that a sweep of 10,000 jobs answers in tens
 * of milliseconds.
 *
 * A job's swept values come from its config, which never changes once written: they are parsed
 * once and kept (for the last WEB_TABLE_SWEEPS sweeps asked for) until the sweep's list of swept
 * keys changes. Results are read on every call (those of each job's latest attempt that has any,
 * as in GET /api/sweeps/SWEEP). */
#ifndef UMDQ_WEB_TABLE_H
#define UMDQ_WEB_TABLE_H
#include <stddef.h>
#include <stdint.h>
#include "util.h"

#define WEB_TABLE_SWEEPS 8

struct sqlite3;
typedef struct web_table web_table;

/* 0 or UMDQ_ENOMEM; *out owned by the caller. */
int web_table_new(web_table **out);
/* Accepts NULL, NULLs the pointer. */
void web_table_destroy(web_table **t);
/* Append the table of sweep (an id) to out as JSON:
 *   {"sweep": 3, "swept": ["umd.r_t0", ...], "results": ["fid", ...],
 *    "columns": ["id", "idx", "state", "attempts", "step", "seed", "worker", "params", "results"],
 *    "rows": [[12, 0, "SUCCEEDED", 1, 20000, 0, "host/cuda0", [0.5, ...], [31.2, ...]], ...]}
 * params in the order of "swept", results in the order of "results" (null where a job has none);
 * rows in the order of the sweep's jobs. Numbers print with at most 10 significant digits.
 * Thread-safe; run it inside a read transaction of db. 0, or UMDQ_ENOTFOUND / UMDQ_EIO /
 * UMDQ_ENOMEM with a message. */
int web_table_query(web_table *t, struct sqlite3 *db, int64_t sweep, strbuf *out, char *err, size_t errlen);

#endif
