/* random.c: Philox draws for initialisation, timesteps, noise, label dropout and keep orders.
 *
 * Every value is a pure function of (seed, stream, step, index) (philox.h), so any split of the
 * work across threads gives the same bits, and a step's randomness depends only on the seed and
 * the step number: a resumed run draws exactly what the uninterrupted run drew.
 * Parallelisation: over draws (uniform, normal), rows (timesteps, labels, keep orders).
 * Numerics: Box-Muller in fp32 with u1 in (0, 1] (no log of 0); |z| is at most
 * sqrt(-2 ln 2^-24) = 5.77. The keep order sorts 64-bit keys (24-bit uniform << 32 | token), which
 * are all distinct, so the order is unique whatever the sort; it is a heapsort (no allocation,
 * O(L log L)). */
#include <math.h>
#include "cpu.h"
#include "philox.h"

#define TWO_PI 6.283185307179586f

void cpu_rand_uniform(umd_ctx *c, float *x, size_t n, uint64_t seed, uint32_t stream, uint32_t step,
                      uint64_t first, float lo, float hi) {
    if (n == 0) return;
    uint64_t d0 = first / 4, d1 = (first + n - 1) / 4;
    long ndraw = (long)(d1 - d0 + 1);
    float range = hi - lo;
    CPU_PARALLEL(cpu_team(c, 16.0 * ndraw), {
        long k0, k1;
        cpu_split(ndraw, tid, team, &k0, &k1);
        for (long k = k0; k < k1; k++) {
            uint64_t d = d0 + (uint64_t)k;
            philox4 r = philox_draw(seed, stream, step, d);
            for (int e = 0; e < 4; e++) {
                uint64_t g = d * 4 + (uint64_t)e;
                if (g < first || g >= first + n) continue;
                x[g - first] = lo + range * philox_unit(r.v[e]);
            }
        }
    });
}

void cpu_rand_normal(umd_ctx *c, float *x, size_t n, uint64_t seed, uint32_t stream, uint32_t step,
                     uint64_t first, float mean, float std) {
    if (n == 0) return;
    uint64_t d0 = first / 4, d1 = (first + n - 1) / 4;
    long ndraw = (long)(d1 - d0 + 1);
    CPU_PARALLEL(cpu_team(c, 16.0 * ndraw), {
        long k0, k1;
        cpu_split(ndraw, tid, team, &k0, &k1);
        for (long k = k0; k < k1; k++) {
            uint64_t d = d0 + (uint64_t)k;
            philox4 r = philox_draw(seed, stream, step, d);
            float z[4];
            for (int pair = 0; pair < 2; pair++) {
                float u1 = philox_unit_open0(r.v[2 * pair]);
                float u2 = philox_unit(r.v[2 * pair + 1]);
                float rad = sqrtf(-2.0f * logf(u1));
                float a = TWO_PI * u2;
                z[2 * pair] = rad * cosf(a);
                z[2 * pair + 1] = rad * sinf(a);
            }
            for (int e = 0; e < 4; e++) {
                uint64_t g = d * 4 + (uint64_t)e;
                if (g < first || g >= first + n) continue;
                x[g - first] = mean + std * z[e];
            }
        }
    });
}

void cpu_draw_timesteps(umd_ctx *c, int32_t *t_net, int row0, int n, int clean, int T,
                        uint64_t seed, uint32_t step) {
    (void)c;
    for (int b = 0; b < n; b++) {
        if (clean) {
            t_net[b] = 0;
            continue;
        }
        philox4 r = philox_draw(seed, PHILOX_TIMESTEP, step, (uint64_t)(row0 + b));
        uint32_t idx = (uint32_t)(((uint64_t)r.v[0] * (uint64_t)T) >> 32);
        t_net[b] = (int32_t)idx + 1;
    }
}

void cpu_draw_labels(umd_ctx *c, int32_t *y_used, const int32_t *y, int row0, int n, int clean,
                     float p_drop, int null_class, uint64_t seed, uint32_t step) {
    (void)c;
    for (int b = 0; b < n; b++) {
        if (clean) {
            y_used[b] = null_class;
            continue;
        }
        philox4 r = philox_draw(seed, PHILOX_LABEL_DROP, step, (uint64_t)(row0 + b));
        y_used[b] = philox_unit(r.v[0]) < p_drop ? null_class : y[b];
    }
}

static void sift_down(uint64_t *a, long root, long end) {
    for (;;) {
        long child = 2 * root + 1;
        if (child >= end) return;
        if (child + 1 < end && a[child + 1] > a[child]) child++;
        if (a[root] >= a[child]) return;
        uint64_t t = a[root];
        a[root] = a[child];
        a[child] = t;
        root = child;
    }
}

static void heapsort_u64(uint64_t *a, long n) {
    for (long i = n / 2 - 1; i >= 0; i--) sift_down(a, i, n);
    for (long end = n - 1; end > 0; end--) {
        uint64_t t = a[0];
        a[0] = a[end];
        a[end] = t;
        sift_down(a, 0, end);
    }
}

void cpu_draw_keep(umd_ctx *c, int32_t *order, int32_t *slot, int row0, int n, int L, int keep,
                   uint64_t seed, uint32_t step) {
    CPU_PARALLEL(cpu_team(c, 16.0 * n * L), {
        uint64_t *keys = cpu_ws(c, tid); /* (L) */
        long lo, hi;
        cpu_split(n, tid, team, &lo, &hi);
        for (long b = lo; b < hi; b++) {
            uint64_t row = (uint64_t)(row0 + b);
            for (int l = 0; l < L; l++) {
                philox4 r = philox_draw(seed, PHILOX_MASK, step, row * (uint64_t)L + (uint64_t)l);
                keys[l] = ((uint64_t)(r.v[0] >> 8) << 32) | (uint64_t)l;
            }
            heapsort_u64(keys, L);
            int32_t *o = order + b * L, *s = slot + b * L;
            for (int j = 0; j < L; j++) {
                int l = (int)(keys[j] & 0xffffffffu);
                o[j] = l;
                s[l] = j < keep ? j : -1;
            }
        }
    });
}
