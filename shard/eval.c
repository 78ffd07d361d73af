/* Distributed perplexity: windows split over ranks, model streamed block by
 * block, per-window NLLs summed in window order. */
#include <math.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/forward.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/shard.h"
#include "mpiquant/timing.h"

static int default_source(void *ctx, qz_model *m, int layer,
                          qz_block_weights *w) {
  (void)ctx;
  return qz_model_load_block(m, layer, w);
}

int qz_eval_ppl(qz_model *m, const int32_t *ids, int64_t nwin,
                const qz_eval_opts *o, qz_eval_result *res) {
  MPI_Comm comm = qz_model_comm(m);
  const qz_model_config *cfg = qz_model_config_of(m);
  int rank, size;
  QZ_CALL_MPI(MPI_Comm_rank(comm, &rank));
  QZ_CALL_MPI(MPI_Comm_size(comm, &size));
  memset(res, 0, sizeof *res);
  int64_t L = o->seqlen;
  QZ_CHECK(L >= 2 && nwin >= 1, QZ_ERR_ARG,
           "eval needs at least one window of >= 2 tokens, got %lld x %lld",
           (long long)nwin, (long long)L);
  qz_block_source_fn source = o->block_source ? o->block_source : default_source;
  double t0 = MPI_Wtime();
  int64_t first, count;
  qz_shard_windows(nwin, size, rank, &first, &count);
  const int32_t *my_ids = ids + first * L;

  int st = QZ_OK;
  qz_fwd *f = NULL;
  qz_block_weights w = {0};
  qz_head_weights head = {0};
  qz_head_shard hs = {0};
  double *nll = NULL, *all = NULL;
  int64_t bw = o->batch_windows;
  if (bw <= 0) {
    double per_win = 4.0 * (double)L *
                     (double)(4 * cfg->hidden_size + 2 * cfg->intermediate_size +
                              2 * (cfg->num_attention_heads +
                                   cfg->num_key_value_heads) * cfg->head_dim);
    bw = (int64_t)((double)(1 << 30) / per_win);
    if (bw < 1) bw = 1;
  }
  st = qz_fwd_create_batched(cfg, count, L, bw, &f);
  if (st == QZ_OK && o->act_quant_bits > 0)
    st = qz_fwd_set_act_quant(f, o->act_quant_bits);
  if (st == QZ_OK && o->act_hook) st = qz_fwd_set_act_hook(f, o->act_hook);
  if (st == QZ_OK && o->model_hook) qz_fwd_set_model_hook(f, o->model_hook);
  if (st == QZ_OK) st = qz_block_weights_alloc(cfg, &w);
  if (st == QZ_OK) st = qz_calloc((size_t)(count > 0 ? count : 1), sizeof *nll,
                                  "window NLLs", &nll);
  if (st == QZ_OK && rank == 0)
    st = qz_calloc((size_t)nwin, sizeof *all, "window NLLs", &all);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  {
    char b1[32], b2[32];
    qz_info("eval: %lld windows x %lld tokens over %d ranks (this rank: %lld "
            "windows in batches of %lld, workspace %s, block weights %s)",
            (long long)nwin, (long long)L, size, (long long)count,
            (long long)qz_fwd_batch_max(f),
            qz_fmt_bytes((double)qz_fwd_bytes(f), b1, sizeof b1),
            qz_fmt_bytes((double)w.mem_bytes, b2, sizeof b2));
  }

  /* Vocabularies above one chunk: the head is sharded over the ranks
   * (V/P x H each) and the embedding is read per token; small ones keep the
   * whole table on every rank (embedding and tied head read once). */
  const int sharded = cfg->vocab_size > QZ_VOCAB_CHUNK && !o->full_head;
  if (sharded) {
    QZ_CALL_DONE(qz_error_agree(comm, qz_fwd_embed_model(f, m, my_ids)));
  } else {
    /* embeddings (and, when tied, the head: the same tensor, read once) */
    QZ_CALL_DONE(qz_model_load_head(m, 1, 0, &head));
    if (head.tied) QZ_CALL_DONE(qz_model_load_head(m, 0, 1, &head));
    QZ_CALL_DONE(qz_error_agree(comm, qz_fwd_embed(f, &head, my_ids)));
    if (!head.tied) { /* free the embedding before the blocks need memory */
      qz_free_big(&head.embed, 0);
    }
  }
  if (o->model_hook && o->model_hook->stream) /* rotated embeddings */
    o->model_hook->stream(o->model_hook->ctx, qz_fwd_hidden(f), qz_fwd_ntok(f),
                          cfg->hidden_size, 0);

  qz_progress prog;
  int64_t nblocks = cfg->num_hidden_layers;
  if (o->progress) qz_progress_begin(&prog, "eval blocks", nblocks + 1);
  for (int64_t l = 0; l < nblocks; l++) {
    QZ_CALL_DONE(source(o->block_source_ctx, m, (int)l, &w));
    qz_timer_start(QZ_PHASE_FORWARD);
    st = qz_fwd_block(f, &w);
    qz_timer_stop(QZ_PHASE_FORWARD);
    QZ_CALL_DONE(qz_error_agree(comm, st));
    if (o->progress) qz_progress_update(&prog, l + 1);
  }
  if (o->model_hook && o->model_hook->stream) /* back to the head's basis */
    o->model_hook->stream(o->model_hook->ctx, qz_fwd_hidden(f), qz_fwd_ntok(f),
                          cfg->hidden_size, 1);
  if (sharded) {
    int64_t v0, v1;
    qz_vocab_shard_range(cfg->vocab_size, size, rank, &v0, &v1);
    QZ_CALL_DONE(qz_error_agree(comm, qz_model_load_head_shard(m, v0, v1, &hs)));
    qz_timer_start(QZ_PHASE_EVAL);
    st = qz_fwd_nll_sharded(f, comm, &hs, ids, nwin, o->logits_chunk, nll);
    qz_timer_stop(QZ_PHASE_EVAL);
  } else {
    if (!head.tied) QZ_CALL_DONE(qz_model_load_head(m, 0, 1, &head));
    qz_timer_start(QZ_PHASE_EVAL);
    st = qz_fwd_nll(f, &head, my_ids, o->logits_chunk, nll);
    qz_timer_stop(QZ_PHASE_EVAL);
  }
  QZ_CALL_DONE(qz_error_agree(comm, st));
  if (o->progress) qz_progress_update(&prog, nblocks + 1);

  /* per-window NLLs to rank 0 in window order: the sum is then the same
   * sequence of additions at any rank count */
  {
    int counts[size], displs[size];
    for (int p = 0; p < size; p++) {
      int64_t b, c;
      qz_shard_windows(nwin, size, p, &b, &c);
      counts[p] = (int)c;
      displs[p] = (int)b;
    }
    int rc = MPI_Gatherv(nll, (int)count, MPI_DOUBLE, all, counts, displs,
                         MPI_DOUBLE, 0, comm);
    qz_count_gather(comm, 0, 8 * count, 8 * nwin);
    if (rc != MPI_SUCCESS) {
      st = qz_mpi_error(rc, "MPI_Gatherv", __FILE__, __LINE__, __func__);
      goto done;
    }
  }
  double sum = 0.0;
  if (rank == 0)
    for (int64_t i = 0; i < nwin; i++) sum += all[i];
  {
    int rc = MPI_Bcast(&sum, 1, MPI_DOUBLE, 0, comm);
    qz_count_bcast(comm, 0, 8);
    if (rc != MPI_SUCCESS) {
      st = qz_mpi_error(rc, "MPI_Bcast", __FILE__, __LINE__, __func__);
      goto done;
    }
  }
  QZ_CALL_DONE(qz_model_bytes_read_total(m, &res->bytes_read));
  res->nwin = nwin;
  res->seqlen = L;
  res->tokens_scored = nwin * (L - 1);
  res->nll_sum = sum;
  res->nll_mean = sum / (double)res->tokens_scored;
  res->ppl = exp(res->nll_mean);
  res->seconds = MPI_Wtime() - t0;
  {
    double sec = res->seconds;
    QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &sec, 1, MPI_DOUBLE, MPI_MAX, comm));
    res->seconds = sec;
  }
  res->tokens_per_s =
      res->seconds > 0 ? (double)(nwin * L) / res->seconds : 0.0;
  QZ_CHECK_DONE(isfinite(res->ppl), QZ_ERR_NUMERIC,
                "perplexity is not finite (NLL sum %g): the model produced "
                "NaN/Inf", sum);
done:
  qz_free(&all);
  qz_free(&nll);
  qz_head_weights_free(&head);
  qz_head_shard_free(&hs);
  qz_block_weights_free(&w);
  qz_fwd_destroy(&f);
  return st;
}
