/* mpiquant main: the only place that turns an error into a message and an
 * exit status (or MPI_Abort when other ranks cannot be reached). */
#define _GNU_SOURCE
#include <malloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blas_auto.h"
#include "driver.h"
#include "mpiquant/blas.h"
#include "mpiquant/comm.h"
#include "mpiquant/error.h"
#include "mpiquant/grid.h"
#include "mpiquant/log.h"
#include "mpiquant/threads.h"
#include "mpiquant/timing.h"

typedef struct {
  int verbosity; /* QZ_LOG_* */
  int all_ranks;
  int log_view;
  int version;
  int help; /* --help before the command */
  int threads; /* --threads N; 0: not given */
} global_opts;

/* Remove the global options from argv (anywhere on the line, before "--"),
 * keeping --help when it follows the command (then it is the command's). */
static int strip_global_options(int *argc, char **argv, global_opts *g) {
  int out = 1, seen_cmd = 0, passthrough = 0;
  for (int i = 1; i < *argc; i++) {
    const char *a = argv[i];
    if (!passthrough) {
      if (strcmp(a, "--") == 0) passthrough = 1;
      else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) { g->verbosity++; continue; }
      else if (strcmp(a, "-vv") == 0) { g->verbosity += 2; continue; }
      else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) { g->verbosity = QZ_LOG_WARN; continue; }
      else if (strcmp(a, "--log-all-ranks") == 0) { g->all_ranks = 1; continue; }
      else if (strcmp(a, "--log-view") == 0) { g->log_view = 1; continue; }
      else if (strcmp(a, "--version") == 0) { g->version = 1; continue; }
      else if (strcmp(a, "--proc-grid") == 0 || strncmp(a, "--proc-grid=", 12) == 0) {
        const char *v = a[11] == '=' ? a + 12 : i + 1 < *argc ? argv[++i] : NULL;
        qz_grid_policy p;
        if (qz_grid_parse_policy("--proc-grid", v, &p) != QZ_OK) {
          qz_error_print(stderr, 0);
          return QZ_ERR_USAGE;
        }
        qz_grid_set_policy(p);
        continue;
      }
      /* before the command only: `plan --threads T` is plan's own option */
      else if (!seen_cmd && (strcmp(a, "--threads") == 0 || strncmp(a, "--threads=", 10) == 0)) {
        const char *v = a[9] == '=' ? a + 10 : i + 1 < *argc ? argv[++i] : NULL;
        long n = 0;
        if (!v || qz_cli_int("--threads", v, 1, QZ_THREADS_MAX, &n) != QZ_OK) {
          if (!v) fprintf(stderr, "mpiquant: --threads needs a number of threads per rank\n");
          else qz_error_print(stderr, 0);
          return QZ_ERR_USAGE;
        }
        g->threads = (int)n;
        continue;
      }
      else if (!seen_cmd && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)) { g->help = 1; continue; }
      else if (!seen_cmd && a[0] == '-') {
        fprintf(stderr, "mpiquant: unknown global option '%s' (see mpiquant --help)\n", a);
        return QZ_ERR_USAGE;
      }
      if (a[0] != '-') seen_cmd = 1;
    }
    argv[out++] = argv[i];
  }
  argv[out] = NULL;
  *argc = out;
  if (g->verbosity > QZ_LOG_TRACE) g->verbosity = QZ_LOG_TRACE;
  return QZ_OK;
}

/* Memory freed by one phase is reused by the next instead of being returned
 * to the OS and faulted in again (first touch is slow on some nodes; see the
 * docs). Same effect as GLIBC_TUNABLES mmap_max=0:trim_threshold=64G. */
static void malloc_defaults(void) {
  const char *e = getenv("MPIQUANT_MALLOC_DEFAULTS");
  if (e && strcmp(e, "0") == 0) return;
  if (getenv("GLIBC_TUNABLES")) return; /* the user chose */
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
}

/* BLAS threads: unless the user set them, cores of this rank's node divided
 * by the ranks on the node, never more than the cores this rank may run on. */
static int blas_thread_defaults(MPI_Comm comm) {
  if (getenv("OPENBLAS_NUM_THREADS") || getenv("GOTO_NUM_THREADS")) return QZ_OK;
  /* --threads N or OMP_NUM_THREADS=N (which OpenBLAS also reads): the
   * hybrid layout, BLAS uses the rank's N threads too */
  if (qz_threads_explicit()) {
    qz_blas_set_threads(qz_threads());
    return QZ_OK;
  }
  MPI_Comm node;
  int local = 1;
  QZ_CALL_MPI(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  MPI_Comm_size(node, &local);
  MPI_Comm_free(&node);
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t set;
  int allowed = (int)online;
  if (sched_getaffinity(0, sizeof set, &set) == 0) allowed = CPU_COUNT(&set);
  int n = (int)(online / (local > 0 ? local : 1));
  if (n > allowed) n = allowed;
  if (n < 1) n = 1;
  qz_blas_set_threads(n);
  qz_debug("BLAS threads per rank: %d (%ld cores online, %d ranks on this node)",
           n, online, local);
  return QZ_OK;
}

/* Wait for every rank to reach the end; all exit with the worst status. If
 * some rank never arrives (it is stuck or dead), abort the job instead of
 * hanging until the wall-clock limit. */
static int finish(MPI_Comm comm, int rank, int st, int *worst) {
  /* a rank's own error outranks QZ_ERR_REMOTE, so all exit with the cause */
  int mine = st == QZ_OK ? 0 : st == QZ_ERR_REMOTE ? 1 : 100 + st, all = 0;
  MPI_Request req;
  if (MPI_Iallreduce(&mine, &all, 1, MPI_INT, MPI_MAX, comm, &req) != MPI_SUCCESS)
    return 0;
  double grace = 30.0;
  const char *g = getenv("MPIQUANT_ABORT_GRACE");
  if (g) grace = atof(g);
  double t0 = qz_wtime();
  int done = 0;
  while (!done) {
    if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return 0;
    if (done) break;
    if (st != QZ_OK && qz_wtime() - t0 > grace) {
      fprintf(stderr, "mpiquant: rank %d: other ranks did not finish within %.0f s "
                      "after this error; aborting the job\n", rank, grace);
      return 0;
    }
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
  *worst = all == 0 ? QZ_OK : all == 1 ? QZ_ERR_REMOTE : all - 100;
  return 1;
}

/* Test hook (documented in tests/foundation.cmake): MPIQUANT_FAULT=agree:R
 * makes rank R fail with QZ_ERR_IO two calls deep before the command runs,
 * with error agreement; MPIQUANT_FAULT=hang:R fails rank R while the other
 * ranks block in a barrier that never completes (the abort path). */
static int fault_leaf(int rank) {
  QZ_FAIL(QZ_ERR_IO, "injected fault on rank %d (MPIQUANT_FAULT)", rank);
}
static int fault_mid(int rank) {
  QZ_CALL(fault_leaf(rank));
  return QZ_OK;
}
static int fault_injection(qz_ctx *ctx) {
  const char *f = getenv("MPIQUANT_FAULT");
  if (!f) return QZ_OK;
  int hang = strncmp(f, "hang:", 5) == 0;
  if (!hang && strncmp(f, "agree:", 6) != 0) return QZ_OK;
  int victim = atoi(strchr(f, ':') + 1);
  int st = ctx->rank == victim ? fault_mid(ctx->rank) : QZ_OK;
  if (hang) {
    if (st == QZ_OK) MPI_Barrier(ctx->comm); /* never completes */
    return st;
  }
  QZ_CALL(qz_error_agree(ctx->comm, st));
  return QZ_OK;
}

int main(int argc, char **argv) {
  global_opts g = {.verbosity = QZ_LOG_INFO};
  qz_blas_auto_select(argv); /* may restart the process: before anything else */
  malloc_defaults();
  if (strip_global_options(&argc, argv, &g) != QZ_OK) return QZ_ERR_USAGE;
  if (g.threads) qz_threads_set(g.threads);

  /* Answered without starting MPI. */
  if (g.version) {
    qz_print_version(stdout);
    if (*qz_blas_auto_note()) printf("  %s\n", qz_blas_auto_note());
    if (g.threads && !getenv("OPENBLAS_NUM_THREADS") && !getenv("GOTO_NUM_THREADS"))
      qz_blas_set_threads(g.threads);
    printf("  threads:  %d OpenMP thread(s) per rank (%s), BLAS %d thread(s)\n",
           qz_threads(), g.threads ? "--threads" : qz_threads_explicit() ? "OMP_NUM_THREADS"
           : "default", qz_blas_get_threads());
    return 0;
  }
  if (g.help || argc < 2) {
    qz_print_usage(g.help ? stdout : stderr);
    return g.help ? 0 : QZ_ERR_USAGE;
  }
  const qz_command *cmd = qz_command_find(argv[1]);
  if (!cmd) {
    fprintf(stderr, "mpiquant: unknown command '%s'; commands are:", argv[1]);
    for (const qz_command *c = qz_commands; c->name; c++) fprintf(stderr, " %s", c->name);
    fprintf(stderr, " (see mpiquant --help)\n");
    return QZ_ERR_USAGE;
  }

  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    fprintf(stderr, "mpiquant: MPI_Init failed\n");
    return QZ_ERR_MPI;
  }
  qz_ctx ctx = {.log_view = g.log_view};
  int st = qz_comm_dup(MPI_COMM_WORLD, &ctx.comm);
  if (st != QZ_OK) {
    qz_error_print(stderr, 0);
    MPI_Abort(MPI_COMM_WORLD, st);
  }
  MPI_Comm_rank(ctx.comm, &ctx.rank);
  MPI_Comm_size(ctx.comm, &ctx.size);
  qz_log_init(ctx.rank, ctx.size, g.verbosity, g.all_ranks);
  ctx.t_start = qz_wtime();
  if (*qz_blas_auto_note()) {
    if (qz_blas_auto_is_warning()) qz_warn("%s", qz_blas_auto_note());
    else qz_info("%s", qz_blas_auto_note());
  }

  st = blas_thread_defaults(ctx.comm);
  if (st == QZ_OK) st = fault_injection(&ctx);
  if (st == QZ_OK) st = cmd->run(&ctx, argc - 1, argv + 1);
  if (st == QZ_OK && ctx.log_view) {
    if (ctx.rank == 0)
      fprintf(stderr, "BLAS: OpenBLAS %s kernels, %d thread(s) per rank%s; "
              "OpenMP: %d thread(s) per rank\n",
              qz_blas_corename(), qz_blas_get_threads(),
              qz_blas_kernel_tier(qz_blas_corename()) < qz_blas_cpu_tier()
                  ? " (slower than this CPU supports: see MPIQUANT_BLAS_AUTO)" : "",
              qz_threads());
    st = qz_timing_report(ctx.comm, stderr, qz_wtime() - ctx.t_start);
  }

  if (st != QZ_OK && st != QZ_ERR_REMOTE) qz_error_print(stderr, ctx.rank);
  int worst = st;
  if (!finish(ctx.comm, ctx.rank, st, &worst)) MPI_Abort(MPI_COMM_WORLD, st ? st : 1);
  /* every rank's log ends saying why the job stopped (per-rank logs of a
   * batch job would otherwise show nothing on the ranks that did not fail) */
  if (st == QZ_ERR_REMOTE)
    fprintf(stderr, "mpiquant: [rank %d] stopped: %s\n", ctx.rank, qz_error_message());
  else if (st == QZ_OK && worst != QZ_OK)
    fprintf(stderr, "mpiquant: [rank %d] stopped: another rank failed (%s; its message "
            "is in its log)\n", ctx.rank, qz_status_name(worst));
  MPI_Comm_free(&ctx.comm);
  MPI_Finalize();
  return worst;
}
