/* Rotations for low-bit activations (QuaRot-style, issue 19): the model's
 * function is kept, its weights and activations lose their outliers.
 *
 * Computational invariance: with the RMSNorm weights folded into the
 * linears that read the normed stream (q, k, v; gate, up), the residual
 * stream x can be rotated by an orthogonal Q1 (x' = x Q1), since
 * RMSNorm(x Q1) = RMSNorm(x) Q1.  Then, for W [out, in] of nn.Linear:
 *   readers  (q, k, v, gate, up):  W' = W diag(norm) Q1, norm -> ones
 *   writers  (o, down):            W' = Q1^T W          (bias b' = b Q1)
 *   R2 per attention head (hd), on v and o: W_v' = R2^T W_v per head block,
 *      W_o' = W_o (I (x) R2) (the attention output is rotated with v);
 *   with o_heads, RH = H_nq (x) I_hd across heads on o's input, online:
 *      x_o' = x_o RH, W_o' = W_o (I (x) R2) RH (together a full rotation of
 *      the o input, as QuaRot's online partial Hadamard);
 *   R4 on the down_proj input (I): W_down' = W_down R4 and the forward
 *      applies x R4 online (the activation hook);
 *   R3 per head on queries and keys after RoPE (only with KV quantization):
 *      q' = q R3, k' = k R3 online, q' k'^T = q k^T;
 *   embeddings E' = E Q1; the head sees x' Q1^T = x before its final norm
 *      (the same as the fused head W_head diag(norm) Q1 with a unit norm,
 *      untied from the embedding).
 * Q1 = D1 H_d (randomized Hadamard: D1 a seeded diagonal of +-1, H_d the
 * normalized qz_rotation of hadamard.h), R2 = D2 H_hd, R3 = H_hd,
 * R4 = D4 H_I; sizes that are not k 2^m with a Hadamard H_k use the
 * seeded random orthogonal factor of qz_rotation_create.
 *
 * Activation quantization (per token, dynamic) and KV-cache quantization
 * (per token and head, asymmetric) are part of the same hooks, so a
 * rotated W4A4KV4 checkpoint evaluates with one linear-input hook and one
 * attention hook.  Not collective: everything here is per rank. */
#ifndef MPIQUANT_ROTATE_H
#define MPIQUANT_ROTATE_H

#include <stdint.h>

#include "mpiquant/config.h"
#include "mpiquant/forward.h"
#include "mpiquant/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Append-only. */
typedef enum { QZ_ROT_NONE = 0, QZ_ROT_HADAMARD = 1, QZ_ROT_DUQUANT = 2 } qz_rot_kind;

typedef struct {
  int kind;          /* qz_rot_kind */
  uint64_t seed;     /* signs and random orthogonal factors */
  int act_bits;      /* linear inputs: 0 = unquantized, else 2..16 */
  int act_asym;      /* 1: asymmetric (min/max) per token, else symmetric */
  double act_clip;   /* (0, 1]: the range used is clip * (max |x| or min/max) */
  int kv_bits;       /* keys/values after RoPE per token and head: 0 = off */
  double kv_clip;    /* (0, 1]: their range x kv_clip (0 read as 1) */
  int o_heads;       /* hadamard: o_proj's input also rotated across heads
                        online, x (H_nq (x) I_hd), fused into W_o (QuaRot's
                        online partial Hadamard); 0 in checkpoints made
                        before it existed */
  unsigned act_groups; /* linear-input groups whose activations act_bits
                          quantizes: bit g = qz_duq_group_of (q/k/v, o,
                          gate/up, down); 0 = all */
  /* DuQuant (QZ_ROT_DUQUANT) */
  int block;         /* rotation block (a power of two; per group the largest
                        power of two <= block dividing its width) */
  int perm;          /* 1: zigzag permutation between the two rotations */
  double smooth;     /* alpha of the smoothing s = amax^a / wmax^(1-a); 0: none */
} qz_rot_params;

/* "none", "hadamard" (NULL for other values); kind by name (-1: unknown). */
const char *qz_rot_kind_name(int kind);
int qz_rot_kind_find(const char *name);

typedef struct qz_rot qz_rot;
/* The rotations of a model of `cfg` (built from p->seed; identical on every
 * rank for the same parameters).  QZ_ERR_UNSUPPORTED naming the config
 * field when a Hadamard-rotated model has biases (not rotated yet).
 * Not collective. */
int qz_rot_create(const qz_model_config *cfg, const qz_rot_params *p, qz_rot **out);
void qz_rot_destroy(qz_rot **r); /* accepts NULL, NULLs *r */
const qz_rot_params *qz_rot_params_of(const qz_rot *r);
/* "Q1 hadamard 64 (Sylvester) x 2^0, R2 ..., R4 ..." for logs. */
const char *qz_rot_describe(const qz_rot *r);

/* Fold the norms and fuse Q1, R2, R4 into a block's fp weights in place
 * (norms become ones). Identity for QZ_ROT_NONE. Not collective. */
void qz_rot_fuse_block(qz_rot *r, qz_block_weights *w);
/* Hadamard: the first row of rotation i (0 = Q1 [H], 1 = R2 [hd], 2 = R3
 * [hd], 3 = R4 [I], 4 = RH [nq] with o_heads) into row (e_0 Q), its size into *n; returns 0 past
 * the end or for other kinds.  A checkpoint stores them so that eval can
 * tell a build that makes other rotations from the same seed.
 * Not collective. */
int qz_rot_probe(qz_rot *r, int i, float *row, int64_t *n);
/* Residual rows x [n, H]: x <- x Q1 (inverse = 1: x Q1^T). */
void qz_rot_stream(qz_rot *r, float *x, int64_t n, int inverse);

/* Per-token fake quantization of rows x [nrows, n] -> y (may alias):
 * symmetric: d = clip max|x| / (2^(b-1) - 1), y = clamp(rint(x/d)) d;
 * asymmetric: lo = clip min(x, 0), hi = clip max(x, 0), d = (hi - lo) /
 * (2^b - 1), z = rint(-lo / d), y = (clamp(rint(x/d) + z, 0, 2^b-1) - z) d.
 * Not collective. */
void qz_act_fake_quant_ex(const float *x, int64_t nrows, int64_t n, int bits, int asym,
                          double clip, float *y);

/* The hooks of the rotated (and/or activation/KV-quantized) model:
 * quantize = 0 gives the rotation alone (the quantize calibration forward:
 * the weights are fit to unquantized rotated inputs).  The hooks point
 * into r. Not collective. */
qz_act_hook qz_rot_act_hook(qz_rot *r, int quantize);
qz_model_hook qz_rot_model_hook(qz_rot *r);

/* ---- DuQuant (linalg/duquant.c) -----------------------------------------
 * Per block and linear-input group g (0 = q/k/v input [H], 1 = o input
 * [nq*hd], 2 = gate/up input [H], 3 = down input [I]) an orthogonal
 * transform after a smoothing: x -> (x / s) T with T = R1 P R2, R1 and R2
 * block-diagonal (blocks of b), P the zigzag permutation; the group's
 * weights W -> (W diag(s)) T, so the product is unchanged.  Built from the
 * calibration inputs' per-channel max |x| (amax, every token), the group's
 * per-column max |W| (wmax) and a sample of input rows X [m, n] (the
 * driver's: per calibration window its token of largest max |x|):
 *   s_j = max(max(amax_j, 1e-5)^a / max(wmax_j, 1e-5)^(1-a), 1e-5)
 *     (a = smooth; a = 0: s = 1); X <- X / s;
 *   R1: per block of b channels, greedily: k = the channel of the largest
 *     max_t |X_tk| (ties: the first within a relative 1e-9), R_k = E_k H_b
 *     E_k (E_k swaps channels 0 and k; H_b the normalized Sylvester
 *     matrix, whose first row spreads channel 0 evenly), X <- X R_k, b
 *     steps; the prefix of steps with the smallest peak max |X| (a later
 *     peak must be lower by a relative 1e-9) is kept;
 *   P: channels by max_t |(X R1)_tj| descending (ties: lower index) dealt
 *     to the K = n / b blocks in zigzag order 0, 1, .., K-1, K-1, .., 0, 0,
 *     1, ... (each block then sorted the same way), so every block gets a
 *     share of the large ones;
 *   R2: the greedy rotation again on X R1 P.
 * Products in double, sums in index order. */
#define QZ_DUQ_GROUPS 4
int qz_duq_group_of(qz_linear l);      /* -1 for none */
const char *qz_duq_group_name(int g);  /* "qkv", "o", "gateup", "down" */
/* Width n and block b of group g. Not collective. */
void qz_rot_duq_shape(const qz_rot *r, int g, int64_t *n, int64_t *b);
/* Build group g's transform for block `layer` from amax [n], wmax [n] and
 * the sample [m, n] (identical on every rank: the result is).
 * Not collective. */
int qz_rot_duq_build(qz_rot *r, int layer, int g, const float *amax, const float *wmax,
                     const float *sample, int64_t m);
/* W [rows, n] of a linear of group g <- (W diag(s)) T. Not collective. */
void qz_rot_duq_fuse(qz_rot *r, int g, float *w, int64_t rows);
/* The arrays a checkpoint stores for group g: i = 0 smooth [n, 1], 1 perm
 * [n, 1] (channel indices as f32, exact below 2^24), 2 r1 [n, b], 3 r2 [n, b]
 * (block k: rows k b.. (k+1) b - 1, a b x b matrix), 4 amax [n, 1], 5 wmax
 * [n, 1]; name "duquant.<group>.<array>". Returns the array (writable, to
 * read a checkpoint into), NULL past the end. Not collective. */
#define QZ_DUQ_ARRAYS 6
float *qz_rot_duq_array(qz_rot *r, int g, int i, char *name, size_t len, int64_t *n0,
                        int64_t *n1);
/* After the arrays were filled from a checkpoint: group g applies to block
 * `layer` (its permutation is checked: QZ_ERR_FORMAT when not one).
 * Not collective. */
int qz_rot_duq_loaded(qz_rot *r, int layer, int g);

#ifdef __cplusplus
}
#endif
#endif
