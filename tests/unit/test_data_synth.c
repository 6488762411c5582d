/* test_data_synth.c: the synthetic data set: made from the seed alone, same seed same bytes,
 * and learnable (a nearest-class-mean classifier on raw pixels beats chance by far). */
/* umdq-uses: umd common */
#include <stdint.h>
#include <stdlib.h>
#include "data.h"
#include "t.h"
#include "umdq.h"

static char err[1024];

static umd_config synth_config(uint64_t seed, int size, int channels, int classes, int ntrain, int ntest) {
    umd_config c;
    memset(&c, 0, sizeof c);
    c.dataset = UMD_DATA_SYNTHETIC;
    c.seed = seed;
    c.syn_size = size;
    c.syn_channels = channels;
    c.syn_classes = classes;
    c.syn_train = ntrain;
    c.syn_test = ntest;
    return c;
}

static void data_synth_deterministic(void) {
    umd_config c = synth_config(7, 16, 1, 10, 300, 100);
    umd_split a, at, b, bt, d, dt;
    T_REQUIRE(umd_data_load(&c, &a, &at, err, sizeof err) == 0);
    T_REQUIRE(umd_data_load(&c, &b, &bt, err, sizeof err) == 0);
    c.seed = 8;
    T_REQUIRE(umd_data_load(&c, &d, &dt, err, sizeof err) == 0);
    T_EQ_INT(a.n, 300);
    T_EQ_INT(at.n, 100);
    T_EQ_INT(a.h, 16);
    T_EQ_INT(a.w, 16);
    T_EQ_INT(a.c, 1);
    T_EQ_INT(a.classes, 10);
    size_t bytes = (size_t)a.n * 256;
    T_CHECK(memcmp(a.pixels, b.pixels, bytes) == 0);
    T_CHECK(memcmp(a.labels, b.labels, (size_t)a.n * sizeof *a.labels) == 0);
    T_CHECK(memcmp(at.pixels, bt.pixels, (size_t)at.n * 256) == 0);
    T_CHECK(memcmp(a.pixels, d.pixels, bytes) != 0);            /* another seed, other images */
    T_CHECK(memcmp(a.pixels, at.pixels, (size_t)at.n * 256) != 0); /* test is not train */
    int counts[10] = {0};
    for (int64_t i = 0; i < a.n; i++) {
        T_REQUIRE(a.labels[i] < 10);
        counts[a.labels[i]]++;
    }
    for (int k = 0; k < 10; k++) T_EQ_INT(counts[k], 30);
    /* pixels use the range and images of one class differ */
    int lo = 255, hi = 0;
    for (size_t j = 0; j < bytes; j++) {
        if (a.pixels[j] < lo) lo = a.pixels[j];
        if (a.pixels[j] > hi) hi = a.pixels[j];
    }
    T_CHECK_MSG(lo < 30 && hi > 225, "pixel range %d..%d", lo, hi);
    T_CHECK(memcmp(a.pixels, a.pixels + 10 * 256, 256) != 0); /* images 0 and 10: class 0 both */
    /* data.limit applies to train */
    umd_split_free(&b);
    umd_split_free(&bt);
    c.seed = 7;
    c.data_limit = 50;
    T_REQUIRE(umd_data_load(&c, &b, &bt, err, sizeof err) == 0);
    T_EQ_INT(b.n, 50);
    T_EQ_INT(bt.n, 100);
    T_CHECK(memcmp(a.pixels, b.pixels, 50 * 256) == 0);
    umd_split_free(&a);
    umd_split_free(&at);
    umd_split_free(&b);
    umd_split_free(&bt);
    umd_split_free(&d);
    umd_split_free(&dt);
}

/* Accuracy on test of the classifier that picks the class whose train mean image is nearest. */
static double nearest_mean_accuracy(const umd_split *tr, const umd_split *te) {
    size_t img = (size_t)tr->c * tr->h * tr->w;
    int K = tr->classes;
    double *mean = calloc((size_t)K * img, sizeof *mean);
    int *count = calloc((size_t)K, sizeof *count);
    if (!mean || !count) {
        free(mean);
        free(count);
        return -1;
    }
    for (int64_t i = 0; i < tr->n; i++) {
        int k = tr->labels[i];
        count[k]++;
        for (size_t j = 0; j < img; j++) mean[(size_t)k * img + j] += tr->pixels[(size_t)i * img + j];
    }
    for (int k = 0; k < K; k++)
        for (size_t j = 0; j < img; j++) mean[(size_t)k * img + j] /= count[k] ? count[k] : 1;
    int right = 0;
    for (int64_t i = 0; i < te->n; i++) {
        int best = -1;
        double best_d = 0;
        for (int k = 0; k < K; k++) {
            double d = 0;
            for (size_t j = 0; j < img; j++) {
                double e = te->pixels[(size_t)i * img + j] - mean[(size_t)k * img + j];
                d += e * e;
            }
            if (best < 0 || d < best_d) {
                best = k;
                best_d = d;
            }
        }
        right += best == te->labels[i];
    }
    free(mean);
    free(count);
    return (double)right / (double)te->n;
}

static void data_synth_separable(void) {
    static const struct { int size, channels, classes; } cases[] = {
        {16, 1, 10}, {32, 3, 10}, {8, 1, 2}, {28, 1, 20}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        umd_config c = synth_config(3, cases[t].size, cases[t].channels, cases[t].classes, 1000, 400);
        umd_split tr, te;
        T_REQUIRE(umd_data_load(&c, &tr, &te, err, sizeof err) == 0);
        T_EQ_INT(tr.c, cases[t].channels);
        double acc = nearest_mean_accuracy(&tr, &te), chance = 1.0 / cases[t].classes;
        /* well above chance, yet not a lookup table: images vary within a class */
        T_CHECK_MSG(acc > chance + 0.5 * (1 - chance), "case %zu: accuracy %.3f, chance %.3f", t, acc, chance);
        umd_split_free(&tr);
        umd_split_free(&te);
    }
}

static void data_synth_refused(void) {
    umd_config c = synth_config(1, 16, 1, 300, 10, 10); /* labels are bytes */
    umd_split tr, te;
    T_EQ_INT(umd_data_load(&c, &tr, &te, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "data.classes");
    T_CHECK(tr.pixels == NULL && te.pixels == NULL);
    c = synth_config(1, 16, 4, 10, 10, 10);
    T_EQ_INT(umd_data_load(&c, &tr, &te, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "data.channels");
}

int main(void) {
    T_RUN(data_synth_deterministic);
    T_RUN(data_synth_separable);
    T_RUN(data_synth_refused);
    return t_done();
}
