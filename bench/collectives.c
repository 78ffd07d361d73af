/* Reduce-scatter of a d x d f64 Hessian (what the distributed Hessian does:
 * every rank ends with its 1/P share) vs MPI_Allreduce of the full matrix
 * (the naive design: every rank ends with all of it), same ranks, same data.
 *
 *   mpirun -np 2 bench_collectives [d=4096] [reps=3]
 *
 * Prints the best time of each and GB/s (matrix bytes / s), ratio last:
 * allreduce time / reduce-scatter time (> 1: the block-cyclic reduce-scatter
 * is cheaper, and it also needs 1/P of the receive memory). */
#include "bench_common.h"
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  /* arguments first: --help and bad values exit before MPI starts */
  int bad = 0;
  if (bench_help(argc, argv, "mpirun -np 2 bench_collectives [d=4096] [reps=3]")) return 0;
  const long d = (long)bench_arg(argc, argv, 1, 4096, 1, 1L << 20, "d", &bad);
  const int reps = (int)bench_arg(argc, argv, 2, 3, 1, 1000, "reps", &bad);
  if (bad) return 2;
  MPI_Init(&argc, &argv);
  int rank, P;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  const long n = d * d / P * P;
  double *a = malloc(sizeof(double) * (size_t)n), *b = malloc(sizeof(double) * (size_t)n);
  int *cnt = malloc(sizeof(int) * (size_t)P);
  if (!a || !b || !cnt) {
    fprintf(stderr, "bench_collectives: out of memory for d = %ld\n", d);
    MPI_Abort(MPI_COMM_WORLD, 7);
  }
  for (long i = 0; i < n; i++) a[i] = b[i] = (double)(i % 13) + rank;
  for (int p = 0; p < P; p++) cnt[p] = (int)(n / P);
  double best_rs = 1e30, best_ar = 1e30;
  for (int r = 0; r < reps + 1; r++) { /* round 0 touches the pages */
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    MPI_Reduce_scatter(a, b, cnt, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double t1 = MPI_Wtime() - t0;
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    MPI_Allreduce(MPI_IN_PLACE, a, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double t2 = MPI_Wtime() - t0;
    double t[2] = {t1, t2};
    MPI_Allreduce(MPI_IN_PLACE, t, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (r > 0 && t[0] < best_rs) best_rs = t[0];
    if (r > 0 && t[1] < best_ar) best_ar = t[1];
  }
  if (rank == 0) {
    double gb = (double)n * 8.0 / 1e9;
    printf("bench_collectives: d = %ld (%.3f GB f64), np %d, best of %d\n", d, gb, P, reps);
    printf("reduce_scatter_s   %.4f  (%.2f GB/s)\n", best_rs, gb / best_rs);
    printf("allreduce_s        %.4f  (%.2f GB/s)\n", best_ar, gb / best_ar);
    printf("ratio_allreduce_over_reduce_scatter %.2f\n", best_ar / best_rs);
  }
  free(a);
  free(b);
  free(cnt);
  MPI_Finalize();
  return 0;
}
