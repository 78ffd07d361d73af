/* No quantization: every weight stored exactly (one group per weight,
 * scale = w, code 1, zero 0, so scale * (code - zero) = w in f32).  For
 * transforms that change the weights without quantizing them (quantize
 * --rotate hadamard --method none: the invariance check of a rotated
 * model) and as the W16 reference of a transform; 5 bytes per weight. */
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "mpiquant/method.h"

static int none_check(qz_method_opts *o) {
  QZ_CHECK(!qz_method_opt_given(o, "bits") && !qz_method_opt_given(o, "group") &&
               !o->spec.sym && !o->act_order && !o->static_groups,
           QZ_ERR_USAGE, "--method none keeps the weights exactly: --bits, --group, --sym, "
           "--act-order and --static-groups do not apply");
  o->spec.bits = 8;      /* codes are 0/1 */
  o->spec.groupsize = 1; /* one scale per weight: the weight itself */
  return QZ_OK;
}

static int none_setup(const qz_method_opts *o, void **state) {
  (void)o;
  *state = NULL;
  return QZ_OK;
}

static int none_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  (void)state;
  QZ_CALL(qz_layer_check_finite(L));
  const int64_t n = L->nrows * L->in_features;
  memset(res->codes, 1, (size_t)n);
  memcpy(res->scale, L->w, (size_t)n * sizeof *L->w);
  memset(res->zero, 0, (size_t)n * sizeof *res->zero);
  if (res->q) memcpy(res->q, L->w, (size_t)n * sizeof *L->w);
  qz_layer_result_plain(L, 1, res);
  return QZ_OK;
}

static void none_destroy(void **state) { *state = NULL; }

static void none_plan(const qz_method_opts *o, const qz_plan_machine *mc, int64_t m, int64_t n,
                      qz_plan_linear *p) {
  (void)o;
  *p = (qz_plan_linear){.seconds = (double)m * (double)n * 4.0 / (mc->gemm * 0.05)};
}

const qz_method_ops qz_method_none = {.name = "none",
                                      .summary = "no quantization: the (transformed) weights "
                                                 "exactly, for --rotate checks",
                                      .uses = 0,
                                      .check = none_check,
                                      .setup = none_setup,
                                      .quantize_layer = none_layer,
                                      .destroy = none_destroy,
                                      .plan_linear = none_plan};
