/* mpiquant quantize: one decoder block. The method's block hook, or the
 * true-sequential default ([q,k,v] -> [o] -> [gate,up] -> [down]: the
 * group's input from the forward with the earlier groups quantized, its
 * Hessian, its linears), and per linear: the method's hook on this rank's
 * rows, the dequantized rows gathered back into the block (the forward
 * continues with exactly the weights the checkpoint holds) and this rank's
 * rows written collectively. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/chol.h"
#include "mpiquant/codes.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/shard.h"
#include "mpiquant/timing.h"
#include "qblock.h"
#include "quantize.h"
#include "rotate_cli.h"

int qz_quantize_hessian_for(qz_hcache *c, qz_grid *g, int64_t d, qz_hessian **out) {
  for (int i = 0; i < QZ_HCACHE_N; i++)
    if (c->h[i] && c->d[i] == d) {
      qz_hessian_reset(c->h[i]);
      *out = c->h[i];
      return QZ_OK;
    }
  for (int i = 0; i < QZ_HCACHE_N; i++)
    if (!c->h[i]) {
      QZ_CALL(qz_hessian_create(g, d, &c->h[i]));
      c->d[i] = d;
      *out = c->h[i];
      return QZ_OK;
    }
  QZ_FAIL(QZ_ERR_INTERNAL, "more than %d distinct layer input widths", QZ_HCACHE_N);
}

/* Test hook (tests/quantize_resume.sh): MPIQUANT_FAULT=kill:R:B sends
 * SIGKILL to rank R right after it wrote its first linear of block B, i.e.
 * while block B runs and after the blocks before it are complete. */
static void kill_hook(int rank, int layer) {
  const char *f = getenv("MPIQUANT_FAULT");
  int r, b;
  if (f && sscanf(f, "kill:%d:%d", &r, &b) == 2 && r == rank && b == layer) {
    fprintf(stderr, "mpiquant: MPIQUANT_FAULT: rank %d kills itself in block %d\n", rank, layer);
    fflush(stderr);
    raise(SIGKILL);
  }
}

/* The per-linear result buffers, allocated once for the largest linear of
 * the model (not once per linear); a group hook (q/k/v, gate/up) gets one
 * set per linear of the group (sets 1.. allocated at its first use). */
struct qz_linear_bufs {
  qz_layer_result res[QZ_GROUP_MAX]; /* codes, scale, zero, losses, g_idx, perm */
  int nres;                          /* sets allocated */
  int64_t rin, rng, rows, in_max;    /* their sizes */
  float *q;                          /* [rows, in] dequantized rows */
};

static void bufs_free(struct qz_linear_bufs **pb) {
  struct qz_linear_bufs *b = *pb;
  if (!b) return;
  for (int k = 0; k < QZ_GROUP_MAX; k++) {
    qz_free(&b->res[k].codes);
    qz_free(&b->res[k].scale);
    qz_free(&b->res[k].zero);
    qz_free(&b->res[k].losses);
    qz_free(&b->res[k].g_idx);
    qz_free(&b->res[k].perm);
  }
  qz_free(&b->q);
  qz_free(pb);
}

/* Result sets [b->nres, n). Not collective. */
static int bufs_sets(struct qz_linear_bufs *b, int n) {
  for (; b->nres < n; b->nres++) {
    qz_layer_result *res = &b->res[b->nres];
    QZ_CALL(qz_alloc((size_t)b->rin, 1, "codes", &res->codes));
    QZ_CALL(qz_alloc((size_t)b->rng, 4, "scales", &res->scale));
    QZ_CALL(qz_alloc((size_t)b->rng, 4, "zeros", &res->zero));
    QZ_CALL(qz_alloc((size_t)b->rows, 4, "losses", &res->losses));
    QZ_CALL(qz_alloc((size_t)b->in_max, 4, "g_idx", &res->g_idx));
    QZ_CALL(qz_alloc((size_t)b->in_max, 4, "perm", &res->perm));
  }
  return QZ_OK;
}

/* Sizes of the largest linear on the rank with the most rows; nsets result
 * sets. Collective. */
static int bufs_fit(qz_qrun *r, int nsets) {
  if (r->bufs) {
    int st = r->bufs->nres < nsets ? bufs_sets(r->bufs, nsets) : QZ_OK;
    return qz_error_agree(r->ctx->comm, st);
  }
  int64_t rin = 1, rng = 1, rows = 1, in_max = 1;
  const qz_model_config *c = r->cfg;
  const int64_t Ie = c->moe_intermediate_size, Is = c->shared_expert_intermediate_size;
  const int64_t extra[4][2] = {{Ie, c->hidden_size}, {c->hidden_size, Ie},
                               {Is, c->hidden_size}, {c->hidden_size, Is}};
  for (int l = 0; l < QZ_LIN_COUNT + 4; l++) {
    int64_t out, in, r0, nr;
    if (l < QZ_LIN_COUNT) {
      qz_linear_shape(r->cfg, (qz_linear)l, &out, &in);
    } else {
      out = extra[l - QZ_LIN_COUNT][0];
      in = extra[l - QZ_LIN_COUNT][1];
      if (out <= 0 || in <= 0) continue;
    }
    qz_split_even(out, r->ctx->size, 0, &r0, &nr); /* rank 0 has the most */
    int64_t ng = qz_quant_ngroups(&r->o->mo.spec, in);
    rin = nr * in > rin ? nr * in : rin;
    rng = nr * ng > rng ? nr * ng : rng;
    rows = nr > rows ? nr : rows;
    in_max = in > in_max ? in : in_max;
  }
  int st = qz_calloc(1, sizeof *r->bufs, "linear buffers", &r->bufs);
  if (st == QZ_OK) {
    struct qz_linear_bufs *b = r->bufs;
    b->rin = rin, b->rng = rng, b->rows = rows, b->in_max = in_max;
    st = bufs_sets(b, nsets);
    if (st == QZ_OK) st = qz_alloc((size_t)rin, 4, "dequantized rows", &b->q);
  }
  if (st != QZ_OK) bufs_free(&r->bufs);
  return qz_error_agree(r->ctx->comm, st);
}

/* Checkpoint attributes and the manifest's stats of one linear. */
static int record_linear(qz_qrun *r, int layer, const char *module,
                         const qz_method_opts *mo, int64_t out, int64_t in,
                         int64_t ng, int64_t r0, int64_t nr, const qz_layer_result *res,
                         double loss, double secs) {
  MPI_Comm comm = r->ctx->comm;
  const int hess = (qz_method_needs(mo) & QZ_NEED_HESSIAN) != 0;
  qz_ckpt_linear_meta meta = {.bits = mo->spec.bits, .group_size = (int)mo->spec.groupsize,
                              .sym = mo->spec.sym, .act_order = mo->act_order,
                              .static_groups = mo->static_groups,
                              .damp_used = hess ? res->percdamp_used : 0.0,
                              .loss = loss, .seconds = secs};
  snprintf(meta.method, sizeof meta.method, "%s", qz_method_label(mo));
  snprintf(meta.grid, sizeof meta.grid, "%s", qz_vgrid_name((qz_vgrid)res->grid));
  qz_timer_start(QZ_PHASE_WRITE);
  int st = qz_ckpt_write_linear(r->ck, layer, module, out, in, ng, r0, nr,
                                res->codes, res->scale, res->zero, res->g_idx, res->perm,
                                &meta);
  st = qz_error_agree(comm, st);
  if (!st && (r->needs & QZ_CKPT_OUTLIERS))
    st = qz_ckpt_write_outliers(r->ck, layer, module, res->noutliers,
                                res->outlier_idx, res->outlier_val);
  qz_timer_stop(QZ_PHASE_WRITE);
  QZ_CALL(qz_error_agree(comm, st));
  kill_hook(r->ctx->rank, layer);
  /* storage cost: the method's layout (or the uniform int one) */
  qz_storage_bits sb = res->storage;
  if (sb.out == 0) qz_storage_bits_uniform(&mo->spec, out, in, &sb);
  int64_t nout = res->noutliers;
  QZ_CALL(qz_allreduce_i64(comm, &nout, 1, MPI_SUM));
  sb.noutliers = nout;
  const double bpp = qz_layer_bits_per_param(&sb);
  if (hess)
    qz_info("block %d %-17s loss %-12.6g damp %-8.3g dead %-4lld %.3f bit/param %.3f s",
            layer, module, loss, res->percdamp_used, (long long)res->ndead, bpp,
            secs);
  else
    qz_debug("block %d %-17s %.3f bit/param %.3f s", layer, module, bpp, secs);
  json_object_set_new(r->stats, module,
                      json_pack("{s:f, s:f, s:f, s:I, s:f, s:I, s:I}", "loss", loss, "damp",
                                meta.damp_used, "seconds", secs, "dead",
                                (json_int_t)res->ndead, "bits_per_param", bpp, "params",
                                (json_int_t)(out * in), "outliers", (json_int_t)nout));
  return QZ_OK;
}

/* One linear as the method sees it: its rows of W on this rank. */
typedef struct {
  const char *module;
  int64_t out, in, r0, nr, ng;
  float *W; /* the full [out, in] weight, replaced by what the checkpoint holds */
  char name[192];
  qz_layer L;
} module_in;

static void module_prep(qz_qrun *r, int layer, const char *module, int64_t out, int64_t in,
                        float *W, qz_hessian *H, const qz_method_opts *mo, module_in *m) {
  m->module = module;
  m->out = out, m->in = in, m->W = W;
  qz_split_even(out, r->ctx->size, r->ctx->rank, &m->r0, &m->nr);
  m->ng = qz_quant_ngroups(&mo->spec, in);
  snprintf(m->name, sizeof m->name, "model.layers.%d.%s", layer, module);
  m->L = (qz_layer){.name = m->name, .out_features = out, .in_features = in,
                    .row0 = m->r0, .nrows = m->nr, .w = W + m->r0 * in, .H = H,
                    .comm = r->ctx->comm};
}

/* After the method: the dequantized rows into W on every rank, the loss,
 * the checkpoint write. Collective. */
static int module_finish(qz_qrun *r, int layer, const qz_method_opts *mo, module_in *m,
                         qz_layer_result *res, double secs) {
  MPI_Comm comm = r->ctx->comm;
  qz_timer_start(QZ_PHASE_GATHER);
  int st = qz_linear_assemble(comm, m->out, m->in, m->ng, m->r0, m->nr, res->grid, res->codes,
                              res->scale, res->zero, res->g_idx, res->noutliers,
                              res->outlier_idx, res->outlier_val, r->bufs->q, m->W);
  qz_timer_stop(QZ_PHASE_GATHER);
  QZ_CALL(st);
  /* summed in row order: the attribute is the same at every np */
  double loss = 0;
  QZ_CALL(qz_sum_rows_ordered(comm, m->nr, res->losses, &loss));
  QZ_CALL(record_linear(r, layer, m->module, mo, m->out, m->in, m->ng, m->r0, m->nr, res,
                        loss, secs));
  return QZ_OK;
}

int qz_quantize_module(qz_qrun *r, int layer, const char *module, int64_t out, int64_t in,
                       float *W, qz_hessian *H, const qz_method_opts *mo, void *mstate) {
  MPI_Comm comm = r->ctx->comm;
  if (!mo) {
    mo = &r->o->mo;
    mstate = r->mstate;
  }
  module_in m;
  module_prep(r, layer, module, out, in, W, H, mo, &m);
  QZ_CALL(bufs_fit(r, 1));
  qz_layer_result res = r->bufs->res[0]; /* the buffers; the method fills the rest */
  double t0 = qz_wtime();
  int st = mo->ops->quantize_layer(mstate, &m.L, &res);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  QZ_CALL_DONE(module_finish(r, layer, mo, &m, &res, qz_wtime() - t0));
done:
  qz_free(&res.outlier_idx);
  qz_free(&res.outlier_val);
  return st;
}

/* The nl linears mods[] of block `layer` that share the Hessian H through
 * the method's group hook (one pass over H's work for all of them); each
 * linear's `seconds` is the group's time over nl. Collective. */
static int quantize_module_group(qz_qrun *r, int layer, qz_block_weights *w,
                                 const qz_linear *mods, int nl, qz_hessian *H) {
  MPI_Comm comm = r->ctx->comm;
  const qz_method_opts *mo = &r->o->mo;
  module_in m[QZ_GROUP_MAX];
  qz_layer L[QZ_GROUP_MAX];
  qz_layer_result res[QZ_GROUP_MAX];
  QZ_CALL(bufs_fit(r, nl));
  for (int k = 0; k < nl; k++) {
    int64_t out, in;
    qz_linear_shape(r->cfg, mods[k], &out, &in);
    module_prep(r, layer, qz_linear_name(mods[k]), out, in, w->w[mods[k]], H, mo, &m[k]);
    L[k] = m[k].L;
    L[k].name = m[k].name;
    res[k] = r->bufs->res[k];
  }
  double t0 = qz_wtime();
  int st = mo->ops->quantize_group(r->mstate, L, nl, res);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  double secs = (qz_wtime() - t0) / nl;
  for (int k = 0; k < nl; k++) QZ_CALL_DONE(module_finish(r, layer, mo, &m[k], &res[k], secs));
done:
  for (int k = 0; k < nl; k++) {
    qz_free(&res[k].outlier_idx);
    qz_free(&res[k].outlier_val);
  }
  return st;
}

/* Linear l of block `layer` with input Hessian H (NULL without one).
 * Collective on the run's communicator. */
static int quantize_linear(qz_qrun *r, int layer, qz_block_weights *w, qz_linear l,
                           qz_hessian *H) {
  int64_t out, in;
  qz_linear_shape(r->cfg, l, &out, &in);
  return qz_quantize_module(r, layer, qz_linear_name(l), out, in, w->w[l], H, NULL, NULL);
}

/* The linears of group `lins` (QZ_LIN_COUNT ends it) with their input
 * Hessian H: together through the method's group hook when it has one and
 * they share H, else one by one. Collective. */
static int quantize_lin_group(qz_qrun *r, int layer, qz_block_weights *w, const qz_linear *lins,
                              qz_hessian *H) {
  int nl = 0;
  while (nl < 3 && lins[nl] != QZ_LIN_COUNT) nl++;
  const char *e = getenv("MPIQUANT_GPTQ_GROUP"); /* =off: one linear at a time (tests, bench) */
  if (H && nl > 1 && r->o->mo.ops->quantize_group && !(e && !strcmp(e, "off")))
    return quantize_module_group(r, layer, w, lins, nl, H);
  for (int k = 0; k < nl; k++) QZ_CALL(quantize_linear(r, layer, w, lins[k], H));
  return QZ_OK;
}

static const qz_linear k_groups[4][3] = {
    {QZ_LIN_Q, QZ_LIN_K, QZ_LIN_V}, {QZ_LIN_O, QZ_LIN_COUNT, QZ_LIN_COUNT},
    {QZ_LIN_GATE, QZ_LIN_UP, QZ_LIN_COUNT}, {QZ_LIN_DOWN, QZ_LIN_COUNT, QZ_LIN_COUNT}};
static const qz_fwd_stage k_group_stage[4] = {QZ_STAGE_QKV_IN, QZ_STAGE_O_IN,
                                              QZ_STAGE_GATEUP_IN, QZ_STAGE_DOWN_IN};

/* Hessian of one group's input from this rank's tokens. Collective. */
static int group_hessian(qz_qrun *r, qz_fwd *f, int b_layer, int g, qz_hessian **H) {
  int64_t ncols;
  const float *x = qz_fwd_stage_output(f, k_group_stage[g], &ncols);
  if (r->rot_hook.fn) { /* what the linears multiply: the rotated input (R4) */
    if (!r->hx) {
      int64_t c = r->cfg->hidden_size > r->cfg->intermediate_size ? r->cfg->hidden_size
                                                                   : r->cfg->intermediate_size;
      QZ_CALL(qz_error_agree(r->ctx->comm,
                             qz_alloc_big((size_t)(qz_fwd_ntok(f) * c + 1) * sizeof(float),
                                          "rotated group input", (void **)&r->hx)));
    }
    r->rot_hook.fn(r->rot_hook.ctx, b_layer, k_groups[g][0], x, qz_fwd_ntok(f), ncols, r->hx);
    x = r->hx;
  }
  QZ_CALL(qz_quantize_hessian_for(&r->hc, r->grid, ncols, H));
  /* folded straight from the stage buffer (no copy of the rows: T x d
   * floats, the size of the FFN input for down), one chunk per window */
  qz_hessian_count_sequences(*H, qz_fwd_nwin(f));
  QZ_CALL(qz_hessian_accumulate(*H, x, qz_fwd_ntok(f)));
  QZ_CALL(qz_hessian_reduce(*H));
  return QZ_OK;
}

/* DuQuant's activation sample: per calibration window the token of the
 * largest max |x| (rows [nwin, n] in window order on every rank, whatever
 * the split of the windows). Collective. */
static int duquant_sample(qz_qrun *r, qz_block_ctx *b, const float *x, int64_t n, float *smp) {
  const int64_t L = qz_fwd_seqlen(b->f), mine = qz_fwd_nwin(b->f);
  for (int64_t w = 0; w < mine; w++) {
    int64_t best = 0;
    float bv = -1.0f;
    for (int64_t t = 0; t < L; t++) {
      float mx = 0.0f;
      for (int64_t j = 0; j < n; j++) mx = fmaxf(mx, fabsf(x[(w * L + t) * n + j]));
      if (mx > bv) bv = mx, best = t;
    }
    memcpy(smp + (b->win0 + w) * n, x + (w * L + best) * n, (size_t)n * sizeof *smp);
  }
  int size = r->ctx->size, counts[size], displs[size];
  for (int p = 0; p < size; p++) {
    int64_t f0, c;
    qz_shard_windows(b->nwin, size, p, &f0, &c);
    counts[p] = (int)(c * n);
    displs[p] = (int)(f0 * n);
  }
  QZ_CALL_MPI(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, smp, counts, displs, MPI_FLOAT,
                             b->comm));
  qz_count_allgatherv(b->comm, counts, 4);
  return QZ_OK;
}

/* DuQuant: group g's transform from its calibration input (per-channel
 * max |x| over every rank's tokens: an exact MAX reduction; the sample of
 * duquant_sample) and its weights' column maxima, fused into the group's
 * linears and written to the checkpoint (with the sample); the forward's
 * hook applies it from now on. Collective. */
static int duquant_group(qz_qrun *r, qz_block_ctx *b, int g) {
  int64_t n, bs, ncols;
  qz_rot_duq_shape(r->rot, g, &n, &bs);
  const float *x = qz_fwd_stage_output(b->f, k_group_stage[g], &ncols);
  QZ_CHECK(x && ncols == n, QZ_ERR_INTERNAL, "DuQuant group %d: input of %lld columns",
           g, (long long)ncols);
  float *amax = NULL, *wmax = NULL, *smp = NULL;
  int st = qz_calloc((size_t)n, sizeof *amax, "DuQuant amax", &amax);
  if (!st) st = qz_calloc((size_t)n, sizeof *wmax, "DuQuant wmax", &wmax);
  if (!st) st = qz_calloc((size_t)(b->nwin * n), sizeof *smp, "DuQuant sample", &smp);
  QZ_CALL_DONE(qz_error_agree(b->comm, st));
  for (int64_t t = 0, T = qz_fwd_ntok(b->f); t < T; t++)
    for (int64_t j = 0; j < n; j++) amax[j] = fmaxf(amax[j], fabsf(x[t * n + j]));
  QZ_CALL_MPI_DONE(MPI_Allreduce(MPI_IN_PLACE, amax, (int)n, MPI_FLOAT, MPI_MAX, b->comm));
  qz_count_allreduce(b->comm, 4 * n);
  QZ_CALL_DONE(duquant_sample(r, b, x, n, smp));
  for (int k = 0; k < 3 && k_groups[g][k] != QZ_LIN_COUNT; k++) {
    int64_t out, in;
    qz_linear_shape(r->cfg, k_groups[g][k], &out, &in);
    const float *w = b->w->w[k_groups[g][k]];
    for (int64_t i = 0; i < out; i++)
      for (int64_t j = 0; j < n; j++) wmax[j] = fmaxf(wmax[j], fabsf(w[i * n + j]));
  }
  st = qz_rot_duq_build(r->rot, b->layer, g, amax, wmax, smp, b->nwin);
  QZ_CALL_DONE(qz_error_agree(b->comm, st));
  for (int k = 0; k < 3 && k_groups[g][k] != QZ_LIN_COUNT; k++) {
    int64_t out, in;
    qz_linear_shape(r->cfg, k_groups[g][k], &out, &in);
    qz_rot_duq_fuse(r->rot, g, b->w->w[k_groups[g][k]], out);
  }
  QZ_CALL_DONE(qz_rotcli_write_group(r->ck, b->layer, g, r->rot));
  char name[64];
  snprintf(name, sizeof name, "duquant.%s.sample", qz_duq_group_name(g));
  QZ_CALL_DONE(qz_ckpt_write_aux(r->ck, b->layer, name, b->nwin, n, smp));
done:
  qz_free(&amax);
  qz_free(&wmax);
  qz_free(&smp);
  return st;
}

/* ---- the services a method's block hook gets (method.h qz_block_ctx) ---- */

static int svc_linear(qz_block_ctx *b, qz_linear l, qz_hessian *H) {
  return quantize_linear(b->drv, b->layer, b->w, l, H);
}

static int svc_commit(qz_block_ctx *b) {
  qz_qrun *r = b->drv;
  QZ_CALL(qz_error_agree(r->ctx->comm, qz_fwd_block_commit(b->f)));
  return QZ_OK;
}

static void svc_stat(qz_block_ctx *b, const char *key, struct json_t *value) {
  qz_qrun *r = b->drv;
  json_object_set_new(r->stats, key, value);
}

static int svc_aux(qz_block_ctx *b, const char *name, int64_t n0, int64_t n1,
                   const float *v) {
  qz_qrun *r = b->drv;
  qz_timer_start(QZ_PHASE_WRITE);
  int st = qz_ckpt_write_aux(r->ck, b->layer, name, n0, n1, v);
  qz_timer_stop(QZ_PHASE_WRITE);
  QZ_CALL(qz_error_agree(r->ctx->comm, st));
  return QZ_OK;
}

/* One group's input on every rank's windows. Collective. */
static int forward_to(qz_block_ctx *b, qz_fwd_stage stage) {
  qz_timer_start(QZ_PHASE_FORWARD);
  int st = qz_fwd_run(b->f, b->w, stage);
  qz_timer_stop(QZ_PHASE_FORWARD);
  QZ_CALL(qz_error_agree(b->comm, st));
  return QZ_OK;
}

int qz_quantize_groups(qz_block_ctx *b, int ngroups) {
  qz_qrun *r = b->drv;
  qz_fwd_block_begin(b->f);
  if (!r->o->true_sequential) /* every group's input from the fp block */
    QZ_CALL(forward_to(b, k_group_stage[ngroups - 1]));
  for (int g = 0; g < ngroups; g++) {
    if (r->o->true_sequential) QZ_CALL(forward_to(b, k_group_stage[g]));
    qz_hessian *H = NULL;
    if (r->needs & QZ_NEED_HESSIAN) QZ_CALL(group_hessian(r, b->f, b->layer, g, &H));
    QZ_CALL(quantize_lin_group(r, b->layer, b->w, k_groups[g], H));
  }
  if (!r->o->true_sequential) qz_fwd_invalidate(b->f, QZ_STAGE_O_IN);
  return QZ_OK;
}

int qz_quantize_forward_to(qz_block_ctx *b, qz_fwd_stage stage) {
  return forward_to(b, stage);
}

static int svc_sequential(qz_block_ctx *b) {
  qz_qrun *r = b->drv;
  qz_fwd_block_begin(b->f);
  if (!r->o->true_sequential) /* every group's input from the fp block */
    QZ_CALL(forward_to(b, QZ_STAGE_DOWN_IN));
  for (int g = 0; g < 4; g++) {
    if (r->o->true_sequential) QZ_CALL(forward_to(b, k_group_stage[g]));
    if (r->rot && qz_rot_params_of(r->rot)->kind == QZ_ROT_DUQUANT)
      QZ_CALL(duquant_group(r, b, g));
    qz_hessian *H = NULL;
    if (r->needs & QZ_NEED_HESSIAN) QZ_CALL(group_hessian(r, b->f, b->layer, g, &H));
    QZ_CALL(quantize_lin_group(r, b->layer, b->w, k_groups[g], H));
  }
  if (!r->o->true_sequential) qz_fwd_invalidate(b->f, QZ_STAGE_O_IN);
  QZ_CALL(forward_to(b, QZ_STAGE_OUT));
  return svc_commit(b);
}

/* Factor bytes, panels and seconds streamed to this rank by the cached
 * Hessians. Not collective. */
static void stream_count(const qz_qrun *r, int64_t *bytes, int64_t *panels, double *secs) {
  *bytes = *panels = 0;
  *secs = 0.0;
  for (int i = 0; i < QZ_HCACHE_N; i++) {
    int64_t b, p;
    double s;
    qz_hessian_factor_stream(r->hc.h[i], &b, &p, &s);
    *bytes += b, *panels += p, *secs += s;
  }
}

int qz_quantize_block(qz_qrun *r, int layer, qz_block_weights *w) {
  int64_t sb0, sp0, sb1, sp1;
  double ss0, ss1;
  stream_count(r, &sb0, &sp0, &ss0);
  qz_block_ctx b = {.comm = r->ctx->comm, .cfg = r->cfg, .layer = layer, .f = r->f, .w = w,
                    .win0 = r->win0, .nwin = r->nwin, .linear = svc_linear,
                    .sequential = svc_sequential, .commit = svc_commit, .stat = svc_stat,
                    .drv = r, .aux = svc_aux};
  const qz_method_ops *ops = r->o->mo.ops;
  if (w->moe) {
    QZ_CALL(qz_quantize_moe_block(r, &b));
  } else if (ops->quantize_block) {
    QZ_CALL(ops->quantize_block(r->mstate, &b));
  } else if (r->needs & QZ_NEED_CALIB) {
    QZ_CALL(svc_sequential(&b));
  } else {
    for (int l = 0; l < QZ_LIN_COUNT; l++) QZ_CALL(quantize_linear(r, layer, w, (qz_linear)l, NULL));
  }
  stream_count(r, &sb1, &sp1, &ss1);
  if (sp1 > sp0)
    qz_debug("block %d: factor streamed to this rank: %lld panels, %lld bytes, %.3f s", layer,
             (long long)(sp1 - sp0), (long long)(sb1 - sb0), ss1 - ss0);
  if (r->rot) QZ_CALL(qz_rotcli_write_probes(r->ck, layer, r->rot));
  if ((r->needs & QZ_CKPT_NORMS) || r->rot) /* folded scales; rotation: unit norms */
    QZ_CALL(qz_ckpt_write_norms(r->ck, layer, w->hidden, w->attn_norm, w->ffn_norm));
  double bits = 0, params = 0;
  qz_stats_bits(r->stats, &bits, &params);
  if (params > 0) {
    json_object_set_new(r->stats, "bits_per_param", json_real(bits / params));
    qz_info("block %d: %.4f bits per parameter", layer, bits / params);
  }
  return QZ_OK;
}

void qz_stats_bits(json_t *stats, double *bits, double *params) {
  const char *k;
  json_t *v;
  json_object_foreach(stats, k, v) {
    json_t *b = json_object_get(v, "bits_per_param"), *p = json_object_get(v, "params");
    if (!json_is_object(v) || !json_is_number(b) || !json_is_integer(p)) continue;
    *bits += json_number_value(b) * (double)json_integer_value(p);
    *params += (double)json_integer_value(p);
  }
}

int qz_quantize_ckpt_bits(const char *dir, double *bpp) {
  char path[4096];
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  json_error_t je;
  json_t *m = json_load_file(path, 0, &je);
  QZ_CHECK(m, QZ_ERR_FORMAT, "%s: %s (line %d)", path, je.text, je.line);
  double bits = 0, params = 0;
  size_t i;
  json_t *b;
  json_array_foreach(json_object_get(m, "completed_blocks"), i, b)
    qz_stats_bits(json_object_get(b, "stats"), &bits, &params);
  json_decref(m);
  *bpp = params > 0 ? bits / params : 0.0;
  return QZ_OK;
}

void qz_quantize_run_free(qz_qrun *r) {
  for (int i = 0; i < QZ_HCACHE_N; i++) qz_hessian_destroy(&r->hc.h[i]);
  qz_quantize_moe_free(r);
  bufs_free(&r->bufs);
  qz_free_big((void **)&r->hx, 0);
}
