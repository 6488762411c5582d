/* run.c: the run driver, umd_run: a job config through parsing, data, the model and its arenas, an
 * optional resume, train.steps optimiser steps with progress, metric and checkpoint callbacks, and
 * the final results. It never exits and never prints to stdout; every failure comes back as a code
 * and a message.
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
#include "config.h"
#include "data.h"
#include "errlist.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "umd.h"
#include "umdq.h"
#include "util.h"

#define CKPT_NAME "ckpt.umd"

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
    if (cfg->device == UMD_DEVICE_CUDA) {
        snprintf(err, errlen, "train.device: \"cuda\" is not available: this build's trainer has "
                 "only the CPU backend (use \"cpu\" or \"auto\")");
        rc = UMDQ_EUNSUPPORTED;
        goto fail;
    }
    if (cfg->precision != UMD_PRECISION_FP32) {
        snprintf(err, errlen, "train.precision: \"%s\" needs the cuda backend; the CPU trainer "
                 "computes in fp32", cfg->precision == UMD_PRECISION_TF32 ? "tf32" : "bf16");
        rc = UMDQ_EUNSUPPORTED;
        goto fail;
    }

    rc = umd_data_load(cfg, &train, NULL, err, errlen); /* no evaluation yet: the test split stays on disk */
    if (rc) goto fail;
    rc = umd_config_check_data(cfg, train.h, train.w, train.c, errs);
    if (rc) {
        errlist_format(errs, err, errlen);
        goto fail;
    }
    umd_shape shape = {train.c, train.h, train.w, train.classes, cfg->batch};
    rc = umd_model_new(&r.m, cfg, &shape, umd_ops_cpu(), err, errlen);
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
    if (r.ev->resume_from) {
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
    umd_optim_stats st = {0, 1, 0};
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
        umd_model_step(r.m, 1, &L);
        if (!isfinite(L.loss)) {
            snprintf(err, errlen, "failed: the loss is not finite at step %lld (lr %.3g too high?)",
                     (long long)step, umd_lr_at(cfg, step));
            rc = UMDQ_EINVAL;
            goto fail;
        }
        umd_optim_step(r.m, cfg, step, umd_lr_at(cfg, step), &st);
        step++;
        sum_loss += L.loss;
        sum_noisy += L.loss_noisy;
        sum_clean += L.loss_clean;
        window++;
        if (step % cfg->log_every == 0 || step == cfg->steps) {
            double now = mono_s();
            double ips = now > t_window ? (double)window * cfg->batch / (now - t_window) : 0;
            last_mean = sum_loss / (double)window;
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
    if (r.ev->workdir) {
        rc = save_checkpoint(&r, step, &cur, err, errlen);
        if (rc) goto fail;
    }
    if (!isnan(last_mean)) result(&r, "final_loss", last_mean, NULL);
    if (step > first && seconds > 0)
        result(&r, "train_img_per_s", (double)(step - first) * cfg->batch / seconds, NULL);
    result(&r, "train_seconds", seconds, NULL);
    result(&r, "params", (double)umd_model_sizes(r.m)->nparams, NULL);
    result(&r, "device", 0, "cpu");
    rc = 0;
fail:
    free(xb);
    free(yb);
    free(r.host);
    umd_model_destroy(&r.m);
    umd_split_free(&train);
    umd_split_free(&test);
    errlist_destroy(&errs);
    return rc;
}

int umd_backend_available(const char *backend) {
    return backend && strcmp(backend, "cpu") == 0;
}
