/* shard private: the block forward's kernels (forward.c), shared with the
 * other forwards of this folder (the ragged task forward in loglik.c), so
 * every forward computes a row the same way. Not collective. */
#ifndef QZ_SHARD_FWD_KERNELS_H
#define QZ_SHARD_FWD_KERNELS_H

#include <stdint.h>

/* y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w (sum of squares in double). */
void qz_fwdk_rmsnorm(float *y, const float *x, const float *w, int64_t nrows,
                     int64_t n, float eps);
/* y [T, out] = x [T, in] . W' (+ bias), one sgemm per `rows` rows. */
void qz_fwdk_linear(float *y, const float *x, const float *W, const float *bias,
                    int64_t T, int64_t rows, int64_t out, int64_t in);
/* In place: s[0..nv) <- softmax, s[nv..n) <- 0. */
void qz_fwdk_softmax_row(float *s, int64_t nv, int64_t n);
/* g[i] <- silu(g[i]) * u[i]. */
void qz_fwdk_swiglu(float *g, const float *u, int64_t n);

#endif
