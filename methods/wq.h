/* methods private: what RTN and GPTQ share beyond the reference quantizer
 * (docs/methods.md "Value grids", "OWQ weak columns"):
 *   --grid nf4|fp4   codes on a codebook (mpiquant/codebook.h) with
 *                    blockwise absmax scales, zero 0 (QLoRA's NF4, E2M1)
 *   --double-quant   the block absmax values themselves quantized (QLoRA)
 *   --keep-columns K GPTQ: OWQ's weak columns kept in fp16
 *   --act-bits A     per-token activation quantization at evaluation
 *   --w-clip         int grid: each group's range searched for the smallest
 *                    error (GPTQ's / QuaRot's mse clipping)
 * Their option rows, checks and storage cost. */
#ifndef MPIQUANT_METHODS_WQ_H
#define MPIQUANT_METHODS_WQ_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "mpiquant/method.h"

/* The ext bytes of rtn and gptq (qz_method_ext_get). */
typedef struct {
  int act_bits;     /* 0 = off */
  int grid;         /* qz_vgrid: QZ_VGRID_INT, _NF4, _FP4 (the choice index) */
  int double_quant; /* 1: block scales quantized to 8 bit (QLoRA) */
  int keep_columns; /* GPTQ: input columns kept in fp16 (OWQ) */
  int w_clip;       /* 1: qz_quant_params_mse instead of the min/max range */
} qz_wq_ext;

/* Second-level blocks of --double-quant (scales per block, QLoRA). */
#define QZ_WQ_DQ_BLOCK 256

extern const char *const qz_wq_grid_choices[]; /* "int", "nf4", "fp4" */

#define QZ_WQ_ROW_ACT_BITS                                                              \
  {.name = "act-bits", .type = QZ_OPT_INT, .ext = 1,                                    \
   .offset = offsetof(qz_wq_ext, act_bits), .def = 0, .lo = 0, .hi = 16,                \
   .json = "act_bits", .metavar = "A",                                                  \
   .help = "quantize every linear input to A bits per token at evaluation (dynamic, "   \
           "symmetric; 0 = off, default)"}
#define QZ_WQ_ROW_GRID                                                                  \
  {.name = "grid", .type = QZ_OPT_CHOICE, .ext = 1, .offset = offsetof(qz_wq_ext, grid), \
   .def = 0, .choices = qz_wq_grid_choices, .json = "grid",                             \
   .help = "value grid of the codes: int (default), nf4 or fp4 (4-bit codebooks with "  \
           "blockwise absmax scales; block = --group, default 64)"}
#define QZ_WQ_ROW_DOUBLE_QUANT                                                          \
  {.name = "double-quant", .type = QZ_OPT_FLAG, .ext = 1,                               \
   .offset = offsetof(qz_wq_ext, double_quant), .json = "double_quant",                 \
   .help = "with --grid nf4|fp4: quantize the block absmax values to 8 bits in blocks " \
           "of 256 (QLoRA double quantization)"}
#define QZ_WQ_ROW_KEEP_COLUMNS                                                          \
  {.name = "keep-columns", .type = QZ_OPT_INT, .ext = 1,                                \
   .offset = offsetof(qz_wq_ext, keep_columns), .def = 0, .lo = 0, .hi = 1 << 30,       \
   .json = "keep_columns", .metavar = "K",                                              \
   .help = "keep the K input columns with the largest diag(H)_j * |W[:,j]|^2 in fp16, " \
           "GPTQ the rest (OWQ; default 0)"}

#define QZ_WQ_ROW_W_CLIP                                                                \
  {.name = "w-clip", .type = QZ_OPT_FLAG, .ext = 1, .offset = offsetof(qz_wq_ext, w_clip), \
   .json = "w_clip", .flags = QZ_OPT_JSON_SET,                                          \
   .help = "int grid: clip each group's range to the shrink (1, 0.99, .., 0.21) of "    \
           "smallest |error|^2.4 (GPTQ/QuaRot mse weight clipping; default off)"}

/* RTN on the int grid with --w-clip: qz_rtn_quantize with the parameters
 * of qz_quant_params_mse. Not collective. */
void qz_wq_rtn_clip(const qz_quant_spec *s, int64_t rows, int64_t in, const float *w,
                    uint8_t *codes, float *q, float *scale, float *zero);

/* Cross-option rules of the rows above, normalising *o: a codebook grid
 * stores 4-bit codes (--bits 4 or none), blocks of --group (64 when not
 * given) and is symmetric (sym recorded as 1); --double-quant needs a
 * codebook grid. Not collective. */
int qz_wq_check(qz_method_opts *o);
/* The codebook of a grid (NULL for int), its size in *n. Not collective. */
const float *qz_wq_codebook(int grid, int *n);

/* RTN on a codebook grid: per row and block of --group columns (the row
 * when per channel), scale = absmax, zero = 0, code = nearest value
 * (qz_codebook_block). q (optional) = scale * value[code]. Not collective. */
void qz_wq_rtn_grid(int grid, int64_t groupsize, int64_t rows, int64_t in,
                    const float *w /* [rows, in] */, uint8_t *codes /* [rows, in] */,
                    float *q /* [rows, in] or NULL */, float *scale /* [rows, ng] */,
                    float *zero /* [rows, ng] */);

/* Double quantization of this rank's rows [row0, row0 + nrows) of the
 * block scales [out, ng] of a linear (QLoRA, with symmetric int8 for the
 * second level): m = mean of all out * ng scales (summed in global row
 * order), then per block of QZ_WQ_DQ_BLOCK consecutive scales in row-major
 * order a = max |s - m| (over every rank's part of the block) and
 *   c = clamp(rint((s - m) / a * 127), -127, 127),  s <- c * (a / 127) + m
 * (f32, a = 0: s <- m). The scales keep the dequantized values, so every
 * dequantizer reads them unchanged. Collective on comm (row split in rank
 * order, every rank calls it, also with nrows == 0). */
int qz_wq_double_quant(MPI_Comm comm, int64_t out, int64_t row0, int64_t nrows, int64_t ng,
                       float *scale /* [nrows, ng] */);

/* The storage of a layer quantized with these options, `nkeep` columns
 * kept in fp16 (their values 16 bits each, their column list 32 bits per
 * column; no codes). Not collective. */
void qz_wq_storage(const qz_method_opts *o, int64_t out, int64_t in, int64_t nkeep,
                   qz_storage_bits *b);

#endif
