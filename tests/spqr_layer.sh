#!/usr/bin/env bash
# `mpiquant layer --method spqr` on a golden layer case at NP ranks vs
# tests/spqr_ref.py (numpy from the SpQR paper's and reference's definitions).
#   spqr_layer.sh NP CASE BITS GROUP TAU [RULE [act]]   (RULE loo (default) or obs)
set -euo pipefail
np=$1 case=$2 bits=$3 group=$4 tau=$5 rule=${6:-loo} act=${7:-}
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
rm -rf "$T"; mkdir -p "$T"
extra=()
[ "$act" = act ] && extra=(--act-order)
"${MPIEXEC:-mpiexec}" -n "$np" "$B" layer --in "$S/golden/gptq/$case.safetensors" --method spqr \
  --bits "$bits" --group "$group" --outlier-rule "$rule" --outlier-threshold "$tau" "${extra[@]}" \
  --out "$T/r.safetensors" -q
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/spqr_ref.py" "$S/golden/gptq/$case.safetensors" \
  "$T/r.safetensors" "$bits" "$group" "$tau" "$rule" "$act"
echo "spqr_layer: 1 passed, 0 failed"
