/* linalg.c: Cholesky solve, Jacobi eigen-decomposition, Gaussian fit and the Frechet distance
 * (see linalg.h). Everything in float64; the Jacobi sweeps follow the classical cyclic order
 * with the rotation of Golub and Van Loan (8.4), stopping when the off-diagonal mass is below
 * 1e-30 of the total (or 1e-300 absolute). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "linalg.h"
#include "umdq.h"

int umd_cholesky_solve(double *A, int n, double *B, int m) {
    /* A = G G^T, G lower triangular, stored in A's lower triangle */
    for (int j = 0; j < n; j++) {
        double s = A[(size_t)j * n + j];
        for (int k = 0; k < j; k++) s -= A[(size_t)j * n + k] * A[(size_t)j * n + k];
        if (!(s > 0)) return UMDQ_EINVAL;
        double g = sqrt(s);
        A[(size_t)j * n + j] = g;
        for (int i = j + 1; i < n; i++) {
            double t = A[(size_t)i * n + j];
            for (int k = 0; k < j; k++) t -= A[(size_t)i * n + k] * A[(size_t)j * n + k];
            A[(size_t)i * n + j] = t / g;
        }
    }
    /* forward: G Z = B; backward: G^T X = Z */
    for (int c = 0; c < m; c++) {
        for (int i = 0; i < n; i++) {
            double t = B[(size_t)i * m + c];
            for (int k = 0; k < i; k++) t -= A[(size_t)i * n + k] * B[(size_t)k * m + c];
            B[(size_t)i * m + c] = t / A[(size_t)i * n + i];
        }
        for (int i = n - 1; i >= 0; i--) {
            double t = B[(size_t)i * m + c];
            for (int k = i + 1; k < n; k++) t -= A[(size_t)k * n + i] * B[(size_t)k * m + c];
            B[(size_t)i * m + c] = t / A[(size_t)i * n + i];
        }
    }
    return 0;
}

static int cmp_pair(const void *a, const void *b) {
    double x = ((const double *)a)[0], y = ((const double *)b)[0];
    return x < y ? -1 : x > y;
}

int umd_sym_eig(double *A, int n, double *evals, double *evecs) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) evecs[(size_t)i * n + j] = i == j;
    double total = 0;
    for (size_t i = 0; i < (size_t)n * n; i++) total += A[i] * A[i];
    if (!isfinite(total)) return UMDQ_EINVAL;
    int converged = 0;
    for (int sweep = 0; sweep < 100 && !converged; sweep++) {
        double off = 0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) off += 2 * A[(size_t)p * n + q] * A[(size_t)p * n + q];
        if (off <= 1e-30 * total || off < 1e-300) {
            converged = 1;
            break;
        }
        for (int p = 0; p < n - 1; p++) {
            for (int q = p + 1; q < n; q++) {
                double apq = A[(size_t)p * n + q];
                if (apq == 0) continue;
                double app = A[(size_t)p * n + p], aqq = A[(size_t)q * n + q];
                double theta = (aqq - app) / (2 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                /* A <- J^T A J on rows and columns p, q */
                for (int k = 0; k < n; k++) {
                    double akp = A[(size_t)k * n + p], akq = A[(size_t)k * n + q];
                    A[(size_t)k * n + p] = c * akp - s * akq;
                    A[(size_t)k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) {
                    double apk = A[(size_t)p * n + k], aqk = A[(size_t)q * n + k];
                    A[(size_t)p * n + k] = c * apk - s * aqk;
                    A[(size_t)q * n + k] = s * apk + c * aqk;
                }
                A[(size_t)p * n + q] = A[(size_t)q * n + p] = 0;
                for (int k = 0; k < n; k++) {
                    double vkp = evecs[(size_t)k * n + p], vkq = evecs[(size_t)k * n + q];
                    evecs[(size_t)k * n + p] = c * vkp - s * vkq;
                    evecs[(size_t)k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    if (!converged) return UMDQ_EINVAL;
    /* ascending order: sort (value, column) pairs, then permute the columns */
    double *pairs = malloc((size_t)n * 2 * sizeof(double)); /* owned */
    double *tmp = malloc((size_t)n * n * sizeof(double));   /* owned */
    if (!pairs || !tmp) {
        free(pairs);
        free(tmp);
        return UMDQ_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        pairs[2 * i] = A[(size_t)i * n + i];
        pairs[2 * i + 1] = i;
    }
    qsort(pairs, (size_t)n, 2 * sizeof(double), cmp_pair);
    memcpy(tmp, evecs, (size_t)n * n * sizeof(double));
    for (int k = 0; k < n; k++) {
        int src = (int)pairs[2 * k + 1];
        evals[k] = pairs[2 * k];
        for (int i = 0; i < n; i++) evecs[(size_t)i * n + k] = tmp[(size_t)i * n + src];
    }
    free(pairs);
    free(tmp);
    return 0;
}

void umd_gauss_fit(const float *X, int64_t n, int d, double *mu, double *S) {
    memset(mu, 0, (size_t)d * sizeof(double));
    memset(S, 0, (size_t)d * d * sizeof(double));
    for (int64_t r = 0; r < n; r++)
        for (int i = 0; i < d; i++) mu[i] += X[(size_t)r * d + i];
    for (int i = 0; i < d; i++) mu[i] /= (double)n;
    double *row = malloc((size_t)d * sizeof(double)); /* owned */
    if (!row) return;
    for (int64_t r = 0; r < n; r++) {
        for (int i = 0; i < d; i++) row[i] = X[(size_t)r * d + i] - mu[i];
        for (int i = 0; i < d; i++) {
            double ri = row[i];
            double *Si = S + (size_t)i * d;
            for (int j = i; j < d; j++) Si[j] += ri * row[j];
        }
    }
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) {
            double v = S[(size_t)i * d + j] / (double)(n > 1 ? n - 1 : 1);
            S[(size_t)i * d + j] = S[(size_t)j * d + i] = v;
        }
    free(row);
}

int umd_frechet_distance(const double *mu1, const double *S1, const double *mu2, const double *S2,
                         int d, double *out, char *err, size_t errlen) {
    size_t dd = (size_t)d * d;
    double *A = malloc(dd * sizeof(double)), *V = malloc(dd * sizeof(double)); /* owned */
    double *R = malloc(dd * sizeof(double)), *T = malloc(dd * sizeof(double)); /* owned */
    double *ev = malloc((size_t)d * sizeof(double));                           /* owned */
    int rc = UMDQ_ENOMEM;
    if (!A || !V || !R || !T || !ev) {
        snprintf(err, errlen, "out of memory for the Frechet distance (d = %d)", d);
        goto fail;
    }
    /* R = S1^(1/2) = V diag(sqrt(max(l, 0))) V^T */
    memcpy(A, S1, dd * sizeof(double));
    rc = umd_sym_eig(A, d, ev, V);
    if (rc) goto noconv;
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) {
            double s = 0;
            for (int k = 0; k < d; k++)
                s += V[(size_t)i * d + k] * sqrt(ev[k] > 0 ? ev[k] : 0) * V[(size_t)j * d + k];
            R[(size_t)i * d + j] = R[(size_t)j * d + i] = s;
        }
    /* A = R S2 R (symmetric) */
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int k = 0; k < d; k++) s += R[(size_t)i * d + k] * S2[(size_t)k * d + j];
            T[(size_t)i * d + j] = s;
        }
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) {
            double s = 0;
            for (int k = 0; k < d; k++) s += T[(size_t)i * d + k] * R[(size_t)k * d + j];
            A[(size_t)i * d + j] = A[(size_t)j * d + i] = s;
        }
    rc = umd_sym_eig(A, d, ev, V);
    if (rc) goto noconv;
    double tr_sqrt = 0, tr1 = 0, tr2 = 0, diff = 0;
    for (int k = 0; k < d; k++) tr_sqrt += sqrt(ev[k] > 0 ? ev[k] : 0);
    for (int i = 0; i < d; i++) {
        tr1 += S1[(size_t)i * d + i];
        tr2 += S2[(size_t)i * d + i];
        diff += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]);
    }
    *out = diff + tr1 + tr2 - 2 * tr_sqrt;
    rc = 0;
    goto fail;
noconv:
    snprintf(err, errlen, "FID: the eigen-decomposition of a %dx%d covariance did not converge "
             "(non-finite features?)", d, d);
fail:
    free(A);
    free(V);
    free(R);
    free(T);
    free(ev);
    return rc;
}
