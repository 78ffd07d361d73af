/* SmoothQuant W8A8: smoothing factors, folding and the int8 weight
 * quantizer (mit-han-lab/smoothquant smooth.py + fake_quant.py semantics). */
#include "mpiquant/smoothquant.h"

#include <math.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/mem.h"

float qz_sq_powf(float x, double e) {
  if (e == 0.0) return 1.0f;
  if (e == 1.0) return x;
  if (e == 0.5) return sqrtf(x);
  return powf(x, (float)e);
}

void qz_sq_smooth_factors(int64_t n, const float *a, int nw,
                          const float *const *ws, const int64_t *rows,
                          double alpha, float *s) {
  for (int64_t j = 0; j < n; j++) {
    float wm = 0.0f;
    for (int k = 0; k < nw; k++)
      for (int64_t i = 0; i < rows[k]; i++) {
        float v = fabsf(ws[k][i * n + j]);
        wm = v > wm ? v : wm;
      }
    wm = wm < 1e-5f ? 1e-5f : wm;
    float v = qz_sq_powf(a[j], alpha) / qz_sq_powf(wm, 1.0 - alpha);
    s[j] = v < 1e-5f ? 1e-5f : v;
  }
}

void qz_sq_fold(int64_t n, const float *s, float *norm, int nw, float *const *ws,
                const int64_t *rows) {
  for (int64_t j = 0; j < n; j++) norm[j] /= s[j];
  for (int k = 0; k < nw; k++)
    for (int64_t i = 0; i < rows[k]; i++)
      for (int64_t j = 0; j < n; j++) ws[k][i * n + j] *= s[j];
}

void qz_sq_quantize_rows(int64_t rows, int64_t in, const float *w,
                         uint8_t *codes, float *scale, float *zero, float *q) {
  for (int64_t r = 0; r < rows; r++) {
    const float *wr = w + r * in;
    float mx = 0.0f;
    for (int64_t j = 0; j < in; j++) mx = fabsf(wr[j]) > mx ? fabsf(wr[j]) : mx;
    float d = (mx < 1e-5f ? 1e-5f : mx) / 127.0f;
    scale[r] = d;
    zero[r] = 128.0f;
    for (int64_t j = 0; j < in; j++) {
      float c = rintf(wr[j] / d); /* |c| <= 127 */
      codes[r * in + j] = (uint8_t)(c + 128.0f);
      if (q) q[r * in + j] = c * d;
    }
  }
}

static int sq_setup(const qz_method_opts *o, void **state) {
  QZ_CHECK(o->spec.bits == 8 && o->spec.groupsize == -1 && o->spec.sym, QZ_ERR_ARG,
           "smoothquant quantizes weights per output channel, symmetric, 8 bits "
           "(got %d bits, group %lld, %s)", o->spec.bits, (long long)o->spec.groupsize,
           o->spec.sym ? "sym" : "asym");
  *state = NULL;
  return QZ_OK;
}

static int sq_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  (void)state;
  QZ_CALL(qz_layer_check_finite(L));
  qz_sq_quantize_rows(L->nrows, L->in_features, L->w, res->codes, res->scale, res->zero,
                      res->q);
  qz_layer_result_plain(L, -1, res); /* per output channel */
  return QZ_OK;
}

static void sq_destroy(void **state) { *state = NULL; }

const qz_method_ops qz_method_smoothquant = {.name = "smoothquant",
                                             .needs_hessian = 0,
                                             .setup = sq_setup,
                                             .quantize_layer = sq_layer,
                                             .destroy = sq_destroy};
