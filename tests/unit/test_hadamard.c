/* Hadamard matrices and rotations (linalg/hadamard.c):
 *  - every order 4..400 our constructions claim is checked: entries +-1
 *    and H H^T = k I exactly (integer arithmetic);
 *  - the orders rotation-based quantization needs for Llama shapes are
 *    constructible: 12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 312 (156 * 2)
 *    and 344 (172 * 2, Paley I over GF(7^3)); 156 and 172 themselves are
 *    not (they need Williamson-type constructions), which the rotation of
 *    d = 156 * 2^m or 172 * 2^m avoids by using 312 or 344;
 *  - the fast transform equals the dense (K (x) H_2^m) / norm product, the
 *    rotation is orthogonal (Q Q^T = I within 1e-12 in double, rows of
 *    float within 2e-6), Q^T undoes Q, and a dimension whose odd part has no
 *    Hadamard matrix (d = 3 * 5 * 7 * 2) falls back to a seeded random
 *    orthogonal factor: the same for the same seed, another for another. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/hadamard.h"
#include "qz_test.h"

static int check_order(int k) {
  int8_t *h = malloc((size_t)k * k);
  int ok = qz_hadamard(k, h) == 0;
  for (int i = 0; ok && i < k * k; i++) ok = h[i] == 1 || h[i] == -1;
  for (int i = 0; ok && i < k; i++)
    for (int j = i; ok && j < k; j++) {
      long s = 0;
      for (int c = 0; c < k; c++) s += h[i * k + c] * h[j * k + c];
      ok = s == (i == j ? k : 0);
    }
  free(h);
  return ok;
}

/* dense Q for a rotation: rows of the identity, rotated */
static double *dense(qz_rotation *r, int transpose) {
  int64_t d = qz_rotation_dim(r);
  float *x = calloc((size_t)(d * d), sizeof(float));
  for (int64_t i = 0; i < d; i++) x[i * d + i] = 1;
  qz_rotation_apply_rows(r, x, d, transpose);
  double *q = malloc(sizeof(double) * (size_t)(d * d));
  for (int64_t i = 0; i < d * d; i++) q[i] = x[i];
  free(x);
  return q;
}

static void check_rotation(int64_t d, uint64_t seed, const char *want_kind) {
  qz_rotation *r = NULL;
  QZT_OK(qz_rotation_create(d, seed, &r));
  if (!r) return;
  QZT_CHECK(strstr(qz_rotation_kind(r), want_kind) != NULL, "d %lld: kind '%s', expected '%s'",
            (long long)d, qz_rotation_kind(r), want_kind);
  double *q = dense(r, 0), *qt = dense(r, 1);
  double worst = 0, worst_t = 0;
  for (int64_t i = 0; i < d; i++)
    for (int64_t j = 0; j < d; j++) {
      double s = 0;
      for (int64_t c = 0; c < d; c++) s += q[i * d + c] * q[j * d + c];
      worst = fmax(worst, fabs(s - (i == j)));
      worst_t = fmax(worst_t, fabs(qt[i * d + j] - q[j * d + i]));
    }
  QZT_CHECK(worst < 2e-6, "d %lld (%s): |Q Q^T - I| = %.3g", (long long)d, qz_rotation_kind(r), worst);
  QZT_CHECK(worst_t < 1e-7, "d %lld: Q^T path differs from the transpose by %.3g", (long long)d, worst_t);
  /* a random row: rotate and back */
  float *x = malloc(sizeof(float) * (size_t)d), *x0 = malloc(sizeof(float) * (size_t)d);
  for (int64_t i = 0; i < d; i++) x0[i] = x[i] = (float)sin(1.0 + 0.37 * (double)i) * 3.0f;
  qz_rotation_apply_rows(r, x, 1, 0);
  qz_rotation_apply_rows(r, x, 1, 1);
  double e = 0;
  for (int64_t i = 0; i < d; i++) e = fmax(e, fabs(x[i] - x0[i]));
  QZT_CHECK(e < 1e-5, "d %lld: Q^T Q x != x (%.3g)", (long long)d, e);
  free(x);
  free(x0);
  free(q);
  free(qt);
  qz_rotation_destroy(&r);
  QZT_CHECK(r == NULL, "destroy NULLs the pointer");
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  int nbuilt = 0;
  for (int k = 4; k <= 400; k += 4)
    if (qz_hadamard_kind(k) != QZ_HAD_NONE) {
      QZT_CHECK(check_order(k), "order %d (kind %d): not a Hadamard matrix", k, qz_hadamard_kind(k));
      nbuilt++;
    }
  const int need[] = {12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 312, 344};
  for (size_t i = 0; i < sizeof need / sizeof *need; i++)
    QZT_CHECK(qz_hadamard_kind(need[i]) != QZ_HAD_NONE, "order %d must be constructible", need[i]);
  QZT_CHECK(qz_hadamard_kind(156) == QZ_HAD_NONE && qz_hadamard_kind(172) == QZ_HAD_NONE,
            "156/172 are not built by Paley or doubling");
  QZT_CHECK(qz_hadamard_kind(6) == QZ_HAD_NONE, "no Hadamard matrix of order 6");
  int8_t dummy[36];
  QZT_CHECK(qz_hadamard(6, dummy) != 0, "order 6 must be refused");
  qz_error_clear();
  check_rotation(64, 0, "hadamard 1 (Sylvester) x 2^6");
  check_rotation(96, 0, "hadamard 12 (Paley I) x 2^3");
  check_rotation(172 * 4, 0, "hadamard 344 (Paley I) x 2^1");
  check_rotation(3 * 5 * 7 * 2, 7, "random-orthogonal 105 (seed 7) x 2^1");
  /* the same seed, the same matrix; another seed, another one */
  qz_rotation *a = NULL, *b = NULL, *c = NULL;
  QZT_OK(qz_rotation_create(105, 7, &a));
  QZT_OK(qz_rotation_create(105, 7, &b));
  QZT_OK(qz_rotation_create(105, 8, &c));
  float xa[105], xb[105], xc[105];
  for (int i = 0; i < 105; i++) xa[i] = xb[i] = xc[i] = (float)(i % 7) - 3.0f;
  qz_rotation_apply_rows(a, xa, 1, 0);
  qz_rotation_apply_rows(b, xb, 1, 0);
  qz_rotation_apply_rows(c, xc, 1, 0);
  QZT_CHECK(memcmp(xa, xb, sizeof xa) == 0, "same seed, different rotation");
  QZT_CHECK(memcmp(xa, xc, sizeof xa) != 0, "different seeds, same rotation");
  qz_rotation_destroy(&a);
  qz_rotation_destroy(&b);
  qz_rotation_destroy(&c);
  qz_rotation_destroy(NULL);
  printf("hadamard: %d orders in 4..400 constructed and verified\n", nbuilt);
  return qzt_finish("test_hadamard");
}
