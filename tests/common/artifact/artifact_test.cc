#include "common/artifact/artifact.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <thread>

#include "common/fs.h"

namespace polis {
namespace {

class ArtifactTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The registry root lies one level down in a folder of the test's own,
    // so "nothing escaped the root" looks only where the test owns.
    std::string tmpl = (std::filesystem::temp_directory_path() / "polis-artifact-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    outer_ = tmpl;
    dir_ = outer_ + "/root";
    ASSERT_TRUE(std::filesystem::create_directory(dir_));
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(outer_, ec);
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  std::string outer_;  // the test's own folder
  std::string dir_;    // the registry root, inside it
};

ModelArtifact MakeArtifact(size_t n, float seed = 0.5f) {
  ModelArtifact a;
  a.header.mutable_job()->set_name("mnist-mlp");
  a.header.add_input_shape(1);
  a.header.add_input_shape(28);
  a.header.add_input_shape(28);
  a.header.add_output_shape(10);
  auto* t = a.header.add_tensor();
  t->set_name("dense_0/weights");
  t->add_shape(static_cast<int64_t>(n));
  t->set_offset(0);
  t->set_count(static_cast<int64_t>(n));
  a.header.set_parameter_count(static_cast<int64_t>(n));
  auto* m = a.header.add_metric();
  m->set_name("accuracy");
  m->set_value(0.9875);
  m = a.header.add_metric();
  m->set_name("loss");
  m->set_value(0.042);
  a.header.mutable_lineage()->set_job_file("jobs/mnist.prototxt");
  a.header.mutable_lineage()->set_host("node7");
  auto* f = a.header.mutable_lineage()->add_dataset_files();
  f->set_path("data/train.bin");
  f->set_sha256(std::string(64, 'a'));
  a.weights.resize(n);
  for (size_t i = 0; i < n; ++i) a.weights[i] = seed * static_cast<float>(i) - 3.25f;
  return a;
}

bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

std::string Contents(const std::string& path) {
  auto r = ReadFile(path);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : "";
}

TEST_F(ArtifactTest, EncodeDecodeRoundTripIsBitExact) {
  ModelArtifact a = MakeArtifact(100);
  a.weights[0] = -0.0f;
  a.weights[1] = std::numeric_limits<float>::max();
  a.weights[2] = std::numeric_limits<float>::denorm_min();
  a.weights[3] = -std::numeric_limits<float>::denorm_min();
  const std::string bytes = EncodeArtifact(a);

  std::string header;
  ASSERT_TRUE(a.header.SerializeToString(&header));
  ASSERT_EQ(bytes.size(), 24 + header.size() + 400 + 32);
  EXPECT_EQ(bytes.substr(0, 8), "POLISMD1");
  EXPECT_EQ(static_cast<unsigned char>(bytes[8]), header.size() & 0xff);
  EXPECT_EQ(static_cast<unsigned char>(bytes[16]), 400 & 0xff);
  EXPECT_EQ(static_cast<unsigned char>(bytes[17]), 400 >> 8);
  EXPECT_EQ(ArtifactSha256(bytes), Sha256Hex(std::string_view(bytes).substr(0, bytes.size() - 32)));

  auto d = DecodeArtifact(bytes, "mem");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_TRUE(BitEqual(d->weights, a.weights));
  EXPECT_EQ(d->header.SerializeAsString(), header);
  EXPECT_EQ(d->header.job().name(), "mnist-mlp");
  EXPECT_EQ(d->header.parameter_count(), 100);
  ASSERT_EQ(d->header.input_shape_size(), 3);
  EXPECT_EQ(d->header.input_shape(2), 28);
  ASSERT_EQ(d->header.metric_size(), 2);
  EXPECT_EQ(d->header.metric(0).value(), 0.9875);
  EXPECT_EQ(d->header.tensor(0).name(), "dense_0/weights");
  EXPECT_EQ(d->header.lineage().dataset_files(0).path(), "data/train.bin");
}

// A model trained into NaN (e.g. learning_rate: inf) is refused wherever it
// is read, naming the tensor and the element, and is never published.
TEST_F(ArtifactTest, NonFiniteWeightsAreRefusedNamingTensorAndElement) {
  ModelArtifact a = MakeArtifact(40);
  a.header.mutable_tensor(0)->set_count(20);
  auto* t = a.header.add_tensor();
  t->set_name("dense_1/weights");
  t->set_offset(20);
  t->set_count(20);
  a.weights[37] = std::numeric_limits<float>::quiet_NaN();
  a.weights[39] = std::numeric_limits<float>::infinity();
  const std::string bytes = EncodeArtifact(a);  // checksum matches: only the values are bad
  auto d = DecodeArtifact(bytes, "model.polis");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kDataLoss);
  EXPECT_NE(d.status().message().find("'model.polis': tensor 'dense_1/weights' element 17 is nan: "
                                      "the model is not finite and cannot be published or served"),
            std::string::npos)
      << d.status().message();

  a.weights[37] = 1;
  a.weights[39] = -std::numeric_limits<float>::infinity();
  ASSERT_TRUE(WriteArtifactFile(Path("model.polis"), a).ok());
  auto r = ReadArtifactFile(Path("model.polis"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tensor 'dense_1/weights' element 19 is -inf"),
            std::string::npos)
      << r.status().message();

  // Before anything is written: no version directory, no staging left behind.
  auto p = PublishVersion(dir_, "nan-model", a, nullptr);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kDataLoss);
  EXPECT_NE(p.status().message().find("element 19 is -inf"), std::string::npos)
      << p.status().message();
  EXPECT_FALSE(PathExists(dir_ + "/nan-model"));
}

TEST_F(ArtifactTest, NonFiniteMetricsAreRefused) {
  ModelArtifact a = MakeArtifact(4);
  a.header.mutable_metric(1)->set_value(std::numeric_limits<double>::quiet_NaN());
  auto d = DecodeArtifact(EncodeArtifact(a), "mem");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kDataLoss);
  EXPECT_NE(d.status().message().find("header metric 'loss' is nan"), std::string::npos)
      << d.status().message();
  auto p = PublishVersion(dir_, "m", a, nullptr);
  ASSERT_FALSE(p.ok());
  EXPECT_FALSE(PathExists(dir_ + "/m"));
}

TEST_F(ArtifactTest, EmptyWeightsRoundTrip) {
  ModelArtifact a = MakeArtifact(0);
  auto d = DecodeArtifact(EncodeArtifact(a), "mem");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_TRUE(d->weights.empty());
}

TEST_F(ArtifactTest, FileRoundTrip) {
  ModelArtifact a = MakeArtifact(1000);
  const std::string path = Path("model.polis");
  ASSERT_TRUE(WriteArtifactFile(path, a).ok());
  auto d = ReadArtifactFile(path);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_TRUE(BitEqual(d->weights, a.weights));
  EXPECT_EQ(d->header.SerializeAsString(), a.header.SerializeAsString());
  // No temporary files left behind.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), {}), 1);
}

TEST_F(ArtifactTest, WriteRefusesParameterCountMismatch) {
  ModelArtifact a = MakeArtifact(10);
  a.header.set_parameter_count(11);
  Status st = WriteArtifactFile(Path("model.polis"), a);
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  EXPECT_FALSE(PathExists(Path("model.polis")));
}

TEST_F(ArtifactTest, FlippedByteIsRefusedWithDataLoss) {
  ModelArtifact a = MakeArtifact(64);
  const std::string good = EncodeArtifact(a);
  std::string header;
  ASSERT_TRUE(a.header.SerializeToString(&header));
  const size_t header_at = 24 + 3;
  const size_t weights_at = 24 + header.size() + 17;
  const size_t checksum_at = good.size() - 5;
  for (size_t at : {header_at, weights_at, checksum_at}) {
    std::string bad = good;
    bad[at] ^= 0x01;
    const std::string path = Path(fmt::format("flip-{}.polis", at));
    ASSERT_TRUE(WriteFileAtomic(path, bad).ok());
    auto d = ReadArtifactFile(path);
    ASSERT_FALSE(d.ok()) << "flip at " << at;
    EXPECT_EQ(d.status().code(), Code::kDataLoss);
    EXPECT_NE(d.status().message().find(path), std::string::npos) << d.status().message();
    EXPECT_NE(d.status().message().find("checksum mismatch: stored "), std::string::npos)
        << d.status().message();
    EXPECT_NE(d.status().message().find(", computed "), std::string::npos);
  }
}

TEST_F(ArtifactTest, TruncatedFileIsRefusedNamingTheOffset) {
  const std::string good = EncodeArtifact(MakeArtifact(64));
  for (size_t len : {good.size() - 1, good.size() - 40, size_t{30}, size_t{12}}) {
    const std::string path = Path(fmt::format("trunc-{}.polis", len));
    ASSERT_TRUE(WriteFileAtomic(path, good.substr(0, len)).ok());
    auto d = ReadArtifactFile(path);
    ASSERT_FALSE(d.ok());
    EXPECT_EQ(d.status().code(), Code::kDataLoss);
    const std::string& msg = d.status().message();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(fmt::format("truncated at byte offset {}", len)), std::string::npos) << msg;
  }
}

TEST_F(ArtifactTest, TrailingBytesAreRefused) {
  auto d = DecodeArtifact(EncodeArtifact(MakeArtifact(8)) + "x", "extra.polis");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kDataLoss);
  EXPECT_NE(d.status().message().find("trailing"), std::string::npos) << d.status().message();
}

TEST_F(ArtifactTest, WrongMagicIsRefused) {
  std::string bytes = EncodeArtifact(MakeArtifact(8));
  bytes[7] = '2';
  const std::string path = Path("magic.polis");
  ASSERT_TRUE(WriteFileAtomic(path, bytes).ok());
  auto d = ReadArtifactFile(path);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kDataLoss);
  EXPECT_NE(d.status().message().find(path), std::string::npos);
  EXPECT_NE(d.status().message().find("bad magic at byte offset 7"), std::string::npos)
      << d.status().message();

  auto e = DecodeArtifact("{\"not\": \"an artifact\"}", "x.json");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("bad magic at byte offset 0"), std::string::npos);
}

TEST_F(ArtifactTest, ParameterCountMismatchInFileIsRefused) {
  ModelArtifact a = MakeArtifact(8);
  a.header.set_parameter_count(9);
  auto d = DecodeArtifact(EncodeArtifact(a), "count.polis");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kDataLoss);
  EXPECT_NE(d.status().message().find("parameter_count is 9"), std::string::npos)
      << d.status().message();
}

TEST_F(ArtifactTest, UnparsableHeaderWithValidChecksumIsRefused) {
  // Hand-build a file whose checksum is right but whose header is garbage.
  std::string bytes = "POLISMD1";
  const std::string header = "\xff\xff\xff";
  for (uint64_t v : {uint64_t{header.size()}, uint64_t{0}})
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  bytes += header;
  std::string hex = Sha256Hex(bytes);
  for (size_t i = 0; i < 32; ++i)
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16)));
  auto d = DecodeArtifact(bytes, "garbage.polis");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kDataLoss);
  EXPECT_NE(d.status().message().find("does not parse"), std::string::npos) << d.status().message();
  EXPECT_NE(d.status().message().find("byte offset 24"), std::string::npos);
}

TEST_F(ArtifactTest, PublishTwiceGivesVersionsOneAndTwo) {
  auto p1 = PublishVersion(dir_, "mnist", MakeArtifact(16, 1.0f), {{"note", "first"}});
  ASSERT_TRUE(p1.ok()) << p1.status().ToString();
  auto p2 = PublishVersion(dir_, "mnist", MakeArtifact(16, 2.0f), nlohmann::json::object());
  ASSERT_TRUE(p2.ok()) << p2.status().ToString();
  EXPECT_EQ(p1->version, 1);
  EXPECT_EQ(p2->version, 2);
  EXPECT_EQ(p1->dir, dir_ + "/mnist/1");
  EXPECT_EQ(p2->artifact_path, dir_ + "/mnist/2/model.polis");

  const std::string bytes = Contents(p1->artifact_path);
  EXPECT_EQ(p1->sha256, ArtifactSha256(bytes));
  EXPECT_EQ(p1->sha256, Sha256Hex(std::string_view(bytes).substr(0, bytes.size() - 32)));

  auto meta = nlohmann::json::parse(Contents(p1->dir + "/metadata.json"));
  EXPECT_EQ(meta["model"], "mnist");
  EXPECT_EQ(meta["version"], 1);
  EXPECT_EQ(meta["sha256"], p1->sha256);
  EXPECT_EQ(meta["parameter_count"], 16);
  EXPECT_EQ(meta["metrics"]["accuracy"], 0.9875);
  EXPECT_EQ(meta["metrics"]["loss"], 0.042);
  EXPECT_EQ(meta["note"], "first");
  EXPECT_EQ(meta["lineage"]["job_file"], "jobs/mnist.prototxt");
  EXPECT_EQ(meta["lineage"]["dataset_files"][0]["path"], "data/train.bin");
  EXPECT_FALSE(meta["created_at"].get<std::string>().empty());

  auto meta2 = nlohmann::json::parse(Contents(p2->dir + "/metadata.json"));
  EXPECT_EQ(meta2["version"], 2);
  EXPECT_EQ(meta2["sha256"], p2->sha256);
  EXPECT_NE(p1->sha256, p2->sha256);

  // created_at was filled into the stored header too.
  auto loaded = LoadVersion(dir_, "mnist", 1);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->header.lineage().created_at(), meta["created_at"]);

  // Nothing but the two versions is left in the model directory.
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/mnist"))
    names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"1", "2"}));
}

TEST_F(ArtifactTest, PublishRefusesReservedExtraKeysAndBadCounts) {
  auto p = PublishVersion(dir_, "m", MakeArtifact(4), {{"version", 7}});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kInvalidArgument);
  ModelArtifact a = MakeArtifact(4);
  a.header.set_parameter_count(5);
  p = PublishVersion(dir_, "m", a, nullptr);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kInvalidArgument);
  // An unset parameter_count is filled in.
  a.header.clear_parameter_count();
  p = PublishVersion(dir_, "m", a, nullptr);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->version, 1);
}

// A publisher killed mid-publish leaves its staging directory; the next
// publish removes it (its pid is gone) and leaves a live one alone.
TEST_F(ArtifactTest, PublishRemovesStagingOfDeadPublishers) {
  ASSERT_TRUE(PublishVersion(dir_, "m", MakeArtifact(4), nullptr).ok());
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof(host) - 1), 0);
  std::string tag(host);
  for (char& c : tag)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.') c = '_';
  // A pid that has exited: a child reaped at once.
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  waitpid(child, nullptr, 0);
  const std::string dead = dir_ + "/m/.staging-" + tag + "-" + std::to_string(child) + "-ab";
  const std::string live = dir_ + "/m/.staging-" + tag + "-" + std::to_string(getpid()) + "-cd";
  const std::string other = dir_ + "/m/.staging-otherhost-" + std::to_string(child) + "-ef";
  for (const auto& d : {dead, live, other}) {
    ASSERT_TRUE(MakeDirectories(d).ok());
    ASSERT_TRUE(WriteFileAtomic(d + "/model.polis", "partial").ok());
  }
  auto p = PublishVersion(dir_, "m", MakeArtifact(4), nullptr);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->version, 2);
  EXPECT_FALSE(PathExists(dead));
  EXPECT_TRUE(PathExists(live));
  EXPECT_TRUE(PathExists(other));  // another host's: only once a day old
}

TEST_F(ArtifactTest, ListVersionsIgnoresStagingAndOtherNames) {
  ASSERT_TRUE(PublishVersion(dir_, "resnet", MakeArtifact(4), nullptr).ok());
  ASSERT_TRUE(MakeDirectories(dir_ + "/resnet/.staging-123-deadbeef").ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/resnet/.staging-123-deadbeef/model.polis", "partial").ok());
  ASSERT_TRUE(MakeDirectories(dir_ + "/resnet/007").ok());
  ASSERT_TRUE(MakeDirectories(dir_ + "/resnet/latest").ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/resnet/9", "a file, not a version").ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/resnet/aliases.json", "{}").ok());

  auto v = ListVersions(dir_, "resnet");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, (std::vector<int64_t>{1}));

  auto p = PublishVersion(dir_, "resnet", MakeArtifact(4), nullptr);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->version, 2);

  EXPECT_EQ(ListVersions(dir_, "nosuchmodel").status().code(), Code::kNotFound);
}

TEST_F(ArtifactTest, LoadVersionZeroIsTheLatest) {
  for (float seed : {1.0f, 2.0f, 3.0f})
    ASSERT_TRUE(PublishVersion(dir_, "m", MakeArtifact(8, seed), nullptr).ok());
  auto latest = LoadVersion(dir_, "m", 0);
  ASSERT_TRUE(latest.ok()) << latest.status().ToString();
  EXPECT_TRUE(BitEqual(latest->weights, MakeArtifact(8, 3.0f).weights));
  auto first = LoadVersion(dir_, "m", 1);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(BitEqual(first->weights, MakeArtifact(8, 1.0f).weights));

  auto missing = LoadVersion(dir_, "m", 4);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find("versions: 1, 2, 3"), std::string::npos)
      << missing.status().message();
  EXPECT_EQ(LoadVersion(dir_, "m", -1).status().code(), Code::kInvalidArgument);

  ASSERT_TRUE(MakeDirectories(dir_ + "/empty").ok());
  EXPECT_EQ(LoadVersion(dir_, "empty", 0).status().code(), Code::kNotFound);
}

TEST_F(ArtifactTest, InvalidModelNamesAreRefused) {
  struct Case {
    std::string name;
    std::string position;
  };
  const std::vector<Case> bad = {
      {"../x", "position 0"},
      {"a/b", "position 1"},
      {"", "empty"},
      {std::string("bad\x01"), "position 3"},
      {".hidden", "position 0"},
      {"-x", "position 0"},
      {"a b", "position 1"},
      {std::string(129, 'a'), "128"},
  };
  for (const auto& c : bad) {
    Status st = ValidateModelName(c.name);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << c.name;
    EXPECT_NE(st.message().find(c.position), std::string::npos) << st.message();
    EXPECT_EQ(PublishVersion(dir_, c.name, MakeArtifact(2), nullptr).status().code(),
              Code::kInvalidArgument);
  }
  EXPECT_EQ(LoadVersion(dir_, "../x", 0).status().code(), Code::kInvalidArgument);
  for (const std::string& good :
       std::vector<std::string>{"mnist", "resnet-50_v1.2", "A", std::string(128, 'z')})
    EXPECT_TRUE(ValidateModelName(good).ok()) << good;
  // Nothing escaped the root.
  EXPECT_FALSE(PathExists(std::filesystem::path(dir_).parent_path().string() + "/x"));
}

TEST_F(ArtifactTest, ConcurrentPublishersNeverClobber) {
  constexpr int kPerThread = 5;
  std::vector<std::vector<int64_t>> got(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto p = PublishVersion(dir_, "shared", MakeArtifact(32, 10.0f * t + i),
                                {{"thread", t}, {"index", i}});
        EXPECT_TRUE(p.ok()) << p.status().ToString();
        if (p.ok()) got[t].push_back(p->version);
      }
    });
  }
  for (auto& th : threads) th.join();

  auto v = ListVersions(dir_, "shared");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));

  std::set<std::pair<int, int>> seen;
  for (int64_t version : *v) {
    auto a = LoadVersion(dir_, "shared", version);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    auto meta =
        nlohmann::json::parse(Contents(fmt::format("{}/shared/{}/metadata.json", dir_, version)));
    EXPECT_EQ(meta["version"], version);
    const int t = meta["thread"], i = meta["index"];
    EXPECT_TRUE(BitEqual(a->weights, MakeArtifact(32, 10.0f * t + i).weights));
    seen.insert({t, i});
  }
  EXPECT_EQ(seen.size(), 10u);
  std::set<int64_t> all(got[0].begin(), got[0].end());
  all.insert(got[1].begin(), got[1].end());
  EXPECT_EQ(all.size(), 10u);
}

}  // namespace
}  // namespace polis
