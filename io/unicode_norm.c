/* NFC, NFD, NFKC and NFKD (UAX #15: full canonical or compatibility
 * decomposition, canonical ordering, canonical composition with the
 * composition exclusions, Hangul syllables decomposed and composed
 * algorithmically), as Qwen2/Qwen3 tokenizer.json files ask for with
 * {"type": "NFC"}. Tables: unicode_tables.h, generated
 * by gen_unicode_tables.py from the Unicode Character Database. */
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "unicode_norm.h"
#include "unicode_tables.h"

#define NELEM(a) (sizeof(a) / sizeof *(a))

/* Hangul syllable constants (The Unicode Standard, section 3.12) */
enum {
  H_SBASE = 0xAC00, H_LBASE = 0x1100, H_VBASE = 0x1161, H_TBASE = 0x11A7,
  H_LCOUNT = 19, H_VCOUNT = 21, H_TCOUNT = 28,
  H_NCOUNT = H_VCOUNT * H_TCOUNT, H_SCOUNT = H_LCOUNT * H_NCOUNT
};

size_t qz_uni_decode(const unsigned char *s, size_t n, uint32_t *cp) {
  unsigned c = s[0];
  size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (l == 0 || l > n) return 0;
  for (size_t i = 1; i < l; i++)
    if ((s[i] & 0xc0) != 0x80) return 0;
  if (l == 2 && c < 0xc2) return 0;                         /* overlong */
  if (l == 3 && c == 0xe0 && s[1] < 0xa0) return 0;         /* overlong */
  if (l == 3 && c == 0xed && s[1] >= 0xa0) return 0;        /* surrogate */
  if (l == 4 && ((c == 0xf0 && s[1] < 0x90) || c > 0xf4 ||
                 (c == 0xf4 && s[1] >= 0x90))) return 0;
  uint32_t v = l == 1 ? c : l == 2 ? (c & 0x1fu) : l == 3 ? (c & 0x0fu) : (c & 0x07u);
  for (size_t i = 1; i < l; i++) v = (v << 6) | (s[i] & 0x3fu);
  *cp = v;
  return l;
}

uint32_t qz_uni_last(const char *s, size_t n) {
  size_t i = n - 1;
  while (i > 0 && ((unsigned char)s[i] & 0xc0) == 0x80) i--;
  uint32_t cp = 0;
  qz_uni_decode((const unsigned char *)s + i, n - i, &cp);
  return cp;
}

static size_t encode_utf8(uint32_t cp, char *o) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

int qz_uni_is_word(uint32_t c) {
  if (c < 0x80)
    return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') || c == '_';
  size_t lo = 0, hi = NELEM(qz_uni_W);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c < qz_uni_W[mid][0]) hi = mid;
    else if (c > qz_uni_W[mid][1]) lo = mid + 1;
    else return 1;
  }
  return 0;
}

static unsigned ccc(uint32_t c) {
  if (c < 0x300) return 0;
  size_t lo = 0, hi = NELEM(qz_uni_ccc);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c < qz_uni_ccc[mid][0]) hi = mid;
    else if (c > qz_uni_ccc[mid][1]) lo = mid + 1;
    else return qz_uni_ccc[mid][2];
  }
  return 0;
}

/* Full canonical (compat = 0) or compatibility decomposition of c into d
 * (room for QZ_UNI_KDECOMP_MAX; d = NULL: only the length). */
static size_t decompose(uint32_t c, int compat, uint32_t *d) {
  uint32_t h[3];
  if (!d) d = h;
  if (c >= H_SBASE && c < H_SBASE + H_SCOUNT) {
    uint32_t s = c - H_SBASE, t = s % H_TCOUNT;
    d[0] = H_LBASE + s / H_NCOUNT;
    d[1] = H_VBASE + (s % H_NCOUNT) / H_TCOUNT;
    if (t == 0) return 2;
    d[2] = H_TBASE + t;
    return 3;
  }
  if (c >= 0xA0) {
    const uint32_t(*tab)[3] = compat ? qz_uni_kdecomp : qz_uni_decomp;
    const uint32_t *pool = compat ? qz_uni_kdecomp_pool : qz_uni_decomp_pool;
    size_t lo = 0, hi = compat ? NELEM(qz_uni_kdecomp) : NELEM(qz_uni_decomp);
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (c < tab[mid][0]) hi = mid;
      else if (c > tab[mid][0]) lo = mid + 1;
      else {
        if (d != h) memcpy(d, pool + tab[mid][1], tab[mid][2] * sizeof *d);
        return tab[mid][2];
      }
    }
  }
  d[0] = c;
  return 1;
}

/* Primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= H_LBASE && a < H_LBASE + H_LCOUNT && b >= H_VBASE && b < H_VBASE + H_VCOUNT)
    return H_SBASE + ((a - H_LBASE) * H_VCOUNT + (b - H_VBASE)) * H_TCOUNT;
  if (a >= H_SBASE && a < H_SBASE + H_SCOUNT && (a - H_SBASE) % H_TCOUNT == 0 &&
      b > H_TBASE && b < H_TBASE + H_TCOUNT)
    return a + (b - H_TBASE);
  size_t lo = 0, hi = NELEM(qz_uni_comp);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const uint32_t *e = qz_uni_comp[mid];
    if (a < e[0] || (a == e[0] && b < e[1])) hi = mid;
    else if (a > e[0] || b > e[1]) lo = mid + 1;
    else return e[2];
  }
  return 0;
}

/* Canonical ordering: stable sort of each run of non-starters by class.
 * Runs are sorted by counting (linear), so a hostile text made of one long
 * run of combining marks costs no more than any other text. */
static void reorder(uint32_t *c, unsigned char *k, size_t n, uint32_t *tmp) {
  for (size_t i = 0; i < n;) {
    if (k[i] == 0) {
      i++;
      continue;
    }
    size_t j = i;
    while (j < n && k[j] != 0) j++;
    if (j - i > 1) {
      size_t cnt[257] = {0};
      for (size_t q = i; q < j; q++) cnt[k[q] + 1]++;
      for (int q = 1; q <= 256; q++) cnt[q] += cnt[q - 1];
      for (size_t q = i; q < j; q++) tmp[cnt[k[q]]++] = c[q];
      memcpy(c + i, tmp, (j - i) * sizeof *c);
      for (size_t q = i; q < j; q++) k[q] = (unsigned char)ccc(c[q]);
    }
    i = j;
  }
}

/* Canonical composition in place (UAX #15 sample algorithm); new length. */
static size_t recompose(uint32_t *c, const unsigned char *k, size_t n) {
  if (n == 0) return 0;
  size_t starter = 0, out = 1;
  int last = k[0] ? 256 : 0; /* a leading non-starter blocks everything */
  for (size_t i = 1; i < n; i++) {
    uint32_t comp = compose(c[starter], c[i]);
    if (comp && (last < k[i] || last == 0)) {
      c[starter] = comp;
      continue;
    }
    if (k[i] == 0) starter = out;
    last = k[i];
    c[out++] = c[i];
  }
  return out;
}

int qz_uni_normalize(const char *in, size_t n, qz_uni_form form, size_t max_cp,
                     char **out, size_t *outlen) {
  *out = NULL;
  *outlen = 0;
  int compat = form == QZ_UNI_NFKC || form == QZ_UNI_NFKD;
  /* pass 1: validate and count the decomposed code points */
  size_t m = 0;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    size_t l = qz_uni_decode((const unsigned char *)in + i, n - i, &cp);
    QZ_CHECK(l > 0, QZ_ERR_FORMAT, "text to normalize is not valid UTF-8 at byte %zu", i);
    i += l;
    m += cp < 0xA0 ? 1 : decompose(cp, compat, NULL);
  }
  QZ_CHECK(m <= max_cp, QZ_ERR_FORMAT, "normalizing %zu bytes of text would "
           "decompose them into %zu characters, more than the %zu allowed", n, m,
           max_cp);
  int st = QZ_OK;
  uint32_t *c = malloc((m + 1) * sizeof *c), *tmp = malloc((m + 1) * sizeof *tmp);
  unsigned char *k = malloc(m + 1);
  char *o = NULL;
  QZ_CHECK_DONE(c && tmp && k, QZ_ERR_MEM, "out of memory normalizing %zu bytes", n);
  /* pass 2: decompose */
  m = 0;
  for (size_t i = 0; i < n;) {
    uint32_t cp = 0;
    i += qz_uni_decode((const unsigned char *)in + i, n - i, &cp);
    if (cp < 0x80) { /* ASCII: its own decomposition, class 0 */
      c[m] = cp;
      k[m++] = 0;
      continue;
    }
    size_t d = decompose(cp, compat, c + m);
    for (size_t q = 0; q < d; q++) k[m + q] = (unsigned char)ccc(c[m + q]);
    m += d;
  }
  reorder(c, k, m, tmp);
  if (form == QZ_UNI_NFC || form == QZ_UNI_NFKC) m = recompose(c, k, m);
  o = malloc(4 * m + 1);
  QZ_CHECK_DONE(o, QZ_ERR_MEM, "out of memory normalizing %zu bytes", n);
  size_t ol = 0;
  for (size_t i = 0; i < m; i++) ol += encode_utf8(c[i], o + ol);
  o[ol] = 0;
  *out = o;
  *outlen = ol;
  o = NULL;
done:
  free(c);
  free(tmp);
  free(k);
  free(o);
  return st;
}
