/* sample.c: the DDIM sampler with classifier-free guidance and the PNG grid (see sample.h). The
 * network passes run through the evaluation net (the backend's ops); the per-pixel update runs
 * on the host in float64 per value. */
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"
#include "philox.h"
#include "sample.h"
#include "umdq.h"

int umd_ddim_timesteps(int T, int S, int *ts) {
    if (S < 1) S = 1;
    if (S > T) S = T;
    int k = T / S, n = 0;
    for (int i = 0; i < S; i++) ts[n++] = T - 1 - i * k;
    if (ts[n - 1] != 0) ts[n++] = 0;
    return n;
}

void umd_ddim_step(const float *x_t, const float *eps, size_t D, double abar_t, double abar_p,
                   double eta, const float *z, float *x_prev, float *x0_out) {
    const double sa = sqrt(abar_t), s1 = sqrt(1 - abar_t);
    const double sigma = eta * sqrt((1 - abar_p) / (1 - abar_t)) * sqrt(1 - abar_t / abar_p);
    double dir = 1 - abar_p - sigma * sigma;
    dir = dir > 0 ? sqrt(dir) : 0;
    const double sp = sqrt(abar_p);
    for (size_t i = 0; i < D; i++) {
        double x0 = (x_t[i] - s1 * eps[i]) / sa;
        x0 = x0 < -1 ? -1 : x0 > 1 ? 1 : x0;
        double e = (x_t[i] - sa * x0) / s1;
        double v = sp * x0 + dir * e;
        if (sigma > 0 && z) v += sigma * z[i];
        if (x0_out) x0_out[i] = (float)x0;
        x_prev[i] = (float)v;
    }
}

void umd_sample_normals(uint64_t seed, uint32_t step, int64_t index, size_t D, float *z) {
    const uint64_t per = (D + 3) / 4;
    for (size_t e = 0; e < D; e += 4) {
        philox4 r = philox_draw(seed, PHILOX_EVAL, step, (uint64_t)index * per + e / 4);
        for (int h = 0; h < 2; h++) {
            double u1 = philox_unit_open0(r.v[2 * h]), u2 = philox_unit(r.v[2 * h + 1]);
            double rad = sqrt(-2.0 * log(u1)), ang = 6.283185307179586 * u2;
            if (e + 2 * h < D) z[e + 2 * h] = (float)(rad * cos(ang));
            if (e + 2 * h + 1 < D) z[e + 2 * h + 1] = (float)(rad * sin(ang));
        }
    }
}

/* The eps channels of the head's prediction (k, L, p, p, 2C) as images (k, C, H, W). */
static void eps_images(const float *pred, int k, const umd_dims *d, float *eps) {
    const int p = d->p, C = d->C, H = d->H, W = d->W, Wp = W / p;
    for (int b = 0; b < k; b++)
        for (int l = 0; l < d->L; l++) {
            int ti = l / Wp, tj = l % Wp;
            for (int pi = 0; pi < p; pi++)
                for (int pj = 0; pj < p; pj++) {
                    const float *v = pred + (((size_t)b * d->L + l) * p * p + (size_t)pi * p + pj) * 2 * C + C;
                    for (int c = 0; c < C; c++)
                        eps[(((size_t)b * C + c) * H + ti * p + pi) * W + tj * p + pj] = v[c];
                }
        }
}

int umd_ddim_sample(umd_evalnet *net, const double *abar, int T, const int32_t *y, int64_t n,
                    const umd_ddim_opts *opts, float *out,
                    int (*poll)(void *ctx, int64_t done, int64_t total), void *ctx,
                    char *err, size_t errlen) {
    umd_model *m = umd_evalnet_model(net);
    const umd_dims *d = umd_model_dims(m);
    const size_t D = (size_t)d->C * d->H * d->W;
    const int B = umd_evalnet_batch(net);
    const int guided = d->labels && y && opts->cfg_scale != 1.0;
    const int chunk = guided ? B / 2 : B;
    int *ts = NULL;                               /* owned */
    float *xin = NULL, *pred = NULL, *eps = NULL; /* owned */
    int32_t *tn = NULL, *yl = NULL;               /* owned */
    float *z = NULL;                              /* owned */
    int rc = UMDQ_ENOMEM;
    if (chunk < 1) {
        snprintf(err, errlen, "sampling with guidance needs eval.batch >= 2");
        return UMDQ_EINVAL;
    }
    ts = malloc(((size_t)opts->steps + 2) * sizeof(int));
    xin = malloc((size_t)B * D * sizeof(float));
    pred = malloc((size_t)B * d->L * 2 * d->P * sizeof(float));
    eps = malloc((size_t)B * D * sizeof(float));
    tn = malloc((size_t)B * sizeof(int32_t));
    yl = malloc((size_t)B * sizeof(int32_t));
    z = malloc(D * sizeof(float));
    if (!ts || !xin || !pred || !eps || !tn || !yl || !z) {
        snprintf(err, errlen, "out of memory for sampling");
        goto fail;
    }
    const int nts = umd_ddim_timesteps(T, opts->steps, ts);
    const int64_t calls = (n + chunk - 1) / chunk * nts;
    for (int64_t s0 = 0; s0 < n; s0 += chunk) {
        int k = (int)(n - s0 < chunk ? n - s0 : chunk);
        float *x = out + (size_t)s0 * D; /* the chunk's x_t, in place */
        for (int b = 0; b < k; b++) umd_sample_normals(opts->seed, 0, s0 + b, D, x + (size_t)b * D);
        for (int b = 0; b < k; b++) {
            yl[b] = y && d->labels ? y[s0 + b] : d->classes;
            if (guided) yl[k + b] = d->classes;
        }
        int rows = guided ? 2 * k : k;
        for (int i = 0; i < nts; i++) {
            const int t = ts[i];
            const int64_t done = s0 / chunk * nts + i;
            if (poll && poll(ctx, done, calls)) {
                snprintf(err, errlen, "sampling: stopped on request at network call %lld of %lld",
                         (long long)done, (long long)calls);
                rc = UMDQ_ECANCELLED;
                goto fail;
            }
            memcpy(xin, x, (size_t)k * D * sizeof(float));
            if (guided) memcpy(xin + (size_t)k * D, x, (size_t)k * D * sizeof(float));
            for (int b = 0; b < rows; b++) tn[b] = t + 1;
            umd_evalnet_forward(net, xin, tn, yl, rows, NULL, pred);
            eps_images(pred, rows, d, eps);
            if (guided) {
                const float s = (float)opts->cfg_scale;
                for (size_t e = 0; e < (size_t)k * D; e++) {
                    float u = eps[(size_t)k * D + e];
                    eps[e] = u + s * (eps[e] - u);
                }
            }
            for (int b = 0; b < k; b++) {
                float *xb = x + (size_t)b * D;
                const float *eb = eps + (size_t)b * D;
                if (t == 0) {
                    /* the final call: x0_hat */
                    umd_ddim_step(xb, eb, D, abar[0], abar[0], 0, NULL, z, xb);
                    continue;
                }
                const int tp = i + 1 < nts ? ts[i + 1] : 0;
                umd_sample_normals(opts->seed, (uint32_t)(i + 1), s0 + b, D, z);
                umd_ddim_step(xb, eb, D, abar[t], abar[tp], opts->eta, z, xb, NULL);
            }
        }
        for (size_t e = 0; e < (size_t)k * D; e++) {
            if (!isfinite(x[e])) {
                snprintf(err, errlen, "sampling: a non-finite value in sample %lld",
                         (long long)(s0 + (int64_t)(e / D)));
                rc = UMDQ_EINVAL;
                goto fail;
            }
        }
    }
    rc = 0;
fail:
    free(ts);
    free(xin);
    free(pred);
    free(eps);
    free(tn);
    free(yl);
    free(z);
    return rc;
}

int umd_png_write_grid(const char *path, const float *img, int n, int C, int H, int W, char *err,
                       size_t errlen) {
    if (n < 1 || (C != 1 && C != 3)) {
        snprintf(err, errlen, "%s: a grid needs 1 or more images of 1 or 3 channels", path);
        return UMDQ_EINVAL;
    }
    const int gap = 2, cols = (int)ceil(sqrt((double)n)), rows = (n + cols - 1) / cols;
    const int GW = cols * (W + gap) + gap, GH = rows * (H + gap) + gap;
    unsigned char *pix = calloc((size_t)GW * GH * C, 1); /* owned */
    FILE *f = NULL;
    png_structp png = NULL;
    png_infop info = NULL;
    int rc = UMDQ_EIO;
    if (!pix) {
        snprintf(err, errlen, "out of memory for %s", path);
        return UMDQ_ENOMEM;
    }
    for (int k = 0; k < n; k++) {
        int r0 = gap + (k / cols) * (H + gap), c0 = gap + (k % cols) * (W + gap);
        for (int c = 0; c < C; c++)
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++) {
                    float v = img[(((size_t)k * C + c) * H + i) * W + j];
                    v = (v + 1.0f) * 127.5f;
                    v = v < 0 ? 0 : v > 255 ? 255 : v;
                    pix[((size_t)(r0 + i) * GW + c0 + j) * C + c] = (unsigned char)lrintf(v);
                }
    }
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot write %s", tmp);
        goto fail;
    }
    png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        snprintf(err, errlen, "libpng could not start writing %s", path);
        goto fail;
    }
    if (setjmp(png_jmpbuf(png))) {
        snprintf(err, errlen, "libpng failed writing %s", path);
        goto fail;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)GW, (png_uint_32)GH, 8,
                 C == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int i = 0; i < GH; i++) png_write_row(png, pix + (size_t)i * GW * C);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    png = NULL;
    if (fclose(f) != 0) {
        f = NULL;
        snprintf(err, errlen, "cannot write %s", tmp);
        goto fail;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s", tmp, path);
        goto fail;
    }
    rc = 0;
fail:
    if (png) png_destroy_write_struct(&png, info ? &info : NULL);
    if (f) fclose(f);
    if (rc) remove(tmp);
    free(pix);
    return rc;
}
