/* Hybrid ranks x threads: one rank's block forward with 1 vs 2 OpenMP
 * threads (docs/performance.md "Hybrid ranks x threads"), measured in the
 * same run, interleaved, best of N:
 *   blas1/omp1  one core: today's np P = cores layout, per rank
 *   blas2/omp1  one rank with 2 BLAS threads, everything else serial
 *   blas2/omp2  one rank with 2 threads everywhere (the hybrid layout)
 * on a stories260K-shaped block (hidden 64, 8/4 heads of 8: the fused
 * attention; 16 windows x 512) and a Llama-3-8B-shaped block (hidden 4096,
 * intermediate 14336, 32/8 heads of 128: the sgemm attention; 1 window x
 * 1024). Prints each configuration's best time per stage and the ratios, and
 * checks that the three give bit-identical block outputs.
 * Usage: bench_threads [stories|8b] (default both). Run time ~40 s on 2
 * cores; run it alone (mpirun --bind-to none -n 1, or directly). */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "mpiquant/blas.h"
#include "mpiquant/error.h"
#include "mpiquant/forward.h"
#include "mpiquant/mem.h"
#include "mpiquant/threads.h"
#include "bench_common.h"

typedef struct {
  const char *name;
  int64_t H, I, nq, nkv, hd, nwin, L;
  int reps;
} shape;

enum { NCFG = 3 };
static const int cfg_blas[NCFG] = {1, 2, 2}, cfg_omp[NCFG] = {1, 1, 2};

static int bench_shape(const shape *sh) {
  qz_model_config c = {0};
  c.hidden_size = sh->H;
  c.intermediate_size = sh->I;
  c.num_hidden_layers = 1;
  c.num_attention_heads = sh->nq;
  c.num_key_value_heads = sh->nkv;
  c.head_dim = sh->hd;
  c.vocab_size = 512;
  c.max_position_embeddings = sh->L;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000;
  const int64_t H = sh->H, I = sh->I, T = sh->nwin * sh->L;
  qz_block_weights w = {0};
  qz_fwd *f[NCFG] = {0};
  float *x0 = NULL, *y[NCFG] = {0};
  QZ_CALL(qz_block_weights_alloc(&c, &w));
  bench_fill(w.attn_norm, H, 0.1f, 1);
  for (int64_t i = 0; i < H; i++) w.attn_norm[i] += 1.0f;
  memcpy(w.ffn_norm, w.attn_norm, (size_t)H * sizeof(float));
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t in = l == QZ_LIN_DOWN ? I : l == QZ_LIN_O ? sh->nq * sh->hd : H;
    int64_t out = l == QZ_LIN_Q ? sh->nq * sh->hd : l <= QZ_LIN_V ? sh->nkv * sh->hd
                  : l == QZ_LIN_O || l == QZ_LIN_DOWN ? H : I;
    bench_fill(w.w[l], out * in, 1.7f / (float)in, 10 + (uint64_t)l);
  }
  QZ_CALL(qz_alloc_big((size_t)(T * H) * sizeof(float), "input", &x0));
  bench_fill(x0, T * H, 1.0f, 99);
  for (int k = 0; k < NCFG; k++) {
    qz_threads_set(cfg_omp[k]); /* a workspace keeps its attention threads */
    QZ_CALL(qz_fwd_create(&c, sh->nwin, sh->L, &f[k]));
    QZ_CALL(qz_alloc_big((size_t)(T * H) * sizeof(float), "output", &y[k]));
  }
  double best[NCFG][QZ_STAGE_COUNT + 1];
  for (int k = 0; k < NCFG; k++)
    for (int s = 0; s <= QZ_STAGE_COUNT; s++) best[k][s] = 1e30;
  for (int r = 0; r < sh->reps; r++)
    for (int k = 0; k < NCFG; k++) { /* interleaved: load hits all alike */
      qz_threads_set(cfg_omp[k]);
      qz_blas_set_threads(cfg_blas[k]);
      memcpy(qz_fwd_hidden(f[k]), x0, (size_t)(T * H) * sizeof(float));
      qz_fwd_block_begin(f[k]);
      double t0 = MPI_Wtime();
      for (int s = 0; s < QZ_STAGE_COUNT; s++) {
        double t = MPI_Wtime();
        QZ_CALL(qz_fwd_run(f[k], &w, (qz_fwd_stage)s));
        t = MPI_Wtime() - t;
        if (t < best[k][s]) best[k][s] = t;
      }
      QZ_CALL(qz_fwd_block_commit(f[k]));
      double t = MPI_Wtime() - t0;
      if (t < best[k][QZ_STAGE_COUNT]) best[k][QZ_STAGE_COUNT] = t;
      memcpy(y[k], qz_fwd_hidden(f[k]), (size_t)(T * H) * sizeof(float));
    }
  printf("%s block: hidden %lld, intermediate %lld, heads %lld/%lld x %lld, %lld x %lld "
         "tokens, best of %d\n", sh->name, (long long)H, (long long)I, (long long)sh->nq,
         (long long)sh->nkv, (long long)sh->hd, (long long)sh->nwin, (long long)sh->L,
         sh->reps);
  printf("  %-11s", "stage (s)");
  for (int k = 0; k < NCFG; k++) printf("  blas%d/omp%d", cfg_blas[k], cfg_omp[k]);
  printf("  omp2 gain\n");
  for (int s = 0; s <= QZ_STAGE_COUNT; s++) {
    printf("  %-11s", s < QZ_STAGE_COUNT ? qz_fwd_stage_name((qz_fwd_stage)s) : "block");
    for (int k = 0; k < NCFG; k++) printf("  %11.4f", best[k][s]);
    printf("  %8.2fx\n", best[1][s] / best[2][s]);
  }
  int same = memcmp(y[0], y[1], (size_t)(T * H) * sizeof(float)) == 0 &&
             memcmp(y[0], y[2], (size_t)(T * H) * sizeof(float)) == 0;
  printf("  %s: block speed-up 2 threads everywhere vs 1 core %.2fx, vs 2 BLAS "
         "threads only %.2fx; outputs bit-identical: %s\n", sh->name,
         best[0][QZ_STAGE_COUNT] / best[2][QZ_STAGE_COUNT],
         best[1][QZ_STAGE_COUNT] / best[2][QZ_STAGE_COUNT], same ? "yes" : "NO");
  printf("ratio %s block speed-up 2 threads everywhere / 2 BLAS threads only: %.3f\n",
         sh->name, best[1][QZ_STAGE_COUNT] / best[2][QZ_STAGE_COUNT]);
  printf("ratio %s block speed-up 2 threads everywhere / 1 core: %.3f\n", sh->name,
         best[0][QZ_STAGE_COUNT] / best[2][QZ_STAGE_COUNT]);
  for (int k = 0; k < NCFG; k++) {
    qz_fwd_destroy(&f[k]);
    qz_free_big(&y[k], 0);
  }
  qz_free_big(&x0, 0);
  qz_block_weights_free(&w);
  QZ_CHECK(same, QZ_ERR_NUMERIC, "%s: block output depends on the thread count", sh->name);
  return QZ_OK;
}

int main(int argc, char **argv) {
  if (argc > 2 || (argc == 2 && strcmp(argv[1], "stories") && strcmp(argv[1], "8b"))) {
    int help = argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    fprintf(help ? stdout : stderr, "usage: bench_threads [stories|8b] (default: both)\n");
    return help ? 0 : 2;
  }
  MPI_Init(&argc, &argv);
  static const shape shapes[] = {
      {"stories260K", 64, 172, 8, 4, 8, 16, 512, 25},
      {"8B", 4096, 14336, 32, 8, 128, 1, 1024, 3},
  };
  int st = QZ_OK;
  for (int i = 0; i < 2 && st == QZ_OK; i++)
    if (argc < 2 || strcmp(argv[1], i ? "8b" : "stories") == 0) st = bench_shape(&shapes[i]);
  if (st != QZ_OK) qz_error_print(stderr, 0);
  MPI_Finalize();
  return st;
}
