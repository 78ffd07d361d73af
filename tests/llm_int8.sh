#!/usr/bin/env bash
# LLM.int8() on stories260K at NP ranks vs tests/llm_int8_ref.py (numpy from
# the paper's definitions): calibration outlier columns, int8 weights, and
# the perplexity of the W8A8 decomposition (eval --ckpt) vs numpy and fp.
#   llm_int8.sh NP THRESHOLD [--weight-only]
set -euo pipefail
np=$1 tau=$2; shift 2
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
rm -rf "$T"; mkdir -p "$T"
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
# LI_NSAMPLES (16) calibration windows of 128 tokens: the golden windows' first 128 ids
head -"${LI_NSAMPLES:-16}" "$S/golden/calib/stories260K_calib_ids.txt" |
  awk '{s=$1; for (i = 2; i <= 128; i++) s = s " " $i; print s}' > "$T/calib.txt"
M="$S/models/stories260K-hf" E="$S/golden/calib/stories260K_eval_tinystories_ids.txt"
"${MPIEXEC:-mpiexec}" -n "$np" "$B" quantize --model "$M" --calib-tokens "$T/calib.txt" \
  --nsamples "${LI_NSAMPLES:-16}" --seqlen 128 --method llm-int8 --threshold "$tau" "$@" --out "$T/ck" -q
ppl() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" eval --model "$M" --tokens "$E" --json "$@" -q |
          /usr/bin/python3 -c 'import json,sys; print(repr(json.loads(sys.stdin.readlines()[-1])["ppl"]))'; }
fp=$(ppl) ck=$(ppl --ckpt "$T/ck")
echo "ppl fp $fp, llm-int8 $ck"
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/llm_int8_ref.py" "$M" "$T/calib.txt" "$T/ck" "$E" "$fp" "$ck"
echo "llm_int8: 1 passed, 0 failed"
