/* GPTQ column sweep over this rank's rows with streamed factor panels. */
#include "mpiquant/gptq.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/chol.h"
#include "mpiquant/codebook.h"
#include "mpiquant/codes.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"
#include "mpiquant/threads.h"
#include "mpiquant/timing.h"
#include "wq.h"

/* In-block part of one lazy batch: columns [i1, i2) of the processing order
 * for m rows; W1/E are [m, B] row-major, panel = U[i1:i2, :] [bk, n]. */
typedef struct {
  int64_t m, n, B, g, ng;
  int bits, sym, act, stat;
  int clip;         /* --w-clip: qz_quant_params_mse */
  int permuted;     /* perm is not the identity (act-order or kept columns) */
  float maxq;
  /* the per-column quantizer (sweep_params / sweep_quant): the reference
   * uniform grid, or a codebook with absmax block scales (cb != NULL) */
  const float *cb;  /* [ncb] sorted codebook values, NULL: int grid */
  int ncb;
  uint8_t cb_zero;  /* code of the value 0 */
  /* OWQ: positions [nq, n) of the processing order are kept columns, stored
   * as fp16 values (kept [m, n - nq]) with the code of 0 */
  int64_t nq;
  float *kept;
  const int32_t *perm;
  float *wp;        /* [m, n] working W, processing order */
  float *w1, *e;    /* [m, B] */
  float *cur_s, *cur_z; /* [m] current parameters */
  const float *pc_s, *pc_z; /* [m] per-channel parameters (rule 3) */
  double *loss;     /* [m] */
  int64_t row0;     /* global index of the first row */
  float *te, *tw;   /* [R, B], [R, n] padded edge tiles */
  double t_gemm;
  float *scratch; /* [4, B] rows of a short group */
  qz_layer_result *res;
} sweep;

/* Group parameters of n values x[0..n) (per channel: a whole row). */
static inline void sweep_params(const sweep *S, const float *x, int64_t n, float *sc,
                                float *z) {
  if (!S->cb) {
    if (S->clip)
      qz_quant_params_mse(x, n, S->bits, S->sym, sc, z);
    else
      qz_quant_params(x, n, 1, S->bits, S->sym, sc, z);
    return;
  }
  float a = 0.0f;
  for (int64_t i = 0; i < n; i++) a = fmaxf(a, fabsf(x[i]));
  *sc = a;
  *z = 0.0f;
}

/* One column value: its code, *q the dequantized value (what the stored
 * code, scale and zero give back). */
static inline uint8_t sweep_quant(const sweep *S, float w, float sc, float z, float *q) {
  if (!S->cb) return qz_quant_one(w, sc, z, S->maxq, q);
  uint8_t c = sc > 0.0f ? qz_codebook_nearest(S->cb, S->ncb, w / sc) : S->cb_zero;
  *q = sc * S->cb[c];
  return c;
}

/* Four rows at once (rows are independent): the four dependency chains
 * (divide, round, divide, update) overlap, and each U row is read once.
 * w[g][k] -= e[g] * u[k], product then subtraction as the reference. */
__attribute__((target_clones("avx2", "default")))
static void axpy_sub4(float *restrict w0, float *restrict w1,
                      float *restrict w2, float *restrict w3,
                      const float *restrict u, float e0, float e1, float e2,
                      float e3, int64_t n) {
  for (int64_t k = 0; k < n; k++) {
    float uk = u[k];
    w0[k] -= e0 * uk;
    w1[k] -= e1 * uk;
    w2[k] -= e2 * uk;
    w3[k] -= e3 * uk;
  }
}

/* Rows [r, r + nr) (nr <= 4) through the columns [i1, i2) of a block:
 * quantize, loss, error feedback inside the block (rule 9).  A row's block
 * stays in L1 while the U block sits in L2.  Missing rows of a short group
 * use a scratch row with zero error (no effect). */
static void sweep_rows(sweep *S, int64_t r, int nr, int64_t i1, int64_t i2,
                       const float *panel) {
  const int64_t n = S->n, B = S->B, bk = i2 - i1;
  float *w1[4], *e[4], sc[4] = {1, 1, 1, 1}, z[4] = {0, 0, 0, 0},
                       err[4] = {0, 0, 0, 0};
  const float *wr[4];
  double loss[4] = {0, 0, 0, 0};
  for (int g = 0; g < 4; g++) {
    if (g < nr) {
      w1[g] = S->w1 + (r + g) * B;
      e[g] = S->e + (r + g) * B;
      wr[g] = S->wp + (r + g) * n;
      memcpy(w1[g], wr[g] + i1, (size_t)bk * sizeof(float));
      if (S->g <= 0) {
        sc[g] = S->pc_s[r + g];
        z[g] = S->pc_z[r + g];
      } else if (!S->stat) {
        sc[g] = S->cur_s[r + g];
        z[g] = S->cur_z[r + g];
      }
    } else {
      w1[g] = S->scratch + (g - 1) * B;
      e[g] = S->scratch + 3 * B;
      wr[g] = NULL;
    }
  }
  /* the group decision is the same for every row: taken once per column */
  const int64_t G = S->g, nq = S->nq, ng = S->ng;
  /* codes and values are stored at the column's position c in the sweep
   * order and moved to their own columns once, row by row, after the last
   * block (unpermute_rows): with act-order a store to perm[c] per element
   * missed the cache inside the error-feedback chain (a third of the
   * loop's time on 4096^2 act-order) */
  uint8_t *const codes = S->res->codes;
  float *const qout = S->res->q, *const rscale = S->res->scale, *const rzero = S->res->zero;
  for (int64_t i = 0; i < bk; i++) {
    const int64_t c = i1 + i, oc = S->perm[c];
    const float *u = panel + i * n + i1; /* U[c, i1:i2] */
    const float dd = u[i];
    int64_t k = -1, cnt = 0; /* k >= 0: read (stat) or start group k */
    if (G > 0) {
      if (S->stat)
        k = (S->permuted ? oc : c) / G;
      else if (c % G == 0 && c < nq)
        k = c / G, cnt = G < nq - c ? G : nq - c;
    }
    for (int g = 0; g < nr; g++) {
      const int64_t rr = r + g;
      if (k >= 0) {
        if (!cnt) {
          sc[g] = rscale[rr * ng + k];
          z[g] = rzero[rr * ng + k];
        } else {
          /* rule 9: from the outer W (earlier blocks' updates only) */
          sweep_params(S, wr[g] + c, cnt, &sc[g], &z[g]);
          rscale[rr * ng + k] = sc[g];
          rzero[rr * ng + k] = z[g];
        }
      }
      float w = w1[g][i], q;
      if (c < nq) {
        codes[rr * n + c] = sweep_quant(S, w, sc[g], z[g], &q);
      } else { /* kept column: fp16, the code of 0 (Q + outlier = fp16(w)) */
        q = qz_f16_to_f32(qz_f32_to_f16(w));
        codes[rr * n + c] = S->cb ? S->cb_zero : (uint8_t)z[g];
        S->kept[rr * (n - nq) + (c - nq)] = q;
      }
      if (qout) qout[rr * n + c] = q;
      float diff = w - q;
      float l = diff * diff / (dd * dd);
      loss[g] += (double)(l / 2.0f);
      err[g] = diff / dd;
      e[g][i] = err[g];
    }
    axpy_sub4(w1[0] + i + 1, w1[1] + i + 1, w1[2] + i + 1, w1[3] + i + 1,
              u + i + 1, err[0], err[1], err[2], err[3], bk - i - 1);
  }
  for (int g = 0; g < nr; g++) {
    if (S->g > 0 && !S->stat) {
      S->cur_s[r + g] = sc[g];
      S->cur_z[r + g] = z[g];
    }
    S->loss[r + g] += loss[g];
  }
}

double qz_gptq_sweep_flops(int64_t out, int64_t in, int64_t B) {
  double fl = 0;
  for (int64_t i1 = 0; i1 < in; i1 += B) {
    int64_t i2 = i1 + B < in ? i1 + B : in, bk = i2 - i1;
    fl += 2.0 * (double)out * (double)bk * (double)(in - i2) + (double)out * (double)(bk * bk);
  }
  return fl;
}

static void sweep_block(sweep *S, int64_t i1, int64_t i2, const float *panel) {
  const int64_t m = S->m, n = S->n, B = S->B, bk = i2 - i1;
  /* groups of 4 rows split over the rank's threads (threads.h): a row's
   * chain is computed by one thread with the same code as serially, and
   * every array written is indexed by row (codes, scales, loss, W1, E; the
   * short group's scratch rows belong to the last group only) */
  const int64_t nquad = (m + 3) / 4;
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(m * bk * bk / 2))
  for (int64_t k = 0; k < nquad; k++) {
    const int64_t r = 4 * k;
    sweep_rows(S, r, m - r < 4 ? (int)(m - r) : 4, i1, i2, panel);
  }
  /* lazy batch: W[:, i2:] -= E U[i1:i2, i2:], one sgemm per tile of
   * QZ_GPTQ_ROW_TILE rows aligned to the *global* row index: every call has
   * the same shape and every row the same position in it at any np, so the
   * result does not depend on how rows are split over ranks (BLAS kernels
   * choose code paths by shape). */
  if (i2 >= n || m == 0) return;
  double t0 = MPI_Wtime();
  const int64_t R = QZ_GPTQ_ROW_TILE, nt = n - i2;
  int64_t g0 = S->row0, g1 = S->row0 + m;
  for (int64_t t0 = g0 - g0 % R; t0 < g1; t0 += R) {
    int64_t a = t0 > g0 ? t0 : g0, b = t0 + R < g1 ? t0 + R : g1;
    if (a == t0 && b == t0 + R) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)nt,
                  (int)bk, -1.0f, S->e + (a - g0) * B, (int)B, panel + i2,
                  (int)n, 1.0f, S->wp + (a - g0) * n + i2, (int)n);
      continue;
    }
    memset(S->te, 0, (size_t)(R * B) * sizeof(float));
    memset(S->tw, 0, (size_t)(R * nt) * sizeof(float));
    for (int64_t r = a; r < b; r++) {
      memcpy(S->te + (r - t0) * B, S->e + (r - g0) * B, (size_t)bk * sizeof(float));
      memcpy(S->tw + (r - t0) * nt, S->wp + (r - g0) * n + i2,
             (size_t)nt * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)nt,
                (int)bk, -1.0f, S->te, (int)B, panel + i2, (int)n, 1.0f,
                S->tw, (int)nt);
    for (int64_t r = a; r < b; r++)
      memcpy(S->wp + (r - g0) * n + i2, S->tw + (r - t0) * nt,
             (size_t)nt * sizeof(float));
  }
  S->t_gemm += MPI_Wtime() - t0;
}

/* The sweep's buffers, kept from linear to linear and grown to the largest
 * linear's (the linears of every block have the same shapes: allocated and
 * first touched once per shape, not once per linear). */
struct qz_gptq_ws {
  float *wp, *w1, *e, *pcs, *panel, *gbuf, *te, *tw, *scratch;
  double *loss;
  size_t c_wp, c_w1, c_e, c_pcs, c_panel, c_gbuf, c_te, c_tw, c_scratch, c_loss;
};

int qz_gptq_ws_create(qz_gptq_ws **out) {
  return qz_calloc(1, sizeof **out, "GPTQ workspace", out);
}

void qz_gptq_ws_destroy(qz_gptq_ws **pw) {
  if (!pw || !*pw) return;
  qz_gptq_ws *w = *pw;
  qz_free(&w->wp); qz_free(&w->w1); qz_free(&w->e); qz_free(&w->pcs);
  qz_free(&w->panel); qz_free(&w->gbuf); qz_free(&w->te); qz_free(&w->tw);
  qz_free(&w->scratch); qz_free(&w->loss);
  qz_free(pw);
}

/* Buffers for m rows x n inputs, block width B, group g. Not collective. */
static int ws_fit(qz_gptq_ws *w, size_t m, size_t n, size_t B, size_t g) {
  const size_t T = QZ_GPTQ_ROW_TILE;
  QZ_CALL(qz_grow(m * n, sizeof(float), "GPTQ working W", &w->wp, &w->c_wp));
  QZ_CALL(qz_grow(m * B, sizeof(float), "GPTQ block", &w->w1, &w->c_w1));
  QZ_CALL(qz_grow(m * B, sizeof(float), "GPTQ errors", &w->e, &w->c_e));
  QZ_CALL(qz_grow(m * 4, sizeof(float), "GPTQ params", &w->pcs, &w->c_pcs));
  QZ_CALL(qz_grow(m, sizeof(double), "GPTQ losses", &w->loss, &w->c_loss));
  QZ_CALL(qz_grow(B * n, sizeof(float), "factor panel", &w->panel, &w->c_panel));
  QZ_CALL(qz_grow(g, sizeof(float), "group", &w->gbuf, &w->c_gbuf));
  QZ_CALL(qz_grow(T * B, sizeof(float), "tile", &w->te, &w->c_te));
  QZ_CALL(qz_grow(T * n, sizeof(float), "tile", &w->tw, &w->c_tw));
  QZ_CALL(qz_grow(4 * B, sizeof(float), "scratch rows", &w->scratch, &w->c_scratch));
  memset(w->loss, 0, m * sizeof(double));
  memset(w->scratch, 0, 4 * B * sizeof(float)); /* zero error rows */
  return QZ_OK;
}

int qz_gptq_quantize(const qz_method_opts *o, const qz_layer *L,
                     qz_layer_result *res) {
  qz_gptq_ws *w = NULL;
  QZ_CALL(qz_gptq_ws_create(&w));
  int st = qz_gptq_quantize_ws(w, o, L, res);
  qz_gptq_ws_destroy(&w);
  return st;
}

extern const qz_method_ops qz_method_gptq;

/* OWQ: the K input columns with the largest diag(H)_j * sum_r W[r, j]^2
 * over all rows of all ranks, ascending in keep [K]. The column sums run
 * through the ranks in row order (a chain: rank p adds its rows to rank
 * p-1's sums), so they and the choice are the same at every np; score
 * ties go to the lower column. Collective on comm. */
typedef struct {
  double v;
  int32_t i;
} col_score;

static int score_desc(const void *pa, const void *pb) {
  const col_score *a = pa, *b = pb;
  if (a->v != b->v) return a->v > b->v ? -1 : 1;
  return (a->i > b->i) - (a->i < b->i);
}

static int int32_asc(const void *pa, const void *pb) {
  int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
  return (a > b) - (a < b);
}

static int owq_columns(MPI_Comm comm, const qz_layer *L, const double *diag, int64_t K,
                       int32_t *keep) {
  const int64_t n = L->in_features;
  int rank, size, st = QZ_OK;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  double *acc = NULL;
  col_score *sc = NULL;
  st = qz_calloc((size_t)n, sizeof(double), "OWQ column sums", &acc);
  if (!st) st = qz_alloc((size_t)n, sizeof *sc, "OWQ scores", &sc);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  if (rank > 0) {
    QZ_CALL_MPI_DONE(MPI_Recv(acc, (int)n, MPI_DOUBLE, rank - 1, 0, comm, MPI_STATUS_IGNORE));
    qz_count_p2p(0, 8 * n);
  }
  for (int64_t r = 0; r < L->nrows; r++)
    for (int64_t j = 0; j < n; j++) {
      double w = L->w[r * n + j];
      acc[j] += w * w;
    }
  if (rank + 1 < size) {
    QZ_CALL_MPI_DONE(MPI_Send(acc, (int)n, MPI_DOUBLE, rank + 1, 0, comm));
    qz_count_p2p(8 * n, 0);
  }
  QZ_CALL_MPI_DONE(MPI_Bcast(acc, (int)n, MPI_DOUBLE, size - 1, comm));
  qz_count_bcast(comm, size - 1, 8 * n);
  for (int64_t j = 0; j < n; j++) sc[j] = (col_score){diag[j] * acc[j], (int32_t)j};
  qsort(sc, (size_t)n, sizeof *sc, score_desc);
  for (int64_t k = 0; k < K; k++) keep[k] = sc[k].i;
  qsort(keep, (size_t)K, sizeof *keep, int32_asc);
done:
  qz_free(&acc);
  qz_free(&sc);
  return st;
}

/* The options' quantizer in S: grid codebook, kept columns. */
static void sweep_grid(sweep *S, int grid) {
  S->cb = qz_wq_codebook(grid, &S->ncb);
  S->cb_zero = S->cb ? qz_codebook_nearest(S->cb, S->ncb, 0.0f) : 0;
}

/* After the sweep: the kept columns as this rank's sparse fp part (sorted
 * by row, then column), Q + outliers = fp16(updated W). Not collective. */
static int kept_outliers(const sweep *S, qz_layer_result *res) {
  const int64_t K = S->n - S->nq, cnt = S->m * K;
  QZ_CALL(qz_alloc((size_t)cnt + 1, sizeof(int64_t), "kept column index", &res->outlier_idx));
  QZ_CALL(qz_alloc((size_t)cnt + 1, sizeof(float), "kept column values", &res->outlier_val));
  for (int64_t r = 0; r < S->m; r++)
    for (int64_t k = 0; k < K; k++) {
      res->outlier_idx[r * K + k] = (S->row0 + r) * S->n + S->perm[S->nq + k];
      res->outlier_val[r * K + k] = S->kept[r * K + k];
    }
  res->noutliers = cnt;
  return QZ_OK;
}

/* --double-quant after the sweep (the codes stay; QLoRA quantizes the
 * statistics after the weights), and q follows the stored scales.
 * Collective on comm. */
static int sweep_double_quant(const sweep *S, MPI_Comm comm, const qz_layer *L, int grid,
                              qz_layer_result *res) {
  QZ_CALL(qz_wq_double_quant(comm, L->out_features, L->row0, S->m, S->ng, res->scale));
  if (!res->q) return QZ_OK;
  float value[256];
  qz_vgrid_values((qz_vgrid)grid, value);
  for (int64_t i = 0; i < S->m * S->n; i++) {
    int64_t r = i / S->n, c = i % S->n;
    res->q[i] = res->scale[r * S->ng + res->g_idx[c]] * value[res->codes[i]];
  }
  for (int64_t k = 0; k < res->noutliers; k++)
    res->q[res->outlier_idx[k] - S->row0 * S->n] += res->outlier_val[k];
  return QZ_OK;
}

/* One linear of a sweep over shared factor panels: its options, its sweep
 * state (working W rows, errors, parameters, losses) and its kept columns.
 * The processing order comes from diag(H) (and the kept columns), so the
 * linears of one Hessian without kept columns share perm and panels. */
typedef struct {
  const qz_layer *L;
  qz_layer_result *res;
  qz_wq_ext ext;
  int64_t K;
  int32_t *keep;
  float *kept;
  const qz_prepare_info *pi;
  sweep S;
  double t_sweep;
} lin_run;

static void lin_free(lin_run *R) {
  qz_free(&R->keep);
  qz_free(&R->kept);
}

/* Checks, kept columns, prepare (the factor of H, once per Hessian and
 * options). Collective on comm. */
static int lin_check(const qz_method_opts *o, const qz_layer *L, MPI_Comm comm,
                     lin_run *R) {
  qz_hessian *H = L->H;
  const int64_t m = L->nrows, n = L->in_features;
  const char *name = L->name ? L->name : "layer";
  if (o->ops == &qz_method_gptq) qz_method_ext_get(o, &R->ext);
  const int64_t K = R->K = R->ext.keep_columns;
  int st = qz_quant_spec_check(&o->spec);
  if (!st && qz_hessian_dim(H) != n)
    st = qz_error_set(QZ_ERR_ARG, __FILE__, __LINE__, __func__,
                      "%s: Hessian is %lld x %lld, W has %lld input columns",
                      name, (long long)qz_hessian_dim(H),
                      (long long)qz_hessian_dim(H), (long long)n);
  if (!st && K >= n)
    st = qz_error_set(QZ_ERR_ARG, __FILE__, __LINE__, __func__,
                      "%s: --keep-columns %lld must be below the layer's %lld input columns",
                      name, (long long)K, (long long)n);
  if (!st) st = qz_layer_check_finite(L);
  if (!st && K > 0) st = qz_alloc((size_t)K, sizeof(int32_t), "kept columns", &R->keep);
  if (!st && K > 0)
    st = qz_alloc((size_t)(m * K > 0 ? m * K : 1), sizeof(float), "kept values", &R->kept);
  QZ_CALL(qz_error_agree(comm, st));
  if (K > 0) QZ_CALL(owq_columns(comm, L, qz_hessian_diag(H), K, R->keep));
  qz_prepare_opts po = {.percdamp = o->percdamp,
                        .percdamp_max = o->percdamp_max,
                        .act_order = o->act_order,
                        .name = name,
                        .last = R->keep,
                        .nlast = K};
  QZ_CALL(qz_hessian_prepare(H, &po));
  R->pi = qz_hessian_prepared(H);
  return QZ_OK;
}

/* The sweep state of R in ws: buffers, per-channel and static parameters,
 * W in processing order with dead columns zeroed. Collective on comm. */
static int lin_begin(qz_gptq_ws *ws, const qz_method_opts *o, MPI_Comm comm, lin_run *R) {
  const qz_layer *L = R->L;
  qz_layer_result *res = R->res;
  const qz_prepare_info *pi = R->pi;
  const int64_t m = L->nrows, n = L->in_features, K = R->K;
  sweep *Sp = &R->S, S = {0};
  S.m = m;
  S.n = n;
  S.B = o->blocksize > 0 ? o->blocksize : 128;
  S.g = o->spec.groupsize > 0 ? o->spec.groupsize : -1;
  S.ng = qz_quant_ngroups(&o->spec, n);
  S.bits = o->spec.bits;
  S.sym = o->spec.sym;
  S.act = o->act_order;
  S.permuted = o->act_order || K > 0;
  S.stat = o->static_groups && S.g > 0;
  S.maxq = (float)((1 << S.bits) - 1);
  sweep_grid(&S, R->ext.grid);
  S.clip = R->ext.w_clip;
  S.nq = n - K;
  S.kept = R->kept;
  S.perm = pi->perm;
  S.res = res;
  S.row0 = L->row0;
  int st = ws_fit(ws, (size_t)m, (size_t)n, (size_t)S.B, (size_t)(S.g > 0 ? S.g : 1));
  QZ_CALL(qz_error_agree(comm, st));
  float *pcs = ws->pcs, *gbuf = ws->gbuf;
  S.wp = ws->wp;
  S.w1 = ws->w1;
  S.e = ws->e;
  S.loss = ws->loss;
  S.te = ws->te;
  S.tw = ws->tw;
  S.scratch = ws->scratch;
  S.cur_s = pcs;
  S.cur_z = pcs + m;
  /* rule 3: per-channel parameters from the original W */
  for (int64_t r = 0; r < m; r++)
    sweep_params(&S, L->w + r * n, n, &pcs[2 * m + r], &pcs[3 * m + r]);
  S.pc_s = pcs + 2 * m;
  S.pc_z = pcs + 3 * m;
  /* rules 4 and 6: dead columns zeroed, columns in processing order */
  for (int64_t r = 0; r < m; r++) {
    const float *wr = L->w + r * n;
    float *dst = S.wp + r * n;
    for (int64_t i = 0; i < n; i++) {
      int32_t oc = S.perm[i];
      dst[i] = pi->dead[oc] ? 0.0f : wr[oc];
    }
  }
  if (S.g <= 0) {
    for (int64_t r = 0; r < m; r++) {
      res->scale[r] = S.pc_s[r];
      res->zero[r] = S.pc_z[r];
    }
  } else if (S.stat) {
    /* rule 5: groups of the dead-zeroed W in original order */
    for (int64_t r = 0; r < m; r++)
      for (int64_t k = 0; k < S.ng; k++) {
        int64_t c0 = k * S.g, c1 = c0 + S.g < n ? c0 + S.g : n;
        for (int64_t c = c0; c < c1; c++)
          gbuf[c - c0] = pi->dead[c] ? 0.0f : L->w[r * n + c];
        sweep_params(&S, gbuf, c1 - c0, &res->scale[r * S.ng + k], &res->zero[r * S.ng + k]);
      }
  } else if (S.nq < n) {
    /* groups that only kept columns would open hold nothing */
    for (int64_t r = 0; r < m; r++)
      for (int64_t k = (S.nq + S.g - 1) / S.g; k < S.ng; k++)
        res->scale[r * S.ng + k] = res->zero[r * S.ng + k] = 0.0f;
  }
  *Sp = S;
  return QZ_OK;
}

/* After the sweep: g_idx, perm, losses, kept columns, double quant.
 * Collective on comm. */
static int lin_end(const qz_method_opts *o, MPI_Comm comm, lin_run *R) {
  sweep *S = &R->S;
  const qz_layer *L = R->L;
  qz_layer_result *res = R->res;
  const int64_t n = S->n, m = S->m;
  /* rule 15 (kept columns: the group whose zero their code holds) */
  if (res->g_idx)
    for (int64_t i = 0; i < n; i++) {
      int32_t oc = S->perm[i];
      int64_t pos = i < S->nq ? i : S->nq - 1;
      res->g_idx[oc] = S->g <= 0 ? 0
                       : (S->permuted && !S->stat) ? (int32_t)(pos / S->g)
                                                   : (int32_t)(oc / S->g);
    }
  if (res->perm) memcpy(res->perm, S->perm, (size_t)n * sizeof(int32_t));
  res->loss_local = 0;
  for (int64_t r = 0; r < m; r++) {
    if (res->losses) res->losses[r] = (float)S->loss[r];
    res->loss_local += S->loss[r];
  }
  res->percdamp_used = R->pi->percdamp_used;
  res->ndead = R->pi->ndead;
  res->grid = R->ext.grid;
  int st = R->K > 0 ? kept_outliers(S, res) : QZ_OK;
  QZ_CALL(qz_error_agree(comm, st));
  if (R->ext.double_quant) QZ_CALL(sweep_double_quant(S, comm, L, R->ext.grid, res));
  qz_wq_storage(o, L->out_features, n, R->K, &res->storage);
  return QZ_OK;
}

/* Codes and values from sweep order to column order: row[perm[c]] = the
 * value at c, each row through a copy that stays in L1/L2. Rows split over
 * the threads (a pure permutation: no arithmetic). Not collective. */
static int unpermute_rows(sweep *S) {
  if (!S->permuted || S->m == 0) return QZ_OK;
  const int64_t m = S->m, n = S->n;
  const int nthr = qz_threads_for(m * n);
  float *tmp = NULL;
  QZ_CALL(qz_alloc((size_t)nthr * (size_t)n, sizeof(float), "GPTQ row permutation", &tmp));
#pragma omp parallel for schedule(static) num_threads(nthr)
  for (int64_t r = 0; r < m; r++) {
    float *t = tmp + (int64_t)omp_get_thread_num() * n;
    uint8_t *cr = S->res->codes + r * n, *tc = (uint8_t *)t;
    memcpy(tc, cr, (size_t)n);
    for (int64_t c = 0; c < n; c++) cr[S->perm[c]] = tc[c];
    if (S->res->q) {
      float *qr = S->res->q + r * n;
      memcpy(t, qr, (size_t)n * sizeof(float));
      for (int64_t c = 0; c < n; c++) qr[S->perm[c]] = t[c];
    }
  }
  qz_free(&tmp);
  return QZ_OK;
}

/* The column sweep of every linear of R[0..nl) (one Hessian, one
 * processing order): each factor panel is streamed once and applied to
 * all of them; each linear's arithmetic is exactly its own sweep's.
 * Collective on the Hessian's communicator. */
static int sweep_shared(qz_hessian *H, float *panel, lin_run *R, int nl) {
  const int64_t n = R[0].S.n, B = R[0].S.B;
  double t_panel = 0;
  for (int64_t i1 = 0; i1 < n; i1 += B) {
    int64_t i2 = i1 + B < n ? i1 + B : n;
    double ta = MPI_Wtime();
    QZ_CALL(qz_hessian_factor_rows(H, i1, i2 - i1, panel));
    t_panel += MPI_Wtime() - ta;
    qz_timer_start(QZ_PHASE_QUANTIZE);
    for (int k = 0; k < nl; k++) {
      double tb = MPI_Wtime();
      sweep_block(&R[k].S, i1, i2, panel);
      R[k].t_sweep += MPI_Wtime() - tb;
    }
    qz_timer_stop(QZ_PHASE_QUANTIZE);
  }
  qz_timer_start(QZ_PHASE_QUANTIZE);
  int st = QZ_OK;
  for (int k = 0; k < nl && st == QZ_OK; k++) {
    double tb = MPI_Wtime();
    st = unpermute_rows(&R[k].S);
    R[k].t_sweep += MPI_Wtime() - tb;
  }
  qz_timer_stop(QZ_PHASE_QUANTIZE);
  QZ_CALL(st);
  for (int k = 0; k < nl; k++)
    qz_debug("%s: GPTQ sweep of %lld rows: factor panels %.3f s%s, columns + "
             "trailing sgemm %.3f s (of which sgemm %.3f s)",
             R[k].L->name ? R[k].L->name : "layer", (long long)R[k].S.m, t_panel,
             nl > 1 ? " (shared)" : "", R[k].t_sweep, R[k].S.t_gemm);
  return QZ_OK;
}

/* nl linears of one Hessian, ws[k] the buffers of linear k. Linears with
 * kept columns (OWQ: the order depends on W) sweep one at a time.
 * Collective on the Hessian's communicator. */
static int gptq_group(qz_gptq_ws *const *ws, const qz_method_opts *o, const qz_layer *L,
                      int nl, qz_layer_result *res) {
  QZ_CHECK(nl >= 1 && nl <= QZ_GROUP_MAX, QZ_ERR_INTERNAL, "GPTQ group of %d linears", nl);
  for (int k = 0; k < nl; k++)
    QZ_CHECK(L[k].H && L[k].H == L[0].H, QZ_ERR_ARG, "%s: GPTQ needs a Hessian%s",
             L[k].name ? L[k].name : "layer", k ? " (the group's)" : "");
  qz_hessian *H = L[0].H;
  MPI_Comm comm = qz_grid_comm(qz_hessian_grid(H));
  lin_run R[QZ_GROUP_MAX];
  memset(R, 0, sizeof R);
  qz_wq_ext ext = {0};
  if (o->ops == &qz_method_gptq) qz_method_ext_get(o, &ext);
  const int step = ext.keep_columns > 0 ? 1 : nl; /* kept columns: one at a time */
  int st = QZ_OK, nr = 0;
  for (int k0 = 0; k0 < nl && !st; k0 += step) {
    const int k1 = k0 + step;
    for (int k = k0; k < k1 && !st; k++) { /* the factor: once for the group */
      R[k].L = &L[k];
      R[k].res = &res[k];
      nr = k + 1;
      st = lin_check(o, &L[k], comm, &R[k]);
    }
    if (st) break;
    qz_timer_start(QZ_PHASE_QUANTIZE);
    for (int k = k0; k < k1 && !st; k++) st = lin_begin(ws[k], o, comm, &R[k]);
    qz_timer_stop(QZ_PHASE_QUANTIZE);
    if (!st) st = sweep_shared(H, ws[k0]->panel, &R[k0], k1 - k0);
    st = qz_error_agree(comm, st); /* the reordering's buffer is per rank */
    qz_timer_start(QZ_PHASE_QUANTIZE);
    for (int k = k0; k < k1 && !st; k++) st = lin_end(o, comm, &R[k]);
    qz_timer_stop(QZ_PHASE_QUANTIZE);
  }
  if (st) qz_error_trace(__FILE__, __LINE__, __func__);
  for (int k = 0; k < nr; k++) lin_free(&R[k]);
  return st;
}

int qz_gptq_quantize_ws(qz_gptq_ws *ws, const qz_method_opts *o, const qz_layer *L,
                        qz_layer_result *res) {
  QZ_CHECK(L->H, QZ_ERR_ARG, "%s: GPTQ needs a Hessian", L->name ? L->name : "layer");
  return gptq_group(&ws, o, L, 1, res);
}

/* ---- ops table ---------------------------------------------------------- */
typedef struct {
  qz_method_opts mo;
  qz_gptq_ws *ws[QZ_GROUP_MAX]; /* one per linear of a group ([0] alone: created at setup) */
} gptq_state;

static int gptq_setup(const qz_method_opts *o, void **state) {
  QZ_CALL(qz_quant_spec_check(&o->spec));
  QZ_CHECK(o->percdamp >= 0 && isfinite(o->percdamp), QZ_ERR_ARG,
           "GPTQ damping must be >= 0, got %g", o->percdamp);
  gptq_state *s = NULL;
  QZ_CALL(qz_calloc(1, sizeof *s, "GPTQ state", &s));
  s->mo = *o;
  int st = qz_gptq_ws_create(&s->ws[0]);
  if (st != QZ_OK) qz_free(&s);
  *state = s;
  return st;
}
static int gptq_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  gptq_state *s = state;
  QZ_CALL(qz_gptq_quantize_ws(s->ws[0], &s->mo, L, res));
  return QZ_OK;
}
/* q/k/v or gate/up: one pass over the factor panels for all of them. */
static int gptq_group_op(void *state, const qz_layer *L, int nl, qz_layer_result *res) {
  gptq_state *s = state;
  int st = QZ_OK;
  for (int k = 1; k < nl && k < QZ_GROUP_MAX && !st; k++)
    if (!s->ws[k]) st = qz_gptq_ws_create(&s->ws[k]);
  QZ_CALL(qz_error_agree(qz_grid_comm(qz_hessian_grid(L[0].H)), st));
  QZ_CALL(gptq_group(s->ws, &s->mo, L, nl, res));
  return QZ_OK;
}
static void gptq_destroy(void **state) {
  if (!state || !*state) return;
  gptq_state *s = *state;
  for (int k = 0; k < QZ_GROUP_MAX; k++) qz_gptq_ws_destroy(&s->ws[k]);
  qz_free(state);
}

static unsigned gptq_needs(const qz_method_opts *o) {
  qz_wq_ext e;
  qz_method_ext_get(o, &e);
  return QZ_NEED_CALIB | QZ_NEED_HESSIAN | (e.keep_columns > 0 ? QZ_CKPT_OUTLIERS : 0u);
}

void qz_gptq_plan(const qz_method_opts *o, const qz_plan_machine *mc, int64_t m, int64_t n,
                  qz_plan_linear *p) {
  const double B = o->blocksize > 0 ? o->blocksize : 128;
  /* working W, block + errors, params + losses, factor panel, edge tiles */
  p->bytes = 4.0 * m * n + 2.0 * 4.0 * m * B + 16.0 * m + 8.0 * m + 4.0 * B * n +
             4.0 * QZ_GPTQ_ROW_TILE * (B + n);
  /* the m n^2 trailing update + the in-block work; the factor streamed to
   * every rank (the upper triangle of U in f32: 2 n^2 bytes; once per
   * Hessian for the linears of one group, gptq_group_op) */
  const double md = (double)m, nd = (double)n;
  p->flops = md * nd * nd + 2.0 * md * nd * B;
  p->stream = mc->allgather(mc->ctx, 2.0 * nd * nd);
  p->seconds = p->flops / (mc->gemm * mc->gptq_frac) + p->stream;
  p->factor = 1;
}

/* Activations at evaluation: with --act-bits A every linear input is
 * quantized per token (dynamic, symmetric; options.act_bits, which eval
 * applies), e.g. W8A8-INT: --bits 8 --group -1 --sym --act-bits 8. */
static const qz_opt gptq_rows[] = {QZ_WQ_ROW_ACT_BITS, QZ_WQ_ROW_GRID, QZ_WQ_ROW_DOUBLE_QUANT,
                                    QZ_WQ_ROW_KEEP_COLUMNS, QZ_WQ_ROW_W_CLIP};

static const char *const gptq_exports[] = {"gptq", "compressed-tensors", NULL};

const qz_method_ops qz_method_gptq = {.name = "gptq",
                                      .summary = "GPTQ (Frantar et al.), Hessian-based",
                                      .uses = QZ_USES_BITS | QZ_USES_GROUP | QZ_USES_SYM |
                                              QZ_USES_ACT_ORDER,
                                      .exports = gptq_exports,
                                      .options = gptq_rows,
                                      .noptions = 5,
                                      .check = qz_wq_check,
                                      .needs = gptq_needs,
                                      .setup = gptq_setup,
                                      .quantize_layer = gptq_layer,
                                      .quantize_group = gptq_group_op,
                                      .destroy = gptq_destroy,
                                      .plan_linear = qz_gptq_plan};
