/* objective.c: one UMD training step (UMD.md "One training step"): noising of the noisy rows,
 * the conditioning, the encoder over visible tokens only (the clean rows' short sequences and the
 * noisy rows' longer ones side by side in one token buffer), the decoder over all rows, the head,
 * the two losses, and the backward of all of it. Each replica (model.h) runs this on its rows.
 *
 *   clean rows [0, n_clean):  input x0, t = 0, keep_clean tokens;  L0 = MSE(x0_pred, x0 | masked)
 *   noisy rows [n_clean, B):  input x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, t = idx + 1,
 *                             keep_noisy tokens;
 *                             L1 = (MSE(eps_pred, eps | visible) + MSE(x0_pred, x0 | masked)) / 2
 *   L = (1 - n_clean/B) L1 + (n_clean/B) L0
 * A mask ratio of 0 (every token visible) makes both MSEs of that kind of row run over all pixels
 * (UMD.md); the same rule applies to the clean rows' mask_ratio_t0 = 0. The MSEs are means over
 * every selected pixel-channel of every row of the kind.
 *
 * With labels the conditioning is cond = SiLU(t_emb + y_emb) with y_emb from the label table
 * through its own Linear-SiLU-Linear; the clean rows use the null class (unconditional, as in
 * UMD.md's fine-tuning), the noisy rows their label with label dropout to the null class.
 * Every tensor is touched through the ops only.
 *
 * Memory per block (what the backward reads): the input, both LayerNorm outputs after modulation
 * and their statistics, qkv, the attention's row log-sum-exps (heads floats per token), the
 * attention and projection outputs, the residual in between, fc1's output before GELU, and fc2's
 * output: about 10 w + F floats per token. Only attention's probabilities (from lse) and GELU's
 * output (from fc1's, inside the MLP op) are recomputed; the backward's temporaries are shared by
 * all blocks, and the MLP's (tokens, F) scratch tH serves its forward and backward alike (none
 * where the context's MLP needs none: mlp_scratch).
 * With train.recompute "full" a block keeps only its input (w floats per token) and its
 * modulation: the rest goes to one scratch set, and the backward runs each block's forward again
 * before its backward (the last decoder block's is still there), for about a third more
 * arithmetic per step. With "partial" it also keeps qkv, the lse, the attention output and the
 * outputs of proj and fc2 (6 w floats per token), and the backward runs only the LayerNorms, the
 * residual and fc1 again: about a ninth more arithmetic, for 7 w floats per token less. With
 * "norms" it keeps fc1's output h too, and the backward runs only the two LayerNorms and the
 * residual again (three passes over w floats a token, no product), for 3 w floats per token less
 * (their operand bytes with bf16 operands).
 *
 * The LayerNorm outputs that only matrix products read (each block's m1 and m2, the head's input)
 * are operand tensors (ops.h): bf16 in a context with bf16 operands, where the products would
 * round them on their way in anyway; the same results, half their bytes, no conversion pass. So
 * is qkv where the context's attention takes it as one (attention_operand: its products round
 * q, k and v likewise), written so by the qkv Linear. Where the context's MLP keeps its hidden
 * state h in bf16 (hidden_operand), fc1 writes it so and GELU reads the rounded values: not the
 * fp32 results then, but those of bf16 autocast. So it is, where the context keeps the branch
 * tensors in bf16 (branch_operand), with attention's output (att, the proj product's operand;
 * attention's backward reads it for its row term) and the outputs of proj and fc2 (ao, mo),
 * which the gated residuals add to the fp32 residual stream and whose backward sums into the
 * gates' gradients: 3 w floats a token less, as bf16 autocast keeps them.
 *
 * A gated residual and the LayerNorm that reads it are one op (residual_layernorm_fwd): inside a
 * block (x2, then norm2), and from a block to the next block's norm1 or to the encoder's final
 * norm; each block's modulation is computed before its stack runs, so the next one's is there. */
#include <stddef.h>
#include "model.h"
#include "model_internal.h"

/* ---- one block ------------------------------------------------------------------------------- */

/* The LayerNorm that reads a block's output (the next block's norm1, or the encoder's final norm),
 * run as one op with the block's last gated residual (residual_layernorm_fwd). */
typedef struct {
    void *out;                 /* at the layout's token 0, stored as out_type says */
    int out_type;              /* UMD_OPND: a block's m1; UMD_F32: the encoder's output */
    float *mean, *rstd;
    const float *gamma, *beta;
    const float *mod;          /* (B, 6w) modulation at batch row 0 (its shift and scale lead), or
                                  NULL: none */
} norm_after;

/* The MLP's flags: its input m2 an operand tensor, h kept in bf16 where the context does so, and
 * its output mo a branch tensor where the context keeps those in the operand type. */
static int mlp_types(const umd_model *m) {
    return UMD_OPND | (m->h_type == UMD_OPND ? UMD_OPND_H : 0) |
           (m->br_type == UMD_OPND ? UMD_OPND_Y : 0);
}

/* The MLP's scratch over a layout: the replica's tH where the MLP asked for scratch at its token
 * count, else NULL (a backend that said it needs none there gets none, whatever the other
 * layout asked). */
static float *mlp_tmp(const replica *rp, const seq_layout *sl) {
    return sl->mlp_tmp ? rp->A.tH : NULL;
}

/* The gated residuals' flag for their branch input (ao, mo). */
static int branch_flag(const umd_model *m) { return m->br_type == UMD_OPND ? UMD_OPND_Y : 0; }

/* The flags of the gradient tensors: grad_flag of a branch output's gradient (the gated
 * residuals' dy, read by proj's and the MLP's backward) and gradx_flag of the gradient of the
 * MLP's input (its dx, read by norm2's backward), where the context keeps them in bf16
 * (grad_type); dqkv_flag of qkv's gradient (attention's dqkv, read by the qkv Linear's backward)
 * and qkvx_flag of the gradients on either side of attention (proj's dx, read by attention's
 * backward as its dout; the qkv Linear's dx, read by norm1's backward), where it keeps those in
 * bf16 too (dqkv_type): attention takes a bf16 dout only where it takes a bf16 qkv, as it writes
 * a bf16 output only there (att_type). */
static int grad_flag(const umd_model *m) { return m->grad_type == UMD_OPND ? UMD_GRAD : 0; }
static int gradx_flag(const umd_model *m) { return m->grad_type == UMD_OPND ? UMD_GRAD_X : 0; }
static int dqkv_flag(const umd_model *m) { return m->dqkv_type == UMD_OPND ? UMD_GRAD : 0; }
static int qkvx_flag(const umd_model *m) { return m->dqkv_type == UMD_OPND ? UMD_GRAD_X : 0; }

/* The attention ops' flags: qkv an operand tensor, and the output a branch tensor, where the
 * context keeps them so. */
static int attention_types(const umd_model *m) {
    return m->qkv_type | (m->att_type == UMD_OPND ? UMD_OPND_O : 0);
}

/* Each block's modulation (h1, s1, g1, h2, s2, g2) = ada(cond), per batch row, for a stack of
 * blocks, before the first of them runs: a block's last residual and the next block's norm1 then
 * run as one op. Every block keeps its own (B, 6w), also with train.recompute. */
static void stack_mods(umd_model *m, replica *rp, const block_params *bp, const block_acts *a,
                       int count) {
    const int w = m->d.w;
    for (int i = 0; i < count; i++)
        m->ops->linear_fwd(rp->ctx, a[i].mod, rp->A.cond, bp[i].ada_w, bp[i].ada_b, rp->B, 6 * w,
                           w, UMD_F32);
}

/* LN1 of the block's input with its modulation (h1, s1) into m1, mean1, rstd1, per segment. */
static void block_norm1(umd_model *m, replica *rp, const block_params *bp, const block_acts *a,
                        const seq_layout *sl) {
    const int w = m->d.w, w6 = 6 * w;
    for (int k = 0; k < sl->nseg; k++) {
        const seq_seg *s = &sl->seg[k];
        m->ops->layernorm_fwd(rp->ctx, opnd_at(m, a->m1, s->tok0 * w), a->mean1 + s->tok0,
                              a->rstd1 + s->tok0, a->x + s->tok0 * w, bp->n1_w, bp->n1_b,
                              a->mod + (long)s->row0 * w6, w6, s->n, s->T, w, (long)s->T * w,
                              (long)s->T * w, UMD_OPND);
    }
}

/* The attention branch's residual x2 = x + g1 ao, and LN2 of it with (h2, s2) into m2, mean2,
 * rstd2, per segment. */
static void block_norm2(umd_model *m, replica *rp, const block_params *bp, const block_acts *a,
                        const seq_layout *sl) {
    const int w = m->d.w, w6 = 6 * w;
    for (int k = 0; k < sl->nseg; k++) {
        const seq_seg *s = &sl->seg[k];
        const float *mod = a->mod + (long)s->row0 * w6;
        m->ops->residual_layernorm_fwd(rp->ctx, a->x2 + s->tok0 * w, opnd_at(m, a->m2, s->tok0 * w),
                                       a->mean2 + s->tok0, a->rstd2 + s->tok0, a->x + s->tok0 * w,
                                       typed_at(m, a->ao, m->br_type, s->tok0 * w), mod + 2 * w,
                                       w6, bp->n2_w, bp->n2_b, mod + 3 * w, w6, s->n, s->T, w,
                                       UMD_OPND | branch_flag(m));
    }
}

/* x += g1 * Attn(LN1(x) (1 + s1) + h1);  x += g2 * MLP(LN2(x) (1 + s2) + h2) with the block's
 * modulation (stack_mods). a->x holds the input tokens of the layout's segments. normed: LN1's
 * output and statistics are already in a (the previous block's next). The output goes to out,
 * together with next's LayerNorm of it when next is not NULL (out NULL: nothing is written, when
 * the backward refills what the block saves). The Linears run once over every token; LayerNorm
 * with modulation, attention and the gates per segment. */
static void block_forward(umd_model *m, replica *rp, const block_params *bp, const block_acts *a,
                          const seq_layout *sl, int normed, float *out, const norm_after *next) {
    const umd_ops *o = m->ops;
    umd_ctx *c = rp->ctx;
    const umd_dims *d = &m->d;
    const int w = d->w, w6 = 6 * w, M = (int)sl->ntok;
    if (!normed) block_norm1(m, rp, bp, a, sl);
    o->linear_fwd(c, a->qkv, a->m1, bp->qkv_w, bp->qkv_b, M, 3 * w, w,
                  UMD_OPND | (m->qkv_type == UMD_OPND ? UMD_OPND_Y : 0));
    for (int k = 0; k < sl->nseg; k++) {
        const seq_seg *s = &sl->seg[k];
        o->attention_fwd(c, typed_at(m, a->att, m->att_type, s->tok0 * w), a->lse + s->lse0,
                         typed_at(m, a->qkv, m->qkv_type, s->tok0 * 3 * w), s->n, s->T, d->heads,
                         d->hd, attention_types(m));
    }
    o->linear_fwd(c, a->ao, a->att, bp->proj_w, bp->proj_b, M, w, w,
                  m->att_type | (m->br_type == UMD_OPND ? UMD_OPND_Y : 0));
    block_norm2(m, rp, bp, a, sl);
    o->mlp_fwd(c, a->mo, a->h, mlp_tmp(rp, sl), a->m2, bp->fc1_w, bp->fc1_b, bp->fc2_w, bp->fc2_b, M,
               d->F, w, mlp_types(m));
    for (int k = 0; out && k < sl->nseg; k++) {
        const seq_seg *s = &sl->seg[k];
        const float *gate = a->mod + (long)s->row0 * w6 + 5 * w;
        if (next) {
            void *nout = typed_at(m, next->out, next->out_type, s->tok0 * w);
            o->residual_layernorm_fwd(c, out + s->tok0 * w, nout, next->mean + s->tok0,
                                      next->rstd + s->tok0, a->x2 + s->tok0 * w,
                                      typed_at(m, a->mo, m->br_type, s->tok0 * w), gate, w6,
                                      next->gamma, next->beta,
                                      next->mod ? next->mod + (long)s->row0 * w6 : NULL, w6, s->n,
                                      s->T, w, next->out_type | branch_flag(m));
        } else {
            o->gate_residual_fwd(c, out + s->tok0 * w, a->x2 + s->tok0 * w,
                                 typed_at(m, a->mo, m->br_type, s->tok0 * w), gate, w6, s->n,
                                 s->T, w, branch_flag(m));
        }
    }
}

/* Runs a stack of blocks over a layout: their modulations, then each block, block i's output into
 * block i + 1's input with block i + 1's norm1 in the same op; the last block's output into last
 * (with last_norm's LayerNorm of it when not NULL). */
static void stack_forward(umd_model *m, replica *rp, const block_params *bp, const block_acts *a,
                          int count, const seq_layout *sl, float *last,
                          const norm_after *last_norm) {
    stack_mods(m, rp, bp, a, count);
    for (int i = 0; i < count; i++) {
        if (i + 1 < count) {
            const norm_after next = {a[i + 1].m1, UMD_OPND, a[i + 1].mean1, a[i + 1].rstd1,
                                     bp[i + 1].n1_w, bp[i + 1].n1_b, a[i + 1].mod};
            block_forward(m, rp, &bp[i], &a[i], sl, i > 0, a[i + 1].x, &next);
        } else {
            block_forward(m, rp, &bp[i], &a[i], sl, i > 0, last, last_norm);
        }
    }
}

/* train.recompute "norms": the block's LayerNorms and its residual x2 again (everything else,
 * fc1's output h among it, is the block's own). */
static void block_refill_norms(umd_model *m, replica *rp, const block_params *bp,
                               const block_acts *a, const seq_layout *sl) {
    block_norm1(m, rp, bp, a, sl);
    block_norm2(m, rp, bp, a, sl);
}

/* train.recompute "partial": those and fc1's output h again, from what the block kept (its
 * input, the modulation and the attention branch's output ao), as block_forward made them. */
static void block_refill_partial(umd_model *m, replica *rp, const block_params *bp,
                                 const block_acts *a, const seq_layout *sl) {
    block_refill_norms(m, rp, bp, a, sl);
    m->ops->linear_fwd(rp->ctx, a->h, a->m2, bp->fc1_w, bp->fc1_b, (int)sl->ntok, m->d.F, m->d.w,
                       UMD_OPND | (m->h_type == UMD_OPND ? UMD_OPND_Y | UMD_OPND_H : 0));
}

/* D (ntok, w) holds the gradient of the block's output; on return it holds the gradient of its
 * input. Parameter gradients go to gp; the conditioning's gradient (B, w) is added to A->dcond.
 * refill (UMD_RECOMPUTE_*): run the block's forward again first, whole or in part (what the
 * block saves lives partly in a scratch set that later blocks overwrote); the ops are
 * deterministic, so it refills the same values (mlp_fwd's h is linear_fwd's on either backend). */
static void block_backward(umd_model *m, replica *rp, const block_params *bp,
                           const block_params *gp, const block_acts *a, const seq_layout *sl,
                           float *D, int refill) {
    if (refill == UMD_RECOMPUTE_FULL) block_forward(m, rp, bp, a, sl, 0, NULL, NULL);
    else if (refill == UMD_RECOMPUTE_PARTIAL) block_refill_partial(m, rp, bp, a, sl);
    else if (refill == UMD_RECOMPUTE_NORMS) block_refill_norms(m, rp, bp, a, sl);
    const umd_ops *o = m->ops;
    umd_ctx *c = rp->ctx;
    const umd_dims *d = &m->d;
    acts *A = &rp->A;
    const int w = d->w, w6 = 6 * w, M = (int)sl->ntok;
    float *dmod = A->dmod; /* (B, 6w): every slice of every row written once below */
    /* MLP branch */
    for (int k = 0; k < sl->nseg; k++) {
        const seq_seg *s = &sl->seg[k];
        long r = (long)s->row0 * w6;
        o->gate_residual_bwd(c, typed_at(m, A->tA, m->grad_type, s->tok0 * w), dmod + r + 5 * w,
                             D + s->tok0 * w, typed_at(m, a->mo, m->br_type, s->tok0 * w),
                             a->mod + r + 5 * w, w6, s->n, s->T, w, branch_flag(m) | grad_flag(m));
    }
    /* tA: the MLP output's gradient in, its input's out, both typed as grad_type says (mlp_bwd
     * reads dy before writing dx) */
    o->mlp_bwd(c, A->tA, gp->fc1_w, gp->fc1_b, gp->fc2_w, gp->fc2_b, A->tA, a->m2, a->h,
               bp->fc1_w, bp->fc2_w, mlp_tmp(rp, sl), M, d->F, w,
               mlp_types(m) | grad_flag(m) | gradx_flag(m));
    for (int k = 0; k < sl->nseg; k++) {
        const seq_seg *s = &sl->seg[k];
        long r = (long)s->row0 * w6, seq = (long)s->T * w;
        o->layernorm_bwd(c, D + s->tok0 * w, gp->n2_w, gp->n2_b, dmod + r + 3 * w,
                         typed_at(m, A->tA, m->grad_type, s->tok0 * w), a->x2 + s->tok0 * w,
                         a->mean2 + s->tok0, a->rstd2 + s->tok0, bp->n2_w, bp->n2_b,
                         a->mod + r + 3 * w, w6, s->n, s->T, w, seq, seq, 1, gradx_flag(m));
        /* attention branch's gate */
        o->gate_residual_bwd(c, typed_at(m, A->tA, m->grad_type, s->tok0 * w), dmod + r + 2 * w,
                             D + s->tok0 * w, typed_at(m, a->ao, m->br_type, s->tok0 * w),
                             a->mod + r + 2 * w, w6, s->n, s->T, w, branch_flag(m) | grad_flag(m));
    }
    /* tB: proj's input's gradient, attention's dout (typed as dqkv_type says) */
    o->linear_bwd(c, A->tB, gp->proj_w, gp->proj_b, A->tA, a->att, bp->proj_w, M, w, w, 0,
                  m->att_type | grad_flag(m) | qkvx_flag(m));
    for (int k = 0; k < sl->nseg; k++) {
        const seq_seg *s = &sl->seg[k];
        o->attention_bwd(c, typed_at(m, A->tQ, m->dqkv_type, s->tok0 * 3 * w),
                         typed_at(m, A->tB, m->dqkv_type, s->tok0 * w),
                         typed_at(m, a->qkv, m->qkv_type, s->tok0 * 3 * w),
                         typed_at(m, a->att, m->att_type, s->tok0 * w), a->lse + s->lse0, s->n,
                         s->T, d->heads, d->hd,
                         attention_types(m) | dqkv_flag(m) | qkvx_flag(m));
    }
    /* tA: the qkv Linear's input's gradient, norm1's dout (typed as dqkv_type says) */
    o->linear_bwd(c, A->tA, gp->qkv_w, gp->qkv_b, A->tQ, a->m1, bp->qkv_w, M, 3 * w, w, 0,
                  UMD_OPND | dqkv_flag(m) | qkvx_flag(m));
    for (int k = 0; k < sl->nseg; k++) {
        const seq_seg *s = &sl->seg[k];
        long r = (long)s->row0 * w6, seq = (long)s->T * w;
        o->layernorm_bwd(c, D + s->tok0 * w, gp->n1_w, gp->n1_b, dmod + r,
                         typed_at(m, A->tA, m->dqkv_type, s->tok0 * w), a->x + s->tok0 * w,
                         a->mean1 + s->tok0, a->rstd1 + s->tok0, bp->n1_w, bp->n1_b, a->mod + r,
                         w6, s->n, s->T, w, seq, seq, 1, qkvx_flag(m));
    }
    /* adaLN, over every batch row at once */
    o->linear_bwd(c, A->dcond, gp->ada_w, gp->ada_b, dmod, A->cond, bp->ada_w, rp->B, w6, w, 1,
                  UMD_F32);
}

/* ---- encoder ------------------------------------------------------------------------------------ */

/* Visible tokens in, decoder input rows out. */
static void encoder_forward(umd_model *m, replica *rp) {
    const umd_ops *o = m->ops;
    umd_ctx *c = rp->ctx;
    const umd_dims *d = &m->d;
    acts *A = &rp->A;
    const seq_layout *sl = &rp->enc;
    const int w = d->w, L = d->L;
    for (int k = 0; k < sl->nseg; k++) {
        const seq_seg *s = &sl->seg[k];
        o->gather_tokens_fwd(c, A->enc[0].x + s->tok0 * w, A->emb + (size_t)s->row0 * L * w,
                             m->P.pos, m->P.cls, A->order + (size_t)s->row0 * L, s->n, L, s->keep,
                             d->ncls, w);
    }
    /* the final LayerNorm (no modulation) runs with the last block's residual */
    const norm_after fin = {A->enc_out,      UMD_F32,         A->enc_mean, A->enc_rstd,
                            m->P.enc_norm_w, m->P.enc_norm_b, NULL};
    stack_forward(m, rp, m->P.enc, A->enc, d->depth, sl, A->enc_xlast, &fin);
    for (int k = 0; k < sl->nseg; k++) {
        const seq_seg *s = &sl->seg[k];
        o->token_mean_fwd(c, A->rep + (size_t)s->row0 * w, A->enc_out + s->tok0 * w, s->n, s->T,
                          d->ncls, w);
        o->decoder_input_fwd(c, A->dec[0].x + (size_t)s->row0 * d->T_dec * w,
                             A->rep + (size_t)s->row0 * w, A->enc_out + s->tok0 * w,
                             m->P.mask_token, m->P.dec_pos, A->slot + (size_t)s->row0 * L, s->n, L,
                             s->T, d->ncls, w);
    }
}

/* From A->ddec (the decoder input's gradient) to A->demb (every row's patch embeddings), adding
 * into the cond gradient. */
static void encoder_backward(umd_model *m, replica *rp) {
    const umd_ops *o = m->ops;
    umd_ctx *c = rp->ctx;
    const umd_dims *d = &m->d;
    acts *A = &rp->A;
    const seq_layout *sl = &rp->enc;
    const int w = d->w, L = d->L;
    for (int k = 0; k < sl->nseg; k++) {
        const seq_seg *s = &sl->seg[k];
        o->decoder_input_bwd(c, A->drep + (size_t)s->row0 * w, A->denc_out + s->tok0 * w,
                             rp->G.mask_token, rp->G.dec_pos, A->ddec + (size_t)s->row0 * d->T_dec * w,
                             A->slot + (size_t)s->row0 * L, s->n, L, s->T, d->ncls, w);
        o->token_mean_bwd(c, A->denc_out + s->tok0 * w, A->drep + (size_t)s->row0 * w, s->n, s->T,
                          d->ncls, w);
    }
    o->layernorm_bwd(c, A->denc, rp->G.enc_norm_w, rp->G.enc_norm_b, NULL, A->denc_out,
                     A->enc_xlast, A->enc_mean, A->enc_rstd, m->P.enc_norm_w, m->P.enc_norm_b, NULL,
                     0, (int)sl->ntok, 1, w, w, w, 0, UMD_F32);
    for (int i = d->depth - 1; i >= 0; i--)
        block_backward(m, rp, &m->P.enc[i], &rp->G.enc[i], &A->enc[i], sl, A->denc, m->recompute);
    for (int k = 0; k < sl->nseg; k++) {
        const seq_seg *s = &sl->seg[k];
        o->gather_tokens_bwd(c, A->demb + (size_t)s->row0 * L * w, rp->G.pos, rp->G.cls,
                             A->denc + s->tok0 * w, A->slot + (size_t)s->row0 * L, s->n, L, s->keep,
                             d->ncls, w);
    }
}

/* ---- the step ------------------------------------------------------------------------------------- */

/* One replica's forward (its sums of squared errors into rp) and, with backward, its gradients
 * into rp->grads. The loss weights use the whole batch's counts, so the replicas' gradients add
 * up to the batch's. */
static void replica_step(umd_model *m, replica *rp, int backward) {
    const umd_ops *o = m->ops;
    umd_ctx *c = rp->ctx;
    const umd_dims *d = &m->d;
    acts *A = &rp->A;
    const model_params *P = &m->P;
    const int B = rp->B, L = d->L, w = d->w, PP = d->P, nc = rp->nc, nn = rp->nn;
    const size_t CHW = (size_t)d->C * d->H * d->W, rowP = (size_t)L * PP;

    /* inputs: targets in patch space, x_t for the noisy rows */
    o->patchify(c, A->x0p, A->x0, B, d->C, d->H, d->W, d->p);
    if (nn > 0) {
        o->patchify(c, A->epsp + nc * rowP, A->eps + nc * CHW, nn, d->C, d->H, d->W, d->p);
        o->noise_mix(c, A->xin + nc * rowP, A->x0p + nc * rowP, A->epsp + nc * rowP, A->t_net + nc,
                     m->sqrt_abar, m->sqrt_1m_abar, nn, (int)rowP);
    }
    if (nc > 0) o->copy(c, A->xin, A->x0p, nc * rowP);

    /* conditioning */
    o->timestep_embed(c, A->temb, A->t_net, B, w);
    o->linear_fwd(c, A->th1, A->temb, P->t_fc1_w, P->t_fc1_b, B, 2 * w, w, UMD_F32);
    o->silu_fwd(c, A->ta1, A->th1, (size_t)B * 2 * w);
    o->linear_fwd(c, A->temb2, A->ta1, P->t_fc2_w, P->t_fc2_b, B, w, 2 * w, UMD_F32);
    if (d->labels) {
        o->embed_rows_fwd(c, A->ytab, P->y_table, A->y_used, B, w);
        o->linear_fwd(c, A->yh1, A->ytab, P->y_fc1_w, P->y_fc1_b, B, 2 * w, w, UMD_F32);
        o->silu_fwd(c, A->ya1, A->yh1, (size_t)B * 2 * w);
        o->linear_fwd(c, A->yemb, A->ya1, P->y_fc2_w, P->y_fc2_b, B, w, 2 * w, UMD_F32);
        o->add(c, A->csum, A->temb2, A->yemb, (size_t)B * w);
    }
    o->silu_fwd(c, A->cond, A->csum, (size_t)B * w);

    /* encoder (visible tokens only), then the decoder's input rows */
    o->linear_fwd(c, A->emb, A->xin, P->patch_w, P->patch_b, B * L, w, PP, UMD_F32);
    encoder_forward(m, rp);

    /* decoder over all rows, final norm and modulation without the rep token, head */
    const int Td = d->T_dec;
    stack_forward(m, rp, P->dec, A->dec, d->dec_depth, &rp->dec, A->dec_xlast, NULL);
    o->linear_fwd(c, A->fmod, A->cond, P->fmod_w, P->fmod_b, B, 2 * w, w, UMD_F32);
    o->layernorm_fwd(c, A->fin, A->fmean, A->frstd, A->dec_xlast + w, P->dec_norm_w, P->dec_norm_b,
                     A->fmod, 2 * w, B, L, w, (long)Td * w, (long)L * w, UMD_OPND);
    o->linear_fwd(c, A->pred, A->fin, P->head_w, P->head_b, B * L, 2 * PP, w, UMD_OPND);

    /* losses over the whole batch's counts; their gradients go straight into dpred */
    const int pp = d->p * d->p;
    const double fc = (double)d->n_clean / d->B, fn = (double)d->n_noisy / d->B;
    o->fill(c, A->dpred, (size_t)B * L * 2 * PP, 0.0f);
    if (nn > 0) {
        int all = d->keep_noisy >= L;
        double n_eps = (double)d->n_noisy * (all ? L : d->keep_noisy) * PP;
        double n_x0 = (double)d->n_noisy * (all ? L : L - d->keep_noisy) * PP;
        size_t off = nc * (size_t)L * 2 * PP;
        o->mse_masked(c, A->dpred + off, A->pred + off, A->epsp + nc * rowP, A->slot + nc * L, nn,
                      L, pp, d->C, 1, all ? UMD_SEL_ALL : UMD_SEL_VISIBLE,
                      (float)(fn * 0.5 / n_eps), &rp->sums[0]);
        o->mse_masked(c, A->dpred + off, A->pred + off, A->x0p + nc * rowP, A->slot + nc * L, nn,
                      L, pp, d->C, 0, all ? UMD_SEL_ALL : UMD_SEL_MASKED,
                      (float)(fn * 0.5 / n_x0), &rp->sums[1]);
    }
    if (nc > 0) {
        int all = d->keep_clean >= L;
        double n_x0 = (double)d->n_clean * (all ? L : L - d->keep_clean) * PP;
        o->mse_masked(c, A->dpred, A->pred, A->x0p, A->slot, nc, L, pp, d->C, 0,
                      all ? UMD_SEL_ALL : UMD_SEL_MASKED, (float)(fc / n_x0), &rp->sums[2]);
    }
    if (!backward) return;

    /* ---- backward ---- */
    const model_params *G = &rp->G;
    o->fill(c, rp->grads, m->sizes.nfloats, 0.0f);
    o->linear_bwd(c, A->dfin, G->head_w, G->head_b, A->dpred, A->fin, P->head_w, B * L, 2 * PP, w,
                  0, UMD_OPND);
    o->fill(c, A->ddec, (size_t)B * Td * w, 0.0f); /* the rep token's rows stay 0 */
    o->layernorm_bwd(c, A->ddec + w, G->dec_norm_w, G->dec_norm_b, A->dfmod, A->dfin,
                     A->dec_xlast + w, A->fmean, A->frstd, P->dec_norm_w, P->dec_norm_b, A->fmod,
                     2 * w, B, L, w, (long)Td * w, (long)L * w, 0, UMD_F32);
    o->linear_bwd(c, A->dcond, G->fmod_w, G->fmod_b, A->dfmod, A->cond, P->fmod_w, B, 2 * w, w, 0,
                  UMD_F32);
    /* with train.recompute the last decoder block's saved tensors are still in the scratch set */
    for (int i = d->dec_depth - 1; i >= 0; i--)
        block_backward(m, rp, &P->dec[i], &G->dec[i], &A->dec[i], &rp->dec, A->ddec,
                       i < d->dec_depth - 1 ? m->recompute : UMD_RECOMPUTE_OFF);
    encoder_backward(m, rp);
    o->linear_bwd(c, NULL, G->patch_w, G->patch_b, A->demb, A->xin, P->patch_w, B * L, w, PP, 0,
                  UMD_F32);

    /* conditioning */
    o->silu_bwd(c, A->dcsum, A->dcond, A->csum, (size_t)B * w);
    o->linear_bwd(c, A->d2w, G->t_fc2_w, G->t_fc2_b, A->dcsum, A->ta1, P->t_fc2_w, B, w, 2 * w, 0,
                  UMD_F32);
    o->silu_bwd(c, A->d2w, A->d2w, A->th1, (size_t)B * 2 * w);
    o->linear_bwd(c, NULL, G->t_fc1_w, G->t_fc1_b, A->d2w, A->temb, P->t_fc1_w, B, 2 * w, w, 0,
                  UMD_F32);
    if (d->labels) {
        o->linear_bwd(c, A->d2w, G->y_fc2_w, G->y_fc2_b, A->dcsum, A->ya1, P->y_fc2_w, B, w,
                      2 * w, 0, UMD_F32);
        o->silu_bwd(c, A->d2w, A->d2w, A->yh1, (size_t)B * 2 * w);
        o->linear_bwd(c, A->dw, G->y_fc1_w, G->y_fc1_b, A->d2w, A->ytab, P->y_fc1_w, B, 2 * w, w,
                      0, UMD_F32);
        o->embed_rows_bwd(c, G->y_table, A->dw, A->y_used, B, w);
    }
}

void umd_model_step(umd_model *m, int backward, umd_losses *out) {
    #pragma omp parallel for num_threads(m->nrep) schedule(static, 1) if (m->nrep > 1)
    for (int r = 0; r < m->nrep; r++) replica_step(m, &m->rep[r], backward);
    if (out) umd_model_losses(m, out);

    /* the replicas' gradients into replica 0's (the model's gradient arena), in order */
    if (backward)
        for (int r = 1; r < m->nrep; r++)
            m->ops->add(m->ctx, m->grads, m->grads, m->rep[r].grads, m->sizes.nfloats);
}

void umd_model_losses(umd_model *m, umd_losses *out) {
    const umd_dims *d = &m->d;
    /* the batch's losses from the replicas' sums, added in replica order */
    double s_eps = 0, s_x0 = 0, s_clean = 0;
    for (int r = 0; r < m->nrep; r++) {
        const replica *rp = &m->rep[r];
        double s[3] = {0, 0, 0};
        if (rp->nc > 0 || rp->nn > 0) m->ops->download(rp->ctx, s, rp->sums, sizeof s);
        if (rp->nn > 0) {
            s_eps += s[0];
            s_x0 += s[1];
        }
        if (rp->nc > 0) s_clean += s[2];
    }
    const int L = d->L, PP = d->P;
    umd_losses res = {0};
    if (d->n_noisy > 0) {
        int all = d->keep_noisy >= L;
        res.loss_eps = s_eps / ((double)d->n_noisy * (all ? L : d->keep_noisy) * PP);
        res.loss_x0 = s_x0 / ((double)d->n_noisy * (all ? L : L - d->keep_noisy) * PP);
        res.loss_noisy = 0.5 * (res.loss_eps + res.loss_x0);
    }
    if (d->n_clean > 0) {
        int all = d->keep_clean >= L;
        res.loss_clean = s_clean / ((double)d->n_clean * (all ? L : L - d->keep_clean) * PP);
    }
    res.loss = (double)d->n_noisy / d->B * res.loss_noisy + (double)d->n_clean / d->B * res.loss_clean;
    *out = res;
}
