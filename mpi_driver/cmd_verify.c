/* mpiquant verify CKPT: read the whole checkpoint and check it against the
 * digests its manifest records.  Collective: each rank reads ~1/P. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "driver.h"
#include "mpiquant/ckpt.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: mpiquant verify CKPT\n\n"
          "Checks a quantize checkpoint: the manifest parses, every completed\n"
          "blocks-NNN.h5 and the hidden-state snapshot open, every dataset decodes\n"
          "(each zstd chunk carries a checksum) and its digest equals the one\n"
          "manifest.json recorded when it was written. Damaged files are named with\n"
          "their first damaged dataset; quantize --resume rewrites them.\n"
          "Exit status 0 when the checkpoint is whole, 5 (QZ_ERR_FORMAT) when not.\n");
}

int qz_cmd_verify(qz_ctx *ctx, int argc, char **argv) {
  static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  optind = 0;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (c == 'h') {
      if (ctx->rank == 0) usage(stdout);
      return QZ_OK;
    }
    QZ_FAIL(QZ_ERR_USAGE, "verify: unknown option '%s' (see mpiquant verify --help)",
            argv[optind - 1]);
  }
  QZ_CHECK(optind + 1 == argc, QZ_ERR_USAGE, "usage: mpiquant verify CKPT");
  const char *dir = argv[optind];
  qz_ckpt *ck = NULL;
  QZ_CALL(qz_ckpt_open(ctx->comm, dir, &ck));
  int bad = 0;
  int64_t nds = 0;
  int st = qz_ckpt_verify(ck, &bad, &nds);
  int done = 0;
  for (int b = 0; b < qz_ckpt_nblocks(ck); b++) done += qz_ckpt_block_done(ck, b);
  if (st == QZ_OK && bad == 0 && ctx->rank == 0)
    printf("verify %s: ok (%d of %d blocks complete, %lld datasets checked%s)\n", dir, done,
           qz_ckpt_nblocks(ck), (long long)nds,
           qz_ckpt_version(ck) < 2 ? "; a version 1 checkpoint records no digests: "
                                     "only that every dataset decodes was checked"
                                   : "");
  if (st == QZ_OK && bad)
    st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                      "verify %s: %d damaged file%s (named above); quantize --resume "
                      "rewrites them", dir, bad, bad == 1 ? "" : "s");
  qz_ckpt_close(&ck);
  return st;
}
