/* mma_attention.cu: fused attention forward and backward for head width 64 on bf16 tensor cores
 * (mma.sync m16n8k16, fp32 accumulation), the default of bf16 contexts. No (T, T) tile reaches
 * device memory; what is kept between the passes is lse, as ops.h says.
 *
 * Every product is written C = X Y^T with X and Y row-major in shared memory (or X in registers)
 * and the reduced index contiguous in both, or C = X Y with Y row-major, read through
 * ldmatrix.trans. The operand fragments follow the PTX layout of m16n8k16 (lane = 4 g + t):
 *   A (16 x 16)  a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
 *   B (16 x 8)   b0 (2t..2t+1, g)  b1 (2t+8.., g)
 *   C (16 x 8)   c0 c1 (g, 2t..2t+1)  c2 c3 (g+8, 2t..)
 * so an accumulator strip of 16 x 64 becomes, packed to bf16 pairs, the A fragments of the next
 * product over its 64 columns without passing through shared memory.
 *
 * Two shapes of kernel, each as forward, dQ and dK dV:
 *   resident (T <= MA_RESIDENT, every model shape): a block per (sequence, head) loads the operand
 *            it loops over whole into shared memory once (K and V; Q and dO for dK dV; swizzled
 *            rows), then its 4 warps take strips of 16 rows in turn with no further barrier, each
 *            strip's own fragments read straight from global memory (the forward's strips 32 rows,
 *            two tiles sharing each K and V fragment, with UMDQ_CUDA_ATTN_FWD32=1: attn_fwd32);
 *   tiled    (longer sequences): a block per 64 rows, a warp per 16; the other operand's 64-row
 *            tiles come through an fp32 staging buffer by cp.async while the warps compute on the
 *            previous tile, then are converted to bf16 (a bf16 qkv's rows are staged as they
 *            are, half the bytes, and copied into the bf16 tile).
 * q, k and v come from qkv either fp32, rounded to bf16 on their way into the fragments and tiles,
 * or as an operand tensor (ops.h; attention_operand) already bf16, read as they are: every kernel
 * is a template on qkv's element type, and the two give the same bits, the bf16 values being
 * those the rounding makes. lse stays fp32. The attention output O is fp32, or a
 * branch tensor in bf16 (UMD_OPND_O, where branch_operand says so: proj reads it as its bf16
 * operand x): the forward kernels and the dQ kernels are templates on O's element type too; the
 * forward's epilogue rounds O / l to nearest even in its store (the fp32 result rounded once,
 * half the bytes written), and the dQ kernels read the stored bf16 values widened into D =
 * rowsum(dO O), the same sum in the same order, so their results are those of an fp32 O holding
 * the rounded values. An fp32 O is the same kernel code as before.
 * dqkv is fp32, or a gradient tensor in bf16 (UMD_GRAD where grad_operand says so, taken with a
 * bf16 qkv only), as bf16 autocast keeps the gradient of its bf16 qkv: the dQ and dK dV kernels
 * (resident and tiled, the 64- and the 32-query step) are templates on dqkv's element type, and
 * their one store (store_strip) rounds each fp32 accumulator once, to nearest even, a pair in 4
 * bytes where it wrote 8, so the values are those of the fp32 dqkv rounded and the sums before
 * the store are the same. dqkv's bytes written halve (6 n T heads 64 bytes fewer a call), and the
 * qkv Linear's backward reads it as its bf16 operand without a conversion pass. An fp32 dqkv is
 * the same kernel code as before.
 * dO is fp32, or a gradient tensor in bf16 (UMD_GRAD_X where grad_operand says so: proj's dx,
 * which its GEMM wrote rounded once; taken with a bf16 dqkv only): the dQ and dK dV kernels are
 * templates on dO's element type too, as on qkv's: the dQ kernels' dO fragments come straight
 * from its bf16 pairs (pair_at), the tiles staged by cp.async and the resident rows are copied as
 * they are (half the bytes of an fp32 row, as a bf16 qkv's), and D = rowsum(dO O) widens the
 * stored values exactly (cuda_values4). The fp32 path rounds dO to bf16 on its way into the
 * products, to these very values, and sums D from dO's values where this sums the widened ones:
 * so the results are, bit for bit, those of an fp32 dO holding the rounded values. dO's bytes
 * read halve (each of the two kernels reads it once: 2 n T heads 64 bytes fewer each). An fp32
 * dO is the same kernel code as before; a bf16 dO with an fp32 dqkv, which no model passes, has
 * no kernels (the dispatch refuses it, naming the op).
 * Per strip: forward S = Q K^T, the online softmax of its rows in base 2 (running max m, sum l;
 * O rescaled by 2^(m_old - m_new)), O += P V, and at the end O / l and lse = (m + log2 l) ln 2.
 * Backward, as two kernels so that no float is added atomically (deterministic):
 *   dQ     first D = rowsum(dO O) of the strip's rows (written for the next kernel), then per
 *          tile of 64 keys: S = Q K^T, dP = dO V^T, P = 2^(S s log2 e - lse log2 e),
 *          dS = P (dP - D) s, dQ += dS K;
 *   dK dV  per tile of 64 queries: S^T = K Q^T, dP^T = V dO^T, P^T, dS^T, dV += P^T dO,
 *          dK += dS^T Q; the tile in one piece, or (UMDQ_CUDA_ATTN_KV32=1, attn_kv32)
 *          in two of 32 queries, which needs 168 registers a thread in place of about 230, so 3
 *          blocks share a multiprocessor in place of 2: the same products in the same order
 *          (the resident kernel only at the lengths where shared memory holds the third block:
 *          res_kv32).
 *   With UMDQ_CUDA_ATTN_DS=1 (resident, a bf16 qkv: res_bwd_ds) the dK dV kernel runs first,
 *   computing D itself and storing dS, and dQ = dS K is one product over the stored dS: 5
 *   products in place of 7, deterministic still. Its 32- or 64-query step is chosen by its own
 *   kernels' occupancy (res_kv32_ds).
 * The resident kernels' last strips (UMDQ_CUDA_ATTN_SPLIT=1, res_item): the 4 warps take strips of
 * 16 rows in turn, so where the strips number 4k + 1 (17 at the model's 257 tokens: the last
 * holding 1 row) or 4k + 2, one or two warps would compute a last strip each while the others
 * wait, holding their registers and shared memory, for a whole strip's time. With the switch those
 * strips are shared: each of the 4 / rem warps of a strip runs its products over a range of the
 * other operand's rows (whole strips of 16, the last range up to T), and the parts are combined
 * in shared memory in the order of the parts, deterministic: the backward's fp32 sums added
 * (part_sums), the forward's online softmax states merged (part_merge: the larger max, l and O
 * rescaled to it and added). Every other strip is computed as without the switch, so only the
 * shared strips' rows get other bits: in the backward the same terms summed in another order (P
 * and dS come from lse, the same values either way); in the forward each part rounds its P to
 * bf16 against the running max of its own keys, so O's shared rows differ by P's rounding, about
 * 1e-3 of the largest |O|, and lse (summing the unrounded P) by fp32 rounding. The shared part is a function of its own, not inlined, and
 * the kernels a template on the switch, so the kernels without it keep their registers (forward
 * 127, dQ 165, dK dV 230 and 168; with it 127, 168, 232-236 and 168, the last with a 64-byte
 * stack frame, and the part function spilling 56 bytes, once a block: ptxas -v, sm_90, the same
 * blocks per multiprocessor). The 32-row forward (attn_fwd32) shares none.
 * FLOPs per (sequence, head): forward 4 T^2 64, backward 14 T^2 64 (7 products; 5 with atomics).
 * Bytes (resident): q, k, v, out and dout read once per pass, q, k and v at 2 bytes an element
 * where qkv is a bf16 operand tensor, else 4, and dout at 2 where it is a bf16 gradient tensor
 * (the tiled kernels re-read the looped-over operand once per 64-row block, from L2); dqkv
 * written once, 2 bytes an element where it is a bf16 gradient tensor, else 4; lse and D O(T).
 * Tiles past T: rows are staged as zeros, score columns past T are -inf (P = 0), query rows past
 * T are never written; 8-column groups wholly past T are skipped.
 * Numerics: Q, K, V, dO, P and dS are rounded to bf16 as operands (Q, K, V already are in a bf16
 * qkv, dO in a bf16 dout); the softmax statistics, the accumulators and every output are fp32 (a
 * bf16 O or dqkv is the fp32 result rounded once in the store). */
#include <math.h>
#include <stdint.h>
#include <type_traits>
#include "cuda_internal.h"
#include "ptx.h"
#include "res_item.h"

#define MA_HD 64          /* head width */
#define MA_TILE 64        /* rows per block and per staged tile */
#define MA_WARPS 4        /* a warp per 16 rows */
#define MA_LD (MA_HD + 8) /* bf16 per shared row: 144 bytes, so 8 rows start 4 banks apart */
#define LOG2E 1.44269504089f

typedef __nv_bfloat16 bf16;

__device__ static inline uint32_t pack2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x (lo) in the low half */
    return *reinterpret_cast<uint32_t *>(&v);
}

__device__ static inline uint32_t lds32(const bf16 *p) { return *reinterpret_cast<const uint32_t *>(p); }

/* Shared-memory layouts of a (rows, 64) bf16 operand: element (r, c) at L::at(r, c).
 *   lay_pad  rows padded to MA_LD (144 bytes): 8 rows start 4 banks apart (the 64-row tiles)
 *   lay_swz  rows of 128 bytes, the 16-byte chunk k of row r stored at chunk k ^ (r & 7): no
 *            padding (the resident operands, a whole sequence) and, as with the padding, the 8
 *            rows a fragment load or an ldmatrix phase touches fall in 8 different bank groups.
 * Every access below stays inside one 16-byte chunk (pairs at even columns, 8-column groups). */
struct lay_pad {
    __device__ static int at(int r, int c) { return r * MA_LD + c; }
};
struct lay_swz {
    __device__ static int at(int r, int c) { return r * MA_HD + ((((c >> 3) ^ (r & 7)) << 3) | (c & 7)); }
};

/* The B fragments of two 8-column groups n0, n0 + 8 of Y (k, n), row-major in shared memory,
 * for the 16 rows from k0: b[0], b[1] of group n0, b[2], b[3] of n0 + 8. Lanes 8i .. 8i + 7
 * address the rows of 8 x 8 matrix i: (k0, n0), (k0 + 8, n0), (k0, n0 + 8), (k0 + 8, n0 + 8);
 * .trans hands lane 4g + t the elements (2t, g), (2t + 1, g) of each. */
template <class L>
__device__ static inline void ldsm_trans(uint32_t b[4], const bf16 *y, int k0, int n0) {
    const int lane = threadIdx.x & 31, m = lane >> 3;
    ldsm_x4_trans(b, y + L::at(k0 + (lane & 7) + ((m & 1) ? 8 : 0), n0 + ((m & 2) ? 8 : 0)));
}

/* A fragments (4 k-steps of 16 over the 64 columns) of rows r0 .. r0 + 15 of X (row-major). */
template <class L>
__device__ static inline void load_afrags(uint32_t a[4][4], const bf16 *x, int r0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
        const int c = ks * 16 + 2 * t;
        a[ks][0] = lds32(x + L::at(r0 + g, c));
        a[ks][1] = lds32(x + L::at(r0 + g + 8, c));
        a[ks][2] = lds32(x + L::at(r0 + g, c + 8));
        a[ks][3] = lds32(x + L::at(r0 + g + 8, c + 8));
    }
}

/* The bf16 pair at p, as an A fragment register: two fp32 values rounded (pack2), or a bf16
 * operand's pair as it is (the same bits for its widened values). */
__device__ static inline uint32_t pair_at(const float *p) {
    float2 u = *reinterpret_cast<const float2 *>(p);
    return pack2(u.x, u.y);
}
__device__ static inline uint32_t pair_at(const bf16 *p) { return *reinterpret_cast<const uint32_t *>(p); }

/* The same from rows in global memory, fp32 or a bf16 operand tensor (rows ld elements apart;
 * rows at or past T zero, as pack2(0, 0)). */
template <class QT>
__device__ static inline void global_afrags(uint32_t a[4][4], const QT *x, long ld, int r0, int T) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int ra = r0 + g, rb = ra + 8;
    const QT *pa = x + (long)ra * ld, *pb = x + (long)rb * ld;
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
        const int c = ks * 16 + 2 * t;
        a[ks][0] = ra < T ? pair_at(pa + c) : 0u;
        a[ks][1] = rb < T ? pair_at(pb + c) : 0u;
        a[ks][2] = ra < T ? pair_at(pa + c + 8) : 0u;
        a[ks][3] = rb < T ? pair_at(pb + c + 8) : 0u;
    }
}

/* C strip (16 x 64) += X (16 x 64, fragments a) Y^T with Y the rows y0 .. y0 + 63 of y (row-major,
 * 64 wide); column groups from `groups` on are left alone. */
template <class L, int NG = 8>
__device__ static inline void strip_xyt(float (*c)[4], const uint32_t a[4][4], const bf16 *y, int y0,
                                        int groups) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int nt = 0; nt < NG; nt++) {
        if (nt >= groups) break;
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            const int r = y0 + nt * 8 + g, k = ks * 16 + 2 * t;
            mma16816(c[nt], a[ks], lds32(y + L::at(r, k)), lds32(y + L::at(r, k + 8)));
        }
    }
}

/* C strip (16 x 64) += P (16 x 64, the fp32 strip p packed to bf16) Y with Y the rows y0 ..
 * y0 + 63 of y (row-major); k-steps from `ksteps` on are skipped (their P columns are zero). */
template <class L, int NG = 8>
__device__ static inline void strip_py(float c[8][4], const float (*p)[4], const bf16 *y, int y0,
                                       int ksteps) {
#pragma unroll
    for (int j = 0; j < NG / 2; j++) {
        if (j >= ksteps) break;
        uint32_t a[4] = {pack2(p[2 * j][0], p[2 * j][1]), pack2(p[2 * j][2], p[2 * j][3]),
                         pack2(p[2 * j + 1][0], p[2 * j + 1][1]), pack2(p[2 * j + 1][2], p[2 * j + 1][3])};
#pragma unroll
        for (int dn = 0; dn < 8; dn += 2) {
            uint32_t b[4];
            ldsm_trans<L>(b, y, y0 + j * 16, dn * 8);
            mma16816(c[dn], a, b[0], b[1]);
            mma16816(c[dn + 1], a, b[2], b[3]);
        }
    }
}

/* Tiles travel in two steps: cp.async copies 64 rows of 64 floats from global memory into an
 * fp32 staging tile while the warps compute on the previous tile, then the block converts the
 * staging tile into the bf16 tile the fragments are read from. Rows at or past T are zero-filled
 * (a copy of 0 source bytes: ptx.h's cp_async16, cp_async4).
 *
 * f (64, 64) fp32 <- rows [r0, r0 + 64) of src (rows ld floats apart, 16-byte aligned). */
__device__ static inline void issue_tile(float *f, const float *src, long ld, int r0, int T) {
    for (int e = threadIdx.x; e < MA_TILE * (MA_HD / 4); e += MA_WARPS * 32) {
        int r = e / (MA_HD / 4), c4 = e % (MA_HD / 4);
        bool in = r0 + r < T;
        cp_async16(f + r * MA_HD + 4 * c4, in ? src + (long)(r0 + r) * ld + 4 * c4 : src, in);
    }
}

/* f[0 .. 64) <- v[r0 .. r0 + 64) (zero past T). */
__device__ static inline void issue_row(float *f, const float *v, int r0, int T) {
    for (int i = threadIdx.x; i < MA_TILE; i += MA_WARPS * 32) {
        bool in = r0 + i < T;
        cp_async4(f + i, in ? v + r0 + i : v, in);
    }
}

/* dst (64, MA_LD) bf16 <- the staging tile f. */
__device__ static inline void convert_tile(bf16 *dst, const float *f) {
    for (int e = threadIdx.x; e < MA_TILE * (MA_HD / 4); e += MA_WARPS * 32) {
        int r = e / (MA_HD / 4), c4 = e % (MA_HD / 4);
        float4 v = *reinterpret_cast<const float4 *>(f + r * MA_HD + 4 * c4);
        *reinterpret_cast<uint2 *>(dst + r * MA_LD + 4 * c4) =
            make_uint2(pack2(v.x, v.y), pack2(v.z, v.w));
    }
}

/* A bf16 operand's tile in the same staging buffer: rows [r0, r0 + 64) of src (rows ld elements
 * apart, 16-byte aligned) packed 64 bf16 (128 bytes, 8 copies of 16) a row into the first half
 * of f, rows at or past T zero-filled; then copied as they are into the padded bf16 tile. */
__device__ static inline void issue_tile(float *f, const bf16 *src, long ld, int r0, int T) {
    bf16 *h = reinterpret_cast<bf16 *>(f);
    for (int e = threadIdx.x; e < MA_TILE * (MA_HD / 8); e += MA_WARPS * 32) {
        int r = e / (MA_HD / 8), c8 = e % (MA_HD / 8);
        bool in = r0 + r < T;
        cp_async16(h + r * MA_HD + 8 * c8, in ? src + (long)(r0 + r) * ld + 8 * c8 : src, in);
    }
}
__device__ static inline void copy_tile(bf16 *dst, const float *f) {
    const bf16 *h = reinterpret_cast<const bf16 *>(f);
    for (int e = threadIdx.x; e < MA_TILE * (MA_HD / 8); e += MA_WARPS * 32) {
        int r = e / (MA_HD / 8), c8 = e % (MA_HD / 8);
        *reinterpret_cast<uint4 *>(dst + r * MA_LD + 8 * c8) =
            *reinterpret_cast<const uint4 *>(h + r * MA_HD + 8 * c8);
    }
}

/* dst (64, MA_LD) bf16 <- the staging tile f, filled by issue_tile from an operand of type QT. */
template <class QT> __device__ static inline void unstage_tile(bf16 *dst, const float *f) {
    if constexpr (std::is_same<QT, bf16>::value) copy_tile(dst, f);
    else convert_tile(dst, f);
}

/* The same for the tiled dK dV kernels' dO tile (DT): a bf16 one is copied a 16-byte chunk at a
 * time, not unrolled. Beside Q's copy and the accumulators, the batched loads of the unrolled
 * copy spilled registers in the 32-query step (4 bytes stored, 12 loaded); the bytes copied are
 * the same. */
template <class DT> __device__ static inline void unstage_dout_tile(bf16 *dst, const float *f) {
    if constexpr (std::is_same<DT, bf16>::value) {
        const bf16 *h = reinterpret_cast<const bf16 *>(f);
#pragma unroll 1
        for (int e = threadIdx.x; e < MA_TILE * (MA_HD / 8); e += MA_WARPS * 32) {
            int r = e / (MA_HD / 8), c8 = e % (MA_HD / 8);
            *reinterpret_cast<uint4 *>(dst + r * MA_LD + 8 * c8) =
                *reinterpret_cast<const uint4 *>(h + r * MA_HD + 8 * c8);
        }
    } else {
        convert_tile(dst, f);
    }
}

__device__ static inline int imin(int a, int b) { return a < b ? a : b; }

/* Dynamic shared memory of every kernel: two fp32 staging tiles, two bf16 tiles, 4 x 64 floats. */
#define MA_SMEM (2 * MA_TILE * MA_HD * 4 + 2 * MA_TILE * MA_LD * 2 + 4 * MA_TILE * 4)
#define MA_CARVE                                                                                   \
    extern __shared__ __align__(16) unsigned char ma_smem[];                                       \
    float *fA = reinterpret_cast<float *>(ma_smem), *fB = fA + MA_TILE * MA_HD;                    \
    bf16 *sA = reinterpret_cast<bf16 *>(fB + MA_TILE * MA_HD), *sB = sA + MA_TILE * MA_LD;
/* after MA_CARVE: the 4 x 64 floats */
#define MA_EXTRA reinterpret_cast<float *>(sB + MA_TILE * MA_LD)

/* ---- the steps of the kernels, per tile of 64 keys (forward, dQ) or queries (dK dV) ------------ */

/* The online softmax of one 16-row tile's scores s (16 x 64, as strip_xyt leaves them) against
 * keys k0 .. k0 + 63 in base 2: columns past T -inf, the running max m and sum l in ml, O
 * rescaled by 2^(m_old - m_new); s becomes P. */
__device__ static inline void softmax_step(float s[8][4], float o[8][4], float ml[4], int k0, int T,
                                           float sl2) {
    const int t = threadIdx.x & 3;
    float mx0 = ml[0], mx1 = ml[1];
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int col = k0 + nt * 8 + 2 * t + (e & 1);
            s[nt][e] = col < T ? s[nt][e] * sl2 : -INFINITY;
        }
        mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
        mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    /* column k0 < T is in every tile, so mx0 and mx1 are finite */
    const float a0 = exp2f(ml[0] - mx0), a1 = exp2f(ml[1] - mx1);
    ml[0] = mx0, ml[1] = mx1;
    float ls0 = 0.0f, ls1 = 0.0f;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
        s[nt][0] = exp2f(s[nt][0] - mx0);
        s[nt][1] = exp2f(s[nt][1] - mx0);
        s[nt][2] = exp2f(s[nt][2] - mx1);
        s[nt][3] = exp2f(s[nt][3] - mx1);
        ls0 += s[nt][0] + s[nt][1];
        ls1 += s[nt][2] + s[nt][3];
        o[nt][0] *= a0, o[nt][1] *= a0, o[nt][2] *= a1, o[nt][3] *= a1;
    }
    ml[2] = ml[2] * a0 + ls0;
    ml[3] = ml[3] * a1 + ls1;
}

/* Forward: one warp's 16 query rows (fragments qa) against keys k0 .. k0 + 63, at rows y0 ..
 * y0 + 63 of K and V: S = Q K^T, the online softmax (softmax_step) and O += P V. */
template <class L>
__device__ static inline void fwd_step(float o[8][4], float ml[4], const uint32_t qa[4][4],
                                       const bf16 *K, const bf16 *V, int y0, int k0, int T, float sl2) {
    const int valid = imin(MA_TILE, T - k0);
    float s[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    strip_xyt<L>(s, qa, K, y0, (valid + 7) / 8);
    softmax_step(s, o, ml, k0, T, sl2);
    strip_py<L>(o, s, V, y0, (valid + 15) / 16);
}

/* fwd_step for R tiles of 16 query rows at once (a warp's strip of 16 R rows; fragments qa[r],
 * O and the statistics of tile r in o[r], ml[r]): every B fragment of K and V is read from
 * shared memory once for the R tiles. Tiles from act on (wholly past T; act is the same in
 * every lane) are skipped. Each tile gets fwd_step's products in fwd_step's order and the same
 * softmax_step, so its rows get fwd_step's bits. */
template <class L, int R>
__device__ static inline void fwd_step_tiles(float o[R][8][4], float ml[R][4], const uint32_t qa[R][4][4],
                                             const bf16 *K, const bf16 *V, int y0, int k0, int T,
                                             float sl2, int act) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int valid = imin(MA_TILE, T - k0), groups = (valid + 7) / 8, ksteps = (valid + 15) / 16;
    float s[R][8][4];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int i = 0; i < 8; i++) s[r][i][0] = s[r][i][1] = s[r][i][2] = s[r][i][3] = 0.0f;
    /* S = Q K^T, as strip_xyt */
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
        if (nt >= groups) break;
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            const int rr = y0 + nt * 8 + g, k = ks * 16 + 2 * t;
            const uint32_t b0 = lds32(K + L::at(rr, k)), b1 = lds32(K + L::at(rr, k + 8));
#pragma unroll
            for (int r = 0; r < R; r++)
                if (r < act) mma16816(s[r][nt], qa[r][ks], b0, b1);
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
        if (r < act) softmax_step(s[r], o[r], ml[r], k0, T, sl2);
    /* O += P V, as strip_py */
#pragma unroll
    for (int j = 0; j < 4; j++) {
        if (j >= ksteps) break;
        uint32_t a[R][4];
#pragma unroll
        for (int r = 0; r < R; r++) {
            a[r][0] = pack2(s[r][2 * j][0], s[r][2 * j][1]);
            a[r][1] = pack2(s[r][2 * j][2], s[r][2 * j][3]);
            a[r][2] = pack2(s[r][2 * j + 1][0], s[r][2 * j + 1][1]);
            a[r][3] = pack2(s[r][2 * j + 1][2], s[r][2 * j + 1][3]);
        }
#pragma unroll
        for (int dn = 0; dn < 8; dn += 2) {
            uint32_t b[4];
            ldsm_trans<L>(b, V, y0 + j * 16, dn * 8);
#pragma unroll
            for (int r = 0; r < R; r++)
                if (r < act) {
                    mma16816(o[r][dn], a[r], b[0], b[1]);
                    mma16816(o[r][dn + 1], a[r], b[2], b[3]);
                }
        }
    }
}

/* Two adjacent values of O (or of dqkv) at p: fp32 (8 bytes), or a bf16 branch (or gradient)
 * tensor's pair, each rounded to nearest even (4 bytes). */
__device__ static inline void store_pair(float *p, float a, float b) {
    *reinterpret_cast<float2 *>(p) = make_float2(a, b);
}
__device__ static inline void store_pair(bf16 *p, float a, float b) {
    *reinterpret_cast<uint32_t *>(p) = pack2(a, b);
}

/* Forward's end for the warp's rows q .. q + 15 (q + g and q + g + 8 for this lane): O / l (fp32
 * or rounded to bf16: OT) and lse = (m + log2 l) ln 2. */
template <class OT>
__device__ static inline void fwd_store(OT *out, float *lse, float o[8][4], float ml[4], long W,
                                        int q, int T) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    float l0 = ml[2], l1 = ml[3];
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const int qa0 = q + g, qa1 = qa0 + 8;
    const float i0 = 1.0f / l0, i1 = 1.0f / l1;
    OT *o0 = out + (long)qa0 * W, *o1 = o0 + 8 * W;
#pragma unroll
    for (int dn = 0; dn < 8; dn++) {
        int d = dn * 8 + 2 * t;
        if (qa0 < T) store_pair(o0 + d, o[dn][0] * i0, o[dn][1] * i0);
        if (qa1 < T) store_pair(o1 + d, o[dn][2] * i1, o[dn][3] * i1);
    }
    if (t == 0) {
        if (qa0 < T) lse[qa0] = (ml[0] + log2f(l0)) * 0.69314718056f;
        if (qa1 < T) lse[qa1] = (ml[1] + log2f(l1)) * 0.69314718056f;
    }
}

/* A 16 x 64 accumulator strip to rows r .. r + 15 (ld elements apart) of dst, rows below T only:
 * fp32 pairs (8 bytes), or (GT bf16, a gradient tensor) each pair rounded to nearest even
 * (store_pair: 4 bytes; every pair starts at an even element, so dst 4-byte aligned suffices). */
template <class GT>
__device__ static inline void store_strip(GT *dst, long ld, const float c[8][4], int r, int T) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int r0 = r + g, r1 = r0 + 8;
    GT *d0 = dst + (long)r0 * ld, *d1 = d0 + 8 * ld;
#pragma unroll
    for (int dn = 0; dn < 8; dn++) {
        int d = dn * 8 + 2 * t;
        if (r0 < T) store_pair(d0 + d, c[dn][0], c[dn][1]);
        if (r1 < T) store_pair(d1 + d, c[dn][2], c[dn][3]);
    }
}

/* dQ: the warp's 16 queries (fragments qa of Q, ga of dO; lse L and D of its two rows per lane,
 * lse in base 2) against keys k0 .. k0 + 63 at rows y0 .. of K and V: dQ += dS K. */
template <class L>
__device__ static inline void bwdq_step(float dq[8][4], const uint32_t qa[4][4], const uint32_t ga[4][4],
                                        const bf16 *K, const bf16 *V, int y0, int k0, int T,
                                        const float LD[4], float sl2, float scale) {
    const int t = threadIdx.x & 3;
    const int valid = imin(MA_TILE, T - k0), groups = (valid + 7) / 8;
    float s[8][4], dp[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
        dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.0f;
    }
    strip_xyt<L>(s, qa, K, y0, groups);  /* S = Q K^T */
    strip_xyt<L>(dp, ga, V, y0, groups); /* dP = dO V^T */
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int col = k0 + nt * 8 + 2 * t + (e & 1);
            float p = col < T ? exp2f(s[nt][e] * sl2 - LD[e >> 1]) : 0.0f;
            dp[nt][e] = p * (dp[nt][e] - LD[2 + (e >> 1)]) * scale;
        }
    strip_py<L>(dq, dp, K, y0, (valid + 15) / 16); /* dQ += dS K */
}

/* dK dV: the warp's 16 keys (fragments ka of K, va of V) against queries q0 .. q0 + 63 at rows
 * y0 .. of Q and dO, with their base-2 lse and D at sL, sD (indexed by the query - q0; entries
 * past T: lse +inf, D 0): dV += P^T dO, dK += dS^T Q, over NQ queries at a time (64: the tile in
 * one piece; 32: in two halves, half the score registers). Each accumulator takes its products
 * in the same order either way (the tile's k-steps of 16 queries in turn), and every score is
 * the same dot product, so the two give the same bits. */
/* With DS (UMDQ_CUDA_ATTN_DS: res_bwd_ds), each step also stores dS, the bf16 values its dK
 * product takes (strip_py's pack2 of dS^T), transposed into a (Tr, Tr) row-major matrix of the
 * (sequence, head), queries as rows and keys as columns (ds, Tr elements a row): the warp's 16
 * keys from key0, zero for keys at or past T; query rows past T are not stored. */
template <class L, int NQ, bool DS = false>
__device__ static inline void bwdkv_step(float dk[8][4], float dv[8][4], const uint32_t ka[4][4],
                                         const uint32_t va[4][4], const bf16 *Q, const bf16 *G, int y0,
                                         int q0, int T, const float *sL, const float *sD, float sl2,
                                         float scale, bf16 *ds = nullptr, int Tr = 0,
                                         int key0 = 0) {
    static_assert(NQ == 32 || NQ == 64, "a tile of 64 queries in one or two pieces");
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int h0 = 0; h0 < MA_TILE; h0 += NQ) {
        const int valid = imin(NQ, T - q0 - h0), groups = (valid + 7) / 8;
        if (valid <= 0) break;
        float s[NQ / 8][4], dp[NQ / 8][4];
#pragma unroll
        for (int i = 0; i < NQ / 8; i++) {
            s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
            dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.0f;
        }
        strip_xyt<L, NQ / 8>(s, ka, Q, y0 + h0, groups);  /* S^T = K Q^T */
        strip_xyt<L, NQ / 8>(dp, va, G, y0 + h0, groups); /* dP^T = V dO^T */
#pragma unroll
        for (int nt = 0; nt < NQ / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int q = h0 + nt * 8 + 2 * t + (e & 1);
                float p = exp2f(s[nt][e] * sl2 - sL[q]);
                s[nt][e] = p;
                dp[nt][e] = p * (dp[nt][e] - sD[q]) * scale;
            }
        if constexpr (DS) {
            const int g = (threadIdx.x & 31) >> 2;
#pragma unroll
            for (int nt = 0; nt < NQ / 8; nt++) {
                if (nt >= groups) break; /* warp-uniform: movmatrix is the warp's */
                const int q = q0 + h0 + nt * 8 + g;
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    const uint32_t v = key0 + g + 8 * hh < T
                                           ? pack2(dp[nt][2 * hh], dp[nt][2 * hh + 1])
                                           : 0u;
                    const uint32_t tv = movtrans(v);
                    const long off = (long)q * Tr + key0 + 8 * hh + 2 * t;
                    if (q < T) *reinterpret_cast<uint32_t *>(ds + off) = tv;
                }
            }
        }
        const int ksteps = (valid + 15) / 16;
        strip_py<L, NQ / 8>(dv, s, G, y0 + h0, ksteps);  /* dV += P^T dO */
        strip_py<L, NQ / 8>(dk, dp, Q, y0 + h0, ksteps); /* dK += dS^T Q */
    }
}

/* D and base-2 lse of the lane's two rows q + g, q + g + 8 (zero past T), from dO and O (rows W
 * elements apart; each fp32 or bf16, DT and OT, its values widened) and lse: LD = {L0, L1, D0,
 * D1}; D also written to Dg (n, heads, T) when t == 0, unless Dg is NULL. */
template <class OT, class DT>
__device__ static inline void rows_ld(float LD[4], float *Dg, const DT *dO, const OT *O,
                                      const float *lse, long W, int q, int T) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int k = 0; k < 2; k++) {
        const int r = q + g + 8 * k;
        float acc = 0.0f;
        if (r < T) {
            const DT *a = dO + (long)r * W + 16 * t;
            const OT *b = O + (long)r * W + 16 * t;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float4 x = cuda_values4(a + 4 * i); /* dO, O: fp32, or bf16 widened */
                float4 y = cuda_values4(b + 4 * i);
                acc += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
            }
        }
        acc += __shfl_xor_sync(0xffffffffu, acc, 1);
        acc += __shfl_xor_sync(0xffffffffu, acc, 2);
        LD[k] = r < T ? lse[r] * LOG2E : 0.0f;
        LD[2 + k] = acc;
        if (Dg && t == 0 && r < T) Dg[r] = acc;
    }
}

/* ---- resident kernels: a block per (sequence, head) holds the operand it loops over whole -------
 * (K and V, or Q and dO: 2 x Tr x 128 bytes, Tr = T rounded up to 16, swizzled), read from global
 * memory once; its 4 warps take strips of 16 rows in turn (32 in the forward with attn_fwd32),
 * each strip's own fragments coming straight from global memory. No barrier after the load. Used
 * up to MA_RESIDENT rows. */
#define MA_RESIDENT 384

/* The dK dV kernels come in two widths of step (bwdkv_step's NQ), the same bits either way: 64
 * queries at a time, or 32 in a register budget that lets 3 blocks share a multiprocessor
 * (65536 registers / (3 x 128 threads): 168 a thread; the 64-wide step takes about 230, 2 blocks). */
__host__ __device__ constexpr int kv_min_blocks(int nq) { return nq == 32 ? 3 : 1; }
static size_t resident_smem(int T) {
    size_t tr = (size_t)(T + 15) / 16 * 16;
    return 2 * tr * MA_HD * sizeof(bf16) + 2 * (tr + MA_TILE) * sizeof(float);
}

/* dst (Tr rows, swizzled) <- rows [0, T) of src (rows ld floats apart), zero up to Tr. */
__device__ static inline void load_resident(bf16 *dst, const float *src, long ld, int T, int Tr) {
    for (int e = threadIdx.x; e < Tr * (MA_HD / 4); e += MA_WARPS * 32) {
        int r = e / (MA_HD / 4), c4 = e % (MA_HD / 4);
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < T) v = *reinterpret_cast<const float4 *>(src + (long)r * ld + 4 * c4);
        *reinterpret_cast<uint2 *>(dst + lay_swz::at(r, 4 * c4)) =
            make_uint2(pack2(v.x, v.y), pack2(v.z, v.w));
    }
}

/* The same from a bf16 operand tensor (rows ld elements apart, 16-byte aligned): 8 values a step,
 * as they are; one 16-byte chunk of the swizzled row each. */
__device__ static inline void load_resident(bf16 *dst, const bf16 *src, long ld, int T, int Tr) {
    for (int e = threadIdx.x; e < Tr * (MA_HD / 8); e += MA_WARPS * 32) {
        int r = e / (MA_HD / 8), c8 = e % (MA_HD / 8);
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (r < T) v = *reinterpret_cast<const uint4 *>(src + (long)r * ld + 8 * c8);
        *reinterpret_cast<uint4 *>(dst + lay_swz::at(r, 8 * c8)) = v;
    }
}

/* The resident kernels' work shared out among the warps, the last strips shared with the split
 * (UMDQ_CUDA_ATTN_SPLIT=1): res_item.h. Only the shared strips' sums are split, so every other
 * row gets the bits the kernel gives without the split. */
static_assert(MA_WARPS == RES_WARPS, "res_item.h shares out the work of 4 warps");

/* The ordered sum of a shared strip's NACC accumulators (each 16 x 64, as the strip functions
 * leave them) over its parts, in red (NACC x 1024 floats of shared memory for the strip, free of
 * other use): part 0 stores its sums, each next part adds its own to them in turn, and the last
 * part ends with the total in its registers, ((p0 + p1) + p2) + p3. Every thread of the block
 * calls it (its barriers), after a barrier past the last read of what red overlays. */
template <int NACC>
__device__ static inline void part_sums(float *red, float (*const acc[NACC])[4], const res_item &it) {
    const int lane = threadIdx.x & 31;
    for (int p = 0; p < it.parts; p++) {
        if (it.part == p)
#pragma unroll
            for (int a = 0; a < NACC; a++)
#pragma unroll
                for (int dn = 0; dn < 8; dn++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        float *x = red + a * 1024 + (dn * 4 + e) * 32 + lane;
                        if (p == 0) *x = acc[a][dn][e];
                        else if (p == it.parts - 1) acc[a][dn][e] = *x + acc[a][dn][e];
                        else *x = *x + acc[a][dn][e];
                    }
        if (p < it.parts - 1) __syncthreads();
    }
}

/* The forward's ordered merge of a shared strip's parts (each an online softmax over its range of
 * keys: O unnormalised, the running max m and this lane's partial sums l of its two rows, as
 * fwd_step leaves them) in red (1152 floats of shared memory for the strip, free of other use):
 * part 0 stores its state, each next part merges its own into it in turn, m = max(m_a, m_b), l
 * and O scaled by 2^(m_a - m) and 2^(m_b - m) and added, and the last part ends with the merged
 * state in its registers, for fwd_store. Every thread of the block calls it (its barriers), after
 * a barrier past the last read of what red overlays. */
__device__ static inline void part_merge(float *red, float o[8][4], float ml[4], const res_item &it) {
    const int lane = threadIdx.x & 31;
    for (int p = 0; p < it.parts; p++) {
        if (it.part == p) {
            float fa[2] = {0.0f, 0.0f}, fb[2] = {1.0f, 1.0f};
            if (p > 0)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const float ma = red[(32 + r) * 32 + lane], m = fmaxf(ma, ml[r]);
                    fa[r] = exp2f(ma - m);
                    fb[r] = exp2f(ml[r] - m);
                    ml[r] = m;
                    ml[2 + r] = red[(34 + r) * 32 + lane] * fa[r] + ml[2 + r] * fb[r];
                }
#pragma unroll
            for (int dn = 0; dn < 8; dn++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float *x = red + (dn * 4 + e) * 32 + lane;
                    if (p > 0) o[dn][e] = *x * fa[e >> 1] + o[dn][e] * fb[e >> 1];
                    if (p < it.parts - 1) *x = o[dn][e];
                }
            if (p < it.parts - 1)
#pragma unroll
                for (int j = 0; j < 4; j++) red[(32 + j) * 32 + lane] = ml[j];
        }
        if (p < it.parts - 1) __syncthreads();
    }
}

#define RS_CARVE                                                                                   \
    extern __shared__ __align__(16) unsigned char ma_smem[];                                       \
    const int Tr = (T + 15) / 16 * 16;                                                             \
    bf16 *rA = reinterpret_cast<bf16 *>(ma_smem), *rB = rA + (long)Tr * MA_HD;

/* k_res_fwd's part (item i) of a shared strip of queries: the online softmax over its range of
 * keys, the parts merged (part_merge) and stored by the last part; every thread of the block calls
 * it. Not inlined, as res_bwd_q_part. */
template <class QT, class OT>
__device__ static __noinline__ void res_fwd_part(OT *ob, float *lb, const QT *base, bf16 *rA,
                                                 const bf16 *rB, int T, long W, int shared, int i,
                                                 float sl2) {
    const res_item it = res_item_at(i, T, shared);
    uint32_t qa[4][4];
    global_afrags(qa, base, 3 * W, it.r, T);
    float o[8][4], ml[4] = {-INFINITY, -INFINITY, 0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    for (int k0 = it.from; k0 < it.to; k0 += MA_TILE) /* keys past `to` masked as past T */
        fwd_step<lay_swz>(o, ml, qa, rA, rB, k0, k0, it.to, sl2);
    __syncthreads(); /* K and V read for the last time: red overlays them */
    const int slot = (threadIdx.x >> 5) / it.parts; /* the shared strip's */
    part_merge(reinterpret_cast<float *>(rA) + slot * RES_RED_FWD, o, ml, it);
    if (it.part == it.parts - 1) fwd_store(ob, lb, o, ml, W, it.r, T);
}

/* The resident forward, each warp's strip R tiles of 16 query rows (R 1, or 2 with
 * UMDQ_CUDA_ATTN_FWD32=1: fwd_step_tiles, each K and V fragment read once for both tiles); with
 * R 1 and SPLIT (UMDQ_CUDA_ATTN_SPLIT=1) the last strips shared as in the backward (res_item). */
template <class QT, int R, class OT, bool SPLIT = false>
__global__ static void __launch_bounds__(MA_WARPS * 32)
k_res_fwd(OT *out, float *lse, const QT *qkv, int T, int heads, float sl2) {
    static_assert(!SPLIT || R == 1, "the shared strips are strips of 16 rows");
    RS_CARVE
    const int warp = threadIdx.x >> 5, h = blockIdx.x, b = blockIdx.y;
    const long W = (long)heads * MA_HD, row = 3 * W;
    const QT *base = qkv + (long)b * T * row + (long)h * MA_HD;
    OT *ob = out + (long)b * T * W + (long)h * MA_HD;
    float *lb = lse + ((long)b * heads + h) * T;
    load_resident(rA, base + W, row, T, Tr);
    load_resident(rB, base + 2 * W, row, T, Tr);
    __syncthreads();
    const int shared = res_shared(T, SPLIT), whole = res_whole_rows(T, shared);
    for (int q = warp * 16 * R; q < whole; q += MA_WARPS * 16 * R) {
        if constexpr (R == 1) {
            uint32_t qa[4][4];
            global_afrags(qa, base, row, q, T);
            float o[8][4], ml[4] = {-INFINITY, -INFINITY, 0.0f, 0.0f};
#pragma unroll
            for (int i = 0; i < 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
            for (int k0 = 0; k0 < T; k0 += MA_TILE)
                fwd_step<lay_swz>(o, ml, qa, rA, rB, k0, k0, T, sl2);
            fwd_store(ob, lb, o, ml, W, q, T);
        } else {
            const int act = imin(R, (T - q + 15) / 16); /* tiles with a row below T */
            uint32_t qa[R][4][4];
            float o[R][8][4], ml[R][4];
#pragma unroll
            for (int r = 0; r < R; r++) {
                global_afrags(qa[r], base, row, q + 16 * r, T);
                ml[r][0] = ml[r][1] = -INFINITY, ml[r][2] = ml[r][3] = 0.0f;
#pragma unroll
                for (int i = 0; i < 8; i++) o[r][i][0] = o[r][i][1] = o[r][i][2] = o[r][i][3] = 0.0f;
            }
            for (int k0 = 0; k0 < T; k0 += MA_TILE)
                fwd_step_tiles<lay_swz, R>(o, ml, qa, rA, rB, k0, k0, T, sl2, act);
#pragma unroll
            for (int r = 0; r < R; r++)
                if (r < act) fwd_store(ob, lb, o[r], ml[r], W, q + 16 * r, T);
        }
    }
    if constexpr (SPLIT)
        if (shared) res_fwd_part(ob, lb, base, rA, rB, T, W, shared, whole / 16 + warp, sl2);
}

/* k_res_bwd_q's part (item i) of a shared strip, the parts' sums added (part_sums) and stored
 * by the last part; every thread of the block calls it. Not inlined: its registers are not the
 * whole strips' loop's (the kernel's count stays that loop's). */
template <class QT, class OT, class GT, class DT>
__device__ static __noinline__ void res_bwd_q_part(GT *dbase, float *Dg, const DT *gbase,
                                                   const OT *obase, const QT *base, const float *lse,
                                                   bf16 *rA, const bf16 *rB, int T, long W,
                                                   int shared, int i, float sl2, float scale) {
    const long row = 3 * W;
    const res_item it = res_item_at(i, T, shared);
    uint32_t qa[4][4], ga[4][4];
    global_afrags(qa, base, row, it.r, T);
    global_afrags(ga, gbase, W, it.r, T);
    float LD[4];
    rows_ld(LD, it.part == 0 ? Dg : nullptr, gbase, obase, lse, W, it.r, T);
    float dq[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++) dq[j][0] = dq[j][1] = dq[j][2] = dq[j][3] = 0.0f;
    for (int k0 = it.from; k0 < it.to; k0 += MA_TILE) /* keys past `to` masked as past T */
        bwdq_step<lay_swz>(dq, qa, ga, rA, rB, k0, k0, it.to, LD, sl2, scale);
    __syncthreads(); /* K and V read for the last time: red overlays them */
    float (*const acc[1])[4] = {dq};
    const int slot = (threadIdx.x >> 5) / it.parts; /* the shared strip's */
    part_sums<1>(reinterpret_cast<float *>(rA) + slot * RES_RED_DQ, acc, it);
    if (it.part == it.parts - 1) store_strip(dbase, row, dq, it.r, T);
}

template <class QT, class OT, class GT, class DT, bool SPLIT = false>
__global__ static void __launch_bounds__(MA_WARPS * 32)
k_res_bwd_q(GT *dqkv, float *D, const DT *dout, const OT *out, const QT *qkv,
            const float *lse, int T, int heads, float scale) {
    RS_CARVE
    const int warp = threadIdx.x >> 5, h = blockIdx.x, b = blockIdx.y;
    const long W = (long)heads * MA_HD, row = 3 * W;
    const QT *base = qkv + (long)b * T * row + (long)h * MA_HD;
    const DT *gbase = dout + (long)b * T * W + (long)h * MA_HD;
    const OT *obase = out + (long)b * T * W + (long)h * MA_HD;
    const long lo = ((long)b * heads + h) * T;
    const float sl2 = scale * LOG2E;
    load_resident(rA, base + W, row, T, Tr);
    load_resident(rB, base + 2 * W, row, T, Tr);
    __syncthreads();
    GT *dbase = dqkv + (long)b * T * row + (long)h * MA_HD;
    const int shared = res_shared(T, SPLIT), whole = res_whole_rows(T, shared);
    for (int q = warp * 16; q < whole; q += MA_WARPS * 16) {
        uint32_t qa[4][4], ga[4][4];
        global_afrags(qa, base, row, q, T);
        global_afrags(ga, gbase, W, q, T);
        float LD[4];
        rows_ld(LD, D + lo, gbase, obase, lse + lo, W, q, T);
        float dq[8][4];
#pragma unroll
        for (int i = 0; i < 8; i++) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;
        for (int k0 = 0; k0 < T; k0 += MA_TILE)
            bwdq_step<lay_swz>(dq, qa, ga, rA, rB, k0, k0, T, LD, sl2, scale);
        store_strip(dbase, row, dq, q, T);
    }
    if constexpr (SPLIT)
        if (shared)
            res_bwd_q_part(dbase, D + lo, gbase, obase, base, lse + lo, rA, rB, T, W, shared,
                           whole / 16 + warp, sl2, scale);
}

/* k_res_bwd_kv's part (item i) of a shared strip of keys, the parts' sums added (part_sums)
 * and stored by the last part; every thread of the block calls it. Not inlined, as
 * res_bwd_q_part. */
template <class QT, int NQ, class GT>
__device__ static __noinline__ void res_bwd_kv_part(GT *dbase, const QT *base, bf16 *rA,
                                                    const bf16 *rB, const float *sL, const float *sD,
                                                    int T, long W, int shared, int i, float sl2,
                                                    float scale) {
    const long row = 3 * W;
    const res_item it = res_item_at(i, T, shared);
    uint32_t ka[4][4], va[4][4];
    global_afrags(ka, base + W, row, it.r, T);
    global_afrags(va, base + 2 * W, row, it.r, T);
    float dk[8][4], dv[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++) {
        dk[j][0] = dk[j][1] = dk[j][2] = dk[j][3] = 0.0f;
        dv[j][0] = dv[j][1] = dv[j][2] = dv[j][3] = 0.0f;
    }
    /* queries past `to`: bwdkv_step takes `to` as T, and skips the 16-column steps wholly past
     * it; a part's `to` is T or a multiple of 16 (res_item_at; test_cuda_partition), so no
     * query of another part is summed here (within a step, only the last, T, masks columns) */
    for (int q0 = it.from; q0 < it.to; q0 += MA_TILE)
        bwdkv_step<lay_swz, NQ>(dk, dv, ka, va, rA, rB, q0, q0, it.to, sL + q0, sD + q0, sl2, scale);
    __syncthreads(); /* Q and dO read for the last time: red overlays them */
    float (*const acc[2])[4] = {dk, dv};
    const int slot = (threadIdx.x >> 5) / it.parts; /* the shared strip's */
    part_sums<2>(reinterpret_cast<float *>(rA) + slot * RES_RED_DKDV, acc, it);
    if (it.part == it.parts - 1) {
        store_strip(dbase + W, row, dk, it.r, T);
        store_strip(dbase + 2 * W, row, dv, it.r, T);
    }
}

template <class QT, int NQ, class GT, class DT, bool SPLIT = false>
__global__ static void __launch_bounds__(MA_WARPS * 32, kv_min_blocks(NQ))
k_res_bwd_kv(GT *dqkv, const DT *dout, const QT *qkv, const float *lse, const float *D,
             int T, int heads, float scale) {
    RS_CARVE
    float *sL = reinterpret_cast<float *>(rB + (long)Tr * MA_HD), *sD = sL + Tr + MA_TILE;
    const int warp = threadIdx.x >> 5, h = blockIdx.x, b = blockIdx.y;
    const long W = (long)heads * MA_HD, row = 3 * W;
    const QT *base = qkv + (long)b * T * row + (long)h * MA_HD;
    const DT *gbase = dout + (long)b * T * W + (long)h * MA_HD;
    const long lo = ((long)b * heads + h) * T;
    const float sl2 = scale * LOG2E;
    load_resident(rA, base, row, T, Tr);
    load_resident(rB, gbase, W, T, Tr);
    for (int i = threadIdx.x; i < Tr + MA_TILE; i += MA_WARPS * 32) {
        sL[i] = i < T ? lse[lo + i] * LOG2E : INFINITY; /* P = 0 past T */
        sD[i] = i < T ? D[lo + i] : 0.0f;
    }
    __syncthreads();
    GT *dbase = dqkv + (long)b * T * row + (long)h * MA_HD;
    const int shared = res_shared(T, SPLIT), whole = res_whole_rows(T, shared);
    for (int k = warp * 16; k < whole; k += MA_WARPS * 16) {
        uint32_t ka[4][4], va[4][4];
        global_afrags(ka, base + W, row, k, T);
        global_afrags(va, base + 2 * W, row, k, T);
        float dk[8][4], dv[8][4];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.0f;
            dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.0f;
        }
        for (int q0 = 0; q0 < T; q0 += MA_TILE)
            bwdkv_step<lay_swz, NQ>(dk, dv, ka, va, rA, rB, q0, q0, T, sL + q0, sD + q0, sl2, scale);
        store_strip(dbase + W, row, dk, k, T);
        store_strip(dbase + 2 * W, row, dv, k, T);
    }
    if constexpr (SPLIT)
        if (shared)
            res_bwd_kv_part<QT, NQ>(dbase, base, rA, rB, sL, sD, T, W, shared, whole / 16 + warp,
                                    sl2, scale);
}

/* ---- dQ from a stored dS (UMDQ_CUDA_ATTN_DS: res_bwd_ds) ---------------------------------------
 * The dK dV kernel, for a group of heads from h0 (blockIdx.x: the head in the group), also writes
 * each (sequence, head)'s dS into ds ((Tr, Tr) bf16 a pair, queries as rows: bwdkv_step's DS), and
 * computes D = rowsum(dO O) itself (rows_ld, as the dQ kernel does: the same values) into shared
 * memory, since no dQ kernel ran before it; then k_res_bwd_q_ds takes dQ = dS K in one product
 * over the stored dS, where k_res_bwd_q computed S, dP and dS again (2 of the backward's 7
 * products and half its exponentials). dK and dV are the default kernels' bits; dQ sums the same
 * terms in the same order, from dS rounded from S^T = K Q^T where the dQ kernel had S = Q K^T
 * (the same dot products, in another product's layout). */
template <class QT, int NQ, class GT, class DT, class OT>
__global__ static void __launch_bounds__(MA_WARPS * 32, kv_min_blocks(NQ))
k_res_bwd_kv_ds(GT *dqkv, bf16 *ds, const DT *dout, const OT *out, const QT *qkv,
                const float *lse, int T, int heads, int h0, float scale) {
    RS_CARVE
    float *sL = reinterpret_cast<float *>(rB + (long)Tr * MA_HD), *sD = sL + Tr + MA_TILE;
    const int warp = threadIdx.x >> 5, h = h0 + blockIdx.x, b = blockIdx.y;
    const long W = (long)heads * MA_HD, row = 3 * W;
    const QT *base = qkv + (long)b * T * row + (long)h * MA_HD;
    const DT *gbase = dout + (long)b * T * W + (long)h * MA_HD;
    const OT *obase = out + (long)b * T * W + (long)h * MA_HD;
    const long lo = ((long)b * heads + h) * T;
    bf16 *dsb = ds + ((long)b * gridDim.x + blockIdx.x) * Tr * Tr;
    const float sl2 = scale * LOG2E;
    load_resident(rA, base, row, T, Tr);
    load_resident(rB, gbase, W, T, Tr);
    for (int i = threadIdx.x; i < Tr + MA_TILE; i += MA_WARPS * 32) {
        sL[i] = i < T ? lse[lo + i] * LOG2E : INFINITY; /* P = 0 past T */
        if (i >= Tr) sD[i] = 0.0f;
    }
    for (int q = warp * 16; q < Tr; q += MA_WARPS * 16) {
        float LD[4];
        rows_ld(LD, nullptr, gbase, obase, lse + lo, W, q, T); /* 0 past T */
        if ((threadIdx.x & 3) == 0) {
            const int g = (threadIdx.x & 31) >> 2;
            sD[q + g] = LD[2];
            sD[q + g + 8] = LD[3];
        }
    }
    __syncthreads();
    GT *dbase = dqkv + (long)b * T * row + (long)h * MA_HD;
    /* k_res_bwd_kv's strip loop with the dS store (bwdkv_step's DS), written out again: a helper
     * shared with that kernel changed its register allocation (230 to 236, ptxas -v), and the
     * default kernels stay as they were timed */
    for (int k = warp * 16; k < T; k += MA_WARPS * 16) {
        uint32_t ka[4][4], va[4][4];
        global_afrags(ka, base + W, row, k, T);
        global_afrags(va, base + 2 * W, row, k, T);
        float dk[8][4], dv[8][4];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.0f;
            dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.0f;
        }
        for (int q0 = 0; q0 < T; q0 += MA_TILE)
            bwdkv_step<lay_swz, NQ, true>(dk, dv, ka, va, rA, rB, q0, q0, T, sL + q0, sD + q0, sl2,
                                          scale, dsb, Tr, k);
        store_strip(dbase + W, row, dk, k, T);
        store_strip(dbase + 2 * W, row, dv, k, T);
    }
}

/* dQ = dS K of a group of heads from h0 (blockIdx.x: the head in the group), dS as
 * k_res_bwd_kv_ds stored it: K resident (swizzled), each warp's strips of 16 queries taking their
 * A fragments of dS straight from global memory, a k-step of 16 keys at a time, in the order
 * k_res_bwd_q's tiles take them. Rows of dS past T were not written, and are read as zeros. */
template <class QT, class GT>
__global__ static void __launch_bounds__(MA_WARPS * 32)
k_res_bwd_q_ds(GT *dqkv, const bf16 *ds, const QT *qkv, int T, int heads, int h0) {
    RS_CARVE
    (void)rB;
    const int warp = threadIdx.x >> 5, h = h0 + blockIdx.x, b = blockIdx.y;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const long W = (long)heads * MA_HD, row = 3 * W;
    const QT *base = qkv + (long)b * T * row + (long)h * MA_HD;
    const bf16 *dsb = ds + ((long)b * gridDim.x + blockIdx.x) * Tr * Tr;
    load_resident(rA, base + W, row, T, Tr);
    __syncthreads();
    GT *dbase = dqkv + (long)b * T * row + (long)h * MA_HD;
    const int ksteps = Tr / 16;
    for (int q = warp * 16; q < T; q += MA_WARPS * 16) {
        float dq[8][4];
#pragma unroll
        for (int i = 0; i < 8; i++) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;
        const bf16 *r0 = dsb + (long)(q + g) * Tr + 2 * t, *r1 = r0 + 8L * Tr;
        const bool in0 = q + g < T, in1 = q + g + 8 < T; /* rows past T: never stored, not read */
#pragma unroll 2
        for (int j = 0; j < ksteps; j++) {
            const uint32_t a[4] = {in0 ? lds32(r0 + 16 * j) : 0u, in1 ? lds32(r1 + 16 * j) : 0u,
                                   in0 ? lds32(r0 + 16 * j + 8) : 0u,
                                   in1 ? lds32(r1 + 16 * j + 8) : 0u};
#pragma unroll
            for (int dn = 0; dn < 8; dn += 2) {
                uint32_t bb[4];
                ldsm_trans<lay_swz>(bb, rA, j * 16, dn * 8);
                mma16816(dq[dn], a, bb[0], bb[1]);
                mma16816(dq[dn + 1], a, bb[2], bb[3]);
            }
        }
        store_strip(dbase, row, dq, q, T);
    }
}
static size_t resident_q_ds_smem(int T) {
    return (size_t)(T + 15) / 16 * 16 * MA_HD * sizeof(bf16);
}

/* ---- tiled kernels: longer sequences, 64-row tiles staged in turn ---------------------------------
 * A block per 64 rows of one (sequence, head), a warp per 16 of them; the tiles of the other
 * operand travel through the fp32 staging (cp.async, double-buffered against the compute). */

template <class QT, class OT>
__global__ static void __launch_bounds__(MA_WARPS * 32)
k_mma_fwd(OT *out, float *lse, const QT *qkv, int T, int heads, float sl2) {
    MA_CARVE
    const int warp = threadIdx.x >> 5;
    const int q0 = blockIdx.x * MA_TILE, h = blockIdx.y, b = blockIdx.z;
    const long W = (long)heads * MA_HD, row = 3 * W;
    const QT *base = qkv + (long)b * T * row + (long)h * MA_HD;
    const int r0 = warp * 16;
    const bool active = q0 + r0 < T;

    uint32_t qa[4][4];
    issue_tile(fA, base, row, q0, T);
    cp_commit();
    cp_wait_all();
    __syncthreads();
    unstage_tile<QT>(sA, fA);
    __syncthreads();
    load_afrags<lay_pad>(qa, sA, r0);
    issue_tile(fA, base + W, row, 0, T);
    issue_tile(fB, base + 2 * W, row, 0, T);
    cp_commit();

    float o[8][4], ml[4] = {-INFINITY, -INFINITY, 0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    for (int k0 = 0; k0 < T; k0 += MA_TILE) {
        cp_wait_all();
        __syncthreads(); /* tile k0 staged; the previous bf16 tiles (or Q's) no longer read */
        unstage_tile<QT>(sA, fA);
        unstage_tile<QT>(sB, fB);
        __syncthreads();
        if (k0 + MA_TILE < T) {
            issue_tile(fA, base + W, row, k0 + MA_TILE, T);
            issue_tile(fB, base + 2 * W, row, k0 + MA_TILE, T);
            cp_commit();
        }
        if (active) fwd_step<lay_pad>(o, ml, qa, sA, sB, 0, k0, T, sl2);
    }
    if (active)
        fwd_store(out + (long)b * T * W + (long)h * MA_HD, lse + ((long)b * heads + h) * T, o, ml,
                  W, q0 + r0, T);
}

/* dQ of 64 queries; first D = rowsum(dO O) of them, written to D for the dK dV kernel. */
template <class QT, class OT, class GT, class DT>
__global__ static void __launch_bounds__(MA_WARPS * 32)
k_mma_bwd_q(GT *dqkv, float *D, const DT *dout, const OT *out, const QT *qkv,
            const float *lse, int T, int heads, float scale) {
    MA_CARVE
    const int warp = threadIdx.x >> 5;
    const int q0 = blockIdx.x * MA_TILE, h = blockIdx.y, b = blockIdx.z;
    const long W = (long)heads * MA_HD, row = 3 * W;
    const QT *base = qkv + (long)b * T * row + (long)h * MA_HD;
    const DT *gbase = dout + (long)b * T * W + (long)h * MA_HD;
    const OT *obase = out + (long)b * T * W + (long)h * MA_HD;
    const long lo = ((long)b * heads + h) * T;
    const int r0 = warp * 16;
    const bool active = q0 + r0 < T;
    const float sl2 = scale * LOG2E;

    issue_tile(fA, base, row, q0, T);
    issue_tile(fB, gbase, W, q0, T);
    cp_commit();
    cp_wait_all();
    __syncthreads();
    unstage_tile<QT>(sA, fA);
    unstage_tile<DT>(sB, fB);
    __syncthreads();
    uint32_t qa[4][4], ga[4][4];
    load_afrags<lay_pad>(qa, sA, r0);
    load_afrags<lay_pad>(ga, sB, r0);
    float LD[4];
    rows_ld(LD, D + lo, gbase, obase, lse + lo, W, q0 + r0, T);
    issue_tile(fA, base + W, row, 0, T);
    issue_tile(fB, base + 2 * W, row, 0, T);
    cp_commit();

    float dq[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;
    for (int k0 = 0; k0 < T; k0 += MA_TILE) {
        cp_wait_all();
        __syncthreads();
        unstage_tile<QT>(sA, fA);
        unstage_tile<QT>(sB, fB);
        __syncthreads();
        if (k0 + MA_TILE < T) {
            issue_tile(fA, base + W, row, k0 + MA_TILE, T);
            issue_tile(fB, base + 2 * W, row, k0 + MA_TILE, T);
            cp_commit();
        }
        if (active) bwdq_step<lay_pad>(dq, qa, ga, sA, sB, 0, k0, T, LD, sl2, scale);
    }
    if (active) store_strip(dqkv + (long)b * T * row + (long)h * MA_HD, row, dq, q0 + r0, T);
}

/* dK and dV of 64 keys (after k_mma_bwd_q has written D). */
template <class QT, int NQ, class GT, class DT>
__global__ static void __launch_bounds__(MA_WARPS * 32, kv_min_blocks(NQ))
k_mma_bwd_kv(GT *dqkv, const DT *dout, const QT *qkv, const float *lse, const float *D,
             int T, int heads, float scale) {
    MA_CARVE
    /* fX[0, 128): the staging of lse and D; sL, sD: the tile's, in the form used */
    float *fX = MA_EXTRA, *sL = fX + 2 * MA_TILE, *sD = fX + 3 * MA_TILE;
    const int warp = threadIdx.x >> 5;
    const int k0 = blockIdx.x * MA_TILE, h = blockIdx.y, b = blockIdx.z;
    const long W = (long)heads * MA_HD, row = 3 * W;
    const QT *base = qkv + (long)b * T * row + (long)h * MA_HD;
    const DT *gbase = dout + (long)b * T * W + (long)h * MA_HD;
    const float *Lb = lse + ((long)b * heads + h) * T, *Db = D + ((long)b * heads + h) * T;
    const int r0 = warp * 16;
    const bool active = k0 + r0 < T;
    const float sl2 = scale * LOG2E;

    issue_tile(fA, base + W, row, k0, T);
    issue_tile(fB, base + 2 * W, row, k0, T);
    cp_commit();
    cp_wait_all();
    __syncthreads();
    unstage_tile<QT>(sA, fA);
    unstage_tile<QT>(sB, fB);
    __syncthreads();
    uint32_t ka[4][4], va[4][4];
    load_afrags<lay_pad>(ka, sA, r0);
    load_afrags<lay_pad>(va, sB, r0);
    issue_tile(fA, base, row, 0, T);
    issue_tile(fB, gbase, W, 0, T);
    issue_row(fX, Lb, 0, T);
    issue_row(fX + MA_TILE, Db, 0, T);
    cp_commit();

    float dk[8][4], dv[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.0f;
        dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.0f;
    }
    for (int q0 = 0; q0 < T; q0 += MA_TILE) {
        cp_wait_all();
        __syncthreads();
        unstage_tile<QT>(sA, fA);
        unstage_dout_tile<DT>(sB, fB);
        for (int i = threadIdx.x; i < MA_TILE; i += MA_WARPS * 32) {
            bool in = q0 + i < T;
            sL[i] = in ? fX[i] * LOG2E : INFINITY; /* P = 0 past T */
            sD[i] = in ? fX[MA_TILE + i] : 0.0f;
        }
        __syncthreads();
        if (q0 + MA_TILE < T) {
            issue_tile(fA, base, row, q0 + MA_TILE, T);
            issue_tile(fB, gbase, W, q0 + MA_TILE, T);
            issue_row(fX, Lb, q0 + MA_TILE, T);
            issue_row(fX + MA_TILE, Db, q0 + MA_TILE, T);
            cp_commit();
        }
        if (active) bwdkv_step<lay_pad, NQ>(dk, dv, ka, va, sA, sB, 0, q0, T, sL, sD, sl2, scale);
    }
    if (!active) return;
    GT *dbase = dqkv + (long)b * T * row + (long)h * MA_HD;
    store_strip(dbase + W, row, dk, k0 + r0, T);
    store_strip(dbase + 2 * W, row, dv, k0 + r0, T);
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

/* The kernels' dynamic shared memory limits, set once per process (one device per process), for
 * both element types of qkv and (the forward and dQ kernels) of O, and the backward's with a
 * bf16 dqkv (a gradient tensor: with a bf16 qkv only, as the dispatch takes it), with an fp32
 * dout and with a bf16 one (also a gradient tensor: with a bf16 dqkv only). */
template <class QT, class OT> static int mma_setup_out(umd_ctx *c) {
    const int tiled = MA_SMEM, res = (int)resident_smem(MA_RESIDENT);
    const cudaFuncAttribute a = cudaFuncAttributeMaxDynamicSharedMemorySize;
    return cuda_check(c, cudaFuncSetAttribute(k_mma_fwd<QT, OT>, a, tiled), "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_mma_bwd_q<QT, OT, float, float>, a, tiled),
                      "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_res_fwd<QT, 1, OT>, a, res), "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_res_fwd<QT, 2, OT>, a, res), "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_res_fwd<QT, 1, OT, true>, a, res), "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_res_bwd_q<QT, OT, float, float>, a, res),
                      "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_res_bwd_q<QT, OT, float, float, true>, a, res),
                      "attention");
}
template <class QT, class GT, class DT> static int mma_setup_kv(umd_ctx *c) {
    const int tiled = MA_SMEM, res = (int)resident_smem(MA_RESIDENT);
    const cudaFuncAttribute a = cudaFuncAttributeMaxDynamicSharedMemorySize;
    return cuda_check(c, cudaFuncSetAttribute(k_mma_bwd_kv<QT, 64, GT, DT>, a, tiled), "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_mma_bwd_kv<QT, 32, GT, DT>, a, tiled), "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_res_bwd_kv<QT, 64, GT, DT>, a, res), "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_res_bwd_kv<QT, 32, GT, DT>, a, res), "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_res_bwd_kv<QT, 64, GT, DT, true>, a, res),
                      "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_res_bwd_kv<QT, 32, GT, DT, true>, a, res),
                      "attention");
}
/* The backward's kernels with a bf16 dqkv (qkv bf16) and dout fp32 or bf16 (DT): dQ for both
 * element types of O, dK dV. */
template <class OT, class DT> static int mma_setup_grad_out(umd_ctx *c) {
    const int tiled = MA_SMEM, res = (int)resident_smem(MA_RESIDENT);
    const cudaFuncAttribute a = cudaFuncAttributeMaxDynamicSharedMemorySize;
    return cuda_check(c, cudaFuncSetAttribute(k_mma_bwd_q<bf16, OT, bf16, DT>, a, tiled),
                      "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_res_bwd_q<bf16, OT, bf16, DT>, a, res),
                      "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_res_bwd_q<bf16, OT, bf16, DT, true>, a, res),
                      "attention");
}
template <class DT> static int mma_setup_grad(umd_ctx *c) {
    return mma_setup_grad_out<float, DT>(c) || mma_setup_grad_out<bf16, DT>(c) ||
           mma_setup_kv<bf16, bf16, DT>(c);
}
template <class QT> static int mma_setup_type(umd_ctx *c) {
    return mma_setup_out<QT, float>(c) || mma_setup_out<QT, bf16>(c) ||
           mma_setup_kv<QT, float, float>(c);
}

/* The dQ-from-dS kernels (UMDQ_CUDA_ATTN_DS), for a bf16 qkv (the defaults' operands), dqkv and
 * dout both fp32 or both bf16 (GT), O of either type (OT). */
template <class GT, class OT> static int mma_setup_ds_out(umd_ctx *c) {
    const int res = (int)resident_smem(MA_RESIDENT);
    const cudaFuncAttribute a = cudaFuncAttributeMaxDynamicSharedMemorySize;
    return cuda_check(c, cudaFuncSetAttribute(k_res_bwd_kv_ds<bf16, 64, GT, GT, OT>, a, res),
                      "attention") ||
           cuda_check(c, cudaFuncSetAttribute(k_res_bwd_kv_ds<bf16, 32, GT, GT, OT>, a, res),
                      "attention");
}
template <class GT> static int mma_setup_ds(umd_ctx *c) {
    const int q = (int)resident_q_ds_smem(MA_RESIDENT);
    return mma_setup_ds_out<GT, float>(c) || mma_setup_ds_out<GT, bf16>(c) ||
           cuda_check(c, cudaFuncSetAttribute(k_res_bwd_q_ds<bf16, GT>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize, q),
                      "attention");
}

static int mma_setup(umd_ctx *c) {
    static int done = 0;
    if (done) return 0;
    if (mma_setup_type<float>(c) || mma_setup_type<bf16>(c) || mma_setup_grad<float>(c) ||
        mma_setup_grad<bf16>(c) || mma_setup_ds<float>(c) || mma_setup_ds<bf16>(c))
        return -1;
    done = 1;
    return 0;
}

/* The context's choice of these kernels at head width hd; the dispatch (attention.cu) and
 * attention_operand both ask it. */
int cuda_mma_attention_mode(const umd_ctx *c, int hd) {
    return c->attn_mode == UMD_ATTN_MMA && c->math == UMD_MATH_BF16 && hd == MA_HD;
}

int cuda_mma_attention_usable(const umd_ctx *c, int n, int T, int heads, int hd) {
    return cuda_mma_attention_mode(c, hd) && n > 0 && T > 0 && n <= 65535 && heads <= 65535 &&
           c->attn_d && (size_t)n * heads * T <= c->attn_d_floats;
}

template <class QT, class OT>
static void mma_fwd(umd_ctx *c, OT *out, float *lse, const QT *qkv, int n, int T, int heads) {
    const float sl2 = LOG2E / sqrtf((float)MA_HD);
    if (T <= MA_RESIDENT) {
        const dim3 grid((unsigned)heads, (unsigned)n);
        if (c->attn_fwd32)
            k_res_fwd<QT, 2, OT><<<grid, MA_WARPS * 32, resident_smem(T), c->stream>>>(
                out, lse, qkv, T, heads, sl2);
        else if (c->attn_split && res_shared(T, 1))
            k_res_fwd<QT, 1, OT, true><<<grid, MA_WARPS * 32, resident_smem(T), c->stream>>>(
                out, lse, qkv, T, heads, sl2);
        else
            k_res_fwd<QT, 1, OT><<<grid, MA_WARPS * 32, resident_smem(T), c->stream>>>(
                out, lse, qkv, T, heads, sl2);
    } else {
        dim3 grid((unsigned)((T + MA_TILE - 1) / MA_TILE), (unsigned)heads, (unsigned)n);
        k_mma_fwd<QT, OT><<<grid, MA_WARPS * 32, MA_SMEM, c->stream>>>(out, lse, qkv, T, heads,
                                                                       sl2);
    }
    CUDA_LAUNCHED(c, "attention_fwd");
}

/* Whether a resident dK dV kernel steps 32 queries at T tokens: with attn_kv32, where its 32-query
 * form (k32) fits more blocks on a multiprocessor than its 64-query form (k64). Its resident K and
 * V grow with T, and from about 289 tokens shared memory holds 2 blocks either way, which the
 * 64-query step fills without the 32-query step's spill and extra instructions. The occupancy
 * calculator is asked once for each T rounded up to 16 and each pair of kernels (memo: the pair's
 * answers, 1 for 32 queries, -1 for 64, 0 not yet asked; a failed query keeps the switch's
 * choice). */
template <class K32, class K64>
static int res_kv32_of(const umd_ctx *c, signed char *memo, size_t slots, int pair, int T, K32 k32,
                       K64 k64) {
    if (!c->attn_kv32) return 0;
    const int slot = ((T + 15) / 16 - 1) * 4 + pair;
    if (slot < 0 || (size_t)slot >= slots) return 1;
    if (!memo[slot]) {
        int b32 = 0, b64 = 0;
        const size_t smem = resident_smem(T);
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b32, k32, MA_WARPS * 32, smem) !=
                cudaSuccess ||
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b64, k64, MA_WARPS * 32, smem) !=
                cudaSuccess) {
            (void)cudaGetLastError(); /* not sticky: the query's own status */
            b32 = 1, b64 = 0;
        }
        memo[slot] = b32 > b64 ? 1 : -1;
    }
    return memo[slot] > 0;
}
/* the default backward's dK dV kernels: pairs qkv fp32; bf16; bf16 with a bf16 dqkv; that with
 * a bf16 dout too */
template <class QT, class GT, class DT> static int res_kv32(umd_ctx *c, int T) {
    const int pair = sizeof(DT) == 2 ? 3 : sizeof(GT) == 2 ? 2 : sizeof(QT) == 2 ? 1 : 0;
    return res_kv32_of(c, c->kv32_res, sizeof c->kv32_res, pair, T, k_res_bwd_kv<QT, 32, GT, DT>,
                       k_res_bwd_kv<QT, 64, GT, DT>);
}
/* the dS-storing ones (UMDQ_CUDA_ATTN_DS), by their own occupancy (their registers are not the
 * default's: 234 at 64 queries, and a spill at 32): pairs dqkv and dout fp32 or bf16 (GT), by O
 * fp32 or bf16 */
template <class GT, class OT> static int res_kv32_ds(umd_ctx *c, int T) {
    const int pair = (sizeof(GT) == 2 ? 2 : 0) + (sizeof(OT) == 2 ? 1 : 0);
    return res_kv32_of(c, c->kv32_ds, sizeof c->kv32_ds, pair, T,
                       k_res_bwd_kv_ds<bf16, 32, GT, GT, OT>, k_res_bwd_kv_ds<bf16, 64, GT, GT, OT>);
}

/* The resident backward's two kernels, the last strips shared among the warps or not (SPLIT). */
template <class QT, class OT, class GT, class DT, bool SPLIT>
static void res_bwd(umd_ctx *c, GT *dqkv, const DT *dout, const QT *qkv, const OT *out,
                    const float *lse, int n, int T, int heads, float scale) {
    dim3 grid((unsigned)heads, (unsigned)n);
    int part = cuda_prof_part_begin(c, "attention_bwd:dQ");
    k_res_bwd_q<QT, OT, GT, DT, SPLIT><<<grid, MA_WARPS * 32, resident_smem(T), c->stream>>>(
        dqkv, c->attn_d, dout, out, qkv, lse, T, heads, scale);
    cuda_prof_part_end(c, part);
    if (CUDA_LAUNCHED(c, "attention_bwd")) return;
    part = cuda_prof_part_begin(c, "attention_bwd:dK_dV");
    if (res_kv32<QT, GT, DT>(c, T))
        k_res_bwd_kv<QT, 32, GT, DT, SPLIT><<<grid, MA_WARPS * 32, resident_smem(T), c->stream>>>(
            dqkv, dout, qkv, lse, c->attn_d, T, heads, scale);
    else
        k_res_bwd_kv<QT, 64, GT, DT, SPLIT><<<grid, MA_WARPS * 32, resident_smem(T), c->stream>>>(
            dqkv, dout, qkv, lse, c->attn_d, T, heads, scale);
    cuda_prof_part_end(c, part);
}

/* The resident backward with dQ from a stored dS (UMDQ_CUDA_ATTN_DS), a group of heads at a time:
 * as many as the attention workspace (free between ops; the mma kernels keep no tiles there)
 * holds dS for, n (Tr, Tr) bf16 matrices a head. 0, or -1 (nothing queued) where it holds no
 * head's: the caller takes the two default kernels. */
template <class GT, class OT>
static int res_bwd_ds(umd_ctx *c, GT *dqkv, const GT *dout, const bf16 *qkv, const OT *out,
                      const float *lse, int n, int T, int heads, float scale) {
    const size_t Tr = (size_t)(T + 15) / 16 * 16, per_head = (size_t)n * Tr * Tr * sizeof(bf16);
    const size_t fit = c->attn ? c->attn_floats * sizeof(float) / per_head : 0;
    if (fit < 1) return -1;
    const int group = fit < (size_t)heads ? (int)fit : heads;
    bf16 *ds = reinterpret_cast<bf16 *>(c->attn);
    const int kv32 = res_kv32_ds<GT, OT>(c, T);
    for (int h0 = 0; h0 < heads; h0 += group) {
        const int hn = heads - h0 < group ? heads - h0 : group;
        const dim3 grid((unsigned)hn, (unsigned)n);
        int part = cuda_prof_part_begin(c, "attention_bwd:dK_dV_dS");
        if (kv32)
            k_res_bwd_kv_ds<bf16, 32, GT, GT, OT><<<grid, MA_WARPS * 32, resident_smem(T),
                                                      c->stream>>>(dqkv, ds, dout, out, qkv, lse,
                                                                   T, heads, h0, scale);
        else
            k_res_bwd_kv_ds<bf16, 64, GT, GT, OT><<<grid, MA_WARPS * 32, resident_smem(T),
                                                      c->stream>>>(dqkv, ds, dout, out, qkv, lse,
                                                                   T, heads, h0, scale);
        cuda_prof_part_end(c, part);
        if (CUDA_LAUNCHED(c, "attention_bwd")) return 0;
        part = cuda_prof_part_begin(c, "attention_bwd:dQ_from_dS");
        k_res_bwd_q_ds<bf16, GT><<<grid, MA_WARPS * 32, resident_q_ds_smem(T), c->stream>>>(
            dqkv, ds, qkv, T, heads, h0);
        cuda_prof_part_end(c, part);
        if (CUDA_LAUNCHED(c, "attention_bwd")) return 0;
    }
    c->attn_ds_calls++;
    return 0;
}

template <class QT, class OT, class GT, class DT>
static void mma_bwd(umd_ctx *c, GT *dqkv, const DT *dout, const QT *qkv, const OT *out,
                    const float *lse, int n, int T, int heads) {
    const float scale = 1.0f / sqrtf((float)MA_HD);
    /* dQ from a stored dS: with a bf16 qkv (the defaults' operands), dqkv and dout of one type */
    if constexpr (std::is_same<QT, bf16>::value && std::is_same<GT, DT>::value)
        if (T <= MA_RESIDENT && c->attn_ds && T <= c->attn_ds_max_t &&
            res_bwd_ds<GT, OT>(c, dqkv, dout, qkv, out, lse, n, T, heads, scale) == 0)
            return;
    if (T <= MA_RESIDENT && c->attn_split && res_shared(T, 1)) {
        res_bwd<QT, OT, GT, DT, true>(c, dqkv, dout, qkv, out, lse, n, T, heads, scale);
    } else if (T <= MA_RESIDENT) {
        res_bwd<QT, OT, GT, DT, false>(c, dqkv, dout, qkv, out, lse, n, T, heads, scale);
    } else {
        dim3 grid((unsigned)((T + MA_TILE - 1) / MA_TILE), (unsigned)heads, (unsigned)n);
        int part = cuda_prof_part_begin(c, "attention_bwd:dQ");
        k_mma_bwd_q<QT, OT, GT, DT><<<grid, MA_WARPS * 32, MA_SMEM, c->stream>>>(
            dqkv, c->attn_d, dout, out, qkv, lse, T, heads, scale);
        cuda_prof_part_end(c, part);
        if (CUDA_LAUNCHED(c, "attention_bwd")) return;
        part = cuda_prof_part_begin(c, "attention_bwd:dK_dV");
        if (c->attn_kv32)
            k_mma_bwd_kv<QT, 32, GT, DT><<<grid, MA_WARPS * 32, MA_SMEM, c->stream>>>(
                dqkv, dout, qkv, lse, c->attn_d, T, heads, scale);
        else
            k_mma_bwd_kv<QT, 64, GT, DT><<<grid, MA_WARPS * 32, MA_SMEM, c->stream>>>(
                dqkv, dout, qkv, lse, c->attn_d, T, heads, scale);
        cuda_prof_part_end(c, part);
    }
    CUDA_LAUNCHED(c, "attention_bwd");
}

/* mma_fwd, mma_bwd with O fp32 or (obf) bf16. */
template <class QT>
static void mma_fwd_o(umd_ctx *c, void *out, int obf, float *lse, const QT *qkv, int n, int T,
                      int heads) {
    if (obf) mma_fwd(c, (bf16 *)out, lse, qkv, n, T, heads);
    else mma_fwd(c, (float *)out, lse, qkv, n, T, heads);
}
template <class QT, class GT, class DT>
static void mma_bwd_o(umd_ctx *c, GT *dqkv, const DT *dout, const QT *qkv, const void *out,
                      int obf, const float *lse, int n, int T, int heads) {
    if (obf) mma_bwd(c, dqkv, dout, qkv, (const bf16 *)out, lse, n, T, heads);
    else mma_bwd(c, dqkv, dout, qkv, (const float *)out, lse, n, T, heads);
}

void cuda_mma_attention_fwd(umd_ctx *c, void *out, float *lse, const void *qkv, int n, int T,
                            int heads, int qbf, int obf) {
    if (mma_setup(c)) return;
    if (qbf) mma_fwd_o(c, out, obf, lse, (const bf16 *)qkv, n, T, heads);
    else mma_fwd_o(c, out, obf, lse, (const float *)qkv, n, T, heads);
}

void cuda_mma_attention_bwd(umd_ctx *c, void *dqkv, const void *dout, const void *qkv,
                            const void *out, const float *lse, int n, int T, int heads, int qbf,
                            int obf, int gbf, int dbf) {
    if (mma_setup(c)) return;
    /* no such kernels (the dispatch refuses them first): fail rather than take fp32 for bf16 */
    if (gbf && !qbf) {
        cuda_fail(c, "attention_bwd", "a bf16 dqkv needs a bf16 qkv");
        return;
    }
    if (dbf && !gbf) {
        cuda_fail(c, "attention_bwd", "a bf16 dout needs a bf16 dqkv");
        return;
    }
    const float *d32 = (const float *)dout; /* fp32 dout (!dbf) */
    if (dbf)
        mma_bwd_o(c, (bf16 *)dqkv, (const bf16 *)dout, (const bf16 *)qkv, out, obf, lse, n, T,
                  heads);
    else if (gbf) mma_bwd_o(c, (bf16 *)dqkv, d32, (const bf16 *)qkv, out, obf, lse, n, T, heads);
    else if (qbf) mma_bwd_o(c, (float *)dqkv, d32, (const bf16 *)qkv, out, obf, lse, n, T, heads);
    else mma_bwd_o(c, (float *)dqkv, d32, (const float *)qkv, out, obf, lse, n, T, heads);
}
