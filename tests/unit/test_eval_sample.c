/* test_eval_sample.c: the DDIM sampler: its timestep list, one update against the closed form
 * (eta = 0 recovers the noise-free DDIM path exactly; eta = 1 adds sigma z with sigma from the
 * schedule), clipping of x0_hat, the Philox normals, a whole guided sampling run of a tiny model
 * (finite, in [-1, 1], deterministic, independent of the batch split), and the PNG grid read
 * back with libpng. */
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "config.h"
#include "eval/net.h"
#include "eval/sample.h"
#include "model.h"
#include "model_internal.h"
#include "ops.h"
#include "t.h"
#include "umdq.h"

static void test_eval_sample_timesteps(void) {
    int ts[1002];
    int n = umd_ddim_timesteps(1000, 125, ts);
    T_EQ_INT(n, 126);
    T_EQ_INT(ts[0], 999);
    T_EQ_INT(ts[1], 991);
    T_EQ_INT(ts[124], 7);
    T_EQ_INT(ts[125], 0);
    for (int i = 1; i < n; i++) T_CHECK(ts[i] < ts[i - 1]);
    n = umd_ddim_timesteps(1000, 1000, ts);
    T_EQ_INT(n, 1000);
    T_EQ_INT(ts[999], 0);
    n = umd_ddim_timesteps(1000, 1, ts);
    T_EQ_INT(n, 2);
    T_EQ_INT(ts[0], 999);
    T_EQ_INT(ts[1], 0);
    n = umd_ddim_timesteps(1000, 3, ts); /* k = 333 */
    T_EQ_INT(n, 4);
    T_EQ_INT(ts[1], 666);
    T_EQ_INT(ts[2], 333);
    T_EQ_INT(ts[3], 0);
}

static void test_eval_sample_ddim_step(void) {
    double abar[1000];
    umd_schedule_abar(UMD_SCHEDULE_COSINE, 1000, abar);
    const int t = 600, tp = 592;
    const size_t D = 5;
    const float x0[5] = {-0.9f, -0.3f, 0.0f, 0.4f, 0.95f};
    const float eps[5] = {1.2f, -0.7f, 0.3f, 2.0f, -1.5f};
    const float z[5] = {0.5f, -1.0f, 1.5f, 0.25f, -0.75f};
    float xt[5], prev[5], x0o[5];
    for (size_t i = 0; i < D; i++) xt[i] = (float)(sqrt(abar[t]) * x0[i] + sqrt(1 - abar[t]) * eps[i]);
    /* eta = 0 with the true eps: x_prev is x0 noised to tp with the same eps */
    umd_ddim_step(xt, eps, D, abar[t], abar[tp], 0.0, z, prev, x0o);
    for (size_t i = 0; i < D; i++) {
        T_NEAR(x0o[i], x0[i], 1e-5, 0);
        T_NEAR(prev[i], sqrt(abar[tp]) * x0[i] + sqrt(1 - abar[tp]) * eps[i], 1e-5, 0);
    }
    /* eta = 1: sigma = sqrt((1 - a_p) / (1 - a_t)) sqrt(1 - a_t / a_p) */
    umd_ddim_step(xt, eps, D, abar[t], abar[tp], 1.0, z, prev, NULL);
    double sigma = sqrt((1 - abar[tp]) / (1 - abar[t])) * sqrt(1 - abar[t] / abar[tp]);
    T_CHECK(sigma > 0.01 && sigma < 1);
    for (size_t i = 0; i < D; i++)
        T_NEAR(prev[i], sqrt(abar[tp]) * x0[i] + sqrt(1 - abar[tp] - sigma * sigma) * eps[i] + sigma * z[i],
               1e-5, 0);
    /* x0_hat beyond [-1, 1] is clipped and eps recomputed from the clipped value */
    const float big[1] = {-5.0f};
    float xt1[1], p1[1], c1[1];
    xt1[0] = 0.2f;
    umd_ddim_step(xt1, big, 1, abar[t], abar[tp], 0.0, NULL, p1, c1);
    double x0h = (0.2 - sqrt(1 - abar[t]) * -5.0) / sqrt(abar[t]);
    T_CHECK(x0h > 1);
    T_NEAR(c1[0], 1.0, 0, 0);
    double e2 = (0.2 - sqrt(abar[t]) * 1.0) / sqrt(1 - abar[t]);
    T_NEAR(p1[0], sqrt(abar[tp]) + sqrt(1 - abar[tp]) * e2, 1e-5, 0);
}

static void test_eval_sample_normals(void) {
    const size_t n = 40000;
    float *z = malloc(n * sizeof(float)), *z2 = malloc(7 * sizeof(float));
    T_REQUIRE(z && z2);
    umd_sample_normals(42, 3, 5, n, z);
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        s += z[i];
        s2 += (double)z[i] * z[i];
    }
    T_NEAR(s / n, 0, 0.02, 0);
    T_NEAR(s2 / n, 1, 0.03, 0);
    /* named by (seed, step, sample): the same name gives the same numbers, another does not */
    umd_sample_normals(42, 3, 5, 7, z2);
    float z3[7];
    umd_sample_normals(42, 3, 5, 7, z3);
    T_CHECK(memcmp(z3, z2, 7 * sizeof(float)) == 0);
    umd_sample_normals(42, 4, 5, 7, z3);
    T_CHECK(memcmp(z3, z2, 7 * sizeof(float)) != 0);
    umd_sample_normals(42, 3, 6, 7, z3);
    T_CHECK(memcmp(z3, z2, 7 * sizeof(float)) != 0);
    free(z);
    free(z2);
}

static umd_config tiny_config(void) {
    umd_config c;
    memset(&c, 0, sizeof c);
    c.patch = 4;
    c.width = 16;
    c.depth = 1;
    c.dec_depth = 1;
    c.heads = 2;
    c.mlp_ratio = 2;
    c.cls_tokens = 2;
    c.r_t0 = 0.5;
    c.mask_ratio = 0.375;
    c.mask_ratio_t0 = 0.75;
    c.schedule = UMD_SCHEDULE_COSINE;
    c.timesteps = 1000;
    c.labels = 1;
    c.batch = 8;
    c.threads = 2;
    return c;
}

/* The forward net (every row a fully visible "clean" row told t_net = idx + 1) predicts what the
 * training step predicts for a noisy row with nothing masked: same x0 and eps heads, same rep. */
static void test_eval_sample_forward_matches_step(void) {
    umd_config cfg = tiny_config();
    cfg.threads = 1;
    cfg.r_t0 = 0;
    cfg.mask_ratio = 0;
    cfg.batch = 4;
    const umd_shape shape = {1, 8, 8, 3, 4};
    char err[512];
    umd_model *m = NULL;
    T_REQUIRE(umd_model_new(&m, &cfg, &shape, umd_ops_cpu(), err, sizeof err) == 0);
    umd_model_init(m, 9);
    size_t nf = umd_model_sizes(m)->nfloats;
    float *p = umd_model_params(m);
    for (size_t i = 0; i < nf; i++) p[i] += 0.05f * (float)cos(0.61 * (double)i);
    const int B = 4, L = 4, P2 = 2 * 16;
    float x0[4 * 64], eps[4 * 64], xt[4 * 64];
    int32_t t_net[4] = {1, 300, 700, 1000}, order[16], y[4] = {0, 2, 1, 3 /* null */};
    for (int i = 0; i < B * 64; i++) {
        x0[i] = (float)sin(0.3 * i);
        eps[i] = (float)cos(0.7 * i + 1);
    }
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++) order[b * L + l] = l;
    umd_model_load_batch(m, x0, y);
    umd_model_set_draws(m, t_net, eps, order, y);
    umd_model_step(m, 0, NULL);
    const float *want_pred = m->rep[0].A.pred, *want_rep = m->rep[0].A.rep;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < 64; i++)
            xt[b * 64 + i] = m->sqrt_abar[t_net[b] - 1] * x0[b * 64 + i] +
                             m->sqrt_1m_abar[t_net[b] - 1] * eps[b * 64 + i];
    umd_evalnet *net = NULL;
    T_REQUIRE(umd_evalnet_new(&net, UMD_EVALNET_FORWARD, &cfg, &shape, 4, 0, umd_ops_cpu(), err, sizeof err) == 0);
    T_REQUIRE(umd_evalnet_load(net, m, 0, err, sizeof err) == 0);
    float pred[4 * 4 * 32], rep[4 * 16];
    umd_evalnet_forward(net, xt, t_net, y, B, rep, pred);
    double worst = 0, scale = 0;
    for (int i = 0; i < B * L * P2; i++) {
        worst = fmax(worst, fabs(pred[i] - want_pred[i]));
        scale = fmax(scale, fabs(want_pred[i]));
    }
    for (int i = 0; i < B * 16; i++) worst = fmax(worst, fabs(rep[i] - want_rep[i]));
    T_CHECK_MSG(scale > 0.01 && worst < 1e-4, "max difference %g (scale %g)", worst, scale);
    /* fewer rows than the batch: the same rows come back */
    float pred2[4 * 4 * 32];
    umd_evalnet_forward(net, xt, t_net, y, 2, NULL, pred2);
    double w2 = 0;
    for (int i = 0; i < 2 * L * P2; i++) w2 = fmax(w2, fabs(pred2[i] - pred[i]));
    T_CHECK_MSG(w2 < 1e-5, "2 rows vs 4: %g", w2);
    umd_evalnet_destroy(&net);
    umd_model_destroy(&m);
}

static void test_eval_sample_guided_run(void) {
    umd_config cfg = tiny_config();
    const umd_shape shape = {1, 8, 8, 3, 8};
    char err[512];
    umd_model *m = NULL;
    T_REQUIRE(umd_model_new(&m, &cfg, &shape, umd_ops_cpu(), err, sizeof err) == 0);
    umd_model_init(m, 5);
    /* init leaves the adaLN and head zero: perturb every parameter so the net is not trivial */
    {
        size_t nf = umd_model_sizes(m)->nfloats;
        float *p = umd_model_params(m); /* host memory on the CPU backend */
        for (size_t i = 0; i < nf; i++) p[i] += 0.05f * (float)sin(0.37 * (double)i);
    }
    double abar[1000];
    umd_schedule_abar(cfg.schedule, 1000, abar);
    const int n = 6;
    int32_t y[6] = {0, 1, 2, 0, 1, 2};
    float *a = malloc(sizeof(float) * n * 64), *b = malloc(sizeof(float) * n * 64);
    float *c = malloc(sizeof(float) * n * 64);
    T_REQUIRE(a && b && c);
    umd_ddim_opts o = {5, 1.0, 2.0, 77};
    umd_evalnet *net8 = NULL, *net4 = NULL;
    T_REQUIRE(umd_evalnet_new(&net8, UMD_EVALNET_FORWARD, &cfg, &shape, 8, 0, umd_ops_cpu(), err, sizeof err) == 0);
    T_REQUIRE(umd_evalnet_new(&net4, UMD_EVALNET_FORWARD, &cfg, &shape, 4, 0, umd_ops_cpu(), err, sizeof err) == 0);
    T_REQUIRE(umd_evalnet_load(net8, m, 0, err, sizeof err) == 0);
    T_REQUIRE(umd_evalnet_load(net4, m, 0, err, sizeof err) == 0);
    T_REQUIRE(umd_ddim_sample(net8, abar, 1000, y, n, &o, a, NULL, NULL, err, sizeof err) == 0);
    T_REQUIRE(umd_ddim_sample(net8, abar, 1000, y, n, &o, b, NULL, NULL, err, sizeof err) == 0);
    T_CHECK(memcmp(a, b, sizeof(float) * n * 64) == 0);
    double lo = 1e9, hi = -1e9, diff = 0;
    for (int i = 0; i < n * 64; i++) {
        T_CHECK(isfinite(a[i]));
        lo = fmin(lo, a[i]);
        hi = fmax(hi, a[i]);
    }
    T_CHECK_MSG(lo >= -1 && hi <= 1 && hi - lo > 0.1, "samples in [%g, %g]", lo, hi);
    /* another split of the batch (guided: 2 samples per pass of 4 rows) gives the same samples */
    T_REQUIRE(umd_ddim_sample(net4, abar, 1000, y, n, &o, c, NULL, NULL, err, sizeof err) == 0);
    for (int i = 0; i < n * 64; i++) diff = fmax(diff, fabs(a[i] - c[i]));
    T_CHECK_MSG(diff < 1e-4, "batch 8 vs 4: %g", diff);
    /* the guidance scale matters; a wrong net batch is refused */
    umd_ddim_opts o1 = {5, 1.0, 1.0, 77};
    T_REQUIRE(umd_ddim_sample(net8, abar, 1000, y, n, &o1, b, NULL, NULL, err, sizeof err) == 0);
    T_CHECK(memcmp(a, b, sizeof(float) * n * 64) != 0);
    umd_evalnet_destroy(&net8);
    umd_evalnet_destroy(&net4);
    T_CHECK(net8 == NULL);
    umd_model_destroy(&m);
    free(a);
    free(b);
    free(c);
}

static void test_eval_sample_png_grid(void) {
    const int n = 5, C = 1, H = 6, W = 4;
    float img[5 * 6 * 4];
    for (int i = 0; i < n * H * W; i++) img[i] = (float)((i % 7) / 3.0 - 1.0);
    img[0] = -1.0f;
    img[1] = 1.0f;
    char path[] = "/tmp/umdq-test-grid-XXXXXX";
    int fd = mkstemp(path);
    T_REQUIRE(fd >= 0);
    close(fd);
    char err[256];
    T_REQUIRE(umd_png_write_grid(path, img, n, C, H, W, err, sizeof err) == 0);
    FILE *f = fopen(path, "rb");
    T_REQUIRE(f != NULL);
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    T_REQUIRE(png && info);
    if (setjmp(png_jmpbuf(png))) T_REQUIRE(!"libpng read error");
    png_init_io(png, f);
    png_read_info(png, info);
    /* 3 per row, 2 rows, 2-pixel gaps */
    T_EQ_INT(png_get_image_width(png, info), 3 * (W + 2) + 2);
    T_EQ_INT(png_get_image_height(png, info), 2 * (H + 2) + 2);
    T_EQ_INT(png_get_color_type(png, info), PNG_COLOR_TYPE_GRAY);
    unsigned char row[64];
    png_read_row(png, row, NULL); /* gap row */
    T_EQ_INT(row[2], 0);
    png_read_row(png, row, NULL);
    png_read_row(png, row, NULL); /* first image row */
    T_EQ_INT(row[2], 0);   /* -1 */
    T_EQ_INT(row[3], 255); /* +1 */
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    remove(path);
    T_CHECK(umd_png_write_grid("/nonexistent-dir/x.png", img, n, C, H, W, err, sizeof err) != 0);
    T_CONTAINS(err, "/nonexistent-dir/x.png");
}

int main(void) {
    T_RUN(test_eval_sample_timesteps);
    T_RUN(test_eval_sample_ddim_step);
    T_RUN(test_eval_sample_normals);
    T_RUN(test_eval_sample_forward_matches_step);
    T_RUN(test_eval_sample_guided_run);
    T_RUN(test_eval_sample_png_grid);
    return t_done();
}
