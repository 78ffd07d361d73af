/* Hessian accumulation throughput vs plain ssyrk/sgemm measured in the same
 * run, on the same ranks and threads.
 *
 *   mpirun -np 2 bench_hessian [d=4096] [rows_per_rank=8192] [reps=3] [copy=0]
 *
 * Accumulation = qz_hessian_accumulate (copy=1: add_rows + flush) = panel
 * ssyrk/sgemm into f64 + reduce-scatter into the block-cyclic matrix, counted as
 * rows * d^2 flops (the lower triangle, SYRK convention n^2 k).  Baselines:
 * cblas_ssyrk (d, k = rows) and cblas_sgemm (d x d x rows / 2 equivalent)
 * on the same data, all ranks at once.  Ratios are printed last. */
#include "bench_common.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"

static double now(void) { return MPI_Wtime(); }

int main(int argc, char **argv) {
  /* arguments first: --help and bad values exit before MPI starts */
  int bad = 0;
  if (bench_help(argc, argv, "mpirun -np 2 bench_hessian [d=4096] [rows_per_rank=8192] [reps=3] [copy=0]")) return 0;
  const int d = (int)bench_arg(argc, argv, 1, 4096, 1, 1 << 20, "d", &bad);
  const int n = (int)bench_arg(argc, argv, 2, 8192, 1, 1 << 24, "rows_per_rank", &bad);
  const int reps = (int)bench_arg(argc, argv, 3, 3, 1, 1000, "reps", &bad);
  const int copy = (int)bench_arg(argc, argv, 4, 0, 0, 1, "copy", &bad); /* 1: add_rows + flush */
  if (bad) return 2;
  MPI_Init(&argc, &argv);
  int rank, P;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  float *x = malloc(sizeof(float) * (size_t)n * d);
  float *c = malloc(sizeof(float) * (size_t)d * d);
  unsigned s = 1234u + (unsigned)rank;
  for (size_t i = 0; i < (size_t)n * d; i++) {
    s = s * 1664525u + 1013904223u;
    x[i] = (float)((int)(s >> 9) % 2001 - 1000) / 1000.0f;
  }
  const double flops = (double)n * d * d; /* per rank */
  double t_syrk = 1e30, t_gemm = 1e30, t_acc = 1e30, t_red = 1e30;
  qz_grid *grid = NULL;
  qz_hessian *H = NULL;
  if (qz_grid_create(MPI_COMM_WORLD, 128, &grid) ||
      qz_hessian_create(grid, d, &H)) {
    fprintf(stderr, "bench_hessian: setup failed\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  /* interleaved repetitions: a load change on a shared machine hits the
   * baselines and the measured path alike */
  for (int r = 0; r < reps; r++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = now();
    /* x row-major [n, d] = col-major [d, n]: C = X^T X = A A^T, A = [d, n] */
    cblas_ssyrk(CblasColMajor, CblasLower, CblasNoTrans, d, n, 1.0f, x, d,
                0.0f, c, d);
    double t = now() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (t < t_syrk) t_syrk = t;
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = now();
    /* same flop count as a gemm: d x (d/2) x n */
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasTrans, d, d / 2, n, 1.0f, x,
                d, x, d, 0.0f, c, d);
    t = now() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (t < t_gemm) t_gemm = t;
    qz_hessian_reset(H);
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = now();
    if (copy) qz_hessian_add_rows(H, x, n);
    qz_hessian_count_sequences(H, 1);
    if (copy ? qz_hessian_flush(H) : qz_hessian_accumulate(H, x, n))
      MPI_Abort(MPI_COMM_WORLD, 1);
    t = now() - t0;
    double t1 = now();
    if (qz_hessian_reduce(H)) MPI_Abort(MPI_COMM_WORLD, 1);
    double tr = now() - t1;
    double v[2] = {t, tr};
    MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (v[0] < t_acc) t_acc = v[0];
    if (v[1] < t_red) t_red = v[1];
  }
  if (rank == 0) {
    double g_syrk = flops / t_syrk / 1e9, g_gemm = flops / t_gemm / 1e9,
           g_acc = flops / t_acc / 1e9, peak = g_syrk > g_gemm ? g_syrk : g_gemm;
    printf("bench_hessian: d=%d rows/rank=%d np=%d nb=128 %s (GFLOP/s per "
           "rank, best of %d, max over ranks)\n", d, n, P,
           copy ? "add_rows+flush" : "accumulate", reps);
    printf("  ssyrk baseline           %8.3f s  %7.1f GFLOP/s\n", t_syrk, g_syrk);
    printf("  sgemm baseline           %8.3f s  %7.1f GFLOP/s\n", t_gemm, g_gemm);
    printf("  accumulate+reduce-scatter%8.3f s  %7.1f GFLOP/s\n", t_acc, g_acc);
    printf("  finalize (scale, diag)   %8.3f s\n", t_red);
    printf("  handle bytes/rank %.1f MB (8 d^2/P = %.1f MB)\n",
           qz_hessian_bytes(H) / 1e6, 8.0 * d * d / P / 1e6);
    printf("ratio accumulate/ssyrk %.3f\n", g_acc / g_syrk);
    printf("ratio accumulate/peak(ssyrk,sgemm) %.3f\n", g_acc / peak);
  }
  qz_hessian_destroy(&H);
  qz_grid_destroy(&grid);
  free(c);
  free(x);
  MPI_Finalize();
  return 0;
}
