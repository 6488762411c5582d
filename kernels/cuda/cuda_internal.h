/* cuda_internal.h: the CUDA backend's context, its error recording and launch helpers, shared by
 * the kernels in kernels/cuda/ (not part of the public op interface, which is kernels/ops.h).
 *
 * One context = one device (device 0 of what CUDA_VISIBLE_DEVICES shows; umdq-worker --gpu N sets
 * it), one stream, one cuBLAS handle. Every op enqueues on the stream and returns; only upload,
 * download and status wait for the stream. Errors: an op cannot
 * return one (ops.h's ops are void), so the first failed CUDA or cuBLAS call is recorded in the
 * context with the op's name, every later op becomes a no-op, and the trainer asks `status`
 * after each step. Nothing in the backend calls exit(). No op waits for the device, so a step
 * can be captured as a CUDA graph (record_begin) and replayed.
 *
 * Determinism: no float atomics. Sums over rows into parameter gradients are done by a thread
 * per column looping over rows in order, or in fixed chunks whose partials (workspace) are then
 * added in chunk order; cuBLAS GEMMs are deterministic for a given device and shape. */
#ifndef UMDQ_KERNELS_CUDA_INTERNAL_H
#define UMDQ_KERNELS_CUDA_INTERNAL_H
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#include "ops.h"
#include "umd_cuda.h"
#include "gemm_tune.h"

/* Workspace carving, in order (each part 256-byte aligned):
 *   ones      (max_rows * max_tokens) floats of 1.0: the column sums of linear_bwd's bias (gemv)
 *   partials  ((4 colsum_chunks(max_rows * max_tokens) + max_rows) * 2 * max_width) floats:
 *             LayerNorm backward's column sums per tile of up to 64 rows of one sequence (or
 *             per chunk of rows past 1024 columns); decoder_input_bwd's dmask partials
 *   dsum      (SUM_BLOCKS + max_rows) doubles: sumsq block partials, mse row sums
 *   attn      (max_rows * max_tokens^2 * g) floats: attention's (T, T) tiles (S / P forward, S / P
 *             and dP / dS backward), g = 2 max_heads tiles when that is at most CUDA_ATTN_WS
 *             floats, else fewer (at least 2: one head's backward); 2 where attention is fused
 *             (TF32 and bf16: only head widths other than 32 and 64 use the tiles), and where
 *             the mma kernels are (bf16: only head widths other than 64 use them). Free between
 *             ops (attention's ops use it within themselves): the GEMM tuner's hand splits keep
 *             their parts there (gemm_tune.cu)
 *   attn_d    (max_rows * max_heads * max_tokens) floats: the fused attention backward's D
 *   ptrs      (10 * max_rows * max_heads) pointers: the batched attention GEMMs' operands
 *   bf16      (2 * stage + max_weight) bf16 values (bf16 math only): GEMM operands, a stage
 *             holding the widest activation operand whole, max_rows * max_tokens rows of
 *             max(max_width, max_weight / max_width) (a Linear's other side), and at least
 *             CUDA_BF16_STAGE; at most CUDA_BF16_STAGE_MAX (wider operands go in chunks of rows).
 *             Free between GEMMs, bf_a (and bf_b) also take an fp32 y on its way into a bf16
 *             one where cuBLASLt writes none (linear.cu; mlp.cu's fc2 where tmp cannot) */
#define CUDA_COLSUM_CHUNK 256  /* rows per partial of a chunked column sum */
#define CUDA_SUM_BLOCKS 1024   /* blocks of the sum of squares (a fixed grid: fixed order) */
#define CUDA_BF16_STAGE (1L << 23) /* bf16 values of each activation operand stage, at least */
#define CUDA_BF16_STAGE_MAX (1L << 30) /* and at most */
#define CUDA_ATTN_WS (1L << 28) /* floats of attention tiles before heads are split in groups */
#define CUDA_PROF_RING 4096    /* op calls timed between two resolutions of their events */
#define CUDA_PROF_OPS 64       /* the profile's totals by op (ops_cuda.cu's OP_*), then by part */
#define CUDA_PROF_PARTS 128    /* the spans inside ops the profile names (cuda_prof_part_begin) */
#define CUDA_MAX_BLOCKS 64     /* allocations tracked for the accounting (the model makes 4) */

/* A cuBLASLt matmul planned for one shape (linear_fwd with its bias epilogue): descriptors and the
 * heuristic's algorithm, kept for the life of the context (the shapes of a model are few). */
/* epi: LT_EPI_NONE for linear_fwd's plans (the bias epilogue or none); the others are the MLP's
 * GEMMs with GELU in the epilogue (linear.cu, cuda_lt_gelu_fc1 and cuda_lt_dgelu: N = F, K = w). */
enum { LT_EPI_NONE = 0, LT_EPI_GELU_AUX_BIAS = 1, LT_EPI_DGELU = 2, LT_EPI_DGELU_BGRAD = 3 };
typedef struct {
    int M, N, K, bf16, bias, ybf16; /* the key (math is the context's); ybf16: y (D) is bf16 */
    int epi;                      /* LT_EPI_*, part of the key */
    int bias_bf16;                /* GELU epilogues: the bias (GELU_AUX_BIAS) or its gradient
                                     (DGELU_BGRAD) is bf16 (cuBLASLt took no fp32 one), else fp32 */
    int usable;                   /* 0: cuBLASLt found no algorithm; use cublasGemmEx instead */
    int tuned;                    /* the GEMM tuner has timed its algorithm against the heuristic's
                                     others (UMDQ_CUDA_GEMM_TUNE, gemm_tune.cu: cuda_tune_lt) */
    int retuned;                  /* and took another one (algo), timed at pointers aligned to
                                     tuned_align (cuBLASLt's A, B, D: W, x, y); a call whose
                                     pointers are less aligned runs algo0, the plan's own */
    unsigned tuned_align[3];
    cublasLtMatmulAlgo_t algo0;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
} lt_plan;
#define CUDA_LT_PLANS 96
/* Destroys a plan's descriptors (the ones it has) and clears them (linear.cu). */
void cuda_lt_plan_release(lt_plan *p);
#define CUDA_LT_WORKSPACE (32u << 20)
/* 1 when a cuBLASLt algorithm splits K and adds the parts in the output type (in place in D, or
 * through the workspace in D's type): with a bf16 D, partial sums rounded to bf16 (linear.cu). */
int cuda_lt_sums_in_output(const cublasLtMatmulAlgo_t *a);

/* While the context profiles its ops (umd_cuda_profile): a span inside an op, from
 * cuda_prof_part_begin to cuda_prof_part_end on the stream, timed and totalled under its name
 * (copied, up to 63 characters: "op:what"; the report lists the parts after the ops, in the
 * order met). begin gives the span's handle for end, or -1 (and end then does nothing) when the
 * context does not profile, has failed, or has no room left for it; a span ends inside the op
 * that began it. Every GEMM of linear.cu and the MLP is one, named by its shape (the GELU
 * epilogues' by their op), and attention's backward kernels; the batched GEMMs of the GEMM
 * attention path (attention.cu) are not. */
int cuda_prof_part_begin(umd_ctx *c, const char *name);
void cuda_prof_part_end(umd_ctx *c, int k);

/* A GEMM shape the tuner has timed (gemm_tune.cu, UMDQ_CUDA_GEMM_TUNE): its key, the cuBLASLt
 * descriptors, and the candidate kept: pick 0 is cublasGemmEx (the plan then only remembers that),
 * pick 1 .. lt_n a cuBLASLt algorithm (algo), past them K split by hand (hand_split parts). */
typedef struct {
    tune_key key;
    char op[24];                  /* the op that first asked for it (the log says it) */
    int pick;                     /* the candidate kept */
    int heuristic_n;              /* of them, the heuristic's (the split variants after them) */
    int lt_n;                     /* the cuBLASLt candidates, split variants included */
    int hand[7], nhand;           /* the hand splits' part counts timed after them */
    int hand_split;               /* the kept one's part count (pick > lt_n), else 0 */
    int snapshot_refused;         /* C is read and could not be copied aside: not timed (yet) */
    int tries;                    /* times it was tuned: again at its next call op by op while
                                     the copy of C is refused, up to TUNE_SNAPSHOT_TRIES */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} tune_plan;
#define CUDA_TUNE_PLANS 128
void cuda_tune_plan_release(tune_plan *p);
/* Row-major C (M, N) = alpha op(A) op(B) + beta C with bf16 A and B (ab), C of type cty, through
 * the algorithm the tuner kept for the shape, tuning it first where it is new (gemm_tune.cu).
 * 0 when the GEMM was queued (or the context failed); -1 when the caller runs cublasGemmEx: the
 * switch is off, the operands are not bf16, the tuner kept cublasGemmEx, or the shape is new while
 * the stream is being recorded. */
/* The first run of a Linear's forward plan (bias epilogue, LT_EPI_NONE) outside a recording in a
 * context that tunes its GEMMs: its algorithm timed on these operands (A = W, B = x, D = y, the
 * bias pointer already set) against the others cuBLASLt's heuristic lists, the fastest kept past
 * the margin (gemm_tune.cu). Leaves D to be written by the caller's run. */
void cuda_tune_lt(umd_ctx *c, const char *op, lt_plan *p, const void *A, const void *B, void *D);
int cuda_gemm_tuned(umd_ctx *c, const char *op, int ab, int cty, int compute, int transA,
                    int transB, int M, int N, int K, float alpha, const void *A, long lda,
                    const void *B, long ldb, float beta, void *C, long ldc);

struct umd_ctx {
    int device;
    int math;                  /* UMD_MATH_* */
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *lt_ws;               /* CUDA_LT_WORKSPACE bytes for cuBLASLt (owned) */
    lt_plan plans[CUDA_LT_PLANS];
    int nplans;
    /* workspace (borrowed from the caller's activation arena) */
    char *ws;
    size_t ws_bytes;
    umd_limits lim;            /* what workspace_bytes was last asked for */
    float *ones;
    float *partials;
    size_t partials_floats;
    double *dsum;
    float *attn;
    size_t attn_floats;
    float *attn_d;             /* (attn_d_floats) the fused attention backward's D = rowsum(dO O) */
    size_t attn_d_floats;      /* max_rows * max_heads * max_tokens */
    int attn_mode;             /* UMD_ATTN_*: which attention runs where it applies */
    int attn_kv32;             /* the mma dK dV kernels step 32 queries at a time (3 blocks a
                                  multiprocessor; the same bits): UMDQ_CUDA_ATTN_KV32=1 */
    signed char kv32_res[96];  /* per T rounded up to 16 (up to 384) and kernel pair (qkv fp32,
                                  bf16, bf16 with a bf16 dqkv, that with a bf16 dout too): whether
                                  the resident dK dV kernel steps 32 queries (1), or 64 (-1), 0
                                  not yet asked (mma_attention.cu, res_kv32) */
    signed char kv32_ds[96];   /* the same for the dK dV kernels that store dS (UMDQ_CUDA_ATTN_DS;
                                  pairs by dqkv's and O's types: res_kv32_ds) */
    int attn_fwd32;            /* each warp of the resident mma forward takes 32 query rows (each
                                  K, V fragment read once for two tiles; the same bits):
                                  UMDQ_CUDA_ATTN_FWD32=1 */
    int attn_split;            /* the resident mma kernels share the strips past the last whole
                                  round of their 4 warps among them (mma_attention.cu, res_item):
                                  UMDQ_CUDA_ATTN_SPLIT=1 */
    int attn_ds;               /* the resident mma backward takes dQ from the dS its dK dV kernel
                                  stores (mma_attention.cu, res_bwd_ds): UMDQ_CUDA_ATTN_DS=1 */
    int attn_ds_max_t;         /* for sequences of up to this many tokens (its store grows with
                                  T^2): UMDQ_CUDA_ATTN_DS_MAX_T */
    long attn_ds_calls;        /* backward calls that did so (a recorded step counts once) */
    void **ptrs;               /* (10, attn_ptrs) operand addresses of the batched attention GEMMs */
    size_t attn_ptrs;
    __nv_bfloat16 *bf_a, *bf_b, *bf_w; /* bf16 stages (BF16_STAGE, BF16_STAGE, max_weight) */
    size_t bf_w_len;
    size_t bf_stage;           /* bf16 values of bf_a and of bf_b */
    int fused_norm;            /* residual_layernorm_fwd in one kernel (UMDQ_CUDA_FUSED_NORM=1),
                                  else as gate_residual_fwd then layernorm_fwd */
    int opnd_bf16;             /* operand tensors (ops.h) are bf16: bf16 math with
                                  UMDQ_CUDA_BF16_OPERANDS=1, else fp32 */
    int hidden_bf16;           /* the MLP keeps h in bf16 where asked (UMD_OPND_H): bf16
                                  operands and UMDQ_CUDA_BF16_MLP=1 (hidden_operand), else fp32 */
    int branch_bf16;           /* the model keeps branch tensors (ops.h: attention's output, proj's
                                  and fc2's y) in bf16 (branch_operand): bf16 operands and
                                  UMDQ_CUDA_BF16_BRANCH=1, else fp32. The ops take a bf16 one
                                  wherever the operands are bf16, as they take UMD_OPND */
    int gelu_epi;              /* the MLP's GELU in cuBLASLt's epilogues where h is bf16:
                                  UMDQ_CUDA_GELU_EPILOGUE=1 (with hidden_bf16; mlp.cu) */
    long gelu_epi_gemms;       /* GEMMs queued with a GELU epilogue, and MLP passes that found no */
    long gelu_epi_refused;     /* such plan (the staging passes instead); recordings once */
    int bf16_dh;               /* the MLP's dy W2 in bf16 where h is (bf16 autocast's gradient of
                                  fc2's input), its GELU backward reading it rounded: no fp32
                                  (M, F) scratch (mlp.cu): UMDQ_CUDA_BF16_DH=1 */
    int mlp_one_pass;          /* with that and a bf16 dy (UMD_GRAD), the MLP backward computes
                                  bf16(gelu(h)) for dW2 and dh in one pass over h (mlp.cu; the
                                  same bits): UMDQ_CUDA_MLP_ONE_PASS, 0 turns it off */
    int bf16_bias;             /* a bf16 y's bias is rounded to bf16 too (cuBLASLt's bias of D's
                                  type, as bf16 autocast casts it): UMDQ_CUDA_BF16_BIAS=1 */
    int grad_bf16;             /* the model keeps gradient tensors (ops.h: the gradients of the
                                  branch outputs and of qkv, and of the products' inputs) in bf16
                                  (grad_operand): bf16 branch tensors and UMDQ_CUDA_BF16_GRAD=1,
                                  else fp32. Unlike the other flags, UMD_GRAD and UMD_GRAD_X count
                                  only in such a context (cuda_grad_bf16, cuda_gradx_bf16) */
    int gemm_tune;             /* the GEMMs cublasGemmEx would run timed against cuBLASLt's
                                  other algorithms once per shape, the fastest kept (gemm_tune.cu):
                                  bf16 math and UMDQ_CUDA_GEMM_TUNE=1 */
    int tune_log;              /* a line per tuned shape on stderr: UMDQ_CUDA_GEMM_TUNE_LOG=1 */
    int tune_take;             /* the candidate to keep where it ran, whatever the times (tests:
                                  UMDQ_CUDA_GEMM_TUNE_TAKE=n; past the last, the last), or -1:
                                  the fastest */
    tune_plan *tuned;          /* (CUDA_TUNE_PLANS) the shapes tuned, allocated at the first */
    int ntuned, ntook;         /* shapes tuned; of them, those that took another algorithm */
    int ntook_split;           /* of those, the ones whose algorithm splits K */
    long tune_variants;        /* split candidates timed beside the heuristic's (cuBLASLt's split
                                  variants and the hand splits), over all shapes */
    int ntook_hand;            /* shapes that took a hand split (counted in ntook_split too) */
    int ntuned_lt, ntook_lt;   /* the Linears' forward plans tuned; of them, on another algorithm */
    long tune_runs;            /* GEMM calls queued on an algorithm the tuner took in place of the
                                  default (a recorded one once, not once a replay) */
    int lt_bf16_y_off;         /* a bf16 y goes through an fp32 scratch even where cuBLASLt
                                  writes one (UMDQ_CUDA_LT_BF16_Y=0: its tests) */
    long y_via_fp32;           /* chunks of a bf16 y queued so, recordings once (the profile
                                  report says it) */
    /* recording (ops.h's record_begin): on only with UMDQ_CUDA_GRAPH=1 */
    int graphs;                /* record_begin records (else it answers UMDQ_EUNSUPPORTED) */
    int recording;             /* the stream is being captured */
    cudaGraphExec_t graph;     /* the recording replay launches (NULL: none) */
    /* memory accounting: bytes held by alloc now and at most; the blocks, for release */
    size_t allocated, peak;
    struct { void *p; size_t bytes; } blocks[CUDA_MAX_BLOCKS];
    /* per-op timing (umd_cuda_profile): event pairs, the op of each, totals by op */
    cudaEvent_t *prof_ev;      /* (2 * CUDA_PROF_RING) or NULL when off */
    int prof_op[CUDA_PROF_RING];
    int prof_n;
    double prof_ms[CUDA_PROF_OPS + CUDA_PROF_PARTS]; /* by op, then by part (after the ops) */
    long prof_calls[CUDA_PROF_OPS + CUDA_PROF_PARTS];
    char prof_part[CUDA_PROF_PARTS][64]; /* the parts' names (cuda_prof_part_begin), as met */
    int prof_nparts;
    double prof_flops[CUDA_PROF_OPS], prof_bytes[CUDA_PROF_OPS]; /* each op's floor work */
    double floor_tflops, floor_tbps;       /* the rates its floors are at (profile_floors), or 0 */
    /* the first error */
    int failed;
    char err[512];
};

/* 1 when a tensor of this type (UMD_F32, UMD_OPND) is stored in bf16 in this context (linear_fwd's
 * and the MLP's flags are taken apart first: UMD_OPND_Y says it of y, UMD_OPND_H of h). */
static inline int cuda_opnd_bf16(const umd_ctx *c, int type) {
    return type == UMD_OPND && c->opnd_bf16;
}
/* The same for the tensor that `flag` (UMD_OPND_Y, UMD_OPND_O, ...) names in an op's types: bf16
 * where the flag is set and the context's operands are bf16; else fp32, whatever the flag. */
static inline int cuda_flag_bf16(const umd_ctx *c, int types, int flag) {
    return cuda_opnd_bf16(c, (types & flag) ? UMD_OPND : UMD_F32);
}

/* 1 when the gradient tensor an op's types flag with UMD_GRAD is bf16: the flag is set and the
 * context keeps gradient tensors so (grad_bf16, which implies bf16 operands); else fp32, whatever
 * the flag. */
static inline int cuda_grad_bf16(const umd_ctx *c, int types) {
    return (types & UMD_GRAD) && c->grad_bf16;
}
/* The same for the gradient of a product's input, flagged UMD_GRAD_X: linear_bwd's and mlp_bwd's
 * dx, and that dx where attention_bwd and layernorm_bwd read it as their dout. */
static inline int cuda_gradx_bf16(const umd_ctx *c, int types) {
    return (types & UMD_GRAD_X) && c->grad_bf16;
}

/* Records the first failure (later ones are dropped: they are usually its consequences). */
void cuda_fail(umd_ctx *c, const char *op, const char *what);
/* 0 when fine; else records "op: cudaGetErrorString" and returns -1. */
int cuda_check(umd_ctx *c, cudaError_t e, const char *op);
int cublas_check(umd_ctx *c, cublasStatus_t s, const char *op);
/* After a launch: records a launch error (bad configuration). */
#define CUDA_LAUNCHED(c, op) cuda_check((c), cudaGetLastError(), (op))
/* Every op starts with this: a failed context does nothing more. */
#define CUDA_OP(c) do { if ((c)->failed) return; } while (0)

static inline unsigned cuda_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 0x7fffffffu ? 0x7fffffffu : (b ? b : 1));
}

static inline size_t colsum_chunks(size_t rows) {
    return (rows + CUDA_COLSUM_CHUNK - 1) / CUDA_COLSUM_CHUNK;
}

/* Row-major C (M, N) = alpha op(A) op(B) + beta C in the context's math (fp32 or tf32; bf16 goes
 * through the bf16 stages when the operands fit, else tf32). */
void cuda_gemm_rm(umd_ctx *c, const char *op, int transA, int transB, int M, int N, int K,
                  float alpha, const float *A, long lda, const float *B, long ldb, float beta,
                  float *C, long ldc);
/* The pieces of linear.cu's bf16 path, for fused ops built on them:
 *   cuda_gemm_ex          row-major C (M, N) = alpha op(A) op(B) + beta C, operands of type ab
 *                         (CUDA_R_16BF with CUBLAS_COMPUTE_32F, or CUDA_R_32F with the context's),
 *                         C fp32
 *   cuda_to_bf16          dst (rows, cols) packed bf16 <- src rows at stride ld floats
 *   cuda_bias_colsum_bf16 dst (M, N) bf16 <- dy, and db (N) += dy's column sums in the same pass;
 *                         -1 (nothing done) when the workspace's partials cannot hold the chunks
 *   cuda_lt_linear        y (M, N) = x W^T + b on cuBLASLt with the bias epilogue; bf16 1: x, W
 *                         bf16, 0: fp32 in the context's math; ybf16 1: y bf16 (bf16 x, W only),
 *                         the fp32 result rounded once, 0: fp32; -1 (nothing done) without a plan
 *   cuda_bf16_whole       1 when this is a bf16 context and an (M, max(N, K)) operand and the
 *                         (N, K) weight fit its stages whole (c->bf_a, c->bf_b, c->bf_w) */
void cuda_gemm_ex(umd_ctx *c, const char *op, cudaDataType_t ab, cublasComputeType_t ct, int transA,
                  int transB, int M, int N, int K, float alpha, const void *A, long lda,
                  const void *B, long ldb, float beta, float *C, long ldc);
void cuda_to_bf16(umd_ctx *c, const char *op, __nv_bfloat16 *dst, const float *src, long rows,
                  int cols, long ld);
/* Row-major C (M, N) = op(A) op(B), bf16 operands and a bf16 C (the fp32 sums rounded once: a
 * bf16 context's cuBLAS handle never adds split-K parts in bf16, ops_cuda.cu). */
void cuda_gemm_bf16_to_bf16(umd_ctx *c, const char *op, int transA, int transB, int M, int N,
                            int K, const __nv_bfloat16 *A, long lda, const __nv_bfloat16 *B,
                            long ldb, __nv_bfloat16 *C, long ldc);
/* dst (M, N) bf16 <- g gelu'(h), g and h bf16 (widened), and db (N) += its column sums where db
 * is not NULL, in the same pass; dst may be g (each element read before it is written). -1
 * (nothing done) when the partials cannot hold the chunks. */
int cuda_dgelu16_bf16(umd_ctx *c, __nv_bfloat16 *dst, float *db, const __nv_bfloat16 *g,
                      const __nv_bfloat16 *h, long M, int N);
/* The same pass storing gh (M, N) bf16 <- gelu(h) too (cuda_gelu_to_bf16's values), h read once
 * for both: dst and db as cuda_dgelu16_bf16 makes them (the same chunks, layout and order, where
 * gh is aligned as dst is); gh is neither g nor dst. -1 (nothing done) likewise. */
int cuda_gelu_dgelu16_bf16(umd_ctx *c, __nv_bfloat16 *gh, __nv_bfloat16 *dst, float *db,
                           const __nv_bfloat16 *g, const __nv_bfloat16 *h, long M, int N);
/* 1 when the workspace's partials hold the chunks of a column sum over M rows of N. */
int cuda_colsum_fits(const umd_ctx *c, long M, int N);
int cuda_bias_colsum_bf16(umd_ctx *c, __nv_bfloat16 *dst, float *db, const float *dy, long M, int N);
/* db (N) += the column sums of g (M, N) bf16, its values widened: the sums alone (a bf16 gradient
 * tensor the GEMMs read as it is), in the chunks and order cuda_bias_colsum_bf16 sums an fp32 dy
 * holding those values. -1 (nothing done) when the partials cannot hold the chunks. */
int cuda_colsum_bf16(umd_ctx *c, const char *op, float *db, const __nv_bfloat16 *g, long M, int N);
/* dst (n) bf16 <- gelu(h) (GELU-tanh, as gelu_fwd); h fp32, or bf16 (hbf: the MLP's hidden
 * state where the context keeps it so), whose values are widened first. */
void cuda_gelu_to_bf16(umd_ctx *c, const char *op, __nv_bfloat16 *dst, const void *h, int hbf,
                       size_t n);
/* The same for dy = g * gelu'(h) elementwise (the MLP's GELU backward fused into the pass); h as
 * in cuda_gelu_to_bf16. */
int cuda_dgelu_colsum_bf16(umd_ctx *c, __nv_bfloat16 *dst, float *db, const float *g,
                           const void *h, int hbf, long M, int N);
/* dst (n) fp32 = g * gelu'(h) with h bf16, widened (gelu_bwd's expression; dst may alias g): the
 * GELU backward through tmp of an MLP whose h is bf16. */
void cuda_dgelu_bf16h(umd_ctx *c, const char *op, float *dst, const float *g,
                      const __nv_bfloat16 *h, size_t n);
/* db (N) += the column sums of d (M, N) (a gemv against the workspace's ones); y (M, N) rows = b. */
void cuda_colsum_gemv(umd_ctx *c, const char *op, float *db, const float *d, int M, int N);
void cuda_bias_rows(umd_ctx *c, const char *op, float *y, const float *b, long M, int N);
int cuda_lt_linear(umd_ctx *c, void *y, const void *x, const void *W, const float *b, int M, int N,
                   int K, int bf16, int ybf16);
int cuda_bf16_whole(const umd_ctx *c, long M, int N, int K);
/* The MLP's GEMMs with GELU in cuBLASLt's epilogue (a context with gelu_epi, h bf16, operands
 * whole in the stages; linear.cu):
 *   cuda_lt_gelu_fc1  h (M, F) bf16 = x W1^T + b1 (the fp32 sum rounded once) and c->bf_b (M, F)
 *                     = bf16(gelu(the fp32 sum)) in one GEMM (GELU_AUX_BIAS); x the bf16 operand
 *                     itself (xbf) or fp32, staged into bf_a; W1 staged into bf_w
 *   cuda_lt_dgelu     c->bf_b (M, F) = bf16((dy W2) * gelu'(h)) from dy (M, w) bf16 (bf_a, staged
 *                     by the caller, or a bf16 gradient tensor) and W2 in bf_w (w, F), and db1 (F)
 *                     += its column sums (DGELU_BGRAD, the sums cuBLASLt's, in fp32 or where it
 *                     takes only that bf16); db1 may be NULL
 * 0, or -1 when cuBLASLt has no such plan for the shape, or (cuda_lt_dgelu) dy or h is not
 * 256-byte aligned, the alignment the plan's algorithm was chosen for (nothing was queued): the
 * caller takes the staging passes instead. */
int cuda_lt_gelu_fc1(umd_ctx *c, const char *op, void *h, const void *x, int xbf, const float *W1,
                     const float *b1, int M, int F, int w);
int cuda_lt_dgelu(umd_ctx *c, const char *op, const __nv_bfloat16 *dy, const void *h, float *db1,
                  int M, int F, int w);
/* 1 when cuBLASLt has plans for both GELU epilogues of an (M, F, w) MLP with biases (fc1's
 * GELU_AUX_BIAS, the backward's DGELU_BGRAD), made now where they are not yet: the calls find the
 * same ones. Also before set_workspace (its pointers' alignment then stood in for). */
int cuda_lt_gelu_planned(umd_ctx *c, int M, int F, int w);
/* 1 when cuda_lt_dgelu would take these dy and h: its plan, with (bias) or without db1 (made now
 * where not yet), and every pointer it passes cuBLASLt 256-byte aligned. */
int cuda_lt_dgelu_takes(umd_ctx *c, const __nv_bfloat16 *dy, const void *h, int bias, int M, int F,
                        int w);
/* The bf16 stages' values (bf_a, bf_b each; bf_w) and the partials' floats set_workspace will
 * carve for the limits workspace_bytes recorded (ops_cuda.cu); 0 where there are none. */
void cuda_ws_sizes(const umd_ctx *c, size_t *bf_stage, size_t *bf_w_len, size_t *partials);

/* GELU-tanh as x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) (the CPU's form: no cancellation
 * of 1 + tanh u for negative x), and its derivative s + x s (1 - s) 2u', s = sigmoid(2u). The
 * device side of gelu_fwd / gelu_bwd (elementwise.cu) and of the MLP (mlp.cu). */
/* Four values from p as fp32: one 16-byte load, or 8 bytes of bf16 widened (exactly; p aligned
 * so): what a kernel reads of a tensor that is fp32 or a bf16 branch tensor (ops.h). */
__device__ static inline float4 cuda_values4(const float *p) {
    return *reinterpret_cast<const float4 *>(p);
}
__device__ static inline float4 cuda_values4(const __nv_bfloat16 *p) {
    const uint2 u = *reinterpret_cast<const uint2 *>(p);
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
                       __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
}

__device__ static inline float cuda_gelu_tanh(float v) {
    float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
    return v / (1.0f + expf(-2.0f * u));
}
__device__ static inline float cuda_gelu_tanh_grad(float v) {
    float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
    float s = 1.0f / (1.0f + expf(-2.0f * u));
    float du = 2.0f * 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * v * v);
    return s + v * s * (1.0f - s) * du;
}

/* The same, batched: `count` products with the operands `sA`, `sB`, `sC` floats apart; always
 * fp32 (tf32 when the context's math is not fp32). */
void cuda_gemm_rm_batched(umd_ctx *c, const char *op, int transA, int transB, int M, int N, int K,
                          float alpha, const float *A, long lda, long sA, const float *B, long ldb,
                          long sB, float beta, float *C, long ldc, long sC, int count);

/* bf16 contexts, head width 64 (mma_attention.cu): the context's choice of them at head width hd
 * (attention mode mma, bf16 math, hd 64: what attention_operand reports, with bf16 operands),
 * usable for these shapes (that choice, and the shapes within the kernels' grid and the
 * workspace's D), and the two passes, qkv fp32 or (qbf) a bf16 operand tensor, out fp32 or (obf)
 * a bf16 branch tensor; the backward's dqkv fp32 or (gbf, with qbf only) a bf16 gradient tensor,
 * its dout fp32 or (dbf, with gbf only) a bf16 gradient tensor (UMD_GRAD_X: proj's dx). */
int cuda_mma_attention_mode(const umd_ctx *c, int hd);
int cuda_mma_attention_usable(const umd_ctx *c, int n, int T, int heads, int hd);
void cuda_mma_attention_fwd(umd_ctx *c, void *out, float *lse, const void *qkv, int n, int T,
                            int heads, int qbf, int obf);
void cuda_mma_attention_bwd(umd_ctx *c, void *dqkv, const void *dout, const void *qkv,
                            const void *out, const float *lse, int n, int T, int heads, int qbf,
                            int obf, int gbf, int dbf);
/* D (n, heads, T) = the row dots of dout and out (n, T, heads, hd): the softmax backward's term. */
void cuda_attention_rowdot(umd_ctx *c, float *D, const float *dout, const float *out, int n, int T,
                           int heads, int hd);
/* The fused attention (flash_attention.cu): usable for these shapes in this context (TF32 or bf16
 * math, head width 32 or 64, the workspace's D part large enough), and the two passes. */
int cuda_flash_usable(const umd_ctx *c, int n, int T, int heads, int hd);
void cuda_flash_fwd(umd_ctx *c, float *out, float *lse, const float *qkv, int n, int T, int heads,
                    int hd);
void cuda_flash_bwd(umd_ctx *c, float *dqkv, const float *dout, const float *qkv, const float *out,
                    const float *lse, int n, int T, int heads, int hd);

/* The ops, one file each group (same signatures as ops.h) */
extern "C" {
void cuda_fill(umd_ctx *c, float *x, size_t n, float value);
void cuda_copy(umd_ctx *c, float *dst, const float *src, size_t n);
void cuda_add(umd_ctx *c, float *y, const float *a, const float *b, size_t n);
void cuda_gelu_fwd(umd_ctx *c, float *y, const float *x, size_t n);
void cuda_gelu_bwd(umd_ctx *c, float *dx, const float *dy, const float *x, size_t n);
void cuda_silu_fwd(umd_ctx *c, float *y, const float *x, size_t n);
void cuda_silu_bwd(umd_ctx *c, float *dx, const float *dy, const float *x, size_t n);
void cuda_rand_uniform(umd_ctx *c, float *x, size_t n, uint64_t seed, uint32_t stream,
                       uint32_t step, uint64_t first, float lo, float hi);
void cuda_rand_normal(umd_ctx *c, float *x, size_t n, uint64_t seed, uint32_t stream,
                      uint32_t step, uint64_t first, float mean, float std);
void cuda_draw_timesteps(umd_ctx *c, int32_t *t_net, int row0, int n, int clean, int T,
                         uint64_t seed, uint32_t step);
void cuda_draw_labels(umd_ctx *c, int32_t *y_used, const int32_t *y, int row0, int n, int clean,
                      float p_drop, int null_class, uint64_t seed, uint32_t step);
void cuda_draw_keep(umd_ctx *c, int32_t *order, int32_t *slot, int row0, int n, int L, int keep,
                    uint64_t seed, uint32_t step);
void cuda_patchify(umd_ctx *c, float *tok, const float *img, int n, int C, int H, int W, int p);
void cuda_unpatchify(umd_ctx *c, float *img, const float *tok, int n, int C, int H, int W, int p);
void cuda_noise_mix(umd_ctx *c, float *xt, const float *x0, const float *eps, const int32_t *t_net,
                    const float *sqrt_abar, const float *sqrt_1m_abar, int n, int D);
void cuda_timestep_embed(umd_ctx *c, float *out, const int32_t *t_net, int n, int w);
void cuda_gemm(umd_ctx *c, int transA, int transB, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
void cuda_linear_fwd(umd_ctx *c, void *y, const void *x, const float *W, const float *b, int M,
                     int N, int K, int types);
void cuda_linear_bwd(umd_ctx *c, void *dx, float *dW, float *db, const void *dy, const void *x,
                     const float *W, int M, int N, int K, int dx_accumulate, int types);
void cuda_mlp_fwd(umd_ctx *c, void *y, void *h, float *tmp, const void *x, const float *W1,
                  const float *b1, const float *W2, const float *b2, int M, int F, int w,
                  int types);
void cuda_mlp_bwd(umd_ctx *c, void *dx, float *dW1, float *db1, float *dW2, float *db2,
                  const void *dy, const void *x, const void *h, const float *W1, const float *W2,
                  float *tmp, int M, int F, int w, int types);
int cuda_hidden_operand(const umd_ctx *c);
size_t cuda_mlp_scratch(umd_ctx *c, int M, int F, int w, int types);
void cuda_layernorm_fwd(umd_ctx *c, void *out, float *mean, float *rstd, const float *x,
                        const float *gamma, const float *beta, const float *mod, int mod_stride,
                        int n, int T, int w, long x_stride, long out_stride, int out_type);
void cuda_layernorm_bwd(umd_ctx *c, float *dx, float *dgamma, float *dbeta, float *dmod,
                        const void *dout, const float *x, const float *mean, const float *rstd,
                        const float *gamma, const float *beta, const float *mod, int mod_stride,
                        int n, int T, int w, long x_stride, long out_stride, int dx_accumulate,
                        int types);
void cuda_gate_residual_fwd(umd_ctx *c, float *out, const float *x, const void *y,
                            const float *gate, int gate_stride, int n, int T, int w, int y_type);
void cuda_gate_residual_bwd(umd_ctx *c, void *dy, float *dgate, const float *dout,
                            const void *y, const float *gate, int gate_stride, int n, int T,
                            int w, int types);
void cuda_residual_layernorm_fwd(umd_ctx *c, float *xo, void *out, float *mean, float *rstd,
                                 const float *x, const void *y, const float *gate,
                                 int gate_stride, const float *gamma, const float *beta,
                                 const float *mod, int mod_stride, int n, int T, int w,
                                 int types);
void cuda_attention_fwd(umd_ctx *c, void *out, float *lse, const void *qkv, int n, int T,
                        int heads, int hd, int types);
void cuda_attention_bwd(umd_ctx *c, void *dqkv, const void *dout, const void *qkv,
                        const void *out, const float *lse, int n, int T, int heads, int hd,
                        int types);
int cuda_attention_operand(const umd_ctx *c, int hd);
int cuda_branch_operand(const umd_ctx *c);
int cuda_grad_operand(const umd_ctx *c);
void cuda_embed_rows_fwd(umd_ctx *c, float *out, const float *table, const int32_t *idx, int n,
                         int w);
void cuda_embed_rows_bwd(umd_ctx *c, float *dtable, const float *dout, const int32_t *idx, int n,
                         int w);
void cuda_gather_tokens_fwd(umd_ctx *c, float *xenc, const float *emb, const float *pos,
                            const float *cls, const int32_t *order, int n, int L, int keep,
                            int ncls, int w);
void cuda_gather_tokens_bwd(umd_ctx *c, float *demb, float *dpos, float *dcls, const float *dxenc,
                            const int32_t *slot, int n, int L, int keep, int ncls, int w);
void cuda_decoder_input_fwd(umd_ctx *c, float *xdec, const float *rep, const float *enc,
                            const float *mask, const float *pos, const int32_t *slot, int n,
                            int L, int Tenc, int ncls, int w);
void cuda_decoder_input_bwd(umd_ctx *c, float *drep, float *denc, float *dmask, float *dpos,
                            const float *dxdec, const int32_t *slot, int n, int L, int Tenc,
                            int ncls, int w);
void cuda_token_mean_fwd(umd_ctx *c, float *out, const float *x, int n, int T, int k, int w);
void cuda_token_mean_bwd(umd_ctx *c, float *dx, const float *dout, int n, int T, int k, int w);
void cuda_mse_masked(umd_ctx *c, float *dpred, const float *pred, const float *target,
                     const int32_t *slot, int n, int L, int pp, int C, int half, int select,
                     float grad_scale, double *sum);
void cuda_sumsq(umd_ctx *c, double *out, const float *x, size_t n);
void cuda_adamw(umd_ctx *c, float *p, const float *g, float *m, float *v, const uint8_t *decay,
                size_t n, const umd_adamw_args *a, const double *sumsq);
void cuda_ema(umd_ctx *c, float *ema, const float *p, size_t n, float decay);
}

#endif
