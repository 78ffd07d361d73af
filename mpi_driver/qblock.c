/* Blocks with dequantized linears from a checkpoint (eval --ckpt, resume). */
#include "qblock.h"

#include <stdlib.h>

#include "mpiquant/codes.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/timing.h"

int qz_linear_assemble(MPI_Comm comm, int64_t out, int64_t in, int64_t ng, int64_t r0,
                       int64_t nr, int grid, const uint8_t *codes, const float *scale,
                       const float *zero, const int32_t *g_idx, int64_t nnz,
                       const int64_t *oidx, const float *oval, float *rows, float *full) {
  float value[256];
  if (grid != QZ_VGRID_INT) qz_vgrid_values((qz_vgrid)grid, value);
  qz_dequantize_rows_grid(nr, in, ng, codes, scale, zero, g_idx,
                          grid != QZ_VGRID_INT ? value : NULL, rows);
  qz_outliers_add_rows(r0, nr, in, nnz, oidx, oval, rows);
  QZ_CALL(qz_allgather_rows_f32(comm, out, in, rows, full));
  return QZ_OK;
}

int qz_ckpt_load_linear_f32(qz_ckpt *ck, MPI_Comm comm, int layer, qz_linear l,
                            int64_t out, int64_t in, float *w /* [out, in] */) {
  return qz_ckpt_load_module_f32(ck, comm, layer, qz_linear_name(l), out, in, w);
}

int qz_ckpt_load_module_f32(qz_ckpt *ck, MPI_Comm comm, int layer, const char *mod,
                            int64_t out, int64_t in, float *w /* [out, in] */) {
  int rank, size, st = QZ_OK;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  int64_t o2, i2, ng, r0, nr;
  qz_ckpt_linear_meta meta;
  QZ_CALL(qz_ckpt_linear_info(ck, layer, mod, &o2, &i2, &ng, &meta));
  QZ_CHECK(o2 == out && i2 == in, QZ_ERR_FORMAT,
           "checkpoint %s: layer %d %s is [%lld, %lld], the model says [%lld, %lld]",
           qz_ckpt_dir(ck), layer, mod, (long long)o2, (long long)i2,
           (long long)out, (long long)in);
  qz_split_even(out, size, rank, &r0, &nr);
  uint8_t *codes = NULL;
  float *sc = NULL, *z = NULL, *q = NULL;
  int32_t *gi = NULL;
  int64_t nnz = 0, *oidx = NULL;
  float *oval = NULL;
  size_t rows = (size_t)(nr > 0 ? nr : 1);
  st = qz_alloc(rows * (size_t)in, 1, "codes", &codes);
  if (st == QZ_OK) st = qz_alloc(rows * (size_t)ng, 4, "scales", &sc);
  if (st == QZ_OK) st = qz_alloc(rows * (size_t)ng, 4, "zeros", &z);
  if (st == QZ_OK) st = qz_alloc(rows * (size_t)in, 4, "dequantized rows", &q);
  if (st == QZ_OK) st = qz_alloc((size_t)in, 4, "g_idx", &gi);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  QZ_CALL_DONE(qz_ckpt_read_linear(ck, layer, mod, r0, nr, codes, sc, z, gi, NULL));
  QZ_CALL_DONE(qz_ckpt_read_outliers(ck, layer, mod, &nnz, &oidx, &oval));
  QZ_CALL_DONE(qz_linear_assemble(comm, out, in, ng, r0, nr, qz_vgrid_from_name(meta.grid),
                                  codes, sc, z, gi, nnz, oidx,
                                  oval, q, w));
done:
  qz_free(&oidx);
  qz_free(&oval);
  free(codes);
  free(sc);
  free(z);
  free(q);
  free(gi);
  return st;
}

int qz_ckpt_block_source(void *vctx, qz_model *m, int layer,
                         qz_block_weights *w) {
  qz_ckpt_source *s = vctx;
  if (qz_ckpt_block_done(s->ck, layer)) /* norms and biases; linears below */
    QZ_CALL(qz_model_load_block_mask(m, layer, 0u, w));
  else
    QZ_CALL(qz_model_load_block(m, layer, w));
  if (!qz_ckpt_block_done(s->ck, layer)) {
    if (!s->warned++)
      qz_warn("checkpoint %s has no block %d (and maybe others): those blocks "
              "run with the original weights",
              qz_ckpt_dir(s->ck), layer);
    return QZ_OK;
  }
  const qz_model_config *cfg = qz_model_config_of(m);
  qz_timer_start(QZ_PHASE_LOAD);
  int st = QZ_OK;
  for (int l = 0; l < QZ_LIN_COUNT && st == QZ_OK; l++) {
    int64_t out, in;
    if (w->moe && l >= QZ_LIN_GATE) break; /* experts below */
    qz_linear_shape(cfg, (qz_linear)l, &out, &in);
    st = qz_ckpt_load_linear_f32(s->ck, qz_model_comm(m), layer, (qz_linear)l,
                                 out, in, w->w[l]);
  }
  if (w->moe && st == QZ_OK) {
    const int64_t H = cfg->hidden_size, Ie = w->einter;
    for (int e = -1; e < (int)w->nexp && st == QZ_OK; e++) {
      int64_t I = e < 0 ? w->sinter : Ie;
      if (I <= 0 || (e >= 0 && !w->ew[0])) continue;
      float *dst[3] = {e < 0 ? w->sw[0] : w->ew[0] + e * Ie * H,
                       e < 0 ? w->sw[1] : w->ew[1] + e * Ie * H,
                       e < 0 ? w->sw[2] : w->ew[2] + e * H * Ie};
      for (int k = 0; k < 3 && st == QZ_OK; k++) {
        char mod[160];
        qz_expert_module(mod, sizeof mod, cfg, layer, e, k);
        st = qz_ckpt_load_module_f32(s->ck, qz_model_comm(m), layer, mod, k == 2 ? H : I,
                                     k == 2 ? I : H, dst[k]);
      }
    }
  }
  int found = 0; /* norms with folded scales (AWQ, SmoothQuant) */
  if (st == QZ_OK)
    st = qz_ckpt_read_norms(s->ck, layer, cfg->hidden_size, w->attn_norm,
                            w->ffn_norm, &found);
  qz_timer_stop(QZ_PHASE_LOAD);
  return st;
}
