/* Parallel HDF5: collective write of a chunked, zstd-filtered dataset where
 * chunks straddle rank boundaries, then a collective read back (exact). */
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/h5zstd.h"
#include "qz_test.h"

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  int rank = qzt_rank(), size = qzt_size();
  const hsize_t rows = 1000, cols = 96;
  const char *path = argc > 1 ? argv[1] : qzt_path(qzt_tmpdir(), "roundtrip.h5");
  QZT_OK(qz_h5zstd_register());

  int64_t r0, nr;
  qz_split_even((int64_t)rows, size, rank, &r0, &nr);
  float *mine = malloc(sizeof(float) * (nr ? nr : 1) * cols);
  for (int64_t i = 0; i < nr; i++)
    for (hsize_t j = 0; j < cols; j++) /* compressible but not constant */
      mine[i * cols + j] = (float)((r0 + i) % 17) * 0.25f + (float)(j % 5);

  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  QZT_CHECK(f >= 0, "create %s", path);
  hsize_t dims[2] = {rows, cols}, chunk[2] = {300, cols};
  hid_t space = H5Screate_simple(2, dims, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, 2, chunk);
  unsigned level = 3;
  H5Pset_filter(dcpl, QZ_H5Z_FILTER_ZSTD, H5Z_FLAG_MANDATORY, 1, &level);
  hid_t d = H5Dcreate2(f, "w", H5T_NATIVE_FLOAT, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  QZT_CHECK(d >= 0, "create filtered dataset");
  hsize_t off[2] = {(hsize_t)r0, 0}, cnt[2] = {(hsize_t)nr, cols};
  hid_t fs = H5Dget_space(d);
  if (nr > 0) H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
  else H5Sselect_none(fs);
  hid_t ms = H5Screate_simple(2, cnt, NULL);
  if (nr == 0) H5Sselect_none(ms);
  hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
  H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
  QZT_CHECK(H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, dxpl, mine) >= 0, "collective write");
  H5Sclose(ms);
  H5Sclose(fs);
  H5Dclose(d);
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Fclose(f);

  /* read everything back on every rank, collectively */
  f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  d = H5Dopen2(f, "w", H5P_DEFAULT);
  float *all = malloc(sizeof(float) * rows * cols);
  QZT_CHECK(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, dxpl, all) >= 0, "read");
  long bad = 0;
  for (hsize_t i = 0; i < rows; i++)
    for (hsize_t j = 0; j < cols; j++)
      if (all[i * cols + j] != (float)(i % 17) * 0.25f + (float)(j % 5)) bad++;
  QZT_CHECK(bad == 0, "%ld elements differ after round trip", bad);
  hsize_t stored = H5Dget_storage_size(d);
  QZT_CHECK(stored > 0 && stored < rows * cols * sizeof(float) / 4,
            "zstd compressed: %llu of %llu bytes", (unsigned long long)stored,
            (unsigned long long)(rows * cols * sizeof(float)));
  hid_t dcpl2 = H5Dget_create_plist(d);
  unsigned flags, cd[4];
  size_t ncd = 4;
  char name[64];
  unsigned cfg;
  H5Z_filter_t fid = H5Pget_filter2(dcpl2, 0, &flags, &ncd, cd, sizeof name, name, &cfg);
  QZT_CHECK(fid == QZ_H5Z_FILTER_ZSTD && ncd == 1 && cd[0] == 3,
            "filter 32015 level 3 recorded (got %d)", (int)fid);
  H5Pclose(dcpl2);
  H5Dclose(d);
  H5Fclose(f);
  H5Pclose(dxpl);
  H5Pclose(fapl);
  free(all);
  free(mine);
  return qzt_finish("test_h5_roundtrip");
}
