/* synth --from: function-preserving outlier injection into a real model
 * (mpi_driver/synth_outliers.c). */
#ifndef MPIQUANT_SYNTH_OUTLIERS_H
#define MPIQUANT_SYNTH_OUTLIERS_H

/* Injection sites (a mask): the RMSNorm weights and the columns of their
 * readers; up_proj rows / down_proj columns; v_proj rows / o_proj columns. */
enum { QZ_OUTL_NORM = 1u, QZ_OUTL_UP = 2u, QZ_OUTL_V = 4u, QZ_OUTL_ALL = 7u };

typedef struct {
  const char *from, *out;
  long channels; /* K per width (hidden, intermediate, key/value) */
  double scale;  /* S > 1 */
  unsigned sites; /* QZ_OUTL_* mask, not 0 */
  long seed, shard_mb;
} qz_synth_outlier_opts;

/* Read the model dir o->from, write o->out. Not collective (rank 0). */
int qz_synth_outliers(const qz_synth_outlier_opts *o);

#endif
