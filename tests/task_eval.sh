#!/usr/bin/env bash
# eval --task (benchmark accuracy, lm-eval 0.4 request semantics).
#   task_eval.sh np NP          stories260K, the five shared tasks (--limit 12):
#                               samples and result lines at np NP identical to
#                               np 1 (bit for bit); at np 1 also prefix reuse vs
#                               --no-prefix-reuse within TOL_REUSE; at np 2 also
#                               several passes over the weights (--round-rows)
#   task_eval.sh check MODEL LIMIT NP
#                               the five tasks at np NP vs the independent numpy
#                               forward + tokenizer (tests/task_check.py)
#   task_eval.sh fewshot        MMLU format (few-shot from a dev file and from
#                               the task itself) and 2-shot prompts, vs numpy
#   task_eval.sh layouts        the published HF layouts: vs numpy, and the same
#                               requests (tokens, loglikelihoods) as the converted
#                               files
#   task_eval.sh badinput NP    bad task files: error naming file:line on every
#                               rank, exit status, no --log-samples file
#   task_eval.sh ckpt NP        --ckpt (fake-quant) and the GPTQ export of the
#                               same checkpoint: np-identical, export vs numpy
#                               on its dense unpacking, ckpt close to the export
#   task_eval.sh vocabshard NP  the output head sharded over the ranks
#                               (vocabularies > 4096): stories260K grown to
#                               10000 rows (tests/vocab_expand.py: 3 chunks,
#                               even tokens' rows copied into the third, so
#                               argmax ties cross ranks): np NP identical to
#                               np 1, both vs --full-head within TOL_SHARD, the
#                               same greedy flags (some true), and vs numpy
set -uo pipefail
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?} SRC=${QZ_SOURCE_DIR:?}
F=$SRC/tests/fixtures/tasks
TASKS=hellaswag,arc_easy,piqa,winogrande,lambada_openai
rm -rf "$T"; mkdir -p "$T"
fail() { echo "FAIL: $*"; exit 1; }
run() { local np=$1; shift; "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
files() { for t in ${1//,/ }; do echo "$t=$S/tasks/$t.jsonl"; done; }
check() { /usr/bin/python3 "$SRC/tests/task_check.py" "$@" || fail "independent check: $*"; }
mode=$1; shift
case $mode in
np)
  np=$1
  ev() { run "$1" eval --model "$S/models/stories260K-hf" --task $TASKS --task-dir "$S/tasks" \
           --limit 12 --log-samples "$T/$2.jsonl" -q "${@:3}" > "$T/$2.out" || fail "eval at np $1"; }
  ev 1 ref
  grep -Eq "^hellaswag +acc 0\.[0-9]{4} \+- 0\.[0-9]{4}  acc_norm 0\.[0-9]{4} \+- 0\.[0-9]{4}  \(n 12 documents, 48 requests" "$T/ref.out" \
    && grep -Eq "^lambada_openai +acc 0\.[0-9]{4} \+- .* perplexity [0-9.e+]+ \+- " "$T/ref.out" \
    && grep -Eq "^winogrande +acc 0\.[0-9]{4} \+- 0\.[0-9]{4} +\(n 12 documents, 24 requests" "$T/ref.out" \
    && grep -Eq "^tasks: 156 requests, [0-9]+ input tokens .* np 1, .* tokens/s" "$T/ref.out" \
    || { cat "$T/ref.out"; fail "result lines"; }
  [ "$(wc -l < "$T/ref.jsonl")" -eq 156 ] || fail "log-samples: expected 156 lines"
  ev "$np" got
  cmp "$T/ref.jsonl" "$T/got.jsonl" || fail "log-samples at np $np differ from np 1"
  diff <(grep -v '^tasks:' "$T/ref.out") <(grep -v '^tasks:' "$T/got.out") \
    || fail "result lines at np $np differ from np 1"
  if [ "$np" = 2 ]; then # several passes over the weights: the same bits
    ev 2 rounds --round-rows 700
    grep -Eq "in total \([2-9] passes\)" "$T/rounds.out" || { cat "$T/rounds.out"; fail "--round-rows 700: one pass"; }
    cmp "$T/ref.jsonl" "$T/rounds.jsonl" || fail "--round-rows changed the results"
  fi
  if [ "$np" = 1 ]; then
    # prefix reuse changes only the order of float32 operations: each
    # request's loglikelihood within TOL_REUSE = 3e-5 nats per scored token
    # (task_check.py's float32-vs-float64 tolerance), the same greedy flags
    ev 1 noreuse --no-prefix-reuse
    /usr/bin/python3 - "$T/ref.jsonl" "$T/noreuse.jsonl" <<'P' || fail "prefix reuse vs none"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b)
worst = 0
for x, y in zip(a, b):
    n = len(x["cont_tokens"])
    d = abs(x["loglikelihood"] - y["loglikelihood"]) / n
    worst = max(worst, d)
    assert d <= 3e-5, (x["task"], x["doc"], x["choice"], d)
    assert x["is_greedy"] == y["is_greedy"] or d > 0, x
print("prefix reuse vs none: max |d ll| per token %.3g" % worst)
P
  fi
  ;;
check)
  model=$1 limit=$2 np=$3
  run "$np" eval --model "$S/models/$model" --task $TASKS --task-dir "$S/tasks" --limit "$limit" \
    --json --log-samples "$T/s.jsonl" -q > "$T/r.out" || fail eval
  check "$S/models/$model" "$T/s.jsonl" "$T/r.out" $(files $TASKS)
  ;;
fewshot)
  M=$S/models/stories260K-hf
  run 1 eval --model "$M" --task "$F/mmlu_small.jsonl" --num-fewshot 2 --fewshot-from "$F/mmlu_dev.jsonl" \
    --json --log-samples "$T/a.jsonl" -q > "$T/a.out" || fail "mmlu from dev"
  grep -q '"mmlu_small":{"n":6,"requests":24' "$T/a.out" && ! grep -q acc_norm "$T/a.out" \
    || { cat "$T/a.out"; fail "mmlu result"; }
  check "$M" "$T/a.jsonl" "$T/a.out" mmlu_small="$F/mmlu_small.jsonl" --fewshot 2 --fewshot-from "$F/mmlu_dev.jsonl"
  run 2 eval --model "$M" --task "$F/mmlu_small.jsonl",hellaswag,winogrande,lambada_openai \
    --task-dir "$S/tasks" --limit 3 --num-fewshot 2 --json --log-samples "$T/b.jsonl" -q > "$T/b.out" \
    || fail "2-shot"
  check "$M" "$T/b.jsonl" "$T/b.out" mmlu_small="$F/mmlu_small.jsonl" $(files hellaswag,winogrande,lambada_openai) --fewshot 2
  ;;
layouts)
  M=$S/models/stories260K-hf
  for t in hellaswag arc_easy piqa winogrande lambada_openai; do
    run 1 eval --model "$M" --task "$F/hf_$t.jsonl" --json --log-samples "$T/hf_$t.jsonl" -q \
      > "$T/hf_$t.out" || fail "eval of hf_$t.jsonl"
    grep -Eq "^hf_$t " "$T/hf_$t.out" || fail "hf_$t result line"
    check "$M" "$T/hf_$t.jsonl" "$T/hf_$t.out" "hf_$t=$F/hf_$t.jsonl"
    # the converted file's records (hellaswag: lm-eval's own preprocessing of
    # the same records, see the fixture) must give the same requests
    if [ $t = hellaswag ]; then cp "$F/hf_hellaswag.expected.jsonl" "$T/conv_$t.jsonl"
    else head -n 4 "$S/tasks/$t.jsonl" > "$T/conv_$t.jsonl"; fi
    run 1 eval --model "$M" --task "$T/conv_$t.jsonl" --log-samples "$T/conv_$t.s.jsonl" -q > /dev/null \
      || fail "eval of the converted $t"
    /usr/bin/python3 - "$T/hf_$t.jsonl" "$T/conv_$t.s.jsonl" <<'P' || fail "$t: HF layout and converted file differ"
import json, sys
key = lambda l: [(d["doc"], d["choice"], d["ctx_tokens"], d["cont_tokens"], d["loglikelihood"], d["is_greedy"])
                 for d in map(json.loads, open(l))]
a, b = key(sys.argv[1]), key(sys.argv[2])
assert a == b and a, (len(a), len(b))
P
  done
  ;;
vocabshard)
  # TOL_SHARD = 1e-11 nats per scored token: only the order of the double
  # sum over the vocabulary differs (chunk sums, then in chunk order), at
  # most ~V * 2^-53 = 1.1e-12 relative in the sum; measured <= 6e-13
  np=$1 M=$T/m10k
  /usr/bin/python3 "$SRC/tests/vocab_expand.py" "$S/models/stories260K-hf" "$M" 10000 8192 \
    || fail "vocab_expand"
  # next-word choices after half a story: the model's argmax is often one of
  # them, so some is_greedy flags are true (the ties above decide them)
  /usr/bin/python3 - "$S/data/tinystories_valid_head.txt" "$T/nextword.jsonl" <<'P' || fail "nextword task"
import json, sys
lines = [l.strip() for l in open(sys.argv[1]) if len(l.strip()) > 80][:40]
words = ["the", "a", "and", "was", "to", "he", "she", "it", "they", "in", "of", "his", "her",
         "had", "with", "said", "day", "big", "Tim", "Lily", "dog", "very", "not", "so", "that",
         "on", "for", "is", "play", "happy"]
with open(sys.argv[2], "w") as f:
    for i, l in enumerate(lines):
        w = l.split()
        f.write(json.dumps({"id": "nw%d" % i, "context": " ".join(w[:len(w) // 2]),
                            "choices": words, "gold": 0}) + "\n")
P
  ev() { run "$1" eval --model "$M" --task "$TASKS,$T/nextword.jsonl" --task-dir "$S/tasks" \
           --limit 12 --json --log-samples "$T/$2.jsonl" -q "${@:3}" > "$T/$2.out" || fail "eval $2"; }
  ev 1 ref
  ev "$np" got
  cmp "$T/ref.jsonl" "$T/got.jsonl" || fail "sharded head: np $np differs from np 1"
  ev "$np" rounds --round-rows 900 # several passes: every rank scores every round
  grep -Eq "in total \([2-9] passes\)" "$T/rounds.out" || { cat "$T/rounds.out"; fail "--round-rows 900: one pass"; }
  cmp "$T/ref.jsonl" "$T/rounds.jsonl" || fail "sharded head: --round-rows changed the results"
  ev 1 full --full-head
  /usr/bin/python3 - "$T/ref.jsonl" "$T/full.jsonl" <<'P' || fail "sharded vs whole head"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 12 * 4 * 2 + 12 * 2 * 2 + 12 + 12 * 30, len(a)
worst = 0
for x, y in zip(a, b):
    assert (x["task"], x["doc"], x["choice"]) == (y["task"], y["doc"], y["choice"]), (x, y)
    d = abs(x["loglikelihood"] - y["loglikelihood"]) / len(x["cont_tokens"])
    worst = max(worst, d)
    assert d <= 1e-11, (x["task"], x["doc"], x["choice"], d)
    assert x["is_greedy"] == y["is_greedy"], (x["task"], x["doc"], x["choice"])
ng = sum(x["is_greedy"] for x in a)
assert ng > 0, "no greedy continuation: the argmax is not tested"
print("sharded vs whole head: %d requests, max |d ll| per token %.3g, %d greedy" % (len(a), worst, ng))
P
  run "$np" eval --model "$M" --task hellaswag,lambada_openai --task-dir "$S/tasks" --limit 6 \
    --json --log-samples "$T/c.jsonl" -q > "$T/c.out" || fail "eval for numpy"
  check "$M" "$T/c.jsonl" "$T/c.out" $(files hellaswag,lambada_openai)
  ;;
badinput)
  np=$1 bad=$T/bad
  mkdir -p "$bad"
  mc='{"id": "a", "context": "Q", "choices": ["x", "y", "z", "w"], "gold": 0}'
  printf '%s\n%s\n{"id": broken\n' "$mc" "$mc" > "$bad/malformed.jsonl"
  printf '%s\n{"id": "b", "context": "Q", "choices": ["x", "y", "z", "w"], "gold": 4}\n' "$mc" > "$bad/gold.jsonl"
  printf '%s\n\n{"id": "c", "context": "Q", "choices": [], "gold": 0}\n' "$mc" > "$bad/empty.jsonl"
  printf '%s\n{"id": "d", "context": "Q", "continuation": "x"}\n' "$mc" > "$bad/mixed.jsonl"
  printf '{"foo": 1}\n' > "$bad/layout.jsonl"
  : > "$bad/nothing.jsonl"
  printf '{"id": "e", "context": "Q", "choices": ["x", ""], "gold": 0}\n' > "$bad/emptychoice.jsonl"
  printf '%s\n%s\n%s\n' "$mc" "$mc" "$mc" > "$bad/three.jsonl"
  expect() { # CODE REGEX TIMES ARGS...: status, message on TIMES ranks (TIMES
    # 1: one process without mpiexec), no samples file
    local code=$1 re=$2 times=$3; shift 3
    rm -f "$T/s.jsonl"
    local pre=("${MPIEXEC:-mpiexec}" -n "$times")
    [ "$times" = 1 ] && pre=()
    out=$("${pre[@]}" "$B" eval --model "$S/models/stories260K-hf" --log-samples "$T/s.jsonl" "$@" 2>&1); rc=$?
    [ $rc -eq "$code" ] || { echo "$out"; fail "$*: exit $rc, expected $code"; }
    n=$(grep -Ec -- "$re" <<<"$out")
    [ "$n" -ge "$times" ] || { echo "$out"; fail "$*: '$re' printed $n times, expected $times"; }
    [ ! -e "$T/s.jsonl" ] && ! ls "$T"/s.jsonl.tmp* >/dev/null 2>&1 || fail "$*: samples file written"
    echo "ok: $*"
  }
  # every rank parses the task files: at np NP each rank names the line
  expect 5 "malformed.jsonl:3: not a JSON object" "$np" --task "$bad/malformed.jsonl"
  expect 5 'gold.jsonl:2: gold 4 is outside the 4 choices' "$np" --task "$bad/gold.jsonl"
  expect 3 "unknown task 'nosuch': no nosuch.jsonl in --task-dir" "$np" --task hellaswag,nosuch --task-dir "$S/tasks"
  expect 5 'empty.jsonl:3: "choices" is empty' 1 --task "$bad/empty.jsonl"
  expect 5 'mixed.jsonl:2: a cloze record .* a task file holds one kind' 1 --task "$bad/mixed.jsonl"
  expect 5 'layout.jsonl:1: unknown record layout \(keys: foo\)' 1 --task "$bad/layout.jsonl"
  expect 5 'nothing.jsonl: no records' 1 --task "$bad/nothing.jsonl"
  expect 5 'emptychoice.jsonl:1: choice 1 is an empty string' 1 --task "$bad/emptychoice.jsonl"
  expect 3 'three.jsonl:1: --num-fewshot 3, but .* has only 2 other records' 1 --task "$bad/three.jsonl" --num-fewshot 3
  expect 2 'fewshot-from needs --num-fewshot' 1 --task "$bad/three.jsonl" --fewshot-from "$bad/three.jsonl"
  expect 2 '--task scores benchmark requests' 1 --task "$bad/three.jsonl" --data x.txt
  expect 2 'add-bos takes yes or no' 1 --task "$bad/three.jsonl" --add-bos maybe
  ;;
ckpt)
  np=$1 M=$S/models/babyllama-tok105-hf
  export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
  run "$np" quantize --model "$M" --method rtn --bits 4 --group 32 --out "$T/ck" -q || fail quantize
  run "$np" export --ckpt "$T/ck" --out "$T/exp" -q || fail export
  /usr/bin/python3 "$SRC/tests/export_dense.py" "$T/exp" "$T/dense" || fail export_dense
  ev() { run "$1" eval "${@:3}" --task $TASKS --task-dir "$S/tasks" --limit 4 --json \
           --log-samples "$T/$2.jsonl" -q > "$T/$2.out" || fail "eval $2 at np $1"; }
  ev 1 ck1 --ckpt "$T/ck"
  ev "$np" ck --ckpt "$T/ck"
  cmp "$T/ck1.jsonl" "$T/ck.jsonl" || fail "--ckpt at np $np differs from np 1"
  ev "$np" exp --model "$T/exp"
  ev "$np" fp --model "$M"
  check "$T/dense" "$T/exp.jsonl" "$T/exp.out" $(files $TASKS)
  # the export stores the scales in f16: the checkpoint's fake-quant
  # loglikelihoods within TOL_F16 = 2e-2 nats per scored token of the
  # export's (2^-11 relative scale rounding through 5 blocks; measured
  # about 2e-3), and quantization visibly changed them vs fp32
  /usr/bin/python3 - "$T/ck.jsonl" "$T/exp.jsonl" "$T/fp.jsonl" <<'P' || fail "ckpt vs export vs fp"
import json, sys
c, e, f = ([json.loads(l) for l in open(p)] for p in sys.argv[1:4])
dq = max(abs(x["loglikelihood"] - y["loglikelihood"]) / len(x["cont_tokens"]) for x, y in zip(c, e))
df = max(abs(x["loglikelihood"] - y["loglikelihood"]) / len(x["cont_tokens"]) for x, y in zip(c, f))
print("ckpt vs export: max %.3g per token; ckpt vs fp32: max %.3g" % (dq, df))
assert dq <= 2e-2 and df > 10 * dq
P
  ;;
*) fail "unknown mode $mode" ;;
esac
echo "task_eval $mode: 1 passed, 0 failed"
