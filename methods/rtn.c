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
  QZ_CALL(qz_layer_check_finite(L));
  QZ_CALL(qz_rtn_quantize(&o->spec, L->nrows, L->in_features, L->w, res->codes, res->q,
                          res->scale, res->zero, NULL));
  qz_layer_result_plain(L, o->spec.groupsize, res);
  return QZ_OK;
}

static void rtn_destroy(void **state) { qz_free(state); }

const qz_method_ops qz_method_rtn = {.name = "rtn",
                                     .needs_hessian = 0,
                                     .setup = rtn_setup,
                                     .quantize_layer = rtn_layer,
                                     .destroy = rtn_destroy};
