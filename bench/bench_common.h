/* What the benchmarks share: positional integer arguments (`bench_x
 * [a=DEF] ...`; -h/--help prints the usage, a value that is not an integer
 * in [lo, hi] is an error naming the argument; parse them before MPI_Init,
 * every rank sees the same argv), the fatal-error exit, and the synthetic
 * calibration rows the GPTQ and QuantEase benchmarks build H from. */
#ifndef MPIQUANT_BENCH_COMMON_H
#define MPIQUANT_BENCH_COMMON_H

#include <errno.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"

/* 1 when -h or --help is among the arguments (the usage is printed). */
static inline int bench_help(int argc, char **argv, const char *usage) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      printf("%s\n", usage);
      return 1;
    }
  return 0;
}

/* argv[i] as an integer in [lo, hi], or `def` when absent; *bad = 1 (and a
 * message naming `name`) when malformed or out of range. */
static inline long long bench_arg(int argc, char **argv, int i, long long def,
                                  long long lo, long long hi, const char *name, int *bad) {
  if (i >= argc) return def;
  char *end = NULL;
  errno = 0;
  long long v = strtoll(argv[i], &end, 10);
  if (errno || end == argv[i] || *end || v < lo || v > hi) {
    fprintf(stderr, "%s: argument %d (%s) must be an integer in [%lld, %lld], got '%s'\n",
            argv[0], i, name, lo, hi, argv[i]);
    *bad = 1;
    return def;
  }
  return v;
}

/* a[0..n) uniform in [-scale, scale) from an xorshift64 stream of `seed`. */
static inline void bench_fill(float *a, int64_t n, float scale, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    a[i] = scale * ((float)(s >> 40) * (1.0f / 8388608.0f) - 1.0f);
  }
}

/* Uniform in [-1, 1] in steps of 1e-3 (LCG; deterministic per seed). */
static inline float bench_frand(unsigned *s) {
  *s = *s * 1664525u + 1013904223u;
  return (float)((int)(*s >> 9) % 2001 - 1000) / 1000.0f;
}

/* x [rows, in]: correlated calibration rows, channel scale 1 + (j % 17)/4,
 * every `outlier_every`-th channel 20x; the seed state continues in *s. */
static inline void bench_synth_rows(float *x, int64_t rows, int64_t in, int outlier_every,
                                    unsigned *s) {
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < in; j++)
      x[i * in + j] = bench_frand(s) * (1.0f + (float)(j % 17) * 0.25f) *
                      (j % outlier_every == 0 ? 20.0f : 1.0f);
}

/* Print what failed with the error core's message and abort the job. */
static inline void bench_die(const char *prog, const char *what) {
  fprintf(stderr, "%s: %s failed\n", prog, what);
  qz_error_print(stderr, 0);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

#endif
