/* Collective read-once loading: qz_st_read_f32_allgather on tensors with
 * fewer rows than ranks (idle readers), 1-D tensors and BF16, every rank
 * gets the whole tensor, each byte is read once over all ranks; a shape
 * mismatch fails on every rank without a hang.  BF16/F16 tensors travel in
 * 2 bytes and are widened in place on every rank: large ones (the parallel
 * halving stages of qz_raw16_widen_inplace, odd sizes) must give exactly
 * what one rank's qz_st_read_f32 of the whole tensor gives, the MPI bytes
 * must be the 2-byte ones, and a NaN in a BF16 tensor fails on every rank
 * naming its row and column -- that way forced with MPIQUANT_WIRE=packed
 * (the default between nodes); the f32 way must give the same values. */
#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/model.h"
#include "mpiquant/safetensors.h"
#include "mpiquant/timing.h"
#include "qz_test.h"

static uint16_t to_bf16(float f) { /* values below are exact in bf16 */
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)(u >> 16);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  MPI_Comm comm;
  QZT_OK(qz_comm_dup(MPI_COMM_WORLD, &comm));
  char path[1024];
  snprintf(path, sizeof path, "%s/t.safetensors", qzt_tmpdir());
  /* a: [7, 5] f32, b: [2, 3] f32 (2 rows < np 3, 4), c: [3] f32, d: [1, 4]
   * bf16 */
  float a[35], b[6], c[3], dv[4];
  uint16_t d[4];
  /* e: BF16 [37, 301], f: F16 [5, 1001] (every bit pattern class but
   * NaN/Inf), n: BF16 [6, 7] with a NaN at row 4, column 2 */
  enum { ER = 37, EC = 301, FR = 5, FC = 1001 };
  static uint16_t e[ER * EC], f[FR * FC], nn[42];
  uint32_t x = 12345u;
  for (int i = 0; i < ER * EC; i++) {
    x = x * 1664525u + 1013904223u;
    e[i] = (uint16_t)(x >> 16);
    if ((e[i] & 0x7f80u) == 0x7f80u) e[i] ^= 0x0100u; /* finite */
  }
  for (int i = 0; i < FR * FC; i++) {
    x = x * 1664525u + 1013904223u;
    f[i] = (uint16_t)(x >> 16);
    if ((f[i] & 0x7c00u) == 0x7c00u) f[i] ^= 0x0400u;
  }
  for (int i = 0; i < 42; i++) nn[i] = to_bf16(1.0f + (float)i);
  nn[4 * 7 + 2] = 0x7fc0u;
  for (int i = 0; i < 35; i++) a[i] = (float)i * 0.5f - 3.0f;
  for (int i = 0; i < 6; i++) b[i] = 100.0f + (float)i;
  for (int i = 0; i < 3; i++) c[i] = -1.0f - (float)i;
  for (int i = 0; i < 4; i++) {
    dv[i] = 0.25f * (float)(i + 1);
    d[i] = to_bf16(dv[i]);
  }
  int st = QZ_OK;
  if (qzt_rank() == 0) {
    qz_st_writer *w = NULL;
    int64_t sa[2] = {7, 5}, sb[2] = {2, 3}, sc[1] = {3}, sd[2] = {1, 4};
    int64_t se[2] = {ER, EC}, sf2[2] = {FR, FC}, sn[2] = {6, 7};
    st = qz_st_writer_create(path, &w);
    if (st == QZ_OK) st = qz_st_writer_add(w, "a", QZ_DT_F32, 2, sa, a);
    if (st == QZ_OK) st = qz_st_writer_add(w, "b", QZ_DT_F32, 2, sb, b);
    if (st == QZ_OK) st = qz_st_writer_add(w, "c", QZ_DT_F32, 1, sc, c);
    if (st == QZ_OK) st = qz_st_writer_add(w, "d", QZ_DT_BF16, 2, sd, d);
    if (st == QZ_OK) st = qz_st_writer_add(w, "e", QZ_DT_BF16, 2, se, e);
    if (st == QZ_OK) st = qz_st_writer_add(w, "f", QZ_DT_F16, 2, sf2, f);
    if (st == QZ_OK) st = qz_st_writer_add(w, "n", QZ_DT_BF16, 2, sn, nn);
    if (st == QZ_OK) st = qz_st_writer_finish(&w);
    else qz_st_writer_abort(&w);
    QZT_OK(st);
  }
  if (!QZT_OK(qz_error_agree(comm, st))) return qzt_finish("test_fwd_load");
  qz_st *sf = NULL;
  QZT_OK(qz_st_open(path, &sf));
  float ga[35], gb[6], gc[3], gd[4];
  memset(ga, 0, sizeof ga);
  memset(gb, 0, sizeof gb);
  QZT_OK(qz_st_read_f32_allgather(comm, sf, "a", 7, 5, ga));
  QZT_OK(qz_st_read_f32_allgather(comm, sf, "b", 2, 3, gb));
  QZT_OK(qz_st_read_f32_allgather(comm, sf, "c", 3, 1, gc));
  QZT_OK(qz_st_read_f32_allgather(comm, sf, "d", 1, 4, gd));
  QZT_CHECK(memcmp(ga, a, sizeof a) == 0, "a assembled on rank %d", qzt_rank());
  QZT_CHECK(memcmp(gb, b, sizeof b) == 0, "b assembled (idle readers)");
  QZT_CHECK(memcmp(gc, c, sizeof c) == 0, "1-D c assembled");
  QZT_CHECK(memcmp(gd, dv, sizeof dv) == 0, "bf16 d converted and assembled");
  int64_t bytes = qz_st_bytes_read(sf);
  QZT_OK(qz_allreduce_i64(comm, &bytes, 1, MPI_SUM));
  int64_t want = 35 * 4 + 6 * 4 + 3 * 4 + 4 * 2;
  QZT_CHECK(bytes == want, "bytes read over ranks %lld == %lld",
            (long long)bytes, (long long)want);
  /* large 16-bit tensors: gathered in 2 bytes, widened in place */
  static float ge[ER * EC], re[ER * EC], gf[FR * FC], rf[FR * FC];
  const int P = qzt_size();
  setenv("MPIQUANT_WIRE", "packed", 1);
  int64_t mpi0 = qz_bytes_get(QZ_PHASE_OTHER, QZ_BYTES_MPI_RECV);
  QZT_OK(qz_st_read_f32_allgather(comm, sf, "e", ER, EC, ge));
  QZT_OK(qz_st_read_f32_allgather(comm, sf, "f", FR, FC, gf));
  int64_t got = qz_bytes_get(QZ_PHASE_OTHER, QZ_BYTES_MPI_RECV) - mpi0;
  int64_t r0, cnt, wantb = 0;
  qz_split_even(ER, P, qzt_rank(), &r0, &cnt);
  wantb += P > 1 ? 2 * (ER - cnt) * EC : 0;
  qz_split_even(FR, P, qzt_rank(), &r0, &cnt);
  wantb += P > 1 ? 2 * (FR - cnt) * FC : 0;
  /* (+ at most 64 bytes of error agreements; f32 would be 2 x wantb) */
  QZT_CHECK(got >= wantb && got <= wantb + 64,
            "16-bit tensors received in 2 bytes per element: %lld in [%lld, +64]",
            (long long)got, (long long)wantb);
  QZT_OK(qz_st_read_f32(sf, "e", 0, ER, re));
  QZT_OK(qz_st_read_f32(sf, "f", 0, FR, rf));
  QZT_CHECK(memcmp(ge, re, sizeof re) == 0, "bf16 e widened as qz_st_read_f32 (rank %d)",
            qzt_rank());
  QZT_CHECK(memcmp(gf, rf, sizeof rf) == 0, "f16 f widened as qz_st_read_f32 (rank %d)",
            qzt_rank());
  setenv("MPIQUANT_WIRE", "f32", 1);
  memset(ge, 0, sizeof ge);
  QZT_OK(qz_st_read_f32_allgather(comm, sf, "e", ER, EC, ge));
  QZT_CHECK(memcmp(ge, re, sizeof re) == 0, "bf16 e through f32 rows: the same values");
  setenv("MPIQUANT_WIRE", "packed", 1);
  float gn[42];
  int rn = qz_st_read_f32_allgather(comm, sf, "n", 6, 7, gn);
  QZT_CHECK(rn != QZ_OK, "a NaN in a BF16 tensor fails on rank %d", qzt_rank());
  QZT_CHECK(rn == QZ_ERR_NUMERIC ? strstr(qz_error_message(), "row 4, column 2") != NULL
                                 : rn == QZ_ERR_REMOTE,
            "the owner names row 4, column 2: %s", qz_error_message());
  qz_error_clear();
  /* wrong expected shape: every rank fails, nobody hangs */
  int rc = qz_st_read_f32_allgather(comm, sf, "a", 5, 5, ga);
  QZT_CHECK(rc != QZ_OK, "shape mismatch fails on rank %d", qzt_rank());
  QZT_CHECK(rc == QZ_ERR_FORMAT ? strstr(qz_error_message(), "35 elements") != NULL
                                : rc == QZ_ERR_REMOTE,
            "message names the element count: %s", qz_error_message());
  qz_error_clear();
  rc = qz_st_read_f32_allgather(comm, sf, "nope", 5, 5, ga);
  QZT_CHECK(rc != QZ_OK, "missing tensor fails on every rank");
  qz_error_clear();
  qz_st_close(&sf);
  MPI_Comm_free(&comm);
  return qzt_finish("test_fwd_load");
}
