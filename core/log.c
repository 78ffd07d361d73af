/* Logging and progress. */
#include "mpiquant/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static int g_rank = 0, g_nranks = 1, g_level = QZ_LOG_INFO, g_all = 0;
static double g_t0 = -1.0;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double qz_wtime(void) {
  if (g_t0 < 0) g_t0 = now();
  return now() - g_t0;
}

void qz_log_init(int rank, int nranks, int level, int all_ranks) {
  g_rank = rank;
  g_nranks = nranks;
  g_level = level;
  g_all = all_ranks;
  if (g_t0 < 0) g_t0 = now();
}

int qz_log_level_get(void) { return g_level; }
int qz_log_rank(void) { return g_rank; }
int qz_log_nranks(void) { return g_nranks; }

void qz_log(int level, const char *fmt, ...) {
  if (level > g_level) return;
  int everyone = g_all || level <= QZ_LOG_WARN;
  if (!everyone && g_rank != 0) return;
  static const char *const tag[] = {"error: ", "warning: ", "", "debug: ",
                                    "trace: "};
  char line[4096];
  int n;
  if (g_nranks > 1 && everyone)
    n = snprintf(line, sizeof line, "[mpiquant %7.2fs r%d] %s", qz_wtime(),
                 g_rank, tag[level]);
  else
    n = snprintf(line, sizeof line, "[mpiquant %7.2fs] %s", qz_wtime(),
                 tag[level]);
  va_list ap;
  va_start(ap, fmt);
  if (n > 0 && (size_t)n < sizeof line)
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  /* one fputs per line so ranks' lines do not interleave mid-line */
  fprintf(stderr, "%s\n", line);
  fflush(stderr);
}

void qz_progress_begin(qz_progress *p, const char *what, int64_t total) {
  p->what = what;
  p->total = total;
  p->t0 = qz_wtime();
  p->last_print = p->t0;
  p->interval = 5.0;
}

void qz_progress_update(qz_progress *p, int64_t done) {
  double t = qz_wtime();
  int final = done >= p->total;
  if (!final && t - p->last_print < p->interval) return;
  p->last_print = t;
  double el = t - p->t0;
  double frac = p->total > 0 ? (double)done / (double)p->total : 1.0;
  if (final) {
    qz_info("%s: %lld/%lld done in %.1f s", p->what, (long long)done,
            (long long)p->total, el);
  } else {
    double eta = frac > 0 ? el * (1.0 - frac) / frac : 0.0;
    qz_info("%s: %lld/%lld (%.0f%%), elapsed %.1f s, ETA %.1f s", p->what,
            (long long)done, (long long)p->total, 100.0 * frac, el, eta);
  }
}
