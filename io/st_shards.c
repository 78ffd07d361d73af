/* A set of safetensors shards written tensor by tensor (export, synth), and
 * a plain file copy for the files that go with them. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpiquant/error.h"
#include "mpiquant/file.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"

struct qz_st_shards {
  char dir[PATH_MAX], prefix[64];
  int64_t max_bytes, cur_bytes, total_bytes;
  int always_index, nshards;
  qz_st_writer *w;
  json_t *weight_map; /* name -> temp shard index */
};

static void tmp_name(const qz_st_shards *s, int k, char *buf, size_t n) {
  snprintf(buf, n, "%s/%s-part-%05d.safetensors", s->dir, s->prefix, k + 1);
}

int qz_st_shards_create(const char *dir, const char *tmp_prefix, int64_t max_bytes,
                        int always_index, qz_st_shards **out) {
  *out = NULL;
  QZ_CHECK(strlen(dir) < PATH_MAX - 96, QZ_ERR_ARG, "output path too long: %s", dir);
  qz_st_shards *s = NULL;
  QZ_CALL(qz_calloc(1, sizeof *s, "shard set", &s));
  snprintf(s->dir, sizeof s->dir, "%s", dir);
  snprintf(s->prefix, sizeof s->prefix, "%s", tmp_prefix ? tmp_prefix : "model");
  s->max_bytes = max_bytes > 0 ? max_bytes : ((int64_t)4 << 30);
  s->always_index = always_index;
  s->weight_map = json_object();
  *out = s;
  return QZ_OK;
}

int qz_st_shards_add(qz_st_shards *s, const char *name, qz_dtype dt, int nd,
                     const int64_t *shape, const void *data, int64_t bytes) {
  if (s->w && s->cur_bytes > 0 && s->cur_bytes + bytes > s->max_bytes)
    QZ_CALL(qz_st_writer_finish(&s->w));
  if (!s->w) {
    char p[PATH_MAX + 96];
    tmp_name(s, s->nshards, p, sizeof p);
    QZ_CALL(qz_st_writer_create(p, &s->w));
    QZ_CALL(qz_st_writer_meta(s->w, "format", "pt"));
    s->nshards++;
    s->cur_bytes = 0;
  }
  QZ_CALL(qz_st_writer_add(s->w, name, dt, nd, shape, data));
  s->cur_bytes += bytes;
  s->total_bytes += bytes;
  json_object_set_new(s->weight_map, name, json_integer(s->nshards - 1));
  return QZ_OK;
}

int qz_st_shards_count(const qz_st_shards *s) { return s->nshards; }
int64_t qz_st_shards_bytes(const qz_st_shards *s) { return s->total_bytes; }

static void shards_free(qz_st_shards **ps) {
  qz_st_shards *s = *ps;
  if (s->w) qz_st_writer_abort(&s->w);
  json_decref(s->weight_map);
  qz_free(ps);
}

void qz_st_shards_abort(qz_st_shards **ps) {
  if (ps && *ps) shards_free(ps);
}

int qz_st_shards_finish(qz_st_shards **ps) {
  qz_st_shards *s = *ps;
  int st = QZ_OK;
  json_t *map = json_object(), *idx = NULL;
  char from[PATH_MAX + 96], to[PATH_MAX + 96];
  if (s->w) QZ_CALL_DONE(qz_st_writer_finish(&s->w));
  const int indexed = s->nshards > 1 || s->always_index;
  for (int k = 0; k < s->nshards; k++) {
    tmp_name(s, k, from, sizeof from);
    if (!indexed)
      snprintf(to, sizeof to, "%s/model.safetensors", s->dir);
    else
      snprintf(to, sizeof to, "%s/model-%05d-of-%05d.safetensors", s->dir, k + 1, s->nshards);
    QZ_CHECK_DONE(rename(from, to) == 0, QZ_ERR_IO, "cannot rename %s to %s: %s", from, to,
                  strerror(errno));
  }
  if (indexed) {
    const char *key;
    json_t *v;
    json_object_foreach(s->weight_map, key, v) {
      char nm[64];
      snprintf(nm, sizeof nm, "model-%05d-of-%05d.safetensors",
               (int)json_integer_value(v) + 1, s->nshards);
      json_object_set_new(map, key, json_string(nm));
    }
    idx = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)s->total_bytes,
                    "weight_map", map);
    snprintf(to, sizeof to, "%s/model.safetensors.index.json", s->dir);
    QZ_CHECK_DONE(idx && json_dump_file(idx, to, JSON_INDENT(2) | JSON_SORT_KEYS) == 0,
                  QZ_ERR_IO, "cannot write %s", to);
  }
done:
  json_decref(idx);
  json_decref(map);
  shards_free(ps);
  return st;
}

int qz_copy_file(const char *from, const char *to, int required) {
  if (!required && access(from, F_OK) != 0) return QZ_OK;
  int fd;
  QZ_CALL(qz_file_open_input(from, &fd, NULL));
  FILE *a = fdopen(fd, "rb");
  if (!a) close(fd);
  QZ_CHECK(a, QZ_ERR_IO, "cannot open %s: %s", from, strerror(errno));
  FILE *b = fopen(to, "wb");
  if (!b) {
    fclose(a);
    QZ_FAIL(QZ_ERR_IO, "cannot create %s: %s", to, strerror(errno));
  }
  char buf[1 << 16];
  size_t n;
  int ok = 1;
  while ((n = fread(buf, 1, sizeof buf, a)) > 0) ok &= fwrite(buf, 1, n, b) == n;
  ok &= !ferror(a);
  fclose(a);
  ok &= fclose(b) == 0;
  QZ_CHECK(ok, QZ_ERR_IO, "copying %s to %s failed (disk full?)", from, to);
  return QZ_OK;
}
