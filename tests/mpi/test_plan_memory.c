/* plan's memory formulas against the real objects, and the per-rank Hessian
 * share of down_proj (d = 28672, Llama-3-70B) falling as 1/P:
 *  - qz_plan_hessian_bytes(d, nb, P, 1, rank) == qz_hessian_bytes right after
 *    qz_hessian_create on every rank (creation only: no accumulation);
 *  - the largest share over ranks * P stays within the block-cyclic padding
 *    of the one-rank size 8 d^2 (+ 13 d): max * P <= (8 d^2 + 13 d P) *
 *    PAD_HI, and the smallest share * P >= 8 d^2 * PAD_LO, where PAD_HI/LO
 *    = (d +- nb pr)(d +- nb pc) / d^2 is numroc's padding bound (at most one
 *    nb block more or less per grid row and column; 1.009 / 0.991 for
 *    d = 28672 at np 4);
 *  - qz_plan_fwd_bytes == qz_fwd_bytes and qz_plan_block_weight_bytes ==
 *    qz_block_weights_alloc's mem_bytes for small configs (bias or not). */
#include <stdlib.h>
#include <string.h>

#include "mpiquant/config.h"
#include "mpiquant/forward.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/model.h"
#include "plan.h"
#include "qz_test.h"


static const char *k_cfg =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":96,"
    "\"intermediate_size\":200,\"num_attention_heads\":6,\"num_key_value_heads\":2,"
    "\"num_hidden_layers\":2,\"vocab_size\":300,\"max_position_embeddings\":256,"
    "\"rms_norm_eps\":1e-5,\"attention_bias\":%s}";

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  int rank = qzt_rank(), P = qzt_size();
  const char *e = getenv("QZ_PLANTEST_D");
  const int64_t d = e ? atoll(e) : 28672;
  const int nb = 128;
  qz_grid *grid = NULL;
  qz_hessian *H = NULL;
  QZT_OK(qz_grid_create(MPI_COMM_WORLD, nb, &grid));
  double t0 = MPI_Wtime();
  if (QZT_OK(qz_hessian_create(grid, d, &H))) {
    double got = (double)qz_hessian_bytes(H);
    double want = qz_plan_hessian_bytes(d, nb, P, 1, rank); /* one machine */
    QZT_CHECK(got == want, "rank %d: qz_hessian_bytes %.0f, plan formula %.0f", rank, got,
              want);
    double mx = got, mn = got;
    MPI_Allreduce(MPI_IN_PLACE, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &mn, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    double one = 8.0 * (double)d * (double)d;
    int pr, pc;
    qz_plan_grid_shape(P, 1, &pr, &pc);
    const double PAD_HI = (double)(d + nb * pr) * (double)(d + nb * pc) / ((double)d * d);
    const double PAD_LO = (double)(d - nb * pr) * (double)(d - nb * pc) / ((double)d * d);
    QZT_CHECK(mx * P <= (one + 13.0 * d * P) * PAD_HI,
              "np %d: largest share %.0f x P = %.4g > %.4g (1/P scaling)", P, mx, mx * P,
              (one + 13.0 * d * P) * PAD_HI);
    QZT_CHECK(mn * P >= one * PAD_LO, "np %d: smallest share %.0f x P = %.4g < %.4g", P, mn,
              mn * P, one * PAD_LO);
    if (rank == 0)
      printf("d = %lld, np %d: Hessian share per rank max %.3f GB (8 d^2 / P = %.3f GB), "
             "created in %.2f s\n",
             (long long)d, P, mx / 1e9, one / P / 1e9, MPI_Wtime() - t0);
  }
  qz_hessian_destroy(&H);
  qz_grid_destroy(&grid);

  for (int bias = 0; bias < 2; bias++) {
    char js[1024];
    snprintf(js, sizeof js, k_cfg, bias ? "true" : "false");
    qz_model_config cfg;
    if (!QZT_OK(qz_config_parse(js, strlen(js), "test config", &cfg))) continue;
    qz_block_weights w = {0};
    if (QZT_OK(qz_block_weights_alloc(&cfg, &w)))
      QZT_CHECK((double)w.mem_bytes == qz_plan_block_weight_bytes(&cfg),
                "block weights (bias %d): alloc %zu, plan %.0f", bias, w.mem_bytes,
                qz_plan_block_weight_bytes(&cfg));
    qz_block_weights_free(&w);
    int64_t nw[] = {0, 1, 3}, L[] = {7, 64, 300};
    for (int i = 0; i < 3; i++) {
      qz_fwd *f = NULL;
      if (QZT_OK(qz_fwd_create(&cfg, nw[i], L[i], &f)))
        QZT_CHECK((double)qz_fwd_bytes(f) == qz_plan_fwd_bytes(&cfg, nw[i], L[i]),
                  "fwd bytes nwin %lld seqlen %lld: %zu vs plan %.0f", (long long)nw[i],
                  (long long)L[i], qz_fwd_bytes(f), qz_plan_fwd_bytes(&cfg, nw[i], L[i]));
      qz_fwd_destroy(&f);
    }
  }
  /* MoE: quantize's block without experts (alloc_ex(., 0, .)) and the
   * forward with its MoE scratch (all-MoE: no dense FFN buffers) */
  static const char *const k_moe[] = {
      "{\"architectures\":[\"MixtralForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":96,"
      "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"num_hidden_layers\":2,"
      "\"vocab_size\":300,\"num_local_experts\":5,\"num_experts_per_tok\":2}",
      "{\"architectures\":[\"Qwen2MoeForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":96,"
      "\"moe_intermediate_size\":32,\"shared_expert_intermediate_size\":48,"
      "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"num_hidden_layers\":3,"
      "\"mlp_only_layers\":[1],\"vocab_size\":300,\"num_experts\":6,\"num_experts_per_tok\":3}",
      "{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":96,"
      "\"moe_intermediate_size\":32,\"head_dim\":32,\"num_attention_heads\":4,"
      "\"num_key_value_heads\":2,\"num_hidden_layers\":2,\"vocab_size\":300,"
      "\"num_experts\":6,\"num_experts_per_tok\":3}"};
  for (int k = 0; k < 3; k++) {
    qz_model_config cfg;
    if (!QZT_OK(qz_config_parse(k_moe[k], strlen(k_moe[k]), "moe test config", &cfg))) continue;
    qz_block_weights w = {0};
    if (QZT_OK(qz_block_weights_alloc_ex(&cfg, 0, &w)))
      QZT_CHECK((double)w.mem_bytes == qz_plan_block_weight_bytes(&cfg),
                "MoE config %d: block weights alloc %zu, plan %.0f", k, w.mem_bytes,
                qz_plan_block_weight_bytes(&cfg));
    qz_block_weights_free(&w);
    qz_fwd *f = NULL;
    if (QZT_OK(qz_fwd_create(&cfg, 3, 40, &f)))
      QZT_CHECK((double)qz_fwd_bytes(f) == qz_plan_fwd_bytes(&cfg, 3, 40),
                "MoE config %d: fwd bytes %zu vs plan %.0f", k, qz_fwd_bytes(f),
                qz_plan_fwd_bytes(&cfg, 3, 40));
    qz_fwd_destroy(&f);
  }
  return qzt_finish("plan_memory");
}
