#!/usr/bin/env bash
# A real single-node Slurm cluster, end to end:
#  1. installs slurm-wlm + munge (Debian) if they are missing;
#  2. starts munged, slurmctld and slurmd from a private temp dir (own munge
#     key and socket, free ports, SlurmUser=root, this host with its CPUs);
#  3. runs the 4-point sweep examples/sweep-tiny.json directly
#     (mpiexec -n 2 mpiquant sweep), then as a Slurm job array emitted by
#     `mpiquant sweep --emit-slurm` from slurm/sweep-array.sbatch (one task
#     per point, 2 ranks each through srun --mpi=pmix, or mpirun when Slurm
#     has no PMIx), plus slurm/quantize.sbatch and slurm/eval.sbatch on the
#     GPTQ w4 g32 point;
#  4. waits with a timeout and checks that every task completed, that every
#     point has exactly one row, and that every perplexity equals the direct
#     run's exactly (same np);
#  5. stops the daemons it started, by pid, also on failure or interrupt.
# Needs root (packages, slurmd). Exit 77 (skipped) when not root.
#
# Standalone:  tests/slurm/run.sh [BUILD_DIR]      (default build/)
# From ctest:  ctest --test-dir build -L slurm
set -euo pipefail
SRC=${QZ_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${1:-${QZ_BUILD_DIR:-$SRC/build}}
B=${MPIQUANT_BIN:-$BUILD/mpiquant}
T=${QZ_TEST_TMP:-$(mktemp -d)}
MPIEXEC=${MPIEXEC:-mpiexec}
NP=2
WAIT_S=${QZ_SLURM_WAIT:-300} # for all jobs together
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
t_start=$(date +%s)
say() { echo "slurm-test [$(($(date +%s) - t_start)) s]: $*"; }
fail() { echo "slurm-test: FAIL: $*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  echo "slurm-test: skipped: needs root (installs slurm-wlm/munge, runs slurmd with SlurmUser=root)"
  exit 77
fi
[ -x "$B" ] || fail "no mpiquant binary at $B (build first, or set MPIQUANT_BIN)"

# ---- 1. packages ----------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
   ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null; }
fi

# ---- 2. daemons (all state in W; short path: unix socket names) ------------
W=$(mktemp -d /tmp/qzslurm.XXXXXX)
chmod 700 "$W"
export SLURM_CONF=$W/slurm.conf
stop_pidfile() { # stop the daemon whose pid file this is; wait for it to exit
  local f=$1 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -s "$W/slurmctld.pid" ]; then
    # no job of ours may outlive the cluster
    for j in ${JOBS:-}; do scancel "$j" 2>/dev/null || true; done
    for _ in $(seq 30); do
      [ -z "$(squeue -h 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  if [ $rc -ne 0 ]; then
    for f in "$W"/log/*.log "$T"/job/logs/*.out "$T"/*.out; do
      [ -f "$f" ] && { echo "---- $f (tail)"; tail -n 25 "$f"; }
    done
  fi
  stop_pidfile "$W/slurmd.pid"
  stop_pidfile "$W/slurmctld.pid"
  stop_pidfile "$W/munge/munged.pid"
  rm -rf "$W"
  say "daemons stopped; exit $rc"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -m 700 "$W/munge"
mkdir -p "$W/state" "$W/spool" "$W/log"
head -c 1024 /dev/urandom >"$W/munge/munge.key"
chmod 400 "$W/munge/munge.key"
/usr/sbin/munged --force --key-file="$W/munge/munge.key" --socket="$W/munge/munge.sock" \
  --pid-file="$W/munge/munged.pid" --log-file="$W/log/munged.log" \
  --seed-file="$W/munge/munged.seed"
munge -n -S "$W/munge/munge.sock" | unmunge -S "$W/munge/munge.sock" | grep -q Success ||
  fail "munge does not work (see $W/log/munged.log)"

read -r PCTL PD < <(/usr/bin/python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
H=$(hostname -s)
# nproc honours OMP_NUM_THREADS (ctest sets it to 1): count the CPUs without it
cat >"$SLURM_CONF" <<EOF
ClusterName=qztest
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=$PCTL
SlurmdPort=$PD
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$W/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
MinJobAge=600
NodeName=$H NodeAddr=127.0.0.1 CPUs=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) RealMemory=4000 State=UNKNOWN
PartitionName=qz Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
/usr/sbin/slurmctld
/usr/sbin/slurmd
for _ in $(seq 60); do
  sinfo -h -o %T 2>/dev/null | grep -qx idle && break
  sleep 0.5
done
sinfo -h -o %T | grep -qx idle || fail "the node did not become idle: $(sinfo 2>&1)"
say "cluster up: $(sinfo -h -o '%P %D %T %C') (ports $PCTL/$PD)"

# ---- 3. direct run, then the same sweep as a job array --------------------
SPEC=$SRC/examples/sweep-tiny.json
TEXT=$SRC/examples/tinystories_sample.txt
MODEL=$SRC/examples/stories260K-hf
rm -rf "$T/direct" "$T/array" "$T/job" "$T/qckpt" "$T"/*.out "$T/eval.json" "$T/requeue" "$T/job2"
mkdir -p "$T"
"$MPIEXEC" -n $NP "$B" sweep --spec "$SPEC" --out "$T/direct" -q
say "direct sweep at np $NP done"
"$MPIEXEC" -n 1 "$B" sweep --spec "$SPEC" --out "$T/array" --emit-slurm "$T/job" -q
export LAUNCHER=${QZ_SLURM_LAUNCHER:-auto}
srun --mpi=list 2>&1 | grep -qw pmix || say "Slurm has no PMIx: the templates fall back to mpirun"
JOBS=""
ARR=$(sbatch --parsable "$T/job/sweep-array.sbatch")
JOBS="$ARR"
say "submitted array job $ARR ($(grep -c '"index"' "$T/job/points.json") tasks, $NP ranks each)"
# the lead's quantize template on one node, then eval.sbatch on its checkpoint
QJ=$(MODEL=$MODEL CALIB=$TEXT OUT=$T/qckpt METHOD=gptq BITS=4 GROUP=32 NSAMPLES=32 SEQLEN=256 \
  MPIQUANT=$B sbatch --parsable --nodes=1 --ntasks-per-node=$NP --time=00:30:00 \
  --output="$T/quantize-%j.out" "$SRC/slurm/quantize.sbatch")
JOBS="$JOBS $QJ"
EJ=$(CKPT=$T/qckpt DATA=$TEXT SEQLEN=256 WINDOWS=8 JSON_OUT=$T/eval.json MPIQUANT=$B \
  sbatch --parsable --nodes=1 --ntasks-per-node=$NP --time=00:30:00 \
  --dependency=afterok:$QJ --output="$T/eval-%j.out" "$SRC/slurm/eval.sbatch")
JOBS="$JOBS $EJ"
say "submitted quantize.sbatch job $QJ and eval.sbatch job $EJ (after $QJ)"

# ---- 4. wait, then check ---------------------------------------------------
deadline=$(($(date +%s) + WAIT_S))
while [ -n "$(squeue -h 2>/dev/null)" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "jobs still queued/running after ${WAIT_S} s: $(squeue)"
  sleep 1
done
say "all jobs left the queue"
states=$(scontrol -o show job 2>/dev/null | sed -n 's/^JobId=\([0-9]*\) .*JobState=\([A-Z_]*\) .*ExitCode=\([0-9:]*\).*/\1 \2 \3/p')
echo "$states" | sed 's/^/  job /'
n_ok=$(echo "$states" | grep -c " COMPLETED 0:0$" || true)
[ "$n_ok" -eq 6 ] || fail "expected 6 completed jobs (4 array tasks, quantize, eval), got $n_ok"
for f in "$T"/job/logs/*.out; do
  head -n 1 "$f" | grep -q "(\(srun\|mpirun\), $NP ranks)" || fail "$f: unexpected launch line"
done
say "launcher: $(head -n 1 "$(ls "$T"/job/logs/*.out | head -n 1)")"

/usr/bin/python3 - "$T/direct" "$T/array" "$T/eval.json" "$NP" <<'PY'
import csv, json, os, sys
direct, array, evalj, np_ = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def rows(d):
    with open(os.path.join(d, "results.jsonl")) as f:
        r = [json.loads(l) for l in f if l.strip()]
    keys = [x["key"] for x in r]
    assert len(keys) == len(set(keys)), "%s: duplicate rows %s" % (d, keys)
    with open(os.path.join(d, "results.csv")) as f:
        c = list(csv.DictReader(f))
    assert [x["key"] for x in c] == keys, "%s: csv and jsonl rows differ" % d
    for x, y in zip(r, c):
        assert float(y["ppl_tinystories"]) == x["ppl"]["tinystories"], "csv ppl != jsonl ppl"
    return {x["key"]: x for x in r}
a, b = rows(direct), rows(array)
assert len(a) == 4, "direct run: %d rows, expected 4" % len(a)
assert sorted(a) == sorted(b), "points differ: %s vs %s" % (sorted(a), sorted(b))
assert len(os.listdir(os.path.join(array, "rows"))) == 4, "array: not 4 row files"
bad = 0
for k in sorted(a):
    pa, pb = a[k]["ppl"]["tinystories"], b[k]["ppl"]["tinystories"]
    same = pa == pb and a[k]["np"] == b[k]["np"] == np_
    bad += not same
    print("  %-42s direct %.17g  slurm %.17g  np %d/%d  %s"
          % (k, pa, pb, a[k]["np"], b[k]["np"], "same" if same else "DIFFERENT"))
assert bad == 0, "%d points differ between the direct run and the Slurm array" % bad
e = json.load(open(evalj))
ref = a["stories260K__gptq-w4-g32__tinystories"]["ppl"]["tinystories"]
print("  quantize.sbatch + eval.sbatch: ppl %.17g (sweep point: %.17g) %s"
      % (e["ppl"], ref, "same" if e["ppl"] == ref else "DIFFERENT"))
assert e["ppl"] == ref and e["np"] == np_, "quantize.sbatch/eval.sbatch differ from the sweep point"
PY
# ---- 5. requeue: the time-limit signal (USR1, what --signal=B:USR1@300
# sends) makes a running task requeue itself; its rerun finishes the point
"$MPIEXEC" -n 1 "$B" sweep --spec "$SPEC" --out "$T/requeue" --emit-slurm "$T/job2" -q
RJ=$(REQUEUE_AFTER=0 sbatch --parsable --array=3 "$T/job2/sweep-array.sbatch")
JOBS="$JOBS $RJ"
log=$T/job2/logs/${RJ}_3.out
deadline=$(($(date +%s) + 60))
k=stories260K__gptq-w3-g32__tinystories
# signal while quantize runs: once the checkpoint has its first block
until grep -qs '"block": 0,' "$T/requeue/ckpt/$k/manifest.json"; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "requeue test: task ${RJ}_3 did not start quantizing"
  sleep 0.05
done
scancel --signal=USR1 --batch "${RJ}_3"
say "sent USR1 to the batch script of task ${RJ}_3 during its quantize"
deadline=$(($(date +%s) + WAIT_S))
while [ -n "$(squeue -h 2>/dev/null)" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "requeue test: still queued after ${WAIT_S} s: $(squeue)"
  # Slurm delays a requeued job (BeginTime); start it now in the test
  if squeue -h -o %r 2>/dev/null | grep -q BeginTime; then
    scontrol update JobId="${RJ}_3" StartTime=now >/dev/null 2>&1 || true
  fi
  sleep 0.5
done
info=$(scontrol -o show job "${RJ}_3")
echo "$info" | grep -q "JobState=COMPLETED" || fail "requeue test: task ended as $(echo "$info" | grep -o 'JobState=[A-Z_]*')"
restarts=$(echo "$info" | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
[ "${restarts:-0}" -ge 1 ] || fail "requeue test: the task was not requeued (Restarts=${restarts:-?})"
grep -q "requeueing task" "$log" || fail "requeue test: the batch script did not requeue (see $log)"
resumed=$(grep -o 'resuming .*: [0-9]* of [0-9]* blocks complete' "$log" | head -n 1 || true)
echo "$resumed" | grep -q ': [1-9][0-9]* of' ||
  fail "requeue test: the rerun did not resume from completed blocks (${resumed:-no resume line})"
say "requeued run: $resumed"
/usr/bin/python3 - "$T/direct/rows/$k.json" "$T/requeue/rows/$k.json" <<'PY' || fail "requeue test: ppl differs"
import json, sys
a, b = (json.load(open(f))["ppl"]["tinystories"] for f in sys.argv[1:3])
print("  requeued task: ppl %.17g, direct %.17g" % (b, a))
assert a == b
PY
say "requeue: task ${RJ}_3 requeued itself on USR1 (Restarts=$restarts) and its rerun gave the direct ppl"
say "slurm_sweep: 1 passed, 0 failed (4 array points, quantize.sbatch/eval.sbatch and a requeued task equal the direct run)"
