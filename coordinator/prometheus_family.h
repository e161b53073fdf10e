// Building blocks of the Prometheus text exposition format (version 0.0.4),
// shared by the job's /metrics (coordinator/monitor.cc) and a study's
// (launch/tune/study_server.cc): one metric family at a time, its HELP and
// TYPE lines written only when it has samples.
//
// Values only; no shared state.
#pragma once

#include <string>

namespace polis::coordinator {

// A sample value: integers without a decimal point, NaN, +Inf, -Inf.
std::string PromNumber(double v);
// A label value with \, " and newline escaped (without the quotes).
std::string PromLabelValue(const std::string& s);

// One metric family: HELP and TYPE, then its samples.
class PromFamily {
 public:
  // `type`: "gauge" or "counter".
  PromFamily(std::string name, std::string type, std::string help);
  // `labels`: `key="value",...` already escaped, or "".
  void Add(const std::string& labels, double value);
  // Appends the family to `out`, or nothing when it has no samples.
  void AppendTo(std::string* out) const;

 private:
  std::string name_, type_, help_, samples_;
};

}  // namespace polis::coordinator
