/* test_train_run.c: umd_run end to end on real data: determinism (same seed, same bits), exact
 * resume after a stop, refusal of another config's checkpoint, the callbacks, a short
 * Fashion-MNIST run whose loss falls, bad configs refused with the key path named, and a CPU job
 * that never loads the CUDA backend (so the worker's forks stay cheap).
 * umdq-uses: umd common */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "t.h"
#include "t_umd.h"
#include "cuda/umd_cuda.h"
#include "umd.h"
#include "umdq.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

static char tmp_root[256];

static void make_tmp(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/umdq-test-train-XXXXXX");
    if (!mkdtemp(tmp_root)) tmp_root[0] = 0;
}

static int files_equal(const char *a, const char *b) {
    size_t na, nb;
    char *x = t_slurp(a, &na), *y = t_slurp(b, &nb);
    int eq = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return eq;
}

/* What the callbacks saw. */
typedef struct {
    int progress_calls, metric_calls, checkpoints, logs;
    int64_t last_step, stop_at;
    double loss[512];    /* "loss" metric by step */
    int have_arena_line;
    double final_loss, img_per_s;
    int have_final_loss, have_img_per_s;
} seen;

static void cb_progress(void *ctx, int64_t step, int64_t total, double loss, double ips) {
    seen *s = ctx;
    (void)total;
    (void)loss;
    (void)ips;
    s->progress_calls++;
    s->last_step = step;
}

static void cb_metric(void *ctx, const char *key, int64_t step, double v) {
    seen *s = ctx;
    s->metric_calls++;
    if (!strcmp(key, "loss") && step >= 0 && step < 512) s->loss[step] = v;
}

static void cb_result(void *ctx, const char *key, double v, const char *text) {
    seen *s = ctx;
    (void)text;
    if (!strcmp(key, "final_loss")) {
        s->final_loss = v;
        s->have_final_loss = 1;
    }
    if (!strcmp(key, "train_img_per_s")) {
        s->img_per_s = v;
        s->have_img_per_s = 1;
    }
}

static int cb_checkpoint(void *ctx, const char *path, int64_t step) {
    seen *s = ctx;
    (void)step;
    s->checkpoints++;
    return access(path, R_OK) == 0 ? 0 : UMDQ_EIO;
}

static int cb_should_stop(void *ctx) {
    seen *s = ctx;
    return s->stop_at > 0 && s->last_step >= s->stop_at;
}

static void cb_log(void *ctx, const char *line) {
    seen *s = ctx;
    s->logs++;
    if (strstr(line, "arenas:")) s->have_arena_line = 1;
}

static int run_config(const char *json, const char *workdir, const char *resume, seen *s, char *err,
                      size_t errlen) {
    umd_events ev;
    memset(&ev, 0, sizeof ev);
    ev.ctx = s;
    ev.progress = cb_progress;
    ev.metric = cb_metric;
    ev.result = cb_result;
    ev.checkpoint = cb_checkpoint;
    ev.should_stop = cb_should_stop;
    ev.log = cb_log;
    ev.workdir = workdir;
    ev.resume_from = resume;
    return t_umd_run(json, &ev, err, errlen);
}

/* A tiny synthetic run: 16x16x1, patch 4 (L = 16), width 32, 2 heads, batch 16, r_t0 0.5. */
#define SYN_CONFIG(extra)                                                                          \
    "{\"seed\": 11, \"data\": {\"dataset\": \"synthetic\", \"image_size\": 16, \"channels\": 1,"     \
    " \"train_size\": 200}, \"model\": {\"patch\": 4, \"width\": 32, \"depth\": 2,"                 \
    " \"dec_depth\": 1, \"heads\": 2}, \"umd\": {\"labels\": true},"                               \
    " \"train\": {\"steps\": 8, \"batch\": 16, \"log_every\": 1, \"threads\": 2, \"ema\": 0.9" extra "}}"

/* ---- tests ------------------------------------------------------------------------------------- */

/* 1 when a line of /proc/self/maps names needle */
static int mapped(const char *needle) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* First of all tests, while nothing has opened the CUDA backend: asking whether it exists and
 * training on the CPU map neither it nor cuBLAS into the process. */
static void test_train_cpu_job_loads_no_cuda(void) {
    make_tmp();
    T_REQUIRE(tmp_root[0]);
    char w[300], err[512];
    snprintf(w, sizeof w, "%s/cpu", tmp_root);
    T_CHECK(umd_backend_available("cuda") == umd_cuda_built(NULL, 0));
    seen s = {0};
    int rc = run_config(SYN_CONFIG(", \"device\": \"cpu\""), w, NULL, &s, err, sizeof err);
    T_CHECK_MSG(rc == 0, "cpu run: %s", err);
    T_CHECK_MSG(!mapped("libumd_cuda") && !mapped("libcublas"), "a CPU job mapped the CUDA libraries");
    t_remove_tree(tmp_root);
}

static void test_train_determinism(void) {
    make_tmp();
    T_REQUIRE(tmp_root[0]);
    char a[300], b[300], c[300], fa[320], fb[320], fc[320], err[512];
    snprintf(a, sizeof a, "%s/a", tmp_root);
    snprintf(b, sizeof b, "%s/b", tmp_root);
    snprintf(c, sizeof c, "%s/c", tmp_root);
    seen sa = {0}, sb = {0}, sc = {0};
    int rc = run_config(SYN_CONFIG(", \"lr\": 0.002"), a, NULL, &sa, err, sizeof err);
    T_CHECK_MSG(rc == 0, "run a: %s", err);
    rc = run_config(SYN_CONFIG(", \"lr\": 0.002"), b, NULL, &sb, err, sizeof err);
    T_CHECK_MSG(rc == 0, "run b: %s", err);
    const char *other = "{\"seed\": 12, \"data\": {\"dataset\": \"synthetic\", \"image_size\": 16,"
                        " \"channels\": 1, \"train_size\": 200}, \"model\": {\"patch\": 4, \"width\": 32,"
                        " \"depth\": 2, \"dec_depth\": 1, \"heads\": 2}, \"umd\": {\"labels\": true},"
                        " \"train\": {\"steps\": 8, \"batch\": 16, \"lr\": 0.002, \"log_every\": 1,"
                        " \"threads\": 2, \"ema\": 0.9}}";
    rc = run_config(other, c, NULL, &sc, err, sizeof err);
    T_CHECK_MSG(rc == 0, "run c: %s", err);
    snprintf(fa, sizeof fa, "%s/ckpt.umd", a);
    snprintf(fb, sizeof fb, "%s/ckpt.umd", b);
    snprintf(fc, sizeof fc, "%s/ckpt.umd", c);
    T_CHECK_MSG(files_equal(fa, fb), "two runs with the same seed wrote different checkpoints");
    T_CHECK_MSG(!files_equal(fa, fc), "another seed wrote the same checkpoint");
    for (int s = 1; s <= 8; s++) T_CHECK(sa.loss[s] == sb.loss[s] && sa.loss[s] > 0);
    /* the callbacks */
    T_EQ_INT(sa.progress_calls, 8);
    T_EQ_INT(sa.last_step, 8);
    T_EQ_INT(sa.metric_calls, 8 * 6);
    T_EQ_INT(sa.checkpoints, 1);
    T_CHECK(sa.have_arena_line);
    T_CHECK(sa.have_final_loss && sa.final_loss == sa.loss[8]);
    T_CHECK(sa.have_img_per_s && sa.img_per_s > 0);
    t_remove_tree(tmp_root);
}

static void test_train_resume_exact(void) {
    make_tmp();
    T_REQUIRE(tmp_root[0]);
    char full[300], part[300], ff[320], fp[320], err[512];
    snprintf(full, sizeof full, "%s/full", tmp_root);
    snprintf(part, sizeof part, "%s/part", tmp_root);
    snprintf(ff, sizeof ff, "%s/ckpt.umd", full);
    snprintf(fp, sizeof fp, "%s/ckpt.umd", part);
    seen s1 = {0}, s2 = {0}, s3 = {0};
    /* 8 steps straight, with a checkpoint every 3 steps on the way */
    int rc = run_config(SYN_CONFIG(", \"lr\": 0.002, \"ckpt_every\": 3"), full, NULL, &s1, err, sizeof err);
    T_REQUIRE(rc == 0 || (printf("  %s\n", err), 0));
    T_EQ_INT(s1.checkpoints, 3); /* steps 3, 6 and the end */
    /* the same config stopped after 5 steps (checkpoint at the stop), then resumed; the first
     * part with train.recompute "partial" */
    s2.stop_at = 5;
    rc = run_config(SYN_CONFIG(", \"lr\": 0.002, \"ckpt_every\": 3, \"recompute\": \"partial\""), part,
                    NULL, &s2, err, sizeof err);
    T_EQ_INT(rc, UMDQ_ECANCELLED);
    T_CONTAINS(err, "step 5");
    T_CHECK(!files_equal(ff, fp));
    /* resumed with train.recompute "full" (true): the same config for a checkpoint, the same
     * bits as the run that kept every tensor */
    rc = run_config(SYN_CONFIG(", \"lr\": 0.002, \"ckpt_every\": 3, \"recompute\": true"), part, fp,
                    &s3, err, sizeof err);
    T_REQUIRE(rc == 0 || (printf("  %s\n", err), 0));
    T_EQ_INT(s3.last_step, 8);
    T_EQ_INT(s3.progress_calls, 3); /* steps 6, 7, 8 */
    T_CHECK_MSG(files_equal(ff, fp), "the resumed run's parameters, moments or EMA differ");
    for (int s = 1; s <= 5; s++) T_CHECK(s1.loss[s] == s2.loss[s]);
    for (int s = 6; s <= 8; s++) T_CHECK(s1.loss[s] == s3.loss[s]);
    /* another config's checkpoint is refused */
    seen s4 = {0};
    char other[320];
    snprintf(other, sizeof other, "%s/other", tmp_root);
    rc = run_config(SYN_CONFIG(", \"lr\": 0.001, \"ckpt_every\": 3"), other, fp, &s4, err, sizeof err);
    T_CHECK(rc != 0);
    T_CONTAINS(err, "hash");
    t_remove_tree(tmp_root);
}

static void test_train_fashion_mnist_loss_falls(void) {
    if (access("/usr/share/datasets/fashion-mnist", R_OK) != 0)
        T_SKIP("Debian's dataset-fashion-mnist is not installed");
    seen s = {0};
    char err[512];
    const char *cfg =
        "{\"seed\": 3, \"data\": {\"dataset\": \"fashion-mnist\", \"limit\": 4096},"
        " \"model\": {\"patch\": 4, \"width\": 64, \"depth\": 2, \"dec_depth\": 1, \"heads\": 2},"
        " \"train\": {\"steps\": 60, \"batch\": 32, \"lr\": 0.002, \"warmup\": 0.1,"
        " \"log_every\": 1, \"threads\": 1}}";
    int rc = run_config(cfg, NULL, NULL, &s, err, sizeof err);
    T_REQUIRE(rc == 0 || (printf("  %s\n", err), 0));
    double first = 0, last = 0;
    for (int k = 1; k <= 10; k++) first += s.loss[k] / 10;
    for (int k = 51; k <= 60; k++) last += s.loss[k] / 10;
    printf("  mean loss of steps 1-10 %.4f, of steps 51-60 %.4f (%.0f img/s)\n", first, last, s.img_per_s);
    T_CHECK_MSG(last < 0.7 * first, "loss did not fall: %.4f -> %.4f", first, last);
}

static void expect_refused(const char *json, int code, const char *needle) {
    seen s = {0};
    char err[512] = "";
    int rc = run_config(json, NULL, NULL, &s, err, sizeof err);
    T_CHECK_MSG(rc == code, "%s: rc %d (%s), want %d", json, rc, err, code);
    T_CONTAINS(err, needle);
    T_EQ_INT(s.progress_calls, 0);
}

static void test_train_bad_configs(void) {
    expect_refused("[1, 2]", UMDQ_EINVAL, "object");
    expect_refused("{\"model\": {\"width\": \"wide\"}, \"data\": {\"dataset\": \"synthetic\"}}",
                   UMDQ_EINVAL, "model.width");
    expect_refused("{\"train\": {\"steps\": 2.5}, \"data\": {\"dataset\": \"synthetic\"}}",
                   UMDQ_EINVAL, "train.steps");
    expect_refused("{\"umd\": {\"mask_ratio\": true}, \"data\": {\"dataset\": \"synthetic\"}}",
                   UMDQ_EINVAL, "umd.mask_ratio");
    expect_refused("{\"model\": {\"wdith\": 64}, \"data\": {\"dataset\": \"synthetic\"}}",
                   UMDQ_EINVAL, "model.wdith");
    expect_refused("{\"model\": {\"width\": 30, \"heads\": 4}, \"data\": {\"dataset\": \"synthetic\"}}",
                   UMDQ_EINVAL, "model.width");
    expect_refused("{\"model\": {\"patch\": 5}, \"data\": {\"dataset\": \"synthetic\"}}",
                   UMDQ_EINVAL, "model.patch");
    expect_refused("{\"umd\": {\"mask_ratio\": 0.99, \"r_t0\": 0}, \"data\": {\"dataset\": \"synthetic\"},"
                   " \"model\": {\"width\": 16, \"heads\": 2}}", UMDQ_EINVAL, "umd.mask_ratio");
    char why[256];
    if (umd_cuda_devices(why, sizeof why) == 0) { /* where a GPU is visible these would train */
        expect_refused("{\"train\": {\"device\": \"cuda\"}, \"data\": {\"dataset\": \"synthetic\"}}",
                       UMDQ_EUNSUPPORTED, "train.device");
        expect_refused("{\"train\": {\"precision\": \"bf16\"}, \"data\": {\"dataset\": \"synthetic\"}}",
                       UMDQ_EUNSUPPORTED, "train.precision");
    }
    expect_refused("{\"train\": {\"precision\": \"bf16\", \"device\": \"cpu\"}, \"data\": "
                   "{\"dataset\": \"synthetic\"}}", UMDQ_EINVAL, "train.precision");
    expect_refused("{\"data\": {\"dataset\": \"mnist\", \"path\": \"/nonexistent/umdq\"}}",
                   UMDQ_ENOTFOUND, "/nonexistent/umdq");
    T_CHECK(umd_backend_available("cpu") == 1);
    T_CHECK(umd_backend_available("cuda") == (umd_ops_cuda(UMD_MATH_FP32) != NULL));
    T_CHECK(umd_backend_available(NULL) == 0);
}

int main(void) {
    T_RUN(test_train_cpu_job_loads_no_cuda);
    T_RUN(test_train_determinism);
    T_RUN(test_train_resume_exact);
    T_RUN(test_train_fashion_mnist_loss_falls);
    T_RUN(test_train_bad_configs);
    return t_done();
}
