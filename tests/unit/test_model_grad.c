/* test_model_grad.c: finite-difference checks of the whole UMD model's gradients on a tiny config:
 * the clean branch alone (MAE), the noisy branch alone (MaskDiT-like), DiT (no masking), a
 * mixed batch with labels, and train.recompute (the same gradients, bit for bit). umdq-uses: umd
 * common */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "t.h"
#include "config.h"
#include "model.h"
#include "ops.h"
#include "test_model_fixtures.h"
#include "umdq.h"


static double loss_now(umd_model *m) {
    umd_losses r;
    umd_model_step(m, 0, &r);
    return r.loss;
}

/* Central difference of the loss along parameter element k (in the arena), step h. */
static double fd_element(umd_model *m, size_t k, float h) {
    float *p = umd_model_params(m);
    float keep = p[k];
    p[k] = keep + h;
    double up = loss_now(m);
    p[k] = keep - h;
    double down = loss_now(m);
    p[k] = keep;
    return (up - down) / (2.0 * (double)h);
}

/* Central difference along a random direction v (unit norm) over one tensor. */
static double fd_direction(umd_model *m, const umd_tensor *t, const float *v, float h) {
    float *p = umd_model_params(m) + t->offset;
    for (size_t i = 0; i < t->size; i++) p[i] += h * v[i];
    double up = loss_now(m);
    for (size_t i = 0; i < t->size; i++) p[i] -= 2.0f * h * v[i];
    double down = loss_now(m);
    for (size_t i = 0; i < t->size; i++) p[i] += h * v[i];
    return (up - down) / (2.0 * (double)h);
}

/* Checks every tensor: its 2 largest gradient elements, 2 random ones, and a random direction. */
/* cfg->threads: 1 for most (these shapes are tiny); 2 splits the batch over two replicas, or,
 * with batch 1, runs one replica on a 2-thread context (the ops' own team path). */
static void check_model(const umd_config *cfg, int classes, uint32_t key) {
    char err[256] = "";
    umd_model *m = NULL;
    umd_shape shape = {2, 8, 8, classes, cfg->batch};
    int rc = umd_model_new(&m, cfg, &shape, umd_ops_cpu(), err, sizeof err);
    T_CHECK_MSG(rc == 0, "umd_model_new: %s", err);
    if (rc) return;
    umd_model_init(m, cfg->seed);
    fx_randomize(m, key);
    const umd_dims *d = umd_model_dims(m);
    T_EQ_INT(umd_model_replicas(m), cfg->threads < cfg->batch ? cfg->threads : cfg->batch);
    int B = d->B;
    float *x = malloc(sizeof(float) * (size_t)B * 2 * 8 * 8);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B);
    float *g = malloc(sizeof(float) * umd_model_sizes(m)->nfloats);
    float *v = malloc(sizeof(float) * umd_model_sizes(m)->nfloats);
    fx_batch(x, y, B, 2, 8, 8, classes > 0 ? classes : 1, key + 100);
    umd_model_load_batch(m, x, y);
    umd_model_draw(m, cfg->seed, 3);

    umd_losses r;
    umd_model_step(m, 1, &r);
    T_CHECK(isfinite(r.loss) && r.loss > 0);
    memcpy(g, umd_model_grads(m), sizeof(float) * umd_model_sizes(m)->nfloats);

    int checked = 0, bad = 0;
    double worst = 0;
    char worst_name[64] = "";
    const float h = 1e-2f;
    for (int i = 0; i < umd_model_ntensors(m); i++) {
        const umd_tensor *t = umd_model_tensor(m, i);
        const float *gt = g + t->offset;
        double gmax = 0;
        size_t top[2] = {0, 0};
        for (size_t k = 0; k < t->size; k++) {
            double a = fabs(gt[k]);
            if (a > gmax) gmax = a;
            if (a > fabs(gt[top[0]])) {
                top[1] = top[0];
                top[0] = k;
            } else if (k != top[0] && a > fabs(gt[top[1]])) {
                top[1] = k;
            }
        }
        /* every tensor carries gradient with these random parameters, except the mask token
         * when nothing is masked */
        int unused = strcmp(t->name, "mask_token") == 0 && d->keep_noisy == d->L &&
                     d->n_clean == 0;
        T_CHECK_MSG(unused ? gmax == 0 : gmax > 0, "tensor %s: gradient max %g", t->name, gmax);
        if (unused) continue;
        size_t pick[4] = {top[0], top[1], (size_t)(fx_unit(key + 7, (uint64_t)i) * t->size),
                          (size_t)(fx_unit(key + 8, (uint64_t)i) * t->size)};
        for (int j = 0; j < 4; j++) {
            size_t k = pick[j] < t->size ? pick[j] : t->size - 1;
            double fd = fd_element(m, t->offset + k, h);
            double an = gt[k];
            double tol = 2e-2 * fabs(an) + 2e-5 + 1e-3 * gmax;
            double e = fabs(fd - an) / (fabs(an) + 1e-4);
            if (e > worst) {
                worst = e;
                snprintf(worst_name, sizeof worst_name, "%s[%zu]", t->name, k);
            }
            if (fabs(fd - an) > tol) {
                if (bad < 5)
                    printf("  %s[%zu]: analytic %.8g, finite difference %.8g\n", t->name, k, an, fd);
                bad++;
            }
            checked++;
        }
        /* a random direction over the whole tensor */
        double norm = 0, an = 0;
        for (size_t k = 0; k < t->size; k++) {
            v[k] = fx_normal(key + 9 + (uint32_t)i, k);
            norm += (double)v[k] * v[k];
        }
        for (size_t k = 0; k < t->size; k++) {
            v[k] = (float)(v[k] / sqrt(norm));
            an += (double)v[k] * gt[k];
        }
        double fd = fd_direction(m, t, v, h);
        double tol = 2e-2 * fabs(an) + 2e-5 + 1e-3 * gmax;
        if (fabs(fd - an) > tol) {
            if (bad < 5) printf("  %s along a random direction: analytic %.8g, finite difference %.8g\n",
                                t->name, an, fd);
            bad++;
        }
        checked++;
    }
    printf("  %d checks over %d tensors, loss %.6f (noisy %.6f, clean %.6f), worst relative error "
           "%.2e at %s\n", checked, umd_model_ntensors(m), r.loss, r.loss_noisy, r.loss_clean, worst,
           worst_name);
    T_CHECK_MSG(bad == 0, "%d of %d finite-difference checks failed", bad, checked);
    free(x);
    free(y);
    free(g);
    free(v);
    umd_model_destroy(&m);
}

static void test_model_grad_clean_branch(void) {
    umd_config cfg;
    fx_config(&cfg);
    cfg.threads = 1;
    cfg.r_t0 = 1.0; /* MAE: every row clean, 75% masked */
    check_model(&cfg, 0, 1000);
}

static void test_model_grad_noisy_branch(void) {
    umd_config cfg;
    fx_config(&cfg);
    cfg.threads = 1;
    cfg.r_t0 = 0.0; /* every row noisy, 37.5% masked */
    check_model(&cfg, 0, 2000);
}

static void test_model_grad_dit_unmasked(void) {
    umd_config cfg;
    fx_config(&cfg);
    cfg.threads = 1;
    cfg.r_t0 = 0.0;
    cfg.mask_ratio = 0.0; /* DiT: both MSEs over all pixels */
    check_model(&cfg, 0, 3000);
}

static void test_model_grad_mixed_with_labels(void) {
    umd_config cfg;
    fx_config(&cfg);
    cfg.threads = 1;
    cfg.labels = 1;
    cfg.label_dropout = 0.3;
    check_model(&cfg, 5, 4000);
}

static void test_model_grad_two_replicas(void) {
    umd_config cfg;
    fx_config(&cfg);
    cfg.threads = 2;
    cfg.labels = 1;
    cfg.label_dropout = 0.3;
    check_model(&cfg, 5, 5000);
}

static void test_model_grad_one_row_two_threads(void) {
    umd_config cfg;
    fx_config(&cfg);
    cfg.threads = 2;
    cfg.batch = 1; /* floor(1 * 0.5) = 0 clean rows: one noisy row */
    check_model(&cfg, 0, 6000);
}

/* The fixture with labels and 3 encoder and 3 decoder blocks (the golden model has one decoder
 * block), on `threads` threads. */
static void deep_config(umd_config *cfg, int threads) {
    fx_config(cfg);
    cfg->threads = threads;
    cfg->labels = 1;
    cfg->depth = 3;
    cfg->dec_depth = 3;
}

/* The job log's arenas line of `with` says `said`; that of `without` does not say `absent`. */
static void arenas_say(const umd_model *with, const char *said, const umd_model *without,
                       const char *absent) {
    char line[512];
    umd_model_describe(with, line, sizeof line);
    T_CONTAINS(line, said);
    umd_model_describe(without, line, sizeof line);
    T_CHECK_MSG(strstr(line, absent) == NULL, "the arenas line says \"%s\": %s", absent, line);
}

/* One step of each of the n models on the same batch of deep_config's 8x8x2 images (drawn from
 * key) and the same draws: their losses into l. */
static void step_each(umd_model **m, int n, const umd_config *cfg, uint32_t key, umd_losses *l) {
    float *x = malloc(sizeof(float) * (size_t)cfg->batch * 2 * 8 * 8);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)cfg->batch);
    T_REQUIRE(x && y);
    fx_batch(x, y, cfg->batch, 2, 8, 8, 5, key);
    for (int r = 0; r < n; r++) {
        umd_model_load_batch(m[r], x, y);
        umd_model_draw(m[r], cfg->seed, 3);
        umd_model_step(m[r], 1, &l[r]);
    }
    free(x);
    free(y);
}

/* train.recompute with several decoder blocks (the golden model has one): every block but the last
 * decoder block runs again in the backward, whole ("full") or in part ("partial", "norms"), and
 * the gradients are the same bits as without, the activations smaller mode by mode; the finite
 * differences agree too. */
#define NMODES 4
static void recompute_same_on(const umd_ops *ops, int threads, uint32_t key, int fd) {
    umd_config cfg;
    deep_config(&cfg, threads);
    umd_shape shape = {2, 8, 8, 5, cfg.batch};
    char err[256] = "";
    static const int modes[NMODES] = {UMD_RECOMPUTE_OFF, UMD_RECOMPUTE_NORMS, UMD_RECOMPUTE_PARTIAL,
                                      UMD_RECOMPUTE_FULL};
    umd_model *m[NMODES] = {NULL, NULL, NULL, NULL};
    for (int r = 0; r < NMODES; r++) {
        cfg.recompute = modes[r];
        T_REQUIRE(umd_model_new(&m[r], &cfg, &shape, ops, err, sizeof err) == 0 ||
                  (printf("  %s\n", err), 0));
        umd_model_init(m[r], cfg.seed);
        fx_randomize(m[r], key);
    }
    umd_losses l[NMODES];
    step_each(m, NMODES, &cfg, key + 100, l);
    printf("  %s, %d thread(s): loss %.9f / %.9f / %.9f / %.9f; activations %zu / %zu / %zu / %zu "
           "bytes (off, norms, partial, full)\n", ops->name, threads, l[0].loss, l[1].loss,
           l[2].loss, l[3].loss, umd_model_sizes(m[0])->acts, umd_model_sizes(m[1])->acts,
           umd_model_sizes(m[2])->acts, umd_model_sizes(m[3])->acts);
    for (int r = 1; r < NMODES; r++) {
        T_CHECK_MSG(umd_model_sizes(m[r])->acts < umd_model_sizes(m[r - 1])->acts,
                    "activations with train.recompute %s: %zu bytes, not under %s's %zu",
                    umd_recompute_name(modes[r]), umd_model_sizes(m[r])->acts,
                    umd_recompute_name(modes[r - 1]), umd_model_sizes(m[r - 1])->acts);
        T_CHECK(l[0].loss == l[r].loss);
        T_CHECK_MSG(memcmp(umd_model_grads(m[0]), umd_model_grads(m[r]),
                           umd_model_sizes(m[0])->nfloats * sizeof(float)) == 0,
                    "the gradients differ with train.recompute %s", umd_recompute_name(modes[r]));
    }
    for (int r = 0; r < NMODES; r++) umd_model_destroy(&m[r]);
    if (!fd) return;
    for (int r = 1; r < NMODES; r++) {
        cfg.recompute = modes[r];
        check_model(&cfg, 5, key + 100 * (uint32_t)(r + 1));
    }
}
#undef NMODES
static void recompute_same(int threads, uint32_t key) {
    recompute_same_on(umd_ops_cpu(), threads, key, 1);
}

/* A tensor's bytes in the activation arena (model.c: 256-byte steps). */
static size_t round256(size_t b) { return (b + 255) / 256 * 256; }

/* Operand tensors in bf16 (umd_ops_cpu_bf16), as a bf16 device context with every bf16 switch lays
 * them out: each block's m1, m2, qkv, MLP state h and branch tensors (attention's output, proj's
 * and fc2's), the head's input and the backward's gradient of qkv take half the bytes (the
 * arenas shrink by exactly that; the branch gradients are bf16 too, in the fp32 scratch),
 * the loss and every gradient stay within bf16 rounding of the fp32 model's, and train.recompute's
 * modes give the same bits among themselves (what each refills lands in the bf16 scratch). */
static void test_model_grad_bf16_operands(void) {
    umd_config cfg;
    deep_config(&cfg, 1);
    umd_shape shape = {2, 8, 8, 5, cfg.batch};
    char err[256] = "";
    /* the arenas, one replica */
    umd_sizes s32, s16;
    T_REQUIRE(umd_model_measure(&s32, &cfg, &shape, umd_ops_cpu(), err, sizeof err) == 0);
    T_REQUIRE(umd_model_measure(&s16, &cfg, &shape, umd_ops_cpu_bf16(), err, sizeof err) == 0);
    umd_model *m32 = NULL;
    T_REQUIRE(umd_model_new(&m32, &cfg, &shape, umd_ops_cpu(), err, sizeof err) == 0);
    const umd_dims *d = umd_model_dims(m32);
    size_t enc = (size_t)d->n_clean * d->T_clean + (size_t)d->n_noisy * d->T_noisy;
    size_t dec = (size_t)d->B * d->T_dec, w = (size_t)d->w;
    /* per block m1, m2 (w each), qkv (3 w: attention takes it as an operand here), the MLP's
     * h (F: kept in bf16 here too) and att, ao, mo (w each) */
    static const size_t widths[7] = {1, 1, 3, 0, 1, 1, 1}; /* in w; 0: F */
    size_t saved = 0;
    for (int k = 0; k < 7; k++) {
        size_t ew = widths[k] ? widths[k] * w : (size_t)d->F;
        saved += (size_t)d->depth * (round256(enc * ew * 4) - round256(enc * ew * 2));
        saved += (size_t)d->dec_depth * (round256(dec * ew * 4) - round256(dec * ew * 2));
    }
    saved += round256((size_t)d->B * d->L * w * 4) - round256((size_t)d->B * d->L * w * 2);
    /* and the backward's gradient of qkv (3 w over the larger layout) */
    const size_t maxtok = dec > enc ? dec : enc;
    saved += round256(maxtok * 3 * w * 4) - round256(maxtok * 3 * w * 2);
    printf("  activations without the workspace: fp32 %zu, bf16 operands %zu bytes (%zu saved)\n",
           s32.acts - s32.workspace, s16.acts - s16.workspace, saved);
    T_EQ_INT(s32.acts - s32.workspace - (s16.acts - s16.workspace), saved);
    T_EQ_INT(s16.nfloats, s32.nfloats);
    umd_model_destroy(&m32);

    /* against the fp32 model, on two replicas */
    cfg.threads = 2;
    umd_model *m[2] = {NULL, NULL};
    for (int r = 0; r < 2; r++) {
        T_REQUIRE(umd_model_new(&m[r], &cfg, &shape, r ? umd_ops_cpu_bf16() : umd_ops_cpu(), err,
                                sizeof err) == 0 ||
                  (printf("  %s\n", err), 0));
        umd_model_init(m[r], cfg.seed);
        fx_randomize(m[r], 8100);
    }
    /* the job log's arenas line says what is kept in bf16 */
    arenas_say(m[1],
               ", bf16 LayerNorm outputs, bf16 qkv, bf16 MLP state, bf16 branch outputs, bf16 "
               "branch gradients (batch",
               m[0], "bf16");
    umd_losses l[2];
    step_each(m, 2, &cfg, 8200, l);
    T_CHECK(l[1].loss != l[0].loss); /* the operands were rounded */
    T_NEAR(l[1].loss, l[0].loss, 0, 1e-2);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < umd_model_ntensors(m[0]); i++) {
        const umd_tensor *t = umd_model_tensor(m[0], i);
        const float *g32 = umd_model_grads(m[0]) + t->offset, *g16 = umd_model_grads(m[1]) + t->offset;
        double num = 0, den = 0;
        for (size_t k = 0; k < t->size; k++) {
            num += ((double)g16[k] - g32[k]) * ((double)g16[k] - g32[k]);
            den += (double)g32[k] * g32[k];
        }
        double e = sqrt(num / (den + 1e-300));
        if (e > worst) worst = e, worst_name = t->name;
    }
    printf("  loss fp32 %.9f, bf16 operands %.9f; worst gradient relative error %.2e (%s)\n",
           l[0].loss, l[1].loss, worst, worst_name);
    T_CHECK_MSG(worst < 1e-2, "gradient %s off by %.2e relative", worst_name, worst);
    for (int r = 0; r < 2; r++) umd_model_destroy(&m[r]);

    recompute_same_on(umd_ops_cpu_bf16(), 1, 8300, 0);
    recompute_same_on(umd_ops_cpu_bf16(), 2, 8400, 0);
}

/* A backend with little memory: no allocation above small_limit bytes succeeds. */
static size_t small_limit;
static void *small_alloc(umd_ctx *c, size_t bytes) {
    return bytes > small_limit ? NULL : umd_ops_cpu()->alloc(c, bytes);
}

/* The MiB figure after `key` in s, or -1. */
static double mib_after(const char *s, const char *key) {
    const char *at = strstr(s, key);
    double v = -1;
    if (!at || sscanf(at + strlen(key), "%lf", &v) != 1) return -1;
    return v;
}

/* A model on the small backend: its activations take `acts` bytes, and its arenas' line says
 * `said`. */
static void chosen_when_short(const umd_config *cfg, const umd_shape *shape, const umd_ops *ops,
                              size_t acts, const char *said) {
    char err[320] = "", line[512];
    umd_model *m = NULL;
    T_REQUIRE(umd_model_new(&m, cfg, shape, ops, err, sizeof err) == 0 ||
              (printf("  %s\n", err), 0));
    T_EQ_INT((long)umd_model_sizes(m)->acts, (long)acts);
    umd_model_describe(m, line, sizeof line);
    printf("  %s\n", line);
    T_CONTAINS(line, said);
    umd_model_destroy(&m);
}

/* train.recompute set to `mode` where its activations do not fit on the small backend:
 * umd_model_new fails with UMDQ_ENOMEM and says what `lighter`, the next lighter mode, would take
 * (less than these arenas), and nothing of `mode` itself. cfg->recompute is left off. */
static void refused_when_short(umd_config *cfg, const umd_shape *shape, const umd_ops *ops,
                               int mode, const char *lighter) {
    char err[320] = "", want[96];
    umd_model *m = NULL;
    cfg->recompute = mode;
    cfg->recompute_set = 1;
    T_EQ_INT(umd_model_new(&m, cfg, shape, ops, err, sizeof err), UMDQ_ENOMEM);
    printf("  %s\n", err);
    snprintf(want, sizeof want, "with train.recompute \"%s\" they would take ", lighter);
    const double f = mib_after(err, want);
    T_CHECK(f > 0 && f < mib_after(err, "arenas ("));
    snprintf(want, sizeof want, "\"%s\" they", umd_recompute_name(mode));
    T_CHECK(strstr(err, want) == NULL);
    cfg->recompute = UMD_RECOMPUTE_OFF;
}

/* Activations that do not fit: unset, train.recompute "norms" is turned on where that fits, else
 * "partial", else "full" (and the arenas' line says so); set, umd_model_new fails with
 * UMDQ_ENOMEM, the arenas' size and what the lighter modes would need; when nothing fits, the
 * error says so. */
static void test_model_grad_recompute_when_memory_is_short(void) {
    static umd_ops small;
    small = *umd_ops_cpu();
    small.alloc = small_alloc;
    umd_config cfg;
    fx_config(&cfg);
    cfg.threads = 1;
    cfg.depth = 3;
    cfg.dec_depth = 3;
    umd_shape shape = {2, 8, 8, 0, cfg.batch};
    char err[320] = "";
    umd_sizes plain, norms, part, full;
    cfg.recompute = UMD_RECOMPUTE_OFF;
    T_REQUIRE(umd_model_measure(&plain, &cfg, &shape, umd_ops_cpu(), err, sizeof err) == 0);
    cfg.recompute = UMD_RECOMPUTE_NORMS;
    T_REQUIRE(umd_model_measure(&norms, &cfg, &shape, umd_ops_cpu(), err, sizeof err) == 0);
    cfg.recompute = UMD_RECOMPUTE_PARTIAL;
    T_REQUIRE(umd_model_measure(&part, &cfg, &shape, umd_ops_cpu(), err, sizeof err) == 0);
    cfg.recompute = UMD_RECOMPUTE_FULL;
    T_REQUIRE(umd_model_measure(&full, &cfg, &shape, umd_ops_cpu(), err, sizeof err) == 0);
    size_t fixed = plain.params > plain.grads ? plain.params : plain.grads;
    if (plain.optim > fixed) fixed = plain.optim;
    T_REQUIRE(fixed < full.acts && full.acts < part.acts && part.acts < norms.acts &&
              norms.acts < plain.acts);
    umd_model *m = NULL;

    /* unset, room for "norms" but not for every tensor: norms, said in the arenas' line */
    small_limit = (norms.acts + plain.acts) / 2;
    cfg.recompute = UMD_RECOMPUTE_OFF;
    cfg.recompute_set = 0;
    chosen_when_short(&cfg, &shape, &small, norms.acts,
                      "norms and residuals recomputed in the backward (the arenas do not fit "
                      "without)");

    /* false there: refused, with what each lighter mode would take */
    cfg.recompute_set = 1;
    T_EQ_INT(umd_model_new(&m, &cfg, &shape, &small, err, sizeof err), UMDQ_ENOMEM);
    printf("  %s\n", err);
    T_CHECK(m == NULL);
    T_CONTAINS(err, "out of host memory allocating the arenas (");
    double all = mib_after(err, "arenas (");
    double n = mib_after(err, "with train.recompute \"norms\" they would take ");
    double p = mib_after(err, "with \"partial\" ");
    double f = mib_after(err, "with \"full\" ");
    T_CHECK_MSG(f > 0 && f < p && p < n && n < all, "full %g, partial %g, norms %g, all %g MiB", f,
                p, n, all);

    /* unset, room for "partial" but not for "norms": partial */
    small_limit = (part.acts + norms.acts) / 2;
    cfg.recompute_set = 0;
    chosen_when_short(&cfg, &shape, &small, part.acts,
                      "norms, residuals and fc1 recomputed in the backward (the arenas do not fit "
                      "without)");

    /* "norms" there: refused, with what "partial" (and "full") would take */
    refused_when_short(&cfg, &shape, &small, UMD_RECOMPUTE_NORMS, "partial");

    /* unset, room only for "full": full */
    small_limit = (full.acts + part.acts) / 2;
    cfg.recompute_set = 0;
    chosen_when_short(&cfg, &shape, &small, full.acts,
                      "blocks recomputed in the backward (the arenas do not fit without)");

    /* "partial" there: refused, with what "full" would take */
    refused_when_short(&cfg, &shape, &small, UMD_RECOMPUTE_PARTIAL, "full");

    /* unset, and not even the smallest activations fit: said */
    small_limit = fixed;
    cfg.recompute = UMD_RECOMPUTE_OFF;
    cfg.recompute_set = 0;
    T_EQ_INT(umd_model_new(&m, &cfg, &shape, &small, err, sizeof err), UMDQ_ENOMEM);
    printf("  %s\n", err);
    T_CONTAINS(err, "even with the blocks recomputed");
}

/* An MLP that needs no scratch from the model (mlp_scratch 0, as the CUDA one with GELU in
 * cuBLASLt's epilogues): the CPU ops on scratch of their own, each call; tmp must be NULL. */
static int noscratch_tmp_given;
static size_t noscratch_mlp_scratch(umd_ctx *c, int M, int F, int w, int types) {
    (void)c, (void)M, (void)F, (void)w, (void)types;
    return 0;
}
static void noscratch_mlp_fwd(umd_ctx *c, void *y, void *h, float *tmp, const void *x,
                              const float *W1, const float *b1, const float *W2, const float *b2,
                              int M, int F, int w, int types) {
    if (tmp) noscratch_tmp_given = 1;
    float *own = calloc((size_t)M * F, sizeof *own);
    umd_ops_cpu()->mlp_fwd(c, y, h, own, x, W1, b1, W2, b2, M, F, w, types);
    free(own);
}
static void noscratch_mlp_bwd(umd_ctx *c, void *dx, float *dW1, float *db1, float *dW2,
                              float *db2, const void *dy, const void *x, const void *h,
                              const float *W1, const float *W2, float *tmp, int M, int F, int w,
                              int types) {
    if (tmp) noscratch_tmp_given = 1;
    float *own = calloc((size_t)M * F, sizeof *own);
    umd_ops_cpu()->mlp_bwd(c, dx, dW1, db1, dW2, db2, dy, x, h, W1, W2, own, M, F, w, types);
    free(own);
}

/* A context whose MLP runs without the model's scratch (mlp_scratch 0): the model lays out no
 * (tokens, F) tH, each replica's arena shrinks by exactly its size, the MLP gets tmp NULL, the
 * arenas' line says so, and the step gives the same bits as with it; 1 and 2 replicas, with and
 * without train.recompute "partial". */
static void test_model_grad_mlp_without_scratch(void) {
    static umd_ops ns;
    ns = *umd_ops_cpu();
    ns.mlp_scratch = noscratch_mlp_scratch;
    ns.mlp_fwd = noscratch_mlp_fwd;
    ns.mlp_bwd = noscratch_mlp_bwd;
    for (int threads = 1; threads <= 2; threads++)
        for (int rc = 0; rc < 2; rc++) {
            umd_config cfg;
            deep_config(&cfg, threads);
            cfg.recompute = rc ? UMD_RECOMPUTE_PARTIAL : UMD_RECOMPUTE_OFF;
            umd_shape shape = {2, 8, 8, 5, cfg.batch};
            char err[256] = "";
            umd_model *m[2] = {NULL, NULL};
            for (int r = 0; r < 2; r++) {
                T_REQUIRE(umd_model_new(&m[r], &cfg, &shape, r ? &ns : umd_ops_cpu(), err,
                                        sizeof err) == 0 ||
                          (printf("  %s\n", err), 0));
                umd_model_init(m[r], cfg.seed);
                fx_randomize(m[r], 9100 + (uint32_t)threads);
            }
            /* the largest of the encoder's and the decoder's token counts, per replica */
            const umd_dims *d = umd_model_dims(m[0]);
            size_t saved = 0;
            const int nrep =
                (int)(umd_model_sizes(m[0])->grads / (umd_model_sizes(m[0])->nfloats * 4));
            T_EQ_INT(nrep, threads);
            for (int r = 0; r < nrep; r++) {
                /* model.c splits the clean and the noisy rows between the replicas so */
                int nc = d->n_clean * (r + 1) / nrep - d->n_clean * r / nrep;
                int nn = d->n_noisy * (r + 1) / nrep - d->n_noisy * r / nrep;
                size_t enc = (size_t)nc * d->T_clean + (size_t)nn * d->T_noisy;
                size_t dec = (size_t)(nc + nn) * d->T_dec;
                saved += round256((enc > dec ? enc : dec) * (size_t)d->F * 4);
            }
            T_EQ_INT(umd_model_sizes(m[0])->acts - umd_model_sizes(m[1])->acts, saved);
            arenas_say(m[1], ", no MLP scratch", m[0], "no MLP scratch");
            umd_losses l[2];
            noscratch_tmp_given = 0;
            step_each(m, 2, &cfg, 9200, l);
            T_CHECK_MSG(!noscratch_tmp_given, "the MLP was given a scratch mlp_scratch said it "
                                              "needs none of");
            T_CHECK(l[0].loss == l[1].loss);
            T_CHECK(memcmp(umd_model_grads(m[0]), umd_model_grads(m[1]),
                           umd_model_sizes(m[0])->nfloats * sizeof(float)) == 0);
            printf("  %d thread(s), recompute %s: %zu bytes less, loss %.9f both\n", threads,
                   umd_recompute_name(cfg.recompute), saved, l[0].loss);
            for (int r = 0; r < 2; r++) umd_model_destroy(&m[r]);
        }
}

static void test_model_grad_recompute(void) { recompute_same(1, 6000); }
static void test_model_grad_recompute_two_replicas(void) { recompute_same(2, 7000); }

int main(void) {
    T_RUN(test_model_grad_clean_branch);
    T_RUN(test_model_grad_noisy_branch);
    T_RUN(test_model_grad_dit_unmasked);
    T_RUN(test_model_grad_mixed_with_labels);
    T_RUN(test_model_grad_two_replicas);
    T_RUN(test_model_grad_one_row_two_threads);
    T_RUN(test_model_grad_recompute);
    T_RUN(test_model_grad_recompute_two_replicas);
    T_RUN(test_model_grad_recompute_when_memory_is_short);
    T_RUN(test_model_grad_bf16_operands);
    T_RUN(test_model_grad_mlp_without_scratch);
    return t_done();
}
