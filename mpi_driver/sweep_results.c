/* Sweep results: one row file per point (the source of truth, written with
 * temp + rename), and results.jsonl / results.csv / results.md rebuilt from
 * all row files under an exclusive flock, so that array tasks finishing at
 * the same time on a shared file system never lose or interleave a row. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpiquant/codes.h"
#include "mpiquant/error.h"
#include "mpiquant/file.h"
#include "mpiquant/files.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/timing.h"
#include "sweep.h"

/* ---- file helpers ------------------------------------------------------ */

int qz_sweep_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p) == 0 || errno == ENOENT ? 0 : -1;
}

int qz_sweep_rmtree(const char *path) {
  if (!qz_sweep_exists(path)) return QZ_OK;
  QZ_CHECK(nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0, QZ_ERR_IO,
           "cannot remove %s: %s", path, strerror(errno));
  return QZ_OK;
}

/* ---- rows -------------------------------------------------------------- */

void qz_sweep_row_path(const char *out, const qz_sweep_point *p, char *buf, size_t len) {
  snprintf(buf, len, "%s/rows/%s.json", out, p->key);
}

/* ---- task columns ----------------------------------------------------------- */

/* A task's name in the results: eval --task names a task file by its base
 * name without .jsonl. */
const char *qz_sweep_task_label(const char *name) {
  static _Thread_local char buf[256];
  const char *b = strrchr(name, '/');
  b = b ? b + 1 : name;
  snprintf(buf, sizeof buf, "%s", b);
  size_t n = strlen(buf);
  if (n > 6 && strcmp(buf + n - 6, ".jsonl") == 0) buf[n - 6] = 0;
  return buf;
}

static const char *const task_metrics[] = {"acc", "acc_norm", "perplexity", NULL};

/* Does any row have metric m of task t? */
static int task_has(json_t *const *rows, int n, const char *t, const char *m) {
  for (int i = 0; i < n; i++)
    if (rows[i] && json_object_get(json_object_get(json_object_get(rows[i], "tasks"), t), m))
      return 1;
  return 0;
}

static json_t *load_row(const qz_sweep_spec *s, const char *out, const qz_sweep_point *p) {
  char path[4096];
  qz_sweep_row_path(out, p, path, sizeof path);
  if (!qz_sweep_exists(path)) return NULL;
  json_error_t je;
  json_t *r = qz_file_check_input(path) == QZ_OK ? json_load_file(path, 0, &je) : NULL;
  if (!r) snprintf(je.text, sizeof je.text, "%s", qz_error_message());
  if (!r || !json_is_object(r)) {
    qz_warn("sweep: ignoring unreadable row %s (%s); the point will run again", path,
            r ? "not an object" : je.text);
    json_decref(r);
    return NULL;
  }
  json_t *ppl = json_object_get(r, "ppl");
  for (int e = 0; e < s->nevals; e++)
    if (!json_is_number(json_object_get(ppl, s->evals[e].name))) {
      json_decref(r);
      return NULL; /* an eval set was added to the spec: run again */
    }
  json_t *tk = json_object_get(r, "tasks");
  for (int t = 0; t < s->tasks.n; t++)
    if (!json_object_get(tk, qz_sweep_task_label(s->tasks.names[t]))) {
      json_decref(r);
      return NULL; /* a task was added to the spec: run again */
    }
  return r;
}

int qz_sweep_row_done(const qz_sweep_spec *s, const char *out, const qz_sweep_point *p) {
  json_t *r = load_row(s, out, p);
  json_decref(r);
  return r != NULL;
}

/* ---- text builder -------------------------------------------------------- */

typedef struct {
  char *buf;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->buf ? b->buf + b->len : NULL, b->buf ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if (b->buf && b->len + (size_t)n < b->cap) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap <= b->len + (size_t)n) cap *= 2;
    char *nb = realloc(b->buf, cap);
    if (!nb) {
      b->oom = 1;
      return;
    }
    b->buf = nb;
    b->cap = cap;
  }
}

/* ---- results.jsonl / results.csv ---------------------------------------- */

static void csv_value(sbuf *b, json_t *v, int precise) {
  if (!v || json_is_null(v)) return;
  if (json_is_string(v)) {
    const char *t = json_string_value(v);
    if (strpbrk(t, ",\"\n")) {
      sb_add(b, "\"");
      for (; *t; t++) sb_add(b, *t == '"' ? "\"\"" : "%c", *t);
      sb_add(b, "\"");
    } else {
      sb_add(b, "%s", t);
    }
  } else if (json_is_integer(v)) {
    sb_add(b, "%lld", (long long)json_integer_value(v));
  } else if (json_is_real(v)) {
    sb_add(b, precise ? "%.17g" : "%.6g", json_real_value(v));
  } else if (json_is_boolean(v)) {
    sb_add(b, "%d", json_is_true(v));
  }
}

static const char *const csv_front[] = {"key", "model", "method", "bits", "group",
                                        "act_order", "sym", "calibration", "nsamples",
                                        "calib_seqlen", NULL};
static const char *const csv_back[] = {"grid", "bits_per_param", "peak_rss_max_bytes", "np", "mpiquant_version",
                                       "git_rev", "finished_utc", "model_path", NULL};
static const char *const csv_walls[] = {"quantize_wall", "eval_wall", "total", NULL};

static void build_csv(const qz_sweep_spec *s, json_t *const *rows, sbuf *b) {
  sb_add(b, "index");
  for (const char *const *c = csv_front; *c; c++) sb_add(b, ",%s", *c);
  for (int e = 0; e < s->nevals; e++) sb_add(b, ",ppl_%s", s->evals[e].name);
  for (int t = 0; t < s->tasks.n; t++) {
    char tl[256];
    snprintf(tl, sizeof tl, "%s", qz_sweep_task_label(s->tasks.names[t]));
    for (const char *const *m = task_metrics; *m; m++)
      if (task_has(rows, s->npoints, tl, *m)) sb_add(b, ",%s_%s,%s_%s_stderr", tl, *m, tl, *m);
  }
  for (int ph = 0; ph < QZ_PHASE_COUNT; ph++) sb_add(b, ",sec_%s", qz_phase_name(ph));
  for (const char *const *c = csv_walls; *c; c++) sb_add(b, ",sec_%s", *c);
  for (const char *const *c = csv_back; *c; c++) sb_add(b, ",%s", *c);
  sb_add(b, "\n");
  for (int i = 0; i < s->npoints; i++) {
    json_t *r = rows[i];
    if (!r) continue;
    sb_add(b, "%d", i);
    for (const char *const *c = csv_front; *c; c++) {
      sb_add(b, ",");
      csv_value(b, json_object_get(r, *c), 0);
    }
    json_t *ppl = json_object_get(r, "ppl"), *sec = json_object_get(r, "seconds");
    for (int e = 0; e < s->nevals; e++) {
      sb_add(b, ",");
      csv_value(b, json_object_get(ppl, s->evals[e].name), 1);
    }
    for (int t = 0; t < s->tasks.n; t++) {
      char tl[256], se[64];
      snprintf(tl, sizeof tl, "%s", qz_sweep_task_label(s->tasks.names[t]));
      json_t *tj = json_object_get(json_object_get(r, "tasks"), tl);
      for (const char *const *m = task_metrics; *m; m++) {
        if (!task_has(rows, s->npoints, tl, *m)) continue;
        snprintf(se, sizeof se, "%s_stderr", *m);
        sb_add(b, ",");
        csv_value(b, json_object_get(tj, *m), 1);
        sb_add(b, ",");
        csv_value(b, json_object_get(tj, se), 1);
      }
    }
    for (int ph = 0; ph < QZ_PHASE_COUNT; ph++) {
      sb_add(b, ",");
      csv_value(b, json_object_get(sec, qz_phase_name(ph)), 0);
    }
    for (const char *const *c = csv_walls; *c; c++) {
      sb_add(b, ",");
      csv_value(b, json_object_get(sec, *c), 0);
    }
    for (const char *const *c = csv_back; *c; c++) {
      sb_add(b, ",");
      csv_value(b, json_object_get(r, *c), 0);
    }
    sb_add(b, "\n");
  }
}

static int build_jsonl(const qz_sweep_spec *s, json_t *const *rows, sbuf *b) {
  for (int i = 0; i < s->npoints; i++) {
    if (!rows[i]) continue;
    json_t *c = json_copy(rows[i]);
    QZ_CHECK(c, QZ_ERR_MEM, "out of memory");
    json_object_set_new(c, "index", json_integer(i));
    char *t = json_dumps(c, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(c);
    QZ_CHECK(t, QZ_ERR_MEM, "out of memory");
    sb_add(b, "%s\n", t);
    free(t);
  }
  return QZ_OK;
}

/* ---- results.md: a paper-style table per eval set ------------------------ */

/* Two points share a table row when they differ only in the model. */
static int same_config(const qz_sweep_point *a, const qz_sweep_point *b) {
  return strcmp(a->method, b->method) == 0 && a->bits == b->bits && a->group == b->group &&
         a->act_order == b->act_order && a->sym == b->sym && a->calib == b->calib &&
         a->grid == b->grid;
}

/* The metric a paper reports for a task: acc_norm where lm-eval has it
 * (hellaswag, ARC, PIQA), else acc; perplexity-only tasks have none. */
const char *qz_sweep_task_metric(json_t *const *rows, int n, const char *t) {
  return task_has(rows, n, t, "acc_norm") ? "acc_norm" : task_has(rows, n, t, "acc") ? "acc" : NULL;
}

/* Paper-style accuracy table per model: rows method x bits x group (the
 * fp32 baseline first, as the points are enumerated), one column per task
 * (accuracy in % +- stderr) and their average. */
static void build_md_tasks(const qz_sweep_spec *s, json_t *const *rows, sbuf *b) {
  for (int m = 0; m < s->nmodels; m++) {
    sb_add(b, "\n## Accuracy on %s (%%, +- standard error", s->models[m].name);
    if (s->tasks.limit) sb_add(b, "; first %ld documents per task", s->tasks.limit);
    if (s->tasks.num_fewshot) sb_add(b, "; %ld-shot", s->tasks.num_fewshot);
    sb_add(b, ")\n\n| method | bits | group | act-order | calibration |");
    for (int t = 0; t < s->tasks.n; t++) {
      const char *tl = qz_sweep_task_label(s->tasks.names[t]);
      const char *mm = qz_sweep_task_metric(rows, s->npoints, tl);
      sb_add(b, " %s%s%s |", tl, mm ? " " : "", mm ? mm : "");
    }
    sb_add(b, " average |\n|---|--:|--:|:-:|---|");
    for (int t = 0; t <= s->tasks.n; t++) sb_add(b, "--:|");
    sb_add(b, "\n");
    for (int i = 0; i < s->npoints; i++) {
      const qz_sweep_point *p = &s->points[i];
      if (p->model != m) continue;
      int fp = strcmp(p->method, "fp32") == 0;
      char g[32] = "";
      if (!fp) snprintf(g, sizeof g, p->group < 0 ? "channel" : "%ld", p->group);
      sb_add(b, "| %s%s%s | %d | %s | %s | %s |", p->method, p->grid ? " " : "", p->grid ? qz_vgrid_name((qz_vgrid)p->grid) : "", p->bits, g,
             p->act_order ? "yes" : "",
             p->calib >= 0 ? s->calibs[p->calib].name : "");
      double sum = 0.0;
      int cnt = 0;
      for (int t = 0; t < s->tasks.n; t++) {
        char tl[256];
        snprintf(tl, sizeof tl, "%s", qz_sweep_task_label(s->tasks.names[t]));
        const char *mm = qz_sweep_task_metric(rows, s->npoints, tl);
        json_t *tj = rows[i] ? json_object_get(json_object_get(rows[i], "tasks"), tl) : NULL;
        json_t *v = mm ? json_object_get(tj, mm) : NULL;
        if (!v) {
          sb_add(b, " - |");
          continue;
        }
        char se[64];
        snprintf(se, sizeof se, "%s_stderr", mm);
        json_t *e = json_object_get(tj, se);
        sum += json_number_value(v);
        cnt++;
        if (json_is_number(e))
          sb_add(b, " %.1f +- %.1f |", 100.0 * json_number_value(v), 100.0 * json_number_value(e));
        else
          sb_add(b, " %.1f |", 100.0 * json_number_value(v));
      }
      if (cnt) sb_add(b, " %.1f |\n", 100.0 * sum / cnt);
      else sb_add(b, " - |\n");
    }
  }
}

static void build_md(const qz_sweep_spec *s, json_t *const *rows, sbuf *b) {
  int done = 0;
  for (int i = 0; i < s->npoints; i++) done += rows[i] != NULL;
  sb_add(b, "# Sweep `%s`\n\n%d of %d points done. Perplexity (lower is better); "
         "`-` = not run yet.\n", s->name, done, s->npoints);
  for (int e = 0; e < s->nevals; e++) {
    const qz_sweep_eval *ev = &s->evals[e];
    sb_add(b, "\n## %s", ev->name);
    if (ev->windows || ev->seqlen)
      sb_add(b, " (%s%ld windows x %ld tokens)", ev->windows ? "" : "all ",
             ev->windows, ev->seqlen);
    sb_add(b, "\n\n| method | bits | group | act-order | sym | calibration |");
    for (int m = 0; m < s->nmodels; m++) sb_add(b, " %s |", s->models[m].name);
    sb_add(b, "\n|---|--:|--:|:-:|:-:|---|");
    for (int m = 0; m < s->nmodels; m++) sb_add(b, "--:|");
    sb_add(b, "\n");
    for (int i = 0; i < s->npoints; i++) {
      const qz_sweep_point *p = &s->points[i];
      int first = 1;
      for (int j = 0; j < i && first; j++) first = !same_config(&s->points[j], p);
      if (!first) continue;
      int fp = strcmp(p->method, "fp32") == 0;
      char g[32] = "";
      if (!fp) snprintf(g, sizeof g, p->group < 0 ? "channel" : "%ld", p->group);
      sb_add(b, "| %s%s%s | %d | %s | %s | %s | %s |", p->method, p->grid ? " " : "", p->grid ? qz_vgrid_name((qz_vgrid)p->grid) : "", p->bits, g,
             p->act_order ? "yes" : "", p->sym ? "yes" : "",
             p->calib >= 0 ? s->calibs[p->calib].name : "");
      for (int m = 0; m < s->nmodels; m++) {
        json_t *v = NULL;
        for (int j = 0; j < s->npoints; j++)
          if (s->points[j].model == m && same_config(&s->points[j], p) && rows[j])
            v = json_object_get(json_object_get(rows[j], "ppl"), ev->name);
        if (v) sb_add(b, " %.3f |", json_number_value(v));
        else sb_add(b, " - |");
      }
      sb_add(b, "\n");
    }
  }
  if (s->tasks.n) build_md_tasks(s, rows, b);
  sb_add(b, "\n## Runs\n\n| point | np | quantize (s) | eval (s) | peak RSS per rank |\n"
         "|---|--:|--:|--:|--:|\n");
  for (int i = 0; i < s->npoints; i++) {
    json_t *r = rows[i];
    if (!r) continue;
    json_t *sec = json_object_get(r, "seconds");
    char mem[32];
    qz_fmt_bytes((double)json_integer_value(json_object_get(r, "peak_rss_max_bytes")), mem,
                 sizeof mem);
    sb_add(b, "| %s | %lld | %.2f | %.2f | %s |\n", s->points[i].key,
           (long long)json_integer_value(json_object_get(r, "np")),
           json_number_value(json_object_get(sec, "quantize_wall")),
           json_number_value(json_object_get(sec, "eval_wall")), mem);
  }
}

/* ---- commit -------------------------------------------------------------- */

static int write_sbuf(const char *out, const char *name, sbuf *b) {
  QZ_CHECK(!b->oom, QZ_ERR_MEM, "out of memory building %s", name);
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", out, name);
  QZ_CALL(qz_write_atomic(path, b->buf ? b->buf : "", b->len));
  return QZ_OK;
}

int qz_sweep_commit(const qz_sweep_spec *s, const char *out, const qz_sweep_point *p,
                    json_t *row, int plot) {
  int st = QZ_OK, fd = -1;
  json_t **rows = NULL;
  sbuf csv = {0}, jl = {0}, md = {0};
  char path[4096];
  if (row) {
    char *t = json_dumps(row, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    QZ_CHECK(t, QZ_ERR_MEM, "out of memory");
    qz_sweep_row_path(out, p, path, sizeof path);
    char *line = NULL;
    int n = asprintf(&line, "%s\n", t);
    free(t);
    QZ_CHECK(n > 0, QZ_ERR_MEM, "out of memory");
    st = qz_write_atomic(path, line, (size_t)n);
    free(line);
    QZ_CALL(st);
  }
  snprintf(path, sizeof path, "%s/.lock", out);
  fd = open(path, O_RDWR | O_CREAT, 0666);
  QZ_CHECK(fd >= 0, QZ_ERR_IO, "cannot open the lock file %s: %s", path, strerror(errno));
  if (flock(fd, LOCK_EX) != 0)
    qz_warn("sweep: flock(%s) failed (%s): concurrent tasks may race on results.*; "
            "run `mpiquant sweep --spec S --out %s --merge` after the job", path,
            strerror(errno), out);
  rows = calloc((size_t)s->npoints + 1, sizeof *rows);
  QZ_CHECK_DONE(rows, QZ_ERR_MEM, "out of memory");
  for (int i = 0; i < s->npoints; i++) rows[i] = load_row(s, out, &s->points[i]);
  build_csv(s, rows, &csv);
  QZ_CALL_DONE(build_jsonl(s, rows, &jl));
  build_md(s, rows, &md);
  QZ_CALL_DONE(write_sbuf(out, "results.jsonl", &jl));
  QZ_CALL_DONE(write_sbuf(out, "results.csv", &csv));
  QZ_CALL_DONE(write_sbuf(out, "results.md", &md));
  if (plot) QZ_CALL_DONE(qz_sweep_plot(s, out, rows));
done:
  if (rows)
    for (int i = 0; i < s->npoints; i++) json_decref(rows[i]);
  free(rows);
  free(csv.buf);
  free(jl.buf);
  free(md.buf);
  if (fd >= 0) {
    flock(fd, LOCK_UN);
    close(fd);
  }
  return st;
}
