/* Internal to io/: what the format decoders beside their encoders
 * (export_gptq.c: GPTQ v1, export_ct.c: compressed-tensors int8) need from
 * the safetensors reader, and what the reader calls of them. */
#ifndef MPIQUANT_IO_ST_IMPL_H
#define MPIQUANT_IO_ST_IMPL_H

#include <stdint.h>

#include "mpiquant/safetensors.h"

/* The mapped bytes of a tensor. Not collective. */
const uint8_t *qz_st_tensor_bytes(const qz_st *st, const qz_tensor_info *ti);
/* `bytes` of ti were converted: count them, and drop the mapped pages of
 * [p, p + len) (p may be NULL). Not collective. */
void qz_st_consumed(qz_st *st, const qz_tensor_info *ti, const uint8_t *p, int64_t len,
                    int64_t bytes);

/* GPTQ v1 (export_gptq.c): when `name` ("P.weight") is stored as
 * P.qweight/qzeros/scales/g_idx, its rows [row0, row0 + nrows) as f32 and
 * *found = 1; *found = 0 when there is no P.qweight; QZ_ERR_FORMAT when
 * the parts are malformed. Not collective. */
int qz_gptq_v1_read(qz_st *st, const char *name, int64_t row0, int64_t nrows, float *dst,
                    int *found);

/* compressed-tensors int8 (export_ct.c): rows of an I8 weight times its
 * per-row weight_scale (qz_st_is_int8_scaled). Not collective. */
int qz_ct_int8_read(qz_st *st, const qz_tensor_info *ti, int64_t row0, int64_t nrows,
                    float *dst);

/* FP8 (fp8_read.c): the scale of an F8 tensor, checked against it (NULL
 * *scale and QZ_OK when ti is not F8), and its rows as f32. Not collective. */
typedef struct {
  const qz_tensor_info *t;   /* X_scale or X_scale_inv */
  int kind;                  /* 0 tensor, 1 channel, 2 block */
  int64_t br, bc;            /* block (kind 2) */
} qz_fp8_scale;
int qz_fp8_scale_of(const qz_st *st, const qz_tensor_info *ti, qz_fp8_scale *sc);
int qz_fp8_read(qz_st *st, const qz_tensor_info *ti, int64_t row0, int64_t nrows,
                float *dst);
/* The reader's quantization hints (qz_st_set_quant). */
const qz_st_quant *qz_st_quant_of(const qz_st *st);

/* compressed-tensors pack-quantized (export_ct_read.c): "P.weight" stored as
 * P.weight_packed & co. *found = 0 when there is no P.weight_packed; shape
 * (may be NULL) or rows as f32. QZ_ERR_FORMAT naming the tensor when
 * malformed. Not collective. */
int qz_ct_packed_shape(const qz_st *st, const char *name, int64_t *out, int64_t *in,
                       int *found);
int qz_ct_packed_read(qz_st *st, const char *name, int64_t row0, int64_t nrows,
                      float *dst, int *found);

#endif
