/* The one mkdir -p and the one atomic file write (files.h). */
#include "mpiquant/files.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpiquant/error.h"

int qz_mkdir_p(const char *path) {
  char buf[PATH_MAX];
  int n = snprintf(buf, sizeof buf, "%s", path);
  QZ_CHECK(n > 0 && (size_t)n < sizeof buf, QZ_ERR_ARG, "path too long: %s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    QZ_CHECK(mkdir(buf, 0777) == 0 || errno == EEXIST, QZ_ERR_IO,
             "cannot create directory %s: %s", buf, strerror(errno));
    *p = '/';
  }
  QZ_CHECK(mkdir(buf, 0777) == 0 || errno == EEXIST, QZ_ERR_IO,
           "cannot create directory %s: %s", buf, strerror(errno));
  return QZ_OK;
}

void qz_fsync_dir_of(const char *path) {
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir) slash[1] = '\0';
  else if (slash) *slash = '\0';
  else snprintf(dir, sizeof dir, ".");
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  (void)fsync(fd);
  close(fd);
}

int qz_write_atomic(const char *path, const void *data, size_t len) {
  char tmp[PATH_MAX + 32];
  int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  QZ_CHECK(n > 0 && (size_t)n < sizeof tmp, QZ_ERR_ARG, "path too long: %s", path);
  FILE *f = fopen(tmp, "wb");
  QZ_CHECK(f, QZ_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
  int ok = (len == 0 || fwrite(data, 1, len, f) == len) && fflush(f) == 0;
  ok = fsync(fileno(f)) == 0 && ok;
  int err = errno;
  ok = fclose(f) == 0 && ok;
  if (!ok) {
    unlink(tmp);
    QZ_FAIL(QZ_ERR_IO, "writing %s failed (disk full?): %s", tmp, strerror(err));
  }
  if (rename(tmp, path) != 0) {
    err = errno;
    unlink(tmp);
    QZ_FAIL(QZ_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(err));
  }
  qz_fsync_dir_of(path);
  return QZ_OK;
}
