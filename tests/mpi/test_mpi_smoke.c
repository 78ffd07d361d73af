/* MPI smoke test: collectives, error agreement, window partition. */
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/shard.h"
#include "qz_test.h"

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  int rank = qzt_rank(), size = qzt_size();
  MPI_Comm comm;
  QZT_OK(qz_comm_dup(MPI_COMM_WORLD, &comm));

  int64_t v[2] = {rank, 1};
  QZT_OK(qz_allreduce_i64(comm, v, 2, MPI_SUM));
  QZT_CHECK(v[0] == (int64_t)size * (size - 1) / 2 && v[1] == size,
            "allreduce sum: %lld %lld", (long long)v[0], (long long)v[1]);

  /* nobody failed */
  QZT_OK(qz_error_agree(comm, QZ_OK));
  /* the last rank fails: it keeps its own error, the others learn who */
  int victim = size - 1;
  int st = rank == victim
               ? qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                              "bad thing on rank %d", rank)
               : QZ_OK;
  st = qz_error_agree(comm, st);
  if (rank == victim) {
    QZT_CHECK(st == QZ_ERR_FORMAT && strstr(qz_error_message(), "bad thing"),
              "failing rank keeps its error: %s", qz_error_message());
  } else {
    char want[128];
    snprintf(want, sizeof want, "rank %d failed (QZ_ERR_FORMAT): bad thing on rank %d", victim, victim);
    QZT_CHECK(st == QZ_ERR_REMOTE && strstr(qz_error_message(), want),
              "others get QZ_ERR_REMOTE naming rank %d: %s", victim,
              qz_error_message());
  }
  qz_error_clear();

  /* window partition: every window owned exactly once, owner consistent */
  for (int64_t nwin = 0; nwin <= 9; nwin++) {
    int64_t first, count;
    qz_shard_windows(nwin, size, rank, &first, &count);
    int64_t tot = count;
    MPI_Allreduce(MPI_IN_PLACE, &tot, 1, MPI_INT64_T, MPI_SUM, comm);
    QZT_CHECK(tot == nwin, "windows covered: %lld of %lld", (long long)tot,
              (long long)nwin);
    for (int64_t w = first; w < first + count; w++)
      QZT_CHECK(qz_shard_owner(nwin, size, w) == rank, "owner of %lld",
                (long long)w);
  }
  MPI_Comm_free(&comm);
  return qzt_finish("test_mpi_smoke");
}
