/* FP8 activation quantizers (core/fp8.c qz_fp8_e4m3_act_*): properties
 * here, and a dump that tests/fp8_ref.py --act-bin compares bit for bit with
 * its numpy quantizers written from the serving kernels' definitions.
 * Dump ($QZ_TEST_TMP/fp8_act.bin, little-endian): u32 nrows, n, group;
 * f32 s_static; f32 x[nrows, n]; then y of dynamic per token, dynamic per
 * token-group, static, each [nrows, n]. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpiquant/fp8.h"
#include "qz_test.h"

enum { NROWS = 64, N = 200, GROUP = 64 };

static unsigned lcg(unsigned *s) { return *s = *s * 1664525u + 1013904223u; }
static float unif(unsigned *s) { return (float)(lcg(s) >> 8) / 16777216.0f; }

/* rows of very different magnitudes, an all-zero row, rows below the
 * per-token minimum scale, exact fp8 values and midpoints (ties) */
static void fill(float *x) {
  unsigned s = 12345u;
  for (int r = 0; r < NROWS; r++) {
    float mag = ldexpf(1.0f, (r % 40) - 30); /* 2^-30 .. 2^9 */
    for (int j = 0; j < N; j++) {
      float v = (unif(&s) * 2.0f - 1.0f) * mag;
      if (r % 7 == 3 && j % 5 == 0) v *= 37.0f; /* outliers in some groups */
      x[r * N + j] = v;
    }
  }
  memset(x + 5 * N, 0, sizeof(float) * N); /* all zero */
  for (int j = 0; j < N; j++) /* fp8 values and midpoints at scale 1 (absmax 448) */
    x[6 * N + j] = (j == 0 ? 448.0f : qz_fp8_e4m3_to_f32((uint8_t)(j % 126)) +
                                        (j % 2 ? 0.0f : 0.5f * (qz_fp8_e4m3_to_f32((uint8_t)(j % 126 + 1)) -
                                                                qz_fp8_e4m3_to_f32((uint8_t)(j % 126)))));
}

/* mkdir -p */
static void mkdirs(const char *dir) {
  char p[4096];
  snprintf(p, sizeof p, "%s", dir);
  for (char *c = p + 1; *c; c++)
    if (*c == '/') {
      *c = 0;
      mkdir(p, 0777);
      *c = '/';
    }
  mkdir(p, 0777);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  const size_t cnt = (size_t)NROWS * N;
  float *x = calloc(cnt, 4), *yd = calloc(cnt, 4), *yg = calloc(cnt, 4), *ys = calloc(cnt, 4);
  fill(x);
  qz_fp8_e4m3_act_dynamic(x, NROWS, N, 0, yd);
  qz_fp8_e4m3_act_dynamic(x, NROWS, N, GROUP, yg);
  const float s_static = 0.01f;
  qz_fp8_e4m3_act_static(x, cnt, s_static, ys);
  /* properties: a row's absmax maps to 448 exactly (per token); zeros stay
   * zero; static saturates at 448 s; in place equals out of place */
  for (int r = 0; r < NROWS; r++) {
    float m = 0, my = 0;
    for (int j = 0; j < N; j++) {
      m = fmaxf(m, fabsf(x[r * N + j]));
      my = fmaxf(my, fabsf(yd[r * N + j]));
    }
    float s = fmaxf(m / 448.0f, 1.0f / (448.0f * 512.0f));
    if (m / 448.0f >= 1.0f / (448.0f * 512.0f))
      QZT_CHECK(my == 448.0f * s, "row %d: max |y| %g, expected 448 s = %g", r, my, 448.0f * s);
  }
  for (int j = 0; j < N; j++) QZT_CHECK(yd[5 * N + j] == 0 && yg[5 * N + j] == 0, "zero row");
  for (size_t i = 0; i < cnt; i++)
    QZT_CHECK(fabsf(ys[i]) <= 448.0f * s_static, "static saturation at %zu: %g", i, ys[i]);
  float *yi = malloc(cnt * 4);
  memcpy(yi, x, cnt * 4);
  qz_fp8_e4m3_act_dynamic(yi, NROWS, N, GROUP, yi);
  QZT_CHECK(memcmp(yi, yg, cnt * 4) == 0, "in-place per-group result differs");
  free(yi);
  const char *dir = getenv("QZ_TEST_TMP");
  if (dir) {
    mkdirs(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/fp8_act.bin", dir);
    FILE *fp = fopen(path, "wb");
    QZT_CHECK(fp != NULL, "cannot write %s", path);
    if (fp) {
      uint32_t hdr[3] = {NROWS, N, GROUP};
      fwrite(hdr, 4, 3, fp);
      fwrite(&s_static, 4, 1, fp);
      fwrite(x, 4, cnt, fp);
      fwrite(yd, 4, cnt, fp);
      fwrite(yg, 4, cnt, fp);
      fwrite(ys, 4, cnt, fp);
      fclose(fp);
    }
  }
  free(x);
  free(yd);
  free(yg);
  free(ys);
  return qzt_finish("test_fp8_act");
}
