#!/usr/bin/env bash
# The newcomer's demo: install dependencies, build, and run mpiquant on the
# tiny real model shipped in examples/ (2 MPI ranks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DMPIQUANT_BUILD_TESTS=OFF >/dev/null
cmake --build build -j "$(nproc)" --target mpiquant qz_h5zstd_plugin
export OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OPENBLAS_NUM_THREADS=1
run() { echo "+ $*"; "$@"; }
run build/mpiquant --version
run mpirun -np 2 build/mpiquant inspect examples/stories260K-hf
