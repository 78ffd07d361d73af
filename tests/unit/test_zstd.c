/* zstd one-shot and streaming round trips (the library the HDF5 filter uses). */
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "qz_test.h"

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  size_t n = 1 << 20;
  unsigned char *src = malloc(n), *dst = malloc(n);
  uint64_t s = 7;
  for (size_t i = 0; i < n; i++) src[i] = (unsigned char)((i % 251) ^ (qzt_rand_u64(&s) & 3));
  size_t cap = ZSTD_compressBound(n);
  unsigned char *c = malloc(cap);
  size_t cl = ZSTD_compress(c, cap, src, n, 3);
  QZT_CHECK(!ZSTD_isError(cl) && cl < n, "compress: %zu -> %zu", n, cl);
  QZT_CHECK(ZSTD_getFrameContentSize(c, cl) == n, "frame content size");
  size_t dl = ZSTD_decompress(dst, n, c, cl);
  QZT_CHECK(dl == n && memcmp(src, dst, n) == 0, "one-shot round trip");
  QZT_CHECK(ZSTD_isError(ZSTD_decompress(dst, n, c, cl / 3)), "truncated frame is an error");

  /* streaming, 2 workers */
  ZSTD_CCtx *cc = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 3);
  ZSTD_CCtx_setParameter(cc, ZSTD_c_nbWorkers, 2);
  ZSTD_inBuffer in = {src, n, 0};
  ZSTD_outBuffer out = {c, cap, 0};
  size_t rem;
  do rem = ZSTD_compressStream2(cc, &out, &in, ZSTD_e_end);
  while (rem != 0 && !ZSTD_isError(rem));
  QZT_CHECK(rem == 0, "stream compress");
  ZSTD_freeCCtx(cc);
  ZSTD_DCtx *dc = ZSTD_createDCtx();
  ZSTD_inBuffer din = {c, out.pos, 0};
  ZSTD_outBuffer dout = {dst, n, 0};
  while (din.pos < din.size) {
    size_t r = ZSTD_decompressStream(dc, &dout, &din);
    if (ZSTD_isError(r)) break;
  }
  ZSTD_freeDCtx(dc);
  QZT_CHECK(dout.pos == n && memcmp(src, dst, n) == 0, "stream round trip");
  free(src); free(dst); free(c);
  return qzt_finish("test_zstd");
}
