/* op_cost.h: the floor of an op of ops.h, the work no implementation of it can do without, from
 * the op's own arguments: the FLOPs of its matrix products at 2 a multiply-add (a backward's
 * products twice its forward's, attention's backward twice its forward's, as bench/train_gpu.c
 * counts them) and the bytes of every tensor it must read or write, once, at the width it is
 * stored in (an operand, branch or gradient tensor in bf16 2 bytes, anything else 4; a parameter
 * gradient read and written; a weight read in fp32, a bf16 copy of it left out). Which tensors
 * are bf16 is the backend's to say: each function takes `bf`, which answers for a tensor that
 * `flag` (UMD_OPND, UMD_OPND_Y, UMD_OPND_H, UMD_OPND_O, UMD_GRAD, UMD_GRAD_X) names in the op's
 * types whether context c stores it in bf16.
 *
 * The CUDA backend's profile adds these up per op and puts its device time against them
 * (umd_cuda_profile_floors); bench/train_floors adds them up over a training step without a
 * device. The ops with a floor are those below: linear_*, mlp_*, layernorm_*, gate_residual_*,
 * residual_layernorm_fwd, attention_* and adamw. The others are not counted: gemm, the
 * elementwise ops (fill, copy, add, gelu_*, silu_*), the draws (rand_*, draw_*), patchify,
 * unpatchify, noise_mix, timestep_embed, the token ops (embed_rows_*, gather_tokens_*,
 * decoder_input_*, token_mean_*), the loss (mse_masked), sumsq and ema. Of those, sumsq, ema (with
 * train.ema) and the add of the replicas' gradients (where a model runs more than one) are passes
 * over every parameter that a step makes, as adamw's is: the step's floor total leaves them out,
 * so it is below the whole step's. */
#ifndef UMDQ_KERNELS_OP_COST_H
#define UMDQ_KERNELS_OP_COST_H
#include <stddef.h>
#include "ops.h"

typedef struct {
    double flops, bytes;
} umd_cost;

typedef int (*umd_cost_bf16)(const void *c, int types, int flag);

/* Bytes of an element of the tensor `flag` names in `types`. */
static inline double umd_cost_eb(umd_cost_bf16 bf, const void *c, int types, int flag) {
    return bf(c, types, flag) ? 2.0 : 4.0;
}

static inline umd_cost umd_cost_linear_fwd(umd_cost_bf16 bf, const void *c, int bias, int M, int N,
                                           int K, int types) {
    const double m = M, n = N, k = K;
    umd_cost r = {2 * m * n * k, m * k * umd_cost_eb(bf, c, types, UMD_OPND) + n * k * 4 +
                                     (bias ? n * 4 : 0) +
                                     m * n * umd_cost_eb(bf, c, types, UMD_OPND_Y)};
    return r;
}

static inline umd_cost umd_cost_linear_bwd(umd_cost_bf16 bf, const void *c, int dx, int dW, int db,
                                           int M, int N, int K, int acc, int types) {
    const double m = M, n = N, k = K;
    umd_cost r = {(dx ? 2 : 0) * m * n * k + (dW ? 2 : 0) * m * n * k,
                  m * n * umd_cost_eb(bf, c, types, UMD_GRAD)};
    if (dW) r.bytes += m * k * umd_cost_eb(bf, c, types, UMD_OPND) + n * k * 8;
    if (dx) r.bytes += n * k * 4 + m * k * umd_cost_eb(bf, c, types, UMD_GRAD_X) * (acc ? 2 : 1);
    if (db) r.bytes += n * 8;
    return r;
}

static inline umd_cost umd_cost_mlp_fwd(umd_cost_bf16 bf, const void *c, int b1, int b2, int M,
                                        int F, int w, int types) {
    const double m = M, f = F, d = w;
    umd_cost r = {4 * m * f * d, m * d * umd_cost_eb(bf, c, types, UMD_OPND) + 2 * f * d * 4 +
                                     (b1 ? f * 4 : 0) + (b2 ? d * 4 : 0) +
                                     m * f * umd_cost_eb(bf, c, types, UMD_OPND_H) +
                                     m * d * umd_cost_eb(bf, c, types, UMD_OPND_Y)};
    return r;
}

static inline umd_cost umd_cost_mlp_bwd(umd_cost_bf16 bf, const void *c, int dx, int db1, int db2,
                                        int M, int F, int w, int types) {
    const double m = M, f = F, d = w;
    umd_cost r = {(dx ? 8 : 6) * m * f * d,
                  m * d * umd_cost_eb(bf, c, types, UMD_GRAD) +
                      m * d * umd_cost_eb(bf, c, types, UMD_OPND) +
                      m * f * umd_cost_eb(bf, c, types, UMD_OPND_H) + 2 * f * d * (4 + 8) +
                      (db1 ? f * 8 : 0) + (db2 ? d * 8 : 0) +
                      (dx ? m * d * umd_cost_eb(bf, c, types, UMD_GRAD_X) : 0)};
    return r;
}

static inline umd_cost umd_cost_layernorm_fwd(umd_cost_bf16 bf, const void *c, int n, int T, int w,
                                              int out_type) {
    const double rows = (double)n * T;
    umd_cost r = {0, rows * w * (4 + umd_cost_eb(bf, c, out_type, UMD_OPND)) + rows * 8};
    return r;
}

static inline umd_cost umd_cost_layernorm_bwd(umd_cost_bf16 bf, const void *c, int n, int T, int w,
                                              int acc, int types) {
    const double rows = (double)n * T;
    umd_cost r = {0, rows * w * (umd_cost_eb(bf, c, types, UMD_GRAD_X) + (acc ? 12 : 8)) + rows * 8};
    return r;
}

static inline umd_cost umd_cost_gate_residual_fwd(umd_cost_bf16 bf, const void *c, int n, int T,
                                                  int w, int y_type) {
    umd_cost r = {0, (double)n * T * w * (8 + umd_cost_eb(bf, c, y_type, UMD_OPND_Y))};
    return r;
}

static inline umd_cost umd_cost_gate_residual_bwd(umd_cost_bf16 bf, const void *c, int n, int T,
                                                  int w, int types) {
    umd_cost r = {0, (double)n * T * w *
                         (4 + umd_cost_eb(bf, c, types, UMD_OPND_Y) +
                          umd_cost_eb(bf, c, types, UMD_GRAD))};
    return r;
}

static inline umd_cost umd_cost_residual_layernorm_fwd(umd_cost_bf16 bf, const void *c, int n,
                                                       int T, int w, int types) {
    const double rows = (double)n * T;
    umd_cost r = {0, rows * w *
                             (8 + umd_cost_eb(bf, c, types, UMD_OPND_Y) +
                              umd_cost_eb(bf, c, types, UMD_OPND)) +
                         rows * 8};
    return r;
}

static inline umd_cost umd_cost_attention_fwd(umd_cost_bf16 bf, const void *c, int n, int T,
                                              int heads, int hd, int types) {
    const double p = (double)n * heads, t = T, W = (double)heads * hd;
    umd_cost r = {4 * p * t * t * hd, n * t * W *
                                              (3 * umd_cost_eb(bf, c, types, UMD_OPND) +
                                               umd_cost_eb(bf, c, types, UMD_OPND_O)) +
                                          p * t * 4};
    return r;
}

static inline umd_cost umd_cost_attention_bwd(umd_cost_bf16 bf, const void *c, int n, int T,
                                              int heads, int hd, int types) {
    const double p = (double)n * heads, t = T, W = (double)heads * hd;
    umd_cost r = {8 * p * t * t * hd, n * t * W *
                                              (3 * umd_cost_eb(bf, c, types, UMD_OPND) +
                                               umd_cost_eb(bf, c, types, UMD_OPND_O) +
                                               umd_cost_eb(bf, c, types, UMD_GRAD_X) +
                                               3 * umd_cost_eb(bf, c, types, UMD_GRAD)) +
                                          p * t * 4};
    return r;
}

/* p, g, m, v read; p, m, v written; the decay mask's byte read. */
static inline umd_cost umd_cost_adamw(size_t n) {
    umd_cost r = {0, (double)n * (7 * 4 + 1)};
    return r;
}

#endif
