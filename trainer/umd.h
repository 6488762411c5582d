/* umd.h: libumd's entry points, the ones the worker and the CLI call.
 *
 * umd_run trains one UMD configuration (UMD.md) from its JSON config and reports through the
 * callbacks of umd_events. It never exits the process and never prints to stdout: every failure,
 * including a bad config, a missing data file or an accelerator fault, comes back as a negative
 * UMDQ_E* code and a message in err ("failed: out of device memory at step 1234"). */
#ifndef UMDQ_UMD_H
#define UMDQ_UMD_H
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    void *ctx; /* passed back to every callback; borrowed */
    /* Every train.log_every steps and at the end: step done, total steps, mean loss since the last
     * call, images per second since the last call. May be NULL. */
    void (*progress)(void *ctx, int64_t step, int64_t total, double loss, double img_per_s);
    /* A curve point ("loss", "loss_noisy", "loss_clean", "lr", "grad_norm", ...). May be NULL. */
    void (*metric)(void *ctx, const char *key, int64_t step, double value);
    /* A final number (value) or a final text (text != NULL, value ignored), e.g. "train_img_per_s",
     * "final_loss", "device_hours". May be NULL. */
    void (*result)(void *ctx, const char *key, double value, const char *text);
    /* Called after a checkpoint file is complete at path (step = steps done). Nonzero fails the
     * run with that code. May be NULL. */
    int (*checkpoint)(void *ctx, const char *path, int64_t step);
    /* Polled between steps; nonzero stops the run: it writes a checkpoint (when workdir is set)
     * and returns UMDQ_ECANCELLED. May be NULL. */
    int (*should_stop)(void *ctx);
    /* Where checkpoints are written ("<workdir>/ckpt.umd"); NULL = no checkpoints. Borrowed. */
    const char *workdir;
    /* A checkpoint to resume from, or NULL to start fresh. Borrowed. */
    const char *resume_from;
    /* Optional log line sink for human-readable messages (arena sizes, data set found, ...);
     * NULL = stderr. */
    void (*log)(void *ctx, const char *line);
    /* During the evaluation (after the last progress call), at most about once a second: the
     * phase it is in ("rep features", "linear probe", "FID network", "sampling", ...) and how far
     * it is (done of total in that phase's own units; total 0 when unknown). A sign of life for
     * a supervisor that watches the step. May be NULL. */
    void (*eval_progress)(void *ctx, const char *phase, int64_t done, int64_t total);
} umd_events;

/* Train (and, when configured, evaluate) one job config. Returns 0 or a negative UMDQ_E* code
 * with a message in err. config is borrowed. */
int umd_run(const cJSON *config, const umd_events *ev, char *err, size_t errlen);

/* 1 when this build's trainer can run on the named backend ("cpu", "cuda"), else 0. Does not
 * touch the device (safe in a worker parent that must not initialise CUDA). */
int umd_backend_available(const char *backend);

/* `umdq train CONFIG.json [--steps N] [--out DIR] [--resume] [--json] [--threads N] [--help]
 * [--help-config]`: argv[0] is "train". Returns the process exit code (0 ok, 1 runtime error,
 * 2 usage or bad config, 130 interrupted by SIGINT/SIGTERM after writing a checkpoint). */
int umd_train_main(int argc, char **argv);

#endif
