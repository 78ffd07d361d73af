/* mpi_driver private interface: the command table and its context. */
#ifndef MPIQUANT_DRIVER_H
#define MPIQUANT_DRIVER_H

#include <mpi.h>
#include <stdio.h>

typedef struct {
  MPI_Comm comm; /* dup of MPI_COMM_WORLD with MPI_ERRORS_RETURN */
  int rank, size;
  int log_view;  /* print the phase table at the end */
  double t_start;
} qz_ctx;

/* A subcommand: parses its own options (argv[0] is the command name) and
 * runs. Collective on ctx->comm. Returns a qz_status. */
typedef int (*qz_cmd_fn)(qz_ctx *ctx, int argc, char **argv);

typedef struct {
  const char *name;
  const char *summary;
  qz_cmd_fn run;
} qz_command;

/* The table, NULL-terminated. */
extern const qz_command qz_commands[];
const qz_command *qz_command_find(const char *name);

/* Top-level usage, and the versions of everything we run with. */
void qz_print_usage(FILE *out);
void qz_print_version(FILE *out);

/* Helper for commands that are not built yet: prints nothing, returns
 * QZ_ERR_NOT_IMPLEMENTED with a message naming the command. */
int qz_cmd_not_implemented(const char *name, int argc, char **argv);

/* True if argv has -h/--help (commands print their usage and return). */
int qz_cli_wants_help(int argc, char **argv);

/* Parse helpers with a clear error naming the option. Not collective. */
int qz_cli_int(const char *opt, const char *val, long lo, long hi, long *out);
int qz_cli_double(const char *opt, const char *val, double lo, double hi,
                  double *out);

/* inspect of a checkpoint directory (rank 0 only). Not collective. */
int qz_inspect_ckpt(const char *dir, int as_json);

int qz_cmd_quantize(qz_ctx *ctx, int argc, char **argv);
int qz_cmd_eval(qz_ctx *ctx, int argc, char **argv);
int qz_cmd_export(qz_ctx *ctx, int argc, char **argv);
int qz_cmd_sweep(qz_ctx *ctx, int argc, char **argv);
int qz_cmd_plan(qz_ctx *ctx, int argc, char **argv);
int qz_cmd_inspect(qz_ctx *ctx, int argc, char **argv);
int qz_cmd_layer(qz_ctx *ctx, int argc, char **argv);
int qz_cmd_tokenize(qz_ctx *ctx, int argc, char **argv);
int qz_cmd_synth(qz_ctx *ctx, int argc, char **argv);
int qz_cmd_verify(qz_ctx *ctx, int argc, char **argv);

#endif
