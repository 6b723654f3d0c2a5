#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh needs on the GPU machine into gpu_bundle/ (ignored by git; the
# device tool carries it): the stripped moa, GPU test and benchmark binaries; every shared library
# they need except glibc, the C++ runtime, LibTorch and CUDA's (the GPU machine's image has
# torch 2.11.0+cu130 with its CUDA libraries); and Open MPI's runtime (orterun, its plugins, PMIx
# and help files) in a usr/ tree that OPAL_PREFIX relocates. For a machine whose C library or C++
# runtime is older than this one's (the binaries need glibc 2.36 and GLIBCXX_3.4.30), it also
# carries this machine's in glibc/, and loader/ holds one script per binary that starts it with
# that C library's own dynamic loader (gpu_check.sh falls back to them when the binaries do not
# start). Build first (scripts/build.sh).
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

# Libraries the GPU machine provides itself (glibc's, the C++ runtime, LibTorch, CUDA, NCCL).
provided='^(libc|libm|libdl|librt|libpthread|libutil|libresolv|libanl|libnsl|ld-linux-x86-64|libstdc\+\+|libgcc_s|libtorch.*|libc10.*|libcuda|libcudart|libnvrtc|libnccl|libcublas.*|libcudnn.*|libcusparse.*|libcufft.*|libcurand|libcusolver.*|libnvJitLink|libnvToolsExt|libcupti|libnvshmem.*|libgomp|libshm|libcaffe2_nvrtc)\.so'
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

# The C library, its loader and the C++ runtime, for the loader/ scripts only (never on
# LD_LIBRARY_PATH: the image's own programs, Python included, keep the image's C library).
mkdir -p "$out/glibc" "$out/loader"
for name in ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libdl.so.2 librt.so.1 libpthread.so.0 \
  libresolv.so.2 libutil.so.1 libstdc++.so.6 libgcc_s.so.1; do
  cp -L "$arch/$name" "$out/glibc/$name"
done
# --argv0 keeps the script's path as the program's name, so a binary that starts itself again
# (vit_step_bench's measured children) goes through the script too; GOMP_SPINCOUNT set here stops
# moa's restart of itself through /proc/self/exe, which would be the loader.
write_loader_script() {
  local name=$1 target=$2
  cat >"$out/loader/$name" <<SCRIPT
#!/bin/sh
# Starts the carried $name with the carried C library (scripts/gpu_bundle.sh).
bundle=\$(cd "\$(dirname "\$0")/.." && pwd)
export GOMP_SPINCOUNT="\${GOMP_SPINCOUNT:-1000}"
exec "\$bundle/glibc/ld-linux-x86-64.so.2" --library-path "\$bundle/glibc:\${LD_LIBRARY_PATH:-}" \\
  --argv0 "\$0" "\$bundle/$target" "\$@"
SCRIPT
  chmod +x "$out/loader/$name"
}
for binary in "$out"/bin/*; do write_loader_script "$(basename "$binary")" "bin/$(basename "$binary")"; done
write_loader_script orterun usr/bin/orterun
# The commit the binaries were built from (with "+ changes" for a work tree that differs), which
# gpu_check.sh reports, so a stale bundle shows.
{
  git -C "$here" rev-parse --short HEAD
  git -C "$here" diff --quiet HEAD -- || echo "+ changes"
} | paste -sd' ' >"$out/COMMIT"
echo "gpu_bundle: $(du -sh "$out" | cut -f1) in $out, built from $(cat "$out/COMMIT")"
