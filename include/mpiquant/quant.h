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

/* The same with the range searched for the smallest error (GPTQ's and
 * QuaRot's "mse" weight clipping): for p = 1, 0.99, ..., 0.21 the range
 * [p min, p max] (symmetric: [-p a, p a]), error sum_i |q(x_i) - x_i|^2.4,
 * the first p of the smallest error kept (p = 1 is qz_quant_params).
 * Not collective. */
void qz_quant_params_mse(const float *x, int64_t n, int bits, int sym, float *scale,
                         float *zero);

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


/* ---- storage cost: average bits per parameter ----------------------------
 * What one quantized linear costs in a packed layout (the checkpoint holds
 * the same information in wider types): dense codes, per-group statistics,
 * further per-layer constants and a sparse full-precision part:
 *
 *   bits = dense * code_bits + nstats * (scale_bits + zero_bits)
 *          + extra_bits + noutliers * outlier_bits
 *   bits per parameter = bits / (out * in)
 *
 * Conventions (docs/methods.md): scales fp16 (16), zeros of asymmetric int
 * grids at the code width and none for symmetric ones and the absmax grids;
 * a sparse entry is an fp16 value plus a 32-bit position (48). */
typedef struct {
  int64_t out, in;     /* layer shape */
  int64_t dense;       /* weights stored as dense codes (usually out * in) */
  double code_bits;    /* bits per dense code */
  int64_t nstats;      /* stored groups (scale + zero each), out * ngroups */
  double scale_bits;   /* bits per group scale */
  double zero_bits;    /* bits per group zero (0: not stored) */
  double extra_bits;   /* other bits of the layer (second-level statistics, column lists) */
  int64_t noutliers;   /* sparse full-precision entries of the whole layer */
  double outlier_bits; /* bits per sparse entry, value and position */
} qz_storage_bits;

#define QZ_OUTLIER_BITS 48.0 /* fp16 value + 32-bit position */

/* The uniform int quantizer's storage of an [out, in] linear with spec s:
 * dense = out * in codes of s->bits, fp16 scales, zeros of s->bits unless
 * s->sym, no outliers (outlier_bits = QZ_OUTLIER_BITS). Not collective. */
void qz_storage_bits_uniform(const qz_quant_spec *s, int64_t out, int64_t in,
                             qz_storage_bits *b);
/* Average bits per parameter (formula above); 0 for an empty layer.
 * Not collective. */
double qz_layer_bits_per_param(const qz_storage_bits *b);

#ifdef __cplusplus
}
#endif
#endif
