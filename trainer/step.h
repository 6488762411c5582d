/* step.h: one training step (forward, backward and the optimiser update) on a loaded and drawn
 * batch, run op by op or, on a backend that records (ops.h's record_begin: the CUDA backend with
 * UMDQ_CUDA_GRAPH=1), recorded once and replayed.
 *
 * The first step runs op by op (it also warms the backend up: GEMM plans, kernel attributes); the
 * second is recorded, then replayed, and so is every later one. What differs from step to step
 * (the batch, its draws, the AdamW scalars) is uploaded or drawn into backend memory before the
 * replay, so a replayed step computes what the ops would have. A recording the backend cannot
 * make is given up once, with the reason in `note`, and the steps go on op by op. */
#ifndef UMDQ_TRAINER_STEP_H
#define UMDQ_TRAINER_STEP_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "model.h"

typedef struct {
    int recorded;    /* steps replay a recording */
    int given_up;    /* no recording: op by op from then on */
    int64_t runs;    /* steps run */
    char note[256];  /* why recording was given up ("" when the backend does not record) */
} umd_stepper;

/* Step `step` (0-based) at learning rate lr after umd_model_load_batch and umd_model_draw:
 * umd_optim_prepare, then umd_model_step (backward, losses not read) and umd_optim_apply, or
 * their replay. Waits for the device only to upload the AdamW scalars (after the draws are
 * queued); the caller then asks the ops' status and reads the losses
 * (umd_model_losses) and, when it logs, the optimiser's stats (umd_optim_read_stats). 0, or a
 * negative UMDQ_E* code with the message (a replay the backend refused). */
int umd_train_step(umd_stepper *s, umd_model *m, const umd_config *cfg, int64_t step, double lr,
                   char *err, size_t errlen);

#endif
