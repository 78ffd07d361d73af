#!/usr/bin/env bash
# rotate_w4a4.sh NP: W4A4 (weights rtn 4-bit per channel, activations 4-bit
# asymmetric per token) of stories260K without rotation, with Hadamard
# rotations and with DuQuant: both rotated perplexities must be below
# RATIO x the unrotated one.
#   RATIO 0.95: measured 0.91 (hadamard) and 0.90 (duquant) of 5.10; a
#   rotation that did nothing would give ~1.0, a broken one far above.
set -euo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
RATIO=0.95
rm -rf "$T"; mkdir -p "$T"
M="$S/models/stories260K-hf" D="$S/data/tinystories_valid_head.txt"
ppl() {
  rm -rf "$T/ck"
  "${MPIEXEC:-mpiexec}" -n "$np" "$B" quantize --model "$M" --calib "$D" --nsamples 16 \
    --seqlen 128 --method rtn --bits 4 --group -1 --act-bits 4 --act-asym --rotate "$1" \
    --out "$T/ck" -q
  "${MPIEXEC:-mpiexec}" -n "$np" "$B" eval --ckpt "$T/ck" --data "$D" --seqlen 512 \
    --windows 8 --json -q | tail -1 | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])'
}
p0=$(ppl none) ph=$(ppl hadamard) pd=$(ppl duquant)
/usr/bin/python3 - "$p0" "$ph" "$pd" "$RATIO" <<'PY'
import sys
p0, ph, pd, r = map(float, sys.argv[1:5])
print(f"W4A4 rtn stories260K: ppl {p0:.4f} unrotated, {ph:.4f} hadamard ({ph/p0:.3f}), "
      f"{pd:.4f} duquant ({pd/p0:.3f}); ratio bound {r}")
sys.exit(0 if ph < r * p0 and pd < r * p0 else 1)
PY
echo "rotate_w4a4: 1 passed, 0 failed"
