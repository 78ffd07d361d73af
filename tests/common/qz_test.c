#define _GNU_SOURCE
#include "qz_test.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpiquant/error.h"
#include "mpiquant/log.h"

static long g_pass, g_fail;
static int g_rank, g_size = 1, g_mpi;

void qzt_check(int ok, const char *file, int line, const char *fmt, ...) {
  if (ok) {
    g_pass++;
    return;
  }
  g_fail++;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "FAIL [rank %d] %s:%d: %s\n", g_rank, file, line, msg);
  fflush(stderr);
}

int qzt_near(double a, double b, double tol) {
  if (isnan(a) || isnan(b)) return 0;
  return fabs(a - b) <= tol;
}

int qzt_ok(int st, const char *expr, const char *file, int line) {
  if (st == QZ_OK) {
    g_pass++;
    return 1;
  }
  qzt_check(0, file, line, "%s returned %s", expr, qz_status_name(st));
  qz_error_print(stderr, g_rank);
  return 0;
}

int qzt_fails(int st, int want, const char *phrase, const char *expr,
              const char *file, int line) {
  int ok = st == want && (!phrase || strstr(qz_error_message(), phrase));
  qzt_check(ok, file, line,
            "%s: expected %s with '%s', got %s: '%s'", expr,
            qz_status_name(want), phrase ? phrase : "", qz_status_name(st),
            st ? qz_error_message() : "");
  qz_error_clear();
  return ok;
}

void qzt_init(int *argc, char ***argv) {
  int provided;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  g_mpi = 1;
  qz_log_init(g_rank, g_size, getenv("QZ_TEST_VERBOSE") ? QZ_LOG_DEBUG : QZ_LOG_WARN, 0);
}

int qzt_rank(void) { return g_rank; }
int qzt_size(void) { return g_size; }

int qzt_finish(const char *name) {
  long v[2] = {g_pass, g_fail};
  if (g_mpi) MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  if (g_rank == 0) {
    printf("%s (np %d): %ld passed, %ld failed\n", name, g_size, v[0], v[1]);
    fflush(stdout);
  }
  if (g_mpi) MPI_Finalize();
  return v[1] == 0 && v[0] > 0 ? 0 : 1; /* a test that checked nothing fails */
}

const char *qzt_shared(void) {
  const char *d = getenv("QZ_SHARED_DIR");
  struct stat sb;
  if (!d || stat(d, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    qzt_check(0, __FILE__, __LINE__,
              "the shared data folder (golden data, models, texts) is missing: "
              "QZ_SHARED_DIR='%s'. Put 'shared' beside the source tree or "
              "configure with -DMPIQUANT_SHARED_DIR=PATH",
              d ? d : "(unset)");
    return NULL;
  }
  return d;
}

static void mkdir_p(const char *path) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      mkdir(buf, 0755);
      *p = '/';
    }
  }
  mkdir(buf, 0755);
}

const char *qzt_tmpdir(void) {
  static char dir[4096];
  if (!dir[0]) {
    const char *d = getenv("QZ_TEST_TMP");
    snprintf(dir, sizeof dir, "%s", d ? d : "/tmp/mpiquant-test");
    mkdir_p(dir);
  }
  return dir;
}

const char *qzt_fresh_path(const char *name) {
  static char dir[4096];
  snprintf(dir, sizeof dir, "%s/%s", qzt_tmpdir(), name);
  int ok = 1;
  if (g_rank == 0) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ok = system(cmd) == 0;
  }
  if (g_mpi) MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return ok ? dir : NULL;
}

const char *qzt_path(const char *dir, const char *name) {
  static char bufs[8][4096];
  static int k;
  char *b = bufs[k++ & 7];
  snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
  return b;
}

uint64_t qzt_rand_u64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double qzt_rand_uniform(uint64_t *s) {
  return (double)(qzt_rand_u64(s) >> 11) * (1.0 / 9007199254740992.0);
}

double qzt_rand_normal(uint64_t *s) {
  double u1 = qzt_rand_uniform(s), u2 = qzt_rand_uniform(s);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
