/* Start-up choice of the OpenBLAS kernel.
 *
 * Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) chooses its kernels from cpuid
 * when the library loads. On CPUs it does not know (e.g. Sapphire-Rapids
 * class Xeons) it falls back to Prescott (SSE3) kernels, ~4x slower sgemm
 * than its SkylakeX kernels on the same core; on Zen 5 it uses Haswell
 * (AVX2) kernels, ~1.8x slower than SkylakeX. OpenBLAS reads
 * OPENBLAS_CORETYPE only at load time, so the only way to change the kernel
 * of a running process is to start it again: execv of /proc/self/exe with
 * the same argv and the variable set, before MPI_Init (the MPI launcher's
 * environment is inherited unchanged, the PID stays the same). */
#define _GNU_SOURCE
#include "blas_auto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpiquant/blas.h"
#include "mpiquant/error.h"

#define ENV_FROM "MPIQUANT_BLAS_AUTO_FROM"     /* kernel OpenBLAS chose itself */
#define ENV_PREV "MPIQUANT_BLAS_AUTO_PREV"     /* OPENBLAS_CORETYPE before us */
#define ENV_FAILED "MPIQUANT_BLAS_AUTO_FAILED" /* why we went back */

static char g_note[512];
static int g_warn;

const char *qz_blas_auto_note(void) { return g_note; }
int qz_blas_auto_is_warning(void) { return g_warn; }

static const char *tier_isa(int tier) {
  return tier == 2 ? "AVX-512" : tier == 1 ? "AVX2+FMA" : "SSE";
}

/* Put OPENBLAS_CORETYPE back as it was before the first exec. */
static void restore_coretype(void) {
  const char *prev = getenv(ENV_PREV);
  if (prev && *prev) setenv("OPENBLAS_CORETYPE", prev, 1);
  else unsetenv("OPENBLAS_CORETYPE");
  unsetenv(ENV_PREV);
}

/* We are the re-executed process: trust the new kernel only if it computes
 * sgemm correctly; otherwise start once more with OpenBLAS's own choice. */
static void after_exec(char **argv, const char *from) {
  char chosen[64];
  snprintf(chosen, sizeof chosen, "%s", qz_blas_corename());
  double err = 0;
  int st = qz_blas_selfcheck(&err);
  const char *fault = getenv("MPIQUANT_FAULT"); /* test hook */
  if (st == QZ_OK && fault && strcmp(fault, "blas-selfcheck") == 0) {
    err = 1.0;
    st = QZ_ERR_NUMERIC;
  }
  if (st == QZ_OK) {
    snprintf(g_note, sizeof g_note,
             "BLAS: OpenBLAS was on its %s kernels on a CPU with %s; restarted with "
             "OPENBLAS_CORETYPE=%s (sgemm self-check: max rel. error %.1e; "
             "MPIQUANT_BLAS_AUTO=0 turns this off)",
             from, tier_isa(qz_blas_cpu_tier()), chosen, err);
    unsetenv(ENV_FROM);
    unsetenv(ENV_PREV);
    return;
  }
  qz_error_clear();
  char why[256];
  snprintf(why, sizeof why, "the %s kernels failed the sgemm self-check (rel. error %.3g)",
           chosen, err);
  setenv(ENV_FAILED, why, 1);
  setenv("MPIQUANT_BLAS_AUTO", "0", 1);
  unsetenv(ENV_FROM);
  restore_coretype();
  execv("/proc/self/exe", argv);
  /* cannot restart: the kernel we are on is wrong, so say so loudly */
  snprintf(g_note, sizeof g_note,
           "BLAS: %s, and restarting with OpenBLAS's own kernels failed (%s); "
           "set MPIQUANT_BLAS_AUTO=0", why, strerror(errno));
  g_warn = 1;
}

void qz_blas_auto_select(char **argv) {
  const char *failed = getenv(ENV_FAILED);
  if (failed) {
    snprintf(g_note, sizeof g_note, "BLAS: %s; kept OpenBLAS's own %s kernels", failed,
             qz_blas_corename());
    g_warn = 1;
    unsetenv(ENV_FAILED);
    return;
  }
  const char *from = getenv(ENV_FROM);
  if (from) {
    char f[64];
    snprintf(f, sizeof f, "%s", from);
    after_exec(argv, f);
    return;
  }
  const char *mode = getenv("MPIQUANT_BLAS_AUTO");
  if (mode && strcmp(mode, "0") == 0) return;
  int force = mode && strcmp(mode, "1") == 0;
  /* a site or user setting (some machines set these for correctness) wins */
  if (!force && (getenv("OPENBLAS_CORETYPE") || getenv("OPENBLAS_L2_SIZE"))) return;
  const char *core = qz_blas_corename();
  int have = qz_blas_kernel_tier(core), can = qz_blas_cpu_tier();
  if (have >= can) return;
  if (!strstr(qz_blas_config(), "DYNAMIC_ARCH")) {
    snprintf(g_note, sizeof g_note,
             "BLAS: OpenBLAS uses its %s kernels on a CPU with %s, but this OpenBLAS is "
             "not a DYNAMIC_ARCH build: install one for %s kernels",
             core, tier_isa(can), tier_isa(can));
    g_warn = 1;
    return;
  }
  const char *target = can == 2 ? "SkylakeX" : "Haswell";
  const char *prev = getenv("OPENBLAS_CORETYPE");
  setenv(ENV_PREV, prev ? prev : "", 1);
  setenv(ENV_FROM, core, 1);
  setenv("OPENBLAS_CORETYPE", target, 1);
  execv("/proc/self/exe", argv);
  /* exec failed (no /proc?): carry on with the kernel we have */
  int e = errno;
  unsetenv(ENV_FROM);
  restore_coretype();
  snprintf(g_note, sizeof g_note,
           "BLAS: OpenBLAS uses its %s kernels on a CPU with %s; restarting with "
           "OPENBLAS_CORETYPE=%s failed (%s); set it before starting mpiquant",
           core, tier_isa(can), target, strerror(e));
  g_warn = 1;
}
