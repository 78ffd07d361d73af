/* Export of a checkpoint to Hugging Face layouts. */
#ifndef MPIQUANT_EXPORT_H
#define MPIQUANT_EXPORT_H

#include <mpi.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Pack codes [nvec, len] (each vector = one bitstream of len*bits bits,
 * least significant bit first, 32-bit little-endian words) transposed into
 * words [len*bits/32, nvec]: the GPTQ v1 qweight layout when vectors are
 * output channels (len = in), and the qzeros layout when the roles swap.
 * len*bits must be a multiple of 32. Not collective. */
void qz_gptq_pack(int bits, int64_t nvec, int64_t len,
                  const uint8_t *codes /* [nvec, len] */,
                  int32_t *words /* [len*bits/32, nvec] */);

typedef struct {
  const char *ckpt_dir;
  const char *model_dir;      /* NULL: the one recorded in the checkpoint */
  const char *out_dir;
  int64_t max_shard_bytes;    /* 0: 4 GiB */
  const char *format;         /* "gptq" (NULL: gptq) or "compressed-tensors" */
  int overwrite;              /* replace a previous export in out_dir */
  /* appended: checkpoint 'method' attributes the format accepts, NULL-
   * terminated (the methods' tables decide; NULL: any) */
  const char *const *methods;
} qz_export_opts;

/* Checkpoint -> Hugging Face model directory in o->format:
 *  gptq: GPTQ v1 safetensors (qweight int32 [in*bits/32, out], qzeros int32
 *    [groups, out*bits/32] holding zero-1, scales f16 [groups, out], g_idx
 *    i32 [in]) + quantization_config (quant_method gptq) and
 *    quantize_config.json;
 *  compressed-tensors: int-quantized (weight i8 [out, in], weight_scale f32
 *    [out, 1]) + quantization_config (quant_method compressed-tensors, int8
 *    per-channel weights, dynamic per-token int8 activations when the
 *    checkpoint expects them: SmoothQuant, GPTQ/RTN --act-bits 8) for 8-bit
 *    symmetric per-channel checkpoints; pack-quantized (weight_packed,
 *    weight_scale, weight_zero_point, weight_g_idx, weight_shape) for every
 *    other weight-only 2..8-bit checkpoint.
 * gptq refuses checkpoints that expect activation quantization (act_bits).
 * A source model stored quantized (FP8, compressed-tensors, GPTQ v1) has its
 * quantization parts dropped: the export writes the checkpoint's linears.
 * Both: RMSNorm weights with folded scales from the checkpoint (f32), other
 * tensors copied in their source dtype, tokenizer files copied. Streams one
 * linear at a time (rank 0 writes). Collective on comm. */
int qz_export(MPI_Comm comm, const qz_export_opts *o);

#ifdef __cplusplus
}
#endif
#endif
