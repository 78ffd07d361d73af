/* QuantEase outliers in the checkpoint: a linear written row-split with a
 * sparse f32 part spread unevenly over the ranks (some ranks none) reads back
 * through qz_ckpt_read_outliers and through the block-source loader
 * (qz_ckpt_load_linear_f32) as dequantized weight + outliers, bit for bit
 * against the generator; a linear without outliers reads back nnz = 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/ckpt.h"
#include "mpiquant/comm.h"
#include "mpiquant/mem.h"
#include "qblock.h"
#include "qz_test.h"

enum { OUT = 37, IN = 64, G = 32 };
static uint8_t code_of(int64_t r, int64_t c) { return (uint8_t)((r * 5 + c * 3) % 16); }
static float scale_of(int64_t r, int64_t g) { return 0.01f * (float)(1 + (r + g) % 9); }
static float zero_of(int64_t r, int64_t g) { return (float)((r + 3 * g) % 16); }
/* outliers at flat indices i with i % 29 == 3 in rows >= 10 only */
static int is_out(int64_t i) { return i % 29 == 3 && i / IN >= 10; }
static float val_of(int64_t i) { return 0.25f * (float)(i % 13) - 1.5f; }

static int write_linear(qz_ckpt *ck, qz_linear l, int with_out, int rank, int size) {
  int64_t ng = IN / G, r0, nr;
  qz_split_even(OUT, size, rank, &r0, &nr);
  uint8_t codes[OUT * IN];
  float sc[OUT * 2], z[OUT * 2], val[OUT * IN];
  int64_t idx[OUT * IN], n = 0;
  int32_t gi[IN], pm[IN];
  for (int64_t r = 0; r < nr; r++) {
    for (int64_t c = 0; c < IN; c++) {
      codes[r * IN + c] = code_of(r0 + r, c);
      int64_t i = (r0 + r) * IN + c;
      if (with_out && is_out(i)) { idx[n] = i; val[n++] = val_of(i); }
    }
    for (int64_t g = 0; g < ng; g++) { sc[r * ng + g] = scale_of(r0 + r, g); z[r * ng + g] = zero_of(r0 + r, g); }
  }
  for (int c = 0; c < IN; c++) { gi[c] = c / G; pm[c] = c; }
  qz_ckpt_linear_meta meta = {.bits = 4, .group_size = G, .method = "quantease", .damp_used = 0.01, .loss = 1};
  QZ_CALL(qz_ckpt_write_linear(ck, 0, qz_linear_name(l), OUT, IN, ng, r0, nr, codes, sc, z, gi, pm, &meta));
  QZ_CALL(qz_ckpt_write_outliers(ck, 0, qz_linear_name(l), n, idx, val));
  return QZ_OK;
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  int rank = qzt_rank(), size = qzt_size();
  const char *dir = qzt_fresh_path("ck");
  if (!dir) return 1;
  qz_ckpt_params p = {.options_json = "{\"method\":\"quantease\"}", .source_json = "{\"files\":[]}",
                      .nblocks = 1, .blocks_per_file = 1, .zstd_level = 3, .mpiquant_version = "test"};
  qz_ckpt *ck = NULL;
  QZT_OK(qz_ckpt_create(MPI_COMM_WORLD, dir, &p, 0, &ck));
  QZT_OK(qz_ckpt_begin_block(ck, 0));
  QZT_OK(write_linear(ck, QZ_LIN_Q, 1, rank, size));
  QZT_OK(write_linear(ck, QZ_LIN_K, 0, rank, size));
  QZT_OK(qz_ckpt_end_block(ck, 0, "{}"));
  qz_ckpt_close(&ck);

  QZT_OK(qz_ckpt_open(MPI_COMM_WORLD, dir, &ck));
  int64_t nnz = -1, *idx = NULL, expect = 0;
  float *val = NULL;
  for (int64_t i = 0; i < OUT * IN; i++) expect += is_out(i);
  QZT_OK(qz_ckpt_read_outliers(ck, 0, qz_linear_name(QZ_LIN_Q), &nnz, &idx, &val));
  QZT_CHECK(nnz == expect, "q_proj: %lld outliers read back, %lld written", (long long)nnz, (long long)expect);
  int64_t bad = 0;
  for (int64_t k = 0, i = 0; k < nnz; k++) {
    while (i < OUT * IN && !is_out(i)) i++; /* rank order = ascending rows */
    bad += idx[k] != i || val[k] != val_of(i);
    i++;
  }
  QZT_CHECK(bad == 0, "q_proj: %lld outlier entries differ from the generator", (long long)bad);
  qz_free(&idx);
  qz_free(&val);
  QZT_OK(qz_ckpt_read_outliers(ck, 0, qz_linear_name(QZ_LIN_K), &nnz, &idx, &val));
  QZT_CHECK(nnz == 0 && !idx && !val, "k_proj without outliers reads nnz 0 (got %lld)", (long long)nnz);

  float *w = malloc(sizeof(float) * OUT * IN);
  QZT_OK(qz_ckpt_load_linear_f32(ck, MPI_COMM_WORLD, 0, QZ_LIN_Q, OUT, IN, w));
  bad = 0;
  for (int64_t r = 0; r < OUT; r++)
    for (int64_t c = 0; c < IN; c++) {
      int64_t i = r * IN + c, g = c / G;
      float q = scale_of(r, g) * ((float)code_of(r, c) - zero_of(r, g));
      if (is_out(i)) q += val_of(i);
      bad += w[i] != q;
    }
  QZT_CHECK(bad == 0, "loader: %lld weights differ from dequantized + outliers", (long long)bad);
  free(w);
  qz_ckpt_close(&ck);
  return qzt_finish("quantease_ckpt");
}
