/* Input files that cannot hang or surprise: every path mpiquant reads goes
 * through these checks first.  A FIFO, a device or a socket given where a
 * file is expected is refused with a message naming the path and what it is
 * (opening a FIFO for reading would block forever; /dev/zero never ends). */
#ifndef MPIQUANT_FILE_H
#define MPIQUANT_FILE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Open path read-only without blocking (O_NONBLOCK, cleared afterwards),
 * require a regular file, return the descriptor and its size.  Errors
 * (QZ_ERR_IO) name the path and the real cause: no such file, permission,
 * a symbolic link loop, a directory, a FIFO, a device.  Not collective. */
int qz_file_open_input(const char *path, int *fd, int64_t *size);
/* The same check, the file closed again: for paths handed to a library
 * that opens them itself (HDF5, jansson).  Not collective. */
int qz_file_check_input(const char *path);
/* A whole regular file into memory, NUL-terminated (free with free()).
 * Not collective. */
int qz_file_read_all(const char *path, char **data, size_t *len);
/* Content digests (not cryptographic: they detect damage and mix-ups, not
 * attacks).  qz_hash64: a fast 64-bit hash of n bytes (xxHash64-style
 * 4-lane rounds, ~GB/s).  qz_hash_part: the digest of piece `index` of a
 * whole; the whole's digest is the sum (mod 2^64) of its pieces', so ranks
 * may hash any split of the pieces and MPI_SUM the results: the digest does
 * not depend on the number of ranks.  Not collective. */
uint64_t qz_hash64(const void *p, size_t n, uint64_t seed);
uint64_t qz_hash_part(uint64_t index, const void *p, size_t n);

/* What a file type is, for messages ("a FIFO", "a directory", ...). */
const char *qz_file_kind(unsigned mode /* st_mode */);

#ifdef __cplusplus
}
#endif
#endif
