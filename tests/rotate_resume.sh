#!/usr/bin/env bash
# rotate_resume.sh NP ROT: a rank is SIGKILLed in block 3 of a GPTQ W4A4
# quantization with --rotate ROT (snapshot every 2 blocks: the resume reads
# the rotated hidden states of block 2 and replays block 2 from the
# checkpoint, with DuQuant's transforms from its aux data); --resume must
# give block files h5diff-identical to an uninterrupted run.
set -uo pipefail
np=$1 rot=$2
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
q=(quantize --model "$S/models/stories260K-hf" --calib "$S/data/tinystories_valid_head.txt"
   --nsamples 16 --seqlen 128 --method gptq --bits 4 --group -1 --act-bits 4 --kv-bits 4
   --rotate "$rot" --snapshot-every 2)
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
run "${q[@]}" -q --out "$T/full" || fail "uninterrupted run"
MPIQUANT_FAULT="kill:$((np - 1)):3" run "${q[@]}" -q --out "$T/crash" >"$T/crash.log" 2>&1 \
  && fail "the killed run reported success"
grep -q "kills itself in block 3" "$T/crash.log" || { cat "$T/crash.log"; fail "fault hook did not fire"; }
run "${q[@]}" --out "$T/crash" --resume >"$T/resume.log" 2>&1 || { cat "$T/resume.log"; fail "resume"; }
grep -q "resume: hidden states of block 2 from the snapshot" "$T/resume.log" &&
  grep -q "resume: replayed blocks 2..2" "$T/resume.log" || { cat "$T/resume.log"; fail "resume did not replay block 2 from the snapshot"; }
n=0
for f in "$T"/full/blocks-*.h5; do
  h5diff "$f" "$T/crash/$(basename "$f")" >/dev/null || { h5diff -v "$f" "$T/crash/$(basename "$f")" | head -20; fail "$(basename "$f") differs after resume"; }
  n=$((n + 1))
done
[ $n -eq 5 ] || fail "$n block files (want 5)"
echo "rotate_resume ($rot, np $np): $n block files identical after SIGKILL + resume"
echo "rotate_resume: 1 passed, 0 failed"
