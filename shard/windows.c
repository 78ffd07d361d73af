/* Eval and calibration windows over a token stream. */
#include "mpiquant/windows.h"

#include <string.h>

#include "mpiquant/error.h"

int qz_windows_eval_count(int64_t ntokens, int64_t seqlen, int64_t max_windows,
                          int64_t max_tokens, int64_t *nwin) {
  *nwin = 0;
  QZ_CHECK(seqlen > 0, QZ_ERR_ARG, "window length must be > 0, got %lld",
           (long long)seqlen);
  int64_t n = ntokens / seqlen;
  if (max_windows > 0 && n > max_windows) n = max_windows;
  if (max_tokens > 0 && n > max_tokens / seqlen) n = max_tokens / seqlen;
  QZ_CHECK(n > 0, QZ_ERR_ARG,
           "no complete window of %lld tokens: the text has %lld tokens%s",
           (long long)seqlen, (long long)ntokens,
           max_tokens > 0 && max_tokens < seqlen ? " (and --max-tokens is "
                                                   "below the window length)"
                                                 : "");
  *nwin = n;
  return QZ_OK;
}

int qz_windows_calib_starts(int64_t ntokens, int64_t seqlen, int64_t n,
                            int64_t *starts) {
  QZ_CHECK(seqlen > 0 && n > 0, QZ_ERR_ARG,
           "calibration windows: need n > 0 windows of length > 0, got %lld "
           "x %lld", (long long)n, (long long)seqlen);
  int64_t h = ntokens / 2, last = ntokens - seqlen;
  QZ_CHECK(last >= h, QZ_ERR_ARG,
           "calibration text too short: %lld tokens, but windows of %lld "
           "tokens must fit in its second half (from token %lld)",
           (long long)ntokens, (long long)seqlen, (long long)h);
  for (int64_t k = 0; k < n; k++)
    starts[k] = n == 1 ? h : h + k * (last - h) / (n - 1);
  return QZ_OK;
}

int qz_windows_gather(const int32_t *ids, int64_t ntokens,
                      const int64_t *starts, int64_t nwin, int64_t seqlen,
                      int32_t *out) {
  for (int64_t k = 0; k < nwin; k++) {
    QZ_CHECK(starts[k] >= 0 && starts[k] + seqlen <= ntokens, QZ_ERR_ARG,
             "window %lld [%lld, %lld) outside the %lld tokens", (long long)k,
             (long long)starts[k], (long long)(starts[k] + seqlen),
             (long long)ntokens);
    memcpy(out + k * seqlen, ids + starts[k], (size_t)seqlen * sizeof *ids);
  }
  return QZ_OK;
}
