/* optim.c: one optimiser step (global-norm clip, AdamW, EMA) and the learning-rate schedule.
 * The bias corrections and the clip factor are host scalars; the update itself is the ops'
 * adamw over the whole parameter arena with the model's per-element decay mask (alignment
 * padding between tensors has zero gradients and stays zero). */
#include <math.h>
#include "model.h"
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

void umd_optim_step(umd_model *m, const umd_config *cfg, int64_t step, double lr,
                    umd_optim_stats *stats) {
    const umd_ops *o = umd_model_ops(m);
    umd_ctx *c = umd_model_ctx(m);
    size_t n = umd_model_sizes(m)->nfloats;
    double norm = sqrt(o->sumsq(c, umd_model_grads(m), n));
    double scale = 1.0;
    if (cfg->clip > 0) {
        /* PyTorch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1, computed in fp32 */
        float coef = (float)cfg->clip / ((float)norm + 1e-6f);
        if (coef < 1.0f) scale = coef;
    }
    double t = (double)(step + 1);
    umd_adamw_args a;
    a.lr = (float)lr;
    a.beta1 = (float)cfg->beta1;
    a.beta2 = (float)cfg->beta2;
    a.eps = (float)cfg->adam_eps;
    a.weight_decay = (float)cfg->weight_decay;
    a.bias_correction1 = (float)(1.0 - pow(cfg->beta1, t));
    a.bias_correction2 = (float)(1.0 - pow(cfg->beta2, t));
    a.grad_scale = (float)scale;
    o->adamw(c, umd_model_params(m), umd_model_grads(m), umd_model_adam_m(m), umd_model_adam_v(m),
             umd_model_decay_mask(m), n, &a);
    if (cfg->ema > 0 && umd_model_ema(m))
        o->ema(c, umd_model_ema(m), umd_model_params(m), n, (float)cfg->ema);
    if (stats) {
        stats->grad_norm = norm;
        stats->clip_scale = scale;
        stats->lr = lr;
    }
}
