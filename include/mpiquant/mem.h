/* Memory helpers: checked allocation, large aligned buffers, peak RSS. */
#ifndef MPIQUANT_MEM_H
#define MPIQUANT_MEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* *out = malloc(n * size) with overflow check; error names `what`.
 * n == 0 gives a valid unique pointer. Not collective. */
int qz_alloc(size_t n, size_t size, const char *what, void *out /* T** */);
/* Same, zero-filled. */
int qz_calloc(size_t n, size_t size, const char *what, void *out /* T** */);
/* Free and NULL the caller's pointer (accepts NULL). */
void qz_free(void *pp /* T** */);
/* A buffer reused from call to call: when n elements exceed *cap, the old
 * contents are freed and n (uninitialised) elements allocated; otherwise
 * nothing happens. Not collective. */
int qz_grow(size_t n, size_t size, const char *what, void *pp /* T** */, size_t *cap);

/* Large buffer: 2 MiB aligned with transparent huge pages requested
 * (first touch of 4 KiB pages is slow on some VMs). Free with qz_free_big. */
int qz_alloc_big(size_t bytes, const char *what, void *out /* T** */);
void qz_free_big(void *pp /* T** */, size_t bytes);

/* Peak resident set size of this process in bytes (getrusage). */
int64_t qz_peak_rss_bytes(void);
/* Current resident set size in bytes (/proc/self/statm), -1 if unknown. */
int64_t qz_rss_bytes(void);

/* "1.23 GiB" into buf. Returns buf. */
const char *qz_fmt_bytes(double bytes, char *buf, size_t len);

/* Overflow-checked int64 product / sum: return 0 on overflow. */
int qz_mul_i64(int64_t a, int64_t b, int64_t *out);
int qz_add_i64(int64_t a, int64_t b, int64_t *out);

#ifdef __cplusplus
}
#endif
#endif
