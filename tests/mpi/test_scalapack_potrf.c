/* ScaLAPACK pdpotrf of a known SPD matrix in block-cyclic layout vs serial
 * LAPACK dpotrf, on a near-square grid.  Checks the link recipe and our
 * prototypes end to end. */
#include <math.h>
#include <stdlib.h>

#include "mpiquant/scalapack.h"
#include "qz_test.h"

/* A = B Bᵀ / n + I: SPD with a known construction, deterministic on every rank. */
static double a_elem(const double *B, int n, int i, int j) {
  double s = 0;
  for (int k = 0; k < n; k++) s += B[(size_t)i * n + k] * B[(size_t)j * n + k];
  return s / n + (i == j ? 1.0 : 0.0);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  int rank = qzt_rank(), size = qzt_size();
  const int n = 301, nb = 32, izero = 0, ione = 1;
  int pr = 1;
  for (int d = 1; d * d <= size; d++)
    if (size % d == 0) pr = d;
  int pc = size / pr;

  int ctx;
  Cblacs_get(0, 0, &ctx);
  Cblacs_gridinit(&ctx, "Row", pr, pc);
  int npr, npc, myr, myc;
  Cblacs_gridinfo(ctx, &npr, &npc, &myr, &myc);
  QZT_CHECK(npr == pr && npc == pc, "grid %dx%d", npr, npc);

  uint64_t seed = 42;
  double *B = malloc(sizeof(double) * n * n);
  for (int i = 0; i < n * n; i++) B[i] = qzt_rand_normal(&seed);
  double *A = malloc(sizeof(double) * n * n); /* column-major full, reference */
  for (int j = 0; j < n; j++)
    for (int i = 0; i < n; i++) A[(size_t)j * n + i] = a_elem(B, n, i, j);

  int mloc = numroc_(&n, &nb, &myr, &izero, &npr);
  int nloc = numroc_(&n, &nb, &myc, &izero, &npc);
  int lld = mloc > 1 ? mloc : 1, info = 0, desc[9];
  descinit_(desc, &n, &n, &nb, &nb, &izero, &izero, &ctx, &lld, &info);
  QZT_CHECK(info == 0, "descinit info %d", info);
  double *Al = malloc(sizeof(double) * (size_t)lld * (nloc > 0 ? nloc : 1));
  for (int jl = 0; jl < nloc; jl++) {
    int jf = jl + 1, j = indxl2g_(&jf, &nb, &myc, &izero, &npc) - 1;
    for (int il = 0; il < mloc; il++) {
      int iff = il + 1, i = indxl2g_(&iff, &nb, &myr, &izero, &npr) - 1;
      Al[(size_t)jl * lld + il] = A[(size_t)j * n + i];
    }
  }
  pdpotrf_("L", &n, Al, &ione, &ione, desc, &info, 1);
  QZT_CHECK(info == 0, "pdpotrf info %d", info);
  dpotrf_("L", &n, A, &n, &info, 1);
  QZT_CHECK(info == 0, "dpotrf info %d", info);
  double maxdiff = 0, maxabs = 0;
  for (int jl = 0; jl < nloc; jl++) {
    int jf = jl + 1, j = indxl2g_(&jf, &nb, &myc, &izero, &npc) - 1;
    for (int il = 0; il < mloc; il++) {
      int iff = il + 1, i = indxl2g_(&iff, &nb, &myr, &izero, &npr) - 1;
      if (i < j) continue;
      double d = fabs(Al[(size_t)jl * lld + il] - A[(size_t)j * n + i]);
      if (d > maxdiff) maxdiff = d;
      if (fabs(A[(size_t)j * n + i]) > maxabs) maxabs = fabs(A[(size_t)j * n + i]);
    }
  }
  MPI_Allreduce(MPI_IN_PLACE, &maxdiff, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  /* tolerance: a few ulps of the factor's magnitude times sqrt(n) */
  QZT_CHECK(maxdiff <= 1e-13 * (maxabs > 1 ? maxabs : 1) * 20,
            "pdpotrf vs dpotrf max |diff| %.3g (rank %d)", maxdiff, rank);

  /* a matrix that is not positive definite gives info > 0, not a crash */
  for (int jl = 0; jl < nloc; jl++)
    for (int il = 0; il < mloc; il++) Al[(size_t)jl * lld + il] = -1.0;
  pdpotrf_("L", &n, Al, &ione, &ione, desc, &info, 1);
  QZT_CHECK(info > 0, "non-PD gives info > 0, got %d", info);

  free(Al);
  free(A);
  free(B);
  Cblacs_gridexit(ctx);
  return qzt_finish("test_scalapack_potrf");
}
