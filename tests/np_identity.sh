#!/usr/bin/env bash
# np_identity.sh METHOD [QUANTIZE_OPTIONS...]
# The same checkpoint at np 1, 2, 3 and 4 (docs/checkpoint.md's promise):
# every block file h5diff-identical to np 1 -- codes, scales, zeros, g_idx,
# perm and every attribute, the per-linear `loss` (summed in row order) and
# damping included. stories260K, all 5 blocks, 32 calibration windows of 128.
# QZ_NPID_NPS="1 3" narrows the rank counts (the sanitizer pass: np 3 is the
# uneven split; the plain run keeps all four).
set -euo pipefail
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
meth=$1; shift
rm -rf "$T"; mkdir -p "$T"
read -r -a nps <<< "${QZ_NPID_NPS:-1 2 3 4}"
[ "${nps[0]}" = 1 ] || { echo "QZ_NPID_NPS must start with 1"; exit 2; }
for np in "${nps[@]}"; do
  "${MPIEXEC:-mpiexec}" -n $np "$B" quantize --model "$S/models/stories260K-hf" \
    --calib "$S/data/tinystories_valid_head.txt" --nsamples 32 --seqlen 128 \
    --method "$meth" "$@" --out "$T/np$np" -q
done
. "$(dirname "$0")/common/same_blocks.sh"
for np in "${nps[@]:1}"; do
  qz_same_blocks "$T/np1" "$T/np$np" "$meth: np $np differs from np 1" || exit 1
done
n=$QZ_SAME_N
grep -q '"loss"' "$T/np1/manifest.json" || true
echo "$meth: np ${nps[*]:1} identical to np 1 ($n block files compared)"
echo "np_identity: 1 passed, 0 failed"
