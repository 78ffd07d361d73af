/* mpiquant quantize: the command line (driver options + the method's rows)
 * and the resume identity (options JSON, source fingerprint). */
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "method_cli.h"
#include "mpiquant/error.h"
#include "quantize.h"
#include "rotate_cli.h"

void qz_quantize_usage(void) {
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
      "  --seqlen L           tokens per window (default min(2048, max_position))\n");
  qz_mcli_usage(stdout, QZ_METHOD_DEFAULT);
  qz_rotcli_usage(stdout);
  printf(
      "  --no-true-sequential all groups of a block from the unquantized forward\n"
      "  --layers A:B         quantize blocks A..B-1 only (default all)\n"
      "  --out CKPT           checkpoint directory\n"
      "  --resume             continue CKPT after its last completed block (the\n"
      "                       options and the model must be the same)\n"
      "  --blocks-per-file K  blocks per HDF5 file (default: ~2 GiB files, at\n"
      "                       most a tenth of the blocks, at least 1)\n"
      "  --snapshot-every S   hidden-state snapshot every S blocks for resume\n"
      "                       (default: a tenth of the blocks, at least 1)\n"
      "  --zstd-level Z       checkpoint compression (default 3)\n"
      "  --grid-nb NB         ScaLAPACK block size (default 128)\n"
      "Mixture-of-experts models (Mixtral, Qwen2-MoE, Qwen3-MoE; docs/moe.md):\n"
      "  --min-expert-tokens N  experts routed fewer calibration tokens (all\n"
      "                       ranks) get --expert-fallback (default 16, >= 1)\n"
      "  --expert-fallback F  route-all (default): Hessians (AWQ: statistics) from\n"
      "                       every token as if routed to the expert; pooled: its\n"
      "                       routed tokens plus every token; rtn: round to nearest\n");
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

static int parse_driver_opt(int c, const char *arg, qz_qopts *o) {
  switch (c) {
    case 'm': o->model = arg; break;
    case 'c': o->calib = arg; break;
    case 'T': o->calib_tokens = arg; break;
    case 'n': QZ_CALL(qz_cli_int("--nsamples", arg, 1, 1L << 30, &o->nsamples)); break;
    case 'L': QZ_CALL(qz_cli_int("--seqlen", arg, 2, 1L << 24, &o->seqlen)); break;
    case 'M': break; /* --method: read before the rows were known */
    case 'N': o->true_sequential = 0; break;
    case 'l': QZ_CALL(parse_layers(arg, &o->layer_begin, &o->layer_end)); break;
    case 'o': o->out = arg; break;
    case 'r': o->resume = 1; break;
    case 'K': QZ_CALL(qz_cli_int("--blocks-per-file", arg, 1, 1L << 20, &o->blocks_per_file)); break;
    case 'E': QZ_CALL(qz_cli_int("--snapshot-every", arg, 1, 1L << 20, &o->snapshot_every)); break;
    case 'z': QZ_CALL(qz_cli_int("--zstd-level", arg, 1, 19, &o->zstd_level)); break;
    case 'G': QZ_CALL(qz_cli_int("--grid-nb", arg, 8, 4096, &o->nb)); break;
    case 'x': QZ_CALL(qz_cli_int("--min-expert-tokens", arg, 1, 1L << 40, &o->min_expert_tokens)); break;
    case 'X': {
      int k = 0;
      while (qz_expert_fallback_names[k] && strcmp(qz_expert_fallback_names[k], arg)) k++;
      QZ_CHECK(qz_expert_fallback_names[k], QZ_ERR_USAGE,
               "--expert-fallback must be route-all, pooled or rtn, got '%s'", arg);
      o->expert_fallback = k;
      break;
    }
    case 'R': QZ_CALL(qz_rotcli_option("rotate", arg, &o->rot, &o->rot_given)); break;
    case 'S': QZ_CALL(qz_rotcli_option("rotate-seed", arg, &o->rot, &o->rot_given)); break;
    case 'V': QZ_CALL(qz_rotcli_option("kv-bits", arg, &o->rot, &o->rot_given)); break;
    case 'A': QZ_CALL(qz_rotcli_option("act-asym", arg, &o->rot, &o->rot_given)); break;
    case 'C': QZ_CALL(qz_rotcli_option("act-clip", arg, &o->rot, &o->rot_given)); break;
    case 'b': QZ_CALL(qz_rotcli_option("block", arg, &o->rot, &o->duq_given)); break;
    case 'p': QZ_CALL(qz_rotcli_option("perm", arg, &o->rot, &o->duq_given)); break;
    case 's': QZ_CALL(qz_rotcli_option("smooth", arg, &o->rot, &o->duq_given)); break;
    case 'Q': QZ_CALL(qz_rotcli_option("act-groups", arg, &o->rot, &o->rot_given)); break;
    case 'J': QZ_CALL(qz_rotcli_option("kv-clip", arg, &o->rot, &o->rot_given)); break;
    default: QZ_FAIL(QZ_ERR_INTERNAL, "quantize: option value %d", c);
  }
  return QZ_OK;
}

int qz_quantize_parse(int argc, char **argv, qz_qopts *o) {
  static const struct option base[] = {
      {"model", 1, 0, 'm'},          {"calib", 1, 0, 'c'},
      {"calib-tokens", 1, 0, 'T'},   {"nsamples", 1, 0, 'n'},
      {"seqlen", 1, 0, 'L'},         {"method", 1, 0, 'M'},
      {"no-true-sequential", 0, 0, 'N'}, {"layers", 1, 0, 'l'},
      {"out", 1, 0, 'o'},            {"resume", 0, 0, 'r'},
      {"blocks-per-file", 1, 0, 'K'}, {"snapshot-every", 1, 0, 'E'},
      {"zstd-level", 1, 0, 'z'},     {"grid-nb", 1, 0, 'G'},
      {"min-expert-tokens", 1, 0, 'x'}, {"expert-fallback", 1, 0, 'X'},
      {"rotate", 1, 0, 'R'},         {"rotate-seed", 1, 0, 'S'},
      {"kv-bits", 1, 0, 'V'},        {"act-asym", 0, 0, 'A'},
      {"act-clip", 1, 0, 'C'},       {"block", 1, 0, 'b'},
      {"perm", 1, 0, 'p'},           {"smooth", 1, 0, 's'},
      {"act-groups", 1, 0, 'Q'},     {"kv-clip", 1, 0, 'J'},
      {0, 0, 0, 0}};
  *o = (qz_qopts){.nsamples = 128, .nb = 128, .layer_end = -1, .zstd_level = 3,
                  .true_sequential = 1, .min_expert_tokens = 16,
                  .rot = {.act_clip = 1.0, .block = 128, .perm = 1, .smooth = 0.5}};
  const qz_method_ops *ops;
  QZ_CALL(qz_mcli_method("quantize", qz_mcli_method_arg(argc, argv, QZ_METHOD_DEFAULT), &ops, &o->mo));
  struct option *opts = NULL;
  QZ_CALL(qz_mcli_longopts(base, &o->mo, &opts));
  int st = QZ_OK, c;
  optind = 0;
  opterr = 0;
  while (st == QZ_OK && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (c >= QZ_MCLI_VAL) st = qz_mcli_handle("quantize", &o->mo, c, optarg);
    else if (c == '?') st = qz_mcli_unknown("quantize", &o->mo, argv[optind - 1]);
    else st = parse_driver_opt(c, optarg, o);
  }
  free(opts);
  QZ_CALL(st);
  QZ_CHECK(optind == argc, QZ_ERR_USAGE, "quantize: unexpected argument '%s'", argv[optind]);
  QZ_CHECK(o->model, QZ_ERR_USAGE, "quantize: --model DIR is required");
  QZ_CHECK(o->out, QZ_ERR_USAGE, "quantize: --out CKPT is required");
  QZ_CHECK(!(o->calib && o->calib_tokens), QZ_ERR_USAGE,
           "quantize: give only one of --calib and --calib-tokens");
  QZ_CALL(qz_mcli_finish("quantize", &o->mo));
  QZ_CALL(qz_rotcli_finish(&o->mo, qz_method_needs(&o->mo), &o->rot, o->rot_given,
                           o->duq_given));
  return QZ_OK;
}

char *qz_quantize_options_json(const qz_qopts *o, int64_t nwin, int64_t L,
                               uint64_t calib_hash) {
  char h[32];
  snprintf(h, sizeof h, "%016llx", (unsigned long long)calib_hash);
  json_t *j = json_pack("{s:s, s:b, s:I, s:I, s:s, s:i, s:i}", "method",
                        o->mo.ops->name, "true_sequential", o->true_sequential,
                        "nsamples", (json_int_t)nwin, "seqlen", (json_int_t)L,
                        "calib_fnv1a", h, "layer_begin", (int)o->layer_begin,
                        "layer_end", (int)o->layer_end);
  if (!j) return NULL;
  if (o->is_moe) { /* only for MoE models: dense checkpoints keep their identity */
    json_object_set_new(j, "min_expert_tokens", json_integer(o->min_expert_tokens));
    json_object_set_new(j, "expert_fallback",
                        json_string(qz_expert_fallback_names[o->expert_fallback]));
  }
  qz_mcli_json(&o->mo, j); /* the method's rows: bits, group, ..., its own */
  qz_rotcli_json(&o->rot, o->rot_given, j);
  char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(j);
  return s;
}



const char *const qz_expert_fallback_names[] = {"route-all", "pooled", "rtn", NULL};

/* Bytes in the regular files of a directory (rank 0, for the final log). */
int64_t qz_quantize_dir_bytes(const char *dir) {
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

int qz_quantize_blocks_per_file(const qz_model_config *c) {
  double block_bytes = (double)(c->hidden_size * (c->num_attention_heads * c->head_dim) * 2 +
                                c->hidden_size * (c->num_key_value_heads * c->head_dim) * 2 +
                                c->hidden_size * c->intermediate_size * 3);
  long k = (long)((2.0 * 1073741824.0) / (block_bytes > 1 ? block_bytes : 1));
  long tenth = (long)((c->num_hidden_layers + 9) / 10);
  if (k > tenth) k = tenth;
  return k < 1 ? 1 : (int)k;
}

