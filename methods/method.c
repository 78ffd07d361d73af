/* Registry of quantization methods: one line per method. */
#include <math.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/method.h"

extern const qz_method_ops qz_method_rtn;
extern const qz_method_ops qz_method_gptq;
extern const qz_method_ops qz_method_quantease;
extern const qz_method_ops qz_method_awq;
extern const qz_method_ops qz_method_smoothquant;

static const qz_method_ops *const registry[] = {
    &qz_method_rtn,
    &qz_method_gptq,
    &qz_method_quantease,
    &qz_method_awq,
    &qz_method_smoothquant,
    NULL,
};

const qz_method_ops *qz_method_find(const char *name) {
  for (int i = 0; name && registry[i]; i++)
    if (strcmp(registry[i]->name, name) == 0) return registry[i];
  return NULL;
}

int qz_layer_check_finite(const qz_layer *L) {
  const int64_t n = L->in_features;
  for (int64_t i = 0; i < L->nrows * n; i++)
    QZ_CHECK(isfinite(L->w[i]), QZ_ERR_NUMERIC, "%s: weight W[%lld, %lld] is not finite (%g)",
             L->name ? L->name : "layer", (long long)(L->row0 + i / n), (long long)(i % n),
             (double)L->w[i]);
  return QZ_OK;
}

void qz_layer_result_plain(const qz_layer *L, int groupsize, qz_layer_result *res) {
  const int64_t n = L->in_features;
  for (int64_t j = 0; j < n; j++) {
    if (res->g_idx) res->g_idx[j] = groupsize <= 0 ? 0 : (int32_t)(j / groupsize);
    if (res->perm) res->perm[j] = (int32_t)j;
  }
  if (res->losses) memset(res->losses, 0, (size_t)L->nrows * sizeof(float));
  res->loss_local = 0;
  res->percdamp_used = 0;
  res->ndead = 0;
}

const char *qz_method_names(void) { return "rtn, gptq, quantease, awq, smoothquant"; }

qz_method_opts qz_method_opts_default(void) {
  return (qz_method_opts){.spec = {.bits = 4, .groupsize = 128, .sym = 0},
                          .act_order = 0,
                          .static_groups = 0,
                          .blocksize = 128,
                          .percdamp = 0.01,
                          .percdamp_max = 1.0,
                          .iters = 30,
                          .qe_init = 0};
}
