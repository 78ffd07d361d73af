/* Hadamard matrices (Sylvester, Paley I/II over GF(p^e), doubling) and the
 * rotation (K (x) H_{2^m}) / norm with a fast Walsh-Hadamard transform.
 * See include/mpiquant/hadamard.h for the constructions. */
#include "mpiquant/hadamard.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/mem.h"

/* ---- GF(q), q = p^e (e <= 3): elements as base-p digit vectors --------- */

typedef struct {
  int p, e, q;
  int f[4]; /* monic irreducible x^e + f[e-1] x^(e-1) + ... + f[0] (e >= 2) */
} gf;

static int is_prime(int n) {
  if (n < 2) return 0;
  for (int d = 2; d * d <= n; d++)
    if (n % d == 0) return 0;
  return 1;
}

/* q = p^e with e <= 3 (larger exponents are not needed for the orders we
 * build: 3^4 = 81 would give 82 or 164, neither a multiple of 4 reached
 * only that way). */
static int prime_power(int q, int *p, int *e) {
  for (int pp = 2; pp <= q; pp++) {
    if (!is_prime(pp) || q % pp) continue;
    int n = q, k = 0;
    while (n % pp == 0) n /= pp, k++;
    if (n != 1 || k > 3) return 0;
    *p = pp;
    *e = k;
    return 1;
  }
  return 0;
}

/* a * b in GF(q): digit vectors of length e. */
static void gf_mul(const gf *F, const int *a, const int *b, int *out) {
  int prod[6] = {0};
  for (int i = 0; i < F->e; i++)
    for (int j = 0; j < F->e; j++) prod[i + j] = (prod[i + j] + a[i] * b[j]) % F->p;
  for (int k = 2 * F->e - 2; k >= F->e; k--) { /* x^e = -(f[e-1] x^(e-1) + ...) */
    int c = prod[k];
    prod[k] = 0;
    for (int i = 0; i < F->e; i++)
      prod[k - F->e + i] = ((prod[k - F->e + i] - c * F->f[i]) % F->p + F->p) % F->p;
  }
  memcpy(out, prod, sizeof(int) * (size_t)F->e);
}

/* degree 2 and 3 polynomials are irreducible iff they have no root */
static int find_irreducible(gf *F) {
  if (F->e == 1) return 1;
  int n = 1;
  for (int i = 0; i < F->e; i++) n *= F->p;
  for (int code = 0; code < n; code++) {
    int c = code, root = 0;
    for (int i = 0; i < F->e; i++, c /= F->p) F->f[i] = c % F->p;
    if (F->f[0] == 0) continue;
    for (int x = 0; x < F->p && !root; x++) {
      long v = 1; /* x^e + ... evaluated by Horner */
      for (int i = F->e - 1; i >= 0; i--) v = (v * x + F->f[i]) % F->p;
      root = v == 0;
    }
    if (!root) return 1;
  }
  return 0;
}

/* chi[z] for every element index z: 0, +1 (nonzero square) or -1. */
static int quadratic_character(int q, signed char *chi) {
  gf F = {0};
  F.q = q;
  if (!prime_power(q, &F.p, &F.e) || !find_irreducible(&F)) return 0;
  long half = (q - 1) / 2;
  for (int z = 0; z < q; z++) {
    int base[3] = {0}, acc[3] = {1, 0, 0}, t[3];
    for (int i = 0, c = z; i < F.e; i++, c /= F.p) base[i] = c % F.p;
    if (z == 0) {
      chi[z] = 0;
      continue;
    }
    for (long k = half; k > 0; k >>= 1) { /* acc = base^half */
      if (k & 1) {
        gf_mul(&F, acc, base, t);
        memcpy(acc, t, sizeof t);
      }
      gf_mul(&F, base, base, t);
      memcpy(base, t, sizeof t);
    }
    int one = acc[0] == 1;
    for (int i = 1; i < F.e; i++) one &= acc[i] == 0;
    chi[z] = one ? 1 : -1;
  }
  return 1;
}

/* index of (a - b) in GF(q) (digit-wise mod p) */
static int gf_sub(int a, int b, int p, int e) {
  int r = 0, pw = 1;
  for (int i = 0; i < e; i++, a /= p, b /= p, pw *= p) r += (((a % p) - (b % p)) % p + p) % p * pw;
  return r;
}

qz_had_kind qz_hadamard_kind(int k) {
  if (k == 1 || k == 2) return QZ_HAD_SYLVESTER;
  if (k < 4 || k % 4) return QZ_HAD_NONE;
  if ((k & (k - 1)) == 0) return QZ_HAD_SYLVESTER;
  int p, e;
  if (prime_power(k - 1, &p, &e) && (k - 1) % 4 == 3) return QZ_HAD_PALEY1;
  if (k % 2 == 0 && prime_power(k / 2 - 1, &p, &e) && (k / 2 - 1) % 4 == 1) return QZ_HAD_PALEY2;
  if (qz_hadamard_kind(k / 2) != QZ_HAD_NONE) return QZ_HAD_DOUBLING;
  return QZ_HAD_NONE;
}

static void paley1(int q, const signed char *chi, int8_t *h) {
  int k = q + 1, p = 0, e = 0;
  prime_power(q, &p, &e);
  for (int i = 0; i < k; i++)
    for (int j = 0; j < k; j++) {
      int v;
      if (i == 0) v = 1;
      else if (j == 0) v = -1;
      else v = chi[gf_sub(j - 1, i - 1, p, e)] + (i == j); /* Q + I */
      h[i * k + j] = (int8_t)v;
    }
}

static void paley2(int q, const signed char *chi, int8_t *h) {
  int n = q + 1, k = 2 * n, p = 0, e = 0;
  prime_power(q, &p, &e);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      /* symmetric conference matrix S = [[0, 1^T], [1, Q]] */
      int s = i == j ? 0 : (i == 0 || j == 0) ? 1 : chi[gf_sub(j - 1, i - 1, p, e)];
      int8_t b[4];
      if (s == 0) { b[0] = 1; b[1] = -1; b[2] = -1; b[3] = -1; }
      else { b[0] = (int8_t)s; b[1] = (int8_t)s; b[2] = (int8_t)s; b[3] = (int8_t)-s; }
      h[(2 * i) * k + 2 * j] = b[0];
      h[(2 * i) * k + 2 * j + 1] = b[1];
      h[(2 * i + 1) * k + 2 * j] = b[2];
      h[(2 * i + 1) * k + 2 * j + 1] = b[3];
    }
}

int qz_hadamard(int k, int8_t *h) {
  qz_had_kind kind = qz_hadamard_kind(k);
  QZ_CHECK(kind != QZ_HAD_NONE, QZ_ERR_ARG, "no Hadamard matrix of order %d is constructible "
           "here (Sylvester, Paley I/II, doubling)", k);
  if (k == 1) {
    h[0] = 1;
    return QZ_OK;
  }
  if (kind == QZ_HAD_SYLVESTER || kind == QZ_HAD_DOUBLING) {
    int half = k / 2;
    int8_t *s = NULL;
    QZ_CALL(qz_alloc((size_t)half * half, 1, "Hadamard half", &s));
    int st = qz_hadamard(half, s);
    for (int i = 0; st == QZ_OK && i < half; i++)
      for (int j = 0; j < half; j++) {
        int8_t v = s[i * half + j];
        h[i * k + j] = v;
        h[i * k + j + half] = v;
        h[(i + half) * k + j] = v;
        h[(i + half) * k + j + half] = (int8_t)-v;
      }
    qz_free(&s);
    return st;
  }
  int q = kind == QZ_HAD_PALEY1 ? k - 1 : k / 2 - 1;
  signed char *chi = NULL;
  QZ_CALL(qz_alloc((size_t)q, 1, "quadratic character", &chi));
  int ok = quadratic_character(q, chi);
  if (ok) {
    if (kind == QZ_HAD_PALEY1) paley1(q, chi, h);
    else paley2(q, chi, h);
  }
  qz_free(&chi);
  QZ_CHECK(ok, QZ_ERR_INTERNAL, "GF(%d): no irreducible polynomial found", q);
  return QZ_OK;
}

/* ---- rotation --------------------------------------------------------- */

struct qz_rotation {
  int64_t d, k, n2;  /* d = k * n2, n2 a power of two */
  double *K;         /* [k * k] row-major, includes 1/sqrt(k) for Hadamard K */
  double norm2;      /* 1 / sqrt(n2) */
  double *buf;       /* [d] */
  char kind[96];
};

/* Seeded standard normals (xorshift64* + Box-Muller): reproducible
 * everywhere, independent of libc's rand. */
static double gauss(uint64_t *s) {
  double u[2];
  for (int i = 0; i < 2; i++) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    u[i] = ((double)((*s * 2685821657736338717ULL) >> 11) + 0.5) / 9007199254740992.0;
  }
  return sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

/* Q of the QR factorization of a seeded Gaussian k x k matrix, with
 * diag(R) > 0 (Householder, in double): a Haar-random orthogonal matrix. */
static int random_orthogonal(int64_t k, uint64_t seed, double *Q) {
  double *A = NULL, *v = NULL;
  QZ_CALL(qz_alloc((size_t)(k * k), sizeof(double), "random matrix", &A));
  int st = qz_alloc((size_t)k, sizeof(double), "Householder vector", &v);
  if (st) {
    qz_free(&A);
    return st;
  }
  uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
  if (!s) s = 1;
  for (int64_t i = 0; i < k * k; i++) A[i] = gauss(&s);
  for (int64_t i = 0; i < k * k; i++) Q[i] = 0;
  for (int64_t i = 0; i < k; i++) Q[i * k + i] = 1;
  /* A = H_0 H_1 ... R; accumulate Q = H_0 H_1 ... (applied to I from the right) */
  for (int64_t j = 0; j < k; j++) {
    double nrm = 0;
    for (int64_t i = j; i < k; i++) nrm += A[i * k + j] * A[i * k + j];
    nrm = sqrt(nrm);
    double a0 = A[j * k + j], alpha = a0 > 0 ? -nrm : nrm;
    for (int64_t i = 0; i < k; i++) v[i] = i < j ? 0 : A[i * k + j];
    v[j] -= alpha;
    double vv = 0;
    for (int64_t i = j; i < k; i++) vv += v[i] * v[i];
    if (vv == 0) continue;
    for (int64_t c = j; c < k; c++) { /* A <- (I - 2 v v^T / vv) A */
      double t = 0;
      for (int64_t i = j; i < k; i++) t += v[i] * A[i * k + c];
      t *= 2 / vv;
      for (int64_t i = j; i < k; i++) A[i * k + c] -= t * v[i];
    }
    for (int64_t r = 0; r < k; r++) { /* Q <- Q (I - 2 v v^T / vv) */
      double t = 0;
      for (int64_t i = j; i < k; i++) t += Q[r * k + i] * v[i];
      t *= 2 / vv;
      for (int64_t i = j; i < k; i++) Q[r * k + i] -= t * v[i];
    }
  }
  for (int64_t j = 0; j < k; j++) /* diag(R) > 0: flip column j of Q */
    if (A[j * k + j] < 0)
      for (int64_t r = 0; r < k; r++) Q[r * k + j] = -Q[r * k + j];
  qz_free(&A);
  qz_free(&v);
  return QZ_OK;
}

int qz_rotation_create(int64_t d, uint64_t seed, qz_rotation **out) {
  *out = NULL;
  QZ_CHECK(d >= 1 && d <= (1LL << 40), QZ_ERR_ARG, "rotation dimension %lld", (long long)d);
  int64_t c = d, v = 0;
  while (c % 2 == 0) c /= 2, v++;
  int64_t k = 0;
  for (int64_t j = 0; j <= v && !k; j++)
    if ((c << j) <= 4096 && qz_hadamard_kind((int)(c << j)) != QZ_HAD_NONE) k = c << j;
  int hadamard = k > 0;
  if (!hadamard) k = c;
  QZ_CHECK(k <= 4096, QZ_ERR_UNSUPPORTED,
           "rotation of dimension %lld: its odd part %lld is too large for a dense factor "
           "(at most 4096)", (long long)d, (long long)k);
  qz_rotation *r = NULL;
  QZ_CALL(qz_calloc(1, sizeof *r, "rotation", &r));
  int st = qz_alloc((size_t)(k * k), sizeof(double), "rotation factor", &r->K);
  if (!st) st = qz_alloc((size_t)d, sizeof(double), "rotation buffer", &r->buf);
  r->d = d;
  r->k = k;
  r->n2 = d / k;
  r->norm2 = 1.0 / sqrt((double)r->n2);
  int m = 0;
  while ((1LL << m) < r->n2) m++;
  if (!st && hadamard) {
    int8_t *h = NULL;
    st = qz_alloc((size_t)(k * k), 1, "Hadamard matrix", &h);
    if (!st) st = qz_hadamard((int)k, h);
    for (int64_t i = 0; !st && i < k * k; i++) r->K[i] = h[i] / sqrt((double)k);
    qz_free(&h);
    static const char *names[] = {"", "Sylvester", "Paley I", "Paley II", "doubling"};
    snprintf(r->kind, sizeof r->kind, "hadamard %lld (%s) x 2^%d", (long long)k,
             names[qz_hadamard_kind((int)k)], m);
  } else if (!st) {
    st = random_orthogonal(k, seed, r->K);
    snprintf(r->kind, sizeof r->kind, "random-orthogonal %lld (seed %llu) x 2^%d",
             (long long)k, (unsigned long long)seed, m);
  }
  if (st) {
    qz_rotation_destroy(&r);
    return st;
  }
  *out = r;
  return QZ_OK;
}

void qz_rotation_destroy(qz_rotation **rp) {
  if (!rp || !*rp) return;
  qz_free(&(*rp)->K);
  qz_free(&(*rp)->buf);
  free(*rp);
  *rp = NULL;
}

int64_t qz_rotation_dim(const qz_rotation *r) { return r->d; }
const char *qz_rotation_kind(const qz_rotation *r) { return r->kind; }

void qz_fwht(double *v, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; j++) {
        double a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
}

void qz_rotation_apply_rows(const qz_rotation *r, float *x, int64_t n, int transpose) {
  const int64_t d = r->d, k = r->k, n2 = r->n2;
  double *t = r->buf; /* reused per row: one rotation per thread */
  for (int64_t row = 0; row < n; row++) {
    float *xr = x + row * d;
    /* x viewed as [k, n2]: FWHT of each of the k pieces (H is symmetric) */
    for (int64_t i = 0; i < d; i++) t[i] = xr[i];
    for (int64_t a = 0; a < k; a++) qz_fwht(t + a * n2, n2);
    /* mix the pieces: y[a', b] = sum_a K[a, a'] t[a, b]  (x Q), or K[a', a] (x Q^T) */
    for (int64_t b = 0; b < n2; b++) {
      double col[4096];
      for (int64_t a = 0; a < k; a++) col[a] = t[a * n2 + b];
      for (int64_t a2 = 0; a2 < k; a2++) {
        double s = 0;
        for (int64_t a = 0; a < k; a++)
          s += col[a] * (transpose ? r->K[a2 * k + a] : r->K[a * k + a2]);
        xr[a2 * n2 + b] = (float)(s * r->norm2);
      }
    }
  }
}
