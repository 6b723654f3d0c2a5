#!/usr/bin/env bash
# The device check for the GPU machine we test on (one H200; its image has torch 2.11.0+cu130 in
# /opt/torch/.venv with python3.12, nvcc 13.0, CMake and ninja, 16 cores, and no apt or pip). It
# runs the binaries scripts/gpu_bundle.sh packed here (gpu_bundle/, carried with the working
# tree) against the image's LibTorch, on generated data:
#   1. the GPU-labelled tests (NCCL conformance at one rank; GPU fp32 == CPU; bf16 follows fp32;
#      deterministic repeat and resume; CPU <-> GPU checkpoints) and the standalone NCCL test;
#   2. dp = 2 and ep = 2 on the one GPU through the MPI backend against one process;
#   3. the ViT-B/16 training-step benchmark against PyTorch eager: bf16 at the paper's batch, fp32
#      (TF32 off) at the paper's batch, then bf16 at the largest batch that fits;
#   4. where the step's GPU time goes: Kineto traces of LoRA (1536 images) and full fine-tuning
#      (768 images) in bf16 on both sides, summed by kernel kind (bench/trace_kernels.py); the
#      traces come back gzipped.
# MOA_CHECK_ONLY=tests,runs,bench,profile (any of them) runs only those sections.
# The report grows as it goes (gpu_report.txt in $OUT, else gpu_report/), so a timeout still
# returns what ran; beside it only gpu_test.json, the full logs (gpu_test.log, runs.log,
# bench.log) and section 4's traces.tar.gz: the device tool returns at most 8 files. Generated
# data and run folders live in a scratch folder. Every section's time limit is cut to what is left of one deadline
# (MOA_CHECK_SECONDS, 470 s from the start), the most important sections first, and the last
# lines printed are a summary.
#   here:            bash scripts/build.sh && bash scripts/gpu_bundle.sh
#   on the machine:  bash scripts/gpu_check.sh        (device tool: carry gpu_bundle)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bundle="$here/gpu_bundle"
report_dir="${OUT:-$here/gpu_report}"
mkdir -p "$report_dir"
report="$report_dir/gpu_report.txt"
: >"$report"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
start=$(date +%s)
deadline=$((start + ${MOA_CHECK_SECONDS:-470}))
say() { echo "$*" | tee -a "$report"; }
section() { say ""; say "== $* ($(($(date +%s) - start)) s)"; }
# starts BINARY: whether it runs `--help`; what it printed on stderr goes into the report.
starts() {
  local errors="$scratch/start.err" rc
  timeout 30 "$1" --help >/dev/null 2>"$errors"
  rc=$?
  head -20 "$errors" | tee -a "$report"
  [ "$rc" -eq 0 ] || say "-> exit status $rc"
  return "$rc"
}
# limit SECONDS: SECONDS, or less where the deadline comes first (0: no time left).
limit() {
  local left=$((deadline - $(date +%s) - 5))
  if [ "$left" -lt 15 ]; then echo 0; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
# run SECONDS COMMAND...: runs with a time limit, output into the report.
run() {
  local seconds
  seconds=$(limit "$1")
  shift
  if [ "$seconds" -eq 0 ]; then say "-> skipped: the deadline has passed"; return 124; fi
  timeout --kill-after=10 "$seconds" "$@" 2>&1 | tee -a "$report"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || say "-> exit status $rc"
  return "$rc"
}
# run_logged LOG PATTERN SECONDS COMMAND...: the same with the whole output appended to LOG in the
# report folder, and only the lines matching PATTERN (grep -E) in the report.
run_logged() {
  local name=$1 log="$report_dir/$1" pattern=$2 seconds
  seconds=$(limit "$3")
  shift 3
  if [ "$seconds" -eq 0 ]; then say "-> skipped: the deadline has passed"; return 124; fi
  echo "\$ $*" >>"$log"
  timeout --kill-after=10 "$seconds" "$@" 2>&1 | tee -a "$log" |
    grep --line-buffered -E "$pattern" | tee -a "$report"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || say "-> exit status $rc (whole output: $name)"
  return "$rc"
}

# want SECTION: whether MOA_CHECK_ONLY (unset: every section) names SECTION.
MOA_CHECK_ONLY="${MOA_CHECK_ONLY:-}"
MOA_CHECK_ONLY="${MOA_CHECK_ONLY// /}"
want() { [ -z "$MOA_CHECK_ONLY" ] || [[ ",$MOA_CHECK_ONLY," == *",$1,"* ]]; }
for name in ${MOA_CHECK_ONLY//,/ }; do
  case "$name" in
    tests | runs | bench | profile) ;;
    *)
      say "MOA_CHECK_ONLY: unknown section '$name' (tests, runs, bench, profile, comma-separated)"
      exit 2
      ;;
  esac
done

python="${MOA_GPU_PYTHON:-/opt/torch/.venv/bin/python3}"
[ -x "$python" ] || python=python3
section "machine"
run 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
site=$(dirname "$(dirname "$torch_lib")")
say "torch: $("$python" -c 'import torch; print(torch.__version__, torch.version.cuda)') at $torch_lib"
nvidia_libs=$(find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | tr '\n' ':')
# The image's Python keeps the image's libraries: the bundle's (built on Debian 12) could need a
# newer C library than the image has. This script, gpu_test's and vit_step_bench's children use it.
image_ld="${LD_LIBRARY_PATH:-}"
tools="$scratch/tools"
mkdir -p "$tools"
{
  echo '#!/bin/sh'
  if [ -n "$image_ld" ]; then echo "export LD_LIBRARY_PATH='$image_ld'"; else echo "unset LD_LIBRARY_PATH"; fi
  echo "exec '$python' \"\$@\""
} >"$tools/python"
chmod +x "$tools/python"
python="$tools/python"
export LD_LIBRARY_PATH="$bundle/lib:$bundle/usr/lib/x86_64-linux-gnu/openmpi/lib:$torch_lib:$nvidia_libs$image_ld"
# Open MPI and PMIx from the bundle's usr/ tree.
usr="$bundle/usr"
export OPAL_PREFIX="$usr" OPAL_EXEC_PREFIX="$usr" OPAL_BINDIR="$usr/bin" \
  OPAL_LIBDIR="$usr/lib/x86_64-linux-gnu/openmpi/lib" OPAL_DATADIR="$usr/share" \
  OPAL_PKGDATADIR="$usr/share/openmpi" OPAL_SYSCONFDIR="$usr/etc/openmpi" \
  OPAL_PKGLIBDIR="$usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3" \
  OMPI_MCA_mca_base_component_path="$usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3" \
  PMIX_INSTALL_PREFIX="$usr/lib/x86_64-linux-gnu/pmix2" \
  PMIX_MCA_mca_base_component_path="$usr/lib/x86_64-linux-gnu/pmix2/lib/pmix" \
  PATH="$usr/bin:$PATH"
# Shared memory between ranks of one node only: the bundle carries no UCX or fabric libraries.
# Open MPI's launcher wants ssh or rsh on the PATH even to start ranks on this machine alone, and
# an image may have neither: `false` stands in (it is never called for local ranks).
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_plm_rsh_agent=false
# On the H100 image PMIx also tried that image's own zlib compression plugin (another PMIx
# version; it fails to load, harmlessly) and then printed a boxed warning per launch: silenced.
export PMIX_MCA_pcompress_base_silence_warning=1
export MOA_SOURCE_DIR="$here" MOA_PYTHON="$python" OMP_NUM_THREADS=4

section "carried binaries"
say "binaries built from commit $(cat "$bundle/COMMIT" 2>/dev/null || echo '(unknown)')"
say "this machine: $(ldd --version 2>&1 | head -1); $(uname -r)"
# The binaries as built; where they do not start (a C library or C++ runtime older than the build
# machine's), the same binaries through the carried C library's loader (gpu_bundle.sh, loader/).
bin="$bundle/bin"
orterun="$usr/bin/orterun"
use_loader=0
if [ "${MOA_CHECK_LOADER:-0}" = 1 ]; then
  say "MOA_CHECK_LOADER=1: the carried C library (loader/) from the start"
  use_loader=1
elif ! starts "$bin/moa"; then
  say "the carried moa does not start with this machine's libraries; trying the carried C library"
  use_loader=1
fi
if [ "$use_loader" = 1 ]; then
  bin="$bundle/loader"
  orterun="$bundle/loader/orterun"
  if ! starts "$bin/moa"; then
    say "the carried moa does not start with the carried C library either: nothing else can run"
    say "(the image lacks Abseil, Boost and Open MPI to build moa)"
    exit 1
  fi
fi
say "binaries: $bin"
mpirun=("$orterun" --allow-run-as-root --oversubscribe --bind-to none
  --mca btl_vader_single_copy_mechanism none)

section "generated data (IDX files of 28x28 noisy rings, radius = class, 10 classes)"
data="$scratch/idx"
mkdir -p "$data"
"$python" scripts/synthetic_idx.py "$data" 1200 2>&1 | tee -a "$report"
export MOA_TEST_DATA_DIR="$data"
# cuBLAS reads its workspace setting once, at its first use, so deterministic runs need it set
# before the process starts. A GPU test that finds no GPU fails here rather than skip (unless the
# script is being tried on the CPU).
export CUBLAS_WORKSPACE_CONFIG=:4096:8
[ "${MOA_CHECK_DEVICE:-cuda}" = cpu ] || export MOA_EXPECT_GPU=1

if want tests; then
section "GPU tests (gtest label gpu)"
gtest_lines='^\[ *(RUN|OK|FAILED|PASSED|SKIPPED) *\]|^\[==|: Failure|^(Expected|  Actual|Value of|Which is)|C\+\+ exception|^[A-Z_]{4,}: |planner rates'
run_logged gpu_test.log "$gtest_lines" 220 "$bin/gpu_test" \
  --gtest_output="json:$report_dir/gpu_test.json"
section "standalone NCCL test"
run_logged gpu_test.log "$gtest_lines|GB/s|NCCL" 45 "$bin/nccl_test"
fi

if want runs; then
section "dp = 2 and ep = 2 on one GPU through the MPI backend against one process"
runs="$scratch/runs"
# MOA_CHECK_DEVICE=cpu runs this section on the CPU (to try the script on a machine without a GPU;
# MOA_CHECK_LOADER=1 tries the carried C library's path there too).
common=(--config configs/tiny.ini --data.data_dir="$data" --parallel.device="${MOA_CHECK_DEVICE:-cuda}"
  --adapter.method=moa --moa.proj_dim=16 --moa.ranks=1,2,4,8)
run_errors='rror|FATAL|terminate|Abort'
run_logged runs.log "$run_errors" 60 "$bin/moa" train "${common[@]}" --output.dir="$runs/one"
run_logged runs.log "$run_errors" 75 "${mpirun[@]}" -np 2 "$bin/moa" train "${common[@]}" \
  --parallel.backend=mpi --output.dir="$runs/dp2"
run_logged runs.log "$run_errors" 75 "${mpirun[@]}" -np 2 "$bin/moa" train "${common[@]}" \
  --parallel.backend=mpi --parallel.ep=2 --parallel.expert_mode=sharded --output.dir="$runs/ep2"
"$python" - "$runs" <<'PY' 2>&1 | tee -a "$report"
import json, sys
def records(name):
    with open(f"{sys.argv[1]}/{name}/results.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]
# Losses to 1e-4 relative; an accuracy may move by one image of the smallest (24-image) split,
# since the GPU's kernels sum a split batch in another order and a near-tie can fall either way.
try:
    one = records("one")
except (OSError, ValueError) as e:
    sys.exit(f"dp2, ep2: FAIL, the one-process run has no results ({e})")
for name in ("dp2", "ep2"):
    try:
        other = records(name)
    except (OSError, ValueError) as e:
        print(f"{name}: FAIL, no results ({e})"); continue
    pairs = list(zip(one, other))
    if not pairs:
        print(f"{name}: FAIL, no records to compare"); continue
    worst = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in pairs)
    acc = max((abs(a[k] - b[k]) for a, b in pairs for k in a if k.endswith("_acc")), default=0)
    ok = len(one) == len(other) and worst < 1e-4 and acc <= 1.01 / 24
    print(f"{name}: {len(other)} of {len(one)} records, largest relative loss difference "
          f"{worst:.2e}, largest accuracy difference {acc:.4f} -> {'PASS' if ok else 'FAIL'}")
PY
fi

bench_lines='^\||^GPU:|^ViT|^LoRA-MoA|^note|vit_step_bench|rror'
# MOA_CHECK_DEVICE=cpu: one small step of each row on the CPU instead (the carried benchmark's
# paths and its PyTorch twin, tried without a GPU).
if [ "${MOA_CHECK_DEVICE:-cuda}" = cpu ]; then
  paper=(--device cpu --small --batch 1 --threads 2)
  bf16_steps=(--steps 1 --warmup 1)
  fp32_steps=(--steps 1 --warmup 1)
else
  paper=(--device cuda --batch 32)
  bf16_steps=(--steps 20 --warmup 5)
  fp32_steps=(--steps 5 --warmup 2)
fi
if want bench; then
section "ViT-B/16 training step, bf16: moa vs PyTorch eager, paper batch (32 per domain x 3)"
run_logged bench.log "$bench_lines" 150 "$bin/vit_step_bench" "${paper[@]}" --precision bf16 \
  "${bf16_steps[@]}"
section "ViT-B/16 training step, fp32 (TF32 off), paper batch"
run_logged bench.log "$bench_lines" 90 "$bin/vit_step_bench" "${paper[@]}" --precision fp32 \
  "${fp32_steps[@]}"
if [ "${MOA_CHECK_DEVICE:-cuda}" != cpu ]; then
  section "ViT-B/16 training step, bf16, the largest batch that fits (MoA first; rows as they come)"
  run_logged bench.log "$bench_lines|^\\(" 300 "$bin/vit_step_bench" "${paper[@]}" --precision bf16 \
    --steps 10 --warmup 3 --max-batch-only --methods moa,lora,full
fi
fi

if want profile; then
  section "where the GPU time of a bf16 step goes: LoRA at 1536 images, full at 768, both sides"
  traces="$scratch/traces"
  mkdir -p "$traces"
  if [ "${MOA_CHECK_DEVICE:-cuda}" = cpu ]; then
    profiled=("lora 1" "full 1")
    profile_flags=(--device cpu --small --threads 2 --steps 1 --warmup 1)
  else
    profiled=("lora 512" "full 256")
    profile_flags=(--device cuda --steps 5 --warmup 2)
  fi
  for row in "${profiled[@]}"; do
    read -r method per_domain <<<"$row"
    run_logged bench.log "$bench_lines" 100 "$bin/vit_step_bench" "${profile_flags[@]}" \
      --precision bf16 --batch "$per_domain" --methods "$method" --trace "$traces"
  done
  if compgen -G "$traces/*.json" >/dev/null; then
    run 30 "$python" bench/trace_kernels.py "$traces"/*.json
    tar -C "$traces" -czf "$report_dir/traces.tar.gz" .
  else
    say "-> no traces were written"
  fi
fi

section "summary (done in $(($(date +%s) - start)) s; whole report: gpu_report.txt)"
grep -E '^GPU kernel time|^kind |^(conv|attention|GEMM|layer norm|GELU|loss/softmax|optimizer|casts/copies|reductions|elementwise|other|GPU busy|span) |^== |^\[  FAILED  \]|^\[  (PASSED|SKIPPED) +\] [0-9]+ test|^dp2:|^ep2:|^\| (lora|moa|full)|^LoRA-MoA|^GPU:|^\((lora|moa|full)|-> (exit|skipped)' \
  "$report" | grep -v '^== summary'
exit 0
