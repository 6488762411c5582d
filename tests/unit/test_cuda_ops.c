/* test_cuda_ops.c: every op of the CUDA backend against its CPU twin (the oracle) on fresh Philox
 * inputs of several shapes, non-multiples of the tile sizes included. Outputs the GPU op writes
 * (rather than accumulates into) are filled with NaN first, so an element it fails to write
 * fails the comparison; accumulated outputs start from the same random values on both sides.
 * Tolerances per math: fp32 1e-5, tf32 1e-3, bf16 1e-2. fp32 compares each element relative to
 * |cpu| + 0.1 max|cpu| (sums of products in another order differ in the last bits of the sum's
 * terms, not of a result that cancels to near zero); tf32 and bf16, whose rounding is of the
 * operands, relative to the tensor's largest value.
 * Random streams, keep orders, timesteps and labels must match bit for bit (normals: within an
 * ulp). Without a visible CUDA device every test reports SKIP. umdq-uses: umd common */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "t.h"
#include "ops.h"
#include "cuda/res_item.h"
#include "cuda/umd_cuda.h"
#include "philox.h"
#include "test_model_fixtures.h"
#include "umdq.h"

static const umd_ops *CPU, *GPU;
static umd_ctx *cc, *gc;        /* 1-thread CPU context; the CUDA context of the current math */
static void *cws, *gws;
static int math = UMD_MATH_FP32;
static char no_gpu[400];

static const umd_limits LIM = {8, 1025, 160, 4, 1024, 256 * 256};

#define MAXP 128
static void *dev_ptrs[MAXP], *host_ptrs[MAXP];
static int ndev, nhost;

static void cleanup(void) {
    for (int i = 0; i < ndev; i++) GPU->release(gc, dev_ptrs[i]);
    for (int i = 0; i < nhost; i++) free(host_ptrs[i]);
    ndev = nhost = 0;
}

static void *hkeep(void *p) {
    if (nhost < MAXP) host_ptrs[nhost++] = p;
    return p;
}

static int use_math(int m) {
    char err[256];
    if (gc && math == m) return 0;
    if (gc) {
        GPU->release(gc, gws);
        GPU->ctx_destroy(&gc);
    }
    math = m;
    GPU = umd_ops_cuda(m);
    if (!GPU || GPU->ctx_new(&gc, 1, err, sizeof err) != 0) {
        snprintf(no_gpu, sizeof no_gpu, "CUDA context: %s", GPU ? err : "no CUDA build");
        return -1;
    }
    size_t b = GPU->workspace_bytes(gc, &LIM);
    gws = GPU->alloc(gc, b);
    if (!gws) return -1;
    GPU->set_workspace(gc, gws, b);
    return 0;
}

static void need_gpu(int m) {
    if (no_gpu[0]) T_SKIP("%s", no_gpu);
    T_REQUIRE(use_math(m) == 0);
    cleanup();
}

static float *h_randn(size_t n, uint32_t key, float scale) {
    float *x = hkeep(malloc((n ? n : 1) * sizeof *x));
    for (size_t i = 0; i < n; i++) x[i] = scale * fx_normal(key, i);
    return x;
}

static float *h_nan(size_t n) {
    float *x = hkeep(malloc((n ? n : 1) * sizeof *x));
    for (size_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}

static float *h_copy(const float *src, size_t n) {
    float *x = hkeep(malloc((n ? n : 1) * sizeof *x));
    memcpy(x, src, n * sizeof *x);
    return x;
}

static void *d_up(const void *h, size_t bytes) {
    void *d = GPU->alloc(gc, bytes);
    T_REQUIRE(d);
    if (ndev < MAXP) dev_ptrs[ndev++] = d;
    GPU->upload(gc, d, h, bytes);
    return d;
}

static float *d_f(const float *h, size_t n) { return d_up(h, n * sizeof(float)); }

static void *h_down(const void *d, size_t bytes) {
    void *h = hkeep(malloc(bytes ? bytes : 1));
    GPU->download(gc, h, d, bytes);
    return h;
}

/* A scalar the GPU writes to device memory, poisoned (again, for a reused one) first: an op that
 * does not write it fails. */
static double *d_scalar(double *d) {
    double nan = NAN;
    if (d) GPU->upload(gc, d, &nan, sizeof nan);
    return d ? d : d_up(&nan, sizeof nan);
}
static double h_scalar(const double *d) {
    double v = NAN;
    GPU->download(gc, &v, d, sizeof v);
    return v;
}

static void gpu_ok(void) {
    char err[512];
    int rc = GPU->status(gc, err, sizeof err);
    T_REQUIRE(rc == 0 || (printf("  device: %s\n", err), 0));
}

static double tol_of(int m) { return m == UMD_MATH_FP32 ? 1e-5 : m == UMD_MATH_TF32 ? 1e-3 : 1e-2; }

/* Compares n floats of the device tensor d with the CPU's h at tolerance tol (see the top). */
static void same(const char *what, const float *d, const float *h, size_t n, double tol, int normwise) {
    gpu_ok();
    const float *g = h_down(d, n * sizeof(float));
    double mx = 0, worst = 0;
    size_t at = 0;
    int nonfinite = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(h[i]));
    double floor = normwise ? mx : 0.1 * mx;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(g[i]) && isfinite(h[i])) {
            if (!nonfinite++) at = i;
            continue;
        }
        double e = fabs((double)g[i] - h[i]) / (fabs(h[i]) + floor + 1e-30);
        if (e > worst) {
            worst = e;
            if (!nonfinite) at = i;
        }
    }
    if (nonfinite || worst > tol)
        printf("  %s: worst %.3g at [%zu] (gpu %.9g cpu %.9g), %d not finite, n %zu\n", what,
               worst, at, g[at], h[at], nonfinite, n);
    T_CHECK_MSG(nonfinite == 0, "%s: %d elements not written or not finite", what, nonfinite);
    T_CHECK_MSG(worst <= tol, "%s: relative error %.3g > %.0e", what, worst, tol);
}

static void same_math(const char *what, const float *d, const float *h, size_t n) {
    same(what, d, h, n, tol_of(math), math != UMD_MATH_FP32);
}

static void same_i32(const char *what, const int32_t *d, const int32_t *h, size_t n) {
    gpu_ok();
    const int32_t *g = h_down(d, n * sizeof(int32_t));
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (g[i] != h[i] && !bad++) first = i;
    if (bad) printf("  %s: %zu differ, first [%zu] gpu %d cpu %d\n", what, bad, first, g[first], h[first]);
    T_CHECK_MSG(bad == 0, "%s: %zu of %zu integers differ", what, bad, n);
}

/* ---- bf16 operand tensors: helpers (fx_bf16, fx_widen: test_model_fixtures.h) ------------------ */

/* n values of 0xffff (a bf16 NaN): an operand output the op fails to write stays so. */
static uint16_t *h_nan16(size_t n) {
    uint16_t *x = hkeep(malloc((n ? n : 1) * sizeof *x));
    for (size_t i = 0; i < n; i++) x[i] = 0xffffu;
    return x;
}

/* A CUDA context of its own in math m, made with UMDQ_CUDA_BF16_OPERANDS=1 (operands) and
 * UMDQ_CUDA_FUSED_NORM=1 (fused) as asked (read when a context is made), with a workspace for
 * lim when lim is not NULL (*ws; released by ctx_free). Buffers come from gc (d_up): every
 * context of the process reads device memory alike. */
static umd_ctx *ctx_with(int m, int operands, int fused, const umd_limits *lim, void **ws) {
    const umd_ops *o = umd_ops_cuda(m);
    char err[512];
    umd_ctx *c = NULL;
    /* the attention the workspace is carved for is the default's (the tests choose theirs with
     * umd_cuda_set_attention), whatever the environment says */
    unsetenv("UMDQ_CUDA_ATTENTION");
    if (operands) setenv("UMDQ_CUDA_BF16_OPERANDS", "1", 1);
    if (fused) setenv("UMDQ_CUDA_FUSED_NORM", "1", 1);
    int rc = o->ctx_new(&c, 1, err, sizeof err);
    unsetenv("UMDQ_CUDA_ATTN_DS_MAX_T"); /* a test sets it for one context */
    setenv("UMDQ_CUDA_BF16_OPERANDS", "0", 1);
    setenv("UMDQ_CUDA_FUSED_NORM", "0", 1);
    setenv("UMDQ_CUDA_BF16_MLP", "0", 1); /* ctx_with_switch's, cleared before */
    setenv("UMDQ_CUDA_ATTN_KV32", "0", 1); /* T_REQUIRE can jump out; */
    setenv("UMDQ_CUDA_ATTN_FWD32", "0", 1);
    setenv("UMDQ_CUDA_ATTN_SPLIT", "0", 1);
    setenv("UMDQ_CUDA_ATTN_DS", "0", 1);
    unsetenv("UMDQ_CUDA_LT_BF16_Y");   /* and the via-fp32 test's */
    setenv("UMDQ_CUDA_GELU_EPILOGUE", "0", 1);
    setenv("UMDQ_CUDA_BF16_BRANCH", "0", 1);
    setenv("UMDQ_CUDA_BF16_BIAS", "0", 1);
    setenv("UMDQ_CUDA_BF16_DH", "0", 1);
    setenv("UMDQ_CUDA_BF16_GRAD", "0", 1);
    setenv("UMDQ_CUDA_MLP_ONE_PASS", "0", 1);
    setenv("UMDQ_CUDA_GEMM_TUNE", "0", 1);
    unsetenv("UMDQ_CUDA_GEMM_TUNE_TAKE");
    T_REQUIRE(rc == 0 || (printf("  ctx_new: %s\n", err), 0));
    *ws = NULL;
    if (lim) {
        size_t b = o->workspace_bytes(c, lim);
        *ws = o->alloc(c, b);
        T_REQUIRE(*ws);
        o->set_workspace(c, *ws, b);
    }
    return c;
}

static void ctx_free(umd_ctx **c, void *ws) {
    GPU->release(*c, ws);
    GPU->ctx_destroy(c);
}

/* ctx_with, made with the switch `var`=1 as well (read when a context is made; ctx_with clears
 * it before T_REQUIRE can jump out). */
static umd_ctx *ctx_with_switch(const char *var, int m, int operands, const umd_limits *lim,
                                void **ws) {
    setenv(var, "1", 1);
    umd_ctx *c = ctx_with(m, operands, 0, lim, ws);
    setenv(var, "0", 1);
    return c;
}

/* ctx_with, made with UMDQ_CUDA_BF16_MLP=1 as well (the MLP keeps h in bf16 where the context's
 * operands are bf16). */
static umd_ctx *ctx_with_mlp(int m, int operands, const umd_limits *lim, void **ws) {
    return ctx_with_switch("UMDQ_CUDA_BF16_MLP", m, operands, lim, ws);
}

/* Waits for a context's queued ops (its own stream: gc's downloads do not wait for them). */
static void ctx_ok(umd_ctx *c) {
    char err[512];
    int rc = GPU->status(c, err, sizeof err);
    T_REQUIRE(rc == 0 || (printf("  device: %s\n", err), 0));
}

/* The n fp32 values at d (device) and at ref (device) bit for bit, every one of ref finite (the
 * outputs start as NaN: an op that wrote nothing matches nothing). The copies are freed at once
 * (some of these tensors are tens of MB). */
static void same_bits(const char *what, const float *d, const float *ref, size_t n) {
    gpu_ok();
    float *g = malloc((n ? n : 1) * sizeof *g), *r = malloc((n ? n : 1) * sizeof *r);
    T_REQUIRE(g && r);
    GPU->download(gc, g, d, n * sizeof *g);
    GPU->download(gc, r, ref, n * sizeof *r);
    size_t bad = 0, first = 0, nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(r[i])) nonfinite++;
        if (memcmp(&g[i], &r[i], sizeof(float)) != 0 && !bad++) first = i;
    }
    if (bad)
        printf("  %s: %zu of %zu differ, first [%zu] %.9g vs %.9g\n", what, bad, n, first,
               g[first], r[first]);
    free(g);
    free(r);
    T_CHECK_MSG(nonfinite == 0, "%s: %zu reference values not written or not finite", what,
                nonfinite);
    T_CHECK_MSG(bad == 0, "%s: %zu of %zu values differ from the default context's", what, bad, n);
}

/* Both contexts' queued work done without a failure. */
static void ctx_ok2(umd_ctx *a, umd_ctx *b) {
    ctx_ok(a);
    ctx_ok(b);
}

/* same_bits, the name of what is compared made from a printf format. */
static void same_bits_fmt(const float *got, const float *want, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void same_bits_fmt(const float *got, const float *want, size_t n, const char *fmt, ...) {
    char what[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    same_bits(what, got, want, n);
}


/* The n bf16 values at d (device) against the expected halves e (host) bit for bit. */
static void same_bf16(const char *what, const void *d, const uint16_t *e, size_t n) {
    gpu_ok();
    uint16_t *g = malloc((n ? n : 1) * sizeof *g);
    T_REQUIRE(g);
    GPU->download(gc, g, d, n * sizeof *g);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (g[i] != e[i] && !bad++) first = i;
    if (bad)
        printf("  %s: %zu of %zu differ, first [%zu] 0x%04x (%.9g) vs 0x%04x (%.9g)\n", what, bad,
               n, first, g[first], fx_widen(g[first]), e[first], fx_widen(e[first]));
    free(g);
    T_CHECK_MSG(bad == 0, "%s: %zu of %zu bf16 values differ from the rounded fp32 output", what,
                bad, n);
}

/* The n bf16 values at d (device) against the fp32 values at ref (device) rounded to nearest even
 * on the host (fx_bf16), bit for bit, every one of ref finite. Mismatches are counted, the first
 * printed with the fp32 value it should have rounded, and split into those on a tie (the fp32
 * value halfway between two bf16) and those one bf16 step off: a store rounding otherwise than
 * to nearest even shows on ties, a sum taken in another order one step off anywhere. */
static void same_rounded(const char *what, const void *d, const float *ref, size_t n) {
    gpu_ok();
    uint16_t *g = malloc((n ? n : 1) * sizeof *g);
    float *r = malloc((n ? n : 1) * sizeof *r);
    T_REQUIRE(g && r);
    GPU->download(gc, g, d, n * sizeof *g);
    GPU->download(gc, r, ref, n * sizeof *r);
    size_t bad = 0, first = 0, ties = 0, step = 0, nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(r[i])) {
            nonfinite++;
            continue;
        }
        const uint16_t e = fx_bf16(r[i]);
        if (g[i] == e) continue;
        if (!bad++) first = i;
        uint32_t u;
        memcpy(&u, &r[i], sizeof u);
        if ((u & 0xffffu) == 0x8000u) ties++;
        if (g[i] == (uint16_t)(e + 1) || g[i] == (uint16_t)(e - 1)) step++;
    }
    if (bad) {
        uint32_t u;
        memcpy(&u, &r[first], sizeof u);
        printf("  %s: %zu of %zu differ (%zu on ties, %zu one bf16 step off), first [%zu] 0x%04x "
               "(%.9g) vs 0x%04x (%.9g), the fp32 value %.9g (0x%08x)\n",
               what, bad, n, ties, step, first, g[first], fx_widen(g[first]), fx_bf16(r[first]),
               fx_widen(fx_bf16(r[first])), r[first], u);
    }
    free(g);
    free(r);
    T_CHECK_MSG(nonfinite == 0, "%s: %zu reference values not written or not finite", what,
                nonfinite);
    T_CHECK_MSG(bad == 0, "%s: %zu of %zu bf16 values differ from the default context's fp32 "
                "values rounded", what, bad, n);
}

/* The n bf16 values at d (device) against those at ref (device) bit for bit, every one of ref
 * finite (the outputs start as 0xffff: an op that wrote nothing matches nothing). */
static void same_bf16_dev(const char *what, const void *d, const void *ref, size_t n) {
    gpu_ok();
    uint16_t *e = h_down(ref, n * sizeof *e);
    size_t nan = 0;
    for (size_t i = 0; i < n; i++) nan += (e[i] & 0x7f80u) == 0x7f80u; /* NaN or infinite */
    T_CHECK_MSG(nan == 0, "%s: %zu reference values not written or not finite", what, nan);
    same_bf16(what, d, e, n);
}

/* n bytes of 0xff: NaN as fp32 (0xffffffff) and as bf16 (0xffff), the poison of an output of
 * either type. */
static const void *h_poison(size_t bytes) {
    void *p = hkeep(malloc(bytes ? bytes : 1));
    memset(p, 0xff, bytes);
    return p;
}

/* The n fp32 values at d (device) against those at ref (device) in relative L2, every one of
 * both finite: ||d - ref|| / ||ref - base|| <= tol, where base (host; NULL: zeros) holds what
 * both accumulated onto, so that the increments are what is compared. For results that are
 * close to another context's, not its bits. */
static void near_l2(const char *what, const float *d, const float *ref, const float *base,
                    size_t n, double tol) {
    gpu_ok();
    float *g = malloc((n ? n : 1) * sizeof *g), *r = malloc((n ? n : 1) * sizeof *r);
    T_REQUIRE(g && r);
    GPU->download(gc, g, d, n * sizeof *g);
    GPU->download(gc, r, ref, n * sizeof *r);
    double num = 0, den = 0;
    size_t nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(g[i]) || !isfinite(r[i])) {
            nonfinite++;
            continue;
        }
        const double e = (double)g[i] - r[i], v = (double)r[i] - (base ? base[i] : 0.0);
        num += e * e;
        den += v * v;
    }
    free(g);
    free(r);
    const double rel = sqrt(num) / (sqrt(den) + 1e-30);
    if (nonfinite || rel > tol)
        printf("  %s: relative L2 error %.3g (tolerance %.0e), %zu values not finite, n %zu\n",
               what, rel, tol, nonfinite, n);
    T_CHECK_MSG(nonfinite == 0, "%s: %zu values not written or not finite", what, nonfinite);
    T_CHECK_MSG(rel <= tol, "%s: relative L2 error %.3g > %.0e", what, rel, tol);
}

/* ---- elementwise and optimiser ---------------------------------------------------------------- */

static void test_cuda_elementwise(void) {
    need_gpu(UMD_MATH_FP32);
    const size_t sizes[] = {1, 1000, 100003};
    for (int s = 0; s < 3; s++) {
        size_t n = sizes[s];
        float *a = h_randn(n, 1, 2.0f), *b = h_randn(n, 2, 3.0f);
        float *da = d_f(a, n), *db = d_f(b, n);
        float *y = h_nan(n), *dy = d_f(y, n);
        CPU->fill(cc, y, n, 0.375f);
        GPU->fill(gc, dy, n, 0.375f);
        same("fill", dy, y, n, 0, 0);
        GPU->upload(gc, dy, h_nan(n), n * 4);
        CPU->copy(cc, y, a, n);
        GPU->copy(gc, dy, da, n);
        same("copy", dy, y, n, 0, 0);
        GPU->upload(gc, dy, h_nan(n), n * 4);
        CPU->add(cc, y, a, b, n);
        GPU->add(gc, dy, da, db, n);
        same("add", dy, y, n, 1e-7, 0);
        GPU->upload(gc, dy, h_nan(n), n * 4);
        CPU->gelu_fwd(cc, y, a, n);
        GPU->gelu_fwd(gc, dy, da, n);
        same("gelu_fwd", dy, y, n, 1e-5, 0);
        GPU->upload(gc, dy, h_nan(n), n * 4);
        CPU->gelu_bwd(cc, y, b, a, n);
        GPU->gelu_bwd(gc, dy, db, da, n);
        same("gelu_bwd", dy, y, n, 1e-5, 0);
        GPU->upload(gc, dy, h_nan(n), n * 4);
        CPU->silu_fwd(cc, y, a, n);
        GPU->silu_fwd(gc, dy, da, n);
        same("silu_fwd", dy, y, n, 1e-5, 0);
        GPU->upload(gc, dy, h_nan(n), n * 4);
        CPU->silu_bwd(cc, y, b, a, n);
        GPU->silu_bwd(gc, dy, db, da, n);
        same("silu_bwd", dy, y, n, 1e-5, 0);
        /* gelu_bwd in place (dx aliases dy) */
        float *y2 = h_copy(b, n), *dy2 = d_f(b, n);
        CPU->gelu_bwd(cc, y2, y2, a, n);
        GPU->gelu_bwd(gc, dy2, dy2, da, n);
        same("gelu_bwd in place", dy2, y2, n, 1e-5, 0);
    }
    cleanup();
}

static void test_cuda_optimiser(void) {
    need_gpu(UMD_MATH_FP32);
    const size_t sizes[] = {17, 4096 * 3 + 5, 1000003};
    for (int s = 0; s < 3; s++) {
        size_t n = sizes[s];
        float *p = h_randn(n, 10, 0.5f), *g = h_randn(n, 11, 0.1f), *m = h_randn(n, 12, 0.01f);
        float *v = h_randn(n, 13, 0.01f);
        for (size_t i = 0; i < n; i++) v[i] = v[i] * v[i];
        uint8_t *decay = hkeep(malloc(n));
        for (size_t i = 0; i < n; i++) decay[i] = (uint8_t)(fx_unit(14, i) < 0.7f);
        float *dp = d_f(p, n), *dg = d_f(g, n), *dm = d_f(m, n), *dv = d_f(v, n);
        uint8_t *ddecay = d_up(decay, n);
        double sc = NAN, *dsg = d_scalar(NULL);
        CPU->sumsq(cc, &sc, g, n);
        GPU->sumsq(gc, dsg, dg, n);
        double sg = h_scalar(dsg);
        T_NEAR(sg, sc, 0, 1e-6);
        /* the clip factor from each side's own sum of squares (about 0.7), the args in device
         * memory on the GPU */
        umd_adamw_args a = {3e-3f, 0.9f, 0.95f, 1e-8f, 0.05f, 1.0f - 0.9f * 0.9f * 0.9f,
                            1.0f - 0.95f * 0.95f * 0.95f, (float)(0.7 * sqrt(sc))};
        umd_adamw_args *da = d_up(&a, sizeof a);
        for (int k = 0; k < 2; k++) {
            CPU->adamw(cc, p, g, m, v, decay, n, &a, &sc);
            GPU->adamw(gc, dp, dg, dm, dv, ddecay, n, da, dsg);
        }
        same("adamw p", dp, p, n, 1e-5, 0);
        same("adamw m", dm, m, n, 1e-5, 0);
        same("adamw v", dv, v, n, 1e-5, 0);
        float *e = h_randn(n, 15, 0.5f), *de = d_f(e, n);
        CPU->ema(cc, e, p, n, 0.999f);
        GPU->ema(gc, de, dp, n, 0.999f);
        same("ema", de, e, n, 1e-5, 0);
    }
    cleanup();
}

/* ---- random numbers ------------------------------------------------------------------------- */

static void test_cuda_random_streams(void) {
    need_gpu(UMD_MATH_FP32);
    const size_t ns[] = {1, 7, 1001, 65537};
    const uint64_t firsts[] = {0, 3, 1234567, 5};
    for (int s = 0; s < 4; s++) {
        size_t n = ns[s];
        float *u = h_nan(n), *du = d_f(u, n);
        CPU->rand_uniform(cc, u, n, 0x1234abcdULL + s, PHILOX_INIT, (uint32_t)s, firsts[s], -0.3f, 0.7f);
        GPU->rand_uniform(gc, du, n, 0x1234abcdULL + s, PHILOX_INIT, (uint32_t)s, firsts[s], -0.3f, 0.7f);
        same("rand_uniform", du, u, n, 1.2e-7, 0);
        float *z = h_nan(n), *dz = d_f(z, n);
        CPU->rand_normal(cc, z, n, 99 + s, PHILOX_NOISE, 7u * s, firsts[s], 0.1f, 1.5f);
        GPU->rand_normal(gc, dz, n, 99 + s, PHILOX_NOISE, 7u * s, firsts[s], 0.1f, 1.5f);
        same("rand_normal", dz, z, n, 2e-6, 0);
    }
    /* timesteps and labels: rows from row0, clean and noisy */
    for (int clean = 0; clean < 2; clean++) {
        int n = 37, row0 = 11;
        int32_t t[37], y[37], yu[37];
        for (int b = 0; b < n; b++) y[b] = b % 10;
        int32_t *dt = d_up(t, sizeof t), *dy = d_up(y, sizeof y), *dyu = d_up(yu, sizeof yu);
        CPU->draw_timesteps(cc, t, row0, n, clean, 1000, 5, 42);
        GPU->draw_timesteps(gc, dt, row0, n, clean, 1000, 5, 42);
        same_i32("draw_timesteps", dt, t, (size_t)n);
        CPU->draw_labels(cc, yu, y, row0, n, clean, 0.3f, 10, 5, 42);
        GPU->draw_labels(gc, dyu, dy, row0, n, clean, 0.3f, 10, 5, 42);
        same_i32("draw_labels", dyu, yu, (size_t)n);
    }
    /* keep orders: L a power of two and not, keep 0 < keep < L */
    const int Ls[] = {16, 49, 64, 1024, 1000};
    for (int s = 0; s < 5; s++) {
        int L = Ls[s], n = 5, keep = L / 4 + 1, row0 = 3;
        int32_t *o = hkeep(malloc((size_t)n * L * 4)), *sl = hkeep(malloc((size_t)n * L * 4));
        int32_t *dO = d_up(o, (size_t)n * L * 4), *dS = d_up(sl, (size_t)n * L * 4);
        CPU->draw_keep(cc, o, sl, row0, n, L, keep, 77, 123);
        GPU->draw_keep(gc, dO, dS, row0, n, L, keep, 77, 123);
        same_i32("draw_keep order", dO, o, (size_t)n * L);
        same_i32("draw_keep slot", dS, sl, (size_t)n * L);
    }
    cleanup();
}

/* ---- diffusion inputs ------------------------------------------------------------------------ */

static void test_cuda_patches_noise_embed(void) {
    need_gpu(UMD_MATH_FP32);
    const int shapes[][4] = {{3, 3, 8, 2}, {2, 1, 28, 4}, {1, 3, 12, 3}}; /* n, C, HW, p */
    for (int s = 0; s < 3; s++) {
        int n = shapes[s][0], C = shapes[s][1], H = shapes[s][2], p = shapes[s][3];
        size_t N = (size_t)n * C * H * H;
        float *img = h_randn(N, 20, 1.0f), *tok = h_nan(N), *dimg = d_f(img, N), *dtok = d_f(tok, N);
        CPU->patchify(cc, tok, img, n, C, H, H, p);
        GPU->patchify(gc, dtok, dimg, n, C, H, H, p);
        same("patchify", dtok, tok, N, 0, 0);
        float *back = h_nan(N), *dback = d_f(back, N);
        CPU->unpatchify(cc, back, tok, n, C, H, H, p);
        GPU->unpatchify(gc, dback, dtok, n, C, H, H, p);
        same("unpatchify", dback, back, N, 0, 0);
        /* noise mix over rows of D values */
        int D = C * H * H;
        float sa[50], s1a[50];
        for (int i = 0; i < 50; i++) {
            sa[i] = cosf(0.03f * i);
            s1a[i] = sinf(0.03f * i);
        }
        int32_t t[3] = {1, 50, 17};
        float *eps = h_randn(N, 21, 1.0f), *xt = h_nan(N);
        float *dsa = d_f(sa, 50), *ds1a = d_f(s1a, 50), *deps = d_f(eps, N), *dxt = d_f(xt, N);
        int32_t *dt = d_up(t, sizeof t);
        CPU->noise_mix(cc, xt, img, eps, t, sa, s1a, n, D);
        GPU->noise_mix(gc, dxt, dimg, deps, dt, dsa, ds1a, n, D);
        same("noise_mix", dxt, xt, N, 1e-6, 0);
    }
    const int ws[] = {30, 31, 384};
    for (int s = 0; s < 3; s++) {
        int n = 6, w = ws[s];
        int32_t t[6] = {0, 1, 2, 500, 999, 1000};
        float *out = h_nan((size_t)n * w), *dout = d_f(out, (size_t)n * w);
        int32_t *dt = d_up(t, sizeof t);
        CPU->timestep_embed(cc, out, t, n, w);
        GPU->timestep_embed(gc, dout, dt, n, w);
        same("timestep_embed", dout, out, (size_t)n * w, 1e-6, 0);
    }
    cleanup();
}

/* ---- dense layers, in each math ---------------------------------------------------------------- */

static void dense_layers(int m) {
    need_gpu(m);
    const int shapes[][3] = {{37, 53, 61}, {128, 96, 200}, {300, 160, 48}, {1, 7, 5}}; /* M N K */
    for (int s = 0; s < 4; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        /* gemm, every transpose, padded leading dimensions, beta != 0 */
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb,
                       ncm = (size_t)M * ldc;
                float *A = h_randn(na, 30, 1.0f), *B = h_randn(nb, 31, 1.0f), *Cm = h_randn(ncm, 32, 1.0f);
                float *dA = d_f(A, na), *dB = d_f(B, nb), *dC = d_f(Cm, ncm);
                CPU->gemm(cc, ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.5f, Cm, ldc);
                GPU->gemm(gc, ta, tb, M, N, K, 0.75f, dA, lda, dB, ldb, 0.5f, dC, ldc);
                same_math("gemm", dC, Cm, ncm);
            }
        float *x = h_randn((size_t)M * K, 33, 1.0f), *W = h_randn((size_t)N * K, 34, 0.2f);
        float *b = h_randn((size_t)N, 35, 1.0f);
        float *dx_ = d_f(x, (size_t)M * K), *dW_ = d_f(W, (size_t)N * K), *db_ = d_f(b, (size_t)N);
        for (int bias = 0; bias < 2; bias++) {
            float *y = h_nan((size_t)M * N), *dy = d_f(y, (size_t)M * N);
            CPU->linear_fwd(cc, y, x, W, bias ? b : NULL, M, N, K, UMD_F32);
            GPU->linear_fwd(gc, dy, dx_, dW_, bias ? db_ : NULL, M, N, K, UMD_F32);
            same_math("linear_fwd", dy, y, (size_t)M * N);
        }
        float *g = h_randn((size_t)M * N, 36, 1.0f), *dg = d_f(g, (size_t)M * N);
        for (int acc = 0; acc < 2; acc++) {
            float *gx = acc ? h_randn((size_t)M * K, 37, 1.0f) : h_nan((size_t)M * K);
            float *gW = h_randn((size_t)N * K, 38, 1.0f), *gb = h_randn((size_t)N, 39, 1.0f);
            float *dgx = d_f(gx, (size_t)M * K), *dgW = d_f(gW, (size_t)N * K), *dgb = d_f(gb, (size_t)N);
            CPU->linear_bwd(cc, gx, gW, acc ? NULL : gb, g, x, W, M, N, K, acc, UMD_F32);
            GPU->linear_bwd(gc, dgx, dgW, acc ? NULL : dgb, dg, dx_, dW_, M, N, K, acc, UMD_F32);
            same_math("linear_bwd dx", dgx, gx, (size_t)M * K);
            same_math("linear_bwd dW", dgW, gW, (size_t)N * K);
            same("linear_bwd db", dgb, gb, (size_t)N, 1e-5, 0);
            /* no dx wanted */
            CPU->linear_bwd(cc, NULL, gW, gb, g, x, W, M, N, K, 0, UMD_F32);
            GPU->linear_bwd(gc, NULL, dgW, dgb, dg, dx_, dW_, M, N, K, 0, UMD_F32);
            same_math("linear_bwd dW (no dx)", dgW, gW, (size_t)N * K);
            same("linear_bwd db (no dx)", dgb, gb, (size_t)N, 1e-5, 0);
        }
    }
    cleanup();
}

static void test_cuda_dense_fp32(void) { dense_layers(UMD_MATH_FP32); }
static void test_cuda_dense_tf32(void) { dense_layers(UMD_MATH_TF32); }
static void test_cuda_dense_bf16(void) { dense_layers(UMD_MATH_BF16); }

/* ---- the MLP, in each math ---------------------------------------------------------------------- */

/* mlp_fwd and mlp_bwd against the CPU's (there the separate ops, bit for bit: test_kernels_ops).
 * F w stays within LIM's max_weight but in the last shape, so bf16 runs its fused path (gelu(h)
 * only in the bf16 stages) on the others and the separate ops on that one. Variants: no biases;
 * biases; biases with dx aliasing dy (the trainer's call). h, y, dx and tmp start as NaN (dx as
 * dy where it aliases it); the gradients accumulate onto the same random values on both sides.
 * The backward runs from the CPU's h on both sides. Tolerances: y and dx come out of two GEMMs
 * with rounded operands (tf32, bf16: twice dense_layers'); the sums over rows (dW, db) in fp32
 * are compared at 1e-4 (up to 1025 rows summed in another order), db2 (fp32 sums of dy in every
 * math) likewise. */
static void mlp_layers(int m) {
    need_gpu(m);
    const int shapes[][3] = {{37, 61, 24}, {300, 256, 64}, {1025, 200, 160}, {1, 7, 5},
                             {20, 9, 33},  {50, 520, 160}}; /* M F w */
    const double t2 = math == UMD_MATH_FP32 ? 1e-5 : 2 * tol_of(math);
    const double tsum = math == UMD_MATH_FP32 ? 1e-4 : tol_of(math);
    const int nw = math != UMD_MATH_FP32;
    for (int s = 0; s < 6; s++) {
        int M = shapes[s][0], F = shapes[s][1], w = shapes[s][2];
        size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
        uint32_t k = 700 + 20 * (uint32_t)s;
        float *x = h_randn(Mw, k, 1.0f), *W1 = h_randn(Fw, k + 1, 0.2f);
        float *W2 = h_randn(Fw, k + 2, 0.2f), *dy = h_randn(Mw, k + 3, 1.0f);
        float *b1 = h_randn((size_t)F, k + 4, 0.5f), *b2 = h_randn((size_t)w, k + 5, 0.5f);
        float *d_x = d_f(x, Mw), *d_W1 = d_f(W1, Fw), *d_W2 = d_f(W2, Fw), *d_dy = d_f(dy, Mw);
        float *d_b1 = d_f(b1, (size_t)F), *d_b2 = d_f(b2, (size_t)w);
        for (int v = 0; v < 3; v++) {
            int bias = v > 0, alias = v == 2;
            float *y = h_nan(Mw), *h = h_nan(MF), *tmp = h_nan(MF);
            float *d_y = d_f(y, Mw), *d_h = d_f(h, MF), *d_tmp = d_f(tmp, MF);
            CPU->mlp_fwd(cc, y, h, tmp, x, W1, bias ? b1 : NULL, W2, bias ? b2 : NULL, M, F, w,
                         UMD_F32);
            GPU->mlp_fwd(gc, d_y, d_h, d_tmp, d_x, d_W1, bias ? d_b1 : NULL, d_W2,
                         bias ? d_b2 : NULL, M, F, w, UMD_F32);
            same_math("mlp_fwd h", d_h, h, MF);
            same("mlp_fwd y", d_y, y, Mw, t2, nw);
            float *gx = alias ? h_copy(dy, Mw) : h_nan(Mw);
            float *gW1 = h_randn(Fw, k + 6, 1.0f), *gW2 = h_randn(Fw, k + 7, 1.0f);
            float *gb1 = h_randn((size_t)F, k + 8, 1.0f), *gb2 = h_randn((size_t)w, k + 9, 1.0f);
            float *d_gx = d_f(gx, Mw), *d_gW1 = d_f(gW1, Fw), *d_gW2 = d_f(gW2, Fw);
            float *d_gb1 = d_f(gb1, (size_t)F), *d_gb2 = d_f(gb2, (size_t)w);
            float *d_hc = d_f(h, MF), *d_tmp2 = d_f(h_nan(MF), MF);
            CPU->mlp_bwd(cc, gx, gW1, bias ? gb1 : NULL, gW2, bias ? gb2 : NULL, alias ? gx : dy, x,
                         h, W1, W2, tmp, M, F, w, UMD_F32);
            GPU->mlp_bwd(gc, d_gx, d_gW1, bias ? d_gb1 : NULL, d_gW2, bias ? d_gb2 : NULL,
                         alias ? d_gx : d_dy, d_x, d_hc, d_W1, d_W2, d_tmp2, M, F, w, UMD_F32);
            same("mlp_bwd dx", d_gx, gx, Mw, t2, nw);
            same("mlp_bwd dW1", d_gW1, gW1, Fw, tsum, nw);
            same("mlp_bwd dW2", d_gW2, gW2, Fw, tsum, nw);
            same("mlp_bwd db1", d_gb1, gb1, (size_t)F, tsum, nw);
            same("mlp_bwd db2", d_gb2, gb2, (size_t)w, 1e-4, 0);
        }
        cleanup();
    }
}

static void test_cuda_mlp_fp32(void) { mlp_layers(UMD_MATH_FP32); }
static void test_cuda_mlp_tf32(void) { mlp_layers(UMD_MATH_TF32); }
static void test_cuda_mlp_bf16(void) { mlp_layers(UMD_MATH_BF16); }

/* ---- bf16 operand tensors into the products ------------------------------------------------------- */

/* The limits of the operand tests' two contexts: a bf16 stage of 40000 x 410 values (rows x
 * max(max_width, max_weight / max_width)), so a (25700, 640) x and a (33000, 512) MLP hidden go
 * in two chunks of rows, whose second starts 256-byte aligned as the stage does; rows enough for
 * the bias gradients' gemv over those shapes. */
static const umd_limits OPND_LIM = {40000, 1, 160, 4, 1024, 256 * 256};

/* x (n) drawn on the host and rounded to bf16 there: *half the bf16 values (for the operand
 * context), the returned floats their widening (for the default one): both contexts' GEMMs read
 * the same bf16 operand, one converted into its stage, the other as it is. */
static float *h_bf16_values(size_t n, uint32_t key, uint16_t **half) {
    float *x = h_randn(n, key, 1.0f);
    uint16_t *h = hkeep(malloc((n ? n : 1) * sizeof *h));
    for (size_t i = 0; i < n; i++) {
        h[i] = fx_bf16(x[i]);
        x[i] = fx_widen(h[i]);
    }
    *half = h;
    return x;
}

/* A default bf16 context (dc) and one with bf16 operands (oc), both for OPND_LIM. */
static void opnd_contexts(umd_ctx **dc, void **dws, umd_ctx **oc, void **ows) {
    *dc = ctx_with(UMD_MATH_BF16, 0, 0, &OPND_LIM, dws);
    *oc = ctx_with(UMD_MATH_BF16, 1, 0, &OPND_LIM, ows);
}

/* One shape of the bf16 Linear tests: M N K from shapes[s], x drawn from key and rounded to bf16
 * (host x, its bf16 halves xh; d_x, d_xh on the device), W from key + 1, b from key + 2 (host and
 * device). */
typedef struct {
    int M, N, K;
    size_t MK, MN, NK;
    float *x, *W, *b, *d_x, *d_W, *d_b;
    uint16_t *xh;
    const void *d_xh;
} lin16_case;
static lin16_case lin16_new(const int shapes[][3], int s, uint32_t key) {
    lin16_case c;
    c.M = shapes[s][0], c.N = shapes[s][1], c.K = shapes[s][2];
    c.MK = (size_t)c.M * c.K, c.MN = (size_t)c.M * c.N, c.NK = (size_t)c.N * c.K;
    c.x = h_bf16_values(c.MK, key, &c.xh);
    c.W = h_randn(c.NK, key + 1, 0.2f), c.b = h_randn((size_t)c.N, key + 2, 1.0f);
    c.d_x = d_f(c.x, c.MK), c.d_W = d_f(c.W, c.NK), c.d_b = d_f(c.b, (size_t)c.N);
    c.d_xh = d_up(c.xh, c.MK * sizeof *c.xh);
    return c;
}
/* The shapes of the bf16-y tests: not multiples of the GEMM tiles, and two whose x goes in two
 * chunks of rows (OPND_LIM). */
static const int LIN16_Y_SHAPES[7][3] = {{37, 53, 61},     {128, 96, 200},   {300, 160, 48},
                                         {1, 7, 5},        {1088, 384, 128}, {32100, 128, 512},
                                         {25700, 96, 640}}; /* M N K */

/* linear_fwd and linear_bwd with a bf16 operand x (UMD_OPND in a bf16 context made with
 * UMDQ_CUDA_BF16_OPERANDS=1) against the same ops in a default bf16 context on x's fp32
 * widening, bit for bit: y with and without the bias; dx written and accumulated, dW, db; dW
 * without dx and db. Shapes that are not multiples of the GEMM tiles, and one whose x is staged
 * in two chunks of rows, forward and backward (OPND_LIM). Outputs start as NaN, accumulated ones
 * from the same random values. */
static void test_cuda_linear_bf16_operands(void) {
    need_gpu(UMD_MATH_BF16);
    void *dws, *ows;
    umd_ctx *dc, *oc;
    opnd_contexts(&dc, &dws, &oc, &ows);
    const int shapes[][3] = {{37, 53, 61},     {128, 96, 200}, {300, 160, 48},
                             {1, 7, 5},        {1025, 256, 160}, {25700, 96, 640}}; /* M N K */
    for (int s = 0; s < 6; s++) {
        const uint32_t key = 800 + 10 * (uint32_t)s;
        const lin16_case c = lin16_new(shapes, s, key);
        const int M = c.M, N = c.N, K = c.K;
        const size_t MK = c.MK, MN = c.MN, NK = c.NK;
        float *d_x = c.d_x, *d_W = c.d_W, *d_b = c.d_b, *d_g = d_f(h_randn(MN, key + 3, 1.0f), MN);
        const void *d_xh = c.d_xh;
        for (int bias = 0; bias < 2; bias++) {
            const float *poison = h_nan(MN);
            float *y0 = d_f(poison, MN), *y1 = d_f(poison, MN);
            GPU->linear_fwd(dc, y0, d_x, d_W, bias ? d_b : NULL, M, N, K, UMD_F32);
            GPU->linear_fwd(oc, y1, d_xh, d_W, bias ? d_b : NULL, M, N, K, UMD_OPND);
            ctx_ok2(dc, oc);
            same_bits_fmt(y1, y0, MN, "linear_fwd y (%d x %d x %d, bias %d)", M, N, K, bias);
        }
        for (int acc = 0; acc < 2; acc++) {
            float *gx = acc ? h_randn(MK, key + 4, 1.0f) : h_nan(MK);
            float *gW = h_randn(NK, key + 5, 1.0f), *gb = h_randn((size_t)N, key + 6, 1.0f);
            float *dx[2], *dW[2], *db[2];
            for (int k = 0; k < 2; k++) {
                dx[k] = d_f(gx, MK);
                dW[k] = d_f(gW, NK);
                db[k] = d_f(gb, (size_t)N);
            }
            GPU->linear_bwd(dc, dx[0], dW[0], db[0], d_g, d_x, d_W, M, N, K, acc, UMD_F32);
            GPU->linear_bwd(oc, dx[1], dW[1], db[1], d_g, d_xh, d_W, M, N, K, acc, UMD_OPND);
            ctx_ok2(dc, oc);
            same_bits_fmt(dx[1], dx[0], MK, "linear_bwd dx (%d x %d x %d, acc %d)", M, N, K, acc);
            same_bits_fmt(dW[1], dW[0], NK, "linear_bwd dW (%d x %d x %d, acc %d)", M, N, K, acc);
            same_bits_fmt(db[1], db[0], (size_t)N, "linear_bwd db (%d x %d x %d, acc %d)", M, N, K, acc);
            /* no dx, no db: dW alone */
            GPU->linear_bwd(dc, NULL, dW[0], NULL, d_g, d_x, d_W, M, N, K, 0, UMD_F32);
            GPU->linear_bwd(oc, NULL, dW[1], NULL, d_g, d_xh, d_W, M, N, K, 0, UMD_OPND);
            ctx_ok2(dc, oc);
            same_bits_fmt(dW[1], dW[0], NK, "linear_bwd dW, no dx (%d x %d x %d)", M, N, K);
        }
        cleanup();
    }
    ctx_free(&dc, dws);
    ctx_free(&oc, ows);
}

/* linear_fwd writing y as a bf16 operand tensor (UMD_OPND_Y in oc, a bf16 context made with
 * UMDQ_CUDA_BF16_OPERANDS=1: the qkv Linear's output), from an fp32 x and from a bf16 operand x
 * (UMD_OPND | UMD_OPND_Y), against the default bf16 context dc's fp32 y on the same bf16 values
 * rounded to nearest even on the host, bit for bit (same_rounded), with and without the bias:
 * shapes that are not multiples of the GEMM tiles, a qkv Linear's (N = 3 K), and two whose x goes
 * in two chunks of rows (OPND_LIM; a chunk is a multiple of 128 rows, so the second starts 256
 * bytes aligned in y of either type, whatever N). The bf16 outputs start as 0xffff. In the default context UMD_OPND_Y changes nothing (y
 * fp32, the same bits). */
static void linear_bf16_y_cases(umd_ctx *dc, umd_ctx *oc, const char *how) {
    for (int s = 0; s < 7; s++) {
        const lin16_case c = lin16_new(LIN16_Y_SHAPES, s, 1000 + 10 * (uint32_t)s);
        const int M = c.M, N = c.N, K = c.K;
        const size_t MN = c.MN;
        const float *d_x = c.d_x, *d_W = c.d_W, *d_b = c.d_b;
        const void *d_xh = c.d_xh;
        const float *nan32 = h_nan(MN);
        const uint16_t *nan16 = h_nan16(MN);
        for (int bias = 0; bias < 2; bias++) {
            const float *bb = bias ? d_b : NULL;
            float *y0 = d_f(nan32, MN), *y3 = d_f(nan32, MN);
            void *y1 = d_up(nan16, MN * sizeof *nan16), *y2 = d_up(nan16, MN * sizeof *nan16);
            GPU->linear_fwd(dc, y0, d_x, d_W, bb, M, N, K, UMD_F32);
            GPU->linear_fwd(dc, y3, d_x, d_W, bb, M, N, K, UMD_OPND_Y);
            GPU->linear_fwd(oc, y1, d_x, d_W, bb, M, N, K, UMD_OPND_Y);
            GPU->linear_fwd(oc, y2, d_xh, d_W, bb, M, N, K, UMD_OPND | UMD_OPND_Y);
            ctx_ok2(dc, oc);
            same_bits_fmt(y3, y0, MN, "linear_fwd y, UMD_OPND_Y in the default context (%d x %d x %d, "
                          "bias %d)", M, N, K, bias);
            char what[160];
            snprintf(what, sizeof what, "linear_fwd bf16 y%s, fp32 x (%d x %d x %d, bias %d)", how, M,
                     N, K, bias);
            same_rounded(what, y1, y0, MN);
            snprintf(what, sizeof what, "linear_fwd bf16 y%s, bf16 x (%d x %d x %d, bias %d)", how, M,
                     N, K, bias);
            same_rounded(what, y2, y0, MN);
        }
        cleanup();
    }
}

/* linear_fwd of an fp32 x (M, K) into a bf16 y (M, N) that context c cannot write (why, for the
 * log): the context fails, naming linear_fwd, a bf16 operand and `names`, and y stays as it was
 * (0xffff). */
static void bf16_y_refused(umd_ctx *c, int M, int N, int K, uint32_t key, const char *why,
                           const char *names) {
    float *x = d_f(h_randn((size_t)M * K, key, 1.0f), (size_t)M * K);
    float *W = d_f(h_randn((size_t)N * K, key + 1, 0.2f), (size_t)N * K);
    const uint16_t *nan16 = h_nan16((size_t)M * N);
    void *y = d_up(nan16, (size_t)M * N * sizeof *nan16);
    GPU->linear_fwd(c, y, x, W, NULL, M, N, K, UMD_OPND_Y);
    char err[512] = "";
    int rc = GPU->status(c, err, sizeof err);
    printf("  linear_fwd with a bf16 y, %s: %s\n", why, err);
    T_CHECK_MSG(rc != 0, "linear_fwd wrote a bf16 y it cannot (%s)", why);
    T_CONTAINS(err, "linear_fwd");
    T_CONTAINS(err, "bf16 operand");
    T_CONTAINS(err, names);
    same_bf16("linear_fwd bf16 y left alone", y, nan16, (size_t)M * N);
    cleanup();
}

/* linear_bf16_y_cases with cuBLASLt's bf16 D. In an operand context without a workspace
 * (weights beyond the bf16 stage: the fp32 path) the context fails, naming the op and y's shape,
 * and y stays as it was. */
static void test_cuda_linear_bf16_y(void) {
    need_gpu(UMD_MATH_BF16);
    void *dws, *ows;
    umd_ctx *dc, *oc;
    opnd_contexts(&dc, &dws, &oc, &ows);
    linear_bf16_y_cases(dc, oc, "");
    ctx_free(&dc, dws);
    ctx_free(&oc, ows);
    void *ws;
    umd_ctx *c = ctx_with(UMD_MATH_BF16, 1, 0, NULL, &ws);
    bf16_y_refused(c, 4, 8, 8, 1090, "no bf16 stage", "y (4, 8)");
    ctx_free(&c, NULL);
}

/* linear_bf16_y_cases where cuBLASLt does not write the bf16 y (an operand context made with
 * UMDQ_CUDA_LT_BF16_Y=0, as where it has no bf16 D with an fp32 bias): each chunk's fp32 y goes
 * into the stages' free bytes and is rounded into y, the same bits. Where a chunk's fp32 rows do
 * not fit those bytes (the smallest stages, CUDA_BF16_STAGE values: an fp32 x of K 1024 goes in
 * chunks of 8192 rows, whose fp32 y of N 1024 is twice bf_b) the context fails, naming the op,
 * and y stays as it was. */
static void test_cuda_linear_bf16_y_via_fp32(void) {
    need_gpu(UMD_MATH_BF16);
    void *dws, *ows;
    umd_ctx *dc = ctx_with(UMD_MATH_BF16, 0, 0, &OPND_LIM, &dws);
    setenv("UMDQ_CUDA_LT_BF16_Y", "0", 1);
    umd_ctx *oc = ctx_with(UMD_MATH_BF16, 1, 0, &OPND_LIM, &ows);
    linear_bf16_y_cases(dc, oc, " via fp32");
    ctx_free(&dc, dws);
    ctx_free(&oc, ows);
    const umd_limits small = {8, 1, 1024, 1, 1024, 1024 * 1024};
    void *ws;
    setenv("UMDQ_CUDA_LT_BF16_Y", "0", 1);
    umd_ctx *c = ctx_with(UMD_MATH_BF16, 1, 0, &small, &ws);
    bf16_y_refused(c, 8200, 1024, 1024, 1190, "fp32 rows that do not fit", "do not fit");
    ctx_free(&c, ws);
}

/* An MLP case's inputs for (M, F, w), drawn from key, on the device: x rounded to bf16, as its
 * fp32 widening (d_x) and as the bf16 values (d_xh); W1, W2, dy (also on the host, *dy), b1, b2. */
static void mlp_inputs(int M, int F, int w, uint32_t key, float **d_x, const void **d_xh,
                       float **d_W1, float **d_W2, float **d_dy, float **d_b1, float **d_b2,
                       float **dy) {
    const size_t Mw = (size_t)M * w, Fw = (size_t)F * w;
    uint16_t *xh;
    float *x = h_bf16_values(Mw, key, &xh);
    *dy = h_randn(Mw, key + 3, 1.0f);
    *d_x = d_f(x, Mw);
    *d_xh = d_up(xh, Mw * sizeof *xh);
    *d_W1 = d_f(h_randn(Fw, key + 1, 0.2f), Fw);
    *d_W2 = d_f(h_randn(Fw, key + 2, 0.2f), Fw);
    *d_dy = d_f(*dy, Mw);
    *d_b1 = d_f(h_randn((size_t)F, key + 4, 0.5f), (size_t)F);
    *d_b2 = d_f(h_randn((size_t)w, key + 5, 0.5f), (size_t)w);
}

/* The MLP backward's gradients on the device: dx from dx0's values (NaN, or dy's where dx
 * aliases dy), dW1, dW2, db1, db2 from the accumulators' starting values gW1, gW2, gb1, gb2. */
typedef struct {
    float *dx, *dW1, *dW2, *db1, *db2;
} mlp_grads;

static mlp_grads mlp_grads_new(const float *dx0, const float *gW1, const float *gW2,
                               const float *gb1, const float *gb2, int M, int F, int w) {
    const size_t Fw = (size_t)F * w;
    mlp_grads g = {d_f(dx0, (size_t)M * w), d_f(gW1, Fw), d_f(gW2, Fw), d_f(gb1, (size_t)F),
                   d_f(gb2, (size_t)w)};
    return g;
}

/* got's gradients against want's within 1e-2 in relative L2 (near_l2: of what each added to
 * the accumulators' starting values gW1, gW2, and gb1, gb2 where not NULL: db1, db2 are compared
 * only then); "mlp_bwd <gradient>, <how>" names each in the messages. */
static void mlp_grads_near(const mlp_grads *got, const mlp_grads *want, const float *gW1,
                           const float *gW2, const float *gb1, const float *gb2, int M, int F,
                           int w, const char *how) {
    const size_t Fw = (size_t)F * w;
    char what[200];
    snprintf(what, sizeof what, "mlp_bwd dx, %s", how);
    near_l2(what, got->dx, want->dx, NULL, (size_t)M * w, 1e-2);
    snprintf(what, sizeof what, "mlp_bwd dW1, %s", how);
    near_l2(what, got->dW1, want->dW1, gW1, Fw, 1e-2);
    snprintf(what, sizeof what, "mlp_bwd dW2, %s", how);
    near_l2(what, got->dW2, want->dW2, gW2, Fw, 1e-2);
    if (gb1) {
        snprintf(what, sizeof what, "mlp_bwd db1, %s", how);
        near_l2(what, got->db1, want->db1, gb1, (size_t)F, 1e-2);
    }
    if (gb2) {
        snprintf(what, sizeof what, "mlp_bwd db2, %s", how);
        near_l2(what, got->db2, want->db2, gb2, (size_t)w, 1e-2);
    }
}

/* got's five gradients against want's, bit for bit; `tag` names the case in the messages. */
static void mlp_grads_same(const mlp_grads *got, const mlp_grads *want, int M, int F, int w,
                           const char *tag) {
    const size_t Mw = (size_t)M * w, Fw = (size_t)F * w;
    same_bits_fmt(got->dx, want->dx, Mw, "mlp_bwd dx%s", tag);
    same_bits_fmt(got->dW1, want->dW1, Fw, "mlp_bwd dW1%s", tag);
    same_bits_fmt(got->dW2, want->dW2, Fw, "mlp_bwd dW2%s", tag);
    same_bits_fmt(got->db1, want->db1, (size_t)F, "mlp_bwd db1%s", tag);
    same_bits_fmt(got->db2, want->db2, (size_t)w, "mlp_bwd db2%s", tag);
}

/* mlp_fwd and mlp_bwd with a bf16 operand x against the same ops in a default bf16 context on
 * x's fp32 widening, bit for bit (as test_cuda_linear_bf16_operands): h, y; dx, dW1, dW2, db1,
 * db2, without biases, with them, and with dx aliasing dy. The backward runs from the default
 * context's h in both. Shapes as mlp_layers' on the fused path (gelu(h) only in the stages),
 * and one with too many rows for the stages whole: the separate ops, x in two chunks of rows in
 * dW1's product. */
static void test_cuda_mlp_bf16_operands(void) {
    need_gpu(UMD_MATH_BF16);
    void *dws, *ows;
    umd_ctx *dc, *oc;
    opnd_contexts(&dc, &dws, &oc, &ows);
    const int shapes[][3] = {{37, 61, 24}, {300, 256, 64}, {1025, 200, 160},
                             {1, 7, 5},    {20, 9, 33},    {33000, 512, 128}}; /* M F w */
    for (int s = 0; s < 6; s++) {
        const int M = shapes[s][0], F = shapes[s][1], w = shapes[s][2];
        const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
        const uint32_t key = 900 + 20 * (uint32_t)s;
        float *d_x, *d_W1, *d_W2, *d_dy, *d_b1, *d_b2, *dy;
        const void *d_xh;
        mlp_inputs(M, F, w, key, &d_x, &d_xh, &d_W1, &d_W2, &d_dy, &d_b1, &d_b2, &dy);
        const float *nanMF = h_nan(MF), *nanMw = h_nan(Mw);
        for (int v = 0; v < 3; v++) {
            const int bias = v > 0, alias = v == 2;
            float *y[2], *h[2], *tmp[2];
            for (int k = 0; k < 2; k++) {
                y[k] = d_f(nanMw, Mw);
                h[k] = d_f(nanMF, MF);
                tmp[k] = d_f(nanMF, MF);
            }
            GPU->mlp_fwd(dc, y[0], h[0], tmp[0], d_x, d_W1, bias ? d_b1 : NULL, d_W2,
                         bias ? d_b2 : NULL, M, F, w, UMD_F32);
            GPU->mlp_fwd(oc, y[1], h[1], tmp[1], d_xh, d_W1, bias ? d_b1 : NULL, d_W2,
                         bias ? d_b2 : NULL, M, F, w, UMD_OPND);
            ctx_ok2(dc, oc);
            same_bits_fmt(h[1], h[0], MF, "mlp_fwd h (%d x %d x %d, variant %d)", M, F, w, v);
            same_bits_fmt(y[1], y[0], Mw, "mlp_fwd y (%d x %d x %d, variant %d)", M, F, w, v);
            float *gW1 = h_randn(Fw, key + 6, 1.0f), *gW2 = h_randn(Fw, key + 7, 1.0f);
            float *gb1 = h_randn((size_t)F, key + 8, 1.0f);
            float *gb2 = h_randn((size_t)w, key + 9, 1.0f);
            mlp_grads g[2];
            for (int k = 0; k < 2; k++) {
                g[k] = mlp_grads_new(alias ? dy : nanMw, gW1, gW2, gb1, gb2, M, F, w);
                GPU->upload(gc, tmp[k], nanMF, MF * sizeof(float));
            }
            for (int k = 0; k < 2; k++)
                GPU->mlp_bwd(k ? oc : dc, g[k].dx, g[k].dW1, bias ? g[k].db1 : NULL, g[k].dW2,
                             bias ? g[k].db2 : NULL, alias ? g[k].dx : d_dy, k ? d_xh : (const void *)d_x,
                             h[0], d_W1, d_W2, tmp[k], M, F, w, k ? UMD_OPND : UMD_F32);
            ctx_ok2(dc, oc);
            char tag[64];
            snprintf(tag, sizeof tag, " (%d x %d x %d, variant %d)", M, F, w, v);
            mlp_grads_same(&g[1], &g[0], M, F, w, tag);
        }
        cleanup();
    }
    ctx_free(&dc, dws);
    ctx_free(&oc, ows);
}

/* UMDQ_CUDA_BF16_OPERANDS=1 gives bf16 operand tensors to bf16 contexts only: operand_bytes 2
 * there, 4 everywhere else, and in a TF32 context made with it UMD_OPND changes nothing
 * (layernorm_fwd, linear_fwd, linear_bwd: the default TF32 context's bits). In a bf16 context
 * with bf16 operands, a product whose weights do not fit the bf16 stage (here: no workspace)
 * cannot read a bf16 x: linear_fwd, linear_bwd, mlp_fwd and mlp_bwd fail the context, naming the
 * op and x's shape. */
static void test_cuda_bf16_operands_contexts(void) {
    need_gpu(UMD_MATH_BF16);
    void *ws;
    const int maths[] = {UMD_MATH_FP32, UMD_MATH_TF32, UMD_MATH_BF16};
    for (int i = 0; i < 3; i++) {
        umd_ctx *on = ctx_with(maths[i], 1, 0, NULL, &ws);
        umd_ctx *off = ctx_with(maths[i], 0, 0, NULL, &ws);
        T_EQ_INT(GPU->operand_bytes(on), maths[i] == UMD_MATH_BF16 ? 2 : 4);
        T_EQ_INT(GPU->operand_bytes(off), 4);
        ctx_free(&on, NULL);
        ctx_free(&off, NULL);
    }
    {
        umd_ctx *on = ctx_with(UMD_MATH_TF32, 1, 0, NULL, &ws);
        umd_ctx *off = ctx_with(UMD_MATH_TF32, 0, 0, NULL, &ws);
        const int n = 2, T = 9, w = 160, N = 24, M = n * T;
        const size_t nt = (size_t)M * w, nw = (size_t)N * w, ny = (size_t)M * N;
        float *x = h_randn(nt, 95, 1.0f), *gamma = h_randn((size_t)w, 96, 0.3f);
        float *beta = h_randn((size_t)w, 97, 0.3f), *W = h_randn(nw, 98, 0.2f);
        float *g = h_randn(ny, 99, 1.0f);
        float *d_x = d_f(x, nt), *d_gam = d_f(gamma, (size_t)w), *d_bet = d_f(beta, (size_t)w);
        float *d_W = d_f(W, nw), *d_g = d_f(g, ny);
        float *o[2], *mean[2], *rstd[2], *y[2], *dx[2], *dW[2];
        for (int k = 0; k < 2; k++) {
            umd_ctx *c = k ? on : off;
            const int type = k ? UMD_OPND : UMD_F32;
            o[k] = d_f(h_nan(nt), nt);
            mean[k] = d_f(h_nan((size_t)M), (size_t)M);
            rstd[k] = d_f(h_nan((size_t)M), (size_t)M);
            y[k] = d_f(h_nan(ny), ny);
            dx[k] = d_f(h_nan(nt), nt);
            dW[k] = d_f(W, nw);
            GPU->layernorm_fwd(c, o[k], mean[k], rstd[k], d_x, d_gam, d_bet, NULL, 0, n, T, w,
                               (long)T * w, (long)T * w, type);
            GPU->linear_fwd(c, y[k], o[k], d_W, NULL, M, N, w, type);
            GPU->linear_bwd(c, dx[k], dW[k], NULL, d_g, o[k], d_W, M, N, w, 0, type);
            ctx_ok(c);
        }
        same_bits("tf32 layernorm_fwd out, UMD_OPND", o[1], o[0], nt);
        same_bits("tf32 linear_fwd y, UMD_OPND", y[1], y[0], ny);
        same_bits("tf32 linear_bwd dx, UMD_OPND", dx[1], dx[0], nt);
        same_bits("tf32 linear_bwd dW, UMD_OPND", dW[1], dW[0], nw);
        cleanup();
        ctx_free(&on, NULL);
        ctx_free(&off, NULL);
    }
    const char *names[] = {"linear_fwd", "linear_bwd", "mlp_fwd", "mlp_bwd"};
    for (int op = 0; op < 4; op++) {
        umd_ctx *c = ctx_with(UMD_MATH_BF16, 1, 0, NULL, &ws);
        const int M = 4, N = 8, K = 8; /* the MLP: F = N, w = K */
        uint16_t *xh;
        h_bf16_values((size_t)M * K, 100, &xh);
        const void *d_xh = d_up(xh, (size_t)M * K * sizeof *xh);
        float *W = d_f(h_randn((size_t)N * K, 101, 0.2f), (size_t)N * K);
        float *W2 = d_f(h_randn((size_t)N * K, 102, 0.2f), (size_t)N * K);
        float *dy = d_f(h_randn((size_t)M * N, 103, 1.0f), (size_t)M * N);
        float *y = d_f(h_nan((size_t)M * N), (size_t)M * N);
        float *dx = d_f(h_nan((size_t)M * K), (size_t)M * K);
        float *h = d_f(h_randn((size_t)M * N, 104, 1.0f), (size_t)M * N);
        float *tmp = d_f(h_nan((size_t)M * N), (size_t)M * N);
        float *dW = d_f(h_randn((size_t)N * K, 105, 1.0f), (size_t)N * K);
        float *dW2 = d_f(h_randn((size_t)N * K, 106, 1.0f), (size_t)N * K);
        if (op == 0) GPU->linear_fwd(c, y, d_xh, W, NULL, M, N, K, UMD_OPND);
        if (op == 1) GPU->linear_bwd(c, dx, dW, NULL, dy, d_xh, W, M, N, K, 0, UMD_OPND);
        if (op == 2) GPU->mlp_fwd(c, dx, y, tmp, d_xh, W, NULL, W2, NULL, M, N, K, UMD_OPND);
        if (op == 3)
            GPU->mlp_bwd(c, dx, dW, NULL, dW2, NULL, dy, d_xh, h, W, W2, tmp, M, N, K, UMD_OPND);
        char err[512] = "";
        int rc = GPU->status(c, err, sizeof err);
        printf("  %s with a bf16 x and no bf16 stage: %s\n", names[op], err);
        T_CHECK_MSG(rc != 0, "%s read a bf16 operand on the fp32 path", names[op]);
        T_CONTAINS(err, op % 2 ? "linear_bwd" : "linear_fwd");
        T_CONTAINS(err, "bf16 operand");
        T_CONTAINS(err, "(4, 8)");
        cleanup();
        ctx_free(&c, NULL);
    }
}

/* ---- the MLP's hidden state in bf16 ------------------------------------------------------------- */

/* h's bf16 values at d (device, n) widened, uploaded as fp32: an h the default context reads. */
static float *d_widened(const void *d, size_t n) {
    const uint16_t *hb = h_down(d, n * sizeof *hb);
    float *hw = hkeep(malloc((n ? n : 1) * sizeof *hw));
    for (size_t i = 0; i < n; i++) hw[i] = fx_widen(hb[i]);
    return d_f(hw, n);
}

/* mlp_fwd and mlp_bwd keeping h in bf16 (UMD_OPND_H in a bf16 context made with
 * UMDQ_CUDA_BF16_OPERANDS=1 and UMDQ_CUDA_BF16_MLP=1) against the default bf16 context:
 *   h is the default context's fp32 h rounded to nearest even, bit for bit (same_rounded: fc1
 *     writes it with the bf16-y plan, which takes the fp32 plan's algorithm);
 *   y is, bit for bit, the default context's gelu_fwd then linear_fwd (fc2) on h's values
 *     widened (GELU of the same values, rounded into the same operand of the same product), and
 *     within bf16 tolerance of its mlp_fwd's y (relative L2 1e-2: GELU read h rounded);
 *   the backward is, bit for bit, the default context's mlp_bwd from an fp32 h holding those
 *     widened values (every pass that reads h computes the fp32 expression on the widened
 *     value: bf16(gelu(h)) for dW2, dh = g gelu'(h) with db1's column sums in the same order,
 *     and without db1 dh through tmp as gelu_bwd computes it), and within bf16 tolerance of its
 *     mlp_bwd from its own fp32 h (dx; dW1, dW2, db1, db2 by what they accumulated).
 * Variants: no biases, x fp32 (fc1 converts it; the backward's dh through tmp); biases, x a bf16
 * operand (UMD_OPND | UMD_OPND_H, as the model passes it); the same with dx aliasing dy. Shapes
 * that are not multiples of the GEMM tiles or of 4 (the column sums' 4-wide kernel), one row, and
 * a model's F = 4 w over 17 chunks of rows. Written outputs start as NaN (h as 0xffff), the
 * gradients accumulate onto the same random values in every context. */
static void test_cuda_mlp_bf16_hidden(void) {
    need_gpu(UMD_MATH_BF16);
    void *dws, *hws;
    umd_ctx *dc = ctx_with(UMD_MATH_BF16, 0, 0, &OPND_LIM, &dws);
    umd_ctx *hc = ctx_with_mlp(UMD_MATH_BF16, 1, &OPND_LIM, &hws);
    T_EQ_INT(GPU->hidden_operand(hc), 1);
    T_EQ_INT(GPU->hidden_operand(dc), 0);
    const int shapes[][3] = {{37, 61, 24}, {300, 256, 64}, {1025, 200, 160},
                             {1, 7, 5},    {20, 9, 33},    {4100, 512, 128}}; /* M F w */
    for (int s = 0; s < 6; s++) {
        const int M = shapes[s][0], F = shapes[s][1], w = shapes[s][2];
        const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
        const uint32_t key = 1300 + 20 * (uint32_t)s;
        float *d_x, *d_W1, *d_W2, *d_dy, *d_b1, *d_b2, *dy;
        const void *d_xh;
        mlp_inputs(M, F, w, key, &d_x, &d_xh, &d_W1, &d_W2, &d_dy, &d_b1, &d_b2, &dy);
        const float *nanMF = h_nan(MF), *nanMw = h_nan(Mw);
        const uint16_t *nan16 = h_nan16(MF);
        for (int v = 0; v < 3; v++) {
            const int bias = v > 0, alias = v == 2;
            const float *B1 = bias ? d_b1 : NULL, *B2 = bias ? d_b2 : NULL;
            const void *hx = v ? d_xh : (const void *)d_x; /* x as the bf16-h context reads it */
            const int types = (v ? UMD_OPND : UMD_F32) | UMD_OPND_H;
            float *y0 = d_f(nanMw, Mw), *h0 = d_f(nanMF, MF), *t0 = d_f(nanMF, MF);
            float *y1 = d_f(nanMw, Mw), *t1 = d_f(nanMF, MF);
            void *h1 = d_up(nan16, MF * sizeof *nan16);
            GPU->mlp_fwd(dc, y0, h0, t0, d_x, d_W1, B1, d_W2, B2, M, F, w, UMD_F32);
            GPU->mlp_fwd(hc, y1, h1, t1, hx, d_W1, B1, d_W2, B2, M, F, w, types);
            ctx_ok2(dc, hc);
            char what[160];
            snprintf(what, sizeof what, "mlp_fwd bf16 h (%d x %d x %d, variant %d)", M, F, w, v);
            same_rounded(what, h1, h0, MF);
            snprintf(what, sizeof what, "mlp_fwd y, bf16 h (%d x %d x %d, variant %d)", M, F, w, v);
            near_l2(what, y1, y0, NULL, Mw, 1e-2);
            /* the default context's ops on h's values widened */
            float *d_hw = d_widened(h1, MF);
            float *g2 = d_f(nanMF, MF), *y2 = d_f(nanMw, Mw);
            GPU->gelu_fwd(dc, g2, d_hw, MF);
            GPU->linear_fwd(dc, y2, g2, d_W2, B2, M, w, F, UMD_F32);
            ctx_ok(dc);
            same_bits_fmt(y1, y2, Mw, "mlp_fwd y, bf16 h, against gelu_fwd + linear_fwd on it "
                          "(%d x %d x %d, variant %d)", M, F, w, v);
            /* backward: 0 the default context from its h, 1 from the widened bf16 h, 2 the
             * bf16-h context */
            float *gW1 = h_randn(Fw, key + 6, 1.0f), *gW2 = h_randn(Fw, key + 7, 1.0f);
            float *gb1 = h_randn((size_t)F, key + 8, 1.0f);
            float *gb2 = h_randn((size_t)w, key + 9, 1.0f);
            mlp_grads g[3];
            float *tmp[3];
            for (int k = 0; k < 3; k++) {
                g[k] = mlp_grads_new(alias ? dy : nanMw, gW1, gW2, gb1, gb2, M, F, w);
                tmp[k] = d_f(nanMF, MF);
            }
            for (int k = 0; k < 3; k++) {
                umd_ctx *c = k < 2 ? dc : hc;
                const void *hk = k == 0 ? (const void *)h0 : k == 1 ? (const void *)d_hw : h1;
                GPU->mlp_bwd(c, g[k].dx, g[k].dW1, bias ? g[k].db1 : NULL, g[k].dW2,
                             bias ? g[k].db2 : NULL, alias ? g[k].dx : d_dy,
                             k < 2 ? (const void *)d_x : hx, hk, d_W1, d_W2, tmp[k], M, F, w,
                             k < 2 ? UMD_F32 : types);
            }
            ctx_ok2(dc, hc);
            char tag[64];
            snprintf(tag, sizeof tag, ", bf16 h (%d x %d x %d, variant %d)", M, F, w, v);
            mlp_grads_same(&g[2], &g[1], M, F, w, tag);
            snprintf(what, sizeof what, "mlp_bwd dx, bf16 h against fp32 h (%d x %d x %d, variant %d)",
                     M, F, w, v);
            near_l2(what, g[2].dx, g[0].dx, NULL, Mw, 1e-2);
            snprintf(what, sizeof what, "mlp_bwd dW1, bf16 h against fp32 h (%d x %d x %d, variant %d)",
                     M, F, w, v);
            near_l2(what, g[2].dW1, g[0].dW1, gW1, Fw, 1e-2);
            snprintf(what, sizeof what, "mlp_bwd dW2, bf16 h against fp32 h (%d x %d x %d, variant %d)",
                     M, F, w, v);
            near_l2(what, g[2].dW2, g[0].dW2, gW2, Fw, 1e-2);
            if (bias) {
                snprintf(what, sizeof what, "mlp_bwd db1, bf16 h against fp32 h (%d x %d x %d, "
                         "variant %d)", M, F, w, v);
                near_l2(what, g[2].db1, g[0].db1, gb1, (size_t)F, 1e-2);
                snprintf(what, sizeof what, "mlp_bwd db2, bf16 h against fp32 h (%d x %d x %d, "
                         "variant %d)", M, F, w, v);
                near_l2(what, g[2].db2, g[0].db2, gb2, (size_t)w, 1e-2);
            }
        }
        cleanup();
    }
    ctx_free(&dc, dws);
    ctx_free(&hc, hws);
}

/* ---- the profile's floors ---------------------------------------------------------------------- */

/* v as the report prints it with `digits` decimals ("%.*f"), read back: the value a figure parsed
 * from the report has when it is right (a tolerance of half a last digit about the exact value
 * passes or fails by where the rounding falls: 1.342 GFLOP prints as 1.3). */
static double as_printed(double v, int digits) {
    char s[64];
    snprintf(s, sizeof s, "%.*f", digits, v);
    return strtod(s, NULL);
}

/* The profile report's floors (umd_cuda_profile_floors): 10 linear_fwd calls of (1024, 256) x
 * (256, 256)^T with a bias count 10 x 2 M N K FLOPs and, in bytes, x (at its stored width), W and
 * b in fp32 and y in fp32, once each; at 100 TFLOP/s and 1 TB/s the bytes are the floor. With x a
 * bf16 operand its bytes halve. Each figure as the report rounds it (GFLOP to 0.1, GB and ms to
 * 0.001: as_printed). Rates that are not positive are refused. */
static void test_cuda_profile_floors(void) {
    need_gpu(UMD_MATH_BF16);
    const int M = 1024, N = 256, K = 256;
    float *x = d_f(h_randn((size_t)M * K, 31, 1.0f), (size_t)M * K);
    float *W = d_f(h_randn((size_t)N * K, 32, 0.1f), (size_t)N * K);
    float *b = d_f(h_randn((size_t)N, 33, 0.1f), (size_t)N);
    float *y = d_f(h_randn((size_t)M * N, 34, 1.0f), (size_t)M * N);
    for (int bf = 0; bf < 2; bf++) {
        void *ws;
        umd_ctx *c = ctx_with(UMD_MATH_BF16, bf, 0, &LIM, &ws);
        T_EQ_INT(umd_cuda_profile_floors(c, 0.0, 1.0), -1);
        T_EQ_INT(umd_cuda_profile_floors(c, 100.0, 1.0), 0);
        /* x, or zeros as the bf16 operand (the values do not matter here) */
        void *xo = bf ? d_up(hkeep(calloc((size_t)M * K, 2)), (size_t)M * K * 2) : (void *)x;
        T_EQ_INT(umd_cuda_profile(c, 1), 0);
        for (int k = 0; k < 10; k++) GPU->linear_fwd(c, y, xo, W, b, M, N, K, bf ? UMD_OPND : UMD_F32);
        ctx_ok(c);
        char rep[16384];
        umd_cuda_profile_report(c, 1, rep, sizeof rep);
        umd_cuda_profile(c, 0);
        const char *at = strstr(rep, " linear_fwd ");
        double ms, pct, gflop, gb, floor_ms;
        long calls;
        char what[16] = "";
        T_REQUIRE(at || (printf("  no linear_fwd in: %s\n", rep), 0));
        T_REQUIRE(sscanf(at, " linear_fwd %lf (%lf%%, %ld calls; %lf GFLOP, %lf GB: floor %lf ms (%15[a-zA-Z])",
                         &ms, &pct, &calls, &gflop, &gb, &floor_ms, what) == 7 ||
                  (printf("  report: %s\n", at), 0));
        const double want_gb = 10.0 * ((double)M * K * (bf ? 2 : 4) + (double)N * K * 4 + N * 4.0 +
                                      (double)M * N * 4) / 1e9;
        printf("  x %s: %s\n", bf ? "bf16" : "fp32", at);
        T_EQ_INT((int)calls, 10);
        T_NEAR(gflop, as_printed(10.0 * 2 * M * N * K / 1e9, 1), 1e-9, 0);
        T_NEAR(gb, as_printed(want_gb, 3), 1e-9, 0);
        T_EQ_STR(what, "bytes");
        T_NEAR(floor_ms, as_printed(want_gb / 1.0, 3), 1e-9, 0); /* GB at 1 TB/s: ms */
        T_CHECK(strstr(rep, "the ops with a floor (at 100 TFLOP/s, 1.00 TB/s)") != NULL);
        /* the GEMM inside them: a span of its own (" op:what MS (N calls);"), named by its
         * shape, 10 calls, its time within the op's */
        const char *in = strstr(rep, " inside the ops (ms per step):");
        const char *part = in ? strstr(in, " linear_fwd:") : NULL;
        T_REQUIRE(part || (printf("  no linear_fwd part in: %s\n", rep), 0));
        const char *open = strchr(part, '('), *num = open ? open - 1 : part;
        while (num > part && num[-1] != ' ') num--;
        double part_ms = -1;
        long part_calls = 0;
        T_REQUIRE(open && sscanf(num, "%lf (%ld calls)", &part_ms, &part_calls) == 2);
        printf("  %.*s\n", (int)(strchr(part, ';') ? strchr(part, ';') - part : 80), part);
        T_CHECK_MSG(strstr(part, " 1024x256x256") != NULL && strstr(part, " 1024x256x256") < open,
                    "part: %.80s", part);
        T_EQ_INT((int)part_calls, 10);
        T_CHECK(part_ms > 0 && part_ms <= ms + 0.01); /* both rounded to 0.01 ms */
        ctx_free(&c, ws);
    }
    cleanup();
}

/* ---- the MLP's GELU in cuBLASLt's epilogues ------------------------------------------------------ */

/* The GELU-epilogue counts of a context (its profile report's line): GEMMs queued with a GELU
 * epilogue, and MLP passes that found no such plan. */
static void gelu_counts(umd_ctx *c, long *gemms, long *refused) {
    char buf[4096];
    umd_cuda_profile_report(c, 1, buf, sizeof buf);
    const char *at = strstr(buf, "GELU in cuBLASLt's epilogues: ");
    T_REQUIRE(at || (printf("  no GELU epilogue line in: %s\n", buf), 0));
    T_REQUIRE(sscanf(at, "GELU in cuBLASLt's epilogues: %ld GEMMs, %ld passes", gemms, refused) == 2);
}

/* mlp_fwd and mlp_bwd with GELU in cuBLASLt's epilogues (a context made with
 * UMDQ_CUDA_BF16_OPERANDS=1, UMDQ_CUDA_BF16_MLP=1 and UMDQ_CUDA_GELU_EPILOGUE=1) against the
 * bf16-h context without the epilogues (the staging passes), on the same inputs:
 *   h within bf16 rounding of the staging context's (relative L2 1e-2: both the fp32 sum of fc1
 *     rounded once, by possibly different algorithms), y within 1e-2 (the epilogue's GELU reads
 *     the fp32 sum, the staging's h rounded);
 *   linear_fwd with UMD_OPND | UMD_OPND_Y | UMD_OPND_H (train.recompute's refill of h) gives
 *     the forward's h bit for bit (it takes the same plan);
 *   the backward from the epilogue context's h within bf16 tolerance of the staging context's
 *     from the same h (dx; dW1, dW2, db1, db2 by what they accumulated), and the same bits when
 *     run again (deterministic);
 *   where F is not a multiple of 8 (the auxiliary matrix's leading dimension) or there is no b1
 *     (fc1's epilogue adds it), the MLP takes the staging passes: it counts a pass without a
 *     plan, queues no epilogue GEMM there, and gives the staging context's bits.
 * Where cuBLASLt has no plan for a shape whose F and biases allow one, the test says so (the
 * results are then the staging passes', checked as above); the epilogue GEMMs queued are
 * printed per shape. The first shape (M 300, F 256, w 64, the model's proportions) must take
 * the epilogues with biases, forward and backward: a device that offers none fails here, so the
 * switch is never taken for working where it does nothing. */
static void test_cuda_mlp_gelu_epilogue(void) {
    need_gpu(UMD_MATH_BF16);
    void *hws, *ews;
    umd_ctx *hc = ctx_with_mlp(UMD_MATH_BF16, 1, &OPND_LIM, &hws);
    setenv("UMDQ_CUDA_GELU_EPILOGUE", "1", 1);
    umd_ctx *ec = ctx_with_mlp(UMD_MATH_BF16, 1, &OPND_LIM, &ews);
    T_EQ_INT(GPU->hidden_operand(ec), 1);
    const int shapes[][3] = {{300, 256, 64}, {1025, 200, 160}, {4100, 512, 128},
                             {37, 61, 24},   {20, 9, 32},      {1, 8, 8}}; /* M F w */
    long used_total = 0;
    for (int s = 0; s < 6; s++) {
        const int M = shapes[s][0], F = shapes[s][1], w = shapes[s][2];
        const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
        const uint32_t key = 1500 + 20 * (uint32_t)s;
        float *d_x, *d_W1, *d_W2, *d_dy, *d_b1, *d_b2, *dy;
        const void *d_xh;
        mlp_inputs(M, F, w, key, &d_x, &d_xh, &d_W1, &d_W2, &d_dy, &d_b1, &d_b2, &dy);
        const float *nanMF = h_nan(MF), *nanMw = h_nan(Mw);
        const uint16_t *nan16 = h_nan16(MF);
        const int types = UMD_OPND | UMD_OPND_H;
        for (int bias = 1; bias >= 0; bias--) {
            const float *B1 = bias ? d_b1 : NULL, *B2 = bias ? d_b2 : NULL;
            char tag[96];
            snprintf(tag, sizeof tag, " (%d x %d x %d, %s)", M, F, w, bias ? "biases" : "no biases");
            long g0, r0, g1, r1;
            gelu_counts(ec, &g0, &r0);
            float *y0 = d_f(nanMw, Mw), *t0 = d_f(nanMF, MF), *y1 = d_f(nanMw, Mw);
            float *t1 = d_f(nanMF, MF);
            void *h0 = d_up(nan16, MF * sizeof *nan16), *h1 = d_up(nan16, MF * sizeof *nan16);
            void *h2 = d_up(nan16, MF * sizeof *nan16);
            GPU->mlp_fwd(hc, y0, h0, t0, d_xh, d_W1, B1, d_W2, B2, M, F, w, types);
            GPU->mlp_fwd(ec, y1, h1, t1, d_xh, d_W1, B1, d_W2, B2, M, F, w, types);
            GPU->linear_fwd(ec, h2, d_xh, d_W1, B1, M, F, w, UMD_OPND | UMD_OPND_Y | UMD_OPND_H);
            ctx_ok2(hc, ec);
            gelu_counts(ec, &g1, &r1);
            const int may = F % 8 == 0 && bias; /* fc1's epilogue may apply */
            const long fwd_gemms = g1 - g0;
            printf("  mlp_fwd%s: %ld GEMMs with a GELU epilogue (fc1 and its refill), %ld passes "
                   "without a plan\n", tag, fwd_gemms, r1 - r0);
            if (!may) {
                T_CHECK_MSG(fwd_gemms == 0 && r1 - r0 == 2,
                            "mlp_fwd%s: %ld epilogue GEMMs and %ld passes without a plan, want 0 "
                            "and 2 (no plan here)", tag, fwd_gemms, r1 - r0);
            } else {
                T_CHECK_MSG((fwd_gemms == 2 && r1 == r0) || (fwd_gemms == 0 && r1 - r0 == 2),
                            "mlp_fwd%s: %ld epilogue GEMMs, %ld passes without a plan: fc1 and its "
                            "refill took different paths", tag, fwd_gemms, r1 - r0);
                if (fwd_gemms == 0)
                    printf("  mlp_fwd%s: cuBLASLt has no GELU_AUX_BIAS plan here: the staging "
                           "passes ran\n", tag);
                if (s == 0)
                    T_CHECK_MSG(fwd_gemms == 2, "mlp_fwd%s: cuBLASLt took no GELU_AUX_BIAS plan "
                                "(neither an fp32 nor a bf16 bias)", tag);
            }
            used_total += fwd_gemms;
            float *w0 = d_widened(h0, MF), *w1 = d_widened(h1, MF), *w2 = d_widened(h2, MF);
            char what[160];
            snprintf(what, sizeof what, "mlp_fwd h, GELU epilogue against staging%s", tag);
            near_l2(what, w1, w0, NULL, MF, 1e-2);
            snprintf(what, sizeof what, "mlp_fwd y, GELU epilogue against staging%s", tag);
            near_l2(what, y1, y0, NULL, Mw, 1e-2);
            same_bits_fmt(w2, w1, MF, "linear_fwd's refill of h against mlp_fwd's%s", tag);
            if (!fwd_gemms) {
                same_bits_fmt(w1, w0, MF, "mlp_fwd h without an epilogue plan%s", tag);
                same_bits_fmt(y1, y0, Mw, "mlp_fwd y without an epilogue plan%s", tag);
            }
            /* backward from the epilogue context's h: 0 staging, 1 and 2 the epilogue context */
            float *gW1 = h_randn(Fw, key + 6, 1.0f), *gW2 = h_randn(Fw, key + 7, 1.0f);
            float *gb1 = h_randn((size_t)F, key + 8, 1.0f);
            float *gb2 = h_randn((size_t)w, key + 9, 1.0f);
            mlp_grads g[3];
            gelu_counts(ec, &g0, &r0);
            for (int k = 0; k < 3; k++) {
                g[k] = mlp_grads_new(nanMw, gW1, gW2, gb1, gb2, M, F, w);
                float *tmp = d_f(nanMF, MF);
                GPU->mlp_bwd(k ? ec : hc, g[k].dx, g[k].dW1, bias ? g[k].db1 : NULL, g[k].dW2,
                             bias ? g[k].db2 : NULL, d_dy, d_xh, h1, d_W1, d_W2, tmp, M, F, w,
                             types);
            }
            ctx_ok2(hc, ec);
            gelu_counts(ec, &g1, &r1);
            printf("  mlp_bwd%s: %ld GEMMs with a DGELU epilogue, %ld passes without a plan\n",
                   tag, g1 - g0, r1 - r0);
            if (F % 8 != 0)
                T_CHECK_MSG(g1 == g0 && r1 - r0 == 2,
                            "mlp_bwd%s: %ld DGELU GEMMs and %ld passes without a plan, want 0 and 2",
                            tag, g1 - g0, r1 - r0);
            else
                T_CHECK_MSG((g1 - g0 == 2 && r1 == r0) || (g1 == g0 && r1 - r0 == 2),
                            "mlp_bwd%s: %ld DGELU GEMMs, %ld passes without a plan over two runs",
                            tag, g1 - g0, r1 - r0);
            if (F % 8 == 0 && g1 == g0)
                printf("  mlp_bwd%s: cuBLASLt has no %s plan here: the staging passes ran\n", tag,
                       bias ? "DGELU_BGRAD" : "DGELU");
            if (s == 0)
                T_CHECK_MSG(g1 - g0 == 2, "mlp_bwd%s: cuBLASLt took no %s plan", tag,
                            bias ? "DGELU_BGRAD (neither an fp32 nor a bf16 bias gradient)"
                                 : "DGELU");
            used_total += g1 - g0;
            mlp_grads_same(&g[2], &g[1], M, F, w, tag);
            if (g1 == g0) mlp_grads_same(&g[1], &g[0], M, F, w, tag);
            snprintf(what, sizeof what, "GELU epilogue against staging%s", tag);
            mlp_grads_near(&g[1], &g[0], gW1, gW2, bias ? gb1 : NULL, bias ? gb2 : NULL, M, F, w,
                           what);
        }
        cleanup();
    }
    printf("  %ld GEMMs with a GELU epilogue over the shapes%s\n", used_total,
           used_total ? "" : ": cuBLASLt took none here, so only the staging passes were checked");
    ctx_free(&hc, hws);
    ctx_free(&ec, ews);
}

/* mlp_scratch and an MLP without scratch, in a context made with UMDQ_CUDA_BF16_OPERANDS=1,
 * UMDQ_CUDA_BF16_MLP=1, UMDQ_CUDA_GELU_EPILOGUE=1 and UMDQ_CUDA_BF16_BRANCH=1:
 *   asked after workspace_bytes and before set_workspace (as the model asks), mlp_scratch is 0 for
 *   the model-shaped MLP (300 tokens, 64 -> 256, h bf16), and 0 again after; M F without
 *   UMD_OPND_H, where F is not a multiple of 8 (no plan), for rows beyond the stages whole, and
 *   in a context without the epilogues;
 *   mlp_fwd and mlp_bwd given tmp NULL there give the bits they give with a (poisoned) tmp, y
 *   fp32 and bf16 (UMD_OPND_Y), through the epilogue GEMMs; and where fc2 writes its bf16 y
 *   through fp32 room (UMDQ_CUDA_LT_BF16_Y=0), bf_a's without tmp and tmp's with it give the
 *   same bits, the fp32 y's rounded;
 *   mlp_bwd given tmp NULL where it needs it (F not a multiple of 8) fails the context, naming
 *   the op and the scratch, before it writes anything (dx, dW2). */
static void test_cuda_mlp_scratch(void) {
    need_gpu(UMD_MATH_BF16);
    char err[512];
    static const char *const vars[] = {"UMDQ_CUDA_BF16_OPERANDS", "UMDQ_CUDA_BF16_MLP",
                                       "UMDQ_CUDA_GELU_EPILOGUE", "UMDQ_CUDA_BF16_BRANCH"};
    for (int i = 0; i < 4; i++) setenv(vars[i], "1", 1);
    umd_ctx *ec = NULL, *vc = NULL;
    int rc = GPU->ctx_new(&ec, 1, err, sizeof err);
    /* the same, where fc2's bf16 y goes through fp32 room: tmp when given, else bf_a */
    setenv("UMDQ_CUDA_LT_BF16_Y", "0", 1);
    if (rc == 0) rc = GPU->ctx_new(&vc, 1, err, sizeof err);
    unsetenv("UMDQ_CUDA_LT_BF16_Y");
    for (int i = 0; i < 4; i++) setenv(vars[i], "0", 1);
    T_REQUIRE(rc == 0 || (printf("  ctx_new: %s\n", err), 0));
    const size_t vbytes = GPU->workspace_bytes(vc, &OPND_LIM);
    T_CHECK(GPU->mlp_scratch(vc, 300, 256, 64, UMD_OPND | UMD_OPND_H | UMD_OPND_Y) == 0);
    void *vws = GPU->alloc(vc, vbytes);
    T_REQUIRE(vws);
    GPU->set_workspace(vc, vws, vbytes);
    const size_t bytes = GPU->workspace_bytes(ec, &OPND_LIM);
    const int types = UMD_OPND | UMD_OPND_H;
    const size_t before = GPU->mlp_scratch(ec, 300, 256, 64, types);
    void *ews = GPU->alloc(ec, bytes);
    T_REQUIRE(ews);
    GPU->set_workspace(ec, ews, bytes);
    T_CHECK_MSG(before == 0, "mlp_scratch before set_workspace: %zu floats, want 0 (no GELU "
                "epilogue plans for 300 x 256 x 64?)", before);
    T_CHECK(GPU->mlp_scratch(ec, 300, 256, 64, types) == 0);
    T_CHECK(GPU->mlp_scratch(ec, 300, 256, 64, types | UMD_OPND_Y) == 0);
    T_CHECK(GPU->mlp_scratch(ec, 300, 256, 64, UMD_OPND) == (size_t)300 * 256);
    T_CHECK(GPU->mlp_scratch(ec, 37, 61, 24, types) == (size_t)37 * 61);
    T_CHECK(GPU->mlp_scratch(ec, 40000, 512, 128, types) == (size_t)40000 * 512);
    void *hws;
    umd_ctx *hc = ctx_with_mlp(UMD_MATH_BF16, 1, &OPND_LIM, &hws);
    T_CHECK(GPU->mlp_scratch(hc, 300, 256, 64, types) == (size_t)300 * 256);
    ctx_free(&hc, hws);

    const int M = 300, F = 256, w = 64;
    const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
    float *d_x, *d_W1, *d_W2, *d_dy, *d_b1, *d_b2, *dy;
    const void *d_xh;
    mlp_inputs(M, F, w, 2700, &d_x, &d_xh, &d_W1, &d_W2, &d_dy, &d_b1, &d_b2, &dy);
    const float *nanMF = h_nan(MF), *nanMw = h_nan(Mw);
    const uint16_t *nan16 = h_nan16(MF > Mw ? MF : Mw);
    long g0, r0, g1, r1;
    gelu_counts(ec, &g0, &r0);
    for (int yb = 0; yb < 2; yb++) {
        const int t = types | (yb ? UMD_OPND_Y : 0);
        void *y[2], *h[2];
        for (int k = 0; k < 2; k++) {
            y[k] = yb ? d_up(nan16, Mw * sizeof *nan16) : (void *)d_f(nanMw, Mw);
            h[k] = d_up(nan16, MF * sizeof *nan16);
            GPU->mlp_fwd(ec, y[k], h[k], k ? d_f(nanMF, MF) : NULL, d_xh, d_W1, d_b1, d_W2, d_b2,
                         M, F, w, t);
        }
        ctx_ok(ec);
        same_bits_fmt(d_widened(h[0], MF), d_widened(h[1], MF), MF,
                      "mlp_fwd h without scratch (y %s)", yb ? "bf16" : "fp32");
        if (yb)
            same_bits_fmt(d_widened(y[0], Mw), d_widened(y[1], Mw), Mw,
                          "mlp_fwd bf16 y without scratch");
        else
            same_bits_fmt((const float *)y[0], (const float *)y[1], Mw,
                          "mlp_fwd y without scratch");
        float *gW1 = h_randn(Fw, 2710, 1.0f), *gW2 = h_randn(Fw, 2711, 1.0f);
        float *gb1 = h_randn((size_t)F, 2712, 1.0f), *gb2 = h_randn((size_t)w, 2713, 1.0f);
        mlp_grads g[2];
        for (int k = 0; k < 2; k++) {
            g[k] = mlp_grads_new(nanMw, gW1, gW2, gb1, gb2, M, F, w);
            GPU->mlp_bwd(ec, g[k].dx, g[k].dW1, g[k].db1, g[k].dW2, g[k].db2, d_dy, d_xh, h[0],
                         d_W1, d_W2, k ? d_f(nanMF, MF) : NULL, M, F, w, t);
        }
        ctx_ok(ec);
        mlp_grads_same(&g[0], &g[1], M, F, w, yb ? " without scratch (y bf16)" : " without scratch");
    }
    gelu_counts(ec, &g1, &r1);
    T_CHECK_MSG(g1 - g0 == 8 && r1 == r0, "%ld GELU epilogue GEMMs and %ld passes without a plan, "
                "want 8 and 0", g1 - g0, r1 - r0);
    /* a bf16 y through bf_a (no tmp) and through tmp: the same bits, and the fp32 y's rounded */
    {
        void *y16[2] = {d_up(nan16, Mw * sizeof *nan16), d_up(nan16, Mw * sizeof *nan16)};
        float *y32 = d_f(nanMw, Mw);
        void *hv = d_up(nan16, MF * sizeof *nan16);
        for (int k = 0; k < 2; k++)
            GPU->mlp_fwd(vc, y16[k], hv, k ? d_f(nanMF, MF) : NULL, d_xh, d_W1, d_b1, d_W2, d_b2,
                         M, F, w, types | UMD_OPND_Y);
        GPU->mlp_fwd(vc, y32, hv, NULL, d_xh, d_W1, d_b1, d_W2, d_b2, M, F, w, types);
        ctx_ok(vc);
        same_bits_fmt(d_widened(y16[0], Mw), d_widened(y16[1], Mw), Mw,
                      "mlp_fwd bf16 y through bf_a (no scratch) and through tmp");
        same_rounded("mlp_fwd bf16 y through bf_a against the fp32 y", y16[0], y32, Mw);
        char rep[4096];
        umd_cuda_profile_report(vc, 1, rep, sizeof rep);
        T_CHECK_MSG(strstr(rep, "through the fp32 scratch") != NULL,
                    "no bf16 y went through the fp32 scratch: %s", rep);
    }
    cleanup();
    ctx_free(&vc, vws);

    /* F = 61: no plan, so the backward's staging passes need tmp */
    const int M2 = 37, F2 = 61, w2 = 24;
    mlp_inputs(M2, F2, w2, 2750, &d_x, &d_xh, &d_W1, &d_W2, &d_dy, &d_b1, &d_b2, &dy);
    const size_t MF2 = (size_t)M2 * F2, Mw2 = (size_t)M2 * w2, Fw2 = (size_t)F2 * w2;
    void *h2 = d_up(h_nan16(MF2), MF2 * sizeof(uint16_t));
    float *y2 = d_f(h_nan(Mw2), Mw2);
    GPU->mlp_fwd(ec, y2, h2, NULL, d_xh, d_W1, d_b1, d_W2, d_b2, M2, F2, w2, types);
    ctx_ok(ec); /* the forward's staging passes run in the bf16 stages */
    float *dx = d_f(h_nan(Mw2), Mw2);
    float *dW1 = d_f(h_randn(Fw2, 2760, 1.0f), Fw2), *dW2 = d_f(h_randn(Fw2, 2761, 1.0f), Fw2);
    float *db1 = d_f(h_randn((size_t)F2, 2762, 1.0f), (size_t)F2);
    float *db2 = d_f(h_randn((size_t)w2, 2763, 1.0f), (size_t)w2);
    GPU->mlp_bwd(ec, dx, dW1, db1, dW2, db2, d_dy, d_xh, h2, d_W1, d_W2, NULL, M2, F2, w2, types);
    rc = GPU->status(ec, err, sizeof err);
    printf("  mlp_bwd without scratch where it needs it: %s\n", err);
    T_CHECK(rc != 0);
    T_CONTAINS(err, "mlp_bwd");
    T_CONTAINS(err, "scratch tmp (37, 61)");
    float *hx = malloc(Mw2 * sizeof *hx), *hw = malloc(Fw2 * sizeof *hw);
    GPU->download(gc, hx, dx, Mw2 * sizeof *hx);
    size_t written = 0;
    for (size_t i = 0; i < Mw2; i++) written += !isnan(hx[i]);
    T_CHECK_MSG(written == 0, "mlp_bwd wrote %zu of dx after failing", written);
    GPU->download(gc, hw, dW2, Fw2 * sizeof *hw);
    T_CHECK_MSG(memcmp(hw, h_randn(Fw2, 2761, 1.0f), Fw2 * sizeof *hw) == 0,
                "mlp_bwd changed dW2 before failing");
    free(hx);
    free(hw);
    cleanup();
    ctx_free(&ec, ews);
}

/* The n bf16 values at d (device) within `steps` bf16 steps of the fp32 values at ref (device)
 * rounded (fx_bf16), every one of ref finite: a product summed in another order than ref's. */
static void within_steps(const char *what, const void *d, const float *ref, size_t n, int steps) {
    gpu_ok();
    uint16_t *g = malloc((n ? n : 1) * sizeof *g);
    float *r = malloc((n ? n : 1) * sizeof *r);
    T_REQUIRE(g && r);
    GPU->download(gc, g, d, n * sizeof *g);
    GPU->download(gc, r, ref, n * sizeof *r);
    size_t far = 0, step = 0, first = 0, nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(r[i])) {
            nonfinite++;
            continue;
        }
        const uint16_t e = fx_bf16(r[i]);
        if (g[i] == e) continue;
        /* bf16 values of one sign are ordered as their bits */
        const int apart = abs((int)g[i] - (int)e);
        if ((g[i] ^ e) < 0x8000u && apart <= steps) step++;
        else if (!far++) first = i;
    }
    printf("  %s: %zu of %zu within %d bf16 steps of the reference rounded, not on it\n", what,
           step, n, steps);
    if (far)
        printf("  %s: %zu further off, first [%zu] %.9g vs %.9g\n", what, far, first,
               fx_widen(g[first]), r[first]);
    free(g);
    free(r);
    T_CHECK_MSG(nonfinite == 0, "%s: %zu reference values not written or not finite", what,
                nonfinite);
    T_CHECK_MSG(far == 0, "%s: %zu values more than %d bf16 steps off", what, far, steps);
}

/* linear_fwd of a bf16 y in a bf16 operand context made with UMDQ_CUDA_BF16_BIAS=1 (the bias
 * rounded to bf16, as bf16 autocast casts it: cuBLASLt's bf16 D with a bias of D's type) against
 * the default context's fp32 y from the bias rounded on the host, rounded: within one bf16 step
 * everywhere (the GEMM may run another algorithm) where N and K are multiples of 8, as every
 * Linear of the model at its sizes; elsewhere within 1e-2 relative L2 (on an H200 cuBLASLt's
 * kernel for such a shape was a few steps off: it sums or adds the bias otherwise); the same bits
 * on a second run, x fp32 and bf16; without a bias, the bits of the context without the switch. No bf16 y goes through the
 * fp32 scratch (the profile line), which is what the switch is for. linear_bf16_y_cases' shapes. */
static void test_cuda_linear_bf16_bias(void) {
    need_gpu(UMD_MATH_BF16);
    void *dws, *ows, *bws;
    umd_ctx *dc = ctx_with(UMD_MATH_BF16, 0, 0, &OPND_LIM, &dws);
    umd_ctx *oc = ctx_with(UMD_MATH_BF16, 1, 0, &OPND_LIM, &ows);
    umd_ctx *bc = ctx_with_switch("UMDQ_CUDA_BF16_BIAS", UMD_MATH_BF16, 1, &OPND_LIM, &bws);
    for (int s = 0; s < 7; s++) {
        const lin16_case c = lin16_new(LIN16_Y_SHAPES, s, 2800 + 10 * (uint32_t)s);
        const int M = c.M, N = c.N, K = c.K;
        const size_t MN = c.MN;
        const float *d_x = c.d_x, *d_W = c.d_W, *d_b = c.d_b;
        const void *d_xh = c.d_xh;
        float *br = h_randn((size_t)N, 0, 1.0f);
        for (int j = 0; j < N; j++) br[j] = fx_widen(fx_bf16(c.b[j]));
        float *d_br = d_f(br, (size_t)N);
        const float *nan32 = h_nan(MN);
        const uint16_t *nan16 = h_nan16(MN);
        float *y0 = d_f(nan32, MN);
        void *y[3];
        for (int k = 0; k < 3; k++) y[k] = d_up(nan16, MN * sizeof *nan16);
        GPU->linear_fwd(dc, y0, d_x, d_W, d_br, M, N, K, UMD_F32);
        GPU->linear_fwd(bc, y[0], d_xh, d_W, d_b, M, N, K, UMD_OPND | UMD_OPND_Y);
        GPU->linear_fwd(bc, y[1], d_xh, d_W, d_b, M, N, K, UMD_OPND | UMD_OPND_Y);
        GPU->linear_fwd(bc, y[2], d_x, d_W, d_b, M, N, K, UMD_OPND_Y);
        ctx_ok2(dc, bc);
        char what[160];
        snprintf(what, sizeof what, "linear_fwd bf16 y, bf16 bias (%d x %d x %d)", M, N, K);
        if (N % 8 == 0 && K % 8 == 0) within_steps(what, y[0], y0, MN, 1);
        else near_l2(what, d_widened(y[0], MN), y0, NULL, MN, 1e-2);
        same_bits_fmt(d_widened(y[1], MN), d_widened(y[0], MN), MN,
                      "linear_fwd bf16 y, bf16 bias, run again (%d x %d x %d)", M, N, K);
        same_bits_fmt(d_widened(y[2], MN), d_widened(y[0], MN), MN,
                      "linear_fwd bf16 y, bf16 bias, fp32 x (%d x %d x %d)", M, N, K);
        /* no bias: the switch changes nothing */
        void *n0 = d_up(nan16, MN * sizeof *nan16), *n1 = d_up(nan16, MN * sizeof *nan16);
        GPU->linear_fwd(oc, n0, d_xh, d_W, NULL, M, N, K, UMD_OPND | UMD_OPND_Y);
        GPU->linear_fwd(bc, n1, d_xh, d_W, NULL, M, N, K, UMD_OPND | UMD_OPND_Y);
        ctx_ok2(oc, bc);
        same_bits_fmt(d_widened(n1, MN), d_widened(n0, MN), MN,
                      "linear_fwd bf16 y without a bias, with and without the switch (%d x %d x %d)",
                      M, N, K);
        cleanup();
    }
    char rep[4096];
    umd_cuda_profile_report(bc, 1, rep, sizeof rep);
    T_CHECK_MSG(strstr(rep, "through the fp32 scratch") == NULL,
                "with a bf16 bias, a bf16 y still went through the fp32 scratch: %s", rep);
    ctx_free(&dc, dws);
    ctx_free(&oc, ows);
    ctx_free(&bc, bws);
}

/* The MLP's dy W2 in bf16 (a bf16-h context made with UMDQ_CUDA_BF16_DH=1) against the bf16-h
 * context without it (dy W2 in an fp32 tmp), from the same h: dW2 and db2 the same bits (summed
 * before dh), dx, dW1 and db1 within bf16 tolerance (relative L2 1e-2: the product rounded once
 * more), the same bits run again and without tmp (none is needed: mlp_scratch 0, asked before
 * the workspace is set), with and without biases, shapes that are and are not multiples of 4. */
static void test_cuda_mlp_bf16_dh(void) {
    need_gpu(UMD_MATH_BF16);
    void *hws, *dws;
    umd_ctx *hc = ctx_with_mlp(UMD_MATH_BF16, 1, &OPND_LIM, &hws);
    setenv("UMDQ_CUDA_BF16_DH", "1", 1);
    umd_ctx *dc = ctx_with_mlp(UMD_MATH_BF16, 1, NULL, &dws);
    setenv("UMDQ_CUDA_BF16_DH", "0", 1);
    const size_t bytes = GPU->workspace_bytes(dc, &OPND_LIM);
    T_CHECK(GPU->mlp_scratch(dc, 300, 256, 64, UMD_OPND | UMD_OPND_H) == 0);
    T_CHECK(GPU->mlp_scratch(hc, 300, 256, 64, UMD_OPND | UMD_OPND_H) == (size_t)300 * 256);
    dws = GPU->alloc(dc, bytes);
    T_REQUIRE(dws);
    GPU->set_workspace(dc, dws, bytes);
    const int types = UMD_OPND | UMD_OPND_H;
    const int shapes[][3] = {{300, 256, 64}, {1025, 200, 160}, {37, 61, 24}, {1, 8, 8}}; /* M F w */
    for (int s = 0; s < 4; s++) {
        const int M = shapes[s][0], F = shapes[s][1], w = shapes[s][2];
        const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
        const uint32_t key = 2900 + 20 * (uint32_t)s;
        float *d_x, *d_W1, *d_W2, *d_dy, *d_b1, *d_b2, *dy;
        const void *d_xh;
        mlp_inputs(M, F, w, key, &d_x, &d_xh, &d_W1, &d_W2, &d_dy, &d_b1, &d_b2, &dy);
        const float *nanMF = h_nan(MF), *nanMw = h_nan(Mw);
        void *h = d_up(h_nan16(MF), MF * sizeof(uint16_t));
        float *y = d_f(nanMw, Mw);
        GPU->mlp_fwd(hc, y, h, d_f(nanMF, MF), d_xh, d_W1, d_b1, d_W2, d_b2, M, F, w, types);
        ctx_ok(hc);
        for (int bias = 1; bias >= 0; bias--) {
            char tag[96];
            snprintf(tag, sizeof tag, " (%d x %d x %d, %s)", M, F, w, bias ? "biases" : "no biases");
            float *gW1 = h_randn(Fw, key + 6, 1.0f), *gW2 = h_randn(Fw, key + 7, 1.0f);
            float *gb1 = h_randn((size_t)F, key + 8, 1.0f), *gb2 = h_randn((size_t)w, key + 9, 1.0f);
            mlp_grads g[4];
            for (int k = 0; k < 4; k++) {
                g[k] = mlp_grads_new(nanMw, gW1, gW2, gb1, gb2, M, F, w);
                GPU->mlp_bwd(k ? dc : hc, g[k].dx, g[k].dW1, bias ? g[k].db1 : NULL, g[k].dW2,
                             bias ? g[k].db2 : NULL, d_dy, d_xh, h, d_W1, d_W2,
                             k == 3 ? NULL : d_f(nanMF, MF), M, F, w, types);
            }
            ctx_ok2(hc, dc);
            char what[160];
            same_bits_fmt(g[1].dW2, g[0].dW2, Fw, "mlp_bwd dW2, bf16 dy W2%s", tag);
            same_bits_fmt(g[1].db2, g[0].db2, (size_t)w, "mlp_bwd db2, bf16 dy W2%s", tag);
            snprintf(what, sizeof what, "mlp_bwd dx, bf16 dy W2 against fp32%s", tag);
            near_l2(what, g[1].dx, g[0].dx, NULL, Mw, 1e-2);
            snprintf(what, sizeof what, "mlp_bwd dW1, bf16 dy W2 against fp32%s", tag);
            near_l2(what, g[1].dW1, g[0].dW1, gW1, Fw, 1e-2);
            if (bias) {
                snprintf(what, sizeof what, "mlp_bwd db1, bf16 dy W2 against fp32%s", tag);
                near_l2(what, g[1].db1, g[0].db1, gb1, (size_t)F, 1e-2);
            }
            char t2[120];
            snprintf(t2, sizeof t2, ", bf16 dy W2 run again%s", tag);
            mlp_grads_same(&g[2], &g[1], M, F, w, t2);
            snprintf(t2, sizeof t2, ", bf16 dy W2 without tmp%s", tag);
            mlp_grads_same(&g[3], &g[1], M, F, w, t2);
        }
        cleanup();
    }
    ctx_free(&hc, hws);
    ctx_free(&dc, dws);
}

/* ---- the GEMM tuner ---------------------------------------------------------------------------- */

/* The counts in a context's description: "GEMM tuning on (N shapes, K on another algorithm, S
 * splitting K, H by hand; V split candidates timed; L Linear forward plans tuned, T on another
 * algorithm; R GEMMs run on a tuned algorithm)". */
typedef struct {
    int shapes, took, split, hand;
    long variants;
    int lt, lt_took;
    long runs;
} tune_count;
static tune_count tune_counts(umd_ctx *c) {
    char d[1024], onoff[4];
    tune_count n = {-1, -1, -1, -1, -1, -1, -1, -1};
    umd_cuda_describe(c, d, sizeof d);
    const char *at = strstr(d, "GEMM tuning ");
    T_REQUIRE(at);
    T_REQUIRE(sscanf(at, "GEMM tuning %3s (%d shapes, %d on another algorithm, %d splitting K, %d "
                         "by hand; %ld split candidates timed; %d Linear forward plans tuned, %d "
                         "on another algorithm; %ld GEMMs run",
                     onoff, &n.shapes, &n.took, &n.split, &n.hand, &n.variants, &n.lt, &n.lt_took,
                     &n.runs) == 9);
    T_EQ_STR(onoff, "on");
    return n;
}

/* A bf16 context with UMDQ_CUDA_GEMM_TUNE=1 and, where take >= 0, UMDQ_CUDA_GEMM_TUNE_TAKE=take
 * (read when it is made; ctx_with clears both). */
static umd_ctx *tuned_ctx(int take, int operands, const umd_limits *lim, void **ws) {
    char tv[16];
    snprintf(tv, sizeof tv, "%d", take);
    if (take >= 0) setenv("UMDQ_CUDA_GEMM_TUNE_TAKE", tv, 1);
    return ctx_with_switch("UMDQ_CUDA_GEMM_TUNE", UMD_MATH_BF16, operands, lim, ws);
}

/* One gemm and one linear_bwd case of test_cuda_gemm_tune in c, each run twice from the same
 * starting values: the first against the CPU at bf16's tolerance, the second its bits. */
static void tune_dense_case(umd_ctx *c, int M, int N, int K, int ta, int tb, uint32_t key,
                            const char *how) {
    char what[160];
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, ncm = (size_t)M * ldc;
    float *A = h_randn(na, key, 1.0f), *B = h_randn(nb, key + 1, 1.0f);
    float *Cm = h_randn(ncm, key + 2, 1.0f);
    float *dA = d_f(A, na), *dB = d_f(B, nb), *dC[2] = {d_f(Cm, ncm), d_f(Cm, ncm)};
    CPU->gemm(cc, ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.5f, Cm, ldc);
    for (int r = 0; r < 2; r++)
        GPU->gemm(c, ta, tb, M, N, K, 0.75f, dA, lda, dB, ldb, 0.5f, dC[r], ldc);
    ctx_ok(c);
    snprintf(what, sizeof what, "gemm %d x %d x %d %s%s, %s", M, N, K, ta ? "T" : "N",
             tb ? "T" : "N", how);
    same_math(what, dC[0], Cm, ncm);
    snprintf(what, sizeof what, "gemm %d x %d x %d %s%s run again, %s", M, N, K, ta ? "T" : "N",
             tb ? "T" : "N", how);
    same_bits(what, dC[1], dC[0], ncm);
    if (ta || tb) return;
    /* linear_bwd: dx += dy W, dW += dy^T x, db += (x (M, K), W (N, K)) */
    float *x = h_randn((size_t)M * K, key + 3, 1.0f), *W = h_randn((size_t)N * K, key + 4, 0.2f);
    float *g = h_randn((size_t)M * N, key + 5, 1.0f);
    float *gx = h_randn((size_t)M * K, key + 6, 1.0f), *gW = h_randn((size_t)N * K, key + 7, 1.0f);
    float *gb = h_randn((size_t)N, key + 8, 1.0f);
    float *d_x = d_f(x, (size_t)M * K), *d_W = d_f(W, (size_t)N * K), *d_g = d_f(g, (size_t)M * N);
    /* linear_fwd (a cuBLASLt plan with the bias epilogue), with the bias and without */
    for (int bias = 0; bias < 2; bias++) {
        float *b = h_randn((size_t)N, key + 9, 1.0f), *d_b = d_f(b, (size_t)N);
        float *y = h_nan((size_t)M * N), *d_y[2] = {d_f(y, (size_t)M * N), d_f(y, (size_t)M * N)};
        CPU->linear_fwd(cc, y, x, W, bias ? b : NULL, M, N, K, UMD_F32);
        for (int r = 0; r < 2; r++)
            GPU->linear_fwd(c, d_y[r], d_x, d_W, bias ? d_b : NULL, M, N, K, UMD_F32);
        ctx_ok(c);
        snprintf(what, sizeof what, "linear_fwd (%d x %d x %d)%s, %s", M, N, K,
                 bias ? " with a bias" : "", how);
        same_math(what, d_y[0], y, (size_t)M * N);
        snprintf(what, sizeof what, "linear_fwd run again (%d x %d x %d)%s, %s", M, N, K,
                 bias ? " with a bias" : "", how);
        same_bits(what, d_y[1], d_y[0], (size_t)M * N);
    }
    float *d_gx[2], *d_gW[2], *d_gb[2];
    for (int r = 0; r < 2; r++) {
        d_gx[r] = d_f(gx, (size_t)M * K), d_gW[r] = d_f(gW, (size_t)N * K);
        d_gb[r] = d_f(gb, (size_t)N);
        GPU->linear_bwd(c, d_gx[r], d_gW[r], d_gb[r], d_g, d_x, d_W, M, N, K, 1, UMD_F32);
    }
    CPU->linear_bwd(cc, gx, gW, gb, g, x, W, M, N, K, 1, UMD_F32);
    ctx_ok(c);
    snprintf(what, sizeof what, "linear_bwd dx += (%d x %d x %d), %s", M, N, K, how);
    same_math(what, d_gx[0], gx, (size_t)M * K);
    snprintf(what, sizeof what, "linear_bwd dW += (%d x %d x %d), %s", M, N, K, how);
    same_math(what, d_gW[0], gW, (size_t)N * K);
    snprintf(what, sizeof what, "linear_bwd db (%d x %d x %d), %s", M, N, K, how);
    same(what, d_gb[0], gb, (size_t)N, 1e-5, 0);
    snprintf(what, sizeof what, "linear_bwd dx run again (%d x %d x %d), %s", M, N, K, how);
    same_bits(what, d_gx[1], d_gx[0], (size_t)M * K);
    snprintf(what, sizeof what, "linear_bwd dW run again (%d x %d x %d), %s", M, N, K, how);
    same_bits(what, d_gW[1], d_gW[0], (size_t)N * K);
}

/* A weight gradient's size, long enough to be tuned by time and to be split: C (1536, 1536) at
 * ldc 1538 = op(A) op(B) over K = 4096 (each operand 4096 x 1536 values), for every transpose,
 * beta 0.5 onto random values and beta 0 over NaN (a candidate that read C would leave NaN), in c
 * and in the default context gc, each twice in c: c's within 1e-4 relative L2 of gc's (the same
 * bf16 products summed in another order), and its second run the first's bits. */
static void tune_long_case(umd_ctx *c, const char *how) {
    const int M = 1536, N = 1536, K = 4096, ldc = N + 2; /* 19 GFLOP; A, B fit gc's stages */
    const size_t na = (size_t)K * M, nb = (size_t)K * N, nc = (size_t)M * ldc;
    float *dA = d_f(h_randn(na, 3500, 1.0f), na), *dB = d_f(h_randn(nb, 3501, 1.0f), nb);
    const float *C0 = h_randn(nc, 3502, 1.0f);
    float *Cnan = h_nan(nc); /* NaN where C is, 7 in the padding (left alone: finite) */
    for (size_t e = 0; e < nc; e++)
        if (e % ldc >= (size_t)N) Cnan[e] = 7.0f;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int b = 0; b < 2; b++) {
                const float beta = b ? 0.0f : 0.5f;
                const float *start = b ? Cnan : C0;
                const int lda = ta ? M : K, ldb = tb ? K : N;
                float *ref = d_f(start, nc), *got[2] = {d_f(start, nc), d_f(start, nc)};
                GPU->gemm(gc, ta, tb, M, N, K, 1.0f, dA, lda, dB, ldb, beta, ref, ldc);
                for (int r = 0; r < 2; r++)
                    GPU->gemm(c, ta, tb, M, N, K, 1.0f, dA, lda, dB, ldb, beta, got[r], ldc);
                ctx_ok(c);
                char what[160];
                snprintf(what, sizeof what, "gemm %d x %d x %d %s%s, beta %.1f, %s, against the "
                         "default", M, N, K, ta ? "T" : "N", tb ? "T" : "N", beta, how);
                near_l2(what, got[0], ref, NULL, nc, 1e-4);
                snprintf(what, sizeof what, "gemm %d x %d x %d %s%s, beta %.1f, %s, run again", M,
                         N, K, ta ? "T" : "N", tb ? "T" : "N", beta, how);
                same_bits(what, got[1], got[0], nc);
            }
}

/* UMDQ_CUDA_GEMM_TUNE=1: bf16 contexts that time each new GEMM shape against cuBLASLt's other
 * algorithms and keep the fastest (gemm_tune.cu). The contexts keep the timing's pick, and
 * (UMDQ_CUDA_GEMM_TUNE_TAKE = 1, 2, 3, 999) the heuristic's first three algorithms and the last
 * candidate (where K is long enough and C fp32, K split by hand in the most parts the workspace
 * holds: 8 for the 4096-row dW, 6 with a rest of 16 rows for the long cases; else cuBLASLt's last),
 * whatever their times, so that every kind of candidate runs on whatever the device lists.
 *   - Against the CPU at bf16's tolerance, as dense_layers: gemm with every transpose, a padded
 *     C and beta != 0 (C read, so copied aside while the candidates run; A and B are packed into
 *     the bf16 stages first), linear_fwd with a bias and without (a cuBLASLt plan whose own
 *     algorithm is candidate 0), linear_bwd with dx and dW accumulated, at dense_layers' shapes and
 *     a (4096 x 256 x 384) one, its dW a reduction over 4096 rows (split variants). These shapes
 *     are below the size the tuner times (TUNE_MIN_FLOP): only a TAKE tunes them.
 *   - A weight gradient's size over 4096 rows, every transpose and a padded C, tuned by time too
 *     (tune_long_case).
 * Each call runs twice from the same starting values; the second, on the algorithm kept, must
 * give the first's bits, which the first has only if C was given back before its final run. The
 * description counts the shapes: with a TAKE every GEMM's (38, and the 10 forward plans, or a
 * shape for each cuBLASLt has no plan for), else the long ones' (8); with the last candidate,
 * those on a hand split (9).
 * Then a context recording its first GEMM: a shape new while recording is recorded on
 * cublasGemmEx (nothing tuned, the recording and its replay right), and tuned when it next runs
 * op by op. Then the MLP with h and dy W2 in bf16 (a bf16 C, whose candidates add no split-K
 * parts in bf16), TAKE 1 and 999, against the same context untuned: within 1e-2 in relative L2,
 * and its bits run again. */
static void test_cuda_gemm_tune(void) {
    need_gpu(UMD_MATH_BF16);
    const int takes[] = {-1, 1, 2, 3, 999};
    const int shapes[][3] = {{37, 53, 61}, {128, 96, 200}, {300, 160, 48}, {1, 7, 5},
                             {4096, 256, 384}}; /* M N K */
    /* LIM, with room for the last shape's weight in the bf16 stage */
    const umd_limits tlim = {8, 1025, 160, 4, 1024, 512 * 512};
    for (int t = 0; t < 5; t++) {
        void *ws;
        umd_ctx *c = tuned_ctx(takes[t], 0, &tlim, &ws);
        char how[48];
        snprintf(how, sizeof how, takes[t] < 0 ? "tuned" : takes[t] > 3 ? "tuned, the last candidate"
                                                                       : "tuned, candidate %d",
                 takes[t]);
        for (int s = 0; s < 5; s++) {
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++)
                    tune_dense_case(c, shapes[s][0], shapes[s][1], shapes[s][2], ta, tb,
                                    3300 + 40 * (uint32_t)s + 10 * (uint32_t)(2 * ta + tb), how);
            cleanup(); /* the tracked buffers are few: free each shape's */
        }
        tune_long_case(c, how);
        cleanup();
        const tune_count n = tune_counts(c);
        printf("  %s: %d shapes tuned, %d on another algorithm than cublasGemmEx's, %d of them "
               "splitting K, %d by hand; %ld split candidates timed; %d Linear forward plans "
               "tuned, %d on another algorithm\n", how, n.shapes, n.took, n.split, n.hand,
               n.variants, n.lt, n.lt_took);
        /* 5 x 4 gemm, 5 x 2 linear_bwd (dx, dW), the long ones' 4 x 2 (every transpose, beta
         * 0.5 and 0); 5 x 2 linear_fwd calls (with a bias, without), each a cuBLASLt plan, or
         * where cuBLASLt has none (an odd leading dimension), bias rows and a GEMM (a shape); by
         * time, only the long ones */
        if (takes[t] < 0) {
            T_CHECK_MSG(n.shapes == 8 && n.lt == 0, "%s: %d shapes and %d forward plans tuned",
                        how, n.shapes, n.lt);
        } else {
            T_CHECK_MSG(n.shapes >= 38 && n.shapes + n.lt == 48,
                        "%s: %d shapes and %d forward plans tuned", how, n.shapes, n.lt);
        }
        /* the last candidate a hand split wherever there is one: the 4096-row dW (8 parts) and
         * the 8 long ones (6 parts of 680 rows and a rest of 16, in the default attention's
         * workspace); none taken otherwise with a TAKE */
        if (takes[t] > 3)
            T_CHECK_MSG(n.hand == 9 && n.split >= 9, "%s: %d shapes on a hand split, %d split",
                        how, n.hand, n.split);
        else if (takes[t] > 0)
            T_CHECK_MSG(n.hand == 0, "%s: %d shapes on a hand split", how, n.hand);
        if (takes[t] > 0)
            T_CHECK_MSG(n.lt_took > 0, "%s: no forward plan on candidate %d", how, takes[t]);
        if (takes[t] > 0) {
            T_CHECK_MSG(n.took > 0, "%s: no shape on candidate %d", how, takes[t]);
            /* and the calls ran on what was taken: each shape's twice at least */
            T_CHECK_MSG(n.runs >= 2L * (n.took + n.lt_took), "%s: %ld GEMMs on %d + %d taken "
                        "algorithms", how, n.runs, n.took, n.lt_took);
        }
        ctx_free(&c, ws);
        cleanup();
    }
    /* a shape first met while the stream is recorded */
    {
        void *ws;
        setenv("UMDQ_CUDA_GRAPH", "1", 1);
        umd_ctx *c = tuned_ctx(1, 0, &tlim, &ws);
        setenv("UMDQ_CUDA_GRAPH", "0", 1);
        char err[512] = "";
        const int M = 300, N = 160, K = 48;
        float *A = h_randn((size_t)M * K, 3520, 1.0f), *B = h_randn((size_t)K * N, 3521, 1.0f);
        float *C = h_randn((size_t)M * N, 3522, 1.0f), *Cw = h_copy(C, (size_t)M * N);
        float *dA = d_f(A, (size_t)M * K), *dB = d_f(B, (size_t)K * N);
        float *dC = d_f(C, (size_t)M * N), *dC2 = d_f(C, (size_t)M * N);
        CPU->gemm(cc, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.5f, Cw, N);
        T_EQ_INT(GPU->record_begin(c, err, sizeof err), 0);
        GPU->gemm(c, 0, 0, M, N, K, 1.0f, dA, K, dB, N, 0.5f, dC, N);
        T_REQUIRE(GPU->record_end(c, err, sizeof err) == 0 || (printf("  %s\n", err), 0));
        T_EQ_INT(tune_counts(c).shapes, 0);
        T_EQ_INT(GPU->replay(c, err, sizeof err), 0);
        ctx_ok(c);
        same_math("gemm recorded and replayed, tuning on, a new shape", dC, Cw, (size_t)M * N);
        GPU->gemm(c, 0, 0, M, N, K, 1.0f, dA, K, dB, N, 0.5f, dC2, N);
        ctx_ok(c);
        same_math("the same gemm op by op after the recording, tuned", dC2, Cw, (size_t)M * N);
        T_EQ_INT(tune_counts(c).shapes, 1);
        ctx_free(&c, ws);
        cleanup();
    }
    /* the MLP with a bf16 C */
    const int types = UMD_OPND | UMD_OPND_H;
    const int M = 1025, F = 256, w = 64;
    const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
    for (int t = 0; t < 2; t++) {
        void *hws, *tws;
        setenv("UMDQ_CUDA_BF16_DH", "1", 1);
        umd_ctx *hc = ctx_with_mlp(UMD_MATH_BF16, 1, &OPND_LIM, &hws);
        setenv("UMDQ_CUDA_BF16_DH", "1", 1);
        setenv("UMDQ_CUDA_BF16_MLP", "1", 1);
        umd_ctx *tc = tuned_ctx(t ? 999 : 1, 1, &OPND_LIM, &tws);
        float *d_x, *d_W1, *d_W2, *d_dy, *d_b1, *d_b2, *dy;
        const void *d_xh;
        mlp_inputs(M, F, w, 3600, &d_x, &d_xh, &d_W1, &d_W2, &d_dy, &d_b1, &d_b2, &dy);
        const float *nanMF = h_nan(MF), *nanMw = h_nan(Mw);
        void *h = d_up(h_nan16(MF), MF * sizeof(uint16_t));
        GPU->mlp_fwd(hc, d_f(nanMw, Mw), h, d_f(nanMF, MF), d_xh, d_W1, d_b1, d_W2, d_b2, M, F, w,
                     types);
        ctx_ok(hc);
        float *gW1 = h_randn(Fw, 3606, 1.0f), *gW2 = h_randn(Fw, 3607, 1.0f);
        float *gb1 = h_randn((size_t)F, 3608, 1.0f), *gb2 = h_randn((size_t)w, 3609, 1.0f);
        mlp_grads g[3];
        for (int k = 0; k < 3; k++) {
            g[k] = mlp_grads_new(nanMw, gW1, gW2, gb1, gb2, M, F, w);
            GPU->mlp_bwd(k ? tc : hc, g[k].dx, g[k].dW1, g[k].db1, g[k].dW2, g[k].db2, d_dy, d_xh,
                         h, d_W1, d_W2, d_f(nanMF, MF), M, F, w, types);
        }
        ctx_ok2(hc, tc);
        const char *tag = t ? ", tuned, the last candidate" : ", tuned, candidate 1";
        char what[120];
        mlp_grads_near(&g[1], &g[0], gW1, gW2, gb1, gb2, M, F, w, tag + 2);
        snprintf(what, sizeof what, "%s, run again", tag);
        mlp_grads_same(&g[2], &g[1], M, F, w, what);
        const tune_count n = tune_counts(tc);
        printf("  the MLP%s: %d shapes tuned, %d on another algorithm, %d splitting K, %d by "
               "hand\n", tag, n.shapes, n.took, n.split, n.hand);
        /* the last candidate: dW1's and dW2's reductions over 1025 rows by hand in 2 parts of
         * 512 and a rest of 1 */
        T_CHECK_MSG(n.hand == (t ? 2 : 0), "the MLP%s: %d shapes on a hand split", tag, n.hand);
        T_CHECK_MSG(n.shapes >= 3 && n.took > 0 && n.runs >= 2L * n.took,
                    "the MLP%s: %d shapes tuned, %d on another algorithm, %ld runs on them", tag,
                    n.shapes, n.took, n.runs);
        ctx_free(&hc, hws);
        ctx_free(&tc, tws);
        cleanup();
    }
}

/* ---- the MLP's output in bf16 ----------------------------------------------------------------- */

/* mlp_fwd of one (M, F, w) into a bf16 y (UMD_OPND_Y) against the same context's mlp_fwd into an
 * fp32 y, rounded on the host, bit for bit (same_rounded), h the same bits in both (bf16 where
 * hb), x fp32 and a bf16 operand, with and without biases. Outputs start as 0xff bytes. */
static void mlp_bf16_y_shape(umd_ctx *c, int hb, const char *how, int M, int F, int w,
                             uint32_t key) {
    const size_t MF = (size_t)M * F, Mw = (size_t)M * w;
    float *d_x, *d_W1, *d_W2, *d_dy, *d_b1, *d_b2, *dy;
    const void *d_xh;
    mlp_inputs(M, F, w, key, &d_x, &d_xh, &d_W1, &d_W2, &d_dy, &d_b1, &d_b2, &dy);
    const void *poison = h_poison((MF > Mw ? MF : Mw) * sizeof(float));
    float *y32 = d_up(poison, Mw * sizeof(float)), *tmp = d_up(poison, MF * sizeof(float));
    void *y16 = d_up(poison, Mw * sizeof(uint16_t)), *h[2];
    for (int k = 0; k < 2; k++) h[k] = d_up(poison, MF * sizeof(float));
    for (int v = 0; v < 4; v++) {
        const int bias = v & 1, xbf = v >> 1;
        const int types = (xbf ? UMD_OPND : UMD_F32) | (hb ? UMD_OPND_H : 0);
        const void *x = xbf ? d_xh : (const void *)d_x;
        for (int k = 0; k < 2; k++) {
            GPU->upload(gc, h[k], poison, MF * sizeof(float));
            GPU->upload(gc, tmp, poison, MF * sizeof(float));
            GPU->upload(gc, k ? y16 : (void *)y32, poison,
                        Mw * (k ? sizeof(uint16_t) : sizeof(float)));
            GPU->mlp_fwd(c, k ? y16 : (void *)y32, h[k], tmp, x, d_W1, bias ? d_b1 : NULL, d_W2,
                         bias ? d_b2 : NULL, M, F, w, types | (k ? UMD_OPND_Y : 0));
            ctx_ok(c);
        }
        char what[192];
        snprintf(what, sizeof what, "mlp_fwd bf16 y%s (%d x %d x %d, x %s, bias %d)", how, M, F, w,
                 xbf ? "bf16" : "fp32", bias);
        same_rounded(what, y16, y32, Mw);
        snprintf(what, sizeof what, "mlp_fwd h with a bf16 y%s (%d x %d x %d, x %s, bias %d)", how,
                 M, F, w, xbf ? "bf16" : "fp32", bias);
        if (hb) same_bf16_dev(what, h[1], h[0], MF);
        else same_bits(what, h[1], h[0], MF);
    }
}

/* mlp_fwd writing y as a bf16 branch tensor (UMD_OPND_Y: fc2's output where branch_operand says
 * so) against the same context's mlp_fwd into an fp32 y, rounded to nearest even on the host,
 * bit for bit, h the same (mlp_bf16_y_shape), in bf16 contexts with bf16 operands:
 *   the operands alone: fc2 writes the bf16 D on cuBLASLt; where the stages do not hold the
 *     operands whole (33000 rows), the separate ops, linear_fwd with UMD_OPND_Y in chunks;
 *   made with UMDQ_CUDA_LT_BF16_Y=0: fc2's fp32 y into tmp (F >= w) or bf_a (F < w: 20 x 9 x
 *     33), then rounded into y;
 *   made with UMDQ_CUDA_BF16_MLP=1 (h bf16) and with UMDQ_CUDA_GELU_EPILOGUE=1 too (fc1 and GELU
 *     in one GEMM where cuBLASLt has the plan): the shapes the stages hold whole.
 * Shapes that are not multiples of the GEMM tiles, F below and above w, one row. In a default
 * bf16 context and a TF32 one made with the operands switch, UMD_OPND_Y means nothing (y fp32,
 * the UMD_F32 bits). Where fc2's fp32 rows fit neither tmp nor the bf16 stage (F < w, cuBLASLt
 * writing no bf16 y: UMDQ_CUDA_LT_BF16_Y=0 and the smallest stage) the context fails, naming
 * mlp_fwd, and y stays as it was. */
static void test_cuda_mlp_bf16_y(void) {
    need_gpu(UMD_MATH_BF16);
    const int shapes[][3] = {{37, 61, 24}, {300, 256, 64}, {1025, 200, 160},
                             {1, 7, 5},    {20, 9, 33},    {33000, 512, 128}}; /* M F w */
    void *ws[4];
    umd_ctx *cs[4];
    cs[0] = ctx_with(UMD_MATH_BF16, 1, 0, &OPND_LIM, &ws[0]);
    setenv("UMDQ_CUDA_LT_BF16_Y", "0", 1);
    cs[1] = ctx_with(UMD_MATH_BF16, 1, 0, &OPND_LIM, &ws[1]);
    cs[2] = ctx_with_mlp(UMD_MATH_BF16, 1, &OPND_LIM, &ws[2]);
    setenv("UMDQ_CUDA_GELU_EPILOGUE", "1", 1);
    cs[3] = ctx_with_mlp(UMD_MATH_BF16, 1, &OPND_LIM, &ws[3]);
    const char *hows[] = {"", " via fp32", ", bf16 h", ", bf16 h, GELU epilogue"};
    for (int i = 0; i < 4; i++)
        for (int s = 0; s < 6; s++) {
            if (i >= 2 && s == 5) continue; /* a bf16 h needs the stages whole */
            mlp_bf16_y_shape(cs[i], i >= 2, hows[i], shapes[s][0], shapes[s][1], shapes[s][2],
                             1700 + 20 * (uint32_t)s);
            cleanup();
        }
    for (int i = 0; i < 4; i++) ctx_free(&cs[i], ws[i]);
    /* where UMD_OPND_Y means nothing: y fp32, the UMD_F32 bits */
    for (int i = 0; i < 2; i++) {
        void *cw;
        umd_ctx *c = i ? ctx_with(UMD_MATH_TF32, 1, 0, &OPND_LIM, &cw)
                       : ctx_with(UMD_MATH_BF16, 0, 0, &OPND_LIM, &cw);
        const int M = 300, F = 256, w = 64;
        float *d_x, *d_W1, *d_W2, *d_dy, *d_b1, *d_b2, *dy;
        const void *d_xh;
        mlp_inputs(M, F, w, 1790, &d_x, &d_xh, &d_W1, &d_W2, &d_dy, &d_b1, &d_b2, &dy);
        float *y[2], *h[2];
        for (int k = 0; k < 2; k++) {
            y[k] = d_f(h_nan((size_t)M * w), (size_t)M * w);
            h[k] = d_f(h_nan((size_t)M * F), (size_t)M * F);
            float *tmp = d_f(h_nan((size_t)M * F), (size_t)M * F);
            GPU->mlp_fwd(c, y[k], h[k], tmp, d_x, d_W1, d_b1, d_W2, d_b2, M, F, w,
                         k ? UMD_OPND_Y : UMD_F32);
        }
        ctx_ok(c);
        const char *name =
            i ? "a TF32 context with the operands switch" : "the default bf16 context";
        same_bits_fmt(y[1], y[0], (size_t)M * w, "mlp_fwd y, UMD_OPND_Y in %s", name);
        same_bits_fmt(h[1], h[0], (size_t)M * F, "mlp_fwd h, UMD_OPND_Y in %s", name);
        cleanup();
        ctx_free(&c, cw);
    }
    {
        const umd_limits small = {8, 1, 1024, 1, 1024, 1024 * 1024};
        const int M = 6000, F = 512, w = 1024;
        const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
        void *cw;
        setenv("UMDQ_CUDA_LT_BF16_Y", "0", 1);
        umd_ctx *c = ctx_with(UMD_MATH_BF16, 1, 0, &small, &cw);
        float *x = d_f(h_randn(Mw, 1795, 1.0f), Mw), *W1 = d_f(h_randn(Fw, 1796, 0.2f), Fw);
        float *W2 = d_f(h_randn(Fw, 1797, 0.2f), Fw), *h = d_f(h_nan(MF), MF);
        float *tmp = d_f(h_nan(MF), MF);
        const uint16_t *nan16 = h_nan16(Mw);
        void *y = d_up(nan16, Mw * sizeof *nan16);
        GPU->mlp_fwd(c, y, h, tmp, x, W1, NULL, W2, NULL, M, F, w, UMD_OPND_Y);
        char err[512] = "";
        int rc = GPU->status(c, err, sizeof err);
        printf("  mlp_fwd with a bf16 y whose fp32 rows fit nowhere: %s\n", err);
        T_CHECK_MSG(rc != 0, "mlp_fwd wrote a bf16 y it has no room to compute");
        T_CONTAINS(err, "mlp_fwd");
        T_CONTAINS(err, "bf16 branch tensor");
        T_CONTAINS(err, "y (6000, 1024)");
        same_bf16("mlp_fwd bf16 y left alone", y, nan16, Mw);
        cleanup();
        ctx_free(&c, cw);
    }
}

/* hidden_operand is 1 exactly in a bf16 context made with UMDQ_CUDA_BF16_OPERANDS=1 and
 * UMDQ_CUDA_BF16_MLP=1; 0 in a bf16 context with the operands alone, with the MLP switch alone
 * (it needs them), with neither, and in fp32 and TF32 contexts made with both. Where it says 0,
 * UMD_OPND_H means nothing: mlp_fwd and mlp_bwd give the bits they give without it, h fp32
 * (the default bf16 context, one made with the MLP switch alone, a TF32 one made with both:
 * the separate ops). In a context that keeps h in bf16, the separate ops (here: no workspace,
 * so no bf16 stage) cannot take a bf16 h: mlp_fwd and mlp_bwd fail the context, naming the op,
 * h's shape and the switch, and leave h and the gradients as they were. */
/* A question a context answers about a switch of its own (hidden_operand, branch_operand), asked
 * in six contexts: bf16 with the operands and the switch `var` (the one where it is 1), with the
 * operands alone, the switch alone (it needs them), neither, and fp32 and TF32 contexts made with
 * both; operand_bytes 2 exactly where the operands are bf16. `more` (may be NULL) checks more of
 * each context. */
typedef int (*ctx_question)(const umd_ops *o, const umd_ctx *c);
static void switch_question(const char *var, const char *name, ctx_question q,
                            void (*more)(const umd_ops *o, umd_ctx *c)) {
    static const struct {
        int math, operands, on, want;
    } cases[] = {{UMD_MATH_BF16, 1, 1, 1}, {UMD_MATH_BF16, 1, 0, 0}, {UMD_MATH_BF16, 0, 1, 0},
                 {UMD_MATH_BF16, 0, 0, 0}, {UMD_MATH_FP32, 1, 1, 0}, {UMD_MATH_TF32, 1, 1, 0}};
    for (int i = 0; i < 6; i++) {
        void *ws;
        const int m = cases[i].math, op = cases[i].operands;
        umd_ctx *c = cases[i].on ? ctx_with_switch(var, m, op, NULL, &ws)
                                 : ctx_with(m, op, 0, NULL, &ws);
        const umd_ops *o = umd_ops_cuda(m);
        T_CHECK_MSG(q(o, c) == cases[i].want, "%s (math %d, operands %d, %s %d): %d, want %d",
                    name, m, op, var, cases[i].on, q(o, c), cases[i].want);
        T_EQ_INT(o->operand_bytes(c), m == UMD_MATH_BF16 && op ? 2 : 4);
        if (more) more(o, c);
        ctx_free(&c, NULL);
    }
}

static int ask_hidden(const umd_ops *o, const umd_ctx *c) { return o->hidden_operand(c); }

static void test_cuda_hidden_operand(void) {
    need_gpu(UMD_MATH_BF16);
    switch_question("UMDQ_CUDA_BF16_MLP", "hidden_operand", ask_hidden, NULL);
    void *ws;
    {
        static const umd_limits lim = {4, 16, 160, 2, 16, 4096};
        const int M = 37, F = 64, w = 48;
        const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
        float *d_x = d_f(h_randn(Mw, 1400, 1.0f), Mw), *d_W1 = d_f(h_randn(Fw, 1401, 0.2f), Fw);
        float *d_W2 = d_f(h_randn(Fw, 1402, 0.2f), Fw), *d_dy = d_f(h_randn(Mw, 1403, 1.0f), Mw);
        float *d_b1 = d_f(h_randn((size_t)F, 1404, 0.5f), (size_t)F);
        float *d_b2 = d_f(h_randn((size_t)w, 1405, 0.5f), (size_t)w);
        float *gW1 = h_randn(Fw, 1406, 1.0f), *gW2 = h_randn(Fw, 1407, 1.0f);
        float *gb1 = h_randn((size_t)F, 1408, 1.0f), *gb2 = h_randn((size_t)w, 1409, 1.0f);
        const float *nanMF = h_nan(MF), *nanMw = h_nan(Mw);
        const char *names[] = {"the default bf16 context", "a bf16 context with the MLP switch alone",
                               "a TF32 context with both switches"};
        for (int i = 0; i < 3; i++) {
            void *cws;
            const int m = i == 2 ? UMD_MATH_TF32 : UMD_MATH_BF16;
            umd_ctx *c = i == 0 ? ctx_with(m, 0, 0, &lim, &cws) : ctx_with_mlp(m, i == 2, &lim, &cws);
            T_EQ_INT(umd_ops_cuda(m)->hidden_operand(c), 0);
            float *y[2], *h[2];
            mlp_grads g[2];
            for (int k = 0; k < 2; k++) {
                y[k] = d_f(nanMw, Mw);
                h[k] = d_f(nanMF, MF);
                g[k] = mlp_grads_new(nanMw, gW1, gW2, gb1, gb2, M, F, w);
                float *tmp = d_f(nanMF, MF);
                const int types = k ? UMD_OPND_H : UMD_F32;
                GPU->mlp_fwd(c, y[k], h[k], tmp, d_x, d_W1, d_b1, d_W2, d_b2, M, F, w, types);
                GPU->mlp_bwd(c, g[k].dx, g[k].dW1, g[k].db1, g[k].dW2, g[k].db2, d_dy, d_x, h[k],
                             d_W1, d_W2, tmp, M, F, w, types);
            }
            ctx_ok(c);
            same_bits_fmt(h[1], h[0], MF, "mlp_fwd h, UMD_OPND_H in %s", names[i]);
            same_bits_fmt(y[1], y[0], Mw, "mlp_fwd y, UMD_OPND_H in %s", names[i]);
            char tag[96];
            snprintf(tag, sizeof tag, ", UMD_OPND_H in %s", names[i]);
            mlp_grads_same(&g[1], &g[0], M, F, w, tag);
            ctx_free(&c, cws);
        }
        cleanup();
    }
    const char *names[] = {"mlp_fwd", "mlp_bwd"};
    for (int op = 0; op < 2; op++) {
        umd_ctx *c = ctx_with_mlp(UMD_MATH_BF16, 1, NULL, &ws);
        const int M = 4, F = 8, w = 8;
        const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
        uint16_t *xh, *hh;
        h_bf16_values(Mw, 1410, &xh);
        h_bf16_values(MF, 1411, &hh);
        const void *d_xh = d_up(xh, Mw * sizeof *xh);
        /* h: 0xffff where the forward would write it, bf16 values where the backward reads it */
        const uint16_t *h0 = op ? hh : h_nan16(MF);
        void *h = d_up(h0, MF * sizeof *h0);
        float *W1 = d_f(h_randn(Fw, 1412, 0.2f), Fw), *W2 = d_f(h_randn(Fw, 1413, 0.2f), Fw);
        float *dy = d_f(h_randn(Mw, 1414, 1.0f), Mw);
        float *y = d_f(h_nan(Mw), Mw), *dx = d_f(h_nan(Mw), Mw), *tmp = d_f(h_nan(MF), MF);
        const float *gW = h_randn(Fw, 1415, 1.0f);
        float *dW1 = d_f(gW, Fw), *dW2 = d_f(gW, Fw), *dW_ref = d_f(gW, Fw);
        if (op == 0)
            GPU->mlp_fwd(c, y, h, tmp, d_xh, W1, NULL, W2, NULL, M, F, w, UMD_OPND | UMD_OPND_H);
        else
            GPU->mlp_bwd(c, dx, dW1, NULL, dW2, NULL, dy, d_xh, h, W1, W2, tmp, M, F, w,
                         UMD_OPND | UMD_OPND_H);
        char err[512] = "";
        int rc = GPU->status(c, err, sizeof err);
        printf("  %s with a bf16 h and no bf16 stage: %s\n", names[op], err);
        T_CHECK_MSG(rc != 0, "%s took a bf16 h on the separate ops (fp32)", names[op]);
        T_CONTAINS(err, names[op]);
        T_CONTAINS(err, "h (4, 8)");
        T_CONTAINS(err, "bf16");
        T_CONTAINS(err, "UMDQ_CUDA_BF16_MLP");
        same_bf16("h left alone", h, h0, MF);
        same_bits("dW1 left alone", dW1, dW_ref, Fw);
        same_bits("dW2 left alone", dW2, dW_ref, Fw);
        cleanup();
        ctx_free(&c, NULL);
    }
}

/* ---- normalisation ------------------------------------------------------------------------------ */

static void test_cuda_layernorm(void) {
    need_gpu(UMD_MATH_FP32);
    const int shapes[][3] = {{3, 5, 16}, {2, 65, 160}, {8, 1, 33}}; /* n T w */
    for (int s = 0; s < 3; s++) {
        int n = shapes[s][0], T = shapes[s][1], w = shapes[s][2];
        long xs = (long)T * w + 7, os = (long)T * w + 3; /* strided sequences */
        int ms = 6 * w;
        size_t nx = (size_t)n * xs, no = (size_t)n * os, nm = (size_t)n * ms;
        float *x = h_randn(nx, 40, 2.0f), *gamma = h_randn((size_t)w, 41, 0.3f);
        float *beta = h_randn((size_t)w, 42, 0.3f), *mod = h_randn(nm, 43, 0.3f);
        for (int i = 0; i < w; i++) gamma[i] += 1.0f;
        for (size_t i = 0; i < nx; i++) x[i] += 0.5f; /* rows away from zero mean */
        float *dx_ = d_f(x, nx), *dgam = d_f(gamma, (size_t)w), *dbet = d_f(beta, (size_t)w),
              *dmod_ = d_f(mod, nm);
        for (int usemod = 0; usemod < 2; usemod++) {
            float *out = h_randn(no, 44, 1.0f), *mean = h_nan((size_t)n * T), *rstd = h_nan((size_t)n * T);
            float *dout_ = d_f(out, no), *dmean = d_f(mean, (size_t)n * T), *drstd = d_f(rstd, (size_t)n * T);
            /* the gaps between strided sequences must stay untouched: same start on both sides */
            for (int b = 0; b < n; b++)
                for (long k = 0; k < (long)T * w; k++) out[b * os + k] = NAN;
            GPU->upload(gc, dout_, out, no * 4);
            const float *md = usemod ? mod : NULL, *dmd = usemod ? dmod_ : NULL;
            CPU->layernorm_fwd(cc, out, mean, rstd, x, gamma, beta, md, ms, n, T, w, xs, os,
                               UMD_F32);
            GPU->layernorm_fwd(gc, dout_, dmean, drstd, dx_, dgam, dbet, dmd, ms, n, T, w, xs, os,
                               UMD_F32);
            same("layernorm_fwd out", dout_, out, no, 1e-5, 0);
            same("layernorm_fwd mean", dmean, mean, (size_t)n * T, 1e-5, 0);
            same("layernorm_fwd rstd", drstd, rstd, (size_t)n * T, 1e-5, 0);
            for (int acc = 0; acc < 2; acc++) {
                float *g = h_randn(no, 45, 1.0f), *dg = d_f(g, no);
                float *gx = h_randn(nx, 46, 1.0f);
                if (!acc)
                    for (int b = 0; b < n; b++)
                        for (long k = 0; k < (long)T * w; k++) gx[b * xs + k] = NAN;
                float *ggam = h_randn((size_t)w, 47, 1.0f), *gbet = h_randn((size_t)w, 48, 1.0f);
                float *gmod = h_randn(nm, 49, 1.0f);
                for (int b = 0; b < n && usemod; b++)
                    for (int k = 0; k < 2 * w; k++) gmod[(size_t)b * ms + k] = NAN;
                float *dgx = d_f(gx, nx), *dggam = d_f(ggam, (size_t)w), *dgbet = d_f(gbet, (size_t)w),
                      *dgmod = d_f(gmod, nm);
                CPU->layernorm_bwd(cc, gx, ggam, gbet, gmod, g, x, mean, rstd, gamma, beta, md, ms,
                                   n, T, w, xs, os, acc, UMD_F32);
                GPU->layernorm_bwd(gc, dgx, dggam, dgbet, dgmod, dg, dx_, dmean, drstd, dgam, dbet,
                                   dmd, ms, n, T, w, xs, os, acc, UMD_F32);
                same("layernorm_bwd dx", dgx, gx, nx, 1e-5, 0);
                same("layernorm_bwd dgamma", dggam, ggam, (size_t)w, 1e-5, 0);
                same("layernorm_bwd dbeta", dgbet, gbet, (size_t)w, 1e-5, 0);
                same("layernorm_bwd dmod", dgmod, gmod, nm, 1e-5, 0);
            }
        }
        /* gated residual, gates inside (n, 6w) rows */
        size_t nt = (size_t)n * T * w;
        float *xr = h_randn(nt, 50, 1.0f), *yr = h_randn(nt, 51, 1.0f), *o = h_nan(nt);
        float *dxr = d_f(xr, nt), *dyr = d_f(yr, nt), *dov = d_f(o, nt);
        CPU->gate_residual_fwd(cc, o, xr, yr, mod + 2 * w, ms, n, T, w, UMD_F32);
        GPU->gate_residual_fwd(gc, dov, dxr, dyr, dmod_ + 2 * w, ms, n, T, w, UMD_F32);
        same("gate_residual_fwd", dov, o, nt, 1e-6, 0);
        float *gy = h_nan(nt), *gg = h_randn(nm, 52, 1.0f);
        for (int b = 0; b < n; b++)
            for (int k = 0; k < w; k++) gg[(size_t)b * ms + 2 * w + k] = NAN;
        float *dgy = d_f(gy, nt), *dgg = d_f(gg, nm);
        CPU->gate_residual_bwd(cc, gy, gg + 2 * w, xr, yr, mod + 2 * w, ms, n, T, w, UMD_F32);
        GPU->gate_residual_bwd(gc, dgy, dgg + 2 * w, dxr, dyr, dmod_ + 2 * w, ms, n, T, w, UMD_F32);
        same("gate_residual_bwd dy", dgy, gy, nt, 1e-6, 0);
        same("gate_residual_bwd dgate", dgg, gg, nm, 1e-5, 0);
    }
    cleanup();
}

/* residual_layernorm_fwd: the gated residual and the LayerNorm after it. Against the CPU, and
 * with UMDQ_CUDA_FUSED_NORM=1 (one kernel) against the default context's two kernels bit for bit,
 * at widths of each of one to eight register groups, a width that is not a multiple of 4 and rows
 * that are not 16-byte aligned (the scalar path), one past the registers (the two kernels in
 * either context), with and without modulation, and in place (xo = x). Outputs poisoned first. */
static void test_cuda_residual_layernorm(void) {
    need_gpu(UMD_MATH_FP32);
    char err[512] = "";
    umd_ctx *fc = NULL;
    setenv("UMDQ_CUDA_FUSED_NORM", "1", 1);
    int rc = GPU->ctx_new(&fc, 1, err, sizeof err);
    setenv("UMDQ_CUDA_FUSED_NORM", "0", 1);
    T_REQUIRE(rc == 0);
    /* n T w, then the offset in floats of every token tensor (1: rows not 16-byte aligned) */
    const int shapes[][4] = {{3, 5, 16, 0},  {2, 65, 160, 0}, {8, 1, 33, 0},  {2, 9, 384, 0},
                             {1, 7, 512, 0}, {3, 3, 640, 0},  {2, 257, 768, 0}, {1, 5, 896, 0},
                             {1, 3, 1024, 0}, {2, 4, 1100, 0}, {3, 6, 64, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int n = shapes[s][0], T = shapes[s][1], w = shapes[s][2], off = shapes[s][3];
        const int ms = 6 * w;
        const size_t nt = (size_t)n * T * w, nr = (size_t)n * T, nm = (size_t)n * ms;
        float *x = h_randn(nt + off, 60, 1.0f), *y = h_randn(nt + off, 61, 1.0f);
        float *mod = h_randn(nm, 62, 0.3f);
        float *gamma = h_randn((size_t)w, 63, 0.3f), *beta = h_randn((size_t)w, 64, 0.3f);
        for (int i = 0; i < w; i++) gamma[i] += 1.0f;
        float *dx_ = d_f(x, nt + off) + off, *dy_ = d_f(y, nt + off) + off, *dmod_ = d_f(mod, nm);
        float *dgam = d_f(gamma, (size_t)w), *dbet = d_f(beta, (size_t)w);
        x += off;
        y += off;
        for (int usemod = 0; usemod < 2; usemod++) {
            const float *md = usemod ? mod + 3 * w : NULL, *dmd = usemod ? dmod_ + 3 * w : NULL;
            float *xo = h_nan(nt), *out = h_nan(nt), *mean = h_nan(nr), *rstd = h_nan(nr);
            CPU->residual_layernorm_fwd(cc, xo, out, mean, rstd, x, y, mod + 2 * w, ms, gamma, beta,
                                        md, ms, n, T, w, UMD_F32);
            /* outputs of [0] the default context, [1] the fused one, [2] the fused one in place */
            float *d[3][4];
            for (int k = 0; k < 3; k++) {
                d[k][0] = d_f(k == 2 ? x - off : h_nan(nt + off), nt + off) + off;
                d[k][1] = d_f(h_nan(nt + off), nt + off) + off;
                d[k][2] = d_f(h_nan(nr), nr);
                d[k][3] = d_f(h_nan(nr), nr);
                GPU->residual_layernorm_fwd(k ? fc : gc, d[k][0], d[k][1], d[k][2], d[k][3],
                                            k == 2 ? d[k][0] : dx_, dy_, dmod_ + 2 * w, ms, dgam,
                                            dbet, dmd, ms, n, T, w, UMD_F32);
            }
            T_EQ_INT(GPU->status(fc, err, sizeof err), 0);
            same("residual_layernorm_fwd xo", d[1][0], xo, nt, 1e-6, 0);
            same("residual_layernorm_fwd out", d[1][1], out, nt, 1e-5, 0);
            same("residual_layernorm_fwd mean", d[1][2], mean, nr, 1e-5, 0);
            same("residual_layernorm_fwd rstd", d[1][3], rstd, nr, 1e-5, 0);
            for (int k = 1; k < 3; k++) {
                for (int j = 0; j < 4; j++) {
                    size_t len = (j < 2 ? nt : nr) * sizeof(float);
                    const void *a = h_down(d[0][j], len), *b = h_down(d[k][j], len);
                    T_CHECK_MSG(memcmp(a, b, len) == 0,
                                "fused%s output %d differs from the two kernels' (w %d, mod %d)",
                                k == 2 ? " in place" : "", j, w, usemod);
                }
            }
        }
        cleanup();
    }
    GPU->ctx_destroy(&fc);
}

/* ---- bf16 operand tensors ----------------------------------------------------------------------- */

/* The expected bf16 operand output: e[i] = ref[i] rounded to nearest even, for n values from at
 * (the rest of e keeps its poison); the count of ref values that are not finite (not written). */
static size_t expect_bf16(uint16_t *e, const float *ref, size_t at, size_t n) {
    size_t bad = 0;
    for (size_t i = at; i < at + n; i++) {
        if (!isfinite(ref[i])) bad++;
        e[i] = fx_bf16(ref[i]);
    }
    return bad;
}

/* layernorm_fwd of (n, T, w) at strides T w + 7 (x) and T w + 3 (out), every tensor `off`
 * elements past its allocation: [0] the default bf16 context with UMD_F32 (the reference), [1]
 * the same with UMD_OPND (operands fp32 there: the same fp32 bits), [2] the operand context
 * with UMD_F32 (fp32, the same bits), and the operand context with UMD_OPND: out in bf16, the
 * reference rounded; mean and rstd the reference's bits every time; the gaps between sequences
 * stay poisoned. */
static void ln_operand_shape(umd_ctx *dc, umd_ctx *oc, int n, int T, int w, int off, int usemod) {
    const long xs = (long)T * w + 7, os = (long)T * w + 3;
    const int ms = 6 * w;
    const size_t nx = (size_t)n * xs + off, no = (size_t)n * os + off, nr = (size_t)n * T,
                 nm = (size_t)n * ms;
    float *x = h_randn(nx, 40, 2.0f), *gamma = h_randn((size_t)w, 41, 0.3f);
    float *beta = h_randn((size_t)w, 42, 0.3f), *mod = h_randn(nm, 43, 0.3f);
    for (int i = 0; i < w; i++) gamma[i] += 1.0f;
    for (size_t i = 0; i < nx; i++) x[i] += 0.5f; /* rows away from zero mean */
    float *d_x = d_f(x, nx) + off, *d_gam = d_f(gamma, (size_t)w), *d_bet = d_f(beta, (size_t)w);
    float *d_mod = d_f(mod, nm);
    const float *dmd = usemod ? d_mod + 3 * w : NULL;
    float *o32[3], *mean[4], *rstd[4];
    for (int k = 0; k < 4; k++) {
        if (k < 3) o32[k] = d_f(h_nan(no), no);
        mean[k] = d_f(h_nan(nr), nr);
        rstd[k] = d_f(h_nan(nr), nr);
    }
    uint16_t *o16 = d_up(h_nan16(no), no * sizeof(uint16_t));
    GPU->layernorm_fwd(dc, o32[0] + off, mean[0], rstd[0], d_x, d_gam, d_bet, dmd, ms, n, T, w, xs,
                       os, UMD_F32);
    GPU->layernorm_fwd(dc, o32[1] + off, mean[1], rstd[1], d_x, d_gam, d_bet, dmd, ms, n, T, w, xs,
                       os, UMD_OPND);
    GPU->layernorm_fwd(oc, o32[2] + off, mean[2], rstd[2], d_x, d_gam, d_bet, dmd, ms, n, T, w, xs,
                       os, UMD_F32);
    GPU->layernorm_fwd(oc, o16 + off, mean[3], rstd[3], d_x, d_gam, d_bet, dmd, ms, n, T, w, xs, os,
                       UMD_OPND);
    ctx_ok(dc);
    ctx_ok(oc);
    char what[96];
    for (int k = 1; k < 4; k++) {
        if (k < 3)
            for (int b = 0; b < n; b++) {
                snprintf(what, sizeof what, "layernorm_fwd out [%d] (w %d, mod %d, seq %d)", k, w,
                         usemod, b);
                same_bits(what, o32[k] + off + b * os, o32[0] + off + b * os, (size_t)T * w);
            }
        snprintf(what, sizeof what, "layernorm_fwd mean [%d] (w %d, mod %d)", k, w, usemod);
        same_bits(what, mean[k], mean[0], nr);
        snprintf(what, sizeof what, "layernorm_fwd rstd [%d] (w %d, mod %d)", k, w, usemod);
        same_bits(what, rstd[k], rstd[0], nr);
    }
    const float *ref = h_down(o32[0], no * sizeof(float));
    uint16_t *e = h_nan16(no);
    size_t unwritten = 0;
    for (int b = 0; b < n; b++) unwritten += expect_bf16(e, ref, off + b * os, (size_t)T * w);
    T_CHECK_MSG(unwritten == 0, "layernorm_fwd (w %d): %zu reference values not finite", w,
                unwritten);
    snprintf(what, sizeof what, "layernorm_fwd bf16 out (w %d, mod %d, offset %d)", w, usemod, off);
    same_bf16(what, o16, e, no);
}

/* residual_layernorm_fwd of (n, T, w), every token tensor `off` elements past its allocation:
 * the default bf16 context with UMD_F32 (the reference) against the operand context with
 * UMD_OPND, apart and in place (xo = x): xo, mean, rstd the reference's bits, out the
 * reference's out rounded to bf16. */
static void res_ln_operand_shape(umd_ctx *dc, umd_ctx *oc, int n, int T, int w, int off,
                                 int usemod) {
    const int ms = 6 * w;
    const size_t nt = (size_t)n * T * w, nr = (size_t)n * T, nm = (size_t)n * ms;
    float *x = h_randn(nt + off, 60, 1.0f), *y = h_randn(nt + off, 61, 1.0f);
    float *mod = h_randn(nm, 62, 0.3f);
    float *gamma = h_randn((size_t)w, 63, 0.3f), *beta = h_randn((size_t)w, 64, 0.3f);
    for (int i = 0; i < w; i++) gamma[i] += 1.0f;
    float *d_x = d_f(x, nt + off) + off, *d_y = d_f(y, nt + off) + off, *d_mod = d_f(mod, nm);
    float *d_gam = d_f(gamma, (size_t)w), *d_bet = d_f(beta, (size_t)w);
    const float *dmd = usemod ? d_mod + 3 * w : NULL;
    /* [0] the reference, [1] the operand context, [2] the operand context in place */
    float *xo[3], *mean[3], *rstd[3];
    void *out[3];
    for (int k = 0; k < 3; k++) {
        xo[k] = d_f(k == 2 ? x : h_nan(nt + off), nt + off) + off;
        out[k] = k == 0 ? (void *)(d_f(h_nan(nt + off), nt + off) + off)
                        : (void *)((uint16_t *)d_up(h_nan16(nt + off), (nt + off) * 2) + off);
        mean[k] = d_f(h_nan(nr), nr);
        rstd[k] = d_f(h_nan(nr), nr);
        GPU->residual_layernorm_fwd(k ? oc : dc, xo[k], out[k], mean[k], rstd[k],
                                    k == 2 ? xo[k] : d_x, d_y, d_mod + 2 * w, ms, d_gam, d_bet, dmd,
                                    ms, n, T, w, k ? UMD_OPND : UMD_F32);
    }
    ctx_ok(dc);
    ctx_ok(oc);
    const float *ref = h_down(out[0], nt * sizeof(float));
    uint16_t *e = h_nan16(nt);
    T_CHECK_MSG(expect_bf16(e, ref, 0, nt) == 0,
                "residual_layernorm_fwd (w %d): reference values not finite", w);
    char what[96];
    for (int k = 1; k < 3; k++) {
        const char *how = k == 2 ? " in place" : "";
        snprintf(what, sizeof what, "residual_layernorm_fwd%s xo (w %d, mod %d)", how, w, usemod);
        same_bits(what, xo[k], xo[0], nt);
        snprintf(what, sizeof what, "residual_layernorm_fwd%s mean (w %d, mod %d)", how, w, usemod);
        same_bits(what, mean[k], mean[0], nr);
        snprintf(what, sizeof what, "residual_layernorm_fwd%s rstd (w %d, mod %d)", how, w, usemod);
        same_bits(what, rstd[k], rstd[0], nr);
        snprintf(what, sizeof what, "residual_layernorm_fwd%s bf16 out (w %d, mod %d, offset %d)",
                 how, w, usemod, off);
        same_bf16(what, out[k], e, nt);
    }
}

/* layernorm_fwd and residual_layernorm_fwd writing a bf16 operand tensor (UMD_OPND in a bf16
 * context made with UMDQ_CUDA_BF16_OPERANDS=1) against the same op in a default bf16 context,
 * bit for bit (ln_operand_shape, res_ln_operand_shape), at widths of one to eight register
 * groups, past them (the wide-row kernel; the residual's two kernels), widths that are not
 * multiples of 4, 32 or 128, and rows that are not aligned (the scalar paths: bf16 rows at odd
 * strides, and an offset of one element), with and without modulation; once more with
 * UMDQ_CUDA_FUSED_NORM=1 in both contexts (the residual's one kernel). */
static void test_cuda_layernorm_bf16_operands(void) {
    need_gpu(UMD_MATH_BF16);
    /* n T w, then the offset in elements of every tensor (1: rows not aligned) */
    const int shapes[][4] = {{3, 5, 16, 0},   {2, 65, 160, 0}, {8, 1, 33, 0},  {2, 9, 384, 0},
                             {1, 7, 100, 0},  {3, 3, 640, 0},  {2, 5, 768, 0}, {1, 3, 1024, 0},
                             {2, 4, 1100, 0}, {2, 3, 1030, 0}, {3, 6, 64, 1},  {2, 5, 250, 1}};
    for (int fused = 0; fused < 2; fused++) {
        void *ws;
        umd_ctx *dc = ctx_with(UMD_MATH_BF16, 0, fused, NULL, &ws);
        umd_ctx *oc = ctx_with(UMD_MATH_BF16, 1, fused, NULL, &ws);
        T_EQ_INT(GPU->operand_bytes(dc), 4);
        T_EQ_INT(GPU->operand_bytes(oc), 2);
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (int usemod = 0; usemod < 2; usemod++) {
                const int n = shapes[s][0], T = shapes[s][1], w = shapes[s][2], off = shapes[s][3];
                ln_operand_shape(dc, oc, n, T, w, off, usemod);
                cleanup();
                res_ln_operand_shape(dc, oc, n, T, w, off, usemod);
                cleanup();
            }
        ctx_free(&dc, NULL);
        ctx_free(&oc, NULL);
    }
}

/* ---- branch tensors in bf16 ----------------------------------------------------------------- */

/* n values drawn from key and rounded to bf16 on the host, on the device as the bf16 values (*d16)
 * and as their fp32 widening (*d32), each `off` elements past its allocation: one branch tensor
 * stored bf16, and stored fp32 holding the same values. */
static void branch_pair(size_t n, int off, uint32_t key, void **d16, float **d32) {
    uint16_t *h;
    float *x = h_bf16_values(n + off, key, &h);
    *d32 = d_f(x, n + off) + off;
    *d16 = (uint16_t *)d_up(h, (n + off) * sizeof *h) + off;
}

/* The outputs of one residual_layernorm_fwd: xo, mean, rstd, and out's allocation (room for as
 * many floats as xo's: out fp32 or bf16). */
typedef struct {
    float *xo, *mean, *rstd;
    char *out;
} res_ln_outs;

/* gate_residual_fwd, gate_residual_bwd and residual_layernorm_fwd of one (n, T, w), every token
 * tensor `off` elements past its allocation, with y a bf16 branch tensor (UMD_OPND_Y) against
 * the same op on an fp32 y holding its values (UMD_F32), bit for bit. oc[0], oc[1]: bf16 contexts
 * with bf16 operands, made without and with UMDQ_CUDA_FUSED_NORM=1; nc: contexts where the flag
 * means nothing (UMD_OPND_Y on the fp32 y gives the UMD_F32 bits). */
static void gate_bf16_y_shape(umd_ctx *const *oc, umd_ctx *const *nc, int nnc, int n, int T,
                              int w, int off, uint32_t key) {
    const int ms = 6 * w;
    const size_t nt = (size_t)n * T * w, nr = (size_t)n * T, nm = (size_t)n * ms;
    const size_t tb = (nt + off) * sizeof(float);
    void *y16;
    float *y32;
    branch_pair(nt, off, key, &y16, &y32);
    const float *hx = h_randn(nt + off, key + 1, 1.0f);
    float *x = d_f(hx, nt + off) + off;
    float *dout = d_f(h_randn(nt + off, key + 2, 1.0f), nt + off) + off;
    float *mod = d_f(h_randn(nm, key + 3, 0.3f), nm);
    float *gamma = h_randn((size_t)w, key + 4, 0.3f);
    for (int i = 0; i < w; i++) gamma[i] += 1.0f;
    float *d_gam = d_f(gamma, (size_t)w);
    float *d_bet = d_f(h_randn((size_t)w, key + 5, 0.3f), (size_t)w);
    const float *gate = mod + 2 * w;
    /* dgate's poison: NaN in the gate rows only (the rest of each row is not written) */
    float *gg = h_randn(nm, key + 6, 1.0f);
    for (int b = 0; b < n; b++)
        for (int k = 0; k < w; k++) gg[(size_t)b * ms + 2 * w + k] = NAN;
    const void *poison = h_poison(tb);
    float *o[2], *dy[2], *dg[2];
    for (int k = 0; k < 2; k++) {
        o[k] = d_f(poison, nt + off) + off;
        dy[k] = d_f(poison, nt + off) + off;
        dg[k] = d_f(gg, nm);
    }
    char what[160];
    /* the gated residual and its backward: [0] fp32 y, [1] bf16 y (fp32 in the contexts nc) */
    for (int i = -1; i < nnc; i++) {
        umd_ctx *c = i < 0 ? oc[0] : nc[i];
        for (int k = 0; k < 2; k++) {
            GPU->upload(gc, o[k] - off, poison, tb);
            GPU->upload(gc, dy[k] - off, poison, tb);
            GPU->upload(gc, dg[k], gg, nm * sizeof(float));
            const void *y = k && i < 0 ? y16 : (const void *)y32;
            const int type = k ? UMD_OPND_Y : UMD_F32;
            GPU->gate_residual_fwd(c, o[k], x, y, gate, ms, n, T, w, type);
            GPU->gate_residual_bwd(c, dy[k], dg[k] + 2 * w, dout, y, gate, ms, n, T, w, type);
        }
        ctx_ok(c);
        const char *how = i < 0 ? "bf16 y" : "UMD_OPND_Y where y is fp32";
        same_bits_fmt(o[1], o[0], nt, "gate_residual_fwd out, %s (n %d, T %d, w %d, offset %d)",
                      how, n, T, w, off);
        same_bits_fmt(dy[1], dy[0], nt, "gate_residual_bwd dy, %s (n %d, T %d, w %d, offset %d)",
                      how, n, T, w, off);
        same_bits_fmt(dg[1], dg[0], nm, "gate_residual_bwd dgate, %s (n %d, T %d, w %d, offset %d)",
                      how, n, T, w, off);
    }
    /* the gated residual and the LayerNorm: [f][k] in oc[f], fp32 (k 0) or bf16 (k 1) y */
    res_ln_outs r[2][2];
    for (int f = 0; f < 2; f++)
        for (int k = 0; k < 2; k++) {
            r[f][k].xo = d_f(poison, nt + off) + off;
            r[f][k].out = d_up(poison, tb);
            r[f][k].mean = d_f(poison, nr);
            r[f][k].rstd = d_f(poison, nr);
        }
    for (int out_type = UMD_F32; out_type <= UMD_OPND; out_type++)
        for (int usemod = 0; usemod < 2; usemod++)
            for (int inplace = 0; inplace < 2; inplace++) {
                const float *md = usemod ? mod + 3 * w : NULL;
                /* out `off` elements of its type past its allocation */
                const size_t ob = out_type == UMD_OPND ? sizeof(uint16_t) : sizeof(float);
                for (int f = 0; f < 2; f++)
                    for (int k = 0; k < 2; k++) {
                        res_ln_outs *q = &r[f][k];
                        GPU->upload(gc, q->xo - off, inplace ? (const void *)hx : poison, tb);
                        GPU->upload(gc, q->out, poison, tb);
                        GPU->upload(gc, q->mean, poison, nr * sizeof(float));
                        GPU->upload(gc, q->rstd, poison, nr * sizeof(float));
                        GPU->residual_layernorm_fwd(
                            oc[f], q->xo, q->out + off * ob, q->mean, q->rstd,
                            inplace ? q->xo : x, k ? y16 : (const void *)y32, gate, ms, d_gam,
                            d_bet, md, ms, n, T, w, out_type | (k ? UMD_OPND_Y : 0));
                    }
                ctx_ok2(oc[0], oc[1]);
                /* each context's bf16 y against its fp32 y, then the fused bf16 y against the two
                 * kernels' */
                for (int j = 0; j < 3; j++) {
                    const res_ln_outs *a = j < 2 ? &r[j][1] : &r[1][1];
                    const res_ln_outs *b = j < 2 ? &r[j][0] : &r[0][1];
                    snprintf(what, sizeof what, "residual_layernorm_fwd, %s (n %d, T %d, w %d, "
                             "offset %d, out %s, mod %d, in place %d)",
                             j == 0   ? "bf16 y, two kernels"
                             : j == 1 ? "bf16 y, fused"
                                      : "bf16 y, fused against two kernels",
                             n, T, w, off, out_type == UMD_OPND ? "bf16" : "fp32", usemod, inplace);
                    char part[200];
                    snprintf(part, sizeof part, "%s: xo", what);
                    same_bits(part, a->xo, b->xo, nt);
                    snprintf(part, sizeof part, "%s: mean", what);
                    same_bits(part, a->mean, b->mean, nr);
                    snprintf(part, sizeof part, "%s: rstd", what);
                    same_bits(part, a->rstd, b->rstd, nr);
                    snprintf(part, sizeof part, "%s: out", what);
                    if (out_type == UMD_OPND)
                        same_bf16_dev(part, a->out + off * ob, b->out + off * ob, nt);
                    else
                        same_bits(part, (const float *)(a->out + off * ob),
                                  (const float *)(b->out + off * ob), nt);
                }
            }
}

/* gate_residual_fwd, gate_residual_bwd and residual_layernorm_fwd with y a bf16 branch tensor
 * (UMD_OPND_Y in a bf16 context made with UMDQ_CUDA_BF16_OPERANDS=1: proj's and fc2's output where
 * branch_operand says so) against the same op in the same context on an fp32 y holding y's values
 * (UMD_F32), bit for bit (gate_bf16_y_shape): out; dy and dgate (gate rows inside (n, 6w)
 * modulation rows, as the model's); xo, out (fp32, and a bf16 operand with UMD_OPND), mean and
 * rstd, without and with modulation, apart and in place (xo = x), in a context made with
 * UMDQ_CUDA_FUSED_NORM=1 (the one kernel) and without (the two), and the fused results against
 * the two kernels'. Widths of one to eight register groups and past them (the two kernels in
 * either context), widths that are not multiples of 4 and tensors one element past their
 * allocation (the scalar paths: a bf16 y not 8-byte aligned), one-token sequences. Outputs start
 * as NaN (0xffff where bf16). In a default bf16 context and in a TF32 one made with the operands
 * switch, UMD_OPND_Y means nothing: y is fp32 there, with the UMD_F32 bits. */
static void test_cuda_gated_residual_bf16_y(void) {
    need_gpu(UMD_MATH_BF16);
    /* n T w, then the offset in elements of every token tensor (1: rows not aligned) */
    const int shapes[][4] = {{3, 5, 16, 0},  {2, 65, 160, 0}, {8, 1, 33, 0},  {2, 9, 384, 0},
                             {1, 7, 100, 0}, {2, 257, 768, 0}, {1, 3, 1024, 0}, {2, 4, 1100, 0},
                             {3, 6, 64, 1},  {2, 5, 250, 1}};
    void *ws;
    umd_ctx *oc[2], *nc[2];
    for (int f = 0; f < 2; f++) oc[f] = ctx_with(UMD_MATH_BF16, 1, f, NULL, &ws);
    nc[0] = ctx_with(UMD_MATH_BF16, 0, 0, NULL, &ws);
    nc[1] = ctx_with(UMD_MATH_TF32, 1, 0, NULL, &ws);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        gate_bf16_y_shape(oc, nc, 2, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3],
                          1600 + 10 * (uint32_t)s);
        cleanup();
    }
    for (int f = 0; f < 2; f++) ctx_free(&oc[f], NULL);
    for (int i = 0; i < 2; i++) ctx_free(&nc[i], NULL);
}

/* ---- attention ----------------------------------------------------------------------------------- */

/* One attention forward + backward of (n, T, heads, hd) on the GPU context g against the CPU;
 * lse (n, heads, T) is all the two sides keep between them. */
static void attention_shape(umd_ctx *g_ctx, int m, int n, int T, int heads, int hd, uint32_t key) {
    double tol = m == UMD_MATH_FP32 ? 1e-5 : tol_of(m);
    size_t W = (size_t)heads * hd, nq = (size_t)n * T * 3 * W, no = (size_t)n * T * W,
           nl = (size_t)n * heads * T;
    float *qkv = h_randn(nq, key, 1.0f), *out = h_nan(no), *lse = h_nan(nl);
    float *dq = d_f(qkv, nq), *dout_ = d_f(out, no), *dlse = d_f(lse, nl);
    CPU->attention_fwd(cc, out, lse, qkv, n, T, heads, hd, UMD_F32);
    GPU->attention_fwd(g_ctx, dout_, dlse, dq, n, T, heads, hd, UMD_F32);
    char err[256];
    T_REQUIRE(GPU->status(g_ctx, err, sizeof err) == 0 || (printf("  device: %s\n", err), 0));
    same("attention_fwd out", dout_, out, no, tol, m != UMD_MATH_FP32);
    same("attention_fwd lse", dlse, lse, nl, tol, 0);
    float *g = h_randn(no, key + 1, 1.0f), *dg = d_f(g, no), *gq = h_nan(nq), *dgq = d_f(gq, nq);
    CPU->attention_bwd(cc, gq, g, qkv, out, lse, n, T, heads, hd, UMD_F32);
    GPU->attention_bwd(g_ctx, dgq, dg, dq, dout_, dlse, n, T, heads, hd, UMD_F32);
    T_REQUIRE(GPU->status(g_ctx, err, sizeof err) == 0 || (printf("  device: %s\n", err), 0));
    same("attention_bwd dqkv", dgq, gq, nq, tol, m != UMD_MATH_FP32);
}

static void attention(int m) {
    need_gpu(m);
    const int shapes[][4] = {{2, 5, 2, 8}, {3, 65, 3, 64}, {2, 257, 2, 32}, {2, 257, 2, 64},
                             {1, 1025, 2, 64}, {2, 130, 3, 64}, {4, 17, 1, 64}, {1, 384, 2, 64},
                             {1, 400, 1, 64}};
    /* every path the math has: bf16 the mma kernels (head width 64; resident up to T = 384, tiled
     * beyond), then the TF32 fused kernels (widths 32, 64), then every shape on the batched GEMMs;
     * TF32 the last two; fp32 the GEMMs */
    const int modes[] = {UMD_ATTN_MMA, UMD_ATTN_FUSED, UMD_ATTN_GEMM};
    int first = m == UMD_MATH_BF16 ? 0 : m == UMD_MATH_TF32 ? 1 : 2;
    for (int k = first; k < 3; k++) {
        T_REQUIRE(umd_cuda_set_attention(gc, modes[k]) == 0);
        for (int s = 0; s < 9; s++)
            attention_shape(gc, m, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], 60 + s);
        cleanup();
    }
    T_CHECK(umd_cuda_set_attention(gc, 3) == -1); /* no such path */
    T_REQUIRE(umd_cuda_set_attention(gc, UMD_ATTN_MMA) == 0); /* the default */
}

static void test_cuda_attention_fp32(void) { attention(UMD_MATH_FP32); }
static void test_cuda_attention_tf32(void) { attention(UMD_MATH_TF32); }
static void test_cuda_attention_bf16(void) { attention(UMD_MATH_BF16); }

/* Shapes whose (T, T) tiles exceed CUDA_ATTN_WS: the heads run in groups (forward 7 + 1,
 * backward 3 + 3 + 2 on a GEMM context; 2 + 2 + 2 + 2 and one at a time on a fused one, whose
 * tiles are one head's), on a context of its own whose limits ask for that much; head width 16
 * always takes the GEMM path. */
static void test_cuda_attention_head_groups(void) {
    need_gpu(UMD_MATH_TF32);
    static const umd_limits big = {32, 1025, 128, 8, 1024, 256 * 256};
    char err[256];
    umd_ctx *g2 = NULL;
    T_REQUIRE(GPU->ctx_new(&g2, 1, err, sizeof err) == 0);
    size_t b = GPU->workspace_bytes(g2, &big);
    void *ws = GPU->alloc(g2, b);
    T_REQUIRE(ws);
    GPU->set_workspace(g2, ws, b);
    attention_shape(g2, UMD_MATH_TF32, 32, 1025, 8, 16, 70);
    cleanup();
    GPU->release(g2, ws);
    GPU->ctx_destroy(&g2);
}

/* Attention in k contexts cs (qkv passed as types[k]: UMD_OPND reads its bf16 rounding) against
 * the default bf16 context dc on the fp32 qkv, bit for bit: out and lse (where fwd), and dqkv
 * from dc's out and lse, at head width 64 over the resident kernels (T up to 384: a lone row,
 * partial strips, whole tiles and tiles of at most 32 and of more than 32 rows; strips of 32
 * rows whose second 16 are past T, whole or partial) and the tiled ones (385 and past: partial
 * tiles of either kind, 1025), several sequences and heads. Outputs start as NaN. */
static void attention_same_bits(umd_ctx *dc, umd_ctx *const *cs, const int *types,
                                const char *const *hows, int k, int fwd, uint32_t key0) {
    const int Ts[] = {1, 5, 48, 64, 65, 96, 120, 200, 257, 384, 385, 440, 1025}, hd = 64;
    for (int s = 0; s < (int)(sizeof Ts / sizeof *Ts); s++) {
        const int T = Ts[s], n = s % 2 ? 3 : 2, heads = s % 2 ? 2 : 3;
        const size_t W = (size_t)heads * hd, nq = (size_t)n * T * 3 * W, no = (size_t)n * T * W,
                     nl = (size_t)n * heads * T;
        const uint32_t key = key0 + 10 * (uint32_t)s;
        uint16_t *qh;
        float *q = h_bf16_values(nq, key, &qh);
        float *d_q = d_f(q, nq), *d_g = d_f(h_randn(no, key + 1, 1.0f), no);
        const void *d_qh = d_up(qh, nq * sizeof *qh);
        const float *nan_o = h_nan(no), *nan_l = h_nan(nl), *nan_q = h_nan(nq);
        float *out[4], *lse[4], *dq[4]; /* [0] dc's, [1 + i] cs[i]'s */
        T_REQUIRE(k <= 3);
        for (int i = 0; i <= k; i++) {
            out[i] = d_f(nan_o, no);
            lse[i] = d_f(nan_l, nl);
            dq[i] = d_f(nan_q, nq);
        }
        GPU->attention_fwd(dc, out[0], lse[0], d_q, n, T, heads, hd, UMD_F32);
        for (int i = 0; fwd && i < k; i++)
            GPU->attention_fwd(cs[i], out[1 + i], lse[1 + i], types[i] == UMD_OPND ? d_qh : d_q, n,
                               T, heads, hd, types[i]);
        ctx_ok(dc);
        GPU->attention_bwd(dc, dq[0], d_g, d_q, out[0], lse[0], n, T, heads, hd, UMD_F32);
        for (int i = 0; i < k; i++)
            GPU->attention_bwd(cs[i], dq[1 + i], d_g, types[i] == UMD_OPND ? d_qh : d_q, out[0],
                               lse[0], n, T, heads, hd, types[i]);
        ctx_ok(dc);
        for (int i = 0; i < k; i++) {
            ctx_ok(cs[i]);
            if (fwd) {
                same_bits_fmt(out[1 + i], out[0], no, "attention_fwd out, %s (n %d, T %d, heads %d)",
                              hows[i], n, T, heads);
                same_bits_fmt(lse[1 + i], lse[0], nl, "attention_fwd lse, %s (n %d, T %d, heads %d)",
                              hows[i], n, T, heads);
            }
            same_bits_fmt(dq[1 + i], dq[0], nq, "attention_bwd dqkv, %s (n %d, T %d, heads %d)",
                          hows[i], n, T, heads);
        }
        cleanup();
    }
}

/* The limits of the bf16 qkv tests' contexts: up to 3 sequences of 1025 tokens, 3 heads of 64. */
static const umd_limits QKV_LIM = {3, 1025, 192, 3, 1024, 256 * 256};

/* A bf16 context for QKV_LIM with bf16 operands as asked and the switch `var`=1 (none: NULL), on
 * the mma attention. */
static umd_ctx *mma_ctx(int operands, const char *var, void **ws) {
    umd_ctx *c = var ? ctx_with_switch(var, UMD_MATH_BF16, operands, &QKV_LIM, ws)
                     : ctx_with(UMD_MATH_BF16, operands, 0, &QKV_LIM, ws);
    T_REQUIRE(umd_cuda_set_attention(c, UMD_ATTN_MMA) == 0);
    return c;
}

/* attention_fwd and attention_bwd with qkv a bf16 operand tensor (UMD_OPND in a bf16 context made
 * with UMDQ_CUDA_BF16_OPERANDS=1: the mma kernels read it as it is) against a default bf16
 * context on its fp32 widening (the kernels round it on their way in), bit for bit
 * (attention_same_bits). The operand context on the fp32 qkv (UMD_F32) gives the same bits too. */
static void test_cuda_attention_bf16_qkv(void) {
    need_gpu(UMD_MATH_BF16);
    void *ws[2];
    umd_ctx *dc = mma_ctx(0, NULL, &ws[0]), *oc = mma_ctx(1, NULL, &ws[1]);
    T_EQ_INT(GPU->attention_operand(oc, 64), 1);
    umd_ctx *const cs[] = {oc, oc};
    const int types[] = {UMD_OPND, UMD_F32};
    const char *const hows[] = {"bf16 qkv", "fp32 qkv in the operand context"};
    attention_same_bits(dc, cs, types, hows, 2, 1, 1100);
    ctx_free(&dc, ws[0]);
    ctx_free(&oc, ws[1]);
}

/* attention_same_bits of contexts made with the switch var=1, on an fp32 qkv and, with bf16
 * operands too, on a bf16 one (fwd: the forwards compared too), against the default context. */
static void attention_switch_same_bits(const char *var, const char *how, int fwd, uint32_t key) {
    void *ws[3];
    umd_ctx *dc = mma_ctx(0, NULL, &ws[0]), *nc = mma_ctx(0, var, &ws[1]), *oc = mma_ctx(1, var, &ws[2]);
    umd_ctx *const cs[] = {nc, oc};
    const int types[] = {UMD_F32, UMD_OPND};
    char bf[160];
    snprintf(bf, sizeof bf, "%s on a bf16 qkv", how);
    const char *const hows[] = {how, bf};
    attention_same_bits(dc, cs, types, hows, 2, fwd, key);
    ctx_free(&dc, ws[0]);
    ctx_free(&nc, ws[1]);
    ctx_free(&oc, ws[2]);
}

/* The mma backward with UMDQ_CUDA_ATTN_KV32=1 (its dK dV kernels step 32 queries at a time, in
 * the register budget of 3 blocks a multiprocessor) gives the default's dqkv bit for bit
 * (attention_same_bits), on an fp32 qkv and, in a context with bf16 operands too, on a bf16 one;
 * its forward is the default's kernel. The resident 32-query kernel runs at the lengths where it
 * fits a third block (up to about 288 tokens: T = 5 .. 257 here), the tiled one past 384. */
static void test_cuda_attention_kv32(void) {
    need_gpu(UMD_MATH_BF16);
    attention_switch_same_bits("UMDQ_CUDA_ATTN_KV32", "dK dV over 32 queries", 0, 1300);
}

/* The resident mma forward with UMDQ_CUDA_ATTN_FWD32=1 (each warp's strip two tiles of 16 query
 * rows, each K and V fragment read once for both) gives the default's out and lse bit for bit
 * (attention_same_bits; the tiled kernels past 384 tokens are the default's), on an fp32 qkv and
 * on a bf16 one. */
static void test_cuda_attention_fwd32(void) {
    need_gpu(UMD_MATH_BF16);
    attention_switch_same_bits("UMDQ_CUDA_ATTN_FWD32", "forward over 32 rows a warp", 1, 1400);
}

/* The first row of the strips the resident kernels (up to 384 tokens) share among their warps
 * with UMDQ_CUDA_ATTN_SPLIT=1 (res_item.h, whose rule test_cuda_partition checks); T where none. */
static int split_first_row(int T) {
    return T <= 384 ? res_whole_rows(T, res_shared(T, 1)) : T;
}

/* A tensor of the split context (d_s) against the default's (d_d), n values whose token index is
 * (i / per) % T: the rows before split_first_row(T) bit for bit, the others within tol of the
 * largest |value| of the default's (written: NaN stays NaN and fails). */
static void split_rows_same(const char *what, const float *d_s, const float *d_d, size_t n,
                            size_t per, int T, double tol) {
    const float *a = h_down(d_s, n * sizeof(float)), *b = h_down(d_d, n * sizeof(float));
    const int first = split_first_row(T);
    double mx = 0, worst = 0;
    size_t differ = 0, shared_vals = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(b[i]));
    for (size_t i = 0; i < n; i++) {
        if ((int)(i / per % (size_t)T) < first) {
            differ += memcmp(&a[i], &b[i], sizeof *a) != 0;
        } else {
            shared_vals++;
            const double e = isfinite(a[i]) ? fabs((double)a[i] - b[i]) / (mx + 1e-30) : INFINITY;
            worst = fmax(worst, e);
        }
    }
    printf("  split against the default, %s: %zu of %zu values in shared strips, worst %.3g of "
           "the largest; %zu other values differ\n", what, shared_vals, n, worst, differ);
    T_CHECK_MSG(differ == 0, "%s: %zu values outside the shared strips differ", what, differ);
    T_CHECK_MSG(worst <= tol, "%s: a shared strip's value %.3g of the largest off (> %.0e)", what,
                worst, tol);
}

/* UMDQ_CUDA_ATTN_SPLIT=1 (the resident mma kernels' last strips shared among their 4 warps, each
 * taking the products over a part of the other operand's rows, the parts combined in a fixed
 * order: the backward's sums added, the forward's softmax states merged):
 *   - against the CPU (attention_shape: forward and backward, bf16 tolerance, outputs NaN first),
 *     with the 64- and the 32-query dK dV step, at lengths with 1 shared strip (65, 129, 200,
 *     257: the model's 1 + L), 2 (81, 96, 337), none (100: 4k + 3; 48: 4 strips or fewer; 384)
 *     and tiled (440);
 *   - against the default context (no split): out, lse, and dqkv from the same out and lse, the
 *     rows of the strips not shared bit for bit, every row bit for bit where no strip is shared;
 *     the shared strips' rows of lse and dqkv within 1e-5 of the largest value (fp32 sums added
 *     in another order: the backward's P and dS are the same values either way, from lse), of
 *     out within 5e-3 (each part rounds its P to bf16 against the running max of its own keys,
 *     not of the keys before them: P rounded otherwise, by up to 2^-8 of each term; about 1e-3
 *     of the largest |out| on random inputs);
 *   - the 32-query step and a bf16 qkv (in a context with bf16 operands) give the split's bits,
 *     forward and backward (attention_same_bits, the split context the reference). */
static void test_cuda_attention_split(void) {
    need_gpu(UMD_MATH_BF16);
    void *ws[4];
    setenv("UMDQ_CUDA_ATTN_KV32", "1", 1); /* ctx_with clears it after */
    umd_ctx *skv = mma_ctx(0, "UMDQ_CUDA_ATTN_SPLIT", &ws[0]);
    umd_ctx *sc = mma_ctx(0, "UMDQ_CUDA_ATTN_SPLIT", &ws[1]), *dc = mma_ctx(0, NULL, &ws[2]);
    umd_ctx *so = mma_ctx(1, "UMDQ_CUDA_ATTN_SPLIT", &ws[3]);
    static const int shapes[][3] = {{2, 65, 3},  {3, 129, 2}, {2, 200, 2}, {2, 257, 3},
                                    {3, 81, 2},  {2, 96, 3},  {1, 337, 2}, {2, 100, 2},
                                    {3, 48, 2},  {1, 384, 2}, {1, 440, 1}};
    const int nshapes = (int)(sizeof shapes / sizeof *shapes), hd = 64;
    for (int s = 0; s < nshapes; s++) {
        attention_shape(sc, UMD_MATH_BF16, shapes[s][0], shapes[s][1], shapes[s][2], hd, 4100 + s);
        attention_shape(skv, UMD_MATH_BF16, shapes[s][0], shapes[s][1], shapes[s][2], hd, 4150 + s);
        cleanup();
    }
    for (int s = 0; s < nshapes; s++) {
        const int n = shapes[s][0], T = shapes[s][1], heads = shapes[s][2];
        const size_t W = (size_t)heads * hd, nq = (size_t)n * T * 3 * W, no = (size_t)n * T * W,
                     nl = (size_t)n * heads * T;
        float *d_q = d_f(h_randn(nq, 4200 + 10 * (uint32_t)s, 1.0f), nq);
        float *d_g = d_f(h_randn(no, 4201 + 10 * (uint32_t)s, 1.0f), no);
        float *out = d_f(h_nan(no), no), *lse = d_f(h_nan(nl), nl);
        float *out_s = d_f(h_nan(no), no), *lse_s = d_f(h_nan(nl), nl);
        float *dq_d = d_f(h_nan(nq), nq), *dq_s = d_f(h_nan(nq), nq);
        GPU->attention_fwd(dc, out, lse, d_q, n, T, heads, hd, UMD_F32);
        GPU->attention_fwd(sc, out_s, lse_s, d_q, n, T, heads, hd, UMD_F32);
        GPU->attention_bwd(dc, dq_d, d_g, d_q, out, lse, n, T, heads, hd, UMD_F32);
        GPU->attention_bwd(sc, dq_s, d_g, d_q, out, lse, n, T, heads, hd, UMD_F32);
        ctx_ok(dc);
        ctx_ok(sc);
        char what[96];
        snprintf(what, sizeof what, "n %d T %d heads %d: out", n, T, heads);
        split_rows_same(what, out_s, out, no, W, T, 5e-3);
        snprintf(what, sizeof what, "n %d T %d heads %d: lse", n, T, heads);
        split_rows_same(what, lse_s, lse, nl, 1, T, 1e-5);
        snprintf(what, sizeof what, "n %d T %d heads %d: dqkv", n, T, heads);
        split_rows_same(what, dq_s, dq_d, nq, 3 * W, T, 1e-5);
        cleanup();
    }
    umd_ctx *const cs[] = {skv, so};
    const int types[] = {UMD_F32, UMD_OPND};
    const char *const hows[] = {"last strips shared, dK dV over 32 queries",
                                "last strips shared, on a bf16 qkv"};
    attention_same_bits(sc, cs, types, hows, 2, 1, 4300);
    ctx_free(&skv, ws[0]);
    ctx_free(&sc, ws[1]);
    ctx_free(&dc, ws[2]);
    ctx_free(&so, ws[3]);
}

/* A path of the attention ops that reads a tensor of theirs only in fp32 (the GEMM or fused mode,
 * a head width other than 64 on the mma kernels), asked for it in bf16: the op and the mode. */
typedef struct {
    int mode, hd, bwd;
    const char *op, *mode_name;
} attn_refusal;

/* A bf16 context with bf16 operands for lim, on the refusal's attention mode. */
static umd_ctx *refusal_ctx(const attn_refusal *k, const umd_limits *lim, void **ws) {
    umd_ctx *c = ctx_with(UMD_MATH_BF16, 1, 0, lim, ws);
    T_REQUIRE(umd_cuda_set_attention(c, k->mode) == 0);
    return c;
}

/* The context failed the refused call, naming the op, `tensor` (what the message calls the bf16
 * tensor), the head width and the mode; `what` names it in the log. */
static void refusal_said(umd_ctx *c, const attn_refusal *k, const char *what, const char *tensor) {
    char err[512] = "", width[32];
    int rc = GPU->status(c, err, sizeof err);
    printf("  %s with a %s (%s, head width %d): %s\n", k->op, what, k->mode_name, k->hd, err);
    T_CHECK_MSG(rc != 0, "%s took a %s on a path that reads it in fp32", k->op, what);
    T_CONTAINS(err, k->op);
    T_CONTAINS(err, tensor);
    snprintf(width, sizeof width, "head width %d", k->hd);
    T_CONTAINS(err, width);
    T_CONTAINS(err, k->mode_name);
}

/* attention_operand is 1 exactly where the mma kernels take qkv as a bf16 operand: a bf16 context
 * made with UMDQ_CUDA_BF16_OPERANDS=1, attention mode mma, head width 64; 0 at other widths, in a
 * bf16 context without the switch, in fp32 and TF32 contexts made with it, and after
 * umd_cuda_set_attention to gemm or fused (1 again back on mma). A bf16 qkv that meets the GEMM
 * or the fused path (the mode switched, or a head width the mma kernels do not take) fails the
 * context, naming the op, the head width and the mode. */
static void test_cuda_attention_operand(void) {
    need_gpu(UMD_MATH_BF16);
    void *ws;
    umd_ctx *on = ctx_with(UMD_MATH_BF16, 1, 0, NULL, &ws);
    umd_ctx *off = ctx_with(UMD_MATH_BF16, 0, 0, NULL, &ws);
    T_REQUIRE(umd_cuda_set_attention(on, UMD_ATTN_MMA) == 0);
    T_REQUIRE(umd_cuda_set_attention(off, UMD_ATTN_MMA) == 0);
    T_EQ_INT(GPU->attention_operand(on, 64), 1);
    const int widths[] = {8, 16, 32, 80, 128};
    for (int i = 0; i < 5; i++) T_EQ_INT(GPU->attention_operand(on, widths[i]), 0);
    T_EQ_INT(GPU->attention_operand(off, 64), 0);
    T_REQUIRE(umd_cuda_set_attention(on, UMD_ATTN_GEMM) == 0);
    T_EQ_INT(GPU->attention_operand(on, 64), 0);
    T_REQUIRE(umd_cuda_set_attention(on, UMD_ATTN_FUSED) == 0);
    T_EQ_INT(GPU->attention_operand(on, 64), 0);
    T_REQUIRE(umd_cuda_set_attention(on, UMD_ATTN_MMA) == 0);
    T_EQ_INT(GPU->attention_operand(on, 64), 1);
    ctx_free(&on, NULL);
    ctx_free(&off, NULL);
    const int maths[] = {UMD_MATH_FP32, UMD_MATH_TF32};
    for (int i = 0; i < 2; i++) {
        umd_ctx *c = ctx_with(maths[i], 1, 0, NULL, &ws);
        T_REQUIRE(umd_cuda_set_attention(c, UMD_ATTN_MMA) == 0);
        T_EQ_INT(umd_ops_cuda(maths[i])->attention_operand(c, 64), 0);
        ctx_free(&c, NULL);
    }
    static const umd_limits lim = {2, 16, 160, 2, 16, 4096};
    static const attn_refusal cases[] = {
        {UMD_ATTN_GEMM, 64, 0, "attention_fwd", "attention mode gemm"},
        {UMD_ATTN_FUSED, 64, 1, "attention_bwd", "attention mode fused"},
        {UMD_ATTN_MMA, 32, 0, "attention_fwd", "attention mode mma"},
        {UMD_ATTN_MMA, 80, 1, "attention_bwd", "attention mode mma"}};
    for (int i = 0; i < 4; i++) {
        umd_ctx *c = refusal_ctx(&cases[i], &lim, &ws);
        const int n = 2, T = 9, heads = 2, hd = cases[i].hd;
        const size_t nq = (size_t)n * T * 3 * heads * hd, no = (size_t)n * T * heads * hd,
                     nl = (size_t)n * heads * T;
        uint16_t *qh;
        h_bf16_values(nq, 1200 + (uint32_t)i, &qh);
        const void *d_qh = d_up(qh, nq * sizeof *qh);
        float *out = d_f(h_nan(no), no), *lse = d_f(h_nan(nl), nl), *dq = d_f(h_nan(nq), nq);
        float *g = d_f(h_randn(no, 1210 + (uint32_t)i, 1.0f), no);
        if (cases[i].bwd) GPU->attention_bwd(c, dq, g, d_qh, out, lse, n, T, heads, hd, UMD_OPND);
        else GPU->attention_fwd(c, out, lse, d_qh, n, T, heads, hd, UMD_OPND);
        refusal_said(c, &cases[i], "bf16 qkv", "bf16 operand");
        cleanup();
        ctx_free(&c, ws);
    }
}

/* attention_fwd writing out as a bf16 branch tensor (UMD_OPND | UMD_OPND_O: the mma kernels'
 * epilogue rounds it) against the same context's forward into an fp32 out, rounded on the host,
 * bit for bit (same_rounded), lse the same bits; and attention_bwd from that bf16 out against the
 * backward from an fp32 out holding its values, bit for bit (D = rowsum(dO O) reads the rounded
 * values). qkv a bf16 operand and (UMD_OPND_O alone) fp32 holding the same values: the same
 * bits. In bf16 contexts with bf16 operands, the default kernels and those made with
 * UMDQ_CUDA_ATTN_KV32=1 and with UMDQ_CUDA_ATTN_FWD32=1, whose bf16 out and dqkv are also the
 * default's bits; head width 64 at T of one row, partial and whole strips and tiles, the longest
 * resident sequence (384) and tiled ones (385, 1025). Outputs start as NaN (0xffff where bf16). */
static void test_cuda_attention_bf16_out(void) {
    need_gpu(UMD_MATH_BF16);
    void *ws[3];
    umd_ctx *cs[3] = {mma_ctx(1, NULL, &ws[0]), mma_ctx(1, "UMDQ_CUDA_ATTN_KV32", &ws[1]),
                      mma_ctx(1, "UMDQ_CUDA_ATTN_FWD32", &ws[2])};
    const char *hows[] = {"", ", dK dV over 32 queries", ", forward over 32 rows a warp"};
    const int Ts[] = {1, 17, 48, 65, 257, 384, 385, 1025}, hd = 64;
    for (int s = 0; s < (int)(sizeof Ts / sizeof *Ts); s++) {
        const int T = Ts[s], n = s % 2 ? 3 : 2, heads = s % 2 ? 2 : 3;
        const size_t W = (size_t)heads * hd, nq = (size_t)n * T * 3 * W, no = (size_t)n * T * W,
                     nl = (size_t)n * heads * T;
        const uint32_t key = 1900 + 10 * (uint32_t)s;
        void *d_qh;
        float *d_q;
        branch_pair(nq, 0, key, &d_qh, &d_q);
        float *d_g = d_f(h_randn(no, key + 1, 1.0f), no);
        const void *poison = h_poison(nq * sizeof(float));
        void *o16[3], *dq16[3];
        for (int i = 0; i < 3; i++) {
            umd_ctx *c = cs[i];
            float *o32 = d_up(poison, no * sizeof(float)), *l32 = d_up(poison, nl * sizeof(float));
            void *o16f = d_up(poison, no * sizeof(uint16_t));
            float *l16 = d_up(poison, nl * sizeof(float)), *l16f = d_up(poison, nl * sizeof(float));
            o16[i] = d_up(poison, no * sizeof(uint16_t));
            GPU->attention_fwd(c, o32, l32, d_qh, n, T, heads, hd, UMD_OPND);
            GPU->attention_fwd(c, o16[i], l16, d_qh, n, T, heads, hd, UMD_OPND | UMD_OPND_O);
            GPU->attention_fwd(c, o16f, l16f, d_q, n, T, heads, hd, UMD_OPND_O);
            ctx_ok(c);
            char what[160];
            snprintf(what, sizeof what, "attention_fwd bf16 out%s (n %d, T %d, heads %d)", hows[i],
                     n, T, heads);
            same_rounded(what, o16[i], o32, no);
            same_bits_fmt(l16, l32, nl, "attention_fwd lse, bf16 out%s (n %d, T %d, heads %d)",
                          hows[i], n, T, heads);
            snprintf(what, sizeof what, "attention_fwd bf16 out, fp32 qkv%s (n %d, T %d, heads %d)",
                     hows[i], n, T, heads);
            same_rounded(what, o16f, o32, no);
            same_bits_fmt(l16f, l32, nl, "attention_fwd lse, bf16 out, fp32 qkv%s (n %d, T %d, "
                          "heads %d)", hows[i], n, T, heads);
            /* the backward from the bf16 out, and from an fp32 out holding its values */
            float *ow = d_widened(o16[i], no), *dq32 = d_up(poison, nq * sizeof(float));
            float *dqf = d_up(poison, nq * sizeof(float));
            dq16[i] = d_up(poison, nq * sizeof(float));
            GPU->attention_bwd(c, dq32, d_g, d_qh, ow, l32, n, T, heads, hd, UMD_OPND);
            GPU->attention_bwd(c, dq16[i], d_g, d_qh, o16[i], l32, n, T, heads, hd,
                               UMD_OPND | UMD_OPND_O);
            GPU->attention_bwd(c, dqf, d_g, d_q, o16[i], l32, n, T, heads, hd, UMD_OPND_O);
            ctx_ok(c);
            same_bits_fmt(dq16[i], dq32, nq, "attention_bwd dqkv, bf16 out%s (n %d, T %d, "
                          "heads %d)", hows[i], n, T, heads);
            same_bits_fmt(dqf, dq32, nq, "attention_bwd dqkv, bf16 out, fp32 qkv%s (n %d, T %d, "
                          "heads %d)", hows[i], n, T, heads);
            if (i > 0) {
                snprintf(what, sizeof what, "attention_fwd bf16 out%s against the default kernels "
                         "(n %d, T %d, heads %d)", hows[i], n, T, heads);
                same_bf16_dev(what, o16[i], o16[0], no);
                same_bits_fmt(dq16[i], dq16[0], nq, "attention_bwd dqkv, bf16 out%s against the "
                              "default kernels (n %d, T %d, heads %d)", hows[i], n, T, heads);
            }
        }
        cleanup();
    }
    for (int i = 0; i < 3; i++) ctx_free(&cs[i], ws[i]);
}

/* Attention with out a bf16 branch tensor (UMD_OPND_O, qkv fp32) where the mma kernels do not run
 * in a bf16 context with bf16 operands (attention mode gemm or fused, head widths 32 and 80):
 * attention_fwd and attention_bwd fail the context, naming the op, the bf16 branch tensor, the
 * head width and the mode, and write nothing (out, lse, dqkv as they were). Where the operands are
 * fp32 (a default bf16 context on the mma kernels, a TF32 context made with the operands switch on
 * the GEMMs) UMD_OPND_O means nothing: out, lse and dqkv are the UMD_F32 bits. */
static void test_cuda_attention_bf16_out_refused(void) {
    need_gpu(UMD_MATH_BF16);
    static const umd_limits lim = {2, 16, 160, 2, 16, 4096};
    void *ws;
    static const attn_refusal cases[] = {
        {UMD_ATTN_GEMM, 64, 0, "attention_fwd", "attention mode gemm"},
        {UMD_ATTN_GEMM, 64, 1, "attention_bwd", "attention mode gemm"},
        {UMD_ATTN_FUSED, 64, 0, "attention_fwd", "attention mode fused"},
        {UMD_ATTN_FUSED, 32, 1, "attention_bwd", "attention mode fused"},
        {UMD_ATTN_MMA, 32, 0, "attention_fwd", "attention mode mma"},
        {UMD_ATTN_MMA, 80, 1, "attention_bwd", "attention mode mma"}};
    for (int i = 0; i < 6; i++) {
        umd_ctx *c = refusal_ctx(&cases[i], &lim, &ws);
        const int n = 2, T = 9, heads = 2, hd = cases[i].hd;
        const size_t nq = (size_t)n * T * 3 * heads * hd, no = (size_t)n * T * heads * hd,
                     nl = (size_t)n * heads * T;
        const uint32_t key = 1990 + 5 * (uint32_t)i;
        float *q = d_f(h_randn(nq, key, 1.0f), nq), *g = d_f(h_randn(no, key + 1, 1.0f), no);
        const float *hl = h_randn(nl, key + 2, 1.0f), *hd_q = h_randn(nq, key + 3, 1.0f);
        float *lse = d_f(hl, nl), *lse0 = d_f(hl, nl), *dq = d_f(hd_q, nq), *dq0 = d_f(hd_q, nq);
        uint16_t *oh;
        h_bf16_values(no, key + 4, &oh);
        const uint16_t *o0 = cases[i].bwd ? oh : h_nan16(no);
        void *out = d_up(o0, no * sizeof *o0);
        if (cases[i].bwd) GPU->attention_bwd(c, dq, g, q, out, lse, n, T, heads, hd, UMD_OPND_O);
        else GPU->attention_fwd(c, out, lse, q, n, T, heads, hd, UMD_OPND_O);
        refusal_said(c, &cases[i], "bf16 out", "bf16 branch tensor");
        same_bf16("attention out left alone", out, o0, no);
        same_bits("attention lse left alone", lse, lse0, nl);
        same_bits("attention dqkv left alone", dq, dq0, nq);
        cleanup();
        ctx_free(&c, ws);
    }
    for (int i = 0; i < 2; i++) {
        const int m = i ? UMD_MATH_TF32 : UMD_MATH_BF16;
        umd_ctx *c = ctx_with(m, i, 0, &lim, &ws);
        T_REQUIRE(umd_cuda_set_attention(c, i ? UMD_ATTN_GEMM : UMD_ATTN_MMA) == 0);
        const int n = 2, T = 9, heads = 2, hd = 64;
        const size_t nq = (size_t)n * T * 3 * heads * hd, no = (size_t)n * T * heads * hd,
                     nl = (size_t)n * heads * T;
        float *q = d_f(h_randn(nq, 1985, 1.0f), nq), *g = d_f(h_randn(no, 1986, 1.0f), no);
        float *out[2], *lse[2], *dq[2];
        for (int k = 0; k < 2; k++) {
            out[k] = d_f(h_nan(no), no);
            lse[k] = d_f(h_nan(nl), nl);
            dq[k] = d_f(h_nan(nq), nq);
            const int type = k ? UMD_OPND | UMD_OPND_O : UMD_F32;
            GPU->attention_fwd(c, out[k], lse[k], q, n, T, heads, hd, type);
            GPU->attention_bwd(c, dq[k], g, q, out[k], lse[k], n, T, heads, hd, type);
        }
        ctx_ok(c);
        const char *name =
            i ? "a TF32 context with the operands switch" : "the default bf16 context";
        same_bits_fmt(out[1], out[0], no, "attention_fwd out, UMD_OPND_O in %s", name);
        same_bits_fmt(lse[1], lse[0], nl, "attention_fwd lse, UMD_OPND_O in %s", name);
        same_bits_fmt(dq[1], dq[0], nq, "attention_bwd dqkv, UMD_OPND_O in %s", name);
        cleanup();
        ctx_free(&c, ws);
    }
}

/* branch_operand is 1 exactly in a bf16 context made with UMDQ_CUDA_BF16_OPERANDS=1 and
 * UMDQ_CUDA_BF16_BRANCH=1; 0 with either alone, with neither, and in fp32 and TF32 contexts made
 * with both (where the ops take every branch tensor as fp32: the tests above). mlp_scratch asks
 * M F floats of tmp in each. */
static int ask_branch(const umd_ops *o, const umd_ctx *c) { return o->branch_operand(c); }

static void branch_more(const umd_ops *o, umd_ctx *c) {
    T_EQ_INT(o->hidden_operand(c), 0);
    T_CHECK(o->mlp_scratch(c, 300, 256, 64, UMD_OPND | UMD_OPND_Y) == (size_t)300 * 256);
}

static void test_cuda_branch_operand(void) {
    need_gpu(UMD_MATH_BF16);
    switch_question("UMDQ_CUDA_BF16_BRANCH", "branch_operand", ask_branch, branch_more);
}

/* The count variable var set to each of vals[0..n) in turn while a context is made: the first
 * nbad refused (UMDQ_EINVAL, var named), the others taken. */
static void count_var_values(const umd_ops *o, const char *var, const char *const *vals, int n,
                             int nbad) {
    char err[512];
    for (int i = 0; i < n; i++) {
        umd_ctx *c = NULL;
        setenv(var, vals[i], 1);
        const int rc = o->ctx_new(&c, 1, err, sizeof err);
        unsetenv(var);
        if (i < nbad) {
            T_EQ_INT(rc, UMDQ_EINVAL);
            T_CONTAINS(err, var);
        } else {
            T_CHECK_MSG(rc != UMDQ_EINVAL, "%s=%s refused: %s", var, vals[i], err);
        }
        if (c) o->ctx_destroy(&c);
    }
}

/* A switch variable set to anything but 1/0 (on/off, true/false, yes/no, any case) makes ctx_new
 * refuse, naming the variable, before it looks for a device (so this runs without one where the
 * CUDA backend is built); the words it takes pass that check. */
static void test_cuda_switch_values(void) {
    const umd_ops *o = umd_ops_cuda(UMD_MATH_BF16);
    if (!o) T_SKIP("this build has no CUDA backend");
    char err[512];
    umd_ctx *c = NULL;
    setenv("UMDQ_CUDA_BF16_BIAS", "maybe", 1);
    int rc = o->ctx_new(&c, 1, err, sizeof err);
    setenv("UMDQ_CUDA_BF16_BIAS", "0", 1);
    printf("  %s\n", err);
    T_EQ_INT(rc, UMDQ_EINVAL);
    T_CHECK(c == NULL);
    T_CONTAINS(err, "UMDQ_CUDA_BF16_BIAS=\"maybe\"");
    static const char *const words[] = {"on", "OFF", "True", "false", "yes", "No", "1", "0"};
    for (int i = 0; i < 8; i++) {
        setenv("UMDQ_CUDA_GRAPH", words[i], 1);
        rc = o->ctx_new(&c, 1, err, sizeof err);
        setenv("UMDQ_CUDA_GRAPH", "0", 1);
        T_CHECK_MSG(rc != UMDQ_EINVAL, "UMDQ_CUDA_GRAPH=%s refused: %s", words[i], err);
        if (c) o->ctx_destroy(&c);
    }
    /* the attention backward's dQ from a stored dS */
    setenv("UMDQ_CUDA_ATTN_DS", "often", 1);
    rc = o->ctx_new(&c, 1, err, sizeof err);
    setenv("UMDQ_CUDA_ATTN_DS", "0", 1);
    T_EQ_INT(rc, UMDQ_EINVAL);
    T_CONTAINS(err, "UMDQ_CUDA_ATTN_DS=\"often\"");
    /* and the longest sequence that takes it: a count of tokens from 1 */
    static const char *const lens[] = {"0", "x", "12a", "-5", "1", "384"};
    count_var_values(o, "UMDQ_CUDA_ATTN_DS_MAX_T", lens, 6, 4);
    /* the tuner's switch, and its tests' candidate: a count */
    setenv("UMDQ_CUDA_GEMM_TUNE", "sometimes", 1);
    rc = o->ctx_new(&c, 1, err, sizeof err);
    setenv("UMDQ_CUDA_GEMM_TUNE", "0", 1);
    T_EQ_INT(rc, UMDQ_EINVAL);
    T_CONTAINS(err, "UMDQ_CUDA_GEMM_TUNE=\"sometimes\"");
    static const char *const takes[] = {"x", "-1", "2a", "3", "0"};
    count_var_values(o, "UMDQ_CUDA_GEMM_TUNE_TAKE", takes, 5, 3);
}

/* ---- gradient tensors in bf16 ---------------------------------------------------------------- */

/* A bf16 context with bf16 operands for lim (NULL: no workspace), made with
 * UMDQ_CUDA_BF16_BRANCH=1 and UMDQ_CUDA_BF16_GRAD=1, and with the switches vars (NULL-terminated;
 * NULL: none) =1 as well: a context whose grad_operand is 1 (checked). ctx_with clears every
 * switch once the context is made. */
static umd_ctx *grad_ctx(const char *const *vars, const umd_limits *lim, void **ws) {
    setenv("UMDQ_CUDA_BF16_BRANCH", "1", 1);
    setenv("UMDQ_CUDA_BF16_GRAD", "1", 1);
    for (int i = 0; vars && vars[i]; i++) setenv(vars[i], "1", 1);
    umd_ctx *c = ctx_with(UMD_MATH_BF16, 1, 0, lim, ws);
    T_REQUIRE(umd_ops_cuda(UMD_MATH_BF16)->grad_operand(c) == 1);
    return c;
}

/* bf16 values 0xffff (NaN) after a bf16 output's n values: the op must leave them so. */
#define GUARD16 64

/* A bf16 tensor of n values on the device, its values from init (NULL: 0xffff, NaN: an output the
 * op must write), and GUARD16 values 0xffff after them (guard_intact). */
static void *d_bf16_guarded(const uint16_t *init, size_t n) {
    uint16_t *h = hkeep(malloc((n + GUARD16) * sizeof *h));
    for (size_t i = 0; i < n + GUARD16; i++) h[i] = init && i < n ? init[i] : 0xffffu;
    return d_up(h, (n + GUARD16) * sizeof *h);
}

/* The GUARD16 values after the n bf16 values at d still 0xffff: nothing was written past the
 * tensor (an offset counted in bytes where it counts elements would show here). */
static void guard_intact(const char *what, const void *d, size_t n) {
    gpu_ok();
    uint16_t g[GUARD16];
    GPU->download(gc, g, (const uint16_t *)d + n, sizeof g);
    int bad = 0;
    for (int i = 0; i < GUARD16; i++) bad += g[i] != 0xffffu;
    T_CHECK_MSG(bad == 0, "%s: %d of the %d bf16 values after the tensor were written", what, bad,
                GUARD16);
}

/* A bf16 dx (UMD_GRAD_X) at d against the fp32 dx at ref (device) that the same call wrote with
 * an fp32 dx: within one bf16 step of ref rounded (within_steps: cuBLAS may take another algorithm
 * for a bf16 C, whose fp32 sums then differ in their last bits, and where they straddle a
 * rounding boundary the value is the neighbour), no value left unwritten, none past the n. */
static void dx16_near(const char *what, const void *d, const float *ref, size_t n) {
    within_steps(what, d, ref, n, 1);
    guard_intact(what, d, n);
}

/* grad_operand is 1 exactly in a bf16 context made with UMDQ_CUDA_BF16_OPERANDS=1,
 * UMDQ_CUDA_BF16_BRANCH=1 and UMDQ_CUDA_BF16_GRAD=1 (umd_cuda_describe says "bf16 gradients on"
 * there, "off" elsewhere); 0 without the switch, without the branch tensors (it needs them),
 * without the operands, and in fp32 and TF32 contexts made with all three. Where it says 0,
 * UMD_GRAD and UMD_GRAD_X mean nothing: in a bf16 context with bf16 operands and branch tensors
 * but not the switch, gate_residual_bwd, linear_bwd, mlp_bwd, attention_bwd (the mma kernels,
 * bf16 qkv) and layernorm_bwd with them give the bits they give without, every gradient fp32. */
static void test_cuda_grad_operand(void) {
    need_gpu(UMD_MATH_BF16);
    static const struct {
        int math, operands, branch, grad, want;
    } cases[] = {{UMD_MATH_BF16, 1, 1, 1, 1}, {UMD_MATH_BF16, 1, 1, 0, 0},
                 {UMD_MATH_BF16, 1, 0, 1, 0}, {UMD_MATH_BF16, 0, 1, 1, 0},
                 {UMD_MATH_FP32, 1, 1, 1, 0}, {UMD_MATH_TF32, 1, 1, 1, 0}};
    void *ws;
    for (int i = 0; i < 6; i++) {
        if (cases[i].branch) setenv("UMDQ_CUDA_BF16_BRANCH", "1", 1);
        if (cases[i].grad) setenv("UMDQ_CUDA_BF16_GRAD", "1", 1);
        umd_ctx *c = ctx_with(cases[i].math, cases[i].operands, 0, NULL, &ws);
        const int got = umd_ops_cuda(cases[i].math)->grad_operand(c);
        T_CHECK_MSG(got == cases[i].want,
                    "grad_operand (math %d, operands %d, branch %d, grad %d): %d, want %d",
                    cases[i].math, cases[i].operands, cases[i].branch, cases[i].grad, got,
                    cases[i].want);
        char line[512];
        umd_cuda_describe(c, line, sizeof line);
        T_CONTAINS(line, cases[i].want ? "bf16 gradients on" : "bf16 gradients off");
        ctx_free(&c, NULL);
    }
    setenv("UMDQ_CUDA_BF16_BRANCH", "1", 1);
    umd_ctx *c = ctx_with(UMD_MATH_BF16, 1, 0, &QKV_LIM, &ws);
    T_EQ_INT(GPU->branch_operand(c), 1);
    T_EQ_INT(GPU->grad_operand(c), 0);
    T_REQUIRE(umd_cuda_set_attention(c, UMD_ATTN_MMA) == 0);
    {
        const int n = 2, T = 9, w = 64;
        const size_t nt = (size_t)n * T * w, ng = (size_t)n * w;
        float *dout = d_f(h_randn(nt, 3100, 1.0f), nt), *y = d_f(h_randn(nt, 3101, 1.0f), nt);
        float *gate = d_f(h_randn(ng, 3102, 0.3f), ng), *dy[2], *dg[2];
        for (int k = 0; k < 2; k++) {
            dy[k] = d_f(h_nan(nt), nt);
            dg[k] = d_f(h_nan(ng), ng);
            GPU->gate_residual_bwd(c, dy[k], dg[k], dout, y, gate, w, n, T, w,
                                   k ? UMD_GRAD : UMD_F32);
        }
        ctx_ok(c);
        same_bits("gate_residual_bwd dy, UMD_GRAD where grad_operand is 0", dy[1], dy[0], nt);
        same_bits("gate_residual_bwd dgate, UMD_GRAD where grad_operand is 0", dg[1], dg[0], ng);
    }
    {
        const int M = 37, N = 53, K = 61;
        const size_t MK = (size_t)M * K, MN = (size_t)M * N, NK = (size_t)N * K;
        float *x = d_f(h_randn(MK, 3110, 1.0f), MK), *W = d_f(h_randn(NK, 3111, 0.2f), NK);
        float *g = d_f(h_randn(MN, 3112, 1.0f), MN);
        const float *gW = h_randn(NK, 3113, 1.0f), *gb = h_randn((size_t)N, 3114, 1.0f);
        float *dx[2], *dW[2], *db[2];
        for (int k = 0; k < 2; k++) {
            dx[k] = d_f(h_nan(MK), MK);
            dW[k] = d_f(gW, NK);
            db[k] = d_f(gb, (size_t)N);
            GPU->linear_bwd(c, dx[k], dW[k], db[k], g, x, W, M, N, K, 0,
                            k ? UMD_GRAD | UMD_GRAD_X : UMD_F32);
        }
        ctx_ok(c);
        same_bits("linear_bwd dx, UMD_GRAD where grad_operand is 0", dx[1], dx[0], MK);
        same_bits("linear_bwd dW, UMD_GRAD where grad_operand is 0", dW[1], dW[0], NK);
        same_bits("linear_bwd db, UMD_GRAD where grad_operand is 0", db[1], db[0], (size_t)N);
    }
    {
        const int M = 37, F = 61, w = 24;
        const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
        float *d_x, *d_W1, *d_W2, *d_dy, *d_b1, *d_b2, *dy;
        const void *d_xh;
        mlp_inputs(M, F, w, 3120, &d_x, &d_xh, &d_W1, &d_W2, &d_dy, &d_b1, &d_b2, &dy);
        float *h = d_f(h_randn(MF, 3130, 1.0f), MF);
        const float *gW1 = h_randn(Fw, 3131, 1.0f), *gW2 = h_randn(Fw, 3132, 1.0f);
        const float *gb1 = h_randn((size_t)F, 3133, 1.0f), *gb2 = h_randn((size_t)w, 3134, 1.0f);
        mlp_grads g[2];
        for (int k = 0; k < 2; k++) {
            g[k] = mlp_grads_new(h_nan(Mw), gW1, gW2, gb1, gb2, M, F, w);
            GPU->mlp_bwd(c, g[k].dx, g[k].dW1, g[k].db1, g[k].dW2, g[k].db2, d_dy, d_x, h, d_W1,
                         d_W2, d_f(h_nan(MF), MF), M, F, w, k ? UMD_GRAD | UMD_GRAD_X : UMD_F32);
        }
        ctx_ok(c);
        mlp_grads_same(&g[1], &g[0], M, F, w, ", UMD_GRAD where grad_operand is 0");
    }
    {
        const int n = 2, T = 65, heads = 2, hd = 64;
        const size_t nq = (size_t)n * T * 3 * heads * hd, no = (size_t)n * T * heads * hd,
                     nl = (size_t)n * heads * T;
        uint16_t *qh;
        h_bf16_values(nq, 3140, &qh);
        const void *d_qh = d_up(qh, nq * sizeof *qh);
        float *d_g = d_f(h_randn(no, 3141, 1.0f), no);
        float *out = d_f(h_nan(no), no), *lse = d_f(h_nan(nl), nl), *dq[2];
        GPU->attention_fwd(c, out, lse, d_qh, n, T, heads, hd, UMD_OPND);
        for (int k = 0; k < 2; k++) {
            dq[k] = d_f(h_nan(nq), nq);
            GPU->attention_bwd(c, dq[k], d_g, d_qh, out, lse, n, T, heads, hd,
                               UMD_OPND | (k ? UMD_GRAD | UMD_GRAD_X : 0));
        }
        ctx_ok(c);
        same_bits("attention_bwd dqkv, UMD_GRAD where grad_operand is 0", dq[1], dq[0], nq);
    }
    {
        const int n = 2, T = 9, w = 64;
        const size_t nt = (size_t)n * T * w, nr = (size_t)n * T;
        float *x = d_f(h_randn(nt, 3150, 1.0f), nt), *g = d_f(h_randn(nt, 3151, 1.0f), nt);
        float *gamma = d_f(h_randn((size_t)w, 3152, 1.0f), (size_t)w);
        float *beta = d_f(h_randn((size_t)w, 3153, 1.0f), (size_t)w);
        float *mean = d_f(h_nan(nr), nr), *rstd = d_f(h_nan(nr), nr), *out = d_f(h_nan(nt), nt);
        GPU->layernorm_fwd(c, out, mean, rstd, x, gamma, beta, NULL, 0, n, T, w, (long)T * w,
                           (long)T * w, UMD_F32);
        const float *gg = h_randn((size_t)w, 3154, 1.0f);
        float *dx[2], *dg[2], *dbt[2];
        for (int k = 0; k < 2; k++) {
            dx[k] = d_f(h_nan(nt), nt);
            dg[k] = d_f(gg, (size_t)w);
            dbt[k] = d_f(gg, (size_t)w);
            GPU->layernorm_bwd(c, dx[k], dg[k], dbt[k], NULL, g, x, mean, rstd, gamma, beta, NULL,
                               0, n, T, w, (long)T * w, (long)T * w, 0, k ? UMD_GRAD_X : UMD_F32);
        }
        ctx_ok(c);
        same_bits("layernorm_bwd dx, UMD_GRAD_X where grad_operand is 0", dx[1], dx[0], nt);
        same_bits("layernorm_bwd dgamma, UMD_GRAD_X where grad_operand is 0", dg[1], dg[0],
                  (size_t)w);
        same_bits("layernorm_bwd dbeta, UMD_GRAD_X where grad_operand is 0", dbt[1], dbt[0],
                  (size_t)w);
    }
    cleanup();
    ctx_free(&c, ws);
}

/* gate_residual_bwd of one (n, T, w) in context c (grad_operand 1), every token tensor `off`
 * elements past its allocation, the gate rows inside (n, 6w) modulation rows as the model's: dy
 * written as a bf16 gradient tensor (UMD_GRAD) against the same op writing an fp32 dy, y fp32 and
 * a bf16 branch tensor (UMD_OPND_Y). dy starts as 0xff bytes (NaN in either type), the bf16 one
 * with GUARD16 such values after it that must stay so (guard_intact), dgate's gate rows as NaN. */
static void gate_bf16_grad_shape(umd_ctx *c, int n, int T, int w, int off, uint32_t key) {
    const int ms = 6 * w;
    const size_t nt = (size_t)n * T * w, nm = (size_t)n * ms;
    void *y16;
    float *y32;
    branch_pair(nt, off, key, &y16, &y32);
    float *dout = d_f(h_randn(nt + off, key + 2, 1.0f), nt + off) + off;
    const float *gate = d_f(h_randn(nm, key + 3, 0.3f), nm) + 2 * w;
    float *gg = h_randn(nm, key + 6, 1.0f);
    for (int b = 0; b < n; b++)
        for (int k = 0; k < w; k++) gg[(size_t)b * ms + 2 * w + k] = NAN;
    const void *poison = h_poison((nt + off) * sizeof(float));
    for (int ybf = 0; ybf < 2; ybf++) {
        const void *y = ybf ? y16 : (const void *)y32;
        const int type = ybf ? UMD_OPND_Y : UMD_F32;
        float *dy32 = (float *)d_up(poison, (nt + off) * sizeof(float)) + off;
        uint16_t *dy16 = (uint16_t *)d_bf16_guarded(NULL, nt + off) + off;
        float *dg32 = d_f(gg, nm), *dg16 = d_f(gg, nm);
        GPU->gate_residual_bwd(c, dy32, dg32 + 2 * w, dout, y, gate, ms, n, T, w, type);
        GPU->gate_residual_bwd(c, dy16, dg16 + 2 * w, dout, y, gate, ms, n, T, w,
                               type | UMD_GRAD);
        ctx_ok(c);
        char what[160];
        snprintf(what, sizeof what, "gate_residual_bwd bf16 dy, y %s (n %d, T %d, w %d, offset %d)",
                 ybf ? "bf16" : "fp32", n, T, w, off);
        same_rounded(what, dy16, dy32, nt);
        guard_intact(what, dy16, nt);
        same_bits_fmt(dg16, dg32, nm, "gate_residual_bwd dgate, bf16 dy, y %s (n %d, T %d, w %d, "
                      "offset %d)", ybf ? "bf16" : "fp32", n, T, w, off);
    }
}

/* gate_residual_bwd writing dy as a bf16 gradient tensor (UMD_GRAD in a context whose
 * grad_operand is 1: the gradient of a bf16 branch output, as bf16 autocast keeps it) against the
 * same op in the same context writing an fp32 dy (gate_bf16_grad_shape): dy the fp32 values
 * rounded to nearest even on the host, bit for bit (same_rounded: a store rounding otherwise shows
 * on the ties), dgate the same bits (it sums the same fp32 products), y fp32 and bf16. The shapes
 * of test_cuda_gated_residual_bf16_y: widths of one group of 128 columns and of several, widths
 * that are not multiples of 4 and tensors one element past their allocation (the scalar path: a
 * bf16 dy not 8-byte aligned), one-token sequences. */
static void test_cuda_gated_residual_bf16_grad(void) {
    need_gpu(UMD_MATH_BF16);
    const int shapes[][4] = {{3, 5, 16, 0},  {2, 65, 160, 0}, {8, 1, 33, 0},  {2, 9, 384, 0},
                             {1, 7, 100, 0}, {2, 257, 768, 0}, {1, 3, 1024, 0}, {2, 4, 1100, 0},
                             {3, 6, 64, 1},  {2, 5, 250, 1}};
    void *ws;
    umd_ctx *c = grad_ctx(NULL, NULL, &ws);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        gate_bf16_grad_shape(c, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3],
                             3150 + 10 * (uint32_t)s);
        cleanup();
    }
    ctx_free(&c, NULL);
}

/* layernorm_bwd of one (n, T, w) in context c (grad_operand 1), sequences strided (x_stride T w +
 * 8, out_stride T w + 4 elements: gaps that stay as they were) and dout `off` elements past its
 * allocation: dout read as a bf16 gradient tensor (UMD_GRAD_X) against the same op reading an
 * fp32 dout that holds its values, bit for bit: dx written and accumulated, dgamma, dbeta, and
 * dmod's (shift, scale) rows inside (n, 6w) modulation rows as the model's, with and without
 * modulation. mean and rstd from the context's own forward. Written outputs start as NaN,
 * accumulated ones from the same random values. */
static void ln_bf16_grad_shape(umd_ctx *c, int n, int T, int w, int off, uint32_t key) {
    const long xs = (long)T * w + 8, os = (long)T * w + 4;
    const int ms = 6 * w;
    const size_t nx = (size_t)n * xs, no = (size_t)n * os, nm = (size_t)n * ms, nr = (size_t)n * T;
    float *x = h_randn(nx, key, 2.0f), *gamma = h_randn((size_t)w, key + 1, 0.3f);
    for (int i = 0; i < w; i++) gamma[i] += 1.0f;
    for (size_t i = 0; i < nx; i++) x[i] += 0.5f; /* rows away from zero mean */
    float *d_x = d_f(x, nx), *d_gamma = d_f(gamma, (size_t)w);
    float *d_beta = d_f(h_randn((size_t)w, key + 2, 0.3f), (size_t)w);
    float *d_mod = d_f(h_randn(nm, key + 3, 0.3f), nm);
    float *mean = d_f(h_nan(nr), nr), *rstd = d_f(h_nan(nr), nr), *out = d_f(h_nan(no), no);
    uint16_t *gh;
    float *g = h_bf16_values(no + off, key + 4, &gh);
    const float *d_g = d_f(g, no + off) + off;
    const void *d_gh = (const uint16_t *)d_up(gh, (no + off) * sizeof *gh) + off;
    for (int usemod = 0; usemod < 2; usemod++) {
        const float *md = usemod ? d_mod + 3 * w : NULL; /* norm2's rows: shift 3w, scale 4w */
        GPU->layernorm_fwd(c, out, mean, rstd, d_x, d_gamma, d_beta, md, ms, n, T, w, xs, os,
                           UMD_F32);
        for (int acc = 0; acc < 2; acc++) {
            float *gx = h_randn(nx, key + 5, 1.0f), *gm = h_randn(nm, key + 8, 1.0f);
            for (int b = 0; b < n && !acc; b++)
                for (long k = 0; k < (long)T * w; k++) gx[b * xs + k] = NAN;
            for (int b = 0; b < n && usemod; b++)
                for (int k = 0; k < 2 * w; k++) gm[(size_t)b * ms + 3 * w + k] = NAN;
            const float *gg = h_randn((size_t)w, key + 6, 1.0f), *gb = h_randn((size_t)w, key + 7, 1.0f);
            float *dx[2], *dgam[2], *dbet[2], *dmod[2];
            for (int k = 0; k < 2; k++) {
                dx[k] = d_f(gx, nx);
                dgam[k] = d_f(gg, (size_t)w);
                dbet[k] = d_f(gb, (size_t)w);
                dmod[k] = d_f(gm, nm);
                GPU->layernorm_bwd(c, dx[k], dgam[k], dbet[k], dmod[k] + 3 * w,
                                   k ? d_gh : (const void *)d_g, d_x, mean, rstd, d_gamma, d_beta, md,
                                   ms, n, T, w, xs, os, acc, k ? UMD_GRAD_X : UMD_F32);
            }
            ctx_ok(c);
            char tag[128];
            snprintf(tag, sizeof tag, "(n %d, T %d, w %d, offset %d, %s, acc %d)", n, T, w, off,
                     usemod ? "mod" : "no mod", acc);
            same_bits_fmt(dx[1], dx[0], nx, "layernorm_bwd dx, bf16 dout %s", tag);
            same_bits_fmt(dgam[1], dgam[0], (size_t)w, "layernorm_bwd dgamma, bf16 dout %s", tag);
            same_bits_fmt(dbet[1], dbet[0], (size_t)w, "layernorm_bwd dbeta, bf16 dout %s", tag);
            same_bits_fmt(dmod[1], dmod[0], nm, "layernorm_bwd dmod, bf16 dout %s", tag);
        }
    }
}

/* The limits of the LayerNorm gradient tests' context: up to 8 sequences of 65 tokens, rows up
 * to 1100 wide (the partials hold a tile per sequence, and the wide rows' chunks). */
static const umd_limits LN_GRAD_LIM = {8, 65, 1100, 1, 1, 4096};

/* layernorm_bwd reading dout as a bf16 gradient tensor (UMD_GRAD_X in a context whose
 * grad_operand is 1: the dx of the product that read out, norm2's from the MLP and norm1's from
 * the qkv Linear) against the same op reading an fp32 dout holding its values, bit for bit
 * (ln_bf16_grad_shape). Widths of one register group and of several, of all eight (1024), not
 * multiples of 4 and dout not 8-byte aligned (the scalar loads), one past the registers (1100:
 * the wide rows' three kernels), one-token sequences. */
static void test_cuda_layernorm_bf16_grad(void) {
    need_gpu(UMD_MATH_BF16);
    const int shapes[][4] = {{3, 5, 16, 0},  {2, 65, 160, 0}, {8, 1, 33, 0},  {2, 9, 384, 0},
                             {1, 7, 1024, 0}, {2, 4, 1100, 0}, {3, 6, 64, 1}, {2, 5, 250, 1}};
    void *ws;
    umd_ctx *c = grad_ctx(NULL, &LN_GRAD_LIM, &ws);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        ln_bf16_grad_shape(c, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3],
                           3700 + 10 * (uint32_t)s);
        cleanup();
    }
    ctx_free(&c, ws);
}

/* The backward calls a context has taken dQ from a stored dS in (its description's count). */
static long ds_calls(umd_ctx *c) {
    char d[2048];
    umd_cuda_describe(c, d, sizeof d);
    const char *at = strstr(d, "dQ from a stored dS ");
    char onoff[4] = "";
    long calls = -1;
    T_REQUIRE(at && sscanf(at, "dQ from a stored dS %3s (%ld calls)", onoff, &calls) == 2);
    return calls;
}

/* dqkv (n, T, 3W) fp32 of a dS context (got) against the default context's (want), both host
 * copies: dK and dV (columns W .. 3W of every row) bit for bit, dQ within 2e-3 of the largest
 * |dQ| everywhere and 1e-3 relative L2 (the same terms summed in the same order, each dS from
 * S^T = K Q^T where the dQ kernel takes S = Q K^T: a bf16 rounding of dS may land a step apart),
 * and every value finite. */
static void ds_dqkv_close(const char *what, const float *got, const float *want, size_t rows,
                          size_t W) {
    size_t kv_differ = 0, bad = 0;
    double big = 0, worst = 0, num = 0, den = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < W; j++) big = fmax(big, fabs(want[r * 3 * W + j]));
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < 3 * W; j++) {
            const float a = got[r * 3 * W + j], b = want[r * 3 * W + j];
            if (!isfinite(a) || !isfinite(b)) {
                bad++;
                continue;
            }
            if (j >= W) {
                kv_differ += memcmp(&a, &b, sizeof a) != 0;
            } else {
                worst = fmax(worst, fabs((double)a - b));
                num += ((double)a - b) * ((double)a - b);
                den += (double)b * b;
            }
        }
    const double l2 = sqrt(num) / (sqrt(den) + 1e-30);
    printf("  %s: dQ worst %.3g of the largest, relative L2 %.3g; %zu dK dV values differ, %zu "
           "not finite\n", what, big > 0 ? worst / big : worst, l2, kv_differ, bad);
    T_CHECK_MSG(bad == 0, "%s: %zu values not finite", what, bad);
    T_CHECK_MSG(kv_differ == 0, "%s: %zu dK dV values differ from the default kernels'", what,
                kv_differ);
    T_CHECK_MSG(worst <= 2e-3 * big, "%s: dQ off by %.3g of the largest (> 2e-3)", what,
                big > 0 ? worst / big : worst);
    T_CHECK_MSG(l2 <= 1e-3, "%s: dQ relative L2 %.3g > 1e-3", what, l2);
}

/* The dS tests' inputs for n sequences of T tokens in heads heads of 64 (key: their draws): qkv of
 * bf16 values (its bf16 copy on the device), dout, and the CPU's forward (out, lse) and backward
 * (ref) on them; out, lse and dout on the device too. Host buffers are the test's (hkeep). */
typedef struct {
    float *out, *ref;
    float *d_out, *d_lse, *d_g;
    const void *d_qh;
} ds_problem;
static ds_problem ds_problem_new(int n, int T, int heads, uint32_t key) {
    const size_t W = (size_t)heads * 64, nq = (size_t)n * T * 3 * W, no = (size_t)n * T * W,
                 nl = (size_t)n * heads * T;
    ds_problem p;
    uint16_t *qh;
    float *q = h_bf16_values(nq, key, &qh), *g = h_randn(no, key + 1, 1.0f), *lse = h_nan(nl);
    p.d_qh = d_up(qh, nq * sizeof *qh);
    p.out = h_nan(no), p.ref = h_nan(nq);
    CPU->attention_fwd(cc, p.out, lse, q, n, T, heads, 64, UMD_F32);
    CPU->attention_bwd(cc, p.ref, g, q, p.out, lse, n, T, heads, 64, UMD_F32);
    p.d_out = d_f(p.out, no), p.d_lse = d_f(lse, nl), p.d_g = d_f(g, no);
    return p;
}

/* The limits of the dS tests' group context: 2 sequences of 257 tokens in 5 heads, whose
 * attention workspace (two heads' (T, T) fp32 tiles, 8 n T^2 bytes) holds dS (2 n Tr^2 bytes a
 * head, Tr = 272) for 3 heads: the backward takes the heads in groups of 3 and 2. */
static const umd_limits DS_LIM = {2, 257, 320, 5, 256, 256 * 256};

/* UMDQ_CUDA_ATTN_DS=1 (the resident backward's dK dV kernel stores dS, bf16, in the attention
 * workspace a group of heads at a time, and dQ = dS K is one product over it, where the dQ kernel
 * computed S, dP and dS again), with a bf16 qkv (the operand context):
 *   - against the CPU on qkv's widened values (forward on the CPU, the backward from its out and
 *     lse), bf16 tolerance, dqkv NaN first;
 *   - against the default operand context from the same qkv, out and lse: dK and dV bit for bit,
 *     dQ close (ds_dqkv_close), with O fp32 and a bf16 branch tensor, with the 64- and the 32-query
 *     dK dV step; T of one row, partial strips and tiles (not multiples of 16), the model's 65,
 *     129 and 257, the longest resident (384), and a tiled length (440: dS is not taken there, so
 *     the default's bits throughout); several sequences and heads (UMDQ_CUDA_ATTN_DS_MAX_T=384:
 *     dS at every resident length);
 *   - in a context whose workspace holds 3 heads' dS, 5 heads (groups of 3 and 2) at 257 tokens;
 *   - with a bf16 dqkv and dout (grad_operand contexts): the bf16 dqkv's dK dV the default grad
 *     context's bits, dQ within a bf16 step or 2e-3 of the largest |dQ| (both round close sums);
 *   - the description counts the calls that took dS, and the default contexts count none. */
static void test_cuda_attention_ds(void) {
    need_gpu(UMD_MATH_BF16);
    void *ws[8];
    /* dS at every resident length (UMDQ_CUDA_ATTN_DS_MAX_T, which ctx_with clears after each
     * context): the default's 192 is a choice of speed */
    const char *every = "384";
    umd_ctx *dc = mma_ctx(1, NULL, &ws[0]);
    setenv("UMDQ_CUDA_ATTN_DS_MAX_T", every, 1);
    umd_ctx *sc = mma_ctx(1, "UMDQ_CUDA_ATTN_DS", &ws[1]);
    setenv("UMDQ_CUDA_ATTN_KV32", "1", 1); /* ctx_with clears it after */
    setenv("UMDQ_CUDA_ATTN_DS_MAX_T", every, 1);
    umd_ctx *skv = mma_ctx(1, "UMDQ_CUDA_ATTN_DS", &ws[2]);
    setenv("UMDQ_CUDA_ATTN_KV32", "1", 1);
    umd_ctx *dkv = mma_ctx(1, NULL, &ws[3]);
    static const char *const ds_var[] = {"UMDQ_CUDA_ATTN_DS", NULL};
    umd_ctx *gd = grad_ctx(NULL, &QKV_LIM, &ws[4]);
    setenv("UMDQ_CUDA_ATTN_DS_MAX_T", every, 1);
    umd_ctx *gs = grad_ctx(ds_var, &QKV_LIM, &ws[5]);
    setenv("UMDQ_CUDA_ATTN_DS", "0", 1);
    setenv("UMDQ_CUDA_ATTN_DS_MAX_T", every, 1);
    umd_ctx *grp = ctx_with_switch("UMDQ_CUDA_ATTN_DS", UMD_MATH_BF16, 1, &DS_LIM, &ws[6]);
    umd_ctx *gdef = ctx_with(UMD_MATH_BF16, 1, 0, &DS_LIM, &ws[7]);
    umd_ctx *const all[] = {dc, sc, skv, dkv, gd, gs, grp, gdef};
    for (int i = 0; i < 8; i++) T_REQUIRE(umd_cuda_set_attention(all[i], UMD_ATTN_MMA) == 0);
    struct {
        int n, T, heads;
        umd_ctx *s, *d;
    } cases[] = {{2, 1, 3, sc, dc},   {3, 5, 2, sc, dc},     {2, 17, 3, skv, dkv},
                 {3, 48, 2, sc, dc},  {2, 65, 3, skv, dkv},  {3, 100, 2, sc, dc},
                 {2, 129, 3, sc, dc}, {2, 257, 3, skv, dkv}, {3, 257, 2, sc, dc},
                 {1, 384, 3, sc, dc}, {2, 440, 2, skv, dkv}, {2, 257, 5, grp, gdef},
                 /* T mod 16 of 13 and 15: a last key strip partly past T in its second half */
                 {2, 125, 3, skv, dkv}, {1, 383, 2, sc, dc}};
    const int hd = 64;
    for (int s = 0; s < (int)(sizeof cases / sizeof *cases); s++) {
        const int n = cases[s].n, T = cases[s].T, heads = cases[s].heads;
        const size_t W = (size_t)heads * hd, nq = (size_t)n * T * 3 * W, no = (size_t)n * T * W;
        const uint32_t key = 4700 + 10 * (uint32_t)s;
        const ds_problem pb = ds_problem_new(n, T, heads, key);
        const float *ref = pb.ref, *d_out = pb.d_out, *d_lse = pb.d_lse, *d_g = pb.d_g;
        const void *d_qh = pb.d_qh;
        /* O as a bf16 branch tensor too: the CPU's out rounded */
        uint16_t *oh = hkeep(malloc(no * sizeof *oh));
        for (size_t i = 0; i < no; i++) oh[i] = fx_bf16(pb.out[i]);
        const void *d_oh = d_up(oh, no * sizeof *oh);
        for (int ob = 0; ob < 2; ob++) {
            const void *o = ob ? d_oh : (const void *)d_out;
            const int types = UMD_OPND | (ob ? UMD_OPND_O : 0);
            float *dq_s = d_f(h_nan(nq), nq), *dq_d = d_f(h_nan(nq), nq);
            GPU->attention_bwd(cases[s].s, dq_s, d_g, d_qh, o, d_lse, n, T, heads, hd, types);
            GPU->attention_bwd(cases[s].d, dq_d, d_g, d_qh, o, d_lse, n, T, heads, hd, types);
            ctx_ok(cases[s].s);
            ctx_ok(cases[s].d);
            char what[128];
            snprintf(what, sizeof what, "n %d T %d heads %d, out %s, against the CPU", n, T, heads,
                     ob ? "bf16" : "fp32");
            if (!ob) same(what, dq_s, ref, nq, tol_of(UMD_MATH_BF16), 1);
            snprintf(what, sizeof what, "n %d T %d heads %d, out %s, against the default", n, T,
                     heads, ob ? "bf16" : "fp32");
            if (T > 384) /* tiled: no dS taken, the default kernels */
                same_bits_fmt(dq_s, dq_d, nq, "%s", what);
            else
                ds_dqkv_close(what, h_down(dq_s, nq * sizeof(float)),
                              h_down(dq_d, nq * sizeof(float)), (size_t)n * T, W);
        }
        if (cases[s].s != grp) {
            /* bf16 dqkv and dout: dK dV the default's bits, dQ within a bf16 step */
            uint16_t *gh;
            h_bf16_values(no, key + 2, &gh);
            const void *d_gh = d_up(gh, no * sizeof *gh);
            const void *poison = h_poison(nq * sizeof(uint16_t));
            void *g16_s = d_up(poison, nq * sizeof(uint16_t)), *g16_d = d_up(poison, nq * sizeof(uint16_t));
            const int types = UMD_OPND | UMD_OPND_O | UMD_GRAD | UMD_GRAD_X;
            GPU->attention_bwd(gs, g16_s, d_gh, d_qh, d_oh, d_lse, n, T, heads, hd, types);
            GPU->attention_bwd(gd, g16_d, d_gh, d_qh, d_oh, d_lse, n, T, heads, hd, types);
            ctx_ok(gs);
            ctx_ok(gd);
            const uint16_t *a = h_down(g16_s, nq * sizeof *a), *b = h_down(g16_d, nq * sizeof *b);
            size_t kv_differ = 0, q_far = 0, bad = 0;
            double big = 0; /* the largest |dQ| of the default: a step of a sum that nearly
                             * cancels is measured against it */
            for (size_t r = 0; r < (size_t)n * T; r++)
                for (size_t j = 0; j < W; j++)
                    if ((b[r * 3 * W + j] & 0x7f80u) != 0x7f80u)
                        big = fmax(big, fabs((double)fx_widen(b[r * 3 * W + j])));
            for (size_t r = 0; r < (size_t)n * T; r++)
                for (size_t j = 0; j < 3 * W; j++) {
                    const uint16_t x = a[r * 3 * W + j], y = b[r * 3 * W + j];
                    if ((x & 0x7f80u) == 0x7f80u || (y & 0x7f80u) == 0x7f80u) bad++;
                    else if (j >= W) kv_differ += x != y;
                    else q_far += fabs((double)fx_widen(x) - fx_widen(y)) >
                                  fmax(fabs((double)fx_widen(y)) / 128.0, 2e-3 * big);
                }
            printf("  n %d T %d heads %d, bf16 dqkv and dout: %zu dK dV values differ, %zu dQ "
                   "values more than a bf16 step apart, %zu not finite\n", n, T, heads,
                   kv_differ, q_far, bad);
            T_CHECK(bad == 0);
            T_CHECK_MSG(kv_differ == 0, "T %d: bf16 dK dV differ from the default kernels'", T);
            T_CHECK_MSG(q_far == 0, "T %d: bf16 dQ more than a bf16 step off", T);
        }
        cleanup();
    }
    printf("  dS taken in %ld + %ld + %ld + %ld backward calls; the default contexts %ld, %ld, "
           "%ld\n", ds_calls(sc), ds_calls(skv), ds_calls(gs), ds_calls(grp), ds_calls(dc),
           ds_calls(dkv), ds_calls(gd));
    T_CHECK(ds_calls(sc) > 0 && ds_calls(skv) > 0 && ds_calls(gs) > 0 && ds_calls(grp) == 2);
    T_CHECK(ds_calls(dc) == 0 && ds_calls(dkv) == 0 && ds_calls(gd) == 0 && ds_calls(gdef) == 0);
    umd_ctx **own[] = {&dc, &sc, &skv, &dkv, &gd, &gs, &grp, &gdef};
    for (int i = 0; i < 8; i++) ctx_free(own[i], ws[i]);
}

/* UMDQ_CUDA_ATTN_DS's length: by default (unset: 192 tokens) the backward takes dS at 129 and 192
 * tokens and not at 193 or 257, where it runs the default kernels (the default context's bits);
 * UMDQ_CUDA_ATTN_DS_MAX_T=100 takes it at 100 and not at 129. The description says the length. */
static void test_cuda_attention_ds_max_t(void) {
    need_gpu(UMD_MATH_BF16);
    void *ws[3];
    umd_ctx *dc = mma_ctx(1, NULL, &ws[0]), *sc = mma_ctx(1, "UMDQ_CUDA_ATTN_DS", &ws[1]);
    setenv("UMDQ_CUDA_ATTN_DS_MAX_T", "100", 1); /* ctx_with clears it after */
    umd_ctx *s100 = mma_ctx(1, "UMDQ_CUDA_ATTN_DS", &ws[2]);
    char d[2048];
    umd_cuda_describe(sc, d, sizeof d);
    T_CONTAINS(d, "for T up to 192");
    umd_cuda_describe(s100, d, sizeof d);
    T_CONTAINS(d, "for T up to 100");
    struct {
        int T;
        umd_ctx *s;
        int takes;
    } cases[] = {{129, sc, 1},  {192, sc, 1},   {193, sc, 0},
                 {257, sc, 0},  {100, s100, 1}, {129, s100, 0}};
    const int n = 2, heads = 2, hd = 64;
    for (int k = 0; k < (int)(sizeof cases / sizeof *cases); k++) {
        const int T = cases[k].T;
        const size_t nq = (size_t)n * T * 3 * heads * hd;
        const ds_problem pb = ds_problem_new(n, T, heads, 4900 + 10 * (uint32_t)k);
        const float *ref = pb.ref, *d_out = pb.d_out, *d_lse = pb.d_lse, *d_g = pb.d_g;
        const void *d_qh = pb.d_qh;
        float *dq_s = d_f(h_nan(nq), nq), *dq_d = d_f(h_nan(nq), nq);
        const long before = ds_calls(cases[k].s);
        GPU->attention_bwd(cases[k].s, dq_s, d_g, d_qh, d_out, d_lse, n, T, heads, hd, UMD_OPND);
        GPU->attention_bwd(dc, dq_d, d_g, d_qh, d_out, d_lse, n, T, heads, hd, UMD_OPND);
        ctx_ok(cases[k].s);
        ctx_ok(dc);
        const long took = ds_calls(cases[k].s) - before;
        printf("  T %d, dS for T up to %d: %ld backward calls took dS\n", T,
               cases[k].s == s100 ? 100 : 192, took);
        T_CHECK_MSG(took == cases[k].takes, "T %d: %ld calls took dS, want %d", T, took,
                    cases[k].takes);
        char what[96];
        snprintf(what, sizeof what, "T %d, against the CPU", T);
        same(what, dq_s, ref, nq, tol_of(UMD_MATH_BF16), 1);
        if (!cases[k].takes)
            same_bits_fmt(dq_s, dq_d, nq, "T %d without dS, against the default context", T);
        cleanup();
    }
    umd_ctx **own[] = {&dc, &sc, &s100};
    for (int i = 0; i < 3; i++) ctx_free(own[i], ws[i]);
}

/* attention_bwd writing dqkv as a bf16 gradient tensor (UMD_OPND | UMD_GRAD in a context whose
 * grad_operand is 1: the mma kernels, head width 64, bf16 qkv) against the same backward writing
 * an fp32 dqkv in the same context, from the same bf16 qkv, out and lse (the context's forward):
 * dqkv the fp32 values rounded to nearest even on the host, bit for bit (same_rounded), with out
 * fp32 and a bf16 branch tensor (UMD_OPND_O: the dQ kernels' two types of O). In a context made
 * with UMDQ_CUDA_ATTN_KV32=1 too (the 32-query dK dV step, resident where it fits a third block
 * and tiled) the bf16 dqkv is also the default kernels' bits; and so in two contexts made with
 * UMDQ_CUDA_ATTN_SPLIT=1 (the resident backward's last strips shared by its warps), the 32-query
 * step's against the 64-query one's there. T of one row, short and partial
 * strips and tiles (not multiples of 16, 32 or 64), the longest resident sequence (384) and tiled
 * ones past it (385, 440, 1025); several sequences and heads. dqkv starts as 0xff bytes: an
 * element no kernel writes stays NaN and matches nothing. dout is drawn rounded to bf16, and each
 * backward runs a third time reading it as a bf16 gradient tensor (UMD_GRAD | UMD_GRAD_X, as the
 * model passes proj's dx): its bf16 dqkv the bits of the second, whose fp32 dout holds the same
 * values (the products read dO rounded to those values either way, and D = rowsum(dO O) sums
 * them widened), in every kernel of either context. */
static void test_cuda_attention_bf16_grad(void) {
    need_gpu(UMD_MATH_BF16);
    static const char *const kv32[] = {"UMDQ_CUDA_ATTN_KV32", NULL},
                             *const split[] = {"UMDQ_CUDA_ATTN_SPLIT", NULL},
                             *const split_kv32[] = {"UMDQ_CUDA_ATTN_SPLIT", "UMDQ_CUDA_ATTN_KV32", NULL};
    void *ws[4];
    umd_ctx *cs[4] = {grad_ctx(NULL, &QKV_LIM, &ws[0]), grad_ctx(kv32, &QKV_LIM, &ws[1]),
                      grad_ctx(split, &QKV_LIM, &ws[2]), grad_ctx(split_kv32, &QKV_LIM, &ws[3])};
    for (int i = 0; i < 4; i++) T_REQUIRE(umd_cuda_set_attention(cs[i], UMD_ATTN_MMA) == 0);
    const char *hows[] = {"", ", dK dV over 32 queries", ", last strips shared",
                          ", last strips shared, dK dV over 32 queries"};
    const int Ts[] = {1, 5, 17, 48, 65, 96, 100, 257, 384, 385, 440, 1025}, hd = 64;
    for (int s = 0; s < (int)(sizeof Ts / sizeof *Ts); s++) {
        const int T = Ts[s], n = s % 2 ? 3 : 2, heads = s % 2 ? 2 : 3;
        const size_t W = (size_t)heads * hd, nq = (size_t)n * T * 3 * W, no = (size_t)n * T * W,
                     nl = (size_t)n * heads * T;
        const uint32_t key = 3300 + 10 * (uint32_t)s;
        uint16_t *qh, *gh;
        h_bf16_values(nq, key, &qh);
        const void *d_qh = d_up(qh, nq * sizeof *qh);
        float *d_g = d_f(h_bf16_values(no, key + 1, &gh), no);
        const void *d_gh = d_up(gh, no * sizeof *gh);
        const void *poison = h_poison(nq * sizeof(float));
        void *dq16[4][2]; /* [context][O bf16] */
        for (int i = 0; i < 4; i++) {
            umd_ctx *c = cs[i];
            float *o32 = d_up(poison, no * sizeof(float)), *l32 = d_up(poison, nl * sizeof(float));
            void *o16 = d_up(poison, no * sizeof(uint16_t));
            float *l16 = d_up(poison, nl * sizeof(float));
            GPU->attention_fwd(c, o32, l32, d_qh, n, T, heads, hd, UMD_OPND);
            GPU->attention_fwd(c, o16, l16, d_qh, n, T, heads, hd, UMD_OPND | UMD_OPND_O);
            for (int ob = 0; ob < 2; ob++) {
                const void *o = ob ? o16 : (const void *)o32;
                const float *l = ob ? l16 : l32;
                const int types = UMD_OPND | (ob ? UMD_OPND_O : 0);
                float *dq32 = d_up(poison, nq * sizeof(float));
                dq16[i][ob] = d_up(poison, nq * sizeof(uint16_t));
                void *dq16g = d_up(poison, nq * sizeof(uint16_t)); /* from the bf16 dout */
                GPU->attention_bwd(c, dq32, d_g, d_qh, o, l, n, T, heads, hd, types);
                GPU->attention_bwd(c, dq16[i][ob], d_g, d_qh, o, l, n, T, heads, hd,
                                   types | UMD_GRAD);
                GPU->attention_bwd(c, dq16g, d_gh, d_qh, o, l, n, T, heads, hd,
                                   types | UMD_GRAD | UMD_GRAD_X);
                ctx_ok(c);
                char what[160];
                snprintf(what, sizeof what,
                         "attention_bwd bf16 dqkv, out %s%s (n %d, T %d, heads %d)",
                         ob ? "bf16" : "fp32", hows[i], n, T, heads);
                same_rounded(what, dq16[i][ob], dq32, nq);
                snprintf(what, sizeof what,
                         "attention_bwd bf16 dqkv from a bf16 dout, out %s%s (n %d, T %d, heads %d)",
                         ob ? "bf16" : "fp32", hows[i], n, T, heads);
                same_bf16_dev(what, dq16g, dq16[i][ob], nq);
                if (i % 2) { /* the 32-query step against the 64-query one */
                    snprintf(what, sizeof what, "attention_bwd bf16 dqkv, out %s%s against the "
                             "64-query step (n %d, T %d, heads %d)", ob ? "bf16" : "fp32",
                             hows[i], n, T, heads);
                    same_bf16_dev(what, dq16[i][ob], dq16[i - 1][ob], nq);
                }
            }
        }
        cleanup();
    }
    for (int i = 0; i < 4; i++) ctx_free(&cs[i], ws[i]);
}

/* linear_bwd reading dy as a bf16 gradient tensor (UMD_GRAD in a context whose grad_operand is 1)
 * against the same op in the same context reading an fp32 dy that holds dy's values (drawn and
 * rounded on the host). The GEMMs read the same bf16 operand (the fp32 dy's conversion into the
 * stage makes these bits) in the same chunks and shapes, so dx, written and accumulated, and dW
 * are the same bits. dx written as a bf16 gradient tensor too (UMD_GRAD_X; from the bf16 dy and
 * from the fp32 one): within a bf16 step of the same call's fp32 dx rounded (dx16_near), nothing
 * written past it, dW and db that call's bits (dx's type changes neither). db is the same bits too where the fp32 dy is whole in the stage: its
 * conversion sums the columns in the chunks, layout (4-wide or scalar: both tensors aligned alike
 * here) and order the bf16 dy's sums take, the same kernel without its store. Where dy goes in
 * two chunks of rows (25700 x 96 x 640 in OPND_LIM's stage) the fp32 dy's db is a gemv, summed in
 * another order: there each db is checked within 1e-6 of the column sums taken in double on the
 * host (relative to the largest, as every fp32 sum of 25700 terms is only that close). x fp32
 * and a bf16 operand; dW alone (no dx, no db). Shapes that are not multiples of the GEMM tiles or
 * of 4 (the scalar column sums), one row. Written outputs start as NaN, accumulated ones from the
 * same random values. */
static void test_cuda_linear_bf16_grad(void) {
    need_gpu(UMD_MATH_BF16);
    void *ws;
    umd_ctx *c = grad_ctx(NULL, &OPND_LIM, &ws);
    const int shapes[][4] = {{37, 53, 61, 0},     {128, 96, 200, 0}, {300, 160, 48, 0},
                             {1, 7, 5, 0},        {1025, 256, 160, 0},
                             {25700, 96, 640, 1}}; /* M N K, dy in chunks of rows */
    for (int s = 0; s < 6; s++) {
        const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], chunked = shapes[s][3];
        const size_t MK = (size_t)M * K, MN = (size_t)M * N, NK = (size_t)N * K;
        const uint32_t key = 3400 + 10 * (uint32_t)s;
        uint16_t *xh, *gh;
        float *x = h_bf16_values(MK, key, &xh), *g = h_bf16_values(MN, key + 3, &gh);
        float *d_x = d_f(x, MK), *d_W = d_f(h_randn(NK, key + 1, 0.2f), NK), *d_g = d_f(g, MN);
        const void *d_xh = d_up(xh, MK * sizeof *xh), *d_gh = d_up(gh, MN * sizeof *gh);
        /* x bf16 written and accumulated into dx, x fp32 */
        for (int v = 0; v < 3; v++) {
            const int acc = v == 1, xbf = v < 2;
            const void *xs = xbf ? d_xh : (const void *)d_x;
            const int xt = xbf ? UMD_OPND : UMD_F32;
            const float *gx = acc ? h_randn(MK, key + 4, 1.0f) : h_nan(MK);
            const float *gW = h_randn(NK, key + 5, 1.0f), *gb = h_randn((size_t)N, key + 6, 1.0f);
            float *dx[2], *dW[2], *db[2];
            for (int k = 0; k < 2; k++) {
                dx[k] = d_f(gx, MK);
                dW[k] = d_f(gW, NK);
                db[k] = d_f(gb, (size_t)N);
            }
            GPU->linear_bwd(c, dx[0], dW[0], db[0], d_g, xs, d_W, M, N, K, acc, xt);
            GPU->linear_bwd(c, dx[1], dW[1], db[1], d_gh, xs, d_W, M, N, K, acc, xt | UMD_GRAD);
            ctx_ok(c);
            char tag[96];
            snprintf(tag, sizeof tag, "(%d x %d x %d, x %s, acc %d)", M, N, K,
                     xbf ? "bf16" : "fp32", acc);
            same_bits_fmt(dx[1], dx[0], MK, "linear_bwd dx, bf16 dy %s", tag);
            same_bits_fmt(dW[1], dW[0], NK, "linear_bwd dW, bf16 dy %s", tag);
            for (int k = 0; k < 2 && !acc; k++) {
                void *dx16 = d_bf16_guarded(NULL, MK);
                float *dW16 = d_f(gW, NK), *db16 = d_f(gb, (size_t)N);
                GPU->linear_bwd(c, dx16, dW16, db16, k ? d_gh : (const void *)d_g, xs, d_W, M, N, K,
                                0, xt | (k ? UMD_GRAD : 0) | UMD_GRAD_X);
                ctx_ok(c);
                char what[160];
                snprintf(what, sizeof what, "linear_bwd bf16 dx, %s dy %s", k ? "bf16" : "fp32",
                         tag);
                dx16_near(what, dx16, dx[k], MK);
                same_bits_fmt(dW16, dW[k], NK, "linear_bwd dW, bf16 dx, %s dy %s",
                              k ? "bf16" : "fp32", tag);
                same_bits_fmt(db16, db[k], (size_t)N, "linear_bwd db, bf16 dx, %s dy %s",
                              k ? "bf16" : "fp32", tag);
            }
            if (!chunked) {
                same_bits_fmt(db[1], db[0], (size_t)N, "linear_bwd db, bf16 dy %s", tag);
            } else {
                float *ref = hkeep(malloc((size_t)N * sizeof *ref));
                for (int j = 0; j < N; j++) {
                    double sum = gb[j];
                    for (long r = 0; r < M; r++) sum += g[(size_t)r * N + j];
                    ref[j] = (float)sum;
                }
                char what[160];
                snprintf(what, sizeof what, "linear_bwd db, bf16 dy, against double sums %s", tag);
                same(what, db[1], ref, (size_t)N, 1e-6, 1);
                snprintf(what, sizeof what, "linear_bwd db, fp32 dy, against double sums %s", tag);
                same(what, db[0], ref, (size_t)N, 1e-6, 1);
            }
            /* dW alone */
            GPU->linear_bwd(c, NULL, dW[0], NULL, d_g, xs, d_W, M, N, K, 0, xt);
            GPU->linear_bwd(c, NULL, dW[1], NULL, d_gh, xs, d_W, M, N, K, 0, xt | UMD_GRAD);
            ctx_ok(c);
            same_bits_fmt(dW[1], dW[0], NK, "linear_bwd dW alone, bf16 dy %s", tag);
        }
        cleanup();
    }
    ctx_free(&c, ws);
}

/* mlp_bwd reading dy as a bf16 gradient tensor (UMD_GRAD in a context whose grad_operand is 1:
 * fc2's output is a branch tensor, dy its gradient) against the same op in the same context
 * reading an fp32 dy that holds dy's values, from the same forward's h and a bf16 operand x. The
 * bf16 dy is what the fp32 dy's conversion into bf_a makes, and every GEMM that read bf_a reads
 * it instead (dW2's, and dy W2's in each form), db2 summed in the fused conversion's chunks and
 * order: dx, dW1, dW2, db1 and db2 the same bits, without biases, with them, and with dx aliasing
 * dy (the fp32 dx written over the bytes that held the bf16 dy, after its last read). Contexts:
 * h bf16 with dy W2 in bf16 (UMDQ_CUDA_BF16_MLP=1, UMDQ_CUDA_BF16_DH=1; given no tmp, as it needs
 * none), h bf16 on the staging passes (tmp = dy W2 in fp32), h fp32 (the staging passes on an
 * fp32 h), h bf16 with the GELU epilogues (UMDQ_CUDA_GELU_EPILOGUE=1: dy W2 read by the DGELU
 * GEMM where cuBLASLt has the plan, else the staging passes), and the first with
 * UMDQ_CUDA_MLP_ONE_PASS=1 (the bf16 dy's call takes the one pass over h, the fp32 dy's the two
 * passes: the same bits). Shapes that are and are not
 * multiples of 4 and 8, one row. Written outputs start as NaN (tmp too), the gradients
 * accumulate onto the same random values in both calls. A third call from the bf16 dy writes dx
 * as a bf16 gradient tensor too (UMD_GRAD | UMD_GRAD_X, as the model passes them), over the bf16
 * dy it aliases where dx aliases dy: dx within a bf16 step of the second call's fp32 dx rounded
 * (dx16_near), nothing written past it, dW1, dW2, db1 and db2 the second call's bits. */
static void test_cuda_mlp_bf16_grad(void) {
    need_gpu(UMD_MATH_BF16);
    static const char *const dh[] = {"UMDQ_CUDA_BF16_MLP", "UMDQ_CUDA_BF16_DH", NULL};
    static const char *const mlp[] = {"UMDQ_CUDA_BF16_MLP", NULL};
    static const char *const epi[] = {"UMDQ_CUDA_BF16_MLP", "UMDQ_CUDA_GELU_EPILOGUE", NULL};
    static const char *const one[] = {"UMDQ_CUDA_BF16_MLP", "UMDQ_CUDA_BF16_DH",
                                      "UMDQ_CUDA_MLP_ONE_PASS", NULL};
    const char *const *vars[] = {dh, mlp, NULL, epi, one};
    const char *hows[] = {"bf16 h, bf16 dy W2", "bf16 h, staging", "fp32 h, staging",
                          "bf16 h, GELU epilogue", "bf16 h, bf16 dy W2, one pass over h"};
    const int shapes[][3] = {{300, 256, 64}, {1025, 200, 160}, {37, 61, 24}, {1, 8, 8}}; /* M F w */
    for (int i = 0; i < 5; i++) {
        void *ws;
        umd_ctx *c = grad_ctx(vars[i], &OPND_LIM, &ws);
        const int hb = i != 2, types = UMD_OPND | (hb ? UMD_OPND_H : 0);
        const int no_tmp = i == 0 || i == 4; /* dy W2 in bf16 needs none */
        T_EQ_INT(GPU->hidden_operand(c), hb);
        for (int s = 0; s < 4; s++) {
            const int M = shapes[s][0], F = shapes[s][1], w = shapes[s][2];
            const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
            const uint32_t key = 3500 + 20 * (uint32_t)s;
            float *d_x, *d_W1, *d_W2, *d_dy, *d_b1, *d_b2, *dy;
            const void *d_xh;
            mlp_inputs(M, F, w, key, &d_x, &d_xh, &d_W1, &d_W2, &d_dy, &d_b1, &d_b2, &dy);
            /* dy rounded to bf16 on the host: the bf16 values and their widening */
            uint16_t *gh;
            float *gw = h_bf16_values(Mw, key + 10, &gh);
            float *d_gw = d_f(gw, Mw);
            const void *d_gh = d_up(gh, Mw * sizeof *gh);
            const float *nanMF = h_nan(MF), *nanMw = h_nan(Mw);
            const size_t hbytes = MF * (hb ? sizeof(uint16_t) : sizeof(float));
            void *h = d_up(h_poison(MF * sizeof(float)), hbytes);
            GPU->mlp_fwd(c, d_f(nanMw, Mw), h, d_f(nanMF, MF), d_xh, d_W1, d_b1, d_W2, d_b2, M, F,
                         w, types);
            ctx_ok(c);
            /* dx's starting bytes where it aliases the bf16 dy: dy's values, then NaN */
            float *dx16 = h_copy(nanMw, Mw);
            memcpy(dx16, gh, Mw * sizeof *gh);
            for (int v = 0; v < 3; v++) {
                const int bias = v > 0, alias = v == 2;
                const float *gW1 = h_randn(Fw, key + 6, 1.0f), *gW2 = h_randn(Fw, key + 7, 1.0f);
                const float *gb1 = h_randn((size_t)F, key + 8, 1.0f);
                const float *gb2 = h_randn((size_t)w, key + 9, 1.0f);
                mlp_grads g[3];
                /* the third call's dx: bf16, holding the bf16 dy where it aliases it */
                void *dx16b = d_bf16_guarded(alias ? gh : NULL, Mw);
                for (int k = 0; k < 3; k++) {
                    g[k] = mlp_grads_new(alias && k < 2 ? (k ? dx16 : gw) : nanMw, gW1, gW2, gb1,
                                         gb2, M, F, w);
                    void *dxk = k < 2 ? (void *)g[k].dx : dx16b;
                    const void *dyk = alias ? (const void *)dxk : k ? d_gh : (const void *)d_gw;
                    float *tmp = no_tmp ? NULL : d_f(nanMF, MF);
                    GPU->mlp_bwd(c, dxk, g[k].dW1, bias ? g[k].db1 : NULL, g[k].dW2,
                                 bias ? g[k].db2 : NULL, dyk, d_xh, h, d_W1, d_W2, tmp, M, F, w,
                                 types | (k ? UMD_GRAD : 0) | (k == 2 ? UMD_GRAD_X : 0));
                }
                ctx_ok(c);
                char tag[128];
                snprintf(tag, sizeof tag, ", bf16 dy, %s (%d x %d x %d, %s%s)", hows[i], M, F, w,
                         bias ? "biases" : "no biases", alias ? ", dx aliasing dy" : "");
                mlp_grads_same(&g[1], &g[0], M, F, w, tag);
                char what[160];
                snprintf(what, sizeof what, "mlp_bwd bf16 dx%s", tag);
                dx16_near(what, dx16b, g[1].dx, Mw);
                same_bits_fmt(g[2].dW1, g[1].dW1, Fw, "mlp_bwd dW1, bf16 dx%s", tag);
                same_bits_fmt(g[2].dW2, g[1].dW2, Fw, "mlp_bwd dW2, bf16 dx%s", tag);
                same_bits_fmt(g[2].db1, g[1].db1, (size_t)F, "mlp_bwd db1, bf16 dx%s", tag);
                same_bits_fmt(g[2].db2, g[1].db2, (size_t)w, "mlp_bwd db2, bf16 dx%s", tag);
            }
            cleanup();
        }
        ctx_free(&c, ws);
    }
}

/* The MLP backward's one pass over h (a context made with UMDQ_CUDA_MLP_ONE_PASS=1: bf16 dy W2
 * into bf_a, then gelu(h) for dW2 and dh in one pass) against the two passes (the same context
 * made without it), both with h bf16, dy W2 in bf16 (UMDQ_CUDA_BF16_MLP=1, UMDQ_CUDA_BF16_DH=1)
 * and a bf16 dy (UMD_GRAD, where the one pass acts): dx, dW1, dW2, db1 and db2 the same bits
 * (the same GELU expressions on the same widened h, the same roundings, db1's column sums in the
 * same chunks and order, the same GEMMs on the same operand bits). x a bf16 operand (read where it
 * is) and fp32 (staged into bf_b after dW2's GEMM, where the two passes stage it into bf_a); no
 * biases, biases, dx a bf16 gradient tensor (UMD_GRAD_X), and that dx aliasing the bf16 dy. No
 * tmp (neither needs one). umd_cuda_describe says which takes one pass. Shapes that are and are
 * not multiples of 4 (the column sums' 4-wide and scalar kernels), one row, and M 1025 over
 * several chunks of the column sums. Written outputs start as NaN (0xffff where bf16), the
 * gradients accumulate onto the same random values in both contexts. */
static void test_cuda_mlp_one_pass(void) {
    need_gpu(UMD_MATH_BF16);
    static const char *const two[] = {"UMDQ_CUDA_BF16_MLP", "UMDQ_CUDA_BF16_DH", NULL};
    static const char *const one[] = {"UMDQ_CUDA_BF16_MLP", "UMDQ_CUDA_BF16_DH",
                                      "UMDQ_CUDA_MLP_ONE_PASS", NULL};
    void *ws[2];
    umd_ctx *cs[2] = {grad_ctx(two, &OPND_LIM, &ws[0]), grad_ctx(one, &OPND_LIM, &ws[1])};
    for (int i = 0; i < 2; i++) {
        char line[512];
        umd_cuda_describe(cs[i], line, sizeof line);
        T_CONTAINS(line, i ? "GELU passes over h 1" : "GELU passes over h 2");
    }
    const int types = UMD_OPND_H | UMD_GRAD;
    const int shapes[][3] = {{300, 256, 64}, {1025, 200, 160}, {37, 61, 24}, {1, 8, 8}}; /* M F w */
    for (int s = 0; s < 4; s++) {
        const int M = shapes[s][0], F = shapes[s][1], w = shapes[s][2];
        const size_t MF = (size_t)M * F, Mw = (size_t)M * w, Fw = (size_t)F * w;
        const uint32_t key = 3800 + 20 * (uint32_t)s;
        float *d_x, *d_W1, *d_W2, *d_dy, *d_b1, *d_b2, *dy;
        const void *d_xh;
        mlp_inputs(M, F, w, key, &d_x, &d_xh, &d_W1, &d_W2, &d_dy, &d_b1, &d_b2, &dy);
        uint16_t *gh;
        h_bf16_values(Mw, key + 10, &gh);
        const void *d_gh = d_up(gh, Mw * sizeof *gh);
        const float *nanMF = h_nan(MF), *nanMw = h_nan(Mw);
        void *h = d_up(h_nan16(MF), MF * sizeof(uint16_t));
        GPU->mlp_fwd(cs[0], d_f(nanMw, Mw), h, d_f(nanMF, MF), d_xh, d_W1, d_b1, d_W2, d_b2, M, F,
                     w, UMD_OPND | UMD_OPND_H);
        ctx_ok(cs[0]);
        for (int v = 0; v < 8; v++) {
            /* v: x a bf16 operand (bit 0 clear) or fp32; then no biases, biases, bf16 dx, bf16 dx
             * over the bf16 dy */
            const int xbf = !(v & 1), kind = v >> 1;
            const int bias = kind > 0, dx16 = kind >= 2, alias = kind == 3;
            const float *gW1 = h_randn(Fw, key + 6, 1.0f), *gW2 = h_randn(Fw, key + 7, 1.0f);
            const float *gb1 = h_randn((size_t)F, key + 8, 1.0f);
            const float *gb2 = h_randn((size_t)w, key + 9, 1.0f);
            mlp_grads g[2];
            void *dxs[2];
            for (int k = 0; k < 2; k++) {
                g[k] = mlp_grads_new(nanMw, gW1, gW2, gb1, gb2, M, F, w);
                dxs[k] = dx16 ? d_bf16_guarded(alias ? gh : NULL, Mw) : (void *)g[k].dx;
                GPU->mlp_bwd(cs[k], dxs[k], g[k].dW1, bias ? g[k].db1 : NULL, g[k].dW2,
                             bias ? g[k].db2 : NULL, alias ? dxs[k] : d_gh, xbf ? d_xh : d_x, h,
                             d_W1, d_W2, NULL, M, F, w,
                             types | (xbf ? UMD_OPND : 0) | (dx16 ? UMD_GRAD_X : 0));
            }
            ctx_ok2(cs[0], cs[1]);
            char tag[128];
            snprintf(tag, sizeof tag, ", one pass against two (%d x %d x %d, x %s, %s%s%s)", M, F, w,
                     xbf ? "bf16" : "fp32", bias ? "biases" : "no biases",
                     dx16 ? ", bf16 dx" : "", alias ? " aliasing dy" : "");
            if (dx16) {
                char what[160];
                snprintf(what, sizeof what, "mlp_bwd bf16 dx%s", tag);
                same_bf16_dev(what, dxs[1], dxs[0], Mw);
                guard_intact(what, dxs[1], Mw);
                same_bits_fmt(g[1].dW1, g[0].dW1, Fw, "mlp_bwd dW1%s", tag);
                same_bits_fmt(g[1].dW2, g[0].dW2, Fw, "mlp_bwd dW2%s", tag);
                same_bits_fmt(g[1].db1, g[0].db1, (size_t)F, "mlp_bwd db1%s", tag);
                same_bits_fmt(g[1].db2, g[0].db2, (size_t)w, "mlp_bwd db2%s", tag);
            } else {
                mlp_grads_same(&g[1], &g[0], M, F, w, tag);
            }
        }
        cleanup();
    }
    for (int i = 0; i < 2; i++) ctx_free(&cs[i], ws[i]);
}

/* Where a bf16 gradient tensor cannot be taken, in a context whose grad_operand is 1, the op
 * fails the context, naming itself, the bf16 gradient tensor and why, and writes nothing:
 *   linear_bwd with no bf16 stage (no workspace: the path that reads dy in fp32), and with a bias
 *     gradient whose column sums the partials cannot hold (N 96 past the 80 floats of `tiny`);
 *   mlp_bwd on the separate ops (no workspace), and with db2's sums past the partials (w 96);
 *   a bf16 dx (UMD_GRAD_X, dy fp32): linear_bwd adding into it (dx_accumulate) and with no bf16
 *     stage (the path that writes dx in fp32), mlp_bwd on the separate ops;
 *   attention_bwd on the GEMM and fused paths (attention modes gemm and fused, head widths 80
 *     and 32 in mode mma), and on the mma kernels with an fp32 qkv (no bf16 dqkv there); and the
 *     same with a bf16 dout (UMD_GRAD_X) and an fp32 dqkv (the mma kernels read a bf16 dout
 *     only with a bf16 dqkv).
 * The accumulated gradients (dW, db, dW1, dW2, db2), a bf16 dx (its 0xffff stays) and dqkv stay
 * as they were. */
static void test_cuda_bf16_grad_refused(void) {
    need_gpu(UMD_MATH_BF16);
    static const umd_limits tiny = {1, 1, 8, 1, 1, 4096}; /* partials (4 + 1) 2 8 = 80 floats */
    void *ws;
    for (int k = 0; k < 4; k++) {
        const int mlp = k >= 2, small = k & 1;
        const char *op = mlp ? "mlp_bwd" : "linear_bwd";
        umd_ctx *c = grad_ctx(NULL, small ? &tiny : NULL, &ws);
        /* linear: dy (M, N), x (M, K), W (N, K); the MLP: dy, x, dx (M, w = N), h (M, F = K),
         * W1 (F, w), W2 (w, F) */
        const int M = 4, N = small ? 96 : 8, K = 8;
        const size_t MN = (size_t)M * N, MK = (size_t)M * K, NK = (size_t)N * K;
        uint16_t *gh;
        h_bf16_values(MN, 3600 + (uint32_t)k, &gh);
        const void *d_gh = d_up(gh, MN * sizeof *gh);
        float *x = d_f(h_randn(mlp ? MN : MK, 3610 + (uint32_t)k, 1.0f), mlp ? MN : MK);
        float *W = d_f(h_randn(NK, 3620 + (uint32_t)k, 0.2f), NK);
        float *W2 = d_f(h_randn(NK, 3630 + (uint32_t)k, 0.2f), NK);
        float *h = d_f(h_randn(MK, 3640 + (uint32_t)k, 1.0f), MK);
        float *dx = d_f(h_nan(mlp ? MN : MK), mlp ? MN : MK), *tmp = d_f(h_nan(MK), MK);
        const float *gW = h_randn(NK, 3650 + (uint32_t)k, 1.0f);
        const float *gb = h_randn((size_t)N, 3660 + (uint32_t)k, 1.0f);
        float *dW = d_f(gW, NK), *dW2 = d_f(gW, NK), *dW_ref = d_f(gW, NK);
        float *db = d_f(gb, (size_t)N), *db_ref = d_f(gb, (size_t)N);
        if (mlp)
            GPU->mlp_bwd(c, dx, dW, NULL, dW2, db, d_gh, x, h, W, W2, tmp, M, K, N, UMD_GRAD);
        else
            GPU->linear_bwd(c, dx, dW, db, d_gh, x, W, M, N, K, 0, UMD_GRAD);
        char err[512] = "", shape[32];
        int rc = GPU->status(c, err, sizeof err);
        const char *why = small ? "sums past the partials" : "no bf16 stage";
        printf("  %s with a bf16 dy, %s: %s\n", op, why, err);
        T_CHECK_MSG(rc != 0, "%s read a bf16 dy it cannot (%s)", op, why);
        T_CONTAINS(err, op);
        T_CONTAINS(err, "bf16 gradient tensor");
        snprintf(shape, sizeof shape, "dy (%d, %d)", M, N);
        T_CONTAINS(err, shape);
        T_CONTAINS(err, small ? "column sums" : "bf16 stage");
        if (mlp) T_CONTAINS(err, "UMDQ_CUDA_BF16_GRAD");
        same_bits(mlp ? "mlp_bwd dW1 left alone" : "linear_bwd dW left alone", dW, dW_ref, NK);
        if (mlp) same_bits("mlp_bwd dW2 left alone", dW2, dW_ref, NK);
        same_bits(mlp ? "mlp_bwd db2 left alone" : "linear_bwd db left alone", db, db_ref,
                  (size_t)N);
        cleanup();
        ctx_free(&c, ws);
    }
    for (int k = 0; k < 3; k++) {
        const int mlp = k == 2, acc = k == 0;
        const char *op = mlp ? "mlp_bwd" : "linear_bwd";
        umd_ctx *c = grad_ctx(NULL, acc ? &tiny : NULL, &ws);
        /* as above, dy fp32: the bf16 dx is the one bf16 gradient tensor */
        const int M = 4, N = 8, K = 8;
        const size_t MN = (size_t)M * N, MK = (size_t)M * K, NK = (size_t)N * K;
        const size_t ndx = mlp ? MN : MK;
        float *dy = d_f(h_randn(MN, 3700 + (uint32_t)k, 1.0f), MN);
        float *x = d_f(h_randn(mlp ? MN : MK, 3710 + (uint32_t)k, 1.0f), mlp ? MN : MK);
        float *W = d_f(h_randn(NK, 3720 + (uint32_t)k, 0.2f), NK);
        float *W2 = d_f(h_randn(NK, 3730 + (uint32_t)k, 0.2f), NK);
        float *h = d_f(h_randn(MK, 3740 + (uint32_t)k, 1.0f), MK), *tmp = d_f(h_nan(MK), MK);
        const float *gW = h_randn(NK, 3750 + (uint32_t)k, 1.0f);
        const float *gb = h_randn((size_t)N, 3760 + (uint32_t)k, 1.0f);
        float *dW = d_f(gW, NK), *dW2 = d_f(gW, NK), *dW_ref = d_f(gW, NK);
        float *db = d_f(gb, (size_t)N), *db_ref = d_f(gb, (size_t)N);
        void *dx16 = d_bf16_guarded(NULL, ndx);
        if (mlp)
            GPU->mlp_bwd(c, dx16, dW, NULL, dW2, db, dy, x, h, W, W2, tmp, M, K, N, UMD_GRAD_X);
        else
            GPU->linear_bwd(c, dx16, dW, db, dy, x, W, M, N, K, acc, UMD_GRAD_X);
        char err[512] = "", shape[32];
        int rc = GPU->status(c, err, sizeof err);
        const char *why = acc ? "dx_accumulate" : "no bf16 stage";
        printf("  %s with a bf16 dx, %s: %s\n", op, why, err);
        T_CHECK_MSG(rc != 0, "%s wrote a bf16 dx it cannot (%s)", op, why);
        T_CONTAINS(err, op);
        T_CONTAINS(err, "bf16 gradient tensor (UMD_GRAD_X");
        snprintf(shape, sizeof shape, "dx (%d, %d)", M, mlp ? N : K);
        T_CONTAINS(err, shape);
        T_CONTAINS(err, acc ? "dx_accumulate" : "bf16 stage");
        same_bits(mlp ? "mlp_bwd dW1 left alone" : "linear_bwd dW left alone", dW, dW_ref, NK);
        if (mlp) same_bits("mlp_bwd dW2 left alone", dW2, dW_ref, NK);
        same_bits(mlp ? "mlp_bwd db2 left alone" : "linear_bwd db left alone", db, db_ref,
                  (size_t)N);
        const uint16_t *got = h_down(dx16, ndx * sizeof *got);
        size_t written = 0;
        for (size_t i = 0; i < ndx; i++) written += got[i] != 0xffffu;
        T_CHECK_MSG(written == 0, "%s: %zu values of the refused bf16 dx written", op, written);
        cleanup();
        ctx_free(&c, ws);
    }
    static const umd_limits lim = {2, 16, 160, 2, 16, 4096};
    static const attn_refusal cases[] = {
        {UMD_ATTN_GEMM, 64, 1, "attention_bwd", "attention mode gemm"},
        {UMD_ATTN_FUSED, 64, 1, "attention_bwd", "attention mode fused"},
        {UMD_ATTN_MMA, 32, 1, "attention_bwd", "attention mode mma"},
        {UMD_ATTN_MMA, 80, 1, "attention_bwd", "attention mode mma"},
        {UMD_ATTN_MMA, 64, 1, "attention_bwd", "attention mode mma"}};
    /* a bf16 dqkv (UMD_GRAD), then (i >= 5) a bf16 dout (UMD_GRAD_X: bf16 values) into an fp32
     * dqkv, on each path */
    for (int i = 0; i < 10; i++) {
        const attn_refusal *ak = &cases[i % 5];
        const int dout16 = i >= 5;
        umd_ctx *c = grad_ctx(NULL, &lim, &ws);
        T_REQUIRE(umd_cuda_set_attention(c, ak->mode) == 0);
        const int n = 2, T = 9, heads = 2, hd = ak->hd;
        const size_t nq = (size_t)n * T * 3 * heads * hd, no = (size_t)n * T * heads * hd,
                     nl = (size_t)n * heads * T;
        const uint32_t key = 3670 + 5 * (uint32_t)i;
        uint16_t *gh;
        float *q = d_f(h_randn(nq, key, 1.0f), nq), *g = d_f(h_bf16_values(no, key + 1, &gh), no);
        const void *d_gh = d_up(gh, no * sizeof *gh);
        float *out = d_f(h_randn(no, key + 2, 1.0f), no);
        float *lse = d_f(h_randn(nl, key + 3, 1.0f), nl);
        const float *hq = h_randn(nq, key + 4, 1.0f);
        float *dq = d_f(hq, nq), *dq0 = d_f(hq, nq);
        GPU->attention_bwd(c, dq, dout16 ? d_gh : (const void *)g, q, out, lse, n, T, heads, hd,
                           dout16 ? UMD_GRAD_X : UMD_GRAD);
        if (dout16) refusal_said(c, ak, "bf16 dout", "dout is a bf16 gradient tensor (UMD_GRAD_X)");
        else refusal_said(c, ak, "bf16 dqkv", "bf16 gradient tensor");
        same_bits("attention_bwd dqkv left alone", dq, dq0, nq);
        cleanup();
        ctx_free(&c, ws);
    }
}

/* ---- tokens and losses ------------------------------------------------------------------------- */

static void test_cuda_tokens(void) {
    need_gpu(UMD_MATH_FP32);
    const int shapes[][4] = {{3, 16, 4, 16}, {5, 49, 2, 24}, {2, 64, 1, 130}}; /* n L ncls w */
    for (int s = 0; s < 3; s++) {
        int n = shapes[s][0], L = shapes[s][1], ncls = shapes[s][2], w = shapes[s][3];
        int keep = L / 4 + 1, T = ncls + keep, Td = 1 + L;
        int32_t *order = hkeep(malloc((size_t)n * L * 4)), *slot = hkeep(malloc((size_t)n * L * 4));
        CPU->draw_keep(cc, order, slot, 0, n, L, keep, 3, (uint32_t)s);
        int32_t *dorder = d_up(order, (size_t)n * L * 4), *dslot = d_up(slot, (size_t)n * L * 4);
        size_t ne = (size_t)n * L * w, nx = (size_t)n * T * w, nd = (size_t)n * Td * w;
        float *emb = h_randn(ne, 70, 1.0f), *pos = h_randn((size_t)L * w, 71, 1.0f);
        float *cls = h_randn((size_t)ncls * w, 72, 1.0f), *mask = h_randn((size_t)w, 73, 1.0f);
        float *demb_ = d_f(emb, ne), *dpos_ = d_f(pos, (size_t)L * w), *dcls_ = d_f(cls, (size_t)ncls * w),
              *dmask_ = d_f(mask, (size_t)w);
        float *xenc = h_nan(nx), *dxenc = d_f(xenc, nx);
        CPU->gather_tokens_fwd(cc, xenc, emb, pos, cls, order, n, L, keep, ncls, w);
        GPU->gather_tokens_fwd(gc, dxenc, demb_, dpos_, dcls_, dorder, n, L, keep, ncls, w);
        same("gather_tokens_fwd", dxenc, xenc, nx, 1e-7, 0);
        float *gx = h_randn(nx, 74, 1.0f), *dgx = d_f(gx, nx);
        float *ge = h_nan(ne), *gp = h_randn((size_t)L * w, 75, 1.0f), *gcl = h_randn((size_t)ncls * w, 76, 1.0f);
        float *dge = d_f(ge, ne), *dgp = d_f(gp, (size_t)L * w), *dgcl = d_f(gcl, (size_t)ncls * w);
        CPU->gather_tokens_bwd(cc, ge, gp, gcl, gx, slot, n, L, keep, ncls, w);
        GPU->gather_tokens_bwd(gc, dge, dgp, dgcl, dgx, dslot, n, L, keep, ncls, w);
        same("gather_tokens_bwd demb", dge, ge, ne, 1e-7, 0);
        same("gather_tokens_bwd dpos", dgp, gp, (size_t)L * w, 1e-6, 0);
        same("gather_tokens_bwd dcls", dgcl, gcl, (size_t)ncls * w, 1e-6, 0);
        /* decoder input */
        float *rep = h_randn((size_t)n * w, 77, 1.0f), *drep_ = d_f(rep, (size_t)n * w);
        float *xdec = h_nan(nd), *dxdec = d_f(xdec, nd);
        CPU->decoder_input_fwd(cc, xdec, rep, xenc, mask, pos, slot, n, L, T, ncls, w);
        GPU->decoder_input_fwd(gc, dxdec, drep_, dxenc, dmask_, dpos_, dslot, n, L, T, ncls, w);
        same("decoder_input_fwd", dxdec, xdec, nd, 1e-7, 0);
        float *gd = h_randn(nd, 78, 1.0f), *dgd = d_f(gd, nd);
        float *grep = h_nan((size_t)n * w), *genc = h_randn(nx, 79, 1.0f);
        float *gmask = h_randn((size_t)w, 80, 1.0f), *gpos = h_randn((size_t)L * w, 81, 1.0f);
        for (int b = 0; b < n; b++)
            for (size_t k = (size_t)ncls * w; k < (size_t)T * w; k++) genc[(size_t)b * T * w + k] = NAN;
        float *dgrep = d_f(grep, (size_t)n * w), *dgenc = d_f(genc, nx), *dgmask = d_f(gmask, (size_t)w),
              *dgpos = d_f(gpos, (size_t)L * w);
        CPU->decoder_input_bwd(cc, grep, genc, gmask, gpos, gd, slot, n, L, T, ncls, w);
        GPU->decoder_input_bwd(gc, dgrep, dgenc, dgmask, dgpos, dgd, dslot, n, L, T, ncls, w);
        same("decoder_input_bwd drep", dgrep, grep, (size_t)n * w, 1e-7, 0);
        same("decoder_input_bwd denc", dgenc, genc, nx, 1e-7, 0);
        same("decoder_input_bwd dmask", dgmask, gmask, (size_t)w, 1e-5, 0);
        same("decoder_input_bwd dpos", dgpos, gpos, (size_t)L * w, 1e-6, 0);
        /* cls mean */
        float *mo = h_nan((size_t)n * w), *dmo = d_f(mo, (size_t)n * w);
        CPU->token_mean_fwd(cc, mo, xenc, n, T, ncls, w);
        GPU->token_mean_fwd(gc, dmo, dxenc, n, T, ncls, w);
        same("token_mean_fwd", dmo, mo, (size_t)n * w, 1e-6, 0);
        float *tx = h_randn(nx, 82, 1.0f), *dtx = d_f(tx, nx);
        for (int b = 0; b < n; b++)
            for (size_t k = 0; k < (size_t)ncls * w; k++) tx[(size_t)b * T * w + k] = NAN;
        GPU->upload(gc, dtx, tx, nx * 4);
        CPU->token_mean_bwd(cc, tx, rep, n, T, ncls, w);
        GPU->token_mean_bwd(gc, dtx, drep_, n, T, ncls, w);
        same("token_mean_bwd", dtx, tx, nx, 1e-7, 0);
        /* label rows, duplicates included */
        int32_t idx[5];
        for (int b = 0; b < n; b++) idx[b] = (b * 7) % 3;
        int32_t *didx = d_up(idx, sizeof idx);
        float *tab = h_randn((size_t)4 * w, 83, 1.0f), *dtab = d_f(tab, (size_t)4 * w);
        float *er = h_nan((size_t)n * w), *der = d_f(er, (size_t)n * w);
        CPU->embed_rows_fwd(cc, er, tab, idx, n, w);
        GPU->embed_rows_fwd(gc, der, dtab, didx, n, w);
        same("embed_rows_fwd", der, er, (size_t)n * w, 0, 0);
        CPU->embed_rows_bwd(cc, tab, rep, idx, n, w);
        GPU->embed_rows_bwd(gc, dtab, drep_, didx, n, w);
        same("embed_rows_bwd", dtab, tab, (size_t)4 * w, 1e-7, 0);
        /* masked losses: pred (n, L, pp, 2C) */
        double *dlg = NULL;
        for (int C = 1; C <= 3; C += 2) {
            int pp = 4, P = pp * C;
            size_t npred = (size_t)n * L * 2 * P, ntg = (size_t)n * L * P;
            float *pred = h_randn(npred, 84, 1.0f), *tg = h_randn(ntg, 85, 1.0f);
            float *dpred_ = d_f(pred, npred), *dtg = d_f(tg, ntg);
            for (int sel = 0; sel < 3; sel++)
                for (int half = 0; half < 2; half++) {
                    float *gpred = h_randn(npred, 86, 1.0f), *dgpred = d_f(gpred, npred);
                    double lc = NAN;
                    dlg = d_scalar(dlg);
                    CPU->mse_masked(cc, gpred, pred, tg, slot, n, L, pp, C, half, sel, 0.37f, &lc);
                    GPU->mse_masked(gc, dgpred, dpred_, dtg, dslot, n, L, pp, C, half, sel, 0.37f, dlg);
                    T_NEAR(h_scalar(dlg), lc, 0, 1e-6);
                    same("mse_masked dpred", dgpred, gpred, npred, 1e-6, 0);
                }
        }
    }
    cleanup();
}

/* ---- errors ------------------------------------------------------------------------------------- */

/* A bad launch (a keep order over more tokens than the kernel takes) fails the context with the
 * op's name, later ops do nothing, and a fresh context works. */
static void test_cuda_error_is_recorded(void) {
    need_gpu(UMD_MATH_FP32);
    char err[512];
    umd_ctx *c = NULL;
    T_REQUIRE(GPU->ctx_new(&c, 1, err, sizeof err) == 0);
    T_EQ_INT(GPU->status(c, err, sizeof err), 0);
    int32_t *o = GPU->alloc(c, 8192 * 4), *s = GPU->alloc(c, 8192 * 4);
    T_REQUIRE(o && s);
    GPU->draw_keep(c, o, s, 0, 1, 8192, 10, 1, 1);
    int rc = GPU->status(c, err, sizeof err);
    T_CHECK(rc != 0);
    T_CONTAINS(err, "draw_keep");
    /* an absurd allocation returns NULL instead of failing the process */
    T_CHECK(GPU->alloc(c, (size_t)1 << 50) == NULL);
    GPU->release(c, o);
    GPU->release(c, s);
    GPU->ctx_destroy(&c);
    T_CHECK(c == NULL);
}

/* Recording (a CUDA graph) on a context of its own: without UMDQ_CUDA_GRAPH, record_begin says
 * it is off; with it, a recorded add and sum of squares run only when replayed, each replay reads
 * the inputs as they are then; a recording that tries to wait for the device (a download) fails
 * in record_end, and the context goes on working. */
static void test_cuda_record(void) {
    need_gpu(UMD_MATH_FP32);
    char err[512] = "";
    umd_ctx *c = NULL;
    T_REQUIRE(GPU->ctx_new(&c, 1, err, sizeof err) == 0);
    T_EQ_INT(GPU->record_begin(c, err, sizeof err), UMDQ_EUNSUPPORTED);
    T_CONTAINS(err, "UMDQ_CUDA_GRAPH");
    T_EQ_INT(GPU->replay(c, err, sizeof err), UMDQ_EINVAL);
    GPU->ctx_destroy(&c);

    setenv("UMDQ_CUDA_GRAPH", "1", 1);
    int rc = GPU->ctx_new(&c, 1, err, sizeof err);
    setenv("UMDQ_CUDA_GRAPH", "0", 1);
    T_REQUIRE(rc == 0);
    umd_limits lim = {4, 16, 64, 2, 16, 4096};
    size_t wsb = GPU->workspace_bytes(c, &lim);
    void *ws = GPU->alloc(c, wsb);
    const size_t n = 10007;
    float *a = GPU->alloc(c, n * 4), *b = GPU->alloc(c, n * 4), *y = GPU->alloc(c, n * 4);
    double *ss = GPU->alloc(c, sizeof(double));
    T_REQUIRE(ws && a && b && y && ss);
    GPU->set_workspace(c, ws, wsb);
    float *h = malloc(n * 4), *hy = malloc(n * 4);
    for (size_t i = 0; i < n; i++) h[i] = 1.0f;
    GPU->upload(c, a, h, n * 4);
    GPU->upload(c, b, h, n * 4);
    GPU->fill(c, y, n, -7.0f);
    T_EQ_INT(GPU->record_begin(c, err, sizeof err), 0);
    GPU->add(c, y, a, b, n);
    GPU->sumsq(c, ss, y, n);
    T_EQ_INT(GPU->record_end(c, err, sizeof err), 0);
    GPU->download(c, hy, y, n * 4);
    T_CHECK(hy[0] == -7.0f && hy[n - 1] == -7.0f); /* recorded, not run */
    for (int r = 1; r <= 3; r++) {
        for (size_t i = 0; i < n; i++) h[i] = (float)r;
        GPU->upload(c, a, h, n * 4); /* new input between replays */
        T_EQ_INT(GPU->replay(c, err, sizeof err), 0);
        GPU->download(c, hy, y, n * 4);
        double s = 0;
        GPU->download(c, &s, ss, sizeof s);
        T_CHECK(hy[0] == (float)r + 1.0f && hy[n - 1] == (float)r + 1.0f);
        T_NEAR(s, (double)n * (r + 1) * (r + 1), 0, 1e-12);
    }
    T_EQ_INT(GPU->status(c, err, sizeof err), 0);
    /* a download cannot be recorded: the recording fails, nothing ran, the context still works */
    T_EQ_INT(GPU->record_begin(c, err, sizeof err), 0);
    GPU->fill(c, y, n, 5.0f);
    GPU->download(c, hy, y, n * 4);
    rc = GPU->record_end(c, err, sizeof err);
    printf("  a recording with a download: %s\n", err);
    T_CHECK(rc != 0);
    T_EQ_INT(GPU->replay(c, err, sizeof err), UMDQ_EINVAL); /* the old one was dropped */
    T_EQ_INT(GPU->status(c, err, sizeof err), 0);
    GPU->add(c, y, a, b, n);
    GPU->download(c, hy, y, n * 4);
    T_CHECK(hy[0] == 4.0f);
    T_EQ_INT(GPU->status(c, err, sizeof err), 0);
    free(h);
    free(hy);
    void *all[] = {ws, a, b, y, ss};
    for (int i = 0; i < 5; i++) GPU->release(c, all[i]);
    GPU->ctx_destroy(&c);
}

int main(void) {
    char err[256];
    fx_cuda_switches_off();
    if (umd_cuda_devices(err, sizeof err) <= 0) snprintf(no_gpu, sizeof no_gpu, "%s", err);
    CPU = umd_ops_cpu();
    if (CPU->ctx_new(&cc, 1, err, sizeof err) != 0) return 1;
    size_t b = CPU->workspace_bytes(cc, &LIM);
    cws = CPU->alloc(cc, b);
    CPU->set_workspace(cc, cws, b);
    if (!no_gpu[0] && use_math(UMD_MATH_FP32) != 0 && !no_gpu[0])
        snprintf(no_gpu, sizeof no_gpu, "the CUDA context could not be set up");
    T_RUN(test_cuda_profile_floors);
    T_RUN(test_cuda_elementwise);
    T_RUN(test_cuda_optimiser);
    T_RUN(test_cuda_random_streams);
    T_RUN(test_cuda_patches_noise_embed);
    T_RUN(test_cuda_dense_fp32);
    T_RUN(test_cuda_dense_tf32);
    T_RUN(test_cuda_dense_bf16);
    T_RUN(test_cuda_mlp_fp32);
    T_RUN(test_cuda_mlp_tf32);
    T_RUN(test_cuda_mlp_bf16);
    T_RUN(test_cuda_linear_bf16_operands);
    T_RUN(test_cuda_linear_bf16_y);
    T_RUN(test_cuda_linear_bf16_y_via_fp32);
    T_RUN(test_cuda_linear_bf16_bias);
    T_RUN(test_cuda_mlp_bf16_operands);
    T_RUN(test_cuda_bf16_operands_contexts);
    T_RUN(test_cuda_mlp_bf16_hidden);
    T_RUN(test_cuda_hidden_operand);
    T_RUN(test_cuda_mlp_gelu_epilogue);
    T_RUN(test_cuda_mlp_scratch);
    T_RUN(test_cuda_mlp_bf16_dh);
    T_RUN(test_cuda_mlp_bf16_y);
    T_RUN(test_cuda_layernorm);
    T_RUN(test_cuda_residual_layernorm);
    T_RUN(test_cuda_layernorm_bf16_operands);
    T_RUN(test_cuda_gated_residual_bf16_y);
    T_RUN(test_cuda_attention_fp32);
    T_RUN(test_cuda_attention_tf32);
    T_RUN(test_cuda_attention_bf16);
    T_RUN(test_cuda_attention_head_groups);
    T_RUN(test_cuda_attention_bf16_qkv);
    T_RUN(test_cuda_attention_operand);
    T_RUN(test_cuda_attention_kv32);
    T_RUN(test_cuda_attention_split);
    T_RUN(test_cuda_attention_ds);
    T_RUN(test_cuda_attention_ds_max_t);
    T_RUN(test_cuda_attention_fwd32);
    T_RUN(test_cuda_attention_bf16_out);
    T_RUN(test_cuda_attention_bf16_out_refused);
    T_RUN(test_cuda_branch_operand);
    T_RUN(test_cuda_grad_operand);
    T_RUN(test_cuda_gated_residual_bf16_grad);
    T_RUN(test_cuda_layernorm_bf16_grad);
    T_RUN(test_cuda_attention_bf16_grad);
    T_RUN(test_cuda_linear_bf16_grad);
    T_RUN(test_cuda_mlp_bf16_grad);
    T_RUN(test_cuda_mlp_one_pass);
    T_RUN(test_cuda_bf16_grad_refused);
    T_RUN(test_cuda_gemm_tune);
    T_RUN(test_cuda_switch_values);
    T_RUN(test_cuda_tokens);
    T_RUN(test_cuda_error_is_recorded);
    T_RUN(test_cuda_record);
    if (gc) {
        cleanup();
        GPU->release(gc, gws);
        GPU->ctx_destroy(&gc);
    }
    CPU->release(cc, cws);
    CPU->ctx_destroy(&cc);
    return t_done();
}
