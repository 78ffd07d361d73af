/* Distributed Hessian: row buffering, panel-wise sgemm into f64, and
 * reduce-scatter of each panel straight into the block-cyclic matrix. */
#include <cblas.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hessian_impl.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/scalapack.h"
#include "mpiquant/threads.h"
#include "mpiquant/timing.h"

/* Node structure of H->comm (see hessian_impl.h). Collective. */
static int node_topology(qz_hessian *H) {
  MPI_Comm node;
  /* MPIQUANT_HESSIAN_NODE=off: the flat reduction (comm.h) */
  QZ_CALL(qz_comm_node_split(H->comm, 1, &node));
  int nrank = 0, nsize = 1, leader = H->rank;
  if (node != MPI_COMM_NULL) {
    MPI_Comm_rank(node, &nrank);
    MPI_Comm_size(node, &nsize);
    MPI_Bcast(&leader, 1, MPI_INT, 0, node); /* node rank 0 = lowest rank */
  }
  int *lead = NULL;
  QZ_CALL(qz_alloc((size_t)H->size, sizeof(int), "node leaders", &lead));
  QZ_CALL_MPI(MPI_Allgather(&leader, 1, MPI_INT, lead, 1, MPI_INT, H->comm));
  int nn = 0, maxsz = 0;
  for (int r = 0; r < H->size; r++) nn += lead[r] == r;
  QZ_CALL_MPI(MPI_Allreduce(&nsize, &maxsz, 1, MPI_INT, MPI_MAX, H->comm));
  H->hier = nn > 1 && maxsz > 1;
  if (!H->hier) {
    if (node != MPI_COMM_NULL) MPI_Comm_free(&node);
    free(lead);
    return QZ_OK;
  }
  H->node = node;
  H->node_rank = nrank;
  H->node_size = nsize;
  H->nnodes = nn;
  int st = qz_alloc((size_t)H->size, sizeof(int), "packing order", &H->ord);
  if (!st) st = qz_alloc((size_t)H->size, sizeof(int), "node of rank", &H->node_of);
  if (!st) {
    /* nodes numbered by their lowest rank; packing order node by node,
     * ranks ascending inside a node (= node comm order, key = rank) */
    int pos = 0, idx = 0;
    for (int l = 0; l < H->size; l++) {
      if (lead[l] != l) continue;
      for (int r = 0; r < H->size; r++)
        if (lead[r] == l) {
          H->ord[pos++] = r;
          H->node_of[r] = idx;
        }
      idx++;
    }
  }
  free(lead);
  QZ_CALL(st);
  QZ_CALL_MPI(MPI_Comm_split(H->comm, nrank == 0 ? 0 : MPI_UNDEFINED, H->rank,
                             &H->leaders));
  return QZ_OK;
}

int qz_hessian_create(qz_grid *grid, int64_t d, qz_hessian **out) {
  *out = NULL;
  QZ_CHECK(grid, QZ_ERR_ARG, "qz_hessian_create: no grid");
  QZ_CHECK(d > 0 && d < (1LL << 31), QZ_ERR_ARG,
           "qz_hessian_create: dimension %lld out of range [1, 2^31)",
           (long long)d);
  qz_hessian *H = NULL;
  QZ_CALL(qz_calloc(1, sizeof *H, "Hessian handle", &H));
  H->node = H->leaders = MPI_COMM_NULL;
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
  st = node_topology(H);
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
  qz_free(&H->rexp);
  qz_free(&H->diag);
  qz_free(&H->perm);
  qz_free(&H->dead);
  qz_free(&H->xbuf);
  qz_free(&H->ord);
  qz_free(&H->node_of);
  if (H->node != MPI_COMM_NULL) MPI_Comm_free(&H->node);
  if (H->leaders != MPI_COMM_NULL) MPI_Comm_free(&H->leaders);
  free(H);
  *Hp = NULL;
}

void qz_hessian_reset(qz_hessian *H) {
  memset(H->a, 0, H->a_bytes);
  H->nrows = 0; /* keeps the row buffer's allocation */
  H->nseq_local = H->nseq_total = 0;
  H->ready = H->prepared = 0;
  H->fx_on = 0;
  H->fx_k = 0;
  H->fx_used = 0;
  H->chunk_first = H->chunk_rows = 0;
  H->chunk_ends = NULL;
  H->nchunk_ends = 0;
  memset(H->diag, 0, (size_t)H->d * sizeof(double));
}

void qz_hessian_set_chunking(qz_hessian *H, int64_t first_row, int64_t chunk_rows) {
  H->chunk_first = first_row > 0 ? first_row : 0;
  H->chunk_rows = chunk_rows > 0 ? chunk_rows : 0;
}

void qz_hessian_set_chunk_ends(qz_hessian *H, const int64_t *ends, int64_t n) {
  H->chunk_ends = n > 0 ? ends : NULL;
  H->nchunk_ends = n > 0 ? n : 0;
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

int64_t qz_hessian_reduce_bytes(const qz_hessian *H) { return H->xnode_bytes; }
int qz_hessian_nodes(const qz_hessian *H) { return H->hier ? H->nnodes : 0; }

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

/* f32 chunk value -> fixed point: round(v * 2^k) to nearest even, a
 * function of v and k only. sc = 2^k, so v * sc is exact in double; below
 * 2^51 adding and subtracting 1.5 * 2^52 rounds (default rounding mode, no
 * libm call in the inner loop), above it a double is already an integer. */
static inline int64_t fx(float v, double sc) {
  const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
  double y = (double)v * sc;
  if (fabs(y) < 2251799813685248.0) { /* 2^51 */
    double t = y + magic; /* not folded: no -fassociative-math */
    y = t - magic;
  }
  return (int64_t)y;
}

/* Rows of block column jb that process row p holds: the blocks blk >= jb
 * with blk % pr == p (the lower part of that column of blocks). */
static int64_t col_rows(int64_t d, int nb, int pr, int p, int64_t jb) {
  int64_t n = 0;
  for (int64_t blk = jb + ((p - jb % pr) + pr) % pr; blk * nb < d; blk += pr)
    n += d - blk * nb < nb ? d - blk * nb : nb;
  return n;
}

/* Column j of a panel for process row p into out (col_rows entries). */
static void pack_column(const qz_hessian *H, int64_t j, int64_t j0, int p, const float *c32,
                        int64_t *out, double k, int mode) {
  const int64_t d = H->d, M = d - j0;
  const int nb = H->nb, pr = H->pr;
  const float *cj = c32 + (j - j0) * M - j0;
  int64_t pos = 0;
  for (int64_t blk = j / nb + ((p - (j / nb) % pr) + pr) % pr; blk * nb < d; blk += pr) {
    int64_t i0 = blk * nb, i1 = i0 + nb < d ? i0 + nb : d;
    /* above the diagonal of the diagonal block ssyrk wrote nothing: send 0
     * there (those entries are never used) */
    int64_t iu = j < i1 ? (j > i0 ? j : i0) : i1;
    if (mode == 2) iu = i1;
    if (mode == 1) pos += iu - i0; /* zeros from the first chunk stay */
    else
      for (int64_t i = i0; i < iu; i++) out[pos++] = 0;
    if (mode == 0)
      for (int64_t i = iu; i < i1; i++) out[pos++] = fx(cj[i], k);
    else if (mode == 1)
      for (int64_t i = iu; i < i1; i++) out[pos++] += fx(cj[i], k);
  }
}

/* Destination order of a wide panel [j0, j0 + W): ranks ascending (two-level
 * reduction: in H->ord order, node by node); for a rank (p, q) its columns j
 * (ocol == q) ascending, then the rows i >= start of j's block column with
 * orow == p, ascending.  mode 0: sendbuf = c32, mode 1: sendbuf += c32
 * (exact integer accumulation over chunks), mode 2: sendbuf = 0 (a rank
 * without rows); counts set.  The columns of a block column are split over
 * the rank's threads (threads.h): every column has the same length there,
 * so its place in sendbuf is known, and each entry is converted the same
 * way by one thread. */
static void pack_panel(const qz_hessian *H, int64_t j0, int64_t W,
                       const float *c32, int64_t *sendbuf, int *counts,
                       int mode) {
  const int64_t d = H->d;
  const int nb = H->nb, pr = H->pr, pc = H->pc;
  const double k = ldexp(1.0, H->fx_k);
  int64_t pos = 0;
  for (int t = 0; t < pr * pc; t++) {
    const int rk = H->hier ? H->ord[t] : t, p = rk / pc, q = rk % pc;
    const int64_t start = pos;
    for (int64_t jb = j0 / nb; jb * nb < j0 + W; jb++) {
      if (jb % pc != q) continue;
      const int64_t ja = jb * nb > j0 ? jb * nb : j0;
      int64_t je = (jb + 1) * nb < j0 + W ? (jb + 1) * nb : j0 + W;
      if (je > d) je = d;
      const int64_t L = col_rows(d, nb, pr, p, jb);
      int64_t *base = sendbuf + pos;
#pragma omp parallel for schedule(static) num_threads(qz_threads_for((je - ja) * L))
      for (int64_t j = ja; j < je; j++)
        pack_column(H, j, j0, p, c32, base + (j - ja) * L, k, mode);
      pos += (je - ja) * L;
    }
    counts[p * pc + q] = (int)(pos - start);
  }
}

/* The two-level reduce-scatter of a packed panel (sendbuf in H->ord order,
 * counts per rank): sum over the node into the node leader's sendbuf, a
 * reduce-scatter of whole nodes' shares among the leaders into nodebuf,
 * then each leader scatters its node's share to the node's ranks.
 * Integer sums: the result is the flat reduce-scatter's, to the bit.
 * Collective on H->comm. */
static int reduce_scatter_nodes(qz_hessian *H, int64_t *sendbuf, int64_t *nodebuf,
                                int64_t *recvbuf, const int *counts) {
  int total = 0, ncnt[H->nnodes > 0 ? H->nnodes : 1];
  int mcnt[H->node_size], mdsp[H->node_size];
  for (int n = 0; n < H->nnodes; n++) ncnt[n] = 0;
  for (int r = 0; r < H->size; r++) {
    total += counts[r];
    ncnt[H->node_of[r]] += counts[r];
  }
  const int me = H->node_of[H->rank];
  int k = 0, off = 0;
  for (int t = 0; t < H->size; t++) { /* my node's ranks in node-rank order */
    int r = H->ord[t];
    if (H->node_of[r] != me) continue;
    mcnt[k] = counts[r];
    mdsp[k++] = off;
    off += counts[r];
  }
  if (H->node_rank == 0)
    QZ_CALL_MPI(MPI_Reduce(MPI_IN_PLACE, sendbuf, total, MPI_INT64_T, MPI_SUM, 0, H->node));
  else
    QZ_CALL_MPI(MPI_Reduce(sendbuf, NULL, total, MPI_INT64_T, MPI_SUM, 0, H->node));
  qz_count_reduce(H->node, 0, 8 * (int64_t)total);
  if (H->node_rank == 0) {
    QZ_CALL_MPI(MPI_Reduce_scatter(sendbuf, nodebuf, ncnt, MPI_INT64_T, MPI_SUM,
                                   H->leaders));
    qz_count_reduce_scatter(H->leaders, 8 * (int64_t)total, 8 * (int64_t)ncnt[me]);
    H->xnode_bytes += (int64_t)total * 8;
  }
  QZ_CALL_MPI(MPI_Scatterv(nodebuf, mcnt, mdsp, MPI_INT64_T, recvbuf,
                           counts[H->rank], MPI_INT64_T, 0, H->node));
  qz_count_scatter(H->node, 0, 8 * (int64_t)ncnt[me], 8 * (int64_t)counts[H->rank]);
  return QZ_OK;
}

/* Rows of this rank in chunk order: [*r0, *r0 + *k) is the chunk after
 * row r; chunks end at global multiples of the chunk length. */
static int64_t chunk_len(const qz_hessian *H, int64_t G, int64_t r, int64_t nrows) {
  if (H->chunk_ends) { /* explicit ends; empty chunks skipped */
    for (int64_t i = 0; i < H->nchunk_ends; i++)
      if (H->chunk_ends[i] > r) return (H->chunk_ends[i] < nrows ? H->chunk_ends[i] : nrows) - r;
    return nrows - r;
  }
  int64_t g = H->chunk_first + r;
  int64_t end = (g / G + 1) * G - H->chunk_first;
  return (end < nrows ? end : nrows) - r;
}

/* One wide panel of block columns [j0, j0 + W) of the lower triangle: ssyrk
 * for its diagonal W x W block and sgemm below it, per chunk of rows, summed
 * exactly (fixed point) in destination order, then reduce-scattered to the
 * owners. */
static int flush_panel(qz_hessian *H, const float *rows, int64_t nrows, int64_t G,
                       int64_t j0, int64_t W, float *c32, int64_t *sendbuf,
                       int64_t *nodebuf, int64_t *recvbuf, int *counts) {
  const int64_t d = H->d, M = d - j0;
  const int nb = H->nb, pr = H->pr, pc = H->pc;
  for (int64_t r0 = 0; r0 < nrows;) {
    int64_t k = chunk_len(H, G, r0, nrows);
    const float *xa = rows + r0 * d + j0; /* col-major [d - j0, k], ld d */
    cblas_ssyrk(CblasColMajor, CblasLower, CblasNoTrans, (int)W, (int)k, 1.0f,
                xa, (int)d, 0.0f, c32, (int)M);
    if (M > W)
      cblas_sgemm(CblasColMajor, CblasNoTrans, CblasTrans, (int)(M - W),
                  (int)W, (int)k, 1.0f, xa + W, (int)d, xa, (int)d, 0.0f,
                  c32 + W, (int)M);
    pack_panel(H, j0, W, c32, sendbuf, counts, r0 > 0);
    r0 += k;
  }
  if (nrows == 0) pack_panel(H, j0, W, c32, sendbuf, counts, 2);
  if (H->hier) {
    QZ_CALL(reduce_scatter_nodes(H, sendbuf, nodebuf, recvbuf, counts));
  } else {
    QZ_CALL_MPI(MPI_Reduce_scatter(sendbuf, recvbuf, counts, MPI_INT64_T, MPI_SUM,
                                   H->comm));
    int total = 0;
    for (int r = 0; r < H->size; r++) total += counts[r];
    qz_count_reduce_scatter(H->comm, 8 * (int64_t)total, 8 * (int64_t)counts[H->rank]);
    H->xnode_bytes += (int64_t)total * 8;
  }
  int64_t q = 0;
  for (int64_t j = j0; j < j0 + W; j++) {
    if (qz_bc_owner(j, nb, pc) != H->myc) continue;
    double *col = H->a + qz_bc_local(j, nb, pc) * H->lld;
    for (int64_t blk = j / nb + ((H->myr - (j / nb) % pr) + pr) % pr;
         blk * nb < d; blk += pr) {
      int64_t i0 = blk * nb, i1 = i0 + nb < d ? i0 + nb : d;
      double *dst = col + qz_bc_local(i0, nb, pr);
      for (int64_t i = i0; i < i1; i++) { /* the storage holds int64 while fx_on */
        int64_t v;
        memcpy(&v, dst + (i - i0), sizeof v);
        v += recvbuf[q++];
        memcpy(dst + (i - i0), &v, sizeof v);
      }
    }
  }
  return QZ_OK;
}

/* Apply f to every stored entry of the local lower triangle. */
#define FOR_LOWER(H, body)                                              \
  for (int64_t jl = 0; jl < (H)->nloc; jl++) {                          \
    int64_t j = qz_bc_global(jl, (H)->nb, (H)->myc, (H)->pc);           \
    double *col = (H)->a + jl * (H)->lld;                               \
    for (int64_t il = 0; il < (H)->mloc; il++) {                        \
      int64_t i = qz_bc_global(il, (H)->nb, (H)->myr, (H)->pr);         \
      if (i < j) continue;                                              \
      body                                                              \
    }                                                                   \
  }

/* Exponent e with max_i x_i^2 <= 2^e (INT_MIN for a zero row); *bad set on
 * NaN/Inf. The maximum of 16 interleaved lanes (exact: a maximum does not
 * depend on the order; NaN never wins a comparison) so that it vectorizes. */
static int row_bound_exp(const float *x, int64_t d, int *bad) {
  float m16[16] = {0};
  int b = 0;
  int64_t i = 0;
  for (; i + 16 <= d; i += 16)
    for (int k = 0; k < 16; k++) {
      float a = fabsf(x[i + k]);
      b |= !(a <= FLT_MAX); /* NaN or Inf */
      m16[k] = a > m16[k] ? a : m16[k];
    }
  float m = 0;
  for (int k = 0; k < 16; k++) m = m16[k] > m ? m16[k] : m;
  for (; i < d; i++) {
    float a = fabsf(x[i]);
    b |= !(a <= FLT_MAX);
    m = a > m ? a : m;
  }
  if (b) *bad = 1;
  if (m == 0) return INT_MIN;
  int e;
  frexp((double)m * (double)m, &e);
  return e;
}

/* Fixed-point unit of the next fold (collective): a bound on every entry of
 * the fold's sum, |sum_t x_ti x_tj| <= sum_t max_i x_ti^2, computed exactly
 * (each row's bound rounded up to a power of two, summed as integers), so
 * that it is the same at every np. Ensures the accumulator (previous folds
 * + this one) stays below 2^62 units, shifting earlier sums if needed. */
static int fold_scale(qz_hessian *H, const float *rows, int64_t nrows) {
  const int64_t d = H->d;
  int emax = INT_MIN, st = qz_grow((size_t)nrows, sizeof *H->rexp, "Hessian row exponents",
                                   &H->rexp, &H->rexp_cap);
  for (int64_t t = 0; st == QZ_OK && t < nrows; t++) {
    int bad = 0, e = row_bound_exp(rows + t * d, d, &bad);
    H->rexp[t] = e;
    if (bad) {
      int64_t c = 0;
      while (c < d && fabsf(rows[t * d + c]) <= FLT_MAX) c++;
      st = qz_error_set(QZ_ERR_NUMERIC, __FILE__, __LINE__, __func__,
                        "Hessian (d=%lld): non-finite input value %g in this rank's row "
                        "%lld, column %lld: NaN/Inf in the calibration inputs?",
                        (long long)d, (double)rows[t * d + c], (long long)t, (long long)c);
    }
    if (e > emax) emax = e;
  }
  QZ_CALL(qz_error_agree(H->comm, st));
  int lo_e[2] = {0, emax};
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &lo_e[1], 1, MPI_INT, MPI_MAX, H->comm));
  qz_count_allreduce(H->comm, (int64_t)sizeof(int));
  if (lo_e[1] == INT_MIN) return QZ_OK; /* all rows zero: nothing to add */
  const int base = lo_e[1] - 30;      /* units of the bound sum */
  int64_t cnt = 0;                    /* <= rows * 2^30 */
  for (int64_t t = 0; t < nrows; t++) {
    const int e = H->rexp[t];
    if (e != INT_MIN) cnt += (int64_t)1 << (e > base ? e - base : 0);
  }
  QZ_CALL(qz_allreduce_i64(H->comm, &cnt, 1, MPI_SUM));
  int bits = 64 - __builtin_clzll((unsigned long long)cnt); /* cnt <= 2^bits */
  int et = bits + base;                                      /* bound <= 2^et */
  int k = 60 - et; /* this fold's entries < 2^60 units (f32 rounding slack) */
  if (!H->fx_on) {
    H->fx_on = 1;
    H->fx_k = k;
    H->fx_used = 0;
  }
  /* a later fold with larger rows: coarser units for everything */
  while (H->fx_k > k || H->fx_used + ldexp(1.0, et + H->fx_k) > ldexp(1.0, 62)) {
    FOR_LOWER(H, {
      int64_t v;
      memcpy(&v, &col[il], sizeof v);
      v = (v + 1) >> 1; /* arithmetic shift, the same on every rank */
      memcpy(&col[il], &v, sizeof v);
    })
    H->fx_k--;
    H->fx_used = H->fx_used / 2 + 1;
  }
  H->fx_used += ldexp(1.0, et + H->fx_k);
  return QZ_OK;
}

/* Fold rows [nrows, d] (this rank's; any count) into the matrix.
 * Collective. */
static int fold_rows(qz_hessian *H, const float *rows, int64_t nrows) {
  int st = QZ_OK;
  float *c32 = NULL;
  int64_t *sendbuf = NULL, *recvbuf = NULL, *nodebuf = NULL;
  int *counts = NULL;
  const int64_t d = H->d;
  const int nb = H->nb;
  /* chunk length: one sequence of this rank's rows, unless set */
  int64_t G = H->chunk_rows;
  if (G <= 0)
    G = H->nseq_local > 0 && nrows % H->nseq_local == 0 ? nrows / H->nseq_local
                                                       : QZ_HESSIAN_KCHUNK;
  if (G <= 0) G = QZ_HESSIAN_KCHUNK;
  st = H->ready ? qz_error_set(QZ_ERR_ARG, __FILE__, __LINE__, __func__,
                               "qz_hessian_flush: Hessian already reduced")
                : QZ_OK;
  QZ_CALL_DONE(qz_error_agree(H->comm, st));
  int64_t any = nrows;
  QZ_CALL_DONE(qz_allreduce_i64(H->comm, &any, 1, MPI_SUM));
  if (any == 0) goto done;
  qz_timer_start(QZ_PHASE_HESSIAN); /* the rows' scan (nested: no-op) */
  st = fold_scale(H, rows, nrows);
  qz_timer_stop(QZ_PHASE_HESSIAN);
  QZ_CALL_DONE(st);
  qz_timer_start(QZ_PHASE_REDUCE);
  /* panel width: whole block columns, f32 + f64 panel within the budget */
  int64_t W = QZ_HESSIAN_PANEL_BYTES / (d * nb * 12) * nb;
  if (W < nb) W = nb;
  if (W > d) W = d;
  int64_t ldrecv = qz_bc_numroc(d, nb, H->myr, H->pr);
  st = qz_alloc((size_t)(d * W), sizeof(float), "Hessian panel (f32)", &c32);
  if (!st)
    st = qz_alloc((size_t)(d * W), sizeof(int64_t), "reduce-scatter send", &sendbuf);
  if (!st)
    st = qz_alloc((size_t)(ldrecv * W + 1), sizeof(int64_t),
                  "reduce-scatter receive", &recvbuf);
  if (!st) st = qz_alloc((size_t)H->size, sizeof(int), "counts", &counts);
  /* a node leader receives its node's share: at most the whole panel */
  if (!st && H->hier && H->node_rank == 0)
    st = qz_alloc((size_t)(d * W), sizeof(int64_t), "node share", &nodebuf);
  note_transient(H, d * W * 12 + ldrecv * W * 8 +
                        (H->hier && H->node_rank == 0 ? d * W * 8 : 0));
  st = qz_error_agree(H->comm, st);
  if (st) {
    qz_timer_stop(QZ_PHASE_REDUCE);
    goto done;
  }
  for (int64_t j0 = 0; j0 < d; j0 += W) {
    int64_t w = d - j0 < W ? d - j0 : W;
    st = flush_panel(H, rows, nrows, G, j0, w, c32, sendbuf, nodebuf, recvbuf, counts);
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
  qz_free(&nodebuf);
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
  const int fx_on = H->fx_on;
  const double unit = ldexp(1.0, -H->fx_k); /* exact: a power of two */
  H->fx_on = 0;
  for (int64_t jl = 0; jl < H->nloc; jl++) {
    int64_t j = qz_bc_global(jl, nb, H->myc, H->pc);
    double *col = H->a + jl * H->lld;
    for (int64_t il = 0; il < H->mloc; il++) {
      int64_t i = qz_bc_global(il, nb, H->myr, H->pr);
      if (i < j) continue;
      if (fx_on) { /* fixed point -> f64 (rounded once, the same everywhere) */
        int64_t v;
        memcpy(&v, &col[il], sizeof v);
        col[il] = (double)v * unit;
      }
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
  qz_count_allreduce(H->comm, 8 * H->d);
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
    H->fx_on = 0;
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
  qz_count_allreduce(H->comm, 8 * (int64_t)nrows * d);
  return QZ_OK;
}
