/* Per-phase timing (PETSc -log_view style). */
#ifndef MPIQUANT_TIMING_H
#define MPIQUANT_TIMING_H

#include <mpi.h>
#include <stdint.h>
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
  QZ_PHASE_GATHER, /* the dequantized rows of each linear to every rank */
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

/* Bytes moved by this rank, counted where they move (docs/performance.md):
 * MPI payload sent and received (comm.h's qz_count_* at every call site,
 * as the algorithm moves it) and file payload read (safetensors, HDF5) and
 * written (checkpoint datasets, before compression).  Each count goes to
 * the innermost running phase (the last started of the running ones), or
 * to "other" (index QZ_PHASE_COUNT) outside every phase.  Thread-safe. */
typedef enum {
  QZ_BYTES_MPI_SENT = 0,
  QZ_BYTES_MPI_RECV,
  QZ_BYTES_FILE_READ,
  QZ_BYTES_FILE_WRITE,
  QZ_BYTES_KINDS
} qz_bytes_kind;
#define QZ_PHASE_OTHER QZ_PHASE_COUNT
void qz_bytes_add(int kind, int64_t bytes);
/* Count the bytes of a stretch of code to `phase` without timing it (the
 * factor panels GPTQ streams from inside its sweep: their time stays where
 * the method puts it, their bytes are the factor's).  Pairs; not collective. */
void qz_bytes_enter(int phase);
void qz_bytes_leave(int phase);
/* This rank's count of `kind` in `phase` (0..QZ_PHASE_COUNT). Not collective. */
int64_t qz_bytes_get(int phase, int kind);

/* Print the table: per phase count, min / max / mean seconds over ranks and
 * the share of the wall time (max over ranks), and peak RSS min/max; then
 * per phase the MPI bytes (sent + received) and file bytes (read +
 * written) of a rank, min / max / mean over ranks.
 * Collective on comm; rank 0 prints to `out`. */
int qz_timing_report(MPI_Comm comm, FILE *out, double wall_seconds);

#ifdef __cplusplus
}
#endif
#endif
