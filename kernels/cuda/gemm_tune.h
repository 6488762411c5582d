/* gemm_tune.h: the arithmetic of the GEMM tuner (gemm_tune.cu, UMDQ_CUDA_GEMM_TUNE), plain C that
 * the backend and the host tests compile alike: what a tuned shape is keyed by, the alignment a
 * pointer offers cuBLASLt, and which timed candidate is taken.
 *
 * The tuner times, once per shape, the algorithms cuBLASLt's heuristic lists for a GEMM that the
 * backend would otherwise hand to cublasGemmEx (whose own pick is the heuristic's first), and keeps
 * the fastest. Candidate 0 is cublasGemmEx itself: another is taken only where it is faster by
 * more than TUNE_MARGIN of candidate 0's time, so that timing noise between near-equal algorithms
 * does not change a run's algorithm (and its bits) for nothing. */
#ifndef UMDQ_KERNELS_CUDA_GEMM_TUNE_H
#define UMDQ_KERNELS_CUDA_GEMM_TUNE_H
#include <stdint.h>

#define TUNE_CANDIDATES 16 /* the heuristic's algorithms asked for, at most */
#define TUNE_SPLIT_BASES 4 /* of those, the first ones also tried with each of tune_splits' */
#define TUNE_MAX 48        /* cuBLASLt candidates timed for a shape, at most, split variants in */
#ifndef TUNE_REPS
#define TUNE_REPS 5        /* timed runs of each candidate, after one untimed */
#endif
#define TUNE_MARGIN 0.03f  /* another candidate must beat candidate 0 by more than this fraction */
#define TUNE_MIN_FLOP 8e9  /* shapes of fewer FLOPs (about 10 us on an H100) are not tuned */
#define TUNE_SNAPSHOT_TRIES 3 /* times a shape whose C cannot be copied aside is tried */

/* What a tuned GEMM is known by: the types, transposes, shape, leading dimensions, whether C is
 * read (beta != 0), and the alignment of each pointer (the algorithms differ by it). Row-major
 * terms, as gemm_ex_to takes them. */
typedef struct {
    int ab, cty, compute;      /* cudaDataType_t of A and B, of C; cublasComputeType_t */
    int transA, transB, M, N, K;
    long lda, ldb, ldc;
    int beta_nonzero;
    unsigned alignA, alignB, alignC; /* tune_align of each pointer */
} tune_key;

static inline int tune_key_eq(const tune_key *a, const tune_key *b) {
    return a->ab == b->ab && a->cty == b->cty && a->compute == b->compute &&
           a->transA == b->transA && a->transB == b->transB && a->M == b->M && a->N == b->N &&
           a->K == b->K && a->lda == b->lda && a->ldb == b->ldb && a->ldc == b->ldc &&
           a->beta_nonzero == b->beta_nonzero && a->alignA == b->alignA &&
           a->alignB == b->alignB && a->alignC == b->alignC;
}

/* The largest power of two, at most 256, that divides the address (256 for NULL): the alignment
 * to tell cuBLASLt (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES), which otherwise assumes 256. */
static inline unsigned tune_align(uintptr_t p) {
    unsigned a = 1;
    while (a < 256 && (p & (uintptr_t)(2 * a - 1)) == 0) a *= 2;
    return a;
}

/* The candidate to take from ms[0 .. n): each one's time (ms < 0: it failed or was not run).
 * Candidate 0 unless the fastest beats it by more than margin (a fraction of its time); where 0
 * did not run, the fastest that did; -1 when none ran. Ties go to the lower index. */
static inline int tune_pick(const float *ms, int n, float margin) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (ms[i] >= 0.0f && (best < 0 || ms[i] < ms[best])) best = i;
    if (best <= 0 || ms[0] < 0.0f) return best;
    return ms[best] < ms[0] * (1.0f - margin) ? best : 0;
}

/* The split-K counts to try beside the heuristic's own for a reduction over K: those that leave
 * every part at least TUNE_SPLIT_ROWS of K (fewer do not pay for their extra pass over the
 * output), into out (at most 7); how many. The weight gradients' K is every token of the batch
 * (tens of thousands of rows) over an output of a few dozen tiles, which is where a split fills
 * the multiprocessors that a whole reduction leaves idle. */
#define TUNE_SPLIT_ROWS 512
static inline int tune_splits(long K, int *out) {
    static const int counts[] = {2, 3, 4, 6, 8, 12, 16};
    int n = 0;
    for (int i = 0; i < 7; i++)
        if (K / counts[i] >= TUNE_SPLIT_ROWS) out[n++] = counts[i];
    return n;
}

/* A reduction over K split by hand into S parts (gemm_tune.cu's hand_split_gemm): parts 0 .. S-1
 * of R rows each (K / S rounded down to a multiple of 8, so that every part starts 16 bytes
 * aligned in a bf16 operand whose rows are), one strided-batched GEMM, part s starting s * stride
 * elements into each operand; the rest, K - S R rows (fewer than 8 S) from S * stride on, a GEMM
 * of its own added onto part 0. The strides are along the reduction of each row-major operand:
 * op(A) (M, K) is A's columns (stride R) or, transposed, its rows (R lda); op(B) (K, N) is B's
 * rows (R ldb) or, transposed, its columns (R). */
typedef struct {
    long R, rest, strideA, strideB;
} tune_parts;
static inline tune_parts tune_hand_parts(long K, int S, int transA, long lda, int transB,
                                         long ldb) {
    tune_parts t;
    t.R = K / S >= 8 ? K / S / 8 * 8 : K / S;
    t.rest = K - (long)S * t.R;
    t.strideA = transA ? t.R * lda : t.R;
    t.strideB = transB ? t.R : t.R * ldb;
    return t;
}

/* Floats from one part's (M, N) to the next in the hand split's workspace: M N rounded up to a
 * multiple of 64 (256 bytes), so that every part starts as aligned as the first. */
static inline long tune_part_stride(int M, int N) { return ((long)M * N + 63) / 64 * 64; }

#endif
