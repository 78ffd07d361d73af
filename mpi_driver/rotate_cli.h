/* mpi_driver private: the rotation options of quantize and the rotation a
 * checkpoint records (rotate_cli.c; the math is linalg/rotate.c). */
#ifndef MPIQUANT_ROTATE_CLI_H
#define MPIQUANT_ROTATE_CLI_H

#include <stdio.h>

#include <jansson.h>

#include "driver.h"
#include "mpiquant/ckpt.h"
#include "mpiquant/method.h"
#include "mpiquant/rotate.h"

/* --help lines of the rotation options. Not collective. */
void qz_rotcli_usage(FILE *out);
/* Option --name with value val (NULL for --act-asym) into p; *given = 1.
 * QZ_ERR_USAGE naming the option. Not collective. */
int qz_rotcli_option(const char *name, const char *val, qz_rot_params *p, int *given);
/* 1 when --name is one of the options above (*has_value: it takes a
 * value), else 0: a sweep variant may carry them. Not collective. */
int qz_rotcli_is_option(const char *name, int *has_value);
/* Cross-checks with the method's options (act_bits from its --act-bits row).
 * Not collective. */
int qz_rotcli_finish(const qz_method_opts *mo, unsigned needs, qz_rot_params *p, int given,
                     int duq_given);
/* options JSON "rotate": {kind, seed, kv_bits, act_asym, act_clip} when
 * any rotation option was given (else nothing: old identities stay). */
void qz_rotcli_json(const qz_rot_params *p, int given, json_t *j);
/* The rotation of checkpoint ck (NULL *out when it records none); a
 * rotated checkpoint must be complete. Not collective (the manifest is the
 * same on every rank; errors agree). */
int qz_rotcli_from_ckpt(qz_ckpt *ck, const qz_model_config *cfg, qz_rot **out);

/* DuQuant: block `layer`'s transforms from the checkpoint's aux data into
 * rot (nothing for other kinds). Collective on the checkpoint's comm. */
int qz_rotcli_load_block(qz_ckpt *ck, int layer, qz_rot *rot);
/* Hadamard: the first rows of the rotations into block `layer`'s aux data
 * (eval checks block 0's). Collective. */
int qz_rotcli_write_probes(qz_ckpt *ck, int layer, qz_rot *rot);
/* DuQuant: group g's transform of block `layer` into the checkpoint's aux
 * data (rank 0's values). Collective. */
int qz_rotcli_write_group(qz_ckpt *ck, int layer, int g, qz_rot *rot);

#endif
