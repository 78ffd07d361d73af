#!/usr/bin/env bash
# rotate_eval_np.sh ROT: a GPTQ W4A4KV4 checkpoint with --rotate ROT; its
# perplexity (NLL sum) and its task results (eval --task, loglikelihood
# path with the rotation, activation and KV hooks) must be identical at np
# 1, 2 and 3 (the project's promise for eval), and the quantized model must
# differ from the fp one (the hooks are on).
set -euo pipefail
rot=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
M="$S/models/stories260K-hf" D="$S/data/tinystories_valid_head.txt"
run() { local np=$1; shift; "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
run 2 quantize --model "$M" --calib "$D" --nsamples 16 --seqlen 128 --method gptq --bits 4 \
  --group -1 --act-bits 4 --act-asym --kv-bits 4 --rotate "$rot" --out "$T/ck" -q
for np in 1 2 3; do
  run $np eval --ckpt "$T/ck" --data "$D" --seqlen 256 --windows 6 --json -q | tail -1 > "$T/ppl$np.json"
  run $np eval --ckpt "$T/ck" --task lambada_openai,piqa --task-dir "$S/tasks" --limit 16 --json -q \
    | grep '^{' > "$T/task$np.json"
done
run 1 eval --model "$M" --task lambada_openai,piqa --task-dir "$S/tasks" --limit 16 --json -q \
  | grep '^{' > "$T/taskfp.json"
/usr/bin/python3 - "$T" <<'PY'
import json, sys
t = sys.argv[1]
p = [json.load(open(f"{t}/ppl{n}.json"))["nll_sum"] for n in (1, 2, 3)]
k = [json.load(open(f"{t}/task{n}.json"))["tasks"] for n in (1, 2, 3)]
fp = json.load(open(f"{t}/taskfp.json"))["tasks"]
print("nll_sum at np 1, 2, 3:", p)
assert p[0] == p[1] == p[2], p
for n in (1, 2):
    assert k[n] == k[0], (n, k[n], k[0])
assert k[0]["lambada_openai"]["perplexity"] != fp["lambada_openai"]["perplexity"], "hooks off?"
print("tasks identical at np 1, 2, 3:", {x: k[0][x]["acc"] for x in k[0]},
      "lambada perplexity", k[0]["lambada_openai"]["perplexity"], "fp", fp["lambada_openai"]["perplexity"])
PY
echo "rotate_eval_np: 1 passed, 0 failed"
