/* mpiquant synth: a Hugging Face model directory with random weights of a
 * given shape that look like a pretrained LLM to a quantizer.
 *
 * What "looks like" means here (each a known property of real checkpoints
 * that quantizers react to):
 *  - weights ~ N(0, std) with std 0.02 for the projections that read the
 *    residual stream (q, k, v, gate, up) and 0.02 / sqrt(2 * layers) for
 *    the ones writing into it (o, down), each output row scaled by a
 *    log-normal factor (sigma 0.25) so per-row ranges differ;
 *  - a few "outlier" input channels (H / 1024, at least 1, the same in every
 *    block): the RMSNorm weights are 8x larger there, so the inputs of
 *    q/k/v/gate/up and their Hessian diagonals have a few huge channels;
 *  - "super weights": in the down_proj of the first min(2, layers) blocks one
 *    entry per outlier channel (row = that channel) of magnitude 0.5
 *    (~100-1000x the typical weight);
 *  - embeddings N(0, 0.02) with the outlier ("massive activation")
 *    dimensions 20x larger.
 * Random numbers come from a counter-based generator keyed by (seed, tensor
 * name, element index), so the files do not depend on the write order and
 * every run with one seed gives the same bytes.  Only rank 0 writes; one
 * tensor is in memory at a time (the writer spills it to its shard file). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "driver.h"
#include "mpiquant/comm.h"
#include "mpiquant/config.h"
#include "mpiquant/error.h"
#include "mpiquant/file.h"
#include "mpiquant/files.h"
#include "mpiquant/fp8.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"
#include "synth_outliers.h"

typedef struct {
  const char *config, *out, *tokenizer, *from;
  long layers, seed, shard_mb;
  long outlier_channels; /* --from: K (0: not given) */
  double outlier_scale;  /* --from: S (0: not given) */
  unsigned outlier_sites; /* --from: QZ_OUTL_* (0: not given) */
  qz_dtype dtype;
  int f8_block;  /* --dtype f8-block: linears F8_E4M3 + 128x128 weight_scale_inv */
} synth_opts;

/* DeepSeek-V3's FP8 layout: one scale per 128 x 128 block of a linear */
enum { SYNTH_F8_BLOCK = 128 };

static void usage(void) {
  printf(
      "usage: mpiquant synth --config CONFIG.json --layers N --out DIR [options]\n"
      "       mpiquant synth --from MODEL_DIR --out DIR [--outlier-channels K]\n"
      "                      [--outlier-scale S] [--seed S]\n\n"
      "Writes a Hugging Face model dir (config.json with num_hidden_layers = N,\n"
      "sharded safetensors + model.safetensors.index.json) with random weights\n"
      "shaped like CONFIG and statistics like a pretrained LLM's (per-row scale\n"
      "spread, outlier input channels, super weights in down_proj, massive\n"
      "embedding dimensions). Deterministic for a seed; one tensor in memory.\n\n"
      "  --config FILE      config.json of the shape (e.g. bench/configs/*.json)\n"
      "  --layers N         decoder blocks to write (>= 1)\n"
      "  --out DIR          output directory (created)\n"
      "  --dtype T          bf16 (default), f32, or f8-block: the decoder linears as\n"
      "                     F8_E4M3 with DeepSeek-V3's 128x128 block weight_scale_inv\n"
      "                     (quantization_config quant_method fp8), the rest bf16\n"
      "  --seed S           random seed (default 0)\n"
      "  --tokenizer DIR    copy DIR/tokenizer.json (and tokenizer_config.json)\n"
      "  --shard-mb M       shard size limit in MiB (default 4096)\n\n"
      "With --from, writes MODEL_DIR's model (f32) with activation outliers injected\n"
      "without changing its function: K hidden channels of both RMSNorm weights x S\n"
      "(the matching q/k/v and gate/up input columns / S), K up_proj rows x S\n"
      "(down_proj input columns / S) and K v_proj rows x S (o_proj input columns / S),\n"
      "the same channels (chosen by --seed) in every block. A power-of-two S keeps\n"
      "the fp function exact.\n"
      "  --from DIR             source model dir (Hugging Face, dense Llama-style)\n"
      "  --outlier-channels K   channels per width (default 2)\n"
      "  --outlier-scale S      their factor, > 1 (default 32)\n"
      "  --outlier-sites LIST   comma list of norm (RMSNorm weights / q,k,v,gate,up\n"
      "                         columns), up (up rows / down columns), v (v rows /\n"
      "                         o columns); default norm,up,v\n");
}

/* "norm,up,v" -> QZ_OUTL_* mask */
static int parse_sites(const char *arg, unsigned *mask) {
  static const char *const names[] = {"norm", "up", "v"};
  *mask = 0;
  for (const char *p = arg; *p;) {
    size_t n = strcspn(p, ",");
    unsigned bit = 0;
    for (int i = 0; i < 3; i++)
      if (n == strlen(names[i]) && !strncmp(p, names[i], n)) bit = 1u << i;
    QZ_CHECK(bit, QZ_ERR_USAGE, "synth: --outlier-sites '%s': a comma list of norm, up, v",
             arg);
    *mask |= bit;
    p += n + (p[n] == ',');
  }
  QZ_CHECK(*mask, QZ_ERR_USAGE, "synth: --outlier-sites '%s': a comma list of norm, up, v", arg);
  return QZ_OK;
}

static int parse(int argc, char **argv, synth_opts *o) {
  static const struct option opts[] = {
      {"config", 1, 0, 'c'}, {"layers", 1, 0, 'n'},   {"out", 1, 0, 'o'},
      {"dtype", 1, 0, 'd'},  {"seed", 1, 0, 's'},     {"tokenizer", 1, 0, 't'},
      {"shard-mb", 1, 0, 'm'}, {"from", 1, 0, 'f'},      {"outlier-channels", 1, 0, 'K'},
      {"outlier-scale", 1, 0, 'S'}, {"outlier-sites", 1, 0, 'W'}, {0, 0, 0, 0}};
  *o = (synth_opts){.dtype = QZ_DT_BF16, .shard_mb = 4096, .layers = -1};
  optind = 0;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'c': o->config = optarg; break;
      case 'n': QZ_CALL(qz_cli_int("--layers", optarg, 1, 100000, &o->layers)); break;
      case 'o': o->out = optarg; break;
      case 'd':
        if (strcmp(optarg, "bf16") == 0) o->dtype = QZ_DT_BF16;
        else if (strcmp(optarg, "f32") == 0) o->dtype = QZ_DT_F32;
        else if (strcmp(optarg, "f8-block") == 0) o->dtype = QZ_DT_BF16, o->f8_block = 1;
        else QZ_FAIL(QZ_ERR_USAGE, "synth: --dtype must be bf16, f32 or f8-block, got '%s'",
                     optarg);
        break;
      case 's': QZ_CALL(qz_cli_int("--seed", optarg, 0, LONG_MAX, &o->seed)); break;
      case 't': o->tokenizer = optarg; break;
      case 'm': QZ_CALL(qz_cli_int("--shard-mb", optarg, 1, 1L << 30, &o->shard_mb)); break;
      case 'f': o->from = optarg; break;
      case 'K': QZ_CALL(qz_cli_int("--outlier-channels", optarg, 1, 1L << 20,
                                   &o->outlier_channels)); break;
      case 'S': {
        char *end = NULL;
        o->outlier_scale = strtod(optarg, &end);
        QZ_CHECK(end != optarg && !*end && o->outlier_scale > 1 && o->outlier_scale <= 1e6,
                 QZ_ERR_USAGE, "synth: --outlier-scale must be a number in (1, 1e6], got '%s'",
                 optarg);
        break;
      }
      case 'W': QZ_CALL(parse_sites(optarg, &o->outlier_sites)); break;
      default:
        QZ_FAIL(QZ_ERR_USAGE, "synth: unknown or incomplete option '%s' (see "
                "mpiquant synth --help)", argv[optind - 1]);
    }
  }
  QZ_CHECK(optind == argc, QZ_ERR_USAGE, "synth: unexpected argument '%s'", argv[optind]);
  QZ_CHECK(o->from || (!o->outlier_channels && !o->outlier_scale && !o->outlier_sites),
           QZ_ERR_USAGE,
           "synth: --outlier-channels, --outlier-scale and --outlier-sites need --from MODEL_DIR");
  if (o->from) {
    QZ_CHECK(!o->config && o->layers < 0 && !o->tokenizer && o->dtype == QZ_DT_BF16 &&
                 !o->f8_block,
             QZ_ERR_USAGE, "synth --from: --config, --layers, --tokenizer and --dtype "
             "belong to the random-weights mode (the source model gives them)");
    QZ_CHECK(o->out, QZ_ERR_USAGE, "synth: --out DIR is required");
    return QZ_OK;
  }
  QZ_CHECK(o->config, QZ_ERR_USAGE, "synth: --config CONFIG.json is required");
  QZ_CHECK(o->out, QZ_ERR_USAGE, "synth: --out DIR is required");
  QZ_CHECK(o->layers >= 1, QZ_ERR_USAGE, "synth: --layers N (>= 1) is required");
  return QZ_OK;
}

/* ---- counter-based normal generator --------------------------------- */

static uint64_t mix64(uint64_t z) { /* splitmix64 finalizer */
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t key_of(uint64_t seed, const char *name) {
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char *p = (const unsigned char *)name; *p; p++)
    h = (h ^ *p) * 1099511628211ull;
  return mix64(h ^ mix64(seed + 0x9e3779b97f4a7c15ull));
}

/* Standard normals number 2i and 2i+1 of stream `key` (Box-Muller). */
static void normal_pair(uint64_t key, uint64_t i, double *a, double *b) {
  uint64_t r = mix64(key ^ (i * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull));
  uint64_t s = mix64(r + 0x9e3779b97f4a7c15ull);
  double u1 = ((double)(r >> 11) + 1.0) * 0x1.0p-53; /* (0, 1] */
  double u2 = (double)(s >> 11) * 0x1.0p-53;         /* [0, 1) */
  double m = sqrt(-2.0 * log(u1));
  *a = m * cos(2.0 * M_PI * u2);
  *b = m * sin(2.0 * M_PI * u2);
}

static double normal_at(uint64_t key, uint64_t i) {
  double a, b;
  normal_pair(key, i / 2, &a, &b);
  return (i & 1) ? b : a;
}

/* ---- tensor generation --------------------------------------------- */

typedef struct {
  const synth_opts *o;
  const qz_model_config *cfg;
  int64_t *outl; /* [nout] outlier channels of the hidden dimension */
  int nout;
  qz_st_shards *shards;
  void *buf;          /* one tensor in the output dtype */
  size_t buf_bytes;
  qz_dtype dt;        /* dtype of the tensor being generated */
  uint8_t *codes;     /* f8-block: one linear's FP8 codes */
  float *bscale;      /* f8-block: its block scales */
} synth;

static void put(synth *s, int64_t i, double v) {
  if (s->dt == QZ_DT_BF16)
    ((uint16_t *)s->buf)[i] = qz_f32_to_bf16((float)v);
  else
    ((float *)s->buf)[i] = (float)v;
}

static int is_outlier(const synth *s, int64_t c) {
  for (int k = 0; k < s->nout; k++)
    if (s->outl[k] == c) return 1;
  return 0;
}

typedef enum { GEN_MATRIX, GEN_NORM, GEN_FINAL_NORM, GEN_EMBED, GEN_BIAS } gen_kind;

/* The f32 linear in s->buf [rows, cols] as DeepSeek-V3 stores it: scale =
 * block absmax / 448 (a zero block: 1), codes e4m3(w / scale) (round to
 * nearest even, saturating), "X" F8_E4M3 + "X_scale_inv" F32 [ceil(rows/B),
 * ceil(cols/B)]; w = fp8 * scale_inv on read. */
static int add_f8_block(synth *s, const char *name, int64_t rows, int64_t cols) {
  const int64_t B = SYNTH_F8_BLOCK, nr = (rows + B - 1) / B, nc = (cols + B - 1) / B;
  const float *w = s->buf;
  qz_free(&s->codes);
  qz_free(&s->bscale);
  QZ_CALL(qz_alloc((size_t)(rows * cols), 1, "FP8 codes", &s->codes));
  QZ_CALL(qz_alloc((size_t)(nr * nc), sizeof(float), "FP8 block scales", &s->bscale));
  for (int64_t k = 0; k < nr * nc; k++) s->bscale[k] = 0.0f;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      float a = fabsf(w[r * cols + c]), *m = &s->bscale[(r / B) * nc + c / B];
      *m = a > *m ? a : *m;
    }
  for (int64_t k = 0; k < nr * nc; k++)
    s->bscale[k] = s->bscale[k] > 0.0f ? s->bscale[k] / QZ_FP8_E4M3_MAX : 1.0f;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++)
      s->codes[r * cols + c] =
          qz_f32_to_fp8_e4m3(w[r * cols + c] / s->bscale[(r / B) * nc + c / B]);
  int64_t shape[2] = {rows, cols}, sshape[2] = {nr, nc};
  char sn[300];
  snprintf(sn, sizeof sn, "%s_scale_inv", name);
  int st = qz_st_shards_add(s->shards, name, QZ_DT_F8_E4M3, 2, shape, s->codes, rows * cols);
  if (st == QZ_OK)
    st = qz_st_shards_add(s->shards, sn, QZ_DT_F32, 2, sshape, s->bscale, nr * nc * 4);
  return st;
}

/* Generate tensor `name` [rows, cols] (cols = 0: a vector of rows) into the
 * buffer and append it.  std: base standard deviation. */
static int gen(synth *s, const char *name, gen_kind kind, int64_t rows,
               int64_t cols, double std, int super_weights) {
  int64_t n = rows * (cols > 0 ? cols : 1);
  /* f8-block: a decoder linear is generated in f32, then block-quantized */
  const int f8 = s->o->f8_block && kind == GEN_MATRIX && strncmp(name, "model.layers.", 13) == 0;
  s->dt = f8 ? QZ_DT_F32 : s->o->dtype;
  size_t bytes = (size_t)n * (size_t)qz_dtype_size(s->dt);
  if (bytes > s->buf_bytes) {
    void *p = realloc(s->buf, bytes);
    if (!p) {
      char b[32];
      QZ_FAIL(QZ_ERR_MEM, "synth: out of memory for tensor %s (%s)", name,
              qz_fmt_bytes((double)bytes, b, sizeof b));
    }
    s->buf = p;
    s->buf_bytes = bytes;
  }
  uint64_t key = key_of((uint64_t)s->o->seed, name);
  uint64_t rkey = key_of((uint64_t)s->o->seed ^ 0x5bd1e995u, name);
  switch (kind) {
    case GEN_NORM: /* ~1 with a little spread; outlier channels 8x */
      for (int64_t i = 0; i < rows; i++)
        put(s, i, (1.0 + 0.05 * normal_at(key, (uint64_t)i)) * (is_outlier(s, i) ? 8.0 : 1.0));
      break;
    case GEN_FINAL_NORM: /* the head sees no amplified channels */
      for (int64_t i = 0; i < rows; i++) put(s, i, 1.0 + 0.05 * normal_at(key, (uint64_t)i));
      break;
    case GEN_BIAS:
      for (int64_t i = 0; i < rows; i++) put(s, i, std * normal_at(key, (uint64_t)i));
      break;
    case GEN_EMBED:
    case GEN_MATRIX:
      for (int64_t r = 0; r < rows; r++) {
        double rs = kind == GEN_MATRIX ? exp(0.25 * normal_at(rkey, (uint64_t)r)) : 1.0;
        uint64_t base = (uint64_t)(r * cols);
        if ((cols & 1) == 0) { /* base even: pairs line up with elements */
          for (int64_t c = 0; c < cols; c += 2) {
            double a, b;
            normal_pair(key, (base + (uint64_t)c) / 2, &a, &b);
            put(s, r * cols + c, std * rs * a);
            put(s, r * cols + c + 1, std * rs * b);
          }
        } else {
          for (int64_t c = 0; c < cols; c++)
            put(s, r * cols + c, std * rs * normal_at(key, base + (uint64_t)c));
        }
        if (kind == GEN_EMBED)
          for (int k = 0; k < s->nout; k++) {
            int64_t i = r * cols + s->outl[k];
            put(s, i, 20.0 * std * normal_at(key, (uint64_t)i));
          }
      }
      if (super_weights) /* down_proj [H, I]: row = outlier channel */
        for (int k = 0; k < s->nout; k++) {
          int64_t col = (int64_t)(mix64(key ^ (uint64_t)(k + 1)) % (uint64_t)cols);
          put(s, s->outl[k] * cols + col, (k & 1) ? -0.5 : 0.5);
        }
      break;
  }
  if (f8) return add_f8_block(s, name, rows, cols);
  int64_t shape[2] = {rows, cols};
  return qz_st_shards_add(s->shards, name, s->dt, cols > 0 ? 2 : 1, shape, s->buf,
                          (int64_t)bytes);
}

/* Router, experts and shared expert of MoE block b: experts like the dense
 * MLP (no super weights); the router N(0, 0.02) like the other readers of
 * the residual stream, so every expert gets tokens; the shared expert gate
 * N(0, 0.02). */
static int gen_moe(synth *s, int b, double std_in, double std_out) {
  const qz_model_config *c = s->cfg;
  const int64_t H = c->hidden_size, Ie = c->moe_intermediate_size;
  const int64_t Is = c->moe == QZ_MOE_QWEN2 ? c->shared_expert_intermediate_size : 0;
  char name[256];
  qz_router_tensor(name, sizeof name, c, b);
  QZ_CALL(gen(s, name, GEN_MATRIX, c->num_experts, H, std_in, 0));
  for (int e = -1; e < (int)c->num_experts; e++) {
    int64_t I = e < 0 ? Is : Ie;
    if (I <= 0) continue;
    for (int k = 0; k < 3; k++) {
      qz_expert_tensor(name, sizeof name, c, b, e, k);
      QZ_CALL(gen(s, name, GEN_MATRIX, k == 2 ? H : I, k == 2 ? I : H,
                  k == 2 ? std_out : std_in, 0));
    }
  }
  if (Is > 0) {
    qz_shared_gate_tensor(name, sizeof name, b);
    QZ_CALL(gen(s, name, GEN_MATRIX, 1, H, std_in, 0));
  }
  return QZ_OK;
}

/* config.json: the input config with num_hidden_layers and torch_dtype set. */
static int write_config(const synth_opts *o) {
  json_error_t jerr;
  QZ_CALL(qz_file_check_input(o->config));
  json_t *j = json_load_file(o->config, 0, &jerr);
  QZ_CHECK(j && json_is_object(j), QZ_ERR_FORMAT, "%s: %s", o->config,
           j ? "not a JSON object" : jerr.text);
  json_object_set_new(j, "num_hidden_layers", json_integer(o->layers));
  if (o->f8_block) { /* what DeepSeek-V3 / transformers' FP8 configs carry */
    json_t *q = json_object(), *b = json_array();
    json_array_append_new(b, json_integer(SYNTH_F8_BLOCK));
    json_array_append_new(b, json_integer(SYNTH_F8_BLOCK));
    json_object_set_new(q, "quant_method", json_string("fp8"));
    json_object_set_new(q, "fmt", json_string("e4m3"));
    json_object_set_new(q, "activation_scheme", json_string("dynamic"));
    json_object_set_new(q, "weight_block_size", b);
    json_object_set_new(j, "quantization_config", q);
  } else {
    json_object_del(j, "quantization_config");
  }
  json_object_set_new(j, "torch_dtype",
                      json_string(o->dtype == QZ_DT_BF16 ? "bfloat16" : "float32"));
  char p[PATH_MAX + 64];
  snprintf(p, sizeof p, "%s/config.json", o->out);
  int r = json_dump_file(j, p, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(j);
  QZ_CHECK(r == 0, QZ_ERR_IO, "cannot write %s", p);
  return QZ_OK;
}

static int synth_run(const synth_opts *o) {
  int st = QZ_OK;
  synth s = {.o = o};
  qz_model_config cfg;
  QZ_CALL(qz_config_load(o->config, &cfg));
  cfg.num_hidden_layers = o->layers;
  s.cfg = &cfg;
  QZ_CALL(qz_mkdir_p(o->out));
  QZ_CALL(write_config(o));
  if (o->tokenizer) {
    char a[PATH_MAX + 64], b[PATH_MAX + 64];
    snprintf(a, sizeof a, "%s/tokenizer.json", o->tokenizer);
    snprintf(b, sizeof b, "%s/tokenizer.json", o->out);
    QZ_CALL(qz_copy_file(a, b, 1));
    snprintf(a, sizeof a, "%s/tokenizer_config.json", o->tokenizer);
    snprintf(b, sizeof b, "%s/tokenizer_config.json", o->out);
    QZ_CALL(qz_copy_file(a, b, 0));
  }
  const int64_t H = cfg.hidden_size, V = cfg.vocab_size;
  s.nout = (int)(H / 1024 > 0 ? H / 1024 : 1);
  if (s.nout > 16) s.nout = 16;
  QZ_CALL(qz_alloc((size_t)s.nout, sizeof *s.outl, "outlier channels", &s.outl));
  uint64_t okey = key_of((uint64_t)o->seed, "outlier-channels");
  for (int k = 0; k < s.nout; k++) { /* distinct channels */
    int64_t c;
    uint64_t t = (uint64_t)k;
    do c = (int64_t)(mix64(okey + t++ * 0x9e3779b97f4a7c15ull) % (uint64_t)H);
    while (is_outlier(&s, c) && t < (uint64_t)k + 1000);
    s.outl[k] = c;
  }
  /* Hugging Face names, index always written (readers take the sharded path
   * even for one shard) */
  QZ_CALL_DONE(qz_st_shards_create(o->out, "synth", (int64_t)o->shard_mb << 20, 1, &s.shards));
  double std_in = 0.02, std_out = 0.02 / sqrt(2.0 * (double)o->layers);
  char name[256];
  QZ_CALL_DONE(gen(&s, "model.embed_tokens.weight", GEN_EMBED, V, H, 0.02, 0));
  for (int b = 0; b < (int)o->layers; b++) {
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", b);
    QZ_CALL_DONE(gen(&s, name, GEN_NORM, H, 0, 0, 0));
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", b);
    QZ_CALL_DONE(gen(&s, name, GEN_NORM, H, 0, 0, 0));
    if (cfg.qk_norm) { /* per-head q/k RMSNorm weights ~1 */
      snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", b);
      QZ_CALL_DONE(gen(&s, name, GEN_FINAL_NORM, cfg.head_dim, 0, 0, 0));
      snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", b);
      QZ_CALL_DONE(gen(&s, name, GEN_FINAL_NORM, cfg.head_dim, 0, 0, 0));
    }
    const int moe = qz_config_layer_moe(&cfg, b);
    if (moe) QZ_CALL_DONE(gen_moe(&s, b, std_in, std_out));
    for (int l = 0; l < QZ_LIN_COUNT; l++) {
      int64_t out, in;
      if (moe && l >= QZ_LIN_GATE) continue;
      qz_linear_shape(&cfg, (qz_linear)l, &out, &in);
      int resid = l == QZ_LIN_O || l == QZ_LIN_DOWN;
      qz_linear_tensor(name, sizeof name, b, (qz_linear)l, "weight");
      QZ_CALL_DONE(gen(&s, name, GEN_MATRIX, out, in, resid ? std_out : std_in,
                       l == QZ_LIN_DOWN && b < 2));
      if (qz_linear_has_bias(&cfg, (qz_linear)l)) {
        qz_linear_tensor(name, sizeof name, b, (qz_linear)l, "bias");
        QZ_CALL_DONE(gen(&s, name, GEN_BIAS, out, 0, 0.01, 0));
      }
    }
    qz_debug("synth: block %d written", b);
  }
  QZ_CALL_DONE(gen(&s, "model.norm.weight", GEN_FINAL_NORM, H, 0, 0, 0));
  if (!cfg.tie_word_embeddings)
    QZ_CALL_DONE(gen(&s, "lm_head.weight", GEN_MATRIX, V, H, 0.02, 0));
  int nshards = qz_st_shards_count(s.shards);
  int64_t total = qz_st_shards_bytes(s.shards);
  QZ_CALL_DONE(qz_st_shards_finish(&s.shards));
  {
    char a[32];
    qz_info("synth: %s: %lld blocks, %lld parameters, %s in %d shard(s), seed %ld",
            o->out, (long long)o->layers, (long long)qz_config_param_count(&cfg),
            qz_fmt_bytes((double)total, a, sizeof a), nshards, o->seed);
  }
done:
  qz_st_shards_abort(&s.shards);
  free(s.buf);
  free(s.outl);
  qz_free(&s.codes);
  qz_free(&s.bscale);
  return st;
}

int qz_cmd_synth(qz_ctx *ctx, int argc, char **argv) {
  if (qz_cli_wants_help(argc, argv)) {
    if (ctx->rank == 0) usage();
    return QZ_OK;
  }
  synth_opts o;
  QZ_CALL(parse(argc, argv, &o));
  qz_synth_outlier_opts fo = {.from = o.from, .out = o.out,
                              .channels = o.outlier_channels ? o.outlier_channels : 2,
                              .scale = o.outlier_scale ? o.outlier_scale : 32.0,
                              .sites = o.outlier_sites ? o.outlier_sites : QZ_OUTL_ALL,
                              .seed = o.seed, .shard_mb = o.shard_mb};
  int st = ctx->rank != 0 ? QZ_OK : o.from ? qz_synth_outliers(&fo) : synth_run(&o);
  QZ_CALL(qz_error_agree(ctx->comm, st));
  return QZ_OK;
}
