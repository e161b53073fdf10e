#include "registry/onnx_export.h"

#include <cstring>

#include "common/fs.h"
#include "common/nn/model.h"
#include "polis_config.h"

#if POLIS_WITH_ONNX
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>
#endif

namespace polis::registry {

#if POLIS_WITH_ONNX
namespace {

void SetInts(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

void SetInt(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

onnx::NodeProto* AddNode(onnx::GraphProto* g, const std::string& op, std::vector<std::string> in,
                         const std::string& out) {
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(out);
  for (auto& i : in) n->add_input(i);
  n->add_output(out);
  return n;
}

void SetTensorType(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& dims) {
  v->set_name(name);
  auto* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = t->mutable_shape();
  shape->add_dim()->set_dim_param("batch");
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

}  // namespace

bool OnnxExportAvailable() { return true; }

StatusOr<std::string> ExportOnnx(const ModelArtifact& a, const std::string& model_name) {
  const proto::ArtifactHeader& h = a.header;
  nn::Shape in_shape(h.input_shape().begin(), h.input_shape().end());
  POLIS_ASSIGN_OR_RETURN(nn::Model model, nn::Model::Build(h.job().model(), in_shape));
  if (model.parameter_count() != static_cast<int64_t>(a.weights.size()))
    return DataLoss("model '{}': rebuilds with {} parameters, the artifact holds {}", model_name,
                    model.parameter_count(), a.weights.size());

  onnx::ModelProto m;
  m.set_ir_version(onnx::IR_VERSION);
  m.set_producer_name("polis-registry");
  m.set_producer_version(POLIS_VERSION);
  m.set_model_version(1);
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  onnx::GraphProto* g = m.mutable_graph();
  g->set_name(model_name);
  SetTensorType(g->add_input(), "input", in_shape);

  std::string cur = "input";
  for (const nn::LayerInfo& l : model.layers()) {
    const auto& spec = l.spec;
    std::vector<std::string> param_names;
    for (const nn::ParamTensor& p : l.params) {
      auto* t = g->add_initializer();
      const std::string name = l.name + "/" + p.name;
      t->set_name(name);
      t->set_data_type(onnx::TensorProto::FLOAT);
      for (int64_t d : p.shape) t->add_dims(d);
      std::string raw(sizeof(float) * p.count, '\0');  // little-endian, as in the artifact
      std::memcpy(raw.data(), a.weights.data() + p.offset, raw.size());
      t->set_raw_data(std::move(raw));
      param_names.push_back(name);
    }
    if (l.type == "Conv2D") {
      const auto& c = spec.conv2d_param();
      const int64_t k = c.kernel_size(), s = c.stride();
      nn::SamePadding ph, pw;  // VALID: none
      if (c.padding() == proto::Conv2DParam::SAME) {
        // As the layers pad: each axis on its own, the odd pixel bottom/right.
        ph = nn::SamePaddingOf(l.in_shape[1], k, s);
        pw = nn::SamePaddingOf(l.in_shape[2], k, s);
      }
      auto* n = AddNode(g, "Conv", {cur, param_names.at(0), param_names.at(1)}, l.name);
      SetInts(n, "kernel_shape", {k, k});
      SetInts(n, "strides", {s, s});
      SetInts(n, "pads", {ph.before, pw.before, ph.after, pw.after});  // [top, left, bottom, right]
    } else if (l.type == "MaxPool2D") {
      const auto& p = spec.pool2d_param();
      const int64_t k = p.pool_size(), s = p.has_stride() ? p.stride() : k;
      auto* n = AddNode(g, "MaxPool", {cur}, l.name);
      SetInts(n, "kernel_shape", {k, k});
      SetInts(n, "strides", {s, s});
    } else if (l.type == "Flatten") {
      SetInt(AddNode(g, "Flatten", {cur}, l.name), "axis", 1);
    } else if (l.type == "Dense") {
      if (l.in_shape.size() != 1)
        return Unimplemented("layer {} (Dense) takes a {}-dimensional input; ONNX Gemm needs a vector",
                             l.name, l.in_shape.size());
      SetInt(AddNode(g, "Gemm", {cur, param_names.at(0), param_names.at(1)}, l.name), "transB", 1);
    } else if (l.type == "ReLU") {
      AddNode(g, "Relu", {cur}, l.name);
    } else {
      return Unimplemented(
          "layer {} ({}) has no ONNX export yet; exportable layers: Conv2D, MaxPool2D, Flatten, "
          "Dense, ReLU",
          l.name, l.type);
    }
    cur = l.name;
    if (spec.activation() == proto::RELU && l.type != "ReLU") {
      AddNode(g, "Relu", {cur}, l.name + "/relu");
      cur = l.name + "/relu";
    } else if (spec.activation() == proto::TANH) {
      AddNode(g, "Tanh", {cur}, l.name + "/tanh");
      cur = l.name + "/tanh";
    }
  }
  const bool classifier = h.job().model().loss() == proto::ModelSpec::SOFTMAX_CROSS_ENTROPY &&
                          model.output_shape().size() == 1;
  if (classifier) {
    AddNode(g, "Identity", {cur}, "logits");
    SetInt(AddNode(g, "Softmax", {"logits"}, "probabilities"), "axis", 1);
    SetTensorType(g->add_output(), "probabilities", model.output_shape());
    SetTensorType(g->add_output(), "logits", model.output_shape());
  } else {
    AddNode(g, "Identity", {cur}, "predictions");
    SetTensorType(g->add_output(), "predictions", model.output_shape());
  }
  for (const auto& m_ : h.metric()) {
    auto* p = m.add_metadata_props();
    p->set_key("polis.metric." + m_.name());
    p->set_value(fmt::format("{}", m_.value()));
  }
  if (h.job().dataset().format() == proto::DatasetSpec::IDX || h.job().dataset().format() == proto::DatasetSpec::SHARDS) {
    auto* p = m.add_metadata_props();
    p->set_key("polis.input_preprocessing");
    p->set_value(fmt::format("pixel * {} + {}", h.job().dataset().scale(), h.job().dataset().shift()));
    // Image libraries hand out interleaved pixels, OpenCV's in B, G, R order:
    // say which planes the input holds.
    if (in_shape.size() == 3 && (in_shape[0] == 1 || in_shape[0] == 3)) {
      auto* layout = m.add_metadata_props();
      layout->set_key("polis.input_layout");
      layout->set_value(in_shape[0] == 3 ? "CHW RGB: planes R, G, B, each H x W" : "CHW grey: one H x W plane");
    }
  }

  // ONNX's own checks, wrapped once here: structure, then shapes.
  try {
    onnx::checker::check_model(m);
    onnx::ModelProto inferred = m;
    onnx::shape_inference::InferShapes(inferred);
    for (const auto& out : inferred.graph().output()) {
      const auto& dims = out.type().tensor_type().shape().dim();
      if (dims.size() != static_cast<int>(model.output_shape().size()) + 1)
        return InternalError("ONNX shape inference gives output '{}' {} dimensions, expected {}",
                             out.name(), dims.size(), model.output_shape().size() + 1);
      for (size_t i = 0; i < model.output_shape().size(); ++i)
        if (dims[static_cast<int>(i) + 1].dim_value() != model.output_shape()[i])
          return InternalError("ONNX shape inference gives output '{}' dimension {} = {}, expected {}",
                               out.name(), i + 1, dims[static_cast<int>(i) + 1].dim_value(),
                               model.output_shape()[i]);
    }
    // Every intermediate must have been inferred too (a mistaken attribute
    // shows up as a missing or wrong shape).
    for (const auto& vi : inferred.graph().value_info())
      if (!vi.type().tensor_type().has_shape())
        return InternalError("ONNX shape inference could not infer '{}'", vi.name());
  } catch (const std::exception& e) {
    return InternalError("the exported ONNX model of '{}' fails ONNX's checks: {}", model_name,
                         e.what());
  }
  std::string out;
  if (!m.SerializeToString(&out)) return InternalError("cannot serialize the ONNX model");
  return out;
}

#else  // !POLIS_WITH_ONNX

bool OnnxExportAvailable() { return false; }

StatusOr<std::string> ExportOnnx(const ModelArtifact&, const std::string&) {
  return Unimplemented("this polis-registry was built without ONNX (install libonnx-dev and rebuild)");
}

#endif

StatusOr<std::string> ExportOnnxFile(const std::string& root, const std::string& model,
                                     int64_t version) {
  POLIS_ASSIGN_OR_RETURN(std::vector<int64_t> versions, ListVersions(root, model));
  if (version == 0 && !versions.empty()) version = versions.back();
  POLIS_ASSIGN_OR_RETURN(ModelArtifact a, LoadVersion(root, model, version));
  POLIS_ASSIGN_OR_RETURN(std::string bytes, ExportOnnx(a, model));
  const std::string path = fmt::format("{}/{}/{}/{}", root, model, version, kOnnxFileName);
  POLIS_RETURN_IF_ERROR(WriteFileAtomic(path, bytes));
  return path;
}

}  // namespace polis::registry
