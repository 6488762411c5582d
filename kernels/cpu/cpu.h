/* cpu.h: the CPU backend's context, its threading helpers and branch-free math, shared by the
 * kernels in kernels/cpu/ (not part of the public op interface, which is kernels/ops.h).
 *
 * Threading: every op opens one OpenMP team of ctx->threads threads and splits its outermost
 * independent dimension (rows, sequences, (sequence, head) pairs, columns) in equal contiguous
 * chunks (static schedule), so a run with a given thread count always does the same arithmetic
 * in the same order. GEMMs are split the same way, each thread calling single-threaded OpenBLAS
 * on its chunk (OpenBLAS's own threads are switched off: two thread pools would oversubscribe the
 * cores). Reductions across rows go into per-thread partials in the workspace and are summed in
 * thread order afterwards. (The trainer mostly calls the ops on 1-thread contexts, one per
 * replica of its step, see trainer/model.h; the team path serves its optimiser, the gradient sum
 * and any single-replica run.) */
#ifndef UMDQ_KERNELS_CPU_H
#define UMDQ_KERNELS_CPU_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ops.h"

#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_num_procs(void) { return 1; }
#endif

#define CPU_MAX_THREADS 256

struct umd_ctx {
    int threads;            /* team size of every op */
    char *ws;               /* workspace (borrowed from the caller's activation arena) */
    size_t ws_bytes;
    size_t ws_per_thread;   /* bytes of each thread's slice; slice t starts at ws + t * ws_per_thread */
    int opnd_bf16;          /* operand tensors in bf16 (umd_ops_cpu_bf16) */
    size_t widen_bytes;     /* the tail of each slice that widens bf16 operands (cpu_widen), or 0 */
};

/* Floats of a thread's widening scratch (8 MiB): a bf16 operand's rows are widened to fp32 there,
 * a block at a time, before the sgemm that reads them (and a bf16 y's rows are computed there
 * before they are rounded); one attention pair's q, k and v likewise. A whole row block of
 * linear.c (512 rows) of x and y up to 4096 values wide together, so the blocks, and the
 * forward's bits, are those of the fp32 op; rows up to this wide. */
#define CPU_WIDEN_FLOATS (2048 * 1024)

/* The team for an op of about `work` multiply-adds or element updates: one thread below 32k
 * (starting a team costs microseconds, and far more when the cores are shared and a waiting
 * thread has been descheduled), else every thread of the context. A function of the shape only,
 * so results stay deterministic for a given thread count. */
#define CPU_MIN_TEAM_WORK 32768.0
static inline int cpu_team(const umd_ctx *c, double work) {
    return work < CPU_MIN_TEAM_WORK ? 1 : c->threads;
}

/* Runs the statements that follow the macro's arguments on a team of nt threads, each seeing
 * `tid` and `team`; with nt <= 1 they run directly on the calling thread, without an OpenMP
 * region (inside one of the model's replica threads a nested region would cost a microsecond and
 * a heap allocation per op). Used as:  CPU_PARALLEL(nt, { ... uses tid, team ... });  */
#ifdef _OPENMP
#define CPU_PARALLEL(nt_expr, ...)                                                               \
    do {                                                                                         \
        int cpu_nt_ = (nt_expr);                                                                 \
        if (cpu_nt_ <= 1) {                                                                      \
            const int tid = 0, team = 1;                                                         \
            (void)tid;                                                                           \
            (void)team;                                                                          \
            __VA_ARGS__                                                                          \
        } else {                                                                                 \
            _Pragma("omp parallel num_threads(cpu_nt_)")                                         \
            {                                                                                    \
                const int tid = omp_get_thread_num(), team = omp_get_num_threads();              \
                (void)tid;                                                                       \
                (void)team;                                                                      \
                __VA_ARGS__                                                                      \
            }                                                                                    \
        }                                                                                        \
    } while (0)
#else
#define CPU_PARALLEL(nt_expr, ...)                                                               \
    do {                                                                                         \
        (void)(nt_expr);                                                                         \
        const int tid = 0, team = 1;                                                             \
        (void)tid;                                                                               \
        (void)team;                                                                              \
        __VA_ARGS__                                                                              \
    } while (0)
#endif

/* Thread t's slice of the workspace, and the bytes of it the ops may use from its start. */
static inline void *cpu_ws(umd_ctx *c, int t) { return c->ws + (size_t)t * c->ws_per_thread; }
static inline size_t cpu_ws_bytes(const umd_ctx *c) { return c->ws_per_thread - c->widen_bytes; }
/* Thread t's widening scratch (CPU_WIDEN_FLOATS), the end of its slice; contexts with bf16
 * operands only. */
static inline float *cpu_widen(umd_ctx *c, int t) {
    return (float *)(c->ws + (size_t)(t + 1) * c->ws_per_thread - c->widen_bytes);
}

/* bf16 <-> fp32: round to nearest even (a NaN stays a quiet NaN), as a device converts a GEMM
 * operand; widening is exact. */
static inline uint16_t cpu_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float cpu_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
/* dst (n) = src's bf16 values widened. */
static inline void cpu_widen_n(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = cpu_from_bf16(src[i]);
}

/* n values to widen at once beyond the scratch: a caller's error the op cannot return. */
static inline void cpu_check_widen(long n, const char *op) {
    if (n > CPU_WIDEN_FLOATS) {
        fprintf(stderr, "umdq: cpu backend: %s: %ld bf16 operand values at once, more than %d\n",
                op, n, CPU_WIDEN_FLOATS);
        abort();
    }
}

/* Whether a tensor typed t (UMD_F32, UMD_OPND) is stored in bf16 in this context. */
static inline int cpu_is_bf16(const umd_ctx *c, int t) { return t == UMD_OPND && c->opnd_bf16; }

/* [lo, hi) of thread t among nt over n items, contiguous and balanced. */
static inline void cpu_split(long n, int t, int nt, long *lo, long *hi) {
    *lo = n * t / nt;
    *hi = n * (t + 1) / nt;
}

/* exp(x) without libm, in a form the compiler vectorises: range reduction x = n ln2 + r (ln2 in two
 * parts, Cody-Waite), |r| <= ln2/2, a degree-7 Taylor polynomial (truncation below 5e-9 relative)
 * and 2^n built in the exponent bits. Rounding to n uses the 1.5 * 2^23 trick, so it needs no
 * floor instruction. x is clamped to [-87.33654, 88]: the result stays normal (>= FLT_MIN) and
 * finite, which softmax (x <= 0) and tanh (saturates long before) are fine with. About 2 ulp.
 * The clamps are integer minima on the bit pattern (signed for the upper bound, which leaves
 * negative values alone; unsigned for the lower, which leaves positive values alone): float
 * compares would keep GCC from vectorising under the default -ftrapping-math. A NaN input
 * comes out as exp(88). */
static inline float cpu_expf(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    int32_t i = (int32_t)u;
    i = i < 0x42B00000 ? i : 0x42B00000; /* 88.0f */
    u = (uint32_t)i;
    u = u < 0xC2AEAC4Fu ? u : 0xC2AEAC4Fu; /* -87.33654f */
    memcpy(&x, &u, sizeof x);
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - 0x4B400000 + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

/* ---- the ops, one file each group ------------------------------------------------------------- */
/* linear.c */
void cpu_gemm(umd_ctx *c, int transA, int transB, int M, int N, int K, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc);
void cpu_linear_fwd(umd_ctx *c, void *y, const void *x, const float *W, const float *b, int M,
                    int N, int K, int types);
/* As ops.h's linear_bwd; dW may also be NULL here (dx alone, for the MLP's backward). */
void cpu_linear_bwd(umd_ctx *c, void *dx, float *dW, float *db, const void *dy, const void *x,
                    const float *W, int M, int N, int K, int dx_accumulate, int types);
void cpu_mlp_fwd(umd_ctx *c, void *y, void *h, float *tmp, const void *x, const float *W1,
                 const float *b1, const float *W2, const float *b2, int M, int F, int w,
                 int types);
void cpu_mlp_bwd(umd_ctx *c, void *dx, float *dW1, float *db1, float *dW2, float *db2,
                 const void *dy, const void *x, const void *h, const float *W1, const float *W2,
                 float *tmp, int M, int F, int w, int types);
/* norm.c */
void cpu_layernorm_fwd(umd_ctx *c, void *out, float *mean, float *rstd, const float *x,
                       const float *gamma, const float *beta, const float *mod, int mod_stride,
                       int n, int T, int w, long x_stride, long out_stride, int out_type);
void cpu_layernorm_bwd(umd_ctx *c, float *dx, float *dgamma, float *dbeta, float *dmod,
                       const void *dout, const float *x, const float *mean, const float *rstd,
                       const float *gamma, const float *beta, const float *mod, int mod_stride,
                       int n, int T, int w, long x_stride, long out_stride, int dx_accumulate,
                       int types);
void cpu_gate_residual_fwd(umd_ctx *c, float *out, const float *x, const void *y,
                           const float *gate, int gate_stride, int n, int T, int w, int y_type);
void cpu_gate_residual_bwd(umd_ctx *c, void *dy, float *dgate, const float *dout, const void *y,
                           const float *gate, int gate_stride, int n, int T, int w, int types);
void cpu_residual_layernorm_fwd(umd_ctx *c, float *xo, void *out, float *mean, float *rstd,
                                const float *x, const void *y, const float *gate,
                                int gate_stride, const float *gamma, const float *beta,
                                const float *mod, int mod_stride, int n, int T, int w,
                                int types);
/* attention.c */
void cpu_attention_fwd(umd_ctx *c, void *out, float *lse, const void *qkv, int n, int T,
                       int heads, int hd, int types);
void cpu_attention_bwd(umd_ctx *c, void *dqkv, const void *dout, const void *qkv,
                       const void *out, const float *lse, int n, int T, int heads, int hd,
                       int types);
size_t cpu_attention_ws_floats(int T, int hd);
/* elementwise.c */
void cpu_fill(umd_ctx *c, float *x, size_t n, float value);
void cpu_copy(umd_ctx *c, float *dst, const float *src, size_t n);
void cpu_add(umd_ctx *c, float *y, const float *a, const float *b, size_t n);
void cpu_gelu_fwd(umd_ctx *c, float *y, const float *x, size_t n);
void cpu_gelu_bwd(umd_ctx *c, float *dx, const float *dy, const float *x, size_t n);
void cpu_silu_fwd(umd_ctx *c, float *y, const float *x, size_t n);
void cpu_silu_bwd(umd_ctx *c, float *dx, const float *dy, const float *x, size_t n);
/* random.c */
void cpu_rand_uniform(umd_ctx *c, float *x, size_t n, uint64_t seed, uint32_t stream, uint32_t step,
                      uint64_t first, float lo, float hi);
void cpu_rand_normal(umd_ctx *c, float *x, size_t n, uint64_t seed, uint32_t stream, uint32_t step,
                     uint64_t first, float mean, float std);
void cpu_draw_timesteps(umd_ctx *c, int32_t *t_net, int row0, int n, int clean, int T,
                        uint64_t seed, uint32_t step);
void cpu_draw_labels(umd_ctx *c, int32_t *y_used, const int32_t *y, int row0, int n, int clean,
                     float p_drop, int null_class, uint64_t seed, uint32_t step);
void cpu_draw_keep(umd_ctx *c, int32_t *order, int32_t *slot, int row0, int n, int L, int keep,
                   uint64_t seed, uint32_t step);
/* tokens.c */
void cpu_patchify(umd_ctx *c, float *tok, const float *img, int n, int C, int H, int W, int p);
void cpu_unpatchify(umd_ctx *c, float *img, const float *tok, int n, int C, int H, int W, int p);
void cpu_noise_mix(umd_ctx *c, float *xt, const float *x0, const float *eps, const int32_t *t_net,
                   const float *sqrt_abar, const float *sqrt_1m_abar, int n, int D);
void cpu_timestep_embed(umd_ctx *c, float *out, const int32_t *t_net, int n, int w);
void cpu_embed_rows_fwd(umd_ctx *c, float *out, const float *table, const int32_t *idx, int n, int w);
void cpu_embed_rows_bwd(umd_ctx *c, float *dtable, const float *dout, const int32_t *idx, int n,
                        int w);
void cpu_gather_tokens_fwd(umd_ctx *c, float *xenc, const float *emb, const float *pos,
                           const float *cls, const int32_t *order, int n, int L, int keep, int ncls,
                           int w);
void cpu_gather_tokens_bwd(umd_ctx *c, float *demb, float *dpos, float *dcls, const float *dxenc,
                           const int32_t *slot, int n, int L, int keep, int ncls, int w);
void cpu_decoder_input_fwd(umd_ctx *c, float *xdec, const float *rep, const float *enc,
                           const float *mask, const float *pos, const int32_t *slot, int n, int L,
                           int Tenc, int ncls, int w);
void cpu_decoder_input_bwd(umd_ctx *c, float *drep, float *denc, float *dmask, float *dpos,
                           const float *dxdec, const int32_t *slot, int n, int L, int Tenc,
                           int ncls, int w);
void cpu_token_mean_fwd(umd_ctx *c, float *out, const float *x, int n, int T, int k, int w);
void cpu_token_mean_bwd(umd_ctx *c, float *dx, const float *dout, int n, int T, int k, int w);
void cpu_mse_masked(umd_ctx *c, float *dpred, const float *pred, const float *target,
                    const int32_t *slot, int n, int L, int pp, int C, int half, int select,
                    float grad_scale, double *sum);
/* optim.c */
void cpu_sumsq(umd_ctx *c, double *out, const float *x, size_t n);
void cpu_adamw(umd_ctx *c, float *p, const float *g, float *m, float *v, const uint8_t *decay,
               size_t n, const umd_adamw_args *a, const double *sumsq);
void cpu_ema(umd_ctx *c, float *ema, const float *p, size_t n, float decay);

#endif
