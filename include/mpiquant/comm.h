/* MPI helpers shared by every layer: error wrapping and error agreement. */
#ifndef MPIQUANT_COMM_H
#define MPIQUANT_COMM_H

#include <mpi.h>
#include <stdint.h>

#include "mpiquant/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Turn an MPI return code into a recorded QZ_ERR_MPI. Not collective. */
int qz_mpi_error(int rc, const char *call, const char *file, int line,
                 const char *func);

/* Wrap an MPI call. The communicators mpiquant uses have MPI_ERRORS_RETURN
 * set (qz_comm_dup), so failures come back as codes instead of aborting. */
#define QZ_CALL_MPI(expr)                                                \
  do {                                                                   \
    int qz__rc = (expr);                                                 \
    if (qz__rc != MPI_SUCCESS)                                           \
      return qz_mpi_error(qz__rc, #expr, __FILE__, __LINE__, __func__);  \
  } while (0)

/* The same after an allocation: needs `int st` in scope and a `done:` label
 * that frees what the function owns (error.h's QZ_CALL_DONE family). */
#define QZ_CALL_MPI_DONE(expr)                                           \
  do {                                                                   \
    int qz__rc = (expr);                                                 \
    if (qz__rc != MPI_SUCCESS) {                                         \
      st = qz_mpi_error(qz__rc, #expr, __FILE__, __LINE__, __func__);    \
      goto done;                                                         \
    }                                                                    \
  } while (0)

/* Duplicate `comm` and set MPI_ERRORS_RETURN on the copy.
 * Collective on comm. */
int qz_comm_dup(MPI_Comm comm, MPI_Comm *out);

/* Agree on failure: every rank passes its local status and all ranks return
 * non-zero if any rank failed.  A rank that failed returns its own status
 * (its record unchanged); the others return QZ_ERR_REMOTE with a message that
 * names the lowest failing rank, its status and its message.  Call it before any
 * collective that follows work which may fail on only some ranks, so that no
 * rank waits forever for one that has given up.
 * Collective on comm. */
int qz_error_agree(MPI_Comm comm, int status);

/* Reduce helpers for int64 sizes (sum / max). Collective on comm. */
int qz_allreduce_i64(MPI_Comm comm, int64_t *v, int n, MPI_Op op);

/* Sum of per-row values of all ranks in global row order, as a double:
 * rows are spread over ranks in contiguous, rank-ordered ranges, so the
 * order of the additions (and the result, to the bit) does not depend on the
 * number of ranks. `n_local` may be 0. Collective on comm. */
int qz_sum_rows_ordered(MPI_Comm comm, int64_t n_local, const float *v, double *sum);

/* Split `total` items over `nparts` as evenly as possible; part p gets
 * [*begin, *begin + *count).  The first total % nparts parts get one more.
 * Not collective. */
void qz_split_even(int64_t total, int nparts, int part, int64_t *begin,
                   int64_t *count);

/* The one row allgather: a [nrows, rowlen] f32 matrix whose rows are split
 * with qz_split_even(nrows, size, rank); each rank gives its rows (`mine`,
 * or NULL when they already sit in place at full + begin * rowlen) and every
 * rank receives the whole matrix in `full`. Collective on comm. */
int qz_allgather_rows_f32(MPI_Comm comm, int64_t nrows, int64_t rowlen,
                          const float *mine /* [count, rowlen] or NULL */,
                          float *full /* [nrows, rowlen] */);

/* The same for rows of `rowbytes` bytes each (bf16 weights, packed codes);
 * rowbytes <= INT32_MAX. Collective on comm. */
int qz_allgather_rows_bytes(MPI_Comm comm, int64_t nrows, int64_t rowbytes,
                            const void *mine /* [count, rowbytes] or NULL */,
                            void *full /* [nrows, rowbytes] */);
/* The same started nonblocking, each rank's rows already in place in
 * `full`: complete *req (MPI_Wait/Test) before using full; `counts`
 * [2 size] ints are the call's counts and displacements and must stay
 * valid until then. Bytes are counted when it starts. Collective on comm. */
int qz_iallgather_rows_bytes(MPI_Comm comm, int64_t nrows, int64_t rowbytes, void *full,
                             int *counts, MPI_Request *req);

/* The ranks of comm on this rank's node: MPIQUANT_HESSIAN_NODE=K emulates
 * nodes of K consecutive ranks (tests and benchmarks on one machine),
 * unset or auto is the MPI shared-memory split; =off gives MPI_COMM_NULL
 * when allow_off (the Hessian's flat reduction), else counts as auto. Any
 * other value is QZ_ERR_USAGE. Free *node with MPI_Comm_free.  Collective
 * on comm. */
int qz_comm_node_split(MPI_Comm comm, int allow_off, MPI_Comm *node);

/* How block weights travel (shard/model.c's load, mpi_driver/qblock.c's
 * gather after quantizing): *packed = 1 when comm spans several nodes --
 * BF16 weights as stored and quantized rows as packed codes + scales, every
 * rank widening/dequantizing (fewer bytes on the network) -- and 0 within
 * one node, where f32 rows through shared memory cost less than each rank
 * converting the whole block (bench/wire.sh).  Both give the same f32 bits.
 * MPIQUANT_WIRE=packed|f32 forces a way (tests, benchmarks);
 * MPIQUANT_HESSIAN_NODE=K emulates nodes of K ranks.  Collective on comm
 * the first time for a comm (cached on it), not collective afterwards. */
int qz_comm_packed_wire(MPI_Comm comm, int *packed);

/* Byte counting (timing.h's per-phase MPI bytes).  Every MPI call that
 * moves data tells what this rank sent and received, as the algorithm moves
 * it when each piece goes straight to the rank that needs it:
 *   bcast of S from root: root sends (P-1) S, every other rank receives S;
 *   allgather(v): a rank sends its `mine` bytes to P-1 ranks and receives
 *     the `total - mine` bytes of the others;
 *   reduce of S to root: every other rank sends S, the root receives (P-1) S;
 *   reduce-scatter of S (this rank's share `mine`): a rank sends the others'
 *     shares of its contribution (S - mine) and receives (P-1) mine;
 *   allreduce of S: a reduce-scatter then an allgather of S / P shares:
 *     2 S (P-1) / P each way;
 *   scatter(v) from root: the root sends total - its own; the others receive
 *     their share;
 *   all-to-all and point-to-point: the bytes to and from other ranks.
 * A library's internal messages (ScaLAPACK/BLACS) are not counted.
 * None of these is collective (MPI_Comm_size/rank only); P = 1 moves 0. */
void qz_count_bcast(MPI_Comm comm, int root, int64_t bytes);
void qz_count_allgather(MPI_Comm comm, int64_t mine, int64_t total);
/* the same for an (all)gatherv with per-rank counts of `elem`-byte items */
void qz_count_allgatherv(MPI_Comm comm, const int *counts, int64_t elem);
/* gather(v) to root of counts[] items (only the root's counts are needed) */
void qz_count_gather(MPI_Comm comm, int root, int64_t mine, int64_t total);
void qz_count_reduce(MPI_Comm comm, int root, int64_t bytes);
void qz_count_reduce_scatter(MPI_Comm comm, int64_t total, int64_t mine);
void qz_count_allreduce(MPI_Comm comm, int64_t bytes);
void qz_count_scatter(MPI_Comm comm, int root, int64_t total, int64_t mine);
void qz_count_p2p(int64_t sent, int64_t received);

#ifdef __cplusplus
}
#endif
#endif
