/* test_eval_probe.c: the probes on known problems: the ridge probe's closed form on a 1-feature
 * problem solved by hand, the Cholesky solve, shot selection, the linear probe learning a
 * separable set (and not learning random labels), and bad input named. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "eval/linalg.h"
#include "eval/probe.h"
#include "philox.h"
#include "t.h"
#include "umdq.h"

static void test_eval_probe_ridge_closed_form(void) {
    /* x = -1, +1 with labels 0, 1: standardised x = -+a, a = 1 / (sqrt(2) + 1e-5); with the bias
     * column X = [[-a, 1], [a, 1]], Y = [[1, -1], [-1, 1]], so X^T X + l I = diag(2a^2 + l, 2 + l)
     * and X^T Y = [[-2a, 2a], [0, 0]]: W = [[-2a, 2a] / (2a^2 + l), [0, 0]]. */
    const float X[2] = {-1, 1};
    const int32_t y[2] = {0, 1};
    double W[4], top1 = -1;
    char err[256];
    for (double l = 0.5; l < 5000; l *= 8) {
        T_EQ_INT(umd_probe_ridge(X, y, 2, X, y, 2, 1, 2, l, &top1, W, err, sizeof err), 0);
        double a = 1.0 / (sqrt(2.0) + 1e-5), w = 2 * a / (2 * a * a + l);
        T_NEAR(W[0], -w, 1e-15, 1e-12);
        T_NEAR(W[1], w, 1e-15, 1e-12);
        T_NEAR(W[2], 0, 1e-15, 0);
        T_NEAR(W[3], 0, 1e-15, 0);
        T_NEAR(top1, 1.0, 0, 0);
    }
    /* three classes on a line with an offset: the probe separates them; a test point between
     * the middle and the right class goes to the nearer one */
    const float X3[6] = {10, 11, 20, 21, 30, 31};
    const int32_t y3[6] = {0, 0, 1, 1, 2, 2};
    const float T3[3] = {9, 30.5f, 10.5f};
    const int32_t t3[3] = {0, 2, 0};
    T_EQ_INT(umd_probe_ridge(X3, y3, 6, T3, t3, 3, 1, 3, 1e-3, &top1, NULL, err, sizeof err), 0);
    T_CHECK(top1 >= 2.0 / 3.0); /* a linear score cannot rank the middle class first everywhere */
}

static void test_eval_probe_cholesky(void) {
    const int n = 12, m = 3;
    double A[144], A0[144], B[36], B0[36];
    /* A = M M^T + n I is symmetric positive definite */
    double M[144];
    for (int i = 0; i < n * n; i++) {
        philox4 r = philox_draw(5, PHILOX_TEST, 0, (uint64_t)i);
        M[i] = philox_unit(r.v[0]) - 0.5;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = i == j ? n : 0;
            for (int k = 0; k < n; k++) s += M[i * n + k] * M[j * n + k];
            A0[i * n + j] = A[i * n + j] = s;
        }
    for (int i = 0; i < n * m; i++) B0[i] = B[i] = sin(i + 1.0);
    T_EQ_INT(umd_cholesky_solve(A, n, B, m), 0);
    double worst = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < m; c++) {
            double s = 0;
            for (int k = 0; k < n; k++) s += A0[i * n + k] * B[k * m + c];
            worst = fmax(worst, fabs(s - B0[i * m + c]));
        }
    T_CHECK_MSG(worst < 1e-12, "residual %g", worst);
    double bad[4] = {1, 2, 2, 1}, rhs[2] = {1, 1}; /* indefinite */
    T_EQ_INT(umd_cholesky_solve(bad, 2, rhs, 1), UMDQ_EINVAL);
}

static void test_eval_probe_pick_shots(void) {
    const uint16_t labels[10] = {2, 0, 0, 1, 2, 0, 2, 2, 1, 0};
    int64_t idx[9];
    int64_t n = umd_probe_pick_shots(labels, 10, 3, 3, idx);
    T_EQ_INT(n, 8); /* class 1 has only 2 */
    const int64_t want[8] = {1, 2, 5, 3, 8, 0, 4, 6};
    for (int i = 0; i < 8; i++) T_EQ_INT(idx[i], want[i]);
}

/* n rows of d features: classes at separated centres along the first dims, noise elsewhere; with
 * random_labels the labels ignore the features. */
static void blobs(float *X, int32_t *y, int n, int d, int classes, uint32_t step, int random_labels) {
    for (int i = 0; i < n; i++) {
        philox4 r = philox_draw(21, PHILOX_TEST, step, (uint64_t)i);
        int c = (int)(r.v[0] % (uint32_t)classes);
        y[i] = random_labels ? (int32_t)(r.v[1] % (uint32_t)classes) : c;
        for (int j = 0; j < d; j++) {
            philox4 q = philox_draw(21, PHILOX_TEST, step + 100, (uint64_t)i * d + j);
            double u1 = philox_unit_open0(q.v[0]), u2 = philox_unit(q.v[1]);
            double z = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
            X[(size_t)i * d + j] = (float)(z * 0.5 + (j == c % d ? 3.0 : 0.0) + 5.0 * (j == d - 1));
        }
    }
}

static void test_eval_probe_linear_learns_separable(void) {
    const int n = 600, nt = 300, d = 8, classes = 4;
    float *X = malloc(sizeof(float) * n * d), *Xt = malloc(sizeof(float) * nt * d);
    int32_t *y = malloc(sizeof(int32_t) * n), *yt = malloc(sizeof(int32_t) * nt);
    T_REQUIRE(X && Xt && y && yt);
    blobs(X, y, n, d, classes, 1, 0);
    blobs(Xt, yt, nt, d, classes, 2, 0);
    umd_linear_probe_opts o = {20, 64, 1e-2, 7, NULL, NULL};
    double top1 = -1, loss = -1, top1_b = -1;
    char err[256];
    T_EQ_INT(umd_probe_linear(X, y, n, Xt, yt, nt, d, classes, &o, &top1, &loss, err, sizeof err), 0);
    T_CHECK_MSG(top1 >= 0.97, "linear probe top-1 %.3f", top1);
    T_CHECK_MSG(loss < 0.2 && loss > 0, "final loss %.4f", loss);
    /* deterministic for a seed */
    T_EQ_INT(umd_probe_linear(X, y, n, Xt, yt, nt, d, classes, &o, &top1_b, NULL, err, sizeof err), 0);
    T_NEAR(top1_b, top1, 0, 0);
    /* the ridge probe separates them too */
    T_EQ_INT(umd_probe_ridge(X, y, n, Xt, yt, nt, d, classes, 1.0, &top1, NULL, err, sizeof err), 0);
    T_CHECK_MSG(top1 >= 0.95, "ridge top-1 %.3f", top1);
    /* labels that ignore the features cannot be learnt beyond chance on the test rows */
    blobs(X, y, n, d, classes, 1, 1);
    blobs(Xt, yt, nt, d, classes, 2, 1);
    T_EQ_INT(umd_probe_linear(X, y, n, Xt, yt, nt, d, classes, &o, &top1, NULL, err, sizeof err), 0);
    T_CHECK_MSG(top1 < 0.4, "random labels top-1 %.3f", top1);
    /* bad input is named */
    yt[5] = 9;
    T_EQ_INT(umd_probe_linear(X, y, n, Xt, yt, nt, d, classes, &o, &top1, NULL, err, sizeof err),
             UMDQ_EINVAL);
    T_CONTAINS(err, "test label 9 of row 5");
    T_EQ_INT(umd_probe_ridge(X, y, 0, Xt, yt, nt, d, classes, 1.0, &top1, NULL, err, sizeof err),
             UMDQ_EINVAL);
    T_CONTAINS(err, "ridge probe");
    free(X);
    free(Xt);
    free(y);
    free(yt);
}

/* Fewer rows than features (the dual form): W satisfies the primal normal equations
 * (Z^T Z + lambda I) W = Z^T Y, with Z the standardised rows and a constant 1. */
static void test_eval_probe_ridge_dual(void) {
    enum { n = 12, d = 30, K = 3, D = d + 1 };
    float X[n * d];
    int32_t y[n];
    double W[D * K], Z[n * D], mean[d], sd[d], top1;
    char err[256];
    for (int i = 0; i < n * d; i++)
        X[i] = (float)((philox_draw(5, PHILOX_TEST, 0, (uint64_t)i).v[0] >> 8) / 16777216.0 - 0.5);
    for (int r = 0; r < n; r++) y[r] = r % K;
    T_REQUIRE(umd_probe_ridge(X, y, n, X, y, n, d, K, 0.7, &top1, W, err, sizeof err) == 0);
    for (int j = 0; j < d; j++) {
        double m = 0, v = 0;
        for (int r = 0; r < n; r++) m += X[r * d + j];
        m /= n;
        for (int r = 0; r < n; r++) v += (X[r * d + j] - m) * (X[r * d + j] - m);
        mean[j] = m;
        sd[j] = sqrt(v / (n - 1));
    }
    for (int r = 0; r < n; r++) {
        for (int j = 0; j < d; j++) Z[r * D + j] = (X[r * d + j] - mean[j]) / (sd[j] + 1e-5);
        Z[r * D + d] = 1;
    }
    double worst = 0;
    for (int i = 0; i < D; i++)
        for (int c = 0; c < K; c++) {
            double lhs = 0.7 * W[i * K + c], rhs = 0;
            for (int r = 0; r < n; r++) {
                double zw = 0;
                for (int j = 0; j < D; j++) zw += Z[r * D + j] * W[j * K + c];
                lhs += Z[r * D + i] * zw;
                rhs += Z[r * D + i] * (c == y[r] ? 1.0 : -1.0);
            }
            worst = fmax(worst, fabs(lhs - rhs) / (1 + fabs(rhs)));
        }
    T_CHECK_MSG(worst < 1e-9, "normal equations off by %g", worst);
    T_NEAR(top1, 1.0, 0, 0); /* d > n: the training rows are fitted */
}

int main(void) {
    T_RUN(test_eval_probe_ridge_closed_form);
    T_RUN(test_eval_probe_ridge_dual);
    T_RUN(test_eval_probe_cholesky);
    T_RUN(test_eval_probe_pick_shots);
    T_RUN(test_eval_probe_linear_learns_separable);
    return t_done();
}
