/* Command table, usage, version report and option-value parsing. */
#include <errno.h>
#include <hdf5.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "driver.h"
#include "mpiquant/blas.h"
#include "mpiquant/error.h"

const qz_command qz_commands[] = {
    {"quantize", "quantize a Hugging Face model into a resumable HDF5 checkpoint",
     qz_cmd_quantize},
    {"eval", "perplexity of a model, checkpoint or export on a text/token file",
     qz_cmd_eval},
    {"export", "checkpoint -> Hugging Face GPTQ safetensors (vLLM/transformers)",
     qz_cmd_export},
    {"sweep", "run a grid of quantize+eval configs, CSV/JSON rows and plots",
     qz_cmd_sweep},
    {"plan", "dry run: per-rank memory and time per phase before queueing",
     qz_cmd_plan},
    {"inspect", "print tensors/attributes of a model dir, safetensors or checkpoint",
     qz_cmd_inspect},
    {"layer", "quantize one matrix (W + H or X) from a safetensors file",
     qz_cmd_layer},
    {"tokenize", "tokenize a text file with a model's tokenizer.json",
     qz_cmd_tokenize},
    {"verify", "check a checkpoint's data against the digests it records",
     qz_cmd_verify},
    {"synth", "random model dir of a given shape (70B/405B-shaped benchmarks)", qz_cmd_synth},
    {NULL, NULL, NULL},
};

const qz_command *qz_command_find(const char *name) {
  for (const qz_command *c = qz_commands; c->name; c++)
    if (strcmp(c->name, name) == 0) return c;
  return NULL;
}

void qz_print_usage(FILE *out) {
  fprintf(out,
          "mpiquant %s - post-training quantization of Llama-family models on "
          "CPU clusters (MPI)\n\n"
          "usage: [mpirun -np N | srun] mpiquant <command> [options]\n"
          "       mpiquant <command> --help\n\n"
          "commands:\n",
          MPIQUANT_VERSION);
  for (const qz_command *c = qz_commands; c->name; c++)
    fprintf(out, "  %-10s %s\n", c->name, c->summary);
  fprintf(out,
          "\nglobal options (anywhere on the line; --threads before the command):\n"
          "  -v, --verbose      more log output (repeat for debug/trace)\n"
          "  -q, --quiet        only warnings and errors\n"
          "  --log-all-ranks    every rank logs (default: rank 0 only)\n"
          "  --log-view         print the per-phase timing table at the end: time\n"
          "                     and, per rank, bytes moved over MPI (sent +\n"
          "                     received) and to/from files (payload read +\n"
          "                     written), min/max/mean over ranks\n"
          "  --threads N        threads per rank for attention, norms, dequantization\n"
          "                     and conversion (OpenMP; default: OMP_NUM_THREADS, else\n"
          "                     1); BLAS uses N too unless OPENBLAS_NUM_THREADS is set.\n"
          "                     Results are bit-identical at any N. Hybrid layout: one\n"
          "                     rank per node or socket, N = its cores (mpirun\n"
          "                     --bind-to none, or srun --cpus-per-task=N)\n"
          "  --proc-grid auto|1d|2d\n"
          "                     process grid of the distributed Hessian and its\n"
          "                     factorization: 1d = 1 x P, whose factor has the same\n"
          "                     bits at any rank count (np 1 included); 2d = near-\n"
          "                     square, less panel traffic between nodes, but the\n"
          "                     factor of a wide ill-conditioned Hessian differs in\n"
          "                     its last bits between grid shapes. auto (default):\n"
          "                     1d when all ranks are on one node, else 2d\n"
          "  --version          versions of mpiquant and the libraries it runs "
          "with\n"
          "  -h, --help         this text\n\n"
          "environment: OPENBLAS_NUM_THREADS (default: --threads / OMP_NUM_THREADS "
          "if set,\n  else cores per node / ranks per node),\n"
          "  MPIQUANT_MALLOC_DEFAULTS=0 keeps glibc's malloc settings "
          "(default: reuse freed memory).\n"
          "docs: README.md, docs/ and ../shared/DESIGN.md in the source tree.\n");
}

void qz_print_version(FILE *out) {
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(mpi, &len);
  char *nl = strchr(mpi, '\n');
  if (nl) *nl = '\0';
  char *comma = strchr(mpi, ',');
  if (comma) *comma = '\0';
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  fprintf(out, "mpiquant %s (git %s)\n", MPIQUANT_VERSION, MPIQUANT_GIT_REV);
  fprintf(out, "  MPI:      %s\n", mpi);
  fprintf(out, "  HDF5:     %u.%u.%u (parallel)\n", maj, min, rel);
  fprintf(out, "  zstd:     %s\n", ZSTD_versionString());
  fprintf(out, "  OpenBLAS: %s\n", qz_blas_config());
  fprintf(out, "  jansson:  %s\n", JANSSON_VERSION);
  fprintf(out, "  compiler: %s\n", __VERSION__);
}

int qz_cmd_not_implemented(const char *name, int argc, char **argv) {
  if (qz_cli_wants_help(argc, argv)) {
    const qz_command *c = qz_command_find(name);
    printf("mpiquant %s: %s\n(not implemented yet in this version)\n", name,
           c ? c->summary : "");
  }
  QZ_FAIL(QZ_ERR_NOT_IMPLEMENTED,
          "command '%s' is not implemented yet in mpiquant %s", name,
          MPIQUANT_VERSION);
}

int qz_cli_wants_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) break;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
      return 1;
  }
  return 0;
}

int qz_cli_int(const char *opt, const char *val, long lo, long hi, long *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(val ? val : "", &end, 10);
  QZ_CHECK(val && *val && end && *end == '\0' && errno == 0, QZ_ERR_USAGE,
           "option %s expects an integer, got '%s'", opt, val ? val : "");
  QZ_CHECK(v >= lo && v <= hi, QZ_ERR_USAGE,
           "option %s must be in [%ld, %ld], got %ld", opt, lo, hi, v);
  *out = v;
  return QZ_OK;
}

int qz_cli_double(const char *opt, const char *val, double lo, double hi,
                  double *out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(val ? val : "", &end);
  QZ_CHECK(val && *val && end && *end == '\0' && errno == 0 && isfinite(v),
           QZ_ERR_USAGE, "option %s expects a number, got '%s'", opt,
           val ? val : "");
  QZ_CHECK(v >= lo && v <= hi, QZ_ERR_USAGE,
           "option %s must be in [%g, %g], got %g", opt, lo, hi, v);
  *out = v;
  return QZ_OK;
}
