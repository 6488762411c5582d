/* test_model_fixtures.h: tiny UMD configs, random parameters and batches shared by the kernel,
 * model and training tests. Randomness comes from Philox stream PHILOX_TEST on the host, so every
 * test sees the same fresh, non-zero values on every run. */
#ifndef UMDQ_TEST_MODEL_FIXTURES_H
#define UMDQ_TEST_MODEL_FIXTURES_H
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include "model.h"
#include "philox.h"

/* Host N(0, 1) / U[0, 1) values named by (key, index). */
static inline float fx_normal(uint32_t key, uint64_t i) __attribute__((unused));
static inline float fx_normal(uint32_t key, uint64_t i) {
    philox4 r = philox_draw(0x5eedULL, PHILOX_TEST, key, i);
    float u1 = philox_unit_open0(r.v[0]), u2 = philox_unit(r.v[1]);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307f * u2);
}
static inline float fx_unit(uint32_t key, uint64_t i) __attribute__((unused));
static inline float fx_unit(uint32_t key, uint64_t i) {
    return philox_unit(philox_draw(0x5eedULL, PHILOX_TEST, key, i).v[2]);
}

/* The CUDA backend's environment switches (kernels/cuda/umd_cuda.h), turned off ("0", whatever
 * their defaults) at the start of a GPU test program: the tests switch each on where they mean
 * to, so neither one exported in the shell nor a default turned on can make a test compare a
 * path with itself. UMDQ_CUDA_LT_BF16_Y (a test's way round cuBLASLt's bf16 output),
 * UMDQ_CUDA_GEMM_TUNE_TAKE (the tuner's tests' choice) and UMDQ_CUDA_ATTN_DS_MAX_T are cleared. */
static void fx_cuda_switches_off(void) __attribute__((unused));
static void fx_cuda_switches_default(void) __attribute__((unused));
static void fx_cuda_switches_off(void) {
    static const char *const vars[] = {"UMDQ_CUDA_FUSED_NORM", "UMDQ_CUDA_BF16_OPERANDS",
                                       "UMDQ_CUDA_BF16_MLP",   "UMDQ_CUDA_GRAPH",
                                       "UMDQ_CUDA_ATTN_KV32", "UMDQ_CUDA_ATTN_FWD32",
                                       "UMDQ_CUDA_GELU_EPILOGUE", "UMDQ_CUDA_BF16_BRANCH",
                                       "UMDQ_CUDA_BF16_BIAS", "UMDQ_CUDA_BF16_DH",
                                       "UMDQ_CUDA_BF16_GRAD", "UMDQ_CUDA_MLP_ONE_PASS",
                                       "UMDQ_CUDA_ATTN_SPLIT", "UMDQ_CUDA_GEMM_TUNE",
                                       "UMDQ_CUDA_ATTN_DS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) setenv(vars[i], "0", 1);
    unsetenv("UMDQ_CUDA_LT_BF16_Y");
    unsetenv("UMDQ_CUDA_GEMM_TUNE_TAKE");
    unsetenv("UMDQ_CUDA_ATTN_DS_MAX_T");
}

/* The same switches unset: each as it is by default (what a worker runs without them set), for
 * the tests of the configuration umdq ships; fx_cuda_switches_off after. */
static void fx_cuda_switches_default(void) {
    static const char *const vars[] = {"UMDQ_CUDA_FUSED_NORM", "UMDQ_CUDA_BF16_OPERANDS",
                                       "UMDQ_CUDA_BF16_MLP",   "UMDQ_CUDA_GRAPH",
                                       "UMDQ_CUDA_ATTN_KV32", "UMDQ_CUDA_ATTN_FWD32",
                                       "UMDQ_CUDA_GELU_EPILOGUE", "UMDQ_CUDA_BF16_BRANCH",
                                       "UMDQ_CUDA_BF16_BIAS", "UMDQ_CUDA_BF16_DH",
                                       "UMDQ_CUDA_BF16_GRAD", "UMDQ_CUDA_MLP_ONE_PASS",
                                       "UMDQ_CUDA_LT_BF16_Y", "UMDQ_CUDA_ATTN_SPLIT",
                                       "UMDQ_CUDA_GEMM_TUNE", "UMDQ_CUDA_GEMM_TUNE_TAKE",
                                       "UMDQ_CUDA_ATTN_DS", "UMDQ_CUDA_ATTN_DS_MAX_T"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
}

/* A tiny model: 8x8x2 images, patch 2 (L = 16), width 16, 2 heads, depth 2, dec_depth 1,
 * batch 6, r_t0 0.5 (3 clean rows, 4 visible tokens; 3 noisy rows, 10 visible tokens). */
static void fx_config(umd_config *c) __attribute__((unused));
static void fx_config(umd_config *c) {
    memset(c, 0, sizeof *c);
    c->dataset = UMD_DATA_SYNTHETIC;
    c->patch = 2;
    c->width = 16;
    c->depth = 2;
    c->dec_depth = 1;
    c->heads = 2;
    c->mlp_ratio = 4;
    c->cls_tokens = 4;
    c->r_t0 = 0.5;
    c->mask_ratio = 0.375;
    c->mask_ratio_t0 = 0.75;
    c->schedule = UMD_SCHEDULE_COSINE;
    c->timesteps = 1000;
    c->labels = 0;
    c->label_dropout = 0.1;
    c->steps = 10;
    c->batch = 6;
    c->base_lr = 1.5e-4;
    c->lr = 1e-3;
    c->warmup = 0.2;
    c->weight_decay = 0.05;
    c->beta1 = 0.9;
    c->beta2 = 0.95;
    c->adam_eps = 1e-8;
    c->clip = 1.0;
    c->ema = 0;
    c->log_every = 1;
    c->ckpt_every = 0;
    c->device = UMD_DEVICE_CPU;
    c->precision = UMD_PRECISION_FP32;
    c->threads = 2;
    c->seed = 7;
}

/* Every parameter random and non-zero (the zero-initialised adaLN and final modulation included,
 * so every path carries gradient): LayerNorm weights 1 + 0.2 z, other vectors 0.2 z, matrices
 * z * 0.6 / sqrt(cols). */
static void fx_randomize(umd_model *m, uint32_t key) __attribute__((unused));
static void fx_randomize(umd_model *m, uint32_t key) {
    float *p = umd_model_params(m);
    for (int i = 0; i < umd_model_ntensors(m); i++) {
        const umd_tensor *t = umd_model_tensor(m, i);
        int is_norm_w = strstr(t->name, "norm") && strstr(t->name, "weight");
        for (size_t k = 0; k < t->size; k++) {
            float z = fx_normal(key + (uint32_t)i, k);
            float v;
            if (is_norm_w) v = 1.0f + 0.2f * z;
            else if (t->rows == 1) v = 0.2f * z;
            else v = z * 0.6f / sqrtf((float)t->cols);
            p[t->offset + k] = v;
        }
    }
}

/* A batch of B images (C, H, W) in [-1, 1] and labels in [0, classes). */
static void fx_batch(float *x, int32_t *y, int B, int C, int H, int W, int classes, uint32_t key)
    __attribute__((unused));
static void fx_batch(float *x, int32_t *y, int B, int C, int H, int W, int classes, uint32_t key) {
    size_t n = (size_t)B * C * H * W;
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * fx_unit(key, i) - 1.0f;
    if (y)
        for (int b = 0; b < B; b++) y[b] = (int32_t)(fx_unit(key + 1, (uint64_t)b) * (float)classes) % classes;
}

/* fp32 -> bf16 rounded to nearest even, by comparing the two bf16 neighbours (a derivation of its
 * own, not the backends' carry trick; finite inputs), and back (exact): the reference of the
 * bf16 operand tensors. */
static inline uint16_t fx_bf16(float f) __attribute__((unused));
static inline uint16_t fx_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
    float flo, fhi;
    memcpy(&flo, &lo, sizeof flo);
    memcpy(&fhi, &hi, sizeof fhi);
    double dlo = fabs((double)f - flo), dhi = fabs((double)fhi - f);
    if (dlo < dhi || (dlo == dhi && ((lo >> 16) & 1u) == 0)) return (uint16_t)(lo >> 16);
    return (uint16_t)(hi >> 16);
}
static inline float fx_widen(uint16_t h) __attribute__((unused));
static inline float fx_widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#endif
