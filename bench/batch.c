/* Should the forward batch windows into one sgemm per linear? The forward
 * calls one sgemm per window ([seqlen, in] x W'), so a window's result does
 * not depend on how many windows a rank owns. This measures the
 * alternative in the same run on the same core: one sgemm over all
 * windows, and whether it gives the same bits (with OpenBLAS's Haswell
 * kernels it does not: edge tiles and the row blocking depend on m).
 *   bench_batch [SEQLEN=512 [WINDOWS=64 [OUT=172 [IN=64]]]]
 * (the default is stories260K's gate/up projection over 64 windows).
 * Best of 5, interleaved. Prints "identical 0|1" and
 * "ratio" = per-window time / batched time last. Not collective (one rank). */
#include <cblas.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"

int main(int argc, char **argv) {
  if (bench_help(argc, argv, "bench_batch [SEQLEN=512 [WINDOWS=64 [OUT=172 [IN=64]]]]"))
    return 0;
  int bad = 0;
  const long long L = bench_arg(argc, argv, 1, 512, 1, 1 << 20, "seqlen", &bad);
  const long long nw = bench_arg(argc, argv, 2, 64, 1, 1 << 16, "windows", &bad);
  const long long out = bench_arg(argc, argv, 3, 172, 1, 1 << 17, "out", &bad);
  const long long in = bench_arg(argc, argv, 4, 64, 1, 1 << 17, "in", &bad);
  if (bad) return 2;
  MPI_Init(&argc, &argv);
  const long long T = L * nw;
  float *x = malloc(sizeof(float) * (size_t)(T * in)), *W = malloc(sizeof(float) * (size_t)(out * in));
  float *y1 = malloc(sizeof(float) * (size_t)(T * out)), *y2 = malloc(sizeof(float) * (size_t)(T * out));
  if (!x || !W || !y1 || !y2) {
    fprintf(stderr, "bench_batch: out of memory for %lld x %lld rows\n", T, in > out ? in : out);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  unsigned s = 7;
  for (long long i = 0; i < T * in; i++) x[i] = bench_frand(&s);
  for (long long i = 0; i < out * in; i++) W[i] = bench_frand(&s);
  double best_w = 1e30, best_b = 1e30;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = MPI_Wtime();
    for (long long w = 0; w < nw; w++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)L, (int)out, (int)in, 1.0f,
                  x + w * L * in, (int)in, W, (int)in, 0.0f, y1 + w * L * out, (int)out);
    double t1 = MPI_Wtime();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)out, (int)in, 1.0f, x,
                (int)in, W, (int)in, 0.0f, y2, (int)out);
    double t2 = MPI_Wtime();
    if (t1 - t0 < best_w) best_w = t1 - t0;
    if (t2 - t1 < best_b) best_b = t2 - t1;
  }
  const double gf = 2.0 * (double)T * (double)out * (double)in / 1e9;
  printf("bench_batch: [%lld x %lld] x [%lld x %lld]' as %lld windows of %lld rows\n", T, in,
         out, in, nw, L);
  printf("per-window sgemm %.4f s (%.1f GFLOP/s), one batched sgemm %.4f s (%.1f GFLOP/s)\n",
         best_w, gf / best_w, best_b, gf / best_b);
  printf("identical %d\n", memcmp(y1, y2, sizeof(float) * (size_t)(T * out)) == 0);
  printf("ratio %.2f (per-window / batched)\n", best_w / best_b);
  free(x);
  free(W);
  free(y1);
  free(y2);
  MPI_Finalize();
  return 0;
}
