#!/usr/bin/env bash
# --method fp8 end to end at NP ranks against tests/fp8_ref.py (numpy, from
# the definitions): every linear's codes and scales identical to the
# reference, static input scales within its CALIB_SCALE_RTOL, and the
# perplexity of `eval --ckpt` within a relative tolerance of the numpy
# fake-quant forward over the golden eval windows.
#   fp8_e2e.sh NP stories|babyllama -- QUANTIZE_OPTIONS...
# Tolerances (measured): FP8 activations turn last-bit differences of the
# forward (BLAS vs numpy) into different fp8 roundings; the numpy forward
# with f32 vs f64-accumulated matmuls (FP8_REF_MATMUL64=1) differs by up to
# 1.0e-3 in perplexity, the C eval from numpy by up to 7.4e-4:
# PPL_RTOL_ACT = 3e-3.  Weight-only (--act none): measured 3e-7,
# PPL_RTOL_NONE = 1e-5.
set -euo pipefail
np=$1 model=$2; shift 2
[ "$1" = "--" ] && shift
PPL_RTOL_ACT=3e-3 PPL_RTOL_NONE=1e-5
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
case $model in
  stories) M=$S/models/stories260K-hf; G=$S/golden/calib/stories260K; L=512; K=8 ;;
  babyllama) M=$S/models/babyllama-tok105-hf; G=$S/golden/calib/babyllama; L=256; K=16 ;;
  *) echo "unknown model $model"; exit 2 ;;
esac
rm -rf "$T"; mkdir -p "$T"
# 16 calibration windows of 128 tokens: the first golden windows, cut
head -16 "${G}_calib_ids.txt" | awk '{s=$1; for (i = 2; i <= 128; i++) s = s " " $i; print s}' \
  > "$T/calib.txt"
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
run quantize --model "$M" --calib-tokens "$T/calib.txt" --nsamples 16 --seqlen 128 \
  --method fp8 --out "$T/ck" -q "$@"
j=$(run eval --ckpt "$T/ck" --tokens "${G}_eval_tinystories_ids.txt" --seqlen $L --windows $K \
  --json -q | grep '^{')
/usr/bin/python3 "$QZ_SOURCE_DIR/tests/fp8_ref.py" "$M" "$T/ck" "${G}_eval_tinystories_ids.txt" \
  $K "$T/calib.txt" | tee "$T/ref.txt"
tol=$PPL_RTOL_ACT
case " $* " in *" --act none "*) tol=$PPL_RTOL_NONE ;; esac
/usr/bin/python3 - "$j" "$(grep '^ref_ppl' "$T/ref.txt" | cut -d' ' -f2)" "$tol" <<'PY'
import json, sys
got, ref, tol = json.loads(sys.argv[1])["ppl"], float(sys.argv[2]), float(sys.argv[3])
ok = abs(got - ref) <= tol * ref
print("eval --ckpt ppl %.6f, numpy fake-quant %.6f: %+.4f%% (tol %.2g%%) -> %s"
      % (got, ref, 100 * (got / ref - 1), 100 * tol, "ok" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
echo "fp8_e2e: 1 passed, 0 failed"
