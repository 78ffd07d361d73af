/* mpi_driver private: a method's option rows (method.h) on a command line.
 * Every command that takes a method (quantize, layer, plan, sweep) parses,
 * documents, validates and records its options through these, so a new
 * method's options reach them with no edit here. */
#ifndef MPIQUANT_METHOD_CLI_H
#define MPIQUANT_METHOD_CLI_H

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>

#include "mpiquant/method.h"

/* getopt_long values of method rows: QZ_MCLI_VAL + row index. */
#define QZ_MCLI_VAL 1000

/* The value of --method NAME / --method=NAME in argv, else `def`.
 * Not collective. */
const char *qz_mcli_method_arg(int argc, char **argv, const char *def);

/* The registered method `name` (QZ_ERR_USAGE listing the methods when
 * unknown); *o gets its defaults. Not collective. */
int qz_mcli_method(const char *cmd, const char *name, const qz_method_ops **ops,
                   qz_method_opts *o);

/* `base` (NULL-terminated, its vals < QZ_MCLI_VAL) followed by the long
 * options of every row of o->ops; free() the result. Not collective. */
int qz_mcli_longopts(const struct option *base, const qz_method_opts *o,
                     struct option **out);

/* A getopt_long result c >= QZ_MCLI_VAL: set that row from optarg. */
int qz_mcli_handle(const char *cmd, qz_method_opts *o, int c, const char *arg);

/* An option getopt did not take (`arg` as on the command line): names the
 * method it belongs to when it is another method's. Always fails. */
int qz_mcli_unknown(const char *cmd, const qz_method_opts *o, const char *arg);

/* After parsing: the method's cross-option rules and fixed values. */
int qz_mcli_finish(const char *cmd, qz_method_opts *o);

/* --help lines: "--method M" with the listed methods (and its default when
 * given), the common rows, then every listed method's own rows. */
void qz_mcli_usage(FILE *f, const char *method_default);

/* Every row of o->ops with a JSON key: the common ones at the top of j,
 * the method's under ops->json_group (or at the top). */
void qz_mcli_json(const qz_method_opts *o, json_t *j);

#endif
