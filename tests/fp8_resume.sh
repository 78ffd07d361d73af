#!/usr/bin/env bash
# --method fp8 --act static at np 2: SIGKILL of rank 1 in block 3, then
# --resume (the completed blocks replayed from the checkpoint, the static
# scales of the remaining blocks observed on that stream) gives a checkpoint
# h5diff-identical to an uninterrupted run, /aux input scales included.
set -uo pipefail
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n 2 "$B" "$@"; }
fail() { echo "fp8_resume: FAIL: $*"; exit 1; }
a=(--model "$S/models/stories260K-hf" --method fp8 --act static
   --calib "$S/data/tinystories_valid_head.txt" --nsamples 16 --seqlen 128 --snapshot-every 1)
run quantize "${a[@]}" --out "$T/full" -q || fail "uninterrupted run"
MPIQUANT_FAULT=kill:1:3 run quantize "${a[@]}" --out "$T/rs" -q >"$T/kill.log" 2>&1 && fail "the fault did not stop the run"
run quantize "${a[@]}" --out "$T/rs" --resume -q || fail "resume"
for f in "$T"/full/blocks-*.h5; do
  h5diff "$f" "$T/rs/$(basename "$f")" >/dev/null || fail "resumed run differs in $(basename "$f")"
done
h5dump -d /aux/4/fp8.input_scale "$T/rs/blocks-004.h5" >/dev/null || fail "no static scales in block 4"
echo "fp8_resume: identical after kill + resume ($(ls "$T"/full/blocks-*.h5 | wc -l) files)"
echo "fp8_resume: 1 passed, 0 failed"
