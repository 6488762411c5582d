/* classifier.h: the FID feature network: a small supervised classifier of the evaluation's data
 * set, built from the trainer's ops (kernels/ops.h), trained once per data set and cached.
 *
 * Architecture (for images (C, H, W) with H and W multiples of 4):
 *   conv 4x4 stride 2 pad 1, C -> c1 = 32, GELU     as a Linear over (H/2)(W/2) im2col tokens
 *   conv 2x2 stride 2, 32 -> c2 = 64, GELU          as a Linear over groups of 4 tokens
 *   Linear((H/4)(W/4) 64 -> 128), GELU              the 128 features FID is computed on
 *   Linear(128 -> classes)                          softmax cross-entropy
 * The host builds the im2col tokens with each 2x2 group of stride-2 positions adjacent, so the
 * second conv is a plain Linear over a reshaped buffer (no transpose op). Trained with Adam
 * (0.9, 0.999), lr 2e-3 with 5% warm-up then cosine, batch 128, seed 0, no augmentation; the
 * logits' cross-entropy and its gradient are computed on the host (B x classes numbers a step).
 *
 * Cache file "<name>.umdc": "UMDQCLSF" | u32 version (1) | u32 C, H, W, classes, epochs, nfloats
 * | f64 test accuracy | char name[64] | nfloats float32 parameters. Written atomically; a
 * sibling "<name>.lock" (flock) makes concurrent workers train it once. */
#ifndef UMDQ_TRAINER_EVAL_CLASSIFIER_H
#define UMDQ_TRAINER_EVAL_CLASSIFIER_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "data.h"
#include "ops.h"

#define UMD_CLASSIFIER_FEATURES 128

typedef struct umd_classifier umd_classifier;

/* The net's identity for a data set and training config: "<dataset>-classifier-<12 hex>" (a hash
 * of the data set's identity (its path; for the synthetic set its knobs and the seed), its train
 * split's size and shape, the architecture and epochs). */
void umd_classifier_name(const umd_config *cfg, const umd_split *train, int epochs, char *name,
                         size_t n);

/* A net for images of train's shape, with fresh weights (seed 0), on ops with `threads` CPU
 * threads (0 = all). */
int umd_classifier_new(umd_classifier **out, const umd_split *train, const umd_ops *ops,
                       int threads, char *err, size_t errlen);
void umd_classifier_destroy(umd_classifier **c); /* accepts NULL, NULLs the pointer */

/* Train for epochs over train; test accuracy on test. log_fn (may be NULL) gets a line per
 * epoch; poll (may be NULL) is called before every step with the steps done and their total,
 * and nonzero stops the training with UMDQ_ECANCELLED. Both get ctx (borrowed). */
int umd_classifier_train(umd_classifier *c, const umd_split *train, const umd_split *test,
                         int epochs, void (*log_fn)(void *ctx, const char *line),
                         int (*poll)(void *ctx, int64_t done, int64_t total), void *ctx,
                         char *err, size_t errlen);
/* Top-1 accuracy on a split (its first max_n images; 0 = all). */
double umd_classifier_accuracy(umd_classifier *c, const umd_split *s, int64_t max_n);
/* The test accuracy measured by train (or read from the cache file). */
double umd_classifier_test_accuracy(const umd_classifier *c);
const char *umd_classifier_get_name(const umd_classifier *c);

/* Floats per input image: C * H * W. */
size_t umd_classifier_input_size(const umd_classifier *c);

/* Features (n, UMD_CLASSIFIER_FEATURES) of images x (n, C, H, W) in [-1, 1], any n. */
void umd_classifier_features(umd_classifier *c, const float *x, int64_t n, float *feat);

int umd_classifier_save(umd_classifier *c, const char *path, char *err, size_t errlen);
int umd_classifier_load(umd_classifier *c, const char *path, char *err, size_t errlen);

/* The cached net `name` from dir, or a new one trained (and stored there, when dir is not NULL).
 * trained (may be NULL) = 1 when it was trained now. log_fn and poll as in umd_classifier_train
 * (poll is also called, with done 0 and total 0, while another process holds the lock). */
int umd_classifier_get(umd_classifier **out, const char *dir, const char *name,
                       const umd_split *train, const umd_split *test, int epochs,
                       const umd_ops *ops, int threads, void (*log_fn)(void *ctx, const char *line),
                       int (*poll)(void *ctx, int64_t done, int64_t total), void *ctx,
                       int *trained, char *err, size_t errlen);

#endif
