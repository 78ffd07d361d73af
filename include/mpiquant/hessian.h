/* Distributed layer Hessian H = (2/N) * sum_t x_t x_t^T (golden rule 1: N is
 * the number of calibration *sequences*, not tokens).
 *
 * H lives in one ScaLAPACK block-cyclic f64 matrix on a qz_grid; no rank ever
 * allocates d x d.  Life cycle:
 *
 *   qz_hessian_create            collective
 *   qz_hessian_add_rows (*)      not collective: rows are buffered (f32)
 *   qz_hessian_count_sequences   not collective: local N
 *   qz_hessian_flush (optional)  collective: fold buffered rows into the
 *                                distributed matrix, empty the buffer
 *   qz_hessian_accumulate (*)    collective: fold caller's rows directly
 *   qz_hessian_reduce            collective: flush + scale by 2/N (N summed
 *                                over ranks) + NaN check + diagonal gather
 *   -> ready: qz_hessian_prepare (chol.h) factors it for GPTQ.
 *   or qz_hessian_set_full       not collective: H given on every rank
 *
 * Memory per rank (reported by qz_hessian_bytes):
 *   matrix  mloc * nloc * 8 bytes, mloc = numroc(d, nb, myrow, pr),
 *           nloc = numroc(d, nb, mycol, pc)  (= 8 d^2 / P when nb*pr and
 *           nb*pc divide d; at most 8 (d + nb*pr)(d + nb*pc) / P)
 *   vectors 3 d doubles/ints (diagonal, permutation, dead flags)
 *   rows    buffered rows * d * 4 bytes (capacity kept across flushes and
 *           reset, freed by reduce)
 * Transient during flush: one panel of W columns, d * W * 12 bytes plus the
 * received part (d/pr) * W * 8, W = nb * max(1, QZ_HESSIAN_PANEL_BYTES /
 * (12 d nb)) (<= 64 MiB + O(d nb)); during prepare: one redistribution
 * batch, <= 2 * 8 * d * nb * pc bytes.
 *
 * Accumulation scheme: the rows are cut into chunks at fixed *global* row
 * boundaries (one calibration sequence each by default, or
 * qz_hessian_set_chunking), so a chunk's rows are the same whatever the
 * number of ranks. For each panel of W block columns of the lower triangle,
 * ssyrk (diagonal W x W block) + sgemm (below it) of a chunk (f32 products
 * summed in f32 within the chunk) is converted to 64-bit fixed point and
 * added in destination order, then MPI_Reduce_scatter'ed (integer sums) to
 * the owners of its blocks. Integer addition is exact, so H does not depend
 * on the number of ranks or the reduction order, to the bit. The fixed-point
 * unit comes from a bound on |H_ij| <= sum_t max_i x_ti^2 (Cauchy-Schwarz)
 * that is itself exact (powers of two summed as integers): entries keep
 * ~60 bits relative to the largest diagonal entry (more than f64 sums).
 * Only the lower triangle is formed: n*d^2 flops instead of 2*n*d^2.
 *
 * Two-level reduction: when the ranks span several nodes with more than one
 * rank on some node (MPI_COMM_TYPE_SHARED split), the ranks of a node first
 * sum their packed panel (integer MPI_Reduce to the node's lowest rank, over
 * shared memory), only the node leaders take part in the reduce-scatter
 * (one contribution per node crosses the network instead of one per rank),
 * and each leader scatters its node's share to the node's ranks. Integer
 * sums: H is the same bits as with the flat reduce-scatter. A leader holds
 * one more panel (d * W * 8 bytes) during a flush. MPIQUANT_HESSIAN_NODE=off
 * forces the flat path, =K emulates nodes of K consecutive ranks (tests,
 * benchmarks on one machine).
 */
#ifndef MPIQUANT_HESSIAN_H
#define MPIQUANT_HESSIAN_H

#include <stdint.h>

#include "mpiquant/grid.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QZ_HESSIAN_KCHUNK 4096
/* Budget of the f32 + f64 column panel of a flush (see memory above). */
#define QZ_HESSIAN_PANEL_BYTES (64LL << 20)

typedef struct qz_hessian qz_hessian;

/* Chunk the rows added from now on at global row multiples of chunk_rows,
 * this rank's first row being global row first_row (callers that split rows
 * over ranks arbitrarily align the split to chunk_rows, so that no chunk
 * spans two ranks). Without it a chunk is one counted sequence (rows /
 * sequences of this rank), else QZ_HESSIAN_KCHUNK rows. Not collective. */
void qz_hessian_set_chunking(qz_hessian *H, int64_t first_row, int64_t chunk_rows);

/* Explicit chunks for the rows folded next (qz_hessian_accumulate, or the
 * flush of rows added after this call): chunk c is rows [ends[c-1],
 * ends[c]) of this rank's rows (ends non-decreasing; equal ends are empty
 * chunks, skipped).  For row sets whose pieces are not of one length (the
 * tokens of one calibration window routed to one expert): a chunk that is
 * the same rows at every rank count gives the same bits.  `ends` must stay
 * valid until those rows are folded; n = 0 returns to the default.
 * Not collective. */
void qz_hessian_set_chunk_ends(qz_hessian *H, const int64_t *ends, int64_t n);
/* Zero Hessian of size d x d on `grid` (the grid must outlive it).
 * Collective on the grid's communicator; d must match. */
int qz_hessian_create(qz_grid *grid, int64_t d, qz_hessian **out);
/* Not collective (frees local memory only). Accepts NULL, NULLs the pointer. */
void qz_hessian_destroy(qz_hessian **H);

/* Forget everything accumulated (and any factor); keep the allocation, so one
 * handle serves every layer of the same width.  Not collective. */
void qz_hessian_reset(qz_hessian *H);

/* Buffer this rank's calibration rows x  [n_local, d] (row = token).
 * Not collective; any n_local >= 0 per rank. */
int qz_hessian_add_rows(qz_hessian *H, const float *x /* [n_local, d] */,
                        int64_t n_local);
/* Count n calibration sequences on this rank (golden rule 1's N is the sum
 * over ranks). Not collective. */
void qz_hessian_count_sequences(qz_hessian *H, int64_t n);

/* Fold the buffered rows into the distributed matrix (unscaled) and empty
 * the row buffer (its allocation is kept).  Collective on the grid's communicator. */
int qz_hessian_flush(qz_hessian *H);
/* Fold x [n_local, d] straight into the distributed matrix without copying
 * it (after flushing any buffered rows).  Same result as add_rows + flush.
 * Collective on the grid's communicator; n_local may differ (and be 0). */
int qz_hessian_accumulate(qz_hessian *H, const float *x /* [n_local, d] */,
                          int64_t n_local);
/* Flush, then H *= 2 / N (N = sum of counted sequences over ranks; error if
 * 0), check every entry is finite (error on every rank otherwise), gather the
 * diagonal.  Collective on the grid's communicator. */
int qz_hessian_reduce(qz_hessian *H);

/* Set H from the full matrix h [d, d] (row-major; symmetric, only the lower
 * triangle is read) that every rank holds: the result is ready as after
 * qz_hessian_reduce (no scaling).  Collective on the grid's communicator
 * (for the finiteness check); h must match on every rank. */
int qz_hessian_set_full(qz_hessian *H, const float *h /* [d, d] */);

/* The same in slabs, so no rank holds the full matrix: every rank passes
 * rows [r0, r0 + nrows) of H (row-major [nrows, d]; only entries with
 * column <= row are read), slabs in any order starting with r0 = 0 (which
 * discards the previous content), then set_finish.  set_rows is not
 * collective; set_finish is (finiteness check, diagonal). */
int qz_hessian_set_rows(qz_hessian *H, int64_t r0, int64_t nrows,
                        const float *h /* [nrows, d] */);
int qz_hessian_set_finish(qz_hessian *H);

/* Read access. Not collective. */
int64_t qz_hessian_dim(const qz_hessian *H);
qz_grid *qz_hessian_grid(const qz_hessian *H);
int qz_hessian_is_ready(const qz_hessian *H); /* reduced or set */
/* The diagonal of the ready H [d] (before dead fix and damping), the same on
 * every rank. NULL before reduce/set. */
const double *qz_hessian_diag(const qz_hessian *H);
/* Total N over ranks after reduce (0 for set_full). */
int64_t qz_hessian_nsequences(const qz_hessian *H);
/* Bytes this handle holds now on this rank (matrix + vectors + row buffer),
 * and the largest transient working set of a flush/prepare so far. */
int64_t qz_hessian_bytes(const qz_hessian *H);
int64_t qz_hessian_peak_transient_bytes(const qz_hessian *H);
/* Bytes this rank sent into the (inter-node) reduce-scatter so far: its
 * packed panels (flat), its node's summed panels (a node leader), 0 (other
 * ranks of a node). Not collective. */
int64_t qz_hessian_reduce_bytes(const qz_hessian *H);
/* Nodes of the two-level reduction; 0 when the reduction is flat.
 * Not collective. */
int qz_hessian_nodes(const qz_hessian *H);

/* H[i, j] of the ready matrix gathered into `out` [nrows, d] row-major for
 * rows [r0, r0 + nrows) (tests; QuantEase streams H in such panels).
 * Local work O(nrows * d / P'), one Allreduce of nrows * d doubles; valid
 * also after prepare (reads the lower triangle and the saved diagonal).
 * Collective; r0, nrows must match. */
int qz_hessian_get_rows(qz_hessian *H, int64_t r0, int64_t nrows,
                        double *out /* [nrows, d] */);

#ifdef __cplusplus
}
#endif
#endif
