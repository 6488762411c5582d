/* train_memory.c: the trainer's memory on the PERF.md configs (S/4 on 28x28x1 and 32x32x3, B/4 on
 * 64x64x3, batch 256), with every block's activations kept (the baseline, measured in the same
 * run) and with train.recompute "norms" (each block keeps all but its LayerNorms' and residual's
 * outputs, which run again in the backward), "partial" (fc1's output too) and "full" (each block
 * keeps its input and runs again whole). It
 * sizes the arenas as umd_model_new would (umd_model_measure: nothing is allocated), so it runs
 * on any machine: with the CPU backend's layout (one replica, as on a GPU; the ops' workspace
 * shown apart, since a device's differs), the same with bf16 operand tensors, MLP state and
 * branch tensors (umd_ops_cpu_bf16: the layout of a bf16 CUDA context with
 * UMDQ_CUDA_BF16_OPERANDS=1, UMDQ_CUDA_BF16_MLP=1 and UMDQ_CUDA_BF16_BRANCH=1, at head width 64;
 * its MLP scratch too; gradients fp32, as with UMDQ_CUDA_BF16_GRAD=0), the same without the
 * MLP's (tokens, F) scratch (a CUDA context with UMDQ_CUDA_BF16_DH=1 or
 * UMDQ_CUDA_GELU_EPILOGUE=1 too asks for none), that with the gradient tensors in bf16 too
 * (UMDQ_CUDA_BF16_GRAD=1: qkv's gradient at half its bytes; the layout of the CUDA defaults), and,
 * where a CUDA device is
 * visible, with the CUDA bf16 backend's, workspace included: the peak train_gpu reports. PyTorch's peak (bf16 +
 * torch.compile, PERF.md, H200) is quoted for comparison.
 *
 *   train_memory [--batch B]
 *
 * umdq-uses: umd common */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include "cuda/umd_cuda.h"
#include "model.h"
#include "ops.h"

typedef struct {
    const char *label;
    int size, channels, width, depth, dec_depth, heads;
    double torch_gib; /* PERF.md: PyTorch bf16 + torch.compile peak, batch 256 */
} mem_config;

static const mem_config CONFIGS[] = {
    {"S/4 28x28x1", 28, 1, 384, 12, 4, 6, 2.7},
    {"S/4 32x32x3", 32, 3, 384, 12, 4, 6, 3.3},
    {"B/4 64x64x3", 64, 3, 768, 12, 4, 12, 21.0},
};

static const double GiB = 1073741824.0;

/* The cpu-bf16 layout without the MLP's scratch (a CUDA bf16 context whose MLP writes dy W2 in
 * bf16 or takes GELU in cuBLASLt's epilogues asks for none: mlp_scratch), and with the gradient
 * tensors fp32 (grad_operand 0, UMDQ_CUDA_BF16_GRAD=0) or bf16 (its default); only measured. */
static size_t no_mlp_scratch(umd_ctx *c, int M, int F, int w, int types) {
    (void)c, (void)M, (void)F, (void)w, (void)types;
    return 0;
}
static int no_grad_operand(const umd_ctx *c) {
    (void)c;
    return 0;
}

static const umd_ops *ops_cpu_bf16_as(int scratch, int grads) {
    static umd_ops t[4];
    umd_ops *o = &t[2 * scratch + grads];
    *o = *umd_ops_cpu_bf16();
    if (!scratch) o->mlp_scratch = no_mlp_scratch;
    if (!grads) o->grad_operand = no_grad_operand;
    return o;
}

/* The arenas of one config; device "cpu" (one thread; "cpu-bf16": bf16 operands, "cpu-bf16-ns":
 * and no MLP scratch, "cpu-bf16-ns-grad": and bf16 gradient tensors) or "cuda" (bf16, the
 * switches in effect). */
static int measure(const mem_config *mc, int batch, const char *recompute, const char *device,
                   umd_sizes *out) {
    char json[1024], err[512];
    snprintf(json, sizeof json,
             "{\"data\": {\"dataset\": \"synthetic\", \"image_size\": %d, \"channels\": %d},"
             " \"model\": {\"patch\": 4, \"width\": %d, \"depth\": %d, \"dec_depth\": %d, \"heads\": %d},"
             " \"umd\": {\"labels\": true}, \"train\": {\"batch\": %d, \"threads\": 1,"
             " \"device\": \"%s\", \"precision\": \"%s\", \"recompute\": \"%s\"}}",
             mc->size, mc->channels, mc->width, mc->depth, mc->dec_depth, mc->heads, batch,
             strcmp(device, "cuda") == 0 ? "cuda" : "cpu",
             strcmp(device, "cuda") == 0 ? "bf16" : "fp32", recompute);
    umd_config cfg;
    if (umd_config_parse_text(json, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "train_memory: config: %s\n", err);
        return -1;
    }
    const umd_ops *ops = strcmp(device, "cuda") == 0                ? umd_ops_cuda(UMD_MATH_BF16)
                         : strcmp(device, "cpu-bf16") == 0          ? ops_cpu_bf16_as(1, 0)
                         : strcmp(device, "cpu-bf16-ns") == 0       ? ops_cpu_bf16_as(0, 0)
                         : strcmp(device, "cpu-bf16-ns-grad") == 0 ? ops_cpu_bf16_as(0, 1)
                                                                    : umd_ops_cpu();
    umd_shape shape = {mc->channels, mc->size, mc->size, 10, batch};
    if (!ops || umd_model_measure(out, &cfg, &shape, ops, err, sizeof err) != 0) {
        fprintf(stderr, "train_memory: %s on %s: %s\n", mc->label, device, ops ? err : "no CUDA build");
        return -1;
    }
    return 0;
}

static double total(const umd_sizes *s) { return (double)(s->params + s->grads + s->optim + s->acts); }

int main(int argc, char **argv) {
    int batch = 256;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: train_memory [--batch B]\n");
            return 2;
        }
    }
    if (batch < 1) {
        fprintf(stderr, "train_memory: --batch must be at least 1\n");
        return 2;
    }
    char why[256];
    int gpu = umd_cuda_devices(why, sizeof why) > 0;
    printf("the trainer's arenas at batch %d: parameters, gradients and optimiser state, then the "
           "activations; without train.recompute, and with \"norms\", \"partial\" and \"full\"\n",
           batch);
    printf("| config | device | params+grads+optim GiB | activations GiB | total GiB | norms: "
           "activations GiB | total GiB | ratio | partial: activations GiB | total GiB | ratio | "
           "full: activations GiB | total GiB | ratio | PyTorch bf16+compile GiB |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    int rc = 0;
    for (size_t i = 0; i < sizeof CONFIGS / sizeof *CONFIGS; i++) {
        for (int dev = 0; dev < 4 + gpu; dev++) {
            static const char *const devices[5] = {"cpu", "cpu-bf16", "cpu-bf16-ns",
                                                   "cpu-bf16-ns-grad", "cuda"};
            const char *device = devices[dev];
            static const char *const modes[4] = {"off", "norms", "partial", "full"};
            umd_sizes s[4];
            int bad = 0;
            for (int k = 0; k < 4; k++) bad |= measure(&CONFIGS[i], batch, modes[k], device, &s[k]);
            if (bad) {
                rc = 1;
                continue;
            }
            /* the CPU's workspace is not a device's: left out of the CPU rows */
            double acts[4], tot[4];
            for (int k = 0; k < 4; k++) {
                double ws = dev < 4 ? (double)s[k].workspace : 0;
                acts[k] = ((double)s[k].acts - ws) / GiB;
                tot[k] = (total(&s[k]) - ws) / GiB;
            }
            printf("| %s | %s | %.2f | %.2f | %.2f |", CONFIGS[i].label,
                   dev == 4   ? "cuda bf16 (workspace in)"
                   : dev == 3 ? "the same with bf16 gradients (the CUDA defaults; no workspace)"
                   : dev == 2 ? "the same without the MLP scratch (no workspace)"
                   : dev == 1 ? "layout, bf16 operands, MLP state and branches (no workspace)"
                              : "layout (no workspace)",
                   (double)(s[0].params + s[0].grads + s[0].optim) / GiB, acts[0], tot[0]);
            for (int k = 1; k < 4; k++)
                printf(" %.2f | %.2f | %.2fx |", acts[k], tot[k], tot[k] / tot[0]);
            printf(" %.1f |\n", CONFIGS[i].torch_gib);
        }
    }
    if (!gpu) printf("(no CUDA device: %s; the device rows need one)\n", why);
    return rc;
}
