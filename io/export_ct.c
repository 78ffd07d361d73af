/* Checkpoint -> compressed-tensors: "int-quantized" (the W8A8 layout vLLM's
 * CompressedTensorsW8A8Int8 scheme and transformers' compressed-tensors
 * integration load).
 *
 * Layout facts (compressed-tensors naive/int quantization compressor, read
 * from its specification and code; none of it is copied here):
 *   {linear}.weight        I8  [out, in]   w_q, symmetric: w = w_q * scale
 *   {linear}.weight_scale  F32 [out, 1]    strategy "channel"
 *   no weight_zero_point (symmetric zero points are not saved), no input
 *   scale (dynamic activations are quantized at run time).
 * config.json quantization_config: quant_method "compressed-tensors",
 * format "int-quantized", quantization_status "compressed", one config
 * group targeting "Linear" with weights {num_bits 8, type int, symmetric,
 * strategy channel, dynamic false} and, when the checkpoint expects int8
 * activations (SmoothQuant), input_activations {num_bits 8, type int,
 * symmetric, strategy token, dynamic true}; "ignore": ["lm_head"] (the head
 * and embeddings stay in their source dtype).
 *
 * Our checkpoint stores symmetric 8-bit codes as u8 with zero point 128
 * (docs/checkpoint.md), so w_q = code - 128 and the dequantized weight is
 * bit-identical to the checkpoint's: scale * (code - 128) in f32.
 *
 * Every other integer checkpoint (GPTQ, AWQ, RTN, QuantEase: 2..8 bits,
 * group or channel, symmetric or with zero points) goes to "pack-quantized"
 * (the W4A16 / W8A16 layout of vLLM's CompressedTensorsWNA16), facts from
 * the compressed-tensors pack-quantized compressor:
 *   {linear}.weight_packed      I32 [out, ceil(in / f)], f = 32 / bits values
 *                               per int32, value k of a word at bits
 *                               [k*bits, (k+1)*bits), each value the signed
 *                               code plus 2^(bits-1) (= our unsigned code),
 *                               padding 0
 *   {linear}.weight_scale       F32 [out, in / group] (channel: [out, 1])
 *   {linear}.weight_zero_point  I32 [ceil(out / f), in / group]: zero points
 *                               packed the same way along the output dim
 *                               (asymmetric only; our zero = signed zp + 2^(bits-1))
 *   {linear}.weight_g_idx       I32 [in] group of each input column
 *                               (act-order, actorder "group")
 *   {linear}.weight_shape       I64 [2] = {out, in}
 * w = (q - zp) * scale[:, g_idx] = scale * (code - zero): bit-identical to
 * the checkpoint in f32. Groups must divide in_features (the format's zero
 * point shape and vLLM's kernels assume it); symmetric checkpoints must have
 * zero 2^(bits-1) everywhere (no zero point is stored). */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export_impl.h"
#include "mpiquant/ckpt.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"
#include "mpiquant/threads.h"

static json_t *qargs(int bits, const char *strategy, int dynamic) {
  json_t *a = json_object();
  json_object_set_new(a, "num_bits", json_integer(bits));
  json_object_set_new(a, "type", json_string("int"));
  json_object_set_new(a, "symmetric", json_true());
  json_object_set_new(a, "strategy", json_string(strategy));
  json_object_set_new(a, "dynamic", json_boolean(dynamic));
  json_object_set_new(a, "group_size", json_null());
  json_object_set_new(a, "block_structure", json_null());
  json_object_set_new(a, "actorder", json_null());
  json_object_set_new(a, "observer", dynamic ? json_null() : json_string("minmax"));
  json_object_set_new(a, "observer_kwargs", json_object());
  return a;
}

/* int-quantized holds 8-bit symmetric per-channel weights; the rest packs */
static int is_int_quantized(const qz_ckpt_linear_meta *m) {
  return m->bits == 8 && m->sym && m->group_size == -1;
}

/* the weights' quantization args of a pack-quantized export */
static json_t *packed_qargs(const qz_ckpt_linear_meta *m) {
  json_t *a = qargs(m->bits, m->group_size > 0 ? "group" : "channel", 0);
  json_object_set_new(a, "symmetric", json_boolean(m->sym));
  json_object_set_new(a, "group_size",
                      m->group_size > 0 ? json_integer(m->group_size) : json_null());
  /* act-order: "group" stores g_idx; static groups keep g_idx = c / group,
   * which compressed-tensors calls "weight" (no g_idx saved) */
  json_object_set_new(a, "actorder", !m->act_order ? json_null()
                                     : m->static_groups ? json_string("weight")
                                                        : json_string("group"));
  return a;
}

static json_t *ct_quant_config(const qz_ckpt_linear_meta *m, const qz_export_counts *n) {
  if (qz_ct_is_fp8(m)) return qz_ct_fp8_quant_config(m, n);
  const int act_bits = n->act_bits;
  int packed = !is_int_quantized(m);
  json_t *g = json_object();
  json_t *targets = json_array();
  json_array_append_new(targets, json_string("Linear"));
  json_object_set_new(g, "targets", targets);
  json_object_set_new(g, "weights", packed ? packed_qargs(m) : qargs(m->bits, "channel", 0));
  json_object_set_new(g, "input_activations",
                      act_bits ? qargs(act_bits, "token", 1) : json_null());
  json_object_set_new(g, "output_activations", json_null());
  json_t *groups = json_object();
  json_object_set_new(groups, "group_0", g);
  json_t *q = json_object();
  json_object_set_new(q, "quant_method", json_string("compressed-tensors"));
  json_object_set_new(q, "format", json_string(packed ? "pack-quantized" : "int-quantized"));
  json_object_set_new(q, "quantization_status", json_string("compressed"));
  json_object_set_new(q, "config_groups", groups);
  json_t *ign = json_array();
  json_array_append_new(ign, json_string("lm_head"));
  json_object_set_new(q, "ignore", ign);
  json_object_set_new(q, "kv_cache_scheme", json_null());
  json_object_set_new(q, "global_compression_ratio", json_null());
  json_object_set_new(q, "provider", json_string("mpiquant"));
  return q;
}

/* Pack `n` values of `bits` bits (each < 2^bits), `stride` apart, into
 * ceil(n / f) little-endian words, value k of a word at bit k * bits. */
static void pack_words(const float *fv, const uint8_t *cv, int64_t n, int64_t stride,
                       int bits, uint32_t *words) {
  const int f = 32 / bits;
  for (int64_t w = 0; w * f < n; w++) {
    uint32_t acc = 0;
    for (int k = 0; k < f && w * f + k < n; k++) {
      int64_t i = (w * f + k) * stride;
      uint32_t v = cv ? cv[i] : (uint32_t)fv[i];
      acc |= v << (k * bits);
    }
    words[w] = acc;
  }
}

/* Rank 0: check that the rows fit the pack-quantized layout (integer zero
 * points in range; symmetric: 2^(bits-1); without act-order the trivial
 * g_idx) and add the linear's tensors. */
static int packed_tensors(qz_st_shards *ss, int layer, const char *mod,
                          const qz_ckpt_linear_meta *m, int64_t out, int64_t in,
                          int64_t ng, const qz_export_rows *R) {
  const int bits = m->bits, f = 32 / bits;
  const float zsym = (float)(1 << (bits - 1)), zmax = (float)((1 << bits) - 1);
  const int64_t G = m->group_size > 0 ? m->group_size : in;
  for (int64_t i = 0; i < out * ng; i++) {
    float z = R->zeros[i];
    QZ_CHECK(m->sym ? z == zsym : (z >= 0 && z <= zmax && z == (float)(int64_t)z),
             QZ_ERR_FORMAT,
             "model.layers.%d.%s: row %lld group %lld has zero point %g; the "
             "compressed-tensors pack-quantized layout needs %s", layer, mod,
             (long long)(i / ng), (long long)(i % ng), (double)z,
             m->sym ? "2^(bits-1) for a symmetric checkpoint" : "an integer in [0, 2^bits - 1]");
  }
  int trivial = 1;
  for (int64_t c = 0; c < in; c++) trivial &= R->g_idx[c] == (int32_t)(c / G);
  QZ_CHECK(trivial || (m->act_order && !m->static_groups), QZ_ERR_FORMAT,
           "model.layers.%d.%s: g_idx is not column / group although the checkpoint "
           "was quantized without act-order", layer, mod);
  char name[256];
  int st = QZ_OK;
  int64_t wcols = (in + f - 1) / f, zrows = (out + f - 1) / f;
  uint32_t *wp = NULL, *zp = NULL;
  QZ_CALL(qz_alloc((size_t)(out * wcols), 4, "packed weights", &wp));
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(out * in))
  for (int64_t o = 0; o < out; o++) pack_words(NULL, R->codes + o * in, in, 1, bits, wp + o * wcols);
  int64_t shp[2] = {out, wcols};
  snprintf(name, sizeof name, "model.layers.%d.%s.weight_packed", layer, mod);
  st = qz_st_shards_add(ss, name, QZ_DT_I32, 2, shp, wp, out * wcols * 4);
  shp[1] = ng;
  snprintf(name, sizeof name, "model.layers.%d.%s.weight_scale", layer, mod);
  if (st == QZ_OK) st = qz_st_shards_add(ss, name, QZ_DT_F32, 2, shp, R->scales, out * ng * 4);
  if (st == QZ_OK && !m->sym) {
    st = qz_alloc((size_t)(zrows * ng), 4, "packed zero points", &zp);
    /* column g of zeros [out, ng] packed along the output dim -> [zrows, ng] */
    uint32_t *col = NULL;
    if (st == QZ_OK) st = qz_alloc((size_t)zrows, 4, "zero point column", &col);
    for (int64_t g = 0; st == QZ_OK && g < ng; g++) {
      pack_words(R->zeros + g, NULL, out, ng, bits, col);
      for (int64_t r = 0; r < zrows; r++) zp[r * ng + g] = col[r];
    }
    qz_free(&col);
    shp[0] = zrows;
    snprintf(name, sizeof name, "model.layers.%d.%s.weight_zero_point", layer, mod);
    if (st == QZ_OK) st = qz_st_shards_add(ss, name, QZ_DT_I32, 2, shp, zp, zrows * ng * 4);
  }
  if (st == QZ_OK && m->act_order && !m->static_groups) {
    snprintf(name, sizeof name, "model.layers.%d.%s.weight_g_idx", layer, mod);
    st = qz_st_shards_add(ss, name, QZ_DT_I32, 1, &in, R->g_idx, in * 4);
  }
  if (st == QZ_OK) {
    int64_t two = 2, wshape[2] = {out, in};
    snprintf(name, sizeof name, "model.layers.%d.%s.weight_shape", layer, mod);
    st = qz_st_shards_add(ss, name, QZ_DT_I64, 1, &two, wshape, 16);
  }
  qz_free(&wp);
  qz_free(&zp);
  return st;
}

static int ct_linear(qz_ckpt *ck, int rank, qz_st_shards *ss, int layer,
                     const char *mod, qz_ckpt_linear_meta *meta_out,
                     qz_export_counts *n) {
  int st = QZ_OK;
  int64_t out = 0, in = 0, ng = 0;
  qz_ckpt_linear_meta m;
  qz_export_rows R = {0};
  QZ_CALL_DONE(qz_ckpt_linear_info(ck, layer, mod, &out, &in, &ng, &m));
  if (qz_ct_is_fp8(&m)) { /* float-quantized */
    *meta_out = m;
    return qz_ct_fp8_linear(ck, rank, ss, layer, mod, &m, out, in, ng, n);
  }
  const int packed = !is_int_quantized(&m);
  if (packed) {
    QZ_CHECK_DONE(m.bits >= 2 && m.bits <= 8, QZ_ERR_UNSUPPORTED,
                  "model.layers.%d.%s: compressed-tensors holds 2- to 8-bit integer "
                  "weights; this linear is %d-bit (method '%s')", layer, mod, m.bits, m.method);
    QZ_CHECK_DONE(n->act_bits == 0, QZ_ERR_UNSUPPORTED,
                  "model.layers.%d.%s: the checkpoint expects int%d activations with %d-bit "
                  "%s weights; compressed-tensors has int-quantized W8A8 (8-bit symmetric "
                  "per-channel) and weight-only pack-quantized, nothing between",
                  layer, mod, n->act_bits, m.bits, m.sym ? "symmetric" : "asymmetric");
    QZ_CHECK_DONE(m.group_size <= 0 || in % m.group_size == 0, QZ_ERR_UNSUPPORTED,
                  "model.layers.%d.%s: in_features %lld is not a multiple of the group "
                  "size %d; compressed-tensors pack-quantized (and vLLM's kernels) need "
                  "whole groups (quantize with a group size that divides it, or --group -1)",
                  layer, mod, (long long)in, m.group_size);
  }
  QZ_CALL_DONE(qz_export_read_rows(ck, rank, layer, mod, "compressed-tensors", out, in, ng,
                                   &R));
  *meta_out = m;
  if (rank == 0 && packed) st = packed_tensors(ss, layer, mod, &m, out, in, ng, &R);
  if (rank == 0 && !packed) {
    int64_t badz = -1;
    for (int64_t o = 0; o < out && badz < 0; o++)
      if (R.zeros[o] != 128.0f) badz = o;
    if (badz >= 0)
      st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                        "model.layers.%d.%s: row %lld has zero point %g; a "
                        "symmetric 8-bit checkpoint has 128 everywhere",
                        layer, mod, (long long)badz, (double)R.zeros[badz]);
    if (st == QZ_OK) {
      /* code - 128 as int8, in place: flipping the top bit of the u8 code */
      for (int64_t k = 0; k < out * in; k++) R.codes[k] ^= 0x80u;
      char name[256];
      int64_t shp[2] = {out, in};
      snprintf(name, sizeof name, "model.layers.%d.%s.weight", layer, mod);
      st = qz_st_shards_add(ss, name, QZ_DT_I8, 2, shp, R.codes, out * in);
      snprintf(name, sizeof name, "model.layers.%d.%s.weight_scale", layer, mod);
      shp[1] = 1;
      if (st == QZ_OK) st = qz_st_shards_add(ss, name, QZ_DT_F32, 2, shp, R.scales, out * 4);
    }
  }
done:
  qz_export_rows_free(&R);
  return st;
}

static void ct_report(const qz_ckpt_linear_meta *first, const qz_export_counts *n) {
  if (qz_ct_is_fp8(first))
    qz_ct_fp8_report(first, n);
  else if (!is_int_quantized(first))
    qz_info("export: W%dA16 (%s) pack-quantized: %s, %s%s", first->bits, first->method,
            first->group_size > 0 ? "group-wise scales" : "per-channel scales",
            first->sym ? "symmetric" : "with zero points",
            first->act_order ? (first->static_groups ? ", act-order (static groups)"
                                                     : ", act-order (g_idx)") : "");
  else if (n->act_bits)
    qz_info("export: W8A%d (%s): int8 per-channel weights, dynamic per-token "
            "int%d activations", n->act_bits, first->method, n->act_bits);
  else
    qz_info("export: W8A16 (%s): the checkpoint expects no activation "
            "quantization, so input_activations is null", first->method);
}

static const char *const k_ct_grids[] = {"fp8_e4m3", NULL}; /* float-quantized */

const qz_export_format qz_export_format_ct = {
    .name = "compressed-tensors",
    .title = "compressed-tensors",
    .linear = ct_linear,
    .quant_config = ct_quant_config,
    .quantize_config_json = 0,
    .report = ct_report,
    .grids = k_ct_grids,
};
