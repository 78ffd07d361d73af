/* eval --model: activation quantization declared by an FP8 model's
 * quantization_config (mpi_driver/model_act.c). */
#ifndef MPIQUANT_DRIVER_MODEL_ACT_H
#define MPIQUANT_DRIVER_MODEL_ACT_H

#include "mpiquant/forward.h"
#include "mpiquant/model.h"

/* The linear-input hook for m's FP8 activations (h->fn NULL when the model
 * declares none); static scales are read from its input_scale tensors
 * (QZ_ERR_FORMAT naming a missing or bad one). Not collective: every rank
 * builds its own from the files it has open. */
int qz_model_fp8_act_hook(qz_model *m, qz_act_hook *h);
void qz_model_fp8_act_free(qz_act_hook *h); /* accepts an empty hook */

#endif
