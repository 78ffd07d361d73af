#!/usr/bin/env bash
# bench/factor_once.sh [BUILD_DIR] [REPS]: the GPTQ factor streamed once per
# Hessian (q/k/v and gate/up swept together) vs once per linear
# (MPIQUANT_GPTQ_GROUP=off), on one synthetic Llama-3-8B-shaped block
# (hidden 4096, 32/8 heads; the FFN narrowed to 4096 so that down_proj's
# 14336-wide factorization, which streams once either way, does not
# dominate the run), np 2, 1 BLAS thread per rank, 4 x 512 tokens, w4 g128;
# the two runs interleaved, best of REPS (default 2). Prints rank 0's factor bytes, panels and seconds of
# the block (quantize -v's "factor streamed" line), the quantize phase and
# the wall time, and their ratios grouped / per-linear. Checkpoints h5diff'd.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$here/build}" && pwd)
reps=${2:-2}
# shellcheck source=bench/block8b.sh
. "$here/bench/block8b.sh" ""
for rep in $(seq "$reps"); do
  order="on off"; [ $((rep % 2)) -eq 0 ] && order="off on" # alternate who runs first
  for mode in $order; do
    rm -rf "$tmp/ck$mode"
    s0=$(date +%s.%N)
    MPIQUANT_GPTQ_GROUP=$mode mpirun --bind-to none -np 2 "$mq" quantize --model "$tmp/m8" \
      --calib-tokens "$tmp/ids.bin" --nsamples 4 --seqlen 512 --method gptq --bits 4 \
      --group 128 --out "$tmp/ck$mode" --log-view -v > "$tmp/$mode.$rep.log" 2>&1 < /dev/null
    echo "$(date +%s.%N) - $s0" | bc > "$tmp/$mode.$rep.s"
    echo "== $mode (rep $rep)" >&2
    grep -A9 "phase timing" "$tmp/$mode.$rep.log" >&2 || true
  done
done
for f in "$tmp"/ckon/blocks-*.h5; do
  h5diff "$f" "$tmp/ckoff/$(basename "$f")" > /dev/null ||
    { echo "bench factor_once: grouped and per-linear checkpoints differ"; exit 1; }
done
/usr/bin/python3 - "$tmp" "$reps" <<'PY'
import re, sys
t, reps = sys.argv[1], int(sys.argv[2])
def one(mode, rep):
    log = open("%s/%s.%d.log" % (t, mode, rep)).read()
    m = re.search(r"block 0: factor streamed to this rank: (\d+) panels, (\d+) bytes, ([\d.]+) s", log)
    # --log-view: phase count min max mean %wall -> the mean seconds
    q = re.search(r"^\s*quantize\s+\d+\s+[\d.]+\s+[\d.]+\s+([\d.]+)", log, re.M)
    wall = float(open("%s/%s.%d.s" % (t, mode, rep)).read())
    return int(m.group(1)), int(m.group(2)), float(m.group(3)), float(q.group(1)) if q else float("nan"), wall
res = {m: [one(m, r) for r in range(1, reps + 1)] for m in ("on", "off")}
best = {m: (res[m][0][0], res[m][0][1], min(x[2] for x in res[m]), min(x[3] for x in res[m]),
            min(x[4] for x in res[m])) for m in res}
for m, name in (("off", "per linear"), ("on", "per Hessian")):
    p, b, s, q, w = best[m]
    print("# factor %-11s: %d panels, %.1f MB, %.2f s streaming; quantize phase %.1f s; wall %.1f s"
          % (name, p, b / 1e6, s, q, w))
on, off = best["on"], best["off"]
print("ratio factor bytes per block, per Hessian / per linear (8B-shaped block, 7 -> 4 streams) %.3f" % (on[1] / off[1]))
print("ratio factor streaming seconds, per Hessian / per linear (best of %d) %.3f" % (reps, on[2] / off[2]))
print("ratio quantize phase (sweeps, without the stream), per Hessian / per linear (best of %d) %.3f" % (reps, on[3] / off[3]))
print("ratio run wall, per Hessian / per linear (best of %d; the factorization dominates) %.3f" % (reps, on[4] / off[4]))
PY
