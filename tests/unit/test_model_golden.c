/* test_model_golden.c: the C model against the PyTorch twin's golden file
 * (tests/golden/umd_tiny.bin, written by tests/golden/make_golden.py in float64): the same
 * weights, inputs, noise, timesteps, keep orders and labels, loaded around Philox; the loss and
 * every gradient at step 0 and a 10-step loss curve with AdamW, clipping and the lr schedule must
 * match to 1e-4 relative. umdq-uses: umd common */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include "t.h"
#include "config.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "step.h"
#include "umdq.h"

#define GOLDEN_PATH "tests/golden/umd_tiny.bin"

typedef struct {
    unsigned char *file; /* owned: the whole file */
    size_t size;
    cJSON *header;       /* owned */
    const unsigned char *data;
} golden;

static int golden_open(golden *g, const char *path, char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open (run from the repository root)", path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    g->file = malloc((size_t)n);
    g->size = (size_t)n;
    if (!g->file || fread(g->file, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        snprintf(err, errlen, "%s: read failed", path);
        return -1;
    }
    fclose(f);
    uint32_t version, hlen;
    if (n < 16 || memcmp(g->file, "UMDGOLD1", 8) != 0) {
        snprintf(err, errlen, "%s: not a golden file (magic)", path);
        return -1;
    }
    memcpy(&version, g->file + 8, 4);
    memcpy(&hlen, g->file + 12, 4);
    if (version != 1 || 16 + (size_t)hlen > g->size) {
        snprintf(err, errlen, "%s: version %u or header length %u not understood", path, version, hlen);
        return -1;
    }
    g->header = cJSON_ParseWithLength((const char *)g->file + 16, hlen);
    if (!g->header) {
        snprintf(err, errlen, "%s: bad header JSON", path);
        return -1;
    }
    size_t start = 16 + hlen;
    start = (start + 7) / 8 * 8;
    g->data = g->file + start;
    return 0;
}

static void golden_close(golden *g) {
    cJSON_Delete(g->header);
    free(g->file);
}

/* The array's bytes and element count; NULL when absent or of another dtype. */
static const void *golden_array(const golden *g, const char *name, const char *dtype, size_t *count) {
    const cJSON *arrays = cJSON_GetObjectItem(g->header, "arrays"), *a;
    cJSON_ArrayForEach(a, arrays) {
        if (strcmp(cJSON_GetObjectItem(a, "name")->valuestring, name) != 0) continue;
        if (strcmp(cJSON_GetObjectItem(a, "dtype")->valuestring, dtype) != 0) return NULL;
        size_t n = 1;
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(a, "shape")) n *= (size_t)d->valuedouble;
        *count = n;
        return g->data + (size_t)cJSON_GetObjectItem(a, "offset")->valuedouble;
    }
    return NULL;
}

static double cfg_num(const golden *g, const char *key) {
    return cJSON_GetObjectItem(cJSON_GetObjectItem(g->header, "config"), key)->valuedouble;
}

/* The backend of the golden models: the CPU's, or a copy of it that claims to record; and
 * train.recompute for them. */
static const umd_ops *golden_ops;
static int golden_recompute;

static umd_model *golden_model(const golden *g, umd_config *cfg, int threads) {
    memset(cfg, 0, sizeof *cfg);
    cfg->patch = (int)cfg_num(g, "patch");
    cfg->width = (int)cfg_num(g, "width");
    cfg->depth = (int)cfg_num(g, "depth");
    cfg->dec_depth = (int)cfg_num(g, "dec_depth");
    cfg->heads = (int)cfg_num(g, "heads");
    cfg->mlp_ratio = (int)cfg_num(g, "mlp_ratio");
    cfg->cls_tokens = (int)cfg_num(g, "cls_tokens");
    cfg->r_t0 = cfg_num(g, "r_t0");
    cfg->mask_ratio = cfg_num(g, "mask_ratio");
    cfg->mask_ratio_t0 = cfg_num(g, "mask_ratio_t0");
    cfg->schedule = UMD_SCHEDULE_COSINE;
    cfg->timesteps = (int)cfg_num(g, "timesteps");
    cfg->labels = 1;
    cfg->label_dropout = cfg_num(g, "label_dropout");
    cfg->steps = (int64_t)cfg_num(g, "steps");
    cfg->batch = (int)cfg_num(g, "batch");
    cfg->lr = cfg_num(g, "lr");
    cfg->warmup = cfg_num(g, "warmup");
    cfg->weight_decay = cfg_num(g, "weight_decay");
    cfg->beta1 = cfg_num(g, "beta1");
    cfg->beta2 = cfg_num(g, "beta2");
    cfg->adam_eps = cfg_num(g, "eps");
    cfg->clip = cfg_num(g, "clip");
    cfg->threads = threads;
    cfg->recompute = golden_recompute;
    umd_shape shape = {(int)cfg_num(g, "channels"), (int)cfg_num(g, "height"),
                       (int)cfg_num(g, "width_px"), (int)cfg_num(g, "classes"), cfg->batch};
    char err[256];
    umd_model *m = NULL;
    if (umd_model_new(&m, cfg, &shape, golden_ops ? golden_ops : umd_ops_cpu(), err,
                      sizeof err) != 0) {
        printf("  umd_model_new: %s\n", err);
        return NULL;
    }
    /* the twin's weights, by name */
    float *p = umd_model_params(m);
    int missing = 0;
    for (int i = 0; i < umd_model_ntensors(m); i++) {
        const umd_tensor *t = umd_model_tensor(m, i);
        char name[80];
        snprintf(name, sizeof name, "param/%s", t->name);
        size_t n = 0;
        const float *w = golden_array(g, name, "f32", &n);
        if (!w || n != t->size) {
            printf("  %s: missing or of size %zu, want %zu\n", name, n, t->size);
            missing++;
            continue;
        }
        memcpy(p + t->offset, w, n * sizeof(float));
    }
    if (missing) umd_model_destroy(&m);
    return m;
}

static int load_step(const golden *g, umd_model *m, int k) {
    char name[64];
    size_t n;
    const void *a[5];
    const char *keys[5] = {"x", "t_net", "eps", "order", "y_used"};
    const char *types[5] = {"f32", "i32", "f32", "i32", "i32"};
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "step%d/%s", k, keys[i]);
        a[i] = golden_array(g, name, types[i], &n);
        if (!a[i]) return -1;
    }
    umd_model_load_batch(m, a[0], NULL);
    umd_model_set_draws(m, a[1], a[2], a[3], a[4]);
    return 0;
}

/* threads 1: one replica; threads 2: the batch split over two replicas whose gradients are
 * summed (the twin knows nothing of that split). */
static void golden_gradients(int threads) {
    golden g;
    char err[256];
    int rc = golden_open(&g, GOLDEN_PATH, err, sizeof err);
    T_REQUIRE(rc == 0 || (printf("  %s\n", err), 0));
    umd_config cfg;
    umd_model *m = golden_model(&g, &cfg, threads);
    T_REQUIRE(m);
    T_EQ_INT(umd_model_replicas(m), threads);
    T_REQUIRE(load_step(&g, m, 0) == 0);
    umd_losses r;
    umd_model_step(m, 1, &r);
    size_t n;
    const double *l0 = golden_array(&g, "loss0", "f64", &n);
    T_REQUIRE(l0 && n == 5);
    T_NEAR(r.loss, l0[0], 0, 1e-4);
    T_NEAR(r.loss_noisy, l0[1], 0, 1e-4);
    T_NEAR(r.loss_clean, l0[2], 0, 1e-4);
    T_NEAR(r.loss_eps, l0[3], 0, 1e-4);
    T_NEAR(r.loss_x0, l0[4], 0, 1e-4);
    /* every gradient: each element within 1e-4 of its value, relative to the tensor's largest
     * (elements near zero have no meaningful relative error in fp32) */
    const float *gr = umd_model_grads(m);
    int bad = 0;
    double worst = 0;
    char worst_name[80] = "";
    for (int i = 0; i < umd_model_ntensors(m); i++) {
        const umd_tensor *t = umd_model_tensor(m, i);
        char name[80];
        snprintf(name, sizeof name, "grad/%s", t->name);
        const double *ref = golden_array(&g, name, "f64", &n);
        if (!ref || n != t->size) {
            printf("  %s: missing\n", name);
            bad++;
            continue;
        }
        double mx = 0;
        for (size_t k = 0; k < n; k++) mx = fmax(mx, fabs(ref[k]));
        T_CHECK_MSG(mx > 0, "%s: the golden gradient is all zero", name);
        for (size_t k = 0; k < n; k++) {
            double e = fabs(gr[t->offset + k] - ref[k]) / (fabs(ref[k]) + 1e-2 * mx);
            if (e > worst) {
                worst = e;
                snprintf(worst_name, sizeof worst_name, "%s[%zu]", t->name, k);
            }
            if (e > 1e-4) {
                if (bad < 5)
                    printf("  %s[%zu]: C %.9g, torch %.9g\n", t->name, k, gr[t->offset + k], ref[k]);
                bad++;
            }
        }
    }
    printf("  %d thread(s): loss %.9f (torch %.9f); worst gradient error %.2e at %s over %d "
           "tensors\n", threads, r.loss, l0[0], worst, worst_name, umd_model_ntensors(m));
    T_CHECK_MSG(bad == 0, "%d gradient values differ from the twin by more than 1e-4", bad);
    umd_model_destroy(&m);
    golden_close(&g);
}

static void test_model_golden_gradients(void) { golden_gradients(1); }
static void test_model_golden_gradients_two_replicas(void) { golden_gradients(2); }

/* A backend that has record ops but cannot record (as the CUDA backend whose recording fails). */
static int refuse_record(umd_ctx *c, char *err, size_t errlen) {
    (void)c;
    snprintf(err, errlen, "no graphs here");
    return UMDQ_EDEVICE;
}
static int never_called(umd_ctx *c, char *err, size_t errlen) {
    (void)c;
    snprintf(err, errlen, "called");
    T_CHECK_MSG(0, "record_end or replay called after a refused record_begin");
    return UMDQ_EINVAL;
}

/* mode 0: umd_model_step and umd_optim_step; 1: umd_train_step (step.h) on the CPU backend, which
 * does not record; 2: umd_train_step on a backend whose recording is refused. */
static void golden_curve(int threads, int mode) {
    golden g;
    char err[256];
    int rc = golden_open(&g, GOLDEN_PATH, err, sizeof err);
    T_REQUIRE(rc == 0 || (printf("  %s\n", err), 0));
    umd_config cfg;
    umd_model *m = golden_model(&g, &cfg, threads);
    T_REQUIRE(m);
    size_t n;
    const double *curve = golden_array(&g, "curve", "f64", &n);
    T_REQUIRE(curve && n == (size_t)cfg.steps);
    double worst = 0;
    int clipped = 0;
    umd_stepper sp = {0};
    for (int k = 0; k < cfg.steps; k++) {
        T_REQUIRE(load_step(&g, m, k) == 0);
        umd_losses r;
        umd_optim_stats st;
        if (mode == 0) {
            umd_model_step(m, 1, &r);
            umd_optim_step(m, &cfg, k, umd_lr_at(&cfg, k), &st);
        } else {
            T_REQUIRE(umd_train_step(&sp, m, &cfg, k, umd_lr_at(&cfg, k), err, sizeof err) == 0);
            umd_model_losses(m, &r);
            umd_optim_read_stats(m, &cfg, umd_lr_at(&cfg, k), &st);
            T_CHECK(!sp.recorded);
            if (k == 1 && mode == 2) {
                printf("  %s\n", sp.note);
                T_CONTAINS(sp.note, "no graphs here");
                sp.note[0] = 0;
            } else {
                T_EQ_STR(sp.note, "");
            }
        }
        clipped += st.clip_scale < 1.0;
        double e = fabs(r.loss - curve[k]) / fabs(curve[k]);
        worst = fmax(worst, e);
        printf("  step %d: loss %.9f torch %.9f (rel %.1e) grad norm %.4f lr %.2e\n", k, r.loss,
               curve[k], e, st.grad_norm, st.lr);
        T_NEAR(r.loss, curve[k], 0, 1e-4);
    }
    T_CHECK(clipped > 0 && clipped < cfg.steps); /* both sides of the clip were exercised */
    T_CHECK(curve[cfg.steps - 1] < curve[0]);
    umd_model_destroy(&m);
    golden_close(&g);
}

static void test_model_golden_loss_curve(void) { golden_curve(1, 0); }
static void test_model_golden_loss_curve_two_replicas(void) { golden_curve(2, 0); }
static void test_model_golden_loss_curve_stepper(void) { golden_curve(1, 1); }

static void test_model_golden_loss_curve_recording_refused(void) {
    static umd_ops refusing;
    refusing = *umd_ops_cpu();
    refusing.record_begin = refuse_record;
    refusing.record_end = never_called;
    refusing.replay = never_called;
    golden_ops = &refusing;
    golden_curve(1, 2);
    golden_ops = NULL;
}

/* train.recompute: the blocks keep only their inputs ("full"), all but what the LayerNorms, the
 * residual and fc1 make ("partial"), or all but what the LayerNorms and the residual make
 * ("norms"), and run again in the backward, whole or in part; the same
 * losses, gradients and updates bit for bit, in a smaller activation arena. */
static void golden_recompute_same(int threads, int mode) {
    golden g;
    char err[256];
    int rc = golden_open(&g, GOLDEN_PATH, err, sizeof err);
    T_REQUIRE(rc == 0 || (printf("  %s\n", err), 0));
    umd_config cfg, cfg2;
    umd_model *a = golden_model(&g, &cfg, threads);
    golden_recompute = mode;
    umd_model *b = golden_model(&g, &cfg2, threads);
    golden_recompute = 0;
    T_REQUIRE(a && b);
    const umd_sizes *sa = umd_model_sizes(a), *sb = umd_model_sizes(b);
    printf("  %d thread(s): activations %.2f MiB, with recompute %s %.2f MiB\n", threads,
           (double)sa->acts / 1048576.0, umd_recompute_name(mode),
           (double)sb->acts / 1048576.0);
    T_CHECK(sb->acts < sa->acts);
    size_t nf = sa->nfloats;
    for (int k = 0; k < cfg.steps; k++) {
        T_REQUIRE(load_step(&g, a, k) == 0 && load_step(&g, b, k) == 0);
        umd_losses la, lb;
        umd_model_step(a, 1, &la);
        umd_model_step(b, 1, &lb);
        T_CHECK_MSG(la.loss == lb.loss && la.loss_eps == lb.loss_eps && la.loss_x0 == lb.loss_x0 &&
                        la.loss_clean == lb.loss_clean,
                    "step %d: loss %.9g, with recompute %.9g", k, la.loss, lb.loss);
        T_CHECK_MSG(memcmp(umd_model_grads(a), umd_model_grads(b), nf * sizeof(float)) == 0,
                    "step %d: the gradients differ", k);
        umd_optim_step(a, &cfg, k, umd_lr_at(&cfg, k), NULL);
        umd_optim_step(b, &cfg2, k, umd_lr_at(&cfg2, k), NULL);
    }
    T_CHECK(memcmp(umd_model_params(a), umd_model_params(b), nf * sizeof(float)) == 0);
    umd_model_destroy(&a);
    umd_model_destroy(&b);
    golden_close(&g);
}

static void test_model_golden_recompute(void) { golden_recompute_same(1, UMD_RECOMPUTE_FULL); }
static void test_model_golden_recompute_two_replicas(void) {
    golden_recompute_same(2, UMD_RECOMPUTE_FULL);
}
static void test_model_golden_recompute_partial(void) {
    golden_recompute_same(1, UMD_RECOMPUTE_PARTIAL);
}
static void test_model_golden_recompute_partial_two_replicas(void) {
    golden_recompute_same(2, UMD_RECOMPUTE_PARTIAL);
}
static void test_model_golden_recompute_norms(void) { golden_recompute_same(1, UMD_RECOMPUTE_NORMS); }
static void test_model_golden_recompute_norms_two_replicas(void) {
    golden_recompute_same(2, UMD_RECOMPUTE_NORMS);
}

int main(void) {
    T_RUN(test_model_golden_gradients);
    T_RUN(test_model_golden_gradients_two_replicas);
    T_RUN(test_model_golden_loss_curve);
    T_RUN(test_model_golden_loss_curve_two_replicas);
    T_RUN(test_model_golden_loss_curve_stepper);
    T_RUN(test_model_golden_loss_curve_recording_refused);
    T_RUN(test_model_golden_recompute);
    T_RUN(test_model_golden_recompute_two_replicas);
    T_RUN(test_model_golden_recompute_partial);
    T_RUN(test_model_golden_recompute_partial_two_replicas);
    T_RUN(test_model_golden_recompute_norms);
    T_RUN(test_model_golden_recompute_norms_two_replicas);
    return t_done();
}
