/* ops_cuda.cu: the CUDA backend's context, memory, workspace, error state and op table
 * (umd_ops_cuda), and the helpers of umd_cuda.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <type_traits>
#include "cuda_internal.h"
#include "op_cost.h"
#include "umd_cuda.h"
#include "umdq.h"

void cuda_fail(umd_ctx *c, const char *op, const char *what) {
    if (c->failed) return;
    c->failed = 1;
    snprintf(c->err, sizeof c->err, "%s: %s", op, what);
}

int cuda_check(umd_ctx *c, cudaError_t e, const char *op) {
    if (e == cudaSuccess) return 0;
    char what[256];
    snprintf(what, sizeof what, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    cuda_fail(c, op, what);
    return -1;
}

int cublas_check(umd_ctx *c, cublasStatus_t s, const char *op) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    char what[256];
    snprintf(what, sizeof what, "cuBLAS %s (%d)", cublasGetStatusString(s), (int)s);
    cuda_fail(c, op, what);
    return -1;
}

/* The switches' values where their variables are not set: on where make gpu-check on an H200
 * passed their tests and timed B/4 faster with them; off where it timed them slower: the 32-row
 * attention forward, and the GELU epilogues (B/4 88.1 ms a step without them against 93.2 with
 * the other switches on; the bf16 dy W2 saves the same MLP scratch), and the attention's shared
 * strips (88.1 ms against the defaults' 86.6); and off where it timed them within noise and they
 * would cost something: the GEMM tuner (85.9 ms against 86.6), whose choice of algorithm can
 * differ run to run, and with it the bits. The bf16 gradient tensors (81.9 ms against 86.6) are
 * on. The attention backward's dQ from a stored dS is on for sequences of up to
 * CUDA_DEFAULT_ATTN_DS_MAX_T tokens: alone it timed the backward 20% and 13% faster at T = 65
 * and 129 and 4% slower at 257 (its dS store grows with T^2), so B/4's decoder keeps the dQ
 * kernel. The MLP's one pass over h is on: it keeps the bits, reads h once less, and applies only
 * with those gradient tensors. Each variable still turns its switch on ("1") or off ("0") for a
 * worker; UMDQ_CUDA_ATTN_DS_MAX_T sets the length. */
#define CUDA_DEFAULT_GRAPH 1
#define CUDA_DEFAULT_FUSED_NORM 1
#define CUDA_DEFAULT_BF16_OPERANDS 1
#define CUDA_DEFAULT_BF16_MLP 1
#define CUDA_DEFAULT_BF16_BRANCH 1
#define CUDA_DEFAULT_GELU_EPILOGUE 0
#define CUDA_DEFAULT_ATTN_KV32 1
#define CUDA_DEFAULT_ATTN_FWD32 0
#define CUDA_DEFAULT_BF16_BIAS 1
#define CUDA_DEFAULT_BF16_DH 1
#define CUDA_DEFAULT_BF16_GRAD 1
#define CUDA_DEFAULT_MLP_ONE_PASS 1
#define CUDA_DEFAULT_ATTN_SPLIT 0
#define CUDA_DEFAULT_GEMM_TUNE 0
#define CUDA_DEFAULT_ATTN_DS 1
#define CUDA_DEFAULT_ATTN_DS_MAX_T 192

/* A switch's value as written in the environment: 1 (1, on, true, yes), 0 (0, off, false, no,
 * any case), or -1 for anything else. */
static int switch_value(const char *v) {
    static const char *const on[] = {"1", "on", "true", "yes"}, *const off[] = {"0", "off", "false", "no"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, on[i]) == 0) return 1;
        if (strcasecmp(v, off[i]) == 0) return 0;
    }
    return -1;
}

/* A switch from the environment when a context is made: its value, or unset its default
 * (switches_valid has refused any other value). */
static int cuda_switch(const char *var, int dflt) {
    const char *v = getenv(var);
    return v && switch_value(v) >= 0 ? switch_value(v) : dflt;
}

/* 0 when the variable var is unset, empty or a whole number from lo to hi; else -1 with var, its
 * value and what it must be (what) in err. */
static int count_valid(const char *var, long lo, long hi, const char *what, char *err,
                       size_t errlen) {
    const char *v = getenv(var);
    if (!v || !*v) return 0;
    char *end = NULL;
    const long t = strtol(v, &end, 10);
    if (!*end && t >= lo && t <= hi) return 0;
    snprintf(err, errlen, "%s=\"%.40s\": %s", var, v, what);
    return -1;
}

/* 0 when every switch variable that is set says on or off; else -1 with the variable named (a
 * switch mistyped must not fall back to its default unseen). */
static int switches_valid(char *err, size_t errlen) {
    static const char *const vars[] = {
        "UMDQ_CUDA_GRAPH",     "UMDQ_CUDA_FUSED_NORM", "UMDQ_CUDA_BF16_OPERANDS",
        "UMDQ_CUDA_BF16_MLP",  "UMDQ_CUDA_BF16_DH",    "UMDQ_CUDA_BF16_BRANCH",
        "UMDQ_CUDA_BF16_BIAS", "UMDQ_CUDA_GELU_EPILOGUE", "UMDQ_CUDA_ATTN_KV32",
        "UMDQ_CUDA_ATTN_FWD32", "UMDQ_CUDA_BF16_GRAD", "UMDQ_CUDA_MLP_ONE_PASS",
        "UMDQ_CUDA_ATTN_SPLIT", "UMDQ_CUDA_GEMM_TUNE", "UMDQ_CUDA_GEMM_TUNE_LOG",
        "UMDQ_CUDA_ATTN_DS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && switch_value(v) < 0) {
            snprintf(err, errlen, "%s=\"%.40s\": a CUDA switch is 1 or 0 (on/off, true/false, yes/no)",
                     vars[i], v);
            return -1;
        }
    }
    /* the longest sequence whose attention backward takes dQ from a stored dS, and the tuner's
     * tests' choice of candidate: counts */
    if (count_valid("UMDQ_CUDA_ATTN_DS_MAX_T", 1, 100000,
                    "the longest sequence whose attention backward takes dQ from a stored dS is "
                    "a count of tokens from 1", err, errlen) != 0 ||
        count_valid("UMDQ_CUDA_GEMM_TUNE_TAKE", 0, 1000000,
                    "the GEMM tuner's candidate to take is a count from 0", err, errlen) != 0)
        return -1;
    return 0;
}

static int ctx_new(umd_ctx **out, int threads, int math, char *err, size_t errlen) {
    (void)threads; /* one device, one stream: the CPU thread count does not apply */
    *out = NULL;
    if (switches_valid(err, errlen) != 0) return UMDQ_EINVAL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        snprintf(err, errlen, "train.device \"cuda\": no CUDA device is visible (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return UMDQ_EUNSUPPORTED;
    }
    umd_ctx *c = (umd_ctx *)calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return UMDQ_ENOMEM;
    }
    c->device = 0;
    c->math = math;
    const char *attn = getenv("UMDQ_CUDA_ATTENTION");
    c->attn_mode = attn && strcmp(attn, "fused") == 0  ? UMD_ATTN_FUSED
                   : attn && strcmp(attn, "gemm") == 0 ? UMD_ATTN_GEMM
                                                       : UMD_ATTN_MMA;
    {
        c->graphs = cuda_switch("UMDQ_CUDA_GRAPH", CUDA_DEFAULT_GRAPH);
        c->fused_norm = cuda_switch("UMDQ_CUDA_FUSED_NORM", CUDA_DEFAULT_FUSED_NORM);
        /* bf16 operand tensors only where the GEMMs read bf16 anyway: the LayerNorm (and the
         * qkv Linear, where attention_operand says so) rounds its output where the product's
         * conversion would have, so the results are the same bits */
        c->opnd_bf16 = math == UMD_MATH_BF16 &&
                       cuda_switch("UMDQ_CUDA_BF16_OPERANDS", CUDA_DEFAULT_BF16_OPERANDS);
        /* the MLP's h in bf16 only on top of them (fc1 writes it as the qkv Linear writes qkv);
         * unlike them it changes the results (GELU and its derivative read h rounded), so it is
         * a switch of its own */
        c->hidden_bf16 = c->opnd_bf16 && cuda_switch("UMDQ_CUDA_BF16_MLP", CUDA_DEFAULT_BF16_MLP);
        /* branch tensors in bf16 (branch_operand: attention's output, proj's and fc2's y), also
         * only on top of the operands and also a switch of its own: the gated residuals and
         * attention's backward read them rounded, as bf16 autocast keeps them */
        c->branch_bf16 =
            c->opnd_bf16 && cuda_switch("UMDQ_CUDA_BF16_BRANCH", CUDA_DEFAULT_BF16_BRANCH);
        /* gradient tensors in bf16 (grad_operand: the gradients of the branch outputs and of
         * qkv), only on top of the branch tensors, whose gradients they are, and a switch of its
         * own: the ops after them read the rounded values, as bf16 autocast's backward does */
        c->grad_bf16 = c->branch_bf16 && cuda_switch("UMDQ_CUDA_BF16_GRAD", CUDA_DEFAULT_BF16_GRAD);
        /* the MLP's GELU in cuBLASLt's epilogues, on top of h in bf16 (mlp.cu): fc1 writes h and
         * the fc2 operand gelu(h) in one GEMM, and the GELU backward is the epilogue of dy W2 */
        c->gelu_epi =
            c->hidden_bf16 && cuda_switch("UMDQ_CUDA_GELU_EPILOGUE", CUDA_DEFAULT_GELU_EPILOGUE);
        /* the mma attention's dK dV step over 32 queries at a time: only speed, the same bits */
        c->attn_kv32 = cuda_switch("UMDQ_CUDA_ATTN_KV32", CUDA_DEFAULT_ATTN_KV32);
        /* the resident mma forward's warps over 32 query rows: only speed, the same bits */
        c->attn_fwd32 = cuda_switch("UMDQ_CUDA_ATTN_FWD32", CUDA_DEFAULT_ATTN_FWD32);
        /* the resident mma kernels' last strips shared by their warps: speed; the shared
         * strips' sums added in another (fixed) order */
        c->attn_split = cuda_switch("UMDQ_CUDA_ATTN_SPLIT", CUDA_DEFAULT_ATTN_SPLIT);
        /* the resident mma backward's dQ from the dS its dK dV kernel stores, in place of a dQ
         * kernel computing S, dP and dS again: speed; dQ's terms rounded from S^T = K Q^T */
        c->attn_ds = cuda_switch("UMDQ_CUDA_ATTN_DS", CUDA_DEFAULT_ATTN_DS);
        const char *dsmax = getenv("UMDQ_CUDA_ATTN_DS_MAX_T");
        c->attn_ds_max_t = dsmax && *dsmax ? atoi(dsmax) : CUDA_DEFAULT_ATTN_DS_MAX_T;
        /* the GEMMs cublasGemmEx runs, timed once per shape against cuBLASLt's other
         * algorithms and the fastest kept (gemm_tune.cu): speed; a tuned shape's sums are added
         * in the other algorithm's order */
        c->gemm_tune =
            math == UMD_MATH_BF16 && cuda_switch("UMDQ_CUDA_GEMM_TUNE", CUDA_DEFAULT_GEMM_TUNE);
        c->tune_log = cuda_switch("UMDQ_CUDA_GEMM_TUNE_LOG", 0);
        const char *take = getenv("UMDQ_CUDA_GEMM_TUNE_TAKE");
        c->tune_take = take && *take ? atoi(take) : -1;
        /* the MLP's dy W2 in bf16 on top of a bf16 h (mlp.cu): its GELU backward reads the
         * rounded product, as bf16 autocast's does; no fp32 scratch */
        c->bf16_dh = c->hidden_bf16 && cuda_switch("UMDQ_CUDA_BF16_DH", CUDA_DEFAULT_BF16_DH);
        /* with it and bf16 gradient tensors, gelu(h) for dW2 and the GELU backward in one pass
         * over h (mlp.cu): only speed, the same bits */
        c->mlp_one_pass = cuda_switch("UMDQ_CUDA_MLP_ONE_PASS", CUDA_DEFAULT_MLP_ONE_PASS);
        /* a bf16 y's bias in bf16 (cuBLASLt offers a bf16 D with a bias of D's type where it
         * offers none with an fp32 bias): other results than the fp32 y rounded, those of bf16
         * autocast, which casts the bias so */
        c->bf16_bias = math == UMD_MATH_BF16 && cuda_switch("UMDQ_CUDA_BF16_BIAS", CUDA_DEFAULT_BF16_BIAS);
        /* a bf16 y through the fp32 scratch, as where cuBLASLt has no bf16 D with an fp32 bias */
        const char *ly = getenv("UMDQ_CUDA_LT_BF16_Y");
        c->lt_bf16_y_off = ly && strcmp(ly, "0") == 0;
    }
    if ((e = cudaSetDevice(0)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        snprintf(err, errlen, "CUDA set-up: %s", cudaGetErrorString(e));
        goto fail;
    }
    {
        cublasStatus_t s = cublasCreate(&c->blas);
        if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(c->blas, c->stream);
        /* fp32 math means fp32: no TF32 inside cuBLAS unless asked for. A bf16 context's GEMMs
         * that write bf16 (cuda_gemm_bf16_to_bf16) round the fp32 sums once: no split-K whose
         * parts are added in the output type (cuBLAS allows it by default where C is narrower
         * than the compute type) */
        const int mode = math == UMD_MATH_FP32   ? CUBLAS_PEDANTIC_MATH
                         : math == UMD_MATH_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                 : CUBLAS_TF32_TENSOR_OP_MATH |
                                                       CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
        if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(c->blas, (cublasMath_t)mode);
        if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtCreate(&c->lt);
        if (s != CUBLAS_STATUS_SUCCESS) {
            snprintf(err, errlen, "cuBLAS set-up: %s", cublasGetStatusString(s));
            goto fail;
        }
        if ((e = cudaMalloc(&c->lt_ws, CUDA_LT_WORKSPACE)) != cudaSuccess) {
            snprintf(err, errlen, "CUDA set-up: cuBLASLt workspace: %s", cudaGetErrorString(e));
            goto fail;
        }
        /* cuBLAS shares cuBLASLt's workspace (the stream orders their uses), so a recorded call
         * never allocates one, and a context computes the same with recording on or off */
        if ((s = cublasSetWorkspace(c->blas, c->lt_ws, CUDA_LT_WORKSPACE)) != CUBLAS_STATUS_SUCCESS) {
            snprintf(err, errlen, "cuBLAS set-up: workspace: %s", cublasGetStatusString(s));
            goto fail;
        }
    }
    *out = c;
    return 0;
fail:
    if (c->lt_ws) cudaFree(c->lt_ws);
    if (c->lt) cublasLtDestroy(c->lt);
    if (c->blas) cublasDestroy(c->blas);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
    return UMDQ_EDEVICE;
}

static int ctx_new_fp32(umd_ctx **o, int t, char *e, size_t n) { return ctx_new(o, t, UMD_MATH_FP32, e, n); }
static int ctx_new_tf32(umd_ctx **o, int t, char *e, size_t n) { return ctx_new(o, t, UMD_MATH_TF32, e, n); }
static int ctx_new_bf16(umd_ctx **o, int t, char *e, size_t n) { return ctx_new(o, t, UMD_MATH_BF16, e, n); }

extern "C" int umd_cuda_profile(umd_ctx *c, int on);

static void ctx_destroy(umd_ctx **pc) {
    if (!pc || !*pc) return;
    umd_ctx *c = *pc;
    umd_cuda_profile(c, 0);
    if (c->recording) {
        cudaGraph_t g = NULL;
        if (cudaStreamEndCapture(c->stream, &g) == cudaSuccess && g) cudaGraphDestroy(g);
        (void)cudaGetLastError();
    }
    cudaStreamSynchronize(c->stream);
    if (c->graph) cudaGraphExecDestroy(c->graph);
    for (int i = 0; i < c->nplans; i++) cuda_lt_plan_release(&c->plans[i]);
    for (int i = 0; i < c->ntuned; i++) cuda_tune_plan_release(&c->tuned[i]);
    free(c->tuned);
    cudaFree(c->lt_ws);
    cublasLtDestroy(c->lt);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    free(c);
    *pc = NULL;
}

static int ctx_threads(const umd_ctx *c) {
    (void)c;
    return 1;
}

static size_t operand_bytes(const umd_ctx *c) { return c->opnd_bf16 ? 2 : 4; }

static size_t align256(size_t b) { return (b + 255) / 256 * 256; }

/* The workspace's parts (see cuda_internal.h); base NULL only measures. */
static size_t carve(umd_ctx *c, const umd_limits *lim, char *base) {
    size_t rows = (size_t)lim->max_rows * (size_t)lim->max_tokens;
    size_t w = (size_t)lim->max_width;
    size_t pl = (size_t)lim->max_patches;
    /* LayerNorm backward: (2, w) per tile of at most 64 rows within a sequence, so n ceil(T / 64)
     * <= rows / 64 + max_rows tiles, and 4 colsum_chunks(rows) >= rows / 64 */
    size_t part = (4 * colsum_chunks(rows) + (size_t)lim->max_rows) * 2 * w;
    if (pl * w > part) part = pl * w;
    size_t per_head = (size_t)lim->max_rows * lim->max_tokens * lim->max_tokens;
    /* tiles: one per head forward, two per head backward; at least one head's two */
    size_t heads = lim->max_heads > 0 ? (size_t)lim->max_heads : 1, g = 2 * heads;
    while (g > 2 && per_head * g > (size_t)CUDA_ATTN_WS) g--;
    /* fused attention keeps no tiles: the GEMM path (other head widths) gets one head's */
    if ((c->attn_mode == UMD_ATTN_FUSED && c->math != UMD_MATH_FP32) ||
        (c->attn_mode == UMD_ATTN_MMA && c->math == UMD_MATH_BF16))
        g = 2;
    size_t attn = per_head * g;
    size_t nptr = (size_t)lim->max_rows * heads;
    size_t off = 0;
#define TAKE(field, type, count)                                                                   \
    do {                                                                                           \
        if (base) c->field = (type *)(base + off);                                                 \
        off += align256((size_t)(count) * sizeof(type));                                           \
    } while (0)
    TAKE(ones, float, rows);
    TAKE(partials, float, part);
    TAKE(dsum, double, CUDA_SUM_BLOCKS + (size_t)lim->max_rows + 2);
    TAKE(attn, float, attn);
    TAKE(attn_d, float, nptr * (size_t)lim->max_tokens);
    TAKE(ptrs, void *, 10 * nptr);
    if (c->math == UMD_MATH_BF16) {
        size_t wl = lim->max_weight > 0 ? (size_t)lim->max_weight : 1;
        size_t wide = w > 0 ? (wl + w - 1) / w : 1, stage;
        if (wide < w) wide = w;
        stage = rows * wide;
        if (stage < (size_t)CUDA_BF16_STAGE) stage = CUDA_BF16_STAGE;
        if (stage > (size_t)CUDA_BF16_STAGE_MAX) stage = CUDA_BF16_STAGE_MAX;
        /* bf_a then bf_b, adjacent: linear.cu's fp32 scratch for a bf16 y may span both */
        TAKE(bf_a, __nv_bfloat16, stage);
        TAKE(bf_b, __nv_bfloat16, stage);
        TAKE(bf_w, __nv_bfloat16, wl);
        if (base) c->bf_w_len = wl, c->bf_stage = stage;
    }
#undef TAKE
    if (base) {
        c->partials_floats = part;
        c->attn_floats = attn;
        c->attn_ptrs = nptr;
        c->attn_d_floats = nptr * (size_t)lim->max_tokens;
    }
    return off;
}

/* The bf16 stages' and the partials' sizes set_workspace will carve for the limits workspace_bytes
 * recorded (a copy of the context carved at a stand-in address: nothing is touched), for
 * questions asked before it (mlp_scratch). */
void cuda_ws_sizes(const umd_ctx *c, size_t *bf_stage, size_t *bf_w_len, size_t *partials) {
    umd_ctx *probe = (umd_ctx *)malloc(sizeof *probe);
    *bf_stage = *bf_w_len = *partials = 0;
    if (!probe) return;
    memcpy(probe, c, sizeof *probe);
    carve(probe, &c->lim, (char *)(uintptr_t)256);
    if (c->math == UMD_MATH_BF16) *bf_stage = probe->bf_stage, *bf_w_len = probe->bf_w_len;
    *partials = probe->partials_floats;
    free(probe);
}

/* Also records the limits: set_workspace carves the workspace for them (the model and the tests
 * always ask for the size first, then hand over that much). The context is not const to us. */
static size_t workspace_bytes(const umd_ctx *c, const umd_limits *lim) {
    umd_ctx *mc = (umd_ctx *)c;
    mc->lim = *lim;
    return carve(mc, lim, NULL);
}

__global__ static void k_fill(float *x, size_t n, float v) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = v;
}

static void set_workspace(umd_ctx *c, void *ws, size_t bytes) {
    c->ws = (char *)ws;
    c->ws_bytes = bytes;
    c->ones = NULL;
    c->partials = NULL;
    c->dsum = NULL;
    c->attn = NULL;
    c->ptrs = NULL;
    c->attn_d = NULL;
    c->bf_a = c->bf_b = c->bf_w = NULL;
    if (!ws) return;
    size_t need = carve(c, &c->lim, NULL);
    if (need > bytes) {
        char what[160];
        snprintf(what, sizeof what, "workspace of %zu bytes given, %zu needed", bytes, need);
        cuda_fail(c, "set_workspace", what);
        return;
    }
    carve(c, &c->lim, (char *)ws);
    size_t rows = (size_t)c->lim.max_rows * (size_t)c->lim.max_tokens;
    if (c->failed) return;
    k_fill<<<cuda_blocks(rows, 256) < 4096 ? cuda_blocks(rows, 256) : 4096, 256, 0, c->stream>>>(c->ones, rows, 1.0f);
    CUDA_LAUNCHED(c, "set_workspace");
}

static void *mem_alloc(umd_ctx *c, size_t bytes) {
    if (c->failed) return NULL;
    void *p = NULL;
    size_t n = bytes ? bytes : 64;
    cudaError_t e = cudaMalloc(&p, n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* an allocation failure is not sticky: clear it */
        return NULL;              /* the caller reports it with the size */
    }
    e = cudaMemsetAsync(p, 0, n, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (cuda_check(c, e, "alloc")) {
        cudaFree(p);
        return NULL;
    }
    c->allocated += n;
    if (c->allocated > c->peak) c->peak = c->allocated;
    for (int i = 0; i < CUDA_MAX_BLOCKS; i++)
        if (!c->blocks[i].p) {
            c->blocks[i].p = p;
            c->blocks[i].bytes = n;
            break;
        }
    return p;
}

static void mem_release(umd_ctx *c, void *p) {
    if (!p) return;
    cudaStreamSynchronize(c->stream);
    for (int i = 0; i < CUDA_MAX_BLOCKS; i++)
        if (c->blocks[i].p == p) {
            c->allocated -= c->blocks[i].bytes;
            c->blocks[i].p = NULL;
            break;
        }
    cudaFree(p);
}

static void mem_upload(umd_ctx *c, void *dst, const void *src, size_t bytes) {
    CUDA_OP(c);
    if (!bytes) return;
    cuda_check(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "upload");
    /* the host buffer may be reused as soon as we return */
    cuda_check(c, cudaStreamSynchronize(c->stream), "upload");
}

static void mem_download(umd_ctx *c, void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    if (c->failed) {
        memset(dst, 0xff, bytes); /* NaNs: a failed context's results must not look valid */
        return;
    }
    cuda_check(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download");
    cuda_check(c, cudaStreamSynchronize(c->stream), "download");
}

static int ctx_status(umd_ctx *c, char *err, size_t errlen) {
    if (!c->failed) cuda_check(c, cudaStreamSynchronize(c->stream), "the queued ops");
    if (!c->failed) return 0;
    snprintf(err, errlen, "%s", c->err);
    return UMDQ_EDEVICE;
}

/* ---- recording: the stream captured into a CUDA graph ------------------------------------------ */

static int rec_begin(umd_ctx *c, char *err, size_t errlen) {
    if (!c->graphs) {
        snprintf(err, errlen, "CUDA graphs are off (UMDQ_CUDA_GRAPH=0 in the environment)");
        return UMDQ_EUNSUPPORTED;
    }
    if (c->failed) {
        snprintf(err, errlen, "%s", c->err);
        return UMDQ_EDEVICE;
    }
    if (c->prof_ev) {
        snprintf(err, errlen, "per-op profiling is on: its events cannot be recorded");
        return UMDQ_EUNSUPPORTED;
    }
    if (c->recording) {
        snprintf(err, errlen, "already recording");
        return UMDQ_EINVAL;
    }
    if (c->graph) {
        cudaGraphExecDestroy(c->graph);
        c->graph = NULL;
    }
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(err, errlen, "cudaStreamBeginCapture: %s", cudaGetErrorString(e));
        return UMDQ_EDEVICE;
    }
    c->recording = 1;
    return 0;
}

static int rec_end(umd_ctx *c, char *err, size_t errlen) {
    if (!c->recording) {
        snprintf(err, errlen, "not recording");
        return UMDQ_EINVAL;
    }
    c->recording = 0;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (e == cudaSuccess && !c->failed) {
        e = cudaGraphInstantiate(&c->graph, g, 0);
        cudaGraphDestroy(g);
        if (e == cudaSuccess) return 0;
        c->graph = NULL;
        g = NULL;
    }
    /* The recording failed: say why, drop it, and give the context back as it was (an error of
     * the capture is not sticky; a device fault is, and the check below keeps it). */
    snprintf(err, errlen, "%s", c->failed ? c->err : cudaGetErrorString(e));
    if (g) cudaGraphDestroy(g);
    (void)cudaGetLastError();
    if (cudaStreamSynchronize(c->stream) == cudaSuccess) {
        c->failed = 0;
        c->err[0] = 0;
    }
    return UMDQ_EDEVICE;
}

static int rec_replay(umd_ctx *c, char *err, size_t errlen) {
    if (!c->graph || c->recording) {
        snprintf(err, errlen, "replay: %s", c->recording ? "still recording" : "nothing recorded");
        return UMDQ_EINVAL;
    }
    if (!c->failed) cuda_check(c, cudaGraphLaunch(c->graph, c->stream), "replay");
    if (!c->failed) return 0;
    snprintf(err, errlen, "%s", c->err);
    return UMDQ_EDEVICE;
}

/* ---- the op table, with optional per-op timing ---------------------------------------------------
 * With profiling on (umd_cuda_profile), every op call is bracketed by two CUDA events on the
 * stream (no synchronisation in the op); the pairs are resolved into per-op totals when the ring
 * fills and when the report is asked for. Off, an op costs one branch more. The ops that enqueue
 * work, in ops.h's order, in three runs around hidden_operand and mlp_scratch, and
 * attention_operand, branch_operand and grad_operand (questions about the context, answered on
 * the host: not timed). */
#define CUDA_OPS_A(X)                                                                              \
    X(fill) X(copy) X(add) X(gelu_fwd) X(gelu_bwd) X(silu_fwd) X(silu_bwd) X(rand_uniform)         \
    X(rand_normal) X(draw_timesteps) X(draw_labels) X(draw_keep) X(patchify) X(unpatchify)        \
    X(noise_mix) X(timestep_embed) X(gemm) X(linear_fwd) X(linear_bwd) X(mlp_fwd) X(mlp_bwd)
#define CUDA_OPS_N(X)                                                                              \
    X(layernorm_fwd) X(layernorm_bwd) X(gate_residual_fwd) X(gate_residual_bwd)                    \
    X(residual_layernorm_fwd)                                                                      \
    X(attention_fwd) X(attention_bwd)
#define CUDA_OPS_B(X)                                                                              \
    X(embed_rows_fwd) X(embed_rows_bwd) X(gather_tokens_fwd) X(gather_tokens_bwd)                 \
    X(decoder_input_fwd) X(decoder_input_bwd) X(token_mean_fwd) X(token_mean_bwd) X(mse_masked)   \
    X(sumsq) X(adamw) X(ema)
#define CUDA_OPS(X) CUDA_OPS_A(X) CUDA_OPS_N(X) CUDA_OPS_B(X)

#define OP_ENUM(n) OP_##n,
enum { CUDA_OPS(OP_ENUM) OP_COUNT };
#define OP_NAME(n) #n,
static const char *const op_names[] = {CUDA_OPS(OP_NAME)};

static_assert(OP_COUNT <= CUDA_PROF_OPS, "the profile's totals hold CUDA_PROF_OPS ops");

/* The ring's spans into the totals. An op's span ends after the parts inside it, which come after
 * it in the ring: each span's end is waited for before its time is read. */
static void prof_flush(umd_ctx *c) {
    for (int i = 0; i < c->prof_n; i++) {
        float ms = 0;
        if (cudaEventSynchronize(c->prof_ev[2 * i + 1]) == cudaSuccess &&
            cudaEventElapsedTime(&ms, c->prof_ev[2 * i], c->prof_ev[2 * i + 1]) == cudaSuccess) {
            c->prof_ms[c->prof_op[i]] += ms;
            c->prof_calls[c->prof_op[i]]++;
        }
    }
    c->prof_n = 0;
}

int cuda_prof_part_begin(umd_ctx *c, const char *name) {
    /* the ring is flushed only between ops (timed::call): a full one times no more parts */
    if (!c->prof_ev || c->failed || c->prof_n == CUDA_PROF_RING) return -1;
    int j = 0;
    while (j < c->prof_nparts && strcmp(c->prof_part[j], name) != 0) j++;
    if (j == c->prof_nparts) {
        if (j == CUDA_PROF_PARTS) return -1;
        snprintf(c->prof_part[c->prof_nparts++], sizeof c->prof_part[0], "%s", name);
    }
    const int k = c->prof_n++;
    c->prof_op[k] = CUDA_PROF_OPS + j;
    cudaEventRecord(c->prof_ev[2 * k], c->stream);
    return k;
}

void cuda_prof_part_end(umd_ctx *c, int k) {
    if (k >= 0 && c->prof_ev) cudaEventRecord(c->prof_ev[2 * k + 1], c->stream);
}

/* ---- each op's floor (op_cost.h), from the op's own arguments ------------------------------------
 * op_cost<ID>::of takes the op's arguments and gives op_cost.h's floor for them, each tensor's
 * width as this context stores it (cost_bf16). The profile adds it up per op (prof_flops,
 * prof_bytes) and the report puts the time against it. Ops without a specialisation have no
 * floor (0, 0). */
static int cost_bf16(const void *cv, int types, int flag) {
    const umd_ctx *c = (const umd_ctx *)cv;
    /* h is bf16 only where the MLP keeps it so (mlp.cu's hidden_bf16: the MLP switch on top of
     * the operands), not wherever the operands are */
    if (flag == UMD_OPND_H) return c->hidden_bf16 && (types & UMD_OPND_H) != 0;
    if (flag == UMD_GRAD) return cuda_grad_bf16(c, types);
    if (flag == UMD_GRAD_X) return cuda_gradx_bf16(c, types);
    return cuda_flag_bf16(c, types, flag);
}
template <int ID> struct op_cost {
    template <class... A> static umd_cost of(const umd_ctx *, A...) { return {0, 0}; }
};
template <> struct op_cost<OP_linear_fwd> {
    static umd_cost of(const umd_ctx *c, void *, const void *, const float *, const float *b, int M,
                       int N, int K, int types) {
        return umd_cost_linear_fwd(cost_bf16, c, b != NULL, M, N, K, types);
    }
};
template <> struct op_cost<OP_linear_bwd> {
    static umd_cost of(const umd_ctx *c, void *dx, float *dW, float *db, const void *, const void *,
                       const float *, int M, int N, int K, int acc, int types) {
        return umd_cost_linear_bwd(cost_bf16, c, dx != NULL, dW != NULL, db != NULL, M, N, K, acc,
                                   types);
    }
};
template <> struct op_cost<OP_mlp_fwd> {
    static umd_cost of(const umd_ctx *c, void *, void *, float *, const void *, const float *,
                       const float *b1, const float *, const float *b2, int M, int F, int w,
                       int types) {
        return umd_cost_mlp_fwd(cost_bf16, c, b1 != NULL, b2 != NULL, M, F, w, types);
    }
};
template <> struct op_cost<OP_mlp_bwd> {
    static umd_cost of(const umd_ctx *c, void *dx, float *, float *db1, float *, float *db2,
                       const void *, const void *, const void *, const float *, const float *,
                       float *, int M, int F, int w, int types) {
        return umd_cost_mlp_bwd(cost_bf16, c, dx != NULL, db1 != NULL, db2 != NULL, M, F, w, types);
    }
};
template <> struct op_cost<OP_layernorm_fwd> {
    static umd_cost of(const umd_ctx *c, void *, float *, float *, const float *, const float *,
                       const float *, const float *, int, int n, int T, int w, long, long,
                       int out_type) {
        return umd_cost_layernorm_fwd(cost_bf16, c, n, T, w, out_type);
    }
};
template <> struct op_cost<OP_layernorm_bwd> {
    static umd_cost of(const umd_ctx *c, float *, float *, float *, float *, const void *,
                       const float *, const float *, const float *, const float *, const float *,
                       const float *, int, int n, int T, int w, long, long, int acc, int types) {
        return umd_cost_layernorm_bwd(cost_bf16, c, n, T, w, acc, types);
    }
};
template <> struct op_cost<OP_gate_residual_fwd> {
    static umd_cost of(const umd_ctx *c, float *, const float *, const void *, const float *, int,
                       int n, int T, int w, int y_type) {
        return umd_cost_gate_residual_fwd(cost_bf16, c, n, T, w, y_type);
    }
};
template <> struct op_cost<OP_gate_residual_bwd> {
    static umd_cost of(const umd_ctx *c, void *, float *, const float *, const void *, const float *,
                       int, int n, int T, int w, int types) {
        return umd_cost_gate_residual_bwd(cost_bf16, c, n, T, w, types);
    }
};
template <> struct op_cost<OP_residual_layernorm_fwd> {
    static umd_cost of(const umd_ctx *c, float *, void *, float *, float *, const float *,
                       const void *, const float *, int, const float *, const float *,
                       const float *, int, int n, int T, int w, int types) {
        return umd_cost_residual_layernorm_fwd(cost_bf16, c, n, T, w, types);
    }
};
template <> struct op_cost<OP_attention_fwd> {
    static umd_cost of(const umd_ctx *c, void *, float *, const void *, int n, int T, int heads,
                       int hd, int types) {
        return umd_cost_attention_fwd(cost_bf16, c, n, T, heads, hd, types);
    }
};
template <> struct op_cost<OP_attention_bwd> {
    static umd_cost of(const umd_ctx *c, void *, const void *, const void *, const void *,
                       const float *, int n, int T, int heads, int hd, int types) {
        return umd_cost_attention_bwd(cost_bf16, c, n, T, heads, hd, types);
    }
};
template <> struct op_cost<OP_adamw> {
    static umd_cost of(const umd_ctx *, float *, const float *, float *, float *, const uint8_t *,
                       size_t n, const umd_adamw_args *, const double *) {
        return umd_cost_adamw(n);
    }
};

template <int ID, auto F> struct timed;
template <int ID, typename R, typename... A, R (*F)(umd_ctx *, A...)> struct timed<ID, F> {
    static R call(umd_ctx *c, A... a) {
        /* a failed context refuses the call (CUDA_OP): it has no time and no floor to count */
        if (!c->prof_ev || c->failed) return F(c, a...);
        if (c->prof_n == CUDA_PROF_RING) prof_flush(c);
        int k = c->prof_n++;
        c->prof_op[k] = ID;
        const umd_cost w = op_cost<ID>::of(c, a...);
        c->prof_flops[ID] += w.flops;
        c->prof_bytes[ID] += w.bytes;
        cudaEventRecord(c->prof_ev[2 * k], c->stream);
        if constexpr (std::is_void<R>::value) {
            F(c, a...);
            cudaEventRecord(c->prof_ev[2 * k + 1], c->stream);
        } else {
            R r = F(c, a...);
            cudaEventRecord(c->prof_ev[2 * k + 1], c->stream);
            return r;
        }
    }
};

#define OP_TIMED(n) timed<OP_##n, cuda_##n>::call,
#define CUDA_TABLE(var, ctxnew)                                                                    \
    static const umd_ops var = {"cuda", ctxnew, ctx_destroy, ctx_threads, workspace_bytes,         \
                                set_workspace, mem_alloc, mem_release, mem_upload, mem_download,   \
                                operand_bytes, CUDA_OPS_A(OP_TIMED) cuda_hidden_operand,           \
                                cuda_mlp_scratch, CUDA_OPS_N(OP_TIMED) cuda_attention_operand,     \
                                cuda_branch_operand, cuda_grad_operand, CUDA_OPS_B(OP_TIMED)       \
                                ctx_status, rec_begin,                                             \
                                rec_end, rec_replay}

CUDA_TABLE(cuda_fp32_ops, ctx_new_fp32);
CUDA_TABLE(cuda_tf32_ops, ctx_new_tf32);
CUDA_TABLE(cuda_bf16_ops, ctx_new_bf16);

extern "C" int umd_cuda_set_attention(umd_ctx *c, int mode) {
    if (!c || mode < UMD_ATTN_GEMM || mode > UMD_ATTN_MMA) return -1;
    c->attn_mode = mode;
    return 0;
}

extern "C" int umd_cuda_profile(umd_ctx *c, int on) {
    if (c->recording) return -1;
    if (on && !c->prof_ev) {
        cudaEvent_t *ev = (cudaEvent_t *)calloc(2 * CUDA_PROF_RING, sizeof(cudaEvent_t));
        if (!ev) return -1;
        for (int i = 0; i < 2 * CUDA_PROF_RING; i++)
            if (cudaEventCreate(&ev[i]) != cudaSuccess) {
                /* none kept half made: profiling stays off, the error is not left for an op */
                while (i-- > 0) cudaEventDestroy(ev[i]);
                free(ev);
                (void)cudaGetLastError();
                return -1;
            }
        c->prof_ev = ev;
    } else if (on) {
        prof_flush(c); /* on again: what is pending is counted under its names before the reset */
    }
    if (!on && c->prof_ev) {
        prof_flush(c);
        for (int i = 0; i < 2 * CUDA_PROF_RING; i++) cudaEventDestroy(c->prof_ev[i]);
        free(c->prof_ev);
        c->prof_ev = NULL;
    }
    memset(c->prof_ms, 0, sizeof c->prof_ms);
    memset(c->prof_calls, 0, sizeof c->prof_calls);
    c->prof_nparts = 0;
    memset(c->prof_flops, 0, sizeof c->prof_flops);
    memset(c->prof_bytes, 0, sizeof c->prof_bytes);
    return 0;
}

extern "C" int umd_cuda_profile_floors(umd_ctx *c, double tflops, double tbps) {
    if (!c || !(tflops > 0) || !(tbps > 0)) return -1;
    c->floor_tflops = tflops;
    c->floor_tbps = tbps;
    return 0;
}

extern "C" void umd_cuda_profile_report(umd_ctx *c, int per, char *buf, size_t n) {
    prof_flush(c);
    double total = 0;
    for (int i = 0; i < OP_COUNT; i++) total += c->prof_ms[i];
    size_t at = 0;
    at += (size_t)snprintf(buf + at, n - at, "op time per step (ms, %% of %.2f ms in ops):", total / (per > 0 ? per : 1));
    for (int round = 0; round < OP_COUNT && at < n; round++) {
        int best = -1;
        for (int i = 0; i < OP_COUNT; i++)
            if (c->prof_calls[i] > 0 && (best < 0 || c->prof_ms[i] > c->prof_ms[best])) best = i;
        if (best < 0) break;
        const int p = per > 0 ? per : 1;
        at += (size_t)snprintf(buf + at, n - at, " %s %.2f (%.0f%%, %ld calls", op_names[best],
                               c->prof_ms[best] / p, 100.0 * c->prof_ms[best] / total,
                               c->prof_calls[best] / p);
        /* its floor: the larger of its FLOPs and its bytes at the given rates, per step */
        const double fl = c->prof_flops[best] / p, by = c->prof_bytes[best] / p;
        if (c->floor_tflops > 0 && (fl > 0 || by > 0) && at < n) {
            const double f_ms = fl / (c->floor_tflops * 1e9), b_ms = by / (c->floor_tbps * 1e9);
            const double fm = f_ms > b_ms ? f_ms : b_ms;
            at += (size_t)snprintf(buf + at, n - at, "; %.1f GFLOP, %.3f GB: floor %.3f ms (%s), %.1fx",
                                   fl / 1e9, by / 1e9, fm, f_ms > b_ms ? "FLOPs" : "bytes",
                                   c->prof_ms[best] / p / fm);
        }
        if (at < n) at += (size_t)snprintf(buf + at, n - at, ");");
        c->prof_calls[best] = -c->prof_calls[best]; /* taken */
    }
    for (int i = 0; i < OP_COUNT; i++)
        if (c->prof_calls[i] < 0) c->prof_calls[i] = -c->prof_calls[i];
    /* the ops with a floor together: their time against the sum of their floors */
    if (c->floor_tflops > 0 && at < n) {
        double t_ms = 0, f_sum = 0;
        for (int i = 0; i < OP_COUNT; i++) {
            const double f_ms = c->prof_flops[i] / (c->floor_tflops * 1e9);
            const double b_ms = c->prof_bytes[i] / (c->floor_tbps * 1e9);
            if (f_ms <= 0 && b_ms <= 0) continue;
            t_ms += c->prof_ms[i];
            f_sum += f_ms > b_ms ? f_ms : b_ms;
        }
        if (f_sum > 0)
            at += (size_t)snprintf(buf + at, n - at,
                                   " the ops with a floor (at %.0f TFLOP/s, %.2f TB/s): %.2f ms "
                                   "against %.2f ms of floors, %.2fx;",
                                   c->floor_tflops, c->floor_tbps, t_ms / (per > 0 ? per : 1),
                                   f_sum / (per > 0 ? per : 1), t_ms / f_sum);
    }
    /* the parts inside the ops, in the order met */
    for (int j = 0, first = 1; j < c->prof_nparts && at < n; j++) {
        const int id = CUDA_PROF_OPS + j, p = per > 0 ? per : 1;
        if (!c->prof_calls[id]) continue;
        at += (size_t)snprintf(buf + at, n - at, "%s %s %.2f (%ld calls);",
                               first ? " inside the ops (ms per step):" : "", c->prof_part[j],
                               c->prof_ms[id] / p, c->prof_calls[id] / p);
        first = 0;
    }
    if (c->gelu_epi && at < n)
        at += (size_t)snprintf(buf + at, n - at,
                               " the MLP's GELU in cuBLASLt's epilogues: %ld GEMMs, %ld passes "
                               "without such a plan (the staging passes instead) since the "
                               "context began (a recorded step counts once);",
                               c->gelu_epi_gemms, c->gelu_epi_refused);
    if (c->y_via_fp32 > 0 && at < n)
        snprintf(buf + at, n - at,
                 " linear_fwd and mlp_fwd have put a bf16 y through the fp32 scratch (cuBLASLt: no "
                 "bf16 D with an fp32 bias) %ld times since the context began (a recorded step "
                 "counts once);",
                 c->y_via_fp32);
}

extern "C" const umd_ops *umd_ops_cuda(int math) {
    switch (math) {
    case UMD_MATH_FP32: return &cuda_fp32_ops;
    case UMD_MATH_TF32: return &cuda_tf32_ops;
    case UMD_MATH_BF16: return &cuda_bf16_ops;
    default: return NULL;
    }
}

extern "C" int umd_cuda_devices(char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(err, errlen, "no usable CUDA device: %s", cudaGetErrorString(e));
        return 0;
    }
    if (n == 0) snprintf(err, errlen, "no CUDA device is visible");
    return n;
}

extern "C" int umd_cuda_memory(umd_ctx *c, size_t *peak_alloc, size_t *device_used,
                               size_t *device_total) {
    size_t fr = 0, tot = 0;
    *peak_alloc = c->peak;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
        *device_used = *device_total = 0;
        return -1;
    }
    *device_used = tot - fr;
    *device_total = tot;
    return 0;
}

extern "C" void umd_cuda_describe(umd_ctx *c, char *buf, size_t n) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, c->device) != cudaSuccess) {
        snprintf(buf, n, "CUDA device %d (properties unavailable)", c->device);
        return;
    }
    const int at = snprintf(buf, n, "%s, sm_%d%d, %d SMs, %.1f GiB", p.name, p.major, p.minor,
                            p.multiProcessorCount, (double)p.totalGlobalMem / 1073741824.0);
    /* the switches this context was made with (the bf16 ones apply in bf16 contexts only) */
    if (at > 0 && (size_t)at < n)
        snprintf(buf + at, n - (size_t)at,
                 "; switches: graph %s, fused norm %s, bf16 operands %s, bf16 MLP h %s, GELU "
                 "epilogues %s, bf16 dy W2 %s, bf16 branches %s, bf16 gradients %s, bf16 bias %s, "
                 "MLP backward's GELU passes over h %d, attention dK dV over %d queries, forward "
                 "%d rows a warp, last strips %s, dQ from a stored dS %s (%ld calls) for T up to "
                 "%d, GEMM tuning %s (%d shapes, %d on another "
                 "algorithm, %d splitting K, %d by hand; %ld split candidates timed; %d Linear "
                 "forward plans tuned, %d on another algorithm; %ld GEMMs run on a tuned "
                 "algorithm)",
                 c->graphs ? "on" : "off", c->fused_norm ? "on" : "off",
                 c->opnd_bf16 ? "on" : "off", c->hidden_bf16 ? "on" : "off",
                 c->gelu_epi ? "on" : "off", c->bf16_dh ? "on" : "off", c->branch_bf16 ? "on" : "off",
                 c->grad_bf16 ? "on" : "off", c->bf16_bias && c->opnd_bf16 ? "on" : "off",
                 c->mlp_one_pass && c->bf16_dh && c->grad_bf16 && !c->gelu_epi ? 1 : 2,
                 c->attn_kv32 ? 32 : 64, c->attn_fwd32 ? 32 : 16, c->attn_split ? "shared" : "whole",
                 c->attn_ds ? "on" : "off", c->attn_ds_calls, c->attn_ds_max_t,
                 c->gemm_tune ? "on" : "off",
                 c->ntuned, c->ntook, c->ntook_split, c->ntook_hand,
                 c->tune_variants, c->ntuned_lt, c->ntook_lt, c->tune_runs);
}

__global__ static void k_fill_bf16(__nv_bfloat16 *x, size_t n, uint32_t salt) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ salt;
        x[i] = __float2bfloat16((float)(h >> 8) * (1.0f / 16777216.0f) - 0.5f);
    }
}

extern "C" double umd_cuda_gemm_tflops(umd_ctx *c, int math, int M, int N, int K, int reps) {
    if (c->failed) return -1.0;
    size_t ea = (size_t)M * K, eb = (size_t)K * N, ec = (size_t)M * N;
    int bf = math == UMD_MATH_BF16;
    size_t esz = bf ? 2 : 4;
    void *A = NULL, *B = NULL, *C = NULL;
    double tflops = -1.0;
    cudaEvent_t t0 = NULL, t1 = NULL;
    if (cuda_check(c, cudaMalloc(&A, ea * esz), "gemm benchmark") ||
        cuda_check(c, cudaMalloc(&B, eb * esz), "gemm benchmark") ||
        cuda_check(c, cudaMalloc(&C, ec * 4), "gemm benchmark"))
        goto done;
    if (bf) {
        k_fill_bf16<<<1024, 256, 0, c->stream>>>((__nv_bfloat16 *)A, ea, 1u);
        k_fill_bf16<<<1024, 256, 0, c->stream>>>((__nv_bfloat16 *)B, eb, 2u);
    } else {
        k_fill<<<1024, 256, 0, c->stream>>>((float *)A, ea, 0.25f);
        k_fill<<<1024, 256, 0, c->stream>>>((float *)B, eb, 0.5f);
    }
    if (CUDA_LAUNCHED(c, "gemm benchmark")) goto done;
    cudaEventCreate(&t0);
    cudaEventCreate(&t1);
    {
        const float one = 1.0f, zero = 0.0f;
        cublasComputeType_t ct = math == UMD_MATH_FP32 ? CUBLAS_COMPUTE_32F_PEDANTIC
                                 : math == UMD_MATH_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                         : CUBLAS_COMPUTE_32F;
        cudaDataType_t ab = bf ? CUDA_R_16BF : CUDA_R_32F;
        for (int r = -2; r < reps; r++) {
            if (r == 0) cudaEventRecord(t0, c->stream);
            /* row-major C (M, N) = A (M, K) B (K, N) as column-major C^T = B^T A^T */
            if (cublas_check(c, cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &one, B,
                                             ab, N, A, ab, K, &zero, C, CUDA_R_32F, N, ct,
                                             CUBLAS_GEMM_DEFAULT),
                             "gemm benchmark"))
                goto done;
        }
        cudaEventRecord(t1, c->stream);
        if (cuda_check(c, cudaEventSynchronize(t1), "gemm benchmark")) goto done;
        float ms = 0;
        cudaEventElapsedTime(&ms, t0, t1);
        if (ms > 0) tflops = 2.0 * M * N * (double)K * reps / (ms * 1e-3) / 1e12;
    }
done:
    if (t0) cudaEventDestroy(t0);
    if (t1) cudaEventDestroy(t1);
    cudaFree(A);
    cudaFree(B);
    cudaFree(C);
    return tflops;
}

/* The one symbol the shared object exports (umd_cuda.h); the build hides every other. */
extern "C" __attribute__((visibility("default"))) const umd_cuda_api *umd_cuda_api_v1(void) {
    static const umd_cuda_api api = {UMD_CUDA_API_VERSION, umd_ops_cuda,      umd_cuda_devices,
                                     umd_cuda_memory,      umd_cuda_describe, umd_cuda_gemm_tflops,
                                     umd_cuda_set_attention, umd_cuda_profile, umd_cuda_profile_report,
                                     umd_cuda_profile_floors};
    return &api;
}
