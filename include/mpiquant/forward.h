/* Llama block forward on one rank's local windows (f32, BLAS-backed), callable
 * stage by stage for true-sequential quantization, plus the output head and
 * the per-window NLL.
 *
 * A rank owns `nwin` windows of `seqlen` tokens; their residual stream lives
 * in one buffer x [nwin*seqlen, H] (window w = rows [w*seqlen, (w+1)*seqlen),
 * positions 0..seqlen-1, causal, windows independent).  Every projection is
 * one sgemm per window; attention runs per (window, head) in query blocks
 * that only touch the causal part of the key range.  Keys, values and the
 * up projection are formed and consumed one window at a time.
 *
 * Stages of a block (each computes the input of the next linear group):
 *   QZ_STAGE_QKV_IN    xn  = RMSNorm(x) * attn_norm              [T, H]
 *   QZ_STAGE_O_IN      att = attention(rope(xn Wq'), rope(xn Wk'), xn Wv')
 *                                                                [T, nq*hd]
 *   QZ_STAGE_GATEUP_IN h1  = x + att Wo' ;  h1n = RMSNorm(h1) * ffn_norm
 *                                                                [T, H]
 *   QZ_STAGE_DOWN_IN   act = silu(h1n Wg') * (h1n Wu')           [T, I]
 *   QZ_STAGE_OUT       out = h1 + act Wd'                        [T, H]
 * (T = local tokens, W' = transpose, biases added when present.)
 *
 * Caching: the workspace remembers the last stage computed for the current
 * block input.  qz_fwd_run(.., upto) computes only the missing stages, each
 * with the weights as they are *at that call*; so the true-sequential loop is
 *   qz_fwd_block_begin(f);
 *   run(QKV_IN)    -> quantize q,k,v
 *   run(O_IN)      -> quantize o        (uses the quantized q,k,v)
 *   run(GATEUP_IN) -> quantize gate,up  (uses the quantized o)
 *   run(DOWN_IN)   -> quantize down
 *   run(OUT); qz_fwd_block_commit(f)    (x <- out: next block's input)
 * and costs exactly one block forward in total.  If weights of a stage that
 * was already computed change, call qz_fwd_invalidate(f, stage) and the
 * next run recomputes from that stage on.  Until commit, x is unchanged, so
 * a stage can be recomputed any number of times (e.g. a scale search).
 *
 * Batches: the residual stream x holds all local windows, but the stage
 * buffers may hold fewer (qz_fwd_create_batched): the stages then run on the
 * current batch of windows (qz_fwd_batch) and commit writes that batch's
 * rows of x.  qz_fwd_block loops over the batches.  A window's results are
 * the same bits in any batch (one sgemm per window and linear), so batching
 * trades memory for recomputation only: with B batches, the staged loop
 * above either keeps every group's inputs of all batches (caller memory) or
 * recomputes a batch's earlier stages from x (qz_fwd_batch resets the
 * cache): stage s then costs s+1 stage passes.
 *
 * Memory (allocated once in qz_fwd_create*, nothing allocated per call):
 * T_all*H floats for x + Tb*(4H + nq*hd + I) for the stage buffers
 * (Tb = batch windows * seqlen) + seqlen*(2*nkv*hd + I) for one window's
 * keys, values and up projection + the attention scratch
 * (qz_fwd_scores_floats) + RoPE tables [seqlen, hd/2] x 2 + the
 * logits chunk [chunk, vocab] when the head is used. */
#ifndef MPIQUANT_FORWARD_H
#define MPIQUANT_FORWARD_H

#include <stdint.h>

#include "mpiquant/config.h"
#include "mpiquant/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QZ_FWD_QBLOCK 256 /* query rows per attention score block */

/* Floats of attention scratch for windows of `seqlen` tokens and heads of
 * hd: score blocks of min(seqlen, QZ_FWD_QBLOCK) x seqlen, or the fused
 * small-head kernel's keys/values/scores when it is larger. */
int64_t qz_fwd_scores_floats(int64_t hd, int64_t seqlen);
/* The same with nthr OpenMP threads: the fused kernel's scratch once per
 * thread (16-float aligned), the score block once (its rows are split). */
int64_t qz_fwd_scores_floats_threads(int64_t hd, int64_t seqlen, int nthr);

/* Append-only. */
typedef enum {
  QZ_STAGE_NONE = -1,
  QZ_STAGE_QKV_IN = 0,
  QZ_STAGE_O_IN,
  QZ_STAGE_GATEUP_IN,
  QZ_STAGE_DOWN_IN,
  QZ_STAGE_OUT,
  QZ_STAGE_COUNT
} qz_fwd_stage;

/* Not collective: */
const char *qz_fwd_stage_name(qz_fwd_stage s); /* "qkv_in", ... */
/* The stage whose output is the input of linear l (Q,K,V -> QKV_IN, ...). */
qz_fwd_stage qz_fwd_stage_of_linear(qz_linear l);

/* ---- RoPE (HF rotate_half layout) ----------------------------------- */

/* Inverse frequencies inv_freq[i], i < hd/2, in double: theta^(-2i/hd),
 * then the config's rope_scaling (linear: / factor; llama3: the Llama 3.1
 * wavelength-dependent rule). Not collective. */
int qz_rope_inv_freq(const qz_model_config *cfg, double *inv_freq /* [hd/2] */);

/* cos/sin tables for positions 0..npos-1: angle = pos * inv_freq[i] in
 * double, rounded to f32 once. Not collective. */
int qz_rope_tables(const qz_model_config *cfg, int64_t npos,
                   float *cos_t /* [npos, hd/2] */, float *sin_t /* [npos, hd/2] */);

/* Rotate `nheads` heads of every row in place; row r has position
 * r % seqlen.  x [nrows, ld], head h at columns [h*hd, (h+1)*hd):
 * y[i] = x[i] cos - x[i+hd/2] sin, y[i+hd/2] = x[i+hd/2] cos + x[i] sin.
 * Not collective. */
void qz_rope_apply(float *x, int64_t nrows, int64_t ld, int64_t nheads,
                   int64_t hd, int64_t seqlen, const float *cos_t,
                   const float *sin_t);

/* Same with an explicit position per row (pos [nrows], each < the number
 * of positions of the tables). Not collective. */
void qz_rope_apply_pos(float *x, int64_t nrows, int64_t ld, int64_t nheads,
                       int64_t hd, const int32_t *pos, const float *cos_t,
                       const float *sin_t);

/* ---- workspace ------------------------------------------------------ */

typedef struct qz_fwd qz_fwd;

/* Workspace for `nwin` local windows of `seqlen` tokens (nwin may be 0),
 * all in one batch. Not collective. */
int qz_fwd_create(const qz_model_config *cfg, int64_t nwin, int64_t seqlen,
                  qz_fwd **out);
/* Same with stage buffers for at most `batch` windows (clamped to
 * [1, nwin]). The current batch starts as the first `batch` windows.
 * Not collective. */
int qz_fwd_create_batched(const qz_model_config *cfg, int64_t nwin,
                          int64_t seqlen, int64_t batch, qz_fwd **out);
/* Make windows [w0, w0+nwin) (nwin <= batch) the current batch and start a
 * block on them (forget cached stages). Not collective. */
int qz_fwd_batch(qz_fwd *f, int64_t w0, int64_t nwin);
void qz_fwd_destroy(qz_fwd **f); /* accepts NULL, NULLs the pointer */

/* Activation fake-quantization (SmoothQuant W8A8 evaluation): with bits > 0
 * the input of every linear (all 7) is quantized per token, dynamic,
 * symmetric: d_t = max(max_j |x_tj|, 1e-5) / (2^(bits-1) - 1), x' =
 * rint(x / d_t) * d_t (f32), into a separate buffer, so stage outputs stay
 * unquantized.  0 (the default) turns it off; the forward is then the same
 * bits as without this call.  Allocates the buffer on first use; forgets
 * cached stages. Not collective. */
int qz_fwd_set_act_quant(qz_fwd *f, int bits);
int qz_fwd_act_quant(const qz_fwd *f); /* current bits (0 = off) */
/* The quantizer above on rows x [nrows, n] -> y (may alias x).
 * Not collective. */
void qz_act_fake_quant(const float *x, int64_t nrows, int64_t n, int bits,
                       float *y);

/* Activation hook: what a quantized model computes at a linear's input
 * beyond (or instead of) the symmetric int quantizer above -- FP8 per-token
 * or static scales, LLM.int8() outlier decomposition, online rotations
 * (Hadamard) followed by a quantizer, ...  fn writes y [nrows, n], the input
 * the linears of group `lin` of block `layer` multiply with, from their
 * exact input x [nrows, n]; lin is the group's first linear (QZ_LIN_Q for
 * q/k/v, QZ_LIN_O, QZ_LIN_GATE for gate/up, QZ_LIN_DOWN).  It must be
 * deterministic per row (a row's result may not depend on the other rows
 * of the call, so batching and np do not change results) unless the
 * method's definition says otherwise (and its docs say so).  It cannot
 * fail: everything it needs is prepared before the forward runs.  Runs on
 * every rank on that rank's rows; not collective. */
typedef struct qz_act_hook {
  void (*fn)(void *ctx, int layer, qz_linear lin, const float *x, int64_t nrows,
             int64_t n, float *y);
  void *ctx;
} qz_act_hook;
/* Install (h != NULL: copied) or remove (NULL) the hook; exclusive with
 * qz_fwd_set_act_quant (QZ_ERR_ARG when both are on). Allocates the input
 * buffer on first use; forgets cached stages. Not collective. */
int qz_fwd_set_act_hook(qz_fwd *f, const qz_act_hook *h);

/* Model-level hook of a transformed model (rotations, KV-cache
 * quantization; mpiquant/rotate.h): `stream` changes residual rows x [nrows,
 * n] right after the embedding (inverse = 0) and right before the final norm
 * (inverse = 1); `attn` changes this block's queries q [nrows, nq*hd], keys
 * k and values v [nrows, nkv*hd] after RoPE, before the attention.  Either
 * may be NULL.  Deterministic per row, cannot fail (like qz_act_hook).
 * Not collective. */
typedef struct qz_model_hook {
  void (*stream)(void *ctx, float *x, int64_t nrows, int64_t n, int inverse);
  void (*attn)(void *ctx, int layer, float *q, float *k, float *v, int64_t nrows,
               int64_t nq, int64_t nkv, int64_t hd);
  void *ctx;
} qz_model_hook;
/* Install (copied) or remove (NULL) the attention part of h for the block
 * forward (the stream part is the caller's: it owns the embedding and the
 * head); forgets cached stages. Not collective. */
void qz_fwd_set_model_hook(qz_fwd *f, const qz_model_hook *h);

/* Accessors, not collective. */
int64_t qz_fwd_ntok(const qz_fwd *f);     /* all local tokens nwin*seqlen */
int64_t qz_fwd_nwin(const qz_fwd *f);     /* all local windows */
int64_t qz_fwd_batch_max(const qz_fwd *f);
void qz_fwd_batch_range(const qz_fwd *f, int64_t *w0, int64_t *nwin);
int64_t qz_fwd_seqlen(const qz_fwd *f);
size_t qz_fwd_bytes(const qz_fwd *f);     /* workspace size */

/* The residual stream x [T_all, H] of all local windows (block input);
 * writable. Not collective. */
float *qz_fwd_hidden(qz_fwd *f);

/* x[t] = embed[ids[t]] for all local tokens (ids [T_all], checked < vocab).
 * Selects the first batch and starts a block. Not collective. */
int qz_fwd_embed(qz_fwd *f, const qz_head_weights *h, const int32_t *ids);
/* The same from the model files (qz_model_embed_tokens: only the rows of
 * these ids are read). Not collective. */
int qz_fwd_embed_model(qz_fwd *f, qz_model *m, const int32_t *ids);

/* Start a block on the current batch's rows of x (forget cached stages).
 * Not collective. */
void qz_fwd_block_begin(qz_fwd *f);
/* Compute the missing stages up to `upto` with the current weights.
 * Not collective. */
int qz_fwd_run(qz_fwd *f, const qz_block_weights *w, qz_fwd_stage upto);
/* Weights used from stage `from` on changed: drop those cached results.
 * Not collective. */
void qz_fwd_invalidate(qz_fwd *f, qz_fwd_stage from);
/* Last stage computed for the current block (QZ_STAGE_NONE after begin).
 * Not collective. */
qz_fwd_stage qz_fwd_done(const qz_fwd *f);
/* Result of stage s (must have been computed) for the current batch:
 * [batch windows * seqlen, *ncols] row-major, ld = *ncols.  QKV_IN/GATEUP_IN: H; O_IN: nq*hd; DOWN_IN: I; OUT: H.
 * Not collective. */
const float *qz_fwd_stage_output(const qz_fwd *f, qz_fwd_stage s,
                                 int64_t *ncols);
/* The input of linear l: qz_fwd_stage_output(f, qz_fwd_stage_of_linear(l)),
 * [T, in_features of l]; NULL if that stage was not computed.
 * Not collective. */
const float *qz_fwd_linear_input(const qz_fwd *f, qz_linear l, int64_t *ncols);
/* The batch's rows of x <- out (after run(OUT)); starts the next block on
 * the same batch. Not collective. */
int qz_fwd_block_commit(qz_fwd *f);
/* The batch's rows of x <- h1 + ffn (ffn [batch tokens, H]: an FFN output
 * computed outside, e.g. a mixture of experts streamed expert by expert);
 * needs run(GATEUP_IN); starts the next block. Not collective. */
int qz_fwd_commit_ffn(qz_fwd *f, const float *ffn);
/* Whole block on every batch: batch, run(OUT), commit. Not collective. */
int qz_fwd_block(qz_fwd *f, const qz_block_weights *w);

/* ---- output head ---------------------------------------------------- */

/* Logits of local rows [row0, row0+n) of x (all windows) after the final
 * norm (overwrites the QKV_IN stage buffer):
 * logits [n, vocab] = RMSNorm(x[row]) * norm  . lm_head'.  Not collective. */
int qz_fwd_logits(qz_fwd *f, const qz_head_weights *h, int64_t row0, int64_t n,
                  float *logits /* [n, vocab] */);

/* Per-window NLL: for every local window w, nll[w] = sum over positions
 * p = 0..seqlen-2 of -log softmax(logits[p])[ids[p+1]] (the first token of
 * a window is not scored: seqlen-1 tokens per window), accumulated in double
 * in position order.  The vocab projection runs in chunks of tokens so the
 * logits never exceed `chunk_tokens` x vocab floats (0 = default 64 MiB).
 * Not collective. */
int qz_fwd_nll(qz_fwd *f, const qz_head_weights *h, const int32_t *ids /* [T] */,
               int64_t chunk_tokens, double *nll /* [nwin] */);

/* dst [n, H] = RMSNorm(final norm) of local residual rows [row0, row0+n)
 * (what the head multiplies). Not collective. */
int qz_fwd_final_norm(qz_fwd *f, const float *norm, int64_t row0, int64_t n,
                      float *dst);

/* Per-window NLL like qz_fwd_nll with the head sharded over the vocab:
 * every rank holds hs (qz_vocab_shard_range rows); for each window in
 * global order its owner broadcasts the normed hidden rows, every rank
 * projects them on its vocab chunks, the per-token max is reduced (MAX,
 * exact) and the per-chunk sums of exp(logit - max) (double, in column
 * order) and the target logit go to the owner, which adds the chunks in
 * order. Identical bits at any rank count; for vocab <= QZ_VOCAB_CHUNK the
 * same bits as qz_fwd_nll. ids: all windows [nwin_total * seqlen]; nll:
 * this rank's windows (win0 = its first). Collective on comm. */
int qz_fwd_nll_sharded(qz_fwd *f, MPI_Comm comm, const qz_head_shard *hs,
                       const int32_t *ids, int64_t nwin_total, int64_t chunk_tokens,
                       double *nll);

/* Useful flops of one block forward over T tokens (projections, causal
 * attention QK'/PV); for throughput reports. Not collective. */
double qz_fwd_block_flops(const qz_model_config *cfg, int64_t nwin,
                          int64_t seqlen);

/* ---- perplexity over windows distributed on ranks ------------------- */

/* Supplies block `layer`'s weights into w (allocated for the model's config).
 * Collective on the model's communicator.  The default (NULL) is
 * qz_model_load_block; eval of a checkpoint substitutes dequantized linears
 * (e.g. load the block, then overwrite w->w[l]). */
typedef int (*qz_block_source_fn)(void *ctx, qz_model *m, int layer,
                                  qz_block_weights *w);

typedef struct {
  int64_t seqlen;           /* window length L (required) */
  int64_t logits_chunk;     /* tokens per vocab projection (0 = 64 MiB) */
  int progress;             /* rank-0 progress line with ETA over blocks */
  int64_t batch_windows;    /* windows per forward batch (0 = stage buffers
                               <= 1 GiB); results do not depend on it */
  qz_block_source_fn block_source; /* NULL: weights from the model files */
  int act_quant_bits;       /* > 0: per-token dynamic fake-quant of every
                               linear input (qz_fwd_set_act_quant) */
  const qz_act_hook *act_hook; /* NULL or the linear-input hook
                                  (qz_fwd_set_act_hook); exclusive with
                                  act_quant_bits */
  void *block_source_ctx;
  const qz_model_hook *model_hook; /* NULL or the stream/attention hook
                                      of a transformed model */
  int full_head;            /* 1: every rank holds the whole [V, H] head (the
                               unsharded path, for checks); 0: vocabularies
                               larger than QZ_VOCAB_CHUNK are sharded */
} qz_eval_opts;

typedef struct {
  int64_t nwin, seqlen;
  int64_t tokens_scored;    /* nwin * (seqlen - 1) */
  double nll_sum;           /* sum of per-window NLLs, added in window order */
  double nll_mean, ppl;     /* ppl = exp(nll_sum / tokens_scored) */
  double seconds, tokens_per_s; /* wall time of the whole evaluation */
  int64_t bytes_read;       /* weight bytes read from disk, all ranks */
} qz_eval_result;

/* Perplexity of `nwin` windows ids [nwin, seqlen] (identical on every rank)
 * with the protocol of the golden README: each window an independent
 * sequence, NLL of its tokens 2..L, PPL = exp(mean).  Windows are split over
 * the ranks (qz_shard_windows; a rank may own none), the model is streamed
 * block by block (each block read once per job, layer-major over all local
 * windows), per-window NLLs are gathered and summed in window order, so the
 * result is the same bits at any rank count (same BLAS threads per rank).
 * Every rank gets the result. Collective on the model's communicator. */
int qz_eval_ppl(qz_model *m, const int32_t *ids, int64_t nwin,
                const qz_eval_opts *opts, qz_eval_result *res);

#ifdef __cplusplus
}
#endif
#endif
