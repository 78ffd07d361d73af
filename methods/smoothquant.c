/* SmoothQuant W8A8: smoothing factors, folding and the int8 weight
 * quantizer (mit-han-lab/smoothquant smooth.py + fake_quant.py semantics). */
#include "mpiquant/smoothquant.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/gptq.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/timing.h"

float qz_sq_powf(float x, double e) {
  if (e == 0.0) return 1.0f;
  if (e == 1.0) return x;
  if (e == 0.5) return sqrtf(x);
  return powf(x, (float)e);
}

void qz_sq_smooth_factors(int64_t n, const float *a, int nw,
                          const float *const *ws, const int64_t *rows,
                          double alpha, float *s) {
  for (int64_t j = 0; j < n; j++) {
    float wm = 0.0f;
    for (int k = 0; k < nw; k++)
      for (int64_t i = 0; i < rows[k]; i++) {
        float v = fabsf(ws[k][i * n + j]);
        wm = v > wm ? v : wm;
      }
    wm = wm < 1e-5f ? 1e-5f : wm;
    float v = qz_sq_powf(a[j], alpha) / qz_sq_powf(wm, 1.0 - alpha);
    s[j] = v < 1e-5f ? 1e-5f : v;
  }
}

void qz_sq_fold(int64_t n, const float *s, float *norm, int nw, float *const *ws,
                const int64_t *rows) {
  for (int64_t j = 0; j < n; j++) norm[j] /= s[j];
  for (int k = 0; k < nw; k++)
    for (int64_t i = 0; i < rows[k]; i++)
      for (int64_t j = 0; j < n; j++) ws[k][i * n + j] *= s[j];
}

void qz_sq_quantize_rows(int64_t rows, int64_t in, const float *w,
                         uint8_t *codes, float *scale, float *zero, float *q) {
  for (int64_t r = 0; r < rows; r++) {
    const float *wr = w + r * in;
    float mx = 0.0f;
    for (int64_t j = 0; j < in; j++) mx = fabsf(wr[j]) > mx ? fabsf(wr[j]) : mx;
    float d = (mx < 1e-5f ? 1e-5f : mx) / 127.0f;
    scale[r] = d;
    zero[r] = 128.0f;
    for (int64_t j = 0; j < in; j++) {
      float c = rintf(wr[j] / d); /* |c| <= 127 */
      codes[r * in + j] = (uint8_t)(c + 128.0f);
      if (q) q[r * in + j] = c * d;
    }
  }
}

typedef struct {
  double alpha;   /* migration strength (0 with --no-smooth) */
  int smooth;     /* fold smoothing factors into the RMSNorms */
  int then_gptq;  /* GPTQ (true-sequential) on the smoothed weights */
} sq_cli;

typedef struct {
  sq_cli cli;
  qz_method_opts mo; /* --smooth-then-gptq: GPTQ's damping, block size */
  qz_gptq_ws *gptq;
  int64_t H;    /* hidden size the buffers were made for */
  float *a;     /* [2, H] activation maxima of the q/k/v and gate/up inputs */
  float *s;     /* [H] smoothing factors */
} sq_state;

/* W8A8: the weight quantizer is fixed, so the common options are too. */
static int sq_check(qz_method_opts *o) {
  sq_cli c;
  qz_method_ext_get(o, &c);
  QZ_CHECK(!(qz_method_opt_given(o, "alpha") && qz_method_opt_given(o, "no-smooth")),
           QZ_ERR_USAGE, "give --alpha or --no-smooth, not both");
  QZ_CHECK(!(qz_method_opt_given(o, "bits") && o->spec.bits != 8) &&
               !(qz_method_opt_given(o, "group") && o->spec.groupsize != -1) &&
               !o->act_order && !o->static_groups,
           QZ_ERR_USAGE, "--method smoothquant is W8A8: weights int8 per "
           "output channel, symmetric (no --bits other than 8, --group other than "
           "-1, --act-order or --static-groups)");
  o->spec.bits = 8;
  o->spec.groupsize = -1;
  o->spec.sym = 1;
  if (!c.smooth) c.alpha = 0.0; /* recorded as such */
  qz_method_ext_set(o, &c);
  return QZ_OK;
}

/* statistics and smoothing on the fp block; its fp output is the next
 * block's input, unless GPTQ follows (then calibration is sequential, as
 * for GPTQ alone) */
static unsigned sq_needs(const qz_method_opts *o) {
  sq_cli c;
  qz_method_ext_get(o, &c);
  return QZ_NEED_CALIB | QZ_NEED_ACT_STATS | QZ_CKPT_NORMS |
         (c.then_gptq ? QZ_NEED_HESSIAN : QZ_NEED_FP_STREAM);
}

static const char *sq_label(const qz_method_opts *o) {
  sq_cli c;
  qz_method_ext_get(o, &c);
  return c.then_gptq ? "smoothquant+gptq" : "smoothquant";
}

static int sq_setup(const qz_method_opts *o, void **state) {
  QZ_CHECK(o->spec.bits == 8 && o->spec.groupsize == -1 && o->spec.sym, QZ_ERR_ARG,
           "smoothquant quantizes weights per output channel, symmetric, 8 bits "
           "(got %d bits, group %lld, %s)", o->spec.bits, (long long)o->spec.groupsize,
           o->spec.sym ? "sym" : "asym");
  sq_state *s = NULL;
  QZ_CALL(qz_calloc(1, sizeof *s, "SmoothQuant state", &s));
  qz_method_ext_get(o, &s->cli);
  s->mo = *o;
  *state = s;
  if (s->cli.then_gptq) QZ_CALL(qz_gptq_ws_create(&s->gptq));
  return QZ_OK;
}

/* int8 per channel: round to nearest, or GPTQ (8-bit channel symmetric,
 * the same grid) with --smooth-then-gptq */
static int sq_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  sq_state *s = state;
  if (s->cli.then_gptq) return qz_gptq_quantize_ws(s->gptq, &s->mo, L, res);
  QZ_CALL(qz_layer_check_finite(L));
  qz_sq_quantize_rows(L->nrows, L->in_features, L->w, res->codes, res->scale, res->zero,
                      res->q);
  qz_layer_result_plain(L, -1, res); /* per output channel */
  return QZ_OK;
}

static void sq_destroy(void **state) {
  if (!state || !*state) return;
  sq_state *s = *state;
  qz_gptq_ws_destroy(&s->gptq);
  qz_free(&s->a);
  qz_free(&s->s);
  qz_free(state);
}

/* Per-channel max |x| of the q/k/v and gate/up inputs over every rank's
 * tokens of the fp block, which f then holds up to OUT. Collective. */
static int act_maxima(sq_state *S, qz_block_ctx *b) {
  const int64_t H = S->H;
  qz_fwd *f = b->f;
  int64_t nc;
  qz_timer_start(QZ_PHASE_FORWARD);
  qz_fwd_block_begin(f);
  int st = qz_fwd_run(f, b->w, QZ_STAGE_OUT);
  qz_timer_stop(QZ_PHASE_FORWARD);
  QZ_CALL(qz_error_agree(b->comm, st));
  memset(S->a, 0, sizeof(float) * (size_t)(2 * H));
  for (int k = 0; k < 2; k++) {
    const float *x = qz_fwd_stage_output(f, k ? QZ_STAGE_GATEUP_IN : QZ_STAGE_QKV_IN, &nc);
    float *a = S->a + k * H;
    for (int64_t t = 0; t < qz_fwd_ntok(f); t++)
      for (int64_t j = 0; j < H; j++) {
        float v = fabsf(x[t * H + j]);
        a[j] = v > a[j] ? v : a[j];
      }
  }
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, S->a, (int)(2 * H), MPI_FLOAT, MPI_MAX, b->comm));
  qz_count_allreduce(b->comm, 8 * H);
  return QZ_OK;
}

/* Fold the factors of the q/k/v and the gate/up inputs into the RMSNorms
 * and the weights (the reference's smooth_lm). Not collective. */
static void smooth_block(sq_state *S, qz_block_ctx *b) {
  qz_block_weights *w = b->w;
  const int64_t H = S->H, qd = w->nq * w->hd, kvd = w->nkv * w->hd;
  float *qkv[3] = {w->w[QZ_LIN_Q], w->w[QZ_LIN_K], w->w[QZ_LIN_V]};
  int64_t qkv_rows[3] = {qd, kvd, kvd};
  float *gu[2] = {w->w[QZ_LIN_GATE], w->w[QZ_LIN_UP]};
  int64_t gu_rows[2] = {w->inter, w->inter};
  const float *a = S->a;
  float smax[2], amax[2] = {0.0f, 0.0f};
  for (int64_t j = 0; j < H; j++) {
    amax[0] = a[j] > amax[0] ? a[j] : amax[0];
    amax[1] = a[H + j] > amax[1] ? a[H + j] : amax[1];
  }
  for (int k = 0; k < 2; k++) {
    float *const *ws = k ? gu : qkv;
    const int64_t *rows = k ? gu_rows : qkv_rows;
    int nw = k ? 2 : 3;
    qz_sq_smooth_factors(H, a + k * H, nw, (const float *const *)ws, rows, S->cli.alpha, S->s);
    qz_sq_fold(H, S->s, k ? w->ffn_norm : w->attn_norm, nw, ws, rows);
    smax[k] = 0.0f;
    for (int64_t j = 0; j < H; j++) smax[k] = S->s[j] > smax[k] ? S->s[j] : smax[k];
  }
  qz_info("block %d smoothquant alpha %.3g: max act |x| qkv %.4g gate/up %.4g, "
          "max s %.4g / %.4g", b->layer, S->cli.alpha, amax[0], amax[1], smax[0], smax[1]);
}

/* Activation maxima from the fp, unsmoothed block (its output is the next
 * block's input), smoothing folded into the RMSNorms, all 7 linears int8.
 * Collective on b->comm. */
static int sq_block(void *state, qz_block_ctx *b) {
  sq_state *S = state;
  if (S->H != b->w->hidden) { /* once per shape */
    qz_free(&S->a);
    qz_free(&S->s);
    S->H = b->w->hidden;
    int st = qz_alloc((size_t)(2 * S->H), 4, "activation maxima", &S->a);
    if (st == QZ_OK) st = qz_alloc((size_t)S->H, 4, "smoothing factors", &S->s);
    if (st != QZ_OK) S->H = 0;
    QZ_CALL(qz_error_agree(b->comm, st));
  }
  QZ_CALL(act_maxima(S, b));
  if (S->cli.then_gptq) { /* Hessians of the smoothed inputs, group by group */
    if (S->cli.smooth) smooth_block(S, b);
    return b->sequential(b);
  }
  QZ_CALL(b->commit(b)); /* next input: the fp block's output */
  if (S->cli.smooth) smooth_block(S, b);
  for (int l = 0; l < QZ_LIN_COUNT; l++) QZ_CALL(b->linear(b, (qz_linear)l, NULL));
  return QZ_OK;
}

static void sq_plan_linear(const qz_method_opts *o, const qz_plan_machine *mc, int64_t m,
                           int64_t n, qz_plan_linear *p) {
  sq_cli c;
  qz_method_ext_get(o, &c);
  if (c.then_gptq) {
    qz_gptq_plan(o, mc, m, n, p);
    return;
  }
  *p = (qz_plan_linear){.seconds = (double)m * (double)n * 20.0 / (mc->gemm * 0.05)};
}

static void sq_plan_block(const qz_method_opts *o, const qz_model_config *cfg,
                          int64_t nwin_rank, int64_t seqlen, qz_plan_block *p) {
  *p = (qz_plan_block){.bytes = 3.0 * 4.0 * (double)cfg->hidden_size};
}

#define SQ_FIELD(f) .ext = 1, .offset = offsetof(sq_cli, f)
static const qz_opt sq_rows[] = {
    {.name = "alpha", .type = QZ_OPT_REAL, SQ_FIELD(alpha), .def = 0.5, .lo = 0, .hi = 1,
     .json = "alpha", .metavar = "A", .help = "SmoothQuant migration strength in [0, 1] (0.5)"},
    {.name = "no-smooth", .type = QZ_OPT_FLAG, SQ_FIELD(smooth), .def = 1, .json = "smooth",
     .help = "SmoothQuant: W8A8 without the smoothing step (smoothquant is always w8 per "
             "channel sym, and records int8 per-token activations for eval)"},
    {.name = "smooth-then-gptq", .type = QZ_OPT_FLAG, SQ_FIELD(then_gptq), .def = 0,
     .json = "sq_then_gptq",
     .help = "SmoothQuant's smoothing, then GPTQ (int8 per channel, true-sequential) on "
             "the smoothed weights: W8A8-INT with GPTQ weights"},
    {.type = QZ_OPT_CONST, .def = 8, .json = "act_bits"},
};
_Static_assert(sizeof(sq_cli) <= QZ_METHOD_EXT_BYTES, "SmoothQuant options exceed the ext bytes");

static const char *const sq_exports[] = {"compressed-tensors", NULL};
static const char *const sq_labels[] = {"smoothquant", "smoothquant+gptq", NULL};

const qz_method_ops qz_method_smoothquant = {
    .name = "smoothquant",
    .summary = "SmoothQuant W8A8 (Xiao et al.)",
    .options = sq_rows,
    .noptions = (int)(sizeof sq_rows / sizeof sq_rows[0]),
    .exports = sq_exports,
    .labels = sq_labels,
    .check = sq_check,
    .needs = sq_needs,
    .label = sq_label,
    .setup = sq_setup,
    .quantize_layer = sq_layer,
    .destroy = sq_destroy,
    .quantize_block = sq_block,
    .plan_linear = sq_plan_linear,
    .plan_block = sq_plan_block};
