#!/usr/bin/env bash
# --method fp8 through `layer` and `sweep`:
# - layer on a random 100 x 70 matrix (rows of very different magnitudes) at
#   np 1 and 3, per channel and with 32 x 32 blocks (blocks span the ranks'
#   rows at np 3): codes, scales and Q identical to tests/fp8_ref.py's
#   weight_ref (numpy, from the definitions);
# - a sweep with "methods": ["fp8"] and two variants ({"name", "method",
#   "args"}: static activations, 32 x 32 blocks) at np 2: each row's perplexity equals a
#   direct quantize + eval --ckpt exactly (same binary and np).
set -euo pipefail
S=${QZ_SOURCE_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
rm -rf "$T"; mkdir -p "$T"
run() { local np=$1; shift; "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "fp8_layer_sweep: FAIL: $*" >&2; exit 1; }
/usr/bin/python3 - "$T/w.safetensors" <<'PY'
import json, struct, sys
import numpy as np
rng = np.random.default_rng(7)
W = (rng.standard_normal((100, 70)) * np.exp(2 * rng.standard_normal((100, 1)))).astype("<f4")
W[3, :] = 0.0                     # an all-zero row: scale FLT_EPSILON
W[5, :8] = [448, 1, 1.0625, 17, 19, -0.0, 2.0**-10, 3e38]  # ties and saturation at scale 1
h = {"W": {"dtype": "F32", "shape": list(W.shape), "data_offsets": [0, W.nbytes]}}
b = json.dumps(h).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(b)) + b + W.tobytes())
PY
for np in 1 3; do
  for blk in 0 32; do
    run $np layer --in "$T/w.safetensors" --method fp8 --bits 8 --weight-block $blk \
      --out "$T/r$np-$blk.safetensors" -q || fail "layer np $np block $blk"
    /usr/bin/python3 - "$T/w.safetensors" "$T/r$np-$blk.safetensors" $blk "$S/tests" <<'PY' \
      || fail "layer np $np block $blk differs from the numpy reference"
import sys
sys.path.insert(0, sys.argv[4])
import numpy as np
from sq_check import read_st
import json, struct
def st(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    dt = {"F32": "<f4", "U8": "u1", "I32": "<i4"}
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                             dt[v["dtype"]]).reshape(v["shape"]) for k, v in h.items()}
from fp8_ref import weight_ref
W = st(sys.argv[1])["W"]; r = st(sys.argv[2]); blk = int(sys.argv[3])
codes, sc, q = weight_ref(W, blk)
ok = (np.array_equal(r["codes"], codes) and np.array_equal(r["scale"], sc) and
      np.array_equal(r["Q"].view(np.uint32), q.view(np.uint32)) and not r["zero"].any())
print("layer block %d: codes %s, scales %s, Q %s" % (blk, np.array_equal(r["codes"], codes),
      np.array_equal(r["scale"], sc), np.array_equal(r["Q"].view(np.uint32), q.view(np.uint32))))
sys.exit(0 if ok else 1)
PY
  done
done
MODEL=$S/examples/stories260K-hf TEXT=$S/examples/tinystories_sample.txt
cat >"$T/spec.json" <<EOF
{"models": [{"name": "tiny", "path": "$MODEL"}], "bits": [4], "groups": [32],
 "methods": ["fp8", {"name": "fp8-static", "method": "fp8", "args": ["--act", "static"]},
             {"name": "fp8-b32", "method": "fp8", "args": ["--weight-block", "32"]}],
 "calibration": {"name": "ts", "text": "$TEXT", "nsamples": 8, "seqlen": 64},
 "eval": {"name": "ts", "text": "$TEXT", "seqlen": 128, "windows": 4}}
EOF
run 2 sweep --spec "$T/spec.json" --out "$T/sw" -q 2>"$T/sweep.err" || { cat "$T/sweep.err"; fail "sweep"; }
[ "$(wc -l <"$T/sw/results.jsonl")" -eq 3 ] || fail "expected 3 rows"
while IFS='|' read -r key args <&3; do
  s=$(/usr/bin/python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["key"] == sys.argv[2]: print(repr(list(r["ppl"].values())[0]))' "$T/sw/results.jsonl" "$key")
  # shellcheck disable=SC2086
  run 2 quantize --model "$MODEL" --method fp8 $args --out "$T/ck-$key" -q
  d=$(run 2 eval --ckpt "$T/ck-$key" --data "$TEXT" --seqlen 128 --windows 4 --json -q | grep '^{' |
      /usr/bin/python3 -c 'import json,sys; print(repr(json.loads(sys.stdin.read())["ppl"]))')
  [ -n "$s" ] && [ "$s" = "$d" ] || fail "sweep row $key ppl '$s' != quantize + eval $d"
  echo "  ok: sweep $key ppl $s == quantize + eval"
done 3<<EOF
tiny__fp8-w8-gch-sym|
tiny__fp8-static-w8-gch-sym__ts|--act static --calib $TEXT --nsamples 8 --seqlen 64
tiny__fp8-b32-w8-g32-sym|--weight-block 32
EOF
# a variant's args are the method's own options, named in the error
sed 's/"--act", "static"/"--bits", "4"/' "$T/spec.json" >"$T/bad.json"
out=$(run 1 sweep --spec "$T/bad.json" --out "$T/bad" --list 2>&1) && fail "a variant with --bits was accepted"
grep -q "'--bits' is not an option of --method fp8" <<<"$out" || { echo "$out"; fail "variant error"; }
echo "  ok: a variant with a common option is refused"
echo "fp8_layer_sweep: 1 passed, 0 failed"
