/* Round-to-nearest: the reference quantizer on the original W, no Hessian. */
#include <math.h>
#include <string.h>

#include "mpiquant/codes.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "mpiquant/method.h"
#include "wq.h"

/* RTN has no column order: refuse the GPTQ ordering options instead of
 * ignoring them. Not collective. */
static int rtn_check(qz_method_opts *o) {
  QZ_CALL(qz_wq_check(o));
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

/* Collective on L's communicator with --double-quant (not collective
 * otherwise): every rank calls it. */
static int rtn_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  const qz_method_opts *o = state;
  qz_wq_ext e;
  qz_method_ext_get(o, &e);
  const int64_t n = L->in_features, ng = qz_quant_ngroups(&o->spec, n);
  MPI_Comm comm = qz_layer_comm(L);
  QZ_CALL(qz_error_agree(comm, qz_layer_check_finite(L)));
  if (e.grid == QZ_VGRID_INT && e.w_clip)
    qz_wq_rtn_clip(&o->spec, L->nrows, n, L->w, res->codes, res->q, res->scale, res->zero);
  else if (e.grid == QZ_VGRID_INT)
    QZ_CALL(qz_rtn_quantize(&o->spec, L->nrows, n, L->w, res->codes, res->q, res->scale,
                            res->zero, NULL));
  else
    qz_wq_rtn_grid(e.grid, o->spec.groupsize, L->nrows, n, L->w, res->codes, res->q,
                   res->scale, res->zero);
  qz_layer_result_plain(L, o->spec.groupsize, res);
  res->grid = e.grid;
  if (e.double_quant) {
    QZ_CALL(qz_wq_double_quant(comm, L->out_features, L->row0, L->nrows, ng, res->scale));
    if (res->q) { /* the dequantized rows follow the stored scales */
      float value[256];
      qz_vgrid_values((qz_vgrid)e.grid, value);
      const int64_t g = o->spec.groupsize > 0 ? o->spec.groupsize : n;
      for (int64_t i = 0; i < L->nrows * n; i++)
        res->q[i] = res->scale[(i / n) * ng + (i % n) / g] * value[res->codes[i]];
    }
  }
  qz_wq_storage(o, L->out_features, n, 0, &res->storage);
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
static const qz_opt rtn_rows[] = {QZ_WQ_ROW_ACT_BITS, QZ_WQ_ROW_GRID,
                                   QZ_WQ_ROW_DOUBLE_QUANT, QZ_WQ_ROW_W_CLIP};

static const char *const rtn_exports[] = {"gptq", "compressed-tensors", NULL};

const qz_method_ops qz_method_rtn = {.name = "rtn",
                                     .summary = "round to nearest, no calibration",
                                     .uses = QZ_USES_BITS | QZ_USES_GROUP | QZ_USES_SYM,
                                     .exports = rtn_exports,
                                     .options = rtn_rows,
                                     .noptions = 4,
                                     .check = rtn_check,
                                     .setup = rtn_setup,
                                     .quantize_layer = rtn_layer,
                                     .destroy = rtn_destroy,
                                     .plan_linear = rtn_plan};
