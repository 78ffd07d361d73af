#!/usr/bin/env bash
# The same checkpoint at np 1, 2 and 3: AWQ (scale + clip search with
# distributed statistics, gathered clip samples) on the first two blocks of
# babyllama, a GQA model (np_identity_awq covers stories260K at np 1-4,
# np_identity_smoothquant SmoothQuant); the HDF5 block files must be
# identical (h5diff), the search ratios too.
set -euo pipefail
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
M=$S/models/babyllama-tok105-hf
for meth in "awq --bits 4 --group 32"; do
  tag=${meth%% *}
  for np in 1 2 3; do
    "${MPIEXEC:-mpiexec}" -n $np "$B" quantize --model "$M" --calib "$S/data/tinystories_valid_head.txt" \
      --nsamples 32 --seqlen 256 --layers 0:2 --method $meth --out "$T/$tag$np" -q
  done
  for np in 2 3; do
    for f in "$T/${tag}1"/blocks-*.h5; do
      h5diff "$f" "$T/$tag$np/$(basename "$f")" || { echo "FAIL: $tag np $np differs from np 1 in $(basename "$f")"; exit 1; }
    done
    /usr/bin/python3 - "$T/${tag}1/manifest.json" "$T/$tag$np/manifest.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ra = [e["stats"].get("awq_ratios") for e in a["completed_blocks"]]
rb = [e["stats"].get("awq_ratios") for e in b["completed_blocks"]]
print("ratios", ra, "vs", rb)
sys.exit(0 if ra == rb else 1)
PY
    echo "$tag np $np: identical to np 1"
  done
done
echo "awq_np: 1 passed, 0 failed"
