/* BLACS process grid for the distributed Hessian and its factor.
 *
 * A grid is created once per run (or per communicator) and reused for every
 * layer: creating a BLACS context is collective and not free.  The grid keeps
 * its own duplicate of the communicator (MPI_ERRORS_RETURN set), so its
 * collectives never mix with the caller's.  Process (prow, pcol) is rank
 * prow * npcol + pcol of that communicator (row-major BLACS order). */
#ifndef MPIQUANT_GRID_H
#define MPIQUANT_GRID_H

#include <mpi.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QZ_GRID_DEFAULT_NB 128

typedef struct qz_grid qz_grid;

/* Shape of the process grids made after the call (process-wide, the
 * global option --proc-grid):
 *  - QZ_GRID_1D: one process row, 1 x P.  ScaLAPACK's factorization then
 *    rounds the same on every 1 x P grid, and P = 1 runs it too (not
 *    LAPACK), so the factor's bits do not depend on the rank count;
 *  - QZ_GRID_2D: near-square pr x pc (pr <= pc, pr the largest divisor of
 *    P not above sqrt(P)) and LAPACK at P = 1: less panel traffic between
 *    nodes (each rank receives ~1/sqrt(P) of every panel instead of all of
 *    it), but the factor of a wide ill-conditioned Hessian differs in its
 *    last bits between grid shapes (docs/performance.md);
 *  - QZ_GRID_AUTO (default): 1D when every rank of the communicator is on
 *    one node (MPI_COMM_TYPE_SHARED; MPIQUANT_HESSIAN_NODE=k emulates
 *    nodes of k ranks), else 2D. */
typedef enum { QZ_GRID_AUTO = 0, QZ_GRID_1D, QZ_GRID_2D } qz_grid_policy;
void qz_grid_set_policy(qz_grid_policy p);
qz_grid_policy qz_grid_get_policy(void);
/* "auto" | "1d" | "2d" -> policy; QZ_ERR_USAGE naming the option else */
int qz_grid_parse_policy(const char *opt, const char *s, qz_grid_policy *p);
/* the current policy as --proc-grid spells it */
const char *qz_grid_policy_name(void);
/* 1 when the current policy gives one process row, given whether all ranks
 * are on one node.  Not collective. */
int qz_grid_policy_is_1d(int one_node);
/* The grid of P ranks: 1 x P when one_d, else near-square.  Not
 * collective (plan models qz_grid_create's shape with it). */
void qz_grid_dims(int P, int one_d, int *pr, int *pc);

/* pr x pc grid over all ranks of `comm` by the policy above, block size
 * `nb` (<= 0: QZ_GRID_DEFAULT_NB).  Collective on comm; nb must match. */
int qz_grid_create(MPI_Comm comm, int nb, qz_grid **out);
/* 1 when the policy chose one process row (QZ_GRID_1D, or AUTO on one
 * node): the factorization is then ScaLAPACK's at every P, LAPACK is not
 * used.  (A 2D-policy grid of a prime P is 1 x P too, but returns 0: it
 * factors with LAPACK when P is 1.) */
int qz_grid_is_1d(const qz_grid *g);
/* Release the BLACS context and the communicator. Collective on the grid's
 * communicator. Accepts NULL, NULLs the pointer. */
void qz_grid_destroy(qz_grid **g);

/* Accessors. Not collective. */
MPI_Comm qz_grid_comm(const qz_grid *g); /* the grid's own dup */
int qz_grid_context(const qz_grid *g);   /* BLACS context */
int qz_grid_nb(const qz_grid *g);
int qz_grid_rank(const qz_grid *g);
int qz_grid_size(const qz_grid *g);
void qz_grid_shape(const qz_grid *g, int *nprow, int *npcol, int *myrow,
                   int *mycol);

/* Block-cyclic bookkeeping for a global index range of length n split in
 * blocks of nb over np processes (source process 0), 0-based.
 * Not collective. */
int64_t qz_bc_numroc(int64_t n, int nb, int iproc, int nprocs); /* local count */
static inline int qz_bc_owner(int64_t g, int nb, int nprocs) {
  return (int)((g / nb) % nprocs);
}
static inline int64_t qz_bc_local(int64_t g, int nb, int nprocs) {
  return (g / ((int64_t)nb * nprocs)) * nb + g % nb;
}
static inline int64_t qz_bc_global(int64_t l, int nb, int iproc, int nprocs) {
  return ((l / nb) * nprocs + iproc) * (int64_t)nb + l % nb;
}

#ifdef __cplusplus
}
#endif
#endif
