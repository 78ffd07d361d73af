/* NF4 / FP4 codebooks (methods/codebook.c): nearest value with the
 * documented tie rule, blockwise absmax, and a dump of the tables for
 * tests/codebook_check.py (NF4 derived from its definition in numpy). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "mpiquant/codebook.h"
#include "qz_test.h"

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  int n = 0;
  const float *nf4 = qz_codebook_values(QZ_CODEBOOK_NF4, &n);
  QZT_CHECK(n == 16 && nf4[0] == -1.0f && nf4[7] == 0.0f && nf4[15] == 1.0f, "NF4 table ends");
  for (int i = 1; i < n; i++) QZT_CHECK(nf4[i] > nf4[i - 1], "NF4 sorted at %d", i);
  /* every value maps to itself; midpoints to the lower; just above to the upper */
  for (int b = 1; b <= 2; b++) {
    const float *v = qz_codebook_values((qz_codebook)b, &n);
    for (int i = 0; i < n; i++) QZT_CHECK(qz_codebook_nearest(v, n, v[i]) == i, "book %d value %d", b, i);
    for (int i = 0; i + 1 < n; i++) {
      float m = (v[i] + v[i + 1]) * 0.5f;
      QZT_CHECK(qz_codebook_nearest(v, n, m) == i, "book %d midpoint %d -> lower", b, i);
      QZT_CHECK(qz_codebook_nearest(v, n, nextafterf(m, 2.0f)) == i + 1, "book %d above midpoint %d", b, i);
    }
    QZT_CHECK(qz_codebook_nearest(v, n, -3.0f) == 0 && qz_codebook_nearest(v, n, 3.0f) == n - 1,
              "book %d clamps", b);
  }
  QZT_CHECK(qz_codebook_from_name("nf4") == QZ_CODEBOOK_NF4 && qz_codebook_from_name("fp4") == QZ_CODEBOOK_FP4 &&
                qz_codebook_from_name("int") == 0, "names");
  /* a block: absmax scale, codes, dequantized values */
  float x[8] = {0.5f, -2.0f, 1.0f, 0.0f, 1.9f, -0.1f, 0.75f, -1.5f}, q[8], a = 0;
  uint8_t c[8];
  qz_codebook_block(QZ_CODEBOOK_FP4, x, 8, 1, &a, c, q);
  QZT_CHECK(a == 2.0f, "absmax %g", a);
  /* /2*6: 1.5 -> 1.5, -6 -> -6, 3 -> 3, 0, 5.7 -> 6, -0.3 -> -0.5, 2.25 -> 2, -4.5 -> -4 (tie 4/5? no: -4.5 between -4 and -6 -> nearest -4) */
  const float want[8] = {0.5f, -2.0f, 1.0f, 0.0f, 2.0f, -1.0f / 6, 2.0f / 3, -4.0f / 3};
  for (int i = 0; i < 8; i++) QZT_CHECK(fabsf(q[i] - want[i]) < 1e-6f, "fp4 block[%d] = %g, want %g", i, q[i], want[i]);
  float z[4] = {0, 0, 0, 0};
  qz_codebook_block(QZ_CODEBOOK_NF4, z, 4, 1, &a, c, q);
  QZT_CHECK(a == 0 && c[0] == 7 && q[0] == 0, "all-zero block");
  const char *dir = getenv("QZ_TEST_TMP");
  if (dir) {
    mkdir(dir, 0777);
    char path[4096];
    snprintf(path, sizeof path, "%s/codebooks.txt", dir);
    FILE *f = fopen(path, "w");
    QZT_CHECK(f != NULL, "cannot write %s", path);
    for (int b = 1; f && b <= 2; b++) {
      const float *v = qz_codebook_values((qz_codebook)b, &n);
      fprintf(f, "%s", b == 1 ? "nf4" : "fp4");
      for (int i = 0; i < n; i++) fprintf(f, " %.9g", v[i]);
      fprintf(f, "\n");
    }
    if (f) fclose(f);
  }
  return qzt_finish("test_codebook");
}
