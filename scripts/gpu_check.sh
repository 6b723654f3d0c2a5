#!/usr/bin/env bash
# The device check for the GPU machine we test on (one H200; its image has torch 2.11.0+cu130 in
# /opt/torch/.venv with python3.12, nvcc 13.0, CMake and ninja, 16 cores, and no apt or pip). It
# runs the binaries scripts/gpu_bundle.sh packed here (gpu_bundle/, carried with the working
# tree) against the image's LibTorch, on generated data:
#   1. the GPU-labelled tests (NCCL conformance at one rank; GPU fp32 == CPU; bf16 follows fp32;
#      deterministic repeat and resume; CPU <-> GPU checkpoints) and the standalone NCCL test;
#   2. dp = 2 and ep = 2 on the one GPU through the MPI backend against one process;
#   3. the ViT-B/16 training-step benchmark against PyTorch eager (bf16, the paper's batch and the
#      largest that fits), then fp32 at the paper's batch.
# The report grows as it goes (gpu_report.txt in $OUT, else gpu_report/), so a timeout still
# returns what ran; the whole check is sized to finish within 8 minutes.
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
start=$(date +%s)
say() { echo "$*" | tee -a "$report"; }
section() { say ""; say "== $* ($(($(date +%s) - start)) s)"; }
# starts BINARY: whether it runs `--help`; what it printed on stderr goes into the report.
starts() {
  local errors="$report_dir/start.err" rc
  timeout 30 "$1" --help >/dev/null 2>"$errors"
  rc=$?
  head -20 "$errors" | tee -a "$report"
  [ "$rc" -eq 0 ] || say "-> exit status $rc"
  return "$rc"
}
# run SECONDS COMMAND...: runs with a time limit, output into the report.
run() {
  local limit=$1
  shift
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$report"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || say "-> exit status $rc"
  return "$rc"
}

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
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
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
export MOA_SOURCE_DIR="$here" MOA_PYTHON="$python" OMP_NUM_THREADS=4

section "carried binaries"
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

section "generated data (IDX files of random 28x28 images, 10 classes)"
data="$report_dir/idx"
mkdir -p "$data"
"$python" - "$data" <<'PY'
import struct, sys, numpy as np
rng = np.random.default_rng(0)
n = 1200
labels = rng.integers(0, 10, n, dtype=np.uint8)
# Class-dependent stripes plus noise, so training has something to learn.
base = np.zeros((10, 28, 28), np.float32)
for c in range(10):
    base[c, :, c * 2:c * 2 + 6] = 200
images = np.clip(base[labels] + rng.normal(0, 40, (n, 28, 28)), 0, 255).astype(np.uint8)
with open(sys.argv[1] + "/t10k-images-idx3-ubyte", "wb") as f:
    f.write(struct.pack(">IIII", 2051, n, 28, 28)); f.write(images.tobytes())
with open(sys.argv[1] + "/t10k-labels-idx1-ubyte", "wb") as f:
    f.write(struct.pack(">II", 2049, n)); f.write(labels.tobytes())
PY
export MOA_TEST_DATA_DIR="$data"

section "GPU tests (gtest label gpu)"
run 240 "$bin/gpu_test" --gtest_output="json:$report_dir/gpu_test.json"
section "standalone NCCL test"
run 60 "$bin/nccl_test"

section "dp = 2 and ep = 2 on one GPU through the MPI backend against one process"
runs="$report_dir/runs"
# MOA_CHECK_DEVICE=cpu runs this section on the CPU (to try the script on a machine without a GPU;
# MOA_CHECK_LOADER=1 tries the carried C library's path there too).
common=(--config configs/tiny.ini --data.data_dir="$data" --parallel.device="${MOA_CHECK_DEVICE:-cuda}"
  --adapter.method=moa --moa.proj_dim=16 --moa.ranks=1,2,4,8)
run 60 "$bin/moa" train "${common[@]}" --output.dir="$runs/one" >/dev/null
run 90 "${mpirun[@]}" -np 2 "$bin/moa" train "${common[@]}" --parallel.backend=mpi \
  --output.dir="$runs/dp2" >/dev/null
run 90 "${mpirun[@]}" -np 2 "$bin/moa" train "${common[@]}" --parallel.backend=mpi \
  --parallel.ep=2 --parallel.expert_mode=sharded --output.dir="$runs/ep2" >/dev/null
"$python" - "$runs" <<'PY' 2>&1 | tee -a "$report"
import json, sys
def records(name):
    with open(f"{sys.argv[1]}/{name}/results.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]
try:
    one = records("one")
except OSError as e:
    sys.exit(f"one process: no results ({e})")
for name in ("dp2", "ep2"):
    try:
        other = records(name)
    except OSError as e:
        print(f"{name}: no results ({e})"); continue
    worst = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(one, other))
    accs = all(a[k] == b[k] for a, b in zip(one, other) for k in a if k.endswith("_acc"))
    ok = len(one) == len(other) and worst < 1e-4 and accs
    print(f"{name}: {len(other)} records, largest relative loss difference {worst:.2e}, "
          f"accuracies {'equal' if accs else 'DIFFER'} -> {'PASS' if ok else 'FAIL'}")
PY

section "ViT-B/16 training step, bf16: moa vs PyTorch eager (paper batch 32 x 3, then the largest that fits)"
run 200 "$bin/vit_step_bench" --device cuda --precision bf16 --batch 32 --steps 10 \
  --warmup 3 --max-batch
section "ViT-B/16 training step, fp32 (TF32 off), paper batch"
run 90 "$bin/vit_step_bench" --device cuda --precision fp32 --batch 32 --steps 5 --warmup 2
section "done in $(($(date +%s) - start)) s"
