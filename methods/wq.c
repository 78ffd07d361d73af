/* Value grids, double quantization and storage cost of RTN/GPTQ (wq.h). */
#include "wq.h"

#include <math.h>

#include "mpiquant/codebook.h"
#include "mpiquant/codes.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/mem.h"

const char *const qz_wq_grid_choices[] = {"int", "nf4", "fp4", NULL};

int qz_wq_check(qz_method_opts *o) {
  qz_wq_ext e;
  qz_method_ext_get(o, &e);
  QZ_CHECK(e.act_bits == 0 || e.act_bits >= 2, QZ_ERR_USAGE,
           "--act-bits %d: 0 (off) or 2..16", e.act_bits);
  QZ_CHECK(!e.w_clip || e.grid == QZ_VGRID_INT, QZ_ERR_USAGE,
           "--w-clip searches the range of the int grid; --grid %s uses absmax block scales",
           qz_vgrid_name((qz_vgrid)e.grid));
  if (e.grid == QZ_VGRID_INT) {
    QZ_CHECK(!e.double_quant, QZ_ERR_USAGE,
             "--double-quant quantizes the block absmax scales of --grid nf4|fp4; the int "
             "grid has none");
    return QZ_OK;
  }
  const char *g = qz_vgrid_name((qz_vgrid)e.grid);
  QZ_CHECK(!qz_method_opt_given(o, "bits") || o->spec.bits == 4, QZ_ERR_USAGE,
           "--grid %s stores 4-bit codes: --bits must be 4 (or left out), got %d", g,
           o->spec.bits);
  o->spec.bits = 4;
  if (!qz_method_opt_given(o, "group")) o->spec.groupsize = 64;
  o->spec.sym = 1; /* absmax scaling: symmetric, zero 0 */
  return QZ_OK;
}

const float *qz_wq_codebook(int grid, int *n) {
  *n = 0;
  if (grid == QZ_VGRID_NF4) return qz_codebook_values(QZ_CODEBOOK_NF4, n);
  if (grid == QZ_VGRID_FP4) return qz_codebook_values(QZ_CODEBOOK_FP4, n);
  return NULL;
}

void qz_wq_rtn_grid(int grid, int64_t groupsize, int64_t rows, int64_t in, const float *w,
                    uint8_t *codes, float *q, float *scale, float *zero) {
  const qz_codebook cb = grid == QZ_VGRID_NF4 ? QZ_CODEBOOK_NF4 : QZ_CODEBOOK_FP4;
  const int64_t g = groupsize <= 0 ? in : groupsize, ng = (in + g - 1) / g;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t k = 0; k < ng; k++) {
      int64_t c0 = k * g, c1 = c0 + g < in ? c0 + g : in;
      qz_codebook_block(cb, w + r * in + c0, c1 - c0, 1, &scale[r * ng + k],
                        codes + r * in + c0, q ? q + r * in + c0 : NULL);
      zero[r * ng + k] = 0.0f;
    }
}

void qz_wq_rtn_clip(const qz_quant_spec *s, int64_t rows, int64_t in, const float *w,
                    uint8_t *codes, float *q, float *scale, float *zero) {
  const int64_t g = s->groupsize <= 0 ? in : s->groupsize, ng = qz_quant_ngroups(s, in);
  const float maxq = (float)((1 << s->bits) - 1);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t k = 0; k < ng; k++) {
      const int64_t c0 = k * g, c1 = c0 + g < in ? c0 + g : in;
      float sc, z;
      qz_quant_params_mse(w + r * in + c0, c1 - c0, s->bits, s->sym, &sc, &z);
      scale[r * ng + k] = sc;
      zero[r * ng + k] = z;
      for (int64_t c = c0; c < c1; c++) {
        float qq;
        codes[r * in + c] = qz_quant_one(w[r * in + c], sc, z, maxq, &qq);
        if (q) q[r * in + c] = qq;
      }
    }
}

/* Rows [row0, row0 + nrows) of [out, ng] scales: the block maxima of
 * |s - m|, this rank's part (blocks it does not touch stay 0). */
static void dq_block_max(int64_t row0, int64_t nrows, int64_t ng, const float *s, float m,
                         float *amax /* [nblk] */) {
  for (int64_t i = 0; i < nrows * ng; i++) {
    int64_t b = (row0 * ng + i) / QZ_WQ_DQ_BLOCK;
    float a = fabsf(s[i] - m);
    if (a > amax[b]) amax[b] = a;
  }
}

int qz_wq_double_quant(MPI_Comm comm, int64_t out, int64_t row0, int64_t nrows, int64_t ng,
                       float *scale) {
  const int64_t nblk = (out * ng + QZ_WQ_DQ_BLOCK - 1) / QZ_WQ_DQ_BLOCK;
  float *rowsum = NULL, *amax = NULL;
  int st = qz_alloc((size_t)(nrows > 0 ? nrows : 1), sizeof(float), "scale row sums", &rowsum);
  if (!st) st = qz_calloc((size_t)nblk, sizeof(float), "double-quant block maxima", &amax);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  for (int64_t r = 0; r < nrows; r++) {
    double t = 0;
    for (int64_t k = 0; k < ng; k++) t += scale[r * ng + k];
    rowsum[r] = (float)t;
  }
  double total = 0;
  QZ_CALL_DONE(qz_sum_rows_ordered(comm, nrows, rowsum, &total));
  const float m = (float)(total / (double)(out * ng));
  dq_block_max(row0, nrows, ng, scale, m, amax);
  /* max is exact and order-free: the same at every np */
  QZ_CALL_MPI_DONE(MPI_Allreduce(MPI_IN_PLACE, amax, (int)nblk, MPI_FLOAT, MPI_MAX, comm));
  qz_count_allreduce(comm, 4 * nblk);
  for (int64_t i = 0; i < nrows * ng; i++) {
    float a = amax[(row0 * ng + i) / QZ_WQ_DQ_BLOCK];
    float c = a > 0.0f ? qz_rint((scale[i] - m) / a * 127.0f) : 0.0f;
    c = c < -127.0f ? -127.0f : (c > 127.0f ? 127.0f : c);
    scale[i] = c * (a / 127.0f) + m;
  }
done:
  qz_free(&rowsum);
  qz_free(&amax);
  return st;
}

void qz_wq_storage(const qz_method_opts *o, int64_t out, int64_t in, int64_t nkeep,
                   qz_storage_bits *b) {
  qz_wq_ext e;
  qz_method_ext_get(o, &e);
  qz_storage_bits_uniform(&o->spec, out, in, b);
  if (e.grid != QZ_VGRID_INT) {
    /* QLoRA's accounting: fp32 absmax per block; with double quantization 8
     * bits per block plus an fp32 absmax per 256 blocks and one fp32 mean */
    b->zero_bits = 0.0;
    b->scale_bits = 32.0;
    if (e.double_quant) {
      b->scale_bits = 8.0;
      b->extra_bits += 32.0 * (double)((b->nstats + QZ_WQ_DQ_BLOCK - 1) / QZ_WQ_DQ_BLOCK) + 32.0;
    }
  }
  if (nkeep > 0) { /* OWQ: the kept columns as fp16 columns plus their list */
    b->dense = out * (in - nkeep);
    b->extra_bits += 32.0 * (double)nkeep;
    b->outlier_bits = 16.0;
  }
}
