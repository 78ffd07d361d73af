/* eval --model of an FP8 model: the activation quantization its
 * quantization_config declares (compressed-tensors float-quantized
 * input_activations, quant_method fp8 activation_scheme), as the serving
 * kernels compute it (qz_fp8_e4m3_act_*), at every linear input:
 *   dynamic per token:  s = max(absmax / 448, 1/(448*512)), x' = e4m3(x/s)*s
 *   dynamic per token and group of G features (DeepSeek-V3 block FP8):
 *                       s = max(absmax, 1e-10) / 448, x' = e4m3(x/s)*s
 *   static per tensor:  s = the linear's input_scale (q/k/v and gate/up,
 *                       which serve fused, take the max of theirs, as vLLM
 *                       does), x' = e4m3(x * (1/s)) * s.
 * The arithmetic is --method fp8's (methods/fp8.c), so an FP8 export
 * evaluates as its checkpoint does. */
#include <stdio.h>
#include <string.h>

#include "driver.h"
#include "mpiquant/config.h"
#include "mpiquant/error.h"
#include "mpiquant/forward.h"
#include "mpiquant/fp8.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/model.h"
#include "mpiquant/safetensors.h"
#include "model_act.h"

enum { NGROUPS = 4 }; /* q/k/v, o, gate/up, down */

typedef struct {
  int act;        /* 1 dynamic, 2 static */
  int64_t group;  /* dynamic: features per scale (0: the whole token) */
  int nblocks;
  float *scale;   /* static: [nblocks, NGROUPS] */
} model_act;

static int group_of(qz_linear l) {
  return l <= QZ_LIN_V ? 0 : l == QZ_LIN_O ? 1 : l == QZ_LIN_DOWN ? 3 : 2;
}

/* the kernels' quantizers (mpiquant/fp8.h), as --method fp8's eval uses them */
static void act_fn(void *ctx, int layer, qz_linear lin, const float *x, int64_t nrows,
                   int64_t n, float *y) {
  const model_act *a = ctx;
  if (a->act == 2)
    qz_fp8_e4m3_act_static(x, (size_t)(nrows * n), a->scale[layer * NGROUPS + group_of(lin)],
                           y);
  else
    qz_fp8_e4m3_act_dynamic(x, (size_t)nrows, (size_t)n, (size_t)a->group, y);
}

/* input_scale of every linear, the max over each group; positive, finite. */
static int static_scales(qz_model *m, const qz_model_config *cfg, float *scale) {
  qz_st *st = qz_model_st(m);
  char name[256];
  for (int b = 0; b < (int)cfg->num_hidden_layers; b++)
    for (int l = 0; l < QZ_LIN_COUNT; l++) {
      qz_linear_tensor(name, sizeof name, b, (qz_linear)l, "input_scale");
      const qz_tensor_info *ti = qz_st_find(st, name);
      QZ_CHECK(ti && ti->nelem == 1 && qz_dtype_is_float(ti->dtype), QZ_ERR_FORMAT,
               "%s: tensor '%s' (one float) is %s; quantization_config declares static "
               "per-tensor FP8 activations", qz_st_origin(st), name,
               ti ? "malformed" : "missing");
      float v = 0.0f;
      QZ_CALL(qz_st_read_f32(st, name, 0, 1, &v));
      QZ_CHECK(v > 0.0f && v < 3.0e38f, QZ_ERR_FORMAT, "%s: tensor '%s' is %g, expected a "
               "positive finite scale", qz_st_origin(st), name, (double)v);
      float *g = &scale[b * NGROUPS + group_of((qz_linear)l)];
      *g = v > *g ? v : *g;
    }
  return QZ_OK;
}

int qz_model_fp8_act_hook(qz_model *m, qz_act_hook *h) {
  const qz_model_config *cfg = qz_model_config_of(m);
  *h = (qz_act_hook){0};
  if (!cfg->fp8 || !cfg->fp8_act) return QZ_OK;
  model_act *a = NULL;
  int st = QZ_OK;
  QZ_CALL(qz_calloc(1, sizeof *a, "FP8 activation hook", &a));
  h->ctx = a;
  h->fn = act_fn;
  a->act = cfg->fp8_act;
  a->group = cfg->fp8_act_group;
  a->nblocks = (int)cfg->num_hidden_layers;
  if (a->act == 2) {
    QZ_CALL_DONE(qz_calloc((size_t)a->nblocks * NGROUPS, sizeof(float), "input scales",
                           &a->scale));
    QZ_CALL_DONE(static_scales(m, cfg, a->scale));
  }
  qz_info("eval: FP8 activations at every linear input: %s",
          a->act == 2 ? "static per tensor (input_scale)"
          : a->group  ? "dynamic per token and group" : "dynamic per token");
done:
  if (st) qz_model_fp8_act_free(h);
  return st;
}

void qz_model_fp8_act_free(qz_act_hook *h) {
  if (!h || !h->ctx) return;
  model_act *a = h->ctx;
  qz_free(&a->scale);
  qz_free(&h->ctx);
  h->fn = NULL;
}
