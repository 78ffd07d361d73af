/* DuQuant (Lin et al., NeurIPS 2024): smoothing, greedy block rotations
 * from the calibration inputs' outlier channels, the zigzag permutation
 * and a second rotation, per linear-input group (mpiquant/rotate.h).
 * Written from the paper's description; the conventions that make it
 * reproducible (ties, sum order, the stopping rule) are ours and
 * documented in rotate.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "rotate_impl.h"

#define TIE 1e-9 /* relative: values this close count as equal */

int qz_duq_group_of(qz_linear l) {
  switch (l) {
    case QZ_LIN_Q: case QZ_LIN_K: case QZ_LIN_V: return 0;
    case QZ_LIN_O: return 1;
    case QZ_LIN_GATE: case QZ_LIN_UP: return 2;
    case QZ_LIN_DOWN: return 3;
    default: return -1;
  }
}

const char *qz_duq_group_name(int g) {
  static const char *const names[QZ_DUQ_GROUPS] = {"qkv", "o", "gateup", "down"};
  return g >= 0 && g < QZ_DUQ_GROUPS ? names[g] : "?";
}

static int64_t block_of(int64_t n, int block) {
  int64_t b = 1;
  while (b * 2 <= block && n % (b * 2) == 0) b *= 2;
  return b;
}

int qz_duq_alloc(qz_rot *r, const qz_model_config *cfg) {
  const int64_t width[QZ_DUQ_GROUPS] = {cfg->hidden_size,
                                        cfg->num_attention_heads * cfg->head_dim,
                                        cfg->hidden_size, cfg->intermediate_size};
  int64_t nmax = 1;
  for (int g = 0; g < QZ_DUQ_GROUPS; g++) {
    duq_group *d = &r->dq[g];
    d->n = width[g];
    d->b = block_of(d->n, r->p.block);
    d->layer = -1;
    nmax = d->n > nmax ? d->n : nmax;
    QZ_CALL(qz_alloc((size_t)d->n, sizeof *d->s, "DuQuant smoothing", &d->s));
    QZ_CALL(qz_alloc((size_t)d->n, sizeof *d->permf, "DuQuant permutation", &d->permf));
    QZ_CALL(qz_alloc((size_t)d->n, sizeof *d->perm, "DuQuant permutation", &d->perm));
    QZ_CALL(qz_alloc((size_t)(d->n * d->b), sizeof *d->r1, "DuQuant rotation", &d->r1));
    QZ_CALL(qz_alloc((size_t)(d->n * d->b), sizeof *d->r2, "DuQuant rotation", &d->r2));
    QZ_CALL(qz_alloc((size_t)d->n, sizeof *d->amax, "DuQuant statistics", &d->amax));
    QZ_CALL(qz_alloc((size_t)d->n, sizeof *d->wmax, "DuQuant statistics", &d->wmax));
  }
  QZ_CALL(qz_alloc((size_t)(2 * nmax), sizeof *r->drow, "DuQuant row", &r->drow));
  return QZ_OK;
}

void qz_duq_free(qz_rot *r) {
  for (int g = 0; g < QZ_DUQ_GROUPS; g++) {
    duq_group *d = &r->dq[g];
    qz_free(&d->s);
    qz_free(&d->permf);
    qz_free(&d->perm);
    qz_free(&d->r1);
    qz_free(&d->r2);
    qz_free(&d->amax);
    qz_free(&d->wmax);
  }
  qz_free(&r->drow);
}

void qz_rot_duq_shape(const qz_rot *r, int g, int64_t *n, int64_t *b) {
  *n = r->dq[g].n;
  *b = r->dq[g].b;
}

/* ---- building --------------------------------------------------------- */

/* First index of the largest |u| (within TIE). */
static int64_t argmax_abs(const double *u, int64_t b) {
  double m = 0;
  for (int64_t i = 0; i < b; i++) m = fabs(u[i]) > m ? fabs(u[i]) : m;
  for (int64_t i = 0; i < b; i++)
    if (fabs(u[i]) >= m * (1 - TIE)) return i;
  return 0;
}

static double peak(const double *u, int64_t b) {
  double m = 0;
  for (int64_t i = 0; i < b; i++) m = fabs(u[i]) > m ? fabs(u[i]) : m;
  return m;
}

/* Normalized Sylvester Hadamard entry (i, j) of order b. */
static double had(int64_t i, int64_t j, int64_t b) {
  return (__builtin_popcountll((unsigned long long)(i & j)) & 1 ? -1.0 : 1.0) / sqrt((double)b);
}

/* Entry (i, j) of E_k H E_k (E_k swaps 0 and k). */
static double step_entry(int64_t i, int64_t j, int64_t k, int64_t b) {
  int64_t a = i == 0 ? k : i == k ? 0 : i, c = j == 0 ? k : j == k ? 0 : j;
  return had(a, c, b);
}

/* M [b, b] <- M R_k (sums in index order). */
static void mul_step(double *M, int64_t rows, int64_t k, int64_t b, double *t) {
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t j = 0; j < b; j++) {
      double s = 0;
      for (int64_t i = 0; i < b; i++) s += M[r * b + i] * step_entry(i, j, k, b);
      t[j] = s;
    }
    memcpy(M + r * b, t, (size_t)b * sizeof *t);
  }
}

/* The greedy rotation of one block from u [b] (u is left as u R) into
 * R [b, b] (float). */
static void greedy_block(double *u, int64_t b, float *R) {
  double *work = malloc((size_t)(b * (b + 2) + b + 1) * sizeof *work);
  int64_t *ids = malloc((size_t)(b + 1) * sizeof *ids);
  if (!work || !ids) abort(); /* b <= 4096: tiny; see qz_rot_create's checks */
  double *v = work, *t = work + b, *M = work + 2 * b, *peaks = M + b * b;
  memcpy(v, u, (size_t)b * sizeof *v);
  peaks[0] = peak(v, b);
  int64_t best = 0;
  for (int64_t s = 0; s < b && b > 1; s++) {
    ids[s] = argmax_abs(v, b);
    mul_step(v, 1, ids[s], b, t);
    peaks[s + 1] = peak(v, b);
    if (peaks[s + 1] < peaks[best] * (1 - TIE)) best = s + 1;
  }
  for (int64_t i = 0; i < b * b; i++) M[i] = i / b == i % b ? 1.0 : 0.0;
  for (int64_t s = 0; s < best; s++) mul_step(M, b, ids[s], b, t);
  for (int64_t i = 0; i < b * b; i++) R[i] = (float)M[i];
  /* u <- u R with the float R (what the model applies) */
  for (int64_t j = 0; j < b; j++) {
    double s = 0;
    for (int64_t i = 0; i < b; i++) s += u[i] * (double)R[i * b + j];
    t[j] = s;
  }
  memcpy(u, t, (size_t)b * sizeof *t);
  free(work);
  free(ids);
}

static const double *sort_vals;
static int cmp_desc(const void *a, const void *b) {
  int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
  double x = fabs(sort_vals[i]), y = fabs(sort_vals[j]);
  if (x > y * (1 + TIE) && x - y > 0) return -1;
  if (y > x * (1 + TIE) && y - x > 0) return 1;
  return i < j ? -1 : i > j;
}

/* The zigzag order of u [n] in blocks of b into perm. */
static void zigzag(const double *u, int64_t n, int64_t b, int32_t *perm) {
  const int64_t K = n / b;
  int32_t *order = malloc((size_t)n * sizeof *order);
  int64_t *fill = calloc(K > 0 ? (size_t)K : 1u, sizeof *fill);
  if (!order || !fill) abort();
  for (int64_t i = 0; i < n; i++) order[i] = (int32_t)i;
  sort_vals = u;
  qsort(order, (size_t)n, sizeof *order, cmp_desc);
  int64_t cur = 0, up = 1;
  for (int64_t i = 0; i < n; i++) {
    perm[cur * b + fill[cur]++] = order[i];
    if (K == 1) continue;
    if (up && cur == K - 1) up = 0;
    else if (!up && cur == 0) up = 1;
    else cur += up ? 1 : -1;
  }
  for (int64_t k = 0; k < K; k++) qsort(perm + k * b, (size_t)b, sizeof *perm, cmp_desc);
  sort_vals = NULL;
  free(order);
  free(fill);
}

void qz_rot_duq_build(qz_rot *r, int layer, int g, const float *amax, const float *wmax) {
  duq_group *d = &r->dq[g];
  const int64_t n = d->n, b = d->b;
  const double a = r->p.smooth;
  double *u = r->drow, *t = r->drow + n;
  for (int64_t j = 0; j < n; j++) {
    d->amax[j] = amax[j];
    d->wmax[j] = wmax[j];
    double s = 1.0;
    if (a > 0) s = pow(fmax(amax[j], 1e-5), a) / pow(fmax(wmax[j], 1e-5), 1 - a);
    d->s[j] = (float)fmax(s, 1e-5);
    u[j] = (double)amax[j] / d->s[j];
  }
  for (int64_t k = 0; k < n / b; k++) greedy_block(u + k * b, b, d->r1 + k * b * b);
  for (int64_t i = 0; i < n; i++) d->perm[i] = (int32_t)i;
  if (r->p.perm) zigzag(u, n, b, d->perm);
  for (int64_t i = 0; i < n; i++) t[i] = u[d->perm[i]];
  for (int64_t k = 0; k < n / b; k++) greedy_block(t + k * b, b, d->r2 + k * b * b);
  for (int64_t i = 0; i < n; i++) d->permf[i] = (float)d->perm[i];
  d->layer = layer;
}

/* ---- applying ---------------------------------------------------------- */

/* x [n] (double) <- x R blockwise (R [n, b] float), in index order. */
static void blocks_mul(double *x, const float *R, int64_t n, int64_t b, double *t) {
  for (int64_t k = 0; k < n / b; k++) {
    const double *xk = x + k * b;
    const float *Rk = R + k * b * b;
    for (int64_t j = 0; j < b; j++) {
      double s = 0;
      for (int64_t i = 0; i < b; i++) s += xk[i] * (double)Rk[i * b + j];
      t[k * b + j] = s;
    }
  }
}

void qz_duq_rows(qz_rot *r, int g, float *x, int64_t nrows, int weights) {
  const duq_group *d = &r->dq[g];
  const int64_t n = d->n, b = d->b;
  double *u = r->drow, *t = r->drow + n;
  for (int64_t row = 0; row < nrows; row++) {
    float *xr = x + row * n;
    for (int64_t j = 0; j < n; j++) u[j] = weights ? (double)xr[j] * d->s[j] : (double)xr[j] / d->s[j];
    blocks_mul(u, d->r1, n, b, t);
    for (int64_t i = 0; i < n; i++) u[i] = t[d->perm[i]];
    blocks_mul(u, d->r2, n, b, t);
    for (int64_t j = 0; j < n; j++) xr[j] = (float)t[j];
  }
}

void qz_rot_duq_fuse(qz_rot *r, int g, float *w, int64_t rows) { qz_duq_rows(r, g, w, rows, 1); }

float *qz_rot_duq_array(qz_rot *r, int g, int i, char *name, size_t len, int64_t *n0,
                        int64_t *n1) {
  static const char *const arr[QZ_DUQ_ARRAYS] = {"smooth", "perm", "r1", "r2", "amax", "wmax"};
  if (g < 0 || g >= QZ_DUQ_GROUPS || i < 0 || i >= QZ_DUQ_ARRAYS) return NULL;
  duq_group *d = &r->dq[g];
  snprintf(name, len, "duquant.%s.%s", qz_duq_group_name(g), arr[i]);
  *n0 = d->n;
  *n1 = i == 2 || i == 3 ? d->b : 1;
  float *p[QZ_DUQ_ARRAYS] = {d->s, d->permf, d->r1, d->r2, d->amax, d->wmax};
  return p[i];
}

int qz_rot_duq_loaded(qz_rot *r, int layer, int g) {
  duq_group *d = &r->dq[g];
  for (int64_t i = 0; i < d->n; i++) d->perm[i] = -1;
  for (int64_t i = 0; i < d->n; i++) {
    float f = d->permf[i];
    int64_t c = (int64_t)f;
    QZ_CHECK(f == (float)c && c >= 0 && c < d->n && d->perm[c] == -1, QZ_ERR_FORMAT,
             "block %d: aux duquant.%s.perm is not a permutation of 0..%lld (entry %lld = %g)",
             layer, qz_duq_group_name(g), (long long)(d->n - 1), (long long)i, (double)f);
    d->perm[c] = 0;
  }
  for (int64_t i = 0; i < d->n; i++) d->perm[i] = (int32_t)d->permf[i];
  for (int64_t i = 0; i < d->n; i++)
    QZ_CHECK(d->s[i] > 0 && isfinite(d->s[i]), QZ_ERR_FORMAT,
             "block %d: aux duquant.%s.smooth[%lld] = %g (must be > 0)", layer,
             qz_duq_group_name(g), (long long)i, (double)d->s[i]);
  d->layer = layer;
  return QZ_OK;
}
