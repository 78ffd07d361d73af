/* mpiquant quantize: one decoder block. The method's block hook, or the
 * true-sequential default ([q,k,v] -> [o] -> [gate,up] -> [down]: the
 * group's input from the forward with the earlier groups quantized, its
 * Hessian, its linears), and per linear: the method's hook on this rank's
 * rows, the dequantized rows gathered back into the block (the forward
 * continues with exactly the weights the checkpoint holds) and this rank's
 * rows written collectively. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/codes.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/timing.h"
#include "qblock.h"
#include "quantize.h"

static int hessian_for(qz_hcache *c, qz_grid *g, int64_t d, qz_hessian **out) {
  for (int i = 0; i < 3; i++)
    if (c->h[i] && c->d[i] == d) {
      qz_hessian_reset(c->h[i]);
      *out = c->h[i];
      return QZ_OK;
    }
  for (int i = 0; i < 3; i++)
    if (!c->h[i]) {
      QZ_CALL(qz_hessian_create(g, d, &c->h[i]));
      c->d[i] = d;
      *out = c->h[i];
      return QZ_OK;
    }
  QZ_FAIL(QZ_ERR_INTERNAL, "more than 3 distinct layer input widths");
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
 * the model (not once per linear). */
struct qz_linear_bufs {
  qz_layer_result res; /* codes, scale, zero, losses, g_idx, perm */
  float *q;            /* [rows, in] dequantized rows */
};

static void bufs_free(struct qz_linear_bufs **pb) {
  struct qz_linear_bufs *b = *pb;
  if (!b) return;
  qz_free(&b->res.codes);
  qz_free(&b->res.scale);
  qz_free(&b->res.zero);
  qz_free(&b->res.losses);
  qz_free(&b->res.g_idx);
  qz_free(&b->res.perm);
  qz_free(&b->q);
  qz_free(pb);
}

/* Sizes of the largest linear on the rank with the most rows. Collective. */
static int bufs_fit(qz_qrun *r) {
  if (r->bufs) return QZ_OK;
  int64_t rin = 1, rng = 1, rows = 1, in_max = 1;
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t out, in, r0, nr;
    qz_linear_shape(r->cfg, (qz_linear)l, &out, &in);
    qz_split_even(out, r->ctx->size, 0, &r0, &nr); /* rank 0 has the most */
    int64_t ng = qz_quant_ngroups(&r->o->mo.spec, in);
    rin = nr * in > rin ? nr * in : rin;
    rng = nr * ng > rng ? nr * ng : rng;
    rows = nr > rows ? nr : rows;
    in_max = in > in_max ? in : in_max;
  }
  int st = qz_calloc(1, sizeof *r->bufs, "linear buffers", &r->bufs);
  qz_layer_result *res = r->bufs ? &r->bufs->res : NULL;
  if (st == QZ_OK) st = qz_alloc((size_t)rin, 1, "codes", &res->codes);
  if (st == QZ_OK) st = qz_alloc((size_t)rng, 4, "scales", &res->scale);
  if (st == QZ_OK) st = qz_alloc((size_t)rng, 4, "zeros", &res->zero);
  if (st == QZ_OK) st = qz_alloc((size_t)rows, 4, "losses", &res->losses);
  if (st == QZ_OK) st = qz_alloc((size_t)in_max, 4, "g_idx", &res->g_idx);
  if (st == QZ_OK) st = qz_alloc((size_t)in_max, 4, "perm", &res->perm);
  if (st == QZ_OK) st = qz_alloc((size_t)rin, 4, "dequantized rows", &r->bufs->q);
  if (st != QZ_OK) bufs_free(&r->bufs);
  return qz_error_agree(r->ctx->comm, st);
}

/* Checkpoint attributes and the manifest's stats of one linear. */
static int record_linear(qz_qrun *r, int layer, qz_linear l, int64_t out, int64_t in,
                         int64_t ng, int64_t r0, int64_t nr, const qz_layer_result *res,
                         double loss, double secs) {
  MPI_Comm comm = r->ctx->comm;
  const qz_method_opts *mo = &r->o->mo;
  const int hess = (r->needs & QZ_NEED_HESSIAN) != 0;
  qz_ckpt_linear_meta meta = {.bits = mo->spec.bits, .group_size = (int)mo->spec.groupsize,
                              .sym = mo->spec.sym, .act_order = mo->act_order,
                              .static_groups = mo->static_groups,
                              .damp_used = hess ? res->percdamp_used : 0.0,
                              .loss = loss, .seconds = secs};
  snprintf(meta.method, sizeof meta.method, "%s", qz_method_label(mo));
  snprintf(meta.grid, sizeof meta.grid, "%s", qz_vgrid_name((qz_vgrid)res->grid));
  qz_timer_start(QZ_PHASE_WRITE);
  int st = qz_ckpt_write_linear(r->ck, layer, qz_linear_name(l), out, in, ng, r0, nr,
                                res->codes, res->scale, res->zero, res->g_idx, res->perm,
                                &meta);
  st = qz_error_agree(comm, st);
  if (!st && (r->needs & QZ_CKPT_OUTLIERS))
    st = qz_ckpt_write_outliers(r->ck, layer, qz_linear_name(l), res->noutliers,
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
            layer, qz_linear_name(l), loss, res->percdamp_used, (long long)res->ndead, bpp,
            secs);
  else
    qz_debug("block %d %-17s %.3f bit/param %.3f s", layer, qz_linear_name(l), bpp, secs);
  json_object_set_new(r->stats, qz_linear_name(l),
                      json_pack("{s:f, s:f, s:f, s:I, s:f, s:I, s:I}", "loss", loss, "damp",
                                meta.damp_used, "seconds", secs, "dead",
                                (json_int_t)res->ndead, "bits_per_param", bpp, "params",
                                (json_int_t)(out * in), "outliers", (json_int_t)nout));
  return QZ_OK;
}

/* Quantize linear l of block `layer` whose input Hessian is H (NULL without
 * one), replace w->w[l] by its dequantized weights, write this rank's rows.
 * Collective on the run's communicator. */
static int quantize_linear(qz_qrun *r, int layer, qz_block_weights *w, qz_linear l,
                           qz_hessian *H) {
  MPI_Comm comm = r->ctx->comm;
  int64_t out, in, r0, nr;
  qz_linear_shape(r->cfg, l, &out, &in);
  qz_split_even(out, r->ctx->size, r->ctx->rank, &r0, &nr);
  int64_t ng = qz_quant_ngroups(&r->o->mo.spec, in);
  QZ_CALL(bufs_fit(r));
  char name[128];
  snprintf(name, sizeof name, "model.layers.%d.%s", layer, qz_linear_name(l));
  qz_layer_result res = r->bufs->res; /* the buffers; the method fills the rest */
  qz_layer layer_in = {.name = name, .out_features = out, .in_features = in,
                       .row0 = r0, .nrows = nr, .w = w->w[l] + r0 * in, .H = H,
                       .comm = comm};
  double t0 = qz_wtime();
  int st = r->o->mo.ops->quantize_layer(r->mstate, &layer_in, &res);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  double secs = qz_wtime() - t0;
  QZ_CALL_DONE(qz_linear_assemble(comm, out, in, ng, r0, nr, res.grid, res.codes, res.scale, res.zero,
                                  res.g_idx, res.noutliers, res.outlier_idx,
                                  res.outlier_val, r->bufs->q, w->w[l]));
  /* summed in row order: the attribute is the same at every np */
  double loss = 0;
  QZ_CALL_DONE(qz_sum_rows_ordered(comm, nr, res.losses, &loss));
  QZ_CALL_DONE(record_linear(r, layer, l, out, in, ng, r0, nr, &res, loss, secs));
done:
  qz_free(&res.outlier_idx);
  qz_free(&res.outlier_val);
  return st;
}

static const qz_linear k_groups[4][3] = {
    {QZ_LIN_Q, QZ_LIN_K, QZ_LIN_V}, {QZ_LIN_O, QZ_LIN_COUNT, QZ_LIN_COUNT},
    {QZ_LIN_GATE, QZ_LIN_UP, QZ_LIN_COUNT}, {QZ_LIN_DOWN, QZ_LIN_COUNT, QZ_LIN_COUNT}};
static const qz_fwd_stage k_group_stage[4] = {QZ_STAGE_QKV_IN, QZ_STAGE_O_IN,
                                              QZ_STAGE_GATEUP_IN, QZ_STAGE_DOWN_IN};

/* Hessian of one group's input from this rank's tokens. Collective. */
static int group_hessian(qz_qrun *r, qz_fwd *f, int g, qz_hessian **H) {
  int64_t ncols;
  const float *x = qz_fwd_stage_output(f, k_group_stage[g], &ncols);
  QZ_CALL(hessian_for(&r->hc, r->grid, ncols, H));
  qz_timer_start(QZ_PHASE_HESSIAN);
  int st = qz_hessian_add_rows(*H, x, qz_fwd_ntok(f));
  qz_hessian_count_sequences(*H, qz_fwd_nwin(f));
  qz_timer_stop(QZ_PHASE_HESSIAN);
  QZ_CALL(qz_error_agree(r->ctx->comm, st));
  QZ_CALL(qz_hessian_reduce(*H));
  return QZ_OK;
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

static int svc_sequential(qz_block_ctx *b) {
  qz_qrun *r = b->drv;
  qz_fwd_block_begin(b->f);
  if (!r->o->true_sequential) /* every group's input from the fp block */
    QZ_CALL(forward_to(b, QZ_STAGE_DOWN_IN));
  for (int g = 0; g < 4; g++) {
    if (r->o->true_sequential) QZ_CALL(forward_to(b, k_group_stage[g]));
    qz_hessian *H = NULL;
    if (r->needs & QZ_NEED_HESSIAN) QZ_CALL(group_hessian(r, b->f, g, &H));
    for (int k = 0; k < 3 && k_groups[g][k] != QZ_LIN_COUNT; k++)
      QZ_CALL(quantize_linear(r, b->layer, b->w, k_groups[g][k], H));
  }
  if (!r->o->true_sequential) qz_fwd_invalidate(b->f, QZ_STAGE_O_IN);
  QZ_CALL(forward_to(b, QZ_STAGE_OUT));
  return svc_commit(b);
}

int qz_quantize_block(qz_qrun *r, int layer, qz_block_weights *w) {
  qz_block_ctx b = {.comm = r->ctx->comm, .cfg = r->cfg, .layer = layer, .f = r->f, .w = w,
                    .win0 = r->win0, .nwin = r->nwin, .linear = svc_linear,
                    .sequential = svc_sequential, .commit = svc_commit, .stat = svc_stat,
                    .drv = r, .aux = svc_aux};
  const qz_method_ops *ops = r->o->mo.ops;
  if (ops->quantize_block) {
    QZ_CALL(ops->quantize_block(r->mstate, &b));
  } else if (r->needs & QZ_NEED_CALIB) {
    QZ_CALL(svc_sequential(&b));
  } else {
    for (int l = 0; l < QZ_LIN_COUNT; l++) QZ_CALL(quantize_linear(r, layer, w, (qz_linear)l, NULL));
  }
  if (r->needs & QZ_CKPT_NORMS) /* folded scales */
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
  for (int i = 0; i < 3; i++) qz_hessian_destroy(&r->hc.h[i]);
  bufs_free(&r->bufs);
}
