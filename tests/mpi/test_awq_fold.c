/* AWQ folding identity: the fp model with the searched AWQ scales folded
 * (RMSNorm weights /= s, up_proj rows /= s, scaled columns *= s) but not
 * quantized gives the same logits as the original model (max abs diff
 * <= 1e-4), on stories260K and babyllama, 8 calibration windows split over
 * the ranks.  Also: the search ratios are the same at every rank count
 * (compared with rank 0's 1-rank run through a sub-communicator).
 * With arguments MODEL_DIR CALIB_IDS (tests/awq_mha.sh: a synthetic model
 * without grouped-query attention) the same checks run on that model, and
 * the o_proj <- v_proj search must apply and pick a nonzero ratio in some
 * block, so its fold (v_proj rows / s, o_proj columns * s) is exercised. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/awq.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/forward.h"
#include "mpiquant/mem.h"
#include "mpiquant/model.h"
#include "mpiquant/shard.h"
#include "mpiquant/tokenizer.h"
#include "qz_test.h"

#define TOL_LOGIT 1e-4 /* issue 8: folded fp model vs original, absolute */
#define NWIN 8

static int run_model(MPI_Comm comm, const char *mdir, const char *calib,
                     double *ratios /* [nblocks * 4] */, int check_logits) {
  for (int k = 0; k < 5 * 4; k++) ratios[k] = -2.0;
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  qz_model *m = NULL;
  qz_head_weights head = {0};
  qz_block_weights w = {0};
  qz_fwd *fa = NULL, *fb = NULL;
  int32_t *ids = NULL;
  float *la = NULL, *lb = NULL;
  int64_t nlines = 0, L = 0;
  if (!QZT_OK(qz_windows_read_txt(calib, &ids, &nlines, &L))) return 1;
  QZT_CHECK(nlines >= NWIN, "%s: %lld windows", calib, (long long)nlines);
  if (!QZT_OK(qz_model_open(comm, mdir, &m))) return 1;
  const qz_model_config *cfg = qz_model_config_of(m);
  int64_t first, count;
  qz_shard_windows(NWIN, size, rank, &first, &count);
  QZT_OK(qz_model_load_head(m, 1, 1, &head));
  QZT_OK(qz_block_weights_alloc(cfg, &w));
  QZT_OK(qz_fwd_create(cfg, count, L, &fa));
  QZT_OK(qz_fwd_create(cfg, count, L, &fb));
  QZT_OK(qz_fwd_embed(fa, &head, ids + first * L));
  QZT_OK(qz_fwd_embed(fb, &head, ids + first * L));
  qz_awq_opts o = qz_awq_opts_default(4, 32);
  o.clip = 0; /* clipping changes the function; folding must not */
  int changed = 0, o_scaled = 0;
  const int mha = cfg->num_key_value_heads == cfg->num_attention_heads;
  QZT_CHECK(cfg->num_hidden_layers <= 5, "%s: at most 5 blocks here", mdir);
  for (int b = 0; b < (int)cfg->num_hidden_layers; b++) {
    QZT_OK(qz_model_load_block(m, b, &w));
    float n0 = w.attn_norm[0], n1 = w.ffn_norm[0];
    qz_awq_block_result r;
    QZT_OK(qz_awq_block(comm, cfg, fa, &w, &o, first, NWIN, &r));
    QZT_OK(qz_fwd_block_commit(fa)); /* original block's output */
    QZT_OK(qz_fwd_block(fb, &w));    /* folded block */
    changed += w.attn_norm[0] != n0 || w.ffn_norm[0] != n1;
    QZT_CHECK(r.applied[QZ_AWQ_O] == mha, "block %d: o_proj search %s on a %s model", b,
              r.applied[QZ_AWQ_O] ? "applied" : "skipped", mha ? "MHA" : "GQA");
    o_scaled += r.applied[QZ_AWQ_O] && r.ratio[QZ_AWQ_O] > 0.0;
    for (int k = 0; k < 4; k++) ratios[b * 4 + k] = r.ratio[k];
  }
  QZT_CHECK(changed > 0, "%s: no scale was folded (all ratios 0?)", mdir);
  if (mha && rank == 0)
    printf("%s: o_proj <- v_proj ratios:", mdir);
  for (int b = 0; mha && rank == 0 && b < (int)cfg->num_hidden_layers; b++)
    printf(" %.2f%s", ratios[b * 4 + QZ_AWQ_O], b + 1 == (int)cfg->num_hidden_layers ? "\n" : "");
  QZT_CHECK(!mha || o_scaled > 0, "%s: MHA model but no block scaled o_proj", mdir);
  if (check_logits) {
    int64_t T = count * L, V = head.vocab;
    QZT_OK(qz_alloc((size_t)(T > 0 ? T : 1) * (size_t)V, 4, "logits", &la));
    QZT_OK(qz_alloc((size_t)(T > 0 ? T : 1) * (size_t)V, 4, "logits", &lb));
    if (T > 0) {
      QZT_OK(qz_fwd_logits(fa, &head, 0, T, la));
      QZT_OK(qz_fwd_logits(fb, &head, 0, T, lb));
    }
    double md = 0.0;
    for (int64_t i = 0; i < T * V; i++) {
      double d = fabs((double)la[i] - (double)lb[i]);
      md = d > md ? d : md;
    }
    MPI_Allreduce(MPI_IN_PLACE, &md, 1, MPI_DOUBLE, MPI_MAX, comm);
    if (rank == 0) printf("%s: folded vs original logits max abs diff %.3g\n", mdir, md);
    QZT_CHECK(md <= TOL_LOGIT, "%s: folded model logits differ by %.3g > %.1g", mdir, md,
              TOL_LOGIT);
  }
  free(la);
  free(lb);
  free(ids);
  qz_fwd_destroy(&fa);
  qz_fwd_destroy(&fb);
  qz_block_weights_free(&w);
  qz_head_weights_free(&head);
  qz_model_close(&m);
  return 0;
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  const char *S = qzt_shared();
  if (!S) return qzt_finish("awq_fold");
  static const char *models[2][2] = {
      {"models/stories260K-hf", "golden/calib/stories260K_calib_ids.txt"},
      {"models/babyllama-tok105-hf", "golden/calib/babyllama_calib_ids.txt"}};
  const int given = argc >= 3;
  for (int i = 0; i < (given ? 1 : 2); i++) {
    char md[4096], cf[4096];
    snprintf(md, sizeof md, "%s/%s", S, models[i][0]);
    snprintf(cf, sizeof cf, "%s/%s", S, models[i][1]);
    if (given) {
      snprintf(md, sizeof md, "%s", argv[1]);
      snprintf(cf, sizeof cf, "%s", argv[2]);
    }
    double r[5 * 4], r1[5 * 4];
    run_model(MPI_COMM_WORLD, md, cf, r, 1);
    /* rank 0 alone: same ratios */
    MPI_Comm self;
    MPI_Comm_split(MPI_COMM_WORLD, qzt_rank() == 0 ? 0 : MPI_UNDEFINED, 0, &self);
    if (self != MPI_COMM_NULL && qzt_size() > 1) {
      run_model(self, md, cf, r1, 0);
      QZT_CHECK(memcmp(r, r1, sizeof r) == 0, "%s: ratios differ from a 1-rank run", md);
    }
    if (self != MPI_COMM_NULL) MPI_Comm_free(&self);
    MPI_Barrier(MPI_COMM_WORLD);
  }
  return qzt_finish("awq_fold");
}
