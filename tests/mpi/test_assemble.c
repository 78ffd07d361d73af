/* qz_linear_assemble: after quantizing, ranks exchange their rows' codes
 * (packed at 1, 2, 4 or 8 bits), f32 scales/zeros and sparse entries and
 * dequantize the others' rows themselves (mpi_driver/qblock.c).  The whole
 * matrix on every rank must equal, bit for bit, one dequantization of all
 * rows by qz_dequantize_rows_grid + the sparse entries (an independent
 * serial computation from the full arrays), for every code width, an odd
 * row length, act-order g_idx, the nf4 grid, sparse entries on some ranks
 * only, and fewer rows than ranks (then the f32 rows travel); and the MPI
 * bytes of the packed path must be those of the packed rows.  The packed
 * way is forced (MPIQUANT_WIRE=packed: one machine is one node); the f32
 * way (MPIQUANT_WIRE=f32, a single node's default) must give the same. */
#include <stdlib.h>
#include <string.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/codes.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/timing.h"
#include "qblock.h"
#include "qz_test.h"

static uint32_t rnd(uint32_t *x) {
  *x = *x * 1664525u + 1013904223u;
  return *x >> 8;
}

/* One case: [out, in] with groups of g columns, codes < maxc + 1. */
static int g_packed;

static void one_case(MPI_Comm comm, int64_t out, int64_t in, int64_t g, int maxc, int grid,
                     int act_order, int sparse, uint32_t seed) {
  const int P = qzt_size(), rank = qzt_rank();
  const int64_t ng = (in + g - 1) / g;
  uint8_t *codes = malloc((size_t)(out * in));
  float *sc = malloc(sizeof(float) * (size_t)(out * ng));
  float *z = malloc(sizeof(float) * (size_t)(out * ng));
  int32_t *gi = malloc(sizeof(int32_t) * (size_t)in);
  float *want = malloc(sizeof(float) * (size_t)(out * in));
  float *full = malloc(sizeof(float) * (size_t)(out * in));
  float *rows = malloc(sizeof(float) * (size_t)(out * in));
  int64_t oidx[64];
  float oval[64];
  int64_t nnz = 0;
  uint32_t x = seed;
  for (int64_t k = 0; k < out * in; k++) codes[k] = (uint8_t)(rnd(&x) % (uint32_t)(maxc + 1));
  for (int64_t k = 0; k < out * ng; k++) {
    sc[k] = 1e-3f * (float)(1 + rnd(&x) % 1000);
    z[k] = (float)(rnd(&x) % (uint32_t)(maxc + 1));
  }
  for (int64_t j = 0; j < in; j++) /* act-order: groups by a permuted position */
    gi[j] = (int32_t)((act_order ? (j * 7 + 3) % in : j) / g);
  if (sparse) /* entries in rows 1 and out - 2 only (some ranks have none) */
    for (int k = 0; k < 10; k++) {
      int64_t r = k % 2 ? 1 : out - 2;
      oidx[nnz] = r * in + (int64_t)(rnd(&x) % (uint32_t)in);
      oval[nnz++] = 0.5f * (float)(k + 1);
    }
  float value[256];
  if (grid != QZ_VGRID_INT) qz_vgrid_values((qz_vgrid)grid, value);
  const float *vt = grid != QZ_VGRID_INT ? value : NULL;
  qz_dequantize_rows_grid(out, in, ng, codes, sc, z, gi, vt, want);
  qz_outliers_add_rows(0, out, in, nnz, oidx, oval, want);
  int64_t r0, nr;
  qz_split_even(out, P, rank, &r0, &nr);
  /* this rank's entries only (as a method returns them), flat global index */
  int64_t mine = 0, midx[64];
  float mval[64];
  for (int64_t k = 0; k < nnz; k++)
    if (oidx[k] / in >= r0 && oidx[k] / in < r0 + nr) midx[mine] = oidx[k], mval[mine++] = oval[k];
  memset(full, 0xff, sizeof(float) * (size_t)(out * in));
  int64_t b0 = qz_bytes_get(QZ_PHASE_OTHER, QZ_BYTES_MPI_RECV);
  int rc = qz_linear_assemble(comm, out, in, ng, r0, nr, grid, codes + r0 * in, sc + r0 * ng,
                              z + r0 * ng, gi, mine, midx, mval, rows, full);
  int64_t got = qz_bytes_get(QZ_PHASE_OTHER, QZ_BYTES_MPI_RECV) - b0;
  QZT_OK(rc);
  QZT_CHECK(memcmp(full, want, sizeof(float) * (size_t)(out * in)) == 0,
            "[%lld, %lld] g %lld codes <= %d grid %d act-order %d sparse %d: whole matrix "
            "bit-identical on rank %d", (long long)out, (long long)in, (long long)g, maxc, grid,
            act_order, sparse, rank);
  int64_t minr = out / P; /* every rank has rows: the packed path */
  if (P > 1 && minr > 0 && g_packed) {
    int bits = maxc < 2 ? 1 : maxc < 4 ? 2 : maxc < 16 ? 4 : 8;
    int64_t rb = (in * bits + 7) / 8, other = out - nr;
    int64_t packed = other * (rb + 8 * ng), f32 = other * 4 * in;
    QZT_CHECK(got >= packed && got <= packed + 64 * P + 12 * nnz,
              "received %lld bytes: the packed rows (%lld) + counts, not f32 (%lld)",
              (long long)got, (long long)packed, (long long)f32);
  }
  free(codes), free(sc), free(z), free(gi), free(want), free(full), free(rows);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  MPI_Comm comm;
  QZT_OK(qz_comm_dup(MPI_COMM_WORLD, &comm));
  for (g_packed = 1; g_packed >= 0; g_packed--) {
    setenv("MPIQUANT_WIRE", g_packed ? "packed" : "f32", 1);
    const int maxcs[4] = {1, 3, 15, 255};
    for (int k = 0; k < 4; k++) one_case(comm, 13, 37, 8, maxcs[k], QZ_VGRID_INT, 0, 0, 7u + k);
    one_case(comm, 16, 64, 16, 15, QZ_VGRID_INT, 1, 1, 99u); /* act-order + sparse */
    one_case(comm, 9, 33, 32, 15, QZ_VGRID_NF4, 0, 1, 5u);   /* nf4 table */
    one_case(comm, 2, 40, 8, 15, QZ_VGRID_INT, 0, 1, 11u);   /* rows < ranks at np 3, 4 */
    one_case(comm, 24, 128, 128, 6, QZ_VGRID_INT, 0, 0, 3u); /* w3 -> 4-bit packing */
  }
  MPI_Comm_free(&comm);
  return qzt_finish("test_assemble");
}
