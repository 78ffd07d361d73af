/* config.json of a Hugging Face Llama-family causal LM, and the tensor names
 * and shapes it implies.  Defaults follow the transformers config classes
 * (LlamaConfig, MistralConfig, Qwen2Config) for keys a file may omit. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpiquant/config.h"
#include "mpiquant/error.h"
#include "mpiquant/file.h"
#include "mpiquant/log.h"

/* The architectures read, with what each implies beyond the Llama block
 * (transformers' modeling code of each family): q/k/v biases always on
 * (Qwen2, Qwen2-MoE), per-head q/k RMSNorm (Qwen3, Qwen3-MoE), MoE kind. */
static const struct {
  const char *arch, *model_type;
  int qkv_bias, qk_norm;
  qz_moe_kind moe;
} arch_table[] = {
    {"LlamaForCausalLM", "llama", 0, 0, QZ_MOE_NONE},
    {"MistralForCausalLM", "mistral", 0, 0, QZ_MOE_NONE},
    {"Qwen2ForCausalLM", "qwen2", 1, 0, QZ_MOE_NONE},
    {"Qwen3ForCausalLM", "qwen3", 0, 1, QZ_MOE_NONE},
    {"MixtralForCausalLM", "mixtral", 0, 0, QZ_MOE_MIXTRAL},
    {"Qwen3MoeForCausalLM", "qwen3_moe", 0, 1, QZ_MOE_QWEN3},
    {"Qwen2MoeForCausalLM", "qwen2_moe", 1, 0, QZ_MOE_QWEN2},
};
#define N_ARCH (int)(sizeof arch_table / sizeof *arch_table)

/* Integer key: absent (or null) -> *out = dflt unless required. */
static int get_int(json_t *root, const char *origin, const char *key,
                   int required, int64_t dflt, int64_t *out) {
  json_t *v = json_object_get(root, key);
  if (!v || json_is_null(v)) {
    QZ_CHECK(!required, QZ_ERR_FORMAT, "%s: required key '%s' is missing",
             origin, key);
    *out = dflt;
    return QZ_OK;
  }
  if (json_is_real(v)) {
    double d = json_real_value(v);
    QZ_CHECK(d == (double)(int64_t)d, QZ_ERR_FORMAT,
             "%s: '%s' must be an integer, found %g", origin, key, d);
    *out = (int64_t)d;
    return QZ_OK;
  }
  QZ_CHECK(json_is_integer(v), QZ_ERR_FORMAT,
           "%s: '%s' must be an integer", origin, key);
  *out = (int64_t)json_integer_value(v);
  return QZ_OK;
}

static int get_pos(json_t *root, const char *origin, const char *key,
                   int required, int64_t dflt, int64_t *out) {
  QZ_CALL(get_int(root, origin, key, required, dflt, out));
  QZ_CHECK(*out > 0, QZ_ERR_FORMAT, "%s: '%s' must be positive, found %lld",
           origin, key, (long long)*out);
  return QZ_OK;
}

static int get_num(json_t *root, const char *origin, const char *key,
                   double dflt, double *out) {
  json_t *v = json_object_get(root, key);
  if (!v || json_is_null(v)) {
    *out = dflt;
    return QZ_OK;
  }
  QZ_CHECK(json_is_number(v), QZ_ERR_FORMAT, "%s: '%s' must be a number",
           origin, key);
  *out = json_number_value(v);
  return QZ_OK;
}

static int get_bool(json_t *root, const char *origin, const char *key,
                    int dflt, int *out) {
  json_t *v = json_object_get(root, key);
  if (!v || json_is_null(v)) {
    *out = dflt;
    return QZ_OK;
  }
  QZ_CHECK(json_is_boolean(v), QZ_ERR_FORMAT, "%s: '%s' must be true or false",
           origin, key);
  *out = json_is_true(v);
  return QZ_OK;
}

/* bos/eos: an integer, a list (first entry used), or absent (-1). */
static int get_token_id(json_t *root, const char *origin, const char *key,
                        int64_t *out) {
  json_t *v = json_object_get(root, key);
  *out = -1;
  if (v && json_is_array(v)) v = json_array_get(v, 0);
  if (!v || json_is_null(v)) return QZ_OK;
  QZ_CHECK(json_is_integer(v), QZ_ERR_FORMAT,
           "%s: '%s' must be an integer or a list of integers", origin, key);
  *out = (int64_t)json_integer_value(v);
  return QZ_OK;
}

static int parse_rope_scaling(json_t *root, const char *origin,
                              qz_model_config *c) {
  json_t *rs = json_object_get(root, "rope_scaling");
  c->rope_scaling.type = QZ_ROPE_DEFAULT;
  c->rope_scaling.factor = 1.0;
  if (!rs || json_is_null(rs)) return QZ_OK;
  QZ_CHECK(json_is_object(rs), QZ_ERR_FORMAT,
           "%s: 'rope_scaling' must be null or an object", origin);
  json_t *t = json_object_get(rs, "rope_type");
  if (!t) t = json_object_get(rs, "type");
  QZ_CHECK(json_is_string(t), QZ_ERR_FORMAT,
           "%s: 'rope_scaling' has no 'rope_type' (or 'type') string", origin);
  const char *type = json_string_value(t);
  if (strcmp(type, "default") == 0) return QZ_OK;
  json_t *f = json_object_get(rs, "factor");
  QZ_CHECK(json_is_number(f) && json_number_value(f) > 0, QZ_ERR_FORMAT,
           "%s: rope_scaling '%s' needs a positive 'factor'", origin, type);
  c->rope_scaling.factor = json_number_value(f);
  if (strcmp(type, "linear") == 0) {
    c->rope_scaling.type = QZ_ROPE_LINEAR;
    return QZ_OK;
  }
  QZ_CHECK(strcmp(type, "llama3") == 0, QZ_ERR_UNSUPPORTED,
           "%s: rope_scaling type '%s' is not supported (supported: null, "
           "default, linear, llama3)", origin, type);
  c->rope_scaling.type = QZ_ROPE_LLAMA3;
  QZ_CALL(get_num(rs, origin, "low_freq_factor", -1,
                  &c->rope_scaling.low_freq_factor));
  QZ_CALL(get_num(rs, origin, "high_freq_factor", -1,
                  &c->rope_scaling.high_freq_factor));
  QZ_CHECK(c->rope_scaling.low_freq_factor > 0 &&
               c->rope_scaling.high_freq_factor >
                   c->rope_scaling.low_freq_factor,
           QZ_ERR_FORMAT, "%s: rope_scaling llama3 needs 0 < low_freq_factor < "
           "high_freq_factor, found %g and %g", origin,
           c->rope_scaling.low_freq_factor, c->rope_scaling.high_freq_factor);
  QZ_CALL(get_pos(rs, origin, "original_max_position_embeddings", 1, 0,
                  &c->rope_scaling.original_max_position_embeddings));
  return QZ_OK;
}

static int arch_from_model_type(const char *mt, char *arch, size_t len) {
  for (int i = 0; i < N_ARCH; i++)
    if (strcmp(mt, arch_table[i].model_type) == 0) {
      snprintf(arch, len, "%s", arch_table[i].arch);
      return 1;
    }
  return 0;
}

/* One quantization args object (weights or input_activations) of a
 * compressed-tensors config group, checked against what mpiquant reads:
 * int, symmetric, `bits`-wide (0 = any <= 8 written to *bits), strategy
 * `strategy`, dynamic `dynamic`. */
static int ct_args(json_t *a, const char *origin, const char *where, const char *strategy,
                   int dynamic, int *bits) {
  json_t *nb = json_object_get(a, "num_bits"), *ty = json_object_get(a, "type"),
         *sy = json_object_get(a, "symmetric"), *str = json_object_get(a, "strategy"),
         *dy = json_object_get(a, "dynamic");
  int ok = json_is_integer(nb) && json_is_string(ty) && !strcmp(json_string_value(ty), "int") &&
           json_is_true(sy) && json_is_string(str) &&
           !strcmp(json_string_value(str), strategy) &&
           (dynamic ? json_is_true(dy) : (!dy || json_is_false(dy)));
  int b = ok ? (int)json_integer_value(nb) : 0;
  ok = ok && (*bits ? b == *bits : b >= 2 && b <= 8);
  QZ_CHECK(ok, QZ_ERR_UNSUPPORTED,
           "%s: quantization_config %s must be %d-bit int, symmetric, strategy '%s'%s "
           "(compressed-tensors W8A8/W8A16 as mpiquant export writes it)",
           origin, where, *bits ? *bits : 8, strategy, dynamic ? ", dynamic" : ", static");
  *bits = b;
  return QZ_OK;
}

static const char *jstr(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

static int streq(const char *a, const char *b) { return a && !strcmp(a, b); }

/* A [rows, cols] pair of positive integers (block_structure, weight_block_size). */
static int block_pair(json_t *v, const char *origin, const char *key, int64_t *blk) {
  int ok = json_is_array(v) && json_array_size(v) == 2;
  for (int k = 0; ok && k < 2; k++) {
    json_t *e = json_array_get(v, (size_t)k);
    ok = json_is_integer(e) && json_integer_value(e) > 0;
    if (ok) blk[k] = json_integer_value(e);
  }
  QZ_CHECK(ok, QZ_ERR_FORMAT, "%s: quantization_config %s must be [rows, cols] of positive "
           "integers", origin, key);
  return QZ_OK;
}

/* pack-quantized weights: int, 2..8 bits, group or channel, any symmetry,
 * not dynamic; weight-only (W4A16 / W8A16). */
static int ct_packed_group(json_t *g, const char *origin, int *bits) {
  json_t *w = json_object_get(g, "weights"), *ia = json_object_get(g, "input_activations");
  json_t *nb = json_object_get(w, "num_bits");
  const char *str = jstr(w, "strategy");
  int b = json_is_integer(nb) ? (int)json_integer_value(nb) : 0;
  QZ_CHECK(streq(jstr(w, "type"), "int") && b >= 2 && b <= 8 &&
               (streq(str, "group") || streq(str, "channel")) &&
               !json_is_true(json_object_get(w, "dynamic")),
           QZ_ERR_UNSUPPORTED, "%s: pack-quantized weights must be 2..8-bit int with "
           "strategy 'group' or 'channel' (found %d-bit %s, strategy '%s')", origin, b,
           jstr(w, "type") ? jstr(w, "type") : "?", str ? str : "?");
  QZ_CHECK(!ia || json_is_null(ia), QZ_ERR_UNSUPPORTED,
           "%s: pack-quantized with input_activations is not supported (W4A16 / W8A16 "
           "are weight-only)", origin);
  QZ_CHECK(!*bits || *bits == b, QZ_ERR_UNSUPPORTED,
           "%s: pack-quantized config groups with different num_bits (%d, %d)", origin,
           *bits, b);
  *bits = b;
  return QZ_OK;
}

/* float-quantized: FP8 weights per tensor / channel / block; activations
 * none, dynamic per token or static per tensor (input_scale). */
static int ct_float_group(json_t *g, const char *origin, qz_model_config *c) {
  json_t *w = json_object_get(g, "weights"), *ia = json_object_get(g, "input_activations");
  json_t *nb = json_object_get(w, "num_bits");
  const char *str = jstr(w, "strategy");
  QZ_CHECK(streq(jstr(w, "type"), "float") && json_is_integer(nb) &&
               json_integer_value(nb) == 8 &&
               (streq(str, "tensor") || streq(str, "channel") || streq(str, "block")),
           QZ_ERR_UNSUPPORTED, "%s: float-quantized weights must be 8-bit float with "
           "strategy 'tensor', 'channel' or 'block' (found strategy '%s')", origin,
           str ? str : "?");
  if (streq(str, "block"))
    QZ_CALL(block_pair(json_object_get(w, "block_structure"), origin,
                       "weights.block_structure", c->fp8_block));
  int act = 0;
  if (ia && !json_is_null(ia)) {
    json_t *an = json_object_get(ia, "num_bits"), *gs = json_object_get(ia, "group_size");
    const char *as = jstr(ia, "strategy");
    int dyn = json_is_true(json_object_get(ia, "dynamic"));
    int grp = streq(as, "group") && dyn && json_is_integer(gs) && json_integer_value(gs) > 0;
    act = (streq(as, "token") && dyn) || grp ? 1 : streq(as, "tensor") && !dyn ? 2 : 0;
    QZ_CHECK(act && streq(jstr(ia, "type"), "float") && json_is_integer(an) &&
                 json_integer_value(an) == 8,
             QZ_ERR_UNSUPPORTED, "%s: float-quantized input_activations must be 8-bit "
             "float, dynamic per token (or per token and group), or static per tensor "
             "(found strategy '%s'%s)", origin, as ? as : "?", dyn ? ", dynamic" : "");
    c->fp8_act_group = grp ? json_integer_value(gs) : 0;
  }
  QZ_CHECK(!c->fp8 || c->fp8_act == act, QZ_ERR_UNSUPPORTED,
           "%s: config groups with different activation quantization", origin);
  c->fp8 = 1;
  c->fp8_act = act;
  return QZ_OK;
}

/* compressed-tensors: int-quantized (int8 per-channel weights, optional
 * dynamic per-token int activations), pack-quantized, float-quantized. */
static int parse_ct(json_t *q, const char *origin, qz_model_config *c) {
  const char *fs = jstr(q, "format");
  fs = fs ? fs : "?";
  int fmt = streq(fs, "int-quantized") ? 0 : streq(fs, "pack-quantized") ? 1
            : streq(fs, "float-quantized") ? 2 : -1;
  QZ_CHECK(fmt >= 0, QZ_ERR_UNSUPPORTED,
           "%s: compressed-tensors format '%s' is not supported (int-quantized, "
           "pack-quantized and float-quantized are read)", origin, fs);
  json_t *groups = json_object_get(q, "config_groups");
  QZ_CHECK(json_is_object(groups) && json_object_size(groups) > 0, QZ_ERR_FORMAT,
           "%s: quantization_config.config_groups is missing", origin);
  const char *gk;
  json_t *g;
  int act = -1, bits = 0;
  json_object_foreach(groups, gk, g) {
    if (fmt == 1) {
      QZ_CALL(ct_packed_group(g, origin, &bits));
      continue;
    }
    if (fmt == 2) {
      QZ_CALL(ct_float_group(g, origin, c));
      continue;
    }
    int wb = 8, ab = 0;
    QZ_CALL(ct_args(json_object_get(g, "weights"), origin, "weights", "channel", 0, &wb));
    json_t *ia = json_object_get(g, "input_activations");
    if (ia && !json_is_null(ia))
      QZ_CALL(ct_args(ia, origin, "input_activations", "token", 1, &ab));
    QZ_CHECK(act < 0 || act == ab, QZ_ERR_UNSUPPORTED,
             "%s: config groups with different activation quantization", origin);
    act = ab;
  }
  if (fmt == 0) c->ct_int8 = 1, c->ct_act_bits = act;
  if (fmt == 1) c->ct_packed_bits = bits;
  return QZ_OK;
}

/* quant_method "fp8" (transformers' FP8 / DeepSeek-V3 config): e4m3
 * weights, optional weight_block_size, activation_scheme (default dynamic). */
static int parse_fp8(json_t *q, const char *origin, qz_model_config *c) {
  const char *fmt = jstr(q, "fmt");
  QZ_CHECK(!fmt || streq(fmt, "e4m3"), QZ_ERR_UNSUPPORTED,
           "%s: quantization_config.fmt '%s' is not supported (e4m3)", origin, fmt);
  json_t *b = json_object_get(q, "weight_block_size");
  if (b && !json_is_null(b))
    QZ_CALL(block_pair(b, origin, "weight_block_size", c->fp8_block));
  const char *as = jstr(q, "activation_scheme");
  QZ_CHECK(!as || streq(as, "dynamic") || streq(as, "static"), QZ_ERR_UNSUPPORTED,
           "%s: quantization_config.activation_scheme '%s' is not supported (dynamic, "
           "static)", origin, as);
  /* dynamic: per token, and per group of the weight block's columns with
   * block weights (DeepSeek-V3); static: per-tensor input_scale */
  c->fp8_act = streq(as, "static") ? 2 : 1;
  c->fp8_act_group = c->fp8_act == 1 ? c->fp8_block[1] : 0;
  c->fp8 = 1;
  return QZ_OK;
}

/* quantization_config: absent (plain model), GPTQ v1, compressed-tensors
 * (int-, pack-, float-quantized) or fp8; anything else is refused with what
 * is supported. */
static int parse_quant(json_t *root, const char *origin, qz_model_config *c) {
  json_t *q = json_object_get(root, "quantization_config");
  if (!q || json_is_null(q)) return QZ_OK;
  json_t *m = json_object_get(q, "quant_method");
  const char *ms = json_is_string(m) ? json_string_value(m) : "?";
  if (!strcmp(ms, "gptq")) {
    json_t *b = json_object_get(q, "bits"), *cf = json_object_get(q, "checkpoint_format");
    const char *cfs = json_is_string(cf) ? json_string_value(cf) : "gptq";
    QZ_CHECK(!strcmp(cfs, "gptq"), QZ_ERR_UNSUPPORTED,
             "%s: GPTQ checkpoint_format '%s' is not supported (only 'gptq', v1: "
             "zero points stored minus one)", origin, cfs);
    int bits = json_is_integer(b) ? (int)json_integer_value(b) : 0;
    QZ_CHECK(bits == 2 || bits == 3 || bits == 4 || bits == 8, QZ_ERR_UNSUPPORTED,
             "%s: quantization_config.bits must be 2, 3, 4 or 8 for GPTQ", origin);
    c->gptq_bits = bits;
    return QZ_OK;
  }
  if (!strcmp(ms, "fp8")) return parse_fp8(q, origin, c);
  QZ_CHECK(!strcmp(ms, "compressed-tensors"), QZ_ERR_UNSUPPORTED,
           "%s: quantization_config.quant_method is '%s'; mpiquant reads unquantized "
           "models, GPTQ v1, compressed-tensors (int-, pack-, float-quantized) and fp8 "
           "(evaluate a mpiquant checkpoint with eval --ckpt)", origin, ms);
  return parse_ct(q, origin, c);
}

/* Mixture-of-experts keys (transformers' MixtralConfig, Qwen2MoeConfig,
 * Qwen3MoeConfig defaults for omitted ones). */
static int parse_moe(json_t *root, const char *origin, qz_model_config *c) {
  if (c->moe == QZ_MOE_NONE) return QZ_OK;
  if (c->moe == QZ_MOE_MIXTRAL) {
    QZ_CALL(get_pos(root, origin, "num_local_experts", 0, 8, &c->num_experts));
    QZ_CALL(get_pos(root, origin, "num_experts_per_tok", 0, 2, &c->num_experts_per_tok));
    c->moe_intermediate_size = c->intermediate_size;
    c->norm_topk_prob = 1; /* MixtralSparseMoeBlock always renormalises */
    c->decoder_sparse_step = 1;
  } else {
    QZ_CALL(get_pos(root, origin, "num_experts", 0, 60, &c->num_experts));
    QZ_CALL(get_pos(root, origin, "num_experts_per_tok", 0, 4, &c->num_experts_per_tok));
    QZ_CALL(get_pos(root, origin, "moe_intermediate_size", 0, 1408,
                    &c->moe_intermediate_size));
    QZ_CALL(get_bool(root, origin, "norm_topk_prob", 0, &c->norm_topk_prob));
    QZ_CALL(get_pos(root, origin, "decoder_sparse_step", 0, 1, &c->decoder_sparse_step));
    if (c->moe == QZ_MOE_QWEN2)
      QZ_CALL(get_int(root, origin, "shared_expert_intermediate_size", 0, 5632,
                      &c->shared_expert_intermediate_size));
    QZ_CHECK(c->shared_expert_intermediate_size >= 0, QZ_ERR_FORMAT,
             "%s: 'shared_expert_intermediate_size' must be >= 0", origin);
    json_t *mo = json_object_get(root, "mlp_only_layers");
    QZ_CHECK(!mo || json_is_null(mo) || json_is_array(mo), QZ_ERR_FORMAT,
             "%s: 'mlp_only_layers' must be a list of layer indices", origin);
    for (size_t i = 0; mo && i < json_array_size(mo); i++) {
      json_t *v = json_array_get(mo, i);
      QZ_CHECK(json_is_integer(v) && json_integer_value(v) >= 0 &&
                   json_integer_value(v) < QZ_MAX_LAYERS_BITMAP,
               QZ_ERR_FORMAT, "%s: mlp_only_layers[%zu] must be a layer index in "
               "[0, %d)", origin, i, QZ_MAX_LAYERS_BITMAP);
      int64_t l = json_integer_value(v);
      c->mlp_only[l / 8] |= (unsigned char)(1u << (l % 8));
    }
  }
  QZ_CHECK(c->num_experts_per_tok <= c->num_experts, QZ_ERR_FORMAT,
           "%s: num_experts_per_tok %lld exceeds the %lld experts", origin,
           (long long)c->num_experts_per_tok, (long long)c->num_experts);
  return QZ_OK;
}

static int parse_root(json_t *root, const char *origin, qz_model_config *c) {
  QZ_CHECK(json_is_object(root), QZ_ERR_FORMAT,
           "%s: config must be a JSON object", origin);
  json_t *mt = json_object_get(root, "model_type");
  if (json_is_string(mt))
    snprintf(c->model_type, sizeof c->model_type, "%s", json_string_value(mt));
  json_t *ar = json_object_get(root, "architectures");
  if (json_is_array(ar) && json_array_size(ar) > 0) {
    json_t *a0 = json_array_get(ar, 0);
    QZ_CHECK(json_is_string(a0), QZ_ERR_FORMAT,
             "%s: 'architectures' must be a list of strings", origin);
    snprintf(c->architecture, sizeof c->architecture, "%s",
             json_string_value(a0));
  } else {
    QZ_CHECK(c->model_type[0] &&
                 arch_from_model_type(c->model_type, c->architecture,
                                      sizeof c->architecture),
             QZ_ERR_FORMAT,
             "%s: required key 'architectures' is missing (and model_type "
             "'%s' does not imply one)", origin, c->model_type);
  }
  int ai = -1;
  for (int i = 0; i < N_ARCH; i++)
    if (strcmp(c->architecture, arch_table[i].arch) == 0) ai = i;
  QZ_CHECK(ai >= 0, QZ_ERR_UNSUPPORTED,
           "%s: unsupported architecture '%s' (supported: LlamaForCausalLM, "
           "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MixtralForCausalLM, "
           "Qwen2MoeForCausalLM, Qwen3MoeForCausalLM)", origin, c->architecture);
  const int qwen_bias = arch_table[ai].qkv_bias;
  c->qk_norm = arch_table[ai].qk_norm;
  c->moe = arch_table[ai].moe;
  if (!c->model_type[0])
    snprintf(c->model_type, sizeof c->model_type, "%s", arch_table[ai].model_type);

  json_t *act = json_object_get(root, "hidden_act");
  QZ_CHECK(!act || json_is_null(act) ||
               (json_is_string(act) && strcmp(json_string_value(act), "silu") == 0),
           QZ_ERR_UNSUPPORTED, "%s: hidden_act '%s' is not supported (only silu)",
           origin, json_is_string(act) ? json_string_value(act) : "?");

  QZ_CALL(get_pos(root, origin, "hidden_size", 1, 0, &c->hidden_size));
  QZ_CALL(get_pos(root, origin, "intermediate_size", 1, 0, &c->intermediate_size));
  QZ_CALL(get_pos(root, origin, "num_hidden_layers", 1, 0, &c->num_hidden_layers));
  QZ_CALL(get_pos(root, origin, "num_attention_heads", 1, 0,
                  &c->num_attention_heads));
  QZ_CALL(get_pos(root, origin, "num_key_value_heads", 0, c->num_attention_heads,
                  &c->num_key_value_heads));
  QZ_CALL(get_pos(root, origin, "vocab_size", 1, 0, &c->vocab_size));
  QZ_CALL(get_pos(root, origin, "max_position_embeddings", 0, 2048,
                  &c->max_position_embeddings));
  QZ_CHECK(c->num_attention_heads % c->num_key_value_heads == 0, QZ_ERR_FORMAT,
           "%s: num_attention_heads %lld is not a multiple of "
           "num_key_value_heads %lld", origin, (long long)c->num_attention_heads,
           (long long)c->num_key_value_heads);
  json_t *hd = json_object_get(root, "head_dim");
  if (!hd || json_is_null(hd)) {
    QZ_CHECK(c->hidden_size % c->num_attention_heads == 0, QZ_ERR_FORMAT,
             "%s: no 'head_dim' and hidden_size %lld is not a multiple of "
             "num_attention_heads %lld", origin, (long long)c->hidden_size,
             (long long)c->num_attention_heads);
    c->head_dim = c->hidden_size / c->num_attention_heads;
  } else {
    QZ_CALL(get_pos(root, origin, "head_dim", 1, 0, &c->head_dim));
  }
  QZ_CHECK(c->head_dim % 2 == 0, QZ_ERR_FORMAT,
           "%s: head_dim %lld must be even for rotary embeddings", origin,
           (long long)c->head_dim);
  QZ_CALL(get_num(root, origin, "rms_norm_eps", 1e-6, &c->rms_norm_eps));
  QZ_CHECK(c->rms_norm_eps > 0 && c->rms_norm_eps < 1, QZ_ERR_FORMAT,
           "%s: rms_norm_eps %g out of range (0, 1)", origin, c->rms_norm_eps);
  QZ_CALL(get_num(root, origin, "rope_theta", 10000.0, &c->rope_theta));
  QZ_CHECK(c->rope_theta > 0, QZ_ERR_FORMAT, "%s: rope_theta must be positive",
           origin);
  QZ_CALL(parse_rope_scaling(root, origin, c));
  QZ_CALL(get_bool(root, origin, "tie_word_embeddings", 0,
                   &c->tie_word_embeddings));
  int attn_bias = 0;
  QZ_CALL(get_bool(root, origin, "attention_bias", 0, &attn_bias));
  QZ_CALL(get_bool(root, origin, "mlp_bias", 0, &c->mlp_bias));
  c->qkv_bias = qwen_bias ? 1 : attn_bias; /* Qwen2(-MoE): q/k/v always biased */
  c->o_bias = qwen_bias ? 0 : attn_bias;
  if (qwen_bias || c->qk_norm || c->moe) c->mlp_bias = 0; /* no mlp_bias key there */
  QZ_CALL(parse_moe(root, origin, c));
  json_t *dt = json_object_get(root, "torch_dtype");
  if (!json_is_string(dt)) dt = json_object_get(root, "dtype");
  snprintf(c->torch_dtype, sizeof c->torch_dtype, "%s",
           json_is_string(dt) ? json_string_value(dt) : "");
  QZ_CALL(get_token_id(root, origin, "bos_token_id", &c->bos_token_id));
  QZ_CALL(get_token_id(root, origin, "eos_token_id", &c->eos_token_id));
  QZ_CALL(parse_quant(root, origin, c));
  return QZ_OK;
}

int qz_config_parse(const char *json, size_t len, const char *origin,
                    qz_model_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  if (!origin) origin = "config.json";
  json_error_t e;
  json_t *root = json_loadb(json, len, 0, &e);
  QZ_CHECK(root, QZ_ERR_FORMAT, "%s: not valid JSON: %s (line %d column %d)",
           origin, e.text, e.line, e.column);
  int st = parse_root(root, origin, cfg);
  json_decref(root);
  if (st) qz_error_trace(__FILE__, __LINE__, __func__);
  return st;
}

int qz_config_load(const char *path, qz_model_config *cfg) {
  QZ_CHECK(path && *path, QZ_ERR_ARG, "qz_config_load: empty path");
  char buf[4096];
  struct stat sb;
  if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
    snprintf(buf, sizeof buf, "%s/config.json", path);
  else
    snprintf(buf, sizeof buf, "%s", path);
  int fd;
  QZ_CALL(qz_file_open_input(buf, &fd, NULL));
  FILE *f = fdopen(fd, "rb");
  if (!f) close(fd);
  QZ_CHECK(f, QZ_ERR_IO, "cannot open %s: %s", buf, strerror(errno));
  char *data = NULL;
  size_t n = 0, cap = 0;
  int st = QZ_OK;
  for (;;) {
    if (n == cap) {
      cap = cap ? 2 * cap : 65536;
      if (cap > (64u << 20)) {
        st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                          "%s: larger than 64 MiB, not a config.json", buf);
        break;
      }
      char *d = realloc(data, cap);
      if (!d) {
        st = qz_error_set(QZ_ERR_MEM, __FILE__, __LINE__, __func__, "oom");
        break;
      }
      data = d;
    }
    size_t r = fread(data + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  if (!st && ferror(f))
    st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                      "reading %s failed", buf);
  fclose(f);
  if (!st) st = qz_config_parse(data, n, buf, cfg);
  free(data);
  if (st) qz_error_trace(__FILE__, __LINE__, __func__);
  return st;
}

static const char *const linear_names[QZ_LIN_COUNT] = {
    [QZ_LIN_Q] = "self_attn.q_proj", [QZ_LIN_K] = "self_attn.k_proj",
    [QZ_LIN_V] = "self_attn.v_proj", [QZ_LIN_O] = "self_attn.o_proj",
    [QZ_LIN_GATE] = "mlp.gate_proj",  [QZ_LIN_UP] = "mlp.up_proj",
    [QZ_LIN_DOWN] = "mlp.down_proj"};

const char *qz_linear_name(qz_linear l) {
  return (unsigned)l < QZ_LIN_COUNT ? linear_names[l] : "?";
}

void qz_linear_shape(const qz_model_config *c, qz_linear l, int64_t *out,
                     int64_t *in) {
  int64_t q = c->num_attention_heads * c->head_dim;
  int64_t kv = c->num_key_value_heads * c->head_dim;
  int64_t o = 0, i = 0;
  switch (l) {
  case QZ_LIN_Q: o = q, i = c->hidden_size; break;
  case QZ_LIN_K:
  case QZ_LIN_V: o = kv, i = c->hidden_size; break;
  case QZ_LIN_O: o = c->hidden_size, i = q; break;
  case QZ_LIN_GATE:
  case QZ_LIN_UP: o = c->intermediate_size, i = c->hidden_size; break;
  case QZ_LIN_DOWN: o = c->hidden_size, i = c->intermediate_size; break;
  default: break;
  }
  if (out) *out = o;
  if (in) *in = i;
}

void qz_linear_tensor(char *buf, size_t len, int layer, qz_linear l,
                      const char *suffix) {
  snprintf(buf, len, "model.layers.%d.%s.%s", layer, qz_linear_name(l),
           suffix ? suffix : "weight");
}

int qz_linear_has_bias(const qz_model_config *c, qz_linear l) {
  switch (l) {
  case QZ_LIN_Q:
  case QZ_LIN_K:
  case QZ_LIN_V: return c->qkv_bias;
  case QZ_LIN_O: return c->o_bias;
  default: return c->mlp_bias;
  }
}

int qz_config_layer_moe(const qz_model_config *c, int layer) {
  if (c->moe == QZ_MOE_NONE || c->num_experts <= 0 || layer < 0) return 0;
  if (layer < QZ_MAX_LAYERS_BITMAP && (c->mlp_only[layer / 8] >> (layer % 8) & 1)) return 0;
  int64_t step = c->decoder_sparse_step > 0 ? c->decoder_sparse_step : 1;
  return (layer + 1) % step == 0;
}

int qz_config_any_moe(const qz_model_config *c) {
  for (int l = 0; l < c->num_hidden_layers; l++)
    if (qz_config_layer_moe(c, l)) return 1;
  return 0;
}

int qz_config_all_moe(const qz_model_config *c) {
  for (int l = 0; l < c->num_hidden_layers; l++)
    if (!qz_config_layer_moe(c, l)) return 0;
  return c->num_hidden_layers > 0;
}

void qz_expert_tensor(char *buf, size_t len, const qz_model_config *c, int layer, int e,
                      int which) {
  static const char *const mixtral[3] = {"w1", "w3", "w2"};
  static const char *const qwen[3] = {"gate_proj", "up_proj", "down_proj"};
  which = which < 0 ? 0 : which > 2 ? 2 : which;
  if (c->moe == QZ_MOE_MIXTRAL)
    snprintf(buf, len, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", layer, e,
             mixtral[which]);
  else if (e < 0)
    snprintf(buf, len, "model.layers.%d.mlp.shared_expert.%s.weight", layer, qwen[which]);
  else
    snprintf(buf, len, "model.layers.%d.mlp.experts.%d.%s.weight", layer, e, qwen[which]);
}

void qz_expert_module(char *buf, size_t len, const qz_model_config *c, int layer, int e,
                      int which) {
  char t[256], pre[64];
  qz_expert_tensor(t, sizeof t, c, layer, e, which);
  snprintf(pre, sizeof pre, "model.layers.%d.", layer);
  size_t n = strlen(t), p = strlen(pre);
  t[n - strlen(".weight")] = '\0';
  snprintf(buf, len, "%s", t + p);
}

void qz_router_tensor(char *buf, size_t len, const qz_model_config *c, int layer) {
  snprintf(buf, len, "model.layers.%d.%s.gate.weight", layer,
           c->moe == QZ_MOE_MIXTRAL ? "block_sparse_moe" : "mlp");
}

void qz_shared_gate_tensor(char *buf, size_t len, int layer) {
  snprintf(buf, len, "model.layers.%d.mlp.shared_expert_gate.weight", layer);
}

static int expect_q(const qz_st *st, const char *name, int ndim, int64_t d0,
                    int64_t d1, const char *why, int allow_i8) {
  const qz_tensor_info *ti = qz_st_find(st, name);
  QZ_CHECK(ti, QZ_ERR_FORMAT, "%s: tensor '%s' is missing (config.json implies "
           "it: %s)", qz_st_origin(st), name, why);
  if (ti->dtype == QZ_DT_I8 && allow_i8) {
    QZ_CHECK(qz_st_is_int8_scaled(st, name), QZ_ERR_FORMAT,
             "%s: tensor '%s' is I8 but '%s_scale' (float, [%lld, 1]) is missing or "
             "malformed", ti->file, name, name, (long long)ti->shape[0]);
  } else {
    QZ_CHECK(qz_dtype_is_float(ti->dtype), QZ_ERR_FORMAT,
           "%s: tensor '%s' has dtype %s, expected a float dtype (F32, F16, "
           "BF16, F64)", ti->file, name, qz_dtype_name(ti->dtype));
  }
  int ok = ti->ndim == ndim && ti->shape[0] == d0 && (ndim < 2 || ti->shape[1] == d1);
  if (!ok) {
    char found[160] = "[";
    size_t o = 1;
    for (int d = 0; d < ti->ndim && o < sizeof found; d++)
      o += (size_t)snprintf(found + o, sizeof found - o, "%s%lld", d ? "," : "",
                            (long long)ti->shape[d]);
    if (o < sizeof found) snprintf(found + o, sizeof found - o, "]");
    if (ndim == 2)
      QZ_FAIL(QZ_ERR_FORMAT, "%s: tensor '%s' has shape %s, config.json implies "
              "[%lld,%lld] (%s)", ti->file, name, found, (long long)d0,
              (long long)d1, why);
    QZ_FAIL(QZ_ERR_FORMAT, "%s: tensor '%s' has shape %s, config.json implies "
            "[%lld] (%s)", ti->file, name, found, (long long)d0, why);
  }
  return QZ_OK;
}

static int expect(const qz_st *st, const char *name, int ndim, int64_t d0,
                  int64_t d1, const char *why) {
  return expect_q(st, name, ndim, d0, d1, why, 0);
}

static void linear_why(const qz_model_config *c, qz_linear l, char *buf,
                       size_t len) {
  switch (l) {
  case QZ_LIN_Q: snprintf(buf, len, "num_attention_heads %lld x head_dim %lld, hidden_size %lld",
                          (long long)c->num_attention_heads, (long long)c->head_dim,
                          (long long)c->hidden_size); break;
  case QZ_LIN_K:
  case QZ_LIN_V: snprintf(buf, len, "num_key_value_heads %lld x head_dim %lld, hidden_size %lld",
                          (long long)c->num_key_value_heads, (long long)c->head_dim,
                          (long long)c->hidden_size); break;
  case QZ_LIN_O: snprintf(buf, len, "hidden_size %lld, num_attention_heads %lld x head_dim %lld",
                          (long long)c->hidden_size, (long long)c->num_attention_heads,
                          (long long)c->head_dim); break;
  case QZ_LIN_DOWN: snprintf(buf, len, "hidden_size %lld, intermediate_size %lld",
                             (long long)c->hidden_size, (long long)c->intermediate_size); break;
  default: snprintf(buf, len, "intermediate_size %lld, hidden_size %lld",
                    (long long)c->intermediate_size, (long long)c->hidden_size); break;
  }
}

const char *qz_config_quantized(const qz_model_config *c) {
  if (c->gptq_bits) return "GPTQ";
  if (c->ct_int8) return "compressed-tensors int-quantized";
  if (c->ct_packed_bits) return "compressed-tensors pack-quantized";
  if (c->fp8) return "FP8";
  return NULL;
}

void qz_config_st_quant(const qz_model_config *c, qz_st_quant *q) {
  *q = (qz_st_quant){.packed_bits = c->ct_packed_bits,
                     .block = {c->fp8_block[0], c->fp8_block[1]}};
}

const char *qz_config_lm_head(const qz_model_config *c, const qz_st *st) {
  if (qz_st_find(st, "lm_head.weight")) return "lm_head.weight";
  if (c->tie_word_embeddings) return "model.embed_tokens.weight";
  return NULL;
}

/* A linear's weight [o, i]: float, or (a GPTQ export) its qweight set, or
 * (compressed-tensors int8) I8 with a scale, or stored quantized
 * (pack-quantized, FP8) and dequantized on read. */
static int expect_linear(const qz_model_config *c, const qz_st *st, const char *name,
                         int64_t o, int64_t i, const char *why) {
  const qz_tensor_info *ti = qz_st_find(st, name);
  if (c->gptq_bits && !ti) {
    int64_t go = 0, gi = 0;
    int gb = 0;
    QZ_CALL(qz_st_gptq_shape(st, name, &go, &gi, &gb));
    QZ_CHECK(go == o && gi == i && gb == c->gptq_bits, QZ_ERR_FORMAT,
             "%s: GPTQ tensor '%s' is [%lld, %lld] at %d bits, config.json implies "
             "[%lld, %lld] (%s) at %d bits", qz_st_origin(st), name, (long long)go,
             (long long)gi, gb, (long long)o, (long long)i, why, c->gptq_bits);
    return QZ_OK;
  }
  if (!ti || c->ct_packed_bits || c->fp8 || ti->dtype == QZ_DT_F8_E4M3 ||
      ti->dtype == QZ_DT_F8_E5M2) {
    int64_t wo = 0, wi = 0;
    const char *kind = NULL;
    QZ_CHECK(ti || c->ct_packed_bits, QZ_ERR_FORMAT,
             "%s: tensor '%s' is missing (config.json implies it: %s)", qz_st_origin(st),
             name, why);
    QZ_CALL(qz_st_weight_shape(st, name, &wo, &wi, &kind));
    QZ_CHECK(wo == o && wi == i, QZ_ERR_FORMAT,
             "%s: tensor '%s' (%s) is [%lld, %lld], config.json implies [%lld,%lld] (%s)",
             qz_st_origin(st), name, kind, (long long)wo, (long long)wi, (long long)o,
             (long long)i, why);
    return QZ_OK;
  }
  return expect_q(st, name, 2, o, i, why, c->ct_int8);
}

/* Router, experts and shared expert of MoE block l. */
static int check_moe(const qz_model_config *c, const qz_st *st, int l) {
  char name[256], why[256];
  const int64_t H = c->hidden_size, E = c->num_experts, Ie = c->moe_intermediate_size;
  qz_router_tensor(name, sizeof name, c, l);
  snprintf(why, sizeof why, "router: %lld experts, hidden_size %lld", (long long)E,
           (long long)H);
  QZ_CALL(expect(st, name, 2, E, H, why));
  snprintf(why, sizeof why, "expert of %s %lld, hidden_size %lld",
           c->moe == QZ_MOE_MIXTRAL ? "intermediate_size" : "moe_intermediate_size",
           (long long)Ie, (long long)H);
  for (int e = 0; e < (int)E; e++)
    for (int w = 0; w < 3; w++) {
      qz_expert_tensor(name, sizeof name, c, l, e, w);
      QZ_CALL(expect_linear(c, st, name, w == 2 ? H : Ie, w == 2 ? Ie : H, why));
    }
  const int64_t Is = c->shared_expert_intermediate_size;
  if (c->moe == QZ_MOE_QWEN2 && Is > 0) {
    snprintf(why, sizeof why, "shared expert of shared_expert_intermediate_size %lld, "
             "hidden_size %lld", (long long)Is, (long long)H);
    for (int w = 0; w < 3; w++) {
      qz_expert_tensor(name, sizeof name, c, l, -1, w);
      QZ_CALL(expect_linear(c, st, name, w == 2 ? H : Is, w == 2 ? Is : H, why));
    }
    qz_shared_gate_tensor(name, sizeof name, l);
    QZ_CALL(expect(st, name, 2, 1, H, "shared expert gate [1, hidden_size]"));
  }
  return QZ_OK;
}

int qz_config_check_tensors(const qz_model_config *c, const qz_st *st) {
  char name[256], why[256];
  snprintf(why, sizeof why, "vocab_size %lld, hidden_size %lld",
           (long long)c->vocab_size, (long long)c->hidden_size);
  QZ_CALL(expect(st, "model.embed_tokens.weight", 2, c->vocab_size,
                 c->hidden_size, why));
  snprintf(why, sizeof why, "hidden_size %lld", (long long)c->hidden_size);
  for (int l = 0; l < c->num_hidden_layers; l++) {
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
    QZ_CALL(expect(st, name, 1, c->hidden_size, 0, "hidden_size"));
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
    QZ_CALL(expect(st, name, 1, c->hidden_size, 0, "hidden_size"));
    if (c->qk_norm) {
      snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", l);
      QZ_CALL(expect(st, name, 1, c->head_dim, 0, "head_dim (per-head q RMSNorm)"));
      snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", l);
      QZ_CALL(expect(st, name, 1, c->head_dim, 0, "head_dim (per-head k RMSNorm)"));
    }
    const int moe = qz_config_layer_moe(c, l);
    if (moe) QZ_CALL(check_moe(c, st, l));
    for (int k = 0; k < QZ_LIN_COUNT; k++) {
      if (moe && k >= QZ_LIN_GATE) continue; /* experts instead of one mlp */
      int64_t o, i;
      qz_linear_shape(c, (qz_linear)k, &o, &i);
      linear_why(c, (qz_linear)k, why, sizeof why);
      qz_linear_tensor(name, sizeof name, l, (qz_linear)k, "weight");
      QZ_CALL(expect_linear(c, st, name, o, i, why));
      if (qz_linear_has_bias(c, (qz_linear)k)) {
        qz_linear_tensor(name, sizeof name, l, (qz_linear)k, "bias");
        QZ_CALL(expect(st, name, 1, o, 0, "the config enables biases"));
      }
    }
  }
  QZ_CALL(expect(st, "model.norm.weight", 1, c->hidden_size, 0, "hidden_size"));
  const char *lm = qz_config_lm_head(c, st);
  QZ_CHECK(lm, QZ_ERR_FORMAT, "%s: tensor 'lm_head.weight' is missing and "
           "tie_word_embeddings is false", qz_st_origin(st));
  snprintf(why, sizeof why, "vocab_size %lld, hidden_size %lld%s",
           (long long)c->vocab_size, (long long)c->hidden_size,
           strcmp(lm, "lm_head.weight") ? ", tied to the embedding" : "");
  QZ_CALL(expect(st, lm, 2, c->vocab_size, c->hidden_size, why));
  return QZ_OK;
}

/* Whether `name` is the router, an expert or the shared expert of MoE
 * block `layer`. */
static int moe_tensor_used(const qz_model_config *c, int layer, const char *full) {
  char t[256], name[256];
  snprintf(name, sizeof name, "%s", full);
  { /* quantized exports: the linear's other tensors stand for its weight */
    static const char *const suf[] = {".qweight", ".qzeros", ".scales", ".g_idx",
                                      ".weight_scale", ".input_scale", ".weight_zero_point"};
    size_t n = strlen(name);
    for (size_t k = 0; k < sizeof suf / sizeof *suf; k++) {
      size_t m = strlen(suf[k]);
      int on = k < 4 ? c->gptq_bits != 0 : c->ct_int8 != 0;
      if (on && n > m && strcmp(name + n - m, suf[k]) == 0) {
        snprintf(name + n - m, sizeof name - (n - m), ".weight");
        break;
      }
    }
  }
  qz_router_tensor(t, sizeof t, c, layer);
  if (!strcmp(name, t)) return 1;
  int e = -1, n = 0;
  char pre[128];
  snprintf(pre, sizeof pre, "model.layers.%d.%s.experts.%%d.%%n", layer,
           c->moe == QZ_MOE_MIXTRAL ? "block_sparse_moe" : "mlp");
  if (sscanf(name, pre, &e, &n) == 1 && n > 0 && e >= 0 && e < c->num_experts)
    for (int w = 0; w < 3; w++) {
      qz_expert_tensor(t, sizeof t, c, layer, e, w);
      if (!strcmp(name, t)) return 1;
    }
  if (c->moe == QZ_MOE_QWEN2 && c->shared_expert_intermediate_size > 0) {
    qz_shared_gate_tensor(t, sizeof t, layer);
    if (!strcmp(name, t)) return 1;
    for (int w = 0; w < 3; w++) {
      qz_expert_tensor(t, sizeof t, c, layer, -1, w);
      if (!strcmp(name, t)) return 1;
    }
  }
  return 0;
}

/* Whether the config uses tensor `name`. */
static int tensor_used(const qz_model_config *c, const char *name) {
  if (!strcmp(name, "model.embed_tokens.weight") || !strcmp(name, "model.norm.weight") ||
      !strcmp(name, "lm_head.weight"))
    return 1;
  int layer = -1, n = 0;
  if (sscanf(name, "model.layers.%d.%n", &layer, &n) != 1 || n == 0 || layer < 0 ||
      layer >= c->num_hidden_layers)
    return 0;
  const char *rest = name + n;
  if (!strcmp(rest, "input_layernorm.weight") ||
      !strcmp(rest, "post_attention_layernorm.weight") ||
      !strcmp(rest, "self_attn.rotary_emb.inv_freq")) /* recomputed, as HF does */
    return 1;
  if (c->qk_norm && (!strcmp(rest, "self_attn.q_norm.weight") ||
                     !strcmp(rest, "self_attn.k_norm.weight")))
    return 1;
  if (qz_config_layer_moe(c, layer)) {
    if (moe_tensor_used(c, layer, name)) return 1;
    if (!strncmp(rest, "mlp.", 4) || !strncmp(rest, "block_sparse_moe.", 17)) return 0;
  }
  for (int k = 0; k < QZ_LIN_COUNT; k++) {
    const char *ln = qz_linear_name((qz_linear)k);
    size_t l = strlen(ln);
    if (strncmp(rest, ln, l) != 0 || rest[l] != '.') continue;
    const char *suf = rest + l + 1;
    if (!strcmp(suf, "weight")) return 1;
    if (!strcmp(suf, "bias")) return qz_linear_has_bias(c, (qz_linear)k);
    if (c->gptq_bits && (!strcmp(suf, "qweight") || !strcmp(suf, "qzeros") ||
                         !strcmp(suf, "scales") || !strcmp(suf, "g_idx")))
      return 1;
    /* scales of stored-quantized weights (an FP8 weight needs no config) */
    if (!strcmp(suf, "weight_scale") || !strcmp(suf, "input_scale") ||
        !strcmp(suf, "weight_scale_inv"))
      return 1;
    if ((c->ct_int8 || c->ct_packed_bits) && !strcmp(suf, "weight_zero_point")) return 1;
    if (c->ct_packed_bits && (!strcmp(suf, "weight_packed") || !strcmp(suf, "weight_shape") ||
                              !strcmp(suf, "weight_g_idx")))
      return 1;
  }
  return 0;
}

int qz_config_unused_tensors(const qz_model_config *c, const qz_st *st, char *list,
                             size_t len) {
  int cnt = 0;
  size_t o = 0;
  if (len) list[0] = '\0';
  for (int i = 0; i < qz_st_count(st); i++) {
    const char *nm = qz_st_info_at(st, i)->name;
    if (tensor_used(c, nm)) continue;
    if (o < len)
      o += (size_t)snprintf(list + o, len - o, "%s%s", cnt ? ", " : "", nm);
    cnt++;
  }
  return cnt;
}

int64_t qz_config_param_count(const qz_model_config *c) {
  const int64_t H = c->hidden_size;
  int64_t per = 2 * H + (c->qk_norm ? 2 * c->head_dim : 0); /* norms */
  for (int k = 0; k < QZ_LIN_COUNT; k++) {
    int64_t o, i;
    qz_linear_shape(c, (qz_linear)k, &o, &i);
    per += o * i + (qz_linear_has_bias(c, (qz_linear)k) ? o : 0);
  }
  int64_t dense_mlp = 3 * H * c->intermediate_size;
  int64_t moe_mlp = c->num_experts * (3 * H * c->moe_intermediate_size + H) +
                    (c->moe == QZ_MOE_QWEN2 && c->shared_expert_intermediate_size > 0
                         ? 3 * H * c->shared_expert_intermediate_size + H
                         : 0);
  int64_t nmoe = 0;
  for (int l = 0; l < c->num_hidden_layers; l++) nmoe += qz_config_layer_moe(c, l);
  int64_t emb = c->vocab_size * H;
  return emb * (c->tie_word_embeddings ? 1 : 2) + c->num_hidden_layers * per +
         nmoe * (moe_mlp - dense_mlp) + H;
}
