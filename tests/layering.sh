#!/usr/bin/env bash
# The dependency direction core -> io -> shard -> linalg -> methods -> mpi_driver:
# a folder may include only public headers of its own layer or those to its
# left. Headers are assigned to the layer that implements them.
set -u
cd "${QZ_SOURCE_DIR:?}"
layer_of_header() {
  local h=$1
  case "$h" in
    error.h|comm.h|log.h|timing.h|mem.h|file.h|fp8.h|codebook.h|codes.h|threads.h) echo 0 ;;
    files.h|h5zstd.h|safetensors.h|config.h|tokenizer.h|ckpt.h|export.h|tasks.h) echo 1 ;;
    shard.h|forward.h|model.h|windows.h|eval.h|loglik.h|moe.h) echo 2 ;;
    blas.h|scalapack.h|grid.h|hessian.h|chol.h|hadamard.h|rotate.h) echo 3 ;;
    quant.h|gptq.h|method.h|rtn.h|awq.h|smoothquant.h|quantease.h) echo 4 ;;
    *) echo 9 ;;
  esac
}
fail=0
for pair in core:0 io:1 shard:2 linalg:3 methods:4; do
  dir=${pair%%:*}; lvl=${pair##*:}
  for f in $(find "$dir" -name '*.[ch]' 2>/dev/null); do
    for h in $(grep -oE '#include "mpiquant/[a-z0-9_]+\.h"' "$f" | sed 's/.*mpiquant\///; s/"//'); do
      hl=$(layer_of_header "$h")
      if [ "$hl" = 9 ]; then echo "$f: header mpiquant/$h has no layer in tests/layering.sh"; fail=1;
      elif [ "$hl" -gt "$lvl" ]; then echo "$f ($dir) includes mpiquant/$h of a higher layer"; fail=1; fi
    done
  done
done
[ $fail -eq 0 ] && echo "layering: ok"
exit $fail
