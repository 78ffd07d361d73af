/* MPI error wrapping and agreement. */
#include "mpiquant/comm.h"
#include "mpiquant/mem.h"
#include "mpiquant/timing.h"

#include <limits.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/mem.h"

int qz_mpi_error(int rc, const char *call, const char *file, int line,
                 const char *func) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) {
    snprintf(msg, sizeof msg, "MPI error code %d", rc);
  }
  return qz_error_set(QZ_ERR_MPI, file, line, func, "%s failed: %s", call,
                      msg);
}

int qz_comm_dup(MPI_Comm comm, MPI_Comm *out) {
  QZ_CALL_MPI(MPI_Comm_dup(comm, out));
  QZ_CALL_MPI(MPI_Comm_set_errhandler(*out, MPI_ERRORS_RETURN));
  return QZ_OK;
}

int qz_error_agree(MPI_Comm comm, int status) {
  int rank;
  MPI_Comm_rank(comm, &rank);
  /* [0]: INT_MAX - rank of a failed rank (max = lowest failing rank),
   * [1]: its status (max over failing ranks, good enough for a message). */
  int v[2] = {status != QZ_OK ? INT_MAX - rank : -1, status};
  int rc = MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_INT, MPI_MAX, comm);
  qz_count_allreduce(comm, (int64_t)sizeof v);
  if (rc != MPI_SUCCESS) {
    if (status != QZ_OK) return status; /* keep the original error */
    return qz_mpi_error(rc, "MPI_Allreduce (error agreement)", __FILE__,
                        __LINE__, __func__);
  }
  if (v[0] < 0) return QZ_OK;
  /* the lowest failing rank tells everyone what went wrong */
  int root = INT_MAX - v[0];
  char msg[1536];
  if (rank == root) snprintf(msg, sizeof msg, "%s", qz_error_message());
  qz_count_bcast(comm, root, (int64_t)sizeof msg);
  if (MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, root, comm) != MPI_SUCCESS)
    snprintf(msg, sizeof msg, "(message not received)");
  msg[sizeof msg - 1] = '\0';
  if (status != QZ_OK) return status;
  return qz_error_set(QZ_ERR_REMOTE, __FILE__, __LINE__, __func__,
                      "rank %d failed (%s): %s", root, qz_status_name(v[1]),
                      msg);
}

int qz_allreduce_i64(MPI_Comm comm, int64_t *v, int n, MPI_Op op) {
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, op, comm));
  qz_count_allreduce(comm, 8 * (int64_t)n);
  return QZ_OK;
}

int qz_sum_rows_ordered(MPI_Comm comm, int64_t n_local, const float *v, double *sum) {
  int size = 1, st = QZ_OK;
  MPI_Comm_size(comm, &size);
  int *counts = NULL, *displs = NULL;
  float *all = NULL;
  int64_t total = 0;
  int n = (int)n_local;
  QZ_CHECK(n_local >= 0 && n_local <= INT32_MAX, QZ_ERR_ARG,
           "qz_sum_rows_ordered: %lld rows on one rank", (long long)n_local);
  QZ_CALL(qz_alloc((size_t)size, sizeof(int), "row counts", &counts));
  st = qz_alloc((size_t)size, sizeof(int), "row offsets", &displs);
  if (st) goto done;
  if ((st = MPI_Allgather(&n, 1, MPI_INT, counts, 1, MPI_INT, comm)) != MPI_SUCCESS) {
    st = qz_mpi_error(st, "MPI_Allgather(row counts)", __FILE__, __LINE__, __func__);
    goto done;
  }
  qz_count_allgather(comm, (int64_t)sizeof n, (int64_t)sizeof n * size);
  for (int r = 0; r < size; r++) {
    displs[r] = (int)total;
    total += counts[r];
  }
  if (total > INT32_MAX) {
    st = qz_error_set(QZ_ERR_ARG, __FILE__, __LINE__, __func__,
                      "qz_sum_rows_ordered: %lld rows in all", (long long)total);
    goto done;
  }
  if ((st = qz_alloc((size_t)(total > 0 ? total : 1), sizeof(float), "rows", &all))) goto done;
  if ((st = MPI_Allgatherv(v, n, MPI_FLOAT, all, counts, displs, MPI_FLOAT, comm)) !=
      MPI_SUCCESS) {
    st = qz_mpi_error(st, "MPI_Allgatherv(rows)", __FILE__, __LINE__, __func__);
    goto done;
  }
  qz_count_allgather(comm, 4 * (int64_t)n, 4 * total);
  double s = 0;
  for (int64_t i = 0; i < total; i++) s += (double)all[i];
  *sum = s;
done:
  qz_free(&all);
  qz_free(&displs);
  qz_free(&counts);
  return st;
}

void qz_split_even(int64_t total, int nparts, int part, int64_t *begin,
                   int64_t *count) {
  int64_t base = total / nparts, rem = total % nparts;
  *count = base + (part < rem ? 1 : 0);
  *begin = (int64_t)part * base + (part < rem ? part : rem);
}

/* A row count and row size one MPI call can describe. */
static int rows_fit(int64_t nrows, int64_t rowbytes) {
  QZ_CHECK(nrows <= INT32_MAX && rowbytes <= INT32_MAX, QZ_ERR_UNSUPPORTED,
           "matrix of %lld rows of %lld bytes too large for one row allgather",
           (long long)nrows, (long long)rowbytes);
  return QZ_OK;
}

/* The row split of qz_split_even as counts[size] and displacements
 * (counts + size) in rows, and a committed datatype of one row. */
static int rows_layout(int size, int64_t nrows, int64_t rowbytes, int *counts,
                       MPI_Datatype *row) {
  QZ_CALL(rows_fit(nrows, rowbytes));
  for (int p = 0; p < size; p++) {
    int64_t b, c;
    qz_split_even(nrows, size, p, &b, &c);
    counts[p] = (int)c;
    counts[size + p] = (int)b;
  }
  QZ_CALL_MPI(MPI_Type_contiguous((int)rowbytes, MPI_BYTE, row));
  QZ_CALL_MPI(MPI_Type_commit(row));
  return QZ_OK;
}

int qz_allgather_rows_bytes(MPI_Comm comm, int64_t nrows, int64_t rowbytes,
                            const void *mine, void *full) {
  int size, rank;
  QZ_CALL_MPI(MPI_Comm_size(comm, &size));
  QZ_CALL_MPI(MPI_Comm_rank(comm, &rank));
  int64_t r0, cnt;
  qz_split_even(nrows, size, rank, &r0, &cnt);
  if (size == 1) {
    QZ_CALL(rows_fit(nrows, rowbytes));
    if (mine && mine != full && cnt > 0) memcpy(full, mine, (size_t)(cnt * rowbytes));
    return QZ_OK;
  }
  if (rowbytes == 0) return QZ_OK;
  int st = QZ_OK;
  int *counts = NULL;
  MPI_Datatype row = MPI_DATATYPE_NULL;
  QZ_CALL_DONE(qz_alloc((size_t)size * 2, sizeof(int), "allgather counts", &counts));
  int *displs = counts + size;
  QZ_CALL_DONE(rows_layout(size, nrows, rowbytes, counts, &row));
  if (mine)
    QZ_CALL_MPI_DONE(MPI_Allgatherv(mine, counts[rank], row, full, counts, displs, row,
                                    comm));
  else
    QZ_CALL_MPI_DONE(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, full, counts,
                                    displs, row, comm));
  qz_count_allgather(comm, (int64_t)counts[rank] * rowbytes, nrows * rowbytes);
done:
  if (row != MPI_DATATYPE_NULL) MPI_Type_free(&row);
  qz_free(&counts);
  return st;
}

int qz_iallgather_rows_bytes(MPI_Comm comm, int64_t nrows, int64_t rowbytes, void *full,
                             int *counts, MPI_Request *req) {
  int size, rank;
  QZ_CALL_MPI(MPI_Comm_size(comm, &size));
  QZ_CALL_MPI(MPI_Comm_rank(comm, &rank));
  *req = MPI_REQUEST_NULL;
  if (size == 1 || rowbytes == 0) return QZ_OK;
  MPI_Datatype row = MPI_DATATYPE_NULL;
  QZ_CALL(rows_layout(size, nrows, rowbytes, counts, &row));
  int e = MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, full, counts, counts + size, row,
                          comm, req);
  MPI_Type_free(&row); /* (a pending operation keeps what it needs) */
  QZ_CALL_MPI(e);
  qz_count_allgather(comm, (int64_t)counts[rank] * rowbytes, nrows * rowbytes);
  return QZ_OK;
}

int qz_allgather_rows_f32(MPI_Comm comm, int64_t nrows, int64_t rowlen,
                          const float *mine, float *full) {
  return qz_allgather_rows_bytes(comm, nrows, 4 * rowlen, mine, full);
}

/* ---- byte counting (comm.h) ------------------------------------------ */

static void comm_shape(MPI_Comm comm, int *rank, int *size) {
  *rank = 0;
  *size = 1;
  MPI_Comm_rank(comm, rank);
  MPI_Comm_size(comm, size);
}

void qz_count_p2p(int64_t sent, int64_t received) {
  qz_bytes_add(QZ_BYTES_MPI_SENT, sent);
  qz_bytes_add(QZ_BYTES_MPI_RECV, received);
}

void qz_count_bcast(MPI_Comm comm, int root, int64_t bytes) {
  int rank, size;
  comm_shape(comm, &rank, &size);
  if (size < 2) return;
  if (rank == root) qz_count_p2p((int64_t)(size - 1) * bytes, 0);
  else qz_count_p2p(0, bytes);
}

void qz_count_allgather(MPI_Comm comm, int64_t mine, int64_t total) {
  int rank, size;
  comm_shape(comm, &rank, &size);
  if (size < 2) return;
  qz_count_p2p((int64_t)(size - 1) * mine, total - mine);
}

void qz_count_reduce(MPI_Comm comm, int root, int64_t bytes) {
  int rank, size;
  comm_shape(comm, &rank, &size);
  if (size < 2) return;
  if (rank == root) qz_count_p2p(0, (int64_t)(size - 1) * bytes);
  else qz_count_p2p(bytes, 0);
}

void qz_count_reduce_scatter(MPI_Comm comm, int64_t total, int64_t mine) {
  int rank, size;
  comm_shape(comm, &rank, &size);
  if (size < 2) return;
  qz_count_p2p(total - mine, (int64_t)(size - 1) * mine);
}

void qz_count_allreduce(MPI_Comm comm, int64_t bytes) {
  int rank, size;
  comm_shape(comm, &rank, &size);
  if (size < 2) return;
  int64_t share = 2 * bytes * (size - 1) / size;
  qz_count_p2p(share, share);
}

void qz_count_scatter(MPI_Comm comm, int root, int64_t total, int64_t mine) {
  int rank, size;
  comm_shape(comm, &rank, &size);
  if (size < 2) return;
  if (rank == root) qz_count_p2p(total - mine, 0);
  else qz_count_p2p(0, mine);
}

void qz_count_allgatherv(MPI_Comm comm, const int *counts, int64_t elem) {
  int rank, size;
  comm_shape(comm, &rank, &size);
  if (size < 2) return;
  int64_t total = 0;
  for (int r = 0; r < size; r++) total += counts[r];
  qz_count_allgather(comm, elem * counts[rank], elem * total);
}

void qz_count_gather(MPI_Comm comm, int root, int64_t mine, int64_t total) {
  int rank, size;
  comm_shape(comm, &rank, &size);
  if (size < 2) return;
  if (rank == root) qz_count_p2p(0, total - mine);
  else qz_count_p2p(mine, 0);
}

/* ---- nodes ----------------------------------------------------------- */

int qz_comm_node_split(MPI_Comm comm, int allow_off, MPI_Comm *node) {
  const char *e = getenv("MPIQUANT_HESSIAN_NODE");
  *node = MPI_COMM_NULL;
  const int off = e && strcmp(e, "off") == 0;
  if (off && allow_off) return QZ_OK;
  int k = 0; /* 0: the shared-memory split */
  if (e && !off && strcmp(e, "auto") != 0) {
    k = atoi(e);
    QZ_CHECK(k >= 1, QZ_ERR_USAGE,
             "MPIQUANT_HESSIAN_NODE='%s': off, auto or a rank count >= 1", e);
  }
  int rank;
  QZ_CALL_MPI(MPI_Comm_rank(comm, &rank));
  if (k > 0) QZ_CALL_MPI(MPI_Comm_split(comm, rank / k, rank, node));
  else QZ_CALL_MPI(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, node));
  return QZ_OK;
}

/* ---- node structure for the wire format of the block weights ---------- */

static int g_spans_kv = MPI_KEYVAL_INVALID;

int qz_comm_packed_wire(MPI_Comm comm, int *packed) {
  const char *w = getenv("MPIQUANT_WIRE");
  int size;
  QZ_CALL_MPI(MPI_Comm_size(comm, &size));
  *packed = 0;
  if (size == 1) return QZ_OK;
  if (w && *w && strcmp(w, "auto") != 0) {
    QZ_CHECK(strcmp(w, "packed") == 0 || strcmp(w, "f32") == 0, QZ_ERR_USAGE,
             "MPIQUANT_WIRE='%s': auto, packed or f32", w);
    *packed = strcmp(w, "packed") == 0;
    return QZ_OK;
  }
  if (g_spans_kv == MPI_KEYVAL_INVALID)
    QZ_CALL_MPI(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN,
                                       &g_spans_kv, NULL));
  void *v = NULL;
  int found = 0;
  QZ_CALL_MPI(MPI_Comm_get_attr(comm, g_spans_kv, &v, &found));
  if (found) {
    *packed = (int)(intptr_t)v - 1;
    return QZ_OK;
  }
  MPI_Comm node;
  int nsize;
  QZ_CALL(qz_comm_node_split(comm, 0, &node));
  MPI_Comm_size(node, &nsize);
  MPI_Comm_free(&node);
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &nsize, 1, MPI_INT, MPI_MIN, comm));
  *packed = nsize < size;
  QZ_CALL_MPI(MPI_Comm_set_attr(comm, g_spans_kv, (void *)(intptr_t)(*packed + 1)));
  return QZ_OK;
}
