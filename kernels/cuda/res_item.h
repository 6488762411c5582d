/* res_item.h: how the resident mma attention kernels (mma_attention.cu) share out a block's work
 * among its 4 warps, in a header of its own so that the host compiles the same arithmetic
 * (test_cuda_partition checks it on every machine, with or without a GPU).
 *
 * A block holds one (sequence, head) whole: T rows in strips of 16 (S = T rounded up to 16, in
 * strips), each strip's products running over every row of the operand the block holds. The
 * warps take the strips in turn, so where S is 4k + 1 or 4k + 2 (more than 4) one or two warps
 * would compute a last strip each while the others wait. With the split (UMDQ_CUDA_ATTN_SPLIT)
 * those 1 or 2 strips are shared: the whole strips come first (a multiple of 4), then each warp
 * takes one part of a shared strip, 4 / shared warps a strip, each part running over a range of
 * the other operand's rows (whole strips of 16, in order; the last part up to T). */
#ifndef UMDQ_CUDA_RES_ITEM_H
#define UMDQ_CUDA_RES_ITEM_H

#ifdef __CUDACC__
#define RES_HD __host__ __device__
#else
#define RES_HD
#endif

#define RES_WARPS 4 /* the warps of a block */

/* Floats of shared memory a shared strip's parts combine in (mma_attention.cu: part_sums for the
 * dQ kernel's one accumulator and the dK dV kernel's two, part_merge for the forward's O and its
 * softmax statistics), each 32 lanes' fragments of a 16 x 64 strip. */
#define RES_RED_DQ 1024
#define RES_RED_DKDV 2048
#define RES_RED_FWD 1152

typedef struct {
    int r;        /* the strip's first row */
    int from, to; /* the rows of the other operand it runs over */
    int part;     /* 0 .. parts - 1 for a shared strip; 0 for a whole one */
    int parts;    /* warps sharing the strip; 1 for a whole one */
} res_item;

/* The strips shared (0, 1 or 2) at T tokens, split or not. */
static inline RES_HD int res_shared(int T, int split) {
    const int S = (T + 15) / 16, rem = S % RES_WARPS;
    return split && S > RES_WARPS && (rem == 1 || rem == 2) ? rem : 0;
}

/* The rows of the whole strips at T tokens with `shared` strips shared: the bound of the rows the
 * warps take in turn, T where none is shared. */
static inline RES_HD int res_whole_rows(int T, int shared) {
    return shared ? 16 * ((T + 15) / 16 - shared) : T;
}

/* Item i of a block at T tokens with `shared` strips shared (res_shared): item i of the block is
 * warp i % 4's, in its (i / 4)-th turn; every warp's last item is its part of a shared strip. */
static inline RES_HD res_item res_item_at(int i, int T, int shared) {
    const int S = (T + 15) / 16, whole = S - shared;
    res_item it;
    if (i < whole) {
        it.r = 16 * i, it.from = 0, it.to = T, it.part = 0, it.parts = 1;
        return it;
    }
    const int parts = RES_WARPS / shared, j = i - whole;
    it.part = j % parts;
    it.parts = parts;
    it.r = 16 * (whole + j / parts);
    it.from = 16 * (it.part * S / parts);
    it.to = it.part == parts - 1 ? T : 16 * ((it.part + 1) * S / parts);
    return it;
}

#endif
