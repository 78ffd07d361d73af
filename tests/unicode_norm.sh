#!/bin/sh
# io_unicode_norm: NFC/NFD against Unicode's NormalizationTest.txt, shipped
# (bzip2-compressed) by the Debian package unicode-data. $1: qzt_unicode_norm.
f=/usr/share/unicode/NormalizationTest.txt.bz2
if [ ! -r "$f" ] || ! command -v bzcat >/dev/null 2>&1; then
  echo "SKIP: $f or bzcat missing (apt-get install unicode-data bzip2)"
  exit 77
fi
mkdir -p "$QZ_TEST_TMP" || exit 1
bzcat "$f" > "$QZ_TEST_TMP/NormalizationTest.txt" || exit 1
exec "$1" "$QZ_TEST_TMP/NormalizationTest.txt"
