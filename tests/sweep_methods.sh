#!/usr/bin/env bash
# A sweep over every method (rtn, gptq, quantease, awq, smoothquant) plus the
# hidden test-only method testclip on the tiny model at np 2: one row per
# method, and each row's perplexity equals a direct `quantize` + `eval` of
# the same configuration exactly (same binary, same rank count: the sweep
# runs the same code, so bit-identical is the right tolerance). testclip
# with its default --clip 1 is round-to-nearest, so its row equals the rtn
# row; with --clip 0.5 it must differ (the option reaches the method).
# Small on purpose: 8 calibration windows of 64 tokens, 4 eval windows.
set -euo pipefail
S=${QZ_SOURCE_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
NP=2
MODEL=$S/examples/stories260K-hf
TEXT=$S/examples/tinystories_sample.txt
rm -rf "$T"
mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$NP" "$B" "$@"; }
fail() { echo "sweep_methods: FAIL: $*" >&2; exit 1; }
ppl_of() { # DIR KEY -> ppl (repr, 17 digits) of that row
  /usr/bin/python3 -c 'import json,sys
for l in open(sys.argv[1] + "/results.jsonl"):
    r = json.loads(l)
    if r["key"] == sys.argv[2]: print(repr(list(r["ppl"].values())[0]))' "$1" "$2"
}
cat >"$T/spec.json" <<EOF
{"models": [{"name": "tiny", "path": "$MODEL"}],
 "methods": ["rtn", "gptq", "quantease", "awq", "smoothquant", "testclip"],
 "bits": [4], "groups": [32],
 "calibration": {"name": "ts", "text": "$TEXT", "nsamples": 8, "seqlen": 64},
 "eval": {"name": "ts", "text": "$TEXT", "seqlen": 128, "windows": 4}}
EOF
run sweep --spec "$T/spec.json" --out "$T/r" -q 2>"$T/sweep.err" || { cat "$T/sweep.err"; fail "sweep failed"; }
[ "$(wc -l <"$T/r/results.jsonl")" -eq 6 ] || fail "expected 6 rows, got $(wc -l <"$T/r/results.jsonl")"
calib=(--calib "$TEXT" --nsamples 8 --seqlen 64)
# key | quantize arguments of the direct run
while IFS='|' read -r key args; do
  # shellcheck disable=SC2086
  run quantize --model "$MODEL" $args --out "$T/ck-$key" -q
  d=$(run eval --ckpt "$T/ck-$key" --data "$TEXT" --seqlen 128 --windows 4 --json -q | grep '^{' |
      /usr/bin/python3 -c 'import json,sys; print(repr(json.loads(sys.stdin.read())["ppl"]))')
  s=$(ppl_of "$T/r" "$key")
  [ -n "$s" ] || fail "no sweep row $key"
  [ "$d" = "$s" ] || fail "$key: sweep ppl $s != direct quantize+eval $d"
  echo "  ok: $key ppl $s == quantize + eval"
done <<EOF
tiny__rtn-w4-g32|--method rtn --bits 4 --group 32
tiny__gptq-w4-g32__ts|--method gptq --bits 4 --group 32 ${calib[*]}
tiny__quantease-w4-g32__ts|--method quantease --bits 4 --group 32 ${calib[*]}
tiny__awq-w4-g32__ts|--method awq --bits 4 --group 32 ${calib[*]}
tiny__smoothquant-w8-gch-sym__ts|--method smoothquant ${calib[*]}
tiny__testclip-w4-g32|--method testclip --bits 4 --group 32
EOF
[ "$(ppl_of "$T/r" tiny__testclip-w4-g32)" = "$(ppl_of "$T/r" tiny__rtn-w4-g32)" ] ||
  fail "testclip --clip 1 differs from rtn"
echo "  ok: testclip --clip 1 == rtn"
# the test-only method's own option through quantize (resume identity),
# layer, plan and export, with no file outside methods/ naming it
run quantize --model "$MODEL" --method testclip --bits 4 --group 32 --clip 0.5 --out "$T/ck-c5" -q
/usr/bin/python3 - "$T/ck-c5/manifest.json" <<'PY' || fail "options JSON of testclip"
import json, sys
o = json.load(open(sys.argv[1]))["options"]
assert o["method"] == "testclip" and o["testclip"] == {"clip": 0.5}, o
PY
rc=0
run quantize --model "$MODEL" --method testclip --bits 4 --group 32 --clip 0.7 --out "$T/ck-c5" --resume -q \
  2>"$T/resume.err" || rc=$?
[ $rc -ne 0 ] && grep -q "clip" "$T/resume.err" || fail "a resume with another --clip was not refused (rc $rc)"
c5=$(run eval --ckpt "$T/ck-c5" --data "$TEXT" --seqlen 128 --windows 4 --json -q | grep '^{')
[ "$c5" != "$(run eval --ckpt "$T/ck-tiny__rtn-w4-g32" --data "$TEXT" --seqlen 128 --windows 4 --json -q | grep '^{')" ] ||
  fail "--clip 0.5 did not change the result"
echo "  ok: --clip 0.5 recorded in the options JSON, changes the result, refuses a resume with 0.7"
/usr/bin/python3 - "$T/x.safetensors" <<'PY'
import json, struct, sys
import numpy as np
rng = np.random.default_rng(5)
W = rng.standard_normal((64, 64)).astype("<f4")
h = {"W": {"dtype": "F32", "shape": [64, 64], "data_offsets": [0, W.nbytes]}}
b = json.dumps(h).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(b)) + b + W.tobytes())
PY
run layer --in "$T/x.safetensors" --method testclip --bits 4 --group 32 --clip 0.5 --out "$T/y.safetensors" -q
/usr/bin/python3 - "$T/x.safetensors" "$T/y.safetensors" <<'PY' || fail "layer --method testclip"
import json, struct, sys
import numpy as np
def read(p):
    f = open(p, "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); d = f.read()
    m = h.pop("__metadata__", {})
    t = {k: np.frombuffer(d[v["data_offsets"][0]:v["data_offsets"][1]],
                          {"F32": "<f4", "U8": "u1", "I32": "<i4"}[v["dtype"]]).reshape(v["shape"])
         for k, v in h.items()}
    return t, m
x, _ = read(sys.argv[1]); y, m = read(sys.argv[2])
assert m["method"] == "testclip" and float(m["clip"]) == 0.5, m
W = x["W"]; c = 0.5 * np.abs(W).max(axis=1, keepdims=True)
# every dequantized weight lies inside the clipped range (up to one step)
step = y["scale"].max(axis=1, keepdims=True)
assert (np.abs(y["Q"]) <= c + step).all(), "Q outside the clip range"
PY
echo "  ok: layer --method testclip --clip 0.5 (metadata, clipped range)"
"$B" plan --model "$MODEL" --np 2 --method testclip --clip 0.5 --json -q | grep -q '"peak"' ||
  fail "plan --method testclip"
run export --ckpt "$T/ck-c5" --format gptq --out "$T/ex" -q 2>"$T/ex.err" ||
  grep -q "multiples of 32" "$T/ex.err" || { cat "$T/ex.err"; fail "export of a testclip checkpoint"; }
rc=0
run export --ckpt "$T/ck-c5" --format compressed-tensors --out "$T/ex2" -q 2>"$T/ex2.err" || rc=$?
[ $rc -ne 0 ] && grep -q "which has no compressed-tensors export" "$T/ex2.err" ||
  { cat "$T/ex2.err"; fail "a format testclip does not declare was not refused"; }
echo "  ok: plan and export ask testclip's table"
echo "sweep_methods: all checks passed"
