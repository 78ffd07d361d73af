#!/usr/bin/env bash
# An outlier method through `sweep` at np 2: its row's perplexity equals a
# direct quantize + eval --ckpt of the same configuration exactly (same
# binary and rank count), so the sweep reaches the method (and its eval hook),
# and its bits_per_param column is the direct checkpoint's average of the
# manifest's per-linear bits (outliers included).
#   outlier_sweep.sh METHOD BITS GROUP
set -euo pipefail
meth=$1 bits=$2 group=$3
S=${QZ_SOURCE_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
MODEL=$S/examples/stories260K-hf TEXT=$S/examples/tinystories_sample.txt
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n 2 "$B" "$@"; }
cat >"$T/spec.json" <<EOF
{"models": [{"name": "tiny", "path": "$MODEL"}], "methods": ["$meth"],
 "bits": [$bits], "groups": [$group],
 "calibration": {"name": "ts", "text": "$TEXT", "nsamples": 8, "seqlen": 64},
 "eval": {"name": "ts", "text": "$TEXT", "seqlen": 128, "windows": 4}}
EOF
run sweep --spec "$T/spec.json" --out "$T/r" -q
s=$(/usr/bin/python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["method"] == sys.argv[2]: print(repr(list(r["ppl"].values())[0]))' "$T/r/results.jsonl" "$meth")
run quantize --model "$MODEL" --method "$meth" --bits "$bits" --group "$group" --calib "$TEXT" --nsamples 8 --seqlen 64 \
  --out "$T/ck" -q
d=$(run eval --ckpt "$T/ck" --data "$TEXT" --seqlen 128 --windows 4 --json -q | grep '^{' |
    /usr/bin/python3 -c 'import json,sys; print(repr(json.loads(sys.stdin.read())["ppl"]))')
[ -n "$s" ] && [ "$s" = "$d" ] || { echo "FAIL: sweep row ppl '$s' != direct $d"; exit 1; }
/usr/bin/python3 - "$T/r/results.jsonl" "$meth" "$T/ck/manifest.json" <<'PY' || exit 1
import json, sys
row = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["method"] == sys.argv[2]][0]
b = p = 0
for e in json.load(open(sys.argv[3]))["completed_blocks"]:
    for v in e["stats"].values():
        if isinstance(v, dict) and "params" in v:
            b, p = b + v["bits_per_param"] * v["params"], p + v["params"]
got = row["bits_per_param"]
ok = isinstance(got, float) and abs(got - b / p) <= 1e-9 * b / p
print("bits_per_param column %r, checkpoint %r: %s" % (got, b / p, "ok" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
echo "ok: $meth sweep row ppl $s == quantize + eval"
echo "outlier_sweep: 1 passed, 0 failed"
