/* Threads of one rank for the loops that are not BLAS (OpenMP).
 *
 * The block forward's attention, norms, RoPE, SwiGLU and residual loops,
 * activation fake-quant, dequantization, packing and dtype conversion run
 * `qz_threads()` OpenMP threads per rank. Every parallel loop hands each
 * output element to exactly one thread, which computes it with the same code
 * and in the same order as a serial run: results are bit-identical at any
 * thread count (no reduction's order depends on the threads). BLAS calls are
 * never made inside a parallel region: they use OpenBLAS's own threads. */
#ifndef MPIQUANT_THREADS_H
#define MPIQUANT_THREADS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Threads for this rank's OpenMP loops (>= 1). Until qz_threads_set is
 * called: the first number of OMP_NUM_THREADS, 1 when it is unset or not a
 * positive number (so `mpirun -n <cores>` runs one thread per rank). Call
 * outside parallel regions. Not collective. */
int qz_threads(void);
/* Set the thread count (clamped to 1..QZ_THREADS_MAX). Not collective. */
void qz_threads_set(int n);
/* 1 when the thread count came from qz_threads_set or OMP_NUM_THREADS,
 * 0 when it is the default. Not collective. */
int qz_threads_explicit(void);

#define QZ_THREADS_MAX 1024

/* Minimum work (elements touched) of a loop worth splitting over threads:
 * below it the fork/join costs more than the loop. Results do not depend
 * on it (a loop is split or not; each element is computed the same way).
 * MPIQUANT_OMP_MIN_WORK=n overrides it (tests set 1 to split every loop of
 * the tiny test models). */
#define QZ_OMP_MIN_WORK 32768

/* Threads for a loop of `work` elements: 1 when below the minimum work,
 * else qz_threads(). Call outside parallel regions. Not collective. */
int qz_threads_for(int64_t work);

#ifdef __cplusplus
}
#endif
#endif
