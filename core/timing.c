/* Phase timers and the --log-view table. */
#include "mpiquant/timing.h"

#include "mpiquant/comm.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"

#include <string.h>

static double g_acc[QZ_PHASE_COUNT], g_start[QZ_PHASE_COUNT];
static long g_count[QZ_PHASE_COUNT];
static int g_depth[QZ_PHASE_COUNT];
/* running phases in start order (bytes go to the last one) and the counts */
static int g_run[4 * QZ_PHASE_COUNT], g_nrun;
static int64_t g_bytes[QZ_PHASE_COUNT + 1][QZ_BYTES_KINDS];

static const char *const g_phase_names[QZ_PHASE_COUNT] = {
    [QZ_PHASE_LOAD] = "load",       [QZ_PHASE_FORWARD] = "forward",
    [QZ_PHASE_HESSIAN] = "hessian", [QZ_PHASE_REDUCE] = "reduce",
    [QZ_PHASE_FACTOR] = "factor",   [QZ_PHASE_QUANTIZE] = "quantize",
    [QZ_PHASE_WRITE] = "write",     [QZ_PHASE_EVAL] = "eval",
    [QZ_PHASE_GATHER] = "gather",
};

const char *qz_phase_name(int phase) {
  return (phase >= 0 && phase < QZ_PHASE_COUNT) ? g_phase_names[phase] : "?";
}

void qz_timer_start(int phase) {
  if (phase < 0 || phase >= QZ_PHASE_COUNT) return;
  if (g_depth[phase]++ == 0) {
    g_start[phase] = qz_wtime();
    if (g_nrun < (int)(sizeof g_run / sizeof g_run[0])) g_run[g_nrun++] = phase;
  }
}

/* drop the last entry of `phase` from the running list */
static void run_remove(int phase) {
  int i = g_nrun - 1;
  while (i >= 0 && g_run[i] != phase) i--;
  if (i < 0) return;
  for (; i + 1 < g_nrun; i++) g_run[i] = g_run[i + 1];
  g_nrun--;
}

void qz_bytes_enter(int phase) {
  if (phase < 0 || phase >= QZ_PHASE_COUNT) return;
  if (g_nrun < (int)(sizeof g_run / sizeof g_run[0])) g_run[g_nrun++] = phase;
}

void qz_bytes_leave(int phase) {
  if (phase >= 0 && phase < QZ_PHASE_COUNT) run_remove(phase);
}

void qz_bytes_add(int kind, int64_t bytes) {
  if (kind < 0 || kind >= QZ_BYTES_KINDS || bytes <= 0) return;
  int ph = __atomic_load_n(&g_nrun, __ATOMIC_RELAXED);
  ph = ph > 0 ? g_run[ph - 1] : QZ_PHASE_OTHER;
  __atomic_fetch_add(&g_bytes[ph][kind], bytes, __ATOMIC_RELAXED);
}

int64_t qz_bytes_get(int phase, int kind) {
  if (phase < 0 || phase > QZ_PHASE_COUNT || kind < 0 || kind >= QZ_BYTES_KINDS) return 0;
  return __atomic_load_n(&g_bytes[phase][kind], __ATOMIC_RELAXED);
}

void qz_timer_stop(int phase) {
  if (phase < 0 || phase >= QZ_PHASE_COUNT || g_depth[phase] == 0) return;
  if (--g_depth[phase] == 0) {
    run_remove(phase);
    g_acc[phase] += qz_wtime() - g_start[phase];
    g_count[phase]++;
  }
}

double qz_timer_seconds(int phase) {
  return (phase >= 0 && phase < QZ_PHASE_COUNT) ? g_acc[phase] : 0.0;
}
long qz_timer_count(int phase) {
  return (phase >= 0 && phase < QZ_PHASE_COUNT) ? g_count[phase] : 0;
}

void qz_timer_reset(void) {
  for (int i = 0; i < QZ_PHASE_COUNT; i++) {
    g_acc[i] = 0;
    g_count[i] = 0;
    g_depth[i] = 0;
  }
  g_nrun = 0;
  memset(g_bytes, 0, sizeof g_bytes);
}

/* Per phase (and "other") the MPI and the file bytes of this rank, min /
 * max / sum over ranks; rank 0 prints the rows that moved anything.
 * Collective on comm. */
static int bytes_report(MPI_Comm comm, int rank, int size, FILE *out) {
  enum { NR = QZ_PHASE_COUNT + 1 };
  double mn[2 * NR], mx[2 * NR], sm[2 * NR];
  for (int i = 0; i < NR; i++) {
    mn[i] = (double)(g_bytes[i][QZ_BYTES_MPI_SENT] + g_bytes[i][QZ_BYTES_MPI_RECV]);
    mn[NR + i] = (double)(g_bytes[i][QZ_BYTES_FILE_READ] + g_bytes[i][QZ_BYTES_FILE_WRITE]);
    mx[i] = sm[i] = mn[i];
    mx[NR + i] = sm[NR + i] = mn[NR + i];
  }
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, mn, 2 * NR, MPI_DOUBLE, MPI_MIN, comm));
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, mx, 2 * NR, MPI_DOUBLE, MPI_MAX, comm));
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, sm, 2 * NR, MPI_DOUBLE, MPI_SUM, comm));
  if (rank != 0) return QZ_OK;
  fprintf(out, "bytes per rank: MPI sent + received, file read + written (payload)\n");
  fprintf(out, "%-10s %11s %11s %11s %11s %11s %11s\n", "phase", "MPI min", "MPI max",
          "MPI mean", "file min", "file max", "file mean");
  for (int i = 0; i < NR; i++) {
    if (mx[i] == 0.0 && mx[NR + i] == 0.0) continue;
    char b[6][32];
    fprintf(out, "%-10s %11s %11s %11s %11s %11s %11s\n",
            i < QZ_PHASE_COUNT ? g_phase_names[i] : "other",
            qz_fmt_bytes(mn[i], b[0], 32), qz_fmt_bytes(mx[i], b[1], 32),
            qz_fmt_bytes(sm[i] / size, b[2], 32), qz_fmt_bytes(mn[NR + i], b[3], 32),
            qz_fmt_bytes(mx[NR + i], b[4], 32), qz_fmt_bytes(sm[NR + i] / size, b[5], 32));
  }
  return QZ_OK;
}

int qz_timing_report(MPI_Comm comm, FILE *out, double wall) {
  int rank, size;
  QZ_CALL_MPI(MPI_Comm_rank(comm, &rank));
  QZ_CALL_MPI(MPI_Comm_size(comm, &size));
  double mn[QZ_PHASE_COUNT + 1], mx[QZ_PHASE_COUNT + 1], sm[QZ_PHASE_COUNT + 1];
  long cnt[QZ_PHASE_COUNT];
  for (int i = 0; i < QZ_PHASE_COUNT; i++) mn[i] = mx[i] = sm[i] = g_acc[i];
  mn[QZ_PHASE_COUNT] = mx[QZ_PHASE_COUNT] = sm[QZ_PHASE_COUNT] =
      (double)qz_peak_rss_bytes();
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, mn, QZ_PHASE_COUNT + 1, MPI_DOUBLE,
                            MPI_MIN, comm));
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, mx, QZ_PHASE_COUNT + 1, MPI_DOUBLE,
                            MPI_MAX, comm));
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, sm, QZ_PHASE_COUNT + 1, MPI_DOUBLE,
                            MPI_SUM, comm));
  QZ_CALL_MPI(MPI_Allreduce(g_count, cnt, QZ_PHASE_COUNT, MPI_LONG, MPI_MAX,
                            comm));
  double wmax = wall;
  QZ_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &wmax, 1, MPI_DOUBLE, MPI_MAX, comm));
  if (rank != 0) return bytes_report(comm, rank, size, out);
  fprintf(out,
          "\n---------------- mpiquant phase timing (%d rank%s, wall %.3f s) "
          "----------------\n",
          size, size == 1 ? "" : "s", wmax);
  fprintf(out, "%-10s %8s %11s %11s %11s %7s\n", "phase", "count", "min (s)",
          "max (s)", "mean (s)", "% wall");
  for (int i = 0; i < QZ_PHASE_COUNT; i++) {
    if (cnt[i] == 0 && mx[i] == 0.0) continue;
    fprintf(out, "%-10s %8ld %11.4f %11.4f %11.4f %6.1f%%\n",
            g_phase_names[i], cnt[i], mn[i], mx[i], sm[i] / size,
            wmax > 0 ? 100.0 * mx[i] / wmax : 0.0);
  }
  char a[32], b[32];
  fprintf(out, "peak RSS per rank: min %s, max %s\n",
          qz_fmt_bytes(mn[QZ_PHASE_COUNT], a, sizeof a),
          qz_fmt_bytes(mx[QZ_PHASE_COUNT], b, sizeof b));
  QZ_CALL(bytes_report(comm, rank, size, out));
  fprintf(out,
          "--------------------------------------------------------------"
          "----------------\n");
  fflush(out);
  return QZ_OK;
}
