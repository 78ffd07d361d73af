/* Registry of quantization methods (one line per method) and the option
 * rows they share. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "mpiquant/method.h"

/* One line per method (hidden ones are reachable by name but not listed). */
#define QZ_METHOD_LIST(X) \
  X(rtn)                  \
  X(gptq)                 \
  X(quantease)            \
  X(awq)                  \
  X(smoothquant)          \
  X(fp8)                  \
  X(llm_int8)             \
  X(spqr)                 \
  X(none)                 \
  X(testclip)

#define QZ_DECLARE(m) extern const qz_method_ops qz_method_##m;
QZ_METHOD_LIST(QZ_DECLARE)
#define QZ_ENTRY(m) &qz_method_##m,
static const qz_method_ops *const registry[] = {QZ_METHOD_LIST(QZ_ENTRY) NULL};

#define BASE(f) .ext = 0, .offset = offsetof(qz_method_opts, f)

/* Every method accepts these and records them in the options JSON (the keys
 * checkpoints have always carried); ops->uses says which change its result. */
static const qz_opt common_rows[] = {
    {.name = "bits", .type = QZ_OPT_INT, BASE(spec.bits), .def = 4, .lo = 2, .hi = 8,
     .json = "bits", .metavar = "B", .help = "2..8 (default 4)"},
    {.name = "group", .type = QZ_OPT_INT64, BASE(spec.groupsize), .def = 128, .lo = -1,
     .hi = 1 << 30, .json = "group", .metavar = "G", .flags = QZ_OPT_NONZERO,
     .help = "group size along the input, -1 = per channel (128)"},
    {.name = "sym", .type = QZ_OPT_FLAG, BASE(spec.sym), .json = "sym",
     .help = "symmetric quantization (default asymmetric)"},
    {.name = "act-order", .type = QZ_OPT_FLAG, BASE(act_order), .json = "act_order",
     .help = "GPTQ: columns by descending Hessian diagonal"},
    {.name = "static-groups", .type = QZ_OPT_FLAG, BASE(static_groups),
     .json = "static_groups", .help = "GPTQ: group parameters from the unmodified weights"},
    {.name = "damp", .type = QZ_OPT_REAL, BASE(percdamp), .def = 0.01, .lo = 0, .hi = 10,
     .json = "damp", .metavar = "F",
     .help = "GPTQ relative damping (default 0.01); raised along a x10 ladder when a "
             "Hessian is not positive definite"},
    {.name = "blocksize", .type = QZ_OPT_INT, BASE(blocksize), .def = 128, .lo = 1,
     .hi = 1 << 20, .json = "blocksize", .metavar = "B",
     .help = "GPTQ lazy-batch width (default 128)"},
};
#define NCOMMON ((int)(sizeof common_rows / sizeof common_rows[0]))

int qz_method_nrows(const qz_method_ops *ops) {
  return NCOMMON + (ops ? ops->noptions : 0);
}

const qz_opt *qz_method_row(const qz_method_ops *ops, int i) {
  if (i < 0) return NULL;
  if (i < NCOMMON) return &common_rows[i];
  return ops && i - NCOMMON < ops->noptions ? &ops->options[i - NCOMMON] : NULL;
}

int qz_method_row_find(const qz_method_ops *ops, const char *name) {
  for (int i = 0; i < qz_method_nrows(ops); i++) {
    const qz_opt *r = qz_method_row(ops, i);
    if (r->name && strcmp(r->name, name) == 0) return i;
  }
  return -1;
}

static void *field(qz_method_opts *o, const qz_opt *r) {
  return (unsigned char *)(r->ext ? (void *)o->ext : (void *)o) + r->offset;
}

static void store(qz_method_opts *o, const qz_opt *r, double v) {
  void *p = field(o, r);
  int iv = (int)v;
  int64_t lv = (int64_t)v;
  switch (r->type) {
    case QZ_OPT_FLAG: case QZ_OPT_INT: case QZ_OPT_CHOICE: memcpy(p, &iv, sizeof iv); break;
    case QZ_OPT_INT64: memcpy(p, &lv, sizeof lv); break;
    case QZ_OPT_REAL: memcpy(p, &v, sizeof v); break;
    case QZ_OPT_CONST: break;
  }
}

double qz_method_opt_value(const qz_method_opts *o, int i) {
  const qz_opt *r = qz_method_row(o->ops, i);
  const void *p = field((qz_method_opts *)o, r);
  int iv;
  int64_t lv;
  double dv;
  switch (r->type) {
    case QZ_OPT_INT64: memcpy(&lv, p, sizeof lv); return (double)lv;
    case QZ_OPT_REAL: memcpy(&dv, p, sizeof dv); return dv;
    case QZ_OPT_CONST: return r->def;
    default: memcpy(&iv, p, sizeof iv); return iv;
  }
}

static void apply_defaults(qz_method_opts *o, const qz_method_ops *ops, int ext) {
  for (int i = 0; i < qz_method_nrows(ops); i++) {
    const qz_opt *r = qz_method_row(ops, i);
    if (r->ext == ext) store(o, r, r->def);
  }
}

qz_method_opts qz_method_opts_default(void) {
  qz_method_opts o;
  memset(&o, 0, sizeof o);
  apply_defaults(&o, NULL, 0);
  for (int m = 0; registry[m]; m++) apply_defaults(&o, registry[m], 0);
  o.percdamp_max = 1.0;
  return o;
}

qz_method_opts qz_method_opts_for(const qz_method_ops *ops) {
  qz_method_opts o = qz_method_opts_default();
  o.ops = ops;
  apply_defaults(&o, ops, 0);
  apply_defaults(&o, ops, 1);
  return o;
}

static int set_choice(qz_method_opts *o, const qz_opt *r, const char *val) {
  char list[256] = "";
  size_t len = 0;
  for (int k = 0; r->choices[k]; k++) {
    if (strcmp(val, r->choices[k]) == 0) {
      store(o, r, k);
      return QZ_OK;
    }
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s",
                            k == 0 ? "" : r->choices[k + 1] ? ", " : " or ", r->choices[k]);
    if (len >= sizeof list) len = sizeof list - 1;
  }
  QZ_FAIL(QZ_ERR_USAGE, "--%s must be %s, got '%s'", r->name, list, val);
}

int qz_method_opt_set(qz_method_opts *o, int i, const char *val) {
  const qz_opt *r = qz_method_row(o->ops, i);
  QZ_CHECK(r && r->type != QZ_OPT_CONST, QZ_ERR_INTERNAL, "option row %d", i);
  if (r->type == QZ_OPT_FLAG) {
    store(o, r, !(int)r->def);
  } else if (r->type == QZ_OPT_CHOICE) {
    QZ_CALL(set_choice(o, r, val ? val : ""));
  } else {
    char *end = NULL;
    errno = 0;
    double v = r->type == QZ_OPT_REAL ? strtod(val ? val : "", &end)
                                      : (double)strtoll(val ? val : "", &end, 10);
    QZ_CHECK(val && *val && end && *end == '\0' && errno == 0 && isfinite(v), QZ_ERR_USAGE,
             "--%s expects %s, got '%s'", r->name,
             r->type == QZ_OPT_REAL ? "a number" : "an integer", val ? val : "");
    QZ_CHECK(v >= r->lo && v <= r->hi, QZ_ERR_USAGE, "--%s must be in [%g, %g], got %g",
             r->name, r->lo, r->hi, v);
    QZ_CHECK(!(r->flags & QZ_OPT_NONZERO) || v != 0, QZ_ERR_USAGE,
             "--%s must be %g or >= 1, got 0", r->name, r->lo);
    store(o, r, v);
  }
  if (i < 64) o->given |= 1ull << i;
  return QZ_OK;
}

int qz_method_opt_given(const qz_method_opts *o, const char *name) {
  int i = qz_method_row_find(o->ops, name);
  return i >= 0 && i < 64 && (o->given >> i & 1u);
}

const qz_method_ops *qz_method_find(const char *name) {
  for (int i = 0; name && registry[i]; i++)
    if (strcmp(registry[i]->name, name) == 0) return registry[i];
  return NULL;
}

const qz_method_ops *qz_method_find_label(const char *label) {
  for (int i = 0; label && registry[i]; i++) {
    const char *const *l = registry[i]->labels;
    if (!l && strcmp(registry[i]->name, label) == 0) return registry[i];
    for (; l && *l; l++)
      if (strcmp(*l, label) == 0) return registry[i];
  }
  return NULL;
}

const qz_method_ops *qz_method_at(int i) {
  int n = (int)(sizeof registry / sizeof registry[0]) - 1;
  return i >= 0 && i < n ? registry[i] : NULL;
}

const char *qz_method_names(void) {
  static char names[256];
  if (!names[0]) {
    size_t len = 0;
    for (int i = 0; registry[i]; i++)
      if (!(registry[i]->flags & QZ_METHOD_HIDDEN) && len < sizeof names)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", len ? ", " : "",
                                registry[i]->name);
  }
  return names;
}

unsigned qz_method_needs(const qz_method_opts *o) {
  return o->ops && o->ops->needs ? o->ops->needs(o) : 0u;
}

const char *qz_method_label(const qz_method_opts *o) {
  if (!o->ops) return "";
  return o->ops->label ? o->ops->label(o) : o->ops->name;
}

int qz_method_exports(const qz_method_ops *ops, const char *format) {
  for (const char *const *f = ops ? ops->exports : NULL; f && *f; f++)
    if (strcmp(*f, format) == 0) return 1;
  return 0;
}

int qz_layer_check_finite(const qz_layer *L) {
  const int64_t n = L->in_features;
  for (int64_t i = 0; i < L->nrows * n; i++)
    QZ_CHECK(isfinite(L->w[i]), QZ_ERR_NUMERIC, "%s: weight W[%lld, %lld] is not finite (%g)",
             L->name ? L->name : "layer", (long long)(L->row0 + i / n), (long long)(i % n),
             (double)L->w[i]);
  return QZ_OK;
}

void qz_layer_result_free(qz_layer_result *res) {
  qz_free(&res->codes);
  qz_free(&res->q);
  qz_free(&res->scale);
  qz_free(&res->zero);
  qz_free(&res->losses);
  qz_free(&res->g_idx);
  qz_free(&res->perm);
  qz_free(&res->objective);
  qz_free(&res->outlier_idx);
  qz_free(&res->outlier_val);
}

void qz_layer_result_plain(const qz_layer *L, int groupsize, qz_layer_result *res) {
  const int64_t n = L->in_features;
  for (int64_t j = 0; j < n; j++) {
    if (res->g_idx) res->g_idx[j] = groupsize <= 0 ? 0 : (int32_t)(j / groupsize);
    if (res->perm) res->perm[j] = (int32_t)j;
  }
  if (res->losses) memset(res->losses, 0, (size_t)L->nrows * sizeof(float));
  res->loss_local = 0;
  res->percdamp_used = 0;
  res->ndead = 0;
}

MPI_Comm qz_layer_comm(const qz_layer *L) {
  return L->comm == (MPI_Comm)0 || L->comm == MPI_COMM_NULL ? MPI_COMM_SELF : L->comm;
}
