/* ckpt.h: the checkpoint file, one versioned binary written in one go.
 *
 *   "UMDQCKPT" (8 bytes) | u32 version (1) | u32 header length | header JSON | pad to 64 |
 *   section 0 bytes | pad to 64 | section 1 bytes | ...
 *
 * The header JSON holds the config hash, the step, the RNG seed, the data cursor, free metadata,
 * and for each section its name, byte count and CRC-32. All integers little-endian. Written to
 * PATH.tmp, fsynced and renamed, so a crash leaves the old checkpoint or the new one. */
#ifndef UMDQ_TRAINER_CKPT_H
#define UMDQ_TRAINER_CKPT_H
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include "data.h"

#define UMD_CKPT_VERSION 1

typedef struct {
    char config_hash[65];
    int64_t step;
    uint64_t seed;
    umd_cursor cursor;
    cJSON *meta;          /* free-form JSON object (phase, ...); owned by whoever set it, may be NULL */
} umd_ckpt_header;

typedef struct {
    const char *name;     /* "params", "adam_m", "adam_v", "ema", ... */
    void *data;           /* write: the bytes; read: a buffer of exactly `bytes` to fill */
    uint64_t bytes;
} umd_ckpt_section;

int umd_ckpt_write(const char *path, const umd_ckpt_header *h, const umd_ckpt_section *sections,
                   int nsections, char *err, size_t errlen);

/* Read the header only (h->meta is then owned by the caller). */
int umd_ckpt_read_header(const char *path, umd_ckpt_header *h, char *err, size_t errlen);

/* Read a checkpoint into the given sections: every section named must be present with exactly
 * that size and a matching CRC; an expected_hash (may be NULL) must equal the file's config hash.
 * Errors name the file and what is wrong (wrong magic, newer version, truncated, size mismatch,
 * CRC mismatch, config hash mismatch). h may be NULL; when it is not, h->meta is owned by the
 * caller after a successful read. On failure the sections' buffers may hold part of the file. */
int umd_ckpt_read(const char *path, const char *expected_hash, umd_ckpt_header *h,
                  umd_ckpt_section *sections, int nsections, char *err, size_t errlen);

#endif
