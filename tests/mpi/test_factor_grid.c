/* The GPTQ factor of a wide, ill-conditioned Hessian has the same bits on
 * every rank count (grid.h, QZ_GRID_1D; the default on one node): the f32
 * panels of U from all ranks equal, bit for bit, those of rank 0 alone
 * (np 1), after act-order and damping.  ScaLAPACK on a 2 x 2 grid (and
 * LAPACK at np 1) rounds differently for this matrix, so a grid policy that
 * fell back to near-square grids, or to LAPACK at np 1, fails here
 * (QZ_TEST_PROC_GRID=2d shows it at np 2, 3 and 4).  Also: the policy's shapes
 * (auto on one node = 1 x P; auto with nodes emulated by
 * MPIQUANT_HESSIAN_NODE = near-square; 1d/2d forced).  That the factor is
 * right is test_linalg_hessian's (vs LAPACK in f64, at every np). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/chol.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "qz_test.h"

static int64_t D = 1536; /* input width (QZ_FACTOR_GRID_D for experiments) */
#define NB 64      /* block size of the grid */
#define NSEQ 8     /* sequences of T / NSEQ rows */
#define T (2 * D)  /* calibration rows */
#define RHO 0.995f /* correlation of neighbouring channels */

/* row t of X: AR(1) across channels (condition ~ (1+rho)/(1-rho) squared
 * times the channel scales' spread), log-normal channel scales, 1 % of the
 * channels x 40, a per-channel mean */
static void make_row(int64_t t, float *x) {
  uint64_t s = (uint64_t)t * 2654435761u + 99u;
  float prev = 0.0f;
  for (int64_t j = 0; j < D; j++) {
    float z = (float)qzt_rand_normal(&s);
    prev = j ? RHO * prev + sqrtf(1.0f - RHO * RHO) * z : z;
    uint64_t c = (uint64_t)j * 40503u + 7u;
    float sc = expf(0.5f * (float)qzt_rand_normal(&c)) * (j % 100 == 37 ? 40.0f : 1.0f);
    x[j] = sc * (prev + 0.2f);
  }
}

/* FNV-1a over the bits of the upper-triangle panels [D, D] */
static uint64_t hash_panel(const float *u) {
  uint64_t h = 1469598103934665603ull;
  const unsigned char *b = (const unsigned char *)u;
  for (size_t i = 0; i < sizeof(float) * (size_t)D * D; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* U (f32, processing order) of the act-order damped factor of H on comm;
 * also the shape of the grid.  Collective on comm. */
static int factor_on(MPI_Comm comm, float *u, int *pr, int *pc) {
  int rank, P;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  qz_grid *g = NULL;
  qz_hessian *H = NULL;
  int st = qz_grid_create(comm, NB, &g);
  if (!st) qz_grid_shape(g, pr, pc, NULL, NULL);
  if (!st) st = qz_hessian_create(g, D, &H);
  int64_t s0, sn; /* whole sequences per rank: H is then the same at any P */
  qz_split_even(NSEQ, P, rank, &s0, &sn);
  const int64_t t0 = s0 * (T / NSEQ), tn = sn * (T / NSEQ);
  float *x = malloc(sizeof(float) * (size_t)(tn > 0 ? tn : 1) * D);
  for (int64_t t = 0; t < tn; t++) make_row(t0 + t, x + t * D);
  if (!st) st = qz_hessian_add_rows(H, x, tn);
  free(x);
  if (!st) qz_hessian_count_sequences(H, sn);
  if (!st) st = qz_hessian_reduce(H);
  qz_prepare_opts po = {.percdamp = 0.01, .act_order = 1, .name = "factor_grid"};
  if (!st) st = qz_hessian_prepare(H, &po);
  for (int64_t r0 = 0; !st && r0 < D; r0 += 200) /* panels not aligned to NB */
    st = qz_hessian_factor_rows(H, r0, r0 + 200 <= D ? 200 : D - r0, u + r0 * D);
  qz_hessian_destroy(&H);
  qz_grid_destroy(&g);
  return st;
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  if (getenv("QZ_FACTOR_GRID_D")) D = atoll(getenv("QZ_FACTOR_GRID_D"));
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const char *pol = getenv("QZ_TEST_PROC_GRID");
  if (pol) {
    qz_grid_policy p;
    if (QZT_OK(qz_grid_parse_policy("QZ_TEST_PROC_GRID", pol, &p))) qz_grid_set_policy(p);
  }
  float *all = malloc(sizeof(float) * (size_t)D * D);
  float *one = malloc(sizeof(float) * (size_t)D * D);
  int pr = 0, pc = 0, pr1 = 0, pc1 = 0;
  QZT_OK(factor_on(MPI_COMM_WORLD, all, &pr, &pc));
  if (!pol)
    QZT_CHECK(pr == 1 && pc == size, "auto on one node: grid %dx%d, expected 1x%d", pr, pc,
              size);
  /* np 1: rank 0 alone, the same policy */
  MPI_Comm solo;
  MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? 0 : MPI_UNDEFINED, 0, &solo);
  if (rank == 0) {
    QZT_OK(factor_on(solo, one, &pr1, &pc1));
    MPI_Comm_free(&solo);
    uint64_t ha = hash_panel(all), h1 = hash_panel(one);
    int64_t ndiff = 0;
    for (int64_t i = 0; i < (int64_t)D * D; i++) ndiff += memcmp(&all[i], &one[i], sizeof(float)) != 0;
    printf("factor_grid: %d ranks (%dx%d), U panels hash %016llx; rank 0 alone %016llx\n", size,
           pr, pc, (unsigned long long)ha, (unsigned long long)h1);
    QZT_CHECK(ha == h1 && ndiff == 0,
              "factor panels on %d ranks (%dx%d grid) vs rank 0 alone: %lld of %lld "
              "entries differ (hash %016llx vs %016llx)",
              size, pr, pc, (long long)ndiff, (long long)D * D, (unsigned long long)ha,
              (unsigned long long)h1);
  }
  /* shapes of the policies (cheap: tiny grids, no factorization) */
  qz_grid_policy keep = qz_grid_get_policy();
  const qz_grid_policy ps[2] = {QZ_GRID_1D, QZ_GRID_2D};
  for (int k = 0; k < 2; k++) {
    qz_grid_set_policy(ps[k]);
    qz_grid *g = NULL;
    if (QZT_OK(qz_grid_create(MPI_COMM_WORLD, NB, &g))) {
      qz_grid_shape(g, &pr, &pc, NULL, NULL);
      int want = 1;
      for (int d = 1; ps[k] == QZ_GRID_2D && d * d <= size; d++)
        if (size % d == 0) want = d;
      QZT_CHECK(pr == want && pr * pc == size && qz_grid_is_1d(g) == (ps[k] == QZ_GRID_1D),
                "policy %s: grid %dx%d", k ? "2d" : "1d", pr, pc);
      qz_grid_destroy(&g);
    }
  }
  if (size == 4 && !pol) { /* auto across emulated nodes of 1 rank: 2 x 2 */
    qz_grid_set_policy(QZ_GRID_AUTO);
    setenv("MPIQUANT_HESSIAN_NODE", "1", 1);
    qz_grid *g = NULL;
    if (QZT_OK(qz_grid_create(MPI_COMM_WORLD, NB, &g))) {
      qz_grid_shape(g, &pr, &pc, NULL, NULL);
      QZT_CHECK(pr == 2 && pc == 2 && !qz_grid_is_1d(g), "auto over 4 nodes: %dx%d", pr, pc);
      qz_grid_destroy(&g);
    }
    unsetenv("MPIQUANT_HESSIAN_NODE");
  }
  qz_grid_set_policy(keep);
  free(all);
  free(one);
  return qzt_finish("test_factor_grid");
}
