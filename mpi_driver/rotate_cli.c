/* Rotation options of quantize (--rotate, --rotate-seed, --kv-bits,
 * --act-asym, --act-clip), their record in the options JSON ("rotate"
 * object) and the rotation of a checkpoint at evaluation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"
#include "rotate_cli.h"

static int check_probes(qz_ckpt *ck, qz_rot *rot);

void qz_rotcli_usage(FILE *out) {
  fprintf(out,
          "  --rotate R           none (default), hadamard: QuaRot-style rotations\n"
          "                       (norms folded, R1 on the residual stream, R2 per\n"
          "                       head on v/o, R4 online before down_proj, R3 on q/k\n"
          "                       after RoPE with --kv-bits), or duquant: per linear\n"
          "                       input smoothing + block rotations + zigzag\n"
          "                       permutation + rotation from the calibration data;\n"
          "                       the method quantizes the transformed weights\n"
          "                       (--method none: no quantization)\n"
          "  --rotate-seed S      hadamard: seed of the random signs (default 0)\n"
          "  --block B            duquant: rotation block, a power of two (default 128;\n"
          "                       per input the largest power of two <= B dividing it)\n"
          "  --perm P             duquant: zigzag (default) or none\n"
          "  --smooth A           duquant: smoothing exponent alpha in [0, 1] (default\n"
          "                       0.5; 0 = no smoothing)\n"
          "  --kv-bits K          evaluate keys/values quantized per token and head\n"
          "                       (asymmetric, K bits; default 0 = off)\n"
          "  --kv-clip R          --kv-bits clips each range to R times its min/max\n"
          "                       (0 < R <= 1, default 1; QuaRot's paper uses 0.95)\n"
          "  --act-asym           --act-bits quantizes activations asymmetrically\n"
          "                       (min/max per token; default symmetric)\n"
          "  --act-clip R         --act-bits clips each token's range to R times its\n"
          "                       max (0 < R <= 1, default 1)\n"
          "  --act-groups LIST    --act-bits quantizes only these linear inputs: a comma\n"
          "                       list of qkv, o, gateup, down (default all; the head's\n"
          "                       input is never quantized)\n");
}

int qz_rotcli_is_option(const char *name, int *has_value) {
  static const char *const with_value[] = {"rotate", "rotate-seed", "kv-bits", "act-clip",
                                           "block",  "perm",        "smooth",  "act-groups",
                                           "kv-clip", NULL};
  *has_value = 0;
  if (strcmp(name, "act-asym") == 0) return 1;
  for (int i = 0; with_value[i]; i++)
    if (strcmp(name, with_value[i]) == 0) return *has_value = 1;
  return 0;
}

/* "qkv,down" -> bits of qz_duq_group_of; all four -> 0 (the default). */
static int parse_groups(const char *val, unsigned *mask) {
  unsigned m = 0;
  for (const char *s = val; *s;) {
    size_t n = strcspn(s, ",");
    int hit = -1;
    for (int g = 0; g < QZ_DUQ_GROUPS; g++) {
      const char *gn = qz_duq_group_name(g);
      if (n == strlen(gn) && strncmp(s, gn, n) == 0) hit = g;
    }
    QZ_CHECK(hit >= 0, QZ_ERR_USAGE, "--act-groups '%s': a comma list of qkv, o, gateup, down",
             val);
    m |= 1u << hit;
    s += n + (s[n] == ',');
  }
  QZ_CHECK(m, QZ_ERR_USAGE, "--act-groups '%s': a comma list of qkv, o, gateup, down", val);
  *mask = m == (1u << QZ_DUQ_GROUPS) - 1u ? 0u : m;
  return QZ_OK;
}

int qz_rotcli_option(const char *name, const char *val, qz_rot_params *p, int *given) {
  long v = 0;
  if (strcmp(name, "rotate") == 0) {
    int k = qz_rot_kind_find(val);
    QZ_CHECK(k >= 0, QZ_ERR_USAGE, "--rotate '%s': one of none, hadamard, duquant", val);
    p->kind = k;
  } else if (strcmp(name, "rotate-seed") == 0) {
    QZ_CALL(qz_cli_int("--rotate-seed", val, 0, 1L << 62, &v));
    p->seed = (uint64_t)v;
  } else if (strcmp(name, "kv-bits") == 0) {
    QZ_CALL(qz_cli_int("--kv-bits", val, 2, 16, &v));
    p->kv_bits = (int)v;
  } else if (strcmp(name, "block") == 0) {
    QZ_CALL(qz_cli_int("--block", val, 1, 4096, &v));
    QZ_CHECK((v & (v - 1)) == 0, QZ_ERR_USAGE, "--block %ld: a power of two", v);
    p->block = (int)v;
  } else if (strcmp(name, "perm") == 0) {
    QZ_CHECK(strcmp(val, "zigzag") == 0 || strcmp(val, "none") == 0, QZ_ERR_USAGE,
             "--perm '%s': zigzag or none", val);
    p->perm = strcmp(val, "zigzag") == 0;
  } else if (strcmp(name, "smooth") == 0) {
    char *end = NULL;
    double a = strtod(val, &end);
    QZ_CHECK(end && *end == '\0' && a >= 0 && a <= 1, QZ_ERR_USAGE,
             "--smooth '%s': alpha in [0, 1]", val);
    p->smooth = a;
  } else if (strcmp(name, "kv-clip") == 0) {
    char *end = NULL;
    double c = strtod(val, &end);
    QZ_CHECK(end && *end == '\0' && c > 0 && c <= 1, QZ_ERR_USAGE,
             "--kv-clip '%s': a ratio in (0, 1]", val);
    p->kv_clip = c;
  } else if (strcmp(name, "act-groups") == 0) {
    QZ_CALL(parse_groups(val, &p->act_groups));
  } else if (strcmp(name, "act-asym") == 0) {
    p->act_asym = 1;
  } else if (strcmp(name, "act-clip") == 0) {
    char *end = NULL;
    double c = strtod(val, &end);
    QZ_CHECK(end && *end == '\0' && c > 0 && c <= 1, QZ_ERR_USAGE,
             "--act-clip '%s': a ratio in (0, 1]", val);
    p->act_clip = c;
  } else {
    QZ_FAIL(QZ_ERR_INTERNAL, "rotation option %s", name);
  }
  *given = 1;
  return QZ_OK;
}

int qz_rotcli_finish(const qz_method_opts *mo, unsigned needs, qz_rot_params *p, int given,
                     int duq_given) {
  int row = qz_method_row_find(mo->ops, "act-bits");
  p->act_bits = row >= 0 ? (int)qz_method_opt_value(mo, row) : 0;
  QZ_CHECK(!duq_given || p->kind == QZ_ROT_DUQUANT, QZ_ERR_USAGE,
           "--block, --perm and --smooth are options of --rotate duquant");
  if (!given) return QZ_OK;
  p->o_heads = p->kind == QZ_ROT_HADAMARD; /* QuaRot's full rotation of the o input */
  QZ_CHECK(p->kind != QZ_ROT_DUQUANT || !mo->ops->quantize_block, QZ_ERR_USAGE,
           "--rotate duquant with --method %s: DuQuant builds its transforms in the "
           "true-sequential block, which this method replaces", mo->ops->name);
  QZ_CHECK(p->kv_bits || !p->kv_clip, QZ_ERR_USAGE,
           "--kv-clip shapes the KV-cache quantizer of --kv-bits K");
  QZ_CHECK(p->act_bits || (!p->act_asym && p->act_clip == 1.0 && !p->act_groups), QZ_ERR_USAGE,
           "--act-asym, --act-clip and --act-groups shape the activation quantizer of --act-bits A "
           "(methods gptq, rtn)");
  QZ_CHECK(p->kind == QZ_ROT_NONE || !(needs & QZ_CKPT_NORMS), QZ_ERR_USAGE,
           "--rotate with --method %s: a method that folds scales into the norms does "
           "not combine with rotations (the norms are folded into the linears)",
           mo->ops->name);
  return QZ_OK;
}

void qz_rotcli_json(const qz_rot_params *p, int given, json_t *j) {
  if (!given) return; /* checkpoints without rotations keep their options */
  json_t *r = json_pack("{s:s, s:I, s:i, s:b, s:f}", "kind", qz_rot_kind_name(p->kind),
                        "seed", (json_int_t)p->seed, "kv_bits", p->kv_bits, "act_asym",
                        p->act_asym, "act_clip", p->act_clip);
  if (p->o_heads) json_object_set_new(r, "o_heads", json_true());
  if (p->kv_clip > 0 && p->kv_clip != 1.0) json_object_set_new(r, "kv_clip", json_real(p->kv_clip));
  if (p->act_groups) { /* only when not all: older checkpoints keep their options */
    json_t *a = json_array();
    for (int g = 0; g < QZ_DUQ_GROUPS; g++)
      if ((p->act_groups >> g) & 1u) json_array_append_new(a, json_string(qz_duq_group_name(g)));
    json_object_set_new(r, "act_groups", a);
  }
  if (p->kind == QZ_ROT_DUQUANT) {
    json_object_set_new(r, "block", json_integer(p->block));
    json_object_set_new(r, "perm", json_string(p->perm ? "zigzag" : "none"));
    json_object_set_new(r, "smooth", json_real(p->smooth));
  }
  json_object_set_new(j, "rotate", r);
}

int qz_rotcli_from_ckpt(qz_ckpt *ck, const qz_model_config *cfg, qz_rot **out) {
  *out = NULL;
  json_t *j = json_loads(qz_ckpt_options_json(ck), 0, NULL);
  json_t *r = json_object_get(j, "rotate");
  int st = QZ_OK;
  if (!r) goto done;
  qz_rot_params p = {.act_clip = 1.0};
  const char *kind = json_string_value(json_object_get(r, "kind"));
  p.kind = kind ? qz_rot_kind_find(kind) : -1;
  p.seed = (uint64_t)json_integer_value(json_object_get(r, "seed"));
  p.kv_bits = (int)json_integer_value(json_object_get(r, "kv_bits"));
  p.act_asym = json_is_true(json_object_get(r, "act_asym"));
  p.act_clip = json_number_value(json_object_get(r, "act_clip"));
  p.act_bits = qz_ckpt_act_bits(ck);
  p.block = (int)json_integer_value(json_object_get(r, "block"));
  const char *perm = json_string_value(json_object_get(r, "perm"));
  p.perm = perm && strcmp(perm, "zigzag") == 0;
  p.smooth = json_number_value(json_object_get(r, "smooth"));
  p.o_heads = json_is_true(json_object_get(r, "o_heads"));
  p.kv_clip = json_number_value(json_object_get(r, "kv_clip")); /* absent: 0 = 1 */
  json_t *ag = json_object_get(r, "act_groups");
  for (size_t i = 0; i < json_array_size(ag); i++) {
    const char *gn = json_string_value(json_array_get(ag, i));
    int hit = -1;
    for (int g = 0; gn && g < QZ_DUQ_GROUPS; g++)
      if (strcmp(gn, qz_duq_group_name(g)) == 0) hit = g;
    QZ_CHECK_DONE(hit >= 0, QZ_ERR_FORMAT, "checkpoint %s: options.rotate.act_groups[%zu] "
                  "'%s' is not one of qkv, o, gateup, down", qz_ckpt_dir(ck), i,
                  gn ? gn : "(not a string)");
    p.act_groups |= 1u << hit;
  }
  QZ_CHECK_DONE(p.kind >= 0, QZ_ERR_FORMAT,
                "checkpoint %s: options.rotate.kind '%s' is not a rotation this version "
                "knows", qz_ckpt_dir(ck), kind ? kind : "(missing)");
  if (p.kind != QZ_ROT_NONE)
    QZ_CHECK_DONE(qz_ckpt_first_missing(ck) >= qz_ckpt_nblocks(ck), QZ_ERR_ARG,
                  "checkpoint %s is rotated but block %d is missing: a rotated model "
                  "needs every block (finish it with quantize --resume)",
                  qz_ckpt_dir(ck), qz_ckpt_first_missing(ck));
  QZ_CALL_DONE(qz_rot_create(cfg, &p, out));
  if (p.kind == QZ_ROT_HADAMARD) {
    st = check_probes(ck, *out);
    if (st) qz_rot_destroy(out);
  }
done:
  json_decref(j);
  return st;
}

int qz_rotcli_load_block(qz_ckpt *ck, int layer, qz_rot *rot) {
  if (!rot || qz_rot_params_of(rot)->kind != QZ_ROT_DUQUANT) return QZ_OK;
  for (int g = 0; g < QZ_DUQ_GROUPS; g++) {
    for (int i = 0; i < QZ_DUQ_ARRAYS; i++) {
      char name[64];
      int64_t n0, n1;
      float *v = qz_rot_duq_array(rot, g, i, name, sizeof name, &n0, &n1);
      int found = 0;
      QZ_CALL(qz_ckpt_read_aux(ck, layer, name, n0, n1, v, &found));
      QZ_CHECK(found, QZ_ERR_FORMAT, "checkpoint %s: block %d has no aux %s (a DuQuant "
               "checkpoint stores its transforms per block)", qz_ckpt_dir(ck), layer, name);
    }
    QZ_CALL(qz_rot_duq_loaded(rot, layer, g));
  }
  return QZ_OK;
}

static const char *const probe_names[5] = {"rotate.q1_row0", "rotate.r2_row0",
                                           "rotate.r3_row0", "rotate.r4_row0",
                                           "rotate.rh_row0"};

int qz_rotcli_write_probes(qz_ckpt *ck, int layer, qz_rot *rot) {
  int64_t n = 0;
  for (int i = 0; rot && qz_rot_probe(rot, i, NULL, &n); i++) {
    float *row = NULL;
    QZ_CALL(qz_alloc((size_t)n, sizeof *row, "rotation probe", &row));
    qz_rot_probe(rot, i, row, &n);
    int st = qz_ckpt_write_aux(ck, layer, probe_names[i], n, 1, row);
    qz_free(&row);
    QZ_CALL(st);
  }
  return QZ_OK;
}

/* Probe i of block 0 against this build's rotation. Collective. */
static int check_probe(qz_ckpt *ck, qz_rot *rot, int i, int64_t n) {
  float *want = NULL, *got = NULL;
  int found = 0, st = QZ_OK;
  QZ_CALL_DONE(qz_alloc((size_t)n, sizeof *want, "rotation probe", &want));
  QZ_CALL_DONE(qz_alloc((size_t)n, sizeof *got, "rotation probe", &got));
  QZ_CALL_DONE(qz_ckpt_read_aux(ck, 0, probe_names[i], n, 1, want, &found));
  QZ_CHECK_DONE(found, QZ_ERR_FORMAT, "checkpoint %s: block 0 has no aux %s (a Hadamard-"
                "rotated checkpoint records its rotations)", qz_ckpt_dir(ck), probe_names[i]);
  qz_rot_probe(rot, i, got, &n);
  double d = 0;
  for (int64_t j = 0; j < n; j++) d = fmax(d, fabs((double)want[j] - got[j]));
  QZ_CHECK_DONE(d <= 1e-6, QZ_ERR_FORMAT, "checkpoint %s: this build makes other rotations "
                "from its seed (%s differs by %.3g): it was made by an incompatible version",
                qz_ckpt_dir(ck), probe_names[i], d);
done:
  qz_free(&want);
  qz_free(&got);
  return st;
}

/* The rotations this build makes from the checkpoint's seed must be the
 * ones its weights were rotated with (block 0's probes). Collective. */
static int check_probes(qz_ckpt *ck, qz_rot *rot) {
  int64_t n = 0;
  for (int i = 0; qz_rot_probe(rot, i, NULL, &n); i++) QZ_CALL(check_probe(ck, rot, i, n));
  return QZ_OK;
}

int qz_rotcli_write_group(qz_ckpt *ck, int layer, int g, qz_rot *rot) {
  for (int i = 0; i < QZ_DUQ_ARRAYS; i++) {
    char name[64];
    int64_t n0, n1;
    float *v = qz_rot_duq_array(rot, g, i, name, sizeof name, &n0, &n1);
    QZ_CALL(qz_ckpt_write_aux(ck, layer, name, n0, n1, v));
  }
  return QZ_OK;
}
