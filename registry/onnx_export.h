// Export of a model artifact to ONNX (opset 13), so that other runtimes
// (onnxruntime, TensorRT, ...) can serve what Polis trained.
//
// The graph: input "input" [batch, <input shape>] FP32; one node per layer --
// Conv2D -> Conv (OIHW weights as stored, explicit pads as oneDNN uses them),
// MaxPool2D -> MaxPool, Flatten -> Flatten(axis 1) (NCHW order, as Polis),
// Dense -> Gemm(transB = 1) ((out, in) weights as stored), fused ReLU and
// ReLU -> Relu -- then "logits" and, for classifiers, "probabilities"
// (Softmax over axis 1); regression models end in "predictions". Weights are
// initializers named "<layer>/<tensor>". The model is checked with ONNX's
// checker and its shape inference before it is returned; a layer type
// without an ONNX mapping (the sequence layers) is Unimplemented, naming it.
//
// Built only where libonnx-dev is installed (POLIS_WITH_ONNX); otherwise
// every call is Unimplemented. Stateless; thread-safe.
#pragma once

#include <string>

#include "common/artifact/artifact.h"
#include "common/status.h"

namespace polis::registry {

inline constexpr char kOnnxFileName[] = "model.onnx";

bool OnnxExportAvailable();

// The serialized onnx.ModelProto of `artifact`.
StatusOr<std::string> ExportOnnx(const ModelArtifact& artifact, const std::string& model_name);

// Writes <root>/<model>/<version>/model.onnx (temporary name, fsync, rename)
// and returns its path; version 0 means the latest.
StatusOr<std::string> ExportOnnxFile(const std::string& root, const std::string& model,
                                     int64_t version);

}  // namespace polis::registry
