// Event files: each record is its length (uint64, little-endian), the masked CRC-32C of those 8
// bytes, the serialized Event, and the masked CRC-32C of the Event.
#include "report/tensorboard.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "common/status_macros.h"
#include "report/crc32c.h"
#include "report/event.pb.h"

namespace moa::report {
namespace {

double WallTime() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void AppendLittleEndian(uint64_t value, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

void AddIfNumber(const nlohmann::json& record, const char* key, const std::string& tag,
                 Scalars* scalars) {
  const auto found = record.find(key);
  if (found != record.end() && found->is_number()) scalars->emplace_back(tag, found->get<double>());
}

}  // namespace

Scalars RecordScalars(const nlohmann::json& record) {
  Scalars scalars;
  for (const char* key : {"loss", "lr", "step_time", "images_per_s", "mem_gb"}) {
    AddIfNumber(record, key, std::string("train/") + key, &scalars);
  }
  for (auto it = record.begin(); it != record.end(); ++it) {
    const std::string& key = it.key();
    const bool split_score =
        key.rfind("env", 0) == 0 && (key.size() > 4) &&
        (key.find("_acc") != std::string::npos || key.find("_loss") != std::string::npos);
    if (split_score && it->is_number()) scalars.emplace_back("eval/" + key, it->get<double>());
  }
  const auto router = record.find("router");
  if (router != record.end() && router->is_array()) {
    for (const nlohmann::json& layer : *router) {
      const std::string prefix = "router/layer" + std::to_string(layer.value("layer", -1)) + "/";
      const nlohmann::json share = layer.value("share", nlohmann::json::array());
      for (size_t e = 0; e < share.size(); ++e) {
        scalars.emplace_back(prefix + "expert" + std::to_string(e) + "_share",
                             share[e].get<double>());
      }
      AddIfNumber(layer, "dropped", prefix + "dropped", &scalars);
      AddIfNumber(layer, "aux_loss", prefix + "aux_loss", &scalars);
    }
  }
  return scalars;
}

absl::StatusOr<std::unique_ptr<EventWriter>> EventWriter::Open(const std::string& dir) {
  std::error_code made;
  std::filesystem::create_directories(dir, made);
  if (made) return absl::UnavailableError("cannot create directory " + dir + ": " + made.message());
  char host[256] = "localhost";
  ::gethostname(host, sizeof(host) - 1);
  const std::string path = dir + "/events.out.tfevents." +
                           std::to_string(static_cast<int64_t>(WallTime())) + "." + host + "." +
                           std::to_string(::getpid());
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) {
    return absl::UnavailableError("cannot create " + path + ": " + std::strerror(errno));
  }
  std::unique_ptr<EventWriter> writer(new EventWriter(path, file));
  tensorboard::Event version;
  version.set_wall_time(WallTime());
  version.set_file_version("brain.Event:2");
  MOA_RETURN_IF_ERROR(writer->WriteRecord(version.SerializeAsString()));
  return writer;
}

EventWriter::~EventWriter() { std::fclose(file_); }

absl::Status EventWriter::WriteScalars(int64_t step, const Scalars& scalars) {
  tensorboard::Event event;
  event.set_wall_time(WallTime());
  event.set_step(step);
  tensorboard::Summary* summary = event.mutable_summary();
  for (const auto& [tag, value] : scalars) {
    tensorboard::SummaryValue* entry = summary->add_value();
    entry->set_tag(tag);
    entry->set_simple_value(static_cast<float>(value));
  }
  return WriteRecord(event.SerializeAsString());
}

absl::Status EventWriter::WriteRecord(const std::string& data) {
  std::string framed;
  AppendLittleEndian(data.size(), 8, &framed);
  AppendLittleEndian(MaskCrc(Crc32c(framed.data(), 8)), 4, &framed);
  framed += data;
  AppendLittleEndian(MaskCrc(Crc32c(data.data(), data.size())), 4, &framed);
  if (std::fwrite(framed.data(), 1, framed.size(), file_) != framed.size() ||
      std::fflush(file_) != 0) {
    return absl::UnavailableError("cannot write " + path_ + ": " + std::strerror(errno));
  }
  return absl::OkStatus();
}

}  // namespace moa::report
