/* eval --task: benchmark accuracy with lm-evaluation-harness 0.4 request
 * semantics, distributed (task files: io/tasks.c; scoring: shard/loglik.c). */
#include "task_eval.h"

#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/files.h"
#include "mpiquant/log.h"
#include "mpiquant/loglik.h"
#include "mpiquant/mem.h"
#include "mpiquant/tasks.h"
#include "mpiquant/tokenizer.h"
#include "sweep.h"

/* ---- options: one row each (parser and --help come from here) ---------- */

typedef enum { OPT_FLAG, OPT_INT, OPT_STR } opt_type;
static const struct {
  const char *name, *arg;
  opt_type type;
  size_t off;
  long lo, hi;
  const char *help;
} task_opts[] = {
    {"--task", "NAME[,NAME...]", OPT_STR, offsetof(qz_task_cli, tasks), 0, 0,
     "benchmark accuracy instead of perplexity: NAME.jsonl in --task-dir,\n"
     "else in $MPIQUANT_TASK_DIR, else a path to any .jsonl of the task\n"
     "schema (docs/tasks.md); all tasks are scored in one pass"},
    {"--task-dir", "DIR", OPT_STR, offsetof(qz_task_cli, task_dir), 0, 0,
     "folder of task files"},
    {"--limit", "N", OPT_INT, offsetof(qz_task_cli, limit), 1, 1L << 40,
     "only the first N documents of each task"},
    {"--num-fewshot", "K", OPT_INT, offsetof(qz_task_cli, num_fewshot), 0, 1000,
     "K examples before each context (lm-eval's prompt: context + \" \" +\n"
     "answer, joined by blank lines): the first K other documents of the\n"
     "task (MMLU: of the same subject), or of --fewshot-from"},
    {"--fewshot-from", "FILE", OPT_STR, offsetof(qz_task_cli, fewshot_from), 0, 0,
     "task file of the same kind to take the few-shot examples from\n"
     "(e.g. MMLU's dev split)"},
    {"--log-samples", "FILE", OPT_STR, offsetof(qz_task_cli, log_samples), 0, 0,
     "one JSON line per request: task, id, choice, loglikelihood,\n"
     "is_greedy, ctx_tokens, cont_tokens"},
    {"--add-bos", "yes|no", OPT_STR, offsetof(qz_task_cli, add_bos), 0, 0,
     "force BOS on/off (default: the tokenizer's post-processor, as\n"
     "lm-eval with add_bos_token unset)"},
    {"--max-length", "N", OPT_INT, offsetof(qz_task_cli, max_length), 2, 1L << 30,
     "model context for left truncation (default max_position_embeddings)"},
    {"--batch-tokens", "N", OPT_INT, offsetof(qz_task_cli, batch_tokens), 1, 1L << 30,
     "rows per forward batch (default 512; results depend on it in the\n"
     "last bits only, never on the number of ranks)"},
    {"--round-rows", "N", OPT_INT, offsetof(qz_task_cli, round_rows), 1, 1L << 40,
     "rows of residual stream a rank holds at once (default 4 GiB worth);\n"
     "more rows stream the weights once per round (same results)"},
    {"--no-prefix-reuse", NULL, OPT_FLAG, offsetof(qz_task_cli, no_prefix_reuse), 0, 0,
     "run every request's whole input (for checks; default: a document's\n"
     "shared context runs once and its keys/values serve every choice)"},
};
#define NOPTS ((int)(sizeof task_opts / sizeof task_opts[0]))

int qz_task_cli_option(qz_task_cli *c, const char *a, const char *v, int *used) {
  *used = 0;
  for (int i = 0; i < NOPTS; i++) {
    if (strcmp(a, task_opts[i].name) != 0) continue;
    char *p = (char *)c + task_opts[i].off;
    if (task_opts[i].type == OPT_FLAG) {
      *(int *)p = 1;
      *used = 1;
      return QZ_OK;
    }
    QZ_CHECK(v, QZ_ERR_USAGE, "eval: option %s needs a value", a);
    if (task_opts[i].type == OPT_INT)
      QZ_CALL(qz_cli_int(a, v, task_opts[i].lo, task_opts[i].hi, (long *)p));
    else
      *(const char **)p = v;
    *used = 2;
    return QZ_OK;
  }
  return QZ_OK;
}

void qz_task_cli_help(FILE *out) {
  for (int i = 0; i < NOPTS; i++) {
    char head[64];
    snprintf(head, sizeof head, "%s%s%s", task_opts[i].name, task_opts[i].arg ? " " : "",
             task_opts[i].arg ? task_opts[i].arg : "");
    const char *h = task_opts[i].help;
    int first = 1;
    while (*h) {
      const char *nl = strchr(h, '\n');
      int n = nl ? (int)(nl - h) : (int)strlen(h);
      if (first && strlen(head) < 20)
        fprintf(out, "  %-19s%.*s\n", head, n, h);
      else if (first)
        fprintf(out, "  %s\n  %-19s%.*s\n", head, "", n, h);
      else
        fprintf(out, "  %-19s%.*s\n", "", n, h);
      first = 0;
      h += n + (nl ? 1 : 0);
    }
  }
}

void qz_task_results_free(qz_task_results *r) {
  if (!r) return;
  free(r->task);
  memset(r, 0, sizeof *r);
}

/* ---- tokenization, split over the ranks ---------------------------------- */

typedef struct {
  int task;
  int64_t doc;
  int choice;
} req_ref;

/* Every request encoded (lm-eval _encode_pair); rank p encodes an even
 * share and an allgather gives everyone all ids: tok[] holds ctx then cont
 * ids of every request, len[2r], len[2r+1] their counts. */
static int tokenize_all(qz_ctx *ctx, const char *model_dir, const qz_model_config *cfg,
                        qz_bos_mode bos, qz_task **tasks, const req_ref *ref, int64_t nreq,
                        int64_t **len_out, int32_t **tok_out) {
  *len_out = NULL;
  *tok_out = NULL;
  int st = QZ_OK;
  qz_tokenizer *tk = NULL;
  int64_t r0, nr;
  qz_split_even(nreq, ctx->size, ctx->rank, &r0, &nr);
  int64_t *len = NULL;
  int32_t *mine = NULL, *all = NULL;
  int64_t nmine = 0, cap = 0;
  int *cnt = NULL, *dsp = NULL;
  st = qz_tokenizer_load(model_dir, &tk);
  if (st == QZ_OK) st = qz_calloc((size_t)(2 * nreq), sizeof *len, "request lengths", &len);
  for (int64_t r = r0; st == QZ_OK && r < r0 + nr; r++) {
    const qz_task_doc *d = qz_task_doc_at(tasks[ref[r].task], ref[r].doc);
    int32_t *c = NULL, *k = NULL;
    int64_t nc = 0, nk = 0;
    st = qz_task_encode_pair(tk, bos, (int32_t)cfg->bos_token_id, d->ctx[ref[r].choice],
                             d->cont[ref[r].choice], &c, &nc, &k, &nk);
    if (st != QZ_OK) {
      qz_error_prefix("%s:%lld: request %d: ", qz_task_path(tasks[ref[r].task]),
                      (long long)d->line, ref[r].choice);
      break;
    }
    if (nmine + nc + nk > cap) {
      cap = (nmine + nc + nk) * 2 + 1024;
      int32_t *p = realloc(mine, (size_t)cap * sizeof *p);
      if (!p) {
        free(c);
        free(k);
        st = qz_error_set(QZ_ERR_MEM, __FILE__, __LINE__, __func__,
                          "out of memory for the request tokens");
        break;
      }
      mine = p;
    }
    memcpy(mine + nmine, c, (size_t)nc * sizeof *c);
    memcpy(mine + nmine + nc, k, (size_t)nk * sizeof *k);
    nmine += nc + nk;
    len[2 * r] = nc;
    len[2 * r + 1] = nk;
    free(c);
    free(k);
  }
  QZ_CALL_DONE(qz_error_agree(ctx->comm, st));
  /* lengths: one owner per entry, the sum is exact */
  QZ_CALL_DONE(qz_allreduce_i64(ctx->comm, len, (int)(2 * nreq), MPI_SUM));
  int64_t total = 0;
  for (int64_t i = 0; i < 2 * nreq; i++) total += len[i];
  QZ_CHECK_DONE(total < (1LL << 31), QZ_ERR_UNSUPPORTED,
                "%lld request tokens: more than 2^31 (run fewer tasks or --limit)",
                (long long)total);
  QZ_CALL_DONE(qz_calloc((size_t)ctx->size, sizeof *cnt, "counts", &cnt));
  QZ_CALL_DONE(qz_calloc((size_t)ctx->size, sizeof *dsp, "displacements", &dsp));
  for (int p = 0, off = 0; p < ctx->size; p++) {
    int64_t a, n, c = 0;
    qz_split_even(nreq, ctx->size, p, &a, &n);
    for (int64_t i = 2 * a; i < 2 * (a + n); i++) c += len[i];
    cnt[p] = (int)c;
    dsp[p] = off;
    off += (int)c;
  }
  st = qz_alloc((size_t)(total ? total : 1), sizeof *all, "request tokens", &all);
  QZ_CALL_DONE(qz_error_agree(ctx->comm, st));
  {
    int rc = MPI_Allgatherv(mine, (int)nmine, MPI_INT32_T, all, cnt, dsp, MPI_INT32_T,
                            ctx->comm);
    qz_count_allgather(ctx->comm, 4 * nmine, 4 * (int64_t)total);
    if (rc != MPI_SUCCESS) {
      st = qz_mpi_error(rc, "MPI_Allgatherv", __FILE__, __LINE__, __func__);
      goto done;
    }
  }
  *len_out = len;
  *tok_out = all;
  len = NULL;
  all = NULL;
done:
  qz_tokenizer_free(&tk);
  free(len);
  free(mine);
  free(all);
  free(cnt);
  free(dsp);
  return st;
}

/* ---- metrics ---------------------------------------------------------------- */

/* mean and lm-eval's stderr: sample std (n-1) / sqrt(n); NaN for n < 2. */
static void mean_stderr(const double *x, int64_t n, double *mean, double *se) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += x[i];
  *mean = n ? s / (double)n : NAN;
  double v = 0.0;
  for (int64_t i = 0; i < n; i++) v += (x[i] - *mean) * (x[i] - *mean);
  *se = n > 1 ? sqrt(v / (double)(n - 1)) / sqrt((double)n) : NAN;
}

static int first_argmax(const double *v, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (v[i] > v[b]) b = i;
  return b;
}

/* One task's metrics from its requests' results (res[first..]). */
static int task_metrics(const qz_task *t, const qz_ll_result *res, int64_t first,
                        qz_task_metrics *tm) {
  int64_t nd = qz_task_ndocs(t);
  double *a = NULL, *b = NULL;
  int st = QZ_OK;
  QZ_CALL(qz_calloc((size_t)nd, sizeof *a, "metric values", &a));
  QZ_CALL_DONE(qz_calloc((size_t)nd, sizeof *b, "metric values", &b));
  memset(tm, 0, sizeof *tm);
  snprintf(tm->name, sizeof tm->name, "%s", qz_task_name(t));
  tm->ndocs = nd;
  int64_t r = first;
  for (int64_t i = 0; i < nd; i++) {
    const qz_task_doc *d = qz_task_doc_at(t, i);
    if (qz_task_kind_of(t) == QZ_TASK_CLOZE) {
      a[i] = res[r].greedy;
      b[i] = res[r].ll;
    } else {
      double ll[d->nreq], ln[d->nreq];
      for (int k = 0; k < d->nreq; k++) {
        ll[k] = res[r + k].ll;
        ln[k] = d->nchars[k] > 0 ? res[r + k].ll / (double)d->nchars[k] : res[r + k].ll;
      }
      a[i] = first_argmax(ll, d->nreq) == d->gold;
      b[i] = first_argmax(ln, d->nreq) == d->gold;
    }
    for (int k = 0; k < d->nreq; k++) tm->tokens += res[r + k].ninput;
    tm->nreq += d->nreq;
    r += d->nreq;
  }
  tm->metric[0] = "acc";
  mean_stderr(a, nd, &tm->value[0], &tm->stderr_[0]);
  tm->nmetrics = 1;
  if (qz_task_kind_of(t) == QZ_TASK_CLOZE) {
    double m, se;
    mean_stderr(b, nd, &m, &se);
    tm->metric[1] = "perplexity";
    tm->value[1] = exp(-m);
    tm->stderr_[1] = tm->value[1] * se; /* delta method (lm-eval bootstraps) */
    tm->nmetrics = 2;
  } else if (qz_task_has_acc_norm(t)) {
    tm->metric[1] = "acc_norm";
    mean_stderr(b, nd, &tm->value[1], &tm->stderr_[1]);
    tm->nmetrics = 2;
  }
done:
  free(a);
  free(b);
  return st;
}

/* ---- --log-samples ------------------------------------------------------------ */

static json_t *ids_json(const int32_t *v, int64_t n) {
  json_t *a = json_array();
  for (int64_t i = 0; a && i < n; i++) json_array_append_new(a, json_integer(v[i]));
  return a;
}

static int write_samples(const char *path, qz_task **tasks, const req_ref *ref, int64_t nreq,
                         const int64_t *len, const int32_t *tok, const qz_ll_result *res) {
  char *buf = NULL;
  size_t n = 0, cap = 0;
  int st = QZ_OK;
  int64_t off = 0;
  for (int64_t r = 0; r < nreq; r++) {
    const qz_task_doc *d = qz_task_doc_at(tasks[ref[r].task], ref[r].doc);
    json_t *j = json_pack("{s:s, s:I, s:s, s:i, s:f, s:b, s:o, s:o, s:b, s:b}", "task",
                          qz_task_name(tasks[ref[r].task]), "doc", (json_int_t)ref[r].doc,
                          "id", d->id, "choice", ref[r].choice, "loglikelihood", res[r].ll,
                          "is_greedy", res[r].greedy, "ctx_tokens",
                          ids_json(tok + off, len[2 * r]), "cont_tokens",
                          ids_json(tok + off + len[2 * r], len[2 * r + 1]), "ctx_truncated",
                          res[r].ctx_truncated, "cont_truncated", res[r].cont_truncated);
    off += len[2 * r] + len[2 * r + 1];
    char *line = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(j);
    QZ_CHECK_DONE(line, QZ_ERR_MEM, "out of memory writing %s", path);
    size_t l = strlen(line);
    if (n + l + 2 > cap) {
      cap = (n + l + 2) * 2;
      char *p = realloc(buf, cap);
      if (!p) free(line);
      QZ_CHECK_DONE(p, QZ_ERR_MEM, "out of memory writing %s", path);
      buf = p;
    }
    memcpy(buf + n, line, l);
    buf[n + l] = '\n';
    n += l + 1;
    free(line);
  }
  QZ_CALL_DONE(qz_write_atomic(path, buf ? buf : "", n));
done:
  free(buf);
  return st;
}

/* Parse the comma-separated task list: tasks[i], first[i] = index of its
 * first request, *nreq = all requests. Not collective. */
static int load_tasks(const qz_task_cli *c, char *names, int ntasks, qz_task **tasks,
                      int64_t *first, int64_t *nreq) {
  qz_task_opts to = {.limit = c->limit, .num_fewshot = (int)c->num_fewshot,
                     .fewshot_from = c->fewshot_from};
  char *save = NULL, *nm = strtok_r(names, ",", &save);
  *nreq = 0;
  for (int i = 0; i < ntasks; i++, nm = strtok_r(NULL, ",", &save)) {
    QZ_CHECK(nm && *nm, QZ_ERR_USAGE, "eval: empty name in --task '%s'", c->tasks);
    char path[4096];
    QZ_CALL(qz_task_resolve(nm, c->task_dir, path, sizeof path));
    int named_file = strcmp(path, nm) == 0;
    QZ_CALL(qz_task_load(path, named_file ? NULL : nm, &to, &tasks[i]));
    for (int j = 0; j < i; j++)
      QZ_CHECK(strcmp(qz_task_name(tasks[j]), qz_task_name(tasks[i])) != 0, QZ_ERR_USAGE,
               "eval: task '%s' given twice", qz_task_name(tasks[i]));
    first[i] = *nreq;
    for (int64_t d = 0; d < qz_task_ndocs(tasks[i]); d++)
      *nreq += qz_task_doc_at(tasks[i], d)->nreq;
    qz_info("task %s: %s, %s layout, %lld of %lld documents, %lld-shot", qz_task_name(tasks[i]),
            path, qz_task_layout(tasks[i]), (long long)qz_task_ndocs(tasks[i]),
            (long long)qz_task_ndocs_file(tasks[i]), (long long)c->num_fewshot);
  }
  first[ntasks] = *nreq;
  return QZ_OK;
}

/* ---- the command ---------------------------------------------------------------- */

static void print_value(char *b, size_t len, const char *metric, double v, double se) {
  if (strcmp(metric, "perplexity") == 0)
    snprintf(b, len, "%s %.4g +- %.4g", metric, v, se);
  else
    snprintf(b, len, "%s %.4f +- %.4f", metric, v, se);
}

int qz_task_eval(qz_ctx *ctx, qz_model *m, const char *model_dir, const qz_task_cli *c,
                 const qz_task_model *tm, int report, int json, qz_task_results *out) {
  const qz_model_config *cfg = qz_model_config_of(m);
  int st = QZ_OK;
  char *names = NULL;
  qz_task **tasks = NULL;
  int ntasks = 0;
  req_ref *ref = NULL;
  int64_t nreq = 0, *len = NULL, *first = NULL;
  int32_t *tok = NULL;
  qz_ll_request *rq = NULL;
  qz_ll_result *res = NULL;
  qz_task_results R = {0};
  qz_bos_mode bos = QZ_BOS_DEFAULT;
  if (c->add_bos) {
    QZ_CHECK(strcmp(c->add_bos, "yes") == 0 || strcmp(c->add_bos, "no") == 0, QZ_ERR_USAGE,
             "eval: --add-bos takes yes or no, got '%s'", c->add_bos);
    bos = c->add_bos[0] == 'y' ? QZ_BOS_YES : QZ_BOS_NO;
  }
  QZ_CHECK(!c->fewshot_from || c->num_fewshot > 0, QZ_ERR_USAGE,
           "eval: --fewshot-from needs --num-fewshot K > 0");

  /* every rank parses every task file: bad input fails everywhere alike
   * (and a file only some ranks can read fails on all of them) */
  QZ_CALL(qz_alloc(strlen(c->tasks) + 1, 1, "task names", &names));
  strcpy(names, c->tasks);
  for (char *p = names; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) ntasks++;
  st = qz_calloc((size_t)ntasks, sizeof *tasks, "tasks", &tasks);
  if (st == QZ_OK) st = qz_calloc((size_t)ntasks + 1, sizeof *first, "task offsets", &first);
  if (st == QZ_OK) st = load_tasks(c, names, ntasks, tasks, first, &nreq);
  QZ_CALL_DONE(qz_error_agree(ctx->comm, st));
  QZ_CALL_DONE(qz_calloc((size_t)nreq, sizeof *ref, "requests", &ref));
  {
    int64_t r = 0;
    for (int i = 0; i < ntasks; i++)
      for (int64_t d = 0; d < qz_task_ndocs(tasks[i]); d++)
        for (int k = 0; k < qz_task_doc_at(tasks[i], d)->nreq; k++)
          ref[r++] = (req_ref){i, d, k};
  }

  double t0 = MPI_Wtime();
  QZ_CALL_DONE(tokenize_all(ctx, model_dir, cfg, bos, tasks, ref, nreq, &len, &tok));
  qz_info("tasks: tokenized %lld requests in %.2f s", (long long)nreq, MPI_Wtime() - t0);
  QZ_CALL_DONE(qz_calloc((size_t)nreq, sizeof *rq, "requests", &rq));
  QZ_CALL_DONE(qz_calloc((size_t)nreq, sizeof *res, "results", &res));
  {
    int64_t off = 0, grp = -1;
    for (int64_t r = 0; r < nreq; r++) {
      if (r == 0 || ref[r].doc != ref[r - 1].doc || ref[r].task != ref[r - 1].task) grp++;
      rq[r] = (qz_ll_request){.ctx = tok + off, .nctx = len[2 * r],
                              .cont = tok + off + len[2 * r], .ncont = len[2 * r + 1],
                              .group = grp};
      off += len[2 * r] + len[2 * r + 1];
    }
  }
  int64_t L = c->max_length > 0 ? c->max_length
              : cfg->max_position_embeddings > 1 ? cfg->max_position_embeddings : 2048;
  qz_ll_opts lo = {.max_len = L, .batch_tokens = c->batch_tokens,
                   .no_prefix_reuse = c->no_prefix_reuse, .progress = 1,
                   .round_rows = c->round_rows,
                   .block_source = tm ? tm->block_source : NULL,
                   .block_source_ctx = tm ? tm->block_source_ctx : NULL,
                   .act_quant_bits = tm ? tm->act_quant_bits : 0,
                   .act_hook = tm ? tm->act_hook : NULL,
                   .model_hook = tm ? tm->model_hook : NULL,
                   .full_head = tm ? tm->full_head : 0};
  qz_ll_stats ls;
  QZ_CALL_DONE(qz_loglikelihood(m, rq, nreq, &lo, res, &ls));
  double secs = MPI_Wtime() - t0;
  {
    int rc = MPI_Allreduce(MPI_IN_PLACE, &secs, 1, MPI_DOUBLE, MPI_MAX, ctx->comm);
    if (rc != MPI_SUCCESS) {
      st = qz_mpi_error(rc, "MPI_Allreduce", __FILE__, __LINE__, __func__);
      goto done;
    }
  }

  QZ_CALL_DONE(qz_calloc((size_t)ntasks, sizeof *R.task, "task results", &R.task));
  R.ntasks = ntasks;
  for (int i = 0; i < ntasks; i++) QZ_CALL_DONE(task_metrics(tasks[i], res, first[i], &R.task[i]));
  R.seconds = secs;
  R.tokens_input = ls.tokens_input;
  R.tokens_forward = ls.tokens_forward;
  R.bytes_read = ls.bytes_read;
  R.tokens_per_s = secs > 0 ? (double)ls.tokens_input / secs : 0.0;

  /* samples first: a failed write fails the command before any result line */
  if (c->log_samples) {
    st = ctx->rank == 0 ? write_samples(c->log_samples, tasks, ref, nreq, len, tok, res) : QZ_OK;
    QZ_CALL_DONE(qz_error_agree(ctx->comm, st));
  }
  if (report && ctx->rank == 0) {
    for (int i = 0; i < ntasks; i++) {
      const qz_task_metrics *t = &R.task[i];
      char m0[96], m1[96] = "";
      print_value(m0, sizeof m0, t->metric[0], t->value[0], t->stderr_[0]);
      if (t->nmetrics > 1) print_value(m1, sizeof m1, t->metric[1], t->value[1], t->stderr_[1]);
      printf("%-16s %s  %s  (n %lld documents, %lld requests, %lld tokens, %ld-shot)\n",
             t->name, m0, m1, t->ndocs, t->nreq, t->tokens, c->num_fewshot);
    }
    char b[32];
    printf("tasks: %lld requests, %lld input tokens (%lld forward rows with prefix reuse), "
           "%lld truncated contexts, %lld continuations longer than %lld tokens; np %d, "
           "%.2f s, %.0f tokens/s, weights read %s in total (%d pass%s)\n",
           (long long)nreq, (long long)ls.tokens_input, (long long)ls.tokens_forward,
           (long long)ls.ctx_truncated, (long long)ls.cont_truncated, (long long)L, ctx->size,
           secs, R.tokens_per_s, qz_fmt_bytes((double)ls.bytes_read, b, sizeof b), ls.nrounds,
           ls.nrounds > 1 ? "es" : "");
    if (json) {
      json_t *jt = json_object();
      for (int i = 0; i < ntasks && jt; i++) {
        const qz_task_metrics *t = &R.task[i];
        json_t *o = json_pack("{s:I, s:I, s:I}", "n", (json_int_t)t->ndocs, "requests",
                              (json_int_t)t->nreq, "tokens", (json_int_t)t->tokens);
        for (int k = 0; o && k < t->nmetrics; k++) {
          char key[64];
          json_object_set_new(o, t->metric[k], json_real(t->value[k]));
          snprintf(key, sizeof key, "%s_stderr", t->metric[k]);
          json_object_set_new(o, key, isfinite(t->stderr_[k]) ? json_real(t->stderr_[k])
                                                                 : json_null());
        }
        json_object_set_new(jt, t->name, o);
      }
      json_t *j = json_pack("{s:s, s:s, s:o, s:I, s:i, s:I, s:I, s:I, s:I, s:i, s:f, s:f, s:I}",
                            "command", "eval", "model", model_dir, "tasks", jt, "num_fewshot",
                            (json_int_t)c->num_fewshot, "max_length", (int)L, "requests",
                            (json_int_t)nreq, "tokens_input", (json_int_t)ls.tokens_input,
                            "tokens_forward", (json_int_t)ls.tokens_forward, "truncated",
                            (json_int_t)(ls.ctx_truncated + ls.cont_truncated), "np",
                            ctx->size, "seconds", secs, "tokens_per_s", R.tokens_per_s,
                            "bytes_read", (json_int_t)ls.bytes_read);
      char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
      if (txt) printf("%s\n", txt);
      free(txt);
      json_decref(j);
    }
    fflush(stdout);
  }
  if (out) {
    *out = R;
    R.task = NULL;
  }
done:
  qz_task_results_free(&R);
  for (int i = 0; tasks && i < ntasks; i++) qz_task_free(&tasks[i]);
  free(tasks);
  free(names);
  free(first);
  free(ref);
  free(len);
  free(tok);
  free(rq);
  free(res);
  return st;
}
