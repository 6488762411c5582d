/* model.c: the UMD model's parameters, arenas and initialisation (UMD.md "Model"); the step
 * itself (forward, losses, backward) is objective.c.
 *
 * Parameter table (names are the PyTorch twin's, tests/golden/umd_torch.py; W is (out, in)):
 *   patch_embed.weight (w, P) xavier-uniform on the flattened weight, .bias (w) 0
 *   pos_embed (L, w) Normal(0, 1/sqrt(L))                                          [UMD.md]
 *   cls_tokens (ncls, w) 0                                                        [UMD.md]
 *   t_embed.fc1 (2w, w), t_embed.fc2 (w, 2w): weights Normal(0, 0.02), biases 0   [DiT]
 *   y_embed.table (classes + 1, w) Normal(0, 0.02), y_embed.fc1 (2w, w), .fc2 (w, 2w) as t_embed
 *                                                       (only with umd.labels)     [DiT]
 *   enc.i.* and dec.i.* blocks:
 *     ada (6w, w) 0, bias 0 (adaLN-Zero: every block starts as the identity)      [UMD.md]
 *     norm1, norm2: weight 1, bias 0
 *     attn.qkv (3w, w), attn.proj (w, w), mlp.fc1 (F, w), mlp.fc2 (w, F): xavier-uniform over the
 *     whole weight (fan_in = in, fan_out = out; qkv as one 3w x w matrix), biases 0   [DiT, MAE]
 *   enc_norm, dec_norm: weight 1, bias 0
 *   mask_token (w) Normal(0, 0.02)                                                [UMD.md]
 *   dec_pos_embed (L, w) Normal(0, 1/sqrt(L)) (UMD.md gives the encoder's; the decoder's takes the
 *     same)
 *   final_mod (2w, w) 0, bias 0 (shift then scale)                                [UMD.md]
 *   head (2P, w) Normal(0, 0.02), bias 0                                          [UMD.md]
 *
 * Weight decay: UMD.md excludes "biases, cls tokens and the mask token", and that is exactly what
 * is excluded: every tensor whose name ends in "bias" (Linear and LayerNorm biases), cls_tokens and
 * mask_token. LayerNorm weights, both positional embeddings and the label table are decayed (MAE
 * would not decay its 1-D LayerNorm weights; UMD.md names no such exception). */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"
#include "model_internal.h"
#include "philox.h"
#include "umdq.h"

/* ---- parameter table ------------------------------------------------------------------------- */

/* A top-level tensor's (block, field) pair. */
#define TOP(f) -1, offsetof(model_params, f)

/* Where a tensor's pointer lives in a model_params view. */
static float **field_of(model_params *mp, int depth, int block, size_t field) {
    char *base = block < 0 ? (char *)mp
                 : block < depth ? (char *)&mp->enc[block]
                                 : (char *)&mp->dec[block - depth];
    return (float **)(base + field);
}

static void add_tensor(umd_model *m, int block, size_t field, const char *name, int rows, int cols,
                       int init, float scale) {
    int i = m->ntensors++;
    umd_tensor *t = &m->tensors[i];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rows = rows;
    t->cols = cols;
    t->size = (size_t)rows * cols;
    size_t len = strlen(name);
    int is_bias = len >= 4 && strcmp(name + len - 4, "bias") == 0;
    t->decay = !(is_bias || strcmp(name, "cls_tokens") == 0 || strcmp(name, "mask_token") == 0);
    m->slots[i].block = block;
    m->slots[i].field = field;
    m->slots[i].init = init;
    m->slots[i].scale = scale;
}

/* prefix.weight (out, in) and prefix.bias (out): fw, fb are the fields' offsets. */
static void add_linear(umd_model *m, int block, size_t fw, size_t fb, const char *prefix, int out,
                       int in, int init, float scale) {
    char name[48];
    snprintf(name, sizeof name, "%s.weight", prefix);
    add_tensor(m, block, fw, name, out, in, init, scale);
    snprintf(name, sizeof name, "%s.bias", prefix);
    add_tensor(m, block, fb, name, 1, out, INIT_ZERO, 0);
}

static void add_norm(umd_model *m, int block, size_t fw, size_t fb, const char *prefix, int w) {
    char name[48];
    snprintf(name, sizeof name, "%s.weight", prefix);
    add_tensor(m, block, fw, name, 1, w, INIT_ONE, 0);
    snprintf(name, sizeof name, "%s.bias", prefix);
    add_tensor(m, block, fb, name, 1, w, INIT_ZERO, 0);
}

static void add_block(umd_model *m, int k, const char *prefix) {
    const umd_dims *d = &m->d;
    char name[48];
    int w = d->w;
#define NAME(s) (snprintf(name, sizeof name, "%s.%s", prefix, s), name)
#define PAIR(a, b) offsetof(block_params, a), offsetof(block_params, b)
    add_linear(m, k, PAIR(ada_w, ada_b), NAME("ada"), 6 * w, w, INIT_ZERO, 0);
    add_norm(m, k, PAIR(n1_w, n1_b), NAME("norm1"), w);
    add_linear(m, k, PAIR(qkv_w, qkv_b), NAME("attn.qkv"), 3 * w, w, INIT_XAVIER, 0);
    add_linear(m, k, PAIR(proj_w, proj_b), NAME("attn.proj"), w, w, INIT_XAVIER, 0);
    add_norm(m, k, PAIR(n2_w, n2_b), NAME("norm2"), w);
    add_linear(m, k, PAIR(fc1_w, fc1_b), NAME("mlp.fc1"), d->F, w, INIT_XAVIER, 0);
    add_linear(m, k, PAIR(fc2_w, fc2_b), NAME("mlp.fc2"), w, d->F, INIT_XAVIER, 0);
#undef PAIR
#undef NAME
}

/* The tensors in arena order (which is also their Philox init number). */
static void build_table(umd_model *m) {
    const umd_dims *d = &m->d;
    int w = d->w;
    char prefix[32];
    m->ntensors = 0;
#define TPAIR(a, b) offsetof(model_params, a), offsetof(model_params, b)
    add_linear(m, -1, TPAIR(patch_w, patch_b), "patch_embed", w, d->P, INIT_XAVIER, 0);
    add_tensor(m, TOP(pos), "pos_embed", d->L, w, INIT_NORMAL, 1.0f / sqrtf((float)d->L));
    add_tensor(m, TOP(cls), "cls_tokens", d->ncls, w, INIT_ZERO, 0);
    add_linear(m, -1, TPAIR(t_fc1_w, t_fc1_b), "t_embed.fc1", 2 * w, w, INIT_NORMAL, 0.02f);
    add_linear(m, -1, TPAIR(t_fc2_w, t_fc2_b), "t_embed.fc2", w, 2 * w, INIT_NORMAL, 0.02f);
    if (d->labels) {
        add_tensor(m, TOP(y_table), "y_embed.table", d->classes + 1, w, INIT_NORMAL, 0.02f);
        add_linear(m, -1, TPAIR(y_fc1_w, y_fc1_b), "y_embed.fc1", 2 * w, w, INIT_NORMAL, 0.02f);
        add_linear(m, -1, TPAIR(y_fc2_w, y_fc2_b), "y_embed.fc2", w, 2 * w, INIT_NORMAL, 0.02f);
    }
    for (int i = 0; i < d->depth; i++) {
        snprintf(prefix, sizeof prefix, "enc.%d", i);
        add_block(m, i, prefix);
    }
    add_norm(m, -1, TPAIR(enc_norm_w, enc_norm_b), "enc_norm", w);
    add_tensor(m, TOP(mask_token), "mask_token", 1, w, INIT_NORMAL, 0.02f);
    add_tensor(m, TOP(dec_pos), "dec_pos_embed", d->L, w, INIT_NORMAL, 1.0f / sqrtf((float)d->L));
    for (int i = 0; i < d->dec_depth; i++) {
        snprintf(prefix, sizeof prefix, "dec.%d", i);
        add_block(m, d->depth + i, prefix);
    }
    add_norm(m, -1, TPAIR(dec_norm_w, dec_norm_b), "dec_norm", w);
    add_linear(m, -1, TPAIR(fmod_w, fmod_b), "final_mod", 2 * w, w, INIT_ZERO, 0);
    add_linear(m, -1, TPAIR(head_w, head_b), "head", 2 * d->P, w, INIT_NORMAL, 0.02f);
#undef TPAIR
}

static int table_capacity(const umd_dims *d) {
    return 32 + 14 * (d->depth + d->dec_depth);
}

/* Points a view's fields at an arena (params or one replica's grads). */
static void bind_view(umd_model *m, model_params *mp, float *arena) {
    for (int i = 0; i < m->ntensors; i++)
        *field_of(mp, m->d.depth, m->slots[i].block, m->slots[i].field) = arena + m->tensors[i].offset;
}

static int view_alloc(model_params *mp, const umd_dims *d) {
    mp->enc = calloc((size_t)d->depth, sizeof(block_params));
    mp->dec = calloc((size_t)d->dec_depth, sizeof(block_params));
    return mp->enc && mp->dec ? 0 : -1;
}

static void view_free(model_params *mp) {
    free(mp->enc);
    free(mp->dec);
    mp->enc = mp->dec = NULL;
}

/* ---- activation layout ------------------------------------------------------------------------- */

/* A bump allocator over the activation arena: with base NULL it only measures. Every tensor
 * starts 256 bytes from the last (the arena's own alignment on a device): the alignment cuBLASLt's
 * algorithm choice assumes of every GEMM operand, bf16 operand tensors included. */
typedef struct {
    char *base;
    size_t off;
} bump;

#define TENSOR_ALIGN 256

static void *take(bump *b, size_t bytes) {
    size_t at = b->off;
    b->off += (bytes + TENSOR_ALIGN - 1) / TENSOR_ALIGN * TENSOR_ALIGN;
    return b->base ? b->base + at : NULL;
}

static float *takef(bump *b, size_t n) { return take(b, n * sizeof(float)); }
static int32_t *takei(bump *b, size_t n) { return take(b, n * sizeof(int32_t)); }

/* A block's saved tensors (objective.c), in four parts: 10 w + F elements per token (8 w + F
 * floats and 2 w operand elements: m1 and m2, bf16 in a context with bf16 operands, qkv's 3 w
 * where attention takes it as one, h's F where the MLP keeps it in bf16, and the branch tensors
 * att, ao and mo, 3 w, where the context keeps those in bf16), the LayerNorm statistics and the
 * lse, plus its (B, 6w) modulation; GELU's output is not among them (mlp_fwd and mlp_bwd
 * recompute it from h).
 *   BLOCK_INPUT     x and the modulation: every block keeps its own
 *   BLOCK_PRODUCTS  qkv, lse, the attention output and the outputs of proj and fc2: what only a
 *                   matrix product or attention makes again
 *   BLOCK_NORMS     both LayerNorms' outputs and statistics and the residual x2 between them
 *   BLOCK_HIDDEN    fc1's output h
 * With train.recompute "full" only BLOCK_INPUT is a block's own, with "partial" BLOCK_INPUT and
 * BLOCK_PRODUCTS are, with "norms" all but BLOCK_NORMS; the other parts live in one scratch set
 * shared by every block (sized for the larger of the two layouts), which the backward refills by
 * running the block, or those parts of it, again. */
enum { BLOCK_INPUT = 1, BLOCK_PRODUCTS = 2, BLOCK_NORMS = 4, BLOCK_HIDDEN = 8, BLOCK_ALL = 15 };

/* Bytes of an element of each typed tensor of a block: the operand tensors (m1, m2), qkv, h, the
 * attention output, and the branch outputs ao and mo; and of the backward's gradient of qkv
 * (the scratch tQ, dqkv_type). */
typedef struct {
    size_t opnd, qkv, h, att, br, dqkv;
} block_bytes;

static void layout_block(bump *b, block_acts *a, const umd_dims *d, int B, const seq_layout *sl,
                         int parts, const block_bytes *by) {
    size_t tok = (size_t)sl->ntok, w = (size_t)d->w;
#define PART(field, p, n) if (parts & (p)) a->field = takef(b, (n))
#define TYPED_PART(field, p, n, bytes) if (parts & (p)) a->field = take(b, (n) * (bytes))
    PART(x, BLOCK_INPUT, tok * w);
    PART(mod, BLOCK_INPUT, (size_t)B * 6 * w);
    PART(mean1, BLOCK_NORMS, tok);
    PART(rstd1, BLOCK_NORMS, tok);
    TYPED_PART(m1, BLOCK_NORMS, tok * w, by->opnd);
    TYPED_PART(qkv, BLOCK_PRODUCTS, tok * 3 * w, by->qkv);
    PART(lse, BLOCK_PRODUCTS, (size_t)sl->nlse);
    TYPED_PART(att, BLOCK_PRODUCTS, tok * w, by->att);
    TYPED_PART(ao, BLOCK_PRODUCTS, tok * w, by->br);
    PART(x2, BLOCK_NORMS, tok * w);
    PART(mean2, BLOCK_NORMS, tok);
    PART(rstd2, BLOCK_NORMS, tok);
    TYPED_PART(m2, BLOCK_NORMS, tok * w, by->opnd);
    TYPED_PART(h, BLOCK_HIDDEN, tok * d->F, by->h);
    TYPED_PART(mo, BLOCK_PRODUCTS, tok * w, by->br);
#undef PART
#undef TYPED_PART
}

/* Appends a segment of n rows (from row0) of T tokens to a layout. */
static void add_segment(seq_layout *sl, int row0, int n, int T, int keep, int heads) {
    if (n <= 0) return;
    seq_seg *s = &sl->seg[sl->nseg++];
    s->row0 = row0;
    s->n = n;
    s->T = T;
    s->keep = keep;
    s->tok0 = sl->ntok;
    s->lse0 = sl->nlse;
    sl->ntok += (long)n * T;
    sl->nlse += (long)n * heads * T;
}

/* One replica's tensors (B = its rows) and its workspace. */
static void layout_replica(bump *b, replica *rp, const umd_dims *d, size_t ws_bytes,
                           int recompute, const block_bytes *by) {
    acts *A = &rp->A;
    size_t B = (size_t)rp->B, L = (size_t)d->L, P = (size_t)d->P, w = (size_t)d->w;
    size_t CHW = (size_t)d->C * d->H * d->W;
    A->x0 = takef(b, B * CHW);
    A->y = takei(b, B);
    A->y_used = takei(b, B);
    A->t_net = takei(b, B);
    A->eps = takef(b, B * CHW);
    A->order = takei(b, B * L);
    A->slot = takei(b, B * L);
    A->x0p = takef(b, B * L * P);
    A->epsp = takef(b, B * L * P);
    A->xin = takef(b, B * L * P);

    A->temb = takef(b, B * w);
    A->th1 = takef(b, B * 2 * w);
    A->ta1 = takef(b, B * 2 * w);
    A->temb2 = takef(b, B * w);
    if (d->labels) {
        A->ytab = takef(b, B * w);
        A->yh1 = takef(b, B * 2 * w);
        A->ya1 = takef(b, B * 2 * w);
        A->yemb = takef(b, B * w);
        A->csum = takef(b, B * w);
    } else {
        A->ytab = A->yh1 = A->ya1 = A->yemb = NULL;
        A->csum = A->temb2; /* cond = SiLU(t_emb) */
    }
    A->cond = takef(b, B * w);
    A->emb = takef(b, B * L * w);
    A->rep = takef(b, B * w);

    size_t ne = (size_t)rp->enc.ntok;
    /* what each block keeps; the rest in the scratch set */
    const int own = recompute == UMD_RECOMPUTE_FULL      ? BLOCK_INPUT
                    : recompute == UMD_RECOMPUTE_PARTIAL ? BLOCK_INPUT | BLOCK_PRODUCTS
                    : recompute == UMD_RECOMPUTE_NORMS   ? BLOCK_ALL & ~BLOCK_NORMS
                                                         : BLOCK_ALL;
    block_acts scratch;
    memset(&scratch, 0, sizeof scratch);
    if (own != BLOCK_ALL) {
        seq_layout big = rp->enc.ntok > rp->dec.ntok ? rp->enc : rp->dec;
        if (rp->enc.nlse > big.nlse) big.nlse = rp->enc.nlse;
        if (rp->dec.nlse > big.nlse) big.nlse = rp->dec.nlse;
        layout_block(b, &scratch, d, rp->B, &big, BLOCK_ALL & ~own, by);
    }
    for (int i = 0; i < d->depth; i++) {
        A->enc[i] = scratch;
        layout_block(b, &A->enc[i], d, rp->B, &rp->enc, own, by);
    }
    A->enc_xlast = takef(b, ne * w);
    A->enc_out = takef(b, ne * w);
    A->enc_mean = takef(b, ne);
    A->enc_rstd = takef(b, ne);

    size_t Td = (size_t)d->T_dec;
    for (int i = 0; i < d->dec_depth; i++) {
        A->dec[i] = scratch;
        layout_block(b, &A->dec[i], d, rp->B, &rp->dec, own, by);
    }
    A->dec_xlast = takef(b, B * Td * w);
    A->fmod = takef(b, B * 2 * w);
    A->fin = take(b, B * L * w * by->opnd);
    A->fmean = takef(b, B * L);
    A->frstd = takef(b, B * L);
    A->pred = takef(b, B * L * 2 * P);

    /* backward temporaries */
    size_t maxtok = B * Td > ne ? B * Td : ne;
    A->dpred = takef(b, B * L * 2 * P);
    A->dfin = takef(b, B * L * w);
    A->dfmod = takef(b, B * 2 * w);
    A->ddec = takef(b, B * Td * w);
    A->denc_out = takef(b, ne * w);
    A->denc = takef(b, ne * w);
    A->tA = takef(b, maxtok * w);
    A->tB = takef(b, maxtok * w);
    A->tH = rp->mlp_tmp ? takef(b, rp->mlp_tmp) : NULL;
    A->tQ = take(b, maxtok * 3 * w * by->dqkv);
    A->dmod = takef(b, B * 6 * w);
    A->dcond = takef(b, B * w);
    A->dcsum = takef(b, B * w);
    A->d2w = takef(b, B * 2 * w);
    A->dw = takef(b, B * w);
    A->demb = takef(b, B * L * w);
    A->drep = takef(b, B * w);
    rp->sums = take(b, 3 * sizeof(double));
    rp->workspace = take(b, ws_bytes);
}

/* Lays out every activation (schedule constants, then each replica); returns the bytes. */
static size_t layout_acts(umd_model *m, char *base, size_t ws_bytes) {
    bump b = {base, 0};
    m->sqrt_abar = takef(&b, (size_t)m->d.T);
    m->sqrt_1m_abar = takef(&b, (size_t)m->d.T);
    m->adam_args = take(&b, sizeof(umd_adamw_args));
    m->grad_sumsq = take(&b, sizeof(double));
    const block_bytes by = {m->opnd, typed_bytes(m, m->qkv_type), typed_bytes(m, m->h_type),
                            typed_bytes(m, m->att_type), typed_bytes(m, m->br_type),
                            typed_bytes(m, m->dqkv_type)};
    for (int r = 0; r < m->nrep; r++)
        layout_replica(&b, &m->rep[r], &m->d, ws_bytes, m->recompute, &by);
    return b.off;
}

/* ---- construction ------------------------------------------------------------------------------ */

static int dims_from(umd_dims *d, const umd_config *cfg, const umd_shape *s, char *err,
                     size_t errlen) {
    memset(d, 0, sizeof *d);
    if (s->C < 1 || s->H < 1 || s->W < 1 || s->batch < 1) {
        snprintf(err, errlen, "bad data shape %dx%dx%d, batch %d", s->C, s->H, s->W, s->batch);
        return UMDQ_EINVAL;
    }
    if (cfg->patch < 1 || s->H % cfg->patch || s->W % cfg->patch) {
        snprintf(err, errlen, "model.patch: must divide the image size %dx%d, got %d", s->H, s->W,
                 cfg->patch);
        return UMDQ_EINVAL;
    }
    if (cfg->heads < 1 || cfg->width < 2 || cfg->width % 2 || cfg->width % cfg->heads) {
        snprintf(err, errlen, "model.width: must be even and a multiple of model.heads (%d), got %d",
                 cfg->heads, cfg->width);
        return UMDQ_EINVAL;
    }
    if (cfg->depth < 1 || cfg->dec_depth < 1 || cfg->mlp_ratio < 1 || cfg->cls_tokens < 1 ||
        cfg->timesteps < 1) {
        snprintf(err, errlen, "model: depth, dec_depth, mlp_ratio, cls_tokens and umd.timesteps "
                 "must be at least 1");
        return UMDQ_EINVAL;
    }
    if (cfg->labels && s->classes < 1) {
        snprintf(err, errlen, "umd.labels: the data set has no classes");
        return UMDQ_EINVAL;
    }
    d->B = s->batch;
    d->C = s->C;
    d->H = s->H;
    d->W = s->W;
    d->p = cfg->patch;
    d->L = (s->H / d->p) * (s->W / d->p);
    d->P = d->p * d->p * d->C;
    d->w = cfg->width;
    d->depth = cfg->depth;
    d->dec_depth = cfg->dec_depth;
    d->heads = cfg->heads;
    d->hd = d->w / d->heads;
    d->F = cfg->mlp_ratio * d->w;
    d->ncls = cfg->cls_tokens;
    d->labels = cfg->labels;
    d->classes = cfg->labels ? s->classes : 0;
    d->T = cfg->timesteps;
    /* floor in double, as Python's int(B * r) */
    d->n_clean = (int)floor((double)d->B * cfg->r_t0);
    if (d->n_clean > d->B) d->n_clean = d->B;
    if (d->n_clean < 0) d->n_clean = 0;
    d->n_noisy = d->B - d->n_clean;
    d->keep_clean = (int)floor((double)d->L * (1.0 - cfg->mask_ratio_t0));
    d->keep_noisy = (int)floor((double)d->L * (1.0 - cfg->mask_ratio));
    if (d->n_clean > 0 && d->keep_clean < 1) {
        snprintf(err, errlen, "umd.mask_ratio_t0: %g leaves no visible token of %d; at most %g",
                 cfg->mask_ratio_t0, d->L, 1.0 - 1.0 / d->L);
        return UMDQ_EINVAL;
    }
    if (d->n_noisy > 0 && d->keep_noisy < 1) {
        snprintf(err, errlen, "umd.mask_ratio: %g leaves no visible token of %d; at most %g",
                 cfg->mask_ratio, d->L, 1.0 - 1.0 / d->L);
        return UMDQ_EINVAL;
    }
    if (d->keep_clean > d->L) d->keep_clean = d->L;
    if (d->keep_noisy > d->L) d->keep_noisy = d->L;
    d->T_clean = d->ncls + d->keep_clean;
    d->T_noisy = d->ncls + d->keep_noisy;
    d->T_dec = 1 + d->L;
    return 0;
}

void umd_schedule_abar(umd_schedule kind, int T, double *abar) {
    double prod = 1.0;
    for (int i = 0; i < T; i++) {
        double beta;
        if (kind == UMD_SCHEDULE_LINEAR) {
            beta = T > 1 ? 1e-4 + (0.02 - 1e-4) * (double)i / (double)(T - 1) : 1e-4;
        } else {
            const double s = 0.008, half_pi = 1.5707963267948966;
            double a1 = cos(((double)i / T + s) / (1.0 + s) * half_pi);
            double a2 = cos(((double)(i + 1) / T + s) / (1.0 + s) * half_pi);
            beta = 1.0 - (a2 * a2) / (a1 * a1);
            if (beta > 0.999) beta = 0.999;
        }
        prod *= 1.0 - beta;
        abar[i] = prod;
    }
}

/* The most memory the replicas' gradient copies may take before the model runs one replica with
 * op-level threads instead (bytes). */
#define REPLICA_GRAD_BUDGET (1024.0 * 1048576.0)

/* Splits the batch over nrep replicas: each gets a contiguous share of the clean rows and a
 * contiguous share of the noisy rows. */
static void split_rows(umd_model *m) {
    const umd_dims *d = &m->d;
    for (int r = 0; r < m->nrep; r++) {
        replica *rp = &m->rep[r];
        int c0 = (int)((long)d->n_clean * r / m->nrep), c1 = (int)((long)d->n_clean * (r + 1) / m->nrep);
        int n0 = (int)((long)d->n_noisy * r / m->nrep), n1 = (int)((long)d->n_noisy * (r + 1) / m->nrep);
        rp->c0 = c0;
        rp->nc = c1 - c0;
        rp->n0 = d->n_clean + n0;
        rp->nn = n1 - n0;
        rp->B = rp->nc + rp->nn;
        memset(&rp->enc, 0, sizeof rp->enc);
        memset(&rp->dec, 0, sizeof rp->dec);
        add_segment(&rp->enc, 0, rp->nc, d->T_clean, d->keep_clean, d->heads);
        add_segment(&rp->enc, rp->nc, rp->nn, d->T_noisy, d->keep_noisy, d->heads);
        add_segment(&rp->dec, 0, rp->B, d->T_dec, d->L, d->heads);
    }
}

/* umd_model_new, or with measure not NULL only its sizes (nothing allocated but the context). */
static int model_new(umd_model **out, const umd_config *cfg, const umd_shape *shape,
                     const umd_ops *ops, umd_sizes *measure, char *err, size_t errlen) {
    umd_model *m = NULL;
    double *abar = NULL;  /* owned: schedule scratch */
    float *consts = NULL; /* owned: sqrt tables before upload */
    uint8_t *mask = NULL; /* owned: decay mask before upload */
    int rc;
    *out = NULL;
    m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->ops = ops;
    rc = dims_from(&m->d, cfg, shape, err, errlen);
    if (rc) goto fail;
    const umd_dims *d = &m->d;
    m->label_dropout = (float)cfg->label_dropout;

    rc = ops->ctx_new(&m->ctx, cfg->threads, err, errlen);
    if (rc) goto fail;
    m->opnd = ops->operand_bytes(m->ctx);
    m->qkv_type = ops->attention_operand(m->ctx, m->d.hd) ? UMD_OPND : UMD_F32;
    m->h_type = ops->hidden_operand(m->ctx) ? UMD_OPND : UMD_F32;
    m->br_type = ops->branch_operand(m->ctx) ? UMD_OPND : UMD_F32;
    m->att_type = m->br_type == UMD_OPND && m->qkv_type == UMD_OPND ? UMD_OPND : UMD_F32;
    m->grad_type = m->br_type == UMD_OPND && ops->grad_operand(m->ctx) ? UMD_OPND : UMD_F32;
    m->dqkv_type = m->grad_type == UMD_OPND && m->qkv_type == UMD_OPND ? UMD_OPND : UMD_F32;

    /* parameter table and offsets */
    int cap = table_capacity(d);
    m->tensors = calloc((size_t)cap, sizeof *m->tensors);
    m->slots = calloc((size_t)cap, sizeof *m->slots);
    if (!m->tensors || !m->slots || view_alloc(&m->P, d)) goto oom;
    build_table(m);
    size_t off = 0, nparams = 0;
    for (int i = 0; i < m->ntensors; i++) {
        m->tensors[i].offset = off;
        off += (m->tensors[i].size + 15) / 16 * 16;
        nparams += m->tensors[i].size;
    }
    m->sizes.nfloats = off;
    m->sizes.nparams = nparams;

    /* replicas: one per thread (never more than rows), each on a 1-thread context; when their
     * gradient copies would pass REPLICA_GRAD_BUDGET, one replica on the full-thread context
     * instead (the ops then split every op across the threads) */
    int threads = ops->ctx_threads(m->ctx);
    m->nrep = threads < d->B ? threads : d->B;
    if (m->nrep < 1) m->nrep = 1;
    if ((double)m->nrep * (double)m->sizes.nfloats * sizeof(float) > REPLICA_GRAD_BUDGET) m->nrep = 1;
    m->rep = calloc((size_t)m->nrep, sizeof *m->rep);
    if (!m->rep) goto oom;
    for (int r = 0; r < m->nrep; r++) {
        replica *rp = &m->rep[r];
        if (m->nrep == 1) {
            rp->ctx = m->ctx;
        } else {
            rc = ops->ctx_new(&rp->ctx, 1, err, errlen);
            if (rc) goto fail;
        }
        rp->A.enc = calloc((size_t)d->depth, sizeof(block_acts));
        rp->A.dec = calloc((size_t)d->dec_depth, sizeof(block_acts));
        if (!rp->A.enc || !rp->A.dec || view_alloc(&rp->G, d)) goto oom;
    }
    split_rows(m);

    umd_limits lim = {0};
    lim.max_rows = d->B;
    lim.max_tokens = d->T_dec > d->T_noisy ? d->T_dec : d->T_noisy;
    if (d->T_clean > lim.max_tokens) lim.max_tokens = d->T_clean;
    lim.max_width = d->w;
    lim.max_heads = d->heads;
    lim.max_patches = d->L;
    lim.max_weight = 0;
    for (int i = 0; i < m->ntensors; i++)
        if ((long)m->tensors[i].size > lim.max_weight) lim.max_weight = (long)m->tensors[i].size;
    size_t ws = ops->workspace_bytes(m->rep[0].ctx, &lim);
    m->sizes.workspace = ws * (size_t)m->nrep;
    /* the MLP's scratch, at the token counts of the replica's encoder and decoder */
    const int mtypes = UMD_OPND | (m->h_type == UMD_OPND ? UMD_OPND_H : 0) |
                       (m->br_type == UMD_OPND ? UMD_OPND_Y : 0);
    for (int r = 0; r < m->nrep; r++) {
        replica *rp = &m->rep[r];
        if (r > 0) ops->workspace_bytes(rp->ctx, &lim);
        rp->enc.mlp_tmp = ops->mlp_scratch(rp->ctx, (int)rp->enc.ntok, d->F, d->w, mtypes);
        rp->dec.mlp_tmp = ops->mlp_scratch(rp->ctx, (int)rp->dec.ntok, d->F, d->w, mtypes);
        rp->mlp_tmp = rp->enc.mlp_tmp > rp->dec.mlp_tmp ? rp->enc.mlp_tmp : rp->dec.mlp_tmp;
    }

    size_t nf = m->sizes.nfloats;
    m->ema_on = cfg->ema > 0;
    m->recompute = cfg->recompute;
    m->sizes.params = nf * sizeof(float);
    m->sizes.grads = (size_t)m->nrep * nf * sizeof(float);
    m->sizes.optim = (2 + (size_t)m->ema_on) * nf * sizeof(float) + (nf + 63) / 64 * 64;
    m->sizes.acts = layout_acts(m, NULL, ws);
    if (measure) {
        *measure = m->sizes;
        umd_model_destroy(&m);
        return 0;
    }

    m->params = ops->alloc(m->ctx, m->sizes.params);
    m->grads = ops->alloc(m->ctx, m->sizes.grads);
    m->optim = ops->alloc(m->ctx, m->sizes.optim);
    m->acts_base = ops->alloc(m->ctx, m->sizes.acts);
    /* train.recompute unset and the activations do not fit: recompute the norms, then parts of
     * the blocks, then whole blocks (the same results in less memory, for more arithmetic each) */
    static const int lighter[] = {UMD_RECOMPUTE_NORMS, UMD_RECOMPUTE_PARTIAL, UMD_RECOMPUTE_FULL};
    for (int k = 0; k < 3 && m->params && m->grads && m->optim && !m->acts_base &&
                    !cfg->recompute_set; k++) {
        m->recompute = lighter[k];
        m->recompute_auto = 1;
        m->sizes.acts = layout_acts(m, NULL, ws);
        m->acts_base = ops->alloc(m->ctx, m->sizes.acts);
    }
    if (!m->params || !m->grads || !m->optim || !m->acts_base) {
        /* what the lighter train.recompute modes would need instead */
        size_t fixed = m->sizes.params + m->sizes.grads + m->sizes.optim;
        char hint[200] = "";
        size_t at = 0;
        const int was = m->recompute;
        int from = 0; /* the modes lighter than the one that did not fit */
        for (int k = 0; k < 3; k++)
            if (was == lighter[k]) from = k + 1;
        for (int k = from; k < 3 && !m->recompute_auto; k++) {
            m->recompute = lighter[k];
            size_t need = fixed + layout_acts(m, NULL, ws);
            at += (size_t)snprintf(hint + at, sizeof hint - at,
                                   at ? ", with \"%s\" %.1f MiB"
                                      : "; with train.recompute \"%s\" they would take %.1f MiB",
                                   umd_recompute_name(lighter[k]), (double)need / 1048576.0);
        }
        m->recompute = was;
        if (m->recompute_auto)
            snprintf(hint, sizeof hint, ", even with the blocks recomputed (train.recompute)");
        snprintf(err, errlen, "out of %s memory allocating the arenas (%.1f MiB)%s",
                 strcmp(ops->name, "cpu") != 0 ? "device" : "host",
                 (double)(fixed + m->sizes.acts) / 1048576.0, hint);
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    m->adam_m = m->optim;
    m->adam_v = m->optim + nf;
    m->ema = m->ema_on ? m->optim + 2 * nf : NULL;
    m->decay = (uint8_t *)(m->optim + (2 + (size_t)m->ema_on) * nf);
    bind_view(m, &m->P, m->params);
    layout_acts(m, m->acts_base, ws);
    for (int r = 0; r < m->nrep; r++) {
        replica *rp = &m->rep[r];
        rp->grads = m->grads + (size_t)r * nf;
        bind_view(m, &rp->G, rp->grads);
        ops->set_workspace(rp->ctx, rp->workspace, ws);
    }
    /* the model's own context (optimiser, reductions) borrows replica 0's workspace when it is
     * another context: they never run at the same time */
    if (m->nrep > 1) ops->set_workspace(m->ctx, m->rep[0].workspace, ws);

    /* constants: the schedule's square roots and the decay mask */
    abar = malloc((size_t)d->T * sizeof *abar);
    consts = malloc(2 * (size_t)d->T * sizeof *consts);
    mask = calloc(nf, 1);
    if (!abar || !consts || !mask) goto oom;
    umd_schedule_abar(cfg->schedule, d->T, abar);
    for (int i = 0; i < d->T; i++) {
        consts[i] = (float)sqrt(abar[i]);
        consts[d->T + i] = (float)sqrt(1.0 - abar[i]);
    }
    ops->upload(m->ctx, m->sqrt_abar, consts, (size_t)d->T * sizeof(float));
    ops->upload(m->ctx, m->sqrt_1m_abar, consts + d->T, (size_t)d->T * sizeof(float));
    for (int i = 0; i < m->ntensors; i++)
        if (m->tensors[i].decay) memset(mask + m->tensors[i].offset, 1, m->tensors[i].size);
    ops->upload(m->ctx, m->decay, mask, nf);

    free(abar);
    free(consts);
    free(mask);
    *out = m;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    rc = UMDQ_ENOMEM;
fail:
    free(abar);
    free(consts);
    free(mask);
    umd_model_destroy(&m);
    return rc;
}

int umd_model_new(umd_model **out, const umd_config *cfg, const umd_shape *shape,
                  const umd_ops *ops, char *err, size_t errlen) {
    return model_new(out, cfg, shape, ops, NULL, err, errlen);
}

int umd_model_measure(umd_sizes *out, const umd_config *cfg, const umd_shape *shape,
                      const umd_ops *ops, char *err, size_t errlen) {
    umd_model *m = NULL;
    memset(out, 0, sizeof *out);
    return model_new(&m, cfg, shape, ops, out, err, errlen);
}

void umd_model_destroy(umd_model **pm) {
    if (!pm || !*pm) return;
    umd_model *m = *pm;
    if (m->ctx) {
        m->ops->release(m->ctx, m->params);
        m->ops->release(m->ctx, m->grads);
        m->ops->release(m->ctx, m->optim);
        m->ops->release(m->ctx, m->acts_base);
    }
    for (int r = 0; m->rep && r < m->nrep; r++) {
        replica *rp = &m->rep[r];
        if (rp->ctx && rp->ctx != m->ctx) m->ops->ctx_destroy(&rp->ctx);
        free(rp->A.enc);
        free(rp->A.dec);
        view_free(&rp->G);
    }
    if (m->ctx) m->ops->ctx_destroy(&m->ctx);
    free(m->rep);
    free(m->tensors);
    free(m->slots);
    view_free(&m->P);
    free(m);
    *pm = NULL;
}

/* ---- accessors --------------------------------------------------------------------------------- */

const umd_dims *umd_model_dims(const umd_model *m) { return &m->d; }
const umd_sizes *umd_model_sizes(const umd_model *m) { return &m->sizes; }
const umd_ops *umd_model_ops(const umd_model *m) { return m->ops; }
umd_ctx *umd_model_ctx(umd_model *m) { return m->ctx; }
int umd_model_ntensors(const umd_model *m) { return m->ntensors; }
int umd_model_replicas(const umd_model *m) { return m->nrep; }
const umd_tensor *umd_model_tensor(const umd_model *m, int i) {
    return i >= 0 && i < m->ntensors ? &m->tensors[i] : NULL;
}
const umd_tensor *umd_model_find(const umd_model *m, const char *name) {
    for (int i = 0; i < m->ntensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}
float *umd_model_params(umd_model *m) { return m->params; }
float *umd_model_grads(umd_model *m) { return m->grads; }
float *umd_model_adam_m(umd_model *m) { return m->adam_m; }
float *umd_model_adam_v(umd_model *m) { return m->adam_v; }
float *umd_model_ema(umd_model *m) { return m->ema; }
const uint8_t *umd_model_decay_mask(umd_model *m) { return m->decay; }

void umd_model_describe(const umd_model *m, char *buf, size_t n) {
    const umd_sizes *s = &m->sizes;
    const umd_dims *d = &m->d;
    const double MiB = 1048576.0;
    snprintf(buf, n,
             "arenas: params %.2fM (%.1f MiB), grads %.1f MiB (%d replica%s), optimiser %.1f MiB "
             "(m, v%s, decay mask), activations %.1f MiB%s%s%s%s%s%s%s%s (batch %d: %d clean rows x %d "
             "tokens, %d noisy x %d, decoder %d x %d; workspace %.2f MiB); %d thread%s",
             (double)s->nparams / 1e6, (double)s->params / MiB, (double)s->grads / MiB, m->nrep,
             m->nrep > 1 ? "s" : "", (double)s->optim / MiB, m->ema_on ? ", ema" : "",
             (double)s->acts / MiB,
             m->recompute == UMD_RECOMPUTE_FULL      ? ", blocks recomputed in the backward"
             : m->recompute == UMD_RECOMPUTE_PARTIAL ? ", norms, residuals and fc1 recomputed in "
                                                       "the backward"
             : m->recompute == UMD_RECOMPUTE_NORMS   ? ", norms and residuals recomputed in the "
                                                       "backward"
                                                     : "",
             m->recompute_auto ? " (the arenas do not fit without)" : "",
             m->opnd == 2 ? ", bf16 LayerNorm outputs" : "",
             m->opnd == 2 && m->qkv_type == UMD_OPND ? ", bf16 qkv" : "",
             m->opnd == 2 && m->h_type == UMD_OPND ? ", bf16 MLP state" : "",
             m->opnd == 2 && m->br_type == UMD_OPND ? ", bf16 branch outputs" : "",
             m->opnd == 2 && m->grad_type == UMD_OPND ? ", bf16 branch gradients" : "",
             m->rep[0].mlp_tmp ? "" : ", no MLP scratch",
             d->B, d->n_clean, d->T_clean, d->n_noisy, d->T_noisy, d->B,
             d->T_dec, (double)s->workspace / MiB, m->ops->ctx_threads(m->ctx),
             m->ops->ctx_threads(m->ctx) > 1 ? "s" : "");
}

/* ---- initialisation and inputs ----------------------------------------------------------------- */

void umd_model_init(umd_model *m, uint64_t seed) {
    const umd_ops *o = m->ops;
    umd_ctx *c = m->ctx;
    for (int i = 0; i < m->ntensors; i++) {
        const umd_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        switch (m->slots[i].init) {
        case INIT_ZERO:
            o->fill(c, p, t->size, 0.0f);
            break;
        case INIT_ONE:
            o->fill(c, p, t->size, 1.0f);
            break;
        case INIT_NORMAL:
            o->rand_normal(c, p, t->size, seed, PHILOX_INIT, (uint32_t)i, 0, 0.0f,
                           m->slots[i].scale);
            break;
        case INIT_XAVIER: {
            float bound = sqrtf(6.0f / (float)(t->rows + t->cols));
            o->rand_uniform(c, p, t->size, seed, PHILOX_INIT, (uint32_t)i, 0, -bound, bound);
            break;
        }
        }
    }
    size_t nf = m->sizes.nfloats;
    o->fill(c, m->adam_m, nf, 0.0f);
    o->fill(c, m->adam_v, nf, 0.0f);
    if (m->ema) o->copy(c, m->ema, m->params, nf);
}

/* Copies rows [row0, row0 + n) of a host array of rows of `bytes` into a replica's rows from
 * local row `at`. */
static void upload_rows(umd_model *m, const replica *rp, void *dst, const void *src, size_t bytes,
                        int at, int row0, int n) {
    if (n <= 0 || !src) return;
    m->ops->upload(rp->ctx, (char *)dst + (size_t)at * bytes, (const char *)src + (size_t)row0 * bytes,
                   (size_t)n * bytes);
}

void umd_model_load_batch(umd_model *m, const float *x, const int32_t *labels) {
    const umd_dims *d = &m->d;
    size_t img = (size_t)d->C * d->H * d->W * sizeof(float);
    for (int r = 0; r < m->nrep; r++) {
        replica *rp = &m->rep[r];
        upload_rows(m, rp, rp->A.x0, x, img, 0, rp->c0, rp->nc);
        upload_rows(m, rp, rp->A.x0, x, img, rp->nc, rp->n0, rp->nn);
        if (d->labels && labels) {
            upload_rows(m, rp, rp->A.y, labels, sizeof(int32_t), 0, rp->c0, rp->nc);
            upload_rows(m, rp, rp->A.y, labels, sizeof(int32_t), rp->nc, rp->n0, rp->nn);
        }
    }
}

/* One replica's draws: every random number is named by its batch row, so the split over replicas
 * changes nothing. */
static void replica_draw(umd_model *m, replica *rp, uint64_t seed, uint32_t s) {
    const umd_ops *o = m->ops;
    umd_ctx *c = rp->ctx;
    const umd_dims *d = &m->d;
    acts *A = &rp->A;
    size_t CHW = (size_t)d->C * d->H * d->W, L = (size_t)d->L;
    int nc = rp->nc, nn = rp->nn;
    if (nc > 0) {
        o->draw_timesteps(c, A->t_net, rp->c0, nc, 1, d->T, seed, s);
        o->draw_keep(c, A->order, A->slot, rp->c0, nc, d->L, d->keep_clean, seed, s);
        if (d->labels)
            o->draw_labels(c, A->y_used, A->y, rp->c0, nc, 1, m->label_dropout, d->classes, seed, s);
    }
    if (nn > 0) {
        o->draw_timesteps(c, A->t_net + nc, rp->n0, nn, 0, d->T, seed, s);
        o->rand_normal(c, A->eps + nc * CHW, (size_t)nn * CHW, seed, PHILOX_NOISE, s,
                       (uint64_t)rp->n0 * CHW, 0.0f, 1.0f);
        o->draw_keep(c, A->order + nc * L, A->slot + nc * L, rp->n0, nn, d->L, d->keep_noisy, seed, s);
        if (d->labels)
            o->draw_labels(c, A->y_used + nc, A->y + nc, rp->n0, nn, 0, m->label_dropout,
                           d->classes, seed, s);
    }
}

void umd_model_draw(umd_model *m, uint64_t seed, int64_t step) {
    /* Philox's step word is 32 bits: steps repeat their randomness after 2^32 steps */
    uint32_t s = (uint32_t)step;
    #pragma omp parallel for num_threads(m->nrep) schedule(static, 1) if (m->nrep > 1)
    for (int r = 0; r < m->nrep; r++) replica_draw(m, &m->rep[r], seed, s);
}

void umd_model_set_draws(umd_model *m, const int32_t *t_net, const float *eps,
                         const int32_t *order, const int32_t *y_used) {
    const umd_dims *d = &m->d;
    size_t L = (size_t)d->L, CHW = (size_t)d->C * d->H * d->W;
    int32_t row[4096];
    for (int r = 0; r < m->nrep; r++) {
        replica *rp = &m->rep[r];
        acts *A = &rp->A;
        for (int part = 0; part < 2; part++) {
            int at = part ? rp->nc : 0, row0 = part ? rp->n0 : rp->c0, n = part ? rp->nn : rp->nc;
            upload_rows(m, rp, A->t_net, t_net, sizeof(int32_t), at, row0, n);
            upload_rows(m, rp, A->eps, eps, CHW * sizeof(float), at, row0, n);
            upload_rows(m, rp, A->order, order, L * sizeof(int32_t), at, row0, n);
            if (d->labels) upload_rows(m, rp, A->y_used, y_used, sizeof(int32_t), at, row0, n);
            /* slots from the host's orders, one row at a time (host memory only) */
            int keep = part ? d->keep_noisy : d->keep_clean;
            for (int b = 0; b < n; b++) {
                const int32_t *ord = order + (size_t)(row0 + b) * L;
                for (size_t k = 0; k < L; k += 4096) {
                    size_t len = L - k < 4096 ? L - k : 4096;
                    for (size_t j = 0; j < len; j++) row[j] = -1;
                    for (int j = 0; j < keep; j++) {
                        size_t l = (size_t)ord[j];
                        if (l >= k && l < k + len) row[l - k] = j;
                    }
                    m->ops->upload(rp->ctx, A->slot + (size_t)(at + b) * L + k, row,
                                   len * sizeof(int32_t));
                }
            }
        }
    }
}
