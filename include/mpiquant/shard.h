/* Partition of calibration / evaluation windows over ranks. */
#ifndef MPIQUANT_SHARD_H
#define MPIQUANT_SHARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Windows [*first, *first + *count) of `nwin` belong to `rank` of `nranks`:
 * contiguous and as even as possible (the first nwin % nranks ranks get one
 * more); a rank may own none when nwin < nranks. Contiguous ownership keeps
 * the order of a reduction by rank equal to window order.  Not collective. */
void qz_shard_windows(int64_t nwin, int nranks, int rank, int64_t *first,
                      int64_t *count);

/* Owner rank of window `w` under qz_shard_windows. Not collective. */
int qz_shard_owner(int64_t nwin, int nranks, int64_t w);

#ifdef __cplusplus
}
#endif
#endif
