/* OpenBLAS runtime control: threads, the kernel in use, a self-check. */
#include "mpiquant/blas.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "mpiquant/error.h"

void qz_blas_set_threads(int n) { openblas_set_num_threads(n > 0 ? n : 1); }
int qz_blas_get_threads(void) { return openblas_get_num_threads(); }
const char *qz_blas_config(void) { return openblas_get_config(); }
const char *qz_blas_corename(void) {
  const char *c = openblas_get_corename();
  return c ? c : "unknown";
}

int qz_blas_kernel_tier(const char *c) {
  static const char *const avx512[] = {"skylakex", "cooperlake", "sapphirerapids", NULL};
  static const char *const avx2[] = {"haswell", "zen", "skylake", NULL};
  if (!c) return 0;
  for (int i = 0; avx512[i]; i++)
    if (strcasecmp(c, avx512[i]) == 0) return 2;
  for (int i = 0; avx2[i]; i++)
    if (strcasecmp(c, avx2[i]) == 0) return 1;
  return 0;
}

int qz_blas_cpu_tier(void) {
#if defined(__x86_64__) || defined(__i386__)
  /* libgcc's cpu model checks XGETBV too: a feature the OS does not save
   * (ZMM/opmask state) is reported as unsupported. */
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return 2;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
  return 0;
}

/* Deterministic values in [-1, 1) from a small LCG. */
static void fill(float *a, size_t n, unsigned *s) {
  for (size_t i = 0; i < n; i++) {
    *s = *s * 1664525u + 1013904223u;
    a[i] = (float)((double)(*s >> 8) / (double)(1u << 23) - 1.0);
  }
}

/* One product through cblas_sgemm vs the same product in double. */
static double check_one(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m,
                        int n, int k, float *A, float *B, float *C, double *R) {
  unsigned s = (unsigned)(m * 131 + n * 17 + k);
  fill(A, (size_t)m * k, &s);
  fill(B, (size_t)k * n, &s);
  fill(C, (size_t)m * n, &s);
  const float alpha = 0.75f, beta = -0.5f;
  /* element (i,j) of op(X) for a matrix stored with leading dimension ld */
  int rm = order == CblasRowMajor;
  int lda = rm ? (ta == CblasNoTrans ? k : m) : (ta == CblasNoTrans ? m : k);
  int ldb = rm ? (tb == CblasNoTrans ? n : k) : (tb == CblasNoTrans ? k : n);
  int ldc = rm ? n : m;
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double acc = 0;
      for (int p = 0; p < k; p++) {
        int ai = ta == CblasNoTrans ? i : p, aj = ta == CblasNoTrans ? p : i;
        int bi = tb == CblasNoTrans ? p : j, bj = tb == CblasNoTrans ? j : p;
        double a = rm ? A[(size_t)ai * lda + aj] : A[(size_t)aj * lda + ai];
        double b = rm ? B[(size_t)bi * ldb + bj] : B[(size_t)bj * ldb + bi];
        acc += a * b;
      }
      size_t ci = rm ? (size_t)i * ldc + j : (size_t)j * ldc + i;
      R[ci] = alpha * acc + beta * (double)C[ci];
    }
  cblas_sgemm(order, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  double scale = 0, err = 0;
  for (size_t i = 0; i < (size_t)m * n; i++) {
    if (fabs(R[i]) > scale) scale = fabs(R[i]);
    double e = fabs((double)C[i] - R[i]);
    if (!(e <= err)) err = e; /* NaN propagates */
  }
  return err / (scale > 0 ? scale : 1.0);
}

int qz_blas_selfcheck(double *relerr) {
  enum { M = 67, N = 53, K = 259 };
  float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N),
        *C = malloc(sizeof(float) * M * N);
  double *R = malloc(sizeof(double) * M * N);
  double worst = 0;
  int ok = A && B && C && R;
  if (ok) {
    const CBLAS_ORDER ord[2] = {CblasColMajor, CblasRowMajor};
    const CBLAS_TRANSPOSE tr[2] = {CblasNoTrans, CblasTrans};
    for (int o = 0; o < 2; o++)
      for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
          double e = check_one(ord[o], tr[a], tr[b], M, N, K, A, B, C, R);
          if (!(e <= worst)) worst = e;
        }
  }
  free(A);
  free(B);
  free(C);
  free(R);
  if (relerr) *relerr = worst;
  QZ_CHECK(ok, QZ_ERR_MEM, "BLAS self-check: out of memory");
  QZ_CHECK(worst < 1e-5, QZ_ERR_NUMERIC,
           "BLAS self-check: OpenBLAS kernel %s gives sgemm results off by %.3g "
           "(relative) from a plain loop", qz_blas_corename(), worst);
  return QZ_OK;
}

double qz_blas_sgemm_gflops(int n, int reps) {
  size_t nn = (size_t)n * n;
  float *A = malloc(nn * sizeof(float)), *B = malloc(nn * sizeof(float)),
        *C = malloc(nn * sizeof(float));
  double best = 0;
  if (A && B && C) {
    unsigned s = 7;
    fill(A, nn, &s);
    fill(B, nn, &s);
    memset(C, 0, nn * sizeof(float));
    for (int r = 0; r < reps; r++) {
      struct timespec t0, t1;
      clock_gettime(CLOCK_MONOTONIC, &t0);
      cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f,
                  C, n);
      clock_gettime(CLOCK_MONOTONIC, &t1);
      double dt = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
      double g = dt > 0 ? 2.0 * n * (double)n * n / dt * 1e-9 : 0;
      if (g > best) best = g;
    }
  }
  free(A);
  free(B);
  free(C);
  return best;
}
