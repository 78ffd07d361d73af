/* The llm-awq quantizer (min/max range without 0, scale clamp, clamped
 * zero, partial last group) and the SmoothQuant int8 per-channel quantizer
 * on planted rows, against values worked out by hand / in double. */
#include <math.h>
#include <string.h>

#include "mpiquant/awq.h"
#include "mpiquant/smoothquant.h"
#include "qz_test.h"

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  /* row 0: all positive (0 not in the range: llm-awq keeps mn > 0, zero
   * clamps to 0); row 1: group 0 constant (scale 1e-5/maxq), group 1 the
   * 12-column partial group; row 2: symmetric-ish */
  enum { IN = 44, G = 32, NG = 2 };
  float w[3][IN], q[3][IN], sc[3][NG], z[3][NG];
  uint8_t c[3][IN];
  for (int j = 0; j < IN; j++) {
    w[0][j] = 1.0f + 0.5f * (float)j;           /* group 0: [1, 16.5] */
    w[1][j] = j < G ? 0.25f : (float)(j - G) - 4.0f; /* partial: [-4, 7] */
    w[2][j] = (float)((j % 7) - 3) * 0.1f;
  }
  qz_awq_quantize_rows(4, G, 3, IN, &w[0][0], &c[0][0], &sc[0][0], &z[0][0], &q[0][0]);
  /* row 0 group 0: mn 1, mx 16.5: scale 15.5/15, zero = clamp(-round(1/s)) = 0 */
  QZT_NEAR(sc[0][0], 15.5f / 15.0f, 0, "row 0 scale (0 not forced into the range)");
  QZT_NEAR(z[0][0], 0.0, 0, "row 0 zero clamps to 0");
  QZT_NEAR(q[0][0], sc[0][0] * rintf(1.0f / sc[0][0]), 0, "row 0 q = (code - 0) * s");
  /* row 1 group 0: constant: scale = 1e-5/15, code = clamp(rint(w/s)+z) */
  QZT_NEAR(sc[1][0], 1e-5f / 15.0f, 0, "constant group: clamped range 1e-5");
  QZT_CHECK(c[1][0] == 15, "constant 0.25 > 0 saturates at maxq (code %d)", c[1][0]);
  /* row 1 group 1 = columns 32..43, its own range [-4, 7] */
  QZT_NEAR(sc[1][1], 11.0f / 15.0f, 0, "partial 12-column group has its own scale");
  float zz = -rintf(-4.0f / (11.0f / 15.0f));
  QZT_NEAR(z[1][1], zz, 0, "partial group zero");
  for (int r = 0; r < 3; r++)
    for (int j = 0; j < IN; j++) {
      int g = j / G;
      QZT_CHECK(q[r][j] == ((float)c[r][j] - z[r][g]) * sc[r][g],
                "q = (code - zero) * scale at (%d, %d)", r, j);
      /* row 0: zero clamped to 0 -> the top of its range saturates */
      QZT_CHECK(fabsf(q[r][j] - w[r][j]) <= sc[r][g] / 2 * 1.0001f || r == 0 ||
                    (r == 1 && g == 0),
                "|q - w| <= scale/2 at (%d, %d)", r, j);
    }
  QZT_CHECK(c[0][31] == 15 && q[0][31] == 15.0f * sc[0][0],
            "row 0: 16.5 saturates at code 15 (zero clamped at 0)");
  /* group -1 = whole row */
  float s1, z1;
  qz_awq_quantize_rows(3, -1, 1, IN, &w[0][0], NULL, &s1, &z1, NULL);
  QZT_NEAR(s1, (1.0f + 0.5f * 43.0f - 1.0f) / 7.0f, 1e-7, "per-channel scale");

  /* SmoothQuant int8: d = max|w| / 127, code = rint(w/d) + 128 */
  float v[2][5] = {{1.27f, -0.635f, 0.005f, 0.015f, -1.27f}, {0, 0, 0, 0, 0}};
  uint8_t vc[2][5];
  float vs[2], vz[2], vq[2][5];
  qz_sq_quantize_rows(2, 5, &v[0][0], &vc[0][0], vs, vz, &vq[0][0]);
  QZT_NEAR(vs[0], 1.27f / 127.0f, 0, "int8 scale = absmax/127");
  QZT_CHECK(vz[0] == 128.0f && vz[1] == 128.0f, "int8 zero point 128");
  QZT_CHECK(vc[0][0] == 255 && vc[0][4] == 1, "extremes map to 255 and 1 (%d, %d)", vc[0][0],
            vc[0][4]);
  QZT_NEAR(vs[1], 1e-5f / 127.0f, 0, "all-zero row: scale from the 1e-5 clamp");
  for (int r = 0; r < 2; r++)
    for (int j = 0; j < 5; j++)
      QZT_CHECK(vq[r][j] == vs[r] * ((float)vc[r][j] - vz[r]) &&
                    vq[r][j] == rintf(v[r][j] / vs[r]) * vs[r],
                "int8 dequant exact at (%d, %d)", r, j);
  /* smoothing factors: a = 4, wmax = 0.25 (clamped rows), alpha 0.5: s = 2/0.5 = 4 */
  float a[2] = {4.0f, 0.0f}, W0[2][2] = {{0.25f, 0.0f}, {-0.1f, 0.0f}}, s[2];
  const float *ws[1] = {&W0[0][0]};
  int64_t rows[1] = {2};
  qz_sq_smooth_factors(2, a, 1, ws, rows, 0.5, s);
  QZT_NEAR(s[0], 4.0f, 0, "s = sqrt(a) / sqrt(wmax)");
  QZT_NEAR(s[1], 1e-5f, 0, "s clamps at 1e-5 (a = 0)");
  float norm[2] = {2.0f, 3.0f};
  float *wm[1] = {&W0[0][0]};
  qz_sq_fold(2, s, norm, 1, wm, rows);
  QZT_NEAR(norm[0], 0.5f, 0, "norm / s");
  QZT_NEAR(W0[1][0], -0.4f, 1e-7, "W columns * s");
  return qzt_finish("awq_quant");
}
