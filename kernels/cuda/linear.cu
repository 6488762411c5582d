/* linear.cu: GEMM and Linear layers on cuBLAS, in the context's math.
 *
 *   fp32  cublasGemmEx with CUBLAS_COMPUTE_32F_PEDANTIC (no TF32 anywhere)
 *   tf32  CUBLAS_COMPUTE_32F_FAST_TF32: fp32 operands rounded to TF32 in the tensor cores, fp32
 *         accumulation
 *   bf16  the operands are converted to bf16 into the workspace's stages, the product runs on
 *         bf16 tensor cores with fp32 accumulation and an fp32 output. Weights are converted
 *         whole (their master copy stays fp32); activations in chunks of rows that fit a stage
 *         (CUDA_BF16_STAGE values), one GEMM per chunk (dW accumulates over the chunks).
 *
 * Row-major products run as their column-major transposes: C (M, N) = op(A) op(B) is C^T =
 * op(B)^T op(A)^T, so cuBLAS sees (N, M) with the operands swapped and the same transpose flags.
 * Linear forward runs on cuBLASLt with the bias epilogue (one pass over y; a plan per shape,
 * kept in the context); where cuBLASLt has no algorithm it fills y with the bias rows and
 * accumulates a cublasGemmEx product onto them (beta 1). The bias gradient is a gemv of dy^T against a vector of ones (deterministic, unlike atomics). */
#include <string.h>
#include "cuda_internal.h"
#include "umd_cuda.h"

#define THREADS 256

static cublasComputeType_t compute_type(const umd_ctx *c) {
    return c->math == UMD_MATH_FP32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F_FAST_TF32;
}

/* Row-major C (M, N) = alpha op(A) op(B) + beta C with operands of type ab. */
static void gemm_ex(umd_ctx *c, const char *op, cudaDataType_t ab, cublasComputeType_t ct,
                    int transA, int transB, int M, int N, int K, float alpha, const void *A,
                    long lda, const void *B, long ldb, float beta, float *C, long ldc) {
    if (c->failed || M <= 0 || N <= 0) return;
    cublas_check(c, cublasGemmEx(c->blas, transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ab,
                                 (int)ldb, A, ab, (int)lda, &beta, C, CUDA_R_32F, (int)ldc, ct,
                                 CUBLAS_GEMM_DEFAULT),
                 op);
}

/* dst (rows, cols) packed bf16 <- src rows at stride ld floats: flat when the rows are packed,
 * else a row per grid row (no 64-bit divisions per element: they would cost more than the copy). */
__global__ static void k_to_bf16_flat(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16(src[i]);
}

__global__ static void k_to_bf16_rows(__nv_bfloat16 *dst, const float *src, long rows, int cols,
                                      long ld) {
    for (long r = blockIdx.y; r < rows; r += gridDim.y)
        for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < cols; k += gridDim.x * blockDim.x)
            dst[r * cols + k] = __float2bfloat16(src[r * ld + k]);
}

static void to_bf16(umd_ctx *c, const char *op, __nv_bfloat16 *dst, const float *src, long rows,
                    int cols, long ld) {
    if (c->failed || rows <= 0 || cols <= 0) return;
    if (ld == cols) {
        size_t total = (size_t)rows * cols;
        unsigned g = cuda_blocks(total, THREADS);
        k_to_bf16_flat<<<g < 65536 ? g : 65536, THREADS, 0, c->stream>>>(dst, src, total);
    } else {
        dim3 grid(cuda_blocks((size_t)cols, THREADS), (unsigned)(rows < 65535 ? rows : 65535));
        k_to_bf16_rows<<<grid, THREADS, 0, c->stream>>>(dst, src, rows, cols, ld);
    }
    CUDA_LAUNCHED(c, op);
}

void cuda_gemm_rm(umd_ctx *c, const char *op, int transA, int transB, int M, int N, int K,
                  float alpha, const float *A, long lda, const float *B, long ldb, float beta,
                  float *C, long ldc) {
    if (c->failed || M <= 0 || N <= 0) return;
    /* op(A) is (M, K): stored (M, K) at lda, or (K, M) when transposed; likewise B */
    long arows = transA ? K : M, acols = transA ? M : K;
    long brows = transB ? N : K, bcols = transB ? K : N;
    if (c->math == UMD_MATH_BF16 && c->bf_a && K > 0 && (size_t)arows * acols <= (size_t)CUDA_BF16_STAGE &&
        (size_t)brows * bcols <= (size_t)CUDA_BF16_STAGE) {
        to_bf16(c, op, c->bf_a, A, arows, (int)acols, lda);
        to_bf16(c, op, c->bf_b, B, brows, (int)bcols, ldb);
        gemm_ex(c, op, CUDA_R_16BF, CUBLAS_COMPUTE_32F, transA, transB, M, N, K, alpha, c->bf_a,
                acols, c->bf_b, bcols, beta, C, ldc);
        return;
    }
    gemm_ex(c, op, CUDA_R_32F, compute_type(c), transA, transB, M, N, K, alpha, A, lda, B, ldb, beta,
            C, ldc);
}

void cuda_gemm_rm_batched(umd_ctx *c, const char *op, int transA, int transB, int M, int N, int K,
                          float alpha, const float *A, long lda, long sA, const float *B, long ldb,
                          long sB, float beta, float *C, long ldc, long sC, int count) {
    if (c->failed || M <= 0 || N <= 0 || count <= 0) return;
    cublas_check(c, cublasGemmStridedBatchedEx(
                        c->blas, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N,
                        N, M, K, &alpha, B, CUDA_R_32F, (int)ldb, sB, A, CUDA_R_32F, (int)lda, sA,
                        &beta, C, CUDA_R_32F, (int)ldc, sC, count, compute_type(c),
                        CUBLAS_GEMM_DEFAULT),
                 op);
}

extern "C" void cuda_gemm(umd_ctx *c, int transA, int transB, int M, int N, int K, float alpha,
                          const float *A, int lda, const float *B, int ldb, float beta, float *C,
                          int ldc) {
    cuda_gemm_rm(c, "gemm", transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* y (M, N) rows = b: a grid row per matrix row (grid-stride over rows past 65535). */
__global__ static void k_bias_rows(float *y, const float *b, long M, int N) {
    for (long r = blockIdx.y; r < M; r += gridDim.y)
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < N; j += gridDim.x * blockDim.x)
            y[r * N + j] = b[j];
}

/* The plan of y (M, N) = x (M, K) W^T (+ b) as cuBLASLt sees it (column-major): D (N, M) =
 * op_T(W as (K, N)) x^T (K, M), the bias a length-N vector over D's rows. NULL when the table is
 * full (the caller then uses cublasGemmEx). */
static lt_plan *lt_plan_for(umd_ctx *c, int M, int N, int K, int bf16, int bias) {
    for (int i = 0; i < c->nplans; i++) {
        lt_plan *p = &c->plans[i];
        if (p->M == M && p->N == N && p->K == K && p->bf16 == bf16 && p->bias == bias) return p;
    }
    if (c->nplans == CUDA_LT_PLANS) return NULL;
    lt_plan *p = &c->plans[c->nplans++];
    memset(p, 0, sizeof *p);
    p->M = M, p->N = N, p->K = K, p->bf16 = bf16, p->bias = bias;
    cublasComputeType_t ct = bf16 ? CUBLAS_COMPUTE_32F : compute_type(c);
    cudaDataType_t ab = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    cudaDataType_t bias_type = CUDA_R_32F;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    size_t wsb = CUDA_LT_WORKSPACE;
    if (cublasLtMatmulDescCreate(&p->desc, ct, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA) ||
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB) ||
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) ||
        (bias && cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                &bias_type, sizeof bias_type)) ||
        cublasLtMatrixLayoutCreate(&p->a, ab, K, N, K) ||
        cublasLtMatrixLayoutCreate(&p->b, ab, K, M, K) ||
        cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, N, M, N) ||
        cublasLtMatmulPreferenceCreate(&pref) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                             sizeof wsb) ||
        cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->a, p->b, p->d, p->d, pref, 1, &res,
                                       &found) ||
        found < 1) {
        p->usable = 0;
    } else {
        p->algo = res.algo;
        p->usable = 1;
    }
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    return p;
}

/* y (M, N) = x (M, K) W^T + b (b may be NULL) through cuBLASLt with the bias epilogue; x and W
 * in fp32 or (bf16 != 0) bf16. 0, or -1 when cuBLASLt has no plan for it (nothing was done). */
static int lt_linear(umd_ctx *c, float *y, const void *x, const void *W, const float *b, int M,
                     int N, int K, int bf16) {
    lt_plan *p = lt_plan_for(c, M, N, K, bf16, b != NULL);
    if (!p || !p->usable) return -1;
    if (b && cublas_check(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                            &b, sizeof b), "linear_fwd"))
        return 0;
    const float one = 1.0f, zero = 0.0f;
    cublas_check(c, cublasLtMatmul(c->lt, p->desc, &one, W, p->a, x, p->b, &zero, y, p->d, y, p->d,
                                   &p->algo, c->lt_ws, CUDA_LT_WORKSPACE, c->stream),
                 "linear_fwd");
    return 0;
}

/* Rows per bf16 chunk of a (M, max(a, b)) operand pair. */
static long chunk_rows(long M, int a, int b) {
    long wmax = a > b ? a : b;
    long r = CUDA_BF16_STAGE / (wmax > 0 ? wmax : 1);
    return r < M ? r : M;
}

static int bf16_weights_fit(const umd_ctx *c, int N, int K) {
    return c->math == UMD_MATH_BF16 && c->bf_w && (size_t)N * K <= c->bf_w_len &&
           chunk_rows(1, N, K) >= 1 && (long)N <= CUDA_BF16_STAGE && (long)K <= CUDA_BF16_STAGE;
}

extern "C" void cuda_linear_fwd(umd_ctx *c, float *y, const float *x, const float *W,
                                const float *b, int M, int N, int K) {
    CUDA_OP(c);
    if (M <= 0 || N <= 0) return;
    if (bf16_weights_fit(c, N, K)) {
        to_bf16(c, "linear_fwd", c->bf_w, W, N, K, K);
        long R = chunk_rows(M, K, K);
        long r0 = 0;
        for (; r0 < M; r0 += R) {
            long r1 = r0 + R < M ? r0 + R : M;
            to_bf16(c, "linear_fwd", c->bf_a, x + r0 * K, r1 - r0, K, K);
            if (lt_linear(c, y + r0 * N, c->bf_a, c->bf_w, b, (int)(r1 - r0), N, K, 1)) break;
        }
        if (r0 >= M) return;
        /* no cuBLASLt plan: the rest as below (bias rows, then the product onto them) */
    } else if (lt_linear(c, y, x, W, b, M, N, K, 0) == 0) {
        return;
    }
    if (b) {
        dim3 grid(cuda_blocks((size_t)N, THREADS), (unsigned)(M < 65535 ? M : 65535));
        k_bias_rows<<<grid, THREADS, 0, c->stream>>>(y, b, M, N);
        if (CUDA_LAUNCHED(c, "linear_fwd")) return;
    }
    float beta = b ? 1.0f : 0.0f;
    if (bf16_weights_fit(c, N, K)) {
        to_bf16(c, "linear_fwd", c->bf_w, W, N, K, K);
        long R = chunk_rows(M, K, K);
        for (long r0 = 0; r0 < M; r0 += R) {
            long r1 = r0 + R < M ? r0 + R : M;
            to_bf16(c, "linear_fwd", c->bf_a, x + r0 * K, r1 - r0, K, K);
            gemm_ex(c, "linear_fwd", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 0, 1, (int)(r1 - r0), N, K,
                    1.0f, c->bf_a, K, c->bf_w, K, beta, y + r0 * N, N);
        }
        return;
    }
    gemm_ex(c, "linear_fwd", CUDA_R_32F, compute_type(c), 0, 1, M, N, K, 1.0f, x, K, W, K, beta, y,
            N);
}

extern "C" void cuda_linear_bwd(umd_ctx *c, float *dx, float *dW, float *db, const float *dy,
                                const float *x, const float *W, int M, int N, int K,
                                int dx_accumulate) {
    CUDA_OP(c);
    if (M <= 0 || N <= 0) return;
    float bx = dx_accumulate ? 1.0f : 0.0f;
    if (bf16_weights_fit(c, N, K)) {
        if (dx) to_bf16(c, "linear_bwd", c->bf_w, W, N, K, K);
        long R = chunk_rows(M, N, K);
        for (long r0 = 0; r0 < M; r0 += R) {
            long r1 = r0 + R < M ? r0 + R : M;
            int rows = (int)(r1 - r0);
            to_bf16(c, "linear_bwd", c->bf_a, dy + r0 * N, rows, N, N);
            to_bf16(c, "linear_bwd", c->bf_b, x + r0 * K, rows, K, K);
            if (dx)
                gemm_ex(c, "linear_bwd", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 0, 0, rows, K, N, 1.0f,
                        c->bf_a, N, c->bf_w, K, bx, dx + r0 * K, K);
            gemm_ex(c, "linear_bwd", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 1, 0, N, K, rows, 1.0f,
                    c->bf_a, N, c->bf_b, K, 1.0f, dW, K);
        }
    } else {
        if (dx)
            gemm_ex(c, "linear_bwd", CUDA_R_32F, compute_type(c), 0, 0, M, K, N, 1.0f, dy, N, W, K,
                    bx, dx, K);
        gemm_ex(c, "linear_bwd", CUDA_R_32F, compute_type(c), 1, 0, N, K, M, 1.0f, dy, N, x, K, 1.0f,
                dW, K);
    }
    if (db) {
        if (!c->ones || (size_t)M > (size_t)c->lim.max_rows * (size_t)c->lim.max_tokens) {
            cuda_fail(c, "linear_bwd", "the bias gradient needs more rows than the workspace limits");
            return;
        }
        /* db (N) += dy^T 1: dy row-major (M, N) is column-major (N, M) with ld N */
        const float one = 1.0f;
        cublas_check(c, cublasSgemv(c->blas, CUBLAS_OP_N, N, M, &one, dy, N, c->ones, 1, &one, db, 1),
                     "linear_bwd");
    }
}
