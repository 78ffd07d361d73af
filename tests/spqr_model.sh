#!/usr/bin/env bash
# SpQR w3 g16 vs GPTQ w3 g16 on stories260K at NP ranks (same 32
# calibration windows of 128 tokens, golden TinyStories eval windows): SpQR's
# perplexity must be lower, its bits per parameter as recomputed from the
# checkpoint (tests/spqr_bits.py) below GPTQ's 3 + 2 * 16 / 16 = 5 (fp16
# scale and zero per group of 16), and the manifest's counts equal to the files'.
#   spqr_model.sh NP
set -euo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
rm -rf "$T"; mkdir -p "$T"
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
head -32 "$S/golden/calib/stories260K_calib_ids.txt" |
  awk '{s=$1; for (i = 2; i <= 128; i++) s = s " " $i; print s}' > "$T/calib.txt"
M="$S/models/stories260K-hf" E="$S/golden/calib/stories260K_eval_tinystories_ids.txt"
ppl() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" eval --ckpt "$1" --tokens "$E" --json -q |
          /usr/bin/python3 -c 'import json,sys; print(repr(json.loads(sys.stdin.readlines()[-1])["ppl"]))'; }
for m in "gptq --bits 3 --group 16" "spqr --bits 3 --group 16"; do
  # shellcheck disable=SC2086
  "${MPIEXEC:-mpiexec}" -n "$np" "$B" quantize --model "$M" --calib-tokens "$T/calib.txt" \
    --nsamples 32 --seqlen 128 --method $m --out "$T/${m%% *}" -q
done
g=$(ppl "$T/gptq") s=$(ppl "$T/spqr")
line=$(/usr/bin/python3 "$QZ_SOURCE_DIR/tests/spqr_bits.py" "$T/spqr") || { echo "$line"; exit 1; }
echo "$line"
bpp=$(echo "$line" | sed 's/.*model \([0-9.]*\) bits.*/\1/')
echo "ppl gptq w3 g16 $g (5 bits per parameter), spqr w3 g16 $s ($bpp bits per parameter)"
/usr/bin/python3 -c "import sys; sys.exit(0 if $s < $g and $bpp < 5 else 1)" ||
  { echo "FAIL: spqr is not below gptq at fewer bits"; exit 1; }
echo "spqr_model: 1 passed, 0 failed"
