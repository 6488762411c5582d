/* ops.h: the op set the UMD trainer runs on, as a backend table of function pointers.
 *
 * The model, objective and optimiser in trainer/ touch tensor memory only through these ops, so a
 * backend (cpu/ now, cuda/ later) is one `umd_ops` table plus its context, and the trainer code runs
 * unchanged on either. Every op takes raw pointers into memory that the same backend allocated
 * (`alloc`), sizes, and the backend context; no op allocates. Host code keeps only shapes, scalars
 * and the step loop. Scalars an op computes (a loss, a sum of squares) are written to a double in
 * backend memory, and the scalars of an optimiser update are read from backend memory, so no op
 * waits for a device, and a device backend can record a training step once and replay it
 * (record_begin below): only `download` and `status` wait.
 *
 * Conventions
 *   - Row-major everywhere. A Linear layer's weight W is (N, K) = (out, in), PyTorch's layout, and
 *     computes y = x W^T + b.
 *   - A "sequence batch" (n, T, w) is n sequences of T tokens of width w. Ops that read a strided
 *     batch take x_stride: floats from the start of one sequence to the start of the next (T * w
 *     when packed).
 *   - adaLN modulation rows: `mod` points at the shift of sequence 0; the scale follows at
 *     mod + w; sequence b's shift is at mod + b * mod_stride. A block's (n, 6w) modulation holds
 *     (shift1, scale1, gate1, shift2, scale2, gate2) in that order.
 *   - Gradients of parameters are accumulated (+=): one weight can meet several calls in a step
 *     (a LayerNorm runs once per segment of the encoder's batch, the cls and position gradients
 *     gather from both kinds of rows), and the conditioning vector feeds every block. Gradients
 *     of activations are overwritten unless the op takes an `accumulate` flag.
 *   - Operand tensors: a tensor that only matrix products read (the LayerNorm outputs the model
 *     feeds to a Linear or the MLP, and qkv where attention_operand says so) may be stored in
 *     the context's operand type, operand_bytes(c) bytes an element: 4 (fp32) or 2 (bf16, the
 *     fp32 value rounded to nearest even, as a bf16 GEMM operand is). The ops that write or read
 *     one take a flag, UMD_OPND (else UMD_F32), and a void pointer; shapes and strides count
 *     elements either way. In a context whose operand type is fp32 the flag changes nothing. A
 *     context with bf16 operands saves a conversion pass per product operand and half the
 *     tensor's memory, with the same results as rounding the operand on its way into a bf16
 *     product.
 *   - Branch tensors: where branch_operand says so, a block's attention output and the outputs of
 *     its two branches (proj's and fc2's y, which a gated residual adds to the stream) are stored
 *     in the operand type too, as bf16 autocast keeps them: not only products read them (the
 *     gated residual and its backward, attention's backward read them), so the results are those
 *     of the rounded values. The ops that write or read one take UMD_OPND_Y or UMD_OPND_O.
 *   - Gradient tensors: where grad_operand says so, the gradients that pass between a block's
 *     ops are stored in the operand type too, as bf16 autocast's backward keeps the gradients of
 *     its bf16 tensors: the gradient of each branch output (gate_residual_bwd's dy, the dy of
 *     proj's linear_bwd and of mlp_bwd) and, where qkv is an operand tensor, the gradient of qkv
 *     (attention_bwd's dqkv, the dy of the qkv Linear's linear_bwd), with UMD_GRAD; and the
 *     gradients of the products' inputs (the dx of linear_bwd and mlp_bwd: the dout that
 *     attention_bwd and the LayerNorms' layernorm_bwd read), with UMD_GRAD_X. The op that writes
 *     one rounds its fp32 result once; the ops that read one compute on its values, bias column
 *     sums included.
 *   - Random draws are Philox4x32-10 (philox.h): a draw is named by (seed, stream, step, index), and
 *     element e of a filled tensor uses word e % 4 of the draw with index first + e / 4 (so four
 *     consecutive elements share one draw). Results are bit-identical for a given thread count;
 *     reductions run in a fixed order (no atomics on floats).
 *
 * Token layouts
 *   - Images (B, C, H, W) floats in [-1, 1].
 *   - Patch (i, j) of an image is token l = i * (W/p) + j; its vector is ordered (pi, pj, c), P =
 *     p * p * C values (MAE's patchify).
 *   - The head predicts, per token, (pi, pj, 2C): channels [0, C) are x0, [C, 2C) are eps.
 *   - Keep order (draw_keep): per row, the tokens sorted by ascending uniform noise u =
 *     philox_unit(word 0 of draw row * L + l), ties broken by the lower token index (a stable
 *     argsort); the first `keep` of that order are visible, in that order (MAE's ids_shuffle).
 *     slot[b, l] is token l's position among the visible tokens, or -1 when it is masked. */
#ifndef UMDQ_KERNELS_OPS_H
#define UMDQ_KERNELS_OPS_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef struct umd_ctx umd_ctx; /* a backend's execution context: threads, workspace (opaque) */

/* The largest shapes ops will see, so a backend can size its workspace. */
typedef struct {
    int max_rows;     /* rows (sequences) in one op call */
    int max_tokens;   /* tokens of one sequence (attention, LayerNorm) */
    int max_width;    /* widest row a normalisation or reduction sees */
    int max_heads;
    int max_patches;  /* L, tokens per image (the keep-order sort) */
    long max_weight;  /* the largest Linear weight, N * K floats (per-thread gradient partials) */
} umd_limits;

/* The storage of a tensor an op writes or reads in the operand type (see Conventions): UMD_OPND
 * says it of the op's matrix-product operand (x, qkv) or LayerNorm output (out); linear_fwd's and
 * mlp_fwd's flags say it of their output y (UMD_OPND_Y), the MLP's of its hidden state h
 * (UMD_OPND_H), the gated residuals' of their branch input y (UMD_OPND_Y), the attention ops' of
 * the attention output out (UMD_OPND_O); UMD_GRAD says it of a backward op's gradient tensor
 * (linear_bwd's and mlp_bwd's dy, gate_residual_bwd's dy, attention_bwd's dqkv), UMD_GRAD_X of
 * the gradient of a product's input (linear_bwd's and mlp_bwd's dx, and that dx where
 * attention_bwd and layernorm_bwd read it as their dout). */
enum {
    UMD_F32 = 0,
    UMD_OPND = 1,
    UMD_OPND_Y = 2,
    UMD_OPND_H = 4,
    UMD_OPND_O = 8,
    UMD_GRAD = 16,
    UMD_GRAD_X = 32
};

/* Token selections of the masked losses. */
enum { UMD_SEL_ALL = 0, UMD_SEL_VISIBLE = 1, UMD_SEL_MASKED = 2 };

/* One AdamW update's scalars (bias corrections precomputed on the host), read by adamw from backend
 * memory: the host uploads them before each update. */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    float bias_correction1;  /* 1 - beta1^t */
    float bias_correction2;  /* 1 - beta2^t */
    float max_norm;          /* the global-norm clip, > 0: every gradient is first multiplied by
                                min(1, max_norm / (sqrt(sumsq) + 1e-6)), in fp32 as PyTorch's
                                clip_grad_norm_ (sqrt in double, then rounded); 0: no clip */
} umd_adamw_args;

typedef struct umd_ops {
    const char *name; /* "cpu", "cuda" */

    /* ---- context and memory (set-up time only, never inside a step) --------------------------- */
    /* threads: 0 = every core. 0 or a negative UMDQ_E* code with a message. */
    int (*ctx_new)(umd_ctx **out, int threads, char *err, size_t errlen);
    void (*ctx_destroy)(umd_ctx **c); /* accepts NULL, NULLs the pointer */
    /* Threads of the context. The model runs one replica of its step per thread of the CPU
     * backend, each on a 1-thread context (see trainer/model.h); a device backend reports 1. */
    int (*ctx_threads)(const umd_ctx *c);
    /* Workspace the ops need for shapes up to lim; the caller carves it from its activation arena
     * and hands it over with set_workspace (borrowed until the context is destroyed). */
    size_t (*workspace_bytes)(const umd_ctx *c, const umd_limits *lim);
    void (*set_workspace)(umd_ctx *c, void *ws, size_t bytes);
    /* Backend memory, zero-filled, 64-byte aligned; NULL when out of memory. */
    void *(*alloc)(umd_ctx *c, size_t bytes);
    void (*release)(umd_ctx *c, void *p); /* accepts NULL */
    /* Copies between host memory and backend memory. */
    void (*upload)(umd_ctx *c, void *dst, const void *src, size_t bytes);
    void (*download)(umd_ctx *c, void *dst_host, const void *src, size_t bytes);
    /* Bytes of an element of an operand tensor in this context: 4 (fp32) or 2 (bf16). */
    size_t (*operand_bytes)(const umd_ctx *c);

    /* ---- elementwise ---------------------------------------------------------------------------- */
    void (*fill)(umd_ctx *c, float *x, size_t n, float value);
    void (*copy)(umd_ctx *c, float *dst, const float *src, size_t n);
    void (*add)(umd_ctx *c, float *y, const float *a, const float *b, size_t n); /* y = a + b */
    /* y = gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
    void (*gelu_fwd)(umd_ctx *c, float *y, const float *x, size_t n);
    /* dx = dy * gelu'(x); dx may alias dy. */
    void (*gelu_bwd)(umd_ctx *c, float *dx, const float *dy, const float *x, size_t n);
    /* y = x * sigmoid(x) */
    void (*silu_fwd)(umd_ctx *c, float *y, const float *x, size_t n);
    void (*silu_bwd)(umd_ctx *c, float *dx, const float *dy, const float *x, size_t n);

    /* ---- random numbers (Philox) --------------------------------------------------------------- */
    /* x[e] = lo + (hi - lo) * u, u = philox_unit(word e % 4 of draw first + e / 4 ... see above). */
    void (*rand_uniform)(umd_ctx *c, float *x, size_t n, uint64_t seed, uint32_t stream,
                         uint32_t step, uint64_t first, float lo, float hi);
    /* x[e] = mean + std * z, z ~ N(0, 1) by Box-Muller: words (0, 1) of a draw give elements 0 and
     * 1 (r cos, r sin with r = sqrt(-2 ln u1), u1 = philox_unit_open0(word 0), angle 2 pi
     * philox_unit(word 1)), words (2, 3) give elements 2 and 3. */
    void (*rand_normal)(umd_ctx *c, float *x, size_t n, uint64_t seed, uint32_t stream,
                        uint32_t step, uint64_t first, float mean, float std);
    /* Network timesteps of batch rows [row0, row0 + n) (t_net points at row row0): 0 when the rows
     * are clean; else idx + 1 with idx = (word0 * T) >> 32 of draw (seed, PHILOX_TIMESTEP, step,
     * row), so idx is uniform in {0 .. T-1}. */
    void (*draw_timesteps)(umd_ctx *c, int32_t *t_net, int row0, int n, int clean, int T,
                           uint64_t seed, uint32_t step);
    /* Labels after dropout of rows [row0, row0 + n) (y_used and y point at row row0): null_class
     * when the rows are clean (clean rows are unconditional); else y[b] unless philox_unit(word 0
     * of draw (seed, PHILOX_LABEL_DROP, step, row)) < p_drop. */
    void (*draw_labels)(umd_ctx *c, int32_t *y_used, const int32_t *y, int row0, int n, int clean,
                        float p_drop, int null_class, uint64_t seed, uint32_t step);
    /* Keep order of rows [row0, row0 + n) (pointers at row row0): order (n, L) = the stable argsort
     * of the mask noise (draw index = row * L + token, row counted from 0 of the batch), slot (n, L)
     * as described above. */
    void (*draw_keep)(umd_ctx *c, int32_t *order, int32_t *slot, int row0, int n, int L, int keep,
                      uint64_t seed, uint32_t step);

    /* ---- diffusion inputs ---------------------------------------------------------------------- */
    /* img (n, C, H, W) -> tok (n, L, P). */
    void (*patchify)(umd_ctx *c, float *tok, const float *img, int n, int C, int H, int W, int p);
    /* tok (n, L, p*p*C) -> img (n, C, H, W), the inverse. */
    void (*unpatchify)(umd_ctx *c, float *img, const float *tok, int n, int C, int H, int W, int p);
    /* xt[b] = sqrt_abar[t_net[b] - 1] * x0[b] + sqrt_1m_abar[t_net[b] - 1] * eps[b], rows of D
     * values; every t_net[b] >= 1. */
    void (*noise_mix)(umd_ctx *c, float *xt, const float *x0, const float *eps, const int32_t *t_net,
                      const float *sqrt_abar, const float *sqrt_1m_abar, int n, int D);
    /* out (n, w): [sin(t f_i), cos(t f_i)] for i < w/2, f_i = exp(-i ln(10000) / (w/2 - 1)),
     * t = t_net[b]; computed in double (t f reaches 1000 radians). */
    void (*timestep_embed)(umd_ctx *c, float *out, const int32_t *t_net, int n, int w);

    /* ---- dense layers ---------------------------------------------------------------------------- */
    /* C (M, N) = alpha op(A) op(B) + beta C, row-major, op = transpose when trans != 0. */
    void (*gemm)(umd_ctx *c, int transA, int transB, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
    /* y (M, N) = x (M, K) W^T + b; b may be NULL. types: x is an operand tensor with UMD_OPND,
     * y with UMD_OPND_Y (the fp32 result, bias added, rounded once). UMD_OPND_H as well says y is
     * an MLP's hidden state h (fc1 run again: train.recompute), which then has the values mlp_fwd
     * gives h in this context (a backend whose MLP computes h in a GEMM of its own, as the CUDA
     * one with GELU in cuBLASLt's epilogue, takes that one here too). */
    void (*linear_fwd)(umd_ctx *c, void *y, const void *x, const float *W, const float *b,
                       int M, int N, int K, int types);
    /* dx (M, K) = dy W (or += when dx_accumulate; dx may be NULL: not needed), dW (N, K) += dy^T x,
     * db (N) += column sums of dy (db may be NULL); types: x typed as in linear_fwd (UMD_OPND),
     * dy a gradient tensor in the operand type with UMD_GRAD, dx with UMD_GRAD_X (written, the
     * fp32 result rounded once: not with dx_accumulate). */
    void (*linear_bwd)(umd_ctx *c, void *dx, float *dW, float *db, const void *dy, const void *x,
                       const float *W, int M, int N, int K, int dx_accumulate, int types);
    /* A transformer MLP, fc1 -> GELU-tanh (as gelu_fwd) -> fc2, over M tokens of width w with
     * hidden width F: h (M, F) = x (M, w) W1^T + b1 (kept for the backward), y (M, w) = gelu(h)
     * W2^T + b2. W1 (F, w), W2 (w, F); b1 (F), b2 (w) may be NULL. tmp (M, F) is scratch the op
     * may overwrite (a backend that runs fc2 on gelu(h) in fp32 materialises it there), so the
     * caller never keeps gelu(h). types: x is an operand tensor with UMD_OPND; h is kept in
     * the operand type with UMD_OPND_H (linear_fwd's y with UMD_OPND_Y), where hidden_operand
     * says the context does so. h's values are linear_fwd's. y is stored in the operand type
     * with UMD_OPND_Y (the fp32 result, bias added, rounded once). tmp may be NULL where
     * mlp_scratch says the shapes need none. */
    void (*mlp_fwd)(umd_ctx *c, void *y, void *h, float *tmp, const void *x, const float *W1,
                    const float *b1, const float *W2, const float *b2, int M, int F, int w,
                    int types);
    /* The backward of mlp_fwd from dy (M, w), the forward's x and h: dW2 (w, F) += dy^T gelu(h),
     * db2 (w) += column sums of dy, dh = (dy W2) * gelu'(h), dW1 (F, w) += dh^T x, db1 (F) +=
     * column sums of dh, dx (M, w) = dh W1 (written). db1, db2 may be NULL; dx may alias dy (dy
     * is read before dx is written): the buffer then holds the wider of their two types (a bf16
     * dy under an fp32 dx takes 4 bytes a value written over a tensor of 2). tmp (M, F) is
     * scratch (it ends up holding dh or garbage), or NULL where mlp_scratch says the shapes need
     * none. x and h typed by `types` as in mlp_fwd, dy a gradient tensor in the operand type with
     * UMD_GRAD, dx with UMD_GRAD_X (the fp32 result rounded once). */
    void (*mlp_bwd)(umd_ctx *c, void *dx, float *dW1, float *db1, float *dW2, float *db2,
                    const void *dy, const void *x, const void *h, const float *W1,
                    const float *W2, float *tmp, int M, int F, int w, int types);
    /* 1 when this context's MLP keeps h in bf16 (UMD_OPND_H): not an operand tensor (GELU and its
     * backward read h too, and compute on its rounded values, as bf16 autocast keeps it), so the
     * results are those of h rounded to bf16, not the fp32 ones; 0: h is fp32. */
    int (*hidden_operand)(const umd_ctx *c);
    /* Floats of the scratch tmp that mlp_fwd and mlp_bwd need at these shapes and types: M * F,
     * or 0 where this context's MLP runs without (then tmp may be NULL; the CUDA backend with
     * GELU in cuBLASLt's epilogues, which it plans here). Set-up time only, after
     * workspace_bytes (the scratch is laid out with the activations, before set_workspace): a
     * model asks it once per MLP shape it will train. */
    size_t (*mlp_scratch)(umd_ctx *c, int M, int F, int w, int types);

    /* ---- normalisation and adaLN ------------------------------------------------------------------ */
    /* LayerNorm over w (eps 1e-6, biased variance) with affine gamma, beta, then, when mod is not
     * NULL, y * (1 + scale[b]) + shift[b]. x: n sequences of T tokens at x_stride; out likewise at
     * out_stride; mean, rstd (n * T) saved for the backward. out is an operand tensor when
     * out_type is UMD_OPND (the backward never reads it). */
    void (*layernorm_fwd)(umd_ctx *c, void *out, float *mean, float *rstd, const float *x,
                          const float *gamma, const float *beta, const float *mod, int mod_stride,
                          int n, int T, int w, long x_stride, long out_stride, int out_type);
    /* The backward of layernorm_fwd: dx (x_stride layout) = or += (dx_accumulate); dgamma, dbeta
     * (w) +=; dmod's (shift, scale) rows = (mod_stride layout; ignored when mod is NULL). dout
     * (out_stride layout) is a gradient tensor in the operand type with types UMD_GRAD_X (the dx
     * of the product that read out), else fp32 (UMD_F32). */
    void (*layernorm_bwd)(umd_ctx *c, float *dx, float *dgamma, float *dbeta, float *dmod,
                          const void *dout, const float *x, const float *mean, const float *rstd,
                          const float *gamma, const float *beta, const float *mod, int mod_stride,
                          int n, int T, int w, long x_stride, long out_stride, int dx_accumulate,
                          int types);
    /* out = x + gate[b] * y over (n, T, w); gate row b at gate + b * gate_stride. out may alias x.
     * y is a branch tensor in the operand type with y_type UMD_OPND_Y (else UMD_F32). */
    void (*gate_residual_fwd)(umd_ctx *c, float *out, const float *x, const void *y,
                              const float *gate, int gate_stride, int n, int T, int w, int y_type);
    /* dy = dout * gate[b]; dgate[b] = sum over tokens of dout * y (written, not accumulated). The
     * residual path's gradient is dout itself, which the caller keeps. types: y typed as in
     * gate_residual_fwd (UMD_OPND_Y); dy a gradient tensor in the operand type with UMD_GRAD
     * (the fp32 product rounded once; dgate sums the fp32 products either way). */
    void (*gate_residual_bwd)(umd_ctx *c, void *dy, float *dgate, const float *dout,
                              const void *y, const float *gate, int gate_stride, int n, int T,
                              int w, int types);

    /* The gated residual and the LayerNorm that reads it, in one pass over memory: xo = x +
     * gate[b] * y (as gate_residual_fwd), then out, mean, rstd = layernorm_fwd of xo, modulated
     * when mod is not NULL. Every token tensor packed (n, T, w); gate row b at gate + b *
     * gate_stride, mod row b at mod + b * mod_stride. The same bits as the two ops one after the
     * other. xo may alias x. types: out typed as in layernorm_fwd (UMD_OPND), y as in
     * gate_residual_fwd (UMD_OPND_Y). */
    void (*residual_layernorm_fwd)(umd_ctx *c, float *xo, void *out, float *mean, float *rstd,
                                   const float *x, const void *y, const float *gate,
                                   int gate_stride, const float *gamma, const float *beta,
                                   const float *mod, int mod_stride, int n, int T, int w,
                                   int types);

    /* ---- attention --------------------------------------------------------------------------------- */
    /* qkv (n, T, 3, heads, hd) -> out (n, T, heads, hd): softmax(q k^T / sqrt(hd)) v per sequence
     * and head, no mask. What is saved for the backward is lse (n, heads, T), each score row's
     * log-sum-exp, lse[i] = log sum_j exp(q_i k_j / sqrt(hd)), never the (T, T) probabilities: the
     * backward recomputes them as P_ij = exp(q_i k_j / sqrt(hd) - lse[i]). types: qkv is an
     * operand tensor with UMD_OPND (where attention_operand says so), out a branch tensor with
     * UMD_OPND_O (where branch_operand says so too): the fp32 result rounded once. */
    void (*attention_fwd)(umd_ctx *c, void *out, float *lse, const void *qkv, int n, int T,
                          int heads, int hd, int types);
    /* dqkv (n, T, 3, heads, hd) written from dout (n, T, heads, hd), given the forward's qkv, out
     * and lse. The softmax backward's row term rowsum(P * dP) equals the row dot of dout and out,
     * which is why out is passed (its stored values: rounded with UMD_OPND_O). qkv and out typed
     * by `types` as in attention_fwd; dqkv a gradient tensor in the operand type with UMD_GRAD
     * (the fp32 result rounded once), taken where qkv is an operand tensor (UMD_OPND); dout one
     * with UMD_GRAD_X (proj's dx), likewise. */
    void (*attention_bwd)(umd_ctx *c, void *dqkv, const void *dout, const void *qkv,
                          const void *out, const float *lse, int n, int T, int heads, int hd,
                          int types);
    /* 1 when attention_fwd and attention_bwd take qkv as an operand tensor (UMD_OPND) at head
     * width hd in this context, with the results of its fp32 values rounded to the operand type
     * (their products round q, k and v so); else 0, and qkv must be fp32. A model stores qkv,
     * the qkv Linear's output (UMD_OPND_Y), as an operand only where this says 1. */
    int (*attention_operand)(const umd_ctx *c, int hd);
    /* 1 when this context keeps branch tensors (see Conventions) in the operand type: the outputs
     * of proj and fc2 (linear_fwd's and mlp_fwd's UMD_OPND_Y, read by the gated residuals with
     * UMD_OPND_Y) and, at head widths where attention_operand is 1, attention's output
     * (UMD_OPND_O, then proj's x with UMD_OPND); else 0, and they are fp32. */
    int (*branch_operand)(const umd_ctx *c);
    /* 1 when this context keeps gradient tensors (see Conventions) in the operand type: the
     * gradients of the branch outputs (gate_residual_bwd's dy, then linear_bwd's and mlp_bwd's
     * dy, UMD_GRAD) and, where qkv is an operand tensor, of qkv (attention_bwd's dqkv, then the
     * qkv Linear's dy), and the gradients of the block's products' inputs (linear_bwd's and
     * mlp_bwd's dx, UMD_GRAD_X, read as dout by attention_bwd and layernorm_bwd); else 0, and
     * they are fp32. Asked only where branch_operand says 1. */
    int (*grad_operand)(const umd_ctx *c);

    /* ---- tokens ----------------------------------------------------------------------------------- */
    /* out (n, w) = table[idx[b]] ; backward dtable[idx[b]] += dout[b]. */
    void (*embed_rows_fwd)(umd_ctx *c, float *out, const float *table, const int32_t *idx, int n,
                           int w);
    void (*embed_rows_bwd)(umd_ctx *c, float *dtable, const float *dout, const int32_t *idx, int n,
                           int w);
    /* Encoder input xenc (n, ncls + keep, w): ncls cls tokens, then emb[b, order[b, j]] +
     * pos[order[b, j]] for j < keep. emb (n, L, w), order (n, L). */
    void (*gather_tokens_fwd)(umd_ctx *c, float *xenc, const float *emb, const float *pos,
                              const float *cls, const int32_t *order, int n, int L, int keep,
                              int ncls, int w);
    /* demb (n, L, w) written (zero at masked tokens), dpos (L, w) +=, dcls (ncls, w) +=. */
    void (*gather_tokens_bwd)(umd_ctx *c, float *demb, float *dpos, float *dcls, const float *dxenc,
                              const int32_t *slot, int n, int L, int keep, int ncls, int w);
    /* Decoder input xdec (n, 1 + L, w): token 0 = rep[b]; token 1 + l = (enc[b, ncls + slot[b, l]]
     * when visible, else mask) + pos[l]. enc (n, Tenc, w). */
    void (*decoder_input_fwd)(umd_ctx *c, float *xdec, const float *rep, const float *enc,
                              const float *mask, const float *pos, const int32_t *slot, int n,
                              int L, int Tenc, int ncls, int w);
    /* drep (n, w) written; denc's visible-token rows written (its cls rows untouched); dmask (w) +=;
     * dpos (L, w) +=. */
    void (*decoder_input_bwd)(umd_ctx *c, float *drep, float *denc, float *dmask, float *dpos,
                              const float *dxdec, const int32_t *slot, int n, int L, int Tenc,
                              int ncls, int w);
    /* out (n, w) = mean of tokens [0, k) of x (n, T, w); backward writes dx's tokens [0, k). */
    void (*token_mean_fwd)(umd_ctx *c, float *out, const float *x, int n, int T, int k, int w);
    void (*token_mean_bwd)(umd_ctx *c, float *dx, const float *dout, int n, int T, int k, int w);

    /* ---- losses ------------------------------------------------------------------------------------- */
    /* Squared error of one half of the head's prediction against a patch target over the selected
     * tokens: pred (n, L, pp, 2C) uses channels [half*C, half*C + C), target (n, L, pp, C), slot
     * (n, L) selects (UMD_SEL_*). *sum (backend memory) = the sum of squares (double, summed per
     * row, rows in order); dpred += grad_scale * 2 (pred - target) at the selected values. */
    void (*mse_masked)(umd_ctx *c, float *dpred, const float *pred, const float *target,
                       const int32_t *slot, int n, int L, int pp, int C, int half, int select,
                       float grad_scale, double *sum);

    /* ---- optimiser ------------------------------------------------------------------------------------ */
    /* *out (backend memory) = the sum of squares of x (double, fixed-order reduction). */
    void (*sumsq)(umd_ctx *c, double *out, const float *x, size_t n);
    /* AdamW (PyTorch's order): g = s * g with s the clip factor (1 without a clip); m, v updated;
     * p *= 1 - lr * wd (only where decay[i] != 0); p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) +
     * eps). a and sumsq are in backend memory; sumsq (the gradients' sum of squares, from sumsq)
     * is read only when a->max_norm > 0. */
    void (*adamw)(umd_ctx *c, float *p, const float *g, float *m, float *v, const uint8_t *decay,
                  size_t n, const umd_adamw_args *a, const double *sumsq);
    /* ema = decay * ema + (1 - decay) * p */
    void (*ema)(umd_ctx *c, float *ema, const float *p, size_t n, float decay);

    /* ---- errors ------------------------------------------------------------------------------------- */
    /* Waits for the context's queued work; 0, or the first failure of an op since ctx_new (a
     * device fault, out of device memory: a negative UMDQ_E* code and a message naming the op).
     * After a failure the context's ops do nothing. NULL on a backend whose ops cannot fail (cpu). */
    int (*status)(umd_ctx *c, char *err, size_t errlen);

    /* ---- recording (NULL on a backend that only runs ops as they are called: cpu) ------------------
     * Between record_begin and record_end the context's ops are recorded, not run (a CUDA graph);
     * replay runs the recording. A replay repeats each recorded call with the same pointers and
     * by-value arguments, so whatever changes from one replay to the next must be in backend
     * memory (a batch, the step's draws, the adamw args). Nothing recorded may wait for the
     * device (download, status) or allocate; ops run while recording return no results. One
     * recording per context: record_begin drops the previous one. record_end fails when the
     * recording does (an op the device cannot record): nothing was run, the recording is
     * dropped, and the context works as before. 0 or a negative UMDQ_E* code with a message. */
    int (*record_begin)(umd_ctx *c, char *err, size_t errlen);
    int (*record_end)(umd_ctx *c, char *err, size_t errlen);
    int (*replay)(umd_ctx *c, char *err, size_t errlen);
} umd_ops;

/* The clip factor of an AdamW update (umd_adamw_args.max_norm), one definition for every backend
 * (it compiles as C and as CUDA): PyTorch's clip_coef = max_norm / (total_norm + 1e-6) clamped
 * to 1, in fp32; 1 without a clip, or when the norm is not a number (where PyTorch's would be
 * NaN: the gradients are not finite, and so are the parameters after the update either way). */
#ifdef __CUDACC__
#define UMD_HOSTDEV static inline __host__ __device__
#else
#define UMD_HOSTDEV static inline
#endif
UMD_HOSTDEV float umd_clip_factor(float max_norm, double sumsq) {
    if (!(max_norm > 0.0f)) return 1.0f;
    float coef = max_norm / ((float)sqrt(sumsq) + 1e-6f);
    return coef < 1.0f ? coef : 1.0f;
}
/* 1 - lr * wd, rounded once (a fused multiply-add) on either side. */
UMD_HOSTDEV float umd_adamw_shrink(float lr, float weight_decay) {
#ifdef __CUDA_ARCH__
    return __fmaf_rn(-lr, weight_decay, 1.0f);
#else
    return fmaf(-lr, weight_decay, 1.0f);
#endif
}

/* The CPU backend (C, OpenMP across rows and heads, OpenBLAS GEMMs). Never NULL. Its operand
 * tensors are fp32. */
const umd_ops *umd_ops_cpu(void);
/* The same with bf16 operand tensors (the products still run in fp32, on the operands widened
 * back): the model's layout of a bf16 device context, checkable on any machine. Never NULL. */
const umd_ops *umd_ops_cpu_bf16(void);

#endif
