/* eval.h: the evaluation of a trained model (UMD.md "Evaluation"), reported through umd_events'
 * result callback under fixed names:
 *
 *   representation (the pre-trained weights):
 *     probe_ridge_top1, probe_linear_top1   rep features at t = 0, nothing masked (r_t0 = 0
 *                                           runs: input noised at eval.probe_noise_index)
 *     pixel_ridge_top1, pixel_linear_top1   the same probes on raw pixels: the floor
 *     val_denoise_loss                      the noisy objective with nothing masked, t uniform
 *                                           ((MSE eps + MSE x0) / 2 over every pixel)
 *     val_mask_mse                          MSE(x0_pred, x0 | masked) of clean inputs at
 *                                           eval.recon_mask
 *   generation (the fine-tuned EMA weights when fine-tuning ran, else the pre-trained ones):
 *     fid, fid_net (text), fid_net_acc, fid_samples, fid_steps, fid_cfg_scale (0 when the model
 *     has no labels: unconditional samples, no guidance)
 *     sample_grid (text: "samples.png" in the work directory, when there is one)
 *
 * Every forward pass runs through the model's ops on its backend; probes, the DDIM update and
 * the Frechet distance run on the host. */
#ifndef UMDQ_TRAINER_EVAL_EVAL_H
#define UMDQ_TRAINER_EVAL_EVAL_H
#include <stddef.h>
#include "config.h"
#include "data.h"
#include "model.h"
#include "umd.h"

#define UMD_SAMPLE_GRID_NAME "samples.png"

/* Probes and validation losses of model (pre-training config cfg). 0 or a negative UMDQ_E* code
 * with a message. */
int umd_eval_representation(umd_model *model, const umd_config *cfg, const umd_split *train,
                            const umd_split *test, const umd_events *ev, char *err,
                            size_t errlen);

/* Samples, FID against the test split and the sample grid, from model's EMA when use_ema and it
 * has one. gen_cfg: the config the model was built with (labels on after fine-tuning). */
int umd_eval_generation(umd_model *model, int use_ema, const umd_config *gen_cfg,
                        const umd_split *train, const umd_split *test, const umd_events *ev,
                        char *err, size_t errlen);

/* The directory FID feature networks are cached in: eval.cache_dir, else $UMDQ_CACHE, else
 * <workdir>/../cache, else $HOME/.cache/umdq; "" when none can be named. */
void umd_eval_cache_dir(const umd_config *cfg, const char *workdir, char *out, size_t n);

#endif
