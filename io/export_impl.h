/* Internal to io/export*.c: the common checkpoint -> Hugging Face walk and
 * the per-format hooks. Not installed, not used outside io/. */
#ifndef MPIQUANT_IO_EXPORT_IMPL_H
#define MPIQUANT_IO_EXPORT_IMPL_H

#include <jansson.h>
#include <stdint.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/safetensors.h"

/* Totals a format reports after the walk. */
typedef struct {
  int64_t zero_zero;   /* GPTQ: (row, group) zero points of 0 */
  int act_bits;        /* activation bits the checkpoint expects (0: none) */
  /* float-quantized FP8 (grid fp8_e4m3; set by its linear hook): the
   * checkpoint's activations "dynamic", "static" or "none" and weight block
   * edge (0: per output channel) */
  char fp8_act[16];
  int fp8_block;
  int64_t fp8_partial; /* linears whose shape is not a multiple of the block */
} qz_export_counts;

typedef struct {
  const char *name;             /* --format value */
  const char *title;            /* in messages */
  /* Read the linear `mod` of block `layer` from the checkpoint (collective:
   * every rank calls it; rank 0 receives the rows), convert it and add its
   * tensors with qz_st_shards_add on rank 0. Fails (on every rank, same
   * message) when the format cannot hold it. *meta receives its attributes. */
  int (*linear)(qz_ckpt *ck, int rank, qz_st_shards *ss, int layer,
                const char *mod, qz_ckpt_linear_meta *meta, qz_export_counts *n);
  /* quantization_config from the first linear's attributes and what the
   * walk counted (activation bits, FP8 scheme) (new reference). */
  json_t *(*quant_config)(const qz_ckpt_linear_meta *first, const qz_export_counts *n);
  /* also write quantization_config as quantize_config.json (AutoGPTQ) */
  int quantize_config_json;
  /* warnings after a successful export (rank 0) */
  void (*report)(const qz_ckpt_linear_meta *first, const qz_export_counts *n);
  /* value grids (mpiquant/codes.h names) besides "int" the format holds;
   * NULL: the integer grid only */
  const char *const *grids;
} qz_export_format;

extern const qz_export_format qz_export_format_gptq;
extern const qz_export_format qz_export_format_ct;

/* A stored linear's rows, gathered on rank 0. */
typedef struct {
  uint8_t *codes;  /* [out, in] */
  float *scales;   /* [out, ng] */
  float *zeros;    /* [out, ng] */
  int32_t *g_idx;  /* [in] */
} qz_export_rows;

/* Refuse a linear with a sparse full-precision part (no integer layout
 * holds it: QZ_ERR_UNSUPPORTED naming the linear and `format`), then read
 * all its rows onto rank 0 (the other ranks take part and get none).
 * Collective on the checkpoint's communicator. */
int qz_export_read_rows(qz_ckpt *ck, int rank, int layer, const char *mod,
                        const char *format, int64_t out, int64_t in, int64_t ng,
                        qz_export_rows *r);
void qz_export_rows_free(qz_export_rows *r); /* accepts a zeroed struct */

/* compressed-tensors "float-quantized" (io/export_ct_fp8.c): a linear on the
 * fp8_e4m3 grid (hook of qz_export_format.linear, called by the ct format's
 * hook with the linear's shape), its quantization_config and report line. */
int qz_ct_fp8_linear(qz_ckpt *ck, int rank, qz_st_shards *ss, int layer, const char *mod,
                     const qz_ckpt_linear_meta *m, int64_t out, int64_t in, int64_t ng,
                     qz_export_counts *n);
json_t *qz_ct_fp8_quant_config(const qz_ckpt_linear_meta *first, const qz_export_counts *n);
void qz_ct_fp8_report(const qz_ckpt_linear_meta *first, const qz_export_counts *n);
/* 1 when a linear's grid attribute is fp8_e4m3 */
int qz_ct_is_fp8(const qz_ckpt_linear_meta *m);

/* Output directory (rank 0; io/export_out.c).  begin: refuse an --out
 * that is or contains one of `inputs`, or that is not empty (without
 * overwrite) or holds files an export does not write; create the fresh
 * sibling directory `tmp` (OUT.partial) the export is written into.
 * commit: put tmp in place of OUT (the previous export, if any, is removed).
 * abort: remove tmp and what was written into it.  Not collective. */
int qz_export_out_begin(const char *out, const char *const *inputs, int ninputs,
                        int overwrite, char *tmp, size_t len);
int qz_export_out_commit(const char *out, const char *tmp);
void qz_export_out_abort(const char *tmp);

#endif
