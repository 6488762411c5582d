/* test_ckpt_file.c: the checkpoint file: bitwise round trip, its layout, every kind of damage
 * refused with a message naming the file, and atomic replacement. */
/* umdq-uses: umd common */
#include <ftw.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ckpt.h"
#include "philox.h"
#include "t.h"
#include "umdq.h"

static char tmpdir[256];
static char path[512];
static char err[1024];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void tmp_remove(void) {
    if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    tmpdir[0] = 0;
}

static void tmp_make(void) {
    tmp_remove();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/umdq-test-ckpt-XXXXXX");
    T_REQUIRE(mkdtemp(tmpdir) != NULL);
    snprintf(path, sizeof path, "%s/ckpt.umd", tmpdir);
}

#define NSEC 4
static const char *const sec_names[NSEC] = {"params", "adam_m", "empty", "one"};
static const uint64_t sec_bytes[NSEC] = {1000003, 4096, 0, 1};
static uint8_t *sec_data[NSEC];

static void fill_sections(uint64_t seed) {
    for (int i = 0; i < NSEC; i++) {
        free(sec_data[i]);
        sec_data[i] = malloc(sec_bytes[i] + 1);
        for (uint64_t j = 0; j < sec_bytes[i]; j++)
            sec_data[i][j] = (uint8_t)philox_draw(seed, PHILOX_TEST, (uint32_t)i, j).v[0];
    }
}

static const char *hash_a = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
static const char *hash_b = "ffffc3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

static int write_ckpt(const char *p, int64_t step) {
    umd_ckpt_header h;
    umd_ckpt_section s[NSEC];
    memset(&h, 0, sizeof h);
    snprintf(h.config_hash, sizeof h.config_hash, "%s", hash_a);
    h.step = step;
    h.seed = 0xfedcba9876543210ull; /* needs all 64 bits */
    h.cursor.seed = 0xfedcba9876543210ull;
    h.cursor.epoch = 3;
    h.cursor.pos = 4567;
    h.meta = cJSON_CreateObject();
    cJSON_AddStringToObject(h.meta, "phase", "pretrain");
    cJSON_AddNumberToObject(h.meta, "loss", 0.125);
    for (int i = 0; i < NSEC; i++) {
        s[i].name = sec_names[i];
        s[i].data = sec_data[i];
        s[i].bytes = sec_bytes[i];
    }
    int rc = umd_ckpt_write(p, &h, s, NSEC, err, sizeof err);
    cJSON_Delete(h.meta);
    return rc;
}

/* Read every section into fresh buffers; returns the rc and leaves buffers in out (caller frees). */
static int read_ckpt(const char *expected, umd_ckpt_header *h, uint8_t **out, const uint64_t *sizes) {
    umd_ckpt_section s[NSEC];
    for (int i = 0; i < NSEC; i++) {
        out[i] = calloc(sizes[i] + 1, 1);
        s[i].name = sec_names[i];
        s[i].data = out[i];
        s[i].bytes = sizes[i];
    }
    memset(err, 0, sizeof err);
    return umd_ckpt_read(path, expected, h, s, NSEC, err, sizeof err);
}

static void free_bufs(uint8_t **b) {
    for (int i = 0; i < NSEC; i++) {
        free(b[i]);
        b[i] = NULL;
    }
}

static void spit(const char *p, const uint8_t *b, size_t len) {
    FILE *f = fopen(p, "wb");
    T_REQUIRE(f != NULL);
    T_REQUIRE(len == 0 || fwrite(b, 1, len, f) == len);
    T_REQUIRE(fclose(f) == 0);
}

static void ckpt_roundtrip(void) {
    tmp_make();
    fill_sections(1);
    T_REQUIRE(write_ckpt(path, 1234) == 0);
    umd_ckpt_header h;
    uint8_t *got[NSEC];
    int rc = read_ckpt(hash_a, &h, got, sec_bytes);
    T_CHECK_MSG(rc == 0, "%s", err);
    for (int i = 0; i < NSEC; i++)
        T_CHECK_MSG(memcmp(got[i], sec_data[i], sec_bytes[i]) == 0, "section %s differs", sec_names[i]);
    T_EQ_STR(h.config_hash, hash_a);
    T_EQ_INT(h.step, 1234);
    T_CHECK(h.seed == 0xfedcba9876543210ull);
    T_CHECK(h.cursor.seed == 0xfedcba9876543210ull);
    T_EQ_INT(h.cursor.epoch, 3);
    T_EQ_INT(h.cursor.pos, 4567);
    T_REQUIRE(h.meta != NULL);
    T_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(h.meta, "phase")), "pretrain");
    T_CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(h.meta, "loss")) == 0.125);
    cJSON_Delete(h.meta);
    free_bufs(got);

    /* a subset of the sections, in another order, and no header wanted */
    umd_ckpt_section one[2] = {{"one", NULL, 1}, {"params", NULL, sec_bytes[0]}};
    uint8_t b1[1];
    uint8_t *b0 = malloc(sec_bytes[0]);
    one[0].data = b1;
    one[1].data = b0;
    T_CHECK(umd_ckpt_read(path, NULL, NULL, one, 2, err, sizeof err) == 0);
    T_CHECK(b1[0] == sec_data[3][0] && memcmp(b0, sec_data[0], sec_bytes[0]) == 0);
    free(b0);

    /* header only */
    memset(&h, 0, sizeof h);
    T_CHECK(umd_ckpt_read_header(path, &h, err, sizeof err) == 0);
    T_EQ_INT(h.step, 1234);
    T_EQ_STR(h.config_hash, hash_a);
    T_CHECK(h.meta != NULL);
    cJSON_Delete(h.meta);

    /* layout: magic, version 1, header, sections on 64-byte boundaries, nothing after */
    size_t len;
    uint8_t *file = t_slurp(path, &len);
    T_REQUIRE(file != NULL);
    T_CHECK(memcmp(file, "UMDQCKPT", 8) == 0);
    T_EQ_INT(file[8] | file[9] << 8 | file[10] << 16 | (uint32_t)file[11] << 24, 1);
    uint32_t hlen = file[12] | file[13] << 8 | file[14] << 16 | (uint32_t)file[15] << 24;
    cJSON *hdr = cJSON_ParseWithLength((const char *)file + 16, hlen);
    T_REQUIRE(hdr != NULL);
    T_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(hdr, "config_hash")), hash_a);
    T_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(hdr, "sections")), NSEC);
    cJSON_Delete(hdr);
    uint64_t off = (16 + hlen + 63) / 64 * 64;
    T_CHECK(memcmp(file + off, sec_data[0], sec_bytes[0]) == 0);
    off = (off + sec_bytes[0] + 63) / 64 * 64;
    T_CHECK(memcmp(file + off, sec_data[1], sec_bytes[1]) == 0);
    off = (off + sec_bytes[1] + 63) / 64 * 64; /* "empty" */
    off = (off + 63) / 64 * 64;
    T_CHECK(file[off] == sec_data[3][0]);
    T_EQ_INT(len, off + 1);
    free(file);
    tmp_remove();
}

/* Expect umd_ckpt_read (all sections, hash_a, sizes) to fail with rc and a message holding the
 * file's path and needle. */
static void expect_refused(const uint64_t *sizes, const char *expected, int rc_want, const char *needle) {
    umd_ckpt_header h;
    uint8_t *got[NSEC];
    int rc = read_ckpt(expected, &h, got, sizes);
    free_bufs(got);
    T_EQ_INT(rc, rc_want);
    T_CONTAINS(err, path);
    T_CONTAINS(err, needle);
}

static void ckpt_corruption(void) {
    tmp_make();
    fill_sections(2);
    T_REQUIRE(write_ckpt(path, 10) == 0);
    size_t len;
    uint8_t *good = t_slurp(path, &len);
    T_REQUIRE(good != NULL);
    uint8_t *bad = malloc(len);
    T_REQUIRE(bad != NULL);
    uint32_t hlen = good[12] | good[13] << 8 | good[14] << 16 | (uint32_t)good[15] << 24;
    uint64_t params_at = (16 + hlen + 63) / 64 * 64;

    /* a flipped byte in each of several places of the params section */
    static const uint64_t where[] = {0, 1, 500000, 1000002};
    for (size_t k = 0; k < sizeof where / sizeof where[0]; k++) {
        memcpy(bad, good, len);
        bad[params_at + where[k]] ^= 0x10;
        spit(path, bad, len);
        expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "section 'params': CRC mismatch");
    }
    /* the last byte of the file, in section "one" */
    memcpy(bad, good, len);
    bad[len - 1] ^= 1;
    spit(path, bad, len);
    expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "section 'one': CRC mismatch");

    /* truncated: inside a section, inside the header, inside the prefix, empty */
    static const size_t cuts[] = {1, 100, 2000000};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        if (cuts[k] >= len) continue;
        spit(path, good, len - cuts[k]);
        expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "truncated");
    }
    spit(path, good, 16 + hlen / 2);
    expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "truncated");
    spit(path, good, 12);
    expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "truncated");
    spit(path, good, 0);
    expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "not a umdq checkpoint");
    /* extra bytes after the last section */
    memcpy(bad, good, len);
    spit(path, bad, len);
    FILE *f = fopen(path, "ab");
    fputs("junk", f);
    fclose(f);
    expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "4 unexpected bytes");

    /* wrong magic */
    memcpy(bad, good, len);
    memcpy(bad, "PK\x03\x04", 4);
    spit(path, bad, len);
    expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "not a umdq checkpoint (wrong magic)");
    /* a newer version */
    memcpy(bad, good, len);
    bad[8] = 2;
    spit(path, bad, len);
    expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "written by a newer umdq");
    /* a damaged header length and a damaged header */
    memcpy(bad, good, len);
    bad[15] = 0x7f;
    spit(path, bad, len);
    expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "header length");
    memcpy(bad, good, len);
    bad[16] = '[';
    spit(path, bad, len);
    expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "header");
    /* a changed digit in the header still parses as JSON: the header's own CRC catches it */
    char *step = memmem(good + 16, hlen, "\"step\":10", 9);
    T_REQUIRE(step != NULL);
    memcpy(bad, good, len);
    bad[step - (char *)good + 8] = '3';
    spit(path, bad, len);
    expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "header CRC mismatch");
    char *pos = memmem(good + 16, hlen, "\"pos\":4567", 10);
    T_REQUIRE(pos != NULL);
    memcpy(bad, good, len);
    bad[pos - (char *)good + 7] = '6';
    spit(path, bad, len);
    expect_refused(sec_bytes, hash_a, UMDQ_EFORMAT, "header CRC mismatch");

    /* the good file again: wrong hash, size mismatch, missing section */
    spit(path, good, len);
    expect_refused(sec_bytes, hash_b, UMDQ_EINVAL, "config hash mismatch");
    uint64_t sizes[NSEC];
    memcpy(sizes, sec_bytes, sizeof sizes);
    sizes[1] = 4095;
    expect_refused(sizes, hash_a, UMDQ_EFORMAT, "section 'adam_m' holds 4096 bytes, expected 4095");
    umd_ckpt_section missing = {"adam_v", bad, 8};
    T_EQ_INT(umd_ckpt_read(path, NULL, NULL, &missing, 1, err, sizeof err), UMDQ_EFORMAT);
    T_CONTAINS(err, "section 'adam_v' missing");
    /* no such file */
    char other[600];
    snprintf(other, sizeof other, "%s/nothing.umd", tmpdir);
    umd_ckpt_header h;
    T_EQ_INT(umd_ckpt_read_header(other, &h, err, sizeof err), UMDQ_ENOTFOUND);
    T_CONTAINS(err, other);
    /* and the good file still reads */
    uint8_t *got[NSEC];
    T_CHECK_MSG(read_ckpt(hash_a, &h, got, sec_bytes) == 0, "%s", err);
    free_bufs(got);
    cJSON_Delete(h.meta);
    free(good);
    free(bad);
    tmp_remove();
}

static void ckpt_atomic_replace(void) {
    char tmp[600];
    tmp_make();
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fill_sections(3);
    T_REQUIRE(write_ckpt(path, 100) == 0);
    T_CHECK(access(tmp, F_OK) != 0); /* no leftover */
    /* an interrupted later write left a partial .tmp behind */
    size_t len;
    uint8_t *first = t_slurp(path, &len);
    T_REQUIRE(first != NULL);
    spit(tmp, first, len / 3);
    umd_ckpt_header h;
    uint8_t *got[NSEC];
    T_CHECK(read_ckpt(hash_a, &h, got, sec_bytes) == 0);
    T_EQ_INT(h.step, 100);
    T_CHECK(memcmp(got[0], sec_data[0], sec_bytes[0]) == 0);
    cJSON_Delete(h.meta);
    free_bufs(got);
    /* the next write replaces the stale .tmp and the checkpoint */
    fill_sections(4);
    T_REQUIRE(write_ckpt(path, 200) == 0);
    T_CHECK(access(tmp, F_OK) != 0);
    T_CHECK(read_ckpt(hash_a, &h, got, sec_bytes) == 0);
    T_EQ_INT(h.step, 200);
    T_CHECK(memcmp(got[0], sec_data[0], sec_bytes[0]) == 0);
    cJSON_Delete(h.meta);
    free_bufs(got);
    /* a write that cannot happen (no such directory) fails cleanly and names the path */
    char nowhere[600];
    snprintf(nowhere, sizeof nowhere, "%s/no/such/dir/ckpt.umd", tmpdir);
    T_EQ_INT(write_ckpt(nowhere, 1), UMDQ_EIO);
    T_CONTAINS(err, "no/such/dir/ckpt.umd.tmp");
    /* and a write into a read-only directory leaves the old checkpoint whole */
    if (geteuid() != 0) {
        T_REQUIRE(chmod(tmpdir, 0555) == 0);
        T_CHECK(write_ckpt(path, 300) == UMDQ_EIO);
        T_REQUIRE(chmod(tmpdir, 0755) == 0);
        T_CHECK(read_ckpt(hash_a, &h, got, sec_bytes) == 0);
        T_EQ_INT(h.step, 200);
        cJSON_Delete(h.meta);
        free_bufs(got);
    }
    /* bad arguments */
    umd_ckpt_header hh;
    memset(&hh, 0, sizeof hh);
    umd_ckpt_section dup[2] = {{"x", first, 1}, {"x", first, 1}};
    T_EQ_INT(umd_ckpt_write(path, &hh, dup, 2, err, sizeof err), UMDQ_EINVAL);
    T_CONTAINS(err, "given twice");
    T_CHECK(read_ckpt(hash_a, &h, got, sec_bytes) == 0); /* untouched */
    cJSON_Delete(h.meta);
    free_bufs(got);
    free(first);
    tmp_remove();
}

/* A section of 96 MiB goes through in one write and one read. */
static void ckpt_large_section(void) {
    tmp_make();
    uint64_t n = (uint64_t)96 << 20;
    uint8_t *big = malloc(n), *back = malloc(n);
    T_REQUIRE(big && back);
    for (uint64_t j = 0; j < n; j += 4096) big[j] = (uint8_t)(j >> 12);
    for (uint64_t j = 0; j < n; j++)
        if (j % 4096) big[j] = (uint8_t)(j * 31);
    umd_ckpt_header h;
    memset(&h, 0, sizeof h);
    snprintf(h.config_hash, sizeof h.config_hash, "%s", hash_b);
    umd_ckpt_section s = {"params", big, n};
    T_REQUIRE(umd_ckpt_write(path, &h, &s, 1, err, sizeof err) == 0);
    umd_ckpt_section r = {"params", back, n};
    T_CHECK(umd_ckpt_read(path, hash_b, NULL, &r, 1, err, sizeof err) == 0);
    T_CHECK(memcmp(big, back, n) == 0);
    free(big);
    free(back);
    tmp_remove();
}

int main(void) {
    T_RUN(ckpt_roundtrip);
    T_RUN(ckpt_corruption);
    T_RUN(ckpt_atomic_replace);
    T_RUN(ckpt_large_section);
    tmp_remove();
    for (int i = 0; i < NSEC; i++) free(sec_data[i]);
    return t_done();
}
