#!/usr/bin/env bash
# The sweep's "grids" axis and bits_per_param column (np 2, tiny model):
# methods with a --grid row (rtn, gptq) get one point per grid, a codebook
# grid fixes 4 bits and no sym axis, other methods (awq) their points once;
# each grid row's perplexity equals a direct quantize --grid + eval exactly
# (same binary, same np); bits_per_param is the storage formula of
# docs/methods.md computed here from the layer shapes.
set -euo pipefail
S=${QZ_SOURCE_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
NP=2
MODEL=$S/examples/stories260K-hf
TEXT=$S/examples/tinystories_sample.txt
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$NP" "$B" "$@"; }
fail() { echo "grids_sweep: FAIL: $*" >&2; exit 1; }
cat >"$T/spec.json" <<SPEC
{"models": [{"name": "tiny", "path": "$MODEL"}],
 "methods": ["rtn", "gptq", "awq"], "bits": [4, 3], "groups": [32], "sym": [false, true],
 "grids": ["int", "nf4", "fp4"],
 "calibration": {"name": "ts", "text": "$TEXT", "nsamples": 8, "seqlen": 64},
 "eval": {"name": "ts", "text": "$TEXT", "seqlen": 128, "windows": 2}}
SPEC
run sweep --spec "$T/spec.json" --out "$T/r" --list -q >"$T/list" || fail "--list"
keys=$(grep -o 'tiny__[^ ]*' "$T/list" | sort | tr '\n' ' ')
want="tiny__awq-w3-g32__ts tiny__awq-w4-g32__ts tiny__gptq-w3-g32-sym__ts tiny__gptq-w3-g32__ts tiny__gptq-w4-g32-fp4__ts tiny__gptq-w4-g32-nf4__ts tiny__gptq-w4-g32-sym__ts tiny__gptq-w4-g32__ts tiny__rtn-w3-g32 tiny__rtn-w3-g32-sym tiny__rtn-w4-g32 tiny__rtn-w4-g32-fp4 tiny__rtn-w4-g32-nf4 tiny__rtn-w4-g32-sym "
[ "$keys" = "$want" ] || { cat "$T/list"; fail "points: $keys"; }
# run the grid points and one int point (the others are covered elsewhere)
for k in tiny__rtn-w4-g32 tiny__rtn-w4-g32-nf4 tiny__gptq-w4-g32-fp4__ts; do
  i=$(awk -v k="$k" '$3 == k {print $1}' "$T/list")
  run sweep --spec "$T/spec.json" --out "$T/r" --point "$i" -q || fail "point $k ($i)"
done
run sweep --spec "$T/spec.json" --out "$T/r" --merge -q || fail "--merge"
head -n 1 "$T/r/results.csv" | grep -q ',grid,bits_per_param,peak_rss_max_bytes,' ||
  fail "results.csv header: $(head -n 1 "$T/r/results.csv")"
row() { /usr/bin/python3 -c 'import json,sys
r = json.load(open(sys.argv[1] + "/rows/" + sys.argv[2] + ".json"))
print(repr(list(r["ppl"].values())[0]), r["grid"], repr(r["bits_per_param"]))' "$T/r" "$1"; }
# the linears' shapes from config.json, groups of 32
bpp() { /usr/bin/python3 -c 'import json, math, sys
b, s, z = map(float, sys.argv[2:5]); c = json.load(open(sys.argv[1] + "/config.json"))
d, f = c["hidden_size"], c["intermediate_size"]
kv = c["num_key_value_heads"] * c.get("head_dim", d // c["num_attention_heads"])
sh = [(d, d), (kv, d), (kv, d), (d, d), (f, d), (f, d), (d, f)]
print(repr(sum(o * n * b + o * math.ceil(n / 32) * (s + z) for o, n in sh) / sum(o * n for o, n in sh)))' "$MODEL" "$@"; }
read -r p g x <<<"$(row tiny__rtn-w4-g32)"
[ "$g" = int ] && [ "$x" = "$(bpp 4 16 4)" ] || fail "rtn int4 row: grid $g bits $x (want $(bpp 4 16 4))"
for key in "tiny__rtn-w4-g32-nf4|--method rtn --grid nf4 --group 32|nf4" \
           "tiny__gptq-w4-g32-fp4__ts|--method gptq --grid fp4 --group 32 --calib $TEXT --nsamples 8 --seqlen 64|fp4"; do
  IFS='|' read -r k args grid <<<"$key"
  read -r p g x <<<"$(row "$k")"
  [ "$g" = "$grid" ] && [ "$x" = "$(bpp 4 32 0)" ] || fail "$k: grid $g bits $x (want $grid, $(bpp 4 32 0))"
  # shellcheck disable=SC2086
  run quantize --model "$MODEL" $args --bits 4 --out "$T/ck-$k" -q
  d=$(run eval --ckpt "$T/ck-$k" --data "$TEXT" --seqlen 128 --windows 2 --json -q | grep '^{' |
      /usr/bin/python3 -c 'import json,sys; print(repr(json.loads(sys.stdin.read())["ppl"]))')
  [ "$d" = "$p" ] || fail "$k: sweep ppl $p, direct quantize + eval $d"
  echo "ok $k: ppl $p (= direct run), $x bits per parameter"
done
echo "grids_sweep: all checks passed"
