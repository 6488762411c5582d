/* step.c: one training step, op by op or recorded and replayed (step.h). */
#include <stdio.h>
#include "optim.h"
#include "step.h"
#include "umdq.h"

static void run_ops(umd_model *m, const umd_config *cfg) {
    umd_model_step(m, 1, NULL);
    umd_optim_apply(m, cfg);
}

/* Records the step; 1 when it was recorded, 0 when the backend would not (nothing ran). */
static int record(umd_stepper *s, umd_model *m, const umd_config *cfg) {
    const umd_ops *o = umd_model_ops(m);
    umd_ctx *c = umd_model_ctx(m);
    char why[200] = "";
    int rc = o->record_begin(c, why, sizeof why);
    if (rc == 0) {
        run_ops(m, cfg);
        rc = o->record_end(c, why, sizeof why);
        if (rc == 0) return 1;
    }
    s->given_up = 1;
    if (rc != UMDQ_EUNSUPPORTED)
        snprintf(s->note, sizeof s->note, "the step could not be recorded (%s): it runs op by op",
                 why);
    return 0;
}

int umd_train_step(umd_stepper *s, umd_model *m, const umd_config *cfg, int64_t step, double lr,
                   char *err, size_t errlen) {
    const umd_ops *o = umd_model_ops(m);
    umd_optim_prepare(m, cfg, step, lr);
    /* the first step runs op by op: it makes the backend's host-side preparations (GEMM plans,
     * kernel attributes), so the recording holds device work only */
    if (!s->recorded && !s->given_up && s->runs >= 1) {
        if (!o->record_begin || umd_model_replicas(m) != 1) s->given_up = 1;
        else s->recorded = record(s, m, cfg);
    }
    s->runs++;
    if (!s->recorded) {
        run_ops(m, cfg);
        return 0;
    }
    return o->replay(umd_model_ctx(m), err, errlen);
}
