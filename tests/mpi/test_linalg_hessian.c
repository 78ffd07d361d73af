/* Distributed Hessian and its factorization vs an independent serial
 * computation: H = 2/N X^T X accumulated on every np, dead columns,
 * act-order, damping, potrf -> potri -> potrf('U'), row panels of U at
 * offsets not aligned to nb; the damping ladder on a rank-deficient H;
 * NaN inputs fail on every rank without a hang. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/chol.h"
#include "mpiquant/error.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/scalapack.h"
#include "mpiquant/comm.h"
#include "qz_test.h"

/* named tolerances */
#define TOL_H_ACCUM 2e-5   /* f32 products summed in f32 chunks vs f64 */
#define TOL_PANEL 1e-6     /* f32 panel of U vs LAPACK's f64 U, rel. to max|U| */

static const int64_t D = 203; /* not a multiple of nb */
static const int NB = 16;

static float xval(int64_t t, int64_t j) {
  if (j == 5 || j == 77) return 0.0f; /* dead columns */
  uint64_t s = (uint64_t)t * 1000003u + (uint64_t)j * 7919u + 12345u;
  double v = qzt_rand_normal(&s);
  double sc = 0.5 + (double)((j * 37) % 11) / 4.0; /* distinct diagonals */
  return (float)(v * sc + 0.1 * (double)(j % 3));
}

static float *make_rows(int64_t t0, int64_t n) {
  float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1) * D);
  for (int64_t t = 0; t < n; t++)
    for (int64_t j = 0; j < D; j++) x[t * D + j] = xval(t0 + t, j);
  return x;
}

/* serial: dead fix, perm, damping, factor; U row-major [d, d] upper */
static int serial_factor(const double *H, int act, double percdamp,
                         int32_t *perm, double *U) {
  int n = (int)D, info = 0;
  double *dg = malloc(sizeof(double) * D), mean = 0;
  for (int64_t j = 0; j < D; j++) {
    dg[j] = H[j * D + j] == 0 ? 1.0 : H[j * D + j];
    mean += dg[j];
  }
  mean /= D;
  for (int64_t j = 0; j < D; j++) perm[j] = (int32_t)j;
  if (act) /* insertion sort, descending, ties by index (stable) */
    for (int64_t i = 1; i < D; i++) {
      int32_t k = perm[i];
      int64_t m = i - 1;
      while (m >= 0 && dg[perm[m]] < dg[k]) {
        perm[m + 1] = perm[m];
        m--;
      }
      perm[m + 1] = k;
    }
  double *A = malloc(sizeof(double) * D * D);
  for (int64_t i = 0; i < D; i++)
    for (int64_t j = 0; j < D; j++)
      A[i * D + j] = i == j ? dg[perm[i]] + percdamp * mean
                            : H[perm[i] * D + perm[j]];
  /* symmetric: row-major = column-major */
  dpotrf_("U", &n, A, &n, &info, 1);
  if (!info) dpotri_("U", &n, A, &n, &info, 1);
  if (!info) dpotrf_("U", &n, A, &n, &info, 1);
  /* column-major upper: U[i][j] = A[i + j*n] */
  for (int64_t i = 0; i < D; i++)
    for (int64_t j = 0; j < D; j++) U[i * D + j] = j >= i ? A[i + j * D] : 0.0;
  free(A);
  free(dg);
  return info;
}

static void check_factor(qz_hessian *H, const double *U, const char *what) {
  float *panel = malloc(sizeof(float) * 50 * D);
  double maxd = 0, maxu = 0;
  for (int64_t r0 = 0; r0 < D; r0 += 50) { /* 50: not aligned to nb */
    int64_t nr = r0 + 50 <= D ? 50 : D - r0;
    if (!QZT_OK(qz_hessian_factor_rows(H, r0, nr, panel))) break;
    for (int64_t i = 0; i < nr; i++)
      for (int64_t j = 0; j < D; j++) {
        double u = U[(r0 + i) * D + j];
        double e = fabs((double)panel[i * D + j] - (double)(float)u);
        if (e > maxd) maxd = e;
        if (fabs(u) > maxu) maxu = fabs(u);
      }
  }
  /* panels are f32: compare with the f32 rounding of the f64 result */
  QZT_CHECK(maxd <= TOL_PANEL * maxu,
            "%s: factor panels vs LAPACK max |diff| %.3g (max |U| %.3g)", what,
            maxd, maxu);
  free(panel);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  int rank = qzt_rank(), size = qzt_size();
  qz_grid *grid = NULL;
  QZT_OK(qz_grid_create(MPI_COMM_WORLD, NB, &grid));
  int pr, pc;
  qz_grid_shape(grid, &pr, &pc, NULL, NULL);
  QZT_CHECK(pr * pc == size && pr <= pc, "grid %dx%d for %d ranks", pr, pc,
            size);

  /* ---- accumulation: 600 rows, 7 sequences, two batches with a flush */
  const int64_t T = 600, NSEQ = 7;
  qz_hessian *H = NULL;
  QZT_OK(qz_hessian_create(grid, D, &H));
  int64_t t0, tn, s0, sn;
  qz_split_even(T, size, rank, &t0, &tn);
  qz_split_even(NSEQ, size, rank, &s0, &sn);
  float *x = make_rows(t0, tn);
  int64_t half = tn / 2;
  QZT_OK(qz_hessian_add_rows(H, x, half));
  QZT_OK(qz_hessian_flush(H));
  QZT_OK(qz_hessian_add_rows(H, x + half * D, tn - half));
  qz_hessian_count_sequences(H, sn);
  QZT_OK(qz_hessian_reduce(H));
  QZT_CHECK(qz_hessian_nsequences(H) == NSEQ, "N = %lld",
            (long long)qz_hessian_nsequences(H));

  double *Href = calloc((size_t)(D * D), sizeof(double));
  float *xall = make_rows(0, T);
  for (int64_t t = 0; t < T; t++)
    for (int64_t i = 0; i < D; i++) {
      double xi = xall[t * D + i];
      for (int64_t j = 0; j < D; j++) Href[i * D + j] += xi * xall[t * D + j];
    }
  double hmax = 0;
  for (int64_t i = 0; i < D * D; i++) {
    Href[i] *= 2.0 / NSEQ;
    if (fabs(Href[i]) > hmax) hmax = fabs(Href[i]);
  }
  double *Hd = malloc(sizeof(double) * D * D);
  QZT_OK(qz_hessian_get_rows(H, 0, D, Hd));
  double maxd = 0;
  for (int64_t i = 0; i < D * D; i++)
    if (fabs(Hd[i] - Href[i]) > maxd) maxd = fabs(Hd[i] - Href[i]);
  QZT_CHECK(maxd <= TOL_H_ACCUM * hmax, "H vs serial: max |diff| %.3g, max %.3g",
            maxd, hmax);
  const double *dg = qz_hessian_diag(H);
  QZT_CHECK(dg && dg[5] == 0.0 && dg[77] == 0.0 && dg[0] > 0,
            "diagonal: dead columns exactly 0");
  /* symmetric storage assembled from the lower triangle */
  QZT_CHECK(Hd[3 * D + 100] == Hd[100 * D + 3], "get_rows symmetric");

  /* memory: matrix + O(d) vectors, nothing d x d */
  int myr, myc;
  qz_grid_shape(grid, NULL, NULL, &myr, &myc);
  int64_t want = qz_bc_numroc(D, NB, myr, pr) * qz_bc_numroc(D, NB, myc, pc) * 8 +
                 D * 13;
  QZT_CHECK(qz_hessian_bytes(H) <= want + 8 * D,
            "handle bytes %lld, expected about %lld",
            (long long)qz_hessian_bytes(H), (long long)want);

  /* ---- factor with act-order + dead columns vs LAPACK on the same H */
  int32_t *perm = malloc(sizeof(int32_t) * D);
  double *U = malloc(sizeof(double) * D * D);
  QZT_CHECK(serial_factor(Hd, 1, 0.01, perm, U) == 0, "serial factor");
  qz_prepare_opts po = {.percdamp = 0.01, .act_order = 1, .name = "test.act"};
  if (QZT_OK(qz_hessian_prepare(H, &po))) {
    const qz_prepare_info *pi = qz_hessian_prepared(H);
    QZT_CHECK(pi->ndead == 2 && pi->dead[5] && pi->dead[77] && !pi->dead[6],
              "dead columns: %lld", (long long)pi->ndead);
    QZT_CHECK(memcmp(pi->perm, perm, sizeof(int32_t) * D) == 0,
              "act-order permutation equals the serial sort");
    QZT_CHECK(pi->ladder_steps == 0 && pi->percdamp_used == 0.01, "no ladder");
    check_factor(H, U, "act-order");
  }
  /* the lower triangle survives: re-prepare in natural order */
  QZT_CHECK(serial_factor(Hd, 0, 0.01, perm, U) == 0, "serial factor");
  po.act_order = 0;
  if (QZT_OK(qz_hessian_prepare(H, &po))) check_factor(H, U, "natural order");

  /* ---- damping ladder: 150 rows < d, percdamp 0 -> not PD */
  qz_hessian *H2 = NULL;
  QZT_OK(qz_hessian_create(grid, D, &H2));
  qz_split_even(150, size, rank, &t0, &tn);
  float *x2 = make_rows(1000 + t0, tn);
  QZT_OK(qz_hessian_add_rows(H2, x2, tn));
  qz_hessian_count_sequences(H2, rank == 0 ? 3 : 0);
  QZT_OK(qz_hessian_reduce(H2));
  po = (qz_prepare_opts){.percdamp = 0, .act_order = 0, .name = "test.rankdef"};
  if (QZT_OK(qz_hessian_prepare(H2, &po))) {
    const qz_prepare_info *pi = qz_hessian_prepared(H2);
    QZT_CHECK(pi->ladder_steps >= 1 && pi->percdamp_used >= 1e-6,
              "ladder used: %d steps, percdamp %g", pi->ladder_steps,
              pi->percdamp_used);
    QZT_OK(qz_hessian_get_rows(H2, 0, D, Hd));
    QZT_CHECK(serial_factor(Hd, 0, pi->percdamp_used, perm, U) == 0,
              "serial factor with the ladder's damping");
    check_factor(H2, U, "ladder");
  }
  /* percdamp_max below what is needed: a clear numeric error everywhere */
  qz_hessian_reset(H2);
  QZT_OK(qz_hessian_add_rows(H2, x2, tn));
  qz_hessian_count_sequences(H2, 1);
  QZT_OK(qz_hessian_reduce(H2));
  po = (qz_prepare_opts){.percdamp = 0, .percdamp_max = 1e-9, .name = "test.cap"};
  QZT_FAILS(qz_hessian_prepare(H2, &po), QZ_ERR_NUMERIC, "not positive definite");

  /* ---- NaN in X: every rank fails, the owner(s) name the entry */
  qz_hessian_reset(H2);
  float *x3 = make_rows(0, 4);
  if (rank == size - 1) x3[2 * D + 9] = NAN;
  QZT_OK(qz_hessian_add_rows(H2, x3, 4));
  qz_hessian_count_sequences(H2, 1);
  int st = qz_hessian_reduce(H2);
  QZT_CHECK(st == QZ_ERR_NUMERIC || st == QZ_ERR_REMOTE,
            "NaN in X: status %s", qz_status_name(st));
  QZT_CHECK(st == QZ_ERR_REMOTE || strstr(qz_error_message(), "non-finite"),
            "NaN message: %s", qz_error_message());
  qz_error_clear();
  /* NaN in a given H */
  float *hf = malloc(sizeof(float) * D * D);
  for (int64_t i = 0; i < D * D; i++) hf[i] = (float)Href[i];
  hf[150 * D + 20] = NAN;
  st = qz_hessian_set_full(H2, hf);
  QZT_CHECK(st == QZ_ERR_NUMERIC || st == QZ_ERR_REMOTE,
            "NaN in H: status %s", qz_status_name(st));
  qz_error_clear();
  /* no sequences counted */
  qz_hessian_reset(H2);
  QZT_FAILS(qz_hessian_reduce(H2), QZ_ERR_ARG, "no calibration sequences");

  free(hf);
  free(x3);
  free(x2);
  free(U);
  free(perm);
  free(Hd);
  free(xall);
  free(Href);
  free(x);
  qz_hessian_destroy(&H2);
  qz_hessian_destroy(&H);
  QZT_CHECK(H == NULL, "destroy NULLs the handle");
  qz_hessian_destroy(&H); /* accepts NULL */
  qz_grid_destroy(&grid);
  return qzt_finish("test_linalg_hessian");
}
