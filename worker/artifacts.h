/* artifacts.h: a umd attempt's link to the daemon's artifact store (docs/api.md,
 * PUT|GET /api/artifacts/JOB/NAME), over HTTP with libcurl.
 *
 * The umd child uploads each checkpoint the trainer completes (as ckpt.umd, the job's one stable
 * checkpoint artifact) and the files its results name (the sample grid PNG); a later attempt,
 * on any worker, downloads ckpt.umd and resumes from it. The daemon's URL and token reach the
 * worker in `welcome` (docs/protocol.md).
 *
 * Every call is synchronous and bounded in time (ARTIFACT_CONNECT_MS to connect, then a transfer
 * that must keep moving: less than 1 KiB/s for ARTIFACT_STALL_S aborts it). Transient failures
 * (no connection, 5xx, 503 while the daemon stops) are retried with back-off; 4xx answers are not. */
#ifndef UMDQ_WORKER_ARTIFACTS_H
#define UMDQ_WORKER_ARTIFACTS_H
#include <stddef.h>
#include <stdint.h>

#define ARTIFACT_CONNECT_MS 3000
#define ARTIFACT_STALL_S 30
#define ARTIFACT_CKPT_NAME "ckpt.umd"   /* the job's stable checkpoint artifact */

typedef struct {
    const char *url;     /* the daemon, "http://127.0.0.1:5755"; borrowed */
    const char *token;   /* the API token; borrowed */
    int64_t job;
    int tries;           /* attempts per call (>= 1); the waits between them are 0.5 s, 1 s, 2 s, ... */
} artifact_store;

/* 1 when name is a valid artifact name: [A-Za-z0-9._-]{1,128}, not starting with a dot. */
int artifact_name_ok(const char *name);

/* PUT the file at path as artifact name of the store's job. 0, or UMDQ_EIO / UMDQ_EINVAL /
 * UMDQ_ENOTFOUND (no such job) with a message naming the file and the URL. */
int artifact_put_file(const artifact_store *s, const char *name, const char *path, char *err, size_t errlen);

/* GET artifact name of the store's job into the file path (written to path.part, renamed when
 * complete). 0; UMDQ_ENOTFOUND when the daemon has no such artifact (nothing is written); else
 * UMDQ_EIO with a message. *bytes (may be NULL) receives the size. */
int artifact_get_file(const artifact_store *s, const char *name, const char *path, int64_t *bytes, char *err,
                      size_t errlen);

#endif
