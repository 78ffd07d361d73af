/* mpiquant quantize: the layer-sequential pipeline (DESIGN.md steps 1-7).
 *
 * Per block l: load its weights once per job (1/P of the rows per rank +
 * allgather), then the method quantizes the block (quantize_block.c: by
 * default true-sequential groups [q,k,v] -> [o] -> [gate,up] -> [down],
 * each group's input from the forward on every rank's own calibration
 * windows with the earlier groups already quantized, its Hessian reduced
 * into block-cyclic form, each rank's rows of W quantized, gathered back and
 * written collectively). The block output with all 7 quantized linears is
 * the next block's input. The command line and resume identity live in
 * quantize_cli.c, the calibration stream in quantize_calib.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/grid.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/shard.h"
#include "mpiquant/timing.h"
#include "quantize.h"

/* What one run holds besides qz_qrun. */
typedef struct {
  qz_model *m;
  int32_t *win;              /* [nwin, L] calibration windows */
  int64_t nwin, L, first, count;
  uint64_t calib_hash;
  qz_block_weights w;
  int lb, le, b0;            /* selected blocks [lb, le); first to do */
} qrun_io;

/* The checkpoint: created, or reopened for --resume when the options and
 * the source are the same. Collective. */
static int open_ckpt(qz_qrun *r, qrun_io *io) {
  MPI_Comm comm = r->ctx->comm;
  const qz_qopts *o = r->o;
  char *src = NULL, *opt = NULL;
  int st = QZ_OK;
  /* config, files and a digest of their content: resume refuses another model */
  QZ_CALL_DONE(qz_ckpt_source_fingerprint(comm, o->model, &src));
  qz_qopts oj = *o;
  oj.is_moe = qz_config_any_moe(r->cfg);
  opt = qz_quantize_options_json(&oj, io->nwin, io->L, io->calib_hash);
  QZ_CHECK_DONE(opt, QZ_ERR_MEM, "cannot serialise the options");
  char absdir[4096];
  if (!realpath(o->model, absdir)) snprintf(absdir, sizeof absdir, "%s", o->model);
  int nblocks = (int)r->cfg->num_hidden_layers;
  qz_ckpt_params cp = {.options_json = opt, .source_json = src, .nblocks = nblocks,
                       .blocks_per_file = o->blocks_per_file
                                              ? (int)o->blocks_per_file
                                              : qz_quantize_blocks_per_file(r->cfg),
                       .zstd_level = (int)o->zstd_level, .mpiquant_version = MPIQUANT_VERSION,
                       .model_dir = absdir};
  QZ_CALL_DONE(qz_ckpt_create(comm, o->out, &cp, o->resume, &r->ck));
done:
  free(src);
  free(opt);
  return st;
}

/* Per-rank memory, stated before the work starts. Not collective. */
static void log_plan(const qz_qrun *r, const qrun_io *io) {
  const qz_qopts *o = r->o;
  const qz_model_config *cfg = r->cfg;
  int hess = (r->needs & QZ_NEED_HESSIAN) != 0;
  char a[32], b[32], c2[32], d[32];
  double dmax = (double)(cfg->intermediate_size > cfg->hidden_size ? cfg->intermediate_size
                                                                 : cfg->hidden_size);
  double hbytes = hess ? 8.0 * dmax * dmax / r->ctx->size : 0.0;
  qz_info("quantize %s: %s w%d g%lld%s%s, blocks %d..%d of %lld, %lld windows x %lld "
          "tokens over %d ranks",
          o->model, o->mo.ops->name, o->mo.spec.bits, (long long)o->mo.spec.groupsize,
          o->mo.spec.sym ? " sym" : "", o->mo.act_order ? " act-order" : "", io->lb,
          io->le - 1, (long long)cfg->num_hidden_layers, (long long)io->nwin,
          (long long)io->L, r->ctx->size);
  qz_info("memory per rank: block weights %s + forward workspace %s (%lld windows) "
          "+ largest Hessian share ~%s (8*d^2/P, d=%.0f) + panels ~%s",
          qz_fmt_bytes((double)io->w.mem_bytes, a, sizeof a),
          qz_fmt_bytes(r->f ? (double)qz_fwd_bytes(r->f) : 0.0, b, sizeof b),
          (long long)io->count, qz_fmt_bytes(hbytes, c2, sizeof c2), dmax,
          qz_fmt_bytes(hess ? 2.0 * 4.0 * dmax * (double)o->mo.blocksize : 0.0, d, sizeof d)); /* f32 */
  if (r->grid) {
    int pr, pc;
    qz_grid_shape(r->grid, &pr, &pc, NULL, NULL);
    qz_info("Hessians and factors on a %dx%d process grid, nb %d (--proc-grid %s): %s", pr, pc,
            qz_grid_nb(r->grid), qz_grid_policy_name(),
            qz_grid_is_1d(r->grid) ? "the factors' bits do not depend on the rank count"
                                   : "a wide layer's factor may differ in its last bits "
                                     "from another grid's");
  }
}

/* Model, method, calibration windows, checkpoint, and the hidden states at
 * the first block to do (io->b0 == io->le: nothing to do). Collective. */
static int setup(qz_qrun *r, qrun_io *io) {
  MPI_Comm comm = r->ctx->comm;
  const qz_qopts *o = r->o;
  QZ_CALL(qz_model_open(comm, o->model, &io->m));
  r->cfg = qz_model_config_of(io->m);
  r->m = io->m;
  /* an already-quantized model (FP8, compressed-tensors, GPTQ v1) is read
   * dequantized, one block at a time, and quantized again */
  if (qz_config_quantized(r->cfg))
    qz_info("quantize: %s is stored quantized (%s): its linears are dequantized on read",
            o->model, qz_config_quantized(r->cfg));
  int nblocks = (int)r->cfg->num_hidden_layers;
  io->lb = (int)o->layer_begin;
  io->le = o->layer_end < 0 ? nblocks : (int)o->layer_end;
  QZ_CHECK(io->lb < nblocks && io->le <= nblocks, QZ_ERR_USAGE,
           "--layers %d:%d outside the model's %d blocks", io->lb, io->le, nblocks);
  r->needs = qz_method_needs(&o->mo);
  QZ_CHECK(!qz_config_any_moe(r->cfg) || o->rot.kind == QZ_ROT_NONE, QZ_ERR_UNSUPPORTED,
           "quantize --rotate: %s is a mixture-of-experts model; rotations of MoE blocks "
           "are not supported yet", o->model);
  /* a block hook handles MoE blocks with prepare_expert, without Hessians
   * (method.h); refuse before any file is written */
  const int moe_ok = !o->mo.ops->quantize_block ||
                     (o->mo.ops->prepare_expert && !(r->needs & QZ_NEED_HESSIAN));
  for (int l = io->lb; l < io->le; l++)
    QZ_CHECK(!qz_config_layer_moe(r->cfg, l) || moe_ok, QZ_ERR_UNSUPPORTED,
             "quantize --method %s: %s has mixture-of-experts blocks (block %d), which this "
             "method%s does not support yet (gptq, rtn, quantease and awq do; docs/moe.md)",
             o->mo.ops->name, o->model, l,
             o->mo.ops->prepare_expert ? " with these options" : "");
  if (o->rot.kind == QZ_ROT_DUQUANT) /* statistics of the calibration inputs */
    r->needs |= QZ_NEED_CALIB;
  if (o->rot.kind != QZ_ROT_NONE) {
    QZ_CALL(qz_rot_create(r->cfg, &o->rot, &r->rot));
    qz_info("quantize: rotations %s", qz_rot_describe(r->rot));
  }
  QZ_CALL(o->mo.ops->setup(&o->mo, &r->mstate));
  QZ_CHECK(!(r->needs & QZ_NEED_CALIB) || o->calib || o->calib_tokens, QZ_ERR_USAGE,
           "quantize --method %s needs calibration data: --calib TEXT or "
           "--calib-tokens FILE", o->mo.ops->name);
  if (r->needs & QZ_NEED_CALIB)
    QZ_CALL(qz_quantize_windows(comm, o, r->cfg, &io->win, &io->nwin, &io->L,
                                &io->calib_hash));
  QZ_CALL(open_ckpt(r, io));
  for (io->b0 = io->lb; io->b0 < io->le && qz_ckpt_block_done(r->ck, io->b0);) io->b0++;
  if (io->b0 >= io->le) return QZ_OK;
  qz_shard_windows(io->nwin, r->ctx->size, r->ctx->rank, &io->first, &io->count);
  r->win0 = io->first;
  r->nwin = io->nwin;
  /* MoE experts are streamed one at a time (quantize_moe.c), never all in f32 */
  QZ_CALL(qz_error_agree(comm, qz_block_weights_alloc_ex(r->cfg, 0, &io->w)));
  if (r->needs & QZ_NEED_CALIB)
    QZ_CALL(qz_error_agree(comm, qz_fwd_create(r->cfg, io->count, io->L, &r->f)));
  if (r->f && r->rot) { /* R4 online in the calibration forward (unquantized) */
    r->rot_hook = qz_rot_act_hook(r->rot, 0);
    QZ_CALL(qz_error_agree(comm, qz_fwd_set_act_hook(r->f, &r->rot_hook)));
  }
  if (r->needs & QZ_NEED_HESSIAN) QZ_CALL(qz_grid_create(comm, (int)o->nb, &r->grid));
  log_plan(r, io);
  if (r->needs & QZ_NEED_CALIB)
    QZ_CALL(qz_quantize_stream_to(comm, io->m, r->ck, r->f, &io->w, io->win, io->nwin, io->L,
                                  io->first, io->count, io->b0, r->needs, r->rot));
  return QZ_OK;
}

/* Block b: load, quantize, record; a hidden-state snapshot every
 * snap_every blocks for resume. Collective. */
static int run_block(qz_qrun *r, qrun_io *io, int b, int snap_every) {
  double tb = qz_wtime();
  r->stats = json_object();
  /* MoE blocks: norms, attention, routers; experts are read one at a time */
  QZ_CALL(qz_model_load_block_mask(io->m, b, qz_config_layer_moe(r->cfg, b)
                                                 ? QZ_LIN_ALL & ~((1u << QZ_LIN_GATE) |
                                                                  (1u << QZ_LIN_UP) |
                                                                  (1u << QZ_LIN_DOWN))
                                                 : QZ_LIN_ALL,
                                   &io->w));
  /* the next block's linears travel while this one is quantized */
  if (b + 1 < io->le) QZ_CALL(qz_model_prefetch_block(io->m, b + 1));
  if (r->rot) qz_rot_fuse_block(r->rot, &io->w); /* the method sees rotated weights */
  QZ_CALL(qz_ckpt_begin_block(r->ck, b));
  QZ_CALL(qz_quantize_block(r, b, &io->w));
  json_object_set_new(r->stats, "seconds", json_real(qz_wtime() - tb));
  char *stxt = json_dumps(r->stats, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(r->stats);
  r->stats = NULL;
  int st = qz_ckpt_end_block(r->ck, b, stxt);
  free(stxt);
  QZ_CALL(st);
  if ((r->needs & QZ_NEED_CALIB) && b + 1 < io->le && (b + 1) % snap_every == 0) {
    qz_timer_start(QZ_PHASE_WRITE);
    st = qz_ckpt_write_snapshot(r->ck, b + 1, io->nwin, io->L, r->cfg->hidden_size,
                                io->first, io->count, qz_fwd_hidden(r->f));
    qz_timer_stop(QZ_PHASE_WRITE);
    QZ_CALL(st);
  }
  return QZ_OK;
}

static int report(const qz_qrun *r, const qrun_io *io, double t_start) {
  int64_t bytes = 0;
  QZ_CALL(qz_model_bytes_read_total(io->m, &bytes));
  char a[32], b[32], c[32];
  qz_info("quantize: done in %.2f s; weights read %s in total (model %s); checkpoint %s "
          "holds %s",
          qz_wtime() - t_start, qz_fmt_bytes((double)bytes, a, sizeof a),
          qz_fmt_bytes((double)qz_model_bytes_on_disk(io->m), b, sizeof b), r->o->out,
          qz_fmt_bytes(r->ctx->rank == 0 ? (double)qz_quantize_dir_bytes(r->o->out) : 0.0,
                       c, sizeof c));
  int64_t pr = 0, pt = 0;
  qz_model_prefetch_stats(&pr, &pt);
  if (pt > 0)
    qz_debug("quantize: %lld of %lld prefetched linears had arrived when their block "
             "was loaded (rank %d)", (long long)pr, (long long)pt, r->ctx->rank);
  double bpp = 0;
  if (r->ctx->rank == 0 && qz_quantize_ckpt_bits(r->o->out, &bpp) == QZ_OK && bpp > 0)
    qz_info("quantize: %.4f bits per parameter over the quantized linears", bpp);
  return QZ_OK;
}

int qz_cmd_quantize(qz_ctx *ctx, int argc, char **argv) {
  if (qz_cli_wants_help(argc, argv)) {
    if (ctx->rank == 0) qz_quantize_usage();
    return QZ_OK;
  }
  qz_qopts o;
  QZ_CALL(qz_quantize_parse(argc, argv, &o));
  double t_start = qz_wtime();
  qz_qrun r = {.ctx = ctx, .o = &o};
  qrun_io io = {0};
  int st = QZ_OK;
  QZ_CALL_DONE(setup(&r, &io));
  if (io.b0 >= io.le) {
    qz_info("quantize: blocks %d..%d are already complete in %s; nothing to do", io.lb,
            io.le - 1, o.out);
    goto done;
  }
  int nblocks = (int)r.cfg->num_hidden_layers;
  int snap_every = o.snapshot_every ? (int)o.snapshot_every : (nblocks + 9) / 10;
  /* a crash during the snapshot at b0 (the last one written before it): write
   * it again, so that a resumed checkpoint equals an uninterrupted one */
  if ((r.needs & QZ_NEED_CALIB) && io.b0 > io.lb && io.b0 % snap_every == 0 &&
      !qz_ckpt_snapshot_current(r.ck, io.b0))
    QZ_CALL_DONE(qz_ckpt_write_snapshot(r.ck, io.b0, io.nwin, io.L, r.cfg->hidden_size,
                                        io.first, io.count, qz_fwd_hidden(r.f)));
  qz_progress prog;
  qz_progress_begin(&prog, "quantize blocks", io.le - io.b0);
  prog.interval = 0.0;
  for (int b = io.b0; b < io.le; b++) {
    QZ_CALL_DONE(run_block(&r, &io, b, snap_every));
    qz_progress_update(&prog, b - io.b0 + 1);
  }
  QZ_CALL_DONE(report(&r, &io, t_start));
done:
  json_decref(r.stats);
  qz_quantize_run_free(&r);
  qz_rot_destroy(&r.rot);
  if (r.grid) qz_grid_destroy(&r.grid);
  if (r.mstate) o.mo.ops->destroy(&r.mstate);
  qz_ckpt_close(&r.ck);
  qz_fwd_destroy(&r.f);
  qz_block_weights_free(&io.w);
  qz_free(&io.win);
  qz_model_close(&io.m);
  return st;
}
