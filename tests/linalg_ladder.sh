#!/usr/bin/env bash
# mpiquant layer on the rank-deficient golden case with --damp 0: H is not
# positive definite, the damping ladder must step up, log it, succeed, and
# record the damping used in the output metadata.  usage: linalg_ladder.sh NP
set -u
np=${1:-1}
mkdir -p "$QZ_TEST_TMP"
in="$QZ_SHARED_DIR/golden/gptq/gptq_h_w4_g128_asym_rankdef.safetensors"
out="$QZ_TEST_TMP/h.safetensors"
rm -f "$out"
"$MPIEXEC" -n "$np" "$MPIQUANT_BIN" layer --in "$in" --method gptq --bits 4 \
  --group 128 --damp 0 --out "$out" || exit 1
/usr/bin/python3 - "$out" <<'PY'
import json, struct, sys
f = open(sys.argv[1], "rb")
n = struct.unpack("<Q", f.read(8))[0]
m = json.loads(f.read(n))["__metadata__"]
print("damp_used=" + m["damp_used"])
sys.exit(0 if float(m["damp_used"]) > 0 else 1)
PY
