/* t_umd.h: trainer helpers of the unit tests. t_umd_run: umd_run of a JSON text, parsed, run with
 * the caller's events, freed; returns umd_run's code, or -100 with err saying so when the text does
 * not parse. t_data_config: a config (zero elsewhere) naming a data set and its directory, for
 * umd_data_load. */
#ifndef UMDQ_T_UMD_H
#define UMDQ_T_UMD_H
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include "config.h"
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

static inline umd_config t_data_config(umd_dataset_kind dataset, const char *dir) {
    umd_config c;
    memset(&c, 0, sizeof c);
    c.dataset = dataset;
    snprintf(c.data_path, sizeof c.data_path, "%s", dir);
    return c;
}

#endif
