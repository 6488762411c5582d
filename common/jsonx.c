/* jsonx.c: canonical JSON text (the dedupe key of a job config), dotted key paths and a
 * length-bounded parser over cJSON. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "jsonx.h"
#include "umdq.h"

#define TWO53 9007199254740992.0

int json_canonical_number(double d, char *buf, size_t n) {
    if (!isfinite(d)) {
        if (n) buf[0] = 0;
        return UMDQ_EINVAL;
    }
    if (d == 0) d = 0; /* -0 -> 0 */
    if (d == floor(d) && fabs(d) < TWO53) {
        snprintf(buf, n, "%lld", (long long)d);
        return 0;
    }
    /* Every decimal of at most DBL_DIG (15) significant digits survives the trip through a
     * double, so when "%.15g" reads back, it is already the shortest form ("%g" drops trailing
     * zeros, and a non-integral value never switches notation between precisions 1 and 15);
     * otherwise 16 or 17 digits are needed. */
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d) break;
    }
    snprintf(buf, n, "%s", tmp);
    return 0;
}

static void put_string(strbuf *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    strbuf_append(b, "\"", 1);
    const char *run = s; /* start of bytes not yet copied */
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        strbuf_append(b, run, (size_t)(p - run));
        run = p + 1;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t len = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            len = 6;
        }
        strbuf_append(b, esc, len);
    }
    strbuf_append(b, run, strlen(run));
    strbuf_append(b, "\"", 1);
}

static int key_cmp(const void *a, const void *b) {
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string ? x->string : "", y->string ? y->string : "");
}

int json_canonical_append(strbuf *b, const cJSON *v) {
    if (!v) return UMDQ_EINVAL;
    char num[40];
    switch (v->type & 0xff) {
    case cJSON_NULL: strbuf_append(b, "null", 4); return 0;
    case cJSON_False: strbuf_append(b, "false", 5); return 0;
    case cJSON_True: strbuf_append(b, "true", 4); return 0;
    case cJSON_Number:
        if (json_canonical_number(v->valuedouble, num, sizeof num) != 0) return UMDQ_EINVAL;
        strbuf_puts(b, num);
        return 0;
    case cJSON_String: put_string(b, v->valuestring ? v->valuestring : ""); return 0;
    case cJSON_Raw: strbuf_puts(b, v->valuestring ? v->valuestring : ""); return 0;
    case cJSON_Array: {
        strbuf_append(b, "[", 1);
        int first = 1;
        for (const cJSON *c = v->child; c; c = c->next) {
            if (!first) strbuf_append(b, ",", 1);
            first = 0;
            if (json_canonical_append(b, c) != 0) return UMDQ_EINVAL;
        }
        strbuf_append(b, "]", 1);
        return 0;
    }
    case cJSON_Object: {
        const cJSON *stack[32];
        const cJSON **kids = stack; /* owned when not stack */
        int n = 0, sorted = 1;
        for (const cJSON *c = v->child; c; c = c->next) n++;
        if (n > (int)(sizeof stack / sizeof stack[0])) {
            kids = malloc((size_t)n * sizeof *kids);
            if (!kids) {
                b->oom = 1;
                return UMDQ_ENOMEM;
            }
        }
        n = 0;
        for (const cJSON *c = v->child; c; c = c->next) {
            kids[n] = c;
            if (n && key_cmp(&kids[n - 1], &kids[n]) > 0) sorted = 0;
            n++;
        }
        if (!sorted) qsort(kids, (size_t)n, sizeof *kids, key_cmp);
        int rc = 0;
        strbuf_append(b, "{", 1);
        for (int i = 0; i < n; i++) {
            if (i) strbuf_append(b, ",", 1);
            put_string(b, kids[i]->string ? kids[i]->string : "");
            strbuf_append(b, ":", 1);
            rc = json_canonical_append(b, kids[i]);
            if (rc != 0) break;
        }
        strbuf_append(b, "}", 1);
        if (kids != stack) free(kids);
        return rc;
    }
    default: return UMDQ_EINVAL;
    }
}

char *json_canonical(const cJSON *v) {
    strbuf b;
    strbuf_init(&b);
    if (json_canonical_append(&b, v) != 0) {
        strbuf_free(&b);
        return NULL;
    }
    return strbuf_steal(&b);
}

/* The member named by the n bytes at key, or NULL. */
static cJSON *member_n(const cJSON *obj, const char *key, size_t n) {
    if (!cJSON_IsObject(obj)) return NULL;
    for (cJSON *c = obj->child; c; c = c->next)
        if (c->string && strncmp(c->string, key, n) == 0 && c->string[n] == 0) return c;
    return NULL;
}

cJSON *json_path_get(const cJSON *root, const char *dotted) {
    if (!root || !dotted) return NULL;
    const cJSON *cur = root;
    const char *p = dotted;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        cur = member_n(cur, p, n);
        if (!cur) return NULL;
        if (!dot) return (cJSON *)cur;
        p = dot + 1;
    }
}

int json_path_set(cJSON *root, const char *dotted, cJSON *value, char *err, size_t errlen) {
    if (!root || !dotted || !*dotted || !value || !cJSON_IsObject(root)) {
        snprintf(err, errlen, "cannot set \"%s\": bad arguments", dotted ? dotted : "");
        cJSON_Delete(value);
        return UMDQ_EINVAL;
    }
    cJSON *cur = root;
    const char *p = dotted;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0) {
            snprintf(err, errlen, "\"%s\" has an empty key", dotted);
            cJSON_Delete(value);
            return UMDQ_EINVAL;
        }
        char key[256];
        char *heap = NULL; /* owned */
        char *k = key;
        if (n >= sizeof key) {
            heap = malloc(n + 1);
            if (!heap) {
                snprintf(err, errlen, "out of memory");
                cJSON_Delete(value);
                return UMDQ_ENOMEM;
            }
            k = heap;
        }
        memcpy(k, p, n);
        k[n] = 0;
        cJSON *child = member_n(cur, p, n);
        if (!dot) {
            int ok = child ? cJSON_ReplaceItemInObjectCaseSensitive(cur, k, value)
                           : cJSON_AddItemToObject(cur, k, value);
            free(heap);
            if (!ok) {
                snprintf(err, errlen, "out of memory");
                cJSON_Delete(value);
                return UMDQ_ENOMEM;
            }
            return 0;
        }
        if (!child) {
            child = cJSON_CreateObject();
            if (!child || !cJSON_AddItemToObject(cur, k, child)) {
                cJSON_Delete(child);
                free(heap);
                snprintf(err, errlen, "out of memory");
                cJSON_Delete(value);
                return UMDQ_ENOMEM;
            }
        } else if (!cJSON_IsObject(child)) {
            snprintf(err, errlen, "cannot set \"%s\": \"%.*s\" is not an object", dotted,
                     (int)(dot - dotted), dotted);
            free(heap);
            cJSON_Delete(value);
            return UMDQ_EINVAL;
        }
        free(heap);
        cur = child;
        p = dot + 1;
    }
}

double json_get_number(const cJSON *root, const char *dotted, double dflt) {
    const cJSON *v = json_path_get(root, dotted);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

int64_t json_get_int(const cJSON *root, const char *dotted, int64_t dflt) {
    const cJSON *v = json_path_get(root, dotted);
    if (!cJSON_IsNumber(v)) return dflt;
    double d = v->valuedouble;
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return dflt;
    return (int64_t)d;
}

int json_get_bool(const cJSON *root, const char *dotted, int dflt) {
    const cJSON *v = json_path_get(root, dotted);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

const char *json_get_string(const cJSON *root, const char *dotted, const char *dflt) {
    const cJSON *v = json_path_get(root, dotted);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : dflt;
}

/* The first repeated key among obj's members, or NULL. */
static const cJSON *repeated_key(const cJSON *obj) {
    int n = 0;
    for (const cJSON *c = obj->child; c; c = c->next) n++;
    if (n <= 16) {
        for (const cJSON *c = obj->child; c; c = c->next)
            for (const cJSON *d = obj->child; d != c; d = d->next)
                if (d->string && c->string && strcmp(d->string, c->string) == 0) return c;
        return NULL;
    }
    const cJSON **kids = malloc((size_t)n * sizeof *kids); /* owned */
    if (!kids) return NULL;
    int i = 0;
    for (const cJSON *c = obj->child; c; c = c->next) kids[i++] = c;
    qsort(kids, (size_t)n, sizeof *kids, key_cmp);
    const cJSON *dup = NULL;
    for (i = 1; i < n && !dup; i++)
        if (key_cmp(&kids[i - 1], &kids[i]) == 0) dup = kids[i];
    free(kids);
    return dup;
}

/* Find a repeated key anywhere under v; fills path (dotted, with [i] for array elements). */
static int find_duplicate(const cJSON *v, strbuf *path) {
    size_t mark = path->len;
    if (cJSON_IsObject(v)) {
        const cJSON *dup = repeated_key(v);
        if (dup) {
            if (path->len) strbuf_append(path, ".", 1);
            strbuf_puts(path, dup->string);
            return 1;
        }
    }
    int i = 0;
    for (const cJSON *c = v->child; c; c = c->next, i++) {
        if (!c->child) continue;
        if (cJSON_IsObject(v)) {
            if (path->len) strbuf_append(path, ".", 1);
            strbuf_puts(path, c->string ? c->string : "");
        } else {
            strbuf_printf(path, "[%d]", i);
        }
        if (find_duplicate(c, path)) return 1;
        path->len = mark;
        if (path->data) path->data[mark] = 0;
    }
    return 0;
}

cJSON *json_parse_n(const char *text, size_t len, char *err, size_t errlen) {
    const char *end = NULL;
    if (!text) {
        snprintf(err, errlen, "no JSON text");
        return NULL;
    }
    cJSON *v = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!v) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        if (len == 0 || off >= len)
            snprintf(err, errlen, "invalid JSON: unexpected end of text at byte %zu", len);
        else
            snprintf(err, errlen, "invalid JSON at byte %zu", off);
        return NULL;
    }
    size_t off = (size_t)(end - text);
    while (off < len && (text[off] == ' ' || text[off] == '\t' || text[off] == '\n' ||
                         text[off] == '\r'))
        off++;
    if (off < len && !(text[off] == 0 && off + 1 == len)) {
        snprintf(err, errlen, "invalid JSON: unexpected text after the value at byte %zu", off);
        cJSON_Delete(v);
        return NULL;
    }
    strbuf path;
    strbuf_init(&path);
    if (find_duplicate(v, &path)) {
        snprintf(err, errlen, "invalid JSON: duplicate key \"%s\"", path.data ? path.data : "");
        strbuf_free(&path);
        cJSON_Delete(v);
        return NULL;
    }
    strbuf_free(&path);
    return v;
}
