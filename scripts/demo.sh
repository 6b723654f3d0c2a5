#!/usr/bin/env bash
# README command (1): installs what is missing, builds, then runs the demo: pretrain a small ViT
# on upright Fashion-MNIST test images, then train LoRA on RotatedFashionMNIST (training images)
# with the 75-degree domain held out, and print the per-domain and model-selection tables.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
start=$(date +%s)
bash scripts/setup.sh
bash scripts/build.sh
built=$(date +%s)
build/moa pretrain --config configs/demo_pretrain.ini "$@"
pretrained=$(date +%s)
build/moa train --config configs/demo_lora.ini "$@"
done_at=$(date +%s)
echo "setup + build: $((built - start)) s; pretrain: $((pretrained - built)) s; LoRA: $((done_at - pretrained)) s"
