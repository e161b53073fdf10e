// Sharded datasets (common/data/shard_format.h, pack.h, shard_dataset.h):
// tar shards that tar and Python read, packing from IDX and image folders,
// streaming Gather with and without prefetch, augmentation, and one clear
// line for each kind of bad data.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <atomic>
#include <thread>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/comm/control.h"
#include "common/comm/local_transport.h"
#include "common/data/dataset.h"
#include "common/data/remote_shards.h"
#include "common/data/image_codec.h"
#include "common/data/pack.h"
#include "common/data/shard_dataset.h"
#include "common/data/shard_format.h"
#include "common/fs.h"
#include "common/job_spec.h"
#include "tests/data/record_server_thread.h"

namespace polis::data {
namespace {

std::string RunCommand(const std::string& cmd, int* code) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int st = pclose(p);
  *code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

void WriteIdx(const std::string& path, const std::vector<int64_t>& dims, const std::vector<uint8_t>& data) {
  std::string s = {0, 0, 8, static_cast<char>(dims.size())};
  for (int64_t d : dims)
    for (int k = 3; k >= 0; --k) s.push_back(static_cast<char>((d >> (8 * k)) & 0xff));
  s.append(data.begin(), data.end());
  std::ofstream(path, std::ios::binary) << s;
}

class Shards : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/polis-shards-XXXXXX";
    dir_ = mkdtemp(tmpl);
    // 40 training and 12 test images of 6x5 with 4 classes; pixel values
    // encode (image, position) so any mix-up shows.
    for (int part = 0; part < 2; ++part) {
      const int n = part == 0 ? 40 : 12;
      std::vector<uint8_t> px, lab;
      for (int i = 0; i < n; ++i) {
        lab.push_back(static_cast<uint8_t>(i % 4));
        for (int p = 0; p < 30; ++p) px.push_back(static_cast<uint8_t>((i * 7 + p * 3 + part * 50) % 256));
      }
      pixels_[part] = px;
      labels_[part] = lab;
      WriteIdx(dir_ + (part == 0 ? "/tr-img" : "/te-img"), {n, 6, 5}, px);
      WriteIdx(dir_ + (part == 0 ? "/tr-lab" : "/te-lab"), {n}, lab);
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  StatusOr<PackSummary> Pack(const std::string& out, PackOptions o = {}) {
    o.out = out;
    if (o.records_per_shard == 10000) o.records_per_shard = 16;
    return PackIdx(dir_ + "/tr-img", dir_ + "/tr-lab", dir_ + "/te-img", dir_ + "/te-lab", o);
  }
  proto::DatasetSpec Spec(const std::string& out, int threads = 2) {
    proto::DatasetSpec d;
    d.set_format(proto::DatasetSpec::SHARDS);
    d.set_dir(out);
    d.set_scale(1.0f);
    d.mutable_shards()->set_decode_threads(threads);
    d.mutable_shards()->set_prefetch_records(8);
    return d;
  }

  std::string dir_;
  std::vector<uint8_t> pixels_[2], labels_[2];
};

TEST_F(Shards, TarShardsAreReadByTarAndByPythonAsWebDataset) {
  auto sum = Pack(dir_ + "/ds");
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum->train, 40);
  EXPECT_EQ(sum->train_shards, 3);  // 16 + 16 + 8
  EXPECT_EQ(sum->test_shards, 1);
  int code = 0;
  std::string list = RunCommand("tar -tf " + dir_ + "/ds/train-000000.tar", &code);
  ASSERT_EQ(code, 0) << list;
  EXPECT_EQ(list.substr(0, 28), "000000000.png\n000000000.cls\n");
  // WebDataset's convention: members grouped by the stem before the first
  // dot; .cls holds the label as text.
  const std::string py =
      "import tarfile,sys,collections\n"
      "g=collections.OrderedDict()\n"
      "for m in tarfile.open(sys.argv[1]):\n"
      "  k,e=m.name.split('.',1); g.setdefault(k,{})[e]=tarfile.open(sys.argv[1]).extractfile(m).read()\n"
      "print(len(g), sorted(g[next(iter(g))].keys()), int(g['000000001']['cls']), g['000000001']['png'][:4]==b'\\x89PNG')\n";
  std::ofstream(dir_ + "/wds.py") << py;
  std::string out = RunCommand("python3 " + dir_ + "/wds.py " + dir_ + "/ds/train-000000.tar", &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(out, "16 ['cls', 'png'] 1 True\n");
  EXPECT_TRUE(VerifyShards(dir_ + "/ds").problems.empty());
  // A second pack into the same directory is refused.
  auto again = Pack(dir_ + "/ds");
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("already holds a dataset"), std::string::npos);
}

TEST_F(Shards, GatherGivesTheIdxPixelsWithAndWithoutPrefetch) {
  ASSERT_TRUE(Pack(dir_ + "/ds").ok());
  for (int threads : {0, 2}) {
    auto ds = OpenDataset(Spec(dir_ + "/ds", threads), 7);
    ASSERT_TRUE(ds.ok()) << ds.status().ToString();
    EXPECT_EQ((*ds)->sample_shape(), (std::vector<int64_t>{1, 6, 5}));
    EXPECT_EQ((*ds)->target_width(), 4);
    EXPECT_EQ((*ds)->size(Part::kTrain), 40);
    EXPECT_EQ((*ds)->size(Part::kTest), 12);
    std::vector<int64_t> idx = {39, 0, 17, 16, 5};
    (*ds)->Prefetch(Part::kTrain, idx.data() + 2, 3);
    std::vector<float> x(5 * 30), y(5);
    (*ds)->Gather(Part::kTrain, idx.data(), 5, x.data(), y.data());
    ASSERT_TRUE((*ds)->TakeError().ok());
    for (int k = 0; k < 5; ++k) {
      EXPECT_EQ(y[k], labels_[0][idx[k]]);
      for (int p = 0; p < 30; ++p) ASSERT_EQ(x[k * 30 + p], pixels_[0][idx[k] * 30 + p]) << threads << " " << k;
    }
    int64_t t = 11;
    (*ds)->Gather(Part::kTest, &t, 1, x.data(), y.data());
    EXPECT_EQ(x[3], pixels_[1][11 * 30 + 3]);
  }
  // dataset.validation_fraction holds records out of training, as for IDX.
  auto spec = Spec(dir_ + "/ds");
  spec.set_validation_fraction(0.25f);
  auto split = OpenDataset(spec, 7);
  ASSERT_TRUE(split.ok());
  EXPECT_EQ((*split)->size(Part::kTrain), 30);
  EXPECT_EQ((*split)->size(Part::kValidation), 10);
}

TEST_F(Shards, AugmentationIsSeededPerSampleAndEpochAndOffByDefault) {
  ASSERT_TRUE(Pack(dir_ + "/ds").ok());
  auto spec = Spec(dir_ + "/ds");
  auto plain = OpenDataset(spec, 7);
  spec.mutable_augmentation()->set_crop_padding(1);
  spec.mutable_augmentation()->set_horizontal_flip(true);
  spec.mutable_augmentation()->set_brightness(0.1f);
  auto a = OpenDataset(spec, 7), b = OpenDataset(spec, 7);
  ASSERT_TRUE(plain.ok() && a.ok() && b.ok());
  std::vector<int64_t> idx(40);
  for (int i = 0; i < 40; ++i) idx[i] = i;
  std::vector<float> x0(40 * 30), xa(40 * 30), xb(40 * 30), y(40);
  (*plain)->Gather(Part::kTrain, idx.data(), 40, x0.data(), y.data());
  (*a)->Gather(Part::kTrain, idx.data(), 40, xa.data(), y.data());
  (*b)->Gather(Part::kTrain, idx.data(), 20, xb.data(), y.data());
  (*b)->Gather(Part::kTrain, idx.data() + 20, 20, xb.data() + 20 * 30, y.data());
  EXPECT_EQ(xa, xb);  // the same samples whatever the batches
  EXPECT_NE(xa, x0);
  (*b)->SetEpoch(1);
  (*b)->Gather(Part::kTrain, idx.data(), 40, xb.data(), y.data());
  EXPECT_NE(xa, xb);  // another epoch, other draws
  // Evaluation data is never augmented.
  std::vector<float> t0(30), ta(30);
  int64_t t = 3;
  (*plain)->Gather(Part::kTest, &t, 1, t0.data(), y.data());
  (*a)->Gather(Part::kTest, &t, 1, ta.data(), y.data());
  EXPECT_EQ(t0, ta);
}

// Rewrites one record's bytes in place; with `fix_index` the index's CRC
// and the manifest's SHA-256 follow, so only the image itself is bad.
void Damage(const std::string& ds, int record, bool fix_index) {
  auto m = ReadManifest(ds);
  auto ix = ReadShardIndex(ds, m->train[0]);
  const ShardRecord r = ix->records[record];
  std::fstream f(ds + "/" + m->train[0].tar, std::ios::binary | std::ios::in | std::ios::out);
  std::string junk(r.size - 20, '\x55');
  f.seekp(r.offset + 20);
  f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  f.close();
  if (!fix_index) return;
  std::string bytes(r.size, '\0');
  std::ifstream in(ds + "/" + m->train[0].tar, std::ios::binary);
  in.seekg(r.offset);
  in.read(bytes.data(), r.size);
  auto j = nlohmann::json::parse(*ReadFile(ds + "/" + m->train[0].index));
  j["records"][record][4] = crc32(0, reinterpret_cast<const Bytef*>(bytes.data()), r.size);
  const std::string text = j.dump() + "\n";
  ASSERT_TRUE(WriteFileAtomic(ds + "/" + m->train[0].index, text).ok());
  auto mj = nlohmann::json::parse(*ReadFile(ds + "/dataset.json"));
  mj["parts"]["train"]["shards"][0]["index_sha256"] = Sha256Hex(text);
  ASSERT_TRUE(WriteFileAtomic(ds + "/dataset.json", mj.dump()).ok());
}

TEST_F(Shards, BadChecksumAndCorruptImageAreOneLineEachAndThePolicyDecides) {
  ASSERT_TRUE(Pack(dir_ + "/ds").ok());
  Damage(dir_ + "/ds", 3, /*fix_index=*/false);
  Damage(dir_ + "/ds", 5, /*fix_index=*/true);
  VerifyResult v = VerifyShards(dir_ + "/ds");
  ASSERT_EQ(v.problems.size(), 2u) << testing::PrintToString(v.problems);
  EXPECT_NE(v.problems[0].find("train-000000.tar' offset "), std::string::npos) << v.problems[0];
  EXPECT_NE(v.problems[0].find("000000003.png has CRC-32"), std::string::npos) << v.problems[0];
  EXPECT_NE(v.problems[1].find("000000005.png: corrupt image: PNG"), std::string::npos) << v.problems[1];
  int code = 0;
  std::string out = RunCommand(std::string(POLIS_BINARY_DIR) + "/launch/polis-data verify " + dir_ + "/ds", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("2 problems"), std::string::npos) << out;

  // FAIL: the batch comes back with the first bad record named.
  auto fail = OpenDataset(Spec(dir_ + "/ds"), 7);
  ASSERT_TRUE(fail.ok()) << fail.status().ToString();
  std::vector<float> x(3 * 30), y(3);
  const int64_t kRecord3 = 3;  // no validation split: training index = record
  std::vector<int64_t> idx = {0, kRecord3, 1};
  (*fail)->Gather(Part::kTrain, idx.data(), 3, x.data(), y.data());
  Status st = (*fail)->TakeError();
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("train-000000.tar' offset"), std::string::npos) << st.message();
  EXPECT_TRUE((*fail)->TakeError().ok());
  // SKIP: no error; the bad record's place holds another of the batch.
  auto spec = Spec(dir_ + "/ds");
  spec.mutable_shards()->set_malformed_policy(proto::ShardsSpec::Malformed::SKIP);
  auto skip = OpenDataset(spec, 7);
  (*skip)->Gather(Part::kTrain, idx.data(), 3, x.data(), y.data());
  EXPECT_TRUE((*skip)->TakeError().ok());
  for (int p = 0; p < 30; ++p) EXPECT_EQ(x[30 + p], pixels_[0][p]);
}

TEST_F(Shards, RecordsFromTheCoordinatorAreTheLocalSamplesBitForBit) {
  ASSERT_TRUE(Pack(dir_ + "/ds").ok());
  auto spec = Spec(dir_ + "/ds");
  spec.set_validation_fraction(0.25f);
  spec.mutable_augmentation()->set_crop_padding(1);
  spec.mutable_augmentation()->set_horizontal_flip(true);
  spec.set_source(proto::DatasetSpec::COORDINATOR);
  for (int threads : {0, 2}) {
    spec.mutable_shards()->set_decode_threads(threads);
    CoordinatorThread server(spec);
    auto remote = server.OpenRemote(spec);
    ASSERT_TRUE(remote.ok()) << remote.status().ToString();
    const Dataset& local = server.local();
    EXPECT_TRUE((*remote)->files().empty());  // nothing read on this rank
    EXPECT_EQ((*remote)->sample_shape(), local.sample_shape());
    EXPECT_EQ((*remote)->target_width(), 4);
    for (Part p : {Part::kTrain, Part::kValidation, Part::kTest}) EXPECT_EQ((*remote)->size(p), local.size(p));
    for (int epoch : {0, 1}) {
      local.SetEpoch(epoch);
      (*remote)->SetEpoch(epoch);
      for (Part p : {Part::kTrain, Part::kValidation, Part::kTest}) {
        const int64_t n = local.size(p);
        std::vector<int64_t> idx(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) idx[i] = (i * 7 + 3) % n;  // a permutation (n is 30, 10 or 12)
        std::vector<float> xl(n * 30), yl(n), xr(n * 30), yr(n);
        // Batches of 4 with the rest prefetched, as the worker's loop does.
        for (int64_t b = 0; b < n; b += 4) {
          const int64_t m = std::min<int64_t>(4, n - b);
          local.Gather(p, idx.data() + b, m, xl.data() + b * 30, yl.data() + b);
          (*remote)->Gather(p, idx.data() + b, m, xr.data() + b * 30, yr.data() + b);
          (*remote)->Prefetch(p, idx.data() + b + m, n - b - m);
        }
        ASSERT_TRUE((*remote)->TakeError().ok());
        EXPECT_EQ(xl, xr) << "part " << static_cast<int>(p) << " epoch " << epoch << " threads " << threads;
        EXPECT_EQ(yl, yr);
      }
    }
    // A sample twice in one batch, as with replacement.
    std::vector<int64_t> twice = {5, 5, 2};
    std::vector<float> xl(90), yl(3), xr(90), yr(3);
    local.Gather(Part::kTest, twice.data(), 3, xl.data(), yl.data());
    (*remote)->Gather(Part::kTest, twice.data(), 3, xr.data(), yr.data());
    EXPECT_EQ(xl, xr);
    EXPECT_GT(server.requests(), 0);
  }
}

TEST_F(Shards, BadRecordsOnTheCoordinatorAreNamedAndThePolicyDecides) {
  ASSERT_TRUE(Pack(dir_ + "/ds").ok());
  Damage(dir_ + "/ds", 3, /*fix_index=*/false);  // bad CRC: the coordinator cannot read it
  Damage(dir_ + "/ds", 5, /*fix_index=*/true);   // reads, but the worker cannot decode it
  auto spec = Spec(dir_ + "/ds");
  spec.set_source(proto::DatasetSpec::COORDINATOR);
  std::vector<float> x(3 * 30), y(3);
  for (int64_t bad : {3, 5}) {
    CoordinatorThread server(spec);
    auto fail = server.OpenRemote(spec);
    ASSERT_TRUE(fail.ok());
    std::vector<int64_t> idx = {0, bad, 1};
    (*fail)->Gather(Part::kTrain, idx.data(), 3, x.data(), y.data());
    Status st = (*fail)->TakeError();
    EXPECT_EQ(st.code(), Code::kDataLoss);
    if (bad == 3) {
      EXPECT_NE(st.message().find("train-000000.tar' offset"), std::string::npos) << st.message();
    } else {
      EXPECT_NE(st.message().find("on the coordinator's host, training record 5"), std::string::npos) << st.message();
      EXPECT_NE(st.message().find("corrupt image"), std::string::npos) << st.message();
    }
  }
  spec.mutable_shards()->set_malformed_policy(proto::ShardsSpec::Malformed::SKIP);
  CoordinatorThread server(spec);
  auto skip = server.OpenRemote(spec);
  ASSERT_TRUE(skip.ok());
  std::vector<int64_t> idx = {0, 3, 5};
  (*skip)->Gather(Part::kTrain, idx.data(), 3, x.data(), y.data());
  EXPECT_TRUE((*skip)->TakeError().ok());
  for (int k = 1; k < 3; ++k)
    for (int p = 0; p < 30; ++p) EXPECT_EQ(x[k * 30 + p], pixels_[0][p]);
}

TEST_F(Shards, TruncatedShardIsNamedAtOpenAndByVerify) {
  ASSERT_TRUE(Pack(dir_ + "/ds").ok());
  const std::string tar = dir_ + "/ds/train-000001.tar";
  std::filesystem::resize_file(tar, std::filesystem::file_size(tar) / 2);
  VerifyResult v = VerifyShards(dir_ + "/ds");
  ASSERT_FALSE(v.problems.empty());
  EXPECT_NE(v.problems[0].find("train-000001.tar' is "), std::string::npos) << v.problems[0];
  EXPECT_NE(v.problems[0].find("(truncated)"), std::string::npos) << v.problems[0];
  auto fail = OpenDataset(Spec(dir_ + "/ds"), 7);
  ASSERT_FALSE(fail.ok());
  EXPECT_NE(fail.status().message().find("train-000001.tar' is truncated"), std::string::npos)
      << fail.status().message();
  EXPECT_NE(fail.status().message().find("at offset"), std::string::npos) << fail.status().message();
  auto spec = Spec(dir_ + "/ds");
  spec.mutable_shards()->set_malformed_policy(proto::ShardsSpec::Malformed::SKIP);
  auto skip = OpenDataset(spec, 7);
  ASSERT_TRUE(skip.ok()) << skip.status().ToString();
  EXPECT_LT((*skip)->size(Part::kTrain), 40);
  EXPECT_GT((*skip)->size(Part::kTrain), 16);
  // An interrupted pack leaves no manifest: refused with a sentence.
  std::filesystem::remove(dir_ + "/ds/dataset.json");
  auto none = OpenDataset(Spec(dir_ + "/ds"), 7);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("pack did not finish"), std::string::npos);
}

// A folder of class folders: RGB and grey PNG and JPEG files of other
// sizes, resized; a missing class folder and a corrupt image are one line.
TEST_F(Shards, ImageFoldersPackWithResizeAndClearErrors) {
  const std::string root = dir_ + "/photos";
  const std::vector<std::string> classes = {"cat", "dog", "owl"};
  for (size_t c = 0; c < classes.size(); ++c) {
    std::filesystem::create_directories(root + "/" + classes[c]);
    for (int i = 0; i < 5; ++i) {
      Pixels p;
      p.height = 12 + i;
      p.width = 20;
      p.channels = i == 4 ? 1 : 3;
      p.hwc.assign(static_cast<size_t>(p.height) * p.width * p.channels, 0);
      for (size_t k = 0; k < p.hwc.size(); ++k) p.hwc[k] = static_cast<uint8_t>(k % p.channels == c ? 220 : 30);
      const ImageEncoding e = i % 2 ? ImageEncoding::kJpeg : ImageEncoding::kPng;
      auto bytes = EncodeImage(p, e);
      ASSERT_TRUE(bytes.ok());
      std::ofstream(fmt::format("{}/{}/{}.{}", root, classes[c], i, i % 2 ? "JPG" : "png"), std::ios::binary) << *bytes;
    }
  }
  PackOptions o;
  o.out = dir_ + "/ds";
  o.height = 8;
  o.width = 10;
  auto sum = PackFolder(root, "", {}, o);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum->train + sum->test, 15);
  EXPECT_EQ(sum->test, 3);  // one of each class's five
  auto ds = OpenDataset(Spec(dir_ + "/ds"), 1);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ((*ds)->sample_shape(), (std::vector<int64_t>{3, 8, 10}));
  auto m = ReadManifest(dir_ + "/ds");
  EXPECT_EQ(m->classes, classes);
  // The dominant channel of each RGB training image is its class.
  std::vector<float> x(3 * 80), y(1);
  for (int64_t i = 0; i < (*ds)->size(Part::kTrain); ++i) {
    (*ds)->Gather(Part::kTrain, &i, 1, x.data(), y.data());
    float best = -1;
    int arg = 0;
    for (int c = 0; c < 3; ++c) {
      if (x[c * 80 + 40] > best) best = x[c * 80 + 40], arg = c;
    }
    if (x[40] != x[80 + 40]) {  // not the grey one
      EXPECT_EQ(arg, static_cast<int>(y[0]));
    }
  }
  EXPECT_TRUE(VerifyShards(dir_ + "/ds").problems.empty());

  // --classes naming a folder that is not there.
  o.out = dir_ + "/ds2";
  auto missing = PackFolder(root, "", {"cat", "dog", "emu"}, o);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message().find('\n'), std::string::npos);
  EXPECT_NE(missing.status().message().find("class folder '" + root + "/emu' is missing"), std::string::npos)
      << missing.status().message();
  // A test folder without one of the classes.
  std::filesystem::create_directories(dir_ + "/test/cat");
  std::filesystem::create_directories(dir_ + "/test/dog");
  std::filesystem::copy(root + "/cat/0.png", dir_ + "/test/cat/0.png");
  std::filesystem::copy(root + "/dog/0.png", dir_ + "/test/dog/0.png");
  auto no_owl = PackFolder(root, dir_ + "/test", {}, o);
  ASSERT_FALSE(no_owl.ok());
  EXPECT_NE(no_owl.status().message().find("class folder '" + dir_ + "/test/owl' is missing"), std::string::npos)
      << no_owl.status().message();
  // A corrupt JPEG: named; --skip-bad leaves it out.
  std::string jpg = *ReadFile(root + "/dog/1.JPG");
  std::ofstream(root + "/dog/1.JPG", std::ios::binary) << jpg.substr(0, jpg.size() / 3);
  auto bad = PackFolder(root, "", {}, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("cannot decode '" + root + "/dog/1.JPG': JPEG"), std::string::npos)
      << bad.status().message();
  o.skip_bad = true;
  std::vector<std::string> warned;
  o.warn = [&](const std::string& l) { warned.push_back(l); };
  auto skipped = PackFolder(root, "", {}, o);
  ASSERT_TRUE(skipped.ok()) << skipped.status().ToString();
  EXPECT_EQ(skipped->skipped, 1);
  ASSERT_EQ(warned.size(), 1u);
  EXPECT_NE(warned[0].find("dog/1.JPG"), std::string::npos);
  // The manifest says what was left out, and so does the dataset's report
  // (which a job prints and its model card keeps).
  auto packed = ReadManifest(o.out);
  ASSERT_TRUE(packed.ok()) << packed.status().ToString();
  EXPECT_NE(packed->report.find("1 images that do not decode left out (--skip-bad)"), std::string::npos)
      << packed->report;
  EXPECT_NE(packed->report.find("cannot decode '" + root + "/dog/1.JPG'"), std::string::npos) << packed->report;
  proto::DatasetSpec d;
  d.set_format(proto::DatasetSpec::SHARDS);
  d.set_dir(o.out);
  auto opened = OpenDataset(d, 1);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_NE((*opened)->Report().find("\npacked from: folder " + root), std::string::npos) << (*opened)->Report();
}

// polis-train --check: the model is built on the manifest's shape and
// classes; settings of another format are refused.
TEST_F(Shards, JobCheckUsesTheManifestAndRefusesSettingsThatDoNotApply) {
  ASSERT_TRUE(Pack(dir_ + "/ds").ok());
  auto job = [&](const std::string& dataset, int units) {
    return ParseJobText(fmt::format("name: \"t\" model {{ layer {{ type: \"Flatten\" }} layer {{ type: \"Dense\" "
                                    "dense_param {{ units: {} }} }} }} dataset {{ {} }} sync {{ mode: ALLREDUCE servers: 0 }}",
                                    units, dataset),
                        "t.pbtxt");
  };
  auto good = job("format: SHARDS dir: \"" + dir_ + "/ds\" augmentation { horizontal_flip: true }", 4);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  auto model = CheckJob(*good);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ(model->input_shape(), (nn::Shape{1, 6, 5}));
  auto wrong = job("format: SHARDS dir: \"" + dir_ + "/ds\"", 3);
  ASSERT_TRUE(wrong.ok());
  auto refused = CheckJob(*wrong);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("has 4 classes"), std::string::npos) << refused.status().message();
  auto idx_aug = job("format: IDX dir: \"fashion-mnist\" augmentation { crop_padding: 2 }", 10);
  ASSERT_FALSE(idx_aug.ok());
  EXPECT_NE(idx_aug.status().message().find("dataset.augmentation"), std::string::npos) << idx_aug.status().message();
  auto classes = job("format: SHARDS dir: \"" + dir_ + "/ds\" num_classes: 4", 4);
  ASSERT_FALSE(classes.ok());
  EXPECT_NE(classes.status().message().find("dataset.num_classes"), std::string::npos);
  auto missing = job("format: SHARDS dir: \"" + dir_ + "/none\"", 4);
  ASSERT_TRUE(missing.ok());
  auto none = CheckJob(*missing);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("dataset.json' is missing"), std::string::npos) << none.status().message();
  auto idx_source = job("format: IDX dir: \"fashion-mnist\" source: COORDINATOR", 10);
  ASSERT_FALSE(idx_source.ok());
  EXPECT_NE(idx_source.status().message().find("dataset.source"), std::string::npos) << idx_source.status().message();
  EXPECT_NE(idx_source.status().message().find("dataset.format SHARDS"), std::string::npos);
}

TEST(ImageCodec, PngAndJpegRoundTripAndResize) {
  Pixels p;
  p.height = 4;
  p.width = 6;
  p.channels = 3;
  for (int i = 0; i < 72; ++i) p.hwc.push_back(static_cast<uint8_t>(i * 3));
  auto png = EncodeImage(p, ImageEncoding::kPng);
  ASSERT_TRUE(png.ok());
  auto back = DecodeImage(*png, 3);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->hwc, p.hwc);
  auto grey = DecodeImage(*png, 1);
  ASSERT_TRUE(grey.ok());
  EXPECT_EQ(grey->hwc.size(), 24u);
  auto jpg = EncodeImage(p, ImageEncoding::kJpeg, 95);
  ASSERT_TRUE(jpg.ok());
  auto j = DecodeImage(*jpg, 3);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->height, 4);
  EXPECT_EQ(j->width, 6);
  EXPECT_FALSE(DecodeImage("GIF89a....", 3).ok());
  Pixels r = Resize(p, 8, 12);
  EXPECT_EQ(r.hwc.size(), 8u * 12 * 3);
  EXPECT_EQ(Resize(p, 4, 6).hwc, p.hwc);
}

// .npy records: NumPy reads them as they are, the reader takes back the
// pixels, and a header it cannot take is one line; shards packed as npy
// give the IDX pixels like PNG ones.
TEST_F(Shards, NpyRecordsAreReadByNumpyAndGiveTheIdxPixels) {
  Pixels p;
  p.height = 5;
  p.width = 7;
  p.channels = 3;
  for (int i = 0; i < 105; ++i) p.hwc.push_back(static_cast<uint8_t>(i * 2 + 1));
  auto npy = EncodeImage(p, ImageEncoding::kNpy);
  ASSERT_TRUE(npy.ok());
  EXPECT_EQ((npy->size() - 105) % 64, 0u);  // NumPy's alignment of the header
  auto back = DecodeImage(*npy, 3);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->hwc, p.hwc);
  std::ofstream(dir_ + "/x.npy", std::ios::binary) << *npy;
  int code = 0;
  std::string out = RunCommand("/usr/bin/python3 -c \"import numpy, sys; a = numpy.load(sys.argv[1]); "
                               "print(a.shape, a.dtype, int(a.sum()))\" " + dir_ + "/x.npy", &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(out, "(5, 7, 3) uint8 11025\n");
  auto grey = DecodeImage(*npy, 1);
  ASSERT_FALSE(grey.ok());
  EXPECT_NE(grey.status().message().find("npy: 3 channel(s); 1 expected"), std::string::npos) << grey.status().message();
  std::string f32 = *npy;
  f32.replace(f32.find("|u1"), 3, "<f4");
  auto refused = DecodeImage(f32, 3);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("dtype '<f4'"), std::string::npos) << refused.status().message();
  auto cut = DecodeImage(npy->substr(0, npy->size() - 1), 3);
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("104 bytes of pixels"), std::string::npos) << cut.status().message();

  PackOptions o;
  o.encoding = ImageEncoding::kNpy;
  ASSERT_TRUE(Pack(dir_ + "/ds", o).ok());
  EXPECT_TRUE(VerifyShards(dir_ + "/ds").problems.empty());
  auto ds = OpenDataset(Spec(dir_ + "/ds"), 7);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  std::vector<int64_t> idx = {39, 0, 17};
  std::vector<float> x(3 * 30), y(3);
  (*ds)->Gather(Part::kTrain, idx.data(), 3, x.data(), y.data());
  ASSERT_TRUE((*ds)->TakeError().ok());
  for (int k = 0; k < 3; ++k)
    for (int q = 0; q < 30; ++q) ASSERT_EQ(x[k * 30 + q], pixels_[0][idx[k] * 30 + q]);
}

}  // namespace
}  // namespace polis::data
