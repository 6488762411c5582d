/* test_cuda_model.c: the whole UMD training step on the CUDA backend against the CPU backend
 * (the oracle): the tiny fixture model (test_model_fixtures.h, labels on) with the same random
 * parameters and batch, its randomness drawn by each backend's own Philox ops; the losses and
 * every gradient at step 0 in fp32, tf32 and bf16; a 10-step loss curve with AdamW in fp32; a
 * 200-step curve CPU fp32 against GPU bf16 (window means within 2%); steps replayed from a CUDA
 * graph against the same steps op by op (bit for bit); train.recompute, the fused norm and bf16
 * operand tensors (the LayerNorm outputs into products, and qkv where attention takes it)
 * against the default model (bit for bit); the MLP's hidden state in bf16 and the branch
 * tensors in bf16 (alone and with every switch) and their gradients in bf16 against the default
 * model (within bf16 tolerance) and with train.recompute against without (bit for bit); the step
 * with the shipped switches and bf16 gradients against the CPU; and
 * umd_run end to end with train.device "cuda", op by op and recorded. Without a visible CUDA
 * device every test reports SKIP.
 * umdq-uses: umd common */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include "t.h"
#include "t_umd.h"
#include "config.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "step.h"
#include "cuda/umd_cuda.h"
#include "test_model_fixtures.h"
#include "umd.h"
#include "umdq.h"

static char no_gpu[400];

static void need_gpu(void) {
    if (no_gpu[0]) T_SKIP("%s", no_gpu);
}

static void tiny_config(umd_config *cfg) {
    fx_config(cfg);
    cfg->labels = 1;
    cfg->threads = 1;
}

static umd_model *new_model(const umd_config *cfg, const umd_ops *ops) {
    umd_shape shape = {2, 8, 8, 5, cfg->batch};
    char err[256];
    umd_model *m = NULL;
    if (umd_model_new(&m, cfg, &shape, ops, err, sizeof err) != 0) {
        printf("  umd_model_new (%s): %s\n", ops->name, err);
        return NULL;
    }
    return m;
}

/* The CPU model's parameters (host memory) into the GPU model. */
static void copy_params(umd_model *gpu, umd_model *cpu) {
    const umd_ops *o = umd_model_ops(gpu);
    o->upload(umd_model_ctx(gpu), umd_model_params(gpu), umd_model_params(cpu),
              umd_model_sizes(cpu)->nfloats * sizeof(float));
}

/* The same batch (fixture key) of 2-channel images of side hw into both models. */
static void load_same_batch_hw(umd_model *a, umd_model *b, const umd_config *cfg, int hw,
                               uint32_t key) {
    int B = cfg->batch;
    float *x = malloc((size_t)B * 2 * hw * hw * sizeof(float));
    int32_t y[64];
    fx_batch(x, y, B, 2, hw, hw, 5, key);
    umd_model_load_batch(a, x, y);
    umd_model_load_batch(b, x, y);
    free(x);
}
static void load_same_batch(umd_model *a, umd_model *b, const umd_config *cfg, uint32_t key) {
    load_same_batch_hw(a, b, cfg, 8, key);
}

/* The same batch (fixture key) and step k's draws into both models, then a step with backward
 * on each. */
static void step_both(umd_model *a, umd_model *b, const umd_config *cfg, uint32_t key, int k,
                      umd_losses *la, umd_losses *lb) {
    load_same_batch(a, b, cfg, key);
    umd_model_draw(a, cfg->seed, k);
    umd_model_draw(b, cfg->seed, k);
    umd_model_step(a, 1, la);
    umd_model_step(b, 1, lb);
}

static int device_ok(umd_model *m) {
    const umd_ops *o = umd_model_ops(m);
    char err[512];
    if (!o->status) return 1;
    int rc = o->status(umd_model_ctx(m), err, sizeof err);
    if (rc) printf("  device: %s\n", err);
    return rc == 0;
}

/* Every gradient of g (device) against c (host): worst of |g - c| / (|c| + floor * max|c|) per
 * tensor, floor 1e-2 (fp32) or 1 (normwise, tf32 / bf16). Returns the worst over all tensors. */
static double compare_grads(umd_model *g, umd_model *c, double floor, char *worst_name, size_t n) {
    size_t nf = umd_model_sizes(c)->nfloats;
    float *gg = malloc(nf * sizeof(float));
    umd_model_ops(g)->download(umd_model_ctx(g), gg, umd_model_grads(g), nf * sizeof(float));
    const float *cg = umd_model_grads(c);
    double worst = 0;
    for (int i = 0; i < umd_model_ntensors(c); i++) {
        const umd_tensor *t = umd_model_tensor(c, i);
        double mx = 0;
        for (size_t k = 0; k < t->size; k++) mx = fmax(mx, fabs(cg[t->offset + k]));
        for (size_t k = 0; k < t->size; k++) {
            double a = gg[t->offset + k], b = cg[t->offset + k];
            double e = isfinite(a) ? fabs(a - b) / (fabs(b) + floor * mx + 1e-30) : INFINITY;
            if (e > worst) {
                worst = e;
                snprintf(worst_name, n, "%s[%zu] gpu %.7g cpu %.7g", t->name, k, a, b);
            }
        }
    }
    free(gg);
    return worst;
}

static void step_parity(int math, double loss_tol, double grad_tol, double floor) {
    need_gpu();
    umd_config cfg;
    tiny_config(&cfg);
    umd_model *c = new_model(&cfg, umd_ops_cpu()), *g = new_model(&cfg, umd_ops_cuda(math));
    T_REQUIRE(c && g);
    T_EQ_INT(umd_model_replicas(g), 1);
    fx_randomize(c, 100);
    copy_params(g, c);
    for (int step = 0; step < 3; step++) {
        umd_losses lc, lg;
        step_both(c, g, &cfg, 200 + (uint32_t)step, step, &lc, &lg);
        T_REQUIRE(device_ok(g));
        char where[200] = "";
        double worst = compare_grads(g, c, floor, where, sizeof where);
        printf("  math %d step %d: loss gpu %.9f cpu %.9f (rel %.2e); worst gradient error %.2e at %s\n",
               math, step, lg.loss, lc.loss, fabs(lg.loss - lc.loss) / lc.loss, worst, where);
        T_NEAR(lg.loss, lc.loss, 0, loss_tol);
        T_NEAR(lg.loss_eps, lc.loss_eps, 0, loss_tol);
        T_NEAR(lg.loss_x0, lc.loss_x0, 0, loss_tol);
        T_NEAR(lg.loss_clean, lc.loss_clean, 0, loss_tol);
        T_CHECK_MSG(worst <= grad_tol, "step %d: gradient error %.3g > %.0e at %s", step, worst,
                    grad_tol, where);
    }
    umd_model_destroy(&c);
    umd_model_destroy(&g);
}

static void test_cuda_step_parity_fp32(void) { step_parity(UMD_MATH_FP32, 1e-5, 1e-4, 1e-2); }
static void test_cuda_step_parity_tf32(void) { step_parity(UMD_MATH_TF32, 1e-3, 1e-2, 1.0); }
static void test_cuda_step_parity_bf16(void) { step_parity(UMD_MATH_BF16, 1e-2, 5e-2, 1.0); }
/* The bf16 step with the switches as umdq ships them and UMDQ_CUDA_BF16_GRAD=1 too (the gradients
 * of the branch tensors in bf16), against the CPU fp32 model within the bf16 tolerances above.
 * Run next to last: a failure inside leaves the switches on, and the last test sets them anew. */
static void test_cuda_step_parity_bf16_grad(void) {
    need_gpu();
    fx_cuda_switches_default();
    setenv("UMDQ_CUDA_BF16_GRAD", "1", 1);
    step_parity(UMD_MATH_BF16, 1e-2, 5e-2, 1.0);
    fx_cuda_switches_off();
}

/* Steps with AdamW, clipping and the lr schedule: the losses of each step agree. `window`: 0
 * compares every step (tol relative), else means over windows of that many steps. */
static void curve(int math, int steps, int window, double tol) {
    need_gpu();
    umd_config cfg;
    tiny_config(&cfg);
    cfg.steps = steps;
    umd_model *c = new_model(&cfg, umd_ops_cpu()), *g = new_model(&cfg, umd_ops_cuda(math));
    T_REQUIRE(c && g);
    umd_model_init(c, cfg.seed);
    umd_model_init(g, cfg.seed);
    double sc = 0, sg = 0, first_c = 0, last_c = 0, worst = 0;
    for (int k = 0; k < steps; k++) {
        umd_losses lc, lg; /* 8 batches, again and again */
        step_both(c, g, &cfg, 300 + (uint32_t)(k % 8), k, &lc, &lg);
        umd_optim_stats stc, stg;
        umd_optim_step(c, &cfg, k, umd_lr_at(&cfg, k), &stc);
        umd_optim_step(g, &cfg, k, umd_lr_at(&cfg, k), &stg);
        T_REQUIRE(device_ok(g));
        if (window == 0) {
            double e = fabs(lg.loss - lc.loss) / lc.loss;
            worst = fmax(worst, e);
            printf("  step %d: loss gpu %.9f cpu %.9f (rel %.1e), grad norm %.5f / %.5f\n", k,
                   lg.loss, lc.loss, e, stg.grad_norm, stc.grad_norm);
            continue;
        }
        sc += lc.loss;
        sg += lg.loss;
        if ((k + 1) % window == 0) {
            double e = fabs(sg - sc) / sc;
            worst = fmax(worst, e);
            if (k + 1 == window) first_c = sc / window;
            last_c = sc / window;
            printf("  steps %3d-%3d: mean loss gpu %.5f cpu %.5f (rel %.2e)\n", k + 2 - window, k + 1,
                   sg / window, sc / window, e);
            sc = sg = 0;
        }
    }
    T_CHECK_MSG(worst <= tol, "loss curves differ by %.3g > %.0e", worst, tol);
    if (window) T_CHECK_MSG(last_c < first_c, "the loss did not fall: %.4f -> %.4f", first_c, last_c);
    umd_model_destroy(&c);
    umd_model_destroy(&g);
}

static void test_cuda_curve_fp32_10_steps(void) { curve(UMD_MATH_FP32, 10, 0, 1e-4); }
static void test_cuda_curve_bf16_200_steps(void) { curve(UMD_MATH_BF16, 200, 20, 0.02); }
/* The same with the switches as umdq ships them (umd_cuda.h's defaults: bf16 operand, MLP and
 * branch tensors, bf16 biases and dy W2, the fused norm, the recorded step): the configuration a
 * job runs. Run last: a failure inside leaves the defaults on. */
static void test_cuda_curve_bf16_200_steps_defaults(void) {
    fx_cuda_switches_default();
    curve(UMD_MATH_BF16, 200, 20, 0.02);
    fx_cuda_switches_off();
}

/* ---- the recorded step (CUDA graph) --------------------------------------------------------------- */

static void tune_counts(umd_model *m, int *shapes, int *took, long *runs);

/* Steps run op by op and steps replayed from a recording (UMDQ_CUDA_GRAPH=1 when the second model's
 * context is made) give the same bits: losses every step, and parameters, AdamW moments and EMA
 * at the end. The clip is tight so the device-side clip factor is below 1, and the batches and
 * draws change every step, so a replay that kept the recorded step's inputs would differ.
 * untimed: in bf16, with the switches as umdq ships them and the four newest on top
 * on top (UMDQ_CUDA_BF16_GRAD, UMDQ_CUDA_ATTN_SPLIT, UMDQ_CUDA_ATTN_DS (which takes the
 * backward's dS in place of the split there), and UMDQ_CUDA_GEMM_TUNE with
 * UMDQ_CUDA_GEMM_TUNE_TAKE=1: every GEMM shape and forward plan on the heuristic's first cuBLASLt
 * algorithm, so that both models run the same algorithms whatever the timing), at head width 64
 * on 16x16 images (patch 2: the decoder's 1 + 64 tokens in 5 strips, the last shared by the 4
 * warps), in both models, 8 steps; each switch must be on in both (grad_operand 1, GEMMs run on
 * a taken algorithm, the last strips shared, backward calls on dS: the context's description). */
static void graph_parity_with(int math, int untimed) {
    need_gpu();
    umd_config cfg;
    tiny_config(&cfg);
    cfg.steps = 12;
    cfg.clip = 0.05;
    cfg.ema = 0.99;
    int hw = 8;
    if (untimed) {
        cfg.width = 128;
        cfg.dec_depth = 2;
        cfg.batch = 4;
        cfg.steps = 8;
        hw = 16;
        fx_cuda_switches_default();
        setenv("UMDQ_CUDA_BF16_GRAD", "1", 1);
        setenv("UMDQ_CUDA_ATTN_SPLIT", "1", 1);
        setenv("UMDQ_CUDA_ATTN_DS", "1", 1);
        setenv("UMDQ_CUDA_GEMM_TUNE", "1", 1);
        setenv("UMDQ_CUDA_GEMM_TUNE_TAKE", "1", 1);
        setenv("UMDQ_CUDA_GRAPH", "0", 1);
    }
    const umd_shape shape = {2, hw, hw, 5, cfg.batch};
    char err[512] = "";
    umd_model *e = NULL, *g = NULL;
    if (umd_model_new(&e, &cfg, &shape, umd_ops_cuda(math), err, sizeof err) != 0)
        printf("  umd_model_new: %s\n", err);
    setenv("UMDQ_CUDA_GRAPH", "1", 1);
    if (e && umd_model_new(&g, &cfg, &shape, umd_ops_cuda(math), err, sizeof err) != 0)
        printf("  umd_model_new (recorded): %s\n", err);
    fx_cuda_switches_off();
    T_REQUIRE(e && g);
    if (untimed) {
        T_EQ_INT(umd_model_ops(e)->grad_operand(umd_model_ctx(e)), 1);
        T_EQ_INT(umd_model_ops(g)->grad_operand(umd_model_ctx(g)), 1);
    }
    umd_model_init(e, cfg.seed);
    umd_model_init(g, cfg.seed);
    umd_stepper se = {0}, sg = {0};
    double first = 0, last = 0, clip = 1;
    for (int k = 0; k < cfg.steps; k++) {
        load_same_batch_hw(e, g, &cfg, hw, 400 + (uint32_t)k);
        umd_model_draw(e, cfg.seed, k);
        umd_model_draw(g, cfg.seed, k);
        T_REQUIRE(umd_train_step(&se, e, &cfg, k, umd_lr_at(&cfg, k), err, sizeof err) == 0 ||
                  (printf("  op by op: %s\n", err), 0));
        T_REQUIRE(umd_train_step(&sg, g, &cfg, k, umd_lr_at(&cfg, k), err, sizeof err) == 0 ||
                  (printf("  recorded: %s\n", err), 0));
        if (sg.note[0]) printf("  %s\n", sg.note);
        T_REQUIRE(device_ok(e) && device_ok(g));
        umd_losses le, lg;
        umd_model_losses(e, &le);
        umd_model_losses(g, &lg);
        umd_optim_stats ste, stg;
        umd_optim_read_stats(e, &cfg, umd_lr_at(&cfg, k), &ste);
        umd_optim_read_stats(g, &cfg, umd_lr_at(&cfg, k), &stg);
        printf("  step %2d (%s): loss %.9f / %.9f, grad norm %.6f / %.6f, clip %.4f\n", k,
               sg.recorded ? "replayed" : "op by op", le.loss, lg.loss, ste.grad_norm,
               stg.grad_norm, stg.clip_scale);
        T_CHECK_MSG(le.loss == lg.loss && le.loss_clean == lg.loss_clean &&
                    le.loss_eps == lg.loss_eps && le.loss_x0 == lg.loss_x0,
                    "step %d: losses differ", k);
        T_CHECK(ste.grad_norm == stg.grad_norm);
        if (k == 0) first = lg.loss;
        last = lg.loss;
        clip = fmin(clip, stg.clip_scale);
    }
    T_CHECK_MSG(sg.recorded && !sg.given_up, "the steps were not replayed");
    T_CHECK(!se.recorded && se.given_up); /* no UMDQ_CUDA_GRAPH: op by op */
    T_CHECK(first != last);
    T_CHECK(clip < 1.0);
    for (int i = 0; untimed && i < 2; i++) {
        umd_model *m = i ? g : e;
        int shapes = 0, took = 0;
        long runs = 0;
        tune_counts(m, &shapes, &took, &runs);
        char d[1024];
        umd_cuda_describe(umd_model_ctx(m), d, sizeof d);
        printf("  %s: %d GEMM shapes and forward plans tuned, %d on another algorithm, %ld GEMMs "
               "run on one; %s\n", i ? "recorded" : "op by op", shapes, took, runs,
               strstr(d, "last strips shared") ? "the last strips shared" : "no strip shared");
        T_CHECK_MSG(took > 0 && runs >= (long)took, "%s: %d shapes taken, %ld GEMMs run on them",
                    i ? "recorded" : "op by op", took, runs);
        T_CHECK(strstr(d, "last strips shared") != NULL);
        T_CHECK(strstr(d, "dQ from a stored dS on (0 calls") == NULL &&
                strstr(d, "dQ from a stored dS on (") != NULL);
    }
    size_t nf = umd_model_sizes(e)->nfloats;
    float *a = malloc(nf * sizeof(float)), *b = malloc(nf * sizeof(float));
    float *(*arena[])(umd_model *) = {umd_model_params, umd_model_adam_m, umd_model_adam_v,
                                      umd_model_ema};
    const char *names[] = {"params", "adam_m", "adam_v", "ema"};
    for (int i = 0; i < 4; i++) {
        umd_model_ops(e)->download(umd_model_ctx(e), a, arena[i](e), nf * sizeof(float));
        umd_model_ops(g)->download(umd_model_ctx(g), b, arena[i](g), nf * sizeof(float));
        T_CHECK_MSG(memcmp(a, b, nf * sizeof(float)) == 0, "%s differ", names[i]);
    }
    free(a);
    free(b);
    umd_model_destroy(&e);
    umd_model_destroy(&g);
}

/* The first element where two copies a and b of a model's arena (nf floats, m's tensors) differ,
 * as "name[k] a vs b" into out; 0 when none does. */
static int first_difference(umd_model *m, const float *a, const float *b, size_t nf, char *out,
                            size_t n) {
    if (memcmp(a, b, nf * sizeof(float)) == 0) return 0;
    snprintf(out, n, "somewhere outside the tensors");
    for (int i = 0; i < umd_model_ntensors(m); i++) {
        const umd_tensor *t = umd_model_tensor(m, i);
        for (size_t k = 0; k < t->size; k++)
            if (memcmp(&a[t->offset + k], &b[t->offset + k], sizeof(float)) != 0) {
                snprintf(out, n, "%s[%zu] %.9g vs %.9g", t->name, k, a[t->offset + k],
                         b[t->offset + k]);
                return 1;
            }
    }
    return 1;
}

/* A bf16 model against a second one made with train.recompute (UMD_RECOMPUTE_*: blocks run
 * again in the backward, whole or in part), UMDQ_CUDA_FUSED_NORM=1 (SW_FUSED: each gated residual
 * and the LayerNorm after it in one kernel), UMDQ_CUDA_ATTN_KV32=1 (SW_KV32: the mma
 * attention's dK dV kernel over 32 queries at a time), UMDQ_CUDA_LT_BF16_Y=0 (SW_Y_VIA_FP32: a bf16
 * y computed in fp32 and rounded, not by cuBLASLt), UMDQ_CUDA_ATTN_FWD32=1 (SW_FWD32: the resident
 * mma forward's warps over 32 query rows) and/or UMDQ_CUDA_BF16_OPERANDS=1 (the LayerNorm outputs that
 * feed a product stored in bf16, rounded where the GEMM's conversion would round them, and, where
 * attention_operand says so, qkv: the qkv Linear writes it bf16, its fp32 result rounded once,
 * and the mma attention kernels read it as they read the rounded fp32 one): the same losses,
 * gradients and parameters, bit for bit, over 3 steps with AdamW (the kernels are deterministic,
 * the fused kernel rounds as the two it replaces, the attention switches make the same products
 * in the same order, and a bf16 operand is the bits its product read
 * before); with recompute or bf16 operands, in less device memory, and with bf16 operands in a
 * smaller activation arena than the same model's with fp32 ones (umd_model_measure). hd64: width
 * 128 in 2 heads of 64, where attention_operand says 1 for the operand context (qkv bf16), else
 * the fixture's 2 heads of 8 (qkv stays fp32). Where the bits part, the first of losses,
 * gradients and parameters to differ is said, with the tensor: qkv's bf16 store (cuBLASLt's) is
 * the step these tests cannot check on the CPU. */
/* UMDQ_CUDA_FUSED_NORM=1, UMDQ_CUDA_ATTN_KV32=1, UMDQ_CUDA_LT_BF16_Y=0, UMDQ_CUDA_ATTN_FWD32=1 */
enum { SW_FUSED = 1, SW_KV32 = 2, SW_Y_VIA_FP32 = 4, SW_FWD32 = 8 };
static void same_bits_bf16(int recompute, int switches, int operands, int hd64) {
    need_gpu();
    umd_config cfg;
    tiny_config(&cfg);
    cfg.depth = 3;
    cfg.dec_depth = 3;
    if (hd64) cfg.width = 128;
    const umd_ops *ops = umd_ops_cuda(UMD_MATH_BF16);
    umd_model *a = new_model(&cfg, ops);
    cfg.recompute = recompute;
    if (switches & SW_FUSED) setenv("UMDQ_CUDA_FUSED_NORM", "1", 1);
    if (switches & SW_KV32) setenv("UMDQ_CUDA_ATTN_KV32", "1", 1);
    if (switches & SW_Y_VIA_FP32) setenv("UMDQ_CUDA_LT_BF16_Y", "0", 1);
    if (switches & SW_FWD32) setenv("UMDQ_CUDA_ATTN_FWD32", "1", 1);
    if (operands) setenv("UMDQ_CUDA_BF16_OPERANDS", "1", 1);
    umd_model *b = new_model(&cfg, ops);
    setenv("UMDQ_CUDA_FUSED_NORM", "0", 1);
    setenv("UMDQ_CUDA_ATTN_KV32", "0", 1);
    unsetenv("UMDQ_CUDA_LT_BF16_Y");
    setenv("UMDQ_CUDA_ATTN_FWD32", "0", 1);
    setenv("UMDQ_CUDA_BF16_OPERANDS", "0", 1);
    T_REQUIRE(a && b);
    T_EQ_INT(ops->operand_bytes(umd_model_ctx(a)), 4);
    T_EQ_INT(ops->operand_bytes(umd_model_ctx(b)), operands ? 2 : 4);
    /* the mma kernels are the contexts' attention unless UMDQ_CUDA_ATTENTION says otherwise */
    const char *am = getenv("UMDQ_CUDA_ATTENTION");
    const int mma = !am || (strcmp(am, "gemm") != 0 && strcmp(am, "fused") != 0);
    const int hd = cfg.width / cfg.heads;
    T_EQ_INT(ops->attention_operand(umd_model_ctx(a), hd), 0);
    T_EQ_INT(ops->attention_operand(umd_model_ctx(b), hd), operands && mma && hd == 64);
    umd_model_init(a, cfg.seed);
    umd_model_init(b, cfg.seed);
    size_t peak_a = 0, peak_b = 0, used, total;
    umd_cuda_memory(umd_model_ctx(a), &peak_a, &used, &total);
    umd_cuda_memory(umd_model_ctx(b), &peak_b, &used, &total);
    printf("  head width %d: device arenas %zu bytes, the other model's %zu\n", hd, peak_a, peak_b);
    if (recompute || operands) T_CHECK(peak_b < peak_a);
    if (operands) {
        /* the same model (train.recompute included) measured with fp32 operands */
        umd_shape shape = {2, 8, 8, 5, cfg.batch};
        umd_sizes fp32;
        char err[256];
        T_REQUIRE(umd_model_measure(&fp32, &cfg, &shape, ops, err, sizeof err) == 0 ||
                  (printf("  umd_model_measure: %s\n", err), 0));
        printf("  activation arena %zu bytes with bf16 operands, %zu with fp32 ones\n",
               umd_model_sizes(b)->acts, fp32.acts);
        T_CHECK(umd_model_sizes(b)->acts < fp32.acts);
    }
    size_t nf = umd_model_sizes(a)->nfloats;
    float *ga = malloc(nf * sizeof(float)), *gb = malloc(nf * sizeof(float));
    char first[320] = "", where[200];
    for (int k = 0; k < 3; k++) {
        umd_losses la, lb;
        step_both(a, b, &cfg, 500 + (uint32_t)k, k, &la, &lb);
        T_REQUIRE(device_ok(a) && device_ok(b));
        umd_model_ops(a)->download(umd_model_ctx(a), ga, umd_model_grads(a), nf * sizeof(float));
        umd_model_ops(b)->download(umd_model_ctx(b), gb, umd_model_grads(b), nf * sizeof(float));
        const int losses = la.loss == lb.loss && la.loss_eps == lb.loss_eps &&
                           la.loss_x0 == lb.loss_x0 && la.loss_clean == lb.loss_clean;
        if (!losses && !first[0])
            snprintf(first, sizeof first, "the losses at step %d (%.9g, the other model's %.9g)", k,
                     la.loss, lb.loss);
        T_CHECK_MSG(losses, "step %d: loss %.9g, the other model's %.9g", k, la.loss, lb.loss);
        const int grads = !first_difference(a, ga, gb, nf, where, sizeof where);
        if (!grads && !first[0]) snprintf(first, sizeof first, "the gradients at step %d: %s", k, where);
        T_CHECK_MSG(grads, "step %d: the gradients differ, first at %s", k, where);
        umd_optim_step(a, &cfg, k, umd_lr_at(&cfg, k), NULL);
        umd_optim_step(b, &cfg, k, umd_lr_at(&cfg, k), NULL);
    }
    umd_model_ops(a)->download(umd_model_ctx(a), ga, umd_model_params(a), nf * sizeof(float));
    umd_model_ops(b)->download(umd_model_ctx(b), gb, umd_model_params(b), nf * sizeof(float));
    const int params = !first_difference(a, ga, gb, nf, where, sizeof where);
    if (!params && !first[0]) snprintf(first, sizeof first, "the parameters after 3 updates: %s", where);
    T_CHECK_MSG(params, "the parameters differ after 3 updates, first at %s", where);
    if (first[0]) printf("  the first to differ: %s\n", first);
    free(ga);
    free(gb);
    umd_model_destroy(&a);
    umd_model_destroy(&b);
}

static void test_cuda_recompute_bf16(void) { same_bits_bf16(UMD_RECOMPUTE_FULL, 0, 0, 0); }
static void test_cuda_recompute_partial_bf16(void) { same_bits_bf16(UMD_RECOMPUTE_PARTIAL, 0, 0, 0); }
static void test_cuda_recompute_norms_bf16(void) { same_bits_bf16(UMD_RECOMPUTE_NORMS, 0, 0, 0); }
static void test_cuda_fused_norm_bf16(void) { same_bits_bf16(UMD_RECOMPUTE_OFF, SW_FUSED, 0, 0); }
static void test_cuda_fused_norm_recompute_bf16(void) { same_bits_bf16(UMD_RECOMPUTE_FULL, SW_FUSED, 0, 0); }
static void test_cuda_fused_norm_recompute_partial_bf16(void) {
    same_bits_bf16(UMD_RECOMPUTE_PARTIAL, SW_FUSED, 0, 0);
}
/* bf16 operands at head width 64: qkv among them */
static void test_cuda_bf16_operands(void) { same_bits_bf16(UMD_RECOMPUTE_OFF, 0, 1, 1); }
static void test_cuda_bf16_operands_fused_norm(void) { same_bits_bf16(UMD_RECOMPUTE_OFF, SW_FUSED, 1, 1); }
static void test_cuda_bf16_operands_recompute(void) { same_bits_bf16(UMD_RECOMPUTE_FULL, 0, 1, 1); }
static void test_cuda_bf16_operands_recompute_partial(void) {
    same_bits_bf16(UMD_RECOMPUTE_PARTIAL, 0, 1, 1);
}
static void test_cuda_bf16_operands_fused_norm_recompute_partial(void) {
    same_bits_bf16(UMD_RECOMPUTE_PARTIAL, SW_FUSED, 1, 1);
}
static void test_cuda_bf16_operands_fused_norm_recompute_norms(void) {
    same_bits_bf16(UMD_RECOMPUTE_NORMS, SW_FUSED | SW_KV32 | SW_FWD32, 1, 1);
}
/* and at the fixture's head width 8, where qkv stays fp32 */
static void test_cuda_bf16_operands_narrow_heads(void) { same_bits_bf16(UMD_RECOMPUTE_OFF, 0, 1, 0); }
static void test_cuda_bf16_operands_narrow_heads_recompute_partial(void) {
    same_bits_bf16(UMD_RECOMPUTE_PARTIAL, 0, 1, 0);
}

/* bf16 operands with qkv's bf16 y written through the fp32 scratch (as where cuBLASLt has no
 * bf16 D with an fp32 bias) */
static void test_cuda_bf16_operands_y_via_fp32(void) {
    same_bits_bf16(UMD_RECOMPUTE_PARTIAL, SW_Y_VIA_FP32, 1, 1);
}
/* the resident mma forward's warps over 32 query rows, with both attention switches and bf16 qkv */
static void test_cuda_attn_fwd32_bf16(void) { same_bits_bf16(UMD_RECOMPUTE_OFF, SW_FWD32, 0, 1); }
static void test_cuda_attn_fwd32_kv32_bf16_operands(void) {
    same_bits_bf16(UMD_RECOMPUTE_PARTIAL, SW_FWD32 | SW_KV32, 1, 1);
}
/* the mma attention's dK dV step over 32 queries (head width 64), with fp32 and bf16 qkv */
static void test_cuda_attn_kv32_bf16(void) { same_bits_bf16(UMD_RECOMPUTE_OFF, SW_KV32, 0, 1); }
static void test_cuda_attn_kv32_bf16_operands(void) {
    same_bits_bf16(UMD_RECOMPUTE_OFF, SW_KV32, 1, 1);
}

/* ---- the MLP's hidden state in bf16 ------------------------------------------------------------- */

/* The same batch (fixture key) and step k's draws into each of n models, then a step with backward
 * on each; l[i] the losses of models[i]. */
static void step_each(umd_model **models, int n, const umd_config *cfg, uint32_t key, int k,
                      umd_losses *l) {
    const int B = cfg->batch;
    float *x = malloc((size_t)B * 2 * 8 * 8 * sizeof(float));
    int32_t y[64];
    fx_batch(x, y, B, 2, 8, 8, 5, key);
    for (int i = 0; i < n; i++) {
        umd_model_load_batch(models[i], x, y);
        umd_model_draw(models[i], cfg->seed, k);
        umd_model_step(models[i], 1, &l[i]);
    }
    free(x);
}

/* The worst over m's tensors of the relative L2 error of the gradients g against ref (host
 * copies of two models' gradient arenas, nf floats each, m's layout), with the tensor into
 * worst_name. A tensor whose reference is all zeros must be all zeros. */
static double worst_grad_l2(umd_model *m, const float *g, const float *ref, char *worst_name,
                            size_t n) {
    double worst = 0;
    for (int i = 0; i < umd_model_ntensors(m); i++) {
        const umd_tensor *t = umd_model_tensor(m, i);
        double num = 0, den = 0;
        for (size_t k = 0; k < t->size; k++) {
            const double a = g[t->offset + k], b = ref[t->offset + k];
            num += isfinite(a) ? (a - b) * (a - b) : INFINITY;
            den += b * b;
        }
        const double e = sqrt(num) / (sqrt(den) + 1e-30);
        if (e > worst || i == 0) {
            worst = e;
            snprintf(worst_name, n, "%s (%zu values, reference norm %.3g)", t->name, t->size,
                     sqrt(den));
        }
    }
    return worst;
}

/* The switches of bf16_rounded's model beyond UMDQ_CUDA_BF16_OPERANDS=1, as their variables:
 * the MLP's h in bf16, its GELU in cuBLASLt's epilogues, the branch tensors in bf16 and their
 * gradients (with them), and the switches that keep the bits (the fused norm, the mma
 * attention's 32-query dK dV step and 32-row forward, the MLP backward's one pass over h). */
enum { RD_MLP = 1, RD_GELU = 2, RD_BRANCH = 4, RD_SAME_BITS = 8, RD_BIAS = 16, RD_DH = 32,
       RD_GRAD = 64 };
static const struct {
    int flag;
    const char *var;
} RD_VARS[] = {{RD_MLP, "UMDQ_CUDA_BF16_MLP"},         {RD_GELU, "UMDQ_CUDA_GELU_EPILOGUE"},
               {RD_BRANCH, "UMDQ_CUDA_BF16_BRANCH"},   {RD_BIAS, "UMDQ_CUDA_BF16_BIAS"},
               {RD_DH, "UMDQ_CUDA_BF16_DH"},           {RD_GRAD, "UMDQ_CUDA_BF16_GRAD"},
               {RD_SAME_BITS, "UMDQ_CUDA_FUSED_NORM"},
               {RD_SAME_BITS, "UMDQ_CUDA_ATTN_KV32"},  {RD_SAME_BITS, "UMDQ_CUDA_ATTN_FWD32"},
               {RD_SAME_BITS, "UMDQ_CUDA_MLP_ONE_PASS"}};
#define RD_NVARS (int)(sizeof RD_VARS / sizeof *RD_VARS)

/* The variables of the switches sw set (set 1) or cleared (set 0), with the operands'. */
static void rd_env(int sw, int set) {
    if (set) setenv("UMDQ_CUDA_BF16_OPERANDS", "1", 1);
    else setenv("UMDQ_CUDA_BF16_OPERANDS", "0", 1);
    for (int i = 0; i < RD_NVARS; i++) {
        if (set && (sw & RD_VARS[i].flag)) setenv(RD_VARS[i].var, "1", 1);
        else setenv(RD_VARS[i].var, "0", 1);
    }
}

/* A model made with bf16 operands and the switches sw (RD_*), which round more than the operands
 * (the MLP's h with RD_MLP, the branch tensors with RD_BRANCH: GELU and its backward, the gated
 * residuals and attention's backward read the rounded values, as bf16 autocast has them), against
 * the default bf16 model, from the same random parameters (fx_randomize: every path carries
 * gradient from the first step) and batches, over 3 steps with AdamW: the losses within 1e-2
 * relative and every gradient tensor within 2e-2 relative L2 of the default's at each step
 * (close, not the same bits); the device arenas smaller than those of the model with bf16
 * operands alone, train.recompute the same in both; hidden_operand, branch_operand and
 * grad_operand 1 exactly where their switch is on (grad_operand with RD_BRANCH), and with
 * RD_BRANCH an activation arena smaller than the same model's
 * measured without that switch (umd_model_measure: the model keeps the branch tensors in bf16).
 * With train.recompute (partial: fc1 runs again in the backward and writes h bf16 as the forward
 * did; norms: the LayerNorms and the gated residual before them, reading the bf16 branch
 * tensors) the model is also, bit for bit, the same model without recompute: losses and
 * gradients at every step, parameters after the 3 updates. Width 128 in 2 heads of 64, as the
 * operand tests (qkv a bf16 operand too, and with RD_BRANCH attention's output). */
static void bf16_rounded(int recompute, int sw) {
    need_gpu();
    umd_config cfg;
    tiny_config(&cfg);
    cfg.depth = 3;
    cfg.dec_depth = 3;
    cfg.width = 128;
    const umd_ops *ops = umd_ops_cuda(UMD_MATH_BF16);
    umd_model *c = new_model(&cfg, umd_ops_cpu()); /* the parameters' source */
    umd_model *a = new_model(&cfg, ops);           /* the default bf16 model */
    cfg.recompute = recompute;
    rd_env(0, 1);
    umd_model *o = new_model(&cfg, ops); /* bf16 operands alone: the arena to undercut */
    rd_env(sw, 1);
    umd_model *b = new_model(&cfg, ops); /* the switches, train.recompute as asked */
    cfg.recompute = UMD_RECOMPUTE_OFF;
    umd_model *r = recompute != UMD_RECOMPUTE_OFF ? new_model(&cfg, ops) : NULL; /* without */
    cfg.recompute = recompute;
    umd_sizes nobranch = {0};
    int measured = 1;
    if (sw & RD_BRANCH) {
        /* the same model (train.recompute included) measured without the branch switch */
        umd_shape shape = {2, 8, 8, 5, cfg.batch};
        char err[256];
        rd_env(sw & ~RD_BRANCH, 1);
        measured = umd_model_measure(&nobranch, &cfg, &shape, ops, err, sizeof err) == 0;
        if (!measured) printf("  umd_model_measure: %s\n", err);
    }
    rd_env(0, 0);
    T_REQUIRE(c && a && o && b && (r || recompute == UMD_RECOMPUTE_OFF) && measured);
    const int hidden = (sw & RD_MLP) != 0, branch = (sw & RD_BRANCH) != 0;
    const int grad = branch && (sw & RD_GRAD) != 0;
    umd_model *const made[] = {a, o, b, r};
    for (int i = 0; i < 4; i++) {
        if (!made[i]) continue;
        T_EQ_INT(ops->hidden_operand(umd_model_ctx(made[i])), i >= 2 && hidden);
        T_EQ_INT(ops->branch_operand(umd_model_ctx(made[i])), i >= 2 && branch);
        T_EQ_INT(ops->grad_operand(umd_model_ctx(made[i])), i >= 2 && grad);
    }
    size_t peak_o = 0, peak_b = 0, used, total;
    umd_cuda_memory(umd_model_ctx(o), &peak_o, &used, &total);
    umd_cuda_memory(umd_model_ctx(b), &peak_b, &used, &total);
    printf("  recompute %s: device arenas %zu bytes with the switches, %zu with the operands "
           "alone; activation arenas %zu and %zu bytes\n", umd_recompute_name(recompute), peak_b,
           peak_o, umd_model_sizes(b)->acts, umd_model_sizes(o)->acts);
    T_CHECK(peak_b < peak_o);
    if (branch) {
        printf("  activation arena %zu bytes with the branch tensors in bf16, %zu without\n",
               umd_model_sizes(b)->acts, nobranch.acts);
        T_CHECK_MSG(umd_model_sizes(b)->acts < nobranch.acts,
                    "branch_operand says 1, and the activation arena is no smaller (%zu bytes, "
                    "%zu without the switch)", umd_model_sizes(b)->acts, nobranch.acts);
    }
    umd_model_destroy(&o);
    fx_randomize(c, 100);
    copy_params(a, c);
    copy_params(b, c);
    if (r) copy_params(r, c);
    umd_model_destroy(&c);
    umd_model *models[3] = {a, b, r};
    const int nm = r ? 3 : 2;
    size_t nf = umd_model_sizes(a)->nfloats;
    float *ga = malloc(nf * sizeof(float)), *gb = malloc(nf * sizeof(float));
    float *gr = malloc(nf * sizeof(float));
    T_REQUIRE(ga && gb && gr);
    char where[200];
    for (int k = 0; k < 3; k++) {
        umd_losses l[3];
        step_each(models, nm, &cfg, 600 + (uint32_t)k, k, l);
        T_REQUIRE(device_ok(a) && device_ok(b) && (!r || device_ok(r)));
        umd_model_ops(a)->download(umd_model_ctx(a), ga, umd_model_grads(a), nf * sizeof(float));
        umd_model_ops(b)->download(umd_model_ctx(b), gb, umd_model_grads(b), nf * sizeof(float));
        const double worst = worst_grad_l2(a, gb, ga, where, sizeof where);
        printf("  step %d: loss %.9f with the switches, %.9f default (rel %.2e); worst gradient "
               "relative L2 %.2e at %s\n", k, l[1].loss, l[0].loss,
               fabs(l[1].loss - l[0].loss) / l[0].loss, worst, where);
        T_NEAR(l[1].loss, l[0].loss, 0, 1e-2);
        T_NEAR(l[1].loss_eps, l[0].loss_eps, 0, 1e-2);
        T_NEAR(l[1].loss_x0, l[0].loss_x0, 0, 1e-2);
        T_NEAR(l[1].loss_clean, l[0].loss_clean, 0, 1e-2);
        T_CHECK_MSG(worst <= 2e-2, "step %d: gradient relative L2 error %.3g > 2e-2 at %s", k,
                    worst, where);
        if (r) {
            umd_model_ops(r)->download(umd_model_ctx(r), gr, umd_model_grads(r), nf * sizeof(float));
            T_CHECK_MSG(l[1].loss == l[2].loss && l[1].loss_eps == l[2].loss_eps &&
                        l[1].loss_x0 == l[2].loss_x0 && l[1].loss_clean == l[2].loss_clean,
                        "step %d: loss %.9g with recompute, %.9g without", k, l[1].loss, l[2].loss);
            T_CHECK_MSG(!first_difference(b, gb, gr, nf, where, sizeof where),
                        "step %d: the gradients differ with recompute and without, first at %s", k,
                        where);
        }
        for (int i = 0; i < nm; i++) umd_optim_step(models[i], &cfg, k, umd_lr_at(&cfg, k), NULL);
    }
    if (sw & (RD_GELU | RD_DH)) {
        /* both GELU epilogues planned at the model's shapes, or dy W2 in bf16: no MLP scratch */
        char line[512];
        umd_model_describe(b, line, sizeof line);
        T_CHECK_MSG(strstr(line, ", no MLP scratch") != NULL,
                    "the model laid out the MLP's scratch (switches %d): %s", sw, line);
    }
    if (sw & RD_GELU) {
        char rep[4096];
        umd_cuda_profile_report(umd_model_ctx(b), 1, rep, sizeof rep);
        const char *at = strstr(rep, "the MLP's GELU");
        printf("  %s\n", at ? at : "(no GELU epilogue line in the profile report)");
        long gemms = 0;
        T_CHECK(at && sscanf(at, "the MLP's GELU in cuBLASLt's epilogues: %ld GEMMs", &gemms) == 1);
        T_CHECK_MSG(gemms > 0, "no MLP GEMM took a GELU epilogue (F = %d)", cfg.mlp_ratio * cfg.width);
    }
    if (r) {
        umd_model_ops(b)->download(umd_model_ctx(b), gb, umd_model_params(b), nf * sizeof(float));
        umd_model_ops(r)->download(umd_model_ctx(r), gr, umd_model_params(r), nf * sizeof(float));
        T_CHECK_MSG(!first_difference(b, gb, gr, nf, where, sizeof where),
                    "the parameters differ with recompute and without after 3 updates, first at %s",
                    where);
    }
    free(ga);
    free(gb);
    free(gr);
    umd_model_destroy(&a);
    umd_model_destroy(&b);
    if (r) umd_model_destroy(&r);
}

/* UMDQ_CUDA_ATTN_SPLIT=1 through whole steps of the bf16 model with the switches as umdq ships
 * them, at head width 64 (width 128 in 2 heads: the mma attention) on 16x16 images (patch 2: the
 * decoder's 1 + 64 tokens make 5 strips of 16, the last holding one row, shared by the 4 warps),
 * against the same model without the switch, from the same parameters and batches, 3 steps with
 * AdamW: the losses within 1e-3 relative and every gradient tensor within 1e-2 relative L2 of
 * the default's (the shared row's attention output within bf16 rounding, its gradients' sums
 * added in another order), and the gradients not all the same bits (the switch took effect). */
static void attn_switch_model(const char *var, uint32_t key);
static void test_cuda_attn_split_model(void) { attn_switch_model("UMDQ_CUDA_ATTN_SPLIT", 720); }
/* The same for UMDQ_CUDA_ATTN_DS=1 (dQ from the dS the dK dV kernel stores): within the same
 * tolerances of the default; its description counts the backward calls that took dS (the bits
 * may all agree: the stored dS is rounded from the same dot products). */
static void test_cuda_attn_ds_model(void) { attn_switch_model("UMDQ_CUDA_ATTN_DS", 730); }
static void attn_switch_model(const char *var, uint32_t key) {
    need_gpu();
    fx_cuda_switches_default();
    umd_config cfg;
    tiny_config(&cfg);
    cfg.width = 128;
    cfg.dec_depth = 2;
    cfg.batch = 4;
    const umd_shape shape = {2, 16, 16, 5, cfg.batch};
    const umd_ops *ops = umd_ops_cuda(UMD_MATH_BF16);
    umd_model *c = NULL, *m[2] = {NULL, NULL}; /* the parameters' source; the default, the switch's */
    char err[256];
    int rc = umd_model_new(&c, &cfg, &shape, umd_ops_cpu(), err, sizeof err);
    setenv(var, "0", 1); /* the defaults without it (UMDQ_CUDA_ATTN_DS is on by default) */
    if (rc == 0) rc = umd_model_new(&m[0], &cfg, &shape, ops, err, sizeof err);
    setenv(var, "1", 1);
    if (rc == 0) rc = umd_model_new(&m[1], &cfg, &shape, ops, err, sizeof err);
    unsetenv(var);
    const int split = strcmp(var, "UMDQ_CUDA_ATTN_SPLIT") == 0;
    if (rc != 0) printf("  umd_model_new: %s\n", err);
    T_REQUIRE(rc == 0);
    fx_randomize(c, 110);
    copy_params(m[0], c);
    copy_params(m[1], c);
    umd_model_destroy(&c);
    const size_t nf = umd_model_sizes(m[0])->nfloats;
    float *g[2] = {malloc(nf * sizeof(float)), malloc(nf * sizeof(float))};
    float *x = malloc((size_t)cfg.batch * 2 * 16 * 16 * sizeof(float));
    int32_t y[64];
    T_REQUIRE(g[0] && g[1] && x);
    int differ = 0;
    for (int k = 0; k < 3; k++) {
        umd_losses l[2];
        fx_batch(x, y, cfg.batch, 2, 16, 16, 5, key + (uint32_t)k);
        for (int i = 0; i < 2; i++) {
            umd_model_load_batch(m[i], x, y);
            umd_model_draw(m[i], cfg.seed, k);
            umd_model_step(m[i], 1, &l[i]);
            T_REQUIRE(device_ok(m[i]));
            ops->download(umd_model_ctx(m[i]), g[i], umd_model_grads(m[i]), nf * sizeof(float));
        }
        char where[200];
        differ |= first_difference(m[0], g[1], g[0], nf, where, sizeof where);
        const double worst = worst_grad_l2(m[0], g[1], g[0], where, sizeof where);
        printf("  step %d: loss %.9f with %s, %.9f default (rel %.2e); worst gradient relative "
               "L2 %.2e at %s\n", k, l[1].loss, var, l[0].loss,
               fabs(l[1].loss - l[0].loss) / l[0].loss, worst, where);
        T_NEAR(l[1].loss, l[0].loss, 0, 1e-3);
        T_CHECK_MSG(worst <= 1e-2, "step %d: gradient relative L2 error %.3g > 1e-2 at %s", k,
                    worst, where);
        for (int i = 0; i < 2; i++) umd_optim_step(m[i], &cfg, k, umd_lr_at(&cfg, k), NULL);
    }
    if (split)
        T_CHECK_MSG(differ, "the gradients are the default's bits at every step: no strip was shared");
    else {
        char d[2048];
        long calls = -1;
        char onoff[4] = "";
        umd_cuda_describe(umd_model_ctx(m[1]), d, sizeof d);
        const char *at = strstr(d, "dQ from a stored dS ");
        T_REQUIRE(at && sscanf(at, "dQ from a stored dS %3s (%ld calls)", onoff, &calls) == 2);
        printf("  dQ from a stored dS in %ld backward calls; the gradients %s the default's bits\n",
               calls, differ ? "are not all" : "are all");
        T_CHECK_MSG(calls > 0, "no backward call took dQ from a stored dS");
    }
    free(x);
    free(g[0]);
    free(g[1]);
    umd_model_destroy(&m[0]);
    umd_model_destroy(&m[1]);
    fx_cuda_switches_off();
}

/* The counts in a model's context's description: "GEMM tuning on (N shapes, K on another
 * algorithm, ...)"; -1 where it says none. */
static void tune_counts(umd_model *m, int *shapes, int *took, long *runs) {
    char d[1024], onoff[4] = "";
    umd_cuda_describe(umd_model_ctx(m), d, sizeof d);
    const char *at = strstr(d, "GEMM tuning ");
    int split = 0, lt = 0, lt_took = 0;
    long variants = 0;
    *shapes = *took = -1;
    *runs = -1;
    int hand = 0;
    if (at && sscanf(at, "GEMM tuning %3s (%d shapes, %d on another algorithm, %d splitting K, %d "
                         "by hand; %ld split candidates timed; %d Linear forward plans tuned, %d "
                         "on another algorithm; %ld GEMMs run",
                     onoff, shapes, took, &split, &hand, &variants, &lt, &lt_took, runs) == 9) {
        *shapes += lt; /* the forward plans counted with the shapes */
        *took += lt_took;
    }
}

/* UMDQ_CUDA_GEMM_TUNE=1 through the trainer's steps (umd_train_step: the first op by op, where
 * the tuner times each new GEMM shape, then the step recorded and replayed with the algorithms it
 * kept) of the bf16 model with the switches as umdq ships them, against the same model untuned,
 * from the same parameters and batches, 6 steps: the losses within 1e-3 relative every step. Once
 * with the timing's picks (this model's GEMMs are below the size the tuner times: none is), and
 * with UMDQ_CUDA_GEMM_TUNE_TAKE=1 and 999 (the heuristic's first cuBLASLt algorithm, and the last
 * candidate, for every shape, whatever their times), where the description must count shapes on
 * another algorithm and GEMMs run on them (the losses may keep their bits: algorithms that add
 * in the same order give the same sums). Every run is recorded. */
static void test_cuda_gemm_tune_model(void) {
    need_gpu();
    const int takes[] = {-1, 1, 999};
    for (int t = 0; t < 3; t++) {
        const int take = takes[t];
        char tv[16];
        snprintf(tv, sizeof tv, "%d", take);
        fx_cuda_switches_default();
        umd_config cfg;
        tiny_config(&cfg);
        cfg.width = 128;
        cfg.batch = 8;
        cfg.steps = 6;
        const umd_shape shape = {2, 8, 8, 5, cfg.batch};
        const umd_ops *ops = umd_ops_cuda(UMD_MATH_BF16);
        umd_model *m[2] = {NULL, NULL}; /* untuned, tuned */
        char err[512] = "";
        int rc = umd_model_new(&m[0], &cfg, &shape, ops, err, sizeof err);
        setenv("UMDQ_CUDA_GEMM_TUNE", "1", 1);
        if (take >= 0) setenv("UMDQ_CUDA_GEMM_TUNE_TAKE", tv, 1);
        if (rc == 0) rc = umd_model_new(&m[1], &cfg, &shape, ops, err, sizeof err);
        fx_cuda_switches_off();
        if (rc != 0) printf("  umd_model_new: %s\n", err);
        T_REQUIRE(rc == 0);
        umd_model_init(m[0], cfg.seed);
        umd_model_init(m[1], cfg.seed);
        umd_stepper st[2] = {{0}, {0}};
        int differ = 0;
        for (int k = 0; k < cfg.steps; k++) {
            load_same_batch(m[0], m[1], &cfg, 760 + (uint32_t)k);
            umd_losses l[2];
            for (int i = 0; i < 2; i++) {
                umd_model_draw(m[i], cfg.seed, k);
                T_REQUIRE(umd_train_step(&st[i], m[i], &cfg, k, umd_lr_at(&cfg, k), err,
                                         sizeof err) == 0 ||
                          (printf("  step %d: %s\n", k, err), 0));
                if (st[i].note[0]) printf("  %s\n", st[i].note);
                T_REQUIRE(device_ok(m[i]));
                umd_model_losses(m[i], &l[i]);
            }
            printf("  %s, step %d (%s): loss %.9f tuned, %.9f untuned\n",
                   take < 0 ? "timed" : take > 1 ? "the last candidate" : "candidate 1", k,
                   st[1].recorded ? "replayed" : "op by op",
                   l[1].loss, l[0].loss);
            T_NEAR(l[1].loss, l[0].loss, 0, 1e-3);
            differ |= l[1].loss != l[0].loss;
        }
        T_CHECK_MSG(st[0].recorded && st[1].recorded, "the steps were not replayed");
        int shapes = 0, took = 0;
        long runs = 0;
        tune_counts(m[1], &shapes, &took, &runs);
        printf("  %d GEMM shapes and forward plans tuned, %d on another algorithm, %ld GEMMs run "
               "on one; the losses %s the untuned model's bits\n", shapes, took, runs,
               differ ? "are not all" : "are all");
        if (take >= 0) {
            T_CHECK_MSG(shapes > 0, "no GEMM shape tuned");
            T_CHECK_MSG(took > 0, "no shape on the candidate asked for");
            /* every step's GEMMs, the replayed ones too (the bits may not show it: two
             * algorithms that sum in the same order give the same bits) */
            T_CHECK_MSG(runs >= (long)took, "%ld GEMMs run on the %d algorithms taken", runs, took);
        }
        umd_model_destroy(&m[0]);
        umd_model_destroy(&m[1]);
    }
}

/* The MLP's hidden state in bf16 (UMDQ_CUDA_BF16_MLP=1: hidden_operand 1, so the model stores h
 * in bf16 and passes UMD_OPND_H). */
static void test_cuda_bf16_mlp(void) { bf16_rounded(UMD_RECOMPUTE_OFF, RD_MLP); }
static void test_cuda_bf16_mlp_recompute_partial(void) {
    bf16_rounded(UMD_RECOMPUTE_PARTIAL, RD_MLP);
}
/* The same with the MLP's GELU in cuBLASLt's epilogues too (UMDQ_CUDA_GELU_EPILOGUE=1): against
 * the default model within the same tolerances, and with train.recompute "partial" (fc1 refills
 * h through the same epilogue plan) the same bits as without; the profile report's line says
 * how many GEMMs took an epilogue, and the model lays out no MLP scratch (mlp_scratch 0). */
static void test_cuda_gelu_epilogue_bf16_mlp(void) {
    bf16_rounded(UMD_RECOMPUTE_OFF, RD_MLP | RD_GELU);
}
static void test_cuda_gelu_epilogue_recompute_partial(void) {
    bf16_rounded(UMD_RECOMPUTE_PARTIAL, RD_MLP | RD_GELU);
}
static void test_cuda_gelu_epilogue_recompute_norms(void) {
    bf16_rounded(UMD_RECOMPUTE_NORMS, RD_MLP | RD_GELU);
}
/* The branch tensors in bf16 (UMDQ_CUDA_BF16_BRANCH=1: branch_operand 1, so the model keeps
 * attention's output and proj's and fc2's outputs in bf16 and passes UMD_OPND_O and UMD_OPND_Y),
 * alone, with train.recompute "full", and with every other switch (the MLP's h in bf16, its GELU
 * epilogues, the fused norm, the attention's 32-query and 32-row kernels) without recompute,
 * with "partial" and with "norms". */
static void test_cuda_bf16_branch(void) { bf16_rounded(UMD_RECOMPUTE_OFF, RD_BRANCH); }
static void test_cuda_bf16_branch_recompute(void) { bf16_rounded(UMD_RECOMPUTE_FULL, RD_BRANCH); }
#define RD_EVERY (RD_MLP | RD_GELU | RD_BRANCH | RD_BIAS | RD_SAME_BITS)
/* A bf16 y's bias rounded to bf16 too (UMDQ_CUDA_BF16_BIAS=1: qkv, h, proj's and fc2's outputs
 * with bf16 biases, as bf16 autocast), with the branch tensors, and with train.recompute "partial"
 * (fc1's refill takes the same plan, bias and all). */
static void test_cuda_bf16_bias(void) { bf16_rounded(UMD_RECOMPUTE_OFF, RD_BRANCH | RD_BIAS); }
/* The MLP's dy W2 in bf16 (UMDQ_CUDA_BF16_DH=1, with its h: no MLP scratch laid out), alone and
 * with the branch tensors and biases under train.recompute "partial". */
static void test_cuda_bf16_dh(void) { bf16_rounded(UMD_RECOMPUTE_OFF, RD_MLP | RD_DH); }
static void test_cuda_bf16_dh_recompute_partial(void) {
    bf16_rounded(UMD_RECOMPUTE_PARTIAL, RD_MLP | RD_DH | RD_BRANCH | RD_BIAS | RD_SAME_BITS);
}
/* The gradient tensors in bf16 (UMDQ_CUDA_BF16_GRAD=1: grad_operand 1, so the model may keep the
 * gradients of the branch tensors and of qkv in bf16 and pass UMD_GRAD), with the switches that
 * are on by default. */
static void test_cuda_bf16_grad(void) {
    bf16_rounded(UMD_RECOMPUTE_OFF, RD_MLP | RD_DH | RD_BRANCH | RD_BIAS | RD_SAME_BITS | RD_GRAD);
}
/* The same under train.recompute "partial" and "norms": the same bits as without. */
static void test_cuda_bf16_grad_recompute_partial(void) {
    bf16_rounded(UMD_RECOMPUTE_PARTIAL,
                 RD_MLP | RD_DH | RD_BRANCH | RD_BIAS | RD_SAME_BITS | RD_GRAD);
}
static void test_cuda_bf16_grad_recompute_norms(void) {
    bf16_rounded(UMD_RECOMPUTE_NORMS, RD_MLP | RD_DH | RD_BRANCH | RD_BIAS | RD_SAME_BITS | RD_GRAD);
}
static void test_cuda_bf16_bias_recompute_partial(void) {
    bf16_rounded(UMD_RECOMPUTE_PARTIAL, RD_MLP | RD_BRANCH | RD_BIAS);
}
static void test_cuda_bf16_branch_every_switch(void) { bf16_rounded(UMD_RECOMPUTE_OFF, RD_EVERY); }
static void test_cuda_bf16_branch_every_switch_recompute_partial(void) {
    bf16_rounded(UMD_RECOMPUTE_PARTIAL, RD_EVERY);
}
static void test_cuda_bf16_branch_every_switch_recompute_norms(void) {
    bf16_rounded(UMD_RECOMPUTE_NORMS, RD_EVERY);
}

static void test_cuda_graph_parity_fp32(void) { graph_parity_with(UMD_MATH_FP32, 0); }
static void test_cuda_graph_parity_bf16(void) { graph_parity_with(UMD_MATH_BF16, 0); }
static void test_cuda_graph_parity_bf16_untimed_switches(void) {
    graph_parity_with(UMD_MATH_BF16, 1);
}

/* ---- umd_run on "cuda" ------------------------------------------------------------------------- */

typedef struct {
    double final_loss;
    char device[32];
    int progress;
    int recorded; /* log lines saying the step is recorded */
} seen;

static void cb_progress(void *ctx, int64_t step, int64_t total, double loss, double ips) {
    (void)step, (void)total, (void)loss, (void)ips;
    ((seen *)ctx)->progress++;
}

static void cb_result(void *ctx, const char *key, double value, const char *text) {
    seen *s = ctx;
    if (!strcmp(key, "final_loss")) s->final_loss = value;
    if (!strcmp(key, "device") && text) snprintf(s->device, sizeof s->device, "%s", text);
}

static void cb_log(void *ctx, const char *line) {
    if (strstr(line, "is recorded")) ((seen *)ctx)->recorded++;
    printf("  log: %s\n", line);
}

static int run_json(const char *json, seen *s, char *err, size_t errlen) {
    umd_events ev;
    memset(&ev, 0, sizeof ev);
    ev.ctx = s;
    ev.progress = cb_progress;
    ev.result = cb_result;
    ev.log = cb_log;
    return t_umd_run(json, &ev, err, errlen);
}

#define RUN_CONFIG(device, precision)                                                              \
    "{\"seed\": 11, \"data\": {\"dataset\": \"synthetic\", \"image_size\": 16, \"channels\": 1,"     \
    " \"train_size\": 200}, \"model\": {\"patch\": 4, \"width\": 32, \"depth\": 2,"                 \
    " \"dec_depth\": 1, \"heads\": 2}, \"umd\": {\"labels\": true}, \"train\": {\"steps\": 20,"     \
    " \"batch\": 16, \"log_every\": 5, \"threads\": 1, \"device\": \"" device "\","                  \
    " \"precision\": \"" precision "\"}}"

static void test_cuda_umd_run(void) {
    need_gpu();
    T_CHECK(umd_backend_available("cuda") == 1);
    char err[512] = "";
    seen sc = {0}, sg = {0}, sb = {0};
    int rc = run_json(RUN_CONFIG("cpu", "fp32"), &sc, err, sizeof err);
    T_REQUIRE(rc == 0 || (printf("  cpu: %s\n", err), 0));
    rc = run_json(RUN_CONFIG("cuda", "fp32"), &sg, err, sizeof err);
    T_REQUIRE(rc == 0 || (printf("  cuda: %s\n", err), 0));
    rc = run_json(RUN_CONFIG("cuda", "bf16"), &sb, err, sizeof err);
    T_REQUIRE(rc == 0 || (printf("  cuda bf16: %s\n", err), 0));
    /* the same job with its steps recorded once and replayed: the same bits */
    seen sr = {0};
    setenv("UMDQ_CUDA_GRAPH", "1", 1);
    rc = run_json(RUN_CONFIG("cuda", "bf16"), &sr, err, sizeof err);
    setenv("UMDQ_CUDA_GRAPH", "0", 1);
    T_REQUIRE(rc == 0 || (printf("  cuda bf16 recorded: %s\n", err), 0));
    T_EQ_INT(sr.recorded, 1);
    T_EQ_INT(sb.recorded, 0);
    T_CHECK_MSG(sr.final_loss == sb.final_loss, "recorded %.9g, op by op %.9g", sr.final_loss,
                sb.final_loss);
    printf("  final loss cpu %.6f, cuda fp32 %.6f, cuda bf16 %.6f\n", sc.final_loss, sg.final_loss,
           sb.final_loss);
    T_EQ_STR(sg.device, "cuda");
    T_EQ_STR(sc.device, "cpu");
    T_EQ_INT(sg.progress, 4);
    T_NEAR(sg.final_loss, sc.final_loss, 0, 1e-3);
    T_NEAR(sb.final_loss, sc.final_loss, 0, 3e-2);
    /* the same job with the switches as umdq ships them: recorded (the graph is on by default),
     * the bf16 tensors and biases rounded, and near the CPU's loss as the bf16 job is */
    seen sd = {0};
    fx_cuda_switches_default();
    rc = run_json(RUN_CONFIG("cuda", "bf16"), &sd, err, sizeof err);
    fx_cuda_switches_off();
    T_REQUIRE(rc == 0 || (printf("  cuda bf16, default switches: %s\n", err), 0));
    printf("  final loss cuda bf16 with the default switches %.6f (recorded: %d)\n", sd.final_loss,
           sd.recorded);
    T_EQ_INT(sd.recorded, 1);
    T_NEAR(sd.final_loss, sc.final_loss, 0, 3e-2);
}

/* Without a device, "cuda" is refused with the reason (this test runs where there is none). */
static void test_cuda_refused_without_device(void) {
    if (!no_gpu[0]) T_SKIP("a CUDA device is visible");
    char err[512] = "";
    seen s = {0};
    int rc = run_json(RUN_CONFIG("cuda", "fp32"), &s, err, sizeof err);
    T_EQ_INT(rc, UMDQ_EUNSUPPORTED);
    T_CONTAINS(err, "train.device");
    T_EQ_INT(s.progress, 0);
    /* the build has the backend; the device is missing (the worker finds that out itself) */
    T_CHECK(umd_backend_available("cuda") == (umd_ops_cuda(UMD_MATH_FP32) != NULL));
}

/* A model too large for the device: umd_model_new returns UMDQ_ENOMEM naming device memory and
 * the size, the process goes on, and the device still trains a small model afterwards. */
static void test_cuda_out_of_memory(void) {
    need_gpu();
    umd_config cfg;
    tiny_config(&cfg);
    cfg.width = 768;
    cfg.heads = 12;
    cfg.depth = 12;
    cfg.dec_depth = 4;
    cfg.patch = 2;
    cfg.batch = 4096;
    umd_shape shape = {3, 64, 64, 5, cfg.batch};
    char err[256] = "";
    umd_model *m = NULL;
    int rc = umd_model_new(&m, &cfg, &shape, umd_ops_cuda(UMD_MATH_BF16), err, sizeof err);
    printf("  %s\n", err);
    T_EQ_INT(rc, UMDQ_ENOMEM);
    T_CHECK(m == NULL);
    T_CONTAINS(err, "out of device memory");
    T_CONTAINS(err, "MiB");
    test_cuda_step_parity_fp32();
}

int main(void) {
    char err[256];
    fx_cuda_switches_off();
    if (umd_cuda_devices(err, sizeof err) <= 0) snprintf(no_gpu, sizeof no_gpu, "%s", err);
    T_RUN(test_cuda_step_parity_fp32);
    T_RUN(test_cuda_step_parity_tf32);
    T_RUN(test_cuda_step_parity_bf16);
    T_RUN(test_cuda_curve_fp32_10_steps);
    T_RUN(test_cuda_curve_bf16_200_steps);
    T_RUN(test_cuda_graph_parity_fp32);
    T_RUN(test_cuda_graph_parity_bf16);
    T_RUN(test_cuda_graph_parity_bf16_untimed_switches);
    T_RUN(test_cuda_recompute_bf16);
    T_RUN(test_cuda_recompute_partial_bf16);
    T_RUN(test_cuda_recompute_norms_bf16);
    T_RUN(test_cuda_fused_norm_bf16);
    T_RUN(test_cuda_fused_norm_recompute_bf16);
    T_RUN(test_cuda_fused_norm_recompute_partial_bf16);
    T_RUN(test_cuda_bf16_operands);
    T_RUN(test_cuda_bf16_operands_fused_norm);
    T_RUN(test_cuda_bf16_operands_recompute);
    T_RUN(test_cuda_bf16_operands_recompute_partial);
    T_RUN(test_cuda_bf16_operands_fused_norm_recompute_partial);
    T_RUN(test_cuda_bf16_operands_fused_norm_recompute_norms);
    T_RUN(test_cuda_bf16_operands_narrow_heads);
    T_RUN(test_cuda_bf16_operands_narrow_heads_recompute_partial);
    T_RUN(test_cuda_bf16_operands_y_via_fp32);
    T_RUN(test_cuda_attn_fwd32_bf16);
    T_RUN(test_cuda_attn_fwd32_kv32_bf16_operands);
    T_RUN(test_cuda_attn_kv32_bf16);
    T_RUN(test_cuda_attn_kv32_bf16_operands);
    T_RUN(test_cuda_attn_split_model);
    T_RUN(test_cuda_attn_ds_model);
    T_RUN(test_cuda_gemm_tune_model);
    T_RUN(test_cuda_bf16_mlp);
    T_RUN(test_cuda_bf16_mlp_recompute_partial);
    T_RUN(test_cuda_gelu_epilogue_bf16_mlp);
    T_RUN(test_cuda_gelu_epilogue_recompute_partial);
    T_RUN(test_cuda_gelu_epilogue_recompute_norms);
    T_RUN(test_cuda_bf16_branch);
    T_RUN(test_cuda_bf16_branch_recompute);
    T_RUN(test_cuda_bf16_branch_every_switch);
    T_RUN(test_cuda_bf16_branch_every_switch_recompute_partial);
    T_RUN(test_cuda_bf16_branch_every_switch_recompute_norms);
    T_RUN(test_cuda_bf16_bias);
    T_RUN(test_cuda_bf16_dh);
    T_RUN(test_cuda_bf16_dh_recompute_partial);
    T_RUN(test_cuda_bf16_bias_recompute_partial);
    T_RUN(test_cuda_bf16_grad);
    T_RUN(test_cuda_bf16_grad_recompute_partial);
    T_RUN(test_cuda_bf16_grad_recompute_norms);
    T_RUN(test_cuda_umd_run);
    T_RUN(test_cuda_out_of_memory);
    T_RUN(test_cuda_refused_without_device);
    T_RUN(test_cuda_step_parity_bf16_grad);
    T_RUN(test_cuda_curve_bf16_200_steps_defaults);
    return t_done();
}
