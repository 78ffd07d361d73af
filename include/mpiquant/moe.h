/* Mixture-of-experts FFN of a decoder block (Mixtral, Qwen2-MoE, Qwen3-MoE):
 * routing and the routed + shared expert computation, on one rank's rows.
 *
 * Routing of a token x [H] (transformers' MixtralSparseMoeBlock,
 * Qwen2MoeSparseMoeBlock, Qwen3MoeSparseMoeBlock):
 *   logits_e = x . router[e]            (e < E; dot product in double)
 *   p = softmax(logits) over all E      (double)
 *   the k largest p (ties: the lower expert index first, as torch.topk
 *   returns them in practice), weights p_j, divided by their sum when
 *   norm_topk (always for Mixtral, norm_topk_prob for Qwen)
 *   y = sum_j weight_j * down_e(silu(gate_e(x)) * up_e(x))
 *   Qwen2-MoE adds sigmoid(x . shared_gate) * shared(x).
 * Experts are processed in index order over the tokens routed to them (in
 * row order) within each chunk of `rows` rows: a token's result does not
 * depend on the other chunks (bit-identical across rank counts when a chunk
 * is one window). */
#ifndef MPIQUANT_MOE_H
#define MPIQUANT_MOE_H

#include <stddef.h>
#include <stdint.h>

#include "mpiquant/config.h"
#include "mpiquant/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Top-k experts idx [T, k] (descending weight) and their weights wt [T, k]
 * of rows x [T, H] with block w's router. Not collective. */
void qz_moe_route(const qz_block_weights *w, const float *x, int64_t T, int32_t *idx,
                  float *wt);

typedef struct qz_moe_ws qz_moe_ws;

/* Scratch for chunks of at most `rows` rows of cfg's MoE blocks: rows x
 * (2H + 2 max(I_e, I_s) + 2k + 1) floats. Not collective. */
int qz_moe_ws_create(const qz_model_config *cfg, int64_t rows, qz_moe_ws **out);
void qz_moe_ws_destroy(qz_moe_ws **ws); /* accepts NULL, NULLs the pointer */
size_t qz_moe_ws_bytes(const qz_model_config *cfg, int64_t rows);

/* out [T, H] = MoE FFN of x [T, H] (no residual), chunks of `rows` rows
 * (rows <= the workspace's) routed and computed independently.
 * Not collective. */
int qz_moe_ffn(qz_moe_ws *ws, const qz_block_weights *w, const float *x, int64_t T,
               int64_t rows, float *out);

/* One expert on rows x [n, H] cut in chunks at ends[0..nch) (rows
 * [ends[c-1], ends[c]); each chunk its own sgemms, the way qz_moe_ffn
 * computes a window's rows routed to one expert): act [n, I] =
 * silu(x Wg') * (x Wu') (g [n, I] scratch), and y [n, H] = act Wd' when y
 * and wd are not NULL. Not collective. */
void qz_moe_expert_rows(const float *wg, const float *wu, const float *wd, int64_t I,
                        int64_t H, const float *x, int64_t n, const int64_t *ends,
                        int64_t nch, float *g, float *act, float *y);

#ifdef __cplusplus
}
#endif
#endif
