/* mpi_driver private: the eval command as a library call (for sweep). */
#ifndef MPIQUANT_CMD_EVAL_H
#define MPIQUANT_CMD_EVAL_H

#include "driver.h"
#include "mpiquant/forward.h"

/* `mpiquant eval` with the same argv (argv[0] = "eval"), but nothing is
 * printed on stdout (log lines still go to stderr) and the result is
 * returned in *res on every rank. Collective on ctx->comm. */
int qz_eval_run(qz_ctx *ctx, int argc, char **argv, qz_eval_result *res);

/* The same for `eval --task ...`: the task results on every rank (free
 * with qz_task_results_free). Collective on ctx->comm. */
struct qz_task_results;
int qz_eval_task_run(qz_ctx *ctx, int argc, char **argv, struct qz_task_results *res);

#endif
