#include "launch/tune/sampler.h"

#include <cmath>
#include <random>

namespace polis::tune {
namespace {

using google::protobuf::FieldDescriptor;
using json = nlohmann::json;

// A number for the field: integers rounded into [lo, hi].
json Number(const FieldDescriptor* f, double v, double lo, double hi) {
  if (!IsIntegerField(f)) return json(std::min(std::max(v, lo), hi));
  double r = std::round(v);
  if (r < std::ceil(lo)) r = std::ceil(lo);
  if (r > std::floor(hi)) r = std::floor(hi);
  return json(static_cast<long long>(r));
}

json ChoiceValue(const FieldDescriptor* f, const std::string& text) {
  if (IsIntegerField(f)) return json(std::stoll(text));
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT || f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE)
    return json(std::stod(text));
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_BOOL) return json(text == "true");
  return json(text);
}

// splitmix64: spreads (seed, index) into a well-mixed generator seed.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// [0, 1) from 53 random bits: the same on every platform.
double Unit(std::mt19937_64& g) { return static_cast<double>(g() >> 11) * 0x1.0p-53; }

}  // namespace

std::vector<json> GridValues(const proto::SearchParam& p, const FieldDescriptor* f) {
  std::vector<json> out;
  if (p.has_choice()) {
    for (const std::string& v : p.choice().value()) out.push_back(ChoiceValue(f, v));
  } else if (p.has_int_range()) {
    const auto& r = p.int_range();
    for (int64_t v = r.min(); v <= r.max(); v += r.step()) {
      out.push_back(json(v));
      if (r.max() - v < r.step()) break;  // no overflow past max
    }
  } else {
    const bool log = p.has_log_uniform();
    const auto& r = log ? p.log_uniform() : p.uniform();
    const int n = r.grid_points();
    for (int i = 0; i < n; ++i) {
      const double t = n == 1 ? 0.5 : static_cast<double>(i) / (n - 1);
      const double v = log ? std::exp(std::log(r.min()) + t * (std::log(r.max()) - std::log(r.min())))
                           : r.min() + t * (r.max() - r.min());
      json j = Number(f, i == 0 && n > 1 ? r.min() : (i == n - 1 && n > 1 ? r.max() : v), r.min(), r.max());
      // Rounding an integer field may repeat a point: keep each once.
      if (out.empty() || out.back() != j) out.push_back(j);
    }
  }
  return out;
}

double GridSize(const proto::StudySpec& spec) {
  double size = 1;
  for (const auto& p : spec.param()) {
    if (p.has_choice()) size *= p.choice().value_size();
    else if (p.has_int_range())
      size *= static_cast<double>((p.int_range().max() - p.int_range().min()) / std::max<int64_t>(1, p.int_range().step()) + 1);
    else size *= p.has_uniform() ? p.uniform().grid_points() : p.log_uniform().grid_points();
  }
  return size;
}

Sampler::Sampler(const LoadedStudy& study) : spec_(study.spec) {
  for (const auto& p : spec_.param()) fields_.push_back(ParamField(study.base.spec, p.field()));
  if (spec_.sampler() == proto::StudySpec::GRID) {
    size_ = 1;
    for (int i = 0; i < spec_.param_size(); ++i) {
      grid_.push_back(GridValues(spec_.param(i), fields_[i]));
      size_ *= static_cast<int64_t>(grid_.back().size());
    }
  }
}

std::optional<Params> Sampler::Sample(int64_t index) const {
  Params out;
  if (spec_.sampler() == proto::StudySpec::GRID) {
    if (index < 0 || index >= size_) return std::nullopt;
    std::vector<size_t> digit(grid_.size());
    int64_t rest = index;
    for (size_t i = grid_.size(); i-- > 0;) {
      digit[i] = static_cast<size_t>(rest % static_cast<int64_t>(grid_[i].size()));
      rest /= static_cast<int64_t>(grid_[i].size());
    }
    for (size_t i = 0; i < grid_.size(); ++i) out.push_back({spec_.param(i).field(), grid_[i][digit[i]]});
    return out;
  }
  std::mt19937_64 g(Mix(spec_.seed() ^ Mix(static_cast<uint64_t>(index))));
  for (int i = 0; i < spec_.param_size(); ++i) {
    const auto& p = spec_.param(i);
    const FieldDescriptor* f = fields_[i];
    const double u = Unit(g);
    json v;
    if (p.has_choice()) {
      const int n = p.choice().value_size();
      v = ChoiceValue(f, p.choice().value(std::min(n - 1, static_cast<int>(u * n))));
    } else if (p.has_int_range()) {
      const auto& r = p.int_range();
      const int64_t steps = (r.max() - r.min()) / r.step() + 1;
      v = json(r.min() + std::min<int64_t>(steps - 1, static_cast<int64_t>(u * static_cast<double>(steps))) * r.step());
    } else if (p.has_log_uniform()) {
      const auto& r = p.log_uniform();
      const double lo = std::log(r.min()), hi = std::log(r.max());
      v = Number(f, std::exp(lo + u * (hi - lo)), r.min(), r.max());
    } else {
      const auto& r = p.uniform();
      v = Number(f, r.min() + u * (r.max() - r.min()), r.min(), r.max());
    }
    out.push_back({p.field(), v});
  }
  return out;
}

}  // namespace polis::tune
