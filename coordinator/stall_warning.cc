#include "coordinator/stall_warning.h"

#include <fmt/format.h>

namespace polis::coordinator {

std::string LastWindowSummary(double compute_s, double comm_s, double wait_s) {
  const double total = compute_s + comm_s + wait_s;
  if (!(total > 0)) return "";
  const char* what = "computing";
  double most = compute_s;
  if (comm_s > most) what = "communicating", most = comm_s;
  if (wait_s > most) what = "waiting for data or for the others", most = wait_s;
  return fmt::format("mostly {} ({:.1f} of {:.1f} s)", what, most, total);
}

std::string StallWarningLine(double stalled_s, const std::vector<RankActivity>& waiting_on,
                             const std::vector<RankActivity>& held) {
  auto list = [](const std::vector<RankActivity>& ranks) {
    std::string out;
    for (const auto& r : ranks) out += fmt::format("{}{}: {}", out.empty() ? "" : "; ", r.name, r.doing);
    return out;
  };
  std::string line = fmt::format("stall: no worker has completed a step for {:.0f} s; waiting on {}", stalled_s,
                                 waiting_on.empty() ? std::string("nobody known") : list(waiting_on));
  if (!held.empty()) line += "; held: " + list(held);
  return line;
}

StallWarning::StallWarning(double every_s, comm::Clock::time_point start)
    : every_s_(every_s), last_progress_(start), last_warning_(start) {}

void StallWarning::Progressed(comm::Clock::time_point now) {
  last_progress_ = now;
  last_warning_ = now;
}

std::optional<double> StallWarning::Due(comm::Clock::time_point now) {
  if (every_s_ <= 0) return std::nullopt;
  const double stalled = std::chrono::duration<double>(now - last_progress_).count();
  const double since_warning = std::chrono::duration<double>(now - last_warning_).count();
  if (stalled < every_s_ || since_warning < every_s_) return std::nullopt;
  last_warning_ = now;
  return stalled;
}

}  // namespace polis::coordinator
