#!/usr/bin/env bash
# plan vs a measured run for a Qwen3-MoE-shaped block: one synthetic block
# (H 1024, 16/4 heads of 64, 16 experts of I_e 384, top-2, vocab 4096; the
# Qwen3-30B-A3B proportions at half width) quantized with GPTQ w4 g128 at np 2
# on 8 x 512 random calibration ids; the peak RSS per rank printed by
# --log-view must be within TOL of `plan --np 2` (built-in rates). The plan
# models the expert-streamed quantize (docs/moe.md): one expert in f32, the
# routed rows, the block's FFN output, the expert Hessians one at a time.
# TOL as tests/scale_plan_synth.sh (fixed process costs, ~15 % of a
# ~300 MB run), but the issue's 10 % is required here: TOL = 0.10.
set -euo pipefail
: "${MPIQUANT_BIN:?}" "${QZ_TEST_TMP:?}" "${MPIEXEC:=mpiexec}"
TOL=0.10
rm -rf "$QZ_TEST_TMP"; mkdir -p "$QZ_TEST_TMP"; cd "$QZ_TEST_TMP"
export MPIQUANT_RATES="$QZ_TEST_TMP/no-rates.json"   # force the documented defaults
cat > moe.json <<'J'
{"architectures":["Qwen3MoeForCausalLM"],"model_type":"qwen3_moe","hidden_size":1024,
 "intermediate_size":3072,"moe_intermediate_size":384,"num_attention_heads":16,
 "num_key_value_heads":4,"head_dim":64,"num_hidden_layers":48,"vocab_size":4096,
 "max_position_embeddings":2048,"num_experts":16,"num_experts_per_tok":2,
 "norm_topk_prob":true,"rms_norm_eps":1e-6,"rope_theta":1000000.0,"tie_word_embeddings":false}
J
"$MPIQUANT_BIN" synth --config moe.json --layers 1 --out m -q
/usr/bin/python3 -c "
import numpy as np; np.random.seed(9); np.random.randint(0, 4096, size=8*512).astype('<u4').tofile('ids.bin')"
"$MPIEXEC" -n 2 "$MPIQUANT_BIN" quantize --model m --calib-tokens ids.bin --nsamples 8 \
  --seqlen 512 --method gptq --bits 4 --group 128 --out ck --log-view -q 2> run.log
grep "peak RSS" run.log
"$MPIQUANT_BIN" plan --model m --np 2 --nsamples 8 --seqlen 512 --method gptq --bits 4 \
  --group 128 --json -q | tail -1 > plan.json
"$MPIQUANT_BIN" plan --model m --np 2 --nsamples 8 --seqlen 512 -q | sed -n '/memory per rank/,/PEAK/p'
/usr/bin/python3 - "$TOL" run.log plan.json <<'PY'
import json, re, sys
tol = float(sys.argv[1])
unit = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
m = re.search(r"peak RSS per rank: min ([\d.]+) (\w+), max ([\d.]+) (\w+)", open(sys.argv[2]).read())
mx = float(m.group(3)) * unit[m.group(4)]
p = json.load(open(sys.argv[3]))["memory"]["peak"]
err = (mx - p) / p
print("measured max peak RSS %.1f MiB, plan %.1f MiB, error %+.1f %% (tolerance %.0f %%)"
      % (mx / 2**20, p / 2**20, 100 * err, 100 * tol))
sys.exit(0 if abs(err) <= tol else 1)
PY
echo ok
