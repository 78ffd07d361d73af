/* The export's output directory: never an input, never a mix of two exports.
 * Files are written into a fresh sibling OUT.partial and the directory is
 * renamed into place when complete; an existing non-empty OUT is replaced
 * only with --overwrite, and only when it holds nothing but the files of a
 * previous export (user files are never deleted). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "export_impl.h"
#include "mpiquant/error.h"
#include "mpiquant/files.h"

/* A name an export writes (or a temporary of one). */
static int is_export_file(const char *nm) {
  static const char *const fixed[] = {
      "model.safetensors", "model.safetensors.index.json", "config.json",
      "quantize_config.json", "tokenizer.json", "tokenizer_config.json",
      "tokenizer.model", "special_tokens_map.json", "generation_config.json"};
  for (size_t k = 0; k < sizeof fixed / sizeof *fixed; k++)
    if (strcmp(nm, fixed[k]) == 0) return 1;
  int a, b, n = 0;
  if (sscanf(nm, "model-%5d-of-%5d.safetensors%n", &a, &b, &n) == 2 && n > 0 && !nm[n]) return 1;
  if (sscanf(nm, "model-part-%5d.safetensors%n", &a, &n) == 1 && n > 0) return 1;
  size_t l = strlen(nm);
  return l > 4 && strcmp(nm + l - 4, ".tmp") == 0 && strncmp(nm, "model", 5) == 0;
}

/* Entries of dir other than . and ..: *n, and the first one that is not an
 * export file (or "" if all are). -1 if dir cannot be read. */
static int scan_dir(const char *dir, int *n, char *foreign, size_t len) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  *n = 0;
  foreign[0] = '\0';
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    (*n)++;
    char p[PATH_MAX + 300];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    int reg = lstat(p, &sb) == 0 && S_ISREG(sb.st_mode);
    if ((!reg || !is_export_file(e->d_name)) && !foreign[0])
      snprintf(foreign, len, "%s", e->d_name);
  }
  closedir(d);
  return 0;
}

/* Delete the export files of dir, then dir (it holds nothing else). */
static int remove_export_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? QZ_OK : QZ_ERR_IO;
  struct dirent *e;
  while ((e = readdir(d)))
    if (is_export_file(e->d_name)) {
      char p[PATH_MAX + 300];
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      unlink(p);
    }
  closedir(d);
  QZ_CHECK(rmdir(dir) == 0, QZ_ERR_IO, "cannot remove %s: %s", dir, strerror(errno));
  return QZ_OK;
}

int qz_export_out_begin(const char *out, const char *const *inputs, int ninputs,
                        int overwrite, char *tmp, size_t len) {
  char o[PATH_MAX];
  snprintf(o, sizeof o, "%s", out);
  size_t n = strlen(o);
  while (n > 1 && o[n - 1] == '/') o[--n] = '\0';
  QZ_CHECK(n > 0 && strcmp(o, ".") && strcmp(o, "/"), QZ_ERR_ARG,
           "export: --out '%s' cannot be replaced by an export; name a new directory", out);
  char ro[PATH_MAX];
  struct stat sb;
  int exists = stat(o, &sb) == 0;
  if (exists) {
    QZ_CHECK(S_ISDIR(sb.st_mode), QZ_ERR_ARG, "export: --out %s exists and is not a "
             "directory", out);
    QZ_CHECK(realpath(o, ro), QZ_ERR_IO, "export: cannot resolve %s: %s", out, strerror(errno));
    size_t lo = strlen(ro);
    for (int k = 0; k < ninputs; k++) {
      char ri[PATH_MAX];
      if (!inputs[k] || !realpath(inputs[k], ri)) continue;
      QZ_CHECK(!(strncmp(ri, ro, lo) == 0 && (ri[lo] == '\0' || ri[lo] == '/' || lo == 1)),
               QZ_ERR_ARG, "export: --out %s is or contains the input %s; writing there "
               "would destroy it. Choose another --out", out, inputs[k]);
    }
    int cnt;
    char foreign[300];
    QZ_CHECK(scan_dir(o, &cnt, foreign, sizeof foreign) == 0, QZ_ERR_IO,
             "export: cannot read --out %s: %s", out, strerror(errno));
    QZ_CHECK(cnt == 0 || overwrite, QZ_ERR_ARG,
             "export: --out %s is not empty; pass --overwrite to replace the previous "
             "export in it, or choose another directory", out);
    QZ_CHECK(!foreign[0], QZ_ERR_ARG,
             "export: --out %s holds %s, which is not a file of an export; refusing to "
             "replace the directory (move the file away or choose another --out)", out,
             foreign);
  }
  snprintf(tmp, len, "%s.partial", o);
  if (stat(tmp, &sb) == 0) { /* left by an export that died */
    int cnt;
    char foreign[300];
    QZ_CHECK(S_ISDIR(sb.st_mode) && scan_dir(tmp, &cnt, foreign, sizeof foreign) == 0 &&
                 !foreign[0],
             QZ_ERR_ARG, "export: %s exists and is not a partial export; remove it", tmp);
    QZ_CALL(remove_export_dir(tmp));
  }
  QZ_CHECK(mkdir(tmp, 0755) == 0, QZ_ERR_IO, "export: cannot create %s: %s", tmp,
           strerror(errno));
  return QZ_OK;
}

int qz_export_out_commit(const char *out, const char *tmp) {
  char o[PATH_MAX], old[PATH_MAX + 16];
  snprintf(o, sizeof o, "%s", out);
  size_t n = strlen(o);
  while (n > 1 && o[n - 1] == '/') o[--n] = '\0';
  struct stat sb;
  old[0] = '\0';
  if (stat(o, &sb) == 0) { /* checked by qz_export_out_begin: ours to replace */
    if (rmdir(o) != 0) {
      snprintf(old, sizeof old, "%s.old", o);
      remove_export_dir(old); /* left by an export that died while replacing */
      QZ_CHECK(rename(o, old) == 0, QZ_ERR_IO, "export: cannot move %s aside: %s", o,
               strerror(errno));
    }
  }
  QZ_CHECK(rename(tmp, o) == 0, QZ_ERR_IO, "export: cannot rename %s to %s: %s", tmp, o,
           strerror(errno));
  qz_fsync_dir_of(o);
  if (old[0]) QZ_CALL(remove_export_dir(old));
  return QZ_OK;
}

void qz_export_out_abort(const char *tmp) {
  if (tmp && *tmp) remove_export_dir(tmp);
}
