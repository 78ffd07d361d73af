/* QuantEase: cyclic coordinate descent over this rank's rows with the
 * damped Hessian streamed in row panels (quantease.h, docs/quantease.md).
 *
 * Block structure (per sweep, per panel J = columns [j1, j2)):
 *   R_J = D Hd[:, J]            one sgemm per row tile, [T, n] x [n, bk]
 *                               (Hd symmetric: the panel Hd[J, :] transposed)
 *   for each row, j in J:       exact coordinate step, then the rank-1 effect
 *                               on R_J's later columns (in-block, BLAS-1)
 * D = W' - Q always holds the current residual, so R_J is exact (fresh from
 * the sgemm) at the start of every panel: nothing drifts across panels, and
 * the flops are 2 m n^2 per sweep in sgemm + O(m n B) in-block. */
#include "mpiquant/quantease.h"

#include <cblas.h>
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
  const float *wp;       /* [m, n] W with dead columns zeroed */
  float *q;              /* [m, n] current dequantized solution */
  uint8_t *codes;        /* [m, n] */
  float *d;              /* [mp, n] W' - Q, padding rows stay 0 */
  float *rj;             /* [mp, B] R_J */
  double *hp;            /* [B, n] f64 panel of H */
  float *p;              /* [B, n] f32 panel of Hd */
  double *loss;          /* [m] exact-pass per-row objective */
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
      }
    }
  }
  return QZ_OK;
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
  double obj = f[0], obj0 = f[0];
  if (res->objective) res->objective[0] = obj;
  int it = 0;
  for (; it < o->iters; it++) {
    double acc = 0.0;
    int64_t nchg = 0;
    QZ_CALL(pass(S, 1, &acc, &nchg));
    double v[2] = {0.5 * acc, (double)nchg};
    QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_SUM, comm));
    obj += v[0];
    if (res->objective) res->objective[it + 1] = obj;
    qz_debug("%s: QuantEase sweep %d: objective %.9g (%.0f coordinates changed)",
             name, it + 1, obj, v[1]);
    if (v[1] == 0.0) { /* a fixed point: later sweeps would change nothing */
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
  if (res->q) memcpy(res->q, S->q, (size_t)(m * n) * sizeof(float));
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
  QZ_CHECK(qz_hessian_dim(L->H) == L->in_features, QZ_ERR_ARG,
           "%s: Hessian is %lld x %lld, W has %lld input columns", name,
           (long long)qz_hessian_dim(L->H), (long long)qz_hessian_dim(L->H),
           (long long)L->in_features);
  for (int64_t i = 0; i < L->nrows * L->in_features; i++)
    QZ_CHECK(isfinite(L->w[i]), QZ_ERR_NUMERIC,
             "%s: weight W[%lld, %lld] is not finite", name,
             (long long)(L->row0 + i / L->in_features),
             (long long)(i % L->in_features));
  return QZ_OK;
}

/* RTN start: the min/max grid of the original W (the paper's grid), dead
 * columns and damping from the diagonal as chol.h defines them. */
static int init_rtn(const qz_method_opts *o, const qz_layer *L,
                    qz_layer_result *res, uint8_t *dead, double *lambda) {
  const int64_t n = L->in_features;
  const double *dg = qz_hessian_diag(L->H);
  QZ_CHECK(dg, QZ_ERR_ARG, "%s: QuantEase needs a ready Hessian",
           L->name ? L->name : "layer");
  double sum = 0.0;
  int64_t nd = 0;
  for (int64_t j = 0; j < n; j++) {
    dead[j] = dg[j] == 0.0;
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

int qz_quantease_quantize(const qz_method_opts *o, const qz_layer *L,
                          qz_layer_result *res) {
  QZ_CHECK(L->H, QZ_ERR_ARG, "%s: QuantEase needs a Hessian",
           L->name ? L->name : "layer");
  const char *name = L->name ? L->name : "layer";
  MPI_Comm comm = qz_grid_comm(qz_hessian_grid(L->H));
  QZ_CALL(qz_error_agree(comm, check_input(o, L)));
  const int64_t m = L->nrows, n = L->in_features;
  qe S = {.H = L->H, .comm = comm, .m = m, .n = n,
          .B = o->blocksize > 0 ? o->blocksize : 128, .T = QZ_QE_ROW_TILE,
          .ng = qz_quant_ngroups(&o->spec, n),
          .maxq = (float)((1 << o->spec.bits) - 1)};
  int32_t *gidx = NULL;
  uint8_t *dead = NULL;
  float *wp = NULL;
  int st = QZ_OK;
  qz_layer_result r = *res; /* g_idx is needed even when the caller's is NULL */
  if (!r.g_idx) st = qz_alloc((size_t)n, sizeof(int32_t), "group index", &gidx);
  if (gidx) r.g_idx = gidx;
  r.q = NULL;
  r.objective = NULL;
  QZ_CALL_DONE(qz_error_agree(comm, st));

  /* initial solution and its grid */
  const double t_init = MPI_Wtime();
  if (o->qe_init == QZ_QE_INIT_GPTQ) {
    QZ_CALL_DONE(qz_gptq_quantize(o, L, &r));
    const qz_prepare_info *pi = qz_hessian_prepared(L->H);
    S.dead = pi->dead;
    S.lambda = pi->lambda;
  } else {
    st = qz_alloc((size_t)n, 1, "dead columns", &dead);
    if (!st) st = init_rtn(o, L, &r, dead, &S.lambda);
    QZ_CALL_DONE(qz_error_agree(comm, st));
    S.dead = dead;
  }
  res->percdamp_used = r.percdamp_used;
  res->ndead = r.ndead;
  const double t_sweep = MPI_Wtime();
  qz_timer_start(QZ_PHASE_QUANTIZE);
  S.gidx = r.g_idx;
  S.scale = res->scale;
  S.zero = res->zero;
  S.codes = res->codes;
  if (m > 0) {
    int64_t g0 = L->row0, g1 = L->row0 + m;
    int64_t t0 = g0 - g0 % S.T, t1 = (g1 + S.T - 1) / S.T * S.T;
    S.mp = t1 - t0;
    S.pad0 = g0 - t0;
  }
  st = qz_alloc((size_t)(m * n), sizeof(float), "QuantEase W'", &wp);
  if (!st) st = qz_alloc((size_t)(m * n), sizeof(float), "QuantEase Q", &S.q);
  if (!st) st = qz_calloc((size_t)(S.mp * n), sizeof(float), "QuantEase residual", &S.d);
  if (!st) st = qz_alloc((size_t)(S.mp * S.B), sizeof(float), "QuantEase R panel", &S.rj);
  if (!st) st = qz_alloc((size_t)(S.B * n), sizeof(double), "Hessian panel", &S.hp);
  if (!st) st = qz_alloc((size_t)(S.B * n), sizeof(float), "Hessian panel f32", &S.p);
  if (!st) st = qz_calloc((size_t)m, sizeof(double), "QuantEase losses", &S.loss);
  st = qz_error_agree(comm, st);
  if (st) goto stop;
  S.wp = wp;
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      const int32_t g = S.gidx[j];
      float sc = S.scale[i * S.ng + g], z = S.zero[i * S.ng + g];
      float w = S.dead[j] ? 0.0f : L->w[i * n + j];
      float qv = sc * ((float)S.codes[i * n + j] - z); /* qz_quant_one's q */
      wp[i * n + j] = w;
      S.q[i * n + j] = qv;
      S.d[(S.pad0 + i) * n + j] = w - qv;
    }

  st = sweeps(&S, o, res, name, t_init, t_sweep);
  if (st) qz_error_trace(__FILE__, __LINE__, __func__);
stop:
  qz_timer_stop(QZ_PHASE_QUANTIZE);
done:
  qz_free(&gidx);
  qz_free(&dead);
  qz_free(&wp);
  qz_free(&S.q);
  qz_free(&S.d);
  qz_free(&S.rj);
  qz_free(&S.hp);
  qz_free(&S.p);
  qz_free(&S.loss);
  return st;
}

/* ---- ops table ---------------------------------------------------------- */
static int qe_setup(const qz_method_opts *o, void **state) {
  QZ_CALL(qz_quant_spec_check(&o->spec));
  QZ_CHECK(o->percdamp >= 0 && isfinite(o->percdamp), QZ_ERR_ARG,
           "QuantEase damping must be >= 0, got %g", o->percdamp);
  QZ_CHECK(o->iters >= 0, QZ_ERR_ARG, "QuantEase --iters must be >= 0, got %d",
           o->iters);
  qz_method_opts *s = NULL;
  QZ_CALL(qz_alloc(1, sizeof *s, "QuantEase options", &s));
  *s = *o;
  *state = s;
  return QZ_OK;
}
static int qe_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  QZ_CALL(qz_quantease_quantize((const qz_method_opts *)state, L, res));
  return QZ_OK;
}
static void qe_destroy(void **state) { qz_free(state); }

const qz_method_ops qz_method_quantease = {.name = "quantease",
                                           .needs_hessian = 1,
                                           .setup = qe_setup,
                                           .quantize_layer = qe_layer,
                                           .destroy = qe_destroy};
