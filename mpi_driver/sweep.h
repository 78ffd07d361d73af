/* mpi_driver private: `mpiquant sweep` (spec, points, result rows, tables,
 * plots, Slurm array emission). The format is documented in docs/sweeps.md. */
#ifndef MPIQUANT_SWEEP_H
#define MPIQUANT_SWEEP_H

#include <jansson.h>
#include <stdint.h>

#define QZ_SWEEP_KEY_MAX 256

typedef struct {
  char *name; /* [A-Za-z0-9._-]+, used in keys, columns and file names */
  char *path; /* absolute (resolved against the spec's directory) */
} qz_sweep_model;

typedef struct {
  char *name;
  char *path;     /* text (tokenized with the model's tokenizer) or tokens */
  int is_tokens;  /* "tokens": pre-tokenized file */
  long nsamples;  /* calibration windows */
  long seqlen;    /* calibration window length */
} qz_sweep_calib;

typedef struct {
  char *name;
  char *path;
  int is_tokens;
  long seqlen;     /* 0: eval's default */
  long windows;    /* 0: all */
  long max_tokens; /* 0: all */
} qz_sweep_eval;

/* "tasks": benchmark accuracy (eval --task) of every point */
typedef struct {
  char **names;    /* task names or .jsonl paths (absolute) */
  int n;
  char *dir;       /* --task-dir (absolute) or NULL */
  long limit;      /* documents per task (0: all) */
  long num_fewshot;
} qz_sweep_tasks;

typedef struct {
  int index;
  char key[QZ_SWEEP_KEY_MAX]; /* unique id; the row file is rows/<key>.json */
  int model;                  /* into spec->models */
  const char *method;         /* "fp32" (baseline), a registered method, or the
                                 name of a method variant (below) */
  int bits;                   /* 32 for fp32 */
  long group;                 /* -1 per channel; 0 for fp32 */
  int act_order, sym;
  int calib;                  /* into spec->calibs, -1 when not used */
  int grid;                   /* value grid (qz_vgrid of mpiquant/codes.h): 0 = int */
  /* appended: a variant of a method ("methods": [{"name", "method",
   * "args"}]): the registered method quantize runs (NULL: `method`) and its
   * own options (a JSON array of strings in the spec document, or NULL) */
  const char *run_method;
  json_t *args;
} qz_sweep_point;

typedef struct {
  char *name;
  char *spec_path; /* absolute */
  json_t *doc;     /* the spec with every path made absolute */
  qz_sweep_model *models;
  int nmodels;
  qz_sweep_calib *calibs;
  int ncalibs;
  qz_sweep_eval *evals;
  int nevals;
  qz_sweep_tasks tasks;
  char **quantize_args;
  int nquantize_args;
  int keep_checkpoints;
  qz_sweep_point *points;
  int npoints;
} qz_sweep_spec;

/* Parse a spec (JSON text read from `path`; relative paths inside are taken
 * relative to the spec's directory) and enumerate its points in a fixed
 * order. Deterministic: every rank that parses the same text gets the same
 * points. Not collective. */
int qz_sweep_spec_parse(const char *path, const char *text, qz_sweep_spec **out);
void qz_sweep_spec_destroy(qz_sweep_spec **s);

/* ---- results (rank 0 only; not collective) ---------------------------- */

/* Row file of a point: OUT/rows/<key>.json. */
void qz_sweep_row_path(const char *out, const qz_sweep_point *p, char *buf,
                       size_t len);
/* 1 when the point's row exists and has a perplexity for every eval set
 * and a result for every task of the spec (so the point is done). */
int qz_sweep_row_done(const qz_sweep_spec *s, const char *out,
                      const qz_sweep_point *p);
/* Write the row file (temp + rename), then rebuild results.jsonl,
 * results.csv and results.md (and the plots when `plot`) from all row files
 * under an exclusive lock on OUT/.lock, so concurrent array tasks append
 * safely. row == NULL only rebuilds. */
int qz_sweep_commit(const qz_sweep_spec *s, const char *out,
                    const qz_sweep_point *p, json_t *row, int plot);

/* A task's name in rows and columns (a file's base name without .jsonl;
 * a per-thread buffer), and the metric its tables and plots show:
 * acc_norm where the rows have it, else acc (NULL: neither). */
const char *qz_sweep_task_label(const char *name);
const char *qz_sweep_task_metric(json_t *const *rows, int n, const char *task);

/* gnuplot on PATH? (for an early, clear error) */
int qz_sweep_have_gnuplot(void);
/* Plots of perplexity vs bits per method, one per model and eval set:
 * OUT/ppl-<model>-<eval>.{png,svg}, and of accuracy vs bits, one per model
 * and task: OUT/acc-<model>-<task>.{png,svg} (data and scripts in OUT/plot/). */
int qz_sweep_plot(const qz_sweep_spec *s, const char *out, json_t *const *rows);

/* Slurm: DIR/sweep-array.sbatch (the built-in template with --array and
 * the paths filled in), DIR/spec.json (paths absolute), DIR/points.json. */
int qz_sweep_emit_slurm(const qz_sweep_spec *s, const char *out,
                        const char *dir, const char *exe);

/* ---- small file helpers (not collective) ------------------------------ */
int qz_sweep_rmtree(const char *path);
int qz_sweep_exists(const char *path);

#endif
