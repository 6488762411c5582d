/* norm.c: LayerNorm with affine and adaLN modulation (forward, backward), and the gated residual.
 *
 * Parallelisation: over sequences (each thread owns whole sequences, so the per-sequence sums
 * of dshift, dscale and dgate need no synchronisation); dgamma and dbeta, summed over every
 * token, go to per-thread partials in the workspace, added in thread order at the end.
 * Numerics: mean and variance in two passes over the row in fp32 (the variance is computed
 * around the mean, not as E[x^2] - E[x]^2, which cancels for rows far from zero); the
 * vectorised sums reassociate within a row (omp simd reduction), deterministically. */
#include <math.h>
#include "cpu.h"

#define LN_EPS 1e-6f

/* A row's mean and rstd. */
static inline void ln_stats(float *mean_r, float *rstd_r, const float *xr, int w) {
    float s = 0.0f;
    _Pragma("omp simd reduction(+:s)")
    for (int i = 0; i < w; i++) s += xr[i];
    float mu = s / (float)w;
    float v = 0.0f;
    _Pragma("omp simd reduction(+:v)")
    for (int i = 0; i < w; i++) {
        float d = xr[i] - mu;
        v += d * d;
    }
    *mean_r = mu;
    *rstd_r = 1.0f / sqrtf(v / (float)w + LN_EPS);
}

/* The affine, modulated (shift NULL: not) row from its statistics, each value through STORE(i, v):
 * one expression for both storages, so a bf16 operand row is the fp32 row rounded. */
#define LN_ROW_OUT(STORE)                                                                      \
    do {                                                                                       \
        if (shift) {                                                                           \
            for (int i = 0; i < w; i++) {                                                      \
                float y = (xr[i] - mu) * rs * gamma[i] + beta[i];                              \
                STORE(i, y * (1.0f + scale[i]) + shift[i]);                                    \
            }                                                                                  \
        } else {                                                                               \
            for (int i = 0; i < w; i++) STORE(i, (xr[i] - mu) * rs * gamma[i] + beta[i]);      \
        }                                                                                      \
    } while (0)
#define STORE_F32(i, v) (yr[i] = (v))
#define STORE_BF16(i, v) (yr[i] = cpu_to_bf16(v))

/* One row of layernorm_fwd, row r (offset in elements) of out: its mean and rstd, then the row,
 * into fp32 or (bf16) a bf16 operand row. */
static inline void ln_out_row(void *out, int bf16, long r, float *mean_r, float *rstd_r,
                              const float *xr, const float *gamma, const float *beta,
                              const float *shift, const float *scale, int w) {
    ln_stats(mean_r, rstd_r, xr, w);
    const float mu = *mean_r, rs = *rstd_r;
    if (bf16) {
        uint16_t *yr = (uint16_t *)out + r;
        LN_ROW_OUT(STORE_BF16);
    } else {
        float *yr = (float *)out + r;
        LN_ROW_OUT(STORE_F32);
    }
}

/* One row of gate_residual_fwd; o may alias x. y's row r (offset in elements) is fp32 or (yb) a
 * bf16 branch row, widened in the same expression: the fp32 row's bits on the rounded values. */
static inline void gate_row(float *o, const float *xr, const float *g, const void *y, int yb,
                            long r, int w) {
    if (yb) {
        const uint16_t *yr = (const uint16_t *)y + r;
        for (int i = 0; i < w; i++) o[i] = xr[i] + g[i] * cpu_from_bf16(yr[i]);
    } else {
        const float *yr = (const float *)y + r;
        for (int i = 0; i < w; i++) o[i] = xr[i] + g[i] * yr[i];
    }
}

void cpu_layernorm_fwd(umd_ctx *c, void *out, float *mean, float *rstd, const float *x,
                       const float *gamma, const float *beta, const float *mod, int mod_stride,
                       int n, int T, int w, long x_stride, long out_stride, int out_type) {
    const int bf16 = cpu_is_bf16(c, out_type);
    CPU_PARALLEL(cpu_team(c, (double)n * T * w), {
        long lo, hi;
        cpu_split(n, tid, team, &lo, &hi);
        for (long b = lo; b < hi; b++) {
            const float *shift = mod ? mod + b * mod_stride : NULL;
            const float *scale = mod ? shift + w : NULL;
            for (int t = 0; t < T; t++)
                ln_out_row(out, bf16, b * out_stride + (long)t * w, mean + b * T + t,
                           rstd + b * T + t, x + b * x_stride + (long)t * w, gamma, beta, shift,
                           scale, w);
        }
    });
}

/* Each row gated, then normalised while it is still in cache. */
void cpu_residual_layernorm_fwd(umd_ctx *c, float *xo, void *out, float *mean, float *rstd,
                                const float *x, const void *y, const float *gate,
                                int gate_stride, const float *gamma, const float *beta,
                                const float *mod, int mod_stride, int n, int T, int w,
                                int types) {
    const int bf16 = cpu_is_bf16(c, types & UMD_OPND);
    const int yb = cpu_is_bf16(c, (types & UMD_OPND_Y) ? UMD_OPND : UMD_F32);
    CPU_PARALLEL(cpu_team(c, 2.0 * n * T * w), {
        long lo, hi;
        cpu_split(n, tid, team, &lo, &hi);
        for (long b = lo; b < hi; b++) {
            const float *g = gate + b * gate_stride;
            const float *shift = mod ? mod + b * mod_stride : NULL;
            const float *scale = mod ? shift + w : NULL;
            for (int t = 0; t < T; t++) {
                long r = b * T + t;
                gate_row(xo + r * w, x + r * w, g, y, yb, r * w, w);
                ln_out_row(out, bf16, r * w, mean + r, rstd + r, xo + r * w, gamma, beta, shift,
                           scale, w);
            }
        }
    });
}

/* With xhat = (x - mu) rstd, y = xhat gamma + beta, o = y (1 + scale) + shift:
 *   dy = do (1 + scale);  dscale += do y;  dshift += do;  dgamma += dy xhat;  dbeta += dy
 *   dxhat = dy gamma;  dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)). */
/* A bf16 dout (UMD_GRAD_X) is read widened, a row at a time: the fp32 op's bits on its values. */
void cpu_layernorm_bwd(umd_ctx *c, float *dx, float *dgamma, float *dbeta, float *dmod,
                       const void *dout, const float *x, const float *mean, const float *rstd,
                       const float *gamma, const float *beta, const float *mod, int mod_stride,
                       int n, int T, int w, long x_stride, long out_stride, int dx_accumulate,
                       int types) {
    /* a bf16 dout (UMD_GRAD_X) is widened a row at a time into the thread's scratch */
    const int db16 = cpu_is_bf16(c, (types & UMD_GRAD_X) ? UMD_OPND : UMD_F32);
    if (db16) cpu_check_widen(w, "layernorm_bwd");
    int used = 1;
    CPU_PARALLEL(cpu_team(c, 2.0 * n * T * w), {
        if (tid == 0) used = team;
        float *pg = cpu_ws(c, tid); /* (w) dgamma partial */
        float *pb = pg + w;         /* (w) dbeta partial */
        for (int i = 0; i < w; i++) pg[i] = pb[i] = 0.0f;
        long lo, hi;
        cpu_split(n, tid, team, &lo, &hi);
        for (long b = lo; b < hi; b++) {
            const float *scale = mod ? mod + b * mod_stride + w : NULL;
            float *dshift = mod ? dmod + b * mod_stride : NULL;
            float *dscale = mod ? dshift + w : NULL;
            if (mod)
                for (int i = 0; i < w; i++) dshift[i] = dscale[i] = 0.0f;
            for (int t = 0; t < T; t++) {
                const float *xr = x + b * x_stride + (long)t * w;
                /* dout's row, each typed pointer made only where dout has that type (an fp32
                 * offset into a bf16 dout would point up to twice its length on) */
                const float *dor;
                if (db16) {
                    float *row = cpu_widen(c, tid);
                    cpu_widen_n(row, (const uint16_t *)dout + b * out_stride + (long)t * w,
                                (size_t)w);
                    dor = row;
                } else {
                    dor = (const float *)dout + b * out_stride + (long)t * w;
                }
                float *dxr = dx + b * x_stride + (long)t * w;
                float mu = mean[b * T + t], rs = rstd[b * T + t];
                float s1 = 0.0f, s2 = 0.0f;
                if (mod) {
                    _Pragma("omp simd reduction(+:s1, s2)")
                    for (int i = 0; i < w; i++) {
                        float xh = (xr[i] - mu) * rs;
                        float y = xh * gamma[i] + beta[i];
                        dscale[i] += dor[i] * y;
                        dshift[i] += dor[i];
                        float dy = dor[i] * (1.0f + scale[i]);
                        pg[i] += dy * xh;
                        pb[i] += dy;
                        float dxh = dy * gamma[i];
                        s1 += dxh;
                        s2 += dxh * xh;
                    }
                } else {
                    _Pragma("omp simd reduction(+:s1, s2)")
                    for (int i = 0; i < w; i++) {
                        float xh = (xr[i] - mu) * rs;
                        float dy = dor[i];
                        pg[i] += dy * xh;
                        pb[i] += dy;
                        float dxh = dy * gamma[i];
                        s1 += dxh;
                        s2 += dxh * xh;
                    }
                }
                s1 /= (float)w;
                s2 /= (float)w;
                /* dx = rstd (dxhat - s1 - xhat s2), written or added */
                if (mod && dx_accumulate) {
                    for (int i = 0; i < w; i++) {
                        float xh = (xr[i] - mu) * rs;
                        float dxh = dor[i] * (1.0f + scale[i]) * gamma[i];
                        dxr[i] += rs * (dxh - s1 - xh * s2);
                    }
                } else if (mod) {
                    for (int i = 0; i < w; i++) {
                        float xh = (xr[i] - mu) * rs;
                        float dxh = dor[i] * (1.0f + scale[i]) * gamma[i];
                        dxr[i] = rs * (dxh - s1 - xh * s2);
                    }
                } else if (dx_accumulate) {
                    for (int i = 0; i < w; i++) {
                        float xh = (xr[i] - mu) * rs;
                        dxr[i] += rs * (dor[i] * gamma[i] - s1 - xh * s2);
                    }
                } else {
                    for (int i = 0; i < w; i++) {
                        float xh = (xr[i] - mu) * rs;
                        dxr[i] = rs * (dor[i] * gamma[i] - s1 - xh * s2);
                    }
                }
            }
        }
    });
    for (int t = 0; t < used; t++) {
        const float *pg = cpu_ws(c, t), *pb = pg + w;
        for (int i = 0; i < w; i++) {
            dgamma[i] += pg[i];
            dbeta[i] += pb[i];
        }
    }
}

void cpu_gate_residual_fwd(umd_ctx *c, float *out, const float *x, const void *y,
                           const float *gate, int gate_stride, int n, int T, int w, int y_type) {
    const int yb = cpu_is_bf16(c, (y_type & UMD_OPND_Y) ? UMD_OPND : UMD_F32);
    long rows = (long)n * T;
    CPU_PARALLEL(cpu_team(c, (double)rows * w), {
        long lo, hi;
        cpu_split(rows, tid, team, &lo, &hi);
        for (long r = lo; r < hi; r++) {
            gate_row(out + r * w, x + r * w, gate + (r / T) * gate_stride, y, yb, r * w, w);
        }
    });
}

/* dy = dout * gate, rounded once where it is a bf16 gradient tensor (UMD_GRAD); dgate sums the
 * fp32 products dout * y either way. */
void cpu_gate_residual_bwd(umd_ctx *c, void *dyv, float *dgate, const float *dout, const void *y,
                           const float *gate, int gate_stride, int n, int T, int w, int types) {
    const int yb = cpu_is_bf16(c, (types & UMD_OPND_Y) ? UMD_OPND : UMD_F32);
    const int gb = cpu_is_bf16(c, (types & UMD_GRAD) ? UMD_OPND : UMD_F32);
    CPU_PARALLEL(cpu_team(c, (double)n * T * w), {
        long lo, hi;
        cpu_split(n, tid, team, &lo, &hi);
        for (long b = lo; b < hi; b++) {
            const float *g = gate + b * gate_stride;
            float *dg = dgate + b * gate_stride;
            for (int i = 0; i < w; i++) dg[i] = 0.0f;
            for (int t = 0; t < T; t++) {
                long r = b * T + t;
                const float *d = dout + r * w;
                if (gb) {
                    uint16_t *dyr = (uint16_t *)dyv + r * w;
                    for (int i = 0; i < w; i++) dyr[i] = cpu_to_bf16(d[i] * g[i]);
                } else {
                    float *dyr = (float *)dyv + r * w;
                    for (int i = 0; i < w; i++) dyr[i] = d[i] * g[i];
                }
                if (yb) {
                    const uint16_t *yr = (const uint16_t *)y + r * w;
                    for (int i = 0; i < w; i++) dg[i] += d[i] * cpu_from_bf16(yr[i]);
                } else {
                    const float *yr = (const float *)y + r * w;
                    for (int i = 0; i < w; i++) dg[i] += d[i] * yr[i];
                }
            }
        }
    });
}
