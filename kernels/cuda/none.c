/* none.c: the CUDA entry points of a build without nvcc (umd_cuda.h): no backend, no devices. */
#include <stdio.h>
#include "umd_cuda.h"

#if !UMDQ_HAVE_CUDA
const umd_ops *umd_ops_cuda(int math) {
    (void)math;
    return NULL;
}

int umd_cuda_devices(char *err, size_t errlen) {
    snprintf(err, errlen, "this build has no CUDA backend (nvcc was not found when it was built)");
    return 0;
}

int umd_cuda_memory(umd_ctx *c, size_t *peak_alloc, size_t *device_used, size_t *device_total) {
    (void)c;
    *peak_alloc = *device_used = *device_total = 0;
    return -1;
}

void umd_cuda_describe(umd_ctx *c, char *buf, size_t n) {
    (void)c;
    snprintf(buf, n, "no CUDA");
}

double umd_cuda_gemm_tflops(umd_ctx *c, int math, int M, int N, int K, int reps) {
    (void)c, (void)math, (void)M, (void)N, (void)K, (void)reps;
    return -1.0;
}

int umd_cuda_set_attention(umd_ctx *c, int fused) {
    (void)c;
    (void)fused;
    return -1;
}

int umd_cuda_profile(umd_ctx *c, int on) {
    (void)c, (void)on;
    return -1;
}

void umd_cuda_profile_report(umd_ctx *c, int per, char *buf, size_t n) {
    (void)c, (void)per;
    snprintf(buf, n, "no CUDA");
}
#else
typedef int umd_cuda_none_unused; /* the .cu files define the functions */
#endif
