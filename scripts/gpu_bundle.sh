#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh needs on the GPU machine into gpu_bundle/ (ignored by git; the
# device tool carries it): the stripped moa, GPU test and benchmark binaries; every shared library
# they need except glibc, the C++ runtime, LibTorch and CUDA's (the GPU machine's image has
# torch 2.11.0+cu130 with its CUDA libraries); and Open MPI's runtime (orterun, its plugins, PMIx
# and help files) in a usr/ tree that OPAL_PREFIX relocates. Build first (scripts/build.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
out="$here/gpu_bundle"
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/usr/bin" "$out/usr/lib/x86_64-linux-gnu" "$out/usr/share"

for binary in build/moa build/tests/gpu_test build/tests/nccl_test build/bench/vit_step_bench; do
  strip -o "$out/bin/$(basename "$binary")" "$binary"
done
arch=/usr/lib/x86_64-linux-gnu
cp -L /usr/bin/orterun "$out/usr/bin/orterun"
cp -L /usr/bin/orted "$out/usr/bin/orted"
cp -rL "$arch/openmpi" "$out/usr/lib/x86_64-linux-gnu/openmpi"
rm -rf "$out/usr/lib/x86_64-linux-gnu/openmpi/include"
[ -d "$arch/pmix2" ] && cp -rL "$arch/pmix2" "$out/usr/lib/x86_64-linux-gnu/pmix2"
rm -rf "$out/usr/lib/x86_64-linux-gnu/pmix2/include"
cp -rL /usr/share/openmpi "$out/usr/share/openmpi"
[ -d /usr/share/pmix ] && cp -rL /usr/share/pmix "$out/usr/share/pmix"
mkdir -p "$out/usr/etc"
cp -rL /etc/openmpi "$out/usr/etc/openmpi"

# Libraries the GPU machine provides itself (glibc, the C++ runtime, LibTorch, CUDA, NCCL).
provided='^(libc|libm|libdl|librt|libpthread|ld-linux-x86-64|libstdc\+\+|libgcc_s|libtorch.*|libc10.*|libcuda|libcudart|libnvrtc|libnccl|libcublas.*|libcudnn.*|libcusparse.*|libcufft.*|libcurand|libcusolver.*|libnvJitLink|libnvToolsExt|libcupti|libnvshmem.*|libgomp|libshm|libcaffe2_nvrtc)\.so'
needed() {
  ldd "$1" 2>/dev/null | awk '/=> \// {print $3}'
}
objects=("$out"/bin/* "$out"/usr/bin/*)
while IFS= read -r -d '' plugin; do objects+=("$plugin"); done \
  < <(find "$out/usr/lib" -name '*.so*' -type f -print0)
for object in "${objects[@]}"; do
  needed "$object"
done | sort -u | while read -r lib; do
  name=$(basename "$lib")
  if [[ "$name" =~ $provided ]] || [[ "$lib" == */site-packages/* ]]; then continue; fi
  [ -e "$out/lib/$name" ] || cp -L "$lib" "$out/lib/$name"
done
echo "gpu_bundle: $(du -sh "$out" | cut -f1) in $out"
