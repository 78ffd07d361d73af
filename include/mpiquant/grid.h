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

/* Near-square pr x pc grid over all ranks of `comm` (pr <= pc, pr * pc =
 * size, pr the largest divisor of size not above sqrt(size)), block size
 * `nb` (<= 0: QZ_GRID_DEFAULT_NB).  Collective on comm; nb must match. */
int qz_grid_create(MPI_Comm comm, int nb, qz_grid **out);
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
