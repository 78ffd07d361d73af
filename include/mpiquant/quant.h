/* Uniform min/max quantizer of the reference GPTQ/RTN (golden README rules
 * 11-13, 16), all in f32 arithmetic exactly as the reference:
 *
 *   xmin = min(min x, 0), xmax = max(max x, 0)
 *   sym: xmax = max(|xmin|, xmax); if xmin < 0: xmin = -xmax
 *   xmin == xmax == 0: [-1, 1]
 *   scale = (xmax - xmin) / maxq
 *   zero  = sym ? (maxq + 1) / 2 : rint(-xmin / scale)
 *   code  = clamp(rint(x / scale) + zero, 0, maxq);  q = scale * (code - zero)
 *
 * rint = round half to even (default rounding mode); x / scale is a true f32
 * division.  Builds must not use -ffast-math or FMA contraction. */
#ifndef MPIQUANT_QUANT_H
#define MPIQUANT_QUANT_H

#include <math.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int bits;          /* 2..8 */
  int64_t groupsize; /* -1 = per output channel, else columns per group */
  int sym;
} qz_quant_spec;

/* Number of groups along a row of `in` columns: 1 per channel, else
 * ceil(in / groupsize). Not collective. */
int64_t qz_quant_ngroups(const qz_quant_spec *s, int64_t in);
/* Checks bits in [2, 8] and groupsize -1 or >= 1. Not collective. */
int qz_quant_spec_check(const qz_quant_spec *s);

/* Parameters of one row over n values x[0], x[stride], ...  Not collective. */
void qz_quant_params(const float *x, int64_t n, int64_t stride, int bits,
                     int sym, float *scale, float *zero);

/* Round half to even in the default rounding mode, inline: adding and
 * subtracting 1.5 * 2^23 rounds exactly like rintf for |x| < 2^22 (no
 * libm call on baseline x86-64, which lacks roundss). Not collective. */
static inline float qz_rint(float x) {
  const float magic = 12582912.0f; /* 1.5 * 2^23 */
  if (fabsf(x) < 4194304.0f) {
    float t = x + magic; /* not folded: no -fassociative-math */
    return t - magic;
  }
  return rintf(x);
}

/* Quantize one value; returns the code, *q the dequantized value.
 * Not collective. */
static inline uint8_t qz_quant_one(float x, float scale, float zero,
                                   float maxq, float *q) {
  float c = qz_rint(x / scale) + zero;
  c = c < 0.0f ? 0.0f : (c > maxq ? maxq : c);
  *q = scale * (c - zero);
  return (uint8_t)c;
}

/* Round-to-nearest of w [rows, in] (row-major) group by group (the last group
 * may be shorter) or per row: codes [rows, in], q [rows, in] (may be NULL),
 * scale/zero [rows, ngroups].  g_idx [in] (may be NULL) gets j / groupsize
 * (0 per channel).  Not collective. */
int qz_rtn_quantize(const qz_quant_spec *s, int64_t rows, int64_t in,
                    const float *w /* [rows, in] */,
                    uint8_t *codes /* [rows, in] */, float *q /* [rows, in] */,
                    float *scale /* [rows, ngroups] */,
                    float *zero /* [rows, ngroups] */,
                    int32_t *g_idx /* [in] */);

#ifdef __cplusplus
}
#endif
#endif
