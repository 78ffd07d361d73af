#!/usr/bin/env bash
# AWQ on an MoE model made of real weights: stories260K upcycled to a
# Mixtral of 4 experts (top-2), every expert a copy of the block's dense MLP
# and a random router (moe_upcycle.py), so the fp MoE model computes the
# dense model exactly while each expert's AWQ search sees its own routed
# tokens.  Checks: the fp MoE perplexity equals the dense model's (TOL_FP
# relative: f32 sums in another order), and AWQ w3 g32 is not worse than
# RTN w3 g32 (measured 6.13 vs 7.16 on TinyStories: the margin is ~15x the
# 1 % that BLAS rounding moves AWQ's perplexity).
#   moe_awq_ppl.sh NP
set -uo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?} SRC=${QZ_SOURCE_DIR:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"; cd "$T"
fail() { echo "FAIL: $*"; exit 1; }
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
/usr/bin/python3 "$SRC/tests/moe_upcycle.py" "$S/models/stories260K-hf" mx 4 2 || fail upcycle
ev() { run eval "$@" --data "$S/data/tinystories_valid_head.txt" --seqlen 128 --windows 64 --json -q |
       grep -o '"ppl":[^,]*' | cut -d: -f2; }
q() { run quantize --model mx --calib "$S/data/tinyshakespeare.txt" --nsamples 8 --seqlen 128 \
        --bits 3 --group 32 -q "$@"; }
dense=$(ev --model "$S/models/stories260K-hf") && moe=$(ev --model mx) || fail "fp eval"
q --method awq --out awq || fail "quantize awq"
q --method rtn --out rtn || fail "quantize rtn"
pa=$(ev --ckpt awq) && pr=$(ev --ckpt rtn) || fail "eval --ckpt"
/usr/bin/python3 - "$dense" "$moe" "$pa" "$pr" <<'PY' || fail "perplexities"
import sys
TOL_FP = 1e-5
dense, moe, awq, rtn = map(float, sys.argv[1:5])
print("ppl TinyStories: dense %.4f, upcycled MoE fp %.4f; MoE w3 g32: AWQ %.4f, RTN %.4f"
      % (dense, moe, awq, rtn))
ok = abs(moe - dense) <= TOL_FP * dense and awq <= rtn and awq > moe
print("PASS" if ok else "FAIL"); sys.exit(0 if ok else 1)
PY
