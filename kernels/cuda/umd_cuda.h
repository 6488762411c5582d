/* umd_cuda.h: the CUDA backend's entry points beyond the op table (kernels/ops.h). Plain C; in a
 * build without nvcc every function here exists and reports that there is no CUDA.
 *
 * The backend is a shared object, lib/umdq/libumd_cuda.so beside the programs' bin/ (or the file
 * $UMDQ_CUDA_LIB names), that libumd opens on first use (loader.c), so cuBLAS and the CUDA runtime
 * are mapped only into the processes that train on a GPU: a worker that forks an attempt per job
 * stays small, and a CPU job never loads them. The object exports one symbol,
 * UMD_CUDA_API_SYMBOL, a function returning the table below; everything else in it is hidden. */
#ifndef UMDQ_KERNELS_UMD_CUDA_H
#define UMDQ_KERNELS_UMD_CUDA_H
#include <stddef.h>
#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How the GEMMs compute (the same order as the trainer's train.precision). Every other op and all
 * stored tensors are fp32 in each mode (operand tensors aside, below); bf16 rounds the GEMM
 * operands (weights and activations) to bf16 and accumulates in fp32, with fp32 master weights
 * and optimiser state. */
enum { UMD_MATH_FP32 = 0, UMD_MATH_TF32 = 1, UMD_MATH_BF16 = 2 };

/* Operand tensors (ops.h: the LayerNorm outputs only products read, and qkv where
 * attention_operand says so: the mma attention, head width 64) are fp32 in every context but a
 * bf16 one with UMDQ_CUDA_BF16_OPERANDS on (the default; "0" in the environment turns it off, as
 * it does each switch below): there they are bf16
 * (operand_bytes 2), written rounded by the LayerNorms and the qkv Linear and read as they are
 * by the GEMMs and the attention kernels, with the same bits as the default context, one
 * conversion pass fewer per product and half those tensors' memory (test_cuda_ops and
 * test_cuda_model check it against the context without it bit for bit; bench/train_gpu
 * --bf16-operands).
 * On top of them, UMDQ_CUDA_BF16_MLP=1 (read with UMDQ_CUDA_BF16_OPERANDS=1, in bf16 contexts
 * only) keeps the MLP's hidden state h = fc1(x) in bf16 too (hidden_operand 1, UMD_OPND_H;
 * mlp.cu): fc1 writes it rounded, as the qkv Linear writes qkv, and GELU and its backward read
 * the rounded values, as PyTorch's bf16 autocast keeps h. That changes the results (they are
 * those of h rounded, close to the fp32 h's, not their bits), so it is a switch of its own, on by
 * default (test_cuda_ops against the ops on the rounded h, bit for bit; test_cuda_model against
 * the model without the switches within bf16 tolerance; bench/train_gpu --bf16-mlp).
 * Likewise UMDQ_CUDA_BF16_BRANCH=1 (read with UMDQ_CUDA_BF16_OPERANDS=1, in bf16 contexts only)
 * keeps each block's branch tensors in bf16 (branch_operand 1, UMD_OPND_Y of proj, fc2 and the
 * gated residuals, UMD_OPND_O of attention): proj's and fc2's outputs, written rounded by their
 * GEMMs, and attention's output where attention_operand says 1, written rounded by the mma
 * kernels' epilogue; the gated residuals and attention's backward read the rounded values, as
 * PyTorch's bf16 autocast keeps them. Results are those of the rounded tensors, so it is a switch
 * of its own, on by default (test_cuda_ops against the ops on fp32 tensors holding the rounded
 * values, bit for bit; test_cuda_model against the model without the switches within bf16
 * tolerance; bench/train_gpu --bf16-branch).
 * UMDQ_CUDA_BF16_BIAS=1 (bf16 contexts with bf16 operands) rounds a bf16 y's bias to bf16 as
 * well, as bf16 autocast casts it: cuBLASLt then writes the bf16 y with a bias of its own type,
 * where (cuBLAS 13 on an H200) it offers no bf16 output with an fp32 bias and the y would go
 * through an fp32 scratch; on by default (test_cuda_ops within a bf16 step of the product with
 * the rounded bias; test_cuda_model; bench/train_gpu --bf16-bias).
 * UMDQ_CUDA_ATTN_KV32=1 makes the mma attention's dK dV kernels step 32 queries at a time in
 * place of 64: the register budget of 3 blocks a multiprocessor in place of 2, the same bits
 * (test_cuda_ops); on by default (bench/train_gpu --attn-kv32).
 * UMDQ_CUDA_ATTN_FWD32=1 makes each warp of the resident mma forward (up to 384 tokens) take 32
 * query rows in place of 16, each K and V fragment read from shared memory once for both tiles:
 * the same bits (test_cuda_ops); off by default: slower on an H200 (--attn-fwd32, --attention).
 * UMDQ_CUDA_ATTN_SPLIT=1 makes the resident mma attention (up to 384 tokens; its forward with
 * 16 rows a warp, and its backward) share the strips of 16 rows past the last whole round of its
 * 4 warps (1 or 2 strips, where the strips number 4k + 1 or 4k + 2: 17 at the model's 257
 * tokens) among the warps, each taking the products over a part of the other operand's rows, the
 * parts combined in a fixed order: the warps no longer wait a whole strip's time on one of them.
 * Only those strips' rows get other bits (test_cuda_ops; the other rows bit for bit): their
 * gradients and lse within fp32 rounding of the default's, their output within bf16 rounding
 * (each part rounds its softmax weights against the running max of its own keys). Off by
 * default: an H200 timed B/4 0.6-1.5 ms a step slower with it (--attn-split).
 * UMDQ_CUDA_ATTN_DS=1 makes the resident mma backward (up to 384 tokens, a bf16 qkv, dqkv and
 * dout of one type) store dS in bf16 from its dK dV kernel, in the attention workspace a group of
 * heads at a time, and take dQ = dS K in one product over it, where its dQ kernel computed S, dP
 * and dS again (2 of the backward's 7 products, and half its exponentials): dK and dV the same
 * bits, dQ within rounding of the default's (test_cuda_ops); where the workspace holds no head's
 * dS, the two default kernels. On by default for sequences of up to 192 tokens
 * (UMDQ_CUDA_ATTN_DS_MAX_T=N sets the length; 1 to 100000): on an H200 the backward alone
 * took 20% and 13% less time with it at 65 and 129 tokens and 4% more at 257, where the dS it
 * stores and reads (T^2 values a head) outweighs what it saves (--attn-ds); the description
 * counts the calls that took it.
 * UMDQ_CUDA_LT_BF16_Y=0 makes a context write every bf16 operand y (the qkv Linear's, a bf16 h)
 * through an fp32 scratch and a rounding pass, the way it does where cuBLASLt has no bf16 output
 * with an fp32 bias: the same bits, for the tests of that path.
 * UMDQ_CUDA_BF16_DH=1 (with BF16_MLP) writes the MLP backward's dy W2 in bf16 and its GELU
 * backward reads it rounded, as bf16 autocast rounds the gradient of fc2's input: no fp32 MLP
 * scratch (mlp.cu); on by default (test_cuda_ops within bf16 tolerance of the fp32 product;
 * test_cuda_model; bench/train_gpu --bf16-dh). UMDQ_CUDA_GELU_EPILOGUE=1 (mlp.cu) is off by
 * default: slower on an H200 with the other switches on.
 * UMDQ_CUDA_BF16_GRAD=1 (read with UMDQ_CUDA_BF16_BRANCH=1, in bf16 contexts only) keeps the
 * gradient tensors in bf16 (grad_operand 1): the gradients of the branch outputs (UMD_GRAD),
 * written rounded by gate_residual_bwd and read as the bf16 GEMM operand by the linear_bwd of
 * proj and the mlp_bwd of fc2, and the gradient of a bf16 qkv, written rounded by the mma
 * attention's backward and read so by the qkv Linear's linear_bwd; and the gradients of those
 * products' inputs (UMD_GRAD_X), their dx written by the GEMM in bf16 (the fp32 sums rounded
 * once) and read as the dout of the next op back: proj's by the mma attention's backward, the
 * MLP's by norm2's layernorm_bwd, the qkv Linear's by norm1's; as bf16 autocast's backward keeps
 * them. The bias gradients sum the rounded values. Results are those of the rounded tensors:
 * the writers' fp32 results rounded once (test_cuda_ops: bit for bit, a GEMM's dx within a bf16
 * step, cuBLAS taking its own algorithm for a bf16 output), the readers' results those of fp32
 * tensors holding the rounded values (test_cuda_ops, bit for bit; test_cuda_model against the
 * CPU within bf16 tolerance); on by default: B/4 4.7 ms a step faster on an H200
 * (bench/train_gpu --bf16-grad). Where an op cannot take a bf16 gradient (the fused and GEMM
 * attention, the separate ops of an MLP beyond the stages, weights beyond the bf16 stage, a dx
 * accumulated into) the context fails, naming the op.
 * UMDQ_CUDA_MLP_ONE_PASS=0 turns off the MLP backward's one pass over h where dy is a bf16
 * gradient tensor (BF16_GRAD) and dy W2 is bf16 (BF16_DH, the GELU epilogues off): dy W2 goes
 * into the stage dy left free, and one pass reads it and h to write gelu(h) for dW2 and dh, where
 * two passes read h (mlp.cu): the same bits (test_cuda_ops), one read of h (2 bytes a value)
 * fewer a block; on by default (bench/train_gpu --mlp-one-pass).
 * UMDQ_CUDA_GEMM_TUNE=1 (bf16 contexts) times each GEMM shape of at least 8 GFLOP that would go
 * to cublasGemmEx (the backward's products, the MLP's) once, when it is first asked for outside
 * a recording, on the GEMM's own operands (a C that is read copied aside and back): as cuBLAS
 * runs it, as each algorithm cuBLASLt's heuristic lists for it, as the first of those with other
 * split-K counts, and with K split by hand (an fp32 C). It keeps the fastest where it beats
 * cuBLAS's by more than 3% (gemm_tune.cu), and times each Linear forward plan's algorithm
 * against the heuristic's others likewise. A shape on another algorithm adds its sums in another
 * order, a fixed one still (for a bf16 output no split-K parts added in bf16) (test_cuda_ops
 * against the CPU, every kind of candidate taken in turn; test_cuda_model through recorded
 * steps); off by default: an H200 timed B/4 0.6-0.7 ms a step faster with it, within noise; two
 * runs may keep different algorithms, so different bits (bench/train_gpu --gemm-tune).
 * UMDQ_CUDA_GEMM_TUNE_LOG=1 prints each tuned shape's times on stderr; the description
 * (umd_cuda_describe) counts the shapes tuned and those on another algorithm.
 * Each switch (GRAPH, FUSED_NORM, BF16_OPERANDS, BF16_MLP, BF16_DH, BF16_BRANCH, BF16_GRAD,
 * BF16_BIAS, GELU_EPILOGUE, ATTN_KV32, ATTN_FWD32, MLP_ONE_PASS, ATTN_SPLIT, ATTN_DS,
 * GEMM_TUNE) is read when a context is made: "1" turns it on, "0" off, and unset it takes its
 * default (ops_cuda.cu's CUDA_DEFAULT_*: all on but GELU_EPILOGUE, ATTN_FWD32, ATTN_SPLIT and
 * GEMM_TUNE; ATTN_DS up to UMDQ_CUDA_ATTN_DS_MAX_T tokens). */

/* The CUDA backend computing in `math`; NULL when this build has no CUDA or math is unknown. */
const umd_ops *umd_ops_cuda(int math);

/* Visible CUDA devices: > 0, or 0 with the reason in err (no driver, no device, no CUDA build). */
int umd_cuda_devices(char *err, size_t errlen);

/* Memory of a CUDA context (ctx from umd_ops_cuda's ctx_new): the peak of the bytes held by its
 * alloc, and the device's used and total memory now (cudaMemGetInfo, every process). 0 or -1. */
int umd_cuda_memory(umd_ctx *c, size_t *peak_alloc, size_t *device_used, size_t *device_total);

/* One line naming the device ("NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB") and the
 * switches the context was made with ("; switches: graph on, ..."). */
void umd_cuda_describe(umd_ctx *c, char *buf, size_t n);

/* Times `reps` row-major GEMMs (M, K) x (K, N) with bf16 operands and fp32 accumulation (math =
 * UMD_MATH_BF16) or in the given math, after a warm-up, on the context's stream; returns the
 * achieved TFLOP/s, or a negative value on failure (the context's status says why). Allocates
 * and frees its own operands (a benchmark helper, never called inside a training step). */
double umd_cuda_gemm_tflops(umd_ctx *c, int math, int M, int N, int K, int reps);

/* Attention of a context, where each path applies (the rest runs on the GEMMs):
 *   UMD_ATTN_GEMM  (0) batched cuBLAS GEMMs, every shape; the default of fp32 and TF32 contexts
 *   UMD_ATTN_FUSED (1) flash_attention.cu's TF32 kernels: TF32 and bf16 math, head width 32 or 64
 *   UMD_ATTN_MMA   (2) mma_attention.cu's bf16 tensor-core kernels: bf16 math, head width 64; the
 *                      default (UMD_ATTN_MMA in a TF32 context is UMD_ATTN_GEMM)
 * The fused and mma paths keep no (T, T) tile in device memory (the workspace's tiles shrink to
 * one head's). All keep the same state between forward and backward, so any may run either pass.
 * A context starts with UMDQ_CUDA_ATTENTION=gemm|fused|mma from the environment, else mma; the
 * workspace is sized for the choice made at workspace_bytes, so switching later only changes
 * speed. 0, or -1 for an unknown mode. */
enum { UMD_ATTN_GEMM = 0, UMD_ATTN_FUSED = 1, UMD_ATTN_MMA = 2 };
int umd_cuda_set_attention(umd_ctx *c, int mode);

/* Recording (ops.h's record_begin, record_end, replay): a context records its stream into a CUDA
 * graph unless UMDQ_CUDA_GRAPH=0 was set when it was made (cuBLAS works in the context's
 * cuBLASLt workspace, so no recorded GEMM allocates); else record_begin answers
 * UMDQ_EUNSUPPORTED and the trainer runs each step op by op. Per-op profiling and recording
 * exclude each other. */

/* Per-op timing of a context: on (1) starts counting from zero, off (0) stops. 0 or -1 (also
 * while the context is recording). */
int umd_cuda_profile(umd_ctx *c, int on);
/* The ops' device time since profiling was switched on, divided by `per` (steps), largest first,
 * as one line into buf. Waits for the queued ops. Where floor rates were given
 * (umd_cuda_profile_floors), each op that has a floor also shows it and how far its time is from
 * it. Then, after "inside the ops (ms per step):", the spans timed inside them, in the order
 * met: every GEMM by op and shape ("op:gemm MxNxK" with the transposes, "+=" where C is read
 * and "bf16" for a bf16 C; "linear_fwd:cuBLASLt MxNxK" for the Linears' plans) and attention's
 * backward kernels ("attention_bwd:dQ", "attention_bwd:dK_dV"), each "name ms (calls);". */
void umd_cuda_profile_report(umd_ctx *c, int per, char *buf, size_t n);
/* The rates the profile report's floors are at: tflops TFLOP/s for the products (the bf16 GEMM
 * ceiling measured in the same run) and tbps TB/s for the bytes (a device copy's, likewise). An
 * op's floor is the larger of its FLOPs at tflops and its bytes at tbps, its bytes being every
 * tensor it must read or write, once, at its stored width (ops_cuda.cu's op_cost). 0 or -1. */
int umd_cuda_profile_floors(umd_ctx *c, double tflops, double tbps);

/* 1 when this build has the CUDA backend and its shared object is where the loader looks (it is
 * not opened: no CUDA library is loaded and no device is touched), else 0 with the reason in err
 * (err may be NULL). */
int umd_cuda_built(char *err, size_t errlen);

/* The table libumd_cuda.so exports (the functions above, as the object implements them). */
typedef struct {
    int version; /* UMD_CUDA_API_VERSION */
    const umd_ops *(*ops)(int math);
    int (*devices)(char *err, size_t errlen);
    int (*memory)(umd_ctx *c, size_t *peak_alloc, size_t *device_used, size_t *device_total);
    void (*describe)(umd_ctx *c, char *buf, size_t n);
    double (*gemm_tflops)(umd_ctx *c, int math, int M, int N, int K, int reps);
    int (*set_attention)(umd_ctx *c, int mode);
    int (*profile)(umd_ctx *c, int on);
    void (*profile_report)(umd_ctx *c, int per, char *buf, size_t n);
    int (*profile_floors)(umd_ctx *c, double tflops, double tbps);
} umd_cuda_api;
#define UMD_CUDA_API_VERSION 7
#define UMD_CUDA_API_SYMBOL "umd_cuda_api_v1"

#ifdef __cplusplus
}
#endif
#endif
