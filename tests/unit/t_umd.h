/* t_umd.h: umd_run of a JSON text in the unit tests: parsed, run with the caller's events, freed.
 * Returns umd_run's code, or -100 with err saying so when the text does not parse. */
#ifndef UMDQ_T_UMD_H
#define UMDQ_T_UMD_H
#include <cjson/cJSON.h>
#include <stdio.h>
#include "umd.h"

static inline int t_umd_run(const char *json, const umd_events *ev, char *err, size_t errlen) {
    cJSON *cfg = cJSON_Parse(json);
    if (!cfg) {
        snprintf(err, errlen, "test config does not parse");
        return -100;
    }
    int rc = umd_run(cfg, ev, err, errlen);
    cJSON_Delete(cfg);
    return rc;
}

#endif
