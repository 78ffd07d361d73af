/* Causal attention of one head, fused for small head dimensions.
 *
 * With a head dimension of 8 or 16 (the tiny test models, and small models
 * generally) the score and value products are sgemms with an inner
 * dimension of hd: OpenBLAS spends most of their time packing and zeroing,
 * and the scores make a trip through memory between the two products and
 * the softmax. Here one query row at a time is scored against the keys
 * transposed once per head ([hd][nkeys], so the products run along the
 * keys, 16 lanes wide), soft-maxed and applied to the values while the row
 * is in L1. Every row is computed by the same code in the same order
 * whatever the window, batch, rank or query block: results depend on
 * nothing but the row's own inputs. Not collective.
 */
#include "fwd_kernels.h"

#include <stddef.h>
#include <string.h>

#define LANES 16

static int64_t pad(int64_t n) { return (n + LANES - 1) / LANES * LANES; }

int64_t qz_fwdk_attn_small_ws(int64_t hd, int64_t nkeys) {
  return (2 * hd + 1) * pad(nkeys);
}

/* LANES floats as one GCC vector (lowered to the clone's widest registers);
 * lane k of every partial sum holds the keys j = k mod LANES. */
typedef float v16 __attribute__((vector_size(LANES * sizeof(float))));
/* the helpers below are always inlined into the ISA clones, so no vector
 * ever crosses a call boundary (GCC warns about the ABI regardless) */
#pragma GCC diagnostic ignored "-Wpsabi"
__attribute__((always_inline)) static inline v16 ld16(const float *p) {
  v16 v;
  memcpy(&v, p, sizeof v);
  return v;
}

/* s[j] = scale * sum_d q[d] kt[d][j] (d in order), j < pad(nv). */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void scores(float *s, const float *q, const float *kt, int64_t ld, int64_t nv,
                   int64_t hd, float scale) {
  for (int64_t j = 0; j < nv; j += LANES) {
    v16 acc = q[0] * ld16(kt + j);
    for (int64_t d = 1; d < hd; d++) acc += q[d] * ld16(kt + d * ld + j);
    acc *= scale;
    memcpy(s + j, &acc, sizeof acc);
  }
}

__attribute__((always_inline)) static inline float lane_sum(v16 a) {
  float sum = a[0];
  for (int k = 1; k < LANES; k++) sum += a[k];
  return sum;
}

/* o[d] = sum_j p[j] vt[d][j] over j < pad(nv) (p is 0 past nv): LANES
 * interleaved partial sums per d, added in lane order at the end; 8 values
 * of d at a time while they last (their sums stay in registers). */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void values(float *o, const float *p, const float *vt, int64_t ld, int64_t nv,
                   int64_t hd) {
  int64_t d = 0;
  for (; d + 8 <= hd; d += 8) {
    const float *v = vt + d * ld;
    v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    for (int64_t j = 0; j < nv; j += LANES) {
      v16 pj = ld16(p + j);
      a0 += pj * ld16(v + j);
      a1 += pj * ld16(v + ld + j);
      a2 += pj * ld16(v + 2 * ld + j);
      a3 += pj * ld16(v + 3 * ld + j);
      a4 += pj * ld16(v + 4 * ld + j);
      a5 += pj * ld16(v + 5 * ld + j);
      a6 += pj * ld16(v + 6 * ld + j);
      a7 += pj * ld16(v + 7 * ld + j);
    }
    o[d] = lane_sum(a0), o[d + 1] = lane_sum(a1), o[d + 2] = lane_sum(a2);
    o[d + 3] = lane_sum(a3), o[d + 4] = lane_sum(a4), o[d + 5] = lane_sum(a5);
    o[d + 6] = lane_sum(a6), o[d + 7] = lane_sum(a7);
  }
  for (; d < hd; d++) {
    v16 a = {0};
    for (int64_t j = 0; j < nv; j += LANES) a += ld16(p + j) * ld16(vt + d * ld + j);
    o[d] = lane_sum(a);
  }
}

/* t[d][j] = x[j][d] for j < n, 0 for n <= j < pad(n) (ld = pad of all). */
static void transpose_in(float *t, int64_t ld, const float *x, int64_t xs, int64_t n,
                         int64_t hd) {
  for (int64_t j = 0; j < n; j++)
    for (int64_t d = 0; d < hd; d++) t[d * ld + j] = x[j * xs + d];
}

void qz_fwdk_attn_small(float *q, int64_t qs, int64_t nQ, const float *kA,
                        const float *vA, int64_t nA, const float *kB, const float *vB,
                        int64_t kvs, int64_t hd, float scale, float *ws) {
  const int64_t n = nA + nQ, ld = pad(n);
  float *kt = ws, *vt = ws + hd * ld, *s = ws + 2 * hd * ld;
  transpose_in(kt, ld, kA, kvs, nA, hd);
  transpose_in(vt, ld, vA, kvs, nA, hd);
  transpose_in(kt + nA, ld, kB, kvs, nQ, hd);
  transpose_in(vt + nA, ld, vB, kvs, nQ, hd);
  for (int64_t d = 0; d < hd; d++)
    for (int64_t j = n; j < ld; j++) kt[d * ld + j] = vt[d * ld + j] = 0.0f;
  float qr[QZ_FWDK_ATTN_SMALL_HD];
  for (int64_t r = 0; r < nQ; r++) {
    const int64_t nv = nA + r + 1;
    float *row = q + r * qs;
    for (int64_t d = 0; d < hd; d++) qr[d] = row[d];
    scores(s, qr, kt, ld, nv, hd, scale);
    qz_fwdk_softmax_row(s, nv, pad(nv)); /* zeros past nv */
    values(row, s, vt, ld, nv, hd);
  }
}
