#include "trainer/run_files.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/allocator.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "common/threads.h"
#include "common/version.h"
#include "moa/weights.h"
#include "parallel/device.h"
#include "parallel/mpi_communicator.h"

namespace moa::trainer {

nlohmann::ordered_json HparamsJson(const RunConfig& c) {
  nlohmann::ordered_json h;
  h["lr"] = c.optim.lr;
  h["batch_size"] = c.data.batch_size;
  h["weight_decay"] = c.optim.weight_decay;
  h["optimizer"] = c.optim.optimizer;
  h["method"] = c.adapter.method;
  h["rank"] = c.adapter.rank;
  h["alpha"] = c.adapter.alpha;
  h["blocks"] = c.adapter.blocks;
  h["targets"] = c.adapter.targets;
  if (c.adapter.method == "moa") {
    h["moa_expert"] = c.moa.expert;
    h["moa_ranks"] = c.moa.ranks;
    h["moa_top_k"] = c.moa.top_k;
    h["moa_router"] = c.moa.router;
    h["moa_noise"] = c.moa.noise;
    h["moa_capacity_factor"] = c.moa.capacity_factor;
    h["moa_aux_loss"] = c.moa.aux_loss;
    h["moa_aux_weight"] = c.moa.aux_weight;
  }
  return h;
}

nlohmann::ordered_json ArgsJson(const RunConfig& c) {
  nlohmann::ordered_json a;
  a["dataset"] = c.data.dataset;
  a["algorithm"] = "ERM";
  a["method"] = c.adapter.method;
  a["test_envs"] = c.data.test_envs;
  a["trial_seed"] = c.train.trial_seed;
  a["hparams_seed"] = c.train.hparams_seed;
  a["seed"] = c.train.seed;
  a["steps"] = c.train.steps;
  a["checkpoint_freq"] = c.train.checkpoint_freq;
  a["holdout_fraction"] = c.data.holdout_fraction;
  a["output_dir"] = c.output.dir;
  return a;
}

absl::StatusOr<nlohmann::ordered_json> GatherDeviceReports(const torch::Device& device,
                                                           parallel::Communicator& world) {
  const parallel::DeviceReport r = parallel::DescribeDevice(device);
  nlohmann::ordered_json mine;
  mine["host"] = parallel::Hostname();
  mine["type"] = r.type;
  if (r.index >= 0) mine["index"] = r.index;
  mine["name"] = r.name;
  mine["memory_gb"] = static_cast<double>(r.memory_bytes) / (1 << 30);
  mine["driver"] = r.driver.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(r.driver);
  mine["cuda"] = r.cuda.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(r.cuda);
  mine["nccl"] = r.nccl.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(r.nccl);
  // What this rank was allowed to see (a sweep gives each running job GPUs of its own).
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  // (At most 256 characters, so every rank's report fits its row below.)
  mine["cuda_visible_devices"] = visible == nullptr
                                     ? nlohmann::ordered_json()
                                     : nlohmann::ordered_json(std::string(visible).substr(0, 256));
  // Fixed-width text rows, so one all-gather carries every rank's report.
  constexpr int64_t kWidth = 1024;
  std::string text = mine.dump().substr(0, kWidth);
  torch::Tensor row = torch::zeros({kWidth}, torch::kUInt8);
  std::memcpy(row.data_ptr(), text.data(), text.size());
  MOA_ASSIGN_OR_RETURN(torch::Tensor all, world.AllGather(row));
  all = all.to(torch::kCPU).contiguous();
  nlohmann::ordered_json reports = nlohmann::ordered_json::array();
  for (int64_t rank = 0; rank < all.size(0); ++rank) {
    const char* begin = reinterpret_cast<const char*>(all[rank].data_ptr());
    reports.push_back(nlohmann::ordered_json::parse(std::string(begin, strnlen(begin, kWidth))));
  }
  return reports;
}

nlohmann::ordered_json EnvJson(const RunConfig& config, const parallel::MeshLayout& mesh,
                               const std::string& backend, int threads, const torch::Device& device,
                               const nlohmann::ordered_json& devices) {
  nlohmann::ordered_json env;
  env["moa_commit"] = GitCommit();
  env["libtorch"] = TorchVersion();
  env["mpi"] = parallel::MpiVersion();
  const parallel::DeviceReport report = parallel::DescribeDevice(device);
  env["cuda"] =
      report.cuda.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(report.cuda);
  env["nccl"] =
      report.nccl.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(report.nccl);
  std::vector<std::string> hosts;
  for (const auto& d : devices) {
    const std::string host = d["host"].get<std::string>();
    if (std::find(hosts.begin(), hosts.end(), host) == hosts.end()) hosts.push_back(host);
  }
  env["hostnames"] = hosts;
  env["world"] = {{"size", mesh.world_size},
                  {"dp", mesh.dp},
                  {"ep", mesh.ep},
                  {"ranks_per_node", mesh.local_size},
                  {"backend", backend}};
  env["threads"] = threads;
  env["openmp_wait"] = OpenMpWaitSetting();
  env["allocator"] = ActiveAllocator();
  env["device"] = device.is_cuda() ? "cuda" : "cpu";
  env["precision"] = config.train.precision;
  env["devices"] = devices;
  return env;
}

absl::StatusOr<RecordsUpTo> ReadRecordsUpTo(const std::string& path, int64_t step) {
  std::ifstream in(path);
  RecordsUpTo read;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      return absl::DataLossError(path + " has a malformed line: " + line.substr(0, 80));
    }
    if (!record.is_object() || !record.contains("step") || !record["step"].is_number_integer()) {
      return absl::DataLossError(
          path + " has a line that is not a record with a step: " + line.substr(0, 80));
    }
    if (record.value("swad", false)) continue;  // a finished run's SWAD record is made anew
    if (record["step"].get<int64_t>() > step) break;
    read.records.push_back(record);
    read.lines += line + "\n";
  }
  return read;
}

absl::StatusOr<RecordsUpTo> ReadRecordsToResume(const std::string& path, int64_t step) {
  // The state is saved after its step's record, so a run with a state has a record up to it.
  const auto lost = [&](const std::string& what) {
    return absl::DataLossError(path + " " + what + ": the run's checkpoint is at step " +
                               std::to_string(step) +
                               ", and resuming needs its records up to there");
  };
  if (!std::filesystem::is_regular_file(path)) return lost("cannot be read");
  MOA_ASSIGN_OR_RETURN(RecordsUpTo read, ReadRecordsUpTo(path, step));
  if (read.records.empty()) return lost("holds no record");
  return read;
}

absl::Status PrepareRunDir(const std::string& dir, const RunConfig& config,
                           const nlohmann::ordered_json& env) {
  MOA_RETURN_IF_ERROR(MakeDirs(dir + "/checkpoints"));
  // A killed write leaves its temporary file (NAME.tmp.PID); this run holds the folder's lock,
  // so no live writer owns one.
  for (const std::string& folder : {dir, dir + "/checkpoints"}) {
    for (const auto& entry : std::filesystem::directory_iterator(folder)) {
      if (entry.is_regular_file() &&
          entry.path().filename().string().find(".tmp.") != std::string::npos) {
        std::filesystem::remove(entry.path());
      }
    }
  }
  MOA_RETURN_IF_ERROR(WriteFileAtomically(dir + "/config.ini", config.resolved_ini));
  MOA_RETURN_IF_ERROR(WriteFileAtomically(dir + "/env.json", env.dump(2) + "\n"));
  if (config.train.resume.empty()) std::filesystem::remove(dir + "/results.jsonl");
  std::filesystem::remove(dir + "/done");
  return absl::OkStatus();
}

absl::Status SaveCheckpoint(const torch::nn::Module& model, const std::string& dir,
                            const std::string& name, int64_t step, double validation,
                            const RunConfig& config) {
  nlohmann::ordered_json meta;
  meta["step"] = step;
  if (validation >= 0) meta["training_domain_validation_acc"] = validation;
  meta["method"] = config.adapter.method;
  const std::string base = dir + "/checkpoints/" + name;
  MOA_RETURN_IF_ERROR(
      SaveTrainable(model, base + ".safetensors",
                    {{"moa_step", std::to_string(step)}, {"moa_config", config.resolved_ini}}));
  return WriteFileAtomically(base + ".json", meta.dump(2) + "\n");
}

}  // namespace moa::trainer
