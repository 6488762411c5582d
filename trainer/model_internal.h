/* model_internal.h: the layout of umd_model, shared by model.c (construction, parameters),
 * objective.c (the step) and optim.c (the update). Not for callers outside trainer/. All tensor
 * pointers point into the model's arenas (backend memory); shapes are in the comments, with
 * n = rows of the pass, T = its tokens, w = width, F = MLP width, P = p*p*C, L = tokens per image. */
#ifndef UMDQ_TRAINER_MODEL_INTERNAL_H
#define UMDQ_TRAINER_MODEL_INTERNAL_H
#include "model.h"

enum { INIT_ZERO, INIT_ONE, INIT_NORMAL, INIT_XAVIER };

typedef struct {
    float *ada_w, *ada_b;   /* (6w, w), (6w): cond -> (shift1, scale1, gate1, shift2, scale2, gate2) */
    float *n1_w, *n1_b;     /* (w) */
    float *qkv_w, *qkv_b;   /* (3w, w), (3w) */
    float *proj_w, *proj_b; /* (w, w), (w) */
    float *n2_w, *n2_b;     /* (w) */
    float *fc1_w, *fc1_b;   /* (F, w), (F) */
    float *fc2_w, *fc2_b;   /* (w, F), (w) */
} block_params;

typedef struct {
    float *patch_w, *patch_b;            /* (w, P), (w) */
    float *pos;                          /* (L, w) */
    float *cls;                          /* (ncls, w) */
    float *t_fc1_w, *t_fc1_b;            /* (2w, w), (2w) */
    float *t_fc2_w, *t_fc2_b;            /* (w, 2w), (w) */
    float *y_table;                      /* (classes + 1, w), with labels */
    float *y_fc1_w, *y_fc1_b, *y_fc2_w, *y_fc2_b;
    block_params *enc;                   /* (depth) host array, owned by the model */
    float *enc_norm_w, *enc_norm_b;      /* (w) */
    float *mask_token;                   /* (w) */
    float *dec_pos;                      /* (L, w) */
    block_params *dec;                   /* (dec_depth) host array, owned by the model */
    float *dec_norm_w, *dec_norm_b;      /* (w) */
    float *fmod_w, *fmod_b;              /* (2w, w), (2w): cond -> (shift, scale) */
    float *head_w, *head_b;              /* (2P, w), (2P) */
} model_params;

/* What one block saves for its backward; ntok = the tokens of its seq_layout. The operand tensors
 * (ops.h) hold umd_model.opnd bytes an element: index them with opnd_at. */
typedef struct {
    float *x;                  /* (ntok, w) block input */
    float *mod;                /* (B, 6w) adaLN output, by batch row */
    float *mean1, *rstd1;      /* (ntok) */
    void *m1;                  /* (ntok, w) operand tensor: LN1 modulated, the qkv input */
    void *qkv;                 /* (ntok, 3w) operand tensor where umd_model.qkv_type says */
    float *lse;                /* per segment (n, heads, T) attention row log-sum-exps, nlse floats */
    void *att;                 /* (ntok, w) attention output before proj; bf16 where
                                  umd_model.att_type says */
    void *ao;                  /* (ntok, w) proj output; bf16 where umd_model.br_type says */
    float *x2;                 /* (ntok, w) after the attention residual */
    float *mean2, *rstd2;      /* (ntok) */
    void *m2;                  /* (ntok, w) operand tensor: LN2 modulated, the MLP input */
    void *h;                   /* (ntok, F) fc1 output, before GELU (the MLP recomputes GELU);
                                  bf16 where umd_model.h_type says */
    void *mo;                  /* (ntok, w) fc2 output; bf16 where umd_model.br_type says */
} block_acts;

/* Where a block's sequences lie in its token buffers. The encoder holds the clean rows' sequences
 * (T = ncls + keep_clean) followed by the noisy rows' (T = ncls + keep_noisy) in one buffer, so
 * every per-token op (the Linears, GELU) runs once over all of them and only attention, the
 * LayerNorm modulation and the gates, which need the sequence structure, run per segment. The
 * decoder has one segment of B rows of 1 + L tokens. */
typedef struct {
    int row0, n, T;     /* batch rows [row0, row0 + n), T tokens each */
    int keep;           /* visible tokens per row (encoder segments) */
    long tok0;          /* first token of the segment in the buffers */
    long lse0;          /* first float of the segment's attention log-sum-exps */
} seq_seg;

typedef struct {
    int nseg;
    seq_seg seg[2];
    long ntok;          /* tokens of all segments */
    long nlse;          /* floats of all segments' log-sum-exps */
    size_t mlp_tmp;     /* floats of scratch the MLP asks at ntok tokens (mlp_scratch): its tmp is
                           the replica's tH where this is not 0, else NULL */
} seq_layout;

/* One replica's activations; B here is the replica's rows (its clean rows, then its noisy ones). */
typedef struct {
    float *x0;                         /* (B, C, H, W) the batch */
    int32_t *y;                        /* (B) labels */
    int32_t *y_used;                   /* (B) labels after dropout; null class for clean rows */
    int32_t *t_net;                    /* (B) network timestep: 0 clean, idx + 1 noisy */
    float *eps;                        /* (B, C, H, W) noise (noisy rows) */
    int32_t *order;                    /* (B, L) keep order */
    int32_t *slot;                     /* (B, L) visible position or -1 */
    float *x0p, *epsp;                 /* (B, L, P) patchified targets */
    float *xin;                        /* (B, L, P) network input: x0 (clean) or x_t (noisy) */
    float *temb;                       /* (B, w) sinusoidal timestep embedding */
    float *th1, *ta1;                  /* (B, 2w) t_embed.fc1 output, after SiLU */
    float *temb2;                      /* (B, w) t_emb */
    float *ytab;                       /* (B, w) label table rows */
    float *yh1, *ya1;                  /* (B, 2w) */
    float *yemb;                       /* (B, w) y_emb */
    float *csum;                       /* (B, w) t_emb + y_emb (aliases temb2 without labels) */
    float *cond;                       /* (B, w) SiLU(csum): every block's conditioning */
    float *emb;                        /* (B, L, w) patch embeddings (no position) */
    float *rep;                        /* (B, w) mean of the cls outputs */
    block_acts *enc;                   /* (depth) host array, owned by the model; (ntok, ...) */
    float *enc_xlast;                  /* (enc ntok, w) last encoder block's output */
    float *enc_out;                    /* (enc ntok, w) after enc_norm */
    float *enc_mean, *enc_rstd;        /* (enc ntok) */
    block_acts *dec;                   /* (dec_depth) host array, owned by the model */
    float *dec_xlast;                  /* (B, 1 + L, w) last decoder block's output */
    float *fmod;                       /* (B, 2w) final (shift, scale) */
    void *fin;                         /* (B, L, w) operand tensor: dec_norm + final modulation,
                                          rep dropped; the head's input */
    float *fmean, *frstd;              /* (B*L) */
    float *pred;                       /* (B, L, 2P) head output: (pi, pj, [x0 C | eps C]) */
    /* backward temporaries (maxtok = the larger of the encoder's and the decoder's tokens) */
    float *dpred;                      /* (B, L, 2P) */
    float *dfin;                       /* (B, L, w) */
    float *dfmod;                      /* (B, 2w) */
    float *ddec;                       /* (B, 1 + L, w) gradient of the decoder stream */
    float *denc_out;                   /* (enc ntok, w) gradient of the encoder's output */
    float *denc;                       /* (enc ntok, w) gradient of the encoder's stream */
    float *tA, *tB;                    /* (maxtok, w) */
    float *tH;                         /* (maxtok, F) the MLP's scratch (mlp_fwd's and mlp_bwd's
                                          tmp), or NULL where the context's MLP runs without
                                          (mlp_scratch; replica.mlp_tmp floats) */
    void *tQ;                          /* (maxtok, 3w); bf16 where umd_model.dqkv_type says */
    float *dmod;                       /* (B, 6w) a block's adaLN gradient */
    float *dcond, *dcsum;              /* (B, w) */
    float *d2w;                        /* (B, 2w) */
    float *dw;                         /* (B, w) */
    float *demb;                       /* (B, L, w) */
    float *drep;                       /* (B, w) */
} acts;

typedef struct {
    int block;       /* -1: a top-level tensor (model_params); i < depth: encoder block i; else
                        decoder block i - depth (block_params) */
    size_t field;    /* byte offset of its pointer in model_params / block_params */
    int init;        /* INIT_* */
    float scale;     /* std of INIT_NORMAL */
} tensor_slot;

/* A replica runs the step on a share of the batch on its own context: the CPU backend runs one per
 * thread (each with a 1-thread context, so the two cores never wait for each other inside the
 * step); a single replica uses the model's context. Parameters are shared (read only during the
 * step); gradients go to the replica's own arena and are summed into replica 0's, in replica
 * order, after the backward. */
typedef struct {
    umd_ctx *ctx;           /* owned when the model has several replicas, else the model's */
    int B, nc, nn;          /* rows: nc clean (local rows [0, nc)), then nn noisy */
    int c0, n0;             /* batch rows of its first clean and of its first noisy row */
    seq_layout enc, dec;    /* its encoder's two segments (clean, noisy rows), its decoder's one */
    acts A;                 /* views into the activation arena */
    void *workspace;        /* its ops workspace, in the activation arena */
    size_t mlp_tmp;         /* floats of the MLP's scratch tH: the larger of enc's and dec's */
    float *grads;           /* (nfloats) in the gradient arena (replica 0: the model's) */
    model_params G;         /* gradient views into grads (enc / dec arrays owned) */
    double *sums;           /* (3) in its activation arena: the last step's sums of squared
                               errors (eps, x0 of the noisy rows; x0 of the clean rows) */
} replica;

struct umd_model {
    const umd_ops *ops;     /* borrowed: static table */
    umd_ctx *ctx;           /* owned: the model's context (all threads; optimiser, reductions) */
    umd_dims d;
    umd_sizes sizes;
    float label_dropout;
    int ema_on;
    int recompute;          /* train.recompute: UMD_RECOMPUTE_* (what a block keeps, model.c) */
    int recompute_auto;     /* recompute turned on because the arenas did not fit without */
    size_t opnd;            /* bytes of an operand tensor's element (ops->operand_bytes) */
    int qkv_type;           /* UMD_OPND where attention takes qkv as one (attention_operand),
                               else UMD_F32 */
    int h_type;             /* UMD_OPND where the MLP keeps h in bf16 (hidden_operand), else
                               UMD_F32 */
    int br_type;            /* UMD_OPND where the context keeps the branch tensors ao, mo in the
                               operand type (branch_operand), else UMD_F32 */
    int att_type;           /* UMD_OPND where it keeps attention's output so too (branch_operand
                               and attention_operand), else UMD_F32 */
    int grad_type;          /* UMD_OPND where it keeps the branch outputs' gradients (the dy of
                               the gated residuals, proj and the MLP) in the operand type too
                               (branch_operand and grad_operand), else UMD_F32 */
    int dqkv_type;          /* UMD_OPND where it keeps qkv's gradient so too (grad_type and
                               qkv_type), and the gradients of attention's output (proj's dx,
                               attention's dout) and of the qkv Linear's input, else UMD_F32 */
    int ntensors;
    umd_tensor *tensors;    /* owned (ntensors) */
    tensor_slot *slots;     /* owned (ntensors) */
    model_params P;         /* parameter views (enc / dec arrays owned) */
    float *params;          /* owned arena (nfloats) */
    float *grads;           /* owned arena (nrep x nfloats); replica 0's first */
    float *optim;           /* owned arena: m, v, [ema], decay mask */
    float *adam_m, *adam_v, *ema; /* views into optim */
    uint8_t *decay;         /* view into optim (nfloats bytes) */
    char *acts_base;        /* owned arena */
    float *sqrt_abar, *sqrt_1m_abar; /* (T) schedule constants, in the activation arena */
    umd_adamw_args *adam_args; /* the next update's AdamW scalars, in the activation arena */
    double *grad_sumsq;     /* the gradients' sum of squares of the last update, likewise */
    int nrep;
    replica *rep;           /* owned (nrep) */
};

/* Element i of an operand tensor of the model; of a tensor typed `type` (UMD_OPND, UMD_F32). */
static inline void *opnd_at(const umd_model *m, void *t, size_t i) { return (char *)t + i * m->opnd; }
static inline void *typed_at(const umd_model *m, void *t, int type, size_t i) {
    return type == UMD_OPND ? opnd_at(m, t, i) : (void *)((float *)t + i);
}
/* Bytes of an element of a tensor typed `type`. */
static inline size_t typed_bytes(const umd_model *m, int type) {
    return type == UMD_OPND ? m->opnd : sizeof(float);
}

#endif
