/* mpiquant error core: errors are values.
 *
 * Every function that can fail returns an int status (qz_status).  The first
 * failure records a message (qz_error_set); every caller that forwards it with
 * QZ_CALL adds one traceback frame.  Only main() turns a status into a message
 * and an exit code / MPI_Abort: nothing below main calls exit() or assert().
 *
 * The error record is per thread and per process (each rank has its own).
 */
#ifndef MPIQUANT_ERROR_H
#define MPIQUANT_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Append-only: the numeric values are the process exit codes. */
typedef enum {
  QZ_OK = 0,
  QZ_ERR_INTERNAL = 1,        /* a bug in mpiquant (e.g. ScaLAPACK info < 0) */
  QZ_ERR_USAGE = 2,           /* bad command line */
  QZ_ERR_ARG = 3,             /* bad argument to a function / bad option value */
  QZ_ERR_IO = 4,              /* open/read/write/rename failed, disk full */
  QZ_ERR_FORMAT = 5,          /* malformed or inconsistent input file */
  QZ_ERR_NUMERIC = 6,         /* NaN/Inf, not positive definite after the ladder */
  QZ_ERR_MEM = 7,             /* allocation failed or would exceed a limit */
  QZ_ERR_MPI = 8,             /* an MPI call returned an error */
  QZ_ERR_HDF5 = 9,            /* an HDF5 call returned an error */
  QZ_ERR_SCALAPACK = 10,      /* BLACS/ScaLAPACK setup failed */
  QZ_ERR_UNSUPPORTED = 11,    /* valid input we do not handle (dtype, architecture) */
  QZ_ERR_NOT_IMPLEMENTED = 12,/* command or feature not built yet */
  QZ_ERR_REMOTE = 13,         /* another rank failed; see its message */
  QZ_STATUS_COUNT
} qz_status;

/* Short name of a status ("QZ_ERR_IO"). Not collective. */
const char *qz_status_name(int status);

/* Record a new error (clears any previous record) and return `status`.
 * Use through QZ_FAIL / QZ_CHECK. Not collective. */
int qz_error_set(int status, const char *file, int line, const char *func,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int qz_error_setv(int status, const char *file, int line, const char *func,
                  const char *fmt, va_list ap);

/* Add one traceback frame to the current record. Not collective. */
void qz_error_trace(const char *file, int line, const char *func);

/* The current record. Not collective. */
int qz_error_status(void);
const char *qz_error_message(void);
/* Number of frames and frame i ("file:line in func"), origin first. */
int qz_error_nframes(void);
const char *qz_error_frame(int i);

/* Print "mpiquant: error [rank R] (QZ_ERR_X): message" and the traceback. */
void qz_error_print(void *stream /* FILE* */, int rank);

/* Forget the current record (after an error was handled). Not collective. */
void qz_error_clear(void);

/* Prefix the current message with context, keeping the traceback
 * ("while reading block 3: " + message). Returns the current status. */
int qz_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define QZ_FAIL(status, ...) \
  return qz_error_set((status), __FILE__, __LINE__, __func__, __VA_ARGS__)

/* Guard user input and invariants; always on (also in release builds). */
#define QZ_CHECK(cond, status, ...)                                      \
  do {                                                                   \
    if (!(cond))                                                         \
      return qz_error_set((status), __FILE__, __LINE__, __func__,        \
                          __VA_ARGS__);                                  \
  } while (0)

/* Forward a failing status with one more traceback frame. */
#define QZ_CALL(expr)                                                    \
  do {                                                                   \
    int qz__st = (expr);                                                 \
    if (qz__st != QZ_OK) {                                               \
      qz_error_trace(__FILE__, __LINE__, __func__);                      \
      return qz__st;                                                     \
    }                                                                    \
  } while (0)

/* Single-exit variants: need `int st` in scope and a `done:` label that frees
 * what the function owns and returns st. */
#define QZ_CALL_DONE(expr)                                               \
  do {                                                                   \
    st = (expr);                                                         \
    if (st != QZ_OK) {                                                   \
      qz_error_trace(__FILE__, __LINE__, __func__);                      \
      goto done;                                                         \
    }                                                                    \
  } while (0)

#define QZ_CHECK_DONE(cond, status, ...)                                 \
  do {                                                                   \
    if (!(cond)) {                                                       \
      st = qz_error_set((status), __FILE__, __LINE__, __func__,          \
                        __VA_ARGS__);                                    \
      goto done;                                                         \
    }                                                                    \
  } while (0)

#define QZ_FAIL_DONE(status, ...)                                        \
  do {                                                                   \
    st = qz_error_set((status), __FILE__, __LINE__, __func__,            \
                      __VA_ARGS__);                                      \
    goto done;                                                           \
  } while (0)

/* HDF5: herr_t / hid_t < 0 is failure. (HDF5 prints its own stack too,
 * unless silenced with H5Eset_auto.) */
#define QZ_CALL_H5(expr)                                                 \
  do {                                                                   \
    if ((long long)(expr) < 0)                                           \
      return qz_error_set(QZ_ERR_HDF5, __FILE__, __LINE__, __func__,     \
                          "HDF5 call failed: %s", #expr);                \
  } while (0)
/* The same inside a single-exit function (`int st`, `done:` label). */
#define QZ_CALL_H5_DONE(expr)                                            \
  do {                                                                   \
    if ((long long)(expr) < 0) {                                         \
      st = qz_error_set(QZ_ERR_HDF5, __FILE__, __LINE__, __func__,       \
                        "HDF5 call failed: %s", #expr);                  \
      goto done;                                                         \
    }                                                                    \
  } while (0)

/* ScaLAPACK/LAPACK info: < 0 is our bug (bad argument number), > 0 is a
 * numerical result the caller may handle before calling this. */
int qz_check_info(int info, const char *routine, const char *file, int line,
                  const char *func);
#define QZ_CALL_INFO(info, routine) \
  QZ_CALL(qz_check_info((info), (routine), __FILE__, __LINE__, __func__))

#ifdef __cplusplus
}
#endif
#endif
