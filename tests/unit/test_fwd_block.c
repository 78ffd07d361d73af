/* Block forward on synthetic weights vs an independent double-precision
 * forward (fwd_ref.h): every stage output, the block output, the stage-by-
 * stage semantics with weights changed between stages, logits and NLL. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fwd_ref.h"
#include "mpiquant/forward.h"
#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "qz_test.h"

/* f32 forward vs double: inputs are O(1), so 1e-4 absolute leaves room for
 * f32 rounding over sums of a few hundred terms while catching any formula
 * error (those show up at 1e-2 or more). */
#define TOL_STAGE 1e-4
#define TOL_LOGIT 1e-4
#define TOL_NLL_REL 1e-5

static uint64_t rng = 12345;

static void fill(float *a, int64_t n, double scale, double offset) {
  for (int64_t i = 0; i < n; i++)
    a[i] = (float)(offset + scale * qzt_rand_normal(&rng));
}

static void random_block(const qz_model_config *c, qz_block_weights *w) {
  fill(w->attn_norm, c->hidden_size, 0.1, 1.0);
  fill(w->ffn_norm, c->hidden_size, 0.1, 1.0);
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t out = l == QZ_LIN_Q ? c->num_attention_heads * c->head_dim
                  : l <= QZ_LIN_V ? c->num_key_value_heads * c->head_dim
                  : l == QZ_LIN_GATE || l == QZ_LIN_UP ? c->intermediate_size
                                                       : c->hidden_size;
    int64_t in = l == QZ_LIN_O ? c->num_attention_heads * c->head_dim
                 : l == QZ_LIN_DOWN ? c->intermediate_size
                                    : c->hidden_size;
    /* q/k larger so that attention is not uniform */
    double s = (l == QZ_LIN_Q || l == QZ_LIN_K ? 2.5 : 1.0) / sqrt((double)in);
    fill(w->w[l], out * in, s, 0.0);
    if (w->b[l]) fill(w->b[l], out, 0.1, 0.0);
  }
}

static double maxdiff(const float *a, int64_t lda, const double *b, int64_t n,
                      int64_t rows) {
  double m = 0;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0; i < n; i++) {
      double d = fabs((double)a[r * lda + i] - b[r * n + i]);
      if (!(d <= m)) m = d; /* NaN propagates */
    }
  return m;
}

static void check_block(const qz_model_config *c, int64_t nwin, int64_t L,
                        const char *tag) {
  int64_t H = c->hidden_size, I = c->intermediate_size;
  int64_t qd = c->num_attention_heads * c->head_dim, T = nwin * L;
  qz_block_weights w = {0}, w2 = {0};
  if (!QZT_OK(qz_block_weights_alloc(c, &w))) return;
  QZT_OK(qz_block_weights_alloc(c, &w2));
  random_block(c, &w);
  qz_fwd *f = NULL;
  if (!QZT_OK(qz_fwd_create(c, nwin, L, &f))) return;
  float *x = qz_fwd_hidden(f);
  fill(x, T * H, 1.0, 0.0);
  double *xd = malloc(sizeof(double) * (size_t)(T * H));
  for (int64_t i = 0; i < T * H; i++) xd[i] = x[i];
  double *xn = malloc(sizeof(double) * (size_t)(L * H));
  double *att = malloc(sizeof(double) * (size_t)(L * qd));
  double *h1n = malloc(sizeof(double) * (size_t)(L * H));
  double *act = malloc(sizeof(double) * (size_t)(L * I));
  double *y = malloc(sizeof(double) * (size_t)(T * H));

  /* 1. plain stage by stage with fixed weights */
  qz_fwd_block_begin(f);
  for (int s = QZ_STAGE_QKV_IN; s <= QZ_STAGE_OUT; s++)
    QZT_OK(qz_fwd_run(f, &w, (qz_fwd_stage)s));
  for (int64_t win = 0; win < nwin; win++) {
    ref_block(c, &w, L, xd + win * L * H, xn, att, h1n, act, y + win * L * H);
    const double *want[QZ_STAGE_COUNT] = {xn, att, h1n, act, y + win * L * H};
    for (int s = QZ_STAGE_QKV_IN; s <= QZ_STAGE_OUT; s++) {
      int64_t nc = 0;
      const float *got = qz_fwd_stage_output(f, (qz_fwd_stage)s, &nc);
      double d = got ? maxdiff(got + win * L * nc, nc, want[s], nc, L) : 1e9;
      QZT_CHECK(d <= TOL_STAGE, "%s window %lld stage %s: max |diff| %.3g > %g",
                tag, (long long)win, qz_fwd_stage_name((qz_fwd_stage)s), d,
                TOL_STAGE);
    }
  }
  /* 2. commit makes the output the next block's input */
  QZT_OK(qz_fwd_block_commit(f));
  double d = maxdiff(qz_fwd_hidden(f), H, y, H, T);
  QZT_CHECK(d <= TOL_STAGE, "%s: committed hidden vs ref %.3g", tag, d);

  /* 3. true-sequential: weights of each group change after its inputs are
   * produced; the result must equal a forward with all changed weights. */
  float *x2 = qz_fwd_hidden(f);
  fill(x2, T * H, 1.0, 0.0);
  for (int64_t i = 0; i < T * H; i++) xd[i] = x2[i];
  qz_block_weights_copy(&w2, &w);
  qz_fwd_block_begin(f);
  static const int groups[4][3] = {{QZ_LIN_Q, QZ_LIN_K, QZ_LIN_V},
                                   {QZ_LIN_O, -1, -1},
                                   {QZ_LIN_GATE, QZ_LIN_UP, -1},
                                   {QZ_LIN_DOWN, -1, -1}};
  for (int s = 0; s < 4; s++) {
    QZT_OK(qz_fwd_run(f, &w2, (qz_fwd_stage)s));
    for (int j = 0; j < 3 && groups[s][j] >= 0; j++) {
      int l = groups[s][j];
      int64_t nel = (int64_t)(l == QZ_LIN_Q ? qd * H
                              : l <= QZ_LIN_V ? c->num_key_value_heads * c->head_dim * H
                              : l == QZ_LIN_O ? H * qd : I * H);
      /* a crude "quantization": round to a coarse grid */
      for (int64_t i = 0; i < nel; i++)
        w2.w[l][i] = rintf(w2.w[l][i] * 8.0f) / 8.0f;
    }
  }
  QZT_OK(qz_fwd_run(f, &w2, QZ_STAGE_OUT));
  for (int64_t win = 0; win < nwin; win++) {
    ref_block(c, &w2, L, xd + win * L * H, NULL, NULL, NULL, NULL,
              y + win * L * H);
  }
  int64_t nc;
  d = maxdiff(qz_fwd_stage_output(f, QZ_STAGE_OUT, &nc), H, y, H, T);
  QZT_CHECK(d <= TOL_STAGE, "%s: sequential stages with changed weights: %.3g",
            tag, d);

  /* 4. invalidate: change gate/up again, recompute from GATEUP stage on */
  for (int64_t i = 0; i < I * H; i++) w2.w[QZ_LIN_UP][i] *= 0.5f;
  qz_fwd_invalidate(f, QZ_STAGE_DOWN_IN);
  QZT_CHECK(qz_fwd_done(f) == QZ_STAGE_GATEUP_IN, "invalidate keeps earlier");
  QZT_OK(qz_fwd_run(f, &w2, QZ_STAGE_OUT));
  for (int64_t win = 0; win < nwin; win++)
    ref_block(c, &w2, L, xd + win * L * H, NULL, NULL, NULL, NULL,
              y + win * L * H);
  d = maxdiff(qz_fwd_stage_output(f, QZ_STAGE_OUT, &nc), H, y, H, T);
  QZT_CHECK(d <= TOL_STAGE, "%s: after invalidate: %.3g", tag, d);
  QZT_FAILS(qz_fwd_block_commit(f) == QZ_OK ? qz_fwd_block_commit(f) : -1,
            QZ_ERR_INTERNAL, "before the output stage");

  /* 5. head: logits and NLL of the committed stream */
  qz_head_weights hw = {.vocab = 37, .hidden = H};
  QZT_OK(qz_alloc_big(sizeof(float) * (size_t)(hw.vocab * H), "t", &hw.embed));
  QZT_OK(qz_alloc_big(sizeof(float) * (size_t)H, "t", &hw.norm));
  hw.lm_head = hw.embed;
  hw.tied = 1;
  fill(hw.embed, hw.vocab * H, 0.5, 0.0);
  fill(hw.norm, H, 0.1, 1.0);
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
  for (int64_t t = 0; t < T; t++) ids[t] = (int32_t)(qzt_rand_u64(&rng) % 37);
  QZT_OK(qz_fwd_embed(f, &hw, ids));
  for (int64_t i = 0; i < T * H; i++) xd[i] = qz_fwd_hidden(f)[i];
  float *lg = malloc(sizeof(float) * (size_t)(T * hw.vocab));
  QZT_OK(qz_fwd_logits(f, &hw, 0, T, lg));
  double *nll = calloc((size_t)nwin, sizeof(double));
  double lref[64], dl = 0;
  double *nll_ref = calloc((size_t)nwin, sizeof(double));
  for (int64_t t = 0; t < T; t++) {
    ref_logits(c, &hw, xd + t * H, lref);
    for (int64_t v = 0; v < hw.vocab; v++) {
      double e = fabs(lg[t * hw.vocab + v] - lref[v]);
      if (!(e <= dl)) dl = e;
    }
    if (t % L != L - 1) {
      double mx = -INFINITY, s = 0;
      for (int64_t v = 0; v < hw.vocab; v++) mx = lref[v] > mx ? lref[v] : mx;
      for (int64_t v = 0; v < hw.vocab; v++) s += exp(lref[v] - mx);
      nll_ref[t / L] += mx + log(s) - lref[ids[t + 1]];
    }
  }
  QZT_CHECK(dl <= TOL_LOGIT, "%s: logits max |diff| %.3g", tag, dl);
  QZT_OK(qz_fwd_nll(f, &hw, ids, 7, nll)); /* odd chunk crosses windows */
  for (int64_t win = 0; win < nwin; win++)
    QZT_REL(nll[win], nll_ref[win], TOL_NLL_REL, "window NLL");
  /* a window's NLL must not depend on the other windows of the rank */
  qz_fwd *f1 = NULL;
  QZT_OK(qz_fwd_create(c, 1, L, &f1));
  int64_t lastw = nwin - 1;
  memcpy(qz_fwd_hidden(f1), qz_fwd_hidden(f) + lastw * L * H,
         sizeof(float) * (size_t)(L * H));
  double nll1 = 0;
  QZT_OK(qz_fwd_nll(f1, &hw, ids + lastw * L, 7, &nll1));
  QZT_CHECK(nll1 == nll[lastw], "NLL of a window alone is bit-identical: %.17g vs %.17g",
            nll1, nll[lastw]);
  QZT_OK(qz_fwd_block(f1, &w));
  QZT_OK(qz_fwd_block(f, &w));
  QZT_CHECK(memcmp(qz_fwd_hidden(f1), qz_fwd_hidden(f) + lastw * L * H,
                   sizeof(float) * (size_t)(L * H)) == 0,
            "block output of a window alone is bit-identical");
  qz_fwd_destroy(&f1);

  /* batches of 2 windows: whole block and a staged batch give the same bits
   * as the single-batch workspace */
  if (nwin >= 2) {
    qz_fwd *fb = NULL;
    QZT_OK(qz_fwd_create_batched(c, nwin, L, 2, &fb));
    QZT_CHECK(qz_fwd_batch_max(fb) == 2, "batch of 2");
    fill(qz_fwd_hidden(f), T * H, 1.0, 0.0);
    memcpy(qz_fwd_hidden(fb), qz_fwd_hidden(f), sizeof(float) * (size_t)(T * H));
    /* staged, on windows [1, 2] of fb vs the same rows of f */
    qz_fwd_block_begin(f);
    QZT_OK(qz_fwd_run(f, &w, QZ_STAGE_OUT));
    QZT_OK(qz_fwd_batch(fb, nwin - 2, 2));
    QZT_OK(qz_fwd_run(fb, &w, QZ_STAGE_OUT));
    for (int s = QZ_STAGE_QKV_IN; s <= QZ_STAGE_OUT; s++) {
      int64_t n1, n2;
      const float *a = qz_fwd_stage_output(f, (qz_fwd_stage)s, &n1);
      const float *b = qz_fwd_stage_output(fb, (qz_fwd_stage)s, &n2);
      QZT_CHECK(n1 == n2 && memcmp(a + (nwin - 2) * L * n1, b,
                                   sizeof(float) * (size_t)(2 * L * n1)) == 0,
                "%s: batched stage %s bit-identical", tag,
                qz_fwd_stage_name((qz_fwd_stage)s));
    }
    QZT_FAILS(qz_fwd_batch(fb, 0, 3), QZ_ERR_ARG, "batches of at most 2");
    /* whole block over all batches (the last one partial for odd nwin) */
    QZT_OK(qz_fwd_block(f, &w));
    QZT_OK(qz_fwd_block(fb, &w));
    QZT_CHECK(memcmp(qz_fwd_hidden(f), qz_fwd_hidden(fb),
                     sizeof(float) * (size_t)(T * H)) == 0,
              "%s: batched block output bit-identical", tag);
    qz_fwd_destroy(&fb);
  }
  ids[3] = 99;
  QZT_FAILS(qz_fwd_embed(f, &hw, ids), QZ_ERR_ARG, "outside the vocabulary");

  free(ids); free(lg); free(nll); free(nll_ref);
  qz_head_weights_free(&hw);
  free(xd); free(xn); free(att); free(h1n); free(act); free(y);
  qz_fwd_destroy(&f);
  QZT_CHECK(f == NULL, "destroy NULLs");
  qz_block_weights_free(&w);
  qz_block_weights_free(&w2);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  /* GQA 4/2, head_dim 16 with nq*hd != hidden, all biases, llama3 RoPE
   * scaling with a short original context so that all three frequency
   * bands occur; L > QZ_FWD_QBLOCK to cross query blocks. */
  qz_model_config c = {0};
  c.hidden_size = 40;
  c.intermediate_size = 72;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 37;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000;
  c.rope_scaling.type = QZ_ROPE_LLAMA3;
  c.rope_scaling.factor = 8;
  c.rope_scaling.low_freq_factor = 1;
  c.rope_scaling.high_freq_factor = 4;
  c.rope_scaling.original_max_position_embeddings = 64;
  c.qkv_bias = c.o_bias = c.mlp_bias = 1;
  check_block(&c, 2, 300, "gqa+bias+llama3");

  /* Llama-2 shape: MHA, no bias, plain RoPE, short windows */
  qz_model_config c2 = c;
  c2.hidden_size = 32;
  c2.num_attention_heads = 4;
  c2.num_key_value_heads = 4;
  c2.head_dim = 8;
  c2.rope_scaling.type = QZ_ROPE_DEFAULT;
  c2.qkv_bias = c2.o_bias = c2.mlp_bias = 0;
  check_block(&c2, 3, 17, "mha");

  /* head_dim 12 (the fused small-head attention's partial group of 8
   * values) and 40 (above QZ_FWDK_ATTN_SMALL_HD: the sgemm path) */
  qz_model_config c3 = c2;
  c3.head_dim = 12;
  c3.num_key_value_heads = 2;
  check_block(&c3, 2, 37, "hd12");
  qz_model_config c4 = c;
  c4.head_dim = 40;
  check_block(&c4, 1, 270, "hd40");

  /* a rank with no windows */
  qz_fwd *f = NULL;
  QZT_OK(qz_fwd_create(&c2, 0, 17, &f));
  qz_block_weights w = {0};
  QZT_OK(qz_block_weights_alloc(&c2, &w));
  random_block(&c2, &w);
  QZT_OK(qz_fwd_block(f, &w));
  QZT_CHECK(qz_fwd_ntok(f) == 0, "empty workspace");
  qz_fwd_destroy(&f);
  qz_block_weights_free(&w);
  return qzt_finish("test_fwd_block");
}
