/* optim.c: one optimiser step (global-norm clip, AdamW, EMA) and the learning-rate schedule.
 * The bias corrections are computed on the host and uploaded with the other AdamW scalars; the
 * gradients' sum of squares and the clip factor stay on the backend (ops.h's sumsq and adamw),
 * so an update never waits for a device. The update itself is the ops' adamw over the whole
 * parameter arena with the model's per-element decay mask (alignment padding between tensors has
 * zero gradients and stays zero). */
#include <math.h>
#include "model_internal.h"
#include "optim.h"

double umd_lr_at(const umd_config *cfg, int64_t step) {
    int64_t total = cfg->steps > 0 ? cfg->steps : 1;
    int64_t warm = (int64_t)floor(cfg->warmup * (double)total);
    if (warm > total) warm = total;
    if (step < warm) return cfg->lr * (double)(step + 1) / (double)warm;
    int64_t rest = total - warm;
    double progress = rest > 0 ? (double)(step - warm) / (double)rest : 1.0;
    if (progress > 1.0) progress = 1.0;
    return cfg->lr * 0.5 * (1.0 + cos(M_PI * progress));
}

void umd_optim_prepare(umd_model *m, const umd_config *cfg, int64_t step, double lr) {
    double t = (double)(step + 1);
    umd_adamw_args a;
    a.lr = (float)lr;
    a.beta1 = (float)cfg->beta1;
    a.beta2 = (float)cfg->beta2;
    a.eps = (float)cfg->adam_eps;
    a.weight_decay = (float)cfg->weight_decay;
    a.bias_correction1 = (float)(1.0 - pow(cfg->beta1, t));
    a.bias_correction2 = (float)(1.0 - pow(cfg->beta2, t));
    a.max_norm = cfg->clip > 0 ? (float)cfg->clip : 0.0f;
    m->ops->upload(m->ctx, m->adam_args, &a, sizeof a);
}

void umd_optim_apply(umd_model *m, const umd_config *cfg) {
    const umd_ops *o = m->ops;
    size_t n = m->sizes.nfloats;
    o->sumsq(m->ctx, m->grad_sumsq, m->grads, n);
    o->adamw(m->ctx, m->params, m->grads, m->adam_m, m->adam_v, m->decay, n, m->adam_args,
             m->grad_sumsq);
    if (cfg->ema > 0 && m->ema) o->ema(m->ctx, m->ema, m->params, n, (float)cfg->ema);
}

void umd_optim_read_stats(umd_model *m, const umd_config *cfg, double lr, umd_optim_stats *st) {
    double ss = 0;
    m->ops->download(m->ctx, &ss, m->grad_sumsq, sizeof ss);
    st->grad_norm = sqrt(ss);
    st->clip_scale = umd_clip_factor(cfg->clip > 0 ? (float)cfg->clip : 0.0f, ss);
    st->lr = lr;
}

void umd_optim_step(umd_model *m, const umd_config *cfg, int64_t step, double lr,
                    umd_optim_stats *stats) {
    umd_optim_prepare(m, cfg, step, lr);
    umd_optim_apply(m, cfg);
    if (stats) umd_optim_read_stats(m, cfg, lr, stats);
}
