#!/usr/bin/env bash
# Installs everything moa's build, tests and demo need on a Debian machine. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

debian_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-openmp
  libopenmpi-dev openmpi-bin
  libabsl-dev libboost-program-options-dev libgtest-dev libgmock-dev
  zlib1g-dev nlohmann-json3-dev libjpeg62-turbo-dev libpng-dev
  dataset-fashion-mnist
  python3-torch python3-torchvision python3-numpy python3-venv python3-pil
  munge slurmctld slurmd slurm-client
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

# Independent Python references for the parity tests: timm, open_clip and safetensors pinned,
# on top of Debian's torch.
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
if ! "$venv/bin/python" -c "import timm, safetensors, open_clip" 2>/dev/null; then
  "$venv/bin/pip" install -q --no-deps timm==0.9.16 safetensors==0.4.5 open_clip_torch==2.24.0 \
    ftfy==6.2.0 regex==2024.5.15 tqdm==4.66.4 wcwidth==0.2.13
fi
echo "setup: done"
