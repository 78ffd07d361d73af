#!/usr/bin/env bash
# The newcomer's demo: install dependencies, build, then quantize the tiny
# real model in examples/ with GPTQ (4 bits, groups of 32) on 2 MPI ranks and
# compare its perplexity with the original model's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)" --target mpiquant qz_h5zstd_plugin
export OMPI_MCA_rmaps_base_oversubscribe=1
# one machine: Open MPI's ob1 pml over shared memory (the default selection
# also probes the PSM/PSM2 Omni-Path MTLs: ~0.2 s of every launch here); a
# value already set wins
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
NP=${NP:-2}
MODEL=examples/stories260K-hf
TEXT=examples/tinystories_sample.txt
OUT=${OUT:-out/demo-ckpt}
run() { echo "+ $*" >&2; "$@"; }
rm -rf "$OUT"
# 128 calibration windows of 256 tokens from the second half of the text;
# evaluation on the first 8 windows of 256 tokens (never seen in calibration).
run mpirun -np "$NP" build/mpiquant quantize --model "$MODEL" --calib "$TEXT" \
  --nsamples 128 --seqlen 256 --method gptq --bits 4 --group 32 --out "$OUT" --log-view
fp=$(run mpirun -np "$NP" build/mpiquant eval --model "$MODEL" --data "$TEXT" --seqlen 256 --windows 8 -q)
q=$(run mpirun -np "$NP" build/mpiquant eval --ckpt "$OUT" --data "$TEXT" --seqlen 256 --windows 8 -q)
echo
echo "stories260K on $TEXT (8 windows x 256 tokens):"
echo "  fp32          $fp"
echo "  GPTQ w4 g32   $q"
echo "checkpoint: $OUT (inspect with: HDF5_PLUGIN_PATH=build/h5plugin h5dump -H $OUT/blocks-000.h5)"
