/* Pre-tokenized token files: .bin (little-endian uint32 ids) and .txt (one
 * window per line, space-separated ids; the golden calib/ format). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpiquant/error.h"
#include "mpiquant/file.h"
#include "mpiquant/files.h"
#include "mpiquant/mem.h"
#include "mpiquant/tokenizer.h"

/* Whole file into memory (token files are at most a few hundred MB); only
 * regular files: a FIFO or a device would block or never end. */
static int slurp(const char *path, char **out, size_t *len) {
  QZ_CALL(qz_file_read_all(path, out, len));
  return QZ_OK;
}

int qz_read_file(const char *path, char **data, size_t *len) {
  QZ_CALL(slurp(path, data, len));
  return QZ_OK;
}

int qz_tokens_check_vocab(const char *path, const int32_t *ids, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; i++)
    QZ_CHECK(ids[i] >= 0 && ids[i] < vocab, QZ_ERR_FORMAT,
             "%s: token %lld has id %d, outside the model's vocabulary [0, %lld) "
             "(tokenized for another model?)", path, (long long)i, (int)ids[i],
             (long long)vocab);
  return QZ_OK;
}

int qz_tokens_read_bin(const char *path, int32_t **ids, int64_t *n) {
  *ids = NULL;
  *n = 0;
  char *buf;
  size_t len;
  QZ_CALL(slurp(path, &buf, &len));
  if (len % 4) {
    free(buf);
    QZ_FAIL(QZ_ERR_FORMAT, "%s: %zu bytes is not a multiple of 4 (expected "
            "little-endian uint32 token ids)", path, len);
  }
  int64_t cnt = (int64_t)(len / 4);
  int32_t *out = malloc((size_t)(cnt ? cnt : 1) * sizeof *out);
  if (!out) {
    free(buf);
    QZ_FAIL(QZ_ERR_MEM, "%s: out of memory for %lld ids", path, (long long)cnt);
  }
  const unsigned char *p = (const unsigned char *)buf;
  for (int64_t i = 0; i < cnt; i++) {
    uint32_t v = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                 (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
    if (v > INT32_MAX) {
      free(buf);
      free(out);
      QZ_FAIL(QZ_ERR_FORMAT, "%s: token %lld has id %u, larger than 2^31-1",
              path, (long long)i, v);
    }
    out[i] = (int32_t)v;
  }
  free(buf);
  *ids = out;
  *n = cnt;
  return QZ_OK;
}

int qz_tokens_write_bin(const char *path, const int32_t *ids, int64_t n) {
  QZ_CHECK(n >= 0 && (ids || n == 0), QZ_ERR_ARG, "%s: bad id array", path);
  unsigned char *b = malloc((size_t)(n ? n : 1) * 4);
  QZ_CHECK(b, QZ_ERR_MEM, "out of memory for %lld ids", (long long)n);
  for (int64_t i = 0; i < n; i++) {
    if (ids[i] < 0) {
      free(b);
      QZ_FAIL(QZ_ERR_ARG, "%s: token %lld has negative id %d", path,
              (long long)i, ids[i]);
    }
    uint32_t v = (uint32_t)ids[i];
    b[4 * i] = (unsigned char)v;
    b[4 * i + 1] = (unsigned char)(v >> 8);
    b[4 * i + 2] = (unsigned char)(v >> 16);
    b[4 * i + 3] = (unsigned char)(v >> 24);
  }
  int st = qz_write_atomic(path, b, (size_t)n * 4);
  free(b);
  QZ_CALL(st);
  return QZ_OK;
}

int qz_windows_read_txt(const char *path, int32_t **ids, int64_t *nwin,
                        int64_t *winlen) {
  *ids = NULL;
  *nwin = *winlen = 0;
  char *buf;
  size_t len;
  QZ_CALL(slurp(path, &buf, &len));
  int st = QZ_OK;
  int64_t cap = 0, n = 0, lines = 0, wl = -1, line = 0;
  int32_t *out = NULL;
  const char *p = buf, *end = buf + len;
  while (p < end) {
    line++;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    int64_t cnt = 0;
    const char *q = p;
    while (q < eol) {
      while (q < eol && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
      if (q == eol) break;
      QZ_CHECK_DONE(*q >= '0' && *q <= '9', QZ_ERR_FORMAT,
                    "%s:%lld: expected a token id, found '%c'", path,
                    (long long)line, *q);
      int64_t v = 0;
      while (q < eol && *q >= '0' && *q <= '9') {
        v = v * 10 + (*q - '0');
        QZ_CHECK_DONE(v <= INT32_MAX, QZ_ERR_FORMAT,
                      "%s:%lld: token id too large", path, (long long)line);
        q++;
      }
      QZ_CHECK_DONE(q == eol || *q == ' ' || *q == '\t' || *q == '\r',
                    QZ_ERR_FORMAT, "%s:%lld: expected a token id, found '%c'",
                    path, (long long)line, *q);
      if (n == cap) {
        cap = cap ? 2 * cap : 4096;
        int32_t *o = realloc(out, (size_t)cap * sizeof *o);
        QZ_CHECK_DONE(o, QZ_ERR_MEM, "%s: out of memory", path);
        out = o;
      }
      out[n++] = (int32_t)v;
      cnt++;
    }
    p = eol + 1;
    if (cnt == 0) continue; /* blank line */
    if (wl < 0) wl = cnt;
    QZ_CHECK_DONE(cnt == wl, QZ_ERR_FORMAT,
                  "%s:%lld: window has %lld ids, the first window has %lld "
                  "(all windows must have the same length)", path,
                  (long long)line, (long long)cnt, (long long)wl);
    lines++;
  }
  QZ_CHECK_DONE(lines > 0, QZ_ERR_FORMAT, "%s: no token windows in the file",
                path);
  *ids = out;
  out = NULL;
  *nwin = lines;
  *winlen = wl;
done:
  free(out);
  free(buf);
  return st;
}

int qz_windows_write_txt(const char *path, const int32_t *ids, int64_t nwin,
                         int64_t winlen) {
  QZ_CHECK(nwin >= 0 && winlen > 0 && (ids || nwin == 0), QZ_ERR_ARG,
           "%s: bad window array (%lld x %lld)", path, (long long)nwin,
           (long long)winlen);
  size_t cap = (size_t)(nwin * winlen) * 11 + 1, o = 0;
  char *b = malloc(cap);
  QZ_CHECK(b, QZ_ERR_MEM, "out of memory");
  for (int64_t w = 0; w < nwin; w++)
    for (int64_t i = 0; i < winlen; i++) {
      int32_t v = ids[w * winlen + i];
      if (v < 0) {
        free(b);
        QZ_FAIL(QZ_ERR_ARG, "%s: negative id %d", path, v);
      }
      o += (size_t)snprintf(b + o, cap - o, "%d%c", v,
                            i + 1 == winlen ? '\n' : ' ');
    }
  int st = qz_write_atomic(path, b, o);
  free(b);
  QZ_CALL(st);
  return QZ_OK;
}
