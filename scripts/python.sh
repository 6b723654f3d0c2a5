#!/usr/bin/env bash
# Runs moa's Python (the environment scripts/setup.sh made, with torch 2.11.0, timm and
# safetensors) with the given arguments, e.g. bash scripts/python.sh scripts/convert_to_safetensors.py IN OUT
set -euo pipefail
venv="$(bash "$(dirname "${BASH_SOURCE[0]}")/venv_path.sh")"
if [ ! -x "$venv/bin/python" ]; then
  echo "moa's Python environment $venv is missing; run scripts/setup.sh" >&2
  exit 1
fi
exec "$venv/bin/python" "$@"
