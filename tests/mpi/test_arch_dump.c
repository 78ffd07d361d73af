/* Dump the forward of a model for an independent check (tests/moe_ref.py):
 *   qzt_arch_dump MODEL_DIR IDS_FILE OUT_DIR
 * IDS_FILE: one window per line (space-separated ids, equal lengths).
 * Writes OUT_DIR/logits.f32 [nwin*L, vocab] and, for every MoE block in
 * order, OUT_DIR/route.i32 / route.f32 [n_moe_blocks, nwin*L, k]: the
 * routing of qz_moe_route on the block's FFN input. One rank (np 1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/forward.h"
#include "mpiquant/model.h"
#include "mpiquant/moe.h"

static int32_t *read_windows(const char *path, int64_t *nwin, int64_t *len) {
  FILE *fp = fopen(path, "r");
  if (!fp) return NULL;
  int64_t cap = 1 << 12, n = 0, lines = 0, cur = 0;
  *len = -1;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
  long v;
  int c;
  for (;;) {
    while ((c = fgetc(fp)) == ' ') {}
    if (c == EOF) break;
    if (c == '\n') {
      if (cur > 0) {
        if (*len < 0) *len = cur;
        if (cur != *len) { free(ids); fclose(fp); return NULL; }
        lines++;
      }
      cur = 0;
      continue;
    }
    ungetc(c, fp);
    if (fscanf(fp, "%ld", &v) != 1) { free(ids); fclose(fp); return NULL; }
    if (n == cap) ids = realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
    ids[n++] = (int32_t)v;
    cur++;
  }
  if (cur > 0) lines++;
  fclose(fp);
  *nwin = lines;
  return ids;
}

static int write_file(const char *dir, const char *name, const void *p, size_t bytes) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  QZ_CHECK(f, QZ_ERR_IO, "cannot write %s", path);
  size_t w = fwrite(p, 1, bytes, f);
  fclose(f);
  QZ_CHECK(w == bytes, QZ_ERR_IO, "short write %s", path);
  return QZ_OK;
}

static int run(const char *mdir, const char *idsf, const char *odir) {
  int64_t nwin = 0, L = 0;
  int32_t *ids = read_windows(idsf, &nwin, &L);
  QZ_CHECK(ids && nwin > 0 && L > 1, QZ_ERR_FORMAT, "%s: bad windows file", idsf);
  qz_model *m = NULL;
  QZ_CALL(qz_model_open(MPI_COMM_WORLD, mdir, &m));
  const qz_model_config *c = qz_model_config_of(m);
  const int64_t T = nwin * L, V = c->vocab_size, k = c->num_experts_per_tok;
  int nmoe = 0;
  for (int l = 0; l < c->num_hidden_layers; l++) nmoe += qz_config_layer_moe(c, l);
  qz_fwd *f = NULL;
  qz_block_weights w = {0};
  qz_head_weights h = {0};
  float *logits = malloc(sizeof(float) * (size_t)(T * V));
  int32_t *ri = malloc(sizeof(int32_t) * (size_t)(nmoe * T * k + 1));
  float *rw = malloc(sizeof(float) * (size_t)(nmoe * T * k + 1));
  QZ_CALL(qz_fwd_create(c, nwin, L, &f));
  QZ_CALL(qz_block_weights_alloc(c, &w));
  QZ_CALL(qz_fwd_embed_model(f, m, ids));
  int im = 0;
  for (int l = 0; l < c->num_hidden_layers; l++) {
    QZ_CALL(qz_model_load_block(m, l, &w));
    if (w.moe) {
      int64_t nc;
      QZ_CALL(qz_fwd_run(f, &w, QZ_STAGE_GATEUP_IN));
      const float *x = qz_fwd_stage_output(f, QZ_STAGE_GATEUP_IN, &nc);
      qz_moe_route(&w, x, T, ri + im * T * k, rw + im * T * k);
      im++;
    }
    QZ_CALL(qz_fwd_run(f, &w, QZ_STAGE_OUT));
    QZ_CALL(qz_fwd_block_commit(f));
  }
  QZ_CALL(qz_model_load_head(m, 0, 1, &h));
  QZ_CALL(qz_fwd_logits(f, &h, 0, T, logits));
  QZ_CALL(write_file(odir, "logits.f32", logits, sizeof(float) * (size_t)(T * V)));
  QZ_CALL(write_file(odir, "route.i32", ri, sizeof(int32_t) * (size_t)(nmoe * T * k)));
  QZ_CALL(write_file(odir, "route.f32", rw, sizeof(float) * (size_t)(nmoe * T * k)));
  printf("dumped %lld windows x %lld tokens, vocab %lld, %d MoE blocks (top-%lld)\n",
         (long long)nwin, (long long)L, (long long)V, nmoe, (long long)k);
  free(logits);
  free(ri);
  free(rw);
  free(ids);
  qz_head_weights_free(&h);
  qz_block_weights_free(&w);
  qz_fwd_destroy(&f);
  qz_model_close(&m);
  return QZ_OK;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int st = argc == 4 ? run(argv[1], argv[2], argv[3]) : QZ_ERR_USAGE;
  if (st) fprintf(stderr, "qzt_arch_dump: %s\n", argc == 4 ? qz_error_message() :
                  "usage: qzt_arch_dump MODEL_DIR IDS_FILE OUT_DIR");
  MPI_Finalize();
  return st ? 1 : 0;
}
