#!/usr/bin/env bash
# factor_once.sh: GPTQ streams the factor of each Hessian once (q/k/v and
# gate/up swept together, methods/gptq.c gptq_group_op), with checkpoints
# identical to the one-linear-at-a-time path (MPIQUANT_GPTQ_GROUP=off) at
# np 1..4, and the factor bytes each rank receives per block equal to the
# upper triangles of U counted from config.json: once per Hessian (q/k/v,
# o, gate/up, down) grouped, once per linear (7) otherwise.
set -euo pipefail
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
PY=/usr/bin/python3
. "$(dirname "$0")/common/same_blocks.sh"
rm -rf "$T"; mkdir -p "$T"
run() { # model np mode opts...
  local model=$1 np=$2 mode=$3; shift 3
  MPIQUANT_GPTQ_GROUP=$mode "${MPIEXEC:-mpiexec}" -n "$np" "$B" quantize \
    --model "$S/models/$model" --calib "$S/data/tinystories_valid_head.txt" \
    --nsamples 8 --seqlen 64 "$@" --out "$T/$mode" -v >"$T/$mode.log" 2>&1 ||
    { tail -5 "$T/$mode.log"; echo "FAIL: quantize $model np $np ($mode)"; exit 1; }
}
expect() { # model blocksize grouped -> "panels bytes" of one block
  $PY - "$S/models/$1/config.json" "$2" "$3" <<'PY'
import json, math, sys
c = json.load(open(sys.argv[1])); B = int(sys.argv[2]); grouped = sys.argv[3] == "on"
H, I = c["hidden_size"], c["intermediate_size"]
qd = c["num_attention_heads"] * c.get("head_dim", H // c["num_attention_heads"])
# input width of each linear q k v o gate up down; the Hessians' linears
lin = [H, H, H, qd, H, H, I]
streams = [H, qd, H, I] if grouped else lin
# the upper triangle of U, f32 entries
print(sum(math.ceil(d / B) for d in streams), sum(4 * d * (d + 1) // 2 for d in streams))
PY
}
for model in stories260K-hf babyllama-tok105-hf; do
  nps="1 2 3 4"; [ "$model" = stories260K-hf ] || nps="1 3" # (time: np 3 is the uneven split)
  for np in $nps; do
    for mode in on off; do
      rm -rf "$T/$mode"
      run "$model" "$np" "$mode" --bits 4 --group 32 --act-order --blocksize 32
      got=$(grep -m1 "block 0: factor streamed" "$T/$mode.log" | sed 's/.*rank: \([0-9]*\) panels, \([0-9]*\) bytes.*/\1 \2/')
      want=$(expect "$model" 32 "$mode")
      [ "$got" = "$want" ] || { echo "FAIL: $model np $np $mode: factor streamed '$got' (panels bytes), expected '$want'"; exit 1; }
    done
    qz_same_blocks "$T/on" "$T/off" "$model np $np: grouped sweep differs from per-linear" || exit 1
    echo "$model np $np: grouped $(expect "$model" 32 on) vs per-linear $(expect "$model" 32 off) (panels bytes per block), checkpoints identical"
  done
done
echo "factor_once: $QZ_SAME_N block files identical; 1 passed, 0 failed"
