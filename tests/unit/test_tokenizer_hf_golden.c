/* NFC/NFD normalizers and added-token flags without node: the ids of
 * tests/fixtures/tokenizers/hf_golden_ids.json were written by Hugging
 * Face's Rust tokenizers (tests/js/make_golden_ids.mjs) for the fixture
 * tokenizer.json files and texts (tests/fixtures/tokenizers/
 * make_hf_fixtures.py); the encoder must reproduce them exactly. The live
 * comparison, on the shared texts too, is the tokenizer_hf test. Also: the
 * normalizers we do not implement and malformed flags are refused by name. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/tokenizer.h"
#include "qz_test.h"

static char dir[4096];

static void check_case(json_t *c) {
  const char *tk = json_string_value(json_object_get(c, "tokenizer"));
  const char *tx = json_string_value(json_object_get(c, "text"));
  json_t *want = json_object_get(c, "ids");
  char path[8192];
  qz_tokenizer *tok = NULL;
  char *text = NULL;
  size_t len = 0;
  int32_t *ids = NULL;
  int64_t n = 0;
  snprintf(path, sizeof path, "%s/%s", dir, tk);
  if (!QZT_OK(qz_tokenizer_load(path, &tok))) return;
  snprintf(path, sizeof path, "%s/%s", dir, tx);
  if (QZT_OK(qz_read_file(path, &text, &len)) &&
      QZT_OK(qz_tokenizer_encode(tok, text, len, 0, &ids, &n))) {
    int64_t m = (int64_t)json_array_size(want), d = -1;
    for (int64_t i = 0; i < (n < m ? n : m) && d < 0; i++)
      if (ids[i] != json_integer_value(json_array_get(want, (size_t)i))) d = i;
    if (d < 0 && n != m) d = n < m ? n : m;
    QZT_CHECK(d < 0, "%s x %s: %lld ids, reference %lld; first difference at id %lld",
              tk, tx, (long long)n, (long long)m, (long long)d);
  }
  free(ids);
  free(text);
  qz_tokenizer_free(&tok);
}

static const char *MINI =
    "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[]},"
    "\"added_tokens\":[%s],\"normalizer\":%s}";

static int load_mini(const char *added, const char *norm) {
  char buf[1024];
  snprintf(buf, sizeof buf, MINI, added, norm);
  qz_tokenizer *t = NULL;
  int st = qz_tokenizer_load_json(buf, strlen(buf), "mini.json", &t);
  qz_tokenizer_free(&t);
  return st;
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  const char *src = getenv("QZ_SOURCE_DIR");
  snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizers", src ? src : ".");
  char path[8192];
  snprintf(path, sizeof path, "%s/hf_golden_ids.json", dir);
  json_error_t e;
  json_t *root = json_load_file(path, 0, &e);
  QZT_CHECK(root != NULL, "cannot read %s: %s", path, e.text);
  json_t *cases = json_object_get(root, "cases");
  QZT_CHECK(json_array_size(cases) >= 6, "%s: expected 6 cases", path);
  for (size_t i = 0; i < json_array_size(cases); i++) check_case(json_array_get(cases, i));
  json_decref(root);

  QZT_FAILS(load_mini("", "{\"type\":\"Precompiled\"}"), QZ_ERR_UNSUPPORTED,
            "normalizer type 'Precompiled' is not supported (supported: Sequence, "
            "Prepend, Replace, NFC, NFD, NFKC, NFKD)");
  QZT_FAILS(load_mini("", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},"
                          "{\"type\":\"Lowercase\"}]}"),
            QZ_ERR_UNSUPPORTED, "normalizer type 'Lowercase' is not supported");
  QZT_FAILS(load_mini("{\"id\":2,\"content\":\"x\",\"lstrip\":1}", "null"), QZ_ERR_FORMAT,
            "added_tokens[0] 'x': 'lstrip' must be true or false");
  QZT_OK(load_mini("{\"id\":2,\"content\":\"x\",\"single_word\":true}",
                   "{\"type\":\"NFD\"}"));
  QZT_OK(load_mini("", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKC\"},"
                       "{\"type\":\"NFKD\"}]}"));
  /* NFKC grows U+FDFA 11x: past the normalizer limit (4 x + 64) it is
   * refused, naming the file, before the work buffers are allocated */
  {
    char buf[1024], text[3000];
    snprintf(buf, sizeof buf, MINI, "", "{\"type\":\"NFKC\"}");
    qz_tokenizer *t = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    for (int i = 0; i < 1000; i++) memcpy(text + 3 * i, "\xef\xb7\xba", 3);
    if (QZT_OK(qz_tokenizer_load_json(buf, strlen(buf), "mini.json", &t)))
      QZT_FAILS(qz_tokenizer_encode(t, text, sizeof text, 0, &ids, &n), QZ_ERR_FORMAT,
                "mini.json: the normalizer: normalizing 3000 bytes of text would "
                "decompose them into 18000 characters");
    free(ids);
    qz_tokenizer_free(&t);
  }
  return qzt_finish("tokenizer_hf_golden");
}
