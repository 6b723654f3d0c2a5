// Build facts recorded in env.json: the moa git commit and the LibTorch version.
#pragma once

namespace moa {

const char* GitCommit();
const char* TorchVersion();

}  // namespace moa
