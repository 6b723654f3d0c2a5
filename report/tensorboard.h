// TensorBoard event files for a run (RUN_DIR/tb/): TFRecord-framed `Event` protocol buffers with
// scalar summaries, and the scalars of a results.jsonl record (training loss, learning rate,
// images/s, peak memory, every (domain, split) accuracy and loss, the selection criterion, and
// for MoA each layer's share of tokens per expert, dropped tokens and auxiliary loss).
//
//   MOA_ASSIGN_OR_RETURN(auto events, report::EventWriter::Open(run_dir + "/tb"));
//   MOA_RETURN_IF_ERROR(events->WriteScalars(step, report::RecordScalars(record)));
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

namespace moa::report {

using Scalars = std::vector<std::pair<std::string, double>>;

/// The TensorBoard tags and values of one results.jsonl record: train/{loss, lr, step_time,
/// images_per_s, mem_gb}, eval/envE_{in,out}_{acc,loss}, router/layerL/expertX_share,
/// router/layerL/{dropped, aux_loss}; fields that a record lacks are left out.
Scalars RecordScalars(const nlohmann::json& record);

class EventWriter {
 public:
  /// Creates `dir` and a new events.out.tfevents.<seconds>.<host>.<pid> file in it, starting
  /// with the file-version event. A resumed run adds a file; TensorBoard reads them in order.
  static absl::StatusOr<std::unique_ptr<EventWriter>> Open(const std::string& dir);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  /// One event at `step` holding every scalar, flushed to the file.
  absl::Status WriteScalars(int64_t step, const Scalars& scalars);

  const std::string& path() const { return path_; }

 private:
  EventWriter(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  absl::Status WriteRecord(const std::string& data);

  std::string path_;
  std::FILE* file_;
};

}  // namespace moa::report
