/* The reference quantizer's edge rules (golden README 11-13, 16) on
 * hand-computed values: all-zero groups, round half to even, sym clipping of
 * non-negative rows, short last group, g_idx; the --w-clip range search
 * against a brute force of its definition. */
#include <math.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/quant.h"
#include "qz_test.h"

/* sum |Q(x) - x|^2.4 of row x under (scale, zero), from the definition
 * (round half to even, clamp to [0, maxq]) in double */
static double row_err(const float *x, int n, int bits, double s, double z) {
  double maxq = (double)((1 << bits) - 1), e = 0;
  for (int i = 0; i < n; i++) {
    double c = fmin(fmax(nearbyint((double)x[i] / s) + z, 0), maxq);
    e += pow(fabs(s * (c - z) - x[i]), 2.4);
  }
  return e;
}

/* --w-clip (qz_quant_params_mse): among the ranges [p min, p max], p = 1 -
 * i/100, i < 80, the one of the smallest error (brute force here), never
 * worse than min/max; a row without an outlier keeps p = 1 nearly. */
static void check_mse_clip(void) {
  float x[64];
  for (int i = 0; i < 64; i++) x[i] = (float)sin(0.37 * i + 0.1) * 0.05f;
  x[17] = 0.6f; /* one outlier: clipping it is cheaper than a coarse grid */
  for (int sym = 0; sym < 2; sym++) {
    float s0, z0, s1, z1;
    qz_quant_params(x, 64, 1, 4, sym, &s0, &z0);
    qz_quant_params_mse(x, 64, 4, sym, &s1, &z1);
    double maxq = 15, mn = 0, mx = 0, best = HUGE_VAL, bs = 0;
    for (int i = 0; i < 64; i++) mn = fmin(mn, x[i]), mx = fmax(mx, x[i]);
    if (sym) mx = fmax(mx, -mn), mn = mn < 0 ? -mx : 0;
    for (int i = 0; i < 80; i++) {
      double p = 1 - i / 100.0, lo = (float)(p * mn), hi = (float)(p * mx);
      double s = (hi - lo) / maxq, z = sym ? 8 : nearbyint(-lo / s);
      double e = row_err(x, 64, 4, s, z);
      if (e < best * (1 - 1e-6)) best = e, bs = s;
    }
    double e1 = row_err(x, 64, 4, s1, z1), e0 = row_err(x, 64, 4, s0, z0);
    QZT_CHECK(e1 <= e0, "sym %d: the clipped range is worse than min/max (%g > %g)", sym, e1, e0);
    QZT_CHECK(fabs(e1 - best) <= 1e-4 * best, "sym %d: error %g, brute-force minimum %g", sym,
              e1, best);
    QZT_CHECK(s1 < s0 && fabs(s1 - bs) <= 0.02 * bs, "sym %d: scale %g (min/max %g, "
              "brute force %g)", sym, s1, s0, bs);
  }
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  check_mse_clip();
  float sc, z;
  /* rule 13: all-zero -> [-1, 1]; asym zero points from f32 rounding */
  const float zero_asym[] = {2, 3, 7, 127}, zero_sym[] = {2, 4, 8, 128};
  const int bits[] = {2, 3, 4, 8};
  float zeros[16] = {0};
  for (int i = 0; i < 4; i++) {
    qz_quant_params(zeros, 16, 1, bits[i], 0, &sc, &z);
    QZT_CHECK(z == zero_asym[i] && sc == 2.0f / (float)((1 << bits[i]) - 1),
              "all-zero asym w%d: zero %g scale %g", bits[i], z, sc);
    qz_quant_params(zeros, 16, 1, bits[i], 1, &sc, &z);
    QZT_CHECK(z == zero_sym[i], "all-zero sym w%d: zero %g", bits[i], z);
    float q;
    QZT_CHECK(qz_quant_one(0.0f, sc, z, (float)((1 << bits[i]) - 1), &q) ==
                      (uint8_t)z && q == 0.0f,
              "all-zero quantizes to the zero point, Q 0");
  }
  /* rule 12: x / scale exactly k + 0.5 rounds half to even.
   * xmin = -1, xmax = 0.875, w4 asym: scale = 1.875/15 = 0.125, zero 8 */
  float row[] = {-1.0f, 0.875f, 0.3125f, 0.4375f, -0.0625f, 0.1875f};
  qz_quant_params(row, 6, 1, 4, 0, &sc, &z);
  QZT_CHECK(sc == 0.125f && z == 8.0f, "scale %g zero %g", sc, z);
  float q;
  QZT_CHECK(qz_quant_one(0.3125f, sc, z, 15, &q) == 10, "2.5 -> 2 (+8)");
  QZT_CHECK(qz_quant_one(0.4375f, sc, z, 15, &q) == 12, "3.5 -> 4 (+8)");
  QZT_CHECK(qz_quant_one(-0.0625f, sc, z, 15, &q) == 8, "-0.5 -> -0 (+8)");
  QZT_CHECK(qz_quant_one(0.1875f, sc, z, 15, &q) == 10 && q == 0.25f,
            "1.5 -> 2 (+8), Q 0.25");
  /* asym zero = rint(-xmin/scale) half to even: xmin -0.3125, xmax 1.5625,
   * w4: scale 0.125, -xmin/scale = 2.5 -> 2 */
  float row2[] = {-0.3125f, 1.5625f};
  qz_quant_params(row2, 2, 1, 4, 0, &sc, &z);
  QZT_CHECK(sc == 0.125f && z == 2.0f, "zero point 2.5 -> 2: %g %g", sc, z);
  /* rule 11 sym: a non-negative row keeps xmin = 0, zero (maxq+1)/2, and
   * its large values clip at maxq */
  float pos[] = {0.0f, 0.5f, 1.5f};
  qz_quant_params(pos, 3, 1, 4, 1, &sc, &z);
  QZT_CHECK(sc == 1.5f / 15.0f && z == 8.0f, "sym non-negative: %g %g", sc, z);
  QZT_CHECK(qz_quant_one(1.5f, sc, z, 15, &q) == 15 && q == sc * 7.0f,
            "sym clip: Q %g", q);
  /* sym with negatives: symmetric range */
  float neg[] = {-2.0f, 0.5f};
  qz_quant_params(neg, 2, 1, 4, 1, &sc, &z);
  QZT_CHECK(sc == 4.0f / 15.0f && z == 8.0f, "sym: %g %g", sc, z);
  /* strided access (a column of a row-major matrix) */
  float m[] = {1, -4, 2, 0, 3, 0};
  qz_quant_params(m + 1, 3, 2, 2, 0, &sc, &z);
  QZT_CHECK(sc == 4.0f / 3.0f && z == 3.0f, "strided: %g %g", sc, z);

  /* RTN: 2 rows x 10 columns, group 4 -> groups of 4, 4, 2 */
  qz_quant_spec s = {.bits = 3, .groupsize = 4, .sym = 0};
  QZT_CHECK(qz_quant_ngroups(&s, 10) == 3, "ngroups");
  float w[20];
  for (int i = 0; i < 20; i++) w[i] = (float)((i * 7) % 11) / 10.0f - 0.4f;
  uint8_t codes[20];
  float Q[20], scale[6], zero[6];
  int32_t g_idx[10];
  QZT_OK(qz_rtn_quantize(&s, 2, 10, w, codes, Q, scale, zero, g_idx));
  int ok = 1;
  for (int r = 0; r < 2; r++)
    for (int j = 0; j < 10; j++) {
      int k = j / 4;
      float a, b;
      int c0 = k * 4, c1 = c0 + 4 < 10 ? c0 + 4 : 10;
      qz_quant_params(w + r * 10 + c0, c1 - c0, 1, 3, 0, &a, &b);
      ok &= scale[r * 3 + k] == a && zero[r * 3 + k] == b && g_idx[j] == k;
      ok &= Q[r * 10 + j] == a * ((float)codes[r * 10 + j] - b);
      ok &= codes[r * 10 + j] <= 7;
    }
  QZT_CHECK(ok, "RTN groups (last one short), g_idx, Q = scale (code - zero)");
  s.groupsize = -1;
  QZT_OK(qz_rtn_quantize(&s, 2, 10, w, codes, NULL, scale, zero, g_idx));
  QZT_CHECK(g_idx[9] == 0, "per channel g_idx 0");
  s.bits = 9;
  QZT_FAILS(qz_rtn_quantize(&s, 2, 10, w, codes, NULL, scale, zero, NULL),
            QZ_ERR_ARG, "bits must be in [2, 8]");
  return qzt_finish("test_quant_rules");
}
