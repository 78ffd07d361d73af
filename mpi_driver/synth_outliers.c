/* mpiquant synth --from DIR: a function-preserving outlier injection.
 *
 * Large LLMs have a few activation channels 10-1000x larger than the rest
 * at the linear inputs (LLM.int8(), SmoothQuant); the tiny test models have
 * none, so per-token activation quantization and the rotations that target
 * those outliers cannot be told apart on them.  This rewrites a real model
 * so that its linear inputs carry such channels while its fp function stays
 * the same (each pair below cancels exactly: a scale S on one side, 1/S on
 * the other; with S a power of two the products are exact in binary
 * floating point up to underflow):
 *   - K channels c of the hidden size: input_layernorm and
 *     post_attention_layernorm weights x S, the columns c of q/k/v resp.
 *     gate/up / S (the RMSNorm output is linear in its weight);
 *   - K channels of the intermediate size: up_proj rows (and bias) x S,
 *     down_proj columns / S (silu(g) * u is linear in u);
 *   - K channels of the key/value width: v_proj rows (and bias) x S, the
 *     matching o_proj input columns of every query head of that KV head / S
 *     (the attention output is a convex combination of values).
 * The same channels in every block (as in real models).  The weights of
 * the divided columns become small, so weight-only quantization loses
 * part of those channels too (documented in docs/methods.md).
 * Rank 0 only; one tensor in memory at a time. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/config.h"
#include "mpiquant/error.h"
#include "mpiquant/files.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"
#include "synth_outliers.h"

typedef struct {
  const qz_synth_outlier_opts *o;
  qz_model_config cfg;
  int64_t *ch_h, *ch_i, *ch_v; /* [K] channels of H, I, nkv * hd */
} outl;

static uint64_t mix(uint64_t z) { /* splitmix64 */
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* K distinct channels of [0, n), ascending, from (seed, tag). */
static int pick(int64_t n, int64_t K, uint64_t seed, uint64_t tag, int64_t **out) {
  QZ_CALL(qz_alloc((size_t)K, sizeof **out, "outlier channels", out));
  uint64_t t = 0;
  for (int64_t k = 0; k < K; k++) {
    int dup;
    do {
      int64_t c = (int64_t)(mix(mix(seed ^ mix(tag)) + t++) % (uint64_t)n);
      dup = 0;
      for (int64_t j = 0; j < k; j++) dup |= (*out)[j] == c;
      if (!dup) (*out)[k] = c;
    } while (dup);
  }
  for (int64_t a = 1; a < K; a++) /* insertion sort: K is small */
    for (int64_t b = a; b > 0 && (*out)[b - 1] > (*out)[b]; b--) {
      int64_t x = (*out)[b];
      (*out)[b] = (*out)[b - 1];
      (*out)[b - 1] = x;
    }
  return QZ_OK;
}

static void scale_cols(float *w, int64_t rows, int64_t cols, int64_t c, float f) {
  for (int64_t r = 0; r < rows; r++) w[r * cols + c] *= f;
}

static void scale_row(float *w, int64_t cols, int64_t r, float f) {
  for (int64_t j = 0; j < cols; j++) w[r * cols + j] *= f;
}

/* Apply the injection to tensor `name` (data [rows, cols], cols 1 for a
 * vector); returns 1 when it touched it. */
static int transform(const outl *s, const char *name, float *d, int64_t rows, int64_t cols) {
  int layer, n = 0;
  char rest[128];
  if (sscanf(name, "model.layers.%d.%127s%n", &layer, rest, &n) != 2) return 0;
  const float S = (float)s->o->scale, iS = 1.0f / S;
  const int64_t K = s->o->channels, hd = s->cfg.head_dim;
  const int64_t group = s->cfg.num_attention_heads / s->cfg.num_key_value_heads;
  const unsigned m = s->o->sites;
  const int norm = (m & QZ_OUTL_NORM) != 0, up = (m & QZ_OUTL_UP) != 0, v = (m & QZ_OUTL_V) != 0;
  int hit = 1;
  if (!strcmp(rest, "input_layernorm.weight") || !strcmp(rest, "post_attention_layernorm.weight")) {
    for (int64_t k = 0; norm && k < K; k++) d[s->ch_h[k]] *= S;
  } else if (!strcmp(rest, "self_attn.q_proj.weight") || !strcmp(rest, "self_attn.k_proj.weight") ||
             !strcmp(rest, "mlp.gate_proj.weight")) {
    for (int64_t k = 0; norm && k < K; k++) scale_cols(d, rows, cols, s->ch_h[k], iS);
  } else if (!strcmp(rest, "self_attn.v_proj.weight")) {
    for (int64_t k = 0; norm && k < K; k++) scale_cols(d, rows, cols, s->ch_h[k], iS);
    for (int64_t k = 0; v && k < K; k++) scale_row(d, cols, s->ch_v[k], S);
  } else if (!strcmp(rest, "self_attn.v_proj.bias")) {
    for (int64_t k = 0; v && k < K; k++) d[s->ch_v[k]] *= S;
  } else if (!strcmp(rest, "self_attn.o_proj.weight")) {
    for (int64_t k = 0; v && k < K; k++) { /* kv channel j of head h feeds q heads h*group.. */
      int64_t h = s->ch_v[k] / hd, j = s->ch_v[k] % hd;
      for (int64_t q = h * group; q < (h + 1) * group; q++) scale_cols(d, rows, cols, q * hd + j, iS);
    }
  } else if (!strcmp(rest, "mlp.up_proj.weight")) {
    for (int64_t k = 0; norm && k < K; k++) scale_cols(d, rows, cols, s->ch_h[k], iS);
    for (int64_t k = 0; up && k < K; k++) scale_row(d, cols, s->ch_i[k], S);
  } else if (!strcmp(rest, "mlp.up_proj.bias")) {
    for (int64_t k = 0; up && k < K; k++) d[s->ch_i[k]] *= S;
  } else if (!strcmp(rest, "mlp.down_proj.weight")) {
    for (int64_t k = 0; up && k < K; k++) scale_cols(d, rows, cols, s->ch_i[k], iS);
  } else {
    hit = 0;
  }
  return hit;
}

static int copy_side_files(const char *from, const char *to) {
  static const char *const files[] = {"tokenizer.json", "tokenizer_config.json",
                                      "tokenizer.model", "generation_config.json",
                                      "special_tokens_map.json", NULL};
  char a[PATH_MAX + 64], b[PATH_MAX + 64];
  snprintf(a, sizeof a, "%s/config.json", from);
  snprintf(b, sizeof b, "%s/config.json", to);
  QZ_CALL(qz_copy_file(a, b, 1));
  for (int i = 0; files[i]; i++) {
    snprintf(a, sizeof a, "%s/%s", from, files[i]);
    snprintf(b, sizeof b, "%s/%s", to, files[i]);
    QZ_CALL(qz_copy_file(a, b, 0));
  }
  return QZ_OK;
}

static int check_config(const qz_synth_outlier_opts *o, const qz_model_config *c) {
  QZ_CHECK(!qz_config_any_moe(c), QZ_ERR_UNSUPPORTED,
           "synth --from %s: mixture-of-experts models are not supported by the outlier "
           "injection", o->from);
  QZ_CHECK(!c->qk_norm, QZ_ERR_UNSUPPORTED,
           "synth --from %s: models with q/k norms are not supported by the outlier injection",
           o->from);
  int64_t kvd = c->num_key_value_heads * c->head_dim;
  int64_t lim = c->hidden_size < kvd ? c->hidden_size : kvd;
  lim = lim < c->intermediate_size ? lim : c->intermediate_size;
  QZ_CHECK(o->channels <= lim / 2, QZ_ERR_USAGE,
           "synth --from %s: --outlier-channels %ld must be at most half of the smallest "
           "width (hidden %lld, key/value %lld, intermediate %lld)", o->from, o->channels,
           (long long)c->hidden_size, (long long)kvd, (long long)c->intermediate_size);
  return QZ_OK;
}

static int write_tensors(outl *s, qz_st *st, qz_st_shards *sh, int *touched) {
  float *buf = NULL;
  size_t cap = 0;
  int rc = QZ_OK;
  for (int i = 0; i < qz_st_count(st) && !rc; i++) {
    const qz_tensor_info *t = qz_st_info_at(st, i);
    if (!qz_dtype_is_float(t->dtype)) { /* copied as they are */
      const void *raw = NULL;
      rc = qz_st_data(st, t->name, &raw);
      if (!rc) rc = qz_st_shards_add(sh, t->name, t->dtype, t->ndim, t->shape, raw, t->nbytes);
      continue;
    }
    int64_t rows = t->ndim ? t->shape[0] : 1, cols = rows ? t->nelem / rows : 0;
    rc = qz_grow((size_t)(t->nelem ? t->nelem : 1), sizeof *buf, "tensor buffer", &buf, &cap);
    if (!rc) rc = qz_st_read_f32(st, t->name, 0, rows, buf);
    if (rc) break;
    *touched += transform(s, t->name, buf, rows, t->ndim == 2 ? cols : 1);
    rc = qz_st_shards_add(sh, t->name, QZ_DT_F32, t->ndim, t->shape, buf,
                          t->nelem * (int64_t)sizeof *buf);
  }
  qz_free(&buf);
  return rc;
}

int qz_synth_outliers(const qz_synth_outlier_opts *o) {
  int st = QZ_OK;
  outl s = {.o = o};
  qz_st *src = NULL;
  qz_st_shards *sh = NULL;
  char p[PATH_MAX + 64];
  snprintf(p, sizeof p, "%s/config.json", o->from);
  QZ_CALL(qz_config_load(p, &s.cfg));
  QZ_CALL(check_config(o, &s.cfg));
  QZ_CALL(qz_st_open(o->from, &src));
  QZ_CALL_DONE(qz_config_check_tensors(&s.cfg, src));
  const int64_t K = o->channels;
  QZ_CALL_DONE(pick(s.cfg.hidden_size, K, (uint64_t)o->seed, 1, &s.ch_h));
  QZ_CALL_DONE(pick(s.cfg.intermediate_size, K, (uint64_t)o->seed, 2, &s.ch_i));
  QZ_CALL_DONE(pick(s.cfg.num_key_value_heads * s.cfg.head_dim, K, (uint64_t)o->seed, 3, &s.ch_v));
  QZ_CALL_DONE(qz_mkdir_p(o->out));
  QZ_CALL_DONE(copy_side_files(o->from, o->out));
  QZ_CALL_DONE(qz_st_shards_create(o->out, "synth", (int64_t)o->shard_mb << 20, 1, &sh));
  int touched = 0;
  QZ_CALL_DONE(write_tensors(&s, src, sh, &touched));
  QZ_CHECK_DONE(touched == 9 * (int)s.cfg.num_hidden_layers +
                               (s.cfg.qkv_bias ? 1 : 0) * (int)s.cfg.num_hidden_layers +
                               (s.cfg.mlp_bias ? 1 : 0) * (int)s.cfg.num_hidden_layers,
                QZ_ERR_FORMAT, "synth --from %s: %d tensors were transformed, expected 9 per "
                "block (norms, q/k/v, o, gate/up/down)", o->from, touched);
  QZ_CALL_DONE(qz_st_shards_finish(&sh));
  qz_info("synth: %s: %s with %ld outlier channels x %g at%s%s%s (first: hidden %lld, "
          "intermediate %lld, value %lld; seed %ld), the fp function unchanged",
          o->out, o->from, o->channels, o->scale, o->sites & QZ_OUTL_NORM ? " norm" : "",
          o->sites & QZ_OUTL_UP ? " up" : "", o->sites & QZ_OUTL_V ? " v" : "",
          (long long)s.ch_h[0], (long long)s.ch_i[0], (long long)s.ch_v[0], o->seed);
done:
  qz_st_shards_abort(&sh);
  qz_st_close(&src);
  qz_free(&s.ch_h);
  qz_free(&s.ch_i);
  qz_free(&s.ch_v);
  return st;
}
