/* bench_blas_kernel [N]: single-thread sgemm N^3 (default 2048) rate of the
 * OpenBLAS kernel this process ends up on after mpiquant's start-up choice
 * (mpi_driver/blas_auto.c). bench/run.sh runs it under a forced generic
 * kernel with the choice off and on and prints the ratio: the speed-up the
 * automatic choice buys on this CPU, measured in the same run. */
#include <stdio.h>
#include <stdlib.h>

#include "blas_auto.h"
#include "mpiquant/blas.h"

int main(int argc, char **argv) {
  qz_blas_auto_select(argv); /* may restart this program */
  int n = argc > 1 ? atoi(argv[1]) : 2048;
  if (n < 64 || n > 16384) {
    fprintf(stderr, "usage: bench_blas_kernel [N in 64..16384]\n");
    return 2;
  }
  if (*qz_blas_auto_note()) fprintf(stderr, "%s\n", qz_blas_auto_note());
  qz_blas_set_threads(1);
  double g = qz_blas_sgemm_gflops(n, 3);
  printf("kernel %s sgemm %d: %.1f GFLOP/s (1 thread, best of 3)\n", qz_blas_corename(), n, g);
  printf("gflops %.3f\n", g);
  return 0;
}
