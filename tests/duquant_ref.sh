#!/usr/bin/env bash
# duquant_ref.sh NP: quantize --method none --rotate duquant --block 16 of
# stories260K on 16 golden calibration windows at NP ranks, then
# tests/duquant_check.py recomputes block 0's q/k/v-input statistics, sample,
# smoothing, greedy rotations, zigzag permutation and fused weights in numpy.
set -euo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
ids="$S/golden/calib/stories260K_calib_ids.txt"
"${MPIEXEC:-mpiexec}" -n "$np" "$B" quantize --model "$S/models/stories260K-hf" \
  --calib-tokens "$ids" --nsamples 16 --method none --rotate duquant --block 16 \
  --smooth 0.5 --out "$T/ck" -q
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/duquant_check.py" "$S/models/stories260K-hf" "$ids" 16 \
  "$T/ck" 0.5 16
