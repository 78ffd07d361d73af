/* Unicode normalization forms NFC, NFD, NFKC, NFKD (UAX #15) and the \w class of the
 * Rust regex crate, from the tables in unicode_tables.h. Private to io/
 * (tokenizer.c) and its tests. */
#ifndef QZ_UNICODE_NORM_H
#define QZ_UNICODE_NORM_H

#include <stddef.h>
#include <stdint.h>

typedef enum { QZ_UNI_NFC, QZ_UNI_NFD, QZ_UNI_NFKC, QZ_UNI_NFKD } qz_uni_form;

/* Normalization form `form` of `n` bytes of valid UTF-8 into a malloc'ed,
 * NUL-terminated *out of *outlen bytes. The fully decomposed text may have
 * at most `max_cp` code points (checked before the work buffers are
 * allocated: QZ_ERR_FORMAT beyond). In UTF-8 NFC and NFD grow a text at
 * most 3 x, NFKC and NFKD 11 x (UAX #15). QZ_ERR_FORMAT on invalid UTF-8,
 * QZ_ERR_MEM. Not collective. */
int qz_uni_normalize(const char *in, size_t n, qz_uni_form form, size_t max_cp,
                     char **out, size_t *outlen);

/* \w of the Rust regex crate (Alphabetic, M, Nd, Pc, Join_Control). */
int qz_uni_is_word(uint32_t cp);

/* Decode the UTF-8 character at s (n bytes left): its byte length (1-4),
 * 0 when invalid; *cp gets the code point. */
size_t qz_uni_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* The last character of s[0..n) (valid UTF-8); n must be > 0. */
uint32_t qz_uni_last(const char *s, size_t n);

#endif
