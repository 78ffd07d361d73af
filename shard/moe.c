/* Mixture-of-experts FFN: routing, routed experts, shared expert. */
#include "mpiquant/moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fwd_kernels.h"
#include "mpiquant/error.h"
#include "mpiquant/mem.h"

struct qz_moe_ws {
  int64_t rows, H, inter; /* inter = max(I_e, I_s) */
  float *xe;    /* [rows, H] gathered rows of one expert */
  float *ye;    /* [rows, H] its output */
  float *g, *u; /* [rows, inter] */
  int32_t *idx; /* [rows, k] */
  float *wt;    /* [rows, k] */
  int64_t *sel; /* [rows] (row * k + slot) of the rows routed to one expert */
  int64_t k;
  void *mem;
  size_t bytes;
};

void qz_moe_route(const qz_block_weights *w, const float *x, int64_t T, int32_t *idx,
                  float *wt) {
  const int64_t E = w->nexp, H = w->hidden, k = w->topk;
  double p[E > 0 ? E : 1];
  for (int64_t t = 0; t < T; t++) {
    const float *xr = x + t * H;
    double mx = -INFINITY;
    for (int64_t e = 0; e < E; e++) {
      const float *r = w->router + e * H;
      double s = 0.0;
      for (int64_t i = 0; i < H; i++) s += (double)xr[i] * (double)r[i];
      p[e] = s;
      mx = s > mx ? s : mx;
    }
    double sum = 0.0;
    for (int64_t e = 0; e < E; e++) sum += (p[e] = exp(p[e] - mx));
    for (int64_t e = 0; e < E; e++) p[e] /= sum;
    /* top-k by repeated selection: strict > keeps the lower index on ties */
    int32_t *ix = idx + t * k;
    double sel = 0.0;
    for (int64_t j = 0; j < k; j++) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; e++) {
        int taken = 0;
        for (int64_t q = 0; q < j; q++) taken |= ix[q] == (int32_t)e;
        if (!taken && (best < 0 || p[e] > p[best])) best = e;
      }
      ix[j] = (int32_t)best;
      sel += p[best];
    }
    for (int64_t j = 0; j < k; j++)
      wt[t * k + j] = (float)(w->norm_topk ? p[ix[j]] / sel : p[ix[j]]);
  }
}

size_t qz_moe_ws_bytes(const qz_model_config *cfg, int64_t rows) {
  int64_t inter = cfg->moe_intermediate_size;
  if (cfg->moe == QZ_MOE_QWEN2 && cfg->shared_expert_intermediate_size > inter)
    inter = cfg->shared_expert_intermediate_size;
  int64_t k = cfg->num_experts_per_tok;
  return (size_t)rows * (sizeof(float) * (size_t)(2 * cfg->hidden_size + 2 * inter) +
                         (size_t)k * (sizeof(int32_t) + sizeof(float)) + sizeof(int64_t)) +
         8 * 64;
}

int qz_moe_ws_create(const qz_model_config *cfg, int64_t rows, qz_moe_ws **out) {
  *out = NULL;
  QZ_CHECK(cfg->moe != QZ_MOE_NONE && cfg->num_experts > 0 && rows > 0, QZ_ERR_ARG,
           "MoE workspace: config has no experts or rows %lld", (long long)rows);
  qz_moe_ws *ws = NULL;
  QZ_CALL(qz_calloc(1, sizeof *ws, "MoE workspace", &ws));
  ws->rows = rows;
  ws->H = cfg->hidden_size;
  ws->k = cfg->num_experts_per_tok;
  ws->inter = cfg->moe_intermediate_size;
  if (cfg->moe == QZ_MOE_QWEN2 && cfg->shared_expert_intermediate_size > ws->inter)
    ws->inter = cfg->shared_expert_intermediate_size;
  ws->bytes = qz_moe_ws_bytes(cfg, rows);
  int st = qz_alloc_big(ws->bytes, "MoE workspace", &ws->mem);
  if (st != QZ_OK) {
    qz_free(&ws);
    QZ_CALL(st);
  }
  char *p = ws->mem;
#define TAKE(ptr, n, type)                                   \
  do {                                                       \
    (ptr) = (type *)(void *)p;                               \
    p += ((size_t)(n) * sizeof(type) + 63) / 64 * 64;        \
  } while (0)
  TAKE(ws->xe, rows * ws->H, float);
  TAKE(ws->ye, rows * ws->H, float);
  TAKE(ws->g, rows * ws->inter, float);
  TAKE(ws->u, rows * ws->inter, float);
  TAKE(ws->wt, rows * ws->k, float);
  TAKE(ws->idx, rows * ws->k, int32_t);
  TAKE(ws->sel, rows, int64_t);
#undef TAKE
  *out = ws;
  return QZ_OK;
}

void qz_moe_ws_destroy(qz_moe_ws **pws) {
  if (!pws || !*pws) return;
  qz_free_big(&(*pws)->mem, (*pws)->bytes);
  qz_free(pws);
}

/* ye [n, H] = down(silu(gate(xe)) * up(xe)) of one expert (I = its width). */
static void expert_mlp(qz_moe_ws *ws, const float *wg, const float *wu, const float *wd,
                       int64_t I, const float *xe, int64_t n) {
  const int64_t H = ws->H;
  qz_fwdk_linear(ws->g, xe, wg, NULL, n, n, I, H);
  qz_fwdk_linear(ws->u, xe, wu, NULL, n, n, I, H);
  qz_fwdk_swiglu(ws->g, ws->u, n * I);
  qz_fwdk_linear(ws->ye, ws->g, wd, NULL, n, n, H, I);
}

void qz_moe_expert_rows(const float *wg, const float *wu, const float *wd, int64_t I,
                        int64_t H, const float *x, int64_t n, const int64_t *ends,
                        int64_t nch, float *g, float *act, float *y) {
  int64_t a = 0;
  for (int64_t c = 0; c <= nch && a < n; c++) {
    int64_t b = c < nch ? (ends[c] < n ? ends[c] : n) : n;
    int64_t m = b - a;
    if (m <= 0) continue;
    qz_fwdk_linear(g + a * I, x + a * H, wg, NULL, m, m, I, H);
    qz_fwdk_linear(act + a * I, x + a * H, wu, NULL, m, m, I, H);
    qz_fwdk_swiglu(g + a * I, act + a * I, m * I);
    memcpy(act + a * I, g + a * I, sizeof(float) * (size_t)(m * I));
    if (y && wd) qz_fwdk_linear(y + a * H, act + a * I, wd, NULL, m, m, H, I);
    a = b;
  }
}

/* One chunk of n rows. */
static void ffn_chunk(qz_moe_ws *ws, const qz_block_weights *w, const float *x, int64_t n,
                      float *out) {
  const int64_t H = w->hidden, E = w->nexp, k = w->topk, Ie = w->einter;
  memset(out, 0, sizeof(float) * (size_t)(n * H));
  qz_moe_route(w, x, n, ws->idx, ws->wt);
  for (int64_t e = 0; e < E; e++) {
    int64_t m = 0;
    for (int64_t t = 0; t < n; t++)
      for (int64_t j = 0; j < k; j++)
        if (ws->idx[t * k + j] == (int32_t)e) ws->sel[m++] = t * k + j;
    if (m == 0) continue;
    for (int64_t r = 0; r < m; r++)
      memcpy(ws->xe + r * H, x + (ws->sel[r] / k) * H, sizeof(float) * (size_t)H);
    expert_mlp(ws, w->ew[0] + e * Ie * H, w->ew[1] + e * Ie * H, w->ew[2] + e * H * Ie, Ie,
               ws->xe, m);
    for (int64_t r = 0; r < m; r++) {
      float c = ws->wt[ws->sel[r]];
      float *o = out + (ws->sel[r] / k) * H;
      const float *y = ws->ye + r * H;
      for (int64_t i = 0; i < H; i++) o[i] += c * y[i];
    }
  }
  if (w->sinter > 0) { /* Qwen2-MoE shared expert, sigmoid-gated per token */
    expert_mlp(ws, w->sw[0], w->sw[1], w->sw[2], w->sinter, x, n);
    for (int64_t t = 0; t < n; t++) {
      double s = 0.0;
      for (int64_t i = 0; i < H; i++) s += (double)x[t * H + i] * (double)w->shared_gate[i];
      float c = (float)(1.0 / (1.0 + exp(-s)));
      for (int64_t i = 0; i < H; i++) out[t * H + i] += c * ws->ye[t * H + i];
    }
  }
}

int qz_moe_ffn(qz_moe_ws *ws, const qz_block_weights *w, const float *x, int64_t T,
               int64_t rows, float *out) {
  QZ_CHECK(w->moe && w->nexp > 0 && w->router && w->ew[0], QZ_ERR_ARG,
           "MoE FFN called on a block without experts");
  QZ_CHECK(rows > 0 && rows <= ws->rows && w->hidden == ws->H && w->topk == ws->k &&
               w->einter <= ws->inter && w->sinter <= ws->inter,
           QZ_ERR_ARG, "MoE workspace for %lld rows does not fit chunks of %lld rows",
           (long long)ws->rows, (long long)rows);
  for (int64_t r0 = 0; r0 < T; r0 += rows) {
    int64_t n = T - r0 < rows ? T - r0 : rows;
    ffn_chunk(ws, w, x + r0 * w->hidden, n, out + r0 * w->hidden);
  }
  return QZ_OK;
}
