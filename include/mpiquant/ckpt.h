/* The mpiquant checkpoint (format "mpiquant-ckpt", version 2).
 *
 * A directory:
 *   manifest.json        options, source fingerprint, completed blocks + stats
 *   blocks-NNN.h5        blocks [NNN*K, NNN*K + K) (K = blocks per file),
 *                        written collectively with parallel HDF5, zstd filter
 *                        32015; a group file is written as blocks-NNN.h5.tmp
 *                        and renamed when its last block is complete
 *   (blocks-NNN.h5 may also hold /norms/{i} (folded RMSNorm weights) and
 *   /aux/{i}/{name} (f32 data a method needs at evaluation))
 *   act-snapshot.h5      hidden states at the input of one block (resume)
 * Datasets per quantized linear, /layers/{i}/{module}/:
 *   codes  u8  [out, in]        integer codes, original column order
 *   scales f32 [out, ngroups]   group k = columns with g_idx == k
 *   zeros  f32 [out, ngroups]
 *   g_idx  i32 [in], perm i32 [in]
 * with attributes bits, group_size, sym, act_order, static_groups, method,
 * damp_used, loss, and grid when the codes are not on the integer grid
 * (mpiquant/codes.h: nf4, fp4, fp8_e4m3; Q = scales * (value[code] - zeros)); optionally (QuantEase --outlier-frac) a sparse f32 part
 *   outliers_idx i64 [nnz]   flat index row * in + col
 *   outliers_val f32 [nnz]   added to the dequantized weight
 * (timings are in manifest.json, so that reruns and resumes
 * give bit-identical files). Dequantized weight: Q[r,c] = scales[r,g] *
 * (codes[r,c] - zeros[r,g]), g = g_idx[c] (f32 arithmetic), plus the
 * outliers when present.
 * See docs/checkpoint.md. */
#ifndef MPIQUANT_CKPT_H
#define MPIQUANT_CKPT_H

#include <mpi.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QZ_CKPT_FORMAT "mpiquant-ckpt"
/* 2: source fingerprint with content digests, zstd frame checksums,
 * per-dataset digests in the manifest.  Version 1 checkpoints are still read
 * (eval, export, inspect, verify: what they lack is reported) but not
 * resumed. */
#define QZ_CKPT_VERSION 2
#define QZ_CKPT_VERSION_MIN_READ 1
/* More blocks than any model has (405B: 126); larger manifests are damaged. */
#define QZ_CKPT_MAX_BLOCKS 100000

typedef struct qz_ckpt qz_ckpt;

typedef struct {
  int bits, group_size; /* group_size -1 = per channel */
  int sym, act_order, static_groups;
  char method[32];
  double damp_used, loss, seconds; /* seconds: manifest only */
  char grid[16];   /* value grid of the codes (mpiquant/codes.h): "int" (or
                      empty: not recorded), "nf4", "fp4", "fp8_e4m3" */
} qz_ckpt_linear_meta;

typedef struct {
  const char *options_json;  /* JSON object: every option that changes results */
  const char *source_json;   /* JSON object: source model fingerprint (config, files) */
  int nblocks;               /* blocks of the model */
  int blocks_per_file;       /* K >= 1 */
  int zstd_level;            /* 1..19 */
  const char *mpiquant_version;
  const char *model_dir;     /* source model directory (informational; export default) */
} qz_ckpt_params;

/* The source fingerprint a checkpoint records of a model directory:
 * {"config": <config.json>, "files": [{"name", "bytes", "content"}]} for
 * every *.safetensors file, "content" a 64-bit digest of all its bytes
 * (read in 16 MiB chunks dealt over the ranks: each rank reads ~1/P of the
 * model; the value does not depend on np).  Collective on comm; the same
 * string (free()) on every rank. */
int qz_ckpt_source_fingerprint(MPI_Comm comm, const char *model_dir, char **out);
/* QZ_ERR_ARG naming the first difference when source_json (a fingerprint
 * of the model about to be used for `what`, e.g. "export") differs from the
 * one the checkpoint records.  A version-1 checkpoint records no content
 * digests: only config and sizes are compared, with a warning.
 * Not collective (the manifest is the same on every rank). */
int qz_ckpt_check_source(const qz_ckpt *ck, const char *source_json, const char *what);

/* Create a new checkpoint directory (must not hold a manifest unless
 * `resume`).  With resume: the manifest's options and source must equal
 * params' (else QZ_ERR_ARG naming the first difference); blocks of files
 * that were not completed are discarded.  Collective on comm. */
int qz_ckpt_create(MPI_Comm comm, const char *dir, const qz_ckpt_params *p,
                   int resume, qz_ckpt **out);
/* Open an existing checkpoint for reading. Collective on comm. */
int qz_ckpt_open(MPI_Comm comm, const char *dir, qz_ckpt **out);
/* Collective on the communicator it was created with. */
void qz_ckpt_close(qz_ckpt **ck);

int qz_ckpt_nblocks(const qz_ckpt *ck);
int qz_ckpt_version(const qz_ckpt *ck); /* the manifest's format version */
int qz_ckpt_block_done(const qz_ckpt *ck, int block);  /* in a completed file */
int qz_ckpt_first_missing(const qz_ckpt *ck);           /* nblocks if all done */
const char *qz_ckpt_options_json(const qz_ckpt *ck);    /* from the manifest */
const char *qz_ckpt_source_json(const qz_ckpt *ck);
const char *qz_ckpt_model_dir(const qz_ckpt *ck); /* "" if unknown */
const char *qz_ckpt_dir(const qz_ckpt *ck);

/* Start writing block `block` (opens/creates its group file).
 * Collective on comm. */
int qz_ckpt_begin_block(qz_ckpt *ck, int block);
/* Write one linear: this rank's rows [row0, row0+nrows) of codes/scales/zeros
 * (nrows may be 0); g_idx/perm replicated (identical on every rank).
 * Collective on comm. */
int qz_ckpt_write_linear(qz_ckpt *ck, int block, const char *module,
                         int64_t out, int64_t in, int64_t ngroups,
                         int64_t row0, int64_t nrows,
                         const uint8_t *codes,  /* [nrows, in] */
                         const float *scales,   /* [nrows, ngroups] */
                         const float *zeros,    /* [nrows, ngroups] */
                         const int32_t *g_idx,  /* [in] */
                         const int32_t *perm,   /* [in] */
                         const qz_ckpt_linear_meta *meta);
/* Finish block `block`: flush; when it is the last block of its file the file
 * is closed and renamed, and the manifest (rank 0: temp + fsync + rename)
 * records the file's blocks with their stats (JSON object per block,
 * `stats_json`, kept until the file completes). Collective on comm. */
int qz_ckpt_end_block(qz_ckpt *ck, int block, const char *stats_json);

/* Shape and attributes of a stored linear. Collective on comm. */
int qz_ckpt_linear_info(qz_ckpt *ck, int block, const char *module,
                        int64_t *out, int64_t *in, int64_t *ngroups,
                        qz_ckpt_linear_meta *meta);
/* Read rows [row0, row0+nrows) (any pointer may be NULL to skip).
 * Collective on comm (each rank may ask for different rows). */
int qz_ckpt_read_linear(qz_ckpt *ck, int block, const char *module,
                        int64_t row0, int64_t nrows, uint8_t *codes,
                        float *scales, float *zeros, int32_t *g_idx,
                        int32_t *perm);

/* RMSNorm weights of block `block` changed by a method that folds scales
 * into them (AWQ, SmoothQuant): /norms/{i}/{input_layernorm,
 * post_attention_layernorm} f32 [hidden], replicated (rank 0 writes).
 * Collective on comm. */
int qz_ckpt_write_norms(qz_ckpt *ck, int block, int64_t hidden,
                        const float *attn_norm /* [hidden] */,
                        const float *ffn_norm /* [hidden] */);
/* Read them when present (*found = 1); otherwise *found = 0 and the arrays
 * are untouched (the model's own norms apply). Collective on comm. */
int qz_ckpt_read_norms(qz_ckpt *ck, int block, int64_t hidden,
                       float *attn_norm /* [hidden] */,
                       float *ffn_norm /* [hidden] */, int *found);
/* Activation quantization the checkpoint's model expects at the input of
 * every linear: options.act_bits (per-token dynamic symmetric, 8 for
 * SmoothQuant W8A8), 0 = none. Not collective. */
int qz_ckpt_act_bits(const qz_ckpt *ck);

/* Dequantize rows: q[r,c] = scales[r,g]*(codes[r,c]-zeros[r,g]), g=g_idx[c].
 * Not collective. */
void qz_dequantize_rows(int64_t nrows, int64_t in, int64_t ngroups,
                        const uint8_t *codes, const float *scales,
                        const float *zeros, const int32_t *g_idx,
                        float *q /* [nrows, in] */);

/* Auxiliary f32 data of block `block` that a method or transform needs at
 * evaluation (static activation scales, outlier column sets, rotations):
 * /aux/{block}/{name} f32 [n0, max(n1, 1)], replicated (rank 0's v is
 * written; every rank passes a buffer of that size). `name`: letters,
 * digits, '_' and '.', e.g. "q_proj.input_scale". Collective on comm. */
int qz_ckpt_write_aux(qz_ckpt *ck, int block, const char *name, int64_t n0, int64_t n1,
                      const float *v);
/* Read it into v [n0, max(n1, 1)] when present (*found = 1; a different
 * shape is QZ_ERR_FORMAT); absent: *found = 0, v untouched.
 * Collective on comm. */
int qz_ckpt_read_aux(qz_ckpt *ck, int block, const char *name, int64_t n0, int64_t n1,
                     float *v, int *found);

/* Sparse full-precision part of a linear already written with
 * qz_ckpt_write_linear: this rank's nlocal entries (any split; stored in
 * rank order).  Nothing is written when no rank has entries.
 * Collective on comm. */
int qz_ckpt_write_outliers(qz_ckpt *ck, int block, const char *module,
                           int64_t nlocal, const int64_t *idx /* [nlocal] */,
                           const float *val /* [nlocal] */);
/* All entries of a linear's sparse part (*nnz = 0 and NULL arrays when it
 * has none); free the arrays with qz_free.  Collective on comm. */
int qz_ckpt_read_outliers(qz_ckpt *ck, int block, const char *module,
                          int64_t *nnz, int64_t **idx, float **val);
/* q [nrows, in] holds rows [row0, row0 + nrows): add the entries of those
 * rows. Not collective. */
void qz_outliers_add_rows(int64_t row0, int64_t nrows, int64_t in, int64_t nnz,
                          const int64_t *idx, const float *val, float *q);

/* Check the checkpoint's data: every completed group file (and the
 * snapshot) opens, every dataset decodes (zstd frame checksums) and its
 * digest equals the one the manifest records (version 2; version 1 files
 * are only decoded).  Rank 0 logs one warning per damaged file naming the
 * file and the first damaged dataset; *ndamaged counts them, *ndatasets the
 * datasets read.  Reads the whole checkpoint once (1/P per rank).
 * Collective on comm. */
int qz_ckpt_verify(qz_ckpt *ck, int *ndamaged, int64_t *ndatasets);

/* Hidden-state snapshot at the input of block `block`: windows
 * [win0, win0+nwin) of `total_win` on this rank, each [seqlen, hidden] f32.
 * Written to act-snapshot.h5.tmp then renamed; the manifest records it.
 * Collective on comm. */
int qz_ckpt_write_snapshot(qz_ckpt *ck, int block, int64_t total_win,
                           int64_t seqlen, int64_t hidden, int64_t win0,
                           int64_t nwin, const float *x);
/* 1 when both act-snapshot.h5 and the manifest hold the snapshot of
 * `block` (after a crash during a snapshot write they may not: resume then
 * writes it again, so that the directory equals an uninterrupted run's).
 * Not collective. */
int qz_ckpt_snapshot_current(const qz_ckpt *ck, int block);
/* Block index of the snapshot, or -1. Not collective. */
int qz_ckpt_snapshot_block(const qz_ckpt *ck);
/* Read this rank's windows of the snapshot. Collective on comm. */
int qz_ckpt_read_snapshot(qz_ckpt *ck, int64_t total_win, int64_t seqlen,
                          int64_t hidden, int64_t win0, int64_t nwin,
                          float *x);

#ifdef __cplusplus
}
#endif
#endif
