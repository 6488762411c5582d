/* eval.c: the evaluation driver (see eval.h): features for the probes, the validation losses,
 * samples and FID, each reported as it is known. Host buffers are sized by the evaluation's
 * counts (eval.*) and freed through one fail label per function. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "classifier.h"
#include "eval.h"
#include "linalg.h"
#include "net.h"
#include "philox.h"
#include "probe.h"
#include "sample.h"
#include "umdq.h"
#include "util.h"

/* Philox step words of the evaluation's draws (stream PHILOX_EVAL) */
#define DRAW_PROBE_NOISE 0x40000000u
#define SEED_SAMPLES_XOR 0x5eed5a3b1e5ULL

static void elog(const umd_events *ev, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void elog(const umd_events *ev, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (ev && ev->log) ev->log(ev->ctx, line);
    else fprintf(stderr, "umd: %s\n", line);
}

/* What the evaluation is doing, for its polls: should_stop, and about once a second
 * eval_progress (the sign of life a supervisor watching the step needs). */
typedef struct {
    const umd_events *ev; /* borrowed; may be NULL */
    const char *phase;    /* static text */
    double last_beat;     /* mono_s of the last eval_progress call */
} eval_watch;

#define EVAL_BEAT_S 1.0

/* 1 when the run is asked to stop; reports the phase when a beat is due. */
static int watch_poll(void *ctx, int64_t done, int64_t total) {
    eval_watch *w = ctx;
    const umd_events *ev = w->ev;
    if (!ev) return 0;
    if (ev->should_stop && ev->should_stop(ev->ctx)) return 1;
    double now = mono_s();
    if (ev->eval_progress && now - w->last_beat >= EVAL_BEAT_S) {
        w->last_beat = now;
        ev->eval_progress(ev->ctx, w->phase, done, total);
    }
    return 0;
}

static void log_cb(void *ctx, const char *line) { elog(((eval_watch *)ctx)->ev, "%s", line); }

static void result(const umd_events *ev, const char *key, double v, const char *text) {
    if (ev && ev->result) ev->result(ev->ctx, key, v, text);
}

/* Enter phase and poll: UMDQ_ECANCELLED with a message when the run is asked to stop. */
static int stopped(eval_watch *w, const char *phase, int64_t done, int64_t total, char *err,
                   size_t errlen) {
    w->phase = phase;
    if (watch_poll(w, done, total)) {
        snprintf(err, errlen, "stopped on request during the evaluation (%s)", phase);
        return UMDQ_ECANCELLED;
    }
    return 0;
}

/* A cancelled lower part names itself; say where in the evaluation it was. */
static int cancelled_in(int rc, const char *phase, char *err, size_t errlen) {
    if (rc == UMDQ_ECANCELLED) {
        size_t n = strlen(err);
        if (n + 1 < errlen) snprintf(err + n, errlen - n, " (evaluation: %s)", phase);
    }
    return rc;
}

void umd_eval_cache_dir(const umd_config *cfg, const char *workdir, char *out, size_t n) {
    const char *env = getenv("UMDQ_CACHE"), *home = getenv("HOME");
    if (cfg->cache_dir[0]) snprintf(out, n, "%s", cfg->cache_dir);
    else if (env && *env) snprintf(out, n, "%s", env);
    else if (workdir && *workdir) snprintf(out, n, "%s/../cache", workdir);
    else if (home && *home) snprintf(out, n, "%s/.cache/umdq", home);
    else if (n) out[0] = 0;
}

static int64_t clamp_count(int64_t want, int64_t have) {
    return want > 0 && want < have ? want : have;
}

/* Rows idx[0..n) of s (idx NULL: rows 0..n-1) into x (n, C, H, W) and y (n). */
static void gather(const umd_split *s, const int64_t *idx, int64_t n, float *x, int32_t *y) {
    const size_t D = (size_t)s->c * s->h * s->w;
    if (!idx) {
        umd_data_slice(s, 0, (int)n, x, y);
        return;
    }
    for (int64_t i = 0; i < n; i++) umd_data_slice(s, idx[i], 1, x + (size_t)i * D, y ? y + i : NULL);
}

/* rep features (n, w) of images x (n, C, H, W): at t = 0, or noised at noise_index (>= 0) with
 * Philox noise named by the image's row id (ids[i], or i). */
static int rep_features(umd_evalnet *net, const float *x, const int64_t *ids, int64_t n,
                        int noise_index, const double *abar, uint64_t seed, float *feat,
                        float *xb, int32_t *tb, eval_watch *w, char *err, size_t errlen) {
    const umd_dims *d = umd_model_dims(umd_evalnet_model(net));
    const size_t D = (size_t)d->C * d->H * d->W;
    const int B = umd_evalnet_batch(net);
    for (int64_t s0 = 0; s0 < n; s0 += B) {
        int rc = stopped(w, "rep features", s0, n, err, errlen);
        if (rc) return rc;
        int k = (int)(n - s0 < B ? n - s0 : B);
        memcpy(xb, x + (size_t)s0 * D, (size_t)k * D * sizeof(float));
        for (int b = 0; b < k; b++) {
            tb[b] = 0;
            if (noise_index < 0) continue;
            float *row = xb + (size_t)b * D;
            float *z = xb + (size_t)B * D; /* scratch row past the batch */
            umd_sample_normals(seed, DRAW_PROBE_NOISE, ids ? ids[s0 + b] : s0 + b, D, z);
            double a = sqrt(abar[noise_index]), s = sqrt(1 - abar[noise_index]);
            for (size_t e = 0; e < D; e++) row[e] = (float)(a * row[e] + s * z[e]);
            tb[b] = noise_index + 1;
        }
        umd_evalnet_forward(net, xb, tb, NULL, k, feat + (size_t)s0 * d->w, NULL);
    }
    return 0;
}

int umd_eval_representation(umd_model *model, const umd_config *cfg, const umd_split *train,
                            const umd_split *test, const umd_events *ev, char *err,
                            size_t errlen) {
    umd_evalnet *net = NULL, *vnet = NULL;                        /* owned */
    int64_t *shot_idx = NULL;                                     /* owned */
    float *x_shot = NULL, *x_lin = NULL, *x_test = NULL;          /* owned: images = pixel features */
    int32_t *y_shot = NULL, *y_lin = NULL, *y_test = NULL, *tb = NULL; /* owned */
    float *f_shot = NULL, *f_lin = NULL, *f_test = NULL, *xb = NULL;   /* owned */
    double *abar = NULL;                                          /* owned */
    int rc = UMDQ_ENOMEM;
    const umd_ops *ops = umd_model_ops(model);
    const umd_dims *md = umd_model_dims(model);
    const int w = md->w, classes = train->classes, B = cfg->eval_batch;
    const size_t D = (size_t)train->c * train->h * train->w;
    const umd_shape shape = {train->c, train->h, train->w, train->classes, B};
    double t0 = mono_s();
    eval_watch watch = {ev, "start", 0};

    rc = umd_evalnet_new(&net, UMD_EVALNET_FORWARD, cfg, &shape, B, 0, ops, err, errlen);
    if (rc) goto fail;
    rc = umd_evalnet_load(net, model, 0, err, errlen);
    if (rc) goto fail;
    rc = UMDQ_ENOMEM;
    abar = malloc((size_t)cfg->timesteps * sizeof(double));
    xb = malloc(((size_t)B + 1) * D * sizeof(float));
    tb = malloc((size_t)B * sizeof(int32_t));
    const int64_t n_lin = clamp_count(cfg->probe_train, train->n);
    const int64_t n_test = clamp_count(cfg->probe_test, test->n);
    shot_idx = malloc((size_t)classes * cfg->probe_shots * sizeof(int64_t));
    if (!abar || !xb || !tb || !shot_idx) goto oom;
    umd_schedule_abar(cfg->schedule, cfg->timesteps, abar);
    const int64_t n_shot = umd_probe_pick_shots(train->labels, train->n, classes, cfg->probe_shots,
                                                shot_idx);
    x_shot = malloc((size_t)n_shot * D * sizeof(float));
    x_lin = malloc((size_t)n_lin * D * sizeof(float));
    x_test = malloc((size_t)n_test * D * sizeof(float));
    y_shot = malloc((size_t)n_shot * sizeof(int32_t));
    y_lin = malloc((size_t)n_lin * sizeof(int32_t));
    y_test = malloc((size_t)n_test * sizeof(int32_t));
    f_shot = malloc((size_t)n_shot * w * sizeof(float));
    f_lin = malloc((size_t)n_lin * w * sizeof(float));
    f_test = malloc((size_t)n_test * w * sizeof(float));
    if (!x_shot || !x_lin || !x_test || !y_shot || !y_lin || !y_test || !f_shot || !f_lin || !f_test)
        goto oom;
    gather(train, shot_idx, n_shot, x_shot, y_shot);
    gather(train, NULL, n_lin, x_lin, y_lin);
    gather(test, NULL, n_test, x_test, y_test);

    /* features: DiT-like runs (no clean rows in training) are probed at a noisy input */
    const int noise_index = cfg->r_t0 == 0 ? cfg->probe_noise_index : -1;
    const uint64_t seed = cfg->seed;
    rc = rep_features(net, x_shot, shot_idx, n_shot, noise_index, abar, seed, f_shot, xb, tb,
                      &watch, err, errlen);
    if (rc == 0)
        rc = rep_features(net, x_lin, NULL, n_lin, noise_index, abar, seed, f_lin, xb, tb, &watch,
                          err, errlen);
    if (rc == 0)
        rc = rep_features(net, x_test, NULL, n_test, noise_index, abar, seed ^ 0x7e57ULL, f_test,
                          xb, tb, &watch, err, errlen);
    if (rc) goto fail;
    if ((rc = umd_evalnet_status(net, err, errlen))) goto fail;
    elog(ev, "evaluation: rep features of %lld + %lld training and %lld test images at %s %d "
         "(%.1f s)", (long long)n_shot, (long long)n_lin, (long long)n_test,
         noise_index >= 0 ? "noise index" : "t =", noise_index >= 0 ? noise_index : 0,
         mono_s() - t0);
    if ((rc = stopped(&watch, "ridge probe", 0, 0, err, errlen))) goto fail;

    double top1;
    umd_linear_probe_opts lo = {cfg->probe_epochs, 256, cfg->probe_lr, seed, watch_poll, &watch};
    rc = umd_probe_ridge(f_shot, y_shot, n_shot, f_test, y_test, n_test, w, classes,
                         cfg->ridge_lambda, &top1, NULL, err, errlen);
    if (rc) goto fail;
    result(ev, "probe_ridge_top1", top1, NULL);
    double ridge_model = top1;
    watch.phase = "linear probe";
    rc = umd_probe_linear(f_lin, y_lin, n_lin, f_test, y_test, n_test, w, classes, &lo, &top1,
                          NULL, err, errlen);
    if (rc) goto fail;
    result(ev, "probe_linear_top1", top1, NULL);
    double lin_model = top1;
    if ((rc = stopped(&watch, "pixel ridge probe", 0, 0, err, errlen))) goto fail;
    rc = umd_probe_ridge(x_shot, y_shot, n_shot, x_test, y_test, n_test, (int)D, classes,
                         cfg->ridge_lambda, &top1, NULL, err, errlen);
    if (rc) goto fail;
    result(ev, "pixel_ridge_top1", top1, NULL);
    double ridge_pix = top1;
    watch.phase = "pixel linear probe";
    rc = umd_probe_linear(x_lin, y_lin, n_lin, x_test, y_test, n_test, (int)D, classes, &lo, &top1,
                          NULL, err, errlen);
    if (rc) goto fail;
    result(ev, "pixel_linear_top1", top1, NULL);
    elog(ev, "evaluation: %d-shot ridge probe top-1 %.4f (pixels %.4f), linear probe %.4f "
         "(pixels %.4f) (%.1f s)", cfg->probe_shots, ridge_model, ridge_pix, lin_model, top1,
         mono_s() - t0);
    if ((rc = stopped(&watch, "validation losses", 0, 0, err, errlen))) goto fail;

    /* validation losses on the first eval.val_images test images, whole batches (the last one
     * wraps to the first images) */
    const int64_t n_val = clamp_count(cfg->val_images, test->n);
    if (cfg->val_images > 0 && n_val > 0) {
        int32_t *y = malloc((size_t)B * sizeof(int32_t)); /* owned; xb holds B rows */
        if (!y) goto oom;
        double sums[2] = {0, 0};
        for (int kind = 0; kind < 2; kind++) {
            rc = umd_evalnet_new(&vnet, kind == 0 ? UMD_EVALNET_DENOISE : UMD_EVALNET_RECON, cfg,
                                 &shape, B, cfg->recon_mask, ops, err, errlen);
            if (rc == 0) rc = umd_evalnet_load(vnet, model, 0, err, errlen);
            if (rc) {
                free(y);
                goto fail;
            }
            int64_t nb = 0;
            for (int64_t s0 = 0; s0 < n_val; s0 += B, nb++) {
                if ((rc = stopped(&watch, "validation losses", s0, n_val, err, errlen))) {
                    free(y);
                    goto fail;
                }
                umd_data_slice(test, s0, B, xb, y);
                umd_losses L;
                umd_evalnet_losses(vnet, xb, y, seed ^ 0x7a1ULL, nb, &L);
                sums[kind] += kind == 0 ? L.loss_noisy : L.loss_clean;
            }
            sums[kind] /= (double)(nb > 0 ? nb : 1);
            rc = umd_evalnet_status(vnet, err, errlen);
            umd_evalnet_destroy(&vnet);
            if (rc) {
                free(y);
                goto fail;
            }
        }
        free(y);
        result(ev, "val_denoise_loss", sums[0], NULL);
        result(ev, "val_mask_mse", sums[1], NULL);
        elog(ev, "evaluation: validation denoising loss %.5f, masked (%.2f) reconstruction MSE "
             "%.5f over %lld test images", sums[0], cfg->recon_mask, sums[1], (long long)n_val);
    }
    rc = 0;
    goto fail;
oom:
    snprintf(err, errlen, "out of memory for the evaluation's probes");
    rc = UMDQ_ENOMEM;
fail:
    umd_evalnet_destroy(&net);
    umd_evalnet_destroy(&vnet);
    free(shot_idx);
    free(x_shot);
    free(x_lin);
    free(x_test);
    free(y_shot);
    free(y_lin);
    free(y_test);
    free(f_shot);
    free(f_lin);
    free(f_test);
    free(xb);
    free(tb);
    free(abar);
    return rc;
}

/* umd_classifier_features in pieces, polled between them. */
static int fid_features(umd_classifier *clf, const float *x, int64_t n, float *feat,
                        eval_watch *w, char *err, size_t errlen) {
    const int64_t piece = 256;
    const size_t D = umd_classifier_input_size(clf);
    for (int64_t s0 = 0; s0 < n; s0 += piece) {
        int rc = stopped(w, "FID features", s0, n, err, errlen);
        if (rc) return rc;
        int64_t k = n - s0 < piece ? n - s0 : piece;
        umd_classifier_features(clf, x + (size_t)s0 * D, k,
                                feat + (size_t)s0 * UMD_CLASSIFIER_FEATURES);
    }
    return 0;
}

int umd_eval_generation(umd_model *model, int use_ema, const umd_config *gen_cfg,
                        const umd_split *train, const umd_split *test, const umd_events *ev,
                        char *err, size_t errlen) {
    const umd_config *cfg = gen_cfg;
    umd_evalnet *net = NULL;           /* owned */
    umd_classifier *clf = NULL;        /* owned */
    float *samples = NULL, *feat = NULL, *xr = NULL; /* owned */
    int32_t *y = NULL;                 /* owned */
    double *abar = NULL, *mu1 = NULL, *S1 = NULL, *mu2 = NULL, *S2 = NULL; /* owned */
    int rc;
    const int64_t n = cfg->fid_samples;
    if (n <= 0) return 0;
    const umd_ops *ops = umd_model_ops(model);
    const umd_dims *md = umd_model_dims(model);
    const int B = cfg->eval_batch < 2 ? 2 : cfg->eval_batch;
    const size_t D = (size_t)train->c * train->h * train->w;
    const umd_shape shape = {train->c, train->h, train->w, train->classes, B};
    const int F = UMD_CLASSIFIER_FEATURES;
    double t0 = mono_s();
    char dir[1100], name[80];
    eval_watch watch = {ev, "sampling", 0};

    if (train->h % 4 || train->w % 4) {
        snprintf(err, errlen, "FID: the feature network needs image sides that are multiples of "
                 "4, the data set has %dx%d (set eval.fid_samples to 0)", train->h, train->w);
        return UMDQ_EUNSUPPORTED;
    }
    rc = umd_evalnet_new(&net, UMD_EVALNET_FORWARD, cfg, &shape, B, 0, ops, err, errlen);
    if (rc) goto fail;
    rc = umd_evalnet_load(net, model, use_ema, err, errlen);
    if (rc) goto fail;
    rc = UMDQ_ENOMEM;
    const int64_t n_real = clamp_count(cfg->fid_real, test->n);
    abar = malloc((size_t)cfg->timesteps * sizeof(double));
    samples = malloc((size_t)n * D * sizeof(float));
    y = malloc((size_t)n * sizeof(int32_t));
    feat = malloc((size_t)(n > n_real ? n : n_real) * F * sizeof(float));
    xr = malloc((size_t)n_real * D * sizeof(float));
    mu1 = malloc((size_t)F * sizeof(double));
    mu2 = malloc((size_t)F * sizeof(double));
    S1 = malloc((size_t)F * F * sizeof(double));
    S2 = malloc((size_t)F * F * sizeof(double));
    if (!abar || !samples || !y || !feat || !xr || !mu1 || !mu2 || !S1 || !S2) {
        snprintf(err, errlen, "out of memory for %lld samples", (long long)n);
        goto fail;
    }
    umd_schedule_abar(cfg->schedule, cfg->timesteps, abar);
    for (int64_t i = 0; i < n; i++) y[i] = (int32_t)(i % train->classes); /* class-balanced */
    umd_ddim_opts o = {cfg->ddim_steps, 1.0, cfg->cfg_scale, cfg->seed ^ SEED_SAMPLES_XOR};
    rc = umd_ddim_sample(net, abar, cfg->timesteps, md->labels ? y : NULL, n, &o, samples,
                         watch_poll, &watch, err, errlen);
    if (rc == 0) rc = umd_evalnet_status(net, err, errlen);
    if (rc) {
        cancelled_in(rc, "sampling", err, errlen);
        goto fail;
    }
    double t_sample = mono_s() - t0;
    elog(ev, "evaluation: %lld samples in %.1f s", (long long)n, t_sample);
    if ((rc = stopped(&watch, "FID network", 0, 0, err, errlen))) goto fail;

    /* the feature network after the samples: a worker that waits for another one to train it
     * has its samples ready */
    umd_eval_cache_dir(cfg, ev ? ev->workdir : NULL, dir, sizeof dir);
    umd_classifier_name(cfg, train, cfg->classifier_epochs, name, sizeof name);
    rc = umd_classifier_get(&clf, dir, name, train, test, cfg->classifier_epochs, ops,
                            cfg->threads, log_cb, watch_poll, &watch, NULL, err, errlen);
    if (rc) {
        cancelled_in(rc, "FID network", err, errlen);
        goto fail;
    }

    /* FID: generated vs the test split, on the feature network */
    if ((rc = fid_features(clf, samples, n, feat, &watch, err, errlen))) goto fail;
    umd_gauss_fit(feat, n, F, mu1, S1);
    umd_data_slice(test, 0, (int)n_real, xr, NULL);
    if ((rc = fid_features(clf, xr, n_real, feat, &watch, err, errlen))) goto fail;
    umd_gauss_fit(feat, n_real, F, mu2, S2);
    double fid;
    rc = umd_frechet_distance(mu1, S1, mu2, S2, F, &fid, err, errlen);
    if (rc) goto fail;
    result(ev, "fid", fid, NULL);
    result(ev, "fid_net", 0, umd_classifier_get_name(clf));
    result(ev, "fid_net_acc", umd_classifier_test_accuracy(clf), NULL);
    result(ev, "fid_samples", (double)n, NULL);
    result(ev, "fid_steps", cfg->ddim_steps, NULL);
    result(ev, "fid_cfg_scale", md->labels ? cfg->cfg_scale : 0, NULL);
    elog(ev, "evaluation: FID %.3f of %lld samples (DDIM %d steps, eta 1, %s) against %lld test "
         "images on %s (test accuracy %.4f); sampling %.1f s", fid, (long long)n, cfg->ddim_steps,
         md->labels ? "guided" : "unconditional", (long long)n_real, umd_classifier_get_name(clf),
         umd_classifier_test_accuracy(clf), t_sample);

    if (cfg->grid > 0 && ev && ev->workdir) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", ev->workdir, UMD_SAMPLE_GRID_NAME);
        int g = (int)(cfg->grid < n ? cfg->grid : n);
        rc = umd_png_write_grid(path, samples, g, train->c, train->h, train->w, err, errlen);
        if (rc) goto fail;
        result(ev, "sample_grid", 0, UMD_SAMPLE_GRID_NAME);
    }
    rc = 0;
fail:
    umd_evalnet_destroy(&net);
    umd_classifier_destroy(&clf);
    free(samples);
    free(feat);
    free(xr);
    free(y);
    free(abar);
    free(mu1);
    free(mu2);
    free(S1);
    free(S2);
    return rc;
}
