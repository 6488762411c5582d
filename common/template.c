/* template.c: the command line of a kind "command" job: {dotted.key} fields replaced by the
 * config's values, shell-quoted; other braces are literal ({{ and }} also stand for braces). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "jsonx.h"
#include "template.h"
#include "umdq.h"
#include "util.h"

/* Append text as one shell word: bare when every byte is harmless to /bin/sh, else quoted. */
static void put_word(strbuf *out, const char *text) {
    static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.,:/=+-@%";
    if (*text && strspn(text, safe) == strlen(text)) {
        strbuf_puts(out, text);
        return;
    }
    char *q = shell_quote(text);
    if (!q) {
        out->oom = 1;
        return;
    }
    strbuf_puts(out, q);
    free(q);
}

/* Render the value of one field into out; 0, or -1 when the field does not resolve. */
static int put_field(strbuf *out, const char *name, const cJSON *config, const template_builtins *b) {
    static const char *const builtins[] = {"seed", "job", "attempt", "sweep"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, builtins[i]) != 0) continue;
        if (!b) {
            char ph[16];
            snprintf(ph, sizeof ph, "<%s>", builtins[i]);
            put_word(out, ph);
            return 0;
        }
        int64_t v = i == 0 ? b->seed : i == 1 ? b->job : i == 2 ? b->attempt : b->sweep;
        strbuf_printf(out, "%lld", (long long)v);
        return 0;
    }
    const cJSON *v = json_path_get(config, name);
    if (!v) return -1;
    if (cJSON_IsString(v)) {
        put_word(out, v->valuestring ? v->valuestring : "");
    } else {
        char *c = json_canonical(v);
        if (!c) return -1;
        put_word(out, c);
        free(c);
    }
    return 0;
}

/* Length of a field name at p ("params.lr"): a letter or '_' first, then letters, digits, '_',
 * '.' or '-'; 0 when p does not start one. */
static size_t field_name_len(const char *p) {
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_')) return 0;
    return strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");
}

int template_render(const char *tmpl, const cJSON *config, const template_builtins *b,
                    char **out, errlist *errs) {
    strbuf o;
    int bad = 0;
    *out = NULL;
    if (!tmpl) {
        errlist_add(errs, "command", "no command");
        return UMDQ_EINVAL;
    }
    strbuf_init(&o);
    const char *p = tmpl;
    while (*p) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            strbuf_append(&o, p, 1);
            p += 2;
            continue;
        }
        /* {name} is a field unless it follows '$' (the shell's ${VAR}); every other brace, as in
         * JSON ({"umdq": ...}), awk (BEGIN { ... }) or shell groups ({ a; b; }), is literal */
        size_t n = p[0] == '{' && (p == tmpl || p[-1] != '$') ? field_name_len(p + 1) : 0;
        if (n > 0 && p[1 + n] == '}') {
            char name[256];
            if (n >= sizeof name) {
                errlist_add(errs, "command", "too long a field name at byte %d", (int)(p - tmpl));
                bad++;
            } else {
                memcpy(name, p + 1, n);
                name[n] = 0;
                if (put_field(&o, name, config, b) != 0) {
                    errlist_add(errs, "command", "unknown field {%s}: not in the job config", name);
                    bad++;
                }
            }
            p += n + 2;
            continue;
        }
        const char *q = p + 1;
        while (*q && *q != '{' && *q != '}') q++;
        strbuf_append(&o, p, (size_t)(q - p));
        p = q;
    }
    if (bad) {
        strbuf_free(&o);
        return UMDQ_EINVAL;
    }
    if (o.oom) {
        strbuf_free(&o);
        errlist_add(errs, "command", "out of memory");
        return UMDQ_ENOMEM;
    }
    *out = strbuf_steal(&o);
    return 0;
}
