#!/usr/bin/env bash
# mpiquant sweep without Slurm, on examples/sweep-tiny.json (4 points) at
# np 2: one row per point in results.csv/.jsonl and a results.md table; the
# rtn w4 g32 row equals a direct `quantize` + `eval` of the same config
# exactly; a rerun skips every point (resume) and a deleted row is redone
# with the same perplexity; --point runs one point; an fp32 baseline row
# equals `eval --model`; --plot draws a PNG and SVG (or, without gnuplot,
# fails with a clear message); --emit-slurm writes a valid array job; bad
# specs fail naming the problem.
set -euo pipefail
S=${QZ_SOURCE_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
NP=2
SPEC=$S/examples/sweep-tiny.json
MODEL=$S/examples/stories260K-hf
TEXT=$S/examples/tinystories_sample.txt
rm -rf "$T"
mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$NP" "$B" "$@"; }
fail() { echo "sweep_tiny: FAIL: $*" >&2; exit 1; }
checks=0
ok() { checks=$((checks + 1)); echo "  ok: $*"; }
# ppl of KEY in DIR/results.jsonl (17 significant digits)
ppl_of() {
  /usr/bin/python3 -c 'import json,sys
for l in open(sys.argv[1] + "/results.jsonl"):
    r = json.loads(l)
    if r["key"] == sys.argv[2]: print(repr(list(r["ppl"].values())[0]))' "$1" "$2"
}
pyjson() { /usr/bin/python3 -c 'import json,sys; print(repr(json.loads(sys.argv[1])["ppl"]))' "$1"; }

have_gnuplot=0
command -v gnuplot >/dev/null && have_gnuplot=1
plot=()
[ $have_gnuplot = 1 ] && plot=(--plot)

# 1. the whole sweep
run sweep --spec "$SPEC" --out "$T/r" "${plot[@]}" -q 2>"$T/sweep1.err" || { cat "$T/sweep1.err"; fail "sweep failed"; }
[ "$(wc -l <"$T/r/results.jsonl")" -eq 4 ] || fail "results.jsonl has $(wc -l <"$T/r/results.jsonl") rows, expected 4"
[ "$(wc -l <"$T/r/results.csv")" -eq 5 ] || fail "results.csv: expected a header + 4 rows"
head -n 1 "$T/r/results.csv" | grep -q '^index,key,model,method,bits,group,act_order,sym,calibration,nsamples,calib_seqlen,ppl_tinystories,sec_load,.*peak_rss_max_bytes,np,mpiquant_version,git_rev' ||
  fail "results.csv header: $(head -n 1 "$T/r/results.csv")"
grep -q '^| gptq | 3 | 32 |  |  | tinystories | [0-9.]* |$' "$T/r/results.md" || fail "results.md lacks the gptq w3 row"
[ -z "$(ls -A "$T/r/ckpt")" ] || fail "checkpoints were not removed: $(ls "$T/r/ckpt")"
ok "4 rows in results.csv/.jsonl, table in results.md, checkpoints removed"

# 2. the rtn w4 g32 row equals quantize + eval by hand
run quantize --model "$MODEL" --method rtn --bits 4 --group 32 --out "$T/ck" -q
direct=$(run eval --ckpt "$T/ck" --data "$TEXT" --seqlen 256 --windows 8 --json -q | grep '^{')
d=$(pyjson "$direct")
s=$(ppl_of "$T/r" stories260K__rtn-w4-g32)
[ "$d" = "$s" ] || fail "rtn w4 g32: sweep ppl $s != direct quantize+eval ppl $d"
ok "rtn w4 g32: sweep ppl $s == quantize + eval by hand"

# 3. resume: nothing to do; a deleted row is redone identically
before=$(cat "$T/r/results.jsonl")
run sweep --spec "$SPEC" --out "$T/r" 2>"$T/sweep2.err"
grep -q "0 points run, 4 skipped" "$T/sweep2.err" || { cat "$T/sweep2.err"; fail "rerun did not skip the 4 done points"; }
[ "$before" = "$(cat "$T/r/results.jsonl")" ] || fail "a rerun changed results.jsonl"
w3=$(ppl_of "$T/r" stories260K__rtn-w3-g32)
rm "$T/r/rows/stories260K__rtn-w3-g32.json"
run sweep --spec "$SPEC" --out "$T/r" 2>"$T/sweep3.err"
grep -q "1 point run, 3 skipped" "$T/sweep3.err" || { cat "$T/sweep3.err"; fail "expected 1 point run, 3 skipped"; }
[ "$(ppl_of "$T/r" stories260K__rtn-w3-g32)" = "$w3" ] || fail "the redone point has another ppl"
[ "$(wc -l <"$T/r/results.jsonl")" -eq 4 ] || fail "after the redo: not 4 rows"
ok "resume: rerun skips all 4; a deleted row is redone with the same ppl ($w3)"

# 4. --point K runs exactly one point (what an array task does)
run sweep --spec "$SPEC" --out "$T/p" --point 2 -q
[ "$(wc -l <"$T/p/results.jsonl")" -eq 1 ] || fail "--point 2 wrote $(wc -l <"$T/p/results.jsonl") rows"
[ "$(ppl_of "$T/p" stories260K__gptq-w4-g32__tinystories)" = "$(ppl_of "$T/r" stories260K__gptq-w4-g32__tinystories)" ] ||
  fail "--point 2 ppl differs from the full sweep's"
run sweep --spec "$SPEC" --out "$T/r" --list | grep -q '^   2  done     stories260K__gptq-w4-g32__tinystories$' ||
  fail "--list does not show point 2 as done"
ok "--point 2: one row, same ppl as in the full sweep; --list"

# 5. fp32 baseline row == eval --model; spec paths relative to the spec
mkdir -p "$T/spec"
cp "$TEXT" "$T/spec/text.txt"
cat >"$T/spec/base.json" <<EOF
{"models": ["$MODEL"], "baseline": true, "methods": ["rtn"], "bits": [4], "groups": [32],
 "eval": {"text": "text.txt", "seqlen": 256, "windows": 8}}
EOF
run sweep --spec "$T/spec/base.json" --out "$T/b" -q
fp=$(pyjson "$(run eval --model "$MODEL" --data "$TEXT" --seqlen 256 --windows 8 --json -q | grep '^{')")
[ "$(ppl_of "$T/b" stories260K-hf__fp32)" = "$fp" ] || fail "fp32 row $(ppl_of "$T/b" stories260K-hf__fp32) != eval --model $fp"
[ "$(ppl_of "$T/b" stories260K-hf__rtn-w4-g32)" = "$s" ] || fail "rtn w4 g32 differs between two specs"
grep -q '^| fp32 | 32 |' "$T/b/results.md" || fail "results.md lacks the fp32 row"
ok "fp32 baseline row == eval --model ($fp)"

# 6. plots
if [ $have_gnuplot = 1 ]; then
  for f in png svg; do
    [ -s "$T/r/ppl-stories260K-tinystories.$f" ] || fail "no $f plot"
  done
  head -c 8 "$T/r/ppl-stories260K-tinystories.png" | od -An -tx1 | grep -q '89 50 4e 47' || fail "not a PNG"
  ok "--plot: ppl-stories260K-tinystories.png ($(stat -c %s "$T/r/ppl-stories260K-tinystories.png") bytes) and .svg"
else
  rc=0
  PATH=/nonexistent "$B" sweep --spec "$SPEC" --out "$T/r" --plot 2>"$T/plot.err" || rc=$?
  [ $rc -eq 11 ] && grep -q "needs gnuplot" "$T/plot.err" || fail "--plot without gnuplot: exit $rc"
  ok "no gnuplot here: --plot fails clearly (install gnuplot-nox for the plot check)"
fi

# 7. --emit-slurm
run sweep --spec "$SPEC" --out "$T/a" --emit-slurm "$T/job" -q
grep -q '^#SBATCH --array=0-3$' "$T/job/sweep-array.sbatch" || fail "no --array=0-3 line"
grep -q '^#SBATCH --time=00:10:00$' "$T/job/sweep-array.sbatch" || fail "spec slurm.time not applied"
grep -q "^SPEC='$T/job/spec.json'$" "$T/job/sweep-array.sbatch" || fail "SPEC not filled in"
bash -n "$T/job/sweep-array.sbatch" || fail "the emitted sbatch is not valid bash"
/usr/bin/python3 - "$T/job/points.json" <<'PY' || fail "points.json"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["format"] == "mpiquant-sweep-points" and p["npoints"] == 4
assert [x["index"] for x in p["points"]] == [0, 1, 2, 3]
assert p["points"][2]["key"] == "stories260K__gptq-w4-g32__tinystories"
PY
run sweep --spec "$T/job/spec.json" --out "$T/r" --list | grep -q '4 points' || fail "the emitted spec.json does not parse"
ok "--emit-slurm: array 0-3, paths filled in, points.json index, spec.json reusable"

# 8. errors name the problem
expect() { # CODE REGEX cmd...
  local code=$1 re=$2 rc=0
  shift 2
  "$@" >"$T/err.out" 2>&1 || rc=$?
  [ $rc -eq "$code" ] && grep -q "$re" "$T/err.out" || { cat "$T/err.out"; fail "expected exit $code and /$re/, got $rc"; }
}
echo '{"models": ["m"], "methods": ["rtn"], "eval": {"text": "t"}, "bitz": [4]}' >"$T/bad.json"
expect 5 'unknown key "bitz"' "$B" sweep --spec "$T/bad.json"
echo '{"models": ["m"], "methods": ["gptq"], "eval": {"text": "t"}}' >"$T/bad2.json"
expect 5 'needs calibration data' "$B" sweep --spec "$T/bad2.json"
echo '{"models": ["m"], "methods": ["rtn"], "bits": [4, 4], "eval": {"text": "t"}}' >"$T/bad3.json"
expect 5 'appears twice' "$B" sweep --spec "$T/bad3.json"
expect 2 'has 4 points' "$B" sweep --spec "$SPEC" --point 4
expect 4 'No such file' "$B" sweep --spec "$T/missing.json"
ok "bad specs / options fail with exit codes 5, 2, 4 and a message naming the problem"
echo "sweep_tiny: $checks checks passed, 0 failed"
