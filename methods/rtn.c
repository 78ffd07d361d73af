/* Round-to-nearest: the reference quantizer on the original W, no Hessian. */
#include <math.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "mpiquant/method.h"

/* RTN has no column order: refuse the GPTQ ordering options instead of
 * ignoring them. Not collective. */
static int rtn_check_act(qz_method_opts *o);

static int rtn_check(qz_method_opts *o) {
  QZ_CALL(rtn_check_act(o));
  QZ_CHECK(!o->act_order && !o->static_groups, QZ_ERR_USAGE,
           "--method rtn: --act-order and --static-groups are GPTQ options (--method gptq, "
           "or awq --awq-then-gptq); rtn would ignore them");
  return QZ_OK;
}

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

/* Memory bound: ~20 flop-equivalents per weight at 5 % of sgemm speed. */
static void rtn_plan(const qz_method_opts *o, const qz_plan_machine *mc, int64_t m, int64_t n,
                     qz_plan_linear *p) {
  *p = (qz_plan_linear){.seconds = (double)m * (double)n * 20.0 / (mc->gemm * 0.05)};
}

/* Activations at evaluation: with --act-bits A every linear input is
 * quantized per token (dynamic, symmetric; options.act_bits, which eval
 * applies), e.g. W8A8-INT: --bits 8 --group -1 --sym --act-bits 8. */
static const qz_opt rtn_rows[] = {
    {.name = "act-bits", .type = QZ_OPT_INT, .ext = 1, .offset = 0, .def = 0, .lo = 0,
     .hi = 16, .json = "act_bits", .metavar = "A",
     .help = "quantize every linear input to A bits per token at evaluation (dynamic, "
             "symmetric; 0 = off, default)"},
};

static int rtn_check_act(qz_method_opts *o) {
  int act_bits = 0;
  qz_method_ext_get(o, &act_bits);
  QZ_CHECK(act_bits == 0 || act_bits >= 2, QZ_ERR_USAGE,
           "--act-bits %d: 0 (off) or 2..16", act_bits);
  return QZ_OK;
}

static const char *const rtn_exports[] = {"gptq", "compressed-tensors", NULL};

const qz_method_ops qz_method_rtn = {.name = "rtn",
                                     .summary = "round to nearest, no calibration",
                                     .uses = QZ_USES_BITS | QZ_USES_GROUP | QZ_USES_SYM,
                                     .exports = rtn_exports,
                                     .options = rtn_rows,
                                     .noptions = 1,
                                     .check = rtn_check,
                                     .setup = rtn_setup,
                                     .quantize_layer = rtn_layer,
                                     .destroy = rtn_destroy,
                                     .plan_linear = rtn_plan};
