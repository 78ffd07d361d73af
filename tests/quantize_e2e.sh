#!/usr/bin/env bash
# End-to-end: quantize a real test model at NP ranks, evaluate the checkpoint
# on TinyStories and WikiText-2 and compare with the reference perplexities
# of ../shared/golden/README.md (model-level table) within a relative
# tolerance. With REPEAT=1 a second run must give an identical checkpoint.
#   quantize_e2e.sh NP stories|babyllama REF_TS TOL_TS REF_WT TOL_WT -- QUANTIZE_OPTIONS...
set -euo pipefail
np=$1 model=$2 ref_ts=$3 tol_ts=$4 ref_wt=$5 tol_wt=$6; shift 6
[ "$1" = "--" ] && shift
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
case $model in
  stories) M=$S/models/stories260K-hf; L=512; K=8 ;;
  babyllama) M=$S/models/babyllama-tok105-hf; L=256; K=16 ;;
  *) echo "unknown model $model"; exit 2 ;;
esac
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
run quantize --model "$M" --calib "$S/data/tinystories_valid_head.txt" --nsamples 128 \
  --seqlen $L --out "$T/ck" -q "$@"
ppl() { run eval --ckpt "$T/ck" --data "$1" --seqlen $L --windows $K --json -q | grep '^{' ; }
j_ts=$(ppl "$S/data/tinystories_valid_head.txt")
j_wt=$(ppl "$S/data/wikitext2_raw_test_gptq_joined.txt")
/usr/bin/python3 - "$j_ts" "$j_wt" "$ref_ts" "$tol_ts" "$ref_wt" "$tol_wt" <<'PY'
import json, sys
ts, wt = json.loads(sys.argv[1])["ppl"], json.loads(sys.argv[2])["ppl"]
rts, tts, rwt, twt = map(float, sys.argv[3:7])
ok = abs(ts - rts) <= tts * rts and abs(wt - rwt) <= twt * rwt
print("tinystories ppl %.5f (ref %.5g, tol %.2g%%: %+.3f%%), wikitext ppl %.4f (ref %.5g, tol %.2g%%: %+.3f%%) -> %s"
      % (ts, rts, 100 * tts, 100 * (ts / rts - 1), wt, rwt, 100 * twt, 100 * (wt / rwt - 1), "ok" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
if [ "${REPEAT:-0}" = 1 ]; then
  run quantize --model "$M" --calib "$S/data/tinystories_valid_head.txt" --nsamples 128 \
    --seqlen $L --out "$T/ck2" -q "$@"
  for f in "$T"/ck/blocks-*.h5; do
    HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin" h5diff "$f" "$T/ck2/$(basename "$f")" \
      || { echo "second run differs in $(basename "$f")"; exit 1; }
  done
  echo "second run: identical checkpoint ($(ls "$T"/ck/blocks-*.h5 | wc -l) files, h5diff)"
fi
echo "quantize_e2e: 1 passed, 0 failed"
