/* Hostile tokenizer.json files cannot cost unbounded memory or time
 * (mpiquant/tokenizer.h limits): a huge sparse id, 100,000 added tokens
 * sharing a first byte, a Replace normalizer with a 64 KB content. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpiquant/error.h"
#include "mpiquant/tokenizer.h"
#include "qz_test.h"

/* The scan below took 49 s with a linear pass over the added tokens per
 * text position; with the trie it takes milliseconds. 5 s leaves room for
 * a slow, loaded CI machine and still fails the linear scan by 10x. */
#define TIME_LIMIT_S 5.0
#define NADDED 100000

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  qz_tokenizer *t = NULL;
  /* the 61-byte file: one id 2^30 - 1 (used to allocate 8 GiB of tables) */
  const char *sparse = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1073741823}}}";
  QZT_FAILS(qz_tokenizer_load_json(sparse, strlen(sparse), "sparse.json", &t), QZ_ERR_FORMAT,
            "sparse.json: token id 1073741823 is far beyond the 1 vocabulary and added entries");
  qz_error_clear();

  /* NADDED added tokens "zNNNNN", all starting with 'z', and a 64 KB text of
   * 'z's with one real token inside */
  size_t cap = (size_t)NADDED * 48 + 4096, o = 0;
  char *js = malloc(cap);
  o += (size_t)snprintf(js + o, cap - o, "{\"model\":{\"type\":\"BPE\",\"unk_token\":\"?\","
                        "\"vocab\":{\"?\":0,\"z\":1,\"1\":2,\"2\":3}},\"added_tokens\":[");
  for (int k = 0; k < NADDED; k++)
    o += (size_t)snprintf(js + o, cap - o, "%s{\"id\":%d,\"content\":\"z%05d\"}",
                          k ? "," : "", 4 + k, k);
  o += (size_t)snprintf(js + o, cap - o, "]}");
  if (QZT_OK(qz_tokenizer_load_json(js, o, "added.json", &t))) {
    size_t n = 64 * 1024;
    char *text = malloc(n);
    memset(text, 'z', n);
    memcpy(text + n / 2, "z12121", 6);
    int32_t *ids = NULL;
    int64_t nid = 0;
    double t0 = now();
    QZT_OK(qz_tokenizer_encode(t, text, n, 0, &ids, &nid));
    double dt = now() - t0;
    QZT_CHECK(dt < TIME_LIMIT_S, "64 KB against %d added tokens: %.2f s (limit %.0f s)",
              NADDED, dt, TIME_LIMIT_S);
    /* independent expectation: every 'z' is piece 1 except the token */
    QZT_CHECK(nid == (int64_t)n - 5, "%lld ids for %zu bytes with one 6-byte token",
              (long long)nid, n);
    int64_t found = -1;
    for (int64_t i = 0; i < nid; i++)
      if (ids[i] != 1) found = found < 0 ? i : -2;
    QZT_CHECK(found == (int64_t)n / 2 && ids[found] == 4 + 12121,
              "the added token z12121 at position %zu (found at %lld)", n / 2,
              (long long)found);
    free(ids);
    free(text);
    qz_tokenizer_free(&t);
  }
  free(js);

  /* Replace " " -> 64 KB: refused before it allocates (it used to grow to
   * 6.5 GB on 100 KB of spaces) */
  size_t big = 64 * 1024;
  char *rj = malloc(big + 512);
  o = (size_t)snprintf(rj, big + 512, "{\"normalizer\":{\"type\":\"Replace\",\"pattern\":"
                       "{\"String\":\" \"},\"content\":\"");
  memset(rj + o, 'x', big);
  o += big;
  o += (size_t)snprintf(rj + o, big + 512 - o, "\"},\"model\":{\"type\":\"BPE\",\"unk_token\":"
                        "\"?\",\"vocab\":{\"?\":0,\"x\":1}}}");
  if (QZT_OK(qz_tokenizer_load_json(rj, o, "replace.json", &t))) {
    size_t n = 100 * 1000;
    char *sp = malloc(n);
    memset(sp, ' ', n);
    int32_t *ids = NULL;
    int64_t nid = 0;
    QZT_FAILS(qz_tokenizer_encode(t, sp, n, 0, &ids, &nid), QZ_ERR_FORMAT,
              "replace.json: the normalizer expands a 100000-byte piece of text to "
              "6553600000 bytes");
    qz_error_clear();
    /* a modest expansion (3x, as Llama-2's) still works */
    QZT_OK(qz_tokenizer_encode(t, "x", 1, 0, &ids, &nid));
    free(ids);
    free(sp);
    qz_tokenizer_free(&t);
  }
  free(rj);
  return qzt_finish("tokenizer_limits");
}
