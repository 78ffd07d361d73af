/* safetensors reader (single file, sharded index, model directory) and writer.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {k: v}},
 * then the data section; offsets are relative to its start.  Every offset is
 * checked against the file size and dtype x shape before anything is read,
 * so a damaged file gives an error naming the file and tensor instead of a
 * read out of bounds.  Files are mmapped; only touched pages are read. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpiquant/error.h"
#include "mpiquant/file.h"
#include "mpiquant/log.h"
#include "mpiquant/timing.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"
#include "mpiquant/threads.h"
#include "st_impl.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader assumes a little-endian host"
#endif

/* The reference implementation limits the header to 100 MB; a 405B index of
 * ~1000 tensors per shard is well below 1 MB. */
#define ST_MAX_HEADER (100LL * 1000 * 1000)

/* ---- dtypes --------------------------------------------------------------- */

static const struct {
  const char *name;
  int size;
  int is_float; /* convertible to f32 */
} dtype_traits[QZ_DT_COUNT] = {
    [QZ_DT_F64] = {"F64", 8, 1},      [QZ_DT_F32] = {"F32", 4, 1},
    [QZ_DT_F16] = {"F16", 2, 1},      [QZ_DT_BF16] = {"BF16", 2, 1},
    [QZ_DT_I64] = {"I64", 8, 0},      [QZ_DT_I32] = {"I32", 4, 0},
    [QZ_DT_I16] = {"I16", 2, 0},      [QZ_DT_I8] = {"I8", 1, 0},
    [QZ_DT_U8] = {"U8", 1, 0},        [QZ_DT_BOOL] = {"BOOL", 1, 0},
    [QZ_DT_U16] = {"U16", 2, 0},      [QZ_DT_U32] = {"U32", 4, 0},
    [QZ_DT_U64] = {"U64", 8, 0},      [QZ_DT_F8_E4M3] = {"F8_E4M3", 1, 0},
    [QZ_DT_F8_E5M2] = {"F8_E5M2", 1, 0},
};

const char *qz_dtype_name(qz_dtype dt) {
  return (unsigned)dt < QZ_DT_COUNT ? dtype_traits[dt].name : "?";
}
int qz_dtype_size(qz_dtype dt) {
  return (unsigned)dt < QZ_DT_COUNT ? dtype_traits[dt].size : 0;
}
int qz_dtype_is_float(qz_dtype dt) {
  return (unsigned)dt < QZ_DT_COUNT ? dtype_traits[dt].is_float : 0;
}
int qz_dtype_from_name(const char *name, qz_dtype *out) {
  for (int i = 0; i < QZ_DT_COUNT; i++)
    if (strcmp(name, dtype_traits[i].name) == 0) {
      *out = (qz_dtype)i;
      return 1;
    }
  return 0;
}

/* ---- exact half-precision conversions ----------------------------------- */

static float f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint32_t bits_from_f32(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

float qz_bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

float qz_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in f32 */
    float v = (float)mant * 0x1p-24f;
    return f32_from_bits(bits_from_f32(v) | sign);
  }
  if (exp == 31) /* inf / nan, payload kept */
    return f32_from_bits(sign | 0x7f800000u | (mant << 13));
  return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t qz_f32_to_bf16(float f) {
  uint32_t u = bits_from_f32(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) /* nan: keep it a (quiet) nan */
    return (uint16_t)((u >> 16) | 0x40);
  uint32_t lsb = (u >> 16) & 1;
  u += 0x7fffu + lsb; /* round to nearest, ties to even */
  return (uint16_t)(u >> 16);
}

uint16_t qz_f32_to_f16(float f) {
  uint32_t u = bits_from_f32(f);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* >= 65520: inf */
  if (a < 0x38800000u) { /* below 2^-14: f16 subnormal or zero */
    /* value / 2^-24 rounded to nearest even; exact since |f| < 2^-14 keeps
     * the scaled value below 1024 and the f32 product is exact */
    float v = f32_from_bits(a) * 0x1p24f;
    return (uint16_t)(sign | (uint16_t)nearbyintf(v));
  }
  uint32_t lsb = (a >> 13) & 1;
  a += 0xfffu + lsb;
  return (uint16_t)(sign | ((a - 0x38000000u) >> 13));
}

/* ---- reader --------------------------------------------------------------- */

typedef struct {
  char *path;
  const uint8_t *base; /* whole file (mmap or caller memory) */
  size_t size;
  int mapped;
  int64_t data_start; /* 8 + header length */
  int64_t data_len;
} st_file;

typedef struct {
  qz_tensor_info info; /* first: qz_st_info_at returns &t->info */
  int file;
  int64_t begin, end; /* within the file's data section */
} st_tensor;

struct qz_st {
  char *origin; /* what the user opened */
  st_file *files;
  int nfiles;
  st_tensor *t;
  int nt, cap;
  char **meta_k, **meta_v;
  int nmeta;
  int64_t bytes_read;
  qz_st_quant quant; /* hints from the model's quantization_config */
};

static int st_add_tensor(qz_st *st, st_tensor *out) {
  if (st->nt == st->cap) {
    int cap = st->cap ? 2 * st->cap : 64;
    st_tensor *t = realloc(st->t, (size_t)cap * sizeof *t);
    QZ_CHECK(t, QZ_ERR_MEM, "out of memory for %d tensor entries", cap);
    st->t = t;
    st->cap = cap;
  }
  st->t[st->nt++] = *out;
  return QZ_OK;
}

static void shape_str(const int64_t *shape, int ndim, char *buf, size_t len) {
  size_t o = 0;
  o += (size_t)snprintf(buf + o, len - o, "[");
  for (int d = 0; d < ndim && o < len; d++)
    o += (size_t)snprintf(buf + o, len - o, "%s%lld", d ? "," : "",
                          (long long)shape[d]);
  if (o < len) snprintf(buf + o, len - o, "]");
}

static int parse_entry(qz_st *st, int fi, const char *name, json_t *v) {
  const char *fname = st->files[fi].path;
  st_tensor t;
  memset(&t, 0, sizeof t);
  t.file = fi;
  QZ_CHECK(json_is_object(v), QZ_ERR_FORMAT,
           "%s: tensor '%s': header entry must be an object with dtype, shape "
           "and data_offsets", fname, name);
  json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
         *jo = json_object_get(v, "data_offsets");
  QZ_CHECK(json_is_string(jd), QZ_ERR_FORMAT,
           "%s: tensor '%s': missing or non-string 'dtype'", fname, name);
  QZ_CHECK(qz_dtype_from_name(json_string_value(jd), &t.info.dtype),
           QZ_ERR_FORMAT,
           "%s: tensor '%s': unknown dtype '%s' (known: F64 F32 F16 BF16 I64 "
           "I32 I16 I8 U8 BOOL U16 U32 U64 F8_E4M3 F8_E5M2)",
           fname, name, json_string_value(jd));
  QZ_CHECK(json_is_array(js), QZ_ERR_FORMAT,
           "%s: tensor '%s': missing or non-array 'shape'", fname, name);
  size_t nd = json_array_size(js);
  QZ_CHECK(nd <= QZ_ST_MAX_DIMS, QZ_ERR_UNSUPPORTED,
           "%s: tensor '%s': %zu dimensions, at most %d supported", fname, name,
           nd, QZ_ST_MAX_DIMS);
  t.info.ndim = (int)nd;
  int64_t nelem = 1;
  for (size_t d = 0; d < nd; d++) {
    json_t *e = json_array_get(js, d);
    QZ_CHECK(json_is_integer(e), QZ_ERR_FORMAT,
             "%s: tensor '%s': shape entry %zu is not an integer", fname, name,
             d);
    int64_t n = (int64_t)json_integer_value(e);
    QZ_CHECK(n >= 0, QZ_ERR_FORMAT,
             "%s: tensor '%s': shape dimension %zu is negative (%lld)", fname,
             name, d, (long long)n);
    t.info.shape[d] = n;
    QZ_CHECK(qz_mul_i64(nelem, n, &nelem), QZ_ERR_FORMAT,
             "%s: tensor '%s': shape has too many elements (int64 overflow at "
             "dimension %zu)", fname, name, d);
  }
  t.info.nelem = nelem;
  char shp[160];
  shape_str(t.info.shape, t.info.ndim, shp, sizeof shp);
  QZ_CHECK(qz_mul_i64(nelem, qz_dtype_size(t.info.dtype), &t.info.nbytes),
           QZ_ERR_FORMAT,
           "%s: tensor '%s': %s x %s bytes overflows int64", fname, name, shp,
           qz_dtype_name(t.info.dtype));
  QZ_CHECK(json_is_array(jo) && json_array_size(jo) == 2 &&
               json_is_integer(json_array_get(jo, 0)) &&
               json_is_integer(json_array_get(jo, 1)),
           QZ_ERR_FORMAT,
           "%s: tensor '%s': 'data_offsets' must be an array [begin, end] of "
           "two integers", fname, name);
  t.begin = (int64_t)json_integer_value(json_array_get(jo, 0));
  t.end = (int64_t)json_integer_value(json_array_get(jo, 1));
  QZ_CHECK(t.begin >= 0 && t.end >= t.begin, QZ_ERR_FORMAT,
           "%s: tensor '%s': data_offsets [%lld, %lld] must satisfy 0 <= begin "
           "<= end", fname, name, (long long)t.begin, (long long)t.end);
  QZ_CHECK(t.end - t.begin == t.info.nbytes, QZ_ERR_FORMAT,
           "%s: tensor '%s': data_offsets [%lld, %lld] span %lld bytes, but "
           "dtype %s x shape %s needs %lld bytes",
           fname, name, (long long)t.begin, (long long)t.end,
           (long long)(t.end - t.begin), qz_dtype_name(t.info.dtype), shp,
           (long long)t.info.nbytes);
  QZ_CHECK(t.end <= st->files[fi].data_len, QZ_ERR_FORMAT,
           "%s: tensor '%s': data ends at offset %lld but the data section has "
           "only %lld bytes (truncated file?)", fname, name, (long long)t.end,
           (long long)st->files[fi].data_len);
  t.info.name = strdup(name);
  QZ_CHECK(t.info.name, QZ_ERR_MEM, "out of memory");
  t.info.file = fname;
  int rc = st_add_tensor(st, &t);
  if (rc) free((char *)t.info.name);
  return rc;
}

static int cmp_range(const void *a, const void *b) {
  const st_tensor *x = *(st_tensor *const *)a, *y = *(st_tensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

/* Data ranges of one file must tile [0, data_len) exactly: no overlap, no
 * gap, nothing left over (as the format requires). */
static int check_coverage(qz_st *st, int fi, int first) {
  const st_file *f = &st->files[fi];
  int n = st->nt - first, st_ = QZ_OK;
  st_tensor **v = NULL;
  QZ_CALL(qz_alloc((size_t)n, sizeof *v, "safetensors coverage", &v));
  for (int i = 0; i < n; i++) v[i] = &st->t[first + i];
  if (n > 1) qsort(v, (size_t)n, sizeof *v, cmp_range);
  int64_t pos = 0;
  for (int i = 0; i < n; i++) {
    if (v[i]->begin < pos) {
      st_ = qz_error_set(
          QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
          "%s: tensors '%s' [%lld, %lld) and '%s' [%lld, %lld) overlap",
          f->path, v[i - 1]->info.name, (long long)v[i - 1]->begin,
          (long long)v[i - 1]->end, v[i]->info.name, (long long)v[i]->begin,
          (long long)v[i]->end);
      goto done;
    }
    if (v[i]->begin > pos) {
      st_ = qz_error_set(
          QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
          "%s: gap of %lld bytes before tensor '%s': data must be contiguous "
          "(expected offset %lld, found %lld)",
          f->path, (long long)(v[i]->begin - pos), v[i]->info.name,
          (long long)pos, (long long)v[i]->begin);
      goto done;
    }
    pos = v[i]->end;
  }
  if (pos != f->data_len)
    st_ = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                       "%s: %lld trailing bytes after the last tensor are not "
                       "covered by any tensor (data section %lld bytes, "
                       "tensors end at %lld)",
                       f->path, (long long)(f->data_len - pos),
                       (long long)f->data_len, (long long)pos);
done:
  qz_free(&v);
  return st_;
}

static int parse_metadata(qz_st *st, const char *fname, json_t *m) {
  QZ_CHECK(json_is_object(m), QZ_ERR_FORMAT,
           "%s: '__metadata__' must be an object of strings", fname);
  size_t n = json_object_size(m);
  st->meta_k = calloc(n + 1, sizeof *st->meta_k);
  st->meta_v = calloc(n + 1, sizeof *st->meta_v);
  QZ_CHECK(st->meta_k && st->meta_v, QZ_ERR_MEM, "out of memory");
  const char *k;
  json_t *v;
  json_object_foreach(m, k, v) {
    QZ_CHECK(json_is_string(v), QZ_ERR_FORMAT,
             "%s: '__metadata__' value of '%s' is not a string", fname, k);
    st->meta_k[st->nmeta] = strdup(k);
    st->meta_v[st->nmeta] = strdup(json_string_value(v));
    QZ_CHECK(st->meta_k[st->nmeta] && st->meta_v[st->nmeta], QZ_ERR_MEM,
             "out of memory");
    st->nmeta++;
  }
  return QZ_OK;
}

/* Parse the header of files[fi] (base/size already set). */
static int parse_file(qz_st *st, int fi, int want_meta) {
  st_file *f = &st->files[fi];
  QZ_CHECK(f->size >= 8, QZ_ERR_FORMAT,
           "%s: file is %zu bytes, too small for a safetensors file (8-byte "
           "header length first)", f->path, f->size);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++) hlen |= (uint64_t)f->base[i] << (8 * i);
  QZ_CHECK(hlen <= (uint64_t)ST_MAX_HEADER, QZ_ERR_FORMAT,
           "%s: header length %llu is larger than the limit of %lld bytes "
           "(not a safetensors file?)", f->path, (unsigned long long)hlen,
           (long long)ST_MAX_HEADER);
  QZ_CHECK(hlen <= f->size - 8, QZ_ERR_FORMAT,
           "%s: header length %llu exceeds the file size %zu (truncated file "
           "or not a safetensors file)", f->path, (unsigned long long)hlen,
           f->size);
  f->data_start = 8 + (int64_t)hlen;
  f->data_len = (int64_t)f->size - f->data_start;
  json_error_t jerr;
  json_t *root = json_loadb((const char *)f->base + 8, (size_t)hlen,
                            JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    if (strstr(jerr.text, "duplicate"))
      QZ_FAIL(QZ_ERR_FORMAT, "%s: duplicate tensor name in header (%s)",
              f->path, jerr.text);
    QZ_FAIL(QZ_ERR_FORMAT,
            "%s: header is not valid JSON: %s (header byte %d, line %d column "
            "%d)", f->path, jerr.text, jerr.position, jerr.line, jerr.column);
  }
  int rc = QZ_OK, first = st->nt;
  if (!json_is_object(root)) {
    rc = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                      "%s: header must be a JSON object", f->path);
    goto done;
  }
  const char *k;
  json_t *v;
  json_object_foreach(root, k, v) {
    if (strcmp(k, "__metadata__") == 0) {
      if (want_meta) {
        rc = parse_metadata(st, f->path, v);
        if (rc) goto done;
      }
      continue;
    }
    rc = parse_entry(st, fi, k, v);
    if (rc) goto done;
  }
  rc = check_coverage(st, fi, first);
done:
  json_decref(root);
  if (rc) qz_error_trace(__FILE__, __LINE__, __func__);
  return rc;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(((const st_tensor *)a)->info.name,
                ((const st_tensor *)b)->info.name);
}

static int st_finalize(qz_st *st) {
  if (st->nt > 1) qsort(st->t, (size_t)st->nt, sizeof *st->t, cmp_name);
  for (int i = 1; i < st->nt; i++)
    QZ_CHECK(strcmp(st->t[i].info.name, st->t[i - 1].info.name) != 0,
             QZ_ERR_FORMAT, "tensor '%s' appears twice: in %s and in %s",
             st->t[i].info.name, st->t[i - 1].info.file, st->t[i].info.file);
  /* info.file points into files[]; names are stable */
  return QZ_OK;
}

static qz_st *st_new(const char *origin) {
  qz_st *st = calloc(1, sizeof *st);
  if (!st) return NULL;
  st->origin = strdup(origin);
  if (!st->origin) {
    free(st);
    return NULL;
  }
  return st;
}

static int st_add_files(qz_st *st, int n) {
  st->files = calloc((size_t)n, sizeof *st->files);
  QZ_CHECK(st->files, QZ_ERR_MEM, "out of memory");
  st->nfiles = n;
  return QZ_OK;
}

static int map_file(st_file *f) {
  int fd;
  int64_t size;
  QZ_CALL(qz_file_open_input(f->path, &fd, &size));
  f->size = (size_t)size;
  if (f->size == 0) {
    close(fd);
    static const uint8_t empty[1] = {0};
    f->base = empty;
    return QZ_OK;
  }
  void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  close(fd);
  QZ_CHECK(p != MAP_FAILED, QZ_ERR_IO, "cannot mmap %s (%zu bytes): %s",
           f->path, f->size, strerror(e));
  f->base = p;
  f->mapped = 1;
  return QZ_OK;
}

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

static int is_dir(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}
static int exists(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0;
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static int open_single(qz_st *st, const char *path) {
  QZ_CALL(st_add_files(st, 1));
  st->files[0].path = strdup(path);
  QZ_CHECK(st->files[0].path, QZ_ERR_MEM, "out of memory");
  QZ_CALL(map_file(&st->files[0]));
  QZ_CALL(parse_file(st, 0, 1));
  QZ_CALL(st_finalize(st));
  return QZ_OK;
}

/* A shard name from the index: a plain relative file name, no "..". */
static int safe_shard_name(const char *s) {
  if (!*s || s[0] == '/') return 0;
  for (const char *p = s; *p; p++)
    if (p[0] == '.' && p[1] == '.' && (p == s || p[-1] == '/') &&
        (p[2] == '/' || p[2] == 0))
      return 0;
  return 1;
}

static int open_index(qz_st *st, const char *path) {
  int rc = QZ_OK;
  json_error_t jerr;
  QZ_CALL(qz_file_check_input(path));
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
  char *dir = strdup(path);
  if (!dir) {
    rc = qz_error_set(QZ_ERR_MEM, __FILE__, __LINE__, __func__, "oom");
    goto done;
  }
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  else strcpy(dir, ".");
  if (!root) {
    rc = qz_error_set(exists(path) ? QZ_ERR_FORMAT : QZ_ERR_IO, __FILE__,
                      __LINE__, __func__,
                      "%s: cannot read the shard index: %s (line %d column %d)",
                      path, jerr.text, jerr.line, jerr.column);
    goto done;
  }
  json_t *wm = json_object_get(root, "weight_map");
  if (!json_is_object(wm) || json_object_size(wm) == 0) {
    rc = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                      "%s: missing or empty 'weight_map' object", path);
    goto done;
  }
  /* distinct shard names, in first-seen order */
  size_t nw = json_object_size(wm);
  const char **shards = calloc(nw, sizeof *shards);
  if (!shards) {
    rc = qz_error_set(QZ_ERR_MEM, __FILE__, __LINE__, __func__, "oom");
    goto done;
  }
  int ns = 0;
  const char *k;
  json_t *v;
  json_object_foreach(wm, k, v) {
    if (!json_is_string(v) || !safe_shard_name(json_string_value(v))) {
      rc = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                        "%s: weight_map entry for tensor '%s' must be a "
                        "relative shard file name", path, k);
      goto shards_done;
    }
    const char *s = json_string_value(v);
    int found = 0;
    for (int i = 0; i < ns && !found; i++) found = strcmp(shards[i], s) == 0;
    if (!found) shards[ns++] = s;
  }
  rc = st_add_files(st, ns);
  if (rc) goto shards_done;
  for (int i = 0; i < ns; i++) {
    st_file *f = &st->files[i];
    f->path = join(dir, shards[i]);
    if (!f->path) {
      rc = qz_error_set(QZ_ERR_MEM, __FILE__, __LINE__, __func__, "oom");
      goto shards_done;
    }
    if (!exists(f->path)) {
      const char *first = "?";
      json_object_foreach(wm, k, v) if (strcmp(json_string_value(v), shards[i]) == 0) {
        first = k;
        break;
      }
      rc = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                        "%s: shard file %s (holding tensor '%s' per the index) "
                        "is missing", path, f->path, first);
      goto shards_done;
    }
    rc = map_file(f);
    if (!rc) rc = parse_file(st, i, i == 0);
    if (rc) goto shards_done;
  }
  rc = st_finalize(st);
  if (rc) goto shards_done;
  /* every index entry must be in the shard it names */
  json_object_foreach(wm, k, v) {
    const qz_tensor_info *ti = qz_st_find(st, k);
    const char *s = json_string_value(v);
    int fi = 0;
    while (fi < ns && strcmp(shards[fi], s) != 0) fi++;
    if (!ti) {
      rc = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                        "%s: the index maps tensor '%s' to %s, but that shard "
                        "does not contain it", path, k, st->files[fi].path);
      goto shards_done;
    }
    if (ti->file != st->files[fi].path) {
      rc = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                        "%s: the index maps tensor '%s' to %s, but it is in %s",
                        path, k, st->files[fi].path, ti->file);
      goto shards_done;
    }
  }
  if ((size_t)st->nt != nw)
    qz_warn("%s: shards hold %d tensors, the index lists %zu", path, st->nt,
            nw);
shards_done:
  free(shards);
done:
  free(dir);
  json_decref(root);
  if (rc) qz_error_trace(__FILE__, __LINE__, __func__);
  return rc;
}

int qz_st_open(const char *path, qz_st **out) {
  *out = NULL;
  QZ_CHECK(path && *path, QZ_ERR_ARG, "qz_st_open: empty path");
  qz_st *st = st_new(path);
  QZ_CHECK(st, QZ_ERR_MEM, "out of memory");
  int rc = QZ_OK;
  char *p = NULL;
  if (is_dir(path)) {
    p = join(path, "model.safetensors.index.json");
    if (p && exists(p)) {
      rc = open_index(st, p);
    } else {
      free(p);
      p = join(path, "model.safetensors");
      if (p && exists(p)) {
        rc = open_single(st, p);
      } else {
        rc = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                          "%s: no model.safetensors or "
                          "model.safetensors.index.json in this directory",
                          path);
      }
    }
  } else if (ends_with(path, ".json")) {
    rc = open_index(st, path);
  } else {
    rc = exists(path) ? open_single(st, path)
                      : qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                                     "cannot open %s: %s", path,
                                     strerror(ENOENT));
  }
  free(p);
  if (rc) {
    qz_error_trace(__FILE__, __LINE__, __func__);
    qz_st_close(&st);
    return rc;
  }
  *out = st;
  return QZ_OK;
}

int qz_st_open_memory(const void *buf, size_t len, const char *origin,
                      qz_st **out) {
  *out = NULL;
  qz_st *st = st_new(origin ? origin : "<memory>");
  QZ_CHECK(st, QZ_ERR_MEM, "out of memory");
  int rc = st_add_files(st, 1);
  if (!rc) {
    st->files[0].path = strdup(st->origin);
    st->files[0].base = buf;
    st->files[0].size = len;
    rc = st->files[0].path ? parse_file(st, 0, 1)
                           : qz_error_set(QZ_ERR_MEM, __FILE__, __LINE__,
                                          __func__, "oom");
  }
  if (!rc) rc = st_finalize(st);
  if (rc) {
    qz_error_trace(__FILE__, __LINE__, __func__);
    qz_st_close(&st);
    return rc;
  }
  *out = st;
  return QZ_OK;
}

void qz_st_close(qz_st **pst) {
  if (!pst || !*pst) return;
  qz_st *st = *pst;
  for (int i = 0; i < st->nt; i++) free((char *)st->t[i].info.name);
  free(st->t);
  for (int i = 0; i < st->nfiles; i++) {
    if (st->files[i].mapped)
      munmap((void *)st->files[i].base, st->files[i].size);
    free(st->files[i].path);
  }
  free(st->files);
  for (int i = 0; i < st->nmeta; i++) {
    free(st->meta_k[i]);
    free(st->meta_v[i]);
  }
  free(st->meta_k);
  free(st->meta_v);
  free(st->origin);
  free(st);
  *pst = NULL;
}

int qz_st_count(const qz_st *st) { return st ? st->nt : 0; }

const qz_tensor_info *qz_st_info_at(const qz_st *st, int i) {
  return st && i >= 0 && i < st->nt ? &st->t[i].info : NULL;
}

static const st_tensor *find_t(const qz_st *st, const char *name) {
  if (!st || !name) return NULL;
  int lo = 0, hi = st->nt - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2, c = strcmp(name, st->t[mid].info.name);
    if (c == 0) return &st->t[mid];
    if (c < 0) hi = mid - 1;
    else lo = mid + 1;
  }
  return NULL;
}

const qz_tensor_info *qz_st_find(const qz_st *st, const char *name) {
  const st_tensor *t = find_t(st, name);
  return t ? &t->info : NULL;
}

int qz_st_get(const qz_st *st, const char *name, const qz_tensor_info **out) {
  const st_tensor *t = find_t(st, name);
  QZ_CHECK(t, QZ_ERR_FORMAT, "tensor '%s' not found in %s (%d tensors in %d "
           "file%s)", name ? name : "(null)", st ? st->origin : "(null)",
           st ? st->nt : 0, st ? st->nfiles : 0,
           st && st->nfiles == 1 ? "" : "s");
  *out = &t->info;
  return QZ_OK;
}

int qz_st_data(const qz_st *st, const char *name, const void **data) {
  const qz_tensor_info *ti;
  QZ_CALL(qz_st_get(st, name, &ti));
  const st_tensor *t = (const st_tensor *)ti;
  const st_file *f = &st->files[t->file];
  *data = f->base + f->data_start + t->begin;
  return QZ_OK;
}

/* Drop this process's mapping of the whole pages inside [p, p + len) of a
 * mmapped file once their rows are converted: a read-only private file
 * mapping re-reads from the page cache if touched again, so nothing changes
 * but RSS, which otherwise grows by every byte read (1.8 GiB per rank for a
 * 70B block) and looks like a leak next to the real buffers. */
static void drop_pages(const st_file *f, const uint8_t *p, int64_t len) {
  if (!f->mapped || len <= 0) return;
  static long pg = 0;
  if (pg <= 0) pg = sysconf(_SC_PAGESIZE);
  if (pg <= 0) return;
  uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
  uintptr_t b = ((uintptr_t)p + (uintptr_t)len) & ~((uintptr_t)pg - 1);
  if (b > a) (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

/* ---- for the decoders beside their encoders (st_impl.h) ------------------ */

const uint8_t *qz_st_tensor_bytes(const qz_st *st, const qz_tensor_info *ti) {
  const st_tensor *t = (const st_tensor *)ti;
  const st_file *f = &st->files[t->file];
  return f->base + f->data_start + t->begin;
}

void qz_st_consumed(qz_st *st, const qz_tensor_info *ti, const uint8_t *p, int64_t len,
                    int64_t bytes) {
  if (p) drop_pages(&st->files[((const st_tensor *)ti)->file], p, len);
  __atomic_fetch_add(&st->bytes_read, bytes, __ATOMIC_RELAXED);
}

void qz_st_set_quant(qz_st *st, const qz_st_quant *q) {
  if (st) st->quant = q ? *q : (qz_st_quant){0};
}

const qz_st_quant *qz_st_quant_of(const qz_st *st) { return &st->quant; }

int qz_st_rows(const qz_st *st, const char *name, int64_t *rows, int64_t *rowlen) {
  const qz_tensor_info *ti = qz_st_find(st, name);
  if (ti) {
    *rows = ti->ndim == 0 ? 1 : ti->shape[0];
    *rowlen = *rows ? ti->nelem / *rows : 0;
    return QZ_OK;
  }
  int bits, found = 0;
  QZ_CALL(qz_ct_packed_shape(st, name, rows, rowlen, &found));
  if (found) return QZ_OK;
  return qz_st_gptq_shape(st, name, rows, rowlen, &bits);
}

int qz_st_weight_shape(const qz_st *st, const char *name, int64_t *out, int64_t *in,
                       const char **kind) {
  const char *k = "float";
  const qz_tensor_info *ti = qz_st_find(st, name);
  int found = 0, bits = 0;
  if (!ti) {
    QZ_CALL(qz_ct_packed_shape(st, name, out, in, &found));
    if (found) {
      k = "packed";
    } else {
      QZ_CALL(qz_st_gptq_shape(st, name, out, in, &bits));
      k = "gptq";
    }
  } else {
    QZ_CHECK(ti->ndim == 2, QZ_ERR_FORMAT, "%s: tensor '%s' has %d dimensions, expected a "
             "2-D [out, in] weight", ti->file, name, ti->ndim);
    *out = ti->shape[0];
    *in = ti->shape[1];
    qz_fp8_scale sc;
    QZ_CALL(qz_fp8_scale_of(st, ti, &sc));
    if (sc.t) k = "fp8";
    else if (qz_st_is_int8_scaled(st, name)) k = "int8";
    else
      QZ_CHECK(qz_dtype_is_float(ti->dtype), QZ_ERR_FORMAT,
               "%s: tensor '%s' has dtype %s, expected a float dtype (F32, F16, BF16, "
               "F64), I8 with a '%s_scale' or F8 with a scale", ti->file, name,
               qz_dtype_name(ti->dtype), name);
  }
  if (kind) *kind = k;
  return QZ_OK;
}

int qz_st_read_f32(qz_st *st, const char *name, int64_t row0, int64_t nrows,
                   float *dst /* [nrows, rowlen] */) {
  if (!qz_st_find(st, name)) {
    int k = 0;
    QZ_CALL(qz_ct_packed_read(st, name, row0, nrows, dst, &k));
    if (k) return QZ_OK;
    QZ_CALL(qz_gptq_v1_read(st, name, row0, nrows, dst, &k));
    if (k) return QZ_OK;
  }
  const qz_tensor_info *ti;
  QZ_CALL(qz_st_get(st, name, &ti));
  if (qz_st_is_int8_scaled(st, name)) return qz_ct_int8_read(st, ti, row0, nrows, dst);
  if (ti->dtype == QZ_DT_F8_E4M3 || ti->dtype == QZ_DT_F8_E5M2)
    return qz_fp8_read(st, ti, row0, nrows, dst);
  const st_tensor *t = (const st_tensor *)ti;
  QZ_CHECK(qz_dtype_is_float(ti->dtype), QZ_ERR_FORMAT,
           "%s: tensor '%s' has dtype %s, which cannot be converted to f32 "
           "(supported: F64, F32, F16, BF16; I8 with a '%s_scale' tensor; F8 with a "
           "scale)", ti->file, name, qz_dtype_name(ti->dtype), name);
  int64_t rows = ti->ndim == 0 ? 1 : ti->shape[0];
  int64_t rowlen = rows ? ti->nelem / rows : 0;
  QZ_CHECK(row0 >= 0 && nrows >= 0 && row0 <= rows && nrows <= rows - row0,
           QZ_ERR_ARG, "%s: tensor '%s': rows [%lld, %lld) requested, tensor "
           "has %lld rows", ti->file, name, (long long)row0,
           (long long)(row0 + nrows), (long long)rows);
  QZ_CHECK(dst || nrows == 0 || rowlen == 0, QZ_ERR_ARG, "NULL destination");
  int64_t n = nrows * rowlen, ds = qz_dtype_size(ti->dtype);
  const st_file *f = &st->files[t->file];
  const uint8_t *src = f->base + f->data_start + t->begin + row0 * rowlen * ds;
  switch (ti->dtype) {
  case QZ_DT_F32:
    memcpy(dst, src, (size_t)n * 4);
    break;
  /* element i by one thread (threads.h): identical at any thread count */
  case QZ_DT_F64:
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(n))
    for (int64_t i = 0; i < n; i++) {
      double d;
      memcpy(&d, src + 8 * i, 8);
      dst[i] = (float)d;
    }
    break;
  case QZ_DT_BF16:
  case QZ_DT_F16:
    qz_raw16_to_f32(ti->dtype, src, n, dst);
    break;
  default:
    QZ_FAIL(QZ_ERR_INTERNAL, "unhandled float dtype %s",
            qz_dtype_name(ti->dtype));
  }
  drop_pages(f, src, n * ds);
  __atomic_fetch_add(&st->bytes_read, n * ds, __ATOMIC_RELAXED); /* concurrent readers */
  qz_bytes_add(QZ_BYTES_FILE_READ, n * ds);
  return QZ_OK;
}

int qz_st_raw16_dtype(const qz_st *st, const char *name) {
  const qz_tensor_info *ti = qz_st_find(st, name);
  if (!ti || (ti->dtype != QZ_DT_BF16 && ti->dtype != QZ_DT_F16)) return -1;
  return (int)ti->dtype;
}

int qz_st_read_raw16(qz_st *st, const char *name, int64_t row0, int64_t nrows,
                     uint16_t *dst) {
  const qz_tensor_info *ti;
  QZ_CALL(qz_st_get(st, name, &ti));
  QZ_CHECK(ti->dtype == QZ_DT_BF16 || ti->dtype == QZ_DT_F16, QZ_ERR_ARG,
           "%s: tensor '%s' has dtype %s, expected BF16 or F16 for a raw 16-bit read",
           ti->file, name, qz_dtype_name(ti->dtype));
  const st_tensor *t = (const st_tensor *)ti;
  int64_t rows = ti->ndim == 0 ? 1 : ti->shape[0];
  int64_t rowlen = rows ? ti->nelem / rows : 0;
  QZ_CHECK(row0 >= 0 && nrows >= 0 && row0 <= rows && nrows <= rows - row0, QZ_ERR_ARG,
           "%s: tensor '%s': rows [%lld, %lld) requested, tensor has %lld rows", ti->file,
           name, (long long)row0, (long long)(row0 + nrows), (long long)rows);
  int64_t n = nrows * rowlen;
  const st_file *f = &st->files[t->file];
  const uint8_t *src = f->base + f->data_start + t->begin + row0 * rowlen * 2;
  if (n > 0) memcpy(dst, src, (size_t)n * 2);
  drop_pages(f, src, n * 2);
  __atomic_fetch_add(&st->bytes_read, n * 2, __ATOMIC_RELAXED);
  qz_bytes_add(QZ_BYTES_FILE_READ, n * 2);
  return QZ_OK;
}

static inline float raw16_one(int dt, uint16_t h) {
  return dt == QZ_DT_BF16 ? qz_bf16_to_f32(h) : qz_f16_to_f32(h);
}

void qz_raw16_to_f32(int dt, const void *src, int64_t n, float *dst) {
  const uint8_t *b = src;
  /* element i by one thread (threads.h): identical at any thread count */
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(n))
  for (int64_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, b + 2 * i, 2); /* (file data need not be 2-byte aligned) */
    dst[i] = raw16_one(dt, h);
  }
}

void qz_raw16_widen_inplace(int dt, void *buf, int64_t n) {
  /* the upper half [lo, hi) first, lo >= hi / 2: its writes [4 lo, 4 hi)
   * start at or above the end of its own 16-bit values [2 lo, 2 hi), so the
   * range converts like separate buffers; then the upper half of what is
   * left, whose values ([0, 2 lo) bytes) lie below every write so far */
  uint16_t *h = buf;
  float *f = buf;
  int64_t hi = n;
  while (hi > 4096) {
    int64_t lo = (hi + 1) / 2;
    qz_raw16_to_f32(dt, h + lo, hi - lo, f + lo);
    hi = lo;
  }
  /* the last few backwards: element i's write covers values >= 2i only */
  for (int64_t i = hi - 1; i >= 0; i--) f[i] = raw16_one(dt, h[i]);
}

int64_t qz_st_bytes_read(const qz_st *st) {
  return st ? __atomic_load_n(&st->bytes_read, __ATOMIC_RELAXED) : 0;
}

const char *qz_st_metadata(const qz_st *st, const char *key) {
  if (!st || !key) return NULL;
  for (int i = 0; i < st->nmeta; i++)
    if (strcmp(st->meta_k[i], key) == 0) return st->meta_v[i];
  return NULL;
}
int qz_st_metadata_count(const qz_st *st) { return st ? st->nmeta : 0; }
void qz_st_metadata_at(const qz_st *st, int i, const char **key,
                       const char **value) {
  int ok = st && i >= 0 && i < st->nmeta;
  if (key) *key = ok ? st->meta_k[i] : NULL;
  if (value) *value = ok ? st->meta_v[i] : NULL;
}
int qz_st_nfiles(const qz_st *st) { return st ? st->nfiles : 0; }
const char *qz_st_file_at(const qz_st *st, int i) {
  return st && i >= 0 && i < st->nfiles ? st->files[i].path : NULL;
}
const char *qz_st_origin(const qz_st *st) { return st ? st->origin : NULL; }

/* ---- writer --------------------------------------------------------------- */

typedef struct {
  char *name;
  qz_dtype dt;
  int ndim;
  int64_t shape[QZ_ST_MAX_DIMS];
  int64_t spill_off, nbytes;
} w_entry;

struct qz_st_writer {
  char *path, *tmp, *spill_path;
  FILE *spill;
  int64_t spill_len;
  w_entry *e;
  int n, cap;
  json_t *meta;
};

void qz_st_writer_abort(qz_st_writer **pw) {
  if (!pw || !*pw) return;
  qz_st_writer *w = *pw;
  if (w->spill) fclose(w->spill);
  if (w->spill_path) unlink(w->spill_path);
  if (w->tmp) unlink(w->tmp);
  for (int i = 0; i < w->n; i++) free(w->e[i].name);
  free(w->e);
  json_decref(w->meta);
  free(w->path);
  free(w->tmp);
  free(w->spill_path);
  free(w);
  *pw = NULL;
}

int qz_st_writer_create(const char *path, qz_st_writer **out) {
  *out = NULL;
  QZ_CHECK(path && *path, QZ_ERR_ARG, "qz_st_writer_create: empty path");
  qz_st_writer *w = calloc(1, sizeof *w);
  QZ_CHECK(w, QZ_ERR_MEM, "out of memory");
  size_t n = strlen(path) + 16;
  w->path = strdup(path);
  w->tmp = malloc(n);
  w->spill_path = malloc(n);
  w->meta = json_object();
  if (!w->path || !w->tmp || !w->spill_path || !w->meta) {
    qz_st_writer_abort(&w);
    QZ_FAIL(QZ_ERR_MEM, "out of memory");
  }
  snprintf(w->tmp, n, "%s.tmp", path);
  snprintf(w->spill_path, n, "%s.data.tmp", path);
  w->spill = fopen(w->spill_path, "w+b");
  if (!w->spill) {
    int e = errno;
    char msg[256];
    snprintf(msg, sizeof msg, "%s", w->spill_path);
    qz_st_writer_abort(&w);
    QZ_FAIL(QZ_ERR_IO, "cannot create %s: %s", msg, strerror(e));
  }
  *out = w;
  return QZ_OK;
}

int qz_st_writer_meta(qz_st_writer *w, const char *key, const char *value) {
  QZ_CHECK(w && key && value, QZ_ERR_ARG, "qz_st_writer_meta: NULL argument");
  QZ_CHECK(json_object_set_new(w->meta, key, json_string(value)) == 0,
           QZ_ERR_ARG, "%s: metadata '%s' is not valid UTF-8", w->path, key);
  return QZ_OK;
}

int qz_st_writer_add(qz_st_writer *w, const char *name, qz_dtype dt, int ndim,
                     const int64_t *shape, const void *data) {
  QZ_CHECK(w && name, QZ_ERR_ARG, "qz_st_writer_add: NULL argument");
  QZ_CHECK(strcmp(name, "__metadata__") != 0 && *name, QZ_ERR_ARG,
           "%s: invalid tensor name '%s'", w->path, name);
  QZ_CHECK((unsigned)dt < QZ_DT_COUNT, QZ_ERR_ARG, "%s: tensor '%s': bad dtype "
           "%d", w->path, name, (int)dt);
  QZ_CHECK(ndim >= 0 && ndim <= QZ_ST_MAX_DIMS, QZ_ERR_ARG,
           "%s: tensor '%s': ndim %d out of range", w->path, name, ndim);
  for (int i = 0; i < w->n; i++)
    QZ_CHECK(strcmp(w->e[i].name, name) != 0, QZ_ERR_ARG,
             "%s: tensor '%s' added twice", w->path, name);
  w_entry e;
  memset(&e, 0, sizeof e);
  e.dt = dt;
  e.ndim = ndim;
  int64_t nel = 1;
  for (int d = 0; d < ndim; d++) {
    QZ_CHECK(shape[d] >= 0 && qz_mul_i64(nel, shape[d], &nel), QZ_ERR_ARG,
             "%s: tensor '%s': bad shape", w->path, name);
    e.shape[d] = shape[d];
  }
  QZ_CHECK(qz_mul_i64(nel, qz_dtype_size(dt), &e.nbytes), QZ_ERR_ARG,
           "%s: tensor '%s': size overflows", w->path, name);
  QZ_CHECK(data || e.nbytes == 0, QZ_ERR_ARG, "%s: tensor '%s': NULL data",
           w->path, name);
  e.spill_off = w->spill_len;
  if (e.nbytes)
    QZ_CHECK(fwrite(data, 1, (size_t)e.nbytes, w->spill) == (size_t)e.nbytes,
             QZ_ERR_IO, "%s: writing %lld bytes of tensor '%s' failed: %s",
             w->spill_path, (long long)e.nbytes, name, strerror(errno));
  if (w->n == w->cap) {
    int cap = w->cap ? 2 * w->cap : 64;
    w_entry *ne = realloc(w->e, (size_t)cap * sizeof *ne);
    QZ_CHECK(ne, QZ_ERR_MEM, "out of memory");
    w->e = ne;
    w->cap = cap;
  }
  e.name = strdup(name);
  QZ_CHECK(e.name, QZ_ERR_MEM, "out of memory");
  w->e[w->n++] = e;
  w->spill_len += e.nbytes;
  return QZ_OK;
}

static int cmp_wentry(const void *a, const void *b) {
  return strcmp(((const w_entry *)a)->name, ((const w_entry *)b)->name);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int writer_write(qz_st_writer *w) {
  int st = QZ_OK;
  json_t *root = json_object();
  char *hdr = NULL, *buf = NULL;
  FILE *out = NULL;
  QZ_CHECK_DONE(root, QZ_ERR_MEM, "out of memory");
  /* Key order as the reference writer emits it: __metadata__ (keys sorted),
   * then tensors sorted by name, each {dtype, shape, data_offsets}. */
  if (w->n > 1) qsort(w->e, (size_t)w->n, sizeof *w->e, cmp_wentry);
  if (json_object_size(w->meta)) {
    json_t *m = json_object();
    QZ_CHECK_DONE(m, QZ_ERR_MEM, "out of memory");
    json_object_set_new(root, "__metadata__", m);
    size_t nk = json_object_size(w->meta), j = 0;
    const char **keys = malloc(nk * sizeof *keys);
    QZ_CHECK_DONE(keys, QZ_ERR_MEM, "out of memory");
    const char *k;
    json_t *v;
    json_object_foreach(w->meta, k, v) keys[j++] = k;
    qsort(keys, nk, sizeof *keys, cmp_str);
    for (j = 0; j < nk; j++)
      json_object_set(m, keys[j], json_object_get(w->meta, keys[j]));
    free(keys);
  }
  int64_t off = 0;
  for (int i = 0; i < w->n; i++) {
    w_entry *e = &w->e[i];
    json_t *t = json_object(), *shp = json_array(), *offs = json_array();
    QZ_CHECK_DONE(t && shp && offs, QZ_ERR_MEM, "out of memory");
    for (int d = 0; d < e->ndim; d++)
      json_array_append_new(shp, json_integer(e->shape[d]));
    json_array_append_new(offs, json_integer(off));
    json_array_append_new(offs, json_integer(off + e->nbytes));
    json_object_set_new(t, "dtype", json_string(qz_dtype_name(e->dt)));
    json_object_set_new(t, "shape", shp);
    json_object_set_new(t, "data_offsets", offs);
    QZ_CHECK_DONE(json_object_set_new(root, e->name, t) == 0, QZ_ERR_ARG,
                  "%s: tensor name '%s' is not valid UTF-8", w->path, e->name);
    off += e->nbytes;
  }
  hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
  QZ_CHECK_DONE(hdr, QZ_ERR_MEM, "out of memory for the header");
  size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
  out = fopen(w->tmp, "wb");
  QZ_CHECK_DONE(out, QZ_ERR_IO, "cannot create %s: %s", w->tmp,
                strerror(errno));
  uint8_t len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
  int ok = fwrite(len8, 1, 8, out) == 8 && fwrite(hdr, 1, hl, out) == hl;
  for (size_t i = hl; i < padded && ok; i++) ok = fputc(' ', out) != EOF;
  QZ_CHECK_DONE(ok, QZ_ERR_IO, "writing the header of %s failed: %s", w->tmp,
                strerror(errno));
  QZ_CHECK_DONE(fflush(w->spill) == 0, QZ_ERR_IO, "%s: flush failed: %s",
                w->spill_path, strerror(errno));
  size_t bufsz = 8u << 20;
  buf = malloc(bufsz);
  QZ_CHECK_DONE(buf, QZ_ERR_MEM, "out of memory");
  for (int i = 0; i < w->n; i++) {
    w_entry *e = &w->e[i];
    QZ_CHECK_DONE(fseeko(w->spill, (off_t)e->spill_off, SEEK_SET) == 0,
                  QZ_ERR_IO, "%s: seek failed: %s", w->spill_path,
                  strerror(errno));
    for (int64_t left = e->nbytes; left > 0;) {
      size_t c = left < (int64_t)bufsz ? (size_t)left : bufsz;
      QZ_CHECK_DONE(fread(buf, 1, c, w->spill) == c, QZ_ERR_IO,
                    "%s: reading back tensor '%s' failed", w->spill_path,
                    e->name);
      QZ_CHECK_DONE(fwrite(buf, 1, c, out) == c, QZ_ERR_IO,
                    "writing tensor '%s' to %s failed: %s", e->name, w->tmp,
                    strerror(errno));
      left -= (int64_t)c;
    }
  }
  int rc = fclose(out);
  out = NULL;
  QZ_CHECK_DONE(rc == 0, QZ_ERR_IO, "closing %s failed (disk full?): %s",
                w->tmp, strerror(errno));
  QZ_CHECK_DONE(rename(w->tmp, w->path) == 0, QZ_ERR_IO,
                "cannot rename %s to %s: %s", w->tmp, w->path, strerror(errno));
done:
  if (out) fclose(out);
  free(buf);
  free(hdr);
  json_decref(root);
  return st;
}

int qz_st_writer_finish(qz_st_writer **pw) {
  QZ_CHECK(pw && *pw, QZ_ERR_ARG, "qz_st_writer_finish: NULL writer");
  int rc = writer_write(*pw);
  qz_st_writer_abort(pw); /* removes the spill (and tmp if rename failed) */
  if (rc) qz_error_trace(__FILE__, __LINE__, __func__);
  return rc;
}
