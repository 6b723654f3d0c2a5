#include "common/allocator.h"

#include <dlfcn.h>

namespace moa {

std::string ActiveAllocator() {
  // Each implementation exports an entry point of its own beside malloc.
  if (dlsym(RTLD_DEFAULT, "tc_malloc") != nullptr) return "tcmalloc";
  if (dlsym(RTLD_DEFAULT, "mallctl") != nullptr) return "jemalloc";
  return "glibc";
}

}  // namespace moa
