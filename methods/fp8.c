/* FP8 E4M3 (OCP "e4m3fn") weights and activations: what vLLM serves as
 * FP8_DYNAMIC (W8A8, per-channel weights, per-token activations), FP8
 * (static per-tensor activation scales), FP8_BLOCK (DeepSeek-V3: 128x128
 * weight blocks, activations per token and group of 128) and W8A16-FP8
 * (--act none).
 *
 * Weights (the compressed-tensors / llm-compressor definition):
 *   scale s = max(absmax / 448, FLT_EPSILON) over an output channel (row),
 *   or over a block of B x B weights (--weight-block B; edge blocks are
 *   partial: ceil(out/B) x ceil(in/B) blocks), in f32;
 *   code = e4m3(w / s) (round to nearest even, saturating at +-448);
 *   stored: codes, scales [out, ngroups] (block: each row holds its block
 *   row's scales, one per group of B input columns), zeros 0, grid
 *   fp8_e4m3; dequantized w' = s * e4m3_value(code).
 * Activations at evaluation (the serving kernels' arithmetic, f32):
 *   dynamic, per token (vLLM dynamic_per_token_scaled_fp8_quant):
 *     s_t = max(absmax_t / 448, 1 / (448 * 512)), x' = e4m3(x / s_t) * s_t
 *   dynamic with --weight-block B, per token and group of B features
 *     (per_token_group_quant_fp8): s = max(absmax, 1e-10) / 448
 *   static: s = max(max |x| over every calibration token of that linear
 *     input, FLT_EPSILON) / 448 from calibration (MPI_MAX over ranks),
 *     x' = e4m3(x * (1 / s)) * s (vLLM's static kernel multiplies by the
 *     inverted scale); the inputs are observed true-sequentially: the
 *     block's earlier groups already have their quantized weights, the
 *     activations are not yet quantized; one scale per block and input
 *     group (q/k/v, o, gate/up, down) stored as aux "fp8.input_scale" [4]
 *   none: weight-only. */
#include <float.h>
#include <limits.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/codes.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/fp8.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/method.h"
#include "mpiquant/timing.h"

enum { FP8_ACT_DYNAMIC = 0, FP8_ACT_STATIC = 1, FP8_ACT_NONE = 2 };
static const char *const k_act_names[] = {"dynamic", "static", "none", NULL};

/* the aux dataset of static scales: one per input group of a block */
#define FP8_AUX_INPUT_SCALE QZ_FP8_AUX_INPUT_SCALE
enum { FP8_NGROUPS = QZ_FP8_AUX_NGROUPS };

typedef struct {
  int act;   /* FP8_ACT_* */
  int block; /* weight block edge B (0: per output channel) */
} fp8_cli;

typedef struct {
  fp8_cli cli;
  float *bmax;   /* [nbmax] block maxima of one linear */
  int64_t nbmax;
} fp8_state;

/* ---- the quantizers ------------------------------------------------------ */

static float absmax(const float *x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
  return m;
}

static float weight_scale(float amax) {
  float s = amax / QZ_FP8_E4M3_MAX;
  return s < FLT_EPSILON ? FLT_EPSILON : s;
}

/* codes and dequantized values of n weights with scale s */
static void encode_row(const float *w, int64_t n, float s, uint8_t *codes, float *q) {
  for (int64_t j = 0; j < n; j++) {
    codes[j] = qz_f32_to_fp8_e4m3(w[j] / s);
    if (q) q[j] = qz_fp8_e4m3_to_f32(codes[j]) * s;
  }
}

/* Per-channel (B = 0) or block maxima -> scales [nrows, ng] of this rank's
 * rows.  Block maxima span rows of several ranks: every rank computes its
 * rows' part of all ceil(out/B) x ceil(in/B) maxima, an MPI_MAX reduction
 * (exact, order-free) completes them. Collective on L->comm. */
static int weight_scales(fp8_state *S, const qz_layer *L, int64_t ng, float *scale) {
  const int64_t n = L->in_features, B = S->cli.block;
  if (B <= 0) {
    for (int64_t r = 0; r < L->nrows; r++) scale[r] = weight_scale(absmax(L->w + r * n, n));
    return QZ_OK;
  }
  const int64_t nbr = (L->out_features + B - 1) / B, nbc = (n + B - 1) / B;
  QZ_CHECK(nbc == ng && nbr * nbc <= INT_MAX, QZ_ERR_INTERNAL,
           "%s: %lld x %lld blocks, %lld groups", L->name, (long long)nbr, (long long)nbc,
           (long long)ng);
  int st = QZ_OK;
  if (S->nbmax < nbr * nbc) {
    qz_free(&S->bmax);
    S->nbmax = 0;
    st = qz_alloc((size_t)(nbr * nbc), sizeof(float), "FP8 block maxima", &S->bmax);
    if (st == QZ_OK) S->nbmax = nbr * nbc;
  }
  QZ_CALL(qz_error_agree(qz_layer_comm(L), st));
  memset(S->bmax, 0, sizeof(float) * (size_t)(nbr * nbc));
  for (int64_t r = 0; r < L->nrows; r++) {
    float *bm = S->bmax + ((L->row0 + r) / B) * nbc;
    for (int64_t c = 0; c < nbc; c++) {
      int64_t c0 = c * B, len = n - c0 < B ? n - c0 : B;
      float m = absmax(L->w + r * n + c0, len);
      bm[c] = m > bm[c] ? m : bm[c];
    }
  }
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, S->bmax, (int)(nbr * nbc), MPI_FLOAT, MPI_MAX,
                            qz_layer_comm(L)));
  qz_count_allreduce(qz_layer_comm(L), 4 * nbr * nbc);
  for (int64_t r = 0; r < L->nrows; r++)
    for (int64_t c = 0; c < nbc; c++)
      scale[r * ng + c] = weight_scale(S->bmax[((L->row0 + r) / B) * nbc + c]);
  return QZ_OK;
}

/* Collective on L->comm (block scales); every rank calls it. */
static int fp8_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  fp8_state *S = state;
  const int64_t n = L->in_features, B = S->cli.block;
  const int64_t ng = B > 0 ? (n + B - 1) / B : 1;
  /* a bad weight on one rank must not leave the others in the reduction */
  QZ_CALL(qz_error_agree(qz_layer_comm(L), qz_layer_check_finite(L)));
  QZ_CALL(weight_scales(S, L, ng, res->scale));
  for (int64_t r = 0; r < L->nrows; r++) {
    for (int64_t g = 0; g < ng; g++) {
      int64_t c0 = B > 0 ? g * B : 0, len = B > 0 ? (n - c0 < B ? n - c0 : B) : n;
      encode_row(L->w + r * n + c0, len, res->scale[r * ng + g], res->codes + r * n + c0,
                 res->q ? res->q + r * n + c0 : NULL);
      res->zero[r * ng + g] = 0.0f;
    }
  }
  qz_layer_result_plain(L, B > 0 ? (int)B : -1, res);
  res->grid = QZ_VGRID_FP8_E4M3;
  return QZ_OK;
}

/* ---- options ---------------------------------------------------------------- */

/* The weight quantizer is fixed (8-bit float, symmetric, per channel or
 * block): the common options follow from --weight-block. */
static int fp8_check(qz_method_opts *o) {
  fp8_cli c;
  qz_method_ext_get(o, &c);
  const int64_t group = c.block > 0 ? c.block : -1;
  QZ_CHECK(!(qz_method_opt_given(o, "bits") && o->spec.bits != 8) &&
               !(qz_method_opt_given(o, "group") && o->spec.groupsize != group) &&
               !o->act_order && !o->static_groups,
           QZ_ERR_USAGE, "--method fp8 stores 8-bit E4M3 weights per output channel or in "
           "--weight-block B x B blocks (no --bits other than 8, --group other than the "
           "block (-1 without), --act-order or --static-groups)");
  /* every rank holds all block maxima of a linear: (out/B) x (in/B) floats */
  QZ_CHECK(c.block == 0 || c.block >= 16, QZ_ERR_USAGE,
           "--weight-block %d: blocks of at least 16 x 16 (128 is DeepSeek-V3's), or 0 for "
           "per-channel scales", c.block);
  QZ_CHECK(!(c.block > 0 && c.act == FP8_ACT_STATIC), QZ_ERR_USAGE,
           "--method fp8 --weight-block %d: block weights go with dynamic per-token-group "
           "activations (--act dynamic, FP8_BLOCK) or none (--act none); vLLM's block "
           "kernels have no static activation scales", c.block);
  o->spec.bits = 8;
  o->spec.sym = 1;
  o->spec.groupsize = group;
  return QZ_OK;
}

static unsigned fp8_needs(const qz_method_opts *o) {
  fp8_cli c;
  qz_method_ext_get(o, &c);
  return c.act == FP8_ACT_STATIC ? QZ_NEED_CALIB : 0u;
}

static int fp8_setup(const qz_method_opts *o, void **state) {
  fp8_state *s = NULL;
  QZ_CALL(qz_calloc(1, sizeof *s, "FP8 state", &s));
  qz_method_ext_get(o, &s->cli);
  *state = s;
  return QZ_OK;
}

static void fp8_destroy(void **state) {
  if (!state || !*state) return;
  fp8_state *s = *state;
  qz_free(&s->bmax);
  qz_free(state);
}

/* ---- static activation scales (block hook) ----------------------------------- */

static const qz_linear k_group_first[FP8_NGROUPS] = {QZ_LIN_Q, QZ_LIN_O, QZ_LIN_GATE,
                                                     QZ_LIN_DOWN};
static const qz_linear k_group_end[FP8_NGROUPS] = {QZ_LIN_O, QZ_LIN_GATE, QZ_LIN_DOWN,
                                                   QZ_LIN_COUNT};

static int group_of(qz_linear l) {
  for (int g = FP8_NGROUPS - 1; g >= 0; g--)
    if (l >= k_group_first[g]) return g;
  return 0;
}

/* max |x| over every rank's tokens at the input of group g. Collective. */
static int group_absmax(qz_block_ctx *b, int g, float *amax) {
  qz_fwd_stage stage = qz_fwd_stage_of_linear(k_group_first[g]);
  qz_timer_start(QZ_PHASE_FORWARD);
  int st = qz_fwd_run(b->f, b->w, stage);
  qz_timer_stop(QZ_PHASE_FORWARD);
  QZ_CALL(qz_error_agree(b->comm, st));
  int64_t nc = 0;
  const float *x = qz_fwd_stage_output(b->f, stage, &nc);
  *amax = absmax(x, qz_fwd_ntok(b->f) * nc);
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, amax, 1, MPI_FLOAT, MPI_MAX, b->comm));
  qz_count_allreduce(b->comm, 4);
  return QZ_OK;
}

/* Without static scales: the 7 linears, no forward.  With them:
 * true-sequential groups, each group's input maximum observed before its
 * linears are quantized, then the scales as aux data. Collective. */
static int fp8_block(void *state, qz_block_ctx *b) {
  fp8_state *S = state;
  if (S->cli.act != FP8_ACT_STATIC) {
    for (int l = 0; l < QZ_LIN_COUNT; l++) QZ_CALL(b->linear(b, (qz_linear)l, NULL));
    return QZ_OK;
  }
  float scale[FP8_NGROUPS], amax[FP8_NGROUPS];
  qz_fwd_block_begin(b->f);
  for (int g = 0; g < FP8_NGROUPS; g++) {
    QZ_CALL(group_absmax(b, g, &amax[g]));
    scale[g] = weight_scale(amax[g]);
    for (int l = (int)k_group_first[g]; l < (int)k_group_end[g]; l++)
      QZ_CALL(b->linear(b, (qz_linear)l, NULL));
  }
  qz_timer_start(QZ_PHASE_FORWARD);
  int st = qz_fwd_run(b->f, b->w, QZ_STAGE_OUT);
  qz_timer_stop(QZ_PHASE_FORWARD);
  QZ_CALL(qz_error_agree(b->comm, st));
  QZ_CALL(b->commit(b));
  QZ_CALL(b->aux(b, FP8_AUX_INPUT_SCALE, FP8_NGROUPS, 1, scale));
  json_t *js = json_array();
  for (int g = 0; g < FP8_NGROUPS; g++) json_array_append_new(js, json_real(scale[g]));
  b->stat(b, "fp8_input_scale", js);
  qz_info("block %d fp8 static input scales: qkv %.4g o %.4g gate/up %.4g down %.4g",
          b->layer, (double)scale[0], (double)scale[1], (double)scale[2], (double)scale[3]);
  return QZ_OK;
}

/* ---- evaluation: the activation quantizer ------------------------------------- */

typedef struct {
  int act, group;  /* FP8_ACT_*; dynamic group width (0: the whole token) */
  int nblocks;
  float *scale;    /* static: [nblocks, 4], 0 = block not in the checkpoint */
} fp8_eval;

/* qz_act_hook: the kernels' quantizers (mpiquant/fp8.h); a block the
 * checkpoint lacks (scale 0) keeps its fp inputs. */
static void fp8_act_fn(void *ctx, int layer, qz_linear lin, const float *x, int64_t nrows,
                       int64_t n, float *y) {
  const fp8_eval *e = ctx;
  if (e->act != FP8_ACT_STATIC) {
    qz_fp8_e4m3_act_dynamic(x, (size_t)nrows, (size_t)n, (size_t)e->group, y);
    return;
  }
  float s = layer < e->nblocks ? e->scale[layer * FP8_NGROUPS + group_of(lin)] : 0.0f;
  if (s > 0.0f) qz_fp8_e4m3_act_static(x, (size_t)(nrows * n), s, y);
  else if (y != x) memcpy(y, x, sizeof(float) * (size_t)(nrows * n));
}

static void fp8_eval_free(qz_act_hook *h) {
  fp8_eval *e = h->ctx;
  if (e) qz_free(&e->scale);
  qz_free(&h->ctx);
  h->fn = NULL;
}

/* The recorded act scheme and block width of checkpoint ck. */
static int recorded_cli(const qz_ckpt *ck, fp8_cli *c) {
  json_t *j = json_loads(qz_ckpt_options_json(ck), 0, NULL);
  const char *act = json_string_value(json_object_get(j, QZ_FP8_OPT_ACT));
  json_t *blk = json_object_get(j, QZ_FP8_OPT_BLOCK);
  c->act = -1;
  for (int k = 0; act && k_act_names[k]; k++)
    if (strcmp(act, k_act_names[k]) == 0) c->act = k;
  c->block = json_is_integer(blk) ? (int)json_integer_value(blk) : 0;
  json_decref(j);
  QZ_CHECK(c->act >= 0, QZ_ERR_FORMAT, "checkpoint %s: options.fp8_act is '%s', expected "
           "dynamic, static or none", qz_ckpt_dir(ck), act ? act : "(missing)");
  return QZ_OK;
}

/* Collective on comm (the static scales are read from every block file). */
static int fp8_eval_act(struct qz_ckpt *ck, MPI_Comm comm, const qz_model_config *cfg,
                        qz_act_hook *h) {
  (void)cfg;
  fp8_cli c;
  QZ_CALL(recorded_cli(ck, &c));
  if (c.act == FP8_ACT_NONE) return QZ_OK;
  fp8_eval *e = NULL;
  int st = QZ_OK;
  QZ_CALL(qz_calloc(1, sizeof *e, "FP8 eval", &e));
  h->ctx = e;
  h->fn = fp8_act_fn;
  e->act = c.act;
  e->group = c.act == FP8_ACT_DYNAMIC ? c.block : 0;
  if (c.act == FP8_ACT_STATIC) {
    e->nblocks = qz_ckpt_nblocks(ck);
    QZ_CALL_DONE(qz_calloc((size_t)e->nblocks * FP8_NGROUPS, sizeof(float),
                           "FP8 input scales", &e->scale));
    for (int b = 0; b < e->nblocks; b++) {
      if (!qz_ckpt_block_done(ck, b)) continue; /* eval warns: fp weights there */
      int found = 0;
      QZ_CALL_DONE(qz_ckpt_read_aux(ck, b, FP8_AUX_INPUT_SCALE, FP8_NGROUPS, 1,
                                    e->scale + b * FP8_NGROUPS, &found));
      QZ_CHECK_DONE(found, QZ_ERR_FORMAT, "checkpoint %s: block %d has no /aux/%d/%s (the "
                    "static FP8 input scales --act static writes)", qz_ckpt_dir(ck), b, b,
                    FP8_AUX_INPUT_SCALE);
    }
  }
  (void)comm;
done:
  if (st) fp8_eval_free(h);
  return st;
}

/* ---- plan, rows, ops ------------------------------------------------------------- */

/* Memory bound like RTN: ~20 flop-equivalents per weight at 5 % of sgemm. */
static void fp8_plan_linear(const qz_method_opts *o, const qz_plan_machine *mc, int64_t m,
                            int64_t n, qz_plan_linear *p) {
  fp8_cli c;
  qz_method_ext_get(o, &c);
  double nb = c.block > 0 ? (double)((m + c.block - 1) / c.block) * (double)((n + c.block - 1) / c.block)
                          : 0.0;
  *p = (qz_plan_linear){.bytes = 4.0 * nb,
                        .seconds = (double)m * (double)n * 20.0 / (mc->gemm * 0.05) +
                                   (nb > 0 && mc->allreduce ? mc->allreduce(mc->ctx, 4.0 * nb) : 0.0)};
}

#define FP8_FIELD(f) .ext = 1, .offset = offsetof(fp8_cli, f)
static const qz_opt fp8_rows[] = {
    {.name = "act", .type = QZ_OPT_CHOICE, FP8_FIELD(act), .def = FP8_ACT_DYNAMIC,
     .choices = k_act_names, .json = QZ_FP8_OPT_ACT, .metavar = "dynamic|static|none",
     .help = "FP8 activations at evaluation: dynamic per-token scales (default; per token "
             "and group of B with --weight-block B), static per-tensor scales from the "
             "calibration maxima (needs --calib), none = weight-only (W8A16)"},
    {.name = "weight-block", .type = QZ_OPT_INT, FP8_FIELD(block), .def = 0, .lo = 0,
     .hi = 1 << 16, .json = QZ_FP8_OPT_BLOCK, .metavar = "B",
     .help = "FP8 weight scales per B x B block, B >= 16 (128: DeepSeek-V3, FP8_BLOCK); "
             "0 = per output channel (default)"},
};
_Static_assert(sizeof(fp8_cli) <= QZ_METHOD_EXT_BYTES, "FP8 options exceed the ext bytes");

static const char *const fp8_exports[] = {"compressed-tensors", NULL};

const qz_method_ops qz_method_fp8 = {
    .name = "fp8",
    .summary = "FP8 E4M3 weights (per channel or block) and activations (W8A8-FP8)",
    .options = fp8_rows,
    .noptions = (int)(sizeof fp8_rows / sizeof fp8_rows[0]),
    .exports = fp8_exports,
    .check = fp8_check,
    .needs = fp8_needs,
    .setup = fp8_setup,
    .quantize_layer = fp8_layer,
    .destroy = fp8_destroy,
    .quantize_block = fp8_block,
    .plan_linear = fp8_plan_linear,
    .eval_act = fp8_eval_act,
    .eval_act_free = fp8_eval_free};
