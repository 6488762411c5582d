/* elementwise.cu: fill, copy, add, GELU-tanh and SiLU (forward, backward), the optimiser's
 * kernels (sum of squares, AdamW over the whole parameter arena in one launch, EMA), and the
 * diffusion inputs (patchify, unpatchify, noise mix, timestep embedding).
 *
 * Parallelisation: one thread per element in grid-stride loops (grids capped at 65536 blocks of
 * 256). Numerics follow the CPU twins expression for expression (GELU as x sigmoid(2u); AdamW in
 * PyTorch's order) with expf / sqrtf instead of the CPU's polynomial exp, so results agree to a
 * few ulp. The sum of squares runs on a fixed grid of CUDA_SUM_BLOCKS blocks: each block sums its
 * grid-stride share in double, and one block adds the partials in block order, so the result is
 * the same on every run. */
#include "cuda_internal.h"

#define THREADS 256

static inline unsigned grid_for(size_t n) {
    unsigned b = cuda_blocks(n, THREADS);
    return b < 65536 ? b : 65536;
}

#define FOR_EACH(i, n)                                                                             \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);                         \
         i += (size_t)gridDim.x * blockDim.x)

__global__ static void k_fill(float *x, size_t n, float v) { FOR_EACH(i, n) x[i] = v; }
__global__ static void k_add(float *y, const float *a, const float *b, size_t n) {
    FOR_EACH(i, n) y[i] = a[i] + b[i];
}
__global__ static void k_gelu_fwd(float *y, const float *x, size_t n) {
    FOR_EACH(i, n) y[i] = cuda_gelu_tanh(x[i]);
}
__global__ static void k_gelu_bwd(float *dx, const float *dy, const float *x, size_t n) {
    FOR_EACH(i, n) dx[i] = dy[i] * cuda_gelu_tanh_grad(x[i]);
}
__global__ static void k_silu_fwd(float *y, const float *x, size_t n) {
    FOR_EACH(i, n) y[i] = x[i] / (1.0f + expf(-x[i]));
}
__global__ static void k_silu_bwd(float *dx, const float *dy, const float *x, size_t n) {
    FOR_EACH(i, n) {
        float s = 1.0f / (1.0f + expf(-x[i]));
        dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}

#define LAUNCH1(c, name, kern, n, ...)                                                             \
    do {                                                                                           \
        CUDA_OP(c);                                                                                \
        if ((n) == 0) return;                                                                      \
        kern<<<grid_for(n), THREADS, 0, (c)->stream>>>(__VA_ARGS__);                               \
        CUDA_LAUNCHED(c, name);                                                                    \
    } while (0)

extern "C" void cuda_fill(umd_ctx *c, float *x, size_t n, float value) {
    LAUNCH1(c, "fill", k_fill, n, x, n, value);
}
extern "C" void cuda_copy(umd_ctx *c, float *dst, const float *src, size_t n) {
    CUDA_OP(c);
    if (n == 0 || dst == src) return;
    cuda_check(c, cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, c->stream), "copy");
}
extern "C" void cuda_add(umd_ctx *c, float *y, const float *a, const float *b, size_t n) {
    LAUNCH1(c, "add", k_add, n, y, a, b, n);
}
extern "C" void cuda_gelu_fwd(umd_ctx *c, float *y, const float *x, size_t n) {
    LAUNCH1(c, "gelu_fwd", k_gelu_fwd, n, y, x, n);
}
extern "C" void cuda_gelu_bwd(umd_ctx *c, float *dx, const float *dy, const float *x, size_t n) {
    LAUNCH1(c, "gelu_bwd", k_gelu_bwd, n, dx, dy, x, n);
}
extern "C" void cuda_silu_fwd(umd_ctx *c, float *y, const float *x, size_t n) {
    LAUNCH1(c, "silu_fwd", k_silu_fwd, n, y, x, n);
}
extern "C" void cuda_silu_bwd(umd_ctx *c, float *dx, const float *dy, const float *x, size_t n) {
    LAUNCH1(c, "silu_bwd", k_silu_bwd, n, dx, dy, x, n);
}

/* ---- optimiser -------------------------------------------------------------------------------- */

__global__ static void k_sumsq_partial(double *part, const float *x, size_t n) {
    __shared__ double s[THREADS];
    double acc = 0.0;
    FOR_EACH(i, n) {
        float v = x[i];
        acc += (double)(v * v);
    }
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int h = THREADS / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) s[threadIdx.x] += s[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = s[0];
}

/* One block: out = sum of part[0 .. n) in a fixed tree order. */
__global__ static void k_sum_partials(double *out, const double *part, int n) {
    __shared__ double s[THREADS];
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += THREADS) acc += part[i];
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int h = THREADS / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) s[threadIdx.x] += s[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = s[0];
}

extern "C" void cuda_sumsq(umd_ctx *c, double *out, const float *x, size_t n) {
    CUDA_OP(c);
    if (!c->dsum) {
        cuda_fail(c, "sumsq", "no workspace (set_workspace was not called)");
        return;
    }
    if (n == 0) {
        cuda_check(c, cudaMemsetAsync(out, 0, sizeof(double), c->stream), "sumsq");
        return;
    }
    k_sumsq_partial<<<CUDA_SUM_BLOCKS, THREADS, 0, c->stream>>>(c->dsum, x, n);
    k_sum_partials<<<1, THREADS, 0, c->stream>>>(out, c->dsum, CUDA_SUM_BLOCKS);
    CUDA_LAUNCHED(c, "sumsq");
}

/* The update's scalars come from device memory (a recorded step replays with new ones); every
 * thread derives the same factors from them, as the CPU does. */
__global__ static void k_adamw(float *p, const float *g, float *m, float *v, const uint8_t *decay,
                               size_t n, const umd_adamw_args *a, const double *sumsq) {
    const float b1 = a->beta1, b2 = a->beta2, eps = a->eps;
    const float gs = a->max_norm > 0.0f ? umd_clip_factor(a->max_norm, *sumsq) : 1.0f;
    const float shrink = umd_adamw_shrink(a->lr, a->weight_decay);
    const float step = a->lr / a->bias_correction1;
    const float bc2s = sqrtf(a->bias_correction2);
    FOR_EACH(i, n) {
        float gi = g[i] * gs;
        float pi = decay[i] ? p[i] * shrink : p[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step * mi / (sqrtf(vi) / bc2s + eps);
    }
}

extern "C" void cuda_adamw(umd_ctx *c, float *p, const float *g, float *m, float *v,
                           const uint8_t *decay, size_t n, const umd_adamw_args *a,
                           const double *sumsq) {
    LAUNCH1(c, "adamw", k_adamw, n, p, g, m, v, decay, n, a, sumsq);
}

__global__ static void k_ema(float *ema, const float *p, size_t n, float decay, float rest) {
    FOR_EACH(i, n) ema[i] = decay * ema[i] + rest * p[i];
}

extern "C" void cuda_ema(umd_ctx *c, float *ema, const float *p, size_t n, float decay) {
    LAUNCH1(c, "ema", k_ema, n, ema, p, n, decay, 1.0f - decay);
}

/* ---- diffusion inputs ------------------------------------------------------------------------- */

/* One thread per image value; tok[b, l, (pi, pj, ch)] <-> img[b, ch, gi p + pi, gj p + pj]. */
__global__ static void k_patchify(float *tok, const float *img, int n, int C, int H, int W, int p,
                                  int to_tokens) {
    const int gw = W / p, L = (H / p) * gw, P = p * p * C;
    size_t total = (size_t)n * L * P;
    FOR_EACH(i, total) {
        size_t b = i / ((size_t)L * P);
        int r = (int)(i % ((size_t)L * P));
        int l = r / P, q = r % P;
        int pi = q / (p * C), pj = (q / C) % p, ch = q % C;
        int gi = l / gw, gj = l % gw;
        size_t im = ((b * C + ch) * H + (size_t)(gi * p + pi)) * W + (size_t)(gj * p + pj);
        if (to_tokens) tok[i] = img[im];
        else ((float *)img)[im] = tok[i];
    }
}

extern "C" void cuda_patchify(umd_ctx *c, float *tok, const float *img, int n, int C, int H, int W,
                              int p) {
    size_t total = (size_t)n * C * H * W;
    LAUNCH1(c, "patchify", k_patchify, total, tok, img, n, C, H, W, p, 1);
}

extern "C" void cuda_unpatchify(umd_ctx *c, float *img, const float *tok, int n, int C, int H,
                                int W, int p) {
    size_t total = (size_t)n * C * H * W;
    LAUNCH1(c, "unpatchify", k_patchify, total, (float *)tok, img, n, C, H, W, p, 0);
}

__global__ static void k_noise_mix(float *xt, const float *x0, const float *eps,
                                   const int32_t *t_net, const float *sa, const float *s1a, int n,
                                   int D) {
    size_t total = (size_t)n * D;
    FOR_EACH(i, total) {
        int idx = t_net[i / D] - 1;
        xt[i] = sa[idx] * x0[i] + s1a[idx] * eps[i];
    }
}

extern "C" void cuda_noise_mix(umd_ctx *c, float *xt, const float *x0, const float *eps,
                               const int32_t *t_net, const float *sqrt_abar,
                               const float *sqrt_1m_abar, int n, int D) {
    size_t total = (size_t)n * D;
    LAUNCH1(c, "noise_mix", k_noise_mix, total, xt, x0, eps, t_net, sqrt_abar, sqrt_1m_abar, n, D);
}

/* In double, as the CPU (t f reaches 1000 radians). */
__global__ static void k_timestep_embed(float *out, const int32_t *t_net, int n, int w) {
    const int half = w / 2;
    const double lnmax = log(10000.0);
    size_t total = (size_t)n * w;
    FOR_EACH(e, total) {
        int b = (int)(e / w), i = (int)(e % w);
        float v = 0.0f;
        if (i < 2 * half) {
            int k = i < half ? i : i - half;
            double t = (double)t_net[b];
            double f = half > 1 ? exp(-(double)k * lnmax / (double)(half - 1)) : 1.0;
            v = i < half ? (float)sin(t * f) : (float)cos(t * f);
        }
        out[e] = v;
    }
}

extern "C" void cuda_timestep_embed(umd_ctx *c, float *out, const int32_t *t_net, int n, int w) {
    size_t total = (size_t)n * w;
    LAUNCH1(c, "timestep_embed", k_timestep_embed, total, out, t_net, n, w);
}
