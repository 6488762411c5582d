/* test_data_imagenet64.c: data.dataset "imagenet64" on the small files in tests/data/imagenet64
 * (written by make_fixtures.py there: batches 1-3 by np.savez, stored; 4-10 and val_data by
 * np.savez_compressed, deflated; labels int64, int32 or uint16): every pixel and label of both
 * splits, data.limit (stopping inside a deflated file), batches through umd_data_slice, a short
 * umd_run on it, and damaged copies refused with a message naming the file: truncated, not a
 * zip, flipped bytes (CRC-32), damaged deflate data, a missing batch, a missing entry, a wrong
 * shape, a label out of range. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "config.h"
#include "data.h"
#include "t.h"
#include "t_umd.h"
#include "umd.h"
#include "umdq.h"

#define FIXTURES "tests/data/imagenet64"
#define ROW (3 * 64 * 64)

static char tmp_root[64];
static char err[1024];

static int spit(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* the fixtures' formula (make_fixtures.py) */
static uint8_t pixel(int b, int k, int c, int y, int x) {
    return (uint8_t)((37 * b + 11 * k + 5 * c + y + 2 * x) % 256);
}
static int label(int b, int k) { return (97 * b + 13 * k) % 1000; } /* stored 1-based */

/* image k of batch b at row i of s, every byte */
static int image_matches(const umd_split *s, int64_t i, int b, int k) {
    const uint8_t *p = s->pixels + (size_t)i * ROW;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 64; y++)
            for (int x = 0; x < 64; x++)
                if (p[(c * 64 + y) * 64 + x] != pixel(b, k, c, y, x)) return 0;
    return s->labels[i] == label(b, k);
}

static void data_in64_load(void) {
    umd_config c = t_data_config(UMD_DATA_IMAGENET64, FIXTURES);
    umd_split tr, te;
    int rc = umd_data_load(&c, &tr, &te, err, sizeof err);
    T_REQUIRE(rc == 0 || !printf("# %s\n", err));
    T_EQ_INT(tr.n, 3 * 1 + 7 * 2);
    T_EQ_INT(te.n, 4);
    T_EQ_INT(tr.c, 3);
    T_EQ_INT(tr.h, 64);
    T_EQ_INT(tr.w, 64);
    T_EQ_INT(tr.classes, 1000);
    T_EQ_INT(te.classes, 1000);
    int64_t i = 0;
    for (int b = 1; b <= 10; b++)
        for (int k = 0; k < (b <= 3 ? 1 : 2); k++, i++)
            T_CHECK_MSG(image_matches(&tr, i, b, k), "train image %lld (batch %d, #%d)", (long long)i, b, k);
    for (int k = 0; k < 4; k++) T_CHECK_MSG(image_matches(&te, k, 0, k), "val image %d", k);
    /* a label above 255: the labels are not bytes */
    T_EQ_INT(tr.labels[16], label(10, 1));
    T_CHECK(label(10, 1) > 255);
    /* the evaluation's reader: x / 127.5 - 1 in (3, 64, 64) order */
    float *x = malloc((size_t)2 * ROW * sizeof(float));
    int32_t y[2];
    T_REQUIRE(x != NULL);
    umd_data_slice(&tr, 3, 2, x, y);
    T_EQ_INT(y[0], label(4, 0));
    T_EQ_INT(y[1], label(4, 1));
    T_NEAR(x[(1 * 64 + 5) * 64 + 7], pixel(4, 0, 1, 5, 7) / 127.5 - 1, 1e-6, 0);
    T_NEAR(x[ROW + (2 * 64 + 63) * 64 + 0], pixel(4, 1, 2, 63, 0) / 127.5 - 1, 1e-6, 0);
    free(x);
    umd_split_free(&tr);
    umd_split_free(&te);
}

static void data_in64_limit(void) {
    umd_config c = t_data_config(UMD_DATA_IMAGENET64, FIXTURES);
    umd_split tr;
    c.data_limit = 4; /* batches 1-3 and the first image of the deflated batch 4 */
    T_REQUIRE(umd_data_load(&c, &tr, NULL, err, sizeof err) == 0 || !printf("# %s\n", err));
    T_EQ_INT(tr.n, 4);
    T_CHECK(image_matches(&tr, 3, 4, 0));
    umd_split_free(&tr);
    c.data_limit = 2;
    T_REQUIRE(umd_data_load(&c, &tr, NULL, err, sizeof err) == 0);
    T_EQ_INT(tr.n, 2);
    T_CHECK(image_matches(&tr, 1, 2, 0));
    umd_split_free(&tr);
}

/* A copy of the fixtures in tmp_root/name; returns its path (static buffer). */
static const char *copy_fixtures(const char *name) {
    static char dir[256];
    char src[300], dst[600];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, name);
    mkdir(dir, 0755);
    DIR *d = opendir(FIXTURES);
    if (!d) return NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strstr(e->d_name, ".npz")) continue;
        snprintf(src, sizeof src, "%s/%s", FIXTURES, e->d_name);
        snprintf(dst, sizeof dst, "%s/%s", dir, e->d_name);
        size_t n;
        uint8_t *b = t_slurp(src, &n);
        if (!b || spit(dst, b, n) != 0) {
            free(b);
            closedir(d);
            return NULL;
        }
        free(b);
    }
    closedir(d);
    return dir;
}

static void expect_refused(const char *dir, int rc_want, const char *file, const char *what) {
    umd_config c = t_data_config(UMD_DATA_IMAGENET64, dir);
    umd_split tr, te;
    memset(err, 0, sizeof err);
    int rc = umd_data_load(&c, &tr, &te, err, sizeof err);
    printf("# refused: %s\n", err);
    T_EQ_INT(rc, rc_want);
    T_CONTAINS(err, file);
    T_CONTAINS(err, what);
    T_CHECK(tr.pixels == NULL && tr.labels == NULL && tr.n == 0);
    T_CHECK(te.pixels == NULL && te.labels == NULL && te.n == 0);
}

/* Offset of the central-directory record of entry name in zip b (n bytes), or -1. */
static long central_entry(const uint8_t *b, size_t n, const char *name) {
    size_t len = strlen(name);
    for (size_t p = 0; p + 46 + len <= n; p++)
        if (memcmp(b + p, "PK\1\2", 4) == 0 && b[p + 28] == len && b[p + 29] == 0 &&
            memcmp(b + p + 46, name, len) == 0)
            return (long)p;
    return -1;
}

/* Offset of the stored entry's npy bytes: after its local header. */
static long stored_data(const uint8_t *b, size_t n, const char *name) {
    long c = central_entry(b, n, name);
    if (c < 0) return -1;
    size_t local = b[c + 42] | b[c + 43] << 8 | b[c + 44] << 16 | (size_t)b[c + 45] << 24;
    return (long)(local + 30 + (b[local + 26] | b[local + 27] << 8) + (b[local + 28] | b[local + 29] << 8));
}

/* Set the directory's CRC-32 of the stored entry name to that of its (edited) bytes. */
static void fix_crc(uint8_t *b, size_t n, const char *name) {
    long c = central_entry(b, n, name), d = stored_data(b, n, name);
    size_t size = b[c + 24] | b[c + 25] << 8 | b[c + 26] << 16 | (size_t)b[c + 27] << 24;
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), b + d, (uInt)size);
    for (int i = 0; i < 4; i++) b[c + 16 + i] = (uint8_t)(crc >> (8 * i));
}

static void data_in64_damaged(void) {
    char path[700];
    size_t n;
    uint8_t *b;
    const char *dir;

    /* truncated (a stored and a deflated file) */
    T_REQUIRE((dir = copy_fixtures("trunc")) != NULL);
    snprintf(path, sizeof path, "%s/train_data_batch_2.npz", dir);
    T_REQUIRE(truncate(path, 6000) == 0);
    expect_refused(dir, UMDQ_EFORMAT, "train_data_batch_2.npz", "truncated");
    T_REQUIRE((dir = copy_fixtures("trunc-val")) != NULL);
    snprintf(path, sizeof path, "%s/val_data.npz", dir);
    T_REQUIRE(truncate(path, 700) == 0);
    expect_refused(dir, UMDQ_EFORMAT, "val_data.npz", "truncated");

    /* not a zip */
    T_REQUIRE((dir = copy_fixtures("notzip")) != NULL);
    snprintf(path, sizeof path, "%s/train_data_batch_5.npz", dir);
    T_REQUIRE(spit(path, (const uint8_t *)"this is not an npz file, only some text here", 44) == 0);
    expect_refused(dir, UMDQ_EFORMAT, "train_data_batch_5.npz", "not a zip");

    /* a flipped pixel byte in a stored entry: the CRC-32 */
    T_REQUIRE((dir = copy_fixtures("crc")) != NULL);
    snprintf(path, sizeof path, "%s/train_data_batch_3.npz", dir);
    T_REQUIRE((b = t_slurp(path, &n)) != NULL);
    long d = stored_data(b, n, "data.npy");
    T_REQUIRE(d > 0);
    b[d + 128 + 5000] ^= 0x40;
    T_REQUIRE(spit(path, b, n) == 0);
    free(b);
    expect_refused(dir, UMDQ_EFORMAT, "train_data_batch_3.npz", "CRC-32 mismatch");

    /* damaged deflate data */
    T_REQUIRE((dir = copy_fixtures("deflate")) != NULL);
    snprintf(path, sizeof path, "%s/train_data_batch_6.npz", dir);
    T_REQUIRE((b = t_slurp(path, &n)) != NULL);
    long c = central_entry(b, n, "data.npy");
    T_REQUIRE(c >= 0);
    size_t local = b[c + 42] | b[c + 43] << 8;
    size_t start = local + 30 + (b[local + 26] | b[local + 27] << 8) + (b[local + 28] | b[local + 29] << 8);
    for (size_t i = start + 20; i < start + 60; i++) b[i] ^= 0xa5;
    T_REQUIRE(spit(path, b, n) == 0);
    free(b);
    expect_refused(dir, UMDQ_EFORMAT, "train_data_batch_6.npz", "corrupt");

    /* a missing batch */
    T_REQUIRE((dir = copy_fixtures("missing")) != NULL);
    snprintf(path, sizeof path, "%s/train_data_batch_7.npz", dir);
    T_REQUIRE(unlink(path) == 0);
    expect_refused(dir, UMDQ_ENOTFOUND, "train_data_batch_7.npz", "not found");

    /* an entry renamed away: no labels.npy */
    T_REQUIRE((dir = copy_fixtures("noentry")) != NULL);
    snprintf(path, sizeof path, "%s/train_data_batch_1.npz", dir);
    T_REQUIRE((b = t_slurp(path, &n)) != NULL);
    c = central_entry(b, n, "labels.npy");
    T_REQUIRE(c >= 0);
    b[c + 46] = 'L';
    T_REQUIRE(spit(path, b, n) == 0);
    free(b);
    expect_refused(dir, UMDQ_ENOTFOUND, "train_data_batch_1.npz", "no labels.npy");

    /* a shape that is not (N, 12288) */
    T_REQUIRE((dir = copy_fixtures("shape")) != NULL);
    snprintf(path, sizeof path, "%s/train_data_batch_2.npz", dir);
    T_REQUIRE((b = t_slurp(path, &n)) != NULL);
    d = stored_data(b, n, "data.npy");
    T_REQUIRE(d > 0);
    char *s = memmem(b + d, 128, "12288", 5);
    T_REQUIRE(s != NULL);
    memcpy(s, "12287", 5);
    fix_crc(b, n, "data.npy");
    T_REQUIRE(spit(path, b, n) == 0);
    free(b);
    expect_refused(dir, UMDQ_EFORMAT, "train_data_batch_2.npz", "12287 values per image");

    /* a label of 0 (the published labels are 1..1000) */
    T_REQUIRE((dir = copy_fixtures("label")) != NULL);
    snprintf(path, sizeof path, "%s/train_data_batch_1.npz", dir);
    T_REQUIRE((b = t_slurp(path, &n)) != NULL);
    d = stored_data(b, n, "labels.npy");
    T_REQUIRE(d > 0);
    size_t hlen = b[d + 8] | b[d + 9] << 8;
    memset(b + d + 10 + hlen, 0, 8); /* the one int64 label */
    fix_crc(b, n, "labels.npy");
    T_REQUIRE(spit(path, b, n) == 0);
    free(b);
    expect_refused(dir, UMDQ_EFORMAT, "train_data_batch_1.npz", "label 0 of image 0 is out of range (1-1000)");

    /* no data.path */
    expect_refused("", UMDQ_EINVAL, "data.path", "imagenet64");
}

/* A few training steps through umd_run: the config keys, the 64x64 shape, 1000 classes. */
static void data_in64_train(void) {
    const char *json =
        "{\"seed\": 1, \"data\": {\"dataset\": \"imagenet64\", \"path\": \"" FIXTURES "\"},"
        " \"model\": {\"patch\": 16, \"width\": 32, \"depth\": 1, \"dec_depth\": 1, \"heads\": 2},"
        " \"umd\": {\"labels\": true},"
        " \"train\": {\"steps\": 3, \"batch\": 4, \"lr\": 1e-3, \"threads\": 1, \"log_every\": 1}}";
    umd_events ev;
    memset(&ev, 0, sizeof ev);
    int rc = t_umd_run(json, &ev, err, sizeof err);
    T_CHECK_MSG(rc == 0, "umd_run: %s", err);
}

int main(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/umdq-test-in64-XXXXXX");
    if (!mkdtemp(tmp_root)) return 1;
    T_RUN(data_in64_load);
    T_RUN(data_in64_limit);
    T_RUN(data_in64_damaged);
    T_RUN(data_in64_train);
    t_remove_tree(tmp_root);
    return t_done();
}
