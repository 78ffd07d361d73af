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

