/* Preparation and factorization of a ready qz_hessian for GPTQ-style column
 * sweeps, following the reference conventions (golden README rules 4-8):
 *
 *   dead columns  diag(H)[j] == 0  ->  H[j, j] = 1 (caller zeroes W[:, j])
 *   act-order     perm = columns by descending diag (after the dead fix)
 *   damping       lambda = percdamp * mean(diag), H += lambda I
 *   factor        U upper with H_p^-1 = U^T U (H_p = H permuted by perm),
 *                 the reference's potrf -> potri -> potrf('U') factor,
 *                 computed as U = J chol(J H_p J)^-T J (J = order reversal:
 *                 potrf + trtri, half the flops; equal in exact arithmetic)
 *
 * Not positive definite (info > 0 in any of the three steps) raises the
 * damping along a ladder (x10, starting from 1e-6 when percdamp is 0, up to
 * percdamp_max), logging each step with the layer name; info < 0 is an
 * internal error naming the routine and argument.
 *
 * Storage: the factor (as chol(J H_p J)^-1) overwrites the upper triangle of
 * the Hessian's matrix;
 * the lower triangle keeps H (original order), so a retry or a second prepare
 * with other options needs no copy.  After prepare, qz_hessian_get_rows
 * returns garbage above the diagonal. */
#ifndef MPIQUANT_CHOL_H
#define MPIQUANT_CHOL_H

#include <stdint.h>

#include "mpiquant/hessian.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  double percdamp;     /* relative damping, reference default 0.01 */
  double percdamp_max; /* ladder cap (<= 0: 1.0) */
  int act_order;       /* permute by descending diag(H) */
  const char *name;    /* layer name for log lines, may be NULL */
  /* appended: columns processed last, in this order, after all others
   * (OWQ's kept columns; distinct, in [0, d)); the other columns keep their
   * order (act-order or natural). nlast > 0 always factors again. */
  const int32_t *last;
  int64_t nlast;
} qz_prepare_opts;

typedef struct {
  int64_t d;
  const int32_t *perm;   /* [d] position i processes original column perm[i] */
  const uint8_t *dead;   /* [d] original column j is dead (diag == 0) */
  int64_t ndead;
  double percdamp_used;  /* after the ladder */
  double lambda;         /* absolute damping added to the diagonal */
  double mean_diag;      /* mean of diag after the dead fix */
  int ladder_steps;      /* 0 when the first attempt succeeded */
} qz_prepare_info;

/* Factor the ready H as above.  A second call with the same percdamp and
 * act_order returns at once (q, k, v share one Hessian).
 * Collective on the grid's communicator; options must match. */
int qz_hessian_prepare(qz_hessian *H, const qz_prepare_opts *opts);
/* Valid after a successful prepare (NULL otherwise). Not collective. */
const qz_prepare_info *qz_hessian_prepared(const qz_hessian *H);

/* Stream rows [r0, r0 + nrows) of U (processing order) to every rank as an
 * f32 panel [nrows, d] row-major; entries left of the diagonal are 0.
 * The entries travel as f32 (rounded at their owner: the same values as
 * rounding after an f64 transfer, half the bytes).
 * Memory: the panel plus an f32 exchange buffer of the same size.
 * Collective on the grid's communicator; r0, nrows must match. */
int qz_hessian_factor_rows(qz_hessian *H, int64_t r0, int64_t nrows,
                           float *panel /* [nrows, d] */);
/* What qz_hessian_factor_rows moved to this rank over the handle's life
 * (reset keeps it): bytes of the gathered f32 entries (the upper triangle
 * of the rows, ~2 d^2 per full pass), panels, and the seconds spent in it
 * (gather + unpacking). NULL H: 0. Not collective. */
void qz_hessian_factor_stream(const qz_hessian *H, int64_t *bytes, int64_t *panels,
                              double *seconds);

#ifdef __cplusplus
}
#endif
#endif
