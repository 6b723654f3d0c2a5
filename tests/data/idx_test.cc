// IDX reading: good files (plain and gzipped, several element types), and every kind of bad
// file: missing, bad magic, truncated header, truncated payload (also under a header announcing
// terabytes), trailing bytes, corrupt gzip.
#include <zlib.h>

#include <fstream>

#include "data/idx.h"
#include "tests/support/test_support.h"

namespace moa::data {
namespace {

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void Gzip(const std::string& bytes, const std::string& path) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), bytes.size()), static_cast<int>(bytes.size()));
  gzclose(f);
}

TEST(IdxTest, ReadsHandWrittenImagesFile) {
  test::TempDir dir;
  // Magic 0x00000803 (uint8, 3 dims), dims 2 x 2 x 3 big-endian, then 12 bytes.
  std::string bytes = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3};
  for (int i = 0; i < 12; ++i) bytes.push_back(static_cast<char>(i * 20));
  WriteBytes(dir.File("img"), bytes);
  MOA_ASSERT_OK_AND_ASSIGN(torch::Tensor t, ReadIdx(dir.File("img")));
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(t.scalar_type(), torch::kUInt8);
  EXPECT_EQ(t[1][0][2].item<int>(), 8 * 20);
  EXPECT_EQ(t[0][1][1].item<int>(), 4 * 20);
}

TEST(IdxTest, ReadsBigEndianInt32AndGzip) {
  test::TempDir dir;
  std::string bytes = {0, 0, 0x0C, 1, 0, 0, 0, 2};
  bytes += std::string({0, 0, 1, 2});                           // 258
  bytes += std::string({static_cast<char>(0xff), -1, -1, -2});  // -2
  Gzip(bytes, dir.File("ints.gz"));
  MOA_ASSERT_OK_AND_ASSIGN(torch::Tensor t, ReadIdx(dir.File("ints.gz")));
  ASSERT_EQ(t.scalar_type(), torch::kInt32);
  EXPECT_EQ(t[0].item<int>(), 258);
  EXPECT_EQ(t[1].item<int>(), -2);
}

TEST(IdxTest, WriteThenReadRoundTrip) {
  test::TempDir dir;
  torch::Tensor original = torch::randint(0, 256, {5, 7, 3}, torch::kUInt8);
  MOA_ASSERT_OK(WriteIdx(dir.File("rt"), original));
  MOA_ASSERT_OK_AND_ASSIGN(torch::Tensor back, ReadIdx(dir.File("rt")));
  EXPECT_TRUE(torch::equal(original, back));
  torch::Tensor floats = torch::randn({4, 2});
  MOA_ASSERT_OK(WriteIdx(dir.File("f"), floats));
  MOA_ASSERT_OK_AND_ASSIGN(torch::Tensor fback, ReadIdx(dir.File("f")));
  EXPECT_TRUE(torch::equal(floats, fback));
}

TEST(IdxTest, ReadsDebianFashionMnist) {
  MOA_ASSERT_OK_AND_ASSIGN(torch::Tensor images,
                           ReadIdx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"));
  EXPECT_EQ(images.sizes(), (std::vector<int64_t>{10000, 28, 28}));
  MOA_ASSERT_OK_AND_ASSIGN(torch::Tensor labels,
                           ReadIdx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"));
  EXPECT_EQ(labels.sizes(), (std::vector<int64_t>{10000}));
  // Fashion-MNIST's test set has exactly 1000 images per class.
  EXPECT_TRUE(torch::equal(torch::bincount(labels.to(torch::kInt64)),
                           torch::full({10}, 1000, torch::kInt64)));
}

class BadIdxTest : public ::testing::Test {
 protected:
  std::string Error(const std::string& bytes, bool gzip = false) {
    const std::string path = dir_.File(gzip ? "bad.gz" : "bad");
    if (gzip) {
      Gzip(bytes, path);
    } else {
      WriteBytes(path, bytes);
    }
    auto result = ReadIdx(path);
    EXPECT_FALSE(result.ok());
    const std::string message(result.status().message());
    EXPECT_NE(message.find(path), std::string::npos) << "the error must name the file: " << message;
    return message;
  }
  test::TempDir dir_;
};

TEST_F(BadIdxTest, MissingFile) {
  auto result = ReadIdx(dir_.File("nope"));
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::IsNotFound(result.status()));
  EXPECT_NE(result.status().message().find("nope"), std::string::npos);
}

TEST_F(BadIdxTest, BadMagic) {
  EXPECT_NE(Error(std::string("\x01\x02\x08\x01\0\0\0\1x", 9)).find("magic"), std::string::npos);
  EXPECT_NE(Error(std::string("\0\0\x07\x01\0\0\0\1x", 9)).find("magic"), std::string::npos);
}

TEST_F(BadIdxTest, TooShortForMagic) {
  EXPECT_NE(Error(std::string("\0\0", 2)).find("shorter"), std::string::npos);
}

TEST_F(BadIdxTest, TruncatedDimensions) {
  EXPECT_NE(Error(std::string("\0\0\x08\x03\0\0\0\x02\0\0", 10)).find("dimension header"),
            std::string::npos);
}

TEST_F(BadIdxTest, TruncatedPayload) {
  std::string bytes("\0\0\x08\x02\0\0\0\x02\0\0\0\x03", 12);
  bytes += "abcd";  // 4 of 6 bytes
  const std::string message = Error(bytes);
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  EXPECT_NE(message.find("6 payload bytes but only 4"), std::string::npos) << message;
}

TEST_F(BadIdxTest, HugeHeaderOfAShortFileIsTruncatedWithoutAllocatingIt) {
  // float64, 65535 x 65535 x 255: 8.8 TB announced (found by fuzz/idx_fuzzer), 4 bytes present.
  std::string bytes("\0\0\x0e\x03\0\0\xff\xff\0\0\xff\xff\0\0\0\xff", 16);
  bytes += "abcd";
  for (const bool gzip : {false, true}) {
    const std::string message = Error(bytes, gzip);
    EXPECT_NE(message.find("8761465899000 payload bytes but only 4"), std::string::npos) << message;
  }
}

TEST_F(BadIdxTest, TrailingBytes) {
  std::string bytes("\0\0\x08\x01\0\0\0\x02", 8);
  bytes += "abc";
  EXPECT_NE(Error(bytes).find("trailing"), std::string::npos);
}

TEST_F(BadIdxTest, TruncatedGzipOfRealFile) {
  const std::string real = Slurp("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz");
  ASSERT_GT(real.size(), 1000u);
  const std::string path = dir_.File("cut.gz");
  WriteBytes(path, real.substr(0, real.size() / 2));
  auto result = ReadIdx(path);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(path), std::string::npos);
}

TEST_F(BadIdxTest, CorruptGzip) {
  std::string real = Slurp("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz");
  for (size_t i = real.size() / 2; i < real.size() / 2 + 64; ++i)
    real[i] = static_cast<char>(real[i] ^ 0x5a);
  const std::string path = dir_.File("corrupt.gz");
  WriteBytes(path, real);
  auto result = ReadIdx(path);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(path), std::string::npos) << result.status();
}

}  // namespace
}  // namespace moa::data
