/* cuemu.h: run CUDA kernels on the CPU, for testing them on a machine without a GPU.
 *
 * A .cu file (its <<< >>> launches rewritten by tests/cuemu/cuemu-src.sh) is compiled as host
 * C++ with this header included first and UMDQ_CUEMU defined. Every CUDA thread of a block is a
 * fiber (ucontext) on the one OS thread; a block runs its fibers until each waits at a barrier
 * (__syncthreads), at a warp collective (__shfl_xor_sync and the PTX instructions of
 * kernels/cuda/ptx.h: mma.sync, ldmatrix, movmatrix) or returns; a collective is carried out when
 * the 32 lanes of its warp all wait at it, a barrier when every thread of the block does. The
 * blocks of a grid run one after another.
 *
 * What it checks as it goes, stopping the program with a message (the kernel's block, thread and
 * what was wrong): a warp collective some of whose lanes are elsewhere (at a barrier, returned,
 * or at another collective), a block that can make no progress, a launch whose block, grid or
 * dynamic shared memory exceeds the limits of an sm_90 device (shared memory past 48 KiB needs
 * cudaFuncSetAttribute, as on a device). What it leaves to the test: shared memory is filled with
 * NaN bytes (0xff) before each block, so a value read before it is written shows; cp.async's bytes
 * land only at the issuing thread's cp_wait_all, so a read before the wait sees the old bytes;
 * threads can be run in increasing or decreasing order between waits (cuemu_set_order), so a
 * result that depends on the order (a missing barrier) differs between two runs.
 *
 * Floating point: each mma.sync sums its 16 exact bf16 products and C in double, rounded once to
 * fp32 (a tensor core's order and rounding differ within fp32 rounding); exp2f and the rest are
 * the C library's. So results match a device's within the kernels' tolerances, not bit for bit,
 * and are deterministic for a given order. */
#ifndef UMDQ_TESTS_CUEMU_H
#define UMDQ_TESTS_CUEMU_H
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

namespace cuemu {
/* the running thread's indices and the launch's shape */
extern uint3 tid, bid;
extern dim3 bdim, gdim;

void syncthreads();
uint32_t shfl_xor(uint32_t v, int lane_mask);
void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
void ldsm_x4_trans(uint32_t b[4], const void *p);
uint32_t movtrans(uint32_t v);
void cp_async(void *dst, const void *src, int bytes, int size);
void cp_wait_all();
unsigned char *smem();

/* Runs body(arg) as the kernel `kernel` on every thread of the grid; a launch the limits refuse
 * runs nothing and is the next cudaGetLastError's error. */
void run_grid(dim3 grid, dim3 block, size_t smem, const void *kernel, void (*body)(void *),
              void *arg);

/* k<<<g, b, s, st>>>(args) becomes launch(g, b, s, st)(k, args) (cuemu-src.sh) */
struct launch {
    dim3 g, b;
    size_t s;
    launch(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = 0) : g(grid), b(block), s(smem) {}
    template <class... P, class... A> void operator()(void (*k)(P...), A &&...a) {
        auto call = [&]() { k(a...); };
        run_grid(g, b, s, (const void *)k,
                 [](void *p) { (*static_cast<decltype(call) *>(p))(); }, &call);
    }
};
} // namespace cuemu

/* 0: threads run in increasing order between waits (the default), 1: decreasing */
extern "C" void cuemu_set_order(int decreasing);
/* launches run so far (a test's check that the kernels it meant to run did) */
extern "C" long cuemu_launches(void);

/* The runtime's templates on a kernel (cuda_runtime.h has them for nvcc only). */
template <class... P>
static inline cudaError_t cudaFuncSetAttribute(void (*k)(P...), cudaFuncAttribute a, int v) {
    return cudaFuncSetAttribute((const void *)k, a, v);
}
template <class... P>
static inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, void (*k)(P...),
                                                                        int threads, size_t smem) {
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, (const void *)k, threads, smem);
}

/* The device side of CUDA, as host C++. */
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#undef __align__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__
#define threadIdx (::cuemu::tid)
#define blockIdx (::cuemu::bid)
#define blockDim (::cuemu::bdim)
#define gridDim (::cuemu::gdim)

static inline void __syncthreads() { cuemu::syncthreads(); }
static inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float __shfl_xor_sync(unsigned, float v, int m, int = 32) {
    return __uint_as_float(cuemu::shfl_xor(__float_as_uint(v), m));
}
static inline int __shfl_xor_sync(unsigned, int v, int m, int = 32) {
    return (int)cuemu::shfl_xor((uint32_t)v, m);
}
static inline unsigned __shfl_xor_sync(unsigned, unsigned v, int m, int = 32) {
    return cuemu::shfl_xor(v, m);
}
#endif
