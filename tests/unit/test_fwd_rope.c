/* RoPE with Llama-3.1 "llama3" scaling against independently computed
 * values.
 *
 * How the expected values are computed (independently of shard/forward.c):
 * 1. inv_freq: the Meta reference definition (llama3 `apply_scaling`, a
 *    per-frequency if/elif chain on the wavelength) written here in long
 *    double; the library uses the HF vectorised form in double.  Checked
 *    also in structure: for the Llama-3.1-8B parameters (theta 500000,
 *    head_dim 128, factor 8, low 1, high 4, original context 8192) exactly
 *    the frequencies with wavelength < 2048 are unchanged, those above 8192
 *    are divided by 8, and the band in between is blended (monotone).
 * 2. rotation: as a complex product (x_i + i x_{i+d/2}) * exp(i pos f_i)
 *    with <complex.h> in double, on random vectors at positions up to
 *    131071, vs qz_rope_tables + qz_rope_apply in f32. */
#include <complex.h>
#include <math.h>
#include <stdlib.h>

#include "mpiquant/error.h"
#include "mpiquant/forward.h"
#include "qz_test.h"

#define TOL_INV_REL 1e-12   /* double vs long double of the same formula */
#define TOL_ROT 2e-6        /* f32 tables and products on O(1) values */

static long double meta_scaled(long double freq, long double factor,
                               long double lo, long double hi,
                               long double old) {
  long double low_wl = old / lo, high_wl = old / hi;
  long double wl = 2 * 3.141592653589793238462643383279503L / freq;
  if (wl < high_wl) return freq;
  if (wl > low_wl) return freq / factor;
  long double smooth = (old / wl - lo) / (hi - lo);
  return (1 - smooth) * freq / factor + smooth * freq;
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  qz_model_config c = {0};
  c.hidden_size = 4096;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.head_dim = 128;
  c.rope_theta = 500000.0;
  c.rope_scaling.type = QZ_ROPE_LLAMA3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 8192;
  enum { HD = 128, HALF = 64 };
  double inv[HALF];
  QZT_OK(qz_rope_inv_freq(&c, inv));
  int nkeep = 0, nscale = 0, nblend = 0;
  for (int i = 0; i < HALF; i++) {
    long double f = powl(500000.0L, -(long double)(2 * i) / HD);
    long double want = meta_scaled(f, 8, 1, 4, 8192);
    QZT_REL(inv[i], (double)want, TOL_INV_REL, "llama3 inv_freq");
    long double wl = 2 * 3.141592653589793238462643383279503L / f;
    if (wl < 2048) {
      nkeep++;
      QZT_REL(inv[i], (double)f, 1e-14, "high frequency unchanged");
    } else if (wl > 8192) {
      nscale++;
      QZT_REL(inv[i], (double)(f / 8), 1e-14, "low frequency / factor");
    } else {
      nblend++;
      QZT_CHECK(inv[i] <= (double)f && inv[i] >= (double)(f / 8),
                "blended frequency %d between f/8 and f", i);
    }
    if (i > 0) QZT_CHECK(inv[i] < inv[i - 1], "inv_freq decreasing at %d", i);
  }
  QZT_CHECK(nkeep > 0 && nscale > 0 && nblend > 0,
            "all three bands present: %d kept, %d scaled, %d blended", nkeep,
            nscale, nblend);
  /* inv_freq[0] = 1 exactly; plain theta check of the last frequency */
  QZT_CHECK(inv[0] == 1.0, "inv_freq[0] = 1");

  /* rotation at scattered positions (the table covers 0..npos-1) */
  enum { NPOS = 131072, NH = 2 };
  float *ct = malloc(sizeof(float) * (size_t)NPOS * HALF);
  float *st = malloc(sizeof(float) * (size_t)NPOS * HALF);
  QZT_OK(qz_rope_tables(&c, NPOS, ct, st));
  uint64_t rng = 7;
  static const int64_t pos[] = {0, 1, 2, 17, 511, 2047, 8191, 8192, 32768,
                                100000, 131071};
  enum { NP = sizeof pos / sizeof pos[0] };
  double maxd = 0;
  for (int pi = 0; pi < NP; pi++) {
    float x[NH * HD];
    double xd[NH * HD];
    for (int i = 0; i < NH * HD; i++) xd[i] = x[i] = (float)qzt_rand_normal(&rng);
    /* one row at position pos[pi]: seqlen large, row index = position */
    float row[NH * HD];
    for (int i = 0; i < NH * HD; i++) row[i] = x[i];
    /* qz_rope_apply takes positions from the row index: place the row via a
     * shifted table pointer instead of allocating pos rows */
    qz_rope_apply(row, 1, NH * HD, NH, HD, 1, ct + pos[pi] * HALF,
                  st + pos[pi] * HALF);
    for (int h = 0; h < NH; h++)
      for (int i = 0; i < HALF; i++) {
        long double f = meta_scaled(powl(500000.0L, -(long double)(2 * i) / HD),
                                    8, 1, 4, 8192);
        double complex z = xd[h * HD + i] + I * xd[h * HD + i + HALF];
        double complex r = z * cexp(I * (double)((long double)pos[pi] * f));
        double d0 = fabs(row[h * HD + i] - creal(r));
        double d1 = fabs(row[h * HD + i + HALF] - cimag(r));
        if (d0 > maxd) maxd = d0;
        if (d1 > maxd) maxd = d1;
      }
  }
  QZT_CHECK(maxd <= TOL_ROT, "rotation vs complex product: max |diff| %.3g",
            maxd);

  /* rows of a window take positions r % seqlen */
  float two[2 * HD];
  for (int i = 0; i < 2 * HD; i++) two[i] = 1.0f;
  qz_rope_apply(two, 2, HD, 1, HD, 1, ct, st); /* seqlen 1: both at pos 0 */
  int same = 1;
  for (int i = 0; i < 2 * HD; i++) same &= two[i] == 1.0f;
  QZT_CHECK(same, "position 0 is the identity");

  /* linear scaling and bad configs */
  qz_model_config cl = c;
  cl.rope_scaling.type = QZ_ROPE_LINEAR;
  cl.rope_scaling.factor = 4;
  double invl[HALF];
  QZT_OK(qz_rope_inv_freq(&cl, invl));
  QZT_REL(invl[10], pow(500000.0, -20.0 / 128) / 4, 1e-14, "linear scaling");
  qz_model_config cb = c;
  cb.rope_scaling.high_freq_factor = 0.5;
  QZT_FAILS(qz_rope_inv_freq(&cb, invl), QZ_ERR_ARG, "llama3");
  cb = c;
  cb.head_dim = 7;
  QZT_FAILS(qz_rope_inv_freq(&cb, invl), QZ_ERR_ARG, "even head_dim");
  free(ct);
  free(st);
  return qzt_finish("test_fwd_rope");
}
