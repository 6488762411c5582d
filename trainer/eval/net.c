/* net.c: evaluation nets (see net.h): a umd_model configured for one kind of pass, its weights
 * copied from the trained model, and the host glue that pads a short batch and reads the rep and
 * head outputs of each replica back in batch order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_internal.h"
#include "net.h"
#include "umdq.h"

struct umd_evalnet {
    umd_evalnet_kind kind;
    umd_model *m;       /* owned */
    int B;
    size_t CHW;
    float *x;           /* owned: (B, C, H, W) padded host batch */
    int32_t *t_net;     /* owned: (B) */
    int32_t *y;         /* owned: (B) */
    int32_t *order;     /* owned: (B, L) identity keep orders */
};

int umd_evalnet_new(umd_evalnet **out, umd_evalnet_kind kind, const umd_config *cfg,
                    const umd_shape *shape, int batch, double mask, const umd_ops *ops, char *err,
                    size_t errlen) {
    umd_evalnet *n = calloc(1, sizeof *n);
    int rc = UMDQ_ENOMEM;
    *out = NULL;
    if (!n) goto oom;
    n->kind = kind;
    n->B = batch;
    umd_config c = *cfg;
    c.batch = batch;
    c.ema = 0;
    c.label_dropout = 0;
    switch (kind) {
    case UMD_EVALNET_FORWARD:
        c.r_t0 = 1.0;
        c.mask_ratio_t0 = 0.0;
        break;
    case UMD_EVALNET_DENOISE:
        c.r_t0 = 0.0;
        c.mask_ratio = 0.0;
        break;
    case UMD_EVALNET_RECON:
        c.r_t0 = 1.0;
        c.mask_ratio_t0 = mask;
        break;
    }
    umd_shape s = *shape;
    s.batch = batch;
    rc = umd_model_new(&n->m, &c, &s, ops, err, errlen);
    if (rc) goto fail;
    const umd_dims *d = umd_model_dims(n->m);
    n->CHW = (size_t)d->C * d->H * d->W;
    n->x = calloc((size_t)batch * n->CHW, sizeof(float));
    n->t_net = calloc((size_t)batch, sizeof(int32_t));
    n->y = calloc((size_t)batch, sizeof(int32_t));
    n->order = malloc((size_t)batch * d->L * sizeof(int32_t));
    if (!n->x || !n->t_net || !n->y || !n->order) goto oom;
    for (int b = 0; b < batch; b++)
        for (int l = 0; l < d->L; l++) n->order[(size_t)b * d->L + l] = l;
    *out = n;
    return 0;
oom:
    snprintf(err, errlen, "out of memory for an evaluation net of batch %d", batch);
    rc = UMDQ_ENOMEM;
fail:
    umd_evalnet_destroy(&n);
    return rc;
}

void umd_evalnet_destroy(umd_evalnet **pn) {
    if (!pn || !*pn) return;
    umd_evalnet *n = *pn;
    umd_model_destroy(&n->m);
    free(n->x);
    free(n->t_net);
    free(n->y);
    free(n->order);
    free(n);
    *pn = NULL;
}

umd_model *umd_evalnet_model(umd_evalnet *n) { return n->m; }
int umd_evalnet_batch(const umd_evalnet *n) { return n->B; }

int umd_evalnet_load(umd_evalnet *n, umd_model *src, int use_ema, char *err, size_t errlen) {
    const umd_sizes *a = umd_model_sizes(n->m), *b = umd_model_sizes(src);
    if (a->nfloats != b->nfloats || umd_model_ntensors(n->m) != umd_model_ntensors(src)) {
        snprintf(err, errlen, "evaluation: the net's layout (%zu floats) differs from the trained "
                 "model's (%zu)", a->nfloats, b->nfloats);
        return UMDQ_EINVAL;
    }
    const umd_ops *o = umd_model_ops(n->m);
    /* the source's queued work first (a device backend runs each context on its own stream) */
    int rc = o->status ? o->status(umd_model_ctx(src), err, errlen) : 0;
    if (rc) return rc;
    const float *w = use_ema && umd_model_ema(src) ? umd_model_ema(src) : umd_model_params(src);
    o->copy(umd_model_ctx(n->m), umd_model_params(n->m), w, a->nfloats);
    return umd_evalnet_status(n, err, errlen);
}

int umd_evalnet_status(umd_evalnet *n, char *err, size_t errlen) {
    const umd_ops *o = umd_model_ops(n->m);
    return o->status ? o->status(umd_model_ctx(n->m), err, errlen) : 0;
}

void umd_evalnet_forward(umd_evalnet *net, const float *x, const int32_t *t_net, const int32_t *y,
                         int n, float *rep, float *pred) {
    umd_model *m = net->m;
    const umd_dims *d = umd_model_dims(m);
    const int B = net->B;
    if (n > B) n = B;
    /* rows past n repeat row 0 (their outputs are dropped) */
    memcpy(net->x, x, (size_t)n * net->CHW * sizeof(float));
    for (int b = n; b < B; b++) memcpy(net->x + (size_t)b * net->CHW, x, net->CHW * sizeof(float));
    for (int b = 0; b < B; b++) {
        net->t_net[b] = t_net[b < n ? b : 0];
        net->y[b] = y && d->labels ? y[b < n ? b : 0] : d->classes;
    }
    umd_model_load_batch(m, net->x, net->y);
    umd_model_set_draws(m, net->t_net, NULL, net->order, net->y);
    umd_model_step(m, 0, NULL);
    /* every row is a clean row: replica r holds batch rows [c0, c0 + nc) at local rows [0, nc) */
    const size_t w = (size_t)d->w, pr = (size_t)d->L * 2 * d->P;
    for (int r = 0; r < m->nrep; r++) {
        replica *rp = &m->rep[r];
        int lo = rp->c0, hi = rp->c0 + rp->nc;
        if (hi > n) hi = n;
        if (hi <= lo) continue;
        if (rep)
            m->ops->download(rp->ctx, rep + (size_t)lo * w, rp->A.rep, (size_t)(hi - lo) * w * sizeof(float));
        if (pred)
            m->ops->download(rp->ctx, pred + (size_t)lo * pr, rp->A.pred,
                             (size_t)(hi - lo) * pr * sizeof(float));
    }
}

void umd_evalnet_losses(umd_evalnet *net, const float *x, const int32_t *y, uint64_t seed,
                        int64_t index, umd_losses *out) {
    umd_model_load_batch(net->m, x, y);
    umd_model_draw(net->m, seed, index);
    umd_model_step(net->m, 0, out);
}
