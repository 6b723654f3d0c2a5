#!/usr/bin/env bash
# README command (1): installs what is missing, builds, then runs the demo: pretrain a small ViT
# on upright Fashion-MNIST test images, then train LoRA and LoRA-MoA on RotatedFashionMNIST
# (training images) with the 75-degree domain held out, and print the per-domain and
# model-selection tables of both.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
start=$(date +%s)
bash scripts/setup.sh
bash scripts/build.sh
built=$(date +%s)
# A rerun of the demo starts its runs afresh (without the option, moa refuses a finished run's
# folder).
build/moa pretrain --config configs/demo_pretrain.ini --output.overwrite=true "$@"
pretrained=$(date +%s)
build/moa train --config configs/rfmnist_lora.ini --output.overwrite=true "$@"
lora=$(date +%s)
build/moa train --config configs/rfmnist_lora_moa.ini --output.overwrite=true "$@"
done_at=$(date +%s)
echo
echo "== held-out 75-degree domain, test-domain \`in\` accuracy (%) =="
for run in lora lora_moa; do
  echo "-- ${run}"
  cat "runs/demo/${run}/selection.txt"
done
build/moa report runs/demo/lora runs/demo/lora_moa --output runs/demo/report.html
echo "setup + build: $((built - start)) s; pretrain: $((pretrained - built)) s;" \
  "LoRA: $((lora - pretrained)) s; LoRA-MoA: $((done_at - lora)) s"
echo "curves, router usage and the configuration difference: runs/demo/report.html;" \
  "tensorboard --logdir runs/demo"
