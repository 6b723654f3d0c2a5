// Which malloc serves this process: the one the build linked (common/version.h, LinkedAllocator)
// unless another was preloaded. Recorded in env.json and printed when a run starts.
#pragma once

#include <string>

namespace moa {

/// "tcmalloc", "jemalloc" or "glibc": the implementation that malloc resolves to at run time.
std::string ActiveAllocator();

}  // namespace moa
