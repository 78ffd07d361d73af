#!/usr/bin/env bash
# Qwen3 / Mixtral / Qwen2-MoE / Qwen3-MoE forward on a tiny synthetic model
# (mpiquant synth, f32, the stories260K tokenizer):
#   arch_fwd.sh CONFIG NP
# at NP = 1: logits of 3 random windows and the MoE routing vs the
#   independent numpy forward (tests/moe_ref.py), and the ragged task forward
#   (eval --task --log-samples) rescored by it;
# at every NP: eval perplexity and task samples the same bits as at np 1.
set -euo pipefail
cfg=$1 np=$2
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?} SRC=${QZ_SOURCE_DIR:?}
rm -rf "$T"; mkdir -p "$T"; cd "$T"
fail() { echo "FAIL: $*"; exit 1; }
run() { local n=$1; shift; "${MPIEXEC:-mpiexec}" -n "$n" "$B" "$@"; }
layers=$(/usr/bin/python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['num_hidden_layers'])" "$cfg")
"$B" synth --config "$cfg" --layers "$layers" --dtype f32 --seed 5 --out m \
  --tokenizer "$S/models/stories260K-hf" -q
/usr/bin/python3 - <<'PY'
import numpy as np
r = np.random.default_rng(1)
open("ids.txt", "w").write("\n".join(" ".join(map(str, r.integers(3, 512, 48))) for _ in range(4)) + "\n")
PY
ev() { run "$1" eval --model m --tokens ids.txt --seqlen 48 --json -q > "ppl$1.out" || fail "eval np $1"; }
tk() { run "$1" eval --model m --task hellaswag,lambada_openai --task-dir "$S/tasks" --limit 4 \
         --log-samples "s$1.jsonl" -q > "task$1.out" || fail "task eval np $1"; }
ev 1; tk 1
if [ "$np" = 1 ]; then
  mkdir d
  "${MPIEXEC:-mpiexec}" -n 1 "$QZT_ARCH_DUMP" m ids.txt d || fail "dump"
  /usr/bin/python3 "$SRC/tests/moe_ref.py" m ids.txt d || fail "logits/routing vs numpy"
  /usr/bin/python3 "$SRC/tests/moe_ref.py" --samples m s1.jsonl || fail "task forward vs numpy"
else
  ev "$np"; tk "$np"
  diff <(grep -o '"nll_sum":[^,]*' ppl1.out) <(grep -o '"nll_sum":[^,]*' "ppl$np.out") \
    || fail "perplexity at np $np differs from np 1"
  cmp s1.jsonl "s$np.jsonl" || fail "task samples at np $np differ from np 1"
  echo "np $np: perplexity and task samples identical to np 1"
fi
echo PASS
