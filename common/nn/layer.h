// Layers of the CPU backend (oneDNN) and their registry by name.
//
// A layer has two halves:
//  - LayerType: stateless; validates a LayerSpec against its input shape,
//    infers the output shape and names its parameter tensors. Used by Model
//    to check a job before any process starts work.
//  - LayerExec: one layer of an executable Network for a fixed batch size.
//    The constructor creates every oneDNN primitive and buffer (setup);
//    Forward/Backward only execute them (hot path: no allocation).
// Parameters and gradients live in the Model's flat buffers in a canonical
// layout (OIHW for convolutions, (out, in) for dense); a LayerExec sees views
// and reorders weights to whatever layout oneDNN chose, once per step.
//
// Thread-safety: LayerType is immutable; a LayerExec is used by one thread
// at a time, which need not be the thread that built it (common/nn/scratchpad.h).
#pragma once

#include <dnnl.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/device/device.h"
#include "common/nn/scratchpad.h"
#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis::nn {

using Shape = std::vector<int64_t>;  // per sample: {C, H, W} or {F}

std::string ShapeString(const Shape& s);
int64_t ShapeElements(const Shape& s);

// Conv2D SAME padding along one axis of `in` pixels (height or width, each
// on its own): out = ⌈in / stride⌉ and the total padding
// max((out - 1)·stride + k - in, 0), the odd pixel after (bottom, right),
// as TensorFlow and ONNX's SAME_UPPER. The CPU and CUDA layers and the ONNX
// export all take it from here.
struct SamePadding {
  int64_t before = 0, after = 0, out = 0;
};
SamePadding SamePaddingOf(int64_t in, int64_t k, int64_t stride);

struct ParamTensor {
  std::string name;     // "weights", "bias"
  Shape shape;          // canonical layout
  int64_t count = 0;
  int64_t offset = 0;   // in floats into the model's flat buffer; set by Model
  // Glorot fan-in / fan-out; zero for tensors initialised to zero.
  int64_t fan_in = 0;
  int64_t fan_out = 0;
  bool init_one = false;  // with fan_in == 0: initialised to one (a LayerNorm gain)
};

struct LayerContext {
  const proto::LayerSpec* spec = nullptr;
  Shape in_shape, out_shape;
  int64_t batch = 0;
  bool training = true;
  dnnl::engine* engine = nullptr;
  dnnl::memory src;           // the input this layer reads (fixed for the Network's life)
  dnnl::memory::desc src_md;  // its layout
  float* params = nullptr;    // first float of this layer's parameters
  float* grads = nullptr;     // first float of this layer's gradients
  bool need_diff_src = true;  // false for the first layer
  // ReLU followed by max-pooling: the ReLU gradient is applied after the pool
  // (on its 4x smaller output, exact since max-pool commutes with ReLU), so
  // the activation layer skips it and the pool applies it to its diff_dst.
  bool relu_grad_deferred = false;  // this layer's fused ReLU: skip its gradient
  bool relu_grad_on_dst = false;    // apply a ReLU gradient to diff_dst first
  // Conv2D and Dense compute in bfloat16 (inputs and weights converted,
  // fp32 accumulation, outputs and gradients fp32) when oneDNN has a fast
  // kernel for it; other layers, and any without one, stay fp32. The
  // parameters and gradients in the flat buffers are fp32 either way.
  bool bf16 = false;
};

class LayerExec {
 public:
  virtual ~LayerExec() = default;
  virtual void Forward(dnnl::stream& s) = 0;
  // Called once, before the first Backward, with the gradient of dst() (same
  // layout), which Backward may overwrite.
  virtual void BindDiffDst(const dnnl::memory& diff_dst) = 0;
  // Writes this layer's parameter gradients and, when need_diff_src, diff_src().
  virtual void Backward(dnnl::stream& s) = 0;
  virtual dnnl::memory& dst() = 0;
  virtual dnnl::memory& diff_src() = 0;
  // The parameters will not change again (a served model): a layer may
  // reorder them into its own layout once, now, and skip that in Forward.
  virtual void FreezeParams(dnnl::stream& s) {}
  // oneDNN implementation names, for the "no reference kernels" check.
  virtual std::vector<std::string> ImplInfo() const { return {}; }
  // DP-SGD (docs/design/privacy.md). Called right after Backward, while src
  // and diff_dst still hold this step's values: adds each example's squared
  // L2 norm of this layer's parameter gradient to sq_norms[0..batch).
  // Layers whose LayerType says PerExample::kOwn implement it; the default
  // is never called.
  virtual void AddPerExampleSqNorms(dnnl::stream& s, double* sq_norms) {}
  // DP-SGD's first backward pass needs diff_src and the per-example norms,
  // not the summed parameter gradients: layers whose weight gradient is
  // costly skip it while this is false (the gradient buffer is then stale).
  void set_param_grads_wanted(bool wanted) { param_grads_wanted_ = wanted; }

 protected:
  bool param_grads_wanted_ = true;
};

// A layer that can compute in bf16 (Conv2D, Dense; LSTM/GRU in inference),
// built by `make` with its compute type: with LayerContext::bf16 the bf16
// one, unless oneDNN has no bf16 kernel for it on this CPU or would run a
// reference kernel ("ref" in its ImplInfo, slower than fp32), in which case
// the layer says so in the log and is built in fp32.
std::unique_ptr<LayerExec> CreateInPrecision(
    const LayerContext& c,
    const std::function<std::unique_ptr<LayerExec>(dnnl::memory::data_type)>& make);

// How DP-SGD obtains a layer's per-example gradient norms.
enum class PerExample {
  kNoParams,     // nothing to do
  kOwn,          // LayerExec::AddPerExampleSqNorms, from the batch's own src/diff_dst
  kRecompute,    // Network runs a batch-1 copy of the layer, forward and backward, per example
  kUnsupported,  // DP-SGD refuses the model (the reason says why)
};

class LayerType {
 public:
  virtual ~LayerType() = default;
  virtual Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
                       std::vector<ParamTensor>* params) const = 0;
  virtual std::unique_ptr<LayerExec> Create(const LayerContext& ctx) const = 0;
  // DP-SGD support of a layer with this spec; *why is set for kUnsupported.
  // A layer type with parameters that says nothing is refused.
  virtual PerExample PerExampleMethod(const proto::LayerSpec& spec, std::string* why) const {
    *why = "no per-example gradient method for this layer type";
    return PerExample::kUnsupported;
  }
};

// Whether a backend runs one layer spec: "" when it does, else why not
// ("activation TANH has no CUDA kernel").
using BackendCheck = std::function<std::string(const proto::LayerSpec&)>;

// Registry of layer types by name ("Conv2D", ...) and of the backends that
// execute each: the one place that says what a device can run, so a job is
// refused at job check, naming the layer, rather than halfway through
// training. A type registered with Register runs on the CPU (LayerType::
// Create is its CPU executor); other backends register their executors by
// name. Built-ins are registered on first use; duplicates are refused.
class LayerRegistry {
 public:
  static LayerRegistry& Global();
  Status Register(const std::string& name, std::unique_ptr<LayerType> type);
  // Backend `kind` has an executor for the registered type `name`; `check`
  // (may be null) refuses the specs of that type it cannot run.
  Status RegisterExecutor(device::Kind kind, const std::string& name, BackendCheck check);
  // NotFound lists the known names.
  StatusOr<const LayerType*> Find(const std::string& name) const;
  std::vector<std::string> Names() const;
  // The types backend `kind` executes.
  std::vector<std::string> Names(device::Kind kind) const;
  // "" when backend `kind` runs `spec`, else why not (naming the types it
  // does run when it has no executor for this one).
  std::string WhyNot(device::Kind kind, const proto::LayerSpec& spec) const;

 private:
  std::map<std::string, std::unique_ptr<LayerType>> types_;
  std::map<std::pair<device::Kind, std::string>, BackendCheck> executors_;
};

// The CUDA backend's executors (common/nn/cuda/cuda_layers.cc builds them;
// the GPU tests check the two lists agree); called by Global() whether or
// not this build has the backend, so a job names what CUDA would refuse.
void RegisterCudaExecutors(LayerRegistry& r);

// Adds the sequence layers (common/nn/seq_layers.cc); called by Global().
void RegisterSequenceLayers(LayerRegistry& r);

}  // namespace polis::nn
