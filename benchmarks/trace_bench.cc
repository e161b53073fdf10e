// polis-bench-trace: what one timeline span costs the thread that records
// it (common/trace/trace.h), with the recorder off and on: the median over
// rounds of N back-to-back TRACE_SCOPEs with an integer argument.
// benchmarks/timeline_overhead.sh multiplies it by the spans a step records.
//
//   polis-bench-trace [--spans N] [--rounds R]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <vector>

#include "common/trace/trace.h"

namespace {

// Nanoseconds per span, median of `rounds`.
double NsPerSpan(int64_t spans, int rounds) {
  std::vector<double> ns;
  for (int r = 0; r < rounds; ++r) {
    const int64_t t0 = polis::trace::NowNs();
    for (int64_t i = 0; i < spans; ++i) {
      TRACE_SCOPE("layer", "layer", i);
      asm volatile("" ::: "memory");  // keep the loop
    }
    ns.push_back(static_cast<double>(polis::trace::NowNs() - t0) / spans);
  }
  std::sort(ns.begin(), ns.end());
  return ns[ns.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t spans = 200000;
  int rounds = 7;
  CLI::App app{"polis-bench-trace: the cost of one timeline span, recorder off and on"};
  app.add_option("--spans", spans, "spans per round")->capture_default_str()->check(CLI::Range(1000, 100000000));
  app.add_option("--rounds", rounds, "rounds (the median is printed)")->capture_default_str()->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);
  std::printf("command: polis-bench-trace --spans %lld --rounds %d\n", static_cast<long long>(spans), rounds);
  const double off = NsPerSpan(spans, rounds);
  polis::trace::Options o;
  o.max_bytes = int64_t{256} * (spans * rounds + 1024);  // never reaches the cap
  polis::trace::Start(o);
  const double on = NsPerSpan(spans, rounds);
  polis::trace::Stop();
  const auto part = polis::trace::Export(0, 0);
  if (part.events != spans * rounds) {
    std::fprintf(stderr, "polis-bench-trace: %lld spans recorded, %lld expected\n",
                 static_cast<long long>(part.events), static_cast<long long>(spans * rounds));
    return 1;
  }
  std::printf("off_ns_per_span %.2f\non_ns_per_span %.2f\n", off, on);
  return 0;
}
