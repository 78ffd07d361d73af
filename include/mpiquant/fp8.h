/* FP8 encodings (OCP 8-bit floating point, v1.0): E4M3 ("e4m3fn": bias 7,
 * max 448, no infinities, NaN = S.1111.111) and E5M2 (bias 15, IEEE-like:
 * infinities S.11111.00, NaN S.11111.{01,10,11}, max 57344).
 *
 * Encoding rounds to nearest, ties to even mantissa, and saturates: finite
 * values and infinities beyond the largest finite value become +-max (the
 * "satfinite" conversion serving kernels use after dividing by a scale that
 * maps the absmax to max); NaN stays NaN. Decoding is exact in float. All
 * functions are pure: not collective, thread-safe. */
#ifndef MPIQUANT_FP8_H
#define MPIQUANT_FP8_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QZ_FP8_E4M3_MAX 448.0f
#define QZ_FP8_E5M2_MAX 57344.0f

/* What an FP8 checkpoint (--method fp8) records beyond its linears, for
 * evaluation and export: manifest options "fp8_act" ("dynamic", "static",
 * "none") and "weight_block" (B, 0 = per output channel), and with static
 * activations the aux dataset /aux/{block}/fp8.input_scale f32 [4, 1]: the
 * input scales of the q/k/v, o, gate/up and down inputs, in that order. */
#define QZ_FP8_OPT_ACT "fp8_act"
#define QZ_FP8_OPT_BLOCK "weight_block"
#define QZ_FP8_AUX_INPUT_SCALE "fp8.input_scale"
#define QZ_FP8_AUX_NGROUPS 4

float qz_fp8_e4m3_to_f32(uint8_t v);
float qz_fp8_e5m2_to_f32(uint8_t v);
uint8_t qz_f32_to_fp8_e4m3(float x);
uint8_t qz_f32_to_fp8_e5m2(float x);

/* Arrays: out[i] = decode(in[i]) * scale (scale 1 for plain decoding). */
void qz_fp8_e4m3_decode(const uint8_t *in, size_t n, float scale, float *out);
void qz_fp8_e5m2_decode(const uint8_t *in, size_t n, float scale, float *out);

/* Activation fake-quantization to E4M3 as the serving kernels compute it
 * (f32; y [nrows, n] may alias x):
 *   dynamic, group <= 0: per row (token) s = max(absmax / 448, 1/(448*512)),
 *     y = e4m3(x / s) * s  (vLLM's dynamic per-token FP8 quantization)
 *   dynamic, group > 0: per row and group of `group` consecutive features
 *     (the last one partial) s = max(absmax, 1e-10) / 448, y = e4m3(x / s) * s
 *     (per-token-group quantization of DeepSeek-V3-style block FP8)
 *   static: one scale s > 0 for everything, y = e4m3(x * (1 / s)) * s (the
 *     static kernel multiplies by the inverted scale). */
void qz_fp8_e4m3_act_dynamic(const float *x, size_t nrows, size_t n, size_t group,
                             float *y);
void qz_fp8_e4m3_act_static(const float *x, size_t count, float s, float *y);

#ifdef __cplusplus
}
#endif
#endif
