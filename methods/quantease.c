/* QuantEase: cyclic coordinate descent over this rank's rows with the
 * damped Hessian streamed in row panels (quantease.h, docs/quantease.md).
 *
 * Block structure (per sweep, per panel J = columns [j1, j2)):
 *   R_J = D Hd[:, J]            one sgemm per row tile, [T, n] x [n, bk]
 *                               (Hd symmetric: the panel Hd[J, :] transposed)
 *   for each row, j in J:       exact coordinate step, then the rank-1 effect
 *                               on R_J's later columns (in-block, BLAS-1)
 * D = W' - S - Q (S: outliers, else 0) is always the current residual,
 * so R_J is exact (fresh from the sgemm) at the start of every panel:
 * nothing drifts across panels, and the flops are 2 m n^2 per sweep in
 * sgemm + O(m n B) in-block. */
#include "mpiquant/quantease.h"

#include <cblas.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/chol.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/gptq.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/timing.h"

typedef struct {
  qz_hessian *H;
  MPI_Comm comm;
  int64_t m, n, B, T, ng;
  int64_t mp, pad0;      /* padded rows (tiles aligned to the global row
                            index), offset of local row 0 inside them */
  float maxq;
  double lambda;         /* absolute damping added to the diagonal */
  const uint8_t *dead;   /* [n] */
  const int32_t *gidx;   /* [n] group of each original column */
  const float *scale, *zero; /* [m, ng] fixed grid */
  float *wp;             /* [m, n] CD target: W' (dead columns zeroed) - hs */
  float *q;              /* [m, n] current dequantized solution */
  uint8_t *codes;        /* [m, n] */
  float *d;              /* [mp, n] W' - Q, padding rows stay 0 */
  float *rj;             /* [mp, B] R_J */
  double *hp;            /* [B, n] f64 panel of H */
  float *p;              /* [B, n] f32 panel of Hd */
  double *loss;          /* [m] exact-pass per-row objective */
  /* outlier-aware variant (S->s_out > 0) */
  int64_t s_out;         /* outliers in the whole layer */
  int64_t row0;          /* global index of local row 0 */
  double eta;            /* IHT step */
  float *w0;             /* [m, n] W' (wp = W' - hs is the CD target) */
  float *hs;             /* [m, n] sparse part, dense storage */
  float *cand;           /* [m, n] IHT candidate hs + eta R */
  uint64_t *keys;        /* [m n] selection keys */
} qe;

/* Rows [j1, j1 + bk) of Hd = H + dead fix + lambda I, as f32. Collective. */
static int fetch_panel(qe *S, int64_t j1, int64_t bk) {
  const int64_t n = S->n;
  qz_timer_stop(QZ_PHASE_QUANTIZE);
  int st = qz_hessian_get_rows(S->H, j1, bk, S->hp);
  qz_timer_start(QZ_PHASE_QUANTIZE);
  QZ_CALL(st);
  for (int64_t i = 0; i < bk; i++) {
    const double *h = S->hp + i * n;
    float *p = S->p + i * n;
    for (int64_t k = 0; k < n; k++) p[k] = (float)h[k];
    int64_t j = j1 + i;
    p[j] = (float)((S->dead[j] ? 1.0 : h[j]) + S->lambda);
  }
  return QZ_OK;
}

/* R_J = D P^T for every padded row tile (same call shape at any np). */
static void panel_gemm(qe *S, int64_t bk) {
  for (int64_t t = 0; t < S->mp; t += S->T)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)S->T, (int)bk,
                (int)S->n, 1.0f, S->d + t * S->n, (int)S->n, S->p, (int)S->n,
                0.0f, S->rj + t * S->B, (int)S->B);
}

/* Coordinate steps of one row over panel columns [j1, j1 + bk).  Returns
 * the sum of the accepted changes of sum_r D_r Hd D_r^T and counts them. */
static double row_steps(qe *S, int64_t r, int64_t j1, int64_t bk,
                        int64_t *nchg) {
  const int64_t n = S->n, pr = S->pad0 + r;
  float *dr = S->d + pr * n, *rr = S->rj + pr * S->B, *qr = S->q + r * n;
  const float *wr = S->wp + r * n;
  const float *sc = S->scale + r * S->ng, *zr = S->zero + r * S->ng;
  uint8_t *cr = S->codes + r * n;
  double acc = 0.0;
  for (int64_t i = 0; i < bk; i++) {
    const int64_t j = j1 + i;
    const float *pi = S->p + i * n;
    const float s = pi[j];
    const int32_t g = S->gidx[j];
    float qn;
    uint8_t c = qz_quant_one(qr[j] + rr[i] / s, sc[g], zr[g], S->maxq, &qn);
    float dq = qn - qr[j];
    if (dq == 0.0f) continue;
    /* f(D - dq e_j) - f(D) = dq^2 Hd_jj - 2 dq R_j: keep strict decreases
     * only (rounding in R could otherwise trade a tie for a tiny increase) */
    double ch = (double)s * (double)dq * (double)dq - 2.0 * (double)dq * (double)rr[i];
    if (!(ch < 0.0)) continue;
    acc += ch;
    (*nchg)++;
    qr[j] = qn;
    cr[j] = c;
    dr[j] = wr[j] - qn;
    for (int64_t k = i + 1; k < bk; k++) rr[k] -= dq * pi[j1 + k];
  }
  return acc;
}

/* One pass over all panels: a sweep (cd = 1) or the exact objective per row
 * into S->loss (cd = 0).  Collective (panel fetches). */
static int pass(qe *S, int cd, double *acc, int64_t *nchg) {
  if (!cd) memset(S->loss, 0, (size_t)S->m * sizeof(double));
  for (int64_t j1 = 0; j1 < S->n; j1 += S->B) {
    int64_t bk = S->B < S->n - j1 ? S->B : S->n - j1;
    QZ_CALL(fetch_panel(S, j1, bk));
    panel_gemm(S, bk);
    for (int64_t r = 0; r < S->m; r++) {
      if (cd) {
        *acc += row_steps(S, r, j1, bk, nchg);
      } else {
        const float *dr = S->d + (S->pad0 + r) * S->n + j1;
        const float *rr = S->rj + (S->pad0 + r) * S->B;
        double l = 0.0;
        for (int64_t i = 0; i < bk; i++) l += (double)dr[i] * (double)rr[i];
        S->loss[r] += 0.5 * l;
        if (S->s_out > 0) { /* IHT candidate: hs - eta grad, grad = -R */
          const float *hr = S->hs + r * S->n + j1;
          float *cr = S->cand + r * S->n + j1;
          for (int64_t i = 0; i < bk; i++)
            cr[i] = hr[i] + (float)S->eta * rr[i];
        }
      }
    }
  }
  return QZ_OK;
}


/* ---- outliers: global top-s by magnitude, iterative hard thresholding -- */

/* Key: |v| bits (monotone for non-negative floats), ties broken by the
 * smaller flat index, so the selection is unique and np-independent. */
static inline uint64_t sel_key(float v, uint64_t flat) {
  float a = fabsf(v);
  uint32_t b;
  memcpy(&b, &a, sizeof b);
  return ((uint64_t)b << 32) | (uint64_t)(0xFFFFFFFFu - (uint32_t)flat);
}

static int cmp_desc(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? 1 : (x > y ? -1 : 0);
}

/* Move the k largest of x[0..n) to the front (any order). */
static void top_k(uint64_t *x, int64_t n, int64_t k) {
  int64_t lo = 0, hi = n - 1;
  while (lo < hi && k > 0 && k < n) {
    uint64_t piv = x[lo + (hi - lo) / 2];
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (x[i] > piv) i++;
      while (x[j] < piv) j--;
      if (i <= j) {
        uint64_t t = x[i]; x[i] = x[j]; x[j] = t;
        i++; j--;
      }
    }
    if (k - 1 <= j) hi = j;
    else if (k - 1 >= i) lo = i;
    else break;
  }
}

/* Count of keys >= t in the descending list x[0..n). */
static int64_t count_ge(const uint64_t *x, int64_t n, uint64_t t) {
  int64_t lo = 0, hi = n; /* first index with x < t */
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (x[mid] >= t) lo = mid + 1; else hi = mid;
  }
  return lo;
}

/* hs = v on the s_out entries of largest |v| over all ranks, 0 elsewhere;
 * then the CD target wp = w0 - hs and the residual D = wp - q.
 * Collective (64 allreduces of one count). */
static int iht_select(qe *S, const float *v /* [m, n] */) {
  const int64_t mn = S->m * S->n;
  for (int64_t i = 0; i < mn; i++)
    S->keys[i] = sel_key(v[i], (uint64_t)(S->row0 * S->n + i));
  int64_t k = S->s_out < mn ? S->s_out : mn;
  top_k(S->keys, mn, k);
  qsort(S->keys, (size_t)k, sizeof(uint64_t), cmp_desc);
  uint64_t t = 0;
  for (int bit = 63; bit >= 0; bit--) {
    uint64_t c = t | ((uint64_t)1 << bit);
    int64_t cnt = count_ge(S->keys, k, c);
    QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &cnt, 1, MPI_INT64_T, MPI_SUM,
                              S->comm));
    qz_count_allreduce(S->comm, 8);
    if (cnt >= S->s_out) t = c;
  }
  for (int64_t r = 0; r < S->m; r++)
    for (int64_t j = 0; j < S->n; j++) {
      int64_t i = r * S->n + j;
      int on = sel_key(v[i], (uint64_t)(S->row0 * S->n + i)) >= t;
      S->hs[i] = on ? v[i] : 0.0f;
      float tw = S->w0[i] - S->hs[i];
      S->wp[i] = tw;
      if (S->q) S->d[(S->pad0 + r) * S->n + j] = tw - S->q[i];
    }
  return QZ_OK;
}

/* Largest eigenvalue of Hd by power iteration (16 products, panel by
 * panel).  Converges from below; the reference's step 1 / (2 lambda) is a
 * descent step as long as the estimate is >= lambda_max / 2.  Collective. */
static int lambda_max(qe *S, double *lam) {
  const int64_t n = S->n;
  float *v = NULL, *w = NULL;
  int st = qz_alloc((size_t)(2 * n), sizeof(float), "power iteration", &v);
  if (st) return st;
  w = v + n;
  for (int64_t j = 0; j < n; j++) v[j] = 1.0f + 0.01f * (float)(j % 7);
  double l = 0.0;
  for (int it = 0; it < 16 && !st; it++) {
    for (int64_t j1 = 0; j1 < n && !st; j1 += S->B) {
      int64_t bk = S->B < n - j1 ? S->B : n - j1;
      st = fetch_panel(S, j1, bk);
      if (!st)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)bk, (int)n, 1.0f, S->p,
                    (int)n, v, 1, 0.0f, w + j1, 1);
    }
    double vw = 0, vv = 0, ww = 0;
    for (int64_t j = 0; j < n; j++) {
      vw += (double)v[j] * w[j];
      vv += (double)v[j] * v[j];
      ww += (double)w[j] * w[j];
    }
    l = vv > 0 ? vw / vv : 0.0;
    double nw = sqrt(ww);
    for (int64_t j = 0; j < n; j++) v[j] = nw > 0 ? (float)(w[j] / nw) : 0.0f;
  }
  qz_free(&v);
  *lam = l;
  return st;
}

/* Exact start objective, the sweeps, the exact final objective.
 * Collective on S->comm. */
static int sweeps(qe *S, const qz_method_opts *o, qz_layer_result *res,
                  const char *name, double t_init, double t_sweep) {
  const int64_t m = S->m, n = S->n;
  MPI_Comm comm = S->comm;
  double f[2] = {0, 0};
  QZ_CALL(pass(S, 0, NULL, NULL));
  for (int64_t i = 0; i < m; i++) f[0] += S->loss[i];
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, f, 1, MPI_DOUBLE, MPI_SUM, comm));
  qz_count_allreduce(comm, 8);
  double obj = f[0], obj0 = f[0];
  if (res->objective) res->objective[0] = obj;
  if (S->s_out > 0) {
    double lam = 0.0;
    QZ_CALL(lambda_max(S, &lam));
    S->eta = lam > 0 ? 1.0 / (2.0 * lam) : 0.0;
    qz_debug("%s: QuantEase outliers: %lld, lambda_max(Hd) ~ %.6g", name,
             (long long)S->s_out, lam);
  }
  int it = 0;
  for (; it < o->iters; it++) {
    double acc = 0.0;
    int64_t nchg = 0;
    /* outliers: IHT step from the gradient of the last exact pass */
    if (S->s_out > 0 && it > 0) QZ_CALL(iht_select(S, S->cand));
    QZ_CALL(pass(S, 1, &acc, &nchg));
    double v[2] = {0.5 * acc, (double)nchg};
    QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_SUM, comm));
    qz_count_allreduce(comm, 16);
    obj += v[0];
    if (S->s_out > 0) { /* exact objective (the IHT step is not tracked) */
      QZ_CALL(pass(S, 0, NULL, NULL));
      obj = 0.0;
      for (int64_t i = 0; i < m; i++) obj += S->loss[i];
      QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &obj, 1, MPI_DOUBLE, MPI_SUM, comm));
      qz_count_allreduce(comm, 8);
    }
    if (res->objective) res->objective[it + 1] = obj;
    qz_debug("%s: QuantEase sweep %d: objective %.9g (%.0f coordinates changed)",
             name, it + 1, obj, v[1]);
    if (v[1] == 0.0 && S->s_out == 0) { /* a fixed point: later sweeps would change nothing */
      for (int k = it + 1; res->objective && k < o->iters; k++)
        res->objective[k + 1] = obj;
      it++;
      break;
    }
  }
  /* exact objective of the result: per-row losses */
  QZ_CALL(pass(S, 0, NULL, NULL));
  res->loss_local = 0.0;
  for (int64_t i = 0; i < m; i++) {
    if (res->losses) res->losses[i] = (float)S->loss[i];
    res->loss_local += S->loss[i];
  }
  f[1] = res->loss_local;
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, f + 1, 1, MPI_DOUBLE, MPI_SUM, comm));
  qz_count_allreduce(comm, 8);
  if (res->q) memcpy(res->q, S->q, (size_t)(m * n) * sizeof(float));
  if (S->s_out > 0) {
    int64_t c = 0;
    for (int64_t i = 0; i < m * n; i++) c += S->hs[i] != 0.0f;
    QZ_CALL(qz_alloc((size_t)c + 1, sizeof(int64_t), "outlier index", &res->outlier_idx));
    QZ_CALL(qz_alloc((size_t)c + 1, sizeof(float), "outlier values", &res->outlier_val));
    res->noutliers = 0;
    for (int64_t i = 0; i < m * n; i++)
      if (S->hs[i] != 0.0f) {
        res->outlier_idx[res->noutliers] = S->row0 * n + i;
        res->outlier_val[res->noutliers++] = S->hs[i];
      }
  }
  if (qz_grid_rank(qz_hessian_grid(S->H)) == 0)
    qz_info("%s: QuantEase (%s init) objective %.6g -> %.6g after %d sweep(s) "
            "(tracked %.6g, rel diff %.1e); init %.2f s, sweeps %.2f s", name,
            o->qe_init == QZ_QE_INIT_GPTQ ? "GPTQ" : "RTN", obj0, f[1], it,
            obj, f[1] != 0 ? fabs(obj - f[1]) / fabs(f[1]) : 0.0,
            t_sweep - t_init, MPI_Wtime() - t_sweep);
  return QZ_OK;
}

static int check_input(const qz_method_opts *o, const qz_layer *L) {
  const char *name = L->name ? L->name : "layer";
  QZ_CALL(qz_quant_spec_check(&o->spec));
  QZ_CHECK(o->iters >= 0, QZ_ERR_ARG, "%s: QuantEase iterations must be >= 0, "
           "got %d", name, o->iters);
  QZ_CHECK(o->qe_init == QZ_QE_INIT_GPTQ || o->qe_init == QZ_QE_INIT_RTN,
           QZ_ERR_ARG, "%s: unknown QuantEase initialisation %d", name,
           o->qe_init);
  QZ_CHECK(o->outlier_frac >= 0 && o->outlier_frac < 1, QZ_ERR_ARG,
           "%s: QuantEase outlier fraction must be in [0, 1), got %g", name,
           o->outlier_frac);
  QZ_CHECK(qz_hessian_dim(L->H) == L->in_features, QZ_ERR_ARG,
           "%s: Hessian is %lld x %lld, W has %lld input columns", name,
           (long long)qz_hessian_dim(L->H), (long long)qz_hessian_dim(L->H),
           (long long)L->in_features);
  return qz_layer_check_finite(L);
}

/* RTN start: the min/max grid of the original W (the paper's grid), dead
 * columns and damping from the diagonal as chol.h defines them. */
static int init_rtn(const qz_method_opts *o, const qz_layer *L,
                    qz_layer_result *res, const uint8_t *dead, double *lambda) {
  const int64_t n = L->in_features;
  const double *dg = qz_hessian_diag(L->H);
  QZ_CHECK(dg, QZ_ERR_ARG, "%s: QuantEase needs a ready Hessian",
           L->name ? L->name : "layer");
  double sum = 0.0;
  int64_t nd = 0;
  for (int64_t j = 0; j < n; j++) {
    nd += dead[j];
    sum += dead[j] ? 1.0 : dg[j];
  }
  *lambda = o->percdamp * (n > 0 ? sum / (double)n : 0.0);
  QZ_CALL(qz_rtn_quantize(&o->spec, L->nrows, n, L->w, res->codes, NULL,
                          res->scale, res->zero, res->g_idx));
  if (res->perm)
    for (int64_t j = 0; j < n; j++) res->perm[j] = (int32_t)j;
  res->percdamp_used = o->percdamp;
  res->ndead = nd;
  return QZ_OK;
}

/* The buffers, kept from linear to linear and grown to the largest (once
 * per shape); the GPTQ start's own. */
struct qz_qe_ws {
  qz_gptq_ws *gptq;
  int32_t *gidx;
  uint8_t *dead;
  float *wp, *w0, *hs, *cand, *q, *d, *rj, *p;
  uint64_t *keys;
  double *hp, *loss;
  size_t c_gidx, c_dead, c_wp, c_w0, c_hs, c_cand, c_q, c_d, c_rj, c_p, c_keys, c_hp, c_loss;
};

int qz_qe_ws_create(qz_qe_ws **out) {
  QZ_CALL(qz_calloc(1, sizeof **out, "QuantEase workspace", out));
  int st = qz_gptq_ws_create(&(*out)->gptq);
  if (st != QZ_OK) qz_free(out);
  return st;
}

void qz_qe_ws_destroy(qz_qe_ws **pw) {
  if (!pw || !*pw) return;
  qz_qe_ws *w = *pw;
  qz_gptq_ws_destroy(&w->gptq);
  qz_free(&w->gidx); qz_free(&w->dead); qz_free(&w->wp); qz_free(&w->w0);
  qz_free(&w->hs); qz_free(&w->cand); qz_free(&w->q); qz_free(&w->d); qz_free(&w->rj);
  qz_free(&w->p); qz_free(&w->keys); qz_free(&w->hp); qz_free(&w->loss);
  qz_free(pw);
}

int qz_quantease_quantize(const qz_method_opts *o, const qz_layer *L,
                          qz_layer_result *res) {
  qz_qe_ws *w = NULL;
  QZ_CALL(qz_qe_ws_create(&w));
  int st = qz_quantease_quantize_ws(w, o, L, res);
  qz_qe_ws_destroy(&w);
  return st;
}

int qz_quantease_quantize_ws(qz_qe_ws *ws, const qz_method_opts *o, const qz_layer *L,
                             qz_layer_result *res) {
  QZ_CHECK(L->H, QZ_ERR_ARG, "%s: QuantEase needs a Hessian",
           L->name ? L->name : "layer");
  const char *name = L->name ? L->name : "layer";
  MPI_Comm comm = qz_grid_comm(qz_hessian_grid(L->H));
  QZ_CALL(qz_error_agree(comm, check_input(o, L)));
  const int64_t m = L->nrows, n = L->in_features;
  qe S = {.H = L->H, .comm = comm, .m = m, .n = n,
          .B = QZ_QE_PANEL, .T = QZ_QE_ROW_TILE,
          .ng = qz_quant_ngroups(&o->spec, n),
          .maxq = (float)((1 << o->spec.bits) - 1)};
  uint8_t *dead = NULL;
  float *wp = NULL;
  int st = QZ_OK;
  qz_layer_result r = *res; /* g_idx is needed even when the caller's is NULL */
  if (!r.g_idx) st = qz_grow((size_t)n, sizeof(int32_t), "group index", &ws->gidx, &ws->c_gidx);
  if (!r.g_idx && !st) r.g_idx = ws->gidx;
  r.q = NULL;
  r.objective = NULL;
  QZ_CALL_DONE(qz_error_agree(comm, st));

  S.row0 = L->row0;
  if (m > 0) {
    int64_t g0 = L->row0, g1 = L->row0 + m;
    int64_t t0 = g0 - g0 % S.T, t1 = (g1 + S.T - 1) / S.T * S.T;
    S.mp = t1 - t0;
    S.pad0 = g0 - t0;
  }
  S.s_out = o->outlier_frac > 0
                ? llround(o->outlier_frac * (double)L->out_features * (double)n)
                : 0;
  const size_t mn = (size_t)(m * n);
  st = qz_grow(mn, sizeof(float), "QuantEase target", &ws->wp, &ws->c_wp);
  if (!st && S.s_out > 0) {
    if (L->out_features * n > (int64_t)UINT32_MAX)
      st = qz_error_set(QZ_ERR_ARG, __FILE__, __LINE__, __func__,
                        "%s: outlier selection supports layers of < 2^32 "
                        "weights, this one has %lld x %lld", name,
                        (long long)L->out_features, (long long)n);
    if (!st) st = qz_grow(mn, sizeof(float), "W'", &ws->w0, &ws->c_w0);
    if (!st) st = qz_grow(mn, sizeof(float), "outliers", &ws->hs, &ws->c_hs);
    if (!st) st = qz_grow(mn, sizeof(float), "IHT candidate", &ws->cand, &ws->c_cand);
    if (!st) st = qz_grow(mn + 1, sizeof(uint64_t), "selection keys", &ws->keys, &ws->c_keys);
    if (!st) {
      memset(ws->hs, 0, mn * sizeof(float));
      memset(ws->cand, 0, mn * sizeof(float));
      S.w0 = ws->w0;
      S.hs = ws->hs;
      S.cand = ws->cand;
      S.keys = ws->keys;
    }
  }
  if (!st) st = qz_grow((size_t)n, 1, "dead columns", &ws->dead, &ws->c_dead);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  wp = ws->wp;
  dead = ws->dead;
  S.wp = wp;
  {
    const double *dg = qz_hessian_diag(L->H);
    QZ_CHECK_DONE(dg, QZ_ERR_ARG, "%s: QuantEase needs a ready Hessian", name);
    for (int64_t j = 0; j < n; j++) dead[j] = dg[j] == 0.0;
  }
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++)
      wp[i * n + j] = dead[j] ? 0.0f : L->w[i * n + j]; /* W' */
  const double t_init = MPI_Wtime();
  qz_layer L2 = *L;
  if (S.s_out > 0) { /* initial support: the largest |W'| (as the paper) */
    memcpy(S.w0, wp, (size_t)(m * n) * sizeof(float));
    QZ_CALL_DONE(iht_select(&S, S.w0));
    L2.w = wp; /* start and grid from W' - outliers */
  }

  /* initial solution and its grid */
  if (o->qe_init == QZ_QE_INIT_GPTQ) {
    QZ_CALL_DONE(qz_gptq_quantize_ws(ws->gptq, o, &L2, &r));
    S.lambda = qz_hessian_prepared(L->H)->lambda;
  } else {
    QZ_CALL_DONE(qz_error_agree(comm, init_rtn(o, &L2, &r, dead, &S.lambda)));
  }
  S.dead = dead;
  res->percdamp_used = r.percdamp_used;
  res->ndead = r.ndead;
  const double t_sweep = MPI_Wtime();
  qz_timer_start(QZ_PHASE_QUANTIZE);
  S.gidx = r.g_idx;
  S.scale = res->scale;
  S.zero = res->zero;
  S.codes = res->codes;
  st = qz_grow(mn, sizeof(float), "QuantEase Q", &ws->q, &ws->c_q);
  if (!st) st = qz_grow((size_t)(S.mp * n), sizeof(float), "QuantEase residual", &ws->d, &ws->c_d);
  if (!st) st = qz_grow((size_t)(S.mp * S.B), sizeof(float), "QuantEase R panel", &ws->rj, &ws->c_rj);
  if (!st) st = qz_grow((size_t)(S.B * n), sizeof(double), "Hessian panel", &ws->hp, &ws->c_hp);
  if (!st) st = qz_grow((size_t)(S.B * n), sizeof(float), "Hessian panel f32", &ws->p, &ws->c_p);
  if (!st) st = qz_grow((size_t)m, sizeof(double), "QuantEase losses", &ws->loss, &ws->c_loss);
  st = qz_error_agree(comm, st);
  if (st) goto stop;
  S.q = ws->q;
  S.d = ws->d;
  S.rj = ws->rj;
  S.hp = ws->hp;
  S.p = ws->p;
  S.loss = ws->loss;
  memset(S.d, 0, (size_t)(S.mp * n) * sizeof(float)); /* padding rows stay 0 */
  memset(S.loss, 0, (size_t)m * sizeof(double));
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      const int32_t g = S.gidx[j];
      float sc = S.scale[i * S.ng + g], z = S.zero[i * S.ng + g];
      float qv = sc * ((float)S.codes[i * n + j] - z); /* qz_quant_one's q */
      S.q[i * n + j] = qv;
      S.d[(S.pad0 + i) * n + j] = wp[i * n + j] - qv;
    }

  st = sweeps(&S, o, res, name, t_init, t_sweep);
  if (st) qz_error_trace(__FILE__, __LINE__, __func__);
stop:
  qz_timer_stop(QZ_PHASE_QUANTIZE);
done:
  return st;
}

/* ---- ops table ---------------------------------------------------------- */
typedef struct {
  qz_method_opts mo;
  qz_qe_ws *ws;
} qe_state;

static int qe_setup(const qz_method_opts *o, void **state) {
  QZ_CALL(qz_quant_spec_check(&o->spec));
  QZ_CHECK(o->percdamp >= 0 && isfinite(o->percdamp), QZ_ERR_ARG,
           "QuantEase damping must be >= 0, got %g", o->percdamp);
  QZ_CHECK(o->iters >= 0, QZ_ERR_ARG, "QuantEase --iters must be >= 0, got %d",
           o->iters);
  qe_state *s = NULL;
  QZ_CALL(qz_calloc(1, sizeof *s, "QuantEase state", &s));
  s->mo = *o;
  int st = qz_qe_ws_create(&s->ws);
  if (st != QZ_OK) qz_free(&s);
  *state = s;
  return st;
}
static int qe_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  qe_state *s = state;
  QZ_CALL(qz_quantease_quantize_ws(s->ws, &s->mo, L, res));
  return QZ_OK;
}
static void qe_destroy(void **state) {
  if (!state || !*state) return;
  qe_state *s = *state;
  qz_qe_ws_destroy(&s->ws);
  qz_free(state);
}

static unsigned qe_needs(const qz_method_opts *o) {
  return QZ_NEED_CALIB | QZ_NEED_HESSIAN | QZ_OUT_OBJECTIVE |
         (o->outlier_frac > 0 ? QZ_CKPT_OUTLIERS : 0u);
}

/* One linear: the start's buffers (GPTQ's working set, or nothing for RTN)
 * and the sweep state (Q, residual D on tile-padded rows, R panel, f64 +
 * f32 Hessian panel, losses), both kept from linear to linear; W'; the
 * outlier variant adds W', the sparse part, the IHT candidate and the
 * selection keys. Time: the start, then iters sweeps + 2
 * exact objective passes, each 2 m n^2 in sgemm with the Hessian streamed
 * in row panels (an allreduce of the f64 panel: 8 n^2 bytes per pass). */
static void qe_plan(const qz_method_opts *o, const qz_plan_machine *mc, int64_t m, int64_t n,
                    qz_plan_linear *p) {
  qz_plan_linear g = {0};
  qz_gptq_plan(o, mc, m, n, &g);
  const int from_gptq = o->qe_init == QZ_QE_INIT_GPTQ;
  double start = from_gptq ? g.bytes : 0.0;
  double mp = (double)(m + 2 * QZ_QE_ROW_TILE), B = QZ_QE_PANEL;
  double sweep = 4.0 * m * n + 4.0 * mp * n + 4.0 * mp * B + 12.0 * B * n + 8.0 * m;
  double outl = o->outlier_frac > 0 ? 20.0 * m * n : 0.0;
  p->bytes = 4.0 * m * n + n + outl + start + sweep;
  const double md = (double)m, nd = (double)n;
  double passes = (double)o->iters + 2.0, fq = 2.0 * md * nd * nd;
  p->flops = (from_gptq ? g.flops : 0.0) + passes * fq;
  p->seconds = (from_gptq ? g.seconds : md * nd * 20.0 / (mc->gemm * 0.05)) +
               passes * (fq / (mc->gemm * mc->qe_frac) + mc->allreduce(mc->ctx, 8.0 * nd * nd));
  p->factor = from_gptq; /* from RTN: no factorization */
}

static const char *const qe_init_names[] = {"gptq", "rtn", NULL};
#define QE_FIELD(f) .ext = 0, .offset = offsetof(qz_method_opts, f)
static const qz_opt qe_rows[] = {
    {.name = "iters", .type = QZ_OPT_INT, QE_FIELD(iters), .def = 30, .lo = 0, .hi = 1 << 20,
     .json = "iters", .metavar = "N", .help = "QuantEase coordinate-descent sweeps (default 30)"},
    {.name = "qe-init", .type = QZ_OPT_CHOICE, QE_FIELD(qe_init), .def = QZ_QE_INIT_GPTQ,
     .choices = qe_init_names, .json = "init", .help = "QuantEase start and grid (default gptq)"},
    {.name = "outlier-frac", .type = QZ_OPT_REAL, QE_FIELD(outlier_frac), .def = 0, .lo = 0,
     .hi = 0.5, .json = "outlier_frac", .metavar = "F",
     .help = "QuantEase: share of weights kept in f32 (sparse)"},
};

static const char *const qe_exports[] = {"gptq", "compressed-tensors", NULL};

const qz_method_ops qz_method_quantease = {
    .name = "quantease",
    .summary = "QuantEase (Behdin et al.), coordinate descent on the GPTQ objective",
    .options = qe_rows,
    .noptions = (int)(sizeof qe_rows / sizeof qe_rows[0]),
    .json_group = "quantease",
    .uses = QZ_USES_BITS | QZ_USES_GROUP | QZ_USES_SYM | QZ_USES_ACT_ORDER,
    .exports = qe_exports,
    .needs = qe_needs,
    .setup = qe_setup,
    .quantize_layer = qe_layer,
    .destroy = qe_destroy,
    .plan_linear = qe_plan};
