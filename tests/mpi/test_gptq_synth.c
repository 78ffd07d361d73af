/* GPTQ on synthetic data vs an independent serial transliteration of the
 * reference loop (LAPACK f64 factor, f32 sweep, naive f32 trailing matmul):
 * odd sizes (in = 203, not a multiple of the blocksize 64 or nb 16), group 48
 * (not a multiple of the blocksize: rule 9), act-order, static groups, sym,
 * per channel.  Rows are split over ranks; a NaN in W on one rank fails on
 * every rank. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/gptq.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/method.h"
#include "mpiquant/scalapack.h"
#include "qz_test.h"

#define TOL_CODES 0.995   /* share of identical codes (rounding-order noise) */
#define TOL_LOSS 1e-4     /* relative total loss */

enum { OUT = 150, IN = 203, NTOK = 400, BS = 64 };

static float W0[OUT * IN], Hf[IN * IN];

static void make_data(void) {
  uint64_t s = 99;
  float *X = malloc(sizeof(float) * NTOK * IN);
  for (int t = 0; t < NTOK; t++)
    for (int j = 0; j < IN; j++) {
      double c = 0.3 + (j % 13) * 0.2 + (j == 40 ? 15.0 : 0.0);
      X[t * IN + j] = (j == 7 || j == 150) ? 0.0f  /* dead */
                      : (float)(qzt_rand_normal(&s) * c + 0.05 * (j % 5));
    }
  for (int i = 0; i < IN; i++)
    for (int j = 0; j < IN; j++) {
      double a = 0;
      for (int t = 0; t < NTOK; t++) a += (double)X[t * IN + i] * X[t * IN + j];
      Hf[i * IN + j] = (float)(2.0 * a / 8.0);
    }
  for (int i = 0; i < OUT * IN; i++)
    W0[i] = (float)(qzt_rand_normal(&s) * 0.02 *
                    (qzt_rand_uniform(&s) < 0.01 ? 8.0 : 1.0));
  memset(W0, 0, sizeof(float) * IN); /* row 0 all zero */
  for (int j = 0; j < IN; j++) W0[IN + j] = fabsf(W0[IN + j]); /* row 1 >= 0 */
  free(X);
}

static void params(const float *x, int n, int bits, int sym, float *sc,
                   float *z) {
  float maxq = (float)((1 << bits) - 1), mn = 0, mx = 0;
  for (int i = 0; i < n; i++) {
    mn = x[i] < mn ? x[i] : mn;
    mx = x[i] > mx ? x[i] : mx;
  }
  if (sym) {
    mx = fabsf(mn) > mx ? fabsf(mn) : mx;
    if (mn < 0) mn = -mx;
  }
  if (mn == 0 && mx == 0) {
    mn = -1;
    mx = 1;
  }
  *sc = (mx - mn) / maxq;
  *z = sym ? (maxq + 1) / 2 : rintf(-mn / *sc);
}

/* The reference loop, serial, all rows.  codes/Q in original order. */
static void serial_gptq(const qz_method_opts *o, uint8_t *codes, double *loss) {
  const int n = IN, g = (int)o->spec.groupsize, bits = o->spec.bits,
            sym = o->spec.sym;
  const float maxq = (float)((1 << bits) - 1);
  double *A = malloc(sizeof(double) * n * n), mean = 0;
  int dead[IN], perm[IN], info = 0, nn = n;
  float *W = malloc(sizeof(float) * OUT * n), *U = malloc(sizeof(float) * n * n);
  float *pcs = malloc(sizeof(float) * OUT * 2), *gs = malloc(sizeof(float) * OUT * 2 * 8);
  for (int j = 0; j < n; j++) dead[j] = Hf[j * n + j] == 0;
  for (int r = 0; r < OUT; r++) /* rule 3 */
    params(W0 + r * n, n, bits, sym, &pcs[2 * r], &pcs[2 * r + 1]);
  double dg[IN];
  for (int j = 0; j < n; j++) {
    dg[j] = dead[j] ? 1.0 : Hf[j * n + j];
    mean += dg[j];
  }
  mean /= n;
  for (int j = 0; j < n; j++) perm[j] = j;
  if (o->act_order)
    for (int i = 1; i < n; i++) {
      int k = perm[i], m = i - 1;
      while (m >= 0 && dg[perm[m]] < dg[k]) { perm[m + 1] = perm[m]; m--; }
      perm[m + 1] = k;
    }
  float Wz[OUT * IN];
  for (int r = 0; r < OUT; r++)
    for (int j = 0; j < n; j++) Wz[r * n + j] = dead[j] ? 0 : W0[r * n + j];
  if (o->static_groups && g > 0) /* rule 5 */
    for (int r = 0; r < OUT; r++)
      for (int k = 0; k * g < n; k++)
        params(Wz + r * n + k * g, k * g + g < n ? g : n - k * g, bits, sym,
               &gs[(r * 8 + k) * 2], &gs[(r * 8 + k) * 2 + 1]);
  for (int r = 0; r < OUT; r++)
    for (int i = 0; i < n; i++) W[r * n + i] = Wz[r * n + perm[i]];
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      A[i + j * n] = i == j ? dg[perm[i]] + o->percdamp * mean
                            : (double)Hf[perm[i] * n + perm[j]];
  dpotrf_("U", &nn, A, &nn, &info, 1);
  dpotri_("U", &nn, A, &nn, &info, 1);
  dpotrf_("U", &nn, A, &nn, &info, 1);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) U[i * n + j] = j >= i ? (float)A[i + j * n] : 0;
  float *W1 = malloc(sizeof(float) * n), *E = malloc(sizeof(float) * OUT * BS);
  float cs[OUT], cz[OUT];
  for (int r = 0; r < OUT; r++) loss[r] = 0;
  for (int i1 = 0; i1 < n; i1 += BS) {
    int i2 = i1 + BS < n ? i1 + BS : n;
    for (int r = 0; r < OUT; r++) {
      memcpy(W1, W + r * n + i1, sizeof(float) * (i2 - i1));
      for (int i = 0; i < i2 - i1; i++) {
        int c = i1 + i;
        float sc, z;
        if (g <= 0) { sc = pcs[2 * r]; z = pcs[2 * r + 1]; }
        else if (o->static_groups) {
          int k = (o->act_order ? perm[c] : c) / g;
          sc = gs[(r * 8 + k) * 2]; z = gs[(r * 8 + k) * 2 + 1];
        } else {
          if (c % g == 0) /* rule 9: the outer W */
            params(W + r * n + c, c + g < n ? g : n - c, bits, sym, &cs[r], &cz[r]);
          sc = cs[r]; z = cz[r];
        }
        float w = W1[i], d = U[c * n + c];
        float code = rintf(w / sc) + z;
        code = code < 0 ? 0 : (code > maxq ? maxq : code);
        float q = sc * (code - z);
        codes[r * n + perm[c]] = (uint8_t)code;
        float l = (w - q) * (w - q) / (d * d);
        loss[r] += l / 2.0f;
        float err = (w - q) / d;
        for (int k = i + 1; k < i2 - i1; k++) W1[k] -= err * U[c * n + i1 + k];
        E[r * BS + i] = err;
      }
    }
    for (int r = 0; r < OUT; r++) /* naive trailing matmul */
      for (int j = i2; j < n; j++) {
        float acc = 0;
        for (int k = 0; k < i2 - i1; k++) acc += E[r * BS + k] * U[(i1 + k) * n + j];
        W[r * n + j] -= acc;
      }
  }
  free(A); free(W); free(U); free(pcs); free(gs); free(W1); free(E);
}

static void run_case(qz_grid *grid, qz_hessian *H, const char *name, int bits,
                     int group, int sym, int act, int stat) {
  int rank = qzt_rank(), size = qzt_size();
  qz_method_opts o = qz_method_opts_default();
  o.spec = (qz_quant_spec){.bits = bits, .groupsize = group, .sym = sym};
  o.act_order = act;
  o.static_groups = stat;
  o.blocksize = BS;
  int64_t r0, nr;
  qz_split_even(OUT, size, rank, &r0, &nr);
  int64_t ng = qz_quant_ngroups(&o.spec, IN);
  qz_layer L = {.name = name, .out_features = OUT, .in_features = IN,
                .row0 = r0, .nrows = nr, .w = W0 + r0 * IN, .H = H, .comm = MPI_COMM_WORLD};
  qz_layer_result res = {0};
  res.codes = malloc((size_t)(nr * IN) + 1);
  res.q = malloc(sizeof(float) * (size_t)(nr * IN + 1));
  res.scale = malloc(sizeof(float) * (size_t)(nr * ng + 1));
  res.zero = malloc(sizeof(float) * (size_t)(nr * ng + 1));
  res.losses = malloc(sizeof(float) * (size_t)(nr + 1));
  res.g_idx = malloc(sizeof(int32_t) * IN);
  res.perm = malloc(sizeof(int32_t) * IN);
  const qz_method_ops *ops = qz_method_find("gptq");
  void *state = NULL;
  QZT_OK(ops->setup(&o, &state));
  if (QZT_OK(ops->quantize_layer(state, &L, &res))) {
    uint8_t *ref = malloc(OUT * IN);
    double loss[OUT];
    serial_gptq(&o, ref, loss);
    double v[4] = {0, 0, 0, 0}; /* equal codes, total, loss mine, loss ref */
    int selfcons = 1;
    for (int64_t r = 0; r < nr; r++) {
      for (int j = 0; j < IN; j++) {
        v[0] += res.codes[r * IN + j] == ref[(r0 + r) * IN + j];
        v[1] += 1;
        int k = res.g_idx[j];
        float q = res.scale[r * ng + k] * ((float)res.codes[r * IN + j] - res.zero[r * ng + k]);
        selfcons &= q == res.q[r * IN + j];
      }
      v[2] += res.losses[r];
      v[3] += loss[r0 + r];
    }
    QZT_CHECK(selfcons, "%s: Q == scale[g_idx] * (codes - zero)", name);
    MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    QZT_CHECK(v[0] >= TOL_CODES * v[1], "%s: codes equal %.5f", name, v[0] / v[1]);
    QZT_REL(v[2], v[3], TOL_LOSS, name);
    if (rank == 0 && getenv("QZ_TEST_VERBOSE"))
      printf("%s: codes %.5f loss %.6g ref %.6g\n", name, v[0] / v[1], v[2], v[3]);
    QZT_CHECK(res.percdamp_used == 0.01 && res.ndead == 2, "%s: damp/dead", name);
    free(ref);
  }
  ops->destroy(&state);
  QZT_CHECK(state == NULL, "destroy NULLs the state");
  free(res.codes); free(res.q); free(res.scale); free(res.zero);
  free(res.losses); free(res.g_idx); free(res.perm);
  (void)grid;
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  make_data();
  qz_grid *grid = NULL;
  qz_hessian *H = NULL;
  QZT_OK(qz_grid_create(MPI_COMM_WORLD, 16, &grid));
  QZT_OK(qz_hessian_create(grid, IN, &H));
  QZT_OK(qz_hessian_set_full(H, Hf));
  run_case(grid, H, "w4 g48 asym", 4, 48, 0, 0, 0);
  run_case(grid, H, "w3 g48 asym act", 3, 48, 0, 1, 0);
  run_case(grid, H, "w4 g48 sym act static", 4, 48, 1, 1, 1);
  run_case(grid, H, "w2 per-channel asym", 2, -1, 0, 0, 0);
  run_case(grid, H, "w8 per-channel sym act", 8, -1, 1, 1, 0);

  /* NaN in W on the last rank: clear error on every rank, no hang */
  int rank = qzt_rank(), size = qzt_size();
  int64_t r0, nr;
  qz_split_even(OUT, size, rank, &r0, &nr);
  float *w = malloc(sizeof(float) * (size_t)(nr * IN + 1));
  memcpy(w, W0 + r0 * IN, sizeof(float) * (size_t)(nr * IN));
  if (rank == size - 1 && nr > 0) w[IN / 2] = NAN;
  qz_method_opts o = qz_method_opts_default();
  qz_layer L = {.name = "nan.layer", .out_features = OUT, .in_features = IN,
                .row0 = r0, .nrows = nr, .w = w, .H = H, .comm = MPI_COMM_WORLD};
  qz_layer_result res = {0};
  int st = qz_gptq_quantize(&o, &L, &res);
  if (rank == size - 1)
    QZT_CHECK(st == QZ_ERR_NUMERIC && strstr(qz_error_message(), "nan.layer") &&
                  strstr(qz_error_message(), "not finite"),
              "NaN in W: %s", qz_error_message());
  else
    QZT_CHECK(st == QZ_ERR_REMOTE, "NaN elsewhere: status %s", qz_status_name(st));
  qz_error_clear();
  free(w);
  qz_hessian_destroy(&H);
  qz_grid_destroy(&grid);
  return qzt_finish("test_gptq_synth");
}
