/* mpiquant plan: per-rank memory by phase and predicted time per phase of a
 * quantize run, before anyone queues it; and `plan --calibrate`, which
 * measures the machine rates the time model uses. */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "method_cli.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "plan.h"

typedef struct {
  const char *model, *rates, *out, *scratch;
  long np, nodes, rpn, threads, nsamples, seqlen, nb, dtype_bytes, snapshot_every;
  double mem_rank, mem_node, core_scale, net_gbs, latency_us;
  int calibrate, json;
  qz_method_opts mo; /* --method and its rows, as for quantize */
} plan_opts;

static void usage(void) {
  printf(
      "usage: mpiquant plan --model DIR|CONFIG.json --np P [options]\n"
      "       [mpirun -np P] mpiquant plan --calibrate [--out RATES.json]\n\n"
      "Predicts, for `quantize` on P ranks, the peak memory of a rank by phase,\n"
      "the wall time per phase, from machine rates (docs/performance.md), and\n"
      "the bytes a rank moves per phase (MPI and file, mean over ranks: the\n"
      "numbers `quantize --log-view` counts; --json: \"bytes\").\n"
      "Exits with status 7 (QZ_ERR_MEM) when the plan does not fit the given\n"
      "memory.\n\n"
      "  --model DIR|FILE      model dir or its config.json (shape only)\n"
      "  --np P                ranks\n"
      "  --nodes N             nodes (default 1)\n"
      "  --ranks-per-node R    default P / N\n"
      "  --threads T           threads per rank: BLAS and the OpenMP loops (default 1)\n"
      "  --nsamples N          calibration windows (default 128)\n"
      "  --seqlen L            tokens per window (default 2048)\n"
      "  --grid-nb NB          ScaLAPACK block size (default: the rates file's measured\n"
      "                        best, else 128)\n"
      "  --dtype-bytes K       bytes per weight on disk (default from torch_dtype)\n"
      "  --snapshot-every S    as for quantize (default: blocks / 10, rounded up)\n"
      "  --mem-per-rank SIZE   refuse if a rank needs more (e.g. 10G, 512M)\n"
      "  --mem-per-node SIZE   refuse if R ranks need more\n"
      "  --calibration FILE    rates file (default: $MPIQUANT_RATES, else\n"
      "                        $XDG_CONFIG_HOME/mpiquant/rates.json, else\n"
      "                        ~/.config/mpiquant/rates.json; built-in defaults\n"
      "                        when none exists, and plan says so)\n"
      "  --core-scale F        per-core speed of the target node relative to the\n"
      "                        calibrated one (default 1)\n"
      "  --net-gbs G           network bandwidth per node, GB/s (default 12.5)\n"
      "  --latency-us U        message latency between nodes (default 5)\n"
      "  --json                one JSON object on stdout instead of the tables\n"
      "  --calibrate           measure the rates here and write them (--out FILE,\n"
      "                        default location above); --scratch DIR for the\n"
      "                        HDF5 test file (default .)\n"
      "method options, as for quantize (the method's own plan model):\n");
  qz_mcli_usage(stdout, QZ_METHOD_DEFAULT);
}

static int parse_size(const char *opt, const char *v, double *out) {
  char *end = NULL;
  double x = strtod(v ? v : "", &end);
  QZ_CHECK(v && end != v && x > 0, QZ_ERR_USAGE, "%s expects a size like 10G, got '%s'", opt,
           v ? v : "");
  double m = 1.0;
  switch (*end) {
    case 'k': case 'K': m = 1024.0; end++; break;
    case 'm': case 'M': m = 1048576.0; end++; break;
    case 'g': case 'G': m = 1073741824.0; end++; break;
    case 't': case 'T': m = 1099511627776.0; end++; break;
    default: break;
  }
  if (*end == 'i' || *end == 'B') end++;
  if (*end == 'B') end++;
  QZ_CHECK(*end == '\0', QZ_ERR_USAGE, "%s expects a size like 10G, got '%s'", opt, v);
  *out = x * m;
  return QZ_OK;
}

static int parse_opt(int c, const char *arg, plan_opts *o) {
  switch (c) {
    case 'm': o->model = arg; break;
    case 'p': QZ_CALL(qz_cli_int("--np", arg, 1, 1L << 24, &o->np)); break;
    case 'N': QZ_CALL(qz_cli_int("--nodes", arg, 1, 1L << 20, &o->nodes)); break;
    case 'R': QZ_CALL(qz_cli_int("--ranks-per-node", arg, 1, 1L << 16, &o->rpn)); break;
    case 't': QZ_CALL(qz_cli_int("--threads", arg, 1, 1L << 12, &o->threads)); break;
    case 'n': QZ_CALL(qz_cli_int("--nsamples", arg, 1, 1L << 30, &o->nsamples)); break;
    case 'L': QZ_CALL(qz_cli_int("--seqlen", arg, 2, 1L << 24, &o->seqlen)); break;
    case 'M': break; /* --method: read first */
    case 'G': QZ_CALL(qz_cli_int("--grid-nb", arg, 8, 4096, &o->nb)); break;
    case 'D': QZ_CALL(qz_cli_int("--dtype-bytes", arg, 1, 8, &o->dtype_bytes)); break;
    case 'E':
      QZ_CALL(qz_cli_int("--snapshot-every", arg, 1, 1L << 20, &o->snapshot_every));
      break;
    case 'r': QZ_CALL(parse_size("--mem-per-rank", arg, &o->mem_rank)); break;
    case 'e': QZ_CALL(parse_size("--mem-per-node", arg, &o->mem_node)); break;
    case 'c': o->rates = arg; break;
    case 's': QZ_CALL(qz_cli_double("--core-scale", arg, 1e-3, 1e3, &o->core_scale)); break;
    case 'w': QZ_CALL(qz_cli_double("--net-gbs", arg, 1e-3, 1e6, &o->net_gbs)); break;
    case 'l': QZ_CALL(qz_cli_double("--latency-us", arg, 0.0, 1e6, &o->latency_us)); break;
    case 'j': o->json = 1; break;
    case 'C': o->calibrate = 1; break;
    case 'o': o->out = arg; break;
    case 'S': o->scratch = arg; break;
    default: QZ_FAIL(QZ_ERR_INTERNAL, "plan: option value %d", c);
  }
  return QZ_OK;
}

static int parse(int argc, char **argv, plan_opts *o) {
  static const struct option base[] = {
      {"model", 1, 0, 'm'},        {"np", 1, 0, 'p'},          {"nodes", 1, 0, 'N'},
      {"ranks-per-node", 1, 0, 'R'}, {"threads", 1, 0, 't'},   {"nsamples", 1, 0, 'n'},
      {"seqlen", 1, 0, 'L'},       {"method", 1, 0, 'M'},      {"grid-nb", 1, 0, 'G'},
      {"dtype-bytes", 1, 0, 'D'},  {"mem-per-rank", 1, 0, 'r'}, {"mem-per-node", 1, 0, 'e'},
      {"calibration", 1, 0, 'c'},  {"core-scale", 1, 0, 's'},  {"net-gbs", 1, 0, 'w'},
      {"latency-us", 1, 0, 'l'},   {"json", 0, 0, 'j'},        {"calibrate", 0, 0, 'C'},
      {"out", 1, 0, 'o'},          {"scratch", 1, 0, 'S'},     {"snapshot-every", 1, 0, 'E'},
      {0, 0, 0, 0}};
  *o = (plan_opts){.nodes = 1, .threads = 1, .nsamples = 128, .seqlen = 2048, .nb = 0,
                   .core_scale = 1.0, .net_gbs = 12.5, .latency_us = 5.0, .scratch = "."};
  const qz_method_ops *ops;
  QZ_CALL(qz_mcli_method("plan", qz_mcli_method_arg(argc, argv, QZ_METHOD_DEFAULT), &ops, &o->mo));
  struct option *opts = NULL;
  QZ_CALL(qz_mcli_longopts(base, &o->mo, &opts));
  int st = QZ_OK, c;
  optind = 0;
  opterr = 0;
  while (st == QZ_OK && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (c >= QZ_MCLI_VAL) st = qz_mcli_handle("plan", &o->mo, c, optarg);
    else if (c == '?') st = qz_mcli_unknown("plan", &o->mo, argv[optind - 1]);
    else st = parse_opt(c, optarg, o);
  }
  free(opts);
  QZ_CALL(st);
  QZ_CHECK(optind == argc, QZ_ERR_USAGE, "plan: unexpected argument '%s'", argv[optind]);
  if (o->calibrate) return QZ_OK;
  QZ_CHECK(o->model, QZ_ERR_USAGE, "plan: --model DIR|CONFIG.json is required");
  QZ_CHECK(o->np > 0, QZ_ERR_USAGE, "plan: --np P is required");
  QZ_CALL(qz_mcli_finish("plan", &o->mo));
  if (!o->rpn) o->rpn = (o->np + o->nodes - 1) / o->nodes;
  QZ_CHECK(o->rpn * o->nodes >= o->np, QZ_ERR_USAGE,
           "plan: %ld nodes x %ld ranks per node < --np %ld", o->nodes, o->rpn, o->np);
  return QZ_OK;
}

static int dtype_bytes_of(const qz_model_config *c) {
  if (strcmp(c->torch_dtype, "float32") == 0) return 4;
  if (strcmp(c->torch_dtype, "float64") == 0) return 8;
  return 2; /* bfloat16 / float16 / unspecified (HF checkpoints are 16-bit) */
}

static const char *gib(double b, char *buf, size_t n) { return qz_fmt_bytes(b, buf, n); }

/* The byte model per phase (mean per rank; --log-view's "mean" columns). */
static void print_bytes(const qz_plan_bytes *by) {
  char a[32], b[32];
  printf("\nbytes moved per rank (whole run, mean over ranks; --log-view counts the same)\n");
  printf("  %-10s %14s %14s\n", "phase", "MPI", "file");
  double sm = 0, sf = 0;
  for (int p = 0; p < QZ_PT_COUNT; p++) {
    sm += by->mpi[p];
    sf += by->file[p];
    if (by->mpi[p] == 0 && by->file[p] == 0) continue;
    printf("  %-10s %14s %14s\n", qz_plan_phase_name((qz_plan_phase)p),
           gib(by->mpi[p], a, sizeof a), gib(by->file[p], b, sizeof b));
  }
  printf("  %-10s %14s %14s\n", "total", gib(sm, a, sizeof a), gib(sf, b, sizeof b));
  if (by->moe_blocks > 0)
    printf("  (%lld MoE blocks not in the byte model)\n", (long long)by->moe_blocks);
}

static void print_plan(const plan_opts *o, const qz_plan_in *in, const qz_plan_rates *r,
                       const qz_plan_mem *m, const qz_plan_time *t) {
  char a[32], b[32];
  const qz_model_config *c = &in->cfg;
  int gr, gc;
  qz_plan_grid_shape((int)in->P, in->nodes, &gr, &gc);
  printf("plan: %s, %lld blocks (H %lld, I %lld, %lld/%lld heads, vocab %lld)\n", o->model,
         (long long)c->num_hidden_layers, (long long)c->hidden_size,
         (long long)c->intermediate_size, (long long)c->num_attention_heads,
         (long long)c->num_key_value_heads, (long long)c->vocab_size);
  printf("      %s w%d g%lld, %lld x %lld calibration tokens; %lld ranks = %lld node(s) x %lld, "
         "%lld thread(s) per rank, ScaLAPACK nb %d on a %dx%d grid%s\n",
         o->mo.ops->name, in->mo.spec.bits, (long long)in->mo.spec.groupsize,
         (long long)in->nsamples, (long long)in->seqlen,
         (long long)in->P, (long long)in->nodes, (long long)in->ranks_per_node,
         (long long)in->threads, in->nb, gr, gc,
         gr == 1 ? " (factor bits independent of the rank count)" : "");
  if (qz_config_any_moe(c)) {
    qz_plan_moe ms;
    qz_plan_moe_summary(c, in->nsamples * in->seqlen, &ms);
    printf("      MoE: %lld of %lld blocks, %lld experts (I_e %lld), top-%lld%s; parameters "
           "%.3g total, %.3g active per token\n",
           (long long)ms.moe_blocks, (long long)c->num_hidden_layers,
           (long long)c->num_experts, (long long)c->moe_intermediate_size,
           (long long)c->num_experts_per_tok,
           c->moe == QZ_MOE_QWEN2 && c->shared_expert_intermediate_size > 0 ? " + shared" : "",
           ms.total, ms.active);
    printf("      expert Hessians: %.0f (2 per expert per block, widths H and I_e, one at a "
           "time); all-to-all volume of routed hidden states %s per run -- not moved: each "
           "rank's partial expert Hessians are reduced instead (docs/moe.md)\n",
           ms.hessians, gib(ms.alltoall_bytes, a, sizeof a));
  }
  printf("rates: %s%s\n", r->source,
         r->measured ? "" : " (no rates file: built-in defaults; run `mpiquant plan "
                            "--calibrate` for this machine)");
  printf("\nmemory per rank (rank 0: %lld windows, the most rows)\n", (long long)m->windows_rank);
  printf("  %-44s %12s\n", "process baseline (libraries, MPI)", gib(m->base, a, sizeof a));
  printf("  %-44s %12s\n", "block weights (f32, whole block)", gib(m->weights, a, sizeof a));
  printf("  %-44s %12s\n", "hidden states + forward workspace", gib(m->fwd, a, sizeof a));
  printf("  %-44s %12s  (largest %s, 8 d^2/P = %s)\n", "Hessian shares (one per input width)",
         gib(m->hessians, a, sizeof a), gib(m->hessian_max, b, sizeof b),
         qz_fmt_bytes(m->hessian_ideal, (char[32]){0}, 32));
  printf("  %-44s %12s\n", "factor panel exchange (kept per Hessian)",
         gib(m->factor_xbuf, a, sizeof a));
  if (m->moe > 0)
    printf("  %-44s %12s\n", "MoE: one expert f32 + routed rows + FFN out", gib(m->moe, a, sizeof a));
  printf("  %-44s %12s\n", "mapped safetensors pages (largest slice read)",
         gib(m->io_pages, a, sizeof a));
  if (m->prefetch > 0)
    printf("  %-44s %12s\n", "next block's linears (prefetch, wire dtype)",
           gib(m->prefetch, a, sizeof a));
  printf("  %-44s %12s\n", "transient: Hessian panels + reduce-scatter", gib(m->flush, a, sizeof a));
  printf("  %-44s %12s\n", "transient: factor redistribution", gib(m->prepare, a, sizeof a));
  char what[64];
  snprintf(what, sizeof what, "transient: %s buffers (largest linear)", o->mo.ops->name);
  printf("  %-44s %12s\n", what, gib(m->gptq, a, sizeof a));
  if (m->method_block > 0)
    printf("  %-44s %12s\n", "method block state (held per block)",
           gib(m->method_block, a, sizeof a));
  printf("  %-44s %12s\n", "peak while embedding (rows of own tokens)", gib(m->embed_phase, a, sizeof a));
  printf("  %-44s %12s\n", "peak while quantizing a block", gib(m->block_phase, a, sizeof a));
  printf("  %-44s %12s   per node %s\n", "PEAK per rank", gib(m->peak, a, sizeof a),
         gib(m->peak * (double)in->ranks_per_node, b, sizeof b));
  printf("\npredicted time (whole run; %lld of %lld ranks hold calibration windows)\n",
         (long long)t->busy_ranks, (long long)in->P);
  printf("  %-10s %12s %8s %14s\n", "phase", "seconds", "%", "flop");
  for (int p = 0; p < QZ_PT_COUNT; p++)
    printf("  %-10s %12.1f %7.1f%% %14.3g\n", qz_plan_phase_name((qz_plan_phase)p), t->t[p],
           t->total > 0 ? 100.0 * t->t[p] / t->total : 0.0, t->flops[p]);
  printf("  %-10s %12.1f   (%.2f h)\n", "total", t->total, t->total / 3600.0);
}

static json_t *plan_json(const qz_plan_in *in, const qz_plan_rates *r, const qz_plan_mem *m,
                         const qz_plan_time *t, const qz_plan_bytes *by) {
  json_t *mem = json_pack(
      "{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "base",
      m->base, "weights", m->weights, "fwd", m->fwd, "hessians", m->hessians, "hessian_max",
      m->hessian_max, "hessian_ideal", m->hessian_ideal, "factor_xbuf", m->factor_xbuf,
      "io_pages", m->io_pages, "prefetch", m->prefetch, "flush", m->flush, "prepare", m->prepare,
      "gptq", m->gptq, "embed_phase", m->embed_phase, "block_phase", m->block_phase, "peak",
      m->peak);
  json_t *tm = json_object();
  for (int p = 0; p < QZ_PT_COUNT; p++)
    json_object_set_new(tm, qz_plan_phase_name((qz_plan_phase)p), json_real(t->t[p]));
  json_object_set_new(tm, "total", json_real(t->total));
  json_t *bm = json_object(), *bf = json_object();
  for (int p = 0; p < QZ_PT_COUNT; p++) {
    json_object_set_new(bm, qz_plan_phase_name((qz_plan_phase)p), json_real(by->mpi[p]));
    json_object_set_new(bf, qz_plan_phase_name((qz_plan_phase)p), json_real(by->file[p]));
  }
  json_t *bytes = json_pack("{s:o, s:o, s:I}", "mpi", bm, "file", bf, "moe_blocks_not_modelled",
                            (json_int_t)by->moe_blocks);
  int gr, gc;
  qz_plan_grid_shape((int)in->P, in->nodes, &gr, &gc);
  char grid[32];
  snprintf(grid, sizeof grid, "%dx%d", gr, gc);
  return json_pack("{s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:s, s:b, s:o, s:o, s:o}", "command",
                   "plan", "grid_nb", (json_int_t)in->nb, "grid", grid, "np", (json_int_t)in->P, "nodes", (json_int_t)in->nodes, "ranks_per_node",
                   (json_int_t)in->ranks_per_node, "threads", (json_int_t)in->threads,
                   "rates", r->source, "rates_measured", r->measured, "memory", mem, "time",
                   tm, "bytes", bytes);
}

static int run_calibrate(qz_ctx *ctx, const plan_opts *o) {
  qz_plan_rates r;
  QZ_CALL(qz_plan_calibrate(ctx->comm, o->scratch, &r));
  char path[PATH_MAX];
  if (o->out) snprintf(path, sizeof path, "%s", o->out);
  else qz_plan_rates_default_path(path, sizeof path);
  int st = QZ_OK;
  if (ctx->rank == 0) st = qz_plan_rates_save(path, &r);
  QZ_CALL(qz_error_agree(ctx->comm, st));
  if (ctx->rank == 0) {
    printf("rates (np %d, 1 BLAS thread per rank, OpenBLAS %s kernels) -> %s\n", ctx->size,
           r.blas_kernel, path);
    printf("  sgemm %.1f GFLOP/s, ssyrk %.1f GFLOP/s, dpotrf %.1f GFLOP/s per core\n",
           r.sgemm_gflops, r.ssyrk_gflops, r.dpotrf_gflops);
    printf("  pdpotrf+pdpotri efficiency %.2f at nb %d", r.pdpotrf_eff, (int)r.grid_nb);
    if (ctx->size > 1)
      printf(" (nb 64: %.2f, 128: %.2f, 256: %.2f, 512: %.2f; pass quantize --grid-nb %d)",
             r.nb_eff[0], r.nb_eff[1], r.nb_eff[2], r.nb_eff[3], (int)r.grid_nb);
    printf("\n  allreduce %.2f, reduce-scatter %.2f, allgather %.2f GB/s\n", r.allreduce_gbs,
           r.reduce_scatter_gbs, r.allgather_gbs);
    printf("  block forward %.2f x sgemm, GPTQ sweep %.2f x sgemm\n", r.fwd_frac, r.gptq_frac);
    printf("  HDF5 write %.2f GB/s, read+convert %.2f GB/s, widen/dequantize %.2f G "
           "elements/s, process baseline %.1f MiB\n",
           r.hdf5_write_gbs, r.read_gbs, r.expand_gelems, r.base_rss_bytes / 1048576.0);
  }
  return QZ_OK;
}

int qz_cmd_plan(qz_ctx *ctx, int argc, char **argv) {
  if (qz_cli_wants_help(argc, argv)) {
    if (ctx->rank == 0) usage();
    return QZ_OK;
  }
  plan_opts o;
  QZ_CALL(parse(argc, argv, &o));
  if (o.calibrate) return run_calibrate(ctx, &o);
  if (ctx->rank != 0) return QZ_OK; /* a dry run: rank 0 answers */

  qz_plan_in in = {.P = o.np, .nodes = o.nodes, .ranks_per_node = o.rpn, .threads = o.threads,
                   .nsamples = o.nsamples, .seqlen = o.seqlen, .mo = o.mo,
                   .needs = qz_method_needs(&o.mo), .nb = (int)o.nb,
                   .core_scale = o.core_scale, .net_gbs = o.net_gbs,
                   .latency_s = o.latency_us * 1e-6, .snapshot_every = o.snapshot_every};
  QZ_CALL(qz_config_load(o.model, &in.cfg));
  in.disk_dtype_bytes = o.dtype_bytes ? (int)o.dtype_bytes : dtype_bytes_of(&in.cfg);
  qz_plan_rates r;
  char path[PATH_MAX];
  if (o.rates) {
    QZ_CALL(qz_plan_rates_load(o.rates, &r));
  } else {
    qz_plan_rates_default_path(path, sizeof path);
    FILE *f = fopen(path, "r");
    if (f) {
      fclose(f);
      QZ_CALL(qz_plan_rates_load(path, &r));
    } else {
      qz_plan_rates_default(&r);
    }
  }
  if (in.nb <= 0) in.nb = r.grid_nb >= 8 ? (int)r.grid_nb : 128;
  if (!r.measured)
    qz_warn("plan: no rates file (%s): using built-in defaults; `mpiquant plan --calibrate` "
            "measures this machine", o.rates ? o.rates : path);
  qz_plan_mem m;
  qz_plan_time t;
  QZ_CALL(qz_plan_memory(&in, &r, &m));
  QZ_CALL(qz_plan_time_model(&in, &r, &t));
  qz_plan_bytes by;
  QZ_CALL(qz_plan_bytes_model(&in, &by));
  if (o.json) {
    json_t *j = plan_json(&in, &r, &m, &t, &by);
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    printf("%s\n", s);
    free(s);
    json_decref(j);
  } else {
    print_plan(&o, &in, &r, &m, &t);
    print_bytes(&by);
  }
  fflush(stdout);
  double limit = 0.0;
  const char *what = NULL;
  if (o.mem_rank > 0) {
    limit = o.mem_rank;
    what = "--mem-per-rank";
  }
  if (o.mem_node > 0 && (!what || o.mem_node / (double)o.rpn < limit)) {
    limit = o.mem_node / (double)o.rpn;
    what = "--mem-per-node";
  }
  if (what && m.peak > limit) {
    char a[32], b[32], c2[32], d[32], e[32];
    QZ_FAIL(QZ_ERR_MEM,
            "plan does not fit: a rank needs %s but %s allows %s per rank (missing %s); "
            "largest parts: block weights %s, Hessian shares %s, forward workspace %s; "
            "use more ranks (Hessian 8 d^2/P), fewer ranks per node, or fewer "
            "calibration windows per rank",
            gib(m.peak, a, sizeof a), what, gib(limit, b, sizeof b),
            gib(m.peak - limit, c2, sizeof c2), gib(m.weights, d, sizeof d),
            gib(m.hessians, e, sizeof e), qz_fmt_bytes(m.fwd, (char[32]){0}, 32));
  }
  return QZ_OK;
}
