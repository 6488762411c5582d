/* fuzz_proto.c: libFuzzer driver for proto_parse and the field readers (common/proto.h), the
 * parser every ZeroMQ frame from a worker or the daemon goes through.
 *
 * Properties: a message that parses has a non-empty string "t" and "v" == 1; every field of the
 * protocol read with proto_get_int / proto_get_str either succeeds with a value of the right kind
 * or fails with a message; the printed form of a parsed message parses again to the same type.
 * Built by tests/long/fuzz.sh, not by the Makefile. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "proto.h"
#include "umdq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fields[] = {
    "t", "v", "name", "host", "device", "backend", "pid", "capabilities", "running", "finished",
    "job", "attempt", "lease", "step", "points", "results", "offset", "data", "status",
    "exit_code", "signal", "error", "worker", "epoch", "heartbeat_ms", "http", "token", "sweep",
    "kind", "config", "seed", "stall_timeout", "reason", "grace_ms"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cJSON *m = NULL;
    const char *type = NULL;
    char err[256] = "";
    int rc = proto_parse(data, size, &m, &type, err, sizeof err);
    if (rc != 0) {
        if (m || !err[0]) {
            fprintf(stderr, "proto_parse failed (%d) without a message or with an output\n", rc);
            abort();
        }
        return 0;
    }
    if (!m || !type || !type[0] || !cJSON_IsObject(m)) {
        fprintf(stderr, "proto_parse succeeded without an object and a type\n");
        abort();
    }
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        int64_t iv = 0;
        const char *sv = NULL;
        char ferr[128] = "";
        if (proto_get_int(m, fields[i], &iv, ferr, sizeof ferr) == 0) {
            const cJSON *it = cJSON_GetObjectItemCaseSensitive(m, fields[i]);
            if (!cJSON_IsNumber(it) || (double)iv != it->valuedouble) {
                fprintf(stderr, "proto_get_int(%s) = %lld, but the field is not that integer\n", fields[i],
                        (long long)iv);
                abort();
            }
        } else if (!ferr[0]) {
            fprintf(stderr, "proto_get_int(%s) failed without a message\n", fields[i]);
            abort();
        }
        ferr[0] = 0;
        if (proto_get_str(m, fields[i], &sv, ferr, sizeof ferr) == 0) {
            if (!sv) abort();
            (void)strlen(sv);
        } else if (!ferr[0]) {
            fprintf(stderr, "proto_get_str(%s) failed without a message\n", fields[i]);
            abort();
        }
    }
    char *text = proto_print(m);
    if (text) {
        cJSON *m2 = NULL;
        const char *type2 = NULL;
        char err2[256];
        if (proto_parse(text, strlen(text), &m2, &type2, err2, sizeof err2) != 0 || strcmp(type, type2) != 0) {
            fprintf(stderr, "a parsed message, printed, does not parse again (%s): %s\n", err2, text);
            abort();
        }
        cJSON_Delete(m2);
        free(text);
    }
    cJSON_Delete(m);
    return 0;
}
