/* BLAS runtime control (OpenBLAS). */
#ifndef MPIQUANT_BLAS_H
#define MPIQUANT_BLAS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Threads used by BLAS calls of this process. Not collective. */
void qz_blas_set_threads(int n);
int qz_blas_get_threads(void);
/* OpenBLAS build/config string ("OpenBLAS 0.3.21 DYNAMIC_ARCH ... Haswell"). */
const char *qz_blas_config(void);

#ifdef __cplusplus
}
#endif
#endif
