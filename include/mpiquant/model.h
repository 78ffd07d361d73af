/* A Llama-family model as f32 weights, one decoder block at a time, and the
 * collective loader that reads every tensor from disk once per job.
 *
 * Loading: each rank reads a 1/P slice of a tensor's rows (qz_st_read_f32
 * with a row range, any float dtype -> f32) and MPI_Allgatherv assembles the
 * whole tensor on every rank, so the bytes pulled through the file system sum
 * to about the model size whatever the number of ranks. */
#ifndef MPIQUANT_MODEL_H
#define MPIQUANT_MODEL_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "mpiquant/config.h"
#include "mpiquant/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One decoder block, f32, row-major [out, in] like nn.Linear.weight.
 * Index w[] and b[] with qz_linear. Shapes (H = hidden_size, I =
 * intermediate_size, nq/nkv = attention/kv heads, hd = head_dim):
 *   w[QZ_LIN_Q]    [nq*hd, H]     w[QZ_LIN_K], w[QZ_LIN_V]  [nkv*hd, H]
 *   w[QZ_LIN_O]    [H, nq*hd]
 *   w[QZ_LIN_GATE], w[QZ_LIN_UP]  [I, H]     w[QZ_LIN_DOWN]  [H, I]
 * b[l] is [out] of linear l, or NULL when the config has no such bias
 * (qkv_bias -> Q,K,V; o_bias -> O; mlp_bias -> GATE,UP,DOWN).
 * The quantize pipeline may overwrite w[] in place with dequantized
 * weights; the forward reads them at each call. */
typedef struct {
  int64_t hidden, inter, nq, nkv, hd;
  float *attn_norm;           /* [H] input_layernorm.weight */
  float *ffn_norm;            /* [H] post_attention_layernorm.weight */
  float *w[QZ_LIN_COUNT];     /* see above */
  float *b[QZ_LIN_COUNT];     /* [out] or NULL */
  float *q_norm, *k_norm;     /* [hd] per-head RMSNorm of q / k (Qwen3), or NULL */
  /* Mixture of experts (qz_config_layer_moe): set by the loader per block.
   * moe = 0: the FFN is w[GATE/UP/DOWN]; 1: the experts below (the dense
   * w[GATE/UP/DOWN] are then unused and may be NULL when no block of the
   * config is dense). E experts of I_e, top-k routing. */
  int moe;
  int64_t nexp, topk, einter, sinter; /* E, k, I_e, shared I_s (0: none) */
  int norm_topk;              /* renormalise the top-k weights */
  float *router;              /* [E, H] router (gate) weight, kept in f32 */
  float *ew[3];               /* [E, I_e, H] gate, [E, I_e, H] up, [E, H, I_e] down */
  float *sw[3];               /* shared expert: [I_s, H] x2, [H, I_s]; or NULL */
  float *shared_gate;         /* [H] shared expert gate (sigmoid), or NULL */
  void *mem;                  /* one allocation holding all of the above */
  size_t mem_bytes;
  int layer;                  /* block index of the loaded weights (-1: none yet) */
} qz_block_weights;

/* Allocate (uninitialised) storage for one block of `cfg`. Not collective. */
int qz_block_weights_alloc(const qz_model_config *cfg, qz_block_weights *w);
/* Same; experts = 0 leaves out the experts (ew[] NULL: the router, the
 * shared expert gate and everything else are there), for a quantize run
 * that streams the experts one at a time. Not collective. */
int qz_block_weights_alloc_ex(const qz_model_config *cfg, int experts, qz_block_weights *w);
/* Free; accepts a zeroed or already freed struct. Not collective. */
void qz_block_weights_free(qz_block_weights *w);
/* Copy every array of src into dst (same config). Not collective. */
void qz_block_weights_copy(qz_block_weights *dst, const qz_block_weights *src);

/* Embedding, final norm and output head, f32. */
typedef struct {
  int64_t vocab, hidden;
  float *embed;     /* [vocab, H] model.embed_tokens.weight */
  float *norm;      /* [H] model.norm.weight */
  float *lm_head;   /* [vocab, H]; == embed when tie_word_embeddings */
  int tied;
} qz_head_weights;

/* Free (lm_head once when tied); accepts a zeroed struct. Not collective. */
void qz_head_weights_free(qz_head_weights *h);

/* Vocab-sharded output head: rows [v0, v1) of lm_head (or of the embedding
 * when tied) and the final norm, held by one rank (eval of large vocabs:
 * V/P x H per rank instead of V x H). */
#define QZ_VOCAB_CHUNK 4096 /* vocab columns per sgemm / partial sum; shards
                               are whole chunks, so results do not depend
                               on the rank count */
typedef struct {
  int64_t vocab, hidden, v0, v1;
  float *rows; /* [v1 - v0, hidden] */
  float *norm; /* [hidden] */
} qz_head_shard;

/* This rank's vocab rows: whole QZ_VOCAB_CHUNK chunks split evenly over
 * the ranks (a rank may get none). Not collective. */
void qz_vocab_shard_range(int64_t vocab, int nranks, int rank, int64_t *v0,
                          int64_t *v1);
/* Free; accepts a zeroed struct. Not collective. */
void qz_head_shard_free(qz_head_shard *h);

typedef struct qz_model qz_model;

/* Open a Hugging Face model directory on every rank: config.json and the
 * safetensors headers (mmapped, no data read), checks every tensor the config
 * implies (names, dtypes, shapes). Duplicates comm.  Collective on comm. */
int qz_model_open(MPI_Comm comm, const char *dir, qz_model **out);
/* Close; accepts NULL, NULLs the pointer. Not collective (but every rank
 * should close). */
void qz_model_close(qz_model **m);

const qz_model_config *qz_model_config_of(const qz_model *m); /* Not collective */
qz_st *qz_model_st(qz_model *m);                              /* Not collective */
MPI_Comm qz_model_comm(const qz_model *m);                    /* Not collective */

/* Read block `layer` (0-based) into w (allocated with qz_block_weights_alloc):
 * each tensor read once in total over the ranks, assembled on every rank.
 * Collective on the model's communicator; `layer` must match. */
int qz_model_load_block(qz_model *m, int layer, qz_block_weights *w);

/* Same, but the weight of linear l is read only when bit (1u << l) of
 * `lin_mask` is set; norms and biases are always read.  For weights that come
 * from elsewhere (a checkpoint's dequantized linears): the skipped tensors
 * cost no I/O.  QZ_LIN_ALL = every linear.  Collective; same mask on all
 * ranks. */
#define QZ_LIN_ALL ((1u << QZ_LIN_COUNT) - 1u)
int qz_model_load_block_mask(qz_model *m, int layer, unsigned lin_mask,
                             qz_block_weights *w);

/* Start gathering dense block `layer`'s seven linears for the next
 * qz_model_load_block(_mask) of that layer: each rank reads its rows now
 * (file I/O, finiteness checked) and posts nonblocking allgathers (16-bit
 * between nodes, as qz_st_read_f32_allgather), which the MPI library
 * advances inside the caller's other MPI calls while it works on the
 * current block; the load then only waits and converts.
 * The same f32 values as loading without it.  One buffer of the block's
 * linears (in their wire size) is kept by the model.  No-op at np 1, for a
 * MoE block, or with MPIQUANT_PREFETCH_OFF set.  Collective; `layer` must
 * match. */
int qz_model_prefetch_block(qz_model *m, int layer);
/* Linears taken from a prefetch so far in this process, and how many of
 * them had arrived before the load asked (no wait). Not collective. */
void qz_model_prefetch_stats(int64_t *ready, int64_t *taken);

/* Expert e of MoE block `layer` (e = -1: the Qwen2-MoE shared expert):
 * gate [I, H], up [I, H], down [H, I] f32 on every rank, each tensor read
 * once over the ranks. Collective; layer and e must match. */
int qz_model_load_expert(qz_model *m, int layer, int e, float *gate, float *up,
                         float *down);

/* Load the embedding, the final norm and the output head (lm_head, or the
 * embedding itself when tied: then lm_head == embed and nothing is read
 * twice).  `want_embed` / `want_head` select what is needed (eval needs both;
 * a rank keeps them until qz_head_weights_free). Collective. */
int qz_model_load_head(qz_model *m, int want_embed, int want_head,
                       qz_head_weights *h);

/* Read rows [v0, v1) of the output head and the final norm into h (this
 * rank only: every rank reads its own rows, each byte once in all).
 * Not collective. */
int qz_model_load_head_shard(qz_model *m, int64_t v0, int64_t v1, qz_head_shard *h);

/* x[t] = embedding row ids[t] (t < n), read straight from the model files,
 * each distinct id once, without holding the [vocab, H] embedding (quantize
 * needs only its own tokens' rows: T x H instead of V x H per rank, and no
 * allgather of the table). Ids outside [0, vocab) are an error naming the
 * position. Not collective. */
int qz_model_embed_tokens(qz_model *m, const int32_t *ids, int64_t n, float *x);

/* Collective read of rows [0, nrows) of tensor `name` (row length rowlen
 * floats) into dst [nrows, rowlen] on every rank, each rank reading 1/P of
 * the rows.  A plain BF16/F16 tensor is gathered in its 2-byte dtype and
 * widened on every rank (the same f32 bits, half the bytes). Collective on
 * comm. */
int qz_st_read_f32_allgather(MPI_Comm comm, qz_st *st, const char *name,
                             int64_t nrows, int64_t rowlen, float *dst);

/* Bytes read from disk by this rank so far (Not collective), and summed over
 * the ranks (Collective on the model's communicator). */
int64_t qz_model_bytes_read_local(const qz_model *m);
int qz_model_bytes_read_total(qz_model *m, int64_t *total);
/* Bytes of all tensor data of the model files (what "read once" means). */
int64_t qz_model_bytes_on_disk(const qz_model *m);

#ifdef __cplusplus
}
#endif
#endif
