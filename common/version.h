// Build facts recorded in env.json: the moa git commit, the LibTorch version and the memory
// allocator the build linked.
#pragma once

namespace moa {

const char* GitCommit();
const char* TorchVersion();
/// "tcmalloc" or "glibc" (CMake option MOA_TCMALLOC; glibc in the sanitized build).
const char* LinkedAllocator();

}  // namespace moa
