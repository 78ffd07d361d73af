#!/usr/bin/env bash
# sweep with "tasks": an fp32 baseline and RTN w4 g32 on stories260K with two
# tasks (--limit 6 documents): results.csv has a column per task metric and
# its stderr, results.md the paper-style accuracy table (fp32 first, an
# average column), and the fp32 row's numbers are those of `eval --task`
# run by hand with the same options and rank count.
set -uo pipefail
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
rm -rf "$T"; mkdir -p "$T"
fail() { echo "FAIL: $*"; exit 1; }
run() { "${MPIEXEC:-mpiexec}" -n 2 "$B" "$@"; }
cat > "$T/spec.json" <<J
{"name": "tasks", "models": [{"name": "stories", "path": "$S/models/stories260K-hf"}],
 "baseline": true, "methods": ["rtn"], "bits": [4], "groups": [32],
 "tasks": {"names": ["hellaswag", "$S/tasks/winogrande.jsonl"], "task_dir": "$S/tasks", "limit": 6}}
J
plot=(); command -v gnuplot >/dev/null && plot=(--plot)
run sweep --spec "$T/spec.json" --out "$T/out" -q "${plot[@]}" || fail sweep
if [ ${#plot[@]} -gt 0 ]; then
  for t in hellaswag winogrande; do [ -s "$T/out/acc-stories-$t.png" ] || fail "no accuracy plot for $t"; done
fi
head -1 "$T/out/results.csv" | grep -q "hellaswag_acc,hellaswag_acc_stderr,hellaswag_acc_norm,hellaswag_acc_norm_stderr,winogrande_acc,winogrande_acc_stderr" \
  || { head -1 "$T/out/results.csv"; fail "results.csv task columns"; }
md=$T/out/results.md
grep -q "^## Accuracy on stories (%, +- standard error; first 6 documents per task)" "$md" \
  && grep -q "| hellaswag acc_norm | winogrande acc | average |" "$md" \
  && grep -A2 "| hellaswag acc_norm" "$md" | tail -1 | grep -Eq "^\| fp32 \| 32 \|" \
  && grep -Eq "^\| rtn \| 4 \| 32 \|  \|  \| [0-9.]+ \+- [0-9.]+ \| [0-9.]+ \+- [0-9.]+ \| [0-9.]+ \|" "$md" \
  || { cat "$md"; fail "results.md accuracy table"; }
run eval --model "$S/models/stories260K-hf" --task hellaswag,"$S/tasks/winogrande.jsonl" --task-dir "$S/tasks" \
  --limit 6 --json -q | grep '^{' > "$T/direct.json" || fail "eval --task"
/usr/bin/python3 - "$T/out/results.jsonl" "$T/direct.json" <<'P' || fail "sweep row differs from eval --task"
import json, sys
row = [json.loads(l) for l in open(sys.argv[1]) if '"fp32"' in l][0]["tasks"]
d = json.load(open(sys.argv[2]))["tasks"]
for t in ("hellaswag", "winogrande"):
    for k, v in row[t].items():
        assert d[t][k] == v, (t, k, v, d[t][k])
print("fp32 row equals eval --task:", row)
P
# a rerun finds every point done (tasks recorded in the rows)
out=$(run sweep --spec "$T/spec.json" --out "$T/out" 2>&1) || fail rerun
grep -q "0 points run, 2 skipped" <<<"$out" || { echo "$out"; fail "rerun reran points"; }
echo "sweep_tasks: 1 passed, 0 failed"
