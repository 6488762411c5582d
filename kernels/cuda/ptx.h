/* ptx.h: the warp-level PTX instructions of the tensor-core attention kernels (mma_attention.cu),
 * one inline function each, so that the kernels name no inline assembly themselves.
 *
 * Built with UMDQ_CUEMU (tests/cuemu: the kernels compiled as host C++ and run on the CPU, a
 * fiber per thread), each is the emulator's version of the same instruction, with the same
 * operands: the fragment layouts of the PTX ISA, cp.async's bytes landing at the issuing
 * thread's wait, and so on (tests/cuemu/cuemu.cpp). */
#ifndef UMDQ_KERNELS_CUDA_PTX_H
#define UMDQ_KERNELS_CUDA_PTX_H
#include <stdint.h>

#ifdef UMDQ_CUEMU
#include "cuemu.h"
__device__ static inline void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    cuemu::mma16816(c, a, b0, b1);
}
__device__ static inline void ldsm_x4_trans(uint32_t b[4], const void *p) {
    cuemu::ldsm_x4_trans(b, p);
}
__device__ static inline uint32_t movtrans(uint32_t v) { return cuemu::movtrans(v); }
__device__ static inline void cp_async16(void *dst, const void *src, bool full) {
    cuemu::cp_async(dst, src, full ? 16 : 0, 16);
}
__device__ static inline void cp_async4(void *dst, const void *src, bool full) {
    cuemu::cp_async(dst, src, full ? 4 : 0, 4);
}
__device__ static inline void cp_commit() {}
__device__ static inline void cp_wait_all() { cuemu::cp_wait_all(); }
#else
/* D = A B + C, m16n8k16, A row-major and B column-major bf16, C and D fp32: the fragments of
 * the PTX ISA (mma_attention.cu's header lists them). */
__device__ static inline void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8 x 8 b16 matrices from shared memory, transposed: lane 8 i + j gives the address p of
 * row j of matrix i; lane 4 g + t receives elements (2t, g), (2t + 1, g) of matrix i in b[i]. */
__device__ static inline void ldsm_x4_trans(uint32_t b[4], const void *p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(a));
}

/* The transpose of an 8 x 8 matrix of bf16 pairs held as an accumulator's (lane 4 g + t: row g,
 * columns 2t, 2t + 1): the lane then holds row g, columns 2t, 2t + 1 of the transpose. */
__device__ static inline uint32_t movtrans(uint32_t v) {
    uint32_t d;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(d) : "r"(v));
    return d;
}

/* 16 (4) bytes from global memory into shared memory, asynchronously; full false copies none
 * and zero-fills the destination. Landed for the thread after its cp_wait_all. */
__device__ static inline void cp_async16(void *dst, const void *src, bool full) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(full ? 16 : 0));
}
__device__ static inline void cp_async4(void *dst, const void *src, bool full) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(src), "r"(full ? 4 : 0));
}
__device__ static inline void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ static inline void cp_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }
#endif
#endif
