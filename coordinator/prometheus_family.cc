#include "coordinator/prometheus_family.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <utility>

namespace polis::coordinator {

std::string PromNumber(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

std::string PromLabelValue(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

PromFamily::PromFamily(std::string name, std::string type, std::string help)
    : name_(std::move(name)), type_(std::move(type)), help_(std::move(help)) {}

void PromFamily::Add(const std::string& labels, double value) {
  samples_ += name_;
  if (!labels.empty()) samples_ += "{" + labels + "}";
  samples_ += " " + PromNumber(value) + "\n";
}

void PromFamily::AppendTo(std::string* out) const {
  if (samples_.empty()) return;
  *out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name_, help_, name_, type_);
  *out += samples_;
}

}  // namespace polis::coordinator
