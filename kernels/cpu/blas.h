/* blas.h: the two OpenBLAS entry points the CPU backend calls, declared here with the CBLAS ABI
 * constants instead of including <cblas.h>: OpenBLAS's header pulls in <sched.h>, which a
 * project header of the same name (daemon/sched.h, found first through -Idaemon) shadows. */
#ifndef UMDQ_KERNELS_CPU_BLAS_H
#define UMDQ_KERNELS_CPU_BLAS_H

enum { CPU_BLAS_ROW_MAJOR = 101, CPU_BLAS_NO_TRANS = 111, CPU_BLAS_TRANS = 112 };

void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
void openblas_set_num_threads(int num_threads);

#endif
