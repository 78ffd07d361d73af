/* Activations of FP8 exports at evaluation (eval --model of a
 * compressed-tensors float-quantized directory): see eval_fp8.h. */
#include "eval_fp8.h"

#include <stdio.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/fp8.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"

typedef struct {
  int act;        /* 1 dynamic per token, 2 static */
  int64_t nlayers;
  float *scale;   /* static: [nlayers, 4] q/k/v, o, gate/up, down */
} fp8_export_act;

static int group_of(qz_linear l) {
  return l == QZ_LIN_O ? 1 : l == QZ_LIN_GATE || l == QZ_LIN_UP ? 2 : l == QZ_LIN_DOWN ? 3 : 0;
}

static void act_fn(void *ctx, int layer, qz_linear lin, const float *x, int64_t nrows,
                   int64_t n, float *y) {
  const fp8_export_act *a = ctx;
  if (a->act == 1) {
    qz_fp8_e4m3_act_dynamic(x, (size_t)nrows, (size_t)n, 0, y);
    return;
  }
  qz_fp8_e4m3_act_static(x, (size_t)(nrows * n), a->scale[layer * 4 + group_of(lin)], y);
}

/* The static scales of every block: max over each group's linears. */
static int read_scales(qz_model *m, fp8_export_act *a) {
  static const char *const mods[QZ_LIN_COUNT] = {
      "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
      "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  qz_st *st = qz_model_st(m);
  for (int64_t i = 0; i < a->nlayers; i++)
    for (int l = 0; l < QZ_LIN_COUNT; l++) {
      char name[256];
      snprintf(name, sizeof name, "model.layers.%lld.%s.input_scale", (long long)i, mods[l]);
      const qz_tensor_info *ti = qz_st_find(st, name);
      QZ_CHECK(ti && ti->nelem == 1, QZ_ERR_FORMAT, "FP8 model with static activations: "
               "tensor %s is %s (expected one float: the static input scale)", name,
               ti ? "not a single value" : "missing");
      float v = 0;
      QZ_CALL(qz_st_read_f32(st, name, 0, 1, &v));
      QZ_CHECK(v > 0 && v < 3.0e38f, QZ_ERR_FORMAT, "tensor %s is %g: an input scale must "
               "be positive and finite", name, (double)v);
      float *s = &a->scale[i * 4 + group_of((qz_linear)l)];
      *s = v > *s ? v : *s;
    }
  return QZ_OK;
}

int qz_eval_fp8_hook(qz_model *m, qz_act_hook *h) {
  const qz_model_config *cfg = qz_model_config_of(m);
  *h = (qz_act_hook){0};
  if (!cfg->fp8 || !cfg->fp8_act) return QZ_OK;
  fp8_export_act *a = NULL;
  int st = qz_calloc(1, sizeof *a, "FP8 activations", &a);
  if (st == QZ_OK) {
    h->ctx = a;
    h->fn = act_fn;
    a->act = cfg->fp8_act;
    a->nlayers = cfg->num_hidden_layers;
    if (a->act == 2) {
      st = qz_calloc((size_t)a->nlayers * 4, sizeof(float), "FP8 input scales", &a->scale);
      if (st == QZ_OK) st = read_scales(m, a);
    }
  }
  st = qz_error_agree(qz_model_comm(m), st);
  if (st) qz_eval_fp8_hook_free(h);
  return st;
}

void qz_eval_fp8_hook_free(qz_act_hook *h) {
  fp8_export_act *a = h->ctx;
  if (a) qz_free(&a->scale);
  qz_free(&h->ctx);
  h->fn = NULL;
}
