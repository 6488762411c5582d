/* optim.h: the optimiser and learning-rate schedule of UMD.md: AdamW (decay mask from the model's
 * tensor table), global-norm gradient clipping, linear warm-up then cosine to 0, and the EMA of
 * the weights, all on the model's arenas through the ops. */
#ifndef UMDQ_TRAINER_OPTIM_H
#define UMDQ_TRAINER_OPTIM_H
#include <stdint.h>
#include "config.h"
#include "model.h"

/* Learning rate of step s (0-based) of cfg->steps: with W = floor(warmup * steps) warm-up steps,
 * lr (s + 1) / W for s < W, then lr * (1 + cos(pi * (s - W) / (steps - W))) / 2. */
double umd_lr_at(const umd_config *cfg, int64_t step);

typedef struct {
    double grad_norm;   /* global L2 norm of the gradients before clipping */
    double clip_scale;  /* factor applied to the gradients (1 when not clipped) */
    double lr;
} umd_optim_stats;

/* Apply step `step` (0-based; AdamW's bias corrections use t = step + 1) to the model: clip to
 * cfg->clip (PyTorch's clip_grad_norm_: scale = clip / (norm + 1e-6) when below 1; off when
 * clip = 0), AdamW with cfg's betas, eps and weight decay at learning rate lr, then the EMA when
 * cfg->ema > 0. */
void umd_optim_step(umd_model *m, const umd_config *cfg, int64_t step, double lr,
                    umd_optim_stats *stats);

/* The same in three parts, as the recorded step (step.h) runs it:
 *   umd_optim_prepare     uploads step `step`'s AdamW scalars (lr, bias corrections, clip)
 *   umd_optim_apply       the update on the backend: sum of squares, AdamW, EMA (never waits)
 *   umd_optim_read_stats  the last update's gradient norm and clip factor (waits for it)
 * umd_optim_step is prepare, apply, and read_stats when stats is not NULL. */
void umd_optim_prepare(umd_model *m, const umd_config *cfg, int64_t step, double lr);
void umd_optim_apply(umd_model *m, const umd_config *cfg);
void umd_optim_read_stats(umd_model *m, const umd_config *cfg, double lr, umd_optim_stats *st);

#endif
