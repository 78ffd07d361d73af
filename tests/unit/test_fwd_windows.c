/* Window helpers: calibration starts vs the golden start files (token
 * counts of the whole calibration text from the golden README), eval
 * window counts, gather bounds. */
#include <stdio.h>
#include <stdlib.h>

#include "mpiquant/error.h"
#include "mpiquant/windows.h"
#include "qz_test.h"

static void starts_case(const char *file, int64_t ntok, int64_t L) {
  char path[1024];
  snprintf(path, sizeof path, "%s/golden/calib/%s", qzt_shared(), file);
  FILE *fp = fopen(path, "r");
  QZT_CHECK(fp != NULL, "open %s", path);
  if (!fp) return;
  int64_t want[128], n = 0;
  long long v;
  while (n < 128 && fscanf(fp, "%lld", &v) == 1) want[n++] = v;
  fclose(fp);
  QZT_CHECK(n == 128, "%s has 128 starts (%lld)", file, (long long)n);
  int64_t got[128];
  QZT_OK(qz_windows_calib_starts(ntok, L, 128, got));
  int64_t bad = 0;
  for (int64_t k = 0; k < n; k++) bad += got[k] != want[k];
  QZT_CHECK(bad == 0, "%s: %lld of 128 starts differ (first %lld vs %lld)",
            file, (long long)bad, (long long)got[0], (long long)want[0]);
  QZT_CHECK(got[0] == ntok / 2 && got[127] + L == ntok,
            "first start = N/2, last window ends at N");
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  if (qzt_shared()) {
    /* token counts of tinystories_valid_head.txt (golden README) */
    starts_case("stories260K_calib_starts.txt", 393018, 512);
    starts_case("babyllama_calib_starts.txt", 793452, 256);
  }
  int64_t s1;
  QZT_OK(qz_windows_calib_starts(1000, 100, 1, &s1));
  QZT_CHECK(s1 == 500, "one window starts at N/2");
  int64_t s2[4];
  QZT_FAILS(qz_windows_calib_starts(150, 100, 4, s2), QZ_ERR_ARG, "too short");

  int64_t nw;
  QZT_OK(qz_windows_eval_count(393018, 512, 8, 0, &nw));
  QZT_CHECK(nw == 8, "first 8 windows");
  QZT_OK(qz_windows_eval_count(393018, 512, 0, 0, &nw));
  QZT_CHECK(nw == 393018 / 512, "all complete windows: %lld", (long long)nw);
  QZT_OK(qz_windows_eval_count(393018, 512, 0, 4000, &nw));
  QZT_CHECK(nw == 7, "max-tokens 4000 -> 7 windows of 512: %lld", (long long)nw);
  QZT_FAILS(qz_windows_eval_count(100, 512, 0, 0, &nw), QZ_ERR_ARG,
            "no complete window");

  int32_t ids[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, out[6];
  int64_t st[2] = {1, 7};
  QZT_OK(qz_windows_gather(ids, 10, st, 2, 3, out));
  QZT_CHECK(out[0] == 1 && out[2] == 3 && out[3] == 7 && out[5] == 9, "gather");
  st[1] = 8;
  QZT_FAILS(qz_windows_gather(ids, 10, st, 2, 3, out), QZ_ERR_ARG, "outside");
  return qzt_finish("test_fwd_windows");
}
