/* elementwise.c: fill, copy, add, GELU (tanh approximation) and SiLU, forward and backward.
 *
 * Parallelisation: contiguous chunks of the flat index, one per thread; the loops are
 * branch-free so they vectorise (cpu_expf instead of libm, which would cost tens of cycles per
 * element). Numerics: GELU-tanh is evaluated as x sigmoid(2u) (the same function), which avoids
 * the cancellation of 1 + tanh(u) for negative x; SiLU is x / (1 + e^{-x}); both are within a few
 * ulp on the whole range (cpu_expf's clamps make them saturate cleanly). */
#include <math.h>
#include "cpu.h"

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_C 0.044715f

/* The calling thread's share [lo, hi) of n flat elements. */
#define FLAT_SHARE(n)                                                                              \
    long lo, hi;                                                                                   \
    cpu_split((long)(n), tid, team, &lo, &hi)

void cpu_fill(umd_ctx *c, float *x, size_t n, float value) {
    CPU_PARALLEL(cpu_team(c, (double)n), {
        FLAT_SHARE(n);
        for (long i = lo; i < hi; i++) x[i] = value;
    });
}

void cpu_copy(umd_ctx *c, float *dst, const float *src, size_t n) {
    CPU_PARALLEL(cpu_team(c, (double)n), {
        FLAT_SHARE(n);
        if (hi > lo) memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
    });
}

void cpu_add(umd_ctx *c, float *y, const float *a, const float *b, size_t n) {
    CPU_PARALLEL(cpu_team(c, (double)n), {
        FLAT_SHARE(n);
        for (long i = lo; i < hi; i++) y[i] = a[i] + b[i];
    });
}

/* 0.5 x (1 + tanh u) = x sigmoid(2u): the sigmoid form keeps its relative accuracy for negative
 * x, where 1 + tanh u cancels. */
void cpu_gelu_fwd(umd_ctx *c, float *y, const float *x, size_t n) {
    CPU_PARALLEL(cpu_team(c, (double)n), {
        FLAT_SHARE(n);
        _Pragma("omp simd")
        for (long i = lo; i < hi; i++) {
            float v = x[i];
            float u = GELU_K * (v + GELU_C * v * v * v);
            y[i] = v / (1.0f + cpu_expf(-2.0f * u));
        }
    });
}

/* d/dx [x s(2u)] = s + x s (1 - s) 2u', s = sigmoid(2u), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2). */
void cpu_gelu_bwd(umd_ctx *c, float *dx, const float *dy, const float *x, size_t n) {
    CPU_PARALLEL(cpu_team(c, (double)n), {
        FLAT_SHARE(n);
        _Pragma("omp simd")
        for (long i = lo; i < hi; i++) {
            float v = x[i];
            float u = GELU_K * (v + GELU_C * v * v * v);
            float s = 1.0f / (1.0f + cpu_expf(-2.0f * u));
            float du = 2.0f * GELU_K * (1.0f + 3.0f * GELU_C * v * v);
            dx[i] = dy[i] * (s + v * s * (1.0f - s) * du);
        }
    });
}

void cpu_silu_fwd(umd_ctx *c, float *y, const float *x, size_t n) {
    CPU_PARALLEL(cpu_team(c, (double)n), {
        FLAT_SHARE(n);
        _Pragma("omp simd")
        for (long i = lo; i < hi; i++) y[i] = x[i] / (1.0f + cpu_expf(-x[i]));
    });
}

/* d/dx [x s(x)] = s (1 + x (1 - s)), s = sigmoid(x). */
void cpu_silu_bwd(umd_ctx *c, float *dx, const float *dy, const float *x, size_t n) {
    CPU_PARALLEL(cpu_team(c, (double)n), {
        FLAT_SHARE(n);
        _Pragma("omp simd")
        for (long i = lo; i < hi; i++) {
            float s = 1.0f / (1.0f + cpu_expf(-x[i]));
            dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
        }
    });
}
