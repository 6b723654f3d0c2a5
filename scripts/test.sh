#!/usr/bin/env bash
# README command (2): installs what is missing, builds, and runs every test with ctest, then the
# sanitized build's checks (scripts/fuzz.sh: regression inputs, each fuzzer for a bounded time,
# the parsers' unit tests under ASan and UBSan).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
start=$(date +%s)
bash scripts/setup.sh
bash scripts/build.sh
built=$(date +%s)
status=0
ctest --test-dir build --output-on-failure -j 2 --timeout 600 || status=$?
tested=$(date +%s)
bash scripts/fuzz.sh || status=$?
done_at=$(date +%s)
echo "setup + build: $((built - start)) s; tests: $((tested - built)) s;" \
  "sanitized build, fuzzing and sanitized tests: $((done_at - tested)) s"
exit $status
