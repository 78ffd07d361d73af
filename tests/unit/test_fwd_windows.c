/* Window helpers: calibration starts vs the golden start files (token
 * counts of the whole calibration text from the golden README), eval
 * window counts, gather bounds. */
#include <stdio.h>
#include <stdlib.h>

#include "mpiquant/error.h"
#include "mpiquant/tokenizer.h"
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

/* tokenize the calibration text, cut the windows, compare with the golden
 * calib/ *_calib_ids.txt (128 windows) */
static void calib_ids_case(const char *model, const char *idfile,
                           int64_t ntok_want, int64_t L) {
  char dir[1024], txt[1024], idp[1024];
  snprintf(dir, sizeof dir, "%s/models/%s", qzt_shared(), model);
  snprintf(txt, sizeof txt, "%s/data/tinystories_valid_head.txt", qzt_shared());
  snprintf(idp, sizeof idp, "%s/golden/calib/%s", qzt_shared(), idfile);
  qz_tokenizer *tok = NULL;
  char *text = NULL;
  size_t len = 0;
  int32_t *ids = NULL, *want = NULL, *got = NULL;
  int64_t n = 0, nwin = 0, wl = 0;
  if (!QZT_OK(qz_tokenizer_load(dir, &tok))) return;
  if (QZT_OK(qz_read_file(txt, &text, &len)) &&
      QZT_OK(qz_tokenizer_encode(tok, text, len, 0, &ids, &n)) &&
      QZT_OK(qz_windows_read_txt(idp, &want, &nwin, &wl))) {
    QZT_CHECK(n == ntok_want, "%s: %lld tokens (golden %lld)", model,
              (long long)n, (long long)ntok_want);
    QZT_CHECK(nwin == 128 && wl == L, "golden calib windows 128 x %lld",
              (long long)L);
    int64_t starts[128];
    got = malloc(sizeof(int32_t) * (size_t)(128 * L));
    if (QZT_OK(qz_windows_calib_starts(n, L, 128, starts)) &&
        QZT_OK(qz_windows_gather(ids, n, starts, 128, L, got))) {
      int64_t bad = 0;
      for (int64_t i = 0; i < 128 * L && nwin == 128; i++) bad += got[i] != want[i];
      QZT_CHECK(bad == 0, "%s: %lld calibration ids differ from %s", model,
                (long long)bad, idfile);
    }
  }
  free(got);
  free(want);
  free(ids);
  free(text);
  qz_tokenizer_free(&tok);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  if (qzt_shared()) {
    /* token counts of tinystories_valid_head.txt (golden README) */
    starts_case("stories260K_calib_starts.txt", 393018, 512);
    starts_case("babyllama_calib_starts.txt", 793452, 256);
    calib_ids_case("stories260K-hf", "stories260K_calib_ids.txt", 393018, 512);
    calib_ids_case("babyllama-tok105-hf", "babyllama_calib_ids.txt", 793452, 256);
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
