#!/usr/bin/env bash
# SmoothQuant checkpoint of stories260K at NP ranks vs tests/sq_check.py
# (independent numpy forward, smoothing and int8 quantization).
#   sq_exact.sh NP ALPHA
set -euo pipefail
np=$1 alpha=$2
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
rm -rf "$T"; mkdir -p "$T"
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
"${MPIEXEC:-mpiexec}" -n "$np" "$B" quantize --model "$S/models/stories260K-hf" \
  --calib "$S/data/tinystories_valid_head.txt" --nsamples 128 --seqlen 512 \
  --method smoothquant --alpha "$alpha" --out "$T/ck" -q
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/sq_check.py" "$S/models/stories260K-hf" \
  "$S/golden/calib/stories260K_calib_ids.txt" "$T/ck" "$alpha"
echo "sq_exact: 1 passed, 0 failed"
