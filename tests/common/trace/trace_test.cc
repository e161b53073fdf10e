// The timeline recorder (common/trace/trace.h): spans nest per thread, the
// cap stops recording and bounds the output, names are escaped, and the
// export is JSON that nlohmann::json (the project's parser) reads.
#include "common/trace/trace.h"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/job_spec.h"
#include "common/trace/timeline_render.h"
#include "tests/trace_check.h"

namespace polis::trace {
namespace {

using nlohmann::json;

class TraceTest : public ::testing::Test {
 protected:
  void SetUp() override { Reset(); }
  void TearDown() override { Reset(); }
  static Options Opts(int64_t max_bytes = 1 << 20) {
    Options o;
    o.pid = 3;
    o.process_name = "rank 3 (worker on \"h2\")";
    o.max_bytes = max_bytes;
    return o;
  }
  // The export as a whole trace file.
  static json Parse(const ExportResult& r) {
    return json::parse("{\"traceEvents\":[" + r.json + "]}", nullptr, /*allow_exceptions=*/false);
  }
  static std::vector<json> Spans(const json& doc) {
    std::vector<json> out;
    for (const auto& e : doc["traceEvents"])
      if (e["ph"] == "X") out.push_back(e);
    return out;
  }
};

TEST_F(TraceTest, OffRecordsNothing) {
  { TRACE_SCOPE("forward"); }
  Record("by hand", 1, 2);
  EXPECT_FALSE(On());
  Start(Opts());
  Stop();
  { TRACE_SCOPE("after stop"); }
  json doc = Parse(Export(0, 0));
  ASSERT_FALSE(doc.is_discarded());
  EXPECT_TRUE(Spans(doc).empty());
}

TEST_F(TraceTest, NestedSpansOnTwoThreadsExportAsValidNestedJson) {
  Start(Opts());
  {
    TRACE_SCOPE("step", "step", 7);
    {
      TRACE_SCOPE("forward");
      for (int i = 0; i < 3; ++i) {
        TRACE_SCOPE(Intern("conv" + std::to_string(i)), "layer", i);
      }
    }
    std::thread comm([] {
      SetThreadName("comm");
      TRACE_SCOPE("allreduce bucket", "bytes", 4096);
      Scope inner("inner");
      inner.End();
      inner.End();  // a second End records nothing more
    });
    comm.join();
    TRACE_SCOPE("sync");
  }
  Stop();
  const ExportResult r = Export(0, 0);
  json doc = Parse(r);
  ASSERT_FALSE(doc.is_discarded()) << r.json;
  EXPECT_EQ(r.events, 8);
  EXPECT_FALSE(r.truncated);
  const auto spans = Spans(doc);
  ASSERT_EQ(spans.size(), 8u);
  std::map<std::string, json> by_name;
  for (const auto& s : spans) by_name[s["name"]] = s;
  EXPECT_EQ(by_name["step"]["args"]["step"], 7);
  EXPECT_EQ(by_name["conv2"]["args"]["layer"], 2);
  EXPECT_EQ(by_name["allreduce bucket"]["args"]["bytes"], 4096);
  EXPECT_NE(by_name["step"]["tid"], by_name["allreduce bucket"]["tid"]);
  for (const auto& s : spans) EXPECT_EQ(s["pid"], 3);
  // Thread and process names label the rows.
  std::map<int, std::string> thread_names;
  std::string process_name;
  for (const auto& e : doc["traceEvents"]) {
    if (e["name"] == "thread_name") thread_names[e["tid"]] = e["args"]["name"];
    if (e["name"] == "process_name") process_name = e["args"]["name"];
  }
  EXPECT_EQ(process_name, "rank 3 (worker on \"h2\")");
  EXPECT_EQ(thread_names[by_name["step"]["tid"]], "main");
  EXPECT_EQ(thread_names[by_name["allreduce bucket"]["tid"]], "comm");
  // Per thread every span lies inside its parent or after it.
  std::string why;
  EXPECT_TRUE(test::SpansNest(doc, &why)) << why;
  // conv0..2 sit in forward, forward and sync in step.
  const std::vector<test::Span> tree = test::SpanTree(doc);
  for (const auto& sp : tree) {
    const std::string parent = sp.parent < 0 ? "" : tree[sp.parent].name;
    if (sp.name.rfind("conv", 0) == 0) EXPECT_EQ(parent, "forward");
    if (sp.name == "forward" || sp.name == "sync") EXPECT_EQ(parent, "step");
    if (sp.name == "inner") EXPECT_EQ(parent, "allreduce bucket");
  }
  double children = 0;
  for (const auto& s : spans)
    if (s["name"] == "forward" || s["name"] == "sync") children += s["dur"].get<double>();
  EXPECT_LE(children, by_name["step"]["dur"].get<double>());
}

TEST_F(TraceTest, CapStopsRecordingWithOneTruncatedEventAndBoundsTheOutput) {
  const int64_t cap = 64 * 100;  // room for at most 100 events
  Start(Opts(cap));
  for (int i = 0; i < 1000; ++i) {
    TRACE_SCOPE("a span with a longish name to fill the cap");
  }
  EXPECT_TRUE(Truncated());
  EXPECT_FALSE(On()) << "recording stops at the cap";
  const ExportResult r = Export(0, 0);
  EXPECT_TRUE(r.truncated);
  EXPECT_LE(static_cast<int64_t>(r.json.size()), cap);
  EXPECT_LT(r.events, 100);
  EXPECT_GT(r.events, 10);
  json doc = Parse(r);
  ASSERT_FALSE(doc.is_discarded()) << r.json;
  int truncated = 0;
  for (const auto& e : doc["traceEvents"])
    if (e["name"] == "truncated") {
      ++truncated;
      EXPECT_EQ(e["ph"], "M");
      EXPECT_EQ(e["args"]["max_bytes"], cap);
      EXPECT_EQ(e["args"]["events_written"], r.events);
    }
  EXPECT_EQ(truncated, 1);
}

TEST_F(TraceTest, NamesAreEscapedAndCut) {
  const char* odd = Intern("la\"yer\\\n\t\x01 é");
  EXPECT_EQ(Intern("la\"yer\\\n\t\x01 é"), odd) << "the same text, the same pointer";
  const std::string long_name(200, 'x');
  EXPECT_EQ(std::string(Intern(long_name)).size(), kMaxNameChars);
  Start(Opts());
  { TRACE_SCOPE(odd); }
  Stop();
  json doc = Parse(Export(0, 0));
  ASSERT_FALSE(doc.is_discarded());
  ASSERT_EQ(Spans(doc).size(), 1u);
  EXPECT_EQ(Spans(doc)[0]["name"], "la\"yer\\\n\t\x01 é");
}

TEST_F(TraceTest, TimesAreMicrosecondsFromTheOriginWithTheOffset) {
  Start(Opts());
  Record("a", 1'000'000, 1'002'500);  // 2.5 µs long
  Record("b", 5'000, 6'000);          // before the origin: negative
  Stop();
  // offset +500 ns, origin 1 ms.
  json doc = Parse(Export(500, 1'000'000));
  ASSERT_FALSE(doc.is_discarded());
  std::map<std::string, json> s;
  for (const auto& e : Spans(doc)) s[e["name"]] = e;
  EXPECT_DOUBLE_EQ(s["a"]["ts"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(s["a"]["dur"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(s["b"]["ts"].get<double>(), -994.5);
}

TEST_F(TraceTest, ExportStopsAtTheCapEvenBelowTheEventCount) {
  const int64_t cap = 64 * 200;
  Start(Opts(cap));
  // Events far larger than the 64 bytes the recorder counts: the export
  // must still keep the part under the cap.
  const char* big = Intern(std::string(kMaxNameChars, 'n'));
  for (int i = 0; i < 150; ++i) Record(big, i * 1000, i * 1000 + 10, "bytes", 123456789);
  EXPECT_FALSE(Truncated());
  Stop();
  const ExportResult r = Export(0, 0);
  EXPECT_TRUE(r.truncated);
  EXPECT_LE(static_cast<int64_t>(r.json.size()), cap);
  EXPECT_FALSE(Parse(r).is_discarded());
}

// polis-timeline's summary and picture, from a recorded timeline.
TEST_F(TraceTest, SummaryAndPictureOfRecordedSteps) {
  Start(Opts());
  for (int i = 0; i < 5; ++i) {
    TRACE_SCOPE("step", "step", i);
    { TRACE_SCOPE("forward"); { TRACE_SCOPE(Intern("dense_0"), "layer", 0); } }
    { TRACE_SCOPE("sync"); }
  }
  Stop();
  auto doc = ParseTimeline("{\"traceEvents\":[" + Export(0, 0).json + "]}", "t.json");
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  const std::string summary = SummarizeTimeline(*doc);
  EXPECT_NE(summary.find("5 steps"), std::string::npos) << summary;
  EXPECT_NE(summary.find("forward"), std::string::npos) << summary;
  EXPECT_NE(summary.find("sync"), std::string::npos) << summary;
  RenderOptions o;
  o.skip_steps = 1;
  auto img = RenderTimeline(*doc, o);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  EXPECT_EQ(img->width(), o.width);
  EXPECT_FALSE(EncodePng(*img).empty());
  auto bad = ParseTimeline("{\"traceEvents\": 3}", "t.json");
  EXPECT_NE(bad.status().message().find("t.json"), std::string::npos);
  EXPECT_FALSE(ParseTimeline("not json", "u.json").ok());
}

// The job settings: checked like every other field.
TEST(TimelineSettings, RefusedWhereTheyDoNotApply) {
  auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn.pbtxt");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  proto::JobSpec spec = job->spec;
  spec.mutable_monitoring()->set_timeline_max_mb(8);
  Status st = ValidateJobFields(spec, "job.pbtxt");
  EXPECT_NE(st.message().find("monitoring.timeline_max_mb"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("timeline_path"), std::string::npos) << st.ToString();
  spec.mutable_monitoring()->set_timeline_path("timeline.json");
  EXPECT_TRUE(ValidateJobFields(spec, "job.pbtxt").ok());
  spec.mutable_monitoring()->set_timeline_max_mb(0);
  st = ValidateJobFields(spec, "job.pbtxt");
  EXPECT_NE(st.message().find("monitoring.timeline_max_mb"), std::string::npos) << st.ToString();
  spec.mutable_monitoring()->set_timeline_max_mb(64);
  spec.mutable_monitoring()->set_timeline_path("");
  st = ValidateJobFields(spec, "job.pbtxt");
  EXPECT_NE(st.message().find("monitoring.timeline_path"), std::string::npos) << st.ToString();
}

}  // namespace
}  // namespace polis::trace
