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
/* Name of the kernel set OpenBLAS selected at load time ("Haswell",
 * "SkylakeX", "Prescott", ...). Not collective. */
const char *qz_blas_corename(void);

/* Speed tier of an OpenBLAS kernel name: 2 = AVX-512 (SkylakeX, Cooperlake,
 * SapphireRapids), 1 = AVX2 + FMA (Haswell, Zen), 0 = anything older or
 * unknown (Prescott, Core2, Nehalem, Sandybridge, ...: "generic" here).
 * Not collective. */
int qz_blas_kernel_tier(const char *corename);
/* Best tier this CPU and OS support (cpuid + XGETBV): 2 when AVX-512
 * F/BW/DQ/VL are usable, 1 for AVX2 + FMA, else 0. Not collective. */
int qz_blas_cpu_tier(void);

/* sgemm of odd shapes (C = alpha A B^T + beta C, column- and row-major,
 * transposed operands) against a plain double-precision loop. Returns the
 * largest error relative to the result's magnitude in *relerr; QZ_OK when
 * it is below 1e-5 (float rounding of k <= 300 terms is ~1e-6), else
 * QZ_ERR_NUMERIC with a message. Allocates < 1 MB. Not collective. */
int qz_blas_selfcheck(double *relerr);
/* Single-thread sgemm rate (GFLOP/s) of an n x n x n product, best of
 * reps; for start-up logging and the kernel benchmark. Not collective. */
double qz_blas_sgemm_gflops(int n, int reps);

#ifdef __cplusplus
}
#endif
#endif
