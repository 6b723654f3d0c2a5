#include "data/image_folder.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include "data/image_io.h"

namespace moa::data {
namespace {

namespace fs = std::filesystem;

// torchvision.datasets.folder.IMG_EXTENSIONS.
bool HasImageExtension(const std::string& name) {
  static const char* kExtensions[] = {".jpg", ".jpeg", ".png",  ".ppm", ".bmp",
                                      ".pgm", ".tif",  ".tiff", ".webp"};
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* ext : kExtensions) {
    const size_t n = std::char_traits<char>::length(ext);
    if (lower.size() >= n && lower.compare(lower.size() - n, n, ext) == 0) return true;
  }
  return false;
}

// The sorted names of the sub-folders of `dir` (following links, as os.scandir().is_dir()).
absl::StatusOr<std::vector<std::string>> SortedSubfolders(const std::string& dir) {
  std::error_code error;
  std::vector<std::string> names;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    if (it->is_directory(error)) names.push_back(it->path().filename().string());
  }
  if (error) return absl::NotFoundError(dir + ": cannot list the folder (" + error.message() + ")");
  std::sort(names.begin(), names.end());
  return names;
}

// torchvision's make_dataset for one class: sorted(os.walk(dir, followlinks=True)), each
// folder's files sorted, kept when the extension is an image's.
absl::StatusOr<std::vector<std::string>> ImagesUnder(const std::string& dir) {
  std::vector<std::string> folders = {dir};
  std::error_code error;
  for (fs::recursive_directory_iterator
           it(dir, fs::directory_options::follow_directory_symlink, error),
       end;
       !error && it != end; it.increment(error)) {
    if (it->is_directory(error)) folders.push_back(it->path().string());
  }
  if (error) return absl::NotFoundError(dir + ": cannot list the folder (" + error.message() + ")");
  std::sort(folders.begin(), folders.end());
  std::vector<std::string> files;
  for (const std::string& folder : folders) {
    std::vector<std::string> names;
    for (fs::directory_iterator it(folder, error), end; !error && it != end; it.increment(error)) {
      const std::string name = it->path().filename().string();
      if (!it->is_directory(error) && HasImageExtension(name)) names.push_back(name);
    }
    if (error) return absl::NotFoundError(folder + ": cannot list the folder");
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) files.push_back(folder + "/" + name);
  }
  return files;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& n : names) text += (text.empty() ? "" : ", ") + n;
  return text;
}

}  // namespace

absl::StatusOr<FolderLayout> ScanImageFolder(const std::string& root,
                                             const std::vector<std::string>& expected_environments,
                                             int64_t expected_classes) {
  std::error_code error;
  if (!fs::is_directory(root, error)) {
    return absl::NotFoundError("dataset folder " + root + " does not exist");
  }
  absl::StatusOr<std::vector<std::string>> environments = SortedSubfolders(root);
  if (!environments.ok()) return environments.status();
  if (!expected_environments.empty()) {
    std::vector<std::string> expected = expected_environments;
    std::sort(expected.begin(), expected.end());
    std::vector<std::string> missing, unexpected;
    std::set_difference(expected.begin(), expected.end(), environments->begin(),
                        environments->end(), std::back_inserter(missing));
    std::set_difference(environments->begin(), environments->end(), expected.begin(),
                        expected.end(), std::back_inserter(unexpected));
    if (!missing.empty() || !unexpected.empty()) {
      std::string message = root + ": expected the environment folders " + JoinNames(expected);
      if (!missing.empty()) message += "; missing: " + JoinNames(missing);
      if (!unexpected.empty()) message += "; unexpected: " + JoinNames(unexpected);
      return absl::NotFoundError(message);
    }
  }
  if (environments->empty()) {
    return absl::NotFoundError(root + " has no environment folders (expected " + root +
                               "/<environment>/<class>/<image>)");
  }

  FolderLayout layout;
  layout.root = root;
  std::vector<std::vector<std::string>> classes_per_env;
  for (const std::string& env : *environments) {
    absl::StatusOr<std::vector<std::string>> classes = SortedSubfolders(root + "/" + env);
    if (!classes.ok()) return classes.status();
    classes_per_env.push_back(*classes);
    for (const std::string& c : *classes) layout.classes.push_back(c);
  }
  std::sort(layout.classes.begin(), layout.classes.end());
  layout.classes.erase(std::unique(layout.classes.begin(), layout.classes.end()),
                       layout.classes.end());
  std::vector<std::string> missing;
  for (size_t e = 0; e < environments->size(); ++e) {
    for (const std::string& c : layout.classes) {
      if (!std::binary_search(classes_per_env[e].begin(), classes_per_env[e].end(), c)) {
        missing.push_back(root + "/" + (*environments)[e] + "/" + c);
      }
    }
  }
  if (!missing.empty()) {
    return absl::NotFoundError("class folders missing (every environment needs every class): " +
                               JoinNames(missing));
  }
  if (layout.classes.empty()) {
    return absl::NotFoundError(root + ": the environment folders have no class folders");
  }
  if (expected_classes > 0 && static_cast<int64_t>(layout.classes.size()) != expected_classes) {
    return absl::InvalidArgumentError(
        root + " has " + std::to_string(layout.classes.size()) + " classes (" +
        JoinNames(layout.classes) + ") where the dataset has " + std::to_string(expected_classes) +
        "; use data.dataset = ImageFolder for other data");
  }

  std::vector<std::string> empty;
  for (const std::string& env : *environments) {
    FolderEnvironment environment;
    environment.name = env;
    for (size_t c = 0; c < layout.classes.size(); ++c) {
      const std::string dir = root + "/" + env + "/" + layout.classes[c];
      absl::StatusOr<std::vector<std::string>> files = ImagesUnder(dir);
      if (!files.ok()) return files.status();
      if (files->empty()) empty.push_back(dir);
      for (std::string& file : *files) {
        environment.files.push_back(std::move(file));
        environment.labels.push_back(static_cast<int64_t>(c));
      }
    }
    layout.environments.push_back(std::move(environment));
  }
  if (!empty.empty()) {
    return absl::NotFoundError("class folders without images (.jpg, .jpeg, .png, ...): " +
                               JoinNames(empty));
  }
  return layout;
}

absl::StatusOr<ImageCheck> ParseImageCheck(const std::string& text) {
  if (text == "none") return ImageCheck::kNone;
  if (text == "header") return ImageCheck::kHeader;
  if (text == "full") return ImageCheck::kFull;
  return absl::InvalidArgumentError("data.check must be none, header or full, not '" + text + "'");
}

void ParallelFor(int64_t n, int workers, const std::function<void(int64_t)>& fn) {
  std::atomic<int64_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto work = [&] {
    for (int64_t i = next++; i < n; i = next++) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
        next = n;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 1; t < std::min<int64_t>(workers, n); ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
  if (failure) std::rethrow_exception(failure);
}

CheckReport CheckImages(const std::vector<std::string>& files, ImageCheck check, int workers) {
  CheckReport report;
  if (check == ImageCheck::kNone) return report;
  std::vector<std::string> messages(files.size());
  ParallelFor(static_cast<int64_t>(files.size()), workers, [&](int64_t i) {
    const absl::Status status = check == ImageCheck::kFull ? DecodeImageFile(files[i]).status()
                                                           : ReadImageHeader(files[i]).status();
    if (!status.ok()) messages[i] = std::string(status.message());
  });
  report.checked = static_cast<int64_t>(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    if (!messages[i].empty()) report.failures.push_back({files[i], messages[i]});
  }
  return report;
}

std::string DescribeFailures(const CheckReport& report, size_t limit) {
  std::string text = std::to_string(report.failures.size()) + " of " +
                     std::to_string(report.checked) + " images cannot be read:";
  for (size_t i = 0; i < report.failures.size() && i < limit; ++i) {
    text += "\n  " + report.failures[i].message;
  }
  if (report.failures.size() > limit) {
    text += "\n  ... and " + std::to_string(report.failures.size() - limit) + " more";
  }
  return text;
}

}  // namespace moa::data
