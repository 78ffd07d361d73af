#!/usr/bin/env bash
# Build and run the whole test suite (ctest): unit tests, MPI tests at
# np 1, 2, 3, 4, golden parity and end-to-end tests.
#   scripts/test.sh              build in build/ and run everything
#   scripts/test.sh --sanitize   ASan+UBSan build in build-asan/, unit and
#                                feature tests (not the e2e pipelines)
#   scripts/test.sh --blas-kernels  the numerics-sensitive tests (label
#                                "numerics": golden layer cases, model-level
#                                perplexities, eval, np identity) again under
#                                OpenBLAS's generic Prescott kernels (valid on
#                                every x86-64); the plain run covers the kernel
#                                the machine picks itself. CI runs both.
#   scripts/test.sh -R PATTERN   only tests matching PATTERN (ctest -R)
# Needs ../shared beside the source tree (or MPIQUANT_SHARED_DIR=PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
build=build
cmake_extra=(-DMPIQUANT_BUILD_TESTS=ON)
ctest_extra=()
blas_kernels=0
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) build=build-asan
      # -O1: ASan's recommended level (its checks are unchanged; -O0 ran the
      # MPI tests about twice as long)
      cmake_extra+=(-DMPIQUANT_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=Debug
                    "-DCMAKE_C_FLAGS_DEBUG=-O1 -g" -DMPIQUANT_BUILD_BENCH=OFF)
      # np identity at np 1 and 3 only (the plain run covers 1-4)
      export QZ_NPID_NPS="1 3"
      # unit and feature tests; of a family that also runs at np 1-2 the
      # np 3-4 variants are left out (the same code paths; keeps CI well
      # under its time budget); single-np cases (empty ranks, ...) stay
      sib='arch_fwd_.*|arch_quant_qwen3_gptq|eval_text_.*|eval_tokens_.*|io_cli_inspect.*'
      sib+='|cli_fault_propagates|moe_quant_mixtral_gptq|task_eval|fwd_model|fwd_load|ckpt'
      sib+='|h5_roundtrip|io_rows|linalg_hessian|hessian_nodes|gptq_synth|quantease_synth'
      sib+='|quantease_ckpt|scalapack_potrf|mpi_smoke|source_fingerprint|awq_fold|awq_fold_mha'
      sib+='|fp8_read|fp8_export_read|w8a8_int_gptq|spqr_resume'
      sib+='|moe_awq_mixtral|moe_awq_qwen3-moe|arch_quant_qwen3_awq'
      ctest_extra+=(-L unit -LE "e2e|slurm" -E "^($sib)_np[34]\$") ;;
    --blas-kernels) blas_kernels=1; ctest_extra+=(-L numerics) ;;
    -R|-L|-E) ctest_extra+=("$1" "$2"); shift ;;
    *) echo "test.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "${MPIQUANT_SHARED_DIR:-}" ]; then cmake_extra+=(-DMPIQUANT_SHARED_DIR="$MPIQUANT_SHARED_DIR"); fi
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S "$src" -B "$build" "${cmake_extra[@]}" >/dev/null
cmake --build "$build" -j "$jobs"
if [ $blas_kernels -eq 1 ]; then
  # Prescott is below every kernel a machine may pick; MPIQUANT_BLAS_AUTO=0
  # keeps mpiquant from restarting itself on a faster one.
  echo "test.sh: numerics-sensitive tests under OPENBLAS_CORETYPE=Prescott" \
       "(this machine's own pick: $("$build/mpiquant" --version | sed -n 's/.*OpenBLAS: .* \([A-Za-z0-9]*\) MAX_THREADS.*/\1/p'))"
  export OPENBLAS_CORETYPE=Prescott MPIQUANT_BLAS_AUTO=0
fi
# a fresh build dir has no test timings: seed them (tests/ctest/cost_seed.txt,
# one full run's: regenerate with awk 'NF==3' on a build's cost file, sorted)
# so ctest starts the longest tests first and packs the cores
cost="$build/Testing/Temporary/CTestCostData.txt"
if [ ! -s "$cost" ]; then
  mkdir -p "$(dirname "$cost")"
  { cat tests/ctest/cost_seed.txt; echo "---"; } > "$cost"
fi
ctest --test-dir "$build" -j "$jobs" --output-on-failure --timeout 600 "${ctest_extra[@]}"
