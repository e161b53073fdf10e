// Reading a timeline file (docs/timeline.md) without a browser: a summary
// of where each rank's step time goes, and a PNG of a few steps with one
// lane per rank and thread (common/png.h), as `polis-timeline` prints and
// draws them. Values only; thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/png.h"
#include "common/status.h"

namespace polis::trace {

// A parsed timeline: `text` must be trace-event JSON with a traceEvents
// array; otherwise InvalidArgument naming `source`.
StatusOr<nlohmann::json> ParseTimeline(const std::string& text, const std::string& source);

// Per rank: its steps, their mean duration, and the share of step time each
// phase (the step's direct children) takes; other ranks' busiest spans.
std::string SummarizeTimeline(const nlohmann::json& doc);

struct RenderOptions {
  int width = 1400;
  int steps = 3;        // steps of the first worker to show
  int skip_steps = 10;  // of its steps before them (start-up is untypical)
};
// The window [start of the chosen steps, their end] with every rank's lanes.
StatusOr<Image> RenderTimeline(const nlohmann::json& doc, const RenderOptions& options);

}  // namespace polis::trace
