/* Distributed loglikelihood of token requests (task evaluation) with
 * prefix reuse and length batching; see mpiquant/loglik.h. */
#include "mpiquant/loglik.h"

#include <cblas.h>
#undef I /* cblas.h may pull in complex.h */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "fwd_kernels.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/moe.h"
#include "mpiquant/threads.h"
#include "mpiquant/timing.h"

#define LL_BATCH_DEFAULT 512

/* The model input of a request: full[a, a + ninp), scored: the last s
 * input positions (position j predicts full[a + j + 1]). */
typedef struct {
  int64_t a, ninp, s;
  int64_t own;     /* local row of the request's own rows (after the
                      group's shared prefix); -1 if not on this rank */
} req_win;

/* A group's rows: the shared input prefix (S rows) then every request's
 * own rows. */
typedef struct {
  int64_t r0, r1; /* requests [r0, r1) */
  int64_t S, rows;
  int64_t row;    /* local row of the shared prefix; -1 if not local */
} group;

typedef struct {
  int64_t g0, g1; /* entries [g0, g1) of the sorted group order */
  int64_t rows;
  int owner;
  int round;      /* pass over the weights that runs it */
  int64_t row0;   /* local first row */
} batch;

static int32_t tok_at(const qz_ll_request *q, int64_t j) {
  return j < q->nctx ? q->ctx[j] : q->cont[j - q->nctx];
}

/* Sort groups by rows, descending, then by index (deterministic). */
static const group *sort_groups;
static int cmp_group(const void *a, const void *b) {
  int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
  int64_t ri = sort_groups[i].rows, rj = sort_groups[j].rows;
  if (ri != rj) return ri > rj ? -1 : 1;
  return i < j ? -1 : i > j;
}

typedef struct {
  int64_t H, I, nq, nkv, hd, qd, kvd, V;
  float eps;
  int act_bits;
  const qz_act_hook *hook; /* NULL: none */
  const qz_model_hook *mhook; /* NULL: none */
  int64_t bmax, max_len;
  float *x;             /* [rows of one round, H] residual stream */
  int64_t r0;           /* local row of x[0] (the current round's first) */
  float *xn, *q, *k, *v, *h1, *h1n, *g, *u, *out; /* stage buffers [bmax, .] */
  float *aq;            /* [bmax, max(H, qd, I)] fake-quant input, or NULL */
  float *sc;            /* attention scratch (qz_fwd_scores_floats_threads);
                           the fused path: nthr workspaces sc_ld floats apart */
  int64_t sc_ld;
  int nthr;             /* OpenMP threads of the attention */
  float *cos_t, *sin_t; /* [max_len, hd/2] */
  qz_moe_ws *moe;       /* MoE FFN scratch for a batch, or NULL */
} ws;

static const float *lin_in(ws *w, int layer, qz_linear lin, const float *x, int64_t nrows,
                           int64_t n) {
  if (w->hook) {
    w->hook->fn(w->hook->ctx, layer, lin, x, nrows, n, w->aq);
    return w->aq;
  }
  if (!w->act_bits) return x;
  qz_act_fake_quant(x, nrows, n, w->act_bits, w->aq);
  return w->aq;
}

/* Causal attention of nQ query rows (batch rows qr..qr+nQ) over the keys
 * of rows ar..ar+nA (all visible) and qr..qr+i (query i): a request's own
 * rows over its group's shared prefix (nA = S) and themselves, or the
 * shared prefix alone (nA = 0).  The output of head h overwrites q's
 * columns of head h of these rows. */
static void attend(ws *w, int64_t qr, int64_t nQ, int64_t ar, int64_t nA) {
  const int64_t hd = w->hd, qd = w->qd, kvd = w->kvd, group = w->nq / w->nkv;
  const float scale = (float)(1.0 / sqrt((double)hd));
  if (hd <= QZ_FWDK_ATTN_SMALL_HD) { /* fused per row, as the block forward: */
    /* heads over the threads, each with its own workspace (threads.h) */
#pragma omp parallel for schedule(static) num_threads(w->nq > 1 ? w->nthr : 1)
    for (int64_t h = 0; h < w->nq; h++) {
      const int64_t g = h / group;
      qz_fwdk_attn_small(w->q + qr * qd + h * hd, qd, nQ, w->k + ar * kvd + g * hd,
                         w->v + ar * kvd + g * hd, nA, w->k + qr * kvd + g * hd,
                         w->v + qr * kvd + g * hd, kvd, hd, scale,
                         w->sc + (int64_t)omp_get_thread_num() * w->sc_ld);
    }
    return;
  }
  for (int64_t h = 0; h < w->nq; h++) {
    int64_t g = h / group;
    float *qh = w->q + qr * qd + h * hd;
    const float *kA = w->k + ar * kvd + g * hd, *vA = w->v + ar * kvd + g * hd;
    const float *kB = w->k + qr * kvd + g * hd, *vB = w->v + qr * kvd + g * hd;
    for (int64_t i0 = 0; i0 < nQ; i0 += QZ_FWD_QBLOCK) {
      int64_t m = nQ - i0 < QZ_FWD_QBLOCK ? nQ - i0 : QZ_FWD_QBLOCK;
      int64_t n = i0 + m, nc = nA + n;
      float *S = w->sc; /* [m, nc] */
      if (nA)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)nA, (int)hd,
                    scale, qh + i0 * qd, (int)qd, kA, (int)kvd, 0.0f, S, (int)nc);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)hd, scale,
                  qh + i0 * qd, (int)qd, kB, (int)kvd, 0.0f, S + nA, (int)nc);
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(m * nc))
      for (int64_t r = 0; r < m; r++) qz_fwdk_softmax_row(S + r * nc, nA + i0 + r + 1, nc);
      if (nA)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)hd, (int)nA,
                    1.0f, S, (int)nc, vA, (int)kvd, 0.0f, qh + i0 * qd, (int)qd);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)hd, (int)n, 1.0f,
                  S + nA, (int)nc, vB, (int)kvd, nA ? 1.0f : 0.0f, qh + i0 * qd, (int)qd);
    }
  }
}

/* One block on one batch (rows [b->row0, b->row0 + b->rows) of x). */
static int block_batch(ws *w, const qz_block_weights *bw, const batch *b,
                        const int64_t *order, const group *grp, const req_win *win,
                        const int32_t *pos) {
  const int64_t T = b->rows, H = w->H, I = w->I, qd = w->qd, kvd = w->kvd;
  float *x = w->x + (b->row0 - w->r0) * H;
  qz_fwdk_rmsnorm(w->xn, x, bw->attn_norm, T, H, w->eps);
  const float *xin = lin_in(w, bw->layer, QZ_LIN_Q, w->xn, T, H);
  qz_fwdk_linear(w->q, xin, bw->w[QZ_LIN_Q], bw->b[QZ_LIN_Q], T, T, qd, H);
  qz_fwdk_linear(w->k, xin, bw->w[QZ_LIN_K], bw->b[QZ_LIN_K], T, T, kvd, H);
  qz_fwdk_linear(w->v, xin, bw->w[QZ_LIN_V], bw->b[QZ_LIN_V], T, T, kvd, H);
  if (bw->q_norm) { /* Qwen3: per-head RMSNorm before RoPE */
    qz_fwdk_rmsnorm(w->q, w->q, bw->q_norm, T * w->nq, w->hd, w->eps);
    qz_fwdk_rmsnorm(w->k, w->k, bw->k_norm, T * w->nkv, w->hd, w->eps);
  }
  qz_rope_apply_pos(w->q, T, qd, w->nq, w->hd, pos + b->row0, w->cos_t, w->sin_t);
  qz_rope_apply_pos(w->k, T, kvd, w->nkv, w->hd, pos + b->row0, w->cos_t, w->sin_t);
  if (w->mhook && w->mhook->attn)
    w->mhook->attn(w->mhook->ctx, bw->layer, w->q, w->k, w->v, T, w->nq, w->nkv, w->hd);
  for (int64_t e = b->g0; e < b->g1; e++) {
    const group *gp = &grp[order[e]];
    int64_t sr = gp->row - b->row0;
    attend(w, sr, gp->S, sr, 0);
    for (int64_t r = gp->r0; r < gp->r1; r++) {
      int64_t own = win[r].ninp - gp->S;
      if (own > 0) attend(w, win[r].own - b->row0, own, sr, gp->S);
    }
  }
  qz_fwdk_linear(w->h1, lin_in(w, bw->layer, QZ_LIN_O, w->q, T, qd), bw->w[QZ_LIN_O], bw->b[QZ_LIN_O], T, T, H, qd);
  qz_fwdk_add(w->h1, w->h1, x, T * H);
  qz_fwdk_rmsnorm(w->h1n, w->h1, bw->ffn_norm, T, H, w->eps);
  if (bw->moe) {
    QZ_CHECK(w->moe, QZ_ERR_ARG, "MoE block on a dense task workspace");
    QZ_CALL(qz_moe_ffn(w->moe, bw, w->h1n, T, T, w->out));
    qz_fwdk_add(x, w->out, w->h1, T * H);
    return QZ_OK;
  }
  xin = lin_in(w, bw->layer, QZ_LIN_GATE, w->h1n, T, H);
  qz_fwdk_linear(w->g, xin, bw->w[QZ_LIN_GATE], bw->b[QZ_LIN_GATE], T, T, I, H);
  qz_fwdk_linear(w->u, xin, bw->w[QZ_LIN_UP], bw->b[QZ_LIN_UP], T, T, I, H);
  qz_fwdk_swiglu(w->g, w->u, T * I);
  qz_fwdk_linear(w->out, lin_in(w, bw->layer, QZ_LIN_DOWN, w->g, T, I), bw->w[QZ_LIN_DOWN], bw->b[QZ_LIN_DOWN], T, T,
                 H, I);
  qz_fwdk_add(x, w->out, w->h1, T * H);
  return QZ_OK;
}

static int default_source(void *ctx, qz_model *m, int layer, qz_block_weights *w) {
  (void)ctx;
  return qz_model_load_block(m, layer, w);
}

/* Logits of the np gathered rows hn, then per row the log-softmax of its
 * target (double) into ll[pr[t]] and the argmax test. */
static void score_rows(const ws *w, const qz_head_weights *hd, int64_t np, const float *hn,
                       float *lg, const int64_t *pr, const int32_t *pt, double *ll,
                       int *greedy) {
  const int64_t H = w->H, V = w->V;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)np, (int)V, (int)H, 1.0f, hn,
              (int)H, hd->lm_head, (int)H, 0.0f, lg, (int)V);
  for (int64_t t = 0; t < np; t++) {
    const float *l = lg + t * V;
    float mx = l[0];
    int64_t am = 0;
    for (int64_t c = 1; c < V; c++)
      if (l[c] > mx) {
        mx = l[c];
        am = c;
      }
    double sum = 0.0;
    for (int64_t c = 0; c < V; c++) sum += (double)expf(l[c] - mx);
    ll[pr[t]] -= (double)mx + log(sum) - (double)l[pt[t]];
    if (am != pt[t]) greedy[pr[t]] = 0;
  }
}

/* The scored positions of one batch in a fixed order (group, request,
 * position; a request's tokens in position order): request pr[k] and
 * target pt[k] for k < *ns, and with hn (the batch's owner: its rows are
 * local) the final-normed rows. The same on every rank. */
static int batch_positions(const ws *w, const float *norm, const batch *b, const int64_t *order,
                           const group *grp, const req_win *win, const qz_ll_request *req,
                           float *hn, int64_t *pr, int32_t *pt, int64_t *ns) {
  const int64_t H = w->H, V = w->V;
  int64_t np = 0;
  for (int64_t e = b->g0; e < b->g1; e++) {
    const group *gp = &grp[order[e]];
    for (int64_t r = gp->r0; r < gp->r1; r++)
      for (int64_t j = win[r].ninp - win[r].s; j < win[r].ninp; j++) {
        int32_t tgt = tok_at(&req[r], win[r].a + j + 1);
        QZ_CHECK(tgt >= 0 && tgt < V, QZ_ERR_ARG,
                 "request %lld: token id %d outside the vocabulary [0, %lld)", (long long)r,
                 (int)tgt, (long long)V);
        if (hn) {
          int64_t row = j < gp->S ? gp->row + j : win[r].own + (j - gp->S);
          qz_fwdk_rmsnorm(hn + np * H, w->x + (row - w->r0) * H, norm, 1, H, w->eps);
        }
        pr[np] = r;
        pt[np] = tgt;
        np++;
      }
  }
  *ns = np;
  return QZ_OK;
}

/* Scored positions of a batch (no rows needed). */
static int64_t batch_nscored(const batch *b, const int64_t *order, const group *grp,
                             const req_win *win) {
  int64_t n = 0;
  for (int64_t e = b->g0; e < b->g1; e++)
    for (int64_t r = grp[order[e]].r0; r < grp[order[e]].r1; r++) n += win[r].s;
  return n;
}

/* A local batch with the whole head: its positions in chunks of `chunk`
 * rows (the chunks depend only on the batch). */
static int score_batch(ws *w, const qz_head_weights *hd, const batch *b, const int64_t *order,
                       const group *grp, const req_win *win, const qz_ll_request *req,
                       int64_t chunk, float *hn, float *lg, int64_t *pr, int32_t *pt,
                       double *ll, int *greedy) {
  int64_t ns;
  QZ_CALL(batch_positions(w, hd->norm, b, order, grp, win, req, hn, pr, pt, &ns));
  for (int64_t k0 = 0; k0 < ns; k0 += chunk)
    score_rows(w, hd, ns - k0 < chunk ? ns - k0 : chunk, hn + k0 * w->H, lg, pr + k0, pt + k0,
               ll, greedy);
  return QZ_OK;
}

/* Buffers of the vocab-sharded scoring (chunk rows each). */
typedef struct {
  float *lg;    /* [chunk, v1 - v0] logits of this rank's vocab rows */
  float *mx;    /* [chunk] row max over the whole vocab */
  int32_t *am;  /* [chunk] lowest index of that max */
  double *part; /* [chunk, nch + 1] this rank's chunk sums and target logit */
  double *red;  /* [chunk, nch + 1] their sum on the batch's owner */
} shard_bufs;

/* One batch with the head sharded over the ranks (vocab rows [v0, v1) here,
 * whole QZ_VOCAB_CHUNK chunks): every rank visits every batch of the round
 * in batch order; the owner forms the rows and broadcasts them chunk by
 * chunk, every rank computes its logits (one sgemm per vocab chunk, so a
 * logit does not depend on the split), the row max (MAX) and the lowest
 * index reaching it (MIN: the argmax of the whole row, ties to the lowest
 * index as with the whole head), its chunks' sums of exp(l - max) and the
 * target's logit; the owner receives them (one contributor per entry: the
 * reduction is exact) and adds the chunk sums in chunk order. Results do
 * not depend on the rank count. Collective. */
static int score_batch_sharded(ws *w, const qz_head_shard *hs, MPI_Comm comm, int rank,
                               const batch *b, const int64_t *order, const group *grp,
                               const req_win *win, const qz_ll_request *req, int64_t chunk,
                               float *hn, int64_t *pr, int32_t *pt, const shard_bufs *sb,
                               double *ll, int *greedy) {
  const int64_t H = w->H, V = w->V;
  const int64_t nch = (V + QZ_VOCAB_CHUNK - 1) / QZ_VOCAB_CHUNK, W = nch + 1;
  const int own = rank == b->owner;
  int64_t ns;
  QZ_CALL(batch_positions(w, hs->norm, b, order, grp, win, req, own ? hn : NULL, pr, pt, &ns));
  for (int64_t k0 = 0; k0 < ns; k0 += chunk) {
    const int64_t n = ns - k0 < chunk ? ns - k0 : chunk;
    float *x = hn + k0 * H, *lg = sb->lg, *mx = sb->mx;
    const int32_t *tg = pt + k0;
    QZ_CALL_MPI(MPI_Bcast(x, (int)(n * H), MPI_FLOAT, b->owner, comm));
    qz_count_bcast(comm, b->owner, 4 * n * H);
    qz_fwdk_shard_logits(hs, x, n, lg, mx);
    QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, mx, (int)n, MPI_FLOAT, MPI_MAX, comm));
    qz_count_allreduce(comm, 4 * n);
    qz_fwdk_shard_sums(hs, lg, n, mx, tg, sb->part, sb->am);
    QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, sb->am, (int)n, MPI_INT32_T, MPI_MIN, comm));
    qz_count_allreduce(comm, 4 * n);
    QZ_CALL_MPI(MPI_Reduce(sb->part, sb->red, (int)(n * W), MPI_DOUBLE, MPI_SUM, b->owner, comm));
    qz_count_reduce(comm, b->owner, 8 * n * W);
    if (!own) continue;
    for (int64_t t = 0; t < n; t++) {
      ll[pr[k0 + t]] -= qz_fwdk_shard_nll(sb->red + t * W, nch, mx[t]);
      if (sb->am[t] != tg[t]) greedy[pr[k0 + t]] = 0;
    }
  }
  return QZ_OK;
}

#define LL_MPI(call)                                                       \
  do {                                                                     \
    int rc_ = (call);                                                      \
    if (rc_ != MPI_SUCCESS) {                                              \
      st = qz_mpi_error(rc_, #call, __FILE__, __LINE__, __func__);         \
      goto done;                                                           \
    }                                                                      \
  } while (0)

int qz_loglikelihood(qz_model *m, const qz_ll_request *req, int64_t nreq,
                     const qz_ll_opts *o, qz_ll_result *res, qz_ll_stats *stats) {
  MPI_Comm comm = qz_model_comm(m);
  const qz_model_config *cfg = qz_model_config_of(m);
  int rank, size, st = QZ_OK;
  QZ_CALL_MPI(MPI_Comm_rank(comm, &rank));
  QZ_CALL_MPI(MPI_Comm_size(comm, &size));
  memset(stats, 0, sizeof *stats);
  const int64_t L = o->max_len;
  QZ_CHECK(L >= 1 && nreq >= 1, QZ_ERR_ARG, "loglikelihood: %lld requests, max_len %lld",
           (long long)nreq, (long long)L);
  double t0 = MPI_Wtime();
  qz_block_source_fn source = o->block_source ? o->block_source : default_source;
  int64_t B = o->batch_tokens > 0 ? o->batch_tokens : LL_BATCH_DEFAULT;

  req_win *win = NULL;
  group *grp = NULL;
  batch *bat = NULL;
  int64_t *order = NULL, ngrp = 0, nbat = 0;
  int32_t *ids = NULL, *pos = NULL, *pt = NULL;
  int64_t *pr = NULL;
  double *ll = NULL;
  int *greedy = NULL;
  float *hn = NULL, *lg = NULL;
  ws w = {0};
  void *wmem = NULL;
  size_t wbytes = 0;
  qz_block_weights bw = {0};
  qz_head_weights head = {0};
  qz_head_shard hs = {0};
  shard_bufs sb = {0};

  /* ---- the same plan on every rank: windows, groups, batches, owners */
  QZ_CALL_DONE(qz_calloc((size_t)nreq, sizeof *win, "request windows", &win));
  QZ_CALL_DONE(qz_calloc((size_t)nreq, sizeof *grp, "request groups", &grp));
  for (int64_t r = 0; r < nreq; r++) {
    const qz_ll_request *q = &req[r];
    QZ_CHECK_DONE(q->nctx >= 1 && q->ncont >= 1, QZ_ERR_ARG,
                  "request %lld has %lld context and %lld continuation tokens (need >= 1 each)",
                  (long long)r, (long long)q->nctx, (long long)q->ncont);
    int64_t nf = q->nctx + q->ncont;
    win[r].a = nf > L + 1 ? nf - (L + 1) : 0;
    win[r].ninp = nf - 1 - win[r].a;
    win[r].s = q->ncont < L ? q->ncont : L;
    win[r].own = -1;
    res[r] = (qz_ll_result){.cont_truncated = q->ncont > L, .ctx_truncated = win[r].a > 0,
                            .ninput = win[r].ninp};
    stats->tokens_input += win[r].ninp;
    stats->tokens_scored += win[r].s;
    stats->cont_truncated += q->ncont > L;
    stats->ctx_truncated += win[r].a > 0;
    int same = r > 0 && !o->no_prefix_reuse && req[r].group == req[r - 1].group;
    if (!same) grp[ngrp++] = (group){.r0 = r, .S = win[r].ninp, .row = -1};
    group *gp = &grp[ngrp - 1];
    gp->r1 = r + 1;
    int64_t S = gp->S < win[r].ninp ? gp->S : win[r].ninp, k = 0;
    if (same) {
      const qz_ll_request *q0 = &req[gp->r0];
      while (k < S && tok_at(q0, win[gp->r0].a + k) == tok_at(q, win[r].a + k)) k++;
      gp->S = k;
    }
  }
  for (int64_t g = 0; g < ngrp; g++) {
    grp[g].rows = grp[g].S;
    for (int64_t r = grp[g].r0; r < grp[g].r1; r++) grp[g].rows += win[r].ninp - grp[g].S;
    stats->tokens_forward += grp[g].rows;
  }
  QZ_CALL_DONE(qz_alloc((size_t)ngrp, sizeof *order, "group order", &order));
  for (int64_t g = 0; g < ngrp; g++) order[g] = g;
  sort_groups = grp;
  qsort(order, (size_t)ngrp, sizeof *order, cmp_group);
  QZ_CALL_DONE(qz_calloc((size_t)ngrp, sizeof *bat, "batches", &bat));
  for (int64_t e = 0; e < ngrp; e++) {
    int64_t rows = grp[order[e]].rows;
    if (nbat == 0 || bat[nbat - 1].rows + rows > B) bat[nbat++] = (batch){.g0 = e, .g1 = e};
    bat[nbat - 1].g1 = e + 1;
    bat[nbat - 1].rows += rows;
  }
  { /* largest first to the least loaded rank (ties: lowest rank) */
    int64_t load[size];
    memset(load, 0, sizeof load);
    for (int64_t b = 0; b < nbat; b++) {
      int best = 0;
      for (int p = 1; p < size; p++)
        if (load[p] < load[best]) best = p;
      bat[b].owner = best;
      load[best] += bat[b].rows;
    }
  }
  /* local layout: my batches in batch order, each group's shared rows
   * then its requests' own rows */
  int64_t T = 0, bmax = 1;
  for (int64_t b = 0; b < nbat; b++) {
    if (bat[b].owner != rank) continue;
    bat[b].row0 = T;
    for (int64_t e = bat[b].g0; e < bat[b].g1; e++) {
      group *gp = &grp[order[e]];
      gp->row = T;
      T += gp->S;
      for (int64_t r = gp->r0; r < gp->r1; r++) {
        win[r].own = T;
        T += win[r].ninp - gp->S;
      }
    }
    bmax = bat[b].rows > bmax ? bat[b].rows : bmax;
  }
  /* rounds: a rank holds at most `cap` rows of residual stream; more rows
   * stream the weights once per round (every rank runs nrounds passes) */
  const int64_t H = cfg->hidden_size;
  int64_t cap = o->round_rows > 0 ? o->round_rows : ((int64_t)4 << 30) / (4 * (H > 0 ? H : 1));
  int nrounds = 1;
  int64_t Tmax = 0;
  {
    int64_t cum[size];
    int cur[size];
    memset(cum, 0, sizeof cum);
    memset(cur, 0, sizeof cur);
    for (int64_t b = 0; b < nbat; b++) {
      int p = bat[b].owner;
      if (cum[p] > 0 && cum[p] + bat[b].rows > cap) {
        cur[p]++;
        cum[p] = 0;
      }
      bat[b].round = cur[p];
      cum[p] += bat[b].rows;
      nrounds = cur[p] + 1 > nrounds ? cur[p] + 1 : nrounds;
      if (p == rank) Tmax = cum[p] > Tmax ? cum[p] : Tmax;
    }
  }
  stats->nrounds = nrounds;
  stats->nreq = nreq;
  stats->ngroups = ngrp;
  stats->nbatches = nbat;
  st = qz_alloc((size_t)(T ? T : 1), sizeof *ids, "local token ids", &ids);
  if (st == QZ_OK) st = qz_alloc((size_t)(T ? T : 1), sizeof *pos, "local positions", &pos);
  if (st == QZ_OK) st = qz_calloc((size_t)nreq, sizeof *ll, "loglikelihoods", &ll);
  if (st == QZ_OK) st = qz_calloc((size_t)nreq, sizeof *greedy, "greedy flags", &greedy);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  for (int64_t g = 0; g < ngrp; g++) {
    if (grp[g].row < 0) continue;
    const qz_ll_request *q0 = &req[grp[g].r0];
    for (int64_t j = 0; j < grp[g].S; j++) {
      ids[grp[g].row + j] = tok_at(q0, win[grp[g].r0].a + j);
      pos[grp[g].row + j] = (int32_t)j;
    }
    for (int64_t r = grp[g].r0; r < grp[g].r1; r++) {
      greedy[r] = 1;
      for (int64_t j = grp[g].S; j < win[r].ninp; j++) {
        ids[win[r].own + j - grp[g].S] = tok_at(&req[r], win[r].a + j);
        pos[win[r].own + j - grp[g].S] = (int32_t)j;
      }
    }
  }

  /* ---- workspace (one allocation), embedding */
  w.H = cfg->hidden_size;
  w.I = cfg->intermediate_size;
  w.nq = cfg->num_attention_heads;
  w.nkv = cfg->num_key_value_heads;
  w.hd = cfg->head_dim;
  w.qd = w.nq * w.hd;
  w.kvd = w.nkv * w.hd;
  w.V = cfg->vocab_size;
  w.eps = (float)cfg->rms_norm_eps;
  w.act_bits = o->act_quant_bits;
  w.hook = o->act_hook;
  w.mhook = o->model_hook;
  QZ_CHECK_DONE(!(w.hook && w.act_bits), QZ_ERR_ARG,
                "activation quantization and an activation hook are exclusive");
  w.bmax = bmax;
  w.max_len = L;
  QZ_CHECK_DONE(w.nq > 0 && w.nkv > 0 && w.nq % w.nkv == 0 && w.hd % 2 == 0, QZ_ERR_ARG,
                "attention heads %lld / kv heads %lld / head_dim %lld unsupported",
                (long long)w.nq, (long long)w.nkv, (long long)w.hd);
  {
    int64_t amax = w.H > w.qd ? w.H : w.qd;
    amax = amax > w.I ? amax : w.I;
    w.nthr = qz_threads();
    w.sc_ld = qz_fwdk_attn_small_ld(w.hd, L);
    const int64_t ssz = qz_fwd_scores_floats_threads(w.hd, L, w.nthr);
    int64_t sz[] = {Tmax * w.H,        bmax * w.H,   bmax * w.qd, bmax * w.kvd,
                    bmax * w.kvd,   bmax * w.H,   bmax * w.H,  bmax * w.I,
                    bmax * w.I,     bmax * w.H,   (w.act_bits || w.hook) ? bmax * amax : 0,
                    ssz,            L * w.hd / 2, L * w.hd / 2};
    float **dst[] = {&w.x, &w.xn, &w.q,  &w.k,  &w.v,  &w.h1,    &w.h1n,
                     &w.g, &w.u,  &w.out, &w.aq, &w.sc, &w.cos_t, &w.sin_t};
    int n = (int)(sizeof sz / sizeof sz[0]);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += (sz[i] + 15) / 16 * 16;
    wbytes = (size_t)total * sizeof(float);
    st = qz_alloc_big(wbytes, "task forward workspace", &wmem);
    if (st == QZ_OK) {
      float *p = wmem;
      for (int i = 0; i < n; i++) {
        *dst[i] = sz[i] ? p : NULL;
        p += (sz[i] + 15) / 16 * 16;
      }
      st = qz_rope_tables(cfg, L, w.cos_t, w.sin_t);
    }
    if (st == QZ_OK) st = qz_block_weights_alloc(cfg, &bw);
    if (st == QZ_OK && qz_config_any_moe(cfg)) {
      QZ_CHECK_DONE(!w.act_bits && !w.hook, QZ_ERR_UNSUPPORTED, "activation quantization of "
                    "mixture-of-experts models is not supported");
      st = qz_moe_ws_create(cfg, bmax, &w.moe);
    }
    QZ_CALL_DONE(qz_error_agree(comm, st));
  }
  {
    char b1[32];
    qz_info("tasks: %lld requests in %lld groups, %lld input tokens -> %lld forward rows "
            "(prefix reuse), %lld batches of <= %lld rows over %d ranks (this rank: %lld "
            "rows in %d pass%s over the weights, workspace %s)",
            (long long)nreq, (long long)ngrp, (long long)stats->tokens_input,
            (long long)stats->tokens_forward, (long long)nbat, (long long)B, size, (long long)T,
            nrounds, nrounds > 1 ? "es" : "", qz_fmt_bytes((double)wbytes, b1, sizeof b1));
  }
  /* embedding: the whole table when small (and, when tied, it is the head:
   * read once); large vocabularies read only the rows of the local ids */
  const int small_vocab = cfg->vocab_size <= QZ_VOCAB_CHUNK;
  if (small_vocab) {
    QZ_CALL_DONE(qz_model_load_head(m, 1, 0, &head));
    if (head.tied) QZ_CALL_DONE(qz_model_load_head(m, 0, 1, &head));
  }
  /* the head: whole on every rank (small vocabularies, --full-head), else
   * this rank's whole QZ_VOCAB_CHUNK chunks (V/P x H instead of V x H) */
  const int sharded = !small_vocab && !o->full_head;
  const int64_t nch = (w.V + QZ_VOCAB_CHUNK - 1) / QZ_VOCAB_CHUNK;
  int64_t v0 = 0, v1 = 0;
  if (sharded) {
    qz_vocab_shard_range(w.V, size, rank, &v0, &v1);
    QZ_CALL_DONE(qz_error_agree(comm, qz_model_load_head_shard(m, v0, v1, &hs)));
  }
  int64_t chunk = (64 << 20) / (int64_t)sizeof(float) / (w.V > 0 ? w.V : 1);
  chunk = chunk < 1 ? 1 : chunk > 256 ? 256 : chunk;
  int64_t nsmax = 1; /* scored positions of the largest batch */
  for (int64_t b = 0; b < nbat; b++) {
    int64_t n = batch_nscored(&bat[b], order, grp, win);
    nsmax = n > nsmax ? n : nsmax;
  }
  const int64_t lgcols = sharded ? (v1 > v0 ? v1 - v0 : 1) : w.V;
  st = qz_alloc((size_t)(nsmax * w.H), sizeof *hn, "head input rows", &hn);
  if (st == QZ_OK) st = qz_alloc((size_t)(chunk * lgcols), sizeof *lg, "logits chunk", &lg);
  if (st == QZ_OK) st = qz_alloc((size_t)nsmax, sizeof *pr, "scored rows", &pr);
  if (st == QZ_OK) st = qz_alloc((size_t)nsmax, sizeof *pt, "scored targets", &pt);
  if (st == QZ_OK && sharded) {
    sb.lg = lg;
    st = qz_alloc((size_t)chunk, sizeof *sb.mx, "row maxima", &sb.mx);
    if (st == QZ_OK) st = qz_alloc((size_t)chunk, sizeof *sb.am, "row argmax", &sb.am);
    if (st == QZ_OK)
      st = qz_alloc((size_t)(chunk * (nch + 1)), sizeof *sb.part, "chunk sums", &sb.part);
    if (st == QZ_OK)
      st = qz_alloc((size_t)(chunk * (nch + 1)), sizeof *sb.red, "chunk sums", &sb.red);
  }
  QZ_CALL_DONE(qz_error_agree(comm, st));

  qz_progress prog;
  const int64_t nblocks = cfg->num_hidden_layers;
  if (o->progress) qz_progress_begin(&prog, "task blocks", (nblocks + 1) * nrounds);
  for (int rd = 0; rd < nrounds; rd++) {
    /* this round's local rows [r0, r1): its batches are consecutive */
    int64_t r0 = -1, r1 = 0;
    for (int64_t b = 0; b < nbat; b++)
      if (bat[b].owner == rank && bat[b].round == rd) {
        if (r0 < 0) r0 = bat[b].row0;
        r1 = bat[b].row0 + bat[b].rows;
      }
    if (r0 < 0) r0 = r1 = 0;
    w.r0 = r0;
    if (small_vocab) {
      for (int64_t t = r0; t < r1; t++) {
        QZ_CHECK_DONE(ids[t] >= 0 && ids[t] < w.V, QZ_ERR_ARG,
                      "token id %d outside the vocabulary [0, %lld)", (int)ids[t], (long long)w.V);
        memcpy(w.x + (t - r0) * w.H, head.embed + (int64_t)ids[t] * w.H,
               (size_t)w.H * sizeof(float));
      }
    } else {
      st = r1 > r0 ? qz_model_embed_tokens(m, ids + r0, r1 - r0, w.x) : QZ_OK;
      QZ_CALL_DONE(qz_error_agree(comm, st));
    }
    if (w.mhook && w.mhook->stream) w.mhook->stream(w.mhook->ctx, w.x, r1 - r0, w.H, 0);
    /* blocks, layer-major over the round's rows */
    for (int64_t l = 0; l < nblocks; l++) {
      QZ_CALL_DONE(source(o->block_source_ctx, m, (int)l, &bw));
      qz_timer_start(QZ_PHASE_FORWARD);
      for (int64_t b = 0; st == QZ_OK && b < nbat; b++)
        if (bat[b].owner == rank && bat[b].round == rd)
          st = block_batch(&w, &bw, &bat[b], order, grp, win, pos);
      qz_timer_stop(QZ_PHASE_FORWARD);
      QZ_CALL_DONE(qz_error_agree(comm, st));
      if (o->progress) qz_progress_update(&prog, rd * (nblocks + 1) + l + 1);
    }
    if (w.mhook && w.mhook->stream) w.mhook->stream(w.mhook->ctx, w.x, r1 - r0, w.H, 1);
    /* head on the scored rows: a sharded head takes every rank through every
     * batch of the round, a whole head scores this rank's batches */
    if (!sharded) QZ_CALL_DONE(qz_model_load_head(m, 0, 1, &head));
    qz_timer_start(QZ_PHASE_EVAL);
    for (int64_t b = 0; st == QZ_OK && b < nbat; b++) {
      if (bat[b].round != rd) continue;
      if (sharded)
        st = score_batch_sharded(&w, &hs, comm, rank, &bat[b], order, grp, win, req, chunk, hn,
                                 pr, pt, &sb, ll, greedy);
      else if (bat[b].owner == rank)
        st = score_batch(&w, &head, &bat[b], order, grp, win, req, chunk, hn, lg, pr, pt, ll,
                         greedy);
    }
    qz_timer_stop(QZ_PHASE_EVAL);
    QZ_CALL_DONE(qz_error_agree(comm, st));
    if (o->progress) qz_progress_update(&prog, (rd + 1) * (nblocks + 1));
  }
  qz_block_weights_free(&bw);

  /* ---- every request has one owner: the sums below are exact */
  LL_MPI(MPI_Allreduce(MPI_IN_PLACE, ll, (int)nreq, MPI_DOUBLE, MPI_SUM, comm));
  qz_count_allreduce(comm, 8 * nreq);
  LL_MPI(MPI_Allreduce(MPI_IN_PLACE, greedy, (int)nreq, MPI_INT, MPI_SUM, comm));
  qz_count_allreduce(comm, 4 * nreq);
  for (int64_t r = 0; r < nreq; r++) {
    res[r].ll = ll[r];
    res[r].greedy = greedy[r] != 0;
    QZ_CHECK_DONE(isfinite(ll[r]), QZ_ERR_NUMERIC,
                  "request %lld: loglikelihood is not finite (%g): the model produced NaN/Inf",
                  (long long)r, ll[r]);
  }
  QZ_CALL_DONE(qz_model_bytes_read_total(m, &stats->bytes_read));
  stats->seconds = MPI_Wtime() - t0;
  LL_MPI(MPI_Allreduce(MPI_IN_PLACE, &stats->seconds, 1, MPI_DOUBLE, MPI_MAX, comm));
done:
  free(win);
  free(grp);
  free(bat);
  free(order);
  free(ids);
  free(pos);
  free(pr);
  free(pt);
  free(ll);
  free(greedy);
  free(hn);
  free(lg);
  qz_free_big(&wmem, wbytes);
  qz_moe_ws_destroy(&w.moe);
  qz_block_weights_free(&bw);
  qz_head_weights_free(&head);
  qz_head_shard_free(&hs);
  free(sb.mx);
  free(sb.am);
  free(sb.part);
  free(sb.red);
  return st;
}
