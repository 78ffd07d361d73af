/* Bad inputs: every damaged safetensors file, shard index, config.json,
 * tokenizer.json and token file must give a non-zero status and a message
 * that says what is wrong (never a crash or an out-of-bounds read: this test
 * also runs under AddressSanitizer). Files are made here, in QZ_TEST_TMP. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpiquant/config.h"
#include "mpiquant/error.h"
#include "mpiquant/safetensors.h"
#include "mpiquant/tokenizer.h"
#include "qz_test.h"

static char g_dir[2048];

static const char *tpath(const char *name) {
  static char bufs[8][2300];
  static int k;
  char *b = bufs[k++ & 7];
  snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
  return b;
}

static const char *write_bytes(const char *name, const void *d, size_t n) {
  const char *p = tpath(name);
  FILE *f = fopen(p, "wb");
  if (!f || (n && fwrite(d, 1, n, f) != n)) QZT_CHECK(0, "cannot write %s", p);
  if (f) fclose(f);
  return p;
}

static const char *write_text(const char *name, const char *s) {
  return write_bytes(name, s, strlen(s));
}

/* A safetensors image: 8-byte length, header, `data` zero bytes; the
 * declared length can be overridden (hlen_override >= 0). */
static const char *st_image(const char *name, const char *hdr, size_t data,
                            long long hlen_override) {
  size_t hl = strlen(hdr), n = 8 + hl + data;
  unsigned char *b = calloc(1, n);
  unsigned long long v = hlen_override >= 0 ? (unsigned long long)hlen_override : hl;
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
  memcpy(b + 8, hdr, hl);
  const char *p = write_bytes(name, b, n);
  free(b);
  return p;
}

static int st_open_fails(const char *path, int status, const char *phrase) {
  qz_st *st = NULL;
  int ok = QZT_FAILS(qz_st_open(path, &st), status, phrase);
  QZT_CHECK(st == NULL, "no handle on failure (%s)", path);
  qz_st_close(&st);
  return ok;
}

#define T1 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}"

static void safetensors_cases(const char *real) {
  st_open_fails(write_bytes("empty.st", "", 0), QZ_ERR_FORMAT,
                "too small for a safetensors file");
  st_open_fails(write_bytes("five.st", "\x10\0\0\0\0", 5), QZ_ERR_FORMAT,
                "too small for a safetensors file");
  st_open_fails(st_image("hlen_big.st", T1, 16, 4000), QZ_ERR_FORMAT,
                "header length 4000 exceeds the file size");
  st_open_fails(st_image("hlen_huge.st", T1, 16, 1LL << 40), QZ_ERR_FORMAT,
                "is larger than the limit");
  st_open_fails(st_image("notjson.st", "{\"a\": {dtype", 0, -1), QZ_ERR_FORMAT,
                "header is not valid JSON");
  st_open_fails(st_image("array.st", "[1,2,3]", 0, -1), QZ_ERR_FORMAT,
                "header must be a JSON object");
  st_open_fails(st_image("dtype.st",
                         "{\"a\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                         8, -1), QZ_ERR_FORMAT, "tensor 'a': unknown dtype 'F12'");
  st_open_fails(st_image("nodtype.st", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}",
                         8, -1), QZ_ERR_FORMAT, "missing or non-string 'dtype'");
  st_open_fails(st_image("notobj.st", "{\"a\":[1,2]}", 0, -1), QZ_ERR_FORMAT,
                "tensor 'a': header entry must be an object");
  st_open_fails(st_image("neg.st",
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2,2],\"data_offsets\":[0,16]}}",
                         16, -1), QZ_ERR_FORMAT, "tensor 'w': shape dimension 0 is negative (-2)");
  st_open_fails(st_image("shapestr.st",
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}",
                         8, -1), QZ_ERR_FORMAT, "shape entry 0 is not an integer");
  st_open_fails(st_image("overflow.st",
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,16],"
                         "\"data_offsets\":[0,16]}}", 16, -1), QZ_ERR_FORMAT,
                "shape has too many elements (int64 overflow");
  st_open_fails(st_image("bytesoverflow.st",
                         "{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
                         "\"data_offsets\":[0,16]}}", 16, -1), QZ_ERR_FORMAT,
                "overflows int64");
  st_open_fails(st_image("ninedims.st",
                         "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                         "\"data_offsets\":[0,1]}}", 1, -1), QZ_ERR_UNSUPPORTED,
                "9 dimensions, at most 8 supported");
  st_open_fails(st_image("span.st",
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}",
                         12, -1), QZ_ERR_FORMAT,
                "data_offsets [0, 12] span 12 bytes, but dtype F32 x shape [2,2] needs 16 bytes");
  st_open_fails(st_image("backwards.st",
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}",
                         8, -1), QZ_ERR_FORMAT, "must satisfy 0 <= begin <= end");
  st_open_fails(st_image("offsets3.st",
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}",
                         8, -1), QZ_ERR_FORMAT, "must be an array [begin, end]");
  st_open_fails(st_image("beyond.st", T1, 8, -1), QZ_ERR_FORMAT,
                "tensor 'a': data ends at offset 16 but the data section has only 8 bytes");
  st_open_fails(st_image("overlap.st",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                         12, -1), QZ_ERR_FORMAT, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
  st_open_fails(st_image("gap.st",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                         20, -1), QZ_ERR_FORMAT, "gap of 4 bytes before tensor 'b'");
  st_open_fails(st_image("trailing.st", T1, 24, -1), QZ_ERR_FORMAT,
                "8 trailing bytes after the last tensor");
  st_open_fails(st_image("dup.st",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                         8, -1), QZ_ERR_FORMAT, "duplicate tensor name");
  st_open_fails(st_image("meta.st",
                         "{\"__metadata__\":{\"x\":1},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                         4, -1), QZ_ERR_FORMAT, "'__metadata__' value of 'x' is not a string");
  st_open_fails(tpath("does-not-exist.safetensors"), QZ_ERR_IO, "cannot open");
  mkdir(tpath("emptydir"), 0755);
  st_open_fails(tpath("emptydir"), QZ_ERR_IO,
                "no model.safetensors or model.safetensors.index.json");

  /* F8 converts only as a 2-D weight times its scale (io/fp8_read.c) */
  static const char f8h[] =
      "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,2],\"data_offsets\":[0,4]},"
      "\"w_scale\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[4,12]},"
      "\"v\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[12,16]},"
      "\"u\":{\"dtype\":\"F8_E5M2\",\"shape\":[1,2],\"data_offsets\":[16,18]}}";
  unsigned char f8b[8 + sizeof f8h - 1 + 18] = {0};
  const size_t hl = sizeof f8h - 1;
  for (int i = 0; i < 8; i++) f8b[i] = (unsigned char)((unsigned long long)hl >> (8 * i));
  memcpy(f8b + 8, f8h, hl);
  /* E4M3 1, 2, -1, 448 (OCP: 0.0111.000, 0.1000.000, 1.0111.000, 0.1111.110) */
  const unsigned char codes[4] = {0x38, 0x40, 0xB8, 0x7E};
  const float sc[2] = {0.5f, 2.0f};
  memcpy(f8b + 8 + hl, codes, 4);
  memcpy(f8b + 8 + hl + 4, sc, 8);
  qz_st *st = NULL;
  if (QZT_OK(qz_st_open_memory(f8b, sizeof f8b, "f8", &st))) {
    float f[4] = {0};
    if (QZT_OK(qz_st_read_f32(st, "w", 0, 2, f)))
      QZT_CHECK(f[0] == 0.5f && f[1] == 1.0f && f[2] == -2.0f && f[3] == 896.0f,
                "F8 x per-channel scale: %g %g %g %g", f[0], f[1], f[2], f[3]);
    if (QZT_OK(qz_st_read_f32(st, "w", 1, 1, f)))
      QZT_CHECK(f[0] == -2.0f && f[1] == 896.0f, "F8 row 1: %g %g", f[0], f[1]);
    QZT_FAILS(qz_st_read_f32(st, "v", 0, 4, f), QZ_ERR_FORMAT,
              "tensor 'v' is F8_E4M3 with 1 dimensions");
    QZT_FAILS(qz_st_read_f32(st, "u", 0, 1, f), QZ_ERR_FORMAT,
              "tensor 'u' is F8_E5M2 but neither 'u_scale' nor 'u_scale_inv' exists");
    QZT_FAILS(qz_st_read_f32(st, "w", 0, 3, f), QZ_ERR_ARG, "rows [0, 3) requested");
    qz_st_close(&st);
  }

  /* the real model truncated at several offsets */
  if (!real) return;
  FILE *f = fopen(real, "rb");
  QZT_CHECK(f != NULL, "open %s", real);
  if (!f) return;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *img = malloc((size_t)n);
  QZT_CHECK(fread(img, 1, (size_t)n, f) == (size_t)n, "read model");
  fclose(f);
  struct { long at; const char *phrase; } cut[] = {
      {4, "too small"},
      {8, "header length 4856 exceeds the file size"},
      {2000, "header length 4856 exceeds the file size"},
      {8 + 4856, "data section has only 0 bytes"},
      {8 + 4856 + 1000, "(truncated file?)"},
      {n / 2, "(truncated file?)"},
      {n - 1, "data section has only 1040127 bytes"},
  };
  for (size_t i = 0; i < sizeof cut / sizeof *cut; i++) {
    char nm[64];
    snprintf(nm, sizeof nm, "trunc_%ld.safetensors", cut[i].at);
    st_open_fails(write_bytes(nm, img, (size_t)cut[i].at), QZ_ERR_FORMAT, cut[i].phrase);
  }
  /* a corrupted header byte (a digit of an offset) is caught too */
  unsigned char *bad = malloc((size_t)n);
  memcpy(bad, img, (size_t)n);
  char *pos = strstr((char *)bad + 8, "[0,131072]");
  QZT_CHECK(pos != NULL, "found the embed offsets");
  if (pos) {
    pos[3] = '2'; /* [0,231072] */
    st_open_fails(write_bytes("corrupt.safetensors", bad, (size_t)n), QZ_ERR_FORMAT,
                  "model.embed_tokens.weight': data_offsets [0, 231072] span");
  }
  free(bad);
  free(img);
}

/* Shard sets: two good shards, then broken indexes. */
static void shard_cases(void) {
  mkdir(tpath("sh"), 0755);
  st_image("sh/s1.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1);
  st_image("sh/s2.safetensors",
           "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1);
  st_image("sh/s3.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1);
  qz_st *st = NULL;
  if (QZT_OK(qz_st_open(write_text("sh/good.index.json",
                                   "{\"weight_map\":{\"a\":\"s1.safetensors\","
                                   "\"b\":\"s2.safetensors\"}}"), &st)))
    QZT_CHECK(qz_st_count(st) == 2 && qz_st_nfiles(st) == 2, "good index");
  qz_st_close(&st);
  st_open_fails(write_text("sh/missing.index.json",
                           "{\"weight_map\":{\"a\":\"s1.safetensors\","
                           "\"b\":\"s9.safetensors\"}}"), QZ_ERR_IO,
                "s9.safetensors (holding tensor 'b' per the index) is missing");
  st_open_fails(write_text("sh/notin.index.json",
                           "{\"weight_map\":{\"a\":\"s1.safetensors\","
                           "\"c\":\"s1.safetensors\"}}"), QZ_ERR_FORMAT,
                "the index maps tensor 'c' to");
  st_open_fails(write_text("sh/wrong.index.json",
                           "{\"weight_map\":{\"a\":\"s1.safetensors\","
                           "\"b\":\"s1.safetensors\",\"x\":\"s2.safetensors\"}}"),
                QZ_ERR_FORMAT, "the index maps tensor 'b' to");
  st_open_fails(write_text("sh/twice.index.json",
                           "{\"weight_map\":{\"a\":\"s1.safetensors\","
                           "\"b\":\"s3.safetensors\"}}"), QZ_ERR_FORMAT,
                "tensor 'a' appears twice");
  st_open_fails(write_text("sh/nomap.index.json", "{\"metadata\":{}}"), QZ_ERR_FORMAT,
                "missing or empty 'weight_map'");
  st_open_fails(write_text("sh/escape.index.json",
                           "{\"weight_map\":{\"a\":\"../../etc/passwd\"}}"),
                QZ_ERR_FORMAT, "must be a relative shard file name");
  st_open_fails(write_text("sh/bad.index.json", "{\"weight_map\": "), QZ_ERR_FORMAT,
                "cannot read the shard index");
}

static int cfg_fails(const char *json, int status, const char *phrase) {
  qz_model_config c;
  return QZT_FAILS(qz_config_parse(json, strlen(json), "bad/config.json", &c),
                   status, phrase);
}

#define CBASE "\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64," \
              "\"num_hidden_layers\":2,\"vocab_size\":10"

static void config_cases(void) {
  cfg_fails("{" CBASE ",\"num_attention_heads\":8}", QZ_ERR_FORMAT,
            "bad/config.json: required key 'intermediate_size' is missing");
  cfg_fails("{\"architectures\":[\"LlamaForCausalLM\"],\"intermediate_size\":5,"
            "\"num_hidden_layers\":2,\"vocab_size\":10,\"num_attention_heads\":8}",
            QZ_ERR_FORMAT, "required key 'hidden_size' is missing");
  cfg_fails("{" CBASE ",\"num_attention_heads\":8,\"intermediate_size\":-5}",
            QZ_ERR_FORMAT, "'intermediate_size' must be positive, found -5");
  cfg_fails("{" CBASE ",\"num_attention_heads\":0,\"intermediate_size\":5}",
            QZ_ERR_FORMAT, "'num_attention_heads' must be positive, found 0");
  cfg_fails("{" CBASE ",\"num_attention_heads\":8,\"num_key_value_heads\":3,"
            "\"intermediate_size\":5}", QZ_ERR_FORMAT,
            "num_attention_heads 8 is not a multiple of num_key_value_heads 3");
  cfg_fails("{" CBASE ",\"num_attention_heads\":\"8\",\"intermediate_size\":5}",
            QZ_ERR_FORMAT, "'num_attention_heads' must be an integer");
  cfg_fails("{\"architectures\":[\"GPT2LMHeadModel\"],\"hidden_size\":64}",
            QZ_ERR_UNSUPPORTED, "unsupported architecture 'GPT2LMHeadModel' "
            "(supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
            "Qwen3ForCausalLM, MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM)");
  cfg_fails("{\"hidden_size\":64}", QZ_ERR_FORMAT,
            "required key 'architectures' is missing");
  cfg_fails("{" CBASE ",\"num_attention_heads\":8,\"intermediate_size\":5,"
            "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}}",
            QZ_ERR_UNSUPPORTED, "rope_scaling type 'yarn' is not supported");
  cfg_fails("{" CBASE ",\"num_attention_heads\":8,\"intermediate_size\":5,"
            "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
            "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0}}", QZ_ERR_FORMAT,
            "required key 'original_max_position_embeddings' is missing");
  cfg_fails("{" CBASE ",\"num_attention_heads\":8,\"intermediate_size\":5,"
            "\"hidden_act\":\"gelu\"}", QZ_ERR_UNSUPPORTED,
            "hidden_act 'gelu' is not supported");
  cfg_fails("{" CBASE ",\"num_attention_heads\":7,\"intermediate_size\":5}",
            QZ_ERR_FORMAT, "hidden_size 64 is not a multiple of num_attention_heads 7");
  cfg_fails("{\"hidden_size\": 64,", QZ_ERR_FORMAT, "bad/config.json: not valid JSON");
  cfg_fails("[1]", QZ_ERR_FORMAT, "config must be a JSON object");
  qz_model_config c;
  QZT_FAILS(qz_config_load(tpath("nonexistent-dir"), &c), QZ_ERR_IO, "cannot open");
}

static int tok_fails(const char *json, int status, const char *phrase) {
  qz_tokenizer *t = NULL;
  int ok = QZT_FAILS(qz_tokenizer_load_json(json, strlen(json), "bad/tokenizer.json", &t),
                     status, phrase);
  QZT_CHECK(t == NULL, "no tokenizer handle on failure");
  qz_tokenizer_free(&t);
  return ok;
}

#define VOCAB "\"vocab\":{\"<unk>\":0,\"a\":1,\"b\":2,\"ab\":3}"

static void tokenizer_cases(void) {
  tok_fails("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}",
            QZ_ERR_UNSUPPORTED, "tokenizer model type 'Unigram' is not supported "
            "(supported: BPE)");
  tok_fails("{\"model\":{\"type\":\"WordPiece\"," VOCAB "}}", QZ_ERR_UNSUPPORTED,
            "tokenizer model type 'WordPiece' is not supported");
  tok_fails("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},"
            "\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"}}",
            QZ_ERR_UNSUPPORTED, "pre_tokenizer type 'BertPreTokenizer' is not supported");
  tok_fails("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},"
            "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
            "\"Split\",\"pattern\":{\"Regex\":\"\\\\w+\"},\"behavior\":\"Isolated\"},"
            "{\"type\":\"ByteLevel\",\"use_regex\":false}]}}",
            QZ_ERR_UNSUPPORTED, "Split pre-tokenizer regex '\\w+' is not supported");
  tok_fails("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},"
            "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
            "\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Removed\"}]}}",
            QZ_ERR_UNSUPPORTED, "Split pre-tokenizer without a Regex pattern");
  tok_fails("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[]},"
            "\"normalizer\":{\"type\":\"Lowercase\"}}", QZ_ERR_UNSUPPORTED,
            "normalizer type 'Lowercase' is not supported");
  tok_fails("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[\"a c\"]}}",
            QZ_ERR_FORMAT, "merge 0 'a' + 'c': piece 'c' is not in the vocabulary");
  tok_fails("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[\"b a\"]}}",
            QZ_ERR_FORMAT, "the merged piece 'ba' is not in the vocabulary");
  tok_fails("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"merges\":[\"ab\"]}}",
            QZ_ERR_FORMAT, "merge 0 'ab' is not two pieces");
  tok_fails("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"unk_token\":\"<x>\"}}",
            QZ_ERR_FORMAT, "unk_token '<x>' is not in the vocabulary");
  tok_fails("{\"model\":{\"type\":\"BPE\",\"merges\":[]}}", QZ_ERR_FORMAT,
            "model has no 'vocab' object");
  tok_fails("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1}}}", QZ_ERR_FORMAT,
            "vocab entry 'a' must have an id in [0, 2^30)");
  tok_fails("{\"model\":{\"type\":\"BPE\"," VOCAB ",\"dropout\":0.1}}",
            QZ_ERR_UNSUPPORTED, "dropout is not supported");
  tok_fails("{\"model\":{\"type\":\"BPE\"," VOCAB "},\"post_processor\":{\"type\":"
            "\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},"
            "{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{}}}", QZ_ERR_FORMAT,
            "special token '<s>' has no 'ids'");
  tok_fails("{\"model\":{\"type\":\"BPE\"," VOCAB "},\"post_processor\":{\"type\":"
            "\"BertProcessing\"}}", QZ_ERR_UNSUPPORTED,
            "post_processor type 'BertProcessing' is not supported");
  tok_fails("{\"model\": {", QZ_ERR_FORMAT, "bad/tokenizer.json: not valid JSON");
  qz_tokenizer *t = NULL;
  QZT_FAILS(qz_tokenizer_load(tpath("nonexistent"), &t), QZ_ERR_IO, "cannot open");
  const char *ok = "{\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\"," VOCAB ",\"merges\":[\"a b\"]}}";
  if (QZT_OK(qz_tokenizer_load_json(ok, strlen(ok), "ok", &t))) {
    int32_t *ids = NULL;
    int64_t n = 0;
    QZT_FAILS(qz_tokenizer_encode(t, "ab\xc3", 3, 0, &ids, &n), QZ_ERR_FORMAT,
              "not valid UTF-8 at byte 2");
    QZT_FAILS(qz_tokenizer_encode(t, "\xed\xa0\x80", 3, 0, &ids, &n), QZ_ERR_FORMAT,
              "not valid UTF-8 at byte 0"); /* surrogate */
    QZT_FAILS(qz_tokenizer_encode(t, "\xc0\xaf", 2, 0, &ids, &n), QZ_ERR_FORMAT,
              "not valid UTF-8 at byte 0"); /* overlong */
    QZT_OK(qz_tokenizer_encode(t, "abxab", 5, 0, &ids, &n));
    QZT_CHECK(n == 3 && ids[0] == 3 && ids[1] == 0 && ids[2] == 3,
              "unknown char -> unk");
    free(ids);
    qz_tokenizer_free(&t);
  }
}

static void token_file_cases(void) {
  int32_t *ids = NULL;
  int64_t n = 0, nw = 0, wl = 0;
  QZT_FAILS(qz_tokens_read_bin(write_bytes("seven.bin", "1234567", 7), &ids, &n),
            QZ_ERR_FORMAT, "7 bytes is not a multiple of 4");
  QZT_FAILS(qz_tokens_read_bin(write_bytes("big.bin", "\xff\xff\xff\xff", 4), &ids, &n),
            QZ_ERR_FORMAT, "larger than 2^31-1");
  QZT_FAILS(qz_windows_read_txt(write_text("ragged.txt", "1 2 3 4\n5 6 7\n"), &ids,
                                &nw, &wl),
            QZ_ERR_FORMAT, "ragged.txt:2: window has 3 ids, the first window has 4");
  QZT_FAILS(qz_windows_read_txt(write_text("word.txt", "1 2 x 4\n"), &ids, &nw, &wl),
            QZ_ERR_FORMAT, "word.txt:1: expected a token id, found 'x'");
  QZT_FAILS(qz_windows_read_txt(write_text("neg.txt", "1 -2\n"), &ids, &nw, &wl),
            QZ_ERR_FORMAT, "expected a token id, found '-'");
  QZT_FAILS(qz_windows_read_txt(write_text("blank.txt", "\n\n"), &ids, &nw, &wl),
            QZ_ERR_FORMAT, "no token windows");
  QZT_FAILS(qz_windows_read_txt(write_text("huge.txt", "99999999999\n"), &ids, &nw, &wl),
            QZ_ERR_FORMAT, "token id too large");
  QZT_FAILS(qz_tokens_read_bin(tpath("none.bin"), &ids, &n), QZ_ERR_IO, "cannot open");
  int32_t neg[2] = {1, -1};
  QZT_FAILS(qz_tokens_write_bin(tpath("neg.bin"), neg, 2), QZ_ERR_ARG, "negative id");
  QZT_FAILS(qz_tokens_write_bin(tpath("nodir/x.bin"), neg, 1), QZ_ERR_IO,
            "cannot create");
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  const char *tmp = qzt_tmpdir();
  snprintf(g_dir, sizeof g_dir, "%s", tmp ? tmp : ".");
  const char *sh = qzt_shared();
  char real[2048];
  if (sh) snprintf(real, sizeof real, "%s/models/stories260K-hf/model.safetensors", sh);
  safetensors_cases(sh ? real : NULL);
  shard_cases();
  config_cases();
  tokenizer_cases();
  token_file_cases();
  return qzt_finish("io_badinput");
}
