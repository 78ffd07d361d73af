/* safetensors reader (single file or sharded via model.safetensors.index.json)
 * and writer.  Contract shared by io (implements) and shard/linalg/methods/
 * mpi_driver (use).  Files are mmapped; nothing copies a whole file. */
#ifndef MPIQUANT_SAFETENSORS_H
#define MPIQUANT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Append-only. */
typedef enum {
  QZ_DT_F64 = 0,
  QZ_DT_F32,
  QZ_DT_F16,
  QZ_DT_BF16,
  QZ_DT_I64,
  QZ_DT_I32,
  QZ_DT_I16,
  QZ_DT_I8,
  QZ_DT_U8,
  QZ_DT_BOOL,
  QZ_DT_U16,
  QZ_DT_U32,
  QZ_DT_U64,
  QZ_DT_F8_E4M3, /* converted only as a scaled weight (qz_st_weight_shape) */
  QZ_DT_F8_E5M2,
  QZ_DT_COUNT
} qz_dtype;

const char *qz_dtype_name(qz_dtype dt);   /* "F32", "BF16", ... */
int qz_dtype_size(qz_dtype dt);           /* bytes per element */
int qz_dtype_is_float(qz_dtype dt);       /* convertible to f32 */
/* "BF16" -> QZ_DT_BF16; returns 0 for an unknown name. Not collective. */
int qz_dtype_from_name(const char *name, qz_dtype *out);

/* Exact half-precision conversions (subnormals, inf, nan kept); the f32 ->
 * half direction rounds to nearest, ties to even. Not collective. */
float qz_bf16_to_f32(uint16_t h);
float qz_f16_to_f32(uint16_t h);
uint16_t qz_f32_to_bf16(float f);
uint16_t qz_f32_to_f16(float f);

#define QZ_ST_MAX_DIMS 8

typedef struct {
  const char *name;  /* tensor name */
  const char *file;  /* path of the file holding it */
  qz_dtype dtype;
  int ndim;
  int64_t shape[QZ_ST_MAX_DIMS];
  int64_t nelem;     /* product of shape (1 for a scalar) */
  int64_t nbytes;    /* nelem * dtype size */
} qz_tensor_info;

typedef struct qz_st qz_st;

/* Open `path`: a .safetensors file, a model.safetensors.index.json, or a
 * directory holding model.safetensors or model.safetensors.index.json.
 * Validates every header completely (offsets, sizes, dtypes, coverage).
 * Not collective: each rank may open; data pages are touched only when read. */
int qz_st_open(const char *path, qz_st **out);
void qz_st_close(qz_st **st); /* accepts NULL, NULLs the pointer */
/* Parse a whole safetensors file image held in memory (not copied: buf must
 * outlive the handle); `origin` names it in messages. Not collective. */
int qz_st_open_memory(const void *buf, size_t len, const char *origin,
                      qz_st **out);

int qz_st_count(const qz_st *st);                         /* tensors */
const qz_tensor_info *qz_st_info_at(const qz_st *st, int i); /* sorted by name */
const qz_tensor_info *qz_st_find(const qz_st *st, const char *name); /* NULL if absent */
/* Like find, but a missing tensor is an error naming the file(s). */
int qz_st_get(const qz_st *st, const char *name, const qz_tensor_info **out);

/* Zero-copy view of the raw little-endian bytes of a tensor. */
int qz_st_data(const qz_st *st, const char *name, const void **data);

/* Rows [row0, row0 + nrows) along dim 0 (a row = product of the other dims;
 * a 1-D tensor has rows of one element) converted from any float dtype
 * (F64/F32/F16/BF16) to f32 into dst. A compressed-tensors int-quantized
 * weight (I8 [out, in] `X` with a float `X_scale` of out elements) reads as
 * its dequantized value q * scale[row]. Not collective. */
int qz_st_read_f32(qz_st *st, const char *name, int64_t row0, int64_t nrows,
                   float *dst);
/* The dtype of `name` when it is a plain 16-bit float tensor (BF16 or F16
 * stored as is, no scale or packing): such a tensor can travel in its
 * on-disk 2 bytes per element and be widened where it is used; -1 for
 * anything else (absent, F32, F8, I8, packed). Not collective. */
int qz_st_raw16_dtype(const qz_st *st, const char *name);
/* Rows [row0, row0 + nrows) of such a tensor as stored (no conversion) into
 * dst [nrows * rowlen] 16-bit values; counted as file bytes read like
 * qz_st_read_f32. QZ_ERR_ARG for a tensor that is not plain BF16/F16 or rows
 * out of range. Not collective. */
int qz_st_read_raw16(qz_st *st, const char *name, int64_t row0, int64_t nrows,
                     uint16_t *dst);
/* n BF16/F16 values (dt) at src (any alignment) to f32 at dst, which must
 * not overlap src; the values qz_st_read_f32 gives, at any thread count.
 * Not collective. */
void qz_raw16_to_f32(int dt, const void *src, int64_t n, float *dst);
/* Widen n BF16/F16 values (dt) held at the start of buf to n f32 in the same
 * buffer (buf has room for n floats): the values qz_st_read_f32 would give,
 * bit for bit, at any thread count. Not collective. */
void qz_raw16_widen_inplace(int dt, void *buf, int64_t n);
/* A GPTQ v1 linear "P.weight" absent from the files but stored as
 * P.qweight / P.qzeros / P.scales / P.g_idx reads (qz_st_read_f32) as its
 * dequantized rows scales[g,o] * (q - (zero + 1)); this gives its shape and
 * bits (from the shapes). QZ_ERR_FORMAT naming the tensor when absent or
 * malformed. Not collective. */
int qz_st_gptq_shape(const qz_st *st, const char *name, int64_t *out, int64_t *in,
                     int *bits);
/* Rows and row length of `name`, real or GPTQ-virtual. Not collective. */
int qz_st_rows(const qz_st *st, const char *name, int64_t *rows, int64_t *rowlen);
/* 1 when `name` is an I8 [out, in] tensor with a float `name_scale` of out
 * elements (read by qz_st_read_f32 as q * scale). Not collective. */
int qz_st_is_int8_scaled(const qz_st *st, const char *name);

/* What the tensors of a quantized model do not say by themselves, from its
 * config.json quantization_config (io/config.c fills a qz_model_config; the
 * model loader passes it on). Zeroed: derive from the shapes. */
typedef struct {
  int packed_bits;   /* compressed-tensors pack-quantized num_bits (0: 2/4/8 from shapes) */
  int64_t block[2];  /* FP8 block of a 2-D weight scale, rows x cols (0: 128 x 128) */
} qz_st_quant;
/* Not collective. */
void qz_st_set_quant(qz_st *st, const qz_st_quant *q);

/* Stored-quantized linear weights qz_st_read_f32 dequantizes on read (every
 * kind is checked completely: dtypes, shapes, scale layout; QZ_ERR_FORMAT
 * naming the tensor and what was expected):
 *  - FP8 "X" (F8_E4M3 / F8_E5M2, 2-D [out, in]) with a float "X_scale" that
 *    is per tensor ([] or [1]), per output channel ([out] or [out, 1]) or per
 *    block ([ceil(out/br), ceil(in/bc)], compressed-tensors float-quantized
 *    block strategy), or a DeepSeek-V3 block "X_scale_inv"
 *    [ceil(out/br), ceil(in/bc)]: w = fp8(X) * scale (the _inv scale is also
 *    a multiplier, as in DeepSeek's own dequantization);
 *  - compressed-tensors pack-quantized "P.weight" absent, stored as
 *    P.weight_packed I32 [out, ceil(in / (32/bits))] (unsigned codes, value k
 *    of a word at bits [k*bits, (k+1)*bits)), P.weight_shape I32/I64 [2] =
 *    {out, in}, P.weight_scale float [out, ngroups], optional
 *    P.weight_zero_point I32 [ceil(out / (32/bits)), ngroups] (packed along
 *    the output dim; absent: symmetric, zero 2^(bits-1)) and optional
 *    P.weight_g_idx I32 [in] (act-order): w = (q - z) * scale[o, g];
 *  - GPTQ v1 and compressed-tensors int-quantized (below).
 * The logical [out, in] shape of `name` (stored or virtual), validating its
 * parts; `kind` (may be NULL) receives "float", "int8", "fp8", "packed" or
 * "gptq". Not collective. */
int qz_st_weight_shape(const qz_st *st, const char *name, int64_t *out, int64_t *in,
                       const char **kind);

/* Bytes of tensor data converted/copied out so far (for "read once" checks). */
int64_t qz_st_bytes_read(const qz_st *st);

/* __metadata__ (of the first file for a sharded set). */
const char *qz_st_metadata(const qz_st *st, const char *key); /* NULL if absent */
int qz_st_metadata_count(const qz_st *st);
void qz_st_metadata_at(const qz_st *st, int i, const char **key,
                       const char **value);
int qz_st_nfiles(const qz_st *st); /* shard files */
const char *qz_st_file_at(const qz_st *st, int i); /* path of shard i */
const char *qz_st_origin(const qz_st *st);        /* the path given to open */

/* Writer: tensors are appended (data spilled to a temporary file, not kept in
 * memory); finish writes the header sorted by name, 8-byte aligned, then the
 * data, to PATH.tmp and renames it to PATH. Not collective. */
typedef struct qz_st_writer qz_st_writer;
int qz_st_writer_create(const char *path, qz_st_writer **out);
int qz_st_writer_meta(qz_st_writer *w, const char *key, const char *value);
int qz_st_writer_add(qz_st_writer *w, const char *name, qz_dtype dt, int ndim,
                     const int64_t *shape, const void *data);
int qz_st_writer_finish(qz_st_writer **w); /* frees *w in all cases */

/* A sharded safetensors model written tensor by tensor in `dir`: a new
 * shard starts when the current one would pass max_bytes (0: 4 GiB); files
 * are DIR/<tmp_prefix>-part-NNNNN.safetensors until finish renames them to
 * model.safetensors (one shard, unless always_index) or
 * model-0000k-of-0000n.safetensors + model.safetensors.index.json (the
 * Hugging Face names). Not collective. */
typedef struct qz_st_shards qz_st_shards;
int qz_st_shards_create(const char *dir, const char *tmp_prefix, int64_t max_bytes,
                        int always_index, qz_st_shards **out);
int qz_st_shards_add(qz_st_shards *s, const char *name, qz_dtype dt, int nd,
                     const int64_t *shape, const void *data, int64_t bytes);
int qz_st_shards_count(const qz_st_shards *s);
int64_t qz_st_shards_bytes(const qz_st_shards *s);
/* Rename to the final names (+ index); frees *s in all cases. */
int qz_st_shards_finish(qz_st_shards **s);
/* Drop an unfinished set (its temporary files stay); accepts NULL. */
void qz_st_shards_abort(qz_st_shards **s);
/* Copy a file; a missing source is an error only when `required`. */
int qz_copy_file(const char *from, const char *to, int required);
void qz_st_writer_abort(qz_st_writer **w);  /* removes temporaries */

#ifdef __cplusplus
}
#endif
#endif
