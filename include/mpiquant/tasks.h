/* Benchmark task files (JSONL) and lm-evaluation-harness 0.4 requests.
 *
 * A task file has one JSON object per line, all of one kind:
 *   multiple choice {"id","context","choices":[...],"gold"}:
 *       request i = loglikelihood(" " + choices[i] | context)
 *   partial scoring {"id","contexts":[...],"continuation","gold"}:
 *       request i = loglikelihood(" " + continuation | contexts[i])
 *   cloze           {"id","context","continuation"}:
 *       request   = loglikelihood(" " + continuation | context)
 * The published Hugging Face layouts are recognised per line and mapped to
 * the same requests exactly as lm-eval's task definitions build them:
 * hellaswag (ctx_a, ctx_b, activity_label, endings, label; lm-eval's
 * preprocess), ARC (question, choices.text/label, answerKey), PIQA (goal,
 * sol1, sol2, label), WinoGrande (sentence, option1, option2, answer),
 * LAMBADA (text) and MMLU (subject, question, choices, answer: the
 * "The following are multiple choice questions (with answers) about ..."
 * prompt with choices " A".." D").
 *
 * Few-shot (num_fewshot K > 0): K examples, each "context + ' ' + gold
 * answer", joined by "\n\n" and followed by "\n\n", go before the context
 * (after MMLU's description).  They are the first K records of the
 * fewshot file, or of the task file itself other than the scored record
 * (MMLU: of the same subject).  Deterministic.
 *
 * Everything here is Not collective: every rank can parse the same file
 * and gets the same documents (and the same error on bad input). */
#ifndef MPIQUANT_TASKS_H
#define MPIQUANT_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "mpiquant/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Append-only. */
typedef enum {
  QZ_TASK_MULTIPLE_CHOICE = 0, /* metrics acc, acc_norm (MMLU: acc) */
  QZ_TASK_PARTIAL,             /* acc */
  QZ_TASK_CLOZE                /* acc (greedy), perplexity */
} qz_task_kind;

/* One document: its requests as (context, continuation) strings, after
 * the few-shot prompt was put in front (the continuation has its leading
 * space; lm-eval's whitespace move happens at encoding). */
typedef struct {
  const char *id;  /* the record's "id" (or "<task>-<index>" when absent) */
  int64_t line;    /* 1-based line in the task file */
  int gold;        /* index of the correct request; -1 for cloze */
  int nreq;
  char **ctx;      /* [nreq] */
  char **cont;     /* [nreq] */
  int64_t *nchars; /* [nreq] Unicode code points of the choice without the
                      leading space (acc_norm); 0 when not multiple choice */
} qz_task_doc;

typedef struct {
  int64_t limit;            /* only the first `limit` documents (0 = all) */
  int num_fewshot;          /* K, 0 = zero-shot */
  const char *fewshot_from; /* file of the same kind for the examples, or
                               NULL: the task file itself */
} qz_task_opts;

typedef struct qz_task qz_task;

/* The file of task `name`: `name` itself when it names a file (a path to
 * any .jsonl of the schema), else NAME.jsonl in task_dir, else in
 * $MPIQUANT_TASK_DIR.  An unknown name is an error listing where it was
 * looked for. */
int qz_task_resolve(const char *name, const char *task_dir, char *path,
                    size_t len);

/* Parse a task file and build its requests.  `name` labels the task in
 * messages and results (NULL: the file name without .jsonl).  Malformed
 * lines, gold out of range, empty choices, mixed kinds are errors naming
 * the file and line. */
int qz_task_load(const char *path, const char *name, const qz_task_opts *o,
                 qz_task **out);
void qz_task_free(qz_task **t); /* accepts NULL, NULLs the pointer */

const char *qz_task_name(const qz_task *t);
const char *qz_task_path(const qz_task *t);
qz_task_kind qz_task_kind_of(const qz_task *t);
/* "schema", "hellaswag-hf", "arc-hf", "piqa-hf", "winogrande-hf",
 * "lambada-hf", "mmlu" (of the first record). */
const char *qz_task_layout(const qz_task *t);
int qz_task_has_acc_norm(const qz_task *t); /* multiple choice, not MMLU */
int64_t qz_task_ndocs(const qz_task *t);    /* after the limit */
int64_t qz_task_ndocs_file(const qz_task *t); /* all records of the file */
const qz_task_doc *qz_task_doc_at(const qz_task *t, int64_t i);

/* ---- lm-eval request encoding ---------------------------------------- */

/* BOS: the tokenizer's own post-processor template (lm-eval with
 * add_bos_token unset), or forced on / off. Append-only. */
typedef enum { QZ_BOS_DEFAULT = 0, QZ_BOS_YES, QZ_BOS_NO } qz_bos_mode;

/* lm-eval _encode_pair: trailing whitespace of ctx moves to the front of
 * cont; ctx_ids = encode(ctx); cont_ids = encode(ctx + cont)[len(ctx_ids):].
 * An empty context (also after the move) gives ctx_ids = [bos_id] (lm-eval's
 * prefix token) and cont_ids = encode(cont) without special tokens.
 * QZ_BOS_YES encodes without the template and puts bos_id first;
 * QZ_BOS_NO encodes without the template.  Empty cont_ids is an error
 * (lm-eval refuses such requests).  Arrays are malloc'ed. */
int qz_task_encode_pair(const qz_tokenizer *tok, qz_bos_mode bos,
                        int32_t bos_id, const char *ctx, const char *cont,
                        int32_t **ctx_ids, int64_t *nctx, int32_t **cont_ids,
                        int64_t *ncont);

/* Unicode code points of UTF-8 text (Python's len()). */
int64_t qz_utf8_chars(const char *s);

#ifdef __cplusplus
}
#endif
#endif
