// Atomic file writes, the status macros, thread counts and MD5.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>

#include "common/files.h"
#include "common/hash.h"
#include "common/status_macros.h"
#include "common/stop_signals.h"
#include "common/threads.h"
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
}

TEST(ThreadsTest, ExplicitCountWinsElseCoresPerRank) {
  EXPECT_EQ(ResolveThreadCount(3, 8), 3);
  EXPECT_GE(ResolveThreadCount(0, 1), 1);
  EXPECT_EQ(ResolveThreadCount(0, 100000), 1);
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
