/* norm.cu: LayerNorm with affine and adaLN modulation (forward, backward) and the gated residual.
 *
 * Parallelisation:
 *   layernorm_fwd    one warp per token row: two passes over the row (mean, then the variance
 *                    around it, as the CPU) with warp shuffles, then the normalised, affine and
 *                    modulated row in one more pass (normalise + affine + modulate fused).
 *   layernorm_bwd    one warp per token row for dx (the row's two sums by shuffles); dgamma and
 *                    dbeta by chunks of CUDA_COLSUM_CHUNK rows, a block per (chunk, 32 columns)
 *                    summing its rows in a fixed order into the workspace's partials, then a
 *                    thread per column adding the chunks in order; dshift and dscale by a thread per
 *                    (sequence, column) summing the sequence's tokens in order.
 *   gate_residual    elementwise; dgate by a thread per (sequence, column) over the tokens.
 * No atomics: the results are the same on every run. Numerics: fp32 throughout, as the CPU; the
 * within-row sums are tree-ordered (warp shuffles) instead of sequential. */
#include "cuda_internal.h"

#define LN_EPS 1e-6f
#define THREADS 256

__device__ static inline float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__global__ static void k_ln_fwd(float *out, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, const float *mod,
                                int mod_stride, int n, int T, int w, long x_stride,
                                long out_stride) {
    long r = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= (long)n * T) return;
    long b = r / T, t = r % T;
    const float *xr = x + b * x_stride + t * w;
    float *yr = out + b * out_stride + t * w;
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
            yr[i] = y * (1.0f + scale[i]) + shift[i];
        }
    } else {
        for (int i = lane; i < w; i += 32) yr[i] = (xr[i] - mu) * rs * gamma[i] + beta[i];
    }
}

extern "C" void cuda_layernorm_fwd(umd_ctx *c, float *out, float *mean, float *rstd,
                                   const float *x, const float *gamma, const float *beta,
                                   const float *mod, int mod_stride, int n, int T, int w,
                                   long x_stride, long out_stride) {
    CUDA_OP(c);
    long rows = (long)n * T;
    if (rows <= 0) return;
    k_ln_fwd<<<cuda_blocks((size_t)rows, THREADS / 32), THREADS, 0, c->stream>>>(
        out, mean, rstd, x, gamma, beta, mod, mod_stride, n, T, w, x_stride, out_stride);
    CUDA_LAUNCHED(c, "layernorm_fwd");
}

/* dx of one row per warp. */
__global__ static void k_ln_bwd_dx(float *dx, const float *dout, const float *x, const float *mean,
                                   const float *rstd, const float *gamma, const float *mod,
                                   int mod_stride, int n, int T, int w, long x_stride,
                                   long out_stride, int acc) {
    long r = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= (long)n * T) return;
    long b = r / T, t = r % T;
    const float *xr = x + b * x_stride + t * w;
    const float *dor = dout + b * out_stride + t * w;
    float *dxr = dx + b * x_stride + t * w;
    const float *scale = mod ? mod + b * mod_stride + w : NULL;
    float mu = mean[r], rs = rstd[r];
    float s1 = 0.0f, s2 = 0.0f;
    for (int i = lane; i < w; i += 32) {
        float xh = (xr[i] - mu) * rs;
        float dy = scale ? dor[i] * (1.0f + scale[i]) : dor[i];
        float dxh = dy * gamma[i];
        s1 += dxh;
        s2 += dxh * xh;
    }
    s1 = warp_sum(s1) / (float)w;
    s2 = warp_sum(s2) / (float)w;
    for (int i = lane; i < w; i += 32) {
        float xh = (xr[i] - mu) * rs;
        float dy = scale ? dor[i] * (1.0f + scale[i]) : dor[i];
        float g = rs * (dy * gamma[i] - s1 - xh * s2);
        if (acc) dxr[i] += g;
        else dxr[i] = g;
    }
}

/* partials[chunk][0 .. w) = sum of dy xhat, [w .. 2w) = sum of dy, over the chunk's rows. A block
 * is 32 columns x 8 row lanes: lane y sums rows y, y + 8, ... of the chunk (a warp reads 32
 * consecutive floats of a row), then the 8 lane sums are added in lane order in shared memory. */
__global__ static void k_ln_bwd_params(float *partials, const float *dout, const float *x,
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
            float d = dout[b * out_stride + t * w + i];
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
__global__ static void k_ln_bwd_mod(float *dmod, const float *dout, const float *x,
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
        float d = dout[b * out_stride + (long)t * w + i];
        sc += d * y;
        ss += d;
    }
    dmod[b * mod_stride + i] = ss;
    dmod[b * mod_stride + w + i] = sc;
}

extern "C" void cuda_layernorm_bwd(umd_ctx *c, float *dx, float *dgamma, float *dbeta, float *dmod,
                                   const float *dout, const float *x, const float *mean,
                                   const float *rstd, const float *gamma, const float *beta,
                                   const float *mod, int mod_stride, int n, int T, int w,
                                   long x_stride, long out_stride, int dx_accumulate) {
    CUDA_OP(c);
    long rows = (long)n * T;
    if (rows <= 0) return;
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

/* A grid row per token row (grid-stride past 65535), threads over the width. */
__global__ static void k_gate_fwd(float *out, const float *x, const float *y, const float *gate,
                                  int gate_stride, int T, int w, long rows) {
    for (long r = blockIdx.y; r < rows; r += gridDim.y) {
        const float *g = gate + (r / T) * gate_stride;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < w; i += gridDim.x * blockDim.x) {
            long e = r * w + i;
            out[e] = x[e] + g[i] * y[e];
        }
    }
}

extern "C" void cuda_gate_residual_fwd(umd_ctx *c, float *out, const float *x, const float *y,
                                       const float *gate, int gate_stride, int n, int T, int w) {
    CUDA_OP(c);
    long rows = (long)n * T;
    if (rows <= 0 || w <= 0) return;
    dim3 grid(cuda_blocks((size_t)w, 128), (unsigned)(rows < 65535 ? rows : 65535));
    k_gate_fwd<<<grid, 128, 0, c->stream>>>(out, x, y, gate, gate_stride, T, w, rows);
    CUDA_LAUNCHED(c, "gate_residual_fwd");
}

/* A thread per (sequence, column): dy of its column's tokens and dgate. */
__global__ static void k_gate_bwd(float *dy, float *dgate, const float *dout, const float *y,
                                  const float *gate, int gate_stride, int n, int T, int w) {
    long e = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long)n * w) return;
    long b = e / w;
    int i = (int)(e % w);
    float g = gate[b * gate_stride + i], s = 0.0f;
    for (int t = 0; t < T; t++) {
        long k = (b * T + t) * w + i;
        dy[k] = dout[k] * g;
        s += dout[k] * y[k];
    }
    dgate[b * gate_stride + i] = s;
}

extern "C" void cuda_gate_residual_bwd(umd_ctx *c, float *dy, float *dgate, const float *dout,
                                       const float *y, const float *gate, int gate_stride, int n,
                                       int T, int w) {
    CUDA_OP(c);
    if ((long)n * w <= 0) return;
    k_gate_bwd<<<cuda_blocks((size_t)n * w, 128), 128, 0, c->stream>>>(dy, dgate, dout, y, gate,
                                                                       gate_stride, n, T, w);
    CUDA_LAUNCHED(c, "gate_residual_bwd");
}
