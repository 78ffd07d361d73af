/* NF4 / FP4 codebooks with blockwise absmax (see mpiquant/codebook.h). */
#include "mpiquant/codebook.h"

#include <math.h>
#include <string.h>

/* QLoRA's NF4 values as published (float32) */
static const float k_nf4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

/* E2M1 magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6} / 6, both signs, one zero */
static const float k_fp4[15] = {
    -1.0f, -4.0f / 6, -3.0f / 6, -2.0f / 6, -1.5f / 6, -1.0f / 6, -0.5f / 6, 0.0f,
    0.5f / 6, 1.0f / 6, 1.5f / 6, 2.0f / 6, 3.0f / 6, 4.0f / 6, 1.0f};

const float *qz_codebook_values(qz_codebook cb, int *n) {
  if (cb == QZ_CODEBOOK_NF4) {
    *n = 16;
    return k_nf4;
  }
  if (cb == QZ_CODEBOOK_FP4) {
    *n = 15;
    return k_fp4;
  }
  *n = 0;
  return NULL;
}

qz_codebook qz_codebook_from_name(const char *name) {
  if (name && strcmp(name, "nf4") == 0) return QZ_CODEBOOK_NF4;
  if (name && strcmp(name, "fp4") == 0) return QZ_CODEBOOK_FP4;
  return (qz_codebook)0;
}

uint8_t qz_codebook_nearest(const float *vals, int n, float y) {
  /* binary search for the last value <= y, then compare with the next:
   * y > midpoint -> upper (an exact midpoint stays lower) */
  int lo = 0, hi = n - 1;
  if (!(y > vals[0])) return 0; /* also NaN */
  if (y >= vals[n - 1]) return (uint8_t)(n - 1);
  while (hi - lo > 1) {
    int mid = (lo + hi) / 2;
    if (vals[mid] <= y) lo = mid;
    else hi = mid;
  }
  float m = (vals[lo] + vals[hi]) * 0.5f;
  return (uint8_t)(y > m ? hi : lo);
}

void qz_codebook_block(qz_codebook cb, const float *x, int64_t n, int64_t stride,
                       float *absmax, uint8_t *codes, float *q) {
  int nv = 0;
  const float *v = qz_codebook_values(cb, &nv);
  float a = 0;
  for (int64_t i = 0; i < n; i++) a = fmaxf(a, fabsf(x[i * stride]));
  *absmax = a;
  uint8_t zero = qz_codebook_nearest(v, nv, 0.0f);
  for (int64_t i = 0; i < n; i++) {
    uint8_t c = a > 0 ? qz_codebook_nearest(v, nv, x[i * stride] / a) : zero;
    codes[i] = c;
    if (q) q[i * stride] = a * v[c];
  }
}
