#!/usr/bin/env bash
# Quantize a tiny synthetic model of a new architecture (Qwen3: per-head
# q/k RMSNorm kept in 16/32 bit, not quantized) and export it:
#   arch_quant.sh CONFIG NP [QUANTIZE OPTIONS...]
# the checkpoint at NP is h5diff-identical to np 1; the GPTQ export holds the
# q_norm/k_norm tensors, dequantizes exactly to the checkpoint
# (tests/export_check.py), and mpiquant's forward of the export equals the
# independent numpy forward (tests/moe_ref.py) of its dense unpacking
# (tests/export_dense.py); the compressed-tensors pack-quantized export
# passes its independent reader (tests/export_ct_packed_check.py).
set -uo pipefail
cfg=$1 np=$2; shift 2
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?} SRC=${QZ_SOURCE_DIR:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"; cd "$T"
fail() { echo "FAIL: $*"; exit 1; }
run() { local n=$1; shift; "${MPIEXEC:-mpiexec}" -n "$n" "$B" "$@"; }
layers=$(/usr/bin/python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['num_hidden_layers'])" "$cfg")
"$B" synth --config "$cfg" --layers "$layers" --dtype f32 --seed 5 --out m \
  --tokenizer "$S/models/stories260K-hf" -q || fail synth
/usr/bin/python3 - <<'PY'
import numpy as np
r = np.random.default_rng(2)
open("calib.txt", "w").write("\n".join(" ".join(map(str, r.integers(3, 512, 64))) for _ in range(16)) + "\n")
open("ids.txt", "w").write("\n".join(" ".join(map(str, r.integers(3, 512, 48))) for _ in range(3)) + "\n")
PY
q() { run "$1" quantize --model m --calib-tokens calib.txt --nsamples 16 --seqlen 64 --out "$2" -q "${@:3}"; }
q 1 ck1 "$@" || fail "quantize np 1"
if [ "$np" != 1 ]; then
  q "$np" ck "$@" || fail "quantize np $np"
  for f in ck1/blocks-*.h5; do
    h5diff "$f" "ck/$(basename "$f")" >/dev/null || { h5diff -v "$f" "ck/$(basename "$f")" | head; fail "$f differs at np $np"; }
  done
  /usr/bin/python3 "$SRC/tests/ckpt_same.py" ck1 ck || fail "manifest at np $np"
  echo "np $np: checkpoint identical to np 1"
  exit 0
fi
run 1 export --ckpt ck1 --out exp -q || fail "export gptq"
/usr/bin/python3 - exp m <<'PY' || fail "export lacks the unquantized non-linear tensors"
import json, struct, sys, glob
names = lambda d: {k for f in glob.glob(d + "/*.safetensors")
                   for k in json.loads(open(f, "rb").read(8 + struct.unpack("<Q", open(f, "rb").read(8))[0])[8:])}
e, m = names(sys.argv[1]), names(sys.argv[2])
keep = [k for k in m if "_norm" in k or ".gate.weight" in k or "shared_expert_gate" in k]
miss = [k for k in keep if k not in e]
print("export keeps %d norm/router tensors unquantized; missing: %s" % (len(keep), miss))
sys.exit(1 if miss else 0)
PY
/usr/bin/python3 "$SRC/tests/export_check.py" exp ck1 || fail "GPTQ export vs checkpoint"
/usr/bin/python3 "$SRC/tests/export_dense.py" exp dense || fail "export_dense"
mkdir d
"${MPIEXEC:-mpiexec}" -n 1 "$QZT_ARCH_DUMP" exp ids.txt d || fail "forward of the export"
/usr/bin/python3 "$SRC/tests/moe_ref.py" dense ids.txt d || fail "export forward vs numpy"
run 1 export --ckpt ck1 --out ct --format compressed-tensors -q || fail "export compressed-tensors"
/usr/bin/python3 "$SRC/tests/export_ct_packed_check.py" ct ck1 || fail "compressed-tensors export vs checkpoint"
echo PASS
