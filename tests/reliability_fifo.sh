#!/usr/bin/env bash
# Every input path given a FIFO (nobody writes to it), a character device or
# a directory: a clear error naming the path and what it is, exit 4
# (QZ_ERR_IO), within seconds -- never a hang (open(O_RDONLY) of a FIFO
# blocks until a writer appears). Each case runs under `timeout`, so a
# regression fails as "timed out" instead of hanging the suite.
#   reliability_fifo.sh NP
set -uo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
M=$S/models/stories260K-hf
TXT=$S/data/tinystories_valid_head.txt
LIMIT=30   # seconds per case; a good run takes < 2 s
pass=0 fail=0
# np 1 runs the binary directly (a failing mpiexec costs ~2 s of teardown);
# np > 1 runs the cases where every rank opens the file (MPI-IO, model).
run() {
  if [ "$np" = 1 ]; then timeout -k 5 "$LIMIT" "$B" "$@"
  else timeout -k 5 "$LIMIT" "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; fi
}
MPI_CASES=" quantize-model calib ckpt-block-fifo ckpt-block-dir manifest-eval inspect-manifest-v7 "
expect() { # expect NAME CODE REGEX -- ARGS...
  local name=$1 code=$2 re=$3; shift 4
  [ "$np" = 1 ] || [[ "$MPI_CASES" == *" $name "* ]] || return 0
  local out rc
  out=$(run "$@" 2>&1); rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "FAIL $name: timed out after $LIMIT s (hang)"; fail=$((fail + 1)); return
  fi
  if [ $rc -ne "$code" ] || ! grep -Eq -- "$re" <<<"$out"; then
    echo "FAIL $name: exit $rc (want $code), output:"; echo "$out" | head -8
    fail=$((fail + 1)); return
  fi
  echo "ok $name"; pass=$((pass + 1))
}
model_with() { # a copy of the model (symlinks) with FILE replaced by a FIFO
  local dir=$T/m-$1; mkdir -p "$dir"
  for f in "$M"/*; do ln -s "$f" "$dir/$(basename "$f")"; done
  rm "$dir/$1"; mkfifo "$dir/$1"; echo "$dir"
}
mkfifo "$T/fifo"
FIFO_RE='is a FIFO \(named pipe\), expected a regular file'

d=$(model_with model.safetensors)
expect model.safetensors 4 "$d/model.safetensors $FIFO_RE" -- inspect "$d"
expect quantize-model 4 "model.safetensors $FIFO_RE" -- quantize --model "$d" --method rtn --out "$T/x1"
d=$(model_with config.json)
expect config.json 4 "config.json $FIFO_RE" -- quantize --model "$d" --method rtn --out "$T/x2"
d=$(model_with tokenizer.json)
expect tokenizer.json 4 "tokenizer.json $FIFO_RE" -- tokenize --model "$d" --text "$TXT" --count
expect calib 4 "$T/fifo $FIFO_RE" -- quantize --model "$M" --calib "$T/fifo" --out "$T/x3"
expect calib-tokens 4 "$T/fifo $FIFO_RE" -- quantize --model "$M" --calib-tokens "$T/fifo" --out "$T/x4"
expect eval-data 4 "$T/fifo $FIFO_RE" -- eval --model "$M" --data "$T/fifo"
expect eval-tokens 4 "$T/fifo $FIFO_RE" -- eval --model "$M" --tokens "$T/fifo"
expect tokenize-text 4 "$T/fifo $FIFO_RE" -- tokenize --model "$M" --text "$T/fifo" --count
expect inspect-path 4 "$T/fifo $FIFO_RE" -- inspect "$T/fifo"
expect calib-chardev 4 "/dev/zero is a character device, expected a regular file" \
  -- quantize --model "$M" --calib /dev/zero --out "$T/x5"
ln -s loop1 "$T/loop2"; ln -s loop2 "$T/loop1"
expect symlink-loop 4 "cannot open $T/loop1: a loop of symbolic links" \
  -- tokenize --model "$M" --text "$T/loop1" --count

# a checkpoint whose block file / manifest / snapshot is a FIFO or a directory
run quantize --model "$M" --method rtn --bits 4 --group 32 --blocks-per-file 1 --out "$T/ck" -q \
  || { echo "FAIL: making the checkpoint"; exit 1; }
cp -r "$T/ck" "$T/ck-fifo"; rm "$T/ck-fifo/blocks-002.h5"; mkfifo "$T/ck-fifo/blocks-002.h5"
expect ckpt-block-fifo 4 "blocks-002.h5 $FIFO_RE" -- eval --ckpt "$T/ck-fifo" --data "$TXT" --windows 1 --seqlen 64
cp -r "$T/ck" "$T/ck-dir"; rm "$T/ck-dir/blocks-002.h5"; mkdir "$T/ck-dir/blocks-002.h5"
expect ckpt-block-dir 4 "blocks-002.h5 is a directory, expected a regular file" \
  -- eval --ckpt "$T/ck-dir" --data "$TXT" --windows 1 --seqlen 64
out=$(run eval --ckpt "$T/ck-dir" --data "$TXT" --windows 1 --seqlen 64 2>&1)
n=$(grep -v "^mpiquant\|^    at \|^--\|^ *$\|mpiexec\|MPI_ABORT\|NOTE: invoking\|You may or may not\|exactly when\|process" <<<"$out" | grep -c "MPI\|ROMIO\|ADIO")
[ "$n" = 0 ] && { echo "ok ckpt-block-dir: no MPI-IO noise"; pass=$((pass + 1)); } \
  || { echo "FAIL ckpt-block-dir: $n lines of MPI-IO messages"; fail=$((fail + 1)); }
cp -r "$T/ck" "$T/ck-man"; rm "$T/ck-man/manifest.json"; mkfifo "$T/ck-man/manifest.json"
expect manifest-eval 4 "manifest.json $FIFO_RE" -- eval --ckpt "$T/ck-man" --data "$TXT" --windows 1 --seqlen 64
expect manifest-inspect 4 "manifest.json $FIFO_RE" -- inspect "$T/ck-man"
expect manifest-export 4 "manifest.json $FIFO_RE" -- export --ckpt "$T/ck-man" --out "$T/exp"
# inspect accepts only what eval accepts
mkdir -p "$T/ck-v7"; sed 's/"version": [0-9]*/"version": 7/' "$T/ck/manifest.json" >"$T/ck-v7/manifest.json"
expect inspect-manifest-v7 5 "not an mpiquant-ckpt version 1..2 manifest \(format 'mpiquant-ckpt', version 7\)" \
  -- inspect "$T/ck-v7"
# np > 1: every rank's log ends saying which rank failed and why
if [ "$np" != 1 ]; then
  out=$(run tokenize --model "$M" --text "$T/fifo" --count 2>&1)
  grep -q "\[rank 1\] stopped: rank 0 failed (QZ_ERR_IO): $T/fifo is a FIFO" <<<"$out" \
    && { echo "ok every rank says why"; pass=$((pass + 1)); } \
    || { echo "FAIL rank 1 does not say why:"; echo "$out" | head -5; fail=$((fail + 1)); }
fi
echo "reliability_fifo: $pass passed, $fail failed"
[ $fail -eq 0 ]
