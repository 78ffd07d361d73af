/* libFuzzer target for the tokenizer. The first input byte picks the mode:
 *   even: the rest is UTF-8 (or not) text, encoded with a fixed tokenizer
 *         (QZ_FUZZ_TOKENIZER=path/to/tokenizer.json, else a small built-in
 *         one with merges, byte fallback and added tokens), a
 *         character-level one without byte fallback (unk, fuse_unk), and two
 *         byte-level ones (Llama-3 split regex; GPT-2 regex);
 *   odd:  the rest is a tokenizer.json, optionally followed by a NUL byte and
 *         a text; if it loads, that text (or a fixed one) is encoded with
 *         it, so the added-token scan and the normalizer meet texts the
 *         fuzzer chooses.
 * Every id produced must be inside the vocabulary. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mpiquant/error.h"
#include "mpiquant/tokenizer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static qz_tokenizer *g_tok[4];

static const char *builtin_bpe =
    "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\"},{\"id\":1,\"content\":\"<s>\"}],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\","
    "\"prepend\":\"\xe2\x96\x81\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},"
    "\"content\":\"\xe2\x96\x81\"}]},\"pre_tokenizer\":null,"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
    "{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
    "\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,"
    "\"byte_fallback\":true,\"vocab\":{\"<unk>\":0,\"<s>\":1,\"<0x41>\":2,\"<0xE2>\":3,"
    "\"<0x96>\":4,\"<0x81>\":5,\"\xe2\x96\x81\":6,\"a\":7,\"b\":8,\"ab\":9,"
    "\"\xe2\x96\x81" "a\":10,\"\xe2\x96\x81" "ab\":11,\"ba\":12,\"aa\":13},"
    "\"merges\":[\"a b\",\"\xe2\x96\x81 a\",\"\xe2\x96\x81" "a b\",\"b a\",\"a a\"]}}";

static const char *builtin_chars =
    "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\","
    "\"prepend\":\"\xe2\x96\x81\"}]},\"pre_tokenizer\":{\"type\":\"Metaspace\","
    "\"replacement\":\"\xe2\x96\x81\",\"prepend_scheme\":\"first\",\"split\":true},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":false,"
    "\"vocab\":{\"<unk>\":0,\"\xe2\x96\x81\":1,\"x\":2,\"y\":3,\"xy\":4},"
    "\"merges\":[[\"x\",\"y\"]]}}";

/* Byte-level tokenizer: the 256 byte characters, a few merges, and the
 * Llama-3 split regex (split != 0) or ByteLevel's GPT-2 regex. */
static int bytelevel_tok(int split, qz_tokenizer **out) {
  json_t *vocab = json_object();
  int n = 0;
  for (int b = 0; b < 256; b++) {
    int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    unsigned cp = keep ? (unsigned)b : 256u + (unsigned)n++;
    char c[4] = {0};
    if (cp < 0x80) c[0] = (char)cp;
    else c[0] = (char)(0xc0 | (cp >> 6)), c[1] = (char)(0x80 | (cp & 0x3f));
    json_object_set_new(vocab, c, json_integer(b));
  }
  json_object_set_new(vocab, "\xc4\xa0t", json_integer(256)); /* "Ġt" */
  json_object_set_new(vocab, "he", json_integer(257));
  json_object_set_new(vocab, "\xc4\xa0the", json_integer(258));
  json_object_set_new(vocab, "<|eot|>", json_integer(259));
  const char *re =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  json_t *pre = split
      ? json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s, s:b}]}", "type", "Sequence",
                  "pretokenizers", "type", "Split", "pattern", "Regex", re, "behavior",
                  "Isolated", "type", "ByteLevel", "use_regex", 0)
      : json_pack("{s:s, s:b}", "type", "ByteLevel", "add_prefix_space", 1);
  json_t *root = json_pack("{s:{s:s, s:b, s:o, s:[s, s, s]}, s:o, s:[{s:i, s:s}]}",
                           "model", "type", "BPE", "ignore_merges", split, "vocab", vocab,
                           "merges", "\xc4\xa0 t", "h e", "\xc4\xa0t he",
                           "pre_tokenizer", pre, "added_tokens", "id", 259, "content",
                           "<|eot|>");
  char *js = json_dumps(root, JSON_COMPACT);
  int st = js ? qz_tokenizer_load_json(js, strlen(js), "bytelevel", out) : QZ_ERR_MEM;
  free(js);
  json_decref(root);
  return st;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *p = getenv("QZ_FUZZ_TOKENIZER");
  int st = p ? qz_tokenizer_load(p, &g_tok[0])
             : qz_tokenizer_load_json(builtin_bpe, strlen(builtin_bpe), "builtin",
                                      &g_tok[0]);
  if (st == QZ_OK)
    st = qz_tokenizer_load_json(builtin_chars, strlen(builtin_chars), "chars", &g_tok[1]);
  if (st == QZ_OK) st = bytelevel_tok(1, &g_tok[2]);
  if (st == QZ_OK) st = bytelevel_tok(0, &g_tok[3]);
  if (st != QZ_OK) {
    qz_error_print(stderr, 0);
    abort();
  }
  return 0;
}

static void encode_check(const qz_tokenizer *t, const char *s, size_t n, int bos) {
  int32_t *ids = NULL;
  int64_t cnt = 0;
  if (qz_tokenizer_encode(t, s, n, bos, &ids, &cnt) == QZ_OK) {
    for (int64_t i = 0; i < cnt; i++)
      if (ids[i] < 0 || ids[i] >= qz_tokenizer_vocab_size(t) ||
          !qz_tokenizer_piece(t, ids[i]))
        abort();
    if (n > 0 && cnt == 0 && !bos) {
      /* non-empty valid text always yields a token, except text made only
       * of characters that neither the vocab, bytes nor unk can express */
    }
  }
  free(ids);
  qz_error_clear();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const char *s = (const char *)data + 1;
  size_t n = size - 1;
  char *copy = malloc(n ? n : 1); /* exact-size copy: ASan catches overreads */
  if (!copy) return 0;
  if (n) memcpy(copy, s, n);
  if ((data[0] & 1) == 0) {
    encode_check(g_tok[0], copy, n, data[0] & 2);
    encode_check(g_tok[1], copy, n, 0);
    encode_check(g_tok[2], copy, n, 0);
    encode_check(g_tok[3], copy, n, 0);
  } else {
    qz_tokenizer *t = NULL;
    const char *nul = memchr(copy, 0, n);
    size_t jl = nul ? (size_t)(nul - copy) : n;
    if (qz_tokenizer_load_json(copy, jl, "fuzz.json", &t) == QZ_OK) {
      static const char txt[] = "Once upon a time, ab ba \xe2\x98\x83 <s> x\n\n";
      if (nul) encode_check(t, nul + 1, n - jl - 1, 1);
      else encode_check(t, txt, sizeof txt - 1, 1);
      qz_tokenizer_free(&t);
    }
    qz_error_clear();
  }
  free(copy);
  return 0;
}
