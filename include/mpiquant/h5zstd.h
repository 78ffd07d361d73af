/* The HDF5 zstd filter (registered ID 32015), ours: Debian ships none. */
#ifndef MPIQUANT_H5ZSTD_H
#define MPIQUANT_H5ZSTD_H

#ifdef __cplusplus
extern "C" {
#endif

#define QZ_H5Z_FILTER_ZSTD 32015

/* Register the filter with the HDF5 library in this process (idempotent).
 * Must run before creating or reading a zstd-filtered dataset.
 * Not collective (call it on every rank). */
int qz_h5zstd_register(void);

#ifdef __cplusplus
}
#endif
#endif
