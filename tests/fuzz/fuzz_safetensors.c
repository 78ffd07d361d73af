/* libFuzzer target: a whole safetensors file image (header parser, offset
 * validation, coverage check, conversions of whatever validated, the GPTQ v1
 * virtual weights P.weight of every P.qweight and compressed-tensors int8
 * weights with their X_scale). A crash, a sanitizer report or a read outside
 * the image is a bug. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* a private copy whose end is exactly the end of the input, so ASan sees
   * any read past it */
  uint8_t *img = malloc(size ? size : 1);
  if (!img) return 0;
  if (size) memcpy(img, data, size);
  qz_st *st = NULL;
  if (qz_st_open_memory(img, size, "fuzz.safetensors", &st) == QZ_OK) {
    for (int i = 0; i < qz_st_count(st); i++) {
      const qz_tensor_info *ti = qz_st_info_at(st, i);
      const void *p = NULL;
      if (qz_st_data(st, ti->name, &p) != QZ_OK) abort(); /* listed => found */
      if (ti->nbytes > 0) {
        volatile uint8_t sink = ((const uint8_t *)p)[ti->nbytes - 1];
        (void)sink;
      }
      int64_t rows = ti->ndim ? ti->shape[0] : 1;
      if (rows > 0 && ti->nelem > 0 && ti->nelem <= (1 << 20)) {
        float *dst = malloc((size_t)ti->nelem * sizeof *dst);
        if (dst) {
          (void)qz_st_read_f32(st, ti->name, 0, rows, dst);
          (void)qz_st_read_f32(st, ti->name, rows - 1, 1, dst);
          (void)qz_st_read_f32(st, ti->name, rows, 1, dst); /* out of range */
          free(dst);
        }
      }
    }
    /* quantized readers: P.qweight/qzeros/scales/g_idx -> P.weight, and
     * I8 X + X_scale */
    for (int i = 0; i < qz_st_count(st); i++) {
      const char *nm = qz_st_info_at(st, i)->name;
      size_t l = strlen(nm);
      (void)qz_st_is_int8_scaled(st, nm);
      if (l <= 8 || strcmp(nm + l - 8, ".qweight") != 0 || l > 400) continue;
      char w[512];
      snprintf(w, sizeof w, "%.*s.weight", (int)(l - 8), nm);
      int64_t out = 0, in = 0, rows = 0, rowlen = 0;
      int bits = 0;
      if (qz_st_gptq_shape(st, w, &out, &in, &bits) != QZ_OK) continue;
      if (qz_st_rows(st, w, &rows, &rowlen) != QZ_OK) abort(); /* shape ok => rows ok */
      if (out > 0 && in > 0 && out * in <= (1 << 20)) {
        float *dst = malloc((size_t)(out * in) * sizeof *dst);
        if (dst) {
          (void)qz_st_read_f32(st, w, 0, out, dst);
          (void)qz_st_read_f32(st, w, out - 1, 1, dst);
          (void)qz_st_read_f32(st, w, out, 1, dst); /* out of range */
          free(dst);
        }
      }
    }
    /* every stored-quantized weight qz_st_weight_shape accepts (FP8 with
     * its scale, pack-quantized, int8, GPTQ) must read in range and refuse
     * out of range, with small FP8 blocks so edge blocks occur */
    qz_st_set_quant(st, &(qz_st_quant){.block = {3, 5}});
    for (int i = 0; i < qz_st_count(st); i++) {
      const char *nm = qz_st_info_at(st, i)->name;
      size_t l = strlen(nm);
      char w[512];
      if (l > 400) continue;
      if (l > 14 && strcmp(nm + l - 14, ".weight_packed") == 0)
        snprintf(w, sizeof w, "%.*s.weight", (int)(l - 7), nm);
      else if (l > 7 && strcmp(nm + l - 7, ".weight") == 0)
        snprintf(w, sizeof w, "%s", nm);
      else
        continue;
      int64_t out = 0, in = 0;
      if (qz_st_weight_shape(st, w, &out, &in, NULL) != QZ_OK) continue;
      if (out > 0 && in > 0 && out * in <= (1 << 20)) {
        float *dst = malloc((size_t)(out * in) * sizeof *dst);
        if (dst) {
          (void)qz_st_read_f32(st, w, 0, out, dst);
          (void)qz_st_read_f32(st, w, out - 1, 1, dst);
          (void)qz_st_read_f32(st, w, out, 1, dst); /* out of range */
          free(dst);
        }
      }
    }
    qz_error_clear();
    for (int i = 0; i < qz_st_metadata_count(st); i++) {
      const char *k, *v;
      qz_st_metadata_at(st, i, &k, &v);
      if (!k || !v || qz_st_metadata(st, k) == NULL) abort();
    }
    qz_st_close(&st);
  }
  qz_error_clear();
  free(img);
  return 0;
}
