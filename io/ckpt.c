/* The mpiquant checkpoint: parallel HDF5 group files + a JSON manifest.
 * Crash safety: a group file is written as *.tmp and renamed when complete;
 * the manifest is replaced atomically (temp + fsync + rename) after that, so
 * a block is never marked complete before its data is on disk. */
#define _GNU_SOURCE
#include "mpiquant/ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/files.h"
#include "mpiquant/h5zstd.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"

struct qz_ckpt {
  MPI_Comm comm;
  int rank, size;
  char dir[PATH_MAX + 40];
  json_t *manifest;   /* identical on every rank */
  int nblocks, bpf, level;
  int writable;
  hid_t file;         /* open group file or -1 */
  int file_index;     /* its index */
  int file_writing;   /* opened as .tmp for writing */
  json_t *pending;    /* stats of the open file's finished blocks */
  char *opts_text, *src_text; /* compact serialisations, cached */
  unsigned char *done; /* [nblocks] */
};

/* ---------------------------------------------------------------- helpers */

static void silence_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static void group_name(const qz_ckpt *ck, int idx, int tmp, char *buf,
                       size_t len) {
  snprintf(buf, len, "%s/blocks-%03d.h5%s", ck->dir, idx, tmp ? ".tmp" : "");
}

static int fsync_path(const char *path, int dir) {
  int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return -1;
  int r = fsync(fd);
  close(fd);
  return r;
}

static int read_text(const char *path, char **out) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  QZ_CHECK(f, QZ_ERR_IO, "cannot open %s: %s", path, strerror(errno));
  int st = QZ_OK;
  char *buf = NULL;
  QZ_CHECK_DONE(fseek(f, 0, SEEK_END) == 0, QZ_ERR_IO, "cannot read %s", path);
  long n = ftell(f);
  QZ_CHECK_DONE(n >= 0 && n < (1L << 30), QZ_ERR_FORMAT,
                "%s: unexpected size %ld", path, n);
  rewind(f);
  QZ_CALL_DONE(qz_alloc((size_t)n + 1, 1, path, &buf));
  QZ_CHECK_DONE(fread(buf, 1, (size_t)n, f) == (size_t)n, QZ_ERR_IO,
                "cannot read %s", path);
  buf[n] = '\0';
  *out = buf;
  buf = NULL;
done:
  free(buf);
  fclose(f);
  return st;
}

/* Rank 0 writes the manifest; every rank ends with the same copy. */
static int manifest_commit(qz_ckpt *ck) {
  int st = QZ_OK;
  char path[PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/manifest.json", ck->dir);
  char *text = json_dumps(ck->manifest, JSON_INDENT(1) | JSON_SORT_KEYS);
  size_t len = text ? strlen(text) : 0;
  char *nl = text ? realloc(text, len + 2) : NULL; /* the file ends with a newline */
  if (nl) {
    text = nl;
    memcpy(text + len, "\n", 2);
  }
  if (!nl) st = qz_error_set(QZ_ERR_MEM, __FILE__, __LINE__, __func__,
                             "cannot serialise the manifest");
  if (st == QZ_OK && ck->rank == 0) st = qz_write_atomic(path, text, len + 1);
  free(text);
  QZ_CALL(qz_error_agree(ck->comm, st));
  return QZ_OK;
}

static int manifest_load(const char *dir, json_t **out) {
  char path[PATH_MAX + 16], *text = NULL;
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  QZ_CALL(read_text(path, &text));
  json_error_t jerr;
  json_t *m = json_loads(text, 0, &jerr);
  free(text);
  QZ_CHECK(m, QZ_ERR_FORMAT,
           "%s is not valid JSON (line %d: %s); the checkpoint manifest is "
           "corrupt or truncated",
           path, jerr.line, jerr.text);
  const char *fmt = json_string_value(json_object_get(m, "format"));
  json_int_t ver = json_integer_value(json_object_get(m, "version"));
  if (!fmt || strcmp(fmt, QZ_CKPT_FORMAT) != 0 || ver != QZ_CKPT_VERSION ||
      !json_is_integer(json_object_get(m, "nblocks")) ||
      !json_is_integer(json_object_get(m, "blocks_per_file")) ||
      !json_is_array(json_object_get(m, "completed_blocks")) ||
      !json_is_object(json_object_get(m, "options")) ||
      !json_is_object(json_object_get(m, "source"))) {
    json_decref(m);
    QZ_FAIL(QZ_ERR_FORMAT,
            "%s: not an %s version %d manifest (format '%s', version %lld) or "
            "a required key (nblocks, blocks_per_file, completed_blocks, "
            "options, source) is missing",
            path, QZ_CKPT_FORMAT, QZ_CKPT_VERSION, fmt ? fmt : "?",
            (long long)ver);
  }
  *out = m;
  return QZ_OK;
}

/* Rank 0 reads the manifest, everyone gets the same text. */
static int manifest_load_bcast(MPI_Comm comm, int rank, const char *dir,
                               json_t **out) {
  int st = QZ_OK;
  char *text = NULL;
  long len = 0;
  *out = NULL;
  if (rank == 0) {
    json_t *m = NULL;
    st = manifest_load(dir, &m);
    if (st == QZ_OK) {
      text = json_dumps(m, JSON_COMPACT);
      len = text ? (long)strlen(text) + 1 : 0;
      json_decref(m);
    }
  }
  QZ_CALL(qz_error_agree(comm, st));
  QZ_CALL_MPI(MPI_Bcast(&len, 1, MPI_LONG, 0, comm));
  if (rank != 0) QZ_CALL(qz_alloc((size_t)len, 1, "manifest", &text));
  st = MPI_Bcast(text, (int)len, MPI_CHAR, 0, comm);
  if (st != MPI_SUCCESS) {
    free(text);
    return qz_mpi_error(st, "MPI_Bcast(manifest)", __FILE__, __LINE__, __func__);
  }
  *out = json_loads(text, 0, NULL);
  free(text);
  QZ_CHECK(*out, QZ_ERR_INTERNAL, "manifest broadcast did not parse");
  return QZ_OK;
}

/* First key where a and b differ, for the resume error. */
static void json_first_diff(json_t *want, json_t *have, char *buf, size_t len) {
  const char *key;
  json_t *v;
  json_object_foreach(want, key, v) {
    json_t *h = json_object_get(have, key);
    if (!h || !json_equal(v, h)) {
      char *a = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
      char *b = h ? json_dumps(h, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
      snprintf(buf, len, "'%s': this run has %s, the checkpoint has %s", key,
               a ? a : "?", b ? b : "(absent)");
      free(a);
      free(b);
      return;
    }
  }
  json_object_foreach(have, key, v) {
    if (!json_object_get(want, key)) {
      snprintf(buf, len, "'%s' is in the checkpoint but not in this run", key);
      return;
    }
  }
  snprintf(buf, len, "(no difference found)");
}

static hid_t fapl_mpio(MPI_Comm comm) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0) return fapl;
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  H5Pset_all_coll_metadata_ops(fapl, 1);
  H5Pset_coll_metadata_write(fapl, 1);
  return fapl;
}

static int alloc_ckpt(MPI_Comm comm, const char *dir, qz_ckpt **out) {
  qz_ckpt *ck = NULL;
  QZ_CALL(qz_calloc(1, sizeof *ck, "checkpoint handle", &ck));
  ck->file = -1;
  ck->file_index = -1;
  int st = qz_comm_dup(comm, &ck->comm);
  if (st != QZ_OK) {
    free(ck);
    QZ_CALL(st);
  }
  MPI_Comm_rank(ck->comm, &ck->rank);
  MPI_Comm_size(ck->comm, &ck->size);
  snprintf(ck->dir, sizeof ck->dir, "%s", dir);
  size_t n = strlen(ck->dir);
  while (n > 1 && ck->dir[n - 1] == '/') ck->dir[--n] = '\0';
  silence_hdf5();
  *out = ck;
  return qz_h5zstd_register();
}

static int load_done(qz_ckpt *ck) {
  ck->nblocks = (int)json_integer_value(json_object_get(ck->manifest, "nblocks"));
  ck->bpf = (int)json_integer_value(json_object_get(ck->manifest, "blocks_per_file"));
  QZ_CHECK(ck->nblocks > 0 && ck->bpf > 0, QZ_ERR_FORMAT,
           "%s/manifest.json: nblocks %d and blocks_per_file %d must be > 0",
           ck->dir, ck->nblocks, ck->bpf);
  QZ_CALL(qz_calloc((size_t)ck->nblocks, 1, "block flags", &ck->done));
  size_t i;
  json_t *b;
  json_array_foreach(json_object_get(ck->manifest, "completed_blocks"), i, b) {
    json_int_t k = json_integer_value(json_object_get(b, "block"));
    QZ_CHECK(json_is_integer(json_object_get(b, "block")) && k >= 0 &&
                 k < ck->nblocks,
             QZ_ERR_FORMAT, "%s/manifest.json: completed_blocks[%zu] has no "
             "valid block index (0..%d)", ck->dir, i, ck->nblocks - 1);
    ck->done[k] = 1;
  }
  return QZ_OK;
}

/* ------------------------------------------------------------ create/open */

int qz_ckpt_create(MPI_Comm comm, const char *dir, const qz_ckpt_params *p,
                   int resume, qz_ckpt **out) {
  *out = NULL;
  qz_ckpt *ck = NULL;
  int st = QZ_OK;
  json_t *opts = NULL, *src = NULL;
  QZ_CALL(alloc_ckpt(comm, dir, &ck));
  ck->writable = 1;
  ck->level = p->zstd_level > 0 ? p->zstd_level : 3;
  QZ_CHECK_DONE(p->nblocks > 0 && p->blocks_per_file > 0, QZ_ERR_ARG,
                "checkpoint needs nblocks > 0 and blocks_per_file > 0 "
                "(got %d, %d)", p->nblocks, p->blocks_per_file);
  opts = json_loads(p->options_json, 0, NULL);
  src = json_loads(p->source_json, 0, NULL);
  QZ_CHECK_DONE(json_is_object(opts) && json_is_object(src), QZ_ERR_INTERNAL,
                "checkpoint options/source must be JSON objects");

  char mpath[PATH_MAX + 16];
  snprintf(mpath, sizeof mpath, "%s/manifest.json", ck->dir);
  int exists = 0;
  if (ck->rank == 0) {
    st = qz_mkdir_p(ck->dir);
    if (st == QZ_OK) {
      exists = access(mpath, F_OK) == 0;
      if (exists && !resume)
        st = qz_error_set(QZ_ERR_ARG, __FILE__, __LINE__, __func__,
                          "%s already holds a checkpoint (manifest.json); use "
                          "--resume to continue it or choose another --out",
                          ck->dir);
      /* a probe file: an unwritable --out fails here on every rank */
      if (st == QZ_OK) {
        char probe[PATH_MAX + 16];
        snprintf(probe, sizeof probe, "%s/.write-test", ck->dir);
        FILE *f = fopen(probe, "w");
        if (!f || fputs("ok\n", f) == EOF || fclose(f) != 0)
          st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                            "cannot write into %s: %s", ck->dir, strerror(errno));
        unlink(probe);
      }
    }
  }
  QZ_CALL_DONE(qz_error_agree(ck->comm, st));
  QZ_CALL_MPI(MPI_Bcast(&exists, 1, MPI_INT, 0, ck->comm));

  if (resume && exists) {
    QZ_CALL_DONE(manifest_load_bcast(ck->comm, ck->rank, ck->dir, &ck->manifest));
    char diff[1024];
    json_t *mo = json_object_get(ck->manifest, "options");
    json_t *ms = json_object_get(ck->manifest, "source");
    if (!json_equal(mo, opts)) {
      json_first_diff(opts, mo, diff, sizeof diff);
      QZ_FAIL_DONE(QZ_ERR_ARG,
                   "cannot resume %s: options differ from the checkpoint's: %s",
                   ck->dir, diff);
    }
    if (!json_equal(ms, src)) {
      json_first_diff(src, ms, diff, sizeof diff);
      QZ_FAIL_DONE(QZ_ERR_ARG,
                   "cannot resume %s: the source model differs from the one "
                   "it was made from: %s",
                   ck->dir, diff);
    }
    QZ_CHECK_DONE(json_integer_value(json_object_get(ck->manifest, "nblocks")) ==
                          p->nblocks &&
                      json_integer_value(json_object_get(
                          ck->manifest, "blocks_per_file")) == p->blocks_per_file,
                  QZ_ERR_ARG,
                  "cannot resume %s: block layout differs (nblocks/blocks_per_file)",
                  ck->dir);
    QZ_CALL_DONE(load_done(ck));
    /* drop files that never completed */
    if (ck->rank == 0) {
      for (int idx = 0; idx * ck->bpf < ck->nblocks; idx++) {
        char tmp[PATH_MAX + 32];
        group_name(ck, idx, 1, tmp, sizeof tmp);
        unlink(tmp);
      }
    }
    int ndone = 0;
    for (int b = 0; b < ck->nblocks; b++) ndone += ck->done[b];
    qz_info("resuming %s: %d of %d blocks complete", ck->dir, ndone, ck->nblocks);
  } else {
    ck->manifest = json_object();
    json_object_set_new(ck->manifest, "format", json_string(QZ_CKPT_FORMAT));
    json_object_set_new(ck->manifest, "version", json_integer(QZ_CKPT_VERSION));
    json_object_set_new(ck->manifest, "mpiquant_version",
                        json_string(p->mpiquant_version ? p->mpiquant_version : "?"));
    json_object_set(ck->manifest, "options", opts);
    json_object_set(ck->manifest, "source", src);
    json_object_set_new(ck->manifest, "model_dir", json_string(p->model_dir ? p->model_dir : ""));
    json_object_set_new(ck->manifest, "nblocks", json_integer(p->nblocks));
    json_object_set_new(ck->manifest, "blocks_per_file", json_integer(p->blocks_per_file));
    json_object_set_new(ck->manifest, "files", json_array());
    json_object_set_new(ck->manifest, "completed_blocks", json_array());
    json_object_set_new(ck->manifest, "snapshot", json_null());
    QZ_CALL_DONE(load_done(ck));
    QZ_CALL_DONE(manifest_commit(ck));
  }
  ck->pending = json_array();
  *out = ck;
  ck = NULL;
done:
  json_decref(opts);
  json_decref(src);
  if (ck) qz_ckpt_close(&ck);
  return st;
}

int qz_ckpt_open(MPI_Comm comm, const char *dir, qz_ckpt **out) {
  *out = NULL;
  qz_ckpt *ck = NULL;
  int st = QZ_OK;
  QZ_CALL(alloc_ckpt(comm, dir, &ck));
  QZ_CALL_DONE(manifest_load_bcast(ck->comm, ck->rank, ck->dir, &ck->manifest));
  QZ_CALL_DONE(load_done(ck));
  ck->pending = json_array();
  *out = ck;
  ck = NULL;
done:
  if (ck) qz_ckpt_close(&ck);
  return st;
}

/* A closed *.tmp file becomes `fin` (rank 0: fsync, rename, fsync of the
 * directory). Collective on the checkpoint's communicator. */
static int publish(qz_ckpt *ck, const char *tmp, const char *fin) {
  int st = QZ_OK;
  if (ck->rank == 0) {
    if (fsync_path(tmp, 0) != 0 || rename(tmp, fin) != 0)
      st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                        "cannot finalise %s: %s", fin, strerror(errno));
    else
      fsync_path(ck->dir, 1);
  }
  QZ_CALL(qz_error_agree(ck->comm, st));
  return QZ_OK;
}

static void close_file(qz_ckpt *ck) {
  if (ck->file >= 0) H5Fclose(ck->file);
  ck->file = -1;
  ck->file_index = -1;
  ck->file_writing = 0;
}

void qz_ckpt_close(qz_ckpt **pck) {
  if (!pck || !*pck) return;
  qz_ckpt *ck = *pck;
  close_file(ck); /* an unfinished group stays *.tmp: not complete */
  json_decref(ck->manifest);
  json_decref(ck->pending);
  free(ck->done);
  free(ck->opts_text);
  free(ck->src_text);
  if (ck->comm != MPI_COMM_NULL) MPI_Comm_free(&ck->comm);
  free(ck);
  *pck = NULL;
}

int qz_ckpt_nblocks(const qz_ckpt *ck) { return ck->nblocks; }
int qz_ckpt_block_done(const qz_ckpt *ck, int b) {
  return b >= 0 && b < ck->nblocks && ck->done[b];
}
int qz_ckpt_first_missing(const qz_ckpt *ck) {
  for (int b = 0; b < ck->nblocks; b++)
    if (!ck->done[b]) return b;
  return ck->nblocks;
}

static const char *dump_cached(const qz_ckpt *ck, const char *key, char **cache) {
  if (!*cache)
    *cache = json_dumps(json_object_get(ck->manifest, key), JSON_COMPACT | JSON_SORT_KEYS);
  return *cache ? *cache : "{}";
}
const char *qz_ckpt_model_dir(const qz_ckpt *ck) {
  const char *d = json_string_value(json_object_get(ck->manifest, "model_dir"));
  return d ? d : "";
}
const char *qz_ckpt_dir(const qz_ckpt *ck) { return ck->dir; }

const char *qz_ckpt_options_json(const qz_ckpt *ck) {
  return dump_cached(ck, "options", &((qz_ckpt *)ck)->opts_text);
}
const char *qz_ckpt_source_json(const qz_ckpt *ck) {
  return dump_cached(ck, "source", &((qz_ckpt *)ck)->src_text);
}

/* ------------------------------------------------------------- attributes */

static int attr_str(hid_t obj, const char *name, const char *val) {
  hid_t t = H5Tcopy(H5T_C_S1);
  size_t n = strlen(val);
  H5Tset_size(t, n ? n : 1);
  H5Tset_strpad(t, H5T_STR_NULLPAD);
  hid_t s = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
  herr_t w = a >= 0 ? H5Awrite(a, t, n ? val : "") : -1;
  if (a >= 0) H5Aclose(a);
  H5Sclose(s);
  H5Tclose(t);
  QZ_CHECK(w >= 0, QZ_ERR_HDF5, "cannot write attribute %s", name);
  return QZ_OK;
}

static int attr_num(hid_t obj, const char *name, hid_t type, const void *v) {
  hid_t s = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name, type, s, H5P_DEFAULT, H5P_DEFAULT);
  herr_t w = a >= 0 ? H5Awrite(a, type, v) : -1;
  if (a >= 0) H5Aclose(a);
  H5Sclose(s);
  QZ_CHECK(w >= 0, QZ_ERR_HDF5, "cannot write attribute %s", name);
  return QZ_OK;
}
static int attr_int(hid_t o, const char *n, int v) { return attr_num(o, n, H5T_NATIVE_INT, &v); }
static int attr_dbl(hid_t o, const char *n, double v) { return attr_num(o, n, H5T_NATIVE_DOUBLE, &v); }

static int read_attr_num(hid_t obj, const char *name, hid_t type, void *v) {
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  QZ_CHECK(a >= 0, QZ_ERR_FORMAT, "attribute %s missing", name);
  herr_t r = H5Aread(a, type, v);
  H5Aclose(a);
  QZ_CHECK(r >= 0, QZ_ERR_FORMAT, "attribute %s unreadable", name);
  return QZ_OK;
}

static int read_attr_str(hid_t obj, const char *name, char *buf, size_t len) {
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  QZ_CHECK(a >= 0, QZ_ERR_FORMAT, "attribute %s missing", name);
  hid_t t = H5Aget_type(a);
  size_t n = H5Tget_size(t);
  char *tmp = calloc(n + 1, 1);
  herr_t r = tmp ? H5Aread(a, t, tmp) : -1;
  if (r >= 0) snprintf(buf, len, "%s", tmp);
  free(tmp);
  H5Tclose(t);
  H5Aclose(a);
  QZ_CHECK(r >= 0, QZ_ERR_FORMAT, "attribute %s unreadable", name);
  return QZ_OK;
}

/* ------------------------------------------------------------------ write */

int qz_ckpt_begin_block(qz_ckpt *ck, int block) {
  QZ_CHECK(ck->writable, QZ_ERR_INTERNAL, "checkpoint opened read-only");
  QZ_CHECK(block >= 0 && block < ck->nblocks, QZ_ERR_ARG,
           "block %d outside 0..%d", block, ck->nblocks - 1);
  int idx = block / ck->bpf;
  if (ck->file >= 0 && ck->file_index == idx && ck->file_writing) return QZ_OK;
  close_file(ck);
  json_array_clear(ck->pending);
  char path[PATH_MAX + 32];
  group_name(ck, idx, 1, path, sizeof path);
  hid_t fapl = fapl_mpio(ck->comm);
  hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
  ck->file = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
  H5Pclose(fcpl);
  H5Pclose(fapl);
  int st = ck->file >= 0 ? QZ_OK
                         : qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                                        "cannot create checkpoint file %s "
                                        "(unwritable directory or disk full?)",
                                        path);
  QZ_CALL(qz_error_agree(ck->comm, st));
  ck->file_index = idx;
  ck->file_writing = 1;
  int first = idx * ck->bpf, n = ck->bpf;
  if (first + n > ck->nblocks) n = ck->nblocks - first;
  const char *mv = json_string_value(json_object_get(ck->manifest, "mpiquant_version"));
  QZ_CALL(attr_str(ck->file, "format", QZ_CKPT_FORMAT));
  QZ_CALL(attr_int(ck->file, "version", QZ_CKPT_VERSION));
  QZ_CALL(attr_str(ck->file, "mpiquant_version", mv ? mv : "?"));
  QZ_CALL(attr_str(ck->file, "options", qz_ckpt_options_json(ck)));
  QZ_CALL(attr_str(ck->file, "source", qz_ckpt_source_json(ck)));
  QZ_CALL(attr_int(ck->file, "first_block", first));
  QZ_CALL(attr_int(ck->file, "nblocks", n));
  return QZ_OK;
}

/* A group (and its parents) without time stamps, so files are reproducible. */
static hid_t create_group(hid_t file, const char *path) {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
  H5Pset_obj_track_times(gcpl, 0);
  hid_t g = H5Gcreate2(file, path, lcpl, gcpl, H5P_DEFAULT);
  H5Pclose(gcpl);
  H5Pclose(lcpl);
  return g;
}

/* Create a chunked zstd dataset of `rank_` dims and write this rank's rows
 * [row0, row0+nrows) (all of dim 0 when row0 < 0 on rank 0 only). */
static int write_ds(qz_ckpt *ck, hid_t grp, const char *name, hid_t mtype,
                    hid_t ftype, int nd, const hsize_t *dims, int64_t row0,
                    int64_t nrows, const void *data, size_t elem_per_row_bytes) {
  hsize_t chunk[2] = {1, nd > 1 ? dims[1] : 1};
  /* ~1 MiB chunks of whole rows */
  hsize_t rowbytes = elem_per_row_bytes ? elem_per_row_bytes : 1;
  hsize_t cr = (1u << 20) / rowbytes;
  if (cr < 1) cr = 1;
  if (cr > dims[0]) cr = dims[0];
  if (nd == 1) {
    cr = dims[0] > (1u << 20) ? (1u << 20) : dims[0];
  }
  chunk[0] = cr > 0 ? cr : 1;
  hid_t space = H5Screate_simple(nd, dims, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, nd, chunk);
  unsigned lvl = (unsigned)ck->level;
  H5Pset_filter(dcpl, QZ_H5Z_FILTER_ZSTD, H5Z_FLAG_MANDATORY, 1, &lvl);
  H5Pset_obj_track_times(dcpl, 0);
  H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
  hid_t d = H5Dcreate2(grp, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  int st = QZ_OK;
  hid_t fs = -1, ms = -1, dx = -1;
  QZ_CHECK_DONE(d >= 0, QZ_ERR_HDF5, "cannot create dataset %s", name);
  fs = H5Dget_space(d);
  hsize_t off[2] = {(hsize_t)(row0 > 0 ? row0 : 0), 0};
  hsize_t cnt[2] = {(hsize_t)nrows, nd > 1 ? dims[1] : 1};
  hsize_t mdims[2] = {(hsize_t)(nrows > 0 ? nrows : 1), cnt[1]};
  ms = H5Screate_simple(nd, mdims, NULL);
  if (nrows > 0) {
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
  } else {
    H5Sselect_none(fs);
    H5Sselect_none(ms);
  }
  dx = H5Pcreate(H5P_DATASET_XFER);
  H5Pset_dxpl_mpio(dx, H5FD_MPIO_COLLECTIVE);
  QZ_CHECK_DONE(H5Dwrite(d, mtype, ms, fs, dx, data) >= 0, QZ_ERR_IO,
                "collective write of dataset %s failed (disk full?)", name);
done:
  if (dx >= 0) H5Pclose(dx);
  if (ms >= 0) H5Sclose(ms);
  if (fs >= 0) H5Sclose(fs);
  if (d >= 0) H5Dclose(d);
  H5Sclose(space);
  return st;
}

int qz_ckpt_write_linear(qz_ckpt *ck, int block, const char *module,
                         int64_t out, int64_t in, int64_t ngroups, int64_t row0,
                         int64_t nrows, const uint8_t *codes,
                         const float *scales, const float *zeros,
                         const int32_t *g_idx, const int32_t *perm,
                         const qz_ckpt_linear_meta *m) {
  QZ_CHECK(ck->file >= 0 && ck->file_index == block / ck->bpf, QZ_ERR_INTERNAL,
           "qz_ckpt_begin_block(%d) was not called", block);
  char path[256];
  snprintf(path, sizeof path, "/layers/%d/%s", block, module);
  hid_t g = create_group(ck->file, path);
  QZ_CHECK(g >= 0, QZ_ERR_HDF5, "cannot create group %s", path);
  int st = QZ_OK;
  hsize_t d2[2] = {(hsize_t)out, (hsize_t)in}, dg[2] = {(hsize_t)out, (hsize_t)ngroups};
  hsize_t d1[1] = {(hsize_t)in};
  int64_t r1 = ck->rank == 0 ? in : 0; /* replicated 1-D data: rank 0 writes */
  QZ_CALL_DONE(write_ds(ck, g, "codes", H5T_NATIVE_UINT8, H5T_STD_U8LE, 2, d2,
                        row0, nrows, codes, (size_t)in));
  QZ_CALL_DONE(write_ds(ck, g, "scales", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 2, dg,
                        row0, nrows, scales, (size_t)ngroups * 4));
  QZ_CALL_DONE(write_ds(ck, g, "zeros", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 2, dg,
                        row0, nrows, zeros, (size_t)ngroups * 4));
  QZ_CALL_DONE(write_ds(ck, g, "g_idx", H5T_NATIVE_INT32, H5T_STD_I32LE, 1, d1, 0,
                        r1, g_idx, 4));
  QZ_CALL_DONE(write_ds(ck, g, "perm", H5T_NATIVE_INT32, H5T_STD_I32LE, 1, d1, 0,
                        r1, perm, 4));
  QZ_CALL_DONE(attr_int(g, "bits", m->bits));
  QZ_CALL_DONE(attr_int(g, "group_size", m->group_size));
  QZ_CALL_DONE(attr_int(g, "sym", m->sym));
  QZ_CALL_DONE(attr_int(g, "act_order", m->act_order));
  QZ_CALL_DONE(attr_int(g, "static_groups", m->static_groups));
  QZ_CALL_DONE(attr_str(g, "method", m->method));
  QZ_CALL_DONE(attr_dbl(g, "damp_used", m->damp_used));
  QZ_CALL_DONE(attr_dbl(g, "loss", m->loss));
  /* no wall-clock time in the HDF5 files: a rerun or a resumed run must be
   * bit-identical (h5diff); timings live in manifest.json's block stats */
done:
  H5Gclose(g);
  return st;
}

int qz_ckpt_write_norms(qz_ckpt *ck, int block, int64_t hidden,
                        const float *attn_norm, const float *ffn_norm) {
  QZ_CHECK(ck->file >= 0 && ck->file_index == block / ck->bpf, QZ_ERR_INTERNAL,
           "qz_ckpt_begin_block(%d) was not called", block);
  char path[256];
  snprintf(path, sizeof path, "/norms/%d", block);
  hid_t g = create_group(ck->file, path);
  QZ_CHECK(g >= 0, QZ_ERR_HDF5, "cannot create group %s", path);
  int st = QZ_OK;
  hsize_t d1[1] = {(hsize_t)hidden};
  int64_t r1 = ck->rank == 0 ? hidden : 0; /* replicated: rank 0 writes */
  QZ_CALL_DONE(write_ds(ck, g, "input_layernorm", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE,
                        1, d1, 0, r1, attn_norm, 4));
  QZ_CALL_DONE(write_ds(ck, g, "post_attention_layernorm", H5T_NATIVE_FLOAT,
                        H5T_IEEE_F32LE, 1, d1, 0, r1, ffn_norm, 4));
done:
  H5Gclose(g);
  return st;
}

int qz_ckpt_end_block(qz_ckpt *ck, int block, const char *stats_json) {
  QZ_CHECK(ck->file >= 0 && ck->file_index == block / ck->bpf, QZ_ERR_INTERNAL,
           "qz_ckpt_end_block(%d) without begin", block);
  json_t *stats = stats_json ? json_loads(stats_json, 0, NULL) : json_object();
  if (!stats) stats = json_object();
  json_t *entry = json_object();
  json_object_set_new(entry, "block", json_integer(block));
  json_object_set_new(entry, "stats", stats);
  json_array_append_new(ck->pending, entry);
  int idx = ck->file_index;
  int last = (idx + 1) * ck->bpf;
  if (last > ck->nblocks) last = ck->nblocks;
  if (block + 1 < last) {
    QZ_CHECK(H5Fflush(ck->file, H5F_SCOPE_GLOBAL) >= 0, QZ_ERR_IO,
             "flushing checkpoint file %d failed (disk full?)", idx);
    return QZ_OK;
  }
  /* the group is complete: close, rename, then record it */
  herr_t c = H5Fclose(ck->file);
  ck->file = -1;
  ck->file_writing = 0;
  ck->file_index = -1;
  int st = c >= 0 ? QZ_OK
                  : qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                                 "closing checkpoint file %d failed (disk full?)",
                                 idx);
  QZ_CALL(qz_error_agree(ck->comm, st));
  char tmp[PATH_MAX + 32], fin[PATH_MAX + 32];
  group_name(ck, idx, 1, tmp, sizeof tmp);
  group_name(ck, idx, 0, fin, sizeof fin);
  QZ_CALL(publish(ck, tmp, fin));
  const char *base = strrchr(fin, '/') ? strrchr(fin, '/') + 1 : fin;
  json_t *files = json_object_get(ck->manifest, "files");
  json_t *fe = json_object();
  json_object_set_new(fe, "file", json_string(base));
  json_object_set_new(fe, "first_block", json_integer(idx * ck->bpf));
  json_object_set_new(fe, "nblocks", json_integer(last - idx * ck->bpf));
  json_array_append_new(files, fe);
  json_t *done = json_object_get(ck->manifest, "completed_blocks");
  size_t i;
  json_t *e;
  json_array_foreach(ck->pending, i, e) {
    json_object_set_new(e, "file", json_string(base));
    json_array_append(done, e);
    ck->done[json_integer_value(json_object_get(e, "block"))] = 1;
  }
  json_array_clear(ck->pending);
  /* only rank 0's stats land in the manifest: keep every rank's copy equal */
  char *text = NULL;
  long len = 0;
  if (ck->rank == 0) {
    text = json_dumps(ck->manifest, JSON_COMPACT);
    len = text ? (long)strlen(text) + 1 : 0;
  }
  QZ_CALL_MPI(MPI_Bcast(&len, 1, MPI_LONG, 0, ck->comm));
  if (ck->rank != 0) QZ_CALL(qz_alloc((size_t)len, 1, "manifest", &text));
  MPI_Bcast(text, (int)len, MPI_CHAR, 0, ck->comm);
  json_t *m = json_loads(text, 0, NULL);
  free(text);
  QZ_CHECK(m, QZ_ERR_INTERNAL, "manifest broadcast did not parse");
  json_decref(ck->manifest);
  ck->manifest = m;
  QZ_CALL(manifest_commit(ck));
  return QZ_OK;
}

/* ------------------------------------------------------------------- read */

static int open_for_read(qz_ckpt *ck, int block) {
  QZ_CHECK(block >= 0 && block < ck->nblocks, QZ_ERR_ARG,
           "block %d outside 0..%d of checkpoint %s", block, ck->nblocks - 1,
           ck->dir);
  QZ_CHECK(ck->done[block], QZ_ERR_ARG,
           "block %d of checkpoint %s is not complete (%d of %d blocks done; "
           "resume the quantize run)",
           block, ck->dir, qz_ckpt_first_missing(ck), ck->nblocks);
  int idx = block / ck->bpf;
  if (ck->file >= 0 && ck->file_index == idx && !ck->file_writing) return QZ_OK;
  close_file(ck);
  char path[PATH_MAX + 32];
  group_name(ck, idx, 0, path, sizeof path);
  hid_t fapl = fapl_mpio(ck->comm);
  ck->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  H5Pclose(fapl);
  QZ_CHECK(ck->file >= 0, QZ_ERR_IO, "cannot open checkpoint file %s", path);
  ck->file_index = idx;
  char fmt[64] = "";
  int ver = 0;
  QZ_CALL(read_attr_str(ck->file, "format", fmt, sizeof fmt));
  QZ_CALL(read_attr_num(ck->file, "version", H5T_NATIVE_INT, &ver));
  QZ_CHECK(strcmp(fmt, QZ_CKPT_FORMAT) == 0 && ver == QZ_CKPT_VERSION,
           QZ_ERR_FORMAT, "%s: format '%s' version %d, expected %s version %d",
           path, fmt, ver, QZ_CKPT_FORMAT, QZ_CKPT_VERSION);
  return QZ_OK;
}

/* The group of a stored linear, opened for reading; path names it for
 * messages. Collective on the checkpoint's communicator. */
/* Extent of dataset g/name (up to 2 dims; the rest 0): its rank, or -1 when
 * it does not exist. */
static int ds_dims(hid_t g, const char *name, hsize_t dims[2]) {
  dims[0] = dims[1] = 0;
  hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
  if (d < 0) return -1;
  hid_t s = H5Dget_space(d);
  int nd = H5Sget_simple_extent_ndims(s);
  if (nd >= 1 && nd <= 2) H5Sget_simple_extent_dims(s, dims, NULL);
  H5Sclose(s);
  H5Dclose(d);
  return nd;
}

static int open_linear(qz_ckpt *ck, int block, const char *module, char *path,
                       size_t len, hid_t *g) {
  QZ_CALL(open_for_read(ck, block));
  snprintf(path, len, "/layers/%d/%s", block, module);
  *g = H5Gopen2(ck->file, path, H5P_DEFAULT);
  QZ_CHECK(*g >= 0, QZ_ERR_FORMAT, "checkpoint %s: %s missing", ck->dir, path);
  return QZ_OK;
}

int qz_ckpt_linear_info(qz_ckpt *ck, int block, const char *module,
                        int64_t *out, int64_t *in, int64_t *ngroups,
                        qz_ckpt_linear_meta *m) {
  char path[256];
  hid_t g = -1;
  QZ_CALL(open_linear(ck, block, module, path, sizeof path, &g));
  int st = QZ_OK;
  hsize_t dims[2], gd[2];
  QZ_CHECK_DONE(ds_dims(g, "codes", dims) >= 0 && ds_dims(g, "scales", gd) >= 0,
                QZ_ERR_FORMAT, "checkpoint %s: %s/codes or scales missing", ck->dir, path);
  *out = (int64_t)dims[0];
  *in = (int64_t)dims[1];
  *ngroups = (int64_t)gd[1];
  if (m) {
    memset(m, 0, sizeof *m);
    QZ_CALL_DONE(read_attr_num(g, "bits", H5T_NATIVE_INT, &m->bits));
    QZ_CALL_DONE(read_attr_num(g, "group_size", H5T_NATIVE_INT, &m->group_size));
    QZ_CALL_DONE(read_attr_num(g, "sym", H5T_NATIVE_INT, &m->sym));
    QZ_CALL_DONE(read_attr_num(g, "act_order", H5T_NATIVE_INT, &m->act_order));
    QZ_CALL_DONE(read_attr_num(g, "static_groups", H5T_NATIVE_INT, &m->static_groups));
    QZ_CALL_DONE(read_attr_str(g, "method", m->method, sizeof m->method));
    QZ_CALL_DONE(read_attr_num(g, "damp_used", H5T_NATIVE_DOUBLE, &m->damp_used));
    QZ_CALL_DONE(read_attr_num(g, "loss", H5T_NATIVE_DOUBLE, &m->loss));
  }
done:
  H5Gclose(g);
  return st;
}

static int read_ds(hid_t g, const char *name, hid_t mtype, int64_t row0,
                   int64_t nrows, void *buf) {
  hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
  QZ_CHECK(d >= 0, QZ_ERR_FORMAT, "dataset %s missing", name);
  int st = QZ_OK;
  hid_t fs = H5Dget_space(d);
  int nd = H5Sget_simple_extent_ndims(fs);
  hsize_t dims[2] = {0, 1};
  H5Sget_simple_extent_dims(fs, dims, NULL);
  hsize_t off[2] = {(hsize_t)row0, 0}, cnt[2] = {(hsize_t)nrows, dims[1]};
  if (nd == 1) cnt[1] = 1;
  hsize_t md[2] = {(hsize_t)(nrows > 0 ? nrows : 1), cnt[1]};
  hid_t ms = H5Screate_simple(nd, md, NULL);
  if (buf && nrows > 0) {
    QZ_CHECK_DONE(row0 >= 0 && (hsize_t)(row0 + nrows) <= dims[0], QZ_ERR_ARG,
                  "rows [%lld, %lld) outside dataset %s with %llu rows",
                  (long long)row0, (long long)(row0 + nrows), name,
                  (unsigned long long)dims[0]);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
  } else {
    H5Sselect_none(fs);
    H5Sselect_none(ms);
  }
  hid_t dx = H5Pcreate(H5P_DATASET_XFER);
  H5Pset_dxpl_mpio(dx, H5FD_MPIO_COLLECTIVE);
  char dummy[8];
  herr_t r = H5Dread(d, mtype, ms, fs, dx, buf ? buf : dummy);
  H5Pclose(dx);
  QZ_CHECK_DONE(r >= 0, QZ_ERR_IO, "reading dataset %s failed (is the zstd "
                "filter missing or the file damaged?)", name);
done:
  H5Sclose(ms);
  H5Sclose(fs);
  H5Dclose(d);
  return st;
}

int qz_ckpt_read_linear(qz_ckpt *ck, int block, const char *module,
                        int64_t row0, int64_t nrows, uint8_t *codes,
                        float *scales, float *zeros, int32_t *g_idx,
                        int32_t *perm) {
  char path[256];
  hid_t g = -1;
  QZ_CALL(open_linear(ck, block, module, path, sizeof path, &g));
  int st = QZ_OK;
  hsize_t gdim[2];
  ds_dims(g, "g_idx", gdim);
  const hsize_t in = gdim[0];
  /* every rank takes part in every collective read, with or without data */
  QZ_CALL_DONE(read_ds(g, "codes", H5T_NATIVE_UINT8, row0, codes ? nrows : 0, codes));
  QZ_CALL_DONE(read_ds(g, "scales", H5T_NATIVE_FLOAT, row0, scales ? nrows : 0, scales));
  QZ_CALL_DONE(read_ds(g, "zeros", H5T_NATIVE_FLOAT, row0, zeros ? nrows : 0, zeros));
  QZ_CALL_DONE(read_ds(g, "g_idx", H5T_NATIVE_INT32, 0, g_idx ? (int64_t)in : 0, g_idx));
  QZ_CALL_DONE(read_ds(g, "perm", H5T_NATIVE_INT32, 0, perm ? (int64_t)in : 0, perm));
done:
  H5Gclose(g);
  if (st != QZ_OK) qz_error_prefix("checkpoint %s, %s: ", ck->dir, path);
  return st;
}

int qz_ckpt_write_outliers(qz_ckpt *ck, int block, const char *module,
                           int64_t nlocal, const int64_t *idx,
                           const float *val) {
  QZ_CHECK(ck->file >= 0 && ck->file_index == block / ck->bpf, QZ_ERR_INTERNAL,
           "qz_ckpt_begin_block(%d) was not called", block);
  int64_t off = 0, total = nlocal;
  QZ_CALL_MPI(MPI_Exscan(&nlocal, &off, 1, MPI_INT64_T, MPI_SUM, ck->comm));
  if (ck->rank == 0) off = 0;
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_INT64_T, MPI_SUM, ck->comm));
  if (total == 0) return QZ_OK;
  char path[256];
  snprintf(path, sizeof path, "/layers/%d/%s", block, module);
  hid_t g = H5Gopen2(ck->file, path, H5P_DEFAULT);
  QZ_CHECK(g >= 0, QZ_ERR_INTERNAL, "qz_ckpt_write_outliers: %s not written yet", path);
  int st = QZ_OK;
  hsize_t d1[1] = {(hsize_t)total};
  QZ_CALL_DONE(write_ds(ck, g, "outliers_idx", H5T_NATIVE_INT64, H5T_STD_I64LE, 1,
                        d1, off, nlocal, idx, 8));
  QZ_CALL_DONE(write_ds(ck, g, "outliers_val", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 1,
                        d1, off, nlocal, val, 4));
done:
  H5Gclose(g);
  return st;
}

int qz_ckpt_read_outliers(qz_ckpt *ck, int block, const char *module,
                          int64_t *nnz, int64_t **idx, float **val) {
  *nnz = 0;
  *idx = NULL;
  *val = NULL;
  char path[256];
  hid_t g = -1;
  QZ_CALL(open_linear(ck, block, module, path, sizeof path, &g));
  int st = QZ_OK;
  if (H5Lexists(g, "outliers_idx", H5P_DEFAULT) <= 0) goto done;
  hsize_t odim[2];
  ds_dims(g, "outliers_idx", odim);
  const hsize_t n = odim[0];
  QZ_CALL_DONE(qz_alloc((size_t)n + 1, sizeof(int64_t), "outlier index", idx));
  QZ_CALL_DONE(qz_alloc((size_t)n + 1, sizeof(float), "outlier values", val));
  QZ_CALL_DONE(read_ds(g, "outliers_idx", H5T_NATIVE_INT64, 0, (int64_t)n, *idx));
  QZ_CALL_DONE(read_ds(g, "outliers_val", H5T_NATIVE_FLOAT, 0, (int64_t)n, *val));
  *nnz = (int64_t)n;
done:
  H5Gclose(g);
  if (st != QZ_OK) {
    qz_free(idx);
    qz_free(val);
    *nnz = 0;
    qz_error_prefix("checkpoint %s, %s: ", ck->dir, path);
  }
  return st;
}

void qz_outliers_add_rows(int64_t row0, int64_t nrows, int64_t in, int64_t nnz,
                          const int64_t *idx, const float *val, float *q) {
  for (int64_t k = 0; k < nnz; k++) {
    int64_t r = idx[k] / in;
    if (r >= row0 && r < row0 + nrows) q[(r - row0) * in + idx[k] % in] += val[k];
  }
}

int qz_ckpt_read_norms(qz_ckpt *ck, int block, int64_t hidden,
                       float *attn_norm, float *ffn_norm, int *found) {
  *found = 0;
  QZ_CALL(open_for_read(ck, block));
  char path[256];
  snprintf(path, sizeof path, "/norms/%d", block);
  if (H5Lexists(ck->file, "/norms", H5P_DEFAULT) <= 0 ||
      H5Lexists(ck->file, path, H5P_DEFAULT) <= 0)
    return QZ_OK; /* no folded norms: the model's own apply */
  hid_t g = H5Gopen2(ck->file, path, H5P_DEFAULT);
  QZ_CHECK(g >= 0, QZ_ERR_FORMAT, "checkpoint %s: %s unreadable", ck->dir, path);
  int st = QZ_OK;
  hsize_t ndim[2];
  ds_dims(g, "input_layernorm", ndim);
  const hsize_t n = ndim[0];
  QZ_CHECK_DONE(n == (hsize_t)hidden, QZ_ERR_FORMAT,
                "checkpoint %s: %s/input_layernorm has %llu values, the model "
                "has hidden size %lld", ck->dir, path, (unsigned long long)n,
                (long long)hidden);
  QZ_CALL_DONE(read_ds(g, "input_layernorm", H5T_NATIVE_FLOAT, 0, hidden, attn_norm));
  QZ_CALL_DONE(read_ds(g, "post_attention_layernorm", H5T_NATIVE_FLOAT, 0, hidden,
                       ffn_norm));
  *found = 1;
done:
  H5Gclose(g);
  if (st != QZ_OK) qz_error_prefix("checkpoint %s, %s: ", ck->dir, path);
  return st;
}

int qz_ckpt_act_bits(const qz_ckpt *ck) {
  json_t *v = json_object_get(json_object_get(ck->manifest, "options"), "act_bits");
  return json_is_integer(v) ? (int)json_integer_value(v) : 0;
}

void qz_dequantize_rows(int64_t nrows, int64_t in, int64_t ngroups,
                        const uint8_t *codes, const float *scales,
                        const float *zeros, const int32_t *g_idx, float *q) {
  for (int64_t r = 0; r < nrows; r++) {
    const float *s = scales + r * ngroups, *z = zeros + r * ngroups;
    const uint8_t *c = codes + r * in;
    float *o = q + r * in;
    for (int64_t j = 0; j < in; j++) {
      int32_t g = g_idx[j];
      o[j] = s[g] * ((float)c[j] - z[g]);
    }
  }
}

/* --------------------------------------------------------------- snapshot */

int qz_ckpt_write_snapshot(qz_ckpt *ck, int block, int64_t total_win,
                           int64_t seqlen, int64_t hidden, int64_t win0,
                           int64_t nwin, const float *x) {
  char tmp[PATH_MAX + 32], fin[PATH_MAX + 32];
  snprintf(tmp, sizeof tmp, "%s/act-snapshot.h5.tmp", ck->dir);
  snprintf(fin, sizeof fin, "%s/act-snapshot.h5", ck->dir);
  hid_t fapl = fapl_mpio(ck->comm);
  hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  int st = f >= 0 ? QZ_OK
                  : qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                                 "cannot create %s", tmp);
  QZ_CALL(qz_error_agree(ck->comm, st));
  hsize_t dims[2] = {(hsize_t)(total_win * seqlen), (hsize_t)hidden};
  int save = ck->level;
  ck->level = 1; /* hidden states compress little; favour speed */
  st = write_ds(ck, f, "x", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 2, dims,
                win0 * seqlen, nwin * seqlen, x, (size_t)hidden * 4);
  ck->level = save;
  if (st == QZ_OK) st = attr_int(f, "block", block);
  if (st == QZ_OK) st = attr_int(f, "seqlen", (int)seqlen);
  if (H5Fclose(f) < 0 && st == QZ_OK)
    st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                      "closing %s failed (disk full?)", tmp);
  QZ_CALL(qz_error_agree(ck->comm, st));
  QZ_CALL(publish(ck, tmp, fin));
  json_t *sn = json_object();
  json_object_set_new(sn, "block", json_integer(block));
  json_object_set_new(sn, "file", json_string("act-snapshot.h5"));
  json_object_set_new(ck->manifest, "snapshot", sn);
  QZ_CALL(manifest_commit(ck));
  return QZ_OK;
}

int qz_ckpt_snapshot_block(const qz_ckpt *ck) {
  /* the file's own attribute decides (the rename is atomic; the manifest
   * may lag by one update after a crash) */
  char fin[PATH_MAX + 32];
  snprintf(fin, sizeof fin, "%s/act-snapshot.h5", ck->dir);
  if (access(fin, R_OK) != 0) return -1;
  hid_t f = H5Fopen(fin, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return -1;
  int b = -1;
  hid_t a = H5Aopen(f, "block", H5P_DEFAULT);
  if (a >= 0) {
    if (H5Aread(a, H5T_NATIVE_INT, &b) < 0) b = -1;
    H5Aclose(a);
  }
  H5Fclose(f);
  return b;
}

int qz_ckpt_read_snapshot(qz_ckpt *ck, int64_t total_win, int64_t seqlen,
                          int64_t hidden, int64_t win0, int64_t nwin, float *x) {
  char fin[PATH_MAX + 32];
  snprintf(fin, sizeof fin, "%s/act-snapshot.h5", ck->dir);
  hid_t fapl = fapl_mpio(ck->comm);
  hid_t f = H5Fopen(fin, H5F_ACC_RDONLY, fapl);
  H5Pclose(fapl);
  int st = f >= 0 ? QZ_OK
                  : qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                                 "cannot open %s", fin);
  QZ_CALL(qz_error_agree(ck->comm, st));
  hsize_t dims[2];
  ds_dims(f, "x", dims);
  if (dims[0] != (hsize_t)(total_win * seqlen) || dims[1] != (hsize_t)hidden)
    st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                      "%s holds [%llu, %llu] hidden states, expected [%lld, %lld]",
                      fin, (unsigned long long)dims[0], (unsigned long long)dims[1],
                      (long long)(total_win * seqlen), (long long)hidden);
  if (st == QZ_OK) st = read_ds(f, "x", H5T_NATIVE_FLOAT, win0 * seqlen, nwin * seqlen, x);
  H5Fclose(f);
  QZ_CALL(qz_error_agree(ck->comm, st));
  return QZ_OK;
}
