/* proto.c: building, printing and checking the one-frame JSON messages of docs/protocol.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "jsonx.h"
#include "proto.h"
#include "umdq.h"

int proto_printable(const char *s, size_t max) {
    size_t n = 0;
    if (!s || !s[0]) return 0;
    for (; s[n]; n++)
        if (n >= max || (unsigned char)s[n] < 0x20 || (unsigned char)s[n] > 0x7e) return 0;
    return 1;
}

cJSON *proto_new(const char *type) {
    cJSON *m = cJSON_CreateObject();
    if (!m) return NULL;
    if (!cJSON_AddStringToObject(m, "t", type ? type : "") ||
        !cJSON_AddNumberToObject(m, "v", UMDQ_PROTOCOL_VERSION)) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

char *proto_print(const cJSON *msg) {
    return msg ? cJSON_PrintUnformatted(msg) : NULL;
}

int proto_parse(const void *data, size_t len, cJSON **out, const char **type,
                char *err, size_t errlen) {
    char perr[160];
    *out = NULL;
    if (type) *type = NULL;
    if (!data || len == 0) {
        snprintf(err, errlen, "empty message");
        return UMDQ_EPROTO;
    }
    if (len > PROTO_MAX_MSG) {
        snprintf(err, errlen, "message of %zu bytes is larger than %u", len, PROTO_MAX_MSG);
        return UMDQ_EPROTO;
    }
    cJSON *m = json_parse_n(data, len, perr, sizeof perr);
    if (!m) {
        snprintf(err, errlen, "%s", perr);
        return UMDQ_EPROTO;
    }
    if (!cJSON_IsObject(m)) {
        snprintf(err, errlen, "message is not a JSON object");
        goto fail;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "t");
    if (!cJSON_IsString(t) || !t->valuestring[0]) {
        snprintf(err, errlen, "message has no string field \"t\"");
        goto fail;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, "v");
    if (!cJSON_IsNumber(v)) {
        snprintf(err, errlen, "%s message has no number field \"v\"", t->valuestring);
        goto fail;
    }
    if (v->valuedouble != UMDQ_PROTOCOL_VERSION) {
        snprintf(err, errlen, "%s message has protocol version %g, this side speaks %d",
                 t->valuestring, v->valuedouble, UMDQ_PROTOCOL_VERSION);
        goto fail;
    }
    *out = m;
    if (type) *type = t->valuestring;
    return 0;
fail:
    cJSON_Delete(m);
    return UMDQ_EPROTO;
}

int proto_get_int(const cJSON *msg, const char *key, int64_t *out, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(msg, key);
    if (!v) {
        snprintf(err, errlen, "missing field \"%s\"", key);
        return UMDQ_EPROTO;
    }
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || !(fabs(d) <= 9007199254740992.0)) {
        snprintf(err, errlen, "field \"%s\" must be an integer", key);
        return UMDQ_EPROTO;
    }
    *out = (int64_t)d;
    return 0;
}

int proto_get_str(const cJSON *msg, const char *key, const char **out, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(msg, key);
    if (!v) {
        snprintf(err, errlen, "missing field \"%s\"", key);
        return UMDQ_EPROTO;
    }
    if (!cJSON_IsString(v) || !v->valuestring) {
        snprintf(err, errlen, "field \"%s\" must be a string", key);
        return UMDQ_EPROTO;
    }
    *out = v->valuestring;
    return 0;
}
