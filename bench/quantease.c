/* QuantEase sweep speed on one out x in layer (default 4096 x 4096) with a
 * synthetic SPD Hessian (H from random correlated rows), on all ranks of
 * COMM_WORLD: seconds per coordinate-descent sweep and the achieved GFLOP/s
 * (2 out in^2 flops per sweep: the R_J = D Hd[:, J] sgemms; the in-block
 * steps are extra), vs plain sgemm (in x in x in) measured in the same run
 * with the same BLAS threads.  Per sweep = (time with K sweeps - time with
 * 0 sweeps) / K, both from the RTN start, so the start, the two exact
 * objective passes and the Hessian are not counted.
 *
 *   mpirun -np 1 bench_quantease [out=4096] [in=4096] [sweeps=3]
 * Ratio (sweep GFLOP/s / sgemm GFLOP/s, per rank) last. */
#include "bench_common.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/log.h"
#include "mpiquant/method.h"
#include "mpiquant/quant.h"
#include "mpiquant/quantease.h"

int main(int argc, char **argv) {
  /* arguments first: --help and bad values exit before MPI starts */
  int bad = 0;
  if (bench_help(argc, argv, "mpirun -np 1 bench_quantease [out=4096] [in=4096] [sweeps=3]")) return 0;
  int64_t out = bench_arg(argc, argv, 1, 4096, 1, 1LL << 20, "out", &bad);
  int64_t in = bench_arg(argc, argv, 2, 4096, 1, 1LL << 20, "in", &bad);
  int K = (int)bench_arg(argc, argv, 3, 3, 1, 1000, "sweeps", &bad);
  if (bad) return 2;
  MPI_Init(&argc, &argv);
  int rank, P;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  qz_log_init(rank, P, QZ_LOG_WARN, 0);
  int64_t ntok = in; /* tokens over all ranks */
  qz_grid *grid = NULL;
  qz_hessian *H = NULL;
  if (qz_grid_create(MPI_COMM_WORLD, 128, &grid) ||
      qz_hessian_create(grid, in, &H))
    bench_die("bench_quantease", "setup");
  int64_t t0, tn, r0, nr;
  qz_split_even(ntok, P, rank, &t0, &tn);
  qz_split_even(out, P, rank, &r0, &nr);
  float *x = malloc(sizeof(float) * (size_t)(tn * in + 1));
  unsigned s = 77u + (unsigned)t0;
  bench_synth_rows(x, tn, in, 97, &s);
  qz_hessian_count_sequences(H, rank == 0 ? 8 : 0);
  if (qz_hessian_accumulate(H, x, tn) || qz_hessian_reduce(H)) bench_die("bench_quantease", "hessian");
  free(x);
  float *w = malloc(sizeof(float) * (size_t)(nr * in + 1));
  s = 1234u + (unsigned)r0;
  for (int64_t i = 0; i < nr * in; i++) w[i] = 0.02f * bench_frand(&s);
  qz_method_opts o = qz_method_opts_default();
  o.spec.groupsize = 128;
  o.qe_init = QZ_QE_INIT_RTN;
  int64_t ng = qz_quant_ngroups(&o.spec, in);
  qz_layer_result res = {0};
  res.codes = malloc((size_t)(nr * in + 1));
  res.scale = malloc(sizeof(float) * (size_t)(nr * ng + 1));
  res.zero = malloc(sizeof(float) * (size_t)(nr * ng + 1));
  qz_layer L = {.name = "bench", .out_features = out, .in_features = in,
                .row0 = r0, .nrows = nr, .w = w, .H = H};
  double t[2];
  for (int k = 0; k < 2; k++) {
    o.iters = k ? K : 0;
    MPI_Barrier(MPI_COMM_WORLD);
    double a = MPI_Wtime();
    if (qz_quantease_quantize(&o, &L, &res)) bench_die("bench_quantease", "quantease");
    MPI_Barrier(MPI_COMM_WORLD);
    t[k] = MPI_Wtime() - a;
  }
  double per = (t[1] - t[0]) / K;
  double gf = 2.0 * (double)out * (double)in * (double)in / per / 1e9;

  /* baseline: in x in x in sgemm on each rank, best of 2 */
  int64_t n = in;
  float *a = malloc(sizeof(float) * (size_t)(n * n)),
        *b = malloc(sizeof(float) * (size_t)(n * n)),
        *c = malloc(sizeof(float) * (size_t)(n * n));
  s = 99u;
  for (int64_t i = 0; i < n * n; i++) {
    a[i] = bench_frand(&s);
    b[i] = bench_frand(&s);
  }
  double best = 1e30;
  for (int rep = 0; rep < 2; rep++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double a0 = MPI_Wtime();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n,
                (int)n, 1.0f, a, (int)n, b, (int)n, 0.0f, c, (int)n);
    MPI_Barrier(MPI_COMM_WORLD);
    double dt = MPI_Wtime() - a0;
    if (dt < best) best = dt;
  }
  double gs = 2.0 * (double)n * n * n / best / 1e9; /* per rank */
  if (rank == 0) {
    printf("bench_quantease: %lld x %lld, w4 g128, np %d, RTN start, "
           "panels of %d\n", (long long)out, (long long)in, P, QZ_QE_PANEL);
    printf("  0 sweeps (start + 2 exact passes): %.3f s; %d sweeps: %.3f s\n",
           t[0], K, t[1]);
    printf("  per sweep: %.3f s, %.1f GFLOP/s total (%.1f per rank)\n", per,
           gf, gf / P);
    printf("  sgemm %lld^3 per rank: %.1f GFLOP/s\n", (long long)n, gs);
    printf("ratio sweep/sgemm (per rank): %.3f\n", gf / P / gs);
  }
  free(a);
  free(b);
  free(c);
  free(w);
  free(res.codes);
  free(res.scale);
  free(res.zero);
  qz_hessian_destroy(&H);
  qz_grid_destroy(&grid);
  MPI_Finalize();
  return 0;
}
