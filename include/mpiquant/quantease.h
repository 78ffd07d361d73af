/* QuantEase (Behdin et al. 2023): cyclic coordinate descent on the layer
 * objective
 *
 *   f(Q) = 1/2 sum_r (W' - Q)_r Hd (W' - Q)_r^T
 *
 * (W' = W with dead input columns zeroed, Hd = H with the dead fix and the
 * relative damping of chol.h: the GPTQ proxy loss of golden README rule 17,
 * so GPTQ and QuantEase losses compare directly).  One coordinate update is
 * the exact minimiser over the (row, group) quantization grid given all other
 * entries:  u = Q_rj + R_rj / Hd_jj, Q_rj <- grid(u), R = (W' - Q) Hd.
 * No factorization; rows are independent given Hd and are split over ranks
 * like GPTQ; Hd is streamed in panels of `blocksize` rows every sweep.
 *
 * Grid: fixed for all sweeps, the grid of the initial solution: GPTQ's
 * per-(row, group) scale/zero (default; its solution is then feasible and
 * every sweep can only lower its loss), or the RTN min/max grid of the
 * original W (--qe-init rtn), which is the grid the paper computes.
 * See docs/quantease.md. */
#ifndef MPIQUANT_QUANTEASE_H
#define MPIQUANT_QUANTEASE_H

#include "mpiquant/method.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { QZ_QE_INIT_GPTQ = 0, QZ_QE_INIT_RTN = 1 };

/* Rows per sgemm, aligned to the global row index (as GPTQ: results do not
 * depend on how rows are split over ranks). */
#define QZ_QE_ROW_TILE 128
/* Hd panel width of the sweep (independent of the GPTQ start's blocksize):
 * the sgemm per panel has this inner dimension, so wider panels run closer
 * to sgemm peak (bench_quantease 4096^2: 0.42 of peak at 128, 0.53 at 512);
 * the in-block work grows as m n W / 2 and the panel takes W n 12 bytes. */
#define QZ_QE_PANEL 512

/* Initialise (GPTQ or RTN, opts->qe_init), then opts->iters sweeps.
 * res->objective (optional) gets iters + 1 values, summed over all ranks:
 * element 0 is the exact objective of the initial solution, element t the
 * objective after sweep t tracked from exact per-update changes (each update
 * is kept only if its change is negative, so the sequence never increases);
 * res->losses / loss_local are the exact per-row objective of the result
 * (one more pass).  Collective on the Hessian's grid communicator; opts must
 * match on every rank. */
int qz_quantease_quantize(const qz_method_opts *opts, const qz_layer *layer,
                          qz_layer_result *res);

/* Its buffers (and its GPTQ start's), reused from linear to linear and
 * grown to the largest one: once per shape. qz_quantease_quantize makes a
 * temporary one. */
typedef struct qz_qe_ws qz_qe_ws;
int qz_qe_ws_create(qz_qe_ws **out);   /* Not collective. */
void qz_qe_ws_destroy(qz_qe_ws **ws);  /* accepts NULL, NULLs it */
/* qz_quantease_quantize with the buffers of ws. Collective likewise. */
int qz_quantease_quantize_ws(qz_qe_ws *ws, const qz_method_opts *opts, const qz_layer *layer,
                             qz_layer_result *res);

#ifdef __cplusplus
}
#endif
#endif
