/* sample.h: generation from a trained model (UMD.md "Evaluation", Generation): DDIM with eta = 1
 * over S steps with classifier-free guidance, and a PNG grid of samples.
 *
 * Timesteps (indices into abar): 999, 999 - k, ..., 999 - (S-1) k with k = floor(T / S), then a
 * final call at 0 unless the list already ends there (T = 1000: S + 1 network calls, or S when
 * k = 1). A call at index t > 0 predicts eps (the head's eps channels, told t_net = t + 1),
 *   x0_hat = clip((x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), -1, 1)
 *   eps'   = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)
 *   sigma  = eta sqrt((1 - abar_p) / (1 - abar_t)) sqrt(1 - abar_t / abar_p)
 *   x_p    = sqrt(abar_p) x0_hat + sqrt(1 - abar_p - sigma^2) eps' + sigma z
 * with p the next timestep (abar_p = abar[0] for the step to 0); the call at 0 returns x0_hat
 * (no noise at t = 0). Guidance: eps = u + s (c - u) from the labelled (c) and null-class (u)
 * passes; a model without labels samples unconditionally. Noise x_T and z are Philox normals
 * named by (seed, sample index, step), so a sample does not depend on how the batch is split. */
#ifndef UMDQ_TRAINER_EVAL_SAMPLE_H
#define UMDQ_TRAINER_EVAL_SAMPLE_H
#include <stddef.h>
#include <stdint.h>
#include "net.h"

/* The DDIM timestep list for T timesteps and S steps: ts (room for S + 1). Returns its length. */
int umd_ddim_timesteps(int T, int S, int *ts);

/* One DDIM update of D values (see above): x_prev from x_t and the model's eps at abar_t to
 * abar_p; z (D) standard normals (unused when eta is 0); x0_out (may be NULL) gets x0_hat. */
void umd_ddim_step(const float *x_t, const float *eps, size_t D, double abar_t, double abar_p,
                   double eta, const float *z, float *x_prev, float *x0_out);

typedef struct {
    int steps;          /* S */
    double eta;         /* 1 in UMD.md */
    double cfg_scale;   /* s; 1 = the labelled pass alone; ignored without labels */
    uint64_t seed;
} umd_ddim_opts;

/* n samples (n, C, H, W) into out, with labels y (n) (NULL: null class / unconditional), from the
 * net's weights (a UMD_EVALNET_FORWARD net; load the EMA into it first). abar (T) the schedule.
 * poll (may be NULL) is called before each network call with the calls done and their total;
 * nonzero stops the sampling with UMDQ_ECANCELLED. */
int umd_ddim_sample(umd_evalnet *net, const double *abar, int T, const int32_t *y, int64_t n,
                    const umd_ddim_opts *opts, float *out,
                    int (*poll)(void *ctx, int64_t done, int64_t total), void *ctx,
                    char *err, size_t errlen);

/* Standard normals for sample `index` at DDIM call `step` (Philox stream PHILOX_EVAL). */
void umd_sample_normals(uint64_t seed, uint32_t step, int64_t index, size_t D, float *z);

/* A PNG grid of n images (n, C, H, W) in [-1, 1] (C = 1 grey, 3 RGB), ceil(sqrt(n)) per row,
 * 2-pixel gaps. 0 or a negative UMDQ_E* code with a message naming the file. */
int umd_png_write_grid(const char *path, const float *img, int n, int C, int H, int W, char *err,
                       size_t errlen);

#endif
