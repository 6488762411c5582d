/* attention.c: multi-head self-attention without a mask, forward and backward, for the short
 * sequences of this model (T = cls + visible tokens in the encoder, 1 + L in the decoder; tens to
 * hundreds of tokens, head_dim 64 at the sizes that matter).
 *
 * Per (sequence, head) the work is small matrix products (T x T x hd):
 *   forward   S = Q K^T,  P = softmax(S / sqrt(hd)),  O = P V;  lse = log rowsum(exp(S / sqrt(hd)))
 *   backward  P = exp(S / sqrt(hd) - lse) (S recomputed),  dP = dO V^T,
 *             dS = P (dP - D) / sqrt(hd) with D = rowsum(dO * O) (= rowsum(P dP)),
 *             dV = P^T dO,  dQ = dS K,  dK = dS^T Q
 * Only lse (n, heads, T) lies between the two (ops.h's contract, the one a fused device kernel
 * keeps): the (T, T) probabilities live in the thread's workspace for one pair at a time.
 * Each product is one register-blocked kernel (4 rows x 16 columns of C in 8 vector
 * accumulators, rank-1 updates over k), so no per-head allocation and no BLAS call per head. K^T
 * and V^T are copied into the thread's workspace with their rows padded to a multiple of 8 by
 * zeros, so the T-wide products run on whole vectors; transposed left operands (P^T, dS^T) are
 * read through strides.
 *
 * A bf16 operand qkv (umd_ops_cpu_bf16) is widened a pair at a time into the thread's scratch
 * (cpu_widen), and the same code runs on it with its own row stride: the fp32 op's bits on the
 * widened values. A bf16 out (UMD_OPND_O) is computed there too, (T, hd) after the pair, and
 * rounded into place; the backward widens the pair's rows of it there for D, and a bf16 dout
 * (UMD_GRAD_X) after it, read where the fp32 dout is, with its row stride. A bf16 dqkv
 * (UMD_GRAD) takes each of the pair's three products into the workspace (kv, free once dP is
 * made) and rounds it into place: the fp32 op's results rounded once.
 *
 * Parallelisation: over (sequence, head) pairs, static chunks; each pair writes its own slices of
 * out / dqkv / lse, so nothing crosses threads. Numerics: fp32; every sum over k runs in order
 * (deterministic for any thread count); softmax subtracts the row maximum before exp (cpu_expf,
 * ~2 ulp) and sums in fp32; lse = max + log(sum) is formed in fp32 from the scaled scores. */
#include <math.h>
#include "cpu.h"

typedef float v8 __attribute__((vector_size(32)));

/* Unaligned vector load and store, and a broadcast (macros: vector arguments of real functions
 * would change the ABI where AVX is off). */
#define LD8(dst, p) memcpy(&(dst), (p), sizeof(v8))
#define ST8(p, v) memcpy((p), &(v), sizeof(v8))
#define BC8(a) ((v8){(a), (a), (a), (a), (a), (a), (a), (a)})

static inline int round8(int n) { return (n + 7) / 8 * 8; }

/* C[r][j..j+8*NV) (= or +=) sum_k A(r, k) B[k][j..], r < R, with A(r, k) = A[r*ars + k*acs]. */
static inline __attribute__((always_inline)) void mm_block(int R, int NV, int K, const float *A,
                                                          long ars, long acs, const float *B,
                                                          long ldb, float *C, long ldc, int acc) {
    v8 c[4][2];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) {
            if (acc) LD8(c[r][v], C + r * ldc + 8 * v);
            else c[r][v] = BC8(0.0f);
        }
    for (int k = 0; k < K; k++) {
        v8 b[2];
        for (int v = 0; v < NV; v++) LD8(b[v], B + k * ldb + 8 * v);
        for (int r = 0; r < R; r++) {
            v8 a = BC8(A[r * ars + k * acs]);
            for (int v = 0; v < NV; v++) c[r][v] += a * b[v];
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) ST8(C + r * ldc + 8 * v, c[r][v]);
}

/* C (M x N) (= or +=) A (M x K) B (K x N); B and C row-major (ldb, ldc), A through strides.
 * Columns beyond the last multiple of 8 are done one at a time. */
/* The rows of one column block: blocks of 4, then one block of the 1-3 rows left. */
static inline __attribute__((always_inline)) void mm_rows(int NV, int M, int K, const float *A,
                                                         long ars, long acs, const float *B,
                                                         long ldb, float *C, long ldc, int acc) {
    int i = 0;
    for (; i + 4 <= M; i += 4) mm_block(4, NV, K, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, acc);
    switch (M - i) {
    case 3: mm_block(3, NV, K, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, acc); break;
    case 2: mm_block(2, NV, K, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, acc); break;
    case 1: mm_block(1, NV, K, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, acc); break;
    default: break;
    }
}

static void mm(int M, int N, int K, const float *A, long ars, long acs, const float *B, long ldb,
               float *C, long ldc, int acc) {
    int j = 0;
    for (; j + 16 <= N; j += 16) mm_rows(2, M, K, A, ars, acs, B + j, ldb, C + j, ldc, acc);
    for (; j + 8 <= N; j += 8) mm_rows(1, M, K, A, ars, acs, B + j, ldb, C + j, ldc, acc);
    for (; j < N; j++)
        for (int i = 0; i < M; i++) {
            float s = acc ? C[i * ldc + j] : 0.0f;
            for (int k = 0; k < K; k++) s += A[i * ars + k * acs] * B[k * ldb + j];
            C[i * ldc + j] = s;
        }
}

/* dst (hd x Tp) = src^T for T rows of hd values at stride `row`, zero beyond column T. */
static void transpose_pad(float *dst, const float *src, long row, int T, int Tp, int hd) {
    for (int d = 0; d < hd; d++)
        for (int j = T; j < Tp; j++) dst[(long)d * Tp + j] = 0.0f;
    for (int j = 0; j < T; j++) {
        const float *s = src + j * row;
        for (int d = 0; d < hd; d++) dst[(long)d * Tp + j] = s[d];
    }
}

/* Asks for the next pair's rows ahead of time: `parts` slices of hd floats (q, k, v or one) of
 * each of its T tokens, rows `row` floats apart. The rows are far apart in memory (one head's slice
 * of each token), a pattern the hardware prefetchers pick up late. (Inlined: as a function of
 * prefetches only, GCC would consider it free of effects and drop the calls.) */
static inline __attribute__((always_inline)) void prefetch_pair(const float *base, long pr,
                                                                int heads, int hd, int T,
                                                                long row, int parts) {
    long b = pr / heads;
    int h = (int)(pr % heads);
    const float *p0 = base + b * T * row + (long)h * hd;
    long W = (long)heads * hd;
    for (int j = 0; j < T; j++)
        for (int part = 0; part < parts; part++)
            for (int d = 0; d < hd; d += 16) __builtin_prefetch(p0 + j * row + part * W + d, 0, 2);
}

/* A pair's q, k and v from a bf16 operand qkv, widened into the thread's scratch as T rows of
 * (q, k, v), 3 hd floats a row: *row is set to that stride. */
static const float *widen_pair(umd_ctx *c, int tid, const uint16_t *qkv, long b, int h, int T,
                               int heads, int hd, long *row) {
    const long W = (long)heads * hd;
    float *dst = cpu_widen(c, tid);
    for (int t = 0; t < T; t++)
        for (int part = 0; part < 3; part++)
            cpu_widen_n(dst + ((long)t * 3 + part) * hd,
                        qkv + ((b * T + t) * 3 + part) * W + (long)h * hd, (size_t)hd);
    *row = 3L * hd;
    return dst;
}

/* Per thread: (hd, Tp) K^T or V^T, then two (T, Tp) tiles: scores / P and dP / dS. */
size_t cpu_attention_ws_floats(int T, int hd) {
    size_t Tp = (size_t)round8(T);
    return (size_t)hd * Tp + 2 * (size_t)T * Tp + 64;
}

/* dst's n rows (ld elements apart) = the bf16 rounding of src's (n, w), packed. */
static void round_rows_at(uint16_t *dst, long ld, const float *src, int n, int w) {
    for (int i = 0; i < n; i++)
        for (int e = 0; e < w; e++) dst[i * ld + e] = cpu_to_bf16(src[(long)i * w + e]);
}

/* Floats of the widening scratch a pair takes before its out rows: its widened q, k, v, if any. */
static long pair_widened(int bf16, int T, int hd) { return bf16 ? 3L * T * hd : 0; }

void cpu_attention_fwd(umd_ctx *c, void *outv, float *lse, const void *qkvv, int n, int T,
                       int heads, int hd, int types) {
    const int W = heads * hd, Tp = round8(T);
    const long row = 3L * W; /* floats between tokens in qkv */
    const int bf16 = cpu_is_bf16(c, types & UMD_OPND);
    const int ob = cpu_is_bf16(c, (types & UMD_OPND_O) ? UMD_OPND : UMD_F32);
    const float *qkv = qkvv;
    if (bf16 || ob) cpu_check_widen(pair_widened(bf16, T, hd) + (ob ? (long)T * hd : 0),
                                    "attention_fwd");
    const float scale = 1.0f / sqrtf((float)hd);
    const long pairs = (long)n * heads;
    CPU_PARALLEL(cpu_team(c, (double)pairs * T * T * hd), {
        float *kt = cpu_ws(c, tid);          /* (hd, Tp) K^T */
        float *s = kt + (long)hd * Tp;       /* (T, Tp) scores, then P */
        long lo, hi;
        cpu_split(pairs, tid, team, &lo, &hi);
        for (long pr = lo; pr < hi; pr++) {
            long b = pr / heads;
            int h = (int)(pr % heads);
            /* q, k, v rows qr floats apart: qkv's own, or the pair widened */
            long qr = row;
            const float *q = bf16 ? widen_pair(c, tid, qkvv, b, h, T, heads, hd, &qr)
                                  : qkv + b * T * row + (long)h * hd;
            const float *k = q + (bf16 ? hd : W), *v = q + (bf16 ? 2L * hd : 2L * W);
            float *l = lse + (b * heads + h) * (long)T;
            if (pr + 1 < hi && !bf16) prefetch_pair(qkv, pr + 1, heads, hd, T, row, 3);
            transpose_pad(kt, k, qr, T, Tp, hd);
            mm(T, Tp, hd, q, qr, 1, kt, Tp, s, Tp, 0);
            for (int i = 0; i < T; i++) {
                float *si = s + (long)i * Tp;
                float mx = si[0];
                _Pragma("omp simd reduction(max:mx)")
                for (int j = 0; j < T; j++) mx = si[j] > mx ? si[j] : mx;
                float sum = 0.0f;
                _Pragma("omp simd reduction(+:sum)")
                for (int j = 0; j < T; j++) {
                    float e = cpu_expf((si[j] - mx) * scale);
                    si[j] = e;
                    sum += e;
                }
                float inv = 1.0f / sum;
                for (int j = 0; j < T; j++) si[j] *= inv;
                for (int j = T; j < Tp; j++) si[j] = 0.0f;
                l[i] = mx * scale + logf(sum);
            }
            const long o0 = b * T * (long)W + (long)h * hd; /* the pair's out, rows at stride W */
            if (ob) {
                float *ot = cpu_widen(c, tid) + pair_widened(bf16, T, hd);
                mm(T, hd, T, s, Tp, 1, v, qr, ot, hd, 0);
                uint16_t *o16 = (uint16_t *)outv + o0;
                for (int i = 0; i < T; i++)
                    for (int e = 0; e < hd; e++)
                        o16[(long)i * W + e] = cpu_to_bf16(ot[(long)i * hd + e]);
            } else {
                mm(T, hd, T, s, Tp, 1, v, qr, (float *)outv + o0, W, 0);
            }
        }
    });
}

void cpu_attention_bwd(umd_ctx *c, void *dqkvv, const void *doutv, const void *qkvv,
                       const void *outv, const float *lse, int n, int T, int heads, int hd,
                       int types) {
    const int W = heads * hd, Tp = round8(T);
    const long row = 3L * W; /* floats between tokens in qkv and dqkv */
    const int bf16 = cpu_is_bf16(c, types & UMD_OPND);
    const int gb = cpu_is_bf16(c, (types & UMD_GRAD) ? UMD_OPND : UMD_F32);
    const int ob = cpu_is_bf16(c, (types & UMD_OPND_O) ? UMD_OPND : UMD_F32);
    const int dob = cpu_is_bf16(c, (types & UMD_GRAD_X) ? UMD_OPND : UMD_F32);
    const float *qkv = qkvv, *dout = doutv;
    if (bf16 || ob || dob)
        cpu_check_widen(pair_widened(bf16, T, hd) + (ob ? (long)T * hd : 0) +
                            (dob ? (long)T * hd : 0),
                        "attention_bwd");
    const float scale = 1.0f / sqrtf((float)hd);
    const long pairs = (long)n * heads;
    CPU_PARALLEL(cpu_team(c, 2.5 * pairs * T * T * hd), {
        float *kv = cpu_ws(c, tid);          /* (hd, Tp) K^T, then V^T */
        float *P = kv + (long)hd * Tp;       /* (T, Tp) scores, then P */
        float *ds = P + (long)T * Tp;        /* (T, Tp) dP, then dS */
        long lo, hi;
        cpu_split(pairs, tid, team, &lo, &hi);
        for (long pr = lo; pr < hi; pr++) {
            long b = pr / heads;
            int h = (int)(pr % heads);
            long qr = row; /* q, k, v rows apart, as in the forward */
            const float *q = bf16 ? widen_pair(c, tid, qkvv, b, h, T, heads, hd, &qr)
                                  : qkv + b * T * row + (long)h * hd;
            const float *k = q + (bf16 ? hd : W), *v = q + (bf16 ? 2L * hd : 2L * W);
            /* O and dO: rows at stride W, or (ob, dob) widened, rows at stride hd, after q, k, v */
            const long o0 = b * T * (long)W + (long)h * hd;
            const float *g; /* dout + o0 only where dout is fp32 (a bf16 one is widened) */
            long grow = W;
            if (!dob) {
                g = dout + o0;
            } else {
                float *gw = cpu_widen(c, tid) + pair_widened(bf16, T, hd) + (ob ? (long)T * hd : 0);
                for (int i = 0; i < T; i++)
                    cpu_widen_n(gw + (long)i * hd, (const uint16_t *)doutv + o0 + (long)i * W,
                                (size_t)hd);
                g = gw;
                grow = hd;
            }
            long orow = W;
            const float *o;
            if (ob) {
                float *ow = cpu_widen(c, tid) + pair_widened(bf16, T, hd);
                for (int i = 0; i < T; i++)
                    cpu_widen_n(ow + (long)i * hd, (const uint16_t *)outv + o0 + (long)i * W,
                                (size_t)hd);
                o = ow;
                orow = hd;
            } else {
                o = (const float *)outv + o0;
            }
            const float *l = lse + (b * heads + h) * (long)T;
            const long d0 = b * T * row + (long)h * hd; /* dQ's first element; dK, dV W on */
            if (pr + 1 < hi) {
                if (!bf16) prefetch_pair(qkv, pr + 1, heads, hd, T, row, 3);
                if (!dob) prefetch_pair(dout, pr + 1, heads, hd, T, W, 1);
            }
            transpose_pad(kv, k, qr, T, Tp, hd);
            mm(T, Tp, hd, q, qr, 1, kv, Tp, P, Tp, 0); /* S */
            for (int i = 0; i < T; i++) {
                float *pi = P + (long)i * Tp;
                const float li = l[i];
                _Pragma("omp simd")
                for (int j = 0; j < T; j++) pi[j] = cpu_expf(pi[j] * scale - li);
            }
            transpose_pad(kv, v, qr, T, Tp, hd);
            mm(T, Tp, hd, g, grow, 1, kv, Tp, ds, Tp, 0); /* dP */
            for (int i = 0; i < T; i++) {
                const float *pi = P + (long)i * Tp, *gi = g + (long)i * grow;
                const float *oi = o + (long)i * orow;
                float *di = ds + (long)i * Tp;
                float D = 0.0f;
                _Pragma("omp simd reduction(+:D)")
                for (int e = 0; e < hd; e++) D += gi[e] * oi[e];
                for (int j = 0; j < T; j++) di[j] = pi[j] * (di[j] - D) * scale;
            }
            if (gb) {
                /* each product into kv (free since dP), then rounded into its bf16 rows */
                uint16_t *dq16 = (uint16_t *)dqkvv + d0;
                mm(T, hd, T, P, 1, Tp, g, grow, kv, hd, 0); /* dV = P^T dO */
                round_rows_at(dq16 + 2L * W, row, kv, T, hd);
                mm(T, hd, T, ds, Tp, 1, k, qr, kv, hd, 0); /* dQ = dS K */
                round_rows_at(dq16, row, kv, T, hd);
                mm(T, hd, T, ds, 1, Tp, q, qr, kv, hd, 0); /* dK = dS^T Q */
                round_rows_at(dq16 + W, row, kv, T, hd);
            } else {
                float *dq = (float *)dqkvv + d0, *dk = dq + W, *dv = dq + 2L * W;
                mm(T, hd, T, P, 1, Tp, g, grow, dv, row, 0);    /* dV = P^T dO */
                mm(T, hd, T, ds, Tp, 1, k, qr, dq, row, 0); /* dQ = dS K */
                mm(T, hd, T, ds, 1, Tp, q, qr, dk, row, 0); /* dK = dS^T Q */
            }
        }
    });
}
