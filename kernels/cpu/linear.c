/* linear.c: GEMM and Linear layers (forward and backward) on OpenBLAS.
 *
 * Parallelisation: OpenBLAS runs single-threaded; each op splits its work across the team and
 * every thread calls sgemm on its own block:
 *   forward  y (M, N) = x W^T + b   the M rows split across threads, each thread's rows in
 *                                   blocks of 512 (y's block stays in L2 between the bias fill and
 *                                   the sgemm that accumulates onto it);
 *   backward dx (M, K) = dy W       the same row split and blocks;
 *            dW (N, K) += dy^T x    the M rows (the sum) split across threads: thread 0 adds its
 *                                   rows straight into dW, thread t > 0 into a partial in its
 *                                   workspace, and after a barrier the partials are added to dW
 *                                   in thread order (so the result is fixed for a thread count);
 *            db (N) += sum_m dy     columns split across threads, rows summed in order.
 * Measured on this model's shapes (2 cores, AVX2): the bias fill + beta = 1 form and the row
 * blocks are each worth 10-15% over sgemm-then-add on whole halves, and splitting dW's sum over M
 * beats splitting its N rows by about 5%.
 * Numerics: plain fp32 sgemm; sums over M of up to a few thousand rows in fp32 (as PyTorch).
 * A bf16 operand x (umd_ops_cpu_bf16) is widened to fp32 a block of rows at a time into the
 * thread's scratch (cpu_widen) and the same sgemm reads it; a bf16 y is computed there in fp32
 * and rounded once. While x and y together are at most 4096 wide the blocks are the fp32 op's,
 * so the forward gives the fp32 op's bits on the widened values (rounded, for a bf16 y); in dW
 * the sum over a thread's rows runs a block at a time (beta 1), another association than one
 * sgemm over them all. A bf16 dy (UMD_GRAD: a gradient tensor) is widened likewise, a block of
 * rows before x's in the scratch, and db sums its widened values in the fp32 op's order: the
 * fp32 op's bits on the widened dy while its row blocks are those of the fp32 op (N + K <= 4096).
 *
 * The MLP (mlp_fwd, mlp_bwd) is the composition of these Linears with elementwise.c's GELU,
 * gelu(h) materialised in the caller's tmp: the results are those of the separate ops, bit for
 * bit. Its backward needs gelu(h) (for dW2) and dy W2 (for dh) in turn, never at once, so one
 * (M, F) scratch serves both: gelu(h) into tmp, dW2 and db2, then tmp = dy W2 (the same row
 * blocks as linear_bwd's dx), GELU's backward in place, then fc1's backward. */
#include "blas.h"
#include "cpu.h"

#define ROW_BLOCK 512
/* Rows below which a thread gets no GEMM chunk. */
#define GEMM_MIN_ROWS_PER_THREAD 16

/* The team for a GEMM of `flops` split over `rows`. */
static int team_for(const umd_ctx *c, long rows, double flops) {
    long nt = rows / GEMM_MIN_ROWS_PER_THREAD;
    if (nt < 1) nt = 1;
    int t = cpu_team(c, flops / 8.0);
    return nt < t ? (int)nt : t;
}

void cpu_gemm(umd_ctx *c, int transA, int transB, int M, int N, int K, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    CPU_PARALLEL(team_for(c, M, 2.0 * M * N * K), {
        long lo, hi;
        cpu_split(M, tid, team, &lo, &hi);
        if (hi > lo) {
            /* rows lo..hi of op(A): with A transposed they are columns of A */
            const float *a = transA ? A + lo : A + lo * (long)lda;
            cblas_sgemm(CPU_BLAS_ROW_MAJOR, transA ? CPU_BLAS_TRANS : CPU_BLAS_NO_TRANS,
                        transB ? CPU_BLAS_TRANS : CPU_BLAS_NO_TRANS, (int)(hi - lo), N, K, alpha, a,
                        lda, B, ldb, beta, C + lo * (long)ldc, ldc);
        }
    });
}

/* Rows of bf16 operands (K values a row together) widened at a time: a row block (K <= 4096), or
 * fewer to fit the scratch. */
static long widen_rows(int K) {
    long r = CPU_WIDEN_FLOATS / (K > 0 ? K : 1);
    return r < ROW_BLOCK ? r : ROW_BLOCK;
}

/* Rows [r0, r1) of the bf16 operand x (K wide) widened into thread tid's scratch. */
static const float *widen(umd_ctx *c, int tid, const uint16_t *x, long r0, long r1, int K) {
    float *dst = cpu_widen(c, tid);
    cpu_widen_n(dst, x + r0 * (long)K, (size_t)(r1 - r0) * K);
    return dst;
}

/* The bf16 rows (N wide) of y's rows [r0, r1) from their fp32 values in f. */
static void round_rows(uint16_t *y, const float *f, long r0, long r1, int N) {
    uint16_t *dst = y + r0 * (long)N;
    const long n = (r1 - r0) * (long)N;
    for (long i = 0; i < n; i++) dst[i] = cpu_to_bf16(f[i]);
}

void cpu_linear_fwd(umd_ctx *c, void *yv, const void *xv, const float *W, const float *b, int M,
                    int N, int K, int types) {
    if (M <= 0) return;
    const int xb = cpu_is_bf16(c, types & UMD_OPND), yb = cpu_is_bf16(c, (types & UMD_OPND_Y) ? UMD_OPND : 0);
    /* the scratch holds a block's widened x, then its fp32 y */
    const int per_row = (xb ? K : 0) + (yb ? N : 0);
    if (per_row) cpu_check_widen(per_row, "linear_fwd");
    const long block = per_row ? widen_rows(per_row) : ROW_BLOCK;
    CPU_PARALLEL(team_for(c, M, 2.0 * M * N * K), {
        long lo, hi;
        cpu_split(M, tid, team, &lo, &hi);
        for (long r0 = lo; r0 < hi; r0 += block) {
            long r1 = r0 + block < hi ? r0 + block : hi;
            const float *xr = xb ? widen(c, tid, xv, r0, r1, K) : (const float *)xv + r0 * (long)K;
            float *yr = yb ? cpu_widen(c, tid) + (xb ? (r1 - r0) * (long)K : 0)
                           : (float *)yv + r0 * (long)N;
            if (b)
                for (long r = 0; r < r1 - r0; r++) memcpy(yr + r * (long)N, b, (size_t)N * sizeof(float));
            cblas_sgemm(CPU_BLAS_ROW_MAJOR, CPU_BLAS_NO_TRANS, CPU_BLAS_TRANS, (int)(r1 - r0), N, K,
                        1.0f, xr, K, W, K, b ? 1.0f : 0.0f, yr, N);
            if (yb) round_rows(yv, yr, r0, r1, N);
        }
    });
}

/* dx rows [lo, hi) (K wide) = dy (N wide) W, plus dx when beta is 1: a GEMM per ROW_BLOCK rows. */
static void dx_rows(float *dx, const float *dy, const float *W, long lo, long hi, int N, int K,
                    float beta) {
    for (long r0 = lo; r0 < hi; r0 += ROW_BLOCK) {
        long r1 = r0 + ROW_BLOCK < hi ? r0 + ROW_BLOCK : hi;
        cblas_sgemm(CPU_BLAS_ROW_MAJOR, CPU_BLAS_NO_TRANS, CPU_BLAS_NO_TRANS, (int)(r1 - r0), K, N,
                    1.0f, dy + r0 * (long)N, N, W, K, beta, dx + r0 * (long)K, K);
    }
}

/* dW (N, K) = or += (beta) dy^T x over rows [lo, hi), x a bf16 operand widened a block at a time. */
static void dw_rows_bf16(umd_ctx *c, int tid, float *dW, const float *dy, const uint16_t *x,
                         long lo, long hi, int N, int K, float beta) {
    const long block = widen_rows(K);
    for (long r0 = lo; r0 < hi; r0 += block) {
        long r1 = r0 + block < hi ? r0 + block : hi;
        cblas_sgemm(CPU_BLAS_ROW_MAJOR, CPU_BLAS_TRANS, CPU_BLAS_NO_TRANS, N, K, (int)(r1 - r0),
                    1.0f, dy + r0 * (long)N, N, widen(c, tid, x, r0, r1, K), K,
                    r0 == lo ? beta : 1.0f, dW, K);
    }
}

/* The end of linear_bwd's parallel region, in thread tid of team: after a barrier, the partials
 * of threads 1.. added into dW in thread order (a slice of dW a thread), then db's columns (a
 * slice a thread) summed over every row of dy in order: dyf fp32, or dyh bf16 widened. */
static void bwd_finish(umd_ctx *c, int tid, int team, float *dW, float *db, const float *dyf,
                       const uint16_t *dyh, int M, int N, int K) {
    long lo, hi;
    if (dW && team > 1) {
        _Pragma("omp barrier")
        cpu_split((long)N * K, tid, team, &lo, &hi);
        for (int u = 1; u < team; u++) {
            const float *part = cpu_ws(c, u);
            for (long i = lo; i < hi; i++) dW[i] += part[i];
        }
    }
    if (!db) return;
    cpu_split(N, tid, team, &lo, &hi);
    for (long r = 0; r < M; r++) {
        if (dyh) {
            const uint16_t *d = dyh + r * (long)N;
            for (long j = lo; j < hi; j++) db[j] += cpu_from_bf16(d[j]);
        } else {
            const float *d = dyf + r * (long)N;
            for (long j = lo; j < hi; j++) db[j] += d[j];
        }
    }
}

/* dx's rows [r0, r1) (K wide) from dy's block dyb (N wide, its row r0 first): written or added
 * (bx) in fp32, or (dxh) computed into the scratch f and rounded once into the bf16 dx. */
static void dx_block(void *dx, int dxh, float *f, const float *dyb, const float *W, long r0,
                     long r1, int N, int K, float bx) {
    if (dxh) {
        dx_rows(f, dyb, W, 0, r1 - r0, N, K, 0.0f);
        round_rows(dx, f, r0, r1, K);
    } else {
        dx_rows((float *)dx + r0 * (long)K, dyb, W, 0, r1 - r0, N, K, bx);
    }
}

/* linear_bwd with gradient tensors in bf16: dy (dyh, UMD_GRAD) and/or dx (dxh, UMD_GRAD_X).
 * A bf16 dy is widened a block of rows at a time into the scratch, x's rows after it where x is
 * bf16 too, and dx's block and dW's sum over it run as in the fp32 op; an fp32 dy is read where
 * it is and dW's sum runs as in the fp32 op. A bf16 dx is computed a block at a time in the
 * scratch (after dy's widened rows) and rounded once. db's column sums read dy's values in the
 * fp32 op's order. */
static void linear_bwd_grad16(umd_ctx *c, void *dx, int dxh, float *dW, float *db, const void *dy,
                              int dyh, const void *xv, int xb, const float *W, int M, int N, int K,
                              float bx) {
    /* dy's widened rows, then one K-wide region: dx's block, then x's widened rows */
    const int per_row = (dyh ? N : 0) + ((dx && dxh) || (dyh && dW && xb) ? K : 0);
    cpu_check_widen(per_row, "linear_bwd");
    const long block = widen_rows(per_row > 0 ? per_row : 1);
    int nt = team_for(c, M, 2.0 * M * N * K);
    if (nt > 1 && cpu_ws_bytes(c) < (size_t)N * K * sizeof(float)) nt = 1;
    CPU_PARALLEL(nt, {
        long lo, hi;
        cpu_split(M, tid, team, &lo, &hi);
        float *dst = tid == 0 ? dW : (float *)cpu_ws(c, tid);
        for (long r0 = lo; r0 < hi && (dyh || (dx && dxh)); r0 += block) {
            long r1 = r0 + block < hi ? r0 + block : hi;
            const float *dyr = dyh ? widen(c, tid, dy, r0, r1, N) : (const float *)dy + r0 * (long)N;
            float *tail = cpu_widen(c, tid) + (dyh ? (r1 - r0) * (long)N : 0);
            if (dx) dx_block(dx, dxh, tail, dyr, W, r0, r1, N, K, bx);
            if (!dW || !dyh) continue;
            /* x's rows, each typed pointer made only where x has that type (an fp32 offset into
             * a bf16 x would point up to twice its length on) */
            const float *xr;
            if (xb) {
                cpu_widen_n(tail, (const uint16_t *)xv + r0 * (long)K, (size_t)(r1 - r0) * K);
                xr = tail;
            } else {
                xr = (const float *)xv + r0 * (long)K;
            }
            cblas_sgemm(CPU_BLAS_ROW_MAJOR, CPU_BLAS_TRANS, CPU_BLAS_NO_TRANS, N, K, (int)(r1 - r0),
                        1.0f, dyr, N, xr, K, r0 == lo && tid > 0 ? 0.0f : 1.0f, dst, K);
        }
        /* an fp32 dy: dW as the fp32 op sums it */
        if (dW && !dyh && hi > lo && xb)
            dw_rows_bf16(c, tid, dst, dy, xv, lo, hi, N, K, tid == 0 ? 1.0f : 0.0f);
        else if (dW && !dyh && hi > lo)
            cblas_sgemm(CPU_BLAS_ROW_MAJOR, CPU_BLAS_TRANS, CPU_BLAS_NO_TRANS, N, K, (int)(hi - lo),
                        1.0f, (const float *)dy + lo * (long)N, N, (const float *)xv + lo * (long)K,
                        K, tid == 0 ? 1.0f : 0.0f, dst, K);
        if (dW && tid > 0 && hi <= lo) memset(dst, 0, (size_t)N * K * sizeof(float));
        bwd_finish(c, tid, team, dW, db, dyh ? NULL : (const float *)dy,
                   dyh ? (const uint16_t *)dy : NULL, M, N, K);
    });
}

void cpu_linear_bwd(umd_ctx *c, void *dxv, float *dW, float *db, const void *dyv, const void *xv,
                    const float *W, int M, int N, int K, int dx_accumulate, int types) {
    if (M <= 0) return;
    const float *dy = dyv;
    float *dx = dxv;
    const int x_type = types & UMD_OPND;
    const int dyh = cpu_is_bf16(c, (types & UMD_GRAD) ? UMD_OPND : UMD_F32);
    const int dxh = dx && cpu_is_bf16(c, (types & UMD_GRAD_X) ? UMD_OPND : UMD_F32);
    if (dxh && dx_accumulate) {
        fprintf(stderr, "umdq: cpu backend: linear_bwd: a bf16 dx (UMD_GRAD_X) is written, never "
                        "accumulated\n");
        abort();
    }
    if (dyh || dxh) {
        linear_bwd_grad16(c, dx, dxh, dW, db, dyv, dyh, xv, cpu_is_bf16(c, x_type), W, M, N, K,
                          dx_accumulate ? 1.0f : 0.0f);
        return;
    }
    const int bf16 = dW && cpu_is_bf16(c, x_type);
    if (bf16) cpu_check_widen(K, "linear_bwd");
    const float *x = xv;
    int nt = team_for(c, M, 2.0 * M * N * K);
    /* the partials need the workspace: a thread-count-wide slice of N * K floats each */
    if (nt > 1 && cpu_ws_bytes(c) < (size_t)N * K * sizeof(float)) nt = 1;
    CPU_PARALLEL(nt, {
        long lo, hi;
        cpu_split(M, tid, team, &lo, &hi);
        if (dx) dx_rows(dx, dy, W, lo, hi, N, K, dx_accumulate ? 1.0f : 0.0f);
        /* dW: thread 0 onto dW, the others into their partials */
        float *dst = tid == 0 ? dW : (float *)cpu_ws(c, tid);
        if (dW && hi > lo && bf16)
            dw_rows_bf16(c, tid, dst, dy, xv, lo, hi, N, K, tid == 0 ? 1.0f : 0.0f);
        else if (dW && hi > lo)
            cblas_sgemm(CPU_BLAS_ROW_MAJOR, CPU_BLAS_TRANS, CPU_BLAS_NO_TRANS, N, K, (int)(hi - lo),
                        1.0f, dy + lo * (long)N, N, x + lo * (long)K, K, tid == 0 ? 1.0f : 0.0f, dst,
                        K);
        else if (dW && tid > 0)
            memset(dst, 0, (size_t)N * K * sizeof(float));
        bwd_finish(c, tid, team, dW, db, dy, NULL, M, N, K);
    });
}

/* tmp (n) = gelu(h), h fp32 or (hb) bf16, widened into tmp first. */
static void gelu_of_h(umd_ctx *c, float *tmp, const void *h, int hb, size_t n) {
    if (hb) cpu_widen_n(tmp, h, n);
    cpu_gelu_fwd(c, tmp, hb ? tmp : (const float *)h, n);
}

/* h = x W1^T + b1; tmp = gelu(h); y = tmp W2^T + b2. A bf16 h (UMD_OPND_H in a context with bf16
 * operands) is fc1's y rounded (UMD_OPND_Y), and GELU reads it widened back into tmp: the fp32
 * ops' bits on the rounded h. A bf16 y (UMD_OPND_Y) is fc2's y rounded, as linear_fwd's. */
void cpu_mlp_fwd(umd_ctx *c, void *y, void *h, float *tmp, const void *x, const float *W1,
                 const float *b1, const float *W2, const float *b2, int M, int F, int w,
                 int types) {
    if (M <= 0) return;
    const size_t n = (size_t)M * F;
    const int hb = (types & UMD_OPND_H) && c->opnd_bf16;
    cpu_linear_fwd(c, h, x, W1, b1, M, F, w, (types & UMD_OPND) | (hb ? UMD_OPND_Y : 0));
    gelu_of_h(c, tmp, h, hb, n);
    cpu_linear_fwd(c, y, tmp, W2, b2, M, w, F, types & UMD_OPND_Y);
}

/* tmp = gelu(h): dW2, db2; tmp = dy W2; tmp *= gelu'(h) (= dh); dW1, db1 and dx = dh W1. dy is
 * last read by the second step, so dx may alias it. A bf16 h is widened into tmp for gelu(h), and
 * for gelu'(h) a block of rows at a time into the widening scratch (tmp then holds dy W2). */
void cpu_mlp_bwd(umd_ctx *c, void *dx, float *dW1, float *db1, float *dW2, float *db2,
                 const void *dy, const void *x, const void *h, const float *W1, const float *W2,
                 float *tmp, int M, int F, int w, int types) {
    if (M <= 0) return;
    const size_t n = (size_t)M * F;
    const int hb = (types & UMD_OPND_H) && c->opnd_bf16;
    gelu_of_h(c, tmp, h, hb, n);
    const int gt = types & UMD_GRAD; /* dy bf16 (widened by both Linears that read it) */
    cpu_linear_bwd(c, NULL, dW2, db2, dy, tmp, W2, M, w, F, 0, gt);
    cpu_linear_bwd(c, tmp, NULL, NULL, dy, NULL, W2, M, w, F, 0, gt); /* dx alone: dy W2 */
    if (hb) {
        cpu_check_widen(F, "mlp_bwd");
        const long rows = CPU_WIDEN_FLOATS / F;
        for (long r0 = 0; r0 < M; r0 += rows) {
            const long r1 = r0 + rows < M ? r0 + rows : M;
            float *hw = cpu_widen(c, 0);
            cpu_widen_n(hw, (const uint16_t *)h + r0 * F, (size_t)(r1 - r0) * F);
            cpu_gelu_bwd(c, tmp + r0 * F, tmp + r0 * F, hw, (size_t)(r1 - r0) * F);
        }
    } else {
        cpu_gelu_bwd(c, tmp, tmp, h, n);
    }
    cpu_linear_bwd(c, dx, dW1, db1, tmp, x, W1, M, F, w, 0, types & (UMD_OPND | UMD_GRAD_X));
}
