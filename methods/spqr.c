/* SpQR (Dettmers et al. 2023): a GPTQ sweep with small first-level groups
 * along the input, their scales and zeros quantized again in groups of
 * output rows (bilevel), and weights whose OBS error is large kept in fp16
 * as a sparse part (docs/methods.md, "SpQR").
 *
 * Per linear (rows split over ranks, H^-1's upper Cholesky factor U
 * streamed in panels of `blocksize` rows like GPTQ):
 *   group start (column c, c % g == 0), per row r, x = the row's current
 *   weights of the group, d_j = U_jj:
 *     s0, z0 = min/max of x;  e_j = (x_j - q0(x_j))^2 / d_j^2;  m_r = mean e_j
 *     s, z   = min/max of the x_j with e_j <= tau m_r (outliers excluded)
 *   then the scales (and the zeros) of the rows of one second-level group
 *   (`stats_group` consecutive output rows) are quantized to `stats_bits`
 *   bits, min/max over those rows: v' = lo + rint((v - lo) / step) step.
 *   column j:  q = s (clamp(rint(w / s + z), 0, maxq) - z);
 *     (w - q)^2 / d_j^2 > tau m_r  ->  kept: q = fp16(w) (sparse part);
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
 * way on whichever rank holds it, so results do not depend on np. */
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

typedef struct {
  double tau;      /* outlier threshold relative to the group's mean error (0: none) */
  int stats_bits;  /* bits of the quantized scales and zeros */
  int stats_group; /* output rows per second-level group */
} sp_cli;
_Static_assert(sizeof(sp_cli) <= QZ_METHOD_EXT_BYTES, "spqr options exceed the ext bytes");

typedef struct {
  sp_cli cli;
  qz_method_opts mo;
  float *w, *e, *panel, *sc, *zr, *ov, *mean, *tmp; /* see fit() */
  uint8_t *codes, *isout;
  double *loss;
  size_t c_w, c_e, c_panel, c_sc, c_zr, c_ov, c_mean, c_tmp, c_codes, c_isout, c_loss;
  json_t *stats;                /* the current block's per-linear bits */
  double blk_bits, blk_params;  /* the current block's totals */
  double all_bits, all_params;  /* the model's so far */
} sp_state;

/* One layer's sweep over the extended rows [a, a + me). */
typedef struct {
  sp_state *S;
  int64_t n, me, B, g, ng, SG, a;
  float maxq;
  const uint8_t *dead;
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

/* Statistics of group k (columns [c, c + g) of the block starting at i1)
 * for tile rows [t0, t0 + nr). */
static void group_start(sweep *W, int64_t t0, int64_t nr, int64_t c, int64_t i1,
                        const float *panel) {
  sp_state *S = W->S;
  const int64_t n = W->n, k = c / W->g, cnt = W->g < n - c ? W->g : n - c;
  const float tau = (float)S->cli.tau;
  uint8_t skip[256];
  for (int64_t r = t0; r < t0 + nr; r++) {
    const float *x = S->w + r * n + c;
    float s0, z0, s, z;
    minmax(x, NULL, cnt, W->maxq, &s0, &z0);
    double m = 0;
    float *e = S->tmp;
    for (int64_t j = 0; j < cnt; j++) {
      uint8_t code;
      float d = panel[(c + j - i1) * n + c + j], q = quant(x[j], s0, z0, W->maxq, &code);
      e[j] = (x[j] - q) * (x[j] - q) / (d * d);
      m += e[j];
    }
    m /= (double)cnt;
    for (int64_t j = 0; j < cnt; j++) skip[j] = tau > 0 && e[j] > tau * (float)m;
    if (!minmax(x, skip, cnt, W->maxq, &s, &z)) s = s0, z = z0;
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
      int out = tau > 0 && S->mean[r] > 0 && err > tau * S->mean[r];
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
  QZ_CALL(qz_grow(256, sizeof(float), "SpQR scratch", &S->tmp, &S->c_tmp));
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
  for (int64_t r = 0; r < m; r++) {
    const int64_t er = off + r;
    memcpy(res->codes + r * n, S->codes + er * n, (size_t)n);
    memcpy(res->scale + r * W->ng, S->sc + er * W->ng, (size_t)W->ng * 4);
    memcpy(res->zero + r * W->ng, S->zr + er * W->ng, (size_t)W->ng * 4);
    for (int64_t j = 0; j < n; j++) {
      const int64_t k = j / W->g;
      float q = S->sc[er * W->ng + k] * ((float)S->codes[er * n + j] - S->zr[er * W->ng + k]);
      if (S->isout[er * n + j]) {
        float v = S->ov[er * n + j] - q;
        res->outlier_idx[res->noutliers] = (L->row0 + r) * n + j;
        res->outlier_val[res->noutliers++] = v;
        q += v;
      }
      if (res->q) res->q[r * n + j] = q;
    }
    if (res->losses) res->losses[r] = (float)S->loss[er];
    res->loss_local += S->loss[er];
  }
  for (int64_t j = 0; j < n; j++) {
    if (res->g_idx) res->g_idx[j] = (int32_t)(j / W->g);
    if (res->perm) res->perm[j] = (int32_t)j;
  }
  res->percdamp_used = pi->percdamp_used;
  res->ndead = pi->ndead;
  return QZ_OK;
}

/* Bits per parameter of the layer as SpQR counts them: dense codes,
 * first-level scale and zero at stats_bits each, the second level's fp16
 * scale and zero of both per (row group, column group), 32 bits per
 * outlier (fp16 value + 16-bit column index). Collective (nnz sum). */
static int account(sweep *W, const qz_layer *L, MPI_Comm comm, int64_t nnz_local) {
  sp_state *S = W->S;
  int64_t nnz = nnz_local;
  QZ_CALL(qz_allreduce_i64(comm, &nnz, 1, MPI_SUM));
  const double out = (double)L->out_features, n = (double)W->n, ng = (double)W->ng;
  const double tiles = ceil(out / (double)W->SG);
  double bits = S->mo.spec.bits * out * n + 2.0 * S->cli.stats_bits * out * ng +
                4.0 * 16.0 * tiles * ng + 32.0 * (double)nnz;
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
                        .act_order = 0, .name = name};
  QZ_CALL(qz_hessian_prepare(L->H, &po));
  const qz_prepare_info *pi = qz_hessian_prepared(L->H);
  sweep W = {.S = S, .n = L->in_features, .B = S->mo.blocksize > 0 ? S->mo.blocksize : 128,
             .g = S->mo.spec.groupsize, .SG = S->cli.stats_group,
             .maxq = (float)((1 << S->mo.spec.bits) - 1), .dead = pi->dead};
  W.ng = (W.n + W.g - 1) / W.g;
  W.a = L->row0;
  if (L->nrows > 0) {
    W.a = L->row0 - L->row0 % W.SG;
    int64_t b = (L->row0 + L->nrows + W.SG - 1) / W.SG * W.SG;
    W.me = (b < L->out_features ? b : L->out_features) - W.a;
  }
  QZ_CALL(qz_error_agree(comm, fit(S, W.me, W.n, W.B, W.ng)));
  QZ_CALL(gather_rows(comm, L, W.a, W.me, S->w));
  for (int64_t r = 0; r < W.me; r++) /* dead columns: zero weights (GPTQ rule 4) */
    for (int64_t j = 0; j < W.n; j++)
      if (W.dead[j]) S->w[r * W.n + j] = 0.0f;
  memset(S->isout, 0, (size_t)((W.me > 0 ? W.me : 1) * W.n));
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
  QZ_CALL(account(&W, L, comm, res->noutliers));
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
  QZ_CHECK(!o->spec.sym && !o->act_order && !o->static_groups, QZ_ERR_USAGE,
           "--method spqr: asymmetric groups in column order (no --sym, --act-order or "
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
  qz_free(&s->ov); qz_free(&s->mean); qz_free(&s->tmp); qz_free(&s->codes);
  qz_free(&s->isout); qz_free(&s->loss);
  json_decref(s->stats);
  qz_free(state);
}

/* GPTQ's sweep cost on the extended rows; the working set adds codes,
 * flags and fp16 values of every weight (dense, [rows, n]). */
static void sp_plan(const qz_method_opts *o, const qz_plan_machine *mc, int64_t m, int64_t n,
                    qz_plan_linear *p) {
  const double B = o->blocksize > 0 ? o->blocksize : 128, md = (double)m + 32, nd = (double)n;
  p->bytes = 10.0 * md * nd + 4.0 * md * B + 4.0 * B * nd;
  p->flops = md * nd * nd + 2.0 * md * nd * B;
  p->seconds = p->flops / (mc->gemm * mc->gptq_frac) + mc->allgather(mc->ctx, 4.0 * nd * nd);
  p->factor = 1;
}

#define SP_FIELD(f) .ext = 1, .offset = offsetof(sp_cli, f)
static const qz_opt sp_rows[] = {
    {.name = "outlier-threshold", .type = QZ_OPT_REAL, SP_FIELD(tau), .def = 8.0, .lo = 0,
     .hi = 1e30, .json = "outlier_threshold", .metavar = "TAU",
     .help = "spqr: keep a weight in fp16 when its OBS error exceeds TAU x its group's mean "
             "error (default 8; 0 = no outliers)"},
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
    .uses = QZ_USES_BITS | QZ_USES_GROUP,
    .check = sp_check,
    .needs = sp_needs,
    .setup = sp_setup,
    .quantize_layer = sp_layer,
    .destroy = sp_destroy,
    .quantize_block = sp_block,
    .plan_linear = sp_plan};
