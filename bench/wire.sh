#!/usr/bin/env bash
# bench/wire.sh [BUILD_DIR] [REPS]: bytes on the wire for the block weights,
# measured.  One synthetic Llama-3-8B-shaped BF16 block (hidden 4096, 32/8
# heads, FFN narrowed to 4096 as in bench/factor_once.sh), np 2, 1 BLAS
# thread per rank, 4 x 512 tokens, GPTQ w4 g128, two ways in the same run:
#   f32   the load gathers the block as f32 and the rows quantized are
#         gathered dequantized as f32 (MPIQUANT_WIRE=f32: the default
#         within one node);
#   wire  the load gathers the BF16 bytes as stored and every rank widens
#         them; after quantizing the codes travel packed (4 bits) with their
#         f32 scales/zeros and every rank dequantizes (MPIQUANT_WIRE=packed:
#         the default when the ranks span several nodes).
# Interleaved, best of REPS (default 2).  Prints the load and gather phases'
# mean seconds and mean MPI bytes per rank (--log-view) and the ratios
# wire / f32; the checkpoints must be h5diff-identical (the same bits).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$here/build}" && pwd)
reps=${2:-2}
# shellcheck source=bench/block8b.sh
. "$here/bench/block8b.sh" "--dtype bf16"
for rep in $(seq "$reps"); do
  order="wire f32"; [ $((rep % 2)) -eq 0 ] && order="f32 wire"
  for mode in $order; do
    rm -rf "$tmp/ck$mode"
    sw="MPIQUANT_WIRE=$( [ "$mode" = f32 ] && echo f32 || echo packed)"
    env $sw mpirun --bind-to none -np 2 "$mq" quantize --model "$tmp/m8" \
      --calib-tokens "$tmp/ids.bin" --nsamples 4 --seqlen 512 --method gptq --bits 4 \
      --group 128 --out "$tmp/ck$mode" --log-view > "$tmp/$mode.$rep.log" 2>&1 < /dev/null
  done
done
for f in "$tmp"/ckwire/blocks-*.h5; do
  h5diff "$f" "$tmp/ckf32/$(basename "$f")" > /dev/null ||
    { echo "bench wire: the two checkpoints differ"; exit 1; }
done
/usr/bin/python3 - "$tmp" "$reps" <<'PY'
import re, sys
t, reps = sys.argv[1], int(sys.argv[2])
U = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
def one(mode, rep):
    log = open("%s/%s.%d.log" % (t, mode, rep)).read()
    out = {}
    for ph in ("load", "gather"):
        s = re.search(r"^\s*%s\s+\d+\s+[\d.]+\s+[\d.]+\s+([\d.]+)" % ph, log, re.M)
        # bytes table: phase, MPI min/max/mean, file min/max/mean (value unit pairs)
        b = re.search(r"^%s\s+((?:[\d.]+ \w+\s+){6})" % ph, log, re.M)
        vals = re.findall(r"([\d.]+) (\w+)", b.group(1)) if b else []
        mean = float(vals[2][0]) * U[vals[2][1]] if len(vals) >= 3 else float("nan")
        out[ph] = (float(s.group(1)) if s else float("nan"), mean)
    return out
res = {m: [one(m, r) for r in range(1, reps + 1)] for m in ("f32", "wire")}
print("# mode   load s   load MPI/rank   gather s   gather MPI/rank")
best = {}
for m in ("f32", "wire"):
    ls = min(x["load"][0] for x in res[m]); gs = min(x["gather"][0] for x in res[m])
    lb = res[m][0]["load"][1]; gb = res[m][0]["gather"][1]
    best[m] = (ls, lb, gs, gb)
    print("  %-5s %7.3f %12.2f MB %9.3f %14.2f MB" % (m, ls, lb / 1e6, gs, gb / 1e6))
f, w = best["f32"], best["wire"]
print("ratio load_bytes wire/f32 %.3f" % (w[1] / f[1]))
print("ratio gather_bytes wire/f32 %.3f" % (w[3] / f[3]))
print("ratio load_seconds wire/f32 %.3f" % (w[0] / f[0]))
print("ratio gather_seconds wire/f32 %.3f" % (w[2] / f[2]))
print("checkpoints identical: yes")
PY
