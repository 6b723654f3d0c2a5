#!/usr/bin/env bash
# Expert parallelism on this machine's CPU ranks: bench/expert_parallel_bench under mpirun with
# 1, 2 and 4 ranks (world = ep), both configurations, each rank count's replicated and sharded
# step against the one-rank step measured in the same run. Waiting ranks yield their core
# (mpi_yield_when_idle), so more ranks than cores measure the exchange rather than spinning.
#
# usage: bash bench/expert_parallel.sh [STEPS] [fp32|bf16]   (from the repository root, after a build)
set -euo pipefail
steps=${1:-8}
precision=${2:-fp32}
bench=build/bench/expert_parallel_bench
out=$(mktemp)
for np in 1 2 4; do
  mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none \
    --mca mpi_yield_when_idle 1 -np "$np" "$bench" --steps "$steps" --threads 1 --precision "$precision" | tee -a "$out" | grep -v '^RESULT'
done
bash "$(dirname "$0")/../scripts/python.sh" - "$out" <<'PY'
import sys
rows = [l.split()[1:] for l in open(sys.argv[1]) if l.startswith("RESULT")]
base = {c: float(ms) for c, n, mode, ms in rows if n == "1"}
print(f"\n{'config':<6} {'ep':>3}  {'mode':<10} {'step ms':>9} {'vs ep=1':>8}")
for c, n, mode, ms in rows:
    print(f"{c:<6} {n:>3}  {mode:<10} {float(ms):>9.1f} {float(ms) / base[c]:>7.2f}x")
PY
rm -f "$out"
