/* mpiquant quantize: a mixture-of-experts block (Mixtral, Qwen2-MoE,
 * Qwen3-MoE).  See docs/moe.md.
 *
 * The attention groups run as in a dense block.  Then every rank routes
 * its own calibration tokens (the block's FFN input after the quantized
 * attention) and the experts are quantized one at a time, all ranks
 * together: expert e's weights are read (each byte once over the ranks) and
 * assembled in f32 on every rank -- one expert, never the block's E
 * experts; each rank adds the rows of its tokens routed to e to the
 * distributed Hessian (qz_hessian_accumulate, one chunk per calibration
 * window so the sums are the same bits at any rank count) and the existing
 * exact reduction sums them over the ranks: expert e's Hessian is built
 * from exactly the tokens routed to it, over all ranks, without moving
 * hidden states between ranks.  Rows of the weight are split over the
 * ranks for GPTQ as for any linear.  The expert's quantized output on its
 * routed tokens is added to the block output right away (so the block's
 * next input uses the quantized experts), then the expert is dropped.
 *
 * Experts routed fewer than --min-expert-tokens tokens over all ranks get
 * --expert-fallback: route-all (Hessians from every token, as if the router
 * had sent all of them to this expert: GPTQModel's routing override),
 * pooled (its routed tokens plus every token), rtn (round to nearest).
 * A rank with no token for an expert adds no rows but takes part in every
 * collective, so nothing waits on it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/moe.h"
#include "mpiquant/timing.h"
#include "qblock.h"
#include "quantize.h"

struct qz_moe_run {
  int64_t T, nw, I; /* local tokens, local windows, max(I_e, I_s) */
  float *eg, *eu, *ed; /* one expert [I, H], [I, H], [H, I] */
  float *xh;           /* [2T, H] Hessian rows (pooled: routed + all) */
  float *ah, *gs;      /* [2T, I] their activations, scratch */
  float *xo, *ao, *yo; /* [T, H], [T, I], [T, H] routed rows, activations, output */
  float *acc;          /* [T, H] FFN output */
  float *wt;           /* [T, k] */
  int32_t *idx;        /* [T, k] */
  int64_t *sel;        /* [T] t * k + slot of the rows routed to one expert */
  int64_t *ends_o, *ends_h; /* [nw], [2 nw] chunk ends (one per window) */
  int64_t *chunk;      /* [2 nw] global index of each chunk (method hooks) */
  int64_t *cnt;        /* [E] routed tokens per expert, all ranks */
  qz_method_opts rtn_mo;
  void *rtn_state;
  void *mem;
  size_t bytes;
};

static void scratch_free(struct qz_moe_run **pm);

void qz_quantize_moe_free(qz_qrun *r) {
  struct qz_moe_run *m = r->moe;
  if (!m) return;
  if (m->rtn_state) m->rtn_mo.ops->destroy(&m->rtn_state);
  scratch_free(&r->moe);
}

static void scratch_free(struct qz_moe_run **pm) {
  if (!*pm) return;
  qz_free_big(&(*pm)->mem, (*pm)->bytes);
  qz_free(pm);
}

/* Scratch for T local tokens in nw windows of cfg's MoE blocks. Not
 * collective. */
static int scratch_alloc(const qz_model_config *c, int64_t T, int64_t nw,
                         struct qz_moe_run **out) {
  const int64_t H = c->hidden_size, k = c->num_experts_per_tok, E = c->num_experts;
  int64_t I = c->moe_intermediate_size;
  if (c->shared_expert_intermediate_size > I) I = c->shared_expert_intermediate_size;
  struct qz_moe_run *m = NULL;
  int st = qz_calloc(1, sizeof *m, "MoE quantize state", &m);
  if (st == QZ_OK) {
    m->T = T;
    m->nw = nw;
    m->I = I;
    const int64_t T1 = T > 0 ? T : 1;
    size_t sz[] = {(size_t)(I * H) * 4, (size_t)(I * H) * 4, (size_t)(I * H) * 4,
                   (size_t)(2 * T1 * H) * 4, (size_t)(2 * T1 * I) * 4, (size_t)(2 * T1 * I) * 4,
                   (size_t)(T1 * H) * 4, (size_t)(T1 * I) * 4, (size_t)(T1 * H) * 4,
                   (size_t)(T1 * H) * 4, (size_t)(T1 * k) * 4, (size_t)(T1 * k) * 4,
                   (size_t)T1 * 8, (size_t)(nw + 1) * 8, (size_t)(2 * nw + 2) * 8,
                   (size_t)E * 8, (size_t)(2 * nw + 2) * 8};
    void **dst[] = {(void **)&m->eg, (void **)&m->eu, (void **)&m->ed, (void **)&m->xh,
                    (void **)&m->ah, (void **)&m->gs, (void **)&m->xo, (void **)&m->ao,
                    (void **)&m->yo, (void **)&m->acc, (void **)&m->wt, (void **)&m->idx,
                    (void **)&m->sel, (void **)&m->ends_o, (void **)&m->ends_h,
                    (void **)&m->cnt, (void **)&m->chunk};
    const int n = (int)(sizeof sz / sizeof *sz);
    for (int i = 0; i < n; i++) m->bytes += (sz[i] + 63) / 64 * 64;
    st = qz_alloc_big(m->bytes, "MoE quantize scratch", &m->mem);
    char *p = m->mem;
    for (int i = 0; st == QZ_OK && i < n; i++) {
      *dst[i] = p;
      p += (sz[i] + 63) / 64 * 64;
    }
  }
  if (st != QZ_OK) scratch_free(&m);
  *out = m;
  return st;
}

/* Scratch for this run's shapes, allocated once. Collective (agreement). */
static int moe_fit(qz_qrun *r, int64_t T, int64_t nw) {
  if (r->moe) return QZ_OK;
  struct qz_moe_run *m = NULL;
  int st = scratch_alloc(r->cfg, T, nw, &m);
  if (st == QZ_OK && r->o->expert_fallback == QZ_EXPERT_FALLBACK_RTN &&
      ((r->needs & QZ_NEED_HESSIAN) || r->o->mo.ops->prepare_expert)) {
    const qz_method_ops *rtn = qz_method_find("rtn");
    st = rtn ? QZ_OK : qz_error_set(QZ_ERR_INTERNAL, __FILE__, __LINE__, __func__,
                                    "no rtn method registered");
    if (st == QZ_OK) {
      m->rtn_mo = qz_method_opts_for(rtn);
      m->rtn_mo.spec = r->o->mo.spec;
      st = rtn->setup(&m->rtn_mo, &m->rtn_state);
    }
  }
  r->moe = m;
  if (st != QZ_OK && m) qz_quantize_moe_free(r);
  return qz_error_agree(r->ctx->comm, st);
}

/* The Hessian of rows x [n, d] (chunks at ends[0..nends)) over all ranks. */
static int rows_hessian(qz_qrun *r, int64_t d, const float *x, int64_t n,
                        const int64_t *ends, int64_t nends, int64_t nwin, qz_hessian **H) {
  QZ_CALL(qz_quantize_hessian_for(&r->hc, r->grid, d, H));
  qz_timer_start(QZ_PHASE_HESSIAN);
  qz_hessian_set_chunk_ends(*H, ends, nends);
  int st = qz_hessian_accumulate(*H, x, n);
  qz_hessian_set_chunk_ends(*H, NULL, 0);
  qz_hessian_count_sequences(*H, nwin);
  qz_timer_stop(QZ_PHASE_HESSIAN);
  QZ_CALL(st);
  QZ_CALL(qz_hessian_reduce(*H));
  return QZ_OK;
}

/* Quantize the three linears of one expert (e = -1: shared) held in
 * eg/eu/ed [I, H], [I, H], [H, I], with Hessians from rows xh [nh, H]
 * (chunk ends ends[0..nends)) when `hess`; fallback: RTN instead. */
static int quantize_expert(qz_qrun *r, int layer, int e, int64_t I, float *eg, float *eu,
                           float *ed, int hess, int rtn, const float *xh, int64_t nh,
                           const int64_t *ends, int64_t nends) {
  struct qz_moe_run *m = r->moe;
  const qz_model_config *c = r->cfg;
  const int64_t H = c->hidden_size;
  const qz_method_opts *mo = rtn ? &m->rtn_mo : NULL;
  void *ms = rtn ? m->rtn_state : NULL;
  char mod[3][160];
  for (int k = 0; k < 3; k++) qz_expert_module(mod[k], sizeof mod[k], c, layer, e, k);
  qz_hessian *Hx = NULL;
  if (hess) QZ_CALL(rows_hessian(r, H, xh, nh, ends, nends, m->nw, &Hx));
  QZ_CALL(qz_quantize_module(r, layer, mod[0], I, H, eg, Hx, mo, ms));
  QZ_CALL(qz_quantize_module(r, layer, mod[1], I, H, eu, Hx, mo, ms));
  if (hess) { /* down's input: the activations with the quantized gate/up */
    qz_timer_start(QZ_PHASE_FORWARD);
    qz_moe_expert_rows(eg, eu, NULL, I, H, xh, nh, ends, nends, m->gs, m->ah, NULL);
    qz_timer_stop(QZ_PHASE_FORWARD);
    QZ_CALL(rows_hessian(r, I, m->ah, nh, ends, nends, m->nw, &Hx));
  }
  QZ_CALL(qz_quantize_module(r, layer, mod[2], H, I, ed, hess ? Hx : NULL, mo, ms));
  return QZ_OK;
}

/* The rows of x [T, H] routed to expert e (top-k slots in m->idx), window
 * by window: their slot indices into m->sel, the rows into m->xo, the end
 * of each window's rows into m->ends_o; returns their count. */
static int64_t gather_routed(struct qz_moe_run *m, const float *x, int64_t T, int64_t L,
                             int64_t k, int64_t H, int64_t e) {
  int64_t n = 0;
  for (int64_t wi = 0; wi < m->nw; wi++) {
    for (int64_t t = wi * L; t < (wi + 1) * L && t < T; t++)
      for (int64_t j = 0; j < k; j++)
        if (m->idx[t * k + j] == (int32_t)e) m->sel[n++] = t * k + j;
    m->ends_o[wi] = n;
  }
  for (int64_t i = 0; i < n; i++)
    memcpy(m->xo + i * H, x + (m->sel[i] / k) * H, sizeof(float) * (size_t)H);
  return n;
}

/* Route this rank's rows x [T, H] (NULL: none) with w's router; the
 * per-expert counts over all ranks into m->cnt, logged and recorded in the
 * block stats with calibration. Collective. */
static int route_count(qz_qrun *r, int layer, const qz_block_weights *w, const float *x,
                       int64_t T) {
  struct qz_moe_run *m = r->moe;
  const int64_t E = w->nexp, k = w->topk;
  memset(m->cnt, 0, sizeof(int64_t) * (size_t)E);
  if (x) {
    qz_moe_route(w, x, T, m->idx, m->wt);
    for (int64_t i = 0; i < T * k; i++) m->cnt[m->idx[i]]++;
  }
  QZ_CALL(qz_allreduce_i64(r->ctx->comm, m->cnt, (int)E, MPI_SUM));
  json_t *jc = json_array();
  int64_t nfall = 0, minc = INT64_MAX, maxc = 0;
  for (int64_t e = 0; e < E; e++) {
    json_array_append_new(jc, json_integer(m->cnt[e]));
    nfall += m->cnt[e] < r->o->min_expert_tokens;
    minc = m->cnt[e] < minc ? m->cnt[e] : minc;
    maxc = m->cnt[e] > maxc ? m->cnt[e] : maxc;
  }
  if (r->needs & QZ_NEED_CALIB) {
    json_object_set_new(r->stats, "expert_tokens", jc);
    qz_info("block %d: %lld experts, routed tokens per expert %lld..%lld; %lld below "
            "--min-expert-tokens %ld (%s)", layer, (long long)E, (long long)minc,
            (long long)maxc, (long long)nfall, r->o->min_expert_tokens,
            qz_expert_fallback_names[r->o->expert_fallback]);
    json_object_set_new(r->stats, "expert_fallbacks", json_integer(nfall));
  } else {
    json_decref(jc);
  }
  return QZ_OK;
}

/* The rows an expert's statistics come from with fallback fb (-1: none):
 * its n routed rows m->xo (chunks m->ends_o, one per window), route-all:
 * every row of x [T, H], pooled: both. *xh, *nh, *ends, *nends in; when
 * chunk is not NULL, the global index of each chunk (of *nchunks) for
 * this rank's windows [win0, win0 + nw) of nwin. Not collective. */
static void fallback_rows(struct qz_moe_run *m, const float *x, int64_t T, int64_t L,
                          int64_t H, int64_t n, int fb, const float **xh, int64_t *nh,
                          const int64_t **ends, int64_t *nends, int64_t win0, int64_t nwin,
                          int64_t *chunk, int64_t *nchunks) {
  const int64_t nw = m->nw;
  *xh = m->xo;
  *nh = n;
  *ends = m->ends_o;
  *nends = nw;
  if (chunk) {
    for (int64_t wi = 0; wi < nw; wi++) chunk[wi] = win0 + wi;
    *nchunks = nwin;
  }
  if (fb != QZ_EXPERT_FALLBACK_ROUTE_ALL && fb != QZ_EXPERT_FALLBACK_POOLED) return;
  int64_t off = fb == QZ_EXPERT_FALLBACK_POOLED ? n : 0;
  if (off && n > 0) memcpy(m->xh, m->xo, sizeof(float) * (size_t)(n * H));
  if (T > 0) memcpy(m->xh + off * H, x, sizeof(float) * (size_t)(T * H)); /* x: NULL w/o tokens */
  int64_t ne = 0;
  if (off)
    for (int64_t wi = 0; wi < nw; wi++) m->ends_h[ne++] = m->ends_o[wi];
  for (int64_t wi = 0; wi < nw; wi++) m->ends_h[ne++] = off + (wi + 1) * L;
  if (chunk && off) { /* routed rows of all windows first, then every row */
    for (int64_t wi = 0; wi < nw; wi++) chunk[nw + wi] = nwin + win0 + wi;
    *nchunks = 2 * nwin;
  }
  *xh = m->xh;
  *nh = off + T;
  *ends = m->ends_h;
  *nends = ne;
}

/* The output of one expert (weights g/u/d) on its n routed rows m->xo,
 * weighted by the router, added to m->acc. Not collective. */
static void expert_output(struct qz_moe_run *m, const float *g, const float *u,
                          const float *d, int64_t I, int64_t H, int64_t n, int64_t k) {
  qz_moe_expert_rows(g, u, d, I, H, m->xo, n, m->ends_o, m->nw, m->gs, m->ao, m->yo);
  for (int64_t i = 0; i < n; i++) {
    float cw = m->wt[m->sel[i]];
    float *o = m->acc + (m->sel[i] / k) * H;
    const float *y = m->yo + i * H;
    for (int64_t h = 0; h < H; h++) o[h] += cw * y[h];
  }
}

/* The gated shared expert of w on every row of x [T, H] (chunks
 * m->ends_h), added to m->acc. Not collective. */
static void shared_output(struct qz_moe_run *m, const qz_block_weights *w, const float *x,
                          int64_t T, int64_t H) {
  qz_moe_expert_rows(w->sw[0], w->sw[1], w->sw[2], w->sinter, H, x, T, m->ends_h, m->nw,
                     m->gs, m->ah, m->xh);
  for (int64_t t = 0; t < T; t++) {
    double s = 0.0;
    for (int64_t h = 0; h < H; h++) s += (double)x[t * H + h] * (double)w->shared_gate[h];
    float cg = (float)(1.0 / (1.0 + exp(-s)));
    for (int64_t h = 0; h < H; h++) m->acc[t * H + h] += cg * m->xh[t * H + h];
  }
}

/* Routed experts and shared expert of block `layer` on the FFN input x
 * [T, H] (L tokens per window); the FFN output into m->acc. Collective. */
static int quantize_experts(qz_qrun *r, int layer, qz_block_weights *w, const float *x,
                            int64_t T, int64_t L) {
  struct qz_moe_run *m = r->moe;
  const qz_model_config *c = r->cfg;
  const int64_t H = c->hidden_size, E = w->nexp, k = w->topk, Ie = w->einter;
  const int64_t nw = m->nw;
  const int calib = T > 0 || (r->needs & QZ_NEED_CALIB);
  const int hmethod = (r->needs & QZ_NEED_HESSIAN) != 0;
  memset(m->acc, 0, sizeof(float) * (size_t)(T * H));
  QZ_CALL(route_count(r, layer, w, calib ? x : NULL, T));
  for (int64_t e = 0; e < E; e++) {
    QZ_CALL(qz_model_load_expert(r->m, layer, (int)e, m->eg, m->eu, m->ed));
    /* this rank's rows routed to e, window by window */
    const int64_t n = gather_routed(m, x, T, L, k, H, e);
    const int few = m->cnt[e] < r->o->min_expert_tokens;
    const int fb = few ? r->o->expert_fallback : -1;
    const float *xh;
    int64_t nh, nends;
    const int64_t *ends;
    fallback_rows(m, x, T, L, H, n, fb, &xh, &nh, &ends, &nends, 0, 0, NULL, NULL);
    if (few)
      qz_debug("block %d expert %lld: %lld routed tokens, fallback %s", layer, (long long)e,
               (long long)m->cnt[e], qz_expert_fallback_names[r->o->expert_fallback]);
    const int rtn = hmethod && fb == QZ_EXPERT_FALLBACK_RTN;
    QZ_CALL(quantize_expert(r, layer, (int)e, Ie, m->eg, m->eu, m->ed, hmethod && !rtn, rtn,
                            xh, nh, ends, nends));
    if (!calib) continue;
    qz_timer_start(QZ_PHASE_FORWARD); /* its quantized output on its tokens */
    expert_output(m, m->eg, m->eu, m->ed, Ie, H, n, k);
    qz_timer_stop(QZ_PHASE_FORWARD);
  }
  if (w->sinter > 0) { /* Qwen2-MoE shared expert: every token */
    for (int64_t wi = 0; wi < nw; wi++) m->ends_h[wi] = (wi + 1) * L;
    QZ_CALL(quantize_expert(r, layer, -1, w->sinter, w->sw[0], w->sw[1], w->sw[2], hmethod,
                            0, x, T, m->ends_h, nw));
    if (calib) {
      qz_timer_start(QZ_PHASE_FORWARD);
      shared_output(m, w, x, T, H);
      qz_timer_stop(QZ_PHASE_FORWARD);
    }
  }
  return QZ_OK;
}
/* One expert (e = -1: shared) for a method with prepare_expert: the
 * method's hook on its rows xh (chunks ends/chunk), then its 3 linears
 * through the per-linear hook without a Hessian; rtn: the RTN fallback
 * instead. Collective. */
static int prepare_quantize(qz_qrun *r, int layer, int e, int64_t I, float *g, float *u,
                            float *d, int rtn, const float *xh, int64_t nh,
                            const int64_t *ends, const int64_t *chunk, int64_t nends,
                            int64_t nchunks, int64_t tokens) {
  struct qz_moe_run *m = r->moe;
  const qz_method_ops *ops = r->o->mo.ops;
  const int64_t H = r->cfg->hidden_size;
  if (!rtn) {
    qz_expert_ctx ec = {.comm = r->ctx->comm, .layer = layer, .expert = e, .hidden = H, .inter = I,
                        .g = g, .u = u, .d = d, .x = xh, .n = nh, .ends = ends,
                        .chunk = chunk, .nch = nends, .nchunks = nchunks,
                        .tokens = tokens};
    qz_timer_start(QZ_PHASE_FORWARD);
    int st = ops->prepare_expert(r->mstate, &ec);
    qz_timer_stop(QZ_PHASE_FORWARD);
    QZ_CALL(qz_error_agree(r->ctx->comm, st));
  }
  const qz_method_opts *mo = rtn ? &m->rtn_mo : NULL;
  void *ms = rtn ? m->rtn_state : NULL;
  char mod[3][160];
  for (int k = 0; k < 3; k++) qz_expert_module(mod[k], sizeof mod[k], r->cfg, layer, e, k);
  QZ_CALL(qz_quantize_module(r, layer, mod[0], I, H, g, NULL, mo, ms));
  QZ_CALL(qz_quantize_module(r, layer, mod[1], I, H, u, NULL, mo, ms));
  QZ_CALL(qz_quantize_module(r, layer, mod[2], H, I, d, NULL, mo, ms));
  return QZ_OK;
}

/* qz_block_ctx.experts (method.h): the FFN of MoE block b for a method's
 * block hook, on f's GATEUP_IN. Collective. */
static int svc_experts(qz_block_ctx *b) {
  qz_qrun *r = b->drv;
  struct qz_moe_run *m;
  qz_block_weights *w = b->w;
  const int64_t T = qz_fwd_ntok(b->f), L = qz_fwd_seqlen(b->f), nw = qz_fwd_nwin(b->f);
  const int64_t H = r->cfg->hidden_size, E = w->nexp, k = w->topk, Ie = w->einter;
  const int fp = (r->needs & QZ_NEED_FP_STREAM) != 0; /* commit the fp FFN output */
  QZ_CHECK(qz_fwd_batch_max(b->f) >= nw, QZ_ERR_INTERNAL,
           "MoE quantize needs every local window in one forward batch");
  QZ_CALL(moe_fit(r, T, nw));
  m = r->moe;
  int64_t nc = 0;
  const float *x = T > 0 ? qz_fwd_stage_output(b->f, QZ_STAGE_GATEUP_IN, &nc) : NULL;
  memset(m->acc, 0, sizeof(float) * (size_t)(T * H));
  QZ_CALL(route_count(r, b->layer, w, x, T));
  for (int64_t e = 0; e < E; e++) {
    QZ_CALL(qz_model_load_expert(r->m, b->layer, (int)e, m->eg, m->eu, m->ed));
    const int64_t n = gather_routed(m, x, T, L, k, H, e);
    const int fb = m->cnt[e] < r->o->min_expert_tokens ? r->o->expert_fallback : -1;
    const float *xh;
    int64_t nh, nends, nchunks;
    const int64_t *ends;
    fallback_rows(m, x, T, L, H, n, fb, &xh, &nh, &ends, &nends, b->win0, b->nwin, m->chunk,
                  &nchunks);
    int64_t tokens = fb == QZ_EXPERT_FALLBACK_ROUTE_ALL ? 0 : m->cnt[e];
    if (fb == QZ_EXPERT_FALLBACK_ROUTE_ALL || fb == QZ_EXPERT_FALLBACK_POOLED)
      tokens += b->nwin * L;
    if (fb >= 0)
      qz_debug("block %d expert %lld: %lld routed tokens, fallback %s", b->layer,
               (long long)e, (long long)m->cnt[e], qz_expert_fallback_names[fb]);
    if (fp) expert_output(m, m->eg, m->eu, m->ed, Ie, H, n, k);
    QZ_CALL(prepare_quantize(r, b->layer, (int)e, Ie, m->eg, m->eu, m->ed,
                             fb == QZ_EXPERT_FALLBACK_RTN, xh, nh, ends, m->chunk, nends,
                             nchunks, tokens));
    if (!fp) expert_output(m, m->eg, m->eu, m->ed, Ie, H, n, k);
  }
  if (w->sinter > 0) { /* Qwen2-MoE shared expert: every token */
    for (int64_t wi = 0; wi < nw; wi++) {
      m->ends_h[wi] = (wi + 1) * L;
      m->chunk[wi] = b->win0 + wi;
    }
    if (fp) shared_output(m, w, x, T, H);
    QZ_CALL(prepare_quantize(r, b->layer, -1, w->sinter, w->sw[0], w->sw[1], w->sw[2], 0, x, T,
                             m->ends_h, m->chunk, nw, b->nwin, b->nwin * L));
    if (!fp) shared_output(m, w, x, T, H);
  }
  QZ_CALL(qz_error_agree(b->comm, qz_fwd_commit_ffn(b->f, m->acc)));
  return QZ_OK;
}

int qz_quantize_moe_block(qz_qrun *r, qz_block_ctx *b) {
  const qz_method_ops *ops = r->o->mo.ops;
  if (ops->quantize_block) { /* the method's hook: attention, then b->experts */
    QZ_CHECK(ops->prepare_expert && (r->needs & QZ_NEED_CALIB), QZ_ERR_UNSUPPORTED,
             "quantize --method %s: mixture-of-experts blocks (block %d) are not supported "
             "by this method", ops->name, b->layer);
    b->experts = svc_experts;
    return ops->quantize_block(r->mstate, b);
  }
  const int calib = (r->needs & QZ_NEED_CALIB) != 0;
  if (calib) {
    QZ_CALL(qz_quantize_groups(b, 2)); /* [q,k,v], [o] */
    QZ_CALL(qz_quantize_forward_to(b, QZ_STAGE_GATEUP_IN));
  } else {
    for (int l = QZ_LIN_Q; l <= QZ_LIN_O; l++) QZ_CALL(b->linear(b, (qz_linear)l, NULL));
  }
  const int64_t T = calib ? qz_fwd_ntok(b->f) : 0, L = calib ? qz_fwd_seqlen(b->f) : 1;
  const int64_t nw = calib ? qz_fwd_nwin(b->f) : 0;
  QZ_CHECK(!calib || qz_fwd_batch_max(b->f) >= nw, QZ_ERR_INTERNAL,
           "MoE quantize needs every local window in one forward batch");
  QZ_CALL(moe_fit(r, T, nw));
  int64_t nc = 0;
  const float *x = calib ? qz_fwd_stage_output(b->f, QZ_STAGE_GATEUP_IN, &nc) : NULL;
  QZ_CALL(quantize_experts(r, b->layer, b->w, x, T, L));
  if (calib) QZ_CALL(qz_error_agree(b->comm, qz_fwd_commit_ffn(b->f, r->moe->acc)));
  return QZ_OK;
}

/* Routed + shared experts of block `layer` (router and shared expert in w)
 * on x [T, H] into m->acc, each routed expert read by `load` in turn. */
typedef int (*expert_loader)(void *ctx, int layer, int e, float *g, float *u, float *d);

static int forward_experts(struct qz_moe_run *m, const qz_model_config *c, int layer,
                           const qz_block_weights *w, const float *x, int64_t T, int64_t L,
                           expert_loader load, void *ctx) {
  const int64_t H = c->hidden_size, E = w->nexp, k = w->topk, Ie = w->einter, nw = m->nw;
  memset(m->acc, 0, sizeof(float) * (size_t)(T * H));
  qz_moe_route(w, x, T, m->idx, m->wt);
  for (int64_t e = 0; e < E; e++) {
    QZ_CALL(load(ctx, layer, (int)e, m->eg, m->eu, m->ed));
    const int64_t n = gather_routed(m, x, T, L, k, H, e);
    expert_output(m, m->eg, m->eu, m->ed, Ie, H, n, k);
  }
  if (w->sinter > 0) {
    for (int64_t wi = 0; wi < nw; wi++) m->ends_h[wi] = (wi + 1) * L;
    shared_output(m, w, x, T, H);
  }
  return QZ_OK;
}

typedef struct {
  qz_model *m;
  qz_ckpt *ck; /* NULL: the model's weights */
} replay_src;

static int load_replay(void *vctx, int layer, int e, float *g, float *u, float *d) {
  replay_src *s = vctx;
  if (!s->ck) return qz_model_load_expert(s->m, layer, e, g, u, d);
  const qz_model_config *c = qz_model_config_of(s->m);
  const int64_t H = c->hidden_size, I = c->moe_intermediate_size;
  float *dst[3] = {g, u, d};
  for (int k = 0; k < 3; k++) {
    char mod[160];
    qz_expert_module(mod, sizeof mod, c, layer, e, k);
    QZ_CALL(qz_ckpt_load_module_f32(s->ck, qz_model_comm(s->m), layer, mod, k == 2 ? H : I,
                                    k == 2 ? I : H, dst[k]));
  }
  return QZ_OK;
}

int qz_quantize_moe_replay(qz_model *m, qz_ckpt *ck, qz_fwd *f, qz_block_weights *w,
                           int layer) {
  MPI_Comm comm = qz_model_comm(m);
  const qz_model_config *c = qz_model_config_of(m);
  const unsigned attn = QZ_LIN_ALL & ~((1u << QZ_LIN_GATE) | (1u << QZ_LIN_UP) |
                                       (1u << QZ_LIN_DOWN));
  replay_src src = {.m = m, .ck = ck && qz_ckpt_block_done(ck, layer) ? ck : NULL};
  if (src.ck) {
    qz_ckpt_source cs = {.ck = ck};
    QZ_CALL(qz_ckpt_block_source(&cs, m, layer, w)); /* attention, norms, shared */
  } else {
    QZ_CALL(qz_model_load_block_mask(m, layer, attn, w));
  }
  const int64_t T = qz_fwd_ntok(f), nw = qz_fwd_nwin(f), L = qz_fwd_seqlen(f);
  struct qz_moe_run *sc = NULL;
  int st = scratch_alloc(c, T, nw, &sc);
  QZ_CALL(qz_error_agree(comm, st));
  qz_fwd_block_begin(f);
  st = qz_fwd_run(f, w, QZ_STAGE_GATEUP_IN);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  int64_t nc;
  const float *x = qz_fwd_stage_output(f, QZ_STAGE_GATEUP_IN, &nc);
  QZ_CALL_DONE(forward_experts(sc, c, layer, w, x, T, L, load_replay, &src));
  QZ_CALL_DONE(qz_error_agree(comm, qz_fwd_commit_ffn(f, sc->acc)));
done:
  scratch_free(&sc);
  return st;
}
