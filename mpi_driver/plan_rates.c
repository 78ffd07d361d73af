/* Machine rates for `plan`: defaults, the JSON file, and `plan --calibrate`.
 *
 * Definitions (what each number means, so a rate file from another machine
 * can be written by hand):
 *   sgemm_gflops       cblas_sgemm n = 2048, 1 thread: 2 n^3 / s
 *   ssyrk_gflops       cblas_ssyrk n = 2048, k = 4096, 1 thread: n^2 k / s
 *   dpotrf_gflops      LAPACK dpotrf n = 2000 and 3000, 1 thread: n^3/3 / s
 *                      (best of the sizes)
 *   pdpotrf_eff        pdpotrf + pdpotri at n = 2000 and 3000 on the
 *                      communicator's grid: (2 n^3 / 3) / s / (P x dpotrf
 *                      rate), at the best block size; 0.5 at np 1
 *   grid_nb            that block size: each of nb = 64, 128, 256, 512 is
 *                      measured and the fastest kept (`plan` uses it unless
 *                      --grid-nb is given; pass it to quantize --grid-nb)
 *   allreduce_gbs      MPI_Allreduce (SUM, double) of a 64 MiB object:
 *                      object bytes / s
 *   reduce_scatter_gbs MPI_Reduce_scatter of a 64 MiB object (equal parts)
 *   allgather_gbs      MPI_Allgather into a 64 MiB object
 *   hdf5_write_gbs     collective H5Dwrite of 256 MiB of floats, contiguous
 *   read_gbs           safetensors rows -> f32 (BF16 convert, page cache)
 *   expand_gelems      1 thread, G elements / s, the slower of: BF16 -> f32
 *                      widened in place (qz_raw16_widen_inplace, the load of
 *                      a block gathered in its disk dtype) and 4-bit codes
 *                      dequantized with g128 scales (qz_dequantize_rows_grid,
 *                      the gather of the quantized rows); 8 M elements
 *   fwd_frac           block forward (qz_fwd_block, projections + causal
 *                      attention, GFLOP of qz_fwd_block_flops) of a
 *                      Llama-shaped block (hidden 2048, FFN 8192, 16/4 heads
 *                      of 128, 1 x 1024 tokens) / the sgemm of its gate
 *                      projection, every rank at once, best of 2
 *   gptq_frac          GPTQ sweep (qz_gptq_quantize: w4 g128 act-order,
 *                      B 128, factor panels streamed) of a 4096 x 4096 layer
 *                      on all ranks, sweep flops / s / (P x sgemm rate)
 *   qe_frac            ratio to sgemm from bench_quantease (0.47-0.51 at
 *                      np 2 here; default 0.4): not measured by --calibrate
 *   base_rss_bytes     peak RSS of the calibrating process before the
 *                      measurements (libraries, MPI)
 * Collective rates need np >= 2; at np 1 the defaults are kept for them. */
#include <cblas.h>
#include <errno.h>
#include <hdf5.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpiquant/blas.h"
#include "mpiquant/codes.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/file.h"
#include "mpiquant/files.h"
#include "mpiquant/grid.h"
#include "mpiquant/threads.h"
#include "mpiquant/method.h"
#include "mpiquant/hessian.h"
#include "mpiquant/chol.h"
#include "mpiquant/gptq.h"
#include "mpiquant/forward.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/safetensors.h"
#include "mpiquant/scalapack.h"
#include "mpiquant/timing.h"
#include "plan.h"

/* HDF5 call inside a function with `st` and a `done:` label */
void qz_plan_rates_default(qz_plan_rates *r) {
  /* the 2-core AVX-512 VM of docs/performance.md when not shared, rounded
   * down: OpenBLAS 0.3.21 with Haswell kernels, 1 thread per rank (sgemm
   * ~100, ssyrk ~100, dpotrf ~40 GFLOP/s), np 2 collectives with malloc
   * reuse (64 MiB allreduce 6-9 GB/s), a tiny quantize run's peak RSS */
  *r = (qz_plan_rates){.sgemm_gflops = 100.0,
                       .ssyrk_gflops = 95.0,
                       .dpotrf_gflops = 40.0,
                       .pdpotrf_eff = 0.5,
                       .grid_nb = 128,
                       .gptq_frac = 0.35,
                       .qe_frac = 0.4,
                       .fwd_frac = 0.8,
                       .allreduce_gbs = 4.0,
                       .reduce_scatter_gbs = 4.0,
                       .allgather_gbs = 5.0,
                       .hdf5_write_gbs = 0.5,
                       .read_gbs = 1.0,
                       .expand_gelems = 0.5,
                       .base_rss_bytes = 40.0 * 1048576.0,
                       .measured = 0};
  snprintf(r->source, sizeof r->source, "defaults");
  snprintf(r->blas_kernel, sizeof r->blas_kernel, "Haswell");
}

#define RATE_FIELDS(X)                                                     \
  X(sgemm_gflops) X(ssyrk_gflops) X(dpotrf_gflops) X(pdpotrf_eff) X(grid_nb)         \
  X(gptq_frac) X(qe_frac) X(fwd_frac) X(allreduce_gbs) X(reduce_scatter_gbs) \
  X(allgather_gbs) X(hdf5_write_gbs) X(read_gbs) X(expand_gelems) X(base_rss_bytes)

int qz_plan_rates_load(const char *path, qz_plan_rates *r) {
  json_error_t jerr;
  QZ_CALL(qz_file_check_input(path));
  json_t *j = json_load_file(path, 0, &jerr);
  QZ_CHECK(j && json_is_object(j), QZ_ERR_FORMAT, "rates file %s: %s", path,
           j ? "not a JSON object" : jerr.text);
  qz_plan_rates_default(r);
  int st = QZ_OK, nkeys = 0;
#define LOAD(f)                                                                       \
  {                                                                                   \
    json_t *v = json_object_get(j, #f);                                               \
    if (v) {                                                                          \
      if (!json_is_number(v) || json_number_value(v) <= 0) {                          \
        st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,                \
                          "rates file %s: \"%s\" must be a positive number", path, #f); \
        goto done;                                                                    \
      }                                                                               \
      r->f = json_number_value(v);                                                    \
      nkeys++;                                                                        \
    }                                                                                 \
  }
  RATE_FIELDS(LOAD)
#undef LOAD
  json_t *k = json_object_get(j, "blas_kernel");
  snprintf(r->blas_kernel, sizeof r->blas_kernel, "%s",
           json_is_string(k) ? json_string_value(k) : "unknown");
  /* a file with none of the keys is the defaults, and plan says so */
  r->measured = nkeys > 0;
  snprintf(r->source, sizeof r->source, "%s%s", path, nkeys ? "" : " (no known keys)");
done:
  json_decref(j);
  return st;
}

int qz_plan_rates_save(const char *path, const qz_plan_rates *r) {
  json_t *j = json_object();
#define SAVE(f) json_object_set_new(j, #f, json_real(r->f));
  RATE_FIELDS(SAVE)
#undef SAVE
  json_object_set_new(j, "blas_kernel", json_string(r->blas_kernel));
  /* make the parent directories (for the default location) */
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = '\0';
    int st = qz_mkdir_p(dir);
    if (st != QZ_OK) {
      json_decref(j);
      QZ_CALL(st);
    }
  }
  int rc = json_dump_file(j, path, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(j);
  QZ_CHECK(rc == 0, QZ_ERR_IO, "cannot write the rates file %s: %s", path, strerror(errno));
  return QZ_OK;
}

void qz_plan_rates_default_path(char *buf, size_t len) {
  const char *e = getenv("MPIQUANT_RATES");
  if (e && *e) {
    snprintf(buf, len, "%s", e);
    return;
  }
  const char *x = getenv("XDG_CONFIG_HOME");
  if (x && *x) {
    snprintf(buf, len, "%s/mpiquant/rates.json", x);
    return;
  }
  const char *h = getenv("HOME");
  snprintf(buf, len, "%s/.config/mpiquant/rates.json", h && *h ? h : ".");
}

/* ---- measurements --------------------------------------------------- */

/* Deterministic values in [-1, 1) from a small LCG. */
static float frand(uint32_t *x) {
  *x = *x * 1664525u + 1013904223u;
  return (float)(*x >> 8) / 8388608.0f - 1.0f;
}

/* n values in [-0.5, 0.5) (frand halved: exact) */
static void fill(float *a, int64_t n, uint32_t seed) {
  for (int64_t i = 0; i < n; i++) a[i] = 0.5f * frand(&seed);
}

/* best of 3 */
static double rate_sgemm(void) {
  const int n = 2048;
  float *a = NULL, *b = NULL, *c = NULL;
  double best = 1e30;
  if (qz_alloc((size_t)n * n, 4, "a", &a) || qz_alloc((size_t)n * n, 4, "b", &b) ||
      qz_alloc((size_t)n * n, 4, "c", &c))
    goto done;
  fill(a, (int64_t)n * n, 1);
  fill(b, (int64_t)n * n, 2);
  for (int it = 0; it < 3; it++) {
    double t0 = qz_wtime();
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n,
                0.0f, c, n);
    double t = qz_wtime() - t0;
    if (t < best) best = t;
  }
done:
  free(a);
  free(b);
  free(c);
  return 2.0 * n * (double)n * n / best / 1e9;
}

static double rate_ssyrk(void) {
  const int n = 2048, k = 4096;
  float *a = NULL, *c = NULL;
  double best = 1e30;
  if (qz_alloc((size_t)n * k, 4, "a", &a) || qz_alloc((size_t)n * n, 4, "c", &c)) goto done;
  fill(a, (int64_t)n * k, 3);
  for (int it = 0; it < 3; it++) {
    double t0 = qz_wtime();
    cblas_ssyrk(CblasColMajor, CblasLower, CblasNoTrans, n, k, 1.0f, a, n, 0.0f, c, n);
    double t = qz_wtime() - t0;
    if (t < best) best = t;
  }
done:
  free(a);
  free(c);
  return (double)n * n * k / best / 1e9;
}

/* SPD test matrix: A = n I + small symmetric noise, column-major. */
static void spd(double *a, int64_t n, int64_t lda, int64_t i0, int64_t j0, int64_t m,
                int64_t k) {
  for (int64_t j = 0; j < k; j++)
    for (int64_t i = 0; i < m; i++) {
      int64_t gi = i0 + i, gj = j0 + j;
      uint64_t h = (uint64_t)(gi < gj ? gi * 1315423911u + gj : gj * 1315423911u + gi);
      h = (h ^ (h >> 13)) * 0x5bd1e995u;
      a[i + j * lda] = (gi == gj ? (double)n : 0.0) + (double)(h % 1000) * 1e-4;
    }
}

static double rate_dpotrf(int n) {
  double *a = NULL;
  if (qz_alloc((size_t)n * n, 8, "a", &a)) return 0.0;
  spd(a, n, n, 0, 0, n, n);
  int info = 0;
  double t0 = qz_wtime();
  dpotrf_("L", &n, a, &n, &info, 1);
  double t = qz_wtime() - t0;
  free(a);
  return info == 0 ? (double)n * n * n / 3.0 / t / 1e9 : 0.0;
}

/* pdpotrf + pdpotri on the grid: (2 n^3/3) / s. Collective. */
static int rate_pdpotrf(qz_grid *g, int n, double *gflops) {
  int nb = qz_grid_nb(g), pr, pc, myr, myc;
  qz_grid_shape(g, &pr, &pc, &myr, &myc);
  int64_t ml = qz_bc_numroc(n, nb, myr, pr), nl = qz_bc_numroc(n, nb, myc, pc);
  int lld = (int)(ml > 1 ? ml : 1), desc[9], info = 0, izero = 0, ione = 1,
      ctx = qz_grid_context(g);
  double *a = NULL;
  QZ_CALL(qz_alloc((size_t)lld * (size_t)(nl > 0 ? nl : 1), 8, "pdpotrf test", &a));
  for (int64_t lj = 0; lj < nl; lj++)
    for (int64_t li = 0; li < ml; li++) {
      int64_t gi = qz_bc_global(li, nb, myr, pr), gj = qz_bc_global(lj, nb, myc, pc);
      spd(a + li + lj * lld, n, lld, gi, gj, 1, 1);
    }
  descinit_(desc, &n, &n, &nb, &nb, &izero, &izero, &ctx, &lld, &info);
  MPI_Comm comm = qz_grid_comm(g);
  MPI_Barrier(comm);
  double t0 = qz_wtime();
  pdpotrf_("L", &n, a, &ione, &ione, desc, &info, 1);
  if (info == 0) pdpotri_("L", &n, a, &ione, &ione, desc, &info, 1);
  double t = qz_wtime() - t0;
  free(a);
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, comm));
  QZ_CHECK(info == 0, QZ_ERR_SCALAPACK, "calibration pdpotrf/pdpotri info %d", info);
  *gflops = 2.0 * n * (double)n * n / 3.0 / t / 1e9;
  return QZ_OK;
}

/* object bytes / s of three collectives on a 64 MiB double object. */
static int rate_coll(MPI_Comm comm, double *ar, double *rs, double *ag) {
  int P;
  MPI_Comm_size(comm, &P);
  int64_t n = (64LL << 20) / 8 / P * P;
  double *a = NULL, *b = NULL;
  int st = QZ_OK;
  QZ_CALL_DONE(qz_alloc_big((size_t)n * 8, "collective test", &a));
  QZ_CALL_DONE(qz_alloc_big((size_t)n * 8, "collective test", &b));
  for (int64_t i = 0; i < n; i++) a[i] = b[i] = (double)(i % 7);
  int *cnt = NULL;
  QZ_CALL_DONE(qz_alloc((size_t)P, sizeof(int), "counts", &cnt));
  for (int p = 0; p < P; p++) cnt[p] = (int)(n / P);
  double best[3] = {1e30, 1e30, 1e30};
  for (int it = 0; it < 4; it++) { /* the first round also touches the pages */
    double t0;
    MPI_Barrier(comm);
    t0 = qz_wtime();
    QZ_CALL_MPI_DONE(MPI_Allreduce(MPI_IN_PLACE, a, (int)n, MPI_DOUBLE, MPI_SUM, comm));
    double t1 = qz_wtime() - t0;
    MPI_Barrier(comm);
    t0 = qz_wtime();
    QZ_CALL_MPI_DONE(MPI_Reduce_scatter(a, b, cnt, MPI_DOUBLE, MPI_SUM, comm));
    double t2 = qz_wtime() - t0;
    MPI_Barrier(comm);
    t0 = qz_wtime();
    QZ_CALL_MPI_DONE(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, a, (int)(n / P),
                              MPI_DOUBLE, comm));
    double t3 = qz_wtime() - t0;
    if (it > 0) {
      if (t1 < best[0]) best[0] = t1;
      if (t2 < best[1]) best[1] = t2;
      if (t3 < best[2]) best[2] = t3;
    }
  }
  QZ_CALL_MPI_DONE(MPI_Allreduce(MPI_IN_PLACE, best, 3, MPI_DOUBLE, MPI_MAX, comm));
  *ar = n * 8.0 / best[0] / 1e9;
  *rs = n * 8.0 / best[1] / 1e9;
  *ag = n * 8.0 / best[2] / 1e9;
done:
  qz_free_big(&a, (size_t)n * 8);
  qz_free_big(&b, (size_t)n * 8);
  free(cnt);
  return st;
}

/* Collective contiguous write of 256 MiB of floats (each rank a slab). */
static int rate_hdf5(MPI_Comm comm, const char *dir, double *gbs) {
  int P, rank;
  MPI_Comm_size(comm, &P);
  MPI_Comm_rank(comm, &rank);
  hsize_t total = (256ULL << 20) / 4 / (hsize_t)P * (hsize_t)P, mine = total / (hsize_t)P;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/mpiquant-calibrate-%d.h5", dir, (int)getpid());
  QZ_CALL_MPI(MPI_Bcast(path, (int)sizeof path, MPI_CHAR, 0, comm));
  float *buf = NULL;
  QZ_CALL(qz_alloc_big(mine * 4, "HDF5 test", &buf));
  fill(buf, (int64_t)mine, 5);
  int st = QZ_OK;
  hid_t fapl = -1, file = -1, space = -1, mspace = -1, dset = -1, dxpl = -1;
  MPI_Barrier(comm);
  double t0 = qz_wtime();
  QZ_CALL_H5_DONE(fapl = H5Pcreate(H5P_FILE_ACCESS));
  QZ_CALL_H5_DONE(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
  file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  QZ_CHECK_DONE(file >= 0, QZ_ERR_HDF5, "calibration: cannot create %s (use --scratch DIR)",
                path);
  QZ_CALL_H5_DONE(space = H5Screate_simple(1, &total, NULL));
  QZ_CALL_H5_DONE(dset = H5Dcreate2(file, "x", H5T_NATIVE_FLOAT, space, H5P_DEFAULT, H5P_DEFAULT,
                               H5P_DEFAULT));
  hsize_t off = mine * (hsize_t)rank;
  QZ_CALL_H5_DONE(H5Sselect_hyperslab(space, H5S_SELECT_SET, &off, NULL, &mine, NULL));
  QZ_CALL_H5_DONE(mspace = H5Screate_simple(1, &mine, NULL));
  QZ_CALL_H5_DONE(dxpl = H5Pcreate(H5P_DATASET_XFER));
  QZ_CALL_H5_DONE(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
  QZ_CALL_H5_DONE(H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, space, dxpl, buf));
  H5Dclose(dset);
  dset = -1;
  H5Fclose(file);
  file = -1;
  double t = qz_wtime() - t0;
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, comm));
  *gbs = (double)total * 4.0 / t / 1e9;
done:
  if (dxpl >= 0) H5Pclose(dxpl);
  if (mspace >= 0) H5Sclose(mspace);
  if (space >= 0) H5Sclose(space);
  if (dset >= 0) H5Dclose(dset);
  if (file >= 0) H5Fclose(file);
  if (fapl >= 0) H5Pclose(fapl);
  MPI_Barrier(comm);
  if (rank == 0) unlink(path);
  qz_free_big(&buf, mine * 4);
  return st;
}

/* BF16 -> f32 conversion rate (what a read from the page cache costs). */
static double rate_read(void) {
  const int64_t n = 32LL << 20;
  uint16_t *h = NULL;
  float *f = NULL;
  double best = 1e30;
  if (qz_alloc((size_t)n, 2, "bf16", &h) || qz_alloc((size_t)n, 4, "f32", &f)) goto done;
  for (int64_t i = 0; i < n; i++) h[i] = (uint16_t)(0x3f80 + (i & 127));
  for (int it = 0; it < 3; it++) {
    double t0 = qz_wtime();
    for (int64_t i = 0; i < n; i++) f[i] = qz_bf16_to_f32(h[i]);
    double t = qz_wtime() - t0;
    if (t < best) best = t;
  }
done:
  free(h);
  free(f);
  return (double)n * 2.0 / best / 1e9;
}

/* Widening and dequantization rate, 1 thread (what every rank spends on
 * a block gathered in 16 bits and on the codes gathered after quantizing). */
static double rate_expand(void) {
  const int64_t rows = 512, in = 16384, n = rows * in, ng = in / 128;
  float *f = NULL, *sc = NULL, *z = NULL;
  uint8_t *c = NULL;
  int32_t *gi = NULL;
  double bw = 1e30, bd = 1e30;
  if (qz_alloc((size_t)n, 4, "f32", &f) || qz_alloc((size_t)n, 1, "codes", &c) ||
      qz_alloc((size_t)(rows * ng), 4, "scales", &sc) ||
      qz_alloc((size_t)(rows * ng), 4, "zeros", &z) || qz_alloc((size_t)in, 4, "g_idx", &gi))
    goto done;
  for (int64_t i = 0; i < n; i++) c[i] = (uint8_t)(i & 15);
  for (int64_t i = 0; i < rows * ng; i++) sc[i] = 0.01f, z[i] = 8.0f;
  for (int64_t j = 0; j < in; j++) gi[j] = (int32_t)(j / 128);
  for (int it = 0; it < 3; it++) {
    uint16_t *h = (uint16_t *)f;
    for (int64_t i = 0; i < n; i++) h[i] = (uint16_t)(0x3f80 + (i & 127));
    double t0 = qz_wtime();
    qz_raw16_widen_inplace(QZ_DT_BF16, f, n);
    double t1 = qz_wtime();
    qz_dequantize_rows_grid(rows, in, ng, c, sc, z, gi, NULL, f);
    double t2 = qz_wtime();
    if (t1 - t0 < bw) bw = t1 - t0;
    if (t2 - t1 < bd) bd = t2 - t1;
  }
done:
  free(f);
  free(c);
  free(sc);
  free(z);
  free(gi);
  return (double)n / (bw > bd ? bw : bd) / 1e9;
}

/* fwd_frac: the block forward of a small Llama shape vs the sgemm of its
 * gate projection, on every rank at once (ranks share the node). */
static int rate_forward(MPI_Comm comm, double sgemm_gflops, double *frac) {
  qz_model_config c = {0};
  c.hidden_size = 2048, c.intermediate_size = 8192, c.num_hidden_layers = 1;
  c.num_attention_heads = 16, c.num_key_value_heads = 4, c.head_dim = 128;
  c.vocab_size = 32000, c.max_position_embeddings = 4096, c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000;
  const int64_t L = 1024, H = c.hidden_size;
  qz_block_weights w = {0};
  qz_fwd *f = NULL;
  float *x0 = NULL;
  int st = qz_block_weights_alloc(&c, &w);
  if (!st) st = qz_fwd_create(&c, 1, L, &f);
  if (!st) st = qz_alloc((size_t)(L * H), 4, "forward input", &x0);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  uint32_t x = 7u;
  for (int64_t i = 0; i < H; i++) w.attn_norm[i] = w.ffn_norm[i] = 1.0f + 0.1f * frand(&x);
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t o, i;
    qz_linear_shape(&c, (qz_linear)l, &o, &i);
    for (int64_t k = 0; k < o * i; k++) w.w[l][k] = 1.7f / (float)i * frand(&x);
  }
  for (int64_t k = 0; k < L * H; k++) x0[k] = frand(&x);
  double best = 1e30;
  for (int r = 0; r < 3; r++) { /* the first pays the workspace's first touch */
    memcpy(qz_fwd_hidden(f), x0, sizeof(float) * (size_t)(L * H));
    MPI_Barrier(comm);
    double t0 = qz_wtime();
    QZ_CALL_DONE(qz_fwd_block(f, &w));
    double t = qz_wtime() - t0;
    if (r > 0 && t < best) best = t;
  }
  *frac = qz_fwd_block_flops(&c, 1, L) / best / 1e9 / sgemm_gflops;
done:
  qz_free(&x0);
  qz_fwd_destroy(&f);
  qz_block_weights_free(&w);
  return st;
}

/* gptq_frac: the GPTQ sweep of a 4096 x 4096 layer (w4 g128 act-order) on
 * all ranks vs P x the sgemm rate. Collective. */
static int rate_gptq(MPI_Comm comm, double sgemm_gflops, double *frac) {
  const int64_t out = 4096, in = 4096, ntok = 8192;
  int P, rank, st = QZ_OK;
  MPI_Comm_size(comm, &P);
  MPI_Comm_rank(comm, &rank);
  qz_grid *grid = NULL;
  qz_hessian *H = NULL;
  float *xr = NULL, *w = NULL;
  qz_layer_result res = {0};
  int64_t t0, tn, r0, nr;
  qz_split_even(ntok, P, rank, &t0, &tn);
  qz_split_even(out, P, rank, &r0, &nr);
  QZ_CALL_DONE(qz_grid_create(comm, 0, &grid));
  QZ_CALL_DONE(qz_hessian_create(grid, in, &H));
  qz_method_opts o = qz_method_opts_default();
  o.act_order = 1;
  const int64_t ng = qz_quant_ngroups(&o.spec, in);
  st = qz_alloc((size_t)(tn * in + 1), 4, "rows", &xr);
  if (!st) st = qz_alloc((size_t)(nr * in + 1), 4, "weights", &w);
  if (!st) st = qz_alloc((size_t)(nr * in + 1), 1, "codes", &res.codes);
  if (!st) st = qz_alloc((size_t)(nr * in + 1), 4, "q", &res.q);
  if (!st) st = qz_alloc((size_t)(nr * ng + 1), 4, "scales", &res.scale);
  if (!st) st = qz_alloc((size_t)(nr * ng + 1), 4, "zeros", &res.zero);
  if (!st) st = qz_alloc((size_t)(nr + 1), 4, "losses", &res.losses);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  uint32_t x = 77u + (uint32_t)t0;
  for (int64_t k = 0; k < tn * in; k++)
    xr[k] = frand(&x) * (1.0f + (float)(k % in % 17) * 0.25f) * (k % in % 101 ? 1.0f : 20.0f);
  for (int64_t k = 0; k < nr * in; k++) w[k] = 0.02f * frand(&x);
  QZ_CALL_DONE(qz_hessian_add_rows(H, xr, tn));
  qz_hessian_count_sequences(H, rank == 0 ? 2 : 0);
  QZ_CALL_DONE(qz_hessian_reduce(H));
  qz_prepare_opts po = {.percdamp = o.percdamp, .act_order = 1, .name = "calibrate"};
  QZ_CALL_DONE(qz_hessian_prepare(H, &po));
  qz_layer L = {.name = "calibrate", .out_features = out, .in_features = in, .row0 = r0,
                .nrows = nr, .w = w, .H = H, .comm = comm};
  MPI_Barrier(comm);
  double a = qz_wtime();
  QZ_CALL_DONE(qz_gptq_quantize(&o, &L, &res));
  double t = qz_wtime() - a;
  QZ_CALL_MPI_DONE(MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, comm));
  *frac = qz_gptq_sweep_flops(out, in, o.blocksize) / t / 1e9 / ((double)P * sgemm_gflops);
done:
  qz_free(&xr);
  qz_free(&w);
  qz_layer_result_free(&res);
  qz_hessian_destroy(&H);
  qz_grid_destroy(&grid);
  return st;
}

int qz_plan_calibrate(MPI_Comm comm, const char *scratch, qz_plan_rates *r) {
  int P, rank;
  MPI_Comm_size(comm, &P);
  MPI_Comm_rank(comm, &rank);
  qz_plan_rates_default(r);
  snprintf(r->blas_kernel, sizeof r->blas_kernel, "%s", qz_blas_corename());
  if (qz_blas_kernel_tier(r->blas_kernel) < qz_blas_cpu_tier())
    qz_warn("calibrate: OpenBLAS runs its generic %s kernels, slower than this CPU "
            "supports (MPIQUANT_BLAS_AUTO=0 or OPENBLAS_CORETYPE set?): the rates "
            "will be too low for this machine", r->blas_kernel);
  r->base_rss_bytes = (double)qz_peak_rss_bytes();
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &r->base_rss_bytes, 1, MPI_DOUBLE, MPI_MAX, comm));
  qz_info("calibrate: sgemm, ssyrk, dpotrf (1 thread per rank, %d rank(s) at once)", P);
  double v[5] = {rate_sgemm(), rate_ssyrk(), 0.0, rate_read(), rate_expand()};
  double d1 = rate_dpotrf(2000), d2 = rate_dpotrf(3000);
  v[2] = d1 > d2 ? d1 : d2;
  /* the slowest rank decides (ranks share the node like a real run) */
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, v, 5, MPI_DOUBLE, MPI_MIN, comm));
  r->expand_gelems = v[4];
  r->sgemm_gflops = v[0];
  r->ssyrk_gflops = v[1];
  r->dpotrf_gflops = v[2];
  r->read_gbs = v[3] * P; /* per node: every rank converts its share */
  if (P > 1) {
    qz_info("calibrate: pdpotrf+pdpotri n = 2000, 3000 on %d ranks, nb 64 128 256 512", P);
    const int nbs[4] = {64, 128, 256, 512};
    double best = 0.0;
    for (int k = 0; k < 4; k++) {
      qz_grid *g = NULL;
      QZ_CALL(qz_grid_create(comm, nbs[k], &g));
      double a = 0, b = 0;
      int st = rate_pdpotrf(g, 2000, &a);
      if (st == QZ_OK) st = rate_pdpotrf(g, 3000, &b);
      qz_grid_destroy(&g);
      QZ_CALL(st);
      double e = (a > b ? a : b) / (P * r->dpotrf_gflops);
      r->nb_eff[k] = e;
      if (e > best) best = e, r->grid_nb = nbs[k];
    }
    r->pdpotrf_eff = best;
    qz_info("calibrate: allreduce / reduce-scatter / allgather of 64 MiB");
    QZ_CALL(rate_coll(comm, &r->allreduce_gbs, &r->reduce_scatter_gbs, &r->allgather_gbs));
  } else {
    qz_warn("calibrate at np 1: collective rates and the ScaLAPACK efficiency keep "
            "their defaults (run under mpirun -np 2 or more to measure them)");
  }
  qz_info("calibrate: block forward (hidden 2048, 1 x 1024 tokens) and a GPTQ sweep "
          "(4096 x 4096) on %d rank(s)", P);
  double fr = 0.0, gr = 0.0;
  QZ_CALL(rate_forward(comm, r->sgemm_gflops, &fr));
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &fr, 1, MPI_DOUBLE, MPI_MIN, comm));
  r->fwd_frac = fr;
  QZ_CALL(rate_gptq(comm, r->sgemm_gflops, &gr));
  r->gptq_frac = gr;
  qz_info("calibrate: HDF5 collective write of 256 MiB in %s", scratch);
  QZ_CALL(rate_hdf5(comm, scratch, &r->hdf5_write_gbs));
  r->measured = 1;
  snprintf(r->source, sizeof r->source, "measured now (np %d)", P);
  return QZ_OK;
}
