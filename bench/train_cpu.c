/* train_cpu.c: the CPU trainer's speed against PyTorch on the umd-cpu config (28x28x1
 * Fashion-MNIST, patch 4, width 192, depth 6, dec_depth 2, heads 3, batch 128, fp32, every core).
 * It times warm-up plus timed training steps of the C trainer (batch, draws, forward, backward,
 * clip, AdamW: the whole step), then runs the PyTorch twin (bench/pytorch_twin.py, Debian's
 * /usr/bin/python3) on the same config in the same invocation, and prints images/s of both, the
 * ratio and the peak RSS of both. With --rounds R it alternates R timed blocks of each (the
 * machine may be shared: a burst of someone else's work then hurts one block, not the result) and
 * compares the best median step time of each side, and the best single step of each.
 *
 *   train_cpu [--steps N] [--warmup N] [--rounds R] [--threads N] [--batch B] [--no-twin]
 *             [--twin PATH] [--python PATH] [--recompute (train.recompute "full")]
 *             [--recompute-partial (train.recompute "partial")]
 *             [--recompute-norms (train.recompute "norms")]
 *
 * umdq-uses: umd common */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include "config.h"
#include "data.h"
#include "model.h"
#include "ops.h"
#include "optim.h"

static double now_s_mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    int steps, warmup, rounds, threads, batch, twin, recompute;
    const char *twin_path, *python;
} bench_args;

static int parse_args(int argc, char **argv, bench_args *a) {
    a->steps = 10;
    a->warmup = 3;
    a->rounds = 2;
    a->threads = 2;
    a->batch = 128;
    a->twin = 1;
    a->recompute = 0;
    a->twin_path = "bench/pytorch_twin.py";
    a->python = "/usr/bin/python3";
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--no-twin")) { a->twin = 0; continue; }
        if (!strcmp(o, "--recompute")) { a->recompute = UMD_RECOMPUTE_FULL; continue; }
        if (!strcmp(o, "--recompute-partial")) { a->recompute = UMD_RECOMPUTE_PARTIAL; continue; }
        if (!strcmp(o, "--recompute-norms")) { a->recompute = UMD_RECOMPUTE_NORMS; continue; }
        if (!v) goto usage;
        if (!strcmp(o, "--steps")) a->steps = atoi(v);
        else if (!strcmp(o, "--warmup")) a->warmup = atoi(v);
        else if (!strcmp(o, "--rounds")) a->rounds = atoi(v);
        else if (!strcmp(o, "--threads")) a->threads = atoi(v);
        else if (!strcmp(o, "--batch")) a->batch = atoi(v);
        else if (!strcmp(o, "--twin")) a->twin_path = v;
        else if (!strcmp(o, "--python")) a->python = v;
        else goto usage;
        i++;
    }
    if (a->steps >= 1 && a->warmup >= 0 && a->rounds >= 1 && a->threads >= 0 && a->batch >= 1)
        return 0;
usage:
    fprintf(stderr, "usage: train_cpu [--steps N] [--warmup N] [--rounds R] [--threads N] [--batch B] "
                    "[--no-twin] [--twin PATH] [--python PATH] [--recompute] [--recompute-partial] [--recompute-norms]\n");
    return 2;
}

/* The twin's JSON line: median and best step seconds, peak RSS. 0 on success. */
static int run_twin(const bench_args *a, double *med, double *best, double *rss_kb, char *line,
                    size_t n) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s --steps %d --warmup %d --threads %d --batch %d", a->python,
             a->twin_path, a->steps, a->warmup, a->threads > 0 ? a->threads : 2, a->batch);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    int found = 0;
    while (fgets(line, (int)n, p)) {
        cJSON *j = cJSON_Parse(line);
        if (!j) continue;
        cJSON *v = cJSON_GetObjectItem(j, "median_step_s"), *b = cJSON_GetObjectItem(j, "best_step_s");
        cJSON *r = cJSON_GetObjectItem(j, "max_rss_kb");
        if (cJSON_IsNumber(v) && cJSON_IsNumber(b) && cJSON_IsNumber(r)) {
            *med = v->valuedouble;
            *best = b->valuedouble;
            *rss_kb = r->valuedouble;
            found = 1;
        }
        cJSON_Delete(j);
    }
    int st = pclose(p);
    return found && st == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    bench_args a;
    if (parse_args(argc, argv, &a)) return 2;
    int total = a.warmup + a.rounds * a.steps;
    int have_fmnist = access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) == 0;
    char json[1024];
    snprintf(json, sizeof json,
             "{\"data\": %s, \"model\": {\"patch\": 4, \"width\": 192, \"depth\": 6, \"dec_depth\": 2,"
             " \"heads\": 3}, \"train\": {\"batch\": %d, \"steps\": %d, \"threads\": %d,"
             " \"recompute\": \"%s\"}}",
             have_fmnist ? "{\"dataset\": \"fashion-mnist\"}"
                         : "{\"dataset\": \"synthetic\", \"image_size\": 28, \"train_size\": 4096}",
             a.batch, total, a.threads, umd_recompute_name(a.recompute));
    umd_config cfg;
    char err[512];
    if (umd_config_parse_text(json, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "train_cpu: config: %s\n", err);
        return 1;
    }
    umd_split train;
    if (umd_data_load(&cfg, &train, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "train_cpu: data: %s\n", err);
        return 1;
    }
    umd_shape shape = {train.c, train.h, train.w, train.classes, cfg.batch};
    umd_model *m = NULL;
    if (umd_model_new(&m, &cfg, &shape, umd_ops_cpu(), err, sizeof err) != 0) {
        fprintf(stderr, "train_cpu: %s\n", err);
        return 1;
    }
    char line[1024];
    umd_model_describe(m, line, sizeof line);
    printf("umd-cpu: 28x28x1 (%s), patch 4, width 192, depth 6, dec_depth 2, heads 3, batch %d, fp32\n",
           have_fmnist ? "fashion-mnist" : "synthetic", a.batch);
    printf("%s\n", line);
    umd_model_init(m, cfg.seed);
    size_t CHW = (size_t)train.c * train.h * train.w;
    float *x = malloc((size_t)cfg.batch * CHW * sizeof *x);
    int32_t *y = malloc((size_t)cfg.batch * sizeof *y);
    double *times = malloc((size_t)total * sizeof *times);
    if (!x || !y || !times) return 1;
    umd_cursor cur = {cfg.seed, 0, 0};
    umd_losses L = {0};
    double c_med = 1e30, c_best = 1e30, t_med = 1e30, t_best = 1e30, t_rss = 0;
    int k = 0, rc = 0, twin_ok = a.twin;
    for (int round = 0; round < a.rounds; round++) {
        int n = round == 0 ? a.warmup + a.steps : a.steps;
        for (int i = 0; i < n; i++, k++) {
            double t0 = now_s_mono();
            umd_data_next_batch(&train, &cur, cfg.batch, cfg.augment, x, y);
            umd_model_load_batch(m, x, y);
            umd_model_draw(m, cfg.seed, k);
            umd_model_step(m, 1, &L);
            umd_optim_step(m, &cfg, k, umd_lr_at(&cfg, k), NULL);
            times[k] = now_s_mono() - t0;
        }
        double *block = times + k - a.steps;
        for (int i = 0; i < a.steps; i++) c_best = block[i] < c_best ? block[i] : c_best;
        double med = median(block, a.steps);
        c_med = med < c_med ? med : c_med;
        printf("round %d: C median step %.1f ms", round + 1, med * 1e3);
        if (twin_ok) {
            double tm = 0, tb = 0, tr = 0;
            if (run_twin(&a, &tm, &tb, &tr, line, sizeof line) == 0) {
                printf(", PyTorch median step %.1f ms", tm * 1e3);
                t_med = tm < t_med ? tm : t_med;
                t_best = tb < t_best ? tb : t_best;
                t_rss = tr > t_rss ? tr : t_rss;
            } else {
                printf(", PyTorch twin failed to run (%s %s)", a.python, a.twin_path);
                twin_ok = 0;
                rc = 1;
            }
        }
        printf("\n");
        fflush(stdout);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double c_rss = (double)ru.ru_maxrss / 1024.0;
    int threads = umd_model_ops(m)->ctx_threads(umd_model_ctx(m));
    printf("C trainer    (%d threads, %d replicas): %.1f img/s (best median step %.1f ms), best "
           "step %.1f ms = %.1f img/s; peak RSS %.0f MiB; last loss %.4f\n",
           threads, umd_model_replicas(m), cfg.batch / c_med, c_med * 1e3, c_best * 1e3,
           cfg.batch / c_best, c_rss, L.loss);
    if (twin_ok) {
        printf("PyTorch twin (%d threads): %.1f img/s (best median step %.1f ms), best step %.1f ms "
               "= %.1f img/s; peak RSS %.0f MiB\n",
               a.threads > 0 ? a.threads : 2, cfg.batch / t_med, t_med * 1e3, t_best * 1e3,
               cfg.batch / t_best, t_rss / 1024.0);
        printf("ratio C / PyTorch: %.2fx images/s (medians), %.2fx (best steps); %.2fx peak RSS\n",
               t_med / c_med, t_best / c_best, c_rss / (t_rss / 1024.0));
    }
    free(x);
    free(y);
    free(times);
    umd_model_destroy(&m);
    umd_split_free(&train);
    return rc;
}
