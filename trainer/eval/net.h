/* net.h: forward passes of a trained UMD model for the evaluation, on the model's own ops (so they
 * run on whatever backend trained it). An evaluation net is a second umd_model of the same
 * architecture, built for the evaluation's batch, whose weights are copied from the trained model
 * (its parameters or its EMA) and which never takes an optimiser step.
 *
 * Kinds:
 *   UMD_EVALNET_FORWARD  every row is run as a "clean" row with every token visible (r_t0 = 1,
 *                        mask_ratio_t0 = 0) at the network timestep and label the caller gives:
 *                        the encoder's rep (probe features, t = 0) and the head's x0 / eps
 *                        prediction of an image x_t told t_net = idx + 1 (the sampler).
 *   UMD_EVALNET_DENOISE  the noisy step with nothing masked (r_t0 = 0, mask_ratio = 0), timestep
 *                        and noise drawn as in training: the validation denoising loss.
 *   UMD_EVALNET_RECON    the clean step at a given mask ratio (r_t0 = 1): the masked
 *                        reconstruction MSE. */
#ifndef UMDQ_TRAINER_EVAL_NET_H
#define UMDQ_TRAINER_EVAL_NET_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "model.h"

typedef enum { UMD_EVALNET_FORWARD, UMD_EVALNET_DENOISE, UMD_EVALNET_RECON } umd_evalnet_kind;

typedef struct umd_evalnet umd_evalnet;

/* A net of cfg's architecture (model.*, umd.labels, umd.schedule, umd.timesteps, train.threads)
 * for batches of up to batch rows of images of shape (shape->batch is ignored). mask is the mask
 * ratio of UMD_EVALNET_RECON (ignored otherwise). */
int umd_evalnet_new(umd_evalnet **out, umd_evalnet_kind kind, const umd_config *cfg,
                    const umd_shape *shape, int batch, double mask, const umd_ops *ops, char *err,
                    size_t errlen);
void umd_evalnet_destroy(umd_evalnet **n); /* accepts NULL, NULLs the pointer */

umd_model *umd_evalnet_model(umd_evalnet *n); /* borrowed until destroy */
int umd_evalnet_batch(const umd_evalnet *n);

/* Copy the weights of src (same architecture): its EMA when use_ema and it has one, else its
 * parameters. 0 or UMDQ_EINVAL with a message when the layouts differ. */
int umd_evalnet_load(umd_evalnet *n, umd_model *src, int use_ema, char *err, size_t errlen);

/* 0, or the backend's first failure since the net was made (a device fault, out of device
 * memory) as a negative UMDQ_E* code with its message. Waits for the net's queued work. */
int umd_evalnet_status(umd_evalnet *n, char *err, size_t errlen);

/* UMD_EVALNET_FORWARD: rows x (n, C, H, W) in host memory, n <= batch; t_net (n) network
 * timesteps (0 = clean; idx + 1 for an image noised at idx); y (n) labels, or NULL for the null
 * class (ignored without umd.labels). Outputs in host memory, each may be NULL: rep (n, w) and
 * pred (n, L, 2P) in the head's layout (per token (pi, pj, [x0 C | eps C])). */
void umd_evalnet_forward(umd_evalnet *net, const float *x, const int32_t *t_net, const int32_t *y,
                         int n, float *rep, float *pred);

/* UMD_EVALNET_DENOISE / _RECON: one batch (exactly `batch` rows) with the draws of (seed, index);
 * the losses as umd_model_step reports them. y may be NULL. */
void umd_evalnet_losses(umd_evalnet *net, const float *x, const int32_t *y, uint64_t seed,
                        int64_t index, umd_losses *out);

#endif
