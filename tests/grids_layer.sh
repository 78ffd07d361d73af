#!/usr/bin/env bash
# --grid nf4|fp4, --double-quant and --keep-columns on golden layer cases
# through `mpiquant layer`, checked by the independent numpy reference
# (tests/grids_ref.py: RTN codes/scales exact, GPTQ with a codebook and OWQ
# within the golden GPTQ tolerances, OWQ column choice equal), at every np
# given; np > 1 must reproduce np 1 byte for byte (metadata nranks aside).
# usage: grids_layer.sh NP...   (env: QZ_SHARED_DIR, QZ_TEST_TMP, QZ_SOURCE_DIR, MPIQUANT_BIN, MPIEXEC)
set -u
G="$QZ_SHARED_DIR/golden/gptq"
PY=/usr/bin/python3
[ -d "$G" ] || { echo "golden folder $G not found (set QZ_SHARED_DIR)"; exit 77; }
nps=("$@"); [ ${#nps[@]} -gt 0 ] || nps=(1 2 3 4)
fail=0
lay() { # np out case args...
  local np=$1 out=$2 case=$3; shift 3
  "$MPIEXEC" -n "$np" "$MPIQUANT_BIN" -q layer --in "$G/$case.safetensors" "$@" --out "$out" ||
    { echo "FAIL: np $np: layer $case $* failed"; fail=1; }
}
for np in "${nps[@]}"; do
  o="$QZ_TEST_TMP/np$np"
  rm -rf "$o"; mkdir -p "$o"
  R=rtn_w4_g128_asym
  lay "$np" "$o/rtn_nf4_g64.st" $R --method rtn --bits 4 --grid nf4 --group 64
  lay "$np" "$o/rtn_fp4_g64.st" $R --method rtn --bits 4 --grid fp4
  lay "$np" "$o/rtn_nf4_g-1.st" $R --method rtn --bits 4 --grid nf4 --group -1
  lay "$np" "$o/rtn_nf4_g64_dq.st" $R --method rtn --bits 4 --grid nf4 --double-quant
  lay "$np" "$o/gptq_nf4_g64.st" gptq_a_w4_g128_asym --method gptq --bits 4 --grid nf4
  lay "$np" "$o/gptq_i_fp4_g64.st" gptq_i_w4_g64_asym_odd --method gptq --bits 4 --grid fp4
  lay "$np" "$o/gptq_owq_k8_g64.st" gptq_a_w4_g128_asym --method gptq --bits 4 --group 64 \
    --keep-columns 8
  lay "$np" "$o/gptq_g_owq_nf4_k6_g64.st" gptq_g_w4_g128_asym_dead --method gptq --bits 4 \
    --grid nf4 --keep-columns 6
  if [ "$np" = "${nps[0]}" ]; then
    "$PY" "$QZ_SOURCE_DIR/tests/grids_ref.py" layer "$o" "$G" || { echo "FAIL: numpy check"; fail=1; }
  fi
done
strip() { "$PY" - "$1" <<'PY'
import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]
h = json.loads(f.read(n)); m = h.pop("__metadata__", {}); m.pop("nranks", None)
sys.stdout.write(json.dumps([h, m], sort_keys=True)); sys.stdout.flush()
sys.stdout.buffer.write(f.read())
PY
}
first="${nps[0]}"
for np in "${nps[@]:1}"; do
  for f in "$QZ_TEST_TMP/np$first"/*.st; do
    b=$(basename "$f")
    cmp -s <(strip "$f") <(strip "$QZ_TEST_TMP/np$np/$b") ||
      { echo "FAIL: np $np output $b differs from np $first"; fail=1; }
  done
done
[ $fail -eq 0 ] && echo "grids_layer: all checks passed (np ${nps[*]})"
exit $fail
