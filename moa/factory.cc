#include "moa/factory.h"

#include "common/error.h"

namespace moa {

absl::StatusOr<std::shared_ptr<ClassifierImpl>> BuildClassifier(const ModelSpec& spec) {
  std::shared_ptr<ClassifierImpl> model;
  absl::Status status = CatchToStatus("building model." + spec.arch, [&] {
    if (spec.arch == "vit") {
      model = std::make_shared<VisionTransformerImpl>(spec.vit);
    } else if (spec.arch == "mnist_cnn") {
      model = std::make_shared<MnistCnnImpl>(spec.vit.in_chans(), spec.vit.num_classes());
    }
  });
  if (!status.ok()) return status;
  if (!model) {
    return absl::InvalidArgumentError("model.arch = '" + spec.arch +
                                      "' (expected vit or mnist_cnn)");
  }
  return model;
}

}  // namespace moa
