/* libFuzzer target: a whole safetensors file image (header parser, offset
 * validation, coverage check, conversions of whatever validated). A crash,
 * a sanitizer report or a read outside the image is a bug. */
#include <stdint.h>
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
