// Serving image models from PNG and JPEG files (input 'image', BYTES): over
// REST as base64 JSON strings and as binary data, over gRPC as
// bytes_contents and raw_input_contents, through polisctl models predict
// --image (server and root). Each file's answer is the answer its pixels
// give as FP32 'input', preprocessed here by hand (value * scale + shift,
// H x W x C to C x H x W): bit for bit, since both run the same Network.
// Bad files are refused naming the element and what the codec said.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>

#include "common/data/image_codec.h"
#include "registry/image_input.h"
#include "registry/proto/grpc_predict_v2.grpc.pb.h"
#include "tests/registry/registry_test_util.h"

namespace polis::registry {
namespace {

using namespace testing;  // NOLINT

// An RGB CNN on non-square 3 x 10 x 12 images, three classes.
constexpr char kRgbCnn[] = R"(
  layer { type: "Conv2D" activation: RELU conv2d_param { filters: 4 kernel_size: 3 padding: SAME } }
  layer { type: "MaxPool2D" pool2d_param { pool_size: 2 } }
  layer { type: "Flatten" }
  layer { type: "Dense" dense_param { units: 3 } }
)";
const nn::Shape kRgbInput = {3, 10, 12};
constexpr float kScale = 1.0f / 127.5f, kShift = -1.0f;

data::Pixels Picture(int height, int width, int channels, int seed) {
  data::Pixels p;
  p.height = height;
  p.width = width;
  p.channels = channels;
  p.hwc.resize(static_cast<size_t>(height) * width * channels);
  for (size_t i = 0; i < p.hwc.size(); ++i) p.hwc[i] = static_cast<uint8_t>((i * 29 + seed * 53 + i / 7) % 256);
  return p;
}

std::string Encode(const data::Pixels& p, data::ImageEncoding e) {
  auto bytes = data::EncodeImage(p, e, 90);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  return bytes.ok() ? *bytes : "";
}

// Training's preprocessing written out: HWC bytes -> CHW floats.
std::vector<float> ByHand(const data::Pixels& p, float scale, float shift) {
  std::vector<float> x(p.hwc.size());
  for (int c = 0; c < p.channels; ++c)
    for (int y = 0; y < p.height; ++y)
      for (int i = 0; i < p.width; ++i)
        x[(static_cast<size_t>(c) * p.height + y) * p.width + i] =
            static_cast<float>(p.hwc[(static_cast<size_t>(y) * p.width + i) * p.channels + c]) * scale + shift;
  return x;
}

json ImageBody(const std::vector<std::string>& files) {
  json data = json::array();
  for (const auto& f : files) data.push_back(Base64Encode(f));
  return {{"inputs", json::array({json{{"name", "image"}, {"datatype", "BYTES"},
                                       {"shape", {static_cast<int64_t>(files.size())}}, {"data", data}}})}};
}

class ImageServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    art_ = MakeArtifact(kRgbCnn, kRgbInput, 5, kScale, kShift);
    art_.header.mutable_job()->mutable_dataset()->set_format(proto::DatasetSpec::SHARDS);
    ASSERT_EQ(Publish(root_.path(), "rgb", art_), 1);
    ModelArtifact grey = MakeArtifact(kTinyCnn, kTinyInput, 9);  // IDX, 1 x 8 x 8
    ASSERT_EQ(Publish(root_.path(), "grey", grey), 1);
    ModelArtifact vec = MakeArtifact(kLinear, {6}, 3);
    vec.header.mutable_job()->mutable_dataset()->set_format(proto::DatasetSpec::CSV);
    ASSERT_EQ(Publish(root_.path(), "vec", vec), 1);

    // A PNG of the model's own size and a JPEG twice as large (resized).
    png_pixels_ = Picture(10, 12, 3, 1);
    png_ = Encode(png_pixels_, data::ImageEncoding::kPng);
    jpeg_ = Encode(Picture(20, 24, 3, 2), data::ImageEncoding::kJpeg);
    auto decoded = data::DecodeImage(jpeg_, 3);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    jpeg_pixels_ = data::Resize(*decoded, 10, 12);
  }

  // The FP32 rows the two files stand for.
  std::vector<float> Fp32Rows() const {
    std::vector<float> x = ByHand(png_pixels_, kScale, kShift);
    std::vector<float> y = ByHand(jpeg_pixels_, kScale, kShift);
    x.insert(x.end(), y.begin(), y.end());
    return x;
  }

  TempDir root_;
  ModelArtifact art_;
  data::Pixels png_pixels_, jpeg_pixels_;
  std::string png_, jpeg_;
};

TEST_F(ImageServingTest, PngAndJpegFilesAnswerAsTheirPixelsDo) {
  ServerOptions o;
  o.allow_anonymous_explain = true;
  ServerHarness h(root_.path(), o);
  HttpClient c = h.Client();
  auto fp32 = Call(c, "POST", "/v2/models/rgb/infer", InferBody(Fp32Rows(), 2, kRgbInput).dump());
  ASSERT_EQ(fp32.status, 200) << fp32.body;
  const std::vector<float> want = OutputData(ParseJson(fp32), "logits");
  ASSERT_EQ(want.size(), 6u);

  auto r = Call(c, "POST", "/v2/models/rgb/infer", ImageBody({png_, jpeg_}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = ParseJson(r);
  EXPECT_EQ(OutputData(j, "logits"), want);  // bit for bit
  EXPECT_EQ(OutputData(j, "probabilities"), OutputData(ParseJson(fp32), "probabilities"));
  for (int row = 0; row < 2; ++row) {
    const std::vector<float> x = row == 0 ? ByHand(png_pixels_, kScale, kShift) : ByHand(jpeg_pixels_, kScale, kShift);
    const std::vector<float> ref = ReferenceLogits(art_, x);
    for (int k = 0; k < 3; ++k) EXPECT_NEAR(want[row * 3 + k], ref[k], 1e-4) << row << " " << k;
  }

  // The binary tensor extension: 4-byte length + bytes per file.
  const std::string bin = JoinBinaryBytes({png_, jpeg_});
  const json head = {{"inputs", json::array({json{{"name", "image"}, {"datatype", "BYTES"}, {"shape", {2}},
                                                  {"parameters", {{"binary_data_size", bin.size()}}}}})}};
  const std::string head_text = head.dump();
  r = Call(c, "POST", "/v2/models/rgb/infer", head_text + bin,
           {{"Inference-Header-Content-Length", std::to_string(head_text.size())}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(OutputData(ParseJson(r), "logits"), want);

  // Explanations take files too: their saliency has the model's input shape.
  r = Call(c, "POST", "/v2/models/rgb/explain", ImageBody({png_}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json e = ParseJson(r);
  EXPECT_EQ(e["explanations"][0]["saliency"]["shape"], json::array({3, 10, 12}));
}

TEST_F(ImageServingTest, GreyModelTakesAnRgbFileAsItsGreyPixels) {
  ServerHarness h(root_.path());
  HttpClient c = h.Client();
  const std::string file = Encode(Picture(8, 8, 3, 4), data::ImageEncoding::kPng);
  auto grey = data::DecodeImage(file, 1);
  ASSERT_TRUE(grey.ok());
  // The same pixels as UINT8 'input': the server's integer preprocessing.
  std::vector<int> pixels(grey->hwc.begin(), grey->hwc.end());
  json body = {{"inputs", json::array({json{{"name", "input"}, {"datatype", "UINT8"}, {"shape", {1, 1, 8, 8}},
                                            {"data", pixels}}})}};
  auto want = Call(c, "POST", "/v2/models/grey/infer", body.dump());
  ASSERT_EQ(want.status, 200) << want.body;
  auto r = Call(c, "POST", "/v2/models/grey/infer", ImageBody({file}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(OutputData(ParseJson(r), "logits"), OutputData(ParseJson(want), "logits"));
}

TEST_F(ImageServingTest, MetadataListsTheImageInputOfImageModelsOnly) {
  ServerHarness h(root_.path());
  HttpClient c = h.Client();
  auto r = Call(c, "GET", "/v2/models/rgb");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = ParseJson(r);
  ASSERT_EQ(j["inputs"].size(), 2u) << j.dump();
  EXPECT_EQ(j["inputs"][0]["name"], "input");
  EXPECT_EQ(j["inputs"][0]["shape"], json::array({-1, 3, 10, 12}));
  EXPECT_EQ(j["inputs"][1]["name"], "image");
  EXPECT_EQ(j["inputs"][1]["datatype"], "BYTES");
  EXPECT_EQ(j["inputs"][1]["shape"], json::array({-1}));
  EXPECT_NE(j["inputs"][1]["description"].get<std::string>().find("PNG or JPEG"), std::string::npos);
  EXPECT_EQ(j["parameters"]["image"]["channels"], 3);
  EXPECT_EQ(j["parameters"]["image"]["height"], 10);
  EXPECT_EQ(j["parameters"]["image"]["width"], 12);
  r = Call(c, "GET", "/v2/models/vec");
  ASSERT_EQ(r.status, 200) << r.body;
  j = ParseJson(r);
  ASSERT_EQ(j["inputs"].size(), 1u) << j.dump();
  EXPECT_FALSE(j["parameters"].contains("image"));
}

TEST_F(ImageServingTest, BadFilesAreRefusedNamingTheElement) {
  ServerOptions o;
  o.max_tensor_elements = 3 * 10 * 12 * 3;
  ServerHarness h(root_.path(), o);
  HttpClient c = h.Client();
  auto expect = [&](const json& body, int status, const std::string& text, const std::string& model = "rgb") {
    auto r = Call(c, "POST", "/v2/models/" + model + "/infer", body.dump());
    EXPECT_EQ(r.status, status) << r.body;
    const std::string err = ParseJson(r).value("error", "");
    EXPECT_NE(err.find(text), std::string::npos) << "expected '" << text << "' in " << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  };
  expect(ImageBody({png_, jpeg_, "hello, world"}), 400, "input 'image' element 2: neither a PNG, a JPEG nor an .npy file");
  expect(ImageBody({png_, png_.substr(0, png_.size() / 2)}), 400, "input 'image' element 1: PNG: ");
  expect(ImageBody({jpeg_.substr(0, 200)}), 400, "input 'image' element 0: JPEG: ");
  json b = ImageBody({png_});
  b["inputs"][0]["data"][0] = "iVBO!RW0";
  expect(b, 400, "input 'image' element 0: not base64: character '!' at offset 4");
  b["inputs"][0]["data"][0] = 7;
  expect(b, 400, "input 'image' element 0: number, expected a string");
  b = ImageBody({png_, png_});
  b["inputs"][0]["shape"] = {3};
  expect(b, 400, "input 'image': 2 files for shape [3]");
  b["inputs"][0]["shape"] = {1, 2};
  expect(b, 400, "input 'image': \"shape\" must be [N]");
  b = ImageBody({png_});
  b["inputs"][0]["datatype"] = "UINT8";
  expect(b, 400, "input 'image': datatype must be \"BYTES\"");
  expect(ImageBody({png_, png_, png_, png_}), 413, "exceed the limit of 1080 elements");
  b = ImageBody({png_});
  b["inputs"].push_back(InferBody(Fp32Rows(), 2, kRgbInput)["inputs"][0]);
  expect(b, 400, "input 'image' goes alone");
  // A model without an image input says what it takes.
  expect(ImageBody({png_}), 400,
         "input 'image' (PNG or JPEG files) is for image models; model 'vec' version 1 takes 'input' (FP32, "
         "shape [-1,6])",
         "vec");
  // An unknown name on an image model lists both inputs.
  b = ImageBody({png_});
  b["inputs"][0]["name"] = "picture";
  expect(b, 400, "unknown input 'picture'; model 'rgb' takes 'input' (FP32, shape [-1,3,10,12]) or 'image'");
}

TEST_F(ImageServingTest, DecodedSizeIsBoundedBeforePixelsAreAllocated) {
  ImageInputSpec spec = *ImageInputOf(art_.header);
  spec.max_pixels = 100;
  std::vector<float> x(3 * 10 * 12);
  Status st = PreprocessImage(png_, spec, x.data());
  EXPECT_NE(st.message().find("PNG: 12x10 pixels exceed the limit of 100 pixels"), std::string::npos) << st.ToString();
  st = PreprocessImage(jpeg_, spec, x.data());
  EXPECT_NE(st.message().find("JPEG: 24x20 pixels exceed the limit of 100 pixels"), std::string::npos)
      << st.ToString();
  spec.max_pixels = 120;
  EXPECT_TRUE(PreprocessImage(png_, spec, x.data()).ok());
}

TEST(Base64Test, RoundTripsAndSaysWhereItIsBroken) {
  for (const std::string& s : std::vector<std::string>{"", "f", "fo", "foo", "foob", std::string("\0\xff\x10", 3)}) {
    auto d = Base64Decode(Base64Encode(s));
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(*d, s);
  }
  EXPECT_EQ(Base64Encode("foob"), "Zm9vYg==");
  EXPECT_NE(Base64Decode("Zm9vYg=").status().message().find("7 characters"), std::string::npos);
  EXPECT_NE(Base64Decode("Zm=vYg==").status().message().find("character '=' at offset 2"), std::string::npos);
  EXPECT_NE(Base64Decode("Zm9v\nYg==").status().message().find("byte 0x0a at offset 4"), std::string::npos);
}

TEST_F(ImageServingTest, GrpcBytesContentsAndRawContentsAnswerAsRest) {
  ServerOptions o;
  o.grpc_port = 0;
  ServerHarness h(root_.path(), o);
  HttpClient c = h.Client();
  auto fp32 = Call(c, "POST", "/v2/models/rgb/infer", InferBody(Fp32Rows(), 2, kRgbInput).dump());
  ASSERT_EQ(fp32.status, 200) << fp32.body;
  const std::vector<float> want = OutputData(ParseJson(fp32), "logits");

  auto channel = grpc::CreateChannel(fmt::format("127.0.0.1:{}", h.server->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = inference::GRPCInferenceService::NewStub(channel);
  for (const bool raw : {false, true}) {
    SCOPED_TRACE(raw ? "raw_input_contents" : "bytes_contents");
    inference::ModelInferRequest req;
    req.set_model_name("rgb");
    auto* in = req.add_inputs();
    in->set_name("image");
    in->set_datatype("BYTES");
    in->add_shape(2);
    if (raw) {
      req.add_raw_input_contents(JoinBinaryBytes({png_, jpeg_}));
    } else {
      in->mutable_contents()->add_bytes_contents(png_);
      in->mutable_contents()->add_bytes_contents(jpeg_);
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    inference::ModelInferResponse resp;
    grpc::Status st = stub->ModelInfer(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    bool found = false;
    for (int i = 0; i < resp.outputs_size(); ++i) {
      if (resp.outputs(i).name() != "logits") continue;
      found = true;
      const std::string& b = resp.raw_output_contents(i);
      std::vector<float> got(b.size() / 4);
      std::memcpy(got.data(), b.data(), got.size() * 4);
      EXPECT_EQ(got, want);
    }
    EXPECT_TRUE(found);
  }
  // A bad file: INVALID_ARGUMENT with the REST message.
  inference::ModelInferRequest req;
  req.set_model_name("rgb");
  auto* in = req.add_inputs();
  in->set_name("image");
  in->set_datatype("BYTES");
  in->add_shape(1);
  in->mutable_contents()->add_bytes_contents("GIF89a");
  grpc::ClientContext ctx;
  inference::ModelInferResponse resp;
  grpc::Status st = stub->ModelInfer(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("input 'image' element 0: neither a PNG, a JPEG nor an .npy file"), std::string::npos)
      << st.error_message();
}

TEST_F(ImageServingTest, PolisctlPredictSendsImageFiles) {
  TempDir files;
  const std::string a = files.path() + "/a.png", b = files.path() + "/b.jpg";
  std::ofstream(a, std::ios::binary) << png_;
  std::ofstream(b, std::ios::binary) << jpeg_;
  ServerHarness h(root_.path());
  HttpClient c = h.Client();
  auto fp32 = Call(c, "POST", "/v2/models/rgb/infer", InferBody(Fp32Rows(), 2, kRgbInput).dump());
  ASSERT_EQ(fp32.status, 200) << fp32.body;
  const std::vector<float> want = OutputData(ParseJson(fp32), "logits");
  for (const std::string& where : {fmt::format("--registry http://127.0.0.1:{}", h.port()), "--root " + root_.path()}) {
    SCOPED_TRACE(where);
    CtlRun run = Sh(kPolisctl + " models " + where + " predict rgb --image " + a + " " + b + " --json");
    ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
    const std::vector<float> got = OutputData(Json(run), "logits");
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << i;
    run = Sh(kPolisctl + " models " + where + " predict rgb --image " + a);
    EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
    EXPECT_NE(run.out.find("PROBABILITY"), std::string::npos) << run.out;
    run = Sh(kPolisctl + " models " + where + " predict vec --image " + a);
    EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
    EXPECT_NE(run.err.find("input 'image' (PNG or JPEG files) is for image models"), std::string::npos)
        << run.err;
  }
}

}  // namespace
}  // namespace polis::registry
