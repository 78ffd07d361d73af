/* mpiquant inspect CKPT: the checkpoint's manifest and, per completed block,
 * what its HDF5 file holds. Rank 0 only, serial HDF5 access. */
#include <hdf5.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "driver.h"
#include "mpiquant/ckpt.h"
#include "mpiquant/error.h"
#include "mpiquant/file.h"
#include "mpiquant/h5zstd.h"

static void print_linear(hid_t f, int block, const char *mod, json_t *stats) {
  char path[256];
  snprintf(path, sizeof path, "/layers/%d/%s", block, mod);
  hid_t g = H5Gopen2(f, path, H5P_DEFAULT);
  if (g < 0) return;
  hsize_t dims[2] = {0, 0}, gd[2] = {0, 0};
  hid_t d = H5Dopen2(g, "codes", H5P_DEFAULT), d2 = H5Dopen2(g, "scales", H5P_DEFAULT);
  if (d >= 0) {
    hid_t s = H5Dget_space(d);
    H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
  }
  if (d2 >= 0) {
    hid_t s = H5Dget_space(d2);
    H5Sget_simple_extent_dims(s, gd, NULL);
    H5Sclose(s);
  }
  int bits = 0, group = 0;
  double loss = 0, damp = 0;
  hid_t a;
  if ((a = H5Aopen(g, "bits", H5P_DEFAULT)) >= 0) { H5Aread(a, H5T_NATIVE_INT, &bits); H5Aclose(a); }
  if ((a = H5Aopen(g, "group_size", H5P_DEFAULT)) >= 0) { H5Aread(a, H5T_NATIVE_INT, &group); H5Aclose(a); }
  if ((a = H5Aopen(g, "loss", H5P_DEFAULT)) >= 0) { H5Aread(a, H5T_NATIVE_DOUBLE, &loss); H5Aclose(a); }
  if ((a = H5Aopen(g, "damp_used", H5P_DEFAULT)) >= 0) { H5Aread(a, H5T_NATIVE_DOUBLE, &damp); H5Aclose(a); }
  hsize_t stored = d >= 0 ? H5Dget_storage_size(d) : 0;
  printf("    %-18s codes [%llu, %llu] u8 (%.1fx zstd)  groups %llu  w%d g%d  loss %.6g  damp %.3g",
         mod, (unsigned long long)dims[0], (unsigned long long)dims[1],
         stored ? (double)(dims[0] * dims[1]) / (double)stored : 0.0,
         (unsigned long long)gd[1], bits, group, loss, damp);
  json_t *bpp = json_object_get(json_object_get(stats, mod), "bits_per_param");
  if (json_is_number(bpp)) printf("  %.3f bit/param", json_number_value(bpp));
  printf("\n");
  if (d >= 0) H5Dclose(d);
  if (d2 >= 0) H5Dclose(d2);
  H5Gclose(g);
}

typedef struct {
  int blk;
  json_t *stats;
} expert_ctx;

static herr_t print_expert(hid_t g, const char *name, const H5L_info_t *info, void *vctx) {
  (void)g;
  (void)info;
  expert_ctx *c = vctx;
  if (strstr(name, "experts.") || strstr(name, "shared_expert.")) {
    hid_t f = H5Iget_file_id(g);
    print_linear(f, c->blk, name, c->stats);
    H5Fclose(f);
  }
  return 0;
}

int qz_inspect_ckpt(const char *dir, int as_json) {
  char path[4200];
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  json_error_t jerr;
  /* what eval and export accept, inspect accepts: the same manifest checks */
  {
    qz_ckpt *ck = NULL;
    QZ_CALL(qz_ckpt_open(MPI_COMM_SELF, dir, &ck));
    qz_ckpt_close(&ck);
  }
  json_t *m = json_load_file(path, 0, &jerr);
  QZ_CHECK(m, QZ_ERR_FORMAT, "%s: not valid JSON (line %d: %s)", path, jerr.line, jerr.text);
  const char *fmt = json_string_value(json_object_get(m, "format"));
  if (!fmt || strcmp(fmt, QZ_CKPT_FORMAT) != 0) {
    json_decref(m);
    QZ_FAIL(QZ_ERR_FORMAT, "%s: not an %s manifest", path, QZ_CKPT_FORMAT);
  }
  if (as_json) {
    char *t = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    printf("%s\n", t ? t : "{}");
    free(t);
    json_decref(m);
    return QZ_OK;
  }
  json_t *done = json_object_get(m, "completed_blocks");
  int nb = (int)json_integer_value(json_object_get(m, "nblocks"));
  char *opts = json_dumps(json_object_get(m, "options"), JSON_COMPACT | JSON_SORT_KEYS);
  printf("checkpoint %s: %s version %lld, written by mpiquant %s\n", dir, fmt,
         (long long)json_integer_value(json_object_get(m, "version")),
         json_string_value(json_object_get(m, "mpiquant_version")));
  printf("  model: %s\n  options: %s\n", json_string_value(json_object_get(m, "model_dir")),
         opts ? opts : "?");
  free(opts);
  printf("  blocks: %zu of %d complete, %lld per file\n", json_array_size(done), nb,
         (long long)json_integer_value(json_object_get(m, "blocks_per_file")));
  json_t *snap = json_object_get(m, "snapshot");
  if (json_is_object(snap))
    printf("  resume snapshot: hidden states at the input of block %lld\n",
           (long long)json_integer_value(json_object_get(snap, "block")));
  qz_h5zstd_register();
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  size_t i;
  json_t *b;
  static const char *const mods[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                     "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                     "mlp.down_proj"};
  json_array_foreach(done, i, b) {
    int blk = (int)json_integer_value(json_object_get(b, "block"));
    const char *file = json_string_value(json_object_get(b, "file"));
    double secs = json_real_value(json_object_get(json_object_get(b, "stats"), "seconds"));
    printf("  block %d  (%s, %.2f s)\n", blk, file ? file : "?", secs);
    snprintf(path, sizeof path, "%s/%s", dir, file ? file : "");
    hid_t f = qz_file_check_input(path) == QZ_OK
                  ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    if (f < 0) {
      printf("    (cannot open %s)\n", path);
      continue;
    }
    for (int k = 0; k < 7; k++) print_linear(f, blk, mods[k], json_object_get(b, "stats"));
    /* MoE experts ("mlp.experts.3.up_proj", ...), in name order */
    char grp[64];
    snprintf(grp, sizeof grp, "/layers/%d", blk);
    expert_ctx ec = {.blk = blk, .stats = json_object_get(b, "stats")};
    H5Literate_by_name(f, grp, H5_INDEX_NAME, H5_ITER_INC, NULL, print_expert, &ec,
                        H5P_DEFAULT);
    H5Fclose(f);
  }
  json_decref(m);
  return QZ_OK;
}
