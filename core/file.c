/* Input files: type checked before anything reads (see mpiquant/file.h). */
#define _GNU_SOURCE
#include "mpiquant/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpiquant/error.h"

const char *qz_file_kind(unsigned mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

int qz_file_open_input(const char *path, int *fd, int64_t *size) {
  *fd = -1;
  if (size) *size = 0;
  QZ_CHECK(path && *path, QZ_ERR_ARG, "empty file name");
  /* O_NONBLOCK: opening a FIFO without a writer returns at once instead of
   * waiting for one; the type check below then refuses it */
  int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (f < 0) {
    int e = errno;
    if (e == ELOOP)
      QZ_FAIL(QZ_ERR_IO, "cannot open %s: a loop of symbolic links", path);
    QZ_FAIL(QZ_ERR_IO, "cannot open %s: %s", path, strerror(e));
  }
  struct stat sb;
  if (fstat(f, &sb) != 0) {
    int e = errno;
    close(f);
    QZ_FAIL(QZ_ERR_IO, "cannot stat %s: %s", path, strerror(e));
  }
  if (!S_ISREG(sb.st_mode)) {
    close(f);
    QZ_FAIL(QZ_ERR_IO, "%s is %s, expected a regular file", path,
            qz_file_kind((unsigned)sb.st_mode));
  }
  int fl = fcntl(f, F_GETFL);
  if (fl >= 0) fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
  *fd = f;
  if (size) *size = (int64_t)sb.st_size;
  return QZ_OK;
}

int qz_file_check_input(const char *path) {
  int fd;
  QZ_CALL(qz_file_open_input(path, &fd, NULL));
  close(fd);
  return QZ_OK;
}

int qz_file_read_all(const char *path, char **data, size_t *len) {
  *data = NULL;
  *len = 0;
  int fd;
  int64_t size;
  QZ_CALL(qz_file_open_input(path, &fd, &size));
  int st = QZ_OK;
  char *buf = NULL;
  QZ_CHECK_DONE((uint64_t)size < SIZE_MAX, QZ_ERR_MEM, "%s: %lld bytes do not fit in memory",
                path, (long long)size);
  buf = malloc((size_t)size + 1);
  QZ_CHECK_DONE(buf, QZ_ERR_MEM, "%s: cannot allocate %lld bytes", path,
                (long long)size + 1);
  size_t got = 0;
  while (got < (size_t)size) {
    ssize_t r = read(fd, buf + got, (size_t)size - got);
    if (r < 0 && errno == EINTR) continue;
    QZ_CHECK_DONE(r >= 0, QZ_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    QZ_CHECK_DONE(r > 0, QZ_ERR_IO, "%s: short read (%zu of %lld bytes; the file "
                  "shrank while being read?)", path, got, (long long)size);
    got += (size_t)r;
  }
  buf[got] = '\0';
  *data = buf;
  *len = got;
  buf = NULL;
done:
  free(buf);
  close(fd);
  return st;
}
