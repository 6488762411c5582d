/* errlist.c: an ordered list of (key path, message) problems; exact repeats are kept once. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "errlist.h"
#include "util.h"

typedef struct {
    char *path;    /* owned */
    char *message; /* owned */
    unsigned hash; /* of path and message, to skip repeats quickly */
} errlist_item;

struct errlist {
    errlist_item *items; /* n entries, owned */
    int n, cap;
    int dropped;         /* problems not stored because the list was full */
};

#define ERRLIST_MAX 1000 /* a refused sweep never needs more to be understood */

errlist *errlist_new(void) {
    return calloc(1, sizeof(errlist));
}

void errlist_clear(errlist *e) {
    if (!e) return;
    for (int i = 0; i < e->n; i++) {
        free(e->items[i].path);
        free(e->items[i].message);
    }
    e->n = 0;
    e->dropped = 0;
}

void errlist_destroy(errlist **e) {
    if (!e || !*e) return;
    errlist_clear(*e);
    free((*e)->items);
    free(*e);
    *e = NULL;
}

static unsigned hash_str(unsigned h, const char *s) {
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

void errlist_add(errlist *e, const char *path, const char *fmt, ...) {
    if (!e) return;
    if (!path) path = "";
    char stackbuf[512];
    char *msg = stackbuf;
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(stackbuf, sizeof stackbuf, fmt, ap);
    va_end(ap);
    if (len < 0) return;
    if ((size_t)len >= sizeof stackbuf) {
        msg = malloc((size_t)len + 1);
        if (!msg) return;
        va_start(ap, fmt);
        vsnprintf(msg, (size_t)len + 1, fmt, ap);
        va_end(ap);
    }
    unsigned h = hash_str(hash_str(2166136261u, path) * 31u, msg);
    for (int i = 0; i < e->n; i++)
        if (e->items[i].hash == h && strcmp(e->items[i].path, path) == 0 &&
            strcmp(e->items[i].message, msg) == 0)
            goto done;
    if (e->n >= ERRLIST_MAX) {
        e->dropped++;
        goto done;
    }
    if (e->n == e->cap) {
        int cap = e->cap ? e->cap * 2 : 8;
        errlist_item *items = realloc(e->items, (size_t)cap * sizeof *items);
        if (!items) goto done;
        e->items = items;
        e->cap = cap;
    }
    errlist_item *it = &e->items[e->n];
    it->path = strdup(path);
    it->message = strdup(msg);
    it->hash = h;
    if (!it->path || !it->message) {
        free(it->path);
        free(it->message);
        goto done;
    }
    e->n++;
done:
    if (msg != stackbuf) free(msg);
}

int errlist_count(const errlist *e) {
    return e ? e->n : 0;
}

const char *errlist_path(const errlist *e, int i) {
    if (!e || i < 0 || i >= e->n) return NULL;
    return e->items[i].path;
}

const char *errlist_message(const errlist *e, int i) {
    if (!e || i < 0 || i >= e->n) return NULL;
    return e->items[i].message;
}

char *errlist_join(const errlist *e, const char *sep) {
    strbuf b;
    strbuf_init(&b);
    if (!sep) sep = "; ";
    for (int i = 0; e && i < e->n; i++) {
        if (i) strbuf_puts(&b, sep);
        if (e->items[i].path[0]) {
            strbuf_puts(&b, e->items[i].path);
            strbuf_puts(&b, ": ");
        }
        strbuf_puts(&b, e->items[i].message);
    }
    if (e && e->dropped) {
        if (e->n) strbuf_puts(&b, sep);
        strbuf_printf(&b, "(%d more problems not shown)", e->dropped);
    }
    return strbuf_steal(&b);
}

void errlist_format(const errlist *e, char *buf, size_t n) {
    if (!buf || n == 0) return;
    char *s = errlist_join(e, "; ");
    snprintf(buf, n, "%s", s ? s : "out of memory");
    free(s);
}
