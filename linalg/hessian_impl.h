/* linalg private: the qz_hessian structure shared by hessian.c and chol.c. */
#ifndef QZ_LINALG_HESSIAN_IMPL_H
#define QZ_LINALG_HESSIAN_IMPL_H

#include <stdint.h>

#include "mpiquant/chol.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"

struct qz_hessian {
  qz_grid *grid;
  MPI_Comm comm;
  int64_t d;
  int nb, pr, pc, myr, myc, rank, size;
  int64_t mloc, nloc, lld;
  int desc[9];
  double *a; /* [nloc][lld] column-major local block-cyclic storage; lower
                triangle = H (original order), upper = factor after prepare */
  size_t a_bytes;
  /* buffered rows */
  float *rows; /* [nrows_cap, d] */
  int64_t nrows, nrows_cap;
  int *rexp; /* [rexp_cap] per-row bound exponents of a fold (fold_scale) */
  size_t rexp_cap;
  int64_t nseq_local, nseq_total;
  /* chunking of the rows of a fold: chunks are the global row ranges
   * [c * chunk_rows, (c + 1) * chunk_rows); this rank's first row is global
   * row chunk_first (set by qz_hessian_set_chunking; 0 = per sequence) */
  int64_t chunk_first, chunk_rows;
  /* explicit chunk ends of the rows folded next (qz_hessian_set_chunk_ends;
   * caller-owned), or NULL */
  const int64_t *chunk_ends;
  int64_t nchunk_ends;
  /* exact accumulation: while fx_on, `a` holds int64 sums of the chunks'
   * f32 products in units of 2^-fx_k (see fold_rows); fx_used bounds the
   * magnitude of any accumulated entry in those units */
  int fx_on, fx_k;
  double fx_used;
  /* ready state */
  int ready;
  double *diag; /* [d] */
  /* prepared state */
  int prepared;
  qz_prepare_opts popts;
  qz_prepare_info info;
  int32_t *perm;  /* [d] */
  uint8_t *dead;  /* [d] */
  int64_t peak_transient;
  /* two-level reduction (fold_rows): ranks of a node sum their panel
   * contributions first, one contribution per node enters the reduce-
   * scatter among node leaders, each leader scatters its node's share.
   * hier = 0: one flat reduce-scatter (one node, or one rank per node). */
  int hier;
  MPI_Comm node, leaders; /* MPI_COMM_NULL when flat / not a leader */
  int node_rank, node_size, nnodes;
  int *ord;               /* [size] ranks in packing order: node by node */
  int *node_of;           /* [size] node index of each rank */
  int64_t xnode_bytes;    /* bytes this rank sent into the inter-node phase */
  /* factor_rows exchange buffer, grown once and reused per panel */
  float *xbuf; /* factor panel exchange (f32: what the sweep uses) */
  size_t xbuf_n;
  /* factor rows streamed so far over the handle's life (not reset): f64
   * entries this rank received, panels, seconds (qz_hessian_factor_stream) */
  int64_t stream_entries, stream_panels;
  double stream_seconds;
};

#endif
