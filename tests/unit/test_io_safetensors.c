/* safetensors reader/writer on the real test models: tensor count and
 * parameter count, BF16 variant = F32 rounded to BF16 (RNE), exact
 * half-precision conversions, row-range reads, writer round trip (byte
 * identical to the reference writer's file), and a sharded copy. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"
#include "qz_test.h"

static uint32_t bits32(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Independent f32 -> bf16 round to nearest even, in double arithmetic:
 * scale so the kept bits are the integer part and let rint decide. */
static uint16_t ref_bf16(float f) {
  if (isnan(f)) return (uint16_t)((bits32(f) >> 16) | 0x40);
  if (f == 0.0f || isinf(f)) return (uint16_t)(bits32(f) >> 16);
  int e;
  (void)frexp((double)f, &e); /* f = m * 2^e, 0.5 <= |m| < 1 */
  if (e < -125) e = -125;          /* subnormal range: fixed quantum */
  double q = ldexp(1.0, e - 8);    /* bf16 keeps 8 significant bits */
  double r = rint((double)f / q) * q;
  return (uint16_t)(bits32((float)r) >> 16);
}

static void *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *p = malloc((size_t)n + 1);
  if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
    free(p);
    p = NULL;
  }
  fclose(f);
  *len = (size_t)n;
  return p;
}

static void test_f32_model(const char *dir) {
  qz_st *st = NULL;
  if (!QZT_OK(qz_st_open(dir, &st))) return;
  QZT_CHECK(qz_st_count(st) == 47, "47 tensors, got %d", qz_st_count(st));
  QZT_CHECK(qz_st_nfiles(st) == 1, "one file");
  int64_t params = 0;
  int all_f32 = 1;
  for (int i = 0; i < qz_st_count(st); i++) {
    const qz_tensor_info *ti = qz_st_info_at(st, i);
    params += ti->nelem;
    all_f32 &= ti->dtype == QZ_DT_F32;
    if (i) QZT_CHECK(strcmp(qz_st_info_at(st, i - 1)->name, ti->name) < 0,
                     "sorted by name");
  }
  QZT_CHECK(params == 260032, "260,032 parameters, got %lld", (long long)params);
  QZT_CHECK(all_f32, "all F32");
  const char *fmt = qz_st_metadata(st, "format");
  QZT_CHECK(fmt && strcmp(fmt, "pt") == 0, "__metadata__ format=pt");
  QZT_CHECK(qz_st_metadata_count(st) == 1, "one metadata key");
  const qz_tensor_info *ti = qz_st_find(st, "model.layers.2.mlp.down_proj.weight");
  QZT_CHECK(ti && ti->ndim == 2 && ti->shape[0] == 64 && ti->shape[1] == 172,
            "down_proj [64,172]");
  QZT_CHECK(qz_st_find(st, "lm_head.weight") == NULL, "no lm_head (tied)");
  QZT_FAILS(qz_st_get(st, "lm_head.weight", &ti), QZ_ERR_FORMAT,
            "tensor 'lm_head.weight' not found");

  /* row ranges equal slices of the zero-copy view */
  const void *raw = NULL;
  QZT_OK(qz_st_data(st, "model.embed_tokens.weight", &raw));
  float rows[4 * 64];
  QZT_OK(qz_st_read_f32(st, "model.embed_tokens.weight", 508, 4, rows));
  QZT_CHECK(raw && memcmp(rows, (const float *)raw + 508 * 64, sizeof rows) == 0,
            "rows 508..511 equal the mmapped bytes");
  QZT_CHECK(qz_st_bytes_read(st) == (int64_t)sizeof rows, "bytes_read %lld",
            (long long)qz_st_bytes_read(st));
  QZT_FAILS(qz_st_read_f32(st, "model.embed_tokens.weight", 509, 4, rows),
            QZ_ERR_ARG, "rows [509, 513) requested, tensor has 512 rows");
  float nrm[64];
  QZT_OK(qz_st_read_f32(st, "model.norm.weight", 0, 64, nrm)); /* 1-D */
  QZT_CHECK(nrm[0] != 0.0f, "norm loaded");
  qz_st_close(&st);
  QZT_CHECK(st == NULL, "close NULLs");
  qz_st_close(&st); /* accepts NULL */
}

static void test_bf16_model(const char *f32dir, const char *bfdir) {
  qz_st *a = NULL, *b = NULL;
  if (!QZT_OK(qz_st_open(f32dir, &a)) || !QZT_OK(qz_st_open(bfdir, &b))) {
    qz_st_close(&a);
    return;
  }
  QZT_CHECK(qz_st_count(b) == 47, "bf16: 47 tensors");
  int64_t mism_mine = 0, mism_ref = 0, mism_read = 0, total = 0;
  for (int i = 0; i < qz_st_count(a) && i < qz_st_count(b); i++) {
    const qz_tensor_info *ta = qz_st_info_at(a, i), *tb = qz_st_info_at(b, i);
    QZT_CHECK(strcmp(ta->name, tb->name) == 0 && tb->dtype == QZ_DT_BF16 &&
                  ta->nelem == tb->nelem, "same tensor %s in BF16", ta->name);
    if (strcmp(ta->name, tb->name) || ta->nelem != tb->nelem) continue;
    const float *fa;
    const uint16_t *hb;
    QZT_OK(qz_st_data(a, ta->name, (const void **)&fa));
    QZT_OK(qz_st_data(b, tb->name, (const void **)&hb));
    float *conv = malloc((size_t)tb->nelem * sizeof *conv);
    int64_t rows = tb->ndim ? tb->shape[0] : 1;
    QZT_OK(qz_st_read_f32(b, tb->name, 0, rows, conv));
    for (int64_t j = 0; j < ta->nelem; j++) {
      uint16_t h;
      memcpy(&h, hb + j, 2);
      mism_mine += qz_f32_to_bf16(fa[j]) != h;
      mism_ref += ref_bf16(fa[j]) != h;
      mism_read += bits32(conv[j]) != ((uint32_t)h << 16);
      total++;
    }
    free(conv);
  }
  QZT_CHECK(total == 260032, "compared all %lld values", (long long)total);
  QZT_CHECK(mism_mine == 0, "qz_f32_to_bf16(F32 model) == BF16 file: %lld "
            "mismatches", (long long)mism_mine);
  QZT_CHECK(mism_ref == 0, "independent RNE(F32 model) == BF16 file: %lld "
            "mismatches", (long long)mism_ref);
  QZT_CHECK(mism_read == 0, "BF16 -> f32 read exact: %lld mismatches",
            (long long)mism_read);
  qz_st_close(&a);
  qz_st_close(&b);
}

static void test_half_conversions(void) {
  /* BF16 edge cases against the independent reference */
  const float cases[] = {0.0f, -0.0f, 1.0f, 1.00390625f, 1.01171875f,
                         1.005859375f, 3.0e38f, 3.4028235e38f, 1e-40f, -1e-45f,
                         INFINITY, -INFINITY, 1.17549435e-38f};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    QZT_CHECK(qz_f32_to_bf16(cases[i]) == ref_bf16(cases[i]),
              "bf16(%g): %04x vs %04x", cases[i], qz_f32_to_bf16(cases[i]),
              ref_bf16(cases[i]));
  QZT_CHECK(isnan(qz_bf16_to_f32(qz_f32_to_bf16(NAN))), "bf16 nan stays nan");
  uint64_t seed = 42;
  int64_t bad = 0;
  for (int i = 0; i < 200000; i++) {
    float f = from_bits((uint32_t)qzt_rand_u64(&seed));
    if (isnan(f)) continue;
    bad += qz_f32_to_bf16(f) != ref_bf16(f);
  }
  QZT_CHECK(bad == 0, "bf16 RNE on 200k random bit patterns: %lld mismatches",
            (long long)bad);

  /* F16: every one of the 65536 patterns round-trips exactly, and the value
   * agrees with its definition (sign, exponent, mantissa; subnormals). */
  int64_t rt_bad = 0, val_bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = qz_f16_to_f32((uint16_t)h);
    uint32_t e = (h >> 10) & 31, m = h & 1023;
    double want = e == 0 ? ldexp((double)m, -24)
                         : e == 31 ? (m ? NAN : INFINITY)
                                   : ldexp(1024.0 + m, (int)e - 25);
    if (h & 0x8000) want = -want;
    if (e == 31 && m) {
      val_bad += !isnan(f);
      rt_bad += !isnan(qz_f16_to_f32(qz_f32_to_f16(f)));
    } else {
      val_bad += (double)f != want || (signbit(f) != 0) != ((h & 0x8000) != 0);
      rt_bad += qz_f32_to_f16(f) != h;
    }
  }
  QZT_CHECK(val_bad == 0, "f16 -> f32 values exact: %lld wrong", (long long)val_bad);
  QZT_CHECK(rt_bad == 0, "f16 -> f32 -> f16 round trip: %lld wrong", (long long)rt_bad);
  /* f32 -> f16 rounding: halfway cases go to even, overflow to inf */
  QZT_CHECK(qz_f32_to_f16(65504.0f) == 0x7bff, "max f16");
  QZT_CHECK(qz_f32_to_f16(65519.99f) == 0x7bff, "below the inf threshold");
  QZT_CHECK(qz_f32_to_f16(65520.0f) == 0x7c00, "65520 rounds to inf");
  QZT_CHECK(qz_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00, "tie to even (down)");
  QZT_CHECK(qz_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02, "tie to even (up)");
  QZT_CHECK(qz_f32_to_f16(0x1p-25f) == 0x0000, "half of min subnormal -> 0");
  QZT_CHECK(qz_f32_to_f16(0x1.8p-25f) == 0x0001, "0.75 min subnormal -> 1");
  QZT_CHECK(qz_f32_to_f16(3 * 0x1p-25f) == 0x0002, "1.5 quanta tie -> 2");
#if defined(__FLT16_MAX__) && !defined(__clang__)
  int64_t f16bad = 0;
  seed = 7;
  for (int i = 0; i < 200000; i++) {
    float f = from_bits((uint32_t)qzt_rand_u64(&seed) & 0xbfffffffu);
    if (i & 1) f = (float)(qzt_rand_normal(&seed) * 1e-4);
    _Float16 c = (_Float16)f;
    uint16_t hb;
    memcpy(&hb, &c, 2);
    f16bad += !isnan(f) && qz_f32_to_f16(f) != hb;
  }
  QZT_CHECK(f16bad == 0, "f32 -> f16 equals the compiler's _Float16: %lld "
            "mismatches", (long long)f16bad);
#endif
}

static void test_writer(const char *f32file) {
  const char *tmp = qzt_tmpdir();
  if (!tmp) return;
  char path[1024];
  snprintf(path, sizeof path, "%s", qzt_path(tmp, "rt.safetensors"));
  qz_st_writer *w = NULL;
  if (!QZT_OK(qz_st_writer_create(path, &w))) return;
  double d[6] = {1.0, -2.5, 1e-30, 3.0e38, 1e300, 0.1};
  uint16_t bf[3] = {0x3f80, 0xc000, 0x0001};
  uint16_t hf[3] = {0x3c00, 0x0001, 0xfc00};
  int32_t iv[5] = {1, -2, 3, -4, 5};
  uint8_t u8[3] = {0, 127, 255};
  int64_t s23[2] = {2, 3}, s3[1] = {3}, s5[1] = {5};
  QZT_OK(qz_st_writer_meta(w, "zeta", "last"));
  QZT_OK(qz_st_writer_meta(w, "alpha", "first"));
  QZT_OK(qz_st_writer_add(w, "z.f64", QZ_DT_F64, 2, s23, d));
  QZT_OK(qz_st_writer_add(w, "b.bf16", QZ_DT_BF16, 1, s3, bf));
  QZT_OK(qz_st_writer_add(w, "c.f16", QZ_DT_F16, 1, s3, hf));
  QZT_OK(qz_st_writer_add(w, "a.i32", QZ_DT_I32, 1, s5, iv));
  QZT_OK(qz_st_writer_add(w, "e.u8", QZ_DT_U8, 1, s3, u8));
  QZT_OK(qz_st_writer_add(w, "empty", QZ_DT_F32, 1, (int64_t[]){0}, NULL));
  QZT_OK(qz_st_writer_add(w, "scalar", QZ_DT_F32, 0, NULL, (float[]){7.0f}));
  QZT_FAILS(qz_st_writer_add(w, "a.i32", QZ_DT_I32, 1, s5, iv), QZ_ERR_ARG,
            "added twice");
  QZT_OK(qz_st_writer_finish(&w));
  QZT_CHECK(w == NULL, "finish frees the writer");

  size_t len = 0;
  unsigned char *img = read_all(path, &len);
  QZT_CHECK(img && len > 8, "written file readable");
  if (img) {
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)img[i] << (8 * i);
    QZT_CHECK((8 + hl) % 8 == 0, "data section 8-byte aligned (header %llu)",
              (unsigned long long)hl);
    QZT_CHECK(img[8 + hl - 1] == ' ' || img[8 + hl - 1] == '}', "space padding");
    const char *h = (const char *)img + 8;
    const char *pm = strstr(h, "\"__metadata__\":{\"alpha\":\"first\",\"zeta\":\"last\"}");
    const char *pa = strstr(h, "\"a.i32\""), *pz = strstr(h, "\"z.f64\"");
    QZT_CHECK(pm && pa && pz && pm < pa && pa < pz,
              "header: __metadata__ first with sorted keys, tensors sorted");
  }
  free(img);
  FILE *tf = fopen(qzt_path(tmp, "rt.safetensors.tmp"), "rb");
  QZT_CHECK(tf == NULL, "no temporary left behind");
  if (tf) fclose(tf);

  qz_st *st = NULL;
  if (QZT_OK(qz_st_open(path, &st))) {
    QZT_CHECK(qz_st_count(st) == 7, "7 tensors back");
    float f[6];
    QZT_OK(qz_st_read_f32(st, "z.f64", 1, 1, f));
    QZT_CHECK(f[0] == 3.0e38f && f[1] == INFINITY && f[2] == 0.1f,
              "F64 row 1 -> f32 (inf on overflow)");
    QZT_OK(qz_st_read_f32(st, "z.f64", 0, 2, f));
    QZT_CHECK(f[5] == 0.1f && f[1] == -2.5f, "F64 -> f32 rounds to nearest");
    QZT_OK(qz_st_read_f32(st, "b.bf16", 0, 3, f));
    QZT_CHECK(f[0] == 1.0f && f[1] == -2.0f && f[2] == 0x1p-133f, "BF16 values");
    QZT_OK(qz_st_read_f32(st, "c.f16", 0, 3, f));
    QZT_CHECK(f[0] == 1.0f && f[1] == 0x1p-24f && f[2] == -INFINITY, "F16 values");
    QZT_OK(qz_st_read_f32(st, "scalar", 0, 1, f));
    QZT_CHECK(f[0] == 7.0f, "scalar");
    const qz_tensor_info *ti = qz_st_find(st, "empty");
    QZT_CHECK(ti && ti->nelem == 0 && ti->nbytes == 0, "empty tensor kept");
    const void *p;
    QZT_OK(qz_st_data(st, "a.i32", &p));
    QZT_CHECK(memcmp(p, iv, sizeof iv) == 0, "I32 bytes");
    QZT_FAILS(qz_st_read_f32(st, "a.i32", 0, 5, f), QZ_ERR_FORMAT,
              "dtype I32, which cannot be converted to f32");
    QZT_CHECK(strcmp(qz_st_metadata(st, "zeta"), "last") == 0, "metadata");
    qz_st_close(&st);
  }

  /* Copy of the real model through the writer is byte-identical to the
   * reference writer's file (same header layout, order and padding). */
  qz_st *src = NULL;
  if (!QZT_OK(qz_st_open(f32file, &src))) return;
  const char *cp = qzt_path(tmp, "copy.safetensors");
  QZT_OK(qz_st_writer_create(cp, &w));
  QZT_OK(qz_st_writer_meta(w, "format", "pt"));
  for (int i = qz_st_count(src) - 1; i >= 0; i--) { /* reverse: writer sorts */
    const qz_tensor_info *ti = qz_st_info_at(src, i);
    const void *p;
    QZT_OK(qz_st_data(src, ti->name, &p));
    QZT_OK(qz_st_writer_add(w, ti->name, ti->dtype, ti->ndim, ti->shape, p));
  }
  QZT_OK(qz_st_writer_finish(&w));
  size_t la = 0, lb = 0;
  void *a = read_all(f32file, &la), *b = read_all(cp, &lb);
  QZT_CHECK(a && b && la == lb && memcmp(a, b, la) == 0,
            "writer copy byte-identical to the original (%zu vs %zu bytes)",
            la, lb);
  free(a);
  free(b);
  qz_st_close(&src);
}

/* Shards made with the writer + an index.json; opened through the directory
 * and through the index path, every tensor's bytes equal the original. */
static void test_sharded(const char *f32file) {
  const char *tmp = qzt_tmpdir();
  if (!tmp) return;
  qz_st *src = NULL;
  if (!QZT_OK(qz_st_open(f32file, &src))) return;
  const int nshard = 3;
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", qzt_path(tmp, "sharded"));
  char cmd[1100];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
  QZT_CHECK(system(cmd) == 0, "mkdir");
  json_t *idx = json_object(), *wm = json_object(), *meta = json_object();
  int64_t total = 0;
  for (int s = 0; s < nshard; s++) {
    char name[64];
    snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, nshard);
    qz_st_writer *w = NULL;
    QZT_OK(qz_st_writer_create(qzt_path(dir, name), &w));
    QZT_OK(qz_st_writer_meta(w, "format", "pt"));
    for (int i = s; i < qz_st_count(src); i += nshard) {
      const qz_tensor_info *ti = qz_st_info_at(src, i);
      const void *p;
      QZT_OK(qz_st_data(src, ti->name, &p));
      QZT_OK(qz_st_writer_add(w, ti->name, ti->dtype, ti->ndim, ti->shape, p));
      json_object_set_new(wm, ti->name, json_string(name));
      total += ti->nbytes;
    }
    QZT_OK(qz_st_writer_finish(&w));
  }
  json_object_set_new(meta, "total_size", json_integer(total));
  json_object_set_new(idx, "metadata", meta);
  json_object_set_new(idx, "weight_map", wm);
  QZT_CHECK(json_dump_file(idx, qzt_path(dir, "model.safetensors.index.json"),
                           JSON_INDENT(2)) == 0, "index written");
  json_decref(idx);

  for (int via = 0; via < 2; via++) {
    qz_st *sh = NULL;
    const char *p = via ? qzt_path(dir, "model.safetensors.index.json") : dir;
    if (!QZT_OK(qz_st_open(p, &sh))) continue;
    QZT_CHECK(qz_st_nfiles(sh) == nshard, "%d shards, got %d", nshard,
              qz_st_nfiles(sh));
    QZT_CHECK(qz_st_count(sh) == qz_st_count(src), "all tensors");
    int same = 1;
    for (int i = 0; i < qz_st_count(src); i++) {
      const qz_tensor_info *a = qz_st_info_at(src, i), *b = qz_st_info_at(sh, i);
      const void *pa, *pb;
      if (!b || strcmp(a->name, b->name) || a->nbytes != b->nbytes) {
        same = 0;
        continue;
      }
      qz_st_data(src, a->name, &pa);
      qz_st_data(sh, b->name, &pb);
      same &= memcmp(pa, pb, (size_t)a->nbytes) == 0;
      if (i == 0 || i == 1)
        QZT_CHECK(strstr(b->file, i == 0 ? "model-00001-of-00003" :
                                           "model-00002-of-00003") != NULL,
                  "tensor %d in the right shard: %s", i, b->file);
    }
    QZT_CHECK(same, "sharded copy equals the original (via %s)",
              via ? "index" : "dir");
    QZT_CHECK(qz_st_metadata(sh, "format") != NULL, "metadata of shard 1");
    float row[64];
    QZT_OK(qz_st_read_f32(sh, "model.embed_tokens.weight", 7, 1, row));
    qz_st_close(&sh);
  }
  qz_st_close(&src);
}

/* Reading row slices of a mapped file does not leave the file in RSS:
 * 64 MiB of F32 read in 1 MiB slices grows RSS by less than RSS_SLACK
 * (without dropping the converted pages it grows by the whole 64 MiB).
 * Also: I8 + weight_scale reads dequantized, exactly. */
#define RSS_SLACK (16LL << 20)
static void test_rss_and_int8(void) {
  const char *tmp = qzt_tmpdir();
  if (!tmp) return;
  char path[1024];
  snprintf(path, sizeof path, "%s", qzt_path(tmp, "big.safetensors"));
  const int64_t R = 4096, C = 4096, CH = 64;
  float *buf = NULL;
  if (!QZT_OK(qz_alloc((size_t)(R * C), 4, "big", &buf))) return;
  for (int64_t i = 0; i < R * C; i++) buf[i] = (float)(i % 1000) * 0.5f;
  int8_t q[6] = {-128, -1, 0, 1, 2, 127};
  float sc[2] = {0.25f, 3.0f};
  qz_st_writer *w = NULL;
  if (QZT_OK(qz_st_writer_create(path, &w))) {
    QZT_OK(qz_st_writer_add(w, "big", QZ_DT_F32, 2, (int64_t[]){R, C}, buf));
    QZT_OK(qz_st_writer_add(w, "l.weight", QZ_DT_I8, 2, (int64_t[]){2, 3}, q));
    QZT_OK(qz_st_writer_add(w, "l.weight_scale", QZ_DT_F32, 2, (int64_t[]){2, 1}, sc));
    QZT_OK(qz_st_writer_add(w, "bare", QZ_DT_I8, 2, (int64_t[]){2, 3}, q));
    int32_t qw[8], qzs[1] = {0}, gi[8] = {0};
    uint16_t sc16[8];
    for (int o = 0; o < 8; o++) {
      uint32_t word = 0;
      for (int i = 0; i < 8; i++) word |= (uint32_t)((o + i) & 15) << (4 * i);
      qw[o] = (int32_t)word;
      qzs[0] = (int32_t)((uint32_t)qzs[0] | (7u << (4 * o)));
      sc16[o] = 0x3800;
    }
    QZT_OK(qz_st_writer_add(w, "g.qweight", QZ_DT_I32, 2, (int64_t[]){1, 8}, qw));
    QZT_OK(qz_st_writer_add(w, "g.qzeros", QZ_DT_I32, 2, (int64_t[]){1, 1}, qzs));
    QZT_OK(qz_st_writer_add(w, "g.scales", QZ_DT_F16, 2, (int64_t[]){1, 8}, sc16));
    QZT_OK(qz_st_writer_add(w, "g.g_idx", QZ_DT_I32, 1, (int64_t[]){8}, gi));
    QZT_OK(qz_st_writer_add(w, "h.qweight", QZ_DT_I32, 2, (int64_t[]){1, 8}, qw));
    QZT_OK(qz_st_writer_add(w, "h.qzeros", QZ_DT_I32, 2, (int64_t[]){1, 1}, qzs));
    QZT_OK(qz_st_writer_add(w, "h.scales", QZ_DT_F16, 2, (int64_t[]){1, 8}, sc16));
    QZT_OK(qz_st_writer_finish(&w));
  }
  free(buf);
  buf = NULL;
  qz_st *st = NULL;
  float *chunk = NULL;
  if (!QZT_OK(qz_st_open(path, &st)) ||
      !QZT_OK(qz_alloc((size_t)(CH * C), 4, "chunk", &chunk))) {
    qz_st_close(&st);
    return;
  }
  memset(chunk, 0, (size_t)(CH * C) * 4);
  int64_t rss0 = qz_rss_bytes(), bad = 0;
  for (int64_t r = 0; r < R; r += CH) {
    if (!QZT_OK(qz_st_read_f32(st, "big", r, CH, chunk))) break;
    for (int64_t i = 0; i < CH * C; i++)
      bad += chunk[i] != (float)(((r * C) + i) % 1000) * 0.5f;
  }
  int64_t grow = qz_rss_bytes() - rss0;
  QZT_CHECK(bad == 0, "64 MiB read back: %lld values differ", (long long)bad);
  printf("rss growth after reading 64 MiB of a mapped file: %.1f MiB\n", grow / 1048576.0);
  QZT_CHECK(grow < RSS_SLACK, "RSS grew by %lld bytes reading 64 MiB in slices",
            (long long)grow);
  float d[6];
  if (QZT_OK(qz_st_read_f32(st, "l.weight", 0, 2, d))) {
    const float want[6] = {-32.0f, -0.25f, 0.0f, 3.0f, 6.0f, 381.0f};
    QZT_CHECK(memcmp(d, want, sizeof d) == 0, "I8 x weight_scale dequantized exactly");
  }
  QZT_CHECK(qz_st_is_int8_scaled(st, "l.weight") && !qz_st_is_int8_scaled(st, "bare"),
            "int8-scaled detection");
  QZT_FAILS(qz_st_read_f32(st, "bare", 0, 2, d), QZ_ERR_FORMAT,
            "tensor 'bare' has dtype I8, which cannot be converted to f32");
  /* GPTQ v1 linear "g.weight" [8 out, 8 in], 4 bits, one group: codes
   * q[o][i] = (o + i) & 15 packed along i, zero 8 stored as 7, scale 0.5
   * (f16 0x3800): W = 0.5 * (q - 8); "h" lacks its g_idx */
  float gw[64];
  int64_t go = 0, gin = 0;
  int gb = 0;
  if (QZT_OK(qz_st_gptq_shape(st, "g.weight", &go, &gin, &gb)))
    QZT_CHECK(go == 8 && gin == 8 && gb == 4, "GPTQ shape [%lld, %lld] %d bits",
              (long long)go, (long long)gin, gb);
  if (QZT_OK(qz_st_read_f32(st, "g.weight", 2, 3, gw))) {
    int64_t bad = 0;
    for (int o = 2; o < 5; o++)
      for (int i = 0; i < 8; i++) bad += gw[(o - 2) * 8 + i] != 0.5f * (float)(((o + i) & 15) - 8);
    QZT_CHECK(bad == 0, "GPTQ rows 2..4 dequantized: %lld values differ", (long long)bad);
  }
  QZT_FAILS(qz_st_read_f32(st, "h.weight", 0, 1, gw), QZ_ERR_FORMAT,
            "GPTQ tensor 'h.weight' has qweight but lacks g_idx");
  free(chunk);
  qz_st_close(&st);
  remove(path);
}

int main(int argc, char **argv) {
  qzt_init(&argc, &argv);
  const char *shared = qzt_shared();
  test_half_conversions();
  test_rss_and_int8();
  if (shared) {
    char f32dir[1024], bfdir[1024], f32file[1100];
    snprintf(f32dir, sizeof f32dir, "%s", qzt_path(shared, "models/stories260K-hf"));
    snprintf(bfdir, sizeof bfdir, "%s", qzt_path(shared, "models/stories260K-hf-bf16"));
    snprintf(f32file, sizeof f32file, "%s/model.safetensors", f32dir);
    test_f32_model(f32dir);
    test_bf16_model(f32dir, bfdir);
    test_writer(f32file);
    test_sharded(f32file);
    qz_st *b = NULL;
    if (QZT_OK(qz_st_open(qzt_path(shared, "models/babyllama-tok105-hf"), &b))) {
      int64_t params = 0;
      for (int i = 0; i < qz_st_count(b); i++) params += qz_st_info_at(b, i)->nelem;
      QZT_CHECK(params == 936448, "babyllama 936,448 parameters, got %lld",
                (long long)params);
      qz_st_close(&b);
    }
  }
  return qzt_finish("io_safetensors");
}
