/* Window partition over ranks. */
#include "mpiquant/shard.h"

#include "mpiquant/comm.h"

void qz_shard_windows(int64_t nwin, int nranks, int rank, int64_t *first,
                      int64_t *count) {
  qz_split_even(nwin, nranks, rank, first, count);
}

int qz_shard_owner(int64_t nwin, int nranks, int64_t w) {
  int64_t base = nwin / nranks, rem = nwin % nranks;
  /* the first `rem` ranks own base+1 windows each */
  int64_t big = rem * (base + 1);
  if (w < big) return (int)(w / (base + 1));
  return (int)(rem + (w - big) / (base > 0 ? base : 1));
}
