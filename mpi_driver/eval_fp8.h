/* mpi_driver private: the activations of an FP8 export at evaluation. */
#ifndef MPIQUANT_EVAL_FP8_H
#define MPIQUANT_EVAL_FP8_H

#include "mpiquant/forward.h"
#include "mpiquant/model.h"

/* The linear-input hook of a compressed-tensors float-quantized model
 * whose config quantizes activations (cfg->fp8_act: 1 dynamic per token,
 * 2 static per tensor from each linear's `input_scale`): the same FP8
 * quantizers (mpiquant/fp8.h) as `eval --ckpt` of an fp8 checkpoint, so an
 * export evaluates like its checkpoint. Static: a fused group (q/k/v,
 * gate/up) uses the largest input_scale of its linears, as vLLM does.
 * Leaves h->fn NULL when activations are not quantized. Every rank reads
 * the 4 * num_hidden_layers scales (a few bytes each). Collective on the
 * model's communicator (errors agreed). */
int qz_eval_fp8_hook(qz_model *m, qz_act_hook *h);
void qz_eval_fp8_hook_free(qz_act_hook *h); /* accepts a zeroed hook */

#endif
