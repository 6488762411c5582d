/* run.c: the run driver (placeholder until the trainer lands: refuses every run). */
#include <stdio.h>
#include <string.h>
#include "umd.h"
#include "umdq.h"

int umd_run(const cJSON *config, const umd_events *ev, char *err, size_t errlen) {
    (void)config;
    (void)ev;
    snprintf(err, errlen, "the UMD trainer is not available in this build");
    return UMDQ_EUNSUPPORTED;
}

int umd_backend_available(const char *backend) {
    (void)backend;
    return 0;
}
