#include "launch/polisctl_tune.h"

#include <chrono>
#include <optional>
#include <cstdio>
#include <thread>

#include "launch/tune/study_server.h"
#include "launch/tune/study_state.h"

namespace polis::ctl {
namespace {

using json = nlohmann::json;

std::string Curve(const tune::Trial& t) {
  std::string out;
  const size_t from = t.curve.size() > 6 ? t.curve.size() - 6 : 0;
  if (from > 0) out = "… ";
  for (size_t i = from; i < t.curve.size(); ++i) out += fmt::format("{}{:.3f}", i == from ? "" : " ", t.curve[i].second);
  return out;
}

// `served`: tune.json of the polis-tune running the study, if one is.
std::string Render(const tune::StudyState& s, const std::optional<json>& served) {
  std::string out;
  out += fmt::format("study {} ({}{}): {} trial(s), {} epoch(s), {:.0f} s\n", s.name, s.state,
                     s.end_reason.empty() ? "" : ", " + s.end_reason, s.trials.size(), tune::EpochsCommitted(s),
                     s.wall_seconds);
  if (served && (*served)["address"].is_string())
    out += fmt::format("study page: {}/ (polis-tune pid {} on {})\n", (*served)["address"].get<std::string>(),
                       served->value("pid", 0LL), served->value("host", "?"));
  out += fmt::format("objective {} ({}), {} sampler, {}, rungs at epochs {}\n", s.objective,
                     s.maximize ? "maximize" : "minimize", s.sampler, s.scheduler, fmt::join(s.rungs, ", "));
  const int best = tune::BestTrial(s);
  if (best >= 0)
    out += fmt::format("best so far: trial {} {} {:.4f} at epoch {}\n", s.trials[best].id, s.objective,
                       s.trials[best].final_value(), s.trials[best].epochs_done);
  if (!s.published.is_null())
    out += fmt::format("published: {} version {} (alias {}) under {}\n", s.published.value("model", ""),
                       s.published.value("version", 0), s.published.value("alias", ""), s.published.value("root", ""));
  out += fmt::format("{:<6} {:<10} {:>4} {:>6}  {:<40} {}\n", "trial", "state", "rung", "epochs",
                     s.objective + " by epoch", "params");
  for (const tune::Trial& t : s.trials) {
    std::string params;
    for (const auto& p : t.params)
      if (!p.value.is_null()) params += fmt::format("{}{}={}", params.empty() ? "" : " ", p.field, tune::ParamText(p.value));
    std::string where = t.state;
    if (t.state == "stopped") where = fmt::format("stopped@{}", t.epochs_done);
    out += fmt::format("{:<6} {:<10} {:>4} {:>6}  {:<40} {}{}\n", t.id, where, t.rung, t.epochs_done, Curve(t),
                       params, t.index == best ? "  <- best" : "");
    if (!t.error.empty()) out += fmt::format("       {}\n", t.error);
  }
  return out;
}

}  // namespace

CLI::App* AddTuneCommands(CLI::App& app, TuneCtlOptions* o) {
  CLI::App* tune = app.add_subcommand("tune", "watch a hyperparameter study (polis-tune, docs/tuning.md)");
  tune->require_subcommand(1, 1);
  auto* status = tune->add_subcommand("status", "the study's trials, rungs, curves and best so far");
  auto* top = tune->add_subcommand("top", "refresh the status in place until the study stops running");
  for (CLI::App* c : {status, top}) c->add_option("study_dir", o->study_dir, "the study directory")->required();
  top->add_option("--interval", o->interval_s, "seconds between refreshes (default 2)")->check(CLI::PositiveNumber);
  top->add_option("--iterations", o->iterations, "stop after N refreshes (default: until it stops running)")
      ->check(CLI::NonNegativeNumber);
  return tune;
}

int RunTune(CLI::App* tune, const TuneCtlOptions& o, bool as_json, const volatile bool* stop) {
  const std::string cmd = tune->get_subcommands().front()->get_name();
  for (int n = 1;; ++n) {
    auto s = tune::ReadStudyState(o.study_dir);
    if (!s.ok()) {
      std::fprintf(stderr, "polisctl tune %s: %s\n", cmd.c_str(), s.status().message().c_str());
      return 1;
    }
    const std::optional<json> served = tune::RunningTuneInfo(o.study_dir);
    if (as_json) {
      json doc = tune::StudyJson(*s);
      if (served) doc["monitor"] = *served;
      std::printf("%s\n", doc.dump(cmd == "top" ? -1 : 1).c_str());
    } else {
      if (cmd == "top") std::printf("\x1b[H\x1b[2J");
      std::printf("%s", Render(*s, served).c_str());
    }
    std::fflush(stdout);
    if (cmd != "top" || s->state != "running" || (o.iterations > 0 && n >= o.iterations)) return 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.interval_s);
    while (std::chrono::steady_clock::now() < until) {
      if (*stop) return 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

}  // namespace polis::ctl
