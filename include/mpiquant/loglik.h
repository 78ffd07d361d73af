/* Distributed loglikelihood of (context, continuation) token requests with
 * lm-evaluation-harness 0.4 semantics (task evaluation).
 *
 * Request r: full = ctx ++ cont; the model input is
 * full[-(max_len+1):][:-1] (left truncation to the model context) and the
 * scored tokens are the last min(|cont|, max_len) tokens of full, each
 * predicted from the input position before it; loglikelihood = sum of
 * log-softmax of the scored tokens in double, is_greedy = every scored
 * token is the argmax (first maximum) of its logits.
 *
 * Prefix reuse: the requests of one group (a document's choices) share
 * the longest common prefix of their inputs: it is run once per block,
 * and each request's own rows attend to its keys/values.  Length batching:
 * documents are sorted by rows (descending) and cut into batches of about
 * batch_tokens rows; a batch is one sgemm per linear.  Batches go to the
 * ranks balanced by rows (largest first, to the least loaded rank).  The
 * batches themselves do not depend on the number of ranks, so every
 * request's result is the same bits at any rank count.  The model is
 * streamed block by block (each block read once per pass), layer-major
 * over all local rows, like qz_eval_ppl; one pass unless the rows of a rank
 * exceed round_rows. */
#ifndef MPIQUANT_LOGLIK_H
#define MPIQUANT_LOGLIK_H

#include <stdint.h>

#include "mpiquant/forward.h"
#include "mpiquant/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  const int32_t *ctx;  /* [nctx] >= 1 token (lm-eval: BOS for an empty one) */
  int64_t nctx;
  const int32_t *cont; /* [ncont] >= 1 token */
  int64_t ncont;
  int64_t group;       /* requests of one group are consecutive; they may
                          share their common input prefix */
} qz_ll_request;

typedef struct {
  double ll;          /* sum of log-softmax of the scored tokens */
  int greedy;         /* 1: every scored token is the argmax */
  int cont_truncated; /* 1: |cont| > max_len, only its last max_len tokens
                         were scored (lm-eval refuses these) */
  int ctx_truncated;  /* 1: the input was cut on the left */
  int64_t ninput;     /* tokens of the model input */
} qz_ll_result;

typedef struct {
  int64_t max_len;      /* model context (max_position_embeddings) */
  int64_t batch_tokens; /* rows per forward batch (0 = 512); results
                           depend on it in the last bits, not on np */
  int no_prefix_reuse;  /* 1: every request alone (for checks) */
  int64_t round_rows;   /* residual-stream rows a rank holds at once (0 =
                           4 GiB worth); more rows take several passes over
                           the weights (rounds); results do not change */
  int progress;         /* rank-0 progress line over blocks */
  qz_block_source_fn block_source; /* NULL: weights from the model files */
  void *block_source_ctx;
  int act_quant_bits;   /* > 0: per-token fake-quant of every linear input */
  const qz_act_hook *act_hook; /* NULL or the linear-input hook (forward.h);
                                  exclusive with act_quant_bits */
  const qz_model_hook *model_hook; /* NULL or the stream/attention hook */
  int full_head;        /* vocabularies above QZ_VOCAB_CHUNK: 0 = the head
                           sharded over the ranks (V/P x H each), 1 = the
                           whole head on every rank (for checks) */
} qz_ll_opts;

typedef struct {
  int64_t nreq, ngroups, nbatches;
  int nrounds;            /* passes over the weights */
  int64_t tokens_input;   /* sum of the model inputs (what lm-eval runs) */
  int64_t tokens_forward; /* rows the forward ran (after prefix reuse) */
  int64_t tokens_scored;
  int64_t cont_truncated, ctx_truncated;
  double seconds;         /* wall time, max over ranks */
  int64_t bytes_read;     /* weight bytes read, all ranks */
} qz_ll_stats;

/* Loglikelihoods of `nreq` requests (identical on every rank) into
 * res [nreq] on every rank. Collective on the model's communicator. */
int qz_loglikelihood(qz_model *m, const qz_ll_request *req, int64_t nreq,
                     const qz_ll_opts *o, qz_ll_result *res, qz_ll_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
