# Sourced by bench/factor_once.sh, bench/wire.sh and bench/hybrid.sh (after
# `here`, `build` are set): the MPI/BLAS environment, a temporary directory
# $tmp (removed on exit), $mq, and one synthetic Llama-3-8B-shaped block in $tmp/m8 (the
# FFN narrowed to 4096 so that down_proj's 14336-wide factorization does
# not dominate) with 4 x 512 random calibration ids in $tmp/ids.bin.
# $1: extra `synth` options (e.g. --dtype bf16).
mq=$build/mpiquant
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
export HDF5_PLUGIN_PATH=$build/h5plugin
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 -c "
import json; c = json.load(open('$here/bench/configs/llama-3-8b.json')); c['intermediate_size'] = 4096
json.dump(c, open('$tmp/cfg.json', 'w'))"
# shellcheck disable=SC2086
"$mq" synth --config "$tmp/cfg.json" --layers 1 ${1:-} --out "$tmp/m8" -q
/usr/bin/python3 -c "
import numpy as np; np.random.seed(3); np.random.randint(0, 128256, size=4*512).astype('<u4').tofile('$tmp/ids.bin')"
