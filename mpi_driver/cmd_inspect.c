/* mpiquant inspect PATH [--json]: what is in a Hugging Face model directory
 * (config summary, parameter count, dtypes, shards, per-layer tensors) or in
 * a safetensors file / shard index (tensors, dtypes, shapes, metadata).
 * Rank 0 reads and prints; every rank returns the same status. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "driver.h"
#include "mpiquant/comm.h"
#include "mpiquant/config.h"
#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"
#include "mpiquant/tokenizer.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: mpiquant inspect PATH [--json]\n\n"
          "PATH is a Hugging Face model directory (config.json + model.safetensors\n"
          "or model.safetensors.index.json + shards), a .safetensors file, or a\n"
          "model.safetensors.index.json.\n\n"
          "  --json      machine-readable output on stdout\n"
          "  -h, --help  this text\n\n"
          "For a model directory: architecture summary, parameter count, dtypes,\n"
          "shard count, config-vs-tensor check and the tensors of every layer.\n"
          "For a file: every tensor with dtype and shape, and __metadata__.\n"
          "Runs on rank 0; the exit status is 0 only if everything was readable\n"
          "and consistent.\n");
}

/* 260032 -> "260,032" */
static const char *grouped(int64_t v, char *buf, size_t len) {
  char tmp[32];
  snprintf(tmp, sizeof tmp, "%lld", (long long)(v < 0 ? -v : v));
  size_t n = strlen(tmp), o = 0;
  if (v < 0 && o + 1 < len) buf[o++] = '-';
  for (size_t i = 0; i < n && o + 2 < len; i++) {
    if (i && (n - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = tmp[i];
  }
  buf[o] = 0;
  return buf;
}

static const char *shape_s(const qz_tensor_info *t, char *buf, size_t len) {
  size_t o = (size_t)snprintf(buf, len, "[");
  for (int d = 0; d < t->ndim && o < len; d++)
    o += (size_t)snprintf(buf + o, len - o, "%s%lld", d ? "," : "",
                          (long long)t->shape[d]);
  if (o < len) snprintf(buf + o, len - o, "]");
  return buf;
}

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

typedef struct {
  int64_t params, bytes;
  int64_t count[QZ_DT_COUNT], dt_bytes[QZ_DT_COUNT];
} totals;

static void sum_up(const qz_st *st, totals *t) {
  memset(t, 0, sizeof *t);
  for (int i = 0; i < qz_st_count(st); i++) {
    const qz_tensor_info *ti = qz_st_info_at(st, i);
    t->params += ti->nelem;
    t->bytes += ti->nbytes;
    t->count[ti->dtype]++;
    t->dt_bytes[ti->dtype] += ti->nbytes;
  }
}

static json_t *tensor_json(const qz_tensor_info *ti, int with_file) {
  json_t *o = json_object(), *s = json_array();
  for (int d = 0; d < ti->ndim; d++) json_array_append_new(s, json_integer(ti->shape[d]));
  json_object_set_new(o, "name", json_string(ti->name));
  json_object_set_new(o, "dtype", json_string(qz_dtype_name(ti->dtype)));
  json_object_set_new(o, "shape", s);
  json_object_set_new(o, "nbytes", json_integer(ti->nbytes));
  if (with_file) json_object_set_new(o, "file", json_string(base_name(ti->file)));
  return o;
}

static void print_common(const qz_st *st, const totals *t, FILE *out) {
  char a[32], b[32];
  fprintf(out, "%d tensors, %s parameters, %s bytes of data in %d file%s\n",
          qz_st_count(st), grouped(t->params, a, sizeof a),
          grouped(t->bytes, b, sizeof b), qz_st_nfiles(st),
          qz_st_nfiles(st) == 1 ? "" : "s");
  fprintf(out, "dtypes:");
  for (int d = 0; d < QZ_DT_COUNT; d++)
    if (t->count[d])
      fprintf(out, " %s (%lld tensors)", qz_dtype_name((qz_dtype)d),
              (long long)t->count[d]);
  fprintf(out, "\n");
  if (qz_st_nfiles(st) > 1) {
    fprintf(out, "shards:");
    for (int i = 0; i < qz_st_nfiles(st); i++)
      fprintf(out, "%s%s", i ? ", " : " ", base_name(qz_st_file_at(st, i)));
    fprintf(out, "\n");
  }
  if (qz_st_metadata_count(st)) {
    fprintf(out, "__metadata__:\n");
    for (int i = 0; i < qz_st_metadata_count(st); i++) {
      const char *k, *v;
      qz_st_metadata_at(st, i, &k, &v);
      fprintf(out, "  %s = %s\n", k, v);
    }
  }
}

static json_t *common_json(const qz_st *st, const totals *t) {
  json_t *o = json_object(), *dts = json_object(), *meta = json_object(),
         *files = json_array();
  json_object_set_new(o, "tensors", json_integer(qz_st_count(st)));
  json_object_set_new(o, "parameters", json_integer(t->params));
  json_object_set_new(o, "data_bytes", json_integer(t->bytes));
  json_object_set_new(o, "nfiles", json_integer(qz_st_nfiles(st)));
  for (int i = 0; i < qz_st_nfiles(st); i++)
    json_array_append_new(files, json_string(base_name(qz_st_file_at(st, i))));
  json_object_set_new(o, "files", files);
  for (int d = 0; d < QZ_DT_COUNT; d++)
    if (t->count[d])
      json_object_set_new(dts, qz_dtype_name((qz_dtype)d), json_integer(t->count[d]));
  json_object_set_new(o, "dtypes", dts);
  for (int i = 0; i < qz_st_metadata_count(st); i++) {
    const char *k, *v;
    qz_st_metadata_at(st, i, &k, &v);
    json_object_set_new(meta, k, json_string(v));
  }
  json_object_set_new(o, "metadata", meta);
  return o;
}

static const char *rope_s(const qz_model_config *c, char *buf, size_t len) {
  switch (c->rope_scaling.type) {
  case QZ_ROPE_LINEAR: snprintf(buf, len, "linear x%g", c->rope_scaling.factor); break;
  case QZ_ROPE_LLAMA3:
    snprintf(buf, len, "llama3 (factor %g, low %g, high %g, original %lld)",
             c->rope_scaling.factor, c->rope_scaling.low_freq_factor,
             c->rope_scaling.high_freq_factor,
             (long long)c->rope_scaling.original_max_position_embeddings);
    break;
  default: snprintf(buf, len, "none"); break;
  }
  return buf;
}

/* "model.layers.12.mlp.up_proj.weight" -> 12, else -1 */
static long layer_of(const char *name) {
  if (strncmp(name, "model.layers.", 13) != 0) return -1;
  char *end;
  long l = strtol(name + 13, &end, 10);
  return *end == '.' ? l : -1;
}

static int cmp_tensor_layer(const void *a, const void *b) {
  const qz_tensor_info *x = *(const qz_tensor_info *const *)a,
                       *y = *(const qz_tensor_info *const *)b;
  long lx = layer_of(x->name), ly = layer_of(y->name);
  if (lx != ly) return lx < ly ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int inspect_model(const char *dir, int as_json) {
  qz_model_config c;
  qz_st *sf = NULL;
  const qz_tensor_info **order = NULL;
  json_t *root = NULL;
  int st = QZ_OK;
  QZ_CALL(qz_config_load(dir, &c));
  QZ_CALL(qz_st_open(dir, &sf));
  qz_st_quant qh;
  qz_config_st_quant(&c, &qh);
  qz_st_set_quant(sf, &qh);
  totals t;
  sum_up(sf, &t);
  /* config check: report, and fail at the end, but still print everything */
  int check = qz_config_check_tensors(&c, sf);
  char check_msg[1024] = "ok";
  if (check) snprintf(check_msg, sizeof check_msg, "%s", qz_error_message());
  qz_tokenizer *tok = NULL;
  char tokp[4096], tok_msg[512] = "absent";
  snprintf(tokp, sizeof tokp, "%s/tokenizer.json", dir);
  struct stat sb;
  if (stat(tokp, &sb) == 0) {
    if (qz_tokenizer_load(tokp, &tok) == QZ_OK)
      snprintf(tok_msg, sizeof tok_msg, "BPE, %lld pieces",
               (long long)qz_tokenizer_vocab_size(tok));
    else
      snprintf(tok_msg, sizeof tok_msg, "not usable: %s", qz_error_message());
    qz_error_clear();
    qz_tokenizer_free(&tok);
  }
  const char *lm = qz_config_lm_head(&c, sf);
  QZ_CALL_DONE(qz_alloc((size_t)qz_st_count(sf), sizeof *order, "tensor list", &order));
  for (int i = 0; i < qz_st_count(sf); i++) order[i] = qz_st_info_at(sf, i);
  qsort(order, (size_t)qz_st_count(sf), sizeof *order, cmp_tensor_layer);
  char a[64], b[256];
  if (as_json) {
    root = common_json(sf, &t);
    json_t *cfg = json_object(), *list = json_array();
    json_object_set_new(root, "path", json_string(dir));
    json_object_set_new(root, "kind", json_string("model"));
    json_object_set_new(cfg, "architecture", json_string(c.architecture));
    json_object_set_new(cfg, "model_type", json_string(c.model_type));
    json_object_set_new(cfg, "hidden_size", json_integer(c.hidden_size));
    json_object_set_new(cfg, "intermediate_size", json_integer(c.intermediate_size));
    json_object_set_new(cfg, "num_hidden_layers", json_integer(c.num_hidden_layers));
    json_object_set_new(cfg, "num_attention_heads", json_integer(c.num_attention_heads));
    json_object_set_new(cfg, "num_key_value_heads", json_integer(c.num_key_value_heads));
    json_object_set_new(cfg, "head_dim", json_integer(c.head_dim));
    json_object_set_new(cfg, "vocab_size", json_integer(c.vocab_size));
    json_object_set_new(cfg, "max_position_embeddings", json_integer(c.max_position_embeddings));
    json_object_set_new(cfg, "rms_norm_eps", json_real(c.rms_norm_eps));
    json_object_set_new(cfg, "rope_theta", json_real(c.rope_theta));
    json_object_set_new(cfg, "rope_scaling", json_string(rope_s(&c, b, sizeof b)));
    json_object_set_new(cfg, "tie_word_embeddings", json_boolean(c.tie_word_embeddings));
    json_object_set_new(cfg, "qkv_bias", json_boolean(c.qkv_bias));
    json_object_set_new(cfg, "o_bias", json_boolean(c.o_bias));
    json_object_set_new(cfg, "mlp_bias", json_boolean(c.mlp_bias));
    json_object_set_new(cfg, "torch_dtype", json_string(c.torch_dtype));
    json_object_set_new(cfg, "parameters_implied", json_integer(qz_config_param_count(&c)));
    json_object_set_new(root, "config", cfg);
    json_object_set_new(root, "lm_head", lm ? json_string(lm) : json_null());
    json_object_set_new(root, "config_check", json_string(check_msg));
    json_object_set_new(root, "tokenizer", json_string(tok_msg));
    for (int i = 0; i < qz_st_count(sf); i++) {
      json_t *e = tensor_json(order[i], qz_st_nfiles(sf) > 1);
      json_object_set_new(e, "layer", json_integer(layer_of(order[i]->name)));
      json_array_append_new(list, e);
    }
    json_object_set_new(root, "tensor_list", list);
    QZ_CHECK_DONE(json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0,
                  QZ_ERR_IO, "writing JSON to stdout failed");
    printf("\n");
  } else {
    printf("model: %s\n", dir);
    printf("architecture: %s (%s), %lld layers\n", c.architecture, c.model_type,
           (long long)c.num_hidden_layers);
    printf("hidden_size %lld, intermediate_size %lld, heads %lld, kv_heads %lld, "
           "head_dim %lld, vocab %lld, max_positions %lld\n",
           (long long)c.hidden_size, (long long)c.intermediate_size,
           (long long)c.num_attention_heads, (long long)c.num_key_value_heads,
           (long long)c.head_dim, (long long)c.vocab_size,
           (long long)c.max_position_embeddings);
    printf("rms_norm_eps %g, rope_theta %g, rope_scaling %s\n", c.rms_norm_eps,
           c.rope_theta, rope_s(&c, b, sizeof b));
    printf("biases: q/k/v %s, o %s, mlp %s; tie_word_embeddings %s; torch_dtype %s\n",
           c.qkv_bias ? "yes" : "no", c.o_bias ? "yes" : "no",
           c.mlp_bias ? "yes" : "no", c.tie_word_embeddings ? "true" : "false",
           c.torch_dtype[0] ? c.torch_dtype : "?");
    print_common(sf, &t, stdout);
    printf("parameters implied by config.json: %s\n",
           grouped(qz_config_param_count(&c), a, sizeof a));
    printf("lm_head: %s\n", lm ? lm : "MISSING");
    printf("tokenizer.json: %s\n", tok_msg);
    printf("config check: %s\n", check ? "FAILED (see the error below)" : "ok");
    long cur = -2;
    for (int i = 0; i < qz_st_count(sf); i++) {
      const qz_tensor_info *ti = order[i];
      long l = layer_of(ti->name);
      if (l != cur) {
        if (l < 0) printf("non-layer tensors:\n");
        else printf("layer %ld:\n", l);
        cur = l;
      }
      const char *shown = ti->name;
      if (l >= 0) shown = strchr(ti->name + 13, '.') + 1;
      printf("  %-40s %-5s %s%s%s\n", shown, qz_dtype_name(ti->dtype),
             shape_s(ti, b, sizeof b), qz_st_nfiles(sf) > 1 ? "  " : "",
             qz_st_nfiles(sf) > 1 ? base_name(ti->file) : "");
    }
  }
  if (check) {
    st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                       "config.json and the tensors disagree: %s", check_msg);
  }
done:
  json_decref(root);
  qz_free(&order);
  qz_st_close(&sf);
  return st;
}

static int inspect_file(const char *path, int as_json) {
  qz_st *st = NULL;
  QZ_CALL(qz_st_open(path, &st));
  totals t;
  sum_up(st, &t);
  int rc = QZ_OK;
  char b[256];
  if (as_json) {
    json_t *root = common_json(st, &t), *list = json_array();
    json_object_set_new(root, "path", json_string(path));
    json_object_set_new(root, "kind", json_string("safetensors"));
    for (int i = 0; i < qz_st_count(st); i++)
      json_array_append_new(list, tensor_json(qz_st_info_at(st, i), qz_st_nfiles(st) > 1));
    json_object_set_new(root, "tensor_list", list);
    if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0)
      rc = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                        "writing JSON to stdout failed");
    printf("\n");
    json_decref(root);
  } else {
    printf("safetensors: %s\n", path);
    print_common(st, &t, stdout);
    for (int i = 0; i < qz_st_count(st); i++) {
      const qz_tensor_info *ti = qz_st_info_at(st, i);
      printf("  %-48s %-7s %s%s%s\n", ti->name, qz_dtype_name(ti->dtype),
             shape_s(ti, b, sizeof b), qz_st_nfiles(st) > 1 ? "  " : "",
             qz_st_nfiles(st) > 1 ? base_name(ti->file) : "");
    }
  }
  qz_st_close(&st);
  return rc;
}

static int run(const char *path, int as_json) {
  struct stat sb;
  QZ_CHECK(stat(path, &sb) == 0, QZ_ERR_IO, "inspect: cannot open %s: %s", path,
           errno == ELOOP ? "a loop of symbolic links" : strerror(errno));
  if (S_ISDIR(sb.st_mode)) {
    char man[4096];
    snprintf(man, sizeof man, "%s/manifest.json", path);
    if (stat(man, &sb) == 0) return qz_inspect_ckpt(path, as_json);
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s/config.json", path);
    if (stat(cfg, &sb) == 0) {
      QZ_CALL(inspect_model(path, as_json));
      return QZ_OK;
    }
  }
  QZ_CALL(inspect_file(path, as_json));
  return QZ_OK;
}

int qz_cmd_inspect(qz_ctx *ctx, int argc, char **argv) {
  static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  int as_json = 0, help = 0, bad = 0, c;
  char badopt[64] = "";
  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
    if (c == 'j') as_json = 1;
    else if (c == 'h') help = 1;
    else if (!bad) {
      bad = 1;
      snprintf(badopt, sizeof badopt, "%s", argv[optind - 1]);
    }
  }
  if (help) {
    if (ctx->rank == 0) usage(stdout);
    return QZ_OK;
  }
  QZ_CHECK(!bad, QZ_ERR_USAGE, "inspect: unknown option '%s' (see mpiquant "
           "inspect --help)", badopt);
  QZ_CHECK(optind == argc - 1, QZ_ERR_USAGE, "inspect: expected exactly one "
           "PATH, got %d (see mpiquant inspect --help)", argc - optind);
  int st = ctx->rank == 0 ? run(argv[optind], as_json) : QZ_OK;
  fflush(stdout);
  QZ_CALL(qz_error_agree(ctx->comm, st));
  return QZ_OK;
}
