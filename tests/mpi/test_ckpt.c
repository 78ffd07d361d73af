/* Checkpoint: collective write of row-split linears into grouped zstd HDF5
 * files, manifest completion rules, read back, resume checks, snapshot,
 * unwritable output. Results are checked against the generator. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/comm.h"
#include "qz_test.h"

static uint8_t code_of(int b, int m, int64_t r, int64_t c) { return (uint8_t)((b * 7 + m * 3 + r * 5 + c) % 16); }
static float scale_of(int b, int m, int64_t r, int64_t g) { return 0.01f * (float)(1 + (b + m + r + g) % 9); }
static float zero_of(int b, int m, int64_t r, int64_t g) { return (float)((b + 2 * m + r + 3 * g) % 16); }

static const char *OPTS = "{\"method\":\"gptq\",\"bits\":4,\"group\":32}";
static const char *SRC = "{\"config\":{\"hidden_size\":64},\"files\":[]}";

static int write_block(qz_ckpt *ck, int b, int rank, int size) {
  const char *mods[2] = {"self_attn.q_proj", "mlp.down_proj"};
  int64_t outs[2] = {37, 20}, ins[2] = {64, 172};
  for (int m = 0; m < 2; m++) {
    int64_t out = outs[m], in = ins[m], ng = (in + 31) / 32, r0, nr;
    qz_split_even(out, size, rank, &r0, &nr);
    uint8_t *codes = malloc((size_t)(nr ? nr : 1) * in);
    float *sc = malloc(sizeof(float) * (nr ? nr : 1) * ng), *z = malloc(sizeof(float) * (nr ? nr : 1) * ng);
    int32_t *gi = malloc(sizeof(int32_t) * in), *pm = malloc(sizeof(int32_t) * in);
    for (int64_t r = 0; r < nr; r++) {
      for (int64_t c = 0; c < in; c++) codes[r * in + c] = code_of(b, m, r0 + r, c);
      for (int64_t g = 0; g < ng; g++) {
        sc[r * ng + g] = scale_of(b, m, r0 + r, g);
        z[r * ng + g] = zero_of(b, m, r0 + r, g);
      }
    }
    for (int64_t c = 0; c < in; c++) { gi[c] = (int32_t)(c / 32); pm[c] = (int32_t)(in - 1 - c); }
    qz_ckpt_linear_meta meta = {.bits = 4, .group_size = 32, .method = "gptq", .damp_used = 0.01, .loss = 1.5 + b};
    int st = qz_ckpt_write_linear(ck, b, mods[m], out, in, ng, r0, nr, codes, sc, z, gi, pm, &meta);
    free(codes); free(sc); free(z); free(gi); free(pm);
    if (st) return st;
  }
  return QZ_OK;
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  int rank = qzt_rank(), size = qzt_size();
  const char *dir = qzt_fresh_path("ck");
  if (!dir) return 1;
  qz_ckpt_params p = {.options_json = OPTS, .source_json = SRC, .nblocks = 3,
                      .blocks_per_file = 2, .zstd_level = 3, .mpiquant_version = "test"};
  qz_ckpt *ck = NULL;
  QZT_OK(qz_ckpt_create(MPI_COMM_WORLD, dir, &p, 0, &ck));
  QZT_OK(qz_ckpt_begin_block(ck, 0));
  QZT_OK(write_block(ck, 0, rank, size));
  QZT_OK(qz_ckpt_end_block(ck, 0, "{\"loss\":1.5}"));
  QZT_CHECK(!qz_ckpt_block_done(ck, 0), "block 0 not complete before its file is");
  QZT_CHECK(access(qzt_path(dir, "blocks-000.h5.tmp"), F_OK) == 0, "group file is .tmp while open");
  QZT_OK(qz_ckpt_begin_block(ck, 1));
  QZT_OK(write_block(ck, 1, rank, size));
  QZT_OK(qz_ckpt_end_block(ck, 1, "{\"loss\":2.5}"));
  QZT_CHECK(qz_ckpt_block_done(ck, 0) && qz_ckpt_block_done(ck, 1), "blocks 0,1 complete with their file");
  QZT_CHECK(access(qzt_path(dir, "blocks-000.h5"), F_OK) == 0 &&
            access(qzt_path(dir, "blocks-000.h5.tmp"), F_OK) != 0, "renamed on completion");
  QZT_CHECK(qz_ckpt_first_missing(ck) == 2, "first missing = 2");

  /* snapshot of windows at the input of block 2 */
  int64_t nwin = 5, seqlen = 4, hidden = 8, w0, nw;
  qz_split_even(nwin, size, rank, &w0, &nw);
  float *x = malloc(sizeof(float) * (nw ? nw : 1) * seqlen * hidden);
  for (int64_t i = 0; i < nw * seqlen * hidden; i++) x[i] = (float)(w0 * seqlen * hidden + i) * 0.5f;
  QZT_OK(qz_ckpt_write_snapshot(ck, 2, nwin, seqlen, hidden, w0, nw, x));
  qz_ckpt_close(&ck);
  QZT_CHECK(ck == NULL, "close NULLs the handle");

  /* a second create without --resume refuses */
  const int R0 = rank == 0 ? QZ_ERR_ARG : QZ_ERR_REMOTE; /* rank 0 checks, all learn why */
  QZT_FAILS(qz_ckpt_create(MPI_COMM_WORLD, dir, &p, 0, &ck), R0, "already holds a checkpoint");
  /* resume with other options names the key */
  qz_ckpt_params p2 = p;
  p2.options_json = "{\"method\":\"gptq\",\"bits\":3,\"group\":32}";
  QZT_FAILS(qz_ckpt_create(MPI_COMM_WORLD, dir, &p2, 1, &ck), QZ_ERR_ARG, "'bits': this run has 3, the checkpoint has 4");
  p2 = p;
  p2.source_json = "{\"config\":{\"hidden_size\":128},\"files\":[]}";
  QZT_FAILS(qz_ckpt_create(MPI_COMM_WORLD, dir, &p2, 1, &ck), QZ_ERR_ARG, "source model differs");

  /* resume: continue with block 2 */
  QZT_OK(qz_ckpt_create(MPI_COMM_WORLD, dir, &p, 1, &ck));
  QZT_CHECK(qz_ckpt_first_missing(ck) == 2, "resume point 2");
  QZT_CHECK(qz_ckpt_snapshot_block(ck) == 2, "snapshot at block 2");
  float *y = malloc(sizeof(float) * (nw ? nw : 1) * seqlen * hidden);
  QZT_OK(qz_ckpt_read_snapshot(ck, nwin, seqlen, hidden, w0, nw, y));
  QZT_CHECK(memcmp(x, y, sizeof(float) * nw * seqlen * hidden) == 0, "snapshot round trip");
  QZT_OK(qz_ckpt_begin_block(ck, 2));
  QZT_OK(write_block(ck, 2, rank, size));
  QZT_OK(qz_ckpt_end_block(ck, 2, NULL));
  QZT_CHECK(qz_ckpt_first_missing(ck) == 3, "all done");
  qz_ckpt_close(&ck);

  /* read everything back, rows split differently (reverse rank order) */
  QZT_OK(qz_ckpt_open(MPI_COMM_WORLD, dir, &ck));
  long bad = 0;
  for (int b = 0; b < 3; b++) {
    const char *mods[2] = {"self_attn.q_proj", "mlp.down_proj"};
    for (int m = 0; m < 2; m++) {
      int64_t out, in, ng, r0, nr;
      qz_ckpt_linear_meta meta;
      QZT_OK(qz_ckpt_linear_info(ck, b, mods[m], &out, &in, &ng, &meta));
      QZT_CHECK(meta.bits == 4 && meta.group_size == 32 && strcmp(meta.method, "gptq") == 0 && meta.loss == 1.5 + b,
                "attributes of block %d %s", b, mods[m]);
      qz_split_even(out, size, size - 1 - rank, &r0, &nr);
      uint8_t *c = malloc((size_t)(nr ? nr : 1) * in);
      float *sc = malloc(sizeof(float) * (nr ? nr : 1) * ng), *z = malloc(sizeof(float) * (nr ? nr : 1) * ng);
      float *q = malloc(sizeof(float) * (nr ? nr : 1) * in);
      int32_t *gi = malloc(sizeof(int32_t) * in), *pm = malloc(sizeof(int32_t) * in);
      QZT_OK(qz_ckpt_read_linear(ck, b, mods[m], r0, nr, c, sc, z, gi, pm));
      for (int64_t r = 0; r < nr; r++)
        for (int64_t j = 0; j < in; j++) bad += c[r * in + j] != code_of(b, m, r0 + r, j);
      for (int64_t j = 0; j < in; j++) bad += gi[j] != j / 32 || pm[j] != in - 1 - j;
      qz_dequantize_rows(nr, in, ng, c, sc, z, gi, q);
      for (int64_t r = 0; r < nr; r++)
        for (int64_t j = 0; j < in; j++) {
          float want = scale_of(b, m, r0 + r, j / 32) * ((float)code_of(b, m, r0 + r, j) - zero_of(b, m, r0 + r, j / 32));
          bad += q[r * in + j] != want;
        }
      free(c); free(sc); free(z); free(q); free(gi); free(pm);
    }
  }
  QZT_CHECK(bad == 0, "%ld values differ after read back", bad);
  qz_ckpt_close(&ck);

  /* corrupt manifest: clear error on every rank */
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) {
    const char *mp = qzt_path(dir, "manifest.json");
    if (truncate(mp, 40) != 0) perror("truncate");
  }
  MPI_Barrier(MPI_COMM_WORLD);
  QZT_FAILS(qz_ckpt_open(MPI_COMM_WORLD, dir, &ck), rank == 0 ? QZ_ERR_FORMAT : QZ_ERR_REMOTE,
            "corrupt or truncated");
  QZT_FAILS(qz_ckpt_create(MPI_COMM_WORLD, dir, &p, 1, &ck), rank == 0 ? QZ_ERR_FORMAT : QZ_ERR_REMOTE,
            "corrupt or truncated");

  /* unwritable output (a path below a regular file): error on every rank */
  char bad_dir[4200];
  snprintf(bad_dir, sizeof bad_dir, "%s/manifest.json/sub", dir);
  int st = qz_ckpt_create(MPI_COMM_WORLD, bad_dir, &p, 0, &ck);
  QZT_CHECK(st == (rank == 0 ? QZ_ERR_IO : QZ_ERR_REMOTE) && ck == NULL,
            "unwritable --out fails on every rank: %d", st);
  qz_error_clear();
  free(x); free(y);
  return qzt_finish("test_ckpt");
}
