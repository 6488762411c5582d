/* test_eval_run.c: the evaluation and fine-tuning through umd_run on the synthetic data set: the
 * eval and finetune config keys (types, ranges, cross checks, each bad value named by its path),
 * every result name the queue relies on with values in range, the sample grid as a PNG in the
 * work directory, the "ft_loss" curve, and fine-tuning stopped mid-way and resumed from its
 * checkpoint ending bit for bit where an uninterrupted run ends. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "config.h"
#include "errlist.h"
#include "t.h"
#include "t_umd.h"
#include "umd.h"
#include "umdq.h"

static char tmp_root[64];

#define MAX_RESULTS 48
typedef struct {
    int64_t last_step, stop_at;
    int nres, ft_points;
    char key[MAX_RESULTS][32];
    double value[MAX_RESULTS];
    char text[MAX_RESULTS][96];
} seen;

static void cb_progress(void *ctx, int64_t step, int64_t total, double loss, double ips) {
    (void)total, (void)loss, (void)ips;
    ((seen *)ctx)->last_step = step;
}

static void cb_metric(void *ctx, const char *key, int64_t step, double v) {
    seen *s = ctx;
    (void)step;
    if (!strcmp(key, "ft_loss") && isfinite(v)) s->ft_points++;
}

static void cb_result(void *ctx, const char *key, double v, const char *text) {
    seen *s = ctx;
    if (s->nres >= MAX_RESULTS) return;
    snprintf(s->key[s->nres], sizeof s->key[0], "%s", key);
    s->value[s->nres] = v;
    snprintf(s->text[s->nres], sizeof s->text[0], "%s", text ? text : "");
    s->nres++;
}

static int cb_should_stop(void *ctx) {
    seen *s = ctx;
    return s->stop_at > 0 && s->last_step >= s->stop_at;
}

static void cb_log(void *ctx, const char *line) {
    (void)ctx;
    printf("# %s\n", line);
}

static int find(const seen *s, const char *key) {
    for (int i = 0; i < s->nres; i++)
        if (!strcmp(s->key[i], key)) return i;
    return -1;
}

static int run_config(const char *json, const char *workdir, const char *resume, seen *s, char *err,
                      size_t errlen) {
    umd_events ev;
    memset(&ev, 0, sizeof ev);
    ev.ctx = s;
    ev.progress = cb_progress;
    ev.metric = cb_metric;
    ev.result = cb_result;
    ev.should_stop = cb_should_stop;
    ev.log = cb_log;
    ev.workdir = workdir;
    ev.resume_from = resume;
    return t_umd_run(json, &ev, err, errlen);
}

/* the config's parse errors, formatted ("" when it is valid) */
static void parse_errors(const char *json, char *out, size_t n) {
    cJSON *j = cJSON_Parse(json);
    errlist *e = errlist_new();
    umd_config c;
    out[0] = 0;
    if (j && e && umd_config_parse(j, &c, e) != 0) errlist_format(e, out, n);
    errlist_destroy(&e);
    cJSON_Delete(j);
}

static void test_eval_run_config_keys(void) {
    char msg[1024];
    umd_config c;
    errlist *e = errlist_new();
    cJSON *j = cJSON_Parse("{\"data\": {\"dataset\": \"synthetic\"}}");
    T_REQUIRE(umd_config_parse(j, &c, e) == 0);
    T_EQ_INT(c.eval_on, 0); /* no eval block: no evaluation */
    T_EQ_INT(c.ft_steps, 0);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"data\": {\"dataset\": \"synthetic\"}, \"eval\": {}, \"train\": {\"batch\": 32}}");
    T_REQUIRE(umd_config_parse(j, &c, e) == 0);
    T_EQ_INT(c.eval_on, 1);
    T_EQ_INT(c.probe_shots, 100);
    T_NEAR(c.ridge_lambda, 1024, 0, 0);
    T_EQ_INT(c.ddim_steps, 50);
    T_NEAR(c.cfg_scale, 1.5, 0, 0);
    T_NEAR(c.recon_mask, 0.75, 0, 0);
    T_EQ_INT(c.probe_noise_index, 50);
    T_EQ_INT(c.ft_batch, 32); /* finetune.batch 0 = train.batch */
    T_NEAR(c.ft_ema, 0.9999, 0, 0);
    T_NEAR(c.ft_beta2, 0.999, 0, 0);
    T_NEAR(c.ft_r_t0, 0.05, 0, 0);
    T_NEAR(c.ft_lr, 1.5e-4 * 32 / 256, 1e-15, 0);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"eval\": {\"enabled\": false, \"fid_samples\": 8}, \"finetune\": {\"steps\": 5}}");
    T_REQUIRE(umd_config_parse(j, &c, e) == 0);
    T_EQ_INT(c.eval_on, 0);
    T_EQ_INT(c.fid_samples, 8);
    T_EQ_INT(c.ft_steps, 5);
    cJSON_Delete(j);
    errlist_destroy(&e);

    parse_errors("{\"eval\": {\"fid_samples\": -1}}", msg, sizeof msg);
    T_CONTAINS(msg, "eval.fid_samples");
    parse_errors("{\"eval\": {\"ddim_steps\": 0}}", msg, sizeof msg);
    T_CONTAINS(msg, "eval.ddim_steps");
    parse_errors("{\"eval\": {\"ddim_steps\": 2000}}", msg, sizeof msg);
    T_CONTAINS(msg, "eval.ddim_steps: must be at most umd.timesteps (1000), got 2000");
    parse_errors("{\"eval\": {\"cfg_scale\": \"big\"}}", msg, sizeof msg);
    T_CONTAINS(msg, "eval.cfg_scale");
    parse_errors("{\"eval\": {\"recon_mask\": 1}}", msg, sizeof msg);
    T_CONTAINS(msg, "eval.recon_mask");
    parse_errors("{\"eval\": {\"probe_noise_index\": 100}, \"umd\": {\"timesteps\": 100}}", msg, sizeof msg);
    T_CONTAINS(msg, "eval.probe_noise_index: must be below umd.timesteps (100), got 100");
    /* defaults that do not fit a short schedule follow it instead */
    e = errlist_new();
    j = cJSON_Parse("{\"umd\": {\"timesteps\": 40}, \"eval\": {}}");
    T_REQUIRE(umd_config_parse(j, &c, e) == 0);
    T_EQ_INT(c.probe_noise_index, 2);
    T_EQ_INT(c.ddim_steps, 40);
    cJSON_Delete(j);
    errlist_destroy(&e);
    parse_errors("{\"eval\": {\"ridge_lambda\": 0}}", msg, sizeof msg);
    T_CONTAINS(msg, "eval.ridge_lambda");
    parse_errors("{\"eval\": {\"probes\": true}}", msg, sizeof msg);
    T_CONTAINS(msg, "eval.probes");
    parse_errors("{\"eval\": {\"enabled\": 1}}", msg, sizeof msg);
    T_CONTAINS(msg, "eval.enabled");
    parse_errors("{\"finetune\": {\"r_t0\": 1.0}}", msg, sizeof msg);
    T_CONTAINS(msg, "finetune.r_t0");
    parse_errors("{\"finetune\": {\"steps\": 2.5}}", msg, sizeof msg);
    T_CONTAINS(msg, "finetune.steps");
    parse_errors("{\"finetune\": {\"ema\": 1}}", msg, sizeof msg);
    T_CONTAINS(msg, "finetune.ema");
    parse_errors("{\"finetune\": {\"label_dropout\": -0.1}, \"eval\": {\"grid\": 5000}}", msg, sizeof msg);
    T_CONTAINS(msg, "finetune.label_dropout");
    T_CONTAINS(msg, "eval.grid");

    /* the data set's shape: FID needs sides that are multiples of 4, refused before training */
    char err[512];
    seen s;
    memset(&s, 0, sizeof s);
    int rc = run_config("{\"data\": {\"dataset\": \"synthetic\", \"image_size\": 6}, \"model\": "
                        "{\"patch\": 3, \"width\": 8, \"heads\": 2, \"depth\": 1, \"dec_depth\": 1},"
                        " \"eval\": {}}", NULL, NULL, &s, err, sizeof err);
    T_EQ_INT(rc, UMDQ_EINVAL);
    T_CONTAINS(err, "eval.fid_samples");
    T_CONTAINS(err, "6x6");
    T_EQ_INT(s.last_step, 0);
}

#define SYN_EVAL(EXTRA)                                                                              \
    "{\"seed\": 3, \"data\": {\"dataset\": \"synthetic\", \"image_size\": 16, \"channels\": 1,"      \
    " \"train_size\": 512, \"test_size\": 128},"                                                    \
    " \"model\": {\"patch\": 4, \"width\": 32, \"depth\": 2, \"dec_depth\": 1, \"heads\": 2},"      \
    " \"train\": {\"steps\": 60, \"batch\": 16, \"lr\": 1e-3, \"threads\": 2, \"log_every\": 5,"     \
    " \"ckpt_every\": 20},"                                                                         \
    " \"eval\": {\"fid_samples\": 48, \"ddim_steps\": 8, \"probe_epochs\": 4, \"val_images\": 64,"  \
    " \"probe_train\": 256, \"grid\": 16, \"classifier_epochs\": 2, \"cache_dir\": \"%s/cache\"}"   \
    EXTRA "}"

static void test_eval_run_results(void) {
    char json[2048], work[256], err[512];
    snprintf(json, sizeof json, SYN_EVAL(", \"finetune\": {\"steps\": 20, \"ema\": 0.9}"), tmp_root);
    snprintf(work, sizeof work, "%s/results", tmp_root);
    seen s;
    memset(&s, 0, sizeof s);
    int rc = run_config(json, work, NULL, &s, err, sizeof err);
    T_REQUIRE(rc == 0 || !printf("# %s\n", err));
    const char *fractions[] = {"probe_ridge_top1", "probe_linear_top1", "pixel_ridge_top1",
                               "pixel_linear_top1", "fid_net_acc"};
    for (int i = 0; i < 5; i++) {
        int k = find(&s, fractions[i]);
        T_CHECK_MSG(k >= 0, "no result %s", fractions[i]);
        if (k >= 0) T_CHECK_MSG(s.value[k] >= 0 && s.value[k] <= 1, "%s = %g", fractions[i], s.value[k]);
    }
    /* the synthetic classes are easy: pixels and the classifier are far above chance (0.1) */
    T_CHECK(s.value[find(&s, "pixel_ridge_top1")] > 0.5);
    T_CHECK(s.value[find(&s, "fid_net_acc")] > 0.5);
    const char *positive[] = {"fid", "val_denoise_loss", "val_mask_mse", "train_img_per_s",
                              "device_hours", "finetune_final_loss"};
    for (int i = 0; i < 6; i++) {
        int k = find(&s, positive[i]);
        T_CHECK_MSG(k >= 0 && s.value[k] > 0 && isfinite(s.value[k]), "result %s", positive[i]);
    }
    int k = find(&s, "fid_samples");
    T_CHECK(k >= 0 && s.value[k] == 48);
    k = find(&s, "fid_steps");
    T_CHECK(k >= 0 && s.value[k] == 8);
    k = find(&s, "fid_cfg_scale");
    T_CHECK(k >= 0 && s.value[k] == 1.5); /* fine-tuned with labels: guided */
    k = find(&s, "fid_net");
    T_CHECK(k >= 0 && strncmp(s.text[k], "synthetic-classifier-", 21) == 0);
    k = find(&s, "sample_grid");
    T_REQUIRE(k >= 0);
    T_EQ_STR(s.text[k], "samples.png");
    char path[400];
    snprintf(path, sizeof path, "%s/samples.png", work);
    size_t n = 0;
    char *png = t_slurp(path, &n);
    T_CHECK(png && n > 8 && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
    free(png);
    T_EQ_INT(s.ft_points, 4); /* 20 steps, every 5 */
    /* each name once */
    for (int i = 0; i < s.nres; i++)
        for (int j = i + 1; j < s.nres; j++) T_CHECK_MSG(strcmp(s.key[i], s.key[j]) != 0, "%s twice", s.key[i]);
}

static void test_eval_run_finetune_resume_exact(void) {
    char json[2048], a[256], b[256], pa[300], pb[300], err[512];
    /* no eval here: the checkpoints and the fine-tuning loss carry the comparison */
    snprintf(json, sizeof json,
             "{\"seed\": 4, \"data\": {\"dataset\": \"synthetic\", \"image_size\": 16, \"channels\": 1,"
             " \"train_size\": 256, \"test_size\": 64}, \"model\": {\"patch\": 4, \"width\": 32, \"depth\": 1,"
             " \"dec_depth\": 1, \"heads\": 2}, \"train\": {\"steps\": 20, \"batch\": 8, \"lr\": 1e-3,"
             " \"threads\": 2, \"log_every\": 5, \"ckpt_every\": 10}, \"finetune\": {\"steps\": 30, \"ema\": 0.9}}");
    snprintf(a, sizeof a, "%s/ft-a", tmp_root);
    snprintf(b, sizeof b, "%s/ft-b", tmp_root);
    seen sa, sb, sc;
    memset(&sa, 0, sizeof sa);
    memset(&sb, 0, sizeof sb);
    memset(&sc, 0, sizeof sc);
    T_REQUIRE(run_config(json, a, NULL, &sa, err, sizeof err) == 0);
    sb.stop_at = 20 + 15; /* fine-tuning step 15 */
    int rc = run_config(json, b, NULL, &sb, err, sizeof err);
    T_EQ_INT(rc, UMDQ_ECANCELLED);
    T_CONTAINS(err, "fine-tuning step 15");
    T_CHECK(find(&sb, "finetune_final_loss") < 0);
    snprintf(pb, sizeof pb, "%s/ckpt.umd", b);
    char copy[320];
    snprintf(copy, sizeof copy, "%s/resume.umd", tmp_root);
    T_REQUIRE(rename(pb, copy) == 0);
    T_REQUIRE(run_config(json, b, copy, &sc, err, sizeof err) == 0 || !printf("# %s\n", err));
    int ka = find(&sa, "finetune_final_loss"), kc = find(&sc, "finetune_final_loss");
    T_REQUIRE(ka >= 0 && kc >= 0);
    T_CHECK_MSG(sa.value[ka] == sc.value[kc], "%.17g vs %.17g", sa.value[ka], sc.value[kc]);
    /* pre-training's final loss comes back from the fine-tuning checkpoint */
    ka = find(&sa, "final_loss");
    kc = find(&sc, "final_loss");
    T_REQUIRE(ka >= 0 && kc >= 0);
    T_CHECK_MSG(sa.value[ka] == sc.value[kc], "%.17g vs %.17g", sa.value[ka], sc.value[kc]);
    T_EQ_INT(sc.ft_points, 3); /* steps 20, 25, 30 after the resume at 15 */
    snprintf(pa, sizeof pa, "%s/ckpt.umd", a);
    size_t na = 0, nb = 0;
    char *x = t_slurp(pa, &na), *y = t_slurp(pb, &nb);
    T_CHECK(x && y && na == nb && na > 1000 && memcmp(x, y, na) == 0);
    free(x);
    free(y);
    /* a fine-tuning checkpoint under another config is refused by its hash */
    char other[2048];
    snprintf(other, sizeof other, "%s", json);
    char *p = strstr(other, "\"ema\": 0.9");
    T_REQUIRE(p != NULL);
    memcpy(p, "\"ema\": 0.8", 10);
    seen sd;
    memset(&sd, 0, sizeof sd);
    T_CHECK(run_config(other, b, copy, &sd, err, sizeof err) != 0);
    T_CONTAINS(err, "resume.umd");
}

int main(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/umdq-test-eval-XXXXXX");
    if (!mkdtemp(tmp_root)) return 1;
    T_RUN(test_eval_run_config_keys);
    T_RUN(test_eval_run_results);
    T_RUN(test_eval_run_finetune_resume_exact);
    t_remove_tree(tmp_root);
    return t_done();
}
