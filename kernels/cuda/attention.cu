/* attention.cu: multi-head self-attention without a mask, forward and backward, on cuBLAS
 * batched GEMMs (one call per product over every (sequence, head) pair of a group of heads, their
 * operand addresses written by a small kernel into the workspace) and row kernels for the softmax
 * and its backward. Between forward and backward only the row log-sum-exps lse (n, heads, T) are
 * kept (ops.h's contract); the (T, T) tiles live in the workspace, a group of heads at a time.
 *
 *   forward   S = Q K^T (workspace), P = softmax(S / sqrt(hd)) in place with lse = max + log(sum),
 *             O = P V
 *   backward  S = Q K^T and dP = dO V^T (workspace, two tiles per head), then in one row pass
 *             P = exp(S / sqrt(hd) - lse), D = dO . O (hd values), dS = P (dP - D) / sqrt(hd);
 *             dV = P^T dO, dQ = dS K, dK = dS^T Q
 * A head's Q, K, V are hd-wide column slices of qkv (n, T, 3, heads, hd): rows 3w apart. Per group
 * of heads: four launches forward and eight backward; the groups are as large as the workspace
 * holds (every head at once forward, about half of them backward at the benchmarks' shapes).
 * Bytes: the saved state falls from n heads T^2 floats to n heads T; the price is one more T x T
 * x hd product in the backward (S recomputed), about 1/5 of attention's FLOPs.
 * The row kernels run a warp per row (T up to a few thousand): fp32 with expf, as the CPU.
 * Math: fp32 contexts compute in fp32, tf32 and bf16 contexts in tf32 (the tiles and lse stay
 * fp32 in every mode). This is the path of fp32 and TF32 contexts and of head widths other than
 * 64 in bf16 ones: bf16 contexts run head width 64 on the bf16 tensor-core kernels of
 * mma_attention.cu. umd_cuda_set_attention (or UMDQ_CUDA_ATTENTION=gemm|fused|mma) chooses:
 * gemm sends everything here, fused sends TF32 and bf16 contexts with head widths 32 and 64 to
 * flash_attention.cu's TF32 kernels.
 * Operand tensors (ops.h): qkv is one only where the mma kernels take it, bf16 (they read the
 * bf16 values their conversion would have made): attention_operand says so for a head width
 * (cuda_mma_attention_mode, the dispatch's own test of the context, and bf16 operands). This
 * path and the fused one read fp32 q, k, v: a bf16 qkv that would reach them (the mode switched
 * after the model was laid out, shapes beyond the mma kernels') fails the context, naming the
 * op, the head width and the mode.
 * Branch tensors (ops.h): the attention output out is one where the types say UMD_OPND_O in a
 * context with bf16 operands (the model asks so only where attention_operand and branch_operand
 * both say 1): the mma kernels write it bf16 in their epilogue and read it so in the backward's
 * D. This path and the fused one write and read fp32 out only: a bf16 out that would reach them
 * fails the context likewise, before anything is written.
 * Gradient tensors (ops.h): the backward's dqkv is one where the types say UMD_GRAD in a context
 * that keeps them in bf16 (grad_operand: UMDQ_CUDA_BF16_GRAD=1, with bf16 branch tensors), and
 * the model says so only with a bf16 qkv (UMD_OPND): the mma kernels round their fp32 dq, dk, dv
 * once in the store, half the bytes written. This path and the fused one write fp32 dqkv only, and
 * the mma kernels write bf16 only with a bf16 qkv: a bf16 dqkv asked anywhere else fails the
 * context, naming the op and why, before anything is written. Its dout is one where the types
 * say UMD_GRAD_X in such a context (proj's dx, which the model keeps in bf16 with its dqkv): the
 * mma kernels read it as it is, the same bits as an fp32 dout holding its values. This path and
 * the fused one read fp32 dout only, and the mma kernels read bf16 only with a bf16 dqkv: a bf16
 * dout asked anywhere else fails the context likewise. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "cuda_internal.h"

__device__ static inline float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ static inline float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Rows of a group's tiles: r = e T + i with e = b hg + (h - h0), the tile of (sequence b, head h)
 * at e T T; its lse at (b heads + h) T + i. */
__device__ static inline long lse_index(long r, int T, int heads, int h0, int hg) {
    long e = r / T, i = r % T;
    long b = e / hg;
    int h = h0 + (int)(e % hg);
    return (b * heads + h) * (long)T + i;
}

/* Softmax of the group's score rows in place, and each row's lse (in units of the scaled
 * scores). */
__global__ static void k_softmax_lse(float *S, float *lse, long rows, int T, int heads, int h0,
                                     int hg, float scale) {
    long r = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    float *p = S + r * T;
    float mx = -INFINITY;
    for (int j = lane; j < T; j += 32) mx = fmaxf(mx, p[j]);
    mx = warp_max(mx);
    float s = 0.0f;
    for (int j = lane; j < T; j += 32) {
        float e = expf((p[j] - mx) * scale);
        p[j] = e;
        s += e;
    }
    s = warp_sum(s);
    float inv = 1.0f / s;
    for (int j = lane; j < T; j += 32) p[j] *= inv;
    if (lane == 0) lse[lse_index(r, T, heads, h0, hg)] = mx * scale + logf(s);
}

/* The per-(sequence, head) operand addresses of a group of heads [h0, h0 + hg) for the batched
 * products: index e = b * hg + (h - h0). The group's S / P tiles are packed (n * hg, T, T) at
 * tiles, its dP / dS tiles likewise at dtiles (backward only). */
enum { PQ, PK, PV, PP, PO, PS, PDQ, PDK, PDV, PG, NPTR };
__global__ static void k_attn_ptrs(const float **ptr, long stride, const float *qkv,
                                   const float *tiles, const float *out, const float *dtiles,
                                   const float *dqkv, const float *dout, int n, int T, int heads,
                                   int hd, int h0, int hg) {
    long e = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long)n * hg) return;
    long b = e / hg;
    int h = h0 + (int)(e % hg);
    const long W = (long)heads * hd, TT = (long)T * T;
    const float *q = qkv + b * T * 3 * W + (long)h * hd;
    ptr[PQ * stride + e] = q;
    ptr[PK * stride + e] = q + W;
    ptr[PV * stride + e] = q + 2 * W;
    ptr[PP * stride + e] = tiles + e * TT;
    ptr[PO * stride + e] = out + b * T * W + (long)h * hd;
    if (dqkv) {
        const float *dq = dqkv + b * T * 3 * W + (long)h * hd;
        ptr[PS * stride + e] = dtiles + e * TT;
        ptr[PDQ * stride + e] = dq;
        ptr[PDK * stride + e] = dq + W;
        ptr[PDV * stride + e] = dq + 2 * W;
        ptr[PG * stride + e] = dout + b * T * W + (long)h * hd;
    }
}

/* Row-major C_i (M, N) = alpha op(A_i) op(B_i) + beta C_i for the `count` pointer triples. */
static void gemm_ptrs(umd_ctx *c, const char *op, int transA, int transB, int M, int N, int K,
                      const float *const *A, long lda, const float *const *B, long ldb, float *const *C,
                      long ldc, int count) {
    if (c->failed || count <= 0) return;
    const float one = 1.0f, zero = 0.0f;
    cublas_check(c, cublasGemmBatchedEx(c->blas, transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                                        transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &one,
                                        (const void *const *)B, CUDA_R_32F, (int)ldb,
                                        (const void *const *)A, CUDA_R_32F, (int)lda, &zero,
                                        (void *const *)C, CUDA_R_32F, (int)ldc, count,
                                        c->math == 0 ? CUBLAS_COMPUTE_32F_PEDANTIC
                                                     : CUBLAS_COMPUTE_32F_FAST_TF32,
                                        CUBLAS_GEMM_DEFAULT),
                 op);
}

/* Heads per group so that `tiles` (T, T) tiles per (sequence, head) fit the workspace; 0 when
 * not even one head does or the pointer table is too small. */
static int head_group(const umd_ctx *c, int n, int T, int heads, int tiles) {
    size_t per = (size_t)n * T * T * tiles;
    size_t g = per ? c->attn_floats / per : 0;
    if (!c->ptrs || !c->attn || (size_t)n * heads > c->attn_ptrs) g = 0;
    return g < (size_t)heads ? (int)g : heads;
}

extern "C" int cuda_attention_operand(const umd_ctx *c, int hd) {
    return cuda_mma_attention_mode(c, hd) && cuda_opnd_bf16(c, UMD_OPND);
}

extern "C" int cuda_branch_operand(const umd_ctx *c) { return c->branch_bf16; }

extern "C" int cuda_grad_operand(const umd_ctx *c) { return c->grad_bf16; }

/* A bf16 qkv (qbf), out (obf), dqkv (gbf) or dout (dbf) met the fused or the GEMM path, which
 * read fp32 qkv, write and read fp32 out, write fp32 dqkv and read fp32 dout: the context fails
 * rather than take bf16 for fp32. 1 when it did. */
static int bf16_unsupported(umd_ctx *c, const char *op, int qbf, int obf, int gbf, int dbf, int n,
                            int T, int heads, int hd) {
    if (!qbf && !obf && !gbf && !dbf) return 0;
    const char *mode = c->attn_mode == UMD_ATTN_MMA     ? "mma"
                       : c->attn_mode == UMD_ATTN_FUSED ? "fused"
                                                        : "gemm";
    const char *path = cuda_flash_usable(c, n, T, heads, hd) ? "fused" : "GEMM";
    char what[320];
    if (qbf)
        snprintf(what, sizeof what,
                 "qkv is a bf16 operand, and attention at head width %d (attention mode %s; n %d, "
                 "T %d, heads %d) runs on the %s path, which reads fp32 qkv (only the mma kernels "
                 "read bf16)",
                 hd, mode, n, T, heads, path);
    else if (obf)
        snprintf(what, sizeof what,
                 "out is a bf16 branch tensor (UMD_OPND_O), and attention at head width %d "
                 "(attention mode %s; n %d, T %d, heads %d) runs on the %s path, which %s fp32 out "
                 "(only the mma kernels take bf16)",
                 hd, mode, n, T, heads, path,
                 strcmp(op, "attention_fwd") == 0 ? "writes" : "reads");
    else if (gbf)
        snprintf(what, sizeof what,
                 "dqkv is a bf16 gradient tensor (UMD_GRAD), and attention at head width %d "
                 "(attention mode %s; n %d, T %d, heads %d) runs on the %s path, which writes fp32 "
                 "dqkv (only the mma kernels write bf16)",
                 hd, mode, n, T, heads, path);
    else
        snprintf(what, sizeof what,
                 "dout is a bf16 gradient tensor (UMD_GRAD_X), and attention at head width %d "
                 "(attention mode %s; n %d, T %d, heads %d) runs on the %s path, which reads fp32 "
                 "dout (only the mma kernels read bf16)",
                 hd, mode, n, T, heads, path);
    cuda_fail(c, op, what);
    return 1;
}

extern "C" void cuda_attention_fwd(umd_ctx *c, void *outv, float *lse, const void *qkvv, int n,
                                   int T, int heads, int hd, int types) {
    CUDA_OP(c);
    if (n <= 0 || T <= 0) return;
    const int qbf = cuda_opnd_bf16(c, types & UMD_OPND), obf = cuda_flag_bf16(c, types, UMD_OPND_O);
    if (cuda_mma_attention_usable(c, n, T, heads, hd)) {
        cuda_mma_attention_fwd(c, outv, lse, qkvv, n, T, heads, qbf, obf);
        return;
    }
    if (bf16_unsupported(c, "attention_fwd", qbf, obf, 0, 0, n, T, heads, hd)) return;
    const float *qkv = (const float *)qkvv;
    float *out = (float *)outv;
    if (cuda_flash_usable(c, n, T, heads, hd)) {
        cuda_flash_fwd(c, out, lse, qkv, n, T, heads, hd);
        return;
    }
    int hg = head_group(c, n, T, heads, 1);
    if (hg < 1) {
        cuda_fail(c, "attention_fwd", "sequences x heads beyond the workspace limits");
        return;
    }
    const long W = (long)heads * hd, row = 3 * W, stride = (long)c->attn_ptrs;
    const float scale = 1.0f / sqrtf((float)hd);
    const float **P = (const float **)c->ptrs;
    for (int h0 = 0; h0 < heads; h0 += hg) {
        int g = h0 + hg <= heads ? hg : heads - h0, cnt = n * g;
        k_attn_ptrs<<<cuda_blocks((size_t)cnt, 128), 128, 0, c->stream>>>(
            P, stride, qkv, c->attn, out, NULL, NULL, NULL, n, T, heads, hd, h0, g);
        if (CUDA_LAUNCHED(c, "attention_fwd")) return;
        /* S = Q K^T */
        gemm_ptrs(c, "attention_fwd", 0, 1, T, T, hd, P + PQ * stride, row, P + PK * stride, row,
                  (float *const *)(P + PP * stride), T, cnt);
        long rows = (long)cnt * T;
        k_softmax_lse<<<cuda_blocks((size_t)rows, 8), 256, 0, c->stream>>>(c->attn, lse, rows, T,
                                                                           heads, h0, g, scale);
        if (CUDA_LAUNCHED(c, "attention_fwd")) return;
        /* O = P V */
        gemm_ptrs(c, "attention_fwd", 0, 0, T, hd, T, P + PP * stride, T, P + PV * stride, row,
                  (float *const *)(P + PO * stride), W, cnt);
    }
}

/* One row pass of the backward over the group's tiles: S -> P = exp(S scale - lse) in place,
 * dP -> dS = P (dP - D) scale in place, D = dO . O of the row (hd values). */
__global__ static void k_softmax_bwd(float *S, float *dS, const float *lse, const float *dout,
                                     const float *out, long rows, int T, int heads, int hd, int h0,
                                     int hg, float scale) {
    long r = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    long e = r / T, i = r % T;
    long b = e / hg;
    int h = h0 + (int)(e % hg);
    const long W = (long)heads * hd;
    const float *g = dout + (b * T + i) * W + (long)h * hd, *o = out + (b * T + i) * W + (long)h * hd;
    float D = 0.0f;
    for (int k = lane; k < hd; k += 32) D += g[k] * o[k];
    D = warp_sum(D);
    const float l = lse[(b * heads + h) * (long)T + i];
    float *p = S + r * T, *d = dS + r * T;
    for (int j = lane; j < T; j += 32) {
        float pj = expf(p[j] * scale - l);
        p[j] = pj;
        d[j] = pj * (d[j] - D) * scale;
    }
}

extern "C" void cuda_attention_bwd(umd_ctx *c, void *dqkvv, const void *doutv, const void *qkvv,
                                   const void *outv, const float *lse, int n, int T, int heads,
                                   int hd, int types) {
    CUDA_OP(c);
    if (n <= 0 || T <= 0) return;
    const int qbf = cuda_opnd_bf16(c, types & UMD_OPND), obf = cuda_flag_bf16(c, types, UMD_OPND_O);
    const int gbf = cuda_grad_bf16(c, types), dbf = cuda_gradx_bf16(c, types);
    if (cuda_mma_attention_usable(c, n, T, heads, hd)) {
        if ((gbf && !qbf) || (dbf && !gbf)) {
            char what[280];
            if (gbf && !qbf)
                snprintf(what, sizeof what,
                         "dqkv is a bf16 gradient tensor (UMD_GRAD) and qkv is fp32 (attention mode "
                         "mma, head width %d; n %d, T %d, heads %d): the mma kernels write a bf16 "
                         "dqkv only from a bf16 qkv (UMD_OPND)",
                         hd, n, T, heads);
            else
                snprintf(what, sizeof what,
                         "dout is a bf16 gradient tensor (UMD_GRAD_X) and dqkv is fp32 (attention "
                         "mode mma, head width %d; n %d, T %d, heads %d): the mma kernels read a "
                         "bf16 dout only where they write a bf16 dqkv (UMD_GRAD, from a bf16 qkv)",
                         hd, n, T, heads);
            cuda_fail(c, "attention_bwd", what);
            return;
        }
        cuda_mma_attention_bwd(c, dqkvv, doutv, qkvv, outv, lse, n, T, heads, qbf, obf, gbf, dbf);
        return;
    }
    if (bf16_unsupported(c, "attention_bwd", qbf, obf, gbf, dbf, n, T, heads, hd)) return;
    const float *dout = (const float *)doutv;
    float *dqkv = (float *)dqkvv;
    const float *qkv = (const float *)qkvv, *out = (const float *)outv;
    if (cuda_flash_usable(c, n, T, heads, hd)) {
        cuda_flash_bwd(c, dqkv, dout, qkv, out, lse, n, T, heads, hd);
        return;
    }
    int hg = head_group(c, n, T, heads, 2);
    if (hg < 1) {
        cuda_fail(c, "attention_bwd", "sequences beyond the workspace limits");
        return;
    }
    const long W = (long)heads * hd, row = 3 * W, stride = (long)c->attn_ptrs;
    const float scale = 1.0f / sqrtf((float)hd);
    const float **P = (const float **)c->ptrs;
    float *tiles = c->attn, *dtiles = c->attn + (size_t)n * hg * T * T;
    for (int h0 = 0; h0 < heads; h0 += hg) {
        int g = h0 + hg <= heads ? hg : heads - h0, cnt = n * g;
        k_attn_ptrs<<<cuda_blocks((size_t)cnt, 128), 128, 0, c->stream>>>(
            P, stride, qkv, tiles, out, dtiles, dqkv, dout, n, T, heads, hd, h0, g);
        if (CUDA_LAUNCHED(c, "attention_bwd")) return;
        /* S = Q K^T, dP = dO V^T */
        gemm_ptrs(c, "attention_bwd", 0, 1, T, T, hd, P + PQ * stride, row, P + PK * stride, row,
                  (float *const *)(P + PP * stride), T, cnt);
        gemm_ptrs(c, "attention_bwd", 0, 1, T, T, hd, P + PG * stride, W, P + PV * stride, row,
                  (float *const *)(P + PS * stride), T, cnt);
        long rows = (long)cnt * T;
        k_softmax_bwd<<<cuda_blocks((size_t)rows, 8), 256, 0, c->stream>>>(
            tiles, dtiles, lse, dout, out, rows, T, heads, hd, h0, g, scale);
        if (CUDA_LAUNCHED(c, "attention_bwd")) return;
        /* dV = P^T dO, dQ = dS K, dK = dS^T Q */
        gemm_ptrs(c, "attention_bwd", 1, 0, T, hd, T, P + PP * stride, T, P + PG * stride, W,
                  (float *const *)(P + PDV * stride), row, cnt);
        gemm_ptrs(c, "attention_bwd", 0, 0, T, hd, T, P + PS * stride, T, P + PK * stride, row,
                  (float *const *)(P + PDQ * stride), row, cnt);
        gemm_ptrs(c, "attention_bwd", 1, 0, T, hd, T, P + PS * stride, T, P + PQ * stride, row,
                  (float *const *)(P + PDK * stride), row, cnt);
    }
}
