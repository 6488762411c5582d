/* test_data_cursor.c: the batch reader: every epoch a permutation, the same cursor the same
 * batch, a saved cursor continuing identically, scaling, augmentation range and determinism,
 * and evaluation slices. */
/* umdq-uses: umd common */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "data.h"
#include "philox.h"
#include "t.h"

/* A split of n images (c, h, w) whose first two pixels encode the image's index (low, high byte);
 * the others are Philox noise; label = index % 10. Caller frees with umd_split_free. */
static umd_split indexed_split(int64_t n, int c, int h, int w) {
    umd_split s;
    memset(&s, 0, sizeof s);
    size_t img = (size_t)c * h * w;
    s.pixels = malloc((size_t)n * img);
    s.labels = malloc((size_t)n * sizeof *s.labels);
    if (!s.pixels || !s.labels) {
        umd_split_free(&s);
        return s;
    }
    for (int64_t i = 0; i < n; i++) {
        for (size_t j = 0; j < img; j++)
            s.pixels[(size_t)i * img + j] = (uint8_t)philox_draw(99, PHILOX_TEST, 0, (uint64_t)i * img + j).v[0];
        s.pixels[(size_t)i * img] = (uint8_t)(i & 255);
        s.pixels[(size_t)i * img + 1] = (uint8_t)(i >> 8);
        s.labels[i] = (uint16_t)(i % 10);
    }
    s.n = n;
    s.c = c;
    s.h = h;
    s.w = w;
    s.classes = 10;
    return s;
}

static int pixel_of(float x) { return (int)lrintf((x + 1.0f) * 127.5f); }

/* Image index of batch image b (unaugmented). */
static int64_t index_of(const float *x, size_t img, int b) {
    return pixel_of(x[(size_t)b * img]) + 256 * pixel_of(x[(size_t)b * img + 1]);
}

/* The next count positions' image indices, read in batches of B. */
static void read_order(const umd_split *s, umd_cursor *cur, int64_t count, int B, int64_t *out) {
    size_t img = (size_t)s->c * s->h * s->w;
    float *x = malloc((size_t)B * img * sizeof *x);
    int32_t *lab = malloc((size_t)B * sizeof *lab);
    T_REQUIRE(x && lab);
    for (int64_t done = 0; done < count;) {
        int m = count - done < B ? (int)(count - done) : B;
        umd_data_next_batch(s, cur, m, 0, x, lab);
        for (int b = 0; b < m; b++) {
            out[done + b] = index_of(x, img, b);
            T_CHECK(lab[b] == (int32_t)(out[done + b] % 10));
        }
        done += m;
    }
    free(x);
    free(lab);
}

static void data_cursor_epoch_permutation(void) {
    static const int64_t sizes[] = {1, 2, 3, 97, 1000, 4097};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        int64_t n = sizes[t];
        umd_split s = indexed_split(n, 1, 2, 2);
        T_REQUIRE(s.pixels != NULL);
        int64_t *order = malloc((size_t)(3 * n) * sizeof *order);
        char *seen = calloc((size_t)n, 1);
        T_REQUIRE(order && seen);
        umd_cursor cur = {42, 0, 0};
        read_order(&s, &cur, 3 * n, 64, order);
        T_EQ_INT(cur.epoch, 3);
        T_EQ_INT(cur.pos, 0);
        for (int e = 0; e < 3; e++) {
            memset(seen, 0, (size_t)n);
            for (int64_t p = 0; p < n; p++) {
                int64_t i = order[e * n + p];
                T_REQUIRE(i >= 0 && i < n);
                T_CHECK_MSG(!seen[i], "n %lld epoch %d: image %lld twice", (long long)n, e, (long long)i);
                seen[i] = 1;
            }
        }
        if (n >= 97) {
            /* shuffled, and shuffled differently each epoch */
            int64_t fixed = 0, same = 0;
            for (int64_t p = 0; p < n; p++) {
                fixed += order[p] == p;
                same += order[p] == order[n + p];
            }
            T_CHECK_MSG(fixed < n / 10, "n %lld: %lld fixed points", (long long)n, (long long)fixed);
            T_CHECK_MSG(same < n / 10, "n %lld: %lld equal positions in epochs 0, 1", (long long)n,
                        (long long)same);
        }
        free(order);
        free(seen);
        umd_split_free(&s);
    }
}

static void data_cursor_seed_and_batch_size(void) {
    int64_t n = 97;
    umd_split s = indexed_split(n, 1, 2, 2);
    T_REQUIRE(s.pixels != NULL);
    int64_t a[300], b[300], c[300];
    umd_cursor ca = {5, 0, 0}, cb = {5, 0, 0}, cc = {6, 0, 0};
    read_order(&s, &ca, 300, 7, a);
    read_order(&s, &cb, 300, 64, b);
    read_order(&s, &cc, 300, 7, c);
    T_CHECK(memcmp(a, b, sizeof a) == 0); /* the order does not depend on the batch size */
    T_CHECK(memcmp(a, c, sizeof a) != 0); /* it does on the seed */
    T_EQ_INT(ca.epoch, cb.epoch);
    T_EQ_INT(ca.pos, cb.pos);
    T_EQ_INT(ca.epoch, 3);
    T_EQ_INT(ca.pos, 300 - 3 * 97);
    umd_split_free(&s);
}

static void data_cursor_same_batch_and_resume(void) {
    for (int augment = 0; augment <= 1; augment++) {
        umd_split s = indexed_split(53, 3, 8, 8);
        T_REQUIRE(s.pixels != NULL);
        size_t img = 3 * 8 * 8;
        enum { B = 13, STEPS = 12, SAVE_AT = 5 };
        float *x = malloc((size_t)STEPS * B * img * sizeof *x), *y = malloc((size_t)B * img * sizeof *y);
        int32_t lab[STEPS * B], laby[B];
        T_REQUIRE(x && y);
        umd_cursor cur = {1234, 0, 0}, saved = {0, 0, 0};
        for (int k = 0; k < STEPS; k++) {
            if (k == SAVE_AT) saved = cur;
            umd_data_next_batch(&s, &cur, B, augment, x + (size_t)k * B * img, lab + k * B);
        }
        /* the same cursor gives the same batch, bit for bit */
        umd_cursor again = saved;
        umd_data_next_batch(&s, &again, B, augment, y, laby);
        T_CHECK(memcmp(y, x + (size_t)SAVE_AT * B * img, (size_t)B * img * sizeof *y) == 0);
        T_CHECK(memcmp(laby, lab + SAVE_AT * B, sizeof laby) == 0);
        /* a cursor restored mid-epoch continues identically (the saved one is mid-epoch 1) */
        T_CHECK(saved.pos != 0);
        umd_cursor restored = saved;
        for (int k = SAVE_AT; k < STEPS; k++) {
            umd_data_next_batch(&s, &restored, B, augment, y, laby);
            T_CHECK_MSG(memcmp(y, x + (size_t)k * B * img, (size_t)B * img * sizeof *y) == 0,
                        "augment %d: batch %d differs after restore", augment, k);
            T_CHECK(memcmp(laby, lab + k * B, sizeof laby) == 0);
        }
        T_EQ_INT(restored.epoch, cur.epoch);
        T_EQ_INT(restored.pos, cur.pos);
        /* a cursor saved at the very end of an epoch (pos == n) reads the next epoch */
        umd_cursor end = {1234, 0, 53}, next = {1234, 1, 0};
        umd_data_next_batch(&s, &end, B, augment, y, laby);
        umd_data_next_batch(&s, &next, B, augment, x, lab);
        T_CHECK(memcmp(x, y, (size_t)B * img * sizeof *y) == 0);
        T_EQ_INT(end.epoch, 1);
        T_EQ_INT(end.pos, B);
        free(x);
        free(y);
        umd_split_free(&s);
    }
}

static void data_cursor_scaling(void) {
    /* one image holding every byte value */
    umd_split s;
    memset(&s, 0, sizeof s);
    uint8_t px[256];
    uint16_t lb[1] = {3};
    for (int v = 0; v < 256; v++) px[v] = (uint8_t)v;
    s.pixels = px;
    s.labels = lb;
    s.n = 1;
    s.c = 1;
    s.h = 16;
    s.w = 16;
    s.classes = 10;
    float x[256];
    int32_t lab[1];
    umd_cursor cur = {1, 0, 0};
    umd_data_next_batch(&s, &cur, 1, 0, x, lab);
    for (int v = 0; v < 256; v++) T_CHECK(x[v] == (float)v / 127.5f - 1.0f);
    T_CHECK(x[0] == -1.0f && x[255] == 1.0f);
    T_EQ_INT(lab[0], 3);
    umd_data_slice(&s, 0, 1, x, NULL);
    T_CHECK(x[128] == 128.0f / 127.5f - 1.0f);
}

static void data_aug_range_and_determinism(void) {
    umd_split s = indexed_split(40, 3, 32, 32);
    T_REQUIRE(s.pixels != NULL);
    size_t img = 3 * 32 * 32;
    enum { B = 40 };
    float *a = malloc(B * img * sizeof *a), *b = malloc(B * img * sizeof *b), *p = malloc(B * img * sizeof *p);
    int32_t la[B], lb[B], lp[B];
    T_REQUIRE(a && b && p);
    umd_cursor c1 = {77, 2, 5}, c2 = {77, 2, 5}, c3 = {77, 2, 5};
    umd_data_next_batch(&s, &c1, B, 1, a, la);
    umd_data_next_batch(&s, &c2, B, 1, b, lb);
    umd_data_next_batch(&s, &c3, B, 0, p, lp);
    T_CHECK(memcmp(a, b, B * img * sizeof *a) == 0);
    T_CHECK(memcmp(la, lp, sizeof la) == 0); /* augmentation does not change the order */
    int changed = 0;
    for (size_t j = 0; j < B * img; j++) {
        T_REQUIRE(a[j] >= -1.0f && a[j] <= 1.0f);
        T_REQUIRE(!isnan(a[j]));
    }
    for (int k = 0; k < B; k++) changed += memcmp(a + k * img, p + k * img, img * sizeof *a) != 0;
    T_CHECK_MSG(changed > B / 2, "only %d of %d images changed by augmentation", changed, B);
    free(a);
    free(b);
    free(p);
    umd_split_free(&s);
}

/* A constant image stays constant; a left-dark right-bright image is flipped about half the time;
 * a horizontal ramp keeps at least sqrt(0.8 * 3/4) of its span, and loses some of it often. */
static void data_aug_geometry(void) {
    enum { W = 32, H = 24, N = 400 };
    static uint8_t px[3][H * W];
    static uint16_t lb[3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            px[0][y * W + x] = 77;
            px[1][y * W + x] = x < W / 2 ? 0 : 255;
            px[2][y * W + x] = (uint8_t)(x * 8);
        }
    static float out[H * W];
    int flips = 0, cropped = 0;
    for (int which = 0; which < 3; which++) {
        umd_split s;
        memset(&s, 0, sizeof s);
        s.pixels = px[which];
        s.labels = lb;
        s.n = 1;
        s.c = 1;
        s.h = H;
        s.w = W;
        s.classes = 10;
        umd_cursor cur = {2024, 0, 0};
        for (int k = 0; k < N; k++) {
            umd_data_next_batch(&s, &cur, 1, 1, out, NULL);
            if (which == 0) {
                for (int j = 0; j < H * W; j++) T_REQUIRE(fabsf(out[j] - (77.0f / 127.5f - 1.0f)) < 1e-6f);
            } else if (which == 1) {
                float left = 0, right = 0;
                for (int y = 0; y < H; y++) {
                    left += out[y * W];
                    right += out[y * W + W - 1];
                }
                T_REQUIRE(fabsf(left - right) > H * 1.5f); /* one edge dark, the other bright */
                flips += left > right;
            } else {
                float lo = 2, hi = -2;
                for (int j = 0; j < H * W; j++) {
                    if (out[j] < lo) lo = out[j];
                    if (out[j] > hi) hi = out[j];
                }
                float span = (hi - lo) * 127.5f / 248.0f; /* fraction of the full ramp seen */
                T_CHECK_MSG(span > 0.70f && span <= 1.0f + 1e-5f, "span %.3f", span);
                cropped += span < 0.97f;
                /* rows are identical: the ramp does not depend on y */
                T_REQUIRE(fabsf(out[0] - out[(H - 1) * W]) < 1e-6f);
            }
        }
    }
    T_CHECK_MSG(flips > N * 35 / 100 && flips < N * 65 / 100, "%d flips of %d", flips, N);
    T_CHECK_MSG(cropped > N / 2, "only %d of %d crops narrower than the image", cropped, N);
}

static void data_slice_order(void) {
    umd_split s = indexed_split(10, 1, 2, 2);
    T_REQUIRE(s.pixels != NULL);
    float x[6 * 4];
    int32_t lab[6];
    umd_data_slice(&s, 7, 6, x, lab); /* 7, 8, 9, then wraps to 0, 1, 2 */
    static const int want[6] = {7, 8, 9, 0, 1, 2};
    for (int b = 0; b < 6; b++) {
        T_EQ_INT(index_of(x, 4, b), want[b]);
        T_EQ_INT(lab[b], want[b]);
        T_CHECK(x[b * 4 + 2] == (float)s.pixels[want[b] * 4 + 2] / 127.5f - 1.0f);
    }
    umd_split_free(&s);
}

int main(void) {
    T_RUN(data_cursor_epoch_permutation);
    T_RUN(data_cursor_seed_and_batch_size);
    T_RUN(data_cursor_same_batch_and_resume);
    T_RUN(data_cursor_scaling);
    T_RUN(data_aug_range_and_determinism);
    T_RUN(data_aug_geometry);
    T_RUN(data_slice_order);
    return t_done();
}
