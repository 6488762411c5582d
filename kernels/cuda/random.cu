/* random.cu: Philox draws on the device (philox.h, the same function as the CPU's), for
 * initialisation, timesteps, noise, label dropout and keep orders.
 *
 * Parallelisation: one thread per Philox draw (four elements) for the uniform and normal fills,
 * one thread per row for timesteps and labels, one block per row for the keep order: the row's
 * L 64-bit keys ((24-bit uniform << 32) | token, all distinct, so the order is unique) are sorted
 * in shared memory by a bitonic sort padded to a power of two (L <= 4096).
 * Numerics: uniforms, timesteps, labels and keep orders are bit-identical to the CPU's. The
 * normal draws compute the logarithm, sine and cosine in double and round once, within an ulp of
 * the CPU's libm floats (not always bit-equal: libm's float functions are not correctly rounded). */
#include "cuda_internal.h"
#include "philox.h"

#define THREADS 256
#define KEEP_MAX_L 4096

__global__ static void k_uniform(float *x, size_t n, uint64_t seed, uint32_t stream, uint32_t step,
                                 uint64_t first, uint64_t d0, size_t ndraw, float lo, float range) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < ndraw;
         k += (size_t)gridDim.x * blockDim.x) {
        uint64_t d = d0 + k;
        philox4 r = philox_draw(seed, stream, step, d);
        for (int e = 0; e < 4; e++) {
            uint64_t g = d * 4 + (uint64_t)e;
            if (g < first || g >= first + n) continue;
            /* the CPU's lo + range * u: the same bits when both compilers fuse it into one
             * multiply-add (nvcc does, and the CPU kernels are built with -ffp-contract=fast),
             * else within one rounding */
            x[g - first] = lo + range * philox_unit(r.v[e]);
        }
    }
}

__global__ static void k_normal(float *x, size_t n, uint64_t seed, uint32_t stream, uint32_t step,
                                uint64_t first, uint64_t d0, size_t ndraw, float mean, float std) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < ndraw;
         k += (size_t)gridDim.x * blockDim.x) {
        uint64_t d = d0 + k;
        philox4 r = philox_draw(seed, stream, step, d);
        float z[4];
        for (int pair = 0; pair < 2; pair++) {
            float u1 = philox_unit_open0(r.v[2 * pair]);
            float u2 = philox_unit(r.v[2 * pair + 1]);
            float lg = (float)log((double)u1);
            float rad = sqrtf(-2.0f * lg);
            float a = 6.283185307179586f * u2;
            z[2 * pair] = rad * (float)cos((double)a);
            z[2 * pair + 1] = rad * (float)sin((double)a);
        }
        for (int e = 0; e < 4; e++) {
            uint64_t g = d * 4 + (uint64_t)e;
            if (g < first || g >= first + n) continue;
            x[g - first] = mean + std * z[e];
        }
    }
}

static unsigned grid_for(size_t n) {
    unsigned b = cuda_blocks(n, THREADS);
    return b < 65536 ? b : 65536;
}

extern "C" void cuda_rand_uniform(umd_ctx *c, float *x, size_t n, uint64_t seed, uint32_t stream,
                                  uint32_t step, uint64_t first, float lo, float hi) {
    CUDA_OP(c);
    if (n == 0) return;
    uint64_t d0 = first / 4, d1 = (first + n - 1) / 4;
    size_t ndraw = (size_t)(d1 - d0 + 1);
    k_uniform<<<grid_for(ndraw), THREADS, 0, c->stream>>>(x, n, seed, stream, step, first, d0, ndraw,
                                                          lo, hi - lo);
    CUDA_LAUNCHED(c, "rand_uniform");
}

extern "C" void cuda_rand_normal(umd_ctx *c, float *x, size_t n, uint64_t seed, uint32_t stream,
                                 uint32_t step, uint64_t first, float mean, float std) {
    CUDA_OP(c);
    if (n == 0) return;
    uint64_t d0 = first / 4, d1 = (first + n - 1) / 4;
    size_t ndraw = (size_t)(d1 - d0 + 1);
    k_normal<<<grid_for(ndraw), THREADS, 0, c->stream>>>(x, n, seed, stream, step, first, d0, ndraw,
                                                         mean, std);
    CUDA_LAUNCHED(c, "rand_normal");
}

__global__ static void k_timesteps(int32_t *t_net, int row0, int n, int clean, int T, uint64_t seed,
                                   uint32_t step) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= n) return;
    if (clean) {
        t_net[b] = 0;
        return;
    }
    philox4 r = philox_draw(seed, PHILOX_TIMESTEP, step, (uint64_t)(row0 + b));
    uint32_t idx = (uint32_t)(((uint64_t)r.v[0] * (uint64_t)T) >> 32);
    t_net[b] = (int32_t)idx + 1;
}

extern "C" void cuda_draw_timesteps(umd_ctx *c, int32_t *t_net, int row0, int n, int clean, int T,
                                    uint64_t seed, uint32_t step) {
    CUDA_OP(c);
    if (n <= 0) return;
    k_timesteps<<<cuda_blocks((size_t)n, THREADS), THREADS, 0, c->stream>>>(t_net, row0, n, clean,
                                                                            T, seed, step);
    CUDA_LAUNCHED(c, "draw_timesteps");
}

__global__ static void k_labels(int32_t *y_used, const int32_t *y, int row0, int n, int clean,
                                float p_drop, int null_class, uint64_t seed, uint32_t step) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= n) return;
    if (clean) {
        y_used[b] = null_class;
        return;
    }
    philox4 r = philox_draw(seed, PHILOX_LABEL_DROP, step, (uint64_t)(row0 + b));
    y_used[b] = philox_unit(r.v[0]) < p_drop ? null_class : y[b];
}

extern "C" void cuda_draw_labels(umd_ctx *c, int32_t *y_used, const int32_t *y, int row0, int n,
                                 int clean, float p_drop, int null_class, uint64_t seed,
                                 uint32_t step) {
    CUDA_OP(c);
    if (n <= 0) return;
    k_labels<<<cuda_blocks((size_t)n, THREADS), THREADS, 0, c->stream>>>(y_used, y, row0, n, clean,
                                                                         p_drop, null_class, seed,
                                                                         step);
    CUDA_LAUNCHED(c, "draw_labels");
}

/* One block per row; Lp = L rounded up to a power of two, keys beyond L are UINT64_MAX. */
__global__ static void k_keep(int32_t *order, int32_t *slot, int row0, int L, int Lp, int keep,
                              uint64_t seed, uint32_t step) {
    extern __shared__ unsigned long long keys[];
    const int b = blockIdx.x;
    const uint64_t row = (uint64_t)(row0 + b);
    for (int l = threadIdx.x; l < Lp; l += blockDim.x) {
        if (l < L) {
            philox4 r = philox_draw(seed, PHILOX_MASK, step, row * (uint64_t)L + (uint64_t)l);
            keys[l] = ((unsigned long long)(r.v[0] >> 8) << 32) | (unsigned long long)l;
        } else {
            keys[l] = ~0ULL;
        }
    }
    __syncthreads();
    for (int k = 2; k <= Lp; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < Lp; i += blockDim.x) {
                int ixj = i ^ j;
                if (ixj > i) {
                    unsigned long long a = keys[i], bb = keys[ixj];
                    int up = (i & k) == 0;
                    if ((a > bb) == up) {
                        keys[i] = bb;
                        keys[ixj] = a;
                    }
                }
            }
            __syncthreads();
        }
    }
    int32_t *o = order + (size_t)b * L, *s = slot + (size_t)b * L;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        int l = (int)(keys[j] & 0xffffffffULL);
        o[j] = l;
        s[l] = j < keep ? j : -1;
    }
}

extern "C" void cuda_draw_keep(umd_ctx *c, int32_t *order, int32_t *slot, int row0, int n, int L,
                               int keep, uint64_t seed, uint32_t step) {
    CUDA_OP(c);
    if (n <= 0 || L <= 0) return;
    if (L > KEEP_MAX_L) {
        cuda_fail(c, "draw_keep", "more than 4096 tokens per image");
        return;
    }
    int Lp = 1;
    while (Lp < L) Lp <<= 1;
    int threads = Lp < 512 ? (Lp < 32 ? 32 : Lp) : 512;
    k_keep<<<n, threads, (size_t)Lp * sizeof(unsigned long long), c->stream>>>(order, slot, row0, L,
                                                                                Lp, keep, seed, step);
    CUDA_LAUNCHED(c, "draw_keep");
}
