/* The source fingerprint a checkpoint records: config.json plus, for every
 * *.safetensors file of the model directory, its size and a digest of its
 * bytes.  The files are read in fixed chunks dealt round-robin over the
 * ranks (each rank reads ~1/P of the model once) and the chunk digests are
 * summed, so the fingerprint is the same at any np. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/file.h"
#include "mpiquant/mem.h"

#define CHUNK ((int64_t)16 << 20)

#define MPI_DONE(expr)                                                   \
  do {                                                                   \
    int rc_ = (expr);                                                    \
    if (rc_ != MPI_SUCCESS) {                                            \
      st = qz_mpi_error(rc_, #expr, __FILE__, __LINE__, __func__);       \
      goto done;                                                         \
    }                                                                    \
  } while (0)

static int ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && strcmp(s + n - m, suf) == 0;
}

/* rank 0: {"config": ..., "files": [{"name", "bytes"}]} */
static int list_source(const char *dir, json_t **out) {
  char path[PATH_MAX + 300];
  snprintf(path, sizeof path, "%s/config.json", dir);
  QZ_CALL(qz_file_check_input(path));
  json_error_t jerr;
  json_t *cfg = json_load_file(path, 0, &jerr);
  QZ_CHECK(cfg, QZ_ERR_FORMAT, "%s: %s", path, jerr.text);
  json_t *files = json_array();
  struct dirent **list = NULL;
  int n = scandir(dir, &list, NULL, alphasort), st = QZ_OK;
  if (n < 0)
    st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__, "cannot list %s: %s", dir,
                      strerror(errno));
  for (int i = 0; i < n; i++) {
    const char *nm = list[i]->d_name;
    if (st == QZ_OK && ends_with(nm, ".safetensors")) {
      int fd;
      int64_t size;
      snprintf(path, sizeof path, "%s/%s", dir, nm);
      st = qz_file_open_input(path, &fd, &size);
      if (st == QZ_OK) {
        close(fd);
        json_array_append_new(files, json_pack("{s:s, s:I}", "name", nm, "bytes",
                                               (json_int_t)size));
      }
    }
    free(list[i]);
  }
  free(list);
  *out = json_pack("{s:o, s:o}", "config", cfg, "files", files);
  if (st != QZ_OK) {
    json_decref(*out);
    *out = NULL;
  }
  return st;
}

int qz_ckpt_source_fingerprint(MPI_Comm comm, const char *dir, char **out) {
  *out = NULL;
  int rank, size, st = QZ_OK;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  json_t *j = NULL;
  char *text = NULL;
  uint64_t *dig = NULL;
  unsigned char *buf = NULL;
  if (rank == 0) {
    st = list_source(dir, &j);
    if (st == QZ_OK) text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    j = NULL;
  }
  QZ_CALL_DONE(qz_error_agree(comm, st));
  long len = rank == 0 ? (long)strlen(text) + 1 : 0;
  MPI_DONE(MPI_Bcast(&len, 1, MPI_LONG, 0, comm));
  if (rank != 0) st = qz_alloc((size_t)len, 1, "fingerprint", &text);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  MPI_DONE(MPI_Bcast(text, (int)len, MPI_CHAR, 0, comm));
  qz_count_bcast(comm, 0, len);
  j = json_loads(text, 0, NULL);
  QZ_CHECK_DONE(j, QZ_ERR_INTERNAL, "fingerprint broadcast did not parse");
  json_t *files = json_object_get(j, "files");
  size_t nf = json_array_size(files);
  st = qz_calloc(nf + 1, sizeof *dig, "file digests", &dig);
  if (st == QZ_OK) st = qz_alloc((size_t)CHUNK, 1, "fingerprint buffer", &buf);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  int64_t g = 0; /* global chunk counter: chunk g is read by rank g % size */
  for (size_t i = 0; i < nf && st == QZ_OK; i++) {
    json_t *fe = json_array_get(files, i);
    int64_t bytes = json_integer_value(json_object_get(fe, "bytes"));
    int64_t nch = (bytes + CHUNK - 1) / CHUNK;
    int fd = -1;
    for (int64_t c = 0; c < nch && st == QZ_OK; c++, g++) {
      if (g % size != rank) continue;
      if (fd < 0) {
        char path[PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", dir,
                 json_string_value(json_object_get(fe, "name")));
        st = qz_file_open_input(path, &fd, NULL);
        if (st != QZ_OK) break;
      }
      int64_t off = c * CHUNK, n = bytes - off < CHUNK ? bytes - off : CHUNK, got = 0;
      while (got < n) {
        ssize_t r = pread(fd, buf + got, (size_t)(n - got), (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          st = qz_error_set(QZ_ERR_IO, __FILE__, __LINE__, __func__,
                            "%s/%s: cannot read bytes %lld..%lld: %s", dir,
                            json_string_value(json_object_get(fe, "name")),
                            (long long)(off + got), (long long)(off + n),
                            r < 0 ? strerror(errno) : "the file shrank");
          break;
        }
        got += r;
      }
      if (st == QZ_OK) dig[i] += qz_hash_part((uint64_t)c, buf, (size_t)n);
    }
    if (fd >= 0) close(fd);
  }
  QZ_CALL_DONE(qz_error_agree(comm, st));
  MPI_DONE(MPI_Allreduce(MPI_IN_PLACE, dig, (int)nf, MPI_UINT64_T, MPI_SUM, comm));
  qz_count_allreduce(comm, 8 * (int64_t)nf);
  for (size_t i = 0; i < nf; i++) {
    char h[20];
    snprintf(h, sizeof h, "%016llx", (unsigned long long)dig[i]);
    json_object_set_new(json_array_get(files, i), "content", json_string(h));
  }
  *out = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  QZ_CHECK_DONE(*out, QZ_ERR_MEM, "cannot serialise the source fingerprint");
done:
  json_decref(j);
  free(text);
  free(dig);
  free(buf);
  return st;
}
