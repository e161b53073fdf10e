// Bad job specs are refused before any process starts work, naming the
// file, the field and the reason.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <fstream>

#include "common/fs.h"
#include "common/job_spec.h"

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

}  // namespace
}  // namespace polis
