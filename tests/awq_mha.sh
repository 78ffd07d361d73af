#!/usr/bin/env bash
# AWQ o_proj <- v_proj search and fold on a model without grouped-query
# attention (both real test models use GQA, where llm-awq skips it): a
# synthetic 2-block MHA model shaped like stories260K (mpiquant synth), then
# the folding identity and rank-count checks of qzt_awq_fold on it.
#   awq_mha.sh NP QZT_AWQ_FOLD
set -euo pipefail
np=$1 prog=$2
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
rm -rf "$T"; mkdir -p "$T"
"$B" synth --config "$QZ_SOURCE_DIR/tests/fixtures/configs/mha-tiny.json" --layers 2 \
  --dtype f32 --seed 7 --out "$T/mha" -q
"${MPIEXEC:-mpiexec}" -n "$np" "$prog" "$T/mha" "$S/golden/calib/stories260K_calib_ids.txt"
