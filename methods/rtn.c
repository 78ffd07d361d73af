/* Round-to-nearest: the reference quantizer on the original W, no Hessian. */
#include <math.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "mpiquant/method.h"

static int rtn_setup(const qz_method_opts *o, void **state) {
  QZ_CALL(qz_quant_spec_check(&o->spec));
  qz_method_opts *s = NULL;
  QZ_CALL(qz_alloc(1, sizeof *s, "RTN options", &s));
  *s = *o;
  *state = s;
  return QZ_OK;
}

static int rtn_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  const qz_method_opts *o = state;
  const int64_t n = L->in_features;
  for (int64_t i = 0; i < L->nrows * n; i++)
    QZ_CHECK(isfinite(L->w[i]), QZ_ERR_NUMERIC,
             "%s: weight W[%lld, %lld] is not finite",
             L->name ? L->name : "layer", (long long)(L->row0 + i / n),
             (long long)(i % n));
  QZ_CALL(qz_rtn_quantize(&o->spec, L->nrows, n, L->w, res->codes, res->q,
                          res->scale, res->zero, res->g_idx));
  if (res->perm)
    for (int64_t j = 0; j < n; j++) res->perm[j] = (int32_t)j;
  if (res->losses) memset(res->losses, 0, (size_t)L->nrows * sizeof(float));
  res->loss_local = 0;
  res->percdamp_used = 0;
  res->ndead = 0;
  return QZ_OK;
}

static void rtn_destroy(void **state) { qz_free(state); }

const qz_method_ops qz_method_rtn = {.name = "rtn",
                                     .needs_hessian = 0,
                                     .setup = rtn_setup,
                                     .quantize_layer = rtn_layer,
                                     .destroy = rtn_destroy};
