/* Token files: the golden window files read with the right shape, and .txt
 * and .bin round trips reproduce them exactly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/tokenizer.h"
#include "qz_test.h"

static void roundtrip(const char *golden, int64_t want_nwin, int64_t want_len) {
  int32_t *ids = NULL, *back = NULL, *bin = NULL;
  int64_t nwin = 0, wl = 0, nw2 = 0, wl2 = 0, nb = 0;
  if (!QZT_OK(qz_windows_read_txt(golden, &ids, &nwin, &wl))) return;
  QZT_CHECK(nwin == want_nwin && wl == want_len, "%s: %lld x %lld windows",
            golden, (long long)nwin, (long long)wl);
  const char *tmp = qzt_tmpdir();
  char txt[2048], b[2048];
  snprintf(txt, sizeof txt, "%s", qzt_path(tmp, "w.txt"));
  snprintf(b, sizeof b, "%s", qzt_path(tmp, "w.bin"));
  QZT_OK(qz_windows_write_txt(txt, ids, nwin, wl));
  char *a = NULL, *c = NULL;
  size_t la = 0, lc = 0;
  QZT_OK(qz_read_file(golden, &a, &la));
  QZT_OK(qz_read_file(txt, &c, &lc));
  QZT_CHECK(a && c && la == lc && memcmp(a, c, la) == 0,
            "txt rewrite byte-identical (%zu vs %zu bytes)", la, lc);
  free(a);
  free(c);
  QZT_OK(qz_windows_read_txt(txt, &back, &nw2, &wl2));
  QZT_CHECK(nw2 == nwin && wl2 == wl && back &&
                memcmp(back, ids, (size_t)(nwin * wl) * 4) == 0, "txt round trip");
  QZT_OK(qz_tokens_write_bin(b, ids, nwin * wl));
  QZT_OK(qz_tokens_read_bin(b, &bin, &nb));
  QZT_CHECK(nb == nwin * wl && bin && memcmp(bin, ids, (size_t)nb * 4) == 0,
            "bin round trip");
  int32_t max = 0;
  for (int64_t i = 0; i < nwin * wl; i++) max = ids[i] > max ? ids[i] : max;
  QZT_CHECK(max > 0, "ids non-trivial");
  free(ids);
  free(back);
  free(bin);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  const char *sh = qzt_shared();
  if (sh) {
    char p[2048];
    snprintf(p, sizeof p, "%s/golden/calib/stories260K_eval_tinystories_ids.txt", sh);
    roundtrip(p, 8, 512);
    snprintf(p, sizeof p, "%s/golden/calib/babyllama_calib_ids.txt", sh);
    roundtrip(p, 128, 256);
  }
  /* little-endian layout of .bin */
  const char *tmp = qzt_tmpdir();
  int32_t v[2] = {0x01020304, 7};
  QZT_OK(qz_tokens_write_bin(qzt_path(tmp, "le.bin"), v, 2));
  char *d = NULL;
  size_t n = 0;
  QZT_OK(qz_read_file(qzt_path(tmp, "le.bin"), &d, &n));
  QZT_CHECK(n == 8 && d && (unsigned char)d[0] == 4 && d[3] == 1 && d[4] == 7,
            "uint32 little-endian");
  free(d);
  return qzt_finish("io_tokens");
}
