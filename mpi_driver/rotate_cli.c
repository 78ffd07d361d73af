/* Rotation options of quantize (--rotate, --rotate-seed, --kv-bits,
 * --act-asym, --act-clip), their record in the options JSON ("rotate"
 * object) and the rotation of a checkpoint at evaluation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mpiquant/error.h"
#include "mpiquant/log.h"
#include "rotate_cli.h"

void qz_rotcli_usage(FILE *out) {
  fprintf(out,
          "  --rotate R           none (default) or hadamard: QuaRot-style rotations\n"
          "                       (norms folded, R1 on the residual stream, R2 per\n"
          "                       head on v/o, R4 online before down_proj, R3 on q/k\n"
          "                       after RoPE with --kv-bits); the method quantizes the\n"
          "                       rotated weights (--method none: no quantization)\n"
          "  --rotate-seed S      seed of the random signs (default 0)\n"
          "  --kv-bits K          evaluate keys/values quantized per token and head\n"
          "                       (asymmetric, K bits; default 0 = off)\n"
          "  --act-asym           --act-bits quantizes activations asymmetrically\n"
          "                       (min/max per token; default symmetric)\n"
          "  --act-clip R         --act-bits clips each token's range to R times its\n"
          "                       max (0 < R <= 1, default 1)\n");
}

int qz_rotcli_option(const char *name, const char *val, qz_rot_params *p, int *given) {
  long v = 0;
  if (strcmp(name, "rotate") == 0) {
    int k = qz_rot_kind_find(val);
    QZ_CHECK(k >= 0, QZ_ERR_USAGE, "--rotate '%s': one of none, hadamard", val);
    p->kind = k;
  } else if (strcmp(name, "rotate-seed") == 0) {
    QZ_CALL(qz_cli_int("--rotate-seed", val, 0, 1L << 62, &v));
    p->seed = (uint64_t)v;
  } else if (strcmp(name, "kv-bits") == 0) {
    QZ_CALL(qz_cli_int("--kv-bits", val, 2, 16, &v));
    p->kv_bits = (int)v;
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

int qz_rotcli_finish(const qz_method_opts *mo, unsigned needs, qz_rot_params *p, int given) {
  int row = qz_method_row_find(mo->ops, "act-bits");
  p->act_bits = row >= 0 ? (int)qz_method_opt_value(mo, row) : 0;
  if (!given) return QZ_OK;
  QZ_CHECK(p->act_bits || (!p->act_asym && p->act_clip == 1.0), QZ_ERR_USAGE,
           "--act-asym and --act-clip shape the activation quantizer of --act-bits A "
           "(methods gptq, rtn)");
  QZ_CHECK(p->kind == QZ_ROT_NONE || !(needs & QZ_CKPT_NORMS), QZ_ERR_USAGE,
           "--rotate with --method %s: a method that folds scales into the norms does "
           "not combine with rotations (the norms are folded into the linears)",
           mo->ops->name);
  return QZ_OK;
}

void qz_rotcli_json(const qz_rot_params *p, int given, json_t *j) {
  if (!given) return; /* checkpoints without rotations keep their options */
  json_object_set_new(j, "rotate",
                      json_pack("{s:s, s:I, s:i, s:b, s:f}", "kind", qz_rot_kind_name(p->kind),
                                "seed", (json_int_t)p->seed, "kv_bits", p->kv_bits,
                                "act_asym", p->act_asym, "act_clip", p->act_clip));
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
  QZ_CHECK_DONE(p.kind >= 0, QZ_ERR_FORMAT,
                "checkpoint %s: options.rotate.kind '%s' is not a rotation this version "
                "knows", qz_ckpt_dir(ck), kind ? kind : "(missing)");
  if (p.kind != QZ_ROT_NONE)
    QZ_CHECK_DONE(qz_ckpt_first_missing(ck) >= qz_ckpt_nblocks(ck), QZ_ERR_ARG,
                  "checkpoint %s is rotated but block %d is missing: a rotated model "
                  "needs every block (finish it with quantize --resume)",
                  qz_ckpt_dir(ck), qz_ckpt_first_missing(ck));
  QZ_CALL_DONE(qz_rot_create(cfg, &p, out));
done:
  json_decref(j);
  return st;
}
