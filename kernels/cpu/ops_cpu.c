/* ops_cpu.c: the CPU backend's context, memory and op table (umd_ops_cpu). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "blas.h"
#include "cpu.h"
#include "umdq.h"

static int ctx_new_typed(umd_ctx **out, int threads, int opnd_bf16, char *err, size_t errlen) {
    *out = NULL;
    if (threads < 0 || threads > CPU_MAX_THREADS) {
        snprintf(err, errlen, "threads must be in [0, %d], got %d", CPU_MAX_THREADS, threads);
        return UMDQ_EINVAL;
    }
    umd_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return UMDQ_ENOMEM;
    }
    int procs = omp_get_num_procs();
    c->threads = threads > 0 ? threads : (procs > 0 ? procs : 1);
    c->opnd_bf16 = opnd_bf16;
    c->widen_bytes = opnd_bf16 ? CPU_WIDEN_FLOATS * sizeof(float) : 0;
    if (c->threads > CPU_MAX_THREADS) c->threads = CPU_MAX_THREADS;
    /* Our own teams split every GEMM; OpenBLAS runs single-threaded inside each team member.
     * (This is process-wide OpenBLAS state.) */
    openblas_set_num_threads(1);
    *out = c;
    return 0;
}

static int ctx_new(umd_ctx **out, int threads, char *err, size_t errlen) {
    return ctx_new_typed(out, threads, 0, err, errlen);
}
static int ctx_new_bf16(umd_ctx **out, int threads, char *err, size_t errlen) {
    return ctx_new_typed(out, threads, 1, err, errlen);
}

static void ctx_destroy(umd_ctx **c) {
    if (!c || !*c) return;
    free(*c);
    *c = NULL;
}

static int ctx_threads(const umd_ctx *c) { return c->threads; }

/* Per-thread bytes: the largest of the attention scratch, the LayerNorm partials (dgamma, dbeta),
 * the keep-order sort keys (L uint64) and a Linear weight gradient partial (N * K), rounded to
 * 64 bytes. */
static size_t per_thread_bytes(const umd_limits *lim) {
    size_t att = cpu_attention_ws_floats(lim->max_tokens, lim->max_width) * sizeof(float);
    size_t ln = 2 * (size_t)lim->max_width * sizeof(float);
    size_t keys = (size_t)lim->max_patches * sizeof(uint64_t);
    size_t lin = (size_t)(lim->max_weight > 0 ? lim->max_weight : 0) * sizeof(float);
    size_t b = att > ln ? att : ln;
    b = b > keys ? b : keys;
    b = b > lin ? b : lin;
    return (b + 63) / 64 * 64 + 64;
}

/* Each thread's slice ends with its widening scratch when the operands are bf16 (cpu_widen). */
static size_t workspace_bytes(const umd_ctx *c, const umd_limits *lim) {
    return (per_thread_bytes(lim) + c->widen_bytes) * (size_t)c->threads;
}

static void set_workspace(umd_ctx *c, void *ws, size_t bytes) {
    c->ws = ws;
    c->ws_bytes = bytes;
    c->ws_per_thread = c->threads > 0 ? bytes / (size_t)c->threads / 64 * 64 : 0;
}

static size_t operand_bytes(const umd_ctx *c) { return c->opnd_bf16 ? 2 : 4; }

/* The MLP keeps h in bf16 where the operands are. */
static int hidden_operand(const umd_ctx *c) { return c->opnd_bf16; }

/* Attention widens a bf16 qkv a pair at a time, at any head width. */
static int attention_operand(const umd_ctx *c, int hd) {
    (void)hd;
    return c->opnd_bf16;
}

/* The MLP's GELU runs in tmp (gelu(h) forward, dh backward): (M, F) floats at every shape. */
static size_t mlp_scratch(umd_ctx *c, int M, int F, int w, int types) {
    (void)c, (void)w, (void)types;
    return M > 0 && F > 0 ? (size_t)M * (size_t)F : 0;
}

/* Branch tensors in bf16 where the operands are (the twin of a device context with every bf16
 * switch): attention rounds its output after the pair's product, the gated residuals widen. */
static int branch_operand(const umd_ctx *c) { return c->opnd_bf16; }

/* Gradient tensors in bf16 where the branch tensors are: the gated residuals round dy, attention
 * rounds dqkv after each product, and the Linears that read them widen them a block at a time. */
static int grad_operand(const umd_ctx *c) { return c->opnd_bf16; }

static void *mem_alloc(umd_ctx *c, size_t bytes) {
    (void)c;
    size_t n = (bytes + 63) / 64 * 64;
    if (n == 0) n = 64;
    void *p = aligned_alloc(64, n);
    if (p) memset(p, 0, n);
    return p;
}

static void mem_release(umd_ctx *c, void *p) {
    (void)c;
    free(p);
}

static void mem_upload(umd_ctx *c, void *dst, const void *src, size_t bytes) {
    (void)c;
    if (bytes) memcpy(dst, src, bytes);
}

static void mem_download(umd_ctx *c, void *dst, const void *src, size_t bytes) {
    (void)c;
    if (bytes) memcpy(dst, src, bytes);
}

static const umd_ops cpu_ops = {
    .name = "cpu",
    .ctx_new = ctx_new,
    .ctx_destroy = ctx_destroy,
    .ctx_threads = ctx_threads,
    .workspace_bytes = workspace_bytes,
    .set_workspace = set_workspace,
    .alloc = mem_alloc,
    .release = mem_release,
    .upload = mem_upload,
    .download = mem_download,
    .operand_bytes = operand_bytes,
    .fill = cpu_fill,
    .copy = cpu_copy,
    .add = cpu_add,
    .gelu_fwd = cpu_gelu_fwd,
    .gelu_bwd = cpu_gelu_bwd,
    .silu_fwd = cpu_silu_fwd,
    .silu_bwd = cpu_silu_bwd,
    .rand_uniform = cpu_rand_uniform,
    .rand_normal = cpu_rand_normal,
    .draw_timesteps = cpu_draw_timesteps,
    .draw_labels = cpu_draw_labels,
    .draw_keep = cpu_draw_keep,
    .patchify = cpu_patchify,
    .unpatchify = cpu_unpatchify,
    .noise_mix = cpu_noise_mix,
    .timestep_embed = cpu_timestep_embed,
    .gemm = cpu_gemm,
    .linear_fwd = cpu_linear_fwd,
    .linear_bwd = cpu_linear_bwd,
    .mlp_fwd = cpu_mlp_fwd,
    .mlp_bwd = cpu_mlp_bwd,
    .hidden_operand = hidden_operand,
    .mlp_scratch = mlp_scratch,
    .layernorm_fwd = cpu_layernorm_fwd,
    .layernorm_bwd = cpu_layernorm_bwd,
    .gate_residual_fwd = cpu_gate_residual_fwd,
    .gate_residual_bwd = cpu_gate_residual_bwd,
    .residual_layernorm_fwd = cpu_residual_layernorm_fwd,
    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .attention_operand = attention_operand,
    .branch_operand = branch_operand,
    .grad_operand = grad_operand,
    .embed_rows_fwd = cpu_embed_rows_fwd,
    .embed_rows_bwd = cpu_embed_rows_bwd,
    .gather_tokens_fwd = cpu_gather_tokens_fwd,
    .gather_tokens_bwd = cpu_gather_tokens_bwd,
    .decoder_input_fwd = cpu_decoder_input_fwd,
    .decoder_input_bwd = cpu_decoder_input_bwd,
    .token_mean_fwd = cpu_token_mean_fwd,
    .token_mean_bwd = cpu_token_mean_bwd,
    .mse_masked = cpu_mse_masked,
    .sumsq = cpu_sumsq,
    .adamw = cpu_adamw,
    .ema = cpu_ema,
};

const umd_ops *umd_ops_cpu(void) { return &cpu_ops; }

/* The same ops; only the context differs (its operand type and workspace). */
const umd_ops *umd_ops_cpu_bf16(void) {
    static umd_ops t;
    static int made;
    #pragma omp critical(umd_ops_cpu_bf16)
    if (!made) {
        t = cpu_ops;
        t.name = "cpu-bf16";
        t.ctx_new = ctx_new_bf16;
        made = 1;
    }
    return &t;
}
