/* Blocks with dequantized linears from a checkpoint (eval --ckpt, resume). */
#include "qblock.h"

#include <stdlib.h>
#include <string.h>

#include "mpiquant/codes.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/threads.h"
#include "mpiquant/timing.h"

/* FNV-1a of g_idx: ranks check that they dequantize with the same one. */
static int64_t gidx_hash(const int32_t *g, int64_t n) {
  uint64_t h = 1469598103934665603ull;
  const uint8_t *b = (const uint8_t *)g;
  for (int64_t k = 0; k < 4 * n; k++) h = (h ^ b[k]) * 1099511628211ull;
  return (int64_t)(h >> 1); /* >= 0: its negation fits */
}

/* Pack rows of codes (< 2^b, b = 1, 2, 4, 8) into rows of rb bytes. */
static void pack_rows(const uint8_t *c, int64_t nr, int64_t in, int b, int64_t rb,
                      uint8_t *out) {
  const int per = 8 / b;
  for (int64_t r = 0; r < nr; r++) {
    const uint8_t *x = c + r * in;
    uint8_t *o = out + r * rb;
    memset(o, 0, (size_t)rb);
    for (int64_t j = 0; j < in; j++) o[j / per] |= (uint8_t)(x[j] << (b * (j % per)));
  }
}

static void unpack_rows(const uint8_t *p, int64_t nr, int64_t in, int b, int64_t rb,
                        uint8_t *c) {
  const int per = 8 / b;
  const unsigned mask = (1u << b) - 1u;
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(nr * in))
  for (int64_t r = 0; r < nr; r++) {
    const uint8_t *x = p + r * rb;
    uint8_t *o = c + r * in;
    if (b == 4) { /* the common case: two codes a byte, low nibble first */
      for (int64_t j = 0; j < in / 2; j++) {
        o[2 * j] = (uint8_t)(x[j] & 15u);
        o[2 * j + 1] = (uint8_t)(x[j] >> 4);
      }
      if (in % 2) o[in - 1] = (uint8_t)(x[in / 2] & 15u);
      continue;
    }
    for (int64_t j = 0; j < in; j++) o[j] = (uint8_t)((x[j / per] >> (b * (j % per))) & mask);
  }
}

/* The other ranks' rows of `full` from their codes, gathered packed at the
 * width of the largest code (4 bits for w4: 1/8 of the f32 rows) with the
 * f32 scales/zeros and the sparse entries, dequantized here by the same
 * function as on their owner: the same f32 bits as gathering the f32
 * rows. Own rows are copied from `rows`. Collective on comm. */
static int assemble_codes(MPI_Comm comm, int64_t out, int64_t in, int64_t ng, int64_t r0,
                          int64_t nr, int b, const float *value, const uint8_t *codes,
                          const float *scale, const float *zero, const int32_t *g_idx,
                          int64_t nnz, const int64_t *oidx, const float *oval,
                          const float *rows, float *full) {
  int rank, size, st = QZ_OK;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const int64_t rb = (in * b + 7) / 8;
  uint8_t *pk = NULL, *cu = NULL;
  float *ss = NULL, *zz = NULL, *ov = NULL;
  int64_t *oi = NULL;
  int *cnt = NULL;
  /* this rank's sparse entries (those of its own rows) */
  int64_t mine = 0;
  for (int64_t k = 0; k < nnz; k++) {
    int64_t r = oidx[k] / in;
    mine += r >= r0 && r < r0 + nr;
  }
  st = qz_alloc((size_t)(out * rb), 1, "gathered codes", &pk);
  if (!st) st = qz_alloc((size_t)(out * ng), 4, "gathered scales", &ss);
  if (!st) st = qz_alloc((size_t)(out * ng), 4, "gathered zeros", &zz);
  if (!st) st = qz_alloc((size_t)size * 2, sizeof(int), "outlier counts", &cnt);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  pack_rows(codes, nr, in, b, rb, pk + r0 * rb);
  memcpy(ss + r0 * ng, scale, sizeof(float) * (size_t)(nr * ng));
  memcpy(zz + r0 * ng, zero, sizeof(float) * (size_t)(nr * ng));
  QZ_CALL_DONE(qz_allgather_rows_bytes(comm, out, rb, NULL, pk));
  QZ_CALL_DONE(qz_allgather_rows_bytes(comm, out, 4 * ng, NULL, ss));
  QZ_CALL_DONE(qz_allgather_rows_bytes(comm, out, 4 * ng, NULL, zz));
  /* sparse entries, in rank (= row) order */
  int m32 = (int)mine, *displ = cnt + size;
  QZ_CALL_MPI_DONE(MPI_Allgather(&m32, 1, MPI_INT, cnt, 1, MPI_INT, comm));
  qz_count_allgather(comm, 4, 4 * (int64_t)size);
  int64_t all = 0;
  for (int p = 0; p < size; p++) displ[p] = (int)all, all += cnt[p];
  if (all > 0) {
    st = qz_alloc((size_t)all, sizeof(int64_t), "outlier indices", &oi);
    if (!st) st = qz_alloc((size_t)all, sizeof(float), "outlier values", &ov);
    QZ_CALL_DONE(qz_error_agree(comm, st));
    int64_t w = displ[rank];
    for (int64_t k = 0; k < nnz; k++) {
      int64_t r = oidx[k] / in;
      if (r >= r0 && r < r0 + nr) oi[w] = oidx[k], ov[w++] = oval[k];
    }
    QZ_CALL_MPI_DONE(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, oi, cnt, displ,
                                    MPI_INT64_T, comm));
    QZ_CALL_MPI_DONE(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, ov, cnt, displ,
                                    MPI_FLOAT, comm));
    qz_count_allgatherv(comm, cnt, 12);
  }
  /* dequantize the others' rows a chunk at a time (codes unpacked to bytes) */
  const int64_t chunk = 256;
  QZ_CALL_DONE(qz_alloc((size_t)(chunk * in), 1, "unpacked codes", &cu));
  for (int64_t a = 0; a < out; a += chunk) {
    int64_t e = a + chunk < out ? a + chunk : out;
    for (int pass = 0; pass < 2; pass++) { /* [a, e) minus own rows [r0, r0 + nr) */
      int64_t lo = pass ? (r0 + nr > a ? r0 + nr : a) : a;
      int64_t hi = pass ? e : (r0 < e ? r0 : e);
      if (hi <= lo) continue;
      const uint8_t *cc = pk + lo * rb; /* 8 bits: the codes as they are */
      if (b < 8) {
        unpack_rows(pk + lo * rb, hi - lo, in, b, rb, cu);
        cc = cu;
      }
      qz_dequantize_rows_grid(hi - lo, in, ng, cc, ss + lo * ng, zz + lo * ng, g_idx, value,
                              full + lo * in);
      qz_outliers_add_rows(lo, hi - lo, in, all, oi, ov, full + lo * in);
    }
  }
  if (nr > 0 && rows != full + r0 * in)
    memcpy(full + r0 * in, rows, sizeof(float) * (size_t)(nr * in));
done:
  qz_free(&pk);
  qz_free(&cu);
  qz_free(&ss);
  qz_free(&zz);
  qz_free(&oi);
  qz_free(&ov);
  qz_free(&cnt);
  return st;
}

int qz_linear_assemble(MPI_Comm comm, int64_t out, int64_t in, int64_t ng, int64_t r0,
                       int64_t nr, int grid, const uint8_t *codes, const float *scale,
                       const float *zero, const int32_t *g_idx, int64_t nnz,
                       const int64_t *oidx, const float *oval, float *rows, float *full) {
  float value[256];
  if (grid != QZ_VGRID_INT) qz_vgrid_values((qz_vgrid)grid, value);
  qz_dequantize_rows_grid(nr, in, ng, codes, scale, zero, g_idx,
                          grid != QZ_VGRID_INT ? value : NULL, rows);
  qz_outliers_add_rows(r0, nr, in, nnz, oidx, oval, rows);
  int packed = 0;
  QZ_CALL(qz_comm_packed_wire(comm, &packed)); /* between nodes (comm.h) */
  if (!packed) return qz_allgather_rows_f32(comm, out, in, rows, full);
  /* codes travel when every rank has rows, the same g_idx and codes < 2^b
   * with b < 32 (else the f32 rows): one small allreduce decides */
  int maxc = 0;
  for (int64_t k = 0; k < nr * in; k++) maxc = codes[k] > maxc ? codes[k] : maxc;
  int64_t v[4] = {maxc, nr > 0 ? gidx_hash(g_idx, in) : INT64_MAX,
                  nr > 0 ? -gidx_hash(g_idx, in) : INT64_MAX, nr > 0 && codes ? 0 : 1};
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_INT64_T, MPI_MAX, comm));
  qz_count_allreduce(comm, 32);
  int b = v[0] < 2 ? 1 : v[0] < 4 ? 2 : v[0] < 16 ? 4 : 8;
  if (v[3] || v[1] != -v[2] || (in * b + 7) / 8 + 8 * ng >= 4 * in)
    return qz_allgather_rows_f32(comm, out, in, rows, full);
  return assemble_codes(comm, out, in, ng, r0, nr, b, grid != QZ_VGRID_INT ? value : NULL,
                        codes, scale, zero, g_idx, nnz, oidx, oval, rows, full);
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
