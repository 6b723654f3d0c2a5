// Builds the classifier a configuration describes (ViT or MNIST_CNN) with its PEFT setup.
#pragma once

#include <memory>
#include <string>

#include <absl/status/statusor.h>

#include "moa/models.h"
#include "moa/peft.h"

namespace moa {

struct ModelSpec {
  std::string arch = "vit";  // vit, mnist_cnn
  ViTOptions vit;            // in_chans and num_classes are used by mnist_cnn too
};

absl::StatusOr<std::shared_ptr<ClassifierImpl>> BuildClassifier(const ModelSpec& spec);

}  // namespace moa
