// The files of a run directory (docs/architecture.md, Run files) other than the full training
// state (state.h): config.ini and env.json (versions, world layout, every rank's device) when the
// run starts, what results.jsonl records of the run (DomainBed's `args` and `hparams`), the
// trainable-tensor checkpoints, and reading back results.jsonl for a resumed run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "parallel/communicator.h"
#include "parallel/mesh_layout.h"
#include "trainer/config.h"

namespace moa::trainer {

/// Every swept value, as DomainBed writes `hparams`.
nlohmann::ordered_json HparamsJson(const RunConfig& c);

/// The run's identity, as DomainBed writes `args`.
nlohmann::ordered_json ArgsJson(const RunConfig& c);

/// Every rank's device report (host, type, name, memory, driver, CUDA, NCCL), gathered on every
/// rank, in rank order. A collective: every rank calls it.
absl::StatusOr<nlohmann::ordered_json> GatherDeviceReports(const torch::Device& device,
                                                           parallel::Communicator& world);

/// env.json: moa's commit, LibTorch, MPI, CUDA and NCCL versions, hosts, the world layout and
/// backend, threads, this rank's device and precision, and `devices` (GatherDeviceReports).
nlohmann::ordered_json EnvJson(const RunConfig& config, const parallel::MeshLayout& mesh,
                               const std::string& backend, int threads, const torch::Device& device,
                               const nlohmann::ordered_json& devices);

/// Makes `dir`/checkpoints, removes temporary files that killed writes left (the caller holds
/// the folder's lock), and writes config.ini (the resolved configuration) and env.json
/// atomically; a fresh run (no train.resume) starts a new results.jsonl; `done` is removed until
/// the run completes. The coordinator alone calls it.
absl::Status PrepareRunDir(const std::string& dir, const RunConfig& config,
                           const nlohmann::ordered_json& env);

/// checkpoints/`name`.safetensors (the trainable tensors, with the step and configuration as
/// metadata) and checkpoints/`name`.json (step, method and, when `validation` >= 0, the
/// training-domain validation accuracy), both written atomically.
absl::Status SaveCheckpoint(const torch::nn::Module& model, const std::string& dir,
                            const std::string& name, int64_t step, double validation,
                            const RunConfig& config);

/// The records of `path` (results.jsonl) up to and including `step`, without SWAD's record, and
/// their lines as read (a resumed run rewrites its file with them: a killed run may have written
/// later ones). A missing file gives no records; a malformed line, or one that is not a record
/// with a step, is an error naming the file.
struct RecordsUpTo {
  std::vector<nlohmann::json> records;
  std::string lines;
};
absl::StatusOr<RecordsUpTo> ReadRecordsUpTo(const std::string& path, int64_t step);

/// ReadRecordsUpTo for a resume, where the records up to the checkpoint's `step` must be there
/// (the state is saved after its step's record): a missing file, or one without such a record, is
/// an error naming the file.
absl::StatusOr<RecordsUpTo> ReadRecordsToResume(const std::string& path, int64_t step);

}  // namespace moa::trainer
