/* A method's option rows on a command line: long options, --help text,
 * validation and the options JSON, all generated from method.h's rows. */
#include "method_cli.h"

#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"

const char *qz_mcli_method_arg(int argc, char **argv, const char *def) {
  const char *m = def;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) break;
    if (strcmp(argv[i], "--method") == 0 && i + 1 < argc) m = argv[++i];
    else if (strncmp(argv[i], "--method=", 9) == 0) m = argv[i] + 9;
  }
  return m;
}

int qz_mcli_method(const char *cmd, const char *name, const qz_method_ops **ops,
                   qz_method_opts *o) {
  *ops = qz_method_find(name);
  QZ_CHECK(*ops, QZ_ERR_USAGE, "%s: unknown method '%s' (known: %s)", cmd, name ? name : "",
           qz_method_names());
  *o = qz_method_opts_for(*ops);
  return QZ_OK;
}

int qz_mcli_longopts(const struct option *base, const qz_method_opts *o,
                     struct option **out) {
  int nb = 0, nr = qz_method_nrows(o->ops);
  while (base[nb].name) nb++;
  struct option *l = calloc((size_t)(nb + nr + 1), sizeof *l);
  QZ_CHECK(l, QZ_ERR_MEM, "out of memory (option table)");
  memcpy(l, base, (size_t)nb * sizeof *l);
  int k = nb;
  for (int i = 0; i < nr; i++) {
    const qz_opt *r = qz_method_row(o->ops, i);
    if (!r->name) continue;
    l[k++] = (struct option){r->name, r->type == QZ_OPT_FLAG ? no_argument : required_argument,
                             NULL, QZ_MCLI_VAL + i};
  }
  *out = l;
  return QZ_OK;
}

int qz_mcli_handle(const char *cmd, qz_method_opts *o, int c, const char *arg) {
  int st = qz_method_opt_set(o, c - QZ_MCLI_VAL, arg);
  if (st != QZ_OK) qz_error_prefix("%s: ", cmd);
  return st;
}

int qz_mcli_unknown(const char *cmd, const qz_method_opts *o, const char *arg) {
  char name[64];
  const char *a = arg ? arg : "";
  snprintf(name, sizeof name, "%s", strncmp(a, "--", 2) == 0 ? a + 2 : a);
  char *eq = strchr(name, '=');
  if (eq) *eq = '\0';
  for (int m = 0; qz_method_at(m); m++) {
    const qz_method_ops *ops = qz_method_at(m);
    for (int i = 0; i < ops->noptions; i++)
      if (ops->options[i].name && strcmp(ops->options[i].name, name) == 0 && ops != o->ops)
        QZ_FAIL(QZ_ERR_USAGE, "%s: --%s needs --method %s (not %s)", cmd, name, ops->name,
                o->ops ? o->ops->name : "?");
  }
  QZ_FAIL(QZ_ERR_USAGE, "%s: unknown or incomplete option '%s' (see mpiquant %s --help)", cmd,
          a, cmd);
}

int qz_mcli_finish(const char *cmd, qz_method_opts *o) {
  if (!o->ops || !o->ops->check) return QZ_OK;
  int st = o->ops->check(o);
  if (st != QZ_OK) qz_error_prefix("%s: ", cmd);
  return st;
}

/* One option's help: "  --name META" padded to 23 columns, the text
 * wrapped at 79. */
static void usage_row(FILE *f, const qz_opt *r) {
  char head[96], meta[80] = "";
  if (r->type == QZ_OPT_CHOICE) {
    size_t len = 0;
    for (int k = 0; r->choices[k] && len < sizeof meta; k++)
      len += (size_t)snprintf(meta + len, sizeof meta - len, "%s%s", k ? "|" : "",
                              r->choices[k]);
  } else if (r->type != QZ_OPT_FLAG) {
    snprintf(meta, sizeof meta, "%s", r->metavar ? r->metavar : "V");
  }
  snprintf(head, sizeof head, "  --%s%s%s", r->name, meta[0] ? " " : "", meta);
  fprintf(f, "%-22s", head);
  int col = (int)strlen(head) < 22 ? 22 : (int)strlen(head);
  if (col > 22) {
    fprintf(f, "\n%-22s", "");
    col = 22;
  }
  const char *t = r->help ? r->help : "";
  while (*t) {
    const char *sp = strchr(t, ' ');
    int wl = sp ? (int)(sp - t) : (int)strlen(t);
    if (col + 1 + wl > 79 && col > 22) {
      fprintf(f, "\n%-22s", "");
      col = 22;
    }
    fprintf(f, " %.*s", wl, t);
    col += 1 + wl;
    t += wl;
    while (*t == ' ') t++;
  }
  fputc('\n', f);
}

/* 1 when a listed method before the m-th has a row --name (rows several
 * methods share, e.g. --grid of rtn and gptq, are listed once). */
static int listed_before(int m, const char *name) {
  for (int k = 0; k < m; k++) {
    const qz_method_ops *o = qz_method_at(k);
    for (int i = 0; !(o->flags & QZ_METHOD_HIDDEN) && i < o->noptions; i++)
      if (o->options[i].name && strcmp(o->options[i].name, name) == 0) return 1;
  }
  return 0;
}

void qz_mcli_usage(FILE *f, const char *method_default) {
  fprintf(f, "  --method M           ");
  for (int m = 0, k = 0; qz_method_at(m); m++)
    if (!(qz_method_at(m)->flags & QZ_METHOD_HIDDEN))
      fprintf(f, "%s%s", k++ ? " | " : "", qz_method_at(m)->name);
  if (method_default) fprintf(f, " (default %s)", method_default);
  fputc('\n', f);
  for (int i = 0; i < qz_method_nrows(NULL); i++) usage_row(f, qz_method_row(NULL, i));
  for (int m = 0; qz_method_at(m); m++) {
    const qz_method_ops *ops = qz_method_at(m);
    if (ops->flags & QZ_METHOD_HIDDEN) continue;
    for (int i = 0; i < ops->noptions; i++)
      if (ops->options[i].name && !listed_before(m, ops->options[i].name))
        usage_row(f, &ops->options[i]);
  }
}

static json_t *row_json(const qz_method_opts *o, int i) {
  const qz_opt *r = qz_method_row(o->ops, i);
  double v = qz_method_opt_value(o, i);
  switch (r->type) {
    case QZ_OPT_FLAG: return json_boolean(v != 0);
    case QZ_OPT_REAL: return json_real(v);
    case QZ_OPT_CHOICE: return json_string(r->choices[(int)v]);
    default: return json_integer((json_int_t)v);
  }
}

void qz_mcli_json(const qz_method_opts *o, json_t *j) {
  json_t *grp = NULL;
  if (o->ops && o->ops->json_group) grp = json_object();
  for (int i = 0; i < qz_method_nrows(o->ops); i++) {
    const qz_opt *r = qz_method_row(o->ops, i);
    if (!r->json) continue;
    if ((r->flags & QZ_OPT_JSON_SET) && qz_method_opt_value(o, i) == r->def) continue;
    json_t *dst = i >= qz_method_nrows(NULL) && grp ? grp : j;
    json_object_set_new(dst, r->json, row_json(o, i));
  }
  if (grp) json_object_set_new(j, o->ops->json_group, grp);
}
