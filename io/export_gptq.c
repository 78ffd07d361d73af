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
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export_impl.h"
#include "mpiquant/ckpt.h"
#include "mpiquant/error.h"
#include "mpiquant/export.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"
#include "mpiquant/threads.h"

void qz_gptq_pack(int bits, int64_t nvec, int64_t len, const uint8_t *codes,
                  int32_t *words) {
  int64_t nw = len * bits / 32;
  memset(words, 0, sizeof(int32_t) * (size_t)(nw * nvec));
  uint32_t mask = (1u << bits) - 1u;
  /* vector v (column v of words) by one thread */
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(nvec * len))
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

/* quantization_config from the checkpoint's options and its first linear */
static json_t *gptq_quant_config(const qz_ckpt_linear_meta *m, const qz_export_counts *n) {
  (void)n; /* GPTQ has no activation quantization: gptq_linear refuses act_bits */
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
static int gptq_linear(qz_ckpt *ck, int rank, qz_st_shards *ss, int layer,
                       const char *mod, qz_ckpt_linear_meta *meta_out,
                       qz_export_counts *n) {
  int st = QZ_OK;
  int64_t out = 0, in = 0, ng = 0;
  qz_ckpt_linear_meta m;
  qz_export_rows R = {0};
  uint8_t *zc = NULL;
  int32_t *qw = NULL, *qz = NULL;
  uint16_t *s16 = NULL;
  QZ_CALL_DONE(qz_ckpt_linear_info(ck, layer, mod, &out, &in, &ng, &m));
  /* GPTQ v1 loaders run the dequantized weights on unquantized activations:
   * exporting a checkpoint evaluated with int activations would silently
   * change what the model computes */
  QZ_CHECK_DONE(n->act_bits == 0, QZ_ERR_UNSUPPORTED,
                "model.layers.%d.%s: the checkpoint expects int%d activations "
                "(act_bits %d), which the GPTQ v1 format cannot express; export it "
                "with --format compressed-tensors (int-quantized W8A8 for 8-bit "
                "symmetric per-channel weights)", layer, mod, n->act_bits, n->act_bits);
  QZ_CHECK_DONE(m.bits == 2 || m.bits == 3 || m.bits == 4 || m.bits == 8,
                QZ_ERR_UNSUPPORTED,
                "model.layers.%d.%s: %d-bit codes cannot be exported in the "
                "GPTQ format (2, 3, 4 or 8 bits)", layer, mod, m.bits);
  QZ_CHECK_DONE(in % 32 == 0 && out % 32 == 0, QZ_ERR_UNSUPPORTED,
                "model.layers.%d.%s.weight is [%lld, %lld]: the GPTQ format "
                "packs along both dimensions and needs in and out to be "
                "multiples of 32",
                layer, mod, (long long)out, (long long)in);
  QZ_CALL_DONE(qz_export_read_rows(ck, rank, layer, mod, "GPTQ", out, in, ng, &R));
  *meta_out = m;
  if (rank == 0) {
    int64_t wq = in * m.bits / 32, wz = out * m.bits / 32;
    QZ_CALL_DONE(qz_alloc((size_t)(wq * out), 4, "qweight", &qw));
    QZ_CALL_DONE(qz_alloc((size_t)(2 * ng * wz), 4, "qzeros", &qz));
    QZ_CALL_DONE(qz_alloc((size_t)(ng * out), 1, "zero codes", &zc));
    QZ_CALL_DONE(qz_alloc((size_t)(ng * out), 2, "scales f16", &s16));
    qz_gptq_pack(m.bits, out, in, R.codes, qw);
    int maxq = (1 << m.bits) - 1;
    for (int64_t k = 0; k < ng; k++)
      for (int64_t o = 0; o < out; o++) {
        int z = (int)rintf(R.zeros[o * ng + k]);
        if (z == 0) n->zero_zero++;
        zc[k * out + o] = (uint8_t)((z - 1) & maxq);
        s16[k * out + o] = qz_f32_to_f16(R.scales[o * ng + k]);
      }
    /* qzeros is group-major: row k holds group k's packed zero points */
    qz_gptq_pack(m.bits, ng, out, zc, qw_zero_tmp(qz, ng, wz));
    for (int64_t k = 0; k < ng; k++)
      for (int64_t w = 0; w < wz; w++) qz[k * wz + w] = qz[ng * wz + w * ng + k];
    char name[256];
    int64_t shp[2];
    snprintf(name, sizeof name, "model.layers.%d.%s.qweight", layer, mod);
    shp[0] = wq; shp[1] = out;
    QZ_CALL_DONE(qz_st_shards_add(ss, name, QZ_DT_I32, 2, shp, qw, wq * out * 4));
    snprintf(name, sizeof name, "model.layers.%d.%s.qzeros", layer, mod);
    shp[0] = ng; shp[1] = wz;
    QZ_CALL_DONE(qz_st_shards_add(ss, name, QZ_DT_I32, 2, shp, qz, ng * wz * 4));
    snprintf(name, sizeof name, "model.layers.%d.%s.scales", layer, mod);
    shp[0] = ng; shp[1] = out;
    QZ_CALL_DONE(qz_st_shards_add(ss, name, QZ_DT_F16, 2, shp, s16, ng * out * 2));
    snprintf(name, sizeof name, "model.layers.%d.%s.g_idx", layer, mod);
    shp[0] = in;
    QZ_CALL_DONE(qz_st_shards_add(ss, name, QZ_DT_I32, 1, shp, R.g_idx, in * 4));
  }
done:
  qz_export_rows_free(&R);
  free(qw); free(qz); free(zc); free(s16);
  return st;
}

static void gptq_report(const qz_ckpt_linear_meta *first, const qz_export_counts *n) {
  if (n->zero_zero > 0)
    qz_warn("export: %lld (row, group) zero points are 0, which the GPTQ v1 "
            "format cannot represent (loaders read them as %d)",
            (long long)n->zero_zero, (1 << first->bits));
}

const qz_export_format qz_export_format_gptq = {
    .name = "gptq",
    .title = "GPTQ",
    .linear = gptq_linear,
    .quant_config = gptq_quant_config,
    .quantize_config_json = 1,
    .report = gptq_report,
};
