// Model: a validated, shape-checked layer list with the layout of its flat
// parameter buffer. Building one touches no oneDNN state, so the launcher
// can check a job before any process starts work.
//
// Network: an executable of a Model for one batch size, bound to external
// flat parameter and gradient buffers (which several Networks may share).
// The constructor builds every primitive and buffer; Forward/Backward only
// execute them. One thread at a time.
#pragma once

#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/nn/layer.h"
#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis::nn {

struct LayerInfo {
  std::string name;
  std::string type;
  proto::LayerSpec spec;
  Shape in_shape, out_shape;
  std::vector<ParamTensor> params;  // offsets into the flat buffer
  int64_t param_offset = 0;
  int64_t param_count = 0;
  const LayerType* impl = nullptr;
};

class Model {
 public:
  // Errors name the layer ("layer 3 (conv2d_2, Conv2D): ...").
  static StatusOr<Model> Build(const proto::ModelSpec& spec, const Shape& input_shape);

  const std::vector<LayerInfo>& layers() const { return layers_; }
  const Shape& input_shape() const { return input_shape_; }
  const Shape& output_shape() const { return output_shape_; }
  int64_t parameter_count() const { return parameter_count_; }
  // Glorot-uniform weights, zero biases, from a seeded generator.
  void InitParams(float* params, uint64_t seed) const;

 private:
  std::vector<LayerInfo> layers_;
  Shape input_shape_, output_shape_;
  int64_t parameter_count_ = 0;
};

class Network {
 public:
  // bf16: Conv2D and Dense layers compute in bfloat16 where oneDNN has a
  // fast kernel (LayerContext::bf16); params and grads stay fp32.
  Network(const Model& model, int64_t batch, float* params, float* grads, bool training,
          bool want_input_grad = false, bool bf16 = false);
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  int64_t batch() const { return batch_; }
  // batch × input elements, plain (NCHW) layout; fill before Forward.
  float* input() { return input_.data(); }
  // before_layer(i), when given, runs before layer i is submitted (a
  // synchroniser waits there for layer i's parameters to arrive).
  void Forward(const std::function<void(int)>& before_layer = nullptr);
  // batch × output elements, plain layout; valid after Forward.
  const float* output();
  // Promises that the parameters will not change for this Network's life
  // (a served version): layers reorder their weights once, here, instead of
  // on every Forward. For inference Networks only.
  void FreezeParams();
  // batch × output elements: fill with d(loss)/d(output), then Backward.
  float* output_diff() { return output_diff_.data(); }
  // Calls on_layer_done(i) as soon as layer i's gradients are final (last
  // layer first), so a synchroniser can start sending them.
  void Backward(const std::function<void(int)>& on_layer_done = nullptr);
  // d(loss)/d(input), plain; only when built with want_input_grad.
  const float* input_diff();
  // DP-SGD's backward (docs/design/privacy.md), called instead of Backward
  // after Forward, with output_diff() holding each example's own loss
  // gradient d(loss_n)/d(output_n) (not divided by the batch size; rows of
  // zeros for padding when a Poisson-sampled batch is smaller than the
  // Network). Writes each example's parameter-gradient L2 norm ‖g_n‖ into
  // per_example_norms[0..batch) (may be null) and, into the gradient buffer,
  // the clipped sum Σ_n min(1, C/‖g_n‖) g_n. The caller then adds the noise
  // (common/privacy/noise.h) and divides by the expected batch size.
  // Two backward passes: the first gives the norms (each layer's method:
  // LayerType::PerExampleMethod), the second, with output_diff row n scaled
  // by its factor, the clipped sum. The model must pass UnsupportedForDp.
  // The first call builds the per-example buffers (setup); later calls
  // allocate nothing.
  void BackwardClipped(float clip_norm, float* per_example_norms);
  // oneDNN implementation names per primitive; "ref" means a slow kernel.
  std::vector<std::string> ImplInfo() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t batch_;
  std::vector<float> input_, output_, output_diff_, input_diff_;
};

// "" when DP-SGD can clip per-example gradients of every layer of `model`,
// else "layer 'name' (Type): why" for the first that it cannot. The job
// check refuses a DP job with such a layer (common/job_spec.cc).
std::string UnsupportedForDp(const Model& model);

// "layer 'dense_1' (Dense) weights element 17 is nan", or "" when every
// parameter in `params` (the model's flat buffer) is finite. One pass: O(P),
// as cheap as an optimizer step.
std::string FirstNonFiniteParameter(const Model& model, const float* params);

// Softmax cross-entropy over logits[n][k]. Returns the summed loss and the
// number of rows whose argmax equals the label; when dlogits is not null,
// writes (softmax - onehot) * grad_scale into it.
struct LossStats {
  double loss_sum = 0;
  int64_t correct = 0;
};
LossStats SoftmaxCrossEntropy(const float* logits, const int32_t* labels, int64_t n, int64_t k,
                              float* dlogits, float grad_scale);

// The job's loss over outputs[n][k] against targets y: class labels (as
// floats, n of them) for SOFTMAX_CROSS_ENTROPY, or n × k values for MSE,
// MAE and HUBER, whose per-sample loss is the mean over the k outputs.
// When dout is not null it receives d(loss)/d(output) * grad_scale.
LossStats ComputeLoss(const proto::ModelSpec& spec, const float* out, const float* y, int64_t n,
                      int64_t k, float* dout, float grad_scale);

}  // namespace polis::nn
