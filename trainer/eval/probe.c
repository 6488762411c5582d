/* probe.c: ridge and linear probes on cached features (see probe.h). Host code in float64 for the
 * ridge normal equations and float32 with float64 sums for the linear probe's mini-batches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "linalg.h"
#include "philox.h"
#include "probe.h"
#include "umdq.h"

int64_t umd_probe_pick_shots(const uint16_t *labels, int64_t n, int classes, int shots,
                             int64_t *idx) {
    int64_t k = 0;
    for (int c = 0; c < classes; c++) {
        int got = 0;
        for (int64_t i = 0; i < n && got < shots; i++)
            if (labels[i] == c) {
                idx[k++] = i;
                got++;
            }
    }
    return k;
}

static int check_labels(const int32_t *y, int64_t n, int classes, const char *what, char *err,
                        size_t errlen) {
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= classes) {
            snprintf(err, errlen, "probe: %s label %d of row %lld is outside 0..%d", what, y[i],
                     (long long)i, classes - 1);
            return UMDQ_EINVAL;
        }
    return 0;
}

/* Column mean and std over n rows (unbiased when unbiased != 0, else biased). */
static void column_stats(const float *X, int64_t n, int d, int unbiased, double *mean, double *sd) {
    for (int j = 0; j < d; j++) mean[j] = sd[j] = 0;
    for (int64_t r = 0; r < n; r++)
        for (int j = 0; j < d; j++) mean[j] += X[(size_t)r * d + j];
    for (int j = 0; j < d; j++) mean[j] /= (double)n;
    for (int64_t r = 0; r < n; r++)
        for (int j = 0; j < d; j++) {
            double v = X[(size_t)r * d + j] - mean[j];
            sd[j] += v * v;
        }
    for (int j = 0; j < d; j++)
        sd[j] = sqrt(sd[j] / (double)(unbiased && n > 1 ? n - 1 : n));
}

/* The same solution when n < d + 1 (push-through identity):
 *   W = (Z^T Z + lambda I)^-1 Z^T Y = Z^T (Z Z^T + lambda I_n)^-1 Y
 * with Z (n, d + 1) the standardised rows and a constant 1: an n x n Cholesky solve, so a
 * few-shot probe on 12288 pixels costs n^2 d, not d^3. *Bout (d + 1, classes), caller frees;
 * mean and sd (d) filled as by the primal form. */
static int ridge_dual(const float *Xtr, const int32_t *ytr, int64_t n, int d, int classes,
                      double lambda, double *mean, double *sd, double **Bout, char *err,
                      size_t errlen) {
    const int D = d + 1;
    double *Z = malloc((size_t)n * D * sizeof(double));        /* owned */
    double *K = malloc((size_t)n * n * sizeof(double));        /* owned */
    double *alpha = malloc((size_t)n * classes * sizeof(double)); /* owned */
    double *B = calloc((size_t)D * classes, sizeof(double));
    int rc = 0;
    if (!Z || !K || !alpha || !B) {
        snprintf(err, errlen, "ridge probe: out of memory (d = %d, %lld rows)", d, (long long)n);
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    column_stats(Xtr, n, d, 1, mean, sd);
    for (int64_t r = 0; r < n; r++) {
        double *z = Z + (size_t)r * D;
        for (int j = 0; j < d; j++) z[j] = (Xtr[(size_t)r * d + j] - mean[j]) / (sd[j] + 1e-5);
        z[d] = 1.0;
        for (int c = 0; c < classes; c++) alpha[(size_t)r * classes + c] = c == ytr[r] ? 1.0 : -1.0;
    }
    for (int64_t a = 0; a < n; a++)
        for (int64_t b = a; b < n; b++) {
            double s = 0;
            const double *za = Z + (size_t)a * D, *zb = Z + (size_t)b * D;
            for (int j = 0; j < D; j++) s += za[j] * zb[j];
            K[(size_t)a * n + b] = K[(size_t)b * n + a] = s + (a == b ? lambda : 0);
        }
    if (umd_cholesky_solve(K, (int)n, alpha, classes) != 0) {
        snprintf(err, errlen, "ridge probe: the kernel equations are not positive definite "
                 "(non-finite features?)");
        rc = UMDQ_EINVAL;
        goto fail;
    }
    for (int64_t r = 0; r < n; r++) {
        const double *z = Z + (size_t)r * D, *al = alpha + (size_t)r * classes;
        for (int i = 0; i < D; i++)
            for (int c = 0; c < classes; c++) B[(size_t)i * classes + c] += z[i] * al[c];
    }
    *Bout = B;
    B = NULL;
fail:
    free(Z);
    free(K);
    free(alpha);
    free(B);
    return rc;
}

int umd_probe_ridge(const float *Xtr, const int32_t *ytr, int64_t ntr, const float *Xte,
                    const int32_t *yte, int64_t nte, int d, int classes, double lambda,
                    double *top1, double *W, char *err, size_t errlen) {
    const int D = d + 1; /* features + bias */
    double *mean = NULL, *sd = NULL, *A = NULL, *B = NULL, *x = NULL; /* owned */
    int rc;
    if (ntr < 1 || nte < 1 || d < 1 || classes < 2) {
        snprintf(err, errlen, "ridge probe: needs training and test rows, d >= 1 and 2 classes "
                 "(got %lld, %lld, %d, %d)", (long long)ntr, (long long)nte, d, classes);
        return UMDQ_EINVAL;
    }
    if ((rc = check_labels(ytr, ntr, classes, "training", err, errlen)) ||
        (rc = check_labels(yte, nte, classes, "test", err, errlen)))
        return rc;
    rc = UMDQ_ENOMEM;
    mean = malloc((size_t)d * sizeof(double));
    sd = malloc((size_t)d * sizeof(double));
    if (!mean || !sd) {
        snprintf(err, errlen, "ridge probe: out of memory (d = %d)", d);
        goto fail;
    }
    if (ntr < D) { /* fewer rows than features: the dual form, n x n instead of D x D */
        rc = ridge_dual(Xtr, ytr, ntr, d, classes, lambda, mean, sd, &B, err, errlen);
        if (rc) goto fail;
        x = malloc((size_t)D * sizeof(double));
        if (!x) {
            rc = UMDQ_ENOMEM;
            snprintf(err, errlen, "ridge probe: out of memory (d = %d)", d);
            goto fail;
        }
        goto score;
    }
    A = calloc((size_t)D * D, sizeof(double));
    B = calloc((size_t)D * classes, sizeof(double));
    x = malloc((size_t)D * sizeof(double));
    if (!mean || !sd || !A || !B || !x) {
        snprintf(err, errlen, "ridge probe: out of memory (d = %d)", d);
        goto fail;
    }
    column_stats(Xtr, ntr, d, 1, mean, sd);
    /* A = X^T X + lambda I (upper triangle, then mirrored), B = X^T Y */
    for (int64_t r = 0; r < ntr; r++) {
        for (int j = 0; j < d; j++) x[j] = (Xtr[(size_t)r * d + j] - mean[j]) / (sd[j] + 1e-5);
        x[d] = 1.0;
        for (int i = 0; i < D; i++) {
            double xi = x[i];
            double *Ai = A + (size_t)i * D;
            for (int j = i; j < D; j++) Ai[j] += xi * x[j];
            for (int c = 0; c < classes; c++) B[(size_t)i * classes + c] += xi * (c == ytr[r] ? 1.0 : -1.0);
        }
    }
    for (int i = 0; i < D; i++) {
        A[(size_t)i * D + i] += lambda;
        for (int j = 0; j < i; j++) A[(size_t)i * D + j] = A[(size_t)j * D + i];
    }
    if (umd_cholesky_solve(A, D, B, classes) != 0) {
        snprintf(err, errlen, "ridge probe: the normal equations are not positive definite "
                 "(non-finite features?)");
        rc = UMDQ_EINVAL;
        goto fail;
    }
score:;
    int64_t right = 0;
    for (int64_t r = 0; r < nte; r++) {
        for (int j = 0; j < d; j++) x[j] = (Xte[(size_t)r * d + j] - mean[j]) / (sd[j] + 1e-5);
        x[d] = 1.0;
        int best = 0;
        double best_v = -INFINITY;
        for (int c = 0; c < classes; c++) {
            double s = 0;
            for (int i = 0; i < D; i++) s += x[i] * B[(size_t)i * classes + c];
            if (s > best_v) {
                best_v = s;
                best = c;
            }
        }
        right += best == yte[r];
    }
    *top1 = (double)right / (double)nte;
    if (W) memcpy(W, B, (size_t)D * classes * sizeof(double));
    rc = 0;
fail:
    free(mean);
    free(sd);
    free(A);
    free(B);
    free(x);
    return rc;
}

/* logits (classes) of one standardised row */
static void row_logits(const float *x, int d, const float *W, const float *b, int classes,
                       double *z) {
    for (int c = 0; c < classes; c++) {
        double s = b[c];
        const float *w = W + (size_t)c * d;
        for (int j = 0; j < d; j++) s += (double)w[j] * x[j];
        z[c] = s;
    }
}

int umd_probe_linear(const float *Xtr, const int32_t *ytr, int64_t ntr, const float *Xte,
                     const int32_t *yte, int64_t nte, int d, int classes,
                     const umd_linear_probe_opts *opts, double *top1, double *final_loss,
                     char *err, size_t errlen) {
    double *mean = NULL, *sd = NULL, *z = NULL, *gW = NULL; /* owned */
    float *Xs = NULL, *W = NULL, *mW = NULL, *vW = NULL, *x = NULL; /* owned */
    int64_t *perm = NULL; /* owned */
    int rc;
    if (ntr < 1 || nte < 1 || d < 1 || classes < 2 || opts->epochs < 1 || opts->batch < 1) {
        snprintf(err, errlen, "linear probe: needs training and test rows, d >= 1, 2 classes, "
                 "epochs and batch >= 1");
        return UMDQ_EINVAL;
    }
    if ((rc = check_labels(ytr, ntr, classes, "training", err, errlen)) ||
        (rc = check_labels(yte, nte, classes, "test", err, errlen)))
        return rc;
    rc = UMDQ_ENOMEM;
    const size_t nW = (size_t)classes * (d + 1); /* weights then biases */
    mean = malloc((size_t)d * sizeof(double));
    sd = malloc((size_t)d * sizeof(double));
    z = malloc((size_t)classes * sizeof(double));
    gW = malloc(nW * sizeof(double));
    Xs = malloc((size_t)ntr * d * sizeof(float));
    W = calloc(nW, sizeof(float));
    mW = calloc(nW, sizeof(float));
    vW = calloc(nW, sizeof(float));
    x = malloc((size_t)d * sizeof(float));
    perm = malloc((size_t)ntr * sizeof(int64_t));
    if (!mean || !sd || !z || !gW || !Xs || !W || !mW || !vW || !x || !perm) {
        snprintf(err, errlen, "linear probe: out of memory (%lld rows of %d)", (long long)ntr, d);
        goto fail;
    }
    column_stats(Xtr, ntr, d, 0, mean, sd);
    for (int j = 0; j < d; j++) sd[j] = sqrt(sd[j] * sd[j] + 1e-6);
    for (int64_t r = 0; r < ntr; r++)
        for (int j = 0; j < d; j++)
            Xs[(size_t)r * d + j] = (float)((Xtr[(size_t)r * d + j] - mean[j]) / sd[j]);
    float *bias = W + (size_t)classes * d;
    const int64_t per_epoch = (ntr + opts->batch - 1) / opts->batch;
    const int64_t total = per_epoch * opts->epochs;
    int64_t t = 0;
    double epoch_loss = 0;
    for (int e = 0; e < opts->epochs; e++) {
        /* Fisher-Yates with Philox draws named by (epoch, position) */
        for (int64_t i = 0; i < ntr; i++) perm[i] = i;
        for (int64_t i = ntr - 1; i > 0; i--) {
            philox4 r = philox_draw(opts->seed, PHILOX_EVAL, (uint32_t)e, (uint64_t)i);
            uint64_t u = ((uint64_t)r.v[0] << 32) | r.v[1];
            int64_t j = (int64_t)(u % (uint64_t)(i + 1));
            int64_t tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        epoch_loss = 0;
        for (int64_t s0 = 0; s0 < ntr; s0 += opts->batch, t++) {
            int64_t n = ntr - s0 < opts->batch ? ntr - s0 : opts->batch;
            if (opts->poll && opts->poll(opts->poll_ctx, t, total)) {
                snprintf(err, errlen, "linear probe: stopped on request at step %lld of %lld",
                         (long long)t, (long long)total);
                rc = UMDQ_ECANCELLED;
                goto fail;
            }
            memset(gW, 0, nW * sizeof(double));
            for (int64_t k = 0; k < n; k++) {
                int64_t r = perm[s0 + k];
                const float *xr = Xs + (size_t)r * d;
                row_logits(xr, d, W, bias, classes, z);
                double mx = z[0], sum = 0;
                for (int c = 1; c < classes; c++) mx = z[c] > mx ? z[c] : mx;
                for (int c = 0; c < classes; c++) sum += exp(z[c] - mx);
                epoch_loss += log(sum) + mx - z[ytr[r]];
                for (int c = 0; c < classes; c++) {
                    double g = exp(z[c] - mx) / sum - (c == ytr[r]);
                    if (g == 0) continue;
                    double *gw = gW + (size_t)c * d;
                    for (int j = 0; j < d; j++) gw[j] += g * xr[j];
                    gW[(size_t)classes * d + c] += g;
                }
            }
            double lr = opts->lr * 0.5 * (1 + cos(M_PI * (double)t / (double)total));
            double bc1 = 1 - pow(0.9, (double)(t + 1)), bc2 = 1 - pow(0.999, (double)(t + 1));
            for (size_t i = 0; i < nW; i++) {
                float g = (float)(gW[i] / (double)n);
                mW[i] = 0.9f * mW[i] + 0.1f * g;
                vW[i] = 0.999f * vW[i] + 0.001f * g * g;
                W[i] -= (float)(lr / bc1 * mW[i] / (sqrt(vW[i] / bc2) + 1e-8));
            }
        }
        epoch_loss /= (double)ntr;
    }
    if (final_loss) *final_loss = epoch_loss;
    int64_t right = 0;
    for (int64_t r = 0; r < nte; r++) {
        for (int j = 0; j < d; j++)
            x[j] = (float)((Xte[(size_t)r * d + j] - mean[j]) / sd[j]);
        row_logits(x, d, W, bias, classes, z);
        int best = 0;
        for (int c = 1; c < classes; c++)
            if (z[c] > z[best]) best = c;
        right += best == yte[r];
    }
    *top1 = (double)right / (double)nte;
    rc = 0;
fail:
    free(mean);
    free(sd);
    free(z);
    free(gW);
    free(Xs);
    free(W);
    free(mW);
    free(vW);
    free(x);
    free(perm);
    return rc;
}
