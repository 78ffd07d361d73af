#!/usr/bin/env bash
# bench/run.sh: every benchmark in one command; prints a table with one
# ratio per line (each measured against a baseline taken in the same run)
# and writes the results as JSON.
#
#   bench/run.sh [--quick | --block-only] [BUILD_DIR] [SHARED_DIR]
#                (JSON: BUILD_DIR/bench/results.json)
#
# Threads: 1 BLAS thread per rank under MPI (np >= 2); 2 threads at np 1
# (mpirun --bind-to none so OpenBLAS sees both cores), except the block
# scaling pair (np 1 vs np 2), which uses 1 thread per rank on both sides so
# the ratio is the MPI speed-up on the same number of threads per core.
# --quick skips the synthetic Llama-3-8B block (about 3 of the ~8 minutes),
# bench/factor_once.sh (the factor once per Hessian on that block, ~4 minutes),
# bench/wire.sh (load/gather bytes, packed vs f32 rows, ~1.5 minutes)
# and the 8B-shaped task-evaluation benchmark (bench/tasks.sh, a few minutes).
# OPENBLAS_CORETYPE is left as the environment has it (see TOOLCHAIN notes).
set -uo pipefail
quick=0 block_only=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
if [ "${1:-}" = "--block-only" ]; then block_only=1; shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$here/build}" && pwd)
shared=${2:-$here/../shared}
bin=$build/bench
export OMPI_MCA_rmaps_base_oversubscribe=1
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
out=$tmp/all.txt
: > "$out"
t_all=$(date +%s)
# the BLAS kernel of this run: recorded in results.json; a generic one makes
# every ratio below meaningless as a statement about this CPU
kern() { sed -n 's/.*OpenBLAS: .* \([A-Za-z0-9]*\) MAX_THREADS.*/\1/p'; }
blas_kernel=$("$build/mpiquant" --version | kern)
blas_own=$(MPIQUANT_BLAS_AUTO=0 "$build/mpiquant" --version | kern)
echo "== BLAS kernel: $blas_kernel (OpenBLAS's own choice: $blas_own)" >&2
case $blas_kernel in
  SkylakeX|Cooperlake|SapphireRapids|Haswell|Zen) ;;
  *) echo "WARNING: generic OpenBLAS kernel $blas_kernel: sgemm runs ~2-4x below this CPU's speed" >&2 ;;
esac

run() { # run NAME NP THREADS cmd...  (stdout collected, tagged)
  local name=$1 np=$2 th=$3; shift 3
  local t0=$(date +%s.%N) rc
  echo "== $name (np $np, $th thread(s) per rank)" >&2
  if [ "$np" -eq 0 ]; then
    OPENBLAS_NUM_THREADS=$th "$@" > "$tmp/$name.log" 2>&1; rc=$?
  else
    OPENBLAS_NUM_THREADS=$th mpirun --bind-to none -np "$np" "$@" > "$tmp/$name.log" 2>&1; rc=$?
  fi
  local t1=$(date +%s.%N)
  cat "$tmp/$name.log" >&2
  [ $rc -ne 0 ] && echo "bench $name failed with status $rc" >&2
  awk -v n="$name" -v np="$np" -v th="$th" -v rc="$rc" -v s="$(echo "$t1 - $t0" | bc)" \
    '/^ratio/ {print n "\t" np "\t" th "\t" rc "\t" s "\t" $0}' "$tmp/$name.log" >> "$out"
  if ! grep -q '^ratio' "$tmp/$name.log"; then
    printf '%s\t%s\t%s\t%s\t%s\tratio_missing nan\n' "$name" "$np" "$th" "$rc" "$(echo "$t1 - $t0" | bc)" >> "$out"
  fi
}

if [ $block_only -eq 0 ]; then
run hessian_np1 1 2 "$bin/bench_hessian" 4096 8192 3
run hessian_np2 2 1 "$bin/bench_hessian" 4096 8192 3
run collectives_np2 2 1 "$bin/bench_collectives" 4096 3
run potrf_np2 2 1 "$bin/bench_potrf" 3000 128
run gptq_np2 2 1 "$bin/bench_gptq" 4096 4096
run forward_np1 1 2 "$bin/bench_forward"
run attn_np1 1 1 "$bin/bench_attn"
run batch_np1 1 1 "$bin/bench_batch"
# hybrid ranks x threads: 1 core vs 2 BLAS threads vs 2 threads everywhere
if [ $quick -eq 0 ]; then run threads_np1 0 2 "$bin/bench_threads"; else run threads_np1 0 2 "$bin/bench_threads" stories; fi
run pack_np1 0 1 "$bin/bench_pack" 8192 8192 4
[ -x "$bin/bench_quantease" ] && run quantease_np2 2 1 "$bin/bench_quantease"
run quantize_sh 0 1 "$here/bench/quantize.sh" "$build" "$shared"
# one 4096^2 layer vs the reference algorithm in PyTorch (skipped without torch)
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  run layer_torch 0 1 "$here/bench/layer_torch.sh" "$build"
fi
# the start-up kernel choice: generic kernel (choice off) vs the one chosen
g0=$(OPENBLAS_CORETYPE=Prescott MPIQUANT_BLAS_AUTO=0 "$bin/bench_blas_kernel" 2048 2>&1 | tee /dev/stderr | awk '/^gflops/ {print $2}')
g1=$(OPENBLAS_CORETYPE=Prescott MPIQUANT_BLAS_AUTO=1 "$bin/bench_blas_kernel" 2048 2>&1 | tee /dev/stderr | awk '/^gflops/ {print $2}')
printf 'blas_kernel\t0\t1\t0\t-\tratio chosen kernel / generic Prescott (sgemm 2048, 1 thread) %s\n' \
  "$(echo "scale=3; ${g1:-0} / ${g0:-1}" | bc)" >> "$out"
fi

if [ $quick -eq 0 ]; then
  # one synthetic Llama-3-8B block: np 1 vs np 2 (1 thread per rank both)
  mq=$build/mpiquant
  echo "== synth Llama-3-8B, 1 block (bf16)" >&2
  "$mq" synth --config "$here/bench/configs/llama-3-8b.json" --layers 1 --out "$tmp/m8" -q
  /usr/bin/python3 -c "
import numpy as np; np.random.seed(3); np.random.randint(0, 128256, size=4*512).astype('<u4').tofile('$tmp/ids.bin')"
  for np_ in 1 2; do
    s0=$(date +%s.%N)
    OPENBLAS_NUM_THREADS=1 mpirun -np $np_ "$mq" quantize --model "$tmp/m8" --calib-tokens "$tmp/ids.bin" \
      --nsamples 4 --seqlen 512 --method gptq --bits 4 --group 128 --out "$tmp/ck$np_" \
      --log-view -q 2> "$tmp/block$np_.log"
    echo "$(date +%s.%N) - $s0" | bc > "$tmp/block$np_.s"
    grep -A11 "phase timing" "$tmp/block$np_.log" >&2
  done
  /usr/bin/python3 - "$tmp" >> "$tmp/block.txt" <<'PY'
import sys
t = sys.argv[1]
a, b = (float(open("%s/block%d.s" % (t, n)).read()) for n in (1, 2))
print("ratio speedup np2/np1 (Llama-3-8B block, 4 x 512 tokens, target >= 1.8) %.3f" % (a / b))
print("# np1 %.1f s, np2 %.1f s" % (a, b))
PY
  cat "$tmp/block.txt" >&2
  s=$(grep '^# ' "$tmp/block.txt")
  awk -v s="$s" '/^ratio/ {print "block8b_np1_vs_np2\t2\t1\t0\t" s "\t" $0}' "$tmp/block.txt" >> "$out"
  # the GPTQ factor once per Hessian vs once per linear (8B-shaped block, np 2)
  run factor_once 0 1 "$here/bench/factor_once.sh" "$build"
  # block weights in the wire dtype (16-bit load, packed codes) vs f32 rows
  run wire 0 1 "$here/bench/wire.sh" "$build"
  # eval --task vs eval's perplexity on the same tokens (8B-shaped, 2 blocks)
  [ $block_only -eq 0 ] && run tasks_sh 0 1 "$here/bench/tasks.sh" "$build" "$shared"
fi

json=$build/bench/results.json
/usr/bin/python3 - "$out" "$json" "$(( $(date +%s) - t_all ))" "$blas_kernel" "$blas_own" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    name, np_, th, rc, secs, text = line.rstrip("\n").split("\t", 5)
    # the value: the first number outside parentheses after the name
    toks = text.split()
    val, key, depth = float("nan"), text, 0
    for i, tok in enumerate(toks[1:], 1):
        if depth == 0:
            try:
                val = float(tok.rstrip(",:"))
                key = " ".join(toks[:i]).rstrip(":")
                break
            except ValueError:
                pass
        depth += tok.count("(") - tok.count(")")
    try:
        secs = float(secs)
    except ValueError:
        secs = None
    rows.append({"bench": name, "np": int(np_), "threads": int(th), "status": int(rc),
                 "seconds": secs, "ratio": key, "value": val})
print("\n%-20s %3s %3s %8s  %-58s %8s" % ("bench", "np", "thr", "time(s)", "ratio", "value"))
for r in rows:
    t = "%8.1f" % r["seconds"] if isinstance(r["seconds"], float) else "%8s" % "-"
    print("%-20s %3d %3d %s  %-58s %8.3f%s" % (r["bench"], max(r["np"], 1), r["threads"], t,
          r["ratio"][:58], r["value"], "" if r["status"] == 0 else "  FAILED"))
json.dump({"total_seconds": int(sys.argv[3]), "blas_kernel": sys.argv[4],
           "blas_kernel_openblas_own": sys.argv[5], "results": rows},
          open(sys.argv[2], "w"), indent=1)
print("BLAS kernel: %s (OpenBLAS's own choice: %s)" % (sys.argv[4], sys.argv[5]))
print("\nall benchmarks: %s s; JSON: %s" % (sys.argv[3], sys.argv[2]))
sys.exit(1 if any(r["status"] for r in rows) else 0)
PY
