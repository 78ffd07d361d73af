#!/usr/bin/env bash
# AWQ and SmoothQuant calibrate on the fp model: after a SIGKILL in block 3,
# --resume replays the completed blocks with the model's fp weights (from
# the snapshot on) and must end with a checkpoint identical (h5diff) to an
# uninterrupted run.
#   awq_resume.sh NP
set -uo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
for meth in "awq --bits 4 --group 32" "smoothquant --alpha 0.5"; do
  tag=${meth%% *}
  q=(quantize --model "$S/models/babyllama-tok105-hf" --calib "$S/data/tinystories_valid_head.txt"
     --nsamples 16 --seqlen 256 --snapshot-every 2 --method $meth -q)
  run "${q[@]}" --out "$T/$tag-full" || fail "$tag uninterrupted run"
  MPIQUANT_FAULT="kill:$((np - 1)):3" run "${q[@]}" --out "$T/$tag-crash" >"$T/$tag.log" 2>&1 \
    && fail "$tag: the killed run reported success"
  grep -q "kills itself in block 3" "$T/$tag.log" || { cat "$T/$tag.log"; fail "fault hook did not fire"; }
  run "${q[@]}" --out "$T/$tag-crash" --resume || fail "$tag resume"
  for f in "$T/$tag-full"/blocks-*.h5; do
    h5diff "$f" "$T/$tag-crash/$(basename "$f")" || fail "$tag: resumed run differs in $(basename "$f")"
  done
  echo "$tag: resumed checkpoint identical to the uninterrupted one"
done
echo "awq_resume: 1 passed, 0 failed"
