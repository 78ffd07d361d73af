#!/usr/bin/env bash
# Crash at any checkpoint write step, then --resume: the directory must equal
# an uninterrupted run's (h5diff of every HDF5 file including the snapshot,
# the manifest up to wall-clock times, the same file names: no *.tmp left).
# The test hook MPIQUANT_FAULT=io:R:N (io/ckpt.c) SIGKILLs rank R at its N-th
# write step; io-trace lists the steps. KILLS points are drawn with a fixed
# seed over all steps, plus every step of the last snapshot write.
#   reliability_kill.sh NP KILLS
set -uo pipefail
np=$1 kills=$2
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
# pre-tokenized calibration (a few KB of text): each run is then ~0.5 s
head -c 60000 "$S/data/tinystories_valid_head.txt" >"$T/calib.txt"
"$B" -q tokenize --model "$S/models/stories260K-hf" --text "$T/calib.txt" --out "$T/calib.bin" \
  || { echo "FAIL: tokenize"; exit 1; }
q=(quantize --model "$S/models/stories260K-hf" --calib-tokens "$T/calib.bin"
   --nsamples 8 --seqlen 64 --method gptq --bits 4 --group 32 --blocks-per-file 2
   --snapshot-every 2 -q)
run() { if [ "$np" = 1 ]; then "$B" "$@"; else "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; fi; }
victim=0  # the traced rank: rank 0 also writes the manifest
run "${q[@]}" --out "$T/full" || { echo "FAIL: uninterrupted run"; exit 1; }
MPIQUANT_FAULT=io-trace run "${q[@]}" --out "$T/trace" 2>"$T/trace.log" >/dev/null \
  || { echo "FAIL: traced run"; exit 1; }
nsteps=$(grep -c "io step" "$T/trace.log")
[ "$nsteps" -gt 20 ] || { cat "$T/trace.log"; echo "FAIL: only $nsteps io steps traced"; exit 1; }
# the last snapshot write: from its create to the manifest rename after it
last_snap=$(grep -n "create .*act-snapshot.h5.tmp" "$T/trace.log" | tail -1 | cut -d: -f1)
points=$(seq "$last_snap" $((last_snap + 4)))
# np > 1 (a killed mpiexec costs seconds): the collective snapshot write and
# the manifest update after it
[ "$np" = 1 ] || points="$((last_snap + 1)) $((last_snap + 3))"
s=12345
for _ in $(seq 1 "$kills"); do s=$(( (s * 1103515245 + 12345) % 2147483648 )); points+=" $(( s % nsteps + 1 ))"; done
pass=0 fail=0
for p in $points; do
  d=$T/k$p; rm -rf "$d"
  MPIQUANT_FAULT="io:$victim:$p" run "${q[@]}" --out "$d" >"$d.log" 2>&1 \
    && { echo "FAIL step $p: the killed run reported success"; fail=$((fail + 1)); continue; }
  grep -q "killed at io step $p" "$d.log" || { echo "FAIL step $p: the hook did not fire"; fail=$((fail + 1)); continue; }
  what=$(grep -o "killed at io step.*" "$d.log")
  if ! run "${q[@]}" --out "$d" --resume >"$d.resume.log" 2>&1; then
    echo "FAIL step $p ($what): resume failed"; tail -5 "$d.resume.log"; fail=$((fail + 1)); continue
  fi
  why=$(/usr/bin/python3 "$QZ_SOURCE_DIR/tests/ckpt_same.py" "$T/full" "$d" 2>&1)
  for f in "$T"/full/*.h5; do
    [ -n "$why" ] && break
    h5diff "$f" "$d/$(basename "$f")" >/dev/null 2>&1 || why="$(basename "$f") differs (h5diff)"
  done
  if [ -n "$why" ]; then echo "FAIL step $p ($what): $why"; fail=$((fail + 1))
  else pass=$((pass + 1)); fi
  rm -rf "$d" "$d.log" "$d.resume.log"
done
echo "kill at $(wc -w <<<"$points") of $nsteps io steps (np $np), then --resume: $pass identical"
echo "reliability_kill: $pass passed, $fail failed"
[ $fail -eq 0 ]
