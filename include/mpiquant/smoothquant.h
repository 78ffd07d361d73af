/* SmoothQuant W8A8 (Xiao et al.; reference conventions in the golden
 * README): smoothing factors that migrate activation outliers into the
 * weights, their folding into the preceding RMSNorm, and the per-output-
 * channel symmetric int8 weight quantizer.  Activations are fake-quantized
 * at evaluation time (qz_fwd_set_act_quant). All arithmetic in f32 like
 * the reference. */
#ifndef MPIQUANT_SMOOTHQUANT_H
#define MPIQUANT_SMOOTHQUANT_H

#include <stdint.h>

#include "mpiquant/method.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x^e in f32 with the reference's special cases (e = 0 -> 1, 0.5 -> sqrt,
 * 1 -> x, else powf(x, (float)e)). Not collective. */
float qz_sq_powf(float x, double e);

/* s_j = max(a_j^alpha / wmax_j^(1-alpha), 1e-5) with wmax_j = max(max over
 * the rows of every weight in ws of |W_ij|, 1e-5): the factors of the
 * linears sharing one input of n channels. ws[k] is [rows[k], n].
 * Not collective. */
void qz_sq_smooth_factors(int64_t n, const float *act_absmax /* [n] */,
                          int nw, const float *const *ws, const int64_t *rows,
                          double alpha, float *s /* [n] */);

/* norm[j] /= s[j]; every ws[k][i, j] *= s[j]. Not collective. */
void qz_sq_fold(int64_t n, const float *s /* [n] */, float *norm /* [n] */,
                int nw, float *const *ws, const int64_t *rows);

/* Per-output-channel symmetric int8: d = max(max_j |w_ij|, 1e-5) / 127,
 * code = rint(w / d) + 128 (in [1, 255]), scale = d, zero = 128, so that
 * scale * (code - zero) = rint(w / d) * d exactly; q (may be NULL) gets
 * that value. Not collective. */
void qz_sq_quantize_rows(int64_t rows, int64_t in, const float *w /* [rows, in] */,
                         uint8_t *codes /* [rows, in] */, float *scale /* [rows] */,
                         float *zero /* [rows] */, float *q /* [rows, in] */);

extern const qz_method_ops qz_method_smoothquant;

#ifdef __cplusplus
}
#endif
#endif
