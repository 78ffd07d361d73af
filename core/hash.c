/* Content digests (see mpiquant/file.h). */
#include <stdint.h>
#include <string.h>

#include "mpiquant/file.h"

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t round64(uint64_t acc, uint64_t w) { return rotl(acc + w * P2, 31) * P1; }
static inline uint64_t load64(const unsigned char *b) {
  uint64_t w;
  memcpy(&w, b, 8);
  return w;
}
static inline uint64_t avalanche(uint64_t x) {
  x ^= x >> 33;
  x *= P2;
  x ^= x >> 29;
  x *= P3;
  x ^= x >> 32;
  return x;
}

uint64_t qz_hash64(const void *p, size_t n, uint64_t seed) {
  const unsigned char *b = p;
  uint64_t a0 = seed + P1 + P2, a1 = seed + P2, a2 = seed, a3 = seed - P1;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = round64(a0, load64(b + i));
    a1 = round64(a1, load64(b + i + 8));
    a2 = round64(a2, load64(b + i + 16));
    a3 = round64(a3, load64(b + i + 24));
  }
  uint64_t h = rotl(a0, 1) + rotl(a1, 7) + rotl(a2, 12) + rotl(a3, 18) + (uint64_t)n;
  for (; i + 8 <= n; i += 8) h = rotl(h ^ round64(0, load64(b + i)), 27) * P1 + P4;
  for (; i < n; i++) h = rotl(h ^ (b[i] * P3), 11) * P1;
  return avalanche(h);
}

uint64_t qz_hash_part(uint64_t index, const void *p, size_t n) {
  return avalanche(qz_hash64(p, n, index * P4 + P3) ^ (index * P1));
}
