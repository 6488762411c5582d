/* gemm_tune.cu: the GEMM tuner of a bf16 context (UMDQ_CUDA_GEMM_TUNE=1, off by default: make
 * gpu-check timed B/4 within noise of the defaults with it): the backward's and the MLP's GEMMs,
 * and the Linears' forward plans.
 *
 * Without it, every GEMM that is not a Linear's forward (the backward's dx = dy W and
 * dW += dy^T x, the MLP's products, fc2's forward) goes to cublasGemmEx, which runs the first
 * algorithm of cuBLAS's heuristic. That pick is made from the shape alone, and the weight
 * gradients' shapes are the awkward ones: an output of a few dozen tiles (768 x 768 for proj, 768
 * x 3072 for fc1 and fc2) over a reduction of every token (65,792 rows on B/4), where the choice
 * between splitting K and not decides how many of the multiprocessors work.
 *
 * With it, a shape of at least TUNE_MIN_FLOP is timed the first time it is asked for outside a
 * recording, on its own operands. The trainer's first step runs op by op, so its shapes are
 * tuned there and the recorded step replays what was kept; a shape first met while recording is
 * recorded on cublasGemmEx, and tuned when it next runs op by op. The candidates:
 *   0. cublasGemmEx, as without the switch;
 *   - each algorithm cuBLASLt's heuristic lists for the shape (TUNE_CANDIDATES at most, within
 *     the context's cuBLASLt workspace, at the pointers' own alignment);
 *   - the heuristic's first few with the split-K counts it did not propose (gemm_tune.h's
 *     tune_splits, where K is long enough to share: the weight gradients);
 *   - where C is fp32, K split by hand into the same counts of parts (hand_split_gemm: the parts
 *     one strided-batched GEMM into the attention tiles' workspace, free between ops, then added
 *     onto C in order), which fill the device whatever cuBLASLt offers for the shape.
 * Each runs once untimed, then TUNE_REPS times between two events. The fastest is kept for the
 * context's life where it beats cublasGemmEx by more than TUNE_MARGIN (gemm_tune.h, tune_pick);
 * else the shape stays on cublasGemmEx, the same bits as without the switch (so too where
 * cuBLASLt refuses the shape's descriptors). A shape is known by its types, transposes, sizes,
 * leading dimensions, whether C is read, and the alignment of each pointer (tune_key).
 *
 * The timing runs write the real output. Where beta is 0 they only overwrite it, and the final
 * run writes it again. Where C is read (dW +=), C is copied aside first (a buffer allocated for the
 * moment, stream-ordered) and copied back before the final run, so the result is that of one GEMM;
 * where that copy cannot be had (over CUDA_TUNE_SNAPSHOT_MAX, or no memory) the shape runs on
 * cublasGemmEx, and is tried again at its next call op by op (the memory may be there outside
 * the first step's peak), TUNE_SNAPSHOT_TRIES times in all. The copy is not counted in the
 * context's peak (it lives during the first step only).
 *
 * Every candidate sums in an order its configuration fixes, as the backend's other reductions
 * (no float atomics): split-K parts are added through the workspace, or in place in C in
 * sequence (cublasLt.h: counters in the workspace keep the parts in order). A bf16 C
 * (cuda_gemm_bf16_to_bf16) is written as cublasGemmEx writes it in this context: the fp32 sums
 * rounded once, so none of its candidates adds parts in the output type (in place or not).
 *
 * Results: a tuned shape runs another algorithm than cublasGemmEx's, so its sums are added in
 * another order (fp32 rounding; for a bf16 C, one bf16 step where the sums straddle a rounding
 * boundary). Which algorithm wins is decided by timing, so two runs may keep different ones for a
 * shape whose candidates are within noise of each other beyond the margin; each run is
 * deterministic from its first step on.
 *
 * The Linears' forward runs on cuBLASLt plans of its own (linear.cu's lt_plan, with the bias
 * epilogue), whose algorithm is the heuristic's first, or for a bf16 y the fp32 y plan's of the
 * same shape where cuBLASLt takes it (as that plan's algorithm stands when the bf16 one is made:
 * so in a tuning context it depends on which ran first, fixed for a fixed order of ops). Each such
 * plan is timed the same way at its first run outside a recording (cuda_tune_lt): its own
 * algorithm (candidate 0) against the heuristic's others at the pointers' alignment, on the real
 * operands (y is only overwritten), the fastest kept past the margin. A plan for a bf16 y then
 * keeps its own fastest, so its values are no longer the fp32 plan's sums rounded bit for bit
 * (within a bf16 step of them). A plan first run while recording is recorded on its algorithm,
 * and tuned when it next runs op by op: that recording keeps the old algorithm (the trainer's
 * first step runs op by op, so its recording has every plan tuned).
 *
 * UMDQ_CUDA_GEMM_TUNE_LOG=1 prints a line per tuned shape to stderr (its candidates' times and
 * the one kept); UMDQ_CUDA_GEMM_TUNE_TAKE=n, read when the context is made (tests), takes
 * candidate n (past the last, the last: a hand split where there is one) where it ran,
 * whatever the times. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cuda_internal.h"
#include "gemm_tune.h"

#define CUDA_TUNE_SNAPSHOT_MAX (256u << 20) /* bytes of C copied aside while tuning, at most */

static size_t type_bytes(int t) { return t == CUDA_R_16BF ? 2 : 4; }

/* The GEMM as gemm_ex_to runs it (linear.cu): cuBLAS sees the column-major transpose. */
static cublasStatus_t default_gemm(umd_ctx *c, const tune_key *k, float alpha, const void *A,
                                   const void *B, float beta, void *C) {
    return cublasGemmEx(c->blas, k->transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                        k->transA ? CUBLAS_OP_T : CUBLAS_OP_N, k->N, k->M, k->K, &alpha, B,
                        (cudaDataType_t)k->ab, (int)k->ldb, A, (cudaDataType_t)k->ab, (int)k->lda,
                        &beta, C, (cudaDataType_t)k->cty, (int)k->ldc,
                        (cublasComputeType_t)k->compute, CUBLAS_GEMM_DEFAULT);
}

static cublasStatus_t plan_gemm(umd_ctx *c, const tune_plan *p, const cublasLtMatmulAlgo_t *algo,
                                float alpha, const void *A, const void *B, float beta, void *C) {
    /* cuBLASLt's A is our B (N x K as op(A) sees it), its B our A, its C and D our C (N x M) */
    return cublasLtMatmul(c->lt, p->desc, &alpha, B, p->la, A, p->lb, &beta, C, p->lc, C, p->lc,
                          algo, c->lt_ws, CUDA_LT_WORKSPACE, c->stream);
}

void cuda_tune_plan_release(tune_plan *p) {
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    p->desc = NULL, p->la = p->lb = p->lc = NULL;
}

/* The descriptors of the key's GEMM; 0, or -1 when cuBLASLt refuses one. */
static int plan_descriptors(tune_plan *p) {
    const tune_key *k = &p->key;
    cublasOperation_t ta = k->transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = k->transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    cudaDataType_t ab = (cudaDataType_t)k->ab, ct = (cudaDataType_t)k->cty;
    if (cublasLtMatmulDescCreate(&p->desc, (cublasComputeType_t)k->compute, CUDA_R_32F) ||
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) ||
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) ||
        cublasLtMatrixLayoutCreate(&p->la, ab, k->transB ? k->K : k->N, k->transB ? k->N : k->K,
                                   k->ldb) ||
        cublasLtMatrixLayoutCreate(&p->lb, ab, k->transA ? k->M : k->K, k->transA ? k->K : k->M,
                                   k->lda) ||
        cublasLtMatrixLayoutCreate(&p->lc, ct, k->N, k->M, k->ldc))
        return -1;
    return 0;
}

/* A configuration attribute of an algorithm as an int (-1 where cuBLASLt does not say). */
static long algo_attr(const cublasLtMatmulAlgo_t *a, cublasLtMatmulAlgoConfigAttributes_t what) {
    uint64_t v = 0;
    size_t n = 0, got = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(a, what, NULL, 0, &n) || n == 0 || n > sizeof v ||
        cublasLtMatmulAlgoConfigGetAttribute(a, what, &v, n, &got))
        return -1;
    return (long)v; /* little-endian: the low bytes hold a narrower attribute */
}

/* 1 when the algorithm takes pointers of these alignments (bytes, as cuBLASLt names the operands:
 * A, B, and C = D): its CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_* (a configuration the tuner made itself,
 * a split-K count, was never filtered by the heuristic's alignment preferences, and
 * cublasLtMatmulAlgoCheck sees no pointers; a misaligned access would be a sticky fault). An
 * attribute cuBLASLt does not report is no requirement. */
static int algo_fits_align(const cublasLtMatmulAlgo_t *a, uint32_t al_a, uint32_t al_b,
                           uint32_t al_c) {
    static const cublasLtMatmulAlgoCapAttributes_t caps[4] = {
        CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_A_BYTES, CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_C_BYTES, CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_D_BYTES};
    const uint32_t have[4] = {al_a, al_b, al_c, al_c};
    for (int i = 0; i < 4; i++) {
        uint32_t need = 0;
        size_t got = 0;
        if (cublasLtMatmulAlgoCapGetAttribute(a, caps[i], &need, sizeof need, &got) ==
                CUBLAS_STATUS_SUCCESS &&
            got == sizeof need && need > have[i])
            return 0;
    }
    return 1;
}

/* Up to TUNE_CANDIDATES algorithms of cuBLASLt's heuristic for the descriptors (cuBLASLt's A, B
 * and C = D), within the workspace, at the alignments given (bytes, as cuBLASLt names the
 * operands), for a bf16 output (bf16_d) none adding split-K parts in bf16: the usable ones into
 * res in the heuristic's order; how many. */
static int lt_candidates(umd_ctx *c, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t la,
                         cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc, uint32_t al_a,
                         uint32_t al_b, uint32_t al_c, int bf16_d,
                         cublasLtMatmulHeuristicResult_t *res) {
    size_t wsb = CUDA_LT_WORKSPACE;
    /* a bf16 output: split-K parts added in fp32 only */
    const uint32_t schemes = bf16_d ? (uint32_t)CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE
                                    : (uint32_t)CUBLASLT_REDUCTION_SCHEME_MASK;
    cublasLtMatmulPreference_t pref = NULL;
    int found = 0;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return 0;
    if (cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                             sizeof wsb) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                             &al_a, sizeof al_a) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                             &al_b, sizeof al_b) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                             &al_c, sizeof al_c) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                             &al_c, sizeof al_c) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                             &schemes, sizeof schemes) ||
        cublasLtMatmulAlgoGetHeuristic(c->lt, desc, la, lb, lc, lc, pref, TUNE_CANDIDATES, res,
                                       &found) != CUBLAS_STATUS_SUCCESS)
        found = 0;
    cublasLtMatmulPreferenceDestroy(pref);
    /* keep the usable ones (the mask again, as the algorithms say it) */
    int n = 0;
    for (int i = 0; i < found; i++)
        if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= CUDA_LT_WORKSPACE &&
            !(bf16_d && cuda_lt_sums_in_output(&res[i].algo)) &&
            algo_fits_align(&res[i].algo, al_a, al_b, al_c))
            res[n++] = res[i];
    return n;
}

/* The heuristic's algorithms for a tuned shape's plan, at its pointers' alignment (cuBLASLt's A
 * is our B); how many. */
static int heuristic_list(umd_ctx *c, const tune_plan *p, cublasLtMatmulHeuristicResult_t *res) {
    const tune_key *k = &p->key;
    return lt_candidates(c, p->desc, p->la, p->lb, p->lc, k->alignB, k->alignA, k->alignC,
                         k->cty == CUDA_R_16BF, res);
}

/* The configuration that tells two algorithms apart (their id and every configuration
 * attribute). */
static const cublasLtMatmulAlgoConfigAttributes_t SIG_ATTRS[] = {
    CUBLASLT_ALGO_CONFIG_ID,           CUBLASLT_ALGO_CONFIG_TILE_ID,
    CUBLASLT_ALGO_CONFIG_SPLITK_NUM,   CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
    CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION,
    CUBLASLT_ALGO_CONFIG_STAGES_ID,    CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID,
    CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID};
#define SIG_N (int)(sizeof SIG_ATTRS / sizeof *SIG_ATTRS)
static int same_config(const cublasLtMatmulAlgo_t *a, const cublasLtMatmulAlgo_t *b) {
    for (int i = 0; i < SIG_N; i++)
        if (algo_attr(a, SIG_ATTRS[i]) != algo_attr(b, SIG_ATTRS[i])) return 0;
    return 1;
}

/* To res[0 .. n) (the heuristic's), the first TUNE_SPLIT_BASES of them with each split-K count
 * of tune_splits where the algorithm splits K at all and cuBLASLt accepts the configuration
 * (cublasLtMatmulAlgoCheck, within the workspace), none already there, up to TUNE_MAX in all.
 * The parts are added in place in C (in order: cuBLASLt's counters keep the sequence) where C is
 * fp32, else through the workspace in fp32. The heuristic proposes a split where it predicts one
 * pays; these are the ones it did not. How many there are now. */
static int add_split_variants(umd_ctx *c, const tune_plan *p, cublasLtMatmulHeuristicResult_t *res,
                              int n) {
    int splits[7];
    const int ns = tune_splits(p->key.K, splits);
    const int bases = n < TUNE_SPLIT_BASES ? n : TUNE_SPLIT_BASES;
    const int bf16_c = p->key.cty == CUDA_R_16BF;
    for (int b = 0; b < bases && n < TUNE_MAX; b++) {
        int32_t can_split = 0;
        uint32_t mask = 0;
        size_t got = 0;
        if (cublasLtMatmulAlgoCapGetAttribute(&res[b].algo, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT,
                                              &can_split, sizeof can_split, &got) ||
            !can_split ||
            cublasLtMatmulAlgoCapGetAttribute(&res[b].algo, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK,
                                              &mask, sizeof mask, &got))
            continue;
        uint32_t scheme = !bf16_c && (mask & CUBLASLT_REDUCTION_SCHEME_INPLACE)
                              ? (uint32_t)CUBLASLT_REDUCTION_SCHEME_INPLACE
                              : (uint32_t)CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
        if (!(mask & scheme)) continue;
        for (int i = 0; i < ns && n < TUNE_MAX; i++) {
            cublasLtMatmulHeuristicResult_t r;
            memset(&r, 0, sizeof r);
            r.algo = res[b].algo;
            const int32_t s = splits[i];
            if (cublasLtMatmulAlgoConfigSetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &s,
                                                     sizeof s) ||
                cublasLtMatmulAlgoConfigSetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                                     &scheme, sizeof scheme))
                continue;
            int dup = 0;
            for (int j = 0; j < n && !dup; j++) dup = same_config(&res[j].algo, &r.algo);
            if (dup) continue;
            cublasLtMatmulHeuristicResult_t chk;
            if (cublasLtMatmulAlgoCheck(c->lt, p->desc, p->la, p->lb, p->lc, p->lc, &r.algo,
                                        &chk) != CUBLAS_STATUS_SUCCESS ||
                chk.workspaceSize > CUDA_LT_WORKSPACE ||
                !algo_fits_align(&r.algo, p->key.alignB, p->key.alignA, p->key.alignC))
                continue;
            r.workspaceSize = chk.workspaceSize;
            r.wavesCount = chk.wavesCount;
            r.state = CUBLAS_STATUS_SUCCESS;
            res[n++] = r;
        }
    }
    return n;
}

/* ---- K split by hand: the parts as one strided-batched GEMM, then added in order ------------- */

/* The part counts S of a hand split for the key: tune_splits' counts whose S parts of (M, N) fp32
 * (tune_part_stride apart) fit the attention tiles' workspace (free between ops: only attention's
 * ops use it, within themselves), for an fp32 C; into out; how many. hand_fits: one count. */
static int hand_fits(const umd_ctx *c, const tune_key *k, int S) {
    return c->attn && (size_t)S * (size_t)tune_part_stride(k->M, k->N) <= c->attn_floats;
}
static int hand_splits(const umd_ctx *c, const tune_key *k, int *out) {
    if (k->cty != CUDA_R_32F) return 0;
    int all[7], n = 0;
    const int ns = tune_splits(k->K, all);
    for (int i = 0; i < ns; i++)
        if (hand_fits(c, k, all[i])) out[n++] = all[i];
    return n;
}

/* C (M, N) at ldc = beta C + P_0 + P_1 + ... + P_{S-1} (each part (M, N) packed, pstride floats
 * apart), added in that order: the same sums whatever the grid. C is not read where beta is 0. */
__global__ static void k_add_parts(float *C, long ldc, const float *P, long pstride, int S, int M,
                                   int N, float beta) {
    const size_t mn = (size_t)M * N;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < mn;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t i = e / (size_t)N, j = e % (size_t)N;
        float v = beta != 0.0f ? beta * C[i * ldc + j] : 0.0f;
        for (int s = 0; s < S; s++) v += P[(size_t)s * pstride + e];
        C[i * ldc + j] = v;
    }
}

/* The key's GEMM with K split by hand into S parts (tune_hand_parts: parts of R rows of the
 * reduction, the rest added onto part 0 by a GEMM of its own) as one strided-batched cublasGemmEx
 * into the attention tiles' workspace, alpha in each, then k_add_parts. Deterministic: the parts
 * and their order are fixed by S. The GEMMs' status (CUBLAS_STATUS_SUCCESS when all and the sum
 * were queued). A failed launch of the sum fails the context where `final` (the kept algorithm's
 * run, its CUDA error named), else only the candidate (EXECUTION_FAILED). */
static cublasStatus_t hand_split_gemm(umd_ctx *c, const char *op, int final, const tune_key *k,
                                      int S, float alpha, const void *A, const void *B, float beta,
                                      void *C) {
    const tune_parts t = tune_hand_parts(k->K, S, k->transA, k->lda, k->transB, k->ldb);
    const long R = t.R, rest = t.rest, strideA = t.strideA, strideB = t.strideB;
    const size_t esz = type_bytes(k->ab);
    const long mn = (long)k->M * k->N, pstride = tune_part_stride(k->M, k->N);
    float *P = c->attn;
    const float zero = 0.0f, one = 1.0f;
    cublasStatus_t s = cublasGemmStridedBatchedEx(
        c->blas, k->transB ? CUBLAS_OP_T : CUBLAS_OP_N, k->transA ? CUBLAS_OP_T : CUBLAS_OP_N, k->N,
        k->M, (int)R, &alpha, B, (cudaDataType_t)k->ab, (int)k->ldb, strideB, A,
        (cudaDataType_t)k->ab, (int)k->lda, strideA, &zero, P, CUDA_R_32F, k->N, pstride, S,
        (cublasComputeType_t)k->compute, CUBLAS_GEMM_DEFAULT);
    if (s == CUBLAS_STATUS_SUCCESS && rest > 0) {
        const char *Ar = (const char *)A + (size_t)(S * strideA) * esz;
        const char *Br = (const char *)B + (size_t)(S * strideB) * esz;
        s = cublasGemmEx(c->blas, k->transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                         k->transA ? CUBLAS_OP_T : CUBLAS_OP_N, k->N, k->M, (int)rest, &alpha, Br,
                         (cudaDataType_t)k->ab, (int)k->ldb, Ar, (cudaDataType_t)k->ab,
                         (int)k->lda, &one, P, CUDA_R_32F, k->N, (cublasComputeType_t)k->compute,
                         CUBLAS_GEMM_DEFAULT);
    }
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    const unsigned blocks = cuda_blocks((size_t)mn, 256);
    k_add_parts<<<blocks < 4096 ? blocks : 4096, 256, 0, c->stream>>>(
        (float *)C, k->ldc, P, pstride, S, k->M, k->N, beta);
    const cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) return CUBLAS_STATUS_SUCCESS;
    if (final) cuda_check(c, e, op);
    return CUBLAS_STATUS_EXECUTION_FAILED;
}

/* One run of candidate i (the caller's arg says of what): its status, CUBLAS_STATUS_SUCCESS when
 * it was queued. */
typedef cublasStatus_t (*run_fn)(umd_ctx *c, const void *arg, int i);

/* The times of candidates 0 .. n-1 into ms, in ms a run: each once untimed, then TUNE_REPS times
 * between two events; -1 for one that cuBLAS refused or whose launch failed (only dropped: what
 * it queued before wrote only C, which is overwritten or given back, and scratch). An event's
 * failure is the device's, not a candidate's: it fails the context, and the timing stops. */
static void time_all(umd_ctx *c, const char *op, run_fn run, const void *arg, int n, float *ms) {
    for (int i = 0; i < n; i++) ms[i] = -1.0f;
    cudaEvent_t t0 = NULL, t1 = NULL;
    if (!cuda_check(c, cudaEventCreate(&t0), op) && !cuda_check(c, cudaEventCreate(&t1), op)) {
        for (int i = 0; i < n && !c->failed; i++) {
            int ok = 1;
            for (int r = -1; r < TUNE_REPS && ok && !c->failed; r++) {
                if (r == 0 && cuda_check(c, cudaEventRecord(t0, c->stream), op)) break;
                if (run(c, arg, i) != CUBLAS_STATUS_SUCCESS) {
                    /* a launch the candidate could not make is its own (not left for the next
                     * op's check to blame); a fault of the device stays, for the caller's
                     * synchronisation */
                    (void)cudaGetLastError();
                    ok = 0;
                }
            }
            /* a launch error a library left pending is the candidate's too (a sticky fault
             * stays, and the event below fails the context) */
            if (ok && cudaPeekAtLastError() != cudaSuccess) {
                (void)cudaGetLastError();
                ok = 0;
            }
            float t = -1.0f;
            if (ok && !c->failed && !cuda_check(c, cudaEventRecord(t1, c->stream), op) &&
                !cuda_check(c, cudaEventSynchronize(t1), op) &&
                !cuda_check(c, cudaEventElapsedTime(&t, t0, t1), op))
                ms[i] = t / TUNE_REPS;
        }
    }
    if (t0) cudaEventDestroy(t0);
    if (t1) cudaEventDestroy(t1);
}

/* A tuned shape's candidates (time_all's arg): 0 cublasGemmEx, 1 .. lt_n cand[i - 1], then the
 * hand splits of p->hand, on these operands. */
typedef struct {
    const tune_plan *p;
    const cublasLtMatmulHeuristicResult_t *cand;
    const char *op;
    float alpha, beta;
    const void *A, *B;
    void *C;
} shape_run;
static cublasStatus_t run_shape(umd_ctx *c, const void *arg, int i) {
    const shape_run *a = (const shape_run *)arg;
    const tune_plan *p = a->p;
    if (i == 0) return default_gemm(c, &p->key, a->alpha, a->A, a->B, a->beta, a->C);
    if (i <= p->lt_n)
        return plan_gemm(c, p, &a->cand[i - 1].algo, a->alpha, a->A, a->B, a->beta, a->C);
    return hand_split_gemm(c, a->op, 0, &p->key, p->hand[i - 1 - p->lt_n], a->alpha, a->A, a->B,
                           a->beta, a->C);
}

/* One line on stderr for a tuned shape (UMDQ_CUDA_GEMM_TUNE_LOG=1). */
static void log_plan(const tune_plan *p, const float *ms, int n,
                     const cublasLtMatmulHeuristicResult_t *cand) {
    const tune_key *k = &p->key;
    const double flop = 2.0 * k->M * k->N * k->K;
    fprintf(stderr,
            "umdq gemm tune: %s %s%s M %d N %d K %d%s%s: cublasGemmEx %.3f ms (%.0f TFLOP/s)",
            p->op, k->transA ? "T" : "N", k->transB ? "T" : "N", k->M, k->N, k->K,
            k->cty == CUDA_R_16BF ? " bf16 C" : "", k->beta_nonzero ? " C +=" : "", ms[0],
            ms[0] > 0 ? flop / (ms[0] * 1e9) : 0.0);
    for (int i = 1; i < n; i++) {
        if (i > p->lt_n) {
            fprintf(stderr, "; #%d %.3f (K split by hand in %d)", i, ms[i],
                    p->hand[i - 1 - p->lt_n]);
            continue;
        }
        const cublasLtMatmulAlgo_t *a = &cand[i - 1].algo;
        fprintf(stderr, "; #%d %.3f (algo %ld tile %ld stages %ld split %ld/%ld, %.2f waves)", i,
                ms[i], algo_attr(a, CUBLASLT_ALGO_CONFIG_ID),
                algo_attr(a, CUBLASLT_ALGO_CONFIG_TILE_ID),
                algo_attr(a, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                algo_attr(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
                algo_attr(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME), cand[i - 1].wavesCount);
    }
    if (p->pick > 0)
        fprintf(stderr, "; took #%d, %.3f ms (%.0f TFLOP/s), %.2fx\n", p->pick, ms[p->pick],
                flop / (ms[p->pick] * 1e9), ms[p->pick] > 0 ? ms[0] / ms[p->pick] : 0.0);
    else
        fprintf(stderr, "; kept cublasGemmEx%s\n",
                p->snapshot_refused ? (p->tries < TUNE_SNAPSHOT_TRIES
                                           ? " (C not copied aside: tried again later)"
                                           : " (C not copied aside: left untuned)")
                                    : "");
}

/* Tunes the key's GEMM on these operands into a new plan (nothing is left computed: the caller
 * runs it). NULL where the table is full or the plan's descriptors or the copy of C fail without
 * a context failure (the caller then runs cublasGemmEx). */
static tune_plan *tune(umd_ctx *c, const char *op, const tune_key *k, float alpha, const void *A,
                       const void *B, float beta, void *C, tune_plan *again) {
    tune_plan *p = again;
    int tries = 0;
    if (p) {
        /* a shape whose C could not be copied aside, once more (its descriptors anew) */
        tries = p->tries;
        cuda_tune_plan_release(p);
    } else {
        if (!c->tuned) {
            c->tuned = (tune_plan *)calloc(CUDA_TUNE_PLANS, sizeof *c->tuned);
            if (!c->tuned) return NULL;
        }
        if (c->ntuned == CUDA_TUNE_PLANS) return NULL;
        p = &c->tuned[c->ntuned++];
    }
    memset(p, 0, sizeof *p);
    p->tries = tries + 1;
    p->key = *k;
    snprintf(p->op, sizeof p->op, "%s", op);
    if (plan_descriptors(p) != 0) return p; /* pick 0: cublasGemmEx */
    cublasLtMatmulHeuristicResult_t cand[TUNE_MAX];
    p->heuristic_n = heuristic_list(c, p, cand);
    p->lt_n = add_split_variants(c, p, cand, p->heuristic_n);
    p->nhand = hand_splits(c, k, p->hand);
    const int n = 1 + p->lt_n + p->nhand;
    /* C aside, where it is read */
    void *saved = NULL;
    size_t cbytes = ((size_t)(k->M - 1) * (size_t)k->ldc + (size_t)k->N) * type_bytes(k->cty);
    if (k->beta_nonzero) {
        /* stream-ordered, so neither the allocation nor the release waits for the whole device;
         * no memory for it (cudaErrorMemoryAllocation, not sticky) only leaves the shape untuned */
        if (cbytes > CUDA_TUNE_SNAPSHOT_MAX ||
            cudaMallocAsync(&saved, cbytes, c->stream) != cudaSuccess) {
            (void)cudaGetLastError();
            p->snapshot_refused = 1;
            saved = NULL;
        } else if (cuda_check(c, cudaMemcpyAsync(saved, C, cbytes, cudaMemcpyDeviceToDevice,
                                                 c->stream), op)) {
            cudaFreeAsync(saved, c->stream);
            return NULL;
        }
    }
    float ms[1 + TUNE_MAX + 7]; /* cublasGemmEx, the cuBLASLt candidates, the hand splits */
    for (int i = 0; i < n; i++) ms[i] = -1.0f;
    if (!p->snapshot_refused) {
        const shape_run run = {p, cand, op, alpha, beta, A, B, C};
        time_all(c, op, run_shape, &run, n, ms);
    }
    if (saved) {
        cuda_check(c, cudaMemcpyAsync(C, saved, cbytes, cudaMemcpyDeviceToDevice, c->stream), op);
        cuda_check(c, cudaFreeAsync(saved, c->stream), op);
    }
    /* whatever ran, done and without a fault before anything is kept */
    cuda_check(c, cudaStreamSynchronize(c->stream), op);
    if (c->failed) return NULL;
    const int take = c->tune_take < n ? c->tune_take : n - 1; /* past the end: the last */
    p->pick = take >= 0 && ms[take] >= 0.0f ? take : tune_pick(ms, n, TUNE_MARGIN);
    if (p->pick < 0) p->pick = 0;
    if (!p->snapshot_refused) c->tune_variants += n - 1 - p->heuristic_n;
    if (p->pick > p->lt_n) {
        p->hand_split = p->hand[p->pick - 1 - p->lt_n];
        c->ntook++;
        c->ntook_split++;
        c->ntook_hand++;
    } else if (p->pick > 0) {
        p->algo = cand[p->pick - 1].algo;
        c->ntook++;
        if (algo_attr(&p->algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM) > 1) c->ntook_split++;
    }
    if (c->tune_log) log_plan(p, ms, n, cand);
    return p;
}

/* 1 while the context records its step or the stream is being captured (or cannot say: its
 * error is cleared, not left for the next op's check to blame): nothing may wait then. */
static int capturing(umd_ctx *c) {
    if (c->recording) return 1;
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(c->stream, &st) != cudaSuccess) {
        (void)cudaGetLastError();
        return 1;
    }
    return st != cudaStreamCaptureStatusNone;
}

int cuda_gemm_tuned(umd_ctx *c, const char *op, int ab, int cty, int compute, int transA,
                    int transB, int M, int N, int K, float alpha, const void *A, long lda,
                    const void *B, long ldb, float beta, void *C, long ldc) {
    if (!c->gemm_tune || c->failed || ab != CUDA_R_16BF || K <= 0) return -1;
    /* a short GEMM's time is its launch's more than its kernel's (and a recorded step has no
     * launch cost): not tuned, unless a test asks for a candidate (TAKE) */
    if (2.0 * M * N * K < TUNE_MIN_FLOP && c->tune_take < 0) return -1;
    tune_key k;
    memset(&k, 0, sizeof k);
    k.ab = ab, k.cty = cty, k.compute = compute, k.transA = transA, k.transB = transB;
    k.M = M, k.N = N, k.K = K, k.lda = lda, k.ldb = ldb, k.ldc = ldc, k.beta_nonzero = beta != 0.0f;
    k.alignA = tune_align((uintptr_t)A), k.alignB = tune_align((uintptr_t)B);
    k.alignC = tune_align((uintptr_t)C);
    tune_plan *p = NULL;
    for (int i = 0; i < c->ntuned && !p; i++)
        if (tune_key_eq(&c->tuned[i].key, &k)) p = &c->tuned[i];
    /* a new shape, or one whose C could not be copied aside (no memory for the moment in the
     * first step's peak): timed now, if not recording */
    if (!p || (p->snapshot_refused && p->tries < TUNE_SNAPSHOT_TRIES)) {
        /* tuning waits for the device: never while the stream is being recorded */
        if (capturing(c)) return -1; /* cublasGemmEx (a refused shape kept pick 0) */
        p = tune(c, op, &k, alpha, A, B, beta, C, p);
        if (c->failed) return 0;
        if (!p) return -1;
    }
    if (p->pick == 0) return -1;
    /* a hand split's workspace as it is now (set_workspace may have carved another since) */
    if (p->hand_split && !hand_fits(c, &p->key, p->hand_split)) return -1;
    c->tune_runs++;
    if (p->hand_split) {
        const cublasStatus_t st =
            hand_split_gemm(c, op, 1, &p->key, p->hand_split, alpha, A, B, beta, C);
        if (!c->failed) cublas_check(c, st, op);
    } else {
        cublas_check(c, plan_gemm(c, p, &p->algo, alpha, A, B, beta, C), op);
    }
    return 0;
}

/* ---- the Linears' forward plans (linear.cu's lt_plan: cuBLASLt with the bias epilogue) ------ */

/* A forward plan's candidates (time_all's arg): the plan's GEMM D = op(A) B (+ bias) with
 * algorithm cand[i], as cuda_lt_linear runs it (beta 0). */
typedef struct {
    const lt_plan *p;
    const cublasLtMatmulHeuristicResult_t *cand;
    const void *A, *B;
    void *D;
} plan_run;
static cublasStatus_t run_plan(umd_ctx *c, const void *arg, int i) {
    const plan_run *a = (const plan_run *)arg;
    const float one = 1.0f, zero = 0.0f;
    return cublasLtMatmul(c->lt, a->p->desc, &one, a->A, a->p->a, a->B, a->p->b, &zero, a->D,
                          a->p->d, a->D, a->p->d, &a->cand[i].algo, c->lt_ws, CUDA_LT_WORKSPACE,
                          c->stream);
}

void cuda_tune_lt(umd_ctx *c, const char *op, lt_plan *p, const void *A, const void *B, void *D) {
    if (!c->gemm_tune || p->tuned || c->failed || p->epi != LT_EPI_NONE) return;
    if (capturing(c)) return; /* tuned when it next runs op by op */
    p->tuned = 1;
    if (2.0 * p->M * p->N * p->K < TUNE_MIN_FLOP && c->tune_take < 0) return;
    /* candidate 0: the plan's own algorithm; then the heuristic's others */
    cublasLtMatmulHeuristicResult_t cand[TUNE_CANDIDATES + 1];
    memset(&cand[0], 0, sizeof cand[0]);
    cand[0].algo = p->algo;
    /* at the pointers' own alignment (the plan's algorithm assumed 256 bytes of each) */
    cublasLtMatmulHeuristicResult_t res[TUNE_CANDIDATES];
    const int found = lt_candidates(c, p->desc, p->a, p->b, p->d, tune_align((uintptr_t)A),
                                    tune_align((uintptr_t)B), tune_align((uintptr_t)D), p->ybf16,
                                    res);
    int n = 1;
    for (int i = 0; i < found; i++)
        if (!same_config(&res[i].algo, &p->algo)) cand[n++] = res[i];
    float ms[TUNE_CANDIDATES + 1];
    const plan_run run = {p, cand, A, B, D};
    time_all(c, op, run_plan, &run, n, ms);
    cuda_check(c, cudaStreamSynchronize(c->stream), op);
    if (c->failed) return;
    const int take = c->tune_take < n ? c->tune_take : n - 1;
    int pick = take >= 0 && ms[take] >= 0.0f ? take : tune_pick(ms, n, TUNE_MARGIN);
    if (pick < 0) pick = 0;
    c->ntuned_lt++;
    if (pick > 0) {
        /* taken at these pointers' alignment: a call with less runs the plan's own (algo0) */
        p->algo0 = p->algo;
        p->tuned_align[0] = tune_align((uintptr_t)A), p->tuned_align[1] = tune_align((uintptr_t)B);
        p->tuned_align[2] = tune_align((uintptr_t)D);
        p->algo = cand[pick].algo;
        p->retuned = 1;
        c->ntook_lt++;
    }
    if (c->tune_log) {
        const double flop = 2.0 * p->M * p->N * p->K;
        fprintf(stderr, "umdq gemm tune: %s (cuBLASLt plan%s%s) M %d N %d K %d: its algorithm %.3f "
                "ms (%.0f TFLOP/s)", op, p->bias ? ", bias" : "", p->ybf16 ? ", bf16 y" : "",
                p->M, p->N, p->K, ms[0], ms[0] > 0 ? flop / (ms[0] * 1e9) : 0.0);
        for (int i = 1; i < n; i++)
            fprintf(stderr, "; #%d %.3f (algo %ld tile %ld stages %ld split %ld)", i, ms[i],
                    algo_attr(&cand[i].algo, CUBLASLT_ALGO_CONFIG_ID),
                    algo_attr(&cand[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID),
                    algo_attr(&cand[i].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                    algo_attr(&cand[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM));
        if (pick > 0)
            fprintf(stderr, "; took #%d, %.3f ms (%.0f TFLOP/s), %.2fx\n", pick, ms[pick],
                    flop / (ms[pick] * 1e9), ms[0] / ms[pick]);
        else
            fprintf(stderr, "; kept its algorithm\n");
    }
}
