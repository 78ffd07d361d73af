/* mpi_driver private: model blocks with dequantized checkpoint weights. */
#ifndef MPIQUANT_QBLOCK_H
#define MPIQUANT_QBLOCK_H

#include <mpi.h>
#include <stdint.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/config.h"
#include "mpiquant/forward.h"
#include "mpiquant/model.h"

/* Dequantized f32 weight of one stored linear on every rank (each rank reads
 * and dequantizes 1/P of the rows). Collective on comm. */
int qz_ckpt_load_linear_f32(qz_ckpt *ck, MPI_Comm comm, int layer, qz_linear l,
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
