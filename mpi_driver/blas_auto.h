/* Start-up choice of the OpenBLAS kernel (see blas_auto.c). */
#ifndef MPIQUANT_BLAS_AUTO_H
#define MPIQUANT_BLAS_AUTO_H

/* Called first in main, before MPI_Init and before argv is changed. When
 * OpenBLAS picked a kernel below what this CPU supports (its 0.3.21 falls
 * back to Prescott on CPUs newer than it knows) and neither
 * OPENBLAS_CORETYPE nor OPENBLAS_L2_SIZE is set, re-executes this program
 * with OPENBLAS_CORETYPE=SkylakeX or Haswell; the re-executed process
 * checks sgemm against a plain loop and goes back to OpenBLAS's own choice
 * if the check fails. MPIQUANT_BLAS_AUTO=0 turns it off; =1 also replaces
 * an OPENBLAS_CORETYPE that names a slower kernel than the CPU supports.
 * Every rank decides from its own cpuid and environment, which are the same
 * for all ranks of a node. Not collective (runs before MPI exists); may not
 * return (execv). */
void qz_blas_auto_select(char **argv);

/* One line saying what the selection did (empty when it did nothing), for
 * the log, --version and --log-view. Not collective. */
const char *qz_blas_auto_note(void);
/* 1 when the note is a warning (self-check failed, exec failed). */
int qz_blas_auto_is_warning(void);

#endif
