/* Checkpoint -> Hugging Face model directory: the walk common to every
 * export format. Every source tensor is visited in name order by all ranks
 * (rank 0 reads the source model and writes); quantized linears go through
 * the format's hook (io/export_gptq.c, io/export_ct.c), RMSNorm weights with
 * folded scales come from the checkpoint, everything else is copied in its
 * source dtype. Shards are written under temporary names and renamed when
 * complete. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/comm.h"
#include "mpiquant/config.h"
#include "mpiquant/error.h"
#include "mpiquant/file.h"
#include "mpiquant/files.h"
#include "mpiquant/export.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"
#include "export_impl.h"

static const char *const k_linears[] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
    "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
    "mlp.down_proj"};
enum { NLIN = 7 };

/* Whether `m` is an expert linear of an MoE block: "block_sparse_moe.
 * experts.{e}.w1|w2|w3", "mlp.experts.{e}.gate_proj|up_proj|down_proj",
 * "mlp.shared_expert.gate_proj|up_proj|down_proj". */
static int expert_module(const char *m) {
  static const char *const lin[] = {"w1", "w2", "w3", "gate_proj", "up_proj", "down_proj"};
  int e = -1, n = 0;
  const char *rest = NULL;
  if ((sscanf(m, "block_sparse_moe.experts.%d.%n", &e, &n) == 1 ||
       sscanf(m, "mlp.experts.%d.%n", &e, &n) == 1) && n > 0 && e >= 0)
    rest = m + n;
  else if (strncmp(m, "mlp.shared_expert.", 18) == 0)
    rest = m + 18;
  for (size_t k = 0; rest && k < sizeof lin / sizeof *lin; k++)
    if (strcmp(rest, lin[k]) == 0 && (k >= 3 || m[0] == 'b')) return 1;
  return 0;
}

/* A source model stored quantized (FP8, compressed-tensors, GPTQ v1) holds
 * each linear's weight as "weight" or as one anchor part, plus parts the
 * export replaces. */
static const char *const k_anchor[] = {"weight", "weight_packed", "qweight"};
static const char *const k_parts[] = {"weight_scale", "weight_scale_inv", "input_scale",
                                      "weight_zero_point", "weight_shape", "weight_g_idx",
                                      "qzeros", "scales", "g_idx"};

/* "model.layers.{i}.{module}.{suffix}" of a quantized linear (the 7 of a
 * block, or an MoE expert's) -> layer, module (into mod) and the linear
 * index (NLIN for an expert); *part = 1 when suffix is a quantization part
 * to drop, 0 for the weight (or its anchor); -1 when not a linear's weight
 * or part. */
static int parse_linear(const char *name, int *layer, int *part, char *mod, size_t len) {
  int n = 0;
  if (sscanf(name, "model.layers.%d.%n", layer, &n) != 1 || n == 0) return -1;
  const char *dot = strrchr(name + n, '.');
  if (!dot) return -1;
  const char *suf = dot + 1;
  int pt = -1;
  for (size_t a = 0; a < sizeof k_anchor / sizeof *k_anchor; a++)
    if (!strcmp(suf, k_anchor[a])) pt = 0;
  for (size_t a = 0; a < sizeof k_parts / sizeof *k_parts; a++)
    if (!strcmp(suf, k_parts[a])) pt = 1;
  if (pt < 0) return -1;
  snprintf(mod, len, "%.*s", (int)(dot - (name + n)), name + n);
  *part = pt;
  for (int l = 0; l < NLIN; l++)
    if (strcmp(mod, k_linears[l]) == 0) return l;
  return expert_module(mod) ? NLIN : -1;
}

/* MoE routers (and the Qwen2-MoE shared expert gate) are nn.Linear in
 * transformers but stay unquantized: a format that lists ignored modules
 * names them (compressed-tensors "ignore", the regex form vLLM matches). */
static void moe_ignore(json_t *q, const char *mdir) {
  json_t *ign = json_object_get(q, "ignore");
  qz_model_config c;
  if (!json_is_array(ign)) return;
  if (qz_config_load(mdir, &c) != QZ_OK) {
    qz_error_clear();
    return;
  }
  if (!qz_config_any_moe(&c)) return;
  json_array_append_new(ign, json_string(c.moe == QZ_MOE_MIXTRAL ? "re:.*block_sparse_moe.gate$"
                                                                  : "re:.*mlp.gate$"));
  if (c.moe == QZ_MOE_QWEN2) json_array_append_new(ign, json_string("re:.*shared_expert_gate$"));
}

/* Quantized linears the source model's config implies in blocks [0, nb). */
static int64_t expected_linears(const char *mdir, int nb) {
  qz_model_config c;
  if (qz_config_load(mdir, &c) != QZ_OK) {
    qz_error_clear();
    return (int64_t)nb * NLIN;
  }
  int64_t n = 0;
  for (int l = 0; l < nb; l++)
    n += qz_config_layer_moe(&c, l)
             ? 4 + 3 * c.num_experts +
                   (c.moe == QZ_MOE_QWEN2 && c.shared_expert_intermediate_size > 0 ? 3 : 0)
             : NLIN;
  return n;
}


int qz_export_read_rows(qz_ckpt *ck, int rank, int layer, const char *mod,
                        const char *format, int64_t out, int64_t in, int64_t ng,
                        qz_export_rows *r) {
  *r = (qz_export_rows){0};
  int64_t nnz = 0, *oi = NULL;
  float *ov = NULL;
  QZ_CALL(qz_ckpt_read_outliers(ck, layer, mod, &nnz, &oi, &ov));
  qz_free(&oi);
  qz_free(&ov);
  QZ_CHECK(nnz == 0, QZ_ERR_UNSUPPORTED,
           "model.layers.%d.%s has %lld full-precision outliers (QuantEase "
           "--outlier-frac), which the %s format cannot hold (so have OWQ "
           "--keep-columns, SpQR and LLM.int8() --weight-only checkpoints)",
           layer, mod, (long long)nnz, format);
  const int64_t rows = rank == 0 ? out : 0, a = rows ? rows : 1;
  int st = QZ_OK;
  QZ_CALL_DONE(qz_alloc((size_t)a, (size_t)in, "codes", &r->codes));
  QZ_CALL_DONE(qz_alloc((size_t)a * (size_t)ng, 4, "scales", &r->scales));
  QZ_CALL_DONE(qz_alloc((size_t)a * (size_t)ng, 4, "zeros", &r->zeros));
  QZ_CALL_DONE(qz_alloc((size_t)in, 4, "g_idx", &r->g_idx));
  QZ_CALL_DONE(qz_ckpt_read_linear(ck, layer, mod, 0, rows, r->codes, r->scales, r->zeros,
                                   r->g_idx, NULL));
done:
  if (st) qz_export_rows_free(r);
  return st;
}

void qz_export_rows_free(qz_export_rows *r) {
  qz_free(&r->codes);
  qz_free(&r->scales);
  qz_free(&r->zeros);
  qz_free(&r->g_idx);
}

static int method_ok(const char *const *methods, const char *method) {
  for (const char *const *m = methods; m && *m; m++)
    if (strcmp(*m, method) == 0) return 1;
  return methods == NULL;
}

/* 1 when the format holds codes on grid `grid` (checkpoint attribute). */
static int grid_ok(const qz_export_format *fmt, const char *grid) {
  if (!grid[0] || strcmp(grid, "int") == 0) return 1;
  for (const char *const *g = fmt->grids; g && *g; g++)
    if (strcmp(*g, grid) == 0) return 1;
  return 0;
}

static const qz_export_format *find_format(const char *name) {
  static const qz_export_format *const all[] = {&qz_export_format_gptq,
                                                &qz_export_format_ct};
  for (size_t k = 0; k < sizeof all / sizeof *all; k++)
    if (strcmp(all[k]->name, name) == 0) return all[k];
  return NULL;
}

int qz_export(MPI_Comm comm, const qz_export_opts *o) {
  int st = QZ_OK, rank;
  MPI_Comm_rank(comm, &rank);
  qz_ckpt *ck = NULL;
  qz_st *src = NULL;
  json_t *cfg = NULL;
  qz_st_shards *ss = NULL;
  char tmpdir[PATH_MAX + 16] = "";
  char *fp = NULL;
  int made_tmp = 0;
  const char *fname = o->format && *o->format ? o->format : "gptq";
  const qz_export_format *fmt = find_format(fname);
  QZ_CHECK_DONE(fmt, QZ_ERR_USAGE,
                "export: unknown format '%s' (supported: gptq, compressed-tensors)", fname);
  QZ_CALL_DONE(qz_ckpt_open(comm, o->ckpt_dir, &ck));
  const char *mdir = o->model_dir && *o->model_dir ? o->model_dir : qz_ckpt_model_dir(ck);
  QZ_CHECK_DONE(*mdir, QZ_ERR_ARG, "checkpoint %s records no source model "
                "directory; pass --model DIR", o->ckpt_dir);
  /* the model must be the one the checkpoint was made from: its other
   * tensors are copied into the export */
  QZ_CALL_DONE(qz_ckpt_source_fingerprint(comm, mdir, &fp));
  QZ_CALL_DONE(qz_ckpt_check_source(ck, fp, "export"));
  int nb = qz_ckpt_nblocks(ck);
  QZ_CHECK_DONE(qz_ckpt_first_missing(ck) == nb, QZ_ERR_ARG,
                "checkpoint %s is incomplete (%d of %d blocks); finish it with "
                "quantize --resume before exporting",
                o->ckpt_dir, qz_ckpt_first_missing(ck), nb);
  { /* rotations and their activation/KV quantizers have no export format yet:
     * the weights alone would be a different model (docs/methods.md) */
    json_t *opts = json_loads(qz_ckpt_options_json(ck), 0, NULL);
    json_t *rot = json_object_get(opts, "rotate");
    const char *kind = json_string_value(json_object_get(rot, "kind"));
    int refused = rot != NULL;
    char what[64];
    snprintf(what, sizeof what, "%s", kind ? kind : "?");
    json_decref(opts);
    QZ_CHECK_DONE(!refused, QZ_ERR_UNSUPPORTED,
                  "checkpoint %s was made with --rotate %s (or --kv-bits / --act-asym / "
                  "--act-clip): its online rotations and quantizers have no export format "
                  "yet; evaluate it with eval --ckpt", o->ckpt_dir, what);
  }
  /* rank 0 opens the source model and creates the output directory */
  if (rank == 0) {
    const char *inputs[2] = {mdir, o->ckpt_dir};
    st = qz_export_out_begin(o->out_dir, inputs, 2, o->overwrite, tmpdir, sizeof tmpdir);
    if (st == QZ_OK) made_tmp = 1;
    if (st == QZ_OK) st = qz_st_open(mdir, &src);
    if (st == QZ_OK) st = qz_st_shards_create(tmpdir, "model", o->max_shard_bytes, 0, &ss);
  }
  QZ_CALL_DONE(qz_error_agree(comm, st));

  qz_export_counts counts = {.act_bits = qz_ckpt_act_bits(ck)};
  int64_t nlinear = 0, nfolded = 0;
  qz_ckpt_linear_meta first = {0};
  int ntensors = 0;
  if (rank == 0) ntensors = qz_st_count(src);
  QZ_CALL_MPI(MPI_Bcast(&ntensors, 1, MPI_INT, 0, comm));
  /* walk the source tensors in name order; every rank follows so that the
   * collective checkpoint reads line up */
  for (int i = 0; i < ntensors; i++) {
    char name[512] = "";
    const qz_tensor_info *ti = NULL;
    if (rank == 0) {
      ti = qz_st_info_at(src, i);
      snprintf(name, sizeof name, "%s", ti->name);
    }
    QZ_CALL_MPI(MPI_Bcast(name, sizeof name, MPI_CHAR, 0, comm));
    qz_count_bcast(comm, 0, (int64_t)sizeof name);
    char mod[256] = "";
    int layer = -1, part = 0, lin = parse_linear(name, &layer, &part, mod, sizeof mod);
    if (lin >= 0 && part) continue; /* the source's scales & co.: replaced */
    if (lin >= 0) {
      QZ_CHECK_DONE(layer < nb, QZ_ERR_FORMAT, "%s: tensor %s but the "
                    "checkpoint has %d blocks", mdir, name, nb);
      qz_ckpt_linear_meta m;
      int64_t o_, i_, g_;
      QZ_CALL_DONE(qz_ckpt_linear_info(ck, layer, mod, &o_, &i_, &g_, &m));
      QZ_CHECK_DONE(method_ok(o->methods, m.method), QZ_ERR_UNSUPPORTED,
                    "layer %d %s was quantized with '%s', which has no %s export", layer,
                    mod, m.method, fmt->title);
      QZ_CHECK_DONE(grid_ok(fmt, m.grid), QZ_ERR_UNSUPPORTED,
                    "layer %d %s has codes on the %s grid, which the %s export cannot "
                    "hold", layer, mod, m.grid, fmt->title);
      st = fmt->linear(ck, rank, ss, layer, mod, &m, &counts);
      QZ_CALL_DONE(qz_error_agree(comm, st));
      if (nlinear++ == 0) first = m;
      /* quantization_config describes one scheme for every linear */
      QZ_CHECK_DONE(m.bits == first.bits && m.group_size == first.group_size &&
                        m.sym == first.sym && m.act_order == first.act_order &&
                        m.static_groups == first.static_groups,
                    QZ_ERR_UNSUPPORTED,
                    "%s: model.layers.%d.%s is %d-bit group %d %s%s, the first linear "
                    "%d-bit group %d %s%s: an export's quantization_config describes one "
                    "scheme for every linear", o->ckpt_dir, layer, mod, m.bits,
                    m.group_size, m.sym ? "sym" : "asym", m.act_order ? " act-order" : "",
                    first.bits, first.group_size, first.sym ? "sym" : "asym",
                    first.act_order ? " act-order" : "");
      continue;
    }
    /* RMSNorm weights with folded scales (AWQ, SmoothQuant) come from the
     * checkpoint, as f32 */
    int nl = -1, which = -1;
    {
      int n1 = 0, n2 = 0;
      if (sscanf(name, "model.layers.%d.input_layernorm.weight%n", &nl, &n1) == 1 &&
          n1 > 0 && name[n1] == '\0')
        which = 0;
      else if (sscanf(name, "model.layers.%d.post_attention_layernorm.weight%n", &nl,
                      &n2) == 1 && n2 > 0 && name[n2] == '\0')
        which = 1;
    }
    if (which >= 0 && nl >= 0 && nl < nb) {
      int64_t hid = rank == 0 ? ti->shape[0] : 0;
      QZ_CALL_MPI(MPI_Bcast(&hid, 1, MPI_INT64_T, 0, comm));
      float *nrm = NULL;
      int found = 0;
      st = qz_alloc((size_t)(2 * hid), sizeof(float), "norms", &nrm);
      QZ_CALL_DONE(qz_error_agree(comm, st));
      st = qz_ckpt_read_norms(ck, nl, hid, nrm, nrm + hid, &found);
      if (st == QZ_OK && found && rank == 0)
        st = qz_st_shards_add(ss, name, QZ_DT_F32, 1, &hid, nrm + which * hid, hid * 4);
      free(nrm);
      QZ_CALL_DONE(qz_error_agree(comm, st));
      if (found) {
        nfolded++;
        continue;
      }
    }
    if (rank == 0) {
      const void *data = NULL;
      st = qz_st_data(src, name, &data);
      if (st == QZ_OK)
        st = qz_st_shards_add(ss, name, ti->dtype, ti->ndim, ti->shape, data, ti->nbytes);
    }
    QZ_CALL_DONE(qz_error_agree(comm, st));
  }
  const int64_t nexpect = expected_linears(mdir, nb);
  QZ_CHECK_DONE(nlinear == nexpect, QZ_ERR_FORMAT,
                "%s: found %lld quantizable linears, expected %lld (%d blocks)",
                mdir, (long long)nlinear, (long long)nexpect, nb);
  if (rank == 0) {
    int nshards = qz_st_shards_count(ss);
    int64_t total = qz_st_shards_bytes(ss);
    st = qz_st_shards_finish(&ss);
    /* config.json + quantization_config, quantize_config.json, tokenizer */
    char from[PATH_MAX + 64], to[PATH_MAX + 64];
    snprintf(from, sizeof from, "%s/config.json", mdir);
    json_error_t jerr;
    if (st == QZ_OK) {
      st = qz_file_check_input(from);
      cfg = st == QZ_OK ? json_load_file(from, 0, &jerr) : NULL;
      if (st != QZ_OK) snprintf(jerr.text, sizeof jerr.text, "%s", qz_error_message());
      if (!cfg)
        st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                          "%s: %s", from, jerr.text);
    }
    if (st == QZ_OK) {
      json_t *q = fmt->quant_config(&first, &counts);
      moe_ignore(q, mdir);
      json_object_set(cfg, "quantization_config", q);
      snprintf(to, sizeof to, "%s/config.json", tmpdir);
      if (json_dump_file(cfg, to, JSON_INDENT(2)) != 0)
        st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__, "cannot write %s", to);
      snprintf(to, sizeof to, "%s/quantize_config.json", tmpdir);
      if (st == QZ_OK && fmt->quantize_config_json &&
          json_dump_file(q, to, JSON_INDENT(2)) != 0)
        st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__, "cannot write %s", to);
      json_decref(q);
    }
    static const char *const extra[] = {
        "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
        "special_tokens_map.json", "generation_config.json"};
    for (size_t k = 0; st == QZ_OK && k < sizeof extra / sizeof *extra; k++) {
      snprintf(from, sizeof from, "%s/%s", mdir, extra[k]);
      snprintf(to, sizeof to, "%s/%s", tmpdir, extra[k]);
      st = qz_copy_file(from, to, 0);
    }
    if (st == QZ_OK) st = qz_export_out_commit(o->out_dir, tmpdir);
    if (st == QZ_OK) {
      made_tmp = 0;
      char b[32];
      if (nfolded)
        qz_info("export: %lld RMSNorm weights with folded scales from the checkpoint",
                (long long)nfolded);
      qz_info("export: %lld quantized linears (%s), %d shard%s, %s -> %s",
              (long long)nlinear, fmt->name, nshards, nshards == 1 ? "" : "s",
              qz_fmt_bytes((double)total, b, sizeof b), o->out_dir);
      if (fmt->report) fmt->report(&first, &counts);
    }
  }
  QZ_CALL_DONE(qz_error_agree(comm, st));
done:
  qz_st_shards_abort(&ss);
  if (made_tmp) qz_export_out_abort(tmpdir); /* a failed export leaves nothing */
  free(fp);
  json_decref(cfg);
  qz_st_close(&src);
  qz_ckpt_close(&ck);
  return st;
}
