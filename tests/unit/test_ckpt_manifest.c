/* Damaged and hostile checkpoint manifests: every one is a clear error that
 * names the manifest and what is wrong (never a crash, a hang or a
 * use-after-free: this test runs under ASan in scripts/test.sh --sanitize).
 * One rank (MPI_COMM_SELF). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/error.h"
#include "qz_test.h"

static const char *write_manifest(const char *name, const char *text) {
  const char *dir = qzt_fresh_path(name);
  mkdir(dir, 0755);
  FILE *f = fopen(qzt_path(dir, "manifest.json"), "w");
  fputs(text, f);
  fclose(f);
  return dir;
}

/* A valid version-1 manifest with `extra` spliced into the object. */
static char *manifest(const char *version, const char *nblocks, const char *done) {
  static char buf[4096];
  snprintf(buf, sizeof buf,
           "{\"format\": \"mpiquant-ckpt\", \"version\": %s, \"nblocks\": %s, "
           "\"blocks_per_file\": 1, \"options\": {}, \"source\": {}, "
           "\"files\": [], \"completed_blocks\": [%s], \"snapshot\": null}",
           version, nblocks, done);
  return buf;
}

static void expect_open_fails(const char *name, const char *text, int status,
                              const char *phrase) {
  const char *dir = write_manifest(name, text);
  qz_ckpt *ck = NULL;
  int st = qz_ckpt_open(MPI_COMM_SELF, dir, &ck);
  QZT_FAILS(st, status, phrase);
  QZT_CHECK(!ck, "%s: no handle on failure", name);
  qz_ckpt_close(&ck);
  qz_error_clear();
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  /* an unknown version: the message quotes the file's format and version
   * (it used to be formatted from freed JSON: garbage or an ASan abort) */
  expect_open_fails("v7", manifest("7", "5", ""), QZ_ERR_FORMAT,
                    "(format 'mpiquant-ckpt', version 7)");
  expect_open_fails("fmt", "{\"format\": \"something-else\", \"version\": 1}",
                    QZ_ERR_FORMAT, "(format 'something-else', version 1)");
  expect_open_fails("huge", manifest("1", "4611686018427387904", ""), QZ_ERR_FORMAT,
                    "nblocks 4611686018427387904 and blocks_per_file 1 must be in");
  expect_open_fails("zero", manifest("1", "0", ""), QZ_ERR_FORMAT, "nblocks 0 and");
  expect_open_fails("dup", manifest("1", "5", "{\"block\": 1}, {\"block\": 1}"),
                    QZ_ERR_FORMAT, "block 1 is listed twice in completed_blocks");
  expect_open_fails("range", manifest("1", "5", "{\"block\": 5}"), QZ_ERR_FORMAT,
                    "completed_blocks[0] has no valid block index (0..4)");
  expect_open_fails("trunc", "{\"format\": \"mpiquant-", QZ_ERR_FORMAT,
                    "corrupt or truncated");
  /* a FIFO as the manifest: refused at once (opening it would block) */
  {
    const char *dir = qzt_fresh_path("fifo");
    mkdir(dir, 0755);
    QZT_CHECK(mkfifo(qzt_path(dir, "manifest.json"), 0644) == 0, "mkfifo");
    qz_ckpt *ck = NULL;
    alarm(20); /* a hang fails here, not at the ctest timeout */
    QZT_FAILS(qz_ckpt_open(MPI_COMM_SELF, dir, &ck), QZ_ERR_IO,
              "manifest.json is a FIFO (named pipe), expected a regular file");
    alarm(0);
    qz_error_clear();
  }
  /* no manifest at all */
  {
    const char *dir = qzt_fresh_path("none");
    mkdir(dir, 0755);
    qz_ckpt *ck = NULL;
    QZT_FAILS(qz_ckpt_open(MPI_COMM_SELF, dir, &ck), QZ_ERR_IO,
              "manifest.json: No such file or directory");
    qz_error_clear();
  }
  /* one writer at a time: a second quantize on the same --out is refused
   * while the first holds the checkpoint */
  {
    const char *dir = qzt_fresh_path("locked");
    qz_ckpt_params p = {.options_json = "{}", .source_json = "{}", .nblocks = 2,
                        .blocks_per_file = 1, .zstd_level = 3, .mpiquant_version = "test"};
    qz_ckpt *a = NULL, *b = NULL;
    QZT_OK(qz_ckpt_create(MPI_COMM_SELF, dir, &p, 0, &a));
    QZT_FAILS(qz_ckpt_create(MPI_COMM_SELF, dir, &p, 1, &b), QZ_ERR_IO,
              "is being written by another mpiquant job");
    qz_error_clear();
    qz_ckpt_close(&a);
    QZT_OK(qz_ckpt_create(MPI_COMM_SELF, dir, &p, 1, &b)); /* released on close */
    qz_ckpt_close(&b);
    /* a user's file named like ours, no manifest: never overwritten */
    const char *own = qzt_fresh_path("users");
    mkdir(own, 0755);
    FILE *f = fopen(qzt_path(own, "blocks-000.h5"), "w");
    fputs("my data", f);
    fclose(f);
    QZT_FAILS(qz_ckpt_create(MPI_COMM_SELF, own, &p, 0, &b), QZ_ERR_ARG,
              "holds blocks-000.h5 but no manifest.json: it is not an mpiquant checkpoint");
    qz_error_clear();
    struct stat sb;
    QZT_CHECK(stat(qzt_path(own, "blocks-000.h5"), &sb) == 0 && sb.st_size == 7,
              "the user's file is untouched");
  }
  return qzt_finish("ckpt_manifest");
}
