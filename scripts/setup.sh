#!/usr/bin/env bash
# Installs everything moa's build, tests and demo need on a Debian machine. Idempotent.
# Debian's packages: compilers (clang with libFuzzer and the sanitizer runtimes for
# scripts/fuzz.sh), MPI, Abseil, Boost, GoogleTest, codecs, Slurm for the tests.
# PyPI's torch 2.11.0 (CUDA 13.0) in a virtual environment outside the clone (scripts/venv_path.sh):
# its LibTorch is the one the C++ build links, and the same torch runs the Python references and
# the PyTorch baselines.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

debian_packages=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates
  libopenmpi-dev openmpi-bin
  libabsl-dev libboost-program-options-dev libgtest-dev libgmock-dev
  zlib1g-dev nlohmann-json3-dev libjpeg62-turbo-dev libpng-dev libssl-dev libgoogle-perftools-dev
  libprotobuf-dev protobuf-compiler
  dataset-fashion-mnist
  clang-14 libclang-rt-14-dev libomp-14-dev llvm-14
  python3 python3-venv
  munge slurmctld slurmd slurm-client
  chromium
)

missing=()
for p in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv="$(bash "$here/scripts/venv_path.sh")"
if [ ! -f "$venv/.moa-complete" ]; then
  echo "setup: creating $venv (torch 2.11.0 with CUDA 13.0, about 3 GB)"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/scripts/requirements.txt"
  "$venv/bin/python" -c "import torch, torchvision, timm, open_clip, safetensors, PIL, numpy"
  touch "$venv/.moa-complete"
fi
# PEFT for the export round trip, on top (its own marker, so the torch install is kept).
interop_key=$(md5sum "$here/scripts/requirements-interop.txt" | cut -c1-10)
if [ ! -f "$venv/.moa-interop-$interop_key" ]; then
  echo "setup: installing PEFT into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/scripts/requirements-interop.txt"
  "$venv/bin/python" -c "import peft, timm"
  touch "$venv/.moa-interop-$interop_key"
fi
echo "setup: done (python environment: $venv)"
