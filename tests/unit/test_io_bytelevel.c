/* Byte-level BPE (Llama-3, Qwen2, GPT-2 pre-tokenizers).
 *
 * Split boundaries: for each text in tests/fixtures/tokenizers/
 * bytelevel_split.json (pieces computed by an independent regex engine), a
 * tokenizer is built whose vocabulary is the 256 byte characters plus exactly
 * those pieces (ignore_merges, no merges): the encoding equals the pieces'
 * ids only if every boundary is right (a wrong boundary yields a piece not in
 * the vocabulary, hence byte ids).
 * Full Llama-3 ids: when QZ_LLAMA3_TOKENIZER names a Llama-3 tokenizer.json,
 * every text must also give the fixture's llama3_ids. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/tokenizer.h"
#include "qz_test.h"

static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* GPT-2 bytes_to_unicode, written out independently of io/tokenizer.c */
static void byte_char(int b, char out[4]) {
  static int cp[256], init;
  if (!init) {
    int n = 0;
    for (int i = 0; i < 256; i++) cp[i] = -1;
    for (int i = '!'; i <= '~'; i++) cp[i] = i;
    for (int i = 0xa1; i <= 0xac; i++) cp[i] = i;
    for (int i = 0xae; i <= 0xff; i++) cp[i] = i;
    for (int i = 0; i < 256; i++)
      if (cp[i] < 0) cp[i] = 256 + n++;
    init = 1;
  }
  int c = cp[b];
  memset(out, 0, 4);
  if (c < 0x80) out[0] = (char)c;
  else {
    out[0] = (char)(0xc0 | (c >> 6));
    out[1] = (char)(0x80 | (c & 0x3f));
  }
}

static char *to_bytelevel(const char *s) {
  size_t n = strlen(s);
  char *o = malloc(2 * n + 1), c[4];
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    byte_char((unsigned char)s[i], c);
    size_t l = strlen(c);
    memcpy(o + k, c, l);
    k += l;
  }
  o[k] = 0;
  return o;
}

/* kind: "llama3", "qwen2", "gpt2" */
static void check_split(const char *kind, json_t *tc, int idx) {
  const char *text = json_string_value(json_object_get(tc, "text"));
  json_t *pieces = json_object_get(tc, kind);
  json_t *root = json_object(), *model = json_object(), *vocab = json_object();
  char c[4];
  for (int b = 0; b < 256; b++) {
    byte_char(b, c);
    json_object_set_new(vocab, c, json_integer(b));
  }
  int32_t *want = malloc((json_array_size(pieces) + 1) * sizeof *want);
  int next = 256;
  for (size_t i = 0; i < json_array_size(pieces); i++) {
    char *bl = to_bytelevel(json_string_value(json_array_get(pieces, i)));
    json_t *have = json_object_get(vocab, bl);
    if (!have) {
      json_object_set_new(vocab, bl, json_integer(next));
      want[i] = next++;
    } else {
      want[i] = (int32_t)json_integer_value(have);
    }
    free(bl);
  }
  json_object_set_new(model, "type", json_string("BPE"));
  json_object_set_new(model, "ignore_merges", json_true());
  json_object_set_new(model, "vocab", vocab);
  json_object_set_new(model, "merges", json_array());
  json_object_set_new(root, "model", model);
  json_t *pre;
  if (strcmp(kind, "gpt2") == 0) {
    pre = json_pack("{s:s, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                    "use_regex", 1);
  } else {
    pre = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b}]}", "type",
                    "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex",
                    strcmp(kind, "llama3") == 0 ? RE_LLAMA3 : RE_QWEN2, "behavior",
                    "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space",
                    0, "use_regex", 0);
  }
  json_object_set_new(root, "pre_tokenizer", pre);
  char *js = json_dumps(root, JSON_COMPACT);
  qz_tokenizer *t = NULL;
  if (QZT_OK(qz_tokenizer_load_json(js, strlen(js), kind, &t))) {
    int32_t *ids = NULL;
    int64_t n = 0;
    QZT_OK(qz_tokenizer_encode(t, text, strlen(text), 0, &ids, &n));
    int same = n == (int64_t)json_array_size(pieces) &&
               memcmp(ids, want, (size_t)n * sizeof *ids) == 0;
    QZT_CHECK(same, "%s split of case %d: %lld pieces, expected %zu", kind, idx,
              (long long)n, json_array_size(pieces));
    free(ids);
    qz_tokenizer_free(&t);
  }
  free(js);
  free(want);
  json_decref(root);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  const char *src = getenv("QZ_SOURCE_DIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/tests/fixtures/tokenizers/bytelevel_split.json",
           src ? src : ".");
  json_error_t e;
  json_t *fx = json_load_file(path, 0, &e);
  QZT_CHECK(json_is_array(fx) && json_array_size(fx) > 10, "fixture %s: %s", path,
            fx ? "ok" : e.text);
  const char *kinds[3] = {"llama3", "qwen2", "gpt2"};
  for (size_t i = 0; i < json_array_size(fx); i++)
    for (int k = 0; k < 3; k++) check_split(kinds[k], json_array_get(fx, i), (int)i);

  const char *l3 = getenv("QZ_LLAMA3_TOKENIZER");
  if (l3 && *l3) {
    qz_tokenizer *t = NULL;
    if (QZT_OK(qz_tokenizer_load(l3, &t))) {
      QZT_CHECK(qz_tokenizer_vocab_size(t) == 128256, "Llama-3 vocab 128256");
      for (size_t i = 0; i < json_array_size(fx); i++) {
        json_t *tc = json_array_get(fx, i), *want = json_object_get(tc, "llama3_ids");
        const char *text = json_string_value(json_object_get(tc, "text"));
        int32_t *ids = NULL;
        int64_t n = 0;
        QZT_OK(qz_tokenizer_encode(t, text, strlen(text), 0, &ids, &n));
        int same = n == (int64_t)json_array_size(want);
        for (int64_t j = 0; same && j < n; j++)
          same = ids[j] == json_integer_value(json_array_get(want, (size_t)j));
        QZT_CHECK(same, "Llama-3 ids of case %zu (%lld ids, expected %zu)", i,
                  (long long)n, json_array_size(want));
        free(ids);
      }
      qz_tokenizer_free(&t);
    }
  }
  json_decref(fx);
  return qzt_finish("io_bytelevel");
}
