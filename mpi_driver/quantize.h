/* mpi_driver private: the parts of `mpiquant quantize` (DESIGN.md steps
 * 1-7): the command line and resume identity (quantize_cli.c), the
 * calibration stream (quantize_calib.c), the block loop's per-block and
 * per-linear work (quantize_block.c); cmd_quantize.c is the layer loop. */
#ifndef MPIQUANT_QUANTIZE_H
#define MPIQUANT_QUANTIZE_H

#include <jansson.h>
#include <stdint.h>

#include "driver.h"
#include "mpiquant/ckpt.h"
#include "mpiquant/config.h"
#include "mpiquant/forward.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/method.h"
#include "mpiquant/model.h"
#include "mpiquant/rotate.h"

typedef struct {
  const char *model, *calib, *calib_tokens, *out;
  long nsamples, seqlen, nb;
  long layer_begin, layer_end; /* [begin, end), end -1 = all */
  long blocks_per_file, zstd_level, snapshot_every;
  int true_sequential, resume;
  qz_method_opts mo;           /* --method and its rows (method.h) */
  /* mixture of experts (docs/moe.md): an expert with fewer routed
   * calibration tokens (over all ranks) than min_expert_tokens gets the
   * fallback; is_moe (set from the model) records both in the options JSON */
  long min_expert_tokens;
  int expert_fallback;         /* QZ_EXPERT_FALLBACK_* */
  int is_moe;
  qz_rot_params rot;           /* --rotate, --kv-bits, --act-asym, ... */
  int rot_given;               /* any of them given (recorded in the JSON) */
  int duq_given;               /* --block, --perm or --smooth given */
} qz_qopts;

/* Append-only. */
enum { QZ_EXPERT_FALLBACK_ROUTE_ALL = 0, QZ_EXPERT_FALLBACK_POOLED,
       QZ_EXPERT_FALLBACK_RTN };
extern const char *const qz_expert_fallback_names[]; /* NULL-terminated */

/* ---- quantize_cli.c (not collective) ---------------------------------------- */
void qz_quantize_usage(void);
int qz_quantize_parse(int argc, char **argv, qz_qopts *o);
/* The options JSON that decides whether a resume is valid (malloc'd). */
char *qz_quantize_options_json(const qz_qopts *o, int64_t nwin, int64_t L,
                               uint64_t calib_hash);
/* ~2 GiB checkpoint files, at most a tenth of the blocks, at least 1. */
int qz_quantize_blocks_per_file(const qz_model_config *c);
int64_t qz_quantize_dir_bytes(const char *dir);

/* ---- quantize_calib.c (collective on comm) ---------------------------------- */
/* The calibration windows [nwin, L] on every rank (rank 0 reads or
 * tokenizes, then broadcasts) and their FNV-1a hash. */
int qz_quantize_windows(MPI_Comm comm, const qz_qopts *o, const qz_model_config *cfg,
                        int32_t **win, int64_t *nwin, int64_t *L, uint64_t *hash);
/* The hidden states at the input of block b0 in f: from the checkpoint's
 * snapshot when it has one, then the blocks before b0 replayed (from the
 * fp model with QZ_NEED_FP_STREAM, else with the checkpoint's weights). */
int qz_quantize_stream_to(MPI_Comm comm, qz_model *m, qz_ckpt *ck, qz_fwd *f,
                          qz_block_weights *w, const int32_t *win, int64_t nwin, int64_t L,
                          int64_t first, int64_t count, int b0, unsigned needs,
                          qz_rot *rot);

/* ---- quantize_block.c ------------------------------------------------------- */
/* Hessians by input width, reused across blocks (reset, not reallocated):
 * H, nq*hd, I, and the MoE widths I_e and I_s. */
#define QZ_HCACHE_N 5
typedef struct {
  int64_t d[QZ_HCACHE_N];
  qz_hessian *h[QZ_HCACHE_N];
} qz_hcache;

struct qz_moe_run; /* quantize_moe.c */

typedef struct {
  qz_ctx *ctx;
  const qz_qopts *o;
  const qz_model_config *cfg;
  unsigned needs;          /* qz_method_needs(&o->mo) */
  void *mstate;            /* the method's per-run state */
  qz_ckpt *ck;
  qz_grid *grid;           /* with QZ_NEED_HESSIAN */
  qz_hcache hc;
  json_t *stats;           /* per-block stats being built */
  qz_fwd *f;               /* with QZ_NEED_CALIB */
  int64_t win0, nwin;      /* this rank's first window, all windows */
  /* per-linear result buffers, sized once for the largest linear */
  struct qz_linear_bufs *bufs;
  struct qz_moe_run *moe;  /* MoE scratch (quantize_moe.c), or NULL */
  qz_model *m;             /* the source model (MoE experts are read one at a time) */
  qz_rot *rot;             /* rotations (NULL: none) */
  qz_act_hook rot_hook;    /* the rotation's online part at linear inputs
                              (no quantization; .fn NULL: none) */
  float *hx;               /* [ntok, max(H, I)] a group input through rot_hook */
} qz_qrun;

/* Quantize block `layer` (weights in w) with the method: its block hook,
 * the true-sequential default, or every linear in order; then the folded
 * norms when the method writes them. Collective on r->ctx->comm. */
int qz_quantize_block(qz_qrun *r, int layer, qz_block_weights *w);
/* Sum bits_per_param * params over the per-linear entries of one block's
 * stats object into *bits and *params. Not collective. */
void qz_stats_bits(json_t *stats, double *bits, double *params);
/* Average bits per parameter of the quantized linears of the completed
 * blocks in checkpoint `dir` (its manifest's stats; 0 when none records
 * it). Not collective. */
int qz_quantize_ckpt_bits(const char *dir, double *bpp);
/* Free what the block loop keeps from block to block. Not collective. */
void qz_quantize_run_free(qz_qrun *r);

/* The Hessian handle of width d (reset), from the cache. Collective. */
int qz_quantize_hessian_for(qz_hcache *c, qz_grid *g, int64_t d, qz_hessian **out);
/* Quantize one linear `module` ("mlp.experts.3.down_proj") [out, in] of
 * block `layer`: W (every rank's copy) replaced by its dequantized weights,
 * this rank's rows written to the checkpoint, stats recorded.  mo/mstate:
 * another method (a fallback), or NULL for the run's. Collective. */
int qz_quantize_module(qz_qrun *r, int layer, const char *module, int64_t out, int64_t in,
                       float *W, qz_hessian *H, const qz_method_opts *mo, void *mstate);
/* Groups [0, ngroups) of the true-sequential loop ([q,k,v], [o], ...) on
 * block b; after it the forward holds the inputs with those groups
 * quantized from stage `ngroups` on (recompute with
 * qz_quantize_forward_to). Collective. */
int qz_quantize_groups(qz_block_ctx *b, int ngroups);
int qz_quantize_forward_to(qz_block_ctx *b, qz_fwd_stage stage);

/* ---- quantize_moe.c --------------------------------------------------------- */
/* An MoE block: attention groups as above, then the experts one at a time
 * (see docs/moe.md). Collective. */
int qz_quantize_moe_block(qz_qrun *r, qz_block_ctx *b);
void qz_quantize_moe_free(qz_qrun *r);
/* Replay MoE block `layer` on f (resume): attention and experts from the
 * checkpoint when it holds the block (ck not NULL), else from the model;
 * experts read one at a time into w's storage-less block. Collective. */
int qz_quantize_moe_replay(qz_model *m, qz_ckpt *ck, qz_fwd *f, qz_block_weights *w,
                           int layer);

#endif
