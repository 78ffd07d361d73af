/* SpQR (Dettmers et al. 2023): a GPTQ sweep with small first-level groups
 * along the input, their scales and zeros quantized again in groups of
 * output rows (bilevel), and weights whose OBS error is large kept in fp16
 * as a sparse part (docs/methods.md, "SpQR").
 *
 * Per linear (rows split over ranks, H^-1's upper Cholesky factor U
 * streamed in panels of `blocksize` rows like GPTQ; with --act-order the
 * columns are processed by descending diag(H), groups are runs of g columns
 * of that order and g_idx/perm record it):
 *   group start (column c, c % g == 0), per row r, x = the row's current
 *   weights of the group, d_j = U_jj, q0 = min/max quantizer of all of x:
 *   rule loo (default, the SpQR reference's):
 *     T = tau x mean over columns j of var_rows(W[:, j]) / d_j^2 (per layer,
 *         W after the dead-column fix, before the sweep);
 *     base = sum_j ((x_j - q0(x_j)) / d_j)^2;  loo_j = the same sum over
 *     the other weights with a min/max quantizer fitted without x_j;
 *     x_j is a likely outlier when base - loo_j > T;
 *   rule obs (the issue text's):
 *     e_j = (x_j - q0(x_j))^2 / d_j^2;  T_r = tau x mean_j e_j;
 *     x_j is a likely outlier when e_j > T_r;
 *   s, z = min/max of the other x_j (outliers excluded), then the scales
 *   (and the zeros) of the rows of one second-level group (`stats_group`
 *   consecutive output rows) are quantized to `stats_bits` bits, min/max
 *   over those rows: v' = lo + rint((v - lo) / step) step.
 *   column j:  q = s (clamp(rint(w / s + z), 0, maxq) - z);
 *     (w - q)^2 / d_j^2 > T (T_r)  ->  kept: q = fp16(w) (sparse part);
 *     error feedback as GPTQ: e = (w - q) / d_j, later columns -= e U_j.
 * The first level is the reference GPTQ min/max (the range contains 0)
 * with a real-valued zero (SpQR's round_zero=False), so zeros stay in
 * [0, maxq] and quantize well; the second level is min/max over the values
 * themselves (a range from 0 would round small scales to 0).
 *
 * A second-level group needs the statistics of all its rows at once: each
 * rank extends its rows to whole second-level groups with the neighbours'
 * rows (a halo of < stats_group rows on each side, computed twice) and keeps
 * the results of its own rows.  Every row-group tile is computed the same
 * way on whichever rank holds it, so results do not depend on np; the loo
 * rule's layer scale comes from int64 fixed-point column sums (an
 * order-free reduction), the same on every rank and at every np. */
#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/chol.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/method.h"
#include "mpiquant/safetensors.h"
#include "mpiquant/timing.h"

enum { SP_RULE_LOO = 0, SP_RULE_OBS = 1 };
static const char *const k_rules[] = {"loo", "obs", NULL};

typedef struct {
  double tau;      /* outlier threshold, x the layer scale (loo) or the group's mean
                      error (obs); 0: none */
  int stats_bits;  /* bits of the quantized scales and zeros */
  int stats_group; /* output rows per second-level group */
  int rule;        /* SP_RULE_* */
} sp_cli;
_Static_assert(sizeof(sp_cli) <= QZ_METHOD_EXT_BYTES, "spqr options exceed the ext bytes");

typedef struct {
  sp_cli cli;
  qz_method_opts mo;
  float *w, *e, *panel, *sc, *zr, *ov, *mean, *tmp, *ud; /* see fit() */
  uint8_t *codes, *isout;
  double *loss;
  int64_t *sums;
  int32_t *inv;
  size_t c_w, c_e, c_panel, c_sc, c_zr, c_ov, c_mean, c_tmp, c_ud, c_codes, c_isout, c_loss,
      c_sums, c_inv;
  json_t *stats;                /* the current block's per-linear bits */
  double blk_bits, blk_params;  /* the current block's totals */
  double all_bits, all_params;  /* the model's so far */
} sp_state;

/* One layer's sweep over the extended rows [a, a + me). */
typedef struct {
  sp_state *S;
  int64_t n, me, B, g, ng, SG, a;
  float maxq;
  double thr;            /* loo: the absolute threshold tau x layer scale */
  const uint8_t *dead;   /* original column order */
  const int32_t *perm;   /* position i processes original column perm[i] */
} sweep;

static float fp16(float x) { return qz_f16_to_f32(qz_f32_to_f16(x)); }

/* Min/max parameters of the values of x[0..n) not skipped, with 0 in the
 * range as the reference GPTQ quantizer ([-1, 1] when all are 0), zero
 * real-valued (in [0, maxq]). Returns how many values were used. */
static int minmax(const float *x, const uint8_t *skip, int64_t n, float maxq, float *s,
                  float *z) {
  float mn = 0.0f, mx = 0.0f;
  int cnt = 0;
  for (int64_t i = 0; i < n; i++) {
    if (skip && skip[i]) continue;
    mn = x[i] < mn ? x[i] : mn;
    mx = x[i] > mx ? x[i] : mx;
    cnt++;
  }
  if (mn == 0.0f && mx == 0.0f) {
    mn = -1.0f;
    mx = 1.0f;
  }
  *s = (mx - mn) / maxq;
  *z = -mn / *s;
  return cnt;
}

static inline float quant(float w, float s, float z, float maxq, uint8_t *code) {
  float c = qz_rint(w / s + z);
  c = c < 0.0f ? 0.0f : (c > maxq ? maxq : c);
  *code = (uint8_t)c;
  return s * (c - z);
}

/* Second level: v[0..nr) (stride ld) to `bits` bits over their min/max. */
static void bilevel(float *v, int64_t nr, int64_t ld, int bits) {
  float lo = v[0], hi = v[0];
  for (int64_t r = 1; r < nr; r++) {
    lo = v[r * ld] < lo ? v[r * ld] : lo;
    hi = v[r * ld] > hi ? v[r * ld] : hi;
  }
  const float step = (hi - lo) / (float)((1 << bits) - 1);
  for (int64_t r = 0; r < nr; r++)
    v[r * ld] = step > 0.0f ? lo + qz_rint((v[r * ld] - lo) / step) * step : lo;
}

/* sum_j ((x_j - q(x_j)) / d_j)^2 over the x_j not skipped, q the min/max
 * quantizer fitted on those same values. */
static double group_err(const float *x, const float *d, const uint8_t *skip, int64_t cnt,
                        float maxq) {
  float s, z;
  minmax(x, skip, cnt, maxq, &s, &z);
  double t = 0;
  for (int64_t j = 0; j < cnt; j++) {
    if (skip[j]) continue;
    uint8_t code;
    const float e = (x[j] - quant(x[j], s, z, maxq, &code)) / d[j];
    t += (double)(e * e);
  }
  return t;
}

/* The likely outliers of one row's group x[0..cnt) (skip[j] = 1), before its
 * parameters are fitted; returns the obs rule's mean error (0 for loo). */
static double likely_outliers(const sweep *W, const float *x, const float *d, int64_t cnt,
                              uint8_t *skip) {
  const double tau = W->S->cli.tau;
  memset(skip, 0, (size_t)cnt);
  if (W->S->cli.rule == SP_RULE_LOO) {
    if (tau <= 0) return 0;
    const double base = group_err(x, d, skip, cnt, W->maxq);
    uint8_t one[256];
    for (int64_t j = 0; j < cnt; j++) { /* leave x_j out: its error is 0 */
      memset(one, 0, (size_t)cnt);
      one[j] = 1;
      skip[j] = base - group_err(x, d, one, cnt, W->maxq) > W->thr;
    }
    return 0;
  }
  float s0, z0;
  minmax(x, NULL, cnt, W->maxq, &s0, &z0);
  float e[256];
  double m = 0;
  for (int64_t j = 0; j < cnt; j++) {
    uint8_t code;
    const float q = quant(x[j], s0, z0, W->maxq, &code);
    e[j] = (x[j] - q) * (x[j] - q) / (d[j] * d[j]);
    m += e[j];
  }
  m /= (double)cnt;
  for (int64_t j = 0; j < cnt; j++) skip[j] = tau > 0 && e[j] > (float)tau * (float)m;
  return m;
}

/* Statistics of group k (columns [c, c + g) of the block starting at i1)
 * for tile rows [t0, t0 + nr). */
static void group_start(sweep *W, int64_t t0, int64_t nr, int64_t c, int64_t i1,
                        const float *panel) {
  sp_state *S = W->S;
  const int64_t n = W->n, k = c / W->g, cnt = W->g < n - c ? W->g : n - c;
  uint8_t skip[256];
  float d[256];
  for (int64_t j = 0; j < cnt; j++) d[j] = panel[(c + j - i1) * n + c + j];
  for (int64_t r = t0; r < t0 + nr; r++) {
    const float *x = S->w + r * n + c;
    float s, z;
    const double m = likely_outliers(W, x, d, cnt, skip);
    /* obs keeps the issue text's fallback (all flagged: all of x); loo the
     * reference's (all flagged: the range of zeros, [-1, 1]) */
    if (!minmax(x, skip, cnt, W->maxq, &s, &z) && S->cli.rule == SP_RULE_OBS)
      minmax(x, NULL, cnt, W->maxq, &s, &z);
    S->sc[r * W->ng + k] = s;
    S->zr[r * W->ng + k] = z;
    S->mean[r] = (float)m;
  }
  bilevel(S->sc + t0 * W->ng + k, nr, W->ng, S->cli.stats_bits);
  bilevel(S->zr + t0 * W->ng + k, nr, W->ng, S->cli.stats_bits);
}

/* Tile rows [t0, t0 + nr) through the block's columns [i1, i2). */
static void sweep_tile(sweep *W, int64_t t0, int64_t nr, int64_t i1, int64_t i2,
                       const float *panel) {
  sp_state *S = W->S;
  const int64_t n = W->n, B = W->B;
  const float tau = (float)S->cli.tau;
  for (int64_t i = i1; i < i2; i++) {
    if (i % W->g == 0) group_start(W, t0, nr, i, i1, panel);
    const float *u = panel + (i - i1) * n; /* U[i, :] */
    const float d = u[i];
    const int64_t k = i / W->g;
    for (int64_t r = t0; r < t0 + nr; r++) {
      float *wr = S->w + r * n;
      const float w = wr[i], s = S->sc[r * W->ng + k], z = S->zr[r * W->ng + k];
      uint8_t code;
      float q = quant(w, s, z, W->maxq, &code);
      float err = (w - q) * (w - q) / (d * d);
      int out = tau > 0 && (S->cli.rule == SP_RULE_LOO
                                ? (double)err > W->thr
                                : S->mean[r] > 0 && err > tau * S->mean[r]);
      S->codes[r * n + i] = code;
      S->isout[r * n + i] = (uint8_t)out;
      if (out) q = S->ov[r * n + i] = fp16(w);
      const float diff = w - q, eq = diff / d;
      S->loss[r] += (double)(diff * diff / (d * d) / 2.0f);
      S->e[r * B + (i - i1)] = eq;
      for (int64_t j = i + 1; j < i2; j++) wr[j] -= eq * u[j];
    }
  }
  if (i2 < n) /* lazy batch: one sgemm per tile (same shape at any np) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)(n - i2),
                (int)(i2 - i1), -1.0f, S->e + t0 * B, (int)B, panel + i2, (int)n, 1.0f,
                S->w + t0 * n + i2, (int)n);
}

/* Buffers for me extended rows (once per shape). Not collective. */
static int fit(sp_state *S, int64_t me, int64_t n, int64_t B, int64_t ng) {
  size_t rows = (size_t)(me > 0 ? me : 1);
  QZ_CALL(qz_grow(rows * (size_t)n, sizeof(float), "SpQR working W", &S->w, &S->c_w));
  QZ_CALL(qz_grow(rows * (size_t)B, sizeof(float), "SpQR errors", &S->e, &S->c_e));
  QZ_CALL(qz_grow((size_t)(B * n), sizeof(float), "factor panel", &S->panel, &S->c_panel));
  QZ_CALL(qz_grow(rows * (size_t)ng, sizeof(float), "SpQR scales", &S->sc, &S->c_sc));
  QZ_CALL(qz_grow(rows * (size_t)ng, sizeof(float), "SpQR zeros", &S->zr, &S->c_zr));
  QZ_CALL(qz_grow(rows * (size_t)n, sizeof(float), "SpQR outlier values", &S->ov, &S->c_ov));
  QZ_CALL(qz_grow(rows, sizeof(float), "SpQR group errors", &S->mean, &S->c_mean));
  QZ_CALL(qz_grow((size_t)n, sizeof(float), "SpQR row scratch", &S->tmp, &S->c_tmp));
  QZ_CALL(qz_grow((size_t)n, sizeof(float), "SpQR factor diagonal", &S->ud, &S->c_ud));
  QZ_CALL(qz_grow((size_t)(2 * n), sizeof(int64_t), "SpQR column sums", &S->sums, &S->c_sums));
  QZ_CALL(qz_grow((size_t)n, sizeof(int32_t), "SpQR inverse permutation", &S->inv, &S->c_inv));
  QZ_CALL(qz_grow(rows * (size_t)n, 1, "SpQR codes", &S->codes, &S->c_codes));
  QZ_CALL(qz_grow(rows * (size_t)n, 1, "SpQR outlier flags", &S->isout, &S->c_isout));
  QZ_CALL(qz_grow(rows, sizeof(double), "SpQR losses", &S->loss, &S->c_loss));
  memset(S->loss, 0, rows * sizeof(double));
  return QZ_OK;
}

/* w [me, n] = rows [a, a + me) of the layer: this rank's own rows and the
 * halo from the ranks that own the others. Collective on comm. */
static int gather_rows(MPI_Comm comm, const qz_layer *L, int64_t a, int64_t me, float *w) {
  int P, rank, st = QZ_OK;
  MPI_Comm_size(comm, &P);
  MPI_Comm_rank(comm, &rank);
  const int64_t n = L->in_features;
  int64_t mine[4] = {L->row0, L->nrows, a, me}, *all = NULL;
  MPI_Request *rq = NULL;
  int nrq = 0;
  QZ_CALL(qz_error_agree(comm, qz_alloc((size_t)(4 * P), sizeof(int64_t), "row ranges", &all)));
  st = qz_alloc((size_t)(2 * P), sizeof(MPI_Request), "halo requests", &rq);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  QZ_CALL_MPI_DONE(MPI_Allgather(mine, 4, MPI_INT64_T, all, 4, MPI_INT64_T, comm));
  qz_count_allgather(comm, 32, 32 * (int64_t)P);
  for (int k = 0; k < P; k++) {
    const int64_t *o = all + 4 * k;
    /* what k needs of mine, what I need of k's */
    int64_t s0 = L->row0 > o[2] ? L->row0 : o[2];
    int64_t s1 = L->row0 + L->nrows < o[2] + o[3] ? L->row0 + L->nrows : o[2] + o[3];
    int64_t r0 = o[0] > a ? o[0] : a, r1 = o[0] + o[1] < a + me ? o[0] + o[1] : a + me;
    if (k == rank) {
      if (r1 > r0)
        memcpy(w + (r0 - a) * n, L->w + (r0 - L->row0) * n, (size_t)((r1 - r0) * n) * 4);
      continue;
    }
    if (s1 > s0)
      QZ_CALL_MPI_DONE(MPI_Isend(L->w + (s0 - L->row0) * n, (int)((s1 - s0) * n), MPI_FLOAT,
                                 k, 18, comm, &rq[nrq++]));
    if (r1 > r0)
      QZ_CALL_MPI_DONE(MPI_Irecv(w + (r0 - a) * n, (int)((r1 - r0) * n), MPI_FLOAT, k, 18,
                                 comm, &rq[nrq++]));
    qz_count_p2p(s1 > s0 ? 4 * (s1 - s0) * n : 0, r1 > r0 ? 4 * (r1 - r0) * n : 0);
  }
  QZ_CALL_MPI_DONE(MPI_Waitall(nrq, rq, MPI_STATUSES_IGNORE));
done:
  qz_free(&all);
  qz_free(&rq);
  return st;
}

/* This rank's rows of the result: codes, statistics, losses, the sparse
 * part (fp16(w) - Q, so that Q + sparse = the kept weight). */
static int extract(sweep *W, const qz_layer *L, const qz_prepare_info *pi,
                   qz_layer_result *res) {
  sp_state *S = W->S;
  const int64_t n = W->n, off = L->row0 - W->a, m = L->nrows;
  int64_t nnz = 0;
  for (int64_t i = off * n; i < (off + m) * n; i++) nnz += S->isout[i];
  QZ_CALL(qz_alloc((size_t)nnz + 1, sizeof(int64_t), "outlier index", &res->outlier_idx));
  QZ_CALL(qz_alloc((size_t)nnz + 1, sizeof(float), "outlier values", &res->outlier_val));
  res->noutliers = 0;
  res->loss_local = 0;
  for (int64_t i = 0; i < n; i++) S->inv[W->perm[i]] = (int32_t)i;
  for (int64_t r = 0; r < m; r++) {
    const int64_t er = off + r;
    memcpy(res->scale + r * W->ng, S->sc + er * W->ng, (size_t)W->ng * 4);
    memcpy(res->zero + r * W->ng, S->zr + er * W->ng, (size_t)W->ng * 4);
    for (int64_t j = 0; j < n; j++) { /* j: original column, i: its position */
      const int64_t i = S->inv[j], k = i / W->g, ei = er * n + i;
      res->codes[r * n + j] = S->codes[ei];
      float q = S->sc[er * W->ng + k] * ((float)S->codes[ei] - S->zr[er * W->ng + k]);
      if (S->isout[ei]) {
        float v = S->ov[ei] - q;
        res->outlier_idx[res->noutliers] = (L->row0 + r) * n + j;
        res->outlier_val[res->noutliers++] = v;
        q += v;
      }
      if (res->q) res->q[r * n + j] = q;
    }
    if (res->losses) res->losses[r] = (float)S->loss[er];
    res->loss_local += S->loss[er];
  }
  for (int64_t i = 0; i < n; i++) {
    if (res->g_idx) res->g_idx[W->perm[i]] = (int32_t)(i / W->g);
    if (res->perm) res->perm[i] = W->perm[i];
  }
  res->percdamp_used = pi->percdamp_used;
  res->ndead = pi->ndead;
  return QZ_OK;
}

/* Bits per parameter of the layer as SpQR counts them: dense codes,
 * first-level scale and zero at stats_bits each, the second level's fp16
 * scale and zero of both per (row group, column group), 32 bits per
 * outlier (fp16 value + 16-bit column index), with --act-order the
 * permutation (ceil(log2 n) bits per input column). Collective (nnz sum). */
static int account(sweep *W, const qz_layer *L, MPI_Comm comm, qz_layer_result *res) {
  sp_state *S = W->S;
  int64_t nnz = res->noutliers;
  QZ_CALL(qz_allreduce_i64(comm, &nnz, 1, MPI_SUM));
  const double out = (double)L->out_features, n = (double)W->n, ng = (double)W->ng;
  const double tiles = ceil(out / (double)W->SG);
  /* the driver's per-linear stats and the sweep's bits column use this */
  res->storage = (qz_storage_bits){
      .out = L->out_features, .in = W->n, .dense = L->out_features * W->n,
      .code_bits = S->mo.spec.bits, .nstats = L->out_features * W->ng,
      .scale_bits = S->cli.stats_bits, .zero_bits = S->cli.stats_bits,
      .extra_bits = 4.0 * 16.0 * tiles * ng +
                    (S->mo.act_order ? ceil(log2(n > 1 ? n : 2)) * n : 0.0),
      .outlier_bits = 32.0};
  res->storage.noutliers = nnz;
  const double bits = qz_layer_bits_per_param(&res->storage) * out * n;
  double avg = bits / (out * n);
  qz_info("%s: spqr outliers %lld (%.3f%%), %.4f bits per parameter", L->name,
          (long long)nnz, 100.0 * (double)nnz / (out * n), avg);
  if (S->stats) { /* "model.layers.3.self_attn.q_proj" -> "self_attn.q_proj" */
    const char *mod = L->name;
    for (int dots = 0; *mod && dots < 3; mod++) dots += *mod == '.';
    json_object_set_new(S->stats, *mod ? mod : L->name,
                        json_pack("{s:f, s:I}", "bits", avg, "outliers", (json_int_t)nnz));
  }
  S->blk_bits += bits;
  S->blk_params += out * n;
  return QZ_OK;
}

/* loo: the layer scale mean_j var_rows(W[:, j]) / U_jj^2 over the columns
 * in processing order (W after the dead fix, var with m - 1 like the
 * reference), from int64 fixed-point column sums of this rank's own rows,
 * so that the sum's order (np) does not matter. Every U_jj is needed before
 * the sweep: one pass over the factor panels. Collective on comm. */
static int layer_scale(sweep *W, const qz_layer *L, MPI_Comm comm, double *scale) {
  sp_state *S = W->S;
  const int64_t n = W->n, off = L->row0 - W->a, m = L->out_features;
  for (int64_t i1 = 0; i1 < n; i1 += W->B) {
    const int64_t i2 = i1 + W->B < n ? i1 + W->B : n;
    QZ_CALL(qz_hessian_factor_rows(L->H, i1, i2 - i1, S->panel));
    for (int64_t i = i1; i < i2; i++) S->ud[i] = S->panel[(i - i1) * n + i];
  }
  float amax = 0.0f;
  for (int64_t x = off * n; x < (off + L->nrows) * n; x++) amax = fmaxf(amax, fabsf(S->w[x]));
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &amax, 1, MPI_FLOAT, MPI_MAX, comm));
  qz_count_allreduce(comm, 4);
  *scale = m < 2 ? INFINITY : 0.0; /* one row: no variance, no outliers (the reference: NaN) */
  if (amax == 0.0f || m < 2) return QZ_OK;
  /* |sum| <= m amax 2^e1 <= 2^62 (and the same for the squares) */
  const int e1 = 62 - (int)ceil(log2((double)amax * (double)m));
  const int e2 = 62 - (int)ceil(log2((double)amax * (double)amax * (double)m));
  memset(S->sums, 0, (size_t)(2 * n) * sizeof(int64_t));
  for (int64_t r = off; r < off + L->nrows; r++)
    for (int64_t i = 0; i < n; i++) {
      const double w = (double)S->w[r * n + i];
      S->sums[i] += (int64_t)llrint(ldexp(w, e1));
      S->sums[n + i] += (int64_t)llrint(ldexp(w * w, e2));
    }
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, S->sums, (int)(2 * n), MPI_INT64_T, MPI_SUM, comm));
  qz_count_allreduce(comm, 16 * n);
  double t = 0;
  for (int64_t i = 0; i < n; i++) {
    const double mu = ldexp((double)S->sums[i], -e1) / (double)m;
    const double var = (ldexp((double)S->sums[n + i], -e2) - (double)m * mu * mu) / (double)(m - 1);
    t += (var > 0 ? var : 0.0) / ((double)S->ud[i] * (double)S->ud[i]);
  }
  *scale = t / (double)n;
  return QZ_OK;
}

/* Rows of the extended working W in processing order, dead columns 0
 * (GPTQ rule 4). Not collective. */
static void to_processing_order(sweep *W) {
  sp_state *S = W->S;
  for (int64_t r = 0; r < W->me; r++) {
    float *wr = S->w + r * W->n;
    for (int64_t i = 0; i < W->n; i++)
      S->tmp[i] = W->dead[W->perm[i]] ? 0.0f : wr[W->perm[i]];
    memcpy(wr, S->tmp, (size_t)W->n * sizeof(float));
  }
}

/* Collective on the Hessian's grid communicator. */
static int sp_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  sp_state *S = state;
  const char *name = L->name ? L->name : "layer";
  QZ_CHECK(L->H, QZ_ERR_ARG, "%s: SpQR needs a Hessian", name);
  MPI_Comm comm = qz_grid_comm(qz_hessian_grid(L->H));
  int st = qz_layer_check_finite(L);
  if (!st && qz_hessian_dim(L->H) != L->in_features)
    st = qz_error_set(QZ_ERR_ARG, __FILE__, __LINE__, __func__,
                      "%s: Hessian is %lld x %lld, W has %lld input columns", name,
                      (long long)qz_hessian_dim(L->H), (long long)qz_hessian_dim(L->H),
                      (long long)L->in_features);
  QZ_CALL(qz_error_agree(comm, st));
  qz_prepare_opts po = {.percdamp = S->mo.percdamp, .percdamp_max = S->mo.percdamp_max,
                        .act_order = S->mo.act_order, .name = name};
  QZ_CALL(qz_hessian_prepare(L->H, &po));
  const qz_prepare_info *pi = qz_hessian_prepared(L->H);
  sweep W = {.S = S, .n = L->in_features, .B = S->mo.blocksize > 0 ? S->mo.blocksize : 128,
             .g = S->mo.spec.groupsize, .SG = S->cli.stats_group,
             .maxq = (float)((1 << S->mo.spec.bits) - 1), .dead = pi->dead,
             .perm = pi->perm};
  W.ng = (W.n + W.g - 1) / W.g;
  W.a = L->row0;
  if (L->nrows > 0) {
    W.a = L->row0 - L->row0 % W.SG;
    int64_t b = (L->row0 + L->nrows + W.SG - 1) / W.SG * W.SG;
    W.me = (b < L->out_features ? b : L->out_features) - W.a;
  }
  QZ_CALL(qz_error_agree(comm, fit(S, W.me, W.n, W.B, W.ng)));
  QZ_CALL(gather_rows(comm, L, W.a, W.me, S->w));
  to_processing_order(&W);
  memset(S->isout, 0, (size_t)((W.me > 0 ? W.me : 1) * W.n));
  if (S->cli.rule == SP_RULE_LOO && S->cli.tau > 0) {
    double scale = 0;
    QZ_CALL(layer_scale(&W, L, comm, &scale));
    W.thr = S->cli.tau * scale;
    qz_debug("%s: spqr layer scale %.6g, outlier threshold %.6g", name, scale, W.thr);
  }
  qz_timer_start(QZ_PHASE_QUANTIZE);
  for (int64_t i1 = 0; i1 < W.n && !st; i1 += W.B) {
    int64_t i2 = i1 + W.B < W.n ? i1 + W.B : W.n;
    qz_timer_stop(QZ_PHASE_QUANTIZE);
    st = qz_hessian_factor_rows(L->H, i1, i2 - i1, S->panel);
    qz_timer_start(QZ_PHASE_QUANTIZE);
    for (int64_t t0 = 0; t0 < W.me && !st; t0 += W.SG)
      sweep_tile(&W, t0, W.me - t0 < W.SG ? W.me - t0 : W.SG, i1, i2, S->panel);
  }
  qz_timer_stop(QZ_PHASE_QUANTIZE);
  QZ_CALL(st);
  QZ_CALL(qz_error_agree(comm, extract(&W, L, pi, res)));
  QZ_CALL(account(&W, L, comm, res));
  return QZ_OK;
}

/* The default true-sequential block, then its bits per parameter into the
 * manifest stats and the log. Collective on b->comm. */
static int sp_block(void *state, qz_block_ctx *b) {
  sp_state *S = state;
  S->stats = json_object();
  S->blk_bits = S->blk_params = 0;
  int st = b->sequential(b);
  if (st == QZ_OK) {
    double avg = S->blk_params > 0 ? S->blk_bits / S->blk_params : 0;
    S->all_bits += S->blk_bits;
    S->all_params += S->blk_params;
    json_object_set_new(S->stats, "block", json_real(avg));
    b->stat(b, "spqr_bits", S->stats);
    qz_info("block %d spqr: %.4f bits per parameter (model so far %.4f)", b->layer, avg,
            S->all_bits / S->all_params);
  } else {
    json_decref(S->stats);
  }
  S->stats = NULL;
  return st;
}

/* ---- options and ops table ------------------------------------------------ */

static int sp_check(qz_method_opts *o) {
  sp_cli c;
  qz_method_ext_get(o, &c);
  if (!qz_method_opt_given(o, "bits")) o->spec.bits = 3;
  if (!qz_method_opt_given(o, "group")) o->spec.groupsize = 16;
  if (!qz_method_opt_given(o, "outlier-threshold")) {
    c.tau = c.rule == SP_RULE_LOO ? 0.2 : 8.0;
    qz_method_ext_set(o, &c);
  }
  QZ_CHECK(!o->spec.sym && !o->static_groups, QZ_ERR_USAGE,
           "--method spqr: asymmetric groups fitted during the sweep (no --sym or "
           "--static-groups)");
  QZ_CHECK(o->spec.groupsize > 0 && o->spec.groupsize <= 256, QZ_ERR_USAGE,
           "--method spqr needs --group between 1 and 256, got %lld",
           (long long)o->spec.groupsize);
  int B = o->blocksize > 0 ? o->blocksize : 128;
  QZ_CHECK(B % o->spec.groupsize == 0, QZ_ERR_USAGE,
           "--method spqr: --group %lld must divide --blocksize %d (a group's statistics "
           "use the factor panel of its block)", (long long)o->spec.groupsize, B);
  QZ_CHECK(c.tau >= 0 && isfinite(c.tau), QZ_ERR_USAGE,
           "--outlier-threshold must be >= 0 (0: no outliers), got %g", c.tau);
  return QZ_OK;
}

static unsigned sp_needs(const qz_method_opts *o) {
  return QZ_NEED_CALIB | QZ_NEED_HESSIAN | QZ_CKPT_OUTLIERS;
}

static int sp_setup(const qz_method_opts *o, void **state) {
  QZ_CALL(qz_quant_spec_check(&o->spec));
  sp_state *s = NULL;
  QZ_CALL(qz_calloc(1, sizeof *s, "SpQR state", &s));
  s->mo = *o;
  qz_method_ext_get(o, &s->cli);
  *state = s;
  return QZ_OK;
}

static void sp_destroy(void **state) {
  if (!state || !*state) return;
  sp_state *s = *state;
  qz_free(&s->w); qz_free(&s->e); qz_free(&s->panel); qz_free(&s->sc); qz_free(&s->zr);
  qz_free(&s->ov); qz_free(&s->mean); qz_free(&s->tmp); qz_free(&s->ud); qz_free(&s->codes);
  qz_free(&s->sums); qz_free(&s->inv);
  qz_free(&s->isout); qz_free(&s->loss);
  json_decref(s->stats);
  qz_free(state);
}

/* GPTQ's sweep cost on the extended rows; the working set adds codes,
 * flags and fp16 values of every weight (dense, [rows, n]). */
static void sp_plan(const qz_method_opts *o, const qz_plan_machine *mc, int64_t m, int64_t n,
                    qz_plan_linear *p) {
  const double B = o->blocksize > 0 ? o->blocksize : 128, md = (double)m + 32, nd = (double)n;
  p->bytes = 10.0 * md * nd + 4.0 * md * B + 4.0 * B * nd + 28.0 * nd; /* + ud, tmp, sums, inv */
  p->flops = md * nd * nd + 2.0 * md * nd * B;
  /* + the factor streamed once per linear: the f32 triangle, 2 n^2 bytes */
  p->seconds = p->flops / (mc->gemm * mc->gptq_frac) + mc->allgather(mc->ctx, 2.0 * nd * nd);
  p->factor = 1;
}

#define SP_FIELD(f) .ext = 1, .offset = offsetof(sp_cli, f)
static const qz_opt sp_rows[] = {
    {.name = "outlier-rule", .type = QZ_OPT_CHOICE, SP_FIELD(rule), .def = SP_RULE_LOO,
     .choices = k_rules, .json = "outlier_rule", .metavar = "loo|obs",
     .help = "spqr: loo (default, the SpQR reference's) = a weight is an outlier when leaving "
             "it out of its group's fit lowers the group's error, or its own error is, above "
             "TAU x the layer's mean var(W[:,j]) / [U]_jj^2; obs = its OBS error exceeds TAU x "
             "its group's mean error"},
    {.name = "outlier-threshold", .type = QZ_OPT_REAL, SP_FIELD(tau), .def = 0.2, .lo = 0,
     .hi = 1e30, .json = "outlier_threshold", .metavar = "TAU",
     .help = "spqr: outlier threshold (default 0.2 with loo as the reference, 8 with obs; "
             "0 = no outliers)"},
    {.name = "stats-bits", .type = QZ_OPT_INT, SP_FIELD(stats_bits), .def = 3, .lo = 2, .hi = 8,
     .json = "stats_bits", .metavar = "B",
     .help = "spqr: bits of the quantized group scales and zeros (default 3)"},
    {.name = "stats-group", .type = QZ_OPT_INT, SP_FIELD(stats_group), .def = 16, .lo = 1,
     .hi = 1 << 20, .json = "stats_group", .metavar = "R",
     .help = "spqr: output rows per second-level group of scales and zeros (default 16)"},
};

const qz_method_ops qz_method_spqr = {
    .name = "spqr",
    .summary = "SpQR (Dettmers et al.): GPTQ with bilevel 3-bit statistics and fp16 outliers",
    .options = sp_rows,
    .noptions = (int)(sizeof sp_rows / sizeof sp_rows[0]),
    .json_group = "spqr",
    .uses = QZ_USES_BITS | QZ_USES_GROUP | QZ_USES_ACT_ORDER,
    .check = sp_check,
    .needs = sp_needs,
    .setup = sp_setup,
    .quantize_layer = sp_layer,
    .destroy = sp_destroy,
    .quantize_block = sp_block,
    .plan_linear = sp_plan};
