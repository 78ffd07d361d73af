/* Minimal test helpers: counted checks, MPI-aware summary, shared data path.
 * A test program returns qzt_finish(): 0 when every check passed. */
#ifndef QZ_TEST_H
#define QZ_TEST_H

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>

void qzt_check(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define QZT_CHECK(cond, ...) qzt_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* |a-b| <= tol (absolute) */
#define QZT_NEAR(a, b, tol, what)                                            \
  qzt_check(qzt_near((double)(a), (double)(b), (double)(tol)), __FILE__,     \
            __LINE__, "%s: %.9g vs %.9g (tol %.3g)", (what), (double)(a),    \
            (double)(b), (double)(tol))
/* |a-b| <= rtol*|b| */
#define QZT_REL(a, b, rtol, what)                                            \
  qzt_check(qzt_near((double)(a), (double)(b),                               \
                     (double)(rtol) * ((b) < 0 ? -(double)(b) : (double)(b))),\
            __FILE__, __LINE__, "%s: %.9g vs %.9g (rel tol %.3g)", (what),   \
            (double)(a), (double)(b), (double)(rtol))
/* A status-returning call must succeed; on failure prints the error record. */
#define QZT_OK(expr) qzt_ok((expr), #expr, __FILE__, __LINE__)
/* Must fail with `status` and a message containing `phrase`. */
#define QZT_FAILS(expr, status, phrase) \
  qzt_fails((expr), (status), (phrase), #expr, __FILE__, __LINE__)

int qzt_near(double a, double b, double tol);
int qzt_ok(int st, const char *expr, const char *file, int line);
int qzt_fails(int st, int want, const char *phrase, const char *expr,
              const char *file, int line);

/* MPI_Init + MPI_ERRORS_RETURN on COMM_WORLD; rank/size. */
void qzt_init(int *argc, char ***argv);
int qzt_rank(void);
int qzt_size(void);
/* Sum failures over ranks; rank 0 prints "<name>: N passed, N failed";
 * MPI_Finalize; returns the exit code (0 = all passed). */
int qzt_finish(const char *name);

/* ../shared (env QZ_SHARED_DIR); a missing folder is a failed check with a
 * clear message, and NULL is returned. */
const char *qzt_shared(void);
/* Per-test scratch folder (env QZ_TEST_TMP, created). */
const char *qzt_tmpdir(void);
/* qzt_tmpdir()/name, removed by rank 0 if it exists, then a barrier: a
 * fresh (absent) path for an output directory. NULL if the removal failed.
 * Collective on MPI_COMM_WORLD. */
const char *qzt_fresh_path(const char *name);
/* Path join into a static rotating buffer. */
const char *qzt_path(const char *dir, const char *name);

/* Deterministic pseudo-random numbers (splitmix64). */
uint64_t qzt_rand_u64(uint64_t *state);
double qzt_rand_uniform(uint64_t *state); /* [0,1) */
double qzt_rand_normal(uint64_t *state);

#endif
