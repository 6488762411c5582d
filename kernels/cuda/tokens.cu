/* tokens.cu: moving tokens around (label embedding rows, the gather of visible tokens into the
 * encoder, the decoder's input, the cls mean) and the masked MSE losses.
 *
 * Parallelisation: a thread per output element for everything written per row; sums over rows
 * into parameter gradients (positional embeddings, cls and mask tokens, the label table) by a
 * thread per parameter element looping over the rows in order, starting from the gradient's
 * current value as the CPU does, so those sums round exactly as the CPU's. The mask token's
 * gradient sums over (rows, tokens): per-token partials in the workspace, then a thread per
 * column over the tokens. The loss: a block per row, a thread per token (its squared errors in
 * fp32 in the CPU's order and its dpred), the row's sum in double by a shared-memory tree, and
 * the rows added in order by one thread. */
#include <math.h>
#include "cuda_internal.h"

#define THREADS 256

#define FOR_EACH(i, n)                                                                             \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);                         \
         i += (size_t)gridDim.x * blockDim.x)

static inline unsigned grid_for(size_t n) {
    unsigned b = cuda_blocks(n, THREADS);
    return b < 65536 ? b : 65536;
}

#define LAUNCH(c, name, kern, n, ...)                                                              \
    do {                                                                                           \
        if ((c)->failed || (n) == 0) break;                                                        \
        kern<<<grid_for(n), THREADS, 0, (c)->stream>>>(__VA_ARGS__);                               \
        CUDA_LAUNCHED(c, name);                                                                    \
    } while (0)

__global__ static void k_embed_fwd(float *out, const float *table, const int32_t *idx, int n, int w) {
    FOR_EACH(e, (size_t)n * w) out[e] = table[(size_t)idx[e / w] * w + e % w];
}

__global__ static void k_embed_bwd(float *dtable, const float *dout, const int32_t *idx, int n, int w) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= w) return;
    for (int b = 0; b < n; b++) dtable[(size_t)idx[b] * w + i] += dout[(size_t)b * w + i];
}

extern "C" void cuda_embed_rows_fwd(umd_ctx *c, float *out, const float *table, const int32_t *idx,
                                    int n, int w) {
    LAUNCH(c, "embed_rows_fwd", k_embed_fwd, (size_t)n * w, out, table, idx, n, w);
}

extern "C" void cuda_embed_rows_bwd(umd_ctx *c, float *dtable, const float *dout,
                                    const int32_t *idx, int n, int w) {
    LAUNCH(c, "embed_rows_bwd", k_embed_bwd, (size_t)w, dtable, dout, idx, n, w);
}

__global__ static void k_gather_fwd(float *xenc, const float *emb, const float *pos,
                                    const float *cls, const int32_t *order, int n, int L, int keep,
                                    int ncls, int w) {
    const int T = ncls + keep;
    FOR_EACH(e, (size_t)n * T * w) {
        size_t b = e / ((size_t)T * w);
        int t = (int)(e / w % T), i = (int)(e % w);
        if (t < ncls) {
            xenc[e] = cls[(size_t)t * w + i];
        } else {
            int l = order[b * L + (t - ncls)];
            xenc[e] = emb[(b * L + l) * w + i] + pos[(size_t)l * w + i];
        }
    }
}

extern "C" void cuda_gather_tokens_fwd(umd_ctx *c, float *xenc, const float *emb, const float *pos,
                                       const float *cls, const int32_t *order, int n, int L,
                                       int keep, int ncls, int w) {
    LAUNCH(c, "gather_tokens_fwd", k_gather_fwd, (size_t)n * (ncls + keep) * w, xenc, emb, pos, cls,
           order, n, L, keep, ncls, w);
}

__global__ static void k_gather_bwd_emb(float *demb, const float *dxenc, const int32_t *slot, int n,
                                        int L, int T, int ncls, int w) {
    FOR_EACH(e, (size_t)n * L * w) {
        size_t bl = e / w;
        int i = (int)(e % w);
        size_t b = bl / L;
        int s = slot[bl];
        demb[e] = s >= 0 ? dxenc[(b * T + ncls + s) * w + i] : 0.0f;
    }
}

/* a thread per dpos element (l, i), then per dcls element (k, i) beyond L * w */
__global__ static void k_gather_bwd_params(float *dpos, float *dcls, const float *dxenc,
                                           const int32_t *slot, int n, int L, int T, int ncls,
                                           int w) {
    FOR_EACH(e, (size_t)(L + ncls) * w) {
        int i = (int)(e % w);
        long r = (long)(e / w);
        if (r < L) {
            int l = (int)r;
            float acc = dpos[(size_t)l * w + i];
            for (int b = 0; b < n; b++) {
                int s = slot[(size_t)b * L + l];
                if (s >= 0) acc += dxenc[((size_t)b * T + ncls + s) * w + i];
            }
            dpos[(size_t)l * w + i] = acc;
        } else {
            int k = (int)(r - L);
            float acc = dcls[(size_t)k * w + i];
            for (int b = 0; b < n; b++) acc += dxenc[((size_t)b * T + k) * w + i];
            dcls[(size_t)k * w + i] = acc;
        }
    }
}

extern "C" void cuda_gather_tokens_bwd(umd_ctx *c, float *demb, float *dpos, float *dcls,
                                       const float *dxenc, const int32_t *slot, int n, int L,
                                       int keep, int ncls, int w) {
    const int T = ncls + keep;
    LAUNCH(c, "gather_tokens_bwd", k_gather_bwd_emb, (size_t)n * L * w, demb, dxenc, slot, n, L, T,
           ncls, w);
    LAUNCH(c, "gather_tokens_bwd", k_gather_bwd_params, (size_t)(L + ncls) * w, dpos, dcls, dxenc,
           slot, n, L, T, ncls, w);
}

__global__ static void k_dec_in_fwd(float *xdec, const float *rep, const float *enc,
                                    const float *mask, const float *pos, const int32_t *slot, int n,
                                    int L, int Tenc, int ncls, int w) {
    const int Td = 1 + L;
    FOR_EACH(e, (size_t)n * Td * w) {
        size_t b = e / ((size_t)Td * w);
        int t = (int)(e / w % Td), i = (int)(e % w);
        if (t == 0) {
            xdec[e] = rep[b * w + i];
        } else {
            int l = t - 1, s = slot[b * L + l];
            float src = s >= 0 ? enc[(b * Tenc + ncls + s) * w + i] : mask[i];
            xdec[e] = src + pos[(size_t)l * w + i];
        }
    }
}

extern "C" void cuda_decoder_input_fwd(umd_ctx *c, float *xdec, const float *rep, const float *enc,
                                       const float *mask, const float *pos, const int32_t *slot,
                                       int n, int L, int Tenc, int ncls, int w) {
    LAUNCH(c, "decoder_input_fwd", k_dec_in_fwd, (size_t)n * (1 + L) * w, xdec, rep, enc, mask, pos,
           slot, n, L, Tenc, ncls, w);
}

/* drep rows and the visible rows of denc: a thread per dxdec element */
__global__ static void k_dec_in_bwd_rows(float *drep, float *denc, const float *dxdec,
                                         const int32_t *slot, int n, int L, int Tenc, int ncls,
                                         int w) {
    const int Td = 1 + L;
    FOR_EACH(e, (size_t)n * Td * w) {
        size_t b = e / ((size_t)Td * w);
        int t = (int)(e / w % Td), i = (int)(e % w);
        if (t == 0) {
            drep[b * w + i] = dxdec[e];
        } else {
            int s = slot[b * L + (t - 1)];
            if (s >= 0) denc[(b * Tenc + ncls + s) * w + i] = dxdec[e];
        }
    }
}

/* dpos (l, i) over the rows in order; the token's masked-row sum into partial (l, i) */
__global__ static void k_dec_in_bwd_pos(float *dpos, float *partial, const float *dxdec,
                                        const int32_t *slot, int n, int L, int w) {
    const int Td = 1 + L;
    FOR_EACH(e, (size_t)L * w) {
        int l = (int)(e / w), i = (int)(e % w);
        float acc = dpos[e], m = 0.0f;
        for (int b = 0; b < n; b++) {
            float g = dxdec[((size_t)b * Td + 1 + l) * w + i];
            acc += g;
            if (slot[(size_t)b * L + l] < 0) m += g;
        }
        dpos[e] = acc;
        partial[e] = m;
    }
}

__global__ static void k_dec_in_bwd_mask(float *dmask, const float *partial, int L, int w) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= w) return;
    float acc = dmask[i];
    for (int l = 0; l < L; l++) acc += partial[(size_t)l * w + i];
    dmask[i] = acc;
}

extern "C" void cuda_decoder_input_bwd(umd_ctx *c, float *drep, float *denc, float *dmask,
                                       float *dpos, const float *dxdec, const int32_t *slot, int n,
                                       int L, int Tenc, int ncls, int w) {
    CUDA_OP(c);
    if (!c->partials || (size_t)L * w > c->partials_floats) {
        cuda_fail(c, "decoder_input_bwd", "tokens beyond the workspace limits");
        return;
    }
    LAUNCH(c, "decoder_input_bwd", k_dec_in_bwd_rows, (size_t)n * (1 + L) * w, drep, denc, dxdec,
           slot, n, L, Tenc, ncls, w);
    LAUNCH(c, "decoder_input_bwd", k_dec_in_bwd_pos, (size_t)L * w, dpos, c->partials, dxdec, slot,
           n, L, w);
    LAUNCH(c, "decoder_input_bwd", k_dec_in_bwd_mask, (size_t)w, dmask, c->partials, L, w);
}

__global__ static void k_mean_fwd(float *out, const float *x, int n, int T, int k, int w) {
    const float inv = 1.0f / (float)k;
    FOR_EACH(e, (size_t)n * w) {
        size_t b = e / w;
        int i = (int)(e % w);
        float s = 0.0f;
        for (int j = 0; j < k; j++) s += x[(b * T + j) * w + i];
        out[e] = s * inv;
    }
}

__global__ static void k_mean_bwd(float *dx, const float *dout, int n, int T, int k, int w) {
    const float inv = 1.0f / (float)k;
    FOR_EACH(e, (size_t)n * k * w) {
        size_t b = e / ((size_t)k * w);
        int j = (int)(e / w % k), i = (int)(e % w);
        dx[(b * T + j) * w + i] = dout[b * w + i] * inv;
    }
}

extern "C" void cuda_token_mean_fwd(umd_ctx *c, float *out, const float *x, int n, int T, int k,
                                    int w) {
    LAUNCH(c, "token_mean_fwd", k_mean_fwd, (size_t)n * w, out, x, n, T, k, w);
}

extern "C" void cuda_token_mean_bwd(umd_ctx *c, float *dx, const float *dout, int n, int T, int k,
                                    int w) {
    LAUNCH(c, "token_mean_bwd", k_mean_bwd, (size_t)n * k * w, dx, dout, n, T, k, w);
}

/* Block b = row b; rows[b] = the row's sum of squares. */
__global__ static void k_mse_rows(double *rows, float *dpred, const float *pred, const float *target,
                                  const int32_t *slot, int L, int pp, int C, int half, int select,
                                  float grad_scale) {
    __shared__ double sh[THREADS];
    const int b = blockIdx.x, P = pp * C, P2 = 2 * P;
    double acc = 0.0;
    for (int l = threadIdx.x; l < L; l += blockDim.x) {
        int s = slot[(size_t)b * L + l];
        if (select == UMD_SEL_VISIBLE && s < 0) continue;
        if (select == UMD_SEL_MASKED && s >= 0) continue;
        size_t tokn = (size_t)b * L + l;
        const float *pr = pred + tokn * P2 + (size_t)half * C;
        const float *tg = target + tokn * P;
        float *dp = dpred + tokn * P2 + (size_t)half * C;
        float tok = 0.0f;
        for (int q = 0; q < pp; q++)
            for (int ch = 0; ch < C; ch++) {
                float d = pr[q * 2 * C + ch] - tg[q * C + ch];
                tok += d * d;
                dp[q * 2 * C + ch] += grad_scale * 2.0f * d;
            }
        acc += (double)tok;
    }
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (int h = THREADS / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) rows[b] = sh[0];
}

__global__ static void k_sum_rows(double *out, const double *rows, int n) {
    double t = 0.0;
    for (int b = 0; b < n; b++) t += rows[b];
    *out = t;
}

extern "C" void cuda_mse_masked(umd_ctx *c, float *dpred, const float *pred, const float *target,
                                const int32_t *slot, int n, int L, int pp, int C, int half,
                                int select, float grad_scale, double *sum) {
    CUDA_OP(c);
    if (n <= 0) {
        cuda_check(c, cudaMemsetAsync(sum, 0, sizeof(double), c->stream), "mse_masked");
        return;
    }
    if (!c->dsum || n > c->lim.max_rows) {
        cuda_fail(c, "mse_masked", "rows beyond the workspace limits");
        return;
    }
    double *rows = c->dsum + CUDA_SUM_BLOCKS;
    k_mse_rows<<<n, THREADS, 0, c->stream>>>(rows, dpred, pred, target, slot, L, pp, C, half, select,
                                             grad_scale);
    k_sum_rows<<<1, 1, 0, c->stream>>>(sum, rows, n);
    CUDA_LAUNCHED(c, "mse_masked");
}
