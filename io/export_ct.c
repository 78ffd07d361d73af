/* Checkpoint -> compressed-tensors "int-quantized" (the W8A8 layout vLLM's
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
 * bit-identical to the checkpoint's: scale * (code - 128) in f32. */
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

static json_t *ct_quant_config(const qz_ckpt_linear_meta *m, int act_bits) {
  json_t *g = json_object();
  json_t *targets = json_array();
  json_array_append_new(targets, json_string("Linear"));
  json_object_set_new(g, "targets", targets);
  json_object_set_new(g, "weights", qargs(m->bits, "channel", 0));
  json_object_set_new(g, "input_activations",
                      act_bits ? qargs(act_bits, "token", 1) : json_null());
  json_object_set_new(g, "output_activations", json_null());
  json_t *groups = json_object();
  json_object_set_new(groups, "group_0", g);
  json_t *q = json_object();
  json_object_set_new(q, "quant_method", json_string("compressed-tensors"));
  json_object_set_new(q, "format", json_string("int-quantized"));
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

static int ct_linear(qz_ckpt *ck, int rank, qz_st_shards *ss, int layer,
                     const char *mod, qz_ckpt_linear_meta *meta_out,
                     qz_export_counts *n) {
  int st = QZ_OK;
  int64_t out = 0, in = 0, ng = 0;
  qz_ckpt_linear_meta m;
  qz_export_rows R = {0};
  QZ_CALL_DONE(qz_ckpt_linear_info(ck, layer, mod, &out, &in, &ng, &m));
  QZ_CHECK_DONE(m.bits == 8 && m.sym && m.group_size == -1 && ng == 1,
                QZ_ERR_UNSUPPORTED,
                "model.layers.%d.%s: the compressed-tensors int-quantized export "
                "holds 8-bit symmetric per-channel weights (SmoothQuant W8A8, or "
                "--bits 8 --group -1 --sym); this linear is %d-bit %s, group %d "
                "(method '%s')",
                layer, mod, m.bits, m.sym ? "sym" : "asym", m.group_size, m.method);
  QZ_CALL_DONE(qz_export_read_rows(ck, rank, layer, mod, "compressed-tensors", out, in, ng,
                                   &R));
  *meta_out = m;
  if (rank == 0) {
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
  (void)n;
done:
  qz_export_rows_free(&R);
  return st;
}

static void ct_report(const qz_ckpt_linear_meta *first, const qz_export_counts *n) {
  if (n->act_bits)
    qz_info("export: W8A%d (%s): int8 per-channel weights, dynamic per-token "
            "int%d activations", n->act_bits, first->method, n->act_bits);
  else
    qz_info("export: W8A16 (%s): the checkpoint expects no activation "
            "quantization, so input_activations is null", first->method);
}

const qz_export_format qz_export_format_ct = {
    .name = "compressed-tensors",
    .title = "compressed-tensors",
    .linear = ct_linear,
    .quant_config = ct_quant_config,
    .quantize_config_json = 0,
    .report = ct_report,
};
