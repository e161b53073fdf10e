#include "common/trace/timeline_render.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

namespace polis::trace {
namespace {

using nlohmann::json;

struct Ev {
  std::string name, parent;  // parent: the enclosing span's name ("" at the top)
  int pid = 0, tid = 0, depth = 0;
  double ts = 0, end = 0;  // microseconds
};

// Complete events with their depth and parent, per thread.
std::vector<Ev> Events(const json& doc) {
  std::vector<Ev> out;
  for (const auto& e : doc["traceEvents"]) {
    if (!e.is_object() || e.value("ph", "") != "X") continue;
    Ev v;
    v.name = e.value("name", "");
    v.pid = e.value("pid", 0);
    v.tid = e.value("tid", 0);
    v.ts = e.value("ts", 0.0);
    v.end = v.ts + e.value("dur", 0.0);
    out.push_back(std::move(v));
  }
  std::sort(out.begin(), out.end(), [](const Ev& a, const Ev& b) {
    if (a.pid != b.pid) return a.pid < b.pid;
    if (a.tid != b.tid) return a.tid < b.tid;
    return a.ts != b.ts ? a.ts < b.ts : a.end > b.end;
  });
  std::vector<size_t> stack;
  for (size_t i = 0; i < out.size(); ++i) {
    if (i > 0 && (out[i].pid != out[i - 1].pid || out[i].tid != out[i - 1].tid)) stack.clear();
    while (!stack.empty() && out[i].ts >= out[stack.back()].end) stack.pop_back();
    out[i].depth = static_cast<int>(stack.size());
    if (!stack.empty()) out[i].parent = out[stack.back()].name;
    stack.push_back(i);
  }
  return out;
}

std::map<int, std::string> Names(const json& doc, const char* what, bool by_tid) {
  std::map<int, std::string> out;
  for (const auto& e : doc["traceEvents"])
    if (e.is_object() && e.value("ph", "") == "M" && e.value("name", "") == what && e.contains("args"))
      out[e.value(by_tid ? "tid" : "pid", 0)] = e["args"].value("name", "");
  return out;
}

// A colour per phase; a layer takes its pass's (forward or backward), lighter.
Rgb Colour(const Ev& e) {
  static const std::map<std::string, Rgb> kColours = {
      {"step", {200, 200, 200}},          {"data wait", {230, 159, 0}},   {"load batch", {240, 200, 80}},
      {"forward", {86, 180, 233}},        {"loss", {120, 120, 120}},      {"check finite", {160, 160, 160}},
      {"backward", {0, 114, 178}},        {"sync", {213, 94, 0}},         {"allreduce wait", {240, 130, 90}},
      {"allreduce bucket", {204, 121, 167}}, {"optimizer", {0, 158, 115}}, {"push piece", {204, 121, 167}},
      {"push rest", {204, 121, 167}},     {"wait servers", {240, 130, 90}}, {"pull wait", {250, 180, 150}},
      {"server apply", {0, 158, 115}},    {"checkpoint", {90, 60, 150}},  {"checkpoint write", {90, 60, 150}},
      {"report", {150, 150, 150}},        {"evaluate", {170, 170, 60}}};
  auto it = kColours.find(e.name);
  if (it != kColours.end()) return it->second;
  auto parent = kColours.find(e.parent);
  if (parent != kColours.end() && (e.parent == "forward" || e.parent == "backward")) {
    Rgb c = parent->second;
    // Alternate shades so neighbouring layers are told apart.
    const int lift = (std::hash<std::string>{}(e.name) % 2) ? 40 : 80;
    return {static_cast<uint8_t>(std::min(255, c.r + lift)), static_cast<uint8_t>(std::min(255, c.g + lift)),
            static_cast<uint8_t>(std::min(255, c.b + lift))};
  }
  return {180, 180, 180};
}

}  // namespace

StatusOr<json> ParseTimeline(const std::string& text, const std::string& source) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return InvalidArgument("{}: not JSON (a timeline is trace-event JSON)", source);
  if (!doc.is_object() || !doc.contains("traceEvents") || !doc["traceEvents"].is_array())
    return InvalidArgument("{}: no \"traceEvents\" array; not a Polis timeline", source);
  return doc;
}

std::string SummarizeTimeline(const json& doc) {
  const auto events = Events(doc);
  const auto processes = Names(doc, "process_name", false);
  // Per rank: step count and time, and time per direct child of a step.
  std::map<int, int> steps;
  std::map<int, double> step_us;
  std::map<int, std::map<std::string, double>> phase_us, top_us;
  for (const auto& e : events) {
    if (e.name == "step") ++steps[e.pid], step_us[e.pid] += e.end - e.ts;
    if (e.parent == "step" && e.depth == 1) phase_us[e.pid][e.name] += e.end - e.ts;
    if (e.depth == 0) top_us[e.pid][e.name] += e.end - e.ts;
  }
  std::string out;
  std::set<int> pids;
  for (const auto& e : events) pids.insert(e.pid);
  for (const auto& [pid, name] : processes) pids.insert(pid);
  for (int pid : pids) {
    const std::string label = processes.count(pid) ? processes.at(pid) : fmt::format("rank {}", pid);
    if (steps[pid] > 0) {
      out += fmt::format("{}: {} steps, mean {:.2f} ms\n", label, steps[pid], step_us[pid] / steps[pid] / 1000);
      std::vector<std::pair<double, std::string>> parts;
      double covered = 0;
      for (const auto& [name, us] : phase_us[pid]) parts.push_back({us, name}), covered += us;
      std::sort(parts.rbegin(), parts.rend());
      for (const auto& [us, name] : parts)
        out += fmt::format("  {:<18} {:5.1f} %  {:8.3f} ms/step\n", name, 100 * us / step_us[pid], us / steps[pid] / 1000);
      out += fmt::format("  {:<18} {:5.1f} %\n", "(between phases)", 100 * (1 - covered / step_us[pid]));
      if (top_us[pid].count("data wait"))
        out += fmt::format("  and between steps: data wait {:.3f} ms/step\n", top_us[pid]["data wait"] / steps[pid] / 1000);
    } else {
      std::vector<std::pair<double, std::string>> parts;
      for (const auto& [name, us] : top_us[pid]) parts.push_back({us, name});
      std::sort(parts.rbegin(), parts.rend());
      out += fmt::format("{}:", label);
      for (size_t i = 0; i < std::min<size_t>(parts.size(), 4); ++i)
        out += fmt::format("{} {} {:.1f} ms", i ? "," : "", parts[i].second, parts[i].first / 1000);
      out += parts.empty() ? " no spans\n" : "\n";
    }
  }
  return out;
}

StatusOr<Image> RenderTimeline(const json& doc, const RenderOptions& o) {
  const auto events = Events(doc);
  // The window: the first worker's steps skip_steps .. skip_steps + steps.
  std::vector<const Ev*> steps;
  int first_pid = -1;
  for (const auto& e : events)
    if (e.name == "step" && (first_pid < 0 || e.pid == first_pid)) first_pid = e.pid, steps.push_back(&e);
  if (steps.empty()) return InvalidArgument("the timeline holds no steps to draw");
  const size_t from = std::min<size_t>(o.skip_steps, steps.size() - 1);
  const size_t to = std::min<size_t>(from + std::max(o.steps, 1), steps.size()) - 1;
  const double t0 = steps[from]->ts, t1 = steps[to]->end;
  // Lanes: every (pid, tid) with a span in the window, rows by depth.
  std::map<std::pair<int, int>, int> depth;
  for (const auto& e : events)
    if (e.end > t0 && e.ts < t1) depth[{e.pid, e.tid}] = std::max(depth[{e.pid, e.tid}], e.depth + 1);
  const auto processes = Names(doc, "process_name", false);
  const auto threads = Names(doc, "thread_name", true);
  const int row = 14, label_w = 330, right = 20, top = 40, lane_gap = 10;
  int height = top + 60;
  auto lane_h = [&](int d) { return std::max(d * row, 30) + lane_gap; };  // room for two label lines
  for (const auto& [key, d] : depth) height += lane_h(d);
  const int legend_rows = 4;
  height += legend_rows * 22 + 20;
  Image img(o.width, height);
  const int plot_w = o.width - label_w - right;
  auto x_of = [&](double us) { return label_w + static_cast<int>((us - t0) / (t1 - t0) * plot_w); };
  img.Text(10, 10, fmt::format("POLIS TIMELINE: {} STEPS OF RANK {}, {:.1f} MS", to - from + 1, first_pid, (t1 - t0) / 1000),
           {0, 0, 0}, 2);
  int y = top;
  std::map<std::pair<int, int>, int> lane_y;
  for (const auto& [key, d] : depth) {
    lane_y[key] = y;
    const std::string p = processes.count(key.first) ? processes.at(key.first) : fmt::format("rank {}", key.first);
    const std::string t = threads.count(key.second) ? threads.at(key.second) : "";
    img.Text(10, y + 2, p.substr(0, 28), {0, 0, 0}, 2);
    img.Text(10, y + 16, t, {90, 90, 90}, 2);
    y += lane_h(d);
    img.FillRect(label_w, y - lane_gap / 2, o.width - right, y - lane_gap / 2, {220, 220, 220});
  }
  for (const auto& e : events) {
    if (e.end <= t0 || e.ts >= t1) continue;
    const int ly = lane_y[{e.pid, e.tid}] + e.depth * row;
    const int xa = std::max(label_w, x_of(e.ts)), xb = std::min(o.width - right, std::max(x_of(e.end) - 1, xa));
    img.FillRect(xa, ly, xb, ly + row - 3, Colour(e));
    // A label where it fits.
    if (Image::TextWidth(e.name, 1) + 4 < xb - xa) img.Text(xa + 2, ly + 3, e.name, {0, 0, 0}, 1);
  }
  // Time axis: ticks every 1, 2, 5 × 10^k ms, about 10 of them.
  const int axis_y = y + 4;
  img.Line(label_w, axis_y, o.width - right, axis_y, {0, 0, 0});
  const double span_ms = (t1 - t0) / 1000;
  double tick = std::pow(10.0, std::floor(std::log10(std::max(span_ms, 1e-3) / 10)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (span_ms / (tick * m) <= 10) {
      tick *= m;
      break;
    }
  for (double ms = 0; ms <= (t1 - t0) / 1000; ms += tick) {
    const int x = x_of(t0 + ms * 1000);
    img.Line(x, axis_y, x, axis_y + 5, {0, 0, 0});
    img.Text(x - 6, axis_y + 9, fmt::format("{:g}", ms), {0, 0, 0}, 2);
  }
  img.Text(o.width - right - 30, axis_y + 24, "MS", {0, 0, 0}, 2);
  // Legend.
  const std::vector<std::string> legend = {"data wait", "load batch", "forward", "backward", "loss", "sync",
                                           "allreduce wait", "allreduce bucket", "optimizer", "push piece",
                                           "wait servers", "pull wait", "server apply", "checkpoint"};
  int lx = label_w, ly = axis_y + 44;
  for (const auto& name : legend) {
    Ev e;
    e.name = name;
    const int w = Image::TextWidth(name, 2) + 30;
    if (lx + w > o.width - right) lx = label_w, ly += 22;
    img.FillRect(lx, ly, lx + 14, ly + 12, Colour(e));
    img.Text(lx + 18, ly + 1, name, {0, 0, 0}, 2);
    lx += w;
  }
  return img;
}

}  // namespace polis::trace
