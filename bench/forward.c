/* Block forward throughput on a synthetic Llama-3-8B-shaped block (hidden
 * 4096, intermediate 14336, 32/8 heads of 128, 2 windows x 2048 tokens):
 * useful GFLOP/s of qz_fwd_block (projections + causal attention) divided by
 * plain sgemm GFLOP/s measured in the same run on the same threads (the
 * gate projection of one window: 2048 x 14336 x 4096).  Prints the ratio
 * last.  Options: none; the BLAS threads come from OPENBLAS_NUM_THREADS.
 * Run time about 30 s on 2 cores. */
#include <cblas.h>
#undef I
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "mpiquant/blas.h"
#include "mpiquant/error.h"
#include "mpiquant/forward.h"
#include "mpiquant/mem.h"
#include "bench_common.h"

static int run(void) {
  qz_model_config c = {0};
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.head_dim = 128;
  c.vocab_size = 128256;
  c.max_position_embeddings = 131072;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000;
  c.rope_scaling.type = QZ_ROPE_LLAMA3;
  c.rope_scaling.factor = 8;
  c.rope_scaling.low_freq_factor = 1;
  c.rope_scaling.high_freq_factor = 4;
  c.rope_scaling.original_max_position_embeddings = 8192;
  const int64_t nwin = 2, L = 2048, H = c.hidden_size, I = c.intermediate_size;

  qz_block_weights w = {0};
  qz_fwd *f = NULL;
  QZ_CALL(qz_block_weights_alloc(&c, &w));
  QZ_CALL(qz_fwd_create(&c, nwin, L, &f));
  bench_fill(w.attn_norm, H, 0.1f, 1);
  for (int64_t i = 0; i < H; i++) w.attn_norm[i] += 1.0f;
  memcpy(w.ffn_norm, w.attn_norm, (size_t)H * sizeof(float));
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t in = l == QZ_LIN_DOWN ? I : H;
    int64_t out = l == QZ_LIN_Q || l == QZ_LIN_O ? H
                  : l <= QZ_LIN_V ? 1024 : l == QZ_LIN_DOWN ? H : I;
    bench_fill(w.w[l], out * in, 1.7f / (float)in, 10 + (uint64_t)l);
  }
  float *x0 = NULL, *C = NULL;
  QZ_CALL(qz_alloc_big((size_t)(nwin * L * H) * sizeof(float), "input", &x0));
  QZ_CALL(qz_alloc_big((size_t)(L * I) * sizeof(float), "sgemm C", &C));
  bench_fill(x0, nwin * L * H, 1.0f, 99);
  memset(C, 0, (size_t)(L * I) * sizeof(float));

  printf("bench forward: hidden %lld, intermediate %lld, heads %lld/%lld x "
         "%lld, %lld windows x %lld tokens, BLAS threads %d\n",
         (long long)H, (long long)I, (long long)c.num_attention_heads,
         (long long)c.num_key_value_heads, (long long)c.head_dim,
         (long long)nwin, (long long)L, qz_blas_get_threads());

  /* Baseline: plain sgemm of the dominant shape. Baseline and forward runs
   * alternate and each keeps its best time, so a burst of load from other
   * processes hits both alike. The first forward also pays the first touch
   * of the workspace pages. */
  double flops = qz_fwd_block_flops(&c, nwin, L);
  double best_gemm = 1e30, best = 1e30, st_best[QZ_STAGE_COUNT] = {0};
  for (int r = 0; r < 3; r++) {
    for (int g = 0; g < 2; g++) {
      double t = MPI_Wtime();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)L, (int)I,
                  (int)H, 1.0f, x0, (int)H, w.w[QZ_LIN_GATE], (int)H, 0.0f, C,
                  (int)I);
      t = MPI_Wtime() - t;
      if (t < best_gemm) best_gemm = t;
    }
    if (r == 2) break; /* end on a baseline measurement */
    memcpy(qz_fwd_hidden(f), x0, (size_t)(nwin * L * H) * sizeof(float));
    double ts[QZ_STAGE_COUNT];
    double t0 = MPI_Wtime();
    qz_fwd_block_begin(f);
    for (int s = 0; s < QZ_STAGE_COUNT; s++) {
      double t = MPI_Wtime();
      QZ_CALL(qz_fwd_run(f, &w, (qz_fwd_stage)s));
      ts[s] = MPI_Wtime() - t;
    }
    QZ_CALL(qz_fwd_block_commit(f));
    double t = MPI_Wtime() - t0;
    printf("forward run %d: %.3f s\n", r + 1, t);
    if (t < best) {
      best = t;
      memcpy(st_best, ts, sizeof ts);
    }
  }
  double gemm_gf = 2.0 * (double)L * (double)I * (double)H / best_gemm * 1e-9;
  printf("sgemm %lldx%lldx%lld: best %.3f s, %.1f GFLOP/s\n", (long long)L,
         (long long)I, (long long)H, best_gemm, gemm_gf);
  for (int s = 0; s < QZ_STAGE_COUNT; s++)
    printf("  stage %-10s %.3f s (computes it from the previous stage)\n",
           qz_fwd_stage_name((qz_fwd_stage)s), st_best[s]);
  double fwd_gf = flops / best * 1e-9;
  printf("forward: %.1f GFLOP useful, %.3f s, %.1f GFLOP/s\n", flops * 1e-9,
         best, fwd_gf);
  printf("ratio forward/sgemm GFLOP/s: %.3f\n", fwd_gf / gemm_gf);
  qz_free_big(&x0, 0);
  qz_free_big(&C, 0);
  qz_fwd_destroy(&f);
  qz_block_weights_free(&w);
  return QZ_OK;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int st = run();
  if (st != QZ_OK) qz_error_print(stderr, 0);
  MPI_Finalize();
  return st;
}
