/* Hadamard matrices and orthogonal rotations of size d = k * 2^m, for
 * rotation-based quantization (QuaRot-style R1..R4, issue "Rotations"):
 * Q = (H_k (x) H_{2^m}) / sqrt(d), applied by a fast Walsh-Hadamard
 * transform over the 2^m part and a dense k x k product.
 *
 * H_k (entries +-1, H H^T = k I) comes from constructions that are checked,
 * not from a table copied from elsewhere:
 *   - Sylvester: H_1 = [1], H_2n = [[H, H], [H, -H]];
 *   - Paley I:  k = q + 1, q a prime power = 3 (mod 4);
 *   - Paley II: k = 2 (q + 1), q a prime power = 1 (mod 4);
 *   - doubling [[H, H], [H, -H]] of a constructible k / 2.
 * Paley uses the quadratic character of GF(q), computed as
 * z^((q-1)/2) in GF(p)[x] / (an irreducible polynomial found by search), so
 * prime powers (25, 27, 49, ...) work like primes. Orders these cannot make
 * (e.g. 156 and 172, which need Williamson-type constructions) have no H_k:
 * qz_rotation_create then uses a seeded random orthogonal k x k factor
 * (Householder QR of a seeded Gaussian matrix, signs fixed so the result is
 * unique) and says so in its `kind`. Not collective; pure functions. */
#ifndef MPIQUANT_HADAMARD_H
#define MPIQUANT_HADAMARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How an order k is built: 0 = not constructible here. */
typedef enum {
  QZ_HAD_NONE = 0,
  QZ_HAD_SYLVESTER,
  QZ_HAD_PALEY1,
  QZ_HAD_PALEY2,
  QZ_HAD_DOUBLING,
} qz_had_kind;

/* Which construction makes a Hadamard matrix of order k (QZ_HAD_NONE if
 * none of ours does; k = 1, 2 and multiples of 4 only). */
qz_had_kind qz_hadamard_kind(int k);
/* H_k into h [k * k] (row-major, +-1). QZ_ERR_ARG if not constructible. */
int qz_hadamard(int k, int8_t *h);

/* An orthogonal d x d rotation Q = (K (x) H_{2^m}) / norm, d = k 2^m:
 * with c the odd part of d (d = c 2^v), k = c 2^j for the smallest j <= v
 * that makes a constructible Hadamard matrix (K = H_k, norm = sqrt(d));
 * if there is none, k = c and K is a seeded random orthogonal matrix (norm
 * = sqrt(2^m)). Not collective. */
typedef struct qz_rotation qz_rotation;
int qz_rotation_create(int64_t d, uint64_t seed, qz_rotation **out);
void qz_rotation_destroy(qz_rotation **r); /* accepts NULL, NULLs *r */
int64_t qz_rotation_dim(const qz_rotation *r);
/* "hadamard 12 (Paley I) x 2^9", "random-orthogonal 43 (seed 7) x 2^8", ... */
const char *qz_rotation_kind(const qz_rotation *r);
/* Rows of x [n, d] (row-major) in place: x_i <- x_i Q, or x_i Q^T with
 * transpose = 1 (the inverse). O(d log d + d k) per row, in double. */
void qz_rotation_apply_rows(const qz_rotation *r, float *x, int64_t n, int transpose);
/* Fast Walsh-Hadamard transform of v [n], n a power of two (unnormalized:
 * v <- H_n v, H_n Sylvester's), in place. */
void qz_fwht(double *v, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
