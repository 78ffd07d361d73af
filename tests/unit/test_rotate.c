/* Rotations (linalg/rotate.c): computational invariance of a rotated
 * block and head on random weights with massive activations, at sizes
 * that need Paley and random-orthogonal factors; the rotated weights are
 * really different; R3 with 16-bit KV keeps the scores; the per-token
 * quantizers against their definition. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/forward.h"
#include "mpiquant/mem.h"
#include "mpiquant/rotate.h"
#include "qz_test.h"

/* f32 forward with different rounding orders: the block output is O(1..100)
 * (massive channels 100x), relative 1e-5 of the largest value leaves room
 * for f32 rounding over a few hundred terms; a wrong fusion is O(1) off. */
#define TOL_REL_OUT 2e-5
/* logits: absolute, the brief's invariance bound */
#define TOL_LOGIT 1e-4

static uint64_t rng = 777;

static void fill(float *a, int64_t n, double scale, double offset) {
  for (int64_t i = 0; i < n; i++) a[i] = (float)(offset + scale * qzt_rand_normal(&rng));
}

static void random_block(const qz_model_config *c, qz_block_weights *w) {
  fill(w->attn_norm, c->hidden_size, 0.2, 1.0);
  fill(w->ffn_norm, c->hidden_size, 0.2, 1.0);
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t out, in;
    qz_linear_shape(c, (qz_linear)l, &out, &in);
    fill(w->w[l], out * in, (l == QZ_LIN_Q || l == QZ_LIN_K ? 2.5 : 1.0) / sqrt((double)in), 0);
  }
}

static double maxabs(const float *a, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
  return m;
}

static double maxdiff(const float *a, const float *b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= m)) m = d;
  }
  return m;
}

/* One block + logits of the original and of the rotated model. */
static void check_invariance(int64_t H, int64_t I, int64_t nq, int64_t nkv, int64_t hd,
                             int kv_bits, int o_heads, const char *tag) {
  qz_model_config c = {.hidden_size = H, .intermediate_size = I, .num_hidden_layers = 1,
                       .num_attention_heads = nq, .num_key_value_heads = nkv, .head_dim = hd,
                       .vocab_size = 40, .max_position_embeddings = 64, .rms_norm_eps = 1e-5,
                       .rope_theta = 10000.0};
  const int64_t nwin = 2, L = 24, T = nwin * L, V = c.vocab_size;
  qz_block_weights w = {0}, wr = {0};
  qz_fwd *f = NULL, *g = NULL;
  qz_rot *rot = NULL;
  float *x0 = NULL, *head = NULL, *norm = NULL, *la = NULL, *lb = NULL, *ya = NULL;
  QZT_OK(qz_block_weights_alloc(&c, &w));
  QZT_OK(qz_block_weights_alloc(&c, &wr));
  random_block(&c, &w);
  w.layer = wr.layer = 0;
  qz_block_weights_copy(&wr, &w);
  QZT_OK(qz_alloc((size_t)(T * H), 4, "x", &x0));
  QZT_OK(qz_alloc((size_t)(V * H), 4, "head", &head));
  QZT_OK(qz_alloc((size_t)H, 4, "norm", &norm));
  QZT_OK(qz_alloc((size_t)(T * V), 4, "logits", &la));
  QZT_OK(qz_alloc((size_t)(T * V), 4, "logits", &lb));
  QZT_OK(qz_alloc((size_t)(T * H), 4, "out", &ya));
  fill(x0, T * H, 1.0, 0.0);
  for (int64_t t = 0; t < T; t++) { /* massive activations in two channels */
    x0[t * H + 1] *= 100.0f;
    x0[t * H + H / 2] = -60.0f;
  }
  fill(head, V * H, 1.0 / sqrt((double)H), 0.0);
  fill(norm, H, 0.2, 1.0);
  qz_head_weights hw = {.vocab = V, .hidden = H, .lm_head = head, .norm = norm};

  qz_rot_params p = {.kind = QZ_ROT_HADAMARD, .seed = 5, .act_clip = 1.0, .kv_bits = kv_bits,
                     .o_heads = o_heads};
  QZT_OK(qz_rot_create(&c, &p, &rot));
  qz_rot_fuse_block(rot, &wr);
  QZT_CHECK(maxdiff(wr.w[QZ_LIN_DOWN], w.w[QZ_LIN_DOWN], H * I) > 1e-3,
            "%s: the fused down_proj equals the original", tag);
  QZT_CHECK(wr.attn_norm[0] == 1.0f && wr.ffn_norm[H - 1] == 1.0f, "%s: norms not folded", tag);
  if (o_heads) { /* the across-heads rotation really changes W_o */
    qz_block_weights w0 = {0};
    qz_rot *r0 = NULL;
    qz_rot_params p0 = p;
    p0.o_heads = 0;
    QZT_OK(qz_block_weights_alloc(&c, &w0));
    qz_block_weights_copy(&w0, &w);
    QZT_OK(qz_rot_create(&c, &p0, &r0));
    qz_rot_fuse_block(r0, &w0);
    QZT_CHECK(maxdiff(w0.w[QZ_LIN_O], wr.w[QZ_LIN_O], H * nq * hd) > 1e-3,
              "%s: o_heads left W_o as without it", tag);
    qz_rot_destroy(&r0);
    qz_block_weights_free(&w0);
  }

  /* original */
  QZT_OK(qz_fwd_create(&c, nwin, L, &f));
  memcpy(qz_fwd_hidden(f), x0, (size_t)(T * H) * 4);
  QZT_OK(qz_fwd_block(f, &w));
  memcpy(ya, qz_fwd_hidden(f), (size_t)(T * H) * 4);
  QZT_OK(qz_fwd_logits(f, &hw, 0, T, la));
  /* rotated: x Q1 in, R4 (and R3 + KV) online, x' Q1^T before the head */
  QZT_OK(qz_fwd_create(&c, nwin, L, &g));
  memcpy(qz_fwd_hidden(g), x0, (size_t)(T * H) * 4);
  qz_rot_stream(rot, qz_fwd_hidden(g), T, 0);
  qz_act_hook ah = qz_rot_act_hook(rot, 0);
  qz_model_hook mh = qz_rot_model_hook(rot);
  QZT_OK(qz_fwd_set_act_hook(g, &ah));
  qz_fwd_set_model_hook(g, &mh);
  QZT_OK(qz_fwd_block(g, &wr));
  qz_rot_stream(rot, qz_fwd_hidden(g), T, 1);
  double scale = maxabs(ya, T * H);
  double dout = maxdiff(qz_fwd_hidden(g), ya, T * H);
  QZT_CHECK(dout <= TOL_REL_OUT * scale, "%s: block output differs by %.3g (scale %.3g)", tag,
            dout, scale);
  QZT_OK(qz_fwd_logits(g, &hw, 0, T, lb));
  double dl = maxdiff(la, lb, T * V);
  QZT_CHECK(dl <= TOL_LOGIT, "%s: logits differ by %.3g", tag, dl);
  printf("%s (%s): block out %.2g of %.3g, logits %.2g\n", tag, qz_rot_describe(rot), dout,
         scale, dl);
  qz_rot_destroy(&rot);
  QZT_CHECK(rot == NULL, "destroy NULLs the pointer");
  qz_fwd_destroy(&f);
  qz_fwd_destroy(&g);
  qz_block_weights_free(&w);
  qz_block_weights_free(&wr);
  qz_free(&x0);
  qz_free(&head);
  qz_free(&norm);
  qz_free(&la);
  qz_free(&lb);
  qz_free(&ya);
}

/* The per-token quantizers against their definition (rotate.h). */
static void check_quantizers(void) {
  enum { N = 37 };
  float x[N], y[N];
  fill(x, N, 1.0, 0.3);
  x[5] = 4.0f;
  for (int asym = 0; asym < 2; asym++)
    for (int ci = 0; ci < 2; ci++) {
      double clip = ci ? 0.8 : 1.0;
      qz_act_fake_quant_ex(x, 1, N, 4, asym, clip, y);
      double lo = 0, hi = 0;
      for (int i = 0; i < N; i++) lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
      double d = asym ? clip * (hi - lo) / 15.0 : clip * fmax(hi, -lo) / 7.0;
      double z = asym ? rint(-clip * lo / d) : 0;
      double qlo = asym ? 0 : -7, qhi = asym ? 15 : 7;
      int ok = 1, levels = 0;
      for (int i = 0; i < N; i++) {
        double q = fmin(fmax(rint(x[i] / d) + z, qlo), qhi);
        double want = (q - z) * d;
        ok &= fabs(y[i] - want) <= 1e-5 * fmax(1.0, fabs(want));
        levels += fabs(y[i] - x[i]) <= d / 2 + 1e-6;
      }
      QZT_CHECK(ok, "quantizer asym %d clip %g differs from its definition", asym, clip);
      QZT_CHECK(clip < 1 || levels == N, "asym %d: error above half a step without clipping",
                asym);
      QZT_CHECK(clip == 1 || fabs(y[5] - x[5]) > 0.1, "clip %g did not clip the max", clip);
    }
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  /* powers of two; H = 48 (H_12 (x) H_4, Paley I) with I = 172 (random
   * orthogonal 43 (x) H_4) and GQA */
  check_invariance(64, 128, 8, 4, 8, 0, 0, "pow2");
  check_invariance(64, 128, 8, 4, 8, 0, 1, "pow2, o heads");
  check_invariance(48, 172, 6, 3, 8, 0, 1, "paley+random, o heads");
  check_invariance(48, 172, 6, 3, 8, 16, 1, "paley+random, o heads, R3 + KV16");
  check_quantizers();
  return qzt_finish("rotate");
}
