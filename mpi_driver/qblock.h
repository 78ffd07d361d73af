/* mpi_driver private: model blocks with dequantized checkpoint weights. */
#ifndef MPIQUANT_QBLOCK_H
#define MPIQUANT_QBLOCK_H

#include <mpi.h>
#include <stdint.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/config.h"
#include "mpiquant/forward.h"
#include "mpiquant/model.h"

/* The one "dequantize -> outliers -> gather" step: this rank's rows
 * [r0, r0 + nr) of a stored linear (codes [nr, in] on value grid `grid`
 * (mpiquant/codes.h), scale/zero [nr, ng], g_idx [in], plus the sparse fp part: nnz entries, flat global indices)
 * into `rows` [nr, in], then every rank's rows into `full` [out, in] on
 * every rank: the weights the checkpoint holds. Collective on comm. */
int qz_linear_assemble(MPI_Comm comm, int64_t out, int64_t in, int64_t ng, int64_t r0,
                       int64_t nr, int grid, const uint8_t *codes, const float *scale,
                       const float *zero, const int32_t *g_idx, int64_t nnz,
                       const int64_t *oidx, const float *oval, float *rows, float *full);

/* Dequantized f32 weight of one stored linear on every rank (each rank reads
 * and dequantizes 1/P of the rows). Collective on comm. */
int qz_ckpt_load_linear_f32(qz_ckpt *ck, MPI_Comm comm, int layer, qz_linear l,
                            int64_t out, int64_t in, float *w);

/* The same for a module by name ("mlp.experts.3.down_proj"). Collective. */
int qz_ckpt_load_module_f32(qz_ckpt *ck, MPI_Comm comm, int layer, const char *mod,
                            int64_t out, int64_t in, float *w);

typedef struct {
  qz_ckpt *ck;
  int warned;
} qz_ckpt_source;

/* qz_block_source_fn: the model's block with its 7 linears replaced by the
 * checkpoint's dequantized weights (blocks the checkpoint lacks keep the
 * original weights, with one warning). Collective on the model's comm. */
int qz_ckpt_block_source(void *ctx, qz_model *m, int layer,
                         qz_block_weights *w);

#endif
