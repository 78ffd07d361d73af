#!/usr/bin/env bash
# The model side of reliability.
# export --out safety: an --out that is or contains an input is refused and
# the input is left byte-identical; re-exporting into a directory holding an
# older (sharded) export needs --overwrite and leaves exactly the new export
# (no stale index.json or shards); user files are never deleted; a failed
# export leaves nothing behind. Another model of the same shape is refused by
# export --model and quantize --resume. A NaN weight is named; token ids
# outside the vocabulary are named with file and position.
#   reliability_model.sh
set -uo pipefail
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
rm -rf "$T"; mkdir -p "$T"
pass=0 fail=0
ok() { echo "ok $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
expect() { # expect NAME CODE REGEX -- ARGS...
  local name=$1 code=$2 re=$3; shift 4
  local out rc
  out=$(timeout -k 5 60 "$B" "$@" 2>&1); rc=$?
  if [ $rc -ne "$code" ] || ! grep -Eq -- "$re" <<<"$out"; then
    bad "$name: exit $rc (want $code)"; echo "$out" | head -6; return 1
  fi
  ok "$name"
}
# a private copy of the model: on a build without these checks the export
# would overwrite it, never the shared one
cp -r "$S/models/babyllama-tok105-hf" "$T/model"
M=$T/model
"$B" quantize --model "$M" --method rtn --bits 4 --group 32 --out "$T/ck" -q || { bad quantize; exit 1; }
same_as_source() { for f in "$S"/models/babyllama-tok105-hf/*; do cmp -s "$f" "$M/$(basename "$f")" || return 1; done; }

expect out-is-model 3 "--out $M/? is or contains the input" -- export --ckpt "$T/ck" --out "$M/"
same_as_source && ok "model unchanged" || bad "the source model was modified"
expect out-is-ckpt 3 "is or contains the input $T/ck" -- export --ckpt "$T/ck" --out "$T/ck" --model "$M"
expect out-contains-model 3 "is or contains the input" -- export --ckpt "$T/ck" --out "$T" --overwrite
same_as_source && ok "model unchanged after --overwrite attempts" || bad "the source model was modified"

# an older sharded export, then a single-file one into the same --out
"$B" -q export --ckpt "$T/ck" --out "$T/exp" --max-shard-size 0.0002 || bad "sharded export"
ls "$T/exp"/model-00001-of-*.safetensors >/dev/null 2>&1 && [ -f "$T/exp/model.safetensors.index.json" ] \
  && ok "sharded export" || bad "the first export is not sharded"
expect not-empty 3 "--out $T/exp is not empty; pass --overwrite" -- export --ckpt "$T/ck" --out "$T/exp"
"$B" -q export --ckpt "$T/ck" --out "$T/exp" --overwrite || bad "export --overwrite"
if [ -f "$T/exp/model.safetensors" ] && [ ! -e "$T/exp/model.safetensors.index.json" ] \
   && ! ls "$T/exp"/model-0*.safetensors >/dev/null 2>&1 && [ ! -e "$T/exp.partial" ] \
   && [ ! -e "$T/exp.old" ]; then ok "overwrite leaves exactly the new export"
else bad "overwrite left: $(ls "$T/exp" | tr '\n' ' ')"; fi

# a user's file in --out: never deleted, even with --overwrite
echo notes > "$T/exp/NOTES.txt"
expect foreign-file 3 "holds NOTES.txt, which is not a file of an export" \
  -- export --ckpt "$T/ck" --out "$T/exp" --overwrite
[ -f "$T/exp/NOTES.txt" ] && [ -f "$T/exp/model.safetensors" ] && ok "user file kept" || bad "files were deleted"

# a failed export (format the checkpoint cannot hold) leaves nothing
"$B" quantize --model "$M" --method rtn --bits 4 --group 48 --out "$T/ck48" -q || bad "quantize g48"
expect failed 11 "is not a multiple of the group size 48" -- export --ckpt "$T/ck48" --out "$T/exp2" --format compressed-tensors
[ ! -e "$T/exp2" ] && [ ! -e "$T/exp2.partial" ] && ok "failed export left nothing" \
  || bad "failed export left $(ls -d "$T"/exp2* 2>/dev/null)"
# another model of the same shape (one weight changed): export --model and
# quantize --resume refuse it, naming the file whose content differs
cp -r "$M" "$T/model2"; chmod -R u+w "$T/model2"
/usr/bin/python3 - "$T/model2/model.safetensors" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[-3] ^= 0x40          # one bit of the last weight's exponent/mantissa
open(p, 'wb').write(b)
PY
expect export-other-model 3 "export: the model is not the one checkpoint .* was made from \(model.safetensors: 3750768 bytes, content digest" \
  -- export --ckpt "$T/ck" --out "$T/exp3" --model "$T/model2"
[ ! -e "$T/exp3" ] && ok "nothing exported from the other model" || bad "export of the other model wrote $T/exp3"
expect resume-other-model 3 "cannot resume .*: the source model differs from the one it was made from: model.safetensors: 3750768 bytes, content digest" \
  -- quantize --model "$T/model2" --method rtn --bits 4 --group 32 --out "$T/ck" --resume
# a NaN in one weight: named with tensor, row and column (exit 6)
cp -r "$M" "$T/model3"; chmod -R u+w "$T/model3"
/usr/bin/python3 - "$T/model3/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
t = json.loads(b[8:8 + n])['model.layers.1.self_attn.k_proj.weight']
o = 8 + n + t['data_offsets'][0] + 4 * (3 * t['shape'][1] + 5)   # row 3, column 5
b[o:o + 4] = struct.pack('<f', float('nan'))
open(p, 'wb').write(b)
PY
expect nan-weight 6 "tensor model.layers.1.self_attn.k_proj.weight holds nan at row 3, column 5" \
  -- quantize --model "$T/model3" --method rtn --out "$T/ck-nan"
# token ids outside the vocabulary: file and position, exit 5 (input format)
/usr/bin/python3 -c 'import struct,sys; open(sys.argv[1],"wb").write(struct.pack("<6I",1,2,3,99999,4,5))' "$T/ids.bin"
/usr/bin/python3 -c 'import struct,sys; open(sys.argv[1],"wb").write(struct.pack("<8I",1,2,3,4,5,6,7,8))' "$T/ok.bin"
expect token-range 5 "ids.bin: token 3 has id 99999, outside the model's vocabulary \[0, 105\)" \
  -- eval --model "$M" --tokens "$T/ids.bin" --seqlen 2
# a tensor the config does not use (an extra layer): named in a warning
cp -r "$M" "$T/model4"; chmod -R u+w "$T/model4"
/usr/bin/python3 - "$T/model4/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = open(p, 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
data = b[8 + n:]
h['model.layers.99.mlp.down_proj.weight'] = {'dtype': 'F32', 'shape': [2], 'data_offsets': [len(data), len(data) + 8]}
hb = json.dumps(h).encode()
hb += b' ' * ((8 - len(hb) % 8) % 8)
open(p, 'wb').write(struct.pack('<Q', len(hb)) + hb + data + struct.pack('<2f', 1, 2))
PY
expect unused-tensor 0 "model4: 1 tensor is not used by its config.json \(extra layers\? biases the config does not enable\?\): model.layers.99.mlp.down_proj.weight" \
  -- eval --model "$T/model4" --tokens "$T/ok.bin" --seqlen 4
expect rtn-act-order 2 "--act-order and --static-groups are GPTQ options" \
  -- quantize --model "$M" --method rtn --act-order --out "$T/ck-ao"
echo "reliability_model: $pass passed, $fail failed"
[ $fail -eq 0 ]
