/* Phase timers and the --log-view table. */
#include "mpiquant/timing.h"

#include "mpiquant/comm.h"
#include "mpiquant/log.h"
#include "mpiquant/mem.h"

static double g_acc[QZ_PHASE_COUNT], g_start[QZ_PHASE_COUNT];
static long g_count[QZ_PHASE_COUNT];
static int g_depth[QZ_PHASE_COUNT];

static const char *const g_phase_names[QZ_PHASE_COUNT] = {
    [QZ_PHASE_LOAD] = "load",       [QZ_PHASE_FORWARD] = "forward",
    [QZ_PHASE_HESSIAN] = "hessian", [QZ_PHASE_REDUCE] = "reduce",
    [QZ_PHASE_FACTOR] = "factor",   [QZ_PHASE_QUANTIZE] = "quantize",
    [QZ_PHASE_WRITE] = "write",     [QZ_PHASE_EVAL] = "eval",
};

const char *qz_phase_name(int phase) {
  return (phase >= 0 && phase < QZ_PHASE_COUNT) ? g_phase_names[phase] : "?";
}

void qz_timer_start(int phase) {
  if (phase < 0 || phase >= QZ_PHASE_COUNT) return;
  if (g_depth[phase]++ == 0) g_start[phase] = qz_wtime();
}

void qz_timer_stop(int phase) {
  if (phase < 0 || phase >= QZ_PHASE_COUNT || g_depth[phase] == 0) return;
  if (--g_depth[phase] == 0) {
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
  if (rank != 0) return QZ_OK;
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
  fprintf(out,
          "--------------------------------------------------------------"
          "----------------\n");
  fflush(out);
  return QZ_OK;
}
