/* linalg.h: the small dense float64 linear algebra of the evaluation: a Cholesky solve (the
 * ridge probe's normal equations), a symmetric eigen-decomposition (cyclic Jacobi), Gaussian
 * fits and the Frechet distance of FID. Host memory, row-major, n up to a few thousand. */
#ifndef UMDQ_TRAINER_EVAL_LINALG_H
#define UMDQ_TRAINER_EVAL_LINALG_H
#include <stddef.h>
#include <stdint.h>

/* Solve A X = B in place: A (n, n) symmetric positive definite is overwritten by its Cholesky
 * factor, B (n, m) by X. Returns 0, or UMDQ_EINVAL when A is not positive definite. */
int umd_cholesky_solve(double *A, int n, double *B, int m);

/* Eigen-decomposition of the symmetric A (n, n) by cyclic Jacobi rotations: evals (n) ascending,
 * evecs (n, n) with eigenvector k in column k. A is destroyed. Returns 0, or UMDQ_EINVAL when
 * the sweeps did not converge (a non-finite input). */
int umd_sym_eig(double *A, int n, double *evals, double *evecs);

/* Mean mu (d) and unbiased covariance S (d, d) of the rows of X (n, d), n >= 2, in float64. */
void umd_gauss_fit(const float *X, int64_t n, int d, double *mu, double *S);

/* Frechet distance between N(mu1, S1) and N(mu2, S2) in d dimensions:
 *   |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2),
 * with tr sqrt(S1 S2) = sum of sqrt(eigenvalues of R S2 R), R = S1^(1/2) (both by symmetric
 * eigen-decomposition, negative round-off eigenvalues clamped to 0): the same number as
 * scipy.linalg.sqrtm(S1 @ S2).trace() for covariances, without a complex Schur form.
 * Returns 0 or a negative UMDQ_E* code with a message. */
int umd_frechet_distance(const double *mu1, const double *S1, const double *mu2, const double *S2,
                         int d, double *out, char *err, size_t errlen);

#endif
