/* Prototypes of the BLACS / ScaLAPACK / LAPACK routines mpiquant calls.
 * Debian's libscalapack-openmpi ships no C header (see TOOLCHAIN.md §5).
 * Fortran CHARACTER arguments carry a hidden size_t length at the end. */
#ifndef MPIQUANT_SCALAPACK_H
#define MPIQUANT_SCALAPACK_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* BLACS (C interface) */
void Cblacs_pinfo(int *mypnum, int *nprocs);
void Cblacs_get(int context, int request, int *value);
void Cblacs_gridinit(int *context, const char *order, int nprow, int npcol);
void Cblacs_gridinfo(int context, int *nprow, int *npcol, int *myrow,
                     int *mycol);
void Cblacs_gridexit(int context);
void Cblacs_exit(int error_code);
void Cblacs_barrier(int context, const char *scope);
int Csys2blacs_handle(void *mpi_comm); /* MPI_Comm (pointer-sized in Open MPI) */
void *Cblacs2sys_handle(int blacs_handle);

/* ScaLAPACK tools */
int numroc_(const int *n, const int *nb, const int *iproc, const int *isrcproc,
            const int *nprocs);
int indxl2g_(const int *indxloc, const int *nb, const int *iproc,
             const int *isrcproc, const int *nprocs);
void descinit_(int *desc, const int *m, const int *n, const int *mb,
               const int *nb, const int *irsrc, const int *icsrc,
               const int *ictxt, const int *lld, int *info);

/* ScaLAPACK computational */
void pdpotrf_(const char *uplo, const int *n, double *a, const int *ia,
              const int *ja, const int *desca, int *info, size_t uplo_len);
void pdpotri_(const char *uplo, const int *n, double *a, const int *ia,
              const int *ja, const int *desca, int *info, size_t uplo_len);
void pdgemr2d_(const int *m, const int *n, const double *a, const int *ia,
               const int *ja, const int *desca, double *b, const int *ib,
               const int *jb, const int *descb, const int *ictxt);
void pdgemm_(const char *transa, const char *transb, const int *m,
             const int *n, const int *k, const double *alpha, const double *a,
             const int *ia, const int *ja, const int *desca, const double *b,
             const int *ib, const int *jb, const int *descb,
             const double *beta, double *c, const int *ic, const int *jc,
             const int *descc, size_t ta_len, size_t tb_len);

/* LAPACK (serial), used in tests and small-size paths */
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda,
             int *info, size_t uplo_len);
void dpotri_(const char *uplo, const int *n, double *a, const int *lda,
             int *info, size_t uplo_len);

#ifdef __cplusplus
}
#endif
#endif
