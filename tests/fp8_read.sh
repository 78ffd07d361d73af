#!/usr/bin/env bash
# FP8 checkpoints as other tools ship them (tests/fp8_models.py writes them
# from the OCP spec: compressed-tensors float-quantized per-channel and block,
# a per-tensor E5M2 scale without quantization_config, DeepSeek-V3's block
# weight_scale_inv) must evaluate exactly like the f32 model numpy
# dequantized them to (weight-only configs), with their declared FP8
# activations like a numpy forward (tests/fp8_act_check.py), and quantize to
# the same checkpoint; damaged scales fail naming the tensor.
#   fp8_read.sh NP
set -uo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
M="$S/models/stories260K-hf" D="$S/data/tinystories_valid_head.txt"
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/fp8_models.py" "$M" "$T/m" || fail "fp8_models.py"
nll() { grep -o '"nll_sum":[^,]*' "$1"; }
# dequantization is exact (codes decode exactly, one f32 product): the same
# perplexity to the last bit, whatever the row split over ranks
for k in channel-w tensor block; do
  for v in $k $k-f32; do
    run eval --model "$T/m/$v" --data "$D" --seqlen 128 --windows 8 --json -q > "$T/$v.json" \
      || fail "eval --model $v"
  done
  a=$(nll "$T/$k.json"); b=$(nll "$T/$k-f32.json")
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "$k: FP8 model $a, numpy-dequantized f32 model $b"
  echo "fp8_read: $k: $a (equal to the f32 model)"
done
# declared FP8 activations (channel: dynamic per token; deepseek: dynamic per
# token and group of 128) against the numpy forward of the f32 model
"$B" tokenize --model "$M" --text "$D" --window 128 --out "$T/ids.txt" -q || fail tokenize
for km in channel:token deepseek:group:128; do
  k=${km%%:*} mode=${km#*:}
  run eval --model "$T/m/$k" --tokens "$T/ids.txt" --seqlen 128 --windows 32 --json -q \
    > "$T/$k-act.json" || fail "eval --model $k"
  /usr/bin/python3 "$QZ_SOURCE_DIR/tests/fp8_act_check.py" "$T/m/$k-f32" "$T/ids.txt" 32 \
    "$T/$k-act.json" "$mode" || fail "FP8 activations of $k"
  run eval --model "$T/m/$k-f32" --tokens "$T/ids.txt" --seqlen 128 --windows 32 --json -q \
    > "$T/$k-noact.json" || fail "eval --model $k-f32"
  [ "$(nll "$T/$k-act.json")" != "$(nll "$T/$k-noact.json")" ] \
    || fail "$k: the declared FP8 activations changed nothing"
done
# quantize --model FP8: the same checkpoint (codes, scales, losses) as from the f32 model
for v in block block-f32; do
  run quantize --model "$T/m/$v" --calib "$D" --nsamples 8 --seqlen 128 --method gptq --bits 4 \
    --group -1 --out "$T/ck-$v" -q || fail "quantize --model $v"
done
for f in "$T"/ck-block/blocks-*.h5; do
  h5diff "$f" "$T/ck-block-f32/$(basename "$f")" /layers /layers >/dev/null \
    || fail "quantize of the FP8 model differs from the f32 model's in $(basename "$f")"
done
# a checkpoint of an FP8 model exports (the source's scales are dropped) and
# reads back exactly
run quantize --model "$T/m/deepseek" --calib "$D" --nsamples 8 --seqlen 128 --method rtn --bits 4 \
  --group -1 --out "$T/ck-ds" -q || fail "quantize --model deepseek"
run export --ckpt "$T/ck-ds" --out "$T/exp-ds" --format compressed-tensors -q || fail "export"
grep -rq "weight_scale_inv" "$T/exp-ds/model.safetensors" && fail "export kept the source's weight_scale_inv"
run eval --ckpt "$T/ck-ds" --data "$D" --seqlen 128 --windows 8 --json -q > "$T/ck-ds.json" || fail eval
run eval --model "$T/exp-ds" --data "$D" --seqlen 128 --windows 8 --json -q > "$T/exp-ds.json" || fail eval
[ "$(nll "$T/ck-ds.json")" = "$(nll "$T/exp-ds.json")" ] || fail "export of the FP8 model's checkpoint"
# damaged scales: exit 5 (format), the message names the tensor
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/fp8_models.py" --broken "$T/m/channel" "$T/bad" || fail broken
q=model.layers.1.self_attn.q_proj.weight
while read -r kind msg <&3; do
  out=$(run eval --model "$T/bad/$kind" --data "$D" --seqlen 128 --windows 1 2>&1); rc=$?
  [ $rc -eq 5 ] && grep -qF "$msg" <<<"$out" || { echo "$out"; fail "$kind: rc $rc"; }
done 3<<EOF_CASES
noscale tensor '$q' is F8_E4M3 but neither '${q}_scale' nor '${q}_scale_inv' exists
i32scale scale '${q}_scale' of the FP8 tensor '$q' has dtype I32, expected a float dtype
badshape scale '${q}_scale' of the FP8 tensor '$q' [64, 64] has shape [3, 1]; expected
EOF_CASES
echo "fp8_read: 1 passed, 0 failed"
