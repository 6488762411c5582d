/* fuzz_json.c: libFuzzer driver for json_parse_n and json_canonical (common/jsonx.h).
 *
 * Property: when the input parses and has a canonical text (no NaN/infinite number), that text
 * parses again, and the canonical text of the re-parsed value is byte-identical. Also exercises
 * the dotted-path getters on whatever parsed. Built by tests/long/fuzz.sh, not by the Makefile. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "jsonx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    cJSON *v = json_parse_n((const char *)data, size, err, sizeof err);
    if (!v) return 0;
    /* the getters never crash, whatever the shape */
    static const char *const paths[] = {"a", "a.b", "t", "v", "params.x", "", ".", "a..b", "0"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        (void)json_path_get(v, paths[i]);
        (void)json_get_number(v, paths[i], 0);
        (void)json_get_int(v, paths[i], 0);
        (void)json_get_bool(v, paths[i], 0);
        (void)json_get_string(v, paths[i], NULL);
    }
    char *c1 = json_canonical(v);
    cJSON_Delete(v);
    if (!c1) return 0; /* NaN or infinity: refused by design */
    size_t n1 = strlen(c1);
    cJSON *v2 = json_parse_n(c1, n1, err, sizeof err);
    if (!v2) {
        fprintf(stderr, "canonical text does not parse again (%s): %s\n", err, c1);
        abort();
    }
    char *c2 = json_canonical(v2);
    cJSON_Delete(v2);
    if (!c2 || strcmp(c1, c2) != 0) {
        fprintf(stderr, "canonical text is not a fixed point:\n  first:  %s\n  second: %s\n", c1,
                c2 ? c2 : "(NULL)");
        abort();
    }
    free(c1);
    free(c2);
    return 0;
}
