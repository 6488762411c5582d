/* supervise.h: `umdq-worker --all-gpus`: one worker process per visible GPU, each a fork/exec of
 * this program with --gpu ID --name NAME, restarted with back-off when it dies; SIGTERM or SIGINT
 * stops them all. */
#ifndef UMDQ_WORKER_SUPERVISE_H
#define UMDQ_WORKER_SUPERVISE_H
#include <stddef.h>

typedef struct {
    const char *id;     /* CUDA_VISIBLE_DEVICES entry of the GPU ("0", "GPU-..."); borrowed */
    const char *name;   /* the worker's name ("host/gpu0"); borrowed */
} supervise_gpu;

/* Start one worker per gpu[i]: exe (this program) with the arguments
 * `common_args... --gpu ID --name NAME`, where common_args ends with NULL. Supervise until SIGTERM
 * or SIGINT: a worker that exits is started again after a back-off (1 s, doubling up to 60 s,
 * back to 1 s once a worker ran for a minute). On the stop signal every worker gets SIGTERM, and
 * SIGKILL after stop_ms. Returns 0 after a stop signal, or a negative code when nothing could be
 * started. */
int supervise_run(const char *exe, const char *const *common_args, const supervise_gpu *gpus, int ngpus,
                  int stop_ms, char *err, size_t errlen);

#endif
