/* Evaluation and calibration windows over a token stream. */
#ifndef MPIQUANT_WINDOWS_H
#define MPIQUANT_WINDOWS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of non-overlapping eval windows of `seqlen` tokens cut from the
 * start of a stream of `ntokens`: floor(ntokens/seqlen), limited to
 * `max_windows` (if > 0) and to floor(max_tokens/seqlen) (if max_tokens > 0).
 * Window w = tokens [w*seqlen, (w+1)*seqlen).  Zero windows is an error
 * naming the sizes. Not collective. */
int qz_windows_eval_count(int64_t ntokens, int64_t seqlen, int64_t max_windows,
                          int64_t max_tokens, int64_t *nwin);

/* Deterministic calibration starts (golden "Calibration protocol"):
 * h = floor(N/2), last = N - L, start_k = h + floor(k (last - h) / (n - 1))
 * for k = 0..n-1 (n == 1: start_0 = h), int64 arithmetic.  Needs
 * last >= h (N >= 2L roughly); otherwise an error naming N and L.
 * Not collective. */
int qz_windows_calib_starts(int64_t ntokens, int64_t seqlen, int64_t n,
                            int64_t *starts /* [n] */);

/* out[k*seqlen + j] = ids[starts[k] + j]; every window checked to fit.
 * Not collective. */
int qz_windows_gather(const int32_t *ids, int64_t ntokens,
                      const int64_t *starts, int64_t nwin, int64_t seqlen,
                      int32_t *out /* [nwin, seqlen] */);

#ifdef __cplusplus
}
#endif
#endif
