/* Quantization methods plug in through one ops table each (methods/<m>.c)
 * and one line in the registry (methods/method.c). The table is everything
 * the rest of the program knows about a method: its options (rows that
 * generate the parser, --help, validation, the options JSON of a checkpoint
 * and the sweep axes), what it needs (calibration, Hessians, activation
 * statistics), its per-linear and optional block-level hooks, the
 * checkpoint datasets it writes, the export formats that accept it and its
 * `plan` model. No file outside methods/ compares method names.
 *
 * Layer contract: output rows (output channels) are split over ranks in
 * contiguous blocks; each rank passes its rows of W and receives its rows of
 * codes/q/scale/zero/losses.  g_idx and perm are per input column and equal
 * on every rank.  A method that needs a Hessian gets the layer input's ready
 * qz_hessian (hessian.h) and is collective on the Hessian's grid
 * communicator; every rank calls it, also with nrows == 0. */
#ifndef MPIQUANT_METHOD_H
#define MPIQUANT_METHOD_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mpiquant/config.h"
#include "mpiquant/forward.h"
#include "mpiquant/hessian.h"
#include "mpiquant/model.h"
#include "mpiquant/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

struct qz_method_ops;
struct json_t;
struct qz_ckpt;

/* ---- options: one row per option (STYLE.md rule 12) -------------------- */

typedef enum {
  QZ_OPT_FLAG = 0, /* no value: sets its int field to !def */
  QZ_OPT_INT,      /* int field */
  QZ_OPT_INT64,    /* int64_t field */
  QZ_OPT_REAL,     /* double field */
  QZ_OPT_CHOICE,   /* one of `choices`; int field = its index */
  QZ_OPT_CONST,    /* not on the command line: `def` recorded in the JSON */
} qz_opt_type;

enum {
  QZ_OPT_NONZERO = 1u, /* INT/INT64: 0 is not a value (--group) */
  QZ_OPT_JSON_SET = 2u, /* recorded in the options JSON only when not `def`
                           (a row added later: older checkpoints keep their
                           options and resume) */
};

typedef struct {
  const char *name;            /* --name (NULL for QZ_OPT_CONST) */
  qz_opt_type type;
  int ext;                     /* 0: a field of qz_method_opts; 1: of its ext bytes */
  size_t offset;               /* offsetof the field */
  double def, lo, hi;          /* default; limits of INT, INT64, REAL */
  const char *const *choices;  /* CHOICE: names, NULL-terminated */
  const char *json;            /* key in the options JSON (NULL: not recorded) */
  const char *metavar;         /* value placeholder in --help */
  const char *help;
  unsigned flags;              /* QZ_OPT_* */
} qz_opt;

/* Room for a method's own option struct (rows with ext = 1), read and
 * written with memcpy (qz_method_ext_get / _set). */
#define QZ_METHOD_EXT_BYTES 64

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
  /* appended: the method these options were made for (qz_method_opts_for;
   * NULL from qz_method_opts_default), which rows the user gave
   * (bit i = row i of qz_method_row), and the method's own options */
  const struct qz_method_ops *ops;
  uint64_t given;
  _Alignas(8) unsigned char ext[QZ_METHOD_EXT_BYTES];
} qz_method_opts;

/* Reference defaults: 4 bits, group 128, asym, blocksize 128, damp 0.01,
 * and every registered method's defaults of its qz_method_opts fields.
 * Not collective. */
qz_method_opts qz_method_opts_default(void);
/* The defaults of every row of `ops` (common and its own). Not collective. */
qz_method_opts qz_method_opts_for(const struct qz_method_ops *ops);

/* Rows of a method: the common quantizer rows (bits, group, sym, act-order,
 * static-groups, damp, blocksize: every method accepts and records them),
 * then the method's own. Not collective. */
int qz_method_nrows(const struct qz_method_ops *ops);
const qz_opt *qz_method_row(const struct qz_method_ops *ops, int i);
/* Row index of --name (-1 if the method has none). Not collective. */
int qz_method_row_find(const struct qz_method_ops *ops, const char *name);
/* Set row i from the command-line text `val` (NULL for a FLAG): type and
 * limits checked, QZ_ERR_USAGE naming the option otherwise; marks it given.
 * Not collective. */
int qz_method_opt_set(qz_method_opts *o, int i, const char *val);
/* 1 when the user gave --name. Not collective. */
int qz_method_opt_given(const qz_method_opts *o, const char *name);
/* Row i's value as a number (FLAG/INT/INT64/CHOICE/REAL; CONST: def).
 * Not collective. */
double qz_method_opt_value(const qz_method_opts *o, int i);
/* The method's own options struct (ext bytes) in and out. */
#define qz_method_ext_get(o, ptr) memcpy((ptr), (o)->ext, sizeof *(ptr))
#define qz_method_ext_set(o, ptr) memcpy((o)->ext, (ptr), sizeof *(ptr))

/* Common options a method honours (the sweep axes it has); the others are
 * accepted and recorded but do not change its result. */
enum {
  QZ_USES_BITS = 1u, QZ_USES_GROUP = 2u, QZ_USES_SYM = 4u,
  QZ_USES_ACT_ORDER = 8u, /* --act-order, --static-groups */
};

/* What a method needs and writes, from its options (ops->needs). */
enum {
  QZ_NEED_CALIB = 1u << 0,     /* calibration windows and the block forward */
  QZ_NEED_HESSIAN = 1u << 1,   /* each linear's input Hessian (with CALIB) */
  QZ_NEED_ACT_STATS = 1u << 2, /* per-channel statistics of block inputs (block hook) */
  QZ_NEED_FP_STREAM = 1u << 3, /* block inputs from the unquantized model (resume
                                  replays the fp blocks) */
  QZ_CKPT_NORMS = 1u << 8,     /* writes the RMSNorm weights (folded scales) */
  QZ_CKPT_OUTLIERS = 1u << 9,  /* writes each linear's sparse fp part */
  QZ_OUT_OBJECTIVE = 1u << 16, /* fills res->objective [iters + 1] when given */
};

/* ---- one linear ---------------------------------------------------------- */

typedef struct {
  const char *name;               /* layer name, for logs and errors */
  int64_t out_features, in_features;
  int64_t row0, nrows;            /* this rank's rows [row0, row0 + nrows) */
  const float *w;                 /* [nrows, in_features] */
  qz_hessian *H;                  /* ready Hessian [in, in] (QZ_NEED_HESSIAN) */
  /* appended: the communicator the rows are split over (every rank of it
   * calls quantize_layer, also with nrows == 0); a method whose parameters
   * span rows of several ranks (FP8 128x128 block scales, OWQ's column
   * choice) reduces over it. The quantize driver sets it; left zero (or
   * MPI_COMM_NULL) when this rank holds all rows. Methods reach it through
   * qz_layer_comm. */
  MPI_Comm comm;
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
  /* appended: the value grid of the codes (qz_vgrid, mpiquant/codes.h; the
   * caller sets 0 = int): Q = scale * (value[code] - zero) */
  int grid;
  /* appended: what the linear costs in storage (qz_layer_bits_per_param);
   * the caller zeroes it, a method that leaves out == 0 gets the uniform
   * int layout of its spec (qz_storage_bits_uniform). noutliers is filled
   * by the caller (all ranks' res->noutliers). */
  qz_storage_bits storage;
} qz_layer_result;

/* Most linears that share one input Hessian in a block (q, k, v). */
#define QZ_GROUP_MAX 3

/* ---- one decoder block (the driver's services to a block hook) ---------- */

typedef struct qz_block_ctx qz_block_ctx;
struct qz_block_ctx {
  MPI_Comm comm;
  const qz_model_config *cfg;
  int layer;
  qz_fwd *f;               /* this rank's windows at the block input (QZ_NEED_CALIB) */
  qz_block_weights *w;     /* the block's fp weights; a hook may fold scales into them */
  int64_t win0, nwin;      /* this rank's first window; all windows */
  /* Quantize linear l of w with the method's per-linear hook (H: its input
   * Hessian, or NULL), replace w->w[l] by exactly what the checkpoint
   * holds, write this rank's rows. Collective on comm. */
  int (*linear)(qz_block_ctx *b, qz_linear l, qz_hessian *H);
  /* The default block: true-sequential groups [q,k,v] -> [o] -> [gate,up]
   * -> [down] (the group's Hessian when the method needs one), then the
   * block output becomes the next input. Collective on comm. */
  int (*sequential)(qz_block_ctx *b);
  /* The current stage OUT of f becomes the next block's input. Collective. */
  int (*commit)(qz_block_ctx *b);
  /* Per-block statistics for the manifest (the hook keeps no reference). */
  void (*stat)(qz_block_ctx *b, const char *key, struct json_t *value);
  void *drv;               /* the driver's state */
  /* appended: store f32 data [n0, max(n1, 1)] the method needs at
   * evaluation (static activation scales, ...) as /aux/{layer}/{name} of
   * this block (qz_ckpt_write_aux: rank 0's v is written). Collective. */
  int (*aux)(qz_block_ctx *b, const char *name, int64_t n0, int64_t n1, const float *v);
  /* appended: an MoE block's FFN (NULL on dense blocks), for a block hook
   * with prepare_expert: routes f's stage GATEUP_IN (as the hook left it),
   * streams the experts one at a time (each: the method's prepare_expert on
   * its routed rows or the --expert-fallback rows, then its 3 linears
   * through the per-linear hook without a Hessian; fallback rtn: RTN, no
   * prepare_expert), then the shared expert, and commits the FFN output
   * (the fp experts' with QZ_NEED_FP_STREAM, else the quantized ones').
   * Collective on comm. */
  int (*experts)(qz_block_ctx *b);
};

/* appended to qz_block_ctx through `experts` (below): one expert of an MoE
 * block as the driver hands it to a method's prepare_expert hook
 * (docs/moe.md). Rows come in chunks (one per calibration window, the
 * order of the sums): chunk c holds rows [ends[c-1], ends[c]) (ends[-1] =
 * 0) and has the global index chunk[c] < nchunks, the same on every rank
 * count, so per-chunk sums reduced and added in chunk order are the same
 * bits at any np. */
typedef struct {
  MPI_Comm comm;
  int layer, expert;     /* expert -1: the shared expert (Qwen2-MoE) */
  int64_t hidden, inter; /* H, the expert's intermediate size */
  float *g, *u, *d;      /* fp weights gate [I, H], up [I, H], down [H, I] */
  const float *x;        /* this rank's input rows [n, H] (the FFN input) */
  int64_t n;
  const int64_t *ends;   /* [nch] */
  const int64_t *chunk;  /* [nch] */
  int64_t nch, nchunks;  /* this rank's chunks, all ranks' */
  int64_t tokens;        /* rows over all ranks */
} qz_expert_ctx;

/* ---- plan model ------------------------------------------------------------ */

typedef struct {
  double gemm;               /* f32 GEMM flop/s of one rank */
  double gptq_frac, qe_frac; /* measured GPTQ / QuantEase sweep rates over gemm */
  /* seconds of a collective over the run's ranks on an object of `bytes` */
  double (*allgather)(const void *ctx, double bytes);
  double (*allreduce)(const void *ctx, double bytes);
  const void *ctx;
} qz_plan_machine;

typedef struct {
  double bytes;   /* method working bytes of one linear (beyond the result buffers) */
  double flops;   /* its quantize flops on one rank */
  double seconds; /* its quantize seconds on one rank */
  int factor;     /* uses the Cholesky factor of H^-1 (plan adds the factorization) */
  /* appended: of `seconds`, streaming the factor to the ranks; a method with
   * quantize_group pays it once per Hessian, not once per linear */
  double stream;
} qz_plan_linear;

typedef struct {
  double bytes;   /* per-rank bytes held through the block hook */
  double flops;   /* its flops per block on one rank (forward passes) */
} qz_plan_block;

/* ---- the ops table ------------------------------------------------------- */

enum { QZ_METHOD_HIDDEN = 1u }; /* not listed in --help (test-only methods) */

typedef struct qz_method_ops {
  const char *name;
  const char *summary;           /* one line for --help */
  unsigned flags;                /* QZ_METHOD_* */
  const qz_opt *options;         /* the method's own rows */
  int noptions;
  const char *json_group;        /* its JSON keys nest under this key (NULL: top level) */
  unsigned uses;                 /* QZ_USES_*: common options it honours */
  const char *const *exports;    /* export formats that accept its checkpoints */
  const char *const *labels;     /* checkpoint 'method' attributes it writes
                                    (NULL: just its name) */
  /* Cross-option rules and fixed values (QZ_ERR_USAGE naming the options);
   * may normalise *o (e.g. W8A8's fixed bits). NULL: none. Not collective. */
  int (*check)(qz_method_opts *o);
  /* QZ_NEED_* | QZ_CKPT_* for these options. Not collective. */
  unsigned (*needs)(const qz_method_opts *o);
  /* Checkpoint 'method' attribute (one of labels; NULL hook: name). */
  const char *(*label)(const qz_method_opts *o);
  /* Validate options, allocate per-run state. Not collective. */
  int (*setup)(const qz_method_opts *opts, void **state);
  /* Quantize one layer. Collective on the Hessian's grid communicator when
   * it needs a Hessian; otherwise on layer->comm when the method reduces
   * over the rows (RTN --double-quant), else not collective. */
  int (*quantize_layer)(void *state, const qz_layer *layer,
                        qz_layer_result *res);
  void (*destroy)(void **state); /* accepts NULL state, NULLs it */
  /* Optional: the whole block (NULL: b->sequential with calibration, else
   * every linear in order). Must quantize all 7 linears through b->linear
   * and leave b->f's next input committed. Collective on b->comm. */
  int (*quantize_block)(void *state, qz_block_ctx *b);
  /* plan: one linear of m rows x n inputs on one rank; the block hook's
   * extra memory and work (optional). Not collective. */
  void (*plan_linear)(const qz_method_opts *o, const qz_plan_machine *mc, int64_t m,
                      int64_t n, qz_plan_linear *out);
  void (*plan_block)(const qz_method_opts *o, const qz_model_config *cfg,
                     int64_t nwin_rank, int64_t seqlen, qz_plan_block *out);
  /* Optional: what evaluation must do at the linear inputs of a model this
   * method quantized (FP8 activations with static scales, LLM.int8()
   * decomposition, ...): *h from the checkpoint `ck` (its manifest options
   * and /aux data, qz_ckpt_read_aux) for a model of `cfg`; h->ctx is owned
   * by the hook and released with eval_act_free. Leaving h->fn NULL means
   * none (the options' act_bits still applies). Collective on comm. */
  int (*eval_act)(struct qz_ckpt *ck, MPI_Comm comm, const qz_model_config *cfg,
                  qz_act_hook *h);
  void (*eval_act_free)(qz_act_hook *h); /* accepts a zeroed hook */
  /* Optional, with quantize_block: MoE support. On an MoE block the block
   * hook quantizes the attention and calls b->experts, which calls this
   * for each expert to fold scales / clip into e->g, e->u, e->d (the FFN's
   * function unchanged up to rounding) before they are quantized. A method
   * with a block hook and without it, or whose needs() include
   * QZ_NEED_HESSIAN, is refused on MoE models. Collective on e->comm. */
  int (*prepare_expert)(void *state, const qz_expert_ctx *e);
  /* Optional: the nl (2..QZ_GROUP_MAX) linears of one group that share one
   * ready Hessian (q/k/v, gate/up; every L[k].H is the same), res[k] the
   * results of L[k]: the same results as quantize_layer on each in turn,
   * to the bit, with the Hessian's work shared (GPTQ streams each factor
   * panel once for the group). NULL: quantize_layer per linear.
   * Collective on the Hessian's grid communicator. */
  int (*quantize_group)(void *state, const qz_layer *L, int nl, qz_layer_result *res);
} qz_method_ops;

/* QZ_ERR_NUMERIC naming the first non-finite weight of this rank's rows
 * (global row, column, value). Not collective. */
int qz_layer_check_finite(const qz_layer *L);
/* L->comm, or MPI_COMM_SELF when it is unset (all rows on this rank).
 * Not collective. */
MPI_Comm qz_layer_comm(const qz_layer *L);
/* The rest of a result for methods without a Hessian (RTN, AWQ's and
 * SmoothQuant's final quantization): g_idx of contiguous groups of
 * `groupsize` (<= 0: one group), identity perm, zero losses and loss, no
 * damping, no dead columns; optional outputs may be NULL. Not collective. */
void qz_layer_result_plain(const qz_layer *L, int groupsize, qz_layer_result *res);
/* qz_free every array of res (those allocated with qz_alloc by a caller
 * that owns them all: codes, q, scale, zero, losses, g_idx, perm,
 * objective, outliers); NULLs them. Not collective. */
void qz_layer_result_free(qz_layer_result *res);

/* The method quantize and plan use without --method. */
#define QZ_METHOD_DEFAULT "gptq"

/* A registered method by name (hidden ones too); NULL if unknown. */
const qz_method_ops *qz_method_find(const char *name);
/* The method that writes checkpoint attribute `label`; NULL if none. */
const qz_method_ops *qz_method_find_label(const char *label);
/* i-th registered method (NULL past the end). Not collective. */
const qz_method_ops *qz_method_at(int i);
/* Comma-separated names of the listed methods (for usage text). */
const char *qz_method_names(void);
/* needs() of ops for o (0 without a hook); label() likewise. */
unsigned qz_method_needs(const qz_method_opts *o);
const char *qz_method_label(const qz_method_opts *o);
/* 1 when `format` is in ops->exports. Not collective. */
int qz_method_exports(const qz_method_ops *ops, const char *format);

#ifdef __cplusplus
}
#endif
#endif
