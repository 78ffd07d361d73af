/* GPTQ (Frantar et al.) with the reference semantics of the golden README
 * (rules 2-10): lazy-batch column sweep over the upper Cholesky factor of
 * H^-1, error feedback, dynamic or static groups, act-order, per-row losses.
 * The trailing update after each block is one sgemm per 256-row tile.
 * Results depend only on the global row index, not on the number of ranks
 * (given the same factor, BLAS and BLAS thread count). */
#ifndef MPIQUANT_GPTQ_H
#define MPIQUANT_GPTQ_H

#include "mpiquant/method.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows per trailing-update sgemm, aligned to the global row index (makes
 * results independent of the row split; see gptq.c). */
#define QZ_GPTQ_ROW_TILE 256

/* Prepares layer->H (chol.h: dead columns, act-order, damping ladder,
 * factor; reused when already prepared with the same options), then sweeps
 * this rank's rows, streaming the factor panel by panel.
 * Collective on the Hessian's grid communicator; opts must match. */
int qz_gptq_quantize(const qz_method_opts *opts, const qz_layer *layer,
                     qz_layer_result *res);

/* Flops of the column sweep of an [out, in] layer with lazy-batch width
 * B: the trailing sgemms 2 out bk (in - i2) and the in-block updates
 * out bk^2 over the blocks [i1, i2) (bench_gptq's and plan --calibrate's
 * rate). Not collective. */
double qz_gptq_sweep_flops(int64_t out, int64_t in, int64_t B);

/* The sweep's buffers, reused from linear to linear (grown to the largest
 * one: once per shape). qz_gptq_quantize makes a temporary one. */
typedef struct qz_gptq_ws qz_gptq_ws;
int qz_gptq_ws_create(qz_gptq_ws **out);      /* Not collective. */
void qz_gptq_ws_destroy(qz_gptq_ws **ws);     /* accepts NULL, NULLs it */
/* qz_gptq_quantize with the buffers of ws. Collective as qz_gptq_quantize. */
int qz_gptq_quantize_ws(qz_gptq_ws *ws, const qz_method_opts *opts, const qz_layer *layer,
                        qz_layer_result *res);

/* plan model of one GPTQ linear (m rows x n inputs on one rank); QuantEase
 * starts from it. Not collective. */
void qz_gptq_plan(const qz_method_opts *opts, const qz_plan_machine *mc, int64_t m,
                  int64_t n, qz_plan_linear *out);

#ifdef __cplusplus
}
#endif
#endif
