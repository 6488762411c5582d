/* test_cuda_partition: how the resident mma attention kernels share out a block's work among its
 * 4 warps (kernels/cuda/res_item.h, the arithmetic the kernels run, compiled for the host), on
 * every machine: with UMDQ_CUDA_ATTN_SPLIT the last strips shared where the strips number 4k + 1
 * or 4k + 2, every warp one item per turn, each strip's rows of the other operand covered once,
 * and the shared memory the parts combine in within the resident operands it overlays. */
#include "t.h"
#include "cuda/res_item.h"

#define MA_RESIDENT 384 /* mma_attention.cu's longest resident sequence */
#define MA_HD 64

/* Which strips are shared, by the rule umd_cuda.h states. */
static void test_partition_rule(void) {
    static const int T_shared[][2] = {{1, 0},   {16, 0},  {48, 0},  {64, 0},  {65, 1},  {80, 1},
                                      {81, 2},  {96, 2},  {97, 0},  {112, 0}, {113, 0}, {128, 0},
                                      {129, 1}, {200, 1}, {257, 1}, {337, 2}, {384, 0}};
    for (size_t k = 0; k < sizeof T_shared / sizeof *T_shared; k++) {
        T_EQ_INT(res_shared(T_shared[k][0], 1), T_shared[k][1]);
        T_EQ_INT(res_shared(T_shared[k][0], 0), 0);
    }
}

/* For every T a resident kernel takes, split or not: the items of each warp are whole strips
 * (every row of the other operand) and then, where strips are shared, exactly one part; each
 * strip's ranges cover [0, T) once, in order, from whole strips of 16 (the last range up to T);
 * the parts of a strip are 0 .. parts - 1, parts = 4 / shared; and the floats the parts combine
 * in fit the resident operands they overlay (K, or K and V / Q and dO: Tr x 64 bf16 each). */
static void test_partition_covers(void) {
    int checked = 0;
    for (int split = 0; split < 2; split++)
        for (int T = 1; T <= MA_RESIDENT; T++) {
            const int S = (T + 15) / 16, shared = res_shared(T, split), whole = S - shared;
            const int items = whole + (shared ? RES_WARPS : 0);
            T_REQUIRE(whole % RES_WARPS == 0 || shared == 0);
            int next[MA_RESIDENT / 16];   /* per strip: the next row its ranges must start at */
            int parts_seen[MA_RESIDENT / 16];
            for (int s = 0; s < S; s++) next[s] = 0, parts_seen[s] = 0;
            for (int w = 0; w < RES_WARPS; w++) {
                int last_part = -1;
                for (int i = w; i < items; i += RES_WARPS) {
                    const res_item it = res_item_at(i, T, shared);
                    const int s = it.r / 16;
                    T_REQUIRE(it.r % 16 == 0 && s >= 0 && s < S);
                    T_CHECK_MSG(it.from == next[s], "T %d split %d: strip %d's range from %d, "
                                "expected %d", T, split, s, it.from, next[s]);
                    T_CHECK(it.from % 16 == 0 && it.from < it.to && it.to <= T);
                    T_CHECK(it.to == T || it.to % 16 == 0);
                    next[s] = it.to;
                    if (i < whole) {
                        T_CHECK(it.parts == 1 && it.part == 0 && it.from == 0 && it.to == T);
                        T_CHECK_MSG(last_part < 0, "T %d: warp %d's whole strip after its part", T, w);
                    } else {
                        T_CHECK(it.parts == RES_WARPS / shared && it.part == parts_seen[s]);
                        T_CHECK(s >= whole && (s - whole) == w / it.parts);
                        parts_seen[s]++;
                        last_part = it.part;
                    }
                }
                T_CHECK_MSG(!shared || last_part >= 0, "T %d: warp %d has no part", T, w);
            }
            for (int s = 0; s < S; s++) {
                T_CHECK_MSG(next[s] == T, "T %d split %d: strip %d covered up to %d", T, split, s,
                            next[s]);
                if (s >= whole) T_EQ_INT(parts_seen[s], RES_WARPS / shared);
            }
            const long tr_bytes = 16L * S * MA_HD * 2; /* one resident operand */
            if (shared) {
                T_CHECK(shared * RES_RED_DQ * 4L <= tr_bytes);     /* dQ: over K */
                T_CHECK(shared * RES_RED_FWD * 4L <= tr_bytes);    /* forward: over K */
                T_CHECK(shared * RES_RED_DKDV * 4L <= 2 * tr_bytes); /* dK dV: over Q and dO */
            }
            checked++;
        }
    T_EQ_INT(checked, 2 * MA_RESIDENT);
}

int main(void) {
    T_RUN(test_partition_rule);
    T_RUN(test_partition_covers);
    return t_done();
}
