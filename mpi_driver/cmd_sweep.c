/* mpiquant sweep: a grid of quantize + eval runs (methods x bits x groups x
 * act-order x sym x calibration x models, plus an fp32 baseline per model),
 * one result row per point, resumable, with tables and plots; or a Slurm
 * job array that runs one point per task.
 *
 * Each point calls the quantize and eval commands in-process on all ranks
 * of the current allocation, with the same argv a user would type, so a
 * sweep row has exactly the perplexity of `mpiquant quantize` + `mpiquant
 * eval` run by hand with the same options and rank count. */
#define _GNU_SOURCE
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <time.h>
#include <unistd.h>

#include "cmd_eval.h"
#include "task_eval.h"
#include "driver.h"
#include "mpiquant/codes.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/files.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/timing.h"
#include "mpiquant/tokenizer.h"
#include "quantize.h"
#include "sweep.h"

static void usage(void) {
  printf(
      "usage: mpiquant sweep --spec SWEEP.json [--out DIR] [--plot]\n"
      "                      [--point K | --list | --merge | --emit-slurm JOBDIR]\n"
      "\n"
      "Runs every point of the sweep spec (docs/sweeps.md) one after another on\n"
      "all ranks of this job: quantize (into DIR/ckpt/<key>, removed afterwards\n"
      "unless the spec keeps checkpoints) and perplexity on each eval set. Each\n"
      "point adds one row to DIR/results.csv and DIR/results.jsonl (its own\n"
      "file is DIR/rows/<key>.json); DIR/results.md holds paper-style tables.\n"
      "Points whose row exists are skipped, so rerunning resumes a sweep.\n"
      "\n"
      "  --spec FILE        the sweep spec (JSON); relative paths inside it are\n"
      "                     relative to the spec's directory\n"
      "  --out DIR          results directory (default results/<spec name>)\n"
      "  --plot             perplexity vs bits per method and model with gnuplot:\n"
      "                     DIR/ppl-<model>-<eval>.png and .svg\n"
      "  --point K          run only point K (0-based; one Slurm array task)\n"
      "  --list             print the points (index, key, done or pending)\n"
      "  --merge            rebuild results.* (and plots) from DIR/rows only\n"
      "  --emit-slurm JOB   write JOB/sweep-array.sbatch (one array task per\n"
      "                     point), JOB/spec.json and JOB/points.json; submit\n"
      "                     with: sbatch JOB/sweep-array.sbatch\n"
      "Peak memory in a row is the process peak so far (a --point run measures\n"
      "exactly its point).\n");
}

typedef struct {
  const char *spec, *out, *emit;
  long point; /* -1: all */
  int plot, list, merge;
} sweep_opts;

static int parse(int argc, char **argv, sweep_opts *o) {
  *o = (sweep_opts){.point = -1};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--plot") == 0) { o->plot = 1; continue; }
    if (strcmp(a, "--list") == 0) { o->list = 1; continue; }
    if (strcmp(a, "--merge") == 0) { o->merge = 1; continue; }
    int takes = strcmp(a, "--spec") == 0 || strcmp(a, "--out") == 0 ||
                strcmp(a, "--point") == 0 || strcmp(a, "--emit-slurm") == 0;
    QZ_CHECK(takes, QZ_ERR_USAGE, "sweep: unknown option '%s' (see mpiquant sweep --help)", a);
    QZ_CHECK(v, QZ_ERR_USAGE, "sweep: option %s needs a value", a);
    i++;
    if (strcmp(a, "--spec") == 0) o->spec = v;
    else if (strcmp(a, "--out") == 0) o->out = v;
    else if (strcmp(a, "--emit-slurm") == 0) o->emit = v;
    else QZ_CALL(qz_cli_int(a, v, 0, INT_MAX, &o->point));
  }
  QZ_CHECK(o->spec, QZ_ERR_USAGE, "sweep: --spec FILE is required (see docs/sweeps.md)");
  QZ_CHECK(o->list + o->merge + (o->emit != NULL) + (o->point >= 0) <= 1, QZ_ERR_USAGE,
           "sweep: --point, --list, --merge and --emit-slurm exclude each other");
  return QZ_OK;
}

/* an MPI return code as a status (for single-exit functions) */
static int mpi_rc(int rc, const char *call) {
  return rc == MPI_SUCCESS ? QZ_OK : qz_mpi_error(rc, call, __FILE__, __LINE__, __func__);
}

/* ---- argv for the in-process commands ------------------------------------ */

typedef struct {
  char *v[96];
  int n;
} argvec;

static int av_add(argvec *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int av_add(argvec *a, const char *fmt, ...) {
  QZ_CHECK(a->n + 1 < (int)(sizeof a->v / sizeof a->v[0]), QZ_ERR_ARG,
           "sweep: too many options for one command");
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(&a->v[a->n], fmt, ap);
  va_end(ap);
  QZ_CHECK(n >= 0, QZ_ERR_MEM, "out of memory");
  a->v[++a->n] = NULL;
  return QZ_OK;
}

static void av_free(argvec *a) {
  for (int i = 0; i < a->n; i++) free(a->v[i]);
  a->n = 0;
}

static void av_log(const argvec *a, const char *what) {
  char line[2048];
  size_t k = 0;
  line[0] = '\0';
  for (int i = 0; i < a->n && k < sizeof line; i++)
    k += (size_t)snprintf(line + k, sizeof line - k, " %s", a->v[i]);
  qz_info("sweep: %s: mpiquant%s", what, line);
}

static int quantize_argv(const qz_sweep_spec *s, const qz_sweep_point *p,
                         const char *ckpt, argvec *a) {
  QZ_CALL(av_add(a, "quantize"));
  QZ_CALL(av_add(a, "--model"));
  QZ_CALL(av_add(a, "%s", s->models[p->model].path));
  if (p->calib >= 0) {
    const qz_sweep_calib *c = &s->calibs[p->calib];
    QZ_CALL(av_add(a, c->is_tokens ? "--calib-tokens" : "--calib"));
    QZ_CALL(av_add(a, "%s", c->path));
    QZ_CALL(av_add(a, "--nsamples"));
    QZ_CALL(av_add(a, "%ld", c->nsamples));
    if (c->seqlen) {
      QZ_CALL(av_add(a, "--seqlen"));
      QZ_CALL(av_add(a, "%ld", c->seqlen));
    }
  }
  QZ_CALL(av_add(a, "--method"));
  QZ_CALL(av_add(a, "%s", p->run_method ? p->run_method : p->method));
  for (size_t i = 0; p->args && i < json_array_size(p->args); i++)
    QZ_CALL(av_add(a, "%s", json_string_value(json_array_get(p->args, i))));
  QZ_CALL(av_add(a, "--bits"));
  QZ_CALL(av_add(a, "%d", p->bits));
  QZ_CALL(av_add(a, "--group"));
  QZ_CALL(av_add(a, "%ld", p->group));
  if (p->sym) QZ_CALL(av_add(a, "--sym"));
  if (p->act_order) QZ_CALL(av_add(a, "--act-order"));
  if (p->grid) {
    QZ_CALL(av_add(a, "--grid"));
    QZ_CALL(av_add(a, "%s", qz_vgrid_name((qz_vgrid)p->grid)));
  }
  for (int i = 0; i < s->nquantize_args; i++) QZ_CALL(av_add(a, "%s", s->quantize_args[i]));
  QZ_CALL(av_add(a, "--out"));
  QZ_CALL(av_add(a, "%s", ckpt));
  /* continues an interrupted point (a requeued task); starts fresh when
   * the checkpoint has no manifest yet */
  QZ_CALL(av_add(a, "--resume"));
  return QZ_OK;
}

static int eval_argv(const qz_sweep_spec *s, const qz_sweep_point *p, const qz_sweep_eval *e,
                     const char *ckpt, argvec *a) {
  QZ_CALL(av_add(a, "eval"));
  if (ckpt) {
    QZ_CALL(av_add(a, "--ckpt"));
    QZ_CALL(av_add(a, "%s", ckpt));
  }
  QZ_CALL(av_add(a, "--model"));
  QZ_CALL(av_add(a, "%s", s->models[p->model].path));
  QZ_CALL(av_add(a, e->is_tokens ? "--tokens" : "--data"));
  QZ_CALL(av_add(a, "%s", e->path));
  if (e->seqlen) {
    QZ_CALL(av_add(a, "--seqlen"));
    QZ_CALL(av_add(a, "%ld", e->seqlen));
  }
  if (e->windows) {
    QZ_CALL(av_add(a, "--windows"));
    QZ_CALL(av_add(a, "%ld", e->windows));
  }
  if (e->max_tokens) {
    QZ_CALL(av_add(a, "--max-tokens"));
    QZ_CALL(av_add(a, "%ld", e->max_tokens));
  }
  return QZ_OK;
}

static int task_argv(const qz_sweep_spec *s, const qz_sweep_point *p, const char *ckpt,
                     argvec *a) {
  const qz_sweep_tasks *t = &s->tasks;
  QZ_CALL(av_add(a, "eval"));
  if (ckpt) {
    QZ_CALL(av_add(a, "--ckpt"));
    QZ_CALL(av_add(a, "%s", ckpt));
  }
  QZ_CALL(av_add(a, "--model"));
  QZ_CALL(av_add(a, "%s", s->models[p->model].path));
  QZ_CALL(av_add(a, "--task"));
  size_t len = 1;
  for (int i = 0; i < t->n; i++) len += strlen(t->names[i]) + 1;
  char names[len];
  names[0] = 0;
  for (int i = 0; i < t->n; i++) {
    if (i) strcat(names, ",");
    strcat(names, t->names[i]);
  }
  QZ_CALL(av_add(a, "%s", names));
  if (t->dir) {
    QZ_CALL(av_add(a, "--task-dir"));
    QZ_CALL(av_add(a, "%s", t->dir));
  }
  if (t->limit) {
    QZ_CALL(av_add(a, "--limit"));
    QZ_CALL(av_add(a, "%ld", t->limit));
  }
  if (t->num_fewshot) {
    QZ_CALL(av_add(a, "--num-fewshot"));
    QZ_CALL(av_add(a, "%ld", t->num_fewshot));
  }
  return QZ_OK;
}

/* {"task": {"acc": v, "acc_stderr": se, ..., "n": docs}, ...} */
static json_t *tasks_json(const qz_task_results *tr) {
  json_t *o = json_object();
  for (int i = 0; o && i < tr->ntasks; i++) {
    const qz_task_metrics *t = &tr->task[i];
    json_t *m = json_pack("{s:I}", "n", (json_int_t)t->ndocs);
    for (int k = 0; m && k < t->nmetrics; k++) {
      char key[64];
      json_object_set_new(m, t->metric[k], json_real(t->value[k]));
      snprintf(key, sizeof key, "%s_stderr", t->metric[k]);
      json_object_set_new(m, key, isfinite(t->stderr_[k]) ? json_real(t->stderr_[k]) : json_null());
    }
    json_object_set_new(o, t->name, m);
  }
  return o;
}

/* ---- one point ------------------------------------------------------------ */

static json_t *row_json(const qz_sweep_spec *s, const qz_sweep_point *p, const double *ppl,
                        const qz_task_results *tr, const double *phase, const double *wall,
                        int64_t rss, int np, double bpp) {
  int fp = strcmp(p->method, "fp32") == 0;
  const qz_sweep_calib *c = p->calib >= 0 ? &s->calibs[p->calib] : NULL;
  json_t *jp = json_object(), *sec = json_object();
  for (int e = 0; e < s->nevals; e++) json_object_set_new(jp, s->evals[e].name, json_real(ppl[e]));
  for (int ph = 0; ph < QZ_PHASE_COUNT; ph++)
    json_object_set_new(sec, qz_phase_name(ph), json_real(phase[ph]));
  json_object_set_new(sec, "quantize_wall", json_real(wall[0]));
  json_object_set_new(sec, "eval_wall", json_real(wall[1]));
  json_object_set_new(sec, "total", json_real(wall[2]));
  char when[32];
  time_t now = time(NULL);
  struct tm tm;
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
  json_t *row = json_pack(
      "{s:s, s:s, s:s, s:i, s:o, s:b, s:b, s:o, s:o, s:o, s:o, s:o, s:I, s:i, s:s, s:s, "
      "s:s, s:s}",
      "key", p->key, "model", s->models[p->model].name, "method", p->method, "bits", p->bits,
      "group", fp ? json_null() : json_integer(p->group), "act_order", p->act_order, "sym",
      p->sym, "calibration", c ? json_string(c->name) : json_null(), "nsamples",
      c ? json_integer(c->nsamples) : json_null(), "calib_seqlen",
      c && c->seqlen ? json_integer(c->seqlen) : json_null(), "ppl", jp, "seconds", sec,
      "peak_rss_max_bytes", (json_int_t)rss, "np", np, "mpiquant_version", MPIQUANT_VERSION,
      "git_rev", MPIQUANT_GIT_REV, "finished_utc", when, "model_path",
      s->models[p->model].path);
  if (row) json_object_set_new(row, "grid", fp ? json_null()
                                               : json_string(qz_vgrid_name((qz_vgrid)p->grid)));
  if (row) json_object_set_new(row, "bits_per_param", fp || !(bpp > 0) ? json_null() : json_real(bpp));
  if (row && tr->ntasks) json_object_set_new(row, "tasks", tasks_json(tr));
  return row;
}

/* Runs point p; *row (rank 0 only) receives its result row. Collective. */
static int run_point(qz_ctx *ctx, const qz_sweep_spec *s, const qz_sweep_point *p,
                     const char *out, json_t **row) {
  int st = QZ_OK, fp = strcmp(p->method, "fp32") == 0;
  argvec a = {0};
  double *ppl = NULL;
  qz_task_results tr = {0};
  char ckpt[PATH_MAX];
  snprintf(ckpt, sizeof ckpt, "%s/ckpt/%s", out, p->key);
  *row = NULL;
  QZ_CALL(qz_calloc((size_t)s->nevals + 1, sizeof *ppl, "perplexities", &ppl));
  qz_timer_reset();
  double t0 = qz_wtime(), wall[3] = {0.0, 0.0, 0.0};
  if (!fp) {
    QZ_CALL_DONE(quantize_argv(s, p, ckpt, &a));
    av_log(&a, p->key);
    QZ_CALL_DONE(qz_cmd_quantize(ctx, a.n, a.v));
    av_free(&a);
  }
  wall[0] = qz_wtime() - t0;
  for (int e = 0; e < s->nevals; e++) {
    qz_eval_result r;
    QZ_CALL_DONE(eval_argv(s, p, &s->evals[e], fp ? NULL : ckpt, &a));
    av_log(&a, p->key);
    QZ_CALL_DONE(qz_eval_run(ctx, a.n, a.v, &r));
    av_free(&a);
    ppl[e] = r.ppl;
  }
  if (s->tasks.n) {
    QZ_CALL_DONE(task_argv(s, p, fp ? NULL : ckpt, &a));
    av_log(&a, p->key);
    QZ_CALL_DONE(qz_eval_task_run(ctx, a.n, a.v, &tr));
    av_free(&a);
  }
  wall[1] = qz_wtime() - t0 - wall[0];
  wall[2] = qz_wtime() - t0;
  double phase[QZ_PHASE_COUNT];
  for (int ph = 0; ph < QZ_PHASE_COUNT; ph++) phase[ph] = qz_timer_seconds(ph);
  QZ_CALL_DONE(mpi_rc(MPI_Allreduce(MPI_IN_PLACE, phase, QZ_PHASE_COUNT, MPI_DOUBLE, MPI_MAX,
                                    ctx->comm), "MPI_Allreduce(phases)"));
  QZ_CALL_DONE(mpi_rc(MPI_Allreduce(MPI_IN_PLACE, wall, 3, MPI_DOUBLE, MPI_MAX, ctx->comm),
                      "MPI_Allreduce(walls)"));
  int64_t rss = qz_peak_rss_bytes();
  QZ_CALL_DONE(qz_allreduce_i64(ctx->comm, &rss, 1, MPI_MAX));
  if (ctx->rank == 0) {
    double bpp = 0; /* from the checkpoint's manifest (before it is removed) */
    if (!fp) QZ_CALL_DONE(qz_quantize_ckpt_bits(ckpt, &bpp));
    *row = row_json(s, p, ppl, &tr, phase, wall, rss, ctx->size, bpp);
    QZ_CHECK_DONE(*row, QZ_ERR_MEM, "out of memory");
    for (int e = 0; e < s->nevals; e++)
      qz_info("sweep: %s: ppl %s %.5g", p->key, s->evals[e].name, ppl[e]);
    for (int t = 0; t < tr.ntasks; t++)
      qz_info("sweep: %s: %s %s %.4f", p->key, tr.task[t].name, tr.task[t].metric[0],
              tr.task[t].value[0]);
    /* every rank is past its last read of the checkpoint (allreduce above) */
    if (!fp && !s->keep_checkpoints) st = qz_sweep_rmtree(ckpt);
  }
done:
  if (st != QZ_OK) qz_error_prefix("sweep point %d (%s): ", p->index, p->key);
  av_free(&a);
  qz_free(&ppl);
  qz_task_results_free(&tr);
  return st;
}

/* ---- the command --------------------------------------------------------- */

static int load_spec(qz_ctx *ctx, const char *path, qz_sweep_spec **s) {
  char *text = NULL;
  size_t len = 0;
  int st = QZ_OK;
  if (ctx->rank == 0) st = qz_read_file(path, &text, &len);
  QZ_CALL(qz_error_agree(ctx->comm, st));
  int64_t n = (int64_t)len;
  QZ_CALL_DONE(qz_allreduce_i64(ctx->comm, &n, 1, MPI_MAX));
  if (ctx->rank != 0) QZ_CALL_DONE(qz_error_agree(ctx->comm, qz_calloc((size_t)n + 1, 1, "spec", &text)));
  else QZ_CALL_DONE(qz_error_agree(ctx->comm, QZ_OK));
  QZ_CALL_DONE(mpi_rc(MPI_Bcast(text, (int)n, MPI_CHAR, 0, ctx->comm), "MPI_Bcast(spec)"));
  text[n] = '\0';
  QZ_CALL_DONE(qz_error_agree(ctx->comm, qz_sweep_spec_parse(path, text, s)));
done:
  free(text);
  return st;
}

static void list_points(const qz_sweep_spec *s, const char *out) {
  printf("# sweep %s: %d points, results in %s\n", s->name, s->npoints, out);
  for (int i = 0; i < s->npoints; i++)
    printf("%4d  %-8s %s\n", i, qz_sweep_row_done(s, out, &s->points[i]) ? "done" : "pending",
           s->points[i].key);
  fflush(stdout);
}

int qz_cmd_sweep(qz_ctx *ctx, int argc, char **argv) {
  if (qz_cli_wants_help(argc, argv)) {
    if (ctx->rank == 0) usage();
    return QZ_OK;
  }
  sweep_opts o;
  QZ_CALL(parse(argc, argv, &o));
  qz_sweep_spec *s = NULL;
  char *out = NULL;
  json_t *row = NULL;
  int st = QZ_OK;
  QZ_CALL(load_spec(ctx, o.spec, &s));
  if (o.out) out = strdup(o.out);
  else if (asprintf(&out, "results/%s", s->name) < 0) out = NULL;
  QZ_CHECK_DONE(out, QZ_ERR_MEM, "out of memory");
  QZ_CHECK_DONE(o.point < s->npoints, QZ_ERR_USAGE,
                "sweep: --point %ld, but %s has %d points (0..%d; see --list)", o.point,
                o.spec, s->npoints, s->npoints - 1);
  if (o.plot && ctx->rank == 0 && !o.list && !o.emit)
    st = qz_sweep_have_gnuplot()
             ? QZ_OK
             : qz_error_set(QZ_ERR_UNSUPPORTED, __FILE__, __LINE__, __func__,
                            "sweep --plot needs gnuplot on PATH (Debian: apt-get install "
                            "gnuplot-nox), or run without --plot");
  QZ_CALL_DONE(qz_error_agree(ctx->comm, st));

  if (o.list || o.emit) {
    if (ctx->rank == 0) {
      if (o.list) list_points(s, out);
      else {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = '\0';
        st = qz_sweep_emit_slurm(s, out, o.emit, n > 0 ? exe : "mpiquant");
      }
    }
    QZ_CALL_DONE(qz_error_agree(ctx->comm, st));
    goto done;
  }

  if (ctx->rank == 0) {
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s/rows", out);
    st = qz_mkdir_p(d);
  }
  QZ_CALL_DONE(qz_error_agree(ctx->comm, st));
  int ran = 0, skipped = 0;
  if (!o.merge) {
    int first = o.point >= 0 ? (int)o.point : 0;
    int last = o.point >= 0 ? (int)o.point : s->npoints - 1;
    qz_info("sweep %s: points %d..%d of %d on %d ranks, results in %s", s->name, first, last,
            s->npoints, ctx->size, out);
    for (int i = first; i <= last; i++) {
      const qz_sweep_point *p = &s->points[i];
      int done_already = ctx->rank == 0 ? qz_sweep_row_done(s, out, p) : 0;
      QZ_CALL_DONE(mpi_rc(MPI_Bcast(&done_already, 1, MPI_INT, 0, ctx->comm), "MPI_Bcast"));
      if (done_already) {
        qz_info("sweep: point %d %s: done already (%s/rows/%s.json), skipped", i, p->key, out,
                p->key);
        skipped++;
        continue;
      }
      qz_info("sweep: point %d of %d: %s", i, s->npoints, p->key);
      QZ_CALL_DONE(run_point(ctx, s, p, out, &row));
      if (ctx->rank == 0) st = qz_sweep_commit(s, out, p, row, 0);
      json_decref(row);
      row = NULL;
      QZ_CALL_DONE(qz_error_agree(ctx->comm, st));
      ran++;
    }
  }
  /* tables (and plots) of everything done so far */
  if (ctx->rank == 0) st = qz_sweep_commit(s, out, NULL, NULL, o.plot);
  QZ_CALL_DONE(qz_error_agree(ctx->comm, st));
  if (o.merge) qz_info("sweep: rebuilt %s/results.csv, results.jsonl, results.md", out);
  else
    qz_info("sweep %s: %d point%s run, %d skipped (done before); %s/results.csv, "
            "results.jsonl, results.md",
            s->name, ran, ran == 1 ? "" : "s", skipped, out);
done:
  json_decref(row);
  free(out);
  qz_sweep_spec_destroy(&s);
  return st;
}
