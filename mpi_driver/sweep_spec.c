/* Sweep spec (JSON) -> models, calibration and eval sets, and the points of
 * the grid in a fixed order. docs/sweeps.md is the user-facing reference. */
#define _GNU_SOURCE
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/codes.h"
#include "mpiquant/error.h"
#include "mpiquant/method.h"
#include "rotate_cli.h"
#include "sweep.h"

static const char *const top_keys[] = {
    "name", "description", "models", "baseline", "methods", "bits", "groups",
    "act_order", "sym", "grids", "calibration", "eval", "tasks", "quantize_args",
    "keep_checkpoints", "slurm", NULL};

static char *xstrdup(const char *s) {
  return s ? strdup(s) : NULL;
}

/* a name usable in keys, CSV column names and file names */
static void sanitize(char *s) {
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '.' || *s == '-' || *s == '_'))
      *s = '_';
}

/* basename of `path` (trailing slashes ignored), optionally without its
 * extension, sanitized; malloc'd */
static char *default_name(const char *path, int strip_ext) {
  size_t n = strlen(path);
  while (n > 1 && path[n - 1] == '/') n--;
  size_t b = n;
  while (b > 0 && path[b - 1] != '/') b--;
  char *s = strndup(path + b, n - b);
  if (!s) return NULL;
  if (strip_ext) {
    char *dot = strrchr(s, '.');
    if (dot && dot != s) *dot = '\0';
  }
  sanitize(s);
  return s;
}

static char *resolve(const char *dir, const char *p) {
  char *out = NULL;
  if (p[0] == '/') return strdup(p);
  if (asprintf(&out, "%s/%s", dir, p) < 0) return NULL;
  return out;
}

/* value or array of values -> array (new reference); NULL -> default */
static json_t *as_array(json_t *v, json_t *dflt) {
  if (!v) return dflt;
  json_decref(dflt);
  if (json_is_array(v)) return json_incref(v);
  json_t *a = json_array();
  json_array_append(a, v);
  return a;
}

static int check_name(const char *what, const char *name) {
  QZ_CHECK(name && *name, QZ_ERR_FORMAT, "sweep spec: %s has an empty name", what);
  for (const char *c = name; *c; c++)
    QZ_CHECK((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                 (*c >= '0' && *c <= '9') || *c == '.' || *c == '-' || *c == '_',
             QZ_ERR_FORMAT,
             "sweep spec: %s name '%s' may only use letters, digits, '.', '-' "
             "and '_' (it names files and CSV columns)", what, name);
  QZ_CHECK(!strstr(name, "__"), QZ_ERR_FORMAT,
           "sweep spec: %s name '%s' must not contain '__' (the key separator)",
           what, name);
  return QZ_OK;
}

static int get_long(json_t *o, const char *key, const char *what, long lo,
                    long hi, long dflt, long *out) {
  json_t *v = json_object_get(o, key);
  *out = dflt;
  if (!v) return QZ_OK;
  QZ_CHECK(json_is_integer(v), QZ_ERR_FORMAT,
           "sweep spec: %s: \"%s\" must be an integer", what, key);
  json_int_t x = json_integer_value(v);
  QZ_CHECK(x >= lo && x <= hi, QZ_ERR_FORMAT,
           "sweep spec: %s: \"%s\" is %lld, expected %ld..%ld", what, key,
           (long long)x, lo, hi);
  *out = (long)x;
  return QZ_OK;
}

/* {"name", "text" | "tokens", ...} -> name, absolute path, is_tokens; the
 * entry in the normalized doc gets the absolute path and the name. */
static int data_entry(json_t *e, const char *what, int i, const char *dir,
                      const char *const *allowed, char **name, char **path,
                      int *is_tokens) {
  QZ_CHECK(json_is_object(e), QZ_ERR_FORMAT,
           "sweep spec: %s[%d] must be an object with \"text\" or \"tokens\"",
           what, i);
  const char *k;
  json_t *v;
  json_object_foreach(e, k, v) {
    int ok = 0;
    for (const char *const *a = allowed; *a; a++) ok |= strcmp(*a, k) == 0;
    QZ_CHECK(ok, QZ_ERR_FORMAT, "sweep spec: %s[%d]: unknown key \"%s\"", what, i, k);
  }
  json_t *text = json_object_get(e, "text"), *tok = json_object_get(e, "tokens");
  QZ_CHECK(!text != !tok, QZ_ERR_FORMAT,
           "sweep spec: %s[%d] needs exactly one of \"text\" (UTF-8 file) or "
           "\"tokens\" (.bin / .txt token file)", what, i);
  json_t *p = text ? text : tok;
  QZ_CHECK(json_is_string(p) && *json_string_value(p), QZ_ERR_FORMAT,
           "sweep spec: %s[%d]: \"%s\" must be a file name", what, i,
           text ? "text" : "tokens");
  *is_tokens = tok != NULL;
  *path = resolve(dir, json_string_value(p));
  json_t *n = json_object_get(e, "name");
  QZ_CHECK(!n || json_is_string(n), QZ_ERR_FORMAT,
           "sweep spec: %s[%d]: \"name\" must be a string", what, i);
  *name = n ? xstrdup(json_string_value(n)) : default_name(json_string_value(p), 1);
  QZ_CHECK(*path && *name, QZ_ERR_MEM, "out of memory");
  QZ_CALL(check_name(what, *name));
  json_object_set_new(e, text ? "text" : "tokens", json_string(*path));
  json_object_set_new(e, "name", json_string(*name));
  return QZ_OK;
}

static int parse_models(qz_sweep_spec *s, const char *dir) {
  json_t *a = json_object_get(s->doc, "models");
  QZ_CHECK(json_is_array(a) && json_array_size(a) > 0, QZ_ERR_FORMAT,
           "sweep spec %s: \"models\" must be a non-empty array of model "
           "directories or {\"name\", \"path\"} objects", s->spec_path);
  s->nmodels = (int)json_array_size(a);
  s->models = calloc((size_t)s->nmodels, sizeof *s->models);
  QZ_CHECK(s->models, QZ_ERR_MEM, "out of memory");
  for (int i = 0; i < s->nmodels; i++) {
    json_t *e = json_array_get(a, (size_t)i);
    const char *p = NULL, *n = NULL;
    if (json_is_string(e)) {
      p = json_string_value(e);
    } else if (json_is_object(e)) {
      p = json_string_value(json_object_get(e, "path"));
      n = json_string_value(json_object_get(e, "name"));
      const char *k;
      json_t *v;
      json_object_foreach(e, k, v)
        QZ_CHECK(strcmp(k, "path") == 0 || strcmp(k, "name") == 0, QZ_ERR_FORMAT,
                 "sweep spec: models[%d]: unknown key \"%s\" (name, path)", i, k);
    }
    QZ_CHECK(p && *p, QZ_ERR_FORMAT,
             "sweep spec: models[%d] must be a directory name or an object "
             "with a \"path\"", i);
    s->models[i].path = resolve(dir, p);
    s->models[i].name = n ? xstrdup(n) : default_name(p, 0);
    QZ_CHECK(s->models[i].path && s->models[i].name, QZ_ERR_MEM, "out of memory");
    QZ_CALL(check_name("model", s->models[i].name));
    for (int j = 0; j < i; j++)
      QZ_CHECK(strcmp(s->models[j].name, s->models[i].name) != 0, QZ_ERR_FORMAT,
               "sweep spec: two models are named '%s'; give them distinct "
               "\"name\"s", s->models[i].name);
    json_array_set_new(a, (size_t)i, json_pack("{s:s, s:s}", "name", s->models[i].name,
                                               "path", s->models[i].path));
  }
  return QZ_OK;
}

static int parse_calibs(qz_sweep_spec *s, const char *dir) {
  json_t *a = as_array(json_object_get(s->doc, "calibration"), json_array());
  json_object_set_new(s->doc, "calibration", a);
  static const char *const allowed[] = {"name", "text", "tokens", "nsamples", "seqlen", NULL};
  s->ncalibs = (int)json_array_size(a);
  s->calibs = calloc((size_t)s->ncalibs + 1, sizeof *s->calibs);
  QZ_CHECK(s->calibs, QZ_ERR_MEM, "out of memory");
  for (int i = 0; i < s->ncalibs; i++) {
    json_t *e = json_array_get(a, (size_t)i);
    qz_sweep_calib *c = &s->calibs[i];
    QZ_CALL(data_entry(e, "calibration", i, dir, allowed, &c->name, &c->path,
                       &c->is_tokens));
    QZ_CALL(get_long(e, "nsamples", "calibration", 1, 1L << 30, 128, &c->nsamples));
    QZ_CALL(get_long(e, "seqlen", "calibration", 2, 1L << 24, 0, &c->seqlen));
    for (int j = 0; j < i; j++)
      QZ_CHECK(strcmp(s->calibs[j].name, c->name) != 0, QZ_ERR_FORMAT,
               "sweep spec: two calibration sets are named '%s'", c->name);
  }
  return QZ_OK;
}

static int parse_evals(qz_sweep_spec *s, const char *dir) {
  json_t *a = as_array(json_object_get(s->doc, "eval"), json_array());
  json_object_set_new(s->doc, "eval", a);
  static const char *const allowed[] = {"name", "text", "tokens", "seqlen", "windows",
                                        "max_tokens", NULL};
  s->nevals = (int)json_array_size(a);
  QZ_CHECK(s->nevals > 0 || s->tasks.n > 0, QZ_ERR_FORMAT,
           "sweep spec %s: \"eval\" must list at least one evaluation set "
           "({\"text\": FILE, \"seqlen\": L, \"windows\": K}) or give \"tasks\"",
           s->spec_path);
  s->evals = calloc((size_t)s->nevals + 1, sizeof *s->evals);
  QZ_CHECK(s->evals, QZ_ERR_MEM, "out of memory");
  for (int i = 0; i < s->nevals; i++) {
    json_t *e = json_array_get(a, (size_t)i);
    qz_sweep_eval *v = &s->evals[i];
    QZ_CALL(data_entry(e, "eval", i, dir, allowed, &v->name, &v->path, &v->is_tokens));
    QZ_CALL(get_long(e, "seqlen", "eval", 2, 1L << 30, 0, &v->seqlen));
    QZ_CALL(get_long(e, "windows", "eval", 1, LONG_MAX, 0, &v->windows));
    QZ_CALL(get_long(e, "max_tokens", "eval", 2, LONG_MAX, 0, &v->max_tokens));
    QZ_CHECK(!(v->windows && v->max_tokens), QZ_ERR_FORMAT,
             "sweep spec: eval '%s': \"windows\" and \"max_tokens\" exclude each "
             "other", v->name);
    for (int j = 0; j < i; j++)
      QZ_CHECK(strcmp(s->evals[j].name, v->name) != 0, QZ_ERR_FORMAT,
               "sweep spec: two eval sets are named '%s'", v->name);
  }
  return QZ_OK;
}

/* "tasks": ["hellaswag", ...] or {"names": [...], "task_dir": DIR,
 * "limit": N, "num_fewshot": K}; a name with '/' or ending in .jsonl is a
 * path (relative to the spec), others are looked up like eval --task. */
static int parse_tasks(qz_sweep_spec *s, const char *dir) {
  json_t *t = json_object_get(s->doc, "tasks"), *names = t;
  qz_sweep_tasks *k = &s->tasks;
  if (!t) return QZ_OK;
  if (json_is_object(t)) {
    static const char *const allowed[] = {"names", "task_dir", "limit", "num_fewshot", NULL};
    const char *key;
    json_t *v;
    json_object_foreach(t, key, v) {
      int ok = 0;
      for (const char *const *a = allowed; *a; a++) ok |= strcmp(*a, key) == 0;
      QZ_CHECK(ok, QZ_ERR_FORMAT, "sweep spec: unknown key \"%s\" in \"tasks\" (known: names, "
               "task_dir, limit, num_fewshot)", key);
    }
    names = json_object_get(t, "names");
    json_t *d = json_object_get(t, "task_dir");
    QZ_CHECK(!d || json_is_string(d), QZ_ERR_FORMAT, "sweep spec: tasks.task_dir must be a string");
    if (d) {
      k->dir = resolve(dir, json_string_value(d));
      QZ_CHECK(k->dir, QZ_ERR_MEM, "out of memory");
      json_object_set_new(t, "task_dir", json_string(k->dir));
    }
    QZ_CALL(get_long(t, "limit", "tasks", 1, LONG_MAX, 0, &k->limit));
    QZ_CALL(get_long(t, "num_fewshot", "tasks", 0, 1000, 0, &k->num_fewshot));
  }
  QZ_CHECK(json_is_array(names) && json_array_size(names) > 0, QZ_ERR_FORMAT,
           "sweep spec: \"tasks\" must be a list of task names or {\"names\": [...], "
           "\"task_dir\": DIR, \"limit\": N, \"num_fewshot\": K}");
  k->n = (int)json_array_size(names);
  k->names = calloc((size_t)k->n, sizeof *k->names);
  QZ_CHECK(k->names, QZ_ERR_MEM, "out of memory");
  for (int i = 0; i < k->n; i++) {
    json_t *v = json_array_get(names, (size_t)i);
    QZ_CHECK(json_is_string(v) && json_string_length(v) > 0, QZ_ERR_FORMAT,
             "sweep spec: tasks[%d] must be a non-empty string", i);
    const char *n = json_string_value(v);
    size_t l = strlen(n);
    int path = strchr(n, '/') || (l > 6 && strcmp(n + l - 6, ".jsonl") == 0);
    k->names[i] = path ? resolve(dir, n) : xstrdup(n);
    QZ_CHECK(k->names[i], QZ_ERR_MEM, "out of memory");
    json_array_set_new(names, (size_t)i, json_string(k->names[i])); /* absolute for Slurm */
    QZ_CHECK(!strchr(k->names[i], ','), QZ_ERR_FORMAT, "sweep spec: tasks[%d] '%s' contains a ','",
             i, n);
  }
  return QZ_OK;
}

static int int_axis(json_t *doc, const char *key, json_t *dflt, long lo, long hi,
                    long **vals, int *n) {
  json_t *a = as_array(json_object_get(doc, key), dflt);
  int st = QZ_OK;
  *n = (int)json_array_size(a);
  *vals = calloc((size_t)*n + 1, sizeof **vals);
  QZ_CHECK_DONE(*vals, QZ_ERR_MEM, "out of memory");
  for (int i = 0; i < *n; i++) {
    json_t *v = json_array_get(a, (size_t)i);
    if (json_is_boolean(v) && lo == 0 && hi == 1) {
      (*vals)[i] = json_is_true(v);
      continue;
    }
    QZ_CHECK_DONE(json_is_integer(v), QZ_ERR_FORMAT,
                  "sweep spec: \"%s\" entries must be %s", key,
                  hi == 1 ? "true/false" : "integers");
    long x = (long)json_integer_value(v);
    QZ_CHECK_DONE(x >= lo && x <= hi && (strcmp(key, "groups") != 0 || x != 0),
                  QZ_ERR_FORMAT, "sweep spec: \"%s\" has %ld, expected %s", key, x,
                  strcmp(key, "groups") == 0 ? "-1 (per channel) or a group size >= 1"
                                             : strcmp(key, "bits") == 0 ? "2..8"
                                                                        : "true/false");
    (*vals)[i] = x;
  }
  QZ_CHECK_DONE(*n > 0, QZ_ERR_FORMAT, "sweep spec: \"%s\" is empty", key);
done:
  json_decref(a);
  return st;
}

static json_t *one(json_t *v) {
  json_t *a = json_array();
  json_array_append_new(a, v);
  return a;
}

static int add_point(qz_sweep_spec *s, int cap, qz_sweep_point p) {
  QZ_CHECK(s->npoints < cap, QZ_ERR_INTERNAL, "sweep: point table overflow");
  const char *model = s->models[p.model].name;
  int n;
  if (strcmp(p.method, "fp32") == 0) {
    n = snprintf(p.key, sizeof p.key, "%s__fp32", model);
  } else {
    char g[32];
    if (p.group < 0) snprintf(g, sizeof g, "gch");
    else snprintf(g, sizeof g, "g%ld", p.group);
    n = snprintf(p.key, sizeof p.key, "%s__%s-w%d-%s%s%s%s%s%s%s", model, p.method, p.bits, g,
                 p.grid ? "-" : "", p.grid ? qz_vgrid_name((qz_vgrid)p.grid) : "",
                 p.act_order ? "-act" : "", p.sym ? "-sym" : "", p.calib >= 0 ? "__" : "",
                 p.calib >= 0 ? s->calibs[p.calib].name : "");
  }
  QZ_CHECK(n > 0 && (size_t)n < sizeof p.key, QZ_ERR_FORMAT,
           "sweep spec: names too long for a point key (%d chars, limit %d)", n,
           QZ_SWEEP_KEY_MAX - 1);
  for (int i = 0; i < s->npoints; i++)
    QZ_CHECK(strcmp(s->points[i].key, p.key) != 0, QZ_ERR_FORMAT,
             "sweep spec: point %s appears twice (a value repeats in an axis)", p.key);
  p.index = s->npoints;
  s->points[s->npoints++] = p;
  return QZ_OK;
}

/* One entry of "methods": a registered method's name, or a variant
 * {"name": N, "method": M, "args": ["--opt", "value", ...]}: M with its own
 * options (rows of its table; the common ones are the sweep's axes) set
 * from args, listed as N. *o: the method's options with args applied,
 * before its check. Not collective. */
typedef struct {
  const qz_method_ops *ops;
  const char *label; /* the point's method column and key part */
  json_t *args;      /* borrowed from the spec, or NULL */
  qz_method_opts o;
} method_entry;

static int variant_args(int m, method_entry *e) {
  const qz_method_ops *ops = e->ops;
  for (size_t i = 0; e->args && i < json_array_size(e->args); i++) {
    const char *a = json_string_value(json_array_get(e->args, i));
    QZ_CHECK(a, QZ_ERR_FORMAT, "sweep spec: methods[%d].args[%zu] must be a string", m, i);
    int hv = 0;
    if (strncmp(a, "--", 2) == 0 && qz_rotcli_is_option(a + 2, &hv)) {
      /* a rotation (quantize --rotate ...): passed through, its value checked here */
      const char *v = hv ? json_string_value(json_array_get(e->args, ++i)) : NULL;
      QZ_CHECK(!hv || v, QZ_ERR_FORMAT, "sweep spec: methods[%d] (%s): %s needs a value "
               "(a string)", m, e->label, a);
      qz_rot_params scratch = {.act_clip = 1.0};
      int given = 0;
      QZ_CALL(qz_rotcli_option(a + 2, v, &scratch, &given));
      continue;
    }
    int r = strncmp(a, "--", 2) == 0 ? qz_method_row_find(ops, a + 2) : -1;
    const qz_opt *row = r >= 0 ? qz_method_row(ops, r) : NULL;
    QZ_CHECK(row && row >= ops->options && row < ops->options + ops->noptions &&
                 strcmp(row->name, "grid") != 0,
             QZ_ERR_FORMAT,
             "sweep spec: methods[%d] (%s): '%s' is not an option of --method %s or a "
             "rotation option that a variant may set (the common options --bits, --group, "
             "--sym, --act-order and --grid are the sweep's axes)", m, e->label, a, ops->name);
    const char *v = NULL;
    if (row->type != QZ_OPT_FLAG) {
      v = json_string_value(json_array_get(e->args, ++i));
      QZ_CHECK(v, QZ_ERR_FORMAT, "sweep spec: methods[%d] (%s): %s needs a value (a string)",
               m, e->label, a);
    }
    QZ_CALL(qz_method_opt_set(&e->o, r, v));
  }
  return QZ_OK;
}

static int parse_method_entry(json_t *j, int m, method_entry *e) {
  *e = (method_entry){0};
  const char *name = json_string_value(j);
  if (json_is_object(j)) {
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
      QZ_CHECK(!strcmp(k, "name") || !strcmp(k, "method") || !strcmp(k, "args"),
               QZ_ERR_FORMAT, "sweep spec: methods[%d]: unknown key \"%s\" (a variant is "
               "{\"name\", \"method\", \"args\"})", m, k);
    e->label = json_string_value(json_object_get(j, "name"));
    name = json_string_value(json_object_get(j, "method"));
    e->args = json_object_get(j, "args");
    char what[64];
    snprintf(what, sizeof what, "methods[%d]", m);
    QZ_CALL(check_name(what, e->label));
    QZ_CHECK(!e->args || json_is_array(e->args), QZ_ERR_FORMAT,
             "sweep spec: methods[%d].args must be an array of strings", m);
  }
  QZ_CHECK(name && strcmp(name, "fp32") != 0 && qz_method_find(name) &&
               (!e->label || strcmp(e->label, "fp32") != 0),
           QZ_ERR_FORMAT, "sweep spec: methods[%d] is not a method or a variant {\"name\", "
           "\"method\", \"args\"} of one (available: %s; the fp32 baseline is "
           "\"baseline\": true)", m, qz_method_names());
  e->ops = qz_method_find(name);
  if (!e->label) e->label = e->ops->name;
  e->o = qz_method_opts_for(e->ops);
  QZ_CALL(variant_args(m, e));
  return QZ_OK;
}

/* 1 when the method has a --grid row accepting grid `name`. */
static int method_has_grid(const qz_method_ops *ops, const char *name) {
  int i = qz_method_row_find(ops, "grid");
  const qz_opt *r = i >= 0 ? qz_method_row(ops, i) : NULL;
  for (int k = 0; r && r->type == QZ_OPT_CHOICE && r->choices[k]; k++)
    if (strcmp(r->choices[k], name) == 0) return 1;
  return 0;
}

/* The points of one method: the axes of the common options it uses (its
 * table's `uses`), its fixed values for the others (after its check), and
 * every calibration set when it needs calibration. Methods with a --grid
 * row get one set of points per entry of the "grids" axis (the others
 * theirs once); a codebook grid has 4-bit symmetric codes: its points take
 * no bits or sym axis. */
static int method_points(qz_sweep_spec *s, int cap, int mo, const method_entry *e,
                         const long *bits, int nb, const long *groups, int ng,
                         const long *act, int na, const long *sym, int ns,
                         const long *grids, int ngr) {
  const qz_method_ops *ops = e->ops;
  qz_method_opts d = e->o;
  QZ_CALL(ops->check ? ops->check(&d) : QZ_OK);
  const unsigned u = ops->uses;
  const int calib = (qz_method_needs(&d) & QZ_NEED_CALIB) != 0;
  const long d_bits = d.spec.bits, d_group = (long)d.spec.groupsize, d_act = 0,
             d_sym = d.spec.sym;
  const int has_grids = method_has_grid(ops, "int"); /* else: its own points once */
  for (int gr = 0; gr < (has_grids ? ngr : 1); gr++) {
    const int grid = has_grids ? (int)grids[gr] : 0;
    if (grid && !method_has_grid(ops, qz_vgrid_name((qz_vgrid)grid))) continue;
    for (int b = 0; b < (u & QZ_USES_BITS && !grid ? nb : 1); b++)
      for (int g = 0; g < (u & QZ_USES_GROUP ? ng : 1); g++)
        for (int a = 0; a < (u & QZ_USES_ACT_ORDER ? na : 1); a++)
          for (int y = 0; y < (u & QZ_USES_SYM && !grid ? ns : 1); y++)
            for (int c = 0; c < (calib ? s->ncalibs : 1); c++)
              QZ_CALL(add_point(
                  s, cap,
                  (qz_sweep_point){.model = mo, .method = e->label,
                                   .run_method = strcmp(e->label, ops->name) ? ops->name
                                                                            : NULL,
                                   .args = e->args,
                                   .bits = grid ? 4 : (int)(u & QZ_USES_BITS ? bits[b] : d_bits),
                                   .group = u & QZ_USES_GROUP ? groups[g] : d_group,
                                   .act_order = (int)(u & QZ_USES_ACT_ORDER ? act[a] : d_act),
                                   .sym = grid ? 0 : (int)(u & QZ_USES_SYM ? sym[y] : d_sym),
                                   .calib = calib ? c : -1, .grid = grid}));
  }
  return QZ_OK;
}

/* "grids": a name or an array of value grids (default ["int"]). */
static int grid_axis(json_t *doc, long **vals, int *n) {
  json_t *a = as_array(json_object_get(doc, "grids"), one(json_string("int")));
  int st = QZ_OK;
  *n = (int)json_array_size(a);
  *vals = calloc((size_t)*n + 1, sizeof **vals);
  QZ_CHECK_DONE(*vals, QZ_ERR_MEM, "out of memory");
  QZ_CHECK_DONE(*n > 0, QZ_ERR_FORMAT, "sweep spec: \"grids\" is empty");
  for (int i = 0; i < *n; i++) {
    const char *g = json_string_value(json_array_get(a, (size_t)i));
    int v = g ? qz_vgrid_from_name(g) : -1;
    QZ_CHECK_DONE(g && *g && (v == QZ_VGRID_INT || v == QZ_VGRID_NF4 || v == QZ_VGRID_FP4),
                  QZ_ERR_FORMAT, "sweep spec: \"grids\" entries must be \"int\", \"nf4\" or "
                  "\"fp4\", got %s", g ? g : "a non-string");
    for (int k = 0; k < i; k++)
      QZ_CHECK_DONE((*vals)[k] != v, QZ_ERR_FORMAT, "sweep spec: \"grids\" repeats \"%s\"", g);
    (*vals)[i] = v;
  }
done:
  json_decref(a);
  return st;
}

static int enumerate(qz_sweep_spec *s) {
  int st = QZ_OK;
  long *bits = NULL, *groups = NULL, *act = NULL, *sym = NULL, *grids = NULL;
  int nb = 0, ng = 0, na = 0, ns = 0, ngr = 0;
  json_t *methods = json_object_get(s->doc, "methods");
  int baseline = json_is_true(json_object_get(s->doc, "baseline"));
  json_t *bl = json_object_get(s->doc, "baseline");
  QZ_CHECK(!bl || json_is_boolean(bl), QZ_ERR_FORMAT,
           "sweep spec: \"baseline\" must be true or false");
  QZ_CHECK(methods ? json_is_array(methods) : baseline, QZ_ERR_FORMAT,
           "sweep spec %s: \"methods\" must be an array of method names (%s)",
           s->spec_path, qz_method_names());
  int nm = methods ? (int)json_array_size(methods) : 0;
  QZ_CHECK(nm > 0 || baseline, QZ_ERR_FORMAT,
           "sweep spec %s: no points: \"methods\" is empty and \"baseline\" is not true",
           s->spec_path);
  QZ_CALL_DONE(int_axis(s->doc, "bits", one(json_integer(4)), 2, 8, &bits, &nb));
  QZ_CALL_DONE(int_axis(s->doc, "groups", one(json_integer(128)), -1, 1L << 30, &groups, &ng));
  QZ_CALL_DONE(int_axis(s->doc, "act_order", one(json_false()), 0, 1, &act, &na));
  QZ_CALL_DONE(int_axis(s->doc, "sym", one(json_false()), 0, 1, &sym, &ns));
  QZ_CALL_DONE(grid_axis(s->doc, &grids, &ngr));
  int need_calib = 0;
  for (int m = 0; m < nm; m++) {
    method_entry e;
    QZ_CALL_DONE(parse_method_entry(json_array_get(methods, (size_t)m), m, &e));
    need_calib |= (qz_method_needs(&e.o) & QZ_NEED_CALIB) != 0;
  }
  QZ_CHECK_DONE(!need_calib || s->ncalibs > 0, QZ_ERR_FORMAT,
                "sweep spec %s: a method needs calibration data: add \"calibration\": "
                "{\"text\": FILE, \"nsamples\": N, \"seqlen\": L}", s->spec_path);
  int cap = s->nmodels * (1 + nm * (s->ncalibs + 1) * nb * ng * na * ns * ngr);
  s->points = calloc((size_t)cap, sizeof *s->points);
  QZ_CHECK_DONE(s->points, QZ_ERR_MEM, "out of memory (%d points)", cap);
  for (int mo = 0; mo < s->nmodels; mo++) {
    if (baseline)
      QZ_CALL_DONE(add_point(s, cap, (qz_sweep_point){.model = mo, .method = "fp32",
                                                      .bits = 32, .calib = -1}));
    for (int m = 0; m < nm; m++) {
      method_entry e;
      QZ_CALL_DONE(parse_method_entry(json_array_get(methods, (size_t)m), m, &e));
      QZ_CALL_DONE(method_points(s, cap, mo, &e, bits, nb, groups, ng, act, na, sym, ns, grids,
                                 ngr));
    }
  }
done:
  free(bits);
  free(groups);
  free(act);
  free(sym);
  free(grids);
  return st;
}

static int parse_rest(qz_sweep_spec *s) {
  json_t *qa = json_object_get(s->doc, "quantize_args");
  if (qa) {
    QZ_CHECK(json_is_array(qa), QZ_ERR_FORMAT,
             "sweep spec: \"quantize_args\" must be an array of strings, e.g. "
             "[\"--damp\", \"0.01\"]");
    s->nquantize_args = (int)json_array_size(qa);
    s->quantize_args = calloc((size_t)s->nquantize_args + 1, sizeof *s->quantize_args);
    QZ_CHECK(s->quantize_args, QZ_ERR_MEM, "out of memory");
    for (int i = 0; i < s->nquantize_args; i++) {
      const char *v = json_string_value(json_array_get(qa, (size_t)i));
      QZ_CHECK(v, QZ_ERR_FORMAT, "sweep spec: quantize_args[%d] must be a string", i);
      static const char *const owned[] = {"--model", "--calib", "--calib-tokens",
                                          "--nsamples", "--seqlen", "--method", "--bits",
                                          "--group", "--sym", "--act-order", "--out",
                                          "--resume", NULL};
      for (const char *const *o = owned; *o; o++)
        QZ_CHECK(strcmp(v, *o) != 0, QZ_ERR_FORMAT,
                 "sweep spec: quantize_args may not set %s (the sweep sets it per point)",
                 v);
      s->quantize_args[i] = strdup(v);
    }
  }
  json_t *k = json_object_get(s->doc, "keep_checkpoints");
  QZ_CHECK(!k || json_is_boolean(k), QZ_ERR_FORMAT,
           "sweep spec: \"keep_checkpoints\" must be true or false");
  s->keep_checkpoints = json_is_true(k);
  json_t *sl = json_object_get(s->doc, "slurm");
  QZ_CHECK(!sl || json_is_object(sl), QZ_ERR_FORMAT,
           "sweep spec: \"slurm\" must be an object of sbatch options, e.g. "
           "{\"ntasks\": 2, \"time\": \"01:00:00\"}");
  const char *key;
  json_t *v;
  if (sl)
    json_object_foreach(sl, key, v)
      QZ_CHECK(json_is_string(v) || json_is_integer(v), QZ_ERR_FORMAT,
               "sweep spec: slurm.%s must be a string or an integer", key);
  return QZ_OK;
}

int qz_sweep_spec_parse(const char *path, const char *text, qz_sweep_spec **out) {
  *out = NULL;
  int st = QZ_OK;
  qz_sweep_spec *s = calloc(1, sizeof *s);
  QZ_CHECK(s, QZ_ERR_MEM, "out of memory");
  char dir[PATH_MAX];
  {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    char *slash = strrchr(tmp, '/');
    if (slash) *(slash == tmp ? slash + 1 : slash) = '\0';
    else snprintf(tmp, sizeof tmp, ".");
    QZ_CHECK_DONE(realpath(tmp, dir), QZ_ERR_IO,
                  "sweep spec %s: cannot resolve its directory", path);
    char *base = default_name(path, 1);
    QZ_CHECK_DONE(base, QZ_ERR_MEM, "out of memory");
    QZ_CHECK_DONE(asprintf(&s->spec_path, "%s/%s", dir,
                           strrchr(path, '/') ? strrchr(path, '/') + 1 : path) > 0,
                  QZ_ERR_MEM, "out of memory");
    s->name = base;
  }
  json_error_t je;
  s->doc = json_loads(text, JSON_REJECT_DUPLICATES, &je);
  QZ_CHECK_DONE(s->doc, QZ_ERR_FORMAT, "sweep spec %s:%d:%d: %s", path, je.line,
                je.column, je.text);
  QZ_CHECK_DONE(json_is_object(s->doc), QZ_ERR_FORMAT,
                "sweep spec %s: the top level must be an object", path);
  {
    const char *k;
    json_t *v;
    json_object_foreach(s->doc, k, v) {
      int ok = k[0] == '_';
      for (const char *const *a = top_keys; *a; a++) ok |= strcmp(*a, k) == 0;
      QZ_CHECK_DONE(ok, QZ_ERR_FORMAT,
                    "sweep spec %s: unknown key \"%s\" (see docs/sweeps.md; keys "
                    "starting with '_' are comments)", path, k);
    }
  }
  json_t *nm = json_object_get(s->doc, "name");
  if (nm) {
    QZ_CHECK_DONE(json_is_string(nm), QZ_ERR_FORMAT, "sweep spec: \"name\" must be a string");
    free(s->name);
    s->name = strdup(json_string_value(nm));
    QZ_CHECK_DONE(s->name, QZ_ERR_MEM, "out of memory");
    QZ_CALL_DONE(check_name("sweep", s->name));
  }
  json_object_set_new(s->doc, "name", json_string(s->name));
  QZ_CALL_DONE(parse_models(s, dir));
  QZ_CALL_DONE(parse_calibs(s, dir));
  QZ_CALL_DONE(parse_tasks(s, dir));
  QZ_CALL_DONE(parse_evals(s, dir));
  QZ_CALL_DONE(parse_rest(s));
  QZ_CALL_DONE(enumerate(s));
  *out = s;
  s = NULL;
done:
  if (st != QZ_OK && !strstr(qz_error_message(), path)) qz_error_prefix("%s: ", path);
  qz_sweep_spec_destroy(&s);
  return st;
}

void qz_sweep_spec_destroy(qz_sweep_spec **sp) {
  if (!sp || !*sp) return;
  qz_sweep_spec *s = *sp;
  for (int i = 0; i < s->nmodels; i++) {
    free(s->models[i].name);
    free(s->models[i].path);
  }
  for (int i = 0; i < s->ncalibs; i++) {
    free(s->calibs[i].name);
    free(s->calibs[i].path);
  }
  for (int i = 0; i < s->nevals; i++) {
    free(s->evals[i].name);
    free(s->evals[i].path);
  }
  for (int i = 0; i < s->nquantize_args; i++) free(s->quantize_args[i]);
  free(s->quantize_args);
  free(s->models);
  free(s->calibs);
  free(s->evals);
  for (int i = 0; i < s->tasks.n; i++) free(s->tasks.names[i]);
  free(s->tasks.names);
  free(s->tasks.dir);
  free(s->points);
  free(s->name);
  free(s->spec_path);
  json_decref(s->doc);
  free(s);
  *sp = NULL;
}
