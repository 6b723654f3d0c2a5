#!/usr/bin/env bash
# One training step of the demo's LoRA configuration with 1 rank x 2 threads against 2 ranks x
# 1 thread (mpirun) on this machine, measured in the same run from results.jsonl (mean step time
# over the 61 steps up to the second evaluation), with the part of each step spent waiting for the
# gradient all-reduce that did not overlap with backward.
#
# usage: bash bench/dp_step_bench.sh [CONFIG]   (run from the repository root after a build)
set -euo pipefail
config=${1:-configs/rfmnist_lora.ini}
out=$(mktemp -d)
common="--config $config --model.backbone=random --train.steps=62 --train.checkpoint_freq=61 --train.log_every=0 --data.max_per_domain=2000"
build/moa train $common --train.threads=2 --output.dir="$out/one" >"$out/one.log" 2>&1
mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none -np 2 \
  build/moa train $common --train.threads=1 --output.dir="$out/two" >"$out/two.log" 2>&1
bash "$(dirname "$0")/../scripts/python.sh" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def last(run):
    with open(f"{out}/{run}/results.jsonl") as f:
        return [json.loads(l) for l in f][-1]
one, two = last("one"), last("two")
print(f"{'layout':<24} {'step (ms)':>10} {'images/s':>10} {'grad sync wait (ms)':>20}")
for name, r in (("1 rank x 2 threads", one), ("2 ranks x 1 thread", two)):
    print(f"{name:<24} {1000 * r['step_time']:>10.1f} {r['images_per_s']:>10.0f} {1000 * r['sync_time']:>20.2f}")
print(f"ratio (2 ranks / 1 rank step time): {two['step_time'] / one['step_time']:.2f}x")
PY
rm -rf "$out"
