#include "common/nn/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/log.h"
#include "common/trace/trace.h"

namespace polis::nn {

using dnnl::memory;

StatusOr<Model> Model::Build(const proto::ModelSpec& spec, const Shape& input_shape) {
  Model m;
  m.input_shape_ = input_shape;
  if (spec.layer_size() == 0) return InvalidArgument("model has no layers");
  Shape shape = input_shape;
  int64_t offset = 0;
  for (int i = 0; i < spec.layer_size(); ++i) {
    const proto::LayerSpec& ls = spec.layer(i);
    LayerInfo info;
    info.type = ls.type();
    info.spec = ls;
    std::string lower = ls.type();
    for (char& c : lower) c = static_cast<char>(std::tolower(c));
    info.name = ls.has_name() ? ls.name() : fmt::format("{}_{}", lower, i);
    auto where = [&](const Status& st) {
      return st.WithContext(fmt::format("model.layer[{}] ({}, {})", i, info.name,
                                        ls.has_type() ? ls.type() : "no type"));
    };
    if (!ls.has_type()) return where(InvalidArgument("field 'type' is required"));
    auto type = LayerRegistry::Global().Find(ls.type());
    if (!type.ok()) return where(InvalidArgument("{}", type.status().message()));
    info.impl = *type;
    info.in_shape = shape;
    Status st = info.impl->Infer(ls, shape, &info.out_shape, &info.params);
    if (!st.ok()) return where(st);
    for (const int64_t d : info.out_shape)
      if (d <= 0)
        return where(InvalidArgument("output shape {} is empty", ShapeString(info.out_shape)));
    info.param_offset = offset;
    for (auto& p : info.params) {
      p.offset = offset;
      offset += p.count;
    }
    info.param_count = offset - info.param_offset;
    shape = info.out_shape;
    m.layers_.push_back(std::move(info));
  }
  m.output_shape_ = shape;
  m.parameter_count_ = offset;
  if (spec.has_expect_parameters() && spec.expect_parameters() != m.parameter_count_)
    return InvalidArgument("model.expect_parameters is {} but the layers have {} parameters",
                           spec.expect_parameters(), m.parameter_count_);
  return m;
}

std::string FirstNonFiniteParameter(const Model& model, const float* params) {
  for (const auto& l : model.layers())
    for (const auto& p : l.params)
      for (int64_t i = 0; i < p.count; ++i)
        if (!std::isfinite(params[p.offset + i]))
          return fmt::format("layer '{}' ({}) {} element {} is {}", l.name, l.type, p.name, i,
                             params[p.offset + i]);
  return "";
}

void Model::InitParams(float* params, uint64_t seed) const {
  std::mt19937_64 rng(seed);
  for (const LayerInfo& l : layers_) {
    for (const ParamTensor& p : l.params) {
      float* dst = params + p.offset;
      if (p.fan_in == 0) {
        if (p.init_one) std::fill(dst, dst + p.count, 1.0f);
        else std::memset(dst, 0, sizeof(float) * p.count);
        continue;
      }
      if (l.spec.initializer() == proto::HE_NORMAL) {
        std::normal_distribution<double> dist(0.0, std::sqrt(2.0 / p.fan_in));
        for (int64_t i = 0; i < p.count; ++i) dst[i] = static_cast<float>(dist(rng));
      } else {
        double limit = std::sqrt(6.0 / static_cast<double>(p.fan_in + p.fan_out));
        std::uniform_real_distribution<double> dist(-limit, limit);
        for (int64_t i = 0; i < p.count; ++i) dst[i] = static_cast<float>(dist(rng));
      }
    }
  }
}

// ------------------------------------------------------------------ Network

namespace {

memory::desc PlainBatchDesc(int64_t batch, const Shape& s) {
  memory::dims d{batch};
  d.insert(d.end(), s.begin(), s.end());
  auto tag = d.size() == 4 ? memory::format_tag::nchw
             : d.size() == 2 ? memory::format_tag::nc
             : d.size() == 3 ? memory::format_tag::ncw
                             : memory::format_tag::x;
  return memory::desc(d, memory::data_type::f32, tag);
}

dnnl::engine& CpuEngine() {
  static dnnl::engine* eng = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *eng;
}

}  // namespace

struct Network::Impl {
  dnnl::stream stream{CpuEngine()};
  std::vector<std::unique_ptr<LayerExec>> layers;
  memory input_mem, output_plain, output_diff_plain, last_diff, input_diff_plain;
  dnnl::reorder out_reorder, diff_reorder, in_diff_reorder;
  bool out_needs_reorder = false, in_diff_needs_reorder = false;
  bool training = false;
  bool want_input_grad = false;
  std::vector<const char*> trace_names;  // the layers' names on the timeline
};

Network::Network(const Model& model, int64_t batch, float* params, float* grads, bool training,
                 bool want_input_grad)
    : impl_(std::make_unique<Impl>()), batch_(batch) {
  auto& eng = CpuEngine();
  impl_->training = training;
  impl_->want_input_grad = want_input_grad;
  input_.assign(batch * ShapeElements(model.input_shape()), 0.f);
  output_.assign(batch * ShapeElements(model.output_shape()), 0.f);
  output_diff_.assign(output_.size(), 0.f);
  impl_->input_mem = memory(PlainBatchDesc(batch, model.input_shape()), eng, input_.data());

  memory src = impl_->input_mem;
  const auto& infos = model.layers();
  for (size_t i = 0; i < infos.size(); ++i) {
    LayerContext c;
    c.spec = &infos[i].spec;
    c.in_shape = infos[i].in_shape;
    c.out_shape = infos[i].out_shape;
    c.batch = batch;
    c.training = training;
    c.engine = &eng;
    c.src = src;
    c.src_md = src.get_desc();
    c.params = params + infos[i].param_offset;
    c.grads = grads ? grads + infos[i].param_offset : nullptr;
    c.need_diff_src = i > 0 || want_input_grad;
    // Move a fused ReLU's gradient past a following max-pool (see layer.h).
    auto relu_then_pool = [&](size_t a) {
      return a + 1 < infos.size() && infos[a].spec.activation() == proto::RELU &&
             infos[a + 1].type == "MaxPool2D";
    };
    c.relu_grad_deferred = relu_then_pool(i);
    c.relu_grad_on_dst = i > 0 && relu_then_pool(i - 1) && c.need_diff_src;
    impl_->layers.push_back(infos[i].impl->Create(c));
    impl_->trace_names.push_back(trace::On() ? trace::Intern(infos[i].name) : "layer");
    src = impl_->layers.back()->dst();
  }
  memory::desc plain_out = PlainBatchDesc(batch, model.output_shape());
  impl_->output_plain = memory(plain_out, eng, output_.data());
  impl_->output_diff_plain = memory(plain_out, eng, output_diff_.data());
  impl_->out_needs_reorder = src.get_desc() != plain_out;
  if (impl_->out_needs_reorder) {
    impl_->out_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, src.get_desc(), eng, plain_out));
    impl_->diff_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, plain_out, eng, src.get_desc()));
    impl_->last_diff = memory(src.get_desc(), eng);
  } else {
    // The last layer writes its output straight into output_.
    impl_->last_diff = impl_->output_diff_plain;
  }
  if (!training) return;
  for (size_t i = 0; i < impl_->layers.size(); ++i) {
    const memory& diff_dst =
        i + 1 < impl_->layers.size() ? impl_->layers[i + 1]->diff_src() : impl_->last_diff;
    impl_->layers[i]->BindDiffDst(diff_dst);
  }
  if (want_input_grad) {
    input_diff_.assign(input_.size(), 0.f);
    impl_->input_diff_plain = memory(impl_->input_mem.get_desc(), eng, input_diff_.data());
    const memory& d = impl_->layers.front()->diff_src();
    impl_->in_diff_needs_reorder = d.get_desc() != impl_->input_diff_plain.get_desc();
    if (impl_->in_diff_needs_reorder)
      impl_->in_diff_reorder = dnnl::reorder(
          dnnl::reorder::primitive_desc(eng, d.get_desc(), eng, impl_->input_diff_plain.get_desc()));
  }
  for (const auto& s : ImplInfo())
    if (s.find("ref") != std::string::npos)
      POLIS_LOG(kWarn, kNn, "oneDNN chose a reference (slow) kernel: {}", s);
}

Network::~Network() = default;

void Network::FreezeParams() {
  for (auto& l : impl_->layers) l->FreezeParams(impl_->stream);
  impl_->stream.wait();
}

void Network::Forward(const std::function<void(int)>& before_layer) {
  TRACE_SCOPE("forward");
  for (size_t i = 0; i < impl_->layers.size(); ++i) {
    if (before_layer) before_layer(static_cast<int>(i));
    TRACE_SCOPE(impl_->trace_names[i], "layer", static_cast<int64_t>(i));
    impl_->layers[i]->Forward(impl_->stream);
    if (trace::On()) impl_->stream.wait();  // the layer's span ends when its work does
  }
  memory& last = impl_->layers.back()->dst();
  if (impl_->out_needs_reorder) impl_->out_reorder.execute(impl_->stream, last, impl_->output_plain);
  impl_->stream.wait();
}

const float* Network::output() {
  if (!impl_->out_needs_reorder)
    return static_cast<const float*>(impl_->layers.back()->dst().get_data_handle());
  return output_.data();
}

void Network::Backward(const std::function<void(int)>& on_layer_done) {
  POLIS_ENFORCE(impl_->training);
  TRACE_SCOPE("backward");
  auto& s = impl_->stream;
  if (impl_->out_needs_reorder) impl_->diff_reorder.execute(s, impl_->output_diff_plain, impl_->last_diff);
  for (int i = static_cast<int>(impl_->layers.size()) - 1; i >= 0; --i) {
    {
      TRACE_SCOPE(impl_->trace_names[i], "layer", static_cast<int64_t>(i));
      impl_->layers[i]->Backward(s);
      if (trace::On()) s.wait();
    }
    if (on_layer_done) {
      s.wait();
      on_layer_done(i);
    }
  }
  if (impl_->want_input_grad) {
    memory& d = impl_->layers.front()->diff_src();
    if (impl_->in_diff_needs_reorder) impl_->in_diff_reorder.execute(s, d, impl_->input_diff_plain);
    else std::memcpy(input_diff_.data(), d.get_data_handle(), input_diff_.size() * sizeof(float));
  }
  s.wait();
}

const float* Network::input_diff() { return input_diff_.data(); }

std::vector<std::string> Network::ImplInfo() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < impl_->layers.size(); ++i)
    for (auto& s : impl_->layers[i]->ImplInfo()) out.push_back(fmt::format("layer {} {}", i, s));
  return out;
}

LossStats SoftmaxCrossEntropy(const float* logits, const int32_t* labels, int64_t n, int64_t k,
                              float* dlogits, float grad_scale) {
  LossStats st;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits + i * k;
    int64_t arg = 0;
    float mx = row[0];
    for (int64_t j = 1; j < k; ++j)
      if (row[j] > mx) {
        mx = row[j];
        arg = j;
      }
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(static_cast<double>(row[j] - mx));
    double log_sum = std::log(sum);
    int32_t y = labels[i];
    st.loss_sum += log_sum - static_cast<double>(row[y] - mx);
    st.correct += (arg == y);
    if (dlogits) {
      float* d = dlogits + i * k;
      for (int64_t j = 0; j < k; ++j) {
        double p = std::exp(static_cast<double>(row[j] - mx) - log_sum);
        d[j] = static_cast<float>((p - (j == y ? 1.0 : 0.0)) * grad_scale);
      }
    }
  }
  return st;
}

}  // namespace polis::nn

namespace polis::nn {

LossStats ComputeLoss(const proto::ModelSpec& spec, const float* out, const float* y, int64_t n,
                      int64_t k, float* dout, float grad_scale) {
  TRACE_SCOPE("loss");
  if (spec.loss() == proto::ModelSpec::SOFTMAX_CROSS_ENTROPY) {
    int32_t labels[256];
    LossStats total;
    for (int64_t at = 0; at < n; at += 256) {
      const int64_t m = std::min<int64_t>(256, n - at);
      for (int64_t i = 0; i < m; ++i) labels[i] = static_cast<int32_t>(y[at + i]);
      LossStats st = SoftmaxCrossEntropy(out + at * k, labels, m, k, dout ? dout + at * k : nullptr, grad_scale);
      total.loss_sum += st.loss_sum;
      total.correct += st.correct;
    }
    return total;
  }
  LossStats st;
  const double inv_k = 1.0 / static_cast<double>(k);
  const double delta = spec.huber_delta();
  for (int64_t i = 0; i < n * k; ++i) {
    const double e = static_cast<double>(out[i]) - y[i];
    double loss, grad;
    switch (spec.loss()) {
      case proto::ModelSpec::MAE:
        loss = std::abs(e);
        grad = e > 0 ? 1.0 : e < 0 ? -1.0 : 0.0;
        break;
      case proto::ModelSpec::HUBER:
        if (std::abs(e) <= delta) {
          loss = 0.5 * e * e;
          grad = e;
        } else {
          loss = delta * (std::abs(e) - 0.5 * delta);
          grad = e > 0 ? delta : -delta;
        }
        break;
      default:  // MSE
        loss = e * e;
        grad = 2.0 * e;
    }
    st.loss_sum += loss * inv_k;
    if (dout) dout[i] = static_cast<float>(grad * inv_k * grad_scale);
  }
  return st;
}

}  // namespace polis::nn
