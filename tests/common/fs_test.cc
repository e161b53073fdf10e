// Gzip-aware reads: every member, clear errors for damaged or oversized data.
#include "common/fs.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace polis {
namespace {

class GzipReadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/polis-fs-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  // One gzip member holding `text`.
  static std::string Gzip(const std::string& text) {
    z_stream zs{};
    EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    std::string out(deflateBound(&zs, text.size()) + 64, '\0');
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
    zs.avail_in = static_cast<uInt>(text.size());
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = static_cast<uInt>(out.size());
    EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
    out.resize(zs.total_out);
    deflateEnd(&zs);
    return out;
  }
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  std::string dir_;
};

TEST_F(GzipReadTest, PlainFilesAreReadAsTheyAre) {
  auto r = ReadMaybeGzip(Write("a.csv", "t,v\n1,2\n"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "t,v\n1,2\n");
}

TEST_F(GzipReadTest, EveryMemberIsRead) {
  const std::string path = Write("two.csv.gz", Gzip("t,v\n1,2\n") + Gzip("2,3\n3,4\n"));
  auto r = ReadMaybeGzip(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "t,v\n1,2\n2,3\n3,4\n");
}

TEST_F(GzipReadTest, BytesAfterTheDataAreRefused) {
  auto r = ReadMaybeGzip(Write("tail.gz", Gzip("abc") + "junk"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("4 bytes after the end of the gzip data"), std::string::npos)
      << r.status().message();
}

TEST_F(GzipReadTest, TruncatedStreamNamesTheOffset) {
  std::string gz = Gzip(std::string(100000, 'x') + "y");
  gz.resize(gz.size() / 2);
  auto r = ReadMaybeGzip(Write("cut.gz", gz));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kDataLoss);
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status().message();
}

TEST_F(GzipReadTest, InflatingBeyondTheLimitIsRefusedNotAllocated) {
  // About 1 KiB that inflates to 1 MiB: a limit of 64 KiB stops it early.
  const std::string path = Write("bomb.gz", Gzip(std::string(1 << 20, '\0')));
  auto r = ReadMaybeGzip(path, 64 << 10);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("more than 65536 bytes"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("bomb.gz"), std::string::npos);
  auto exact = ReadMaybeGzip(path, 1 << 20);  // exactly at the limit is fine
  ASSERT_TRUE(exact.ok()) << exact.status().ToString();
  EXPECT_EQ(exact->size(), size_t{1} << 20);
}

}  // namespace
}  // namespace polis
