/* Small file-system helpers every stage shares: one `mkdir -p` and one
 * atomic file write. */
#ifndef MPIQUANT_FILES_H
#define MPIQUANT_FILES_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Create `path` and its missing parents (mode 0777 & ~umask); existing
 * directories are fine. QZ_ERR_IO naming the directory that could not be
 * made. Not collective. */
int qz_mkdir_p(const char *path);

/* Write `len` bytes to `path` so that a reader sees either the old file or
 * the whole new one: PATH.tmp.<pid>, flushed and fsynced, renamed over
 * PATH, then the directory fsynced. QZ_ERR_IO (disk full, permissions)
 * leaves no temp file behind. Not collective. */
int qz_write_atomic(const char *path, const void *data, size_t len);
/* fsync of the directory holding `path`, so that a rename into it is
 * durable (errors ignored: best effort). Not collective. */
void qz_fsync_dir_of(const char *path);

#ifdef __cplusplus
}
#endif
#endif
