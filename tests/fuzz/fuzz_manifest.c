/* libFuzzer target: a checkpoint manifest.json (the input) in an otherwise
 * empty directory, opened as a checkpoint on one rank; when it opens, the
 * accessors, the source check and verify (whose files are missing) run. A
 * crash, a hang or a sanitizer report is a bug; errors are fine. */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/error.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[64], g_path[128];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  MPI_Init(argc, argv);
  snprintf(g_dir, sizeof g_dir, "/tmp/qz-fuzz-manifest-XXXXXX");
  if (!mkdtemp(g_dir)) abort();
  snprintf(g_path, sizeof g_path, "%s/manifest.json", g_dir);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FILE *f = fopen(g_path, "wb");
  if (!f) abort();
  if (size) fwrite(data, 1, size, f);
  fclose(f);
  qz_ckpt *ck = NULL;
  if (qz_ckpt_open(MPI_COMM_SELF, g_dir, &ck) == QZ_OK) {
    int nb = qz_ckpt_nblocks(ck), fm = qz_ckpt_first_missing(ck);
    if (nb <= 0 || fm < 0 || fm > nb) abort();
    for (int b = -1; b <= nb && b < 64; b++) (void)qz_ckpt_block_done(ck, b);
    (void)qz_ckpt_options_json(ck);
    (void)qz_ckpt_model_dir(ck);
    (void)qz_ckpt_act_bits(ck);
    (void)qz_ckpt_snapshot_block(ck);
    (void)qz_ckpt_check_source(ck, qz_ckpt_source_json(ck), "fuzz");
    (void)qz_ckpt_check_source(ck, "{\"config\":{},\"files\":[]}", "fuzz");
    int bad = 0;
    int64_t nds = 0;
    (void)qz_ckpt_verify(ck, &bad, &nds);
    qz_ckpt_close(&ck);
  }
  qz_error_clear();
  return 0;
}
