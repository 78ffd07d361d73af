/* Error core: messages, traceback frames, single-exit cleanup, info codes,
 * helpers. Single rank. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "qz_test.h"

static int leaf(int x) {
  QZ_CHECK(x >= 0, QZ_ERR_ARG, "x must be >= 0, got %d", x);
  return QZ_OK;
}
static int middle(int x) {
  QZ_CALL(leaf(x));
  return QZ_OK;
}
static int outer(int x, int *freed) {
  int st = QZ_OK;
  char *buf = malloc(16);
  QZ_CALL_DONE(middle(x));
  QZ_CHECK_DONE(x < 100, QZ_ERR_FORMAT, "x too large: %d", x);
done:
  free(buf);
  *freed = 1;
  return st;
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  int freed = 0;
  QZT_OK(outer(5, &freed));
  QZT_CHECK(freed, "cleanup ran on success");

  freed = 0;
  int st = outer(-3, &freed);
  QZT_CHECK(st == QZ_ERR_ARG, "status forwarded: %s", qz_status_name(st));
  QZT_CHECK(freed, "cleanup ran on failure");
  QZT_CHECK(strstr(qz_error_message(), "x must be >= 0, got -3") != NULL,
            "message kept: %s", qz_error_message());
  QZT_CHECK(qz_error_nframes() == 3, "3 frames (leaf, middle, outer), got %d",
            qz_error_nframes());
  QZT_CHECK(strstr(qz_error_frame(0), "in leaf()") &&
                strstr(qz_error_frame(1), "in middle()") &&
                strstr(qz_error_frame(2), "in outer()"),
            "frame order origin-first: %s | %s | %s", qz_error_frame(0),
            qz_error_frame(1), qz_error_frame(2));
  QZT_CHECK(strncmp(qz_error_frame(0), "tests/unit/test_error.c:", 24) == 0,
            "file paths relative to the source tree: %s", qz_error_frame(0));
  qz_error_prefix("while testing: ");
  QZT_CHECK(strncmp(qz_error_message(), "while testing: x must be", 24) == 0,
            "prefix: %s", qz_error_message());

  st = outer(200, &freed);
  QZT_FAILS(st, QZ_ERR_FORMAT, "x too large: 200");

  /* ScaLAPACK info convention */
  QZT_OK(qz_check_info(0, "pdpotrf", __FILE__, __LINE__, __func__));
  QZT_FAILS(qz_check_info(-7, "pdpotrf", __FILE__, __LINE__, __func__),
            QZ_ERR_INTERNAL, "argument 7 had an illegal value");
  QZT_FAILS(qz_check_info(12, "pdpotrf", __FILE__, __LINE__, __func__),
            QZ_ERR_NUMERIC, "info = 12");

  /* names are total over the enum and stable */
  for (int s = 0; s < QZ_STATUS_COUNT; s++)
    QZT_CHECK(strncmp(qz_status_name(s), "QZ_", 3) == 0, "name of %d", s);
  QZT_CHECK(strcmp(qz_status_name(QZ_ERR_IO), "QZ_ERR_IO") == 0, "IO name");
  QZT_CHECK(strcmp(qz_status_name(999), "QZ_ERR_UNKNOWN") == 0, "unknown");

  /* allocation: overflow is an error, not a wrap */
  void *p = NULL;
  QZT_FAILS(qz_alloc(SIZE_MAX / 2, 4, "test buffer", &p), QZ_ERR_MEM,
            "size overflow allocating");
  QZT_CHECK(p == NULL, "no pointer on failure");
  QZT_OK(qz_alloc(0, 8, "empty", &p));
  QZT_CHECK(p != NULL, "n == 0 gives a valid pointer");
  qz_free(&p);
  QZT_CHECK(p == NULL, "qz_free NULLs the caller's pointer");
  qz_free(&p); /* accepts NULL */
  QZT_OK(qz_alloc_big(3 << 20, "big", &p));
  QZT_CHECK(((uintptr_t)p & ((2u << 20) - 1)) == 0, "2 MiB aligned");
  memset(p, 1, 3 << 20);
  qz_free_big(&p, 3 << 20);

  int64_t r;
  QZT_CHECK(!qz_mul_i64(INT64_MAX / 2, 3, &r), "mul overflow detected");
  QZT_CHECK(qz_mul_i64(1 << 20, 1 << 20, &r) && r == (int64_t)1 << 40, "mul");
  QZT_CHECK(!qz_add_i64(INT64_MAX, 1, &r), "add overflow detected");

  /* even split: sizes differ by at most one, cover everything in order */
  for (int parts = 1; parts <= 7; parts++) {
    for (int64_t total = 0; total <= 20; total++) {
      int64_t next = 0, mn = INT64_MAX, mx = 0;
      for (int q = 0; q < parts; q++) {
        int64_t b, c;
        qz_split_even(total, parts, q, &b, &c);
        QZT_CHECK(b == next, "contiguous split total %lld parts %d",
                  (long long)total, parts);
        next = b + c;
        if (c < mn) mn = c;
        if (c > mx) mx = c;
      }
      QZT_CHECK(next == total && mx - mn <= 1, "balanced split");
    }
  }
  char b[32];
  QZT_CHECK(strcmp(qz_fmt_bytes(1536.0, b, sizeof b), "1.50 KiB") == 0,
            "fmt_bytes: %s", b);
  return qzt_finish("test_error");
}
