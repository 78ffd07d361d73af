/* QuaRot-style rotations of a Llama block and the online parts of the
 * rotated forward (mpiquant/rotate.h). */
#include "mpiquant/rotate.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/hadamard.h"
#include "mpiquant/mem.h"
#include "rotate_impl.h"

static const char *const kind_names[] = {"none", "hadamard", "duquant", NULL};

const char *qz_rot_kind_name(int kind) {
  return kind >= 0 && kind <= QZ_ROT_DUQUANT ? kind_names[kind] : NULL;
}

int qz_rot_kind_find(const char *name) {
  for (int i = 0; kind_names[i]; i++)
    if (strcmp(kind_names[i], name) == 0) return i;
  return -1;
}

/* splitmix64: the sign of element i of stream `tag` for a seed */
static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static int orth_create(int64_t d, uint64_t seed, uint64_t tag, int signs, orth *o) {
  QZ_CALL(qz_rotation_create(d, mix(seed ^ mix(tag)), &o->h));
  if (!signs) return QZ_OK;
  QZ_CALL(qz_alloc((size_t)d, sizeof *o->sign, "rotation signs", &o->sign));
  for (int64_t i = 0; i < d; i++)
    o->sign[i] = (mix(mix(seed ^ mix(tag)) + (uint64_t)i) >> 63) ? -1.0f : 1.0f;
  return QZ_OK;
}

static void orth_free(orth *o) {
  qz_rotation_destroy(&o->h);
  qz_free(&o->sign);
}

/* Rows x [n, d] <- x Q with Q = D H (inverse: x Q^T = (x H^T) D). */
static void orth_rows(const orth *o, float *x, int64_t n, int inverse) {
  const int64_t d = qz_rotation_dim(o->h);
  if (o->sign && !inverse)
    for (int64_t r = 0; r < n; r++)
      for (int64_t i = 0; i < d; i++) x[r * d + i] *= o->sign[i];
  qz_rotation_apply_rows(o->h, x, n, inverse);
  if (o->sign && inverse)
    for (int64_t r = 0; r < n; r++)
      for (int64_t i = 0; i < d; i++) x[r * d + i] *= o->sign[i];
}

void qz_rot_destroy(qz_rot **pr) {
  qz_rot *r = *pr;
  if (!r) return;
  orth_free(&r->q1);
  orth_free(&r->r2);
  orth_free(&r->r3);
  orth_free(&r->r4);
  orth_free(&r->rh);
  qz_free(&r->tmp);
  qz_free(&r->otmp);
  qz_duq_free(r);
  qz_free(pr);
}

int qz_rot_create(const qz_model_config *cfg, const qz_rot_params *p, qz_rot **out) {
  *out = NULL;
  QZ_CHECK(p->kind >= QZ_ROT_NONE && p->kind <= QZ_ROT_DUQUANT, QZ_ERR_ARG,
           "rotation kind %d unknown", p->kind);
  QZ_CHECK(p->kind != QZ_ROT_DUQUANT || (p->block >= 1 && p->block <= 4096 &&
                                         p->smooth >= 0 && p->smooth <= 1),
           QZ_ERR_ARG, "DuQuant: block %d must be in 1..4096 and smooth %g in [0, 1]",
           p->block, p->smooth);
  QZ_CHECK(p->act_bits == 0 || (p->act_bits >= 2 && p->act_bits <= 16), QZ_ERR_ARG,
           "activation bits %d: 0 (off) or 2..16", p->act_bits);
  QZ_CHECK(p->kv_bits == 0 || (p->kv_bits >= 2 && p->kv_bits <= 16), QZ_ERR_ARG,
           "KV-cache bits %d: 0 (off) or 2..16", p->kv_bits);
  QZ_CHECK(p->kv_clip >= 0 && p->kv_clip <= 1, QZ_ERR_ARG,
           "KV-cache clip ratio %g: must be in (0, 1]", p->kv_clip);
  QZ_CHECK(p->act_clip > 0 && p->act_clip <= 1, QZ_ERR_ARG,
           "activation clip ratio %g: must be in (0, 1]", p->act_clip);
  if (p->kind == QZ_ROT_HADAMARD) /* output-side rotations would move the biases */
    QZ_CHECK(!cfg->qkv_bias && !cfg->o_bias && !cfg->mlp_bias, QZ_ERR_UNSUPPORTED,
             "Hadamard rotation of a model with linear biases (config.json attention_bias "
             "/ mlp_bias) is not supported yet (--rotate duquant transforms inputs only and "
             "works)");
  qz_rot *r = NULL;
  QZ_CALL(qz_calloc(1, sizeof *r, "rotation", &r));
  r->p = *p;
  r->H = cfg->hidden_size;
  r->I = cfg->intermediate_size;
  r->nq = cfg->num_attention_heads;
  r->nkv = cfg->num_key_value_heads;
  r->hd = cfg->head_dim;
  r->hq = (hook_ctx){r, 1};
  r->hc = (hook_ctx){r, 0};
  int st = QZ_OK;
  snprintf(r->desc, sizeof r->desc, "none");
  if (p->kind == QZ_ROT_HADAMARD) {
    int64_t a = r->H > r->hd ? r->H : r->hd;
    st = orth_create(r->H, p->seed, 1, 1, &r->q1);
    if (!st) st = orth_create(r->hd, p->seed, 2, 1, &r->r2);
    if (!st) st = orth_create(r->hd, p->seed, 3, 0, &r->r3);
    if (!st) st = orth_create(r->I, p->seed, 4, 1, &r->r4);
    if (!st) st = qz_alloc((size_t)(a * COLS), sizeof *r->tmp, "rotation scratch", &r->tmp);
    if (!st && p->o_heads) st = orth_create(r->nq, p->seed, 5, 0, &r->rh);
    if (!st && p->o_heads)
      st = qz_alloc((size_t)(r->nq * r->hd), sizeof *r->otmp, "rotation scratch", &r->otmp);
    if (!st)
      snprintf(r->desc, sizeof r->desc, "Q1 %s, R2/R3 %s, R4 %s%s%s (seed %llu)",
               qz_rotation_kind(r->q1.h), qz_rotation_kind(r->r2.h),
               qz_rotation_kind(r->r4.h), p->o_heads ? ", o heads " : "",
               p->o_heads ? qz_rotation_kind(r->rh.h) : "", (unsigned long long)p->seed);
  }
  if (!st && p->kind == QZ_ROT_DUQUANT) {
    st = qz_duq_alloc(r, cfg);
    if (!st)
      snprintf(r->desc, sizeof r->desc,
               "DuQuant blocks q/k/v %lld, o %lld, gate/up %lld, down %lld, %s, smooth %g",
               (long long)r->dq[0].b, (long long)r->dq[1].b, (long long)r->dq[2].b,
               (long long)r->dq[3].b, p->perm ? "zigzag" : "no permutation", p->smooth);
  }
  if (st) {
    qz_rot_destroy(&r);
    return st;
  }
  *out = r;
  return QZ_OK;
}

const qz_rot_params *qz_rot_params_of(const qz_rot *r) { return &r->p; }
const char *qz_rot_describe(const qz_rot *r) { return r->desc; }

/* w [m, n] <- its columns rotated: w' = Q^T w (Q of size m), COLS
 * columns at a time transposed into tmp [COLS, m]. */
static void rotate_cols(const orth *o, float *w, int64_t m, int64_t n, float *tmp) {
  for (int64_t j0 = 0; j0 < n; j0 += COLS) {
    int64_t c = n - j0 < COLS ? n - j0 : COLS;
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < c; j++) tmp[j * m + i] = w[i * n + j0 + j];
    orth_rows(o, tmp, c, 0); /* rows of w^T times Q */
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < c; j++) w[i * n + j0 + j] = tmp[j * m + i];
  }
}

/* Rows x [n, nq * hd] <- x (H_nq (x) I_hd): each row as [nq, hd], the
 * heads mixed per position j (the row transposed through otmp). */
static void heads_rows(qz_rot *r, float *x, int64_t n) {
  const int64_t nq = r->nq, hd = r->hd;
  for (int64_t t = 0; t < n; t++) {
    float *row = x + t * nq * hd;
    for (int64_t h = 0; h < nq; h++)
      for (int64_t j = 0; j < hd; j++) r->otmp[j * nq + h] = row[h * hd + j];
    orth_rows(&r->rh, r->otmp, hd, 0);
    for (int64_t h = 0; h < nq; h++)
      for (int64_t j = 0; j < hd; j++) row[h * hd + j] = r->otmp[j * nq + h];
  }
}

/* A reader of the normed stream: W <- W diag(norm) Q1. */
static void fuse_reader(qz_rot *r, float *w, int64_t out, const float *norm) {
  for (int64_t i = 0; i < out; i++)
    for (int64_t j = 0; j < r->H; j++) w[i * r->H + j] *= norm[j];
  orth_rows(&r->q1, w, out, 0);
}

void qz_rot_fuse_block(qz_rot *r, qz_block_weights *w) {
  if (r->p.kind != QZ_ROT_HADAMARD) return; /* DuQuant: per group, qz_rot_duq_fuse */
  const int64_t H = r->H, I = r->I, hd = r->hd, qd = r->nq * hd, kvd = r->nkv * hd;
  fuse_reader(r, w->w[QZ_LIN_Q], qd, w->attn_norm);
  fuse_reader(r, w->w[QZ_LIN_K], kvd, w->attn_norm);
  fuse_reader(r, w->w[QZ_LIN_V], kvd, w->attn_norm);
  fuse_reader(r, w->w[QZ_LIN_GATE], I, w->ffn_norm);
  fuse_reader(r, w->w[QZ_LIN_UP], I, w->ffn_norm);
  for (int64_t j = 0; j < H; j++) w->attn_norm[j] = w->ffn_norm[j] = 1.0f;
  /* R2: each head's block of v rows [hd, H] <- R2^T block */
  for (int64_t h = 0; h < r->nkv; h++) rotate_cols(&r->r2, w->w[QZ_LIN_V] + h * hd * H, hd, H, r->tmp);
  /* o [H, qd]: each row's head slices times R2, then the rows Q1^T o */
  orth_rows(&r->r2, w->w[QZ_LIN_O], H * r->nq, 0);
  if (r->p.o_heads) heads_rows(r, w->w[QZ_LIN_O], H); /* its input arrives as x RH */
  rotate_cols(&r->q1, w->w[QZ_LIN_O], H, qd, r->tmp);
  /* down [H, I]: rows times R4 (its input arrives as x R4), then Q1^T down */
  orth_rows(&r->r4, w->w[QZ_LIN_DOWN], H, 0);
  rotate_cols(&r->q1, w->w[QZ_LIN_DOWN], H, I, r->tmp);
}

int qz_rot_probe(qz_rot *r, int i, float *row, int64_t *n) {
  if (r->p.kind != QZ_ROT_HADAMARD || i < 0 || i > (r->p.o_heads ? 4 : 3)) return 0;
  const orth *o[5] = {&r->q1, &r->r2, &r->r3, &r->r4, &r->rh};
  *n = qz_rotation_dim(o[i]->h);
  if (row) {
    for (int64_t j = 0; j < *n; j++) row[j] = j == 0 ? 1.0f : 0.0f;
    orth_rows(o[i], row, 1, 0);
  }
  return 1;
}

void qz_rot_stream(qz_rot *r, float *x, int64_t n, int inverse) {
  if (r->p.kind != QZ_ROT_HADAMARD) return;
  orth_rows(&r->q1, x, n, inverse);
}

/* ---- quantizers ------------------------------------------------------- */

static void quant_row(const float *a, int64_t n, int bits, int asym, float clip, float *b) {
  if (!asym) {
    const float qmax = (float)((1 << (bits - 1)) - 1);
    float mx = 0.0f;
    for (int64_t i = 0; i < n; i++) mx = fabsf(a[i]) > mx ? fabsf(a[i]) : mx;
    mx *= clip;
    float d = (mx < 1e-5f ? 1e-5f : mx) / qmax;
    for (int64_t i = 0; i < n; i++) {
      float q = rintf(a[i] / d);
      q = q > qmax ? qmax : q < -qmax ? -qmax : q;
      b[i] = q * d;
    }
    return;
  }
  const float qmax = (float)((1 << bits) - 1);
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = 0; i < n; i++) {
    lo = a[i] < lo ? a[i] : lo;
    hi = a[i] > hi ? a[i] : hi;
  }
  lo *= clip;
  hi *= clip;
  float d = hi - lo < 1e-5f ? 1e-5f / qmax : (hi - lo) / qmax;
  float z = rintf(-lo / d);
  for (int64_t i = 0; i < n; i++) {
    float q = rintf(a[i] / d) + z;
    q = q > qmax ? qmax : q < 0.0f ? 0.0f : q;
    b[i] = (q - z) * d;
  }
}

void qz_act_fake_quant_ex(const float *x, int64_t nrows, int64_t n, int bits, int asym,
                          double clip, float *y) {
  for (int64_t r = 0; r < nrows; r++) quant_row(x + r * n, n, bits, asym, (float)clip, y + r * n);
}

/* ---- hooks -------------------------------------------------------------- */

static void act_fn(void *ctx, int layer, qz_linear lin, const float *x, int64_t nrows,
                   int64_t n, float *y) {
  const hook_ctx *c = ctx;
  qz_rot *r = c->r;
  if (y != x) memcpy(y, x, (size_t)(nrows * n) * sizeof *y);
  if (lin == QZ_LIN_DOWN && r->p.kind == QZ_ROT_HADAMARD) orth_rows(&r->r4, y, nrows, 0);
  if (lin == QZ_LIN_O && r->p.kind == QZ_ROT_HADAMARD && r->p.o_heads) heads_rows(r, y, nrows);
  int g = qz_duq_group_of(lin);
  if (r->p.kind == QZ_ROT_DUQUANT && g >= 0 && r->dq[g].layer == layer)
    qz_duq_rows(r, g, y, nrows, 0);
  if (c->quantize && r->p.act_bits &&
      (!r->p.act_groups || (g >= 0 && (r->p.act_groups >> g) & 1u)))
    qz_act_fake_quant_ex(y, nrows, n, r->p.act_bits, r->p.act_asym, r->p.act_clip, y);
}

qz_act_hook qz_rot_act_hook(qz_rot *r, int quantize) {
  return (qz_act_hook){.fn = act_fn, .ctx = quantize ? &r->hq : &r->hc};
}

static void stream_fn(void *ctx, float *x, int64_t nrows, int64_t n, int inverse) {
  (void)n;
  qz_rot_stream(ctx, x, nrows, inverse);
}

/* R3 on queries and keys (only needed when keys are quantized), then keys
 * and values per token and head, asymmetric, range x kv_clip. */
static void attn_fn(void *ctx, int layer, float *q, float *k, float *v, int64_t nrows,
                    int64_t nq, int64_t nkv, int64_t hd) {
  (void)layer;
  qz_rot *r = ctx;
  if (!r->p.kv_bits) return;
  if (r->p.kind == QZ_ROT_HADAMARD) {
    orth_rows(&r->r3, q, nrows * nq, 0);
    orth_rows(&r->r3, k, nrows * nkv, 0);
  }
  const double clip = r->p.kv_clip > 0 ? r->p.kv_clip : 1.0;
  qz_act_fake_quant_ex(k, nrows * nkv, hd, r->p.kv_bits, 1, clip, k);
  qz_act_fake_quant_ex(v, nrows * nkv, hd, r->p.kv_bits, 1, clip, v);
}

qz_model_hook qz_rot_model_hook(qz_rot *r) {
  return (qz_model_hook){.stream = r->p.kind == QZ_ROT_HADAMARD ? stream_fn : NULL,
                         .attn = r->p.kv_bits ? attn_fn : NULL,
                         .ctx = r};
}
