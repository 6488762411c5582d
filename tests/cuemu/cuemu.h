/* cuemu.h: run CUDA kernels on the CPU, for testing them on a machine without a GPU.
 *
 * A .cu file (its <<< >>> launches rewritten by tests/cuemu/cuemu-src.sh) is compiled as host
 * C++ with this header included first and UMDQ_CUEMU defined. Every CUDA thread of a block is a
 * fiber on the one OS thread (switched by a few instructions on x86-64, by ucontext elsewhere).
 * A block runs a warp at a time, each as far as it goes: its lanes each until they wait at a
 * warp collective (__shfl_xor_sync, __syncwarp, WMMA, and the PTX instructions of
 * kernels/cuda/ptx.h: mma.sync, ldmatrix, movmatrix), carried out when its 32 lanes all wait at
 * it, until every lane waits at a barrier (__syncthreads) or has returned; then the next warp;
 * the barrier is passed when every thread of the block waits at it or has returned. So a warp
 * runs ahead of the others up to the next barrier. The blocks of a grid run one after another.
 *
 * What it checks as it goes, stopping the program with a message (the kernel's block, thread and
 * what was wrong): a warp collective some of whose lanes are elsewhere (at a barrier, returned,
 * or at another collective), an ldmatrix or cp.async address outside the block's shared memory,
 * a launch whose block, grid or dynamic shared memory exceeds an sm_90 device's limits (227 KiB;
 * a rewritten launch does not know its kernel's address, so the 48 KiB without
 * cudaFuncSetAttribute is not checked), and a fault (cuemu_runtime.cpp's allocations end at pages
 * that fault). What it leaves to the test: shared memory is filled with NaN bytes (0xff) before
 * each block, so a value read before it is written shows; cp.async's bytes land only at the
 * issuing thread's cp_wait_all, so a read before the wait sees the old bytes; warps and lanes
 * can be run in increasing or decreasing order (cuemu_set_order), so a result that depends on
 * the order (a missing barrier) differs between two runs.
 *
 * Floating point: each mma.sync sums its 16 exact bf16 products in fp32, in order, then adds C (a
 * tensor core's order and rounding differ within fp32 rounding); wmma's tf32 in double; exp2f and
 * the rest are the C library's. So results match a device's within the kernels' tolerances, not
 * bit for bit, and are deterministic for a given order. */
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
#include <functional>
#include <tuple>

namespace cuemu {
/* the running thread's indices and the launch's shape */
extern uint3 tid, bid;
extern dim3 bdim, gdim;
extern cudaError_t last_error; /* the next cudaGetLastError's */

void syncthreads();
uint32_t shfl_xor(uint32_t v, int lane_mask);
void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
void ldsm_x4_trans(uint32_t b[4], const void *p);
uint32_t movtrans(uint32_t v);
void cp_async(void *dst, const void *src, int bytes, int size);
void cp_wait_all();
unsigned char *smem();

/* Runs body on every thread of the grid; a launch the device's limits refuse runs nothing and is
 * the next cudaGetLastError's error. */
void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body);
/* Runs work now, or where `stream` is being captured (cudaStreamBeginCapture), keeps it for the
 * graph (cuemu_runtime.cpp) */
void enqueue(cudaStream_t stream, std::function<void()> work);

/* k<<<g, b, s, st>>>(args) becomes launch(g, b, s, st)([](auto... x) { k(x...); }, args)
 * (cuemu-src.sh): the arguments kept by value, as a launch keeps them, and the kernel's template
 * arguments deduced from them as nvcc deduces them (a null pointer argument is nullptr) */
struct launch {
    dim3 g, b;
    size_t s;
    cudaStream_t st;
    launch(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = 0)
        : g(grid), b(block), s(smem), st(stream) {}
    template <class F, class... A> void operator()(F k, A &&...a) {
        auto args = std::make_tuple(typename std::decay<A>::type(a)...);
        const dim3 grid = g, block = b;
        const size_t smem = s;
        enqueue(st, [=]() {
            std::function<void()> body = [&]() { std::apply(k, args); };
            run_grid(grid, block, smem, body);
        });
    }
};
void syncwarp();
void wmma_mma(float *d, const float *a, const float *b, const float *c);
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
static inline void __syncwarp(unsigned = 0xffffffffu) { cuemu::syncwarp(); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
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

/* nvcuda::wmma for the fp32 operands taken as tf32 (flash_attention.cu): 16 x 16 x 8, the
 * elements of a fragment spread over the lanes in row-major order (lane l holds elements
 * l n .. l n + n - 1 of the n-per-lane), as the API leaves the spread to the implementation;
 * loads and stores are each lane's own, mma_sync a warp collective. */
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K> struct dims;
template <int M, int N, int K> struct dims<matrix_a, M, N, K> { enum { R = M, C = K }; };
template <int M, int N, int K> struct dims<matrix_b, M, N, K> { enum { R = K, C = N }; };
template <int M, int N, int K> struct dims<accumulator, M, N, K> { enum { R = M, C = N }; };
template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    enum { rows = dims<Use, M, N, K>::R, cols = dims<Use, M, N, K>::C };
    static constexpr int num_elements = rows * cols / 32;
    float x[num_elements];
};
static inline float __float_to_tf32(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u; /* to nearest, away */
    return __uint_as_float(u);
}
template <class Use, int M, int N, int K, class T, class Lay>
static inline void fill_fragment(fragment<Use, M, N, K, T, Lay> &f, float v) {
    for (int i = 0; i < f.num_elements; i++) f.x[i] = v;
}
template <class F> static inline void frag_rc(int i, int &r, int &c) {
    const int e = (int)(threadIdx.x & 31) * F::num_elements + i;
    r = e / F::cols, c = e % F::cols;
}
template <class Use, int M, int N, int K, class T, class Lay>
static inline void load_matrix_sync(fragment<Use, M, N, K, T, Lay> &f, const float *p, unsigned ld) {
    typedef fragment<Use, M, N, K, T, Lay> F;
    for (int i = 0; i < F::num_elements; i++) {
        int r, c;
        frag_rc<F>(i, r, c);
        f.x[i] = std::is_same<Lay, col_major>::value ? p[(size_t)c * ld + r] : p[(size_t)r * ld + c];
    }
    ::cuemu::syncwarp();
}
template <int M, int N, int K>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p,
                                    unsigned ld, layout_t l) {
    typedef fragment<accumulator, M, N, K, float> F;
    for (int i = 0; i < F::num_elements; i++) {
        int r, c;
        frag_rc<F>(i, r, c);
        f.x[i] = l == mem_col_major ? p[(size_t)c * ld + r] : p[(size_t)r * ld + c];
    }
    ::cuemu::syncwarp();
}
template <int M, int N, int K>
static inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f,
                                     unsigned ld, layout_t l) {
    typedef fragment<accumulator, M, N, K, float> F;
    for (int i = 0; i < F::num_elements; i++) {
        int r, c;
        frag_rc<F>(i, r, c);
        (l == mem_col_major ? p[(size_t)c * ld + r] : p[(size_t)r * ld + c]) = f.x[i];
    }
    ::cuemu::syncwarp();
}
template <class LA, class LB>
static inline void mma_sync(fragment<accumulator, 16, 16, 8, float> &d,
                            const fragment<matrix_a, 16, 16, 8, precision::tf32, LA> &a,
                            const fragment<matrix_b, 16, 16, 8, precision::tf32, LB> &b,
                            const fragment<accumulator, 16, 16, 8, float> &c) {
    ::cuemu::wmma_mma(d.x, a.x, b.x, c.x);
}
} // namespace wmma
} // namespace nvcuda
#endif
