// What the libFuzzer targets of fuzz/ share: the input as text, as lines or words, and an
// in-memory file for the readers that take a path (IDX files, INI configurations, image headers).
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace moa::fuzz {

/// The input bytes as a string (any bytes, NUL included).
std::string InputText(const uint8_t* data, size_t size);

/// `text` cut at every '\n' (a trailing newline adds no empty last line).
std::vector<std::string> SplitLines(const std::string& text);

/// A file that lives in memory (memfd) and is rewritten for every input; `Path()` opens it
/// afresh, from its first byte, wherever a path is expected.
class MemoryFile {
 public:
  MemoryFile();
  ~MemoryFile();
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  /// Replaces the contents.
  void Write(const std::string& contents);
  const std::string& Path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

/// A stream that drops what it is given (deprecation notes, warnings).
std::ostream& NullStream();

}  // namespace moa::fuzz
