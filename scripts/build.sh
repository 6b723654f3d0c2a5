#!/usr/bin/env bash
# Configures and builds moa into build/ (Release, Ninja, ccache when present, -j2).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
# ccache shares objects between clones (paths relative to the clone) and caches what uses the
# precompiled LibTorch header (the sloppiness GCC's precompiled headers need).
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$here}"
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
# LibTorch's CMake files warn about things that do not concern this build (CUDA architectures,
# kineto): the configure log is shown only when configuring fails.
configure_log=$(mktemp)
if ! cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >"$configure_log" 2>&1; then
  cat "$configure_log" >&2
  rm -f "$configure_log"
  exit 1
fi
rm -f "$configure_log"
ninja -C build -j "${MOA_BUILD_JOBS:-2}"
