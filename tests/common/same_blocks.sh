# Sourced by the identity tests (np_identity.sh, factor_once.sh,
# threads_identity.sh). Needs HDF5_PLUGIN_PATH set for the zstd filter.
#   qz_same_blocks REF_DIR DIR WHAT
# 0 when every blocks-*.h5 of checkpoint REF_DIR is h5diff-identical to the
# file of the same name in DIR (codes, scales, attributes: everything);
# otherwise prints the first differences and "FAIL: WHAT in FILE" and
# returns 1. Adds the number of files compared to QZ_SAME_N.
QZ_SAME_N=${QZ_SAME_N:-0}
qz_same_blocks() {
  local ref=$1 dir=$2 what=$3 f
  for f in "$ref"/blocks-*.h5; do
    [ -e "$f" ] || { echo "FAIL: $what: no block files in $ref"; return 1; }
    if ! h5diff "$f" "$dir/$(basename "$f")" >/dev/null; then
      h5diff -v "$f" "$dir/$(basename "$f")" | grep -v "^ *0 differences" | head -20
      echo "FAIL: $what in $(basename "$f")"
      return 1
    fi
    QZ_SAME_N=$((QZ_SAME_N + 1))
  done
}
