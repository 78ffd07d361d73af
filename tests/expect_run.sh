#!/usr/bin/env bash
# expect_run.sh CODE REGEX [REGEX...] -- COMMAND ARGS...
# Runs COMMAND, requires exit status CODE ("nonzero" = any failure) and every
# extended REGEX to match its combined stdout+stderr. Prints the output when
# a check fails.
set -u
code=$1; shift
pats=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do pats+=("$1"); shift; done
[ "${1:-}" = "--" ] || { echo "expect_run.sh: missing --" >&2; exit 2; }
shift
out=$("$@" 2>&1); rc=$?
fail=0
if [ "$code" = "nonzero" ]; then
  [ $rc -ne 0 ] || { echo "expected a failing exit status, got 0"; fail=1; }
elif [ $rc -ne "$code" ]; then
  echo "expected exit status $code, got $rc"; fail=1
fi
for p in "${pats[@]}"; do
  if ! grep -Eq -- "$p" <<<"$out"; then echo "output does not match: $p"; fail=1; fi
done
if [ $fail -ne 0 ]; then
  echo "---- command: $*"; echo "---- output:"; echo "$out"; exit 1
fi
echo "ok: exit $rc, ${#pats[@]} pattern(s) matched: $*"
