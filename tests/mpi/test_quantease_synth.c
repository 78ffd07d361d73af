/* QuantEase vs an independent serial coordinate descent: every step computed
 * from scratch in f64 (R_rj = sum_k D_rk Hd_kj, u = Q_rj + R_rj / Hd_jj, the
 * nearest grid point kept only if it lowers the objective), on synthetic data
 * with 1100 input columns (three 512-wide panels, the last partial), two dead
 * columns, group 128 (the last group partial), 3 bits, 70 rows split over the
 * ranks; RTN start, 1 and 3 sweeps.  Also: the per-sweep objective equals the
 * reference's exact objective after each sweep and never increases, results
 * are the same at every np, and the outlier variant stores at most
 * round(frac out in) entries and ends below the plain result. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/mem.h"
#include "mpiquant/method.h"
#include "mpiquant/quant.h"
#include "mpiquant/quantease.h"
#include "qz_test.h"

#define TOL_CODES 0.999 /* f32 steps vs f64 reference: near-ties only */
#define TOL_OBJ 2e-5    /* relative objective (f32 sgemm vs f64) */

enum { OUT = 70, IN = 1100, NTOK = 1500, G = 128, BITS = 3 };

static float W0[OUT * IN], Hf[IN * IN];
static double Hd[IN * IN];

static void make_data(void) {
  uint64_t s = 7;
  float *X = malloc(sizeof(float) * NTOK * IN);
  for (int t = 0; t < NTOK; t++)
    for (int j = 0; j < IN; j++) {
      double c = 0.3 + (j % 11) * 0.2 + (j == 40 ? 12.0 : 0.0);
      X[t * IN + j] = (j == 5 || j == 700) ? 0.0f /* dead */
                      : (float)(qzt_rand_normal(&s) * c + 0.1 * (j % 3));
    }
  /* H = X^T X / 100 (symmetric, f32); the scale does not matter */
  for (int i = 0; i < IN; i++)
    for (int j = 0; j <= i; j++) {
      double a = 0;
      for (int t = 0; t < NTOK; t++) a += (double)X[t * IN + i] * X[t * IN + j];
      Hf[i * IN + j] = Hf[j * IN + i] = (float)(a / 100.0);
    }
  double mean = 0;
  for (int j = 0; j < IN; j++) mean += Hf[j * IN + j] == 0 ? 1.0 : Hf[j * IN + j];
  mean /= IN;
  for (int i = 0; i < IN * IN; i++) Hd[i] = Hf[i];
  for (int j = 0; j < IN; j++)
    Hd[j * IN + j] = (Hf[j * IN + j] == 0 ? 1.0 : Hf[j * IN + j]) + 0.01 * mean;
  for (int i = 0; i < OUT * IN; i++)
    W0[i] = (float)(qzt_rand_normal(&s) * 0.02 * (qzt_rand_uniform(&s) < 0.003 ? 10.0 : 1.0));
  free(X);
}

/* serial reference: RTN start, `iters` sweeps; codes [OUT*IN], obj [iters+1] */
static void reference(int iters, uint8_t *codes, double *obj) {
  qz_quant_spec sp = {.bits = BITS, .groupsize = G, .sym = 0};
  int ng = (IN + G - 1) / G;
  float *sc = malloc(sizeof(float) * OUT * ng), *z = malloc(sizeof(float) * OUT * ng);
  qz_rtn_quantize(&sp, OUT, IN, W0, codes, NULL, sc, z, NULL);
  double *D = malloc(sizeof(double) * IN);
  float maxq = (float)((1 << BITS) - 1);
  for (int t = 0; t <= iters; t++) obj[t] = 0;
  for (int r = 0; r < OUT; r++) {
    float *q = malloc(sizeof(float) * IN);
    for (int j = 0; j < IN; j++) {
      q[j] = sc[r * ng + j / G] * ((float)codes[r * IN + j] - z[r * ng + j / G]);
      double w = (Hf[j * IN + j] == 0) ? 0.0 : W0[r * IN + j];
      D[j] = w - q[j];
    }
    for (int t = 0; t <= iters; t++) {
      if (t > 0)
        for (int j = 0; j < IN; j++) {
          double R = 0;
          for (int k = 0; k < IN; k++) R += D[k] * Hd[k * IN + j];
          float s = (float)Hd[j * IN + j], qn;
          uint8_t c = qz_quant_one((float)((double)q[j] + R / s), sc[r * ng + j / G],
                                   z[r * ng + j / G], maxq, &qn);
          double dq = (double)qn - q[j];
          if (dq == 0 || !(s * dq * dq - 2 * dq * R < 0)) continue;
          double w = (Hf[j * IN + j] == 0) ? 0.0 : W0[r * IN + j];
          q[j] = qn;
          codes[r * IN + j] = c;
          D[j] = w - qn;
        }
      double f = 0; /* exact objective of the row */
      for (int i = 0; i < IN; i++) {
        double a = 0;
        for (int k = 0; k < IN; k++) a += Hd[i * IN + k] * D[k];
        f += D[i] * a;
      }
      obj[t] += 0.5 * f;
    }
    free(q);
  }
  free(D);
  free(sc);
  free(z);
}

static int run(qz_hessian *H, int iters, double frac, uint8_t *all_codes,
               double *obj, int64_t *nout, double *loss) {
  int rank = qzt_rank(), size = qzt_size();
  int64_t r0, nr;
  qz_split_even(OUT, size, rank, &r0, &nr);
  int64_t ng = (IN + G - 1) / G;
  qz_method_opts o = qz_method_opts_default();
  o.spec = (qz_quant_spec){.bits = BITS, .groupsize = G, .sym = 0};
  o.iters = iters;
  o.qe_init = QZ_QE_INIT_RTN;
  o.outlier_frac = frac;
  qz_layer_result res = {0};
  size_t rows = (size_t)(nr > 0 ? nr : 1);
  res.codes = malloc(rows * IN);
  res.scale = malloc(sizeof(float) * rows * ng);
  res.zero = malloc(sizeof(float) * rows * ng);
  res.objective = obj;
  qz_layer L = {.name = "synth", .out_features = OUT, .in_features = IN, .row0 = r0,
                .nrows = nr, .w = W0 + r0 * IN, .H = H};
  int st = qz_quantease_quantize(&o, &L, &res);
  if (!st) {
    int cnt[64], dsp[64];
    for (int p = 0; p < size; p++) {
      int64_t b, c;
      qz_split_even(OUT, size, p, &b, &c);
      cnt[p] = (int)(c * IN);
      dsp[p] = (int)(b * IN);
    }
    MPI_Allgatherv(res.codes, (int)(nr * IN), MPI_UINT8_T, all_codes, cnt, dsp,
                   MPI_UINT8_T, MPI_COMM_WORLD);
    *nout = res.noutliers;
    MPI_Allreduce(MPI_IN_PLACE, nout, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    *loss = res.loss_local;
    MPI_Allreduce(MPI_IN_PLACE, loss, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  }
  free(res.codes);
  free(res.scale);
  free(res.zero);
  qz_free(&res.outlier_idx);
  qz_free(&res.outlier_val);
  return st;
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  make_data();
  qz_grid *grid = NULL;
  qz_hessian *H = NULL;
  QZT_OK(qz_grid_create(MPI_COMM_WORLD, 64, &grid));
  QZT_OK(qz_hessian_create(grid, IN, &H));
  QZT_OK(qz_hessian_set_full(H, Hf));
  static uint8_t codes[OUT * IN], ref[OUT * IN];
  for (int iters = 1; iters <= 3; iters += 2) {
    double obj[4], robj[4], loss = 0;
    int64_t nout = 0;
    QZT_OK(run(H, iters, 0.0, codes, obj, &nout, &loss));
    reference(iters, ref, robj);
    int64_t same = 0;
    for (int i = 0; i < OUT * IN; i++) same += codes[i] == ref[i];
    double share = (double)same / (OUT * IN);
    QZT_CHECK(share >= TOL_CODES, "%d sweep(s): %.5f of codes equal the f64 reference (>= %.3f)",
              iters, share, TOL_CODES);
    for (int t = 0; t <= iters; t++) {
      QZT_REL(obj[t], robj[t], TOL_OBJ, "objective after sweep t vs reference");
      if (t > 0) QZT_CHECK(obj[t] <= obj[t - 1], "objective increases at sweep %d", t);
    }
    QZT_CHECK(robj[iters] < 0.95 * robj[0], "reference CD lowers the RTN objective (%.6g -> %.6g)",
              robj[0], robj[iters]);
    QZT_REL(loss, robj[iters], TOL_OBJ, "exact final loss vs reference");
    if (qzt_rank() == 0)
      printf("%d sweep(s): codes equal %.5f, objective %.6g -> %.6g (reference %.6g)\n", iters,
             share, obj[0], obj[iters], robj[iters]);
  }
  /* outliers: bounded count, lower objective than without */
  {
    double obj[4], obj0[4], loss = 0, loss0 = 0;
    int64_t nout = 0, n0 = 0;
    QZT_OK(run(H, 3, 0.0, codes, obj0, &n0, &loss0));
    QZT_OK(run(H, 3, 0.002, codes, obj, &nout, &loss));
    int64_t smax = llround(0.002 * OUT * IN);
    QZT_CHECK(nout > 0 && nout <= smax, "outliers: %lld stored, at most %lld", (long long)nout,
              (long long)smax);
    QZT_CHECK(loss < loss0, "outliers lower the objective: %.6g vs %.6g", loss, loss0);
    for (int t = 1; t <= 3; t++) QZT_CHECK(obj[t] <= obj[t - 1], "outlier objective increases at %d", t);
  }
  /* a bad option fails on every rank */
  {
    double obj[2];
    int64_t n;
    double l;
    QZT_FAILS(run(H, 1, 1.5, codes, obj, &n, &l), QZ_ERR_ARG, "outlier fraction");
  }
  qz_hessian_destroy(&H);
  qz_grid_destroy(&grid);
  return qzt_finish("quantease_synth");
}
