#!/usr/bin/env bash
# QuantEase vs GPTQ on stories260K w4 g32 (the model-level study of
# docs/methods.md "QuantEase at model level"): both quantized at NP ranks on
# the same calibration windows, then an independent numpy forward
# (tests/quantease_heldout.py) of each quantized model
#  1. reproduces every linear's recorded loss from the inputs of the
#     already-quantized model (true-sequential; QuantEase gets the same
#     inputs as GPTQ) within REC_TOL on the calibration windows;
#  2. finds QuantEase's summed layer objective below GPTQ's on the
#     calibration windows AND on held-out windows (the start of the file,
#     never calibration) by at least MIN_GAIN: the coordinate descent does
#     not over-fit the calibration windows at the layer level;
#  3. model level: QuantEase's held-out NLL increase over fp is at most
#     GPTQ's + SPREAD_NLL, the calibration spread (the study found that the
#     layer objective does not rank the model-level loss closer than that
#     at this size; see the docs).
#   quantease_heldout.sh NP
set -uo pipefail
np=$1
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
SRC=${QZ_SOURCE_DIR:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
# f64 numpy vs the f64 sum of f32 sgemm panels in quantize: measured <= 5e-7
REC_TOL=1e-5
# QuantEase's layer objective is 6-7 % below GPTQ's on stories260K w4 g32
# (128 x 512 calibration, calibration and held-out windows alike); with the
# 16 x 128 windows here, on 4 window sets (offsets 1, 25, 49, 73 of the
# spacing below): 7.3-7.6 % on calibration, 5.2-6.5 % held out
MIN_GAIN=0.02
# held-out NLL(q) - NLL(fp) (8 x 128 tokens) over the same 4 sets: GPTQ
# 0.0849..0.1189 (range 0.034 nats), QuantEase - GPTQ -0.020..+0.015
SPREAD_NLL=0.034
L=128 NCAL=16 NHELD=8
rm -rf "$T"; mkdir -p "$T"
run() { "${MPIEXEC:-mpiexec}" -n "$np" "$B" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
M="$S/models/stories260K-hf"
"$B" tokenize --model "$M" --text "$S/data/tinystories_valid_head.txt" --window $L \
  --out "$T/all.txt" -q || fail "tokenize"
n=$(wc -l <"$T/all.txt")
# calibration: NCAL windows spread over the second half; held out: the first NHELD
awk -v n="$n" -v k=$NCAL 'NR > n / 2 && (NR - int(n / 2)) % int(n / 2 / k) == 1' "$T/all.txt" \
  | head -n $NCAL >"$T/cal.txt"
head -n $NHELD "$T/all.txt" >"$T/held.txt"
[ "$(wc -l <"$T/cal.txt")" = $NCAL ] || fail "calibration windows"
for m in gptq quantease; do
  run quantize --model "$M" --calib-tokens "$T/cal.txt" --nsamples $NCAL --seqlen $L \
    --method $m --bits 4 --group 32 --out "$T/$m" -q || fail "quantize $m"
done
/usr/bin/python3 "$SRC/tests/quantease_heldout.py" "$M" "$T/cal.txt" "$T/held.txt" \
  "$T/gptq" "$T/quantease" >"$T/out.txt" || fail "quantease_heldout.py"
grep -v 'block' "$T/out.txt"
/usr/bin/python3 - "$T/out.txt" "$REC_TOL" "$MIN_GAIN" "$SPREAD_NLL" <<'PY'
import sys
rec, summ, dnll = {}, {}, {}
for l in open(sys.argv[1]):
    f = l.rstrip("\n").split("\t")
    if f[0] == "MODEL" and f[2] == "held.txt":
        dnll[f[1]] = float(f[4].split()[-1])
    elif f[0] == "RECORDED":
        rec[f[1]] = float(f[3].split()[-1])
    elif f[0] == "SUMMARY":
        w = f[2].split()
        summ[f[1]] = (float(w[2]), float(w[4]))
tol, gain, spread = map(float, sys.argv[2:5])
bad = [k for k, v in rec.items() if not v <= tol]
g = [1 - summ["quantease"][i] / summ["gptq"][i] for i in range(2)]
print("recorded losses reproduced within %g: %s; QuantEase objective below GPTQ's by "
      "%.2f %% (calibration), %.2f %% (held out), need >= %.1f %%"
      % (tol, "ok" if not bad else "FAIL " + " ".join(bad), 100 * g[0], 100 * g[1], 100 * gain))
d = dnll["quantease"] - dnll["gptq"]
print("held-out NLL(q) - NLL(fp): GPTQ %.5f, QuantEase %.5f (difference %+.5f, allowed <= %g)"
      % (dnll["gptq"], dnll["quantease"], d, spread))
sys.exit(0 if not bad and min(g) >= gain and len(rec) == 2 and d <= spread else 1)
PY
[ $? = 0 ] || fail "see above"
echo "quantease_heldout: 1 passed, 0 failed"
