/* Row-sliced reads across ranks: each rank converts only the rows it owns
 * (qz_split_even over dim 0); the gathered tensors equal a whole-tensor read
 * bit for bit, for the F32 and the BF16 model, and the bytes converted over
 * all ranks equal the data size once (no rank reads another's rows). */
#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/safetensors.h"
#include "qz_test.h"

static void check_model(MPI_Comm comm, const char *dir) {
  int rank = qzt_rank(), size = qzt_size();
  qz_st *sl = NULL, *full = NULL;
  int st = qz_st_open(dir, &sl);
  if (st == QZ_OK) st = qz_st_open(dir, &full);
  QZT_OK(st);
  if (qz_error_agree(comm, st) != QZ_OK) {
    qz_st_close(&sl);
    qz_st_close(&full);
    return;
  }
  int64_t total_bytes = 0, bad = 0;
  int *counts = malloc((size_t)size * sizeof *counts);
  int *displs = malloc((size_t)size * sizeof *displs);
  for (int i = 0; i < qz_st_count(sl); i++) {
    const qz_tensor_info *ti = qz_st_info_at(sl, i);
    int64_t rows = ti->ndim ? ti->shape[0] : 1, rowlen = ti->nelem / rows;
    int64_t b, c;
    qz_split_even(rows, size, rank, &b, &c);
    float *mine = malloc((size_t)(c * rowlen + 1) * sizeof *mine);
    float *all = malloc((size_t)ti->nelem * sizeof *all);
    float *ref = malloc((size_t)ti->nelem * sizeof *ref);
    QZT_OK(qz_st_read_f32(sl, ti->name, b, c, mine));
    QZT_OK(qz_st_read_f32(full, ti->name, 0, rows, ref));
    for (int r = 0; r < size; r++) {
      int64_t rb, rc;
      qz_split_even(rows, size, r, &rb, &rc);
      counts[r] = (int)(rc * rowlen);
      displs[r] = (int)(rb * rowlen);
    }
    MPI_Allgatherv(mine, counts[rank], MPI_FLOAT, all, counts, displs, MPI_FLOAT, comm);
    bad += memcmp(all, ref, (size_t)ti->nelem * sizeof *all) != 0;
    total_bytes += ti->nbytes;
    free(mine);
    free(all);
    free(ref);
  }
  QZT_CHECK(bad == 0, "%s: %lld tensors differ between sliced and whole reads",
            dir, (long long)bad);
  int64_t got = qz_st_bytes_read(sl);
  QZT_OK(qz_allreduce_i64(comm, &got, 1, MPI_SUM));
  QZT_CHECK(got == total_bytes, "%s: bytes converted over %d ranks %lld == data "
            "size %lld", dir, size, (long long)got, (long long)total_bytes);
  free(counts);
  free(displs);
  qz_st_close(&sl);
  qz_st_close(&full);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  MPI_Comm comm;
  QZT_OK(qz_comm_dup(MPI_COMM_WORLD, &comm));
  const char *sh = qzt_shared();
  if (sh) {
    char p[2048];
    snprintf(p, sizeof p, "%s/models/stories260K-hf", sh);
    check_model(comm, p);
    snprintf(p, sizeof p, "%s/models/stories260K-hf-bf16", sh);
    check_model(comm, p);
    snprintf(p, sizeof p, "%s/models/babyllama-tok105-hf", sh);
    check_model(comm, p);
  }
  MPI_Comm_free(&comm);
  return qzt_finish("io_rows");
}
