/* Thread count of this rank for the OpenMP loops (see threads.h). */
#include "mpiquant/threads.h"

#include <stdlib.h>

static int g_threads;  /* 0: not decided yet */
static int g_explicit; /* from qz_threads_set or OMP_NUM_THREADS */
static int64_t g_min_work = -1; /* -1: not read yet */

static int clamp(long n) {
  return n < 1 ? 1 : n > QZ_THREADS_MAX ? QZ_THREADS_MAX : (int)n;
}

int qz_threads(void) {
  if (!g_threads) {
    /* OMP_NUM_THREADS is a list ("4,2": nested levels); the first counts */
    const char *e = getenv("OMP_NUM_THREADS");
    char *end = NULL;
    long n = e ? strtol(e, &end, 10) : 0;
    g_explicit = e && end != e && n > 0;
    g_threads = g_explicit ? clamp(n) : 1;
  }
  return g_threads;
}

void qz_threads_set(int n) {
  g_threads = clamp(n);
  g_explicit = 1;
}

int qz_threads_explicit(void) {
  (void)qz_threads();
  return g_explicit;
}

int qz_threads_for(int64_t work) {
  if (g_min_work < 0) {
    const char *e = getenv("MPIQUANT_OMP_MIN_WORK");
    char *end = NULL;
    long long n = e ? strtoll(e, &end, 10) : -1;
    g_min_work = e && end != e && n >= 0 ? (int64_t)n : QZ_OMP_MIN_WORK;
  }
  return work < g_min_work ? 1 : qz_threads();
}
