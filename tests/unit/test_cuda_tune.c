/* test_cuda_tune: the GEMM tuner's arithmetic (kernels/cuda/gemm_tune.h, compiled for the host),
 * on every machine: which timed candidate is kept (cublasGemmEx unless another beats it by more
 * than the margin), the alignment a pointer offers cuBLASLt, what tells two shapes apart, the
 * split-K counts tried beside the heuristic's, and the parts of a reduction split by hand. */
/* umdq-uses: common */
#include "t.h"
#include "cuda/gemm_tune.h"

static void test_tune_pick(void) {
    /* candidate 0 (cublasGemmEx) kept within the margin, another taken past it */
    const float within[] = {1.00f, 0.98f, 1.20f};
    T_EQ_INT(tune_pick(within, 3, 0.03f), 0);
    const float past[] = {1.00f, 0.96f, 0.90f, 0.95f};
    T_EQ_INT(tune_pick(past, 4, 0.03f), 2);
    /* exactly at the margin is not past it */
    const float at[] = {1.0f, 0.75f};
    T_EQ_INT(tune_pick(at, 2, 0.25f), 0);
    T_EQ_INT(tune_pick(at, 2, 0.0f), 1);
    /* failed candidates (< 0) are never taken; candidate 0 failed: the fastest that ran */
    const float failed[] = {1.0f, -1.0f, 0.5f};
    T_EQ_INT(tune_pick(failed, 3, 0.03f), 2);
    const float zero_failed[] = {-1.0f, 2.0f, 1.5f, 1.6f};
    T_EQ_INT(tune_pick(zero_failed, 4, 0.03f), 2);
    const float none[] = {-1.0f, -1.0f};
    T_EQ_INT(tune_pick(none, 2, 0.03f), -1);
    T_EQ_INT(tune_pick(none, 0, 0.03f), -1);
    /* ties go to the lower index */
    const float ties[] = {1.0f, 0.5f, 0.5f};
    T_EQ_INT(tune_pick(ties, 3, 0.03f), 1);
    const float only[] = {0.7f};
    T_EQ_INT(tune_pick(only, 1, 0.03f), 0);
}

static void test_tune_align(void) {
    T_EQ_INT((int)tune_align(0), 256);
    T_EQ_INT((int)tune_align(4096), 256);
    T_EQ_INT((int)tune_align(256 + 128), 128);
    T_EQ_INT((int)tune_align(1000), 8);
    T_EQ_INT((int)tune_align(2), 2);
    T_EQ_INT((int)tune_align(3), 1);
    /* a bf16 row offset: 37 rows of 61 values from a 256-byte base */
    T_EQ_INT((int)tune_align(0x7f0000000000u + 37 * 61 * 2), 2);
    T_EQ_INT((int)tune_align(0x7f0000000000u + 64 * 768 * 2), 256);
}

static void test_tune_key(void) {
    tune_key a = {14, 0, 68, 1, 0, 768, 3072, 65792, 768, 3072, 3072, 1, 256, 256, 256};
    tune_key b = a;
    T_CHECK(tune_key_eq(&a, &b));
    /* each field tells shapes apart */
    int *fields[] = {&b.ab, &b.cty, &b.compute, &b.transA, &b.transB, &b.M, &b.N, &b.K,
                     &b.beta_nonzero};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        b = a;
        *fields[i] += 1; /* the pointers are into b */
        T_CHECK_MSG(!tune_key_eq(&a, &b), "field %zu", i);
    }
    long *lds[] = {&b.lda, &b.ldb, &b.ldc};
    for (size_t i = 0; i < 3; i++) {
        b = a;
        *lds[i] += 8;
        T_CHECK_MSG(!tune_key_eq(&a, &b), "leading dimension %zu", i);
    }
    unsigned *al[] = {&b.alignA, &b.alignB, &b.alignC};
    for (size_t i = 0; i < 3; i++) {
        b = a;
        *al[i] = 16;
        T_CHECK_MSG(!tune_key_eq(&a, &b), "alignment %zu", i);
    }
}

static void test_tune_splits(void) {
    int out[7];
    T_EQ_INT(tune_splits(0, out), 0);
    T_EQ_INT(tune_splits(1023, out), 0);
    T_EQ_INT(tune_splits(1024, out), 1);
    T_EQ_INT(out[0], 2);
    T_EQ_INT(tune_splits(4096, out), 5); /* 2, 3, 4, 6, 8: 512 rows each at 8 */
    T_EQ_INT(out[4], 8);
    T_EQ_INT(tune_splits(4095, out), 4);
    /* B/4's weight gradients: every count */
    T_EQ_INT(tune_splits(65792, out), 7);
    T_EQ_INT(out[0], 2);
    T_EQ_INT(out[6], 16);
    for (int i = 0; i < 7; i++) T_CHECK(65792 / out[i] >= TUNE_SPLIT_ROWS);
}

/* The hand split's parts cover the reduction once: for every transpose, element (i, k) of op(A)
 * and (k, j) of op(B) for each k in [0, K) lie in exactly one part (or the rest), at the offset
 * the part's stride gives, found by walking the parts as hand_split_gemm hands them to cuBLAS. */
static void test_tune_hand_parts(void) {
    const long Ks[] = {1024, 4096, 4095, 65792, 8192 + 7};
    const int Ss[] = {2, 3, 4, 6, 8, 12, 16};
    for (size_t a = 0; a < sizeof Ks / sizeof *Ks; a++)
        for (size_t b = 0; b < sizeof Ss / sizeof *Ss; b++)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++) {
                    const long K = Ks[a], lda = 96 + 3, ldb = 80 + 1;
                    const int S = Ss[b];
                    const tune_parts t = tune_hand_parts(K, S, ta, lda, tb, ldb);
                    T_CHECK(t.R >= 1 && t.rest >= 0 && t.rest < 8 * S && S * t.R + t.rest == K);
                    T_CHECK(t.R % 8 == 0); /* K / S >= 64 here */
                    /* row k of the reduction: part k / R (or the rest past S R), at row k - s R
                     * of the part; its offset into A from the part's start must be where the
                     * whole operand holds it (element (0, k) of op(A): k, or k lda transposed) */
                    for (long k = 0; k < K; k += K / 37 + 1) {
                        const long s = k < S * t.R ? k / t.R : S, kk = k - s * t.R;
                        const long inA = ta ? kk * lda : kk, inB = tb ? kk : kk * ldb;
                        T_CHECK(s * t.strideA + inA == (ta ? k * lda : k));
                        T_CHECK(s * t.strideB + inB == (tb ? k : k * ldb));
                    }
                }
}

static void test_tune_part_stride(void) {
    T_EQ_INT(tune_part_stride(1, 1), 64);
    T_EQ_INT(tune_part_stride(8, 8), 64);
    T_EQ_INT(tune_part_stride(3, 43), 192);
    T_EQ_INT(tune_part_stride(768, 3072), 768L * 3072);
    T_EQ_INT(tune_part_stride(1536, 1536), 1536L * 1536);
    T_EQ_INT(tune_part_stride(37, 53) % 64, 0);
    T_CHECK(tune_part_stride(37, 53) >= 37 * 53 && tune_part_stride(37, 53) < 37 * 53 + 64);
}

int main(void) {
    T_RUN(test_tune_pick);
    T_RUN(test_tune_align);
    T_RUN(test_tune_key);
    T_RUN(test_tune_splits);
    T_RUN(test_tune_hand_parts);
    T_RUN(test_tune_part_stride);
    return t_done();
}
