/* FP8 weights as other tools ship them, read back as f32 rows by
 * qz_st_read_f32: an F8_E4M3 / F8_E5M2 tensor X [out, in] times its scale,
 *   X_scale      per tensor ([] / [1]), per output channel ([out] / [out, 1])
 *                (ModelOpt, llm-compressor FP8 / FP8_DYNAMIC) or per block
 *                [ceil(out/br), ceil(in/bc)] (compressed-tensors "block"),
 *   X_scale_inv  per block [ceil(out/br), ceil(in/bc)] (DeepSeek-V3; despite
 *                the name a multiplier: w = fp8 * scale_inv),
 * with br x bc from the model's quantization_config (weight_block_size,
 * block_structure; 128 x 128 when absent). FP8 codes decode exactly
 * (core/fp8.c) and the product is one f32 rounding, so the result does not
 * depend on how rows are split over ranks. */
#include <stdio.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/fp8.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"
#include "mpiquant/threads.h"
#include "st_impl.h"

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

static void shape_str(const qz_tensor_info *t, char *buf, size_t len) {
  size_t o = (size_t)snprintf(buf, len, "[");
  for (int d = 0; d < t->ndim && o < len; d++)
    o += (size_t)snprintf(buf + o, len - o, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
  if (o < len) snprintf(buf + o, len - o, "]");
}

int qz_fp8_scale_of(const qz_st *st, const qz_tensor_info *ti, qz_fp8_scale *sc) {
  *sc = (qz_fp8_scale){0};
  if (ti->dtype != QZ_DT_F8_E4M3 && ti->dtype != QZ_DT_F8_E5M2) return QZ_OK;
  QZ_CHECK(ti->ndim == 2, QZ_ERR_FORMAT,
           "%s: tensor '%s' is %s with %d dimensions; FP8 is read as a 2-D [out, in] "
           "linear weight with a scale", ti->file, ti->name, qz_dtype_name(ti->dtype),
           ti->ndim);
  const int64_t out = ti->shape[0], in = ti->shape[1];
  const qz_st_quant *q = qz_st_quant_of(st);
  const int64_t br = q->block[0] > 0 ? q->block[0] : 128, bc = q->block[1] > 0 ? q->block[1] : 128;
  char sn[512], si[512], shp[96];
  snprintf(sn, sizeof sn, "%s_scale", ti->name);
  snprintf(si, sizeof si, "%s_scale_inv", ti->name);
  const qz_tensor_info *s = qz_st_find(st, sn);
  int inv = 0;
  if (!s) {
    s = qz_st_find(st, si);
    inv = 1;
  }
  QZ_CHECK(s, QZ_ERR_FORMAT,
           "%s: tensor '%s' is %s but neither '%s' nor '%s' exists; an FP8 weight is "
           "read as its codes times a per-tensor, per-channel or block scale",
           ti->file, ti->name, qz_dtype_name(ti->dtype), sn, si);
  shape_str(s, shp, sizeof shp);
  QZ_CHECK(qz_dtype_is_float(s->dtype), QZ_ERR_FORMAT,
           "%s: scale '%s' of the FP8 tensor '%s' has dtype %s, expected a float dtype "
           "(F32, BF16, F16)", s->file, s->name, ti->name, qz_dtype_name(s->dtype));
  const int block = s->ndim == 2 && s->shape[0] == cdiv(out, br) && s->shape[1] == cdiv(in, bc);
  if (s->nelem == 1 && s->ndim <= 2) {
    sc->kind = 0;
  } else if (!inv && s->shape[0] == out && s->nelem == out && s->ndim <= 2) {
    sc->kind = 1;
  } else {
    QZ_CHECK(block, QZ_ERR_FORMAT,
             "%s: scale '%s' of the FP8 tensor '%s' [%lld, %lld] has shape %s; expected "
             "%s[ceil(out/%lld), ceil(in/%lld)] = [%lld, %lld] (block scales; the block "
             "comes from quantization_config weight_block_size / block_structure)",
             s->file, s->name, ti->name, (long long)out, (long long)in, shp,
             inv ? "[] / [1] or " : "[] / [1] (per tensor), [out] / [out, 1] (per channel) or ",
             (long long)br, (long long)bc, (long long)cdiv(out, br), (long long)cdiv(in, bc));
    sc->kind = 2;
  }
  sc->t = s;
  sc->br = br;
  sc->bc = bc;
  return QZ_OK;
}

int qz_fp8_read(qz_st *st, const qz_tensor_info *ti, int64_t row0, int64_t nrows,
                float *dst /* [nrows, in] */) {
  qz_fp8_scale sc;
  QZ_CALL(qz_fp8_scale_of(st, ti, &sc));
  const int64_t out = ti->shape[0], in = ti->shape[1];
  QZ_CHECK(row0 >= 0 && nrows >= 0 && row0 <= out && nrows <= out - row0, QZ_ERR_ARG,
           "%s: tensor '%s': rows [%lld, %lld) requested, tensor has %lld rows", ti->file,
           ti->name, (long long)row0, (long long)(row0 + nrows), (long long)out);
  if (nrows == 0) return QZ_OK;
  /* the scale rows these weight rows use */
  int64_t s0 = 0, sn = 1, slen = 1;
  if (sc.kind == 1) s0 = row0, sn = nrows;
  if (sc.kind == 2) s0 = row0 / sc.br, sn = (row0 + nrows - 1) / sc.br - s0 + 1,
                    slen = sc.t->shape[1];
  float *s = NULL;
  QZ_CALL(qz_alloc((size_t)(sn * slen), sizeof(float), "FP8 scale rows", &s));
  int st_ = qz_st_read_f32(st, sc.t->name, s0, sn, s);
  if (st_ != QZ_OK) {
    qz_free(&s);
    QZ_CALL(st_);
  }
  const uint8_t *src = qz_st_tensor_bytes(st, ti) + row0 * in;
  const int e4m3 = ti->dtype == QZ_DT_F8_E4M3;
  /* row r by one thread (threads.h) */
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(nrows * in))
  for (int64_t r = 0; r < nrows; r++) {
    const int64_t o = row0 + r;
    const uint8_t *c = src + r * in;
    float *d = dst + r * in;
    if (sc.kind < 2) {
      const float f = s[sc.kind == 1 ? r : 0];
      if (e4m3) qz_fp8_e4m3_decode(c, (size_t)in, f, d);
      else qz_fp8_e5m2_decode(c, (size_t)in, f, d);
      continue;
    }
    const float *srow = s + (o / sc.br - s0) * slen;
    for (int64_t j0 = 0; j0 < in; j0 += sc.bc) {
      const size_t n = (size_t)(in - j0 < sc.bc ? in - j0 : sc.bc);
      if (e4m3) qz_fp8_e4m3_decode(c + j0, n, srow[j0 / sc.bc], d + j0);
      else qz_fp8_e5m2_decode(c + j0, n, srow[j0 / sc.bc], d + j0);
    }
  }
  qz_free(&s);
  qz_st_consumed(st, ti, src, nrows * in, nrows * in);
  return QZ_OK;
}
