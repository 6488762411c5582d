/* test_config_parse.c: job configs turned into umd_config: schema defaults filled, the learning
 * rate scaled by batch, the data path default, every bad key named, kind command refused, the
 * config hash, and the checks that need the data set's shape. umdq-uses: umd common */
#include <stdio.h>
#include "config.h"
#include "errlist.h"
#include "jsonx.h"
#include "sha256.h"
#include "t.h"
#include "umdq.h"

static int parse(const char *text, umd_config *c, errlist **errs_out) {
    char err[200];
    cJSON *j = json_parse_n(text, strlen(text), err, sizeof err);
    if (!j) {
        t_fail_at(__FILE__, __LINE__, "bad test JSON: %s", err);
        return -100;
    }
    errlist *e = errlist_new();
    int rc = umd_config_parse(j, c, e);
    cJSON_Delete(j);
    if (errs_out) *errs_out = e;
    else errlist_destroy(&e);
    return rc;
}

static const char *msg_for(const errlist *e, const char *path) {
    for (int i = 0; i < errlist_count(e); i++)
        if (strcmp(errlist_path(e, i), path) == 0) return errlist_message(e, i);
    return NULL;
}

static void test_config_defaults(void) {
    umd_config c;
    errlist *e = NULL;
    T_EQ_INT(parse("{}", &c, &e), 0);
    T_EQ_INT(errlist_count(e), 0);
    errlist_destroy(&e);
    T_EQ_INT(c.dataset, UMD_DATA_FASHION_MNIST);
    T_EQ_STR(c.data_path, "/usr/share/datasets/fashion-mnist");
    T_EQ_INT(c.data_limit, 0);
    T_EQ_INT(c.augment, 0);
    T_EQ_INT(c.augment_set, 0);
    T_EQ_INT(c.syn_size, 16);
    T_EQ_INT(c.syn_channels, 1);
    T_EQ_INT(c.syn_classes, 10);
    T_EQ_INT(c.syn_train, 2048);
    T_EQ_INT(c.syn_test, 512);
    T_EQ_INT(c.patch, 4);
    T_EQ_INT(c.width, 192);
    T_EQ_INT(c.depth, 6);
    T_EQ_INT(c.dec_depth, 2);
    T_EQ_INT(c.heads, 3);
    T_EQ_INT(c.mlp_ratio, 4);
    T_EQ_INT(c.cls_tokens, 4);
    T_NEAR(c.r_t0, 0.5, 0, 0);
    T_NEAR(c.mask_ratio, 0.375, 0, 0);
    T_NEAR(c.mask_ratio_t0, 0.75, 0, 0);
    T_EQ_INT(c.schedule, UMD_SCHEDULE_COSINE);
    T_EQ_INT(c.timesteps, 1000);
    T_EQ_INT(c.labels, 0);
    T_NEAR(c.label_dropout, 0.1, 0, 0);
    T_EQ_INT(c.steps, 1000);
    T_EQ_INT(c.batch, 128);
    T_NEAR(c.base_lr, 1.5e-4, 0, 1e-15);
    T_NEAR(c.lr, 1.5e-4 * 128 / 256, 0, 1e-15);
    T_NEAR(c.warmup, 0.05, 0, 0);
    T_NEAR(c.weight_decay, 0.05, 0, 0);
    T_NEAR(c.beta1, 0.9, 0, 0);
    T_NEAR(c.beta2, 0.95, 0, 0);
    T_NEAR(c.adam_eps, 1e-8, 0, 0);
    T_NEAR(c.clip, 1.0, 0, 0);
    T_NEAR(c.ema, 0, 0, 0);
    T_EQ_INT(c.log_every, 50);
    T_EQ_INT(c.ckpt_every, 500);
    T_EQ_INT(c.device, UMD_DEVICE_AUTO);
    T_EQ_INT(c.precision, UMD_PRECISION_FP32);
    T_EQ_INT(c.threads, 0);
    T_EQ_INT(c.seed, 0);
    T_EQ_INT((int)strlen(c.hash), 64);
}

static void test_config_values(void) {
    umd_config c;
    T_EQ_INT(parse("{\"kind\": \"umd\", \"seed\": 4000000000, \"name\": \"MAE\", \"stall_timeout\": 60, "
                   "\"data\": {\"dataset\": \"synthetic\", \"image_size\": 12, \"channels\": 3, \"classes\": 4, "
                   "\"train_size\": 100, \"test_size\": 20, \"limit\": 50}, "
                   "\"model\": {\"patch\": 3, \"width\": 64, \"depth\": 2, \"dec_depth\": 1, \"heads\": 4, "
                   "\"mlp_ratio\": 2, \"cls_tokens\": 1}, "
                   "\"umd\": {\"r_t0\": 1, \"mask_ratio\": 0, \"mask_ratio_t0\": 0.5, \"schedule\": \"linear\", "
                   "\"timesteps\": 50, \"labels\": true, \"label_dropout\": 0.2}, "
                   "\"train\": {\"steps\": 7, \"batch\": 512, \"warmup\": 0.1, \"weight_decay\": 0, \"beta1\": 0.8, "
                   "\"beta2\": 0.99, \"eps\": 1e-6, \"clip\": 0, \"ema\": 0.999, \"log_every\": 1, \"ckpt_every\": 0, "
                   "\"device\": \"cuda\", \"precision\": \"bf16\", \"threads\": 2}}", &c, NULL), 0);
    T_EQ_INT(c.dataset, UMD_DATA_SYNTHETIC);
    T_EQ_STR(c.data_path, "");
    T_EQ_INT(c.augment, 1); /* 3 channels: on by default */
    T_EQ_INT(c.augment_set, 0);
    T_EQ_INT(c.syn_size, 12);
    T_EQ_INT(c.syn_channels, 3);
    T_EQ_INT(c.syn_classes, 4);
    T_EQ_INT(c.syn_train, 100);
    T_EQ_INT(c.syn_test, 20);
    T_EQ_INT(c.data_limit, 50);
    T_EQ_INT(c.patch, 3);
    T_EQ_INT(c.width, 64);
    T_EQ_INT(c.heads, 4);
    T_EQ_INT(c.mlp_ratio, 2);
    T_EQ_INT(c.cls_tokens, 1);
    T_NEAR(c.r_t0, 1, 0, 0);
    T_NEAR(c.mask_ratio, 0, 0, 0);
    T_EQ_INT(c.schedule, UMD_SCHEDULE_LINEAR);
    T_EQ_INT(c.timesteps, 50);
    T_EQ_INT(c.labels, 1);
    T_NEAR(c.label_dropout, 0.2, 0, 0);
    T_EQ_INT(c.steps, 7);
    T_EQ_INT(c.batch, 512);
    T_NEAR(c.lr, 3e-4, 0, 1e-12); /* 1.5e-4 * 512 / 256 */
    T_NEAR(c.adam_eps, 1e-6, 0, 0);
    T_NEAR(c.ema, 0.999, 0, 0);
    T_EQ_INT(c.ckpt_every, 0);
    T_EQ_INT(c.device, UMD_DEVICE_CUDA);
    T_EQ_INT(c.precision, UMD_PRECISION_BF16);
    T_EQ_INT(c.threads, 2);
    T_EQ_INT(c.seed, 4000000000u);

    /* an explicit lr wins over the scaled one; base_lr scales */
    T_EQ_INT(parse("{\"train\": {\"lr\": 0.001, \"batch\": 512}}", &c, NULL), 0);
    T_NEAR(c.lr, 0.001, 0, 0);
    T_EQ_INT(parse("{\"train\": {\"base_lr\": 0.001, \"batch\": 64}}", &c, NULL), 0);
    T_NEAR(c.lr, 0.001 * 64 / 256, 0, 1e-15);
    /* data.augment named */
    T_EQ_INT(parse("{\"data\": {\"augment\": true}}", &c, NULL), 0);
    T_EQ_INT(c.augment, 1);
    T_EQ_INT(c.augment_set, 1);
    T_EQ_INT(parse("{\"data\": {\"dataset\": \"cifar10\", \"path\": \"/tmp/cifar\", \"augment\": false}, "
                   "\"model\": {\"patch\": 8}}", &c, NULL), 0);
    T_EQ_INT(c.dataset, UMD_DATA_CIFAR10);
    T_EQ_STR(c.data_path, "/tmp/cifar");
    T_EQ_INT(c.augment, 0);
    T_EQ_INT(c.augment_set, 1);
    T_EQ_INT(parse("{\"data\": {\"dataset\": \"cifar10\", \"path\": \"/tmp/cifar\"}, \"model\": {\"patch\": 8}}",
                   &c, NULL), 0);
    T_EQ_INT(c.augment, 1);
    T_EQ_INT(parse("{\"data\": {\"dataset\": \"mnist\", \"path\": \"/d\"}}", &c, NULL), 0);
    T_EQ_INT(c.dataset, UMD_DATA_MNIST);
    T_EQ_INT(c.augment, 0);
}

static void test_config_errors(void) {
    umd_config c;
    errlist *e = NULL;
    T_EQ_INT(parse("{\"model\": {\"width\": \"wide\", \"heads\": 0}, \"umd\": {\"r_t0\": 2, \"maskratio\": 1}, "
                   "\"train\": {\"batch\": 1.5, \"precision\": \"fp16\"}, \"data\": {\"dataset\": \"imagenet\"}}",
                   &c, &e), UMDQ_EINVAL);
    char *j = errlist_join(e, "\n");
    T_EQ_STR(msg_for(e, "model.width"), "must be an integer, got \"wide\"");
    T_EQ_STR(msg_for(e, "model.heads"), "must be in [1, 256], got 0");
    T_EQ_STR(msg_for(e, "umd.r_t0"), "must be in [0, 1], got 2");
    T_EQ_STR(msg_for(e, "umd.maskratio"), "unknown key (did you mean \"umd.mask_ratio\"?)");
    T_EQ_STR(msg_for(e, "train.batch"), "must be an integer, got 1.5");
    T_CONTAINS(msg_for(e, "train.precision"), "must be one of \"fp32\", \"tf32\", \"bf16\", got \"fp16\"");
    T_CONTAINS(msg_for(e, "data.dataset"), "got \"imagenet\"");
    T_CHECK_MSG(errlist_count(e) == 7, "%s", j);
    free(j);
    errlist_destroy(&e);

    T_EQ_INT(parse("{\"kind\": \"command\", \"command\": \"true\"}", &c, &e), UMDQ_EINVAL);
    T_CONTAINS(msg_for(e, "kind"), "not the UMD trainer");
    errlist_destroy(&e);
    T_EQ_INT(parse("{\"data\": {\"dataset\": \"mnist\"}}", &c, &e), UMDQ_EINVAL);
    T_CONTAINS(msg_for(e, "data.path"), "required for data.dataset mnist");
    errlist_destroy(&e);
    T_EQ_INT(parse("{\"model\": {\"width\": 100, \"heads\": 3}}", &c, &e), UMDQ_EINVAL);
    T_CONTAINS(msg_for(e, "model.width"), "multiple of model.heads (3), got 100");
    errlist_destroy(&e);
    T_EQ_INT(parse("{\"data\": {\"dataset\": \"synthetic\", \"channels\": 2}}", &c, &e), UMDQ_EINVAL);
    T_EQ_STR(msg_for(e, "data.channels"), "must be 1 or 3, got 2");
    errlist_destroy(&e);
    /* a seed is fine outside a sweep, but not a negative one */
    T_EQ_INT(parse("{\"seed\": -1}", &c, &e), UMDQ_EINVAL);
    T_CONTAINS(msg_for(e, "seed"), "must be in [0, 4294967295]");
    errlist_destroy(&e);
    T_EQ_INT(parse("[]", &c, &e), UMDQ_EINVAL);
    errlist_destroy(&e);
}

static void test_config_hash(void) {
    umd_config a, b;
    T_EQ_INT(parse("{\"umd\": {\"r_t0\": 0.5, \"mask_ratio\": 0.25}, \"train\": {\"steps\": 10}}", &a, NULL), 0);
    T_EQ_INT(parse("{ \"train\": {\"steps\": 1e1}, \"umd\": {\"mask_ratio\": 0.250, \"r_t0\": 5e-1}, \"kind\": \"umd\", "
                   "\"seed\": 0}", &b, NULL), 0);
    T_EQ_STR(a.hash, b.hash);
    T_EQ_INT(parse("{\"umd\": {\"r_t0\": 0.5, \"mask_ratio\": 0.25}, \"train\": {\"steps\": 10}, \"seed\": 1}", &b, NULL), 0);
    T_CHECK(strcmp(a.hash, b.hash) != 0);
    T_EQ_INT(parse("{\"umd\": {\"r_t0\": 0.5, \"mask_ratio\": 0.25}, \"train\": {\"steps\": 11}}", &b, NULL), 0);
    T_CHECK(strcmp(a.hash, b.hash) != 0);
    /* the hash is SHA-256 of the canonical text with kind and seed */
    T_EQ_INT(parse("{}", &a, NULL), 0);
    char hex[65];
    const char *canonical = "{\"kind\":\"umd\",\"seed\":0}";
    sha256_hex(canonical, strlen(canonical), hex);
    T_EQ_STR(a.hash, hex);
    /* where and how a run happens does not change what it computes: a checkpoint taken with one
     * thread count, device, log cadence, label or recompute setting resumes under another */
    T_EQ_INT(parse("{\"name\": \"x\", \"stall_timeout\": 60, \"train\": {\"threads\": 2, \"device\": \"cpu\", "
                   "\"log_every\": 7, \"ckpt_every\": 9, \"recompute\": true}}", &b, NULL), 0);
    T_CHECK(b.recompute == UMD_RECOMPUTE_FULL && b.recompute_set);
    T_EQ_STR(a.hash, b.hash);
    T_EQ_INT(parse("{\"train\": {\"recompute\": \"partial\"}}", &b, NULL), 0);
    T_CHECK(b.recompute == UMD_RECOMPUTE_PARTIAL && b.recompute_set);
    T_EQ_STR(a.hash, b.hash);
}

/* train.recompute: true, false, "full", "partial", "norms" or "off"; unset is unset (umd_model_new picks);
 * anything else is refused, naming the choices. */
static void test_config_recompute(void) {
    umd_config c;
    static const struct { const char *v; int mode; } ok[] = {
        {"true", UMD_RECOMPUTE_FULL},      {"false", UMD_RECOMPUTE_OFF},
        {"\"full\"", UMD_RECOMPUTE_FULL}, {"\"partial\"", UMD_RECOMPUTE_PARTIAL},
        {"\"norms\"", UMD_RECOMPUTE_NORMS}, {"\"off\"", UMD_RECOMPUTE_OFF}};
    char text[128];
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        snprintf(text, sizeof text, "{\"train\": {\"recompute\": %s}}", ok[i].v);
        T_EQ_INT(parse(text, &c, NULL), 0);
        T_CHECK_MSG(c.recompute == ok[i].mode && c.recompute_set, "%s: mode %d", ok[i].v,
                    c.recompute);
    }
    T_EQ_INT(parse("{}", &c, NULL), 0);
    T_CHECK(c.recompute == UMD_RECOMPUTE_OFF && !c.recompute_set);
    errlist *e = NULL;
    T_EQ_INT(parse("{\"train\": {\"recompute\": \"half\"}}", &c, &e), UMDQ_EINVAL);
    T_EQ_STR(msg_for(e, "train.recompute"),
             "must be true, false or one of \"full\", \"partial\", \"norms\", \"off\", got \"half\"");
    errlist_destroy(&e);
    T_EQ_INT(parse("{\"train\": {\"recompute\": 1}}", &c, &e), UMDQ_EINVAL);
    T_CONTAINS(msg_for(e, "train.recompute"), "must be true, false or one of");
    errlist_destroy(&e);
}

static void test_config_check_data(void) {
    umd_config c;
    T_EQ_INT(parse("{}", &c, NULL), 0);
    errlist *e = errlist_new();
    T_EQ_INT(umd_config_check_data(&c, 28, 28, 1, e), 0);
    T_EQ_INT(errlist_count(e), 0);
    T_EQ_INT(umd_config_check_data(&c, 30, 28, 1, e), UMDQ_EINVAL);
    T_EQ_STR(msg_for(e, "model.patch"), "must divide the image size 30x28, got 4");
    errlist_clear(e);
    T_EQ_INT(umd_config_check_data(&c, 28, 28, 2, e), UMDQ_EINVAL);
    T_EQ_INT(errlist_count(e), 1);
    errlist_destroy(&e);
}

int main(void) {
    T_RUN(test_config_recompute);
    T_RUN(test_config_defaults);
    T_RUN(test_config_values);
    T_RUN(test_config_errors);
    T_RUN(test_config_hash);
    T_RUN(test_config_check_data);
    return t_done();
}
