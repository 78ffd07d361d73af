/* Logging (rank 0 only unless --log-all-ranks), progress lines with ETA. */
#ifndef MPIQUANT_LOG_H
#define MPIQUANT_LOG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  QZ_LOG_ERROR = 0,
  QZ_LOG_WARN = 1,
  QZ_LOG_INFO = 2,
  QZ_LOG_DEBUG = 3,
  QZ_LOG_TRACE = 4
} qz_log_level;

/* Set once by main after MPI_Init. Not collective. Default before init:
 * rank 0, INFO, rank 0 only. */
void qz_log_init(int rank, int nranks, int level, int all_ranks);
int qz_log_level_get(void);
int qz_log_rank(void);
int qz_log_nranks(void);

/* Print when `level` <= the configured level and this rank logs.
 * Errors and warnings are printed by every rank (prefixed with the rank),
 * info and debug only by rank 0 unless all_ranks. Lines go to stderr with
 * "[mpiquant t=12.3s]" (and " r3" when several ranks log). Not collective. */
void qz_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define qz_info(...) qz_log(QZ_LOG_INFO, __VA_ARGS__)
#define qz_warn(...) qz_log(QZ_LOG_WARN, __VA_ARGS__)
#define qz_debug(...) qz_log(QZ_LOG_DEBUG, __VA_ARGS__)

/* Seconds since qz_log_init (monotonic clock). */
double qz_wtime(void);

/* Progress with ETA for long loops.  Prints on rank 0 at INFO level at most
 * every `interval` seconds and at the end.  Not collective: call it with the
 * same counts on every rank, only rank 0 prints. */
typedef struct {
  const char *what;   /* "eval windows", "blocks" */
  int64_t total;
  double t0, last_print, interval;
} qz_progress;

void qz_progress_begin(qz_progress *p, const char *what, int64_t total);
void qz_progress_update(qz_progress *p, int64_t done);

#ifdef __cplusplus
}
#endif
#endif
