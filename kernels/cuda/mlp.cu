/* mlp.cu: the transformer MLP, fc1 -> GELU-tanh -> fc2 (mlp_fwd, mlp_bwd; shapes in ops.h:
 * x (M, w), W1 (F, w), h (M, F), W2 (w, F), y (M, w)).
 *
 * fp32 and tf32 contexts, and bf16 ones whose operands do not fit the bf16 stages whole, run the
 * separate ops (linear.cu's Linears, elementwise.cu's GELU) with gelu(h) in the caller's tmp; the
 * backward's tmp = dy W2 is a cuda_gemm_rm.
 *
 * bf16 contexts where an (M, max(F, w)) operand and the (F, w) weights fit the stages whole
 * (cuda_bf16_whole: every model shape) never write gelu(h) in fp32; it lives only as the bf16
 * operand of the GEMMs that read it, written by the kernel that computes it:
 *   forward   h = fc1(x) (linear_fwd: x in bf_a, W1 in bf_w); one kernel bf16(gelu(h)) -> bf_b;
 *             W2 -> bf_w; y = bf_b W2^T + b2 on cuBLASLt with the bias epilogue
 *   backward, stage by stage (each line's GEMMs read what the stages hold after it):
 *                                                         bf_a   bf_b         bf_w
 *     dy -> bf16, db2 += colsum dy (one pass)             dy     -            -
 *     bf16(gelu(h))                                       dy     gelu(h)      -
 *     dW2 += dy^T gelu(h)                     (beta 1)
 *     W2 -> bf16                                          dy     gelu(h)      W2
 *     tmp = dy W2, fp32                       (beta 0)
 *     one kernel: bf16(tmp * gelu'(h)) -> bf_b,           dy     dh           W2
 *       db1's column sums of the fp32 dh
 *     x -> bf16, W1 -> bf16                               x      dh           W1
 *     dx = dh W1                              (beta 0)
 *     dW1 += dh^T x                           (beta 1)
 *   Every stage is rewritten only after the GEMMs that read it were queued: one stream orders
 *   them. dy's fp32 copy is last read by the first line (or the gemv of db2), so dx may alias it.
 *
 * Parallelisation: GELU into the stage is linear.cu's flat conversion (cuda_gelu_to_bf16: 4
 * elements a thread where aligned, grid-stride). The GELU backward with db1 is linear.cu's
 * column-sum conversion (cuda_dgelu_colsum_bf16: chunks of rows, partials added in order,
 * deterministic). When the partials cannot hold the chunks, dh goes
 * through tmp in fp32 and db1 is a gemv against the workspace's ones.
 * Numerics: GELU and its derivative are elementwise.cu's expressions (cuda_gelu_tanh*); dh is
 * summed in fp32 before its rounding to bf16, and the GEMMs accumulate in fp32.
 *
 * Operand tensors (ops.h): where x is one and the context's operands are bf16 (bf16 math and
 * UMDQ_CUDA_BF16_OPERANDS=1), x is already bf16, rounded as its conversion would have: fc1 reads
 * it as its A operand (linear_fwd) and dW1 = dh^T x reads it in place of bf_a (the "x -> bf16"
 * above is skipped), the same GEMMs on the same bits. The separate ops take it on to linear.cu.
 *
 * The hidden state in bf16 (UMD_OPND_H, where hidden_operand says 1: a context with bf16
 * operands made with UMDQ_CUDA_BF16_MLP=1 too): h is stored as bf16 (half its bytes, kept for
 * the backward), as bf16 autocast keeps fc1's output. Not an operand tensor: GELU and its
 * derivative read h too, so the results are those of h rounded, not the default context's.
 *   forward   fc1 writes h bf16 (linear_fwd with UMD_OPND_Y: cuBLASLt's bf16 D, the fp32 sum with
 *             b1 rounded once, the fp32 plan's algorithm: h is the default context's h rounded);
 *             the GELU kernel into bf_b reads it widened (linear.cu's src_gelu16)
 *   backward  bf16(gelu(h)) likewise; the dgelu + db1 pass reads it widened (src_dgelu16), and
 *             so does the GELU backward through tmp where the partials do not hold the chunks
 *             or there is no db1 (cuda_dgelu_bf16h, gelu_bwd's expression)
 * Every one of them computes the fp32 expression on the widened value, so the backward is, bit
 * for bit, the default context's on an fp32 h holding those values (test_cuda_ops). train.recompute
 * "partial" refills h with the same linear_fwd (UMD_OPND | UMD_OPND_Y): the same bits. The
 * separate ops read h in fp32: where the stages do not hold the operands whole, a bf16 h fails
 * the context, naming the op and the shapes. Without UMD_OPND_H, or in any other context, h is
 * fp32 as above.
 *
 * GELU in cuBLASLt's epilogues (gelu_epi: a context with a bf16 h made with
 * UMDQ_CUDA_GELU_EPILOGUE=1 too; linear.cu's cuda_lt_gelu_fc1, cuda_lt_dgelu):
 *   forward   fc1 is one GEMM with GELU_AUX_BIAS: h (its auxiliary output) = the fp32 sum with b1
 *             rounded once, and bf_b = bf16(gelu(that fp32 sum)); the GELU pass into bf_b is gone
 *             (b1 in fp32, or rounded to bf16 first where cuBLASLt takes only a bias of D's type)
 *   backward  bf_b <- gelu(h) and dW2 as above; then one GEMM dy W2 with DGELU(_BGRAD) writes bf_b
 *             = bf16((dy W2) * gelu'(h)) and db1's increment (cuBLASLt's row sums, into the
 *             partials, then added into db1): no fp32 tmp written and read again
 * cuBLASLt's GELU is its own (its tanh form, on the fp32 sum in the forward, where the backward's
 * bf16(gelu(h)) for dW2 reads h rounded), and db1 is summed in its order: results within bf16
 * tolerance of the staging passes' (test_cuda_ops), deterministic for a plan. Where cuBLASLt has
 * no plan (F not a multiple of 8, no b1 in the forward, or none offered), or in the backward dy or
 * h is not 256-byte aligned as the plan assumes (a bf16 dy is the caller's tensor; the model's
 * are aligned), the MLP takes the staging passes above, and counts it (the profile report).
 * train.recompute refills h with linear_fwd and UMD_OPND_H, which takes fc1's plan: the same h.
 * With both plans at a shape (asked at set-up, before the workspace is set: mlp_scratch, which
 * makes them) neither pass writes tmp, so mlp_scratch answers 0 there and the model lays out no
 * (tokens, F) scratch (on B/4 at batch 256, 0.75 GiB); given tmp NULL where a pass needs it, the
 * MLP fails the context, naming the op and the shapes: before it writes anything, but for fc2's
 * bf16 y with no fp32 room (fc2_y_bf16, after fc1; mlp_scratch asks that room of bf_a before it
 * answers 0).
 *
 * dy W2 in bf16 (bf16_dh: UMDQ_CUDA_BF16_DH, on a bf16 h, where the GELU epilogues are off or
 * have no plan): the product dy W2 is written by its GEMM in bf16 into bf_b (gelu(h) there was
 * read by dW2's GEMM, queued before), and one pass turns it in place into dh = bf16(bf_b
 * gelu'(h)) and sums db1: as bf16 autocast rounds the gradient of fc2's input, within bf16
 * tolerance of the staging passes (test_cuda_ops), and no fp32 (M, F) tmp, so mlp_scratch
 * answers 0 there too.
 *
 * The output y in bf16 (UMD_OPND_Y in a context with bf16 operands: fc2's output is a branch
 * tensor, kept so where branch_operand says 1, read by gate_residual_fwd and its backward):
 *   stages whole  fc2 writes y on cuBLASLt as linear_fwd writes a bf16 y: a bf16 D with the fp32
 *                 bias epilogue, the fp32 sum with b2 rounded once, to nearest even, the fp32
 *                 plan's algorithm where cuBLASLt takes it for the bf16 output, so y is the fp32
 *                 y rounded; where cuBLASLt writes no bf16 D with an fp32 bias (or
 *                 UMDQ_CUDA_LT_BF16_Y=0), the fp32 y as above (fc2_fp32) into tmp (F >= w) or the
 *                 free bf_a, then rounded into y: the same bits, one pass more (counted with
 *                 linear_fwd's in the profile report). The context fails, naming the op and the
 *                 shapes, where neither holds the fp32 rows.
 *   separate ops  fc2 is linear_fwd with UMD_OPND_Y (which fails the context where it cannot
 *                 write one).
 * Without the flag, or in any other context, y is fp32 as above: the same calls as before.
 *
 * The gradient dy in bf16 (UMD_GRAD where grad_operand says 1: UMDQ_CUDA_BF16_GRAD=1, with bf16
 * branch tensors; cuda_grad_bf16): y is a branch tensor, so its gradient is kept as bf16 autocast
 * keeps it, written rounded once by gate_residual_bwd. Wherever bf_a held the staged dy, the
 * GEMMs read dy itself: dW2 = dy^T gelu(h), and dy W2 in each of its forms (into the fp32 tmp,
 * in bf16 with bf16_dh, with the GELU epilogue). The table's first line becomes db2 += the column
 * sums of dy's widened values, one pass that reads dy (M w 2 bytes) and writes nothing else, in
 * the chunks and order of the fused conversion: the bits of an fp32 dy holding those values,
 * without the conversion pass (M w 4 bytes read and M w 2 written fewer) and in half of dy's
 * memory. dx may alias dy still: dx's GEMM writes dx over the bytes the bf16 dy held, queued
 * after every read of dy on the one stream. The separate ops read dy in fp32, and a db2 whose
 * chunks the partials cannot hold has no other pass: there a bf16 dy fails the context, naming
 * the op and the shapes, before anything is written.
 * dx is one too with UMD_GRAD_X in such a context (the gradient of the MLP's input, norm2's dout):
 * the last line's dx = dh W1 is the GEMM with a bf16 C (cuda_gemm_bf16_to_bf16, as linear_bwd's
 * bf16 dx: the fp32 sums rounded once, within a bf16 step of the fp32 dx rounded where cuBLAS
 * takes another algorithm for it), M w 2 bytes written in place of 4; over a bf16 dy it aliases,
 * byte for byte. The separate ops write dx in fp32: there a bf16 dx fails the context likewise.
 *
 * One pass over h (mlp_one_pass: UMDQ_CUDA_MLP_ONE_PASS, on by default; it acts where dy is a bf16
 * gradient tensor, h is bf16 and dy W2 is bf16, bf16_dh, the GELU epilogues off, and db1's sums
 * fit the partials). With a bf16 dy, bf_a no longer holds dy, so the backward's stages become:
 *                                                         bf_a   bf_b         bf_w
 *     db2 += colsum dy (one pass, nothing written)        -      -            -
 *     W2 -> bf16                                          -      -            W2
 *     bf_a = bf16(dy W2)                      (beta 0)    dy W2  -            W2
 *     one pass over h and bf_a: bf_b = bf16(gelu(h)),     dh     gelu(h)      W2
 *       bf_a = dh = bf16(bf_a gelu'(h)) in place,
 *       db1's column sums of the fp32 dh
 *     dW2 += dy^T gelu(h)                     (beta 1)
 *     x -> bf16 (into bf_b), W1 -> bf16                   dh     x            W1
 *     dx = dh W1, dW1 += dh^T x
 * where the two passes (the tables above) read h twice: once for bf16(gelu(h)) and once for dh.
 * h's (M, F) 2 bytes a value are read once fewer and one launch goes. The bits are the two
 * passes': each value is the same GELU expression on the same widened h (linear.cu's
 * src_dgelu16g_gelu: src_gelu16's gelu(h) and src_dgelu16g's dh), rounded to nearest even as
 * both round; db1 is summed in the same chunks, layout and order (the column-sum kernels with
 * their store, the stages equally aligned); and every GEMM is the same call on the same operand
 * bits, dy W2 into bf_a where it went into bf_b (test_cuda_ops: the five gradients against the
 * two passes'). UMDQ_CUDA_MLP_ONE_PASS=0 keeps the two passes (their tests). */
#include <stdio.h>
#include "cuda_internal.h"

extern "C" int cuda_hidden_operand(const umd_ctx *c) { return c->hidden_bf16; }

/* 1 when h is bf16 for this call: the context keeps it so and the caller says it is. */
static int hidden_bf16(const umd_ctx *c, int types) {
    return c->hidden_bf16 && (types & UMD_OPND_H) != 0;
}

/* Floats of tmp that mlp_fwd and mlp_bwd need (ops.h's mlp_scratch). The separate ops keep
 * gelu(h) there and the staging passes dy W2, so M F, but for an MLP whose passes both take GELU
 * in cuBLASLt's epilogues: h bf16 and UMDQ_CUDA_GELU_EPILOGUE=1, the operands whole in the bf16
 * stages the limits give (workspace_bytes), fc1's bias in the partials, and both plans made here
 * (the calls find them again: a plan is kept for the context's life). Its fc2 then writes a bf16
 * y on cuBLASLt or through bf_a's fp32 room (fc2_y_bf16), asked to hold it too. The MLP is the
 * model's, with biases; called without them, or on a shape not asked about, it fails the context
 * rather than run without scratch (scratch_missing). */
extern "C" size_t cuda_mlp_scratch(umd_ctx *c, int M, int F, int w, int types) {
    if (M <= 0 || F <= 0 || w <= 0) return 0;
    const size_t all = (size_t)M * F;
    if (c->failed || !hidden_bf16(c, types) || !(c->gelu_epi || c->bf16_dh)) return all;
    size_t stage, wl, part;
    cuda_ws_sizes(c, &stage, &wl, &part);
    const size_t wide = (size_t)(F > w ? F : w);
    const int whole = (size_t)F * w <= wl && stage / wide >= (size_t)M;
    const int y_room = (size_t)M * w * sizeof(float) <= stage * sizeof(__nv_bfloat16);
    if (!whole || part < (size_t)F || !y_room) return all;
    /* the GELU backward in bf16 (mlp_bwd_dh16) needs none; the epilogues need their plans */
    return c->bf16_dh || cuda_lt_gelu_planned(c, M, F, w) ? 0 : all;
}

/* The MLP met a pass that needs tmp (M, F) and was given none (mlp_scratch said it would not):
 * the context fails, naming the op and the shapes. 1 when it did. */
static int scratch_missing(umd_ctx *c, const char *op, const float *tmp, int M, int F, int w) {
    if (tmp) return 0;
    char what[240];
    snprintf(what, sizeof what,
             "the MLP (%d tokens, %d -> %d) needs its scratch tmp (%d, %d) here (no GELU epilogue "
             "plan for this call), and none was given",
             M, w, F, M, F);
    cuda_fail(c, op, what);
    return 1;
}

/* A bf16 h met the separate ops (the operands do not fit the bf16 stages whole), which read and
 * write h in fp32: the context fails rather than read bf16 as fp32. */
static void hidden_unfit(umd_ctx *c, const char *op, int M, int F, int w) {
    char what[320];
    snprintf(what, sizeof what,
             "h (%d, %d) is bf16 (UMDQ_CUDA_BF16_MLP), and (%d, %d) operands with weights (%d, %d) "
             "do not fit the bf16 stages whole (%zu values, %zu of weights): the separate ops "
             "read h in fp32",
             M, F, M, F > w ? F : w, F, w, c->bf_a ? c->bf_stage : (size_t)0,
             c->bf_w ? c->bf_w_len : (size_t)0);
    cuda_fail(c, op, what);
}

/* A bf16 dy (UMD_GRAD) or dx (UMD_GRAD_X; gbf 0) met a pass that cannot take one: the separate
 * ops (the operands do not fit the bf16 stages whole), which read dy and write dx in fp32, or
 * db2's column sums beyond the workspace's partials (the only pass that sums a bf16 dy). The
 * context fails rather than take bf16 for fp32, before anything is written. */
static void grad_unfit(umd_ctx *c, int gbf, int M, int F, int w) {
    char what[320];
    if (!cuda_bf16_whole(c, M, F, w))
        snprintf(what, sizeof what,
                 "%s (%d, %d) is a bf16 gradient tensor (%sUMDQ_CUDA_BF16_GRAD), and (%d, %d) "
                 "operands with weights (%d, %d) do not fit the bf16 stages whole (%zu values, %zu "
                 "of weights): the separate ops %s in fp32",
                 gbf ? "dy" : "dx", M, w, gbf ? "" : "UMD_GRAD_X, ", M, F > w ? F : w, F, w,
                 c->bf_a ? c->bf_stage : (size_t)0, c->bf_w ? c->bf_w_len : (size_t)0,
                 gbf ? "read dy" : "write dx");
    else
        snprintf(what, sizeof what,
                 "dy (%d, %d) is a bf16 gradient tensor (UMDQ_CUDA_BF16_GRAD), and the workspace's "
                 "partials (%zu floats) cannot hold the chunks of its column sums (db2): no other "
                 "pass sums bf16",
                 M, w, c->partials_floats);
    cuda_fail(c, "mlp_bwd", what);
}

/* fc2 from the stages (gelu(h) in bf_b, W2 in bf_w): y (M, w) fp32 = bf_b W2^T + b2 on cuBLASLt
 * with the bias epilogue; where it has no plan, the bias rows, then the product onto them. */
static void fc2_fp32(umd_ctx *c, float *y, const float *b2, int M, int F, int w) {
    if (cuda_lt_linear(c, y, c->bf_b, c->bf_w, b2, M, w, F, 1, 0) == 0) return;
    if (b2) {
        cuda_bias_rows(c, "mlp_fwd", y, b2, M, w);
        if (c->failed) return;
    }
    cuda_gemm_ex(c, "mlp_fwd", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 0, 1, M, w, F, 1.0f, c->bf_b, F,
                 c->bf_w, F, b2 ? 1.0f : 0.0f, y, w);
}

/* fc2 into a bf16 y: cuBLASLt's bf16 D (the fp32 sum rounded once), else fc2_fp32's rows into
 * fp32 room, tmp where it holds them (F >= w) or bf_a (x was read by fc1's GEMM, queued before),
 * rounded into y; the context fails where neither holds them. */
static void fc2_y_bf16(umd_ctx *c, void *y, float *tmp, const float *b2, int M, int F, int w) {
    if (!c->lt_bf16_y_off && cuda_lt_linear(c, y, c->bf_b, c->bf_w, b2, M, w, F, 1, 1) == 0)
        return;
    const size_t n = (size_t)M * w;
    float *f = tmp && F >= w                                         ? tmp
               : n * sizeof(float) <= c->bf_stage * sizeof(*c->bf_a) ? (float *)(void *)c->bf_a
                                                                    : NULL;
    if (!f) {
        char what[300];
        snprintf(what, sizeof what,
                 "y (%d, %d) is a bf16 branch tensor, cuBLASLt writes no bf16 with an fp32 bias "
                 "here, and its fp32 rows fit neither tmp (%d, %d) nor the bf16 stage (%zu values)",
                 M, w, M, F, c->bf_stage);
        cuda_fail(c, "mlp_fwd", what);
        return;
    }
    fc2_fp32(c, f, b2, M, F, w);
    cuda_to_bf16(c, "mlp_fwd", (__nv_bfloat16 *)y, f, M, w, w);
    c->y_via_fp32++;
}

extern "C" void cuda_mlp_fwd(umd_ctx *c, void *y, void *h, float *tmp, const void *x,
                             const float *W1, const float *b1, const float *W2, const float *b2,
                             int M, int F, int w, int types) {
    CUDA_OP(c);
    if (M <= 0 || F <= 0 || w <= 0) return;
    const int x_type = types & UMD_OPND, hbf = hidden_bf16(c, types);
    if (!cuda_bf16_whole(c, M, F, w)) {
        if (hbf) {
            hidden_unfit(c, "mlp_fwd", M, F, w);
            return;
        }
        if (scratch_missing(c, "mlp_fwd", tmp, M, F, w)) return;
        cuda_linear_fwd(c, h, x, W1, b1, M, F, w, x_type);
        cuda_gelu_fwd(c, tmp, (const float *)h, (size_t)M * F);
        cuda_linear_fwd(c, y, tmp, W2, b2, M, w, F, types & UMD_OPND_Y);
        return;
    }
    /* h = fc1(x) (x in bf_a, or the bf16 operand itself; W1 in bf_w; h written bf16 where it is
     * kept so); bf_b <- bf16(gelu(h)). With GELU in the epilogue, both in fc1's GEMM. */
    if (!hbf || !c->gelu_epi ||
        cuda_lt_gelu_fc1(c, "mlp_fwd", h, x, cuda_opnd_bf16(c, x_type), W1, b1, M, F, w) != 0) {
        cuda_linear_fwd(c, h, x, W1, b1, M, F, w, x_type | (hbf ? UMD_OPND_Y : 0));
        cuda_gelu_to_bf16(c, "mlp_fwd", c->bf_b, h, hbf, (size_t)M * F);
    }
    if (c->failed) return;
    /* bf_w: W2 (w, F) (W1 was read by fc1's GEMM) */
    cuda_to_bf16(c, "mlp_fwd", c->bf_w, W2, w, F, F);
    if (cuda_flag_bf16(c, types, UMD_OPND_Y)) fc2_y_bf16(c, y, tmp, b2, M, F, w);
    else fc2_fp32(c, (float *)y, b2, M, F, w);
}

/* The GELU backward with dy W2 in bf16 (bf16_dh, h bf16, operands whole): bf_b <- bf16(dy W2)
 * from dy (bf16: bf_a, or the gradient tensor itself) and W2 in bf_w (gelu(h) in bf_b was read by
 * dW2's GEMM, queued before), then in place bf_b <- dh = bf16(bf_b gelu'(h)), db1 += its column
 * sums in the same pass. 0, or -1 (nothing done) where the partials cannot hold db1's chunks. */
static int mlp_bwd_dh16(umd_ctx *c, const __nv_bfloat16 *dy, float *db1, const void *h, int M,
                        int F, int w) {
    if (db1 && !cuda_colsum_fits(c, M, F)) return -1;
    cuda_gemm_bf16_to_bf16(c, "mlp_bwd", 0, 0, M, F, w, dy, w, c->bf_w, F, c->bf_b, F);
    return cuda_dgelu16_bf16(c, c->bf_b, db1, c->bf_b, (const __nv_bfloat16 *)h, M, F);
}

/* 1 when the MLP backward takes the one pass over h (mlp_one_pass; the stages whole): dy a bf16
 * gradient tensor (bf_a then free for dy W2), h bf16, dy W2 in bf16 (bf16_dh, the GELU
 * epilogues off: their GEMM would compute dh), and db1's column sums within the partials (where
 * they are not, mlp_bwd_dh16 declines too and dh goes through tmp). */
static int one_pass_fits(const umd_ctx *c, int gbf, int hbf, const float *db1, int M, int F) {
    return c->mlp_one_pass && gbf && hbf && c->bf16_dh && !c->gelu_epi &&
           (!db1 || cuda_colsum_fits(c, M, F));
}

/* The staging passes of the GELU backward (bf16 contexts, operands whole): tmp (M, F) = dy W2 from
 * dy (bf16: bf_a, or the gradient tensor itself) and W2 in bf_w; bf_b <- dh = tmp * gelu'(h)
 * (gelu(h) was read by dW2's GEMM), db1 += its column sums in the same pass; without db1, or when
 * the partials are too small, dh in fp32 in tmp, then staged (a bf16 h read widened there too). */
static void mlp_bwd_dh(umd_ctx *c, const __nv_bfloat16 *dy, float *db1, const void *h, int hbf,
                       float *tmp, int M, int F, int w) {
    const size_t n = (size_t)M * F;
    if (scratch_missing(c, "mlp_bwd", tmp, M, F, w)) return;
    cuda_gemm_ex(c, "mlp_bwd", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 0, 0, M, F, w, 1.0f, dy, w,
                 c->bf_w, F, 0.0f, tmp, F);
    if (!db1 || cuda_dgelu_colsum_bf16(c, c->bf_b, db1, tmp, h, hbf, M, F) != 0) {
        if (hbf) cuda_dgelu_bf16h(c, "mlp_bwd", tmp, tmp, (const __nv_bfloat16 *)h, n);
        else cuda_gelu_bwd(c, tmp, tmp, (const float *)h, n);
        cuda_to_bf16(c, "mlp_bwd", c->bf_b, tmp, M, F, F);
        if (db1) cuda_colsum_gemv(c, "mlp_bwd", db1, tmp, M, F);
    }
}

extern "C" void cuda_mlp_bwd(umd_ctx *c, void *dxv, float *dW1, float *db1, float *dW2, float *db2,
                             const void *dyv, const void *x, const void *h, const float *W1,
                             const float *W2, float *tmp, int M, int F, int w, int types) {
    CUDA_OP(c);
    if (M <= 0 || F <= 0 || w <= 0) return;
    const float *dy = (const float *)dyv; /* read only where dy is fp32 (!gbf) */
    const size_t n = (size_t)M * F;
    const int x_type = types & UMD_OPND, hbf = hidden_bf16(c, types);
    const int gbf = cuda_grad_bf16(c, types), dxbf = dxv && cuda_gradx_bf16(c, types);
    float *dx = dxbf ? NULL : (float *)dxv; /* fp32 dx, written only where it is (!dxbf) */
    if (!cuda_bf16_whole(c, M, F, w)) {
        if (hbf) {
            hidden_unfit(c, "mlp_bwd", M, F, w);
            return;
        }
        if (gbf || dxbf) {
            grad_unfit(c, gbf, M, F, w);
            return;
        }
        /* gelu(h) in tmp for fc2's weight gradient, then tmp = dy W2 and GELU's backward in place */
        if (scratch_missing(c, "mlp_bwd", tmp, M, F, w)) return;
        const float *hf = (const float *)h;
        cuda_gelu_fwd(c, tmp, hf, n);
        cuda_linear_bwd(c, NULL, dW2, db2, dy, tmp, W2, M, w, F, 0, UMD_F32);
        cuda_gemm_rm(c, "mlp_bwd", 0, 0, M, F, w, 1.0f, dy, w, W2, F, 0.0f, tmp, F);
        cuda_gelu_bwd(c, tmp, tmp, hf, n);
        cuda_linear_bwd(c, dx, dW1, db1, tmp, x, W1, M, F, w, 0, x_type);
        return;
    }
    /* the bf16 dy (M, w) the GEMMs read: a bf16 gradient tensor itself, else bf_a (below) */
    const __nv_bfloat16 *dyb = gbf ? (const __nv_bfloat16 *)dyv : c->bf_a;
    /* without tmp, only the GELU epilogue's backward (its plan, and this dy and h aligned for
     * it) or the one in bf16 runs: said before anything is written */
    if (!tmp && !(hbf && c->gelu_epi && cuda_lt_dgelu_takes(c, dyb, h, db1 != NULL, M, F, w)) &&
        !(hbf && c->bf16_dh && (!db1 || cuda_colsum_fits(c, M, F))) &&
        scratch_missing(c, "mlp_bwd", tmp, M, F, w))
        return;
    /* a bf16 dy's column sums have one pass only: said before anything is written too */
    if (gbf && db2 && !cuda_colsum_fits(c, M, w)) {
        grad_unfit(c, gbf, M, F, w);
        return;
    }
    /* a bf16 gradient tensor: db2 += its column sums (one pass that writes nothing else); else
     * bf_a <- dy, with db2 in the same pass where the partials allow */
    if (gbf) {
        if (db2) cuda_colsum_bf16(c, "mlp_bwd", db2, dyb, M, w);
    } else if (!db2 || cuda_bias_colsum_bf16(c, c->bf_a, db2, dy, M, w) != 0) {
        cuda_to_bf16(c, "mlp_bwd", c->bf_a, dy, M, w, w);
        if (db2) cuda_colsum_gemv(c, "mlp_bwd", db2, dy, M, w);
    }
    /* dh (M, F) bf16 ends up in one stage, the other free for x */
    __nv_bfloat16 *dh = c->bf_b, *xstage = c->bf_a;
    if (one_pass_fits(c, gbf, hbf, db1, M, F)) {
        /* bf_w <- W2 (w, F); bf_a <- bf16(dy W2) (bf_a is free: dy is the gradient tensor itself);
         * one pass over h: bf_b <- bf16(gelu(h)), bf_a <- dh = bf16(bf_a gelu'(h)) in place, db1
         * += its column sums; dW2 (w, F) += dy^T gelu(h) */
        cuda_to_bf16(c, "mlp_bwd", c->bf_w, W2, w, F, F);
        cuda_gemm_bf16_to_bf16(c, "mlp_bwd", 0, 0, M, F, w, dyb, w, c->bf_w, F, c->bf_a, F);
        cuda_gelu_dgelu16_bf16(c, c->bf_b, c->bf_a, db1, c->bf_a, (const __nv_bfloat16 *)h, M, F);
        if (c->failed) return;
        cuda_gemm_ex(c, "mlp_bwd", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 1, 0, w, F, M, 1.0f, dyb, w,
                     c->bf_b, F, 1.0f, dW2, F);
        dh = c->bf_a, xstage = c->bf_b;
    } else {
        /* bf_b <- gelu(h) (M, F); dW2 (w, F) += dy^T gelu(h) */
        cuda_gelu_to_bf16(c, "mlp_bwd", c->bf_b, h, hbf, n);
        if (c->failed) return;
        cuda_gemm_ex(c, "mlp_bwd", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 1, 0, w, F, M, 1.0f, dyb, w,
                     c->bf_b, F, 1.0f, dW2, F);
        /* bf_w <- W2 (w, F); with GELU in the epilogue, bf_b <- dh = bf16((dy W2) * gelu'(h)) and
         * db1 += its column sums in that GEMM */
        cuda_to_bf16(c, "mlp_bwd", c->bf_w, W2, w, F, F);
        if (hbf && c->gelu_epi && cuda_lt_dgelu(c, "mlp_bwd", dyb, h, db1, M, F, w) == 0) {
            if (c->failed) return;
        } else if (!(hbf && c->bf16_dh && mlp_bwd_dh16(c, dyb, db1, h, M, F, w) == 0)) {
            mlp_bwd_dh(c, dyb, db1, h, hbf, tmp, M, F, w);
        }
    }
    /* xstage <- x (M, w): bf_a (dy was last read by tmp's GEMM), or in the one pass bf_b (gelu(h)
     * was read by dW2's GEMM, queued before); bf_w <- W1 (F, w) (W2 was read likewise); a bf16
     * operand x is read where it is. dx may alias dy, fp32 or bf16 either: every read of dy is
     * queued before dx's GEMM on the one stream. A bf16 dx (UMD_GRAD_X) is that GEMM's bf16 C,
     * the fp32 sums rounded once */
    const void *xs = x;
    if (!cuda_opnd_bf16(c, x_type)) {
        cuda_to_bf16(c, "mlp_bwd", xstage, (const float *)x, M, w, w);
        xs = xstage;
    }
    if (dxv) {
        cuda_to_bf16(c, "mlp_bwd", c->bf_w, W1, F, w, w);
        if (dxbf)
            cuda_gemm_bf16_to_bf16(c, "mlp_bwd", 0, 0, M, w, F, dh, F, c->bf_w, w,
                                   (__nv_bfloat16 *)dxv, w);
        else
            cuda_gemm_ex(c, "mlp_bwd", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 0, 0, M, w, F, 1.0f, dh, F,
                         c->bf_w, w, 0.0f, dx, w);
    }
    cuda_gemm_ex(c, "mlp_bwd", CUDA_R_16BF, CUBLAS_COMPUTE_32F, 1, 0, F, w, M, 1.0f, dh, F, xs, w,
                 1.0f, dW1, w);
}
