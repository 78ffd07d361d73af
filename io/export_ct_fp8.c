/* Checkpoint -> compressed-tensors "float-quantized": FP8 E4M3 checkpoints
 * (--method fp8) in the layout vLLM's CompressedTensorsW8A8Fp8 /
 * CompressedTensorsW8A16Fp8 schemes and transformers' compressed-tensors
 * integration load.
 *
 * Layout facts (compressed-tensors' float-quantized = naive quantization
 * compressor and its QuantizationArgs, read from its source; none of it is
 * copied here):
 *   {linear}.weight        F8_E4M3 [out, in]  w_q, w = w_q * scale
 *   {linear}.weight_scale  F32 [out, 1] (strategy "channel") or
 *                          [ceil(out/B), ceil(in/B)] (strategy "block",
 *                          block_structure [B, B])
 *   {linear}.input_scale   F32 [1] (static per-tensor activations only)
 *   no zero points (symmetric).
 * Our checkpoint's codes are the E4M3 bit patterns and its scales are the
 * same f32 numbers (block scales replicated over each block's rows), so the
 * export dequantizes to exactly the checkpoint's weights.
 * quantization_config: format "float-quantized", one group targeting
 * "Linear": weights {num_bits 8, type float, symmetric, strategy channel |
 * block, block_structure, dynamic false, observer minmax}; input_activations
 * {num_bits 8, type float, strategy token, dynamic true} (FP8_DYNAMIC),
 * {strategy group, group_size B, dynamic true} (FP8_BLOCK), {strategy
 * tensor, dynamic false, observer minmax} (FP8) or null (W8A16-FP8). */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export_impl.h"
#include "mpiquant/ckpt.h"
#include "mpiquant/error.h"
#include "mpiquant/fp8.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"

int qz_ct_is_fp8(const qz_ckpt_linear_meta *m) { return strcmp(m->grid, "fp8_e4m3") == 0; }

/* Input group of a linear in the aux scales' order (q/k/v, o, gate/up, down). */
static int input_group(const char *mod) {
  if (strstr(mod, "o_proj")) return 1;
  if (strstr(mod, "gate_proj") || strstr(mod, "up_proj")) return 2;
  if (strstr(mod, "down_proj")) return 3;
  return 0;
}

/* The scheme the checkpoint's options record. Not collective. */
static int fp8_scheme(qz_ckpt *ck, qz_export_counts *n) {
  json_t *j = json_loads(qz_ckpt_options_json(ck), 0, NULL);
  const char *act = json_string_value(json_object_get(j, QZ_FP8_OPT_ACT));
  json_t *b = json_object_get(j, QZ_FP8_OPT_BLOCK);
  int ok = act && (!strcmp(act, "dynamic") || !strcmp(act, "static") || !strcmp(act, "none"));
  if (ok) snprintf(n->fp8_act, sizeof n->fp8_act, "%s", act);
  n->fp8_block = json_is_integer(b) ? (int)json_integer_value(b) : 0;
  json_decref(j);
  QZ_CHECK(ok, QZ_ERR_FORMAT, "checkpoint %s has FP8 linears but its options record no "
           "activation scheme (options.%s must be dynamic, static or none)", qz_ckpt_dir(ck),
           QZ_FP8_OPT_ACT);
  return QZ_OK;
}

/* Rank 0: weight_scale of the format from the checkpoint's scales [out, ng]
 * (block: one per block, every row of a block row must agree). */
static int block_scales(int layer, const char *mod, int64_t out, int64_t ng, int64_t B,
                        const float *sc, float *wsc /* [ceil(out/B), ng] */) {
  for (int64_t r = 0; r < out; r++)
    for (int64_t g = 0; g < ng; g++) {
      float want = sc[(r / B) * B * ng + g];
      QZ_CHECK(sc[r * ng + g] == want, QZ_ERR_FORMAT,
               "model.layers.%d.%s: row %lld group %lld has scale %g, row %lld of its "
               "%lldx%lld block %g: not a block-scaled checkpoint", layer, mod,
               (long long)r, (long long)g, (double)sc[r * ng + g], (long long)((r / B) * B),
               (long long)B, (long long)B, (double)want);
      if (r % B == 0) wsc[(r / B) * ng + g] = want;
    }
  return QZ_OK;
}

static int fp8_tensors(qz_st_shards *ss, int layer, const char *mod, int64_t out, int64_t in,
                       int64_t ng, int64_t B, const qz_export_rows *R, const float *in_scale) {
  for (int64_t i = 0; i < out * ng; i++)
    QZ_CHECK(R->zeros[i] == 0.0f, QZ_ERR_FORMAT, "model.layers.%d.%s: row %lld has zero "
             "point %g; FP8 weights are symmetric (zero 0)", layer, mod, (long long)(i / ng),
             (double)R->zeros[i]);
  char name[256];
  int64_t shp[2] = {out, in};
  snprintf(name, sizeof name, "model.layers.%d.%s.weight", layer, mod);
  QZ_CALL(qz_st_shards_add(ss, name, QZ_DT_F8_E4M3, 2, shp, R->codes, out * in));
  snprintf(name, sizeof name, "model.layers.%d.%s.weight_scale", layer, mod);
  if (B <= 0) {
    shp[1] = 1;
    QZ_CALL(qz_st_shards_add(ss, name, QZ_DT_F32, 2, shp, R->scales, out * 4));
  } else {
    const int64_t nbr = (out + B - 1) / B;
    float *wsc = NULL;
    QZ_CALL(qz_alloc((size_t)(nbr * ng), sizeof(float), "block scales", &wsc));
    int st = block_scales(layer, mod, out, ng, B, R->scales, wsc);
    shp[0] = nbr;
    shp[1] = ng;
    if (st == QZ_OK) st = qz_st_shards_add(ss, name, QZ_DT_F32, 2, shp, wsc, nbr * ng * 4);
    qz_free(&wsc);
    QZ_CALL(st);
  }
  if (in_scale) {
    int64_t one = 1;
    snprintf(name, sizeof name, "model.layers.%d.%s.input_scale", layer, mod);
    QZ_CALL(qz_st_shards_add(ss, name, QZ_DT_F32, 1, &one, in_scale, 4));
  }
  return QZ_OK;
}

/* Collective on the checkpoint's communicator (aux and rows reads). */
int qz_ct_fp8_linear(qz_ckpt *ck, int rank, qz_st_shards *ss, int layer, const char *mod,
                     const qz_ckpt_linear_meta *m, int64_t out, int64_t in, int64_t ng,
                     qz_export_counts *n) {
  int st = QZ_OK;
  qz_export_rows R = {0};
  float sc[QZ_FP8_AUX_NGROUPS];
  QZ_CALL(fp8_scheme(ck, n));
  const int64_t B = n->fp8_block;
  QZ_CHECK(m->bits == 8 && m->sym && m->group_size == (B > 0 ? B : -1) &&
               ng == (B > 0 ? (in + B - 1) / B : 1),
           QZ_ERR_FORMAT, "model.layers.%d.%s: FP8 linear with bits %d, group %d, %lld "
           "groups; options.%s = %lld expects 8-bit symmetric %s", layer, mod, m->bits,
           m->group_size, (long long)ng, QZ_FP8_OPT_BLOCK, (long long)B,
           B > 0 ? "block scales" : "per-channel scales");
  const int stat = strcmp(n->fp8_act, "static") == 0;
  if (stat) {
    int found = 0;
    QZ_CALL(qz_ckpt_read_aux(ck, layer, QZ_FP8_AUX_INPUT_SCALE, QZ_FP8_AUX_NGROUPS, 1, sc,
                             &found));
    QZ_CHECK(found, QZ_ERR_FORMAT, "checkpoint %s: block %d has no /aux/%d/%s (static FP8 "
             "activation scales)", qz_ckpt_dir(ck), layer, layer, QZ_FP8_AUX_INPUT_SCALE);
  }
  QZ_CALL_DONE(qz_export_read_rows(ck, rank, layer, mod, "compressed-tensors", out, in, ng,
                                   &R));
  if (B > 0 && (out % B || in % B)) n->fp8_partial++;
  if (rank == 0)
    st = fp8_tensors(ss, layer, mod, out, in, ng, B, &R, stat ? &sc[input_group(mod)] : NULL);
done:
  qz_export_rows_free(&R);
  return st;
}

static json_t *fargs(const char *strategy, int dynamic) {
  json_t *a = json_object();
  json_object_set_new(a, "num_bits", json_integer(8));
  json_object_set_new(a, "type", json_string("float"));
  json_object_set_new(a, "symmetric", json_true());
  json_object_set_new(a, "group_size", json_null());
  json_object_set_new(a, "strategy", json_string(strategy));
  json_object_set_new(a, "block_structure", json_null());
  json_object_set_new(a, "dynamic", json_boolean(dynamic));
  json_object_set_new(a, "actorder", json_null());
  json_object_set_new(a, "observer", dynamic ? json_null() : json_string("minmax"));
  json_object_set_new(a, "observer_kwargs", json_object());
  return a;
}

json_t *qz_ct_fp8_quant_config(const qz_ckpt_linear_meta *first, const qz_export_counts *n) {
  (void)first;
  const int B = n->fp8_block;
  json_t *w = fargs(B > 0 ? "block" : "channel", 0);
  if (B > 0) json_object_set_new(w, "block_structure", json_pack("[i,i]", B, B));
  json_t *in = json_null();
  if (!strcmp(n->fp8_act, "static")) {
    in = fargs("tensor", 0);
  } else if (!strcmp(n->fp8_act, "dynamic")) {
    in = fargs(B > 0 ? "group" : "token", 1);
    if (B > 0) json_object_set_new(in, "group_size", json_integer(B));
  }
  json_t *g = json_object();
  json_object_set_new(g, "targets", json_pack("[s]", "Linear"));
  json_object_set_new(g, "weights", w);
  json_object_set_new(g, "input_activations", in);
  json_object_set_new(g, "output_activations", json_null());
  json_t *q = json_object();
  json_object_set_new(q, "quant_method", json_string("compressed-tensors"));
  json_object_set_new(q, "format", json_string("float-quantized"));
  json_object_set_new(q, "quantization_status", json_string("compressed"));
  json_object_set_new(q, "config_groups", json_pack("{s:o}", "group_0", g));
  json_object_set_new(q, "ignore", json_pack("[s]", "lm_head"));
  json_object_set_new(q, "kv_cache_scheme", json_null());
  json_object_set_new(q, "global_compression_ratio", json_null());
  json_object_set_new(q, "provider", json_string("mpiquant"));
  return q;
}

void qz_ct_fp8_report(const qz_ckpt_linear_meta *first, const qz_export_counts *n) {
  const int B = n->fp8_block;
  const char *act = !strcmp(n->fp8_act, "static")    ? "static per-tensor FP8 activations (FP8)"
                    : !strcmp(n->fp8_act, "none")    ? "no activation quantization (W8A16-FP8)"
                    : B > 0 ? "dynamic per-token-group FP8 activations (FP8_BLOCK)"
                            : "dynamic per-token FP8 activations (FP8_DYNAMIC)";
  if (B > 0)
    qz_info("export: FP8 (%s) float-quantized: %dx%d block weight scales, %s", first->method, B,
            B, act);
  else
    qz_info("export: FP8 (%s) float-quantized: per-channel weight scales, %s", first->method,
            act);
  if (n->fp8_partial)
    qz_warn("export: %lld linears have a shape that is not a multiple of the %dx%d block "
            "(partial edge blocks, ceil(out/%d) x ceil(in/%d) scales, as DeepSeek-V3 stores "
            "them); compressed-tensors' own decompressor needs whole blocks",
            (long long)n->fp8_partial, B, B, B, B);
}
