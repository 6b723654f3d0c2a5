#!/usr/bin/env bash
# Configures and builds moa into build/ (Release, Ninja, ccache when present, -j2).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build -j "${MOA_BUILD_JOBS:-2}"
