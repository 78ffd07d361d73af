/* Independent double-precision Llama forward for the tests: written
 * token by token from the Hugging Face LlamaModel definition (RMSNorm,
 * rotate_half RoPE with angles from a double inv_freq, GQA with an explicit
 * causal loop, SwiGLU), sharing no code with shard/forward.c. */
#ifndef QZ_TEST_FWD_REF_H
#define QZ_TEST_FWD_REF_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/config.h"
#include "mpiquant/model.h"

/* HF _compute_llama3_parameters, vectorised form (where / is_medium mask),
 * or plain theta^(-2i/d); linear scaling divides by factor. */
static void ref_inv_freq(const qz_model_config *c, double *inv) {
  int64_t hd = c->head_dim, half = hd / 2;
  for (int64_t i = 0; i < half; i++) {
    double base = pow(c->rope_theta, (double)(2 * i) / (double)hd);
    inv[i] = 1.0 / base;
  }
  if (c->rope_scaling.type == QZ_ROPE_LINEAR) {
    for (int64_t i = 0; i < half; i++) inv[i] = inv[i] / c->rope_scaling.factor;
  } else if (c->rope_scaling.type == QZ_ROPE_LLAMA3) {
    double factor = c->rope_scaling.factor;
    double lff = c->rope_scaling.low_freq_factor;
    double hff = c->rope_scaling.high_freq_factor;
    double old = (double)c->rope_scaling.original_max_position_embeddings;
    double low_wl = old / lff, high_wl = old / hff;
    for (int64_t i = 0; i < half; i++) {
      double wl = 2.0 * 3.14159265358979323846 / inv[i];
      double scaled = wl > low_wl ? inv[i] / factor : inv[i];
      double smooth = (old / wl - lff) / (hff - lff);
      double smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
      int medium = !(wl < high_wl) && !(wl > low_wl);
      inv[i] = medium ? smoothed : scaled;
    }
  }
}

static void ref_rmsnorm(double *y, const double *x, const float *w, int64_t n,
                        double eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
  double r = 1.0 / sqrt(ss / (double)n + eps);
  for (int64_t i = 0; i < n; i++) y[i] = x[i] * r * (double)w[i];
}

/* y[out] = W[out, in] x[in] + b */
static void ref_matvec(double *y, const float *W, const float *b,
                       const double *x, int64_t out, int64_t in) {
  for (int64_t o = 0; o < out; o++) {
    double s = b ? (double)b[o] : 0.0;
    for (int64_t i = 0; i < in; i++) s += (double)W[o * in + i] * x[i];
    y[o] = s;
  }
}

/* rotate_half RoPE on one head vector at position pos */
static void ref_rope(double *v, int64_t hd, int64_t pos, const double *inv) {
  int64_t half = hd / 2;
  for (int64_t i = 0; i < half; i++) {
    double a = (double)pos * inv[i], c = cos(a), s = sin(a);
    double x0 = v[i], x1 = v[i + half];
    v[i] = x0 * c - x1 * s;
    v[i + half] = x1 * c + x0 * s;
  }
}

/* Stage outputs of one block over one window of L tokens (x [L, H] input).
 * Any output pointer may be NULL. */
static void ref_block(const qz_model_config *c, const qz_block_weights *w,
                      int64_t L, const double *x, double *xn_out,
                      double *att_out, double *h1n_out, double *act_out,
                      double *y_out) {
  int64_t H = c->hidden_size, I = c->intermediate_size;
  int64_t nq = c->num_attention_heads, nkv = c->num_key_value_heads;
  int64_t hd = c->head_dim, qd = nq * hd, kvd = nkv * hd;
  double *xn = calloc((size_t)(L * H), sizeof(double));
  double *q = calloc((size_t)(L * qd), sizeof(double));
  double *k = calloc((size_t)(L * kvd), sizeof(double));
  double *v = calloc((size_t)(L * kvd), sizeof(double));
  double *att = calloc((size_t)(L * qd), sizeof(double));
  double *p = calloc((size_t)L, sizeof(double));
  double *h1 = calloc((size_t)H, sizeof(double));
  double *h1n = calloc((size_t)H, sizeof(double));
  double *gg = calloc((size_t)I, sizeof(double));
  double *uu = calloc((size_t)I, sizeof(double));
  double *tmp = calloc((size_t)H, sizeof(double));
  double inv[512];
  ref_inv_freq(c, inv);
  for (int64_t t = 0; t < L; t++) {
    ref_rmsnorm(xn + t * H, x + t * H, w->attn_norm, H, c->rms_norm_eps);
    ref_matvec(q + t * qd, w->w[QZ_LIN_Q], w->b[QZ_LIN_Q], xn + t * H, qd, H);
    ref_matvec(k + t * kvd, w->w[QZ_LIN_K], w->b[QZ_LIN_K], xn + t * H, kvd, H);
    ref_matvec(v + t * kvd, w->w[QZ_LIN_V], w->b[QZ_LIN_V], xn + t * H, kvd, H);
    for (int64_t h = 0; h < nq; h++) ref_rope(q + t * qd + h * hd, hd, t, inv);
    for (int64_t h = 0; h < nkv; h++) ref_rope(k + t * kvd + h * hd, hd, t, inv);
  }
  for (int64_t h = 0; h < nq; h++) {
    int64_t g = h / (nq / nkv);
    for (int64_t i = 0; i < L; i++) {
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j <= i; j++) {
        double s = 0;
        for (int64_t d = 0; d < hd; d++)
          s += q[i * qd + h * hd + d] * k[j * kvd + g * hd + d];
        p[j] = s / sqrt((double)hd);
        if (p[j] > mx) mx = p[j];
      }
      for (int64_t j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
      for (int64_t d = 0; d < hd; d++) {
        double o = 0;
        for (int64_t j = 0; j <= i; j++) o += p[j] / sum * v[j * kvd + g * hd + d];
        att[i * qd + h * hd + d] = o;
      }
    }
  }
  for (int64_t t = 0; t < L; t++) {
    ref_matvec(tmp, w->w[QZ_LIN_O], w->b[QZ_LIN_O], att + t * qd, H, qd);
    for (int64_t i = 0; i < H; i++) h1[i] = x[t * H + i] + tmp[i];
    ref_rmsnorm(h1n, h1, w->ffn_norm, H, c->rms_norm_eps);
    ref_matvec(gg, w->w[QZ_LIN_GATE], w->b[QZ_LIN_GATE], h1n, I, H);
    ref_matvec(uu, w->w[QZ_LIN_UP], w->b[QZ_LIN_UP], h1n, I, H);
    for (int64_t i = 0; i < I; i++) gg[i] = gg[i] / (1.0 + exp(-gg[i])) * uu[i];
    ref_matvec(tmp, w->w[QZ_LIN_DOWN], w->b[QZ_LIN_DOWN], gg, H, I);
    if (xn_out) memcpy(xn_out + t * H, xn + t * H, (size_t)H * sizeof(double));
    if (att_out) memcpy(att_out + t * qd, att + t * qd, (size_t)qd * sizeof(double));
    if (h1n_out) memcpy(h1n_out + t * H, h1n, (size_t)H * sizeof(double));
    if (act_out) memcpy(act_out + t * I, gg, (size_t)I * sizeof(double));
    if (y_out)
      for (int64_t i = 0; i < H; i++) y_out[t * H + i] = h1[i] + tmp[i];
  }
  free(xn); free(q); free(k); free(v); free(att); free(p);
  free(h1); free(h1n); free(gg); free(uu); free(tmp);
}

/* logits [vocab] of one hidden row */
static void ref_logits(const qz_model_config *c, const qz_head_weights *hw,
                       const double *x, double *logits) {
  int64_t H = c->hidden_size;
  double *xn = calloc((size_t)H, sizeof(double));
  ref_rmsnorm(xn, x, hw->norm, H, c->rms_norm_eps);
  ref_matvec(logits, hw->lm_head, NULL, xn, hw->vocab, H);
  free(xn);
}

#endif
