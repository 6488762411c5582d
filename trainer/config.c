/* config.c: a job config (JSON) turned into the trainer's typed umd_config. Every default and
 * range comes from the schema table (common/schema_keys.c) through schema_validate_job; this file
 * reads the values, derives the effective learning rate and data path, and hashes the config. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include "jsonx.h"
#include "schema.h"
#include "sha256.h"
#include "umdq.h"

#define DEFAULT_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* The value at path: the config's when it is valid there (schema_validate_job has run), else the
 * table's default. Owned by *hold when it had to be made (free with cJSON_Delete). */
static const cJSON *value_of(const cJSON *json, const char *path, cJSON **hold) {
    const cJSON *v = json_path_get(json, path);
    if (v) return v;
    cJSON_Delete(*hold);
    *hold = schema_default(schema_find(path));
    return *hold;
}

static double num(const cJSON *json, const char *path, cJSON **hold) {
    const cJSON *v = value_of(json, path, hold);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static int64_t int64_of(const cJSON *json, const char *path, cJSON **hold) {
    double d = num(json, path, hold);
    return d >= -9.2e18 && d <= 9.2e18 ? (int64_t)d : 0;
}

static int int_of(const cJSON *json, const char *path, cJSON **hold) {
    double d = num(json, path, hold);
    return d >= -2147483648.0 && d <= 2147483647.0 ? (int)d : 0;
}

static int bool_of(const cJSON *json, const char *path, cJSON **hold) {
    return cJSON_IsTrue(value_of(json, path, hold));
}

static const char *str_of(const cJSON *json, const char *path, cJSON **hold) {
    const cJSON *v = value_of(json, path, hold);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Index of s in the '|'-separated choices, or 0 when absent (an invalid value was reported). */
static int choice(const char *s, const char *choices) {
    int i = 0;
    size_t n = strlen(s);
    for (const char *p = choices; p && *p; i++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return i;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

/* Keys that say how or where a run happens, not what it computes: a checkpoint taken under one
 * value resumes under another (another worker, thread count, device or log cadence; recomputing
 * the blocks or not, which gives the same bits; the evaluation, which reads the trained weights
 * and changes none). */
static const char *const run_only_keys[] = {"name", "stall_timeout", "train.threads", "train.device",
                                            "train.log_every", "train.ckpt_every",
                                            "train.recompute", "eval", NULL};

/* SHA-256 hex of the canonical config with "kind" and "seed" present and the run-only keys left
 * out: the identity a checkpoint records. */
static int config_hash(const cJSON *json, uint64_t seed, char hex[65]) {
    cJSON *copy = cJSON_Duplicate(json, 1); /* owned */
    char *text = NULL;                      /* owned */
    int rc = UMDQ_ENOMEM;
    if (!copy) goto fail;
    for (int i = 0; run_only_keys[i]; i++) {
        const char *key = run_only_keys[i], *dot = strchr(key, '.');
        if (!dot) {
            cJSON_DeleteItemFromObjectCaseSensitive(copy, key);
            continue;
        }
        char parent[32];
        snprintf(parent, sizeof parent, "%.*s", (int)(dot - key), key);
        cJSON *obj = cJSON_GetObjectItemCaseSensitive(copy, parent);
        if (!cJSON_IsObject(obj)) continue;
        cJSON_DeleteItemFromObjectCaseSensitive(obj, dot + 1);
        if (!obj->child) cJSON_DeleteItemFromObjectCaseSensitive(copy, parent); /* {} = absent */
    }
    if (!cJSON_GetObjectItemCaseSensitive(copy, "kind") && !cJSON_AddStringToObject(copy, "kind", "umd"))
        goto fail;
    if (!cJSON_GetObjectItemCaseSensitive(copy, "seed") && !cJSON_AddNumberToObject(copy, "seed", (double)seed))
        goto fail;
    text = json_canonical(copy);
    if (!text) goto fail;
    sha256_hex(text, strlen(text), hex);
    rc = 0;
fail:
    free(text);
    cJSON_Delete(copy);
    return rc;
}

int umd_config_parse(const cJSON *json, umd_config *out, errlist *errs) {
    cJSON *hold = NULL; /* owned: the last default made by value_of */
    int before = errlist_count(errs);
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(json)) {
        errlist_add(errs, "", "a job config must be a JSON object");
        return UMDQ_EINVAL;
    }
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(json, "kind");
    if (cJSON_IsString(kind) && strcmp(kind->valuestring, "command") == 0) {
        errlist_add(errs, "kind", "a kind command job runs its command, not the UMD trainer");
        return UMDQ_EINVAL;
    }
    schema_validate_job(json, 0, errs);
    const schema_key *k;

    /* data.* */
    k = schema_find("data.dataset");
    out->dataset = (umd_dataset_kind)choice(str_of(json, "data.dataset", &hold), k ? k->choices : "");
    const char *path = json_get_string(json, "data.path", NULL);
    if (!path && out->dataset == UMD_DATA_FASHION_MNIST) path = DEFAULT_FASHION_MNIST_DIR;
    if (path && strlen(path) >= sizeof out->data_path)
        errlist_add(errs, "data.path", "must be shorter than %zu bytes", sizeof out->data_path);
    else if (path)
        snprintf(out->data_path, sizeof out->data_path, "%s", path);
    out->data_limit = int64_of(json, "data.limit", &hold);
    out->syn_size = int_of(json, "data.image_size", &hold);
    out->syn_channels = int_of(json, "data.channels", &hold);
    out->syn_classes = int_of(json, "data.classes", &hold);
    out->syn_train = int_of(json, "data.train_size", &hold);
    out->syn_test = int_of(json, "data.test_size", &hold);
    if (out->dataset == UMD_DATA_SYNTHETIC && out->syn_channels == 2)
        errlist_add(errs, "data.channels", "must be 1 or 3, got 2");
    const cJSON *aug = json_path_get(json, "data.augment");
    if (cJSON_IsBool(aug)) {
        out->augment = cJSON_IsTrue(aug);
        out->augment_set = 1;
    } else {
        /* the default by channel count, as far as the data set tells it before loading */
        out->augment = out->dataset == UMD_DATA_CIFAR10 || out->dataset == UMD_DATA_IMAGENET64 ||
                       (out->dataset == UMD_DATA_SYNTHETIC && out->syn_channels == 3);
        out->augment_set = 0;
    }

    /* model.* */
    out->patch = int_of(json, "model.patch", &hold);
    out->width = int_of(json, "model.width", &hold);
    out->depth = int_of(json, "model.depth", &hold);
    out->dec_depth = int_of(json, "model.dec_depth", &hold);
    out->heads = int_of(json, "model.heads", &hold);
    out->mlp_ratio = int_of(json, "model.mlp_ratio", &hold);
    out->cls_tokens = int_of(json, "model.cls_tokens", &hold);

    /* umd.* */
    out->r_t0 = num(json, "umd.r_t0", &hold);
    out->mask_ratio = num(json, "umd.mask_ratio", &hold);
    out->mask_ratio_t0 = num(json, "umd.mask_ratio_t0", &hold);
    k = schema_find("umd.schedule");
    out->schedule = (umd_schedule)choice(str_of(json, "umd.schedule", &hold), k ? k->choices : "");
    out->timesteps = int_of(json, "umd.timesteps", &hold);
    out->labels = bool_of(json, "umd.labels", &hold);
    out->label_dropout = num(json, "umd.label_dropout", &hold);

    /* train.* */
    out->steps = int64_of(json, "train.steps", &hold);
    out->batch = int_of(json, "train.batch", &hold);
    out->base_lr = num(json, "train.base_lr", &hold);
    const cJSON *lr = json_path_get(json, "train.lr");
    out->lr = cJSON_IsNumber(lr) ? lr->valuedouble : out->base_lr * out->batch / 256.0;
    out->warmup = num(json, "train.warmup", &hold);
    out->weight_decay = num(json, "train.weight_decay", &hold);
    out->beta1 = num(json, "train.beta1", &hold);
    out->beta2 = num(json, "train.beta2", &hold);
    out->adam_eps = num(json, "train.eps", &hold);
    out->clip = num(json, "train.clip", &hold);
    out->ema = num(json, "train.ema", &hold);
    out->log_every = int64_of(json, "train.log_every", &hold);
    out->ckpt_every = int64_of(json, "train.ckpt_every", &hold);
    k = schema_find("train.device");
    out->device = (umd_device)choice(str_of(json, "train.device", &hold), k ? k->choices : "");
    k = schema_find("train.precision");
    out->precision = (umd_precision)choice(str_of(json, "train.precision", &hold), k ? k->choices : "");
    out->threads = int_of(json, "train.threads", &hold);
    const cJSON *rec = json_path_get(json, "train.recompute");
    out->recompute = cJSON_IsTrue(rec) ? UMD_RECOMPUTE_FULL
                     : cJSON_IsString(rec) && !strcmp(rec->valuestring, "full") ? UMD_RECOMPUTE_FULL
                     : cJSON_IsString(rec) && !strcmp(rec->valuestring, "partial")
                         ? UMD_RECOMPUTE_PARTIAL
                     : cJSON_IsString(rec) && !strcmp(rec->valuestring, "norms")
                         ? UMD_RECOMPUTE_NORMS
                         : UMD_RECOMPUTE_OFF;
    out->recompute_set = cJSON_IsBool(rec) || cJSON_IsString(rec);

    /* eval.* */
    const cJSON *ev = json_path_get(json, "eval");
    out->eval_on = cJSON_IsObject(ev) && bool_of(json, "eval.enabled", &hold);
    out->eval_batch = int_of(json, "eval.batch", &hold);
    out->probe_shots = int_of(json, "eval.probe_shots", &hold);
    out->ridge_lambda = num(json, "eval.ridge_lambda", &hold);
    out->probe_train = int64_of(json, "eval.probe_train", &hold);
    out->probe_test = int64_of(json, "eval.probe_test", &hold);
    out->probe_epochs = int_of(json, "eval.probe_epochs", &hold);
    out->probe_lr = num(json, "eval.probe_lr", &hold);
    out->probe_noise_index = int_of(json, "eval.probe_noise_index", &hold);
    out->val_images = int64_of(json, "eval.val_images", &hold);
    out->recon_mask = num(json, "eval.recon_mask", &hold);
    out->fid_samples = int_of(json, "eval.fid_samples", &hold);
    out->ddim_steps = int_of(json, "eval.ddim_steps", &hold);
    out->cfg_scale = num(json, "eval.cfg_scale", &hold);
    out->grid = int_of(json, "eval.grid", &hold);
    out->fid_real = int64_of(json, "eval.fid_real", &hold);
    out->classifier_epochs = int_of(json, "eval.classifier_epochs", &hold);
    const char *cache = json_get_string(json, "eval.cache_dir", NULL);
    if (cache && strlen(cache) >= sizeof out->cache_dir)
        errlist_add(errs, "eval.cache_dir", "must be shorter than %zu bytes", sizeof out->cache_dir);
    else if (cache)
        snprintf(out->cache_dir, sizeof out->cache_dir, "%s", cache);
    /* against umd.timesteps: a value written in the config must fit; a default that does not
     * (short schedules) scales down with T (index 50 of 1000, at most T steps) */
    if (out->timesteps > 0 && out->probe_noise_index >= out->timesteps) {
        if (json_path_get(json, "eval.probe_noise_index"))
            errlist_add(errs, "eval.probe_noise_index", "must be below umd.timesteps (%d), got %d",
                        out->timesteps, out->probe_noise_index);
        else
            out->probe_noise_index = out->timesteps / 20;
    }
    if (out->timesteps > 0 && out->ddim_steps > out->timesteps) {
        if (json_path_get(json, "eval.ddim_steps"))
            errlist_add(errs, "eval.ddim_steps", "must be at most umd.timesteps (%d), got %d",
                        out->timesteps, out->ddim_steps);
        else
            out->ddim_steps = out->timesteps;
    }

    /* finetune.* */
    out->ft_steps = int64_of(json, "finetune.steps", &hold);
    out->ft_batch = int_of(json, "finetune.batch", &hold);
    if (out->ft_batch == 0) out->ft_batch = out->batch;
    out->ft_base_lr = num(json, "finetune.base_lr", &hold);
    const cJSON *ftlr = json_path_get(json, "finetune.lr");
    out->ft_lr = cJSON_IsNumber(ftlr) ? ftlr->valuedouble : out->ft_base_lr * out->ft_batch / 256.0;
    out->ft_warmup = num(json, "finetune.warmup", &hold);
    out->ft_beta2 = num(json, "finetune.beta2", &hold);
    out->ft_weight_decay = num(json, "finetune.weight_decay", &hold);
    out->ft_r_t0 = num(json, "finetune.r_t0", &hold);
    out->ft_mask_ratio = num(json, "finetune.mask_ratio", &hold);
    out->ft_label_dropout = num(json, "finetune.label_dropout", &hold);
    out->ft_ema = num(json, "finetune.ema", &hold);

    out->seed = (uint64_t)int64_of(json, "seed", &hold);
    cJSON_Delete(hold);

    if (config_hash(json, out->seed, out->hash) != 0) {
        errlist_add(errs, "", "out of memory hashing the config");
        return UMDQ_ENOMEM;
    }
    return errlist_count(errs) > before ? UMDQ_EINVAL : 0;
}

int umd_config_check_data(const umd_config *c, int h, int w, int channels, errlist *errs) {
    int before = errlist_count(errs);
    if (h <= 0 || w <= 0 || (channels != 1 && channels != 3)) {
        errlist_add(errs, "data.dataset", "the data set has images of %dx%d with %d channels; want 1 or 3 "
                    "channels", h, w, channels);
        return UMDQ_EINVAL;
    }
    if (c->patch <= 0 || h % c->patch != 0 || w % c->patch != 0)
        errlist_add(errs, "model.patch", "must divide the image size %dx%d, got %d", h, w, c->patch);
    if (c->heads <= 0 || c->width % c->heads != 0 || c->width % 2 != 0)
        errlist_add(errs, "model.width", "must be even and a multiple of model.heads (%d), got %d", c->heads,
                    c->width);
    if (c->batch < 1)
        errlist_add(errs, "train.batch", "must be at least 1, got %d", c->batch);
    if (c->eval_on && c->fid_samples > 0 && (h % 4 || w % 4))
        errlist_add(errs, "eval.fid_samples", "FID's feature network needs image sides that are "
                    "multiples of 4, the data set has %dx%d (set it to 0 for no FID)", h, w);
    return errlist_count(errs) > before ? UMDQ_EINVAL : 0;
}

int umd_config_parse_text(const char *json, umd_config *out, char *err, size_t errlen) {
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        snprintf(err, errlen, "not valid JSON");
        return UMDQ_EINVAL;
    }
    errlist *errs = errlist_new();
    int rc = errs ? umd_config_parse(root, out, errs) : UMDQ_ENOMEM;
    if (rc) {
        if (errs) errlist_format(errs, err, errlen);
        else snprintf(err, errlen, "out of memory");
    }
    cJSON_Delete(root);
    errlist_destroy(&errs);
    return rc;
}
