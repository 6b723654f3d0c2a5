#!/usr/bin/env bash
# README command (2): installs what is missing, builds, and runs every test with ctest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
start=$(date +%s)
bash scripts/setup.sh
bash scripts/build.sh
built=$(date +%s)
status=0
ctest --test-dir build --output-on-failure -j 2 --timeout 600 || status=$?
done_at=$(date +%s)
echo "setup + build: $((built - start)) s; tests: $((done_at - built)) s"
exit $status
