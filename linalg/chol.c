/* Dead columns, act-order, damping ladder and the ScaLAPACK factorization
 * potrf -> potri -> potrf('U'); streaming of the factor's row panels. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hessian_impl.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/scalapack.h"
#include "mpiquant/timing.h"

/* Not in the shared prototype header. */
void pdtrtri_(const char *uplo, const char *diag, const int *n, double *a,
              const int *ia, const int *ja, const int *desca, int *info,
              size_t uplo_len, size_t diag_len);
void dtrtri_(const char *uplo, const char *diag, const int *n, double *a,
             const int *lda, int *info, size_t uplo_len, size_t diag_len);

const qz_prepare_info *qz_hessian_prepared(const qz_hessian *H) {
  return H->prepared ? &H->info : NULL;
}

/* Owner / local index tables for the d global indices (O(d) ints). */
typedef struct {
  int *orow, *ocol;        /* [d] owning process row / column */
  int64_t *lrow, *lcol;    /* [d] local index in that process */
} bc_tables;

static void tables_free(bc_tables *t) {
  qz_free(&t->orow);
  qz_free(&t->ocol);
  qz_free(&t->lrow);
  qz_free(&t->lcol);
}

static int tables_make(const qz_hessian *H, bc_tables *t) {
  memset(t, 0, sizeof *t);
  const int64_t d = H->d;
  int st = qz_alloc((size_t)d, sizeof(int), "owner table", &t->orow);
  if (!st) st = qz_alloc((size_t)d, sizeof(int), "owner table", &t->ocol);
  if (!st) st = qz_alloc((size_t)d, sizeof(int64_t), "index table", &t->lrow);
  if (!st) st = qz_alloc((size_t)d, sizeof(int64_t), "index table", &t->lcol);
  if (st) {
    tables_free(t);
    QZ_CALL(st);
  }
  for (int64_t x = 0; x < d; x++) {
    t->orow[x] = qz_bc_owner(x, H->nb, H->pr);
    t->ocol[x] = qz_bc_owner(x, H->nb, H->pc);
    t->lrow[x] = qz_bc_local(x, H->nb, H->pr);
    t->lcol[x] = qz_bc_local(x, H->nb, H->pc);
  }
  return QZ_OK;
}

/* Write the upper triangle (with diagonal) of H_p = P^T (H + dead fix) P +
 * lambda I from the lower triangle of the stored H.  Element (i, j), i < j,
 * of H_p is H[max(a,b), min(a,b)] with a = perm[i], b = perm[j]: one
 * Alltoallv per batch of destination block columns; sender and receiver
 * both walk (j ascending, i ascending), so no indices travel. */
static int build_upper(qz_hessian *H, const bc_tables *t, const double *dfix,
                       double lambda, const int32_t *perm) {
  const int64_t d = H->d;
  const int nb = H->nb, pc = H->pc, P = H->size, myr = H->myr, myc = H->myc;
  int st = QZ_OK;
  int *sc = NULL, *rc = NULL, *sd = NULL, *rd = NULL, *fill = NULL;
  double *sbuf = NULL, *rbuf = NULL;
  size_t scap = 0, rcap = 0;
  if (P == 1) {
    /* no exchange: read the lower triangle directly.  Column b of H is
     * column b (below the diagonal) and row b (left of it) of the storage;
     * the row is copied in order first, so the permuted gathers hit cache */
    double *hb = NULL;
    QZ_CALL(qz_alloc((size_t)d, sizeof(double), "Hessian column", &hb));
    for (int64_t j = 0; j < d; j++) {
      int32_t b = perm[j];
      for (int64_t a = 0; a < b; a++) hb[a] = H->a[b + a * H->lld];
      memcpy(hb + b + 1, H->a + (b + 1) + b * H->lld,
             (size_t)(d - b - 1) * sizeof(double));
      double *col = H->a + j * H->lld;
      for (int64_t i = 0; i < j; i++) col[i] = hb[perm[i]];
      col[j] = dfix[b] + lambda;
    }
    qz_free(&hb);
    return QZ_OK;
  }
  int64_t width = (int64_t)nb * pc;
  while (width > nb && d * width > (1LL << 30)) width -= nb;
  QZ_CALL_DONE(qz_alloc((size_t)P * 5, sizeof(int), "alltoallv counts", &sc));
  rc = sc + P;
  sd = rc + P;
  rd = sd + P;
  fill = rd + P;
  for (int64_t j0 = 0; j0 < d; j0 += width) {
    int64_t j1 = j0 + width < d ? j0 + width : d;
    /* sender counts */
    memset(sc, 0, (size_t)P * 2 * sizeof(int));
    for (int64_t j = j0; j < j1; j++) {
      int32_t b = perm[j];
      int col_b = t->ocol[b] == myc, row_b = t->orow[b] == myr;
      if (!col_b && !row_b) continue;
      int dc = t->ocol[j];
      for (int64_t i = 0; i < j; i++) {
        int32_t a = perm[i];
        int own = a > b ? (col_b && t->orow[a] == myr)
                        : (row_b && t->ocol[a] == myc);
        if (own) sc[t->orow[i] * pc + dc]++;
      }
    }
    /* receiver counts */
    for (int64_t j = j0; j < j1; j++) {
      if (t->ocol[j] != myc) continue;
      int32_t b = perm[j];
      for (int64_t il = 0; il < H->mloc; il++) {
        int64_t i = qz_bc_global(il, nb, myr, H->pr);
        if (i >= j) break;
        int32_t a = perm[i];
        int32_t sr = a > b ? a : b, scn = a > b ? b : a;
        rc[t->orow[sr] * pc + t->ocol[scn]]++;
      }
    }
    int64_t ns = 0, nr = 0;
    for (int r = 0; r < P; r++) {
      sd[r] = (int)ns;
      rd[r] = (int)nr;
      ns += sc[r];
      nr += rc[r];
    }
    if ((size_t)ns > scap) {
      qz_free(&sbuf);
      scap = (size_t)ns;
      QZ_CALL_DONE(qz_alloc(scap, sizeof(double), "redistribution send", &sbuf));
    }
    if ((size_t)nr > rcap) {
      qz_free(&rbuf);
      rcap = (size_t)nr;
      QZ_CALL_DONE(qz_alloc(rcap, sizeof(double), "redistribution recv", &rbuf));
    }
    if ((int64_t)(scap + rcap) * 8 > H->peak_transient)
      H->peak_transient = (int64_t)(scap + rcap) * 8;
    /* pack */
    memcpy(fill, sd, (size_t)P * sizeof(int));
    for (int64_t j = j0; j < j1; j++) {
      int32_t b = perm[j];
      int col_b = t->ocol[b] == myc, row_b = t->orow[b] == myr;
      if (!col_b && !row_b) continue;
      int dc = t->ocol[j];
      for (int64_t i = 0; i < j; i++) {
        int32_t a = perm[i];
        int own = a > b ? (col_b && t->orow[a] == myr)
                        : (row_b && t->ocol[a] == myc);
        if (!own) continue;
        int32_t sr = a > b ? a : b, scn = a > b ? b : a;
        sbuf[fill[t->orow[i] * pc + dc]++] =
            H->a[t->lrow[sr] + t->lcol[scn] * H->lld];
      }
    }
    QZ_CALL_MPI_DONE(MPI_Alltoallv(sbuf, sc, sd, MPI_DOUBLE, rbuf, rc, rd,
                                   MPI_DOUBLE, H->comm));
    qz_count_p2p(8 * (ns - sc[H->rank]), 8 * (nr - rc[H->rank]));
    /* unpack */
    memcpy(fill, rd, (size_t)P * sizeof(int));
    for (int64_t j = j0; j < j1; j++) {
      if (t->ocol[j] != myc) continue;
      int32_t b = perm[j];
      double *col = H->a + t->lcol[j] * H->lld;
      for (int64_t il = 0; il < H->mloc; il++) {
        int64_t i = qz_bc_global(il, nb, myr, H->pr);
        if (i > j) break;
        if (i == j) {
          col[il] = dfix[b] + lambda;
          break;
        }
        int32_t a = perm[i];
        int32_t sr = a > b ? a : b, scn = a > b ? b : a;
        col[il] = rbuf[fill[t->orow[sr] * pc + t->ocol[scn]]++];
      }
    }
  }
done:
  qz_free(&sc);
  qz_free(&sbuf);
  qz_free(&rbuf);
  return st;
}

/* info agreed over ranks: < 0 wins (bug), else the largest > 0. */
static int agree_info(qz_hessian *H, int info, int *out) {
  int v[2] = {info < 0 ? -info : 0, info > 0 ? info : 0};
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_INT, MPI_MAX, H->comm));
  qz_count_allreduce(H->comm, (int64_t)sizeof v);
  *out = v[0] ? -v[0] : v[1];
  return QZ_OK;
}

/* One attempt on S = J H_p J (J reverses the order; build_upper wrote S's
 * upper triangle): potrf S = V^T V, then V^-1 in place.  U = J V^-T J is
 * upper with U^T U = J V^-1 V^-T J = H_p^-1, so by uniqueness it is the
 * reference's factor (rule 8: potrf -> potri -> potrf('U')) at half the
 * flops (2/3 d^3 instead of 4/3 d^3).  0 = factored, > 0 = not positive
 * definite (step in *what). */
static int factor_once(qz_hessian *H, int *info_out, const char **what) {
  int n = (int)H->d, ione = 1, info = 0;
  if (H->size == 1 && !qz_grid_is_1d(H->grid)) {
    /* one process, 2D policy: the block-cyclic matrix is plain
     * column-major, and LAPACK (OpenBLAS's own potrf/trtri) is ~1.35x
     * faster than ScaLAPACK's 1x1 path, but rounds differently from it;
     * the 1D policy runs ScaLAPACK here too, so that 1 x 1 gives the
     * same bits as every 1 x P grid (grid.h) */
    int lld = (int)H->lld;
    *what = "dpotrf(H)";
    dpotrf_("U", &n, H->a, &lld, &info, 1);
    if (info < 0) QZ_CALL_INFO(info, "dpotrf");
    if (info == 0) {
      *what = "dtrtri(chol(H))";
      dtrtri_("U", "N", &n, H->a, &lld, &info, 1, 1);
      if (info < 0) QZ_CALL_INFO(info, "dtrtri");
    }
    *info_out = info;
    return QZ_OK;
  }
  *what = "pdpotrf(H)";
  double t0 = MPI_Wtime();
  pdpotrf_("U", &n, H->a, &ione, &ione, H->desc, &info, 1);
  QZ_CALL(agree_info(H, info, &info));
  if (info < 0) QZ_CALL_INFO(info, "pdpotrf");
  double t1 = MPI_Wtime();
  if (info == 0) {
    *what = "pdtrtri(chol(H))";
    pdtrtri_("U", "N", &n, H->a, &ione, &ione, H->desc, &info, 1, 1);
    QZ_CALL(agree_info(H, info, &info));
    if (info < 0) QZ_CALL_INFO(info, "pdtrtri");
  }
  qz_debug("d=%d on %dx%d: pdpotrf %.3f s, pdtrtri %.3f s", n, H->pr, H->pc,
           t1 - t0, MPI_Wtime() - t1);
  *info_out = info;
  return QZ_OK;
}

typedef struct {
  double v;
  int32_t i;
} diag_key;

static int cmp_desc(const void *pa, const void *pb) {
  const diag_key *a = pa, *b = pb;
  if (a->v > b->v) return -1;
  if (a->v < b->v) return 1;
  return (a->i > b->i) - (a->i < b->i); /* ties: original order */
}

/* perm [d] with the columns last[0..nlast) moved to its end, in that
 * order; the others keep their relative order. Not collective. */
static int move_last(int32_t *perm, int64_t d, const int32_t *last, int64_t nlast) {
  QZ_CHECK(last && nlast < d, QZ_ERR_ARG,
           "qz_hessian_prepare: %lld columns to process last of %lld", (long long)nlast,
           (long long)d);
  uint8_t *mark = NULL;
  QZ_CALL(qz_calloc((size_t)d, 1, "column marks", &mark));
  int st = QZ_OK;
  for (int64_t k = 0; k < nlast; k++) {
    QZ_CHECK_DONE(last[k] >= 0 && last[k] < d && !mark[last[k]], QZ_ERR_ARG,
                  "qz_hessian_prepare: column %d to process last is out of range or repeated",
                  (int)last[k]);
    mark[last[k]] = 1;
  }
  int64_t w = 0;
  for (int64_t j = 0; j < d; j++)
    if (!mark[perm[j]]) perm[w++] = perm[j];
  for (int64_t k = 0; k < nlast; k++) perm[w++] = last[k];
done:
  qz_free(&mark);
  return st;
}

int qz_hessian_prepare(qz_hessian *H, const qz_prepare_opts *o) {
  QZ_CHECK(H->ready, QZ_ERR_ARG,
           "qz_hessian_prepare: Hessian not reduced/set yet");
  QZ_CHECK(o && o->percdamp >= 0 && isfinite(o->percdamp), QZ_ERR_ARG,
           "qz_hessian_prepare: percdamp must be a finite number >= 0");
  double pmax = o->percdamp_max > 0 ? o->percdamp_max : 1.0;
  if (H->prepared && H->popts.percdamp == o->percdamp &&
      H->popts.percdamp_max == pmax &&
      !H->popts.act_order == !o->act_order && H->popts.nlast == 0 && o->nlast == 0)
    return QZ_OK;
  const char *name = o->name ? o->name : "layer";
  const int64_t d = H->d;
  int st = QZ_OK;
  double *dfix = NULL;
  diag_key *keys = NULL;
  int32_t *sperm = NULL;
  bc_tables t = {0};
  H->prepared = 0;
  qz_timer_start(QZ_PHASE_FACTOR);
  QZ_CALL_DONE(qz_alloc((size_t)d, sizeof(double), "fixed diagonal", &dfix));
  double sum = 0;
  int64_t ndead = 0;
  for (int64_t j = 0; j < d; j++) {
    H->dead[j] = H->diag[j] == 0.0;
    ndead += H->dead[j];
    dfix[j] = H->dead[j] ? 1.0 : H->diag[j];
    sum += dfix[j];
  }
  double mean = sum / (double)d;
  if (o->act_order) {
    QZ_CALL_DONE(qz_alloc((size_t)d, sizeof *keys, "act-order keys", &keys));
    for (int64_t j = 0; j < d; j++) keys[j] = (diag_key){dfix[j], (int32_t)j};
    qsort(keys, (size_t)d, sizeof *keys, cmp_desc);
    for (int64_t j = 0; j < d; j++) H->perm[j] = keys[j].i;
  } else {
    for (int64_t j = 0; j < d; j++) H->perm[j] = (int32_t)j;
  }
  if (o->nlast > 0) QZ_CALL_DONE(move_last(H->perm, d, o->last, o->nlast));
  QZ_CALL_DONE(tables_make(H, &t));
  QZ_CALL_DONE(qz_alloc((size_t)d, sizeof(int32_t), "storage order", &sperm));
  for (int64_t j = 0; j < d; j++) sperm[j] = H->perm[d - 1 - j];
  double p = o->percdamp;
  int steps = 0;
  for (;;) {
    double lambda = p * mean;
    double tb = MPI_Wtime();
    QZ_CALL_DONE(build_upper(H, &t, dfix, lambda, sperm));
    double tf = MPI_Wtime();
    int info = 0;
    const char *what = "";
    QZ_CALL_DONE(factor_once(H, &info, &what));
    qz_debug("%s: d=%lld permute+damp %.3f s, potrf+trtri %.3f s", name,
             (long long)d, tf - tb, MPI_Wtime() - tf);
    if (info == 0) break;
    double next = p > 0 ? p * 10.0 : 1e-6;
    QZ_CHECK_DONE(next <= pmax * (1 + 1e-9), QZ_ERR_NUMERIC,
                  "%s: Hessian (d=%lld) is not positive definite even with "
                  "percdamp %g (%s info %d); the calibration inputs may be "
                  "degenerate", name, (long long)d, p, what, info);
    if (H->rank == 0)
      qz_warn("%s: Hessian not positive definite with percdamp %g (%s info %d);"
            " retrying with percdamp %g", name, p, what, info, next);
    p = next;
    steps++;
  }
  H->info = (qz_prepare_info){.d = d,
                              .perm = H->perm,
                              .dead = H->dead,
                              .ndead = ndead,
                              .percdamp_used = p,
                              .lambda = p * mean,
                              .mean_diag = mean,
                              .ladder_steps = steps};
  H->popts = *o;
  H->popts.name = NULL;
  H->popts.last = NULL; /* the caller's array; nlast stays for the reuse test */
  H->popts.percdamp_max = pmax;
  H->prepared = 1;
  if (steps && H->rank == 0)
    qz_info("%s: factored with percdamp %g after %d ladder step(s)", name, p,
            steps);
done:
  qz_timer_stop(QZ_PHASE_FACTOR);
  qz_free(&dfix);
  qz_free(&keys);
  qz_free(&sperm);
  tables_free(&t);
  return st;
}

/* Rows [r0, r1) of U live in storage columns b = d-1-i in [d-r1, d-r0),
 * rows a = d-1-j <= b (U[i][j] = V^-1[d-1-j][d-1-i]).  Elements owned by
 * process (qr, qc), in (local column, local row) order.  mode 0 counts, 1
 * packs from H->a, 2 unpacks `buf` into the f32 panel [r1 - r0, d]. */
static int64_t panel_walk(qz_hessian *H, int qr, int qc, int64_t r0,
                          int64_t r1, int mode, float *buf, float *panel) {
  const int64_t d = H->d;
  const int nb = H->nb;
  int64_t nloc = qz_bc_numroc(d, nb, qc, H->pc);
  int64_t mloc = qz_bc_numroc(d, nb, qr, H->pr);
  int64_t k = 0;
  for (int64_t jl = 0; jl < nloc; jl++) {
    int64_t b = qz_bc_global(jl, nb, qc, H->pc);
    if (b < d - r1) continue;
    if (b >= d - r0) break;
    const int64_t i = d - 1 - b;
    for (int64_t il = 0; il < mloc; il++) {
      int64_t a = qz_bc_global(il, nb, qr, H->pr);
      if (a > b) break;
      if (mode == 1) /* the f32 value the sweep uses: rounded once, at the owner */
        buf[k] = (float)H->a[jl * H->lld + il];
      else if (mode == 2)
        panel[(i - r0) * d + (d - 1 - a)] = buf[k];
      k++;
    }
  }
  return k;
}

int qz_hessian_factor_rows(qz_hessian *H, int64_t r0, int64_t nrows,
                           float *panel) {
  QZ_CHECK(H->prepared, QZ_ERR_ARG,
           "qz_hessian_factor_rows: Hessian not prepared");
  QZ_CHECK(r0 >= 0 && nrows > 0 && r0 + nrows <= H->d, QZ_ERR_ARG,
           "qz_hessian_factor_rows: rows [%lld, %lld) outside [0, %lld)",
           (long long)r0, (long long)(r0 + nrows), (long long)H->d);
  const int P = H->size;
  const int64_t r1 = r0 + nrows;
  int st = QZ_OK;
  int *cnt = NULL;
  QZ_CALL(qz_alloc((size_t)P * 2, sizeof(int), "panel counts", &cnt));
  int *dsp = cnt + P;
  int64_t total = 0;
  const double t0 = MPI_Wtime();
  for (int q = 0; q < P; q++) {
    int64_t c = panel_walk(H, q / H->pc, q % H->pc, r0, r1, 0, NULL, NULL);
    dsp[q] = (int)total;
    cnt[q] = (int)c;
    total += c;
  }
  if ((size_t)total > H->xbuf_n) {
    qz_free(&H->xbuf);
    H->xbuf_n = 0;
    QZ_CALL_DONE(qz_alloc((size_t)total, sizeof(float), "factor panel exchange",
                          &H->xbuf));
    H->xbuf_n = (size_t)total;
  }
  panel_walk(H, H->myr, H->myc, r0, r1, 1, H->xbuf + dsp[H->rank], NULL);
  QZ_CALL_MPI_DONE(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, H->xbuf, cnt,
                                  dsp, MPI_FLOAT, H->comm));
  qz_bytes_enter(QZ_PHASE_FACTOR); /* the factor's bytes, the caller's time */
  qz_count_allgather(H->comm, 4 * (int64_t)cnt[H->rank], 4 * total); /* f32 */
  qz_bytes_leave(QZ_PHASE_FACTOR);
  H->stream_entries += total;
  H->stream_panels++;
  memset(panel, 0, (size_t)nrows * H->d * sizeof(float));
  for (int q = 0; q < P; q++)
    panel_walk(H, q / H->pc, q % H->pc, r0, r1, 2, H->xbuf + dsp[q], panel);
  H->stream_seconds += MPI_Wtime() - t0;
done:
  qz_free(&cnt);
  return st;
}

void qz_hessian_factor_stream(const qz_hessian *H, int64_t *bytes, int64_t *panels,
                              double *seconds) {
  *bytes = H ? 4 * H->stream_entries : 0;
  *panels = H ? H->stream_panels : 0;
  *seconds = H ? H->stream_seconds : 0.0;
}
