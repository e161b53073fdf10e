// polis-timeline: read a job's timeline (polis-run --timeline FILE,
// docs/timeline.md) without a browser.
//
//   polis-timeline FILE                 where each rank's step time goes
//   polis-timeline FILE --png OUT.png   and a picture of a few steps
//
// Exit codes: 0 done, 2 bad arguments or a file that is not a timeline.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/fs.h"
#include "common/png.h"
#include "common/trace/timeline_render.h"

int main(int argc, char** argv) {
  std::string path, png;
  polis::trace::RenderOptions o;
  CLI::App app{"polis-timeline: summarise a Polis timeline (Chrome trace-event JSON) and draw a few steps"};
  app.add_option("file", path, "the timeline (polis-run --timeline FILE)")->required();
  app.add_option("--png", png, "draw the first worker's steps with every rank's lanes into this PNG");
  app.add_option("--steps", o.steps, "steps to draw")->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_option("--skip-steps", o.skip_steps, "steps to skip before them")->capture_default_str()->check(CLI::Range(0, 100000000));
  app.add_option("--width", o.width, "picture width in pixels")->capture_default_str()->check(CLI::Range(600, 10000));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "polis-timeline: %s (see --help)\n", e.what());
    return 2;
  }
  auto fail = [](const polis::Status& st) {
    std::fprintf(stderr, "polis-timeline: %s\n", st.message().c_str());
    return 2;
  };
  auto text = polis::ReadFile(path);
  if (!text.ok()) return fail(text.status());
  auto doc = polis::trace::ParseTimeline(*text, path);
  if (!doc.ok()) return fail(doc.status());
  std::fputs(polis::trace::SummarizeTimeline(*doc).c_str(), stdout);
  if (!png.empty()) {
    auto img = polis::trace::RenderTimeline(*doc, o);
    if (!img.ok()) return fail(img.status());
    if (auto st = polis::WriteFileAtomic(png, polis::EncodePng(*img)); !st.ok()) return fail(st);
    std::printf("picture: %s\n", png.c_str());
  }
  return 0;
}
