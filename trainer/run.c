/* run.c: the run driver, umd_run: a job config through parsing, data, the model and its arenas, an
 * optional resume, train.steps optimiser steps with progress, metric and checkpoint callbacks, the
 * final results, then (finetune.steps > 0) label fine-tuning and (an eval block) the evaluation of
 * trainer/eval/. It never exits and never prints to stdout; every failure comes back as a code and
 * a message.
 *
 * Resume is exact: a step's randomness is a function of (seed, step) (Philox), the data order of
 * the cursor (seed, epoch, position) saved in the checkpoint, and the checkpoint holds the
 * parameters, AdamW's m and v and the EMA bit for bit; with the same thread count (part of the
 * config, so of its hash) the resumed run computes what the uninterrupted one would have. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ckpt.h"
#include "cuda/umd_cuda.h"
#include "config.h"
#include "data.h"
#include "errlist.h"
#include "eval/eval.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "step.h"
#include "umd.h"
#include "umdq.h"
#include "util.h"

#define CKPT_NAME "ckpt.umd"

/* A backend failure's message becomes "failed at step N: ..., MESSAGE" (device faults and out of
 * device memory reach the daemon with the step). */
static void prefix_step(char *err, size_t errlen, int64_t step) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", err);
    snprintf(err, errlen, "failed at step %lld on the device: %s", (long long)step, msg);
}

typedef struct {
    const umd_events *ev;   /* borrowed */
    umd_config cfg;
    umd_model *m;           /* owned */
    float *host;            /* owned: checkpoint staging, 4 x nfloats floats */
    char ckpt_path[1200];
} run_state;

static void run_log(const run_state *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_log(const run_state *r, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (r->ev && r->ev->log) r->ev->log(r->ev->ctx, line);
    else fprintf(stderr, "umd: %s\n", line);
}

static void metric(const run_state *r, const char *key, int64_t step, double v) {
    if (r->ev && r->ev->metric) r->ev->metric(r->ev->ctx, key, step, v);
}

/* One step of a training loop on a loaded, drawn batch: the step (or its replay, step.h), the
 * backend's status and the losses. `shown` is the step number for messages. The losses are read
 * after the update (a device step waits only once): a step whose loss is not finite has updated
 * the parameters when the caller fails the run, which saves no checkpoint from them. */
static int train_one(const run_state *r, umd_stepper *sp, umd_model *m, const umd_config *cfg,
                     int64_t step, int64_t shown, umd_losses *L, char *err, size_t errlen) {
    const umd_ops *o = umd_model_ops(m);
    int was = sp->recorded;
    int rc = umd_train_step(sp, m, cfg, step, umd_lr_at(cfg, step), err, errlen);
    if (sp->note[0]) {
        run_log(r, "%s", sp->note);
        sp->note[0] = 0;
    }
    if (rc == 0 && o->status) rc = o->status(umd_model_ctx(m), err, errlen);
    if (rc) {
        prefix_step(err, errlen, shown);
        return rc;
    }
    if (sp->recorded && !was)
        run_log(r, "the training step is recorded (a CUDA graph) and replayed from step %lld",
                (long long)shown);
    umd_model_losses(m, L);
    return 0;
}

static void result(const run_state *r, const char *key, double v, const char *text) {
    if (r->ev && r->ev->result) r->ev->result(r->ev->ctx, key, v, text);
}

/* The checkpoint's sections over the host staging buffer. Returns how many. */
static int sections(run_state *r, umd_ckpt_section *s) {
    size_t nf = umd_model_sizes(r->m)->nfloats;
    uint64_t bytes = (uint64_t)nf * sizeof(float);
    const char *names[4] = {"params", "adam_m", "adam_v", "ema"};
    int n = umd_model_ema(r->m) ? 4 : 3;
    for (int i = 0; i < n; i++) {
        s[i].name = names[i];
        s[i].data = r->host + (size_t)i * nf;
        s[i].bytes = bytes;
    }
    return n;
}

static int save_checkpoint(run_state *r, int64_t step, const umd_cursor *cur, char *err,
                           size_t errlen) {
    umd_ckpt_section s[4];
    int n = sections(r, s);
    const umd_ops *o = umd_model_ops(r->m);
    umd_ctx *c = umd_model_ctx(r->m);
    float *src[4] = {umd_model_params(r->m), umd_model_adam_m(r->m), umd_model_adam_v(r->m),
                     umd_model_ema(r->m)};
    for (int i = 0; i < n; i++) o->download(c, s[i].data, src[i], s[i].bytes);
    umd_ckpt_header h;
    memset(&h, 0, sizeof h);
    snprintf(h.config_hash, sizeof h.config_hash, "%s", r->cfg.hash);
    h.step = step;
    h.seed = r->cfg.seed;
    h.cursor = *cur;
    h.meta = NULL;
    int rc = umd_ckpt_write(r->ckpt_path, &h, s, n, err, errlen);
    if (rc) return rc;
    if (r->ev->checkpoint) {
        rc = r->ev->checkpoint(r->ev->ctx, r->ckpt_path, step);
        if (rc) {
            snprintf(err, errlen, "the checkpoint callback failed at step %lld (%s)", (long long)step,
                     umdq_strerror(rc));
            return rc < 0 ? rc : UMDQ_EIO;
        }
    }
    return 0;
}

static int load_checkpoint(run_state *r, const char *path, int64_t *step, umd_cursor *cur,
                           char *err, size_t errlen) {
    umd_ckpt_section s[4];
    int n = sections(r, s);
    umd_ckpt_header h;
    memset(&h, 0, sizeof h);
    int rc = umd_ckpt_read(path, r->cfg.hash, &h, s, n, err, errlen);
    if (rc) return rc;
    cJSON_Delete(h.meta);
    if (h.seed != r->cfg.seed || h.step < 0 || h.step > r->cfg.steps) {
        snprintf(err, errlen, "%s: step %lld, seed %llu do not fit this run (%lld steps, seed %llu)",
                 path, (long long)h.step, (unsigned long long)h.seed, (long long)r->cfg.steps,
                 (unsigned long long)r->cfg.seed);
        return UMDQ_EFORMAT;
    }
    const umd_ops *o = umd_model_ops(r->m);
    umd_ctx *c = umd_model_ctx(r->m);
    float *dst[4] = {umd_model_params(r->m), umd_model_adam_m(r->m), umd_model_adam_v(r->m),
                     umd_model_ema(r->m)};
    for (int i = 0; i < n; i++) o->upload(c, dst[i], s[i].data, s[i].bytes);
    *step = h.step;
    *cur = h.cursor;
    return 0;
}

/* ---- label fine-tuning (UMD.md "Label fine-tuning") ---------------------------------------------
 *
 * After pre-training, a second model of the same architecture with labels (a fresh label
 * embedding) takes the pre-trained weights tensor by tensor, a new AdamW (finetune.*), noisy rows
 * unmasked, r_t0 = finetune.r_t0, label dropout, and an EMA of the weights to sample from. Its
 * checkpoints replace ckpt.umd with meta {"phase": "finetune"} and sections params, adam_m,
 * adam_v, ema (the fine-tuned model's) and pre_params (the pre-trained weights, which the probes
 * read); a run resumed from one skips pre-training and continues fine-tuning bit for bit (its
 * draws are (seed + 1, step), its data cursor is saved). */

static umd_config finetune_config(const umd_config *cfg) {
    umd_config f = *cfg;
    f.labels = 1;
    f.r_t0 = cfg->ft_r_t0;
    f.mask_ratio = cfg->ft_mask_ratio;
    f.label_dropout = cfg->ft_label_dropout;
    f.ema = cfg->ft_ema;
    f.batch = cfg->ft_batch;
    f.steps = cfg->ft_steps;
    f.lr = cfg->ft_lr;
    f.warmup = cfg->ft_warmup;
    f.beta2 = cfg->ft_beta2;
    f.weight_decay = cfg->ft_weight_decay;
    return f;
}

/* 1 when the checkpoint at path was written during fine-tuning. */
static int is_finetune_checkpoint(const char *path) {
    umd_ckpt_header h;
    char e[256];
    memset(&h, 0, sizeof h);
    if (umd_ckpt_read_header(path, &h, e, sizeof e) != 0) return 0;
    const cJSON *ph = cJSON_GetObjectItemCaseSensitive(h.meta, "phase");
    int yes = cJSON_IsString(ph) && strcmp(ph->valuestring, "finetune") == 0;
    cJSON_Delete(h.meta);
    return yes;
}

typedef struct {
    umd_config cfg;     /* the fine-tuning config (finetune_config) */
    umd_model *m;       /* owned */
    float *host;        /* owned: staging, 4 x nfloats of m + nfloats of the pre-trained model */
    double pre_loss;    /* pre-training's final_loss (NAN unknown): kept in the checkpoints' meta
                           so a run resumed during fine-tuning still reports it */
} finetune_state;

/* Sections of a fine-tuning checkpoint over f->host; pre is the pre-trained model. */
static int ft_sections(finetune_state *f, umd_model *pre, umd_ckpt_section *s) {
    size_t nf = umd_model_sizes(f->m)->nfloats, np = umd_model_sizes(pre)->nfloats;
    const char *names[4] = {"params", "adam_m", "adam_v", "ema"};
    int n = 0;
    for (int i = 0; i < 4; i++) {
        if (i == 3 && !umd_model_ema(f->m)) break;
        s[n].name = names[i];
        s[n].data = f->host + (size_t)i * nf;
        s[n].bytes = (uint64_t)nf * sizeof(float);
        n++;
    }
    s[n].name = "pre_params";
    s[n].data = f->host + 4 * nf;
    s[n].bytes = (uint64_t)np * sizeof(float);
    return n + 1;
}

static int ft_save(run_state *r, finetune_state *f, int64_t step, const umd_cursor *cur, char *err,
                   size_t errlen) {
    umd_ckpt_section s[5];
    int n = ft_sections(f, r->m, s);
    const umd_ops *o = umd_model_ops(f->m);
    float *src[5] = {umd_model_params(f->m), umd_model_adam_m(f->m), umd_model_adam_v(f->m),
                     umd_model_ema(f->m), NULL};
    for (int i = 0; i < n - 1; i++) o->download(umd_model_ctx(f->m), s[i].data, src[i], s[i].bytes);
    o->download(umd_model_ctx(r->m), s[n - 1].data, umd_model_params(r->m), s[n - 1].bytes);
    umd_ckpt_header h;
    memset(&h, 0, sizeof h);
    snprintf(h.config_hash, sizeof h.config_hash, "%s", r->cfg.hash);
    h.step = step;
    h.seed = r->cfg.seed;
    h.cursor = *cur;
    h.meta = cJSON_CreateObject();
    char loss_text[40]; /* %.17g text: cJSON's own number printing may drop the last bits */
    snprintf(loss_text, sizeof loss_text, "%.17g", f->pre_loss);
    if (h.meta && isfinite(f->pre_loss) && !cJSON_AddStringToObject(h.meta, "final_loss", loss_text)) {
        cJSON_Delete(h.meta);
        h.meta = NULL;
    }
    if (!h.meta || !cJSON_AddStringToObject(h.meta, "phase", "finetune")) {
        cJSON_Delete(h.meta);
        snprintf(err, errlen, "out of memory");
        return UMDQ_ENOMEM;
    }
    int rc = umd_ckpt_write(r->ckpt_path, &h, s, n, err, errlen);
    cJSON_Delete(h.meta);
    if (rc) return rc;
    if (r->ev->checkpoint) {
        rc = r->ev->checkpoint(r->ev->ctx, r->ckpt_path, r->cfg.steps + step);
        if (rc) {
            snprintf(err, errlen, "the checkpoint callback failed at fine-tuning step %lld (%s)",
                     (long long)step, umdq_strerror(rc));
            return rc < 0 ? rc : UMDQ_EIO;
        }
    }
    return 0;
}

/* Fine-tune from r->m's weights (or resume from resume_from when it is a fine-tuning
 * checkpoint, which also restores r->m's pre-trained weights). On success f->m is the model. */
static int finetune(run_state *r, finetune_state *f, const umd_split *train, const char *resume_from,
                    char *err, size_t errlen) {
    const umd_ops *o = umd_model_ops(r->m);
    float *xb = NULL;   /* owned */
    int32_t *yb = NULL; /* owned */
    int rc;
    f->cfg = finetune_config(&r->cfg);
    const umd_config *fc = &f->cfg;
    umd_shape shape = {train->c, train->h, train->w, train->classes, fc->batch};
    rc = umd_model_new(&f->m, fc, &shape, o, err, errlen);
    if (rc) return rc;
    size_t nf = umd_model_sizes(f->m)->nfloats, np = umd_model_sizes(r->m)->nfloats;
    size_t CHW = (size_t)train->c * train->h * train->w;
    f->host = malloc((4 * nf + np) * sizeof(float));
    xb = malloc((size_t)fc->batch * CHW * sizeof(float));
    yb = malloc((size_t)fc->batch * sizeof(int32_t));
    if (!f->host || !xb || !yb) {
        snprintf(err, errlen, "out of memory for fine-tuning");
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    const uint64_t seed = r->cfg.seed + 1;
    int64_t step = 0;
    umd_cursor cur = {seed, 0, 0};
    if (resume_from) {
        umd_ckpt_section s[5];
        int n = ft_sections(f, r->m, s);
        umd_ckpt_header h;
        memset(&h, 0, sizeof h);
        rc = umd_ckpt_read(resume_from, r->cfg.hash, &h, s, n, err, errlen);
        if (rc) goto fail;
        const cJSON *pl = cJSON_GetObjectItemCaseSensitive(h.meta, "final_loss");
        if (cJSON_IsString(pl)) {
            f->pre_loss = strtod(pl->valuestring, NULL);
            result(r, "final_loss", f->pre_loss, NULL);
        }
        cJSON_Delete(h.meta);
        if (h.step < 0 || h.step > fc->steps) {
            snprintf(err, errlen, "%s: fine-tuning step %lld does not fit this run (%lld steps)",
                     resume_from, (long long)h.step, (long long)fc->steps);
            rc = UMDQ_EFORMAT;
            goto fail;
        }
        float *dst[4] = {umd_model_params(f->m), umd_model_adam_m(f->m), umd_model_adam_v(f->m),
                         umd_model_ema(f->m)};
        for (int i = 0; i < n - 1; i++) o->upload(umd_model_ctx(f->m), dst[i], s[i].data, s[i].bytes);
        o->upload(umd_model_ctx(r->m), umd_model_params(r->m), s[n - 1].data, s[n - 1].bytes);
        step = h.step;
        cur = h.cursor;
        run_log(r, "resumed fine-tuning from %s at step %lld", resume_from, (long long)step);
    } else {
        /* fresh label embedding (and everything else) from the init, then the pre-trained
         * tensors by name; the EMA starts at the result */
        umd_model_init(f->m, seed);
        int copied = 0;
        for (int i = 0; i < umd_model_ntensors(f->m); i++) {
            const umd_tensor *t = umd_model_tensor(f->m, i);
            const umd_tensor *src = umd_model_find(r->m, t->name);
            if (!src || src->size != t->size) continue;
            o->copy(umd_model_ctx(f->m), umd_model_params(f->m) + t->offset,
                    umd_model_params(r->m) + src->offset, t->size);
            copied++;
        }
        if (umd_model_ema(f->m))
            o->copy(umd_model_ctx(f->m), umd_model_ema(f->m), umd_model_params(f->m), nf);
        run_log(r, "fine-tuning: %d of %d tensors from pre-training, %lld steps of batch %d with "
                "labels, r_t0 %g, mask ratio %g, label dropout %g, EMA %g, peak lr %.3g", copied,
                umd_model_ntensors(f->m), (long long)fc->steps, fc->batch, fc->r_t0,
                fc->mask_ratio, fc->label_dropout, fc->ema, fc->lr);
    }
    double sum = 0, last = NAN, t_window = mono_s();
    int64_t window = 0;
    umd_stepper sp = {0};
    while (step < fc->steps) {
        if (r->ev->should_stop && r->ev->should_stop(r->ev->ctx)) {
            if (r->ev->workdir && (rc = ft_save(r, f, step, &cur, err, errlen)) != 0) goto fail;
            snprintf(err, errlen, "stopped on request at fine-tuning step %lld%s", (long long)step,
                     r->ev->workdir ? " (checkpoint written)" : "");
            rc = UMDQ_ECANCELLED;
            goto fail;
        }
        umd_data_next_batch(train, &cur, fc->batch, fc->augment, xb, yb);
        umd_model_load_batch(f->m, xb, yb);
        umd_model_draw(f->m, seed, step);
        umd_losses L;
        rc = train_one(r, &sp, f->m, fc, step, r->cfg.steps + step, &L, err, errlen);
        if (rc) goto fail;
        if (!isfinite(L.loss)) {
            snprintf(err, errlen, "failed: the fine-tuning loss is not finite at step %lld",
                     (long long)step);
            rc = UMDQ_EINVAL;
            goto fail;
        }
        step++;
        sum += L.loss;
        window++;
        if (step % fc->log_every == 0 || step == fc->steps) {
            double now = mono_s();
            double ips = now > t_window ? (double)window * fc->batch / (now - t_window) : 0;
            last = sum / (double)window;
            metric(r, "ft_loss", step, last);
            if (r->ev->progress) r->ev->progress(r->ev->ctx, r->cfg.steps + step,
                                                 r->cfg.steps + fc->steps, last, ips);
            sum = 0;
            window = 0;
            t_window = mono_s();
        }
        if (r->ev->workdir && fc->ckpt_every > 0 && step % fc->ckpt_every == 0 && step < fc->steps &&
            (rc = ft_save(r, f, step, &cur, err, errlen)) != 0)
            goto fail;
    }
    if (r->ev->workdir && (rc = ft_save(r, f, step, &cur, err, errlen)) != 0) goto fail;
    if (!isnan(last)) result(r, "finetune_final_loss", last, NULL);
    rc = 0;
fail:
    free(xb);
    free(yb);
    return rc;
}

int umd_run(const cJSON *config, const umd_events *ev, char *err, size_t errlen) {
    static const umd_events no_events;
    run_state r;
    memset(&r, 0, sizeof r);
    r.ev = ev ? ev : &no_events;
    errlist *errs = errlist_new(); /* owned */
    umd_split train, test;
    memset(&train, 0, sizeof train);
    memset(&test, 0, sizeof test);
    float *xb = NULL;   /* owned: (B, C, H, W) host batch */
    int32_t *yb = NULL; /* owned: (B) labels */
    finetune_state ft;
    memset(&ft, 0, sizeof ft);
    int ft_resume = 0;  /* resuming from a fine-tuning checkpoint: pre-training is done */
    int rc;
    if (!errs) {
        snprintf(err, errlen, "out of memory");
        return UMDQ_ENOMEM;
    }

    rc = umd_config_parse(config, &r.cfg, errs);
    if (rc) {
        errlist_format(errs, err, errlen);
        goto fail;
    }
    const umd_config *cfg = &r.cfg;
    /* the backend: cuda when asked for, or with "auto" when a device is visible; tf32 and bf16
     * only on cuda */
    const umd_ops *ops = umd_ops_cpu();
    {
        char why[256] = "";
        int gpus = 0;
        /* a CPU job never loads the CUDA backend, let alone touches the driver */
        if (umd_cuda_built(why, sizeof why) && cfg->device != UMD_DEVICE_CPU)
            gpus = umd_cuda_devices(why, sizeof why);
        int want_cuda = cfg->device == UMD_DEVICE_CUDA || (cfg->device == UMD_DEVICE_AUTO && gpus > 0);
        if (want_cuda && gpus <= 0) {
            snprintf(err, errlen, "train.device: \"cuda\" is not available: %s (use \"cpu\" or "
                     "\"auto\")", why);
            rc = UMDQ_EUNSUPPORTED;
            goto fail;
        }
        if (!want_cuda && cfg->precision != UMD_PRECISION_FP32) {
            snprintf(err, errlen, "train.precision: \"%s\" needs the cuda backend; the CPU trainer "
                     "computes in fp32 (%s)", cfg->precision == UMD_PRECISION_TF32 ? "tf32" : "bf16",
                     cfg->device == UMD_DEVICE_CPU ? "train.device is cpu" : why);
            rc = UMDQ_EUNSUPPORTED;
            goto fail;
        }
        if (want_cuda)
            ops = umd_ops_cuda(cfg->precision == UMD_PRECISION_TF32   ? UMD_MATH_TF32
                               : cfg->precision == UMD_PRECISION_BF16 ? UMD_MATH_BF16
                                                                      : UMD_MATH_FP32);
    }

    rc = umd_data_load(cfg, &train, NULL, err, errlen); /* no evaluation yet: the test split stays on disk */
    if (rc) goto fail;
    rc = umd_config_check_data(cfg, train.h, train.w, train.c, errs);
    if (rc) {
        errlist_format(errs, err, errlen);
        goto fail;
    }
    umd_shape shape = {train.c, train.h, train.w, train.classes, cfg->batch};
    rc = umd_model_new(&r.m, cfg, &shape, ops, err, errlen);
    if (rc) goto fail;
    char line[512];
    umd_model_describe(r.m, line, sizeof line);
    run_log(&r, "%s", line);
    const umd_dims *d = umd_model_dims(r.m);
    run_log(&r, "data: %lld training images %dx%dx%d, %d classes; model: %zu parameters, L = %d "
            "tokens of %d values; %lld steps of batch %d, peak lr %.3g", (long long)train.n,
            train.c, train.h, train.w, train.classes, umd_model_sizes(r.m)->nparams, d->L, d->P,
            (long long)cfg->steps, cfg->batch, cfg->lr);

    size_t nf = umd_model_sizes(r.m)->nfloats;
    size_t CHW = (size_t)train.c * train.h * train.w;
    r.host = malloc(4 * nf * sizeof(float));
    xb = malloc((size_t)cfg->batch * CHW * sizeof(float));
    yb = malloc((size_t)cfg->batch * sizeof(int32_t));
    if (!r.host || !xb || !yb) {
        snprintf(err, errlen, "out of memory");
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    if (r.ev->workdir) {
        rc = mkdir_p(r.ev->workdir, 0755);
        if (rc) {
            snprintf(err, errlen, "cannot create the work directory %s", r.ev->workdir);
            goto fail;
        }
        snprintf(r.ckpt_path, sizeof r.ckpt_path, "%s/%s", r.ev->workdir, CKPT_NAME);
    }

    int64_t step = 0;
    umd_cursor cur = {cfg->seed, 0, 0};
    if (r.ev->resume_from && cfg->ft_steps > 0 && is_finetune_checkpoint(r.ev->resume_from)) {
        ft_resume = 1;
        step = cfg->steps;
    } else if (r.ev->resume_from) {
        rc = load_checkpoint(&r, r.ev->resume_from, &step, &cur, err, errlen);
        if (rc) goto fail;
        run_log(&r, "resumed from %s at step %lld", r.ev->resume_from, (long long)step);
    } else {
        umd_model_init(r.m, cfg->seed);
    }

    /* the loop */
    const int64_t first = step;
    double t_start = mono_s(), t_window = t_start;
    double sum_loss = 0, sum_noisy = 0, sum_clean = 0, last_mean = NAN;
    int64_t window = 0;
    umd_stepper sp = {0};
    while (step < cfg->steps) {
        if (r.ev->should_stop && r.ev->should_stop(r.ev->ctx)) {
            if (r.ev->workdir) {
                rc = save_checkpoint(&r, step, &cur, err, errlen);
                if (rc) goto fail;
            }
            snprintf(err, errlen, "stopped on request at step %lld%s", (long long)step,
                     r.ev->workdir ? " (checkpoint written)" : "");
            rc = UMDQ_ECANCELLED;
            goto fail;
        }
        umd_data_next_batch(&train, &cur, cfg->batch, cfg->augment, xb, yb);
        umd_model_load_batch(r.m, xb, yb);
        umd_model_draw(r.m, cfg->seed, step);
        umd_losses L;
        rc = train_one(&r, &sp, r.m, cfg, step, step, &L, err, errlen);
        if (rc) goto fail;
        if (!isfinite(L.loss)) {
            snprintf(err, errlen, "failed: the loss is not finite at step %lld (lr %.3g too high?)",
                     (long long)step, umd_lr_at(cfg, step));
            rc = UMDQ_EINVAL;
            goto fail;
        }
        step++;
        sum_loss += L.loss;
        sum_noisy += L.loss_noisy;
        sum_clean += L.loss_clean;
        window++;
        if (step % cfg->log_every == 0 || step == cfg->steps) {
            double now = mono_s();
            double ips = now > t_window ? (double)window * cfg->batch / (now - t_window) : 0;
            last_mean = sum_loss / (double)window;
            umd_optim_stats st;
            umd_optim_read_stats(r.m, cfg, umd_lr_at(cfg, step - 1), &st);
            metric(&r, "loss", step, last_mean);
            metric(&r, "loss_noisy", step, sum_noisy / (double)window);
            metric(&r, "loss_clean", step, sum_clean / (double)window);
            metric(&r, "lr", step, st.lr);
            metric(&r, "grad_norm", step, st.grad_norm);
            metric(&r, "img_per_s", step, ips);
            if (r.ev->progress) r.ev->progress(r.ev->ctx, step, cfg->steps, last_mean, ips);
            sum_loss = sum_noisy = sum_clean = 0;
            window = 0;
            t_window = mono_s();
        }
        if (r.ev->workdir && cfg->ckpt_every > 0 && step % cfg->ckpt_every == 0 &&
            step < cfg->steps) {
            rc = save_checkpoint(&r, step, &cur, err, errlen);
            if (rc) goto fail;
        }
    }
    double seconds = mono_s() - t_start;
    if (r.ev->workdir && !ft_resume) {
        rc = save_checkpoint(&r, step, &cur, err, errlen);
        if (rc) goto fail;
    }
    if (!isnan(last_mean)) result(&r, "final_loss", last_mean, NULL);
    if (step > first && seconds > 0)
        result(&r, "train_img_per_s", (double)(step - first) * cfg->batch / seconds, NULL);
    result(&r, "train_seconds", seconds, NULL);
    result(&r, "params", (double)umd_model_sizes(r.m)->nparams, NULL);
    result(&r, "device", 0, ops->name);

    /* fine-tuning, then the evaluation: probes on the pre-trained weights, samples from the
     * fine-tuned EMA (or the pre-trained weights without fine-tuning) */
    double t_after = mono_s();
    umd_model *gen = r.m;
    umd_config gen_cfg = r.cfg;
    if (cfg->ft_steps > 0) {
        ft.pre_loss = last_mean;
        rc = finetune(&r, &ft, &train, ft_resume ? r.ev->resume_from : NULL, err, errlen);
        if (rc) goto fail;
        gen = ft.m;
        gen_cfg = ft.cfg;
    }
    if (cfg->eval_on) {
        rc = umd_data_load(cfg, NULL, &test, err, errlen);
        if (rc) goto fail;
        rc = umd_eval_representation(r.m, cfg, &train, &test, r.ev, err, errlen);
        if (rc) goto fail;
        rc = umd_eval_generation(gen, cfg->ft_steps > 0, &gen_cfg, &train, &test, r.ev, err,
                                 errlen);
        if (rc) goto fail;
    }
    result(&r, "device_hours", (seconds + (mono_s() - t_after)) / 3600.0, NULL);
    rc = 0;
fail:
    free(xb);
    free(yb);
    free(r.host);
    free(ft.host);
    umd_model_destroy(&ft.m);
    umd_model_destroy(&r.m);
    umd_split_free(&train);
    umd_split_free(&test);
    errlist_destroy(&errs);
    return rc;
}

/* "cuda" when the build has the CUDA backend; whether a device is there is the worker's business
 * (devices.c). The backend is not opened: asking CUDA here would initialise it in the worker's
 * parent process, whose forked trainer children could then not use it, and merely loading cuBLAS
 * would make every fork of that process slow. */
int umd_backend_available(const char *backend) {
    if (!backend) return 0;
    if (strcmp(backend, "cpu") == 0) return 1;
    return strcmp(backend, "cuda") == 0 && umd_cuda_built(NULL, 0);
}
