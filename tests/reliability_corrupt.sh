#!/usr/bin/env bash
# Silent corruption cannot pass: one flipped bit inside a zstd chunk of a
# checkpoint dataset is reported, naming the file and the dataset, by
# mpiquant verify (exit 5), eval --ckpt (exit 5) and export (exit 5, nothing
# written); quantize --resume reports it and rewrites the file, and so
# deleted or truncated block files: the result equals the undamaged
# checkpoint (h5diff, manifest up to wall-clock times).
#   reliability_corrupt.sh NP
set -uo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
M=$S/models/babyllama-tok105-hf
run() { if [ "$np" = 1 ]; then "$B" "$@"; else "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; fi; }
pass=0 fail=0
ok() { echo "ok $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
expect() { # expect NAME CODE REGEX -- ARGS...
  local name=$1 code=$2 re=$3; shift 4
  local out rc
  out=$(timeout -k 5 120 bash -c 'run() { if [ "$0" = 1 ]; then "$1" "${@:2}"; else "${MPIEXEC:-mpiexec}" -n "$0" "$1" "${@:2}"; fi; }; run "$@"' "$np" "$B" "$@" 2>&1); rc=$?
  if [ $rc -ne "$code" ] || ! grep -Eq -- "$re" <<<"$out"; then
    bad "$name: exit $rc (want $code)"; echo "$out" | grep -v "^ *at \|^--\|^$" | head -6; return 1
  fi
  ok "$name"
}
same() { # same NAME DIR: identical to the undamaged checkpoint
  local why
  why=$(/usr/bin/python3 "$QZ_SOURCE_DIR/tests/ckpt_same.py" "$T/ref" "$2" 2>&1)
  for f in "$T"/ref/*.h5; do
    [ -n "$why" ] && break
    h5diff "$f" "$2/$(basename "$f")" >/dev/null 2>&1 || why="$(basename "$f") differs (h5diff)"
  done
  [ -z "$why" ] && ok "$1" || bad "$1: $why"
}
flip() { # flip FILE DATASET: one bit in the middle of the dataset's first chunk
  local bytes addr
  read -r bytes addr < <(h5ls -va "$1/$2" | awk '/^ *0x[0-9a-f]+ +[0-9]+ +[0-9]+ / {print $2, $3; exit}')
  [ -n "$addr" ] || { bad "no chunk address for $2 in $1"; return 1; }
  /usr/bin/python3 -c 'import sys
p, o = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, "rb").read()); b[o] ^= 0x10; open(p, "wb").write(b)' "$1" $((addr + bytes / 2))
}
head -c 60000 "$S/data/tinystories_valid_head.txt" >"$T/calib.txt"
q=(quantize --model "$M" --calib "$T/calib.txt" --nsamples 8 --seqlen 64 --bits 4 --group 32
   --blocks-per-file 1 --snapshot-every 2)
run "${q[@]}" -q --out "$T/ref" || { bad "quantize"; exit 1; }
expect verify-whole 0 "verify $T/ref: ok \(5 of 5 blocks complete, 176 datasets checked\)" -- verify "$T/ref"

cp -r "$T/ref" "$T/bad"
DS=/layers/2/self_attn.q_proj/scales
flip "$T/bad/blocks-002.h5" "$DS"
expect verify-flip 5 "blocks-002.h5: dataset $DS is missing or its data does not decode" -- verify "$T/bad"
expect eval-flip 5 "checkpoint $T/bad, /layers/2/self_attn.q_proj: reading dataset scales failed: its data does not decode" \
  -- eval --ckpt "$T/bad" --data "$T/calib.txt" --seqlen 64 --windows 2
expect export-flip 5 "/layers/2/self_attn.q_proj: reading dataset scales failed" -- export --ckpt "$T/bad" --out "$T/exp"
[ ! -e "$T/exp" ] && [ ! -e "$T/exp.partial" ] && ok "export of a damaged checkpoint wrote nothing" || bad "export left $T/exp"
expect resume-flip 0 "resume: .*blocks-002.h5: dataset $DS is missing or its data does not decode.*quantized again" \
  -- "${q[@]}" --out "$T/bad" --resume
same "resume rewrote the damaged file" "$T/bad"

# a deleted and a truncated block file: redone, not "nothing to do"
rm "$T/bad/blocks-003.h5"; head -c 2000 "$T/ref/blocks-001.h5" >"$T/bad/blocks-001.h5"
expect resume-missing 0 "cannot open $T/bad/blocks-003.h5: No such file or directory; its blocks are quantized again" \
  -- "${q[@]}" --out "$T/bad" --resume
same "resume redid a deleted and a truncated file" "$T/bad"
echo "reliability_corrupt: $pass passed, $fail failed"
[ $fail -eq 0 ]
