#!/usr/bin/env bash
# threads_identity.sh: hybrid ranks x threads (docs/performance.md) gives the
# same results as one thread per rank, to the bit. stories260K in BF16 (the
# dtype conversion runs threaded too), GPTQ w4 g32 act-order with 8-bit
# per-token activation fake-quant (the threaded act quantizer runs in
# eval), 8 calibration windows of 128: every block file h5diff-identical and
# eval's nll_sum (perplexity of the checkpoint, and of the plain model) and
# the task forward's per-request loglikelihoods (hellaswag, 24 docs)
# string-identical to 1 thread at np 1 with OMP_NUM_THREADS 3 at np 1 (an
# uneven split), 2 at np 2 and --threads 3 (over OMP_NUM_THREADS=1) at np 2.
# The loops split rows/heads over threads (each computed by one thread with
# the serial code), so any difference is a bug, not rounding.
# MPIQUANT_OMP_MIN_WORK=1 splits even the loops below the size threshold
# (the tiny linears' dequantization and conversion).
set -euo pipefail
S=${QZ_SHARED_DIR:?} B=${MPIQUANT_BIN:?} T=${QZ_TEST_TMP:?}
export HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin"
. "$(dirname "$0")/common/same_blocks.sh"
export OMPI_MCA_hwloc_base_binding_policy=none # threads may use both cores
export MPIQUANT_OMP_MIN_WORK=1 # split every loop, even the tiny model's
M="$S/models/stories260K-hf-bf16" D="$S/data/tinystories_valid_head.txt"
rm -rf "$T"; mkdir -p "$T"
run() { # run NAME NP THREAD_ARGS...: quantize, eval the checkpoint and the model
  local name=$1 np=$2; shift 2
  env "$@" "${MPIEXEC:-mpiexec}" -n "$np" "$B" ${QZ_THR_OPT:-} quantize --model "$M" --calib "$D" \
    --nsamples 8 --seqlen 128 --method gptq --bits 4 --group 32 --act-order --act-bits 8 \
    --out "$T/$name" -q
  env "$@" "${MPIEXEC:-mpiexec}" -n "$np" "$B" ${QZ_THR_OPT:-} eval --ckpt "$T/$name" --data "$D" \
    --seqlen 128 --windows 6 --json -q | grep -o '"nll_sum":[^,}]*' > "$T/$name.ckpt.nll"
  env "$@" "${MPIEXEC:-mpiexec}" -n "$np" "$B" ${QZ_THR_OPT:-} eval --model "$M" --data "$D" \
    --seqlen 128 --windows 6 --json -q | grep -o '"nll_sum":[^,}]*' > "$T/$name.model.nll"
  # the task forward (ragged rows, prefix reuse) with int8 activations: every
  # request's loglikelihood in the sample log
  env "$@" "${MPIEXEC:-mpiexec}" -n "$np" "$B" ${QZ_THR_OPT:-} eval --ckpt "$T/$name" \
    --task "$S/tasks/hellaswag.jsonl" --limit 24 --log-samples "$T/$name.samples" -q >/dev/null
}
run ref 1 OMP_NUM_THREADS=1
[ -s "$T/ref.ckpt.nll" ] && [ -s "$T/ref.model.nll" ] && grep -q loglikelihood "$T/ref.samples" \
  || { echo "FAIL: no nll_sum / task loglikelihoods from eval"; exit 1; }
cases="np1_t3:1:3 np2_t2:2:2"
for c in $cases; do
  IFS=: read -r name np t <<< "$c"
  run "$name" "$np" OMP_NUM_THREADS="$t"
done
QZ_THR_OPT="--threads 3" run np2_opt3 2 OMP_NUM_THREADS=1 # the option wins
for name in np1_t3 np2_t2 np2_opt3; do
  qz_same_blocks "$T/ref" "$T/$name" "$name: differs from 1 thread at np 1" || exit 1
  for k in ckpt model; do
    cmp -s "$T/ref.$k.nll" "$T/$name.$k.nll" || {
      echo "FAIL: $name: eval --$k $(cat "$T/$name.$k.nll") != 1 thread $(cat "$T/ref.$k.nll")"; exit 1; }
  done
  cmp -s "$T/ref.samples" "$T/$name.samples" || {
    echo "FAIL: $name: task sample log differs from 1 thread"; exit 1; }
done
# the thread count is reported where the user looks
"$B" --threads 3 --version | grep -q "threads:  3 OpenMP" || { echo "FAIL: --version"; exit 1; }
if "$B" --threads 0 --version >/dev/null 2>&1; then echo "FAIL: --threads 0 accepted"; exit 1; fi
echo "threads: $QZ_SAME_N block files, 6 NLL sums and 3 task sample logs identical to 1 thread ($(cat "$T/ref.ckpt.nll"))"
echo "threads_identity: 1 passed, 0 failed"
