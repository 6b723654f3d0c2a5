#!/usr/bin/env bash
# SWAD on the small RotatedFashionMNIST LoRA configuration (601 steps, an evaluation every 50),
# three seeds: the held-out (75-degree)
# accuracy of the SWAD average beside the same run's training-domain-validation selection (the
# run without SWAD: SWAD only averages weights, it does not change training unless the valley
# dies early, which is then reported). Needs runs/demo/pretrain/backbone.safetensors (the demo's
# first step).
#
# usage: bash bench/swad_rfmnist.sh [SEEDS...]
set -euo pipefail
seeds=${*:-"0 1 2"}
out=${MOA_SWAD_OUT:-runs/swad_rfmnist}
for seed in $seeds; do
  build/moa train --config configs/rfmnist_lora.ini --swad.enabled=true --train.steps=601 --train.checkpoint_freq=50 \
    --train.seed="$seed" --train.trial_seed="$seed" --train.log_every=0 --output.dir="$out/seed$seed" \
    >"$out.seed$seed.log" 2>&1 || { echo "seed $seed failed: see $out.seed$seed.log"; exit 1; }
done
bash "$(dirname "$0")/../scripts/python.sh" - "$out" $seeds <<'PY'
import json, statistics, sys
out, seeds = sys.argv[1], sys.argv[2:]
rows = []
for seed in seeds:
    with open(f"{out}/seed{seed}/results.jsonl") as f:
        records = [json.loads(l) for l in f]
    plain = [r for r in records if not r.get("swad")]
    swad = [r for r in records if r.get("swad")][0]
    train_envs = [0, 1, 2, 3, 4]
    val = lambda r: sum(r[f"env{e}_out_acc"] for e in train_envs) / len(train_envs)
    best = plain[0]
    for r in plain:
        if val(r) > val(best):
            best = r
    rows.append((seed, 100 * best["env5_in_acc"], best["step"], 100 * swad["env5_in_acc"],
                 swad["swad_start_step"], swad["swad_end_step"]))
print(f"{'seed':>4} {'ERM (tr.-dom. val.)':>20} {'at step':>8} {'ERM+SWAD':>9} {'averaged steps':>15}")
for seed, erm, step, sw, a, b in rows:
    print(f"{seed:>4} {erm:>19.2f}% {step:>8} {sw:>8.2f}% {a:>7}..{b}")
erm = [r[1] for r in rows]; sw = [r[3] for r in rows]
sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
print(f"mean {statistics.mean(erm):>19.2f}% +/- {sd(erm):.2f}   SWAD {statistics.mean(sw):.2f}% +/- {sd(sw):.2f}")
PY
