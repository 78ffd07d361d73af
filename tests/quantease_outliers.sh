#!/usr/bin/env bash
# quantize --method quantease --outlier-frac at NP ranks: every linear of the
# checkpoint holds outliers_idx/outliers_val with at most round(frac out in)
# distinct in-range entries; `export --format gptq` refuses it clearly (the
# format cannot hold them) while the same run without outliers exports.
#   quantease_outliers.sh NP
set -uo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
q=(quantize --model "$S/models/babyllama-tok105-hf" --calib "$S/data/tinystories_valid_head.txt"
   --nsamples 32 --seqlen 256 --method quantease --bits 4 --group 32 --iters 10 -q)
run "${q[@]}" --outlier-frac 0.005 --out "$T/ck" || fail "quantize with outliers"
n=0
for f in "$T"/ck/blocks-*.h5; do
  for g in $(h5ls -r "$f" | awk '$1 ~ /codes$/ {sub(/\/codes$/, "", $1); print $1}'); do
    shape=$(h5ls "$f$g/codes" | sed -E 's/.*\{([0-9]+), ([0-9]+)\}.*/\1 \2/')
    read -r o i <<<"$shape"
    vals=$(h5dump -d "$g/outliers_idx" -y -w 0 "$f" 2>/dev/null | sed -n '/DATA {/,/}/p' | tr -cs '0-9' '\n' | grep -v '^$')
    cnt=$(wc -l <<<"$vals"); uniq=$(sort -u <<<"$vals" | wc -l)
    max=$(sort -n <<<"$vals" | tail -1)
    lim=$(/usr/bin/python3 -c "print(round(0.005 * $o * $i))")
    [ -n "$vals" ] && [ "$cnt" -le "$lim" ] && [ "$cnt" -eq "$uniq" ] && [ "$max" -lt $((o * i)) ] \
      || fail "$(basename "$f") $g: $cnt outliers ($uniq distinct, max $max), limit $lim for [$o, $i]"
    n=$((n + 1))
  done
done
[ $n -eq 35 ] || fail "expected 35 linears with outliers, found $n"
out=$(run export --ckpt "$T/ck" --out "$T/exp" 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "full-precision outliers (QuantEase --outlier-frac), which the GPTQ format cannot hold" <<<"$out" \
  || { echo "$out"; fail "export of outliers: rc $rc"; }
run "${q[@]}" --out "$T/ck0" || fail "quantize without outliers"
run export --ckpt "$T/ck0" --out "$T/exp0" -q || fail "export without outliers"
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/export_check.py" "$T/exp0" "$T/ck0" || fail "independent dequantizer"
echo "quantease_outliers: $n linears with outliers, export refused; without outliers exported and checked"
