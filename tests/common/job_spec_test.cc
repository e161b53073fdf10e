// Bad job specs are refused before any process starts work, naming the
// file, the field and the reason.
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>
#include "tests/prereq.h"
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <set>

#include "common/data/pack.h"
#include "common/data/shard_format.h"
#include "common/fs.h"
#include "common/job_spec.h"
#include "common/nn/model.h"
#include "polis_config.h"

namespace polis {
namespace {

const char* kModel = R"(
model {
  layer { type: "Conv2D" activation: RELU conv2d_param { filters: 4 kernel_size: 3 } }
  layer { type: "MaxPool2D" }
  layer { type: "Flatten" }
  layer { type: "Dense" dense_param { units: 3 } }
})";

// A tiny IDX dataset: 6 training and 4 test images of 8x8, 3 classes.
class JobSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/polis-job-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    WriteIdx("train-images", {6, 8, 8});
    WriteIdx("train-labels", {6});
    WriteIdx("test-images", {4, 8, 8});
    WriteIdx("test-labels", {4});
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  void WriteIdx(const std::string& name, std::vector<uint32_t> dims) {
    std::string bytes = {0, 0, 8, static_cast<char>(dims.size())};
    size_t n = 1;
    for (uint32_t d : dims) {
      for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<char>((d >> s) & 0xff));
      n *= d;
    }
    for (size_t i = 0; i < n; ++i) bytes.push_back(static_cast<char>(i % 3));
    std::ofstream(dir_ + "/" + name, std::ios::binary) << bytes;
  }

  std::string Job(const std::string& model = kModel, const std::string& extra = "") {
    return "name: \"t\"\n" + model + "\ndataset { dir: \"" + dir_ +
           "\" train_images: \"train-images\" train_labels: \"train-labels\" test_images: "
           "\"test-images\" test_labels: \"test-labels\" num_classes: 3 }\n" + extra;
  }

  // Writes raw bytes, or gzip-compressed ones when gz is true.
  void WriteBytes(const std::string& name, const std::string& bytes, bool gz = false) {
    if (!gz) {
      std::ofstream(dir_ + "/" + name, std::ios::binary) << bytes;
      return;
    }
    gzFile f = gzopen((dir_ + "/" + name).c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  }
  std::string ReadBytes(const std::string& name) {
    std::ifstream in(dir_ + "/" + name, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // The job with more settings inside its dataset { }.
  std::string InDataset(const std::string& settings) {
    std::string job = Job();
    job.insert(job.find("num_classes: 3") + 14, " " + settings);
    return job;
  }

  Status Check(const std::string& text) {
    auto job = ParseJobText(text, "bad.pbtxt");
    if (!job.ok()) return job.status();
    auto model = CheckJob(*job);
    return model.ok() ? Status::Ok() : model.status();
  }

  std::string dir_;
};

void ExpectRefused(const Status& st, std::initializer_list<const char*> words) {
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  for (const char* w : words)
    EXPECT_NE(st.message().find(w), std::string::npos) << "'" << w << "' not in: " << st.message();
}

TEST_F(JobSpecTest, GoodJobPasses) { EXPECT_TRUE(Check(Job()).ok()) << Check(Job()).ToString(); }

TEST_F(JobSpecTest, UnknownFieldNamesLineAndField) {
  ExpectRefused(Check(Job(kModel, "training { batch_sise: 3 }")), {"bad.pbtxt:", "batch_sise"});
}

TEST_F(JobSpecTest, MissingRequiredFields) {
  ExpectRefused(Check("model {" + std::string(kModel) + "}"), {"bad.pbtxt"});
  ExpectRefused(Check(Job().substr(Job().find('\n') + 1)), {"bad.pbtxt", "'name'", "required"});
  ExpectRefused(Check("name: \"t\"\n" + std::string(kModel)), {"'dataset'", "required"});
  ExpectRefused(Check(Job(R"(model { layer { conv2d_param { filters: 4 kernel_size: 3 } } })")),
                {"model.layer[0].type", "required"});
  ExpectRefused(Check(Job(R"(model { layer { type: "Conv2D" conv2d_param { kernel_size: 3 } } })")),
                {"layer[0]", "filters"});
}

TEST_F(JobSpecTest, InconsistentShapes) {
  // The last layer must give one output per class.
  ExpectRefused(Check(Job(R"(model { layer { type: "Flatten" } layer { type: "Dense" dense_param { units: 5 } } })")),
                {"num_classes", "[5]"});
  // A kernel larger than its input.
  ExpectRefused(Check(Job(R"(model { layer { type: "Conv2D" conv2d_param { filters: 2 kernel_size: 9 } } })")),
                {"layer[0]", "does not fit"});
  // expect_parameters disagrees with the layers.
  ExpectRefused(Check(Job(R"(model { layer { type: "Flatten" } layer { type: "Dense" dense_param { units: 3 } } expect_parameters: 10 })")),
                {"expect_parameters", "195"});
  // An unknown layer type lists the known ones.
  ExpectRefused(Check(Job(R"(model { layer { type: "Conv3D" } })")), {"Conv3D", "Conv2D", "MaxPool2D"});
}

TEST_F(JobSpecTest, BadValues) {
  ExpectRefused(Check(Job(kModel, "training { batch_size: 0 }")), {"training.batch_size"});
  ExpectRefused(Check(Job(kModel, "training { epochs: -1 }")), {"training.epochs"});
  ExpectRefused(Check(Job(kModel, "optimizer { learning_rate: -1 }")), {"optimizer.learning_rate"});
  ExpectRefused(Check(Job(kModel, "sync { servers: 0 }")), {"sync.servers"});
}

TEST_F(JobSpecTest, DatasetProblemsNameTheFile) {
  std::remove((dir_ + "/test-images").c_str());
  Status st = Check(Job());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("test-images"), std::string::npos) << st.message();
  WriteIdx("test-images", {5, 8, 8});  // 5 images, 4 labels
  st = Check(Job());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("has 4 items"), std::string::npos) << st.message();
}

TEST(JobSpecFiles, ShippedJobsAreValid) {
  for (const char* name : {"fashion_cnn.pbtxt"}) {
    auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/" + name);
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    EXPECT_EQ(job->spec.training().batch_size(), 32);
    EXPECT_FLOAT_EQ(job->spec.optimizer().epsilon(), 1e-7f);
    if (PathExists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) {
      auto model = CheckJob(*job);
      ASSERT_TRUE(model.ok()) << model.status().ToString();
      EXPECT_EQ(model->parameter_count(), 93322);
    }
  }
}


// ---------------------------------------------------------------- memory

TEST_F(JobSpecTest, HugeBatchIsRefusedWithTheMemoryItNeeds) {
  // Used to pass the check, then kill both workers with std::bad_alloc.
  Status st = Check(Job(kModel, "training { batch_size: 1000000000 }"));
  ExpectRefused(st, {"'training.batch_size'", "1000000000 samples need about", "per worker",
                     "activations", "this machine has"});
  EXPECT_LT(st.message().size(), 400u) << st.message();
  ExpectRefused(Check(Job(kModel, "training { eval_batch_size: 1000000000 }")),
                {"'training.eval_batch_size'", "1000000000 samples need about", "this machine has"});
}

TEST(WorkerMemory, CountsEveryPartAndTheModeOptimizerState) {
  proto::JobSpec spec;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      R"(model { layer { type: "Flatten" } layer { type: "Dense" dense_param { units: 10 } } }
         training { batch_size: 100 eval_batch_size: 50 shard_size: 1073741824 })",
      &spec));
  auto model = nn::Model::Build(spec.model(), {1, 28, 28});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  WorkerMemory ps = EstimateWorkerMemory(spec, *model, 1e6, 1000);
  EXPECT_EQ(ps.optimizer, 0);  // the servers hold it
  EXPECT_GE(ps.parameters, 2 * 4.0 * model->parameter_count());
  EXPECT_GE(ps.batches, 8.0 * 1073741824);  // the shard queue
  EXPECT_GE(ps.activations, 4.0 * 100 * (784 + 10));
  EXPECT_GE(ps.eval, 4.0 * 50 * (784 + 10));
  EXPECT_GE(ps.dataset, 1e6);
  spec.mutable_sync()->set_mode(proto::SyncSpec::ALLREDUCE);
  EXPECT_EQ(EstimateWorkerMemory(spec, *model, 1e6, 1000).optimizer, 2 * 4.0 * model->parameter_count());
  EXPECT_EQ(HumanBytes(3.1 * 1024 * 1024 * 1024 * 1024), "3.1 TiB");
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_GT(AvailableMemoryBytes(), int64_t{1} << 26);
}

// Bytes the allocator has handed out (heap and mmap'd blocks).
double AllocatedBytes() {
  const struct mallinfo2 mi = mallinfo2();
  return static_cast<double>(mi.uordblks + mi.hblkhd);
}

// The estimate follows what a training Network really allocates: within a
// factor of it, measured after a forward and a backward.
TEST(WorkerMemory, ActivationEstimateMatchesATrainingNetwork) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "a sanitizer replaces malloc, so mallinfo2 measures nothing";
#endif
  auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn.pbtxt");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  auto model = nn::Model::Build(job->spec.model(), {1, 28, 28});
  ASSERT_TRUE(model.ok());
  const int64_t batch = 256;
  job->spec.mutable_training()->set_batch_size(batch);
  std::vector<float> params(model->parameter_count()), grads(model->parameter_count() + 1);
  model->InitParams(params.data(), 1);
  const double before = AllocatedBytes();
  double measured = 0;
  {
    nn::Network net(*model, batch, params.data(), grads.data(), true);
    std::fill(net.input(), net.input() + batch * 784, 0.5f);
    net.Forward();
    std::fill(net.output_diff(), net.output_diff() + batch * 10, 0.01f);
    net.Backward();
    measured = AllocatedBytes() - before;
  }
  const double estimated = EstimateWorkerMemory(job->spec, *model, 0, 0).activations;
  std::printf("fashion_cnn, batch %lld: training network allocates %s; estimated %s\n",
              static_cast<long long>(batch), HumanBytes(measured).c_str(), HumanBytes(estimated).c_str());
  EXPECT_GT(estimated, 0.5 * measured);
  EXPECT_LT(estimated, 4 * measured);
}

// ---------------------------------------------------------------- ranges

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

struct NumericField {
  std::string path;      // "model.layer[0].conv2d_param.filters"
  std::string doc_path;  // "model.layer[].conv2d_param.filters"
  std::vector<const FieldDescriptor*> chain;
};

void CollectNumeric(const Descriptor* d, const std::string& path, const std::string& doc,
                    std::vector<const FieldDescriptor*> chain, std::vector<NumericField>* out) {
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    auto c = chain;
    c.push_back(f);
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      CollectNumeric(f->message_type(), path + f->name() + (f->is_repeated() ? "[0]." : "."),
                     doc + f->name() + (f->is_repeated() ? "[]." : "."), c, out);
      continue;
    }
    if (IsNumericField(f)) out->push_back({path + f->name(), doc + f->name(), c});
  }
}

std::vector<NumericField> AllNumericFields() {
  std::vector<NumericField> out;
  CollectNumeric(proto::JobSpec::descriptor(), "", "", {}, &out);
  return out;
}

// Sets the field at the end of the chain, creating the messages on the way
// (the first element of a repeated one). False when the type cannot hold v.
bool SetNumeric(Message* root, const std::vector<const FieldDescriptor*>& chain, long double v) {
  Message* m = root;
  for (size_t i = 0; i + 1 < chain.size(); ++i) {
    const auto* r = m->GetReflection();
    if (!chain[i]->is_repeated()) m = r->MutableMessage(m, chain[i]);
    else m = r->FieldSize(*m, chain[i]) ? r->MutableRepeatedMessage(m, chain[i], 0) : r->AddMessage(m, chain[i]);
  }
  const FieldDescriptor* f = chain.back();
  const auto* r = m->GetReflection();
  auto fits = [&](long double lo, long double hi) { return !std::isnan(v) && v >= lo && v <= hi && v == std::floor(v); };
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      if (!fits(INT32_MIN, INT32_MAX)) return false;
      r->SetInt32(m, f, static_cast<int32_t>(v));
      return true;
    case FieldDescriptor::CPPTYPE_INT64:
      if (!fits(static_cast<long double>(INT64_MIN), static_cast<long double>(INT64_MAX))) return false;
      r->SetInt64(m, f, static_cast<int64_t>(v));
      return true;
    case FieldDescriptor::CPPTYPE_UINT32:
      if (!fits(0, UINT32_MAX)) return false;
      r->SetUInt32(m, f, static_cast<uint32_t>(v));
      return true;
    case FieldDescriptor::CPPTYPE_UINT64:
      if (!fits(0, static_cast<long double>(UINT64_MAX))) return false;
      r->SetUInt64(m, f, static_cast<uint64_t>(v));
      return true;
    case FieldDescriptor::CPPTYPE_FLOAT:
      r->SetFloat(m, f, static_cast<float>(v));
      return true;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      r->SetDouble(m, f, static_cast<double>(v));
      return true;
    default:
      return false;
  }
}

// Puts the job in the mode where the field applies (a setting of another
// mode is refused for that reason alone, which this test is not about).
void MakeApplicable(proto::JobSpec* spec, const std::string& path) {
  static const std::map<std::string, std::string> kLayerOf = {
      {"conv2d_param", "Conv2D"}, {"pool2d_param", "MaxPool2D"}, {"dense_param", "Dense"},
      {"embedding_param", "Embedding"}, {"recurrent_param", "LSTM"}, {"dropout_param", "Dropout"},
      {"layer_norm_param", "LayerNorm"}, {"gelu_param", "GELU"},
      {"attention_param", "MultiHeadSelfAttention"}, {"transformer_param", "TransformerEncoderBlock"},
      {"positional_encoding_param", "PositionalEncoding"}, {"sequence_pool_param", "SequencePool"}};
  const std::string layer = "model.layer[0].";
  if (path.rfind(layer, 0) == 0) {
    const std::string param = path.substr(layer.size(), path.find('.', layer.size()) - layer.size());
    spec->mutable_model()->mutable_layer(0)->Clear();
    spec->mutable_model()->mutable_layer(0)->set_type(kLayerOf.count(param) ? kLayerOf.at(param) : "Dense");
  }
  if (path.rfind("dataset.timeseries.", 0) == 0) {
    auto* d = spec->mutable_dataset();
    d->Clear();
    d->set_format(proto::DatasetSpec::CSV);
    d->mutable_timeseries()->set_path("series.csv");
    d->mutable_timeseries()->set_target_column("y");
    if (path == "dataset.timeseries.max_fill_steps")
      d->mutable_timeseries()->set_missing_policy(proto::TimeSeriesSpec::Missing::FORWARD_FILL);
  }
  if (path.rfind("dataset.shards.", 0) == 0 || path.rfind("dataset.augmentation.", 0) == 0) {
    auto* d = spec->mutable_dataset();
    d->Clear();
    d->set_format(proto::DatasetSpec::SHARDS);
    d->set_dir("shards");
  }
  if (path == "sync.staleness") spec->mutable_sync()->set_consistency(proto::SyncSpec::SSP);
  if (path == "privacy.secure_aggregation_bound") {  // secure aggregation alone
    spec->mutable_privacy()->set_secure_aggregation(true);
  } else if (path.rfind("privacy.", 0) == 0) {  // a complete DP-SGD block around the field
    auto* p = spec->mutable_privacy();
    if (path != "privacy.target_epsilon") p->set_noise_multiplier(1.1);
    p->set_delta(1e-5);
    p->set_max_grad_norm(1);
  }
  if (path.rfind("training.early_stopping.", 0) == 0)
    spec->mutable_training()->mutable_early_stopping()->set_metric("val_loss");
  if (path == "sync.bucket_bytes" || path == "sync.local_steps") {
    spec->mutable_sync()->set_mode(proto::SyncSpec::ALLREDUCE);
    spec->mutable_sync()->set_servers(0);
  }
  if (path == "optimizer.momentum") spec->mutable_optimizer()->set_type(proto::OptimizerSpec::SGD);
  if (path == "optimizer.schedule.step_size" || path == "optimizer.schedule.gamma")
    spec->mutable_optimizer()->mutable_schedule()->set_type(proto::LrSchedule::STEP);
  if (path == "optimizer.schedule.total_steps" || path == "optimizer.schedule.min_lr")
    spec->mutable_optimizer()->mutable_schedule()->set_type(proto::LrSchedule::COSINE);
  if (path == "model.huber_delta") spec->mutable_model()->set_loss(proto::ModelSpec::HUBER);
  if (path == "monitoring.timeline_max_mb") spec->mutable_monitoring()->set_timeline_path("timeline.json");
}

// A value the range accepts: the default if it does, else the closed lower
// bound, else just inside it.
long double ValidValue(const FieldDescriptor* f, const FieldRange& r) {
  long double def = 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: def = f->default_value_int32(); break;
    case FieldDescriptor::CPPTYPE_INT64: def = f->default_value_int64(); break;
    case FieldDescriptor::CPPTYPE_UINT32: def = f->default_value_uint32(); break;
    case FieldDescriptor::CPPTYPE_UINT64: def = f->default_value_uint64(); break;
    case FieldDescriptor::CPPTYPE_FLOAT: def = f->default_value_float(); break;
    default: def = f->default_value_double();
  }
  if (r.Contains(def)) return def;
  if (!r.lo_open) return r.lo;
  const bool is_float = f->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT || f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE;
  return is_float ? (r.lo + r.hi) / 2 : r.lo + 1;
}

// Every numeric field of the job proto, by construction: a field without a
// range fails here; every out-of-range, non-finite and extreme value is
// refused at job check with the field's path.
TEST_F(JobSpecTest, EveryNumericFieldHasItsRangeChecked) {
  proto::JobSpec base;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(Job(), &base));
  const long double kInf = std::numeric_limits<long double>::infinity();
  int fields = 0, refusals = 0;
  for (const NumericField& nf : AllNumericFields()) {
    SCOPED_TRACE(nf.path);
    const FieldDescriptor* f = nf.chain.back();
    const FieldRange* range = DeclaredRange(f);
    ASSERT_NE(range, nullptr) << nf.path << " (" << f->full_name()
                              << ") has no [(range) = \"...\"] annotation in job.proto";
    ++fields;
    const bool is_float = f->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT || f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE;
    auto with = [&](long double v, bool* representable) {
      proto::JobSpec spec = base;
      MakeApplicable(&spec, nf.path);
      *representable = SetNumeric(&spec, nf.chain, v);
      return ValidateJobFields(spec, "t.pbtxt");
    };
    bool rep = false;
    const long double good = ValidValue(f, *range);
    Status ok = with(good, &rep);
    ASSERT_TRUE(rep);
    ASSERT_TRUE(ok.ok()) << "a valid " << static_cast<double>(good) << " is refused: " << ok.ToString();

    std::vector<long double> bad = {INT32_MAX, INT32_MIN, static_cast<long double>(INT64_MAX),
                                    static_cast<long double>(INT64_MIN), static_cast<long double>(UINT64_MAX)};
    if (!range->any) {
      if (is_float) {
        const float lo = static_cast<float>(range->lo), hi = static_cast<float>(range->hi);
        bad.push_back(range->lo_open ? lo : std::nextafter(lo, -HUGE_VALF));
        bad.push_back(range->hi_open ? hi : std::nextafter(hi, HUGE_VALF));
      } else {
        bad.push_back(range->lo_open ? range->lo : range->lo - 1);
        bad.push_back(range->hi_open ? range->hi : range->hi + 1);
      }
    }
    if (is_float) {
      for (long double v : {1e30L, -1e30L, kInf, -kInf}) bad.push_back(v);
      bad.push_back(std::numeric_limits<long double>::quiet_NaN());
    }
    for (long double v : bad) {
      Status st = with(v, &rep);
      if (!rep) continue;  // the type cannot hold it (a negative uint64)
      const float stored = static_cast<float>(v);
      const bool inside = is_float ? range->Contains(stored) : range->Contains(v);
      if (inside) {
        EXPECT_TRUE(st.ok()) << static_cast<double>(v) << " is in " << range->text << ": " << st.ToString();
        continue;
      }
      ++refusals;
      ASSERT_FALSE(st.ok()) << static_cast<double>(v) << " is outside " << range->text << " but accepted";
      EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
      EXPECT_NE(st.message().find("'" + nf.path + "'"), std::string::npos) << st.message();
      EXPECT_TRUE(st.message().find("must be in " ) != std::string::npos ||
                  st.message().find("finite") != std::string::npos) << st.message();
    }
  }
  EXPECT_GE(fields, 50);
  std::printf("%d numeric fields, %d out-of-range values refused\n", fields, refusals);
}

TEST(JobSpecRanges, GrammarAndClosedBounds) {
  auto r = ParseFieldRange("[0, 1)");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->Contains(0));
  EXPECT_FALSE(r->Contains(1));
  EXPECT_FALSE(r->Contains(std::numeric_limits<long double>::quiet_NaN()));
  r = ParseFieldRange("(0, 1e12]");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->Contains(0));
  EXPECT_TRUE(r->Contains(1e12L));
  EXPECT_TRUE(ParseFieldRange("any")->Contains(-1e300L));
  for (const char* bad : {"", "[1, 0]", "[0 1]", "0, 1", "[a, 1]", "[0, 1, 2]", "[0, inf"})
    EXPECT_FALSE(ParseFieldRange(bad).ok()) << bad;
}

// docs/job-spec.md lists every numeric field with the range declared in
// job.proto; on a mismatch this prints the table to paste.
TEST(JobSpecRanges, DocsListEveryDeclaredRange) {
  std::ifstream in(std::string(POLIS_SOURCE_DIR) + "/docs/job-spec.md");
  const std::string doc((std::istreambuf_iterator<char>(in)), {});
  std::string table, missing;
  for (const NumericField& nf : AllNumericFields()) {
    const FieldRange* r = DeclaredRange(nf.chain.back());
    ASSERT_NE(r, nullptr) << nf.path;
    const std::string row = "| `" + nf.doc_path + "` | `" + r->text + "` |";
    table += row + "\n";
    if (doc.find(row) == std::string::npos) missing += row + "\n";
  }
  EXPECT_TRUE(missing.empty()) << "docs/job-spec.md lacks these rows:\n" << missing << "\nthe whole table:\n" << table;
}

// ----------------------------------------------------- values and modes

TEST_F(JobSpecTest, NonFiniteAndNegativeSettingsNameTheField) {
  ExpectRefused(Check(Job(kModel, "optimizer { learning_rate: inf }")), {"'optimizer.learning_rate'", "finite", "inf"});
  ExpectRefused(Check(InDataset("scale: nan")), {"'dataset.scale'", "finite"});
  // Used to deadlock the servers until the 300 s timeout.
  ExpectRefused(Check(Job(kModel, "sync { consistency: SSP staleness: -3 }")), {"'sync.staleness'", "[0, 1000000]", "-3"});
  ExpectRefused(Check(Job(kModel, "training { keep_checkpoints: 0 }")), {"'training.keep_checkpoints'"});
  ExpectRefused(Check(Job(kModel, "training { checkpoint_every_steps: -1 }")), {"'training.checkpoint_every_steps'"});
  ExpectRefused(Check(Job(R"(model { layer { type: "Dropout" dropout_param { rate: 1 } } })")),
                {"'model.layer[0].dropout_param.rate'", "[0, 1)"});
}

TEST_F(JobSpecTest, SettingsOfAnotherModeAreRefused) {
  ExpectRefused(Check(Job(kModel, "sync { consistency: BSP staleness: 2 }")), {"'sync.staleness'", "SSP"});
  ExpectRefused(Check(Job(kModel, "sync { allreduce_algorithm: \"ring\" }")), {"'sync.allreduce_algorithm'", "ALLREDUCE"});
  ExpectRefused(Check(Job(kModel, "sync { compression: BF16 }")), {"'sync.compression'"});
  ExpectRefused(Check(Job(kModel, "sync { bucket_bytes: 1024 }")), {"'sync.bucket_bytes'"});
  ExpectRefused(Check(Job(kModel, "sync { mode: ALLREDUCE servers: 0 ps_piece_bytes: 1024 }")), {"'sync.ps_piece_bytes'"});
  ExpectRefused(Check(Job(R"(model { layer { type: "Flatten" } layer { type: "Dense" dense_param { units: 3 } } huber_delta: 2 })")),
                {"'model.huber_delta'", "HUBER"});
  ExpectRefused(Check(Job(kModel, "optimizer { type: ADAM momentum: 0.9 }")), {"'optimizer.momentum'", "SGD"});
  ExpectRefused(Check(Job(kModel, "optimizer { type: SGD beta1: 0.8 }")), {"'optimizer.beta1'"});
  ExpectRefused(Check(Job(kModel, "optimizer { schedule { gamma: 0.5 } }")), {"'optimizer.schedule.gamma'", "STEP"});
  ExpectRefused(Check(InDataset("timeseries { lookback: 24 }")), {"'dataset.timeseries'", "CSV"});
  ExpectRefused(Check(Job(kModel, "registry { token_file: \"/tmp/t\" }")), {"'registry.token_file'", "registry.url"});
  ExpectRefused(Check(Job(R"(model { layer { type: "Flatten" dense_param { units: 3 } } layer { type: "Dense" dense_param { units: 3 } } })")),
                {"'model.layer[0].dense_param'", "Dense", "Flatten"});
  ExpectRefused(Check(Job(R"(model { layer { type: "Flatten" initializer: HE_NORMAL } layer { type: "Dense" dense_param { units: 3 } } })")),
                {"'model.layer[0].initializer'", "no weights"});
  // The settings of the job's own mode pass.
  EXPECT_TRUE(Check(Job(kModel, "sync { consistency: SSP staleness: 0 ps_piece_bytes: -1 }")).ok());
  EXPECT_TRUE(Check(Job(kModel, "sync { mode: ALLREDUCE servers: 0 bucket_bytes: 0 compression: FP16 }")).ok());
}

// ----------------------------------------------------------- privacy

// docs/job-spec.md, "Privacy". The test dataset holds N = 6 training
// samples, so delta must be below 1/6.
TEST_F(JobSpecTest, PrivacySettingsAreRefusedWithTheFieldNamed) {
  auto privacy = [&](const std::string& fields, const std::string& sync = "") {
    return Check(Job(kModel, sync + " privacy { " + fields + " }"));
  };
  ExpectRefused(privacy("target_epsilon: 0 delta: 0.01 max_grad_norm: 1"), {"'privacy.target_epsilon'", "(0, 1000]", "got 0"});
  ExpectRefused(privacy("target_epsilon: -2 delta: 0.01 max_grad_norm: 1"), {"'privacy.target_epsilon'", "got -2"});
  ExpectRefused(privacy("noise_multiplier: 0 delta: 0.01 max_grad_norm: 1"), {"'privacy.noise_multiplier'"});
  ExpectRefused(privacy("target_epsilon: 3 delta: 0.01 max_grad_norm: 0"), {"'privacy.max_grad_norm'", "got 0"});
  ExpectRefused(privacy("target_epsilon: 3 delta: 0.01 max_grad_norm: -1"), {"'privacy.max_grad_norm'"});
  ExpectRefused(privacy("target_epsilon: 3 delta: 1 max_grad_norm: 1"), {"'privacy.delta'", "(0, 1)"});
  // delta >= 1/N, with N from the dataset (held-out validation samples do not count).
  ExpectRefused(privacy("target_epsilon: 3 delta: 0.2 max_grad_norm: 1"), {"'privacy.delta'", "1/N", "N = 6"});
  ExpectRefused(Check(InDataset("validation_size: 2") + " privacy { target_epsilon: 3 delta: 0.3 max_grad_norm: 1 }"),
                {"'privacy.delta'", "N = 4"});
  // Exactly one of target_epsilon and noise_multiplier; delta and C with them only.
  ExpectRefused(privacy("target_epsilon: 3 noise_multiplier: 1.1 delta: 0.01 max_grad_norm: 1"),
                {"'privacy.noise_multiplier'", "not both"});
  ExpectRefused(privacy("delta: 0.01"), {"'privacy.delta'", "applies only to DP-SGD"});
  ExpectRefused(privacy("max_grad_norm: 1"), {"'privacy.max_grad_norm'", "applies only to DP-SGD"});
  ExpectRefused(privacy("target_epsilon: 3 max_grad_norm: 1"), {"'privacy.delta'", "required"});
  ExpectRefused(privacy("noise_multiplier: 1.1 delta: 0.01"), {"'privacy.max_grad_norm'", "required"});
  ExpectRefused(privacy(""), {"'privacy'", "sets nothing"});
  // Secure aggregation: parameter servers with BSP only.
  ExpectRefused(privacy("secure_aggregation: true", "sync { mode: ALLREDUCE servers: 0 }"),
                {"'privacy.secure_aggregation'", "ALLREDUCE"});
  ExpectRefused(privacy("secure_aggregation: true", "sync { consistency: ASP }"), {"'privacy.secure_aggregation'", "ASP"});
  ExpectRefused(privacy("secure_aggregation: true", "sync { consistency: SSP }"), {"'privacy.secure_aggregation'", "SSP"});
  // DP-SGD: settings it replaces, or whose effect its analysis does not cover.
  const std::string dp = "noise_multiplier: 1.1 delta: 0.1 max_grad_norm: 1";
  ExpectRefused(privacy(dp, "sync { consistency: ASP }"), {"'sync.consistency'", "ASP", "BSP"});
  ExpectRefused(privacy(dp, "sync { consistency: SSP }"), {"'sync.consistency'", "SSP"});
  ExpectRefused(privacy(dp, "sync { mode: ALLREDUCE servers: 0 compression: BF16 }"), {"'sync.compression'"});
  ExpectRefused(Check(Job(kModel, "training { clip_grad_norm: 5 } privacy { " + dp + " }")),
                {"'training.clip_grad_norm'", "privacy.max_grad_norm"});
  ExpectRefused(Check(Job(kModel, "training { shard_size: 4 } privacy { " + dp + " }")),
                {"'training.shard_size'", "Poisson"});
  // (the fields alone: no shards need exist for this refusal)
  ExpectRefused(ParseJobText(std::string("name: \"t\"") + kModel +
                                 " dataset { format: SHARDS dir: \"d\" shards { malformed_policy: SKIP } } privacy { " +
                                 dp + " }",
                             "dp.pbtxt")
                    .status(),
                {"'dataset.shards.malformed_policy'", "twice"});
  // Valid DP-SGD blocks pass, in both synchronisation modes.
  EXPECT_TRUE(privacy(dp).ok()) << privacy(dp).ToString();
  EXPECT_TRUE(privacy("target_epsilon: 3 delta: 0.1 max_grad_norm: 1", "sync { mode: ALLREDUCE servers: 0 }").ok());
  // Masks survive no rounding: no bf16/fp16 pushes (named, whatever the
  // mode rules say first).
  ExpectRefused(privacy("secure_aggregation: true", "sync { compression: BF16 }"), {"'sync.compression'"});
  ExpectRefused(privacy("secure_aggregation: true", "sync { compression: FP16 }"), {"'sync.compression'"});
  // The fixed-point range: with secure aggregation alone, in its range.
  ExpectRefused(privacy("secure_aggregation_bound: 10"), {"'privacy.secure_aggregation_bound'", "secure_aggregation: true"});
  ExpectRefused(privacy("secure_aggregation: true secure_aggregation_bound: 0"),
                {"'privacy.secure_aggregation_bound'", "got 0"});
  ExpectRefused(privacy("secure_aggregation: true secure_aggregation_bound: -1"), {"'privacy.secure_aggregation_bound'"});
  ExpectRefused(privacy("noise_multiplier: 1.1 delta: 0.1 max_grad_norm: 1 secure_aggregation: true "
                        "secure_aggregation_bound: 10"),
                {"'privacy.secure_aggregation_bound'", "DP-SGD"});
  // Secure aggregation alone is applied: accepted in BSP parameter-server mode.
  for (const char* ok : {"secure_aggregation: true", "secure_aggregation: true secure_aggregation_bound: 1000"}) {
    Status st = privacy(ok, "sync { servers: 2 consistency: BSP }");
    EXPECT_TRUE(st.ok()) << ok << ": " << st.ToString();
  }
  // DP-SGD combined with secure aggregation passes too.
  EXPECT_TRUE(privacy("noise_multiplier: 1.1 delta: 0.1 max_grad_norm: 1 secure_aggregation: true",
                      "sync { servers: 2 consistency: BSP }").ok());
}

// ------------------------------------------- validation and selection

TEST_F(JobSpecTest, ValidationAndEarlyStoppingSettingsAreCheckedByName) {
  ExpectRefused(Check(InDataset("validation_fraction: 0.2 validation_size: 1")),
                {"'dataset.validation_size'", "not both"});
  ExpectRefused(Check(InDataset("validation_fraction: 0.6")), {"'dataset.validation_fraction'", "[0, 0.5]"});
  ExpectRefused(Check(InDataset("validation_size: 4")), {"'dataset.validation_size'", "6 samples", "half"});
  ExpectRefused(Check(InDataset("validation_fraction: 0.01")), {"'dataset.validation_fraction'", "none"});
  ExpectRefused(Check(Job(kModel, "training { restore_best: true }")),
                {"'training.restore_best'", "training.early_stopping"});
  ExpectRefused(Check(Job(kModel, "training { early_stopping { patience: 2 } }")),
                {"'training.early_stopping.metric'", "required"});
  ExpectRefused(Check(Job(kModel, "training { checkpoint_epochs: false restore_best: true "
                                  "early_stopping { metric: \"test_loss\" } }")),
                {"'training.restore_best'", "checkpoint_epochs"});
  // A metric the job does not report: val_* without a validation split, a
  // regression figure on a classifier.
  ExpectRefused(Check(Job(kModel, "training { early_stopping { metric: \"val_loss\" } }")),
                {"'training.early_stopping.metric'", "val_loss", "test_loss", "without a validation split"});
  ExpectRefused(Check(InDataset("validation_size: 2") + "training { early_stopping { metric: \"val_mae\" } }"),
                {"'training.early_stopping.metric'", "val_mae", "val_accuracy"});
  EXPECT_TRUE(Check(InDataset("validation_size: 2") +
                    "training { early_stopping { metric: \"val_accuracy\" mode: MAX } restore_best: true }")
                  .ok());
  EXPECT_TRUE(Check(Job(kModel, "training { early_stopping { metric: \"test_loss\" } clip_grad_norm: 1 }")).ok());
}

// ------------------------------------------------------ dataset files

TEST_F(JobSpecTest, TruncatedIdxFilesAreRefusedAtCheck) {
  // --check used to read only the headers; the workers then failed.
  std::string images = ReadBytes("train-images");
  WriteBytes("train-images", images.substr(0, images.size() - 10));
  ExpectRefused(Check(Job()), {"'dataset.train_images'", "train-images", "ends at byte offset 390", "10 missing"});
  WriteBytes("train-images", images + "xx");
  ExpectRefused(Check(Job()), {"'dataset.train_images'", "2 trailing"});
  // Gzip: the decompressed length counts; a cut stream names the offset.
  WriteBytes("train-images", images.substr(0, images.size() - 1), /*gz=*/true);
  ExpectRefused(Check(Job()), {"'dataset.train_images'", "ends at byte offset 399"});
  WriteBytes("train-images", images, /*gz=*/true);
  const std::string gz = ReadBytes("train-images");
  WriteBytes("train-images", gz.substr(0, gz.size() - 12));
  ExpectRefused(Check(Job()), {"'dataset.train_images'", "train-images", "offset"});
  WriteBytes("train-images", images);
  EXPECT_TRUE(Check(Job()).ok());
}

TEST_F(JobSpecTest, LabelsOutsideNumClassesAreRefusedAtCheck) {
  std::string labels = ReadBytes("test-labels");
  labels[8 + 2] = 7;  // index 2
  WriteBytes("test-labels", labels);
  ExpectRefused(Check(Job()), {"'dataset.num_classes'", "test-labels", "label 7 at index 2", "byte offset 10"});
}

// ------------------------------------------------------------ class names

// dataset.class_names: one name per class, each non-empty, different and
// printable; classifiers only; a SHARDS pack's names when both are given.
TEST_F(JobSpecTest, ClassNamesAreCheckedByName) {
  EXPECT_TRUE(Check(InDataset(R"(class_names: ["a", "b", "c"])")).ok())
      << Check(InDataset(R"(class_names: ["a", "b", "c"])")).ToString();
  ExpectRefused(Check(InDataset(R"(class_names: ["a", "b"])")),
                {"'dataset.class_names'", "2 names for dataset.num_classes 3"});
  ExpectRefused(Check(InDataset(R"(class_names: ["a", "", "c"])")), {"'dataset.class_names[1]'", "empty"});
  ExpectRefused(Check(InDataset(R"(class_names: ["a", "b", "a"])")),
                {"'dataset.class_names[2]'", "\"a\" is already the name of class 0"});
  ExpectRefused(Check(InDataset(R"(class_names: ["a", "b\tc", "d"])")),
                {"'dataset.class_names[1]'", "control byte 0x09"});
  ExpectRefused(Check(std::string("name: \"t\"") + kModel +
                      R"( dataset { format: CSV timeseries { path: "s.csv" target_column: "y" } class_names: ["a", "b"] })"),
                {"'dataset.class_names'", "applies to classifiers only", "regression"});
}

TEST_F(JobSpecTest, ClassNamesOfAShardsJobMustBeThePacksOwn) {
  data::PackOptions o;
  o.out = dir_ + "/pack";
  auto packed = data::PackIdx(dir_ + "/train-images", dir_ + "/train-labels", dir_ + "/test-images",
                              dir_ + "/test-labels", o);
  ASSERT_TRUE(packed.ok()) << packed.status().ToString();
  auto job = [&](const std::string& names) {
    return Check(std::string("name: \"t\"") + kModel + " dataset { format: SHARDS dir: \"" + dir_ + "/pack\" " +
                 names + " }");
  };
  // A pack of IDX files records only the indices "0", "1", "2": the job names them.
  EXPECT_TRUE(job(R"(class_names: ["cat", "dog", "bird"])").ok()) << job(R"(class_names: ["cat", "dog", "bird"])").ToString();
  EXPECT_EQ(PackClassNames({"0", "1", "2"}), std::vector<std::string>{});
  // A pack with names: the job's must be the same.
  auto manifest = data::ReadManifest(dir_ + "/pack");
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  manifest->classes = {"cat", "dog", "bird"};
  ASSERT_TRUE(data::WriteManifest(dir_ + "/pack", *manifest).ok());
  EXPECT_TRUE(job("").ok()) << job("").ToString();
  EXPECT_TRUE(job(R"(class_names: ["cat", "dog", "bird"])").ok());
  ExpectRefused(job(R"(class_names: ["cat", "dog", "fish"])"),
                {"'dataset.class_names[2]'", "is \"fish\"", "dataset.json' names class 2 \"bird\""});
  ExpectRefused(job(R"(class_names: ["cat", "dog"])"), {"'dataset.class_names'", "2 names", "has 3 classes"});
}

// ------------------------------------------------------------ names

TEST_F(JobSpecTest, BadModelNameIsRefusedAtCheckNotAfterTraining) {
  ExpectRefused(Check(Job(kModel, "registry { model_name: \"my model!\" }")), {"'registry.model_name'", "position 2"});
  ExpectRefused(Check("name: \"-x\"\n" + Job().substr(Job().find('\n') + 1)), {"'name'", "registry.model_name"});
}

TEST_F(JobSpecTest, JobNameMustBeADirectoryName) {
  const std::string rest = Job().substr(Job().find('\n') + 1);
  for (const char* bad : {"a/b", "..", "."})
    ExpectRefused(Check(std::string("name: \"") + bad + "\"\n" + rest), {"'name'", "directory"});
  ExpectRefused(Check("name: \"" + std::string(129, 'a') + "\"\n" + rest), {"'name'", "at most 128 bytes"});
  ExpectRefused(Check("name: \"a\\tb\"\n" + rest), {"'name'", "control byte 0x09", "a\\tb"});
}

TEST_F(JobSpecTest, HugeAndBinaryValuesGiveShortEscapedMessages) {
  const std::string rest = Job().substr(Job().find('\n') + 1);
  Status st = Check("name: \"" + std::string(20 << 20, 'n') + "\"\n" + rest);
  ExpectRefused(st, {"'name'", "(20971520 bytes)"});
  EXPECT_LT(st.message().size(), 300u);
  st = Check(Job(kModel, "registry { model_name: \"" + std::string(20 << 20, 'm') + "\" }"));
  ExpectRefused(st, {"'registry.model_name'", "(20971520 bytes)"});
  EXPECT_LT(st.message().size(), 300u);
  // A NUL byte does not cut the message; it is shown escaped.
  st = Check(Job(R"(model { layer { type: "Den\000se" } })"));
  ExpectRefused(st, {"'model.layer[0].type'", "Den\\0se", "control byte 0x00 at offset 3"});
  EXPECT_EQ(st.message().find('\0'), std::string::npos);
}

// training.device: settings the device cannot honour are refused at job
// check, naming the field; a layer the chosen backend lacks names the layer.
TEST_F(JobSpecTest, DeviceSettingsTheDeviceCannotRunAreRefused) {
  ExpectRefused(Check(Job(kModel, "training { device { precision: TF32 } }")),
                {"'training.device.precision'", "TF32 is a CUDA precision"});
  // BF16 runs on the CPU (oneDNN's bf16 convolutions and matmuls).
  EXPECT_TRUE(Check(Job(kModel, "training { device { kind: CPU precision: BF16 } }")).ok());
  const std::string cuda = "training { device { kind: CUDA } }";
  if (!POLIS_WITH_CUDA) {
    // A build without the CUDA backend refuses a CUDA job in one line.
    ExpectRefused(Check(Job(kModel, cuda)), {"'training.device.kind'", "no CUDA backend", "POLIS_WITH_CUDA=OFF"});
    return;
  }
  EXPECT_TRUE(Check(Job(kModel, cuda)).ok()) << Check(Job(kModel, cuda)).ToString();
  ExpectRefused(Check(Job(kModel, cuda + " privacy { noise_multiplier: 1 delta: 1e-5 max_grad_norm: 1 }")),
                {"'training.device.kind'", "DP-SGD"});
  // The CUDA Conv2D fuses ReLU only: a fused tanh is refused before any
  // process starts, naming the layer.
  std::string tanh = kModel;
  tanh.replace(tanh.find("activation: RELU"), 16, "activation: TANH");
  EXPECT_TRUE(Check(Job(tanh)).ok()) << "the CPU runs it";
  ExpectRefused(Check(Job(tanh, cuda)),
                {"'training.device.kind'", "CUDA cannot run layer 'conv2d_0' (Conv2D)", "TANH"});
}

// ------------------------------------------------- polis-train --check

// The real binary: bad input exits 2 with one line on stderr naming the
// field or the flag; a good job with valid overrides passes.
class PolisTrainCheck : public JobSpecTest {
 protected:
  void SetUp() override {
    if (!PathExists(kBinary)) POLIS_MISSING_PREREQ() << kBinary << " is not built (cmake --build ... --target polis-train)";
    JobSpecTest::SetUp();
  }
  struct Result {
    int code = -1;
    std::string out, err;
  };
  Result Run(const std::string& job_text, const std::string& flags) {
    WriteBytes("job.pbtxt", job_text);
    const std::string cmd = kBinary + " --check " + flags + " " + dir_ + "/job.pbtxt >" + dir_ + "/out 2>" + dir_ + "/err";
    const int rc = std::system(cmd.c_str());
    Result r;
    r.code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    r.out = ReadBytes("out");
    r.err = ReadBytes("err");
    return r;
  }
  void ExpectRefusedLine(const Result& r, const std::string& word) {
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find(word), std::string::npos) << "'" << word << "' not in: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  const std::string kBinary = std::string(POLIS_BINARY_DIR) + "/launch/polis-train";
};

TEST_F(PolisTrainCheck, RefusedFieldsExitTwoWithOneLine) {
  ExpectRefusedLine(Run(Job(kModel, "training { batch_size: 0 }"), ""), "'training.batch_size'");
  ExpectRefusedLine(Run(Job(kModel, "optimizer { learning_rate: inf }"), ""), "'optimizer.learning_rate'");
  ExpectRefusedLine(Run(Job(kModel, "sync { consistency: SSP staleness: -3 }"), ""), "'sync.staleness'");
  ExpectRefusedLine(Run(Job(kModel, "training { batch_size: 1000000000 }"), ""), "this machine has");
  const Result ok = Run(Job(), "--epochs 3 --train-limit 4 --servers 2");
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_NE(ok.out.find("ok: 4 layers"), std::string::npos) << ok.out;
}

// polis-train carries the CPU backend only: a CUDA job is refused in one
// line that names the program to run instead (a build without CUDA refuses
// it at the field).
TEST_F(PolisTrainCheck, CudaJobIsRefusedByTheCpuProgram) {
  const Result r = Run(Job(kModel, "training { device { kind: CUDA } }"), "");
  ExpectRefusedLine(r, POLIS_WITH_CUDA ? "run polis-train-cuda" : "no CUDA backend");
  WriteBytes("job.pbtxt", Job(kModel, "training { device { kind: CUDA } }"));
  const std::string cmd = kBinary + " --print-device " + dir_ + "/job.pbtxt 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  char line[32] = {};
  const bool read = p && std::fgets(line, sizeof line, p) != nullptr;
  if (p) pclose(p);
  if (POLIS_WITH_CUDA) EXPECT_TRUE(read && std::string(line) == "CUDA\n") << line;
}

TEST_F(PolisTrainCheck, FlagsAreAppliedOrRefusedNeverIgnored) {
  // --epochs 0 and --train-limit -5 used to train 5 epochs on everything.
  const std::pair<const char*, const char*> kBad[] = {
      {"--epochs 0", "--epochs 0: out of range for training.epochs"},
      {"--epochs -2", "--epochs -2"},
      {"--train-limit -5", "--train-limit -5"},
      {"--test-limit -1", "--test-limit -1"},
      {"--servers -1", "--servers -1"},
      {"--epochs abc", "--epochs"},
      {"--csv x.csv", "--csv"},
      {"--registry a --registry-url http://127.0.0.1:1", "--registry-url"},
      {"--monitor nonsense", "--monitor"},
      {"--monitor-tls-cert /tmp/c.pem", "--monitor-tls-cert requires --monitor-tls-key"},
      {"--monitor-plain-listen 127.0.0.1:0", "--monitor-plain-listen requires --monitor-tls-cert"},
      {"--monitor-tls-cert /nonexistent/c.pem --monitor-tls-key /nonexistent/c.key",
       "cannot read the TLS certificate '/nonexistent/c.pem'"},
      {"--sync allreduce --servers 1", "'sync.servers'"},
      {"--registry-token-file /tmp/t", "'registry.token_file'"},
      {"--evaluate m.polis --epochs 3", "--evaluate"}};
  for (const auto& [flags, word] : kBad) {
    SCOPED_TRACE(flags);
    ExpectRefusedLine(Run(Job(), flags), word);
  }
  // Switching the mode drops the job's settings of the other mode.
  EXPECT_EQ(Run(Job(kModel, "sync { consistency: SSP staleness: 1 }"), "--sync allreduce").code, 0);
}

}  // namespace
}  // namespace polis
