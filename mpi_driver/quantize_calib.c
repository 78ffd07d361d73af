/* mpiquant quantize: the calibration stream. Rank 0 reads or tokenizes the
 * calibration data and every rank gets the windows; each rank's hidden
 * states start at block 0 or, on resume, at the first block to do. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/timing.h"
#include "mpiquant/tokenizer.h"
#include "mpiquant/windows.h"
#include "qblock.h"
#include "quantize.h"
#include "rotate_cli.h"

static int ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && strcmp(s + n - m, suf) == 0;
}

/* Calibration windows [nwin, L] on rank 0 (not collective). */
static int calib_windows(const qz_qopts *o, int64_t max_pos, int64_t vocab, int32_t **win,
                         int64_t *nwin, int64_t *L) {
  int st = QZ_OK;
  int32_t *ids = NULL;
  int64_t n = 0;
  char *text = NULL;
  qz_tokenizer *tok = NULL;
  int64_t *starts = NULL;
  *win = NULL;
  if (o->calib_tokens && ends_with(o->calib_tokens, ".txt")) {
    int64_t lines, wl;
    QZ_CALL(qz_windows_read_txt(o->calib_tokens, &ids, &lines, &wl));
    QZ_CALL_DONE(qz_tokens_check_vocab(o->calib_tokens, ids, lines * wl, vocab));
    QZ_CHECK_DONE(o->seqlen == 0 || o->seqlen == wl, QZ_ERR_USAGE,
                  "%s holds windows of %lld tokens but --seqlen is %ld",
                  o->calib_tokens, (long long)wl, o->seqlen);
    QZ_CHECK_DONE(lines >= o->nsamples, QZ_ERR_USAGE,
                  "%s holds %lld windows, --nsamples asks for %ld",
                  o->calib_tokens, (long long)lines, o->nsamples);
    *nwin = o->nsamples;
    *L = wl;
    *win = ids;
    ids = NULL;
    goto done;
  }
  if (o->calib_tokens) {
    QZ_CALL_DONE(qz_tokens_read_bin(o->calib_tokens, &ids, &n));
    QZ_CALL_DONE(qz_tokens_check_vocab(o->calib_tokens, ids, n, vocab));
  } else {
    size_t len = 0;
    QZ_CALL_DONE(qz_tokenizer_load(o->model, &tok));
    QZ_CALL_DONE(qz_read_file(o->calib, &text, &len));
    /* the whole file as one string, no BOS (the reference protocol) */
    QZ_CALL_DONE(qz_tokenizer_encode(tok, text, len, 0, &ids, &n));
    qz_info("calibration: %s -> %lld tokens", o->calib, (long long)n);
  }
  *L = o->seqlen ? o->seqlen : (max_pos < 2048 ? max_pos : 2048);
  *nwin = o->nsamples;
  QZ_CALL_DONE(qz_alloc((size_t)*nwin, sizeof *starts, "calibration starts", &starts));
  if (*L > max_pos)
    qz_warn("quantize: --seqlen %lld exceeds max_position_embeddings %lld of %s",
            (long long)*L, (long long)max_pos, o->model);
  if (n / 2 < *nwin * *L) /* windows come from the second half of the stream */
    qz_warn("calibration: %lld tokens give %lld in the second half, fewer than --nsamples "
            "%lld x --seqlen %lld = %lld: the windows overlap", (long long)n,
            (long long)(n / 2), (long long)*nwin, (long long)*L, (long long)(*nwin * *L));
  QZ_CALL_DONE(qz_windows_calib_starts(n, *L, *nwin, starts));
  QZ_CALL_DONE(qz_alloc((size_t)(*nwin * *L), sizeof **win, "calibration windows", win));
  QZ_CALL_DONE(qz_windows_gather(ids, n, starts, *nwin, *L, *win));
done:
  if (st != QZ_OK) qz_free(win);
  free(ids);
  free(text);
  free(starts);
  qz_tokenizer_free(&tok);
  return st;
}

static uint64_t fnv1a(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

int qz_quantize_windows(MPI_Comm comm, const qz_qopts *o, const qz_model_config *cfg,
                        int32_t **win, int64_t *nwin, int64_t *L, uint64_t *hash) {
  int rank, st = QZ_OK;
  MPI_Comm_rank(comm, &rank);
  *win = NULL;
  *nwin = *L = 0;
  if (rank == 0)
    st = calib_windows(o, cfg->max_position_embeddings, cfg->vocab_size, win, nwin, L);
  QZ_CALL(qz_error_agree(comm, st));
  int64_t v[2] = {*nwin, *L};
  QZ_CALL_MPI_DONE(MPI_Bcast(v, 2, MPI_INT64_T, 0, comm));
  qz_count_bcast(comm, 0, (int64_t)sizeof v);
  *nwin = v[0];
  *L = v[1];
  if (rank != 0) st = qz_alloc((size_t)(*nwin * *L), sizeof **win, "calibration windows", win);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  QZ_CALL_MPI_DONE(MPI_Bcast(*win, (int)(*nwin * *L), MPI_INT32_T, 0, comm));
  qz_count_bcast(comm, 0, 4 * *nwin * *L);
  *hash = fnv1a(*win, sizeof **win * (size_t)(*nwin * *L));
done:
  if (st != QZ_OK) qz_free(win);
  return st;
}

int qz_quantize_stream_to(MPI_Comm comm, qz_model *m, qz_ckpt *ck, qz_fwd *f,
                          qz_block_weights *w, const int32_t *win, int64_t nwin, int64_t L,
                          int64_t first, int64_t count, int b0, unsigned needs,
                          qz_rot *rot) {
  const qz_model_config *cfg = qz_model_config_of(m);
  int s = 0;
  int snap = b0 > 0 ? qz_ckpt_snapshot_block(ck) : -1;
  if (snap > 0 && snap <= b0) {
    QZ_CALL(qz_ckpt_read_snapshot(ck, nwin, L, cfg->hidden_size, first, count,
                                  qz_fwd_hidden(f)));
    s = snap;
    qz_info("resume: hidden states of block %d from the snapshot", snap);
  } else {
    /* only this rank's tokens' rows of the embedding: T x H, not V x H */
    QZ_CALL(qz_error_agree(comm, qz_fwd_embed_model(f, m, win + first * L)));
    if (rot) qz_rot_stream(rot, qz_fwd_hidden(f), qz_fwd_ntok(f), 0); /* E Q1 */
  }
  qz_ckpt_source cs = {.ck = ck};
  for (int b = s; b < b0; b++) { /* completed (or unselected) blocks */
    if (qz_config_layer_moe(cfg, b) && !w->ew[0]) { /* experts one at a time */
      QZ_CALL(qz_quantize_moe_replay(m, (needs & QZ_NEED_FP_STREAM) ? NULL : ck, f, w, b));
      continue;
    }
    if (needs & QZ_NEED_FP_STREAM) { /* the calibration stream is the fp model's */
      QZ_CALL(qz_model_load_block(m, b, w));
      if (rot) qz_rot_fuse_block(rot, w);
    } else {
      QZ_CALL(qz_ckpt_block_source(&cs, m, b, w));
      QZ_CALL(qz_rotcli_load_block(ck, b, rot)); /* DuQuant's transforms */
    }
    qz_timer_start(QZ_PHASE_FORWARD);
    int st = qz_fwd_block(f, w);
    qz_timer_stop(QZ_PHASE_FORWARD);
    QZ_CALL(qz_error_agree(comm, st));
  }
  if (b0 > s) qz_info("resume: replayed blocks %d..%d", s, b0 - 1);
  return QZ_OK;
}
