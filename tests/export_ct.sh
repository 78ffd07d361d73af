#!/usr/bin/env bash
# SmoothQuant W8A8 -> export --format compressed-tensors -> independent numpy
# reader and W8A8 forward (tests/export_ct_check.py); formats that cannot hold
# a checkpoint fail clearly, naming the linear.
#   export_ct.sh NP
set -uo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
M="$S/models/stories260K-hf"
run quantize --model "$M" --calib "$S/data/tinystories_valid_head.txt" --nsamples 32 --seqlen 256 \
  --method smoothquant --alpha 0.5 --out "$T/ck" -q || fail quantize
run export --ckpt "$T/ck" --out "$T/exp" --format compressed-tensors || fail export
for f in config.json model.safetensors tokenizer.json; do [ -f "$T/exp/$f" ] || fail "export lacks $f"; done
[ -f "$T/exp/quantize_config.json" ] && fail "quantize_config.json is GPTQ-only"
"$B" tokenize --model "$M" --text "$S/data/tinystories_valid_head.txt" --window 256 --out "$T/ids.txt" -q \
  || fail tokenize
run eval --ckpt "$T/ck" --tokens "$T/ids.txt" --seqlen 256 --windows 32 --json -q > "$T/eval.json" || fail eval
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/export_ct_check.py" "$T/exp" "$T/ck" "$M" "$T/ids.txt" 32 "$T/eval.json" \
  || fail "independent compressed-tensors check"
# mpiquant reads the export back (int8 weights x weight_scale, int8 activations
# from its quantization_config): the same perplexity as the checkpoint, to the bit
run eval --model "$T/exp" --tokens "$T/ids.txt" --seqlen 256 --windows 32 --json -q > "$T/eval_exp.json" \
  || fail "eval of the export"
a=$(grep -o '"nll_sum":[^,]*' "$T/eval.json"); b=$(grep -o '"nll_sum":[^,]*' "$T/eval_exp.json")
[ -n "$a" ] && [ "$a" = "$b" ] || fail "eval --model EXPORT ($b) != eval --ckpt ($a)"
# an export is quantize --model input again: its int8 weights dequantized on read
run quantize --model "$T/exp" --calib "$S/data/tinystories_valid_head.txt" --nsamples 8 --seqlen 128 \
  --method rtn --bits 4 --group -1 --out "$T/q2" -q || fail "quantize of an export"
# W8A8 codes have no GPTQ layout; partial groups have no pack-quantized one
out=$(run export --ckpt "$T/ck" --out "$T/g" 2>&1); rc=$?
[ $rc -eq 11 ] && grep -q "was quantized with 'smoothquant', which has no GPTQ export" <<<"$out" \
  || { echo "$out"; fail "gptq export of a smoothquant checkpoint: rc $rc"; }
run quantize --model "$M" --method rtn --bits 4 --group 32 --out "$T/rtn" -q || fail rtn
out=$(run export --ckpt "$T/rtn" --out "$T/c" --format compressed-tensors 2>&1); rc=$?
[ $rc -eq 11 ] && grep -q "model.layers.0.mlp.down_proj: in_features 172 is not a multiple of the group size 32" <<<"$out" \
  || { echo "$out"; fail "compressed-tensors export of rtn w4 g32 (partial groups): rc $rc"; }
run export --ckpt "$T/rtn" --out "$T/g4" -q 2>/dev/null && fail "rtn w4 of stories260K has no GPTQ layout (in 172)"
"$B" quantize --model "$S/models/babyllama-tok105-hf" --method rtn --bits 4 --group 32 --out "$T/rtnb" -q \
  && "$B" export --ckpt "$T/rtnb" --out "$T/g4b" -q || fail "babyllama rtn export"
sed 's/"quant_method": "gptq"/"quant_method": "awq"/' "$T/g4b/config.json" > "$T/cfg.tmp" \
  && mv "$T/cfg.tmp" "$T/g4b/config.json"
out=$("$B" eval --model "$T/g4b" --data "$S/data/tinystories_valid_head.txt" --windows 1 2>&1); rc=$?
[ $rc -eq 11 ] && grep -q "quantization_config.quant_method is 'awq'; mpiquant reads unquantized" <<<"$out" \
  || { echo "$out"; fail "eval of an unsupported quantization_config: rc $rc"; }
out=$(run export --ckpt "$T/rtn" --out "$T/c" --format awq 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "unknown --format 'awq' (supported: gptq, compressed-tensors)" <<<"$out" \
  || { echo "$out"; fail "unknown format: rc $rc"; }
echo "export_ct: 1 passed, 0 failed"
