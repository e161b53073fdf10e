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

Sampler::Sampler(const LoadedStudy& study) : spec_(study.spec), base_(study.base.spec) {
  for (const auto& p : spec_.param()) fields_.push_back(ParamField(base_, p.field()));
  if (spec_.sampler() == proto::StudySpec::GRID) {
    for (int i = 0; i < spec_.param_size(); ++i) grid_.push_back(GridValues(spec_.param(i), fields_[i]));
    Params prefix;
    std::vector<int> digits;
    EnumerateGrid(&prefix, &digits);
    size_ = static_cast<int64_t>(points_.size());
  }
}

// Every grid point in order (the last param varying fastest); a param whose
// condition does not hold contributes one point, null, instead of its grid.
void Sampler::EnumerateGrid(Params* prefix, std::vector<int>* digits) {
  const size_t i = prefix->size();
  if (i == grid_.size()) {
    points_.push_back(*digits);
    return;
  }
  const std::string& field = spec_.param(static_cast<int>(i)).field();
  const bool holds = ConditionHolds(spec_.param(static_cast<int>(i)), *prefix, base_);
  const int n = holds ? static_cast<int>(grid_[i].size()) : 1;
  for (int d = 0; d < n; ++d) {
    prefix->push_back({field, holds ? grid_[i][d] : json()});
    digits->push_back(holds ? d : -1);
    EnumerateGrid(prefix, digits);
    digits->pop_back();
    prefix->pop_back();
  }
}

std::optional<Params> Sampler::Sample(int64_t index) const {
  Params out;
  if (spec_.sampler() == proto::StudySpec::GRID) {
    if (index < 0 || index >= size_) return std::nullopt;
    const std::vector<int>& digit = points_[static_cast<size_t>(index)];
    for (size_t i = 0; i < grid_.size(); ++i)
      out.push_back({spec_.param(static_cast<int>(i)).field(), digit[i] < 0 ? json() : grid_[i][digit[i]]});
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
    // Drawn either way, so that the params after it draw the same values.
    out.push_back({p.field(), ConditionHolds(p, out, base_) ? v : json()});
  }
  return out;
}

}  // namespace polis::tune
