// Export of a model artifact to ONNX (opset 13, standard operators only), so
// that other runtimes (onnxruntime, TensorRT, ...) can serve what Polis
// trained.
//
// The graph: input "input" [batch, <input shape>] FP32. CNN layers are one
// node each -- Conv2D -> Conv (OIHW weights as stored, explicit pads as
// oneDNN uses them), MaxPool2D -> MaxPool, Flatten -> Flatten(axis 1) (NCHW
// order, as Polis), Dense -> Gemm(transB = 1) ((out, in) weights as
// stored), fused ReLU/tanh and ReLU -> Relu/Tanh. Sequence layers ([batch,
// T, F]): LSTM/GRU -> ONNX LSTM/GRU (gate blocks reordered from PyTorch's
// order to ONNX's, GRU with linear_before_reset), Embedding -> Cast +
// Gather, Dropout -> Identity, LayerNorm -> ReduceMean/Sub/Mul/Sqrt/Div
// (LayerNormalization is opset 17), GELU -> Erf (or the tanh form),
// attention -> Gemm/MatMul/Softmax per head, PositionalEncoding -> Add of
// the table, SequencePool -> Gather (last) or ReduceMean. Then "logits" and,
// for classifiers, "probabilities" (Softmax over axis 1); regression models
// end in "predictions". Weights are initializers named "<layer>/<tensor>".
// The model is checked with ONNX's checker and its shape inference before
// it is returned.
//
// Built only where libonnx-dev is installed (POLIS_WITH_ONNX); otherwise
// every call is Unimplemented. Stateless; thread-safe.
#pragma once

#include <string>

#include "common/artifact/artifact.h"
#include "common/status.h"

namespace polis::registry {

inline constexpr char kOnnxFileName[] = "model.onnx";
inline constexpr char kPreprocessingFileName[] = "preprocessing.json";

bool OnnxExportAvailable();

// The serialized onnx.ModelProto of `artifact`.
StatusOr<std::string> ExportOnnx(const ModelArtifact& artifact, const std::string& model_name);

// A time-series forecaster's input recipe (docs/registry.md "ONNX export"):
// how each raw CSV row becomes one step of the graph's input, and how the
// predictions return to the target's units. Empty for other models.
StatusOr<std::string> TimeSeriesPreprocessingJson(const ModelArtifact& artifact);

// Writes <root>/<model>/<version>/model.onnx (and, for time-series
// forecasters, preprocessing.json beside it) (temporary name, fsync, rename)
// and returns its path; version 0 means the latest.
StatusOr<std::string> ExportOnnxFile(const std::string& root, const std::string& model,
                                     int64_t version);

}  // namespace polis::registry
