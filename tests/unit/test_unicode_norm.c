/* NFC/NFD/NFKC/NFKD (io/unicode_norm.c) against Unicode's own conformance file,
 * NormalizationTest.txt (argv[1], decompressed; the Debian package
 * unicode-data ships it next to the UCD files the tables are generated
 * from). For every line c1;c2;c3;c4;c5 of parts 0-3:
 *   c2 == NFC(c1) == NFC(c2) == NFC(c3),  c4 == NFC(c4) == NFC(c5),
 *   c3 == NFD(c1) == NFD(c2) == NFD(c3),  c5 == NFD(c4) == NFD(c5);
 *   c4 == NFKC(c1..c5),                   c5 == NFKD(c1..c5);
 * and every code point not listed in part 1 is its own NFC, NFD, NFKC and
 * NFKD. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../io/unicode_norm.h"
#include "mpiquant/error.h"
#include "qz_test.h"

/* "0044 0307" -> UTF-8 */
static size_t field_utf8(const char *f, const char *end, char *o) {
  size_t n = 0;
  while (f < end) {
    char *e;
    unsigned long cp = strtoul(f, &e, 16);
    if (e == f) break;
    f = e;
    if (cp < 0x80) o[n++] = (char)cp;
    else if (cp < 0x800) {
      o[n++] = (char)(0xc0 | (cp >> 6));
      o[n++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      o[n++] = (char)(0xe0 | (cp >> 12));
      o[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
      o[n++] = (char)(0x80 | (cp & 0x3f));
    } else {
      o[n++] = (char)(0xf0 | (cp >> 18));
      o[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
      o[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
      o[n++] = (char)(0x80 | (cp & 0x3f));
    }
  }
  o[n] = 0;
  return n;
}

static int failures;

static void expect(const char *src, qz_uni_form form, const char *want, long line,
                   int col) {
  static const char *names[] = {"NFC", "NFD", "NFKC", "NFKD"};
  char *out = NULL;
  size_t ol = 0;
  int st = qz_uni_normalize(src, strlen(src), form, 1000, &out, &ol);
  int ok = st == QZ_OK && ol == strlen(want) && memcmp(out, want, ol) == 0;
  if (!ok && failures++ < 20)
    QZT_CHECK(0, "line %ld: %s(c%d) differs from the expected column", line,
              names[form], col);
  free(out);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  QZT_CHECK(argc == 2, "usage: qzt_unicode_norm NormalizationTest.txt");
  FILE *f = argc == 2 ? fopen(argv[1], "r") : NULL;
  QZT_CHECK(f != NULL, "cannot open %s", argc == 2 ? argv[1] : "?");
  static unsigned char listed[0x110000];
  char line[4096], c[6][512];
  long ln = 0, cases = 0;
  int part = -1;
  while (f && fgets(line, sizeof line, f)) {
    ln++;
    if (strncmp(line, "@Part", 5) == 0) part = atoi(line + 5);
    if (line[0] == '#' || line[0] == '@' || line[0] == '\n') continue;
    const char *p = line;
    for (int k = 1; k <= 5; k++) {
      const char *e = strchr(p, ';');
      if (!e) break;
      field_utf8(p, e, c[k]);
      p = e + 1;
    }
    if (part == 1) listed[strtoul(line, NULL, 16)] = 1;
    for (int k = 1; k <= 3; k++) expect(c[k], QZ_UNI_NFC, c[2], ln, k);
    for (int k = 4; k <= 5; k++) expect(c[k], QZ_UNI_NFC, c[4], ln, k);
    for (int k = 1; k <= 3; k++) expect(c[k], QZ_UNI_NFD, c[3], ln, k);
    for (int k = 4; k <= 5; k++) expect(c[k], QZ_UNI_NFD, c[5], ln, k);
    for (int k = 1; k <= 5; k++) expect(c[k], QZ_UNI_NFKC, c[4], ln, k);
    for (int k = 1; k <= 5; k++) expect(c[k], QZ_UNI_NFKD, c[5], ln, k);
    cases++;
  }
  if (f) fclose(f);
  QZT_CHECK(cases > 15000, "read %ld test lines (expected > 15000)", cases);
  long singles = 0;
  for (unsigned long cp = 0; cp < 0x110000; cp++) {
    if ((cp >= 0xD800 && cp <= 0xDFFF) || listed[cp]) continue;
    char s[8];
    char hex[16];
    snprintf(hex, sizeof hex, "%04lX", cp);
    field_utf8(hex, hex + strlen(hex), s);
    for (int form = 0; form < 4; form++) expect(s, (qz_uni_form)form, s, -(long)cp, 1);
    singles++;
  }
  /* invalid UTF-8 is an error, not garbage */
  char *out = NULL;
  size_t ol;
  QZT_FAILS(qz_uni_normalize("a\xc3", 2, QZ_UNI_NFC, 100, &out, &ol), QZ_ERR_FORMAT,
            "not valid UTF-8");
  /* U+FDFA is 18 characters in NFKD: refused past the limit, before work */
  QZT_FAILS(qz_uni_normalize("\xef\xb7\xba", 3, QZ_UNI_NFKC, 17, &out, &ol),
            QZ_ERR_FORMAT, "into 18 characters, more than the 17 allowed");
  QZT_OK(qz_uni_normalize("\xef\xb7\xba", 3, QZ_UNI_NFKD, 18, &out, &ol));
  QZT_CHECK(ol == 33, "NFKD(U+FDFA) is %zu bytes, expected 33", ol);
  free(out);
  printf("unicode_norm: %ld conformance lines, %ld unlisted code points, %d mismatches\n",
         cases, singles, failures);
  QZT_CHECK(failures == 0, "%d mismatches in total", failures);
  return qzt_finish("unicode_norm");
}
