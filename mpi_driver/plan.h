/* mpi_driver private: the `plan` model of a quantize run: per-rank memory by
 * phase (from the same layouts and constants the pipeline allocates with)
 * and time per phase from machine rates (measured by `plan --calibrate`). */
#ifndef MPIQUANT_PLAN_H
#define MPIQUANT_PLAN_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mpiquant/config.h"
#include "mpiquant/method.h"

/* MPI-IO aggregation buffer of the rank that writes for the others */
#define QZ_PLAN_IO_AGG_BYTES (16.0 * 1048576.0)

/* Machine rates.  Per-core rates are for one BLAS thread; collective
 * bandwidths are "bytes of the reduced object per second" measured within
 * one node (see plan_rates.c for the exact definitions). */
typedef struct {
  double sgemm_gflops;      /* f32 GEMM, 1 thread */
  double ssyrk_gflops;      /* f32 SYRK (n^2 k flops), 1 thread */
  double dpotrf_gflops;     /* LAPACK dpotrf (n^3/3 flops), 1 thread */
  double pdpotrf_eff;       /* ScaLAPACK pdpotrf+pdpotri rate / (P x dpotrf rate) */
  double grid_nb;           /* ScaLAPACK block size with that rate (the best
                               of 64, 128, 256, 512 measured; default 128) */
  double gptq_frac;         /* GPTQ sweep rate / sgemm rate */
  double qe_frac;           /* QuantEase sweep rate (2 m n^2 flops) / sgemm rate */
  double fwd_frac;          /* block forward rate / sgemm rate */
  double allreduce_gbs;     /* in-node MPI_Allreduce, object bytes / s (np 2) */
  double reduce_scatter_gbs;/* in-node MPI_Reduce_scatter, object bytes / s */
  double allgather_gbs;     /* in-node MPI_Allgather, object bytes / s */
  double hdf5_write_gbs;    /* collective HDF5 write per node */
  double read_gbs;          /* safetensors read + convert per node */
  double expand_gelems;     /* 1 thread: 16-bit -> f32 widening and code
                               dequantization, G elements / s (the slower) */
  double base_rss_bytes;    /* an idle mpiquant process (libraries, MPI) */
  double nb_eff[4];         /* calibrate only: efficiency at nb 64 .. 512 */
  int measured;             /* 0: the built-in defaults */
  char source[256];         /* file the rates came from, or "defaults" */
  char blas_kernel[32];     /* OpenBLAS kernel the rates were measured with */
} qz_plan_rates;

/* Built-in defaults (this kind of 2-core AVX-512 VM with OpenBLAS' Haswell
 * kernels, 1 thread per rank; see docs/performance.md). Not collective. */
void qz_plan_rates_default(qz_plan_rates *r);
/* Read / write the small JSON (keys = field names). Not collective. */
int qz_plan_rates_load(const char *path, qz_plan_rates *r);
int qz_plan_rates_save(const char *path, const qz_plan_rates *r);
/* Default location: $MPIQUANT_RATES, else $XDG_CONFIG_HOME/mpiquant/rates.json,
 * else $HOME/.config/mpiquant/rates.json. Not collective. */
void qz_plan_rates_default_path(char *buf, size_t len);
/* Measure every rate on the communicator's ranks (1 BLAS thread each).
 * Collective on comm. scratch: directory for the HDF5 test file. */
int qz_plan_calibrate(MPI_Comm comm, const char *scratch, qz_plan_rates *r);

typedef struct {
  qz_model_config cfg;
  int64_t P;               /* ranks */
  int64_t nodes, ranks_per_node, threads; /* threads = BLAS threads per rank */
  int64_t nsamples, seqlen;
  qz_method_opts mo;       /* the method and its options (its table's plan model) */
  unsigned needs;          /* qz_method_needs(&mo) */
  int nb;
  int disk_dtype_bytes;    /* bytes per weight in the safetensors files */
  double core_scale;       /* per-core rate of the target node / measured */
  double net_gbs;          /* per-node network bandwidth (nodes > 1) */
  double latency_s;        /* per-message latency between nodes */
  int64_t snapshot_every;  /* quantize --snapshot-every (0: its default) */
} qz_plan_in;

/* Per-rank bytes (the rank with the most windows and rows: rank 0). */
typedef struct {
  double base;         /* idle process */
  double weights;      /* one block, f32, on every rank */
  double fwd;          /* forward workspace (hidden states + stage buffers) */
  double fwd_hidden;   /* its residual-stream part */
  double embed;        /* f32 embedding held while embedding: 0 (rows are read per token) */
  double hessians;     /* distributed Hessian shares of every distinct width */
  double hessian_max;  /* the largest one (d = max width) */
  double hessian_ideal;/* 8 d^2 / P for that width (no padding) */
  double factor_xbuf;  /* persistent factor-panel exchange buffers */
  double flush;        /* Hessian panel + reduce-scatter buffers (transient) */
  double prepare;      /* factor redistribution batch (transient) */
  double gptq;         /* per-rank buffers of the largest linear: results + the
                          method's working set (transient) */
  double method_block; /* held through the method's block hook (AWQ search) */
  double io_pages;     /* mapped safetensors pages of the largest row slice being read */
  double prefetch;     /* the next dense block's linears in their wire size
                          (shard/model.c qz_model_prefetch_block) */
  double moe;          /* MoE: one expert in f32 + routed rows, activations, FFN output */
  double embed_phase;  /* peak while embedding */
  double block_phase;  /* peak while quantizing a block */
  double peak;         /* max of the two */
  int64_t windows_rank, tokens_rank;
} qz_plan_mem;

typedef enum {
  QZ_PT_LOAD = 0, QZ_PT_FORWARD, QZ_PT_HESSIAN, QZ_PT_REDUCE, QZ_PT_FACTOR,
  QZ_PT_QUANTIZE, QZ_PT_GATHER, QZ_PT_WRITE, QZ_PT_COUNT
} qz_plan_phase;

typedef struct {
  double t[QZ_PT_COUNT];  /* whole run, seconds */
  double total;
  double flops[QZ_PT_COUNT];
  int64_t busy_ranks;     /* ranks with calibration windows */
} qz_plan_time;

const char *qz_plan_phase_name(qz_plan_phase p);

/* Model formulas: not collective, no allocation of the modelled sizes. */
/* Bytes of qz_block_weights_alloc for cfg (same 16-float rounding). */
double qz_plan_block_weight_bytes(const qz_model_config *cfg);
/* quantize_moe.c's scratch for T local tokens in nw windows (0 for a dense
 * model). Not collective. */
/* MoE blocks of a config: parameters in total and active per token (FFN
 * part with k of E experts; routers counted in both), the number of expert
 * Hessians per run, and the bytes an all-to-all of routed tokens' hidden
 * states would move (there and back, f32) for `tokens` calibration tokens
 * -- mpiquant moves none (each rank's partial expert Hessians are reduced
 * instead, docs/moe.md). Not collective. */
typedef struct {
  int64_t moe_blocks;
  double total, active;          /* whole model */
  double total_ffn, active_ffn;  /* MoE FFNs only */
  double hessians;               /* expert Hessians (2 per expert per block) */
  double alltoall_bytes;         /* per run, all MoE blocks */
} qz_plan_moe;
void qz_plan_moe_summary(const qz_model_config *cfg, int64_t tokens, qz_plan_moe *s);
double qz_plan_moe_scratch_bytes(const qz_model_config *cfg, int64_t T, int64_t nw);
/* Bytes of qz_fwd_create(cfg, nwin, seqlen) (same layout). */
double qz_plan_fwd_bytes(const qz_model_config *cfg, int64_t nwin, int64_t seqlen);
/* qz_hessian_bytes right after qz_hessian_create(d) on grid rank `rank` of
 * P ranks on `nodes` nodes (qz_grid_create's shape under the --proc-grid
 * policy: 1 x P, or near-square). */
double qz_plan_hessian_bytes(int64_t d, int nb, int P, int64_t nodes, int rank);
void qz_plan_grid_shape(int P, int64_t nodes, int *pr, int *pc);

int qz_plan_memory(const qz_plan_in *in, const qz_plan_rates *r, qz_plan_mem *m);

/* Bytes a rank moves per phase over the whole run, the mean over ranks of
 * what `--log-view` counts (timing.h): MPI payload sent + received as
 * comm.h's qz_count_* define it, file payload read + written.  Dense blocks
 * are modelled; MoE blocks are not (moe_blocks says how many were left
 * out).  Control messages (error agreement, sizes, digests, the manifest)
 * are not modelled: they land in `other` or are < 0.1 % of a phase. */
typedef struct {
  double mpi[QZ_PT_COUNT];
  double file[QZ_PT_COUNT];
  int64_t moe_blocks;
} qz_plan_bytes;
/* Not collective. */
int qz_plan_bytes_model(const qz_plan_in *in, qz_plan_bytes *b);
/* Elements of the lower triangle of a d x d Hessian the reduction packs
 * (whole nb-row blocks from each column's diagonal block down), and the
 * elements of the strict upper triangle the factorization's redistribution
 * moves between ranks of the pr x pc grid (identity order; with act-order
 * the expected count of a random order). Not collective. */
double qz_plan_hessian_packed(int64_t d, int nb);
double qz_plan_redistributed(int64_t d, int nb, int pr, int pc, int act_order);
int qz_plan_time_model(const qz_plan_in *in, const qz_plan_rates *r, qz_plan_time *t);
/* Bytes per weight moved by the load's allgather (2 for a 16-bit model, else
 * 4) and by the gather after quantizing (packed codes + f32 scales and
 * zeros of a hidden-wide row). Not collective. */
double qz_plan_wire_bytes(const qz_plan_in *in);
double qz_plan_gather_bytes_per_weight(const qz_plan_in *in);

#endif
