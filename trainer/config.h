/* config.h: a job config (JSON, keys in common/schema.c) turned into the trainer's typed struct.
 * Every field's default and range live in the schema table; this file adds the cross-key checks
 * (width divisible by heads, image size divisible by patch once the data set is known, ...). */
#ifndef UMDQ_TRAINER_CONFIG_H
#define UMDQ_TRAINER_CONFIG_H
#include <cjson/cJSON.h>
#include <stdint.h>
#include "errlist.h"

/* in the order of data.dataset's choices (common/schema_keys.c) */
typedef enum {
    UMD_DATA_FASHION_MNIST,
    UMD_DATA_MNIST,
    UMD_DATA_CIFAR10,
    UMD_DATA_SYNTHETIC,
    UMD_DATA_IMAGENET64
} umd_dataset_kind;
typedef enum { UMD_SCHEDULE_COSINE, UMD_SCHEDULE_LINEAR } umd_schedule;
typedef enum { UMD_DEVICE_AUTO, UMD_DEVICE_CPU, UMD_DEVICE_CUDA } umd_device;
typedef enum { UMD_PRECISION_FP32, UMD_PRECISION_TF32, UMD_PRECISION_BF16 } umd_precision;

/* train.recompute: what a transformer block keeps for the backward (model.h). */
enum {
    UMD_RECOMPUTE_OFF = 0,     /* everything it saves */
    UMD_RECOMPUTE_FULL = 1,    /* its input: the backward runs the whole block again */
    UMD_RECOMPUTE_PARTIAL = 2, /* all but the LayerNorm outputs, the residual and fc1's output,
                                  which the backward computes again */
    UMD_RECOMPUTE_NORMS = 3    /* all but the LayerNorm outputs and the residual between them,
                                  which the backward computes again (fc1's output is kept) */
};
/* A train.recompute mode as the config spells it: "off", "full", "partial", "norms". */
static inline const char *umd_recompute_name(int mode) {
    return mode == UMD_RECOMPUTE_FULL      ? "full"
           : mode == UMD_RECOMPUTE_PARTIAL ? "partial"
           : mode == UMD_RECOMPUTE_NORMS   ? "norms"
                                           : "off";
}

typedef struct {
    /* data.* */
    umd_dataset_kind dataset;
    char data_path[1024];   /* directory; default /usr/share/datasets/fashion-mnist for fashion-mnist */
    int64_t data_limit;     /* use the first N training images; 0 = all */
    int augment;            /* crop + flip; default on for 3-channel data, off for 1-channel */
    int augment_set;        /* 1 when the config named data.augment */
    int syn_size, syn_channels, syn_classes, syn_train, syn_test; /* data.image_size, ... (synthetic) */

    /* model.* */
    int patch, width, depth, dec_depth, heads, mlp_ratio, cls_tokens;

    /* umd.* */
    double r_t0, mask_ratio, mask_ratio_t0;
    umd_schedule schedule;
    int timesteps;
    int labels;             /* class conditioning with a null class */
    double label_dropout;

    /* train.* */
    int64_t steps;
    int batch;
    double lr;              /* effective peak lr: train.lr, else base_lr * batch / 256 */
    double base_lr, warmup, weight_decay, beta1, beta2, adam_eps, clip, ema;
    int64_t log_every, ckpt_every;
    umd_device device;
    umd_precision precision;
    int threads;            /* 0 = every core */
    int recompute;          /* train.recompute: UMD_RECOMPUTE_* (model.h) */
    int recompute_set;      /* 1 when the config named train.recompute (else umd_model_new turns
                               it on when the arenas do not fit without) */

    /* eval.* (UMD.md "Evaluation"); eval_on when the config has an eval block not disabled */
    int eval_on;
    int eval_batch, probe_shots, probe_epochs, probe_noise_index, fid_samples, ddim_steps, grid,
        classifier_epochs;
    int64_t probe_train, probe_test, val_images, fid_real; /* 0 = all */
    double ridge_lambda, probe_lr, recon_mask, cfg_scale;
    char cache_dir[1024];   /* eval.cache_dir, "" = $UMDQ_CACHE, else <workdir>/../cache */

    /* finetune.* (UMD.md "Label fine-tuning"): ft_steps > 0 runs it after pre-training */
    int64_t ft_steps;
    int ft_batch;           /* resolved: train.batch when finetune.batch is 0 */
    double ft_lr, ft_base_lr, ft_warmup, ft_beta2, ft_weight_decay, ft_r_t0, ft_mask_ratio,
        ft_label_dropout, ft_ema;

    uint64_t seed;          /* top-level "seed" (the worker sets it from the job's seed) */
    char hash[65];          /* SHA-256 of the canonical config including the seed: checkpoints
                               record it so a checkpoint is never resumed under another config */
} umd_config;

/* Fill *out from json: schema defaults for absent keys, schema checks, then cross-key checks.
 * Adds one errlist entry per bad key path; returns 0 or UMDQ_EINVAL. */
int umd_config_parse(const cJSON *json, umd_config *out, errlist *errs);

/* The same from JSON text, the errors as one line in err (benchmarks and tools). */
int umd_config_parse_text(const char *json, umd_config *out, char *err, size_t errlen);

/* Checks that need the data set's shape (H, W divisible by patch, ...). */
int umd_config_check_data(const umd_config *c, int h, int w, int channels, errlist *errs);

#endif
