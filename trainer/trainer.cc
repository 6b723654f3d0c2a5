// The Runner: set-up, preparation, the step loop, evaluation with checkpoints, SWAD's final
// evaluation and the stop on a signal. About 530 lines: these methods share the run's state
// (model, optimizer, mesh, records), and what does not is in build, coordinator, run_files,
// run_lock, loss_meter, gradient_sync and progress.
#include "trainer/trainer.h"

#include <absl/strings/str_cat.h>

#include <algorithm>

#include "common/allocator.h"
#include "common/error.h"
#include "common/files.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/stop_signals.h"
#include "common/threads.h"
#include "common/timer.h"
#include "common/version.h"
#include "data/stream.h"
#include "moa/autocast.h"
#include "moa/peft.h"
#include "moa/weights.h"
#include "parallel/backend.h"
#include "parallel/device.h"
#include "parallel/mesh.h"
#include "parallel/mpi_communicator.h"
#include "report/tensorboard.h"
#include "trainer/coordinator.h"
#include "trainer/expert_sharding.h"
#include "trainer/fault_injection.h"
#include "trainer/gradient_sync.h"
#include "trainer/loss_meter.h"
#include "trainer/optimizer.h"
#include "trainer/progress.h"
#include "trainer/run_files.h"
#include "trainer/run_lock.h"
#include "trainer/selection.h"
#include "trainer/state.h"
#include "trainer/swad.h"

namespace moa::trainer {
namespace {

// On a GPU the host reads the loss meter (loss, non-finite steps, stop votes) at least this often.
constexpr int64_t kGpuReadEvery = 10;

// The training loop shared by train and pretrain. The step numbers in comments are those of
// docs/architecture.md, One training step.
class Runner {
 public:
  Runner(const RunConfig& config, bool pretrain, parallel::Communicator& launcher_world)
      : config_(config), pretrain_(pretrain), launcher_world_(launcher_world) {}

  absl::StatusOr<RunSummary> Run() {
    MOA_RETURN_IF_ERROR(SetUp());
    absl::Status loop_status;
    MOA_RETURN_IF_ERROR(CatchToStatus("training", [&] { loop_status = Loop(); }));
    MOA_RETURN_IF_ERROR(loop_status);
    RunSummary summary;
    summary.records = records_;
    summary.run_dir = run_dir_;
    if (!lead_) return summary;
    if (pretrain_) {
      const std::string path = run_dir_ + "/backbone.safetensors";
      MOA_RETURN_IF_ERROR(SaveBackbone(*model_, path,
                                       {{"format", "pt"},
                                        {"moa_arch", config_.model.arch},
                                        {"moa_config", config_.resolved_ini},
                                        {"moa_commit", GitCommit()}}));
      Log(LogLevel::kInfo) << "saved backbone to " << path;
    }
    if (!test_envs_.empty()) {
      MOA_ASSIGN_OR_RETURN(std::vector<Selection> selections,
                           SelectRunModels(records_, swad_record_, train_envs_, test_envs_));
      std::vector<std::string> names;
      for (int64_t t : test_envs_) names.push_back(dataset_.domains[t].name);
      summary.selection_table = FormatSelectionTable(selections, names);
      MOA_RETURN_IF_ERROR(
          WriteFileAtomically(run_dir_ + "/selection.txt", summary.selection_table));
    }
    MOA_RETURN_IF_ERROR(WriteFileAtomically(run_dir_ + "/done", "done\n"));
    return summary;
  }

 private:
  // The mesh and its communicators, the device, the data, the model and the run directory.
  absl::Status SetUp() {
    MOA_ASSIGN_OR_RETURN(parallel::MeshLayout layout,
                         parallel::DetectMeshLayout(config_.parallel.dp, config_.parallel.ep));
    MOA_RETURN_IF_ERROR(CheckLayout(config_, layout));
    MOA_ASSIGN_OR_RETURN(fault_, InjectedFault::FromEnvironment());
    lead_ = layout.rank == 0;
    if (lead_) {  // before anything is written: no other live run, and no finished one lost
      MOA_ASSIGN_OR_RETURN(lock_, RunLock::Acquire(config_.output.dir));
      MOA_RETURN_IF_ERROR(ClaimRunDir(config_));
    }
    threads_ = ResolveThreadCount(static_cast<int>(config_.train.threads),
                                  static_cast<int>(layout.local_size));
    ApplyThreadCount(threads_);
    MOA_ASSIGN_OR_RETURN(device_, parallel::SelectDevice(config_.parallel.device, layout));
    config_.data.workers =
        ResolveDataWorkers(static_cast<int>(config_.data.workers), threads_,
                           static_cast<int>(layout.local_size), device_.is_cuda());
    // TF32 is off in fp32 runs (fp32 means fp32, and GPU runs then equal CPU runs to rounding).
    parallel::SetKernelPolicy(/*allow_tf32=*/config_.train.precision != "fp32",
                              config_.train.deterministic);
    if (config_.train.precision == "bf16" && !device_.is_cuda() &&
        !parallel::CpuHasBf16MatrixUnits() && lead_) {
      Log(LogLevel::kWarning)
          << "train.precision = bf16 on a CPU without bfloat16 matrix instructions (AVX512-BF16, "
             "AMX or Arm BF16): LibTorch's bf16 matrix products run here in scalar code, about "
             "85x slower than fp32; train.precision = fp32 is the fast choice on this machine";
    }
    MOA_ASSIGN_OR_RETURN(parallel::Backend backend,
                         parallel::ResolveBackend(config_.parallel.backend, device_, layout,
                                                  parallel::VisibleGpus()));
    MOA_ASSIGN_OR_RETURN(mesh_, parallel::Mesh::Create(layout, launcher_world_, backend, device_));
    world_ = &mesh_->world();

    MOA_ASSIGN_OR_RETURN(data::DatasetInfo info, data::LookupDataset(config_.data.dataset));
    MOA_ASSIGN_OR_RETURN(data::LoadOptions load, DatasetOptions(config_));
    Stopwatch load_time;
    // Each run seeds itself, so a test environment's run does not depend on runs before it (the
    // reference seeds once for all test environments: docs/method.md, Quirks Q12).
    torch::manual_seed(static_cast<uint64_t>(config_.train.seed));
    MOA_ASSIGN_OR_RETURN(dataset_, data::LoadDataset(load));
    MOA_RETURN_IF_ERROR(data::CompleteInfo(dataset_, config_.data.test_envs, &info));
    // Model selection reads every environment's `out` split (training-domain validation, the
    // test-domain oracle), so an empty one is refused before anything trains.
    for (const data::Domain& domain : dataset_.domains) {
      if (domain.out.empty() || domain.in.empty()) {
        return absl::InvalidArgumentError(
            "environment " + domain.name + " has " + std::to_string(domain.size()) +
            " images, too few for both an in and an out split at data.holdout_fraction = " +
            absl::StrCat(config_.data.holdout_fraction) +
            "; model selection needs both (add images or change data.holdout_fraction)");
      }
    }
    for (int64_t e = 0; e < static_cast<int64_t>(dataset_.domains.size()); ++e) {
      const bool is_test = std::find(config_.data.test_envs.begin(), config_.data.test_envs.end(),
                                     e) != config_.data.test_envs.end();
      (is_test && !pretrain_ ? test_envs_ : train_envs_).push_back(e);
    }
    routing_ = TrainRoutingContext(config_, static_cast<int64_t>(train_envs_.size()), world_);
    MOA_ASSIGN_OR_RETURN(model_, BuildModel(config_, info, routing_));
    model_->to(device_);
    Log(LogLevel::kInfo) << "loaded " << dataset_.name << ": " << DescribeDomains(dataset_)
                         << " in " << FormatDuration(load_time.Seconds());

    run_dir_ = config_.output.dir;
    MOA_ASSIGN_OR_RETURN(nlohmann::ordered_json devices, GatherDeviceReports(device_, *world_));
    if (lead_) {  // the coordinator alone writes run files
      run_env_ = EnvJson(config_, layout, world_->backend_name(), threads_, device_, devices);
      // A resumed run's folder is rewritten only once its state has loaded (PrepareTraining), so
      // a resume refused for its checkpoint leaves the run as it was.
      if (config_.train.resume.empty()) MOA_RETURN_IF_ERROR(OpenRunDir());
    }
    const ParameterCounts counts = CountParameters(*model_);
    Log(LogLevel::kInfo) << "model " << config_.model.arch << " / " << config_.adapter.method
                         << ": " << counts.total() << " parameters, " << counts.trainable
                         << " trainable; " << threads_ << " compute threads, "
                         << (dataset_.domains.front().from_files()
                                 ? std::to_string(config_.data.workers) + " image decoding thread" +
                                       (config_.data.workers == 1 ? "" : "s")
                                 : std::string("data in memory (one thread assembles batches)"))
                         << "; "
                         << (device_.is_cuda() ? "GPU " + std::to_string(device_.index()) + " (" +
                                                     parallel::DescribeDevice(device_).name + ")"
                                               : std::string("CPU"))
                         << ", " << config_.train.precision << "; memory allocator "
                         << ActiveAllocator();
    return absl::OkStatus();
  }

  // The run folder's config.ini and env.json, the stale files gone, and the TensorBoard writer.
  absl::Status OpenRunDir() {
    MOA_RETURN_IF_ERROR(PrepareRunDir(run_dir_, config_, run_env_));
    if (config_.output.tensorboard) {
      MOA_ASSIGN_OR_RETURN(events_, report::EventWriter::Open(run_dir_ + "/tb"));
    }
    return absl::OkStatus();
  }

  // The optimizer, SWAD, the resumed state, expert sharding and the gradient reduction.
  absl::Status PrepareTraining() {
    moa_layers_ = MoaLayers(*model_);
    named_ = TrainableParameters(*model_);
    // Only trainable tensors reach the optimizer (the reference hands it frozen ones too:
    // docs/method.md, Quirks Q16).
    for (auto& [name, p] : named_) params_.push_back(p);
    if (params_.empty()) return absl::InvalidArgumentError("the model has no trainable parameter");
    optimizer_ = MakeOptimizer(config_.optim, params_);
    if (config_.swad.enabled) {
      swad_ = std::make_unique<Swad>(
          named_, config_.swad.n_converge, config_.swad.n_tolerance, config_.swad.tolerance_ratio,
          config_.swad.rule == "reference" ? SwadRule::kReference : SwadRule::kPaper);
    }
    if (!config_.train.resume.empty()) {
      const std::string state_path = config_.train.resume + "/checkpoints/state.safetensors";
      MOA_ASSIGN_OR_RETURN(TrainState state, LoadTrainState(state_path, named_, *optimizer_));
      first_step_ = state.step + 1;
      if (swad_) swad_->Import(state.extra_tensors, state.extra_metadata);
      best_validation_ = state.best_validation;
      resumed_metadata_ = state.extra_metadata;
      // A killed run may have written records after its last state: they are dropped.
      const std::string results = config_.train.resume + "/results.jsonl";
      MOA_ASSIGN_OR_RETURN(RecordsUpTo resumed, ReadRecordsToResume(results, state.step));
      records_ = std::move(resumed.records);
      if (lead_) {
        MOA_RETURN_IF_ERROR(OpenRunDir());
        MOA_RETURN_IF_ERROR(WriteFileAtomically(run_dir_ + "/results.jsonl", resumed.lines));
      }
      Log(LogLevel::kInfo) << "resumed " << config_.train.resume << " after step " << state.step;
    }
    const parallel::MeshLayout& layout = mesh_->layout();
    if (layout.ep > 1) {
      ExpertShardingOptions options;
      options.mode = config_.parallel.expert_mode;
      options.tokens_per_rank = config_.data.batch_size / layout.world_size *
                                static_cast<int64_t>(train_envs_.size()) * TokensPerSample();
      options.link_gb_per_s = config_.parallel.link_gb_per_s;
      options.gflops = config_.parallel.gflops;
      options.refresh_every_step = config_.swad.enabled || config_.train.check_replicas;
      options.device = device_;
      options.bf16 = config_.train.precision == "bf16";
      options.fused_adam = config_.optim.fused;
      MOA_ASSIGN_OR_RETURN(sharding_, ExpertSharding::Create(moa_layers_, *mesh_, options));
      // The planner's timing tensors are not the run's: mem_gb starts after them.
      parallel::ResetPeakMemory(device_);
    }
    const int64_t bucket_bytes = static_cast<int64_t>(config_.parallel.bucket_mb * (1 << 20));
    MOA_ASSIGN_OR_RETURN(gradients_,
                         GradientSync::Create(params_, sharding_.get(), *mesh_, bucket_bytes));
    return absl::OkStatus();
  }

  absl::Status Loop() {
    MOA_RETURN_IF_ERROR(PrepareTraining());
    data::DomainStream stream(dataset_, TrainStreamOptions(config_, train_envs_, world_->rank(),
                                                           world_->size(), first_step_, device_));
    int64_t min_in = INT64_MAX;
    for (int64_t e : train_envs_) min_in = std::min<int64_t>(min_in, dataset_.domains[e].in.size());
    const int64_t steps = config_.train.steps;
    const int64_t freq = config_.train.checkpoint_freq;
    const bool bf16 = config_.train.precision == "bf16";
    LossMeter loss_meter(device_);
    loss_meter.Import(resumed_metadata_);
    MOA_RETURN_IF_ERROR(ImportRouterStats(moa_layers_, resumed_metadata_, lead_));
    StopSignals signals(static_cast<int>(config_.train.stop_grace));
    double step_time_sum = 0;
    int64_t interval_images = 0;
    Stopwatch run_clock, interval_clock;
    model_->train();
    for (int64_t step = first_step_; step < steps; ++step) {
      Stopwatch step_clock;
      data::Batch batch = stream.Next();  // 1. this rank's slice of every domain's minibatch
      const torch::Tensor images = batch.images.to(device_, /*non_blocking=*/true);
      const torch::Tensor labels = batch.labels.to(device_, /*non_blocking=*/true);
      routing_->step = step;
      torch::Tensor logits;
      {
        AutocastScope autocast(device_, bf16);
        logits = model_->forward(images);  // 2. forward
      }
      torch::Tensor loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat32), labels);
      if (config_.moa.aux_loss && !moa_layers_.empty()) loss = loss + AuxiliaryLoss(*model_);
      fault_.Apply(world_->rank(), step, &loss);  // tests of failure handling only
      optimizer_->zero_grad();
      loss.backward();                            // 4. backward, gradients bucketed as they come
      MOA_RETURN_IF_ERROR(gradients_->Finish());  // 5. gradient averaging
      sync_seconds_ += gradients_->last_wait_seconds();
      MOA_ASSIGN_OR_RETURN(torch::Tensor skip,
                           loss_meter.Add(loss, *world_, step, signals.requested()));
      StepOptimizer(*optimizer_, config_.optim.fused, skip);  // 6. skipped on a non-finite loss
      const bool checkpoint = step % freq == 0 || step == steps - 1;
      const bool log_now = config_.train.log_every > 0 && step % config_.train.log_every == 0;
      // A host read: on the CPU it costs nothing; a GPU's queue drains, so there it happens at
      // log lines, evaluations and every kGpuReadEvery steps (a stop request or a non-finite
      // loss is acted on within those steps; every rank reads at the same steps).
      const bool read_on_gpu = checkpoint || log_now || swad_ || config_.train.check_replicas ||
                               (step + 1) % kGpuReadEvery == 0;
      if (!device_.is_cuda() || read_on_gpu) MOA_RETURN_IF_ERROR(loss_meter.Read());
      // 7. SWAD averages every rank's copy of every expert each step, and the replica check
      // compares them: both need the holders' current experts.
      if (sharding_ && (swad_ || config_.train.check_replicas)) {
        MOA_RETURN_IF_ERROR(sharding_->Refresh(nullptr));
      }
      if (config_.train.check_replicas) MOA_RETURN_IF_ERROR(CheckReplicas(params_, *world_, step));
      if (swad_) swad_->Step();
      step_time_sum += step_clock.Seconds();
      train_seconds_ += step_clock.Seconds();
      ++interval_steps_;
      interval_images += batch.images.size(0) * world_->size();  // the global batch
      const double images_per_s = interval_images / std::max(1e-9, interval_clock.Seconds());
      if (log_now && !checkpoint) {
        Log(LogLevel::kInfo) << FormatStepLine(step, steps, loss_meter.mean(), images_per_s,
                                               Eta(step));
      }
      if (!checkpoint) {
        if (loss_meter.stop_requested()) return Stop(step, &loss_meter);
        continue;
      }

      nlohmann::ordered_json record;
      record["step"] = step;
      record["epoch"] =
          static_cast<double>(step) * config_.data.batch_size / static_cast<double>(min_in);
      record["loss"] = loss_meter.mean();
      record["step_time"] = step_time_sum / interval_steps_;
      record["images_per_s"] = images_per_s;
      record["lr"] = optimizer_->param_groups()[0].options().get_lr();
      MOA_ASSIGN_OR_RETURN(const bool valley_dead, EvaluateAndSave(step, record, run_clock));
      if (valley_dead) {
        Log(LogLevel::kInfo) << "SWAD: the loss valley is dead after step " << step
                             << " (validation loss above " << swad_->valley().threshold() << " for "
                             << config_.swad.n_tolerance << " evaluations); training stops early";
        break;
      }
      step_time_sum = 0;
      loss_meter.Reset();
      interval_steps_ = interval_images = 0;
      interval_clock.Reset();
      // The evaluation saved the state: nothing more to save before stopping.
      if (loss_meter.stop_requested()) return Stop(step, nullptr);
    }
    if (swad_) MOA_RETURN_IF_ERROR(EvaluateSwad(records_.back()["step"].get<int64_t>()));
    return absl::OkStatus();
  }

  // 8 and 9: evaluates every (domain, split), records it, updates model selection and writes the
  // checkpoints. Returns true when SWAD's loss valley is dead (training stops).
  absl::StatusOr<bool> EvaluateAndSave(int64_t step, nlohmann::ordered_json& record,
                                       const Stopwatch& run_clock) {
    Stopwatch eval_clock;
    // Evaluation and checkpoints see every expert as its holder trained it.
    if (sharding_) MOA_RETURN_IF_ERROR(sharding_->Refresh(optimizer_.get()));
    Evaluate(record);
    eval_seconds_ += eval_clock.Seconds();
    ++evals_done_;
    model_->train();
    record["mem_gb"] = static_cast<double>(parallel::PeakMemoryBytes(device_)) / (1 << 30);
    if (!moa_layers_.empty()) {
      nlohmann::ordered_json layers;
      MOA_RETURN_IF_ERROR(ReduceRouterStats(moa_layers_, *world_, &layers));
      record["router"] = layers;
    }
    record["args"] = ArgsJson(config_);
    record["hparams"] = HparamsJson(config_);
    record["sync_time"] = sync_seconds_ / interval_steps_;
    sync_seconds_ = 0;
    records_.push_back(nlohmann::json::parse(record.dump()));
    if (lead_) {
      MOA_RETURN_IF_ERROR(AppendLineAtomically(run_dir_ + "/results.jsonl", record.dump()));
      std::vector<std::string> names;
      for (const data::Domain& d : dataset_.domains) names.push_back(d.name);
      Log(LogLevel::kInfo) << FormatEvaluation(record, names, test_envs_, config_.train.steps,
                                               run_clock.Seconds(), Eta(step));
      if (events_) MOA_RETURN_IF_ERROR(WriteEvents(step));
    }
    if (lead_ && !test_envs_.empty() && config_.output.save != "none") {
      MOA_ASSIGN_OR_RETURN(double validation,
                           TrainingDomainValidation(records_.back(), train_envs_));
      // Strict: ties keep the earliest record, the same one the report selects. The reference
      // saves on `<=` (the latest of a tie) while reporting the earliest
      // (docs/method.md, Quirks Q10); here the saved checkpoint is always the reported one.
      if (validation > best_validation_) {
        best_validation_ = validation;
        MOA_RETURN_IF_ERROR(
            SaveCheckpoint(*model_, run_dir_, "selected", step, validation, config_));
      }
    }
    bool valley_dead = false;
    if (swad_) {
      double loss = 0;  // the training domains' mean validation loss
      for (int64_t e : train_envs_)
        loss += record["env" + std::to_string(e) + "_out_loss"].get<double>();
      valley_dead = swad_->CloseSegment(loss / static_cast<double>(train_envs_.size()));
    }
    if (lead_) {
      TrainState state{step, best_validation_, {}, {}};
      if (swad_) swad_->Export(&state.extra_tensors, &state.extra_metadata);
      MOA_RETURN_IF_ERROR(
          SaveTrainState(run_dir_ + "/checkpoints/state.safetensors", named_, *optimizer_, state));
    }
    if (sharding_) sharding_->ForgetForeignState(*optimizer_);
    if (lead_ && config_.output.save == "all") {
      MOA_RETURN_IF_ERROR(
          SaveCheckpoint(*model_, run_dir_, "step" + std::to_string(step), step, -1, config_));
    }
    return valley_dead;
  }

  // After a stop signal, every rank at the same step: the full state (with the interval so far,
  // unless an evaluation just saved it) so that `moa train --resume` continues as if
  // uninterrupted, then a status that makes the exit code kPreemptedExitCode.
  absl::Status Stop(int64_t step, const LossMeter* interval) {
    if (interval != nullptr) {
      if (sharding_) MOA_RETURN_IF_ERROR(sharding_->Refresh(optimizer_.get()));
      TrainState state{step, best_validation_, {}, {}};
      MOA_RETURN_IF_ERROR(ExportRouterStats(moa_layers_, *world_, &state.extra_metadata));
      if (lead_) {
        if (swad_) swad_->Export(&state.extra_tensors, &state.extra_metadata);
        interval->Export(&state.extra_metadata);
        MOA_RETURN_IF_ERROR(SaveTrainState(run_dir_ + "/checkpoints/state.safetensors", named_,
                                           *optimizer_, state));
      }
    }
    const absl::Status stopped = StoppedStatus(step, run_dir_);
    // Said and unlocked before the barrier: once one rank exits, mpirun may end the others.
    if (lead_) Log(LogLevel::kWarning) << stopped.message();
    lock_.reset();
    MOA_RETURN_IF_ERROR(world_->Barrier());  // no rank exits before the state is on disk
    return stopped;
  }

  // The last record's scalars and the selection criterion, as TensorBoard events.
  absl::Status WriteEvents(int64_t step) {
    report::Scalars scalars = report::RecordScalars(records_.back());
    if (!test_envs_.empty()) {
      MOA_ASSIGN_OR_RETURN(const double criterion,
                           TrainingDomainValidation(records_.back(), train_envs_));
      scalars.emplace_back("selection/training_domain_validation_acc", criterion);
    }
    return events_->WriteScalars(step, scalars);
  }

  // Evaluates the SWAD average, appends it to results.jsonl as its own record and saves it.
  absl::Status EvaluateSwad(int64_t last_step) {
    const std::map<std::string, torch::Tensor> averaged = swad_->Finish();
    {
      torch::NoGradGuard no_grad;
      for (const auto& [name, p] : named_) p.copy_(averaged.at(name));
    }
    nlohmann::ordered_json record;
    record["step"] = last_step;
    record["swad"] = true;
    record["swad_start_step"] = swad_->start_step();
    record["swad_end_step"] = swad_->end_step();
    record["swad_steps"] = swad_->averaged_steps();
    record["swad_converged"] = swad_->valley().converged();
    Evaluate(record);
    record["args"] = ArgsJson(config_);
    record["hparams"] = HparamsJson(config_);
    swad_record_ = nlohmann::json::parse(record.dump());
    if (lead_) {
      MOA_RETURN_IF_ERROR(AppendLineAtomically(run_dir_ + "/results.jsonl", record.dump()));
      MOA_RETURN_IF_ERROR(
          SaveTrainable(*model_, run_dir_ + "/checkpoints/swad.safetensors",
                        {{"moa_swad_start_step", std::to_string(swad_->start_step())},
                         {"moa_swad_end_step", std::to_string(swad_->end_step())},
                         {"moa_config", config_.resolved_ini}}));
      Log(LogLevel::kInfo) << "SWAD averaged " << swad_->averaged_steps() << " steps ("
                           << swad_->start_step() << " to " << swad_->end_step() << ")";
    }
    return absl::OkStatus();
  }

  // Tokens a sample carries through an adapted layer: the ViT's patches plus its class token.
  int64_t TokensPerSample() const {
    if (config_.model.arch != "vit") return 1;
    const int64_t side = config_.model.img_size / config_.model.patch_size;
    return side * side + 1;
  }

  void Evaluate(nlohmann::ordered_json& record) {
    if (!prefix_cache_)
      prefix_cache_ = std::make_unique<EvalPrefixCache>(config_.eval.prefix_cache_mb << 20);
    ThrowIfError(EvaluateDomains(*model_, dataset_, train_envs_, config_, *world_, record,
                                 prefix_cache_.get()));
  }

  double Eta(int64_t step) const {
    return EtaSeconds(step, config_.train.steps, config_.train.checkpoint_freq, train_seconds_,
                      evals_done_, eval_seconds_);
  }

  RunConfig config_;  // a copy: SetUp resolves data.workers = 0 to a count
  std::unique_ptr<EvalPrefixCache> prefix_cache_;  // the frozen prefix, from one evaluation on
  bool pretrain_;
  parallel::Communicator& launcher_world_;  // MPI (or one process): the launcher's ranks
  InjectedFault fault_;
  nlohmann::ordered_json run_env_;  // env.json, written when the run folder is opened
  std::unique_ptr<RunLock> lock_;
  // The coordinator's TensorBoard writer, on output.dir, with output.tensorboard.
  std::unique_ptr<report::EventWriter> events_;
  std::unique_ptr<parallel::Mesh> mesh_;
  parallel::Communicator* world_ = nullptr;  // the mesh's world: every collective of the run
  torch::Device device_{torch::kCPU};
  bool lead_ = true;
  int threads_ = 1;
  data::DomainDataset dataset_;
  std::vector<int64_t> train_envs_, test_envs_;
  std::shared_ptr<RoutingContext> routing_;  // read by the MoA layers; the step is set here
  std::shared_ptr<ClassifierImpl> model_;
  std::vector<std::shared_ptr<MoaAdapterImpl>> moa_layers_;
  std::vector<std::pair<std::string, torch::Tensor>> named_;  // the trainable tensors
  std::vector<torch::Tensor> params_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<ExpertSharding> sharding_;
  std::unique_ptr<GradientSync> gradients_;
  std::unique_ptr<Swad> swad_;
  int64_t first_step_ = 0;
  double best_validation_ = -1;
  std::map<std::string, std::string> resumed_metadata_;  // the resumed state's
  std::vector<nlohmann::json> records_;
  nlohmann::json swad_record_;
  std::string run_dir_;
  int64_t interval_steps_ = 0;
  double sync_seconds_ = 0;
  double train_seconds_ = 0;
  double eval_seconds_ = 0;
  int64_t evals_done_ = 0;
};

}  // namespace

absl::Status StoppedStatus(int64_t step, const std::string& run_dir) {
  return absl::CancelledError(
      "stopped on a stop signal (SIGUSR1 or SIGTERM) after step " + std::to_string(step) +
      " with the state saved; continue with `moa train --resume " + run_dir + "`");
}

bool IsStopped(const absl::Status& status) { return absl::IsCancelled(status); }

absl::StatusOr<RunSummary> Train(const RunConfig& config, parallel::Communicator* world) {
  std::unique_ptr<parallel::Communicator> self;
  if (world == nullptr) world = (self = parallel::MakeSelfCommunicator()).get();
  return Runner(config, false, *world).Run();
}

absl::StatusOr<RunSummary> Pretrain(const RunConfig& config, parallel::Communicator* world) {
  std::unique_ptr<parallel::Communicator> self;
  if (world == nullptr) world = (self = parallel::MakeSelfCommunicator()).get();
  return Runner(config, true, *world).Run();
}

}  // namespace moa::trainer
