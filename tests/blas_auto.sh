#!/usr/bin/env bash
# mpiquant picks a fast OpenBLAS kernel itself (mpi_driver/blas_auto.c):
# under a forced generic kernel (OPENBLAS_CORETYPE=Prescott with
# MPIQUANT_BLAS_AUTO=1, standing in for a CPU that OpenBLAS does not know)
# every rank restarts on the kernel cpuid allows (SkylakeX with AVX-512
# F/BW/DQ/VL, Haswell with AVX2+FMA), says so once, and eval gives the
# generic run's perplexity within REL_TOL; MPIQUANT_BLAS_AUTO=0 keeps
# Prescott; a failed self-check goes back to OpenBLAS's own choice.
# REL_TOL = 1e-6: kernels move stories260K's NLL sum by 2e-8 (measured:
# SkylakeX/Cooperlake vs Haswell vs Prescott).
set -euo pipefail
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?}
if [ -n "${OPENBLAS_CORETYPE:-}${OPENBLAS_L2_SIZE:-}" ]; then
  # this machine sets the kernel for a reason: never override it in a test
  echo "blas_auto: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE set by the environment: skipped"
  exit 77
fi
flags=$(grep -m1 '^flags' /proc/cpuinfo)
has() { grep -qw "$1" <<<"$flags"; }
want=""
if has avx512f && has avx512bw && has avx512dq && has avx512vl; then want=SkylakeX
elif has avx2 && has fma; then want=Haswell; fi
kernel() { sed -n 's/.*OpenBLAS: .* \([A-Za-z0-9]*\) MAX_THREADS.*/\1/p'; }
fail() { echo "FAIL: $*"; exit 1; }

v=$(OPENBLAS_CORETYPE=Prescott MPIQUANT_BLAS_AUTO=1 "$B" --version)
got=$(kernel <<<"$v")
echo "forced Prescott + auto: kernel $got (cpuid allows: ${want:-nothing faster})"
if [ -n "$want" ]; then
  [ "$got" = "$want" ] || fail "expected $want, got $got"
  grep -q "restarted with OPENBLAS_CORETYPE=$want (sgemm self-check" <<<"$v" || fail "no note: $v"
else
  [ "$got" = Prescott ] || fail "no faster kernel allowed, got $got"
fi
got=$(OPENBLAS_CORETYPE=Prescott MPIQUANT_BLAS_AUTO=0 "$B" --version | kernel)
[ "$got" = Prescott ] || fail "MPIQUANT_BLAS_AUTO=0 must keep Prescott, got $got"
if [ -n "$want" ]; then
  v=$(OPENBLAS_CORETYPE=Prescott MPIQUANT_BLAS_AUTO=1 MPIQUANT_FAULT=blas-selfcheck "$B" --version)
  got=$(kernel <<<"$v")
  [ "$got" = Prescott ] || fail "failed self-check must go back to Prescott, got $got"
  grep -q "failed the sgemm self-check" <<<"$v" || fail "no warning after a failed self-check: $v"
fi

ev() {
  "${MPIEXEC:-mpiexec}" -n 2 "$B" eval --model "$S/models/stories260K-hf" \
    --tokens "$S/golden/calib/stories260K_eval_tinystories_ids.txt" --json --log-view 2>&1
}
a=$(OPENBLAS_CORETYPE=Prescott MPIQUANT_BLAS_AUTO=0 ev)
b=$(OPENBLAS_CORETYPE=Prescott MPIQUANT_BLAS_AUTO=1 ev)
if [ -n "$want" ]; then
  [ "$(grep -c 'restarted with OPENBLAS_CORETYPE' <<<"$b")" = 1 ] || fail "expected one log line (rank 0) about the restart"
  grep -q "BLAS: OpenBLAS $want kernels" <<<"$b" || fail "--log-view does not show the $want kernel"
fi
grep -q "BLAS: OpenBLAS Prescott kernels" <<<"$a" || fail "--log-view does not show Prescott"
/usr/bin/python3 - "$a" "$b" <<'PY'
import json, sys
j = [json.loads([l for l in t.splitlines() if l.startswith("{")][-1]) for t in sys.argv[1:3]]
r = abs(j[1]["nll_sum"] - j[0]["nll_sum"]) / abs(j[0]["nll_sum"])
print(f"nll_sum generic {j[0]['nll_sum']!r}, chosen kernel {j[1]['nll_sum']!r}: rel {r:.2e} (tol 1e-6)")
sys.exit(0 if r <= 1e-6 else 1)
PY
echo "blas_auto: 1 passed, 0 failed"
