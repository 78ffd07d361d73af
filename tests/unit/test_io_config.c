/* config.json: hand-written configs of real models (shapes only) parse to
 * the right struct; parameter counts match the published totals; the
 * config/tensor consistency check on the real test model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/config.h"
#include "mpiquant/error.h"
#include "mpiquant/safetensors.h"
#include "qz_test.h"

static const char *fixture(const char *name) {
  static char buf[4096];
  const char *src = getenv("QZ_SOURCE_DIR");
  snprintf(buf, sizeof buf, "%s/tests/fixtures/configs/%s", src ? src : ".", name);
  return buf;
}

static void test_405b(void) {
  qz_model_config c;
  if (!QZT_OK(qz_config_load(fixture("llama-3.1-405b.json"), &c))) return;
  QZT_CHECK(strcmp(c.architecture, "LlamaForCausalLM") == 0, "arch");
  QZT_CHECK(c.hidden_size == 16384 && c.intermediate_size == 53248 &&
                c.num_hidden_layers == 126 && c.num_attention_heads == 128 &&
                c.num_key_value_heads == 8 && c.head_dim == 128 &&
                c.vocab_size == 128256 && c.max_position_embeddings == 131072,
            "405B sizes");
  QZT_CHECK(c.rope_scaling.type == QZ_ROPE_LLAMA3 && c.rope_scaling.factor == 8.0 &&
                c.rope_scaling.low_freq_factor == 1.0 &&
                c.rope_scaling.high_freq_factor == 4.0 &&
                c.rope_scaling.original_max_position_embeddings == 8192,
            "llama3 rope scaling");
  QZT_CHECK(c.rope_theta == 500000.0 && c.rms_norm_eps == 1e-5, "theta, eps");
  QZT_CHECK(!c.tie_word_embeddings && !c.qkv_bias && !c.o_bias && !c.mlp_bias,
            "no tie, no biases");
  QZT_CHECK(strcmp(c.torch_dtype, "bfloat16") == 0, "dtype");
  QZT_CHECK(c.bos_token_id == 128000 && c.eos_token_id == 128001,
            "bos, first eos of the list");
  int64_t o, i;
  qz_linear_shape(&c, QZ_LIN_K, &o, &i);
  QZT_CHECK(o == 1024 && i == 16384, "k_proj [1024,16384]");
  qz_linear_shape(&c, QZ_LIN_DOWN, &o, &i);
  QZT_CHECK(o == 16384 && i == 53248, "down_proj [16384,53248]");
  QZT_CHECK(qz_config_param_count(&c) == 405853388800LL,
            "405B: 405,853,388,800 parameters, got %lld",
            (long long)qz_config_param_count(&c));
}

static void test_others(void) {
  qz_model_config c;
  if (QZT_OK(qz_config_load(fixture("llama-3-70b.json"), &c))) {
    QZT_CHECK(c.num_key_value_heads == 8 && c.head_dim == 128 &&
                  c.rope_scaling.type == QZ_ROPE_DEFAULT && c.num_hidden_layers == 80,
              "70B");
    QZT_CHECK(qz_config_param_count(&c) == 70553706496LL,
              "70B: 70,553,706,496 parameters, got %lld",
              (long long)qz_config_param_count(&c));
  }
  if (QZT_OK(qz_config_load(fixture("llama-2-7b.json"), &c))) {
    QZT_CHECK(c.num_key_value_heads == 32 && c.head_dim == 128 &&
                  c.rope_theta == 10000.0 && c.eos_token_id == 2, "Llama-2-7B");
    QZT_CHECK(qz_config_param_count(&c) == 6738415616LL,
              "7B: 6,738,415,616 parameters, got %lld",
              (long long)qz_config_param_count(&c));
  }
  if (QZT_OK(qz_config_load(fixture("qwen2-7b.json"), &c))) {
    QZT_CHECK(strcmp(c.model_type, "qwen2") == 0 && c.qkv_bias && !c.o_bias &&
                  !c.mlp_bias && c.head_dim == 128 && c.num_key_value_heads == 4,
              "Qwen2: q/k/v biases, no o/mlp bias");
    QZT_CHECK(qz_linear_has_bias(&c, QZ_LIN_V) && !qz_linear_has_bias(&c, QZ_LIN_O),
              "has_bias");
    QZT_CHECK(qz_config_param_count(&c) == 7615616512LL,
              "Qwen2-7B: 7,615,616,512 parameters, got %lld",
              (long long)qz_config_param_count(&c));
  }
  if (QZT_OK(qz_config_load(fixture("mistral-7b-v0.1.json"), &c))) {
    QZT_CHECK(strcmp(c.architecture, "MistralForCausalLM") == 0 &&
                  c.num_key_value_heads == 8 && !c.qkv_bias, "Mistral");
    QZT_CHECK(qz_config_param_count(&c) == 7241732096LL,
              "Mistral-7B: 7,241,732,096 parameters, got %lld",
              (long long)qz_config_param_count(&c));
  }
  /* defaults: kv heads = heads, head_dim = hidden/heads; linear rope */
  const char *j = "{\"model_type\":\"llama\",\"hidden_size\":256,"
                  "\"intermediate_size\":512,\"num_hidden_layers\":2,"
                  "\"num_attention_heads\":4,\"vocab_size\":100,"
                  "\"attention_bias\":true,"
                  "\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}}";
  if (QZT_OK(qz_config_parse(j, strlen(j), "inline", &c))) {
    QZT_CHECK(c.num_key_value_heads == 4 && c.head_dim == 64, "GQA defaults");
    QZT_CHECK(strcmp(c.architecture, "LlamaForCausalLM") == 0,
              "architecture from model_type");
    QZT_CHECK(c.rope_scaling.type == QZ_ROPE_LINEAR && c.rope_scaling.factor == 2.0,
              "linear rope");
    QZT_CHECK(c.qkv_bias && c.o_bias && !c.mlp_bias, "attention_bias on Llama");
    QZT_CHECK(c.rms_norm_eps == 1e-6 && c.rope_theta == 10000.0 &&
                  c.bos_token_id == -1 && c.max_position_embeddings == 2048,
              "defaults of LlamaConfig");
  }
  char nm[128];
  qz_linear_tensor(nm, sizeof nm, 3, QZ_LIN_UP, "bias");
  QZT_CHECK(strcmp(nm, "model.layers.3.mlp.up_proj.bias") == 0, "tensor name");
}

/* quantization_config: compressed-tensors int-quantized is read (W8A8 /
 * W8A16), everything else refused with what is supported. */
static void test_quant_config(void) {
  const char *base = "{\"model_type\":\"llama\",\"hidden_size\":64,"
                     "\"intermediate_size\":128,\"num_hidden_layers\":1,"
                     "\"num_attention_heads\":4,\"vocab_size\":100,"
                     "\"quantization_config\":%s}";
  const char *w8 = "\"weights\":{\"num_bits\":8,\"type\":\"int\",\"symmetric\":true,"
                   "\"strategy\":\"channel\",\"dynamic\":false}";
  const char *a8 = "\"input_activations\":{\"num_bits\":8,\"type\":\"int\","
                   "\"symmetric\":true,\"strategy\":\"token\",\"dynamic\":true}";
  char q[1024], j[2048];
  qz_model_config c;
  snprintf(q, sizeof q, "{\"quant_method\":\"compressed-tensors\",\"format\":"
           "\"int-quantized\",\"config_groups\":{\"group_0\":{\"targets\":[\"Linear\"],"
           "%s,%s}}}", w8, a8);
  snprintf(j, sizeof j, base, q);
  if (QZT_OK(qz_config_parse(j, strlen(j), "w8a8", &c)))
    QZT_CHECK(c.ct_int8 == 1 && c.ct_act_bits == 8, "W8A8: int8 weights, int8 activations");
  snprintf(q, sizeof q, "{\"quant_method\":\"compressed-tensors\",\"format\":"
           "\"int-quantized\",\"config_groups\":{\"g\":{%s,\"input_activations\":null}}}",
           w8);
  snprintf(j, sizeof j, base, q);
  if (QZT_OK(qz_config_parse(j, strlen(j), "w8a16", &c)))
    QZT_CHECK(c.ct_int8 == 1 && c.ct_act_bits == 0, "W8A16: no activation quantization");
  snprintf(j, sizeof j, base, "null");
  if (QZT_OK(qz_config_parse(j, strlen(j), "plain", &c)))
    QZT_CHECK(c.ct_int8 == 0 && c.ct_act_bits == 0, "quantization_config null");
  snprintf(j, sizeof j, base, "{\"quant_method\":\"gptq\",\"bits\":4,"
           "\"checkpoint_format\":\"gptq\"}");
  if (QZT_OK(qz_config_parse(j, strlen(j), "gptq", &c)))
    QZT_CHECK(c.gptq_bits == 4 && !c.ct_int8, "GPTQ v1 export: 4-bit");
  snprintf(j, sizeof j, base, "{\"quant_method\":\"gptq\",\"bits\":4,"
           "\"checkpoint_format\":\"gptq_v2\"}");
  QZT_FAILS(qz_config_parse(j, strlen(j), "gptq_v2", &c), QZ_ERR_UNSUPPORTED,
            "GPTQ checkpoint_format 'gptq_v2' is not supported");
  snprintf(j, sizeof j, base, "{\"quant_method\":\"gptq\",\"bits\":5}");
  QZT_FAILS(qz_config_parse(j, strlen(j), "gptq5", &c), QZ_ERR_UNSUPPORTED,
            "bits must be 2, 3, 4 or 8 for GPTQ");
  snprintf(j, sizeof j, base, "{\"quant_method\":\"awq\",\"bits\":4}");
  QZT_FAILS(qz_config_parse(j, strlen(j), "awq", &c), QZ_ERR_UNSUPPORTED,
            "quantization_config.quant_method is 'awq'; mpiquant reads unquantized");
  snprintf(j, sizeof j, base, "{\"quant_method\":\"compressed-tensors\",\"format\":"
           "\"marlin-24\"}");
  QZT_FAILS(qz_config_parse(j, strlen(j), "marlin", &c), QZ_ERR_UNSUPPORTED,
            "compressed-tensors format 'marlin-24' is not supported (int-quantized, "
            "pack-quantized and float-quantized are read)");
  snprintf(q, sizeof q, "{\"quant_method\":\"compressed-tensors\",\"format\":"
           "\"pack-quantized\",\"config_groups\":{\"g\":{\"weights\":{\"num_bits\":4,"
           "\"type\":\"int\",\"symmetric\":false,\"strategy\":\"group\",\"group_size\":128,"
           "\"dynamic\":false},\"input_activations\":null}}}");
  snprintf(j, sizeof j, base, q);
  if (QZT_OK(qz_config_parse(j, strlen(j), "w4a16", &c)))
    QZT_CHECK(c.ct_packed_bits == 4 && !c.ct_int8 && !c.fp8, "pack-quantized W4A16");
  snprintf(q, sizeof q, "{\"quant_method\":\"compressed-tensors\",\"format\":"
           "\"pack-quantized\",\"config_groups\":{\"g\":{\"weights\":{\"num_bits\":4,"
           "\"type\":\"int\",\"strategy\":\"tensor\"}}}}");
  snprintf(j, sizeof j, base, q);
  QZT_FAILS(qz_config_parse(j, strlen(j), "w4t", &c), QZ_ERR_UNSUPPORTED,
            "strategy 'group' or 'channel' (found 4-bit int, strategy 'tensor')");
  snprintf(q, sizeof q, "{\"quant_method\":\"compressed-tensors\",\"format\":"
           "\"float-quantized\",\"config_groups\":{\"g\":{\"weights\":{\"num_bits\":8,"
           "\"type\":\"float\",\"strategy\":\"block\",\"block_structure\":[64,32]},"
           "\"input_activations\":{\"num_bits\":8,\"type\":\"float\",\"strategy\":"
           "\"tensor\",\"dynamic\":false}}}}");
  snprintf(j, sizeof j, base, q);
  if (QZT_OK(qz_config_parse(j, strlen(j), "fp8blk", &c)))
    QZT_CHECK(c.fp8 && c.fp8_act == 2 && c.fp8_block[0] == 64 && c.fp8_block[1] == 32,
              "float-quantized block 64x32, static activations");
  snprintf(j, sizeof j, base, "{\"quant_method\":\"fp8\",\"fmt\":\"e4m3\","
           "\"activation_scheme\":\"dynamic\",\"weight_block_size\":[128,128]}");
  if (QZT_OK(qz_config_parse(j, strlen(j), "deepseek", &c)))
    QZT_CHECK(c.fp8 && c.fp8_block[0] == 128 && c.fp8_block[1] == 128, "fp8 (DeepSeek-V3)");
  snprintf(j, sizeof j, base, "{\"quant_method\":\"fp8\",\"weight_block_size\":[128]}");
  QZT_FAILS(qz_config_parse(j, strlen(j), "fp8bad", &c), QZ_ERR_FORMAT,
            "weight_block_size must be [rows, cols] of positive integers");
  snprintf(q, sizeof q, "{\"quant_method\":\"compressed-tensors\",\"format\":"
           "\"int-quantized\",\"config_groups\":{\"g\":{\"weights\":{\"num_bits\":8,"
           "\"type\":\"int\",\"symmetric\":false,\"strategy\":\"channel\"}}}}");
  snprintf(j, sizeof j, base, q);
  QZT_FAILS(qz_config_parse(j, strlen(j), "asym", &c), QZ_ERR_UNSUPPORTED,
            "quantization_config weights must be 8-bit int, symmetric, strategy 'channel'");
  snprintf(q, sizeof q, "{\"quant_method\":\"compressed-tensors\",\"format\":"
           "\"int-quantized\",\"config_groups\":{\"g\":{%s,\"input_activations\":"
           "{\"num_bits\":8,\"type\":\"int\",\"symmetric\":true,\"strategy\":\"tensor\","
           "\"dynamic\":false}}}}", w8);
  snprintf(j, sizeof j, base, q);
  QZT_FAILS(qz_config_parse(j, strlen(j), "static", &c), QZ_ERR_UNSUPPORTED,
            "input_activations must be 8-bit int, symmetric, strategy 'token', dynamic");
}

static void test_real_model(void) {
  const char *sh = qzt_shared();
  if (!sh) return;
  qz_model_config c;
  qz_st *st = NULL;
  char dir[2048];
  snprintf(dir, sizeof dir, "%s/models/stories260K-hf", sh);
  if (!QZT_OK(qz_config_load(dir, &c)) || !QZT_OK(qz_st_open(dir, &st))) return;
  QZT_CHECK(c.hidden_size == 64 && c.intermediate_size == 172 && c.head_dim == 8 &&
                c.num_key_value_heads == 4 && c.tie_word_embeddings &&
                c.vocab_size == 512 && c.rms_norm_eps == 1e-5,
            "stories260K config");
  QZT_OK(qz_config_check_tensors(&c, st));
  const char *lm = qz_config_lm_head(&c, st);
  QZT_CHECK(lm && strcmp(lm, "model.embed_tokens.weight") == 0, "tied lm_head");
  QZT_CHECK(qz_config_param_count(&c) == 260032, "260,032 params from config "
            "(tied head counted once), got %lld",
            (long long)qz_config_param_count(&c));
  qz_model_config bad = c;
  bad.intermediate_size = 171;
  QZT_FAILS(qz_config_check_tensors(&bad, st), QZ_ERR_FORMAT,
            "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [172,64], "
            "config.json implies [171,64] (intermediate_size 171");
  bad = c;
  bad.num_hidden_layers = 6;
  QZT_FAILS(qz_config_check_tensors(&bad, st), QZ_ERR_FORMAT,
            "tensor 'model.layers.5.input_layernorm.weight' is missing");
  bad = c;
  bad.tie_word_embeddings = 0;
  QZT_FAILS(qz_config_check_tensors(&bad, st), QZ_ERR_FORMAT,
            "'lm_head.weight' is missing and tie_word_embeddings is false");
  bad = c;
  bad.qkv_bias = 1;
  QZT_FAILS(qz_config_check_tensors(&bad, st), QZ_ERR_FORMAT,
            "'model.layers.0.self_attn.q_proj.bias' is missing");
  bad = c;
  bad.num_key_value_heads = 8;
  QZT_FAILS(qz_config_check_tensors(&bad, st), QZ_ERR_FORMAT,
            "k_proj.weight' has shape [32,64], config.json implies [64,64] "
            "(num_key_value_heads 8");
  qz_st_close(&st);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  test_405b();
  test_others();
  test_quant_config();
  test_real_model();
  return qzt_finish("io_config");
}
