/* AWQ: llm-awq's quantizer, scale search, folding and clip search, with the
 * calibration windows distributed over the ranks. */
#include "mpiquant/awq.h"

#include <cblas.h>
#undef I
#include <jansson.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/gptq.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/moe.h"
#include "mpiquant/shard.h"
#include "mpiquant/timing.h"

/* ---- quantizer ------------------------------------------------------- */

static void quant_group(const float *w, int64_t n, float maxq, uint8_t *codes,
                        float *scale, float *zero, float *q) {
  float mx = w[0], mn = w[0];
  for (int64_t j = 1; j < n; j++) {
    mx = w[j] > mx ? w[j] : mx;
    mn = w[j] < mn ? w[j] : mn;
  }
  float d = mx - mn;
  float s = (d < 1e-5f ? 1e-5f : d) / maxq;
  float z = -rintf(mn / s);
  z = z < 0.0f ? 0.0f : (z > maxq ? maxq : z);
  for (int64_t j = 0; j < n; j++) {
    float c = rintf(w[j] / s) + z;
    c = c < 0.0f ? 0.0f : (c > maxq ? maxq : c);
    if (codes) codes[j] = (uint8_t)c;
    if (q) q[j] = (c - z) * s;
  }
  if (scale) *scale = s;
  if (zero) *zero = z;
}

void qz_awq_quantize_rows(int bits, int64_t group, int64_t rows, int64_t in,
                          const float *w, uint8_t *codes, float *scale,
                          float *zero, float *q) {
  const float maxq = (float)((1 << bits) - 1);
  const int64_t g = group <= 0 ? in : group;
  const int64_t ng = (in + g - 1) / g;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t k = 0; k < ng; k++) {
      int64_t c0 = k * g, n = c0 + g < in ? g : in - c0;
      quant_group(w + r * in + c0, n, maxq, codes ? codes + r * in + c0 : NULL,
                  scale ? scale + r * ng + k : NULL, zero ? zero + r * ng + k : NULL,
                  q ? q + r * in + c0 : NULL);
    }
}

qz_awq_opts qz_awq_opts_default(int bits, int64_t group) {
  return (qz_awq_opts){.bits = bits, .group = group, .n_grid = 20, .clip = 1,
                       .clip_tokens = 512, .clip_grid = 20, .max_shrink = 0.5};
}

/* ---- block search ----------------------------------------------------- */

typedef struct {
  MPI_Comm comm;
  int rank, size;
  const qz_awq_opts *o;
  qz_fwd *f;
  qz_block_weights *w;  /* current (candidate) weights */
  qz_block_weights *w0; /* fp copy (in the workspace) */
  int64_t T, L, nw, win0, nwin_total, H, I, qd;
  float *x1, *xo, *x3, *x4; /* recorded inputs [T, H], [T, qd], [T, H], [T, I] */
  float *y_attn, *y_mlp;    /* fp outputs of o_proj, down_proj [T, H] */
  float *y;                 /* candidate output [T, H] */
  double *acc;              /* [nwin_total * max(H, qd, I)] per-window sums */
  double t_loss[QZ_AWQ_NSEARCH], t_clip; /* seconds, for the log */
} awq_ctx;

/* y [T, out] = x [T, in] . W', one sgemm per window (the forward's rule:
 * a window's result does not depend on the rank count). */
static void lin_windows(const awq_ctx *c, float *y, const float *x, const float *W,
                        int64_t out, int64_t in) {
  for (int64_t r0 = 0; r0 < c->T; r0 += c->L)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->L, (int)out, (int)in,
                1.0f, x + r0 * in, (int)in, W, (int)in, 0.0f, y + r0 * out, (int)out);
}

/* Mean over all windows' tokens of |x_j|: per-window double sums, reduced,
 * added in window order. Collective. */
static int col_mean_abs(awq_ctx *c, const float *x, int64_t C, float *mean) {
  memset(c->acc, 0, sizeof(double) * (size_t)(c->nwin_total * C));
  for (int64_t w = 0; w < c->nw; w++) {
    double *a = c->acc + (c->win0 + w) * C;
    for (int64_t t = 0; t < c->L; t++) {
      const float *r = x + (w * c->L + t) * C;
      for (int64_t j = 0; j < C; j++) a[j] += fabs((double)r[j]);
    }
  }
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, c->acc, (int)(c->nwin_total * C), MPI_DOUBLE,
                            MPI_SUM, c->comm));
  qz_count_allreduce(c->comm, 8 * c->nwin_total * C);
  double n = (double)(c->nwin_total * c->L);
  for (int64_t j = 0; j < C; j++) {
    double s = 0.0;
    for (int64_t w = 0; w < c->nwin_total; w++) s += c->acc[w * C + j];
    mean[j] = (float)(s / n);
  }
  return QZ_OK;
}

/* Mean squared difference of y and ref [T, H] over all elements of all
 * windows (same reduction rule). Collective. */
static int mse(awq_ctx *c, const float *y, const float *ref, double *out) {
  memset(c->acc, 0, sizeof(double) * (size_t)c->nwin_total);
  for (int64_t w = 0; w < c->nw; w++) {
    double a = 0.0;
    const int64_t n = c->L * c->H, o = w * n;
    for (int64_t i = 0; i < n; i++) {
      double d = (double)(y[o + i] - ref[o + i]);
      a += d * d;
    }
    c->acc[c->win0 + w] = a;
  }
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, c->acc, (int)c->nwin_total, MPI_DOUBLE,
                            MPI_SUM, c->comm));
  qz_count_allreduce(c->comm, 8 * c->nwin_total);
  double s = 0.0;
  for (int64_t w = 0; w < c->nwin_total; w++) s += c->acc[w];
  *out = s / ((double)(c->nwin_total * c->L) * (double)c->H);
  return QZ_OK;
}

/* s = max(xbar^r, 1e-4); s /= sqrt(max s * min s) (f32, llm-awq). */
static void ratio_scales(const float *xbar, int64_t n, double r, float *s) {
  for (int64_t j = 0; j < n; j++) {
    float v = r == 0.0 ? 1.0f : (r == 0.5 ? sqrtf(xbar[j]) : powf(xbar[j], (float)r));
    s[j] = v < 1e-4f ? 1e-4f : v;
  }
  float mx = s[0], mn = s[0];
  for (int64_t j = 1; j < n; j++) {
    mx = s[j] > mx ? s[j] : mx;
    mn = s[j] < mn ? s[j] : mn;
  }
  float d = sqrtf(mx * mn);
  for (int64_t j = 0; j < n; j++) s[j] = s[j] / d;
}

/* dst = Q(src * diag(s)) * diag(s)^-1 */
static void cand_weight(const awq_ctx *c, const float *src, int64_t out, int64_t in,
                        const float *s, float *dst) {
  for (int64_t i = 0; i < out; i++)
    for (int64_t j = 0; j < in; j++) dst[i * in + j] = src[i * in + j] * s[j];
  qz_awq_quantize_rows(c->o->bits, c->o->group, out, in, dst, NULL, NULL, NULL, dst);
  for (int64_t i = 0; i < out; i++)
    for (int64_t j = 0; j < in; j++) dst[i * in + j] = dst[i * in + j] / s[j];
}

static const qz_linear k_scaled[QZ_AWQ_NSEARCH][3] = {
    {QZ_LIN_Q, QZ_LIN_K, QZ_LIN_V}, {QZ_LIN_O, QZ_LIN_COUNT, QZ_LIN_COUNT},
    {QZ_LIN_GATE, QZ_LIN_UP, QZ_LIN_COUNT}, {QZ_LIN_DOWN, QZ_LIN_COUNT, QZ_LIN_COUNT}};

static void lin_shape(const awq_ctx *c, qz_linear l, int64_t *out, int64_t *in) {
  int64_t kvd = c->w->nkv * c->w->hd;
  switch (l) {
    case QZ_LIN_Q: *out = c->qd; *in = c->H; break;
    case QZ_LIN_K: case QZ_LIN_V: *out = kvd; *in = c->H; break;
    case QZ_LIN_O: *out = c->H; *in = c->qd; break;
    case QZ_LIN_GATE: case QZ_LIN_UP: *out = c->I; *in = c->H; break;
    default: *out = c->H; *in = c->I; break;
  }
}

/* Loss of the current candidate weights of search k. Collective. */
static int search_loss(awq_ctx *c, int k, double *loss) {
  const float *ref = k <= QZ_AWQ_O ? c->y_attn : c->y_mlp;
  int64_t nc;
  switch (k) {
    case QZ_AWQ_QKV: /* whole self-attention: q,k,v, attention, fp o_proj */
      qz_fwd_invalidate(c->f, QZ_STAGE_O_IN);
      QZ_CALL(qz_fwd_run(c->f, c->w, QZ_STAGE_O_IN));
      lin_windows(c, c->y, qz_fwd_stage_output(c->f, QZ_STAGE_O_IN, &nc),
                  c->w0->w[QZ_LIN_O], c->H, c->qd);
      break;
    case QZ_AWQ_O:
      lin_windows(c, c->y, c->xo, c->w->w[QZ_LIN_O], c->H, c->qd);
      break;
    case QZ_AWQ_GATEUP: /* whole MLP: gate, up, silu*, fp down_proj */
      qz_fwd_invalidate(c->f, QZ_STAGE_DOWN_IN);
      QZ_CALL(qz_fwd_run(c->f, c->w, QZ_STAGE_DOWN_IN));
      lin_windows(c, c->y, qz_fwd_stage_output(c->f, QZ_STAGE_DOWN_IN, &nc),
                  c->w0->w[QZ_LIN_DOWN], c->H, c->I);
      break;
    default:
      lin_windows(c, c->y, c->x4, c->w->w[QZ_LIN_DOWN], c->H, c->I);
      break;
  }
  return mse(c, c->y, ref, loss);
}

/* Grid search of search k; best scales into best [C]. Collective. */
static int search(awq_ctx *c, int k, const float *xbar, int64_t C, float *best,
                  float *s, qz_awq_block_result *res) {
  double best_loss = INFINITY;
  int best_i = -1;
  for (int i = 0; i < c->o->n_grid; i++) {
    double r = (double)i * 1.0 / (double)c->o->n_grid;
    ratio_scales(xbar, C, r, s);
    for (int m = 0; m < 3 && k_scaled[k][m] != QZ_LIN_COUNT; m++) {
      qz_linear l = k_scaled[k][m];
      int64_t out, in;
      lin_shape(c, l, &out, &in);
      cand_weight(c, c->w0->w[l], out, in, s, c->w->w[l]);
    }
    double loss = INFINITY;
    double t0 = MPI_Wtime();
    QZ_CALL(search_loss(c, k, &loss));
    c->t_loss[k] += MPI_Wtime() - t0;
    if (i == 0) res->loss_r0[k] = loss;
    if (loss < best_loss) {
      best_loss = loss;
      best_i = i;
      memcpy(best, s, sizeof(float) * (size_t)C);
    }
  }
  for (int m = 0; m < 3 && k_scaled[k][m] != QZ_LIN_COUNT; m++) { /* restore */
    qz_linear l = k_scaled[k][m];
    int64_t out, in;
    lin_shape(c, l, &out, &in);
    memcpy(c->w->w[l], c->w0->w[l], sizeof(float) * (size_t)(out * in));
  }
  QZ_CHECK(best_i >= 0, QZ_ERR_NUMERIC, "AWQ scale search %d: no finite loss", k);
  res->ratio[k] = (double)best_i * 1.0 / (double)c->o->n_grid;
  res->loss[k] = best_loss;
  return QZ_OK;
}

static void scale_cols(float *w, int64_t out, int64_t in, const float *s) {
  for (int64_t i = 0; i < out; i++)
    for (int64_t j = 0; j < in; j++) w[i * in + j] *= s[j];
}
static void div_cols(float *x, int64_t n, int64_t C, const float *s) {
  for (int64_t t = 0; t < n; t++)
    for (int64_t j = 0; j < C; j++) x[t * C + j] /= s[j];
}

/* Rows of x [T, C] at global token indices 0, stride, 2 stride, ... gathered
 * on every rank in global order: xs [ns, C]. Collective. */
static int gather_samples(awq_ctx *c, const float *x, int64_t C, int64_t stride,
                          int64_t ns, float *xs) {
  int *cnt = NULL, *dsp = NULL, st = QZ_OK;
  float *mine = NULL;
  QZ_CALL_DONE(qz_alloc((size_t)c->size, sizeof(int), "counts", &cnt));
  QZ_CALL_DONE(qz_alloc((size_t)c->size, sizeof(int), "displs", &dsp));
  int64_t off = 0;
  for (int p = 0; p < c->size; p++) {
    int64_t f0, n0;
    qz_shard_windows(c->nwin_total, c->size, p, &f0, &n0);
    int64_t t0 = f0 * c->L, t1 = (f0 + n0) * c->L; /* global tokens [t0, t1) */
    int64_t a = (t0 + stride - 1) / stride, b = (t1 + stride - 1) / stride;
    if (b > ns) b = ns;
    if (a > b) a = b;
    QZ_CHECK_DONE((b - a) * C <= INT32_MAX && off * C <= INT32_MAX, QZ_ERR_ARG,
                  "AWQ clip samples too large for one gather");
    cnt[p] = (int)((b - a) * C);
    dsp[p] = (int)(off * C);
    off += b - a;
  }
  QZ_CALL_DONE(qz_alloc((size_t)(cnt[c->rank] / (C ? C : 1) + 1) * (size_t)C,
                        sizeof(float), "clip samples", &mine));
  {
    int64_t t0 = c->win0 * c->L, n = 0;
    for (int64_t t = (t0 + stride - 1) / stride * stride; t < t0 + c->T && t / stride < ns;
         t += stride, n++)
      memcpy(mine + n * C, x + (t - t0) * C, sizeof(float) * (size_t)C);
  }
  QZ_CALL_MPI_DONE(MPI_Allgatherv(mine, cnt[c->rank], MPI_FLOAT, xs, cnt, dsp, MPI_FLOAT,
                              c->comm));
  qz_count_allgatherv(c->comm, cnt, 4);
done:
  free(cnt);
  free(dsp);
  free(mine);
  return st;
}

/* a[t] = sum_j (double)(xt[j][t] * w[j]) for t < ns, each a[t] summed
 * over j in order from 0.0 (the float product widened, then added in
 * double: the scalar definition), 8 samples per vector so the sums run
 * side by side; xt [n][ld] is the group's samples transposed (ld >= ns, a
 * multiple of 8, zero past ns). Not collective. */
typedef float awq_v8f __attribute__((vector_size(8 * sizeof(float))));
typedef double awq_v8d __attribute__((vector_size(8 * sizeof(double))));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
__attribute__((target_clones("avx512f", "avx2", "default")))
static void clip_dots(double *a, const float *xt, int64_t ld, int64_t ns, const float *w,
                      int64_t n) {
  for (int64_t t = 0; t < ns; t += 8) {
    awq_v8d acc = {0};
    for (int64_t j = 0; j < n; j++) {
      awq_v8f x;
      memcpy(&x, xt + j * ld + t, sizeof x);
      acc += __builtin_convertvector(x * w[j], awq_v8d);
    }
    memcpy(a + t, &acc, sizeof acc); /* a has ld entries */
  }
}
#pragma GCC diagnostic pop

/* Clip search of one linear W [out, in] (folded) on samples xs [ns, in]:
 * this rank's rows, best m per (row, group) gathered, then W clamped.
 * Collective. */
static int clip_linear(awq_ctx *c, float *W, int64_t out, int64_t in, const float *xs,
                       int64_t ns, int64_t *nclipped) {
  const int64_t g = c->o->group <= 0 ? in : c->o->group, ng = (in + g - 1) / g;
  const float maxq = (float)((1 << c->o->bits) - 1);
  int64_t r0, nr;
  qz_split_even(out, c->size, c->rank, &r0, &nr);
  float *best = NULL, *tmp = NULL, *all = NULL;
  float *xt = NULL;
  double *org = NULL, *dot = NULL;
  int *cnt = NULL, *dsp = NULL, st = QZ_OK;
  QZ_CALL_DONE(qz_alloc((size_t)((nr > 0 ? nr : 1) * ng), sizeof(float), "clip", &best));
  QZ_CALL_DONE(qz_alloc((size_t)(out * ng), sizeof(float), "clip", &all));
  QZ_CALL_DONE(qz_alloc((size_t)g, sizeof(float), "clip", &tmp));
  const int64_t ld = (ns + 7) / 8 * 8 + 8;
  QZ_CALL_DONE(qz_alloc((size_t)ld, sizeof(double), "clip", &org));
  QZ_CALL_DONE(qz_alloc((size_t)ld, sizeof(double), "clip", &dot));
  QZ_CALL_DONE(qz_alloc((size_t)(g * ld), sizeof(float), "clip samples", &xt));
  QZ_CALL_DONE(qz_alloc((size_t)c->size, sizeof(int), "counts", &cnt));
  QZ_CALL_DONE(qz_alloc((size_t)c->size, sizeof(int), "displs", &dsp));
  int nsteps = (int)(c->o->max_shrink * c->o->clip_grid);
  /* group by group: its samples transposed once for all of this rank's
   * rows ((row, group) pairs are independent: the order changes nothing) */
  for (int64_t k = 0; k < ng; k++) {
    int64_t c0 = k * g, n = c0 + g < in ? g : in - c0;
    for (int64_t j = 0; j < n; j++) {
      for (int64_t t = 0; t < ns; t++) xt[j * ld + t] = xs[t * in + c0 + j];
      for (int64_t t = ns; t < ld; t++) xt[j * ld + t] = 0.0f;
    }
    for (int64_t r = 0; r < nr; r++) {
      const float *wg = W + (r0 + r) * in + c0;
      float m0 = 0.0f;
      for (int64_t j = 0; j < n; j++) m0 = fabsf(wg[j]) > m0 ? fabsf(wg[j]) : m0;
      clip_dots(org, xt, ld, ns, wg, n);
      double min_err = 1e9;
      float bm = m0;
      for (int i = 0; i < nsteps; i++) {
        float m = m0 * (float)(1.0 - (double)i / (double)c->o->clip_grid);
        for (int64_t j = 0; j < n; j++)
          tmp[j] = wg[j] < -m ? -m : (wg[j] > m ? m : wg[j]);
        quant_group(tmp, n, maxq, NULL, NULL, NULL, tmp);
        clip_dots(dot, xt, ld, ns, tmp, n);
        double err = 0.0;
        for (int64_t t = 0; t < ns; t++) err += (dot[t] - org[t]) * (dot[t] - org[t]);
        err /= (double)ns;
        if (err < min_err) {
          min_err = err;
          bm = m;
        }
      }
      best[r * ng + k] = bm;
    }
  }
  for (int p = 0; p < c->size; p++) {
    int64_t b, n;
    qz_split_even(out, c->size, p, &b, &n);
    cnt[p] = (int)(n * ng);
    dsp[p] = (int)(b * ng);
  }
  QZ_CALL_MPI_DONE(MPI_Allgatherv(best, cnt[c->rank], MPI_FLOAT, all, cnt, dsp, MPI_FLOAT,
                              c->comm));
  qz_count_allgatherv(c->comm, cnt, 4);
  *nclipped = 0;
  for (int64_t r = 0; r < out; r++)
    for (int64_t k = 0; k < ng; k++) {
      int64_t c0 = k * g, c1 = c0 + g < in ? c0 + g : in;
      float m = all[r * ng + k], m0 = 0.0f;
      for (int64_t j = c0; j < c1; j++) m0 = fabsf(W[r * in + j]) > m0 ? fabsf(W[r * in + j]) : m0;
      if (m < m0) (*nclipped)++;
      for (int64_t j = c0; j < c1; j++) {
        float v = W[r * in + j];
        W[r * in + j] = v < -m ? -m : (v > m ? m : v);
      }
    }
done:
  free(best);
  free(all);
  free(tmp);
  free(org);
  free(dot);
  free(xt);
  free(cnt);
  free(dsp);
  return st;
}

/* Buffers of the block search, allocated for the first block and reused
 * while the shapes stay (every block of a model): no per-block allocation
 * or first touch of the block copy and the token-sized buffers. */
struct qz_awq_work {
  int64_t T, H, I, qd, nwin_total, ns; /* the shapes they were made for */
  qz_block_weights w0;                 /* fp copy of the block */
  float *x1, *xo, *x3, *x4;            /* recorded inputs [T, H], [T, qd], [T, H], [T, I] */
  float *y_attn, *y_mlp, *y;           /* [T, H] */
  double *acc;                         /* [nwin_total * C] */
  float *xbar, *s, *sc[QZ_AWQ_NSEARCH]; /* [C] */
  float *xs;                           /* clip samples [ns, C] */
};

static void work_release(qz_awq_work *k) {
  qz_block_weights_free(&k->w0);
  qz_free(&k->x1); qz_free(&k->xo); qz_free(&k->x3); qz_free(&k->x4);
  qz_free(&k->y_attn); qz_free(&k->y_mlp); qz_free(&k->y); qz_free(&k->acc);
  qz_free(&k->xbar); qz_free(&k->s); qz_free(&k->xs);
  for (int i = 0; i < QZ_AWQ_NSEARCH; i++) qz_free(&k->sc[i]);
  memset(k, 0, sizeof *k);
}

int qz_awq_work_create(qz_awq_work **out) {
  return qz_calloc(1, sizeof **out, "AWQ workspace", out);
}

void qz_awq_work_destroy(qz_awq_work **k) {
  if (!k || !*k) return;
  work_release(*k);
  qz_free(k);
}

/* (Re)allocate k for these shapes unless it already fits. Not collective. */
static int work_fit(qz_awq_work *k, const qz_model_config *cfg, const awq_ctx *c,
                    int64_t ns) {
  if (k->w0.mem && k->T == c->T && k->H == c->H && k->I == c->I && k->qd == c->qd &&
      k->nwin_total == c->nwin_total && k->ns == ns)
    return QZ_OK;
  work_release(k);
  int64_t C = c->H > c->qd ? c->H : c->qd;
  C = C > c->I ? C : c->I;
  size_t T = (size_t)(c->T > 0 ? c->T : 1);
  /* an MoE model's block copy leaves out the experts (the driver streams
   * them one at a time; its block has the same layout) */
  int st = qz_block_weights_alloc_ex(cfg, !qz_config_any_moe(cfg), &k->w0);
  if (st == QZ_OK) st = qz_alloc(T * (size_t)c->H, 4, "AWQ inputs", &k->x1);
  if (st == QZ_OK) st = qz_alloc(T * (size_t)c->qd, 4, "AWQ inputs", &k->xo);
  if (st == QZ_OK) st = qz_alloc(T * (size_t)c->H, 4, "AWQ inputs", &k->x3);
  if (st == QZ_OK) st = qz_alloc(T * (size_t)c->I, 4, "AWQ inputs", &k->x4);
  if (st == QZ_OK) st = qz_alloc(T * (size_t)c->H, 4, "AWQ outputs", &k->y_attn);
  if (st == QZ_OK) st = qz_alloc(T * (size_t)c->H, 4, "AWQ outputs", &k->y_mlp);
  if (st == QZ_OK) st = qz_alloc(T * (size_t)c->H, 4, "AWQ outputs", &k->y);
  if (st == QZ_OK) st = qz_alloc((size_t)(c->nwin_total * C), 8, "AWQ sums", &k->acc);
  if (st == QZ_OK) st = qz_alloc((size_t)C, 4, "AWQ scales", &k->xbar);
  if (st == QZ_OK) st = qz_alloc((size_t)C, 4, "AWQ scales", &k->s);
  for (int i = 0; i < QZ_AWQ_NSEARCH && st == QZ_OK; i++)
    st = qz_alloc((size_t)C, 4, "AWQ scales", &k->sc[i]);
  if (st == QZ_OK && ns > 0) st = qz_alloc((size_t)(ns * C), 4, "clip samples", &k->xs);
  if (st != QZ_OK) {
    work_release(k);
    return st;
  }
  k->T = c->T; k->H = c->H; k->I = c->I; k->qd = c->qd;
  k->nwin_total = c->nwin_total; k->ns = ns;
  return QZ_OK;
}

int qz_awq_block(MPI_Comm comm, const qz_model_config *cfg, qz_fwd *f,
                 qz_block_weights *w, const qz_awq_opts *o, int64_t win0,
                 int64_t nwin_total, qz_awq_block_result *res) {
  qz_awq_work *k = NULL;
  QZ_CALL(qz_awq_work_create(&k));
  int st = qz_awq_block_work(k, comm, cfg, f, w, o, win0, nwin_total, res);
  qz_awq_work_destroy(&k);
  return st;
}

int qz_awq_block_work(qz_awq_work *k, MPI_Comm comm, const qz_model_config *cfg, qz_fwd *f,
                      qz_block_weights *w, const qz_awq_opts *o, int64_t win0,
                      int64_t nwin_total, qz_awq_block_result *res) {
  awq_ctx c = {.comm = comm, .o = o, .f = f, .w = w, .win0 = win0,
               .nwin_total = nwin_total};
  MPI_Comm_rank(comm, &c.rank);
  MPI_Comm_size(comm, &c.size);
  c.T = qz_fwd_ntok(f);
  c.L = qz_fwd_seqlen(f);
  c.nw = qz_fwd_nwin(f);
  c.H = w->hidden;
  c.I = qz_config_all_moe(cfg) ? 1 : w->inter; /* no dense MLP: no MLP inputs to keep */
  c.qd = w->nq * w->hd;
  memset(res, 0, sizeof *res);
  double t_all = MPI_Wtime();
  int st = QZ_OK;
  QZ_CHECK(c.nw == 0 || qz_fwd_batch_max(f) >= c.nw, QZ_ERR_ARG,
           "AWQ needs all %lld local windows in one forward batch (batch %lld)",
           (long long)c.nw, (long long)qz_fwd_batch_max(f));
  QZ_CHECK(o->bits >= 2 && o->bits <= 8 && o->n_grid >= 1, QZ_ERR_ARG,
           "AWQ: bits %d, grid %d", o->bits, o->n_grid);
  /* clip samples: tokens [0 :: stride] of the global index */
  int64_t ntot = nwin_total * c.L;
  int64_t stride = ntot / (o->clip_tokens > 0 ? o->clip_tokens : 512);
  if (stride < 1) stride = 1;
  int64_t ns = o->clip ? (ntot + stride - 1) / stride : 0;
  QZ_CALL(qz_error_agree(comm, work_fit(k, cfg, &c, ns)));
  c.w0 = &k->w0;
  c.x1 = k->x1; c.xo = k->xo; c.x3 = k->x3; c.x4 = k->x4;
  c.y_attn = k->y_attn; c.y_mlp = k->y_mlp; c.y = k->y; c.acc = k->acc;
  float *xbar = k->xbar, *s = k->s, *const *sc = k->sc, *xs = k->xs;
  size_t T = (size_t)(c.T > 0 ? c.T : 1);
  qz_block_weights_copy(c.w0, w);

  /* fp pass: inputs of all 7 linears, fp outputs of o_proj and down_proj
   * (an MoE block: the attention's only; its experts are the driver's) */
  const int moe = w->moe;
  qz_fwd_block_begin(f);
  QZ_CALL_DONE(qz_fwd_run(f, w, moe ? QZ_STAGE_GATEUP_IN : QZ_STAGE_OUT));
  int64_t nc;
  if (c.T > 0) {
    memcpy(c.x1, qz_fwd_stage_output(f, QZ_STAGE_QKV_IN, &nc), T * (size_t)c.H * 4);
    memcpy(c.xo, qz_fwd_stage_output(f, QZ_STAGE_O_IN, &nc), T * (size_t)c.qd * 4);
    if (!moe) {
      memcpy(c.x3, qz_fwd_stage_output(f, QZ_STAGE_GATEUP_IN, &nc), T * (size_t)c.H * 4);
      memcpy(c.x4, qz_fwd_stage_output(f, QZ_STAGE_DOWN_IN, &nc), T * (size_t)c.I * 4);
    }
  }
  lin_windows(&c, c.y_attn, c.xo, w->w[QZ_LIN_O], c.H, c.qd);
  if (!moe) lin_windows(&c, c.y_mlp, c.x4, w->w[QZ_LIN_DOWN], c.H, c.I);

  /* searches, independent of each other (all on the fp weights).  Order:
   * the MLP ones first while GATEUP_IN's cached output is still the fp one,
   * the attention one last (it recomputes O_IN only). */
  int kvd = (int)(w->nkv * w->hd);
  res->applied[QZ_AWQ_QKV] = 1;
  res->applied[QZ_AWQ_GATEUP] = res->applied[QZ_AWQ_DOWN] = !moe;
  res->applied[QZ_AWQ_O] = (kvd == c.H && c.qd == c.H); /* v [kvd,H] == o [H,qd] */
  static const int order[QZ_AWQ_NSEARCH] = {QZ_AWQ_GATEUP, QZ_AWQ_DOWN, QZ_AWQ_O, QZ_AWQ_QKV};
  for (int i = 0; i < QZ_AWQ_NSEARCH; i++) {
    int k = order[i];
    res->ratio[k] = -1.0;
    if (!res->applied[k]) continue;
    const float *x = k == QZ_AWQ_QKV ? c.x1 : k == QZ_AWQ_O ? c.xo
                   : k == QZ_AWQ_GATEUP ? c.x3 : c.x4;
    int64_t C_k = k == QZ_AWQ_O ? c.qd : k == QZ_AWQ_DOWN ? c.I : c.H;
    QZ_CALL_DONE(col_mean_abs(&c, x, C_k, xbar));
    QZ_CALL_DONE(search(&c, k, xbar, C_k, sc[k], s, res));
  }
  /* the fp block output again (f then holds OUT of the original weights;
   * an MoE block: the FFN input GATEUP_IN) */
  qz_fwd_invalidate(f, QZ_STAGE_O_IN);
  QZ_CALL_DONE(qz_fwd_run(f, w, moe ? QZ_STAGE_GATEUP_IN : QZ_STAGE_OUT));

  /* fold, in llm-awq's order; recorded inputs of the scaled linears / s */
  int64_t out, in;
  {
    const float *s1 = sc[QZ_AWQ_QKV];
    for (int64_t j = 0; j < c.H; j++) w->attn_norm[j] /= s1[j];
    for (int m = 0; m < 3; m++) {
      lin_shape(&c, k_scaled[QZ_AWQ_QKV][m], &out, &in);
      scale_cols(w->w[k_scaled[QZ_AWQ_QKV][m]], out, in, s1);
    }
    div_cols(c.x1, c.T, c.H, s1);
  }
  if (res->applied[QZ_AWQ_O]) {
    const float *s2 = sc[QZ_AWQ_O];
    lin_shape(&c, QZ_LIN_V, &out, &in);
    for (int64_t i = 0; i < out; i++) {
      for (int64_t j = 0; j < in; j++) w->w[QZ_LIN_V][i * in + j] /= s2[i];
      if (w->b[QZ_LIN_V]) w->b[QZ_LIN_V][i] /= s2[i];
    }
    scale_cols(w->w[QZ_LIN_O], c.H, c.qd, s2);
    div_cols(c.xo, c.T, c.qd, s2);
  }
  if (!moe) {
    const float *s3 = sc[QZ_AWQ_GATEUP];
    for (int64_t j = 0; j < c.H; j++) w->ffn_norm[j] /= s3[j];
    scale_cols(w->w[QZ_LIN_GATE], c.I, c.H, s3);
    scale_cols(w->w[QZ_LIN_UP], c.I, c.H, s3);
    div_cols(c.x3, c.T, c.H, s3);
  }
  if (!moe) {
    const float *s4 = sc[QZ_AWQ_DOWN];
    for (int64_t i = 0; i < c.I; i++) {
      for (int64_t j = 0; j < c.H; j++) w->w[QZ_LIN_UP][i * c.H + j] /= s4[i];
      if (w->b[QZ_LIN_UP]) w->b[QZ_LIN_UP][i] /= s4[i];
    }
    scale_cols(w->w[QZ_LIN_DOWN], c.H, c.I, s4);
    div_cols(c.x4, c.T, c.I, s4);
  }

  double tc = MPI_Wtime();
  if (o->clip) {
    static const qz_linear clip_lin[] = {QZ_LIN_V, QZ_LIN_O, QZ_LIN_GATE, QZ_LIN_UP,
                                         QZ_LIN_DOWN};
    for (int i = 0; i < (moe ? 2 : 5); i++) { /* MoE: v, o (experts: qz_awq_expert) */
      qz_linear l = clip_lin[i];
      lin_shape(&c, l, &out, &in);
      const float *x = l == QZ_LIN_V ? c.x1 : l == QZ_LIN_O ? c.xo
                     : l == QZ_LIN_DOWN ? c.x4 : c.x3;
      if (l != QZ_LIN_UP) /* up shares gate's samples */
        QZ_CALL_DONE(gather_samples(&c, x, in, stride, ns, xs));
      QZ_CALL_DONE(clip_linear(&c, w->w[l], out, in, xs, ns, &res->clipped[l]));
    }
  }
  qz_debug("awq: search seconds qkv %.2f gate/up %.2f down %.2f o %.2f, clip %.2f, total %.2f",
           c.t_loss[QZ_AWQ_QKV], c.t_loss[QZ_AWQ_GATEUP], c.t_loss[QZ_AWQ_DOWN],
           c.t_loss[QZ_AWQ_O], MPI_Wtime() - tc, MPI_Wtime() - t_all);
done:
  return st;
}

/* ---- one MoE expert (qz_awq_expert) --------------------------------------- */

/* y [n, out] = x [n, in] . W', one sgemm per chunk (a chunk's rows are the
 * same at any rank count, so are their results). */
static void lin_chunks(const qz_expert_ctx *e, float *y, const float *x, const float *W,
                       int64_t out, int64_t in) {
  for (int64_t c = 0, r0 = 0; c < e->nch; r0 = e->ends[c++]) {
    int64_t m = e->ends[c] - r0;
    if (m > 0)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)out, (int)in, 1.0f,
                  x + r0 * in, (int)in, W, (int)in, 0.0f, y + r0 * out, (int)out);
  }
}

/* Mean over all rows of |x_j| (C columns), or with ref the mean squared
 * difference of x and ref over all elements (*mse): per-chunk double sums
 * reduced and added in chunk order. acc [nchunks * C]. Collective. */
static int chunk_means(const qz_expert_ctx *e, const float *x, const float *ref, int64_t C,
                       double *acc, float *mean, double *mse) {
  const int64_t K = ref ? 1 : C;
  memset(acc, 0, sizeof(double) * (size_t)(e->nchunks * K));
  for (int64_t c = 0, r0 = 0; c < e->nch; r0 = e->ends[c++]) {
    double *a = acc + e->chunk[c] * K;
    for (int64_t t = r0; t < e->ends[c]; t++) {
      const float *r = x + t * C;
      if (ref) {
        for (int64_t j = 0; j < C; j++) {
          double d = (double)(r[j] - ref[t * C + j]);
          a[0] += d * d;
        }
      } else {
        for (int64_t j = 0; j < C; j++) a[j] += fabs((double)r[j]);
      }
    }
  }
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, acc, (int)(e->nchunks * K), MPI_DOUBLE, MPI_SUM,
                            e->comm));
  qz_count_allreduce(e->comm, 8 * e->nchunks * K);
  const double n = (double)e->tokens * (ref ? (double)C : 1.0);
  for (int64_t j = 0; j < K; j++) {
    double s = 0.0;
    for (int64_t c = 0; c < e->nchunks; c++) s += acc[c * K + j];
    if (ref) *mse = s / n;
    else mean[j] = (float)(s / n);
  }
  return QZ_OK;
}

/* Rows [0 :: stride] (ns of them) of the global row order (chunks in
 * index order) of x [n, C] into xs [ns, C] on every rank: each sample is
 * one rank's, the others add zeros (exact). Collective. */
static int chunk_samples(const qz_expert_ctx *e, const float *x, int64_t C, int64_t stride,
                         int64_t ns, float *xs) {
  int64_t *off = NULL;
  int st = QZ_OK;
  QZ_CALL(qz_calloc((size_t)e->nchunks + 1, sizeof(int64_t), "expert chunk rows", &off));
  for (int64_t c = 0, r0 = 0; c < e->nch; r0 = e->ends[c++]) off[e->chunk[c]] = e->ends[c] - r0;
  QZ_CALL_DONE(qz_allreduce_i64(e->comm, off, (int)e->nchunks, MPI_SUM));
  for (int64_t c = 0, s = 0; c <= e->nchunks; c++) { /* counts -> first global row */
    int64_t v = c < e->nchunks ? off[c] : 0;
    off[c] = s;
    s += v;
  }
  memset(xs, 0, sizeof(float) * (size_t)(ns * C));
  for (int64_t c = 0, r0 = 0; c < e->nch; r0 = e->ends[c++])
    for (int64_t t = r0; t < e->ends[c]; t++) {
      int64_t gr = off[e->chunk[c]] + (t - r0);
      if (gr % stride == 0 && gr / stride < ns)
        memcpy(xs + gr / stride * C, x + t * C, sizeof(float) * (size_t)C);
    }
  QZ_CALL_MPI_DONE(MPI_Allreduce(MPI_IN_PLACE, xs, (int)(ns * C), MPI_FLOAT, MPI_SUM, e->comm));
  qz_count_allreduce(e->comm, 4 * ns * C);
done:
  qz_free(&off);
  return st;
}

typedef struct {
  float *act, *gs, *yref, *y, *dc, *xs; /* [n, I] x2, [n, H] x2, [H, I], [ns, max(H, I)] */
  float *xbar, *s, *best;               /* [I] */
  double *acc;                          /* [nchunks * I] */
} expert_bufs;

static void expert_bufs_free(expert_bufs *b) {
  qz_free(&b->act); qz_free(&b->gs); qz_free(&b->yref); qz_free(&b->y); qz_free(&b->dc);
  qz_free(&b->xs); qz_free(&b->xbar); qz_free(&b->s); qz_free(&b->best); qz_free(&b->acc);
}

static int expert_bufs_alloc(const qz_expert_ctx *e, int64_t ns, expert_bufs *b) {
  const size_t n = (size_t)(e->n > 0 ? e->n : 1), H = (size_t)e->hidden, I = (size_t)e->inter;
  const size_t C = H > I ? H : I;
  memset(b, 0, sizeof *b);
  int st = qz_alloc(n * I, 4, "AWQ expert activations", &b->act);
  if (st == QZ_OK) st = qz_alloc(n * I, 4, "AWQ expert scratch", &b->gs);
  if (st == QZ_OK) st = qz_alloc(n * H, 4, "AWQ expert outputs", &b->yref);
  if (st == QZ_OK) st = qz_alloc(n * H, 4, "AWQ expert outputs", &b->y);
  if (st == QZ_OK) st = qz_alloc(H * I, 4, "AWQ expert candidate", &b->dc);
  if (st == QZ_OK) st = qz_alloc((size_t)(ns > 0 ? ns : 1) * C, 4, "AWQ clip samples", &b->xs);
  if (st == QZ_OK) st = qz_alloc(I, 4, "AWQ scales", &b->xbar);
  if (st == QZ_OK) st = qz_alloc(I, 4, "AWQ scales", &b->s);
  if (st == QZ_OK) st = qz_alloc(I, 4, "AWQ scales", &b->best);
  if (st == QZ_OK)
    st = qz_alloc((size_t)e->nchunks * C + 1, 8, "AWQ sums", &b->acc);
  if (st != QZ_OK) expert_bufs_free(b);
  return st;
}

/* The up -> down grid search on act [n, I]; the best scales in b->best.
 * Collective. */
static int expert_search(const qz_awq_opts *o, const qz_expert_ctx *e, expert_bufs *b,
                         qz_awq_expert_result *res) {
  const int64_t H = e->hidden, I = e->inter;
  double best_loss = INFINITY;
  int best_i = -1;
  QZ_CALL(chunk_means(e, b->act, NULL, I, b->acc, b->xbar, NULL));
  lin_chunks(e, b->yref, b->act, e->d, H, I);
  for (int i = 0; i < o->n_grid; i++) {
    double r = (double)i * 1.0 / (double)o->n_grid, loss = INFINITY;
    ratio_scales(b->xbar, I, r, b->s);
    for (int64_t h = 0; h < H; h++)
      for (int64_t j = 0; j < I; j++) b->dc[h * I + j] = e->d[h * I + j] * b->s[j];
    qz_awq_quantize_rows(o->bits, o->group, H, I, b->dc, NULL, NULL, NULL, b->dc);
    for (int64_t h = 0; h < H; h++)
      for (int64_t j = 0; j < I; j++) b->dc[h * I + j] = b->dc[h * I + j] / b->s[j];
    lin_chunks(e, b->y, b->act, b->dc, H, I);
    QZ_CALL(chunk_means(e, b->y, b->yref, H, b->acc, NULL, &loss));
    if (i == 0) res->loss_r0 = loss;
    if (loss < best_loss) {
      best_loss = loss;
      best_i = i;
      memcpy(b->best, b->s, sizeof(float) * (size_t)I);
    }
  }
  QZ_CHECK(best_i >= 0, QZ_ERR_NUMERIC, "AWQ block %d expert %d: no finite loss in the "
           "up -> down scale search", e->layer, e->expert);
  res->ratio = (double)best_i * 1.0 / (double)o->n_grid;
  res->loss = best_loss;
  return QZ_OK;
}

int qz_awq_expert(const qz_awq_opts *o, const qz_expert_ctx *e, qz_awq_expert_result *res) {
  const int64_t H = e->hidden, I = e->inter;
  memset(res, 0, sizeof *res);
  res->ratio = -1.0;
  QZ_CHECK(o->bits >= 2 && o->bits <= 8 && o->n_grid >= 1, QZ_ERR_ARG, "AWQ: bits %d, grid %d",
           o->bits, o->n_grid);
  if (e->tokens <= 0) return QZ_OK; /* nothing to search on: scales 1, no clip */
  int64_t stride = e->tokens / (o->clip_tokens > 0 ? o->clip_tokens : 512);
  if (stride < 1) stride = 1;
  const int64_t ns = o->clip ? (e->tokens + stride - 1) / stride : 0;
  expert_bufs b;
  int st = QZ_OK;
  st = qz_error_agree(e->comm, expert_bufs_alloc(e, ns, &b));
  if (st != QZ_OK) { /* another rank's allocation failed */
    expert_bufs_free(&b);
    return st;
  }
  qz_moe_expert_rows(e->g, e->u, NULL, I, H, e->x, e->n, e->ends, e->nch, b.gs, b.act, NULL);
  QZ_CALL_DONE(expert_search(o, e, &b, res));
  for (int64_t i = 0; i < I; i++) /* fold: up rows / s, down columns * s */
    for (int64_t j = 0; j < H; j++) e->u[i * H + j] /= b.best[i];
  scale_cols(e->d, H, I, b.best);
  div_cols(b.act, e->n, I, b.best);
  if (o->clip) {
    awq_ctx c = {.comm = e->comm, .o = o};
    MPI_Comm_rank(e->comm, &c.rank);
    MPI_Comm_size(e->comm, &c.size);
    QZ_CALL_DONE(chunk_samples(e, e->x, H, stride, ns, b.xs)); /* gate and up */
    QZ_CALL_DONE(clip_linear(&c, e->g, I, H, b.xs, ns, &res->clipped[0]));
    QZ_CALL_DONE(clip_linear(&c, e->u, I, H, b.xs, ns, &res->clipped[1]));
    QZ_CALL_DONE(chunk_samples(e, b.act, I, stride, ns, b.xs));
    QZ_CALL_DONE(clip_linear(&c, e->d, H, I, b.xs, ns, &res->clipped[2]));
  }
done:
  expert_bufs_free(&b);
  return st;
}

/* ---- method ops ------------------------------------------------------------ */

typedef struct {
  int clip;       /* run the clip search */
  int then_gptq;  /* GPTQ (true-sequential) on the folded weights */
} awq_cli;

typedef struct {
  qz_method_opts mo;
  awq_cli cli;
  qz_awq_opts awq;
  qz_awq_work *work;
  qz_gptq_ws *gptq; /* --awq-then-gptq */
  json_t *experts;  /* an MoE block's per-expert ratios (null: no search) */
  json_t *shared;   /* its shared expert's ratio, or NULL */
  int64_t eclipped[3]; /* its experts' clipped (row, group)s: gate, up, down */
} awq_state;

static int awq_check(qz_method_opts *o) {
  awq_cli a;
  qz_method_ext_get(o, &a);
  QZ_CHECK(!o->spec.sym, QZ_ERR_USAGE,
           "--method awq uses the zero-point quantizer; --sym is not supported");
  QZ_CHECK(a.then_gptq || !(o->act_order || o->static_groups), QZ_ERR_USAGE,
           "--method awq: --act-order / --static-groups need --awq-then-gptq");
  return QZ_OK;
}

/* plain AWQ calibrates on the fp model (block inputs = outputs of the
 * unquantized blocks, llm-awq); GPTQ after AWQ sequentially */
static unsigned awq_needs(const qz_method_opts *o) {
  awq_cli a;
  qz_method_ext_get(o, &a);
  unsigned n = QZ_NEED_CALIB | QZ_NEED_ACT_STATS | QZ_CKPT_NORMS;
  return n | (a.then_gptq ? QZ_NEED_HESSIAN : QZ_NEED_FP_STREAM);
}

static const char *awq_label(const qz_method_opts *o) {
  awq_cli a;
  qz_method_ext_get(o, &a);
  return a.then_gptq ? "awq+gptq" : "awq";
}

static int awq_setup(const qz_method_opts *o, void **state) {
  QZ_CALL(qz_quant_spec_check(&o->spec));
  QZ_CHECK(!o->spec.sym, QZ_ERR_ARG, "awq uses the zero-point (asymmetric) quantizer; "
           "--sym is not supported");
  awq_state *s = NULL;
  QZ_CALL(qz_calloc(1, sizeof *s, "AWQ state", &s));
  s->mo = *o;
  qz_method_ext_get(o, &s->cli);
  s->awq = qz_awq_opts_default(o->spec.bits, o->spec.groupsize);
  s->awq.clip = s->cli.clip;
  *state = s;
  if (s->cli.then_gptq) QZ_CALL(qz_gptq_ws_create(&s->gptq));
  return QZ_OK;
}

/* the final quantization of the folded, clipped W: llm-awq's quantizer, or
 * GPTQ with --awq-then-gptq */
static int awq_layer(void *state, const qz_layer *L, qz_layer_result *res) {
  const awq_state *s = state;
  if (s->cli.then_gptq) return qz_gptq_quantize_ws(s->gptq, &s->mo, L, res);
  QZ_CALL(qz_layer_check_finite(L));
  qz_awq_quantize_rows(s->mo.spec.bits, s->mo.spec.groupsize, L->nrows, L->in_features, L->w,
                       res->codes, res->scale, res->zero, res->q);
  qz_layer_result_plain(L, s->mo.spec.groupsize, res);
  return QZ_OK;
}

static void awq_destroy(void **state) {
  if (!state || !*state) return;
  awq_state *s = *state;
  qz_awq_work_destroy(&s->work);
  qz_gptq_ws_destroy(&s->gptq);
  json_decref(s->experts);
  json_decref(s->shared);
  qz_free(state);
}

static void awq_report(qz_block_ctx *b, const qz_awq_block_result *ar) {
  char o_txt[32] = "skipped";
  if (ar->applied[QZ_AWQ_O]) snprintf(o_txt, sizeof o_txt, "%.2f", ar->ratio[QZ_AWQ_O]);
  const int moe = b->w->moe;
  if (moe) /* the experts' searches are logged per expert */
    qz_info("block %d awq ratios q/k/v %.2f (o_proj %s); loss vs ratio 0: %.4g/%.4g", b->layer,
            ar->ratio[QZ_AWQ_QKV], o_txt, ar->loss[QZ_AWQ_QKV], ar->loss_r0[QZ_AWQ_QKV]);
  else
    qz_info("block %d awq ratios q/k/v %.2f / gate/up %.2f / down %.2f (o_proj %s); "
          "loss vs ratio 0: %.4g/%.4g, %.4g/%.4g, %.4g/%.4g", b->layer,
          ar->ratio[QZ_AWQ_QKV], ar->ratio[QZ_AWQ_GATEUP], ar->ratio[QZ_AWQ_DOWN], o_txt,
          ar->loss[QZ_AWQ_QKV], ar->loss_r0[QZ_AWQ_QKV], ar->loss[QZ_AWQ_GATEUP],
          ar->loss_r0[QZ_AWQ_GATEUP], ar->loss[QZ_AWQ_DOWN], ar->loss_r0[QZ_AWQ_DOWN]);
  json_t *rat = json_array(), *los = json_array(), *clip = json_object();
  for (int k = 0; k < QZ_AWQ_NSEARCH; k++) {
    json_array_append_new(rat, ar->applied[k] ? json_real(ar->ratio[k]) : json_null());
    json_array_append_new(los, ar->applied[k] ? json_real(ar->loss[k]) : json_null());
  }
  for (int l = 0; l < QZ_LIN_COUNT; l++)
    if (l != QZ_LIN_Q && l != QZ_LIN_K && !(moe && l >= QZ_LIN_GATE))
      json_object_set_new(clip, qz_linear_name((qz_linear)l), json_integer(ar->clipped[l]));
  b->stat(b, "awq_ratios", rat); /* [qkv, o, gate/up, down] */
  b->stat(b, "awq_loss", los);
  b->stat(b, "awq_clipped", clip);
}

/* An MoE block after the attention's search: q, k, v, o quantized, then
 * the experts one at a time through the driver (awq_prepare_expert each),
 * their ratios recorded. Collective on b->comm. */
static int awq_moe_ffn(awq_state *s, qz_block_ctx *b) {
  QZ_CHECK(b->experts && !s->cli.then_gptq, QZ_ERR_UNSUPPORTED,
           "AWQ on the mixture-of-experts block %d: %s", b->layer,
           s->cli.then_gptq ? "--awq-then-gptq is not supported on MoE blocks"
                            : "the driver offers no expert service");
  for (int l = QZ_LIN_Q; l <= QZ_LIN_O; l++) QZ_CALL(b->linear(b, (qz_linear)l, NULL));
  json_decref(s->experts);
  json_decref(s->shared);
  s->experts = json_array();
  s->shared = NULL;
  memset(s->eclipped, 0, sizeof s->eclipped);
  QZ_CALL(b->experts(b));
  while ((int64_t)json_array_size(s->experts) < b->w->nexp) /* trailing rtn fallbacks */
    json_array_append_new(s->experts, json_null());
  b->stat(b, "awq_expert_ratios", s->experts); /* [E], null: fallback rtn */
  s->experts = NULL;
  if (s->shared) b->stat(b, "awq_shared_ratio", s->shared);
  json_t *clip = json_array(); /* over the experts (shared included) */
  for (int i = 0; i < 3; i++) json_array_append_new(clip, json_integer(s->eclipped[i]));
  b->stat(b, "awq_expert_clipped", clip); /* [gate, up, down] */
  s->shared = NULL;
  return QZ_OK;
}

/* qz_method_ops.prepare_expert: qz_awq_expert, its ratio recorded.
 * Collective on e->comm. */
static int awq_prepare_expert(void *state, const qz_expert_ctx *e) {
  awq_state *s = state;
  qz_awq_expert_result er;
  QZ_CALL(qz_error_agree(e->comm, qz_awq_expert(&s->awq, e, &er)));
  json_t *r = er.ratio >= 0.0 ? json_real(er.ratio) : json_null();
  for (int i = 0; i < 3; i++) s->eclipped[i] += er.clipped[i];
  if (e->expert < 0) {
    json_decref(s->shared);
    s->shared = r;
  } else if (s->experts) {
    while ((int64_t)json_array_size(s->experts) < e->expert)
      json_array_append_new(s->experts, json_null());
    json_array_append_new(s->experts, r);
  } else {
    json_decref(r);
  }
  qz_debug("block %d expert %d awq: %lld rows, ratio %.2f, loss %.4g (ratio 0: %.4g), "
           "clipped %lld/%lld/%lld", e->layer, e->expert, (long long)e->tokens, er.ratio,
           er.loss, er.loss_r0, (long long)er.clipped[0], (long long)er.clipped[1],
           (long long)er.clipped[2]);
  return QZ_OK;
}

/* Scale + clip search on the fp block (llm-awq: the next block's input is
 * this block's fp output), folded into w, then the 7 linears quantized
 * (llm-awq quantizer, or GPTQ with --awq-then-gptq, whose calibration is
 * then sequential). Collective on b->comm. */
static int awq_block(void *state, qz_block_ctx *b) {
  awq_state *s = state;
  if (!s->work) QZ_CALL(qz_error_agree(b->comm, qz_awq_work_create(&s->work)));
  qz_awq_block_result ar;
  qz_timer_start(QZ_PHASE_FORWARD);
  int st = qz_awq_block_work(s->work, b->comm, b->cfg, b->f, b->w, &s->awq, b->win0, b->nwin,
                             &ar);
  qz_timer_stop(QZ_PHASE_FORWARD);
  QZ_CALL(qz_error_agree(b->comm, st));
  awq_report(b, &ar);
  if (b->w->moe) return awq_moe_ffn(s, b);
  if (s->cli.then_gptq) return b->sequential(b);
  QZ_CALL(b->commit(b));
  for (int l = 0; l < QZ_LIN_COUNT; l++) QZ_CALL(b->linear(b, (qz_linear)l, NULL));
  return QZ_OK;
}

/* The search keeps a copy of the block, the inputs of every linear and
 * three outputs of T tokens, per-window sums and the clip samples; it runs
 * the attention and the MLP once per grid point (n_grid of each).  On an
 * MoE model the copy has no experts (the block's router, attention and
 * shared expert) and qz_awq_expert adds, for one expert at a time, its
 * activations and scratch [n, I_e] x2, reference and candidate outputs
 * [n, H] x2, a candidate down [H, I_e] and the clip samples, n <= T rows
 * (routed or route-all; the pooled fallback up to 2T); its search costs n_grid
 * products of the expert's rows with down: k T of them per block. */
static void awq_plan_block(const qz_method_opts *o, const qz_model_config *cfg,
                           int64_t nwin_rank, int64_t seqlen, qz_plan_block *p) {
  double T = (double)(nwin_rank * seqlen), H = (double)cfg->hidden_size;
  const int moe = qz_config_any_moe(cfg), all_moe = qz_config_all_moe(cfg);
  double I = all_moe ? 1.0 : (double)cfg->intermediate_size;
  double qd = (double)(cfg->num_attention_heads * cfg->head_dim);
  double C = H > qd ? H : qd;
  C = C > I ? C : I;
  qz_awq_opts d = qz_awq_opts_default(4, 128);
  double weights = 0.0;
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t out, in;
    qz_linear_shape(cfg, (qz_linear)l, &out, &in);
    if (!(all_moe && l >= QZ_LIN_GATE)) weights += 4.0 * (double)out * (double)in;
  }
  p->bytes = weights + 4.0 * T * (2.0 * H + qd + I) + 4.0 * 3.0 * T * H + 4.0 * d.clip_tokens * C;
  if (all_moe) /* the MLP's input and output copies are never touched */
    p->bytes -= 4.0 * 2.0 * T * H;
  p->flops = (double)d.n_grid * qz_fwd_block_flops(cfg, nwin_rank, seqlen);
  if (all_moe) /* no MLP reruns: only the attention's */
    p->flops -= (double)d.n_grid * 2.0 * T * 3.0 * H * (double)cfg->intermediate_size;
  if (!moe) return;
  const double E = (double)cfg->num_experts, k = (double)cfg->num_experts_per_tok;
  double Ie = (double)cfg->moe_intermediate_size;
  const double Is = cfg->moe == QZ_MOE_QWEN2 ? (double)cfg->shared_expert_intermediate_size : 0.0;
  p->bytes += 4.0 * (E * H + 3.0 * Is * H + (Is > 0 ? H : 0.0)); /* router, shared */
  if (Is > Ie) Ie = Is;
  const double n = T, Ce = H > Ie ? H : Ie; /* pooled: up to 2T */
  p->bytes += 4.0 * (2.0 * n * Ie + 2.0 * n * H + H * Ie + d.clip_tokens * Ce);
  p->flops += (double)d.n_grid * 2.0 * (k * T + (Is > 0 ? T : 0.0)) * H * Ie;
}

/* the final quantizer: GPTQ's model after the search, else memory bound
 * like RTN */
static void awq_plan_linear(const qz_method_opts *o, const qz_plan_machine *mc, int64_t m,
                            int64_t n, qz_plan_linear *p) {
  awq_cli a;
  qz_method_ext_get(o, &a);
  if (a.then_gptq) {
    qz_gptq_plan(o, mc, m, n, p);
    return;
  }
  *p = (qz_plan_linear){.seconds = (double)m * (double)n * 20.0 / (mc->gemm * 0.05)};
}

#define AWQ_FIELD(f) .ext = 1, .offset = offsetof(awq_cli, f)
static const qz_opt awq_rows[] = {
    {.name = "no-clip", .type = QZ_OPT_FLAG, AWQ_FIELD(clip), .def = 1, .json = "awq_clip",
     .help = "AWQ: scale search only, no clip search"},
    {.name = "awq-then-gptq", .type = QZ_OPT_FLAG, AWQ_FIELD(then_gptq), .def = 0,
     .json = "awq_then_gptq",
     .help = "AWQ scales and clipping, then GPTQ (true-sequential) on the scaled weights"},
    {.type = QZ_OPT_CONST, .def = 20, .json = "awq_grid"},
};
_Static_assert(sizeof(awq_cli) <= QZ_METHOD_EXT_BYTES, "AWQ options exceed the ext bytes");

static const char *const awq_exports[] = {"gptq", "compressed-tensors", NULL};
static const char *const awq_labels[] = {"awq", "awq+gptq", NULL};

const qz_method_ops qz_method_awq = {
    .name = "awq",
    .summary = "AWQ (Lin et al.), activation-aware scales and clipping",
    .options = awq_rows,
    .noptions = (int)(sizeof awq_rows / sizeof awq_rows[0]),
    .uses = QZ_USES_BITS | QZ_USES_GROUP,
    .exports = awq_exports,
    .labels = awq_labels,
    .check = awq_check,
    .needs = awq_needs,
    .label = awq_label,
    .setup = awq_setup,
    .quantize_layer = awq_layer,
    .destroy = awq_destroy,
    .quantize_block = awq_block,
    .plan_linear = awq_plan_linear,
    .plan_block = awq_plan_block,
    .prepare_expert = awq_prepare_expert};
