/* Byte counting (timing.h / comm.h's qz_count_*):
 *  - attribution: a count goes to the innermost running phase, to `other`
 *    outside every phase, and to the phase of qz_bytes_enter without a timer;
 *  - the row allgather counts (P-1) x its own rows sent and the others'
 *    rows received, exactly;
 *  - conservation: summed over ranks, bytes sent == bytes received in every
 *    phase, for the real Hessian reduction (flat and two-level), the
 *    factorization's redistribution and the factor-row stream -- a count
 *    that forgets one side of a transfer, or counts a rank's own share as
 *    moved, breaks it. */
#include <stdlib.h>
#include <string.h>

#include "mpiquant/chol.h"
#include "mpiquant/comm.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/timing.h"
#include "qz_test.h"

static void conserved(MPI_Comm comm, const char *what) {
  for (int ph = 0; ph <= QZ_PHASE_COUNT; ph++) {
    int64_t v[2] = {qz_bytes_get(ph, QZ_BYTES_MPI_SENT), qz_bytes_get(ph, QZ_BYTES_MPI_RECV)};
    MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_INT64_T, MPI_SUM, comm);
    QZT_CHECK(v[0] == v[1], "%s: phase %s: %lld bytes sent, %lld received in all", what,
              ph < QZ_PHASE_COUNT ? qz_phase_name(ph) : "other", (long long)v[0],
              (long long)v[1]);
  }
}

static void hessian_run(MPI_Comm comm, const char *what) {
  int rank, P;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  const int64_t d = 150, n = 40 + 7 * rank; /* uneven rows */
  qz_grid *g = NULL;
  qz_hessian *H = NULL;
  float *x = malloc(sizeof(float) * (size_t)(n * d)), *panel = malloc(sizeof(float) * 32 * d);
  for (int64_t i = 0; i < n * d; i++) x[i] = (float)((i * 7919 + rank * 104729) % 1000) / 500.0f - 1.0f;
  qz_timer_reset();
  QZT_OK(qz_grid_create(comm, 32, &g));
  QZT_OK(qz_hessian_create(g, d, &H));
  QZT_OK(qz_hessian_add_rows(H, x, n));
  qz_hessian_count_sequences(H, 1);
  QZT_OK(qz_hessian_reduce(H));
  QZT_OK(qz_hessian_prepare(H, &(qz_prepare_opts){.percdamp = 0.01, .act_order = 1}));
  for (int64_t r0 = 0; r0 < d; r0 += 32)
    QZT_OK(qz_hessian_factor_rows(H, r0, d - r0 < 32 ? d - r0 : 32, panel));
  if (P > 1) {
    QZT_CHECK(qz_bytes_get(QZ_PHASE_REDUCE, QZ_BYTES_MPI_RECV) > 0 ||
                  qz_bytes_get(QZ_PHASE_REDUCE, QZ_BYTES_MPI_SENT) > 0,
              "%s: reduction counted", what);
    QZT_CHECK(qz_bytes_get(QZ_PHASE_FACTOR, QZ_BYTES_MPI_RECV) > 0, "%s: factor counted", what);
  }
  conserved(comm, what);
  qz_hessian_destroy(&H);
  qz_grid_destroy(&g);
  free(x);
  free(panel);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  int rank = qzt_rank(), P = qzt_size();
  MPI_Comm comm;
  QZT_OK(qz_comm_dup(MPI_COMM_WORLD, &comm));

  /* attribution and the row allgather */
  qz_timer_reset();
  const int64_t nrows = 7, rowlen = 5;
  float full[35];
  for (int i = 0; i < 35; i++) full[i] = (float)i;
  int64_t r0, cnt;
  qz_split_even(nrows, P, rank, &r0, &cnt);
  qz_timer_start(QZ_PHASE_FORWARD);
  qz_timer_start(QZ_PHASE_LOAD);
  QZT_OK(qz_allgather_rows_f32(comm, nrows, rowlen, NULL, full));
  qz_timer_stop(QZ_PHASE_LOAD);
  int64_t v = 1;
  QZT_OK(qz_allreduce_i64(comm, &v, 1, MPI_SUM)); /* back in forward */
  qz_timer_stop(QZ_PHASE_FORWARD);
  qz_bytes_enter(QZ_PHASE_FACTOR);
  QZT_OK(qz_error_agree(comm, QZ_OK));
  qz_bytes_leave(QZ_PHASE_FACTOR);
  QZT_OK(qz_error_agree(comm, QZ_OK)); /* other */
  const int64_t mine = 4 * cnt * rowlen, total = 4 * nrows * rowlen;
  const int64_t ar = P > 1 ? 2 * 8 * (P - 1) / P : 0, ag = P > 1 ? 2 * 8 * (P - 1) / P : 0;
  QZT_CHECK(qz_bytes_get(QZ_PHASE_LOAD, QZ_BYTES_MPI_SENT) == (P > 1 ? (P - 1) * mine : 0) &&
                qz_bytes_get(QZ_PHASE_LOAD, QZ_BYTES_MPI_RECV) == (P > 1 ? total - mine : 0),
            "allgather: sent %lld received %lld, want %lld %lld",
            (long long)qz_bytes_get(QZ_PHASE_LOAD, QZ_BYTES_MPI_SENT),
            (long long)qz_bytes_get(QZ_PHASE_LOAD, QZ_BYTES_MPI_RECV),
            (long long)((P - 1) * mine), (long long)(total - mine));
  QZT_CHECK(qz_bytes_get(QZ_PHASE_FORWARD, QZ_BYTES_MPI_SENT) == ar,
            "allreduce after the inner phase stopped goes to the outer one: %lld, want %lld",
            (long long)qz_bytes_get(QZ_PHASE_FORWARD, QZ_BYTES_MPI_SENT), (long long)ar);
  QZT_CHECK(qz_bytes_get(QZ_PHASE_FACTOR, QZ_BYTES_MPI_RECV) == ag &&
                qz_bytes_get(QZ_PHASE_OTHER, QZ_BYTES_MPI_RECV) == ag,
            "enter/leave and other: %lld %lld, want %lld",
            (long long)qz_bytes_get(QZ_PHASE_FACTOR, QZ_BYTES_MPI_RECV),
            (long long)qz_bytes_get(QZ_PHASE_OTHER, QZ_BYTES_MPI_RECV), (long long)ag);
  for (int i = 0; i < 35; i++) QZT_CHECK(full[i] == (float)i, "allgather data %d", i);
  conserved(comm, "helpers");

  /* the real reduction and factorization: flat, then two-level */
  setenv("MPIQUANT_HESSIAN_NODE", "off", 1);
  hessian_run(comm, "flat");
  if (P >= 4) {
    setenv("MPIQUANT_HESSIAN_NODE", "2", 1);
    hessian_run(comm, "two-level");
  }
  MPI_Comm_free(&comm);
  return qzt_finish("bytes");
}
