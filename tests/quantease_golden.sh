#!/usr/bin/env bash
# QuantEase on every golden GPTQ case (stored W and H) at np 1..4, from GPTQ
# (default), from RTN, and with 0.5 % outliers (from GPTQ): quantease_check.py criteria (objective never
# increases, <= GPTQ's proxy loss, reported losses = f64 proxy loss), and
# outputs at np > 1 byte-identical to np 1.
# usage: quantease_golden.sh NP...  (env: QZ_SHARED_DIR, QZ_TEST_TMP, MPIQUANT_BIN, MPIEXEC)
set -u
G="$QZ_SHARED_DIR/golden/gptq"
PY=/usr/bin/python3
CHECK="$(dirname "$0")/quantease_check.py"
[ -d "$G" ] || { echo "golden folder $G not found (set QZ_SHARED_DIR)"; exit 1; }
nps=("$@"); [ ${#nps[@]} -gt 0 ] || nps=(1 2 3 4)
fail=0
opts() {
  "$PY" - "$1" <<'PY'
import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]
m = json.loads(f.read(n))["__metadata__"]
a = ["--bits", m["bits"], "--group", m["groupsize"]]
if m.get("sym") == "true": a.append("--sym")
if m.get("act_order") == "true": a.append("--act-order")
if m.get("static_groups") == "true": a.append("--static-groups")
a += ["--damp", m.get("percdamp", "0.01")]
print(" ".join(a))
PY
}
for init in gptq rtn outlier; do
  case $init in
    outlier) mo=(--qe-init gptq --outlier-frac 0.005) ;;
    *) mo=(--qe-init "$init") ;;
  esac
  for np in "${nps[@]}"; do
    out="$QZ_TEST_TMP/$init/np$np"
    rm -rf "$out"; mkdir -p "$out"
    t0=$(date +%s.%N)
    for f in "$G"/gptq_*.safetensors; do
      # shellcheck disable=SC2046
      "$MPIEXEC" -n "$np" "$MPIQUANT_BIN" -q layer --in "$f" --method quantease \
        --iters 30 "${mo[@]}" $(opts "$f") --out "$out/$(basename "$f")" ||
        { echo "FAIL: np $np $init $(basename "$f"): mpiquant layer failed"; fail=1; }
    done
    t1=$(date +%s.%N)
    echo "== init $init, np $np: $(ls "$out" | wc -l) cases in $(echo "$t1 - $t0" | bc) s"
    ref=()
    [ "$np" != "${nps[0]}" ] && ref=("$QZ_TEST_TMP/$init/np${nps[0]}")
    "$PY" "$CHECK" "$out" "$G" "$init" "${ref[@]}" || { echo "FAIL: init $init np $np"; fail=1; }
  done
done
[ $fail -eq 0 ] && echo "quantease_golden: all checks passed (np ${nps[*]})"
exit $fail
