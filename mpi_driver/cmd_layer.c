/* mpiquant layer: quantize one matrix W (+ H or X) from a safetensors file.
 * W rows are split over ranks; H (given, or accumulated from X distributed
 * over ranks) lives block-cyclic on the grid; rank 0 writes the result. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "method_cli.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/method.h"
#include "mpiquant/safetensors.h"
#include "mpiquant/timing.h"

static void usage(void) {
  printf(
      "usage: mpiquant layer --in CASE.safetensors --method M --bits B\n"
      "         [method options] [--from-x] [--nsamples N] [--nb 128]\n"
      "         --out RESULT.safetensors\n\n"
      "Reads W [out,in] and H [in,in] (or X [tokens,in] when H is absent or\n"
      "--from-x is given: H = 2/N X^T X accumulated over ranks, N = --nsamples,\n"
      "else the file's 'nsamples' metadata, else the number of rows of X).\n"
      "Writes Q, codes, scale, zero, perm, g_idx, losses and metadata\n"
      "(loss_total, damp_used, the options).  --group -1 = per channel (the\n"
      "default here).  --nb: ScaLAPACK block size of the distributed Hessian.\n"
      "quantease: the objective per sweep in the 'objective' metadata;\n"
      "--outlier-frac: tensors outliers_idx, outliers_val.\n\n");
  qz_mcli_usage(stdout, NULL);
  printf("  --from-x             H from X even when the file has H\n"
         "  --nsamples N         sequences N of H = 2/N X^T X\n"
         "  --nb NB              ScaLAPACK block size (default 128)\n");
}

typedef struct {
  const char *in, *out;
  qz_method_opts mo;
  int from_x, nb;
  long nsamples;
} layer_args;

static int parse(int argc, char **argv, layer_args *a) {
  static const struct option base[] = {
      {"in", 1, 0, 'i'}, {"out", 1, 0, 'o'}, {"method", 1, 0, 'M'}, {"from-x", 0, 0, 'x'},
      {"nb", 1, 0, 'b'}, {"nsamples", 1, 0, 'n'}, {0, 0, 0, 0}};
  const char *method = qz_mcli_method_arg(argc, argv, NULL);
  QZ_CHECK(method, QZ_ERR_USAGE, "layer: --in, --out, --method and --bits are required");
  const qz_method_ops *ops;
  QZ_CALL(qz_mcli_method("layer", method, &ops, &a->mo));
  a->mo.spec.groupsize = -1; /* one matrix: per channel unless --group */
  a->nb = 0;
  a->nsamples = -1;
  struct option *opts = NULL;
  QZ_CALL(qz_mcli_longopts(base, &a->mo, &opts));
  int st = QZ_OK, c;
  long l;
  optind = 0;
  opterr = 0;
  while (st == QZ_OK && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'i': a->in = optarg; break;
      case 'o': a->out = optarg; break;
      case 'M': break;
      case 'x': a->from_x = 1; break;
      case 'b': st = qz_cli_int("--nb", optarg, 1, 1 << 16, &l); a->nb = (int)l; break;
      case 'n': st = qz_cli_int("--nsamples", optarg, 1, 1L << 40, &a->nsamples); break;
      case '?': st = qz_mcli_unknown("layer", &a->mo, argv[optind - 1]); break;
      default: st = qz_mcli_handle("layer", &a->mo, c, optarg); break;
    }
  }
  free(opts);
  QZ_CALL(st);
  QZ_CHECK(optind == argc, QZ_ERR_USAGE, "layer: unexpected argument '%s'", argv[optind]);
  QZ_CHECK(a->in && a->out && qz_method_opt_given(&a->mo, "bits"), QZ_ERR_USAGE,
           "layer: --in, --out, --method and --bits are required");
  QZ_CALL(qz_mcli_finish("layer", &a->mo));
  return QZ_OK;
}

static int tensor2d(qz_st *st, const char *file, const char *name,
                    int64_t cols, int64_t *rows) {
  const qz_tensor_info *ti = NULL;
  QZ_CALL(qz_st_get(st, name, &ti));
  QZ_CHECK(ti->ndim == 2 && qz_dtype_is_float(ti->dtype) &&
               (cols < 0 || ti->shape[1] == cols),
           QZ_ERR_FORMAT,
           "%s: tensor %s must be a 2-D float matrix%s%lld columns; found "
           "%s with %d dims [%lld, %lld]",
           file, name, cols < 0 ? "" : " with ", (long long)(cols < 0 ? 0 : cols),
           qz_dtype_name(ti->dtype), ti->ndim, (long long)ti->shape[0],
           (long long)(ti->ndim > 1 ? ti->shape[1] : 0));
  *rows = ti->shape[0];
  return QZ_OK;
}

/* Gather [nrows, cols] row blocks of all ranks to rank 0 (MPI type t). */
static int gather_rows(MPI_Comm comm, const void *src, int64_t nrows,
                       int64_t cols, MPI_Datatype t, void *dst) {
  int size, rank;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  int *cnt = NULL;
  QZ_CALL(qz_alloc((size_t)size * 2, sizeof(int), "gather counts", &cnt));
  int *dsp = cnt + size;
  int mine = (int)(nrows * cols);
  int st = QZ_OK;
  int rc = MPI_Gather(&mine, 1, MPI_INT, cnt, 1, MPI_INT, 0, comm);
  if (rc == MPI_SUCCESS) {
    int64_t off = 0;
    for (int r = 0; rank == 0 && r < size; r++) {
      dsp[r] = (int)off;
      off += cnt[r];
    }
    rc = MPI_Gatherv(src, mine, t, dst, cnt, dsp, t, 0, comm);
    int tsize = 0;
    MPI_Type_size(t, &tsize);
    int64_t total = 0;
    for (int r = 0; rank == 0 && r < size; r++) total += cnt[r];
    qz_count_gather(comm, 0, (int64_t)tsize * mine, (int64_t)tsize * (rank == 0 ? total : mine));
  }
  if (rc != MPI_SUCCESS) st = qz_mpi_error(rc, "MPI_Gatherv", __FILE__, __LINE__, __func__);
  qz_free(&cnt);
  return st;
}

/* H from the file's H (row slabs: no rank holds the whole H) or
 * accumulated from its X over the ranks. Collective on comm. */
static int layer_hessian(qz_ctx *ctx, const layer_args *a, qz_st *in, int64_t in_f,
                         qz_hessian *H) {
  MPI_Comm comm = ctx->comm;
  int st = QZ_OK;
  float *buf = NULL;
  if (!(a->from_x || !qz_st_find(in, "H"))) {
    int64_t hr = 0;
    st = tensor2d(in, a->in, "H", in_f, &hr);
    if (!st && hr != in_f)
      st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                        "%s: H is [%lld, %lld], W has %lld input columns",
                        a->in, (long long)hr, (long long)in_f, (long long)in_f);
    int64_t slab = in_f < 256 ? in_f : 256;
    if (!st) st = qz_alloc((size_t)(slab * in_f), sizeof(float), "H rows", &buf);
    for (int64_t r = 0; !st && r < in_f; r += slab) {
      int64_t k = in_f - r < slab ? in_f - r : slab;
      st = qz_st_read_f32(in, "H", r, k, buf);
      if (!st) st = qz_hessian_set_rows(H, r, k, buf);
    }
    QZ_CALL_DONE(qz_error_agree(comm, st));
    QZ_CALL_DONE(qz_hessian_set_finish(H));
    goto done;
  }
  int64_t tok = 0, t0 = 0, tn = 0;
  st = qz_st_find(in, "X")
           ? tensor2d(in, a->in, "X", in_f, &tok)
           : qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                          "%s: GPTQ needs tensor H [in,in] or X "
                          "[tokens,in]; neither is present", a->in);
  /* whole Hessian chunks per rank: H is then the same at every np */
  int64_t G = QZ_HESSIAN_KCHUNK, g0 = 0, gn = 0;
  qz_split_even((tok + G - 1) / G, ctx->size, ctx->rank, &g0, &gn);
  t0 = g0 * G < tok ? g0 * G : tok;
  tn = ((g0 + gn) * G < tok ? (g0 + gn) * G : tok) - t0;
  qz_hessian_set_chunking(H, t0, G);
  if (!st) st = qz_alloc((size_t)(tn * in_f), sizeof(float), "X rows", &buf);
  if (!st) st = qz_st_read_f32(in, "X", t0, tn, buf);
  if (!st) st = qz_hessian_add_rows(H, buf, tn);
  long ns = a->nsamples;
  const char *m = qz_st_metadata(in, "nsamples");
  if (ns < 0 && m) ns = atol(m);
  if (ns <= 0) ns = (long)tok;
  if (ctx->rank == 0) qz_hessian_count_sequences(H, ns);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  qz_info("layer: H from X [%lld, %lld] over %d ranks, N = %ld sequences",
          (long long)tok, (long long)in_f, ctx->size, ns);
  QZ_CALL_DONE(qz_hessian_reduce(H));
done:
  qz_free(&buf);
  return st;
}

/* Every rank's rows of the result, on rank 0. */
typedef struct {
  float *q, *scale, *zero, *loss; /* [out, in], [out, ng] x 2, [out] */
  uint8_t *codes;                 /* [out, in] */
  int64_t nout;                   /* sparse outliers, all ranks */
  int64_t *oidx;                  /* [nout] */
  float *oval;                    /* [nout] */
  double loss_total;
} layer_all;

static void layer_all_free(layer_all *t) {
  qz_free(&t->q); qz_free(&t->scale); qz_free(&t->zero); qz_free(&t->loss);
  qz_free(&t->codes); qz_free(&t->oidx); qz_free(&t->oval);
}

/* Gather the result rows (and the outliers, in rank order) to rank 0.
 * Collective on comm. */
static int gather_all(qz_ctx *ctx, const qz_layer_result *res, int64_t out_f, int64_t in_f,
                      int64_t nrows, int64_t ng, layer_all *t) {
  MPI_Comm comm = ctx->comm;
  int st = QZ_OK;
  /* summed in row order: the same at every np */
  QZ_CALL(qz_sum_rows_ordered(comm, nrows, res->losses, &t->loss_total));
  if (ctx->rank == 0) {
    st = qz_alloc((size_t)(out_f * in_f), sizeof(float), "Q (all)", &t->q);
    if (!st) st = qz_alloc((size_t)(out_f * in_f), 1, "codes (all)", &t->codes);
    if (!st) st = qz_alloc((size_t)(out_f * ng), sizeof(float), "scale (all)", &t->scale);
    if (!st) st = qz_alloc((size_t)(out_f * ng), sizeof(float), "zero (all)", &t->zero);
    if (!st) st = qz_alloc((size_t)out_f, sizeof(float), "losses (all)", &t->loss);
  }
  QZ_CALL(qz_error_agree(comm, st));
  QZ_CALL(gather_rows(comm, res->q, nrows, in_f, MPI_FLOAT, t->q));
  QZ_CALL(gather_rows(comm, res->codes, nrows, in_f, MPI_UINT8_T, t->codes));
  QZ_CALL(gather_rows(comm, res->scale, nrows, ng, MPI_FLOAT, t->scale));
  QZ_CALL(gather_rows(comm, res->zero, nrows, ng, MPI_FLOAT, t->zero));
  QZ_CALL(gather_rows(comm, res->losses, nrows, 1, MPI_FLOAT, t->loss));
  t->nout = res->noutliers;
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &t->nout, 1, MPI_INT64_T, MPI_SUM, comm));
  if (t->nout == 0) return QZ_OK;
  if (ctx->rank == 0) {
    st = qz_alloc((size_t)t->nout, sizeof(int64_t), "outliers (all)", &t->oidx);
    if (!st) st = qz_alloc((size_t)t->nout, sizeof(float), "outliers (all)", &t->oval);
  }
  QZ_CALL(qz_error_agree(comm, st));
  QZ_CALL(gather_rows(comm, res->outlier_idx, res->noutliers, 1, MPI_INT64_T, t->oidx));
  QZ_CALL(gather_rows(comm, res->outlier_val, res->noutliers, 1, MPI_FLOAT, t->oval));
  return QZ_OK;
}

/* The options, the result's scalars and the method's own options (and a
 * QuantEase objective) as safetensors metadata. Not collective. */
static int write_meta(qz_st_writer *wr, const layer_args *a, const qz_layer_result *res,
                      const layer_all *t, const char *hessian, int nranks) {
  char buf[64];
  int st = QZ_OK;
  const qz_method_ops *ops = a->mo.ops;
#define META(k, ...)                                            \
  if (!st) {                                                    \
    snprintf(buf, sizeof buf, __VA_ARGS__);                     \
    st = qz_st_writer_meta(wr, k, buf);                         \
  }
  META("method", "%s", qz_method_label(&a->mo));
  META("bits", "%d", a->mo.spec.bits);
  META("groupsize", "%lld", (long long)a->mo.spec.groupsize);
  META("sym", "%s", a->mo.spec.sym ? "true" : "false");
  META("act_order", "%s", a->mo.act_order ? "true" : "false");
  META("static_groups", "%s", a->mo.static_groups ? "true" : "false");
  META("blocksize", "%d", a->mo.blocksize);
  META("percdamp", "%.17g", a->mo.percdamp);
  META("damp_used", "%.17g", res->percdamp_used);
  META("dead_columns", "%lld", (long long)res->ndead);
  META("loss_total", "%.9g", t->loss_total);
  META("hessian", "%s", hessian);
  META("nranks", "%d", nranks);
  for (int i = qz_method_nrows(NULL); !st && i < qz_method_nrows(ops); i++) {
    const qz_opt *r = qz_method_row(ops, i); /* the method's own options */
    double v = qz_method_opt_value(&a->mo, i);
    if (!r->json) continue;
    const char *txt = r->type == QZ_OPT_FLAG     ? (v != 0 ? "true" : "false")
                      : r->type == QZ_OPT_CHOICE ? r->choices[(int)v]
                                                 : NULL;
    if (txt) META(r->json, "%s", txt);
    if (!txt) META(r->json, "%.17g", v);
  }
#undef META
  if (!st && res->objective) {
    size_t cap = (size_t)(a->mo.iters + 1) * 26 + 1, len = 0;
    char *obj = malloc(cap);
    QZ_CHECK(obj, QZ_ERR_MEM, "layer: no memory for the objective metadata");
    for (int k = 0; k <= a->mo.iters; k++)
      len += (size_t)snprintf(obj + len, cap - len, "%s%.17g", k ? "," : "",
                              res->objective[k]);
    st = qz_st_writer_meta(wr, "objective", obj);
    free(obj);
  }
  return st;
}

/* Rank 0: the result file. Not collective. */
static int write_result(const layer_args *a, const qz_layer_result *res, const layer_all *t,
                        int64_t out_f, int64_t in_f, int64_t ng, const char *hessian,
                        int nranks) {
  qz_st_writer *wr = NULL;
  int64_t s2[2] = {out_f, in_f}, sg[2] = {out_f, ng}, s1[1] = {in_f}, so[1] = {out_f};
  int64_t sn[1] = {t->nout};
  int st = qz_st_writer_create(a->out, &wr);
  if (!st) st = write_meta(wr, a, res, t, hessian, nranks);
  if (!st) st = qz_st_writer_add(wr, "Q", QZ_DT_F32, 2, s2, t->q);
  if (!st) st = qz_st_writer_add(wr, "codes", QZ_DT_U8, 2, s2, t->codes);
  if (!st) st = qz_st_writer_add(wr, "scale", QZ_DT_F32, 2, sg, t->scale);
  if (!st) st = qz_st_writer_add(wr, "zero", QZ_DT_F32, 2, sg, t->zero);
  if (!st) st = qz_st_writer_add(wr, "perm", QZ_DT_I32, 1, s1, res->perm);
  if (!st) st = qz_st_writer_add(wr, "g_idx", QZ_DT_I32, 1, s1, res->g_idx);
  if (!st && strcmp(hessian, "none") != 0)
    st = qz_st_writer_add(wr, "losses", QZ_DT_F32, 1, so, t->loss);
  if (!st && t->nout > 0)
    st = qz_st_writer_add(wr, "outliers_idx", QZ_DT_I64, 1, sn, t->oidx);
  if (!st && t->nout > 0)
    st = qz_st_writer_add(wr, "outliers_val", QZ_DT_F32, 1, sn, t->oval);
  if (!st) st = qz_st_writer_finish(&wr);
  if (wr) qz_st_writer_abort(&wr);
  if (!st)
    qz_info("layer: %s %lld x %lld w%d -> %s (loss %.6g, damp %g)", a->mo.ops->name,
            (long long)out_f, (long long)in_f, a->mo.spec.bits, a->out, t->loss_total,
            res->percdamp_used);
  return st;
}

int qz_cmd_layer(qz_ctx *ctx, int argc, char **argv) {
  if (qz_cli_wants_help(argc, argv)) {
    if (ctx->rank == 0) usage();
    return QZ_OK;
  }
  layer_args a = {0};
  QZ_CALL(parse(argc, argv, &a));
  const qz_method_ops *ops = a.mo.ops;
  const unsigned needs = qz_method_needs(&a.mo);
  MPI_Comm comm = ctx->comm;
  int st = QZ_OK;
  qz_st *in = NULL;
  qz_grid *grid = NULL;
  qz_hessian *H = NULL;
  void *mstate = NULL;
  float *w = NULL;
  qz_layer_result res = {0};
  layer_all all = {0};
  int64_t out_f = 0, in_f = 0, row0 = 0, nrows = 0, ng = 0;

  qz_timer_start(QZ_PHASE_LOAD);
  st = qz_st_open(a.in, &in);
  if (!st) st = tensor2d(in, a.in, "W", -1, &out_f);
  if (!st) in_f = qz_st_find(in, "W")->shape[1];
  if (!st) st = ops->setup(&a.mo, &mstate);
  qz_split_even(out_f, ctx->size, ctx->rank, &row0, &nrows);
  ng = qz_quant_ngroups(&a.mo.spec, in_f);
  if (!st) st = qz_alloc((size_t)(nrows * in_f), sizeof(float), "W rows", &w);
  if (!st) st = qz_st_read_f32(in, "W", row0, nrows, w);
  if (!st) st = qz_alloc((size_t)(nrows * in_f), 1, "codes", &res.codes);
  if (!st) st = qz_alloc((size_t)(nrows * in_f), sizeof(float), "Q", &res.q);
  if (!st) st = qz_alloc((size_t)(nrows * ng), sizeof(float), "scale", &res.scale);
  if (!st) st = qz_alloc((size_t)(nrows * ng), sizeof(float), "zero", &res.zero);
  if (!st) st = qz_alloc((size_t)nrows, sizeof(float), "losses", &res.losses);
  if (!st && (needs & QZ_OUT_OBJECTIVE))
    st = qz_calloc((size_t)a.mo.iters + 1, sizeof(double), "objective",
                   &res.objective);
  if (!st) st = qz_alloc((size_t)in_f, sizeof(int32_t), "g_idx", &res.g_idx);
  if (!st) st = qz_alloc((size_t)in_f, sizeof(int32_t), "perm", &res.perm);
  qz_timer_stop(QZ_PHASE_LOAD);
  QZ_CALL_DONE(qz_error_agree(comm, st));

  const char *hessian = "none";
  if (needs & QZ_NEED_HESSIAN) {
    hessian = a.from_x || !qz_st_find(in, "H") ? "X" : "H";
    QZ_CALL_DONE(qz_grid_create(comm, a.nb, &grid));
    QZ_CALL_DONE(qz_hessian_create(grid, in_f, &H));
    QZ_CALL_DONE(layer_hessian(ctx, &a, in, in_f, H));
  }
  qz_layer L = {.name = a.in, .out_features = out_f, .in_features = in_f,
                .row0 = row0, .nrows = nrows, .w = w, .H = H, .comm = comm};
  st = ops->quantize_layer(mstate, &L, &res);
  QZ_CALL_DONE(qz_error_agree(comm, st));

  qz_timer_start(QZ_PHASE_WRITE);
  st = gather_all(ctx, &res, out_f, in_f, nrows, ng, &all);
  if (!st && ctx->rank == 0)
    st = write_result(&a, &res, &all, out_f, in_f, ng, hessian, ctx->size);
  qz_timer_stop(QZ_PHASE_WRITE);
  st = qz_error_agree(comm, st);
done:
  if (mstate) ops->destroy(&mstate);
  qz_hessian_destroy(&H);
  qz_grid_destroy(&grid);
  qz_st_close(&in);
  qz_free(&w);
  qz_layer_result_free(&res);
  layer_all_free(&all);
  return st;
}
