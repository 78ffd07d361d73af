#!/usr/bin/env bash
# eval of each FP8 export equals eval of its checkpoint: --method fp8
# (dynamic, static, weight-only, block) -> export --format compressed-tensors
# (float-quantized) -> eval --model reads the F8 weights with their scales and
# applies the activation quantization the quantization_config declares
# (mpi_driver/model_act.c): the same NLL sum as eval --ckpt, to the bit.
#   fp8_export_read.sh NP
set -uo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
BL="$S/models/babyllama-tok105-hf" ST="$S/models/stories260K-hf" D="$S/data/tinystories_valid_head.txt"
nll() { grep -o '"nll_sum":[^,]*' "$1"; }
i=0
while read -r model opts <&3; do
  i=$((i + 1))
  run quantize --model "$model" --calib "$D" --nsamples 16 --seqlen 128 --method fp8 $opts \
    --out "$T/ck$i" -q || fail "quantize fp8 $opts"
  run export --ckpt "$T/ck$i" --out "$T/exp$i" --format compressed-tensors -q \
    || fail "export fp8 $opts"
  run eval --ckpt "$T/ck$i" --data "$D" --seqlen 128 --windows 8 --json -q > "$T/c$i.json" \
    || fail "eval --ckpt fp8 $opts"
  run eval --model "$T/exp$i" --data "$D" --seqlen 128 --windows 8 --json -q > "$T/x$i.json" \
    || fail "eval --model of the fp8 $opts export"
  a=$(nll "$T/c$i.json"); b=$(nll "$T/x$i.json")
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "fp8 $opts: eval --model EXPORT ($b) != eval --ckpt ($a)"
  echo "fp8_export_read: fp8 $opts: $a (export = checkpoint)"
done 3<<EOF_CASES
$ST --act dynamic
$ST --act static
$BL --weight-block 32
$ST --weight-block 128 --act none
EOF_CASES
# a static export without its input_scale tensors: the error names one
/usr/bin/python3 - "$T/exp2" "$T/bad" <<'PY' || fail "removing input_scale"
import os, shutil, sys
sys.path.insert(0, os.path.join(os.environ["QZ_SOURCE_DIR"], "tests"))
from fp8_models import read_st, write_st
src, dst = sys.argv[1:3]
shutil.copytree(src, dst)
T, _ = read_st(os.path.join(src, "model.safetensors"))
write_st(os.path.join(dst, "model.safetensors"), {k: v for k, v in T.items() if not k.endswith("input_scale")})
PY
out=$(run eval --model "$T/bad" --data "$D" --seqlen 128 --windows 1 2>&1); rc=$?
[ $rc -eq 5 ] && grep -q "tensor 'model.layers.0.self_attn.q_proj.input_scale' (one float) is missing" <<<"$out" \
  || { echo "$out"; fail "static FP8 export without input_scale: rc $rc"; }
echo "fp8_export_read: 1 passed, 0 failed"
