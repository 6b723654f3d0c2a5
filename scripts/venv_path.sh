#!/usr/bin/env bash
# Prints the path of moa's Python environment: outside the clone, keyed by the Python version and
# the pinned requirements, so every clone on a machine shares one copy of the 3 GB torch install.
# MOA_VENV overrides the path; MOA_VENV_ROOT (default ${XDG_CACHE_HOME:-~/.cache}/moa) moves the folder that holds it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${MOA_VENV:-}" ]; then
  echo "$MOA_VENV"
  exit 0
fi
python_version=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
key=$(md5sum "$here/scripts/requirements.txt" | cut -c1-10)
echo "${MOA_VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/moa}/venv-py${python_version}-torch2.11.0-${key}"
