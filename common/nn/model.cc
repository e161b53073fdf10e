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

std::string UnsupportedForDp(const Model& model) {
  for (const LayerInfo& l : model.layers()) {
    if (l.params.empty()) continue;
    std::string why;
    if (l.impl->PerExampleMethod(l.spec, &why) == PerExample::kUnsupported)
      return fmt::format("layer '{}' ({}): {}", l.name, l.type, why);
  }
  return "";
}

// A batch-1 copy of a layer whose per-example gradients are recomputed
// (PerExample::kRecompute), with plain copies of the batch's src and
// diff_dst to slice examples from.
struct PerExampleShadow {
  std::unique_ptr<LayerExec> exec;
  std::vector<float> x1, dy1, grads;
  memory src_plain, dd_plain;
  MaybeReorder src_reorder, dd_reorder;
  bool src_reorder_on = false, dd_reorder_on = false;
  int64_t in_elems = 0, out_elems = 0;
};

struct Network::Impl {
  dnnl::stream stream{CpuEngine()};
  // For BackwardClipped.
  std::vector<LayerInfo> infos;
  float* params = nullptr;
  std::vector<PerExample> methods;
  std::vector<std::unique_ptr<PerExampleShadow>> shadows;
  std::vector<double> sq_norms;
  std::vector<float> saved_diff;
  bool per_example_ready = false;
  std::vector<std::unique_ptr<LayerExec>> layers;
  memory input_mem, output_plain, output_diff_plain, last_diff, input_diff_plain;
  MaybeReorder out_reorder, diff_reorder, in_diff_reorder;
  bool out_needs_reorder = false, in_diff_needs_reorder = false;
  bool training = false;
  bool want_input_grad = false;
  std::vector<const char*> trace_names;  // the layers' names on the timeline
};

Network::Network(const Model& model, int64_t batch, float* params, float* grads, bool training,
                 bool want_input_grad, bool bf16)
    : impl_(std::make_unique<Impl>()), batch_(batch) {
  auto& eng = CpuEngine();
  impl_->training = training;
  impl_->want_input_grad = want_input_grad;
  impl_->infos = model.layers();
  impl_->params = params;
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
    c.bf16 = bf16;
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
    impl_->out_reorder.Init(eng, src.get_desc(), plain_out);
    impl_->diff_reorder.Init(eng, plain_out, src.get_desc());
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
      impl_->in_diff_reorder.Init(eng, d.get_desc(), impl_->input_diff_plain.get_desc());
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
  if (impl_->out_needs_reorder) impl_->out_reorder.Run(impl_->stream, last, impl_->output_plain);
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
  if (impl_->out_needs_reorder) impl_->diff_reorder.Run(s, impl_->output_diff_plain, impl_->last_diff);
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
    if (impl_->in_diff_needs_reorder) impl_->in_diff_reorder.Run(s, d, impl_->input_diff_plain);
    else std::memcpy(input_diff_.data(), d.get_data_handle(), input_diff_.size() * sizeof(float));
  }
  s.wait();
}

const float* Network::input_diff() { return input_diff_.data(); }

void Network::BackwardClipped(float clip_norm, float* per_example_norms) {
  POLIS_ENFORCE(impl_->training);
  Impl& m = *impl_;
  auto& eng = CpuEngine();
  auto& s = m.stream;
  const size_t L = m.layers.size();
  if (!m.per_example_ready) {
    m.methods.resize(L);
    m.shadows.resize(L);
    for (size_t i = 0; i < L; ++i) {
      const LayerInfo& info = m.infos[i];
      std::string why;
      m.methods[i] = info.params.empty() ? PerExample::kNoParams : info.impl->PerExampleMethod(info.spec, &why);
      POLIS_ENFORCE(m.methods[i] != PerExample::kUnsupported);  // the job check refuses these
      if (m.methods[i] != PerExample::kRecompute) continue;
      auto sh = std::make_unique<PerExampleShadow>();
      sh->in_elems = ShapeElements(info.in_shape);
      sh->out_elems = ShapeElements(info.out_shape);
      sh->x1.assign(sh->in_elems, 0.f);
      sh->dy1.assign(sh->out_elems, 0.f);
      sh->grads.assign(info.param_count, 0.f);
      const memory& src = i == 0 ? m.input_mem : m.layers[i - 1]->dst();
      const memory& dd = i + 1 < L ? m.layers[i + 1]->diff_src() : m.last_diff;
      const memory::desc src_plain = PlainBatchDesc(batch_, info.in_shape);
      const memory::desc dd_plain = PlainBatchDesc(batch_, info.out_shape);
      sh->src_reorder_on = src.get_desc() != src_plain;
      sh->src_plain = sh->src_reorder_on ? memory(src_plain, eng) : src;
      if (sh->src_reorder_on)
        sh->src_reorder.Init(eng, src.get_desc(), src_plain);
      sh->dd_reorder_on = dd.get_desc() != dd_plain;
      sh->dd_plain = sh->dd_reorder_on ? memory(dd_plain, eng) : dd;
      if (sh->dd_reorder_on)
        sh->dd_reorder.Init(eng, dd.get_desc(), dd_plain);
      LayerContext c;
      c.spec = &m.infos[i].spec;
      c.in_shape = info.in_shape;
      c.out_shape = info.out_shape;
      c.batch = 1;
      c.training = true;
      c.engine = &eng;
      c.src = memory(PlainBatchDesc(1, info.in_shape), eng, sh->x1.data());
      c.src_md = c.src.get_desc();
      c.params = m.params + info.param_offset;
      c.grads = sh->grads.data();
      c.need_diff_src = false;
      sh->exec = info.impl->Create(c);
      const memory::desc dst1 = sh->exec->dst().get_desc();
      POLIS_ENFORCE(dst1 == PlainBatchDesc(1, info.out_shape));  // recomputed layers work on plain buffers
      sh->exec->BindDiffDst(memory(dst1, eng, sh->dy1.data()));
      m.shadows[i] = std::move(sh);
    }
    m.sq_norms.assign(batch_, 0.0);
    m.saved_diff.assign(output_diff_.size(), 0.f);
    m.per_example_ready = true;
  }

  // Pass 1: every layer's per-example squared norms, right after its backward.
  std::copy(output_diff_.begin(), output_diff_.end(), m.saved_diff.begin());
  std::fill(m.sq_norms.begin(), m.sq_norms.end(), 0.0);
  for (auto& l : m.layers) l->set_param_grads_wanted(false);
  Backward([&](int i) {
    if (m.methods[i] == PerExample::kOwn) {
      m.layers[i]->AddPerExampleSqNorms(s, m.sq_norms.data());
      return;
    }
    if (m.methods[i] != PerExample::kRecompute) return;
    PerExampleShadow& sh = *m.shadows[i];
    const memory& src = i == 0 ? m.input_mem : m.layers[i - 1]->dst();
    const memory& dd = i + 1 < static_cast<int>(L) ? m.layers[i + 1]->diff_src() : m.last_diff;
    if (sh.src_reorder_on) sh.src_reorder.Run(s, src, sh.src_plain);
    if (sh.dd_reorder_on) sh.dd_reorder.Run(s, dd, sh.dd_plain);
    s.wait();
    const float* xs = static_cast<const float*>(sh.src_plain.get_data_handle());
    const float* ds = static_cast<const float*>(sh.dd_plain.get_data_handle());
    for (int64_t n = 0; n < batch_; ++n) {
      const float* d = ds + n * sh.out_elems;
      if (std::all_of(d, d + sh.out_elems, [](float v) { return v == 0.f; })) continue;  // padding
      std::copy(xs + n * sh.in_elems, xs + (n + 1) * sh.in_elems, sh.x1.begin());
      std::copy(d, d + sh.out_elems, sh.dy1.begin());
      sh.exec->Forward(s);
      sh.exec->Backward(s);
      s.wait();
      double sq = 0;
      for (float g : sh.grads) sq += static_cast<double>(g) * g;
      m.sq_norms[n] += sq;
    }
  });

  for (auto& l : m.layers) l->set_param_grads_wanted(true);
  // Pass 2: Σ_n c_n g_n is the gradient of Σ_n c_n loss_n.
  const int64_t k = static_cast<int64_t>(output_diff_.size()) / batch_;
  for (int64_t n = 0; n < batch_; ++n) {
    const double norm = std::sqrt(m.sq_norms[n]);
    if (per_example_norms) per_example_norms[n] = static_cast<float>(norm);
    const float c = norm > clip_norm ? static_cast<float>(clip_norm / norm) : 1.f;
    for (int64_t j = 0; j < k; ++j) output_diff_[n * k + j] = m.saved_diff[n * k + j] * c;
  }
  Backward();
  std::copy(m.saved_diff.begin(), m.saved_diff.end(), output_diff_.begin());
}

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
