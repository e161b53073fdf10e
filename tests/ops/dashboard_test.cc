// The dashboard in headless Chromium (Debian's `chromium`): loaded from a
// Monitor with a published status, its DOM must show one worker row per
// rank and chart data points, and a screenshot must come out. Skipped when
// Chromium is not installed. Set POLIS_TEST_SCREENSHOT=FILE to keep the
// screenshot.
#include <gtest/gtest.h>
#include "tests/prereq.h"


#include "coordinator/monitor.h"
#include "tests/ops/ops_test_util.h"

namespace polis::coordinator {
namespace {

using ops_test::SampleStatus;

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Chromium as root in a container: no sandbox, no GPU, no background
// traffic, a throw-away profile; virtual time lets the page's fetch and
// timers run before the DOM is dumped.
std::string Chromium(const std::string& profile, const std::string& args, const std::string& url) {
  return "timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking "
         "--disable-component-update --disable-default-apps --disable-sync --no-first-run "
         "--disable-dev-shm-usage --user-data-dir=" + profile + " --virtual-time-budget=5000 " + args +
         " " + url;
}

TEST(Dashboard, RendersWorkersAndChartsInChromium) {
  if (!ops_test::HaveProgram("chromium")) POLIS_MISSING_PREREQ() << "chromium not installed (apt-get install chromium)";
  Monitor::Options options;
  options.dashboard_dir = ops_test::kSrc + "/launch/dashboard";
  auto m = Monitor::Start(options);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  (*m)->Publish(SampleStatus(/*workers=*/4, /*servers=*/2, /*points=*/25));
  const std::string url = (*m)->address() + "/";
  ops_test::TempDir dir;

  auto dom = ops_test::Shell(Chromium(dir.path() + "/profile", "--dump-dom", url));
  ASSERT_EQ(dom.exit_code, 0) << dom.errors;
  const std::string& html = dom.output;
  // One row per worker rank (3..6) in the workers table.
  const size_t table = html.find("id=\"workers\"");
  ASSERT_NE(table, std::string::npos) << html;
  const std::string workers = html.substr(table, html.find("</table>", table) - table);
  for (int rank = 3; rank <= 6; ++rank)
    EXPECT_NE(workers.find(fmt::format("<tr data-rank=\"{}\"", rank)), std::string::npos)
        << "rank " << rank << " missing:\n" << workers;
  EXPECT_EQ(Count(workers, "<tr data-rank="), 4) << workers;
  EXPECT_NE(workers.find("class=\"straggler\""), std::string::npos) << workers;
  EXPECT_NE(workers.find("class=\"stalled\""), std::string::npos) << workers;
  // Both charts drew the 25 series points.
  EXPECT_NE(html.find(R"(id="loss-chart" width)"), std::string::npos);
  EXPECT_EQ(Count(html, R"(data-points="25")"), 2) << html;
  EXPECT_NE(html.find("fashion_cnn"), std::string::npos);
  EXPECT_NE(html.find(">2 / 5<"), std::string::npos) << "epoch card";
  EXPECT_NE(html.find(">85.20%<"), std::string::npos) << "accuracy card";

  const char* keep = std::getenv("POLIS_TEST_SCREENSHOT");
  const std::string png = keep && *keep ? std::string(keep) : dir.path() + "/dashboard.png";
  auto shot = ops_test::Shell(
      Chromium(dir.path() + "/profile", "--hide-scrollbars --window-size=1280,1100 --screenshot=" + png, url));
  ASSERT_EQ(shot.exit_code, 0) << shot.errors;
  const std::string bytes = ops_test::ReadOrEmpty(png);
  ASSERT_GT(bytes.size(), 20000u) << "screenshot " << png << " is too small to show the page";
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
}

}  // namespace
}  // namespace polis::coordinator
