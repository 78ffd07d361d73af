/* FP8 E4M3 / E5M2 <-> f32 (OCP 8-bit floating point spec v1.0).
 *
 * Both encoders work on the magnitude in double (every f32 and every fp8
 * value is exact there, and scaling by powers of two is exact): split
 * |x| = m * 2^e with m in [1, 2), round m to the format's mantissa bits with
 * rint (the default rounding mode: nearest, ties to even), carry into the
 * exponent when m rounds up to 2; below the smallest normal the value is a
 * multiple of the subnormal step and is rounded the same way. */
#include "mpiquant/fp8.h"

#include <math.h>

/* Decode a finite code of a format with `mbits` mantissa bits and `bias`. */
static float decode_finite(unsigned e, unsigned m, int mbits, int bias) {
  double v = e == 0 ? ldexp((double)m, 1 - bias - mbits)                      /* subnormal */
                    : ldexp(1.0 + ldexp((double)m, -mbits), (int)e - bias);  /* normal */
  return (float)v;
}

float qz_fp8_e4m3_to_f32(uint8_t v) {
  unsigned s = v >> 7, e = (v >> 3) & 0xF, m = v & 0x7;
  if (e == 0xF && m == 0x7) return s ? -NAN : NAN;
  float f = decode_finite(e, m, 3, 7);
  return s ? -f : f;
}

float qz_fp8_e5m2_to_f32(uint8_t v) {
  unsigned s = v >> 7, e = (v >> 2) & 0x1F, m = v & 0x3;
  if (e == 0x1F) return m ? (s ? -NAN : NAN) : (s ? -INFINITY : INFINITY);
  float f = decode_finite(e, m, 2, 15);
  return s ? -f : f;
}

/* |x| (finite, >= 0) -> (exponent field, mantissa field) with RNE, or
 * saturation to (emax_field, mmax) when above the largest finite value. */
static unsigned encode_mag(double a, int mbits, int bias, unsigned emax_field, unsigned mmax) {
  const int emin = 1 - bias; /* exponent of the smallest normal */
  const double top = ldexp(1.0 + ldexp((double)mmax, -mbits), (int)emax_field - bias);
  if (a >= top) return emax_field << mbits | mmax; /* beyond max (or exactly max) */
  unsigned e_field, m_field;
  if (a < ldexp(1.0, emin)) { /* subnormal range: multiples of 2^(emin - mbits) */
    double q = rint(ldexp(a, mbits - emin));
    if (q >= ldexp(1.0, mbits)) return 1u << mbits; /* rounds up to the smallest normal */
    return (unsigned)q;
  }
  int e;
  double f = frexp(a, &e); /* a = f * 2^e, f in [0.5, 1) */
  e -= 1;                  /* a = (2f) * 2^e, 2f in [1, 2) */
  double q = rint(ldexp(f, mbits + 1)); /* mantissa incl. the hidden bit, in [2^mbits, 2^(mbits+1)] */
  if (q >= ldexp(1.0, mbits + 1)) {
    q = ldexp(1.0, mbits);
    e += 1;
  }
  e_field = (unsigned)(e + bias);
  m_field = (unsigned)q - (1u << mbits);
  if (e_field > emax_field || (e_field == emax_field && m_field > mmax))
    return emax_field << mbits | mmax; /* rounded past max: saturate */
  return e_field << mbits | m_field;
}

uint8_t qz_f32_to_fp8_e4m3(float x) {
  unsigned s = signbit(x) ? 0x80u : 0u;
  if (isnan(x)) return (uint8_t)(s | 0x7F);
  double a = fabs((double)x); /* inf saturates below */
  return (uint8_t)(s | encode_mag(a, 3, 7, 0xF, 0x6));
}

uint8_t qz_f32_to_fp8_e5m2(float x) {
  unsigned s = signbit(x) ? 0x80u : 0u;
  if (isnan(x)) return (uint8_t)(s | 0x7F);
  double a = fabs((double)x);
  return (uint8_t)(s | encode_mag(a, 2, 15, 0x1E, 0x3));
}

void qz_fp8_e4m3_decode(const uint8_t *in, size_t n, float scale, float *out) {
  float t[256];
  for (int i = 0; i < 256; i++) t[i] = qz_fp8_e4m3_to_f32((uint8_t)i);
  for (size_t i = 0; i < n; i++) out[i] = t[in[i]] * scale;
}

void qz_fp8_e5m2_decode(const uint8_t *in, size_t n, float scale, float *out) {
  float t[256];
  for (int i = 0; i < 256; i++) t[i] = qz_fp8_e5m2_to_f32((uint8_t)i);
  for (size_t i = 0; i < n; i++) out[i] = t[in[i]] * scale;
}

static float absmax_f(const float *x, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
  return m;
}

static void fq_div(const float *x, size_t n, float s, float *y) {
  for (size_t j = 0; j < n; j++) y[j] = qz_fp8_e4m3_to_f32(qz_f32_to_fp8_e4m3(x[j] / s)) * s;
}

void qz_fp8_e4m3_act_dynamic(const float *x, size_t nrows, size_t n, size_t group,
                             float *y) {
  const float mn = 1.0f / (QZ_FP8_E4M3_MAX * 512.0f);
  for (size_t r = 0; r < nrows; r++) {
    const float *xr = x + r * n;
    float *yr = y + r * n;
    if (group == 0) {
      float s = absmax_f(xr, n) / QZ_FP8_E4M3_MAX;
      fq_div(xr, n, s > mn ? s : mn, yr);
      continue;
    }
    for (size_t c0 = 0; c0 < n; c0 += group) {
      size_t len = n - c0 < group ? n - c0 : group;
      float m = absmax_f(xr + c0, len);
      fq_div(xr + c0, len, (m > 1e-10f ? m : 1e-10f) / QZ_FP8_E4M3_MAX, yr + c0);
    }
  }
}

void qz_fp8_e4m3_act_static(const float *x, size_t count, float s, float *y) {
  const float inv = 1.0f / s;
  for (size_t i = 0; i < count; i++)
    y[i] = qz_fp8_e4m3_to_f32(qz_f32_to_fp8_e4m3(x[i] * inv)) * s;
}
