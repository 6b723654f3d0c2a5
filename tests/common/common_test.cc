// Atomic file writes and their injected faults, the status macros, thread counts and MD5.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <thread>

#include "common/files.h"
#include "common/hash.h"
#include "common/status_macros.h"
#include "common/stop_signals.h"
#include "common/threads.h"
#include "common/write_faults.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

absl::StatusOr<int> Half(int x) {
  if (x % 2) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  MOA_ASSIGN_OR_RETURN(int h, Half(x));
  MOA_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

// RFC 1321's test suite; Md5Mod2To31 is int(hexdigest, 16) % 2**31, the digest's last four bytes
// with the top bit cleared (DomainBed's seed_hash values are checked in the data tests).
TEST(HashTest, Md5MatchesRfc1321AndSeedHashTakesTheLow31Bits) {
  EXPECT_EQ(Md5Hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(Md5Hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(Md5Hex("message digest"), "f96b697d7cb7938d525a2f31aaf161d0");
  EXPECT_EQ(
      Md5Hex("12345678901234567890123456789012345678901234567890123456789012345678901234567890"),
      "57edf4a22be3c955ac49da2e2107b67a");
  // 0x...7f72 of "abc": the last 4 bytes 0x28e17f72, and 0x28e17f72 & 0x7fffffff.
  EXPECT_EQ(Md5Mod2To31("abc"), 0x28e17f72u);
  // "d0" ends in 0xaaf161d0; its top bit is cleared.
  EXPECT_EQ(Md5Mod2To31("message digest"), 0xaaf161d0u & 0x7fffffffu);
}

TEST(StatusMacrosTest, PropagateErrorsAndValues) {
  EXPECT_EQ(*Quarter(12), 3);
  EXPECT_EQ(Quarter(6).status().message(), "odd");
  auto check = [](int x) -> absl::Status {
    MOA_RETURN_IF_ERROR(Half(x).status());
    return absl::OkStatus();
  };
  EXPECT_TRUE(check(2).ok());
  EXPECT_FALSE(check(3).ok());
}

TEST(FilesTest, AtomicWriteAppendAndRead) {
  test::TempDir dir;
  const std::string path = dir.File("a.txt");
  MOA_ASSERT_OK(WriteFileAtomically(path, "one"));
  MOA_ASSERT_OK(WriteFileAtomically(path, "two"));
  MOA_ASSERT_OK_AND_ASSIGN(std::string text, ReadFile(path));
  EXPECT_EQ(text, "two");
  MOA_ASSERT_OK(AppendLineAtomically(dir.File("l.jsonl"), "{\"a\":1}"));
  MOA_ASSERT_OK(AppendLineAtomically(dir.File("l.jsonl"), "{\"a\":2}"));
  MOA_ASSERT_OK_AND_ASSIGN(text, ReadFile(dir.File("l.jsonl")));
  EXPECT_EQ(text, "{\"a\":1}\n{\"a\":2}\n");
  // No temporary file is left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    files += e.is_regular_file();
  EXPECT_EQ(files, 2);
  EXPECT_FALSE(WriteFileAtomically(dir.File("no/such/dir/x"), "x").ok());
  auto missing = ReadFile(dir.File("missing"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("missing"), std::string::npos);
  auto folder = ReadFile(dir.path());
  ASSERT_FALSE(folder.ok()) << "a folder read as an empty file";
  EXPECT_NE(folder.status().message().find(dir.path() + " is a folder"), std::string::npos);
}

TEST(FilesTest, AbsolutePathStartsAtTheCurrentFolderAndIsNormalised) {
  test::TempDir dir;
  const std::filesystem::path before = std::filesystem::current_path();
  std::filesystem::create_directories(dir.File("a/b"));
  std::filesystem::current_path(dir.File("a"));
  const std::string folder = std::filesystem::current_path().string();
  EXPECT_EQ(AbsolutePath("b/../c/./d.ini"), folder + "/c/d.ini");
  EXPECT_EQ(AbsolutePath("/x/y/../z"), "/x/z");
  EXPECT_EQ(AbsolutePath(""), "");
  std::filesystem::current_path(before);
}

TEST(WriteFaultTest, ParsesEveryStageAndRefusesMalformedValuesShowingTheForm) {
  MOA_ASSERT_OK_AND_ASSIGN(WriteFault payload,
                           ParseWriteFault("state.safetensors:payload37:2:kill"));
  EXPECT_EQ(payload.file, "state.safetensors");
  EXPECT_EQ(payload.stage, WriteStage::kPayload);
  EXPECT_EQ(payload.payload_percent, 37);
  EXPECT_EQ(payload.nth, 2);
  EXPECT_TRUE(payload.kill);
  MOA_ASSERT_OK_AND_ASSIGN(WriteFault renamed, ParseWriteFault("done:renamed:1:kill"));
  EXPECT_EQ(renamed.stage, WriteStage::kRenamed);
  MOA_ASSERT_OK_AND_ASSIGN(WriteFault full, ParseWriteFault("x:written:3:enospc"));
  EXPECT_EQ(full.stage, WriteStage::kWritten);
  EXPECT_FALSE(full.kill);
  for (const char* bad :
       {"x:renamed:1", "x:payload0:1:kill", "x:payload100:1:kill", "x:payload:1:kill",
        "dir/x:synced:1:kill", "x:later:1:kill", "x:synced:0:kill", "x:synced:1:explode",
        "x:renamed:1:enospc", ":synced:1:kill"}) {
    auto parsed = ParseWriteFault(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_NE(parsed.status().message().find("MOA_INJECT_WRITE_FAULT='" + std::string(bad)),
              std::string::npos)
        << parsed.status();
    EXPECT_NE(parsed.status().message().find("FILE:STAGE:NTH:kill|enospc"), std::string::npos);
  }
}

// An injected full disk on the second write of a file: the error names the file and the cause,
// the first contents stay, no temporary file is left, and other files are written as usual.
TEST(WriteFaultTest, InjectedFullDiskFailsTheNthWriteAndKeepsThePreviousContents) {
  test::TempDir dir;
  for (const char* stage : {"payload50", "written"}) {
    SCOPED_TRACE(stage);
    const std::string name = std::string("starved_") + stage + ".bin";
    ASSERT_EQ(::setenv("MOA_INJECT_WRITE_FAULT", (name + ":" + stage + ":2:enospc").c_str(), 1), 0);
    const std::string path = dir.File(name);
    MOA_ASSERT_OK(WriteFileAtomically(path, "first contents"));
    MOA_ASSERT_OK(WriteFileAtomically(dir.File("other.bin"), "unaffected"));
    const absl::Status second = WriteFileAtomically(path, std::string(1000, 'x'));
    EXPECT_EQ(second.code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(second.message().find(path + " (through " + path + ".tmp."), std::string::npos)
        << second;
    EXPECT_NE(second.message().find("No space left on device"), std::string::npos) << second;
    MOA_ASSERT_OK_AND_ASSIGN(std::string kept, ReadFile(path));
    EXPECT_EQ(kept, "first contents");
    MOA_ASSERT_OK(WriteFileAtomically(path, "third contents"));
    MOA_ASSERT_OK_AND_ASSIGN(kept, ReadFile(path));
    EXPECT_EQ(kept, "third contents");
  }
  ASSERT_EQ(::unsetenv("MOA_INJECT_WRITE_FAULT"), 0);
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
  }
  ASSERT_EQ(::setenv("MOA_INJECT_WRITE_FAULT", "x:nowhere:1:kill", 1), 0);
  const absl::Status malformed = WriteFileAtomically(dir.File("x"), "x");
  ASSERT_EQ(::unsetenv("MOA_INJECT_WRITE_FAULT"), 0);
  EXPECT_NE(malformed.message().find("unknown stage 'nowhere'"), std::string::npos) << malformed;
}

TEST(ThreadsTest, ExplicitCountWinsElseCoresPerRank) {
  EXPECT_EQ(ResolveThreadCount(3, 8), 3);
  EXPECT_GE(ResolveThreadCount(0, 1), 1);
  EXPECT_EQ(ResolveThreadCount(0, 100000), 1);
}

// Decoding threads: explicit wins; on the CPU the cores the compute threads leave (at least one);
// on a GPU the rank's cores but one (at least one).
TEST(ThreadsTest, DataWorkersTakeTheCoresComputeLeaves) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  EXPECT_EQ(ResolveDataWorkers(5, cores, 1, false), 5);
  EXPECT_EQ(ResolveDataWorkers(0, cores, 1, false), 1);
  EXPECT_EQ(ResolveDataWorkers(0, 1, 1, false), std::max(1, cores - 1));
  EXPECT_EQ(ResolveDataWorkers(0, 1, 1, true), std::max(1, cores - 1));
  EXPECT_EQ(ResolveDataWorkers(0, 64, 1, true), std::max(1, cores - 1));  // compute is on the GPU
  EXPECT_EQ(ResolveDataWorkers(0, 1, 100000, true), 1);
}

// How a child process that runs `body` ends: its exit code, or 128 + the signal that ended it.
int EndingOf(const std::function<void()>& body) {
  const pid_t pid = fork();
  if (pid == 0) {
    body();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A first SIGUSR1 or SIGTERM is only noted; a second one ends the process by that signal, and so
// does the grace period running out (SIGALRM); the handlers before come back afterwards.
TEST(StopSignalsTest, FirstSignalAsksSecondOrGraceEnds) {
  for (int signal_number : {SIGUSR1, SIGTERM}) {
    EXPECT_EQ(EndingOf([&] {
                StopSignals signals(/*grace_seconds=*/0);
                if (signals.requested()) _exit(1);
                raise(signal_number);
                _exit(signals.requested() ? 0 : 2);
              }),
              0)
        << signal_number;
    EXPECT_EQ(EndingOf([&] {
                StopSignals signals(0);
                raise(signal_number);
                raise(signal_number);
                _exit(3);  // not reached
              }),
              128 + signal_number);
  }
  EXPECT_EQ(EndingOf([] {
              StopSignals signals(/*grace_seconds=*/1);
              raise(SIGUSR1);
              sleep(5);
              _exit(4);  // not reached: the grace period ends it
            }),
            128 + SIGALRM);
  EXPECT_EQ(EndingOf([] {
              { StopSignals signals(0); }
              raise(SIGUSR1);  // the default action again: the process ends
              _exit(5);
            }),
            128 + SIGUSR1);
}

}  // namespace
}  // namespace moa
