#include "trainer/evaluate.h"

#include <algorithm>
#include <cstdio>

#include "common/safetensors.h"
#include "common/status_macros.h"
#include "common/threads.h"
#include "data/dataset.h"
#include "data/stream.h"
#include "moa/autocast.h"
#include "moa/peft.h"
#include "moa/weights.h"
#include "parallel/device.h"
#include "trainer/trainer.h"

namespace moa::trainer {

absl::StatusOr<std::shared_ptr<ClassifierImpl>> ModelWithAdapters(const RunConfig& config,
                                                                  const data::DatasetInfo& info,
                                                                  const std::string& adapters,
                                                                  const torch::Device& device) {
  MOA_ASSIGN_OR_RETURN(std::shared_ptr<ClassifierImpl> model, BuildModel(config, info));
  MOA_RETURN_IF_ERROR(LoadTrainable(*model, adapters));
  model->to(device);
  model->eval();
  return model;
}

torch::Tensor EnsembleLogits(const std::vector<std::shared_ptr<ClassifierImpl>>& models,
                             const torch::Tensor& images, bool share_prefix) {
  std::vector<VisionTransformerImpl*> vits;
  for (const auto& m : models) vits.push_back(dynamic_cast<VisionTransformerImpl*>(m.get()));
  int64_t shared = 0;
  if (share_prefix && std::all_of(vits.begin(), vits.end(), [](auto* v) { return v != nullptr; })) {
    shared = vits[0]->FirstAdaptedBlock();
    for (auto* v : vits) shared = std::min(shared, v->FirstAdaptedBlock());
  }
  torch::Tensor logits;
  if (shared > 0) {
    const torch::Tensor prefix = vits[0]->RunBlocks(vits[0]->Tokens(images), 0, shared);
    for (auto* v : vits) {
      const torch::Tensor l = v->Logits(v->RunBlocks(prefix, shared, v->options().depth()));
      logits = logits.defined() ? logits + l : l;
    }
  } else {
    for (const auto& m : models) {
      const torch::Tensor l = m->forward(images);
      logits = logits.defined() ? logits + l : l;
    }
  }
  return logits / static_cast<double>(models.size());
}

absl::StatusOr<std::vector<DomainScore>> EvaluateAdapters(
    const RunConfig& config, const std::vector<std::string>& adapters) {
  if (adapters.empty())
    return absl::InvalidArgumentError("moa eval needs --adapters FILE [FILE ...]");
  MOA_ASSIGN_OR_RETURN(data::DatasetInfo info, data::LookupDataset(config.data.dataset));
  MOA_ASSIGN_OR_RETURN(data::LoadOptions load, DatasetOptions(config));
  MOA_ASSIGN_OR_RETURN(data::DomainDataset dataset, data::LoadDataset(load));
  MOA_RETURN_IF_ERROR(data::CompleteInfo(dataset, {}, &info));
  MOA_ASSIGN_OR_RETURN(const torch::Device device,
                       parallel::SelectDevice(config.parallel.device, parallel::MeshLayout{}));
  std::vector<std::shared_ptr<ClassifierImpl>> models;
  for (const std::string& path : adapters) {
    MOA_ASSIGN_OR_RETURN(auto model, ModelWithAdapters(config, info, path, device));
    models.push_back(model);
  }
  // Adapter methods leave the backbone frozen, so the models share it up to their first adapter.
  const std::string& method = config.adapter.method;
  const bool frozen_backbone = method == "lora" || method == "kadaptation" || method == "moa";
  const int workers = ResolveDataWorkers(
      static_cast<int>(config.data.workers),
      ResolveThreadCount(static_cast<int>(config.train.threads), 1), 1, device.is_cuda());
  torch::NoGradGuard no_grad;
  std::vector<DomainScore> scores;
  for (const data::Domain& domain : dataset.domains) {
    for (const char* split : {"in", "out"}) {
      const std::vector<int64_t>& indices = split[0] == 'i' ? domain.in : domain.out;
      DomainScore score{domain.name, split, 0, 0};
      data::SplitLoader loader(domain, indices, config.eval.batch_size, workers,
                               config.model.img_size);
      torch::Tensor images, labels;
      while (loader.Next(&images, &labels)) {
        const torch::Tensor logits = EnsembleLogits(models, images.to(device), frozen_backbone);
        score.correct += logits.argmax(1).eq(labels.to(device)).sum().item<int64_t>();
        score.total += labels.size(0);
      }
      scores.push_back(score);
    }
  }
  return scores;
}

absl::Status ExportMerged(const RunConfig& config, const std::string& adapters,
                          const std::string& out) {
  MOA_ASSIGN_OR_RETURN(data::DatasetInfo info, ModelDatasetInfo(config));
  MOA_ASSIGN_OR_RETURN(auto model, ModelWithAdapters(config, info, adapters, torch::kCPU));
  MOA_RETURN_IF_ERROR(MergeLora(*model));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : model->named_parameters()) tensors.emplace_back(p.key(), p.value());
  return WriteSafetensors(out, tensors, {{"format", "pt"}, {"moa_merged_from", adapters}});
}

std::string FormatDomainScores(const std::vector<DomainScore>& scores) {
  std::string text = "      domain  split     accuracy   correct / total\n";
  for (const DomainScore& s : scores) {
    char line[128];
    std::snprintf(line, sizeof(line), "  %10s  %5s  %10.3f%%  %8lld / %lld\n", s.domain.c_str(),
                  s.split.c_str(), 100.0 * s.accuracy(), static_cast<long long>(s.correct),
                  static_cast<long long>(s.total));
    text += line;
  }
  return text;
}

const std::vector<EvalPrefixCache::Batch>* EvalPrefixCache::Find(const std::string& key,
                                                                 int64_t samples) const {
  auto it = splits_.find(key);
  if (it == splits_.end() || it->second.samples != samples) return nullptr;
  ++hits_;
  return &it->second.batches;
}

void EvalPrefixCache::Store(const std::string& key, int64_t samples, std::vector<Batch> batches) {
  int64_t bytes = 0;
  for (const Batch& b : batches) bytes += b.prefix.nbytes() + b.labels.nbytes();
  if (splits_.count(key) || !Fits(bytes)) return;
  bytes_ += bytes;
  splits_[key] = Entry{samples, std::move(batches)};
}

int64_t FrozenPrefixBlocks(ClassifierImpl& model) {
  auto* vit = dynamic_cast<VisionTransformerImpl*>(&model);
  if (vit == nullptr) return 0;
  int64_t frozen = vit->options().depth();
  for (const auto& p : model.named_parameters()) {
    if (!p.value().requires_grad()) continue;
    const std::string& name = p.key();
    if (name.rfind("blocks.", 0) == 0) {
      frozen = std::min<int64_t>(frozen, std::stoll(name.substr(7, name.find('.', 7) - 7)));
    } else if (name.rfind("head.", 0) != 0 && name.rfind("norm.", 0) != 0) {
      return 0;  // the embedding (patch_embed, cls_token, pos_embed, norm_pre) trains
    }
  }
  return frozen;
}

SplitScore EvaluateSplit(ClassifierImpl& model, const data::Domain& domain,
                         const std::vector<int64_t>& indices, int64_t batch_size, int64_t workers,
                         int64_t image_size, bool bf16, EvalPrefixCache* cache,
                         const std::string& cache_key) {
  torch::NoGradGuard no_grad;
  model.eval();
  const torch::Device device = model.parameters().front().device();
  SplitScore score;
  // Sums stay on the device until the split is done: no host read per batch.
  torch::Tensor correct = torch::zeros({}, torch::TensorOptions(torch::kInt64).device(device));
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device));
  auto add = [&](const torch::Tensor& batch_logits, const torch::Tensor& labels) {
    const torch::Tensor logits = batch_logits.to(torch::kFloat32);
    correct += logits.argmax(1).eq(labels).sum();
    loss_sum +=
        torch::nn::functional::cross_entropy(
            logits, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
            .to(torch::kFloat64);
    score.total += labels.size(0);
  };
  // The forward in two parts where a cache may keep the first: the embedding and the frozen
  // blocks, then the rest (the same operations as the model's forward).
  auto* vit = dynamic_cast<VisionTransformerImpl*>(&model);
  const int64_t prefix = cache != nullptr ? FrozenPrefixBlocks(model) : 0;
  const int64_t samples = static_cast<int64_t>(indices.size());
  if (prefix > 0) {
    if (const auto* cached = cache->Find(cache_key, samples)) {
      for (const EvalPrefixCache::Batch& b : *cached) {
        torch::Tensor logits;
        {
          AutocastScope autocast(device, bf16);
          logits = vit->Logits(vit->RunBlocks(b.prefix, prefix, vit->options().depth()));
        }
        add(logits, b.labels);
      }
      score.correct = correct.item<int64_t>();
      score.loss_sum = loss_sum.item<double>();
      return score;
    }
  }
  std::vector<EvalPrefixCache::Batch> keep;
  int64_t keep_bytes = 0;
  bool keeping = prefix > 0;
  data::SplitLoader loader(domain, indices, batch_size, workers, image_size);
  torch::Tensor images, labels;
  while (loader.Next(&images, &labels)) {
    images = images.to(device);
    labels = labels.to(device);
    torch::Tensor logits, front;
    {
      AutocastScope autocast(device, bf16);
      if (prefix == 0) {
        logits = model.forward(images);
      } else {
        front = vit->RunBlocks(vit->Tokens(images), 0, prefix);
        logits = vit->Logits(vit->RunBlocks(front, prefix, vit->options().depth()));
      }
    }
    add(logits, labels);
    if (!keeping) continue;
    keep_bytes += front.nbytes() + labels.nbytes();
    if (cache->Fits(keep_bytes)) {
      keep.push_back({front, labels});
    } else {
      keeping = false;  // the split does not fit: none of it is kept
      keep.clear();
    }
  }
  if (keeping) cache->Store(cache_key, samples, std::move(keep));
  score.correct = correct.item<int64_t>();
  score.loss_sum = loss_sum.item<double>();
  return score;
}

}  // namespace moa::trainer
