#!/usr/bin/env bash
# rotate_sweep.sh: rotation options in a sweep variant's args (W4A4 GPTQ
# with --rotate hadamard at np 2): the point's perplexity equals a direct
# quantize + eval with the same options (bit-identical: the same run), and
# a bad rotation value in a variant is a spec error naming the option.
set -euo pipefail
S=${QZ_SOURCE_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n 2 "$B" "$@"; }
MODEL=$S/examples/stories260K-hf TEXT=$S/examples/tinystories_sample.txt
ARGS='"--act-bits", "4", "--act-asym", "--rotate", "hadamard", "--rotate-seed", "2"'
cat >"$T/spec.json" <<SPEC
{"models": [{"name": "tiny", "path": "$MODEL"}], "bits": [4], "groups": [-1],
 "methods": [{"name": "gptq-a4-had", "method": "gptq", "args": [$ARGS]}],
 "calibration": {"name": "ts", "text": "$TEXT", "nsamples": 8, "seqlen": 64},
 "eval": {"name": "ts", "text": "$TEXT", "seqlen": 128, "windows": 4}}
SPEC
run sweep --spec "$T/spec.json" --out "$T/sw" -q
run quantize --model "$MODEL" --calib "$TEXT" --nsamples 8 --seqlen 64 --method gptq --bits 4 \
  --group -1 --act-bits 4 --act-asym --rotate hadamard --rotate-seed 2 --out "$T/ck" -q
ref=$(run eval --ckpt "$T/ck" --data "$TEXT" --seqlen 128 --windows 4 --json -q | tail -1)
/usr/bin/python3 - "$T/sw/results.csv" "$ref" <<'PY'
import csv, json, sys
row = next(csv.DictReader(open(sys.argv[1])))
ref = json.loads(sys.argv[2])["ppl"]
print(f"sweep point {row['key']}: ppl {row['ppl_ts']}, direct run {ref!r}")
sys.exit(0 if float(row["ppl_ts"]) == ref else "FAIL: sweep point differs from the direct run")
PY
sed 's/"hadamard"/"quarot"/' "$T/spec.json" >"$T/bad.json"
out=$(run sweep --spec "$T/bad.json" --out "$T/bad" -q 2>&1) && { echo "FAIL: bad rotation accepted"; exit 1; }
grep -q -- "--rotate 'quarot': one of none, hadamard, duquant" <<<"$out" || { echo "$out"; exit 1; }
echo "rotate_sweep: 1 passed, 0 failed"
