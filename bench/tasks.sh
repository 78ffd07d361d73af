#!/usr/bin/env bash
# bench/tasks.sh: task-evaluation throughput (eval --task) against eval's
# perplexity throughput on the same tokens, in the same run, on a synthetic
# Llama-3-8B-shaped model (mpiquant synth, LAYERS blocks, bf16 on disk) at
# np 2 with 1 BLAS thread per rank.
#
#  - task: hellaswag, the first DOCS documents (4 choices each; the synthetic
#    model reuses stories260K's tokenizer, its ids are valid 8B ids);
#  - baseline: `eval --tokens` of the very token ids the task run scored
#    (every request's ctx + continuation from --log-samples, concatenated)
#    in windows of 512, so both runs push the same number of tokens through
#    the same blocks and head.
# tokens/s = model input tokens / wall time of the evaluation (the task run's
# input tokens count every choice's full input, as lm-eval runs them; prefix
# reuse runs fewer rows). Prints ratio_task_vs_ppl last (target >= 0.5: the
# issue asks for task eval within 2x of perplexity throughput).
#   bench/tasks.sh [BUILD_DIR] [SHARED_DIR] [LAYERS] [DOCS]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
shared=${2:-$here/../shared}
layers=${3:-2}
docs=${4:-8}
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$build/mpiquant" synth --config "$here/bench/configs/llama-3-8b.json" --layers "$layers" \
  --tokenizer "$shared/models/stories260K-hf" --out "$tmp/m" -q
mpirun -np 2 "$build/mpiquant" eval --model "$tmp/m" --task hellaswag --task-dir "$shared/tasks" \
  --limit "$docs" --json --log-samples "$tmp/s.jsonl" -q > "$tmp/task.out"
/usr/bin/python3 - "$tmp/s.jsonl" "$tmp/ids.bin" <<'PY'
import json, struct, sys
ids = []
for l in open(sys.argv[1]):
    d = json.loads(l)
    ids += d["ctx_tokens"] + d["cont_tokens"]
open(sys.argv[2], "wb").write(struct.pack("<%dI" % len(ids), *ids))
PY
mpirun -np 2 "$build/mpiquant" eval --model "$tmp/m" --tokens "$tmp/ids.bin" --seqlen 512 \
  --json -q > "$tmp/ppl.out"
cat "$tmp/task.out" "$tmp/ppl.out" | grep -v '^{'
/usr/bin/python3 - "$tmp/task.out" "$tmp/ppl.out" <<'PY'
import json, sys
t = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
p = json.loads([l for l in open(sys.argv[2]) if l.startswith("{")][-1])
print("task_tokens        %d input tokens (%d forward rows after prefix reuse)" %
      (t["tokens_input"], t["tokens_forward"]))
print("task_tokens_per_s  %.0f  (%.2f s)" % (t["tokens_per_s"], t["seconds"]))
print("ppl_tokens         %d" % (p["windows"] * p["seqlen"]))
print("ppl_tokens_per_s   %.0f  (%.2f s)" % (p["tokens_per_s"], p["seconds"]))
print("ratio_task_vs_ppl  %.2f  (target >= 0.5)" % (t["tokens_per_s"] / p["tokens_per_s"]))
PY
