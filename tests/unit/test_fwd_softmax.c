/* The forward's softmax row (shard/fwd_kernels.h; cloned per ISA and
 * vectorized by the compiler) against (1) a scalar transcription of its
 * definition -- the range-reduced exp polynomial per element, the sum over
 * 8 double lanes in order, then the trailing terms -- bit for bit, on every
 * row length 1..300 and padded lengths, with scores far below the row
 * maximum (the -87 clamp) and equal maxima; (2) softmax in double (libm
 * exp) within TOL_EXP: an independent computation of what the row should
 * be. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../shard/fwd_kernels.h"
#include "qz_test.h"

/* the polynomial exp is within ~1 ulp; the sum in double and one f32
 * scaling add about 1 ulp more: 1e-6 relative to the row's largest
 * probability catches any formula error (those are >= 1e-3) */
#define TOL_EXP 1e-6

static float ref_exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  float kf = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
  float r = (x - kf * 0.693145752f) - kf * 1.42860677e-6f;
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666672e-1f +
            r * (4.16666679e-2f + r * (8.33333377e-3f + r * 1.38888892e-3f)))));
  int32_t k = (int32_t)kf;
  union { int32_t i; float f; } two_k = {.i = (k + 127) << 23};
  float e = p * two_k.f;
  return x <= -87.0f ? 0.0f : e;
}

static void ref_softmax(float *s, int64_t nv, int64_t n) {
  float mx = s[0];
  for (int64_t j = 1; j < nv; j++) mx = s[j] > mx ? s[j] : mx;
  for (int64_t j = 0; j < nv; j++) s[j] = ref_exp(s[j] - mx);
  double lane[8] = {0};
  int64_t j = 0;
  for (; j + 8 <= nv; j += 8)
    for (int k = 0; k < 8; k++) lane[k] += (double)s[j + k];
  double sum = 0.0;
  for (int k = 0; k < 8; k++) sum += lane[k];
  for (; j < nv; j++) sum += (double)s[j];
  float inv = (float)(1.0 / sum);
  for (j = 0; j < nv; j++) s[j] *= inv;
  for (j = nv; j < n; j++) s[j] = 0.0f;
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  uint64_t rng = 2024;
  enum { NMAX = 320 };
  float a[NMAX], b[NMAX], in[NMAX];
  int64_t bad_bits = 0, bad_ref = 0, rows = 0;
  double worst = 0.0;
  for (int kind = 0; kind < 4; kind++)
    for (int64_t nv = 1; nv <= 300; nv++) {
      const int64_t n = kind == 3 ? nv : (nv + 15) / 16 * 16 + 16 * (kind & 1);
      for (int64_t j = 0; j < n; j++) {
        double z = qzt_rand_normal(&rng);
        /* 0: O(1) scores; 1: wide (many below the -87 clamp); 2: ties at
         * the maximum; 3: unpadded row (n == nv) */
        in[j] = (float)(kind == 1 ? 60.0 * z : kind == 2 ? floor(2.0 * z) : 3.0 * z);
      }
      memcpy(a, in, sizeof(float) * (size_t)n);
      memcpy(b, in, sizeof(float) * (size_t)n);
      qz_fwdk_softmax_row(a, nv, n);
      ref_softmax(b, nv, n);
      if (memcmp(a, b, sizeof(float) * (size_t)n) != 0) bad_bits++;
      double mx = in[0];
      for (int64_t j = 1; j < nv; j++) mx = in[j] > mx ? in[j] : mx;
      double sum = 0.0;
      for (int64_t j = 0; j < nv; j++) sum += exp((double)in[j] - mx);
      for (int64_t j = 0; j < n; j++) {
        double want = j < nv ? exp((double)in[j] - mx) / sum : 0.0;
        double err = fabs((double)a[j] - want);
        if (err > worst) worst = err;
        if (err > TOL_EXP) bad_ref++;
      }
      rows++;
    }
  QZT_CHECK(bad_bits == 0, "%lld of %lld rows differ from the scalar definition bit for bit",
            (long long)bad_bits, (long long)rows);
  QZT_CHECK(bad_ref == 0, "%lld probabilities off the double softmax by more than %g "
            "(worst %.3g)", (long long)bad_ref, TOL_EXP, worst);
  printf("softmax: %lld rows against the scalar definition; worst deviation from "
           "the double softmax %.3g (tolerance %g)\n", (long long)rows, worst, TOL_EXP);
  return qzt_finish("test_fwd_softmax");
}
