/* testclip: a test-only method (hidden from --help) that shows a method is
 * one file and one registry line. Round-to-nearest of each row clipped to
 * --clip times its largest |w|: with --clip 1 it is exactly RTN, which the
 * tests use to check it end to end through quantize, layer, sweep, plan and
 * export without any other file knowing its name. */
#include <math.h>
#include <stddef.h>

#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "mpiquant/method.h"

typedef struct {
  double clip; /* share of max |w| of the row kept */
} tc_cli;

typedef struct {
  qz_method_opts mo;
  tc_cli cli;
  float *wc;      /* [cap] clipped rows, reused from linear to linear */
  int64_t cap;
} tc_state;

static int tc_setup(const qz_method_opts *o, void **state) {
  QZ_CALL(qz_quant_spec_check(&o->spec));
  tc_state *s = NULL;
  QZ_CALL(qz_calloc(1, sizeof *s, "testclip state", &s));
  s->mo = *o;
  qz_method_ext_get(o, &s->cli);
  *state = s;
  return QZ_OK;
}

static int tc_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  tc_state *s = state;
  const int64_t n = L->in_features, mn = L->nrows * n;
  QZ_CALL(qz_layer_check_finite(L));
  if (mn > s->cap) {
    qz_free(&s->wc);
    s->cap = 0;
    QZ_CALL(qz_alloc((size_t)mn, sizeof(float), "clipped rows", &s->wc));
    s->cap = mn;
  }
  for (int64_t r = 0; r < L->nrows; r++) {
    const float *w = L->w + r * n;
    float m = 0.0f;
    for (int64_t j = 0; j < n; j++) m = fabsf(w[j]) > m ? fabsf(w[j]) : m;
    float c = s->cli.clip == 1.0 ? m : (float)(s->cli.clip * (double)m);
    for (int64_t j = 0; j < n; j++)
      s->wc[r * n + j] = w[j] < -c ? -c : (w[j] > c ? c : w[j]);
  }
  QZ_CALL(qz_rtn_quantize(&s->mo.spec, L->nrows, n, s->wc, res->codes, res->q, res->scale,
                          res->zero, NULL));
  qz_layer_result_plain(L, (int)s->mo.spec.groupsize, res);
  return QZ_OK;
}

static void tc_destroy(void **state) {
  if (!state || !*state) return;
  tc_state *s = *state;
  qz_free(&s->wc);
  qz_free(state);
}

static void tc_plan(const qz_method_opts *o, const qz_plan_machine *mc, int64_t m, int64_t n,
                    qz_plan_linear *p) {
  *p = (qz_plan_linear){.bytes = 4.0 * (double)m * (double)n,
                        .seconds = (double)m * (double)n * 30.0 / (mc->gemm * 0.05)};
}

static const qz_opt tc_rows[] = {
    {.name = "clip", .type = QZ_OPT_REAL, .ext = 1, .offset = offsetof(tc_cli, clip), .def = 1,
     .lo = 0.01, .hi = 1, .json = "clip", .metavar = "F",
     .help = "testclip: keep |w| <= F * max |w| of the row (default 1 = RTN)"},
};
_Static_assert(sizeof(tc_cli) <= QZ_METHOD_EXT_BYTES, "testclip options exceed the ext bytes");

static const char *const tc_exports[] = {"gptq", NULL};

const qz_method_ops qz_method_testclip = {
    .name = "testclip",
    .summary = "test-only: RTN of rows clipped to a share of their max",
    .flags = QZ_METHOD_HIDDEN,
    .options = tc_rows,
    .noptions = (int)(sizeof tc_rows / sizeof tc_rows[0]),
    .json_group = "testclip",
    .uses = QZ_USES_BITS | QZ_USES_GROUP | QZ_USES_SYM,
    .exports = tc_exports,
    .setup = tc_setup,
    .quantize_layer = tc_layer,
    .destroy = tc_destroy,
    .plan_linear = tc_plan};
