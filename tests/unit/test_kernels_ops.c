/* test_kernels_ops.c: every CPU op with a backward against central finite differences (fresh
 * Philox inputs, never zeros), and the forward-only ops against plain reference loops.
 * Backwards run on a 2-thread context (per-thread partials and splits), the finite differences
 * on a 1-thread one. umdq-uses: umd common */
#include <stdio.h>
#include <stdlib.h>
#include "t.h"
#include "ops.h"
#include "philox.h"
#include "test_model_fixtures.h"

static const umd_ops *O;
static umd_ctx *C1, *C2;  /* 1 and 2 threads */
static void *WS1, *WS2;   /* their workspaces */

static void ctx_setup(void) {
    char err[128];
    if (O) return;
    O = umd_ops_cpu();
    umd_limits lim = {64, 64, 256, 8, 256, 64 * 64};
    T_REQUIRE(O->ctx_new(&C1, 1, err, sizeof err) == 0);
    T_REQUIRE(O->ctx_new(&C2, 2, err, sizeof err) == 0);
    size_t b1 = O->workspace_bytes(C1, &lim), b2 = O->workspace_bytes(C2, &lim);
    WS1 = O->alloc(C1, b1);
    WS2 = O->alloc(C2, b2);
    T_REQUIRE(WS1 && WS2);
    O->set_workspace(C1, WS1, b1);
    O->set_workspace(C2, WS2, b2);
}

static float *randn(size_t n, uint32_t key, float scale) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = scale * fx_normal(key, i);
    return x;
}

static float *zeros(size_t n) { return calloc(n, sizeof(float)); }

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* The scalar a finite-difference check differentiates: J = sum(R * f(inputs)). */
typedef double (*objective)(void *state);

/* Checks grad (the analytic dJ/dx) at `samples` elements of x (n) chosen by Philox, plus a
 * random direction, against central differences of J with step h. */
static int fd_check(const char *what, float *x, size_t n, const float *grad, objective J,
                    void *state, int samples, float h, double rtol, uint32_t key) {
    int bad = 0;
    double gmax = 0;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(grad[i]));
    for (int s = 0; s < samples; s++) {
        size_t i = (size_t)(fx_unit(key, (uint64_t)s) * (float)n);
        if (i >= n) i = n - 1;
        float keep = x[i];
        x[i] = keep + h;
        double up = J(state);
        x[i] = keep - h;
        double down = J(state);
        x[i] = keep;
        double fd = (up - down) / (2.0 * h), an = grad[i];
        if (fabs(fd - an) > rtol * fabs(an) + 1e-3 * gmax + 1e-5) {
            if (bad < 3) printf("  %s[%zu]: analytic %.8g, finite difference %.8g\n", what, i, an, fd);
            bad++;
        }
    }
    /* a random unit direction; its step is larger so each element still moves by ~h/4 */
    float *v = randn(n, key + 1, 1.0f), *saved = malloc(n * sizeof *saved);
    memcpy(saved, x, n * sizeof *saved);
    h = h * (float)fmax(1.0, 0.25 * sqrt((double)n));
    double norm = sqrt(dot(v, v, n)), an = 0;
    for (size_t i = 0; i < n; i++) v[i] = (float)(v[i] / norm);
    an = dot(v, grad, n);
    for (size_t i = 0; i < n; i++) x[i] += h * v[i];
    double up = J(state);
    for (size_t i = 0; i < n; i++) x[i] -= 2 * h * v[i];
    double down = J(state);
    memcpy(x, saved, n * sizeof *saved);
    double fd = (up - down) / (2.0 * h);
    if (fabs(fd - an) > rtol * fabs(an) + 1e-3 * gmax + 1e-5) {
        printf("  %s along a direction: analytic %.8g, finite difference %.8g\n", what, an, fd);
        bad++;
    }
    free(v);
    free(saved);
    T_CHECK_MSG(bad == 0, "%s: %d finite-difference mismatches", what, bad);
    return bad;
}

/* ---- linear ------------------------------------------------------------------------------------- */

typedef struct {
    int M, N, K;
    float *x, *W, *b, *y, *R;
} lin_state;

static double lin_J(void *s_) {
    lin_state *s = s_;
    O->linear_fwd(C1, s->y, s->x, s->W, s->b, s->M, s->N, s->K, UMD_F32);
    return dot(s->y, s->R, (size_t)s->M * s->N);
}

static void test_kernels_linear(void) {
    ctx_setup();
    lin_state s = {37, 24, 19, 0, 0, 0, 0, 0};
    size_t MK = (size_t)s.M * s.K, NK = (size_t)s.N * s.K, MN = (size_t)s.M * s.N;
    s.x = randn(MK, 1, 1.0f);
    s.W = randn(NK, 2, 0.3f);
    s.b = randn((size_t)s.N, 3, 0.5f);
    s.y = zeros(MN);
    s.R = randn(MN, 4, 1.0f);
    /* forward against a plain loop */
    O->linear_fwd(C2, s.y, s.x, s.W, s.b, s.M, s.N, s.K, UMD_F32);
    double maxerr = 0;
    for (int i = 0; i < s.M; i++)
        for (int j = 0; j < s.N; j++) {
            double r = s.b[j];
            for (int k = 0; k < s.K; k++) r += (double)s.x[i * s.K + k] * s.W[j * s.K + k];
            maxerr = fmax(maxerr, fabs(r - s.y[i * s.N + j]));
        }
    T_CHECK_MSG(maxerr < 1e-5, "linear forward error %g", maxerr);
    /* backward: dx written, then accumulated; dW, db accumulated */
    float *dx = randn(MK, 5, 1.0f), *dW = zeros(NK), *db = zeros((size_t)s.N);
    O->linear_bwd(C2, dx, dW, db, s.R, s.x, s.W, s.M, s.N, s.K, 0, UMD_F32);
    fd_check("linear dx", s.x, MK, dx, lin_J, &s, 20, 1e-2f, 1e-3, 10);
    fd_check("linear dW", s.W, NK, dW, lin_J, &s, 20, 1e-2f, 1e-3, 11);
    fd_check("linear db", s.b, (size_t)s.N, db, lin_J, &s, 10, 1e-2f, 1e-3, 12);
    float *dx2 = malloc(MK * sizeof *dx2);
    memcpy(dx2, dx, MK * sizeof *dx2);
    float *dW2 = zeros(NK), *db2 = zeros((size_t)s.N);
    O->linear_bwd(C2, dx2, dW2, db2, s.R, s.x, s.W, s.M, s.N, s.K, 1, UMD_F32);
    int acc_ok = 1;
    for (size_t i = 0; i < MK; i++) acc_ok &= fabsf(dx2[i] - 2 * dx[i]) <= 1e-5f * (1 + fabsf(dx[i]));
    T_CHECK_MSG(acc_ok, "linear dx_accumulate does not add");
    O->linear_bwd(C2, NULL, dW2, NULL, s.R, s.x, s.W, s.M, s.N, s.K, 0, UMD_F32);
    for (size_t i = 0; i < NK; i++) acc_ok &= fabsf(dW2[i] - 2 * dW[i]) <= 1e-5f * (1 + fabsf(dW[i]));
    T_CHECK_MSG(acc_ok, "linear dW does not accumulate");
    /* gemm, transposed operands, alpha and beta */
    float *Cm = randn(MN, 6, 1.0f), *Cref = malloc(MN * sizeof *Cref);
    memcpy(Cref, Cm, MN * sizeof *Cref);
    float *At = randn(MK, 7, 1.0f); /* (K, M) */
    O->gemm(C2, 1, 1, s.M, s.N, s.K, 0.5f, At, s.M, s.W, s.K, 2.0f, Cm, s.N);
    maxerr = 0;
    for (int i = 0; i < s.M; i++)
        for (int j = 0; j < s.N; j++) {
            double r = 2.0 * Cref[i * s.N + j];
            for (int k = 0; k < s.K; k++) r += 0.5 * At[k * s.M + i] * s.W[j * s.K + k];
            maxerr = fmax(maxerr, fabs(r - Cm[i * s.N + j]));
        }
    T_CHECK_MSG(maxerr < 1e-5, "gemm error %g", maxerr);
    free(s.x); free(s.W); free(s.b); free(s.y); free(s.R); free(dx); free(dW); free(db);
    free(dx2); free(dW2); free(db2); free(Cm); free(Cref); free(At);
}

/* ---- layernorm + modulation ---------------------------------------------------------------------- */

typedef struct {
    int n, T, w, mod_stride;
    long xs, os;
    float *x, *g, *b, *mod, *out, *mean, *rstd, *R;
    int use_mod;
} ln_state;

static double ln_J(void *s_) {
    ln_state *s = s_;
    O->layernorm_fwd(C1, s->out, s->mean, s->rstd, s->x, s->g, s->b, s->use_mod ? s->mod : NULL,
                     s->mod_stride, s->n, s->T, s->w, s->xs, s->os, UMD_F32);
    return dot(s->out, s->R, (size_t)s->n * s->os);
}

static void layernorm_case(int use_mod, int strided) {
    ln_state s = {5, 7, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, use_mod};
    s.mod_stride = 6 * s.w;
    /* strided: x holds sequences of T + 1 tokens and the op reads tokens 1..T (the decoder's
     * rep-token skip); out is packed */
    s.xs = (long)(s.T + strided) * s.w;
    s.os = (long)s.T * s.w;
    size_t nx = (size_t)s.n * s.xs, no = (size_t)s.n * s.os;
    float *xbuf = randn(nx, 20, 1.5f);
    for (size_t i = 0; i < nx; i++) xbuf[i] += 0.7f; /* off-centre rows */
    s.x = xbuf + (strided ? s.w : 0);
    s.g = randn((size_t)s.w, 21, 0.3f);
    for (int i = 0; i < s.w; i++) s.g[i] += 1.0f;
    s.b = randn((size_t)s.w, 22, 0.3f);
    s.mod = randn((size_t)s.n * s.mod_stride, 23, 0.4f);
    s.out = zeros(no);
    s.mean = zeros((size_t)s.n * s.T);
    s.rstd = zeros((size_t)s.n * s.T);
    s.R = randn(no, 24, 1.0f);
    float *dxbuf = zeros(nx), *dg = zeros((size_t)s.w), *db = zeros((size_t)s.w);
    float *dmod = zeros((size_t)s.n * s.mod_stride);
    O->layernorm_fwd(C2, s.out, s.mean, s.rstd, s.x, s.g, s.b, use_mod ? s.mod : NULL, s.mod_stride,
                     s.n, s.T, s.w, s.xs, s.os, UMD_F32);
    /* forward against a plain double loop */
    double maxerr = 0;
    for (int b = 0; b < s.n; b++)
        for (int t = 0; t < s.T; t++) {
            const float *xr = s.x + b * s.xs + t * s.w;
            double mu = 0, var = 0;
            for (int i = 0; i < s.w; i++) mu += xr[i];
            mu /= s.w;
            for (int i = 0; i < s.w; i++) var += (xr[i] - mu) * (xr[i] - mu);
            var /= s.w;
            for (int i = 0; i < s.w; i++) {
                double y = (xr[i] - mu) / sqrt(var + 1e-6) * s.g[i] + s.b[i];
                if (use_mod) y = y * (1 + s.mod[b * s.mod_stride + s.w + i]) + s.mod[b * s.mod_stride + i];
                maxerr = fmax(maxerr, fabs(y - s.out[b * s.os + t * s.w + i]));
            }
        }
    T_CHECK_MSG(maxerr < 1e-5, "layernorm forward error %g", maxerr);
    O->layernorm_bwd(C2, dxbuf + (strided ? s.w : 0), dg, db, use_mod ? dmod : NULL, s.R, s.x, s.mean,
                     s.rstd, s.g, s.b, use_mod ? s.mod : NULL, s.mod_stride, s.n, s.T, s.w, s.xs,
                     s.os, 0, UMD_F32);
    fd_check("layernorm dx", s.x, nx - (strided ? s.w : 0), dxbuf + (strided ? s.w : 0), ln_J, &s,
             24, 1e-2f, 2e-3, 25);
    fd_check("layernorm dgamma", s.g, (size_t)s.w, dg, ln_J, &s, 10, 1e-2f, 2e-3, 26);
    fd_check("layernorm dbeta", s.b, (size_t)s.w, db, ln_J, &s, 10, 1e-2f, 2e-3, 27);
    if (use_mod) {
        /* only the (shift, scale) slices of each row are the op's; check those */
        float *dm = zeros((size_t)s.n * s.mod_stride);
        for (int b = 0; b < s.n; b++)
            memcpy(dm + b * s.mod_stride, dmod + b * s.mod_stride, 2 * s.w * sizeof(float));
        fd_check("layernorm dmod", s.mod, (size_t)s.n * s.mod_stride, dm, ln_J, &s, 24, 1e-2f, 2e-3, 28);
        free(dm);
    }
    /* the 1-thread backward agrees; the strided token 0 rows are untouched */
    float *dx1 = zeros(nx), *dg1 = zeros((size_t)s.w), *db1 = zeros((size_t)s.w);
    float *dmod1 = zeros((size_t)s.n * s.mod_stride);
    O->layernorm_bwd(C1, dx1 + (strided ? s.w : 0), dg1, db1, use_mod ? dmod1 : NULL, s.R, s.x, s.mean,
                     s.rstd, s.g, s.b, use_mod ? s.mod : NULL, s.mod_stride, s.n, s.T, s.w, s.xs,
                     s.os, 0, UMD_F32);
    double d = 0;
    for (size_t i = 0; i < nx; i++) d = fmax(d, fabs(dx1[i] - dxbuf[i]));
    for (int i = 0; i < s.w; i++) d = fmax(d, fabs(dg1[i] - dg[i]) + fabs(db1[i] - db[i]));
    T_CHECK_MSG(d < 1e-4, "1-thread and 2-thread backward differ by %g", d);
    if (strided)
        for (int b = 0; b < s.n; b++)
            for (int i = 0; i < s.w; i++) T_CHECK(dxbuf[b * s.xs + i] == 0.0f);
    free(xbuf); free(s.g); free(s.b); free(s.mod); free(s.out); free(s.mean); free(s.rstd);
    free(s.R); free(dxbuf); free(dg); free(db); free(dmod); free(dx1); free(dg1); free(db1);
    free(dmod1);
}

static void test_kernels_layernorm(void) {
    ctx_setup();
    layernorm_case(0, 0);
    layernorm_case(1, 0);
    layernorm_case(1, 1);
}

/* ---- gated residual -------------------------------------------------------------------------------- */

typedef struct {
    int n, T, w, gs;
    float *x, *y, *g, *out, *R;
} gate_state;

static double gate_J(void *s_) {
    gate_state *s = s_;
    O->gate_residual_fwd(C1, s->out, s->x, s->y, s->g, s->gs, s->n, s->T, s->w, UMD_F32);
    return dot(s->out, s->R, (size_t)s->n * s->T * s->w);
}

static void test_kernels_gate_residual(void) {
    ctx_setup();
    gate_state s = {4, 6, 20, 120, 0, 0, 0, 0, 0};
    size_t N = (size_t)s.n * s.T * s.w;
    s.x = randn(N, 30, 1.0f);
    s.y = randn(N, 31, 1.0f);
    s.g = randn((size_t)s.n * s.gs, 32, 1.0f);
    s.out = zeros(N);
    s.R = randn(N, 33, 1.0f);
    float *dy = zeros(N), *dg = zeros((size_t)s.n * s.gs);
    O->gate_residual_bwd(C2, dy, dg, s.R, s.y, s.g, s.gs, s.n, s.T, s.w, UMD_F32);
    fd_check("gate dy", s.y, N, dy, gate_J, &s, 20, 1e-2f, 1e-3, 34);
    float *dgm = zeros((size_t)s.n * s.gs);
    for (int b = 0; b < s.n; b++) memcpy(dgm + b * s.gs, dg + b * s.gs, s.w * sizeof(float));
    fd_check("gate dgate", s.g, (size_t)s.n * s.gs, dgm, gate_J, &s, 20, 1e-2f, 1e-3, 35);
    /* the residual path's gradient is dout itself */
    fd_check("gate dx", s.x, N, s.R, gate_J, &s, 10, 1e-2f, 1e-3, 36);
    /* in place (out aliases x) */
    float *xc = malloc(N * sizeof *xc);
    memcpy(xc, s.x, N * sizeof *xc);
    O->gate_residual_fwd(C2, s.out, s.x, s.y, s.g, s.gs, s.n, s.T, s.w, UMD_F32);
    O->gate_residual_fwd(C2, xc, xc, s.y, s.g, s.gs, s.n, s.T, s.w, UMD_F32);
    T_CHECK(memcmp(xc, s.out, N * sizeof *xc) == 0);
    free(s.x); free(s.y); free(s.g); free(s.out); free(s.R); free(dy); free(dg); free(dgm); free(xc);
}

static void same_bits(const char *what, const float *a, const float *b, size_t n, int which);

/* residual_layernorm_fwd equals gate_residual_fwd then layernorm_fwd bit for bit: with and
 * without modulation, widths that are and are not multiples of 4, 1 and 2 threads, xo aliasing x
 * (as the trainer never does, but the op allows); its outputs are poisoned first, so an element it
 * does not write fails. */
static void test_kernels_residual_layernorm(void) {
    ctx_setup();
    static const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {2, 17, 64}, {4, 9, 130}};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        const int n = shapes[k][0], T = shapes[k][1], w = shapes[k][2], st = 6 * w;
        const size_t N = (size_t)n * T * w, R = (size_t)n * T;
        float *x = randn(N, 40 + (uint32_t)k, 1.0f), *y = randn(N, 50 + (uint32_t)k, 1.0f);
        float *mod = randn((size_t)n * st, 60 + (uint32_t)k, 0.5f);
        float *g = randn((size_t)w, 70 + (uint32_t)k, 1.0f), *b = randn((size_t)w, 80, 0.3f);
        float *xo = malloc(N * sizeof *xo), *out = malloc(N * sizeof *out);
        float *mean = malloc(R * sizeof *mean), *rstd = malloc(R * sizeof *rstd);
        float *xo2 = zeros(N), *out2 = zeros(N), *mean2 = zeros(R), *rstd2 = zeros(R);
        for (int use_mod = 0; use_mod < 2; use_mod++) {
            const float *md = use_mod ? mod + 3 * w : NULL;
            for (int threads = 1; threads <= 2; threads++) {
                umd_ctx *c = threads == 1 ? C1 : C2;
                O->gate_residual_fwd(c, xo2, x, y, mod + 2 * w, st, n, T, w, UMD_F32);
                O->layernorm_fwd(c, out2, mean2, rstd2, xo2, g, b, md, st, n, T, w, (long)T * w,
                                 (long)T * w, UMD_F32);
                for (size_t i = 0; i < N; i++) xo[i] = out[i] = NAN;
                for (size_t i = 0; i < R; i++) mean[i] = rstd[i] = NAN;
                O->residual_layernorm_fwd(c, xo, out, mean, rstd, x, y, mod + 2 * w, st, g, b, md,
                                          st, n, T, w, UMD_F32);
                int which = (int)k * 100 + use_mod * 10 + threads;
                same_bits("xo", xo, xo2, N, which);
                same_bits("out", out, out2, N, which);
                same_bits("mean", mean, mean2, R, which);
                same_bits("rstd", rstd, rstd2, R, which);
                /* in place: xo = x */
                memcpy(xo, x, N * sizeof *xo);
                for (size_t i = 0; i < N; i++) out[i] = NAN;
                for (size_t i = 0; i < R; i++) mean[i] = rstd[i] = NAN;
                O->residual_layernorm_fwd(c, xo, out, mean, rstd, xo, y, mod + 2 * w, st, g, b, md,
                                          st, n, T, w, UMD_F32);
                same_bits("xo in place", xo, xo2, N, which);
                same_bits("out in place", out, out2, N, which);
                same_bits("mean in place", mean, mean2, R, which);
                same_bits("rstd in place", rstd, rstd2, R, which);
            }
        }
        free(x); free(y); free(mod); free(g); free(b); free(xo); free(out); free(mean); free(rstd);
        free(xo2); free(out2); free(mean2); free(rstd2);
    }
}

/* ---- activations ----------------------------------------------------------------------------------- */

typedef struct {
    size_t n;
    int silu;
    float *x, *y, *R;
} act_state;

static double act_J(void *s_) {
    act_state *s = s_;
    if (s->silu) O->silu_fwd(C1, s->y, s->x, s->n);
    else O->gelu_fwd(C1, s->y, s->x, s->n);
    return dot(s->y, s->R, s->n);
}

static void test_kernels_activations(void) {
    ctx_setup();
    for (int silu = 0; silu < 2; silu++) {
        act_state s = {40000, silu, 0, 0, 0}; /* above the one-thread threshold */
        s.x = randn(s.n, 40 + silu, 3.0f);
        s.x[0] = 0.0f; s.x[1] = 12.0f; s.x[2] = -12.0f; s.x[3] = 1e-4f; s.x[4] = -100.0f;
        s.y = zeros(s.n);
        s.R = randn(s.n, 42, 1.0f);
        act_J(&s);
        double maxerr = 0;
        for (size_t i = 0; i < s.n; i++) {
            double v = s.x[i], ref;
            if (silu) ref = v / (1 + exp(-v));
            else ref = 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
            maxerr = fmax(maxerr, fabs(ref - s.y[i]) / (1e-3 + fabs(ref)));
        }
        T_CHECK_MSG(maxerr < 2e-5, "%s forward relative error %g", silu ? "silu" : "gelu", maxerr);
        float *dx = zeros(s.n);
        if (silu) O->silu_bwd(C2, dx, s.R, s.x, s.n);
        else O->gelu_bwd(C2, dx, s.R, s.x, s.n);
        fd_check(silu ? "silu dx" : "gelu dx", s.x, s.n, dx, act_J, &s, 30, 1e-3f, 5e-3, 43 + silu);
        /* in place (dx aliases dy) */
        float *d2 = malloc(s.n * sizeof *d2);
        memcpy(d2, s.R, s.n * sizeof *d2);
        if (silu) O->silu_bwd(C2, d2, d2, s.x, s.n);
        else O->gelu_bwd(C2, d2, d2, s.x, s.n);
        T_CHECK(memcmp(d2, dx, s.n * sizeof *d2) == 0);
        free(s.x); free(s.y); free(s.R); free(dx); free(d2);
    }
}

/* ---- MLP ------------------------------------------------------------------------------------------- */

static void same_bits(const char *what, const float *a, const float *b, size_t n, int which) {
    T_CHECK_MSG(memcmp(a, b, n * sizeof *a) == 0, "%s differs from the separate ops (case %03d)",
                what, which);
}

/* mlp_fwd / mlp_bwd equal the separate ops they replace (fc1, GELU, fc2 and their backwards, the
 * GELU output kept) bit for bit, on 1 and 2 threads, with and without biases, and with dx aliasing
 * dy as the trainer calls it. (The separate ops are checked against finite differences above.) */
static void test_kernels_mlp(void) {
    ctx_setup();
    const int shapes[][3] = {{131, 63, 26}, {600, 40, 24}, {5, 7, 3}}; /* M F w */
    for (int s = 0; s < 3; s++)
        for (int t = 0; t < 2; t++)
            for (int v = 0; v < 3; v++) { /* 0: no biases; 1: biases; 2: biases, dx aliasing dy */
                umd_ctx *C = t ? C2 : C1;
                int M = shapes[s][0], F = shapes[s][1], w = shapes[s][2], bias = v > 0;
                size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
                uint32_t k = 600 + 20 * (uint32_t)s;
                float *x = randn(Mw, k, 1.0f), *W1 = randn(Fw, k + 1, 0.3f);
                float *W2 = randn(Fw, k + 2, 0.3f), *dy = randn(Mw, k + 3, 1.0f);
                float *b1 = bias ? randn((size_t)F, k + 4, 0.5f) : NULL;
                float *b2 = bias ? randn((size_t)w, k + 5, 0.5f) : NULL;
                /* the separate ops */
                float *h = zeros(MF), *hg = zeros(MF), *y = zeros(Mw), *tH = zeros(MF);
                float *dx = zeros(Mw), *dW1 = randn(Fw, k + 6, 1.0f), *dW2 = randn(Fw, k + 7, 1.0f);
                float *db1 = randn((size_t)F, k + 8, 1.0f), *db2 = randn((size_t)w, k + 9, 1.0f);
                O->linear_fwd(C, h, x, W1, b1, M, F, w, UMD_F32);
                O->gelu_fwd(C, hg, h, MF);
                O->linear_fwd(C, y, hg, W2, b2, M, w, F, UMD_F32);
                O->linear_bwd(C, tH, dW2, bias ? db2 : NULL, dy, hg, W2, M, w, F, 0, UMD_F32);
                O->gelu_bwd(C, tH, tH, h, MF);
                O->linear_bwd(C, dx, dW1, bias ? db1 : NULL, tH, x, W1, M, F, w, 0, UMD_F32);
                /* the fused ops, from the same starting values */
                float *h2 = zeros(MF), *y2 = zeros(Mw), *tmp = randn(MF, k + 10, 1.0f);
                float *dW1b = randn(Fw, k + 6, 1.0f), *dW2b = randn(Fw, k + 7, 1.0f);
                float *db1b = randn((size_t)F, k + 8, 1.0f), *db2b = randn((size_t)w, k + 9, 1.0f);
                float *dyb = randn(Mw, k + 3, 1.0f), *dx2 = v == 2 ? dyb : zeros(Mw);
                O->mlp_fwd(C, y2, h2, tmp, x, W1, b1, W2, b2, M, F, w, UMD_F32);
                O->mlp_bwd(C, dx2, dW1b, bias ? db1b : NULL, dW2b, bias ? db2b : NULL, dyb, x, h2,
                           W1, W2, tmp, M, F, w, UMD_F32);
                int c = s * 100 + t * 10 + v;
                same_bits("mlp h", h2, h, MF, c);
                same_bits("mlp y", y2, y, Mw, c);
                same_bits("mlp dx", dx2, dx, Mw, c);
                same_bits("mlp dW1", dW1b, dW1, Fw, c);
                same_bits("mlp dW2", dW2b, dW2, Fw, c);
                same_bits("mlp db1", db1b, db1, (size_t)F, c);
                same_bits("mlp db2", db2b, db2, (size_t)w, c);
                free(x); free(W1); free(W2); free(dy); free(b1); free(b2); free(h); free(hg); free(y);
                free(tH); free(dx); free(dW1); free(dW2); free(db1); free(db2); free(h2); free(y2);
                free(tmp); free(dW1b); free(dW2b); free(db1b); free(db2b); free(dyb);
                if (v != 2) free(dx2);
            }
}

/* ---- operand tensors in bf16 (umd_ops_cpu_bf16) ----------------------------------------------------- */

/* x's values rounded to bf16: the halves, and their fp32 widening. */
static void bf16_pair(const float *x, size_t n, uint16_t **half, float **wide) {
    *half = malloc(n * sizeof **half);
    *wide = malloc(n * sizeof **wide);
    for (size_t i = 0; i < n; i++) (*wide)[i] = fx_widen((*half)[i] = fx_bf16(x[i]));
}

static void near_rel(const char *what, const float *a, const float *b, size_t n, double tol,
                     int which) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    T_CHECK_MSG(sqrt(num) <= tol * sqrt(den) + 1e-30, "%s: relative error %g (case %03d)", what,
                sqrt(num / (den + 1e-300)), which);
}

/* A bf16 attention case: n sequences of T tokens, heads of hd; qkv drawn from key and rounded (qh
 * the bf16 values, qw their widening), dO g from key + 10; the sizes of qkv, out and lse. Shapes:
 * rows left after the 4-row blocks, one token, head widths 8 to 32. */
typedef struct {
    int n, T, heads, hd;
    size_t nq, no, nl;
    float *qw, *g;
    uint16_t *qh;
} att16_case;
static const int ATT16_SHAPES[][4] = {{3, 11, 2, 8}, {2, 18, 1, 24}, {1, 1, 2, 8}, {2, 37, 2, 32}};
#define ATT16_NSHAPES (sizeof ATT16_SHAPES / sizeof *ATT16_SHAPES)

static att16_case att16_new(size_t k, uint32_t key) {
    att16_case a;
    a.n = ATT16_SHAPES[k][0], a.T = ATT16_SHAPES[k][1], a.heads = ATT16_SHAPES[k][2];
    a.hd = ATT16_SHAPES[k][3];
    const size_t W = (size_t)a.heads * a.hd;
    a.nq = (size_t)a.n * a.T * 3 * W, a.no = (size_t)a.n * a.T * W;
    a.nl = (size_t)a.n * a.heads * a.T;
    float *qkv = randn(a.nq, key, 1.0f);
    bf16_pair(qkv, a.nq, &a.qh, &a.qw);
    free(qkv);
    a.g = randn(a.no, key + 10, 1.0f);
    return a;
}

static void att16_free(att16_case *a) {
    free(a->qw);
    free(a->qh);
    free(a->g);
}

/* residual_layernorm_fwd (fused) or layernorm_fwd of x over packed (n, T, w) rows, the gate and
 * modulation rows (md: shift, scale; NULL: none) 6w apart, out typed as `type`. */
static void ln_op(const umd_ops *o, umd_ctx *c, int fused, float *xo, void *out, float *mean,
                  float *rstd, const float *x, const float *y, const float *gate, const float *g,
                  const float *b, const float *md, int n, int T, int w, int type) {
    const int st = 6 * w;
    if (fused)
        o->residual_layernorm_fwd(c, xo, out, mean, rstd, x, y, gate, st, g, b, md, st, n, T, w,
                                  type);
    else
        o->layernorm_fwd(c, out, mean, rstd, x, g, b, md, st, n, T, w, (long)T * w, (long)T * w,
                         type);
}

/* The MLP keeping h in bf16 (UMD_OPND_H) on a bf16 x, in the bf16 context cb, against the fp32
 * ops in cf: h is fp32 fc1's h32 rounded; y, dx, db1, dW2 and db2 are the fp32 ops' bits on the
 * widened h (GELU and its derivative read the rounded values); dW1 within fp32 rounding. */
static void bf16_hidden_case(umd_ctx *cf, umd_ctx *cb, const umd_ops *B16, const float *xw,
                             const uint16_t *xh, const float *h32, const float *W1,
                             const float *b1, const float *W2, const float *b2, const float *gy,
                             int M, int F, int w, int which) {
    const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
    uint16_t *h16 = malloc(MF * sizeof *h16);
    float *hw = malloc(MF * sizeof *hw), *g = zeros(MF), *tmp = zeros(MF);
    float *y = malloc(Mw * sizeof *y), *yref = zeros(Mw);
    memset(h16, 0xff, MF * sizeof *h16);
    for (size_t i = 0; i < Mw; i++) y[i] = NAN;
    B16->mlp_fwd(cb, y, h16, tmp, xh, W1, b1, W2, b2, M, F, w, UMD_OPND | UMD_OPND_H);
    int ok = 1;
    for (size_t i = 0; i < MF; i++) ok &= h16[i] == fx_bf16(h32[i]);
    T_CHECK_MSG(ok, "mlp_fwd's bf16 h is not fc1's fp32 h rounded (case %03d)", which);
    for (size_t i = 0; i < MF; i++) hw[i] = fx_widen(h16[i]);
    O->gelu_fwd(cf, g, hw, MF);
    O->linear_fwd(cf, yref, g, W2, b2, M, w, F, UMD_F32);
    same_bits("mlp_fwd y on a bf16 h", y, yref, Mw, which);
    float *d[2][5];
    for (int k = 0; k < 2; k++) {
        d[k][0] = zeros(Mw), d[k][1] = zeros(Fw), d[k][2] = zeros((size_t)F);
        d[k][3] = zeros(Fw), d[k][4] = zeros((size_t)w);
    }
    O->mlp_bwd(cf, d[0][0], d[0][1], d[0][2], d[0][3], d[0][4], gy, xw, hw, W1, W2, tmp, M, F, w,
               UMD_F32);
    B16->mlp_bwd(cb, d[1][0], d[1][1], d[1][2], d[1][3], d[1][4], gy, xh, h16, W1, W2, tmp, M, F,
                 w, UMD_OPND | UMD_OPND_H);
    same_bits("mlp_bwd dx on a bf16 h", d[1][0], d[0][0], Mw, which);
    near_rel("mlp_bwd dW1 on a bf16 h", d[1][1], d[0][1], Fw, 1e-6, which);
    same_bits("mlp_bwd db1 on a bf16 h", d[1][2], d[0][2], (size_t)F, which);
    same_bits("mlp_bwd dW2 on a bf16 h", d[1][3], d[0][3], Fw, which);
    same_bits("mlp_bwd db2 on a bf16 h", d[1][4], d[0][4], (size_t)w, which);
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 5; j++) free(d[k][j]);
    free(h16); free(hw); free(g); free(tmp); free(y); free(yref);
}

/* A context with bf16 operand tensors: the LayerNorms and a Linear with a bf16 y write the fp32
 * rows rounded to bf16 (and everything else as the fp32 context does), and the products that
 * read a bf16 operand, attention's on a bf16 qkv included, give the results of the fp32 ops on
 * its widened values: the same bits in the forwards, in dx and in dqkv, and within fp32
 * rounding in dW (its sum over rows runs a widened block at a time); so does the MLP with its h
 * in bf16, on the rounded h (bf16_hidden_case). 1 and 2
 * threads; rows wider than fit one widening block, and non-multiples of everything. */
static void test_kernels_bf16_operands(void) {
    ctx_setup();
    char err[128];
    const umd_ops *B16 = umd_ops_cpu_bf16();
    T_EQ_STR(B16->name, "cpu-bf16");
    /* bf16 contexts (Cb) and fp32 ones (Cf) of 1 and 2 threads, for the same limits: the ops
     * then split their work alike (a dW partial that does not fit makes a team of one) */
    umd_ctx *Cb[2], *Cf[2];
    void *ws[2], *wf[2];
    umd_limits lim = {64, 64, 512, 8, 256, 2000 * 16};
    for (int t = 0; t < 2; t++) {
        T_REQUIRE(B16->ctx_new(&Cb[t], t + 1, err, sizeof err) == 0);
        T_REQUIRE(O->ctx_new(&Cf[t], t + 1, err, sizeof err) == 0);
        size_t bytes = B16->workspace_bytes(Cb[t], &lim), fbytes = O->workspace_bytes(Cf[t], &lim);
        T_REQUIRE((ws[t] = B16->alloc(Cb[t], bytes)) != NULL);
        T_REQUIRE((wf[t] = O->alloc(Cf[t], fbytes)) != NULL);
        B16->set_workspace(Cb[t], ws[t], bytes);
        O->set_workspace(Cf[t], wf[t], fbytes);
    }
    T_EQ_INT(O->operand_bytes(C1), 4);
    T_EQ_INT(B16->operand_bytes(Cb[0]), 2);

    /* LayerNorm and residual + LayerNorm */
    static const int ln_shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {2, 17, 64}, {4, 9, 130}};
    for (size_t k = 0; k < sizeof ln_shapes / sizeof *ln_shapes; k++) {
        const int n = ln_shapes[k][0], T = ln_shapes[k][1], w = ln_shapes[k][2], st = 6 * w;
        const size_t N = (size_t)n * T * w, R = (size_t)n * T;
        float *x = randn(N, 400 + (uint32_t)k, 1.0f), *y = randn(N, 410 + (uint32_t)k, 1.0f);
        for (size_t i = 0; i < N; i++) x[i] += 0.5f;
        float *mod = randn((size_t)n * st, 420 + (uint32_t)k, 0.5f);
        float *g = randn((size_t)w, 430 + (uint32_t)k, 1.0f), *b = randn((size_t)w, 440, 0.3f);
        float *out = zeros(N), *mean = zeros(R), *rstd = zeros(R), *xo = zeros(N);
        float *mean2 = malloc(R * sizeof *mean2), *rstd2 = malloc(R * sizeof *rstd2);
        float *xo2 = malloc(N * sizeof *xo2), *out32 = malloc(N * sizeof *out32);
        uint16_t *o16 = malloc(N * sizeof *o16);
        for (int use_mod = 0; use_mod < 2; use_mod++)
            for (int t = 0; t < 2; t++) {
                const float *md = use_mod ? mod + 3 * w : NULL;
                int which = (int)k * 100 + use_mod * 10 + t;
                for (int fused = 0; fused < 2; fused++) {
                    ln_op(O, C1, fused, xo, out, mean, rstd, x, y, mod + 2 * w, g, b, md, n, T,
                          w, UMD_F32);
                    memset(o16, 0xff, N * sizeof *o16); /* NaN halves: unwritten ones fail */
                    for (size_t i = 0; i < R; i++) mean2[i] = rstd2[i] = NAN;
                    for (size_t i = 0; i < N; i++) xo2[i] = out32[i] = NAN;
                    ln_op(B16, Cb[t], fused, xo2, o16, mean2, rstd2, x, y, mod + 2 * w, g, b, md,
                          n, T, w, UMD_OPND);
                    int ok = 1;
                    for (size_t i = 0; i < N; i++) ok &= o16[i] == fx_bf16(out[i]);
                    T_CHECK_MSG(ok, "%s: bf16 output is not the fp32 one rounded (case %03d)",
                                fused ? "residual_layernorm_fwd" : "layernorm_fwd", which);
                    same_bits("bf16 context mean", mean2, mean, R, which);
                    same_bits("bf16 context rstd", rstd2, rstd, R, which);
                    if (fused) same_bits("bf16 context xo", xo2, xo, N, which);
                    /* UMD_F32 in a bf16 context: fp32, as ever */
                    ln_op(B16, Cb[t], fused, xo2, out32, mean2, rstd2, x, y, mod + 2 * w, g, b,
                          md, n, T, w, UMD_F32);
                    same_bits("bf16 context, fp32 output", out32, out, N, which);
                }
            }
        free(x); free(y); free(mod); free(g); free(b); free(out); free(mean); free(rstd);
        free(xo); free(mean2); free(rstd2); free(xo2); free(out32); free(o16);
    }

    /* Linear and MLP on a bf16 x: (M, N, K); K = 300 widens 218 rows a block */
    /* (1100, 2000, 16): the MLP widens its bf16 h for gelu' in two blocks of rows */
    static const int lin_shapes[][3] = {{1, 1, 1}, {37, 24, 19}, {700, 33, 300}, {530, 16, 64},
                                        {1100, 2000, 16}};
    for (size_t k = 0; k < sizeof lin_shapes / sizeof *lin_shapes; k++) {
        const int M = lin_shapes[k][0], N = lin_shapes[k][1], K = lin_shapes[k][2];
        const size_t MK = (size_t)M * K, NK = (size_t)N * K, MN = (size_t)M * N;
        float *x = randn(MK, 500 + (uint32_t)k, 1.0f), *xw;
        uint16_t *xh;
        bf16_pair(x, MK, &xh, &xw);
        float *W = randn(NK, 510 + (uint32_t)k, 0.3f), *bias = randn((size_t)N, 520, 0.5f);
        float *dy = randn(MN, 530 + (uint32_t)k, 1.0f);
        float *y = zeros(MN), *y2 = malloc(MN * sizeof *y2);
        float *dx = randn(MK, 540, 1.0f), *dx2 = malloc(MK * sizeof *dx2);
        float *dW = randn(NK, 550, 1.0f), *dW2 = malloc(NK * sizeof *dW2);
        float *db = randn((size_t)N, 560, 1.0f), *db2 = malloc((size_t)N * sizeof *db2);
        float *dx0 = malloc(MK * sizeof *dx0), *dW0 = malloc(NK * sizeof *dW0);
        float *db0 = malloc((size_t)N * sizeof *db0);
        memcpy(dx0, dx, MK * sizeof *dx);
        memcpy(dW0, dW, NK * sizeof *dW);
        memcpy(db0, db, (size_t)N * sizeof *db);
        for (int t = 0; t < 2; t++) {
            umd_ctx *cf = Cf[t];
            int which = (int)k * 10 + t;
            O->linear_fwd(cf, y, xw, W, bias, M, N, K, UMD_F32);
            for (size_t i = 0; i < MN; i++) y2[i] = NAN;
            B16->linear_fwd(Cb[t], y2, xh, W, bias, M, N, K, UMD_OPND);
            same_bits("linear_fwd on a bf16 x", y2, y, MN, which);
            /* y as an operand too, from the fp32 x and from the bf16 one: the fp32 y rounded */
            uint16_t *y16 = malloc(MN * sizeof *y16);
            for (int xo = 0; xo < 2; xo++) {
                memset(y16, 0xff, MN * sizeof *y16);
                B16->linear_fwd(Cb[t], y16, xo ? (const void *)xh : xw, W, bias, M, N, K,
                                UMD_OPND_Y | (xo ? UMD_OPND : 0));
                int ok = 1;
                for (size_t i = 0; i < MN; i++) ok &= y16[i] == fx_bf16(y[i]);
                T_CHECK_MSG(ok, "linear_fwd's bf16 y is not the fp32 one rounded (case %03d, x %s)",
                            which, xo ? "bf16" : "fp32");
            }
            free(y16);
            for (int acc = 0; acc < 2; acc++) {
                memcpy(dx, dx0, MK * sizeof *dx);
                memcpy(dW, dW0, NK * sizeof *dW);
                memcpy(db, db0, (size_t)N * sizeof *db);
                memcpy(dx2, dx0, MK * sizeof *dx);
                memcpy(dW2, dW0, NK * sizeof *dW);
                memcpy(db2, db0, (size_t)N * sizeof *db);
                O->linear_bwd(cf, dx, dW, db, dy, xw, W, M, N, K, acc, UMD_F32);
                B16->linear_bwd(Cb[t], dx2, dW2, db2, dy, xh, W, M, N, K, acc, UMD_OPND);
                same_bits("linear_bwd dx on a bf16 x", dx2, dx, MK, which * 10 + acc);
                same_bits("linear_bwd db on a bf16 x", db2, db, (size_t)N, which * 10 + acc);
                near_rel("linear_bwd dW on a bf16 x", dW2, dW, NK, 1e-6, which * 10 + acc);
            }
        }
        /* the MLP with hidden width N */
        const int F = N, w = K;
        float *W1 = randn(NK, 570 + (uint32_t)k, 0.3f), *W2 = randn(NK, 580 + (uint32_t)k, 0.3f);
        float *b1 = randn((size_t)F, 590, 0.5f), *b2 = randn((size_t)w, 600, 0.5f);
        float *gy = randn(MK, 610 + (uint32_t)k, 1.0f);
        float *h = zeros(MN), *h2 = zeros(MN), *tmp = zeros(MN), *my = zeros(MK), *my2 = zeros(MK);
        float *mdx = zeros(MK), *mdx2 = zeros(MK);
        float *dW1 = zeros(NK), *dW1b = zeros(NK), *dW2a = zeros(NK), *dW2b = zeros(NK);
        float *db1 = zeros((size_t)F), *db1b = zeros((size_t)F), *db2a = zeros((size_t)w);
        float *db2b = zeros((size_t)w);
        for (int t = 0; t < 2; t++) {
            umd_ctx *cf = Cf[t];
            int which = (int)k * 10 + t;
            O->mlp_fwd(cf, my, h, tmp, xw, W1, b1, W2, b2, M, F, w, UMD_F32);
            B16->mlp_fwd(Cb[t], my2, h2, tmp, xh, W1, b1, W2, b2, M, F, w, UMD_OPND);
            same_bits("mlp_fwd h on a bf16 x", h2, h, MN, which);
            same_bits("mlp_fwd y on a bf16 x", my2, my, MK, which);
            O->mlp_bwd(cf, mdx, dW1, db1, dW2a, db2a, gy, xw, h, W1, W2, tmp, M, F, w, UMD_F32);
            B16->mlp_bwd(Cb[t], mdx2, dW1b, db1b, dW2b, db2b, gy, xh, h2, W1, W2, tmp, M, F, w,
                         UMD_OPND);
            same_bits("mlp_bwd dx on a bf16 x", mdx2, mdx, MK, which);
            same_bits("mlp_bwd db1 on a bf16 x", db1b, db1, (size_t)F, which);
            same_bits("mlp_bwd dW2 on a bf16 x", dW2b, dW2a, NK, which);
            same_bits("mlp_bwd db2 on a bf16 x", db2b, db2a, (size_t)w, which);
            near_rel("mlp_bwd dW1 on a bf16 x", dW1b, dW1, NK, 1e-6, which);
            bf16_hidden_case(cf, Cb[t], B16, xw, xh, h, W1, b1, W2, b2, gy, M, F, w, which);
        }
        free(x); free(xw); free(xh); free(W); free(bias); free(dy); free(y); free(y2); free(dx);
        free(dx2); free(dW); free(dW2); free(db); free(db2); free(dx0); free(dW0); free(db0);
        free(W1); free(W2); free(b1); free(b2); free(gy); free(h); free(h2); free(tmp); free(my);
        free(my2); free(mdx); free(mdx2); free(dW1); free(dW1b); free(dW2a); free(dW2b); free(db1);
        free(db1b); free(db2a); free(db2b);
    }
    /* attention on a bf16 qkv: the fp32 op's bits on the widened values, at any head width */
    T_EQ_INT(B16->attention_operand(Cb[0], 64), 1);
    T_EQ_INT(B16->attention_operand(Cb[1], 24), 1);
    T_EQ_INT(O->attention_operand(C1, 64), 0);
    T_EQ_INT(B16->hidden_operand(Cb[0]), 1);
    T_EQ_INT(O->hidden_operand(C1), 0);
    for (size_t k = 0; k < ATT16_NSHAPES; k++) {
        att16_case a = att16_new(k, 700 + (uint32_t)k);
        const int n = a.n, T = a.T, heads = a.heads, hd = a.hd;
        const size_t nq = a.nq, no = a.no, nl = a.nl;
        const float *qw = a.qw, *g = a.g;
        const uint16_t *qh = a.qh;
        float *out = zeros(no), *lse = zeros(nl), *dq = zeros(nq);
        float *out2 = malloc(no * sizeof *out2), *lse2 = malloc(nl * sizeof *lse2);
        float *dq2 = malloc(nq * sizeof *dq2);
        for (int t = 0; t < 2; t++) {
            umd_ctx *cf = Cf[t];
            int which = (int)k * 10 + t;
            O->attention_fwd(cf, out, lse, qw, n, T, heads, hd, UMD_F32);
            O->attention_bwd(cf, dq, g, qw, out, lse, n, T, heads, hd, UMD_F32);
            for (size_t i = 0; i < no; i++) out2[i] = NAN;
            for (size_t i = 0; i < nl; i++) lse2[i] = NAN;
            for (size_t i = 0; i < nq; i++) dq2[i] = NAN;
            B16->attention_fwd(Cb[t], out2, lse2, qh, n, T, heads, hd, UMD_OPND);
            B16->attention_bwd(Cb[t], dq2, g, qh, out, lse, n, T, heads, hd, UMD_OPND);
            same_bits("attention_fwd out on a bf16 qkv", out2, out, no, which);
            same_bits("attention_fwd lse on a bf16 qkv", lse2, lse, nl, which);
            same_bits("attention_bwd dqkv on a bf16 qkv", dq2, dq, nq, which);
        }
        att16_free(&a);
        free(out); free(lse); free(dq); free(out2); free(lse2); free(dq2);
    }
    for (int t = 0; t < 2; t++) {
        B16->release(Cb[t], ws[t]);
        B16->ctx_destroy(&Cb[t]);
        O->release(Cf[t], wf[t]);
        O->ctx_destroy(&Cf[t]);
    }
}

/* bf16 contexts of 1 and 2 threads with their workspaces for the limits the bf16 tests use, and
 * their release. */
static const umd_limits BF16_LIM = {64, 64, 512, 8, 256, 2000 * 16};
static void bf16_ctxs_open(umd_ctx *Cb[2], void *ws[2]) {
    const umd_ops *B16 = umd_ops_cpu_bf16();
    char err[128];
    for (int t = 0; t < 2; t++) {
        T_REQUIRE(B16->ctx_new(&Cb[t], t + 1, err, sizeof err) == 0);
        size_t bytes = B16->workspace_bytes(Cb[t], &BF16_LIM);
        T_REQUIRE((ws[t] = B16->alloc(Cb[t], bytes)) != NULL);
        B16->set_workspace(Cb[t], ws[t], bytes);
    }
}
static void bf16_ctxs_close(umd_ctx *Cb[2], void *ws[2]) {
    const umd_ops *B16 = umd_ops_cpu_bf16();
    for (int t = 0; t < 2; t++) {
        B16->release(Cb[t], ws[t]);
        B16->ctx_destroy(&Cb[t]);
    }
}

/* bf16 halves equal to fp32 values rounded (an element left unwritten, poisoned, fails). */
static void same_rounded(const char *what, const uint16_t *h, const float *x, size_t n,
                         int which) {
    size_t bad = n;
    for (size_t i = 0; i < n && bad == n; i++)
        if (h[i] != fx_bf16(x[i])) bad = i;
    T_CHECK_MSG(bad == n, "%s: element %zu is not the fp32 value rounded (case %03d)", what, bad,
                which);
}

/* Branch tensors in bf16 (branch_operand): the gated residuals and residual + LayerNorm on a bf16
 * y give the fp32 ops' bits on its widened values (dgate too); mlp_fwd and attention_fwd with a
 * bf16 output write their fp32 results rounded (lse the same bits), and attention_bwd on a bf16
 * out gives the fp32 op's bits on the widened out. In an fp32 context the flags change nothing.
 * 1 and 2 threads; outputs poisoned. */
static void test_kernels_bf16_branches(void) {
    ctx_setup();
    const umd_ops *B16 = umd_ops_cpu_bf16();
    umd_ctx *Cb[2];
    void *ws[2];
    bf16_ctxs_open(Cb, ws);
    T_EQ_INT(B16->branch_operand(Cb[0]), 1);
    T_EQ_INT(O->branch_operand(C1), 0);
    T_EQ_INT((int)O->mlp_scratch(C1, 7, 12, 5, UMD_F32), 84);
    T_EQ_INT((int)B16->mlp_scratch(Cb[0], 7, 12, 5, UMD_OPND | UMD_OPND_H | UMD_OPND_Y), 84);

    /* the gated residual, its backward, and residual + LayerNorm (out fp32 or bf16) */
    static const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {2, 17, 64}, {4, 9, 130}};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        const int n = shapes[k][0], T = shapes[k][1], w = shapes[k][2], st = 6 * w;
        const size_t N = (size_t)n * T * w, R = (size_t)n * T;
        float *x = randn(N, 900 + (uint32_t)k, 1.0f), *y = randn(N, 910 + (uint32_t)k, 1.0f);
        float *mod = randn((size_t)n * st, 920 + (uint32_t)k, 0.5f), *yw;
        float *dout = randn(N, 930 + (uint32_t)k, 1.0f);
        float *g = randn((size_t)w, 940 + (uint32_t)k, 1.0f), *b = randn((size_t)w, 950, 0.3f);
        uint16_t *yh;
        bf16_pair(y, N, &yh, &yw);
        float *o1 = zeros(N), *o2 = zeros(N), *d1 = zeros(N), *d2 = zeros(N);
        float *dg1 = zeros((size_t)n * st), *dg2 = zeros((size_t)n * st);
        float *ln1 = zeros(N), *ln2 = zeros(N), *m1 = zeros(R), *m2 = zeros(R), *r1 = zeros(R),
              *r2 = zeros(R);
        uint16_t *lnh = malloc(N * sizeof *lnh);
        for (int t = 0; t < 2; t++) {
            umd_ctx *c = Cb[t];
            const int which = (int)k * 10 + t;
            for (size_t i = 0; i < N; i++) o2[i] = d2[i] = ln2[i] = NAN;
            for (size_t i = 0; i < (size_t)n * st; i++) dg2[i] = NAN;
            for (size_t i = 0; i < R; i++) m2[i] = r2[i] = NAN;
            B16->gate_residual_fwd(c, o1, x, yw, mod + 2 * w, st, n, T, w, UMD_F32);
            B16->gate_residual_fwd(c, o2, x, yh, mod + 2 * w, st, n, T, w, UMD_OPND_Y);
            same_bits("gate_residual_fwd on a bf16 y", o2, o1, N, which);
            B16->gate_residual_bwd(c, d1, dg1, dout, yw, mod + 2 * w, st, n, T, w, UMD_F32);
            B16->gate_residual_bwd(c, d2, dg2, dout, yh, mod + 2 * w, st, n, T, w, UMD_OPND_Y);
            same_bits("gate_residual_bwd dy on a bf16 y", d2, d1, N, which);
            for (int r = 0; r < n; r++)
                same_bits("gate_residual_bwd dgate on a bf16 y", dg2 + (size_t)r * st,
                          dg1 + (size_t)r * st, (size_t)w, which);
            for (int use_mod = 0; use_mod < 2; use_mod++) {
                const float *md = use_mod ? mod + 3 * w : NULL;
                B16->residual_layernorm_fwd(c, o1, ln1, m1, r1, x, yw, mod + 2 * w, st, g, b, md,
                                            st, n, T, w, UMD_F32);
                B16->residual_layernorm_fwd(c, o2, ln2, m2, r2, x, yh, mod + 2 * w, st, g, b, md,
                                            st, n, T, w, UMD_OPND_Y);
                const float *got[4] = {o2, ln2, m2, r2}, *want[4] = {o1, ln1, m1, r1};
                static const char *const what[4] = {"xo", "out", "mean", "rstd"};
                for (int j = 0; j < 4; j++) {
                    char msg[80];
                    snprintf(msg, sizeof msg, "residual_layernorm_fwd %s on a bf16 y", what[j]);
                    same_bits(msg, got[j], want[j], j < 2 ? N : R, which);
                }
                memset(lnh, 0xff, N * sizeof *lnh);
                B16->residual_layernorm_fwd(c, o2, lnh, m2, r2, x, yh, mod + 2 * w, st, g, b, md,
                                            st, n, T, w, UMD_OPND | UMD_OPND_Y);
                same_rounded("residual_layernorm_fwd bf16 out on a bf16 y", lnh, ln1, N, which);
            }
        }
        /* an fp32 context reads y as fp32 whatever the flag */
        O->gate_residual_fwd(C2, o1, x, y, mod + 2 * w, st, n, T, w, UMD_F32);
        O->gate_residual_fwd(C2, o2, x, y, mod + 2 * w, st, n, T, w, UMD_OPND_Y);
        same_bits("gate_residual_fwd in an fp32 context", o2, o1, N, (int)k);
        free(x); free(y); free(mod); free(yw); free(yh); free(dout); free(g); free(b); free(o1);
        free(o2); free(d1); free(d2); free(dg1); free(dg2); free(ln1); free(ln2); free(m1);
        free(m2); free(r1); free(r2); free(lnh);
    }

    /* mlp_fwd with a bf16 y (h fp32 or bf16) */
    static const int mlp_shapes[][3] = {{1, 4, 3}, {37, 24, 10}, {130, 64, 48}};
    for (size_t k = 0; k < sizeof mlp_shapes / sizeof *mlp_shapes; k++) {
        const int M = mlp_shapes[k][0], F = mlp_shapes[k][1], w = mlp_shapes[k][2];
        const size_t Mw = (size_t)M * w, MF = (size_t)M * F;
        float *x = randn(Mw, 960 + (uint32_t)k, 1.0f), *xw;
        uint16_t *xh;
        bf16_pair(x, Mw, &xh, &xw);
        float *W1 = randn(MF / M * w, 961, 0.3f), *W2 = randn(MF / M * w, 962, 0.3f);
        float *b1 = randn((size_t)F, 963, 0.1f), *b2 = randn((size_t)w, 964, 0.1f);
        float *tmp = zeros(MF), *y = zeros(Mw);
        uint16_t *h = malloc(MF * sizeof *h), *yh = malloc(Mw * sizeof *yh);
        for (int t = 0; t < 2; t++)
            for (int hb = 0; hb < 2; hb++) {
                const int types = UMD_OPND | (hb ? UMD_OPND_H : 0), which = (int)k * 10 + t * 2 + hb;
                float *hf = zeros(MF);
                B16->mlp_fwd(Cb[t], y, hb ? (void *)h : hf, tmp, xh, W1, b1, W2, b2, M, F, w,
                             types);
                memset(yh, 0xff, Mw * sizeof *yh);
                B16->mlp_fwd(Cb[t], yh, hb ? (void *)h : hf, tmp, xh, W1, b1, W2, b2, M, F, w,
                             types | UMD_OPND_Y);
                same_rounded("mlp_fwd bf16 y", yh, y, Mw, which);
                free(hf);
            }
        free(x); free(xw); free(xh); free(W1); free(W2); free(b1); free(b2); free(tmp); free(y);
        free(h); free(yh);
    }

    /* attention with a bf16 out, on a bf16 qkv and on an fp32 one */
    for (size_t k = 0; k < ATT16_NSHAPES; k++) {
        att16_case a = att16_new(k, 970 + (uint32_t)k);
        const int n = a.n, T = a.T, heads = a.heads, hd = a.hd;
        const size_t nq = a.nq, no = a.no, nl = a.nl;
        float *out = zeros(no), *lse = zeros(nl), *dq = zeros(nq), *ow = zeros(no);
        float *lse2 = malloc(nl * sizeof *lse2), *dq2 = malloc(nq * sizeof *dq2);
        uint16_t *oh = malloc(no * sizeof *oh);
        for (int t = 0; t < 2; t++)
            for (int qb = 0; qb < 2; qb++) {
                const int which = (int)k * 10 + t * 2 + qb, qt = qb ? UMD_OPND : UMD_F32;
                const void *q = qb ? (const void *)a.qh : (const void *)a.qw;
                B16->attention_fwd(Cb[t], out, lse, q, n, T, heads, hd, qt);
                memset(oh, 0xff, no * sizeof *oh);
                for (size_t i = 0; i < nl; i++) lse2[i] = NAN;
                B16->attention_fwd(Cb[t], oh, lse2, q, n, T, heads, hd, qt | UMD_OPND_O);
                same_rounded("attention_fwd bf16 out", oh, out, no, which);
                same_bits("attention_fwd lse with a bf16 out", lse2, lse, nl, which);
                for (size_t i = 0; i < no; i++) ow[i] = fx_widen(oh[i]);
                B16->attention_bwd(Cb[t], dq, a.g, q, ow, lse, n, T, heads, hd, qt);
                for (size_t i = 0; i < nq; i++) dq2[i] = NAN;
                B16->attention_bwd(Cb[t], dq2, a.g, q, oh, lse, n, T, heads, hd, qt | UMD_OPND_O);
                same_bits("attention_bwd dqkv on a bf16 out", dq2, dq, nq, which);
            }
        att16_free(&a);
        free(out); free(lse); free(dq); free(ow); free(lse2); free(dq2); free(oh);
    }
    bf16_ctxs_close(Cb, ws);
}

/* Gradient tensors in bf16 (grad_operand): gate_residual_bwd and attention_bwd with UMD_GRAD
 * write their fp32 results rounded (dgate the same bits); linear_bwd and mlp_bwd on a bf16 dy
 * give the fp32 ops' bits on its widened values (rows up to a widening block: dW's sum then runs
 * over the same rows in one product), dx accumulated or not, db and dx optional; with UMD_GRAD_X
 * they write dx rounded, the rest the same bits; attention_bwd and layernorm_bwd on a bf16 dout
 * (UMD_GRAD_X) give the fp32 ops' bits on its widened values. In an fp32 context the flag
 * changes nothing. 1 and 2 threads; outputs poisoned. */
static void test_kernels_bf16_grads(void) {
    ctx_setup();
    const umd_ops *B16 = umd_ops_cpu_bf16();
    umd_ctx *Cb[2];
    void *ws[2];
    bf16_ctxs_open(Cb, ws);
    T_EQ_INT(B16->grad_operand(Cb[0]), 1);
    T_EQ_INT(O->grad_operand(C1), 0);

    /* the gated residual's backward, y fp32 or bf16 */
    static const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {2, 17, 64}, {4, 9, 130}};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        const int n = shapes[k][0], T = shapes[k][1], w = shapes[k][2], st = 6 * w;
        const size_t N = (size_t)n * T * w;
        float *y = randn(N, 1200 + (uint32_t)k, 1.0f), *yw, *dout = randn(N, 1210 + (uint32_t)k, 1.0f);
        float *gate = randn((size_t)n * st, 1220 + (uint32_t)k, 0.5f);
        uint16_t *yh, *dh = malloc(N * sizeof *dh);
        bf16_pair(y, N, &yh, &yw);
        float *d1 = zeros(N), *dg1 = zeros((size_t)n * st), *dg2 = zeros((size_t)n * st);
        for (int t = 0; t < 2; t++)
            for (int yb = 0; yb < 2; yb++) {
                const int which = (int)k * 10 + t * 2 + yb, yt = yb ? UMD_OPND_Y : UMD_F32;
                const void *yy = yb ? (const void *)yh : (const void *)yw;
                B16->gate_residual_bwd(Cb[t], d1, dg1, dout, yy, gate, st, n, T, w, yt);
                memset(dh, 0xff, N * sizeof *dh);
                for (size_t i = 0; i < (size_t)n * st; i++) dg2[i] = NAN;
                B16->gate_residual_bwd(Cb[t], dh, dg2, dout, yy, gate, st, n, T, w, yt | UMD_GRAD);
                same_rounded("gate_residual_bwd bf16 dy", dh, d1, N, which);
                for (int r = 0; r < n; r++)
                    same_bits("gate_residual_bwd dgate with a bf16 dy", dg2 + (size_t)r * st,
                              dg1 + (size_t)r * st, (size_t)w, which);
            }
        /* an fp32 context writes dy in fp32 whatever the flag */
        float *d2 = zeros(N);
        O->gate_residual_bwd(C2, d1, dg1, dout, y, gate, st, n, T, w, UMD_F32);
        O->gate_residual_bwd(C2, d2, dg2, dout, y, gate, st, n, T, w, UMD_GRAD);
        same_bits("gate_residual_bwd in an fp32 context", d2, d1, N, (int)k);
        free(y); free(yw); free(yh); free(dout); free(gate); free(dh); free(d1); free(d2);
        free(dg1); free(dg2);
    }

    /* linear_bwd on a bf16 dy, x fp32 or bf16; the fp32 op on the widened dy is the reference */
    static const int lin_shapes[][3] = {{1, 1, 1}, {37, 13, 29}, {130, 48, 64}, {300, 200, 72}};
    for (size_t k = 0; k < sizeof lin_shapes / sizeof *lin_shapes; k++) {
        const int M = lin_shapes[k][0], N = lin_shapes[k][1], K = lin_shapes[k][2];
        const size_t MN = (size_t)M * N, MK = (size_t)M * K, NK = (size_t)N * K;
        float *dy = randn(MN, 1300 + (uint32_t)k, 1.0f), *dyw, *x = randn(MK, 1310 + (uint32_t)k, 1.0f), *xw;
        float *W = randn(NK, 1320 + (uint32_t)k, 0.3f), *dx0 = randn(MK, 1330 + (uint32_t)k, 1.0f);
        uint16_t *dyh, *xh;
        bf16_pair(dy, MN, &dyh, &dyw);
        bf16_pair(x, MK, &xh, &xw);
        float *dx1 = zeros(MK), *dx2 = zeros(MK), *dW1 = zeros(NK), *dW2 = zeros(NK);
        float *db1 = zeros((size_t)N), *db2 = zeros((size_t)N);
        uint16_t *dxh = malloc(MK * sizeof *dxh);
        for (int t = 0; t < 2; t++)
            for (int v = 0; v < 4; v++) {
                /* v: bit 0 x bf16, bit 1 dx accumulated (and db left out) */
                const int xb = v & 1, acc = (v >> 1) & 1, which = (int)k * 10 + t * 4 + v;
                const int xt = xb ? UMD_OPND : UMD_F32;
                const void *xx = xb ? (const void *)xh : (const void *)xw;
                memcpy(dx1, dx0, MK * sizeof *dx1);
                memcpy(dx2, dx0, MK * sizeof *dx2);
                if (!acc)
                    for (size_t i = 0; i < MK; i++) dx2[i] = NAN;
                memset(dW1, 0, NK * sizeof *dW1);
                memset(dW2, 0, NK * sizeof *dW2);
                memset(db1, 0, (size_t)N * sizeof *db1);
                memset(db2, 0, (size_t)N * sizeof *db2);
                B16->linear_bwd(Cb[t], dx1, dW1, acc ? NULL : db1, dyw, xx, W, M, N, K, acc, xt);
                B16->linear_bwd(Cb[t], dx2, dW2, acc ? NULL : db2, dyh, xx, W, M, N, K, acc,
                                xt | UMD_GRAD);
                same_bits("linear_bwd dx on a bf16 dy", dx2, dx1, MK, which);
                same_bits("linear_bwd dW on a bf16 dy", dW2, dW1, NK, which);
                same_bits("linear_bwd db on a bf16 dy", db2, db1, (size_t)N, which);
                if (acc) continue;
                /* a bf16 dx (UMD_GRAD_X), from the bf16 dy and from its widened values: dx the
                 * fp32 result rounded, dW and db the same bits */
                for (int gy = 0; gy < 2; gy++) {
                    memset(dW2, 0, NK * sizeof *dW2);
                    memset(db2, 0, (size_t)N * sizeof *db2);
                    memset(dxh, 0xff, MK * sizeof *dxh);
                    B16->linear_bwd(Cb[t], dxh, dW2, db2, gy ? (const void *)dyh : (const void *)dyw,
                                    xx, W, M, N, K, 0, xt | UMD_GRAD_X | (gy ? UMD_GRAD : 0));
                    same_rounded("linear_bwd bf16 dx", dxh, dx1, MK, which);
                    same_bits("linear_bwd dW with a bf16 dx", dW2, dW1, NK, which);
                    same_bits("linear_bwd db with a bf16 dx", db2, db1, (size_t)N, which);
                }
            }
        /* dx left out */
        memset(dW2, 0, NK * sizeof *dW2);
        B16->linear_bwd(Cb[1], NULL, dW2, NULL, dyh, xh, W, M, N, K, 0, UMD_OPND | UMD_GRAD);
        memset(dW1, 0, NK * sizeof *dW1);
        B16->linear_bwd(Cb[1], NULL, dW1, NULL, dyw, xh, W, M, N, K, 0, UMD_OPND);
        same_bits("linear_bwd dW alone on a bf16 dy", dW2, dW1, NK, (int)k);
        free(dy); free(dyw); free(dyh); free(x); free(xw); free(xh); free(W); free(dx0);
        free(dx1); free(dx2); free(dW1); free(dW2); free(db1); free(db2); free(dxh);
    }

    /* mlp_bwd on a bf16 dy (h fp32 or bf16); dx aliasing dy once */
    static const int mlp_shapes[][3] = {{1, 4, 3}, {37, 24, 10}, {130, 64, 48}};
    for (size_t k = 0; k < sizeof mlp_shapes / sizeof *mlp_shapes; k++) {
        const int M = mlp_shapes[k][0], F = mlp_shapes[k][1], w = mlp_shapes[k][2];
        const size_t Mw = (size_t)M * w, MF = (size_t)M * F, Fw = (size_t)F * w;
        float *x = randn(Mw, 1400 + (uint32_t)k, 1.0f), *xw, *dy = randn(Mw, 1410 + (uint32_t)k, 1.0f), *dyw;
        float *h = randn(MF, 1420 + (uint32_t)k, 1.0f), *hw;
        float *W1 = randn(Fw, 1430, 0.3f), *W2 = randn(Fw, 1431, 0.3f), *tmp = zeros(MF);
        uint16_t *xh, *dyh, *hh;
        bf16_pair(x, Mw, &xh, &xw);
        bf16_pair(dy, Mw, &dyh, &dyw);
        bf16_pair(h, MF, &hh, &hw);
        float *g1[5], *g2[5]; /* dx, dW1, db1, dW2, db2 */
        const size_t gn[5] = {Mw, Fw, (size_t)F, Fw, (size_t)w};
        for (int j = 0; j < 5; j++) g1[j] = zeros(gn[j]), g2[j] = zeros(gn[j]);
        uint16_t *dyalias = malloc(Mw * sizeof(float)); /* dy bf16, then dx fp32 over it */
        for (int t = 0; t < 2; t++)
            for (int v = 0; v < 3; v++) {
                /* v: 0 h fp32, 1 h bf16, 2 h bf16 with dx over dy */
                const int hb = v > 0, which = (int)k * 10 + t * 3 + v;
                const int types = UMD_OPND | (hb ? UMD_OPND_H : 0);
                const void *hx = hb ? (const void *)hh : (const void *)hw;
                for (int j = 0; j < 5; j++) {
                    memset(g1[j], 0, gn[j] * sizeof(float));
                    memset(g2[j], 0, gn[j] * sizeof(float));
                }
                for (size_t i = 0; i < Mw; i++) g2[0][i] = NAN;
                B16->mlp_bwd(Cb[t], g1[0], g1[1], g1[2], g1[3], g1[4], dyw, xh, hx, W1, W2, tmp,
                             M, F, w, types);
                const void *dyin = dyh;
                float *dx2 = g2[0];
                if (v == 2) {
                    memcpy(dyalias, dyh, Mw * sizeof *dyh);
                    dyin = dyalias;
                    dx2 = (float *)(void *)dyalias;
                }
                B16->mlp_bwd(Cb[t], dx2, g2[1], g2[2], g2[3], g2[4], dyin, xh, hx, W1, W2, tmp, M,
                             F, w, types | UMD_GRAD);
                static const char *const what[5] = {"dx", "dW1", "db1", "dW2", "db2"};
                for (int j = 0; j < 5; j++) {
                    char msg[64];
                    snprintf(msg, sizeof msg, "mlp_bwd %s on a bf16 dy", what[j]);
                    same_bits(msg, j == 0 ? dx2 : g2[j], g1[j], gn[j], which);
                }
                /* a bf16 dx too (UMD_GRAD_X; over the bf16 dy where v is 2): the fp32 dx rounded */
                for (int j = 1; j < 5; j++) memset(g2[j], 0, gn[j] * sizeof(float));
                uint16_t *dxh = v == 2 ? dyalias : malloc(Mw * sizeof *dxh);
                if (v == 2) memcpy(dyalias, dyh, Mw * sizeof *dyh);
                else memset(dxh, 0xff, Mw * sizeof *dxh);
                B16->mlp_bwd(Cb[t], dxh, g2[1], g2[2], g2[3], g2[4], v == 2 ? dyalias : dyh, xh,
                             hx, W1, W2, tmp, M, F, w, types | UMD_GRAD | UMD_GRAD_X);
                same_rounded("mlp_bwd bf16 dx", dxh, g1[0], Mw, which);
                for (int j = 1; j < 5; j++) {
                    char msg[64];
                    snprintf(msg, sizeof msg, "mlp_bwd %s with a bf16 dx", what[j]);
                    same_bits(msg, g2[j], g1[j], gn[j], which);
                }
                if (v != 2) free(dxh);
            }
        free(x); free(xw); free(xh); free(dy); free(dyw); free(dyh); free(h); free(hw); free(hh);
        free(W1); free(W2); free(tmp); free(dyalias);
        for (int j = 0; j < 5; j++) free(g1[j]), free(g2[j]);
    }

    /* attention_bwd with a bf16 dqkv, qkv fp32 or bf16, out fp32 or bf16 */
    for (size_t k = 0; k < ATT16_NSHAPES; k++) {
        att16_case a = att16_new(k, 1500 + (uint32_t)k);
        const int n = a.n, T = a.T, heads = a.heads, hd = a.hd;
        const size_t nq = a.nq, no = a.no, nl = a.nl;
        float *out = zeros(no), *lse = zeros(nl), *dq = zeros(nq), *ow, *gw, *dq2 = zeros(nq);
        uint16_t *oh, *dqh = malloc(nq * sizeof *dqh), *gh;
        bf16_pair(a.g, no, &gh, &gw); /* dO rounded: the bf16 dout and its widened values */
        for (int t = 0; t < 2; t++)
            for (int v = 0; v < 4; v++) {
                /* v: bit 0 qkv bf16, bit 1 out bf16 */
                const int qb = v & 1, ob = v >> 1, which = (int)k * 10 + t * 4 + v;
                const int qt = qb ? UMD_OPND : UMD_F32;
                const void *q = qb ? (const void *)a.qh : (const void *)a.qw;
                B16->attention_fwd(Cb[t], out, lse, q, n, T, heads, hd, qt);
                bf16_pair(out, no, &oh, &ow);
                const int types = qt | (ob ? UMD_OPND_O : 0);
                const void *o = ob ? (const void *)oh : (const void *)ow;
                B16->attention_bwd(Cb[t], dq, a.g, q, o, lse, n, T, heads, hd, types);
                memset(dqh, 0xff, nq * sizeof *dqh);
                B16->attention_bwd(Cb[t], dqh, a.g, q, o, lse, n, T, heads, hd, types | UMD_GRAD);
                same_rounded("attention_bwd bf16 dqkv", dqh, dq, nq, which);
                /* a bf16 dout (UMD_GRAD_X): the fp32 op's bits on its widened values */
                B16->attention_bwd(Cb[t], dq, gw, q, o, lse, n, T, heads, hd, types);
                for (size_t i = 0; i < nq; i++) dq2[i] = NAN;
                B16->attention_bwd(Cb[t], dq2, gh, q, o, lse, n, T, heads, hd, types | UMD_GRAD_X);
                same_bits("attention_bwd dqkv on a bf16 dout", dq2, dq, nq, which);
                memset(dqh, 0xff, nq * sizeof *dqh);
                B16->attention_bwd(Cb[t], dqh, gh, q, o, lse, n, T, heads, hd,
                                   types | UMD_GRAD | UMD_GRAD_X);
                same_rounded("attention_bwd bf16 dqkv on a bf16 dout", dqh, dq, nq, which);
                free(oh);
                free(ow);
            }
        att16_free(&a);
        free(out); free(lse); free(dq); free(dqh); free(dq2); free(gh); free(gw);
    }

    /* layernorm_bwd on a bf16 dout (UMD_GRAD_X): the fp32 op's bits on its widened values, with
     * and without the modulation, dx written or added */
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        const int n = shapes[k][0], T = shapes[k][1], w = shapes[k][2], st = 6 * w;
        const size_t N = (size_t)n * T * w, R = (size_t)n * T, nm = (size_t)n * st;
        float *x = randn(N, 1600 + (uint32_t)k, 1.0f), *d = randn(N, 1610 + (uint32_t)k, 1.0f), *dw;
        float *mod = randn(nm, 1620 + (uint32_t)k, 0.5f), *g = randn((size_t)w, 1630, 1.0f);
        float *bt = randn((size_t)w, 1631, 0.3f), *dx0 = randn(N, 1640 + (uint32_t)k, 1.0f);
        float *mean = zeros(R), *rstd = zeros(R), *out = zeros(N);
        uint16_t *dh;
        bf16_pair(d, N, &dh, &dw);
        O->layernorm_fwd(C1, out, mean, rstd, x, g, bt, NULL, st, n, T, w, (long)T * w,
                         (long)T * w, UMD_F32);
        float *r1[4], *r2[4]; /* dx, dgamma, dbeta, dmod */
        const size_t rn[4] = {N, (size_t)w, (size_t)w, nm};
        for (int j = 0; j < 4; j++) r1[j] = zeros(rn[j]), r2[j] = zeros(rn[j]);
        for (int t = 0; t < 2; t++)
            for (int v = 0; v < 4; v++) {
                /* v: bit 0 modulated, bit 1 dx added */
                const int um = v & 1, acc = v >> 1, which = (int)k * 10 + t * 4 + v;
                for (int j = 0; j < 4; j++) {
                    memset(r1[j], 0, rn[j] * sizeof(float));
                    memset(r2[j], 0, rn[j] * sizeof(float));
                }
                memcpy(r1[0], dx0, N * sizeof(float));
                memcpy(r2[0], dx0, N * sizeof(float));
                if (!acc)
                    for (size_t i = 0; i < N; i++) r2[0][i] = NAN;
                for (int pass = 0; pass < 2; pass++) {
                    float **r = pass ? r2 : r1;
                    B16->layernorm_bwd(Cb[t], r[0], r[1], r[2], um ? r[3] : NULL,
                                       pass ? (const void *)dh : (const void *)dw, x, mean, rstd, g,
                                       bt, um ? mod : NULL, st, n, T, w, (long)T * w, (long)T * w,
                                       acc, pass ? UMD_GRAD_X : UMD_F32);
                }
                static const char *const what[4] = {"dx", "dgamma", "dbeta", "dmod"};
                for (int j = 0; j < (um ? 4 : 3); j++) {
                    char msg[64];
                    snprintf(msg, sizeof msg, "layernorm_bwd %s on a bf16 dout", what[j]);
                    same_bits(msg, r2[j], r1[j], rn[j], which);
                }
            }
        free(x); free(d); free(dw); free(dh); free(mod); free(g); free(bt); free(dx0); free(mean);
        free(rstd); free(out);
        for (int j = 0; j < 4; j++) free(r1[j]), free(r2[j]);
    }
    bf16_ctxs_close(Cb, ws);
}

/* ---- attention ------------------------------------------------------------------------------------- */

typedef struct {
    int n, T, heads, hd;
    float *qkv, *out, *lse, *R; /* lse (n, heads, T) */
} att_state;

static double att_J(void *s_) {
    att_state *s = s_;
    O->attention_fwd(C1, s->out, s->lse, s->qkv, s->n, s->T, s->heads, s->hd, UMD_F32);
    return dot(s->out, s->R, (size_t)s->n * s->T * s->heads * s->hd);
}

/* n sequences of T tokens, heads x hd: T = 11 leaves 3 rows after the 4-row blocks and pads to
 * 16 columns; hd = 5 takes the one-column path; T = 18, hd = 24 the 16 + 8 column blocks. */
static void attention_case(int n, int T, int heads, int hd, uint32_t key) {
    att_state s = {n, T, heads, hd, 0, 0, 0, 0};
    int W = s.heads * s.hd;
    size_t nq = (size_t)s.n * s.T * 3 * W, no = (size_t)s.n * s.T * W;
    s.qkv = randn(nq, key, 1.0f);
    s.out = zeros(no);
    s.lse = zeros((size_t)s.n * s.heads * s.T);
    s.R = randn(no, key + 1, 1.0f);
    O->attention_fwd(C2, s.out, s.lse, s.qkv, s.n, s.T, s.heads, s.hd, UMD_F32);
    /* forward against a double reference */
    double maxerr = 0, lse_err = 0;
    for (int b = 0; b < s.n; b++)
        for (int h = 0; h < s.heads; h++)
            for (int i = 0; i < s.T; i++) {
                double sc[64], mx = -1e300, sum = 0; /* T <= 64 here */
                const float *q = s.qkv + ((size_t)(b * s.T + i) * 3 * W) + h * s.hd;
                for (int j = 0; j < s.T; j++) {
                    const float *k = s.qkv + ((size_t)(b * s.T + j) * 3 * W) + W + h * s.hd;
                    double d = 0;
                    for (int e = 0; e < s.hd; e++) d += (double)q[e] * k[e];
                    sc[j] = d / sqrt((double)s.hd);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j < s.T; j++) sum += (sc[j] = exp(sc[j] - mx));
                lse_err = fmax(lse_err, fabs(mx + log(sum) - s.lse[((size_t)b * s.heads + h) * s.T + i]));
                for (int e = 0; e < s.hd; e++) {
                    double o = 0;
                    for (int j = 0; j < s.T; j++)
                        o += sc[j] / sum * s.qkv[(size_t)(b * s.T + j) * 3 * W + 2 * W + h * s.hd + e];
                    maxerr = fmax(maxerr, fabs(o - s.out[(size_t)(b * s.T + i) * W + h * s.hd + e]));
                }
            }
    T_CHECK_MSG(maxerr < 1e-5, "attention forward error %g", maxerr);
    T_CHECK_MSG(lse_err < 1e-5, "attention log-sum-exp error %g", lse_err);
    float *dqkv = zeros(nq);
    O->attention_bwd(C2, dqkv, s.R, s.qkv, s.out, s.lse, s.n, s.T, s.heads, s.hd, UMD_F32);
    fd_check("attention dqkv", s.qkv, nq, dqkv, att_J, &s, 60, 1e-2f, 3e-3, key + 2);
    /* one thread computes the same bits (pairs are independent); the checks above left out
     * and lse of a perturbed input, so both runs start from a fresh forward */
    float *d1 = zeros(nq);
    O->attention_fwd(C2, s.out, s.lse, s.qkv, s.n, s.T, s.heads, s.hd, UMD_F32);
    O->attention_bwd(C2, dqkv, s.R, s.qkv, s.out, s.lse, s.n, s.T, s.heads, s.hd, UMD_F32);
    O->attention_bwd(C1, d1, s.R, s.qkv, s.out, s.lse, s.n, s.T, s.heads, s.hd, UMD_F32);
    T_CHECK(memcmp(d1, dqkv, nq * sizeof *d1) == 0);
    free(s.qkv); free(s.out); free(s.lse); free(s.R); free(dqkv); free(d1);
}

static void test_kernels_attention(void) {
    ctx_setup();
    attention_case(3, 11, 2, 8, 50);
    attention_case(2, 7, 3, 5, 53);
    attention_case(2, 18, 1, 24, 56);
    attention_case(1, 1, 2, 8, 59); /* a single token attends to itself */
    attention_case(2, 37, 2, 32, 62); /* the head width of the benchmarks' halves */
}

/* ---- tokens: gather into the encoder, decoder input, cls mean, label rows ---------------------------- */

typedef struct {
    int n, L, keep, ncls, w;
    int32_t *order, *slot;
    float *emb, *pos, *cls, *xenc, *R;
} gather_state;

static double gather_J(void *s_) {
    gather_state *s = s_;
    O->gather_tokens_fwd(C1, s->xenc, s->emb, s->pos, s->cls, s->order, s->n, s->L, s->keep,
                         s->ncls, s->w);
    return dot(s->xenc, s->R, (size_t)s->n * (s->ncls + s->keep) * s->w);
}

/* orders and slots of n rows drawn by the op itself */
static void draw_orders(int32_t *order, int32_t *slot, int n, int L, int keep) {
    O->draw_keep(C2, order, slot, 0, n, L, keep, 99, 5);
}

static void test_kernels_tokens(void) {
    ctx_setup();
    gather_state s = {4, 9, 5, 3, 12, 0, 0, 0, 0, 0, 0, 0};
    int T = s.ncls + s.keep;
    s.order = malloc(sizeof(int32_t) * s.n * s.L);
    s.slot = malloc(sizeof(int32_t) * s.n * s.L);
    draw_orders(s.order, s.slot, s.n, s.L, s.keep);
    size_t ne = (size_t)s.n * s.L * s.w, nx = (size_t)s.n * T * s.w;
    s.emb = randn(ne, 60, 1.0f);
    s.pos = randn((size_t)s.L * s.w, 61, 1.0f);
    s.cls = randn((size_t)s.ncls * s.w, 62, 1.0f);
    s.xenc = zeros(nx);
    s.R = randn(nx, 63, 1.0f);
    float *demb = randn(ne, 64, 1.0f), *dpos = zeros((size_t)s.L * s.w), *dcls = zeros((size_t)s.ncls * s.w);
    O->gather_tokens_bwd(C2, demb, dpos, dcls, s.R, s.slot, s.n, s.L, s.keep, s.ncls, s.w);
    fd_check("gather demb", s.emb, ne, demb, gather_J, &s, 30, 1e-2f, 1e-3, 65);
    fd_check("gather dpos", s.pos, (size_t)s.L * s.w, dpos, gather_J, &s, 20, 1e-2f, 1e-3, 66);
    fd_check("gather dcls", s.cls, (size_t)s.ncls * s.w, dcls, gather_J, &s, 20, 1e-2f, 1e-3, 67);

    /* decoder input: xdec = [rep | enc visible or mask] + pos */
    float *rep = randn((size_t)s.n * s.w, 70, 1.0f), *enc = randn(nx, 71, 1.0f);
    float *mask = randn((size_t)s.w, 72, 1.0f), *dpos2 = randn((size_t)s.L * s.w, 73, 1.0f);
    size_t nd = (size_t)s.n * (1 + s.L) * s.w;
    float *xdec = zeros(nd), *Rd = randn(nd, 74, 1.0f);
    float *drep = zeros((size_t)s.n * s.w), *denc = zeros(nx), *dmask = zeros((size_t)s.w);
    float *ddpos = zeros((size_t)s.L * s.w);
    O->decoder_input_fwd(C2, xdec, rep, enc, mask, dpos2, s.slot, s.n, s.L, T, s.ncls, s.w);
    int fwd_ok = 1;
    for (int b = 0; b < s.n; b++)
        for (int l = 0; l < s.L; l++) {
            int sl = s.slot[b * s.L + l];
            for (int i = 0; i < s.w; i++) {
                float src = sl >= 0 ? enc[((size_t)b * T + s.ncls + sl) * s.w + i] : mask[i];
                fwd_ok &= xdec[((size_t)b * (1 + s.L) + 1 + l) * s.w + i] == src + dpos2[l * s.w + i];
            }
        }
    T_CHECK_MSG(fwd_ok, "decoder input forward");
    O->decoder_input_bwd(C2, drep, denc, dmask, ddpos, Rd, s.slot, s.n, s.L, T, s.ncls, s.w);
    /* linear op: its gradient is the sum of Rd over the positions each input reaches */
    double e = 0;
    for (int b = 0; b < s.n; b++)
        for (int i = 0; i < s.w; i++) e = fmax(e, fabs(drep[b * s.w + i] - Rd[(size_t)b * (1 + s.L) * s.w + i]));
    for (int i = 0; i < s.w; i++) {
        double m = 0;
        for (int b = 0; b < s.n; b++)
            for (int l = 0; l < s.L; l++)
                if (s.slot[b * s.L + l] < 0) m += Rd[((size_t)b * (1 + s.L) + 1 + l) * s.w + i];
        e = fmax(e, fabs(m - dmask[i]));
    }
    for (int b = 0; b < s.n; b++)
        for (int l = 0; l < s.L; l++) {
            int sl = s.slot[b * s.L + l];
            if (sl < 0) continue;
            for (int i = 0; i < s.w; i++)
                e = fmax(e, fabs(denc[((size_t)b * T + s.ncls + sl) * s.w + i] -
                                 Rd[((size_t)b * (1 + s.L) + 1 + l) * s.w + i]));
        }
    for (int l = 0; l < s.L; l++)
        for (int i = 0; i < s.w; i++) {
            double m = 0;
            for (int b = 0; b < s.n; b++) m += Rd[((size_t)b * (1 + s.L) + 1 + l) * s.w + i];
            e = fmax(e, fabs(m - ddpos[l * s.w + i]));
        }
    T_CHECK_MSG(e < 1e-5, "decoder input backward error %g", e);

    /* cls mean */
    float *cm = zeros((size_t)s.n * s.w), *dcm = zeros(nx);
    O->token_mean_fwd(C2, cm, enc, s.n, T, s.ncls, s.w);
    O->token_mean_bwd(C2, dcm, rep, s.n, T, s.ncls, s.w);
    e = 0;
    for (int b = 0; b < s.n; b++)
        for (int i = 0; i < s.w; i++) {
            double m = 0;
            for (int k = 0; k < s.ncls; k++) m += enc[((size_t)b * T + k) * s.w + i];
            e = fmax(e, fabs(m / s.ncls - cm[b * s.w + i]));
            for (int k = 0; k < s.ncls; k++)
                e = fmax(e, fabs(dcm[((size_t)b * T + k) * s.w + i] - rep[b * s.w + i] / s.ncls));
        }
    T_CHECK_MSG(e < 1e-6, "token mean error %g", e);

    /* label rows: repeated labels accumulate */
    int32_t idx[5] = {2, 0, 2, 1, 2};
    float *table = randn(3 * (size_t)s.w, 75, 1.0f), *rows = zeros(5 * (size_t)s.w);
    float *dtab = zeros(3 * (size_t)s.w), *Rr = randn(5 * (size_t)s.w, 76, 1.0f);
    O->embed_rows_fwd(C2, rows, table, idx, 5, s.w);
    O->embed_rows_bwd(C2, dtab, Rr, idx, 5, s.w);
    e = 0;
    for (int i = 0; i < s.w; i++) {
        e = fmax(e, fabs(rows[3 * s.w + i] - table[s.w + i]));
        e = fmax(e, fabs(dtab[2 * s.w + i] - (Rr[i] + Rr[2 * s.w + i] + Rr[4 * s.w + i])));
        e = fmax(e, fabs(dtab[s.w + i] - Rr[3 * s.w + i]));
    }
    T_CHECK_MSG(e < 1e-6, "embed rows error %g", e);

    free(s.order); free(s.slot); free(s.emb); free(s.pos); free(s.cls); free(s.xenc); free(s.R);
    free(demb); free(dpos); free(dcls); free(rep); free(enc); free(mask); free(dpos2); free(xdec);
    free(Rd); free(drep); free(denc); free(dmask); free(ddpos); free(cm); free(dcm); free(table);
    free(rows); free(dtab); free(Rr);
}

/* ---- masked MSE ------------------------------------------------------------------------------------ */

typedef struct {
    int n, L, pp, C, half, sel;
    float *pred, *target, *dscratch;
    int32_t *slot;
} mse_state;

static double mse_J(void *s_) {
    mse_state *s = s_;
    double sum = NAN;
    O->mse_masked(C1, s->dscratch, s->pred, s->target, s->slot, s->n, s->L, s->pp, s->C, s->half,
                  s->sel, 0.0f, &sum);
    return sum;
}

static void test_kernels_mse_masked(void) {
    ctx_setup();
    int n = 3, L = 10, pp = 4, C = 3, keep = 6;
    size_t np = (size_t)n * L * pp * 2 * C, nt = (size_t)n * L * pp * C;
    int32_t *order = malloc(sizeof(int32_t) * n * L), *slot = malloc(sizeof(int32_t) * n * L);
    draw_orders(order, slot, n, L, keep);
    for (int half = 0; half < 2; half++)
        for (int sel = 0; sel < 3; sel++) {
            mse_state s = {n, L, pp, C, half, sel, randn(np, 80, 1.0f), randn(nt, 81, 1.0f),
                           zeros(np), slot};
            float *dp = zeros(np);
            double sum = NAN;
            O->mse_masked(C2, dp, s.pred, s.target, slot, n, L, pp, C, half, sel, 1.0f, &sum);
            double ref = 0;
            int other_zero = 1;
            for (int b = 0; b < n; b++)
                for (int l = 0; l < L; l++) {
                    int vis = slot[b * L + l] >= 0;
                    int in = sel == UMD_SEL_ALL || (sel == UMD_SEL_VISIBLE) == vis;
                    for (int q = 0; q < pp; q++)
                        for (int c = 0; c < 2 * C; c++) {
                            size_t ip = (((size_t)b * L + l) * pp + q) * 2 * C + c;
                            int mine = in && c / C == half;
                            if (mine) {
                                double d = s.pred[ip] - s.target[(((size_t)b * L + l) * pp + q) * C + c % C];
                                ref += d * d;
                            } else {
                                other_zero &= dp[ip] == 0.0f;
                            }
                        }
                }
            T_NEAR(sum, ref, 1e-9, 1e-6);
            T_CHECK_MSG(other_zero, "mse wrote gradient outside its selection");
            fd_check("mse dpred", s.pred, np, dp, mse_J, &s, 20, 1e-2f, 1e-3, 82);
            free(s.pred); free(s.target); free(s.dscratch); free(dp);
        }
    free(order); free(slot);
}

/* ---- forward-only ops: patchify, noise, timestep embedding, random draws ---------------------------- */

static void test_kernels_patchify(void) {
    ctx_setup();
    int n = 2, Cc = 3, H = 8, W = 12, p = 4, L = (H / p) * (W / p), P = p * p * Cc;
    size_t N = (size_t)n * Cc * H * W;
    float *img = randn(N, 90, 1.0f), *tok = zeros(N), *back = zeros(N);
    O->patchify(C2, tok, img, n, Cc, H, W, p);
    int ok = 1;
    for (int b = 0; b < n; b++)
        for (int l = 0; l < L; l++)
            for (int pi = 0; pi < p; pi++)
                for (int pj = 0; pj < p; pj++)
                    for (int c = 0; c < Cc; c++) {
                        int gi = l / (W / p), gj = l % (W / p);
                        ok &= tok[((size_t)b * L + l) * P + (pi * p + pj) * Cc + c] ==
                              img[(((size_t)b * Cc + c) * H + gi * p + pi) * W + gj * p + pj];
                    }
    T_CHECK_MSG(ok, "patchify layout is not (pi, pj, c) of row-major patches");
    O->unpatchify(C2, back, tok, n, Cc, H, W, p);
    T_CHECK(memcmp(back, img, N * sizeof *img) == 0);
    free(img); free(tok); free(back);
}

static void test_kernels_noise_and_time(void) {
    ctx_setup();
    int n = 3, D = 50, T = 1000;
    float *x0 = randn((size_t)n * D, 91, 1.0f), *eps = randn((size_t)n * D, 92, 1.0f);
    float *xt = zeros((size_t)n * D), *sa = zeros(T), *s1 = zeros(T);
    for (int i = 0; i < T; i++) {
        sa[i] = cosf(i * 0.0015f);
        s1[i] = sinf(i * 0.0015f);
    }
    int32_t t[3] = {1, 500, 1000};
    O->noise_mix(C2, xt, x0, eps, t, sa, s1, n, D);
    double e = 0;
    for (int b = 0; b < n; b++)
        for (int i = 0; i < D; i++)
            e = fmax(e, fabs(xt[b * D + i] - (sa[t[b] - 1] * x0[b * D + i] + s1[t[b] - 1] * eps[b * D + i])));
    T_CHECK_MSG(e < 1e-6, "noise_mix error %g", e);
    /* timestep embedding: [sin(t f), cos(t f)], f_i = 10000^(-i / (half - 1)) */
    int w = 10;
    int32_t tt[2] = {0, 999};
    float emb[20];
    O->timestep_embed(C2, emb, tt, 2, w);
    e = 0;
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < w / 2; i++) {
            double f = exp(-i * log(10000.0) / (w / 2 - 1));
            e = fmax(e, fabs(emb[b * w + i] - sin(tt[b] * f)));
            e = fmax(e, fabs(emb[b * w + w / 2 + i] - cos(tt[b] * f)));
        }
    T_CHECK_MSG(e < 1e-6, "timestep embedding error %g", e);
    free(x0); free(eps); free(xt); free(sa); free(s1);
}

static void test_kernels_random(void) {
    ctx_setup();
    /* normals: moments, bits independent of the thread count and of where a fill starts */
    size_t n = 200003;
    float *a = zeros(n), *b = zeros(n), *c = zeros(n);
    O->rand_normal(C1, a, n, 42, PHILOX_NOISE, 3, 0, 0.0f, 1.0f);
    O->rand_normal(C2, b, n, 42, PHILOX_NOISE, 3, 0, 0.0f, 1.0f);
    T_CHECK(memcmp(a, b, n * sizeof *a) == 0);
    O->rand_normal(C2, c, n - 7, 42, PHILOX_NOISE, 3, 7, 0.0f, 1.0f);
    T_CHECK(memcmp(a + 7, c, (n - 7) * sizeof *a) == 0);
    double m1 = 0, m2 = 0;
    for (size_t i = 0; i < n; i++) {
        m1 += a[i];
        m2 += (double)a[i] * a[i];
    }
    m1 /= n;
    m2 /= n;
    T_NEAR(m1, 0.0, 0.01, 0);
    T_NEAR(m2, 1.0, 0.02, 0);
    O->rand_normal(C2, c, n, 42, PHILOX_NOISE, 4, 0, 0.0f, 1.0f);
    T_CHECK(memcmp(a, c, n * sizeof *a) != 0); /* another step, other numbers */
    /* uniforms in range */
    O->rand_uniform(C2, b, n, 42, PHILOX_INIT, 0, 0, -0.5f, 0.25f);
    float lo = 1, hi = -1;
    for (size_t i = 0; i < n; i++) {
        lo = fminf(lo, b[i]);
        hi = fmaxf(hi, b[i]);
    }
    T_CHECK(lo >= -0.5f && lo < -0.49f && hi < 0.25f && hi > 0.24f);
    /* timesteps: 0 for clean rows, 1..T for noisy rows */
    int32_t t[64], t2[20];
    O->draw_timesteps(C2, t, 0, 10, 1, 1000, 42, 9);
    O->draw_timesteps(C2, t + 10, 10, 54, 0, 1000, 42, 9);
    O->draw_timesteps(C2, t2, 30, 20, 0, 1000, 42, 9); /* rows 30..49 drawn alone: the same */
    T_CHECK(memcmp(t2, t + 30, sizeof t2) == 0);
    int ok = 1, distinct = 0;
    for (int i = 0; i < 64; i++) {
        ok &= i < 10 ? t[i] == 0 : (t[i] >= 1 && t[i] <= 1000);
        if (i > 10 && t[i] != t[i - 1]) distinct++;
    }
    T_CHECK(ok && distinct > 40);
    /* keep orders: a permutation sorted by the mask noise; slots invert the first keep */
    int L = 49, keep = 12, rows = 5;
    int32_t order[5 * 49], slot[5 * 49], order1[5 * 49], slot1[5 * 49];
    O->draw_keep(C2, order, slot, 3, rows, L, keep, 42, 9);
    O->draw_keep(C1, order1, slot1, 3, rows, L, keep, 42, 9);
    T_CHECK(memcmp(order, order1, sizeof order) == 0 && memcmp(slot, slot1, sizeof slot) == 0);
    for (int r = 0; r < rows; r++) {
        int seen[49] = {0};
        float prev = -1;
        for (int j = 0; j < L; j++) {
            int l = order[r * L + j];
            T_REQUIRE(l >= 0 && l < L && !seen[l]);
            seen[l] = 1;
            float u = philox_unit(philox_draw(42, PHILOX_MASK, 9, (uint64_t)(3 + r) * L + l).v[0]);
            T_CHECK(u >= prev);
            prev = u;
            T_EQ_INT(slot[r * L + l], j < keep ? j : -1);
        }
    }
    /* label dropout: clean rows null, noisy rows keep their label unless dropped */
    int32_t y[100], yu[100];
    for (int i = 0; i < 100; i++) y[i] = i % 7;
    O->draw_labels(C2, yu, y, 0, 20, 1, 0.25f, 10, 42, 9);
    O->draw_labels(C2, yu + 20, y + 20, 20, 80, 0, 0.25f, 10, 42, 9);
    int dropped = 0;
    ok = 1;
    for (int i = 0; i < 100; i++) {
        if (i < 20) ok &= yu[i] == 10;
        else if (yu[i] == 10) dropped++;
        else ok &= yu[i] == y[i];
    }
    T_CHECK(ok && dropped > 5 && dropped < 40);
    free(a); free(b); free(c);
}

/* ---- optimiser kernels -------------------------------------------------------------------------------- */

static void test_kernels_optimiser(void) {
    ctx_setup();
    size_t n = 50001;
    float *p = randn(n, 100, 1.0f), *g = randn(n, 101, 0.1f), *m = randn(n, 102, 0.01f);
    float *v = zeros(n);
    for (size_t i = 0; i < n; i++) v[i] = 0.001f * fabsf(fx_normal(103, i));
    uint8_t *decay = malloc(n);
    for (size_t i = 0; i < n; i++) decay[i] = (uint8_t)(i % 3 != 0);
    float *p0 = malloc(n * sizeof *p0), *m0 = malloc(n * sizeof *m0), *v0 = malloc(n * sizeof *v0);
    memcpy(p0, p, n * sizeof *p);
    memcpy(m0, m, n * sizeof *m);
    memcpy(v0, v, n * sizeof *v);
    /* the clip: max_norm at about half the norm scales every gradient by about 0.5 */
    double ss = NAN, ref = 0;
    O->sumsq(C2, &ss, g, n);
    for (size_t i = 0; i < n; i++) ref += (double)g[i] * g[i];
    T_NEAR(ss, ref, 0, 1e-6);
    double again = NAN;
    O->sumsq(C2, &again, g, n);
    T_CHECK(again == ss); /* deterministic */
    umd_adamw_args a = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.05f, 1.0f - 0.9f * 0.9f * 0.9f,
                        1.0f - 0.95f * 0.95f * 0.95f, (float)(0.5 * sqrt(ss))};
    float gs = umd_clip_factor(a.max_norm, ss);
    T_NEAR(gs, 0.5, 0, 1e-5);
    O->adamw(C2, p, g, m, v, decay, n, &a, &ss);
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        double gi = (double)gs * g[i];
        double mi = 0.9 * m0[i] + 0.1 * gi, vi = 0.95 * v0[i] + 0.05 * gi * gi;
        double pi = p0[i] * (decay[i] ? 1 - 1e-3 * 0.05 : 1.0);
        pi -= 1e-3 / a.bias_correction1 * mi / (sqrt(vi) / sqrt(a.bias_correction2) + 1e-8);
        /* a thousandth of the step, or a few ulp of p */
        double ei = fabs(pi - p[i]) / (1e-3 * 1e-3 + 4e-7 * fabs(pi)) * 1e-4;
        if (ei > 1e-4 && e <= 1e-4)
            printf("  adamw[%zu]: p0 %.9g g %.9g m0 %.9g v0 %.9g -> %.9g, reference %.9g\n", i, p0[i], g[i],
                   m0[i], v0[i], p[i], pi);
        e = fmax(e, ei);
        /* m: a few ulp of its terms */
        e = fmax(e, fabs(mi - m[i]) / (fabs(m0[i]) + fabs(gi) + 1e-9) * 1e-4 / 1e-6);
    }
    T_CHECK_MSG(e < 1e-4, "adamw error %g", e);
    /* the clip factor: PyTorch's, in fp32; no clip below the threshold, with max_norm 0 or a
     * norm that is not a number */
    T_CHECK(umd_clip_factor(2.0f, 16.0) == 2.0f / (4.0f + 1e-6f));
    T_CHECK(umd_clip_factor(5.0f, 16.0) == 1.0f);
    T_CHECK(umd_clip_factor(0.0f, 16.0) == 1.0f);
    T_CHECK(umd_clip_factor(1.0f, NAN) == 1.0f);
    /* max_norm 0: sumsq is not read (NULL) and the gradients are used as they are */
    umd_adamw_args a1 = a;
    a1.max_norm = 0;
    float p1[3] = {1, 2, 3}, g1[3] = {0.5f, -0.5f, 0.25f}, m1[3] = {0}, v1[3] = {0};
    float p2[3] = {1, 2, 3}, g2[3] = {1.0f, -1.0f, 0.5f}, m2[3] = {0}, v2[3] = {0};
    uint8_t d1[3] = {1, 1, 0};
    double s2 = 2.25; /* sqrt = 1.5: max_norm 0.75 halves g2 back to g1 */
    O->adamw(C2, p1, g1, m1, v1, d1, 3, &a1, NULL);
    a1.max_norm = 0.75f * (1.5f + 1e-6f) / 1.5f;
    O->adamw(C2, p2, g2, m2, v2, d1, 3, &a1, &s2);
    for (int i = 0; i < 3; i++) T_NEAR(p2[i], p1[i], 0, 1e-6);
    memcpy(v0, m0, n * sizeof *v0);
    O->ema(C2, m0, p, n, 0.99f);
    e = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs(m0[i] - (0.99 * v0[i] + 0.01 * p[i])));
    T_CHECK_MSG(e < 1e-6, "ema error %g", e);
    free(p); free(g); free(m); free(v); free(decay); free(p0); free(m0); free(v0);
}

int main(void) {
    T_RUN(test_kernels_linear);
    T_RUN(test_kernels_layernorm);
    T_RUN(test_kernels_gate_residual);
    T_RUN(test_kernels_residual_layernorm);
    T_RUN(test_kernels_activations);
    T_RUN(test_kernels_mlp);
    T_RUN(test_kernels_attention);
    T_RUN(test_kernels_tokens);
    T_RUN(test_kernels_mse_masked);
    T_RUN(test_kernels_patchify);
    T_RUN(test_kernels_noise_and_time);
    T_RUN(test_kernels_random);
    T_RUN(test_kernels_optimiser);
    T_RUN(test_kernels_bf16_operands);
    T_RUN(test_kernels_bf16_branches);
    T_RUN(test_kernels_bf16_grads);
    O->release(C1, WS1);
    O->release(C2, WS2);
    O->ctx_destroy(&C1);
    O->ctx_destroy(&C2);
    return t_done();
}
