#!/usr/bin/env bash
# bench/hybrid.sh [BUILD_DIR] [REPS]: the same cores two ways, GPTQ w4 g128
# of one synthetic Llama-3-8B-shaped block (bench/block8b.sh, 4 x 512
# tokens):
#   ranks    np 2 x 1 thread (OPENBLAS_NUM_THREADS=1, OMP_NUM_THREADS=1)
#   threads  np 1 x 2 threads (--threads 2: BLAS and the OpenMP loops)
# interleaved, best of REPS (default 2), OMP_WAIT_POLICY=passive (as the
# slurm/ templates).  Prints each phase's mean seconds (--log-view) and the
# wall time, and the ratio threads / ranks of the wall time; whether the
# two checkpoints are h5diff-identical is printed, not required: the
# thread count never changes a result, but np 1 factors with LAPACK and
# np 2 with ScaLAPACK, whose f64 roundings differ, and on a Hessian this
# size that reaches the f32 factor panels (docs/performance.md section 4).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$here/build}" && pwd)
reps=${2:-2}
# shellcheck source=bench/block8b.sh
. "$here/bench/block8b.sh" ""
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
q="quantize --model $tmp/m8 --calib-tokens $tmp/ids.bin --nsamples 4 --seqlen 512 --method gptq --bits 4 --group 128 --log-view"
for rep in $(seq "$reps"); do
  order="ranks threads"; [ $((rep % 2)) -eq 0 ] && order="threads ranks"
  for mode in $order; do
    rm -rf "$tmp/ck$mode"
    s0=$(date +%s.%N)
    if [ "$mode" = ranks ]; then
      OMP_NUM_THREADS=1 mpirun --bind-to none -np 2 "$mq" $q --out "$tmp/ck$mode" \
        > "$tmp/$mode.$rep.log" 2>&1 < /dev/null
    else
      env -u OPENBLAS_NUM_THREADS mpirun --bind-to none -np 1 "$mq" --threads 2 $q \
        --out "$tmp/ck$mode" > "$tmp/$mode.$rep.log" 2>&1 < /dev/null
    fi
    echo "$(date +%s.%N) - $s0" | bc > "$tmp/$mode.$rep.s"
  done
done
same=yes
for f in "$tmp"/ckranks/blocks-*.h5; do
  h5diff "$f" "$tmp/ckthreads/$(basename "$f")" > /dev/null || same=no
done
/usr/bin/python3 - "$tmp" "$reps" "$same" <<'PY'
import re, sys
t, reps, same = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ph = ("load", "forward", "hessian", "reduce", "factor", "quantize", "write", "gather")
def one(mode, rep):
    log = open("%s/%s.%d.log" % (t, mode, rep)).read()
    d = {}
    for p in ph:
        m = re.search(r"^%s\s+\d+\s+[\d.]+\s+[\d.]+\s+([\d.]+)" % p, log, re.M)
        d[p] = float(m.group(1)) if m else 0.0
    d["wall"] = float(open("%s/%s.%d.s" % (t, mode, rep)).read())
    return d
res = {m: [one(m, r) for r in range(1, reps + 1)] for m in ("ranks", "threads")}
best = {m: min(res[m], key=lambda d: d["wall"]) for m in res}
print("# %-8s " % "way" + " ".join("%8s" % p for p in ph) + "     wall")
for m, name in (("ranks", "np2 x 1"), ("threads", "np1 x 2")):
    print("  %-8s " % name + " ".join("%8.2f" % best[m][p] for p in ph) + " %8.2f" % best[m]["wall"])
print("ratio wall threads/ranks %.3f" % (best["threads"]["wall"] / best["ranks"]["wall"]))
print("checkpoints identical (np 2 x 1 vs np 1 x 2): %s" % same)
PY
