/* shard private: the block forward's kernels (forward.c), shared with the
 * other forwards of this folder (the ragged task forward in loglik.c), so
 * every forward computes a row the same way. Loops split rows or elements
 * over qz_threads() OpenMP threads, never changing a result. Not collective. */
#ifndef QZ_SHARD_FWD_KERNELS_H
#define QZ_SHARD_FWD_KERNELS_H

#include <stdint.h>

#include "mpiquant/model.h" /* qz_head_shard */

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

/* The vocab-sharded output head (perplexity eval and task eval), for n
 * final-normed rows x [n, H] and this rank's rows [v0, v1) of hs (whole
 * QZ_VOCAB_CHUNK chunks). shard_logits: lg [n, v1 - v0], one sgemm per
 * chunk (a logit does not depend on how the vocabulary is split), and each
 * row's max over them in mx (-inf with no rows). shard_sums, once mx holds
 * the max over the whole vocabulary: part [n, nch + 1] (nch = chunks of the
 * vocabulary) is zeroed, then gets each local chunk's sum of exp(l - mx)
 * (double, column order) at column c / QZ_VOCAB_CHUNK and the target
 * tgt[t]'s logit at column nch when it is local; am (unless NULL) the
 * lowest local index reaching mx, else the vocabulary size. */
void qz_fwdk_shard_logits(const qz_head_shard *hs, const float *x, int64_t n, float *lg,
                          float *mx);
void qz_fwdk_shard_sums(const qz_head_shard *hs, const float *lg, int64_t n, const float *mx,
                        const int32_t *tgt, double *part, int32_t *am);
/* A row's negative log-softmax of its target from the reduced sums red
 * [nch + 1] (chunk sums added in chunk order) and its max. */
double qz_fwdk_shard_nll(const double *red, int64_t nch, float mx);

#endif
