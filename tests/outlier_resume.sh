#!/usr/bin/env bash
# Crash and resume for an outlier method: a rank is SIGKILLed while block 3
# runs; --resume must finish with a checkpoint identical (h5diff: codes,
# statistics, sparse part, /aux outlier columns, attributes) to an
# uninterrupted run at the same np.
#   outlier_resume.sh NP METHOD [OPTIONS...]
set -uo pipefail
np=$1 meth=$2; shift 2
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
q=(quantize --model "$S/models/stories260K-hf" --calib "$S/data/tinystories_valid_head.txt"
   --nsamples 16 --seqlen 128 --method "$meth" "$@" -q)
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
run "${q[@]}" --out "$T/full" || fail "uninterrupted run"
MPIQUANT_FAULT="kill:$((np - 1)):3" run "${q[@]}" --out "$T/crash" >"$T/crash.log" 2>&1 \
  && fail "the killed run reported success"
grep -q "kills itself in block 3" "$T/crash.log" || { cat "$T/crash.log"; fail "fault hook did not fire"; }
run "${q[@]}" --out "$T/crash" --resume || fail "resume"
for f in "$T"/full/blocks-*.h5; do
  h5diff "$f" "$T/crash/$(basename "$f")" >/dev/null ||
    { h5diff -v "$f" "$T/crash/$(basename "$f")" | head -20; fail "$meth: $(basename "$f") differs after resume"; }
done
echo "$meth: resumed checkpoint identical to the uninterrupted run"
echo "outlier_resume: 1 passed, 0 failed"
