#!/usr/bin/env bash
# Weight-only checkpoints -> export --format compressed-tensors
# (pack-quantized W4A16 / W8A16 / W3A16) -> the independent numpy reader
# (tests/export_ct_packed_check.py) must dequantize every linear exactly to
# the checkpoint; shapes the format cannot hold fail clearly.
#   export_ct_packed.sh NP
set -uo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
BL="$S/models/babyllama-tok105-hf" ST="$S/models/stories260K-hf"
i=0
while read -r where model meth <&3; do
  # format coverage runs at np 1; the row splits of other rank counts on a few
  [ "$where" = all ] || [ "$np" -eq 1 ] || continue
  i=$((i + 1))
  run quantize --model "$model" --calib "$S/data/tinystories_valid_head.txt" --nsamples 16 \
    --seqlen 128 --method $meth --out "$T/ck$i" -q || fail "quantize $meth"
  run export --ckpt "$T/ck$i" --out "$T/exp$i" --format compressed-tensors -q || fail "export $meth"
  /usr/bin/python3 "$QZ_SOURCE_DIR/tests/export_ct_packed_check.py" "$T/exp$i" "$T/ck$i" \
    || fail "independent check of $meth"
  # mpiquant reads the export back (io/export_ct_read.c): the checkpoint's perplexity, to the bit
  run eval --ckpt "$T/ck$i" --data "$S/data/tinystories_valid_head.txt" --seqlen 128 --windows 4 \
    --json -q > "$T/e$i.json" || fail "eval --ckpt $meth"
  run eval --model "$T/exp$i" --data "$S/data/tinystories_valid_head.txt" --seqlen 128 --windows 4 \
    --json -q > "$T/x$i.json" || fail "eval --model of the $meth export"
  a=$(grep -o '"nll_sum":[^,]*' "$T/e$i.json"); b=$(grep -o '"nll_sum":[^,]*' "$T/x$i.json")
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "$meth: eval --model EXPORT ($b) != eval --ckpt ($a)"
done 3<<EOF_CASES
all $BL gptq --bits 4 --group 32 --act-order
np1 $BL gptq --bits 4 --group 32 --sym
np1 $BL gptq --bits 8 --group 32 --act-order --static-groups
all $ST rtn --bits 3 --group -1
all $BL awq --bits 4 --group 32
np1 $BL rtn --bits 4 --group 32
np1 $ST gptq --bits 8 --group -1
np1 $ST rtn --bits 4 --group -1 --sym
np1 $BL gptq --bits 4 --group -1 --sym --act-order
EOF_CASES
# a pack-quantized model is quantize --model input (dequantized, quantized again)
run quantize --model "$T/exp1" --calib "$S/data/tinystories_valid_head.txt" --nsamples 8 \
  --seqlen 128 --method rtn --bits 8 --group -1 --out "$T/re" -q || fail "quantize --model of an export"
# ... whose checkpoint exports again (the source's weight_packed & co. replaced) and reads back
run export --ckpt "$T/re" --out "$T/re-exp" --format compressed-tensors -q || fail "export of re"
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/export_ct_packed_check.py" "$T/re-exp" "$T/re" \
  || fail "independent check of the re-quantized export"
run eval --ckpt "$T/re" --data "$S/data/tinystories_valid_head.txt" --seqlen 128 --windows 4 \
  --json -q > "$T/re.json" || fail "eval --ckpt re"
run eval --model "$T/re-exp" --data "$S/data/tinystories_valid_head.txt" --seqlen 128 --windows 4 \
  --json -q > "$T/re-exp.json" || fail "eval --model re-exp"
[ "$(grep -o '"nll_sum":[^,]*' "$T/re.json")" = "$(grep -o '"nll_sum":[^,]*' "$T/re-exp.json")" ] \
  || fail "re-quantized export: eval --model != eval --ckpt"
# stories260K's down_proj has 172 inputs: no whole groups of 32
run quantize --model "$ST" --method rtn --bits 4 --group 32 --out "$T/g" -q || fail rtn
out=$(run export --ckpt "$T/g" --out "$T/gx" --format compressed-tensors 2>&1); rc=$?
[ $rc -eq 11 ] && grep -q "model.layers.0.mlp.down_proj: in_features 172 is not a multiple of the group size 32" <<<"$out" \
  || { echo "$out"; fail "partial groups: rc $rc"; }
[ -e "$T/gx/model.safetensors" ] && fail "a failed export left model.safetensors behind"
echo "export_ct_packed: 1 passed, 0 failed"
