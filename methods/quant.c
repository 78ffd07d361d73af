/* The reference min/max quantizer in f32 (rules 11-13) and RTN (rule 16). */
#include "mpiquant/quant.h"

#include <math.h>

#include "mpiquant/error.h"

int64_t qz_quant_ngroups(const qz_quant_spec *s, int64_t in) {
  return s->groupsize <= 0 ? 1 : (in + s->groupsize - 1) / s->groupsize;
}

int qz_quant_spec_check(const qz_quant_spec *s) {
  QZ_CHECK(s->bits >= 2 && s->bits <= 8, QZ_ERR_ARG,
           "bits must be in [2, 8], got %d", s->bits);
  QZ_CHECK(s->groupsize == -1 || s->groupsize >= 1, QZ_ERR_ARG,
           "group size must be -1 (per channel) or >= 1, got %lld",
           (long long)s->groupsize);
  return QZ_OK;
}

void qz_quant_params(const float *x, int64_t n, int64_t stride, int bits,
                     int sym, float *scale, float *zero) {
  const float maxq = (float)((1 << bits) - 1);
  float mn = 0.0f, mx = 0.0f; /* the range always contains 0 */
  for (int64_t i = 0; i < n; i++) {
    float v = x[i * stride];
    if (v < mn) mn = v;
    if (v > mx) mx = v;
  }
  if (sym) {
    float a = fabsf(mn);
    mx = a > mx ? a : mx;
    if (mn < 0.0f) mn = -mx;
  }
  if (mn == 0.0f && mx == 0.0f) {
    mn = -1.0f;
    mx = 1.0f;
  }
  float s = (mx - mn) / maxq;
  *scale = s;
  *zero = sym ? (maxq + 1.0f) / 2.0f : rintf(-mn / s);
}

void qz_quant_params_mse(const float *x, int64_t n, int bits, int sym, float *scale,
                         float *zero) {
  enum { GRID = 100, STEPS = 80 }; /* p = 1 - i / GRID, i < STEPS (maxshrink 0.8) */
  const float maxq = (float)((1 << bits) - 1);
  qz_quant_params(x, n, 1, bits, sym, scale, zero);
  /* the range exactly as qz_quant_params forms it (p = 1 reproduces it) */
  float mn = 0.0f, mx = 0.0f;
  for (int64_t i = 0; i < n; i++) {
    mn = x[i] < mn ? x[i] : mn;
    mx = x[i] > mx ? x[i] : mx;
  }
  if (sym) {
    float a = fabsf(mn) > mx ? fabsf(mn) : mx;
    mx = a;
    if (mn < 0.0f) mn = -a;
  }
  if (mn == 0.0f && mx == 0.0f) return;
  double best = HUGE_VAL;
  for (int i = 0; i < STEPS; i++) {
    const float p = 1.0f - (float)i / (float)GRID;
    const float lo = p * mn, hi = p * mx, s = (hi - lo) / maxq;
    const float z = sym ? (maxq + 1.0f) / 2.0f : rintf(-lo / s);
    double err = 0;
    for (int64_t k = 0; k < n; k++) {
      float q;
      qz_quant_one(x[k], s, z, maxq, &q);
      err += (double)powf(fabsf(q - x[k]), 2.4f);
    }
    if (err < best) {
      best = err;
      *scale = s;
      *zero = z;
    }
  }
}

int qz_rtn_quantize(const qz_quant_spec *s, int64_t rows, int64_t in,
                    const float *w, uint8_t *codes, float *q, float *scale,
                    float *zero, int32_t *g_idx) {
  QZ_CALL(qz_quant_spec_check(s));
  const int64_t g = s->groupsize <= 0 ? in : s->groupsize;
  const int64_t ng = qz_quant_ngroups(s, in);
  const float maxq = (float)((1 << s->bits) - 1);
  for (int64_t r = 0; r < rows; r++) {
    const float *wr = w + r * in;
    for (int64_t k = 0; k < ng; k++) {
      int64_t c0 = k * g, c1 = c0 + g < in ? c0 + g : in;
      float sc, z;
      qz_quant_params(wr + c0, c1 - c0, 1, s->bits, s->sym, &sc, &z);
      scale[r * ng + k] = sc;
      zero[r * ng + k] = z;
      for (int64_t c = c0; c < c1; c++) {
        float qq;
        codes[r * in + c] = qz_quant_one(wr[c], sc, z, maxq, &qq);
        if (q) q[r * in + c] = qq;
      }
    }
  }
  if (g_idx)
    for (int64_t j = 0; j < in; j++)
      g_idx[j] = s->groupsize <= 0 ? 0 : (int32_t)(j / s->groupsize);
  return QZ_OK;
}

void qz_storage_bits_uniform(const qz_quant_spec *s, int64_t out, int64_t in,
                             qz_storage_bits *b) {
  *b = (qz_storage_bits){.out = out, .in = in, .dense = out * in, .code_bits = s->bits,
                         .nstats = out * qz_quant_ngroups(s, in), .scale_bits = 16.0,
                         .zero_bits = s->sym ? 0.0 : s->bits,
                         .outlier_bits = QZ_OUTLIER_BITS};
}

double qz_layer_bits_per_param(const qz_storage_bits *b) {
  const double params = (double)b->out * (double)b->in;
  if (params <= 0) return 0.0;
  double bits = (double)b->dense * b->code_bits +
                (double)b->nstats * (b->scale_bits + b->zero_bits) + b->extra_bits +
                (double)b->noutliers * b->outlier_bits;
  return bits / params;
}
