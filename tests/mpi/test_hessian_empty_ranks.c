/* GPTQ with more ranks than calibration windows: ranks that own no window
 * contribute nothing to H = 2/N sum x x^T (they used to pack a stale panel
 * buffer into the reduce-scatter and poison H).  Every communicator size
 * p = 1..np (the first p ranks) against every window count 1..8, windows
 * split as the quantize driver splits them (qz_shard_windows), compared with
 * a serial f64 X^T X.  Run at np 8 (oversubscribed): 64 cases, one launch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/shard.h"
#include "qz_test.h"

/* f32 products summed in f32 chunks vs f64: a few ulp of f32 relative to the
 * largest entry (each entry sums at most 8 * T = 64 products of O(1) terms) */
#define TOL_H_REL 2e-5

enum { D = 37, T = 8, NB = 8, MAXWIN = 8 };

static float xval(int64_t win, int64_t t, int64_t j) {
  uint64_t s = (uint64_t)win * 7777u + (uint64_t)t * 1000003u + (uint64_t)j * 7919u + 1u;
  return (float)qzt_rand_normal(&s) * (1.0f + (float)(j % 4));
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  const int np = qzt_size(), rank = qzt_rank();
  double *ref = malloc(sizeof(double) * D * D), *got = malloc(sizeof(double) * D * D);
  float *x = malloc(sizeof(float) * MAXWIN * T * D);
  for (int p = 1; p <= np; p++) {
    MPI_Comm sub;
    MPI_Comm_split(MPI_COMM_WORLD, rank < p ? 0 : MPI_UNDEFINED, rank, &sub);
    if (sub == MPI_COMM_NULL) continue;
    qz_grid *grid = NULL;
    qz_hessian *H = NULL;
    QZT_OK(qz_grid_create(sub, NB, &grid));
    QZT_OK(qz_hessian_create(grid, D, &H));
    for (int nwin = 1; nwin <= MAXWIN; nwin++) {
      /* a full Hessian first, so the panel buffers hold old products */
      qz_hessian_reset(H);
      int64_t first, count;
      qz_shard_windows(nwin, p, rank, &first, &count);
      for (int64_t w = 0; w < count; w++)
        for (int64_t t = 0; t < T; t++)
          for (int64_t j = 0; j < D; j++) x[(w * T + t) * D + j] = xval(first + w, t, j);
      QZT_OK(qz_hessian_add_rows(H, x, count * T));
      qz_hessian_count_sequences(H, count);
      QZT_OK(qz_hessian_reduce(H));
      QZT_OK(qz_hessian_get_rows(H, 0, D, got));
      double amax = 0, err = 0;
      for (int64_t i = 0; i < D; i++)
        for (int64_t j = 0; j < D; j++) {
          double s = 0;
          for (int64_t w = 0; w < nwin; w++)
            for (int64_t t = 0; t < T; t++) s += (double)xval(w, t, i) * xval(w, t, j);
          ref[i * D + j] = 2.0 * s / nwin;
          amax = fmax(amax, fabs(ref[i * D + j]));
        }
      for (int64_t k = 0; k < D * D; k++) {
        double e = fabs(got[k] - ref[k]);
        err = isfinite(got[k]) ? fmax(err, e) : INFINITY;
      }
      QZT_CHECK(err <= TOL_H_REL * amax,
                "p %d nwin %d: max |H - 2/N X^T X| = %.3g > %.3g * max|H| %.3g", p,
                nwin, err, TOL_H_REL, amax);
    }
    qz_hessian_destroy(&H);
    qz_grid_destroy(&grid);
    MPI_Comm_free(&sub);
  }
  free(ref);
  free(got);
  free(x);
  return qzt_finish("hessian_empty_ranks");
}
