/* Collective, read-once loading of a Hugging Face Llama model. */
#include <math.h>
#include <stdint.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "mpiquant/model.h"
#include "mpiquant/timing.h"

/* The next block's linears on their way (qz_model_prefetch_block). */
typedef struct {
  int layer;                  /* -1: nothing posted */
  MPI_Request req[QZ_LIN_COUNT];
  int raw[QZ_LIN_COUNT];      /* dtype of a tensor travelling in 16 bits, -1: f32 */
  size_t off[QZ_LIN_COUNT];   /* its place in buf (bytes) */
  int *cnt;                   /* [QZ_LIN_COUNT][2 size]: rows per rank, displacements */
  uint8_t *buf;
  size_t cap;
} prefetch;

struct qz_model {
  MPI_Comm comm;
  int rank, size;
  qz_model_config cfg;
  qz_st *st;
  prefetch pf;
};

static int open_local(qz_model *m, const char *dir) {
  QZ_CALL(qz_config_load(dir, &m->cfg));
  QZ_CALL(qz_st_open(dir, &m->st));
  qz_st_quant q;
  qz_config_st_quant(&m->cfg, &q);
  qz_st_set_quant(m->st, &q);
  QZ_CALL(qz_config_check_tensors(&m->cfg, m->st));
  char extra[512];
  int n = qz_config_unused_tensors(&m->cfg, m->st, extra, sizeof extra);
  if (n)
    qz_warn("%s: %d tensor%s not used by its config.json (extra layers? biases the "
            "config does not enable?): %s%s", dir, n, n == 1 ? " is" : "s are", extra,
            strlen(extra) >= sizeof extra - 1 ? " ..." : "");
  return QZ_OK;
}

int qz_model_open(MPI_Comm comm, const char *dir, qz_model **out) {
  *out = NULL;
  qz_model *m = NULL;
  int st = qz_calloc(1, sizeof *m, "model handle", &m);
  st = qz_error_agree(comm, st);
  if (st != QZ_OK) {
    qz_free(&m);
    QZ_CALL(st);
  }
  m->comm = MPI_COMM_NULL;
  m->pf.layer = -1;
  for (int l = 0; l < QZ_LIN_COUNT; l++) m->pf.req[l] = MPI_REQUEST_NULL;
  st = qz_comm_dup(comm, &m->comm);
  if (st != QZ_OK) {
    qz_free(&m);
    QZ_CALL(st);
  }
  MPI_Comm_rank(m->comm, &m->rank);
  MPI_Comm_size(m->comm, &m->size);
  st = qz_error_agree(m->comm, open_local(m, dir));
  if (st != QZ_OK) {
    qz_model_close(&m);
    QZ_CALL(st);
  }
  *out = m;
  return QZ_OK;
}

static void prefetch_drop(qz_model *m);

void qz_model_close(qz_model **pm) {
  if (!pm || !*pm) return;
  qz_model *m = *pm;
  prefetch_drop(m);
  qz_free(&m->pf.cnt);
  qz_free_big(&m->pf.buf, m->pf.cap);
  qz_st_close(&m->st);
  if (m->comm != MPI_COMM_NULL) MPI_Comm_free(&m->comm);
  qz_free(pm);
}

const qz_model_config *qz_model_config_of(const qz_model *m) { return &m->cfg; }
qz_st *qz_model_st(qz_model *m) { return m->st; }
MPI_Comm qz_model_comm(const qz_model *m) { return m->comm; }

/* The error for value v at element k of rows from r0 (row length rowlen). */
static int damaged(qz_st *st, const char *name, double v, int64_t k, int64_t rowlen,
                   int64_t r0) {
  QZ_FAIL(QZ_ERR_NUMERIC, "%s: tensor %s holds %g at row %lld, column %lld: the model's "
          "weights are damaged", qz_st_origin(st), name, v, (long long)(r0 + k / rowlen),
          (long long)(k % rowlen));
}

/* This rank's rows [r0, r0 + cnt) of tensor `name` into full (row length
 * rowlen): as stored when raw >= 0 (16-bit, 2 bytes per element at
 * full + 2 r0 rowlen), else as f32; a NaN/Inf is named here, not later as a
 * degenerate Hessian or a NaN perplexity.  Not collective (the caller
 * agrees on the result). */
static int read_own_rows(qz_st *st, const char *name, int raw, int64_t r0, int64_t cnt,
                         int64_t rowlen, void *full) {
  if (cnt <= 0) return QZ_OK;
  if (raw >= 0) {
    uint16_t *h = (uint16_t *)full + r0 * rowlen;
    QZ_CALL(qz_st_read_raw16(st, name, r0, cnt, h));
    const uint16_t e = raw == QZ_DT_BF16 ? 0x7f80u : 0x7c00u; /* exponent all ones */
    for (int64_t k = 0; k < cnt * rowlen; k++)
      if ((h[k] & e) == e) {
        float v;
        qz_raw16_to_f32(raw, &h[k], 1, &v);
        return damaged(st, name, v, k, rowlen, r0);
      }
    return QZ_OK;
  }
  float *d = (float *)full + r0 * rowlen;
  QZ_CALL(qz_st_read_f32(st, name, r0, cnt, d));
  for (int64_t k = 0; k < cnt * rowlen; k++)
    if (!isfinite(d[k])) return damaged(st, name, d[k], k, rowlen, r0);
  return QZ_OK;
}

/* Shape and size checks of a tensor read by rows; -1 or its 16-bit dtype
 * (between nodes, comm.h qz_comm_packed_wire) in *raw. Not collective but
 * for qz_comm_packed_wire's first call on comm (collective). */
static int wire_of(MPI_Comm comm, qz_st *st, const char *name, int64_t nrows, int64_t rowlen,
                   int *raw, int *rc) {
  int64_t tr = 0, tl = 0;
  *rc = qz_st_rows(st, name, &tr, &tl);
  if (*rc == QZ_OK && tr * tl != nrows * rowlen)
    *rc = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                       "%s: tensor %s has %lld elements, expected %lld x %lld",
                       qz_st_origin(st), name, (long long)(tr * tl), (long long)nrows,
                       (long long)rowlen);
  if (*rc == QZ_OK && (nrows > INT32_MAX || rowlen > INT32_MAX / 4))
    *rc = qz_error_set(QZ_ERR_UNSUPPORTED, __FILE__, __LINE__, __func__,
                       "tensor %s: %lld rows of %lld too large for one allgather", name,
                       (long long)nrows, (long long)rowlen);
  int packed = 0;
  QZ_CALL(qz_comm_packed_wire(comm, &packed));
  *raw = packed && *rc == QZ_OK ? qz_st_raw16_dtype(st, name) : -1;
  return QZ_OK;
}

int qz_st_read_f32_allgather(MPI_Comm comm, qz_st *st, const char *name,
                             int64_t nrows, int64_t rowlen, float *dst) {
  int rank, size, rc = QZ_OK, raw = -1;
  QZ_CALL_MPI(MPI_Comm_rank(comm, &rank));
  QZ_CALL_MPI(MPI_Comm_size(comm, &size));
  QZ_CALL(wire_of(comm, st, name, nrows, rowlen, &raw, &rc));
  int64_t r0 = 0, cnt = 0;
  qz_split_even(nrows, size, rank, &r0, &cnt);
  /* between nodes a BF16/F16 tensor travels as stored (half the bytes of
   * f32) and every rank widens the whole of it in place: the same f32
   * values as widening before the gather */
  if (rc == QZ_OK) rc = read_own_rows(st, name, raw, r0, cnt, rowlen, dst);
  QZ_CALL(qz_error_agree(comm, rc));
  if (raw >= 0) {
    QZ_CALL(qz_allgather_rows_bytes(comm, nrows, 2 * rowlen, NULL, dst));
    qz_raw16_widen_inplace(raw, dst, nrows * rowlen);
    return QZ_OK;
  }
  QZ_CALL(qz_allgather_rows_f32(comm, nrows, rowlen, NULL, dst));
  return QZ_OK;
}

/* ---- the next block's linears, gathered while this block runs --------- */

/* Complete whatever is posted and forget it. Collective (every rank
 * posted the same). */
static void prefetch_drop(qz_model *m) {
  if (m->pf.layer < 0) return;
  MPI_Waitall(QZ_LIN_COUNT, m->pf.req, MPI_STATUSES_IGNORE);
  m->pf.layer = -1;
}

int qz_model_prefetch_block(qz_model *m, int layer) {
  const qz_model_config *c = &m->cfg;
  prefetch *pf = &m->pf;
  prefetch_drop(m);
  if (m->size == 1 || layer < 0 || layer >= c->num_hidden_layers ||
      qz_config_layer_moe(c, layer) || getenv("MPIQUANT_PREFETCH_OFF"))
    return QZ_OK;
  qz_timer_start(QZ_PHASE_LOAD);
  int st = QZ_OK;
  size_t need = 0;
  char name[256];
  int64_t out[QZ_LIN_COUNT], in[QZ_LIN_COUNT];
  for (int l = 0; l < QZ_LIN_COUNT && st == QZ_OK; l++) {
    int rc = QZ_OK;
    qz_linear_shape(c, (qz_linear)l, &out[l], &in[l]);
    qz_linear_tensor(name, sizeof name, layer, (qz_linear)l, "weight");
    st = wire_of(m->comm, m->st, name, out[l], in[l], &pf->raw[l], &rc);
    if (st == QZ_OK) st = rc;
    pf->off[l] = need;
    need += ((size_t)(out[l] * in[l]) * (pf->raw[l] >= 0 ? 2u : 4u) + 63u) / 64u * 64u;
  }
  if (st == QZ_OK && !pf->cnt)
    st = qz_alloc((size_t)QZ_LIN_COUNT * 2 * (size_t)m->size, sizeof(int), "prefetch counts",
                  &pf->cnt);
  if (st == QZ_OK && need > pf->cap) {
    qz_free_big(&pf->buf, pf->cap);
    pf->cap = 0;
    st = qz_alloc_big(need, "next block (prefetch)", &pf->buf);
    if (st == QZ_OK) pf->cap = need;
  }
  QZ_CALL_DONE(qz_error_agree(m->comm, st));
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t r0, cnt;
    qz_split_even(out[l], m->size, m->rank, &r0, &cnt);
    qz_linear_tensor(name, sizeof name, layer, (qz_linear)l, "weight");
    st = read_own_rows(m->st, name, pf->raw[l], r0, cnt, in[l], pf->buf + pf->off[l]);
    QZ_CALL_DONE(qz_error_agree(m->comm, st));
  }
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    QZ_CALL_DONE(qz_iallgather_rows_bytes(m->comm, out[l], in[l] * (pf->raw[l] >= 0 ? 2 : 4),
                                          pf->buf + pf->off[l],
                                          pf->cnt + (size_t)l * 2 * (size_t)m->size,
                                          &pf->req[l]));
    pf->layer = layer;
  }
done:
  qz_timer_stop(QZ_PHASE_LOAD);
  return st;
}

static int64_t g_prefetch_ready, g_prefetch_taken;

void qz_model_prefetch_stats(int64_t *ready, int64_t *taken) {
  *ready = g_prefetch_ready;
  *taken = g_prefetch_taken;
}

/* Linear l of block `layer` from the prefetch into dst (f32), if posted.
 * *used = 1 when it was. Collective (the wait). */
static int prefetch_take(qz_model *m, int layer, int l, float *dst, int *used) {
  prefetch *pf = &m->pf;
  *used = 0;
  if (pf->layer != layer) return QZ_OK;
  int ready = 0; /* done in the background (what the overlap needs)? */
  QZ_CALL_MPI(MPI_Test(&pf->req[l], &ready, MPI_STATUS_IGNORE));
  if (!ready) QZ_CALL_MPI(MPI_Wait(&pf->req[l], MPI_STATUS_IGNORE));
  g_prefetch_ready += ready;
  g_prefetch_taken++;
  int64_t out, in;
  qz_linear_shape(&m->cfg, (qz_linear)l, &out, &in);
  const int64_t n = out * in;
  const uint8_t *src = pf->buf + pf->off[l];
  if (pf->raw[l] < 0) {
    memcpy(dst, src, sizeof(float) * (size_t)n);
  } else {
    qz_raw16_to_f32(pf->raw[l], src, n, dst);
  }
  *used = 1;
  return QZ_OK;
}

static int load_vec(qz_model *m, const char *name, int64_t n, float *dst) {
  return qz_st_read_f32_allgather(m->comm, m->st, name, n, 1, dst);
}

/* Router (always) and, with `experts`, every expert and the shared expert
 * of MoE block `layer`: each tensor read once over the ranks. */
static int load_moe(qz_model *m, int layer, int experts, qz_block_weights *w) {
  const qz_model_config *c = &m->cfg;
  const int64_t H = c->hidden_size, E = w->nexp, Ie = w->einter, Is = w->sinter;
  char name[256];
  QZ_CHECK(E > 0 && w->router, QZ_ERR_ARG, "block weights not allocated for MoE");
  qz_router_tensor(name, sizeof name, c, layer);
  QZ_CALL(qz_st_read_f32_allgather(m->comm, m->st, name, E, H, w->router));
  if (Is > 0) {
    qz_shared_gate_tensor(name, sizeof name, layer);
    QZ_CALL(qz_st_read_f32_allgather(m->comm, m->st, name, 1, H, w->shared_gate));
  }
  if (Is > 0) QZ_CALL(qz_model_load_expert(m, layer, -1, w->sw[0], w->sw[1], w->sw[2]));
  if (!experts || !w->ew[0]) return QZ_OK; /* streamed one at a time */
  for (int e = 0; e < (int)E; e++)
    QZ_CALL(qz_model_load_expert(m, layer, e, w->ew[0] + e * Ie * H, w->ew[1] + e * Ie * H,
                                 w->ew[2] + e * H * Ie));
  return QZ_OK;
}

int qz_model_load_expert(qz_model *m, int layer, int e, float *gate, float *up,
                         float *down) {
  const qz_model_config *c = &m->cfg;
  const int64_t H = c->hidden_size;
  const int64_t I = e < 0 ? c->shared_expert_intermediate_size : c->moe_intermediate_size;
  QZ_CHECK(qz_config_layer_moe(c, layer) && e < c->num_experts && I > 0, QZ_ERR_ARG,
           "block %d has no expert %d", layer, e);
  float *dst[3] = {gate, up, down};
  char name[256];
  for (int k = 0; k < 3; k++) {
    qz_expert_tensor(name, sizeof name, c, layer, e, k);
    QZ_CALL(qz_st_read_f32_allgather(m->comm, m->st, name, k == 2 ? H : I, k == 2 ? I : H,
                                     dst[k]));
  }
  return QZ_OK;
}

int qz_model_load_block(qz_model *m, int layer, qz_block_weights *w) {
  return qz_model_load_block_mask(m, layer, QZ_LIN_ALL, w);
}

int qz_model_load_block_mask(qz_model *m, int layer, unsigned lin_mask,
                             qz_block_weights *w) {
  const qz_model_config *c = &m->cfg;
  QZ_CHECK(layer >= 0 && layer < c->num_hidden_layers, QZ_ERR_ARG,
           "block %d out of range: the model has %lld blocks", layer,
           (long long)c->num_hidden_layers);
  QZ_CHECK(w->mem && w->hidden == c->hidden_size && w->inter == c->intermediate_size,
           QZ_ERR_ARG, "block weights not allocated for this model");
  w->layer = layer;
  qz_timer_start(QZ_PHASE_LOAD);
  char name[256];
  int st = QZ_OK;
  snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", layer);
  QZ_CALL_DONE(load_vec(m, name, c->hidden_size, w->attn_norm));
  snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight",
           layer);
  QZ_CALL_DONE(load_vec(m, name, c->hidden_size, w->ffn_norm));
  if (c->qk_norm) {
    snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", layer);
    QZ_CALL_DONE(load_vec(m, name, c->head_dim, w->q_norm));
    snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", layer);
    QZ_CALL_DONE(load_vec(m, name, c->head_dim, w->k_norm));
  }
  w->moe = qz_config_layer_moe(c, layer);
  if (w->moe) {
    const unsigned ffn = (1u << QZ_LIN_GATE) | (1u << QZ_LIN_UP) | (1u << QZ_LIN_DOWN);
    QZ_CALL_DONE(load_moe(m, layer, (lin_mask & ffn) != 0, w));
  }
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t out, in;
    qz_linear_shape(c, (qz_linear)l, &out, &in);
    if (w->moe && l >= QZ_LIN_GATE) continue;
    if (lin_mask & (1u << l)) {
      int used = 0;
      QZ_CALL_DONE(prefetch_take(m, layer, l, w->w[l], &used));
      qz_linear_tensor(name, sizeof name, layer, (qz_linear)l, "weight");
      if (!used)
        QZ_CALL_DONE(qz_st_read_f32_allgather(m->comm, m->st, name, out, in, w->w[l]));
    }
    if (w->b[l]) {
      qz_linear_tensor(name, sizeof name, layer, (qz_linear)l, "bias");
      QZ_CALL_DONE(load_vec(m, name, out, w->b[l]));
    }
  }
done:
  prefetch_drop(m); /* (taken, or not wanted: a mask without some linears) */
  qz_timer_stop(QZ_PHASE_LOAD);
  return st;
}

int qz_model_load_head(qz_model *m, int want_embed, int want_head,
                       qz_head_weights *h) {
  const qz_model_config *c = &m->cfg;
  int64_t V = c->vocab_size, H = c->hidden_size;
  size_t mat = (size_t)(V * H) * sizeof(float);
  h->vocab = V;
  h->hidden = H;
  const char *head_name = qz_config_lm_head(c, m->st);
  h->tied = strcmp(head_name, "model.embed_tokens.weight") == 0;
  int st = QZ_OK;
  qz_timer_start(QZ_PHASE_LOAD);
  if ((want_embed || (want_head && h->tied)) && !h->embed) {
    st = qz_alloc_big(mat, "embedding", &h->embed);
    QZ_CALL_DONE(qz_error_agree(m->comm, st));
    QZ_CALL_DONE(qz_st_read_f32_allgather(m->comm, m->st,
                                          "model.embed_tokens.weight", V, H,
                                          h->embed));
  }
  if (want_head) {
    if (!h->norm) {
      st = qz_alloc_big((size_t)H * sizeof(float), "final norm", &h->norm);
      QZ_CALL_DONE(qz_error_agree(m->comm, st));
      QZ_CALL_DONE(load_vec(m, "model.norm.weight", H, h->norm));
    }
    if (h->tied) {
      h->lm_head = h->embed;
    } else if (!h->lm_head) {
      st = qz_alloc_big(mat, "lm_head", &h->lm_head);
      QZ_CALL_DONE(qz_error_agree(m->comm, st));
      QZ_CALL_DONE(qz_st_read_f32_allgather(m->comm, m->st, head_name, V, H,
                                            h->lm_head));
    }
  }
done:
  qz_timer_stop(QZ_PHASE_LOAD);
  return st;
}

void qz_vocab_shard_range(int64_t vocab, int nranks, int rank, int64_t *v0,
                          int64_t *v1) {
  int64_t nch = (vocab + QZ_VOCAB_CHUNK - 1) / QZ_VOCAB_CHUNK, c0 = 0, cn = 0;
  qz_split_even(nch, nranks, rank, &c0, &cn);
  *v0 = c0 * QZ_VOCAB_CHUNK < vocab ? c0 * QZ_VOCAB_CHUNK : vocab;
  *v1 = (c0 + cn) * QZ_VOCAB_CHUNK < vocab ? (c0 + cn) * QZ_VOCAB_CHUNK : vocab;
  if (*v1 < *v0) *v1 = *v0; /* a rank without chunks: empty, at the end */
}

void qz_head_shard_free(qz_head_shard *h) {
  if (!h) return;
  qz_free_big(&h->rows, 0);
  qz_free_big(&h->norm, 0);
  h->v0 = h->v1 = 0;
}

int qz_model_load_head_shard(qz_model *m, int64_t v0, int64_t v1, qz_head_shard *h) {
  const qz_model_config *c = &m->cfg;
  int64_t V = c->vocab_size, H = c->hidden_size;
  QZ_CHECK(0 <= v0 && v0 <= v1 && v1 <= V, QZ_ERR_ARG,
           "head rows [%lld, %lld) outside the vocabulary [0, %lld)", (long long)v0,
           (long long)v1, (long long)V);
  const char *head_name = qz_config_lm_head(c, m->st);
  h->vocab = V;
  h->hidden = H;
  h->v0 = v0;
  h->v1 = v1;
  int st = QZ_OK;
  qz_timer_start(QZ_PHASE_LOAD);
  QZ_CALL_DONE(qz_alloc_big((size_t)((v1 > v0 ? v1 - v0 : 1) * H) * sizeof(float),
                            "lm_head rows", &h->rows));
  QZ_CALL_DONE(qz_alloc_big((size_t)H * sizeof(float), "final norm", &h->norm));
  QZ_CALL_DONE(qz_st_read_f32(m->st, "model.norm.weight", 0, H, h->norm));
  if (v1 > v0) QZ_CALL_DONE(qz_st_read_f32(m->st, head_name, v0, v1 - v0, h->rows));
done:
  qz_timer_stop(QZ_PHASE_LOAD);
  return st;
}

typedef struct {
  int32_t id;
  int64_t pos;
} id_pos;

static int cmp_id_pos(const void *a, const void *b) {
  const id_pos *x = a, *y = b;
  if (x->id != y->id) return x->id < y->id ? -1 : 1;
  return x->pos < y->pos ? -1 : x->pos > y->pos;
}

int qz_model_embed_tokens(qz_model *m, const int32_t *ids, int64_t n, float *x) {
  const qz_model_config *c = &m->cfg;
  const int64_t V = c->vocab_size, H = c->hidden_size;
  for (int64_t t = 0; t < n; t++)
    QZ_CHECK(ids[t] >= 0 && ids[t] < V, QZ_ERR_ARG,
             "token id %d at local position %lld is outside the vocabulary "
             "[0, %lld)", (int)ids[t], (long long)t, (long long)V);
  if (n == 0) return QZ_OK;
  id_pos *order = NULL;
  QZ_CALL(qz_alloc((size_t)n, sizeof *order, "embedding lookup order", &order));
  for (int64_t t = 0; t < n; t++) order[t] = (id_pos){ids[t], t};
  qsort(order, (size_t)n, sizeof *order, cmp_id_pos);
  int st = QZ_OK;
  qz_timer_start(QZ_PHASE_LOAD);
  for (int64_t k = 0; k < n && st == QZ_OK; k++) {
    float *dst = x + order[k].pos * H;
    if (k > 0 && order[k].id == order[k - 1].id)
      memcpy(dst, x + order[k - 1].pos * H, sizeof(float) * (size_t)H);
    else
      st = qz_st_read_f32(m->st, "model.embed_tokens.weight", order[k].id, 1, dst);
  }
  qz_timer_stop(QZ_PHASE_LOAD);
  free(order);
  return st;
}

int64_t qz_model_bytes_read_local(const qz_model *m) {
  return qz_st_bytes_read(m->st);
}

int qz_model_bytes_read_total(qz_model *m, int64_t *total) {
  *total = qz_st_bytes_read(m->st);
  return qz_allreduce_i64(m->comm, total, 1, MPI_SUM);
}

int64_t qz_model_bytes_on_disk(const qz_model *m) {
  int64_t b = 0;
  for (int i = 0; i < qz_st_count(m->st); i++) b += qz_st_info_at(m->st, i)->nbytes;
  return b;
}
