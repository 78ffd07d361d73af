/* Distributed Hessian: row buffering, panel-wise sgemm into f64, and
 * reduce-scatter of each panel straight into the block-cyclic matrix. */
#include <cblas.h>
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

int qz_hessian_create(qz_grid *grid, int64_t d, qz_hessian **out) {
  *out = NULL;
  QZ_CHECK(grid, QZ_ERR_ARG, "qz_hessian_create: no grid");
  QZ_CHECK(d > 0 && d < (1LL << 31), QZ_ERR_ARG,
           "qz_hessian_create: dimension %lld out of range [1, 2^31)",
           (long long)d);
  qz_hessian *H = NULL;
  QZ_CALL(qz_calloc(1, sizeof *H, "Hessian handle", &H));
  int st = QZ_OK;
  H->grid = grid;
  H->comm = qz_grid_comm(grid);
  H->d = d;
  H->nb = qz_grid_nb(grid);
  H->rank = qz_grid_rank(grid);
  H->size = qz_grid_size(grid);
  qz_grid_shape(grid, &H->pr, &H->pc, &H->myr, &H->myc);
  H->mloc = qz_bc_numroc(d, H->nb, H->myr, H->pr);
  H->nloc = qz_bc_numroc(d, H->nb, H->myc, H->pc);
  H->lld = H->mloc > 1 ? H->mloc : 1;
  int n = (int)d, izero = 0, ctx = qz_grid_context(grid), lld = (int)H->lld,
      info = 0;
  descinit_(H->desc, &n, &n, &H->nb, &H->nb, &izero, &izero, &ctx, &lld,
            &info);
  QZ_CHECK_DONE(info == 0, QZ_ERR_INTERNAL, "descinit for d=%lld: info %d",
                (long long)d, info);
  H->a_bytes = (size_t)H->lld * (size_t)(H->nloc > 0 ? H->nloc : 1) *
               sizeof(double);
  QZ_CALL_DONE(qz_alloc_big(H->a_bytes, "distributed Hessian block", &H->a));
  memset(H->a, 0, H->a_bytes);
  QZ_CALL_DONE(qz_calloc((size_t)d, sizeof(double), "Hessian diagonal",
                         &H->diag));
  QZ_CALL_DONE(qz_alloc((size_t)d, sizeof(int32_t), "permutation", &H->perm));
  QZ_CALL_DONE(qz_calloc((size_t)d, 1, "dead-column flags", &H->dead));
done:
  st = qz_error_agree(H->comm, st);
  if (st) {
    qz_hessian_destroy(&H);
    return st;
  }
  *out = H;
  return QZ_OK;
}

void qz_hessian_destroy(qz_hessian **Hp) {
  if (!Hp || !*Hp) return;
  qz_hessian *H = *Hp;
  if (H->a) qz_free_big(&H->a, H->a_bytes);
  qz_free(&H->rows);
  qz_free(&H->diag);
  qz_free(&H->perm);
  qz_free(&H->dead);
  qz_free(&H->xbuf);
  free(H);
  *Hp = NULL;
}

void qz_hessian_reset(qz_hessian *H) {
  memset(H->a, 0, H->a_bytes);
  H->nrows = 0; /* keeps the row buffer's allocation */
  H->nseq_local = H->nseq_total = 0;
  H->ready = H->prepared = 0;
  memset(H->diag, 0, (size_t)H->d * sizeof(double));
}

int64_t qz_hessian_dim(const qz_hessian *H) { return H->d; }
qz_grid *qz_hessian_grid(const qz_hessian *H) { return H->grid; }
int qz_hessian_is_ready(const qz_hessian *H) { return H->ready; }
const double *qz_hessian_diag(const qz_hessian *H) {
  return H->ready ? H->diag : NULL;
}
int64_t qz_hessian_nsequences(const qz_hessian *H) { return H->nseq_total; }
int64_t qz_hessian_bytes(const qz_hessian *H) {
  return (int64_t)H->a_bytes + H->d * (int64_t)(sizeof(double) +
                                                sizeof(int32_t) + 1) +
         H->nrows_cap * H->d * (int64_t)sizeof(float);
}
int64_t qz_hessian_peak_transient_bytes(const qz_hessian *H) {
  return H->peak_transient;
}

int qz_hessian_add_rows(qz_hessian *H, const float *x, int64_t n) {
  QZ_CHECK(n >= 0, QZ_ERR_ARG, "qz_hessian_add_rows: negative row count %lld",
           (long long)n);
  QZ_CHECK(!H->ready, QZ_ERR_ARG,
           "qz_hessian_add_rows: Hessian already reduced (call "
           "qz_hessian_reset first)");
  if (n == 0) return QZ_OK;
  if (H->nrows + n > H->nrows_cap) {
    int64_t cap = H->nrows_cap ? H->nrows_cap : 256;
    while (cap < H->nrows + n) cap *= 2;
    size_t bytes;
    QZ_CHECK(!__builtin_mul_overflow((size_t)cap, (size_t)H->d * sizeof(float),
                                     &bytes),
             QZ_ERR_MEM, "Hessian row buffer size overflow");
    float *p = realloc(H->rows, bytes);
    if (!p) {
      char b[32];
      QZ_FAIL(QZ_ERR_MEM, "out of memory growing the Hessian row buffer to %s",
              qz_fmt_bytes((double)bytes, b, sizeof b));
    }
    H->rows = p;
    H->nrows_cap = cap;
  }
  memcpy(H->rows + H->nrows * H->d, x, (size_t)n * H->d * sizeof(float));
  H->nrows += n;
  return QZ_OK;
}

void qz_hessian_count_sequences(qz_hessian *H, int64_t n) {
  H->nseq_local += n;
}

static void note_transient(qz_hessian *H, int64_t bytes) {
  if (bytes > H->peak_transient) H->peak_transient = bytes;
}

/* Destination order of a wide panel [j0, j0 + W): ranks ascending; for a
 * rank (p, q) its columns j (ocol == q) ascending, then the rows i >= start
 * of j's block column with orow == p, ascending.  mode 0: sendbuf = c32,
 * mode 1: sendbuf += c32 (f64 accumulation over row chunks); counts set. */
static void pack_panel(const qz_hessian *H, int64_t j0, int64_t W,
                       const float *c32, double *sendbuf, int *counts,
                       int mode) {
  const int64_t d = H->d, M = d - j0;
  const int nb = H->nb, pr = H->pr, pc = H->pc;
  int64_t pos = 0;
  for (int p = 0; p < pr; p++)
    for (int q = 0; q < pc; q++) {
      int64_t start = pos;
      for (int64_t j = j0; j < j0 + W; j++) {
        if (qz_bc_owner(j, nb, pc) != q) continue;
        const float *cj = c32 + (j - j0) * M - j0;
        for (int64_t blk = j / nb + ((p - (j / nb) % pr) + pr) % pr;
             blk * nb < d; blk += pr) {
          int64_t i0 = blk * nb, i1 = i0 + nb < d ? i0 + nb : d;
          if (mode == 0)
            for (int64_t i = i0; i < i1; i++) sendbuf[pos++] = cj[i];
          else
            for (int64_t i = i0; i < i1; i++) sendbuf[pos++] += cj[i];
        }
      }
      counts[p * pc + q] = (int)(pos - start);
    }
}

/* One wide panel of block columns [j0, j0 + W) of the lower triangle: ssyrk
 * for its diagonal W x W block and sgemm below it, per chunk of rows, summed
 * in f64 in destination order, then reduce-scattered to the owners. */
static int flush_panel(qz_hessian *H, const float *rows, int64_t nrows,
                       int64_t j0, int64_t W, float *c32, double *sendbuf,
                       double *recvbuf, int *counts) {
  const int64_t d = H->d, M = d - j0;
  const int nb = H->nb, pr = H->pr, pc = H->pc;
  for (int64_t r0 = 0; r0 < nrows; r0 += QZ_HESSIAN_KCHUNK) {
    int64_t k = nrows - r0 < QZ_HESSIAN_KCHUNK ? nrows - r0
                                               : QZ_HESSIAN_KCHUNK;
    const float *xa = rows + r0 * d + j0; /* col-major [d - j0, k], ld d */
    cblas_ssyrk(CblasColMajor, CblasLower, CblasNoTrans, (int)W, (int)k, 1.0f,
                xa, (int)d, 0.0f, c32, (int)M);
    if (M > W)
      cblas_sgemm(CblasColMajor, CblasNoTrans, CblasTrans, (int)(M - W),
                  (int)W, (int)k, 1.0f, xa + W, (int)d, xa, (int)d, 0.0f,
                  c32 + W, (int)M);
    pack_panel(H, j0, W, c32, sendbuf, counts, r0 > 0);
  }
  if (nrows == 0) { /* no rows here: contribute zeros, not the last panel */
    memset(c32, 0, sizeof(float) * (size_t)(M * W));
    pack_panel(H, j0, W, c32, sendbuf, counts, 0);
  }
  QZ_CALL_MPI(MPI_Reduce_scatter(sendbuf, recvbuf, counts, MPI_DOUBLE, MPI_SUM,
                                 H->comm));
  int64_t q = 0;
  for (int64_t j = j0; j < j0 + W; j++) {
    if (qz_bc_owner(j, nb, pc) != H->myc) continue;
    double *col = H->a + qz_bc_local(j, nb, pc) * H->lld;
    for (int64_t blk = j / nb + ((H->myr - (j / nb) % pr) + pr) % pr;
         blk * nb < d; blk += pr) {
      int64_t i0 = blk * nb, i1 = i0 + nb < d ? i0 + nb : d;
      double *dst = col + qz_bc_local(i0, nb, pr);
      for (int64_t i = i0; i < i1; i++) dst[i - i0] += recvbuf[q++];
    }
  }
  return QZ_OK;
}

/* Fold rows [nrows, d] (this rank's; any count) into the matrix.
 * Collective. */
static int fold_rows(qz_hessian *H, const float *rows, int64_t nrows) {
  int st = QZ_OK;
  float *c32 = NULL;
  double *sendbuf = NULL, *recvbuf = NULL;
  int *counts = NULL;
  const int64_t d = H->d;
  const int nb = H->nb;
  st = H->ready ? qz_error_set(QZ_ERR_ARG, __FILE__, __LINE__, __func__,
                               "qz_hessian_flush: Hessian already reduced")
                : QZ_OK;
  QZ_CALL_DONE(qz_error_agree(H->comm, st));
  int64_t any = nrows;
  QZ_CALL_DONE(qz_allreduce_i64(H->comm, &any, 1, MPI_SUM));
  if (any == 0) goto done;
  qz_timer_start(QZ_PHASE_REDUCE);
  /* panel width: whole block columns, f32 + f64 panel within the budget */
  int64_t W = QZ_HESSIAN_PANEL_BYTES / (d * nb * 12) * nb;
  if (W < nb) W = nb;
  if (W > d) W = d;
  int64_t ldrecv = qz_bc_numroc(d, nb, H->myr, H->pr);
  st = qz_alloc((size_t)(d * W), sizeof(float), "Hessian panel (f32)", &c32);
  if (!st)
    st = qz_alloc((size_t)(d * W), sizeof(double), "reduce-scatter send", &sendbuf);
  if (!st)
    st = qz_alloc((size_t)(ldrecv * W + 1), sizeof(double),
                  "reduce-scatter receive", &recvbuf);
  if (!st) st = qz_alloc((size_t)H->size, sizeof(int), "counts", &counts);
  note_transient(H, d * W * 12 + ldrecv * W * 8);
  st = qz_error_agree(H->comm, st);
  if (st) {
    qz_timer_stop(QZ_PHASE_REDUCE);
    goto done;
  }
  for (int64_t j0 = 0; j0 < d; j0 += W) {
    int64_t w = d - j0 < W ? d - j0 : W;
    st = flush_panel(H, rows, nrows, j0, w, c32, sendbuf, recvbuf, counts);
    if (st) break;
  }
  qz_timer_stop(QZ_PHASE_REDUCE);
  if (st) {
    qz_error_trace(__FILE__, __LINE__, __func__);
    goto done;
  }
done:
  qz_free(&c32);
  qz_free(&sendbuf);
  qz_free(&recvbuf);
  qz_free(&counts);
  return st;
}

int qz_hessian_flush(qz_hessian *H) {
  QZ_CALL(fold_rows(H, H->rows, H->nrows));
  H->nrows = 0; /* keep the buffer for the next rows of this layer */
  return QZ_OK;
}

int qz_hessian_accumulate(qz_hessian *H, const float *x, int64_t n_local) {
  QZ_CHECK(n_local >= 0, QZ_ERR_ARG,
           "qz_hessian_accumulate: negative row count %lld", (long long)n_local);
  QZ_CALL(qz_hessian_flush(H));
  QZ_CALL(fold_rows(H, x, n_local));
  return QZ_OK;
}

/* Finite check of the local lower triangle + diagonal gather. */
static int finish_ready(qz_hessian *H, double scale) {
  const int nb = H->nb;
  int st = QZ_OK;
  int64_t bad_i = -1, bad_j = -1;
  memset(H->diag, 0, (size_t)H->d * sizeof(double));
  for (int64_t jl = 0; jl < H->nloc; jl++) {
    int64_t j = qz_bc_global(jl, nb, H->myc, H->pc);
    double *col = H->a + jl * H->lld;
    for (int64_t il = 0; il < H->mloc; il++) {
      int64_t i = qz_bc_global(il, nb, H->myr, H->pr);
      if (i < j) continue;
      col[il] *= scale;
      if (!isfinite(col[il]) && bad_i < 0) {
        bad_i = i;
        bad_j = j;
      }
      if (i == j) H->diag[i] = col[il];
    }
  }
  if (bad_i >= 0)
    st = qz_error_set(QZ_ERR_NUMERIC, __FILE__, __LINE__, __func__,
                      "Hessian (d=%lld) has a non-finite entry at (%lld, %lld): "
                      "NaN/Inf in the calibration inputs?",
                      (long long)H->d, (long long)bad_i, (long long)bad_j);
  QZ_CALL(qz_error_agree(H->comm, st));
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, H->diag, (int)H->d, MPI_DOUBLE,
                            MPI_SUM, H->comm));
  H->ready = 1;
  H->prepared = 0;
  return QZ_OK;
}

int qz_hessian_reduce(qz_hessian *H) {
  QZ_CALL(qz_hessian_flush(H));
  int64_t n = H->nseq_local;
  QZ_CALL(qz_allreduce_i64(H->comm, &n, 1, MPI_SUM));
  QZ_CHECK(n > 0, QZ_ERR_ARG,
           "qz_hessian_reduce: no calibration sequences were counted "
           "(qz_hessian_count_sequences); H = 2/N sum x x^T needs N > 0");
  H->nseq_total = n;
  qz_free(&H->rows); /* no more rows for this layer */
  H->nrows_cap = 0;
  qz_timer_start(QZ_PHASE_REDUCE);
  int st = finish_ready(H, 2.0 / (double)n);
  qz_timer_stop(QZ_PHASE_REDUCE);
  QZ_CALL(st);
  return QZ_OK;
}

int qz_hessian_set_rows(qz_hessian *H, int64_t r0, int64_t nrows,
                        const float *h) {
  QZ_CHECK(r0 >= 0 && nrows >= 0 && r0 + nrows <= H->d, QZ_ERR_ARG,
           "qz_hessian_set_rows: rows [%lld, %lld) outside [0, %lld)",
           (long long)r0, (long long)(r0 + nrows), (long long)H->d);
  const int nb = H->nb;
  if (r0 == 0) { /* a new matrix: forget rows, sequences, factor */
    H->nrows = 0;
    H->nseq_total = 0;
    H->ready = H->prepared = 0;
  }
  for (int64_t jl = 0; jl < H->nloc; jl++) {
    int64_t j = qz_bc_global(jl, nb, H->myc, H->pc);
    double *col = H->a + jl * H->lld;
    for (int64_t il = 0; il < H->mloc; il++) {
      int64_t i = qz_bc_global(il, nb, H->myr, H->pr);
      if (i < r0) continue;
      if (i >= r0 + nrows) break;
      if (i >= j) col[il] = (double)h[(i - r0) * H->d + j];
    }
  }
  return QZ_OK;
}

int qz_hessian_set_finish(qz_hessian *H) {
  QZ_CALL(finish_ready(H, 1.0));
  return QZ_OK;
}

int qz_hessian_set_full(qz_hessian *H, const float *h) {
  QZ_CALL(qz_hessian_set_rows(H, 0, H->d, h));
  QZ_CALL(qz_hessian_set_finish(H));
  return QZ_OK;
}

int qz_hessian_get_rows(qz_hessian *H, int64_t r0, int64_t nrows,
                        double *out) {
  QZ_CHECK(H->ready, QZ_ERR_ARG, "qz_hessian_get_rows: Hessian not ready");
  QZ_CHECK(r0 >= 0 && nrows >= 0 && r0 + nrows <= H->d, QZ_ERR_ARG,
           "qz_hessian_get_rows: rows [%lld, %lld) outside [0, %lld)",
           (long long)r0, (long long)(r0 + nrows), (long long)H->d);
  const int64_t d = H->d;
  const int nb = H->nb;
  memset(out, 0, (size_t)nrows * d * sizeof(double));
  /* H[i][j] for i in rows: lower entries (i >= j) at (i, j), upper ones at
   * (j, i); each is owned by exactly one rank, the sum assembles them.
   * Local indices are increasing in the global index, so the local rows
   * (columns) inside [r0, r1) are one contiguous range: visiting only those
   * costs O(nb * (mloc + nloc)) per panel instead of O(mloc * nloc). */
  const int64_t r1 = r0 + nrows;
  int64_t ila = 0, ilb = 0, jla = 0, jlb = 0;
  while (ila < H->mloc && qz_bc_global(ila, nb, H->myr, H->pr) < r0) ila++;
  for (ilb = ila; ilb < H->mloc && qz_bc_global(ilb, nb, H->myr, H->pr) < r1;)
    ilb++;
  while (jla < H->nloc && qz_bc_global(jla, nb, H->myc, H->pc) < r0) jla++;
  for (jlb = jla; jlb < H->nloc && qz_bc_global(jlb, nb, H->myc, H->pc) < r1;)
    jlb++;
  for (int64_t jl = 0; jl < H->nloc; jl++) { /* lower: rows i in range */
    int64_t j = qz_bc_global(jl, nb, H->myc, H->pc);
    const double *col = H->a + jl * H->lld;
    for (int64_t il = ila; il < ilb; il++) {
      int64_t i = qz_bc_global(il, nb, H->myr, H->pr);
      if (i < j) continue;
      out[(i - r0) * d + j] = i == j ? H->diag[i] : col[il]; /* storage diag: factor */
    }
  }
  for (int64_t jl = jla; jl < jlb; jl++) { /* upper: rows j in range */
    int64_t j = qz_bc_global(jl, nb, H->myc, H->pc);
    const double *col = H->a + jl * H->lld;
    for (int64_t il = 0; il < H->mloc; il++) {
      int64_t i = qz_bc_global(il, nb, H->myr, H->pr);
      if (i > j) out[(j - r0) * d + i] = col[il];
    }
  }
  QZ_CHECK((int64_t)nrows * d < (1LL << 31), QZ_ERR_ARG,
           "qz_hessian_get_rows: too many rows at once");
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, out, (int)(nrows * d), MPI_DOUBLE,
                            MPI_SUM, H->comm));
  return QZ_OK;
}
