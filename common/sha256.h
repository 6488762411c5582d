/* sha256.h: SHA-256 (FIPS 180-4), used for config dedupe keys and artifact digests. */
#ifndef UMDQ_SHA256_H
#define UMDQ_SHA256_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t nbytes;
    unsigned char buf[64];
    size_t nbuf;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_final(sha256_ctx *c, unsigned char out[32]);
void sha256(const void *data, size_t len, unsigned char out[32]);
/* Lower-case hex digest into hex (65 bytes with the NUL). */
void sha256_hex(const void *data, size_t len, char hex[65]);
void sha256_to_hex(const unsigned char digest[32], char hex[65]);
/* The compression in use: "sha-ni" (x86 SHA extensions, picked when the CPU has them) or
 * "portable". sha256_use_portable(1) forces the portable one, (0) picks again; for tests and
 * benchmarks, not to be called while other threads hash. */
const char *sha256_implementation(void);
void sha256_use_portable(int on);

#endif
