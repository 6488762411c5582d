/* mma_attention.cu: fused attention forward and backward for head width 64 on bf16 tensor cores
 * (mma.sync m16n8k16, fp32 accumulation), the default of bf16 contexts. No (T, T) tile reaches
 * device memory; what is kept between the passes is lse, as ops.h says.
 *
 * Every product is written C = X Y^T with X and Y row-major in shared memory (or X in registers)
 * and the reduced index contiguous in both, or C = X Y with Y row-major, read through
 * ldmatrix.trans. The operand fragments follow the PTX layout of m16n8k16 (lane = 4 g + t):
 *   A (16 x 16)  a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
 *   B (16 x 8)   b0 (2t..2t+1, g)  b1 (2t+8.., g)
 *   C (16 x 8)   c0 c1 (g, 2t..2t+1)  c2 c3 (g+8, 2t..)
 * so an accumulator strip of 16 x 64 becomes, packed to bf16 pairs, the A fragments of the next
 * product over its 64 columns without passing through shared memory.
 *
 * Forward (a block = 64 query rows of one (sequence, head), a warp per 16): Q's fragments stay in
 * registers; per tile of 64 keys, K and V are staged in shared memory (fp32 -> bf16 on the way in)
 * and a warp computes S = Q K^T, the online softmax of its rows in base 2 (running max m, sum l;
 * O rescaled by 2^(m_old - m_new)), and O += P V. At the end O / l and lse = (m + log2 l) ln 2.
 * Backward, as two kernels so that no float is added atomically (deterministic):
 *   dQ     a block per 64 queries: first D = rowsum(dO O) of its rows (written for the next
 *          kernel), Q and dO fragments in registers; per tile of 64 keys (K and V staged):
 *          S = Q K^T, dP = dO V^T, P = 2^(S s log2 e - lse log2 e), dS = P (dP - D) s, dQ += dS K;
 *   dK dV  a block per 64 keys, a warp per 16, K and V fragments in registers; per tile of 64
 *          queries (Q, dO, their lse and D staged): S^T, dP^T, P^T, dS^T again, dV += P^T dO,
 *          dK += dS^T Q.
 * Staging is double-buffered: cp.async brings the next tile's fp32 rows into shared memory while
 * the warps compute on the current bf16 tile; a block-wide pass converts them when it is done.
 * FLOPs per (sequence, head): forward 4 T^2 64, backward 14 T^2 64 (7 products; 5 with atomics).
 * Bytes: q, k, v, out (and dout) once per pass of tiles; lse and D O(T).
 * Tiles past T: rows are staged as zeros, score columns past T are -inf (P = 0), query rows past
 * T are never written; 8-column groups wholly past T are skipped.
 * Numerics: Q, K, V, dO, P and dS are rounded to bf16 as operands; the softmax statistics, the
 * accumulators and every output are fp32. */
#include <math.h>
#include <stdint.h>
#include "cuda_internal.h"

#define MA_HD 64          /* head width */
#define MA_TILE 64        /* rows per block and per staged tile */
#define MA_WARPS 4        /* a warp per 16 rows */
#define MA_LD (MA_HD + 8) /* bf16 per shared row: 144 bytes, so 8 rows start 4 banks apart */
#define LOG2E 1.44269504089f

typedef __nv_bfloat16 bf16;

__device__ static inline uint32_t pack2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x (lo) in the low half */
    return *reinterpret_cast<uint32_t *>(&v);
}

__device__ static inline uint32_t lds32(const bf16 *p) { return *reinterpret_cast<const uint32_t *>(p); }

__device__ static inline void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* The B fragments of two 8-column groups n0, n0 + 8 of Y (k, n), row-major in shared memory
 * (row k at y + k MA_LD), for the 16 rows from k0: b[0], b[1] of group n0, b[2], b[3] of n0 + 8.
 * Lanes 8i .. 8i + 7 address the rows of 8 x 8 matrix i: (k0, n0), (k0 + 8, n0), (k0, n0 + 8),
 * (k0 + 8, n0 + 8); .trans hands lane 4g + t the elements (2t, g), (2t + 1, g) of each. */
__device__ static inline void ldsm_trans(uint32_t b[4], const bf16 *y, int k0, int n0) {
    const int lane = threadIdx.x & 31, m = lane >> 3;
    const bf16 *p = y + (k0 + (lane & 7) + ((m & 1) ? 8 : 0)) * MA_LD + n0 + ((m & 2) ? 8 : 0);
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(a));
}

/* A fragments (4 k-steps of 16 over the 64 columns) of rows r0 .. r0 + 15 of X (row-major). */
__device__ static inline void load_afrags(uint32_t a[4][4], const bf16 *x, int r0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
        const bf16 *p = x + (r0 + g) * MA_LD + ks * 16 + 2 * t;
        a[ks][0] = lds32(p);
        a[ks][1] = lds32(p + 8 * MA_LD);
        a[ks][2] = lds32(p + 8);
        a[ks][3] = lds32(p + 8 * MA_LD + 8);
    }
}

/* C strip (16 x 64) += X (16 x 64, fragments a) Y^T with Y rows n of y (row-major, 64 wide);
 * column groups from `groups` on are left alone. */
__device__ static inline void strip_xyt(float c[8][4], const uint32_t a[4][4], const bf16 *y, int groups) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
        if (nt >= groups) break;
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            const bf16 *p = y + (nt * 8 + g) * MA_LD + ks * 16 + 2 * t;
            mma16816(c[nt], a[ks], lds32(p), lds32(p + 8));
        }
    }
}

/* C strip (16 x 64) += P (16 x 64, the fp32 strip p packed to bf16) Y with Y (64, 64) row-major
 * at y; k-steps from `ksteps` on are skipped (their P columns are zero). */
__device__ static inline void strip_py(float c[8][4], const float p[8][4], const bf16 *y, int ksteps) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        if (j >= ksteps) break;
        uint32_t a[4] = {pack2(p[2 * j][0], p[2 * j][1]), pack2(p[2 * j][2], p[2 * j][3]),
                         pack2(p[2 * j + 1][0], p[2 * j + 1][1]), pack2(p[2 * j + 1][2], p[2 * j + 1][3])};
#pragma unroll
        for (int dn = 0; dn < 8; dn += 2) {
            uint32_t b[4];
            ldsm_trans(b, y, j * 16, dn * 8);
            mma16816(c[dn], a, b[0], b[1]);
            mma16816(c[dn + 1], a, b[2], b[3]);
        }
    }
}

/* Tiles travel in two steps: cp.async copies 64 rows of 64 floats from global memory into an
 * fp32 staging tile while the warps compute on the previous tile, then the block converts the
 * staging tile into the bf16 tile the fragments are read from. Rows at or past T are zero-filled
 * (a copy of 0 source bytes). */
__device__ static inline void cp_async16(void *dst, const void *src, bool full) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(full ? 16 : 0));
}
__device__ static inline void cp_async4(void *dst, const void *src, bool full) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(src), "r"(full ? 4 : 0));
}
__device__ static inline void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ static inline void cp_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

/* f (64, 64) fp32 <- rows [r0, r0 + 64) of src (rows ld floats apart, 16-byte aligned). */
__device__ static inline void issue_tile(float *f, const float *src, long ld, int r0, int T) {
    for (int e = threadIdx.x; e < MA_TILE * (MA_HD / 4); e += MA_WARPS * 32) {
        int r = e / (MA_HD / 4), c4 = e % (MA_HD / 4);
        bool in = r0 + r < T;
        cp_async16(f + r * MA_HD + 4 * c4, in ? src + (long)(r0 + r) * ld + 4 * c4 : src, in);
    }
}

/* f[0 .. 64) <- v[r0 .. r0 + 64) (zero past T). */
__device__ static inline void issue_row(float *f, const float *v, int r0, int T) {
    for (int i = threadIdx.x; i < MA_TILE; i += MA_WARPS * 32) {
        bool in = r0 + i < T;
        cp_async4(f + i, in ? v + r0 + i : v, in);
    }
}

/* dst (64, MA_LD) bf16 <- the staging tile f. */
__device__ static inline void convert_tile(bf16 *dst, const float *f) {
    for (int e = threadIdx.x; e < MA_TILE * (MA_HD / 4); e += MA_WARPS * 32) {
        int r = e / (MA_HD / 4), c4 = e % (MA_HD / 4);
        float4 v = *reinterpret_cast<const float4 *>(f + r * MA_HD + 4 * c4);
        *reinterpret_cast<uint2 *>(dst + r * MA_LD + 4 * c4) = make_uint2(pack2(v.x, v.y), pack2(v.z, v.w));
    }
}

__device__ static inline int imin(int a, int b) { return a < b ? a : b; }

/* Dynamic shared memory of every kernel: two fp32 staging tiles, two bf16 tiles, 4 x 64 floats. */
#define MA_SMEM (2 * MA_TILE * MA_HD * 4 + 2 * MA_TILE * MA_LD * 2 + 4 * MA_TILE * 4)
#define MA_CARVE                                                                                   \
    extern __shared__ __align__(16) unsigned char ma_smem[];                                       \
    float *fA = reinterpret_cast<float *>(ma_smem), *fB = fA + MA_TILE * MA_HD;                    \
    bf16 *sA = reinterpret_cast<bf16 *>(fB + MA_TILE * MA_HD), *sB = sA + MA_TILE * MA_LD;
/* after MA_CARVE: the 4 x 64 floats */
#define MA_EXTRA reinterpret_cast<float *>(sB + MA_TILE * MA_LD)

/* ---- forward ------------------------------------------------------------------------------------- */

__global__ static void __launch_bounds__(MA_WARPS * 32)
k_mma_fwd(float *out, float *lse, const float *qkv, int T, int heads, float sl2) {
    MA_CARVE
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int q0 = blockIdx.x * MA_TILE, h = blockIdx.y, b = blockIdx.z;
    const long W = (long)heads * MA_HD, row = 3 * W;
    const float *base = qkv + (long)b * T * row + (long)h * MA_HD;
    const int r0 = warp * 16;
    const bool active = q0 + r0 < T;

    uint32_t qa[4][4];
    issue_tile(fA, base, row, q0, T);
    cp_commit();
    cp_wait_all();
    __syncthreads();
    convert_tile(sA, fA);
    __syncthreads();
    load_afrags(qa, sA, r0);
    issue_tile(fA, base + W, row, 0, T);
    issue_tile(fB, base + 2 * W, row, 0, T);
    cp_commit();

    float o[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

    for (int k0 = 0; k0 < T; k0 += MA_TILE) {
        cp_wait_all();
        __syncthreads(); /* tile k0 staged; the previous bf16 tiles (or Q's) no longer read */
        convert_tile(sA, fA);
        convert_tile(sB, fB);
        __syncthreads();
        if (k0 + MA_TILE < T) {
            issue_tile(fA, base + W, row, k0 + MA_TILE, T);
            issue_tile(fB, base + 2 * W, row, k0 + MA_TILE, T);
            cp_commit();
        }
        if (!active) continue;
        const int valid = imin(MA_TILE, T - k0);
        float s[8][4];
#pragma unroll
        for (int i = 0; i < 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
        strip_xyt(s, qa, sA, (valid + 7) / 8);
        float mx0 = m0, mx1 = m1;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int col = k0 + nt * 8 + 2 * t + (e & 1);
                s[nt][e] = col < T ? s[nt][e] * sl2 : -INFINITY;
            }
            mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
            mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        /* column k0 < T is in every tile, so mx0 and mx1 are finite */
        const float a0 = exp2f(m0 - mx0), a1 = exp2f(m1 - mx1);
        m0 = mx0, m1 = mx1;
        float ls0 = 0.0f, ls1 = 0.0f;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            s[nt][0] = exp2f(s[nt][0] - mx0);
            s[nt][1] = exp2f(s[nt][1] - mx0);
            s[nt][2] = exp2f(s[nt][2] - mx1);
            s[nt][3] = exp2f(s[nt][3] - mx1);
            ls0 += s[nt][0] + s[nt][1];
            ls1 += s[nt][2] + s[nt][3];
            o[nt][0] *= a0, o[nt][1] *= a0, o[nt][2] *= a1, o[nt][3] *= a1;
        }
        l0 = l0 * a0 + ls0;
        l1 = l1 * a1 + ls1;
        strip_py(o, s, sB, (valid + 15) / 16);
    }
    if (!active) return;
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const int qa0 = q0 + r0 + g, qa1 = qa0 + 8;
    const float i0 = 1.0f / l0, i1 = 1.0f / l1;
    float *o0 = out + ((long)b * T + qa0) * W + (long)h * MA_HD;
    float *o1 = o0 + 8 * W;
#pragma unroll
    for (int dn = 0; dn < 8; dn++) {
        int d = dn * 8 + 2 * t;
        if (qa0 < T) *reinterpret_cast<float2 *>(o0 + d) = make_float2(o[dn][0] * i0, o[dn][1] * i0);
        if (qa1 < T) *reinterpret_cast<float2 *>(o1 + d) = make_float2(o[dn][2] * i1, o[dn][3] * i1);
    }
    if (t == 0) {
        float *L = lse + ((long)b * heads + h) * T;
        if (qa0 < T) L[qa0] = (m0 + log2f(l0)) * 0.69314718056f;
        if (qa1 < T) L[qa1] = (m1 + log2f(l1)) * 0.69314718056f;
    }
}

/* ---- backward ------------------------------------------------------------------------------------ */

/* dQ of 64 queries; first D = rowsum(dO O) of them, written to D for the dK dV kernel. */
__global__ static void __launch_bounds__(MA_WARPS * 32)
k_mma_bwd_q(float *dqkv, float *D, const float *dout, const float *out, const float *qkv,
            const float *lse, int T, int heads, float scale) {
    MA_CARVE
    float *fX = MA_EXTRA;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int q0 = blockIdx.x * MA_TILE, h = blockIdx.y, b = blockIdx.z;
    const long W = (long)heads * MA_HD, row = 3 * W;
    const float *base = qkv + (long)b * T * row + (long)h * MA_HD;
    const float *gbase = dout + (long)b * T * W + (long)h * MA_HD;
    const float *obase = out + (long)b * T * W + (long)h * MA_HD;
    const float *Lb = lse + ((long)b * heads + h) * T;
    float *Db = D + ((long)b * heads + h) * T;
    const int r0 = warp * 16;
    const bool active = q0 + r0 < T;
    const float sl2 = scale * LOG2E;
    const int qa0 = q0 + r0 + g, qa1 = qa0 + 8;
    const float L0 = qa0 < T ? Lb[qa0] * LOG2E : 0.0f, L1 = qa1 < T ? Lb[qa1] * LOG2E : 0.0f;

    issue_tile(fA, base, row, q0, T);
    issue_tile(fB, gbase, W, q0, T);
    cp_commit();
    cp_wait_all();
    __syncthreads();
    { /* D of the 64 rows: two threads per row, 32 columns each, dO from staging, O from memory */
        const int r = threadIdx.x >> 1, half = threadIdx.x & 1;
        float acc = 0.0f;
        if (q0 + r < T) {
            const float *orow = obase + (long)(q0 + r) * W + 32 * half, *grow = fB + r * MA_HD + 32 * half;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float4 ov = *reinterpret_cast<const float4 *>(orow + 4 * i);
                float4 gv = *reinterpret_cast<const float4 *>(grow + 4 * i);
                acc += ov.x * gv.x + ov.y * gv.y + ov.z * gv.z + ov.w * gv.w;
            }
        }
        acc += __shfl_xor_sync(0xffffffffu, acc, 1);
        if (!half) {
            fX[r] = acc;
            if (q0 + r < T) Db[q0 + r] = acc;
        }
    }
    convert_tile(sA, fA);
    convert_tile(sB, fB);
    __syncthreads();
    uint32_t qa[4][4], ga[4][4];
    load_afrags(qa, sA, r0);
    load_afrags(ga, sB, r0);
    const float D0 = fX[r0 + g], D1 = fX[r0 + g + 8];
    issue_tile(fA, base + W, row, 0, T);
    issue_tile(fB, base + 2 * W, row, 0, T);
    cp_commit();

    float dq[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;
    for (int k0 = 0; k0 < T; k0 += MA_TILE) {
        cp_wait_all();
        __syncthreads();
        convert_tile(sA, fA);
        convert_tile(sB, fB);
        __syncthreads();
        if (k0 + MA_TILE < T) {
            issue_tile(fA, base + W, row, k0 + MA_TILE, T);
            issue_tile(fB, base + 2 * W, row, k0 + MA_TILE, T);
            cp_commit();
        }
        if (!active) continue;
        const int valid = imin(MA_TILE, T - k0);
        float s[8][4], dp[8][4];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
            dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.0f;
        }
        const int groups = (valid + 7) / 8;
        strip_xyt(s, qa, sA, groups);  /* S = Q K^T */
        strip_xyt(dp, ga, sB, groups); /* dP = dO V^T */
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int col = k0 + nt * 8 + 2 * t + (e & 1);
                float p = col < T ? exp2f(s[nt][e] * sl2 - (e < 2 ? L0 : L1)) : 0.0f;
                dp[nt][e] = p * (dp[nt][e] - (e < 2 ? D0 : D1)) * scale;
            }
        strip_py(dq, dp, sA, (valid + 15) / 16); /* dQ += dS K */
    }
    if (!active) return;
    float *q_out0 = dqkv + ((long)b * T + qa0) * row + (long)h * MA_HD;
    float *q_out1 = q_out0 + 8 * row;
#pragma unroll
    for (int dn = 0; dn < 8; dn++) {
        int d = dn * 8 + 2 * t;
        if (qa0 < T) *reinterpret_cast<float2 *>(q_out0 + d) = make_float2(dq[dn][0], dq[dn][1]);
        if (qa1 < T) *reinterpret_cast<float2 *>(q_out1 + d) = make_float2(dq[dn][2], dq[dn][3]);
    }
}

/* dK and dV of 64 keys (after k_mma_bwd_q has written D). */
__global__ static void __launch_bounds__(MA_WARPS * 32)
k_mma_bwd_kv(float *dqkv, const float *dout, const float *qkv, const float *lse, const float *D,
             int T, int heads, float scale) {
    MA_CARVE
    /* fX[0, 128): the staging of lse and D; sL, sD: the tile's, in the form used */
    float *fX = MA_EXTRA, *sL = fX + 2 * MA_TILE, *sD = fX + 3 * MA_TILE;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int k0 = blockIdx.x * MA_TILE, h = blockIdx.y, b = blockIdx.z;
    const long W = (long)heads * MA_HD, row = 3 * W;
    const float *base = qkv + (long)b * T * row + (long)h * MA_HD;
    const float *gbase = dout + (long)b * T * W + (long)h * MA_HD;
    const float *Lb = lse + ((long)b * heads + h) * T, *Db = D + ((long)b * heads + h) * T;
    const int r0 = warp * 16;
    const bool active = k0 + r0 < T;
    const float sl2 = scale * LOG2E;

    issue_tile(fA, base + W, row, k0, T);
    issue_tile(fB, base + 2 * W, row, k0, T);
    cp_commit();
    cp_wait_all();
    __syncthreads();
    convert_tile(sA, fA);
    convert_tile(sB, fB);
    __syncthreads();
    uint32_t ka[4][4], va[4][4];
    load_afrags(ka, sA, r0);
    load_afrags(va, sB, r0);
    issue_tile(fA, base, row, 0, T);
    issue_tile(fB, gbase, W, 0, T);
    issue_row(fX, Lb, 0, T);
    issue_row(fX + MA_TILE, Db, 0, T);
    cp_commit();

    float dk[8][4], dv[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.0f;
        dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.0f;
    }
    for (int q0 = 0; q0 < T; q0 += MA_TILE) {
        cp_wait_all();
        __syncthreads();
        convert_tile(sA, fA);
        convert_tile(sB, fB);
        for (int i = threadIdx.x; i < MA_TILE; i += MA_WARPS * 32) {
            bool in = q0 + i < T;
            sL[i] = in ? fX[i] * LOG2E : INFINITY; /* P = 0 past T */
            sD[i] = in ? fX[MA_TILE + i] : 0.0f;
        }
        __syncthreads();
        if (q0 + MA_TILE < T) {
            issue_tile(fA, base, row, q0 + MA_TILE, T);
            issue_tile(fB, gbase, W, q0 + MA_TILE, T);
            issue_row(fX, Lb, q0 + MA_TILE, T);
            issue_row(fX + MA_TILE, Db, q0 + MA_TILE, T);
            cp_commit();
        }
        if (!active) continue;
        const int valid = imin(MA_TILE, T - q0);
        float s[8][4], dp[8][4];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
            dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.0f;
        }
        const int groups = (valid + 7) / 8;
        strip_xyt(s, ka, sA, groups);  /* S^T = K Q^T */
        strip_xyt(dp, va, sB, groups); /* dP^T = V dO^T */
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int q = nt * 8 + 2 * t + (e & 1);
                float p = exp2f(s[nt][e] * sl2 - sL[q]);
                s[nt][e] = p;
                dp[nt][e] = p * (dp[nt][e] - sD[q]) * scale;
            }
        const int ksteps = (valid + 15) / 16;
        strip_py(dv, s, sB, ksteps);  /* dV += P^T dO */
        strip_py(dk, dp, sA, ksteps); /* dK += dS^T Q */
    }
    if (!active) return;
    const int ka0 = k0 + r0 + g, ka1 = ka0 + 8;
    float *k_out0 = dqkv + ((long)b * T + ka0) * row + W + (long)h * MA_HD;
    float *k_out1 = k_out0 + 8 * row;
#pragma unroll
    for (int dn = 0; dn < 8; dn++) {
        int d = dn * 8 + 2 * t;
        if (ka0 < T) {
            *reinterpret_cast<float2 *>(k_out0 + d) = make_float2(dk[dn][0], dk[dn][1]);
            *reinterpret_cast<float2 *>(k_out0 + W + d) = make_float2(dv[dn][0], dv[dn][1]);
        }
        if (ka1 < T) {
            *reinterpret_cast<float2 *>(k_out1 + d) = make_float2(dk[dn][2], dk[dn][3]);
            *reinterpret_cast<float2 *>(k_out1 + W + d) = make_float2(dv[dn][2], dv[dn][3]);
        }
    }
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

/* The kernels' dynamic shared memory limit, set once per process (one device per process). */
static int mma_setup(umd_ctx *c) {
    static int done = 0;
    if (done) return 0;
    if (cuda_check(c, cudaFuncSetAttribute(k_mma_fwd, cudaFuncAttributeMaxDynamicSharedMemorySize, MA_SMEM),
                   "attention") ||
        cuda_check(c, cudaFuncSetAttribute(k_mma_bwd_q, cudaFuncAttributeMaxDynamicSharedMemorySize, MA_SMEM),
                   "attention") ||
        cuda_check(c, cudaFuncSetAttribute(k_mma_bwd_kv, cudaFuncAttributeMaxDynamicSharedMemorySize, MA_SMEM),
                   "attention"))
        return -1;
    done = 1;
    return 0;
}

int cuda_mma_attention_usable(const umd_ctx *c, int n, int T, int heads, int hd) {
    return c->attn_mode == UMD_ATTN_MMA && c->math == UMD_MATH_BF16 && hd == MA_HD && n > 0 &&
           T > 0 && n <= 65535 && heads <= 65535 && c->attn_d &&
           (size_t)n * heads * T <= c->attn_d_floats;
}

void cuda_mma_attention_fwd(umd_ctx *c, float *out, float *lse, const float *qkv, int n, int T,
                            int heads) {
    if (mma_setup(c)) return;
    dim3 grid((unsigned)((T + MA_TILE - 1) / MA_TILE), (unsigned)heads, (unsigned)n);
    k_mma_fwd<<<grid, MA_WARPS * 32, MA_SMEM, c->stream>>>(out, lse, qkv, T, heads,
                                                          LOG2E / sqrtf((float)MA_HD));
    CUDA_LAUNCHED(c, "attention_fwd");
}

void cuda_mma_attention_bwd(umd_ctx *c, float *dqkv, const float *dout, const float *qkv,
                            const float *out, const float *lse, int n, int T, int heads) {
    if (mma_setup(c)) return;
    const float scale = 1.0f / sqrtf((float)MA_HD);
    dim3 grid((unsigned)((T + MA_TILE - 1) / MA_TILE), (unsigned)heads, (unsigned)n);
    k_mma_bwd_q<<<grid, MA_WARPS * 32, MA_SMEM, c->stream>>>(dqkv, c->attn_d, dout, out, qkv, lse,
                                                            T, heads, scale);
    if (CUDA_LAUNCHED(c, "attention_bwd")) return;
    k_mma_bwd_kv<<<grid, MA_WARPS * 32, MA_SMEM, c->stream>>>(dqkv, dout, qkv, lse, c->attn_d, T,
                                                             heads, scale);
    CUDA_LAUNCHED(c, "attention_bwd");
}
