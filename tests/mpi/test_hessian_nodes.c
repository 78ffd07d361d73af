/* The two-level Hessian reduction (ranks of a node sum first, node leaders
 * reduce-scatter, leaders scatter their node's share) gives the same bits as
 * the flat reduce-scatter: nodes emulated with MPIQUANT_HESSIAN_NODE=K
 * (K consecutive ranks per node; K = 1 is flat) for every K = 1..np, rows
 * split unevenly (whole sequences; ranks may own none), two flushes, a
 * width that is not a multiple of the block size. Also: the bytes that enter the inter-node phase are one packed
 * panel per node (leaders) instead of one per rank. Runs at np 1..4; with
 * np = 1 there is nothing to compare but the flat path itself. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/shard.h"
#include "qz_test.h"

enum { D = 203, NB = 16, NSEQ = 9, L = 17 };

static float xval(int64_t t, int64_t j) {
  uint64_t s = (uint64_t)t * 1000003u + (uint64_t)j * 7919u + 11u;
  return (float)qzt_rand_normal(&s) * (j % 5 == 0 ? 30.0f : 1.0f);
}

/* H of all NSEQ * L rows with nodes of k ranks ("off" for k = 0). */
static int run(qz_grid *grid, int k, double *out, int64_t *sent, int *nodes) {
  char v[16];
  if (k) snprintf(v, sizeof v, "%d", k);
  else snprintf(v, sizeof v, "off");
  setenv("MPIQUANT_HESSIAN_NODE", v, 1);
  qz_hessian *H = NULL;
  int st = qz_hessian_create(grid, D, &H);
  if (st) return st;
  int rank = qzt_rank(), size = qzt_size();
  int64_t s0, sn;
  qz_shard_windows(NSEQ, size, rank, &s0, &sn); /* whole sequences per rank */
  float *x = malloc(sizeof(float) * (size_t)((sn > 0 ? sn : 1) * L * D));
  for (int64_t t = 0; t < sn * L; t++)
    for (int64_t j = 0; j < D; j++) x[t * D + j] = xval(s0 * L + t, j);
  /* two flushes: the first half of this rank's sequences, then the rest */
  int64_t half = sn / 2;
  qz_hessian_count_sequences(H, sn);
  if (!st) st = qz_hessian_add_rows(H, x, half * L);
  if (!st) st = qz_hessian_flush(H);
  if (!st) st = qz_hessian_add_rows(H, x + half * L * D, (sn - half) * L);
  if (!st) st = qz_hessian_reduce(H);
  if (!st) st = qz_hessian_get_rows(H, 0, D, out);
  *sent = qz_hessian_reduce_bytes(H);
  *nodes = qz_hessian_nodes(H);
  qz_hessian_destroy(&H);
  free(x);
  return st;
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  const int np = qzt_size(), rank = qzt_rank();
  qz_grid *grid = NULL;
  QZT_OK(qz_grid_create(MPI_COMM_WORLD, NB, &grid));
  double *flat = malloc(sizeof(double) * D * D), *got = malloc(sizeof(double) * D * D);
  int64_t sent_flat = 0, sent = 0, tot_flat = 0, tot = 0;
  int nodes = -1;
  QZT_OK(run(grid, 0, flat, &sent_flat, &nodes));
  QZT_CHECK(nodes == 0, "MPIQUANT_HESSIAN_NODE=off: flat reduction (nodes %d)", nodes);
  MPI_Allreduce(&sent_flat, &tot_flat, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  for (int k = 1; k <= np; k++) {
    QZT_OK(run(grid, k, got, &sent, &nodes));
    int nn = (np + k - 1) / k, want = nn > 1 && k > 1 ? nn : 0;
    QZT_CHECK(nodes == want, "nodes of %d ranks: %d nodes in the reduction, expected %d",
              k, nodes, want);
    int same = memcmp(flat, got, sizeof(double) * D * D) == 0;
    QZT_CHECK(same, "nodes of %d ranks: H differs from the flat reduction", k);
    MPI_Allreduce(&sent, &tot, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (want) {
      /* each leader sends one packed panel set: nn/np of the flat bytes */
      QZT_CHECK(tot * np == tot_flat * nn,
                "nodes of %d ranks: %lld bytes entered the reduce-scatter, expected "
                "%lld * %d / %d", k, (long long)tot, (long long)tot_flat, nn, np);
      QZT_CHECK(rank % k == 0 || sent == 0, "rank %d is no leader but sent %lld bytes",
                rank, (long long)sent);
    }
  }
  free(flat);
  free(got);
  qz_grid_destroy(&grid);
  return qzt_finish("hessian_nodes");
}
