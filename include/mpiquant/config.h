/* config.json of a Hugging Face causal LM (Llama family) and tensor naming. */
#ifndef MPIQUANT_CONFIG_H
#define MPIQUANT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "mpiquant/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { QZ_ROPE_DEFAULT = 0, QZ_ROPE_LINEAR, QZ_ROPE_LLAMA3 } qz_rope_type;

/* Mixture-of-experts family (tensor names and routing rule). Append-only. */
typedef enum {
  QZ_MOE_NONE = 0, /* dense */
  QZ_MOE_MIXTRAL,  /* block_sparse_moe.gate, experts.{e}.w1/w3/w2 */
  QZ_MOE_QWEN3,    /* mlp.gate, mlp.experts.{e}.gate_proj/up_proj/down_proj */
  QZ_MOE_QWEN2     /* as QWEN3 plus mlp.shared_expert.* and shared_expert_gate */
} qz_moe_kind;

#define QZ_MAX_LAYERS_BITMAP 1024 /* mlp_only_layers entries must be below */

typedef struct {
  char architecture[64];    /* "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM" */
  char model_type[32];      /* "llama", ... */
  int64_t hidden_size;
  int64_t intermediate_size;
  int64_t num_hidden_layers;
  int64_t num_attention_heads;
  int64_t num_key_value_heads; /* default: num_attention_heads */
  int64_t head_dim;            /* default: hidden_size / num_attention_heads */
  int64_t vocab_size;
  int64_t max_position_embeddings;
  double rms_norm_eps;
  double rope_theta;
  struct {
    qz_rope_type type;
    double factor;
    double low_freq_factor, high_freq_factor;   /* llama3 */
    int64_t original_max_position_embeddings;   /* llama3 */
  } rope_scaling;
  int tie_word_embeddings;
  int qkv_bias;   /* q/k/v projections have biases (attention_bias, Qwen2) */
  int o_bias;     /* o_proj has a bias (attention_bias on Llama) */
  int mlp_bias;
  char torch_dtype[16];
  int64_t bos_token_id, eos_token_id; /* -1 if absent */
  /* quantization_config of a compressed-tensors int-quantized export: linear
   * weights may be I8 with a `weight_scale` (read dequantized);
   * ct_act_bits > 0: dynamic per-token symmetric int activations at every
   * linear input (W8A8). Both 0 for a plain model. */
  int ct_int8, ct_act_bits;
  /* quantization_config of a GPTQ v1 export (quant_method gptq,
   * checkpoint_format gptq): linear weights may be qweight/qzeros/scales/
   * g_idx (read dequantized); 0 for a plain model */
  int gptq_bits;
  /* Qwen3 / Qwen3-MoE: per-head RMSNorm of queries and keys
   * (self_attn.q_norm / k_norm, [head_dim]) after the projections, before
   * RoPE. 0 otherwise. */
  int qk_norm;
  /* mixture of experts (moe == QZ_MOE_NONE: dense, the rest 0) */
  qz_moe_kind moe;
  int64_t num_experts;          /* E (num_local_experts / num_experts) */
  int64_t num_experts_per_tok;  /* k of the top-k routing */
  int64_t moe_intermediate_size; /* I_e of one expert (Mixtral: intermediate_size) */
  int64_t shared_expert_intermediate_size; /* Qwen2-MoE shared expert, else 0 */
  int norm_topk_prob;           /* renormalise the top-k weights to sum 1 */
  int64_t decoder_sparse_step;  /* Qwen MoE: layer l is MoE iff (l+1) % step == 0 */
  unsigned char mlp_only[QZ_MAX_LAYERS_BITMAP / 8]; /* bitmap: dense layers */
  /* compressed-tensors pack-quantized (W4A16 / W8A16): num_bits of linear
   * weights stored as weight_packed & co. (read dequantized); 0 otherwise */
  int ct_packed_bits;
  /* FP8 weights (compressed-tensors float-quantized, quant_method fp8):
   * fp8 = 1; fp8_block = rows x cols of 2-D (block) weight scales (0: 128);
   * fp8_act = activations at every linear input of a float-quantized
   * export: 0 none, 1 dynamic per token (per token and group of
   * fp8_act_group features when > 0), 2 static per tensor (input_scale) */
  int fp8, fp8_act;
  int64_t fp8_act_group;
  int64_t fp8_block[2];
} qz_model_config;

/* Whether decoder block `layer` has a mixture-of-experts FFN (otherwise the
 * dense mlp.gate_proj/up_proj/down_proj of intermediate_size). Not
 * collective. */
int qz_config_layer_moe(const qz_model_config *cfg, int layer);
/* Whether any / every block is MoE. Not collective. */
int qz_config_any_moe(const qz_model_config *cfg);
int qz_config_all_moe(const qz_model_config *cfg);

/* Expert tensors of MoE blocks (HF names): which = 0 gate, 1 up, 2 down of
 * expert e ("model.layers.3.block_sparse_moe.experts.5.w1.weight",
 * "model.layers.3.mlp.experts.5.gate_proj.weight"); e = -1: the Qwen2-MoE
 * shared expert ("mlp.shared_expert.gate_proj.weight").  Not collective. */
void qz_expert_tensor(char *buf, size_t len, const qz_model_config *cfg, int layer,
                      int e, int which);
/* The same without "model.layers.{layer}." and ".weight": the checkpoint
 * module ("block_sparse_moe.experts.3.w1", "mlp.shared_expert.down_proj").
 * Not collective. */
void qz_expert_module(char *buf, size_t len, const qz_model_config *cfg, int layer, int e,
                      int which);
/* The router [E, H] ("block_sparse_moe.gate.weight" / "mlp.gate.weight") and
 * the Qwen2-MoE shared expert gate [1, H]. Not collective. */
void qz_router_tensor(char *buf, size_t len, const qz_model_config *cfg, int layer);
void qz_shared_gate_tensor(char *buf, size_t len, int layer);

/* Parse `path` (config.json, or a directory holding it). Missing required
 * keys, non-positive sizes, inconsistent head counts and unsupported
 * architectures are errors naming the file and key. Not collective. */
int qz_config_load(const char *path, qz_model_config *cfg);
int qz_config_parse(const char *json, size_t len, const char *origin,
                    qz_model_config *cfg);

/* The 7 quantizable linears of a block, in forward order. Append-only. */
typedef enum {
  QZ_LIN_Q = 0, QZ_LIN_K, QZ_LIN_V, QZ_LIN_O, QZ_LIN_GATE, QZ_LIN_UP,
  QZ_LIN_DOWN, QZ_LIN_COUNT
} qz_linear;

const char *qz_linear_name(qz_linear l);     /* "self_attn.q_proj", "mlp.down_proj" */
void qz_linear_shape(const qz_model_config *cfg, qz_linear l, int64_t *out,
                     int64_t *in);
/* Parameters the config implies (embedding counted once when tied).
 * Not collective. */
int64_t qz_config_param_count(const qz_model_config *cfg);
/* Whether linear l carries a bias under this config. Not collective. */
int qz_linear_has_bias(const qz_model_config *cfg, qz_linear l);
/* "model.layers.{layer}.{linear}.weight" (suffix "weight" or "bias"). */
void qz_linear_tensor(char *buf, size_t len, int layer, qz_linear l,
                      const char *suffix);

/* Check every tensor the config implies against the file set: names present,
 * dtypes float, shapes equal; lm_head falls back to embed_tokens when tied.
 * The error names the first mismatch (file, tensor, expected, found). */
int qz_config_check_tensors(const qz_model_config *cfg, const qz_st *st);

/* Tensors of the file set that this config does not use (extra layers,
 * biases it does not enable, unknown names): their count, and the first of
 * them, comma-separated, in list (truncated to len). Not collective. */
int qz_config_unused_tensors(const qz_model_config *cfg, const qz_st *st, char *list,
                             size_t len);

/* The lm_head tensor name to use ("lm_head.weight" if present, else the tied
 * embedding when tie_word_embeddings; NULL if neither). Not collective. */
const char *qz_config_lm_head(const qz_model_config *cfg, const qz_st *st);
/* "GPTQ", "compressed-tensors int-quantized", "compressed-tensors
 * pack-quantized" or "FP8" for an already-quantized model (its
 * quantization_config), NULL for a plain model. Not collective. */
const char *qz_config_quantized(const qz_model_config *cfg);
/* The hints the safetensors reader needs for this config's quantized
 * linears (qz_st_set_quant). Not collective. */
void qz_config_st_quant(const qz_model_config *cfg, qz_st_quant *q);

#ifdef __cplusplus
}
#endif
#endif
