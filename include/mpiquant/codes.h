/* What a stored 8-bit code means: the value grid of a quantized linear.
 *
 * Every checkpoint linear stores codes u8 [out, in] with per-group scales
 * and zeros; its dequantized weight is, for every grid,
 *     Q[r, c] = scales[r, g] * (value[codes[r, c]] - zeros[r, g])   (f32)
 * with value[] the grid's 256-entry table:
 *   int       value[k] = k (uniform integer grid, GPTQ/RTN/AWQ; the default
 *             of checkpoints that record no grid)
 *   nf4, fp4  the codebooks of mpiquant/codebook.h (codes 0..15 / 0..14),
 *             scales = block absmax, zeros = 0
 *   fp8_e4m3  the OCP FP8 E4M3 value of the code (mpiquant/fp8.h), scales =
 *             the channel/block scale, zeros = 0
 * Entries a grid does not define are NaN (a code out of range shows up as a
 * non-finite weight, never as a plausible one). Pure: not collective. */
#ifndef MPIQUANT_CODES_H
#define MPIQUANT_CODES_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  QZ_VGRID_INT = 0,
  QZ_VGRID_NF4 = 1,
  QZ_VGRID_FP4 = 2,
  QZ_VGRID_FP8_E4M3 = 3,
  QZ_VGRID_COUNT
} qz_vgrid;

/* "int", "nf4", "fp4", "fp8_e4m3" (the checkpoint attribute `grid`). */
const char *qz_vgrid_name(qz_vgrid g);
/* The grid of a name; -1 for an unknown one. An empty name or NULL is
 * QZ_VGRID_INT (checkpoints written before grids existed). */
int qz_vgrid_from_name(const char *name);
/* value[256] of grid g (see above). */
void qz_vgrid_values(qz_vgrid g, float value[256]);
/* Dequantize rows with a grid's table (NULL table: the int grid):
 * q[r, c] = scales[r, g] * (value[codes[r, c]] - zeros[r, g]), g = g_idx[c]. */
void qz_dequantize_rows_grid(int64_t nrows, int64_t in, int64_t ngroups,
                             const uint8_t *codes, const float *scales,
                             const float *zeros, const int32_t *g_idx,
                             const float *value /* [256] or NULL */,
                             float *q /* [nrows, in] */);

#ifdef __cplusplus
}
#endif
#endif
