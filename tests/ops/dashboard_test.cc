// The dashboard in headless Chromium (Debian's `chromium`): loaded from a
// Monitor with a published status, its DOM must show one worker row per
// rank and chart data points, and a screenshot must come out. Skipped when
// Chromium is not installed. Set POLIS_TEST_SCREENSHOT=FILE to keep the
// screenshot.
#include <gtest/gtest.h>
#include "tests/prereq.h"


#include "coordinator/monitor.h"
#include "tests/ops/chromium.h"
#include "tests/ops/ops_test_util.h"

namespace polis::coordinator {
namespace {

using ops_test::Chromium;
using ops_test::Count;
using ops_test::SampleStatus;

// A monitor serving the dashboard with `status` published.
std::unique_ptr<Monitor> DashboardWith(const nlohmann::json& status) {
  Monitor::Options options;
  options.dashboard_dir = ops_test::kSrc + "/launch/dashboard";
  auto m = Monitor::Start(options);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  if (!m.ok()) return nullptr;
  (*m)->Publish(status);
  return std::move(*m);
}

TEST(Dashboard, RendersWorkersAndChartsInChromium) {
  if (!ops_test::HaveProgram("chromium")) POLIS_MISSING_PREREQ() << "chromium not installed (apt-get install chromium)";
  auto m = DashboardWith(SampleStatus(/*workers=*/4, /*servers=*/2, /*points=*/25));
  ASSERT_TRUE(m);
  const std::string url = m->address() + "/";
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

  ops_test::CheckScreenshot(dir.path() + "/profile", url, "1280,1100", "POLIS_TEST_SCREENSHOT",
                            dir.path() + "/dashboard.png");
}

// A forecaster's page: its MAE (target units) where a classifier's
// accuracy goes, in the card and the epochs table.
TEST(Dashboard, AForecastersPageShowsItsMae) {
  if (!ops_test::HaveProgram("chromium")) POLIS_MISSING_PREREQ() << "chromium not installed (apt-get install chromium)";
  auto m = DashboardWith(ops_test::SampleForecasterStatus());
  ASSERT_TRUE(m);
  ops_test::TempDir dir;
  auto dom = ops_test::Shell(Chromium(dir.path() + "/profile", "--dump-dom", m->address() + "/"));
  ASSERT_EQ(dom.exit_code, 0) << dom.errors;
  const std::string& html = dom.output;
  EXPECT_NE(html.find(">MAE (validation, else test)<"), std::string::npos) << html;
  EXPECT_NE(html.find(">55.85<"), std::string::npos) << "MAE card";
  EXPECT_NE(html.find(">MAE (val, else test)<"), std::string::npos) << html;
  EXPECT_NE(html.find(">61.25<"), std::string::npos) << "epochs table";
  EXPECT_EQ(html.find("%<"), std::string::npos) << "no percentage on a forecaster's page";
}

}  // namespace
}  // namespace polis::coordinator
