/* flash_attention.cu: fused attention forward and backward for head widths 32 and 64 on TF32
 * tensor cores (WMMA m16n16k8, fp32 accumulation): no (T, T) tile ever reaches device memory.
 *
 * Forward (one block = 64 query rows of one (sequence, head), 4 warps of 16 rows): Q stays in
 * shared memory; for each tile of 64 keys, K and V are staged in shared memory, a warp computes its
 * 16 x 64 scores S = Q K^T, then the online softmax of its rows (two lanes per row; running max
 * m and sum l: the output rows are rescaled by exp(m_old - m_new) before P V is added), and
 * O += P V into its 16 x hd strip of the output (kept in shared memory: a WMMA accumulator's
 * element layout is opaque, and the rescale is per row). At the end O / l is written and lse = m + log l (in units of the scaled
 * scores, as ops.h says).
 * Backward, as two kernels so that no float is ever added atomically (results are deterministic):
 *   dK dV: a block per tile of 64 keys loops over the query tiles: S = Q K^T, P = exp(S scale -
 *          lse), dP = dO V^T, dS = P (dP - D) scale, dV += P^T dO, dK += dS^T Q (accumulators in
 *          registers, a warp per 16 keys);
 *   dQ:    a block per tile of 64 queries loops over the key tiles: S, P, dP, dS again and
 *          dQ += dS K.
 *   D = rowsum(dO * O) (n, heads, T) is computed first by a warp per row.
 * FLOPs per (sequence, head): forward 4 T^2 hd, backward 14 T^2 hd (7 products; the first-principles
 * minimum is 8 T^2 hd for 4 products, the price of recomputation without atomics). Bytes: q, k, v,
 * out, dout once per tile pass, lse and D: O(T hd) per tile pass instead of O(T^2).
 * Numerics: scores and P are rounded to TF32 as the operands of the next product (like the cuBLAS
 * TF32 path), softmax statistics in fp32 with expf; masked columns (beyond T) are exactly 0.
 * Speed (H200, B/4 64x64x3 bf16, batch 256, per step): forward 34.9 ms, backward 82.6 ms against
 * 14.7 and 33.4 ms on the batched GEMMs, so it is opt-in (umd_cuda_set_attention). What holds it
 * back: every WMMA fragment is loaded from shared memory with scalar loads (about one load per
 * m16n16k8 product), 4 warps and ~100 KB of shared memory per block leave 8 warps per SM to hide
 * the tile loads, which are not double-buffered, and TF32 runs at half the bf16 rate. The next
 * steps are bf16 mma.sync on register fragments (ldmatrix), 8 warps per block and cp.async tile
 * prefetch. */
#include <math.h>
#include <mma.h>
#include "cuda_internal.h"
#include "umd_cuda.h"

using namespace nvcuda;

#define FA_BM 64   /* query rows per block */
#define FA_BN 64   /* keys per tile */
#define FA_WARPS 4 /* a warp per 16 rows */
/* Leading dimensions in shared memory: rows padded by 4 floats, so the 16 rows a WMMA fragment
 * reads start in different banks (unpadded, rows 64 floats apart all start in bank 0). */
#define FA_LDS (FA_BN + 4)
#define FA_LD(HD) ((HD) + 4)

typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> frag_a_row;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> frag_a_col;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> frag_b_row;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> frag_b_col;
typedef wmma::fragment<wmma::accumulator, 16, 16, 8, float> frag_c;

template <typename F> __device__ static inline void to_tf32(F &f) {
    for (int i = 0; i < f.num_elements; i++) f.x[i] = wmma::__float_to_tf32(f.x[i]);
}

__device__ static inline float fa_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* dst (64, HD) in shared memory <- rows [t0, t0 + 64) of a (T, HD) slice whose rows are `ld`
 * floats apart; rows beyond T are zero. float4 loads (HD and ld are multiples of 4). */
template <int HD>
__device__ static inline void load_tile(float *dst, const float *src, long ld, int t0, int T) {
    const int per_row = HD / 4;
    for (int e = threadIdx.x; e < FA_BM * per_row; e += blockDim.x) {
        int r = e / per_row, c4 = e % per_row;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (t0 + r < T) v = *(const float4 *)(src + (long)(t0 + r) * ld + 4 * c4);
        *(float4 *)(dst + r * FA_LD(HD) + 4 * c4) = v;
    }
}

/* C (16, 64) strip (ld FA_LDS) = A (16, HD) B^T with A rows of `a` and B = the (64, HD) tile b
 * (both ld FA_LD(HD)); each A fragment is loaded once for the four column blocks. */
template <int HD>
__device__ static inline void strip_abt(float *c, const float *a, const float *b) {
    const int ld = FA_LD(HD);
    frag_c acc[FA_BN / 16];
    for (int n = 0; n < FA_BN / 16; n++) wmma::fill_fragment(acc[n], 0.0f);
    for (int k0 = 0; k0 < HD; k0 += 8) {
        frag_a_row fa;
        wmma::load_matrix_sync(fa, a + k0, ld);
        to_tf32(fa);
        for (int n = 0; n < FA_BN / 16; n++) {
            frag_b_col fb;
            wmma::load_matrix_sync(fb, b + n * 16 * ld + k0, ld);
            to_tf32(fb);
            wmma::mma_sync(acc[n], fa, fb, acc[n]);
        }
    }
    for (int n = 0; n < FA_BN / 16; n++)
        wmma::store_matrix_sync(c + n * 16, acc[n], FA_LDS, wmma::mem_row_major);
}

/* ---- forward ---------------------------------------------------------------------------------- */

template <int HD>
__global__ static void __launch_bounds__(FA_WARPS * 32)
k_flash_fwd(float *out, float *lse, const float *qkv, int T, int heads, float scale) {
    extern __shared__ __align__(128) float sm[];
    const int ld = FA_LD(HD);
    float *sQ = sm, *sK = sQ + FA_BM * ld, *sV = sK + FA_BN * ld, *sS = sV + FA_BN * ld,
          *sO = sS + FA_BM * FA_LDS;
    float *sM = sO + FA_BM * ld, *sL = sM + FA_BM;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * FA_BM;
    const long W = (long)heads * HD, row = 3 * W;
    const float *q = qkv + (long)b * T * row + (long)h * HD, *k = q + W, *v = q + 2 * W;
    load_tile<HD>(sQ, q, row, q0, T);
    for (int e = threadIdx.x; e < FA_BM * ld; e += blockDim.x) sO[e] = 0.0f;
    for (int e = threadIdx.x; e < FA_BM; e += blockDim.x) {
        sM[e] = -INFINITY;
        sL[e] = 0.0f;
    }
    float *wS = sS + warp * 16 * FA_LDS, *wO = sO + warp * 16 * ld;
    const float *wQ = sQ + warp * 16 * ld;
    for (int k0 = 0; k0 < T; k0 += FA_BN) {
        __syncthreads(); /* the previous tile's K, V are no longer read */
        load_tile<HD>(sK, k, row, k0, T);
        load_tile<HD>(sV, v, row, k0, T);
        __syncthreads();
        strip_abt<HD>(wS, wQ, sK);
        __syncwarp();
        /* online softmax of the warp's 16 rows, two lanes per row (columns 2c + half, c < 32) */
        {
            const int r = lane / 2, half = lane % 2;
            float *s = wS + r * FA_LDS;
            float mx = -INFINITY;
            for (int c = 0; c < FA_BN / 2; c++) {
                int j = 2 * c + half;
                mx = fmaxf(mx, k0 + j < T ? s[j] * scale : -INFINITY);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            const float mold = sM[warp * 16 + r], mnew = fmaxf(mold, mx); /* column k0 is valid */
            float sum = 0.0f;
            for (int c = 0; c < FA_BN / 2; c++) {
                int j = 2 * c + half;
                float p = k0 + j < T ? expf(s[j] * scale - mnew) : 0.0f;
                s[j] = p;
                sum += p;
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            const float alpha = expf(mold - mnew); /* the first tile: exp(-inf) = 0; l, O are 0 */
            for (int d = half; d < HD; d += 2) wO[r * ld + d] *= alpha;
            __syncwarp();
            if (half == 0) {
                sM[warp * 16 + r] = mnew;
                sL[warp * 16 + r] = sL[warp * 16 + r] * alpha + sum;
            }
        }
        __syncwarp();
        /* O strip (16, HD) += P (16, 64) V (64, HD) */
        {
            frag_c acc[HD / 16];
            for (int n = 0; n < HD / 16; n++)
                wmma::load_matrix_sync(acc[n], wO + n * 16, ld, wmma::mem_row_major);
            for (int kk = 0; kk < FA_BN; kk += 8) {
                frag_a_row fa;
                wmma::load_matrix_sync(fa, wS + kk, FA_LDS);
                to_tf32(fa);
                for (int n = 0; n < HD / 16; n++) {
                    frag_b_row fb;
                    wmma::load_matrix_sync(fb, sV + kk * ld + n * 16, ld);
                    to_tf32(fb);
                    wmma::mma_sync(acc[n], fa, fb, acc[n]);
                }
            }
            for (int n = 0; n < HD / 16; n++)
                wmma::store_matrix_sync(wO + n * 16, acc[n], ld, wmma::mem_row_major);
        }
        __syncwarp();
    }
    __syncthreads();
    float *o = out + (long)b * T * W + (long)h * HD;
    for (int e = threadIdx.x; e < FA_BM * HD; e += blockDim.x) {
        int r = e / HD, d = e % HD;
        if (q0 + r < T) o[(long)(q0 + r) * W + d] = sO[r * ld + d] / sL[r];
    }
    for (int r = threadIdx.x; r < FA_BM; r += blockDim.x)
        if (q0 + r < T) lse[((long)b * heads + h) * T + q0 + r] = sM[r] + logf(sL[r]);
}

/* ---- backward ----------------------------------------------------------------------------------- */

/* D (n, heads, T) = rowsum(dO * O) per head: a warp per (token, head) row. */
__global__ static void k_flash_rowdot(float *D, const float *dout, const float *out, int n, int T,
                                      int heads, int hd) {
    long r = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= (long)n * T * heads) return;
    long bt = r / heads; /* b * T + t */
    int h = (int)(r % heads);
    const float *g = dout + r * hd, *o = out + r * hd;
    float s = 0.0f;
    for (int d = lane; d < hd; d += 32) s += g[d] * o[d];
    s = fa_warp_sum(s);
    long b = bt / T, t = bt % T;
    if (lane == 0) D[(b * heads + h) * T + t] = s;
}

/* P and dS of a warp's 16 x 64 strip in place: S -> P = exp(S scale - lse), dP -> dS = P (dP - D)
 * scale; zero outside the T x T square. Row r is query qr + r (its lse and D at lse[r], D[r]),
 * column j key kc + j. */
__device__ static inline void strip_p_ds(float *S, float *dP, const float *lse, const float *D,
                                         int qr, int kc, int T, float scale) {
    const int lane = threadIdx.x % 32;
    for (int r = 0; r < 16; r++) {
        int qi = qr + r;
        float l = lse[r], dd = D[r];
        for (int j = lane; j < FA_BN; j += 32) {
            float p = qi < T && kc + j < T ? expf(S[r * FA_LDS + j] * scale - l) : 0.0f;
            S[r * FA_LDS + j] = p;
            dP[r * FA_LDS + j] = p * (dP[r * FA_LDS + j] - dd) * scale;
        }
    }
}

/* dK, dV of 64 keys of one (sequence, head). Shared: K, V, Q, dO tiles (64, HD), the scores / P
 * and dP / dS square tiles (64, 64), lse and D of the query tile. */
template <int HD>
__global__ static void __launch_bounds__(FA_WARPS * 32)
k_flash_bwd_kv(float *dqkv, const float *dout, const float *qkv, const float *lse,
               const float *D, int T, int heads, float scale) {
    extern __shared__ __align__(128) float sm[];
    const int ld = FA_LD(HD);
    float *sK = sm, *sV = sK + FA_BN * ld, *sQ = sV + FA_BN * ld, *sG = sQ + FA_BM * ld,
          *sS = sG + FA_BM * ld, *sP = sS + FA_BM * FA_LDS, *sLse = sP + FA_BM * FA_LDS,
          *sD = sLse + FA_BM;
    const int warp = threadIdx.x / 32;
    const int b = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * FA_BN;
    const long W = (long)heads * HD, row = 3 * W;
    const float *q = qkv + (long)b * T * row + (long)h * HD, *k = q + W, *v = q + 2 * W;
    const float *g = dout + (long)b * T * W + (long)h * HD;
    const float *l_bh = lse + ((long)b * heads + h) * T, *d_bh = D + ((long)b * heads + h) * T;
    load_tile<HD>(sK, k, row, k0, T);
    load_tile<HD>(sV, v, row, k0, T);
    frag_c dK[HD / 16], dV[HD / 16]; /* the warp's 16 keys x HD */
    for (int i = 0; i < HD / 16; i++) {
        wmma::fill_fragment(dK[i], 0.0f);
        wmma::fill_fragment(dV[i], 0.0f);
    }
    for (int q0 = 0; q0 < T; q0 += FA_BM) {
        __syncthreads();
        load_tile<HD>(sQ, q, row, q0, T);
        load_tile<HD>(sG, g, W, q0, T);
        for (int r = threadIdx.x; r < FA_BM; r += blockDim.x) {
            sLse[r] = q0 + r < T ? l_bh[q0 + r] : 0.0f;
            sD[r] = q0 + r < T ? d_bh[q0 + r] : 0.0f;
        }
        __syncthreads();
        /* the warp's 16 query rows: S = Q K^T, dP = dO V^T, then P and dS */
        strip_abt<HD>(sS + warp * 16 * FA_LDS, sQ + warp * 16 * ld, sK);
        strip_abt<HD>(sP + warp * 16 * FA_LDS, sG + warp * 16 * ld, sV);
        __syncwarp();
        strip_p_ds(sS + warp * 16 * FA_LDS, sP + warp * 16 * FA_LDS, sLse + warp * 16,
                   sD + warp * 16, q0 + warp * 16, k0, T, scale);
        __syncthreads();
        /* the warp's 16 keys: dV += P^T dO, dK += dS^T Q (P^T read as a column-major A) */
        for (int kk = 0; kk < FA_BM; kk += 8) {
            frag_a_col pa, sa;
            wmma::load_matrix_sync(pa, sS + kk * FA_LDS + warp * 16, FA_LDS);
            wmma::load_matrix_sync(sa, sP + kk * FA_LDS + warp * 16, FA_LDS);
            to_tf32(pa);
            to_tf32(sa);
            for (int n = 0; n < HD / 16; n++) {
                frag_b_row gb, qb;
                wmma::load_matrix_sync(gb, sG + kk * ld + n * 16, ld);
                wmma::load_matrix_sync(qb, sQ + kk * ld + n * 16, ld);
                to_tf32(gb);
                to_tf32(qb);
                wmma::mma_sync(dV[n], pa, gb, dV[n]);
                wmma::mma_sync(dK[n], sa, qb, dK[n]);
            }
        }
    }
    __syncthreads();
    /* stage through shared memory (the tiles are free now), then the valid rows */
    float *stK = sQ, *stV = sG;
    for (int n = 0; n < HD / 16; n++) {
        wmma::store_matrix_sync(stK + warp * 16 * ld + n * 16, dK[n], ld, wmma::mem_row_major);
        wmma::store_matrix_sync(stV + warp * 16 * ld + n * 16, dV[n], ld, wmma::mem_row_major);
    }
    __syncthreads();
    float *dk = dqkv + (long)b * T * row + (long)h * HD + W, *dv = dk + W;
    for (int e = threadIdx.x; e < FA_BN * HD; e += blockDim.x) {
        int r = e / HD, d = e % HD;
        if (k0 + r < T) {
            dk[(long)(k0 + r) * row + d] = stK[r * ld + d];
            dv[(long)(k0 + r) * row + d] = stV[r * ld + d];
        }
    }
}

/* dQ of 64 queries of one (sequence, head); the same tiles as k_flash_bwd_kv. */
template <int HD>
__global__ static void __launch_bounds__(FA_WARPS * 32)
k_flash_bwd_q(float *dqkv, const float *dout, const float *qkv, const float *lse, const float *D,
              int T, int heads, float scale) {
    extern __shared__ __align__(128) float sm[];
    const int ld = FA_LD(HD);
    float *sK = sm, *sV = sK + FA_BN * ld, *sQ = sV + FA_BN * ld, *sG = sQ + FA_BM * ld,
          *sS = sG + FA_BM * ld, *sP = sS + FA_BM * FA_LDS, *sLse = sP + FA_BM * FA_LDS,
          *sD = sLse + FA_BM;
    const int warp = threadIdx.x / 32;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * FA_BM;
    const long W = (long)heads * HD, row = 3 * W;
    const float *q = qkv + (long)b * T * row + (long)h * HD, *k = q + W, *v = q + 2 * W;
    const float *g = dout + (long)b * T * W + (long)h * HD;
    const float *l_bh = lse + ((long)b * heads + h) * T, *d_bh = D + ((long)b * heads + h) * T;
    load_tile<HD>(sQ, q, row, q0, T);
    load_tile<HD>(sG, g, W, q0, T);
    for (int r = threadIdx.x; r < FA_BM; r += blockDim.x) {
        sLse[r] = q0 + r < T ? l_bh[q0 + r] : 0.0f;
        sD[r] = q0 + r < T ? d_bh[q0 + r] : 0.0f;
    }
    frag_c dQ[HD / 16]; /* the warp's 16 queries x HD */
    for (int i = 0; i < HD / 16; i++) wmma::fill_fragment(dQ[i], 0.0f);
    float *wS = sS + warp * 16 * FA_LDS, *wP = sP + warp * 16 * FA_LDS;
    for (int k0 = 0; k0 < T; k0 += FA_BN) {
        __syncthreads();
        load_tile<HD>(sK, k, row, k0, T);
        load_tile<HD>(sV, v, row, k0, T);
        __syncthreads();
        strip_abt<HD>(wS, sQ + warp * 16 * ld, sK);
        strip_abt<HD>(wP, sG + warp * 16 * ld, sV);
        __syncwarp();
        strip_p_ds(wS, wP, sLse + warp * 16, sD + warp * 16, q0 + warp * 16, k0, T, scale);
        __syncwarp();
        /* dQ (16, HD) += dS (16, 64) K (64, HD) */
        for (int kk = 0; kk < FA_BN; kk += 8) {
            frag_a_row da;
            wmma::load_matrix_sync(da, wP + kk, FA_LDS);
            to_tf32(da);
            for (int n = 0; n < HD / 16; n++) {
                frag_b_row kb;
                wmma::load_matrix_sync(kb, sK + kk * ld + n * 16, ld);
                to_tf32(kb);
                wmma::mma_sync(dQ[n], da, kb, dQ[n]);
            }
        }
    }
    __syncthreads();
    float *st = sS; /* (64, ld) fits the (64, FA_LDS) score tile for HD <= 64 */
    for (int n = 0; n < HD / 16; n++)
        wmma::store_matrix_sync(st + warp * 16 * ld + n * 16, dQ[n], ld, wmma::mem_row_major);
    __syncthreads();
    float *dq = dqkv + (long)b * T * row + (long)h * HD;
    for (int e = threadIdx.x; e < FA_BM * HD; e += blockDim.x) {
        int r = e / HD, d = e % HD;
        if (q0 + r < T) dq[(long)(q0 + r) * row + d] = st[r * ld + d];
    }
}

void cuda_attention_rowdot(umd_ctx *c, float *D, const float *dout, const float *out, int n, int T,
                           int heads, int hd) {
    long rows = (long)n * T * heads;
    k_flash_rowdot<<<cuda_blocks((size_t)rows, 8), 256, 0, c->stream>>>(D, dout, out, n, T, heads, hd);
    CUDA_LAUNCHED(c, "attention_bwd");
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

template <int HD> static size_t fwd_smem() {
    return sizeof(float) * ((size_t)(2 * FA_BM + 2 * FA_BN) * FA_LD(HD) + FA_BM * FA_LDS + 2 * FA_BM);
}
template <int HD> static size_t bwd_smem() {
    return sizeof(float) * ((size_t)(2 * FA_BM + 2 * FA_BN) * FA_LD(HD) + 2 * FA_BM * FA_LDS + 2 * FA_BM);
}

/* Sets each kernel's dynamic shared memory limit once per process (the attribute is per
 * function and device; umdq uses one device per process). */
template <int HD> static int flash_setup(umd_ctx *c) {
    static int done = 0;
    if (done) return 0;
    if (cuda_check(c, cudaFuncSetAttribute(k_flash_fwd<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)fwd_smem<HD>()), "attention (fused)") ||
        cuda_check(c, cudaFuncSetAttribute(k_flash_bwd_kv<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)bwd_smem<HD>()), "attention (fused)") ||
        cuda_check(c, cudaFuncSetAttribute(k_flash_bwd_q<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)bwd_smem<HD>()), "attention (fused)"))
        return -1;
    done = 1;
    return 0;
}

int cuda_flash_usable(const umd_ctx *c, int n, int T, int heads, int hd) {
    return c->attn_mode == UMD_ATTN_FUSED && c->math != UMD_MATH_FP32 && (hd == 32 || hd == 64) && n > 0 && T > 0 &&
           n <= 65535 && heads <= 65535 && c->attn_d &&
           (size_t)n * heads * T <= c->attn_d_floats;
}

template <int HD>
static void flash_fwd(umd_ctx *c, float *out, float *lse, const float *qkv, int n, int T, int heads) {
    if (flash_setup<HD>(c)) return;
    dim3 grid((unsigned)((T + FA_BM - 1) / FA_BM), (unsigned)heads, (unsigned)n);
    k_flash_fwd<HD><<<grid, FA_WARPS * 32, fwd_smem<HD>(), c->stream>>>(out, lse, qkv, T, heads,
                                                                         1.0f / sqrtf((float)HD));
    CUDA_LAUNCHED(c, "attention_fwd");
}

template <int HD>
static void flash_bwd(umd_ctx *c, float *dqkv, const float *dout, const float *qkv,
                      const float *out, const float *lse, int n, int T, int heads) {
    if (flash_setup<HD>(c)) return;
    cuda_attention_rowdot(c, c->attn_d, dout, out, n, T, heads, HD);
    if (c->failed) return;
    const float scale = 1.0f / sqrtf((float)HD);
    dim3 grid((unsigned)((T + FA_BM - 1) / FA_BM), (unsigned)heads, (unsigned)n);
    k_flash_bwd_kv<HD><<<grid, FA_WARPS * 32, bwd_smem<HD>(), c->stream>>>(dqkv, dout, qkv, lse,
                                                                            c->attn_d, T, heads, scale);
    if (CUDA_LAUNCHED(c, "attention_bwd")) return;
    k_flash_bwd_q<HD><<<grid, FA_WARPS * 32, bwd_smem<HD>(), c->stream>>>(dqkv, dout, qkv, lse,
                                                                           c->attn_d, T, heads, scale);
    CUDA_LAUNCHED(c, "attention_bwd");
}

void cuda_flash_fwd(umd_ctx *c, float *out, float *lse, const float *qkv, int n, int T, int heads,
                    int hd) {
    if (hd == 64) flash_fwd<64>(c, out, lse, qkv, n, T, heads);
    else flash_fwd<32>(c, out, lse, qkv, n, T, heads);
}

void cuda_flash_bwd(umd_ctx *c, float *dqkv, const float *dout, const float *qkv, const float *out,
                    const float *lse, int n, int T, int heads, int hd) {
    if (hd == 64) flash_bwd<64>(c, dqkv, dout, qkv, out, lse, n, T, heads);
    else flash_bwd<32>(c, dqkv, dout, qkv, out, lse, n, T, heads);
}
