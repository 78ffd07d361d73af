/* The plan model: per-rank memory of `quantize` by phase and time per phase.
 *
 * Memory follows the allocations of mpi_driver/cmd_quantize.c (and
 * quantize_block.c) and what it calls (shard/weights.c, shard/forward.c,
 * linalg/hessian.c, linalg/chol.c; each method's own buffers come from its
 * ops table's plan_linear / plan_block), using their constants (QZ_HESSIAN_KCHUNK,
 * QZ_HESSIAN_PANEL_BYTES, QZ_GPTQ_ROW_TILE, QZ_FWD_QBLOCK, the grid shape
 * and numroc) so the tests can compare the formulas with the real objects
 * (qz_fwd_bytes, qz_hessian_bytes, qz_block_weights_alloc).  Resident set =
 * touched anonymous memory + the mapped file pages of the row slice being
 * converted (dropped after each read). */
#include <math.h>
#include <string.h>

#include "mpiquant/error.h"
#include "mpiquant/forward.h"
#include "mpiquant/gptq.h"
#include "mpiquant/grid.h"
#include "mpiquant/hessian.h"
#include "mpiquant/moe.h"
#include "mpiquant/quant.h"
#include "mpiquant/quantease.h"
#include "mpiquant/shard.h"
#include "plan.h"

static const char *k_phase[QZ_PT_COUNT] = {"load",     "forward", "hessian", "reduce",
                                           "factor",   "quantize", "gather", "write"};
const char *qz_plan_phase_name(qz_plan_phase p) {
  return p >= 0 && p < QZ_PT_COUNT ? k_phase[p] : "?";
}

static int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }
static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static void lin_shape(const qz_model_config *c, int l, int64_t *out, int64_t *in) {
  qz_linear_shape(c, (qz_linear)l, out, in);
}

double qz_plan_block_weight_bytes(const qz_model_config *cfg) {
  /* quantize's block (qz_block_weights_alloc_ex(cfg, 0, .)): MoE experts are
   * streamed one at a time (counted in qz_plan_moe_scratch_bytes) */
  const int any = qz_config_any_moe(cfg), all = qz_config_all_moe(cfg);
  const int64_t H = cfg->hidden_size;
  int64_t total = 2 * round16(H) + (cfg->qk_norm ? 2 * round16(cfg->head_dim) : 0);
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t o, i;
    if (all && l >= QZ_LIN_GATE) continue;
    lin_shape(cfg, l, &o, &i);
    total += round16(o * i) + (qz_linear_has_bias(cfg, (qz_linear)l) ? round16(o) : 0);
  }
  if (any) {
    int64_t Is = cfg->moe == QZ_MOE_QWEN2 ? cfg->shared_expert_intermediate_size : 0;
    total += round16(cfg->num_experts * H) + 3 * round16(Is * H) + (Is > 0 ? round16(H) : 0);
  }
  return 4.0 * (double)total;
}

double qz_plan_moe_scratch_bytes(const qz_model_config *c, int64_t T, int64_t nw) {
  if (!qz_config_any_moe(c)) return 0.0;
  const double H = (double)c->hidden_size, k = (double)c->num_experts_per_tok;
  double I = (double)c->moe_intermediate_size;
  if ((double)c->shared_expert_intermediate_size > I) I = (double)c->shared_expert_intermediate_size;
  const double T1 = T > 0 ? (double)T : 1.0;
  /* quantize_moe.c scratch_alloc, the pages touched: one expert, the
   * fallback's Hessian rows (route-all: T of the 2T allocated; pooled
   * touches 2T) and their activations + scratch (T rows each of the 2T),
   * the routed rows, their activations and output, the FFN output, the
   * routing (each rounded to 64 B: ignored) */
  return 4.0 * (3.0 * I * H + T1 * H + 2.0 * T1 * I + T1 * H + T1 * I + 2.0 * T1 * H +
                2.0 * T1 * k) + 8.0 * (T1 + 3.0 * (double)nw + (double)c->num_experts);
}

double qz_plan_fwd_bytes(const qz_model_config *cfg, int64_t nwin, int64_t seqlen) {
  int64_t H = cfg->hidden_size, I = cfg->intermediate_size, hd = cfg->head_dim;
  int64_t qd = cfg->num_attention_heads * hd, kvd = cfg->num_key_value_heads * hd;
  int64_t T = nwin * seqlen, half = hd / 2;
  const int64_t TI = qz_config_all_moe(cfg) ? 0 : T * I; /* dense FFN buffers */
  /* keys, values, up: one window (shard/forward.c) */
  const int64_t Lw = nwin > 0 ? seqlen : 0, LI = TI > 0 ? Lw * I : 0;
  int64_t sz[] = {nwin * seqlen * H, T * H, T * qd, Lw * kvd, Lw * kvd, T * H, T * H,
                  TI,                LI,    T * H,  qz_fwd_scores_floats(hd, seqlen), seqlen * half,
                  seqlen * half};
  int64_t total = 0;
  for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) total += round16(sz[i]);
  /* MoE blocks: the FFN scratch of one window (qz_moe_ws_bytes) */
  return 4.0 * (double)total + (qz_config_any_moe(cfg) ? (double)qz_moe_ws_bytes(cfg, seqlen) : 0.0);
}

void qz_plan_grid_shape(int P, int64_t nodes, int *pr, int *pc) {
  qz_grid_dims(P, qz_grid_policy_is_1d(nodes <= 1), pr, pc);
}

double qz_plan_hessian_bytes(int64_t d, int nb, int P, int64_t nodes, int rank) {
  int pr, pc;
  qz_plan_grid_shape(P, nodes, &pr, &pc);
  int myr = rank / pc, myc = rank % pc;
  int64_t mloc = qz_bc_numroc(d, nb, myr, pr), nloc = qz_bc_numroc(d, nb, myc, pc);
  int64_t lld = mloc > 1 ? mloc : 1;
  double a = (double)lld * (double)(nloc > 0 ? nloc : 1) * 8.0;
  return a + (double)d * (8.0 + 4.0 + 1.0);
}

/* Input widths of the Hessians of a block: qkv, o, gate/up, down, and the
 * MoE experts' down (I_e) and shared expert's down (I_s); 0 = none. */
enum { NWIDTH = 6 };
static void group_widths(const qz_model_config *c, int64_t d[NWIDTH]) {
  d[0] = c->hidden_size;
  d[1] = c->num_attention_heads * c->head_dim;
  d[2] = c->hidden_size;
  d[3] = qz_config_all_moe(c) ? 0 : c->intermediate_size;
  d[4] = qz_config_any_moe(c) ? c->moe_intermediate_size : 0;
  d[5] = qz_config_any_moe(c) && c->moe == QZ_MOE_QWEN2 ? c->shared_expert_intermediate_size : 0;
}

/* The linear shapes [out, in] a block quantizes (up to 7 + 6): the dense
 * ones, or attention + one expert + the shared expert. */
static int block_shapes(const qz_model_config *c, int64_t o[13], int64_t i[13]) {
  int n = 0;
  const int any = qz_config_any_moe(c), all = qz_config_all_moe(c);
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    if (all && l >= QZ_LIN_GATE) continue;
    lin_shape(c, l, &o[n], &i[n]);
    n++;
  }
  if (any) {
    const int64_t H = c->hidden_size;
    const int64_t I[2] = {c->moe_intermediate_size,
                          c->moe == QZ_MOE_QWEN2 ? c->shared_expert_intermediate_size : 0};
    for (int e = 0; e < 2; e++) {
      if (I[e] <= 0) continue;
      o[n] = I[e], i[n++] = H;
      o[n] = I[e], i[n++] = H;
      o[n] = H, i[n++] = I[e];
    }
  }
  return n;
}

/* The driver's result buffers of one linear on a rank with m rows
 * (quantize_block.c: codes, scales, zeros, losses, g_idx, perm, dequantized
 * rows). */
static double result_bytes(const qz_plan_in *in, int64_t m, int64_t n) {
  double ng = (double)qz_quant_ngroups(&in->mo.spec, n);
  return (double)m * n            /* codes */
         + 2.0 * 4.0 * m * ng     /* scales, zeros */
         + 4.0 * m + 8.0 * n      /* losses, g_idx, perm */
         + 4.0 * m * n;           /* dequantized rows */
}

typedef struct {
  const qz_plan_in *in;
  const qz_plan_rates *r;
} coll_ctx;
static double coll_ag(const void *ctx, double bytes);
static double coll_ar(const void *ctx, double bytes);

static qz_plan_machine machine(const qz_plan_in *in, const qz_plan_rates *r, coll_ctx *cc) {
  *cc = (coll_ctx){in, r};
  return (qz_plan_machine){.gemm = r->sgemm_gflops * 1e9 * in->core_scale * (double)in->threads,
                           .gptq_frac = r->gptq_frac, .qe_frac = r->qe_frac,
                           .allgather = coll_ag, .allreduce = coll_ar, .ctx = cc};
}

/* The method's model of one linear of m rows x n inputs on one rank. */
static qz_plan_linear linear_model(const qz_plan_in *in, const qz_plan_rates *r, int64_t m,
                                   int64_t n) {
  coll_ctx cc;
  qz_plan_machine mc = machine(in, r, &cc);
  qz_plan_linear p = {0};
  if (in->mo.ops && in->mo.ops->plan_linear) in->mo.ops->plan_linear(&in->mo, &mc, m, n, &p);
  return p;
}

/* Several nodes: the packed way (comm.h qz_comm_packed_wire), else f32. */
static int packed_wire(const qz_plan_in *in) { return in->nodes > 1 && in->P > 1; }

/* Bytes per weight of the load's allgather: between nodes a 16-bit model
 * travels as stored (shard/model.c), anything else as f32. */
double qz_plan_wire_bytes(const qz_plan_in *in) {
  return packed_wire(in) && in->disk_dtype_bytes == 2 ? 2.0 : 4.0;
}

/* Bits per code in the gather after quantizing (qblock.c packs codes at
 * 1, 2, 4 or 8 bits: the width of the largest code). */
static double code_bits(const qz_plan_in *in) {
  int b = in->mo.spec.bits;
  return b <= 1 ? 1.0 : b <= 2 ? 2.0 : b <= 4 ? 4.0 : 8.0;
}

/* Bytes per weight of that gather for a linear [out, in]: packed codes
 * (whole bytes per row) + f32 scale and zero per group. */
static double gather_row_bytes(const qz_plan_in *in, int64_t i) {
  double ng = (double)qz_quant_ngroups(&in->mo.spec, i);
  return ceil(code_bits(in) * (double)i / 8.0) + 8.0 * ng;
}

double qz_plan_gather_bytes_per_weight(const qz_plan_in *in) {
  int64_t i = in->cfg.hidden_size;
  return packed_wire(in) ? gather_row_bytes(in, i) / (double)i : 4.0;
}

int qz_plan_memory(const qz_plan_in *in, const qz_plan_rates *r, qz_plan_mem *m) {
  const qz_model_config *c = &in->cfg;
  memset(m, 0, sizeof *m);
  int P = (int)in->P;
  QZ_CHECK(P >= 1, QZ_ERR_ARG, "plan: --np must be >= 1");
  /* + the MPI-IO collective buffer of the checkpoint writes on rank 0 (the
   * aggregator: measured 16-18 MiB above the other ranks with Open MPI's
   * OMPIO; allocated at the first write and kept by the heap) */
  m->base = r->base_rss_bytes + QZ_PLAN_IO_AGG_BYTES;
  m->weights = qz_plan_block_weight_bytes(c);
  const int calib = (in->needs & QZ_NEED_CALIB) != 0, hess = (in->needs & QZ_NEED_HESSIAN) != 0;
  int64_t nw = calib ? ceil_div(in->nsamples, P) : 0; /* rank 0 has the most */
  if (calib && nw > in->nsamples) nw = in->nsamples;
  m->windows_rank = nw;
  m->tokens_rank = nw * in->seqlen;
  if (calib) {
    m->fwd = qz_plan_fwd_bytes(c, nw, in->seqlen);
    m->fwd_hidden = 4.0 * (double)round16(nw * in->seqlen * c->hidden_size);
  }
  double V = (double)c->vocab_size, H = (double)c->hidden_size;
  /* the embedding is not held: qz_fwd_embed_model reads this rank's tokens'
   * rows straight into the hidden states (counted in fwd_hidden) */
  m->embed = 0.0;
  /* mapped pages: a row slice is resident while it is converted, then
   * dropped (qz_st_read_f32: madvise DONTNEED), so only the largest single
   * slice counts: the embedding rows while embedding (below), the
   * largest linear in the block phase */
  double disk = in->disk_dtype_bytes;
  /* one row per read; a row shorter than a page leaves its pages mapped, so
   * bound the embedding phase by whole pages of every distinct row */
  double row_bytes = disk * H, pg = 4096.0;
  double row_pages = row_bytes < pg ? pg : row_bytes;
  double nrows_emb = (double)m->tokens_rank < V ? (double)m->tokens_rank : V;
  double embed_pages = calib ? (row_bytes < pg ? nrows_emb * row_pages : row_pages) : 0.0;
  double block_pages = 0.0;
  int64_t so[13], si[13];
  const int ns = block_shapes(c, so, si);
  for (int l = 0; l < ns; l++) {
    double b = disk * (double)ceil_div(so[l], P) * (double)si[l];
    if (b > block_pages) block_pages = b;
  }
  m->io_pages = block_pages;
  /* quantize posts the next dense block's linears while this one runs:
   * one buffer of them in the wire size (16 bits between nodes, else f32) */
  if (P > 1 && c->num_hidden_layers > 1 && !qz_config_all_moe(c)) {
    double lin = 0.0;
    for (int l = 0; l < QZ_LIN_COUNT; l++) {
      int64_t o, i;
      lin_shape(c, l, &o, &i);
      lin += (double)o * (double)i;
    }
    m->prefetch = lin * qz_plan_wire_bytes(in);
  }
  m->moe = qz_plan_moe_scratch_bytes(c, m->tokens_rank, nw);

  double gmax = 0.0;
  for (int l = 0; l < ns; l++) {
    double g = result_bytes(in, ceil_div(so[l], P), si[l]) +
               linear_model(in, r, ceil_div(so[l], P), si[l]).bytes;
    if (g > gmax) gmax = g;
  }
  if (hess && in->mo.ops && in->mo.ops->quantize_group) {
    /* q/k/v and gate/up held together (quantize_block.c): one result set
     * per linear of a group, each the size of the largest linear, one
     * dequantized-rows buffer, and the method's working set k of the group
     * grown to the largest k-th member (ws k of gptq_group_op) */
    double set = 0.0, qrows = 0.0, ws[QZ_GROUP_MAX] = {0};
    for (int l = 0; l < ns; l++) {
      const int64_t mr = ceil_div(so[l], P);
      const double dq = 4.0 * (double)mr * (double)si[l];
      const double s = result_bytes(in, mr, si[l]) - dq;
      const double w = linear_model(in, r, mr, si[l]).bytes;
      /* the position in its group: k 1, v 2, up 1 (dense blocks); else 0 */
      const int k = l < QZ_LIN_COUNT && !qz_config_all_moe(c)
                        ? (l == QZ_LIN_K || l == QZ_LIN_UP) + 2 * (l == QZ_LIN_V)
                        : (l == QZ_LIN_K) + 2 * (l == QZ_LIN_V);
      if (s > set) set = s;
      if (dq > qrows) qrows = dq;
      if (w > ws[k]) ws[k] = w;
    }
    gmax = QZ_GROUP_MAX * set + qrows + ws[0] + ws[1] + ws[2];
  }
  /* the gather after quantizing (qblock.c): every rank's packed codes and
   * f32 scales/zeros of the largest linear + 256 rows of unpacked codes */
  double gat = 0.0;
  for (int l = 0; l < ns && packed_wire(in); l++) {
    double g = (double)so[l] * gather_row_bytes(in, si[l]) + 256.0 * (double)si[l];
    if (g > gat) gat = g;
  }
  gmax += gat;
  m->gptq = gmax;
  const int factor = linear_model(in, r, 1, c->hidden_size).factor;
  if (in->mo.ops && in->mo.ops->plan_block) {
    qz_plan_block pb = {0};
    in->mo.ops->plan_block(&in->mo, c, nw, in->seqlen, &pb);
    m->method_block = pb.bytes;
  }

  if (hess) {
    int64_t d[NWIDTH], seen[NWIDTH];
    int nseen = 0;
    group_widths(c, d);
    double trans_max = 0.0;
    int pr, pc;
    qz_plan_grid_shape(P, in->nodes, &pr, &pc);
    for (int g = 0; g < NWIDTH; g++) {
      if (d[g] <= 0) continue;
      int dup = 0;
      for (int k = 0; k < nseen; k++) dup |= seen[k] == d[g];
      if (!dup) {
        seen[nseen++] = d[g];
        double hb = qz_plan_hessian_bytes(d[g], in->nb, P, in->nodes, 0);
        m->hessians += hb;
        if (factor) /* (QuantEase from RTN: no factor) */
          m->factor_xbuf += 4.0 * (double)in->mo.blocksize * (double)d[g]; /* f32 */
        if (hb > m->hessian_max) {
          m->hessian_max = hb;
          m->hessian_ideal = 8.0 * (double)d[g] * (double)d[g] / P;
        }
      }
      int64_t W = QZ_HESSIAN_PANEL_BYTES / (d[g] * in->nb * 12) * in->nb;
      if (W < in->nb) W = in->nb;
      if (W > d[g]) W = d[g];
      double ldrecv = (double)qz_bc_numroc(d[g], in->nb, 0, pr);
      double flush = 12.0 * d[g] * W + 8.0 * (ldrecv * W + 1);
      /* chol.c build_upper: batches of nb x pc columns; on a 1 x P grid a
       * rank's share of a batch is its one block column, all d rows */
      double prep = P > 1 && factor ? 2.0 * 8.0 * (double)d[g] * in->nb * (pr == 1 ? 1 : pc) : 0.0;
      if (flush > m->flush) m->flush = flush;
      if (prep > m->prepare) m->prepare = prep;
      /* the rows are folded from the forward's stage buffer (no copy): the
       * panels, then the factorization after them */
      double t = flush;
      if (prep > t) t = prep;
      if (t > trans_max) trans_max = t;
    }
    /* (m->embed is 0 now that the embedding is read per token; when a
     * large buffer is freed before the blocks, the driver's malloc settings
     * (main.c: no mmap, no trimming below 1 GiB) keep its pages resident as
     * a hole the Hessians are carved from: the larger of the two counts.) */
    /* the per-linear buffers (results and the method's working set) are
     * kept from linear to linear once the first linear has run */
    double carved = m->hessians + m->factor_xbuf + gmax + trans_max;
    m->block_phase = m->base + m->weights + m->prefetch + m->fwd + m->io_pages + m->moe +
                     (carved > m->embed ? carved : m->embed);
    m->embed_phase = m->base + m->fwd_hidden + m->embed + embed_pages;
  } else {
    m->block_phase = m->base + m->weights + m->prefetch + m->fwd + m->io_pages + m->moe + gmax;
    if (calib) m->embed_phase = m->base + m->fwd_hidden + m->embed + embed_pages;
  }
  m->block_phase += m->method_block;
  m->peak = m->block_phase > m->embed_phase ? m->block_phase : m->embed_phase;
  return QZ_OK;
}

/* ---- time ------------------------------------------------------------ */

typedef enum { COLL_RS, COLL_AR, COLL_AG } coll_kind;

/* Seconds of a collective over the run's ranks on an object of S bytes:
 * within a node the measured rate (at 2 ranks) scaled by ranks per node / 2
 * (ring algorithms: every rank moves ~S through shared memory, the node's
 * memory system is the shared resource); between nodes a ring moves
 * ~S (N-1)/N per node (x2 for allreduce) over the node's network link,
 * plus 2 (N-1) latencies. */
static double coll(const qz_plan_in *in, const qz_plan_rates *r, coll_kind k, double S) {
  if (in->P <= 1 || S <= 0) return 0.0;
  double beta = k == COLL_RS ? r->reduce_scatter_gbs
                : k == COLL_AR ? r->allreduce_gbs : r->allgather_gbs;
  double t = 0.0;
  double R = (double)in->ranks_per_node, N = (double)in->nodes;
  if (R > 1) t += S * (R / 2.0) / (beta * 1e9);
  if (N > 1) {
    double f = (k == COLL_AR ? 2.0 : 1.0) * (N - 1.0) / N;
    t += S * f / (in->net_gbs * 1e9) + 2.0 * (N - 1.0) * in->latency_s;
  }
  return t;
}

static double coll_ag(const void *ctx, double bytes) {
  const coll_ctx *c = ctx;
  return coll(c->in, c->r, COLL_AG, bytes);
}
static double coll_ar(const void *ctx, double bytes) {
  const coll_ctx *c = ctx;
  return coll(c->in, c->r, COLL_AR, bytes);
}

/* The quantize-relevant shape of one block: linears [out, in] with how many
 * of each, Hessian widths with how many rows each sees per token (k for the
 * routed experts' stacked rows) and how many factorizations. */
typedef struct {
  int n;
  int64_t o[16], i[16];
  double count[16];      /* linears of this shape in the block */
  int nh;
  int64_t d[8];
  double rows[8];        /* Hessian rows per calibration token */
  double nfac[8];        /* Hessians (reductions, factorizations) of width d */
  double params;         /* weights read (routers included) */
  double qparams;        /* weights quantized */
  double ffn_flops_tok;  /* FFN flops per token (routed experts: k of E) */
  double shared_streams; /* factor streams of width hidden saved when the linears
                            of one Hessian go through quantize_group together:
                            k and v (+ up in a dense block) */
} block_shape;

static void add_lin(block_shape *b, int64_t o, int64_t i, double cnt) {
  b->o[b->n] = o, b->i[b->n] = i, b->count[b->n++] = cnt;
  b->params += cnt * (double)o * (double)i;
  b->qparams += cnt * (double)o * (double)i;
}
static void add_hess(block_shape *b, int64_t d, double rows, double nfac) {
  b->d[b->nh] = d, b->rows[b->nh] = rows, b->nfac[b->nh++] = nfac;
}

static void shape_of_block(const qz_model_config *c, int moe, block_shape *b) {
  memset(b, 0, sizeof *b);
  const int64_t H = c->hidden_size, qd = c->num_attention_heads * c->head_dim;
  for (int l = 0; l <= QZ_LIN_O; l++) {
    int64_t o, i;
    lin_shape(c, l, &o, &i);
    add_lin(b, o, i, 1.0);
  }
  add_hess(b, H, 1.0, 1.0);
  add_hess(b, qd, 1.0, 1.0);
  if (!moe) {
    const int64_t I = c->intermediate_size;
    add_lin(b, I, H, 2.0);
    add_lin(b, H, I, 1.0);
    add_hess(b, H, 1.0, 1.0);
    add_hess(b, I, 1.0, 1.0);
    b->ffn_flops_tok = 2.0 * 3.0 * (double)H * (double)I;
    b->shared_streams = 3.0;
    return;
  }
  b->shared_streams = 2.0; /* the experts' linears stream one by one */
  const double E = (double)c->num_experts, k = (double)c->num_experts_per_tok;
  const int64_t Ie = c->moe_intermediate_size;
  const int64_t Is = c->moe == QZ_MOE_QWEN2 ? c->shared_expert_intermediate_size : 0;
  add_lin(b, Ie, H, 2.0 * E);
  add_lin(b, H, Ie, E);
  add_hess(b, H, k, E); /* every token's row in k experts' Hessians */
  add_hess(b, Ie, k, E);
  b->params += E * (double)H; /* routers: read, not quantized */
  b->ffn_flops_tok = 2.0 * ((double)H * E + k * 3.0 * (double)H * (double)Ie);
  if (Is > 0) {
    add_lin(b, Is, H, 2.0);
    add_lin(b, H, Is, 1.0);
    add_hess(b, H, 1.0, 1.0);
    add_hess(b, Is, 1.0, 1.0);
    b->params += (double)H;
    b->ffn_flops_tok += 2.0 * (3.0 * (double)H * (double)Is + (double)H);
  }
}

/* Seconds (blk) and flops (fl) of one block of shape b. */
static void block_time(const qz_plan_in *in, const qz_plan_rates *r, const block_shape *b,
                       double blk[QZ_PT_COUNT], double fl[QZ_PT_COUNT]) {
  const qz_model_config *c = &in->cfg;
  const double P = (double)in->P, th = (double)in->threads, s = in->core_scale;
  const double N = (double)in->nodes;
  const double gemm = r->sgemm_gflops * 1e9 * s * th;  /* one rank */
  const double syrk = r->ssyrk_gflops * 1e9 * s * th;
  const double potrf = r->dpotrf_gflops * 1e9 * s * th;
  /* load: every tensor read once over the job (nodes read in parallel),
   * then an allgather of the f32 weights (MoE: expert by expert) */
  const double expand = r->expand_gelems * 1e9 * s * th; /* elements / s, one rank */
  const double wire = qz_plan_wire_bytes(in);
  blk[QZ_PT_LOAD] = b->params * in->disk_dtype_bytes / (r->read_gbs * 1e9 * N) +
                    coll(in, r, COLL_AG, wire * b->params) +
                    (wire < 4.0 ? b->params / expand : 0.0);
  /* the gather of every linear's codes + scales after quantizing, and the
   * dequantization of the whole block on every rank (qblock.c) */
  blk[QZ_PT_GATHER] = coll(in, r, COLL_AG, qz_plan_gather_bytes_per_weight(in) * b->qparams) +
                      (packed_wire(in) ? b->qparams / expand : 0.0);
  int64_t nw = ceil_div(in->nsamples, in->P);
  const int calib = (in->needs & QZ_NEED_CALIB) != 0, hess = (in->needs & QZ_NEED_HESSIAN) != 0;
  const int factor = linear_model(in, r, 1, c->hidden_size).factor;
  if (calib) {
    double L = (double)in->seqlen;
    double fpw = qz_fwd_block_flops(c, 1, in->seqlen) -
                 L * 2.0 * 3.0 * (double)c->hidden_size * (double)c->intermediate_size +
                 L * b->ffn_flops_tok;
    fl[QZ_PT_FORWARD] = fpw * (double)in->nsamples;
    blk[QZ_PT_FORWARD] = (double)nw * fpw / (gemm * r->fwd_frac);
    if (in->mo.ops && in->mo.ops->plan_block) { /* the block hook's forward passes */
      qz_plan_block pb = {0};
      in->mo.ops->plan_block(&in->mo, c, nw, in->seqlen, &pb);
      fl[QZ_PT_FORWARD] += pb.flops * P;
      blk[QZ_PT_FORWARD] += pb.flops / (gemm * r->fwd_frac);
    }
  }
  if (hess) {
    double Tl = (double)(nw * in->seqlen);
    int gr, gc;
    qz_plan_grid_shape((int)in->P, in->nodes, &gr, &gc);
    for (int g = 0; g < b->nh; g++) {
      double dd = (double)b->d[g], nf = b->nfac[g];
      fl[QZ_PT_HESSIAN] += b->rows[g] * (double)in->nsamples * in->seqlen * dd * dd;
      blk[QZ_PT_HESSIAN] += b->rows[g] * Tl * dd * dd / syrk;
      /* the lower triangle in f64 is reduce-scattered (+ the N allreduce);
       * two-level (hessian.h): summed within the node, then one
       * contribution per node crosses the network, as coll() models it */
      blk[QZ_PT_REDUCE] += nf * coll(in, r, COLL_RS, 4.0 * dd * dd);
      /* potrf + trtri (2 d^3 / 3, f64) on the grid; redistribution of the
       * permuted upper triangle (alltoall of 8 d^2 / P per rank) and the
       * panel latency (d / nb steps, ~3 log2 P messages each) */
      if (factor) { /* (QuantEase from RTN: no factor) */
        double ff = 2.0 * dd * dd * dd / 3.0;
        fl[QZ_PT_FACTOR] += nf * ff;
        double eff = in->P > 1 ? r->pdpotrf_eff : 1.0;
        blk[QZ_PT_FACTOR] += nf * (ff / (P * potrf * eff) + coll(in, r, COLL_AG, 8.0 * dd * dd / P) +
                                   (N > 1 ? dd / in->nb * 3.0 * log2(P) * in->latency_s : 0.0));
        /* a 1 x P grid across nodes (--proc-grid 1d): every rank receives
         * every panel of potrf and trtri, ~4 d^2 bytes each, through the
         * node's link (on one node the measured efficiency covers it) */
        if (N > 1 && gr == 1 && P > 1)
          blk[QZ_PT_FACTOR] += nf * 8.0 * dd * dd * (double)in->ranks_per_node /
                               (in->net_gbs * 1e9);
      }
    }
  }
  /* quantize: the method's model of each linear on the rank with the most
   * rows (methods/<m>.c plan_linear) */
  for (int l = 0; l < b->n; l++) {
    qz_plan_linear q = linear_model(in, r, ceil_div(b->o[l], in->P), b->i[l]);
    fl[QZ_PT_QUANTIZE] += b->count[l] * q.flops * P;
    blk[QZ_PT_QUANTIZE] += b->count[l] * q.seconds;
  }
  /* the factor once per Hessian: q/k/v (and gate/up) share one stream */
  if (hess && in->mo.ops && in->mo.ops->quantize_group)
    blk[QZ_PT_QUANTIZE] -= b->shared_streams * linear_model(in, r, 1, c->hidden_size).stream;
  /* checkpoint: codes (1 B) + f32 scale and zero per group, before zstd */
  double g = in->mo.spec.groupsize > 0 ? (double)in->mo.spec.groupsize : 1e9;
  blk[QZ_PT_WRITE] = b->qparams * (1.0 + 8.0 / g) / (r->hdf5_write_gbs * 1e9 * N);
}

void qz_plan_moe_summary(const qz_model_config *c, int64_t tokens, qz_plan_moe *s) {
  memset(s, 0, sizeof *s);
  const double H = (double)c->hidden_size;
  for (int l = 0; l < c->num_hidden_layers; l++) {
    if (!qz_config_layer_moe(c, l)) continue;
    s->moe_blocks++;
    const double E = (double)c->num_experts, k = (double)c->num_experts_per_tok;
    const double Ie = (double)c->moe_intermediate_size;
    const double Is = c->moe == QZ_MOE_QWEN2 ? (double)c->shared_expert_intermediate_size : 0;
    s->total_ffn += E * 3.0 * H * Ie + 3.0 * H * Is + E * H + (Is > 0 ? H : 0.0);
    s->active_ffn += k * 3.0 * H * Ie + 3.0 * H * Is + E * H + (Is > 0 ? H : 0.0);
    s->hessians += 2.0 * E;
    s->alltoall_bytes += 2.0 * (double)tokens * k * H * 4.0;
  }
  s->total = (double)qz_config_param_count(c);
  s->active = s->total - s->total_ffn + s->active_ffn;
}

int qz_plan_time_model(const qz_plan_in *in, const qz_plan_rates *r, qz_plan_time *t) {
  const qz_model_config *c = &in->cfg;
  memset(t, 0, sizeof *t);
  double blk[QZ_PT_COUNT] = {0}, fl[QZ_PT_COUNT] = {0};
  double nmoe = 0.0;
  for (int l = 0; l < c->num_hidden_layers; l++) nmoe += qz_config_layer_moe(c, l);
  const double nblk = (double)c->num_hidden_layers - nmoe; /* dense blocks */
  block_shape bs;
  shape_of_block(c, 0, &bs);
  block_time(in, r, &bs, blk, fl);
  double bm[QZ_PT_COUNT] = {0}, fm[QZ_PT_COUNT] = {0};
  if (nmoe > 0) {
    shape_of_block(c, 1, &bs);
    block_time(in, r, &bs, bm, fm);
  }
  const int calib = (in->needs & QZ_NEED_CALIB) != 0;
  t->busy_ranks = in->P < in->nsamples ? in->P : in->nsamples;
  for (int p = 0; p < QZ_PT_COUNT; p++) {
    t->t[p] = blk[p] * nblk + bm[p] * nmoe;
    t->flops[p] = fl[p] * nblk + fm[p] * nmoe;
  }
  /* embedding: each rank reads the rows of its own tokens (at most V) */
  double V = (double)c->vocab_size, H = (double)c->hidden_size;
  if (calib) {
    double rows = (double)in->nsamples * (double)in->seqlen / (double)in->P;
    if (rows > V) rows = V;
    t->t[QZ_PT_LOAD] += rows * H * in->disk_dtype_bytes / (r->read_gbs * 1e9);
  }
  for (int p = 0; p < QZ_PT_COUNT; p++) t->total += t->t[p];
  return QZ_OK;
}

/* ---- bytes moved (the --log-view byte table's model) ----------------- */

double qz_plan_hessian_packed(int64_t d, int nb) {
  double n = 0.0;
  for (int64_t j0 = 0; j0 < d; j0 += nb) {
    int64_t w = d - j0 < nb ? d - j0 : nb;
    n += (double)w * (double)(d - j0);
  }
  return n;
}

double qz_plan_redistributed(int64_t d, int nb, int pr, int pc, int act_order) {
  const double tri = (double)d * (double)(d - 1) / 2.0;
  const int P = pr * pc;
  if (P <= 1) return 0.0;
  if (act_order) return tri * (1.0 - 1.0 / P);
  /* chol.c build_upper: entry (i, j), i < j, of the reversed order comes
   * from the stored (d-1-i, d-1-j) on rank (orow(d-1-i), ocol(d-1-j)) and
   * goes to (orow(i), ocol(j)): it stays when both owners agree */
  double local = 0.0, rows_before = 0.0;
  for (int64_t j = 0; j < d; j++) {
    if (qz_bc_owner(d - 1 - j, nb, pc) == qz_bc_owner(j, nb, pc)) local += rows_before;
    rows_before += qz_bc_owner(d - 1 - j, nb, pr) == qz_bc_owner(j, nb, pr);
  }
  return tri - local;
}

/* Mean bytes per rank, sent + received, of an allgather (or reduce-scatter)
 * of S bytes in all: every byte is sent once by its owner to each of the
 * P - 1 others ... as comm.h counts it: 2 (P - 1) S / P. */
static double ag_mean(double S, double P) { return P > 1 ? 2.0 * (P - 1.0) * S / P : 0.0; }

/* Share of grid rank r (= p pc + q) of the packed lower triangle
 * (qz_plan_hessian_packed's elements on their block-cyclic owners). */
static double packed_share(int64_t d, int nb, int pr, int pc, int r) {
  double n = 0.0;
  for (int64_t jb = 0; jb * nb < d; jb++) {
    if (jb % pc != r % pc) continue;
    int64_t w = d - jb * nb < nb ? d - jb * nb : nb;
    for (int64_t ib = jb; ib * nb < d; ib++)
      if (ib % pr == r / pc) n += (double)w * (double)(d - ib * nb < nb ? d - ib * nb : nb);
  }
  return n;
}

/* The reduction of a width-d Hessian's packed triangle, S = 8 packed(d)
 * bytes (hessian.c): a flat reduce-scatter, or two-level on several nodes of
 * several ranks (ranks r R .. r R + R-1 on node r, as the launcher places
 * them): reduce to the node's lowest rank (2 S per node), a
 * reduce-scatter of the nodes' shares among the N leaders (2 (N-1) S in
 * all), a scatter within each node (2 (node share - leader's share)).
 * Mean per rank. */
static double reduce_mean(const qz_plan_in *in, int64_t d) {
  const double P = (double)in->P, N = (double)in->nodes, R = (double)in->ranks_per_node;
  const double S = 8.0 * qz_plan_hessian_packed(d, in->nb);
  if (in->P <= 1) return 0.0;
  if (!(N > 1 && R > 1)) return ag_mean(S, P);
  int pr, pc;
  qz_plan_grid_shape((int)in->P, in->nodes, &pr, &pc);
  double scatter = 0.0;
  for (int64_t r0 = 0; r0 < in->P; r0 += in->ranks_per_node) {
    double node = 0.0;
    for (int64_t r = r0; r < r0 + in->ranks_per_node && r < in->P; r++)
      node += packed_share(d, in->nb, pr, pc, (int)r);
    scatter += 2.0 * 8.0 * (node - packed_share(d, in->nb, pr, pc, (int)r0));
  }
  return (2.0 * S * (N * (R - 1.0) + (N - 1.0)) + scatter) / P;
}

int qz_plan_bytes_model(const qz_plan_in *in, qz_plan_bytes *b) {
  const qz_model_config *c = &in->cfg;
  memset(b, 0, sizeof *b);
  QZ_CHECK(in->P >= 1, QZ_ERR_ARG, "plan: --np must be >= 1");
  const double P = (double)in->P, disk = (double)in->disk_dtype_bytes;
  const int calib = (in->needs & QZ_NEED_CALIB) != 0, hess = (in->needs & QZ_NEED_HESSIAN) != 0;
  const int factor = linear_model(in, &(qz_plan_rates){0}, 1, c->hidden_size).factor;
  const double H = (double)c->hidden_size;
  int pr, pc;
  qz_plan_grid_shape((int)in->P, in->nodes, &pr, &pc);
  double nblk = 0.0;
  for (int l = 0; l < c->num_hidden_layers; l++) {
    if (qz_config_layer_moe(c, l)) b->moe_blocks++;
    else nblk += 1.0;
  }
  /* one dense block */
  double read = 0.0, f32 = 0.0, q32 = 0.0, wr = 0.0;
  double vec = 2.0 * H + (c->qk_norm ? 2.0 * (double)c->head_dim : 0.0);
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t o, i;
    lin_shape(c, l, &o, &i);
    if (qz_linear_has_bias(c, (qz_linear)l)) vec += (double)o;
    const double oi = (double)o * (double)i;
    read += oi;
    q32 += 4.0 * oi;
    /* codes (1 B), f32 scales and zeros per group, g_idx and perm (i32) */
    wr += oi + 8.0 * (double)o * (double)qz_quant_ngroups(&in->mo.spec, i) + 8.0 * (double)i;
  }
  f32 = q32 + 4.0 * vec;
  wr += 8.0 * H; /* the two RMSNorm weights */
  b->file[QZ_PT_LOAD] = nblk * (read + vec) * disk / P;
  b->mpi[QZ_PT_LOAD] = nblk * ag_mean(f32 * qz_plan_wire_bytes(in) / 4.0, P);
  /* per linear, between nodes: the packed codes + scales/zeros (qblock.c),
   * the allreduce that chooses the code width (32 B) and the outlier counts
   * (4 B each); within one node the f32 rows */
  double gq = 0.0;
  for (int l = 0; l < QZ_LIN_COUNT; l++) {
    int64_t o, i;
    lin_shape(c, l, &o, &i);
    gq += packed_wire(in) ? ag_mean((double)o * gather_row_bytes(in, i), P) +
                                4.0 * 32.0 * (P - 1.0) / P + 8.0 * (P - 1.0)
                          : ag_mean(4.0 * (double)o * (double)i, P);
  }
  b->mpi[QZ_PT_GATHER] = nblk * gq;
  b->file[QZ_PT_WRITE] = nblk * wr / P;
  if (calib) { /* embedding: each rank reads the distinct rows of its tokens
                * (at most V; all tokens distinct is the bound modelled) */
    double rows = 0.0;
    for (int p = 0; p < (int)in->P; p++) {
      int64_t f0, cnt;
      qz_shard_windows(in->nsamples, (int)in->P, p, &f0, &cnt);
      double t = (double)cnt * (double)in->seqlen;
      rows += t < (double)c->vocab_size ? t : (double)c->vocab_size;
    }
    b->file[QZ_PT_LOAD] += rows * H * disk / P;
    /* hidden-state snapshots for resume (cmd_quantize.c's default cadence) */
    int64_t L = c->num_hidden_layers;
    int64_t every = in->snapshot_every > 0 ? in->snapshot_every : (L + 9) / 10;
    double nsnap = every > 0 ? (double)((L - 1) / every) : 0.0;
    b->file[QZ_PT_WRITE] += nsnap * (double)in->nsamples * (double)in->seqlen * H * 4.0 / P;
  }
  if (hess) {
    int64_t d[4] = {c->hidden_size, c->num_attention_heads * c->head_dim, c->hidden_size,
                    c->intermediate_size};
    const int nlin[4] = {3, 1, 2, 1}; /* linears sharing each Hessian */
    /* the factor streamed once per linear, or once per Hessian with the
     * method's quantize_group (GPTQ); f32 entries of the upper triangle */
    const int grouped = in->mo.ops && in->mo.ops->quantize_group;
    for (int g = 0; g < 4; g++) {
      const double dd = (double)d[g];
      double red = reduce_mean(in, d[g]);
      red += in->P > 1 ? 4.0 * (P - 1.0) / P * 8.0 * dd : 0.0; /* diagonal allreduce */
      b->mpi[QZ_PT_REDUCE] += nblk * red;
      if (!factor) continue;
      b->mpi[QZ_PT_FACTOR] +=
          nblk * (16.0 * qz_plan_redistributed(d[g], in->nb, pr, pc, in->mo.act_order) / P +
                  (grouped ? 1.0 : nlin[g]) * ag_mean(4.0 * dd * (dd + 1.0) / 2.0, P));
    }
  }
  return QZ_OK;
}
