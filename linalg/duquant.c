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

/* First index of the largest u (>= 0; within TIE). */
static int64_t first_max(const double *u, int64_t b) {
  double m = 0;
  for (int64_t i = 0; i < b; i++) m = u[i] > m ? u[i] : m;
  for (int64_t i = 0; i < b; i++)
    if (u[i] >= m * (1 - TIE)) return i;
  return 0;
}

/* Column maxima of |X| [m, b] into cm [b]; returns the largest. */
static double col_absmax(const double *X, int64_t m, int64_t b, double *cm) {
  double p = 0;
  for (int64_t j = 0; j < b; j++) cm[j] = 0;
  for (int64_t r = 0; r < m; r++)
    for (int64_t j = 0; j < b; j++) cm[j] = fmax(cm[j], fabs(X[r * b + j]));
  for (int64_t j = 0; j < b; j++) p = fmax(p, cm[j]);
  return p;
}

/* Rows of X [m, b] <- X E_k H E_k: swap 0 and k, normalized Walsh-Hadamard
 * transform (Sylvester order), swap back. */
static void apply_step(double *X, int64_t m, int64_t k, int64_t b) {
  const double nrm = 1.0 / sqrt((double)b);
  for (int64_t r = 0; r < m; r++) {
    double *v = X + r * b, t = v[0];
    v[0] = v[k];
    v[k] = t;
    qz_fwht(v, b);
    for (int64_t i = 0; i < b; i++) v[i] *= nrm;
    t = v[0];
    v[0] = v[k];
    v[k] = t;
  }
}

/* Scratch of a build (allocated once per build). */
typedef struct {
  double *S;      /* [m, n] the sample */
  double *X, *Y;  /* [m, b] one block of it */
  double *M;      /* [b, b] */
  double *cm;     /* [max(n, b)] column maxima */
  double *t;      /* [max(n, b)] */
  int64_t *ids;   /* [b] greedy steps */
  int32_t *order; /* [n] */
  int64_t *fill;  /* [n / b] */
} scratch;

/* The greedy rotation of one block from the sample X [m, b] (double,
 * contiguous) into R [b, b] (float); X is left as X R (with the float R). */
static void greedy_block(scratch *w, double *X, int64_t m, int64_t b, float *R) {
  double *Y = w->Y, *M = w->M, *cm = w->cm, *t = w->t;
  int64_t *ids = w->ids;
  memcpy(Y, X, (size_t)(m * b) * sizeof *Y);
  double best_peak = col_absmax(Y, m, b, cm);
  int64_t best = 0, nsteps = b > 1 ? b : 0;
  for (int64_t s = 0; s < nsteps; s++) {
    ids[s] = first_max(cm, b);
    apply_step(Y, m, ids[s], b);
    double pk = col_absmax(Y, m, b, cm);
    if (pk < best_peak * (1 - TIE)) best_peak = pk, best = s + 1;
  }
  for (int64_t i = 0; i < b * b; i++) M[i] = i / b == i % b ? 1.0 : 0.0;
  for (int64_t s = 0; s < best; s++) apply_step(M, b, ids[s], b);
  for (int64_t i = 0; i < b * b; i++) R[i] = (float)M[i];
  for (int64_t r = 0; r < m; r++) { /* X <- X R, sums in index order */
    for (int64_t j = 0; j < b; j++) {
      double acc = 0;
      for (int64_t i = 0; i < b; i++) acc += X[r * b + i] * (double)R[i * b + j];
      t[j] = acc;
    }
    memcpy(X + r * b, t, (size_t)b * sizeof *t);
  }
}

/* Greedy rotations of every block of the sample S [m, n] into R [n, b]. */
static void greedy_all(scratch *w, double *S, int64_t m, int64_t n, int64_t b, float *R) {
  double *X = w->X;
  for (int64_t k = 0; k < n / b; k++) {
    for (int64_t r = 0; r < m; r++)
      memcpy(X + r * b, S + r * n + k * b, (size_t)b * sizeof *X);
    greedy_block(w, X, m, b, R + k * b * b);
    for (int64_t r = 0; r < m; r++)
      memcpy(S + r * n + k * b, X + r * b, (size_t)b * sizeof *X);
  }
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
static void zigzag(scratch *w, const double *u, int64_t n, int64_t b, int32_t *perm) {
  const int64_t K = n / b;
  int32_t *order = w->order;
  int64_t *fill = w->fill;
  for (int64_t k = 0; k < K; k++) fill[k] = 0;
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
}

int qz_rot_duq_build(qz_rot *r, int layer, int g, const float *amax, const float *wmax,
                     const float *sample, int64_t m) {
  duq_group *d = &r->dq[g];
  const int64_t n = d->n, b = d->b, nb = n > b ? n : b, mm = m > 0 ? m : 1;
  const double a = r->p.smooth;
  scratch w = {0};
  int st = qz_alloc((size_t)(mm * n), sizeof(double), "DuQuant sample", &w.S);
  if (!st) st = qz_alloc((size_t)(mm * b), sizeof(double), "DuQuant block", &w.X);
  if (!st) st = qz_alloc((size_t)(mm * b), sizeof(double), "DuQuant block", &w.Y);
  if (!st) st = qz_alloc((size_t)(b * b), sizeof(double), "DuQuant rotation", &w.M);
  if (!st) st = qz_alloc((size_t)nb, sizeof(double), "DuQuant maxima", &w.cm);
  if (!st) st = qz_alloc((size_t)nb, sizeof(double), "DuQuant row", &w.t);
  if (!st) st = qz_alloc((size_t)b, sizeof(int64_t), "DuQuant steps", &w.ids);
  if (!st) st = qz_alloc((size_t)n, sizeof(int32_t), "DuQuant order", &w.order);
  if (!st) st = qz_alloc((size_t)(n / b), sizeof(int64_t), "DuQuant blocks", &w.fill);
  QZ_CALL_DONE(st);
  for (int64_t j = 0; j < n; j++) {
    d->amax[j] = amax[j];
    d->wmax[j] = wmax[j];
    double s = 1.0;
    if (a > 0) s = pow(fmax(amax[j], 1e-5), a) / pow(fmax(wmax[j], 1e-5), 1 - a);
    d->s[j] = (float)fmax(s, 1e-5);
  }
  for (int64_t i = 0; i < m * n; i++) w.S[i] = (double)sample[i] / d->s[i % n];
  greedy_all(&w, w.S, m, n, b, d->r1);
  for (int64_t i = 0; i < n; i++) d->perm[i] = (int32_t)i;
  if (r->p.perm) {
    double *cm = w.cm;
    for (int64_t j = 0; j < n; j++) cm[j] = 0;
    for (int64_t t = 0; t < m; t++)
      for (int64_t j = 0; j < n; j++) cm[j] = fmax(cm[j], fabs(w.S[t * n + j]));
    zigzag(&w, cm, n, b, d->perm);
    for (int64_t t = 0; t < m; t++) {
      for (int64_t i = 0; i < n; i++) w.t[i] = w.S[t * n + d->perm[i]];
      memcpy(w.S + t * n, w.t, (size_t)n * sizeof *w.t);
    }
  }
  greedy_all(&w, w.S, m, n, b, d->r2);
  for (int64_t i = 0; i < n; i++) d->permf[i] = (float)d->perm[i];
  d->layer = layer;
done:
  qz_free(&w.S);
  qz_free(&w.X);
  qz_free(&w.Y);
  qz_free(&w.M);
  qz_free(&w.cm);
  qz_free(&w.t);
  qz_free(&w.ids);
  qz_free(&w.order);
  qz_free(&w.fill);
  return st;
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
