/* Memory bound of the distributed Hessian: d = 8192 (QZ_MEMTEST_D), the
 * handle's allocation per rank stays <= 1.1 * 8 d^2 / P through
 * accumulation, reduce and factorization; the transient working set of a
 * flush / prepare is O(d * nb) (stated bounds below); RSS growth agrees. */
#include <math.h>
#include <stdlib.h>

#include "mpiquant/chol.h"
#include "mpiquant/comm.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/mem.h"
#include "qz_test.h"

#define MEM_FACTOR 1.1 /* the bound on the handle */

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  int rank = qzt_rank(), P = qzt_size();
  const char *e = getenv("QZ_MEMTEST_D");
  const int64_t d = e ? atoll(e) : 8192;
  const int nb = 128, rows = 32;
  const double budget = MEM_FACTOR * 8.0 * (double)d * d / P;
  int64_t rss0 = qz_rss_bytes();
  qz_grid *grid = NULL;
  qz_hessian *H = NULL;
  QZT_OK(qz_grid_create(MPI_COMM_WORLD, nb, &grid));
  int pc;
  qz_grid_shape(grid, NULL, &pc, NULL, NULL);
  /* flush: max(64 MiB, 12 d nb) + receive part; prepare: 16 d nb pc */
  double flush_b = 12.0 * d * nb > (double)QZ_HESSIAN_PANEL_BYTES
                       ? 12.0 * d * nb : (double)QZ_HESSIAN_PANEL_BYTES;
  flush_b += 8.0 * d * nb * (1 + QZ_HESSIAN_PANEL_BYTES / (12.0 * d * nb));
  double prep_b = 2.0 * 8 * d * nb * pc;
  const double transient_bound = flush_b > prep_b ? flush_b : prep_b;
  if (!QZT_OK(qz_hessian_create(grid, d, &H))) return qzt_finish("x");
  QZT_CHECK(qz_hessian_bytes(H) <= budget, "after create: %lld > %.0f",
            (long long)qz_hessian_bytes(H), budget);
  float *x = malloc(sizeof(float) * rows * d);
  uint64_t s = 7 + (uint64_t)rank;
  for (int64_t i = 0; i < rows * d; i++) x[i] = (float)qzt_rand_normal(&s);
  QZT_OK(qz_hessian_add_rows(H, x, rows));
  qz_hessian_count_sequences(H, 1);
  QZT_CHECK(qz_hessian_bytes(H) <= budget, "with buffered rows: %lld > %.0f",
            (long long)qz_hessian_bytes(H), budget);
  QZT_OK(qz_hessian_reduce(H));
  QZT_CHECK(qz_hessian_bytes(H) <= budget, "after reduce: %lld > %.0f",
            (long long)qz_hessian_bytes(H), budget);
  double t0 = MPI_Wtime();
  qz_prepare_opts po = {.percdamp = 0.01, .act_order = 1, .name = "memtest"};
  QZT_OK(qz_hessian_prepare(H, &po));
  double tf = MPI_Wtime() - t0;
  float *panel = malloc(sizeof(float) * nb * d);
  if (QZT_OK(qz_hessian_factor_rows(H, d - nb, nb, panel)))
    QZT_CHECK(isfinite(panel[(nb - 1) * d + d - 1]) &&
                  panel[(nb - 1) * d + d - 1] > 0,
              "last factor row finite and positive on the diagonal");
  QZT_CHECK(qz_hessian_bytes(H) <= budget, "after factor: %lld > %.0f",
            (long long)qz_hessian_bytes(H), budget);
  int64_t tr = qz_hessian_peak_transient_bytes(H);
  QZT_CHECK(tr <= transient_bound, "transient %lld > O(d nb) bound %.0f",
            (long long)tr, transient_bound);
  /* the process as a whole: nothing d x d behind the handle's back (the
   * slack covers the row buffer, panels, ScaLAPACK/MPI workspaces) */
  int64_t grow = qz_rss_bytes() - rss0;
  double slack = transient_bound + 64.0 * (1 << 20);
  QZT_CHECK(rss0 < 0 || grow <= budget + slack,
            "RSS grew by %lld bytes > %.0f", (long long)grow, budget + slack);
  double v[3] = {(double)qz_hessian_bytes(H), (double)tr, (double)grow};
  MPI_Allreduce(MPI_IN_PLACE, v, 3, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0)
    printf("d=%lld np=%d: handle %.1f MB (bound %.1f MB = 1.1*8d^2/P), "
           "transient %.1f MB, RSS growth %.1f MB, factor %.2f s\n",
           (long long)d, P, v[0] / 1e6, budget / 1e6, v[1] / 1e6, v[2] / 1e6,
           tf);
  free(panel);
  free(x);
  qz_hessian_destroy(&H);
  qz_grid_destroy(&grid);
  return qzt_finish("test_linalg_memory");
}
