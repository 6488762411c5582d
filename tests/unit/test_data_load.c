/* test_data_load.c: the IDX and CIFAR-10 loaders on the real Fashion-MNIST files and on files
 * written here (plain and gzipped), and their refusals of damaged files. */
/* umdq-uses: umd common */
#include <ftw.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "data.h"
#include "t.h"
#include "t_umd.h"
#include "umdq.h"

static char tmpdir[256];
static char err[1024];

#define REQUIRE_OK(rc) do { int r_ = (rc); if (r_ != 0) { \
    t_fail_at(__FILE__, __LINE__, "rc %d: %s", r_, err); longjmp(t_jmp, 1); } } while (0)

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void tmp_remove(void);
static void tmp_make(void) {
    tmp_remove();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/umdq-test-data-XXXXXX");
    T_REQUIRE(mkdtemp(tmpdir) != NULL);
}

static void tmp_remove(void) {
    if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    tmpdir[0] = 0;
}

/* Write bytes to dir/name, gzipped when gz. */
static void write_bytes(const char *dir, const char *name, int gz, const void *data, size_t len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        T_REQUIRE(f != NULL);
        T_REQUIRE(len == 0 || gzwrite(f, data, (unsigned)len) == (int)len);
        T_REQUIRE(gzclose(f) == Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        T_REQUIRE(f != NULL);
        T_REQUIRE(len == 0 || fwrite(data, 1, len, f) == len);
        T_REQUIRE(fclose(f) == 0);
    }
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An IDX image file of n rows x cols images whose pixel j of image i is (i * 7 + j) % 256,
 * keeping only keep_bytes of the pixels (SIZE_MAX = all). */
static void write_idx_images(const char *dir, const char *name, int gz, uint32_t magic, uint32_t n,
                             uint32_t rows, uint32_t cols, size_t keep_bytes) {
    size_t npix = (size_t)n * rows * cols;
    uint8_t *buf = malloc(16 + npix);
    T_REQUIRE(buf != NULL);
    put_be32(buf, magic);
    put_be32(buf + 4, n);
    put_be32(buf + 8, rows);
    put_be32(buf + 12, cols);
    for (uint32_t i = 0; i < n; i++)
        for (size_t j = 0; j < (size_t)rows * cols; j++)
            buf[16 + i * rows * cols + j] = (uint8_t)((i * 7 + j) % 256);
    if (keep_bytes < npix) npix = keep_bytes;
    write_bytes(dir, name, gz, buf, 16 + npix);
    free(buf);
}

/* An IDX label file; label i is (i * 3) % 10, or bad_label at index bad_at when bad_at >= 0. */
static void write_idx_labels(const char *dir, const char *name, int gz, uint32_t magic, uint32_t n,
                             int bad_at, uint8_t bad_label) {
    uint8_t *buf = malloc(8 + n);
    T_REQUIRE(buf != NULL);
    put_be32(buf, magic);
    put_be32(buf + 4, n);
    for (uint32_t i = 0; i < n; i++) buf[8 + i] = (uint8_t)((i * 3) % 10);
    if (bad_at >= 0) buf[8 + bad_at] = bad_label;
    write_bytes(dir, name, gz, buf, 8 + n);
    free(buf);
}

/* A good MNIST-style set: train 5 images of 3x4, test 2 images. */
static void write_good_idx(int gz) {
    write_idx_images(tmpdir, gz ? "train-images-idx3-ubyte.gz" : "train-images-idx3-ubyte", gz,
                     0x803, 5, 3, 4, SIZE_MAX);
    write_idx_labels(tmpdir, gz ? "train-labels-idx1-ubyte.gz" : "train-labels-idx1-ubyte", gz, 0x801,
                     5, -1, 0);
    write_idx_images(tmpdir, gz ? "t10k-images-idx3-ubyte.gz" : "t10k-images-idx3-ubyte", gz, 0x803,
                     2, 3, 4, SIZE_MAX);
    write_idx_labels(tmpdir, gz ? "t10k-labels-idx1-ubyte.gz" : "t10k-labels-idx1-ubyte", gz, 0x801,
                     2, -1, 0);
}

/* Load with cfg and expect failure with code rc whose message contains both needles. */
static void expect_refused(const umd_config *cfg, int rc_want, const char *needle1, const char *needle2) {
    umd_split tr, te;
    memset(err, 0, sizeof err);
    int rc = umd_data_load(cfg, &tr, &te, err, sizeof err);
    T_EQ_INT(rc, rc_want);
    T_CONTAINS(err, needle1);
    if (needle2) T_CONTAINS(err, needle2);
    T_CHECK(tr.pixels == NULL && tr.labels == NULL && tr.n == 0);
    T_CHECK(te.pixels == NULL && te.labels == NULL && te.n == 0);
}

static void data_fmnist_real(void) {
    const char *dir = "/usr/share/datasets/fashion-mnist";
    char path[256];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
    if (access(path, R_OK) != 0) T_SKIP("Debian's dataset-fashion-mnist is not installed");
    umd_config c;
    memset(&c, 0, sizeof c);
    c.dataset = UMD_DATA_FASHION_MNIST; /* data_path empty: the default directory */
    umd_split tr, te;
    int rc = umd_data_load(&c, &tr, &te, err, sizeof err);
    T_REQUIRE(rc == 0);
    T_EQ_INT(tr.n, 60000);
    T_EQ_INT(te.n, 10000);
    T_EQ_INT(tr.h, 28);
    T_EQ_INT(tr.w, 28);
    T_EQ_INT(tr.c, 1);
    T_EQ_INT(tr.classes, 10);
    T_EQ_INT(te.h, 28);
    /* known values (first training image: an ankle boot) */
    T_EQ_INT(tr.labels[0], 9);
    T_EQ_INT(tr.labels[3], 3);
    T_EQ_INT(tr.labels[59999], 5);
    T_EQ_INT(tr.pixels[99], 13);
    T_EQ_INT(tr.pixels[100], 73);
    T_EQ_INT(tr.pixels[14 * 28 + 14], 217);
    long sum = 0;
    for (int j = 0; j < 784; j++) sum += tr.pixels[j];
    T_EQ_INT(sum, 76247);
    sum = 0;
    for (int j = 0; j < 784; j++) sum += tr.pixels[(size_t)59999 * 784 + j];
    T_EQ_INT(sum, 16684);
    T_EQ_INT(te.labels[0], 9);
    T_EQ_INT(te.labels[1], 2);
    T_EQ_INT(te.pixels[14 * 28 + 14], 110);
    int counts[10] = {0};
    for (int64_t i = 0; i < tr.n; i++) counts[tr.labels[i]]++;
    for (int k = 0; k < 10; k++) T_EQ_INT(counts[k], 6000);
    umd_split_free(&tr);
    umd_split_free(&te);
    T_CHECK(tr.pixels == NULL && tr.n == 0);

    /* data.limit: the train split only */
    c.data_limit = 1000;
    T_REQUIRE(umd_data_load(&c, &tr, &te, err, sizeof err) == 0);
    T_EQ_INT(tr.n, 1000);
    T_EQ_INT(te.n, 10000);
    T_EQ_INT(tr.labels[0], 9);
    T_EQ_INT(tr.pixels[100], 73);
    umd_split_free(&tr);
    umd_split_free(&te);
}

static void check_good_idx(void) {
    umd_config c = t_data_config(UMD_DATA_MNIST, tmpdir);
    umd_split tr, te;
    int rc = umd_data_load(&c, &tr, &te, err, sizeof err);
    REQUIRE_OK(rc);
    T_EQ_INT(tr.n, 5);
    T_EQ_INT(tr.h, 3);
    T_EQ_INT(tr.w, 4);
    T_EQ_INT(tr.c, 1);
    T_EQ_INT(tr.classes, 10);
    T_EQ_INT(te.n, 2);
    for (int i = 0; i < 5; i++) {
        T_EQ_INT(tr.labels[i], (i * 3) % 10);
        for (int j = 0; j < 12; j++) T_EQ_INT(tr.pixels[i * 12 + j], (i * 7 + j) % 256);
    }
    umd_split_free(&tr);
    umd_split_free(&te);
    c.data_limit = 2;
    T_REQUIRE(umd_data_load(&c, &tr, &te, err, sizeof err) == 0);
    T_EQ_INT(tr.n, 2);
    T_EQ_INT(te.n, 2);
    T_EQ_INT(tr.pixels[12 + 5], 12);
    umd_split_free(&tr);
    umd_split_free(&te);
}

static void data_idx_plain(void) {
    tmp_make();
    write_good_idx(0);
    check_good_idx();
    tmp_remove();
}

static void data_idx_gzip(void) {
    tmp_make();
    write_good_idx(1);
    check_good_idx();
    tmp_remove();
}

static void data_idx_truncated(void) {
    umd_config c;
    tmp_make();
    write_good_idx(1);
    /* train images declare 5 images of 3x4 = 60 bytes but hold 36 */
    write_idx_images(tmpdir, "train-images-idx3-ubyte.gz", 1, 0x803, 5, 3, 4, 36);
    c = t_data_config(UMD_DATA_MNIST, tmpdir);
    expect_refused(&c, UMDQ_EFORMAT, "train-images-idx3-ubyte.gz: truncated",
                   "expected 60 bytes of pixels, got 36");
    /* the same as a plain file (the .gz is removed so the plain one is found) */
    char path[512];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", tmpdir);
    unlink(path);
    write_idx_images(tmpdir, "train-images-idx3-ubyte", 0, 0x803, 5, 3, 4, 59);
    expect_refused(&c, UMDQ_EFORMAT, "train-images-idx3-ubyte: truncated", "got 59");
    /* a file cut inside its header */
    uint8_t hdr[10] = {0, 0, 8, 3, 0, 0, 0, 5, 0, 0};
    write_bytes(tmpdir, "train-images-idx3-ubyte", 0, hdr, sizeof hdr);
    expect_refused(&c, UMDQ_EFORMAT, "train-images-idx3-ubyte", "truncated");
    /* labels cut short (the plain images file goes so the good .gz one is read) */
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte", tmpdir);
    unlink(path);
    write_good_idx(1);
    write_idx_labels(tmpdir, "t10k-labels-idx1-ubyte.gz", 1, 0x801, 2, -1, 0);
    uint8_t lab[9] = {0, 0, 8, 1, 0, 0, 0, 2, 1};
    write_bytes(tmpdir, "t10k-labels-idx1-ubyte.gz", 1, lab, sizeof lab);
    expect_refused(&c, UMDQ_EFORMAT, "t10k-labels-idx1-ubyte.gz: truncated", "expected 2 bytes of labels, got 1");
    /* an empty file */
    write_bytes(tmpdir, "t10k-labels-idx1-ubyte.gz", 0, "", 0);
    expect_refused(&c, UMDQ_EFORMAT, "t10k-labels-idx1-ubyte.gz", "truncated");
    tmp_remove();
}

static void data_idx_wrong_magic(void) {
    tmp_make();
    write_good_idx(0);
    umd_config c = t_data_config(UMD_DATA_MNIST, tmpdir);
    /* an image file where the labels should be */
    write_idx_images(tmpdir, "train-labels-idx1-ubyte", 0, 0x803, 5, 3, 4, SIZE_MAX);
    expect_refused(&c, UMDQ_EFORMAT, "train-labels-idx1-ubyte: wrong magic 0x00000803", "image file");
    write_good_idx(0);
    write_idx_images(tmpdir, "t10k-images-idx3-ubyte", 0, 0x12345678, 2, 3, 4, SIZE_MAX);
    expect_refused(&c, UMDQ_EFORMAT, "t10k-images-idx3-ubyte: wrong magic 0x12345678", NULL);
    /* a short file with the wrong magic says wrong magic, not truncated */
    write_bytes(tmpdir, "t10k-images-idx3-ubyte", 0, "GIF89a", 6);
    expect_refused(&c, UMDQ_EFORMAT, "t10k-images-idx3-ubyte: wrong magic", NULL);
    tmp_remove();
}

static void data_idx_bad_dims(void) {
    tmp_make();
    write_good_idx(0);
    umd_config c = t_data_config(UMD_DATA_MNIST, tmpdir);
    write_idx_images(tmpdir, "train-images-idx3-ubyte", 0, 0x803, 5, 0, 4, SIZE_MAX);
    expect_refused(&c, UMDQ_EFORMAT, "train-images-idx3-ubyte: bad image size 0x4", NULL);
    write_idx_images(tmpdir, "train-images-idx3-ubyte", 0, 0x803, 0, 3, 4, SIZE_MAX);
    expect_refused(&c, UMDQ_EFORMAT, "train-images-idx3-ubyte: bad image count 0", NULL);
    /* a huge declared size is refused before anything is allocated for it */
    write_idx_images(tmpdir, "train-images-idx3-ubyte", 0, 0x803, 1, 3, 4, SIZE_MAX);
    uint8_t hdr[16];
    put_be32(hdr, 0x803);
    put_be32(hdr + 4, 1);
    put_be32(hdr + 8, 100000);
    put_be32(hdr + 12, 100000);
    write_bytes(tmpdir, "train-images-idx3-ubyte", 0, hdr, sizeof hdr);
    expect_refused(&c, UMDQ_EFORMAT, "train-images-idx3-ubyte: bad image size", NULL);
    tmp_remove();
}

static void data_idx_count_mismatch(void) {
    tmp_make();
    write_good_idx(1);
    umd_config c = t_data_config(UMD_DATA_MNIST, tmpdir);
    write_idx_labels(tmpdir, "train-labels-idx1-ubyte.gz", 1, 0x801, 4, -1, 0);
    expect_refused(&c, UMDQ_EFORMAT, "train-labels-idx1-ubyte.gz: holds 4 labels but",
                   "train-images-idx3-ubyte.gz holds 5 images");
    tmp_remove();
}

static void data_idx_bad_label(void) {
    tmp_make();
    write_good_idx(0);
    umd_config c = t_data_config(UMD_DATA_MNIST, tmpdir);
    write_idx_labels(tmpdir, "t10k-labels-idx1-ubyte", 0, 0x801, 2, 1, 10);
    expect_refused(&c, UMDQ_EFORMAT, "t10k-labels-idx1-ubyte: label 10 of image 1 is out of range", NULL);
    tmp_remove();
}

static void data_idx_trailing_and_damaged(void) {
    tmp_make();
    write_good_idx(0);
    umd_config c = t_data_config(UMD_DATA_MNIST, tmpdir);
    /* 5 images declared, 6 present */
    write_idx_images(tmpdir, "train-images-idx3-ubyte", 0, 0x803, 6, 3, 4, SIZE_MAX);
    char path[512];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte", tmpdir);
    FILE *f = fopen(path, "r+b");
    T_REQUIRE(f != NULL);
    uint8_t five[4] = {0, 0, 0, 5};
    T_REQUIRE(fseek(f, 4, SEEK_SET) == 0 && fwrite(five, 1, 4, f) == 4);
    fclose(f);
    expect_refused(&c, UMDQ_EFORMAT, "train-images-idx3-ubyte: unexpected bytes", NULL);
    unlink(path);
    /* a gzip stream damaged in the middle */
    write_idx_images(tmpdir, "train-images-idx3-ubyte.gz", 1, 0x803, 5, 3, 4, SIZE_MAX);
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", tmpdir);
    f = fopen(path, "r+b");
    T_REQUIRE(f != NULL);
    uint8_t junk[8] = {0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef};
    T_REQUIRE(fseek(f, 14, SEEK_SET) == 0 && fwrite(junk, 1, 8, f) == 8);
    fclose(f);
    umd_split tr, te;
    int rc = umd_data_load(&c, &tr, &te, err, sizeof err);
    T_CHECK(rc < 0);
    T_CONTAINS(err, "train-images-idx3-ubyte.gz");
    T_CHECK(tr.pixels == NULL && te.pixels == NULL);
    tmp_remove();
}

static void data_idx_missing(void) {
    tmp_make();
    write_good_idx(0);
    char path[512];
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte", tmpdir);
    unlink(path);
    umd_config c = t_data_config(UMD_DATA_MNIST, tmpdir);
    expect_refused(&c, UMDQ_ENOTFOUND, "t10k-labels-idx1-ubyte(.gz): not found", tmpdir);
    c.data_path[0] = 0;
    expect_refused(&c, UMDQ_EINVAL, "data.path", "mnist");
    tmp_remove();
}

/* ---- CIFAR-10 ---- */

/* A CIFAR batch of n records: record i has label (i + base) % 10 and pixel j = (i + base + j) % 251. */
static void write_cifar(const char *dir, const char *name, int gz, int n, int base, size_t cut) {
    size_t len = (size_t)n * 3073;
    uint8_t *buf = malloc(len);
    T_REQUIRE(buf != NULL);
    for (int i = 0; i < n; i++) {
        buf[(size_t)i * 3073] = (uint8_t)((i + base) % 10);
        for (int j = 0; j < 3072; j++) buf[(size_t)i * 3073 + 1 + j] = (uint8_t)((i + base + j) % 251);
    }
    if (cut < len) len = cut;
    write_bytes(dir, name, gz, buf, len);
    free(buf);
}

static void write_good_cifar(const char *dir) {
    char name[64];
    for (int b = 1; b <= 5; b++) {
        snprintf(name, sizeof name, b % 2 ? "data_batch_%d.bin" : "data_batch_%d.bin.gz", b);
        write_cifar(dir, name, b % 2 == 0, 3, (b - 1) * 3, SIZE_MAX);
    }
    write_cifar(dir, "test_batch.bin.gz", 1, 4, 100, SIZE_MAX);
}

static void check_good_cifar(const char *dir) {
    umd_config c = t_data_config(UMD_DATA_CIFAR10, dir);
    umd_split tr, te;
    int rc = umd_data_load(&c, &tr, &te, err, sizeof err);
    REQUIRE_OK(rc);
    T_EQ_INT(tr.n, 15);
    T_EQ_INT(tr.c, 3);
    T_EQ_INT(tr.h, 32);
    T_EQ_INT(tr.w, 32);
    T_EQ_INT(tr.classes, 10);
    T_EQ_INT(te.n, 4);
    for (int i = 0; i < 15; i++) {
        T_EQ_INT(tr.labels[i], i % 10);
        /* planar (3, 32, 32): channel 2, row 5, column 7 is byte 2048 + 167 of the record */
        T_EQ_INT(tr.pixels[(size_t)i * 3072 + 2048 + 5 * 32 + 7], (i + 2048 + 167) % 251);
    }
    T_EQ_INT(te.labels[3], 103 % 10);
    T_EQ_INT(te.pixels[3 * 3072 + 1], (103 + 1) % 251);
    umd_split_free(&tr);
    umd_split_free(&te);
    c.data_limit = 4;
    T_REQUIRE(umd_data_load(&c, &tr, &te, err, sizeof err) == 0);
    T_EQ_INT(tr.n, 4);
    T_EQ_INT(tr.labels[3], 3);
    T_EQ_INT(tr.pixels[3 * 3072 + 10], (3 + 10) % 251);
    T_EQ_INT(te.n, 4);
    umd_split_free(&tr);
    umd_split_free(&te);
}

static void data_cifar_load(void) {
    tmp_make();
    write_good_cifar(tmpdir);
    check_good_cifar(tmpdir);
    tmp_remove();
}

static void data_cifar_subdir(void) {
    char sub[512];
    tmp_make();
    snprintf(sub, sizeof sub, "%s/cifar-10-batches-bin", tmpdir);
    T_REQUIRE(mkdir(sub, 0755) == 0);
    write_good_cifar(sub);
    check_good_cifar(tmpdir);
    tmp_remove();
}

static void data_cifar_refused(void) {
    char path[512];
    tmp_make();
    write_good_cifar(tmpdir);
    umd_config c = t_data_config(UMD_DATA_CIFAR10, tmpdir);
    /* one and a half records */
    write_cifar(tmpdir, "test_batch.bin.gz", 1, 2, 0, 3073 + 1500);
    expect_refused(&c, UMDQ_EFORMAT, "test_batch.bin.gz: truncated", "the last record has 1500 bytes");
    write_cifar(tmpdir, "test_batch.bin.gz", 1, 0, 0, 0);
    expect_refused(&c, UMDQ_EFORMAT, "test_batch.bin.gz: empty", NULL);
    write_cifar(tmpdir, "test_batch.bin.gz", 1, 4, 100, SIZE_MAX);
    /* a bad label in record 2 of data_batch_3 */
    write_cifar(tmpdir, "data_batch_3.bin", 0, 3, 0, SIZE_MAX);
    snprintf(path, sizeof path, "%s/data_batch_3.bin", tmpdir);
    FILE *f = fopen(path, "r+b");
    T_REQUIRE(f != NULL);
    uint8_t bad = 200;
    T_REQUIRE(fseek(f, 2 * 3073, SEEK_SET) == 0 && fwrite(&bad, 1, 1, f) == 1);
    fclose(f);
    expect_refused(&c, UMDQ_EFORMAT, "data_batch_3.bin: label 200 of record 2 is out of range", NULL);
    unlink(path);
    expect_refused(&c, UMDQ_ENOTFOUND, "data_batch_3.bin(.gz): not found", NULL);
    c.data_path[0] = 0;
    expect_refused(&c, UMDQ_EINVAL, "data.path", "cifar10");
    tmp_remove();
}

int main(void) {
    T_RUN(data_fmnist_real);
    T_RUN(data_idx_plain);
    T_RUN(data_idx_gzip);
    T_RUN(data_idx_truncated);
    T_RUN(data_idx_wrong_magic);
    T_RUN(data_idx_bad_dims);
    T_RUN(data_idx_count_mismatch);
    T_RUN(data_idx_bad_label);
    T_RUN(data_idx_trailing_and_damaged);
    T_RUN(data_idx_missing);
    T_RUN(data_cifar_load);
    T_RUN(data_cifar_subdir);
    T_RUN(data_cifar_refused);
    tmp_remove();
    return t_done();
}
