/* jsonx.h: canonical JSON and dotted key paths over cJSON.
 *
 * Canonical JSON (the dedupe key of a job's config): no whitespace, object keys sorted by byte
 * order, strings escaped minimally (", \, control characters as \uXXXX except \b\f\n\r\t),
 * numbers normalised: integral values with |v| < 2^53 print as integers ("3", not "3.0" or
 * "3e0"), -0 prints as 0, other values print with the shortest "%.*g" (up to 17 digits) that
 * reads back to the same double. NaN and infinities are not JSON and are refused. */
#ifndef UMDQ_JSONX_H
#define UMDQ_JSONX_H
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

/* Canonical text of v. Caller frees. NULL on out of memory or a NaN/infinite number. */
char *json_canonical(const cJSON *v);
/* Append the canonical text of v to b; 0, or UMDQ_EINVAL for a NaN/infinite number (b then holds
 * a partial text). cJSON_Raw items are copied verbatim (callers use them as placeholders). */
int json_canonical_append(strbuf *b, const cJSON *v);
/* Canonical text of a number into buf; returns 0, or UMDQ_EINVAL for NaN/infinity. */
int json_canonical_number(double d, char *buf, size_t n);

/* Dotted paths: "model.width" addresses root["model"]["width"]. */
cJSON *json_path_get(const cJSON *root, const char *dotted);      /* borrowed; NULL if absent */
/* Set root[dotted] = value, creating objects on the way; value is owned by root afterwards
 * (also on failure, when it is freed). Fails with UMDQ_EINVAL when a prefix is not an object. */
int json_path_set(cJSON *root, const char *dotted, cJSON *value, char *err, size_t errlen);

/* Convenience getters with defaults; they do not validate (validation is schema.h's job). */
double json_get_number(const cJSON *root, const char *dotted, double dflt);
int64_t json_get_int(const cJSON *root, const char *dotted, int64_t dflt);
int json_get_bool(const cJSON *root, const char *dotted, int dflt);
const char *json_get_string(const cJSON *root, const char *dotted, const char *dflt); /* borrowed */

/* Parse text of length len (need not be NUL-terminated). NULL and a message with the byte
 * offset of the error on failure. Text after the value (other than whitespace) and an object
 * with a repeated key are refused (the message names the key path). */
cJSON *json_parse_n(const char *text, size_t len, char *err, size_t errlen);

#endif
