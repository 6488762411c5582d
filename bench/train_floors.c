/* train_floors.c: the floor of every op of one training step on the PERF.md configs (S/4 on
 * 28x28x1 and 32x32x3, B/4 on 64x64x3, batch 256), without a device: the model runs one step
 * (forward, backward, AdamW) on an ops table that adds up each op's floor (kernels/op_cost.h: its
 * FLOPs, and the bytes of every tensor it must read or write once at the width it is stored in)
 * in place of computing it, for three layouts of the same model:
 *   fp32       every tensor fp32 (the baseline, counted in the same run);
 *   bf16       umd_ops_cpu_bf16's layout with the gradients fp32: the tensors a bf16 CUDA context
 *              keeps in bf16 with its switches as they are by default (operands, qkv, the MLP's h,
 *              the branch tensors);
 *   bf16+grad  the same with the gradient tensors in bf16 too (UMDQ_CUDA_BF16_GRAD=1).
 * Each op's floor is the larger of its FLOPs at --tflops (default 803, the bf16 cuBLAS ceiling
 * train_gpu measured on an H200) and its bytes at --tbps (default 4.8, the H200's memory bandwidth);
 * the table gives them per op and summed, and the ratio of each layout's sum to fp32's. The same
 * floors, against measured time, are what `train_gpu --profile` prints on a device. Ops without a
 * floor (op_cost.h lists them: the token ops, the loss, the draws, the elementwise ops, ...) run as
 * the CPU backend's, on memory that is mapped but, for the counted ops, never touched, so B/4's
 * 20 GiB of arenas cost no memory here. The sum is the counted ops', not the whole step's: it
 * leaves out sumsq and ema (and, with more than one replica, the add of their gradients), passes
 * over every parameter that a step makes besides adamw's.
 *
 *   train_floors [--batch B] [--only s28|s32|b64] [--tflops F] [--tbps B]
 *
 * umdq-uses: umd common */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "config.h"
#include "model.h"
#include "op_cost.h"
#include "ops.h"
#include "optim.h"

typedef struct {
    const char *key, *label;
    int size, channels, width, depth, dec_depth, heads;
} floor_config;

static const floor_config CONFIGS[] = {
    {"s28", "S/4 28x28x1", 28, 1, 384, 12, 4, 6},
    {"s32", "S/4 32x32x3", 32, 3, 384, 12, 4, 6},
    {"b64", "B/4 64x64x3", 64, 3, 768, 12, 4, 12},
};

/* The counted ops, in the order the table lists them. */
enum {
    C_LINEAR_FWD, C_LINEAR_BWD, C_MLP_FWD, C_MLP_BWD, C_ATTENTION_FWD, C_ATTENTION_BWD,
    C_LAYERNORM_FWD, C_LAYERNORM_BWD, C_RESIDUAL_LAYERNORM_FWD, C_GATE_RESIDUAL_FWD,
    C_GATE_RESIDUAL_BWD, C_ADAMW, C_N
};
static const char *const NAMES[C_N] = {
    "linear_fwd", "linear_bwd", "mlp_fwd", "mlp_bwd", "attention_fwd", "attention_bwd",
    "layernorm_fwd", "layernorm_bwd", "residual_layernorm_fwd", "gate_residual_fwd",
    "gate_residual_bwd", "adamw"};

typedef struct {
    double flops, bytes;
    long calls;
} tally;

/* The layout being counted: its base table (bf16 or not) and the tallies of the step. */
static const umd_ops *counted;
static int counted_bf16;
static tally tallies[C_N];

static void add(int op, umd_cost k) {
    tallies[op].flops += k.flops;
    tallies[op].bytes += k.bytes;
    tallies[op].calls++;
}

/* As the CPU twin stores them: a flagged tensor is bf16 in a bf16 context. */
static int cost_bf16(const void *c, int types, int flag) {
    (void)c;
    return counted_bf16 && (types & flag) != 0;
}

static void f_linear_fwd(umd_ctx *c, void *y, const void *x, const float *W, const float *b, int M,
                         int N, int K, int types) {
    (void)y, (void)x, (void)W;
    add(C_LINEAR_FWD, umd_cost_linear_fwd(cost_bf16, c, b != NULL, M, N, K, types));
}
static void f_linear_bwd(umd_ctx *c, void *dx, float *dW, float *db, const void *dy, const void *x,
                         const float *W, int M, int N, int K, int acc, int types) {
    (void)dy, (void)x, (void)W;
    add(C_LINEAR_BWD, umd_cost_linear_bwd(cost_bf16, c, dx != NULL, dW != NULL, db != NULL, M, N, K,
                                          acc, types));
}
static void f_mlp_fwd(umd_ctx *c, void *y, void *h, float *tmp, const void *x, const float *W1,
                      const float *b1, const float *W2, const float *b2, int M, int F, int w,
                      int types) {
    (void)y, (void)h, (void)tmp, (void)x, (void)W1, (void)W2;
    add(C_MLP_FWD, umd_cost_mlp_fwd(cost_bf16, c, b1 != NULL, b2 != NULL, M, F, w, types));
}
static void f_mlp_bwd(umd_ctx *c, void *dx, float *dW1, float *db1, float *dW2, float *db2,
                      const void *dy, const void *x, const void *h, const float *W1,
                      const float *W2, float *tmp, int M, int F, int w, int types) {
    (void)dW1, (void)dW2, (void)dy, (void)x, (void)h, (void)W1, (void)W2, (void)tmp;
    add(C_MLP_BWD,
        umd_cost_mlp_bwd(cost_bf16, c, dx != NULL, db1 != NULL, db2 != NULL, M, F, w, types));
}
static void f_layernorm_fwd(umd_ctx *c, void *out, float *mean, float *rstd, const float *x,
                            const float *gamma, const float *beta, const float *mod, int ms, int n,
                            int T, int w, long xs, long os, int out_type) {
    (void)out, (void)mean, (void)rstd, (void)x, (void)gamma, (void)beta, (void)mod, (void)ms;
    (void)xs, (void)os;
    add(C_LAYERNORM_FWD, umd_cost_layernorm_fwd(cost_bf16, c, n, T, w, out_type));
}
static void f_layernorm_bwd(umd_ctx *c, float *dx, float *dgamma, float *dbeta, float *dmod,
                            const void *dout, const float *x, const float *mean, const float *rstd,
                            const float *gamma, const float *beta, const float *mod, int ms, int n,
                            int T, int w, long xs, long os, int acc, int types) {
    (void)dx, (void)dgamma, (void)dbeta, (void)dmod, (void)dout, (void)x, (void)mean, (void)rstd;
    (void)gamma, (void)beta, (void)mod, (void)ms, (void)xs, (void)os;
    add(C_LAYERNORM_BWD, umd_cost_layernorm_bwd(cost_bf16, c, n, T, w, acc, types));
}
static void f_gate_residual_fwd(umd_ctx *c, float *out, const float *x, const void *y,
                                const float *gate, int gs, int n, int T, int w, int y_type) {
    (void)out, (void)x, (void)y, (void)gate, (void)gs;
    add(C_GATE_RESIDUAL_FWD, umd_cost_gate_residual_fwd(cost_bf16, c, n, T, w, y_type));
}
static void f_gate_residual_bwd(umd_ctx *c, void *dy, float *dgate, const float *dout,
                                const void *y, const float *gate, int gs, int n, int T, int w,
                                int types) {
    (void)dy, (void)dgate, (void)dout, (void)y, (void)gate, (void)gs;
    add(C_GATE_RESIDUAL_BWD, umd_cost_gate_residual_bwd(cost_bf16, c, n, T, w, types));
}
static void f_residual_layernorm_fwd(umd_ctx *c, float *xo, void *out, float *mean, float *rstd,
                                     const float *x, const void *y, const float *gate, int gs,
                                     const float *gamma, const float *beta, const float *mod,
                                     int ms, int n, int T, int w, int types) {
    (void)xo, (void)out, (void)mean, (void)rstd, (void)x, (void)y, (void)gate, (void)gs;
    (void)gamma, (void)beta, (void)mod, (void)ms;
    add(C_RESIDUAL_LAYERNORM_FWD, umd_cost_residual_layernorm_fwd(cost_bf16, c, n, T, w, types));
}
static void f_attention_fwd(umd_ctx *c, void *out, float *lse, const void *qkv, int n, int T,
                            int heads, int hd, int types) {
    (void)out, (void)lse, (void)qkv;
    add(C_ATTENTION_FWD, umd_cost_attention_fwd(cost_bf16, c, n, T, heads, hd, types));
}
static void f_attention_bwd(umd_ctx *c, void *dqkv, const void *dout, const void *qkv,
                            const void *out, const float *lse, int n, int T, int heads, int hd,
                            int types) {
    (void)dqkv, (void)dout, (void)qkv, (void)out, (void)lse;
    add(C_ATTENTION_BWD, umd_cost_attention_bwd(cost_bf16, c, n, T, heads, hd, types));
}
static void f_adamw(umd_ctx *c, float *p, const float *g, float *m, float *v, const uint8_t *decay,
                    size_t n, const umd_adamw_args *a, const double *sumsq) {
    (void)c, (void)p, (void)g, (void)m, (void)v, (void)decay, (void)a, (void)sumsq;
    add(C_ADAMW, umd_cost_adamw(n));
}

/* Memory mapped without reserving it: the counted ops never touch theirs. The sizes of the
 * mappings, for their release. */
#define MAX_MAPS 64
static struct {
    void *p;
    size_t n;
} maps[MAX_MAPS];
static void *map_alloc(umd_ctx *c, size_t bytes) {
    (void)c;
    size_t n = bytes ? (bytes + 4095) / 4096 * 4096 : 4096;
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return NULL;
    for (int i = 0; i < MAX_MAPS; i++)
        if (!maps[i].p) {
            maps[i].p = p, maps[i].n = n;
            return p;
        }
    munmap(p, n);
    return NULL;
}
static void map_release(umd_ctx *c, void *p) {
    (void)c;
    for (int i = 0; i < MAX_MAPS; i++)
        if (maps[i].p == p) {
            munmap(p, maps[i].n);
            maps[i].p = NULL;
            return;
        }
}

static int no_grad_operand(const umd_ctx *c) {
    (void)c;
    return 0;
}

/* The counting table of a layout (0 fp32, 1 bf16, 2 bf16 with bf16 gradients). */
static const umd_ops *counting_ops(int layout) {
    static umd_ops t;
    t = layout ? *umd_ops_cpu_bf16() : *umd_ops_cpu();
    if (layout == 1) t.grad_operand = no_grad_operand;
    t.alloc = map_alloc;
    t.release = map_release;
    t.linear_fwd = f_linear_fwd;
    t.linear_bwd = f_linear_bwd;
    t.mlp_fwd = f_mlp_fwd;
    t.mlp_bwd = f_mlp_bwd;
    t.layernorm_fwd = f_layernorm_fwd;
    t.layernorm_bwd = f_layernorm_bwd;
    t.gate_residual_fwd = f_gate_residual_fwd;
    t.gate_residual_bwd = f_gate_residual_bwd;
    t.residual_layernorm_fwd = f_residual_layernorm_fwd;
    t.attention_fwd = f_attention_fwd;
    t.attention_bwd = f_attention_bwd;
    t.adamw = f_adamw;
    counted_bf16 = layout > 0;
    return counted = &t;
}

/* One step of config fc at batch B in layout `layout`, its tallies into out. 0, or 1 after a
 * message. */
static int count_step(const floor_config *fc, int batch, int layout, tally out[C_N]) {
    char json[1024], err[512];
    snprintf(json, sizeof json,
             "{\"data\": {\"dataset\": \"synthetic\", \"image_size\": %d, \"channels\": %d},"
             " \"model\": {\"patch\": 4, \"width\": %d, \"depth\": %d, \"dec_depth\": %d, \"heads\": %d},"
             " \"umd\": {\"labels\": true}, \"train\": {\"batch\": %d, \"steps\": 1, \"threads\": 1,"
             " \"recompute\": \"off\"}}",
             fc->size, fc->channels, fc->width, fc->depth, fc->dec_depth, fc->heads, batch);
    umd_config cfg;
    if (umd_config_parse_text(json, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "train_floors: config: %s\n", err);
        return 1;
    }
    const umd_ops *ops = counting_ops(layout);
    umd_shape shape = {fc->channels, fc->size, fc->size, 10, batch};
    umd_model *m = NULL;
    if (umd_model_new(&m, &cfg, &shape, ops, err, sizeof err) != 0) {
        fprintf(stderr, "train_floors: %s: %s\n", fc->label, err);
        return 1;
    }
    const size_t chw = (size_t)fc->channels * fc->size * fc->size;
    float *x = calloc((size_t)batch * chw, sizeof *x);
    int32_t *y = calloc((size_t)batch, sizeof *y);
    if (!x || !y) {
        fprintf(stderr, "train_floors: out of memory\n");
        umd_model_destroy(&m);
        return 1;
    }
    umd_model_load_batch(m, x, y);
    umd_model_draw(m, cfg.seed, 0);
    memset(tallies, 0, sizeof tallies);
    umd_model_step(m, 1, NULL);
    umd_optim_step(m, &cfg, 0, umd_lr_at(&cfg, 0), NULL);
    memcpy(out, tallies, sizeof tallies);
    free(x);
    free(y);
    umd_model_destroy(&m);
    return 0;
}

/* ms of a tally at the rates: the larger of its FLOPs and its bytes; *bytes_bound says which. */
static double floor_ms(const tally *t, double tflops, double tbps, int *bytes_bound) {
    double f = t->flops / (tflops * 1e9), b = t->bytes / (tbps * 1e9);
    if (bytes_bound) *bytes_bound = b > f;
    return f > b ? f : b;
}

int main(int argc, char **argv) {
    int batch = 256;
    double tflops = 803, tbps = 4.8;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(o, "--batch")) batch = atoi(v);
        else if (!strcmp(o, "--only")) only = v;
        else if (!strcmp(o, "--tflops")) tflops = atof(v);
        else if (!strcmp(o, "--tbps")) tbps = atof(v);
        else goto usage;
        i++;
    }
    if (batch < 1 || !(tflops > 0) || !(tbps > 0)) goto usage;
    printf("floors of one training step (forward, backward, AdamW), batch %d: FLOPs at %.0f "
           "TFLOP/s, bytes at %.2f TB/s; per op GFLOP, GB and floor ms in each layout (fp32 | "
           "bf16, the CUDA defaults' | bf16 + bf16 gradients); the sum is these ops' (not "
           "sumsq's or ema's passes over the parameters, nor the ops without a floor)\n",
           batch, tflops, tbps);
    int rc = 0;
    for (size_t i = 0; i < sizeof CONFIGS / sizeof *CONFIGS; i++) {
        const floor_config *fc = &CONFIGS[i];
        if (only && strcmp(only, fc->key) != 0) continue;
        tally t[3][C_N];
        int bad = 0;
        for (int l = 0; l < 3; l++) bad |= count_step(fc, batch, l, t[l]);
        if (bad) {
            rc = 1;
            continue;
        }
        printf("\n%s\n| op | calls | GFLOP | GB fp32 | GB bf16 | GB bf16+grad | floor ms fp32 | "
               "bf16 | bf16+grad | bound (bf16) |\n|---|---|---|---|---|---|---|---|---|---|\n",
               fc->label);
        double sum[3] = {0, 0, 0}, gb[3] = {0, 0, 0};
        for (int op = 0; op < C_N; op++) {
            double ms[3];
            int bb = 0;
            for (int l = 0; l < 3; l++) {
                ms[l] = floor_ms(&t[l][op], tflops, tbps, l == 1 ? &bb : NULL);
                sum[l] += ms[l];
                gb[l] += t[l][op].bytes / 1e9;
            }
            printf("| %s | %ld | %.0f | %.2f | %.2f | %.2f | %.3f | %.3f | %.3f | %s |\n", NAMES[op],
                   t[1][op].calls, t[1][op].flops / 1e9, t[0][op].bytes / 1e9,
                   t[1][op].bytes / 1e9, t[2][op].bytes / 1e9, ms[0], ms[1], ms[2],
                   t[1][op].flops == 0 ? "bytes" : bb ? "bytes" : "FLOPs");
        }
        printf("| sum | | | %.2f | %.2f | %.2f | %.2f | %.2f (%.2fx fp32) | %.2f (%.2fx fp32) | |\n",
               gb[0], gb[1], gb[2], sum[0], sum[1], sum[1] / sum[0], sum[2], sum[2] / sum[0]);
    }
    return rc;
usage:
    fprintf(stderr, "usage: train_floors [--batch B] [--only s28|s32|b64] [--tflops F] [--tbps B]\n");
    return 2;
}
