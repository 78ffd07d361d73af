#!/usr/bin/env bash
# AWQ -> GPTQ export (babyllama: every shape a multiple of 32): the packed
# codes through the independent dequantizer (export_check.py), and the
# RMSNorm weights with the folded AWQ scales in the export (equal to the
# checkpoint's, different from the source model's).
#   awq_export.sh NP
set -uo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
fail() { echo "FAIL: $*"; exit 1; }
M=$S/models/babyllama-tok105-hf
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
run quantize --model "$M" --calib "$S/data/tinystories_valid_head.txt" --nsamples 32 \
  --seqlen 256 --method awq --bits 4 --group 32 --out "$T/ck" -q || fail quantize
run export --ckpt "$T/ck" --out "$T/exp" || fail export
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/export_check.py" "$T/exp" "$T/ck" || fail "independent dequantizer"
/usr/bin/python3 - "$T/exp" "$T/ck" "$M" <<'PY' || fail "folded norms"
import json, os, struct, sys
import numpy as np, h5py
def st(path):
    b = open(path, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    dt = {"F32": "<f4", "F16": "<f2", "I32": "<i4"}
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                             dtype=dt.get(v["dtype"], "u1")) for k, v in h.items()}
exp, ck, src = st(os.path.join(sys.argv[1], "model.safetensors")), sys.argv[2], st(os.path.join(sys.argv[3], "model.safetensors"))
man = json.load(open(os.path.join(ck, "manifest.json")))
bad = 0
for e in man["completed_blocks"]:
    l = e["block"]
    with h5py.File(os.path.join(ck, e["file"]), "r") as f:
        for n in ("input_layernorm", "post_attention_layernorm"):
            k = "model.layers.%d.%s.weight" % (l, n)
            c = f["norms/%d/%s" % (l, n)][...]
            ok = np.array_equal(exp[k], c) and not np.array_equal(exp[k], src[k])
            bad += not ok
            print("%s: export == checkpoint's folded norm, != source: %s" % (k, "ok" if ok else "FAIL"))
sys.exit(1 if bad else 0)
PY
echo "awq_export: 1 passed, 0 failed"
