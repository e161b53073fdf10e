// CudaNetwork, CudaLoss and CudaOptimizer (cuda_network.h), and the status
// wrappers of cuda_util.h.
#include "common/nn/cuda/cuda_network.h"

#include <climits>
#include <cmath>

#include "common/log.h"
#include "common/nn/cuda/cuda_layers.h"
#include "common/nn/cuda/kernels.h"
#include "common/optimizer.h"

namespace polis::nn::cuda {

// ---------------------------------------------------------------- status wrappers

Status CudaStatus(cudaError_t e, const char* expr, const char* file, int line) {
  std::string what = fmt::format("CUDA {} ({}): {} -> at {}:{}", cudaGetErrorName(e),
                                 static_cast<int>(e), cudaGetErrorString(e), file, line);
  what += fmt::format(" in {}", expr);
  if (e == cudaErrorMemoryAllocation) return FailedPrecondition("out of device memory: {}", what);
  if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver)
    return FailedPrecondition("no usable CUDA device: {}", what);
  return InternalError("{}", what);
}

Status CudnnStatus(cudnnStatus_t e, const char* expr, const char* file, int line) {
  return InternalError("cuDNN {} ({}) in {} at {}:{}", cudnnGetErrorString(e), static_cast<int>(e),
                       expr, file, line);
}

Status CublasStatus(cublasStatus_t e, const char* expr, const char* file, int line) {
  return InternalError("cuBLAS {} ({}): {} in {} at {}:{}", cublasGetStatusName(e),
                       static_cast<int>(e), cublasGetStatusString(e), expr, file, line);
}

bool DeviceAvailable(std::string* why) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    if (why) *why = fmt::format("cudaGetDeviceCount: {} ({})", cudaGetErrorString(e), cudaGetErrorName(e));
    cudaGetLastError();  // clear the sticky error
    return false;
  }
  if (count == 0) {
    if (why) *why = "cudaGetDeviceCount: 0 CUDA devices";
    return false;
  }
  return true;
}

const char* PrecisionName(Precision p) {
  switch (p) {
    case Precision::kFp32: return "fp32";
    case Precision::kTf32: return "tf32";
    case Precision::kBf16: return "bf16";
  }
  return "?";
}

StatusOr<Precision> ParsePrecision(const std::string& name) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "tf32") return Precision::kTf32;
  if (name == "bf16") return Precision::kBf16;
  return InvalidArgument("unknown precision '{}'; known: fp32, tf32, bf16", name);
}

// ---------------------------------------------------------------- CudaNetwork

struct CudaNetwork::Impl {
  Gpu gpu;
  bool own_stream = false;
  bool training = false;
  bool want_input_grad = false;
  int64_t batch = 0;
  std::vector<std::unique_ptr<CudaLayer>> layers;
  std::vector<std::string> names;  // "layer 3 (conv2d_3, Conv2D)"
  std::vector<cudaEvent_t> events;
  DeviceArray<float> input, output_diff;
  ~Impl() {
    layers.clear();  // before the handles they use
    for (auto e : events) cudaEventDestroy(e);
    if (gpu.cublas) cublasDestroy(gpu.cublas);
    if (gpu.cudnn) cudnnDestroy(gpu.cudnn);
    if (own_stream && gpu.stream) cudaStreamDestroy(gpu.stream);
  }
};

CudaNetwork::CudaNetwork(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaNetwork::~CudaNetwork() = default;

StatusOr<std::unique_ptr<CudaNetwork>> CudaNetwork::Create(const Model& model, int64_t batch,
                                                           float* d_params, float* d_grads,
                                                           bool training,
                                                           const CudaOptions& options) {
  std::string why;
  if (!DeviceAvailable(&why)) return FailedPrecondition("no usable CUDA device: {}", why);
  if (batch <= 0) return InvalidArgument("batch must be > 0, got {}", batch);
  if (training && !d_grads) return InvalidArgument("training needs a gradient buffer");
  // Refuse unknown layer types before touching the device.
  const auto& infos = model.layers();
  for (size_t i = 0; i < infos.size(); ++i) {
    auto probe = MakeCudaLayer(infos[i].type);
    if (!probe.ok())
      return probe.status().WithContext(
          fmt::format("model.layer[{}] ({}, {})", i, infos[i].name, infos[i].type));
  }
  POLIS_CUDA_CHECK(cudaSetDevice(options.device));
  auto impl = std::make_unique<Impl>();
  Gpu& g = impl->gpu;
  impl->training = training;
  impl->want_input_grad = options.want_input_grad;
  impl->batch = batch;
  g.precision = options.precision;
  switch (options.precision) {
    case Precision::kFp32:
      g.gemm_compute = CUBLAS_COMPUTE_32F;
      g.cudnn_math = CUDNN_FMA_MATH;
      break;
    case Precision::kTf32:
      g.gemm_compute = CUBLAS_COMPUTE_32F_FAST_TF32;
      g.cudnn_math = CUDNN_DEFAULT_MATH;
      break;
    case Precision::kBf16:
      g.gemm_compute = CUBLAS_COMPUTE_32F_FAST_16BF;
      g.cudnn_math = CUDNN_DEFAULT_MATH;
      break;
  }
  if (options.stream) {
    g.stream = options.stream;
  } else {
    POLIS_CUDA_CHECK(cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking));
    impl->own_stream = true;
  }
  POLIS_CUDNN_CHECK(cudnnCreate(&g.cudnn));
  POLIS_CUDNN_CHECK(cudnnSetStream(g.cudnn, g.stream));
  POLIS_CUBLAS_CHECK(cublasCreate(&g.cublas));
  POLIS_CUBLAS_CHECK(cublasSetStream(g.cublas, g.stream));
  POLIS_RETURN_IF_ERROR(g.bad_id.Allocate(1));
  const long long none = LLONG_MAX;
  POLIS_CUDA_CHECK(cudaMemcpy(g.bad_id.get(), &none, sizeof(none), cudaMemcpyHostToDevice));

  POLIS_RETURN_IF_ERROR(impl->input.Allocate(batch * ShapeElements(model.input_shape())));
  const float* src = impl->input.get();
  for (size_t i = 0; i < infos.size(); ++i) {
    const std::string where =
        fmt::format("model.layer[{}] ({}, {})", i, infos[i].name, infos[i].type);
    POLIS_ASSIGN_OR_RETURN(std::unique_ptr<CudaLayer> layer, MakeCudaLayer(infos[i].type));
    CudaLayerContext c;
    c.info = &infos[i];
    c.index = static_cast<int>(i);
    c.batch = batch;
    c.training = training;
    c.need_diff_src = i > 0 || options.want_input_grad;
    c.src = src;
    c.params = d_params + infos[i].param_offset;
    c.grads = d_grads ? d_grads + infos[i].param_offset : nullptr;
    c.gpu = &g;
    Status st = layer->Init(c);
    if (!st.ok()) return st.WithContext(where);
    src = layer->dst();
    impl->layers.push_back(std::move(layer));
    impl->names.push_back(where);
  }
  POLIS_RETURN_IF_ERROR(g.workspace.Allocate(static_cast<int64_t>(g.workspace_bytes)));
  if (training) {
    POLIS_RETURN_IF_ERROR(impl->output_diff.AllocateZeroed(batch * ShapeElements(model.output_shape())));
    float* diff = impl->output_diff.get();
    for (int i = static_cast<int>(impl->layers.size()) - 1; i >= 0; --i) {
      impl->layers[i]->BindDiffDst(diff);
      diff = impl->layers[i]->diff_src();
    }
    impl->events.resize(impl->layers.size());
    for (auto& e : impl->events) POLIS_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  POLIS_CUDA_CHECK(cudaDeviceSynchronize());  // setup copies are done before the first step
  POLIS_LOG(kInfo, kNn, "CUDA network: {} layers, batch {}, {}, workspace {} bytes",
            impl->layers.size(), batch, PrecisionName(options.precision), g.workspace_bytes);
  return std::unique_ptr<CudaNetwork>(new CudaNetwork(std::move(impl)));
}

int64_t CudaNetwork::batch() const { return impl_->batch; }
cudaStream_t CudaNetwork::stream() const { return impl_->gpu.stream; }
float* CudaNetwork::d_input() { return impl_->input.get(); }
const float* CudaNetwork::d_output() const { return impl_->layers.back()->dst(); }
float* CudaNetwork::d_output_diff() { return impl_->output_diff.get(); }
const float* CudaNetwork::d_input_diff() const {
  return impl_->want_input_grad ? impl_->layers.front()->diff_src() : nullptr;
}
cudaEvent_t CudaNetwork::layer_done_event(int layer) const { return impl_->events.at(layer); }

Status CudaNetwork::Forward(const std::function<void(int)>& before_layer) {
  for (size_t i = 0; i < impl_->layers.size(); ++i) {
    if (before_layer) before_layer(static_cast<int>(i));
    Status st = impl_->layers[i]->Forward();
    if (!st.ok()) return st.WithContext(impl_->names[i] + " forward");
  }
  return Status::Ok();
}

Status CudaNetwork::Backward(const std::function<void(int)>& on_layer_done) {
  if (!impl_->training) return FailedPrecondition("Backward on a network built for inference");
  for (int i = static_cast<int>(impl_->layers.size()) - 1; i >= 0; --i) {
    Status st = impl_->layers[i]->Backward();
    if (!st.ok()) return st.WithContext(impl_->names[i] + " backward");
    POLIS_CUDA_CHECK(cudaEventRecord(impl_->events[i], impl_->gpu.stream));
    if (on_layer_done) on_layer_done(i);
  }
  return Status::Ok();
}

Status CudaNetwork::TakeDataError() {
  POLIS_CUDA_CHECK(cudaStreamSynchronize(impl_->gpu.stream));
  long long bad = LLONG_MAX;
  POLIS_CUDA_CHECK(cudaMemcpy(&bad, impl_->gpu.bad_id.get(), sizeof(bad), cudaMemcpyDeviceToHost));
  if (bad == LLONG_MAX) return Status::Ok();
  const long long none = LLONG_MAX;
  POLIS_CUDA_CHECK(cudaMemcpy(impl_->gpu.bad_id.get(), &none, sizeof(none), cudaMemcpyHostToDevice));
  // Embedding is the only layer that reports, and reads the raw input ids
  // only as a first layer in practice; name the position it reported.
  for (size_t i = 0; i < impl_->names.size(); ++i)
    if (impl_->names[i].find("Embedding") != std::string::npos)
      return InvalidArgument("{}: id at flat position {} is not an integer in [0, vocab)",
                             impl_->names[i], bad);
  return InvalidArgument("an Embedding id at flat position {} is not an integer in [0, vocab)", bad);
}

std::vector<std::string> CudaNetwork::ImplInfo() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < impl_->layers.size(); ++i)
    out.push_back(fmt::format("{}: {}", impl_->names[i], impl_->layers[i]->impl()));
  return out;
}

// ---------------------------------------------------------------- CudaLoss

struct CudaLoss::Impl {
  k::LossKind kind;
  int64_t n = 0, k = 0;
  float delta = 1.f;
  DeviceArray<double> scratch, stats;
};

StatusOr<std::unique_ptr<CudaLoss>> CudaLoss::Create(const proto::ModelSpec& spec, int64_t n,
                                                     int64_t k) {
  if (n <= 0 || k <= 0) return InvalidArgument("loss over {} x {} outputs", n, k);
  auto impl = std::make_shared<Impl>();
  impl->kind = static_cast<k::LossKind>(spec.loss());
  switch (spec.loss()) {
    case proto::ModelSpec::SOFTMAX_CROSS_ENTROPY:
    case proto::ModelSpec::MSE:
    case proto::ModelSpec::MAE:
    case proto::ModelSpec::HUBER:
      break;
    default:
      return InvalidArgument("model.loss {} has no CUDA kernel", static_cast<int>(spec.loss()));
  }
  impl->n = n;
  impl->k = k;
  impl->delta = spec.huber_delta();
  const bool cls = spec.loss() == proto::ModelSpec::SOFTMAX_CROSS_ENTROPY;
  POLIS_RETURN_IF_ERROR(impl->scratch.Allocate(cls ? 2 * n : n * k));
  POLIS_RETURN_IF_ERROR(impl->stats.AllocateZeroed(2));
  std::unique_ptr<CudaLoss> loss(new CudaLoss());
  loss->impl_ = std::move(impl);
  return loss;
}

Status CudaLoss::Compute(const float* d_out, const float* d_y, float* d_dout, float grad_scale,
                         cudaStream_t stream) {
  Impl& m = *impl_;
  POLIS_CUDA_CHECK(k::Loss(m.kind, d_out, d_y, m.n, m.k, m.delta, d_dout, grad_scale,
                           m.scratch.get(), m.stats.get(), stream));
  return Status::Ok();
}

StatusOr<LossStats> CudaLoss::Read(cudaStream_t stream) {
  double host[2];
  POLIS_CUDA_CHECK(cudaMemcpyAsync(host, impl_->stats.get(), sizeof(host), cudaMemcpyDeviceToHost, stream));
  POLIS_CUDA_CHECK(cudaStreamSynchronize(stream));
  LossStats st;
  st.loss_sum = host[0];
  st.correct = static_cast<int64_t>(std::llround(host[1]));
  return st;
}

// ---------------------------------------------------------------- CudaOptimizer

struct CudaOptimizer::Impl {
  proto::OptimizerSpec spec;
  int64_t n = 0, hint = 0, t = 0;
  DeviceArray<float> a, b;  // Adam: m, v; SGD: velocity (a)
};

StatusOr<std::unique_ptr<CudaOptimizer>> CudaOptimizer::Create(const proto::OptimizerSpec& spec,
                                                               int64_t n, int64_t total_steps_hint) {
  POLIS_RETURN_IF_ERROR(ValidateOptimizer(spec));
  auto impl = std::make_shared<Impl>();
  impl->spec = spec;
  impl->n = n;
  impl->hint = total_steps_hint;
  POLIS_RETURN_IF_ERROR(impl->a.AllocateZeroed(n));
  if (spec.type() != proto::OptimizerSpec::SGD) POLIS_RETURN_IF_ERROR(impl->b.AllocateZeroed(n));
  std::unique_ptr<CudaOptimizer> opt(new CudaOptimizer());
  opt->impl_ = std::move(impl);
  return opt;
}

Status CudaOptimizer::Step(float* d_params, const float* d_grads, cudaStream_t stream) {
  Impl& m = *impl_;
  ++m.t;
  const double lr = ScheduledLearningRate(m.spec, m.t, m.hint);
  const float lrf = static_cast<float>(lr);
  if (m.spec.type() == proto::OptimizerSpec::SGD) {
    POLIS_CUDA_CHECK(k::SgdStep(d_params, d_grads, m.a.get(), m.n, lrf, m.spec.momentum(),
                                m.spec.weight_decay(), m.spec.nesterov(), stream));
    return Status::Ok();
  }
  // The scalars exactly as AdamKernel (common/optimizer.cc) derives them.
  const bool decoupled = m.spec.type() == proto::OptimizerSpec::ADAMW;
  const float b1 = m.spec.beta1(), b2 = m.spec.beta2(), wd = m.spec.weight_decay();
  const double bc1 = 1.0 - std::pow(static_cast<double>(b1), static_cast<double>(m.t));
  const double bc2 = 1.0 - std::pow(static_cast<double>(b2), static_cast<double>(m.t));
  const float step = static_cast<float>(lrf / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float l2 = decoupled ? 0.0f : wd;
  const float shrink = decoupled ? 1.0f - lrf * wd : 1.0f;
  POLIS_CUDA_CHECK(k::AdamStep(d_params, d_grads, m.a.get(), m.b.get(), m.n, b1, b2,
                               m.spec.epsilon(), step, inv_sqrt_bc2, l2, shrink, stream));
  return Status::Ok();
}

int64_t CudaOptimizer::step_count() const { return impl_->t; }
void CudaOptimizer::set_step_count(int64_t t) { impl_->t = t; }
double CudaOptimizer::current_lr() const {
  return ScheduledLearningRate(impl_->spec, impl_->t + 1, impl_->hint);
}

std::vector<std::pair<std::string, float*>> CudaOptimizer::DeviceState() {
  if (impl_->spec.type() == proto::OptimizerSpec::SGD) return {{"velocity", impl_->a.get()}};
  return {{"m", impl_->a.get()}, {"v", impl_->b.get()}};
}

}  // namespace polis::nn::cuda
