// Precompiled header shared by every moa target: LibTorch's frontend dominates compile time.
#pragma once
#include <torch/torch.h>
