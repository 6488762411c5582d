/* fuzz_template.c: libFuzzer driver for template_render (common/template.h), which turns a job's
 * command template and config into the line /bin/sh runs.
 *
 * Input: the template, a NUL byte, then the job config as JSON (when it does not parse as an
 * object, a small fixed config is used). The first byte picks a mode:
 *   'q'  the rest of the input is one string value v; "{params.v}" must render to exactly one
 *        shell word that /bin/sh reads back as v (bare harmless characters, '...' quoting and \'
 *        only), so no parameter value can inject shell syntax;
 *   else the template is rendered with built-ins and without (submit-time check): both succeed or
 *        both fail, a failure names the "command" path, and a template without braces renders
 *        as itself.
 * Built by tests/long/fuzz.sh, not by the Makefile. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "errlist.h"
#include "jsonx.h"
#include "template.h"
#include "umdq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char safe_bare[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.,:/=+-@%";

/* Read one shell word the way /bin/sh would for the subset a rendered value may use; NULL when
 * the text holds anything else (an unquoted special character, a second word). Caller frees. */
static char *sh_word(const char *s) {
    size_t n = strlen(s);
    char *out = malloc(n + 1);
    size_t k = 0;
    if (!out) abort();
    for (size_t i = 0; i < n;) {
        if (s[i] == '\'') {
            const char *close = strchr(s + i + 1, '\'');
            if (!close) goto bad;
            size_t len = (size_t)(close - (s + i + 1));
            memcpy(out + k, s + i + 1, len);
            k += len;
            i += len + 2;
        } else if (s[i] == '\\' && i + 1 < n && s[i + 1] == '\'') {
            out[k++] = '\'';
            i += 2;
        } else if (strchr(safe_bare, s[i])) {
            out[k++] = s[i++];
        } else {
            goto bad;
        }
    }
    out[k] = 0;
    return out;
bad:
    free(out);
    return NULL;
}

static void quoting(const uint8_t *data, size_t size) {
    char *v = malloc(size + 1);
    if (!v) abort();
    memcpy(v, data, size);
    v[size] = 0; /* a value holds no NUL: stop at the first one */
    cJSON *config = cJSON_CreateObject();
    cJSON *params = cJSON_AddObjectToObject(config, "params");
    cJSON_AddStringToObject(params, "v", v);
    errlist *errs = errlist_new();
    template_builtins b = {1, 2, 3, 4};
    char *out = NULL;
    if (template_render("{params.v}", config, &b, &out, errs) != 0) {
        fprintf(stderr, "rendering a string field failed\n");
        abort();
    }
    char *word = sh_word(out);
    if (!word || strcmp(word, v) != 0) {
        fprintf(stderr, "value %s rendered as %s, which the shell reads as %s\n", v, out,
                word ? word : "(not one word)");
        abort();
    }
    free(word);
    free(out);
    errlist_destroy(&errs);
    cJSON_Delete(config);
    free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] == 'q') {
        quoting(data + 1, size - 1);
        return 0;
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    char *tmpl = malloc(tlen + 1);
    if (!tmpl) abort();
    memcpy(tmpl, data, tlen);
    tmpl[tlen] = 0;
    char err[256];
    cJSON *config = nul ? json_parse_n((const char *)nul + 1, size - tlen - 1, err, sizeof err) : NULL;
    if (!cJSON_IsObject(config)) {
        cJSON_Delete(config);
        config = cJSON_Parse("{\"kind\":\"command\",\"params\":{\"x\":1,\"s\":\"a b\",\"o\":{\"k\":[1,2]}},"
                             "\"umd\":{\"mask_ratio\":0.375}}");
    }
    errlist *e1 = errlist_new(), *e2 = errlist_new();
    template_builtins b = {7, 8, 9, 10};
    char *o1 = NULL, *o2 = NULL;
    int r1 = template_render(tmpl, config, &b, &o1, e1);
    int r2 = template_render(tmpl, config, NULL, &o2, e2);
    if ((r1 == 0) != (r2 == 0)) {
        fprintf(stderr, "rendering with and without built-ins disagree: %d vs %d\n", r1, r2);
        abort();
    }
    if (r1 != 0) {
        if (o1 || errlist_count(e1) == 0 || strcmp(errlist_path(e1, 0), "command") != 0) {
            fprintf(stderr, "a failed render left an output or named no \"command\" problem\n");
            abort();
        }
    } else if (!o1 || !o2) {
        fprintf(stderr, "a render succeeded without an output\n");
        abort();
    } else if (!strchr(tmpl, '{') && !strchr(tmpl, '}') && strcmp(o1, tmpl) != 0) {
        fprintf(stderr, "a template without braces changed: %s -> %s\n", tmpl, o1);
        abort();
    }
    free(o1);
    free(o2);
    errlist_destroy(&e1);
    errlist_destroy(&e2);
    cJSON_Delete(config);
    free(tmpl);
    return 0;
}
