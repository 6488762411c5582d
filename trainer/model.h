/* model.h: the UMD model and objective (UMD.md) on a backend's ops (kernels/ops.h): its
 * parameters, its four arenas, and one training step's forward and backward.
 *
 * Memory: one arena each for parameters, gradients, optimiser state (AdamW m and v, the EMA when
 * train.ema > 0, the decay mask) and activations (every saved tensor of one step for the
 * configured batch, the step's inputs and randomness, the backward's temporaries and the ops'
 * workspace). With train.recompute a transformer block saves only its input ("full"), all but
 * what LayerNorms, the residual and fc1 make ("partial"), or all but what the LayerNorms and the
 * residual make ("norms"), and the rest of what it saves goes to
 * one scratch set that the backward refills block by block (objective.c). All four are allocated
 * by umd_model_new from sizes computed in one place (umd_model_sizes); a step allocates nothing.
 *
 * Threads: the step runs as one replica per thread of the CPU backend (never more than B), each
 * replica taking a contiguous share of the clean rows and one of the noisy rows on its own
 * 1-thread context, so the cores meet once per step instead of at every op; the replicas'
 * gradients are summed in replica order into the gradient arena afterwards. Every random number
 * is named by its batch row, so the split changes no draw; results are bit-identical for a given
 * thread count. A device backend (ctx_threads = 1) runs a single replica, and so does a model
 * whose per-replica gradient copies would pass 1 GiB (its ops then split across the threads).
 *
 * A step, rows [0, n_clean) clean and [n_clean, B) noisy (n_clean = floor(B * r_t0)):
 *   umd_model_load_batch  x0 (B, C, H, W) and labels (B) from the host
 *   umd_model_draw        timesteps, noise, keep orders and label dropout for (seed, step), or
 *   umd_model_set_draws   the same from host arrays (tests, golden files)
 *   umd_model_step        forward, the two losses, and (when asked) the backward into the
 *                         gradient arena (zeroed first)
 * and then optim.h's umd_optim_step. */
#ifndef UMDQ_TRAINER_MODEL_H
#define UMDQ_TRAINER_MODEL_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "ops.h"

typedef struct umd_model umd_model;

/* One parameter tensor: a (rows, cols) matrix (a vector has rows = 1) at offset floats into the
 * parameter arena; the gradient and optimiser arenas use the same offsets. */
typedef struct {
    char name[48];   /* "enc.0.attn.qkv.weight": the PyTorch twin's state_dict name */
    int rows, cols;
    size_t offset;   /* floats from the start of the arena (a multiple of 16) */
    size_t size;     /* rows * cols */
    int decay;       /* AdamW applies weight decay to it */
} umd_tensor;

typedef struct {
    int C, H, W;     /* image shape */
    int classes;     /* label values 0 .. classes-1 (used when cfg->labels); the null class is
                        `classes` */
    int batch;       /* B */
} umd_shape;

/* Derived sizes of a configured model. */
typedef struct {
    int B, C, H, W, p, L, P;     /* L tokens of P = p*p*C values per image */
    int w, depth, dec_depth, heads, hd, F, ncls, classes, labels, T;
    int n_clean, n_noisy;        /* rows of each kind */
    int keep_clean, keep_noisy;  /* visible tokens per clean / noisy row */
    int T_clean, T_noisy, T_dec; /* sequence lengths: ncls + keep, 1 + L */
} umd_dims;

typedef struct {
    size_t params, grads, optim, acts; /* bytes of each arena (grads: one copy per replica; acts
                                          includes the workspaces) */
    size_t workspace;                  /* bytes of the ops' workspaces, inside acts */
    size_t nparams;                    /* parameters (without alignment padding) */
    size_t nfloats;                    /* floats of the parameter arena (with padding) */
} umd_sizes;

typedef struct {
    double loss;        /* (1 - n_clean/B) loss_noisy + (n_clean/B) loss_clean */
    double loss_noisy;  /* (loss_eps + loss_x0) / 2; 0 without noisy rows */
    double loss_clean;  /* MSE(x0_pred, x0 | masked) of the clean rows; 0 without clean rows */
    double loss_eps;    /* MSE(eps_pred, eps | visible) of the noisy rows */
    double loss_x0;     /* MSE(x0_pred, x0 | masked) of the noisy rows */
} umd_losses;

/* Build a model for cfg (model.*, umd.*, train.batch, train.threads, train.ema) and data of
 * shape; allocates its arenas and backend context. Errors name the config key. */
int umd_model_new(umd_model **out, const umd_config *cfg, const umd_shape *shape,
                  const umd_ops *ops, char *err, size_t errlen);
void umd_model_destroy(umd_model **m); /* accepts NULL, NULLs the pointer */
/* The arenas umd_model_new would allocate for these arguments, without allocating them (the
 * backend's context is made, for its workspace size, and destroyed). 0 or as umd_model_new. */
int umd_model_measure(umd_sizes *out, const umd_config *cfg, const umd_shape *shape,
                      const umd_ops *ops, char *err, size_t errlen);

const umd_dims *umd_model_dims(const umd_model *m);
const umd_sizes *umd_model_sizes(const umd_model *m);
/* One line: the arena sizes, for the log at start-up. */
void umd_model_describe(const umd_model *m, char *buf, size_t n);

const umd_ops *umd_model_ops(const umd_model *m);
/* The model's context: every thread (initialisation, optimiser, gradient sums). */
umd_ctx *umd_model_ctx(umd_model *m);
/* How many replicas run a step side by side (one per thread on the CPU backend; see model.c). */
int umd_model_replicas(const umd_model *m);

int umd_model_ntensors(const umd_model *m);
const umd_tensor *umd_model_tensor(const umd_model *m, int i);           /* borrowed */
const umd_tensor *umd_model_find(const umd_model *m, const char *name); /* NULL if absent */

/* Arenas in backend memory (host memory on the CPU backend), borrowed until destroy. Each holds
 * sizes.nfloats floats at the tensors' offsets; the gradients are the batch's (the replicas' sum)
 * after umd_model_step. adam_m, adam_v and the decay mask (one byte per float) are in the
 * optimiser arena; ema is NULL without train.ema. */
float *umd_model_params(umd_model *m);
float *umd_model_grads(umd_model *m);
float *umd_model_adam_m(umd_model *m);
float *umd_model_adam_v(umd_model *m);
float *umd_model_ema(umd_model *m);
const uint8_t *umd_model_decay_mask(umd_model *m);

/* Initialise the parameters from Philox stream PHILOX_INIT (step = tensor number, index =
 * element), zero the optimiser state and copy the parameters into the EMA. */
void umd_model_init(umd_model *m, uint64_t seed);

/* Copy a host batch into the activation arena: x (B, C, H, W) in [-1, 1], labels (B) (may be
 * NULL when the model has no labels). */
void umd_model_load_batch(umd_model *m, const float *x, const int32_t *labels);
/* The step's randomness for (seed, step), drawn by the ops into the activation arena. */
void umd_model_draw(umd_model *m, uint64_t seed, int64_t step);
/* The same from host arrays instead: t_net (B) (0 for clean rows, idx + 1 for noisy ones), eps
 * (B, C, H, W) (rows of clean images ignored), order (B, L) keep orders, y_used (B) labels after
 * dropout (NULL without labels). */
void umd_model_set_draws(umd_model *m, const int32_t *t_net, const float *eps,
                         const int32_t *order, const int32_t *y_used);

/* Forward and losses; with backward != 0 also the backward, into the gradient arena (zeroed
 * first). Allocates nothing. The losses' sums stay in backend memory: with out not NULL they are
 * read (umd_model_losses; a device backend waits for the step), with NULL nothing waits. */
void umd_model_step(umd_model *m, int backward, umd_losses *out);
/* The losses of the last umd_model_step (waits for it on a device backend). */
void umd_model_losses(umd_model *m, umd_losses *out);

/* The noise schedule (double): abar[i] for i < T, cumulative products of 1 - beta. cosine:
 * Nichol-Dhariwal with s = 0.008 and beta capped at 0.999; linear: beta from 1e-4 to 0.02 in T
 * evenly spaced values. */
void umd_schedule_abar(umd_schedule kind, int T, double *abar);

#endif
