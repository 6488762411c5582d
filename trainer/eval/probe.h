/* probe.h: the two representation probes of UMD.md "Evaluation", on features cached in host
 * memory (rows of d floats): the closed-form ridge probe (the 100-shot headline number) and the
 * full linear probe (BatchNorm without affine, then a linear layer trained with softmax
 * cross-entropy). Both return top-1 accuracy on the given test rows, a fraction in [0, 1]. */
#ifndef UMDQ_TRAINER_EVAL_PROBE_H
#define UMDQ_TRAINER_EVAL_PROBE_H
#include <stddef.h>
#include <stdint.h>

/* Up to `shots` row indices per class, the first ones in file order: idx (classes * shots)
 * filled, class by class in file order. Returns how many were written. */
int64_t umd_probe_pick_shots(const uint16_t *labels, int64_t n, int classes, int shots,
                             int64_t *idx);

/* Ridge probe: standardise with the training rows' mean and (unbiased) std + 1e-5, append a
 * constant 1, targets one-hot in {-1, +1}, W = (X^T X + lambda I)^-1 X^T Y (float64, Cholesky),
 * then top-1 of argmax(X_test W). W (may be NULL) gets the solution, (d + 1, classes) with the
 * bias row last. Returns 0 or a negative UMDQ_E* code with a message. */
int umd_probe_ridge(const float *Xtr, const int32_t *ytr, int64_t ntr, const float *Xte,
                    const int32_t *yte, int64_t nte, int d, int classes, double lambda,
                    double *top1, double *W, char *err, size_t errlen);

typedef struct {
    int epochs;         /* passes over the training rows */
    int batch;          /* rows per Adam step (256) */
    double lr;          /* peak Adam learning rate; cosine to 0 over all steps */
    uint64_t seed;      /* the order of the rows in each epoch (Philox stream PHILOX_EVAL) */
    /* Called before every Adam step with the steps done and their total (may be NULL); nonzero
     * stops the probe with UMDQ_ECANCELLED. */
    int (*poll)(void *ctx, int64_t done, int64_t total);
    void *poll_ctx;     /* borrowed */
} umd_linear_probe_opts;

/* Linear probe (the MAE protocol on frozen features): BatchNorm without affine, here with the
 * training rows' statistics (mean, biased variance, eps 1e-6: BatchNorm's running statistics
 * once they have converged over fixed features), then Linear(d -> classes) from zeros trained by
 * Adam (0.9, 0.999) on softmax cross-entropy over shuffled mini-batches. final_loss (may be
 * NULL) gets the last epoch's mean training loss. */
int umd_probe_linear(const float *Xtr, const int32_t *ytr, int64_t ntr, const float *Xte,
                     const int32_t *yte, int64_t nte, int d, int classes,
                     const umd_linear_probe_opts *opts, double *top1, double *final_loss,
                     char *err, size_t errlen);

#endif
