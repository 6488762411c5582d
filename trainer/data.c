/* data.c: the trainer's image data: loaders for MNIST-style IDX files, the CIFAR-10 binary format,
 * the ImageNet 64x64 .npz files and a synthetic set made from the seed, and the deterministic
 * batch reader.
 *
 * Order. Epoch e visits position p = 0 .. n-1 of the permutation pi_e of [0, n):
 *   pi_e = cycle-walking over a 6-round balanced Feistel network on [0, 4^k) (4^k >= n), whose
 *   round keys are the eight words of Philox(seed, PHILOX_SHUFFLE, step = e, index 0 and 1).
 * A Feistel network is a bijection of [0, 4^k) whatever its round function; applying it again
 * while the result is >= n (cycle walking) restricts it to a bijection of [0, n). Expected walks
 * per position are below 4^k / n < 4. So position -> image needs no buffer, and the cursor
 * (seed, epoch, pos) alone names every future batch.
 *
 * Augmentation of the image at (epoch, pos) uses the four words of
 * Philox(seed, PHILOX_AUGMENT, step = epoch, index = pos): word 0 the area fraction in [0.8, 1],
 * word 1 the log aspect ratio in [log 3/4, log 4/3], word 2 (top 24 bits) the crop's left edge and
 * (bit 0) the horizontal flip, word 3 the crop's top edge. The crop is a real-valued rectangle;
 * output pixel centres map into it as in align_corners=False bilinear resampling. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "data.h"
#include "philox.h"
#include "umdq.h"

/* Philox stream of the synthetic data set (step 0 = train, 1 = test; steps 2, 3 = their pixel
 * noise). Kept clear of the streams listed in philox.h. */

#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u
#define CIFAR_SIDE 32
#define CIFAR_RECORD (1 + 3 * CIFAR_SIDE * CIFAR_SIDE)
#define FEISTEL_ROUNDS 6
#define DEFAULT_FASHION_MNIST "/usr/share/datasets/fashion-mnist"

/* ---- files ------------------------------------------------------------------------------------ */

/* dir/name.gz or else dir/name into path. 0, or UMDQ_ENOTFOUND with a message. */
static int find_file(const char *dir, const char *name, char *path, size_t pathlen, char *err,
                     size_t errlen) {
    struct stat st;
    snprintf(path, pathlen, "%s/%s.gz", dir, name);
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) return 0;
    snprintf(path, pathlen, "%s/%s", dir, name);
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) return 0;
    snprintf(err, errlen, "%s/%s(.gz): not found", dir, name);
    return UMDQ_ENOTFOUND;
}

static int open_gz(const char *path, gzFile *out, char *err, size_t errlen) {
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno ? errno : ENOMEM));
        return UMDQ_EIO;
    }
    gzbuffer(f, 1u << 20);
    *out = f;
    return 0;
}

/* Read up to n bytes (gzread takes at most INT_MAX at a time). *got = bytes read. 0 when all n
 * came, UMDQ_EFORMAT when the stream ended first, UMDQ_EIO (message set) on a read or gzip error. */
static int read_up_to(gzFile f, const char *path, void *buf, uint64_t n, uint64_t *got, char *err,
                      size_t errlen) {
    uint8_t *p = buf;
    *got = 0;
    while (*got < n) {
        uint64_t want = n - *got;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(f, p + *got, (unsigned)want);
        if (r < 0) {
            int zerr = 0;
            const char *msg = gzerror(f, &zerr);
            snprintf(err, errlen, "%s: %s: %s", path,
                     zerr == Z_ERRNO ? "read error" : "damaged gzip data",
                     zerr == Z_ERRNO ? strerror(errno) : msg);
            return UMDQ_EIO;
        }
        if (r == 0) return UMDQ_EFORMAT;
        *got += (uint64_t)r;
    }
    return 0;
}

/* 0 when f is at its end, else UMDQ_EFORMAT with a message (a file with extra bytes is not the
 * file its header describes). */
static int expect_end(gzFile f, const char *path, const char *what, char *err, size_t errlen) {
    uint8_t extra[1];
    uint64_t got;
    int rc = read_up_to(f, path, extra, 1, &got, err, errlen);
    if (rc == UMDQ_EIO) return rc;
    if (got) {
        snprintf(err, errlen, "%s: unexpected bytes after the %s its header declares", path, what);
        return UMDQ_EFORMAT;
    }
    return 0;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Whole file (gzipped or not) into *data (caller frees). */
static int read_whole(const char *path, uint8_t **data, uint64_t *len, char *err, size_t errlen) {
    struct stat st;
    gzFile f = NULL;
    uint8_t *buf = NULL;
    uint64_t cap, n = 0;
    int rc = 0;
    *data = NULL;
    *len = 0;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return UMDQ_EIO;
    }
    cap = (uint64_t)st.st_size + 1; /* exact for plain files; gzip grows below */
    if ((rc = open_gz(path, &f, err, errlen)) != 0) goto fail;
    for (;;) {
        if (n == cap) {
            uint64_t ncap = cap * 2;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) { rc = UMDQ_ENOMEM; snprintf(err, errlen, "%s: out of memory", path); goto fail; }
            buf = nb;
            cap = ncap;
        } else if (!buf) {
            buf = malloc(cap);
            if (!buf) { rc = UMDQ_ENOMEM; snprintf(err, errlen, "%s: out of memory", path); goto fail; }
        }
        uint64_t got;
        rc = read_up_to(f, path, buf + n, cap - n, &got, err, errlen);
        n += got;
        if (rc == UMDQ_EFORMAT) break; /* end of file */
        if (rc) goto fail;
    }
    rc = 0;
    gzclose(f);
    *data = buf;
    *len = n;
    return 0;
fail:
    if (f) gzclose(f);
    free(buf);
    return rc;
}

/* ---- IDX (MNIST, Fashion-MNIST) ----------------------------------------------------------------- */

static int idx_load(const char *dir, const char *prefix, umd_split *s, char *err, size_t errlen) {
    char ipath[1200], lpath[1200], name[64];
    gzFile fi = NULL, fl = NULL;
    uint8_t hdr[16];
    uint64_t got, npix;
    int rc;

    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    if ((rc = find_file(dir, name, ipath, sizeof ipath, err, errlen)) != 0) goto fail;
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    if ((rc = find_file(dir, name, lpath, sizeof lpath, err, errlen)) != 0) goto fail;

    /* images: magic, n, rows, cols (big-endian u32), then n * rows * cols bytes */
    if ((rc = open_gz(ipath, &fi, err, errlen)) != 0) goto fail;
    rc = read_up_to(fi, ipath, hdr, 16, &got, err, errlen);
    if (rc == UMDQ_EFORMAT && got >= 4 && be32(hdr) != IDX_IMAGES_MAGIC) rc = 0; /* report magic */
    if (rc == UMDQ_EFORMAT) {
        snprintf(err, errlen, "%s: truncated: expected a 16-byte header, got %llu bytes", ipath,
                 (unsigned long long)got);
        goto fail;
    }
    if (rc) goto fail;
    if (be32(hdr) != IDX_IMAGES_MAGIC) {
        snprintf(err, errlen, "%s: wrong magic 0x%08x (an IDX image file starts with 0x%08x)%s", ipath,
                 be32(hdr), IDX_IMAGES_MAGIC, be32(hdr) == IDX_LABELS_MAGIC ? ": this is a label file" : "");
        rc = UMDQ_EFORMAT;
        goto fail;
    }
    uint32_t n = be32(hdr + 4), rows = be32(hdr + 8), cols = be32(hdr + 12);
    if (n == 0 || n > INT32_MAX) {
        snprintf(err, errlen, "%s: bad image count %u", ipath, n);
        rc = UMDQ_EFORMAT;
        goto fail;
    }
    if (rows < 1 || cols < 1 || rows > UMD_DATA_MAX_SIDE || cols > UMD_DATA_MAX_SIDE) {
        snprintf(err, errlen, "%s: bad image size %ux%u (each side must be 1 to %d)", ipath, rows,
                 cols, UMD_DATA_MAX_SIDE);
        rc = UMDQ_EFORMAT;
        goto fail;
    }
    npix = (uint64_t)n * rows * cols;
    s->pixels = malloc(npix);
    if (!s->pixels) {
        snprintf(err, errlen, "%s: out of memory for %llu bytes of pixels", ipath, (unsigned long long)npix);
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    rc = read_up_to(fi, ipath, s->pixels, npix, &got, err, errlen);
    if (rc == UMDQ_EFORMAT)
        snprintf(err, errlen, "%s: truncated: expected %llu bytes of pixels, got %llu", ipath,
                 (unsigned long long)npix, (unsigned long long)got);
    if (rc) goto fail;
    if ((rc = expect_end(fi, ipath, "images", err, errlen)) != 0) goto fail;

    /* labels: magic, n, then n bytes */
    if ((rc = open_gz(lpath, &fl, err, errlen)) != 0) goto fail;
    rc = read_up_to(fl, lpath, hdr, 8, &got, err, errlen);
    if (rc == UMDQ_EFORMAT && got >= 4 && be32(hdr) != IDX_LABELS_MAGIC) rc = 0;
    if (rc == UMDQ_EFORMAT) {
        snprintf(err, errlen, "%s: truncated: expected an 8-byte header, got %llu bytes", lpath,
                 (unsigned long long)got);
        goto fail;
    }
    if (rc) goto fail;
    if (be32(hdr) != IDX_LABELS_MAGIC) {
        snprintf(err, errlen, "%s: wrong magic 0x%08x (an IDX label file starts with 0x%08x)%s", lpath,
                 be32(hdr), IDX_LABELS_MAGIC, be32(hdr) == IDX_IMAGES_MAGIC ? ": this is an image file" : "");
        rc = UMDQ_EFORMAT;
        goto fail;
    }
    if (be32(hdr + 4) != n) {
        snprintf(err, errlen, "%s: holds %u labels but %s holds %u images", lpath, be32(hdr + 4),
                 ipath, n);
        rc = UMDQ_EFORMAT;
        goto fail;
    }
    s->labels = malloc((size_t)n * sizeof *s->labels);
    if (!s->labels) {
        snprintf(err, errlen, "%s: out of memory", lpath);
        rc = UMDQ_ENOMEM;
        goto fail;
    }
    /* the bytes land in the upper half of the array, then widen from the front (entry i is
     * written at bytes 2i..2i+1 after byte n+i was read: never before it is read) */
    uint8_t *bytes = (uint8_t *)s->labels + n;
    rc = read_up_to(fl, lpath, bytes, n, &got, err, errlen);
    if (rc == 0)
        for (uint32_t i = 0; i < n; i++) s->labels[i] = bytes[i];
    if (rc == UMDQ_EFORMAT)
        snprintf(err, errlen, "%s: truncated: expected %u bytes of labels, got %llu", lpath, n,
                 (unsigned long long)got);
    if (rc) goto fail;
    if ((rc = expect_end(fl, lpath, "labels", err, errlen)) != 0) goto fail;
    for (uint32_t i = 0; i < n; i++)
        if (s->labels[i] >= 10) {
            snprintf(err, errlen, "%s: label %u of image %u is out of range (0-9)", lpath,
                     s->labels[i], i);
            rc = UMDQ_EFORMAT;
            goto fail;
        }
    gzclose(fi);
    gzclose(fl);
    s->n = n;
    s->h = (int)rows;
    s->w = (int)cols;
    s->c = 1;
    s->classes = 10;
    return 0;
fail:
    if (fi) gzclose(fi);
    if (fl) gzclose(fl);
    umd_split_free(s);
    return rc;
}

/* ---- CIFAR-10 binary ---------------------------------------------------------------------------- */

/* Append the records of one batch file to s. Each record: label byte, then 3072 pixel bytes
 * already in (3, 32, 32) planar order. */
static int cifar_append(const char *path, umd_split *s, char *err, size_t errlen) {
    uint8_t *data = NULL;
    uint64_t len;
    int rc = read_whole(path, &data, &len, err, errlen);
    if (rc) return rc;
    if (len == 0) {
        snprintf(err, errlen, "%s: empty", path);
        rc = UMDQ_EFORMAT;
        goto fail;
    }
    if (len % CIFAR_RECORD) {
        snprintf(err, errlen, "%s: truncated: %llu bytes is not a whole number of %d-byte records "
                 "(the last record has %llu bytes)", path, (unsigned long long)len, CIFAR_RECORD,
                 (unsigned long long)(len % CIFAR_RECORD));
        rc = UMDQ_EFORMAT;
        goto fail;
    }
    uint64_t m = len / CIFAR_RECORD, img = CIFAR_RECORD - 1;
    for (uint64_t i = 0; i < m; i++)
        if (data[i * CIFAR_RECORD] >= 10) {
            snprintf(err, errlen, "%s: label %u of record %llu is out of range (0-9)", path,
                     data[i * CIFAR_RECORD], (unsigned long long)i);
            rc = UMDQ_EFORMAT;
            goto fail;
        }
    uint64_t n = (uint64_t)s->n + m;
    uint8_t *px = realloc(s->pixels, n * img);
    uint16_t *lb;
    if (!px) goto oom;
    s->pixels = px;
    lb = realloc(s->labels, n * sizeof *lb);
    if (!lb) goto oom;
    s->labels = lb;
    for (uint64_t i = 0; i < m; i++) {
        s->labels[s->n + i] = data[i * CIFAR_RECORD];
        memcpy(s->pixels + (s->n + i) * img, data + i * CIFAR_RECORD + 1, img);
    }
    s->n = (int64_t)n;
    free(data);
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory", path);
    rc = UMDQ_ENOMEM;
fail:
    free(data);
    return rc;
}

/* The train split reads data_batch_1..5 in order and stops once it holds limit images (limit 0 =
 * all); the test split reads test_batch. dir may hold the files or a cifar-10-batches-bin/ with
 * them (the layout of the published archive). */
static int cifar_load(const char *dir, int train, int64_t limit, umd_split *s, char *err, size_t errlen) {
    char base[1100], path[1200], name[32];
    int rc = 0;
    snprintf(base, sizeof base, "%s", dir);
    if (find_file(base, "test_batch.bin", path, sizeof path, err, errlen) != 0) {
        char sub[1100];
        snprintf(sub, sizeof sub, "%s/cifar-10-batches-bin", dir);
        if (find_file(sub, "test_batch.bin", path, sizeof path, err, errlen) == 0)
            snprintf(base, sizeof base, "%s", sub);
    }
    int nfiles = train ? 5 : 1;
    for (int i = 0; i < nfiles; i++) {
        if (train) snprintf(name, sizeof name, "data_batch_%d.bin", i + 1);
        else snprintf(name, sizeof name, "test_batch.bin");
        if ((rc = find_file(base, name, path, sizeof path, err, errlen)) != 0) goto fail;
        if ((rc = cifar_append(path, s, err, errlen)) != 0) goto fail;
        if (limit > 0 && s->n >= limit) break;
    }
    s->h = s->w = CIFAR_SIDE;
    s->c = 3;
    s->classes = 10;
    return 0;
fail:
    umd_split_free(s);
    return rc;
}

/* ---- ImageNet 64x64 (.npz) ------------------------------------------------------------------ */

/* The downsampled ImageNet of Chrabaszcz et al. (2017): train_data_batch_1..10.npz and
 * val_data.npz, each a zip (np.savez: entries stored; np.savez_compressed: deflated; either may
 * carry zip64 extra fields) of data.npy, uint8 (N, 12288) = per image the R, G and B planes of
 * 64x64 row-major (already the split's (3, 64, 64) order), and labels.npy, N integers 1..1000
 * (stored as 0..999). The zip is read through its central directory from a read-only mapping;
 * each entry is inflated straight into the split, and its CRC-32 is checked. */

#define IN64_SIDE 64
#define IN64_ROW (3 * IN64_SIDE * IN64_SIDE)
#define IN64_CLASSES 1000
#define IN64_TRAIN_FILES 10
#define ZIP_EOCD_SIG 0x06054b50u
#define ZIP64_LOCATOR_SIG 0x07064b50u
#define ZIP64_EOCD_SIG 0x06064b50u
#define ZIP_CENTRAL_SIG 0x02014b50u
#define ZIP_LOCAL_SIG 0x04034b50u
#define NPY_MAX_HEADER 65536
#define ZCHUNK (1u << 30) /* zlib counts in unsigned int */

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return (uint32_t)le16(p) | (uint32_t)le16(p + 2) << 16; }
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

typedef struct {
    const char *path;    /* borrowed: for messages */
    const uint8_t *base; /* the mapped file, (len) bytes */
    uint64_t len;
} zip_file;

typedef struct {
    int method;          /* 0 stored, 8 deflated */
    uint32_t crc;
    uint64_t csize, usize;
    uint64_t data;       /* offset of the entry's (compressed) bytes in the file */
} zip_entry;

/* The entry called name, from the central directory. 0, UMDQ_ENOTFOUND or UMDQ_EFORMAT with a
 * message naming the file. */
static int zip_find(const zip_file *z, const char *name, zip_entry *e, char *err, size_t errlen) {
    const uint8_t *b = z->base;
    const uint64_t len = z->len;
    uint64_t eocd = UINT64_MAX;
    for (uint64_t back = 22; back <= len && back <= 22 + 65535; back++)
        if (le32(b + len - back) == ZIP_EOCD_SIG) {
            eocd = len - back;
            break;
        }
    if (eocd == UINT64_MAX) {
        snprintf(err, errlen, "%s: not a zip (.npz) file, or truncated: no end-of-directory "
                 "record", z->path);
        return UMDQ_EFORMAT;
    }
    uint64_t count = le16(b + eocd + 10), cd_size = le32(b + eocd + 12), cd = le32(b + eocd + 16);
    if ((count == 0xffff || cd_size == 0xffffffffu || cd == 0xffffffffu) && eocd >= 20 &&
        le32(b + eocd - 20) == ZIP64_LOCATOR_SIG) {
        uint64_t e64 = le64(b + eocd - 20 + 8);
        if (e64 > len || len - e64 < 56 || le32(b + e64) != ZIP64_EOCD_SIG) {
            snprintf(err, errlen, "%s: damaged zip64 end-of-directory record", z->path);
            return UMDQ_EFORMAT;
        }
        count = le64(b + e64 + 32);
        cd_size = le64(b + e64 + 40);
        cd = le64(b + e64 + 48);
    }
    if (cd > len || cd_size > len - cd) {
        snprintf(err, errlen, "%s: truncated: the zip directory lies past the end of the file",
                 z->path);
        return UMDQ_EFORMAT;
    }
    const size_t want = strlen(name);
    uint64_t p = cd;
    for (uint64_t i = 0; i < count; i++) {
        if (cd + cd_size - p < 46 || le32(b + p) != ZIP_CENTRAL_SIG) {
            snprintf(err, errlen, "%s: damaged zip directory (entry %llu)", z->path,
                     (unsigned long long)i);
            return UMDQ_EFORMAT;
        }
        const uint16_t flags = le16(b + p + 8), nlen = le16(b + p + 28), xlen = le16(b + p + 30),
                       clen = le16(b + p + 32);
        if (cd + cd_size - p < 46ull + nlen + xlen + clen) {
            snprintf(err, errlen, "%s: damaged zip directory (entry %llu)", z->path,
                     (unsigned long long)i);
            return UMDQ_EFORMAT;
        }
        if (nlen != want || memcmp(b + p + 46, name, want) != 0) {
            p += 46ull + nlen + xlen + clen;
            continue;
        }
        e->method = le16(b + p + 10);
        e->crc = le32(b + p + 16);
        e->csize = le32(b + p + 20);
        e->usize = le32(b + p + 24);
        uint64_t local = le32(b + p + 42);
        /* zip64 extra field: the 64-bit values of those that read 0xffffffff, in this order */
        for (uint64_t x = p + 46 + nlen; x + 4 <= p + 46ull + nlen + xlen;) {
            uint16_t id = le16(b + x), sz = le16(b + x + 2);
            uint64_t q = x + 4, end = x + 4 + sz;
            if (end > p + 46ull + nlen + xlen) break;
            if (id == 1) {
                if (e->usize == 0xffffffffu && q + 8 <= end) e->usize = le64(b + q), q += 8;
                if (e->csize == 0xffffffffu && q + 8 <= end) e->csize = le64(b + q), q += 8;
                if (local == 0xffffffffu && q + 8 <= end) local = le64(b + q);
            }
            x = end;
        }
        if (flags & 1) {
            snprintf(err, errlen, "%s: %s is encrypted", z->path, name);
            return UMDQ_EFORMAT;
        }
        if (e->method != 0 && e->method != 8) {
            snprintf(err, errlen, "%s: %s uses zip compression method %d (want stored or "
                     "deflated)", z->path, name, e->method);
            return UMDQ_EFORMAT;
        }
        if (local > len || len - local < 30 || le32(b + local) != ZIP_LOCAL_SIG) {
            snprintf(err, errlen, "%s: damaged or truncated zip: no local header for %s", z->path,
                     name);
            return UMDQ_EFORMAT;
        }
        e->data = local + 30 + le16(b + local + 26) + le16(b + local + 28);
        if (e->data > len || e->csize > len - e->data) {
            snprintf(err, errlen, "%s: truncated: %s needs %llu bytes at offset %llu, the file "
                     "has %llu", z->path, name, (unsigned long long)e->csize,
                     (unsigned long long)e->data, (unsigned long long)len);
            return UMDQ_EFORMAT;
        }
        if (e->method == 0 && e->csize != e->usize) {
            snprintf(err, errlen, "%s: damaged zip: stored entry %s has %llu bytes but declares "
                     "%llu", z->path, name, (unsigned long long)e->csize,
                     (unsigned long long)e->usize);
            return UMDQ_EFORMAT;
        }
        return 0;
    }
    snprintf(err, errlen, "%s: no %s in the archive (want data.npy and labels.npy)", z->path, name);
    return UMDQ_ENOTFOUND;
}

/* Sequential reads of one entry's uncompressed bytes. */
typedef struct {
    const zip_file *z;
    zip_entry e;
    const char *name;    /* static */
    z_stream s;
    int inflating;
    uint64_t in, out;    /* compressed bytes consumed, uncompressed bytes produced */
    uint32_t crc;
} zip_reader;

static int zip_open_entry(zip_reader *r, const zip_file *z, const char *name, char *err,
                          size_t errlen) {
    memset(r, 0, sizeof *r);
    r->z = z;
    r->name = name;
    int rc = zip_find(z, name, &r->e, err, errlen);
    if (rc) return rc;
    r->crc = (uint32_t)crc32(0L, Z_NULL, 0);
    if (r->e.method == 8) {
        if (inflateInit2(&r->s, -MAX_WBITS) != Z_OK) {
            snprintf(err, errlen, "%s: %s: cannot start zlib", z->path, name);
            return UMDQ_ENOMEM;
        }
        r->inflating = 1;
    }
    return 0;
}

static void zip_close_entry(zip_reader *r) {
    if (r->inflating) inflateEnd(&r->s);
    r->inflating = 0;
}

/* The next n uncompressed bytes into dst. */
static int zip_read(zip_reader *r, void *dst, uint64_t n, char *err, size_t errlen) {
    const char *path = r->z->path;
    if (n > r->e.usize - r->out) {
        snprintf(err, errlen, "%s: %s ends after %llu bytes, %llu more expected", path, r->name,
                 (unsigned long long)r->e.usize, (unsigned long long)(n - (r->e.usize - r->out)));
        return UMDQ_EFORMAT;
    }
    uint8_t *d = dst;
    if (r->e.method == 0) {
        memcpy(d, r->z->base + r->e.data + r->out, n);
    } else {
        uint64_t done = 0;
        while (done < n) {
            uint64_t chunk = n - done < ZCHUNK ? n - done : ZCHUNK;
            r->s.next_out = d + done;
            r->s.avail_out = (uInt)chunk;
            while (r->s.avail_out > 0) {
                if (r->s.avail_in == 0 && r->in < r->e.csize) {
                    uint64_t k = r->e.csize - r->in < ZCHUNK ? r->e.csize - r->in : ZCHUNK;
                    r->s.next_in = (Bytef *)(uintptr_t)(r->z->base + r->e.data + r->in);
                    r->s.avail_in = (uInt)k;
                    r->in += k;
                }
                int zr = inflate(&r->s, Z_NO_FLUSH);
                if (zr == Z_STREAM_END && r->s.avail_out > 0) {
                    snprintf(err, errlen, "%s: %s: the compressed data ends early (corrupt file)",
                             path, r->name);
                    return UMDQ_EFORMAT;
                }
                if (zr == Z_DATA_ERROR || zr == Z_NEED_DICT) {
                    snprintf(err, errlen, "%s: %s: damaged deflate data (corrupt file): %s", path,
                             r->name, r->s.msg ? r->s.msg : "invalid data");
                    return UMDQ_EFORMAT;
                }
                if (zr == Z_MEM_ERROR) {
                    snprintf(err, errlen, "%s: %s: out of memory inflating", path, r->name);
                    return UMDQ_ENOMEM;
                }
                if (zr == Z_BUF_ERROR && r->s.avail_in == 0 && r->in >= r->e.csize) {
                    snprintf(err, errlen, "%s: %s: truncated compressed data", path, r->name);
                    return UMDQ_EFORMAT;
                }
            }
            done += chunk;
        }
    }
    for (uint64_t o = 0; o < n; o += ZCHUNK)
        r->crc = (uint32_t)crc32(r->crc, d + o, (uInt)(n - o < ZCHUNK ? n - o : ZCHUNK));
    r->out += n;
    return 0;
}

/* After the whole entry was read: nothing left over, and the CRC-32 the directory declares. */
static int zip_check_end(const zip_reader *r, char *err, size_t errlen) {
    if (r->out != r->e.usize) {
        snprintf(err, errlen, "%s: %s holds %llu bytes more than its .npy header declares",
                 r->z->path, r->name, (unsigned long long)(r->e.usize - r->out));
        return UMDQ_EFORMAT;
    }
    if (r->crc != r->e.crc) {
        snprintf(err, errlen, "%s: %s: CRC-32 mismatch (corrupt file)", r->z->path, r->name);
        return UMDQ_EFORMAT;
    }
    return 0;
}

typedef struct {
    char kind;           /* 'u' or 'i' */
    int size;            /* bytes per item */
    int dims;
    int64_t shape[4];
} npy_header;

/* The .npy header at the start of the entry: magic, version 1-3, and the dict's descr (a
 * little-endian or byte-sized integer), fortran_order False (or a 1-D array) and shape. */
static int npy_read_header(zip_reader *r, npy_header *h, char *err, size_t errlen) {
    const char *path = r->z->path, *name = r->name;
    uint8_t pre[12];
    char text[NPY_MAX_HEADER + 1];
    int rc = zip_read(r, pre, 10, err, errlen);
    if (rc) return rc;
    if (memcmp(pre, "\x93NUMPY", 6) != 0 || pre[6] < 1 || pre[6] > 3) {
        snprintf(err, errlen, "%s: %s is not a .npy array (version 1-3)", path, name);
        return UMDQ_EFORMAT;
    }
    uint64_t hlen = le16(pre + 8);
    if (pre[6] >= 2) {
        if ((rc = zip_read(r, pre + 10, 2, err, errlen))) return rc;
        hlen = le32(pre + 8);
    }
    if (hlen > NPY_MAX_HEADER) {
        snprintf(err, errlen, "%s: %s: .npy header of %llu bytes is too long", path, name,
                 (unsigned long long)hlen);
        return UMDQ_EFORMAT;
    }
    if ((rc = zip_read(r, text, hlen, err, errlen))) return rc;
    text[hlen] = 0;
    const char *d = strstr(text, "'descr':"), *f = strstr(text, "'fortran_order':"),
               *s = strstr(text, "'shape':");
    if (!d || !f || !s) {
        snprintf(err, errlen, "%s: %s: .npy header without descr, fortran_order and shape", path,
                 name);
        return UMDQ_EFORMAT;
    }
    d = strchr(d + 8, '\'');
    if (!d || !(d[1] == '|' || d[1] == '<') || (d[2] != 'u' && d[2] != 'i') || d[3] < '1' ||
        d[3] > '8' || d[4] != '\'') {
        snprintf(err, errlen, "%s: %s: element type %.12s is not a little-endian integer", path,
                 name, d ? d : "?");
        return UMDQ_EFORMAT;
    }
    h->kind = d[2];
    h->size = d[3] - '0';
    if (h->size != 1 && h->size != 2 && h->size != 4 && h->size != 8) {
        snprintf(err, errlen, "%s: %s: element size %d", path, name, h->size);
        return UMDQ_EFORMAT;
    }
    s = strchr(s, '(');
    h->dims = 0;
    while (s && *s && *s != ')') {
        s++;
        while (*s == ' ') s++;
        if (*s == ')') break;
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 0 || h->dims == 4) {
            snprintf(err, errlen, "%s: %s: cannot read the shape in its .npy header", path, name);
            return UMDQ_EFORMAT;
        }
        h->shape[h->dims++] = v;
        s = end;
        while (*s == ' ') s++;
        if (*s != ',' && *s != ')') {
            snprintf(err, errlen, "%s: %s: cannot read the shape in its .npy header", path, name);
            return UMDQ_EFORMAT;
        }
    }
    if (!s || h->dims == 0) {
        snprintf(err, errlen, "%s: %s: cannot read the shape in its .npy header", path, name);
        return UMDQ_EFORMAT;
    }
    if (strncmp(f + 16, " True", 5) == 0 && h->dims > 1) {
        snprintf(err, errlen, "%s: %s is in Fortran order (want C order)", path, name);
        return UMDQ_EFORMAT;
    }
    return 0;
}

/* Append the images of one .npz file to s, at most max_add of them (0 = all). */
static int in64_append(const char *path, umd_split *s, int64_t max_add, char *err, size_t errlen) {
    zip_file z = {path, NULL, 0};
    zip_reader lr, dr;
    uint8_t *lab = NULL; /* owned: the labels' raw items */
    int rc, fd = -1;
    memset(&lr, 0, sizeof lr);
    memset(&dr, 0, sizeof dr);
    struct stat st;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        const int e = errno;
        rc = e == ENOENT ? UMDQ_ENOTFOUND : UMDQ_EIO;
        if (e == ENOENT)
            snprintf(err, errlen, "%s: not found (data.path of imagenet64 holds "
                     "train_data_batch_1.npz .. train_data_batch_10.npz and val_data.npz)", path);
        else
            snprintf(err, errlen, "%s: %s", path, strerror(e));
        goto fail;
    }
    z.len = (uint64_t)st.st_size;
    if (z.len < 22) {
        snprintf(err, errlen, "%s: truncated: %llu bytes is no zip (.npz) file", path,
                 (unsigned long long)z.len);
        rc = UMDQ_EFORMAT;
        goto fail;
    }
    void *map = mmap(NULL, (size_t)z.len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
        rc = UMDQ_EIO;
        goto fail;
    }
    z.base = map;

    /* labels */
    npy_header lh, dh;
    if ((rc = zip_open_entry(&lr, &z, "labels.npy", err, errlen))) goto fail;
    if ((rc = npy_read_header(&lr, &lh, err, errlen))) goto fail;
    if (lh.dims > 2 || (lh.dims == 2 && lh.shape[1] != 1)) {
        snprintf(err, errlen, "%s: labels.npy has %d dimensions (want (N,))", path, lh.dims);
        rc = UMDQ_EFORMAT;
        goto fail;
    }
    const int64_t n = lh.shape[0];
    lab = malloc(n > 0 ? (size_t)n * lh.size : 1);
    if (!lab) goto oom;
    if ((rc = zip_read(&lr, lab, (uint64_t)n * lh.size, err, errlen))) goto fail;
    if ((rc = zip_check_end(&lr, err, errlen))) goto fail;

    /* data */
    if ((rc = zip_open_entry(&dr, &z, "data.npy", err, errlen))) goto fail;
    if ((rc = npy_read_header(&dr, &dh, err, errlen))) goto fail;
    int64_t row = 1;
    for (int i = 1; i < dh.dims; i++) row *= dh.shape[i];
    if (dh.kind != 'u' || dh.size != 1 || dh.dims < 2 || row != IN64_ROW) {
        snprintf(err, errlen, "%s: data.npy must be uint8 (N, %d) (3 planes of %dx%d), got %s%d "
                 "with %lld values per image", path, IN64_ROW, IN64_SIDE, IN64_SIDE,
                 dh.kind == 'u' ? "uint" : "int", dh.size * 8, (long long)row);
        rc = UMDQ_EFORMAT;
        goto fail;
    }
    if (dh.shape[0] != n) {
        snprintf(err, errlen, "%s: data.npy holds %lld images but labels.npy %lld labels", path,
                 (long long)dh.shape[0], (long long)n);
        rc = UMDQ_EFORMAT;
        goto fail;
    }
    const int64_t take = max_add > 0 && max_add < n ? max_add : n;
    uint16_t *lb = realloc(s->labels, (size_t)(s->n + take) * sizeof *lb);
    if (!lb) goto oom;
    s->labels = lb;
    uint8_t *px = realloc(s->pixels, (size_t)(s->n + take) * IN64_ROW);
    if (!px) goto oom;
    s->pixels = px;
    for (int64_t i = 0; i < take; i++) {
        const uint8_t *q = lab + (size_t)i * lh.size;
        uint64_t u = lh.size == 1 ? q[0] : lh.size == 2 ? le16(q) : lh.size == 4 ? le32(q) : le64(q);
        int64_t v = (int64_t)u;
        if (lh.kind == 'i') /* sign-extend */
            v = lh.size == 8 ? (int64_t)u : (int64_t)(u ^ (1ull << (8 * lh.size - 1))) -
                                                (int64_t)(1ull << (8 * lh.size - 1));
        if (v < 1 || v > IN64_CLASSES) {
            snprintf(err, errlen, "%s: label %lld of image %lld is out of range (1-%d)", path,
                     (long long)v, (long long)i, IN64_CLASSES);
            rc = UMDQ_EFORMAT;
            goto fail;
        }
        s->labels[s->n + i] = (uint16_t)(v - 1);
    }
    rc = zip_read(&dr, s->pixels + (size_t)s->n * IN64_ROW, (uint64_t)take * IN64_ROW, err, errlen);
    if (rc == 0 && take == n) rc = zip_check_end(&dr, err, errlen); /* a partial read: no CRC */
    if (rc) goto fail;
    s->n += take;
    s->h = s->w = IN64_SIDE;
    s->c = 3;
    s->classes = IN64_CLASSES;
    rc = 0;
    goto fail;
oom:
    snprintf(err, errlen, "%s: out of memory", path);
    rc = UMDQ_ENOMEM;
fail:
    zip_close_entry(&lr);
    zip_close_entry(&dr);
    free(lab);
    if (z.base) munmap((void *)(uintptr_t)z.base, (size_t)z.len);
    if (fd >= 0) close(fd);
    return rc;
}

/* The train split reads train_data_batch_1..10.npz in order until it holds limit images (0 =
 * all); the test split reads val_data.npz. */
static int in64_load(const char *dir, int train, int64_t limit, umd_split *s, char *err,
                     size_t errlen) {
    char path[1200];
    int rc = 0;
    int nfiles = train ? IN64_TRAIN_FILES : 1;
    for (int i = 0; i < nfiles; i++) {
        if (train) snprintf(path, sizeof path, "%s/train_data_batch_%d.npz", dir, i + 1);
        else snprintf(path, sizeof path, "%s/val_data.npz", dir);
        if ((rc = in64_append(path, s, limit > 0 ? limit - s->n : 0, err, errlen)) != 0) goto fail;
        if (limit > 0 && s->n >= limit) break;
    }
    return 0;
fail:
    umd_split_free(s);
    return rc;
}

/* ---- synthetic ---------------------------------------------------------------------------------- */

static double frac(double x) { return x - floor(x); }

/* n images of S x S x C, K classes, image i of class i % K. Class k is a Gaussian blob at a
 * class-specific place plus an oriented sinusoidal grating of class-specific orientation,
 * frequency and phase, tinted per channel by class; each image shifts the pattern by up to S/10,
 * scales its contrast (0.7-1), jitters the grating phase and blob size, adds a brightness offset
 * and per-pixel noise of up to +-0.12 (in [-1, 1] units). Both parts are separable in x and y, so
 * an image costs O(S*S*C) multiply-adds. Draws: Philox(seed, PHILOX_DATA, step,
 * index 2i, 2i+1) for the image's variation, step + 2 for its noise bytes. */
static int synthetic_make(uint64_t seed, uint32_t step, int64_t n, int S, int C, int K, umd_split *s,
                          char *err, size_t errlen) {
    if (S < 1 || S > UMD_DATA_MAX_SIDE || C < 1 || C > 3 || K < 2 || K > 256 || n < 1) {
        snprintf(err, errlen, "synthetic data: data.image_size %d (1-%d), data.channels %d (1-3), "
                 "data.classes %d (2-256: labels are bytes), size %lld (>= 1): out of range", S,
                 UMD_DATA_MAX_SIDE, C, K, (long long)n);
        return UMDQ_EINVAL;
    }
    uint64_t img = (uint64_t)S * S * C;
    s->pixels = malloc((size_t)(img * (uint64_t)n));
    s->labels = malloc((size_t)n * sizeof *s->labels);
    if (!s->pixels || !s->labels) {
        umd_split_free(s);
        snprintf(err, errlen, "synthetic data: out of memory");
        return UMDQ_ENOMEM;
    }
    const double two_pi = 6.283185307179586;
    uint64_t noise_draws = (img + 15) / 16;
    float gx_s[UMD_DATA_MAX_SIDE], gx_c[UMD_DATA_MAX_SIDE], gy_s[UMD_DATA_MAX_SIDE];
    float gy_c[UMD_DATA_MAX_SIDE], bx[UMD_DATA_MAX_SIDE], by[UMD_DATA_MAX_SIDE];
    for (int64_t i = 0; i < n; i++) {
        int k = (int)(i % K);
        philox4 r0 = philox_draw(seed, PHILOX_DATA, step, 2 * (uint64_t)i);
        philox4 r1 = philox_draw(seed, PHILOX_DATA, step, 2 * (uint64_t)i + 1);
        double shift_x = (philox_unit(r0.v[0]) - 0.5) * 0.2 * S;
        double shift_y = (philox_unit(r0.v[1]) - 0.5) * 0.2 * S;
        double amp = 0.7 + 0.3 * philox_unit(r0.v[2]);
        double phase_jit = (philox_unit(r0.v[3]) - 0.5) * 1.2;
        double size = 0.85 + 0.3 * philox_unit(r1.v[0]);
        double bright = (philox_unit(r1.v[1]) - 0.5) * 0.2;
        /* class k: blob on one of two rings, grating by golden-ratio spread orientation */
        double alpha = two_pi * k / K;
        double radius = S * (k % 2 ? 0.3 : 0.2);
        double cx = 0.5 * S + radius * cos(alpha) + shift_x, cy = 0.5 * S + radius * sin(alpha) + shift_y;
        double sigma = 0.16 * S * size;
        double theta = 3.141592653589793 * frac(k * 0.6180339887498949);
        double freq = 1.5 + 0.75 * (k % 4); /* cycles per image side */
        double phase = two_pi * frac(k * 0.41421356237) + phase_jit;
        double a = two_pi * freq * cos(theta) / S, b = two_pi * freq * sin(theta) / S;
        for (int t = 0; t < S; t++) {
            double x = t + 0.5 - shift_x, y = t + 0.5 - shift_y;
            gx_s[t] = (float)sin(a * x);
            gx_c[t] = (float)cos(a * x);
            gy_s[t] = (float)sin(b * y + phase);
            gy_c[t] = (float)cos(b * y + phase);
            double dx = t + 0.5 - cx, dy = t + 0.5 - cy;
            bx[t] = (float)exp(-dx * dx / (2 * sigma * sigma));
            by[t] = (float)exp(-dy * dy / (2 * sigma * sigma));
        }
        uint8_t *out = s->pixels + (uint64_t)i * img;
        uint64_t q = 0; /* noise byte counter */
        philox4 nz = {{0, 0, 0, 0}};
        for (int c = 0; c < C; c++) {
            float tint = C == 1 ? 1.0f : (float)(0.55 + 0.45 * cos(two_pi * ((double)k / K + c / 3.0)));
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++, q++) {
                    if (q % 16 == 0)
                        nz = philox_draw(seed, PHILOX_DATA, step + 2,
                                         (uint64_t)i * noise_draws + q / 16);
                    uint32_t word = nz.v[(q % 16) / 4];
                    float noise = ((float)((word >> (8 * (q % 4))) & 0xff) / 255.0f - 0.5f) * 0.24f;
                    float blob = bx[x] * by[y];
                    float grat = gx_s[x] * gy_c[y] + gx_c[x] * gy_s[y]; /* sin(a x + b y + phase) */
                    float v = (float)amp * tint * (-0.8f + 1.3f * blob + 0.45f * grat) +
                              (float)bright + noise;
                    v = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
                    out[((size_t)c * S + y) * S + x] = (uint8_t)lrintf((v + 1.0f) * 127.5f);
                }
        }
        s->labels[i] = (uint8_t)k;
    }
    s->n = n;
    s->h = s->w = S;
    s->c = C;
    s->classes = K;
    return 0;
}

/* ---- loading ------------------------------------------------------------------------------------ */

void umd_split_free(umd_split *s) {
    if (!s) return;
    free(s->pixels);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

/* Keep the first limit images of s (limit 0 or >= n: all). */
static void split_limit(umd_split *s, int64_t limit) {
    if (limit <= 0 || limit >= s->n) return;
    size_t img = (size_t)s->c * s->h * s->w;
    uint8_t *p = realloc(s->pixels, (size_t)limit * img);
    if (p) s->pixels = p; /* shrinking cannot fail for want of memory; keep the old block if it does */
    uint16_t *l = realloc(s->labels, (size_t)limit * sizeof *l);
    if (l) s->labels = l;
    s->n = limit;
}

int umd_data_load(const umd_config *cfg, umd_split *train, umd_split *test, char *err, size_t errlen) {
    umd_split tr, te;
    const char *dir = cfg->data_path;
    int rc = 0;
    memset(&tr, 0, sizeof tr);
    memset(&te, 0, sizeof te);
    if (train) memset(train, 0, sizeof *train);
    if (test) memset(test, 0, sizeof *test);
    switch (cfg->dataset) {
    case UMD_DATA_FASHION_MNIST:
    case UMD_DATA_MNIST:
        if (!dir[0]) {
            if (cfg->dataset == UMD_DATA_MNIST) {
                snprintf(err, errlen, "data.path: required for mnist (a directory with "
                         "train-images-idx3-ubyte.gz and the other three IDX files)");
                return UMDQ_EINVAL;
            }
            dir = DEFAULT_FASHION_MNIST;
        }
        if (train && (rc = idx_load(dir, "train", &tr, err, errlen)) != 0) goto fail;
        if (test && (rc = idx_load(dir, "t10k", &te, err, errlen)) != 0) goto fail;
        break;
    case UMD_DATA_CIFAR10:
        if (!dir[0]) {
            snprintf(err, errlen, "data.path: required for cifar10 (a directory with "
                     "data_batch_1.bin .. data_batch_5.bin and test_batch.bin)");
            return UMDQ_EINVAL;
        }
        if (train && (rc = cifar_load(dir, 1, cfg->data_limit, &tr, err, errlen)) != 0) goto fail;
        if (test && (rc = cifar_load(dir, 0, 0, &te, err, errlen)) != 0) goto fail;
        break;
    case UMD_DATA_IMAGENET64:
        if (!dir[0]) {
            snprintf(err, errlen, "data.path: required for imagenet64 (a directory with "
                     "train_data_batch_1.npz .. train_data_batch_10.npz and val_data.npz)");
            return UMDQ_EINVAL;
        }
        if (train && (rc = in64_load(dir, 1, cfg->data_limit, &tr, err, errlen)) != 0) goto fail;
        if (test && (rc = in64_load(dir, 0, 0, &te, err, errlen)) != 0) goto fail;
        break;
    case UMD_DATA_SYNTHETIC:
        if (train && (rc = synthetic_make(cfg->seed, 0, cfg->syn_train, cfg->syn_size, cfg->syn_channels,
                                          cfg->syn_classes, &tr, err, errlen)) != 0)
            goto fail;
        if (test && (rc = synthetic_make(cfg->seed, 1, cfg->syn_test, cfg->syn_size, cfg->syn_channels,
                                         cfg->syn_classes, &te, err, errlen)) != 0)
            goto fail;
        break;
    default:
        snprintf(err, errlen, "data.dataset: unknown data set %d", (int)cfg->dataset);
        return UMDQ_EINVAL;
    }
    split_limit(&tr, cfg->data_limit);
    if (train) *train = tr;
    if (test) *test = te;
    return 0;
fail:
    if (rc == UMDQ_ENOTFOUND && cfg->dataset == UMD_DATA_FASHION_MNIST && !cfg->data_path[0]) {
        size_t len = strlen(err);
        snprintf(err + len, errlen > len ? errlen - len : 0,
                 " (install Debian's dataset-fashion-mnist or set data.path)");
    }
    umd_split_free(&tr);
    umd_split_free(&te);
    return rc;
}

/* ---- order ---------------------------------------------------------------------------------------- */

typedef struct {
    uint64_t n;
    int half_bits;                  /* each Feistel half has half_bits bits; 4^half_bits >= n */
    uint64_t half_mask;
    uint32_t keys[FEISTEL_ROUNDS];  /* round keys of this epoch */
} data_order;

static void order_init(data_order *o, uint64_t seed, int64_t epoch, uint64_t n) {
    o->n = n;
    o->half_bits = 1;
    while (o->half_bits < 32 && (1ull << (2 * o->half_bits)) < n) o->half_bits++;
    o->half_mask = (1ull << o->half_bits) - 1;
    philox4 k0 = philox_draw(seed, PHILOX_SHUFFLE, (uint32_t)epoch, 0);
    philox4 k1 = philox_draw(seed, PHILOX_SHUFFLE, (uint32_t)epoch, 1);
    for (int r = 0; r < FEISTEL_ROUNDS; r++) o->keys[r] = r < 4 ? k0.v[r] : k1.v[r - 4];
}

/* The round function: a 64-bit finaliser (splitmix64's) of the half and the round key. */
static uint64_t order_round(uint64_t half, uint32_t key, int r) {
    uint64_t z = half ^ ((uint64_t)key << 32 | (uint64_t)(uint32_t)r * 0x9E3779B9u);
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z;
}

/* Position -> image index: the Feistel permutation of [0, 4^half_bits), cycle-walked into [0, n). */
static uint64_t order_at(const data_order *o, uint64_t pos) {
    uint64_t x = pos;
    do {
        uint64_t left = x >> o->half_bits, right = x & o->half_mask;
        for (int r = 0; r < FEISTEL_ROUNDS; r++) {
            uint64_t t = left ^ (order_round(right, o->keys[r], r) & o->half_mask);
            left = right;
            right = t;
        }
        x = left << o->half_bits | right;
    } while (x >= o->n);
    return x;
}

/* ---- batches -------------------------------------------------------------------------------------- */

#ifdef _OPENMP
#define DATA_SIMD _Pragma("omp simd")
#else
#define DATA_SIMD
#endif

/* out = src / 127.5 - 1, exactly (a correctly rounded division, vectorised). */
static void image_scale(const uint8_t *src, size_t count, float *out) {
    DATA_SIMD
    for (size_t i = 0; i < count; i++) out[i] = (float)src[i] / 127.5f - 1.0f;
}

/* One augmented image: random resized crop, bilinear back to h x w, optional horizontal flip
 * (folded into the column table). Separable: for each output row the two source rows are
 * blended first (contiguous, vectorised), then the blended row is sampled at the output columns
 * (a gather from a row that stays in L1). */
static void image_augment(const uint8_t *src, int c, int h, int w, philox4 r, float *out) {
    int xi[UMD_DATA_MAX_SIDE], yi0[UMD_DATA_MAX_SIDE], yi1[UMD_DATA_MAX_SIDE];
    float xf[UMD_DATA_MAX_SIDE], yf[UMD_DATA_MAX_SIDE];
    float row[UMD_DATA_MAX_SIDE + 1]; /* two source rows blended, 0 .. 255, one spare at the end */
    const float log_lo = -0.28768207f, log_hi = 0.28768207f; /* log(3/4), log(4/3) */
    const float inv = 1.0f / 127.5f;
    float area = 0.8f + 0.2f * philox_unit(r.v[0]);
    float aspect = expf(log_lo + (log_hi - log_lo) * philox_unit(r.v[1]));
    /* crop sides as fractions of the image's; when one side would leave the image it is clamped
     * and the other keeps the area (the aspect then stays within 1/area <= 1.25) */
    float fw = sqrtf(area * aspect), fh = sqrtf(area / aspect);
    if (fw > 1.0f) { fw = 1.0f; fh = area; }
    if (fh > 1.0f) { fh = 1.0f; fw = area; }
    float cw = fw * (float)w, ch = fh * (float)h;
    float x0 = philox_unit(r.v[2]) * ((float)w - cw), y0 = philox_unit(r.v[3]) * ((float)h - ch);
    int flip = (int)(r.v[2] & 1u);
    /* output column o samples source x = x0 + (o + 0.5) cw / w - 0.5 (clamped): columns xi, xi+1
     * with weight xf on the second; row[w] repeats row[w-1] so xi+1 = w is safe */
    for (int o = 0; o < w; o++) {
        float sx = x0 + ((float)o + 0.5f) * cw / (float)w - 0.5f;
        if (sx < 0.0f) sx = 0.0f;
        if (sx > (float)(w - 1)) sx = (float)(w - 1);
        int i0 = (int)sx;
        int d = flip ? w - 1 - o : o;
        xi[d] = i0;
        xf[d] = sx - (float)i0;
    }
    for (int o = 0; o < h; o++) {
        float sy = y0 + ((float)o + 0.5f) * ch / (float)h - 0.5f;
        if (sy < 0.0f) sy = 0.0f;
        if (sy > (float)(h - 1)) sy = (float)(h - 1);
        int i0 = (int)sy;
        yi0[o] = i0;
        yi1[o] = i0 + 1 < h ? i0 + 1 : h - 1;
        yf[o] = sy - (float)i0;
    }
    for (int k = 0; k < c; k++) {
        const uint8_t *plane = src + (size_t)k * h * w;
        float *dst = out + (size_t)k * h * w;
        for (int y = 0; y < h; y++) {
            const uint8_t *r0 = plane + (size_t)yi0[y] * w, *r1 = plane + (size_t)yi1[y] * w;
            float fy = yf[y];
            DATA_SIMD
            for (int x = 0; x < w; x++) {
                float a = (float)r0[x], b = (float)r1[x];
                row[x] = a + (b - a) * fy;
            }
            row[w] = row[w - 1];
            float *o = dst + (size_t)y * w;
            DATA_SIMD
            for (int x = 0; x < w; x++) {
                float a = row[xi[x]], b = row[xi[x] + 1];
                float v = (a + (b - a) * xf[x]) * inv - 1.0f;
                o[x] = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
            }
        }
    }
}

/* Positions are handled in chunks: the chunk's image indices and Philox draws are computed in
 * order, then its images are produced in parallel (the result does not depend on threads). */
#define BATCH_CHUNK 256

void umd_data_next_batch(const umd_split *s, umd_cursor *cur, int B, int augment, float *x,
                         int32_t *labels) {
    if (!s || s->n <= 0 || B <= 0) return;
    uint64_t idx[BATCH_CHUNK];
    philox4 draws[BATCH_CHUNK];
    size_t img = (size_t)s->c * s->h * s->w;
    uint64_t n = (uint64_t)s->n;
    int64_t epoch = cur->epoch;
    uint64_t pos;
    if (cur->pos < 0) cur->pos = 0;
    epoch += (int64_t)((uint64_t)cur->pos / n); /* a cursor saved at the end of an epoch */
    pos = (uint64_t)cur->pos % n;
    data_order order;
    order_init(&order, cur->seed, epoch, n);
    for (int first = 0; first < B; first += BATCH_CHUNK) {
        int m = B - first < BATCH_CHUNK ? B - first : BATCH_CHUNK;
        for (int j = 0; j < m; j++) {
            idx[j] = order_at(&order, pos);
            if (augment) draws[j] = philox_draw(cur->seed, PHILOX_AUGMENT, (uint32_t)epoch, pos);
            if (labels) labels[first + j] = s->labels[idx[j]];
            if (++pos == n) {
                pos = 0;
                epoch++;
                order_init(&order, cur->seed, epoch, n);
            }
        }
        float *xc = x + (size_t)first * img;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((size_t)m * img >= (1u << 18))
#endif
        for (int j = 0; j < m; j++) {
            if (augment)
                image_augment(s->pixels + idx[j] * img, s->c, s->h, s->w, draws[j], xc + (size_t)j * img);
            else
                image_scale(s->pixels + idx[j] * img, img, xc + (size_t)j * img);
        }
    }
    cur->epoch = epoch;
    cur->pos = (int64_t)pos;
}

void umd_data_slice(const umd_split *s, int64_t first, int B, float *x, int32_t *labels) {
    if (!s || s->n <= 0 || B <= 0) return;
    size_t img = (size_t)s->c * s->h * s->w;
    int64_t i = first % s->n;
    if (i < 0) i += s->n;
    for (int b = 0; b < B; b++) {
        image_scale(s->pixels + (size_t)i * img, img, x + (size_t)b * img);
        if (labels) labels[b] = s->labels[i];
        if (++i == s->n) i = 0;
    }
}
