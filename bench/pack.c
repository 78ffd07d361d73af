/* Export packing: qz_gptq_pack (4-bit codes [out, in] -> GPTQ v1 qweight
 * int32 [in/8, out], a transpose) in GB/s of codes, vs memcpy of the same
 * codes bytes and vs a plain transpose of the codes (uint8 [out, in] ->
 * [in, out]), same thread.
 *
 *   bench_pack [out=8192] [in=8192] [bits=4]
 *
 * Ratio last: pack GB/s / transpose GB/s (both read the same codes once). */
#include "bench_common.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpiquant/export.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  int bad = 0;
  if (bench_help(argc, argv, "bench_pack [out=8192] [in=8192] [bits=4]")) return 0;
  const int64_t out = bench_arg(argc, argv, 1, 8192, 32, 1LL << 20, "out", &bad);
  const int64_t in = bench_arg(argc, argv, 2, 8192, 32, 1LL << 20, "in", &bad);
  const int bits = (int)bench_arg(argc, argv, 3, 4, 2, 8, "bits", &bad);
  if (bad) return 2;
  size_t nc = (size_t)(out * in);
  uint8_t *codes = malloc(nc), *dst = malloc(nc), *tr = malloc(nc);
  int32_t *words = malloc(sizeof(int32_t) * (size_t)(in * bits / 32) * (size_t)out);
  if (!codes || !dst || !tr || !words) {
    fprintf(stderr, "bench_pack: out of memory\n");
    return 7;
  }
  uint32_t s = 1;
  for (size_t i = 0; i < nc; i++) {
    s = s * 1664525u + 1013904223u;
    codes[i] = (uint8_t)((s >> 24) & ((1u << bits) - 1));
  }
  memset(dst, 0, nc);
  memset(tr, 0, nc);
  memset(words, 0, sizeof(int32_t) * (size_t)(in * bits / 32) * (size_t)out);
  double tp = 1e30, tm = 1e30, tt = 1e30;
  for (int r = 0; r < 3; r++) {
    double t0 = now();
    qz_gptq_pack(bits, out, in, codes, words);
    double t = now() - t0;
    if (t < tp) tp = t;
    t0 = now();
    memcpy(dst, codes, nc);
    t = now() - t0;
    if (t < tm) tm = t;
    t0 = now();
    for (int64_t i0 = 0; i0 < out; i0 += 64) /* blocked transpose */
      for (int64_t j0 = 0; j0 < in; j0 += 64)
        for (int64_t i = i0; i < i0 + 64 && i < out; i++)
          for (int64_t j = j0; j < j0 + 64 && j < in; j++) tr[j * out + i] = codes[i * in + j];
    t = now() - t0;
    if (t < tt) tt = t;
  }
  double gb = (double)nc / 1e9;
  printf("bench_pack: codes [%lld, %lld] w%d (%.3f GB), 1 thread, best of 3\n",
         (long long)out, (long long)in, bits, gb);
  printf("pack_gbs           %.2f\n", gb / tp);
  printf("memcpy_gbs         %.2f\n", gb / tm);
  printf("transpose_gbs      %.2f\n", gb / tt);
  printf("ratio_pack_over_memcpy %.3f\n", tm / tp);
  printf("ratio_pack_over_transpose %.2f\n", tt / tp);
  int chk = (int)(words[0] ^ dst[1] ^ tr[2]);
  free(codes);
  free(dst);
  free(tr);
  free(words);
  return chk == 0x7fffffff ? 1 : 0; /* keeps the results live */
}
