/* FP8 E4M3 / E5M2 codec (io/fp8.c): self-consistency here, and a binary
 * dump that tests/fp8_check.py compares with its own encoder/decoder written
 * from the OCP 8-bit floating point spec (test fp8_spec).
 * Dump ($QZ_TEST_TMP/fp8.bin, little-endian): u32 n; f32 e4m3 table[256];
 * f32 e5m2 table[256]; f32 x[n]; u8 e4m3(x)[n]; u8 e5m2(x)[n]. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpiquant/fp8.h"
#include "qz_test.h"

typedef float (*dec_fn)(uint8_t);
typedef uint8_t (*enc_fn)(float);

static int is_nan_code(dec_fn dec, int c) { return isnan(dec((uint8_t)c)); }

/* Every non-NaN code decodes and re-encodes to itself; positive codes are
 * increasing; the largest finite value is max. */
static void check_format(const char *name, dec_fn dec, enc_fn enc, float max) {
  float prev = -1;
  for (int c = 0; c < 128; c++) {
    if (is_nan_code(dec, c)) continue;
    float v = dec((uint8_t)c);
    if (isinf(v)) continue;
    QZT_CHECK(v > prev, "%s: code 0x%02x = %g not above the previous %g", name, c, v, prev);
    prev = v;
    QZT_CHECK(enc(v) == c, "%s: encode(decode(0x%02x) = %g) = 0x%02x", name, c, v, enc(v));
    QZT_CHECK(enc(-v) == (c | 0x80), "%s: encode(-%g) = 0x%02x", name, v, enc(-v));
    QZT_CHECK(dec((uint8_t)(c | 0x80)) == -v, "%s: sign of 0x%02x", name, c | 0x80);
  }
  QZT_CHECK(prev == max, "%s: largest finite %g, expected %g", name, prev, max);
  QZT_CHECK(dec(enc(INFINITY)) == max && dec(enc(-INFINITY)) == -max,
            "%s: infinities must saturate to +-%g", name, max);
  QZT_CHECK(dec(enc(FLT_MAX)) == max, "%s: FLT_MAX must saturate", name);
  QZT_CHECK(isnan(dec(enc(NAN))), "%s: NaN must stay NaN", name);
  QZT_CHECK(enc(-0.0f) == 0x80 && enc(0.0f) == 0, "%s: signed zeros", name);
}

static unsigned lcg(unsigned *s) { return *s = *s * 1664525u + 1013904223u; }

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  QZT_CHECK(qz_fp8_e4m3_to_f32(0x7E) == 448.0f, "E4M3 0x7E = %g", qz_fp8_e4m3_to_f32(0x7E));
  QZT_CHECK(isnan(qz_fp8_e4m3_to_f32(0x7F)) && isnan(qz_fp8_e4m3_to_f32(0xFF)), "E4M3 NaN");
  QZT_CHECK(qz_fp8_e4m3_to_f32(0x01) == ldexpf(1, -9), "E4M3 min subnormal");
  QZT_CHECK(qz_fp8_e4m3_to_f32(0x08) == ldexpf(1, -6), "E4M3 min normal");
  QZT_CHECK(qz_fp8_e5m2_to_f32(0x7B) == 57344.0f, "E5M2 max");
  QZT_CHECK(isinf(qz_fp8_e5m2_to_f32(0x7C)), "E5M2 inf");
  /* ties to even: 464 is halfway between 448 (m=6) and 480 (past max) */
  QZT_CHECK(qz_f32_to_fp8_e4m3(17.0f) == qz_f32_to_fp8_e4m3(16.0f), "E4M3 17 -> 16 (tie, even)");
  QZT_CHECK(qz_f32_to_fp8_e4m3(19.0f) == qz_f32_to_fp8_e4m3(20.0f), "E4M3 19 -> 20 (tie, even)");
  QZT_CHECK(qz_f32_to_fp8_e4m3(464.0f) == 0x7E, "E4M3 464 saturates to 448");
  QZT_CHECK(qz_f32_to_fp8_e4m3(ldexpf(1, -10)) == 0, "E4M3 2^-10 (tie) -> 0");
  check_format("E4M3", qz_fp8_e4m3_to_f32, qz_f32_to_fp8_e4m3, QZ_FP8_E4M3_MAX);
  check_format("E5M2", qz_fp8_e5m2_to_f32, qz_f32_to_fp8_e5m2, QZ_FP8_E5M2_MAX);
  uint8_t codes[4] = {0x38, 0xB8, 0x7E, 0x01};
  float out[4];
  qz_fp8_e4m3_decode(codes, 4, 0.5f, out);
  QZT_CHECK(out[0] == 0.5f && out[1] == -0.5f && out[2] == 224.0f, "array decode with scale");

  /* the sweep: every value, midpoint (tie) and the f32 neighbours of each
   * midpoint of both formats, values past max, specials, random f32 */
  size_t cap = 1 << 18, n = 0;
  float *x = malloc(cap * sizeof *x);
  dec_fn decs[2] = {qz_fp8_e4m3_to_f32, qz_fp8_e5m2_to_f32};
  for (int f = 0; f < 2; f++) {
    float prev = 0;
    for (int c = 1; c < 128; c++) {
      float v = decs[f]((uint8_t)c);
      if (isnan(v) || isinf(v)) continue;
      float mid = prev + (v - prev) / 2;
      float pts[6] = {v, mid, nextafterf(mid, 0), nextafterf(mid, INFINITY), v * 1.0625f, v * 0.96875f};
      for (int k = 0; k < 6; k++) {
        x[n++] = pts[k];
        x[n++] = -pts[k];
      }
      prev = v;
    }
  }
  float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, FLT_MAX, -FLT_MAX, FLT_TRUE_MIN,
                      FLT_MIN, 464.0f, 479.9f, 480.0f, 500.0f, 1e30f, 57344.0f, 61440.0f,
                      65535.0f, 1e-30f, ldexpf(1, -10), ldexpf(3, -11), ldexpf(1, -17)};
  for (size_t k = 0; k < sizeof specials / sizeof *specials; k++) x[n++] = specials[k];
  unsigned s = 12345;
  while (n < cap) { /* random f32 with exponents where the formats live */
    unsigned r = lcg(&s);
    float m = 1.0f + (float)(r >> 9) / 8388608.0f;
    int e = (int)(lcg(&s) % 48) - 26;
    x[n++] = ((r & 1) ? -1.0f : 1.0f) * ldexpf(m, e);
  }
  uint8_t *c4 = malloc(n), *c5 = malloc(n);
  for (size_t i = 0; i < n; i++) {
    c4[i] = qz_f32_to_fp8_e4m3(x[i]);
    c5[i] = qz_f32_to_fp8_e5m2(x[i]);
  }
  const char *dir = getenv("QZ_TEST_TMP");
  if (dir) {
    mkdir(dir, 0777);
    char path[4096];
    snprintf(path, sizeof path, "%s/fp8.bin", dir);
    FILE *fp = fopen(path, "wb");
    QZT_CHECK(fp != NULL, "cannot write %s", path);
    if (fp) {
      float t4[256], t5[256];
      for (int c = 0; c < 256; c++) {
        t4[c] = qz_fp8_e4m3_to_f32((uint8_t)c);
        t5[c] = qz_fp8_e5m2_to_f32((uint8_t)c);
      }
      uint32_t n32 = (uint32_t)n;
      fwrite(&n32, 4, 1, fp);
      fwrite(t4, 4, 256, fp);
      fwrite(t5, 4, 256, fp);
      fwrite(x, 4, n, fp);
      fwrite(c4, 1, n, fp);
      fwrite(c5, 1, n, fp);
      fclose(fp);
    }
  }
  free(x);
  free(c4);
  free(c5);
  return qzt_finish("test_fp8");
}
