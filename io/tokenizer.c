/* tokenizer.json encoder: the BPE model of Hugging Face tokenizers with the
 * pipelines of Llama-2-family (SentencePiece-style), Llama-3-family and
 * Qwen2/Qwen3-family (byte-level) models.
 *
 * Pipeline, as in the reference implementation:
 *   1. split the raw text on the added tokens with normalized=false, then
 *      normalize each piece between them and split it on the added tokens
 *      with normalized=true (by their normalized content); both splits
 *      follow the reference's leftmost-longest matching and its lstrip,
 *      rstrip and single_word rules (split_added);
 *   2. normalizers: Prepend, Replace, NFC, NFD, NFKC, NFKD (unicode_norm.c);
 *      Sequence;
 *   3. pre-tokenize into words: none, Metaspace, or byte-level (a split
 *      regex -- the Llama-3, Qwen2 or GPT-2 pattern, hand-compiled here with
 *      Unicode L/N tables from unicode_tables.h -- then each byte mapped to
 *      its printable stand-in);
 *   4. per word: one symbol per UTF-8 character (vocab piece, else byte
 *      fallback <0xNN>, else unk honouring fuse_unk; ignore_merges takes a
 *      word that is itself a piece), then apply merges in order of (rank,
 *      position) with a min-heap, O(n log n) in the word length, so a whole
 *      1 MB file as one word is fine;
 *   5. TemplateProcessing adds BOS/EOS when asked.
 * Anything else is rejected at load with a message naming it. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpiquant/error.h"
#include "mpiquant/tokenizer.h"
#include "unicode_norm.h"
#include "unicode_tables.h"

/* ---- hash maps -------------------------------------------------------------*/

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h ^ (h >> 29);
}
static uint64_t hash_u64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

typedef struct {
  int32_t *slot; /* piece id or -1 */
  size_t mask;
} str_map; /* piece string -> id; keys live in the tokenizer's piece table */

typedef struct {
  uint64_t *key; /* (a << 32 | b) + 1, 0 = empty */
  int32_t *rank, *new_id;
  size_t mask;
} pair_map;

typedef enum { NORM_PREPEND, NORM_REPLACE, NORM_UNICODE } norm_kind;
typedef struct {
  norm_kind kind;
  qz_uni_form form; /* NORM_UNICODE: NFC, NFD, NFKC or NFKD */
  char *a, *b; /* prepend: a; replace: a -> b */
  size_t la, lb;
} norm_step;

typedef enum { PRE_NONE, PRE_METASPACE, PRE_BYTELEVEL } pretok_kind;
/* The split regexes we implement (matched exactly against the file's
 * pattern string; anything else is refused). */
typedef enum { SPLIT_NONE, SPLIT_GPT2, SPLIT_LLAMA3, SPLIT_QWEN2 } split_kind;

typedef struct {
  char *s;        /* content as written in tokenizer.json */
  size_t len;
  char *ns;       /* normalized content (normalized tokens only) */
  size_t nlen;
  int32_t id;
  /* flags, as Hugging Face tokenizers applies them when splitting the text
   * on added tokens (docs/io.md) */
  int lstrip, rstrip, single_word, normalized, special;
} added_tok;

/* Trie of added-token contents: edge (node, byte) -> child in an
 * open-addressed table; node_tok[node] = added token ending there or -1.
 * Matching at a text position costs at most the longest token's length,
 * whatever the number of added tokens. */
typedef struct {
  uint64_t *key;  /* (node + 1) << 8 | byte, 0 = empty */
  int32_t *child;
  size_t mask;
  int32_t *node_tok;
  int32_t nnodes;
  size_t maxlen;  /* longest content */
  unsigned char first[256]; /* some content starts with this byte */
} tok_trie;

struct qz_tokenizer {
  char *origin;
  char **piece; /* [nvocab] UTF-8, NULL for unused ids */
  int32_t *piece_len;
  int64_t nvocab;
  str_map vmap;
  pair_map merges;
  int32_t byte_id[256]; /* <0xNN> piece ids, -1 when absent */
  int32_t ascii_id[128];
  int32_t unk_id;
  int fuse_unk, byte_fallback, ignore_merges;
  /* no pre-tokenizer, yet BPE may run word by word, a word starting at each
   * U+2581: no piece holds U+2581 after its first character, U+2581 is a
   * piece and merges are not ignored (so no merge ever joins across such a
   * boundary and the whole-text BPE gives the same ids; tokenizer_ws_split) */
  int ws_split;
  norm_step *norm;
  int nnorm;
  pretok_kind pretok;
  char meta_repl[8];
  int meta_prepend; /* 0 never, 1 always, 2 first */
  int meta_split;
  split_kind split;          /* byte-level: regex split before mapping */
  int bl_prefix_space;       /* ByteLevel add_prefix_space */
  char bl_enc[256][4];       /* byte -> UTF-8 of its printable stand-in */
  unsigned char bl_len[256];
  added_tok *added;
  int nadded;
  /* tokens with normalized=false are matched on the raw text, the others
   * (by their normalized content) on the normalized pieces between them */
  tok_trie raw_trie, norm_trie;
  int32_t prefix[8], suffix[8];
  int nprefix, nsuffix;
};

static int str_map_init(str_map *m, size_t n) {
  size_t cap = 16;
  while (cap < 2 * n + 16) cap <<= 1;
  m->slot = malloc(cap * sizeof *m->slot);
  QZ_CHECK(m->slot, QZ_ERR_MEM, "out of memory for the vocabulary map");
  memset(m->slot, 0xff, cap * sizeof *m->slot);
  m->mask = cap - 1;
  return QZ_OK;
}

static int32_t vocab_get(const qz_tokenizer *t, const char *s, size_t n) {
  size_t i = (size_t)hash_bytes(s, n) & t->vmap.mask;
  for (;;) {
    int32_t id = t->vmap.slot[i];
    if (id < 0) return -1;
    if ((size_t)t->piece_len[id] == n && memcmp(t->piece[id], s, n) == 0)
      return id;
    i = (i + 1) & t->vmap.mask;
  }
}

static void vocab_put(qz_tokenizer *t, int32_t id) {
  size_t i = (size_t)hash_bytes(t->piece[id], (size_t)t->piece_len[id]) &
             t->vmap.mask;
  while (t->vmap.slot[i] >= 0) i = (i + 1) & t->vmap.mask;
  t->vmap.slot[i] = id;
}

static int pair_map_init(pair_map *m, size_t n) {
  size_t cap = 16;
  while (cap < 2 * n + 16) cap <<= 1;
  m->key = calloc(cap, sizeof *m->key);
  m->rank = malloc(cap * sizeof *m->rank);
  m->new_id = malloc(cap * sizeof *m->new_id);
  QZ_CHECK(m->key && m->rank && m->new_id, QZ_ERR_MEM,
           "out of memory for the merge table");
  m->mask = cap - 1;
  return QZ_OK;
}

static inline uint64_t pair_key(int32_t a, int32_t b) {
  return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
}

/* Returns 0 when (a, b) is already present (the first rank wins). */
static int pair_put(pair_map *m, int32_t a, int32_t b, int32_t rank,
                    int32_t nid) {
  uint64_t k = pair_key(a, b);
  size_t i = (size_t)hash_u64(k) & m->mask;
  while (m->key[i]) {
    if (m->key[i] == k) return 0;
    i = (i + 1) & m->mask;
  }
  m->key[i] = k;
  m->rank[i] = rank;
  m->new_id[i] = nid;
  return 1;
}

static inline int pair_get(const pair_map *m, int32_t a, int32_t b,
                           int32_t *rank, int32_t *nid) {
  uint64_t k = pair_key(a, b);
  size_t i = (size_t)hash_u64(k) & m->mask;
  while (m->key[i]) {
    if (m->key[i] == k) {
      *rank = m->rank[i];
      *nid = m->new_id[i];
      return 1;
    }
    i = (i + 1) & m->mask;
  }
  return 0;
}

/* ---- loading ---------------------------------------------------------------*/

void qz_tokenizer_free(qz_tokenizer **pt) {
  if (!pt || !*pt) return;
  qz_tokenizer *t = *pt;
  if (t->piece)
    for (int64_t i = 0; i < t->nvocab; i++) free(t->piece[i]);
  free(t->piece);
  free(t->piece_len);
  free(t->vmap.slot);
  free(t->merges.key);
  free(t->merges.rank);
  free(t->merges.new_id);
  for (int i = 0; i < t->nnorm; i++) {
    free(t->norm[i].a);
    free(t->norm[i].b);
  }
  free(t->norm);
  for (int i = 0; i < t->nadded; i++) {
    free(t->added[i].s);
    free(t->added[i].ns);
  }
  free(t->added);
  tok_trie *tries[2] = {&t->raw_trie, &t->norm_trie};
  for (int i = 0; i < 2; i++) {
    free(tries[i]->key);
    free(tries[i]->child);
    free(tries[i]->node_tok);
  }
  free(t->origin);
  free(t);
  *pt = NULL;
}

static int add_norm(qz_tokenizer *t, norm_kind k, const char *a, const char *b) {
  norm_step *n = realloc(t->norm, (size_t)(t->nnorm + 1) * sizeof *n);
  QZ_CHECK(n, QZ_ERR_MEM, "out of memory");
  t->norm = n;
  norm_step *s = &t->norm[t->nnorm];
  memset(s, 0, sizeof *s);
  s->kind = k;
  s->a = strdup(a);
  s->la = strlen(a);
  if (b) {
    s->b = strdup(b);
    s->lb = strlen(b);
  }
  QZ_CHECK(s->a && (!b || s->b), QZ_ERR_MEM, "out of memory");
  t->nnorm++;
  return QZ_OK;
}

static int parse_normalizer(qz_tokenizer *t, json_t *n, int depth) {
  if (!n || json_is_null(n)) return QZ_OK;
  const char *o = t->origin;
  QZ_CHECK(json_is_object(n) && depth < 8, QZ_ERR_FORMAT,
           "%s: 'normalizer' must be null or an object", o);
  json_t *ty = json_object_get(n, "type");
  QZ_CHECK(json_is_string(ty), QZ_ERR_FORMAT, "%s: normalizer without 'type'", o);
  const char *type = json_string_value(ty);
  if (strcmp(type, "Sequence") == 0) {
    json_t *arr = json_object_get(n, "normalizers");
    QZ_CHECK(json_is_array(arr), QZ_ERR_FORMAT,
             "%s: Sequence normalizer without a 'normalizers' list", o);
    for (size_t i = 0; i < json_array_size(arr); i++)
      QZ_CALL(parse_normalizer(t, json_array_get(arr, i), depth + 1));
    return QZ_OK;
  }
  if (strcmp(type, "Prepend") == 0) {
    json_t *p = json_object_get(n, "prepend");
    QZ_CHECK(json_is_string(p), QZ_ERR_FORMAT,
             "%s: Prepend normalizer without a 'prepend' string", o);
    return add_norm(t, NORM_PREPEND, json_string_value(p), NULL);
  }
  if (strcmp(type, "Replace") == 0) {
    json_t *pat = json_object_get(n, "pattern"), *c = json_object_get(n, "content");
    json_t *s = json_is_object(pat) ? json_object_get(pat, "String") : NULL;
    QZ_CHECK(json_is_object(pat) && (s || json_object_get(pat, "Regex")),
             QZ_ERR_FORMAT, "%s: Replace normalizer without a pattern", o);
    QZ_CHECK(json_is_string(s), QZ_ERR_UNSUPPORTED,
             "%s: Replace normalizer with a Regex pattern is not supported "
             "(only String patterns)", o);
    QZ_CHECK(json_is_string(c), QZ_ERR_FORMAT,
             "%s: Replace normalizer without 'content'", o);
    QZ_CHECK(json_string_length(s) > 0, QZ_ERR_FORMAT,
             "%s: Replace normalizer with an empty pattern", o);
    return add_norm(t, NORM_REPLACE, json_string_value(s), json_string_value(c));
  }
  static const char *forms[] = {"NFC", "NFD", "NFKC", "NFKD"};
  static const qz_uni_form form_of[] = {QZ_UNI_NFC, QZ_UNI_NFD, QZ_UNI_NFKC, QZ_UNI_NFKD};
  for (int i = 0; i < 4; i++)
    if (strcmp(type, forms[i]) == 0) {
      QZ_CALL(add_norm(t, NORM_UNICODE, "", NULL));
      t->norm[t->nnorm - 1].form = form_of[i];
      return QZ_OK;
    }
  QZ_FAIL(QZ_ERR_UNSUPPORTED,
          "%s: normalizer type '%s' is not supported (supported: Sequence, "
          "Prepend, Replace, NFC, NFD, NFKC, NFKD)", o, type);
}

/* Regex strings of the split pre-tokenizers we implement, as they appear in
 * tokenizer.json (after JSON unescaping). */
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* GPT-2's reversible byte -> printable code point map. */
static void bytelevel_init(qz_tokenizer *t) {
  int extra = 0;
  for (int b = 0; b < 256; b++) {
    int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    unsigned cp = keep ? (unsigned)b : 256u + (unsigned)extra++;
    if (cp < 0x80) {
      t->bl_enc[b][0] = (char)cp;
      t->bl_len[b] = 1;
    } else { /* < 0x800 */
      t->bl_enc[b][0] = (char)(0xc0 | (cp >> 6));
      t->bl_enc[b][1] = (char)(0x80 | (cp & 0x3f));
      t->bl_len[b] = 2;
    }
  }
}

static int parse_split(qz_tokenizer *t, json_t *p) {
  const char *o = t->origin;
  json_t *pat = json_object_get(p, "pattern");
  json_t *re = json_is_object(pat) ? json_object_get(pat, "Regex") : NULL;
  json_t *beh = json_object_get(p, "behavior"), *inv = json_object_get(p, "invert");
  QZ_CHECK(json_is_string(re), QZ_ERR_UNSUPPORTED,
           "%s: Split pre-tokenizer without a Regex pattern is not supported", o);
  QZ_CHECK(json_is_string(beh) && strcmp(json_string_value(beh), "Isolated") == 0 &&
               !json_is_true(inv),
           QZ_ERR_UNSUPPORTED, "%s: Split pre-tokenizer: only behavior Isolated "
           "without invert is supported", o);
  const char *r = json_string_value(re);
  if (strcmp(r, RE_LLAMA3) == 0) t->split = SPLIT_LLAMA3;
  else if (strcmp(r, RE_QWEN2) == 0) t->split = SPLIT_QWEN2;
  else if (strcmp(r, RE_GPT2) == 0) t->split = SPLIT_GPT2;
  else
    QZ_FAIL(QZ_ERR_UNSUPPORTED, "%s: Split pre-tokenizer regex '%.80s' is not "
            "supported (supported: the Llama-3, Qwen2 and GPT-2 patterns)", o, r);
  return QZ_OK;
}

static int parse_pretokenizer(qz_tokenizer *t, json_t *p) {
  const char *o = t->origin;
  t->pretok = PRE_NONE;
  if (!p || json_is_null(p)) return QZ_OK;
  json_t *ty = json_is_object(p) ? json_object_get(p, "type") : NULL;
  QZ_CHECK(json_is_string(ty), QZ_ERR_FORMAT,
           "%s: 'pre_tokenizer' must be null or an object with a 'type'", o);
  const char *type = json_string_value(ty);
  if (strcmp(type, "Metaspace") == 0) {
    json_t *r = json_object_get(p, "replacement");
    const char *repl = json_is_string(r) ? json_string_value(r) : "\xe2\x96\x81";
    QZ_CHECK(strlen(repl) < sizeof t->meta_repl && *repl, QZ_ERR_FORMAT,
             "%s: Metaspace replacement must be one character", o);
    snprintf(t->meta_repl, sizeof t->meta_repl, "%s", repl);
    t->meta_prepend = 1;
    json_t *ps = json_object_get(p, "prepend_scheme");
    json_t *aps = json_object_get(p, "add_prefix_space");
    if (json_is_string(ps)) {
      const char *s = json_string_value(ps);
      t->meta_prepend = strcmp(s, "never") == 0 ? 0 : strcmp(s, "first") == 0 ? 2 : 1;
    } else if (json_is_boolean(aps)) {
      t->meta_prepend = json_is_true(aps);
    }
    json_t *sp = json_object_get(p, "split");
    t->meta_split = sp ? json_is_true(sp) : 1;
    t->pretok = PRE_METASPACE;
    return QZ_OK;
  }
  /* Byte-level BPE: ByteLevel (use_regex: the GPT-2 split), or a Sequence
   * of a regex Split (Llama-3, Qwen2) and ByteLevel without its regex. */
  json_t *items = NULL;
  if (strcmp(type, "Sequence") == 0) {
    items = json_object_get(p, "pretokenizers");
    QZ_CHECK(json_is_array(items), QZ_ERR_FORMAT,
             "%s: Sequence pre_tokenizer without 'pretokenizers'", o);
  }
  size_t n = items ? json_array_size(items) : 1;
  int have_bl = 0;
  for (size_t i = 0; i < n; i++) {
    json_t *it = items ? json_array_get(items, i) : p;
    json_t *ity = json_is_object(it) ? json_object_get(it, "type") : NULL;
    const char *itype = json_is_string(ity) ? json_string_value(ity) : "?";
    if (strcmp(itype, "ByteLevel") == 0 && !have_bl) {
      json_t *ur = json_object_get(it, "use_regex");
      if (!ur || json_is_true(ur)) {
        QZ_CHECK(t->split == SPLIT_NONE, QZ_ERR_UNSUPPORTED,
                 "%s: two regex splits in the pre_tokenizer", o);
        t->split = SPLIT_GPT2;
      }
      t->bl_prefix_space = json_is_true(json_object_get(it, "add_prefix_space"));
      have_bl = 1;
    } else if (strcmp(itype, "Split") == 0 && !have_bl && t->split == SPLIT_NONE) {
      QZ_CALL(parse_split(t, it));
    } else {
      QZ_FAIL(QZ_ERR_UNSUPPORTED,
              "%s: pre_tokenizer type '%s' is not supported (supported: null, "
              "Metaspace, ByteLevel, Sequence of a Split regex and ByteLevel)",
              o, items ? itype : type);
    }
  }
  QZ_CHECK(have_bl, QZ_ERR_UNSUPPORTED, "%s: a Split pre-tokenizer without "
           "ByteLevel is not supported", o);
  t->pretok = PRE_BYTELEVEL;
  bytelevel_init(t);
  return QZ_OK;
}

static int parse_template(qz_tokenizer *t, json_t *p) {
  const char *o = t->origin;
  json_t *single = json_object_get(p, "single"),
         *special = json_object_get(p, "special_tokens");
  QZ_CHECK(json_is_array(single), QZ_ERR_FORMAT,
           "%s: TemplateProcessing without a 'single' template", o);
  int seen_seq = 0;
  for (size_t i = 0; i < json_array_size(single); i++) {
    json_t *it = json_array_get(single, i);
    json_t *sp = json_object_get(it, "SpecialToken");
    if (json_object_get(it, "Sequence")) {
      seen_seq = 1;
      continue;
    }
    json_t *name = json_is_object(sp) ? json_object_get(sp, "id") : NULL;
    QZ_CHECK(json_is_string(name), QZ_ERR_FORMAT,
             "%s: TemplateProcessing item %zu is neither SpecialToken nor "
             "Sequence", o, i);
    json_t *def = json_is_object(special)
                      ? json_object_get(special, json_string_value(name)) : NULL;
    json_t *ids = json_is_object(def) ? json_object_get(def, "ids") : NULL;
    QZ_CHECK(json_is_array(ids), QZ_ERR_FORMAT,
             "%s: TemplateProcessing special token '%s' has no 'ids' in "
             "special_tokens", o, json_string_value(name));
    for (size_t k = 0; k < json_array_size(ids); k++) {
      json_t *v = json_array_get(ids, k);
      QZ_CHECK(json_is_integer(v) && json_integer_value(v) >= 0 &&
                   json_integer_value(v) < t->nvocab,
               QZ_ERR_FORMAT, "%s: special token '%s' has an id outside the "
               "vocabulary", o, json_string_value(name));
      int32_t *dst = seen_seq ? t->suffix : t->prefix;
      int *cnt = seen_seq ? &t->nsuffix : &t->nprefix;
      QZ_CHECK(*cnt < 8, QZ_ERR_UNSUPPORTED, "%s: more than 8 template tokens", o);
      dst[(*cnt)++] = (int32_t)json_integer_value(v);
    }
  }
  return QZ_OK;
}

static int parse_post(qz_tokenizer *t, json_t *p, int depth) {
  const char *o = t->origin;
  if (!p || json_is_null(p)) return QZ_OK;
  json_t *ty = json_is_object(p) ? json_object_get(p, "type") : NULL;
  QZ_CHECK(json_is_string(ty) && depth < 8, QZ_ERR_FORMAT,
           "%s: 'post_processor' must be null or an object with a 'type'", o);
  const char *type = json_string_value(ty);
  if (strcmp(type, "TemplateProcessing") == 0) return parse_template(t, p);
  if (strcmp(type, "ByteLevel") == 0) return QZ_OK; /* offsets only */
  if (strcmp(type, "Sequence") == 0) {
    json_t *arr = json_object_get(p, "processors");
    QZ_CHECK(json_is_array(arr), QZ_ERR_FORMAT,
             "%s: Sequence post_processor without 'processors'", o);
    for (size_t i = 0; i < json_array_size(arr); i++)
      QZ_CALL(parse_post(t, json_array_get(arr, i), depth + 1));
    return QZ_OK;
  }
  QZ_FAIL(QZ_ERR_UNSUPPORTED,
          "%s: post_processor type '%s' is not supported (supported: null, "
          "TemplateProcessing, ByteLevel, Sequence)", o, type);
}

static int set_piece(qz_tokenizer *t, int64_t id, const char *s, size_t n) {
  if (t->piece[id]) return 0;
  t->piece[id] = malloc(n + 1);
  if (!t->piece[id]) return -1;
  memcpy(t->piece[id], s, n);
  t->piece[id][n] = 0;
  t->piece_len[id] = (int32_t)n;
  return 1;
}

/* Room for every node of `bytes` bytes of added tokens (+ the root). */
static int trie_init(tok_trie *tr, size_t bytes) {
  size_t cap = 16;
  while (cap < 2 * bytes + 16) cap <<= 1;
  tr->key = calloc(cap, sizeof *tr->key);
  tr->child = malloc(cap * sizeof *tr->child);
  tr->node_tok = malloc((bytes + 1) * sizeof *tr->node_tok);
  QZ_CHECK(tr->key && tr->child && tr->node_tok, QZ_ERR_MEM,
           "out of memory for the added-token index");
  tr->mask = cap - 1;
  tr->node_tok[0] = -1;
  tr->nnodes = 1;
  return QZ_OK;
}

static size_t trie_slot(const tok_trie *tr, uint64_t key) {
  uint64_t h = key * 0x9E3779B97F4A7C15ULL;
  return (size_t)(h >> 17) & tr->mask;
}

/* Child of node on byte c, or -1. */
static int32_t trie_next(const tok_trie *tr, int32_t node, unsigned char c) {
  uint64_t key = ((uint64_t)node + 1) << 8 | c;
  for (size_t i = trie_slot(tr, key);; i = (i + 1) & tr->mask) {
    if (tr->key[i] == key) return tr->child[i];
    if (tr->key[i] == 0) return -1;
  }
}

/* Insert token k (s, n > 0); a duplicate content keeps the first token. */
static void trie_add(tok_trie *tr, const char *s, size_t n, int k) {
  int32_t node = 0;
  for (size_t j = 0; j < n; j++) {
    unsigned char c = (unsigned char)s[j];
    int32_t nx = trie_next(tr, node, c);
    if (nx < 0) {
      uint64_t key = ((uint64_t)node + 1) << 8 | c;
      size_t i = trie_slot(tr, key);
      while (tr->key[i]) i = (i + 1) & tr->mask;
      nx = tr->nnodes++;
      tr->node_tok[nx] = -1;
      tr->key[i] = key;
      tr->child[i] = nx;
    }
    node = nx;
  }
  if (tr->node_tok[node] < 0) tr->node_tok[node] = k;
  if (n > tr->maxlen) tr->maxlen = n;
  tr->first[(unsigned char)s[0]] = 1;
}

/* The longest added token at text[0..len), or -1; *mlen its length. */
static int trie_match(const tok_trie *tr, const char *text, size_t len,
                      size_t *mlen) {
  int best = -1;
  int32_t node = 0;
  for (size_t j = 0; j < len && j < tr->maxlen; j++) {
    node = trie_next(tr, node, (unsigned char)text[j]);
    if (node < 0) break;
    if (tr->node_tok[node] >= 0) {
      best = tr->node_tok[node];
      *mlen = j + 1;
    }
  }
  return best;
}

/* lstrip / rstrip / single_word / special default to false; normalized to
 * !special (as Hugging Face's AddedToken::from does). */
static int added_flags(const qz_tokenizer *t, json_t *a, size_t i, added_tok *at) {
  const char *names[] = {"lstrip", "rstrip", "single_word", "special", "normalized"};
  int *dst[] = {&at->lstrip, &at->rstrip, &at->single_word, &at->special,
                &at->normalized};
  for (int k = 0; k < 5; k++) {
    json_t *v = json_object_get(a, names[k]);
    QZ_CHECK(!v || json_is_boolean(v), QZ_ERR_FORMAT,
             "%s: added_tokens[%zu] '%s': '%s' must be true or false",
             t->origin, i, at->s, names[k]);
    *dst[k] = v ? json_is_true(v) : k == 4 ? !at->special : 0;
  }
  return QZ_OK;
}

static int parse_model(qz_tokenizer *t, json_t *root) {
  const char *o = t->origin;
  json_t *m = json_object_get(root, "model");
  QZ_CHECK(json_is_object(m), QZ_ERR_FORMAT, "%s: missing 'model' object", o);
  json_t *ty = json_object_get(m, "type");
  if (json_is_string(ty))
    QZ_CHECK(strcmp(json_string_value(ty), "BPE") == 0, QZ_ERR_UNSUPPORTED,
             "%s: tokenizer model type '%s' is not supported (supported: BPE)",
             o, json_string_value(ty));
  json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges");
  QZ_CHECK(json_is_object(vocab) && json_object_size(vocab) > 0, QZ_ERR_FORMAT,
           "%s: model has no 'vocab' object", o);
  QZ_CHECK(!merges || json_is_null(merges) || json_is_array(merges),
           QZ_ERR_FORMAT, "%s: model 'merges' must be a list", o);
  json_t *dr = json_object_get(m, "dropout");
  QZ_CHECK(!dr || json_is_null(dr) || (json_is_number(dr) && json_number_value(dr) == 0),
           QZ_ERR_UNSUPPORTED, "%s: BPE dropout is not supported (not "
           "deterministic)", o);
  json_t *csp = json_object_get(m, "continuing_subword_prefix"),
         *eow = json_object_get(m, "end_of_word_suffix");
  QZ_CHECK((!csp || json_is_null(csp) || json_string_length(csp) == 0) &&
               (!eow || json_is_null(eow) || json_string_length(eow) == 0),
           QZ_ERR_UNSUPPORTED, "%s: continuing_subword_prefix / "
           "end_of_word_suffix are not supported", o);
  t->fuse_unk = json_is_true(json_object_get(m, "fuse_unk"));
  t->byte_fallback = json_is_true(json_object_get(m, "byte_fallback"));
  t->ignore_merges = json_is_true(json_object_get(m, "ignore_merges"));

  /* id range over vocab and added tokens */
  int64_t maxid = -1;
  const char *k;
  json_t *v;
  json_object_foreach(vocab, k, v) {
    QZ_CHECK(json_is_integer(v) && json_integer_value(v) >= 0 &&
                 json_integer_value(v) < (1 << 30),
             QZ_ERR_FORMAT, "%s: vocab entry '%s' must have an id in [0, 2^30)",
             o, k);
    if (json_integer_value(v) > maxid) maxid = json_integer_value(v);
  }
  json_t *added = json_object_get(root, "added_tokens");
  QZ_CHECK(!added || json_is_null(added) || json_is_array(added), QZ_ERR_FORMAT,
           "%s: 'added_tokens' must be a list", o);
  for (size_t i = 0; i < json_array_size(added); i++) {
    json_t *a = json_array_get(added, i);
    json_t *id = json_object_get(a, "id"), *c = json_object_get(a, "content");
    QZ_CHECK(json_is_integer(id) && json_integer_value(id) >= 0 &&
                 json_integer_value(id) < (1 << 30) && json_is_string(c) &&
                 json_string_length(c) > 0,
             QZ_ERR_FORMAT, "%s: added_tokens[%zu] needs an 'id' in [0, 2^30) "
             "and a non-empty 'content'", o, i);
    if (json_integer_value(id) > maxid) maxid = json_integer_value(id);
  }
  /* tables are indexed by id: ids must be about as dense as the entries
   * (a 61-byte file with one id 2^30-1 must not allocate 8 GiB) */
  size_t nent = json_object_size(vocab) + json_array_size(added);
  QZ_CHECK((uint64_t)maxid < 2 * (uint64_t)nent + QZ_TOK_ID_SLACK, QZ_ERR_FORMAT,
           "%s: token id %lld is far beyond the %zu vocabulary and added entries "
           "(ids must be below 2 x entries + %d)", o, (long long)maxid, nent,
           QZ_TOK_ID_SLACK);
  t->nvocab = maxid + 1;
  t->piece = calloc((size_t)t->nvocab, sizeof *t->piece);
  t->piece_len = calloc((size_t)t->nvocab, sizeof *t->piece_len);
  QZ_CHECK(t->piece && t->piece_len, QZ_ERR_MEM, "out of memory");
  QZ_CALL(str_map_init(&t->vmap, json_object_size(vocab) + json_array_size(added)));
  json_object_foreach(vocab, k, v) {
    int64_t id = json_integer_value(v);
    size_t n = strlen(k);
    QZ_CHECK(vocab_get(t, k, n) < 0, QZ_ERR_FORMAT,
             "%s: vocab piece '%s' appears twice", o, k);
    int r = set_piece(t, id, k, n);
    QZ_CHECK(r >= 0, QZ_ERR_MEM, "out of memory");
    QZ_CHECK(r == 1, QZ_ERR_FORMAT, "%s: vocab id %lld is used by '%s' and "
             "'%s'", o, (long long)id, t->piece[id], k);
    vocab_put(t, (int32_t)id);
  }
  /* added tokens (their tries are built once the normalizer is known) */
  t->added = calloc(json_array_size(added) + 1, sizeof *t->added);
  QZ_CHECK(t->added, QZ_ERR_MEM, "out of memory");
  for (size_t i = 0; i < json_array_size(added); i++) {
    size_t n = json_string_length(json_object_get(json_array_get(added, i), "content"));
    QZ_CHECK(n <= QZ_TOK_ADDED_MAX_BYTES, QZ_ERR_FORMAT,
             "%s: added_tokens[%zu] is %zu bytes long (at most %d)", o, i, n,
             QZ_TOK_ADDED_MAX_BYTES);
  }
  for (size_t i = 0; i < json_array_size(added); i++) {
    json_t *a = json_array_get(added, i);
    int64_t id = json_integer_value(json_object_get(a, "id"));
    const char *c = json_string_value(json_object_get(a, "content"));
    size_t n = strlen(c);
    int r = set_piece(t, id, c, n);
    QZ_CHECK(r >= 0, QZ_ERR_MEM, "out of memory");
    if (r == 1) vocab_put(t, (int32_t)id);
    added_tok *at = &t->added[t->nadded++];
    at->s = strdup(c);
    at->len = n;
    at->id = (int32_t)id;
    QZ_CHECK(at->s, QZ_ERR_MEM, "out of memory");
    QZ_CALL(added_flags(t, a, i, at));
  }
  json_t *unk = json_object_get(m, "unk_token");
  t->unk_id = -1;
  if (json_is_string(unk)) {
    t->unk_id = vocab_get(t, json_string_value(unk), json_string_length(unk));
    QZ_CHECK(t->unk_id >= 0, QZ_ERR_FORMAT, "%s: unk_token '%s' is not in the "
             "vocabulary", o, json_string_value(unk));
  }
  for (int b = 0; b < 256; b++) {
    char nm[8];
    snprintf(nm, sizeof nm, "<0x%02X>", b);
    t->byte_id[b] = vocab_get(t, nm, 6);
  }
  for (int c = 0; c < 128; c++) {
    char ch = (char)c;
    t->ascii_id[c] = vocab_get(t, &ch, 1);
  }
  /* merges: "a b" strings or [a, b] pairs; rank = position */
  size_t nm = json_array_size(merges);
  QZ_CALL(pair_map_init(&t->merges, nm));
  char *cat = NULL;
  size_t catcap = 0;
  int st = QZ_OK;
  for (size_t i = 0; i < nm; i++) {
    json_t *e = json_array_get(merges, i);
    const char *a, *b;
    size_t la, lb;
    if (json_is_string(e)) {
      a = json_string_value(e);
      const char *sp = strchr(a, ' ');
      QZ_CHECK_DONE(sp && !strchr(sp + 1, ' '), QZ_ERR_FORMAT,
                    "%s: merge %zu '%s' is not two pieces separated by one "
                    "space", o, i, a);
      la = (size_t)(sp - a);
      b = sp + 1;
      lb = strlen(b);
    } else {
      QZ_CHECK_DONE(json_is_array(e) && json_array_size(e) == 2 &&
                        json_is_string(json_array_get(e, 0)) &&
                        json_is_string(json_array_get(e, 1)),
                    QZ_ERR_FORMAT, "%s: merge %zu must be \"a b\" or [\"a\", \"b\"]",
                    o, i);
      a = json_string_value(json_array_get(e, 0));
      b = json_string_value(json_array_get(e, 1));
      la = strlen(a);
      lb = strlen(b);
    }
    int32_t ia = vocab_get(t, a, la), ib = vocab_get(t, b, lb);
    QZ_CHECK_DONE(ia >= 0 && ib >= 0, QZ_ERR_FORMAT,
                  "%s: merge %zu '%.*s' + '%.*s': piece '%.*s' is not in the "
                  "vocabulary", o, i, (int)la, a, (int)lb, b,
                  ia < 0 ? (int)la : (int)lb, ia < 0 ? a : b);
    if (la + lb + 1 > catcap) {
      catcap = 2 * (la + lb + 1);
      char *c2 = realloc(cat, catcap);
      QZ_CHECK_DONE(c2, QZ_ERR_MEM, "out of memory");
      cat = c2;
    }
    memcpy(cat, a, la);
    memcpy(cat + la, b, lb);
    int32_t nid = vocab_get(t, cat, la + lb);
    QZ_CHECK_DONE(nid >= 0, QZ_ERR_FORMAT,
                  "%s: merge %zu '%.*s' + '%.*s': the merged piece '%.*s' is "
                  "not in the vocabulary", o, i, (int)la, a, (int)lb, b,
                  (int)(la + lb), cat);
    pair_put(&t->merges, ia, ib, (int32_t)i, nid);
  }
  /* merged pieces are vocabulary pieces: when none holds U+2581 past its
   * first byte, a merge never spans the start of a U+2581 word */
  t->ws_split = !t->ignore_merges && vocab_get(t, "\xE2\x96\x81", 3) >= 0;
  for (int64_t i = 0; i < t->nvocab && t->ws_split; i++)
    for (int32_t j = 1; t->piece[i] && j + 3 <= t->piece_len[i] && t->ws_split; j++)
      t->ws_split = memcmp(t->piece[i] + j, "\xE2\x96\x81", 3) != 0;
done:
  free(cat);
  return st;
}

static int normalize(const qz_tokenizer *t, const char *seg, size_t n,
                     char **buf, size_t *cap, size_t *outlen);

/* The raw and the normalized trie of added tokens; normalized tokens are
 * matched by their content passed through the normalizer (so with NFC a
 * decomposed "e\u0301" token matches a precomposed one in the text). */
static int build_added_tries(qz_tokenizer *t) {
  size_t bytes[2] = {1, 1};
  for (int i = 0; i < t->nadded; i++) {
    added_tok *a = &t->added[i];
    if (a->normalized) {
      size_t cap = 0;
      QZ_CALL(normalize(t, a->s, a->len, &a->ns, &cap, &a->nlen));
    }
    bytes[a->normalized] += a->normalized ? a->nlen : a->len;
  }
  QZ_CALL(trie_init(&t->raw_trie, bytes[0]));
  QZ_CALL(trie_init(&t->norm_trie, bytes[1]));
  for (int i = 0; i < t->nadded; i++) {
    added_tok *a = &t->added[i];
    if (!a->normalized) trie_add(&t->raw_trie, a->s, a->len, i);
    else if (a->nlen > 0) trie_add(&t->norm_trie, a->ns, a->nlen, i);
  }
  return QZ_OK;
}

static int parse_tokenizer(qz_tokenizer *t, const char *json, size_t len) {
  json_error_t e;
  json_t *root = json_loadb(json, len, 0, &e);
  QZ_CHECK(root, QZ_ERR_FORMAT, "%s: not valid JSON: %s (line %d column %d)",
           t->origin, e.text, e.line, e.column);
  int st = QZ_OK;
  QZ_CHECK_DONE(json_is_object(root), QZ_ERR_FORMAT,
                "%s: tokenizer.json must be a JSON object", t->origin);
  QZ_CALL_DONE(parse_model(t, root));
  QZ_CALL_DONE(parse_normalizer(t, json_object_get(root, "normalizer"), 0));
  QZ_CALL_DONE(build_added_tries(t));
  QZ_CALL_DONE(parse_pretokenizer(t, json_object_get(root, "pre_tokenizer")));
  QZ_CALL_DONE(parse_post(t, json_object_get(root, "post_processor"), 0));
done:
  json_decref(root);
  return st;
}

int qz_tokenizer_load_json(const char *json, size_t len, const char *origin,
                           qz_tokenizer **out) {
  *out = NULL;
  qz_tokenizer *t = calloc(1, sizeof *t);
  QZ_CHECK(t, QZ_ERR_MEM, "out of memory");
  t->origin = strdup(origin ? origin : "tokenizer.json");
  int st = t->origin ? parse_tokenizer(t, json, len)
                     : qz_error_set(QZ_ERR_MEM, __FILE__, __LINE__, __func__, "oom");
  if (st) {
    qz_error_trace(__FILE__, __LINE__, __func__);
    qz_tokenizer_free(&t);
    return st;
  }
  *out = t;
  return QZ_OK;
}

int qz_tokenizer_load(const char *path, qz_tokenizer **out) {
  *out = NULL;
  QZ_CHECK(path && *path, QZ_ERR_ARG, "qz_tokenizer_load: empty path");
  char buf[4096];
  struct stat sb;
  if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
    snprintf(buf, sizeof buf, "%s/tokenizer.json", path);
  else
    snprintf(buf, sizeof buf, "%s", path);
  char *data = NULL;
  size_t len = 0;
  QZ_CALL(qz_read_file(buf, &data, &len));
  int st = qz_tokenizer_load_json(data, len, buf, out);
  free(data);
  QZ_CALL(st);
  return QZ_OK;
}

int64_t qz_tokenizer_vocab_size(const qz_tokenizer *t) { return t ? t->nvocab : 0; }

const char *qz_tokenizer_piece(const qz_tokenizer *t, int32_t id) {
  return t && id >= 0 && id < t->nvocab ? t->piece[id] : NULL;
}

int32_t qz_tokenizer_piece_id(const qz_tokenizer *t, const char *piece) {
  return t && piece ? vocab_get(t, piece, strlen(piece)) : -1;
}

/* ---- encoding --------------------------------------------------------------*/

typedef struct {
  int32_t *v;
  int64_t n, cap;
} id_vec;

static int push(id_vec *o, int32_t id) {
  if (o->n == o->cap) {
    int64_t cap = o->cap ? 2 * o->cap : 1024;
    int32_t *v = realloc(o->v, (size_t)cap * sizeof *v);
    QZ_CHECK(v, QZ_ERR_MEM, "out of memory for %lld token ids", (long long)cap);
    o->v = v;
    o->cap = cap;
  }
  o->v[o->n++] = id;
  return QZ_OK;
}

/* Byte length of the UTF-8 character at s (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  uint32_t cp;
  return qz_uni_decode(s, n, &cp);
}

typedef struct {
  int32_t rank, pos, new_id;
} merge_ev;

static inline int ev_less(const merge_ev *a, const merge_ev *b) {
  return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

typedef struct {
  merge_ev *h;
  int64_t n, cap;
} ev_heap;

static int heap_push(ev_heap *q, merge_ev e) {
  if (q->n == q->cap) {
    int64_t cap = q->cap ? 2 * q->cap : 1024;
    merge_ev *h = realloc(q->h, (size_t)cap * sizeof *h);
    QZ_CHECK(h, QZ_ERR_MEM, "out of memory for the merge queue");
    q->h = h;
    q->cap = cap;
  }
  int64_t i = q->n++;
  while (i > 0) {
    int64_t p = (i - 1) / 2;
    if (!ev_less(&e, &q->h[p])) break;
    q->h[i] = q->h[p];
    i = p;
  }
  q->h[i] = e;
  return QZ_OK;
}

static merge_ev heap_pop(ev_heap *q) {
  merge_ev top = q->h[0], last = q->h[--q->n];
  int64_t i = 0;
  for (;;) {
    int64_t c = 2 * i + 1;
    if (c >= q->n) break;
    if (c + 1 < q->n && ev_less(&q->h[c + 1], &q->h[c])) c++;
    if (!ev_less(&q->h[c], &last)) break;
    q->h[i] = q->h[c];
    i = c;
  }
  if (q->n > 0) q->h[i] = last;
  return top;
}

/* Scratch reused across words of one encode call. */
typedef struct {
  int32_t *c, *prev, *next, *len; /* symbols */
  int64_t cap;
  ev_heap q;
} bpe_scratch;

static int scratch_reserve(bpe_scratch *s, int64_t n) {
  if (n <= s->cap) return QZ_OK;
  int64_t cap = n + n / 2 + 64;
  int32_t *a = realloc(s->c, (size_t)cap * 4), *b = NULL, *c = NULL, *d = NULL;
  if (a) s->c = a;
  b = realloc(s->prev, (size_t)cap * 4);
  if (b) s->prev = b;
  c = realloc(s->next, (size_t)cap * 4);
  if (c) s->next = c;
  d = realloc(s->len, (size_t)cap * 4);
  if (d) s->len = d;
  QZ_CHECK(a && b && c && d, QZ_ERR_MEM, "out of memory for %lld symbols",
           (long long)cap);
  s->cap = cap;
  return QZ_OK;
}

static int add_sym(bpe_scratch *s, int64_t *n, int32_t id, int32_t len) {
  QZ_CALL(scratch_reserve(s, *n + 1));
  s->c[*n] = id;
  s->len[*n] = len;
  (*n)++;
  return QZ_OK;
}

/* One word (already normalized): characters -> symbols -> merges -> ids. */
static int bpe_word(const qz_tokenizer *t, const char *w, size_t n,
                    bpe_scratch *s, id_vec *out) {
  if (n == 0) return QZ_OK;
  if (t->ignore_merges) {
    int32_t id = vocab_get(t, w, n);
    if (id >= 0) return push(out, id);
  }
  int64_t ns = 0;
  int32_t unk_len = 0; /* pending unk run (bytes), 0 = none */
  for (size_t i = 0; i < n;) {
    const unsigned char *u = (const unsigned char *)w + i;
    size_t cl = u[0] < 0x80 ? 1 : utf8_len(u, n - i);
    QZ_CHECK(cl > 0, QZ_ERR_FORMAT, "input is not valid UTF-8");
    int32_t id = cl == 1 ? t->ascii_id[u[0]] : vocab_get(t, w + i, cl);
    if (id >= 0) {
      if (unk_len) {
        QZ_CALL(add_sym(s, &ns, t->unk_id, unk_len));
        unk_len = 0;
      }
      QZ_CALL(add_sym(s, &ns, id, (int32_t)cl));
    } else {
      int have_bytes = t->byte_fallback;
      for (size_t b = 0; b < cl && have_bytes; b++)
        have_bytes = t->byte_id[u[b]] >= 0;
      if (have_bytes) {
        if (unk_len) {
          QZ_CALL(add_sym(s, &ns, t->unk_id, unk_len));
          unk_len = 0;
        }
        for (size_t b = 0; b < cl; b++)
          QZ_CALL(add_sym(s, &ns, t->byte_id[u[b]], 1));
      } else if (t->unk_id >= 0) {
        if (unk_len && !t->fuse_unk) {
          QZ_CALL(add_sym(s, &ns, t->unk_id, unk_len));
          unk_len = 0;
        }
        unk_len += (int32_t)cl;
      }
      /* no unk token and no byte piece: the character is dropped, as the
       * reference implementation does */
    }
    i += cl;
  }
  if (unk_len) QZ_CALL(add_sym(s, &ns, t->unk_id, unk_len));
  for (int64_t i = 0; i < ns; i++) {
    s->prev[i] = (int32_t)(i - 1);
    s->next[i] = i + 1 < ns ? (int32_t)(i + 1) : -1;
  }
  s->q.n = 0;
  for (int64_t i = 0; i + 1 < ns; i++) {
    merge_ev e;
    if (pair_get(&t->merges, s->c[i], s->c[i + 1], &e.rank, &e.new_id)) {
      e.pos = (int32_t)i;
      QZ_CALL(heap_push(&s->q, e));
    }
  }
  while (s->q.n > 0) {
    merge_ev e = heap_pop(&s->q);
    int32_t p = e.pos;
    if (s->len[p] == 0 || s->next[p] < 0) continue; /* symbol gone */
    int32_t r = s->next[p], rank, nid;
    /* stale entry: the pair at p changed since it was queued */
    if (!pair_get(&t->merges, s->c[p], s->c[r], &rank, &nid) || nid != e.new_id)
      continue;
    s->c[p] = e.new_id;
    s->len[p] += s->len[r];
    s->len[r] = 0;
    s->next[p] = s->next[r];
    if (s->next[r] >= 0) s->prev[s->next[r]] = p;
    merge_ev ne;
    if (s->prev[p] >= 0 &&
        pair_get(&t->merges, s->c[s->prev[p]], s->c[p], &ne.rank, &ne.new_id)) {
      ne.pos = s->prev[p];
      QZ_CALL(heap_push(&s->q, ne));
    }
    if (s->next[p] >= 0 &&
        pair_get(&t->merges, s->c[p], s->c[s->next[p]], &ne.rank, &ne.new_id)) {
      ne.pos = p;
      QZ_CALL(heap_push(&s->q, ne));
    }
  }
  for (int32_t i = 0; i >= 0 && ns > 0; i = s->next[i]) QZ_CALL(push(out, s->c[i]));
  return QZ_OK;
}

/* Apply the normalizer steps to seg into *buf (realloc'ed). */
static int normalize(const qz_tokenizer *t, const char *seg, size_t n,
                     char **buf, size_t *cap, size_t *outlen) {
  /* two ping-pong buffers keep this linear in the text length */
  char *cur = NULL, *nxt = NULL;
  size_t cl = n;
  cur = malloc(n + 1);
  QZ_CHECK(cur, QZ_ERR_MEM, "out of memory");
  memcpy(cur, seg, n);
  for (int k = 0; k < t->nnorm; k++) {
    const norm_step *s = &t->norm[k];
    if (s->kind == NORM_UNICODE) {
      size_t nl = 0, lim = QZ_TOK_NORM_GROWTH * n + QZ_TOK_NORM_SLACK;
      int st = qz_uni_normalize(cur, cl, s->form, lim, &nxt, &nl);
      free(cur);
      if (st) {
        qz_error_prefix("%s: the normalizer: ", t->origin);
        qz_error_trace(__FILE__, __LINE__, __func__);
        return st;
      }
      if (nl > lim) {
        free(nxt);
        QZ_FAIL(QZ_ERR_FORMAT, "%s: the normalizer expands a %zu-byte piece of text "
                "to %zu bytes; more than %d x + %d is refused", t->origin, n, nl,
                QZ_TOK_NORM_GROWTH, QZ_TOK_NORM_SLACK);
      }
      cur = nxt;
      nxt = NULL;
      cl = nl;
      continue;
    }
    if (s->kind == NORM_PREPEND) {
      if (cl == 0) continue; /* the reference skips empty strings */
      if (cl + s->la > QZ_TOK_NORM_GROWTH * n + QZ_TOK_NORM_SLACK) {
        free(cur);
        QZ_FAIL(QZ_ERR_FORMAT, "%s: the normalizer expands a %zu-byte piece of text "
                "beyond %d x + %d bytes (a long Prepend?)", t->origin, n,
                QZ_TOK_NORM_GROWTH, QZ_TOK_NORM_SLACK);
      }
      nxt = malloc(cl + s->la + 1);
      if (!nxt) {
        free(cur);
        QZ_FAIL(QZ_ERR_MEM, "out of memory");
      }
      memcpy(nxt, s->a, s->la);
      memcpy(nxt + s->la, cur, cl);
      cl += s->la;
    } else {
      size_t cnt = 0;
      for (size_t i = 0; i + s->la <= cl;)
        if (memcmp(cur + i, s->a, s->la) == 0) cnt++, i += s->la;
        else i++;
      size_t nl = cl + cnt * s->lb - cnt * s->la;
      if (nl > QZ_TOK_NORM_GROWTH * n + QZ_TOK_NORM_SLACK) {
        free(cur);
        QZ_FAIL(QZ_ERR_FORMAT, "%s: the normalizer expands a %zu-byte piece of text to "
                "%zu bytes; more than %d x + %d is refused (a Replace with a long "
                "'content'?)", t->origin, n, nl, QZ_TOK_NORM_GROWTH, QZ_TOK_NORM_SLACK);
      }
      nxt = malloc(nl + 1);
      if (!nxt) {
        free(cur);
        QZ_FAIL(QZ_ERR_MEM, "out of memory");
      }
      size_t o = 0;
      for (size_t i = 0; i < cl;) {
        if (i + s->la <= cl && memcmp(cur + i, s->a, s->la) == 0) {
          memcpy(nxt + o, s->b, s->lb);
          o += s->lb;
          i += s->la;
        } else {
          nxt[o++] = cur[i++];
        }
      }
      cl = o;
    }
    free(cur);
    cur = nxt;
    nxt = NULL;
  }
  free(*buf);
  *buf = cur;
  *cap = cl + 1;
  *outlen = cl;
  return QZ_OK;
}

/* ---- byte-level split regexes, hand-compiled ------------------------------*/

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < r[mid][0]) hi = mid;
    else if (cp > r[mid][1]) lo = mid + 1;
    else return 1;
  }
  return 0;
}
static int is_L(uint32_t c) {
  if (c < 0x80) return (c | 32) >= 'a' && (c | 32) <= 'z';
  return in_ranges(qz_uni_L, sizeof qz_uni_L / sizeof *qz_uni_L, c);
}
static int is_N(uint32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return in_ranges(qz_uni_N, sizeof qz_uni_N / sizeof *qz_uni_N, c);
}
/* \s: the Unicode White_Space property */
static int is_WS(uint32_t c) {
  return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x3000;
}
static int is_other(uint32_t c) { return !is_WS(c) && !is_L(c) && !is_N(c); }
static int is_nl(uint32_t c) { return c == '\r' || c == '\n'; }

/* 's 't 're 've 'm 'll 'd at i; 0 if none. Case-insensitive for Llama-3. */
static int64_t m_contraction(const uint32_t *c, int64_t n, int64_t i, int ci) {
  if (c[i] != '\'' || i + 1 >= n) return 0;
  uint32_t a = c[i + 1], b = i + 2 < n ? c[i + 2] : 0;
  if (ci) {
    if (a < 0x80) a |= (a >= 'A' && a <= 'Z') ? 32 : 0;
    else if (a == 0x17f) a = 's'; /* long s folds to s */
    if (b < 0x80) b |= (b >= 'A' && b <= 'Z') ? 32 : 0;
    else if (b == 0x17f) b = 's';
  }
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
    return i + 3;
  return 0;
}

/* \s+(?!\S) then \s+ ; and for Llama-3 first \s*[\r\n]+ */
static int64_t m_space(const uint32_t *c, int64_t n, int64_t i, int nl_rule) {
  int64_t j = i;
  while (j < n && is_WS(c[j])) j++;
  if (j == i) return 0;
  if (nl_rule)
    for (int64_t q = j - 1; q >= i; q--)
      if (is_nl(c[q])) return q + 1;
  if (j == n) return j;
  if (j - 1 > i) return j - 1;
  return j;
}

/* End of the match starting at i (> i), or 0 when nothing matches at i. */
static int64_t match_llama3(const uint32_t *c, int64_t n, int64_t i, int maxdig) {
  int64_t j = m_contraction(c, n, i, 1);
  if (j) return j;
  if (i + 1 < n && !is_nl(c[i]) && !is_L(c[i]) && !is_N(c[i]) && is_L(c[i + 1])) {
    for (j = i + 2; j < n && is_L(c[j]);) j++;
    return j;
  }
  if (is_L(c[i])) {
    for (j = i + 1; j < n && is_L(c[j]);) j++;
    return j;
  }
  if (is_N(c[i])) {
    for (j = i + 1; j < n && j < i + maxdig && is_N(c[j]);) j++;
    return j;
  }
  int64_t k = (c[i] == ' ' && i + 1 < n && is_other(c[i + 1])) ? i + 1 : i;
  if (is_other(c[k])) {
    for (j = k + 1; j < n && is_other(c[j]);) j++;
    while (j < n && is_nl(c[j])) j++;
    return j;
  }
  return m_space(c, n, i, 1);
}

static int64_t match_gpt2(const uint32_t *c, int64_t n, int64_t i) {
  int64_t j = m_contraction(c, n, i, 0);
  if (j) return j;
  int (*cls[3])(uint32_t) = {is_L, is_N, is_other};
  for (int k = 0; k < 3; k++) {
    int64_t st = (c[i] == ' ' && i + 1 < n && cls[k](c[i + 1])) ? i + 1
                 : cls[k](c[i]) ? i : -1;
    if (st < 0) continue;
    for (j = st + 1; j < n && cls[k](c[j]);) j++;
    return j;
  }
  return m_space(c, n, i, 0);
}

/* One word of raw bytes -> byte-level characters -> BPE. */
static int bytelevel_word(const qz_tokenizer *t, const char *w, size_t n,
                          bpe_scratch *s, id_vec *out, char **buf, size_t *cap) {
  if (2 * n + 1 > *cap) {
    size_t nc = 2 * n + 64;
    char *b = realloc(*buf, nc);
    QZ_CHECK(b, QZ_ERR_MEM, "out of memory");
    *buf = b;
    *cap = nc;
  }
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char b = (unsigned char)w[i];
    memcpy(*buf + o, t->bl_enc[b], t->bl_len[b]);
    o += t->bl_len[b];
  }
  QZ_CALL(bpe_word(t, *buf, o, s, out));
  return QZ_OK;
}

static int encode_bytelevel(const qz_tokenizer *t, const char *txt, size_t n,
                            bpe_scratch *s, id_vec *out) {
  int st = QZ_OK;
  char *pre = NULL, *map = NULL;
  size_t mapcap = 0;
  uint32_t *cp = NULL;
  int64_t *off = NULL;
  if (t->bl_prefix_space && n > 0 && txt[0] != ' ') {
    pre = malloc(n + 2);
    QZ_CHECK_DONE(pre, QZ_ERR_MEM, "out of memory");
    pre[0] = ' ';
    memcpy(pre + 1, txt, n);
    txt = pre;
    n++;
  }
  if (t->split == SPLIT_NONE) {
    QZ_CALL_DONE(bytelevel_word(t, txt, n, s, out, &map, &mapcap));
    goto done;
  }
  /* code points and their byte offsets (input is valid UTF-8) */
  cp = malloc((n + 1) * sizeof *cp);
  off = malloc((n + 1) * sizeof *off);
  QZ_CHECK_DONE(cp && off, QZ_ERR_MEM, "out of memory");
  int64_t nc = 0;
  for (size_t i = 0; i < n;) {
    const unsigned char *u = (const unsigned char *)txt + i;
    size_t l = u[0] < 0x80 ? 1 : utf8_len(u, n - i);
    QZ_CHECK_DONE(l > 0, QZ_ERR_FORMAT, "input is not valid UTF-8");
    uint32_t v = l == 1 ? u[0] : l == 2 ? (u[0] & 0x1fu) : l == 3 ? (u[0] & 0x0fu) : (u[0] & 0x07u);
    for (size_t k = 1; k < l; k++) v = (v << 6) | (u[k] & 0x3fu);
    cp[nc] = v;
    off[nc++] = (int64_t)i;
    i += l;
  }
  off[nc] = (int64_t)n;
  int64_t gap = 0; /* start of text no alternative matched (Isolated keeps it) */
  for (int64_t i = 0; i < nc;) {
    int64_t j = t->split == SPLIT_GPT2 ? match_gpt2(cp, nc, i)
                : match_llama3(cp, nc, i, t->split == SPLIT_QWEN2 ? 1 : 3);
    if (j <= i) {
      i++;
      continue;
    }
    if (gap < i)
      QZ_CALL_DONE(bytelevel_word(t, txt + off[gap], (size_t)(off[i] - off[gap]), s,
                                  out, &map, &mapcap));
    QZ_CALL_DONE(bytelevel_word(t, txt + off[i], (size_t)(off[j] - off[i]), s, out,
                                &map, &mapcap));
    i = gap = j;
  }
  if (gap < nc)
    QZ_CALL_DONE(bytelevel_word(t, txt + off[gap], (size_t)(off[nc] - off[gap]), s,
                                out, &map, &mapcap));
done:
  free(pre);
  free(map);
  free(cp);
  free(off);
  return st;
}

/* BPE of m [o bytes] word by word, a word starting at each occurrence of
 * r [rl bytes] (the first word at 0). The search starts at byte 1, not at
 * rl: without a prepended r, an r at byte 1 or 2 starts a word too. */
static int bpe_words_at(const qz_tokenizer *t, const char *m, size_t o, const char *r,
                        size_t rl, bpe_scratch *s, id_vec *out) {
  int st = QZ_OK;
  size_t w0 = 0;
  for (size_t i = 1; i <= o && !st; i++)
    if (i == o || (i + rl <= o && memcmp(m + i, r, rl) == 0)) {
      st = bpe_word(t, m + w0, i - w0, s, out);
      w0 = i;
    }
  return st;
}

/* One piece of normalized text between added tokens: pre-tokenizer, then
 * BPE per word. `first`: the piece starts the text (Metaspace "first"). */
static int encode_piece(const qz_tokenizer *t, const char *nb, size_t nl,
                        int first, bpe_scratch *s, id_vec *out) {
  int st = QZ_OK;
  if (t->pretok == PRE_NONE) {
    /* short words keep BPE's heap small (stories260K's tokenizer on 0.8 MB
     * of TinyStories: 0.148 -> 0.034 s, the same ids) */
    if (t->ws_split)
      QZ_CALL_DONE(bpe_words_at(t, nb, nl, "\xE2\x96\x81", 3, s, out));
    else
      QZ_CALL_DONE(bpe_word(t, nb, nl, s, out));
  } else if (t->pretok == PRE_BYTELEVEL) {
    QZ_CALL_DONE(encode_bytelevel(t, nb, nl, s, out));
  } else { /* Metaspace: ' ' -> replacement, optional prefix, split */
    const char *r = t->meta_repl;
    size_t rl = strlen(r), cnt = 0;
    for (size_t i = 0; i < nl; i++) cnt += nb[i] == ' ';
    char *m = malloc(nl + cnt * rl + rl + 1);
    QZ_CHECK_DONE(m, QZ_ERR_MEM, "out of memory");
    size_t o = 0;
    int pre = t->meta_prepend == 1 || (t->meta_prepend == 2 && first);
    if (pre && nl > 0 && !(nl >= rl && memcmp(nb, r, rl) == 0)) {
      memcpy(m, r, rl);
      o = rl;
    }
    for (size_t i = 0; i < nl; i++) {
      if (nb[i] == ' ') {
        memcpy(m + o, r, rl);
        o += rl;
      } else {
        m[o++] = nb[i];
      }
    }
    if (!t->meta_split)
      st = bpe_word(t, m, o, s, out);
    else /* words start at each replacement character */
      st = bpe_words_at(t, m, o, r, rl, s, out);
    free(m);
    if (st) qz_error_trace(__FILE__, __LINE__, __func__);
  }
done:
  return st;
}

/* ---- added tokens ----------------------------------------------------------*/

typedef struct {
  size_t a, b; /* byte range */
  int tok;     /* added token index, -1 for text */
} span;
typedef struct {
  span *v;
  size_t n, cap;
} span_vec;

static int span_push(span_vec *sv, size_t a, size_t b, int tok) {
  if (sv->n == sv->cap) {
    size_t cap = sv->cap ? 2 * sv->cap : 64;
    span *v = realloc(sv->v, cap * sizeof *v);
    QZ_CHECK(v, QZ_ERR_MEM, "out of memory splitting on added tokens");
    sv->v = v;
    sv->cap = cap;
  }
  sv->v[sv->n++] = (span){a, b, tok};
  return QZ_OK;
}

/* Splits s[0..n) on the added tokens of trie tr as Hugging Face tokenizers
 * does (AddedVocabulary::find_matches): leftmost-longest non-overlapping
 * matches, the search going on after each match's own end; a single_word
 * match with a word character (\w) just before or after it is dropped (its
 * bytes stay text and no shorter token is tried inside them); lstrip takes
 * the whitespace (\s) before the token into it, not beyond the previous
 * split; rstrip the whitespace after it. The spans cover s. */
static int split_added(const qz_tokenizer *t, const tok_trie *tr, const char *s,
                       size_t n, span_vec *out) {
  out->n = 0;
  size_t done = 0, p = 0;
  while (p < n && tr->maxlen > 0) {
    size_t mlen = 0;
    int k = tr->first[(unsigned char)s[p]] ? trie_match(tr, s + p, n - p, &mlen) : -1;
    if (k < 0) {
      p++;
      continue;
    }
    size_t start = p, stop = p + mlen;
    p = stop;
    const added_tok *a = &t->added[k];
    if (a->single_word) {
      uint32_t c = 0;
      int word_before = start > 0 && qz_uni_is_word(qz_uni_last(s, start));
      int word_after = stop < n && qz_uni_decode((const unsigned char *)s + stop,
                                                 n - stop, &c) && qz_uni_is_word(c);
      if (word_before || word_after) continue;
    }
    if (a->lstrip) {
      size_t ns = start;
      while (ns > 0 && is_WS(qz_uni_last(s, ns)))
        do ns--; while (ns > 0 && ((unsigned char)s[ns] & 0xc0) == 0x80);
      start = ns > done ? ns : done;
    }
    if (a->rstrip) {
      uint32_t c = 0;
      size_t l;
      while (stop < n && (l = qz_uni_decode((const unsigned char *)s + stop, n - stop, &c)) &&
             is_WS(c))
        stop += l;
    }
    if (done < start) QZ_CALL(span_push(out, done, start, -1));
    QZ_CALL(span_push(out, start, stop, k));
    done = stop;
  }
  if (done < n) QZ_CALL(span_push(out, done, n, -1));
  return QZ_OK;
}

/* One piece of raw text between raw-matched added tokens: normalize, split
 * on the normalized added tokens, encode the pieces between them. */
static int encode_segment(const qz_tokenizer *t, const char *seg, size_t n,
                          int first, bpe_scratch *s, id_vec *out) {
  char *nb = NULL;
  size_t cap = 0, nl = 0;
  span_vec sv = {0};
  int st = QZ_OK;
  QZ_CALL_DONE(normalize(t, seg, n, &nb, &cap, &nl));
  QZ_CALL_DONE(split_added(t, &t->norm_trie, nb, nl, &sv));
  for (size_t i = 0; i < sv.n; i++) {
    const span *p = &sv.v[i];
    if (p->tok >= 0) QZ_CALL_DONE(push(out, t->added[p->tok].id));
    else QZ_CALL_DONE(encode_piece(t, nb + p->a, p->b - p->a, first && p->a == 0, s, out));
  }
done:
  free(nb);
  free(sv.v);
  return st;
}

int qz_tokenizer_encode(const qz_tokenizer *t, const char *text, size_t len,
                        int add_special, int32_t **ids, int64_t *n) {
  *ids = NULL;
  *n = 0;
  QZ_CHECK(t && (text || len == 0), QZ_ERR_ARG, "qz_tokenizer_encode: NULL "
           "argument");
  for (size_t i = 0; i < len;) {
    const unsigned char *u = (const unsigned char *)text + i;
    if (u[0] < 0x80) {
      i++;
      continue;
    }
    size_t cl = utf8_len(u, len - i);
    QZ_CHECK(cl > 0, QZ_ERR_FORMAT,
             "input text is not valid UTF-8 at byte %zu (0x%02x)", i, u[0]);
    i += cl;
  }
  id_vec out = {0};
  span_vec raw = {0};
  bpe_scratch s;
  memset(&s, 0, sizeof s);
  int st = QZ_OK;
  if (add_special)
    for (int i = 0; i < t->nprefix; i++) QZ_CALL_DONE(push(&out, t->prefix[i]));
  QZ_CALL_DONE(split_added(t, &t->raw_trie, text, len, &raw));
  for (size_t i = 0; i < raw.n; i++) {
    const span *p = &raw.v[i];
    if (p->tok >= 0) QZ_CALL_DONE(push(&out, t->added[p->tok].id));
    else QZ_CALL_DONE(encode_segment(t, text + p->a, p->b - p->a, p->a == 0, &s, &out));
  }
  if (add_special)
    for (int i = 0; i < t->nsuffix; i++) QZ_CALL_DONE(push(&out, t->suffix[i]));
  *ids = out.v ? out.v : malloc(sizeof(int32_t));
  QZ_CHECK_DONE(*ids, QZ_ERR_MEM, "out of memory");
  out.v = NULL;
  *n = out.n;
done:
  free(out.v);
  free(raw.v);
  free(s.c);
  free(s.prev);
  free(s.next);
  free(s.len);
  free(s.q.h);
  return st;
}
