/* HDF5 filter 32015 (zstd).  cd_values[0] = compression level (default 3).
 * Every frame carries zstd's content checksum (XXH64, 4 bytes), so a damaged
 * chunk fails to decode instead of yielding other numbers; frames written
 * without it (checkpoint version 1) still decode.
 * Built twice: into the io library (registered in-process with H5Zregister)
 * and, with QZ_H5ZSTD_PLUGIN, as a dynamically loaded plugin so that h5dump /
 * h5ls read our checkpoints with HDF5_PLUGIN_PATH=<build>/h5plugin. */
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#ifndef QZ_H5ZSTD_PLUGIN
#include "mpiquant/error.h"
#include "mpiquant/h5zstd.h"
#else
#include <H5PLextern.h>
#define QZ_H5Z_FILTER_ZSTD 32015
#endif

static size_t zstd_filter(unsigned int flags, size_t cd_nelmts,
                          const unsigned int cd_values[], size_t nbytes,
                          size_t *buf_size, void **buf) {
  void *out = NULL;
  size_t out_len;
  if (flags & H5Z_FLAG_REVERSE) {
    unsigned long long n = ZSTD_getFrameContentSize(*buf, nbytes);
    if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN)
      return 0;
    out = malloc(n ? (size_t)n : 1);
    if (!out) return 0;
    out_len = ZSTD_decompress(out, (size_t)n, *buf, nbytes);
    if (ZSTD_isError(out_len) || out_len != n) {
      free(out);
      return 0;
    }
  } else {
    int level = cd_nelmts > 0 ? (int)cd_values[0] : 3;
    if (level < 1) level = 1;
    if (level > ZSTD_maxCLevel()) level = ZSTD_maxCLevel();
    size_t cap = ZSTD_compressBound(nbytes);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    out = cc ? malloc(cap) : NULL;
    if (!out) {
      ZSTD_freeCCtx(cc);
      return 0;
    }
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    out_len = ZSTD_compress2(cc, out, cap, *buf, nbytes);
    ZSTD_freeCCtx(cc);
    if (ZSTD_isError(out_len)) {
      free(out);
      return 0;
    }
  }
  free(*buf);
  *buf = out;
  *buf_size = out_len;
  return out_len;
}

static const H5Z_class2_t zstd_class = {
    H5Z_CLASS_T_VERS,
    (H5Z_filter_t)QZ_H5Z_FILTER_ZSTD,
    1, /* encoder present */
    1, /* decoder present */
    "zstd (mpiquant)",
    NULL,
    NULL,
    zstd_filter,
};

#ifndef QZ_H5ZSTD_PLUGIN
int qz_h5zstd_register(void) {
  htri_t avail = H5Zfilter_avail(QZ_H5Z_FILTER_ZSTD);
  if (avail > 0) return QZ_OK;
  QZ_CHECK(H5Zregister(&zstd_class) >= 0, QZ_ERR_HDF5,
           "could not register the HDF5 zstd filter (id %d)",
           QZ_H5Z_FILTER_ZSTD);
  return QZ_OK;
}
#else
H5PL_type_t H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }
const void *H5PLget_plugin_info(void) { return &zstd_class; }
#endif
