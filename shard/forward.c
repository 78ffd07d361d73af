/* Llama block forward over a rank's local windows, stage by stage. */
#include "mpiquant/forward.h"

#include <cblas.h>
#undef I /* cblas.h may pull in complex.h */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/mem.h"
#include "mpiquant/moe.h"
#include "mpiquant/shard.h"
#include "mpiquant/threads.h"
#include "fwd_kernels.h"

struct qz_fwd {
  qz_model_config cfg;
  int64_t nwin_all, ntok_all; /* all local windows / tokens */
  int64_t bmax;               /* windows per batch (stage buffers) */
  int64_t b0, nwin, ntok;     /* current batch: windows [b0, b0+nwin) */
  int64_t seqlen;
  int64_t H, I, nq, nkv, hd, qd, kvd; /* qd = nq*hd, kvd = nkv*hd */
  float eps;
  /* residual stream of all local windows, and stage buffers of one batch
   * ([ntok, .] row-major, ntok <= bmax*seqlen) */
  float *xall; /* [T_all, H] residual stream */
  float *x;    /* [T, H] current batch's rows of xall (block input) */
  float *xn;   /* [T, H] QKV_IN */
  float *q;    /* [T, qd] queries, overwritten by the attention output (O_IN) */
  float *k;    /* [seqlen, kvd] keys of one window (formed per window) */
  float *v;    /* [seqlen, kvd] values of one window */
  float *h1;   /* [T, H] x + attn Wo' */
  float *h1n;  /* [T, H] GATEUP_IN */
  float *g;    /* [T, I] gate, then silu(gate)*up (DOWN_IN) */
  float *u;    /* [seqlen, I] up of one window (formed per window) */
  float *out;  /* [T, H] OUT */
  float *s;    /* attention scratch (qz_fwd_scores_floats_threads): the
                * fused path's nthr workspaces are s_ld floats apart */
  int64_t s_ld;
  int nthr;    /* OpenMP threads of the attention (qz_threads() at create) */
  float *cos_t, *sin_t; /* [seqlen, hd/2] */
  float *logits;        /* [chunk, vocab], allocated on first use of the head */
  double *row_nll;      /* [chunk] NLL of each row of a chunk */
  int64_t logits_rows;
  int act_bits;  /* 0: off; else per-token dynamic symmetric fake-quant */
  qz_act_hook hook; /* hook.fn NULL: none */
  qz_model_hook mhook; /* mhook.attn NULL: none */
  float *aq;     /* [bmax*seqlen, max(H, qd, I)] quantized linear input */
  qz_moe_ws *moe; /* MoE FFN scratch (chunks of one window), or NULL */
  void *mem;
  size_t mem_bytes;
  qz_fwd_stage done;
};

static const char *const stage_names[QZ_STAGE_COUNT] = {
    "qkv_in", "o_in", "gateup_in", "down_in", "out"};

const char *qz_fwd_stage_name(qz_fwd_stage s) {
  return s >= 0 && s < QZ_STAGE_COUNT ? stage_names[s] : "none";
}

qz_fwd_stage qz_fwd_stage_of_linear(qz_linear l) {
  switch (l) {
    case QZ_LIN_Q: case QZ_LIN_K: case QZ_LIN_V: return QZ_STAGE_QKV_IN;
    case QZ_LIN_O: return QZ_STAGE_O_IN;
    case QZ_LIN_GATE: case QZ_LIN_UP: return QZ_STAGE_GATEUP_IN;
    case QZ_LIN_DOWN: return QZ_STAGE_DOWN_IN;
    default: return QZ_STAGE_NONE;
  }
}

/* ---- RoPE ----------------------------------------------------------- */

int qz_rope_inv_freq(const qz_model_config *cfg, double *inv_freq) {
  int64_t hd = cfg->head_dim, half = hd / 2;
  QZ_CHECK(hd > 0 && hd % 2 == 0, QZ_ERR_ARG,
           "RoPE needs an even head_dim, config has %lld", (long long)hd);
  QZ_CHECK(cfg->rope_theta > 0, QZ_ERR_ARG, "rope_theta must be > 0, got %g",
           cfg->rope_theta);
  for (int64_t i = 0; i < half; i++)
    inv_freq[i] = 1.0 / pow(cfg->rope_theta, (double)(2 * i) / (double)hd);
  double factor = cfg->rope_scaling.factor;
  switch (cfg->rope_scaling.type) {
    case QZ_ROPE_DEFAULT:
      break;
    case QZ_ROPE_LINEAR:
      QZ_CHECK(factor > 0, QZ_ERR_ARG, "rope_scaling linear: factor %g", factor);
      for (int64_t i = 0; i < half; i++) inv_freq[i] /= factor;
      break;
    case QZ_ROPE_LLAMA3: {
      double lo = cfg->rope_scaling.low_freq_factor;
      double hi = cfg->rope_scaling.high_freq_factor;
      double old = (double)cfg->rope_scaling.original_max_position_embeddings;
      QZ_CHECK(factor > 0 && lo > 0 && hi > lo && old > 0, QZ_ERR_ARG,
               "rope_scaling llama3 needs factor > 0, high_freq_factor > "
               "low_freq_factor > 0, original_max_position_embeddings > 0; got "
               "%g, %g, %g, %g", factor, hi, lo, old);
      double lo_wavelen = old / lo, hi_wavelen = old / hi;
      for (int64_t i = 0; i < half; i++) {
        double f = inv_freq[i], wavelen = 2.0 * M_PI / f;
        if (wavelen < hi_wavelen) continue;           /* high frequency: keep */
        if (wavelen > lo_wavelen) {                   /* low frequency: scale */
          inv_freq[i] = f / factor;
        } else {                                      /* in between: blend */
          double smooth = (old / wavelen - lo) / (hi - lo);
          inv_freq[i] = (1.0 - smooth) * f / factor + smooth * f;
        }
      }
      break;
    }
    default:
      QZ_FAIL(QZ_ERR_UNSUPPORTED, "unknown rope_scaling type %d",
              (int)cfg->rope_scaling.type);
  }
  return QZ_OK;
}

int qz_rope_tables(const qz_model_config *cfg, int64_t npos, float *cos_t,
                   float *sin_t) {
  int64_t half = cfg->head_dim / 2;
  double inv[half > 0 ? half : 1];
  QZ_CALL(qz_rope_inv_freq(cfg, inv));
  for (int64_t p = 0; p < npos; p++)
    for (int64_t i = 0; i < half; i++) {
      double a = (double)p * inv[i];
      cos_t[p * half + i] = (float)cos(a);
      sin_t[p * half + i] = (float)sin(a);
    }
  return QZ_OK;
}

/* Rotate the `nheads` heads of one row at position pos. */
static inline void rope_row(float *x, int64_t nheads, int64_t hd, int64_t pos,
                            const float *cos_t, const float *sin_t) {
  int64_t half = hd / 2;
  const float *c = cos_t + pos * half, *s = sin_t + pos * half;
  for (int64_t h = 0; h < nheads; h++) {
    float *a = x + h * hd, *b = a + half;
    for (int64_t i = 0; i < half; i++) {
      float x0 = a[i], x1 = b[i];
      a[i] = x0 * c[i] - x1 * s[i];
      b[i] = x1 * c[i] + x0 * s[i];
    }
  }
}

void qz_rope_apply(float *x, int64_t nrows, int64_t ld, int64_t nheads,
                   int64_t hd, int64_t seqlen, const float *cos_t,
                   const float *sin_t) {
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(nrows * nheads * hd))
  for (int64_t r = 0; r < nrows; r++)
    rope_row(x + r * ld, nheads, hd, r % seqlen, cos_t, sin_t);
}

void qz_rope_apply_pos(float *x, int64_t nrows, int64_t ld, int64_t nheads,
                       int64_t hd, const int32_t *pos, const float *cos_t,
                       const float *sin_t) {
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(nrows * nheads * hd))
  for (int64_t r = 0; r < nrows; r++)
    rope_row(x + r * ld, nheads, hd, pos[r], cos_t, sin_t);
}

/* ---- workspace ------------------------------------------------------ */

int64_t qz_fwd_scores_floats_threads(int64_t hd, int64_t seqlen, int nthr) {
  int64_t qb = seqlen < QZ_FWD_QBLOCK ? seqlen : QZ_FWD_QBLOCK, n = qb * seqlen;
  if (hd <= QZ_FWDK_ATTN_SMALL_HD && qz_fwdk_attn_small_ld(hd, seqlen) * nthr > n)
    n = qz_fwdk_attn_small_ld(hd, seqlen) * (nthr > 1 ? nthr : 1);
  return n;
}

int64_t qz_fwd_scores_floats(int64_t hd, int64_t seqlen) {
  return qz_fwd_scores_floats_threads(hd, seqlen, 1);
}

int qz_fwd_create(const qz_model_config *cfg, int64_t nwin, int64_t seqlen,
                  qz_fwd **out) {
  return qz_fwd_create_batched(cfg, nwin, seqlen, nwin, out);
}

int qz_fwd_create_batched(const qz_model_config *cfg, int64_t nwin,
                          int64_t seqlen, int64_t batch, qz_fwd **out) {
  *out = NULL;
  QZ_CHECK(nwin >= 0 && seqlen > 0, QZ_ERR_ARG,
           "forward workspace: %lld windows of %lld tokens", (long long)nwin,
           (long long)seqlen);
  QZ_CHECK(cfg->num_attention_heads > 0 && cfg->num_key_value_heads > 0 &&
               cfg->num_attention_heads % cfg->num_key_value_heads == 0,
           QZ_ERR_ARG, "attention heads %lld not a multiple of kv heads %lld",
           (long long)cfg->num_attention_heads,
           (long long)cfg->num_key_value_heads);
  qz_fwd *f = NULL;
  QZ_CALL(qz_calloc(1, sizeof *f, "forward workspace", &f));
  f->cfg = *cfg;
  f->nwin_all = nwin;
  f->seqlen = seqlen;
  f->ntok_all = nwin * seqlen;
  f->bmax = batch < 1 ? 1 : batch > nwin && nwin > 0 ? nwin : batch;
  f->H = cfg->hidden_size;
  f->I = cfg->intermediate_size;
  f->nq = cfg->num_attention_heads;
  f->nkv = cfg->num_key_value_heads;
  f->hd = cfg->head_dim;
  f->qd = f->nq * f->hd;
  f->kvd = f->nkv * f->hd;
  f->eps = (float)cfg->rms_norm_eps;
  f->done = QZ_STAGE_NONE;
  int64_t T = (nwin > 0 ? f->bmax : 0) * seqlen, half = f->hd / 2;
  /* the dense FFN buffers g, u: none when every block is MoE */
  const int64_t TI = qz_config_all_moe(cfg) ? 0 : T * f->I;
  f->nthr = qz_threads();
  f->s_ld = qz_fwdk_attn_small_ld(f->hd, seqlen);
  const int64_t ssz = qz_fwd_scores_floats_threads(f->hd, seqlen, f->nthr);
  /* sizes in floats, each rounded to 16 floats (64 B) */
  /* k, v and up are formed and used one window at a time: their buffers
   * hold one window (a stage's output is kept for every window) */
  const int64_t Lw = nwin > 0 ? seqlen : 0, LI = TI > 0 ? Lw * f->I : 0;
  int64_t sz[] = {f->ntok_all * f->H, T * f->H, T * f->qd, Lw * f->kvd, Lw * f->kvd,
                  T * f->H, T * f->H, TI,        LI,          T * f->H,
                  ssz, seqlen * half, seqlen * half};
  float **dst[] = {&f->xall, &f->xn, &f->q, &f->k, &f->v, &f->h1, &f->h1n,
                   &f->g, &f->u, &f->out, &f->s, &f->cos_t, &f->sin_t};
  int n = (int)(sizeof sz / sizeof sz[0]);
  int64_t total = 0;
  for (int i = 0; i < n; i++) total += (sz[i] + 15) / 16 * 16;
  f->mem_bytes = (size_t)total * sizeof(float);
  int st = qz_alloc_big(f->mem_bytes, "forward workspace", &f->mem);
  if (st != QZ_OK) {
    qz_free(&f);
    QZ_CALL(st);
  }
  float *p = f->mem;
  for (int i = 0; i < n; i++) {
    *dst[i] = p;
    p += (sz[i] + 15) / 16 * 16;
  }
  qz_fwd_batch(f, 0, f->bmax < nwin ? f->bmax : nwin);
  st = qz_rope_tables(cfg, seqlen, f->cos_t, f->sin_t);
  if (st == QZ_OK && qz_config_any_moe(cfg)) st = qz_moe_ws_create(cfg, seqlen, &f->moe);
  if (st != QZ_OK) {
    qz_fwd_destroy(&f);
    QZ_CALL(st);
  }
  *out = f;
  return QZ_OK;
}

void qz_fwd_destroy(qz_fwd **pf) {
  if (!pf || !*pf) return;
  qz_fwd *f = *pf;
  qz_free_big(&f->mem, f->mem_bytes);
  qz_free_big(&f->logits, 0);
  qz_free(&f->row_nll);
  qz_free_big(&f->aq, 0);
  qz_moe_ws_destroy(&f->moe);
  qz_free(pf);
}

int64_t qz_fwd_ntok(const qz_fwd *f) { return f->ntok_all; }
int64_t qz_fwd_nwin(const qz_fwd *f) { return f->nwin_all; }
int64_t qz_fwd_batch_max(const qz_fwd *f) { return f->bmax; }

void qz_fwd_batch_range(const qz_fwd *f, int64_t *w0, int64_t *nwin) {
  *w0 = f->b0;
  *nwin = f->nwin;
}

int qz_fwd_batch(qz_fwd *f, int64_t w0, int64_t nwin) {
  QZ_CHECK(w0 >= 0 && nwin >= 0 && nwin <= f->bmax && w0 + nwin <= f->nwin_all,
           QZ_ERR_ARG, "forward batch: windows [%lld, %lld) with batches of at "
           "most %lld of %lld local windows", (long long)w0,
           (long long)(w0 + nwin), (long long)f->bmax, (long long)f->nwin_all);
  f->b0 = w0;
  f->nwin = nwin;
  f->ntok = nwin * f->seqlen;
  f->x = f->xall + w0 * f->seqlen * f->H;
  f->done = QZ_STAGE_NONE;
  return QZ_OK;
}

int64_t qz_fwd_seqlen(const qz_fwd *f) { return f->seqlen; }
size_t qz_fwd_bytes(const qz_fwd *f) {
  return f->mem_bytes + (f->moe ? qz_moe_ws_bytes(&f->cfg, f->seqlen) : 0);
}
float *qz_fwd_hidden(qz_fwd *f) { return f->xall; }

int qz_fwd_embed(qz_fwd *f, const qz_head_weights *h, const int32_t *ids) {
  QZ_CHECK(h->embed && h->hidden == f->H, QZ_ERR_ARG,
           "embedding not loaded or hidden size %lld != %lld",
           (long long)h->hidden, (long long)f->H);
  for (int64_t t = 0; t < f->ntok_all; t++)
    QZ_CHECK(ids[t] >= 0 && ids[t] < h->vocab, QZ_ERR_ARG,
             "token id %d at local position %lld is outside the vocabulary "
             "[0, %lld)", (int)ids[t], (long long)t, (long long)h->vocab);
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(f->ntok_all * f->H))
  for (int64_t t = 0; t < f->ntok_all; t++)
    memcpy(f->xall + t * f->H, h->embed + (int64_t)ids[t] * f->H,
           (size_t)f->H * sizeof(float));
  return qz_fwd_batch(f, 0, f->bmax < f->nwin_all ? f->bmax : f->nwin_all);
}

int qz_fwd_embed_model(qz_fwd *f, qz_model *m, const int32_t *ids) {
  QZ_CHECK(qz_model_config_of(m)->hidden_size == f->H, QZ_ERR_ARG,
           "model hidden size %lld != forward's %lld",
           (long long)qz_model_config_of(m)->hidden_size, (long long)f->H);
  QZ_CALL(qz_model_embed_tokens(m, ids, f->ntok_all, f->xall));
  return qz_fwd_batch(f, 0, f->bmax < f->nwin_all ? f->bmax : f->nwin_all);
}

void qz_fwd_block_begin(qz_fwd *f) { f->done = QZ_STAGE_NONE; }

void qz_fwd_invalidate(qz_fwd *f, qz_fwd_stage from) {
  if (f->done >= from) f->done = (qz_fwd_stage)(from - 1);
}

qz_fwd_stage qz_fwd_done(const qz_fwd *f) { return f->done; }

/* ---- kernels -------------------------------------------------------- */

/* Every loop below gives each row (or element) to one thread, computed by
 * the same code as a serial run: results do not depend on the thread count
 * (threads.h). BLAS is never called inside a parallel region. */

/* y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, sum of squares in double. */
static void rmsnorm(float *y, const float *x, const float *w, int64_t nrows,
                    int64_t n, float eps) {
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(nrows * n))
  for (int64_t r = 0; r < nrows; r++) {
    const float *a = x + r * n;
    float *b = y + r * n;
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)a[i] * (double)a[i];
    float inv = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int64_t i = 0; i < n; i++) b[i] = (a[i] * inv) * w[i];
  }
}

/* y [T, out] = x [T, in] . W' (+ bias), W [out, in], one sgemm per window
 * of `rows` rows: a window's result then does not depend on how many
 * windows a rank owns (OpenBLAS rounds edge tiles differently), which keeps
 * the perplexity bit-identical across rank counts. */
static void linear(float *y, const float *x, const float *W, const float *bias,
                   int64_t T, int64_t rows, int64_t out, int64_t in) {
  for (int64_t r0 = 0; r0 < T; r0 += rows) {
    int64_t m = T - r0 < rows ? T - r0 : rows;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)out,
                (int)in, 1.0f, x + r0 * in, (int)in, W, (int)in, 0.0f,
                y + r0 * out, (int)out);
  }
  if (bias) {
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(T * out))
    for (int64_t t = 0; t < T; t++)
      for (int64_t o = 0; o < out; o++) y[t * out + o] += bias[o];
  }
}

/* exp(x) for x <= 0 (softmax arguments after the max shift): range
 * reduction x = k ln2 + r, |r| <= ln2/2, degree-6 Taylor polynomial
 * (relative error < 1e-7, about 1 ulp), 2^k through the exponent bits.
 * Branch-free and inlined so the loop below vectorizes; glibc's expf is a
 * call per element and dominated the forward of small-head models. x > 0
 * (only past a row's keys, where the result is overwritten) is taken as 0,
 * which keeps every step defined there. */
static inline float exp_nonpos(float x) {
  x = x > 0.0f ? 0.0f : x;
  x = x < -87.0f ? -87.0f : x; /* e^-87 ~ 1.6e-38: below it the result is ~0 */
  float kf = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round(x/ln2) */
  float r = (x - kf * 0.693145752f) - kf * 1.42860677e-6f;
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666672e-1f +
            r * (4.16666679e-2f + r * (8.33333377e-3f + r * 1.38888892e-3f)))));
  int32_t k = (int32_t)kf;
  union { int32_t i; float f; } two_k = {.i = (k + 127) << 23};
  float e = p * two_k.f;
  return x <= -87.0f ? 0.0f : e;
}

/* 16 floats as one GCC vector (lowered to the clone's registers), for the
 * row maximum: the compiler leaves a conditional max reduction scalar. */
typedef float sm_v16f __attribute__((vector_size(16 * sizeof(float))));
typedef int32_t sm_v16i __attribute__((vector_size(16 * sizeof(int32_t))));
#pragma GCC diagnostic ignored "-Wpsabi" /* vectors never cross a call */

/* In place: s[0..nv) <- softmax, s[nv..n) <- 0. Cloned per ISA so the
 * polynomial runs 8/16 wide where the CPU can. The maximum is taken over
 * 16 lanes (exact: a maximum does not depend on the order); the exp and
 * the scaling run over whole 16-float groups up to pad16(nv) when the row
 * has room (the entries past nv are overwritten with 0 at the end), so no
 * scalar tail is left; the sum is over [0, nv) only, in 8 double lanes. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void softmax_row(float *s, int64_t nv, int64_t n) {
  float mx = s[0];
  int64_t j = 0;
  if (nv >= 16) {
    sm_v16f m;
    memcpy(&m, s, sizeof m);
    for (j = 16; j + 16 <= nv; j += 16) {
      sm_v16f x;
      memcpy(&x, s + j, sizeof x);
      sm_v16i gt = x > m;
      m = (sm_v16f)((gt & (sm_v16i)x) | (~gt & (sm_v16i)m));
    }
    for (int k = 0; k < 16; k++) mx = m[k] > mx ? m[k] : mx;
  }
  for (; j < nv; j++) mx = s[j] > mx ? s[j] : mx;
  const int64_t p16 = (nv + 15) / 16 * 16, ne = p16 <= n ? p16 : nv;
  for (j = 0; j < ne; j++) s[j] = exp_nonpos(s[j] - mx);
  double sum8[8] = {0};
  for (j = 0; j + 8 <= nv; j += 8)
    for (int k = 0; k < 8; k++) sum8[k] += (double)s[j + k];
  double sum = 0.0;
  for (int k = 0; k < 8; k++) sum += sum8[k];
  for (; j < nv; j++) sum += (double)s[j];
  float inv = (float)(1.0 / sum);
  for (j = 0; j < ne; j++) s[j] *= inv;
  for (j = nv; j < n; j++) s[j] = 0.0f;
}

/* Small heads, fused (attn.c): a window's heads are split over the
 * threads, each with its own workspace; a head's result does not depend on
 * which thread computes it. */
static void attention_small(qz_fwd *f, float *qw, float scale) {
  const int64_t L = f->seqlen, hd = f->hd, qd = f->qd, kvd = f->kvd;
  const int64_t group = f->nq / f->nkv, nh = f->nq;
  const int nthr = nh > 1 ? f->nthr : 1;
#pragma omp parallel for schedule(static) num_threads(nthr)
  for (int64_t h = 0; h < nh; h++) {
    float *ws = f->s + (int64_t)omp_get_thread_num() * f->s_ld;
    qz_fwdk_attn_small(qw + h * hd, qd, L, NULL, NULL, 0, f->k + h / group * hd,
                       f->v + h / group * hd, kvd, hd, scale, ws);
  }
}

/* Causal GQA attention of one window, queries qw [seqlen, qd], keys and
 * values in f->k, f->v; the output of query head h overwrites qw's columns
 * of head h (each query block is read once, into the scores, before its
 * rows are written). Larger heads: sgemm (OpenBLAS's threads) for the
 * products, the softmax rows split over our threads. */
static void attention(qz_fwd *f, float *qw) {
  int64_t L = f->seqlen, hd = f->hd, qd = f->qd, kvd = f->kvd;
  int64_t group = f->nq / f->nkv;
  float scale = (float)(1.0 / sqrt((double)hd));
  if (hd <= QZ_FWDK_ATTN_SMALL_HD) {
    attention_small(f, qw, scale);
    return;
  }
  for (int64_t h = 0; h < f->nq; h++) {
    int64_t g = h / group;
    float *qh = qw + h * hd;
    const float *kg = f->k + g * hd, *vg = f->v + g * hd;
    for (int64_t i0 = 0; i0 < L; i0 += QZ_FWD_QBLOCK) {
      int64_t m = L - i0 < QZ_FWD_QBLOCK ? L - i0 : QZ_FWD_QBLOCK;
      int64_t n = i0 + m; /* keys 0..n-1 are visible to some row */
      float *S = f->s;    /* [m, n] */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)hd, scale,
                  qh + i0 * qd, (int)qd, kg, (int)kvd, 0.0f, S, (int)n);
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(m * n))
      for (int64_t r = 0; r < m; r++) {
        int64_t nv = i0 + r + 1; /* causal: keys 0..i */
        softmax_row(S + r * n, nv, n);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)hd, (int)n, 1.0f, S,
                  (int)n, vg, (int)kvd, 0.0f, qh + i0 * qd, (int)qd);
    }
  }
}

/* The linear-input buffer f->aq (allocated once). */
static int need_aq(qz_fwd *f) {
  if (!f->aq) {
    int64_t c = f->H > f->qd ? f->H : f->qd;
    c = c > f->I ? c : f->I;
    size_t n = (size_t)(f->bmax * f->seqlen * c);
    QZ_CALL(qz_alloc_big((n ? n : 1) * sizeof(float), "activation fake-quant buffer",
                         (void **)&f->aq));
  }
  return QZ_OK;
}

int qz_fwd_set_act_quant(qz_fwd *f, int bits) {
  QZ_CHECK(bits == 0 || (bits >= 2 && bits <= 16), QZ_ERR_ARG,
           "activation quantization: bits must be 0 (off) or 2..16, got %d", bits);
  QZ_CHECK(!bits || !f->hook.fn, QZ_ERR_ARG,
           "activation quantization and an activation hook are exclusive");
  if (bits) QZ_CALL(need_aq(f));
  f->act_bits = bits;
  f->done = QZ_STAGE_NONE;
  return QZ_OK;
}

int qz_fwd_set_act_hook(qz_fwd *f, const qz_act_hook *h) {
  QZ_CHECK(!h || !f->act_bits, QZ_ERR_ARG,
           "activation quantization and an activation hook are exclusive");
  QZ_CHECK(!h || h->fn, QZ_ERR_ARG, "activation hook without a function");
  if (h) QZ_CALL(need_aq(f));
  f->hook = h ? *h : (qz_act_hook){0};
  f->done = QZ_STAGE_NONE;
  return QZ_OK;
}

int qz_fwd_act_quant(const qz_fwd *f) { return f->act_bits; }

void qz_fwd_set_model_hook(qz_fwd *f, const qz_model_hook *h) {
  f->mhook = h ? *h : (qz_model_hook){0};
  f->done = QZ_STAGE_NONE;
}

void qz_act_fake_quant(const float *x, int64_t nrows, int64_t n, int bits,
                       float *y) {
  const float qmax = (float)((1 << (bits - 1)) - 1);
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(nrows * n))
  for (int64_t r = 0; r < nrows; r++) {
    const float *a = x + r * n;
    float *b = y + r * n;
    float mx = 0.0f;
    for (int64_t i = 0; i < n; i++) mx = fabsf(a[i]) > mx ? fabsf(a[i]) : mx;
    float d = (mx < 1e-5f ? 1e-5f : mx) / qmax;
    for (int64_t i = 0; i < n; i++) b[i] = rintf(a[i] / d) * d;
  }
}

/* The input of linear group `lin` of block w: x itself, or its
 * fake-quantized (hooked) copy in f->aq. */
static const float *lin_in(qz_fwd *f, const qz_block_weights *w, qz_linear lin,
                           const float *x, int64_t n) {
  if (f->hook.fn) {
    f->hook.fn(f->hook.ctx, w->layer, lin, x, f->ntok, n, f->aq);
    return f->aq;
  }
  if (!f->act_bits) return x;
  qz_act_fake_quant(x, f->ntok, n, f->act_bits, f->aq);
  return f->aq;
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

/* y[i] = a[i] + b[i] (y may be a). */
static void add_rows(float *y, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(n))
  for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static int run_stage(qz_fwd *f, const qz_block_weights *w, qz_fwd_stage s) {
  int64_t T = f->ntok, H = f->H, I = f->I;
  switch (s) {
    case QZ_STAGE_QKV_IN:
      rmsnorm(f->xn, f->x, w->attn_norm, T, H, f->eps);
      break;
    case QZ_STAGE_O_IN: {
      /* window by window: its queries, keys, values, RoPE, the hook (all
       * row-wise) and its attention; the same operations as over all
       * windows at once (one sgemm per window), in one window's memory */
      const int64_t L = f->seqlen, qd = f->qd, kvd = f->kvd;
      const float *xin = lin_in(f, w, QZ_LIN_Q, f->xn, H);
      for (int64_t r0 = 0; r0 < T; r0 += L) {
        const int64_t m = T - r0 < L ? T - r0 : L;
        float *qw = f->q + r0 * qd;
        linear(qw, xin + r0 * H, w->w[QZ_LIN_Q], w->b[QZ_LIN_Q], m, L, qd, H);
        linear(f->k, xin + r0 * H, w->w[QZ_LIN_K], w->b[QZ_LIN_K], m, L, kvd, H);
        linear(f->v, xin + r0 * H, w->w[QZ_LIN_V], w->b[QZ_LIN_V], m, L, kvd, H);
        if (w->q_norm) { /* Qwen3: per-head RMSNorm before RoPE */
          rmsnorm(qw, qw, w->q_norm, m * f->nq, f->hd, f->eps);
          rmsnorm(f->k, f->k, w->k_norm, m * f->nkv, f->hd, f->eps);
        }
        qz_rope_apply(qw, m, qd, f->nq, f->hd, L, f->cos_t, f->sin_t);
        qz_rope_apply(f->k, m, kvd, f->nkv, f->hd, L, f->cos_t, f->sin_t);
        if (f->mhook.attn)
          f->mhook.attn(f->mhook.ctx, w->layer, qw, f->k, f->v, m, f->nq, f->nkv, f->hd);
        attention(f, qw);
      }
      break;
    }
    case QZ_STAGE_GATEUP_IN:
      linear(f->h1, lin_in(f, w, QZ_LIN_O, f->q, f->qd), w->w[QZ_LIN_O], w->b[QZ_LIN_O], T, f->seqlen, H, f->qd);
      add_rows(f->h1, f->h1, f->x, T * H);
      rmsnorm(f->h1n, f->h1, w->ffn_norm, T, H, f->eps);
      break;
    case QZ_STAGE_DOWN_IN: {
      if (w->moe) break; /* the experts' inputs are formed in OUT */
      const float *xin = lin_in(f, w, QZ_LIN_GATE, f->h1n, H);
      linear(f->g, xin, w->w[QZ_LIN_GATE], w->b[QZ_LIN_GATE], T, f->seqlen, I, H);
      for (int64_t r0 = 0; r0 < T; r0 += f->seqlen) { /* up: one window at a time */
        const int64_t m = T - r0 < f->seqlen ? T - r0 : f->seqlen;
        linear(f->u, xin + r0 * H, w->w[QZ_LIN_UP], w->b[QZ_LIN_UP], m, f->seqlen, I, H);
        qz_fwdk_swiglu(f->g + r0 * I, f->u, m * I);
      }
      break;
    }
    case QZ_STAGE_OUT:
      if (w->moe) {
        QZ_CHECK(f->moe, QZ_ERR_ARG, "MoE block on a dense forward workspace");
        QZ_CHECK(!f->act_bits && !f->hook.fn, QZ_ERR_UNSUPPORTED,
                 "activation quantization of mixture-of-experts blocks is not supported");
        QZ_CALL(qz_moe_ffn(f->moe, w, f->h1n, T, f->seqlen, f->out));
        add_rows(f->out, f->out, f->h1, T * H);
        break;
      }
      linear(f->out, lin_in(f, w, QZ_LIN_DOWN, f->g, I), w->w[QZ_LIN_DOWN], w->b[QZ_LIN_DOWN], T, f->seqlen, H, I);
      add_rows(f->out, f->out, f->h1, T * H);
      break;
    default:
      break;
  }
  return QZ_OK;
}

int qz_fwd_run(qz_fwd *f, const qz_block_weights *w, qz_fwd_stage upto) {
  QZ_CHECK(upto >= QZ_STAGE_QKV_IN && upto < QZ_STAGE_COUNT, QZ_ERR_ARG,
           "forward stage %d out of range", (int)upto);
  QZ_CHECK(w->hidden == f->H && w->inter == f->I && w->nq == f->nq &&
               w->nkv == f->nkv && w->hd == f->hd,
           QZ_ERR_ARG, "block weights were allocated for another config");
  /* the attention output lives in q: recomputing O_IN needs QKV_IN's xn,
   * which is never overwritten, so every stage is recomputable */
  for (int s = f->done + 1; s <= upto; s++) {
    QZ_CALL(run_stage(f, w, (qz_fwd_stage)s));
    f->done = (qz_fwd_stage)s;
  }
  return QZ_OK;
}

const float *qz_fwd_stage_output(const qz_fwd *f, qz_fwd_stage s,
                                 int64_t *ncols) {
  if (s > f->done || s < 0) {
    *ncols = 0;
    return NULL;
  }
  switch (s) {
    case QZ_STAGE_QKV_IN: *ncols = f->H; return f->xn;
    case QZ_STAGE_O_IN: *ncols = f->qd; return f->q;
    case QZ_STAGE_GATEUP_IN: *ncols = f->H; return f->h1n;
    case QZ_STAGE_DOWN_IN: *ncols = f->I; return f->g;
    case QZ_STAGE_OUT: *ncols = f->H; return f->out;
    default: *ncols = 0; return NULL;
  }
}

const float *qz_fwd_linear_input(const qz_fwd *f, qz_linear l, int64_t *ncols) {
  return qz_fwd_stage_output(f, qz_fwd_stage_of_linear(l), ncols);
}

int qz_fwd_block_commit(qz_fwd *f) {
  QZ_CHECK(f->done == QZ_STAGE_OUT, QZ_ERR_INTERNAL,
           "block commit before the output stage (last stage: %s)",
           qz_fwd_stage_name(f->done));
  memcpy(f->x, f->out, (size_t)(f->ntok * f->H) * sizeof(float));
  f->done = QZ_STAGE_NONE;
  return QZ_OK;
}

int qz_fwd_commit_ffn(qz_fwd *f, const float *ffn) {
  QZ_CHECK(f->done >= QZ_STAGE_GATEUP_IN, QZ_ERR_INTERNAL,
           "FFN commit before the FFN input stage (last stage: %s)",
           qz_fwd_stage_name(f->done));
  add_rows(f->x, f->h1, ffn, f->ntok * f->H);
  f->done = QZ_STAGE_NONE;
  return QZ_OK;
}

int qz_fwd_block(qz_fwd *f, const qz_block_weights *w) {
  for (int64_t b0 = 0; b0 < f->nwin_all; b0 += f->bmax) {
    int64_t nb = f->nwin_all - b0 < f->bmax ? f->nwin_all - b0 : f->bmax;
    QZ_CALL(qz_fwd_batch(f, b0, nb));
    QZ_CALL(qz_fwd_run(f, w, QZ_STAGE_OUT));
    QZ_CALL(qz_fwd_block_commit(f));
  }
  return QZ_OK;
}

/* ---- head ----------------------------------------------------------- */

int qz_fwd_logits(qz_fwd *f, const qz_head_weights *h, int64_t row0, int64_t n,
                  float *logits) {
  QZ_CHECK(h->lm_head && h->norm && h->hidden == f->H, QZ_ERR_ARG,
           "output head not loaded or hidden size %lld != %lld",
           (long long)h->hidden, (long long)f->H);
  QZ_CHECK(row0 >= 0 && n >= 0 && row0 + n <= f->ntok_all, QZ_ERR_ARG,
           "logits rows [%lld, %lld) outside the %lld local tokens",
           (long long)row0, (long long)(row0 + n), (long long)f->ntok_all);
  /* the final norm goes to xn (a batch's rows; free between blocks) */
  int64_t piece = f->bmax * f->seqlen;
  for (int64_t p0 = 0; p0 < n; p0 += piece) {
    int64_t m = n - p0 < piece ? n - p0 : piece;
    rmsnorm(f->xn, f->xall + (row0 + p0) * f->H, h->norm, m, f->H, f->eps);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)h->vocab,
                (int)f->H, 1.0f, f->xn, (int)f->H, h->lm_head, (int)f->H, 0.0f,
                logits + p0 * h->vocab, (int)h->vocab);
  }
  f->done = QZ_STAGE_NONE; /* xn was overwritten */
  return QZ_OK;
}

int qz_fwd_nll(qz_fwd *f, const qz_head_weights *h, const int32_t *ids,
               int64_t chunk_tokens, double *nll) {
  int64_t V = h->vocab, L = f->seqlen;
  if (chunk_tokens <= 0) {
    chunk_tokens = (64 << 20) / (int64_t)sizeof(float) / (V > 0 ? V : 1);
    if (chunk_tokens < 1) chunk_tokens = 1;
  }
  if (chunk_tokens > L) chunk_tokens = L;
  if (f->logits_rows < chunk_tokens) {
    qz_free_big(&f->logits, 0);
    qz_free(&f->row_nll);
    QZ_CALL(qz_alloc_big((size_t)(chunk_tokens * V) * sizeof(float),
                         "logits chunk", &f->logits));
    QZ_CALL(qz_alloc((size_t)chunk_tokens, sizeof(double), "row NLLs", &f->row_nll));
    f->logits_rows = chunk_tokens;
  }
  /* chunks restart at every window so that a window's NLL does not depend
   * on the other windows of the rank (bit-identical across rank counts) */
  for (int64_t w = 0; w < f->nwin_all; w++) {
    double acc = 0.0;
    for (int64_t p0 = 0; p0 < L - 1; p0 += chunk_tokens) {
      int64_t n = L - 1 - p0 < chunk_tokens ? L - 1 - p0 : chunk_tokens;
      int64_t r0 = w * L + p0;
      QZ_CALL(qz_fwd_logits(f, h, r0, n, f->logits));
      for (int64_t r = 0; r < n; r++)
        QZ_CHECK(ids[r0 + r + 1] >= 0 && ids[r0 + r + 1] < V, QZ_ERR_ARG,
                 "token id %d outside the vocabulary [0, %lld)", (int)ids[r0 + r + 1],
                 (long long)V);
      /* each row's term by one thread, added in row order below */
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(n * V))
      for (int64_t r = 0; r < n; r++) {
        const float *lg = f->logits + r * V;
        float mx = lg[0];
        for (int64_t j = 1; j < V; j++) mx = lg[j] > mx ? lg[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j < V; j++) sum += (double)expf(lg[j] - mx);
        f->row_nll[r] = (double)mx + log(sum) - (double)lg[ids[r0 + r + 1]];
      }
      for (int64_t r = 0; r < n; r++) acc += f->row_nll[r];
    }
    nll[w] = acc;
  }
  return QZ_OK;
}

int qz_fwd_final_norm(qz_fwd *f, const float *norm, int64_t row0, int64_t n,
                      float *dst) {
  QZ_CHECK(row0 >= 0 && n >= 0 && row0 + n <= f->ntok_all, QZ_ERR_ARG,
           "rows [%lld, %lld) outside the %lld local tokens", (long long)row0,
           (long long)(row0 + n), (long long)f->ntok_all);
  rmsnorm(dst, f->xall + row0 * f->H, norm, n, f->H, f->eps);
  return QZ_OK;
}

void qz_fwdk_shard_logits(const qz_head_shard *hs, const float *x, int64_t n, float *lg,
                          float *mx) {
  const int64_t H = hs->hidden, v0 = hs->v0, vl = hs->v1 - hs->v0;
  for (int64_t c = v0; c < hs->v1; c += QZ_VOCAB_CHUNK) {
    int64_t cw = hs->v1 - c < QZ_VOCAB_CHUNK ? hs->v1 - c : QZ_VOCAB_CHUNK;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)cw, (int)H, 1.0f, x,
                (int)H, hs->rows + (c - v0) * H, (int)H, 0.0f, lg + (c - v0), (int)vl);
  }
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(n * vl))
  for (int64_t t = 0; t < n; t++) {
    float m = -INFINITY;
    for (int64_t j = 0; j < vl; j++) m = lg[t * vl + j] > m ? lg[t * vl + j] : m;
    mx[t] = m;
  }
}

void qz_fwdk_shard_sums(const qz_head_shard *hs, const float *lg, int64_t n, const float *mx,
                        const int32_t *tgt, double *part, int32_t *am) {
  const int64_t V = hs->vocab, v0 = hs->v0, v1 = hs->v1, vl = v1 - v0;
  const int64_t nch = (V + QZ_VOCAB_CHUNK - 1) / QZ_VOCAB_CHUNK, W = nch + 1;
  memset(part, 0, sizeof(double) * (size_t)(n * W));
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(n * vl))
  for (int64_t t = 0; t < n; t++) {
    const float *row = lg + t * vl;
    if (am) {
      int32_t a = (int32_t)V;
      for (int64_t j = 0; j < vl; j++)
        if (row[j] == mx[t]) {
          a = (int32_t)(v0 + j);
          break;
        }
      am[t] = a;
    }
    for (int64_t c = v0; c < v1; c += QZ_VOCAB_CHUNK) {
      int64_t e = v1 - c < QZ_VOCAB_CHUNK ? v1 : c + QZ_VOCAB_CHUNK;
      double sum = 0.0;
      for (int64_t j = c; j < e; j++) sum += (double)expf(row[j - v0] - mx[t]);
      part[t * W + c / QZ_VOCAB_CHUNK] = sum;
    }
    if (tgt[t] >= v0 && tgt[t] < v1) part[t * W + nch] = (double)row[tgt[t] - v0];
  }
}

double qz_fwdk_shard_nll(const double *red, int64_t nch, float mx) {
  double sum = 0.0;
  for (int64_t c = 0; c < nch; c++) sum += red[c];
  return (double)mx + log(sum) - red[nch];
}

#define NLL_MPI(call)                                                          \
  do {                                                                         \
    int rc_ = (call);                                                          \
    if (rc_ != MPI_SUCCESS) {                                                  \
      st = qz_mpi_error(rc_, #call, __FILE__, __LINE__, __func__);             \
      goto done;                                                               \
    }                                                                          \
  } while (0)

int qz_fwd_nll_sharded(qz_fwd *f, MPI_Comm comm, const qz_head_shard *hs,
                       const int32_t *ids, int64_t nwin_total, int64_t chunk_tokens,
                       double *nll) {
  int rank, size, st = QZ_OK;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const int64_t V = hs->vocab, H = f->H, L = f->seqlen;
  const int64_t nch = (V + QZ_VOCAB_CHUNK - 1) / QZ_VOCAB_CHUNK, W = nch + 1;
  const int64_t vl = hs->v1 - hs->v0;
  QZ_CHECK(hs->hidden == H && hs->norm && (vl == 0 || hs->rows), QZ_ERR_ARG,
           "head shard not loaded or hidden size %lld != %lld", (long long)hs->hidden,
           (long long)H);
  if (chunk_tokens <= 0) { /* as qz_fwd_nll: a function of V only */
    chunk_tokens = (64 << 20) / (int64_t)sizeof(float) / (V > 0 ? V : 1);
    if (chunk_tokens < 1) chunk_tokens = 1;
  }
  if (chunk_tokens > L) chunk_tokens = L;
  const int64_t nt = chunk_tokens;
  float *xn = NULL, *lg = NULL, *mx = NULL;
  double *part = NULL, *red = NULL;
  st = qz_alloc((size_t)(nt * H), sizeof(float), "head input rows", &xn);
  if (st == QZ_OK)
    st = qz_alloc((size_t)(nt * (vl > 0 ? vl : 1)), sizeof(float), "logits shard", &lg);
  if (st == QZ_OK) st = qz_alloc((size_t)nt, sizeof(float), "token max", &mx);
  if (st == QZ_OK) st = qz_alloc((size_t)(nt * W), sizeof(double), "chunk sums", &part);
  if (st == QZ_OK) st = qz_alloc((size_t)(nt * W), sizeof(double), "chunk sums", &red);
  QZ_CALL_DONE(qz_error_agree(comm, st));
  int64_t my0 = 0, myn = 0;
  qz_shard_windows(nwin_total, size, rank, &my0, &myn);
  for (int64_t gw = 0; gw < nwin_total; gw++) {
    int owner = qz_shard_owner(nwin_total, size, gw);
    double acc = 0.0;
    for (int64_t p0 = 0; p0 < L - 1; p0 += nt) {
      int64_t n = L - 1 - p0 < nt ? L - 1 - p0 : nt;
      if (rank == owner)
        QZ_CALL_DONE(qz_fwd_final_norm(f, hs->norm, (gw - my0) * L + p0, n, xn));
      NLL_MPI(MPI_Bcast(xn, (int)(n * H), MPI_FLOAT, owner, comm));
      qz_count_bcast(comm, owner, 4 * n * H);
      qz_fwdk_shard_logits(hs, xn, n, lg, mx);
      if (size > 1) {
        NLL_MPI(MPI_Allreduce(MPI_IN_PLACE, mx, (int)n, MPI_FLOAT, MPI_MAX, comm));
        qz_count_allreduce(comm, 4 * n);
      }
      for (int64_t t = 0; t < n; t++)
        QZ_CHECK_DONE(ids[gw * L + p0 + t + 1] >= 0 && ids[gw * L + p0 + t + 1] < V,
                      QZ_ERR_ARG, "token id %d outside the vocabulary [0, %lld)",
                      (int)ids[gw * L + p0 + t + 1], (long long)V);
      qz_fwdk_shard_sums(hs, lg, n, mx, ids + gw * L + p0 + 1, part, NULL);
      /* one contributor per entry: the sum is exact, independent of P */
      if (size > 1) {
        NLL_MPI(MPI_Reduce(part, red, (int)(n * W), MPI_DOUBLE, MPI_SUM, owner, comm));
        qz_count_reduce(comm, owner, 8 * n * W);
      } else {
        memcpy(red, part, sizeof(double) * (size_t)(n * W));
      }
      if (rank == owner)
        for (int64_t t = 0; t < n; t++) acc += qz_fwdk_shard_nll(red + t * W, nch, mx[t]);
    }
    if (rank == owner) nll[gw - my0] = acc;
  }
done:
  free(xn);
  free(lg);
  free(mx);
  free(part);
  free(red);
  return st;
}

double qz_fwd_block_flops(const qz_model_config *cfg, int64_t nwin,
                          int64_t seqlen) {
  double T = (double)nwin * (double)seqlen, H = (double)cfg->hidden_size;
  double I = (double)cfg->intermediate_size, hd = (double)cfg->head_dim;
  double qd = (double)cfg->num_attention_heads * hd;
  double kvd = (double)cfg->num_key_value_heads * hd;
  double proj = 2.0 * T * (H * qd + 2.0 * H * kvd + qd * H + 3.0 * H * I);
  /* causal: query i sees i+1 keys; QK' and PV each 2*hd flops per pair */
  double pairs = (double)nwin * (double)seqlen * ((double)seqlen + 1.0) / 2.0;
  double att = 2.0 * 2.0 * hd * pairs * (double)cfg->num_attention_heads;
  return proj + att;
}

/* ---- kernels for the other forwards of this folder (fwd_kernels.h) --- */

void qz_fwdk_rmsnorm(float *y, const float *x, const float *w, int64_t nrows,
                     int64_t n, float eps) {
  rmsnorm(y, x, w, nrows, n, eps);
}

void qz_fwdk_linear(float *y, const float *x, const float *W, const float *bias,
                    int64_t T, int64_t rows, int64_t out, int64_t in) {
  linear(y, x, W, bias, T, rows, out, in);
}

void qz_fwdk_softmax_row(float *s, int64_t nv, int64_t n) { softmax_row(s, nv, n); }

void qz_fwdk_add(float *y, const float *a, const float *b, int64_t n) { add_rows(y, a, b, n); }

void qz_fwdk_swiglu(float *g, const float *u, int64_t n) {
#pragma omp parallel for schedule(static) num_threads(qz_threads_for(n))
  for (int64_t i = 0; i < n; i++) g[i] = silu(g[i]) * u[i];
}
