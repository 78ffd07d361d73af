/* LLM.int8() (Dettmers et al. 2022): vector-wise int8 absmax weights with
 * the mixed-precision decomposition of the activations (docs/methods.md).
 *
 * Quantize: one pass of the fp block over the calibration windows finds
 * the outlier input columns of each linear group (|x| >= threshold in any
 * calibration token, union over ranks), stored as /aux/{block}/
 * {first linear of the group}.outlier_cols (f32 0/1 mask [in]) and counted
 * in the log and the manifest stats; the fp block's output is the next
 * block's input (no Hessian, nothing sequential: the weights do not depend
 * on the activations).  Weights: int8 absmax per output row over all
 * columns, code = rint(w / d) + 128, d = max(absmax, 1e-5) / 127, zero 128.
 *
 * Eval (eval_act hook): per token t the outlier columns are the
 * calibration set plus the columns with |x_tj| >= threshold in that token
 * (dynamic detection); they stay in f32 rounded to fp16, the other columns
 * are int8 absmax per token over the non-outlier columns.  The outlier
 * columns of W are multiplied in their dequantized int8 form, as
 * bitsandbytes does (it multiplies CB[:, cols] * SCB / 127), so the whole
 * decomposition is an activation transform in front of the int8 weights.
 *
 * --weight-only: W8 with the calibration outlier columns of W kept in fp16
 * as the sparse part (codes 128 there, absmax over the other columns);
 * activations stay f32 at evaluation. */
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/method.h"
#include "mpiquant/safetensors.h"
#include "mpiquant/smoothquant.h"
#include "mpiquant/timing.h"

typedef struct {
  double threshold; /* outlier magnitude (6.0, the paper's) */
  int weight_only;  /* W8 with fp16 outlier columns, f32 activations */
} li_cli;
_Static_assert(sizeof(li_cli) <= QZ_METHOD_EXT_BYTES, "llm-int8 options exceed the ext bytes");

/* The four linear groups of a block: their first linear, input stage. */
static const qz_linear k_first[4] = {QZ_LIN_Q, QZ_LIN_O, QZ_LIN_GATE, QZ_LIN_DOWN};
static const qz_fwd_stage k_stage[4] = {QZ_STAGE_QKV_IN, QZ_STAGE_O_IN, QZ_STAGE_GATEUP_IN,
                                        QZ_STAGE_DOWN_IN};

static int group_of(qz_linear l) {
  switch (l) {
    case QZ_LIN_Q: case QZ_LIN_K: case QZ_LIN_V: return 0;
    case QZ_LIN_O: return 1;
    case QZ_LIN_GATE: case QZ_LIN_UP: return 2;
    default: return 3;
  }
}

static int64_t group_width(const qz_model_config *cfg, int g) {
  int64_t out, in;
  qz_linear_shape(cfg, k_first[g], &out, &in);
  return in;
}

static void aux_name(int g, char *buf, size_t len) {
  snprintf(buf, len, "%s.outlier_cols", qz_linear_name(k_first[g]));
}

static float qz_li_fp16(float x) { return qz_f16_to_f32(qz_f32_to_f16(x)); }

/* ---- quantize ------------------------------------------------------------ */

typedef struct {
  li_cli cli;
  int64_t width[4];     /* input width of each group (0: not allocated) */
  unsigned char *mask[4]; /* [width[g]] calibration outlier columns of the block */
  const unsigned char *cur; /* mask of the linear being quantized */
  float *tmp;           /* [rows, in] weight-only: W with outlier columns zeroed */
  size_t c_tmp;
} li_state;

static int li_check(qz_method_opts *o) {
  li_cli c;
  qz_method_ext_get(o, &c);
  QZ_CHECK(!(qz_method_opt_given(o, "bits") && o->spec.bits != 8) &&
               !(qz_method_opt_given(o, "group") && o->spec.groupsize != -1) &&
               !o->act_order && !o->static_groups,
           QZ_ERR_USAGE, "--method llm-int8 quantizes weights to int8 per output row, "
           "symmetric (no --bits other than 8, --group other than -1, --act-order or "
           "--static-groups)");
  QZ_CHECK(c.threshold > 0 && isfinite(c.threshold), QZ_ERR_USAGE,
           "--threshold must be > 0, got %g", c.threshold);
  o->spec.bits = 8;
  o->spec.groupsize = -1;
  o->spec.sym = 1;
  return QZ_OK;
}

static unsigned li_needs(const qz_method_opts *o) {
  li_cli c;
  qz_method_ext_get(o, &c);
  return QZ_NEED_CALIB | QZ_NEED_ACT_STATS | QZ_NEED_FP_STREAM |
         (c.weight_only ? QZ_CKPT_OUTLIERS : 0u);
}

static int li_setup(const qz_method_opts *o, void **state) {
  li_state *s = NULL;
  QZ_CALL(qz_calloc(1, sizeof *s, "llm-int8 state", &s));
  qz_method_ext_get(o, &s->cli);
  *state = s;
  return QZ_OK;
}

static void li_destroy(void **state) {
  if (!state || !*state) return;
  li_state *s = *state;
  for (int g = 0; g < 4; g++) qz_free(&s->mask[g]);
  qz_free(&s->tmp);
  qz_free(state);
}

/* Weight-only: the outlier columns of this rank's rows as the sparse part
 * (fp16 values; their codes are the zero point, so Q + outlier = fp16(w)). */
static int sparse_columns(const qz_layer *L, const unsigned char *mask, qz_layer_result *res) {
  const int64_t n = L->in_features;
  int64_t nc = 0;
  for (int64_t j = 0; j < n; j++) nc += mask[j] != 0;
  size_t cap = (size_t)(nc * L->nrows) + 1;
  QZ_CALL(qz_alloc(cap, sizeof(int64_t), "outlier index", &res->outlier_idx));
  QZ_CALL(qz_alloc(cap, sizeof(float), "outlier values", &res->outlier_val));
  res->noutliers = 0;
  for (int64_t r = 0; r < L->nrows; r++)
    for (int64_t j = 0; j < n; j++)
      if (mask[j]) {
        res->outlier_idx[res->noutliers] = (L->row0 + r) * n + j;
        res->outlier_val[res->noutliers++] = qz_li_fp16(L->w[r * n + j]);
      }
  return QZ_OK;
}

static int li_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  li_state *s = state;
  const int64_t n = L->in_features;
  QZ_CALL(qz_layer_check_finite(L));
  const float *w = L->w;
  if (s->cli.weight_only && s->cur) {
    QZ_CALL(qz_grow((size_t)(L->nrows * n) + 1, sizeof(float), "llm-int8 rows", &s->tmp,
                    &s->c_tmp));
    for (int64_t r = 0; r < L->nrows; r++)
      for (int64_t j = 0; j < n; j++) s->tmp[r * n + j] = s->cur[j] ? 0.0f : L->w[r * n + j];
    w = s->tmp;
    QZ_CALL(sparse_columns(L, s->cur, res));
  }
  qz_sq_quantize_rows(L->nrows, n, w, res->codes, res->scale, res->zero, res->q);
  qz_layer_result_plain(L, -1, res);
  return QZ_OK;
}

/* Masks of the block's four group inputs (once per shape). Collective. */
static int fit_masks(li_state *S, qz_block_ctx *b) {
  int st = QZ_OK;
  for (int g = 0; g < 4 && st == QZ_OK; g++) {
    int64_t n = group_width(b->cfg, g);
    if (S->width[g] == n) continue;
    qz_free(&S->mask[g]);
    S->width[g] = 0;
    st = qz_alloc((size_t)n, 1, "outlier column mask", &S->mask[g]);
    if (st == QZ_OK) S->width[g] = n;
  }
  return qz_error_agree(b->comm, st);
}

/* Outlier columns of the fp block's group inputs over every rank's tokens
 * (f then holds the block up to OUT). Collective on b->comm. */
static int find_columns(li_state *S, qz_block_ctx *b, int64_t count[4]) {
  const float tau = (float)S->cli.threshold;
  qz_fwd *f = b->f;
  qz_fwd_block_begin(f);
  for (int g = 0; g < 4; g++) {
    qz_timer_start(QZ_PHASE_FORWARD);
    int st = qz_fwd_run(f, b->w, k_stage[g]);
    qz_timer_stop(QZ_PHASE_FORWARD);
    QZ_CALL(qz_error_agree(b->comm, st));
    int64_t n;
    const float *x = qz_fwd_stage_output(f, k_stage[g], &n);
    unsigned char *m = S->mask[g];
    memset(m, 0, (size_t)n);
    for (int64_t t = 0; t < qz_fwd_ntok(f); t++)
      for (int64_t j = 0; j < n; j++) m[j] |= fabsf(x[t * n + j]) >= tau;
    QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, m, (int)n, MPI_UNSIGNED_CHAR, MPI_MAX, b->comm));
    qz_count_allreduce(b->comm, n);
    count[g] = 0;
    for (int64_t j = 0; j < n; j++) count[g] += m[j];
  }
  qz_timer_start(QZ_PHASE_FORWARD);
  int st = qz_fwd_run(f, b->w, QZ_STAGE_OUT);
  qz_timer_stop(QZ_PHASE_FORWARD);
  QZ_CALL(qz_error_agree(b->comm, st));
  return QZ_OK;
}

/* The masks into the checkpoint (/aux, as f32 0/1) and the counts into the
 * log and the manifest stats. Collective on b->comm. */
static int record_columns(li_state *S, qz_block_ctx *b, const int64_t count[4]) {
  for (int g = 0; g < 4; g++) {
    float *v = NULL;
    int st = qz_alloc((size_t)S->width[g], sizeof(float), "outlier column mask", &v);
    QZ_CALL(qz_error_agree(b->comm, st));
    for (int64_t j = 0; j < S->width[g]; j++) v[j] = S->mask[g][j] ? 1.0f : 0.0f;
    char name[64];
    aux_name(g, name, sizeof name);
    st = b->aux(b, name, S->width[g], 1, v);
    qz_free(&v);
    QZ_CALL(st);
  }
  json_t *j = json_object();
  for (int g = 0; g < 4; g++)
    json_object_set_new(j, qz_linear_name(k_first[g]), json_integer((json_int_t)count[g]));
  b->stat(b, "llm_int8_outlier_cols", j);
  qz_info("block %d llm-int8: outlier input columns (|x| >= %g): q/k/v %lld of %lld, o %lld "
          "of %lld, gate/up %lld of %lld, down %lld of %lld", b->layer, S->cli.threshold,
          (long long)count[0], (long long)S->width[0], (long long)count[1],
          (long long)S->width[1], (long long)count[2], (long long)S->width[2],
          (long long)count[3], (long long)S->width[3]);
  return QZ_OK;
}

static int li_block(void *state, qz_block_ctx *b) {
  li_state *S = state;
  int64_t count[4];
  QZ_CALL(fit_masks(S, b));
  QZ_CALL(find_columns(S, b, count));
  QZ_CALL(b->commit(b)); /* next input: the fp block's output */
  QZ_CALL(record_columns(S, b, count));
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    S->cur = S->mask[group_of((qz_linear)l)];
    int st = b->linear(b, (qz_linear)l, NULL);
    S->cur = NULL;
    QZ_CALL(st);
  }
  return QZ_OK;
}

/* ---- evaluation: the decomposition at every linear input ---------------- */

typedef struct {
  float tau;
  int nl;
  int64_t width[4];
  unsigned char *have;  /* [nl] block quantized (else its inputs pass through) */
  unsigned char *mask;  /* [nl, sum of width] calibration outlier columns */
  int64_t off[4];       /* offset of group g inside one block's masks */
  int64_t per_block;
} li_eval;

/* Row by row: outlier columns (calibration set or |x| >= tau in this
 * token) in fp16, the rest int8 absmax per token over the non-outliers.
 * A row's result depends only on that row (np and batching do not matter). */
static void li_act(void *ctx, int layer, qz_linear lin, const float *x, int64_t nrows,
                   int64_t n, float *y) {
  const li_eval *E = ctx;
  if (layer < 0 || layer >= E->nl || !E->have[layer]) {
    memmove(y, x, (size_t)(nrows * n) * sizeof(float));
    return;
  }
  const int g = group_of(lin);
  const unsigned char *cal = E->mask + (int64_t)layer * E->per_block + E->off[g];
  for (int64_t t = 0; t < nrows; t++) {
    const float *a = x + t * n;
    float *b = y + t * n;
    float mx = 0.0f;
    for (int64_t j = 0; j < n; j++) {
      float v = fabsf(a[j]);
      if (!cal[j] && v < E->tau && v > mx) mx = v;
    }
    const float d = mx / 127.0f;
    for (int64_t j = 0; j < n; j++) {
      if (cal[j] || fabsf(a[j]) >= E->tau) b[j] = qz_li_fp16(a[j]);
      else b[j] = mx > 0.0f ? rintf(a[j] / d) * d : 0.0f;
    }
  }
}

static void li_eval_free(qz_act_hook *h) {
  if (!h || !h->ctx) return;
  li_eval *E = h->ctx;
  qz_free(&E->have);
  qz_free(&E->mask);
  qz_free(&h->ctx);
  h->fn = NULL;
}

/* Threshold and variant from the manifest options. Not collective. */
static int eval_options(qz_ckpt *ck, double *tau, int *weight_only) {
  json_t *j = json_loads(qz_ckpt_options_json(ck), 0, NULL);
  json_t *g = json_object_get(j, "llm_int8");
  json_t *t = json_object_get(g, "threshold");
  *tau = json_number_value(t);
  *weight_only = json_is_true(json_object_get(g, "weight_only"));
  int ok = json_is_number(t) && *tau > 0;
  json_decref(j);
  QZ_CHECK(ok, QZ_ERR_FORMAT, "checkpoint %s: manifest options have no llm_int8.threshold "
           "> 0", qz_ckpt_dir(ck));
  return QZ_OK;
}

/* The calibration masks of every completed block. Collective on comm. */
static int read_masks(qz_ckpt *ck, MPI_Comm comm, li_eval *E) {
  int st = QZ_OK;
  float *v = NULL;
  int64_t wmax = 1;
  for (int g = 0; g < 4; g++) wmax = E->width[g] > wmax ? E->width[g] : wmax;
  QZ_CALL(qz_error_agree(comm, qz_alloc((size_t)wmax, sizeof(float), "outlier mask", &v)));
  for (int l = 0; l < E->nl && st == QZ_OK; l++) {
    E->have[l] = (unsigned char)qz_ckpt_block_done(ck, l);
    for (int g = 0; g < 4 && E->have[l] && st == QZ_OK; g++) {
      char name[64];
      int found = 0;
      aux_name(g, name, sizeof name);
      st = qz_ckpt_read_aux(ck, l, name, E->width[g], 1, v, &found);
      if (st == QZ_OK && !found)
        st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                          "checkpoint %s: block %d has no /aux/%d/%s (the outlier columns "
                          "llm-int8 evaluation needs)", qz_ckpt_dir(ck), l, l, name);
      unsigned char *m = E->mask + (int64_t)l * E->per_block + E->off[g];
      for (int64_t j = 0; st == QZ_OK && j < E->width[g]; j++) m[j] = v[j] != 0.0f;
    }
  }
  qz_free(&v);
  return st;
}

static int li_eval_act(qz_ckpt *ck, MPI_Comm comm, const qz_model_config *cfg,
                       qz_act_hook *h) {
  double tau = 0;
  int weight_only = 0;
  *h = (qz_act_hook){0};
  QZ_CALL(qz_error_agree(comm, eval_options(ck, &tau, &weight_only)));
  if (weight_only) return QZ_OK; /* W8 + fp16 columns: activations stay f32 */
  li_eval *E = NULL;
  QZ_CALL(qz_error_agree(comm, qz_calloc(1, sizeof *E, "llm-int8 eval", &E)));
  h->ctx = E;
  E->tau = (float)tau;
  E->nl = (int)cfg->num_hidden_layers;
  for (int g = 0; g < 4; g++) {
    E->width[g] = group_width(cfg, g);
    E->off[g] = E->per_block;
    E->per_block += E->width[g];
  }
  int st = qz_calloc((size_t)E->nl + 1, 1, "quantized blocks", &E->have);
  if (st == QZ_OK)
    st = qz_calloc((size_t)(E->nl * E->per_block) + 1, 1, "outlier masks", &E->mask);
  st = qz_error_agree(comm, st);
  if (st == QZ_OK) st = read_masks(ck, comm, E);
  if (st != QZ_OK) {
    li_eval_free(h);
    return st;
  }
  h->fn = li_act;
  return QZ_OK;
}

/* ---- plan and ops table --------------------------------------------------- */

static void li_plan_linear(const qz_method_opts *o, const qz_plan_machine *mc, int64_t m,
                           int64_t n, qz_plan_linear *p) {
  *p = (qz_plan_linear){.bytes = 4.0 * (double)m * (double)n,
                        .seconds = (double)m * (double)n * 20.0 / (mc->gemm * 0.05)};
}

static void li_plan_block(const qz_method_opts *o, const qz_model_config *cfg,
                          int64_t nwin_rank, int64_t seqlen, qz_plan_block *p) {
  *p = (qz_plan_block){.bytes = 3.0 * (double)cfg->hidden_size +
                                (double)cfg->intermediate_size};
}

#define LI_FIELD(f) .ext = 1, .offset = offsetof(li_cli, f)
static const qz_opt li_rows[] = {
    {.name = "threshold", .type = QZ_OPT_REAL, LI_FIELD(threshold), .def = 6.0, .lo = 0,
     .hi = 1e30, .json = "threshold", .metavar = "T",
     .help = "llm-int8: input columns with |x| >= T in any calibration or evaluation token "
             "stay in fp16 (default 6.0)"},
    {.name = "weight-only", .type = QZ_OPT_FLAG, LI_FIELD(weight_only), .def = 0,
     .json = "weight_only",
     .help = "llm-int8: W8 with the calibration outlier columns of W in fp16 (sparse "
             "part); activations unquantized"},
};

const qz_method_ops qz_method_llm_int8 = {
    .name = "llm-int8",
    .summary = "LLM.int8() (Dettmers et al.): int8 with fp16 outlier columns",
    .options = li_rows,
    .noptions = (int)(sizeof li_rows / sizeof li_rows[0]),
    .json_group = "llm_int8",
    .check = li_check,
    .needs = li_needs,
    .setup = li_setup,
    .quantize_layer = li_layer,
    .destroy = li_destroy,
    .quantize_block = li_block,
    .plan_linear = li_plan_linear,
    .plan_block = li_plan_block,
    .eval_act = li_eval_act,
    .eval_act_free = li_eval_free};
