/* Checked allocation and memory accounting. */
#define _GNU_SOURCE
#include "mpiquant/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "mpiquant/error.h"

int qz_mul_i64(int64_t a, int64_t b, int64_t *out) {
  return !__builtin_mul_overflow(a, b, out);
}
int qz_add_i64(int64_t a, int64_t b, int64_t *out) {
  return !__builtin_add_overflow(a, b, out);
}

const char *qz_fmt_bytes(double bytes, char *buf, size_t len) {
  static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 5) {
    bytes /= 1024.0;
    u++;
  }
  snprintf(buf, len, u == 0 ? "%.0f %s" : "%.2f %s", bytes, unit[u]);
  return buf;
}

static int alloc_impl(size_t n, size_t size, int zero, const char *what,
                      void *out) {
  void **pp = (void **)out;
  size_t bytes;
  *pp = NULL;
  QZ_CHECK(!__builtin_mul_overflow(n, size, &bytes), QZ_ERR_MEM,
           "size overflow allocating %zu x %zu bytes for %s", n, size, what);
  *pp = zero ? calloc(bytes ? bytes : 1, 1) : malloc(bytes ? bytes : 1);
  if (!*pp) {
    char b[32];
    QZ_FAIL(QZ_ERR_MEM, "out of memory allocating %s for %s",
            qz_fmt_bytes((double)bytes, b, sizeof b), what);
  }
  return QZ_OK;
}

int qz_alloc(size_t n, size_t size, const char *what, void *out) {
  return alloc_impl(n, size, 0, what, out);
}

int qz_calloc(size_t n, size_t size, const char *what, void *out) {
  return alloc_impl(n, size, 1, what, out);
}

void qz_free(void *pp) {
  void **p = (void **)pp;
  if (!p) return;
  free(*p);
  *p = NULL;
}

int qz_grow(size_t n, size_t size, const char *what, void *pp, size_t *cap) {
  if (*(void **)pp && n <= *cap) return QZ_OK;
  qz_free(pp);
  *cap = 0;
  QZ_CALL(alloc_impl(n ? n : 1, size, 0, what, pp));
  *cap = n ? n : 1;
  return QZ_OK;
}

#define QZ_HUGE_ALIGN ((size_t)2 << 20)

int qz_alloc_big(size_t bytes, const char *what, void *out) {
  void **pp = (void **)out;
  *pp = NULL;
  size_t rounded = (bytes + QZ_HUGE_ALIGN - 1) & ~(QZ_HUGE_ALIGN - 1);
  if (rounded == 0) rounded = QZ_HUGE_ALIGN;
  void *p = NULL;
  if (posix_memalign(&p, QZ_HUGE_ALIGN, rounded) != 0 || !p) {
    char b[32];
    QZ_FAIL(QZ_ERR_MEM, "out of memory allocating %s for %s",
            qz_fmt_bytes((double)bytes, b, sizeof b), what);
  }
#ifdef MADV_HUGEPAGE
  madvise(p, rounded, MADV_HUGEPAGE); /* advice only; failure is harmless */
#endif
  *pp = p;
  return QZ_OK;
}

void qz_free_big(void *pp, size_t bytes) {
  (void)bytes;
  qz_free(pp);
}

int64_t qz_peak_rss_bytes(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
  return (int64_t)ru.ru_maxrss * 1024; /* Linux: kilobytes */
}

int64_t qz_rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return -1;
  long pages_total = 0, pages_res = 0;
  int ok = fscanf(f, "%ld %ld", &pages_total, &pages_res) == 2;
  fclose(f);
  if (!ok) return -1;
  return (int64_t)pages_res * (int64_t)sysconf(_SC_PAGESIZE);
}
