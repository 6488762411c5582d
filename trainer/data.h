/* data.h: the image data sets the trainer reads, and the deterministic order it reads them in.
 *
 * Formats: MNIST-style IDX files (Fashion-MNIST as Debian's dataset-fashion-mnist installs it:
 * train-images-idx3-ubyte.gz etc., gzipped or not), the CIFAR-10 binary format
 * (data_batch_1..5.bin, test_batch.bin), the downsampled ImageNet 64x64 .npz files
 * (train_data_batch_1..10.npz, val_data.npz; 1000 classes), and a synthetic set generated from a
 * seed for tests.
 * Every file is checked (magic, sizes, truncation) and refused with a message naming it. */
#ifndef UMDQ_TRAINER_DATA_H
#define UMDQ_TRAINER_DATA_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"

/* Largest image side the loaders accept (the augmenter keeps per-row tables of this size on the
 * stack, so a batch allocates nothing). */
#define UMD_DATA_MAX_SIDE 1024

typedef struct {
    int64_t n;          /* images */
    int h, w, c;        /* height, width, channels (1 or 3) */
    int classes;        /* label values are 0 .. classes-1 */
    uint8_t *pixels;    /* (n, c, h, w) bytes, owned */
    uint16_t *labels;   /* (n,), owned (16 bits: ImageNet has 1000 classes) */
} umd_split;

/* Load the configured data set's train and test splits (data.limit applied to train). 0, or a
 * negative UMDQ_E* code with a message naming the file and what is wrong with it. */
int umd_data_load(const umd_config *cfg, umd_split *train, umd_split *test, char *err, size_t errlen);
void umd_split_free(umd_split *s); /* accepts a zeroed split */

/* Where the reader is: epoch e visits the images in the Philox(seed, PHILOX_SHUFFLE, e) order;
 * pos is the next position in that order. A checkpoint records the cursor. The order is a keyed
 * bijection of [0, n) (a Feistel network with cycle walking, data.c), computed per position, so
 * the reader needs no buffer and any cursor can be restored exactly. */
typedef struct {
    uint64_t seed;
    int64_t epoch;
    int64_t pos;
} umd_cursor;

/* The next B images (wrapping into the next epoch) as float (B, c, h, w) in [-1, 1]
 * (x/127.5 - 1), with crop (area 0.8-1.0, aspect 3/4-4/3, bilinear back to h x w) and horizontal
 * flip when augment != 0 (Philox stream PHILOX_AUGMENT, so the same cursor gives the same batch),
 * and labels as int32 (B,). Advances the cursor. labels may be NULL. Allocates nothing. */
void umd_data_next_batch(const umd_split *s, umd_cursor *cur, int B, int augment, float *x,
                         int32_t *labels);

/* Images [first, first+B) of the split in file order, no augmentation (evaluation). Indices wrap
 * modulo n, so a fixed-size last batch repeats the first images. labels may be NULL. */
void umd_data_slice(const umd_split *s, int64_t first, int B, float *x, int32_t *labels);

#endif
