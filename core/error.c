/* Error record: first failure's message plus a traceback of forwarding frames. */
#include "mpiquant/error.h"

#include <stdio.h>
#include <string.h>

#define QZ_ERR_MSG_LEN 2048
#define QZ_ERR_FRAMES 48
#define QZ_ERR_FRAME_LEN 160

typedef struct {
  int status;
  char message[QZ_ERR_MSG_LEN];
  int nframes;
  char frames[QZ_ERR_FRAMES][QZ_ERR_FRAME_LEN];
} qz_error_record;

static _Thread_local qz_error_record g_err;

static const char *const g_names[QZ_STATUS_COUNT] = {
    [QZ_OK] = "QZ_OK",
    [QZ_ERR_INTERNAL] = "QZ_ERR_INTERNAL",
    [QZ_ERR_USAGE] = "QZ_ERR_USAGE",
    [QZ_ERR_ARG] = "QZ_ERR_ARG",
    [QZ_ERR_IO] = "QZ_ERR_IO",
    [QZ_ERR_FORMAT] = "QZ_ERR_FORMAT",
    [QZ_ERR_NUMERIC] = "QZ_ERR_NUMERIC",
    [QZ_ERR_MEM] = "QZ_ERR_MEM",
    [QZ_ERR_MPI] = "QZ_ERR_MPI",
    [QZ_ERR_HDF5] = "QZ_ERR_HDF5",
    [QZ_ERR_SCALAPACK] = "QZ_ERR_SCALAPACK",
    [QZ_ERR_UNSUPPORTED] = "QZ_ERR_UNSUPPORTED",
    [QZ_ERR_NOT_IMPLEMENTED] = "QZ_ERR_NOT_IMPLEMENTED",
    [QZ_ERR_REMOTE] = "QZ_ERR_REMOTE",
};

const char *qz_status_name(int status) {
  if (status < 0 || status >= QZ_STATUS_COUNT || !g_names[status])
    return "QZ_ERR_UNKNOWN";
  return g_names[status];
}

static void add_frame(const char *file, int line, const char *func) {
  if (g_err.nframes >= QZ_ERR_FRAMES) return;
  snprintf(g_err.frames[g_err.nframes++], QZ_ERR_FRAME_LEN, "%s:%d in %s()",
           file, line, func);
}

int qz_error_setv(int status, const char *file, int line, const char *func,
                  const char *fmt, va_list ap) {
  g_err.status = status;
  g_err.nframes = 0;
  vsnprintf(g_err.message, sizeof g_err.message, fmt, ap);
  add_frame(file, line, func);
  return status;
}

int qz_error_set(int status, const char *file, int line, const char *func,
                 const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  qz_error_setv(status, file, line, func, fmt, ap);
  va_end(ap);
  return status;
}

void qz_error_trace(const char *file, int line, const char *func) {
  add_frame(file, line, func);
}

int qz_error_status(void) { return g_err.status; }
const char *qz_error_message(void) { return g_err.message; }
int qz_error_nframes(void) { return g_err.nframes; }
const char *qz_error_frame(int i) {
  return (i >= 0 && i < g_err.nframes) ? g_err.frames[i] : "";
}

void qz_error_clear(void) {
  g_err.status = QZ_OK;
  g_err.message[0] = '\0';
  g_err.nframes = 0;
}

int qz_error_prefix(const char *fmt, ...) {
  char pre[QZ_ERR_MSG_LEN], old[QZ_ERR_MSG_LEN];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(pre, sizeof pre, fmt, ap);
  va_end(ap);
  memcpy(old, g_err.message, sizeof old);
  size_t np = strnlen(pre, sizeof g_err.message - 1);
  memcpy(g_err.message, pre, np);
  snprintf(g_err.message + np, sizeof g_err.message - np, "%.*s",
           (int)(sizeof g_err.message - np - 1), old);
  return g_err.status;
}

void qz_error_print(void *stream, int rank) {
  FILE *f = stream ? (FILE *)stream : stderr;
  fprintf(f, "mpiquant: error [rank %d] (%s): %s\n", rank,
          qz_status_name(g_err.status),
          g_err.message[0] ? g_err.message : "(no message)");
  for (int i = 0; i < g_err.nframes; i++)
    fprintf(f, "    at %s\n", g_err.frames[i]);
  fflush(f);
}

int qz_check_info(int info, const char *routine, const char *file, int line,
                  const char *func) {
  if (info == 0) return QZ_OK;
  if (info < 0)
    return qz_error_set(QZ_ERR_INTERNAL, file, line, func,
                        "%s: argument %d had an illegal value (a bug in "
                        "mpiquant; please report it)",
                        routine, -info);
  return qz_error_set(QZ_ERR_NUMERIC, file, line, func,
                      "%s returned info = %d (numerical failure)", routine,
                      info);
}
