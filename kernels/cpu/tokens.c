/* tokens.c: moving tokens around: patchify / unpatchify, noising, timestep and label embeddings,
 * the gather of visible tokens into the encoder, the decoder's input (rep token, encoder outputs
 * back in place, mask tokens), the cls mean, and the masked MSE losses.
 *
 * Parallelisation: over rows (images, sequences) for everything that writes per row; sums over
 * rows into parameter gradients (positional embeddings, cls and mask tokens, label table) are
 * split over columns instead, each thread summing every row for its columns in row order, so
 * they need no partials and are deterministic. The loss sums squares per row in double and adds
 * the rows in order. */
#include <math.h>
#include "cpu.h"

void cpu_patchify(umd_ctx *c, float *tok, const float *img, int n, int C, int H, int W, int p) {
    const int gw = W / p, L = (H / p) * gw, P = p * p * C;
    CPU_PARALLEL(cpu_team(c, (double)n * L * P), {
        long lo_, hi_;
        cpu_split(n, tid, team, &lo_, &hi_);
        for (int b = (int)lo_; b < (int)hi_; b++) {
            const float *im = img + (long)b * C * H * W;
            for (int l = 0; l < L; l++) {
                int gi = l / gw, gj = l % gw;
                float *t = tok + ((long)b * L + l) * P;
                for (int pi = 0; pi < p; pi++)
                    for (int pj = 0; pj < p; pj++)
                        for (int ch = 0; ch < C; ch++)
                            t[(pi * p + pj) * C + ch] =
                                im[((long)ch * H + gi * p + pi) * W + gj * p + pj];
            }
        }
    });
}

void cpu_unpatchify(umd_ctx *c, float *img, const float *tok, int n, int C, int H, int W, int p) {
    const int gw = W / p, L = (H / p) * gw, P = p * p * C;
    CPU_PARALLEL(cpu_team(c, (double)n * L * P), {
        long lo_, hi_;
        cpu_split(n, tid, team, &lo_, &hi_);
        for (int b = (int)lo_; b < (int)hi_; b++) {
            float *im = img + (long)b * C * H * W;
            for (int l = 0; l < L; l++) {
                int gi = l / gw, gj = l % gw;
                const float *t = tok + ((long)b * L + l) * P;
                for (int pi = 0; pi < p; pi++)
                    for (int pj = 0; pj < p; pj++)
                        for (int ch = 0; ch < C; ch++)
                            im[((long)ch * H + gi * p + pi) * W + gj * p + pj] =
                                t[(pi * p + pj) * C + ch];
            }
        }
    });
}

void cpu_noise_mix(umd_ctx *c, float *xt, const float *x0, const float *eps, const int32_t *t_net,
                   const float *sqrt_abar, const float *sqrt_1m_abar, int n, int D) {
    CPU_PARALLEL(cpu_team(c, (double)n * D), {
        long lo_, hi_;
        cpu_split(n, tid, team, &lo_, &hi_);
        for (int b = (int)lo_; b < (int)hi_; b++) {
            int idx = t_net[b] - 1;
            float a = sqrt_abar[idx], s = sqrt_1m_abar[idx];
            const float *x = x0 + (long)b * D, *e = eps + (long)b * D;
            float *o = xt + (long)b * D;
            for (int i = 0; i < D; i++) o[i] = a * x[i] + s * e[i];
        }
    });
}

void cpu_timestep_embed(umd_ctx *c, float *out, const int32_t *t_net, int n, int w) {
    (void)c;
    const int half = w / 2;
    const double lnmax = log(10000.0);
    for (int b = 0; b < n; b++) {
        double t = (double)t_net[b];
        float *o = out + (long)b * w;
        for (int i = 0; i < half; i++) {
            double f = half > 1 ? exp(-(double)i * lnmax / (double)(half - 1)) : 1.0;
            o[i] = (float)sin(t * f);
            o[half + i] = (float)cos(t * f);
        }
        for (int i = 2 * half; i < w; i++) o[i] = 0.0f;
    }
}

void cpu_embed_rows_fwd(umd_ctx *c, float *out, const float *table, const int32_t *idx, int n,
                        int w) {
    (void)c;
    for (int b = 0; b < n; b++) {
        const float *t = table + (long)idx[b] * w;
        float *o = out + (long)b * w;
        for (int i = 0; i < w; i++) o[i] = t[i];
    }
}

void cpu_embed_rows_bwd(umd_ctx *c, float *dtable, const float *dout, const int32_t *idx, int n,
                        int w) {
    (void)c;
    for (int b = 0; b < n; b++) {
        float *t = dtable + (long)idx[b] * w;
        const float *d = dout + (long)b * w;
        for (int i = 0; i < w; i++) t[i] += d[i];
    }
}

void cpu_gather_tokens_fwd(umd_ctx *c, float *xenc, const float *emb, const float *pos,
                           const float *cls, const int32_t *order, int n, int L, int keep, int ncls,
                           int w) {
    const int T = ncls + keep;
    CPU_PARALLEL(cpu_team(c, (double)n * T * w), {
        long lo_, hi_;
        cpu_split(n, tid, team, &lo_, &hi_);
        for (int b = (int)lo_; b < (int)hi_; b++) {
            float *x = xenc + (long)b * T * w;
            for (int k = 0; k < ncls; k++)
                for (int i = 0; i < w; i++) x[(long)k * w + i] = cls[(long)k * w + i];
            for (int j = 0; j < keep; j++) {
                int l = order[(long)b * L + j];
                const float *e = emb + ((long)b * L + l) * w, *pe = pos + (long)l * w;
                float *o = x + (long)(ncls + j) * w;
                for (int i = 0; i < w; i++) o[i] = e[i] + pe[i];
            }
        }
    });
}

void cpu_gather_tokens_bwd(umd_ctx *c, float *demb, float *dpos, float *dcls, const float *dxenc,
                           const int32_t *slot, int n, int L, int keep, int ncls, int w) {
    const int T = ncls + keep;
    int team = cpu_team(c, (double)n * L * w);
    CPU_PARALLEL(team, {
        const int nt = team;
        long lo, hi;
        cpu_split(n, tid, nt, &lo, &hi);
        for (long b = lo; b < hi; b++) {
            for (int l = 0; l < L; l++) {
                int s = slot[b * L + l];
                float *d = demb + (b * L + l) * w;
                if (s >= 0) {
                    const float *g = dxenc + (b * T + ncls + s) * w;
                    for (int i = 0; i < w; i++) d[i] = g[i];
                } else {
                    for (int i = 0; i < w; i++) d[i] = 0.0f;
                }
            }
        }
        /* column slices for the sums over rows */
        cpu_split(w, tid, nt, &lo, &hi);
        for (long b = 0; b < n; b++) {
            const float *x = dxenc + b * T * w;
            for (int k = 0; k < ncls; k++)
                for (long i = lo; i < hi; i++) dcls[(long)k * w + i] += x[(long)k * w + i];
            for (int l = 0; l < L; l++) {
                int s = slot[b * L + l];
                if (s < 0) continue;
                const float *g = x + (long)(ncls + s) * w;
                float *dp = dpos + (long)l * w;
                for (long i = lo; i < hi; i++) dp[i] += g[i];
            }
        }
    });
}

void cpu_decoder_input_fwd(umd_ctx *c, float *xdec, const float *rep, const float *enc,
                           const float *mask, const float *pos, const int32_t *slot, int n, int L,
                           int Tenc, int ncls, int w) {
    const long Td = 1L + L;
    CPU_PARALLEL(cpu_team(c, (double)n * Td * w), {
        long lo_, hi_;
        cpu_split(n, tid, team, &lo_, &hi_);
        for (int b = (int)lo_; b < (int)hi_; b++) {
            float *x = xdec + (long)b * Td * w;
            const float *r = rep + (long)b * w;
            for (int i = 0; i < w; i++) x[i] = r[i];
            for (int l = 0; l < L; l++) {
                int s = slot[(long)b * L + l];
                const float *src = s >= 0 ? enc + ((long)b * Tenc + ncls + s) * w : mask;
                const float *pe = pos + (long)l * w;
                float *o = x + (1L + l) * w;
                for (int i = 0; i < w; i++) o[i] = src[i] + pe[i];
            }
        }
    });
}

void cpu_decoder_input_bwd(umd_ctx *c, float *drep, float *denc, float *dmask, float *dpos,
                           const float *dxdec, const int32_t *slot, int n, int L, int Tenc,
                           int ncls, int w) {
    const long Td = 1L + L;
    int team = cpu_team(c, (double)n * Td * w);
    CPU_PARALLEL(team, {
        const int nt = team;
        long lo, hi;
        cpu_split(n, tid, nt, &lo, &hi);
        for (long b = lo; b < hi; b++) {
            const float *x = dxdec + b * Td * w;
            float *r = drep + b * w;
            for (int i = 0; i < w; i++) r[i] = x[i];
            for (int l = 0; l < L; l++) {
                int s = slot[b * L + l];
                if (s < 0) continue;
                const float *g = x + (1L + l) * w;
                float *d = denc + (b * Tenc + ncls + s) * w;
                for (int i = 0; i < w; i++) d[i] = g[i];
            }
        }
        cpu_split(w, tid, nt, &lo, &hi);
        for (long b = 0; b < n; b++) {
            const float *x = dxdec + b * Td * w;
            for (int l = 0; l < L; l++) {
                const float *g = x + (1L + l) * w;
                float *dp = dpos + (long)l * w;
                for (long i = lo; i < hi; i++) dp[i] += g[i];
                if (slot[b * L + l] < 0)
                    for (long i = lo; i < hi; i++) dmask[i] += g[i];
            }
        }
    });
}

void cpu_token_mean_fwd(umd_ctx *c, float *out, const float *x, int n, int T, int k, int w) {
    (void)c;
    const float inv = 1.0f / (float)k;
    for (int b = 0; b < n; b++) {
        float *o = out + (long)b * w;
        const float *xb = x + (long)b * T * w;
        for (int i = 0; i < w; i++) o[i] = 0.0f;
        for (int j = 0; j < k; j++)
            for (int i = 0; i < w; i++) o[i] += xb[(long)j * w + i];
        for (int i = 0; i < w; i++) o[i] *= inv;
    }
}

void cpu_token_mean_bwd(umd_ctx *c, float *dx, const float *dout, int n, int T, int k, int w) {
    (void)c;
    const float inv = 1.0f / (float)k;
    for (int b = 0; b < n; b++) {
        const float *d = dout + (long)b * w;
        float *xb = dx + (long)b * T * w;
        for (int j = 0; j < k; j++)
            for (int i = 0; i < w; i++) xb[(long)j * w + i] = d[i] * inv;
    }
}

void cpu_mse_masked(umd_ctx *c, float *dpred, const float *pred, const float *target,
                    const int32_t *slot, int n, int L, int pp, int C, int half, int select,
                    float grad_scale, double *sum) {
    const int P = pp * C, P2 = 2 * P;
    double total = 0.0;
    double part[CPU_MAX_THREADS];
    int used = 1;
    CPU_PARALLEL(cpu_team(c, (double)n * L * P), {
        const int nt = team;
        if (tid == 0) used = nt;
        long lo, hi;
        cpu_split(n, tid, nt, &lo, &hi);
        double acc = 0.0;
        for (long b = lo; b < hi; b++) {
            double rowsum = 0.0;
            for (int l = 0; l < L; l++) {
                int s = slot[b * L + l];
                if (select == UMD_SEL_VISIBLE && s < 0) continue;
                if (select == UMD_SEL_MASKED && s >= 0) continue;
                const float *pr = pred + (b * L + l) * P2 + (long)half * C;
                const float *tg = target + (b * L + l) * P;
                float *dp = dpred + (b * L + l) * P2 + (long)half * C;
                float tok = 0.0f;
                for (int q = 0; q < pp; q++)
                    for (int ch = 0; ch < C; ch++) {
                        float d = pr[q * 2 * C + ch] - tg[q * C + ch];
                        tok += d * d;
                        dp[q * 2 * C + ch] += grad_scale * 2.0f * d;
                    }
                rowsum += (double)tok;
            }
            acc += rowsum;
        }
        part[tid] = acc;
    });
    for (int t = 0; t < used; t++) total += part[t];
    *sum = total;
}
