// Checks on a timeline file (docs/timeline.md) shared by the recorder's unit
// tests and the 2-worker integration test: the complete events ("ph":"X")
// of each thread form a tree, every span inside its parent.
#pragma once

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace polis::test {

struct Span {
  std::string name;
  int pid = 0, tid = 0;
  double ts = 0, dur = 0;  // microseconds
  nlohmann::json args;
  int parent = -1;  // index into the SpanTree result; -1 at the top of its thread
};

// Times are written with nanosecond decimals; parsed as doubles they may be
// off in the last bit.
constexpr double kEpsilonUs = 0.0005;

// Every span, each with its innermost enclosing span on the same thread.
// Spans that overlap without nesting get parent -2 (SpansNest reports them).
inline std::vector<Span> SpanTree(const nlohmann::json& doc) {
  std::vector<Span> out;
  for (const auto& e : doc["traceEvents"]) {
    if (e.value("ph", "") != "X") continue;
    Span s;
    s.name = e["name"];
    s.pid = e["pid"];
    s.tid = e["tid"];
    s.ts = e["ts"];
    s.dur = e["dur"];
    if (e.contains("args")) s.args = e["args"];
    out.push_back(std::move(s));
  }
  std::map<std::pair<int, int>, std::vector<int>> threads;
  for (int i = 0; i < static_cast<int>(out.size()); ++i) threads[{out[i].pid, out[i].tid}].push_back(i);
  for (auto& [key, idx] : threads) {
    // Parents first: earlier start, then longer.
    std::sort(idx.begin(), idx.end(), [&](int a, int b) {
      return out[a].ts != out[b].ts ? out[a].ts < out[b].ts : out[a].dur > out[b].dur;
    });
    std::vector<int> stack;
    for (int i : idx) {
      while (!stack.empty() && out[i].ts >= out[stack.back()].ts + out[stack.back()].dur - kEpsilonUs) stack.pop_back();
      if (!stack.empty()) {
        const Span& top = out[stack.back()];
        out[i].parent = out[i].ts + out[i].dur <= top.ts + top.dur + kEpsilonUs ? stack.back() : -2;
      }
      stack.push_back(i);
    }
  }
  return out;
}

// True if every span on every thread lies inside its parent or after it.
inline bool SpansNest(const nlohmann::json& doc, std::string* why) {
  const auto tree = SpanTree(doc);
  for (const auto& s : tree)
    if (s.parent == -2) {
      *why = "span '" + s.name + "' at " + std::to_string(s.ts) + " us (pid " + std::to_string(s.pid) + ", tid " +
             std::to_string(s.tid) + ") overlaps an enclosing span without lying inside it";
      return false;
    }
  return true;
}

}  // namespace polis::test
