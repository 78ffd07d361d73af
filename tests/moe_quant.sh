#!/usr/bin/env bash
# Quantize tiny synthetic MoE models (Mixtral, Qwen3-MoE, Qwen2-MoE; docs/moe.md).
#   moe_quant.sh np CONFIG NP [QUANTIZE OPTIONS...]
#     the checkpoint at NP is h5diff-identical to np 1 (manifest too); at
#     np 1: per-expert token counts in the manifest equal the routing of the
#     calibration windows through the numpy forward of the model with the
#     checkpoint's dequantized linears (moe_ref.py --counts); the GPTQ export dequantizes exactly to
#     the checkpoint (export_check.py) and mpiquant's forward of it equals
#     numpy (logits, routing); the compressed-tensors export passes its
#     reader; eval --ckpt equals eval of the export.
#   moe_quant.sh starve CONFIG NP FALLBACK [QUANTIZE OPTIONS...]
#     routers rewritten so that experts 0 and E-1 never win (their rows 0,
#     the others +-v, +-u, ...: two of them are always > 0): those experts get
#     0 tokens on every rank; quantize with --expert-fallback FALLBACK
#     finishes (no hang: the test's timeout), records 0 tokens and the
#     fallback count, stores every expert quantized (rtn: method rtn), and
#     is identical to np 1. With --method awq: the starved experts' ratios
#     are null (no search) exactly with rtn.
#   moe_quant.sh fewwin CONFIG NP [QUANTIZE OPTIONS...]
#     3 calibration windows at NP = 4: one rank routes no token at all; the
#     checkpoint equals np 1's.
#   moe_quant.sh refuse CONFIG NP METHOD [QUANTIZE OPTIONS...]
#     a method without MoE support (a block hook without prepare_expert:
#     smoothquant; awq --awq-then-gptq) fails with a clear message before
#     writing a checkpoint.
#   moe_quant.sh awqref CONFIG NP [QUANTIZE OPTIONS...]
#     --method awq at NP: every expert's up -> down ratio (and without
#     clipping its stored weights) equals an independent numpy search
#     (moe_awq_ref.py).
#   moe_quant.sh resume CONFIG NP [QUANTIZE OPTIONS...]
#     kill rank 0 in block 1 (no snapshot: block 0 is replayed expert by
#     expert from the checkpoint), --resume: identical to an uninterrupted run.
set -uo pipefail
mode=$1 cfg=$2 np=$3; shift 3
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?} SRC=${QZ_SOURCE_DIR:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"; cd "$T"
fail() { echo "FAIL: $*"; exit 1; }
run() { local n=$1; shift; "${MPIEXEC:-mpiexec}" -n "$n" "$B" "$@"; }
py() { /usr/bin/python3 "$@"; }
layers=$(py -c "import json,sys;print(json.load(open(sys.argv[1]))['num_hidden_layers'])" "$cfg")
"$B" synth --config "$cfg" --layers "$layers" --dtype f32 --seed 5 --out m \
  --tokenizer "$S/models/stories260K-hf" -q || fail synth
py - <<'PY'
import numpy as np
r = np.random.default_rng(2)
open("calib.txt", "w").write("\n".join(" ".join(map(str, r.integers(3, 512, 64))) for _ in range(16)) + "\n")
open("ids.txt", "w").write("\n".join(" ".join(map(str, r.integers(3, 512, 48))) for _ in range(3)) + "\n")
PY
q() { local n=$1 out=$2; shift 2; run "$n" quantize --model m --calib-tokens calib.txt --nsamples ${NS:-16} \
        --seqlen 64 --bits 4 --group 32 --out "$out" ${QUIET--q} "$@"; }
same() { # checkpoint $2 identical to $1
  for f in "$1"/*.h5; do
    h5diff "$f" "$2/$(basename "$f")" >/dev/null || { h5diff -v "$f" "$2/$(basename "$f")" | head; fail "$(basename "$f") differs: $3"; }
  done
  py "$SRC/tests/ckpt_same.py" "$1" "$2" || fail "manifest differs: $3"
}
case $mode in
np)
  q 1 ck1 "$@" || fail "quantize np 1"
  if [ "$np" != 1 ]; then
    q "$np" ck "$@" || fail "quantize np $np"
    same ck1 ck "np $np vs np 1"; echo "np $np: checkpoint identical to np 1"; echo PASS; exit 0
  fi
  run 1 export --ckpt ck1 --out exp -q || fail "export gptq"
  py "$SRC/tests/export_check.py" exp ck1 || fail "GPTQ export vs checkpoint"
  py "$SRC/tests/export_dense.py" exp dense || fail export_dense
  if grep -q '"awq_expert_ratios"' ck1/manifest.json; then # AWQ calibrates on the fp model
    py "$SRC/tests/moe_ref.py" --counts-fp m calib.txt ck1 || fail "per-expert token counts vs numpy routing (fp)"
  elif grep -q '"expert_tokens"' ck1/manifest.json; then # methods with calibration
    py "$SRC/tests/moe_ref.py" --counts m calib.txt ck1 || fail "per-expert token counts vs numpy routing"
  fi
  mkdir d; "${MPIEXEC:-mpiexec}" -n 1 "$QZT_ARCH_DUMP" exp ids.txt d || fail "forward of the export"
  py "$SRC/tests/moe_ref.py" dense ids.txt d || fail "export forward vs numpy"
  run 1 export --ckpt ck1 --out ct --format compressed-tensors -q || fail "export compressed-tensors"
  py "$SRC/tests/export_ct_packed_check.py" ct ck1 || fail "compressed-tensors export vs checkpoint"
  grep -q '"re:.*gate\$"' ct/config.json || fail "routers not in the compressed-tensors ignore list"
  a=$(run 2 eval --model m --ckpt ck1 --tokens ids.txt --seqlen 48 --json -q | grep -o '"nll_sum":[^,]*')
  b=$(run 2 eval --model exp --tokens ids.txt --seqlen 48 --json -q | grep -o '"nll_sum":[^,]*')
  py - "$a" "$b" <<'PY' || fail "eval --ckpt ($a) vs eval of the export ($b)"
import sys
a, b = (float(x.split(":")[1]) for x in sys.argv[1:3])
# the export rounds scales to f16: a relative 1e-3 bound on the NLL sum
print("eval --ckpt %.6f, export %.6f" % (a, b)); sys.exit(0 if abs(a - b) <= 1e-3 * abs(a) else 1)
PY
  ;;
starve)
  fb=$1; shift
  py - m <<'PY' || fail "router rewrite"
import json, struct, sys, glob
import numpy as np
d = sys.argv[1]
c = json.load(open(d + "/config.json"))
for f in glob.glob(d + "/*.safetensors"):
    b = bytearray(open(f, "rb").read())
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    for k, v in h.items():
        if k == "__metadata__" or not (k.endswith("block_sparse_moe.gate.weight") or k.endswith("mlp.gate.weight")):
            continue
        E, H = v["shape"]
        r = np.random.default_rng(len(k))
        W = np.zeros((E, H), np.float32)
        for p in range((E - 2) // 2):           # rows 1..E-2: +-v_p
            vp = r.standard_normal(H).astype(np.float32)
            W[1 + 2 * p], W[2 + 2 * p] = vp, -vp
        s, e = v["data_offsets"]
        b[8 + n + s:8 + n + e] = W.tobytes()
        print("%s: experts 0 and %d unreachable" % (k, E - 1))
    open(f, "wb").write(bytes(b))
PY
  q 1 ck1 --expert-fallback "$fb" "$@" || fail "quantize np 1 with starved experts"
  py - ck1 "$fb" <<'PY' || fail "starved experts"
import json, sys, h5py, glob
ck, fb = sys.argv[1:3]
man = json.load(open(ck + "/manifest.json"))
ok = True
for blk in man["completed_blocks"]:
    st = blk["stats"]
    if "expert_tokens" not in st: continue
    t = st["expert_tokens"]
    E = len(t)
    print("block %d: tokens per expert %s, fallbacks %d" % (blk["block"], t, st["expert_fallbacks"]))
    ok &= t[0] == 0 and t[E - 1] == 0 and st["expert_fallbacks"] >= 2 and min(t[1:E - 1]) > 0
    with h5py.File(ck + "/" + blk["file"], "r") as h:
        g = h["layers"][str(blk["block"])]
        for e in (0, E - 1):
            mods = [m for m in g.keys() if (".experts.%d." % e) in m]
            meth = {m: g[m].attrs["method"] for m in mods}
            meth = {m: (x.decode() if isinstance(x, bytes) else str(x)) for m, x in meth.items()}
            print("  expert %d: %s" % (e, meth))
            ok &= len(mods) == 3 and all(g[m]["codes"].shape[0] > 0 for m in mods)
            ok &= all((x == "rtn") == (fb == "rtn") for x in meth.values())
    if "awq_expert_ratios" in st:  # AWQ: no search exactly for rtn fallbacks
        r = st["awq_expert_ratios"]
        print("  awq expert ratios %s" % r)
        ok &= len(r) == E and all((r[e] is None) == (fb == "rtn" and e in (0, E - 1)) for e in range(E))
print("PASS" if ok else "FAIL"); sys.exit(0 if ok else 1)
PY
  if [ "$np" != 1 ]; then
    q "$np" ck --expert-fallback "$fb" "$@" || fail "quantize np $np with starved experts"
    same ck1 ck "np $np vs np 1 with starved experts"; echo "np $np: identical to np 1"
  fi
  if grep -q '"awq_expert_ratios"' ck1/manifest.json; then # the fallback rows' searches
    py "$SRC/tests/moe_awq_ref.py" m calib.txt ck1 || fail "AWQ searches with starved experts vs numpy"
  fi
  ;;
resume)
  q "$np" full --snapshot-every 5 "$@" || fail "uninterrupted run"
  MPIQUANT_FAULT=kill:0:1 q "$np" k --snapshot-every 5 "$@" >k.log 2>&1 && fail "the killed run reported success"
  grep -q "kills itself in block 1" k.log || { cat k.log; fail "the kill hook did not fire"; }
  QUIET= q "$np" k --snapshot-every 5 --resume "$@" >r.log 2>&1 || { cat r.log; fail "resume"; }
  grep -q "resume: replayed blocks 0..0" r.log || { cat r.log; fail "block 0 not replayed"; }
  same full k "resumed vs uninterrupted"; echo "kill in block 1 + resume (block 0 replayed): identical"
  ;;
awqref)
  q "$np" ck --method awq "$@" || fail "quantize --method awq np $np"
  py "$SRC/tests/moe_awq_ref.py" m calib.txt ck || fail "AWQ expert searches vs numpy"
  ;;
fewwin) # 3 windows at np NP > 3: a rank without calibration tokens at all
  head -3 calib.txt > c3 && mv c3 calib.txt
  NS=3 q 1 ck1 "$@" || fail "quantize np 1"
  NS=3 q "$np" ck "$@" || fail "quantize np $np with a rank without windows"
  same ck1 ck "np $np (a rank without windows) vs np 1"; echo "np $np, 3 windows: identical to np 1"
  ;;
refuse) # a method without MoE support: a clear error, no checkpoint written
  out=$(q "$np" ck --method "$@" 2>&1); rc=$?
  [ $rc -ne 0 ] && grep -q "mixture-of-experts blocks (block 0), which this method.* does not support" <<<"$out" \
    || { echo "$out"; fail "--method $1 on an MoE model: rc $rc"; }
  [ ! -e ck/manifest.json ] || fail "a refused run wrote a checkpoint"
  ;;
*) fail "mode $mode" ;;
esac
echo PASS
