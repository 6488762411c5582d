/* optim.c: the optimiser's element-wise kernels: sum of squares (for the global gradient norm),
 * AdamW with a per-element decay mask, and the EMA of the weights.
 *
 * Parallelisation: contiguous chunks per thread. The sum of squares adds fixed blocks of 4096
 * values in fp32 (vectorised), each thread adds its blocks in double, and the threads' partials
 * are added in thread order: deterministic for a given thread count. AdamW follows torch.optim.AdamW's arithmetic order
 * (decoupled decay first, then m / (sqrt(v) / sqrt(bc2) + eps) * lr / bc1) so the PyTorch twin
 * agrees to rounding. */
#include <math.h>
#include "cpu.h"

#define SUMSQ_BLOCK 4096

void cpu_sumsq(umd_ctx *c, double *out, const float *x, size_t n) {
    long nblocks = (long)((n + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK);
    double part[CPU_MAX_THREADS];
    int used = 1;
    CPU_PARALLEL(cpu_team(c, (double)n), {
        if (tid == 0) used = team;
        long lo, hi;
        cpu_split(nblocks, tid, team, &lo, &hi);
        double acc = 0.0;
        for (long k = lo; k < hi; k++) {
            size_t i0 = (size_t)k * SUMSQ_BLOCK, i1 = i0 + SUMSQ_BLOCK < n ? i0 + SUMSQ_BLOCK : n;
            float s = 0.0f;
            _Pragma("omp simd reduction(+:s)")
            for (size_t i = i0; i < i1; i++) s += x[i] * x[i];
            acc += (double)s;
        }
        part[tid] = acc;
    });
    double total = 0.0;
    for (int t = 0; t < used; t++) total += part[t];
    *out = total;
}

void cpu_adamw(umd_ctx *c, float *p, const float *g, float *m, float *v, const uint8_t *decay,
               size_t n, const umd_adamw_args *a, const double *sumsq) {
    const float b1 = a->beta1, b2 = a->beta2, lr = a->lr, eps = a->eps;
    const float gs = a->max_norm > 0.0f ? umd_clip_factor(a->max_norm, *sumsq) : 1.0f;
    const float shrink = umd_adamw_shrink(lr, a->weight_decay);
    const float step = lr / a->bias_correction1;
    const float bc2s = sqrtf(a->bias_correction2);
    CPU_PARALLEL(cpu_team(c, (double)n), {
        long lo, hi;
        cpu_split((long)n, tid, team, &lo, &hi);
        _Pragma("omp simd")
        for (long i = lo; i < hi; i++) {
            float gi = g[i] * gs;
            float pi = decay[i] ? p[i] * shrink : p[i];
            float mi = b1 * m[i] + (1.0f - b1) * gi;
            float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
            m[i] = mi;
            v[i] = vi;
            p[i] = pi - step * mi / (sqrtf(vi) / bc2s + eps);
        }
    });
}

void cpu_ema(umd_ctx *c, float *ema, const float *p, size_t n, float decay) {
    const float rest = 1.0f - decay;
    CPU_PARALLEL(cpu_team(c, (double)n), {
        long lo, hi;
        cpu_split((long)n, tid, team, &lo, &hi);
        for (long i = lo; i < hi; i++) ema[i] = decay * ema[i] + rest * p[i];
    });
}
