/* ScaLAPACK pdpotrf + pdpotri (the distributed Cholesky + inverse of the
 * factor route) on all ranks vs serial LAPACK dpotrf + dpotri on one rank,
 * 1 BLAS thread per rank, same matrix.
 *
 *   mpirun -np 2 bench_potrf [n=3000] [nb=128]
 *
 * GFLOP/s count 2 n^3 / 3 (n^3/3 each).  Ratio last: ScaLAPACK GFLOP/s /
 * (P x LAPACK GFLOP/s), the parallel efficiency on the same cores. */
#include "bench_common.h"
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "mpiquant/grid.h"
#include "mpiquant/scalapack.h"

static double aij(int64_t i, int64_t j, int64_t n) {
  uint64_t a = (uint64_t)(i < j ? i : j), b = (uint64_t)(i < j ? j : i);
  uint64_t h = (a * 2654435761u) ^ (b * 40503u + 0x9e37u);
  h = (h ^ (h >> 15)) * 0x2c1b3c6dULL;
  return (i == j ? (double)n : 0.0) + (double)(h % 1024) / 4096.0;
}

int main(int argc, char **argv) {
  /* arguments first: --help and bad values exit before MPI starts */
  int bad = 0;
  if (bench_help(argc, argv, "mpirun -np 2 bench_potrf [n=3000] [nb=128]")) return 0;
  int n = (int)bench_arg(argc, argv, 1, 3000, 1, 1 << 20, "n", &bad);
  int nb = (int)bench_arg(argc, argv, 2, 128, 1, 4096, "nb", &bad);
  if (bad) return 2;
  MPI_Init(&argc, &argv);
  int rank, P;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  qz_grid *g = NULL;
  if (qz_grid_create(MPI_COMM_WORLD, nb, &g) != 0) MPI_Abort(MPI_COMM_WORLD, 10);
  int pr, pc, myr, myc;
  qz_grid_shape(g, &pr, &pc, &myr, &myc);
  int64_t ml = qz_bc_numroc(n, nb, myr, pr), nl = qz_bc_numroc(n, nb, myc, pc);
  int lld = (int)(ml > 1 ? ml : 1), desc[9], info = 0, z = 0, one = 1, ctx = qz_grid_context(g);
  descinit_(desc, &n, &n, &nb, &nb, &z, &z, &ctx, &lld, &info);
  double *a = malloc(sizeof(double) * (size_t)lld * (size_t)(nl > 0 ? nl : 1));
  double best_pd = 1e30, best_lp = 1e30;
  for (int r = 0; r < 3; r++) {
    for (int64_t lj = 0; lj < nl; lj++)
      for (int64_t li = 0; li < ml; li++)
        a[li + lj * lld] = aij(qz_bc_global(li, nb, myr, pr), qz_bc_global(lj, nb, myc, pc), n);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    pdpotrf_("L", &n, a, &one, &one, desc, &info, 1);
    if (info == 0) pdpotri_("L", &n, a, &one, &one, desc, &info, 1);
    double t = MPI_Wtime() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (info != 0) {
      fprintf(stderr, "bench_potrf: pdpotrf/pdpotri info %d\n", info);
      MPI_Abort(MPI_COMM_WORLD, 10);
    }
    if (t < best_pd) best_pd = t;
  }
  free(a);
  if (rank == 0) { /* serial LAPACK on one rank (the others wait) */
    double *s = malloc(sizeof(double) * (size_t)n * (size_t)n);
    for (int r = 0; r < 3; r++) {
      for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < n; i++) s[i + j * (int64_t)n] = aij(i, j, n);
      double t0 = MPI_Wtime();
      dpotrf_("L", &n, s, &n, &info, 1);
      if (info == 0) dpotri_("L", &n, s, &n, &info, 1);
      double t = MPI_Wtime() - t0;
      if (t < best_lp) best_lp = t;
    }
    free(s);
    double fl = 2.0 * n * (double)n * n / 3.0 / 1e9;
    printf("bench_potrf: n = %d, nb = %d, grid %d x %d, 1 thread per rank, best of 3\n", n, nb,
           pr, pc);
    printf("scalapack_s        %.4f  (%.1f GFLOP/s on %d ranks)\n", best_pd, fl / best_pd, P);
    printf("lapack_s           %.4f  (%.1f GFLOP/s on 1 rank)\n", best_lp, fl / best_lp);
    printf("speedup            %.2f\n", best_lp / best_pd);
    printf("ratio_efficiency   %.2f  (ScaLAPACK / (P x LAPACK))\n",
           (fl / best_pd) / (P * fl / best_lp));
  }
  MPI_Barrier(MPI_COMM_WORLD);
  qz_grid_destroy(&g);
  MPI_Finalize();
  return 0;
}
