#!/usr/bin/env bash
# synth: a 2-block tiny-shaped model (2 shards + index), deterministic per
# seed, with the advertised statistics (checked independently in numpy),
# loads with the model reader, quantizes (GPTQ w4 g32) and evaluates at np 2
# with random calibration ids.
set -euo pipefail
: "${MPIQUANT_BIN:?}" "${QZ_TEST_TMP:?}" "${MPIEXEC:=mpiexec}"
rm -rf "$QZ_TEST_TMP"; mkdir -p "$QZ_TEST_TMP"; cd "$QZ_TEST_TMP"
cat > tiny.json <<'J'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":64,
 "intermediate_size":172,"num_attention_heads":8,"num_key_value_heads":4,
 "num_hidden_layers":32,"vocab_size":8192,"max_position_embeddings":512,
 "rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":true}
J
"$MPIQUANT_BIN" synth --config tiny.json --layers 2 --out a --seed 3 --shard-mb 1
"$MPIQUANT_BIN" synth --config tiny.json --layers 2 --out b --seed 3 --shard-mb 1
"$MPIQUANT_BIN" synth --config tiny.json --layers 2 --out c --seed 4 --shard-mb 1
ls a/model-00002-of-00002.safetensors a/model.safetensors.index.json >/dev/null
for f in a/*; do cmp "$f" "b/$(basename "$f")"; done
echo "same seed: identical files"
if cmp -s a/model-00001-of-00002.safetensors c/model-00001-of-00002.safetensors; then
  echo "FAIL: seeds 3 and 4 gave the same weights"; exit 1; fi
grep -q '"num_hidden_layers": 2' a/config.json
/usr/bin/python3 - a <<'PY'
import json, struct, sys, glob
import numpy as np
d = sys.argv[1]
T = {}
for f in sorted(glob.glob(d + "/model-*.safetensors")):
    b = open(f, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    for k, v in h.items():
        if k == "__metadata__": continue
        assert v["dtype"] == "BF16", (k, v["dtype"])
        s, e = v["data_offsets"]
        u = np.frombuffer(b[8 + n + s:8 + n + e], dtype="<u2").astype(np.uint32) << 16
        T[k] = u.view(np.float32).reshape(v["shape"])
ok = True
def check(c, msg):
    global ok
    print(("ok   " if c else "FAIL ") + msg)
    ok &= bool(c)
q = T["model.layers.1.self_attn.q_proj.weight"]
check(0.015 < q.std() < 0.03, "q_proj std %.4f ~ 0.02 (x log-normal row scales)" % q.std())
dn = T["model.layers.1.mlp.down_proj.weight"]
check(0.005 < dn.std() < 0.02, "down_proj std %.4f ~ 0.02/sqrt(2*2) = 0.01" % dn.std())
rs = np.abs(q).max(axis=1)
check(rs.max() / rs.min() > 2, "per-row ranges differ (max/min %.1f)" % (rs.max() / rs.min()))
n0 = T["model.layers.0.input_layernorm.weight"]
check((n0 > 4).sum() >= 1 and (n0 > 4).sum() <= 16, "outlier norm channels: %d" % (n0 > 4).sum())
ch = np.where(n0 > 4)[0]
d0 = T["model.layers.0.mlp.down_proj.weight"]
check(np.abs(d0[ch]).max() > 0.4 and np.abs(d0).max() / dn.std() > 30,
      "super weight in block 0 down_proj row %s: %.3f" % (ch, np.abs(d0[ch]).max()))
E = T["model.embed_tokens.weight"]
cs = E.std(axis=0)
check(cs[ch].min() > 10 * np.median(cs), "massive embedding dims %s: std %.3f vs median %.4f"
      % (ch, cs[ch].min(), np.median(cs)))
sys.exit(0 if ok else 1)
PY
/usr/bin/python3 -c "
import numpy as np; np.random.seed(5); np.random.randint(0, 8192, size=16*64).astype('<u4').tofile('ids.bin')"
"$MPIEXEC" -n 2 "$MPIQUANT_BIN" quantize --model a --calib-tokens ids.bin --nsamples 8 \
  --seqlen 64 --method gptq --bits 4 --group 32 --out ck -q
"$MPIEXEC" -n 2 "$MPIQUANT_BIN" eval --model a --tokens ids.bin --seqlen 64 --json -q | tail -1 > fp.json
"$MPIEXEC" -n 2 "$MPIQUANT_BIN" eval --ckpt ck --tokens ids.bin --seqlen 64 --json -q | tail -1 > q.json
/usr/bin/python3 - <<'PY'
import json, math
fp = json.load(open("fp.json")); q = json.load(open("q.json"))
print("ppl fp %.4g, gptq w4 g32 %.4g" % (fp["ppl"], q["ppl"]))
assert math.isfinite(fp["ppl"]) and math.isfinite(q["ppl"]) and fp["windows"] == 16
assert q["np"] == 2 and fp["tokens_scored"] == 16 * 63
# fake-quant weights must change the model, but not wreck it
assert q["ppl"] != fp["ppl"] and abs(math.log(q["ppl"] / fp["ppl"])) < 1.0, (fp["ppl"], q["ppl"])
print("ok")
PY
