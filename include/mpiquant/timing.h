/* Per-phase timing (PETSc -log_view style). */
#ifndef MPIQUANT_TIMING_H
#define MPIQUANT_TIMING_H

#include <mpi.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Append-only. */
typedef enum {
  QZ_PHASE_LOAD = 0,
  QZ_PHASE_FORWARD,
  QZ_PHASE_HESSIAN,
  QZ_PHASE_REDUCE,
  QZ_PHASE_FACTOR,
  QZ_PHASE_QUANTIZE,
  QZ_PHASE_WRITE,
  QZ_PHASE_EVAL,
  QZ_PHASE_COUNT
} qz_phase;

const char *qz_phase_name(int phase);

/* Accumulate wall time in a phase on this rank. Phases may nest; each is
 * accumulated on its own. Not collective. */
void qz_timer_start(int phase);
void qz_timer_stop(int phase);
double qz_timer_seconds(int phase);
long qz_timer_count(int phase);
void qz_timer_reset(void);

/* Print the table: per phase count, min / max / mean seconds over ranks and
 * the share of the wall time (max over ranks), and peak RSS min/max.
 * Collective on comm; rank 0 prints to `out`. */
int qz_timing_report(MPI_Comm comm, FILE *out, double wall_seconds);

#ifdef __cplusplus
}
#endif
#endif
