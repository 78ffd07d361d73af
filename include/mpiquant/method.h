/* Quantization methods plug in through one ops table each (methods/<m>.c)
 * and one line in the registry (methods/method.c).
 *
 * Layer contract: output rows (output channels) are split over ranks in
 * contiguous blocks; each rank passes its rows of W and receives its rows of
 * codes/q/scale/zero/losses.  g_idx and perm are per input column and equal
 * on every rank.  A method that needs_hessian gets the layer input's ready
 * qz_hessian (hessian.h) and is collective on the Hessian's grid
 * communicator; every rank calls it, also with nrows == 0. */
#ifndef MPIQUANT_METHOD_H
#define MPIQUANT_METHOD_H

#include <stdint.h>

#include "mpiquant/hessian.h"
#include "mpiquant/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  qz_quant_spec spec;  /* bits, groupsize (-1 per channel), sym */
  int act_order;       /* GPTQ: process columns by descending diag(H) */
  int static_groups;   /* GPTQ: group parameters from the unmodified W */
  int blocksize;       /* GPTQ lazy-batch width (<= 0: 128) */
  double percdamp;     /* GPTQ relative damping (reference 0.01) */
  double percdamp_max; /* damping ladder cap (<= 0: 1.0) */
  /* appended for QuantEase (quantease.h) */
  int iters;           /* coordinate-descent sweeps (default 30) */
  int qe_init;         /* QZ_QE_INIT_GPTQ (0, default) or QZ_QE_INIT_RTN */
  double outlier_frac; /* QuantEase: share of weights kept in fp (0: none) */
} qz_method_opts;

/* Reference defaults: 4 bits, group 128, asym, blocksize 128, damp 0.01.
 * Not collective. */
qz_method_opts qz_method_opts_default(void);

typedef struct {
  const char *name;               /* layer name, for logs and errors */
  int64_t out_features, in_features;
  int64_t row0, nrows;            /* this rank's rows [row0, row0 + nrows) */
  const float *w;                 /* [nrows, in_features] */
  qz_hessian *H;                  /* ready Hessian [in, in] (needs_hessian) */
} qz_layer;

/* Outputs for this rank's rows, allocated by the caller (ngroups from
 * qz_quant_ngroups).  Pointers marked optional may be NULL. */
typedef struct {
  uint8_t *codes;   /* [nrows, in] original column order */
  float *q;         /* [nrows, in] dequantized (optional) */
  float *scale;     /* [nrows, ngroups] (rule 15 group order) */
  float *zero;      /* [nrows, ngroups] */
  float *losses;    /* [nrows] GPTQ per-row loss (optional; 0 for RTN) */
  int32_t *g_idx;   /* [in] group of each original column (optional) */
  int32_t *perm;    /* [in] processing order (optional; identity for RTN) */
  /* filled by the method */
  double loss_local;    /* sum of losses over this rank's rows */
  double percdamp_used; /* after the damping ladder (GPTQ) */
  int64_t ndead;        /* dead input columns (GPTQ) */
  /* appended: per-sweep objective (QuantEase: [iters + 1], element 0 = the
   * initial solution; summed over all rows and ranks); optional */
  double *objective;
  /* appended: sparse full-precision part (QuantEase --outlier-frac), this
   * rank's entries; allocated by the method with qz_alloc, freed by the
   * caller with qz_free.  Dequantized weight = Q + outliers. */
  int64_t noutliers;
  int64_t *outlier_idx; /* [noutliers] flat index row * in + col (global row) */
  float *outlier_val;   /* [noutliers] */
} qz_layer_result;

typedef struct qz_method_ops {
  const char *name;
  int needs_hessian;
  /* Validate options, allocate per-run state. Not collective. */
  int (*setup)(const qz_method_opts *opts, void **state);
  /* Quantize one layer. Collective on the Hessian's grid communicator when
   * needs_hessian; otherwise not collective. */
  int (*quantize_layer)(void *state, const qz_layer *layer,
                        qz_layer_result *res);
  void (*destroy)(void **state); /* accepts NULL state, NULLs it */
} qz_method_ops;

/* QZ_ERR_NUMERIC naming the first non-finite weight of this rank's rows
 * (global row, column, value). Not collective. */
int qz_layer_check_finite(const qz_layer *L);
/* The rest of a result for methods without a Hessian (RTN, AWQ's and
 * SmoothQuant's final quantization): g_idx of contiguous groups of
 * `groupsize` (<= 0: one group), identity perm, zero losses and loss, no
 * damping, no dead columns; optional outputs may be NULL. Not collective. */
void qz_layer_result_plain(const qz_layer *L, int groupsize, qz_layer_result *res);

/* "rtn", "gptq", "quantease"; NULL if unknown. Not collective. */
const qz_method_ops *qz_method_find(const char *name);
/* Comma-separated list of registered names (for usage text). Not
 * collective. */
const char *qz_method_names(void);

#ifdef __cplusplus
}
#endif
#endif
