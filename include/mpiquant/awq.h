/* AWQ (Lin et al., activation-aware weight quantization) with the llm-awq
 * conventions of the golden README: the min/max quantizer (0 not forced into
 * the range), the 20-point scale search per linear group on the block's
 * calibration inputs (distributed over the ranks' windows), folding of the
 * scales into the previous op, and the clip search. */
#ifndef MPIQUANT_AWQ_H
#define MPIQUANT_AWQ_H

#include <mpi.h>
#include <stdint.h>

#include "mpiquant/config.h"
#include "mpiquant/forward.h"
#include "mpiquant/method.h"
#include "mpiquant/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* llm-awq pseudo_quantize_tensor per (row, group) of `group` columns (-1 =
 * whole row; the last group may be shorter): mx = max w, mn = min w,
 * scale = max(mx - mn, 1e-5) / maxq, zero = clamp(-rint(mn / scale), 0,
 * maxq), code = clamp(rint(w / scale) + zero, 0, maxq), q = (code - zero) *
 * scale, all f32.  codes/scale/zero/q may each be NULL. Not collective. */
void qz_awq_quantize_rows(int bits, int64_t group, int64_t rows, int64_t in,
                          const float *w /* [rows, in] */,
                          uint8_t *codes /* [rows, in] */,
                          float *scale /* [rows, ngroups] */,
                          float *zero /* [rows, ngroups] */,
                          float *q /* [rows, in] */);

typedef struct {
  int bits;           /* 2..8 */
  int64_t group;      /* -1 = per channel */
  int n_grid;         /* scale ratios r = i / n_grid, i < n_grid (20) */
  int clip;           /* run the clip search (1) or only fold scales (0) */
  int clip_tokens;    /* tokens sampled for the clip search (512) */
  int clip_grid;      /* shrink m = m0 (1 - i / clip_grid) ... (20) */
  double max_shrink;  /* ... for i < max_shrink * clip_grid (0.5) */
} qz_awq_opts;

/* llm-awq defaults with `bits` and `group`. Not collective. */
qz_awq_opts qz_awq_opts_default(int bits, int64_t group);

/* The four scale searches of a Llama block, in llm-awq's order. */
enum { QZ_AWQ_QKV = 0, QZ_AWQ_O, QZ_AWQ_GATEUP, QZ_AWQ_DOWN, QZ_AWQ_NSEARCH };

typedef struct {
  int applied[QZ_AWQ_NSEARCH]; /* QZ_AWQ_O only when v_proj and o_proj have
                                  the same shape (no GQA) */
  double ratio[QZ_AWQ_NSEARCH];     /* chosen ratio (-1 if not applied) */
  double loss[QZ_AWQ_NSEARCH];      /* its output MSE */
  double loss_r0[QZ_AWQ_NSEARCH];   /* MSE at ratio 0 (plain RTN) */
  int64_t clipped[QZ_LIN_COUNT];    /* (row, group)s with m < m0 */
} qz_awq_block_result;

/* AWQ on one block: f holds this rank's windows [win0, win0 + nwin) of
 * `nwin_total` in one batch (qz_fwd_batch_max(f) >= qz_fwd_nwin(f)) at the
 * block's input; w holds the block's fp weights.  Records the inputs of all
 * 7 linears and the fp outputs of the inspected modules, searches the
 * scales (the loss of a candidate is the output MSE over every element of
 * all windows, per-window sums reduced in double and added in window order:
 * the same bits at any rank count), folds them into w (RMSNorm weights,
 * v_proj / up_proj rows, the scaled linears' columns) and, with o->clip,
 * clamps v, o, gate, up, down to the searched ranges (sample tokens
 * [0 :: n_tokens / clip_tokens] of the global token index, gathered to
 * every rank; rows split over the ranks).  On return w holds the folded,
 * clipped fp weights (not quantized) and f holds stage OUT computed with
 * the ORIGINAL weights (commit it for llm-awq's non-sequential calibration).
 * Collective on comm. */
int qz_awq_block(MPI_Comm comm, const qz_model_config *cfg, qz_fwd *f,
                 qz_block_weights *w, const qz_awq_opts *o, int64_t win0,
                 int64_t nwin_total, qz_awq_block_result *res);

/* The search's buffers (a copy of the block, the recorded inputs and
 * outputs, the clip samples), kept from block to block while the shapes
 * stay: qz_awq_block_work allocates them on first use. */
typedef struct qz_awq_work qz_awq_work;
int qz_awq_work_create(qz_awq_work **out);       /* Not collective. */
void qz_awq_work_destroy(qz_awq_work **k);       /* accepts NULL, NULLs it */
/* qz_awq_block with a reusable workspace. Collective on comm. */
int qz_awq_block_work(qz_awq_work *k, MPI_Comm comm, const qz_model_config *cfg,
                      qz_fwd *f, qz_block_weights *w, const qz_awq_opts *o,
                      int64_t win0, int64_t nwin_total, qz_awq_block_result *res);

/* AWQ on one expert of an MoE block (AutoAWQ's Mixtral / Qwen3-MoE /
 * Qwen2-MoE layouts: up -> down scaling per expert, the loss on the
 * expert's own rows): act = silu(x g') * (x u') on e's rows, the grid search
 * of s = ratio_scales(mean |act|, r) with the loss = MSE of act . Q(d s)/s
 * against act . d' over every element of all rows (per-chunk sums reduced
 * in double, added in chunk order), folded (u rows / s, d columns * s),
 * then with o->clip the clip search of gate, up (samples of x) and down
 * (samples of act / s): rows [0 :: tokens / clip_tokens] of the global row
 * order (chunk order).  e->g, e->u, e->d are changed in place. The block's
 * shared scale of the post-attention norm is not searched (docs/moe.md).
 * Collective on e->comm. */
typedef struct {
  double ratio, loss, loss_r0; /* the chosen ratio, its loss, the loss at 0 */
  int64_t clipped[3];          /* gate, up, down: (row, group)s with m < m0 */
} qz_awq_expert_result;
int qz_awq_expert(const qz_awq_opts *o, const qz_expert_ctx *e, qz_awq_expert_result *res);

extern const qz_method_ops qz_method_awq;

#ifdef __cplusplus
}
#endif
#endif
