/* Value grids of stored codes (see mpiquant/codes.h). */
#include "mpiquant/codes.h"

#include <math.h>
#include <string.h>

#include "mpiquant/codebook.h"
#include "mpiquant/fp8.h"
#include "mpiquant/threads.h"

static const char *const k_names[QZ_VGRID_COUNT] = {"int", "nf4", "fp4", "fp8_e4m3"};

const char *qz_vgrid_name(qz_vgrid g) {
  return g >= 0 && g < QZ_VGRID_COUNT ? k_names[g] : "?";
}

int qz_vgrid_from_name(const char *name) {
  if (!name || !name[0]) return QZ_VGRID_INT;
  for (int g = 0; g < QZ_VGRID_COUNT; g++)
    if (strcmp(name, k_names[g]) == 0) return g;
  return -1;
}

void qz_vgrid_values(qz_vgrid g, float value[256]) {
  for (int k = 0; k < 256; k++) value[k] = NAN;
  if (g == QZ_VGRID_INT) {
    for (int k = 0; k < 256; k++) value[k] = (float)k;
  } else if (g == QZ_VGRID_NF4 || g == QZ_VGRID_FP4) {
    int n = 0;
    const float *v = qz_codebook_values(g == QZ_VGRID_NF4 ? QZ_CODEBOOK_NF4 : QZ_CODEBOOK_FP4, &n);
    for (int k = 0; k < n; k++) value[k] = v[k];
  } else if (g == QZ_VGRID_FP8_E4M3) {
    for (int k = 0; k < 256; k++) value[k] = qz_fp8_e4m3_to_f32((uint8_t)k);
  }
}

void qz_dequantize_rows_grid(int64_t nrows, int64_t in, int64_t ngroups,
                             const uint8_t *codes, const float *scales,
                             const float *zeros, const int32_t *g_idx,
                             const float *value, float *q) {
  /* row r by one thread (threads.h): identical at any thread count */
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(nrows * in))
  for (int64_t r = 0; r < nrows; r++) {
    const float *s = scales + r * ngroups, *z = zeros + r * ngroups;
    const uint8_t *c = codes + r * in;
    float *o = q + r * in;
    if (value) {
      for (int64_t j = 0; j < in; j++) {
        int32_t g = g_idx[j];
        o[j] = s[g] * (value[c[j]] - z[g]);
      }
    } else {
      for (int64_t j = 0; j < in; j++) {
        int32_t g = g_idx[j];
        o[j] = s[g] * ((float)c[j] - z[g]);
      }
    }
  }
}
