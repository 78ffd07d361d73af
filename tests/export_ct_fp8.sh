#!/usr/bin/env bash
# FP8 checkpoints (--method fp8: dynamic, static, weight-only, block) ->
# export --format compressed-tensors (float-quantized) -> the independent
# numpy reader (tests/export_ct_fp8_check.py) must dequantize every linear
# exactly to the checkpoint, with the config describing the scheme; `eval
# --model EXPORT` (FP8 activations from the config and input_scale) gives
# the same NLL sum as `eval --ckpt`, to the bit (not for per-token-group
# activations, which the config reader does not take yet); the GPTQ format
# refuses FP8 checkpoints clearly.
#   export_ct_fp8.sh NP
set -uo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
BL="$S/models/babyllama-tok105-hf" ST="$S/models/stories260K-hf"
i=0
nll() { run eval "$@" --tokens "$S/golden/calib/stories260K_eval_tinystories_ids.txt" --seqlen 512 \
  --windows 4 --json -q | grep -o '"nll_sum":[0-9.e+-]*'; }
while read -r model evalx opts <&3; do
  i=$((i + 1))
  run quantize --model "$model" --calib "$S/data/tinystories_valid_head.txt" --nsamples 16 \
    --seqlen 128 --method fp8 $opts --out "$T/ck$i" -q || fail "quantize fp8 $opts"
  run export --ckpt "$T/ck$i" --out "$T/exp$i" --format compressed-tensors -q \
    || fail "export fp8 $opts"
  /usr/bin/python3 "$QZ_SOURCE_DIR/tests/export_ct_fp8_check.py" "$T/exp$i" "$T/ck$i" "$model" \
    || fail "independent check of fp8 $opts"
  if [ "$evalx" = eval ]; then
    a=$(nll --ckpt "$T/ck$i") && b=$(nll --model "$T/exp$i") || fail "eval of fp8 $opts"
    [ -n "$a" ] && [ "$a" = "$b" ] || fail "fp8 $opts: eval --model EXPORT $b != eval --ckpt $a"
    echo "  ok: fp8 $opts: eval of the export = eval --ckpt ($a)"
  fi
done 3<<EOF_CASES
$ST eval --act dynamic
$ST eval --act static
$BL no-eval --weight-block 32
$ST eval --weight-block 128 --act none
EOF_CASES
out=$(run export --ckpt "$T/ck1" --out "$T/g" --format gptq 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "quantized with 'fp8', which has no GPTQ" <<<"$out" \
  || { echo "$out"; fail "gptq export of an fp8 checkpoint: rc $rc"; }
echo "export_ct_fp8: 1 passed, 0 failed"
