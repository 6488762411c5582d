/* test_eval_stop.c: the evaluation through umd_run answers should_stop within about a second in
 * each of its long phases (rep features, linear probe, validation losses, sampling, the FID
 * network's training, FID features) with UMDQ_ECANCELLED and a message naming the phase, reports
 * no result of the phase it was stopped in, and beats (eval_progress) about once a second while
 * it runs: the sign of life a supervisor that watches the step needs. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "t.h"
#include "t_umd.h"
#include "umd.h"
#include "umdq.h"
#include "util.h"

static char tmp_root[64];

typedef struct {
    const char *stop_in;   /* phase whose first beat requests the stop; NULL = never */
    double stop_at;        /* mono_s of that request, 0 before */
    int64_t last_step;     /* of the progress calls */
    int beats;             /* eval_progress calls */
    double first_beat, last_beat;
    int bad_beat;          /* a beat with done > total (total known) or a step other than the last */
    char phases[512];      /* the phases beaten, in order, each once: "rep features,linear probe" */
    int nres;
    char results[1024];    /* result names, comma separated */
} watch;

static void cb_progress(void *ctx, int64_t step, int64_t total, double loss, double ips) {
    (void)total, (void)loss, (void)ips;
    ((watch *)ctx)->last_step = step;
}

static void cb_result(void *ctx, const char *key, double v, const char *text) {
    watch *w = ctx;
    (void)v, (void)text;
    size_t n = strlen(w->results);
    snprintf(w->results + n, sizeof w->results - n, "%s,", key);
    w->nres++;
}

static void cb_eval_progress(void *ctx, const char *phase, int64_t done, int64_t total) {
    watch *w = ctx;
    double now = mono_s();
    if (w->beats == 0) w->first_beat = now;
    w->last_beat = now;
    w->beats++;
    if (done < 0 || (total > 0 && done > total)) w->bad_beat = 1;
    size_t n = strlen(w->phases);
    const char *last = n ? strrchr(w->phases, ',') : NULL;
    const char *tail = last ? last + 1 : w->phases;
    if (strcmp(tail, phase) != 0)
        snprintf(w->phases + n, sizeof w->phases - n, "%s%s", n ? "," : "", phase);
    if (w->stop_in && !w->stop_at && strcmp(phase, w->stop_in) == 0) w->stop_at = now;
}

static int cb_should_stop(void *ctx) { return ((watch *)ctx)->stop_at > 0; }

static void cb_log(void *ctx, const char *line) {
    (void)ctx;
    printf("# %s\n", line);
}

/* umd_run of json with the watch; *secs = seconds from the stop request to the return */
static int run(const char *json, watch *w, double *secs, char *err, size_t errlen) {
    umd_events ev;
    memset(&ev, 0, sizeof ev);
    ev.ctx = w;
    ev.progress = cb_progress;
    ev.result = cb_result;
    ev.should_stop = cb_should_stop;
    ev.eval_progress = cb_eval_progress;
    ev.log = cb_log;
    int rc = t_umd_run(json, &ev, err, errlen);
    *secs = w->stop_at > 0 ? mono_s() - w->stop_at : -1;
    return rc;
}

/* 10 training steps, then an evaluation whose every phase lasts well over a second on one core */
#define CFG(EVAL)                                                                                   \
    "{\"seed\": 3, \"data\": {\"dataset\": \"synthetic\", \"image_size\": 16, \"channels\": 1,"     \
    " \"train_size\": 4096, \"test_size\": %d}, \"model\": {\"patch\": 4, \"width\": 64,"        \
    " \"depth\": 2, \"dec_depth\": 1, \"heads\": 2}, \"train\": {\"steps\": 10, \"batch\": 16,"    \
    " \"lr\": 1e-3, \"threads\": 1, \"log_every\": 5}, \"eval\": {\"cache_dir\": \"%s/cache-%s\","  \
    EVAL "}}"

/* Stop in phase; the run must end cancelled within a second or so, naming the phase. */
static void stop_in(const char *phase, int test_size, const char *eval, const char *no_result) {
    char json[2048], err[512] = "";
    snprintf(json, sizeof json, CFG("%s"), test_size, tmp_root, phase[0] == 'F' ? "fid" : "x",
             eval);
    watch w;
    memset(&w, 0, sizeof w);
    w.stop_in = phase;
    double secs = 0;
    int rc = run(json, &w, &secs, err, sizeof err);
    T_CHECK_MSG(w.stop_at > 0, "phase \"%s\" never beat (phases: %s; rc %d: %s)", phase, w.phases,
                rc, err);
    T_EQ_INT(rc, UMDQ_ECANCELLED);
    T_CONTAINS(err, "stopped on request");
    T_CONTAINS(err, phase);
    T_CHECK_MSG(secs >= 0 && secs < 1.5, "stopped %.2f s after the request in %s", secs, phase);
    T_CHECK_MSG(w.last_step == 10, "last progress step %lld", (long long)w.last_step);
    T_CHECK(!w.bad_beat);
    if (no_result) T_CHECK_MSG(!strstr(w.results, no_result), "%s reported: %s", no_result, w.results);
    printf("# stopped in %s %.3f s after the request (phases beaten: %s)\n", phase, secs, w.phases);
}

static void test_eval_stop_rep_features(void) {
    stop_in("rep features", 1024, "\"probe_train\": 0, \"probe_epochs\": 1, \"fid_samples\": 0",
            "probe_ridge_top1");
}

static void test_eval_stop_linear_probe(void) {
    stop_in("linear probe", 1024, "\"probe_train\": 1024, \"probe_test\": 64, \"probe_shots\": 10,"
            " \"probe_epochs\": 1000, \"fid_samples\": 0", "probe_linear_top1");
}

static void test_eval_stop_validation(void) {
    stop_in("validation losses", 16384, "\"probe_train\": 64, \"probe_test\": 64, \"probe_shots\": 2,"
            " \"probe_epochs\": 1, \"val_images\": 100000, \"batch\": 16, \"fid_samples\": 0",
            "val_denoise_loss");
}

static void test_eval_stop_sampling(void) {
    stop_in("sampling", 1024, "\"probe_train\": 64, \"probe_test\": 64, \"probe_shots\": 2,"
            " \"probe_epochs\": 1, \"val_images\": 0, \"fid_samples\": 100000, \"ddim_steps\": 50",
            "fid");
}

static void test_eval_stop_fid_network(void) {
    stop_in("FID network", 1024, "\"probe_train\": 64, \"probe_test\": 64, \"probe_shots\": 2,"
            " \"probe_epochs\": 1, \"val_images\": 0, \"fid_samples\": 16, \"ddim_steps\": 2,"
            " \"classifier_epochs\": 1000, \"grid\": 0", "fid");
}

/* An evaluation that runs to its end beats about once a second from its start to its end. */
static void test_eval_stop_beats(void) {
    char json[2048], err[512] = "";
    snprintf(json, sizeof json, CFG("%s"), 1024, tmp_root, "beats",
             "\"probe_train\": 1024, \"probe_test\": 256, \"probe_shots\": 10, \"probe_epochs\": 200,"
             " \"val_images\": 0, \"fid_samples\": 0");
    watch w;
    memset(&w, 0, sizeof w);
    double t0 = mono_s(), secs;
    int rc = run(json, &w, &secs, err, sizeof err);
    double total = mono_s() - t0;
    T_REQUIRE(rc == 0 || !printf("# %s\n", err));
    T_CHECK_MSG(strstr(w.results, "probe_linear_top1") != NULL, "results: %s", w.results);
    T_CONTAINS(w.phases, "rep features");
    T_CONTAINS(w.phases, "linear probe");
    /* one beat at the start of the evaluation, then one per second of it */
    double span = w.last_beat - w.first_beat;
    T_CHECK_MSG(w.beats >= 2 && w.beats <= (int)(span / 1.0) + 2, "%d beats over %.2f s",
                w.beats, span);
    printf("# %d beats over %.2f s of a %.2f s run (phases: %s)\n", w.beats, span, total, w.phases);
}

int main(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/umdq-test-evalstop-XXXXXX");
    if (!mkdtemp(tmp_root)) return 1;
    T_RUN(test_eval_stop_rep_features);
    T_RUN(test_eval_stop_linear_probe);
    T_RUN(test_eval_stop_validation);
    T_RUN(test_eval_stop_sampling);
    T_RUN(test_eval_stop_fid_network);
    T_RUN(test_eval_stop_beats);
    t_remove_tree(tmp_root);
    return t_done();
}
