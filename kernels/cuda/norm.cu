/* norm.cu: LayerNorm with affine and adaLN modulation (forward, backward), the gated residual, and
 * the two in one pass.
 *
 * Shapes: R = n T token rows of w floats; row t of sequence b at x + b x_stride + t w (likewise
 * out, dout at out_stride, dx at x_stride); mod row b at mod + b mod_stride, shift [0, w) then
 * scale [w, 2w). A lane's columns: group k of a row is columns c .. c + 3, c = (32 k + lane) 4, so
 * a warp covers 128 consecutive columns per group and rows up to LN_REG_WIDTH = 1024 wide fit in
 * K = ceil(w / 128) groups of registers. A group is one 16-byte load or store where the row,
 * w and the other operands are 16-byte aligned (decided per row in layernorm_fwd, per sequence in
 * layernorm_bwd, so strided sequences mix both, and per call in gate_residual), else four guarded
 * scalar accesses with the same arithmetic.
 *
 * Parallelisation, and the bytes each call must move at least (B/4: R = 65792, w = 768, a tensor
 * R w 4 bytes = 202 MB):
 *   layernorm_fwd    a warp per token row, the row read once into registers (w <= 1024): its mean,
 *                    the variance around it (two passes over the registers, as the CPU), then the
 *                    normalised, affine, modulated row. Floor: x read, out written, 2 R w 4 bytes
 *                    (404 MB), plus mean and rstd. Wider rows: the same with three reads of the row.
 *   layernorm_bwd    one pass: a block of LN_WARPS = 4 warps per tile, rows [t0, t1) of one
 *                    sequence (tiles of up to LN_TILE = 64 rows, fewer and longer when the
 *                    workspace is small); a warp per row loads x, dout (and dx when accumulated)
 *                    into registers at once, for the row's two sums (shuffles) and dx, and adds
 *                    dout xhat and dout into its own per-column sums in shared memory (a lane
 *                    touches only its columns); at the tile's end the warps' sums are added in
 *                    warp order into the tile's partials (2, w). Then a block per 32 columns: per
 *                    sequence, its tiles' partials in tile order give dshift = sum dout and dscale
 *                    = gamma sum dout xhat + beta sum dout (written); dgamma, dbeta gather (1 +
 *                    scale) times them (1 without mod) over 32 sequence lanes, each in sequence
 *                    order, the lanes added in lane order (+=). Floor: x, dout read, dx written
 *                    (and read when accumulated), 3 or 4 R w 4 bytes (606 / 808 MB), plus mean,
 *                    rstd and the partials (n ceil(T / 64) 2 w floats written and read: 2 x 7.9
 *                    MB). Rows wider than 1024: dx by a warp per row, dgamma and dbeta by chunks of
 *                    CUDA_COLSUM_CHUNK rows (partials summed in chunk order), dshift and dscale by
 *                    a thread per (sequence, column) over the tokens: x and dout are read three
 *                    times.
 *   gate_residual    forward: a warp per token row, float4 groups. Floor: x, y read, out written,
 *                    3 R w 4 bytes (606 MB). Backward: a block per (sequence, 128 columns), 8
 *                    token lanes of 32 threads, each thread a group of 4 columns over the tokens
 *                    lane, lane + 8, ...: dy = dout gate, and dgate summed, the lanes added in lane
 *                    order. Floor: dout, y read, dy written, 3 R w 4 bytes (606 MB).
 *   residual_layernorm_fwd  (UMDQ_CUDA_FUSED_NORM=1) gate_residual_fwd's arithmetic into the
 *                    registers of layernorm_fwd's warp per row: x, y read, xo and out written, 4 R
 *                    w 4 bytes (808 MB) against the two kernels' 5 (1010 MB), and one launch. Off
 *                    (the default until it has run on a device), and for rows wider than 1024,
 *                    the op is the two kernels.
 * Operand outputs: layernorm_fwd and residual_layernorm_fwd write `out` as bf16 when it is an
 * operand tensor (UMD_OPND) of a context with bf16 operands (bf16 math and
 * UMDQ_CUDA_BF16_OPERANDS=1, on by default): every path above
 * (the register kernels, the wide rows, the two kernels) computes the fp32 value as before and
 * rounds it to nearest even in the store, the rounding the GEMM's conversion would do, so a
 * product reads the same bits; out's bytes halve (B/4: 101 MB instead of 202 MB a LayerNorm).
 * Mean, rstd and xo stay fp32, and an fp32 out is the same kernel code as before.
 * Branch inputs: the gated residuals (gate_residual_fwd, gate_residual_bwd, residual_layernorm_fwd
 * in its one kernel and in its two) read y as bf16 when it is a branch tensor (UMD_OPND_Y) of a
 * context with bf16 operands (where branch_operand says so, the model keeps proj's and fc2's
 * outputs so, as bf16 autocast does): each kernel is a template on y's element type, loads 4
 * bf16 (8 bytes; the vector form wants y 8-byte aligned) where it loaded 4 floats, and widens
 * them exactly before the fp32 arithmetic, so the results are, bit for bit, those of an fp32 y
 * holding the rounded values (dgate included: the same sums in the same order). y's bytes
 * halve: the gated residual's floors, forward and backward, fall from 3 to 2.5 R w 4 bytes, the
 * fused kernel's from 4 to 3.5.
 * An fp32 y is the same kernel code as before.
 * Gradient outputs: gate_residual_bwd writes dy as bf16 when it is a gradient tensor (UMD_GRAD)
 * of a context that keeps them so (grad_operand: bf16 branch tensors and UMDQ_CUDA_BF16_GRAD=1,
 * cuda_grad_bf16), as bf16 autocast keeps the gradient of a bf16 branch output: the kernel is a
 * template on dy's element type too, computes dout * gate in fp32 as before and rounds it once,
 * to nearest even, in the store (store4's bf16 form, one 8-byte store of 4 values where dy is
 * 8-byte aligned); dgate sums the same fp32 products dout * y in the same order, so its bits do
 * not change. dy's bytes halve: with a bf16 y the backward's floor falls from 2.5 to 2 R w 4
 * bytes (B/4: 404 MB instead of 505), and the linear_bwd or mlp_bwd after it reads dy as its bf16
 * GEMM operand without a conversion pass. An fp32 dy is the same kernel code as before.
 * Gradient inputs: layernorm_bwd reads dout as bf16 when it is a gradient tensor (types
 * UMD_GRAD_X) of such a context: the dx of the product that read out (the MLP's for norm2, the
 * qkv Linear's for norm1), which that product wrote rounded once. Every backward kernel (the one
 * pass, and the wide rows' three) is a template on dout's element type, loads 4 bf16 (8 bytes;
 * the vector form wants dout 8-byte aligned) where it loaded 4 floats, and widens them exactly,
 * so the results (dx, dgamma, dbeta, dmod) are, bit for bit, those of an fp32 dout holding the
 * rounded values. dout's bytes halve: the one pass's floor falls from 3 to 2.5 R w 4 bytes (4 to
 * 3.5 accumulated). An fp32 dout is the same kernel code as before.
 * Measured (H200, B/4 bf16 step, train_gpu --profile, ms per step against the three-pass kernels
 * in the same run): layernorm_bwd 5.6 vs 17.0, layernorm_fwd 3.3 vs 3.7, gate_residual_bwd 3.5
 * vs 5.0, gate_residual_fwd 3.1 vs 4.8.
 * No atomics: the results are the same on every run. Numerics: fp32 throughout, as the CPU; the
 * within-row sums are tree-ordered (warp shuffles) instead of sequential, the column sums of the
 * backward are blocked (rows within a warp, warps, tiles, sequences) and dgamma, dbeta, dscale
 * factor the per-sequence constants (1 + scale, gamma, beta) out of the token sums. */
#include "cuda_internal.h"

#define LN_EPS 1e-6f
#define THREADS 256
#define LN_REG_WIDTH 1024 /* widest row kept in registers: 8 groups of 4 columns per lane */
#define LN_WARPS 4        /* warps of a backward tile block */
#define LN_TILE 64        /* rows of a backward tile when the workspace holds enough tiles */
#define GATE_LANES 8      /* token lanes of a gate_residual backward block */

/* Runs LAUNCH(K) for rows of K register groups (K = 1 .. 8: k) and returns 1; 0 for any other k. */
#define LN_BY_GROUPS(k, LAUNCH)                                                                    \
    ((k) == 1   ? (LAUNCH(1), 1)                                                                   \
     : (k) == 2 ? (LAUNCH(2), 1)                                                                   \
     : (k) == 3 ? (LAUNCH(3), 1)                                                                   \
     : (k) == 4 ? (LAUNCH(4), 1)                                                                   \
     : (k) == 5 ? (LAUNCH(5), 1)                                                                   \
     : (k) == 6 ? (LAUNCH(6), 1)                                                                   \
     : (k) == 7 ? (LAUNCH(7), 1)                                                                   \
     : (k) == 8 ? (LAUNCH(8), 1)                                                                   \
                : 0)

__device__ static inline float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* A value of y, the gated residuals' branch input, or of layernorm_bwd's dout, as fp32: itself,
 * or a bf16 branch (gradient) tensor's value widened (exactly), so the arithmetic after the load
 * is the fp32 one's on the rounded values (four at a time: cuda_values4). */
__device__ static inline float y_value(float v) { return v; }
__device__ static inline float y_value(__nv_bfloat16 v) { return __bfloat162float(v); }

/* v = p[c .. c + 4) as fp32 (T fp32, or bf16 widened), 0 past w. V: one 16-byte load, or 8 bytes
 * of bf16 (p + c aligned so, w % 4 == 0). */
template <bool V, class T>
__device__ static inline void load4(float v[4], const T *p, int c, int w) {
    if (V) {
        if (c < w) {
            const float4 q = cuda_values4(p + c);
            v[0] = q.x;
            v[1] = q.y;
            v[2] = q.z;
            v[3] = q.w;
        } else {
            v[0] = v[1] = v[2] = v[3] = 0.0f;
        }
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] = c + j < w ? y_value(p[c + j]) : 0.0f;
    }
}

/* p[c .. c + 4) = v, nothing past w. */
template <bool V>
__device__ static inline void store4(float *p, int c, int w, const float v[4]) {
    if (V) {
        if (c < w) *reinterpret_cast<float4 *>(p + c) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (c + j < w) p[c + j] = v[j];
    }
}

/* The same into a bf16 operand tensor, each value rounded to nearest even (as the GEMMs' own
 * conversion, linear.cu's bf16x4, rounds it). V: one 8-byte store (p + c 8-byte aligned). */
template <bool V>
__device__ static inline void store4(__nv_bfloat16 *p, int c, int w, const float v[4]) {
    if (V) {
        if (c < w) {
            __nv_bfloat162 lo = __floats2bfloat162_rn(v[0], v[1]);
            __nv_bfloat162 hi = __floats2bfloat162_rn(v[2], v[3]);
            *reinterpret_cast<uint2 *>(p + c) =
                make_uint2(*reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
        }
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (c + j < w) p[c + j] = __float2bfloat16(v[j]);
    }
}

/* One value of an output row: fp32, or a bf16 operand rounded to nearest even. */
template <class T> __device__ static inline T out_value(float v);
template <> __device__ inline float out_value<float>(float v) { return v; }
template <> __device__ inline __nv_bfloat16 out_value<__nv_bfloat16>(float v) {
    return __float2bfloat16(v);
}

/* A row of an element type aligned for the vector forms of store4 and load4: 16 bytes for fp32,
 * 8 for bf16. */
template <class T> __host__ __device__ static inline bool aligned_out(const T *p) {
    return ((uintptr_t)p & (4 * sizeof(T) - 1)) == 0;
}

/* ---- forward -------------------------------------------------------------------------------- */

/* One row by one warp, the row already in K groups of registers (0 past w); yr fp32 or bf16. */
template <int K, bool V, class OutT>
__device__ __forceinline__ static void ln_fwd_regs(OutT *yr, float *mean_r, float *rstd_r,
                                                   const float (&xv)[K][4], const float *gamma,
                                                   const float *beta, const float *shift,
                                                   const float *scale, int w, int lane) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < K; k++) {
#pragma unroll
        for (int j = 0; j < 4; j++) s += xv[k][j]; /* 0 past w */
    }
    const float mu = warp_sum(s) / (float)w;
    float v = 0.0f;
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int c = (k * 32 + lane) * 4;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (c + j < w) {
                const float d = xv[k][j] - mu;
                v += d * d;
            }
        }
    }
    const float rs = 1.0f / sqrtf(warp_sum(v) / (float)w + LN_EPS);
    if (lane == 0) {
        *mean_r = mu;
        *rstd_r = rs;
    }
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int c = (k * 32 + lane) * 4;
        float g[4], bt[4], o[4];
        load4<V>(g, gamma, c, w);
        load4<V>(bt, beta, c, w);
#pragma unroll
        for (int j = 0; j < 4; j++) o[j] = (xv[k][j] - mu) * rs * g[j] + bt[j];
        if (shift) {
            float sh[4], sc[4];
            load4<V>(sh, shift, c, w);
            load4<V>(sc, scale, c, w);
#pragma unroll
            for (int j = 0; j < 4; j++) o[j] = o[j] * (1.0f + sc[j]) + sh[j];
        }
        store4<V>(yr, c, w, o);
    }
}

/* One row by one warp: the row read into K groups of registers, then normalised. */
template <int K, bool V, class OutT>
__device__ static void ln_fwd_row(OutT *yr, float *mean_r, float *rstd_r, const float *xr,
                                  const float *gamma, const float *beta, const float *shift,
                                  const float *scale, int w, int lane) {
    float xv[K][4];
#pragma unroll
    for (int k = 0; k < K; k++) load4<V>(xv[k], xr, (k * 32 + lane) * 4, w);
    ln_fwd_regs<K, V>(yr, mean_r, rstd_r, xv, gamma, beta, shift, scale, w, lane);
}

/* A warp per token row, w <= K * 128; out fp32 or a bf16 operand tensor (OutT). */
template <int K, class OutT>
__global__ static void __launch_bounds__(THREADS, K <= 6 ? 3 : 2)
    k_ln_fwd_regs(OutT *out, float *mean, float *rstd, const float *x,
                                     const float *gamma, const float *beta, const float *mod,
                                     int mod_stride, int n, int T, int w, long x_stride,
                                     long out_stride) {
    const long r = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (r >= (long)n * T) return;
    const long b = r / T, t = r % T;
    const float *xr = x + b * x_stride + t * w;
    OutT *yr = out + b * out_stride + t * w;
    const float *shift = mod ? mod + b * mod_stride : NULL;
    const float *scale = mod ? shift + w : NULL;
    /* w % 4 == 0 and shift aligned make scale aligned */
    if ((w & 3) == 0 && aligned16(xr) && aligned_out(yr) && aligned16(gamma) && aligned16(beta) &&
        (!shift || aligned16(shift)))
        ln_fwd_row<K, true>(yr, mean + r, rstd + r, xr, gamma, beta, shift, scale, w, lane);
    else
        ln_fwd_row<K, false>(yr, mean + r, rstd + r, xr, gamma, beta, shift, scale, w, lane);
}

/* Rows wider than LN_REG_WIDTH: a warp per token row, the row read three times. */
template <class OutT>
__global__ static void k_ln_fwd(OutT *out, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, const float *mod,
                                int mod_stride, int n, int T, int w, long x_stride,
                                long out_stride) {
    long r = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= (long)n * T) return;
    long b = r / T, t = r % T;
    const float *xr = x + b * x_stride + t * w;
    OutT *yr = out + b * out_stride + t * w;
    float s = 0.0f;
    for (int i = lane; i < w; i += 32) s += xr[i];
    float mu = warp_sum(s) / (float)w;
    float v = 0.0f;
    for (int i = lane; i < w; i += 32) {
        float d = xr[i] - mu;
        v += d * d;
    }
    float rs = 1.0f / sqrtf(warp_sum(v) / (float)w + LN_EPS);
    if (lane == 0) {
        mean[r] = mu;
        rstd[r] = rs;
    }
    if (mod) {
        const float *shift = mod + b * mod_stride, *scale = shift + w;
        for (int i = lane; i < w; i += 32) {
            float y = (xr[i] - mu) * rs * gamma[i] + beta[i];
            yr[i] = out_value<OutT>(y * (1.0f + scale[i]) + shift[i]);
        }
    } else {
        for (int i = lane; i < w; i += 32)
            yr[i] = out_value<OutT>((xr[i] - mu) * rs * gamma[i] + beta[i]);
    }
}

#define LN_FWD_REGS(K)                                                                             \
    k_ln_fwd_regs<K><<<blocks, THREADS, 0, c->stream>>>(out, mean, rstd, x, gamma, beta, mod,     \
                                                        mod_stride, n, T, w, x_stride, out_stride)

template <class OutT>
static void ln_fwd(umd_ctx *c, OutT *out, float *mean, float *rstd, const float *x,
                   const float *gamma, const float *beta, const float *mod, int mod_stride, int n,
                   int T, int w, long x_stride, long out_stride) {
    const unsigned blocks = cuda_blocks((size_t)n * T, THREADS / 32);
    if (!LN_BY_GROUPS(w >= 1 && w <= LN_REG_WIDTH ? (w + 127) / 128 : 0, LN_FWD_REGS))
        k_ln_fwd<<<blocks, THREADS, 0, c->stream>>>(out, mean, rstd, x, gamma, beta, mod,
                                                    mod_stride, n, T, w, x_stride, out_stride);
}

extern "C" void cuda_layernorm_fwd(umd_ctx *c, void *out, float *mean, float *rstd,
                                   const float *x, const float *gamma, const float *beta,
                                   const float *mod, int mod_stride, int n, int T, int w,
                                   long x_stride, long out_stride, int out_type) {
    CUDA_OP(c);
    long rows = (long)n * T;
    if (rows <= 0) return;
    if (cuda_opnd_bf16(c, out_type))
        ln_fwd(c, (__nv_bfloat16 *)out, mean, rstd, x, gamma, beta, mod, mod_stride, n, T, w,
               x_stride, out_stride);
    else
        ln_fwd(c, (float *)out, mean, rstd, x, gamma, beta, mod, mod_stride, n, T, w, x_stride,
               out_stride);
    CUDA_LAUNCHED(c, "layernorm_fwd");
}

/* ---- backward, one pass (w <= LN_REG_WIDTH) ---------------------------------------------------- */

/* The rows [t0, t1) of one sequence (xs, ds, dxs at its row 0, r0 its first row of mean and rstd)
 * by LN_WARPS warps, warp j taking rows t0 + j, t0 + j + LN_WARPS, ...; part (2, w) gets the tile's
 * sum of dout xhat, then of dout. sm: gs (w) gamma, ss (w) 1 + scale (1 without mod), then per
 * warp its column sums (2, w), each lane adding into its own columns only (no race); at the end
 * the warps' sums are added in warp order. */
template <int K, bool V, class DT>
__device__ static void ln_bwd_tile(float *part, float *dxs, const DT *ds, const float *xs,
                                   const float *mean, const float *rstd, const float *gamma,
                                   const float *scale, long r0, int t0, int t1, int w,
                                   int accumulate, float *sm) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *gs = sm, *ss = sm + w, *sums = sm + 2 * w;
    float *sa = sums + warp * 2 * w, *sd = sa + w; /* this warp's sum of dout xhat, of dout */
    for (int i = threadIdx.x; i < w; i += blockDim.x) {
        gs[i] = gamma[i];
        ss[i] = scale ? 1.0f + scale[i] : 1.0f;
    }
    for (int i = threadIdx.x; i < LN_WARPS * 2 * w; i += blockDim.x) sums[i] = 0.0f;
    __syncthreads();
    for (int t = t0 + warp; t < t1; t += LN_WARPS) {
        const float mu = mean[r0 + t], rs = rstd[r0 + t];
        const float *xr = xs + (long)t * w;
        const DT *dr = ds + (long)t * w;
        float *dxr = dxs + (long)t * w;
        float xv[K][4], dv[K][4], pv[K][4]; /* x, dout, and dx when it is added to */
#pragma unroll
        for (int k = 0; k < K; k++) {
            load4<V>(xv[k], xr, (k * 32 + lane) * 4, w);
            load4<V>(dv[k], dr, (k * 32 + lane) * 4, w);
            if (accumulate) load4<V>(pv[k], dxr, (k * 32 + lane) * 4, w);
        }
        /* dy = dout (1 + scale), dxhat = dy gamma; s1, s2 = means of dxhat, dxhat xhat */
        float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int c = (k * 32 + lane) * 4;
            float g[4], sc[4], a[4], d[4];
            load4<V>(g, gs, c, w);
            load4<V>(sc, ss, c, w);
            load4<V>(a, sa, c, w);
            load4<V>(d, sd, c, w);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                if (c + j < w) {
                    const float xh = (xv[k][j] - mu) * rs;
                    const float dxh = dv[k][j] * sc[j] * g[j];
                    s1 += dxh;
                    s2 += dxh * xh;
                    a[j] += dv[k][j] * xh;
                    d[j] += dv[k][j];
                }
            }
            store4<V>(sa, c, w, a);
            store4<V>(sd, c, w, d);
        }
        s1 = warp_sum(s1) / (float)w;
        s2 = warp_sum(s2) / (float)w;
        /* dx = rstd (dxhat - s1 - xhat s2), written or added */
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int c = (k * 32 + lane) * 4;
            float g[4], sc[4], o[4];
            load4<V>(g, gs, c, w);
            load4<V>(sc, ss, c, w);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float xh = (xv[k][j] - mu) * rs;
                const float dxh = dv[k][j] * sc[j] * g[j];
                const float d = rs * (dxh - s1 - xh * s2);
                o[j] = accumulate ? pv[k][j] + d : d;
            }
            store4<V>(dxr, c, w, o);
        }
    }
    __syncthreads();
    /* part[0, w) = sum of dout xhat, [w, 2w) = sum of dout: the warps' sums in warp order */
    for (int i = threadIdx.x; i < 2 * w; i += blockDim.x) {
        float v = sums[i];
        for (int k = 1; k < LN_WARPS; k++) v += sums[k * 2 * w + i];
        part[i] = v;
    }
}

/* A block of LN_WARPS warps per tile: tile = blockIdx.x = b * per_seq + i covers rows
 * [i tile_rows, min((i + 1) tile_rows, T)) of sequence b; its partials at partials + tile 2 w.
 * Dynamic shared memory: (2 + 2 LN_WARPS) w floats. dout fp32 or a bf16 gradient tensor (DT),
 * read as its fp32 values (load4). */
template <int K, class DT>
__global__ static void __launch_bounds__(LN_WARPS * 32)
    k_ln_bwd_tile(float *partials, float *dx, const DT *dout, const float *x, const float *mean,
                  const float *rstd, const float *gamma, const float *mod, int mod_stride, int T,
                  int w, long x_stride, long out_stride, int per_seq, int tile_rows, int acc) {
    extern __shared__ float4 sm4[];
    float *sm = reinterpret_cast<float *>(sm4);
    const long b = blockIdx.x / per_seq;
    const int t0 = (int)(blockIdx.x % per_seq) * tile_rows;
    const int t1 = t0 + tile_rows < T ? t0 + tile_rows : T;
    const float *xs = x + b * x_stride;
    const DT *ds = dout + b * out_stride;
    float *dxs = dx + b * x_stride;
    const float *scale = mod ? mod + b * mod_stride + w : NULL;
    float *part = partials + (long)blockIdx.x * 2 * w;
    /* gamma and scale go through shared memory (scalar loads): no alignment asked of them; dout's
     * vector loads want 16 bytes of fp32 or 8 of bf16 (aligned_out) */
    if ((w & 3) == 0 && aligned16(xs) && aligned_out(ds) && aligned16(dxs))
        ln_bwd_tile<K, true>(part, dxs, ds, xs, mean, rstd, gamma, scale, b * T, t0, t1, w, acc,
                             sm);
    else
        ln_bwd_tile<K, false>(part, dxs, ds, xs, mean, rstd, gamma, scale, b * T, t0, t1, w, acc,
                              sm);
}

/* partials (n per_seq, 2, w) -> dmod (written), dgamma, dbeta (+=). A block per 32 columns, 32
 * sequence lanes: lane y takes sequences y, y + 32, ... in order, each the sum of its tiles in
 * tile order; the lanes are added in lane order. With a = sum dout xhat, s = sum dout of sequence
 * b: dshift = s, dscale = gamma a + beta s, dgamma += (1 + scale) a, dbeta += (1 + scale) s. */
__global__ static void k_ln_bwd_reduce(float *dgamma, float *dbeta, float *dmod,
                                       const float *partials, const float *gamma,
                                       const float *beta, const float *mod, int mod_stride, int n,
                                       int per_seq, int w) {
    __shared__ float sg[32][33], sb[32][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int i = blockIdx.x * 32 + tx;
    float g = 0.0f, bs = 0.0f;
    if (i < w) {
        for (long b = ty; b < n; b += 32) {
            const float *p = partials + b * per_seq * 2 * w + i;
            float a = 0.0f, s = 0.0f;
            for (int j = 0; j < per_seq; j++) {
                a += p[(long)j * 2 * w];
                s += p[(long)j * 2 * w + w];
            }
            if (mod) {
                const float sc = 1.0f + mod[b * mod_stride + w + i];
                dmod[b * mod_stride + i] = s;
                dmod[b * mod_stride + w + i] = gamma[i] * a + beta[i] * s;
                g += sc * a;
                bs += sc * s;
            } else {
                g += a;
                bs += s;
            }
        }
    }
    sg[ty][tx] = g;
    sb[ty][tx] = bs;
    __syncthreads();
    if (ty == 0 && i < w) {
        for (int k = 1; k < 32; k++) {
            g += sg[k][tx];
            bs += sb[k][tx];
        }
        dgamma[i] += g;
        dbeta[i] += bs;
    }
}

/* ---- backward for rows wider than LN_REG_WIDTH ------------------------------------------------ */

/* dx of one row per warp. dout fp32 or bf16 (DT), as in the kernels below. */
template <class DT>
__global__ static void k_ln_bwd_dx(float *dx, const DT *dout, const float *x, const float *mean,
                                   const float *rstd, const float *gamma, const float *mod,
                                   int mod_stride, int n, int T, int w, long x_stride,
                                   long out_stride, int acc) {
    long r = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= (long)n * T) return;
    long b = r / T, t = r % T;
    const float *xr = x + b * x_stride + t * w;
    const DT *dor = dout + b * out_stride + t * w;
    float *dxr = dx + b * x_stride + t * w;
    const float *scale = mod ? mod + b * mod_stride + w : NULL;
    float mu = mean[r], rs = rstd[r];
    float s1 = 0.0f, s2 = 0.0f;
    for (int i = lane; i < w; i += 32) {
        float xh = (xr[i] - mu) * rs;
        float dy = scale ? y_value(dor[i]) * (1.0f + scale[i]) : y_value(dor[i]);
        float dxh = dy * gamma[i];
        s1 += dxh;
        s2 += dxh * xh;
    }
    s1 = warp_sum(s1) / (float)w;
    s2 = warp_sum(s2) / (float)w;
    for (int i = lane; i < w; i += 32) {
        float xh = (xr[i] - mu) * rs;
        float dy = scale ? y_value(dor[i]) * (1.0f + scale[i]) : y_value(dor[i]);
        float g = rs * (dy * gamma[i] - s1 - xh * s2);
        if (acc) dxr[i] += g;
        else dxr[i] = g;
    }
}

/* partials[chunk][0 .. w) = sum of dy xhat, [w .. 2w) = sum of dy, over the chunk's rows. A block
 * is 32 columns x 8 row lanes: lane y sums rows y, y + 8, ... of the chunk (a warp reads 32
 * consecutive floats of a row), then the 8 lane sums are added in lane order in shared memory. */
template <class DT>
__global__ static void k_ln_bwd_params(float *partials, const DT *dout, const float *x,
                                       const float *mean, const float *rstd, const float *mod,
                                       int mod_stride, int n, int T, int w, long x_stride,
                                       long out_stride) {
    __shared__ float sg[8][33], sb[8][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int i = blockIdx.x * 32 + tx;
    const long chunk = blockIdx.y;
    const long rows = (long)n * T, r0 = chunk * CUDA_COLSUM_CHUNK;
    const long r1 = r0 + CUDA_COLSUM_CHUNK < rows ? r0 + CUDA_COLSUM_CHUNK : rows;
    float g = 0.0f, bsum = 0.0f;
    if (i < w) {
        for (long r = r0 + ty; r < r1; r += 8) {
            long b = r / T, t = r - b * T;
            float xh = (x[b * x_stride + t * w + i] - mean[r]) * rstd[r];
            float d = y_value(dout[b * out_stride + t * w + i]);
            float dy = mod ? d * (1.0f + mod[b * mod_stride + w + i]) : d;
            g += dy * xh;
            bsum += dy;
        }
    }
    sg[ty][tx] = g;
    sb[ty][tx] = bsum;
    __syncthreads();
    if (ty == 0 && i < w) {
        for (int k = 1; k < 8; k++) {
            g += sg[k][tx];
            bsum += sb[k][tx];
        }
        partials[chunk * 2 * w + i] = g;
        partials[chunk * 2 * w + w + i] = bsum;
    }
}

__global__ static void k_ln_bwd_params_sum(float *dgamma, float *dbeta, const float *partials,
                                           long chunks, int w) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= w) return;
    float sg = 0.0f, sb = 0.0f;
    for (long k = 0; k < chunks; k++) {
        sg += partials[k * 2 * w + i];
        sb += partials[k * 2 * w + w + i];
    }
    dgamma[i] += sg;
    dbeta[i] += sb;
}

/* dshift, dscale of sequence b: sums over its tokens of dout and dout * y. */
template <class DT>
__global__ static void k_ln_bwd_mod(float *dmod, const DT *dout, const float *x,
                                    const float *mean, const float *rstd, const float *gamma,
                                    const float *beta, int mod_stride, int n, int T, int w,
                                    long x_stride, long out_stride) {
    long e = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long)n * w) return;
    long b = e / w;
    int i = (int)(e % w);
    float ss = 0.0f, sc = 0.0f;
    for (int t = 0; t < T; t++) {
        long r = b * T + t;
        float xh = (x[b * x_stride + (long)t * w + i] - mean[r]) * rstd[r];
        float y = xh * gamma[i] + beta[i];
        float d = y_value(dout[b * out_stride + (long)t * w + i]);
        sc += d * y;
        ss += d;
    }
    dmod[b * mod_stride + i] = ss;
    dmod[b * mod_stride + w + i] = sc;
}

#define LN_BWD_TILE(K)                                                                             \
    k_ln_bwd_tile<K><<<tiles, LN_WARPS * 32, smem, c->stream>>>(                                   \
        c->partials, dx, dout, x, mean, rstd, gamma, mod, mod_stride, T, w, x_stride, out_stride,  \
        (int)per_seq, tile_rows, dx_accumulate)

/* layernorm_bwd with dout fp32 or a bf16 gradient tensor (DT). */
template <class DT>
static void ln_bwd(umd_ctx *c, float *dx, float *dgamma, float *dbeta, float *dmod,
                   const DT *dout, const float *x, const float *mean, const float *rstd,
                   const float *gamma, const float *beta, const float *mod, int mod_stride, int n,
                   int T, int w, long x_stride, long out_stride, int dx_accumulate) {
    const long rows = (long)n * T;
    /* tiles of (2, w) partials the workspace holds: at least one per sequence for the one pass */
    const long cap = c->partials ? (long)(c->partials_floats / (2 * (size_t)w)) : 0;
    if (w <= LN_REG_WIDTH && cap >= n) {
        long per_seq = (T + LN_TILE - 1) / LN_TILE;
        if ((long)n * per_seq > cap) per_seq = cap / n;
        /* even tiles, none empty: tile_rows * per_seq >= T > tile_rows * (per_seq - 1) */
        const int tile_rows = (int)((T + per_seq - 1) / per_seq);
        per_seq = (T + tile_rows - 1) / tile_rows;
        const unsigned tiles = (unsigned)(n * per_seq);
        const size_t smem = (size_t)(2 + 2 * LN_WARPS) * w * sizeof(float); /* <= 40 KiB */
        LN_BY_GROUPS((w + 127) / 128, LN_BWD_TILE); /* 1 .. 8 groups: w <= LN_REG_WIDTH */
        k_ln_bwd_reduce<<<(w + 31) / 32, dim3(32, 32), 0, c->stream>>>(
            dgamma, dbeta, dmod, c->partials, gamma, beta, mod, mod_stride, n, (int)per_seq, w);
        CUDA_LAUNCHED(c, "layernorm_bwd");
        return;
    }
    long chunks = (long)colsum_chunks((size_t)rows);
    if (!c->partials || (size_t)chunks * 2 * w > c->partials_floats) {
        cuda_fail(c, "layernorm_bwd", "rows or width beyond the workspace limits");
        return;
    }
    k_ln_bwd_dx<<<cuda_blocks((size_t)rows, THREADS / 32), THREADS, 0, c->stream>>>(
        dx, dout, x, mean, rstd, gamma, mod, mod_stride, n, T, w, x_stride, out_stride,
        dx_accumulate);
    dim3 grid((unsigned)((w + 31) / 32), (unsigned)chunks), block(32, 8);
    k_ln_bwd_params<<<grid, block, 0, c->stream>>>(c->partials, dout, x, mean, rstd, mod, mod_stride,
                                                 n, T, w, x_stride, out_stride);
    k_ln_bwd_params_sum<<<(w + 127) / 128, 128, 0, c->stream>>>(dgamma, dbeta, c->partials, chunks, w);
    if (mod)
        k_ln_bwd_mod<<<cuda_blocks((size_t)n * w, 128), 128, 0, c->stream>>>(
            dmod, dout, x, mean, rstd, gamma, beta, mod_stride, n, T, w, x_stride, out_stride);
    CUDA_LAUNCHED(c, "layernorm_bwd");
}

/* dout fp32 or, with UMD_GRAD_X where the context keeps gradient tensors in bf16, a bf16 gradient
 * tensor (the dx of the product that read out). */
extern "C" void cuda_layernorm_bwd(umd_ctx *c, float *dx, float *dgamma, float *dbeta, float *dmod,
                                   const void *dout, const float *x, const float *mean,
                                   const float *rstd, const float *gamma, const float *beta,
                                   const float *mod, int mod_stride, int n, int T, int w,
                                   long x_stride, long out_stride, int dx_accumulate, int types) {
    CUDA_OP(c);
    if ((long)n * T <= 0 || w <= 0) return;
    if (cuda_gradx_bf16(c, types))
        ln_bwd(c, dx, dgamma, dbeta, dmod, (const __nv_bfloat16 *)dout, x, mean, rstd, gamma, beta,
               mod, mod_stride, n, T, w, x_stride, out_stride, dx_accumulate);
    else
        ln_bwd(c, dx, dgamma, dbeta, dmod, (const float *)dout, x, mean, rstd, gamma, beta, mod,
               mod_stride, n, T, w, x_stride, out_stride, dx_accumulate);
}

/* ---- gated residual ------------------------------------------------------------------------- */

/* A warp per token row (grid-stride); vec: 4-wide groups (w % 4 == 0, every operand aligned: 16
 * bytes, 8 for a bf16 y). y fp32 or bf16 (YT), the same fma on its fp32 values. out may alias x:
 * each element is read and written by the same thread. */
template <class YT>
__global__ static void k_gate_fwd(float *out, const float *x, const YT *y, const float *gate,
                                  int gate_stride, int T, int w, long rows, int vec) {
    const int lane = threadIdx.x % 32;
    const long step = (long)gridDim.x * (blockDim.x / 32);
    for (long r = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; r < rows; r += step) {
        const float *g = gate + (r / T) * gate_stride;
        const long e = r * w;
        if (vec) {
            for (int i = lane * 4; i < w; i += 128) {
                const float4 a = *reinterpret_cast<const float4 *>(x + e + i);
                const float4 v = cuda_values4(y + e + i);
                const float4 q = *reinterpret_cast<const float4 *>(g + i);
                *reinterpret_cast<float4 *>(out + e + i) =
                    make_float4(__fmaf_rn(q.x, v.x, a.x), __fmaf_rn(q.y, v.y, a.y),
                                __fmaf_rn(q.z, v.z, a.z), __fmaf_rn(q.w, v.w, a.w));
            }
        } else {
            for (int i = lane; i < w; i += 32)
                out[e + i] = __fmaf_rn(g[i], y_value(y[e + i]), x[e + i]);
        }
    }
}

template <class YT>
static void gate_fwd(umd_ctx *c, float *out, const float *x, const YT *y, const float *gate,
                     int gate_stride, int T, int w, long rows) {
    const int vec = w % 4 == 0 && gate_stride % 4 == 0 && ((uintptr_t)out & 15) == 0 &&
                    ((uintptr_t)x & 15) == 0 && aligned_out(y) && ((uintptr_t)gate & 15) == 0;
    k_gate_fwd<<<cuda_blocks((size_t)rows, THREADS / 32), THREADS, 0, c->stream>>>(
        out, x, y, gate, gate_stride, T, w, rows, vec);
}

extern "C" void cuda_gate_residual_fwd(umd_ctx *c, float *out, const float *x, const void *y,
                                       const float *gate, int gate_stride, int n, int T, int w,
                                       int y_type) {
    CUDA_OP(c);
    long rows = (long)n * T;
    if (rows <= 0 || w <= 0) return;
    if (cuda_flag_bf16(c, y_type, UMD_OPND_Y))
        gate_fwd(c, out, x, (const __nv_bfloat16 *)y, gate, gate_stride, T, w, rows);
    else
        gate_fwd(c, out, x, (const float *)y, gate, gate_stride, T, w, rows);
    CUDA_LAUNCHED(c, "gate_residual_fwd");
}

/* ---- gated residual and LayerNorm in one pass ------------------------------------------------ */

/* A warp per token row: x, y and the gate row read into registers, xo = x + gate y (the same
 * single-rounding fma as k_gate_fwd) written, then the row normalised from the registers as
 * k_ln_fwd_regs does: x and y read once, xo and out written once, 4 R w 4 bytes instead of the
 * two kernels' 5. */
template <int K, bool V, class OutT, class YT>
__device__ static void res_ln_row(float *xo, OutT *out, float *mean_r, float *rstd_r,
                                  const float *x, const YT *y, const float *g,
                                  const float *gamma, const float *beta, const float *shift,
                                  const float *scale, int w, int lane) {
    float xv[K][4];
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int c = (k * 32 + lane) * 4;
        float yv[4], gv[4];
        load4<V>(xv[k], x, c, w);
        load4<V>(yv, y, c, w);
        load4<V>(gv, g, c, w);
#pragma unroll
        for (int j = 0; j < 4; j++) xv[k][j] = __fmaf_rn(gv[j], yv[j], xv[k][j]); /* 0 past w */
        store4<V>(xo, c, w, xv[k]);
    }
    ln_fwd_regs<K, V>(out, mean_r, rstd_r, xv, gamma, beta, shift, scale, w, lane);
}

template <int K, class OutT, class YT>
__global__ static void __launch_bounds__(THREADS, K <= 6 ? 3 : 2)
    k_res_ln_fwd(float *xo, OutT *out, float *mean, float *rstd, const float *x, const YT *y,
                 const float *gate, int gate_stride, const float *gamma, const float *beta,
                 const float *mod, int mod_stride, int n, int T, int w) {
    const long r = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (r >= (long)n * T) return;
    const long b = r / T, e = r * w;
    const float *g = gate + b * gate_stride;
    const float *shift = mod ? mod + b * mod_stride : NULL;
    const float *scale = mod ? shift + w : NULL;
    if ((w & 3) == 0 && aligned16(x + e) && aligned_out(y + e) && aligned16(xo + e) &&
        aligned_out(out + e) && aligned16(g) && aligned16(gamma) && aligned16(beta) &&
        (!shift || aligned16(shift)))
        res_ln_row<K, true>(xo + e, out + e, mean + r, rstd + r, x + e, y + e, g, gamma, beta,
                            shift, scale, w, lane);
    else
        res_ln_row<K, false>(xo + e, out + e, mean + r, rstd + r, x + e, y + e, g, gamma, beta,
                             shift, scale, w, lane);
}

#define RES_LN_FWD(K)                                                                              \
    k_res_ln_fwd<K><<<blocks, THREADS, 0, c->stream>>>(xo, out, mean, rstd, x, y, gate,            \
                                                       gate_stride, gamma, beta, mod, mod_stride,  \
                                                       n, T, w)

/* The one kernel for rows of up to LN_REG_WIDTH (1), else nothing (0). */
template <class OutT, class YT>
static int res_ln_fwd(umd_ctx *c, float *xo, OutT *out, float *mean, float *rstd, const float *x,
                      const YT *y, const float *gate, int gate_stride, const float *gamma,
                      const float *beta, const float *mod, int mod_stride, int n, int T, int w) {
    const unsigned blocks = cuda_blocks((size_t)n * T, THREADS / 32);
    return LN_BY_GROUPS(w <= LN_REG_WIDTH ? (w + 127) / 128 : 0, RES_LN_FWD);
}

/* res_ln_fwd with y fp32 or (ybf) a bf16 branch tensor. */
template <class OutT>
static int res_ln_fwd_y(umd_ctx *c, int ybf, float *xo, OutT *out, float *mean, float *rstd,
                        const float *x, const void *y, const float *gate, int gate_stride,
                        const float *gamma, const float *beta, const float *mod, int mod_stride,
                        int n, int T, int w) {
    return ybf ? res_ln_fwd(c, xo, out, mean, rstd, x, (const __nv_bfloat16 *)y, gate,
                            gate_stride, gamma, beta, mod, mod_stride, n, T, w)
               : res_ln_fwd(c, xo, out, mean, rstd, x, (const float *)y, gate, gate_stride,
                            gamma, beta, mod, mod_stride, n, T, w);
}

extern "C" void cuda_residual_layernorm_fwd(umd_ctx *c, float *xo, void *out, float *mean,
                                            float *rstd, const float *x, const void *y,
                                            const float *gate, int gate_stride,
                                            const float *gamma, const float *beta,
                                            const float *mod, int mod_stride, int n, int T,
                                            int w, int types) {
    CUDA_OP(c);
    const long rows = (long)n * T;
    if (rows <= 0 || w <= 0) return;
    const int out_type = types & UMD_OPND, ybf = cuda_flag_bf16(c, types, UMD_OPND_Y);
    const int fused =
        c->fused_norm &&
        (cuda_opnd_bf16(c, out_type)
             ? res_ln_fwd_y(c, ybf, xo, (__nv_bfloat16 *)out, mean, rstd, x, y, gate, gate_stride,
                            gamma, beta, mod, mod_stride, n, T, w)
             : res_ln_fwd_y(c, ybf, xo, (float *)out, mean, rstd, x, y, gate, gate_stride, gamma,
                            beta, mod, mod_stride, n, T, w));
    if (!fused) {
        /* the two kernels: rows wider than the registers hold, or the fusion switched off */
        cuda_gate_residual_fwd(c, xo, x, y, gate, gate_stride, n, T, w, types & UMD_OPND_Y);
        cuda_layernorm_fwd(c, out, mean, rstd, xo, gamma, beta, mod, mod_stride, n, T, w,
                           (long)T * w, (long)T * w, out_type);
        return;
    }
    CUDA_LAUNCHED(c, "residual_layernorm_fwd");
}

/* The columns c .. c + 3 of one sequence (dy, dout, y at its row 0; g, dg its gate rows) over the
 * tokens ty, ty + GATE_LANES, ...; red (GATE_LANES, 128) adds the token lanes in lane order. dy
 * fp32 or a bf16 gradient tensor (DT: store4 rounds each fp32 product once); dgate sums the fp32
 * products either way. */
template <bool V, class YT, class DT>
__device__ static void gate_bwd_cols(DT *dy, float *dg, const float *dout, const YT *y,
                                     const float *g, int T, int w, int c, float *red) {
    const int tx = threadIdx.x, ty = threadIdx.y;
    float gv[4], s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    load4<V>(gv, g, c, w);
    for (int t = ty; t < T; t += GATE_LANES) {
        const long e = (long)t * w;
        float d[4], v[4], o[4];
        load4<V>(d, dout + e, c, w);
        load4<V>(v, y + e, c, w);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            o[j] = d[j] * gv[j];
            s[j] += d[j] * v[j];
        }
        store4<V>(dy + e, c, w, o);
    }
#pragma unroll
    for (int j = 0; j < 4; j++) red[ty * 128 + tx * 4 + j] = s[j];
    __syncthreads();
    if (ty == 0) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (c + j < w) {
                float v = s[j];
                for (int k = 1; k < GATE_LANES; k++) v += red[k * 128 + tx * 4 + j];
                dg[c + j] = v;
            }
        }
    }
}

/* A block (32, GATE_LANES) per (sequence b, 128 columns): blockIdx.x = b * col_blocks + column
 * block. vec: 4-wide groups (w % 4 == 0, every operand and gate_stride aligned: 16 bytes, 8 for a
 * bf16 y or dy). y fp32 or bf16 (YT), read as its fp32 values; dy fp32 or bf16 (DT). */
template <class YT, class DT>
__global__ static void k_gate_bwd(DT *dy, float *dgate, const float *dout, const YT *y,
                                  const float *gate, int gate_stride, int T, int w, int col_blocks,
                                  int vec) {
    __shared__ float red[GATE_LANES * 128];
    const long b = blockIdx.x / col_blocks;
    const int c = ((int)(blockIdx.x % col_blocks) * 32 + threadIdx.x) * 4;
    const long r0 = b * T * w;
    const float *g = gate + b * gate_stride;
    float *dg = dgate + b * gate_stride;
    if (vec)
        gate_bwd_cols<true>(dy + r0, dg, dout + r0, y + r0, g, T, w, c, red);
    else
        gate_bwd_cols<false>(dy + r0, dg, dout + r0, y + r0, g, T, w, c, red);
}

template <class YT, class DT>
static void gate_bwd(umd_ctx *c, DT *dy, float *dgate, const float *dout, const YT *y,
                     const float *gate, int gate_stride, int n, int T, int w) {
    const int col_blocks = (w + 127) / 128;
    const int vec = w % 4 == 0 && gate_stride % 4 == 0 && aligned_out(dy) &&
                    ((uintptr_t)dout & 15) == 0 && aligned_out(y) && ((uintptr_t)gate & 15) == 0;
    k_gate_bwd<<<(unsigned)((long)n * col_blocks), dim3(32, GATE_LANES), 0, c->stream>>>(
        dy, dgate, dout, y, gate, gate_stride, T, w, col_blocks, vec);
}

/* gate_bwd with y fp32 or (ybf) a bf16 branch tensor. */
template <class DT>
static void gate_bwd_y(umd_ctx *c, DT *dy, float *dgate, const float *dout, const void *y, int ybf,
                       const float *gate, int gate_stride, int n, int T, int w) {
    if (ybf) gate_bwd(c, dy, dgate, dout, (const __nv_bfloat16 *)y, gate, gate_stride, n, T, w);
    else gate_bwd(c, dy, dgate, dout, (const float *)y, gate, gate_stride, n, T, w);
}

extern "C" void cuda_gate_residual_bwd(umd_ctx *c, void *dyv, float *dgate, const float *dout,
                                       const void *y, const float *gate, int gate_stride, int n,
                                       int T, int w, int types) {
    CUDA_OP(c);
    if ((long)n * w <= 0 || n <= 0 || w <= 0) return;
    if (cuda_grad_bf16(c, types))
        gate_bwd_y(c, (__nv_bfloat16 *)dyv, dgate, dout, y, cuda_flag_bf16(c, types, UMD_OPND_Y),
                   gate, gate_stride, n, T, w);
    else
        gate_bwd_y(c, (float *)dyv, dgate, dout, y, cuda_flag_bf16(c, types, UMD_OPND_Y), gate,
                   gate_stride, n, T, w);
    CUDA_LAUNCHED(c, "gate_residual_bwd");
}
