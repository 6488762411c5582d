/* test_eval_fid.c: the Frechet distance against scipy's sqrtm formula on golden inputs
 * (tests/golden/fid_golden.txt, written by tests/golden/make_fid_golden.py) to 1e-6 relative, the
 * Jacobi eigen-decomposition, and the FID feature network on the synthetic data set: it learns
 * the classes, its cache file round-trips (and a damaged one is refused by name), and FID(train,
 * test) is small while FID(noise, test) is large. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "config.h"
#include "data.h"
#include "eval/classifier.h"
#include "eval/linalg.h"
#include "ops.h"
#include "philox.h"
#include "t.h"
#include "umdq.h"

#define GOLDEN "tests/golden/fid_golden.txt"

static double *read_doubles(FILE *f, size_t n) {
    double *v = malloc(n * sizeof(double));
    if (!v) return NULL;
    for (size_t i = 0; i < n; i++)
        if (fscanf(f, "%lf", &v[i]) != 1) {
            free(v);
            return NULL;
        }
    return v;
}

static void test_eval_fid_golden_scipy(void) {
    FILE *f = fopen(GOLDEN, "r");
    T_REQUIRE(f != NULL);
    int version = 0, cases = 0;
    T_REQUIRE(fscanf(f, "umdq-fid-golden %d cases %d", &version, &cases) == 2);
    T_EQ_INT(version, 1);
    T_REQUIRE(cases >= 3);
    char err[256];
    for (int c = 0; c < cases; c++) {
        int d = 0;
        T_REQUIRE(fscanf(f, "%d", &d) == 1 && d > 0 && d <= 512);
        double *mu1 = read_doubles(f, (size_t)d), *S1 = read_doubles(f, (size_t)d * d);
        double *mu2 = read_doubles(f, (size_t)d), *S2 = read_doubles(f, (size_t)d * d);
        double want = 0, got = -1;
        T_REQUIRE(mu1 && S1 && mu2 && S2 && fscanf(f, "%lf", &want) == 1);
        T_EQ_INT(umd_frechet_distance(mu1, S1, mu2, S2, d, &got, err, sizeof err), 0);
        T_NEAR(got, want, 0, 1e-6);
        /* symmetric in its arguments, and 0 against itself */
        double back = -1, self = -1;
        T_EQ_INT(umd_frechet_distance(mu2, S2, mu1, S1, d, &back, err, sizeof err), 0);
        T_NEAR(back, want, 0, 1e-6);
        T_EQ_INT(umd_frechet_distance(mu1, S1, mu1, S1, d, &self, err, sizeof err), 0);
        T_NEAR(self, 0, 1e-9 * d, 0);
        free(mu1);
        free(S1);
        free(mu2);
        free(S2);
    }
    fclose(f);
}

static void test_eval_fid_eigen(void) {
    const int n = 24;
    double *A = malloc(sizeof(double) * n * n), *A0 = malloc(sizeof(double) * n * n);
    double *V = malloc(sizeof(double) * n * n), *ev = malloc(sizeof(double) * n);
    T_REQUIRE(A && A0 && V && ev);
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            philox4 r = philox_draw(3, PHILOX_TEST, 0, (uint64_t)(i * n + j));
            A0[i * n + j] = A0[j * n + i] = philox_unit(r.v[0]) * 2.0 - 1.0;
        }
    memcpy(A, A0, sizeof(double) * n * n);
    T_EQ_INT(umd_sym_eig(A, n, ev, V), 0);
    double worst = 0, ortho = 0;
    for (int k = 0; k < n; k++) {
        if (k > 0) T_CHECK(ev[k] >= ev[k - 1]);
        for (int i = 0; i < n; i++) {
            double av = 0;
            for (int j = 0; j < n; j++) av += A0[i * n + j] * V[j * n + k];
            worst = fmax(worst, fabs(av - ev[k] * V[i * n + k]));
        }
        for (int l = 0; l < n; l++) {
            double dot = 0;
            for (int i = 0; i < n; i++) dot += V[i * n + k] * V[i * n + l];
            ortho = fmax(ortho, fabs(dot - (k == l)));
        }
    }
    T_CHECK_MSG(worst < 1e-10, "|A v - l v| = %g", worst);
    T_CHECK_MSG(ortho < 1e-10, "|V^T V - I| = %g", ortho);
    /* a non-finite input is refused */
    A[3] = NAN;
    T_CHECK(umd_sym_eig(A, n, ev, V) != 0);
    free(A);
    free(A0);
    free(V);
    free(ev);
}

static umd_config syn_config(void) {
    umd_config c;
    memset(&c, 0, sizeof c);
    c.dataset = UMD_DATA_SYNTHETIC;
    c.syn_size = 16;
    c.syn_channels = 1;
    c.syn_classes = 10;
    c.syn_train = 1024;
    c.syn_test = 512;
    c.seed = 0;
    return c;
}

static void test_eval_fid_classifier_train_vs_noise(void) {
    umd_config cfg = syn_config();
    umd_split train, test;
    char err[512];
    T_REQUIRE(umd_data_load(&cfg, &train, &test, err, sizeof err) == 0);
    umd_classifier *c = NULL;
    T_REQUIRE(umd_classifier_new(&c, &train, umd_ops_cpu(), 2, err, sizeof err) == 0);
    double before = umd_classifier_accuracy(c, &test, 0);
    T_REQUIRE(umd_classifier_train(c, &train, &test, 4, NULL, NULL, NULL, err, sizeof err) == 0);
    double acc = umd_classifier_test_accuracy(c);
    T_CHECK_MSG(acc > 0.6 && acc > before + 0.3, "accuracy %.3f (untrained %.3f)", acc, before);
    T_NEAR(umd_classifier_accuracy(c, &test, 0), acc, 1e-12, 0);

    /* FID on its features: train images vs test images (same distribution), noise vs test */
    const int F = UMD_CLASSIFIER_FEATURES, n = 512;
    const size_t D = 16 * 16;
    float *x = malloc(sizeof(float) * n * D), *feat = malloc(sizeof(float) * n * F);
    double *mu_te = malloc(sizeof(double) * F), *S_te = malloc(sizeof(double) * F * F);
    double *mu = malloc(sizeof(double) * F), *S = malloc(sizeof(double) * F * F);
    T_REQUIRE(x && feat && mu_te && S_te && mu && S);
    umd_data_slice(&test, 0, n, x, NULL);
    umd_classifier_features(c, x, n, feat);
    umd_gauss_fit(feat, n, F, mu_te, S_te);
    double fid_train = -1, fid_noise = -1;
    umd_data_slice(&train, 0, n, x, NULL);
    umd_classifier_features(c, x, n, feat);
    umd_gauss_fit(feat, n, F, mu, S);
    T_REQUIRE(umd_frechet_distance(mu, S, mu_te, S_te, F, &fid_train, err, sizeof err) == 0);
    for (size_t i = 0; i < (size_t)n * D; i++) {
        philox4 r = philox_draw(9, PHILOX_TEST, 1, i);
        x[i] = philox_unit(r.v[0]) * 2.0f - 1.0f;
    }
    umd_classifier_features(c, x, n, feat);
    umd_gauss_fit(feat, n, F, mu, S);
    T_REQUIRE(umd_frechet_distance(mu, S, mu_te, S_te, F, &fid_noise, err, sizeof err) == 0);
    printf("# classifier accuracy %.4f, FID(train, test) %.4f, FID(noise, test) %.4f\n", acc,
           fid_train, fid_noise);
    T_CHECK(fid_train >= 0);
    T_CHECK_MSG(fid_noise > 20 * fid_train, "FID noise %g vs train %g", fid_noise, fid_train);

    /* the cache file: same features after a load into a fresh net; damage is refused by name */
    char dir[] = "/tmp/umdq-test-fid-XXXXXX";
    T_REQUIRE(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/net.umdc", dir);
    T_REQUIRE(umd_classifier_save(c, path, err, sizeof err) == 0);
    umd_classifier *c2 = NULL;
    T_REQUIRE(umd_classifier_new(&c2, &train, umd_ops_cpu(), 2, err, sizeof err) == 0);
    T_REQUIRE(umd_classifier_load(c2, path, err, sizeof err) == 0);
    float *feat2 = malloc(sizeof(float) * 16 * F);
    umd_classifier_features(c, x, 16, feat);
    umd_classifier_features(c2, x, 16, feat2);
    T_CHECK(memcmp(feat, feat2, sizeof(float) * 16 * F) == 0);
    T_NEAR(umd_classifier_test_accuracy(c2), acc, 0, 0);
    FILE *f = fopen(path, "r+b");
    T_REQUIRE(f != NULL);
    fwrite("NOTANET!", 1, 8, f);
    fclose(f);
    T_CHECK(umd_classifier_load(c2, path, err, sizeof err) == UMDQ_EFORMAT);
    T_CONTAINS(err, path);
    T_CONTAINS(err, "wrong magic");
    remove(path);
    rmdir(dir);
    free(feat2);
    umd_classifier_destroy(&c2);
    umd_classifier_destroy(&c);
    T_CHECK(c == NULL);
    free(x);
    free(feat);
    free(mu_te);
    free(S_te);
    free(mu);
    free(S);
    umd_split_free(&train);
    umd_split_free(&test);
}

static void test_eval_fid_classifier_cache(void) {
    umd_config cfg = syn_config();
    cfg.syn_train = 256;
    cfg.syn_test = 64;
    umd_split train, test;
    char err[512], name[80], name2[80];
    T_REQUIRE(umd_data_load(&cfg, &train, &test, err, sizeof err) == 0);
    umd_classifier_name(&cfg, &train, 1, name, sizeof name);
    umd_classifier_name(&cfg, &train, 2, name2, sizeof name2);
    T_CHECK(strncmp(name, "synthetic-classifier-", 21) == 0 && strlen(name) == 21 + 12);
    T_CHECK(strcmp(name, name2) != 0); /* the epochs are part of the key */
    umd_config other = cfg;
    other.seed = 1; /* another synthetic set */
    umd_classifier_name(&other, &train, 1, name2, sizeof name2);
    T_CHECK(strcmp(name, name2) != 0);
    other = cfg;
    other.dataset = UMD_DATA_FASHION_MNIST;
    other.syn_size = 99; /* not a knob of a file data set */
    umd_classifier_name(&other, &train, 1, name2, sizeof name2);
    char name3[80];
    other.syn_size = 3;
    other.seed = 8;
    umd_classifier_name(&other, &train, 1, name3, sizeof name3);
    T_EQ_STR(name2, name3);
    T_CHECK(strncmp(name2, "fmnist-classifier-", 18) == 0);
    char dir[] = "/tmp/umdq-test-fidc-XXXXXX";
    T_REQUIRE(mkdtemp(dir) != NULL);
    umd_classifier *a = NULL, *b = NULL;
    int trained = -1;
    T_REQUIRE(umd_classifier_get(&a, dir, name, &train, &test, 1, umd_ops_cpu(), 1, NULL, NULL, NULL,
                                 &trained, err, sizeof err) == 0);
    T_EQ_INT(trained, 1);
    T_REQUIRE(umd_classifier_get(&b, dir, name, &train, &test, 1, umd_ops_cpu(), 1, NULL, NULL, NULL,
                                 &trained, err, sizeof err) == 0);
    T_EQ_INT(trained, 0); /* read from the cache */
    T_NEAR(umd_classifier_test_accuracy(b), umd_classifier_test_accuracy(a), 0, 0);
    T_EQ_STR(umd_classifier_get_name(b), name);
    char path[256];
    snprintf(path, sizeof path, "%s/%s.umdc", dir, name);
    remove(path);
    snprintf(path, sizeof path, "%s/%s.lock", dir, name);
    remove(path);
    rmdir(dir);
    umd_classifier_destroy(&a);
    umd_classifier_destroy(&b);
    umd_split_free(&train);
    umd_split_free(&test);
}

int main(void) {
    T_RUN(test_eval_fid_golden_scipy);
    T_RUN(test_eval_fid_eigen);
    T_RUN(test_eval_fid_classifier_train_vs_noise);
    T_RUN(test_eval_fid_classifier_cache);
    return t_done();
}
