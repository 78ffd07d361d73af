#!/usr/bin/env bash
# quantize -> export --format gptq -> independent numpy unpacker must give
# exactly the checkpoint's dequantized weights (scales rounded to f16 as the
# format stores them), and mpiquant's eval of the export must equal the eval
# of the dense model that unpacker writes. Also: the checkpoint is readable with h5dump through
# our plugin, and a model whose shapes the format cannot hold fails clearly.
#   export_roundtrip.sh NP [QUANTIZE OPTIONS...]
set -uo pipefail
np=$1; shift
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
run quantize --model "$S/models/babyllama-tok105-hf" --calib "$S/data/tinystories_valid_head.txt" \
  --nsamples 32 --seqlen 256 --bits 4 --group 32 --out "$T/ck" -q "$@" || fail quantize
run export --ckpt "$T/ck" --out "$T/exp" || fail export
for f in config.json quantize_config.json model.safetensors tokenizer.json; do
  [ -f "$T/exp/$f" ] || fail "export lacks $f"
done
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/export_check.py" "$T/exp" "$T/ck" || fail "independent dequantizer"
# mpiquant evaluates the export itself (qweight... dequantized on load): the
# same NLL, to the bit, as the dense f32 model export_dense.py unpacks from it
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/export_dense.py" "$T/exp" "$T/dense" || fail "export_dense"
ev() { run eval --model "$1" --data "$S/data/tinystories_valid_head.txt" --seqlen 256 --windows 8 \
  --json -q | grep -o '"nll_sum":[^,]*'; }
a=$(ev "$T/exp") && b=$(ev "$T/dense") || fail "eval of the export"
[ -n "$a" ] && [ "$a" = "$b" ] || fail "eval --model EXPORT ($a) != eval of its dense unpacking ($b)"
out=$(h5dump -d /layers/0/self_attn.q_proj/codes -c "1,8" "$T/ck/blocks-000.h5" 2>&1)
grep -Eq "\(0,0\): [0-9]+, [0-9]+" <<<"$out" || { echo "$out"; fail "h5dump shows no checkpoint data"; }
# stories260K has in = 172 (down_proj): GPTQ packing cannot hold it
run quantize --model "$S/models/stories260K-hf" --method rtn --bits 4 --group 32 --out "$T/ck2" -q || fail "rtn"
out=$("$B" inspect "$T/ck2" 2>&1) || fail "inspect of a checkpoint"
grep -q "blocks: 5 of 5 complete" <<<"$out" && grep -Eq "mlp.down_proj +codes \[64, 172\] u8" <<<"$out" \
  || { echo "$out"; fail "inspect of the checkpoint"; }
out=$(run export --ckpt "$T/ck2" --out "$T/exp2" 2>&1); rc=$?
[ $rc -eq 11 ] && grep -q "model.layers.0.mlp.down_proj.weight is \[64, 172\]: the GPTQ format" <<<"$out" \
  || { echo "$out"; fail "unsupported shape: rc $rc"; }
echo "export_roundtrip: 1 passed, 0 failed"
