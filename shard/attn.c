/* Causal attention of one head, fused for small head dimensions.
 *
 * With a head dimension of 8 or 16 (the tiny test models, and small models
 * generally) the score and value products are sgemms with an inner
 * dimension of hd: OpenBLAS spends most of their time packing and zeroing,
 * and the scores make a trip through memory between the two products and
 * the softmax. Here four query rows at a time are scored against the keys
 * transposed once per head ([hd][nkeys], so the products run along the
 * keys, 16 lanes wide), soft-maxed and applied to the values while the rows
 * are in L1. Every row is computed by the same code in the same order
 * whatever the window, batch, rank or query block: results depend on
 * nothing but the row's own inputs. Not collective.
 */
#include "fwd_kernels.h"

#include <stddef.h>
#include <string.h>

#define LANES 16
#define RB 4 /* query rows per pass (see below) */

static int64_t pad(int64_t n) { return (n + LANES - 1) / LANES * LANES; }

int64_t qz_fwdk_attn_small_ws(int64_t hd, int64_t nkeys) {
  return (2 * hd + RB) * pad(nkeys);
}

int64_t qz_fwdk_attn_small_ld(int64_t hd, int64_t nkeys) {
  return (qz_fwdk_attn_small_ws(hd, nkeys) + 15) / 16 * 16;
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

/* Rows are processed RB at a time: one pass over the transposed keys and
 * values serves RB query rows (the rows of a block see keys up to its last
 * row's; a row's extra keys get probability 0 and add exact zeros, so its
 * result is the same whichever block it falls in). */

/* s[r][j] = scale * sum_d q[r][d] kt[d][j] (d in order), j < pad(nv). */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void scores(float *s, const float *q, const float *kt, int64_t ld, int64_t nv,
                   int64_t hd, float scale) {
  const float *q0 = q, *q1 = q + hd, *q2 = q + 2 * hd, *q3 = q + 3 * hd;
  for (int64_t j = 0; j < nv; j += LANES) {
    v16 k = ld16(kt + j);
    v16 a0 = q0[0] * k, a1 = q1[0] * k, a2 = q2[0] * k, a3 = q3[0] * k;
    for (int64_t d = 1; d < hd; d++) {
      k = ld16(kt + d * ld + j);
      a0 += q0[d] * k, a1 += q1[d] * k, a2 += q2[d] * k, a3 += q3[d] * k;
    }
    a0 *= scale, a1 *= scale, a2 *= scale, a3 *= scale;
    memcpy(s + j, &a0, sizeof a0);
    memcpy(s + ld + j, &a1, sizeof a1);
    memcpy(s + 2 * ld + j, &a2, sizeof a2);
    memcpy(s + 3 * ld + j, &a3, sizeof a3);
  }
}

__attribute__((always_inline)) static inline float lane_sum(v16 a) {
  float sum = a[0];
  for (int k = 1; k < LANES; k++) sum += a[k];
  return sum;
}

/* o[r][d] = sum_j p[r][j] vt[d][j] over j < pad(nv) (p is 0 past each
 * row's keys): LANES interleaved partial sums per (r, d), added in lane
 * order at the end; 4 values of d at a time (16 sums in registers). */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void values(float *o, const float *p, const float *vt, int64_t ld, int64_t nv,
                   int64_t hd) {
  const float *p0 = p, *p1 = p + ld, *p2 = p + 2 * ld, *p3 = p + 3 * ld;
  int64_t d = 0;
  for (; d + 4 <= hd; d += 4) {
    const float *v = vt + d * ld;
    v16 a[RB][4] = {{{0}}};
    for (int64_t j = 0; j < nv; j += LANES) {
      v16 x0 = ld16(p0 + j), x1 = ld16(p1 + j), x2 = ld16(p2 + j), x3 = ld16(p3 + j);
      for (int dd = 0; dd < 4; dd++) {
        v16 y = ld16(v + dd * ld + j);
        a[0][dd] += x0 * y, a[1][dd] += x1 * y, a[2][dd] += x2 * y, a[3][dd] += x3 * y;
      }
    }
    for (int r = 0; r < RB; r++)
      for (int dd = 0; dd < 4; dd++) o[r * hd + d + dd] = lane_sum(a[r][dd]);
  }
  for (; d < hd; d++) {
    const float *v = vt + d * ld;
    v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (int64_t j = 0; j < nv; j += LANES) {
      v16 y = ld16(v + j);
      a0 += ld16(p0 + j) * y, a1 += ld16(p1 + j) * y;
      a2 += ld16(p2 + j) * y, a3 += ld16(p3 + j) * y;
    }
    o[d] = lane_sum(a0), o[hd + d] = lane_sum(a1);
    o[2 * hd + d] = lane_sum(a2), o[3 * hd + d] = lane_sum(a3);
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
  float *kt = ws, *vt = ws + hd * ld, *s = ws + 2 * hd * ld; /* s: [RB][ld] */
  transpose_in(kt, ld, kA, kvs, nA, hd);
  transpose_in(vt, ld, vA, kvs, nA, hd);
  transpose_in(kt + nA, ld, kB, kvs, nQ, hd);
  transpose_in(vt + nA, ld, vB, kvs, nQ, hd);
  for (int64_t d = 0; d < hd; d++)
    for (int64_t j = n; j < ld; j++) kt[d * ld + j] = vt[d * ld + j] = 0.0f;
  float qb[RB * QZ_FWDK_ATTN_SMALL_HD], ob[RB * QZ_FWDK_ATTN_SMALL_HD];
  for (int64_t r0 = 0; r0 < nQ; r0 += RB) {
    const int64_t nr = nQ - r0 < RB ? nQ - r0 : RB, nv = nA + r0 + nr;
    for (int64_t r = 0; r < RB; r++) /* missing rows repeat the last one */
      memcpy(qb + r * hd, q + (r0 + (r < nr ? r : nr - 1)) * qs, sizeof(float) * (size_t)hd);
    scores(s, qb, kt, ld, nv, hd, scale);
    for (int64_t r = 0; r < RB; r++) /* row r sees keys 0..nA+r0+r: zeros past */
      qz_fwdk_softmax_row(s + r * ld, nA + r0 + (r < nr ? r : nr - 1) + 1, pad(nv));
    values(ob, s, vt, ld, nv, hd);
    for (int64_t r = 0; r < nr; r++)
      memcpy(q + (r0 + r) * qs, ob + r * hd, sizeof(float) * (size_t)hd);
  }
}
