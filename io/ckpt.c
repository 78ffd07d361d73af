/* The mpiquant checkpoint: parallel HDF5 group files + a JSON manifest.
 * Crash safety: a group file is written as *.tmp and renamed when complete;
 * the manifest is replaced atomically (temp + fsync + rename) after that, so
 * a block is never marked complete before its data is on disk. */
#define _GNU_SOURCE
#include "mpiquant/ckpt.h"
#include "mpiquant/codes.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpiquant/comm.h"
#include "mpiquant/timing.h"
#include "mpiquant/error.h"
#include "mpiquant/file.h"
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
  json_t *digests;    /* dataset path -> digest of the open file's data */
  json_t *dig_to;     /* where write_ds records (digests, or a snapshot's) */
  char *opts_text, *src_text; /* compact serialisations, cached */
  unsigned char *done; /* [nblocks] */
  int lock_fd;        /* rank 0 of a writable checkpoint: flock of .lock */
};

/* ---------------------------------------------------------------- helpers */

/* Test hook (tests/reliability_kill.sh): MPIQUANT_FAULT=io:R:N makes rank R
 * SIGKILL itself at its N-th checkpoint write step (dataset written, file
 * created/closed/fsynced/renamed, manifest temp written/renamed);
 * MPIQUANT_FAULT=io-trace prints every step.  Any crash point must leave a
 * checkpoint that --resume completes identically. */
static void fault_point(const char *what, const char *path) {
  static int mode = -1, rank = -1, victim = -1;
  static long n = 0, at = -1;
  if (mode < 0) {
    const char *f = getenv("MPIQUANT_FAULT");
    mode = 0;
    if (f && sscanf(f, "io:%d:%ld", &victim, &at) == 2) mode = 1;
    else if (f && strcmp(f, "io-trace") == 0) mode = 2;
    int init = 0;
    MPI_Initialized(&init);
    if (init) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  }
  if (!mode) return;
  n++;
  if (mode == 2 && rank == 0) fprintf(stderr, "mpiquant: io step %ld: %s %s\n", n, what, path);
  if (mode == 1 && rank == victim && n == at) {
    fprintf(stderr, "mpiquant: MPIQUANT_FAULT: rank %d killed at io step %ld (%s %s)\n",
            rank, n, what, path);
    fflush(stderr);
    raise(SIGKILL);
  }
}

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

/* Write text to path atomically. Not collective. */
static int write_atomic(const char *path, const char *text) {
  char tmp[PATH_MAX + 40];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  QZ_CHECK(f, QZ_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
  size_t n = strlen(text);
  int ok = fwrite(text, 1, n, f) == n && fputc('\n', f) != EOF;
  ok = fflush(f) == 0 && ok;
  ok = fsync(fileno(f)) == 0 && ok;
  int err = errno;
  ok = fclose(f) == 0 && ok;
  if (!ok) {
    unlink(tmp);
    QZ_FAIL(QZ_ERR_IO, "cannot write %s: %s (disk full?)", tmp, strerror(err));
  }
  fault_point("written", tmp);
  if (rename(tmp, path) != 0) {
    err = errno;
    unlink(tmp);
    QZ_FAIL(QZ_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(err));
  }
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash) {
    *slash = '\0';
    fsync_path(dir, 1);
  }
  fault_point("renamed", path);
  return QZ_OK;
}

static int read_text(const char *path, char **out) {
  size_t len;
  QZ_CALL(qz_file_read_all(path, out, &len));
  if (len >= (1u << 30)) {
    free(*out);
    *out = NULL;
    QZ_FAIL(QZ_ERR_FORMAT, "%s: unexpected size %zu bytes for a manifest", path, len);
  }
  return QZ_OK;
}

/* Rank 0 writes the manifest; every rank ends with the same copy. */
static int manifest_commit(qz_ckpt *ck) {
  int st = QZ_OK;
  char path[PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/manifest.json", ck->dir);
  char *text = json_dumps(ck->manifest, JSON_INDENT(1) | JSON_SORT_KEYS);
  if (!text) st = qz_error_set(QZ_ERR_MEM, __FILE__, __LINE__, __func__,
                               "cannot serialise the manifest");
  /* our own atomic write: its temporary name (manifest.json.tmp) is one
   * that resume cleans up, and the kill tests' fault points are in it */
  if (st == QZ_OK && ck->rank == 0) st = write_atomic(path, text);
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
  if (!fmt || strcmp(fmt, QZ_CKPT_FORMAT) != 0 || ver < QZ_CKPT_VERSION_MIN_READ ||
      ver > QZ_CKPT_VERSION ||
      !json_is_integer(json_object_get(m, "nblocks")) ||
      !json_is_integer(json_object_get(m, "blocks_per_file")) ||
      !json_is_array(json_object_get(m, "completed_blocks")) ||
      !json_is_object(json_object_get(m, "options")) ||
      !json_is_object(json_object_get(m, "source"))) {
    /* the message is formatted before m (which owns fmt) is freed */
    int st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                          "%s: not an %s version %d..%d manifest (format '%s', "
                          "version %lld) or a required key (nblocks, "
                          "blocks_per_file, completed_blocks, options, source) "
                          "is missing",
                          path, QZ_CKPT_FORMAT, QZ_CKPT_VERSION_MIN_READ,
                          QZ_CKPT_VERSION, fmt ? fmt : "?",
                          (long long)ver);
    json_decref(m);
    return st;
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
  qz_count_bcast(comm, 0, (int64_t)sizeof len + len);
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

/* First difference of two source fingerprints, naming the file whose size
 * or content differs. */
static void source_diff(json_t *want, json_t *have, char *buf, size_t len) {
  json_t *wf = json_object_get(want, "files"), *hf = json_object_get(have, "files");
  if (json_equal(json_object_get(want, "config"), json_object_get(have, "config")) &&
      json_is_array(wf) && json_is_array(hf)) {
    size_t n = json_array_size(wf) > json_array_size(hf) ? json_array_size(wf)
                                                        : json_array_size(hf);
    for (size_t i = 0; i < n; i++) {
      json_t *a = json_array_get(wf, i), *b = json_array_get(hf, i);
      const char *an = json_string_value(json_object_get(a, "name"));
      const char *bn = json_string_value(json_object_get(b, "name"));
      if (!a || !b || !an || !bn || strcmp(an, bn) != 0) {
        snprintf(buf, len, "the model's files are %s..., the checkpoint's %s...",
                 an ? an : "(none)", bn ? bn : "(none)");
        return;
      }
      if (!json_equal(a, b)) {
        json_t *ac = json_object_get(a, "content"), *bc = json_object_get(b, "content");
        snprintf(buf, len, "%s: %lld bytes, content digest %s; the checkpoint's source "
                 "had %lld bytes, content digest %s", an,
                 (long long)json_integer_value(json_object_get(a, "bytes")),
                 ac ? json_string_value(ac) : "-",
                 (long long)json_integer_value(json_object_get(b, "bytes")),
                 bc ? json_string_value(bc) : "-");
        return;
      }
    }
  }
  json_first_diff(want, have, buf, len);
}

/* A copy of a fingerprint without the files' content digests. */
static json_t *without_content(json_t *src) {
  json_t *c = json_deep_copy(src);
  size_t i;
  json_t *f;
  json_array_foreach(json_object_get(c, "files"), i, f) json_object_del(f, "content");
  return c;
}

int qz_ckpt_check_source(const qz_ckpt *ck, const char *source_json, const char *what) {
  json_t *have = json_object_get(ck->manifest, "source");
  json_t *want = json_loads(source_json, 0, NULL);
  QZ_CHECK(want, QZ_ERR_INTERNAL, "qz_ckpt_check_source: fingerprint is not JSON");
  int has_content = 0;
  size_t i;
  json_t *f;
  json_array_foreach(json_object_get(have, "files"), i, f)
    has_content |= json_object_get(f, "content") != NULL;
  json_t *w = has_content ? json_incref(want) : without_content(want);
  int st = QZ_OK;
  if (!json_equal(w, have)) {
    char diff[1024];
    source_diff(w, have, diff, sizeof diff);
    st = qz_error_set(QZ_ERR_ARG, __FILE__, __LINE__, __func__,
                      "%s: the model is not the one checkpoint %s was made from "
                      "(%s); pass the right --model", what, ck->dir, diff);
  } else if (!has_content) {
    qz_warn("%s: checkpoint %s records no content digest of its source model "
            "(version 1): only config.json and file sizes were compared", what,
            ck->dir);
  }
  json_decref(w);
  json_decref(want);
  return st;
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
  ck->lock_fd = -1;
  ck->digests = json_object();
  ck->dig_to = ck->digests;
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
  json_int_t nb = json_integer_value(json_object_get(ck->manifest, "nblocks"));
  json_int_t bpf = json_integer_value(json_object_get(ck->manifest, "blocks_per_file"));
  /* checked as 64-bit values: 2^62 must not read as 0 after a cast */
  QZ_CHECK(nb > 0 && nb <= QZ_CKPT_MAX_BLOCKS && bpf > 0 && bpf <= QZ_CKPT_MAX_BLOCKS,
           QZ_ERR_FORMAT,
           "%s/manifest.json: nblocks %lld and blocks_per_file %lld must be in "
           "1..%d", ck->dir, (long long)nb, (long long)bpf, QZ_CKPT_MAX_BLOCKS);
  ck->nblocks = (int)nb;
  ck->bpf = (int)bpf;
  QZ_CALL(qz_calloc((size_t)ck->nblocks, 1, "block flags", &ck->done));
  size_t i;
  json_t *b;
  json_array_foreach(json_object_get(ck->manifest, "completed_blocks"), i, b) {
    json_int_t k = json_integer_value(json_object_get(b, "block"));
    QZ_CHECK(json_is_integer(json_object_get(b, "block")) && k >= 0 &&
                 k < ck->nblocks,
             QZ_ERR_FORMAT, "%s/manifest.json: completed_blocks[%zu] has no "
             "valid block index (0..%d)", ck->dir, i, ck->nblocks - 1);
    QZ_CHECK(!ck->done[k], QZ_ERR_FORMAT,
             "%s/manifest.json: block %lld is listed twice in completed_blocks; "
             "the manifest was edited or is damaged", ck->dir, (long long)k);
    ck->done[k] = 1;
  }
  return QZ_OK;
}

static int verify_one(qz_ckpt *ck, const char *file, json_t *recorded, int64_t *nds,
                      char *why, size_t len);
static void drop_file_entries(qz_ckpt *ck, const char *base);

/* --resume trusts no file it did not check: every completed file must open
 * and match its recorded digests; a missing, truncated or damaged one is
 * reported and its blocks are done again (the rewrite is identical: the
 * blocks after it were computed from its correct data).  Collective. */
static int resume_verify(qz_ckpt *ck) {
  json_t *files = json_deep_copy(json_object_get(ck->manifest, "files"));
  size_t i;
  json_t *fe;
  int64_t nds = 0;
  int st = QZ_OK;
  char why[PATH_MAX + 512];
  json_array_foreach(files, i, fe) {
    const char *file = json_string_value(json_object_get(fe, "file"));
    if (!file) continue;
    st = verify_one(ck, file, json_object_get(fe, "datasets"), &nds, why, sizeof why);
    if (st != QZ_OK) break;
    if (!why[0]) continue;
    if (ck->rank == 0) qz_warn("resume: %s; its blocks are quantized again", why);
    drop_file_entries(ck, file);
  }
  json_decref(files);
  QZ_CALL(st);
  /* a damaged snapshot is dropped: the hidden states are then replayed from
   * the embedding through the (verified) completed blocks */
  char snap[PATH_MAX + 64];
  snprintf(snap, sizeof snap, "%s/act-snapshot.h5", ck->dir);
  if (access(snap, F_OK) == 0) {
    json_t *sn = json_object_get(ck->manifest, "snapshot");
    int same = json_is_object(sn) && qz_ckpt_snapshot_block(ck) ==
                                         (int)json_integer_value(json_object_get(sn, "block"));
    QZ_CALL(verify_one(ck, "act-snapshot.h5", same ? json_object_get(sn, "datasets") : NULL,
                       &nds, why, sizeof why));
    if (why[0]) {
      if (ck->rank == 0) {
        qz_warn("resume: %s; the snapshot is not used", why);
        unlink(snap);
      }
      QZ_CALL_MPI(MPI_Barrier(ck->comm));
    }
  }
  /* completed blocks whose file is not (or no longer) listed */
  memset(ck->done, 0, (size_t)ck->nblocks);
  json_array_foreach(json_object_get(ck->manifest, "completed_blocks"), i, fe)
    ck->done[json_integer_value(json_object_get(fe, "block"))] = 1;
  for (int b = 0; b < ck->nblocks; b++) {
    char base[32];
    snprintf(base, sizeof base, "blocks-%03d.h5", b / ck->bpf);
    int listed = 0;
    json_array_foreach(json_object_get(ck->manifest, "files"), i, fe) {
      const char *f = json_string_value(json_object_get(fe, "file"));
      listed |= f && strcmp(f, base) == 0;
    }
    if (ck->done[b] && !listed) {
      if (ck->rank == 0)
        qz_warn("resume: block %d is marked complete but %s is not recorded; it is "
                "quantized again", b, base);
      ck->done[b] = 0;
    }
  }
  return QZ_OK;
}

/* One writer per checkpoint: an advisory lock (flock) on CKPT/.lock, held
 * by rank 0 until the handle is closed. Not collective. */
static int lock_dir(qz_ckpt *ck) {
  char p[PATH_MAX + 16];
  snprintf(p, sizeof p, "%s/.lock", ck->dir);
  int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  QZ_CHECK(fd >= 0, QZ_ERR_IO, "cannot write into %s: %s", ck->dir, strerror(errno));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    close(fd);
    QZ_CHECK(e != EWOULDBLOCK, QZ_ERR_IO,
             "%s is being written by another mpiquant job (its lock %s is held); "
             "wait for it or choose another --out", ck->dir, p);
    QZ_FAIL(QZ_ERR_IO, "cannot lock %s: %s", p, strerror(e));
  }
  ck->lock_fd = fd;
  return QZ_OK;
}

/* A new checkpoint goes into an empty directory or one without anything
 * named like our files: a user's blocks-000.h5 is never overwritten. */
static int refuse_foreign(const char *dir) {
  DIR *d = opendir(dir);
  QZ_CHECK(d, QZ_ERR_IO, "cannot read %s: %s", dir, strerror(errno));
  struct dirent *e;
  char found[300] = "";
  while ((e = readdir(d)) && !found[0]) {
    int n = 0, k;
    const char *nm = e->d_name;
    if ((sscanf(nm, "blocks-%d.h5%n", &k, &n) == 1 && n > 0) ||
        strncmp(nm, "act-snapshot.h5", 15) == 0 || strcmp(nm, "manifest.json.tmp") == 0)
      snprintf(found, sizeof found, "%s", nm);
  }
  closedir(d);
  QZ_CHECK(!found[0], QZ_ERR_ARG,
           "%s holds %s but no manifest.json: it is not an mpiquant checkpoint (or "
           "its manifest was lost); choose another --out", dir, found);
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
      st = lock_dir(ck);
      if (st == QZ_OK && !exists) st = refuse_foreign(ck->dir);
      if (st == QZ_OK && exists && !resume)
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
  qz_count_bcast(ck->comm, 0, (int64_t)sizeof exists);

  if (resume && exists) {
    QZ_CALL_DONE(manifest_load_bcast(ck->comm, ck->rank, ck->dir, &ck->manifest));
    json_int_t ver = json_integer_value(json_object_get(ck->manifest, "version"));
    QZ_CHECK_DONE(ver == QZ_CKPT_VERSION, QZ_ERR_ARG,
                  "cannot resume %s: it is a version %lld checkpoint (made by an "
                  "older mpiquant); this version resumes version %d only. Finish it "
                  "with the mpiquant that made it, or start a new --out",
                  ck->dir, (long long)ver, QZ_CKPT_VERSION);
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
      source_diff(src, ms, diff, sizeof diff);
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
    QZ_CALL_DONE(resume_verify(ck));
    /* drop every temporary file a crash can leave (group files that never
     * completed, the snapshot and manifest being written) */
    if (ck->rank == 0) {
      for (int idx = 0; idx * ck->bpf < ck->nblocks; idx++) {
        char tmp[PATH_MAX + 32];
        group_name(ck, idx, 1, tmp, sizeof tmp);
        unlink(tmp);
      }
      static const char *const temps[] = {"act-snapshot.h5.tmp", "manifest.json.tmp",
                                          ".write-test"};
      for (size_t k = 0; k < sizeof temps / sizeof *temps; k++) {
        char tmp[PATH_MAX + 32];
        snprintf(tmp, sizeof tmp, "%s/%s", ck->dir, temps[k]);
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
  fault_point("closed", tmp);
  if (ck->rank == 0) {
    if (fsync_path(tmp, 0) != 0 || rename(tmp, fin) != 0)
      st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                        "cannot finalise %s: %s", fin, strerror(errno));
    else
      fsync_path(ck->dir, 1);
  }
  fault_point("published", fin);
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
  json_decref(ck->digests);
  if (ck->lock_fd >= 0) close(ck->lock_fd); /* releases the flock */
  free(ck->done);
  free(ck->opts_text);
  free(ck->src_text);
  if (ck->comm != MPI_COMM_NULL) MPI_Comm_free(&ck->comm);
  free(ck);
  *pck = NULL;
}

int qz_ckpt_nblocks(const qz_ckpt *ck) { return ck->nblocks; }
int qz_ckpt_version(const qz_ckpt *ck) {
  return (int)json_integer_value(json_object_get(ck->manifest, "version"));
}
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

/* A string attribute of any length (free()). */
static int read_attr_alloc(hid_t obj, const char *name, char **out) {
  *out = NULL;
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  QZ_CHECK(a >= 0, QZ_ERR_FORMAT, "attribute %s missing", name);
  hid_t t = H5Aget_type(a);
  size_t n = H5Tget_size(t);
  char *tmp = calloc(n + 1, 1);
  herr_t r = tmp ? H5Aread(a, t, tmp) : -1;
  H5Tclose(t);
  H5Aclose(a);
  if (r < 0) {
    free(tmp);
    QZ_FAIL(QZ_ERR_FORMAT, "attribute %s unreadable", name);
  }
  *out = tmp;
  return QZ_OK;
}

static int read_attr_str(hid_t obj, const char *name, char *buf, size_t len) {
  char *tmp = NULL;
  QZ_CALL(read_attr_alloc(obj, name, &tmp));
  snprintf(buf, len, "%s", tmp);
  free(tmp);
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
  json_object_clear(ck->digests);
  char path[PATH_MAX + 32];
  group_name(ck, idx, 1, path, sizeof path);
  hid_t fapl = fapl_mpio(ck->comm);
  hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
  fault_point("create", path);
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

/* Digest of rows [row0, row0 + nrows) of rowbytes each (a 1-D dataset's
 * rows are its elements): a sum of per-row parts, so any split of the rows
 * over ranks sums to the same value. */
static uint64_t rows_digest(const void *data, int64_t row0, int64_t nrows,
                            size_t rowbytes) {
  const unsigned char *p = data;
  uint64_t d = 0;
  for (int64_t r = 0; r < nrows; r++)
    d += qz_hash_part((uint64_t)(row0 + r), p + (size_t)r * rowbytes, rowbytes);
  return d;
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
  /* digest of the whole dataset: this rank's rows, summed over the ranks
   * (recorded in the manifest; mpiquant verify and --resume recompute it) */
  uint64_t dig = nrows > 0 ? rows_digest(data, row0 > 0 ? row0 : 0, nrows,
                                         elem_per_row_bytes)
                           : 0;
  {
    int rc = MPI_Allreduce(MPI_IN_PLACE, &dig, 1, MPI_UINT64_T, MPI_SUM, ck->comm);
    qz_count_allreduce(ck->comm, (int64_t)sizeof dig);
    if (rc != MPI_SUCCESS) {
      st = qz_mpi_error(rc, "MPI_Allreduce(digest)", __FILE__, __LINE__, __func__);
      goto done;
    }
  }
  if (ck->dig_to) {
    char key[512], hex[20];
    ssize_t gl = H5Iget_name(grp, key, sizeof key);
    if (gl < 0) key[0] = '\0';
    size_t kl = strlen(key);
    snprintf(key + kl, sizeof key - kl, "%s%s", kl && key[kl - 1] == '/' ? "" : "/", name);
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)dig);
    json_object_set_new(ck->dig_to, key, json_string(hex));
  }
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
  /* payload handed to HDF5 (before zstd): this rank's rows */
  qz_bytes_add(QZ_BYTES_FILE_WRITE, nrows * (int64_t)(elem_per_row_bytes ? elem_per_row_bytes : 1));
  fault_point("dataset", name);
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
  /* the int grid is not recorded: such files are the same as before grids */
  if (m->grid[0] && strcmp(m->grid, "int") != 0) {
    QZ_CHECK_DONE(qz_vgrid_from_name(m->grid) > 0, QZ_ERR_INTERNAL,
                  "%s: unknown value grid '%s'", path, m->grid);
    QZ_CALL_DONE(attr_str(g, "grid", m->grid));
  }
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

/* Forget the manifest's entries of group file `base` (it is being written
 * again). Not collective. */
static void drop_file_entries(qz_ckpt *ck, const char *base) {
  const char *keys[2] = {"files", "completed_blocks"};
  for (int k = 0; k < 2; k++) {
    json_t *a = json_object_get(ck->manifest, keys[k]);
    for (size_t i = json_array_size(a); i-- > 0;) {
      const char *f = json_string_value(json_object_get(json_array_get(a, i), "file"));
      if (f && strcmp(f, base) == 0) json_array_remove(a, i);
    }
  }
}

/* Insert e (reference stolen) into arr, ordered by key (an integer or a
 * string): a resumed manifest lists files and blocks in the same order as
 * an uninterrupted one. */
static void insert_sorted(json_t *arr, json_t *e, const char *key) {
  json_t *k = json_object_get(e, key);
  size_t pos = json_array_size(arr);
  while (pos > 0) {
    json_t *p = json_object_get(json_array_get(arr, pos - 1), key);
    int after = json_is_integer(k) ? json_integer_value(p) < json_integer_value(k)
                                   : strcmp(json_string_value(p) ? json_string_value(p) : "",
                                            json_string_value(k) ? json_string_value(k) : "") < 0;
    if (after) break;
    pos--;
  }
  json_array_insert_new(arr, pos, e);
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
  json_object_set_new(fe, "datasets", ck->digests);
  ck->digests = ck->dig_to = json_object();
  /* a file written again (resume redoing a damaged or missing file)
   * replaces its old entries */
  drop_file_entries(ck, base);
  insert_sorted(files, fe, "file");
  json_t *done = json_object_get(ck->manifest, "completed_blocks");
  size_t i;
  json_t *e;
  json_array_foreach(ck->pending, i, e) {
    json_object_set_new(e, "file", json_string(base));
    insert_sorted(done, json_incref(e), "block");
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
  qz_count_bcast(ck->comm, 0, (int64_t)sizeof len + len);
  json_t *m = json_loads(text, 0, NULL);
  free(text);
  QZ_CHECK(m, QZ_ERR_INTERNAL, "manifest broadcast did not parse");
  json_decref(ck->manifest);
  ck->manifest = m;
  QZ_CALL(manifest_commit(ck));
  return QZ_OK;
}

/* ------------------------------------------------------------------- read */

static int check_group_file(qz_ckpt *ck, int idx, const char *path);

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
  /* a FIFO or a directory would hang or flood MPI-IO: check it first, on
   * every rank (each opens the file) */
  QZ_CALL(qz_error_agree(ck->comm, qz_file_check_input(path)));
  hid_t fapl = fapl_mpio(ck->comm);
  ck->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  H5Pclose(fapl);
  QZ_CHECK(ck->file >= 0, QZ_ERR_IO, "cannot open checkpoint file %s (not an "
           "HDF5 file, or damaged)", path);
  ck->file_index = idx;
  int st = check_group_file(ck, idx, path);
  if (st != QZ_OK) close_file(ck); /* not kept open as if it were valid */
  QZ_CALL(st);
  return QZ_OK;
}

/* Root attributes of the open group file idx: ours, this checkpoint's. */
static int check_group_file(qz_ckpt *ck, int idx, const char *path) {
  char fmt[64] = "";
  int ver = 0;
  QZ_CALL(read_attr_str(ck->file, "format", fmt, sizeof fmt));
  QZ_CALL(read_attr_num(ck->file, "version", H5T_NATIVE_INT, &ver));
  QZ_CHECK(strcmp(fmt, QZ_CKPT_FORMAT) == 0 && ver >= QZ_CKPT_VERSION_MIN_READ &&
               ver <= QZ_CKPT_VERSION,
           QZ_ERR_FORMAT, "%s: format '%s' version %d, expected %s version %d..%d",
           path, fmt, ver, QZ_CKPT_FORMAT, QZ_CKPT_VERSION_MIN_READ, QZ_CKPT_VERSION);
  /* a group file copied in from another run must not pass as this one's */
  int first = -1;
  QZ_CALL(read_attr_num(ck->file, "first_block", H5T_NATIVE_INT, &first));
  QZ_CHECK(first == idx * ck->bpf, QZ_ERR_FORMAT,
           "%s holds blocks from %d, the manifest expects it to start at block %d "
           "(a file of another checkpoint?)", path, first, idx * ck->bpf);
  char *opts = NULL;
  QZ_CALL(read_attr_alloc(ck->file, "options", &opts));
  json_t *fo = json_loads(opts, 0, NULL);
  int same = fo && json_equal(fo, json_object_get(ck->manifest, "options"));
  json_decref(fo);
  free(opts);
  QZ_CHECK(same, QZ_ERR_FORMAT,
           "%s was written by a run with other options than %s/manifest.json "
           "records (a file of another checkpoint?)", path, ck->dir);
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
    snprintf(m->grid, sizeof m->grid, "int");
    if (H5Aexists(g, "grid") > 0) {
      QZ_CALL_DONE(read_attr_str(g, "grid", m->grid, sizeof m->grid));
      QZ_CHECK_DONE(qz_vgrid_from_name(m->grid) >= 0, QZ_ERR_FORMAT,
                    "checkpoint %s: %s has value grid '%s' (known: int, nf4, fp4, "
                    "fp8_e4m3; written by a newer mpiquant?)", ck->dir, path, m->grid);
    }
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
  if (r >= 0 && buf && nrows > 0) /* payload read (after decompression) */
    qz_bytes_add(QZ_BYTES_FILE_READ, nrows * (int64_t)cnt[1] * (int64_t)H5Tget_size(mtype));
  QZ_CHECK_DONE(r >= 0, QZ_ERR_FORMAT, "reading dataset %s failed: its data does not "
                "decode (a zstd checksum mismatch: the file is damaged; mpiquant "
                "verify lists the damage, quantize --resume rewrites it)", name);
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
  /* every rank takes part in every collective read, with or without data,
   * also after a read failed here (damaged data fails on the ranks that
   * decode it only): the rest is read without data, then all agree */
  {
    const char *names[5] = {"codes", "scales", "zeros", "g_idx", "perm"};
    const hid_t types[5] = {H5T_NATIVE_UINT8, H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT,
                            H5T_NATIVE_INT32, H5T_NATIVE_INT32};
    void *bufs[5] = {codes, scales, zeros, g_idx, perm};
    for (int k = 0; k < 5; k++) {
      int64_t r0 = k < 3 ? row0 : 0, n = k < 3 ? nrows : (int64_t)in;
      int sk = read_ds(g, names[k], types[k], r0, bufs[k] && st == QZ_OK ? n : 0,
                       st == QZ_OK ? bufs[k] : NULL);
      if (sk != QZ_OK && st == QZ_OK) {
        st = sk;
        qz_error_prefix("checkpoint %s, %s: ", ck->dir, path);
      }
    }
  }
  H5Gclose(g);
  st = qz_error_agree(ck->comm, st);
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
  qz_count_allgather(ck->comm, 8, 8 * (int64_t)ck->size); /* the scan, as a gather */
  qz_count_allreduce(ck->comm, 8);
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
  qz_dequantize_rows_grid(nrows, in, ngroups, codes, scales, zeros, g_idx, NULL, q);
}

/* ------------------------------------------------------- auxiliary data */

/* "/aux/<block>" and a checked dataset name (letters, digits, '_', '.'). */
static int aux_path(int block, const char *name, char *path, size_t len) {
  QZ_CHECK(name && name[0] && strlen(name) < 128, QZ_ERR_INTERNAL, "bad aux name");
  for (const char *c = name; *c; c++)
    QZ_CHECK(isalnum((unsigned char)*c) || *c == '_' || *c == '.', QZ_ERR_INTERNAL,
             "aux dataset name '%s': only letters, digits, '_' and '.'", name);
  snprintf(path, len, "/aux/%d", block);
  return QZ_OK;
}

int qz_ckpt_write_aux(qz_ckpt *ck, int block, const char *name, int64_t n0, int64_t n1,
                      const float *v) {
  QZ_CHECK(ck->file >= 0 && ck->file_index == block / ck->bpf, QZ_ERR_INTERNAL,
           "qz_ckpt_begin_block(%d) was not called", block);
  char path[64];
  QZ_CALL(aux_path(block, name, path, sizeof path));
  /* the block's group exists after its first aux dataset */
  hid_t g = H5Lexists(ck->file, "/aux", H5P_DEFAULT) > 0 &&
                    H5Lexists(ck->file, path, H5P_DEFAULT) > 0
                ? H5Gopen2(ck->file, path, H5P_DEFAULT)
                : create_group(ck->file, path);
  QZ_CHECK(g >= 0, QZ_ERR_HDF5, "cannot create group %s", path);
  int st = QZ_OK;
  hsize_t d[2] = {(hsize_t)n0, (hsize_t)(n1 > 0 ? n1 : 1)};
  int64_t r = ck->rank == 0 ? n0 : 0; /* replicated: rank 0 writes */
  st = write_ds(ck, g, name, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 2, d, 0, r, v,
                (size_t)d[1] * 4);
  H5Gclose(g);
  return st;
}

int qz_ckpt_read_aux(qz_ckpt *ck, int block, const char *name, int64_t n0, int64_t n1,
                     float *v, int *found) {
  *found = 0;
  QZ_CALL(open_for_read(ck, block));
  char path[64];
  QZ_CALL(aux_path(block, name, path, sizeof path));
  if (H5Lexists(ck->file, "/aux", H5P_DEFAULT) <= 0 ||
      H5Lexists(ck->file, path, H5P_DEFAULT) <= 0)
    return QZ_OK;
  hid_t g = H5Gopen2(ck->file, path, H5P_DEFAULT);
  QZ_CHECK(g >= 0, QZ_ERR_FORMAT, "checkpoint %s: %s unreadable", ck->dir, path);
  int st = QZ_OK;
  if (H5Lexists(g, name, H5P_DEFAULT) <= 0) goto done;
  hsize_t d[2] = {0, 0};
  QZ_CHECK_DONE(ds_dims(g, name, d) == 2 && d[0] == (hsize_t)n0 &&
                d[1] == (hsize_t)(n1 > 0 ? n1 : 1), QZ_ERR_FORMAT,
                "checkpoint %s: %s/%s is [%llu, %llu], expected [%lld, %lld]", ck->dir,
                path, name, (unsigned long long)d[0], (unsigned long long)d[1],
                (long long)n0, (long long)(n1 > 0 ? n1 : 1));
  QZ_CALL_DONE(read_ds(g, name, H5T_NATIVE_FLOAT, 0, n0, v));
  *found = 1;
done:
  H5Gclose(g);
  if (st != QZ_OK) qz_error_prefix("checkpoint %s, %s/%s: ", ck->dir, path, name);
  return st;
}

/* --------------------------------------------------------------- snapshot */

int qz_ckpt_write_snapshot(qz_ckpt *ck, int block, int64_t total_win,
                           int64_t seqlen, int64_t hidden, int64_t win0,
                           int64_t nwin, const float *x) {
  char tmp[PATH_MAX + 32], fin[PATH_MAX + 32];
  snprintf(tmp, sizeof tmp, "%s/act-snapshot.h5.tmp", ck->dir);
  snprintf(fin, sizeof fin, "%s/act-snapshot.h5", ck->dir);
  hid_t fapl = fapl_mpio(ck->comm);
  fault_point("create", tmp);
  hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  int st = f >= 0 ? QZ_OK
                  : qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                                 "cannot create %s", tmp);
  QZ_CALL(qz_error_agree(ck->comm, st));
  hsize_t dims[2] = {(hsize_t)(total_win * seqlen), (hsize_t)hidden};
  int save = ck->level;
  ck->level = 1; /* hidden states compress little; favour speed */
  json_t *sdig = json_object();
  ck->dig_to = sdig;
  st = write_ds(ck, f, "x", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 2, dims,
                win0 * seqlen, nwin * seqlen, x, (size_t)hidden * 4);
  ck->dig_to = ck->digests;
  ck->level = save;
  if (st == QZ_OK) st = attr_int(f, "block", block);
  if (st == QZ_OK) st = attr_int(f, "seqlen", (int)seqlen);
  if (H5Fclose(f) < 0 && st == QZ_OK)
    st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                      "closing %s failed (disk full?)", tmp);
  st = qz_error_agree(ck->comm, st);
  if (st == QZ_OK) st = publish(ck, tmp, fin);
  if (st != QZ_OK) {
    json_decref(sdig);
    QZ_CALL(st);
  }
  json_t *sn = json_object();
  json_object_set_new(sn, "block", json_integer(block));
  json_object_set_new(sn, "file", json_string("act-snapshot.h5"));
  json_object_set_new(sn, "datasets", sdig);
  json_object_set_new(ck->manifest, "snapshot", sn);
  QZ_CALL(manifest_commit(ck));
  return QZ_OK;
}

int qz_ckpt_snapshot_current(const qz_ckpt *ck, int block) {
  json_t *sn = json_object_get(ck->manifest, "snapshot");
  return json_is_object(sn) && json_integer_value(json_object_get(sn, "block")) == block &&
         qz_ckpt_snapshot_block(ck) == block;
}

int qz_ckpt_snapshot_block(const qz_ckpt *ck) {
  /* the file's own attribute decides (the rename is atomic; the manifest
   * may lag by one update after a crash) */
  char fin[PATH_MAX + 32];
  snprintf(fin, sizeof fin, "%s/act-snapshot.h5", ck->dir);
  if (qz_file_check_input(fin) != QZ_OK) {
    qz_error_clear();
    return -1;
  }
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
  QZ_CALL(qz_error_agree(ck->comm, qz_file_check_input(fin)));
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

/* ----------------------------------------------------------------- verify */

#define VERIFY_SLAB_BYTES ((size_t)32 << 20)

/* Digest of dataset `path` of f as write_ds computed it, read in row slabs
 * spread over the ranks (independent reads: a chunk that fails to decode on
 * one rank cannot stall the others).  *bad = 1 when it cannot be opened or
 * a chunk does not decode.  Collective on the checkpoint's communicator. */
static int digest_dataset(qz_ckpt *ck, hid_t f, const char *path, uint64_t *dig,
                          int *bad) {
  *dig = 0;
  *bad = 0;
  int st = QZ_OK;
  unsigned char *buf = NULL;
  hid_t d = H5Dopen2(f, path, H5P_DEFAULT), fs = -1, ft = -1, mt = -1, dx = -1;
  if (d < 0) {
    *bad = 1;
    return QZ_OK;
  }
  fs = H5Dget_space(d);
  ft = H5Dget_type(d);
  mt = H5Tget_native_type(ft, H5T_DIR_ASCEND);
  int nd = H5Sget_simple_extent_ndims(fs);
  hsize_t dims[2] = {0, 1};
  if (nd < 1 || nd > 2 || mt < 0) {
    *bad = 1;
    goto done;
  }
  H5Sget_simple_extent_dims(fs, dims, NULL);
  size_t esz = H5Tget_size(mt), rowbytes = esz * (nd == 2 ? (size_t)dims[1] : 1);
  int64_t r0, nr, maxr = ((int64_t)dims[0] + ck->size - 1) / ck->size;
  qz_split_even((int64_t)dims[0], ck->size, ck->rank, &r0, &nr);
  int64_t per = (int64_t)(VERIFY_SLAB_BYTES / (rowbytes ? rowbytes : 1));
  if (per < 1) per = 1;
  if (per > maxr) per = maxr > 0 ? maxr : 1;
  QZ_CALL_DONE(qz_alloc((size_t)per * rowbytes + 1, 1, "verify slab", &buf));
  dx = H5Pcreate(H5P_DATASET_XFER);
  H5Pset_dxpl_mpio(dx, H5FD_MPIO_INDEPENDENT);
  uint64_t local = 0;
  for (int64_t a = 0; a < nr && !*bad; a += per) {
    int64_t n = nr - a < per ? nr - a : per;
    hsize_t off[2] = {(hsize_t)(r0 + a), 0}, cnt[2] = {(hsize_t)n, dims[1]};
    hid_t ms = H5Screate_simple(nd, cnt, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
    if (H5Dread(d, mt, ms, fs, dx, buf) < 0) *bad = 1;
    H5Sclose(ms);
    if (!*bad) local += rows_digest(buf, r0 + a, n, rowbytes);
  }
  *dig = local;
done:
  {
    int flags[1] = {*bad};
    int rc = MPI_Allreduce(MPI_IN_PLACE, flags, 1, MPI_INT, MPI_MAX, ck->comm);
    if (rc == MPI_SUCCESS)
      rc = MPI_Allreduce(MPI_IN_PLACE, dig, 1, MPI_UINT64_T, MPI_SUM, ck->comm);
    if (rc != MPI_SUCCESS && st == QZ_OK)
      st = qz_mpi_error(rc, "MPI_Allreduce(verify)", __FILE__, __LINE__, __func__);
    *bad = flags[0];
  }
  free(buf);
  if (dx >= 0) H5Pclose(dx);
  if (mt >= 0) H5Tclose(mt);
  if (ft >= 0) H5Tclose(ft);
  if (fs >= 0) H5Sclose(fs);
  H5Dclose(d);
  return st;
}

/* Dataset paths of a file without recorded digests (version 1). */
static herr_t collect_ds(hid_t g, const char *name, const H5L_info_t *info, void *data) {
  (void)info;
  hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
  if (d >= 0) {
    char p[512];
    snprintf(p, sizeof p, "/%s", name);
    json_object_set_new((json_t *)data, p, json_null());
    H5Dclose(d);
  }
  return 0;
}

/* Check group file or snapshot `file` against `recorded` (path -> digest;
 * NULL: only that every dataset decodes).  *why gets the first problem
 * ("" when whole).  Collective on the checkpoint's communicator. */
static int verify_one(qz_ckpt *ck, const char *file, json_t *recorded, int64_t *nds,
                      char *why, size_t len) {
  why[0] = '\0';
  char path[PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/%s", ck->dir, file);
  int st = qz_file_check_input(path);
  if (st != QZ_OK) {
    snprintf(why, len, "%s", qz_error_message());
    qz_error_clear();
    return QZ_OK; /* the same on every rank (one file system) */
  }
  hid_t fapl = fapl_mpio(ck->comm);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  H5Pclose(fapl);
  int ok = f >= 0, all_ok = ok;
  QZ_CALL_MPI(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, ck->comm));
  if (!all_ok) {
    if (f >= 0) H5Fclose(f);
    snprintf(why, len, "%s: not a readable HDF5 file (truncated or damaged)", path);
    return QZ_OK;
  }
  json_t *list = recorded ? json_incref(recorded) : json_object();
  if (!recorded) H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, collect_ds, list);
  const char *key;
  json_t *v;
  json_object_foreach(list, key, v) {
    uint64_t dig;
    int bad;
    st = digest_dataset(ck, f, key, &dig, &bad);
    if (st != QZ_OK) break;
    (*nds)++;
    char hex[20];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)dig);
    if (bad) {
      snprintf(why, len, "%s: dataset %s is missing or its data does not decode "
               "(a zstd checksum mismatch: the file is damaged)", path, key);
      break;
    }
    if (json_is_string(v) && strcmp(json_string_value(v), hex) != 0) {
      snprintf(why, len, "%s: dataset %s has digest %s, the manifest records %s "
               "(the data changed after it was written)", path, key, hex,
               json_string_value(v));
      break;
    }
  }
  json_decref(list);
  H5Fclose(f);
  return st;
}

int qz_ckpt_verify(qz_ckpt *ck, int *ndamaged, int64_t *ndatasets) {
  *ndamaged = 0;
  *ndatasets = 0;
  char why[PATH_MAX + 512];
  size_t i;
  json_t *fe;
  json_t *files = json_object_get(ck->manifest, "files");
  json_array_foreach(files, i, fe) {
    const char *file = json_string_value(json_object_get(fe, "file"));
    if (!file) continue;
    QZ_CALL(verify_one(ck, file, json_object_get(fe, "datasets"), ndatasets, why,
                       sizeof why));
    if (why[0]) {
      (*ndamaged)++;
      if (ck->rank == 0) qz_warn("verify: %s", why);
    }
  }
  /* every completed block must lie in a listed file */
  for (int b = 0; b < ck->nblocks; b++) {
    if (!ck->done[b]) continue;
    char base[32];
    snprintf(base, sizeof base, "blocks-%03d.h5", b / ck->bpf);
    int listed = 0;
    json_array_foreach(files, i, fe) {
      const char *f = json_string_value(json_object_get(fe, "file"));
      listed |= f && strcmp(f, base) == 0;
    }
    if (!listed) {
      (*ndamaged)++;
      if (ck->rank == 0)
        qz_warn("verify: %s/manifest.json marks block %d complete but lists no %s",
                ck->dir, b, base);
    }
  }
  json_t *sn = json_object_get(ck->manifest, "snapshot");
  if (json_is_object(sn) && json_object_get(sn, "datasets")) {
    QZ_CALL(verify_one(ck, "act-snapshot.h5", json_object_get(sn, "datasets"),
                       ndatasets, why, sizeof why));
    /* the snapshot file may be one update ahead of the manifest (see
     * qz_ckpt_snapshot_block): only its decoding is decisive then */
    if (why[0] && qz_ckpt_snapshot_block(ck) !=
                      (int)json_integer_value(json_object_get(sn, "block")))
      QZ_CALL(verify_one(ck, "act-snapshot.h5", NULL, ndatasets, why, sizeof why));
    if (why[0]) {
      (*ndamaged)++;
      if (ck->rank == 0) qz_warn("verify: %s", why);
    }
  }
  return QZ_OK;
}

