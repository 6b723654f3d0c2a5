// safetensors: round trips of every dtype, and refusal of malformed files with a message naming
// the problem. (A model's weights through these files: tests/moa/weights_test.cc.)
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

TEST(SafetensorsTest, RoundTripOfEveryDtypeIsExact) {
  test::TempDir dir;
  torch::manual_seed(0);
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"f32", torch::randn({3, 4})},
      {"f64", torch::randn({2}, torch::kFloat64)},
      {"f16", torch::randn({5, 1}).to(torch::kFloat16)},
      {"bf16", torch::randn({2, 2, 2}).to(torch::kBFloat16)},
      {"i64", torch::randint(-1000, 1000, {7}, torch::kInt64)},
      {"i32", torch::randint(-1000, 1000, {7}, torch::kInt32)},
      {"u8", torch::randint(0, 256, {9}, torch::kUInt8)},
      {"bool", torch::randint(0, 2, {4}).to(torch::kBool)},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::zeros({0, 3})},
      {"strided", torch::randn({4, 6}).t()},
  };
  MOA_ASSERT_OK(WriteSafetensors(dir.File("t.safetensors"), tensors, {{"note", "hello"}}));
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile file, ReadSafetensors(dir.File("t.safetensors")));
  ASSERT_EQ(file.tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const torch::Tensor& back = file.tensors.at(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(back, t)) << name;
  }
  EXPECT_EQ(file.metadata.at("note"), "hello");
}

// Builds a file from a header JSON text and a data section.
std::string FileBytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string ErrorOf(const std::string& bytes) {
  auto result = ParseSafetensors(bytes, "bad.safetensors");
  EXPECT_FALSE(result.ok());
  const std::string message(result.status().message());
  EXPECT_NE(message.find("bad.safetensors"), std::string::npos) << message;
  return message;
}

TEST(SafetensorsTest, MalformedFilesAreRefused) {
  const std::string data(16, 'x');
  // A valid file first, so that each case below differs in one thing only.
  auto ok = ParseSafetensors(
      FileBytes(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", data), "ok");
  ASSERT_TRUE(ok.ok()) << ok.status();

  EXPECT_NE(ErrorOf("abc").find("shorter"), std::string::npos);
  std::string past_end = FileBytes("{}", "");
  past_end[0] = static_cast<char>(200);
  EXPECT_NE(ErrorOf(past_end).find("past the end"), std::string::npos);
  EXPECT_NE(ErrorOf(FileBytes("{\"a\":", data)).find("JSON"), std::string::npos);
  EXPECT_NE(ErrorOf(FileBytes(R"({"a":{"dtype":"Q7","shape":[4],"data_offsets":[0,16]}})", data))
                .find("unknown dtype"),
            std::string::npos);
  EXPECT_NE(ErrorOf(FileBytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,32]}})", data))
                .find("outside"),
            std::string::npos);
  EXPECT_NE(ErrorOf(FileBytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", data))
                .find("need 12"),
            std::string::npos);
  EXPECT_NE(ErrorOf(FileBytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              data))
                .find("overlapping"),
            std::string::npos);
  EXPECT_NE(ErrorOf(FileBytes(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", data))
                .find("shape"),
            std::string::npos);
  // Empty, but its other sizes multiply past 2^40: LibTorch's strides would overflow.
  EXPECT_NE(ErrorOf(FileBytes(R"({"a":{"dtype":"F32","shape":[0,1099511627776,1099511627776],)"
                              R"("data_offsets":[0,0]}})",
                              data))
                .find("implausibly large shape"),
            std::string::npos);
  EXPECT_NE(ErrorOf(FileBytes(R"({"a":{"shape":[4],"data_offsets":[0,16]}})", data)).find("lacks"),
            std::string::npos);
  EXPECT_NE(ErrorOf(FileBytes(R"([1,2])", data)).find("not a JSON object"), std::string::npos);
}

TEST(SafetensorsTest, TruncatedFileOnDiskIsRefused) {
  test::TempDir dir;
  MOA_ASSERT_OK(WriteSafetensors(dir.File("full.safetensors"), {{"w", torch::randn({64, 64})}}));
  std::ifstream in(dir.File("full.safetensors"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(dir.File("cut.safetensors"), std::ios::binary)
      << bytes.substr(0, bytes.size() - 100);
  auto result = ReadSafetensors(dir.File("cut.safetensors"));
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("cut.safetensors"), std::string::npos);
  EXPECT_FALSE(ReadSafetensors(dir.File("missing.safetensors")).ok());
}

}  // namespace
}  // namespace moa
