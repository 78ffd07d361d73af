/* The GPTQ v1 decoder beside its encoder (export_gptq.c): a
 * stored weight read back as f32 rows by qz_st_read_f32 (eval of an
 * export, ours or another tool's). Needs only the safetensors reader. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"
#include "st_impl.h"

/* GPTQ v1 linear "P.weight" stored as P.qweight I32 [in*bits/32, out]
 * (column o = the bitstream of codes W[o, 0..in), `bits` each, least
 * significant first), P.qzeros I32 [ng, out*bits/32] (row k = bitstream of
 * zero-1 over o), P.scales float [ng, out], P.g_idx I32 [in]. bits follows
 * from the shapes (qweight rows * 32 / in). */
typedef struct {
  const qz_tensor_info *qw, *qz, *sc, *gi;
  int bits;
  int64_t out, in, ng;
} gptq_parts;

/* 1: `name` is such a virtual weight (g filled); 0: no P.qweight;
 * -1: malformed (why says how). Not collective. */
static int gptq_find(const qz_st *st, const char *name, gptq_parts *g, char *why,
                     size_t len) {
  size_t n = strlen(name);
  if (n < 7 || strcmp(name + n - 7, ".weight") != 0 || n > 400) return 0;
  char nm[512];
  snprintf(nm, sizeof nm, "%.*s.qweight", (int)(n - 7), name);
  g->qw = qz_st_find(st, nm);
  if (!g->qw) return 0;
  snprintf(nm, sizeof nm, "%.*s.qzeros", (int)(n - 7), name);
  g->qz = qz_st_find(st, nm);
  snprintf(nm, sizeof nm, "%.*s.scales", (int)(n - 7), name);
  g->sc = qz_st_find(st, nm);
  snprintf(nm, sizeof nm, "%.*s.g_idx", (int)(n - 7), name);
  g->gi = qz_st_find(st, nm);
  if (!g->qz || !g->sc || !g->gi) {
    snprintf(why, len, "has qweight but lacks %s", !g->qz ? "qzeros" : !g->sc ? "scales" : "g_idx");
    return -1;
  }
  if (g->qw->dtype != QZ_DT_I32 || g->qz->dtype != QZ_DT_I32 || g->gi->dtype != QZ_DT_I32 ||
      !qz_dtype_is_float(g->sc->dtype) || g->qw->ndim != 2 || g->qz->ndim != 2 ||
      g->sc->ndim != 2 || g->gi->ndim != 1) {
    snprintf(why, len, "qweight/qzeros/g_idx must be 2-D/2-D/1-D I32 and scales 2-D float");
    return -1;
  }
  g->in = g->gi->shape[0];
  g->out = g->qw->shape[1];
  g->ng = g->sc->shape[0];
  int64_t bits = g->in > 0 && (g->qw->shape[0] * 32) % g->in == 0 ? g->qw->shape[0] * 32 / g->in : 0;
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) {
    snprintf(why, len, "qweight [%lld, %lld] with g_idx [%lld] implies %lld-bit codes (2/3/4/8)",
             (long long)g->qw->shape[0], (long long)g->qw->shape[1], (long long)g->in,
             (long long)bits);
    return -1;
  }
  g->bits = (int)bits;
  if (g->sc->shape[1] != g->out || g->qz->shape[0] != g->ng ||
      g->qz->shape[1] * 32 != g->out * bits || g->ng < 1) {
    snprintf(why, len, "scales [%lld, %lld] / qzeros [%lld, %lld] do not match %lld outputs "
             "at %d bits", (long long)g->sc->shape[0], (long long)g->sc->shape[1],
             (long long)g->qz->shape[0], (long long)g->qz->shape[1], (long long)g->out,
             g->bits);
    return -1;
  }
  return 1;
}

int qz_st_gptq_shape(const qz_st *st, const char *name, int64_t *out, int64_t *in,
                     int *bits) {
  gptq_parts g;
  char why[256] = "";
  int k = gptq_find(st, name, &g, why, sizeof why);
  QZ_CHECK(k >= 0, QZ_ERR_FORMAT, "%s: GPTQ tensor '%s' %s", qz_st_origin(st), name, why);
  QZ_CHECK(k == 1, QZ_ERR_FORMAT, "%s: tensor '%s' is missing (no .qweight either)",
           qz_st_origin(st), name);
  *out = g.out;
  *in = g.in;
  *bits = g.bits;
  return QZ_OK;
}

static uint32_t le32_at(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* `bits` bits at bit offset `bit` of the bitstream whose 32-bit words are
 * w[k * stride] (k = word index). */
static uint32_t bits_at(const uint8_t *w, int64_t stride, int64_t bit, int bits) {
  int64_t k = bit >> 5;
  int sh = (int)(bit & 31);
  uint64_t v = le32_at(w + 4 * k * stride) >> sh;
  if (sh + bits > 32) v |= (uint64_t)le32_at(w + 4 * (k + 1) * stride) << (32 - sh);
  return (uint32_t)v & ((1u << bits) - 1u);
}

static float float_at(const qz_tensor_info *ti, const uint8_t *p, int64_t i) {
  switch (ti->dtype) {
  case QZ_DT_F16: { uint16_t h; memcpy(&h, p + 2 * i, 2); return qz_f16_to_f32(h); }
  case QZ_DT_BF16: { uint16_t h; memcpy(&h, p + 2 * i, 2); return qz_bf16_to_f32(h); }
  case QZ_DT_F64: { double d; memcpy(&d, p + 8 * i, 8); return (float)d; }
  default: { float f; memcpy(&f, p + 4 * i, 4); return f; }
  }
}

/* Rows [row0, row0 + nrows) (output channels) of a GPTQ v1 weight:
 * W[o, i] = scales[g, o] * (q[o, i] - (z[g, o] + 1)), g = g_idx[i]. */
static int read_gptq(qz_st *st, const char *name, const gptq_parts *g, int64_t row0,
                     int64_t nrows, float *dst) {
  QZ_CHECK(row0 >= 0 && nrows >= 0 && row0 + nrows <= g->out, QZ_ERR_ARG,
           "%s: GPTQ tensor '%s': rows [%lld, %lld) requested, it has %lld outputs",
           g->qw->file, name, (long long)row0, (long long)(row0 + nrows), (long long)g->out);
  const uint8_t *qw = qz_st_tensor_bytes(st, g->qw), *qz = qz_st_tensor_bytes(st, g->qz);
  const uint8_t *sc = qz_st_tensor_bytes(st, g->sc), *gi = qz_st_tensor_bytes(st, g->gi);
  const int64_t in = g->in, out = g->out, wz = g->qz->shape[1];
  for (int64_t i = 0; i < in; i++) {
    int32_t k = (int32_t)le32_at(gi + 4 * i);
    QZ_CHECK(k >= 0 && k < g->ng, QZ_ERR_FORMAT,
             "%s: GPTQ tensor '%s': g_idx[%lld] = %d outside the %lld groups", g->gi->file,
             name, (long long)i, (int)k, (long long)g->ng);
  }
  for (int64_t r = 0; r < nrows; r++) {
    const int64_t o = row0 + r;
    float *d = dst + r * in;
    for (int64_t i = 0; i < in; i++) {
      int32_t k = (int32_t)le32_at(gi + 4 * i);
      uint32_t q = bits_at(qw + 4 * o, out, i * g->bits, g->bits);
      uint32_t z = bits_at(qz + 4 * (int64_t)k * wz, 1, o * g->bits, g->bits) + 1u;
      d[i] = float_at(g->sc, sc, (int64_t)k * out + o) * ((float)q - (float)z);
    }
  }
  qz_st_consumed(st, g->qw, NULL, 0, nrows * in * g->bits / 8);
  return QZ_OK;
}

int qz_gptq_v1_read(qz_st *st, const char *name, int64_t row0, int64_t nrows, float *dst,
                    int *found) {
  gptq_parts g;
  char why[256] = "";
  int k = gptq_find(st, name, &g, why, sizeof why);
  QZ_CHECK(k >= 0, QZ_ERR_FORMAT, "%s: GPTQ tensor '%s' %s", qz_st_origin(st), name, why);
  *found = k == 1;
  return k == 1 ? read_gptq(st, name, &g, row0, nrows, dst) : QZ_OK;
}
