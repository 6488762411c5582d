/* ckpt.c: the checkpoint file (format in ckpt.h): one atomic write, a checked read.
 *
 * Header JSON (version 1):
 *   {"format": "umdq checkpoint", "config_hash": "<64 hex>", "step": N, "seed": "<u64 decimal>",
 *    "cursor": {"seed": "<u64 decimal>", "epoch": N, "pos": N}, "meta": {...} (optional),
 *    "sections": [{"name": "params", "bytes": N, "crc32": N}, ...], "header_crc32": N}
 * header_crc32, always the last member, is the CRC-32 of the header text without it (the text
 * up to the comma before it, then "}").
 * 64-bit seeds are decimal strings (a JSON number holds 53 bits). Section i starts at the first
 * multiple of 64 at or after the end of the header (i = 0) or of section i-1; the file ends with
 * the last section's last byte. Sections go from and to the caller's buffers in chunks: no copy
 * of a section is ever made. A write reads each section once for its CRC (the header, which
 * holds the CRCs, comes first) and once to write it; a read checks the CRC as the bytes arrive. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "ckpt.h"
#include "umdq.h"

#define CKPT_MAGIC "UMDQCKPT"
#define CKPT_PREFIX 16                   /* magic, version, header length */
#define CKPT_ALIGN 64
#define CKPT_MAX_HEADER (64u << 20)      /* a header larger than this is a damaged length field */
#define CKPT_CHUNK ((size_t)64 << 20)    /* bytes per read or write call on sections */
#define CKPT_CRC_KEY ",\"header_crc32\":"  /* the header's last member (header_seal) */

static uint64_t align_up(uint64_t x) { return (x + CKPT_ALIGN - 1) / CKPT_ALIGN * CKPT_ALIGN; }

static void put_le32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* CRC-32 (zlib's) of n bytes, in chunks zlib's length type always holds. */
static uint32_t crc_update(uint32_t crc, const void *data, uint64_t n) {
    const uint8_t *p = data;
    while (n) {
        uInt m = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, p, m);
        p += m;
        n -= m;
    }
    return crc;
}

static int write_all(int fd, const void *data, uint64_t n) {
    const uint8_t *p = data;
    while (n) {
        size_t m = n > CKPT_CHUNK ? CKPT_CHUNK : (size_t)n;
        ssize_t w = write(fd, p, m);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (uint64_t)w;
    }
    return 0;
}

/* Read exactly n bytes at off into buf, updating *crc when crc is not NULL. 0, or -1 with errno
 * (0 for an early end of file). */
static int pread_all(int fd, void *buf, uint64_t n, uint64_t off, uint32_t *crc) {
    uint8_t *p = buf;
    while (n) {
        size_t m = n > CKPT_CHUNK ? CKPT_CHUNK : (size_t)n;
        ssize_t r = pread(fd, p, m, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) {
            errno = 0;
            return -1;
        }
        if (crc) *crc = crc_update(*crc, p, (uint64_t)r);
        p += r;
        off += (uint64_t)r;
        n -= (uint64_t)r;
    }
    return 0;
}

static void u64_text(uint64_t v, char buf[24]) { snprintf(buf, 24, "%" PRIu64, v); }

/* The directory part of path into dir ("." when it has none). */
static void dir_of(const char *path, char *dir, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, n, ".");
    else if (slash == path) snprintf(dir, n, "/");
    else snprintf(dir, n, "%.*s", (int)(slash - path), path);
}

/* ---- write ---------------------------------------------------------------------------------------- */

static cJSON *header_json(const umd_ckpt_header *h, const umd_ckpt_section *sections, int nsections,
                          const uint32_t *crcs) {
    char num[24];
    cJSON *root = cJSON_CreateObject(), *cursor, *list;
    if (!root) return NULL;
    cJSON_AddStringToObject(root, "format", "umdq checkpoint");
    cJSON_AddStringToObject(root, "config_hash", h->config_hash);
    cJSON_AddNumberToObject(root, "step", (double)h->step);
    u64_text(h->seed, num);
    cJSON_AddStringToObject(root, "seed", num);
    cursor = cJSON_AddObjectToObject(root, "cursor");
    if (cursor) {
        u64_text(h->cursor.seed, num);
        cJSON_AddStringToObject(cursor, "seed", num);
        cJSON_AddNumberToObject(cursor, "epoch", (double)h->cursor.epoch);
        cJSON_AddNumberToObject(cursor, "pos", (double)h->cursor.pos);
    }
    if (h->meta) {
        cJSON *m = cJSON_Duplicate(h->meta, 1);
        if (!m) goto oom;
        cJSON_AddItemToObject(root, "meta", m);
    }
    list = cJSON_AddArrayToObject(root, "sections");
    if (!list) goto oom;
    for (int i = 0; i < nsections; i++) {
        cJSON *s = cJSON_CreateObject();
        if (!s) goto oom;
        cJSON_AddItemToArray(list, s);
        cJSON_AddStringToObject(s, "name", sections[i].name);
        cJSON_AddNumberToObject(s, "bytes", (double)sections[i].bytes);
        cJSON_AddNumberToObject(s, "crc32", (double)crcs[i]);
    }
    return root;
oom:
    cJSON_Delete(root);
    return NULL;
}

/* The header text: hdr printed, then "header_crc32" (the CRC-32 of that text) added as its last
 * member, so a damaged byte anywhere in the header is caught as surely as one in a section.
 * Caller frees. */
static char *header_seal(const cJSON *hdr) {
    char *body = cJSON_PrintUnformatted(hdr), *text;
    size_t n;
    if (!body) return NULL;
    n = strlen(body); /* "{...}" with at least one member */
    text = malloc(n + sizeof CKPT_CRC_KEY + 16);
    if (text) {
        uint32_t crc = crc_update(0, body, n);
        snprintf(text, n + sizeof CKPT_CRC_KEY + 16, "%.*s%s%u}", (int)(n - 1), body, CKPT_CRC_KEY, crc);
    }
    free(body);
    return text;
}

/* 0 when text (len bytes, NUL-terminated) ends with the CRC member header_seal adds and the CRC
 * matches the text without it. */
static int header_check(char *text, size_t len) {
    char *at = NULL, *p = text;
    while ((p = strstr(p, CKPT_CRC_KEY)) != NULL) at = p++;
    if (!at) return -1;
    const char *digits = at + strlen(CKPT_CRC_KEY);
    char *end;
    errno = 0;
    unsigned long stored = strtoul(digits, &end, 10);
    if (errno || end == digits || *digits == '-' || stored > 0xffffffffUL || end != text + len - 1 ||
        *end != '}')
        return -1;
    char saved = at[0];
    at[0] = '}'; /* the text as it was before the CRC member was added */
    uint32_t crc = crc_update(0, text, (uint64_t)(at - text) + 1);
    at[0] = saved;
    return crc == (uint32_t)stored ? 0 : -1;
}

/* Message for a failed system call on the checkpoint. */
static int io_error(char *err, size_t errlen, const char *what, const char *path) {
    snprintf(err, errlen, "%s: cannot %s: %s", path, what, strerror(errno));
    return UMDQ_EIO;
}

int umd_ckpt_write(const char *path, const umd_ckpt_header *h, const umd_ckpt_section *sections,
                   int nsections, char *err, size_t errlen) {
    static const uint8_t zeros[CKPT_ALIGN];
    char tmp[4200], dir[4200];
    uint32_t *crcs = NULL;  /* owned */
    cJSON *hdr = NULL;      /* owned */
    char *text = NULL;      /* owned */
    int fd = -1, created = 0, rc = 0;
    uint8_t prefix[CKPT_PREFIX];
    size_t hlen;
    uint64_t off;

    if (!path || !h || nsections < 0 || (nsections > 0 && !sections)) {
        snprintf(err, errlen, "checkpoint write: bad arguments");
        return UMDQ_EINVAL;
    }
    if (strlen(path) + 5 > sizeof tmp) {
        snprintf(err, errlen, "%s: path too long", path);
        return UMDQ_EINVAL;
    }
    if (h->meta && !cJSON_IsObject(h->meta)) {
        snprintf(err, errlen, "%s: checkpoint meta must be a JSON object", path);
        return UMDQ_EINVAL;
    }
    for (int i = 0; i < nsections; i++) {
        if (!sections[i].name || !sections[i].name[0] || (sections[i].bytes && !sections[i].data) ||
            sections[i].bytes > (1ull << 53)) {
            snprintf(err, errlen, "%s: bad checkpoint section %d", path, i);
            return UMDQ_EINVAL;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(sections[i].name, sections[j].name) == 0) {
                snprintf(err, errlen, "%s: checkpoint section '%s' given twice", path, sections[i].name);
                return UMDQ_EINVAL;
            }
    }

    crcs = calloc((size_t)nsections + 1, sizeof *crcs);
    if (crcs) {
        for (int i = 0; i < nsections; i++) crcs[i] = crc_update(0, sections[i].data, sections[i].bytes);
        hdr = header_json(h, sections, nsections, crcs);
    }
    if (hdr) text = header_seal(hdr);
    if (!text) {
        snprintf(err, errlen, "%s: out of memory writing the checkpoint", path);
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    hlen = strlen(text);
    if (hlen > CKPT_MAX_HEADER) {
        snprintf(err, errlen, "%s: checkpoint header too large (%zu bytes)", path, hlen);
        rc = UMDQ_EINVAL;
        goto fail;
    }

    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = io_error(err, errlen, "create", tmp);
        goto fail;
    }
    created = 1;
    memcpy(prefix, CKPT_MAGIC, 8);
    put_le32(prefix + 8, UMD_CKPT_VERSION);
    put_le32(prefix + 12, (uint32_t)hlen);
    off = CKPT_PREFIX + hlen;
    if (write_all(fd, prefix, CKPT_PREFIX) || write_all(fd, text, hlen)) {
        rc = io_error(err, errlen, "write", tmp);
        goto fail;
    }
    for (int i = 0; i < nsections; i++) {
        if (write_all(fd, zeros, align_up(off) - off) ||
            write_all(fd, sections[i].data, sections[i].bytes)) {
            rc = io_error(err, errlen, "write", tmp);
            goto fail;
        }
        off = align_up(off) + sections[i].bytes;
    }
    if (fsync(fd) != 0) {
        rc = io_error(err, errlen, "fsync", tmp);
        goto fail;
    }
    int cr = close(fd);
    fd = -1;
    if (cr != 0) {
        rc = io_error(err, errlen, "close", tmp);
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rc = io_error(err, errlen, "rename the new checkpoint over", path);
        goto fail;
    }
    created = 0; /* the new file is in place; the directory entry is made durable next */
    dir_of(path, dir, sizeof dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        rc = io_error(err, errlen, "fsync the directory", dir);
        if (dfd >= 0) close(dfd);
        goto fail;
    }
    close(dfd);
fail:
    if (fd >= 0) close(fd);
    if (created) unlink(tmp);
    free(text);
    cJSON_Delete(hdr);
    free(crcs);
    return rc;
}

/* ---- read ----------------------------------------------------------------------------------------- */

typedef struct {
    int fd;
    uint64_t size;        /* file bytes */
    cJSON *hdr;           /* owned */
    const cJSON *sections;/* borrowed from hdr */
    uint64_t data_start;  /* offset of section 0 */
} ckpt_file;

static void ckpt_close(ckpt_file *f) {
    if (f->fd >= 0) close(f->fd);
    cJSON_Delete(f->hdr);
    f->fd = -1;
    f->hdr = NULL;
}

/* A non-negative integral JSON number below 2^53, or -1. */
static int64_t json_count(const cJSON *v) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(int64_t)d) return -1;
    return (int64_t)d;
}

/* A u64 from a decimal string (or a small number, as a lenient reader). 0 on success. */
static int json_u64(const cJSON *v, uint64_t *out) {
    if (cJSON_IsString(v)) {
        const char *s = v->valuestring;
        char *end;
        if (!s[0] || s[0] == '-' || s[0] == '+') return -1;
        errno = 0;
        unsigned long long x = strtoull(s, &end, 10);
        if (errno || *end) return -1;
        *out = x;
        return 0;
    }
    int64_t c = json_count(v);
    if (c < 0) return -1;
    *out = (uint64_t)c;
    return 0;
}

/* Open path, check magic, version and header, and that the file holds exactly the sections the
 * header lists. Fills f (ckpt_close it) and, when h is not NULL, h (with h->meta detached into
 * the caller's hands). */
static int ckpt_open(const char *path, ckpt_file *f, umd_ckpt_header *h, char *err, size_t errlen) {
    uint8_t prefix[CKPT_PREFIX];
    char *text = NULL;
    struct stat st;
    int rc = UMDQ_EFORMAT;
    f->fd = -1;
    f->hdr = NULL;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, e == ENOENT ? "no such checkpoint" : strerror(e));
        return e == ENOENT ? UMDQ_ENOTFOUND : UMDQ_EIO;
    }
    if (fstat(f->fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    f->size = (uint64_t)st.st_size;
    size_t have = f->size < CKPT_PREFIX ? (size_t)f->size : CKPT_PREFIX;
    if (pread_all(f->fd, prefix, have, 0, NULL) != 0) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    size_t cmp = have < 8 ? have : 8;
    if (memcmp(prefix, CKPT_MAGIC, cmp) != 0 || (f->size == 0)) {
        snprintf(err, errlen, "%s: not a umdq checkpoint (wrong magic)", path);
        goto fail;
    }
    if (have < CKPT_PREFIX) {
        snprintf(err, errlen, "%s: truncated: %zu bytes, shorter than the %d-byte file prefix", path,
                 have, CKPT_PREFIX);
        goto fail;
    }
    uint32_t version = get_le32(prefix + 8), hlen = get_le32(prefix + 12);
    if (version > UMD_CKPT_VERSION) {
        snprintf(err, errlen, "%s: written by a newer umdq (checkpoint format version %u; this umdq "
                 "reads version %d)", path, version, UMD_CKPT_VERSION);
        goto fail;
    }
    if (version == 0) {
        snprintf(err, errlen, "%s: damaged checkpoint: format version 0", path);
        goto fail;
    }
    if (hlen == 0 || hlen > CKPT_MAX_HEADER) {
        snprintf(err, errlen, "%s: damaged checkpoint: header length %u", path, hlen);
        goto fail;
    }
    if (CKPT_PREFIX + (uint64_t)hlen > f->size) {
        snprintf(err, errlen, "%s: truncated: the %u-byte header ends past the end of the file "
                 "(%llu bytes)", path, hlen, (unsigned long long)f->size);
        goto fail;
    }
    text = malloc((size_t)hlen + 1);
    if (!text) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    if (pread_all(f->fd, text, hlen, CKPT_PREFIX, NULL) != 0) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    text[hlen] = 0;
    if (header_check(text, hlen) != 0) {
        snprintf(err, errlen, "%s: damaged checkpoint: header CRC mismatch", path);
        goto fail;
    }
    f->hdr = cJSON_ParseWithLength(text, hlen);
    if (!f->hdr || !cJSON_IsObject(f->hdr)) {
        snprintf(err, errlen, "%s: damaged checkpoint: the header is not a JSON object", path);
        goto fail;
    }

    /* header fields */
    const cJSON *hash = cJSON_GetObjectItemCaseSensitive(f->hdr, "config_hash");
    const cJSON *cursor = cJSON_GetObjectItemCaseSensitive(f->hdr, "cursor");
    int64_t step = json_count(cJSON_GetObjectItemCaseSensitive(f->hdr, "step"));
    uint64_t seed, cseed;
    int64_t epoch = json_count(cJSON_GetObjectItemCaseSensitive(cursor, "epoch"));
    int64_t pos = json_count(cJSON_GetObjectItemCaseSensitive(cursor, "pos"));
    const char *bad = NULL;
    if (!cJSON_IsString(hash) || strlen(hash->valuestring) > 64) bad = "config_hash";
    else if (step < 0) bad = "step";
    else if (json_u64(cJSON_GetObjectItemCaseSensitive(f->hdr, "seed"), &seed) != 0) bad = "seed";
    else if (!cJSON_IsObject(cursor) ||
             json_u64(cJSON_GetObjectItemCaseSensitive(cursor, "seed"), &cseed) != 0 || epoch < 0 ||
             pos < 0)
        bad = "cursor";
    f->sections = cJSON_GetObjectItemCaseSensitive(f->hdr, "sections");
    if (!bad && !cJSON_IsArray(f->sections)) bad = "sections";
    if (bad) {
        snprintf(err, errlen, "%s: damaged checkpoint: header field \"%s\" missing or invalid", path, bad);
        goto fail;
    }

    /* layout: the file must end exactly where the last section does */
    f->data_start = align_up(CKPT_PREFIX + (uint64_t)hlen);
    uint64_t end = CKPT_PREFIX + (uint64_t)hlen, off = f->data_start;
    const cJSON *s;
    cJSON_ArrayForEach(s, f->sections) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "name");
        int64_t bytes = json_count(cJSON_GetObjectItemCaseSensitive(s, "bytes"));
        int64_t crc = json_count(cJSON_GetObjectItemCaseSensitive(s, "crc32"));
        if (!cJSON_IsString(name) || bytes < 0 || crc < 0 || crc > 0xffffffffll) {
            snprintf(err, errlen, "%s: damaged checkpoint: a section entry in the header is invalid", path);
            goto fail;
        }
        end = off + (uint64_t)bytes;
        off = align_up(end);
    }
    if (f->size < end) {
        snprintf(err, errlen, "%s: truncated: the header describes %llu bytes, the file has %llu",
                 path, (unsigned long long)end, (unsigned long long)f->size);
        goto fail;
    }
    if (f->size > end) {
        snprintf(err, errlen, "%s: damaged checkpoint: %llu unexpected bytes after the last section",
                 path, (unsigned long long)(f->size - end));
        goto fail;
    }
    if (h) {
        memset(h, 0, sizeof *h);
        snprintf(h->config_hash, sizeof h->config_hash, "%s", hash->valuestring);
        h->step = step;
        h->seed = seed;
        h->cursor.seed = cseed;
        h->cursor.epoch = epoch;
        h->cursor.pos = pos;
        cJSON *meta = cJSON_DetachItemFromObjectCaseSensitive(f->hdr, "meta");
        if (meta && !cJSON_IsObject(meta)) {
            cJSON_Delete(meta);
            meta = NULL;
        }
        h->meta = meta;
    }
    free(text);
    return 0;
fail:
    free(text);
    ckpt_close(f);
    return rc;
}

int umd_ckpt_read_header(const char *path, umd_ckpt_header *h, char *err, size_t errlen) {
    ckpt_file f;
    int rc = ckpt_open(path, &f, h, err, errlen);
    if (rc) return rc;
    ckpt_close(&f);
    return 0;
}

int umd_ckpt_read(const char *path, const char *expected_hash, umd_ckpt_header *h,
                  umd_ckpt_section *sections, int nsections, char *err, size_t errlen) {
    ckpt_file f;
    umd_ckpt_header hdr;
    uint64_t *offs = NULL;  /* owned: (nsections,) file offsets, then (nsections,) stored CRCs */
    uint64_t *crcs = NULL;
    int rc = ckpt_open(path, &f, &hdr, err, errlen);
    if (rc) return rc;
    if (expected_hash && strcmp(expected_hash, hdr.config_hash) != 0) {
        snprintf(err, errlen, "%s: config hash mismatch: the checkpoint was written for config "
                 "%.12s..., this config is %.12s... (a checkpoint resumes only the config that "
                 "wrote it)", path, hdr.config_hash, expected_hash);
        rc = UMDQ_EINVAL;
        goto fail;
    }
    if (nsections > 0) {
        offs = calloc((size_t)nsections * 2, sizeof *offs);
        if (!offs) {
            snprintf(err, errlen, "%s: out of memory", path);
            rc = UMDQ_ENOMEM;
            goto fail;
        }
        crcs = offs + nsections;
    }
    /* every wanted section is present with the caller's size before any byte is read */
    for (int i = 0; i < nsections; i++) {
        uint64_t off = f.data_start;
        int found = 0;
        const cJSON *s;
        cJSON_ArrayForEach(s, f.sections) {
            const char *name = cJSON_GetObjectItemCaseSensitive(s, "name")->valuestring;
            uint64_t bytes = (uint64_t)json_count(cJSON_GetObjectItemCaseSensitive(s, "bytes"));
            if (strcmp(name, sections[i].name) == 0) {
                if (bytes != sections[i].bytes) {
                    snprintf(err, errlen, "%s: section '%s' holds %llu bytes, expected %llu (a "
                             "checkpoint of another model shape?)", path, name,
                             (unsigned long long)bytes, (unsigned long long)sections[i].bytes);
                    rc = UMDQ_EFORMAT;
                    goto fail;
                }
                offs[i] = off;
                crcs[i] = (uint64_t)json_count(cJSON_GetObjectItemCaseSensitive(s, "crc32"));
                found = 1;
                break;
            }
            off = align_up(off + bytes);
        }
        if (!found) {
            snprintf(err, errlen, "%s: section '%s' missing", path, sections[i].name);
            rc = UMDQ_EFORMAT;
            goto fail;
        }
    }
#ifdef POSIX_FADV_SEQUENTIAL
    posix_fadvise(f.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    for (int i = 0; i < nsections; i++) {
        uint32_t crc = 0;
        if (pread_all(f.fd, sections[i].data, sections[i].bytes, offs[i], &crc) != 0) {
            snprintf(err, errlen, "%s: cannot read section '%s': %s", path, sections[i].name,
                     errno ? strerror(errno) : "unexpected end of file");
            rc = errno ? UMDQ_EIO : UMDQ_EFORMAT;
            goto fail;
        }
        if (crc != (uint32_t)crcs[i]) {
            snprintf(err, errlen, "%s: section '%s': CRC mismatch (stored %08llx, computed %08x): "
                     "the file is damaged", path, sections[i].name, (unsigned long long)crcs[i], crc);
            rc = UMDQ_EFORMAT;
            goto fail;
        }
    }
    if (h) {
        *h = hdr;
        hdr.meta = NULL;
    }
fail:
    free(offs);
    cJSON_Delete(hdr.meta);
    ckpt_close(&f);
    return rc;
}
