/* Storage for one decoder block's f32 weights, and the head weights. */
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "mpiquant/config.h"
#include "mpiquant/model.h"

/* [out, in] of linear l (independent of io's qz_linear_shape so that the
 * forward can be used on synthetic configs). */
static void lin_shape(const qz_model_config *c, int l, int64_t *out,
                      int64_t *in) {
  int64_t H = c->hidden_size, I = c->intermediate_size;
  int64_t qd = c->num_attention_heads * c->head_dim;
  int64_t kvd = c->num_key_value_heads * c->head_dim;
  switch (l) {
    case QZ_LIN_Q: *out = qd; *in = H; break;
    case QZ_LIN_K: case QZ_LIN_V: *out = kvd; *in = H; break;
    case QZ_LIN_O: *out = H; *in = qd; break;
    case QZ_LIN_GATE: case QZ_LIN_UP: *out = I; *in = H; break;
    default: *out = H; *in = I; break; /* QZ_LIN_DOWN */
  }
}

static int has_bias(const qz_model_config *c, int l) {
  if (l <= QZ_LIN_V) return c->qkv_bias;
  if (l == QZ_LIN_O) return c->o_bias;
  return c->mlp_bias;
}

int qz_block_weights_alloc(const qz_model_config *cfg, qz_block_weights *w) {
  return qz_block_weights_alloc_ex(cfg, 1, w);
}

int qz_block_weights_alloc_ex(const qz_model_config *cfg, int experts, qz_block_weights *w) {
  memset(w, 0, sizeof *w);
  w->layer = -1;
  w->hidden = cfg->hidden_size;
  w->inter = cfg->intermediate_size;
  w->nq = cfg->num_attention_heads;
  w->nkv = cfg->num_key_value_heads;
  w->hd = cfg->head_dim;
  const int any_moe = qz_config_any_moe(cfg), all_moe = qz_config_all_moe(cfg);
  if (any_moe) {
    w->nexp = cfg->num_experts;
    w->topk = cfg->num_experts_per_tok;
    w->einter = cfg->moe_intermediate_size;
    w->sinter = cfg->moe == QZ_MOE_QWEN2 ? cfg->shared_expert_intermediate_size : 0;
    w->norm_topk = cfg->norm_topk_prob;
  }
  const int64_t H = w->hidden, E = w->nexp, Ie = w->einter, Is = w->sinter;
  enum { NDST = 4 + 2 * QZ_LIN_COUNT + 1 + 3 + 3 + 1 };
  int64_t sz[NDST];
  float **dst[NDST];
  int n = 0;
#define SLOT(ptr, size) (dst[n] = (ptr), sz[n++] = (size))
  SLOT(&w->attn_norm, H);
  SLOT(&w->ffn_norm, H);
  SLOT(&w->q_norm, cfg->qk_norm ? w->hd : 0);
  SLOT(&w->k_norm, cfg->qk_norm ? w->hd : 0);
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t o, i;
    lin_shape(cfg, l, &o, &i);
    int unused = all_moe && l >= QZ_LIN_GATE; /* no dense FFN anywhere */
    SLOT(&w->w[l], unused ? 0 : o * i);
    SLOT(&w->b[l], has_bias(cfg, l) && !unused ? o : 0);
  }
  SLOT(&w->router, E * H);
  for (int k = 0; k < 3; k++) SLOT(&w->ew[k], experts ? E * Ie * H : 0);
  for (int k = 0; k < 3; k++) SLOT(&w->sw[k], Is * H);
  SLOT(&w->shared_gate, Is > 0 ? H : 0);
#undef SLOT
  int64_t total = 0;
  for (int i = 0; i < n; i++) total += (sz[i] + 15) / 16 * 16;
  w->mem_bytes = (size_t)total * sizeof(float);
  QZ_CALL(qz_alloc_big(w->mem_bytes, "block weights", &w->mem));
  float *p = w->mem;
  for (int i = 0; i < n; i++) {
    *dst[i] = sz[i] > 0 ? p : NULL;
    p += (sz[i] + 15) / 16 * 16;
  }
  return QZ_OK;
}

void qz_block_weights_free(qz_block_weights *w) {
  if (!w) return;
  qz_free_big(&w->mem, w->mem_bytes);
  memset(w, 0, sizeof *w);
}

void qz_block_weights_copy(qz_block_weights *dst, const qz_block_weights *src) {
  memcpy(dst->mem, src->mem, src->mem_bytes);
  dst->moe = src->moe;
}

void qz_head_weights_free(qz_head_weights *h) {
  if (!h) return;
  if (h->lm_head == h->embed) h->lm_head = NULL;
  qz_free_big(&h->embed, 0);
  qz_free_big(&h->lm_head, 0);
  qz_free_big(&h->norm, 0);
  memset(h, 0, sizeof *h);
}
