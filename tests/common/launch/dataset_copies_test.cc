// Each host's copy of the dataset against the coordinator's
// (common/launch/dataset_copies.h): fingerprints of real files, and the one
// line naming the host and the path when a copy is missing or different.
#include "common/launch/dataset_copies.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>

namespace polis::launch {
namespace {

class DatasetCopies : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/polis-copies-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::ofstream(dir_ + "/a") << "images";
    std::ofstream(dir_ + "/b") << "labels";
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  std::vector<std::string> Files() const { return {dir_ + "/a", dir_ + "/b"}; }
  std::string dir_;
};

TEST_F(DatasetCopies, SameFilesAgree) {
  const auto mine = FingerprintFiles(Files());
  ASSERT_EQ(mine.size(), 2u);
  EXPECT_EQ(mine[0].size, 6);
  EXPECT_EQ(mine[0].sha256.size(), 64u);
  auto decoded = DecodeFingerprints(EncodeFingerprints(mine), "h2");
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_TRUE(CompareDatasetCopy("h1", mine, "h2", *decoded).ok());
}

TEST_F(DatasetCopies, MissingFileNamesTheHostAndThePath) {
  const auto reference = FingerprintFiles(Files());
  std::remove((dir_ + "/b").c_str());
  Status st = CompareDatasetCopy("10.0.0.2", reference, "10.0.0.4", FingerprintFiles(Files()));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_EQ(st.message().rfind("host 10.0.0.4: dataset file '" + dir_ + "/b' is missing", 0), 0u) << st.message();
  EXPECT_EQ(st.message().find('\n'), std::string::npos);
}

TEST_F(DatasetCopies, DifferentContentNamesTheHostThePathAndBothSizes) {
  const auto reference = FingerprintFiles(Files());
  std::ofstream(dir_ + "/a") << "imageS";  // same size, other bytes
  Status st = CompareDatasetCopy("h1", reference, "h3", FingerprintFiles(Files()));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message().rfind("host h3: dataset file '" + dir_ + "/a' differs from the coordinator's copy on h1 (6 bytes", 0),
            0u)
      << st.message();
  std::ofstream(dir_ + "/a") << "images, and more";
  st = CompareDatasetCopy("h1", reference, "h3", FingerprintFiles(Files()));
  EXPECT_NE(st.message().find("(16 bytes"), std::string::npos) << st.message();
}

TEST_F(DatasetCopies, TheCoordinatorsOwnCopyMissingIsNamedToo) {
  std::remove((dir_ + "/a").c_str());
  const auto reference = FingerprintFiles(Files());
  Status st = CompareDatasetCopy("h1", reference, "h2", reference);
  EXPECT_EQ(st.message(), "host h1 (the coordinator's): dataset file '" + dir_ + "/a' is missing");
}

TEST(DatasetFilesOfAJob, IdxAndCsv) {
  proto::JobSpec spec;
  auto* d = spec.mutable_dataset();
  d->set_dir("/data/f");
  d->set_train_images("ti");
  d->set_train_labels("tl");
  d->set_test_images("/abs/si");
  d->set_test_labels("sl");
  EXPECT_EQ(DatasetFiles(spec), (std::vector<std::string>{"/data/f/ti", "/data/f/tl", "/abs/si", "/data/f/sl"}));
  d->set_format(proto::DatasetSpec::CSV);
  d->mutable_timeseries()->set_path("/data/bikes.csv");
  EXPECT_EQ(DatasetFiles(spec), (std::vector<std::string>{"/data/bikes.csv"}));
}

}  // namespace
}  // namespace polis::launch
