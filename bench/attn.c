/* Causal attention of small heads (the fused kernel of shard/attn.c) vs the
 * three-step baseline measured in the same run on the same core: sgemm
 * scores (k = head_dim), the forward's vectorised softmax per causal row,
 * sgemm values -- what the forward did before the fused kernel (and still
 * does above QZ_FWDK_ATTN_SMALL_HD). Shape: stories260K's
 * attention (8 query / 4 kv heads of 8, windows of 512), or
 *   bench_attn [HEAD_DIM [SEQLEN [WINDOWS]]]
 * Prints the max |difference| of the outputs (a check, not a speed) and
 * "ratio" = baseline time / fused time last. Not collective (one rank). */
#include <cblas.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../shard/fwd_kernels.h"
#include "bench_common.h"

/* The baseline: per head, scores of the whole window by sgemm, softmax of
 * each causal row, values by sgemm. */
static void baseline(float *o, const float *q, const float *k, const float *v, int64_t L,
                     int64_t nq, int64_t nkv, int64_t hd, float *S) {
  const int64_t qd = nq * hd, kvd = nkv * hd, group = nq / nkv;
  const float scale = (float)(1.0 / sqrt((double)hd));
  for (int64_t h = 0; h < nq; h++) {
    const float *kg = k + h / group * hd, *vg = v + h / group * hd;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)L, (int)L, (int)hd, scale,
                q + h * hd, (int)qd, kg, (int)kvd, 0.0f, S, (int)L);
    for (int64_t i = 0; i < L; i++) qz_fwdk_softmax_row(S + i * L, i + 1, L);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)L, (int)hd, (int)L, 1.0f, S,
                (int)L, vg, (int)kvd, 0.0f, o + h * hd, (int)qd);
  }
}

int main(int argc, char **argv) {
  if (bench_help(argc, argv, "bench_attn [head_dim=8] [seqlen=512] [windows=16]")) return 0;
  int bad = 0;
  const int64_t hd = bench_arg(argc, argv, 1, 8, 1, QZ_FWDK_ATTN_SMALL_HD, "head_dim", &bad);
  const int64_t L = bench_arg(argc, argv, 2, 512, 1, 65536, "seqlen", &bad);
  const int64_t nw = bench_arg(argc, argv, 3, 16, 1, 4096, "windows", &bad), nq = 8, nkv = 4;
  if (bad) return 2;
  MPI_Init(&argc, &argv);
  const int64_t qd = nq * hd, kvd = nkv * hd, group = nq / nkv;
  const float scale = (float)(1.0 / sqrt((double)hd));
  float *q = malloc(sizeof(float) * (size_t)(nw * L * qd));
  float *k = malloc(sizeof(float) * (size_t)(nw * L * kvd));
  float *v = malloc(sizeof(float) * (size_t)(nw * L * kvd));
  float *o0 = malloc(sizeof(float) * (size_t)(nw * L * qd));
  float *o1 = malloc(sizeof(float) * (size_t)(nw * L * qd));
  float *S = malloc(sizeof(float) * (size_t)(L * L));
  float *ws = malloc(sizeof(float) * (size_t)qz_fwdk_attn_small_ws(hd, L));
  if (!q || !k || !v || !o0 || !o1 || !S || !ws) bench_die(argv[0], "allocating the buffers");
  bench_fill(q, nw * L * qd, 2.0f, 1);
  bench_fill(k, nw * L * kvd, 2.0f, 2);
  bench_fill(v, nw * L * kvd, 1.0f, 3);
  double tb = 1e30, tf = 1e30;
  for (int rep = 0; rep < 3; rep++) { /* best of 3 of each, interleaved */
    double t0 = MPI_Wtime();
    for (int64_t w = 0; w < nw; w++)
      baseline(o0 + w * L * qd, q + w * L * qd, k + w * L * kvd, v + w * L * kvd, L, nq,
               nkv, hd, S);
    double t1 = MPI_Wtime();
    memcpy(o1, q, sizeof(float) * (size_t)(nw * L * qd));
    double t2 = MPI_Wtime();
    for (int64_t w = 0; w < nw; w++)
      for (int64_t h = 0; h < nq; h++)
        qz_fwdk_attn_small(o1 + w * L * qd + h * hd, qd, L, NULL, NULL, 0,
                           k + w * L * kvd + h / group * hd, v + w * L * kvd + h / group * hd,
                           kvd, hd, scale, ws);
    double t3 = MPI_Wtime();
    tb = t1 - t0 < tb ? t1 - t0 : tb;
    tf = t3 - t2 < tf ? t3 - t2 : tf;
  }
  double dmax = 0;
  for (int64_t i = 0; i < nw * L * qd; i++) {
    double d = fabs((double)o0[i] - (double)o1[i]);
    dmax = d > dmax ? d : dmax;
  }
  double pairs = (double)nw * nq * (double)L * (double)(L + 1) / 2;
  printf("shape: %lld windows x %lld tokens, %lld/%lld heads of %lld\n", (long long)nw,
         (long long)L, (long long)nq, (long long)nkv, (long long)hd);
  printf("baseline (sgemm + softmax + sgemm) %.4f s, %.2f ns per (query, key) pair\n", tb,
         1e9 * tb / pairs);
  printf("fused (shard/attn.c)               %.4f s, %.2f ns per (query, key) pair\n", tf,
         1e9 * tf / pairs);
  printf("max |fused - baseline| %.3g\n", dmax);
  printf("ratio %.2f (baseline / fused)\n", tb / tf);
  free(q), free(k), free(v), free(o0), free(o1), free(S), free(ws);
  MPI_Finalize();
  return dmax < 1e-4 ? 0 : 1;
}
