/* tokenizer.json encoder (Llama-2/SentencePiece-style BPE and Llama-3/
 * Qwen2/GPT-2 byte-level BPE) and pre-tokenized token files. */
#ifndef MPIQUANT_TOKENIZER_H
#define MPIQUANT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qz_tokenizer qz_tokenizer;

/* Limits that keep a hostile tokenizer.json from costing unbounded memory
 * or time (docs/io.md): token ids below 2 x (vocab + added entries) +
 * QZ_TOK_ID_SLACK; added tokens at most QZ_TOK_ADDED_MAX_BYTES long
 * (matched through a trie: O(text x that length) at worst); the normalizer
 * may grow a piece of text to at most QZ_TOK_NORM_GROWTH x its length +
 * QZ_TOK_NORM_SLACK bytes (Llama-2's " " -> "\u2581" plus a prepended
 * "\u2581" needs 3x + 3). */
#define QZ_TOK_ID_SLACK 1024
#define QZ_TOK_ADDED_MAX_BYTES 1024
#define QZ_TOK_NORM_GROWTH 4
#define QZ_TOK_NORM_SLACK 64

/* `path`: tokenizer.json or a model directory holding it. Not collective. */
int qz_tokenizer_load(const char *path, qz_tokenizer **out);
void qz_tokenizer_free(qz_tokenizer **tok);
/* Same from tokenizer.json text in memory; `origin` names it in messages. */
int qz_tokenizer_load_json(const char *json, size_t len, const char *origin,
                           qz_tokenizer **out);

/* Encode `len` bytes of UTF-8 text as one string (the whole file for eval);
 * add_special != 0 applies the post-processor (BOS). *ids is malloc'ed. */
int qz_tokenizer_encode(const qz_tokenizer *tok, const char *text, size_t len,
                        int add_special, int32_t **ids, int64_t *n);
int64_t qz_tokenizer_vocab_size(const qz_tokenizer *tok);
const char *qz_tokenizer_piece(const qz_tokenizer *tok, int32_t id); /* NULL if out of range */
int32_t qz_tokenizer_piece_id(const qz_tokenizer *tok, const char *piece); /* -1 if absent */

/* Token files: .bin = little-endian uint32 ids; .txt = one window per line,
 * space-separated ids (the golden calib/ format). Not collective. */
int qz_tokens_read_bin(const char *path, int32_t **ids, int64_t *n);
int qz_tokens_write_bin(const char *path, const int32_t *ids, int64_t n);
int qz_windows_read_txt(const char *path, int32_t **ids, int64_t *nwin,
                        int64_t *winlen);
/* Every id of ids [n] (read from `path`) inside [0, vocab): else
 * QZ_ERR_FORMAT naming the file, the position and the id. Not collective. */
int qz_tokens_check_vocab(const char *path, const int32_t *ids, int64_t n, int64_t vocab);
/* A whole file into a malloc'ed, NUL-terminated buffer. Not collective. */
int qz_read_file(const char *path, char **data, size_t *len);
int qz_windows_write_txt(const char *path, const int32_t *ids, int64_t nwin,
                         int64_t winlen);

#ifdef __cplusplus
}
#endif
#endif
