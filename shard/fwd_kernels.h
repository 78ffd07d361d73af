/* shard private: the block forward's kernels (forward.c), shared with the
 * other forwards of this folder (the ragged task forward in loglik.c), so
 * every forward computes a row the same way. Loops split rows or elements
 * over qz_threads() OpenMP threads, never changing a result. Not collective. */
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
/* Causal attention of one head for hd <= QZ_FWDK_ATTN_SMALL_HD (attn.c):
 * query row r (at q + r*qs, nQ rows) sees the nA keys/values of range A
 * and rows 0..r of range B (B has nQ rows; key/value rows kvs apart); its
 * output overwrites its hd columns of q. ws: qz_fwdk_attn_small_ws(hd,
 * nA + nQ) floats. Each row's result depends only on its own inputs. */
#define QZ_FWDK_ATTN_SMALL_HD 32
int64_t qz_fwdk_attn_small_ws(int64_t hd, int64_t nkeys);
/* The same rounded up to 16 floats (64 B): per-thread workspaces this far
 * apart do not share cache lines. */
int64_t qz_fwdk_attn_small_ld(int64_t hd, int64_t nkeys);
void qz_fwdk_attn_small(float *q, int64_t qs, int64_t nQ, const float *kA,
                        const float *vA, int64_t nA, const float *kB, const float *vB,
                        int64_t kvs, int64_t hd, float scale, float *ws);
/* y[i] = a[i] + b[i] (y may be a or b). */
void qz_fwdk_add(float *y, const float *a, const float *b, int64_t n);
/* g[i] <- silu(g[i]) * u[i]. */
void qz_fwdk_swiglu(float *g, const float *u, int64_t n);

#endif
