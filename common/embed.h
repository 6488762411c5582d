/* embed.h: files compiled into a binary by scripts/embed.sh (schema migrations, web assets). */
#ifndef UMDQ_EMBED_H
#define UMDQ_EMBED_H
#include <stddef.h>

typedef struct {
    const char *name;          /* base name, e.g. "001_init.sql"; NULL ends a table */
    const unsigned char *data; /* the bytes, followed by one NUL (so text can be used as a string) */
    size_t len;                /* length without the trailing NUL */
} umdq_embedded_file;

#endif
