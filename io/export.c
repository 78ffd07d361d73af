/* Checkpoint -> Hugging Face GPTQ v1 (AutoGPTQ / transformers / vLLM).
 *
 * Layout facts (GPTQ v1 "checkpoint_format: gptq"): per linear
 *   qweight int32 [in*bits/32, out]: column o is the bitstream of codes
 *           W[o, 0..in) with `bits` bits each, least significant first
 *           (for 3 bits a code may straddle two words: the stream is
 *           continuous);
 *   qzeros  int32 [groups, out*bits/32]: row k is the bitstream of
 *           (zero[o, k] - 1) & maxq over o (loaders add 1 back);
 *   scales  f16   [groups, out];  g_idx int32 [in].
 * A zero point of 0 cannot be represented in v1 (it reads back as maxq+1);
 * such (row, group)s are counted and reported. */
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
#include "mpiquant/error.h"
#include "mpiquant/export.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"

void qz_gptq_pack(int bits, int64_t nvec, int64_t len, const uint8_t *codes,
                  int32_t *words) {
  int64_t nw = len * bits / 32;
  memset(words, 0, sizeof(int32_t) * (size_t)(nw * nvec));
  uint32_t mask = (1u << bits) - 1u;
  for (int64_t v = 0; v < nvec; v++) {
    const uint8_t *c = codes + v * len;
    for (int64_t i = 0; i < len; i++) {
      uint64_t bit = (uint64_t)i * (uint64_t)bits;
      int64_t w = (int64_t)(bit >> 5);
      int sh = (int)(bit & 31);
      uint64_t val = (uint64_t)(c[i] & mask) << sh;
      uint32_t *dst = (uint32_t *)words;
      dst[w * nvec + v] |= (uint32_t)val;
      if (sh + bits > 32) dst[(w + 1) * nvec + v] |= (uint32_t)(val >> 32);
    }
  }
}

static const char *const k_linears[] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
    "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
    "mlp.down_proj"};
enum { NLIN = 7 };

/* "model.layers.{i}.{linear}.weight" -> layer, linear index; else -1 */
static int parse_linear(const char *name, int *layer) {
  int n = 0;
  if (sscanf(name, "model.layers.%d.%n", layer, &n) != 1 || n == 0) return -1;
  for (int l = 0; l < NLIN; l++) {
    size_t k = strlen(k_linears[l]);
    if (strncmp(name + n, k_linears[l], k) == 0 &&
        strcmp(name + n + k, ".weight") == 0)
      return l;
  }
  return -1;
}

typedef struct {
  const char *out_dir;
  int64_t max_bytes, cur_bytes;
  int nshards;
  qz_st_writer *w;
  json_t *weight_map; /* name -> temp shard index */
  int64_t total_bytes;
} shard_set;

static void shard_tmp_name(const shard_set *s, int k, char *buf, size_t n) {
  snprintf(buf, n, "%s/model-part-%05d.safetensors", s->out_dir, k + 1);
}

static int shard_add(shard_set *s, const char *name, qz_dtype dt, int nd,
                     const int64_t *shape, const void *data, int64_t bytes) {
  if (s->w && s->cur_bytes > 0 && s->cur_bytes + bytes > s->max_bytes) {
    QZ_CALL(qz_st_writer_finish(&s->w));
  }
  if (!s->w) {
    char p[PATH_MAX + 64];
    shard_tmp_name(s, s->nshards, p, sizeof p);
    QZ_CALL(qz_st_writer_create(p, &s->w));
    QZ_CALL(qz_st_writer_meta(s->w, "format", "pt"));
    s->nshards++;
    s->cur_bytes = 0;
  }
  QZ_CALL(qz_st_writer_add(s->w, name, dt, nd, shape, data));
  s->cur_bytes += bytes;
  s->total_bytes += bytes;
  json_object_set_new(s->weight_map, name, json_integer(s->nshards - 1));
  return QZ_OK;
}

/* Final names: one shard -> model.safetensors; more -> model-0000k-of-0000n
 * + model.safetensors.index.json. */
static int shard_finish(shard_set *s) {
  if (s->w) QZ_CALL(qz_st_writer_finish(&s->w));
  char from[PATH_MAX + 64], to[PATH_MAX + 64];
  json_t *map = json_object();
  for (int k = 0; k < s->nshards; k++) {
    shard_tmp_name(s, k, from, sizeof from);
    if (s->nshards == 1)
      snprintf(to, sizeof to, "%s/model.safetensors", s->out_dir);
    else
      snprintf(to, sizeof to, "%s/model-%05d-of-%05d.safetensors", s->out_dir,
               k + 1, s->nshards);
    if (rename(from, to) != 0) {
      json_decref(map);
      QZ_FAIL(QZ_ERR_IO, "cannot rename %s to %s: %s", from, to, strerror(errno));
    }
  }
  if (s->nshards > 1) {
    const char *key;
    json_t *v;
    json_object_foreach(s->weight_map, key, v) {
      char nm[64];
      snprintf(nm, sizeof nm, "model-%05d-of-%05d.safetensors",
               (int)json_integer_value(v) + 1, s->nshards);
      json_object_set_new(map, key, json_string(nm));
    }
    json_t *idx = json_object();
    json_t *meta = json_object();
    json_object_set_new(meta, "total_size", json_integer(s->total_bytes));
    json_object_set_new(idx, "metadata", meta);
    json_object_set(idx, "weight_map", map);
    snprintf(to, sizeof to, "%s/model.safetensors.index.json", s->out_dir);
    int r = json_dump_file(idx, to, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(idx);
    if (r != 0) {
      json_decref(map);
      QZ_FAIL(QZ_ERR_IO, "cannot write %s", to);
    }
  }
  json_decref(map);
  return QZ_OK;
}

static int copy_file(const char *from, const char *to) {
  FILE *a = fopen(from, "rb");
  if (!a) return QZ_OK; /* optional file */
  FILE *b = fopen(to, "wb");
  if (!b) {
    fclose(a);
    QZ_FAIL(QZ_ERR_IO, "cannot write %s: %s", to, strerror(errno));
  }
  char buf[1 << 16];
  size_t n;
  int ok = 1;
  while ((n = fread(buf, 1, sizeof buf, a)) > 0)
    if (fwrite(buf, 1, n, b) != n) ok = 0;
  ok = !ferror(a) && ok;
  fclose(a);
  ok = fclose(b) == 0 && ok;
  QZ_CHECK(ok, QZ_ERR_IO, "copying %s to %s failed (disk full?)", from, to);
  return QZ_OK;
}

/* quantization_config from the checkpoint's options and its first linear */
static json_t *quant_config(const qz_ckpt_linear_meta *m) {
  json_t *q = json_object();
  json_object_set_new(q, "quant_method", json_string("gptq"));
  json_object_set_new(q, "bits", json_integer(m->bits));
  json_object_set_new(q, "group_size", json_integer(m->group_size));
  json_object_set_new(q, "desc_act", json_boolean(m->act_order));
  json_object_set_new(q, "sym", json_boolean(m->sym));
  json_object_set_new(q, "static_groups", json_boolean(m->static_groups));
  json_object_set_new(q, "true_sequential", json_true());
  json_object_set_new(q, "damp_percent", json_real(0.01));
  json_object_set_new(q, "checkpoint_format", json_string("gptq"));
  json_object_set_new(q, "model_file_base_name", json_string("model"));
  json_object_set_new(q, "quantizer", json_string("mpiquant"));
  return q;
}

/* scratch half of the qzeros buffer: [wz, ng] before the transpose */
static int32_t *qw_zero_tmp(int32_t *qz, int64_t ng, int64_t wz) { return qz + ng * wz; }

/* One quantized linear: read (rank 0 gets all rows), pack, add. */
static int export_linear(qz_ckpt *ck, int rank, shard_set *ss, int layer,
                         int lin, qz_ckpt_linear_meta *meta_out,
                         int64_t *zero_zero) {
  int st = QZ_OK;
  int64_t out = 0, in = 0, ng = 0;
  qz_ckpt_linear_meta m;
  uint8_t *codes = NULL, *zc = NULL;
  float *sc = NULL, *zf = NULL;
  int32_t *gi = NULL, *qw = NULL, *qz = NULL;
  uint16_t *s16 = NULL;
  const char *mod = k_linears[lin];
  QZ_CALL_DONE(qz_ckpt_linear_info(ck, layer, mod, &out, &in, &ng, &m));
  QZ_CHECK_DONE(strcmp(m.method, "rtn") == 0 || strcmp(m.method, "gptq") == 0 ||
                    strcmp(m.method, "awq") == 0 ||
                    strcmp(m.method, "quantease") == 0 ||
                    strcmp(m.method, "awq+gptq") == 0,
                QZ_ERR_UNSUPPORTED,
                "layer %d %s was quantized with '%s', which has no GPTQ export",
                layer, mod, m.method);
  QZ_CHECK_DONE(m.bits == 2 || m.bits == 3 || m.bits == 4 || m.bits == 8,
                QZ_ERR_UNSUPPORTED,
                "model.layers.%d.%s: %d-bit codes cannot be exported in the "
                "GPTQ format (2, 3, 4 or 8 bits)", layer, mod, m.bits);
  QZ_CHECK_DONE(in % 32 == 0 && out % 32 == 0, QZ_ERR_UNSUPPORTED,
                "model.layers.%d.%s.weight is [%lld, %lld]: the GPTQ format "
                "packs along both dimensions and needs in and out to be "
                "multiples of 32",
                layer, mod, (long long)out, (long long)in);
  {
    int64_t nnz = 0, *oi = NULL;
    float *ov = NULL;
    QZ_CALL_DONE(qz_ckpt_read_outliers(ck, layer, mod, &nnz, &oi, &ov));
    qz_free(&oi);
    qz_free(&ov);
    QZ_CHECK_DONE(nnz == 0, QZ_ERR_UNSUPPORTED,
                  "model.layers.%d.%s has %lld full-precision outliers "
                  "(QuantEase --outlier-frac), which the GPTQ format cannot hold",
                  layer, mod, (long long)nnz);
  }
  *meta_out = m;
  int64_t rows = rank == 0 ? out : 0;
  QZ_CALL_DONE(qz_alloc((size_t)(rows ? rows : 1), (size_t)in, "codes", &codes));
  QZ_CALL_DONE(qz_alloc((size_t)(rows ? rows : 1) * (size_t)ng, 4, "scales", &sc));
  QZ_CALL_DONE(qz_alloc((size_t)(rows ? rows : 1) * (size_t)ng, 4, "zeros", &zf));
  QZ_CALL_DONE(qz_alloc((size_t)in, 4, "g_idx", &gi));
  QZ_CALL_DONE(qz_ckpt_read_linear(ck, layer, mod, 0, rows, codes, sc, zf, gi, NULL));
  if (rank == 0) {
    int64_t wq = in * m.bits / 32, wz = out * m.bits / 32;
    QZ_CALL_DONE(qz_alloc((size_t)(wq * out), 4, "qweight", &qw));
    QZ_CALL_DONE(qz_alloc((size_t)(2 * ng * wz), 4, "qzeros", &qz));
    QZ_CALL_DONE(qz_alloc((size_t)(ng * out), 1, "zero codes", &zc));
    QZ_CALL_DONE(qz_alloc((size_t)(ng * out), 2, "scales f16", &s16));
    qz_gptq_pack(m.bits, out, in, codes, qw);
    int maxq = (1 << m.bits) - 1;
    for (int64_t k = 0; k < ng; k++)
      for (int64_t o = 0; o < out; o++) {
        int z = (int)rintf(zf[o * ng + k]);
        if (z == 0) (*zero_zero)++;
        zc[k * out + o] = (uint8_t)((z - 1) & maxq);
        s16[k * out + o] = qz_f32_to_f16(sc[o * ng + k]);
      }
    /* qzeros is group-major: row k holds group k's packed zero points */
    qz_gptq_pack(m.bits, ng, out, zc, qw_zero_tmp(qz, ng, wz));
    for (int64_t k = 0; k < ng; k++)
      for (int64_t w = 0; w < wz; w++) qz[k * wz + w] = qz[ng * wz + w * ng + k];
    char name[256];
    int64_t shp[2];
    snprintf(name, sizeof name, "model.layers.%d.%s.qweight", layer, mod);
    shp[0] = wq; shp[1] = out;
    QZ_CALL_DONE(shard_add(ss, name, QZ_DT_I32, 2, shp, qw, wq * out * 4));
    snprintf(name, sizeof name, "model.layers.%d.%s.qzeros", layer, mod);
    shp[0] = ng; shp[1] = wz;
    QZ_CALL_DONE(shard_add(ss, name, QZ_DT_I32, 2, shp, qz, ng * wz * 4));
    snprintf(name, sizeof name, "model.layers.%d.%s.scales", layer, mod);
    shp[0] = ng; shp[1] = out;
    QZ_CALL_DONE(shard_add(ss, name, QZ_DT_F16, 2, shp, s16, ng * out * 2));
    snprintf(name, sizeof name, "model.layers.%d.%s.g_idx", layer, mod);
    shp[0] = in;
    QZ_CALL_DONE(shard_add(ss, name, QZ_DT_I32, 1, shp, gi, in * 4));
  }
done:
  free(codes); free(sc); free(zf); free(gi); free(qw); free(qz); free(zc); free(s16);
  return st;
}

int qz_export_gptq(MPI_Comm comm, const qz_export_opts *o) {
  int st = QZ_OK, rank;
  MPI_Comm_rank(comm, &rank);
  qz_ckpt *ck = NULL;
  qz_st *src = NULL;
  json_t *cfg = NULL;
  shard_set ss = {.out_dir = o->out_dir,
                  .max_bytes = o->max_shard_bytes > 0 ? o->max_shard_bytes
                                                      : ((int64_t)4 << 30)};
  ss.weight_map = json_object();
  QZ_CALL_DONE(qz_ckpt_open(comm, o->ckpt_dir, &ck));
  const char *mdir = o->model_dir && *o->model_dir ? o->model_dir : qz_ckpt_model_dir(ck);
  QZ_CHECK_DONE(*mdir, QZ_ERR_ARG, "checkpoint %s records no source model "
                "directory; pass --model DIR", o->ckpt_dir);
  int nb = qz_ckpt_nblocks(ck);
  QZ_CHECK_DONE(qz_ckpt_first_missing(ck) == nb, QZ_ERR_ARG,
                "checkpoint %s is incomplete (%d of %d blocks); finish it with "
                "quantize --resume before exporting",
                o->ckpt_dir, qz_ckpt_first_missing(ck), nb);
  /* rank 0 opens the source model and creates the output directory */
  if (rank == 0) {
    st = qz_st_open(mdir, &src);
    if (st == QZ_OK && mkdir(o->out_dir, 0755) != 0 && errno != EEXIST)
      st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                        "cannot create %s: %s", o->out_dir, strerror(errno));
  }
  QZ_CALL_DONE(qz_error_agree(comm, st));

  int64_t zero_zero = 0, nlinear = 0, nfolded = 0;
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
    int layer = -1, lin = parse_linear(name, &layer);
    if (lin >= 0) {
      QZ_CHECK_DONE(layer < nb, QZ_ERR_FORMAT, "%s: tensor %s but the "
                    "checkpoint has %d blocks", mdir, name, nb);
      qz_ckpt_linear_meta m;
      st = export_linear(ck, rank, &ss, layer, lin, &m, &zero_zero);
      QZ_CALL_DONE(qz_error_agree(comm, st));
      if (nlinear++ == 0) first = m;
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
        st = shard_add(&ss, name, QZ_DT_F32, 1, &hid, nrm + which * hid, hid * 4);
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
        st = shard_add(&ss, name, ti->dtype, ti->ndim, ti->shape, data, ti->nbytes);
    }
    QZ_CALL_DONE(qz_error_agree(comm, st));
  }
  QZ_CHECK_DONE(nlinear == (int64_t)nb * NLIN, QZ_ERR_FORMAT,
                "%s: found %lld quantizable linears, expected %d blocks x 7",
                mdir, (long long)nlinear, nb);
  if (rank == 0) {
    st = shard_finish(&ss);
    /* config.json + quantization_config, quantize_config.json, tokenizer */
    char from[PATH_MAX + 64], to[PATH_MAX + 64];
    snprintf(from, sizeof from, "%s/config.json", mdir);
    json_error_t jerr;
    if (st == QZ_OK) {
      cfg = json_load_file(from, 0, &jerr);
      if (!cfg)
        st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                          "%s: %s", from, jerr.text);
    }
    if (st == QZ_OK) {
      json_t *q = quant_config(&first);
      json_object_set(cfg, "quantization_config", q);
      snprintf(to, sizeof to, "%s/config.json", o->out_dir);
      if (json_dump_file(cfg, to, JSON_INDENT(2)) != 0)
        st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__, "cannot write %s", to);
      snprintf(to, sizeof to, "%s/quantize_config.json", o->out_dir);
      if (st == QZ_OK && json_dump_file(q, to, JSON_INDENT(2)) != 0)
        st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__, "cannot write %s", to);
      json_decref(q);
    }
    static const char *const extra[] = {
        "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
        "special_tokens_map.json", "generation_config.json"};
    for (size_t k = 0; st == QZ_OK && k < sizeof extra / sizeof *extra; k++) {
      snprintf(from, sizeof from, "%s/%s", mdir, extra[k]);
      snprintf(to, sizeof to, "%s/%s", o->out_dir, extra[k]);
      st = copy_file(from, to);
    }
    if (st == QZ_OK) {
      char b[32];
      if (nfolded)
        qz_info("export: %lld RMSNorm weights with folded scales from the checkpoint",
                (long long)nfolded);
      qz_info("export: %lld quantized linears, %d shard%s, %s -> %s", (long long)nlinear,
              ss.nshards, ss.nshards == 1 ? "" : "s",
              qz_fmt_bytes((double)ss.total_bytes, b, sizeof b), o->out_dir);
      if (zero_zero > 0)
        qz_warn("export: %lld (row, group) zero points are 0, which the GPTQ v1 "
                "format cannot represent (loaders read them as %d)",
                (long long)zero_zero, (1 << first.bits));
    }
  }
  QZ_CALL_DONE(qz_error_agree(comm, st));
done:
  if (ss.w) qz_st_writer_abort(&ss.w);
  json_decref(ss.weight_map);
  json_decref(cfg);
  qz_st_close(&src);
  qz_ckpt_close(&ck);
  return st;
}
