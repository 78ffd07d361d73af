/* Non-uniform 4-bit grids with blockwise absmax scaling (QLoRA's NF4, and
 * FP4 E2M1 of the OCP MX spec): a block of values x is stored as
 * scale = max |x| and codes c with x ~ scale * value[c], c the nearest
 * codebook value to x / scale.
 *
 *   NF4: the 16 values of QLoRA (Dettmers et al. 2023, appendix E):
 *        quantiles of N(0, 1) with an exact zero, normalized to [-1, 1]
 *        (tests/codebook_check.py derives them from that definition);
 *   FP4: E2M1 = {0, 0.5, 1, 1.5, 2, 3, 4, 6} and negatives, divided by 6
 *        so that the block's absmax maps to the largest magnitude.
 * Codes index the sorted value table (NF4: 0 = -1, 7 = 0, 15 = +1; FP4: 15
 * entries, -0 dropped). Nearest value; an exact midpoint goes to the lower
 * value (bitsandbytes' kernels compare with '>'). Pure: not collective. */
#ifndef MPIQUANT_CODEBOOK_H
#define MPIQUANT_CODEBOOK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { QZ_CODEBOOK_NF4 = 1, QZ_CODEBOOK_FP4 = 2 } qz_codebook;

/* Sorted values (in [-1, 1]) and their count. NULL for an unknown book. */
const float *qz_codebook_values(qz_codebook cb, int *n);
/* "nf4" / "fp4" -> the book; 0 for another name. */
qz_codebook qz_codebook_from_name(const char *name);
/* Index of the value nearest to y (ties: the lower value). */
uint8_t qz_codebook_nearest(const float *vals, int n, float y);
/* One block of n values x[0], x[stride], ...: *absmax = max |x|, codes[i]
 * (stride 1) and, when q is not NULL, q[i * stride] = absmax * value[code]
 * in f32. An all-zero block gets absmax 0 and the code of 0. */
void qz_codebook_block(qz_codebook cb, const float *x, int64_t n, int64_t stride,
                       float *absmax, uint8_t *codes, float *q);

#ifdef __cplusplus
}
#endif
#endif
