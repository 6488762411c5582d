/* linear.cu: GEMM and Linear layers on cuBLAS, in the context's math.
 *
 *   fp32  cublasGemmEx with CUBLAS_COMPUTE_32F_PEDANTIC (no TF32 anywhere)
 *   tf32  CUBLAS_COMPUTE_32F_FAST_TF32: fp32 operands rounded to TF32 in the tensor cores, fp32
 *         accumulation
 *   bf16  the operands are converted to bf16 into the workspace's stages, the product runs on
 *         bf16 tensor cores with fp32 accumulation and an fp32 output. Weights are converted
 *         whole (their master copy stays fp32), and so are activations: a stage holds the
 *         widest operand of the model's Linears (cuda_internal.h); wider ones (other callers)
 *         go in chunks of rows, one GEMM per chunk (dW accumulates over the chunks). Whole
 *         operands matter for dW = dy^T x, whose reduction runs over every row: in chunks its
 *         (N, K) output, a few dozen tiles, is re-read and re-written once per chunk.
 *
 * Row-major products run as their column-major transposes: C (M, N) = op(A) op(B) is C^T =
 * op(B)^T op(A)^T, so cuBLAS sees (N, M) with the operands swapped and the same transpose flags.
 * Those with bf16 operands go to the GEMM tuner first in a context that tunes them
 * (UMDQ_CUDA_GEMM_TUNE=1, gemm_tune.cu): the algorithm it kept for the shape, else cublasGemmEx;
 * there a Linear's forward plan is timed against the heuristic's other algorithms at its first
 * run too, and each plan keeps its own fastest (a bf16 y then no longer takes the fp32 plan's).
 * Linear forward runs on cuBLASLt with the bias epilogue (one pass over y; a plan per shape,
 * kept in the context); where cuBLASLt has no algorithm it fills y with the bias rows and
 * accumulates a cublasGemmEx product onto them (beta 1). The bias gradient is a gemv of dy^T against a vector of ones (deterministic, unlike atomics); in bf16, where dy is converted whole,
 * the conversion kernel sums the columns in the same pass (partials per chunk of rows, added in
 * order: deterministic too).
 *
 * Operand tensors (ops.h): in a context with bf16 operands (bf16 math and
 * UMDQ_CUDA_BF16_OPERANDS=1, on by default) an x passed as
 * UMD_OPND is already bf16, packed (M, K), rounded where the stage's conversion would have
 * rounded it: linear_fwd hands it to the GEMM as its A operand instead of bf_a, linear_bwd to
 * dW = dy^T x instead of bf_b, whole or a chunk of rows at a time (offsets in bf16 elements),
 * with the same chunks and GEMM shapes as an fp32 x, so the results are the same bits, one
 * conversion pass fewer. The paths that read x in fp32 (weights beyond the bf16 stage) cannot
 * take one: they fail the context, naming the op and the shape.
 * linear_fwd also writes y as one (UMD_OPND_Y: the qkv Linear, whose output only attention's
 * products read): cuBLASLt's D is then bf16 (C likewise, unread: beta 0), the epilogue adding
 * the fp32 bias (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE CUDA_R_32F) to the fp32 accumulator and
 * rounding the sum once, to nearest even: the value an fp32 y would hold, rounded
 * (test_cuda_ops checks it bit for bit against the host's rounding). cublasLt.h documents the
 * bias as of D's type outside the IMMA and fp8 kernels; a bf16 bias would round b before the
 * sum, so the fp32 one is asked for, and where no algorithm takes it the context fails. The
 * plan is keyed by y's type too, and takes the fp32 plan's algorithm of the same shape where
 * cuBLASLt accepts it for the bf16 output (its id and configuration initialised on the bf16
 * types, as an algo descriptor carries its data types; cublasLtMatmulAlgoCheck), so the sums
 * run in the same order as the default context's; else the heuristic's. Neither may split K
 * and add the parts in the output type (bf16 partial sums). Chunks of rows as for an fp32 y
 * (offsets in bf16 elements). Where cuBLASLt refuses a bf16 D with an fp32 bias (no algorithm
 * for it), each chunk's fp32 y is computed as the default context computes it, into the bf16
 * stages' free bytes, and rounded into y (y_bf16_via_fp32): the same bits, one pass more.
 * A bf16 y never gets fp32 written into it: where neither way has room or a plan, or with
 * weights beyond the bf16 stage, the context fails, naming the op and the shape.
 * Gradient tensors (ops.h): linear_bwd's dy is one where the types say UMD_GRAD in a context that
 * keeps them in bf16 (grad_operand: UMDQ_CUDA_BF16_GRAD=1, with bf16 branch tensors;
 * cuda_grad_bf16). The op before it (gate_residual_bwd, attention_bwd) wrote dy as its fp32
 * result rounded once to nearest even, the value the stage's conversion makes of an fp32 dy, so
 * dx = dy W and dW = dy^T x read dy as their A operand in place of bf_a, with the same chunks and
 * shapes: the bits of an fp32 dy holding those values, without the conversion pass (M N 4 bytes
 * read and M N 2 written fewer, besides dy's own bytes halved). db += its column sums in one pass
 * that reads it and writes nothing else (the column-sum kernels with their store compiled out, on
 * src_bf16: M N 2 bytes read), in the chunks and the order of the fused conversion, so db has the
 * fp32 dy's bits too where that one is summed so (whole in the stage, the partials holding its
 * chunks, the same 4-wide or scalar layout; else an fp32 dy's sums are a gemv, within fp32
 * rounding). Weights beyond the bf16 stage (the path that reads dy in fp32) and a db whose chunks
 * the partials cannot hold refuse a bf16 dy: the context fails, naming the op and the shapes.
 * dx is one where the types say UMD_GRAD_X in such a context (the gradient of a product's input:
 * proj's dx, attention's dout; the qkv Linear's, norm1's): the chunk's product dy W writes it
 * with a bf16 C, the fp32 sums rounded once to nearest even (the context's cuBLAS adds no split-K
 * parts in bf16), M K 2 bytes written where an fp32 dx takes 4, and the op that reads it reads
 * half the bytes. cuBLAS may take another algorithm for a bf16 C than for an fp32 one, so its
 * sums may differ from an fp32 dx's in their last bits: the values are the fp32 dx rounded, or
 * one bf16 step from it where the sums straddle a rounding boundary (test_cuda_ops). A bf16 dx is
 * written, never added to: dx_accumulate, and weights beyond the bf16 stage (the fp32 path),
 * refuse it, the context failing before anything is written. */
#include <stdio.h>
#include <string.h>
#include "cuda_internal.h"
#include "umd_cuda.h"

#define THREADS 256

static cublasComputeType_t compute_type(const umd_ctx *c) {
    return c->math == UMD_MATH_FP32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F_FAST_TF32;
}

/* A GEMM's span in the profile (cuda_prof_part_begin), named by its op and shape: "op:gemm M x N
 * x K", the transposes (T: op(A) or op(B) transposed), "+=" where C is read, and C's type;
 * -1 when the context does not profile. */
static int gemm_part(umd_ctx *c, const char *op, int transA, int transB, int M, int N, int K,
                     float beta, cudaDataType_t cty) {
    if (!c->prof_ev) return -1;
    char name[64];
    snprintf(name, sizeof name, "%s:gemm %dx%dx%d %c%c%s%s", op, M, N, K, transA ? 'T' : 'N',
             transB ? 'T' : 'N', beta != 0.0f ? " +=" : "", cty == CUDA_R_16BF ? " bf16" : "");
    return cuda_prof_part_begin(c, name);
}

/* Row-major C (M, N) = alpha op(A) op(B) + beta C with operands of type ab, C of type cty. */
static void gemm_ex_to(umd_ctx *c, const char *op, cudaDataType_t ab, cublasComputeType_t ct,
                       int transA, int transB, int M, int N, int K, float alpha, const void *A,
                       long lda, const void *B, long ldb, float beta, void *C, cudaDataType_t cty,
                       long ldc) {
    if (c->failed || M <= 0 || N <= 0) return;
    /* bf16 operands in a context that tunes its GEMMs: the algorithm kept for the shape (its
     * span covers the tuning too, once, at the shape's first call) */
    const int part = gemm_part(c, op, transA, transB, M, N, K, beta, cty);
    if (!(c->gemm_tune && cuda_gemm_tuned(c, op, ab, cty, ct, transA, transB, M, N, K, alpha, A,
                                          lda, B, ldb, beta, C, ldc) == 0))
        cublas_check(c, cublasGemmEx(c->blas, transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                                     transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ab,
                                     (int)ldb, A, ab, (int)lda, &beta, C, cty, (int)ldc, ct,
                                     CUBLAS_GEMM_DEFAULT),
                     op);
    cuda_prof_part_end(c, part);
}

void cuda_gemm_ex(umd_ctx *c, const char *op, cudaDataType_t ab, cublasComputeType_t ct,
                    int transA, int transB, int M, int N, int K, float alpha, const void *A,
                    long lda, const void *B, long ldb, float beta, float *C, long ldc) {
    gemm_ex_to(c, op, ab, ct, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, CUDA_R_32F,
               ldc);
}

void cuda_gemm_bf16_to_bf16(umd_ctx *c, const char *op, int transA, int transB, int M, int N,
                            int K, const __nv_bfloat16 *A, long lda, const __nv_bfloat16 *B,
                            long ldb, __nv_bfloat16 *C, long ldc) {
    gemm_ex_to(c, op, CUDA_R_16BF, CUBLAS_COMPUTE_32F, transA, transB, M, N, K, 1.0f, A, lda, B,
               ldb, 0.0f, C, CUDA_R_16BF, ldc);
}

/* The values a conversion to bf16 reads, element i of a flat (rows, cols) operand: src_plain the
 * floats themselves, src_gelu gelu(h) (the MLP's fc2 input, mlp.cu), src_dgelu g gelu'(h) (its
 * GELU backward); src_gelu16 and src_dgelu16 the same from a bf16 h (the MLP's hidden state
 * where the context keeps it in bf16), its values widened (exactly) before the same expressions,
 * so they give the bits the fp32 sources give on the widened values. at4 reads 4 from an i that
 * is a multiple of 4: 16 bytes of an fp32 tensor, 8 of a bf16 one, aligned() saying whether the
 * base is. */
struct src_plain {
    const float *a;
    __device__ float at(long i) const { return a[i]; }
    __device__ float4 at4(long i) const { return *reinterpret_cast<const float4 *>(a + i); }
    bool aligned() const { return ((uintptr_t)a & 15) == 0; }
};
struct src_gelu {
    const float *h;
    __device__ float at(long i) const { return cuda_gelu_tanh(h[i]); }
    __device__ float4 at4(long i) const {
        float4 x = *reinterpret_cast<const float4 *>(h + i);
        return make_float4(cuda_gelu_tanh(x.x), cuda_gelu_tanh(x.y), cuda_gelu_tanh(x.z),
                           cuda_gelu_tanh(x.w));
    }
    bool aligned() const { return ((uintptr_t)h & 15) == 0; }
};
struct src_dgelu {
    const float *g, *h;
    __device__ float at(long i) const { return g[i] * cuda_gelu_tanh_grad(h[i]); }
    __device__ float4 at4(long i) const {
        float4 a = *reinterpret_cast<const float4 *>(g + i), x = *reinterpret_cast<const float4 *>(h + i);
        return make_float4(a.x * cuda_gelu_tanh_grad(x.x), a.y * cuda_gelu_tanh_grad(x.y),
                           a.z * cuda_gelu_tanh_grad(x.z), a.w * cuda_gelu_tanh_grad(x.w));
    }
    bool aligned() const { return (((uintptr_t)g | (uintptr_t)h) & 15) == 0; }
};
/* 4 bf16 from an 8-byte aligned p, widened: element k is the low half of word k / 2 when k is
 * even (little-endian, the layout bf16x4 below stores), the high half when it is odd. */
__device__ static inline float4 widen4(const __nv_bfloat16 *p) {
    uint2 u = *reinterpret_cast<const uint2 *>(p);
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
                       __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
}
struct src_gelu16 {
    const __nv_bfloat16 *h;
    __device__ float at(long i) const { return cuda_gelu_tanh(__bfloat162float(h[i])); }
    __device__ float4 at4(long i) const {
        float4 x = widen4(h + i);
        return make_float4(cuda_gelu_tanh(x.x), cuda_gelu_tanh(x.y), cuda_gelu_tanh(x.z),
                           cuda_gelu_tanh(x.w));
    }
    bool aligned() const { return ((uintptr_t)h & 7) == 0; }
};
struct src_dgelu16 {
    const float *g;
    const __nv_bfloat16 *h;
    __device__ float at(long i) const { return g[i] * cuda_gelu_tanh_grad(__bfloat162float(h[i])); }
    __device__ float4 at4(long i) const {
        float4 a = *reinterpret_cast<const float4 *>(g + i), x = widen4(h + i);
        return make_float4(a.x * cuda_gelu_tanh_grad(x.x), a.y * cuda_gelu_tanh_grad(x.y),
                           a.z * cuda_gelu_tanh_grad(x.z), a.w * cuda_gelu_tanh_grad(x.w));
    }
    bool aligned() const { return ((uintptr_t)g & 15) == 0 && ((uintptr_t)h & 7) == 0; }
};

/* g gelu'(h) with g and h bf16 (the MLP's dy W2 in bf16, bf16_dh), both widened. */
struct src_dgelu16g {
    const __nv_bfloat16 *g, *h;
    __device__ float at(long i) const {
        return __bfloat162float(g[i]) * cuda_gelu_tanh_grad(__bfloat162float(h[i]));
    }
    __device__ float4 at4(long i) const {
        float4 a = widen4(g + i), x = widen4(h + i);
        return make_float4(a.x * cuda_gelu_tanh_grad(x.x), a.y * cuda_gelu_tanh_grad(x.y),
                           a.z * cuda_gelu_tanh_grad(x.z), a.w * cuda_gelu_tanh_grad(x.w));
    }
    bool aligned() const { return (((uintptr_t)g | (uintptr_t)h) & 7) == 0; }
};

/* A bf16 tensor's values widened (exactly): a gradient tensor (UMD_GRAD) whose column sums are
 * wanted (linear_bwd's and mlp_bwd's bias gradients of a bf16 dy). */
struct src_bf16 {
    const __nv_bfloat16 *a;
    __device__ float at(long i) const { return __bfloat162float(a[i]); }
    __device__ float4 at4(long i) const { return widen4(a + i); }
    bool aligned() const { return ((uintptr_t)a & 7) == 0; }
};

__device__ static inline uint2 bf16x4(float4 v) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    return make_uint2(*reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
}

/* src_dgelu16g's values, g gelu'(h), and as it reads h, bf16(gelu(h)) stored at the same index of
 * gh (src_gelu16's value, rounded to nearest even as the conversions round it): the MLP
 * backward's one pass over h (mlp.cu, mlp_one_pass). Each value is the expression of the source
 * it stands for, on the same widened h. gh is not g (g may be the pass's destination). */
struct src_dgelu16g_gelu {
    const __nv_bfloat16 *g, *h;
    __nv_bfloat16 *gh;
    __device__ float at(long i) const {
        const float x = __bfloat162float(h[i]);
        gh[i] = __float2bfloat16(cuda_gelu_tanh(x));
        return __bfloat162float(g[i]) * cuda_gelu_tanh_grad(x);
    }
    __device__ float4 at4(long i) const {
        float4 a = widen4(g + i), x = widen4(h + i);
        *reinterpret_cast<uint2 *>(gh + i) =
            bf16x4(make_float4(cuda_gelu_tanh(x.x), cuda_gelu_tanh(x.y), cuda_gelu_tanh(x.z),
                               cuda_gelu_tanh(x.w)));
        return make_float4(a.x * cuda_gelu_tanh_grad(x.x), a.y * cuda_gelu_tanh_grad(x.y),
                           a.z * cuda_gelu_tanh_grad(x.z), a.w * cuda_gelu_tanh_grad(x.w));
    }
    bool aligned() const { return (((uintptr_t)g | (uintptr_t)h | (uintptr_t)gh) & 7) == 0; }
};

/* dst (n) bf16 <- src: 4 per thread (float4 in, 8 bytes out) where aligned, else 1. */
template <class S> __global__ static void k_conv4(__nv_bfloat16 *dst, S src, size_t n4) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4;
         i += (size_t)gridDim.x * blockDim.x)
        *reinterpret_cast<uint2 *>(dst + 4 * i) = bf16x4(src.at4((long)(4 * i)));
}
template <class S> __global__ static void k_conv(__nv_bfloat16 *dst, S src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16(src.at((long)i));
}

template <class S> static void convert(umd_ctx *c, const char *op, __nv_bfloat16 *dst, S src, size_t n) {
    if (n % 4 == 0 && src.aligned() && ((uintptr_t)dst & 7) == 0) {
        unsigned g = cuda_blocks(n / 4, THREADS);
        k_conv4<<<g < 65536 ? g : 65536, THREADS, 0, c->stream>>>(dst, src, n / 4);
    } else {
        unsigned g = cuda_blocks(n, THREADS);
        k_conv<<<g < 65536 ? g : 65536, THREADS, 0, c->stream>>>(dst, src, n);
    }
    CUDA_LAUNCHED(c, op);
}

void cuda_gelu_to_bf16(umd_ctx *c, const char *op, __nv_bfloat16 *dst, const void *h, int hbf,
                       size_t n) {
    if (c->failed || n == 0) return;
    if (hbf) convert(c, op, dst, src_gelu16{(const __nv_bfloat16 *)h}, n);
    else convert(c, op, dst, src_gelu{(const float *)h}, n);
}

/* dst (n) fp32 <- src, one element a thread (grid-stride): each thread reads its element before
 * writing it, so dst may alias what src reads at the same index. */
template <class S> __global__ static void k_eval(float *dst, S src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = src.at((long)i);
}

void cuda_dgelu_bf16h(umd_ctx *c, const char *op, float *dst, const float *g,
                      const __nv_bfloat16 *h, size_t n) {
    if (c->failed || n == 0) return;
    unsigned grid = cuda_blocks(n, THREADS);
    k_eval<<<grid < 65536 ? grid : 65536, THREADS, 0, c->stream>>>(dst, src_dgelu16{g, h}, n);
    CUDA_LAUNCHED(c, op);
}

/* dst (rows, cols) packed bf16 <- src rows at stride ld floats: flat when the rows are packed,
 * else a row per grid row (no 64-bit divisions per element: they would cost more than the copy). */

__global__ static void k_to_bf16_rows(__nv_bfloat16 *dst, const float *src, long rows, int cols,
                                      long ld) {
    for (long r = blockIdx.y; r < rows; r += gridDim.y)
        for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < cols; k += gridDim.x * blockDim.x)
            dst[r * cols + k] = __float2bfloat16(src[r * ld + k]);
}

void cuda_to_bf16(umd_ctx *c, const char *op, __nv_bfloat16 *dst, const float *src, long rows,
                    int cols, long ld) {
    if (c->failed || rows <= 0 || cols <= 0) return;
    if (ld == cols) {
        convert(c, op, dst, src_plain{src}, (size_t)rows * cols);
        return;
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
    if (c->math == UMD_MATH_BF16 && c->bf_a && K > 0 && (size_t)arows * acols <= c->bf_stage &&
        (size_t)brows * bcols <= c->bf_stage) {
        cuda_to_bf16(c, op, c->bf_a, A, arows, (int)acols, lda);
        cuda_to_bf16(c, op, c->bf_b, B, brows, (int)bcols, ldb);
        cuda_gemm_ex(c, op, CUDA_R_16BF, CUBLAS_COMPUTE_32F, transA, transB, M, N, K, alpha, c->bf_a,
                acols, c->bf_b, bcols, beta, C, ldc);
        return;
    }
    cuda_gemm_ex(c, op, CUDA_R_32F, compute_type(c), transA, transB, M, N, K, alpha, A, lda, B, ldb, beta,
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

int cuda_lt_sums_in_output(const cublasLtMatmulAlgo_t *a) {
    int32_t splits = 1;
    uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_NONE;
    size_t got;
    if (cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits,
                                             sizeof splits, &got) ||
        cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                             sizeof scheme, &got))
        return 0;
    return splits > 1 && (scheme == CUBLASLT_REDUCTION_SCHEME_INPLACE ||
                          scheme == CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE);
}

/* dst = the algorithm src (a plan's, made for other C and D types) on these types: its id and
 * every configuration attribute. An algo descriptor carries the data types it was initialised
 * for (cublasLtMatmulAlgoInit), and cublasLtMatmulAlgoCheck refuses one whose types are not the
 * descriptors' (CUBLAS_STATUS_INVALID_VALUE), so the fp32 plan's algo cannot be checked as it is
 * against a bf16 D. 0, or -1 when cuBLASLt refuses a step. */
static int algo_on_types(umd_ctx *c, const cublasLtMatmulAlgo_t *src, cublasComputeType_t ct,
                         cudaDataType_t ab, cudaDataType_t cd, cublasLtMatmulAlgo_t *dst) {
    static const cublasLtMatmulAlgoConfigAttributes_t attrs[] = {
        CUBLASLT_ALGO_CONFIG_TILE_ID,          CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
        CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING,
        CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION,    CUBLASLT_ALGO_CONFIG_STAGES_ID,
        CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID,   CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID};
    int32_t id = 0;
    size_t got = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(src, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &got) ||
        cublasLtMatmulAlgoInit(c->lt, ct, CUDA_R_32F, ab, ab, cd, cd, id, dst))
        return -1;
    for (size_t i = 0; i < sizeof attrs / sizeof *attrs; i++) {
        uint64_t v = 0;
        size_t n = 0; /* the attribute's own size (uint16_t, int32_t or uint32_t) */
        if (cublasLtMatmulAlgoConfigGetAttribute(src, attrs[i], NULL, 0, &n) || n == 0 ||
            n > sizeof v || cublasLtMatmulAlgoConfigGetAttribute(src, attrs[i], &v, n, &got) ||
            cublasLtMatmulAlgoConfigSetAttribute(dst, attrs[i], &v, n))
            return -1;
    }
    return 0;
}

/* The heuristic's algorithm for a plan's descriptors within the cuBLASLt workspace into p->algo;
 * fp32_parts: no algorithm that adds split-K parts in the output type (a bf16 D). 1 when found. */
static int lt_heuristic(umd_ctx *c, lt_plan *p, int fp32_parts) {
    const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    size_t wsb = CUDA_LT_WORKSPACE;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    const int ok =
        cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                             sizeof wsb) == CUBLAS_STATUS_SUCCESS &&
        (!fp32_parts ||
         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                              &schemes, sizeof schemes) == CUBLAS_STATUS_SUCCESS) &&
        cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->a, p->b, p->d, p->d, pref, 1, &res,
                                       &found) == CUBLAS_STATUS_SUCCESS &&
        found >= 1;
    if (ok) p->algo = res.algo;
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    return ok;
}

void cuda_lt_plan_release(lt_plan *p) {
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->d) cublasLtMatrixLayoutDestroy(p->d);
    p->desc = NULL, p->a = p->b = p->d = NULL;
}

/* The plan of y (M, N) = x (M, K) W^T (+ b) as cuBLASLt sees it (column-major): D (N, M) =
 * op_T(W as (K, N)) x^T (K, M), the bias a length-N fp32 vector over D's rows; D fp32, or bf16
 * (ybf16: x and W bf16 too), the fp32 plan's algorithm then where cuBLASLt accepts it, and no
 * algorithm that adds split-K parts in bf16. NULL when the table is full (the caller then uses
 * cublasGemmEx, or fails for a bf16 D). */
static lt_plan *lt_plan_for(umd_ctx *c, int M, int N, int K, int bf16, int bias, int ybf16) {
    for (int i = 0; i < c->nplans; i++) {
        lt_plan *p = &c->plans[i];
        if (p->epi == LT_EPI_NONE && p->M == M && p->N == N && p->K == K && p->bf16 == bf16 &&
            p->bias == bias && p->ybf16 == ybf16)
            return p;
    }
    /* the fp32 output's plan first (its own slot): its algorithm is the one to match */
    const lt_plan *f = ybf16 ? lt_plan_for(c, M, N, K, bf16, bias, 0) : NULL;
    if (c->nplans == CUDA_LT_PLANS) return NULL;
    lt_plan *p = &c->plans[c->nplans++];
    memset(p, 0, sizeof *p);
    p->M = M, p->N = N, p->K = K, p->bf16 = bf16, p->bias = bias, p->ybf16 = ybf16;
    cublasComputeType_t ct = bf16 ? CUBLAS_COMPUTE_32F : compute_type(c);
    cudaDataType_t ab = bf16 ? CUDA_R_16BF : CUDA_R_32F, dt = ybf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    /* a bf16 D's bias in bf16 where the context rounds it so (bf16_bias: cuda_lt_linear stages
     * it in the partials) */
    p->bias_bf16 = bias && ybf16 && c->bf16_bias;
    cudaDataType_t bias_type = p->bias_bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasLtMatmulHeuristicResult_t res;
    if (cublasLtMatmulDescCreate(&p->desc, ct, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA) ||
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB) ||
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) ||
        (bias && cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                &bias_type, sizeof bias_type)) ||
        cublasLtMatrixLayoutCreate(&p->a, ab, K, N, K) ||
        cublasLtMatrixLayoutCreate(&p->b, ab, K, M, K) ||
        cublasLtMatrixLayoutCreate(&p->d, dt, N, M, N)) {
        p->usable = 0;
        return p;
    }
    cublasLtMatmulAlgo_t same;
    if (f && f->usable && !cuda_lt_sums_in_output(&f->algo) &&
        algo_on_types(c, &f->algo, ct, ab, dt, &same) == 0 &&
        cublasLtMatmulAlgoCheck(c->lt, p->desc, p->a, p->b, p->d, p->d, &same, &res) ==
            CUBLAS_STATUS_SUCCESS &&
        res.workspaceSize <= CUDA_LT_WORKSPACE) {
        p->algo = same;
        p->usable = 1;
        return p;
    }
    p->usable = lt_heuristic(c, p, ybf16); /* bf16 D: fp32 parts only */
    return p;
}

/* y (M, N) = x (M, K) W^T + b (b may be NULL) through cuBLASLt with the bias epilogue; x and W
 * in fp32 or (bf16 != 0) bf16, y fp32 or (ybf16 != 0, bf16 x and W only) bf16. 0, or -1 when
 * cuBLASLt has no plan for it (nothing was done). */
int cuda_lt_linear(umd_ctx *c, void *y, const void *x, const void *W, const float *b, int M,
                     int N, int K, int bf16, int ybf16) {
    lt_plan *p = lt_plan_for(c, M, N, K, bf16, b != NULL, ybf16);
    if (!p || !p->usable) return -1;
    const void *bias = b;
    if (b && p->bias_bf16) {
        /* the bias rounded into the partials (free between ops; 256-byte aligned) */
        if (c->partials_floats * sizeof(float) < (size_t)N * sizeof(__nv_bfloat16)) return -1;
        cuda_to_bf16(c, "linear_fwd", (__nv_bfloat16 *)(void *)c->partials, b, 1, N, N);
        bias = c->partials;
    }
    if (b && cublas_check(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                            &bias, sizeof bias), "linear_fwd"))
        return 0;
    /* its first run in a context that tunes its GEMMs: the plan's algorithm timed against the
     * heuristic's others first (the bias pointer is set: the candidates run the real product) */
    if (c->gemm_tune && !p->tuned) {
        cuda_tune_lt(c, "linear_fwd", p, W, x, y);
        if (c->failed) return 0;
    }
    /* a tuned algorithm was taken at its first run's pointers' alignment: pointers aligned less
     * (another view of the same shape) run the plan's own algorithm */
    const cublasLtMatmulAlgo_t *algo = &p->algo;
    if (p->retuned) {
        if (tune_align((uintptr_t)W) < p->tuned_align[0] ||
            tune_align((uintptr_t)x) < p->tuned_align[1] ||
            tune_align((uintptr_t)y) < p->tuned_align[2])
            algo = &p->algo0;
        else
            c->tune_runs++;
    }
    const float one = 1.0f, zero = 0.0f;
    int part = -1;
    if (c->prof_ev) {
        char name[64];
        snprintf(name, sizeof name, "linear_fwd:cuBLASLt %dx%dx%d%s%s", M, N, K,
                 b ? " bias" : "", ybf16 ? " bf16" : "");
        part = cuda_prof_part_begin(c, name);
    }
    cublas_check(c, cublasLtMatmul(c->lt, p->desc, &one, W, p->a, x, p->b, &zero, y, p->d, y, p->d,
                                   algo, c->lt_ws, CUDA_LT_WORKSPACE, c->stream),
                 "linear_fwd");
    cuda_prof_part_end(c, part);
    return 0;
}

/* Whether cuBLASLt writes a bf16 y (M, N) = x W^T (+ b) for this context: a plan with a bf16 D
 * and an fp32 bias (cublasLt.h documents the bias as of D's type outside the IMMA and fp8
 * kernels, and the H200's cuBLAS 13 offers none), or a bf16 bias where the context rounds it so
 * (UMDQ_CUDA_BF16_BIAS=1: the bias staged in the partials), unless UMDQ_CUDA_LT_BF16_Y=0 made
 * the context take the fp32 scratch below in its place (the tests of that path). Without such a
 * plan the fp32 y (its bias fp32) is rounded. */
static int lt_writes_bf16(umd_ctx *c, int M, int N, int K, int bias) {
    if (c->lt_bf16_y_off) return 0;
    const lt_plan *p = lt_plan_for(c, M, N, K, 1, bias, 1);
    return p && p->usable &&
           (!p->bias_bf16 || c->partials_floats * sizeof(float) >= (size_t)N * sizeof(__nv_bfloat16));
}

/* Rows per bf16 chunk of a (M, max(a, b)) operand pair: all of them at the model's shapes. Where
 * the rows go in chunks, a chunk is a multiple of 128 rows (where the stage holds that many), so
 * each chunk's rows start a multiple of 256 bytes into every fp32 and bf16 tensor of the product
 * (the alignment cuBLASLt's algorithm choice assumes of its pointers), whatever the widths. */
static long chunk_rows(const umd_ctx *c, long M, int a, int b) {
    long wmax = a > b ? a : b;
    long r = (long)c->bf_stage / (wmax > 0 ? wmax : 1);
    if (r >= M) return M;
    return r >= 128 ? r - r % 128 : r;
}

static int bf16_weights_fit(const umd_ctx *c, int N, int K) {
    return c->math == UMD_MATH_BF16 && c->bf_w && (size_t)N * K <= c->bf_w_len &&
           chunk_rows(c, 1, N, K) >= 1;
}

int cuda_bf16_whole(const umd_ctx *c, long M, int N, int K) {
    return bf16_weights_fit(c, N, K) && chunk_rows(c, M, N, K) == M;
}

/* A bf16 operand x met a product whose weights do not fit the bf16 stage (that path reads x in
 * fp32): the context fails rather than read bf16 as fp32. 1 when it did. */
static int opnd_unfit(umd_ctx *c, const char *op, int xbf, int M, int N, int K) {
    if (!xbf || bf16_weights_fit(c, N, K)) return 0;
    char what[200];
    snprintf(what, sizeof what,
             "x (%d, %d) is a bf16 operand, and weights (%d, %d) do not fit the bf16 stage (%zu "
             "values): the fp32 path cannot read it",
             M, K, N, K, c->bf_w ? c->bf_w_len : (size_t)0);
    cuda_fail(c, op, what);
    return 1;
}

/* A bf16 operand y met a product that cannot write one: weights beyond the bf16 stage (that path
 * writes fp32), or (lt 1) no cuBLASLt plan with a bf16 output for rows of it. The context fails
 * rather than write fp32 into a bf16 tensor. 1 when it did. */
static int y_unfit(umd_ctx *c, int ybf, int lt, long rows, int M, int N, int K) {
    if (!ybf || (!lt && bf16_weights_fit(c, N, K))) return 0;
    char what[240];
    if (lt)
        snprintf(what, sizeof what,
                 "y (%d, %d) is a bf16 operand, and cuBLASLt has no algorithm writing bf16 with an "
                 "fp32 bias for %ld rows of it (K %d): no other path writes bf16",
                 M, N, rows, K);
    else
        snprintf(what, sizeof what,
                 "y (%d, %d) is a bf16 operand, and weights (%d, %d) do not fit the bf16 stage (%zu "
                 "values): the fp32 path cannot write it",
                 M, N, N, K, c->bf_w ? c->bf_w_len : (size_t)0);
    cuda_fail(c, "linear_fwd", what);
    return 1;
}

/* Rows r0 .. r1 of a bf16 y where cuBLASLt does not write one (lt_writes_bf16 0): the fp32 y
 * rows exactly as the default context computes them (the same chunk, plan and bias epilogue, on
 * the bf16 x rows a) into the stages' free bytes, then rounded to nearest even into y: the
 * value an fp32 y holds, rounded, as the bf16 D would give. The scratch is bf_b, or bf_a and
 * bf_b (adjacent in the workspace: ops_cuda.cu) where x is an operand and bf_a is free. The
 * context fails, naming the op and the shapes, where the rows do not fit or cuBLASLt has no fp32
 * plan for them either. 0, or -1 when it failed. */
static int y_bf16_via_fp32(umd_ctx *c, void *yv, const __nv_bfloat16 *a, const float *b, long r0,
                           long r1, int M, int N, int K, int xbf) {
    float *f = (float *)(void *)(xbf ? c->bf_a : c->bf_b);
    const size_t room = (xbf ? 2 : 1) * c->bf_stage * sizeof(__nv_bfloat16);
    const long rows = r1 - r0;
    if ((size_t)rows * N * sizeof(float) > room ||
        cuda_lt_linear(c, f, a, c->bf_w, b, (int)rows, N, K, 1, 0) != 0) {
        char what[260];
        snprintf(what, sizeof what,
                 "y (%d, %d) is a bf16 operand, cuBLASLt writes no bf16 with an fp32 bias here, and "
                 "the fp32 rows of %ld of it (K %d) %s",
                 M, N, rows, K,
                 (size_t)rows * N * sizeof(float) > room ? "do not fit the bf16 stages"
                                                         : "have no cuBLASLt plan either");
        cuda_fail(c, "linear_fwd", what);
        return -1;
    }
    cuda_to_bf16(c, "linear_fwd", (__nv_bfloat16 *)yv + r0 * N, f, rows, N, N);
    c->y_via_fp32++;
    return c->failed ? -1 : 0;
}

/* x's rows [r0, r1) of K as a bf16 GEMM operand: the operand tensor itself (xbf), else converted
 * into the stage. */
static const __nv_bfloat16 *x_bf16_rows(umd_ctx *c, const char *op, __nv_bfloat16 *stage,
                                        const void *x, int xbf, long r0, long r1, int K) {
    if (xbf) return (const __nv_bfloat16 *)x + r0 * K;
    cuda_to_bf16(c, op, stage, (const float *)x + r0 * K, r1 - r0, K, K);
    return stage;
}

/* ---- the MLP's GEMMs with GELU in the epilogue (UMDQ_CUDA_GELU_EPILOGUE=1) ----------------------
 * Everything bf16 (operands, D, and the epilogue's auxiliary matrix, which is h: cuBLASLt's GELU
 * input), fp32 accumulation and scale. Column-major, as cuBLASLt sees the row-major tensors:
 *   fc1    D (F, M) = gelu(op_T(W1 as (w, F)) x^T (w, M) + b1), aux (F, M) = the sum before GELU
 *          (GELU_AUX_BIAS: h, rounded once; D is the fc2 operand, into bf_b), b1 copied into the
 *          partials in fp32, or rounded to bf16 where cuBLASLt takes only a bias of D's type (as
 *          bf16 autocast rounds it)
 *   dgelu  D (F, M) = (W2 as (F, w)) dy^T (w, M) * gelu'(aux = h) (DGELU: dh, into bf_b; dy the
 *          bf16 operand the caller passes: bf_a, or a bf16 gradient tensor itself), with
 *          DGELU_BGRAD the bias gradient too: D's row sums (over the M tokens), db1's increment,
 *          into the partials in fp32, or bf16 where cuBLASLt takes only that
 * The bias and its gradient live in the partials (free between ops), 256-byte aligned as the
 * heuristic is told, whatever the parameter's own alignment.
 * aux's leading dimension is F, which cuBLASLt wants a multiple of 8 (else no plan here). No
 * algorithm that adds split-K parts in bf16. The results are not the staging passes' bits:
 * cuBLASLt's GELU reads the fp32 sum where the staging reads h rounded, and sums db1 in its own
 * order (deterministic for the plan); mlp.cu says how they relate. */
static lt_plan *lt_gelu_plan(umd_ctx *c, int epi, int M, int F, int w) {
    for (int i = 0; i < c->nplans; i++) {
        lt_plan *p = &c->plans[i];
        if (p->epi == epi && p->M == M && p->N == F && p->K == w) return p;
    }
    if (c->nplans == CUDA_LT_PLANS) return NULL;
    lt_plan *p = &c->plans[c->nplans++];
    memset(p, 0, sizeof *p);
    p->M = M, p->N = F, p->K = w, p->epi = epi, p->bf16 = 1, p->ybf16 = 1;
    p->bias = epi != LT_EPI_DGELU;
    if (F % 8 != 0) return p; /* aux's leading dimension: no plan */
    const int fwd = epi == LT_EPI_GELU_AUX_BIAS;
    const cublasLtEpilogue_t e = fwd                        ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
                                 : epi == LT_EPI_DGELU_BGRAD ? CUBLASLT_EPILOGUE_DGELU_BGRAD
                                                             : CUBLASLT_EPILOGUE_DGELU;
    const cublasOperation_t tA = fwd ? CUBLAS_OP_T : CUBLAS_OP_N, tB = CUBLAS_OP_N;
    const int64_t aux_ld = F;
    /* the bias (gradient) in fp32 first, then in bf16 (D's type: what cublasLt.h documents) */
    const int tries = p->bias ? 2 : 1;
    for (int t = 0; t < tries && !p->usable; t++) {
        const cudaDataType_t bias_type = t == 0 ? CUDA_R_32F : CUDA_R_16BF;
        cuda_lt_plan_release(p);
        if (cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) ||
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA) ||
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB) ||
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e) ||
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld,
                                           sizeof aux_ld) ||
            (p->bias && cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                       &bias_type, sizeof bias_type)) ||
            (fwd ? cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, w, F, w)
                 : cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, F, w, F)) ||
            cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, w, M, w) ||
            cublasLtMatrixLayoutCreate(&p->d, CUDA_R_16BF, F, M, F))
            continue;
        /* the pointers' alignment counts in the heuristic: the workspace's own (256 bytes), as
         * every h and bias gradient the calls pass (cuda_lt_dgelu declines a dy or h that is
         * not); a stand-in address of that alignment where the plan is made before
         * set_workspace (mlp_scratch) */
        const void *stand_in = (const void *)(uintptr_t)256;
        const void *aux_at = c->bf_b ? (const void *)c->bf_b : stand_in;
        const void *bias_at = c->partials ? (const void *)c->partials : stand_in;
        if (cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                           &aux_at, sizeof aux_at) ||
            (p->bias &&
             cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_at,
                                            sizeof bias_at)))
            continue;
        p->usable = lt_heuristic(c, p, 1);
        p->bias_bf16 = t == 1;
    }
    return p;
}

static int lt_gelu_matmul(umd_ctx *c, const char *op, lt_plan *p, const void *A, const void *B,
                          const void *bias, const void *aux) {
    const float one = 1.0f, zero = 0.0f;
    if (cublas_check(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                                       &aux, sizeof aux), op) ||
        (bias && cublas_check(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                                &bias, sizeof bias), op)))
        return -1;
    char name[64];
    snprintf(name, sizeof name, "%s:cuBLASLt GELU epilogue", op);
    const int part = cuda_prof_part_begin(c, name);
    cublas_check(c, cublasLtMatmul(c->lt, p->desc, &one, A, p->a, B, p->b, &zero, c->bf_b, p->d,
                                   c->bf_b, p->d, &p->algo, c->lt_ws, CUDA_LT_WORKSPACE, c->stream),
                 op);
    cuda_prof_part_end(c, part);
    c->gelu_epi_gemms++;
    return 0;
}

int cuda_lt_gelu_fc1(umd_ctx *c, const char *op, void *h, const void *x, int xbf, const float *W1,
                     const float *b1, int M, int F, int w) {
    /* b1 goes into the partials (free between ops) */
    lt_plan *p = b1 && c->partials_floats >= (size_t)F ? lt_gelu_plan(c, LT_EPI_GELU_AUX_BIAS, M, F, w)
                                                       : NULL;
    if (!p || !p->usable) {
        c->gelu_epi_refused++;
        return -1;
    }
    const __nv_bfloat16 *xs = x_bf16_rows(c, op, c->bf_a, x, xbf, 0, M, w);
    cuda_to_bf16(c, op, c->bf_w, W1, F, w, w);
    if (p->bias_bf16) cuda_to_bf16(c, op, (__nv_bfloat16 *)(void *)c->partials, b1, 1, F, F);
    else cuda_check(c, cudaMemcpyAsync(c->partials, b1, (size_t)F * sizeof(float),
                                       cudaMemcpyDeviceToDevice, c->stream), op);
    lt_gelu_matmul(c, op, p, c->bf_w, xs, c->partials, h);
    return 0;
}

/* db (n) += g (n), g fp32 or bf16 (widened). */
__global__ static void k_add_vec(float *db, const void *g, int bf, int n) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < n)
        db[j] += bf ? __bfloat162float(((const __nv_bfloat16 *)g)[j]) : ((const float *)g)[j];
}

int cuda_lt_gelu_planned(umd_ctx *c, int M, int F, int w) {
    const lt_plan *f = lt_gelu_plan(c, LT_EPI_GELU_AUX_BIAS, M, F, w);
    const lt_plan *b = lt_gelu_plan(c, LT_EPI_DGELU_BGRAD, M, F, w);
    return f && f->usable && b && b->usable;
}

/* cuda_lt_dgelu's plan, with (bias) or without db1; NULL where there is none to be had. */
static lt_plan *lt_dgelu_plan(umd_ctx *c, int bias, int M, int F, int w) {
    /* db1's increment goes into the partials (free between ops) */
    return !bias || c->partials_floats >= (size_t)F
               ? lt_gelu_plan(c, bias ? LT_EPI_DGELU_BGRAD : LT_EPI_DGELU, M, F, w)
               : NULL;
}

/* 1 when every pointer cuda_lt_dgelu hands cublasLtMatmul is 256-byte aligned, as the heuristic
 * was told when it chose the plan's algorithm (lt_gelu_plan): the stages and the partials always
 * are, but dy may be a bf16 gradient tensor of the caller's, and h is the caller's. */
static int lt_dgelu_aligned(const umd_ctx *c, const __nv_bfloat16 *dy, const void *h, int bias) {
    uintptr_t any = (uintptr_t)c->bf_w | (uintptr_t)dy | (uintptr_t)c->bf_b | (uintptr_t)h;
    if (bias) any |= (uintptr_t)c->partials;
    return (any & 255) == 0;
}

int cuda_lt_dgelu_takes(umd_ctx *c, const __nv_bfloat16 *dy, const void *h, int bias, int M, int F,
                        int w) {
    const lt_plan *p = lt_dgelu_plan(c, bias, M, F, w);
    return p && p->usable && lt_dgelu_aligned(c, dy, h, bias);
}

int cuda_lt_dgelu(umd_ctx *c, const char *op, const __nv_bfloat16 *dy, const void *h, float *db1,
                  int M, int F, int w) {
    lt_plan *p = lt_dgelu_plan(c, db1 != NULL, M, F, w);
    if (!p || !p->usable || !lt_dgelu_aligned(c, dy, h, db1 != NULL)) {
        c->gelu_epi_refused++;
        return -1;
    }
    if (lt_gelu_matmul(c, op, p, c->bf_w, dy, db1 ? (const void *)c->partials : NULL, h))
        return 0;
    if (db1) {
        k_add_vec<<<cuda_blocks((size_t)F, THREADS), THREADS, 0, c->stream>>>(db1, c->partials,
                                                                             p->bias_bf16, F);
        CUDA_LAUNCHED(c, op);
    }
    return 0;
}

extern "C" void cuda_linear_fwd(umd_ctx *c, void *yv, const void *xv, const float *W,
                                const float *b, int M, int N, int K, int types) {
    CUDA_OP(c);
    if (M <= 0 || N <= 0) return;
    const int xbf = cuda_opnd_bf16(c, types & UMD_OPND);
    const int ybf = cuda_opnd_bf16(c, (types & UMD_OPND_Y) ? UMD_OPND : UMD_F32);
    if (opnd_unfit(c, "linear_fwd", xbf, M, N, K) || y_unfit(c, ybf, 0, M, M, N, K)) return;
    /* an MLP's bf16 h (UMD_OPND_H: train.recompute's refill) where the MLP computes it with GELU
     * in fc1's epilogue: the same plan, so the same h (its GELU output into bf_b, unread) */
    if ((types & UMD_OPND_H) && ybf && c->hidden_bf16 && c->gelu_epi && cuda_bf16_whole(c, M, N, K) &&
        cuda_lt_gelu_fc1(c, "linear_fwd", yv, xv, xbf, W, b, M, N, K) == 0)
        return;
    const float *x = (const float *)xv; /* read only where x is fp32 (!xbf) */
    float *y = (float *)yv;             /* written only where y is fp32 (!ybf) */
    if (bf16_weights_fit(c, N, K)) {
        cuda_to_bf16(c, "linear_fwd", c->bf_w, W, N, K, K);
        long R = chunk_rows(c, M, K, K);
        long r0 = 0;
        for (; r0 < M; r0 += R) {
            long r1 = r0 + R < M ? r0 + R : M;
            const __nv_bfloat16 *a = x_bf16_rows(c, "linear_fwd", c->bf_a, xv, xbf, r0, r1, K);
            if (ybf && !lt_writes_bf16(c, (int)(r1 - r0), N, K, b != NULL)) {
                if (y_bf16_via_fp32(c, yv, a, b, r0, r1, M, N, K, xbf)) return;
                continue;
            }
            void *yr = ybf ? (void *)((__nv_bfloat16 *)yv + r0 * N) : (void *)(y + r0 * N);
            if (cuda_lt_linear(c, yr, a, c->bf_w, b, (int)(r1 - r0), N, K, 1, ybf)) break;
        }
        if (r0 >= M) return;
        if (y_unfit(c, ybf, 1, (r0 + R < M ? r0 + R : M) - r0, M, N, K)) return;
        /* no cuBLASLt plan: the rest as below (bias rows, then the product onto them) */
    } else if (cuda_lt_linear(c, y, x, W, b, M, N, K, 0, 0) == 0) {
        return;
    }
    if (b) {
        cuda_bias_rows(c, "linear_fwd", y, b, M, N);
        if (c->failed) return;
    }
    float beta = b ? 1.0f : 0.0f;
    if (bf16_weights_fit(c, N, K)) {
        cuda_to_bf16(c, "linear_fwd", c->bf_w, W, N, K, K);
        long R = chunk_rows(c, M, K, K);
        for (long r0 = 0; r0 < M; r0 += R) {
            long r1 = r0 + R < M ? r0 + R : M;
            const __nv_bfloat16 *a = x_bf16_rows(c, "linear_fwd", c->bf_a, xv, xbf, r0, r1, K);
            cuda_gemm_ex(c, "linear_fwd", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 0, 1, (int)(r1 - r0), N, K,
                    1.0f, a, K, c->bf_w, K, beta, y + r0 * N, N);
        }
        return;
    }
    cuda_gemm_ex(c, "linear_fwd", CUDA_R_32F, compute_type(c), 0, 1, M, N, K, 1.0f, x, K, W, K, beta, y,
            N);
}

/* Column sums fused into a conversion to bf16: dst (M, N) bf16 <- v, and partials[chunk][j] =
 * the sum of v[r][j] over the chunk's rows r, where v is dy itself (src_plain) or dy * gelu'(h)
 * (src_dgelu, src_dgelu16: the GELU backward of the MLP, mlp.cu). STORE false: the sums alone,
 * dst not written (a bf16 dy, src_bf16, which the GEMMs read as it is), the same sums in the same
 * order as with the store. Two layouts:
 *   k_colsum_bf16    a thread per column, a grid row per chunk, rows in order (any N, alignment)
 *   k_colsum_bf16_4  N % 4 == 0 and aligned rows (the source's aligned(): 16 bytes of fp32, 8
 *                    of a bf16 h): a block of 32 x 8 threads over 128 columns (4 per thread:
 *                    float4 loads, 4-wide loads of a bf16 h, 8-byte bf16 stores); row lane y takes
 *                    rows y, y + 8, ... of the chunk, and the 8 lane sums are added in lane order
 * then k_colsum_add adds the chunks' partials into db in chunk order: deterministic, no atomics. */
template <bool STORE, class S>
__global__ static void k_colsum_bf16(__nv_bfloat16 *dst, float *partials, S src, long M, int N, long R) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    const long r0 = (long)blockIdx.y * R, r1 = r0 + R < M ? r0 + R : M;
    float s = 0.0f;
#pragma unroll 4
    for (long r = r0; r < r1; r++) {
        float v = src.at(r * N + j);
        if (STORE) dst[r * N + j] = __float2bfloat16(v);
        s += v;
    }
    partials[(long)blockIdx.y * N + j] = s;
}

template <bool STORE, class S>
__global__ static void k_colsum_bf16_4(__nv_bfloat16 *dst, float *partials, S src, long M, int N, long R) {
    __shared__ float4 part[8][32];
    const int tx = threadIdx.x, ty = threadIdx.y, j = (blockIdx.x * 32 + tx) * 4;
    const long r0 = (long)blockIdx.y * R, r1 = r0 + R < M ? r0 + R : M;
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
    if (j < N)
        for (long r = r0 + ty; r < r1; r += 8) {
            float4 v = src.at4(r * N + j);
            if (STORE) *reinterpret_cast<uint2 *>(dst + r * N + j) = bf16x4(v);
            s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
        }
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && j < N) {
        for (int k = 1; k < 8; k++) {
            float4 p = part[k][tx];
            s.x += p.x, s.y += p.y, s.z += p.z, s.w += p.w;
        }
        *reinterpret_cast<float4 *>(partials + (long)blockIdx.y * N + j) = s;
    }
}

/* db (N) += the chunks' partial sums, in chunk order. */
__global__ static void k_colsum_add(float *db, const float *partials, long chunks, int N) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    float s = 0.0f;
    for (long k = 0; k < chunks; k++) s += partials[k * N + j];
    db[j] += s;
}

/* Rows per chunk of a column sum over M rows of N: 256 or a power-of-two multiple, as few as make
 * the chunks' partials fit the workspace; 0 when none does. */
static long colsum_rows(const umd_ctx *c, long M, int N, long *chunks) {
    if (!c->partials) return 0;
    long R = CUDA_COLSUM_CHUNK;
    for (;;) {
        *chunks = (M + R - 1) / R;
        if ((size_t)*chunks * N <= c->partials_floats) break;
        if (R >= M) return 0;
        R *= 2;
    }
    return *chunks <= 65535 ? R : 0;
}

/* 0, or -1 when the partials do not fit (nothing was done). STORE false: dst is NULL (the sums
 * alone); the layout is chosen by N and the source's alignment as with a dst. */
template <bool STORE, class S>
static int colsum_bf16(umd_ctx *c, const char *op, __nv_bfloat16 *dst, float *db, S src, long M, int N) {
    long chunks, R = c->failed ? 0 : colsum_rows(c, M, N, &chunks);
    if (R == 0) return -1;
    if (N % 4 == 0 && src.aligned() && ((uintptr_t)dst & 7) == 0) {
        dim3 grid(cuda_blocks((size_t)N, 128), (unsigned)chunks), block(32, 8);
        k_colsum_bf16_4<STORE><<<grid, block, 0, c->stream>>>(dst, c->partials, src, M, N, R);
    } else {
        dim3 grid(cuda_blocks((size_t)N, 128), (unsigned)chunks);
        k_colsum_bf16<STORE><<<grid, 128, 0, c->stream>>>(dst, c->partials, src, M, N, R);
    }
    if (CUDA_LAUNCHED(c, op)) return 0;
    k_colsum_add<<<cuda_blocks((size_t)N, 128), 128, 0, c->stream>>>(db, c->partials, chunks, N);
    CUDA_LAUNCHED(c, op);
    return 0;
}

int cuda_bias_colsum_bf16(umd_ctx *c, __nv_bfloat16 *dst, float *db, const float *dy, long M, int N) {
    return colsum_bf16<true>(c, "linear_bwd", dst, db, src_plain{dy}, M, N);
}

int cuda_colsum_bf16(umd_ctx *c, const char *op, float *db, const __nv_bfloat16 *g, long M, int N) {
    return colsum_bf16<false>(c, op, NULL, db, src_bf16{g}, M, N);
}

int cuda_dgelu_colsum_bf16(umd_ctx *c, __nv_bfloat16 *dst, float *db, const float *g,
                           const void *h, int hbf, long M, int N) {
    if (hbf)
        return colsum_bf16<true>(c, "mlp_bwd", dst, db, src_dgelu16{g, (const __nv_bfloat16 *)h}, M,
                                 N);
    return colsum_bf16<true>(c, "mlp_bwd", dst, db, src_dgelu{g, (const float *)h}, M, N);
}

int cuda_colsum_fits(const umd_ctx *c, long M, int N) {
    long chunks;
    return colsum_rows(c, M, N, &chunks) > 0;
}

int cuda_dgelu16_bf16(umd_ctx *c, __nv_bfloat16 *dst, float *db, const __nv_bfloat16 *g,
                      const __nv_bfloat16 *h, long M, int N) {
    if (c->failed) return 0;
    const src_dgelu16g src{g, h};
    if (db) return colsum_bf16<true>(c, "mlp_bwd", dst, db, src, M, N);
    convert(c, "mlp_bwd", dst, src, (size_t)M * N);
    return 0;
}

int cuda_gelu_dgelu16_bf16(umd_ctx *c, __nv_bfloat16 *gh, __nv_bfloat16 *dst, float *db,
                           const __nv_bfloat16 *g, const __nv_bfloat16 *h, long M, int N) {
    if (c->failed) return 0;
    const src_dgelu16g_gelu src{g, h, gh};
    if (db) return colsum_bf16<true>(c, "mlp_bwd", dst, db, src, M, N);
    convert(c, "mlp_bwd", dst, src, (size_t)M * N);
    return 0;
}

void cuda_colsum_gemv(umd_ctx *c, const char *op, float *db, const float *d, int M, int N) {
    if (c->failed) return;
    if (!c->ones || (size_t)M > (size_t)c->lim.max_rows * (size_t)c->lim.max_tokens) {
        cuda_fail(c, op, "the bias gradient needs more rows than the workspace limits");
        return;
    }
    /* db (N) += d^T 1: d row-major (M, N) is column-major (N, M) with ld N */
    const float one = 1.0f;
    cublas_check(c, cublasSgemv(c->blas, CUBLAS_OP_N, N, M, &one, d, N, c->ones, 1, &one, db, 1), op);
}

void cuda_bias_rows(umd_ctx *c, const char *op, float *y, const float *b, long M, int N) {
    if (c->failed || M <= 0 || N <= 0) return;
    dim3 grid(cuda_blocks((size_t)N, THREADS), (unsigned)(M < 65535 ? M : 65535));
    k_bias_rows<<<grid, THREADS, 0, c->stream>>>(y, b, M, N);
    CUDA_LAUNCHED(c, op);
}

/* A bf16 dy (a gradient tensor, UMD_GRAD) met a product that cannot read one: weights beyond
 * the bf16 stage (that path reads dy in fp32), or a bias gradient whose column sums the
 * workspace's partials cannot hold in chunks (the only pass that sums bf16). The context fails
 * rather than read bf16 as fp32, before anything is written. 1 when it did. */
static int grad_unfit(umd_ctx *c, int gbf, const float *db, int M, int N, int K) {
    if (!gbf) return 0;
    const int weights = bf16_weights_fit(c, N, K);
    if (weights && (!db || cuda_colsum_fits(c, M, N))) return 0;
    char what[280];
    if (!weights)
        snprintf(what, sizeof what,
                 "dy (%d, %d) is a bf16 gradient tensor (UMD_GRAD), and weights (%d, %d) do not "
                 "fit the bf16 stage (%zu values): the fp32 path cannot read it",
                 M, N, N, K, c->bf_w ? c->bf_w_len : (size_t)0);
    else
        snprintf(what, sizeof what,
                 "dy (%d, %d) is a bf16 gradient tensor (UMD_GRAD), and the workspace's partials "
                 "(%zu floats) cannot hold the chunks of its column sums (db): no other pass sums "
                 "bf16",
                 M, N, c->partials_floats);
    cuda_fail(c, "linear_bwd", what);
    return 1;
}

/* A bf16 dx (a gradient tensor, UMD_GRAD_X) asked of a call that cannot write one: added to
 * (dx_accumulate: ops.h writes a bf16 dx, the fp32 result rounded once, never sums into one), or
 * weights beyond the bf16 stage (that path writes dx in fp32). The context fails rather than
 * write fp32 into a bf16 tensor, before anything is written. 1 when it did. */
static int gradx_unfit(umd_ctx *c, int dxbf, int dx_accumulate, int M, int N, int K) {
    if (!dxbf || (!dx_accumulate && bf16_weights_fit(c, N, K))) return 0;
    char what[280];
    if (dx_accumulate)
        snprintf(what, sizeof what,
                 "dx (%d, %d) is a bf16 gradient tensor (UMD_GRAD_X), written once (the fp32 "
                 "result rounded): it cannot be accumulated into (dx_accumulate)",
                 M, K);
    else
        snprintf(what, sizeof what,
                 "dx (%d, %d) is a bf16 gradient tensor (UMD_GRAD_X), and weights (%d, %d) do not "
                 "fit the bf16 stage (%zu values): the fp32 path cannot write it",
                 M, K, N, K, c->bf_w ? c->bf_w_len : (size_t)0);
    cuda_fail(c, "linear_bwd", what);
    return 1;
}

/* dy fp32 or, with UMD_GRAD where the context keeps gradient tensors in bf16 (gbf), a bf16
 * gradient tensor: the GEMMs read it as their bf16 operand in place of bf_a, whole or a chunk of
 * rows at a time (the same chunks and shapes as an fp32 dy, whose conversion into bf_a would
 * round it to these values: the same bits for dx and dW), and db += the column sums of its
 * widened values, one pass over the whole of it (the column-sum kernels without their store).
 * dx fp32 or, with UMD_GRAD_X likewise (dxbf), a bf16 gradient tensor: the same product per chunk
 * with a bf16 C (cuda_gemm_bf16_to_bf16: the fp32 sums rounded once, to nearest even), M K 2
 * bytes written in place of 4. */
extern "C" void cuda_linear_bwd(umd_ctx *c, void *dxv, float *dW, float *db, const void *dyv,
                                const void *xv, const float *W, int M, int N, int K,
                                int dx_accumulate, int types) {
    CUDA_OP(c);
    if (M <= 0 || N <= 0) return;
    const int xbf = cuda_opnd_bf16(c, types & UMD_OPND), gbf = cuda_grad_bf16(c, types);
    const int dxbf = dxv && cuda_gradx_bf16(c, types);
    if (opnd_unfit(c, "linear_bwd", xbf, M, N, K) || grad_unfit(c, gbf, db, M, N, K) ||
        gradx_unfit(c, dxbf, dx_accumulate, M, N, K))
        return;
    const float *x = (const float *)xv;   /* read only where x is fp32 (!xbf) */
    const float *dy = (const float *)dyv; /* read only where dy is fp32 (!gbf) */
    float *dx = dxbf ? NULL : (float *)dxv; /* fp32 dx, written only where it is (!dxbf) */
    float bx = dx_accumulate ? 1.0f : 0.0f;
    if (bf16_weights_fit(c, N, K)) {
        if (dxv) cuda_to_bf16(c, "linear_bwd", c->bf_w, W, N, K, K);
        long R = chunk_rows(c, M, N, K);
        /* a bf16 dy: its column sums alone (grad_unfit said they fit); an fp32 dy whole in one
         * stage: its conversion also sums its columns into db */
        int dy_staged = 0;
        if (gbf) {
            if (db) cuda_colsum_bf16(c, "linear_bwd", db, (const __nv_bfloat16 *)dyv, M, N);
            db = NULL;
        } else if (db && R == M && cuda_bias_colsum_bf16(c, c->bf_a, db, dy, M, N) == 0) {
            db = NULL, dy_staged = 1;
        }
        for (long r0 = 0; r0 < M; r0 += R) {
            long r1 = r0 + R < M ? r0 + R : M;
            int rows = (int)(r1 - r0);
            const __nv_bfloat16 *g = gbf ? (const __nv_bfloat16 *)dyv + r0 * N : c->bf_a;
            if (!gbf && !dy_staged) cuda_to_bf16(c, "linear_bwd", c->bf_a, dy + r0 * N, rows, N, N);
            const __nv_bfloat16 *xb = x_bf16_rows(c, "linear_bwd", c->bf_b, xv, xbf, r0, r1, K);
            if (dxbf)
                cuda_gemm_bf16_to_bf16(c, "linear_bwd", 0, 0, rows, K, N, g, N, c->bf_w, K,
                                       (__nv_bfloat16 *)dxv + r0 * K, K);
            else if (dx)
                cuda_gemm_ex(c, "linear_bwd", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 0, 0, rows, K, N, 1.0f,
                        g, N, c->bf_w, K, bx, dx + r0 * K, K);
            cuda_gemm_ex(c, "linear_bwd", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 1, 0, N, K, rows, 1.0f,
                    g, N, xb, K, 1.0f, dW, K);
        }
    } else {
        if (dx)
            cuda_gemm_ex(c, "linear_bwd", CUDA_R_32F, compute_type(c), 0, 0, M, K, N, 1.0f, dy, N, W, K,
                    bx, dx, K);
        cuda_gemm_ex(c, "linear_bwd", CUDA_R_32F, compute_type(c), 1, 0, N, K, M, 1.0f, dy, N, x, K, 1.0f,
                dW, K);
    }
    if (db) cuda_colsum_gemv(c, "linear_bwd", db, dy, M, N);
}
