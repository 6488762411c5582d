/* philox.h: the counter-based random numbers of the trainer (Philox4x32-10, Salmon et al. 2011).
 *
 * One call maps (counter, key) to four independent 32-bit words, so any element of any random
 * tensor can be computed alone, in any order, on the CPU or the GPU, with the same bits. The
 * trainer never keeps generator state: a draw is named by (seed, stream, step, index).
 *
 *   key     = the run's 64-bit seed (k0 = low 32 bits, k1 = high 32 bits)
 *   counter = {index low 32, index high 32, step, stream}
 *
 * Streams (the stream word) keep different uses apart; see philox_stream. The file compiles as C
 * and as CUDA (PHILOX_FN adds __host__ __device__ under nvcc). */
#ifndef UMDQ_PHILOX_H
#define UMDQ_PHILOX_H
#include <stdint.h>

#ifdef __CUDACC__
#define PHILOX_FN static inline __host__ __device__
#else
#define PHILOX_FN static inline
#endif

typedef struct { uint32_t v[4]; } philox4;

enum philox_stream {
    PHILOX_INIT = 1,      /* parameter initialisation: step = parameter tensor number */
    PHILOX_SHUFFLE = 2,   /* data order: step = epoch */
    PHILOX_AUGMENT = 3,   /* crop and flip: step = epoch, index = image position in the epoch */
    PHILOX_TIMESTEP = 4,  /* noisy rows' timestep idx: index = row */
    PHILOX_NOISE = 5,     /* eps ~ N(0, I): index = element of the (B, C, H, W) batch / 4 */
    PHILOX_MASK = 6,      /* per-row token keep order: index = row * L + token */
    PHILOX_LABEL_DROP = 7,/* label dropout to the null class: index = row */
    PHILOX_EVAL = 8,      /* evaluation: sampling noise, probe subsets */
    PHILOX_DATA = 9,      /* the synthetic data set: step = split, index = image */
    PHILOX_TEST = 15      /* tests */
};

PHILOX_FN uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

/* Ten rounds of Philox4x32 on counter c with key (k0, k1). */
PHILOX_FN philox4 philox4x32_10(philox4 c, uint32_t k0, uint32_t k1) {
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = philox_mulhilo(0xD2511F53u, c.v[0], &hi0);
        uint32_t lo1 = philox_mulhilo(0xCD9E8D57u, c.v[2], &hi1);
        philox4 n;
        n.v[0] = hi1 ^ c.v[1] ^ k0;
        n.v[1] = lo1;
        n.v[2] = hi0 ^ c.v[3] ^ k1;
        n.v[3] = lo0;
        c = n;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c;
}

/* The four words named by (seed, stream, step, index). */
PHILOX_FN philox4 philox_draw(uint64_t seed, uint32_t stream, uint32_t step, uint64_t index) {
    philox4 c;
    c.v[0] = (uint32_t)index;
    c.v[1] = (uint32_t)(index >> 32);
    c.v[2] = step;
    c.v[3] = stream;
    return philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
}

/* A 32-bit word to a float in [0, 1): the top 24 bits, exact in float. */
PHILOX_FN float philox_unit(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }
/* A 32-bit word to a float in (0, 1]: safe for logf. */
PHILOX_FN float philox_unit_open0(uint32_t x) { return ((float)(x >> 8) + 1.0f) * (1.0f / 16777216.0f); }

#endif
