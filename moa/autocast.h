// Mixed precision for a forward pass (train.precision = bf16): while an AutocastScope lives,
// matrix products, convolutions and attention on `device` run in bfloat16 with fp32 accumulation,
// as torch.autocast(device_type, dtype=torch.bfloat16); parameters, gradients and optimizer state
// stay fp32. A disabled scope changes nothing. AutocastOff leaves autocast for a scope (the
// router with moa.fp32_gate computes in float32 inside a bf16 forward).
//
//   { AutocastScope bf16(device, config.train.precision == "bf16"); logits = model->forward(x); }
//   loss = cross_entropy(logits.to(torch::kFloat32), labels);
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

namespace moa {

class AutocastScope {
 public:
  AutocastScope(const torch::Device& device, bool enabled)
      : type_(device.type()), enabled_(enabled) {
    if (!enabled_) return;
    was_enabled_ = at::autocast::is_autocast_enabled(type_);
    previous_dtype_ = at::autocast::get_autocast_dtype(type_);
    at::autocast::set_autocast_enabled(type_, true);
    at::autocast::set_autocast_dtype(type_, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!enabled_) return;
    // The casts of the frozen weights are cached for the pass; the outermost scope drops them.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type_, was_enabled_);
    at::autocast::set_autocast_dtype(type_, previous_dtype_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType type_;
  bool enabled_;
  bool was_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
};

class AutocastOff {
 public:
  explicit AutocastOff(const torch::Device& device)
      : type_(device.type()), was_enabled_(at::autocast::is_autocast_enabled(type_)) {
    at::autocast::set_autocast_enabled(type_, false);
  }
  ~AutocastOff() { at::autocast::set_autocast_enabled(type_, was_enabled_); }
  AutocastOff(const AutocastOff&) = delete;
  AutocastOff& operator=(const AutocastOff&) = delete;

 private:
  c10::DeviceType type_;
  bool was_enabled_;
};

}  // namespace moa
