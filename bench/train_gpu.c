/* train_gpu.c: the CUDA trainer's speed on the PERF.md configs: S/4 on 28x28x1 and on 32x32x3
 * (width 384, depth 12, dec_depth 4, heads 6) and B/4 on 64x64x3 (768/12/4/12), batch 256, in
 * tf32 and bf16. For each it times warm-up plus timed whole training steps (batch upload, draws,
 * forward, backward, clip, AdamW) and prints the median step, images/s, the model's TFLOP/s (the
 * matmuls of both branches, forward + backward = 3x forward, as PERF.md counts them), MFU against
 * the cuBLAS bf16 GEMM ceiling (8192^3; UMDQ_BENCH_CEILING_N=N: N^3, for a smoke run where the
 * speed is not the point, as on the emulated device) measured in the same run, the peak of the trainer's
 * device arenas and the device memory in use, and the ratio to PERF.md's PyTorch bf16 +
 * torch.compile figure for the same config (measured on an H200; PyTorch cannot run inside this
 * binary, so that baseline is quoted, not re-measured).
 *
 *   train_gpu [--steps N] [--warmup N] [--batch B] [--only s28|s32|b64] [--precision tf32|bf16|fp32]
 *             [--profile]     (then three more steps with the device time of every op, per step,
 *                              and its floor: the larger of its FLOPs at the bf16 GEMM ceiling
 *                              and its bytes at the device copy rate, both measured in this run;
 *                              umd_cuda_profile_floors; then the time inside the ops of each
 *                              GEMM shape and of attention's backward kernels)
 *             [--switches-off]  (every UMDQ_CUDA_* switch off, as "0" in a job's environment; the
 *                              switch options after it turn theirs on again. Without it each
 *                              switch takes its default: umd_cuda.h, and the "device:" line says
 *                              which are on)
 *             [--graph]       (steps after the first replay a recording of the step: a CUDA
 *                              graph, as UMDQ_CUDA_GRAPH=1 does for a job)
 *             [--recompute]   (train.recompute "full": blocks keep their input only and run
 *                              again in the backward)
 *             [--recompute-norms]  (train.recompute "norms": LayerNorms and residual run again in
 *                              the backward)
 *             [--recompute-partial]  (train.recompute "partial": LayerNorms, residual and fc1 run
 *                              again in the backward)
 *             [--fused-norm]  (each gated residual and the LayerNorm after it in one kernel, as
 *                              UMDQ_CUDA_FUSED_NORM=1 does for a job)
 *             [--bf16-operands]  (bf16 contexts keep the LayerNorm outputs that feed a Linear or
 *                              the MLP in bf16, the GEMMs reading them without a conversion, and
 *                              qkv where the mma attention takes it (head width 64), written bf16
 *                              by its Linear, as UMDQ_CUDA_BF16_OPERANDS=1 does for a job)
 *             [--bf16-mlp]    (also the MLP's hidden state h in bf16, written rounded by fc1 and
 *                              read so by GELU and its backward, as bf16 autocast keeps it: other
 *                              results than the default's, as UMDQ_CUDA_BF16_MLP=1 does for a
 *                              job; implies --bf16-operands)
 *             [--gelu-epilogue]  (also the MLP's GELU in cuBLASLt's epilogues: fc1 writes h and
 *                              gelu(h) in one GEMM, GELU's backward is the epilogue of dy W2, as
 *                              UMDQ_CUDA_GELU_EPILOGUE=1 does for a job; implies --bf16-mlp)
 *             [--bf16-branch]  (also each block's branch tensors in bf16: attention's output,
 *                              written rounded by the mma kernels, and proj's and fc2's outputs,
 *                              written rounded by their GEMMs and read so by the gated residuals,
 *                              as bf16 autocast keeps them: other results than the default's, as
 *                              UMDQ_CUDA_BF16_BRANCH=1 does for a job; implies --bf16-operands)
 *             [--bf16-dh]     (the MLP's dy W2 in bf16, its GELU backward reading it rounded, as
 *                              bf16 autocast's gradient of fc2's input: no fp32 (tokens, F)
 *                              scratch, as UMDQ_CUDA_BF16_DH=1 does for a job; implies --bf16-mlp)
 *             [--bf16-grad]   (also the gradients of the branch tensors, and of qkv where the mma
 *                              attention takes it, in bf16: written rounded by the gated
 *                              residuals' and attention's backward, read as they are by the
 *                              backward GEMMs, as bf16 autocast's backward keeps them, as
 *                              UMDQ_CUDA_BF16_GRAD=1 does for a job; implies --bf16-branch)
 *             [--bf16-bias]   (a bf16 y's bias rounded to bf16 too, as bf16 autocast casts it:
 *                              cuBLASLt writes the bf16 y with a bias of its type, where it has
 *                              no bf16 output with an fp32 bias, as UMDQ_CUDA_BF16_BIAS=1 does
 *                              for a job; implies --bf16-operands)
 *             [--attn-kv32] (the mma attention's dK dV kernels step 32 queries at a time, in
 *                              the registers of 3 blocks a multiprocessor: the same bits, as
 *                              UMDQ_CUDA_ATTN_KV32=1 does for a job)
 *             [--attn-fwd32]  (each warp of the mma attention's resident forward takes 32 query
 *                              rows, each K and V fragment read once for both tiles: the same
 *                              bits, as UMDQ_CUDA_ATTN_FWD32=1 does for a job)
 *             [--attn-split]  (the mma attention's resident kernels share the strips past the
 *                              last whole round of their 4 warps among them, the parts combined
 *                              in a fixed order: other bits in those strips' rows only, as
 *                              UMDQ_CUDA_ATTN_SPLIT=1 does for a job)
 *             [--attn-ds]     (the mma attention's resident backward stores dS from its dK dV
 *                              kernel and takes dQ = dS K in one product, where its dQ kernel
 *                              computed S, dP and dS again: dK dV the same bits, dQ within
 *                              rounding, as UMDQ_CUDA_ATTN_DS=1 does for a job)
 *             [--gemm-tune]   (each GEMM shape cublasGemmEx would run is timed once against the
 *                              other algorithms cuBLASLt lists for it and the fastest kept: other
 *                              bits where one is, as UMDQ_CUDA_GEMM_TUNE=1 does for a job; with
 *                              UMDQ_CUDA_GEMM_TUNE_LOG=1 each shape's times go to stderr)
 *             [--mlp-one-pass]  (the MLP backward's gelu(h) for dW2 and its GELU backward in one
 *                              pass over h, with a bf16 dy and dy W2: the same bits, as
 *                              UMDQ_CUDA_MLP_ONE_PASS=1 does for a job; implies --bf16-grad and
 *                              --bf16-dh, where it acts)
 *             [--linears]     (instead of steps: each Linear alone, forward and backward, --steps
 *                              calls each, against its FLOP floor; with --bf16-operands in bf16
 *                              the qkv Linear reads a bf16 x and writes a bf16 y, as the model's does)
 *
 *             [--attention]   (instead of steps: the bf16 attention alone, forward and backward,
 *                              --steps calls each, at 1 + L, 1 + L/4 and 1 + L/2 tokens, with
 *                              qkv fp32 or bf16 and each of the three attention switches,
 *                              against its FLOP floor)
 *
 * Prints "skipped" and exits 0 when no CUDA device is visible. UMDQ_CUDA_ATTENTION=gemm|fused|mma
 * in the environment chooses the attention path (umd_cuda.h; mma, the default, applies to bf16).
 *
 * --profile prints every op's floor beside its time, from the op's own arguments (op_cost.h:
 * each tensor at the width it is stored in with the switches in effect), so the floors follow the
 * layouts; bench/train_floors counts the same floors over one step without a device. B/4
 * 64x64x3, bf16, batch 256, the defaults' layout (train_floors: FLOPs at 803 TFLOP/s, the bf16
 * cuBLAS ceiling measured on the H200; bytes at 4.8 TB/s), against the device times of the last
 * H200 profile kept for its four largest ops (the defaults with the GELU epilogues on, as they
 * were by default then) and the whole step:
 *
 *   op                       GFLOP/step  GB/step  floor ms  measured ms  x floor
 *   linear_fwd                     2970      6.6      3.70
 *   linear_bwd                     5934     15.2      7.39        14.3     1.9x
 *   mlp_fwd                        5847      6.0      7.28         9.9     1.4x
 *   mlp_bwd                       11693      9.5     14.56        31.8     2.2x
 *   attention_fwd (mma)             357      3.8      0.80
 *   attention_bwd (mma)             713     11.5      2.39        11.8     4.9x
 *   layernorm_fwd + residual_       -       11.6      2.42
 *   layernorm_bwd                     -     16.1      3.36
 *   gate_residual_fwd + _bwd          -     10.0      2.09
 *   adamw                             -      5.1      1.07
 *   sum                                              45.05        85.9     1.9x
 * (the sum is these ops' floors; the measured step also holds sumsq's and ema's passes over the
 * parameters and the ops without a floor, op_cost.h's list)
 * With the gradient tensors in bf16 (UMDQ_CUDA_BF16_GRAD=1) the floors' bytes fall from 95.4 to
 * 80.2 GB a step (sum 43.46 ms); the bf16 copies of the gradients the conversion passes no longer
 * write (each fp32 gradient rounded on its way into a GEMM) are in no floor: about 5 GB more.
 * With fp32 activations and every switch off, a hand-made table had the step at 100.9 ms against
 * a floor of 48.1: the GEMMs at 1.9-2.0x, attention at 3.0x forward and 4.4x backward.
 *
 * UMDQ_BENCH_SMOKE=1: a smoke run of every row and report, where speed is not the point (make
 * gpu-check on the emulated device: tests/long/gpu_check_emulated.sh). Each config keeps its
 * name and head width (64) but runs with a sixth of its heads, at 16x16 pixels (17 tokens),
 * depth 2 and decoder depth 1, batch 2 unless --batch says otherwise, with a 256^3 GEMM ceiling
 * (unless UMDQ_BENCH_CEILING_N) and the copy rate over 16 MiB; a line under the table's header
 * says so. The GEMM tuner (--gemm-tune) puts every shape, however small, on cuBLASLt's first
 * algorithm (UMDQ_CUDA_GEMM_TUNE_TAKE=1, unless set), so that its code and log run. No figure of
 * such a run compares with anything.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "config.h"
#include "cuda/umd_cuda.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "philox.h"
#include "step.h"

typedef struct {
    const char *key, *label;
    int size, channels, width, depth, dec_depth, heads;
    double torch_img_s; /* PERF.md: PyTorch bf16 + torch.compile, batch 256, H200 */
} bench_config;

static const bench_config CONFIGS[] = {
    {"s28", "S/4 28x28x1", 28, 1, 384, 12, 4, 6, 7060},
    {"s32", "S/4 32x32x3", 32, 3, 384, 12, 4, 6, 6237},
    {"b64", "B/4 64x64x3", 64, 3, 768, 12, 4, 12, 3119},
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Multiply-adds of one training step's matmuls x 2 (flops) x 3 (forward + backward). */
static double step_flops(const umd_dims *d) {
    double w = d->w, F = d->F, B = d->B, L = d->L, P = d->P;
    double enc_tok = (double)d->n_clean * d->T_clean + (double)d->n_noisy * d->T_noisy;
    double dec_tok = B * d->T_dec;
    double mac = (enc_tok * d->depth + dec_tok * d->dec_depth) * (4 * w * w + 2 * F * w);
    double enc_att = (double)d->n_clean * d->T_clean * d->T_clean +
                     (double)d->n_noisy * d->T_noisy * d->T_noisy;
    mac += (enc_att * d->depth + B * (double)d->T_dec * d->T_dec * d->dec_depth) * 2 * w;
    mac += (d->depth + d->dec_depth) * B * 6 * w * w + B * 2 * w * w; /* adaLN, final modulation */
    mac += B * L * P * w + B * L * 2 * P * w;                         /* patch embedding, head */
    return 6.0 * mac;
}

/* --recompute, --recompute-partial, --recompute-norms: train.recompute (UMD_RECOMPUTE_*) */
static int recompute;

/* The device's copy rate in TB/s (bytes read and written), measured once in main: the byte
 * floors of --profile's report are at it. */
static double copy_tbps;

static int smoke; /* UMDQ_BENCH_SMOKE=1 (main) */

/* ops->copy of 256 Mi floats (2 Mi in a smoke run), 10 times after one untimed: (read + written
 * bytes) / s / 1e12, or -1 (err says why). */
static double measure_copy_tbps(const umd_ops *ops, umd_ctx *c, char *err, size_t errlen) {
    const size_t n = smoke ? (size_t)2 << 20 : (size_t)256 << 20;
    float *a = ops->alloc(c, n * sizeof(float)), *b = ops->alloc(c, n * sizeof(float));
    double r = -1;
    if (a && b) {
        ops->copy(c, b, a, n);
        if (ops->status(c, err, errlen) == 0) {
            double t0 = now_s();
            for (int k = 0; k < 10; k++) ops->copy(c, k % 2 ? a : b, k % 2 ? b : a, n);
            if (ops->status(c, err, errlen) == 0) r = 10.0 * 2 * n * sizeof(float) / (now_s() - t0) / 1e12;
        }
    } else {
        snprintf(err, errlen, "no device memory for the copy's %zu MiB", 2 * n * sizeof(float) >> 20);
    }
    if (a) ops->release(c, a);
    if (b) ops->release(c, b);
    return r;
}


/* The context's GEMM tuning counts (umd_cuda_describe: "GEMM tuning on (...)") as a line of the
 * table, where the context tunes (--gemm-tune); nothing otherwise. */
static void print_tuning(umd_ctx *c) {
    char d[1024];
    umd_cuda_describe(c, d, sizeof d);
    const char *g = strstr(d, "GEMM tuning on");
    if (g) printf("|   %s |\n", g);
}

static int run_one(const bench_config *bc, const char *precision, int batch, int warmup, int steps,
                   double ceiling, int profile) {
    char json[1024], err[512];
    snprintf(json, sizeof json,
             "{\"data\": {\"dataset\": \"synthetic\", \"image_size\": %d, \"channels\": %d},"
             " \"model\": {\"patch\": 4, \"width\": %d, \"depth\": %d, \"dec_depth\": %d, \"heads\": %d},"
             " \"umd\": {\"labels\": true}, \"train\": {\"batch\": %d, \"steps\": %d,"
             " \"device\": \"cuda\", \"precision\": \"%s\", \"recompute\": \"%s\"}}",
             bc->size, bc->channels, bc->width, bc->depth, bc->dec_depth, bc->heads, batch,
             warmup + steps, precision, umd_recompute_name(recompute));
    umd_config cfg;
    if (umd_config_parse_text(json, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "train_gpu: config: %s\n", err);
        return 1;
    }
    int math = cfg.precision == UMD_PRECISION_BF16 ? UMD_MATH_BF16
               : cfg.precision == UMD_PRECISION_TF32 ? UMD_MATH_TF32 : UMD_MATH_FP32;
    const umd_ops *ops = umd_ops_cuda(math);
    umd_shape shape = {bc->channels, bc->size, bc->size, 10, batch};
    umd_model *m = NULL;
    if (umd_model_new(&m, &cfg, &shape, ops, err, sizeof err) != 0) {
        fprintf(stderr, "train_gpu: %s %s: %s\n", bc->label, precision, err);
        return 1;
    }
    umd_model_init(m, cfg.seed);
    /* four fixed batches of random images in [-1, 1], used in turn */
    size_t chw = (size_t)bc->channels * bc->size * bc->size;
    float *x = malloc(4 * (size_t)batch * chw * sizeof *x);
    int32_t *y = malloc(4 * (size_t)batch * sizeof *y);
    double *t = malloc((size_t)(warmup + steps) * sizeof *t);
    if (!x || !y || !t) return 1;
    for (size_t i = 0; i < 4 * (size_t)batch * chw; i++)
        x[i] = 2.0f * philox_unit(philox_draw(1, PHILOX_TEST, 0, i).v[0]) - 1.0f;
    for (int i = 0; i < 4 * batch; i++) y[i] = i % 10;
    umd_ctx *c = umd_model_ctx(m);
    int rc = 0;
    umd_losses L = {0};
    umd_stepper sp = {0};
    char shown[32]; /* the precision, and whether the steps replayed a recording */
    for (int k = 0; k < warmup + steps; k++) {
        double t0 = now_s();
        umd_model_load_batch(m, x + (size_t)(k % 4) * batch * chw, y + (size_t)(k % 4) * batch);
        umd_model_draw(m, cfg.seed, k);
        if (umd_train_step(&sp, m, &cfg, k, umd_lr_at(&cfg, k), err, sizeof err) != 0 ||
            ops->status(c, err, sizeof err) != 0) {
            fprintf(stderr, "train_gpu: %s %s: step %d: %s\n", bc->label, precision, k, err);
            rc = 1;
            break;
        }
        if (sp.note[0]) {
            fprintf(stderr, "train_gpu: %s %s: %s\n", bc->label, precision, sp.note);
            sp.note[0] = 0;
        }
        t[k] = now_s() - t0;
    }
    if (rc == 0) {
        umd_model_losses(m, &L);
        snprintf(shown, sizeof shown, "%s%s%s%s", precision, sp.recorded ? " graph" : "",
                 recompute ? " recompute " : "", recompute ? umd_recompute_name(recompute) : "");
        precision = shown;
        qsort(t + warmup, (size_t)steps, sizeof *t, cmp_double);
        double med = steps % 2 ? t[warmup + steps / 2]
                               : 0.5 * (t[warmup + steps / 2 - 1] + t[warmup + steps / 2]);
        double flops = step_flops(umd_model_dims(m));
        double ips = batch / med, tf = flops / med / 1e12;
        size_t peak = 0, used = 0, total = 0;
        umd_cuda_memory(c, &peak, &used, &total);
        printf("| %-12s | %-4s | %5d | %8.1f | %9.0f | %6.1f | %5.1f%% | %6.2f | %6.2f | %7.0f | %5.2fx | %.4f |\n",
               bc->label, precision, batch, med * 1e3, ips, tf, ceiling > 0 ? 100.0 * tf / ceiling : 0.0,
               (double)peak / 1073741824.0, (double)used / 1073741824.0, bc->torch_img_s,
               ips / bc->torch_img_s, L.loss);
        printf("|   %.2f GFLOP/img |\n", flops / batch / 1e9);
        print_tuning(c);
        fflush(stdout);
    }
    if (rc == 0 && profile) {
        /* three more steps with every op timed on the device, against its floor */
        umd_cuda_profile_floors(c, ceiling, copy_tbps);
        if (umd_cuda_profile(c, 1) != 0) {
            fprintf(stderr, "train_gpu: %s %s: the profile could not start\n", bc->label, precision);
            rc = 1;
        }
        for (int k = 0; rc == 0 && k < 3; k++) {
            int s = warmup + steps + k;
            umd_model_load_batch(m, x + (size_t)(s % 4) * batch * chw, y + (size_t)(s % 4) * batch);
            umd_model_draw(m, cfg.seed, s);
            umd_model_step(m, 1, &L);
            umd_optim_step(m, &cfg, s, umd_lr_at(&cfg, s), NULL);
            /* a fault in a profiled step fails the row (its report would be partial) */
            if (ops->status(c, err, sizeof err) != 0) {
                fprintf(stderr, "train_gpu: %s %s: profiled step %d: %s\n", bc->label, precision, k,
                        err);
                rc = 1;
            }
        }
        if (rc == 0) {
            char rep[16384];
            umd_cuda_profile_report(c, 3, rep, sizeof rep);
            umd_cuda_profile(c, 0);
            printf("    %s %s %s\n", bc->label, precision, rep);
            if (ops->status(c, err, sizeof err) != 0) {
                fprintf(stderr, "train_gpu: %s %s: after the profile: %s\n", bc->label, precision,
                        err);
                rc = 1;
            }
        }
    }
    free(x);
    free(y);
    free(t);
    umd_model_destroy(&m);
    return rc;
}

/* One op's forward (pass 0) and backward (pass 1) timed: one untimed call, then reps calls each,
 * ms[pass] per call; call runs pass `pass` of the op that arg describes. 0, or 1 after a
 * message naming the mode (the context failed). */
typedef void (*pass_call)(const umd_ops *ops, umd_ctx *c, int pass, const void *arg);
static int time_passes(const umd_ops *ops, umd_ctx *c, int reps, pass_call call, const void *arg,
                       const char *mode, double ms[2]) {
    char err[512];
    for (int pass = 0; pass < 2; pass++) {
        for (int r = -1; r < reps; r++) {
            if (r == 0) {
                if (ops->status(c, err, sizeof err)) break;
                ms[pass] = now_s();
            }
            call(ops, c, pass, arg);
        }
        if (ops->status(c, err, sizeof err)) {
            fprintf(stderr, "train_gpu: %s: %s\n", mode, err);
            return 1;
        }
        ms[pass] = (now_s() - ms[pass]) * 1e3 / reps;
    }
    return 0;
}

/* The table columns of time_passes' ms for an op of f forward FLOPs (the backward counted as
 * twice them), against the FLOP floor at ceiling TFLOP/s, ending the row. */
static void print_floor_cols(const double ms[2], double f, double ceiling) {
    double floor_f = f / (ceiling * 1e12) * 1e3;
    printf(" %.3f | %.0f | %.2fx | %.3f | %.0f | %.2fx |\n", ms[0], f / ms[0] / 1e9, ms[0] / floor_f,
           ms[1], 2 * f / ms[1] / 1e9, ms[1] / (2 * floor_f));
}

/* A Linear's operands; xo is x as its flags say (UMD_OPND: a bf16 operand tensor), and y with
 * UMD_OPND_Y goes into dx (the backward reads y as an fp32 dy). */
typedef struct {
    const void *xo;
    float *y, *dx, *W, *dW, *b, *db;
    int M, N, K, types;
} linear_call;

static void linear_pass(const umd_ops *ops, umd_ctx *c, int pass, const void *arg) {
    const linear_call *a = arg;
    if (pass == 0)
        ops->linear_fwd(c, (a->types & UMD_OPND_Y) ? (void *)a->dx : (void *)a->y, a->xo, a->W, a->b,
                        a->M, a->N, a->K, a->types);
    else
        ops->linear_bwd(c, a->dx, a->dW, a->db, a->y, a->xo, a->W, a->M, a->N, a->K, 0,
                        a->types & UMD_OPND);
}

/* Every buffer of p[0 .. n) back to c (NULL ones skipped), then c itself. */
static void release_ctx(const umd_ops *ops, umd_ctx **c, void *const *p, int n) {
    for (int i = 0; i < n; i++) ops->release(*c, p[i]);
    ops->ctx_destroy(c);
}

typedef struct {
    float *out, *lse, *dq, *g;
    const void *qkv;
    int n, T, heads, hd, type;
} attention_call;

static void attention_pass(const umd_ops *ops, umd_ctx *c, int pass, const void *arg) {
    const attention_call *a = arg;
    if (pass == 0) ops->attention_fwd(c, a->out, a->lse, a->qkv, a->n, a->T, a->heads, a->hd, a->type);
    else ops->attention_bwd(c, a->dq, a->g, a->qkv, a->out, a->lse, a->n, a->T, a->heads, a->hd, a->type);
}

/* --linears: each Linear of the config's blocks alone, at the decoder's M = batch x (1 + L) rows,
 * forward and backward (with dx and the bias), timed over `reps` calls after one, against its
 * FLOP floor at the measured bf16 ceiling (TF32's for tf32). Shows which product is far from it. */
static int run_linears(const bench_config *bc, const char *precision, int batch, int reps,
                       double bf_ceiling, double tf_ceiling) {
    int math = !strcmp(precision, "bf16") ? UMD_MATH_BF16 : !strcmp(precision, "tf32") ? UMD_MATH_TF32
                                                                                         : UMD_MATH_FP32;
    const umd_ops *ops = umd_ops_cuda(math);
    char err[512];
    umd_ctx *c = NULL;
    if (ops->ctx_new(&c, 1, err, sizeof err) != 0) {
        fprintf(stderr, "train_gpu: %s\n", err);
        return 1;
    }
    const int w = bc->width, F = 4 * w, L = (bc->size / 4) * (bc->size / 4), T = 1 + L;
    const long M = (long)batch * T;
    umd_limits lim = {batch, T, w, bc->heads, L, (long)F * w};
    size_t wsb = ops->workspace_bytes(c, &lim);
    void *ws = ops->alloc(c, wsb);
    float *x = ops->alloc(c, (size_t)M * F * 4), *y = ops->alloc(c, (size_t)M * F * 4);
    float *dx = ops->alloc(c, (size_t)M * F * 4), *W = ops->alloc(c, (size_t)F * w * 4);
    float *dW = ops->alloc(c, (size_t)F * w * 4), *b = ops->alloc(c, (size_t)F * 4);
    float *db = ops->alloc(c, (size_t)F * 4);
    /* the qkv Linear of an operand context reads a bf16 x and writes its y bf16, as the model's */
    const int opnd = ops->operand_bytes(c) == 2;
    void *xh = opnd ? ops->alloc(c, (size_t)M * w * 2) : NULL; /* zero: values do not change the time */
    void *bufs[] = {ws, x, y, dx, W, dW, b, db, xh};
    if (!ws || !x || !y || !dx || !W || !dW || !b || !db || (opnd && !xh)) {
        fprintf(stderr, "train_gpu: --linears: out of device memory\n");
        release_ctx(ops, &c, bufs, 9);
        return 1;
    }
    ops->set_workspace(c, ws, wsb);
    ops->fill(c, x, (size_t)M * F, 0.5f);
    ops->fill(c, y, (size_t)M * F, 0.25f);
    ops->fill(c, W, (size_t)F * w, 0.01f);
    ops->fill(c, b, (size_t)F, 0.1f);
    const struct { const char *name; int N, K; } lin[] = {
        {"qkv", 3 * w, w}, {"proj", w, w}, {"fc1", F, w}, {"fc2", w, F}};
    double ceiling = math == UMD_MATH_BF16 ? bf_ceiling : tf_ceiling;
    printf("\n%s %s Linears, M = %ld rows; FLOP floor at %.0f TFLOP/s\n", bc->label, precision, M, ceiling);
    printf("| linear | N x K | fwd ms | fwd TFLOP/s | x floor | bwd ms | bwd TFLOP/s | x floor |\n|---|---|---|---|---|---|---|---|\n");
    int rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++) {
        int N = lin[i].N, K = lin[i].K;
        const int ybf = i == 0 && opnd;
        double f = 2.0 * M * N * K, ms[2];
        const linear_call call = {ybf ? xh : (const void *)x, y, dx, W, dW, b, db, (int)M, N, K,
                                  ybf ? UMD_OPND | UMD_OPND_Y : UMD_F32};
        rc = time_passes(ops, c, reps, linear_pass, &call, "--linears", ms);
        if (rc) break;
        printf("| %s%s | %d x %d |", lin[i].name, ybf ? " (bf16 x, y)" : "", N, K);
        print_floor_cols(ms, f, ceiling);
    }
    if (rc == 0) print_tuning(c);
    release_ctx(ops, &c, bufs, 9);
    return rc;
}

/* The --attention variants: qkv a bf16 operand (UMDQ_CUDA_BF16_OPERANDS), the dK dV step over 32
 * queries (UMDQ_CUDA_ATTN_KV32), the resident forward's warps over 32 rows (UMDQ_CUDA_ATTN_FWD32),
 * the resident kernels' last strips shared by their warps (UMDQ_CUDA_ATTN_SPLIT). */
#define ATTN_NVARS 5
static const char *const ATTN_VARS[ATTN_NVARS] = {"UMDQ_CUDA_BF16_OPERANDS", "UMDQ_CUDA_ATTN_KV32",
                                                  "UMDQ_CUDA_ATTN_FWD32", "UMDQ_CUDA_ATTN_SPLIT",
                                                  "UMDQ_CUDA_ATTN_DS"};

/* A bf16 context made with the switches ATTN_VARS[i] = on[i] set for the moment (each context
 * reads them when it is made), with a workspace for lim; NULL after a message. */
static umd_ctx *attention_ctx(const umd_ops *ops, const int on[ATTN_NVARS], const umd_limits *lim,
                              void **ws) {
    char err[512];
    umd_ctx *c = NULL;
    /* the switches, and dQ from dS at every resident length so that the table shows where it
     * pays (the default takes it up to 192 tokens) */
    const char *vars[ATTN_NVARS + 1], *vals[ATTN_NVARS + 1];
    char *saved[ATTN_NVARS + 1];
    for (int i = 0; i < ATTN_NVARS; i++) vars[i] = ATTN_VARS[i], vals[i] = on[i] ? "1" : "0";
    vars[ATTN_NVARS] = "UMDQ_CUDA_ATTN_DS_MAX_T", vals[ATTN_NVARS] = "384";
    for (int i = 0; i <= ATTN_NVARS; i++) {
        const char *v = getenv(vars[i]);
        saved[i] = v ? strdup(v) : NULL;
        setenv(vars[i], vals[i], 1);
    }
    int rc = ops->ctx_new(&c, 1, err, sizeof err);
    for (int i = 0; i <= ATTN_NVARS; i++) {
        if (saved[i]) setenv(vars[i], saved[i], 1);
        else unsetenv(vars[i]);
        free(saved[i]);
    }
    if (rc != 0) {
        fprintf(stderr, "train_gpu: --attention: %s\n", err);
        return NULL;
    }
    size_t wsb = ops->workspace_bytes(c, lim);
    *ws = ops->alloc(c, wsb);
    if (!*ws) {
        fprintf(stderr, "train_gpu: --attention: no device memory for the workspace\n");
        ops->ctx_destroy(&c);
        return NULL;
    }
    ops->set_workspace(c, *ws, wsb);
    return c;
}

/* --attention: the bf16 attention alone, forward and backward, at the config's head count and
 * batch, for sequences of every token (the decoder's T = 1 + L) and of a quarter and a half of
 * the patches (1 + L/4, 1 + L/2: encoders at mask ratios 0.75 and 0.5), in ten variants: every
 * switch off, the first three attention switches alone (ATTN_VARS), the split with the 32-query
 * step (the defaults' step), then a bf16 qkv (where attention_operand says so) alone, with the
 * 32-query step (the defaults), with it and the split, with it and the 32-row forward, and with
 * it and dQ from a stored dS (which takes a bf16 qkv).
 * FLOPs as the floor table counts them (forward 4 T^2 d a head, backward twice that), against the
 * bf16 GEMM ceiling. */
static int run_attention(const bench_config *bc, int batch, int reps, double ceiling) {
    const umd_ops *ops = umd_ops_cuda(UMD_MATH_BF16);
    const int L = (bc->size / 4) * (bc->size / 4), hd = bc->width / bc->heads, H = bc->heads;
    const int Ts[] = {1 + L, 1 + L / 4, 1 + L / 2};
    const umd_limits lim = {batch, 1 + L, bc->width, H, L, (long)4 * bc->width * bc->width};
    const size_t nq = (size_t)batch * (1 + L) * 3 * bc->width, no = nq / 3;
    const size_t nl = (size_t)batch * H * (1 + L);
    if (hd != 64) { /* the GEMM path alone: no variants to compare */
        printf("\n%s: heads of %d; the mma attention and its variants take 64: --attention skips it\n",
               bc->label, hd);
        return 0;
    }
    printf("\n%s bf16 attention alone, %d sequences x %d heads of %d; FLOP floor at %.0f TFLOP/s\n",
           bc->label, batch, H, hd, ceiling);
    printf("| T | qkv | dK dV step | fwd rows a warp | last strips | dQ | fwd ms | fwd TFLOP/s | "
           "x floor | bwd ms | bwd TFLOP/s | x floor |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    static const int variants[][ATTN_NVARS] = {{0, 0, 0, 0, 0}, {0, 1, 0, 0, 0}, {0, 0, 1, 0, 0},
                                               {0, 0, 0, 1, 0}, {0, 1, 0, 1, 0}, {1, 0, 0, 0, 0},
                                               {1, 1, 0, 0, 0}, {1, 1, 0, 1, 0}, {1, 1, 1, 0, 0},
                                               {1, 1, 0, 0, 1}};
    int rc = 0;
    for (int v = 0; v < (int)(sizeof variants / sizeof *variants) && rc == 0; v++) {
        const int *on = variants[v];
        void *ws;
        umd_ctx *c = attention_ctx(ops, on, &lim, &ws);
        if (!c) return 1;
        const int type = on[0] && ops->attention_operand(c, hd) ? UMD_OPND : UMD_F32;
        float *q = ops->alloc(c, nq * 4), *dq = ops->alloc(c, nq * 4), *out = ops->alloc(c, no * 4);
        float *g = ops->alloc(c, no * 4), *lse = ops->alloc(c, nl * 4);
        void *qh = type == UMD_OPND ? ops->alloc(c, nq * 2) : NULL; /* zero: values do not change the time */
        void *bufs[] = {ws, q, dq, out, g, lse, qh};
        if (!q || !dq || !out || !g || !lse || (type == UMD_OPND && !qh)) {
            fprintf(stderr, "train_gpu: --attention: out of device memory\n");
            release_ctx(ops, &c, bufs, 7);
            return 1;
        }
        ops->fill(c, q, nq, 0.05f);
        ops->fill(c, g, no, 0.01f);
        const void *qq = qh ? qh : (const void *)q;
        for (int t = 0; t < 3 && rc == 0; t++) {
            const int T = Ts[t];
            double f = 4.0 * T * T * hd * H * batch, ms[2];
            const attention_call call = {out, lse, dq, g, qq, batch, T, H, hd, type};
            rc = time_passes(ops, c, reps, attention_pass, &call, "--attention", ms);
            if (rc) break;
            printf("| %d | %s | %s | %s | %s | %s |", T, type == UMD_OPND ? "bf16" : "fp32",
                   on[1] ? "32" : "64", on[2] && T <= 384 ? "32" : "16",
                   on[3] && T <= 384 ? (on[2] ? "shared (bwd)" : "shared") : "whole",
                   on[4] && type == UMD_OPND && T <= 384 ? "from dS" : "own kernel");
            print_floor_cols(ms, f, ceiling);
        }
        release_ctx(ops, &c, bufs, 7);
    }
    return rc;
}

/* The options that turn a UMDQ_CUDA_* switch on for every context made from then on, each with
 * the switches a context reads it under (ops_cuda.cu), turned on with it; --switches-off turns
 * every first one off. */
typedef struct {
    const char *opt;
    const char *vars[6]; /* UMDQ_CUDA_ suffixes: the option's own, then what it implies */
} switch_opt;
static const switch_opt SWITCH_OPTS[] = {
    {"--graph", {"GRAPH"}},
    {"--fused-norm", {"FUSED_NORM"}},
    {"--bf16-operands", {"BF16_OPERANDS"}},                     /* bf16 contexts only */
    {"--bf16-mlp", {"BF16_MLP", "BF16_OPERANDS"}},              /* read with bf16 operands */
    {"--gelu-epilogue", {"GELU_EPILOGUE", "BF16_MLP", "BF16_OPERANDS"}}, /* with a bf16 h */
    {"--bf16-branch", {"BF16_BRANCH", "BF16_OPERANDS"}},
    {"--bf16-dh", {"BF16_DH", "BF16_MLP", "BF16_OPERANDS"}},    /* its GELU backward, a bf16 h */
    {"--bf16-grad", {"BF16_GRAD", "BF16_BRANCH", "BF16_OPERANDS"}}, /* the branches' gradients */
    {"--bf16-bias", {"BF16_BIAS", "BF16_OPERANDS"}},            /* a bf16 y's bias */
    {"--attn-kv32", {"ATTN_KV32"}},                             /* the mma attention's backward */
    {"--attn-fwd32", {"ATTN_FWD32"}},                           /* and its forward */
    {"--attn-split", {"ATTN_SPLIT"}},                           /* their last strips */
    {"--attn-ds", {"ATTN_DS"}},                                 /* the backward's dQ from dS */
    {"--gemm-tune", {"GEMM_TUNE"}},                             /* bf16 contexts only */
    /* it acts with a bf16 dy (the gradients) and dy W2 (with a bf16 h) */
    {"--mlp-one-pass", {"MLP_ONE_PASS", "BF16_GRAD", "BF16_BRANCH", "BF16_DH", "BF16_MLP",
                        "BF16_OPERANDS"}},
};

/* 1 when o is one of SWITCH_OPTS, its switches then set to 1. */
static int switch_option(const char *o) {
    for (size_t k = 0; k < sizeof SWITCH_OPTS / sizeof *SWITCH_OPTS; k++) {
        if (strcmp(o, SWITCH_OPTS[k].opt) != 0) continue;
        for (int j = 0; j < 6 && SWITCH_OPTS[k].vars[j]; j++) {
            char var[64];
            snprintf(var, sizeof var, "UMDQ_CUDA_%s", SWITCH_OPTS[k].vars[j]);
            setenv(var, "1", 1);
        }
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    int steps = 10, warmup = 3, batch = 0, profile = 0, linears = 0, attention = 0;
    const char *only = NULL, *precision = NULL;
    const char *sm = getenv("UMDQ_BENCH_SMOKE");
    smoke = sm && !strcmp(sm, "1");
    /* the smoke's GEMMs are below the tuner's size (--gemm-tune): a candidate to take makes it
     * tune every shape */
    if (smoke) setenv("UMDQ_CUDA_GEMM_TUNE_TAKE", "1", 0);
    bench_config cfgs[sizeof CONFIGS / sizeof *CONFIGS];
    for (size_t i = 0; i < sizeof CONFIGS / sizeof *CONFIGS; i++) {
        cfgs[i] = CONFIGS[i];
        if (smoke) /* heads of 64, as the configs': the same attention kernels */
            cfgs[i].size = 16, cfgs[i].depth = 2, cfgs[i].dec_depth = 1,
            cfgs[i].heads = CONFIGS[i].heads / 6, cfgs[i].width = 64 * cfgs[i].heads;
    }
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--profile")) {
            profile = 1;
            continue;
        }
        if (!strcmp(o, "--linears")) {
            linears = 1;
            continue;
        }
        if (!strcmp(o, "--attention")) {
            attention = 1;
            continue;
        }
        if (!strcmp(o, "--recompute-norms")) {
            recompute = UMD_RECOMPUTE_NORMS;
            continue;
        }
        if (!strcmp(o, "--recompute-partial")) {
            recompute = UMD_RECOMPUTE_PARTIAL;
            continue;
        }
        if (!strcmp(o, "--recompute")) {
            recompute = UMD_RECOMPUTE_FULL;
            continue;
        }
        if (!strcmp(o, "--switches-off")) {
            /* every switch off (the options after it turn some on again) */
            for (size_t k = 0; k < sizeof SWITCH_OPTS / sizeof *SWITCH_OPTS; k++) {
                char var[64];
                snprintf(var, sizeof var, "UMDQ_CUDA_%s", SWITCH_OPTS[k].vars[0]);
                setenv(var, "0", 1);
            }
            continue;
        }
        if (switch_option(o)) continue;
        if (!v) goto usage;
        if (!strcmp(o, "--steps")) steps = atoi(v);
        else if (!strcmp(o, "--warmup")) warmup = atoi(v);
        else if (!strcmp(o, "--batch")) batch = atoi(v);
        else if (!strcmp(o, "--only")) only = v;
        else if (!strcmp(o, "--precision")) precision = v;
        else goto usage;
        i++;
    }
    if (batch == 0) batch = smoke ? 2 : 256;
    if (steps < 1 || warmup < 0 || batch < 1) goto usage;
    char err[256];
    if (umd_cuda_devices(err, sizeof err) <= 0) {
        printf("train_gpu: skipped: %s\n", err);
        return 0; /* scripts/bench.sh: a machine without a GPU fails no benchmark */
    }
    const umd_ops *ops = umd_ops_cuda(UMD_MATH_BF16);
    umd_ctx *c = NULL;
    if (ops->ctx_new(&c, 1, err, sizeof err) != 0) {
        fprintf(stderr, "train_gpu: %s\n", err);
        return 1;
    }
    char dev[512];
    umd_cuda_describe(c, dev, sizeof dev);
    const char *cn = getenv("UMDQ_BENCH_CEILING_N");
    const int cdim = cn && atoi(cn) >= 64 ? atoi(cn) : smoke ? 256 : 8192;
    double bf = umd_cuda_gemm_tflops(c, UMD_MATH_BF16, cdim, cdim, cdim, 20);
    double tf32 = umd_cuda_gemm_tflops(c, UMD_MATH_TF32, cdim, cdim, cdim, 10);
    if (bf <= 0 || ops->status(c, err, sizeof err) != 0) {
        fprintf(stderr, "train_gpu: GEMM ceiling: %s\n", err);
        return 1;
    }
    copy_tbps = measure_copy_tbps(ops, c, err, sizeof err);
    if (copy_tbps <= 0) {
        fprintf(stderr, "train_gpu: copy rate: %s\n", err);
        return 1;
    }
    ops->ctx_destroy(&c);
    printf("device: %s (the bf16 runs')\n", dev);
    printf("cuBLAS GEMM ceiling (%d^3, this run): bf16 %.0f TFLOP/s, tf32 %.0f TFLOP/s; device "
           "copy %.2f TB/s (read + written)\n", cdim, bf, tf32, copy_tbps);
    const char *attn = getenv("UMDQ_CUDA_ATTENTION");
    printf("attention (UMDQ_CUDA_ATTENTION=gemm|fused|mma): %s\n",
           attn && !strcmp(attn, "fused")  ? "fused TF32 kernels (head widths 32, 64), else GEMMs"
           : attn && !strcmp(attn, "gemm") ? "batched cuBLAS GEMMs"
                                           : "bf16: mma kernels (head width 64), tf32: batched GEMMs");
    printf("median of %d steps after %d warm-up; PyTorch = PERF.md bf16 + torch.compile (H200), "
           "quoted\n", steps, warmup);
    if (smoke)
        printf("smoke run (UMDQ_BENCH_SMOKE=1): every config with a sixth of its heads, at 16x16 "
               "pixels, depth 2, decoder depth 1; no figure here compares with anything\n");
    printf("\n");
    printf("| config       | prec | batch | ms/step  | img/s     | TFLOP/s| MFU    | arena GiB | dev GiB | PyTorch | ratio | loss |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    const char *precs[] = {"tf32", "bf16"};
    int rc = 0;
    for (size_t i = 0; i < sizeof CONFIGS / sizeof *CONFIGS; i++) {
        if (only && strcmp(only, cfgs[i].key) != 0) continue;
        for (int p = 0; p < 2; p++) {
            const char *pr = precision ? precision : precs[p];
            if (precision && p > 0) break;
            if (attention) {
                rc |= run_attention(&cfgs[i], batch, steps, bf);
                break;
            }
            rc |= linears ? run_linears(&cfgs[i], pr, batch, steps, bf, tf32)
                          : run_one(&cfgs[i], pr, batch, warmup, steps, bf, profile);
        }
    }
    return rc;
usage:
    fprintf(stderr, "usage: train_gpu [--steps N] [--warmup N] [--batch B] [--only s28|s32|b64] "
                    "[--precision tf32|bf16|fp32] [--profile] [--switches-off] [--graph] [--recompute] [--recompute-partial] [--recompute-norms] "
                    "[--fused-norm] [--bf16-operands] [--bf16-mlp] [--gelu-epilogue] [--bf16-branch] "
                    "[--bf16-bias] [--bf16-dh] [--bf16-grad] "
                    "[--attn-kv32] [--attn-fwd32] [--attn-split] [--attn-ds] [--mlp-one-pass] "
                    "[--gemm-tune] [--linears] [--attention]\n");
    return 2;
}
