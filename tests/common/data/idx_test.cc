// Tests for the IDX reader and ImageDataset. Each test writes its own small
// IDX files (raw and gzip) into a fresh temp directory.
#include <gtest/gtest.h>
#include "tests/prereq.h"
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "common/data/idx.h"
#include "common/data/image_dataset.h"
#include "common/fs.h"

namespace polis::data {
namespace {

namespace fs = std::filesystem;

std::string IdxBytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::string out = {0, 0, 0x08, static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    out.push_back(static_cast<char>(d >> 24));
    out.push_back(static_cast<char>(d >> 16));
    out.push_back(static_cast<char>(d >> 8));
    out.push_back(static_cast<char>(d));
  }
  out.append(data.begin(), data.end());
  return out;
}

std::vector<uint8_t> Iota(size_t n, int mul = 1) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * mul);
  return v;
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("polis_idx_test_{}_{}", getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string WriteRaw(const std::string& name, const std::string& bytes) {
    std::string path = (dir_ / name).string();
    EXPECT_TRUE(WriteFileAtomic(path, bytes).ok());
    return path;
  }
  std::string WriteGzip(const std::string& name, const std::string& bytes) {
    std::string path = (dir_ / name).string();
    gzFile f = gzopen(path.c_str(), "wb");
    EXPECT_NE(f, nullptr);
    EXPECT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    EXPECT_EQ(gzclose(f), Z_OK);
    return path;
  }

  fs::path dir_;
};

TEST_F(IdxTest, RawRoundTrip) {
  auto data = Iota(2 * 3 * 4);
  std::string path = WriteRaw("a.idx", IdxBytes({2, 3, 4}, data));
  auto arr = ReadIdx(path);
  ASSERT_TRUE(arr.ok()) << arr.status().ToString();
  EXPECT_EQ(arr->dims, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(arr->data, data);
}

TEST_F(IdxTest, GzipRoundTrip) {
  auto data = Iota(5 * 7, 3);
  std::string path = WriteGzip("a.idx.gz", IdxBytes({5, 7}, data));
  auto arr = ReadIdx(path);
  ASSERT_TRUE(arr.ok()) << arr.status().ToString();
  EXPECT_EQ(arr->dims, (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(arr->data, data);
}

TEST_F(IdxTest, TruncatedDataNamesFileAndOffset) {
  std::string bytes = IdxBytes({4, 4}, Iota(16));
  bytes.resize(bytes.size() - 3);
  for (const std::string& path : {WriteRaw("short.idx", bytes), WriteGzip("short.idx.gz", bytes)}) {
    auto arr = ReadIdx(path);
    ASSERT_FALSE(arr.ok());
    EXPECT_EQ(arr.status().code(), Code::kDataLoss);
    const std::string& msg = arr.status().message();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("offset 25"), std::string::npos) << msg;  // 12 header + 16 data - 3
    EXPECT_NE(msg.find("need 28 bytes"), std::string::npos) << msg;
  }
}

TEST_F(IdxTest, TruncatedHeader) {
  std::string bytes = IdxBytes({4, 4}, {}).substr(0, 9);
  std::string path = WriteRaw("hdr.idx", bytes);
  auto arr = ReadIdx(path);
  ASSERT_FALSE(arr.ok());
  EXPECT_EQ(arr.status().code(), Code::kDataLoss);
  EXPECT_NE(arr.status().message().find("offset 9"), std::string::npos) << arr.status().message();
  auto dims = ReadIdxDims(path);
  ASSERT_FALSE(dims.ok());
  EXPECT_EQ(dims.status().code(), Code::kDataLoss);
}

TEST_F(IdxTest, WrongMagic) {
  std::string bytes = IdxBytes({4}, Iota(4));
  bytes[0] = 0x12;
  bytes[1] = 0x34;
  std::string path = WriteRaw("bad.idx", bytes);
  auto arr = ReadIdx(path);
  ASSERT_FALSE(arr.ok());
  EXPECT_TRUE(arr.status().code() == Code::kDataLoss ||
              arr.status().code() == Code::kInvalidArgument);
  const std::string& msg = arr.status().message();
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("12 34 08 01"), std::string::npos) << msg;

  // A real IDX type that is not unsigned byte (0x0d = float32).
  bytes = IdxBytes({4}, Iota(4));
  bytes[2] = 0x0d;
  auto typed = ReadIdx(WriteRaw("float.idx", bytes));
  ASSERT_FALSE(typed.ok());
  EXPECT_EQ(typed.status().code(), Code::kInvalidArgument);
  EXPECT_NE(typed.status().message().find("0x0d"), std::string::npos) << typed.status().message();

  // Too many dims.
  bytes = IdxBytes({1, 1, 1, 1, 1}, {1});
  EXPECT_FALSE(ReadIdx(WriteRaw("five.idx", bytes)).ok());
}

TEST_F(IdxTest, ZeroAndOverflowingDimsRefused) {
  auto zero = ReadIdx(WriteRaw("zero.idx", IdxBytes({3, 0}, {})));
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.status().message().find("offset 8"), std::string::npos)
      << zero.status().message();
  std::string huge = IdxBytes({0xffffffffu, 0xffffffffu, 0xffffffffu}, {});
  auto big = ReadIdx(WriteRaw("huge.idx", huge));
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("overflow"), std::string::npos) << big.status().message();
  EXPECT_FALSE(ReadIdxDims(WriteGzip("huge.idx.gz", huge)).ok());
}

TEST_F(IdxTest, TrailingBytes) {
  std::string bytes = IdxBytes({2, 2}, Iota(4)) + "xy";
  std::string path = WriteRaw("trail.idx", bytes);
  auto arr = ReadIdx(path);
  ASSERT_FALSE(arr.ok());
  EXPECT_EQ(arr.status().code(), Code::kDataLoss);
  EXPECT_NE(arr.status().message().find(path), std::string::npos);
  EXPECT_NE(arr.status().message().find("trailing"), std::string::npos) << arr.status().message();
}

TEST_F(IdxTest, ReadIdxDimsGzipAndRaw) {
  std::string bytes = IdxBytes({3, 5, 6}, Iota(90));
  auto gz = ReadIdxDims(WriteGzip("d.idx.gz", bytes));
  ASSERT_TRUE(gz.ok()) << gz.status().ToString();
  EXPECT_EQ(*gz, (std::vector<int64_t>{3, 5, 6}));
  // The header alone is enough: a payload cut short is not read.
  auto raw = ReadIdxDims(WriteRaw("d.idx", bytes.substr(0, 20)));
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  EXPECT_EQ(*raw, (std::vector<int64_t>{3, 5, 6}));
  auto missing = ReadIdxDims((dir_ / "nope.idx").string());
  EXPECT_FALSE(missing.ok());
}

TEST_F(IdxTest, DatasetCountMismatch) {
  std::string images = WriteGzip("i.gz", IdxBytes({3, 2, 2}, Iota(12)));
  std::string labels = WriteGzip("l.gz", IdxBytes({2}, {0, 1}));
  auto ds = ImageDataset::Open(images, labels, 10, 1.0f, 0.0f, 0);
  ASSERT_FALSE(ds.ok());
  EXPECT_NE(ds.status().message().find("'labels' has 2 items but 'images' has 3"),
            std::string::npos)
      << ds.status().message();
}

TEST_F(IdxTest, DatasetLabelOutOfRange) {
  std::string images = WriteRaw("i.idx", IdxBytes({3, 2, 2}, Iota(12)));
  std::string labels = WriteRaw("l.idx", IdxBytes({3}, {0, 1, 7}));
  auto ds = ImageDataset::Open(images, labels, 5, 1.0f, 0.0f, 0);
  ASSERT_FALSE(ds.ok());
  const std::string& msg = ds.status().message();
  EXPECT_NE(msg.find(labels), std::string::npos) << msg;
  EXPECT_NE(msg.find("index 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset 10"), std::string::npos) << msg;
}

TEST_F(IdxTest, DatasetImagesMustBe3D) {
  std::string images = WriteRaw("i.idx", IdxBytes({3, 4}, Iota(12)));
  std::string labels = WriteRaw("l.idx", IdxBytes({3}, {0, 1, 2}));
  auto ds = ImageDataset::Open(images, labels, 5, 1.0f, 0.0f, 0);
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), Code::kInvalidArgument);
}

TEST_F(IdxTest, GatherScalesExactly) {
  // 4 samples of 2x3, pixels spanning 0..255.
  std::vector<uint8_t> pixels(24);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 11);
  pixels[23] = 255;
  std::string images = WriteGzip("i.gz", IdxBytes({4, 2, 3}, pixels));
  std::string labels = WriteRaw("l.idx", IdxBytes({4}, {3, 0, 9, 4}));
  const float scale = 1.0f / 255.0f;
  auto ds = ImageDataset::Open(images, labels, 10, scale, 0.0f, 0);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->size(), 4);
  EXPECT_EQ(ds->sample_shape(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(ds->sample_elements(), 6);
  EXPECT_EQ(ds->num_classes(), 10);
  EXPECT_EQ(ds->label(2), 9);

  const int64_t indices[] = {3, 0, 3};
  float dst[3 * 6];
  int32_t got_labels[3];
  ds->Gather(indices, 3, dst, got_labels);
  EXPECT_EQ(got_labels[0], 4);
  EXPECT_EQ(got_labels[1], 3);
  EXPECT_EQ(got_labels[2], 4);
  for (int k = 0; k < 3; ++k) {
    for (int e = 0; e < 6; ++e) {
      float want = static_cast<float>(pixels[indices[k] * 6 + e]) * scale;
      EXPECT_EQ(dst[k * 6 + e], want) << "sample " << k << " element " << e;
    }
  }
  EXPECT_EQ(dst[0], 18 * 11 * scale);
  EXPECT_EQ(dst[6], 0.0f);

  // A shift is applied after the scale.
  auto shifted = ImageDataset::Open(images, labels, 10, 2.0f, -1.0f, 0);
  ASSERT_TRUE(shifted.ok());
  const int64_t one[] = {1};
  shifted->Gather(one, 1, dst, got_labels);
  for (int e = 0; e < 6; ++e) EXPECT_EQ(dst[e], static_cast<float>(pixels[6 + e]) * 2.0f - 1.0f);
}

TEST_F(IdxTest, DatasetLimit) {
  std::string images = WriteRaw("i.idx", IdxBytes({5, 1, 2}, Iota(10)));
  std::string labels = WriteRaw("l.idx", IdxBytes({5}, {0, 1, 2, 3, 4}));
  auto ds = ImageDataset::Open(images, labels, 5, 1.0f, 0.0f, 2);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->size(), 2);
  EXPECT_EQ(ds->label(1), 1);
  const int64_t idx[] = {1};
  float dst[2];
  int32_t lab;
  ds->Gather(idx, 1, dst, &lab);
  EXPECT_EQ(dst[0], 2.0f);
  EXPECT_EQ(dst[1], 3.0f);
  // A limit above the count keeps everything.
  auto all = ImageDataset::Open(images, labels, 5, 1.0f, 0.0f, 100);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 5);
}

TEST(FashionMnist, RealTestSet) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  const std::string images = dir + "/t10k-images-idx3-ubyte.gz";
  const std::string labels = dir + "/t10k-labels-idx1-ubyte.gz";
  if (!PathExists(images) || !PathExists(labels)) {
    POLIS_MISSING_PREREQ() << "Fashion-MNIST test set not found under " << dir;
  }
  auto dims = ReadIdxDims(images);
  ASSERT_TRUE(dims.ok()) << dims.status().ToString();
  EXPECT_EQ(*dims, (std::vector<int64_t>{10000, 28, 28}));
  auto ds = ImageDataset::Open(images, labels, 10, 1.0f / 255.0f, 0.0f, 0);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->size(), 10000);
  EXPECT_EQ(ds->sample_shape(), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(ds->num_classes(), 10);
  std::vector<int> per_class(10);
  for (int64_t i = 0; i < ds->size(); ++i) ++per_class[ds->label(i)];
  for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], 1000) << "class " << c;
}

}  // namespace
}  // namespace polis::data
