/* sweep --plot: perplexity vs bits, one line per method configuration and a
 * dashed fp32 line, one figure per model and eval set, drawn by gnuplot
 * (PNG via pngcairo and SVG). The data and the gnuplot scripts stay in
 * OUT/plot/ so users can restyle the figures. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/codes.h"
#include "mpiquant/error.h"
#include "mpiquant/files.h"
#include "mpiquant/log.h"
#include "sweep.h"

int qz_sweep_have_gnuplot(void) {
  return system("gnuplot --version >/dev/null 2>&1") == 0;
}

/* same line in a figure: all but bits (and the model) equal */
static int same_series(const qz_sweep_point *a, const qz_sweep_point *b) {
  return strcmp(a->method, b->method) == 0 && a->group == b->group &&
         a->act_order == b->act_order && a->sym == b->sym && a->calib == b->calib &&
         a->grid == b->grid;
}

static void series_label(const qz_sweep_spec *s, const qz_sweep_point *p, char *buf,
                         size_t len) {
  char g[32];
  if (p->group < 0) snprintf(g, sizeof g, " per-channel");
  else snprintf(g, sizeof g, " g%ld", p->group);
  snprintf(buf, len, "%s%s%s%s%s%s%s%s", p->method, p->grid ? " " : "", p->grid ? qz_vgrid_name((qz_vgrid)p->grid) : "", g,
           p->act_order ? " act-order" : "",
           p->sym ? " sym" : "", s->ncalibs > 1 && p->calib >= 0 ? " calib " : "",
           s->ncalibs > 1 && p->calib >= 0 ? s->calibs[p->calib].name : "");
}

/* What a figure shows: perplexity on an eval set, or a task's metric. */
typedef struct {
  const char *name;   /* eval set or task */
  const char *metric; /* NULL: perplexity; else the task metric ("acc") */
} plot_what;

static double ppl_of(json_t *row, const plot_what *w) {
  if (!w->metric) return json_number_value(json_object_get(json_object_get(row, "ppl"), w->name));
  json_t *t = json_object_get(json_object_get(row, "tasks"), w->name);
  return 100.0 * json_number_value(json_object_get(t, w->metric));
}

/* one figure; *drawn = 0 when the model has no rows for this eval set */
static int plot_one(const qz_sweep_spec *s, const char *out, json_t *const *rows, int m,
                    const plot_what *w, int *drawn) {
  const char *ev = w->name, *mn = s->models[m].name, *pre = w->metric ? "acc" : "ppl";
  char dat[4096], gp[4096], log[4096];
  snprintf(dat, sizeof dat, "%s/plot/%s-%s-%s.dat", out, pre, mn, ev);
  snprintf(gp, sizeof gp, "%s/plot/%s-%s-%s.gp", out, pre, mn, ev);
  snprintf(log, sizeof log, "%s/plot/gnuplot.log", out);
  *drawn = 0;
  int nseries = 0, bmin = 99, bmax = 0;
  double fp32 = 0.0;
  int have_fp32 = 0;
  char *plotcmd = NULL;
  size_t pl = 0;
  FILE *pc = open_memstream(&plotcmd, &pl); /* the gnuplot plot command */
  QZ_CHECK(pc, QZ_ERR_MEM, "out of memory");
  FILE *f = fopen(dat, "w");
  if (!f) {
    fclose(pc);
    free(plotcmd);
    QZ_FAIL(QZ_ERR_IO, "cannot write %s", dat);
  }
  for (int i = 0; i < s->npoints; i++) {
    const qz_sweep_point *p = &s->points[i];
    if (p->model != m || !rows[i]) continue;
    if (strcmp(p->method, "fp32") == 0) {
      fp32 = ppl_of(rows[i], w);
      have_fp32 = 1;
      continue;
    }
    int first = 1;
    for (int j = 0; j < i && first; j++)
      first = !(s->points[j].model == m && rows[j] && same_series(&s->points[j], p) &&
                strcmp(s->points[j].method, "fp32") != 0);
    if (!first) continue;
    /* the series' points, by ascending bits */
    int bits[16], n = 0;
    double ppl[16];
    for (int j = i; j < s->npoints && n < 16; j++) {
      const qz_sweep_point *q = &s->points[j];
      if (q->model != m || !rows[j] || !same_series(q, p)) continue;
      int k = n++;
      while (k > 0 && bits[k - 1] > q->bits) {
        bits[k] = bits[k - 1];
        ppl[k] = ppl[k - 1];
        k--;
      }
      bits[k] = q->bits;
      ppl[k] = ppl_of(rows[j], w);
    }
    char label[256];
    series_label(s, p, label, sizeof label);
    fprintf(f, "# %s\n", label);
    for (int k = 0; k < n; k++) {
      fprintf(f, "%d %.17g\n", bits[k], ppl[k]);
      if (bits[k] < bmin) bmin = bits[k];
      if (bits[k] > bmax) bmax = bits[k];
    }
    fprintf(f, "\n\n");
    fprintf(pc, "%s'%s' index %d with linespoints lw 2 pt 7 ps 1.2 title \"%s\"",
            nseries ? ", \\\n     " : "plot ", dat, nseries, label);
    nseries++;
  }
  if (nseries == 0 && have_fp32) { /* only the baseline so far */
    bmin = 2;
    bmax = 8;
    fprintf(pc, "plot ");
  }
  if (have_fp32)
    fprintf(pc, "%s%.17g with lines dt 2 lw 2 lc rgb \"black\" title \"fp32 (%.3f)\"",
            nseries ? ", \\\n     " : "", fp32, fp32);
  int ok = fclose(f) == 0;
  ok &= fclose(pc) == 0;
  if (!ok || nseries + have_fp32 == 0) {
    free(plotcmd);
    QZ_CHECK(ok, QZ_ERR_IO, "writing %s failed", dat);
    return QZ_OK;
  }
  f = fopen(gp, "w");
  if (!f) {
    free(plotcmd);
    QZ_FAIL(QZ_ERR_IO, "cannot write %s", gp);
  }
  char what[160];
  if (w->metric)
    snprintf(what, sizeof what, "%s on %s (%%) vs bits (higher is better)", w->metric, ev);
  else
    snprintf(what, sizeof what, "perplexity on %s vs bits (lower is better)", ev);
  fprintf(f,
          "# mpiquant sweep --plot: %s on %s (edit and run: gnuplot %s)\n"
          "set termoption noenhanced\n"
          "set title \"%s: %s\" noenhanced\n"
          "set xlabel \"bits per weight\"\n"
          "set ylabel \"%s\"\n"
          "set grid\n"
          "set key top right noenhanced\n"
          "set xtics 1\n"
          "set xrange [%g:%g]\n"
          "set terminal pngcairo size 900,560 noenhanced\n"
          "set output '%s/%s-%s-%s.png'\n"
          "%s\n"
          "set terminal svg size 900,560 dynamic noenhanced\n"
          "set output '%s/%s-%s-%s.svg'\n"
          "replot\n"
          "unset output\n",
          mn, ev, gp, mn, what, w->metric ? "accuracy (%)" : "perplexity", bmin - 0.5,
          bmax + 0.5, out, pre, mn, ev, plotcmd, out, pre, mn, ev);
  free(plotcmd);
  ok = fclose(f) == 0;
  QZ_CHECK(ok, QZ_ERR_IO, "writing %s failed", gp);
  char *cmd = NULL;
  QZ_CHECK(asprintf(&cmd, "gnuplot '%s' >>'%s' 2>&1", gp, log) > 0, QZ_ERR_MEM, "out of memory");
  int rc = system(cmd);
  free(cmd);
  QZ_CHECK(rc == 0, QZ_ERR_IO,
           "sweep --plot: gnuplot failed on %s (exit status %d); see %s", gp, rc, log);
  *drawn = 1;
  return QZ_OK;
}

int qz_sweep_plot(const qz_sweep_spec *s, const char *out, json_t *const *rows) {
  QZ_CHECK(!strchr(out, '\''), QZ_ERR_ARG,
           "sweep --plot: the output directory name %s contains a quote", out);
  QZ_CHECK(qz_sweep_have_gnuplot(), QZ_ERR_UNSUPPORTED,
           "sweep --plot needs gnuplot on PATH (Debian: apt-get install gnuplot-nox); "
           "results.csv, results.jsonl and results.md are written without it");
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/plot", out);
  QZ_CALL(qz_mkdir_p(dir));
  int n = 0;
  for (int m = 0; m < s->nmodels; m++)
    for (int e = 0; e < s->nevals + s->tasks.n; e++) {
      int drawn = 0;
      char task[256] = "";
      plot_what w = {e < s->nevals ? s->evals[e].name : task, NULL};
      if (e >= s->nevals) { /* accuracy of a task (perplexity-only tasks: none) */
        snprintf(task, sizeof task, "%s", qz_sweep_task_label(s->tasks.names[e - s->nevals]));
        w.metric = qz_sweep_task_metric(rows, s->npoints, task);
        if (!w.metric) continue;
      }
      QZ_CALL(plot_one(s, out, rows, m, &w, &drawn));
      n += drawn;
    }
  qz_info("sweep: %d plot%s in %s (ppl-<model>-<eval>.png/.svg%s)", n, n == 1 ? "" : "s", out,
          s->tasks.n ? ", acc-<model>-<task>.png/.svg" : "");
  return QZ_OK;
}
