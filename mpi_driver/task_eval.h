/* mpi_driver private: `eval --task` (benchmark accuracy with
 * lm-evaluation-harness 0.4 request semantics) on an opened model. */
#ifndef MPIQUANT_TASK_EVAL_H
#define MPIQUANT_TASK_EVAL_H

#include <stdio.h>

#include "driver.h"
#include "mpiquant/forward.h"
#include "mpiquant/model.h"

/* The task options of eval (one table in task_eval.c: parser and help). */
typedef struct {
  const char *tasks;        /* --task NAME[,NAME...] */
  const char *task_dir;     /* --task-dir */
  long limit;               /* --limit N documents per task (0 = all) */
  long num_fewshot;         /* --num-fewshot K */
  const char *fewshot_from; /* --fewshot-from FILE */
  const char *log_samples;  /* --log-samples FILE */
  const char *add_bos;      /* --add-bos yes|no (NULL: tokenizer default) */
  long max_length;          /* --max-length (0: max_position_embeddings) */
  long batch_tokens;        /* --batch-tokens */
  long round_rows;          /* --round-rows */
  int no_prefix_reuse;      /* --no-prefix-reuse */
} qz_task_cli;

/* If argv option `a` is a task option, consume it (and its value v):
 * *used = 0 (not ours), 1 (a flag) or 2 (option and value). Not
 * collective. */
int qz_task_cli_option(qz_task_cli *c, const char *a, const char *v, int *used);
/* The options' help lines. */
void qz_task_cli_help(FILE *out);

#define QZ_TASK_METRICS_MAX 2

/* One task's result: metric k is names[k] with value[k] +- stderr[k]. */
typedef struct {
  char name[128];
  int nmetrics;
  const char *metric[QZ_TASK_METRICS_MAX]; /* "acc", "acc_norm", "perplexity" */
  double value[QZ_TASK_METRICS_MAX], stderr_[QZ_TASK_METRICS_MAX];
  long long ndocs, nreq, tokens;
} qz_task_metrics;

typedef struct qz_task_results {
  qz_task_metrics *task; /* [ntasks], malloc'ed */
  int ntasks;
  double seconds, tokens_per_s;
  long long tokens_input, tokens_forward, bytes_read;
} qz_task_results;

void qz_task_results_free(qz_task_results *r);

/* Weights and activations as eval sets them up (checkpoint fake-quant,
 * SmoothQuant activations, exports). */
typedef struct {
  qz_block_source_fn block_source;
  void *block_source_ctx;
  int act_quant_bits;
  const qz_act_hook *act_hook; /* NULL or the linear-input hook */
  const qz_model_hook *model_hook; /* NULL or the stream/attention hook */
  int full_head; /* 1: the whole output head on every rank (eval --full-head) */
} qz_task_model;

/* Evaluate the tasks of `c` on model m (its dir `model_dir` holds the
 * tokenizer): parse every task file on every rank, tokenize (split over
 * the ranks), score all requests of all tasks in one pass over the
 * weights, compute the metrics.  report: print one line per task (and
 * with json one JSON line) on rank 0; --log-samples is written by rank 0
 * (temp + rename) after everything succeeded.  out (may be NULL) gets the
 * results on every rank.  Collective on ctx->comm. */
int qz_task_eval(qz_ctx *ctx, qz_model *m, const char *model_dir, const qz_task_cli *c,
                 const qz_task_model *tm, int report, int json, qz_task_results *out);

#endif
