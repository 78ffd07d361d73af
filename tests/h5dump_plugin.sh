#!/usr/bin/env bash
# Writes a zstd-filtered file with the round-trip test, then checks that
# h5dump shows its data through our plugin (h5dump prints "DATA { }" and
# exits 0 when the filter is missing, so the exit status proves nothing).
set -eu
tmp=${QZ_TEST_TMP:?}; mkdir -p "$tmp"
"$QZ_BUILD_DIR/tests/qzt_h5_roundtrip" "$tmp/plugin.h5" >/dev/null
out=$(HDF5_PLUGIN_PATH="$QZ_BUILD_DIR/h5plugin" h5dump -d /w -s "999,90" -c "1,6" "$tmp/plugin.h5" 2>&1)
grep -q "FILTERS\|DATA" <<<"$out" || { echo "$out"; exit 1; }
# row 999: (999 % 17) * 0.25 = 3.25; cols 90..95: + j % 5 = 0,1,2,3,4,0
grep -Eq "3\.25, 4\.25, 5\.25, 6\.25, 7\.25, 3\.25" <<<"$out" || { echo "expected values not shown:"; echo "$out"; exit 1; }
# and without the plugin the data is not readable (the check can fail)
out2=$(HDF5_PLUGIN_PATH=/nonexistent h5dump -d /w -s "999,90" -c "1,6" "$tmp/plugin.h5" 2>&1 || true)
if grep -Eq "3\.25, 4\.25, 5\.25" <<<"$out2"; then echo "data readable without plugin?"; exit 1; fi
echo "h5dump with HDF5_PLUGIN_PATH shows zstd-filtered data: ok"
