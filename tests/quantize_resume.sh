#!/usr/bin/env bash
# Crash and resume: a rank is SIGKILLed while block 3 runs (blocks 0-2 are
# complete); --resume must finish the job with a checkpoint identical
# (h5diff, every dataset and attribute) to an uninterrupted run at the same np.
# Also: resume with other options and a truncated manifest fail clearly.
#   quantize_resume.sh NP SNAPSHOT_EVERY
set -uo pipefail
np=$1 snap=$2
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
q=(quantize --model "$S/models/stories260K-hf" --calib "$S/data/tinystories_valid_head.txt"
   --nsamples 32 --seqlen 512 --method gptq --bits 4 --group 32 --snapshot-every "$snap" -q)
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }

run "${q[@]}" --out "$T/full" || fail "uninterrupted run"
victim=$((np - 1))
MPIQUANT_FAULT="kill:$victim:3" run "${q[@]}" --out "$T/crash" >"$T/crash.log" 2>&1 \
  && fail "the killed run reported success"
grep -q "kills itself in block 3" "$T/crash.log" || { cat "$T/crash.log"; fail "fault hook did not fire"; }
done_blocks=$(/usr/bin/python3 -c 'import json,sys; print(sorted(b["block"] for b in json.load(open(sys.argv[1]))["completed_blocks"]))' "$T/crash/manifest.json")
[ "$done_blocks" = "[0, 1, 2]" ] || fail "after the crash the manifest says complete: $done_blocks (want [0, 1, 2])"
[ -f "$T/crash/blocks-003.h5" ] && fail "block 3's file was finalised although the run died in it"

# resume with other options: clear error, nothing changed
out=$(run "${q[@]}" --bits 3 --out "$T/crash" --resume 2>&1); rc=$?
[ $rc -eq 3 ] && grep -q "options differ from the checkpoint's: 'bits': this run has 3, the checkpoint has 4" <<<"$out" \
  || { echo "$out"; fail "resume with other options: rc $rc"; }

run "${q[@]}" --out "$T/crash" --resume >"$T/resume.log" 2>&1 || { cat "$T/resume.log"; fail "resume"; }
for f in "$T"/full/blocks-*.h5; do
  h5diff "$f" "$T/crash/$(basename "$f")" >/dev/null || { h5diff -v "$f" "$T/crash/$(basename "$f")" | head -20; fail "$(basename "$f") differs after resume"; }
done
[ "$(ls "$T"/full/blocks-*.h5 | wc -l)" = "$(ls "$T"/crash/blocks-*.h5 | wc -l)" ] || fail "file count differs"
echo "resume after SIGKILL in block 3 (np $np, snapshot every $snap): identical to the uninterrupted run"

# truncated manifest: clear error, exit 5
head -c 50 "$T/crash/manifest.json" > "$T/m" && cp "$T/m" "$T/crash/manifest.json"
out=$(run "${q[@]}" --out "$T/crash" --resume 2>&1); rc=$?
[ $rc -eq 5 ] && grep -q "corrupt or truncated" <<<"$out" || { echo "$out"; fail "truncated manifest: rc $rc"; }

# unwritable --out (below a regular file): every rank stops with QZ_ERR_IO
out=$(run "${q[@]}" --out "$T/m/ckpt" 2>&1); rc=$?
[ $rc -eq 4 ] && grep -q "cannot create directory" <<<"$out" || { echo "$out"; fail "unwritable --out: rc $rc"; }
echo "quantize_resume: 1 passed, 0 failed"
