/* Positional integer arguments of the benchmarks (`bench_x [a=DEF] ...`):
 * -h/--help prints the usage; a value that is not an integer in [lo, hi]
 * is an error naming the argument. Every rank sees the same argv, so every
 * rank takes the same way out. */
#ifndef MPIQUANT_BENCH_ARGS_H
#define MPIQUANT_BENCH_ARGS_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#endif
