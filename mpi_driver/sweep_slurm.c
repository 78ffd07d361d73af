/* sweep --emit-slurm DIR: the built-in slurm/sweep-array.sbatch with the
 * array range, log path and absolute paths filled in, the spec with every
 * path made absolute (so a task that starts anywhere runs the same point K),
 * and points.json, the index of the points (K -> key and settings). */
#define _GNU_SOURCE
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/codes.h"
#include "mpiquant/error.h"
#include "mpiquant/files.h"
#include "mpiquant/log.h"
#include "sweep.h"
#include "sweep_sbatch.h"

typedef struct {
  char *buf;
  size_t len, cap;
} tbuf;

static int tb_add(tbuf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 8192;
    while (cap < b->len + n + 1) cap *= 2;
    char *nb = realloc(b->buf, cap);
    QZ_CHECK(nb, QZ_ERR_MEM, "out of memory");
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, s, n);
  b->len += n;
  b->buf[b->len] = '\0';
  return QZ_OK;
}

static int tb_fmt(tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int tb_fmt(tbuf *b, const char *fmt, ...) {
  char *s = NULL;
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  QZ_CHECK(n >= 0, QZ_ERR_MEM, "out of memory");
  int st = tb_add(b, s, (size_t)n);
  free(s);
  return st;
}

/* single-quoted for the shell */
static int tb_quoted(tbuf *b, const char *s) {
  QZ_CALL(tb_add(b, "'", 1));
  for (; *s; s++) {
    if (*s == '\'') QZ_CALL(tb_add(b, "'\\''", 4));
    else QZ_CALL(tb_add(b, s, 1));
  }
  return tb_add(b, "'", 1);
}

/* "#SBATCH --name=..." / "#SBATCH --name ..." -> name (into buf) */
static int sbatch_option(const char *line, size_t n, char *buf, size_t len) {
  static const char pre[] = "#SBATCH --";
  if (n < sizeof pre || strncmp(line, pre, sizeof pre - 1) != 0) return 0;
  size_t i = sizeof pre - 1, k = 0;
  while (i < n && line[i] != '=' && line[i] != ' ' && k + 1 < len) buf[k++] = line[i++];
  buf[k] = '\0';
  return k > 0;
}

static int slurm_value(json_t *v, char *buf, size_t len) {
  if (json_is_integer(v)) snprintf(buf, len, "%lld", (long long)json_integer_value(v));
  else snprintf(buf, len, "%s", json_string_value(v));
  QZ_CHECK(!strchr(buf, '\n'), QZ_ERR_FORMAT, "sweep spec: slurm option has a newline");
  return QZ_OK;
}

static int build_sbatch(const qz_sweep_spec *s, const char *spec, const char *out,
                        const char *dir, const char *exe, tbuf *b) {
  json_t *sl = json_object_get(s->doc, "slurm");
  json_t *used = json_object();
  int st = QZ_OK;
  char array[64], output[PATH_MAX + 32];
  snprintf(array, sizeof array, "0-%d", s->npoints - 1);
  snprintf(output, sizeof output, "%s/logs/%%A_%%a.out", dir);
  const char *t = (const char *)qz_sweep_sbatch_template;
  const char *last_sbatch = NULL;
  for (const char *l = t; *l;) {
    const char *e = strchr(l, '\n');
    if (!e) e = l + strlen(l);
    if (strncmp(l, "#SBATCH", 7) == 0) last_sbatch = l;
    l = *e ? e + 1 : e;
  }
  QZ_CHECK_DONE(last_sbatch, QZ_ERR_INTERNAL, "sweep template has no #SBATCH line");
  for (const char *l = t; *l;) {
    const char *e = strchr(l, '\n');
    size_t n = e ? (size_t)(e - l) : strlen(l);
    char opt[64], val[512];
    if (sbatch_option(l, n, opt, sizeof opt)) {
      json_t *v = json_object_get(sl, opt);
      if (v) {
        QZ_CALL_DONE(slurm_value(v, val, sizeof val));
        QZ_CALL_DONE(tb_fmt(b, "#SBATCH --%s=%s\n", opt, val));
        json_object_set_new(used, opt, json_true());
      } else if (strcmp(opt, "output") == 0) {
        QZ_CALL_DONE(tb_fmt(b, "#SBATCH --output=%s\n", output));
        json_object_set_new(used, opt, json_true());
      } else {
        QZ_CALL_DONE(tb_add(b, l, n + (e ? 1 : 0)));
      }
    } else if (strncmp(l, "SPEC=${SPEC:-", 13) == 0 || strncmp(l, "OUT=${OUT:-", 11) == 0 ||
               strncmp(l, "MPIQUANT=${MPIQUANT:-", 21) == 0) {
      const char *var = l[0] == 'S' ? "SPEC" : l[0] == 'O' ? "OUT" : "MPIQUANT";
      const char *path = l[0] == 'S' ? spec : l[0] == 'O' ? out : exe;
      /* fixed, not ${VAR:-...}: a variable of the same name in the
       * submitting shell must not redirect a generated job */
      QZ_CALL_DONE(tb_fmt(b, "%s=", var));
      QZ_CALL_DONE(tb_quoted(b, path));
      QZ_CALL_DONE(tb_add(b, "\n", 1));
    } else {
      QZ_CALL_DONE(tb_add(b, l, n + (e ? 1 : 0)));
    }
    if (l == last_sbatch) { /* options the template does not have */
      if (!json_object_get(sl, "array"))
        QZ_CALL_DONE(tb_fmt(b, "#SBATCH --array=%s\n", array));
      if (!json_object_get(used, "output"))
        QZ_CALL_DONE(tb_fmt(b, "#SBATCH --output=%s\n", output));
      const char *k;
      json_t *v;
      json_object_foreach(sl, k, v) {
        if (json_object_get(used, k)) continue;
        QZ_CALL_DONE(slurm_value(v, val, sizeof val));
        QZ_CALL_DONE(tb_fmt(b, "#SBATCH --%s=%s\n", k, val));
      }
    }
    l = e ? e + 1 : l + n;
  }
done:
  json_decref(used);
  return st;
}

static json_t *points_index(const qz_sweep_spec *s, const char *spec, const char *out) {
  json_t *pts = json_array();
  for (int i = 0; i < s->npoints; i++) {
    const qz_sweep_point *p = &s->points[i];
    json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:i}", "index", i, "key", p->key, "model",
                          s->models[p->model].name, "method", p->method, "bits", p->bits);
    if (strcmp(p->method, "fp32") != 0) {
      json_object_set_new(o, "group", json_integer(p->group));
      json_object_set_new(o, "act_order", json_boolean(p->act_order));
      json_object_set_new(o, "sym", json_boolean(p->sym));
      json_object_set_new(o, "grid", json_string(qz_vgrid_name((qz_vgrid)p->grid)));
    }
    if (p->calib >= 0)
      json_object_set_new(o, "calibration", json_string(s->calibs[p->calib].name));
    json_array_append_new(pts, o);
  }
  return json_pack("{s:s, s:i, s:s, s:s, s:s, s:i, s:o}", "format", "mpiquant-sweep-points",
                   "version", 1, "name", s->name, "spec", spec, "out", out, "npoints",
                   s->npoints, "points", pts);
}

static int write_json(const char *path, json_t *j) {
  char *t = j ? json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(17)) : NULL;
  QZ_CHECK(t, QZ_ERR_MEM, "out of memory");
  char *line = NULL;
  int n = asprintf(&line, "%s\n", t);
  free(t);
  QZ_CHECK(n > 0, QZ_ERR_MEM, "out of memory");
  int st = qz_write_atomic(path, line, (size_t)n);
  free(line);
  return st;
}

int qz_sweep_emit_slurm(const qz_sweep_spec *s, const char *out, const char *dir,
                        const char *exe) {
  char adir[PATH_MAX], aout[PATH_MAX], spec[PATH_MAX + 16], path[PATH_MAX + 32];
  int st = QZ_OK;
  tbuf b = {0};
  json_t *idx = NULL;
  snprintf(path, sizeof path, "%s/logs", dir);
  QZ_CALL(qz_mkdir_p(path));
  QZ_CALL(qz_mkdir_p(out));
  QZ_CHECK(realpath(dir, adir) && realpath(out, aout), QZ_ERR_IO,
           "cannot resolve %s or %s", dir, out);
  snprintf(spec, sizeof spec, "%s/spec.json", adir);
  QZ_CALL(write_json(spec, s->doc));
  idx = points_index(s, spec, aout);
  snprintf(path, sizeof path, "%s/points.json", adir);
  QZ_CALL_DONE(write_json(path, idx));
  QZ_CALL_DONE(build_sbatch(s, spec, aout, adir, exe, &b));
  snprintf(path, sizeof path, "%s/sweep-array.sbatch", adir);
  QZ_CALL_DONE(qz_write_atomic(path, b.buf, b.len));
  qz_info("sweep: wrote %s (array 0-%d, one task per point), %s/spec.json and "
          "%s/points.json; submit with: sbatch %s",
          path, s->npoints - 1, adir, adir, path);
done:
  free(b.buf);
  json_decref(idx);
  return st;
}
