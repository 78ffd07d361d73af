/* mpiquant quantize: the layer-sequential pipeline (DESIGN.md steps 1-7).
 *
 * Per block l: load its weights once per job (1/P of the rows per rank +
 * allgather), then true-sequential groups [q,k,v] -> [o] -> [gate,up] ->
 * [down]: the forward computes the group's input on every rank's own
 * calibration windows with the already-quantized earlier groups, each rank
 * adds X^T X of its tokens into the distributed Hessian (reduce-scatter into
 * block-cyclic form), the method quantizes each rank's rows of W, the
 * dequantized rows are gathered back into the block, and each rank writes its
 * rows into the checkpoint collectively. The block output with all 7
 * quantized linears is the next block's input. */
#include <dirent.h>
#include <signal.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "driver.h"
#include "mpiquant/awq.h"
#include "mpiquant/ckpt.h"
#include "mpiquant/comm.h"
#include "mpiquant/config.h"
#include "mpiquant/error.h"
#include "mpiquant/forward.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/method.h"
#include "mpiquant/quantease.h"
#include "mpiquant/model.h"
#include "mpiquant/shard.h"
#include "mpiquant/smoothquant.h"
#include "mpiquant/timing.h"
#include "mpiquant/tokenizer.h"
#include "mpiquant/windows.h"
#include "qblock.h"

typedef struct {
  const char *model, *calib, *calib_tokens, *out, *method;
  long nsamples, seqlen, bits, group, blocksize, nb;
  long layer_begin, layer_end; /* [begin, end), end -1 = all */
  long blocks_per_file, zstd_level, snapshot_every;
  double damp;
  int sym, act_order, static_groups, true_sequential, resume;
  long iters;  /* quantease */
  int qe_init; /* quantease: QZ_QE_INIT_GPTQ / QZ_QE_INIT_RTN */
  double outlier_frac; /* quantease */
  /* AWQ / SmoothQuant */
  double alpha;
  int no_smooth, no_clip, awq_then_gptq, alpha_set;
  int bits_set, group_set;
} qopts;

static void usage(void) {
  printf(
      "usage: mpiquant quantize --model DIR (--calib TEXT | --calib-tokens FILE)\n"
      "                         --out CKPT [options]\n\n"
      "Quantizes the 7 linears of every decoder block, layer by layer, into a\n"
      "resumable checkpoint (parallel HDF5 + zstd; see docs/checkpoint.md).\n"
      "Calibration windows are chosen deterministically from the second half of\n"
      "the token stream (the protocol of the reference numbers); rows of each\n"
      "weight and calibration windows are split over the ranks.\n\n"
      "  --model DIR          Hugging Face model (config.json + safetensors)\n"
      "  --calib TEXT         calibration text, tokenized with DIR/tokenizer.json\n"
      "  --calib-tokens FILE  pre-tokenized: .bin (uint32 stream) or .txt (one\n"
      "                       window per line: used as the windows, in order)\n"
      "  --nsamples N         calibration windows (default 128)\n"
      "  --seqlen L           tokens per window (default min(2048, max_position))\n"
      "  --method M           rtn | gptq | quantease | awq | smoothquant (default gptq)\n"
      "  --bits B             2..8 (default 4)\n"
      "  --group G            group size along the input, -1 = per channel (128)\n"
      "  --sym                symmetric quantization (default asymmetric)\n"
      "  --act-order          GPTQ: columns by descending Hessian diagonal\n"
      "  --static-groups      GPTQ: group parameters from the unmodified weights\n"
      "  --damp F             GPTQ relative damping (default 0.01); raised along a\n"
      "                       x10 ladder when a Hessian is not positive definite\n"
      "  --blocksize B        GPTQ lazy-batch width (default 128)\n"
      "  --iters N            QuantEase coordinate-descent sweeps (default 30)\n"
      "  --qe-init gptq|rtn   QuantEase start and grid (default gptq)\n"
      "  --outlier-frac F     QuantEase: share of weights kept in f32 (sparse)\n"
      "  --no-true-sequential all groups of a block from the unquantized forward\n"
      "  --layers A:B         quantize blocks A..B-1 only (default all)\n"
      "  --alpha A            SmoothQuant migration strength in [0, 1] (0.5)\n"
      "  --no-smooth          SmoothQuant: W8A8 without the smoothing step\n"
      "                       (smoothquant is always w8 per channel sym, and\n"
      "                       records int8 per-token activations for eval)\n"
      "  --no-clip            AWQ: scale search only, no clip search\n"
      "  --awq-then-gptq      AWQ scales and clipping, then GPTQ (true-\n"
      "                       sequential) on the scaled weights\n"
      "  --out CKPT           checkpoint directory\n"
      "  --resume             continue CKPT after its last completed block (the\n"
      "                       options and the model must be the same)\n"
      "  --blocks-per-file K  blocks per HDF5 file (default: ~2 GiB files, at\n"
      "                       most a tenth of the blocks, at least 1)\n"
      "  --snapshot-every S   hidden-state snapshot every S blocks for resume\n"
      "                       (default: a tenth of the blocks, at least 1)\n"
      "  --zstd-level Z       checkpoint compression (default 3)\n"
      "  --grid-nb NB         ScaLAPACK block size (default 128)\n");
}

static int parse_layers(const char *v, long *a, long *b) {
  char *end = NULL;
  *a = strtol(v, &end, 10);
  QZ_CHECK(end && *end == ':', QZ_ERR_USAGE, "--layers expects A:B, got '%s'", v);
  const char *rest = end + 1;
  *b = *rest ? strtol(rest, &end, 10) : -1;
  QZ_CHECK(!*rest || (end && *end == '\0'), QZ_ERR_USAGE,
           "--layers expects A:B, got '%s'", v);
  QZ_CHECK(*a >= 0 && (*b < 0 || *b > *a), QZ_ERR_USAGE,
           "--layers A:B needs 0 <= A < B, got '%s'", v);
  return QZ_OK;
}

static int parse(int argc, char **argv, qopts *o) {
  static const struct option opts[] = {
      {"model", 1, 0, 'm'},         {"calib", 1, 0, 'c'},
      {"calib-tokens", 1, 0, 'T'},  {"nsamples", 1, 0, 'n'},
      {"seqlen", 1, 0, 'L'},        {"method", 1, 0, 'M'},
      {"bits", 1, 0, 'b'},          {"group", 1, 0, 'g'},
      {"sym", 0, 0, 's'},           {"act-order", 0, 0, 'a'},
      {"static-groups", 0, 0, 'S'}, {"damp", 1, 0, 'd'},
      {"blocksize", 1, 0, 'B'},     {"no-true-sequential", 0, 0, 'N'},
      {"layers", 1, 0, 'l'},        {"out", 1, 0, 'o'},
      {"resume", 0, 0, 'r'},        {"blocks-per-file", 1, 0, 'K'},
      {"snapshot-every", 1, 0, 'E'}, {"zstd-level", 1, 0, 'z'},
      {"grid-nb", 1, 0, 'G'},       {"iters", 1, 0, 'I'},
      {"qe-init", 1, 0, 'Q'},       {"outlier-frac", 1, 0, 'F'},
      {"alpha", 1, 0, 'A'},         {"no-smooth", 0, 0, 'U'},
      {"no-clip", 0, 0, 'C'},       {"awq-then-gptq", 0, 0, 'W'},
      {0, 0, 0, 0}};
  *o = (qopts){.method = "gptq", .nsamples = 128, .bits = 4, .group = 128,
               .blocksize = 128, .nb = 128, .layer_end = -1, .damp = 0.01,
               .zstd_level = 3, .true_sequential = 1, .iters = 30, .alpha = 0.5};
  optind = 0;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'm': o->model = optarg; break;
      case 'c': o->calib = optarg; break;
      case 'T': o->calib_tokens = optarg; break;
      case 'n': QZ_CALL(qz_cli_int("--nsamples", optarg, 1, 1L << 30, &o->nsamples)); break;
      case 'L': QZ_CALL(qz_cli_int("--seqlen", optarg, 2, 1L << 24, &o->seqlen)); break;
      case 'M': o->method = optarg; break;
      case 'b': QZ_CALL(qz_cli_int("--bits", optarg, 2, 8, &o->bits)); o->bits_set = 1; break;
      case 'g': QZ_CALL(qz_cli_int("--group", optarg, -1, 1L << 30, &o->group));
        QZ_CHECK(o->group != 0, QZ_ERR_USAGE, "--group must be -1 (per channel) or >= 1");
        o->group_set = 1;
        break;
      case 'A': QZ_CALL(qz_cli_double("--alpha", optarg, 0.0, 1.0, &o->alpha)); o->alpha_set = 1; break;
      case 'U': o->no_smooth = 1; break;
      case 'C': o->no_clip = 1; break;
      case 'W': o->awq_then_gptq = 1; break;
      case 's': o->sym = 1; break;
      case 'a': o->act_order = 1; break;
      case 'S': o->static_groups = 1; break;
      case 'd': QZ_CALL(qz_cli_double("--damp", optarg, 0.0, 10.0, &o->damp)); break;
      case 'B': QZ_CALL(qz_cli_int("--blocksize", optarg, 1, 1L << 20, &o->blocksize)); break;
      case 'N': o->true_sequential = 0; break;
      case 'l': QZ_CALL(parse_layers(optarg, &o->layer_begin, &o->layer_end)); break;
      case 'o': o->out = optarg; break;
      case 'r': o->resume = 1; break;
      case 'K': QZ_CALL(qz_cli_int("--blocks-per-file", optarg, 1, 1L << 20, &o->blocks_per_file)); break;
      case 'E': QZ_CALL(qz_cli_int("--snapshot-every", optarg, 1, 1L << 20, &o->snapshot_every)); break;
      case 'z': QZ_CALL(qz_cli_int("--zstd-level", optarg, 1, 19, &o->zstd_level)); break;
      case 'G': QZ_CALL(qz_cli_int("--grid-nb", optarg, 8, 4096, &o->nb)); break;
      case 'I': QZ_CALL(qz_cli_int("--iters", optarg, 0, 1L << 20, &o->iters)); break;
      case 'F': QZ_CALL(qz_cli_double("--outlier-frac", optarg, 0.0, 0.5, &o->outlier_frac)); break;
      case 'Q':
        QZ_CHECK(!strcmp(optarg, "gptq") || !strcmp(optarg, "rtn"), QZ_ERR_USAGE,
                 "quantize: --qe-init must be gptq or rtn, got '%s'", optarg);
        o->qe_init = strcmp(optarg, "rtn") ? QZ_QE_INIT_GPTQ : QZ_QE_INIT_RTN;
        break;
      default:
        QZ_FAIL(QZ_ERR_USAGE, "quantize: unknown or incomplete option '%s' (see "
                "mpiquant quantize --help)", argv[optind - 1]);
    }
  }
  QZ_CHECK(optind == argc, QZ_ERR_USAGE, "quantize: unexpected argument '%s'", argv[optind]);
  QZ_CHECK(o->model, QZ_ERR_USAGE, "quantize: --model DIR is required");
  QZ_CHECK(o->out, QZ_ERR_USAGE, "quantize: --out CKPT is required");
  QZ_CHECK(!(o->calib && o->calib_tokens), QZ_ERR_USAGE,
           "quantize: give only one of --calib and --calib-tokens");
  QZ_CHECK(qz_method_find(o->method), QZ_ERR_USAGE,
           "quantize: unknown --method '%s' (available: %s)", o->method,
           qz_method_names());
  QZ_CHECK(o->outlier_frac == 0 || !strcmp(o->method, "quantease"), QZ_ERR_USAGE,
           "quantize: --outlier-frac needs --method quantease");
  int sq = strcmp(o->method, "smoothquant") == 0, awq = strcmp(o->method, "awq") == 0;
  QZ_CHECK(!strcmp(o->method, "gptq") || awq || sq || !(o->act_order || o->static_groups),
           QZ_ERR_USAGE, "quantize --method %s: --act-order and --static-groups are GPTQ "
           "options (--method gptq, or awq --awq-then-gptq); %s would ignore them",
           o->method, o->method);
  QZ_CHECK(sq || !(o->alpha_set || o->no_smooth), QZ_ERR_USAGE,
           "quantize: --alpha and --no-smooth belong to --method smoothquant");
  QZ_CHECK(!(o->alpha_set && o->no_smooth), QZ_ERR_USAGE,
           "quantize: give --alpha or --no-smooth, not both");
  QZ_CHECK(awq || !(o->no_clip || o->awq_then_gptq), QZ_ERR_USAGE,
           "quantize: --no-clip and --awq-then-gptq belong to --method awq");
  if (sq) {
    QZ_CHECK(!(o->bits_set && o->bits != 8) && !(o->group_set && o->group != -1) &&
                 !o->act_order && !o->static_groups,
             QZ_ERR_USAGE, "quantize --method smoothquant is W8A8: weights int8 per "
             "output channel, symmetric (no --bits other than 8, --group other than "
             "-1, --act-order or --static-groups)");
    o->bits = 8;
    o->group = -1;
    o->sym = 1;
  }
  if (awq) {
    QZ_CHECK(!o->sym, QZ_ERR_USAGE, "quantize --method awq uses the zero-point "
             "quantizer; --sym is not supported");
    QZ_CHECK(o->awq_then_gptq || !(o->act_order || o->static_groups), QZ_ERR_USAGE,
             "quantize --method awq: --act-order / --static-groups need --awq-then-gptq");
  }
  return QZ_OK;
}

static int ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && strcmp(s + n - m, suf) == 0;
}

/* Calibration windows [nwin, L] on rank 0 (not collective). */
static int calib_windows(const qopts *o, int64_t max_pos, int64_t vocab, int32_t **win,
                         int64_t *nwin, int64_t *L) {
  int st = QZ_OK;
  int32_t *ids = NULL;
  int64_t n = 0;
  char *text = NULL;
  qz_tokenizer *tok = NULL;
  int64_t *starts = NULL;
  *win = NULL;
  if (o->calib_tokens && ends_with(o->calib_tokens, ".txt")) {
    int64_t lines, wl;
    QZ_CALL(qz_windows_read_txt(o->calib_tokens, &ids, &lines, &wl));
    QZ_CALL_DONE(qz_tokens_check_vocab(o->calib_tokens, ids, lines * wl, vocab));
    QZ_CHECK_DONE(o->seqlen == 0 || o->seqlen == wl, QZ_ERR_USAGE,
                  "%s holds windows of %lld tokens but --seqlen is %ld",
                  o->calib_tokens, (long long)wl, o->seqlen);
    QZ_CHECK_DONE(lines >= o->nsamples, QZ_ERR_USAGE,
                  "%s holds %lld windows, --nsamples asks for %ld",
                  o->calib_tokens, (long long)lines, o->nsamples);
    *nwin = o->nsamples;
    *L = wl;
    *win = ids;
    ids = NULL;
    goto done;
  }
  if (o->calib_tokens) {
    QZ_CALL_DONE(qz_tokens_read_bin(o->calib_tokens, &ids, &n));
    QZ_CALL_DONE(qz_tokens_check_vocab(o->calib_tokens, ids, n, vocab));
  } else {
    size_t len = 0;
    QZ_CALL_DONE(qz_tokenizer_load(o->model, &tok));
    QZ_CALL_DONE(qz_read_file(o->calib, &text, &len));
    /* the whole file as one string, no BOS (the reference protocol) */
    QZ_CALL_DONE(qz_tokenizer_encode(tok, text, len, 0, &ids, &n));
    qz_info("calibration: %s -> %lld tokens", o->calib, (long long)n);
  }
  *L = o->seqlen ? o->seqlen : (max_pos < 2048 ? max_pos : 2048);
  *nwin = o->nsamples;
  QZ_CALL_DONE(qz_alloc((size_t)*nwin, sizeof *starts, "calibration starts", &starts));
  if (*L > max_pos)
    qz_warn("quantize: --seqlen %lld exceeds max_position_embeddings %lld of %s",
            (long long)*L, (long long)max_pos, o->model);
  if (n / 2 < *nwin * *L) /* windows come from the second half of the stream */
    qz_warn("calibration: %lld tokens give %lld in the second half, fewer than --nsamples "
            "%lld x --seqlen %lld = %lld: the windows overlap", (long long)n,
            (long long)(n / 2), (long long)*nwin, (long long)*L, (long long)(*nwin * *L));
  QZ_CALL_DONE(qz_windows_calib_starts(n, *L, *nwin, starts));
  QZ_CALL_DONE(qz_alloc((size_t)(*nwin * *L), sizeof **win, "calibration windows", win));
  QZ_CALL_DONE(qz_windows_gather(ids, n, starts, *nwin, *L, *win));
done:
  if (st != QZ_OK) qz_free(win);
  free(ids);
  free(text);
  free(starts);
  qz_tokenizer_free(&tok);
  return st;
}

static uint64_t fnv1a(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* Bytes in the regular files of a directory (rank 0, for the final log). */
static int64_t dir_bytes(const char *dir) {
  struct dirent **list = NULL;
  int n = scandir(dir, &list, NULL, alphasort);
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    char p[4200];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, list[i]->d_name);
    if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) total += (int64_t)sb.st_size;
    free(list[i]);
  }
  free(list);
  return total;
}

static char *options_json(const qopts *o, int64_t nwin, int64_t L, uint64_t calib_hash) {
  char h[32];
  snprintf(h, sizeof h, "%016llx", (unsigned long long)calib_hash);
  json_t *j = json_pack(
      "{s:s, s:i, s:i, s:b, s:b, s:b, s:f, s:i, s:b, s:I, s:I, s:s, s:i, s:i}",
      "method", o->method, "bits", (int)o->bits, "group", (int)o->group, "sym",
      o->sym, "act_order", o->act_order, "static_groups", o->static_groups,
      "damp", o->damp, "blocksize", (int)o->blocksize, "true_sequential",
      o->true_sequential, "nsamples", (json_int_t)nwin, "seqlen", (json_int_t)L,
      "calib_fnv1a", h, "layer_begin", (int)o->layer_begin, "layer_end",
      (int)o->layer_end);
  if (j && !strcmp(o->method, "quantease"))
    json_object_set_new(j, "quantease", json_pack("{s:i, s:s, s:f}", "iters",
                        (int)o->iters, "init", o->qe_init ? "rtn" : "gptq",
                        "outlier_frac", o->outlier_frac));
  /* keys only for the methods that use them: RTN/GPTQ options (and so their
   * checkpoint files) stay as they were */
  if (strcmp(o->method, "smoothquant") == 0) {
    json_object_set_new(j, "alpha", json_real(o->no_smooth ? 0.0 : o->alpha));
    json_object_set_new(j, "smooth", json_boolean(!o->no_smooth));
    json_object_set_new(j, "act_bits", json_integer(8));
  } else if (strcmp(o->method, "awq") == 0) {
    json_object_set_new(j, "awq_clip", json_boolean(!o->no_clip));
    json_object_set_new(j, "awq_then_gptq", json_boolean(o->awq_then_gptq));
    json_object_set_new(j, "awq_grid", json_integer(20));
  }
  char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(j);
  return s;
}

/* Hessians by input width, reused across blocks (reset, not reallocated). */
typedef struct {
  int64_t d[3];
  qz_hessian *h[3];
} hcache;

static int hessian_for(hcache *c, qz_grid *g, int64_t d, qz_hessian **out) {
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

typedef struct {
  qz_ctx *ctx;
  const qopts *o;
  const qz_model_config *cfg;
  const qz_method_ops *ops;
  void *mstate;
  qz_method_opts mo;
  qz_ckpt *ck;
  qz_grid *grid;
  hcache hc;
  json_t *stats; /* per-block stats being built */
  const char *meta_method; /* method attribute of the linears (o->method) */
  qz_awq_opts awq;
  int64_t win0, nwin;      /* this rank's first window, all windows */
} qrun;

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

/* Quantize linear l of block `layer` whose input Hessian is H (NULL for RTN),
 * replace w->w[l] by its dequantized weights, write this rank's rows.
 * Collective on the run's communicator. */
static int quantize_linear(qrun *r, int layer, qz_block_weights *w, qz_linear l,
                           qz_hessian *H) {
  MPI_Comm comm = r->ctx->comm;
  int64_t out, in, r0, nr;
  qz_linear_shape(r->cfg, l, &out, &in);
  qz_split_even(out, r->ctx->size, r->ctx->rank, &r0, &nr);
  int64_t ng = qz_quant_ngroups(&r->mo.spec, in);
  size_t rows = (size_t)(nr > 0 ? nr : 1);
  char name[128];
  snprintf(name, sizeof name, "model.layers.%d.%s", layer, qz_linear_name(l));
  qz_layer_result res = {0};
  float *q = NULL;
  int st = qz_alloc(rows * (size_t)in, 1, "codes", &res.codes);
  if (st == QZ_OK) st = qz_alloc(rows * (size_t)ng, 4, "scales", &res.scale);
  if (st == QZ_OK) st = qz_alloc(rows * (size_t)ng, 4, "zeros", &res.zero);
  if (st == QZ_OK) st = qz_alloc(rows, 4, "losses", &res.losses);
  if (st == QZ_OK) st = qz_alloc((size_t)in, 4, "g_idx", &res.g_idx);
  if (st == QZ_OK) st = qz_alloc((size_t)in, 4, "perm", &res.perm);
  if (st == QZ_OK) st = qz_alloc(rows * (size_t)in, 4, "dequantized rows", &q);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  qz_layer layer_in = {.name = name, .out_features = out, .in_features = in,
                       .row0 = r0, .nrows = nr, .w = w->w[l] + r0 * in, .H = H};
  double t0 = qz_wtime();
  st = r->ops->quantize_layer(r->mstate, &layer_in, &res);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  double secs = qz_wtime() - t0;
  /* the forward continues with exactly the weights the checkpoint holds */
  qz_dequantize_rows(nr, in, ng, res.codes, res.scale, res.zero, res.g_idx, q);
  qz_outliers_add_rows(r0, nr, in, res.noutliers, res.outlier_idx, res.outlier_val, q);
  QZ_CALL_DONE(qz_gather_rows_f32(comm, out, in, q, w->w[l]));
  double loss = res.loss_local;
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, comm));
  qz_ckpt_linear_meta meta = {.bits = (int)r->o->bits, .group_size = (int)r->o->group,
                              .sym = r->o->sym, .act_order = r->o->act_order,
                              .static_groups = r->o->static_groups,
                              .damp_used = r->ops->needs_hessian ? res.percdamp_used : 0.0,
                              .loss = loss, .seconds = secs};
  snprintf(meta.method, sizeof meta.method, "%s",
           r->meta_method ? r->meta_method : r->o->method);
  qz_timer_start(QZ_PHASE_WRITE);
  st = qz_ckpt_write_linear(r->ck, layer, qz_linear_name(l), out, in, ng, r0, nr,
                            res.codes, res.scale, res.zero, res.g_idx, res.perm, &meta);
  st = qz_error_agree(comm, st);
  if (!st && r->mo.outlier_frac > 0)
    st = qz_ckpt_write_outliers(r->ck, layer, qz_linear_name(l), res.noutliers,
                                res.outlier_idx, res.outlier_val);
  qz_timer_stop(QZ_PHASE_WRITE);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  kill_hook(r->ctx->rank, layer);
  if (r->ops->needs_hessian)
    qz_info("block %d %-17s loss %-12.6g damp %-8.3g dead %-4lld %.3f s", layer,
            qz_linear_name(l), loss, res.percdamp_used, (long long)res.ndead, secs);
  else
    qz_debug("block %d %-17s %.3f s", layer, qz_linear_name(l), secs);
  json_object_set_new(r->stats, qz_linear_name(l),
                      json_pack("{s:f, s:f, s:f, s:I}", "loss", loss, "damp",
                                meta.damp_used, "seconds", secs, "dead",
                                (json_int_t)res.ndead));
done:
  free(res.codes);
  free(res.scale);
  free(res.zero);
  free(res.losses);
  free(res.g_idx);
  qz_free(&res.outlier_idx);
  qz_free(&res.outlier_val);
  free(res.perm);
  free(q);
  return st;
}

static const qz_linear k_groups[4][3] = {
    {QZ_LIN_Q, QZ_LIN_K, QZ_LIN_V}, {QZ_LIN_O, QZ_LIN_COUNT, QZ_LIN_COUNT},
    {QZ_LIN_GATE, QZ_LIN_UP, QZ_LIN_COUNT}, {QZ_LIN_DOWN, QZ_LIN_COUNT, QZ_LIN_COUNT}};
static const qz_fwd_stage k_group_stage[4] = {QZ_STAGE_QKV_IN, QZ_STAGE_O_IN,
                                              QZ_STAGE_GATEUP_IN, QZ_STAGE_DOWN_IN};

/* Hessian of one group's input from this rank's tokens. Collective. */
static int group_hessian(qrun *r, qz_fwd *f, int g, qz_hessian **H) {
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

static int quantize_block_gptq(qrun *r, int layer, qz_fwd *f, qz_block_weights *w) {
  MPI_Comm comm = r->ctx->comm;
  qz_fwd_block_begin(f);
  if (!r->o->true_sequential) { /* every group's input from the fp block */
    qz_timer_start(QZ_PHASE_FORWARD);
    int st = qz_fwd_run(f, w, QZ_STAGE_DOWN_IN);
    qz_timer_stop(QZ_PHASE_FORWARD);
    QZ_CALL(qz_error_agree(comm, st));
  }
  for (int g = 0; g < 4; g++) {
    if (r->o->true_sequential) {
      qz_timer_start(QZ_PHASE_FORWARD);
      int st = qz_fwd_run(f, w, k_group_stage[g]);
      qz_timer_stop(QZ_PHASE_FORWARD);
      QZ_CALL(qz_error_agree(comm, st));
    }
    qz_hessian *H = NULL;
    QZ_CALL(group_hessian(r, f, g, &H));
    for (int k = 0; k < 3 && k_groups[g][k] != QZ_LIN_COUNT; k++)
      QZ_CALL(quantize_linear(r, layer, w, k_groups[g][k], H));
  }
  if (!r->o->true_sequential) qz_fwd_invalidate(f, QZ_STAGE_O_IN);
  qz_timer_start(QZ_PHASE_FORWARD);
  int st = qz_fwd_run(f, w, QZ_STAGE_OUT);
  if (st == QZ_OK) st = qz_fwd_block_commit(f);
  qz_timer_stop(QZ_PHASE_FORWARD);
  QZ_CALL(qz_error_agree(comm, st));
  return QZ_OK;
}

/* SmoothQuant: activation maxima of the q/k/v and gate/up inputs from the
 * fp, unsmoothed block (its output is the next block's input), smoothing
 * folded into the RMSNorms, all 7 linears int8. Collective. */
static int quantize_block_sq(qrun *r, int layer, qz_fwd *f, qz_block_weights *w) {
  MPI_Comm comm = r->ctx->comm;
  int64_t H = w->hidden, nc;
  float *a = NULL, *s = NULL;
  int st = qz_alloc((size_t)(2 * H), 4, "activation maxima", &a);
  if (st == QZ_OK) st = qz_alloc((size_t)H, 4, "smoothing factors", &s);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  qz_timer_start(QZ_PHASE_FORWARD);
  qz_fwd_block_begin(f);
  st = qz_fwd_run(f, w, QZ_STAGE_OUT);
  qz_timer_stop(QZ_PHASE_FORWARD);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  memset(a, 0, sizeof(float) * (size_t)(2 * H));
  for (int k = 0; k < 2; k++) {
    const float *x = qz_fwd_stage_output(f, k ? QZ_STAGE_GATEUP_IN : QZ_STAGE_QKV_IN, &nc);
    for (int64_t t = 0; t < qz_fwd_ntok(f); t++)
      for (int64_t j = 0; j < H; j++) {
        float v = fabsf(x[t * H + j]);
        a[k * H + j] = v > a[k * H + j] ? v : a[k * H + j];
      }
  }
  {
    int rc = MPI_Allreduce(MPI_IN_PLACE, a, (int)(2 * H), MPI_FLOAT, MPI_MAX, comm);
    if (rc != MPI_SUCCESS) {
      st = qz_mpi_error(rc, "MPI_Allreduce(activation maxima)", __FILE__, __LINE__, __func__);
      goto done;
    }
  }
  QZ_CALL_DONE(qz_fwd_block_commit(f)); /* next input: the fp block's output */
  if (!r->o->no_smooth) {
    int64_t qd = w->nq * w->hd, kvd = w->nkv * w->hd;
    float *qkv[3] = {w->w[QZ_LIN_Q], w->w[QZ_LIN_K], w->w[QZ_LIN_V]};
    int64_t qkv_rows[3] = {qd, kvd, kvd};
    float *gu[2] = {w->w[QZ_LIN_GATE], w->w[QZ_LIN_UP]};
    int64_t gu_rows[2] = {w->inter, w->inter};
    float smax[2], amax[2] = {0.0f, 0.0f};
    for (int64_t j = 0; j < H; j++) {
      amax[0] = a[j] > amax[0] ? a[j] : amax[0];
      amax[1] = a[H + j] > amax[1] ? a[H + j] : amax[1];
    }
    for (int k = 0; k < 2; k++) {
      float *const *ws = k ? gu : qkv;
      const int64_t *rows = k ? gu_rows : qkv_rows;
      int nw = k ? 2 : 3;
      qz_sq_smooth_factors(H, a + k * H, nw, (const float *const *)ws, rows, r->o->alpha, s);
      qz_sq_fold(H, s, k ? w->ffn_norm : w->attn_norm, nw, ws, rows);
      smax[k] = 0.0f;
      for (int64_t j = 0; j < H; j++) smax[k] = s[j] > smax[k] ? s[j] : smax[k];
    }
    qz_info("block %d smoothquant alpha %.3g: max act |x| qkv %.4g gate/up %.4g, "
            "max s %.4g / %.4g", layer, r->o->alpha, amax[0], amax[1], smax[0], smax[1]);
  }
  for (int l = 0; l < QZ_LIN_COUNT; l++)
    QZ_CALL_DONE(quantize_linear(r, layer, w, (qz_linear)l, NULL));
  QZ_CALL_DONE(qz_ckpt_write_norms(r->ck, layer, H, w->attn_norm, w->ffn_norm));
done:
  free(a);
  free(s);
  return st;
}

static int quantize_block_gptq(qrun *r, int layer, qz_fwd *f, qz_block_weights *w);

/* AWQ: scale + clip search on the fp block (llm-awq: the next block's input
 * is this block's fp output), folded into w, then the 7 linears quantized
 * (llm-awq quantizer, or GPTQ with --awq-then-gptq, whose calibration is
 * then sequential). Collective. */
static int quantize_block_awq(qrun *r, int layer, qz_fwd *f, qz_block_weights *w) {
  MPI_Comm comm = r->ctx->comm;
  qz_awq_block_result ar;
  qz_timer_start(QZ_PHASE_FORWARD);
  int st = qz_awq_block(comm, r->cfg, f, w, &r->awq, r->win0, r->nwin, &ar);
  qz_timer_stop(QZ_PHASE_FORWARD);
  QZ_CALL(qz_error_agree(comm, st));
  char o_txt[32] = "skipped";
  if (ar.applied[QZ_AWQ_O]) snprintf(o_txt, sizeof o_txt, "%.2f", ar.ratio[QZ_AWQ_O]);
  qz_info("block %d awq ratios q/k/v %.2f / gate/up %.2f / down %.2f (o_proj %s); "
          "loss vs ratio 0: %.4g/%.4g, %.4g/%.4g, %.4g/%.4g", layer,
          ar.ratio[QZ_AWQ_QKV], ar.ratio[QZ_AWQ_GATEUP], ar.ratio[QZ_AWQ_DOWN], o_txt,
          ar.loss[QZ_AWQ_QKV], ar.loss_r0[QZ_AWQ_QKV], ar.loss[QZ_AWQ_GATEUP],
          ar.loss_r0[QZ_AWQ_GATEUP], ar.loss[QZ_AWQ_DOWN], ar.loss_r0[QZ_AWQ_DOWN]);
  json_t *rat = json_array(), *los = json_array(), *clip = json_object();
  for (int k = 0; k < QZ_AWQ_NSEARCH; k++) {
    json_array_append_new(rat, ar.applied[k] ? json_real(ar.ratio[k]) : json_null());
    json_array_append_new(los, ar.applied[k] ? json_real(ar.loss[k]) : json_null());
  }
  for (int l = 0; l < QZ_LIN_COUNT; l++)
    if (l != QZ_LIN_Q && l != QZ_LIN_K)
      json_object_set_new(clip, qz_linear_name((qz_linear)l), json_integer(ar.clipped[l]));
  json_object_set_new(r->stats, "awq_ratios", rat); /* [qkv, o, gate/up, down] */
  json_object_set_new(r->stats, "awq_loss", los);
  json_object_set_new(r->stats, "awq_clipped", clip);
  if (r->o->awq_then_gptq) {
    QZ_CALL(quantize_block_gptq(r, layer, f, w));
  } else {
    QZ_CALL(qz_error_agree(comm, qz_fwd_block_commit(f)));
    for (int l = 0; l < QZ_LIN_COUNT; l++)
      QZ_CALL(quantize_linear(r, layer, w, (qz_linear)l, NULL));
  }
  QZ_CALL(qz_ckpt_write_norms(r->ck, layer, w->hidden, w->attn_norm, w->ffn_norm));
  return QZ_OK;
}

static int default_blocks_per_file(const qz_model_config *c) {
  double block_bytes = (double)(c->hidden_size * (c->num_attention_heads * c->head_dim) * 2 +
                                c->hidden_size * (c->num_key_value_heads * c->head_dim) * 2 +
                                c->hidden_size * c->intermediate_size * 3);
  long k = (long)((2.0 * 1073741824.0) / (block_bytes > 1 ? block_bytes : 1));
  long tenth = (long)((c->num_hidden_layers + 9) / 10);
  if (k > tenth) k = tenth;
  return k < 1 ? 1 : (int)k;
}

int qz_cmd_quantize(qz_ctx *ctx, int argc, char **argv) {
  if (qz_cli_wants_help(argc, argv)) {
    if (ctx->rank == 0) usage();
    return QZ_OK;
  }
  qopts o;
  QZ_CALL(parse(argc, argv, &o));
  MPI_Comm comm = ctx->comm;
  int st = QZ_OK;
  qz_model *m = NULL;
  qrun r = {.ctx = ctx, .o = &o};
  int32_t *win = NULL;
  char *src = NULL, *opt = NULL;
  qz_fwd *f = NULL;
  qz_block_weights w = {0};
  double t_start = qz_wtime();

  QZ_CALL_DONE(qz_model_open(comm, o.model, &m));
  r.cfg = qz_model_config_of(m);
  const qz_model_config *cfg = r.cfg;
  QZ_CHECK_DONE(!qz_config_quantized(cfg), QZ_ERR_ARG,
                "%s is already quantized (%s); quantize the unquantized source model",
                o.model, qz_config_quantized(cfg));
  int nblocks = (int)cfg->num_hidden_layers;
  int lb = (int)o.layer_begin, le = o.layer_end < 0 ? nblocks : (int)o.layer_end;
  QZ_CHECK_DONE(lb < nblocks && le <= nblocks, QZ_ERR_USAGE,
                "--layers %d:%d outside the model's %d blocks", lb, le, nblocks);
  int is_sq = strcmp(o.method, "smoothquant") == 0, is_awq = strcmp(o.method, "awq") == 0;
  /* plain AWQ and SmoothQuant calibrate on the fp model (block inputs =
   * outputs of the unquantized blocks); GPTQ (also after AWQ) sequentially */
  int fp_stream = is_sq || (is_awq && !o.awq_then_gptq);
  r.ops = qz_method_find(is_awq && o.awq_then_gptq ? "gptq" : o.method);
  if (is_awq && o.awq_then_gptq) r.meta_method = "awq+gptq";
  r.awq = qz_awq_opts_default((int)o.bits, o.group);
  r.awq.clip = !o.no_clip;
  r.mo = qz_method_opts_default();
  r.mo.spec.bits = (int)o.bits;
  r.mo.spec.groupsize = o.group;
  r.mo.spec.sym = o.sym;
  r.mo.act_order = o.act_order;
  r.mo.static_groups = o.static_groups;
  r.mo.blocksize = (int)o.blocksize;
  r.mo.percdamp = o.damp;
  r.mo.iters = (int)o.iters;
  r.mo.qe_init = o.qe_init;
  r.mo.outlier_frac = o.outlier_frac;
  QZ_CALL_DONE(r.ops->setup(&r.mo, &r.mstate));
  int need_calib = r.ops->needs_hessian || is_sq || is_awq;
  QZ_CHECK_DONE(!need_calib || o.calib || o.calib_tokens, QZ_ERR_USAGE,
                "quantize --method %s needs calibration data: --calib TEXT or "
                "--calib-tokens FILE", o.method);

  /* calibration windows: rank 0 reads/tokenizes, everyone gets them */
  int64_t nwin = 0, L = 0;
  uint64_t calib_hash = 0;
  if (need_calib) {
    if (ctx->rank == 0) st = calib_windows(&o, cfg->max_position_embeddings, cfg->vocab_size,
                                          &win, &nwin, &L);
    QZ_CALL_DONE(qz_error_agree(comm, st));
    int64_t v[2] = {nwin, L};
    QZ_CALL_MPI(MPI_Bcast(v, 2, MPI_INT64_T, 0, comm));
    nwin = v[0];
    L = v[1];
    if (ctx->rank != 0) st = qz_alloc((size_t)(nwin * L), sizeof *win, "calibration windows", &win);
    QZ_CALL_DONE(qz_error_agree(comm, st));
    QZ_CALL_MPI(MPI_Bcast(win, (int)(nwin * L), MPI_INT32_T, 0, comm));
    calib_hash = fnv1a(win, sizeof *win * (size_t)(nwin * L));
  }

  /* checkpoint (fingerprint and options decide whether a resume is valid) */
  QZ_CALL_DONE(qz_ckpt_source_fingerprint(comm, o.model, &src));
  opt = options_json(&o, nwin, L, calib_hash);
  char absdir[4096];
  if (!realpath(o.model, absdir)) snprintf(absdir, sizeof absdir, "%s", o.model);
  qz_ckpt_params cp = {.options_json = opt, .source_json = src, .nblocks = nblocks,
                       .blocks_per_file = o.blocks_per_file ? (int)o.blocks_per_file
                                                            : default_blocks_per_file(cfg),
                       .zstd_level = (int)o.zstd_level, .mpiquant_version = MPIQUANT_VERSION,
                       .model_dir = absdir};
  QZ_CALL_DONE(qz_ckpt_create(comm, o.out, &cp, o.resume, &r.ck));
  int b0 = lb;
  while (b0 < le && qz_ckpt_block_done(r.ck, b0)) b0++;
  if (b0 >= le) {
    qz_info("quantize: blocks %d..%d are already complete in %s; nothing to do",
            lb, le - 1, o.out);
    goto done;
  }

  /* per-rank memory, stated before the work starts */
  int64_t first = 0, count = 0;
  qz_shard_windows(nwin, ctx->size, ctx->rank, &first, &count);
  r.win0 = first;
  r.nwin = nwin;
  QZ_CALL_DONE(qz_error_agree(comm, qz_block_weights_alloc(cfg, &w)));
  if (need_calib) {
    QZ_CALL_DONE(qz_error_agree(comm, qz_fwd_create(cfg, count, L, &f)));
    QZ_CALL_DONE(qz_grid_create(comm, (int)o.nb, &r.grid));
  }
  {
    char a[32], b[32], c2[32], d[32];
    double dmax = (double)(cfg->intermediate_size > cfg->hidden_size ? cfg->intermediate_size
                                                                   : cfg->hidden_size);
    double hbytes = need_calib ? 8.0 * dmax * dmax / ctx->size : 0.0;
    qz_info("quantize %s: %s w%ld g%ld%s%s, blocks %d..%d of %d, %lld windows x %lld "
            "tokens over %d ranks",
            o.model, o.method, o.bits, o.group, o.sym ? " sym" : "",
            o.act_order ? " act-order" : "", lb, le - 1, nblocks, (long long)nwin,
            (long long)L, ctx->size);
    qz_info("memory per rank: block weights %s + forward workspace %s (%lld windows) "
            "+ largest Hessian share ~%s (8*d^2/P, d=%.0f) + panels ~%s",
            qz_fmt_bytes((double)w.mem_bytes, a, sizeof a),
            qz_fmt_bytes(f ? (double)qz_fwd_bytes(f) : 0.0, b, sizeof b), (long long)count,
            qz_fmt_bytes(hbytes, c2, sizeof c2), dmax,
            qz_fmt_bytes(need_calib ? 2.0 * 8.0 * dmax * (double)o.blocksize : 0.0, d, sizeof d));
  }

  /* hidden states at the input of block b0 */
  if (need_calib) {
    int s = 0;
    int snap = b0 > 0 ? qz_ckpt_snapshot_block(r.ck) : -1;
    if (snap > 0 && snap <= b0) {
      QZ_CALL_DONE(qz_ckpt_read_snapshot(r.ck, nwin, L, cfg->hidden_size, first, count,
                                         qz_fwd_hidden(f)));
      s = snap;
      qz_info("resume: hidden states of block %d from the snapshot", snap);
    } else {
      /* only this rank's tokens' rows of the embedding: T x H, not V x H */
      QZ_CALL_DONE(qz_error_agree(comm, qz_fwd_embed_model(f, m, win + first * L)));
    }
    qz_ckpt_source cs = {.ck = r.ck};
    for (int b = s; b < b0; b++) { /* completed (or unselected) blocks */
      if (fp_stream) /* the calibration stream of these methods is the fp model's */
        QZ_CALL_DONE(qz_model_load_block(m, b, &w));
      else
        QZ_CALL_DONE(qz_ckpt_block_source(&cs, m, b, &w));
      qz_timer_start(QZ_PHASE_FORWARD);
      st = qz_fwd_block(f, &w);
      qz_timer_stop(QZ_PHASE_FORWARD);
      QZ_CALL_DONE(qz_error_agree(comm, st));
    }
    if (b0 > s) qz_info("resume: replayed blocks %d..%d", s, b0 - 1);
  }

  int snap_every = o.snapshot_every ? (int)o.snapshot_every : (nblocks + 9) / 10;
  /* a crash during the snapshot at b0 (the last one written before it): write
   * it again, so that a resumed checkpoint equals an uninterrupted one */
  if (need_calib && b0 > lb && b0 < le && b0 % snap_every == 0 &&
      !qz_ckpt_snapshot_current(r.ck, b0))
    QZ_CALL_DONE(qz_ckpt_write_snapshot(r.ck, b0, nwin, L, cfg->hidden_size, first, count,
                                        qz_fwd_hidden(f)));
  qz_progress prog;
  qz_progress_begin(&prog, "quantize blocks", le - b0);
  prog.interval = 0.0;
  for (int b = b0; b < le; b++) {
    double tb = qz_wtime();
    r.stats = json_object();
    QZ_CALL_DONE(qz_model_load_block(m, b, &w));
    QZ_CALL_DONE(qz_ckpt_begin_block(r.ck, b));
    if (is_sq) {
      QZ_CALL_DONE(quantize_block_sq(&r, b, f, &w));
    } else if (is_awq) {
      QZ_CALL_DONE(quantize_block_awq(&r, b, f, &w));
    } else if (need_calib) {
      QZ_CALL_DONE(quantize_block_gptq(&r, b, f, &w));
    } else {
      for (int l = 0; l < QZ_LIN_COUNT; l++)
        QZ_CALL_DONE(quantize_linear(&r, b, &w, (qz_linear)l, NULL));
    }
    json_object_set_new(r.stats, "seconds", json_real(qz_wtime() - tb));
    char *stxt = json_dumps(r.stats, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(r.stats);
    r.stats = NULL;
    st = qz_ckpt_end_block(r.ck, b, stxt);
    free(stxt);
    QZ_CALL_DONE(st);
    if (need_calib && b + 1 < le && (b + 1) % snap_every == 0) {
      qz_timer_start(QZ_PHASE_WRITE);
      st = qz_ckpt_write_snapshot(r.ck, b + 1, nwin, L, cfg->hidden_size, first, count,
                                  qz_fwd_hidden(f));
      qz_timer_stop(QZ_PHASE_WRITE);
      QZ_CALL_DONE(st);
    }
    qz_progress_update(&prog, b - b0 + 1);
  }
  {
    int64_t bytes = 0;
    QZ_CALL_DONE(qz_model_bytes_read_total(m, &bytes));
    char a[32], b[32], c3[32];
    qz_info("quantize: done in %.2f s; weights read %s in total (model %s); checkpoint %s "
            "holds %s",
            qz_wtime() - t_start, qz_fmt_bytes((double)bytes, a, sizeof a),
            qz_fmt_bytes((double)qz_model_bytes_on_disk(m), b, sizeof b), o.out,
            qz_fmt_bytes(ctx->rank == 0 ? (double)dir_bytes(o.out) : 0.0, c3, sizeof c3));
  }
done:
  json_decref(r.stats);
  for (int i = 0; i < 3; i++) qz_hessian_destroy(&r.hc.h[i]);
  if (r.grid) qz_grid_destroy(&r.grid);
  if (r.ops && r.mstate) r.ops->destroy(&r.mstate);
  qz_ckpt_close(&r.ck);
  qz_fwd_destroy(&f);
  qz_block_weights_free(&w);
  qz_free(&win);
  free(src);
  free(opt);
  qz_model_close(&m);
  return st;
}
