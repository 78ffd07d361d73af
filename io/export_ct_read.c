/* The compressed-tensors int-quantized decoder beside its encoder (export_ct.c): a
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

/* compressed-tensors int-quantized: `X.weight` I8 [out, in] with a float
 * `X.weight_scale` of out elements ([out, 1] or [out]); the f32 weight is
 * q * scale[row]. Returns the scale's info, or NULL when `name` is not such
 * a tensor. Not collective. */
static const qz_tensor_info *i8_scale_of(const qz_st *st, const qz_tensor_info *ti) {
  if (ti->dtype != QZ_DT_I8 || ti->ndim != 2) return NULL;
  char sn[512];
  if (snprintf(sn, sizeof sn, "%s_scale", ti->name) >= (int)sizeof sn) return NULL;
  const qz_tensor_info *si = qz_st_find(st, sn);
  if (!si || !qz_dtype_is_float(si->dtype) || si->nelem != ti->shape[0] ||
      si->shape[0] != ti->shape[0])
    return NULL;
  return si;
}

int qz_st_is_int8_scaled(const qz_st *st, const char *name) {
  const qz_tensor_info *ti = qz_st_find(st, name);
  return ti && i8_scale_of(st, ti) != NULL;
}

int qz_ct_int8_read(qz_st *st, const qz_tensor_info *ti, int64_t row0, int64_t nrows,
                    float *dst) {
  const qz_tensor_info *si = i8_scale_of(st, ti);
  int64_t rows = ti->shape[0], rowlen = ti->shape[1];
  QZ_CHECK(row0 >= 0 && nrows >= 0 && row0 <= rows && nrows <= rows - row0,
           QZ_ERR_ARG, "%s: tensor '%s': rows [%lld, %lld) requested, tensor "
           "has %lld rows", ti->file, ti->name, (long long)row0,
           (long long)(row0 + nrows), (long long)rows);
  if (nrows == 0) return QZ_OK;
  float *sc = NULL;
  QZ_CALL(qz_alloc((size_t)nrows, sizeof(float), "weight_scale rows", &sc));
  int rc = qz_st_read_f32(st, si->name, row0, nrows, sc);
  if (rc != QZ_OK) {
    free(sc);
    QZ_CALL(rc);
  }
  const int8_t *src = (const int8_t *)qz_st_tensor_bytes(st, ti) + row0 * rowlen;
  for (int64_t r = 0; r < nrows; r++)
    for (int64_t j = 0; j < rowlen; j++)
      dst[r * rowlen + j] = (float)src[r * rowlen + j] * sc[r];
  free(sc);
  qz_st_consumed(st, ti, (const uint8_t *)src, nrows * rowlen, nrows * rowlen);
  return QZ_OK;
}


/* ---- pack-quantized ---------------------------------------------------- */

/* The parts of a pack-quantized linear "P.weight" (layout: safetensors.h). */
typedef struct {
  const qz_tensor_info *wp, *ws, *sc, *zp, *gi;
  int bits;
  int64_t out, in, ng;
} packed_parts;

static int64_t le_int(const uint8_t *p, int size) {
  uint64_t v = 0;
  for (int k = size - 1; k >= 0; k--) v = v << 8 | p[k];
  return size == 4 ? (int64_t)(int32_t)(uint32_t)v : (int64_t)v;
}

static const qz_tensor_info *part(const qz_st *st, const char *name, size_t n,
                                  const char *suffix) {
  char nm[512];
  snprintf(nm, sizeof nm, "%.*s.%s", (int)n, name, suffix);
  return qz_st_find(st, nm);
}

/* 1: found and valid; 0: no P.weight_packed; -1: malformed (why). */
static int packed_find(const qz_st *st, const char *name, packed_parts *p, char *why,
                       size_t len) {
  size_t n = strlen(name);
  if (n < 7 || strcmp(name + n - 7, ".weight") != 0 || n > 400) return 0;
  n -= 7;
  *p = (packed_parts){.wp = part(st, name, n, "weight_packed")};
  if (!p->wp) return 0;
  p->ws = part(st, name, n, "weight_shape");
  p->sc = part(st, name, n, "weight_scale");
  p->zp = part(st, name, n, "weight_zero_point");
  p->gi = part(st, name, n, "weight_g_idx");
  if (!p->ws || !p->sc) {
    snprintf(why, len, "has weight_packed but no %s", !p->ws ? "weight_shape" : "weight_scale");
    return -1;
  }
  if (p->wp->dtype != QZ_DT_I32 || p->wp->ndim != 2 || p->ws->ndim != 1 ||
      p->ws->shape[0] != 2 || (p->ws->dtype != QZ_DT_I32 && p->ws->dtype != QZ_DT_I64) ||
      !qz_dtype_is_float(p->sc->dtype) || p->sc->ndim != 2 ||
      (p->zp && (p->zp->dtype != QZ_DT_I32 || p->zp->ndim != 2)) ||
      (p->gi && (p->gi->dtype != QZ_DT_I32 || p->gi->ndim != 1))) {
    snprintf(why, len, "needs weight_packed I32 2-D, weight_shape I32/I64 [2], "
             "weight_scale float 2-D, weight_zero_point I32 2-D, weight_g_idx I32 1-D");
    return -1;
  }
  const uint8_t *ws = qz_st_tensor_bytes(st, p->ws);
  int wsz = qz_dtype_size(p->ws->dtype);
  p->out = le_int(ws, wsz);
  p->in = le_int(ws + wsz, wsz);
  p->ng = p->sc->shape[1];
  const int64_t cols = p->wp->shape[1];
  int hint = qz_st_quant_of(st)->packed_bits;
  static const int guess[] = {4, 8, 2, 3};
  for (int k = 0; k < 4 && !hint && p->in > 0; k++)
    if ((p->in + 32 / guess[k] - 1) / (32 / guess[k]) == cols) hint = guess[k];
  p->bits = hint;
  const int f = hint >= 1 && hint <= 8 ? 32 / hint : 0;
  if (!f || p->out < 1 || p->in < 1 || p->in > ((int64_t)1 << 48) || p->wp->shape[0] != p->out ||
      cols != (p->in + f - 1) / f) {
    snprintf(why, len, "weight_packed [%lld, %lld] does not hold weight_shape [%lld, %lld] "
             "at %d bits (%d values per int32)", (long long)p->wp->shape[0], (long long)cols,
             (long long)p->out, (long long)p->in, hint, f);
    return -1;
  }
  if (p->sc->shape[0] != p->out || p->ng < 1 || p->ng > p->in ||
      (!p->gi && p->in % p->ng != 0)) {
    snprintf(why, len, "weight_scale [%lld, %lld] does not fit weight_shape [%lld, %lld] "
             "(one scale per output and group; groups divide the input features)",
             (long long)p->sc->shape[0], (long long)p->ng, (long long)p->out, (long long)p->in);
    return -1;
  }
  if (p->zp && (p->zp->shape[0] != (p->out + f - 1) / f || p->zp->shape[1] != p->ng)) {
    snprintf(why, len, "weight_zero_point [%lld, %lld], expected [%lld, %lld] (packed "
             "along the output dimension)", (long long)p->zp->shape[0],
             (long long)p->zp->shape[1], (long long)((p->out + f - 1) / f), (long long)p->ng);
    return -1;
  }
  if (p->gi && p->gi->shape[0] != p->in) {
    snprintf(why, len, "weight_g_idx has %lld entries, expected in_features %lld",
             (long long)p->gi->shape[0], (long long)p->in);
    return -1;
  }
  return 1;
}

int qz_ct_packed_shape(const qz_st *st, const char *name, int64_t *out, int64_t *in,
                       int *found) {
  packed_parts p;
  char why[320] = "";
  int k = packed_find(st, name, &p, why, sizeof why);
  QZ_CHECK(k >= 0, QZ_ERR_FORMAT, "%s: compressed-tensors pack-quantized tensor '%s' %s",
           qz_st_origin(st), name, why);
  *found = k;
  if (k && out) *out = p.out;
  if (k && in) *in = p.in;
  return QZ_OK;
}

/* value k (bits wide) of the little-endian word at p */
static uint32_t field(const uint8_t *p, int k, int bits) {
  uint32_t w = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
               (uint32_t)p[3] << 24;
  return (w >> (k * bits)) & ((1u << bits) - 1u);
}

int qz_ct_packed_read(qz_st *st, const char *name, int64_t row0, int64_t nrows,
                      float *dst /* [nrows, in] */, int *found) {
  packed_parts p;
  char why[320] = "";
  int k = packed_find(st, name, &p, why, sizeof why);
  QZ_CHECK(k >= 0, QZ_ERR_FORMAT, "%s: compressed-tensors pack-quantized tensor '%s' %s",
           qz_st_origin(st), name, why);
  *found = k;
  if (!k) return QZ_OK;
  QZ_CHECK(row0 >= 0 && nrows >= 0 && row0 <= p.out && nrows <= p.out - row0, QZ_ERR_ARG,
           "%s: tensor '%s': rows [%lld, %lld) requested, it has %lld outputs",
           p.wp->file, name, (long long)row0, (long long)(row0 + nrows), (long long)p.out);
  if (nrows == 0) return QZ_OK;
  const int bits = p.bits, f = 32 / bits;
  const int64_t in = p.in, ng = p.ng, G = p.in / p.ng, cols = p.wp->shape[1];
  const uint8_t *gi = p.gi ? qz_st_tensor_bytes(st, p.gi) : NULL;
  for (int64_t c = 0; gi && c < in; c++) {
    int64_t g = le_int(gi + 4 * c, 4);
    QZ_CHECK(g >= 0 && g < ng, QZ_ERR_FORMAT,
             "%s: tensor '%s': weight_g_idx[%lld] = %lld outside the %lld groups",
             p.gi->file, name, (long long)c, (long long)g, (long long)ng);
  }
  float *sc = NULL;
  QZ_CALL(qz_alloc((size_t)(nrows * ng), sizeof(float), "weight_scale rows", &sc));
  int rc = qz_st_read_f32(st, p.sc->name, row0, nrows, sc);
  if (rc != QZ_OK) {
    qz_free(&sc);
    QZ_CALL(rc);
  }
  const uint8_t *wp = qz_st_tensor_bytes(st, p.wp) + 4 * row0 * cols;
  const uint8_t *zp = p.zp ? qz_st_tensor_bytes(st, p.zp) : NULL;
  const uint32_t zsym = 1u << (bits - 1);
  for (int64_t r = 0; r < nrows; r++) {
    const int64_t o = row0 + r;
    for (int64_t c = 0; c < in; c++) {
      const int64_t g = gi ? le_int(gi + 4 * c, 4) : c / G;
      const uint32_t q = field(wp + 4 * (r * cols + c / f), (int)(c % f), bits);
      const uint32_t z = zp ? field(zp + 4 * ((o / f) * ng + g), (int)(o % f), bits) : zsym;
      dst[r * in + c] = ((float)q - (float)z) * sc[r * ng + g];
    }
  }
  qz_free(&sc);
  qz_st_consumed(st, p.wp, wp, 4 * nrows * cols, 4 * nrows * cols);
  return QZ_OK;
}
