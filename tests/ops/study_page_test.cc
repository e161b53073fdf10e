// The study page (launch/dashboard/study.html) in headless Chromium, served
// by polis-tune's StudyServer with a published study of six trials: the
// chart must draw one line per trial with the best highlighted, a marker
// where ASHA stopped a trial (at its rung) and where one failed, a guide at
// each rung; the best panel and the trial table must show the best trial,
// and a running trial must link its own dashboard. The finished study must
// render too. Skipped when Chromium is not installed (a failure under
// CI=true). Set POLIS_TEST_STUDY_SCREENSHOT=FILE to keep the screenshot.
#include <gtest/gtest.h>

#include "launch/tune/study_server.h"
#include "tests/ops/chromium.h"
#include "tests/ops/ops_test_util.h"
#include "tests/ops/study_test_util.h"
#include "tests/prereq.h"

namespace polis::tune {
namespace {

using ops_test::Chromium;
using ops_test::Count;
using ops_test::Element;

// The dumped DOM of a page.
std::string RenderedDom(const std::string& profile, const std::string& url) {
  auto dom = ops_test::Shell(Chromium(profile, "--dump-dom", url));
  EXPECT_EQ(dom.exit_code, 0) << dom.errors;
  return dom.output;
}

TEST(StudyPage, DrawsCurvesStopsAndTheBestInChromium) {
  if (!ops_test::HaveProgram("chromium")) POLIS_MISSING_PREREQ() << "chromium not installed (apt-get install chromium)";
  ops_test::TempDir dir;
  StudyState study = ops_test::SampleStudy(dir.path());
  ops_test::WriteTrialCoordinator(study.trials[2].run_dir, "http://127.0.0.1:45678");
  auto server = StudyServer::Start("127.0.0.1:0", dir.path(), ops_test::kSrc + "/launch/dashboard");
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  (*server)->Publish(study);
  const std::string url = (*server)->address() + "/";

  const std::string html = RenderedDom(dir.path() + "/profile", url);
  const std::string chart = Element(html, "curves", "</svg>");
  ASSERT_FALSE(chart.empty()) << html;
  EXPECT_NE(chart.find("data-lines=\"6\""), std::string::npos) << chart;
  EXPECT_EQ(Count(chart, "<polyline class=\"trial-line"), 6) << chart;
  // The best trial: thick and black (class best), all nine epochs.
  EXPECT_NE(chart.find(R"(<polyline class="trial-line completed best" data-trial="0001" data-points="9")"),
            std::string::npos) << chart;
  EXPECT_EQ(Count(chart, " best\" data-trial="), 1) << chart;
  // Stopped by ASHA at rung 0 (epoch 1) and at rung 1 (epoch 3); one failed.
  EXPECT_NE(chart.find(R"(<g class="marker stopped" data-trial="0000" data-epoch="1">)"), std::string::npos) << chart;
  EXPECT_NE(chart.find(R"(<g class="marker stopped" data-trial="0004" data-epoch="3">)"), std::string::npos) << chart;
  EXPECT_NE(chart.find(R"(<g class="marker failed" data-trial="0003" data-epoch="1">)"), std::string::npos) << chart;
  EXPECT_NE(chart.find(R"(<g class="marker running" data-trial="0002" data-epoch="2">)"), std::string::npos) << chart;
  EXPECT_EQ(Count(chart, "<g class=\"marker"), 5) << "no marker on the completed trial:\n" << chart;
  for (const char* epoch : {"1", "3", "9"})
    EXPECT_NE(chart.find(std::string("class=\"rung-guide\" data-epoch=\"") + epoch + "\""), std::string::npos)
        << "rung at epoch " << epoch << ":\n" << chart;

  // The best panel.
  EXPECT_NE(html.find(R"(<strong id="best-trial">0001</strong>)"), std::string::npos) << html;
  EXPECT_NE(html.find(R"(id="best-value">0.8800<)"), std::string::npos) << html;
  EXPECT_NE(html.find("val_accuracy at epoch 9"), std::string::npos) << html;
  const std::string params = Element(html, "best-params", "</table>");
  EXPECT_NE(params.find("<th>optimizer.learning_rate</th><td>0.002</td>"), std::string::npos) << params;
  EXPECT_NE(params.find("<th>training.batch_size</th><td>64</td>"), std::string::npos) << params;

  // The table: every trial, where ASHA stopped it, the running one's dashboard.
  const std::string table = Element(html, "trials", "</table>");
  EXPECT_EQ(Count(table, "<tr data-trial="), 6) << table;
  EXPECT_NE(table.find(R"(<tr data-trial="0001" class="best">)"), std::string::npos) << table;
  EXPECT_NE(table.find("<td>stopped@3</td>"), std::string::npos) << table;
  EXPECT_NE(table.find(R"(href="http://127.0.0.1:45678")"), std::string::npos) << table;
  EXPECT_EQ(Count(table, "class=\"trial-dashboard\""), 1) << table;
  EXPECT_NE(table.find("ran out of memory"), std::string::npos) << table;

  ops_test::CheckScreenshot(dir.path() + "/profile", url, "1280,1000", "POLIS_TEST_STUDY_SCREENSHOT",
                            dir.path() + "/study.png");
}

TEST(StudyPage, RendersTheFinishedStudy) {
  if (!ops_test::HaveProgram("chromium")) POLIS_MISSING_PREREQ() << "chromium not installed (apt-get install chromium)";
  ops_test::TempDir dir;
  StudyState study = ops_test::SampleStudy(dir.path());
  // As polis-tune leaves it: the running trial finished its rung and was
  // stopped, the paused one too.
  study.trials[2].state = "stopped";
  study.trials[2].curve.emplace_back(3, 0.75);
  study.trials[2].epochs_done = 3;
  study.trials[5].state = "stopped";
  study.state = "done";
  study.end_reason = "budget.max_trials reached";
  study.published = {{"model", "fashion_cnn"}, {"version", 4}, {"alias", "best"}, {"trial", "0001"}};
  auto server = StudyServer::Start("127.0.0.1:0", dir.path(), ops_test::kSrc + "/launch/dashboard");
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  (*server)->Publish(study);

  const std::string html = RenderedDom(dir.path() + "/profile", (*server)->address() + "/");
  EXPECT_NE(html.find(R"(<span id="state" class="badge done">done</span>)"), std::string::npos) << html;
  EXPECT_NE(html.find("budget.max_trials reached"), std::string::npos) << html;
  EXPECT_NE(html.find("published: fashion_cnn version 4 (alias best, trial 0001)"), std::string::npos) << html;
  const std::string chart = Element(html, "curves", "</svg>");
  EXPECT_EQ(Count(chart, "<g class=\"marker stopped\""), 4) << chart;
  EXPECT_EQ(Count(chart, "<g class=\"marker running\""), 0) << chart;
  EXPECT_NE(chart.find(R"(<g class="marker stopped" data-trial="0002" data-epoch="3">)"), std::string::npos) << chart;
  EXPECT_NE(html.find(R"(<strong id="best-trial">0001</strong>)"), std::string::npos) << html;
  EXPECT_EQ(Count(Element(html, "trials", "</table>"), "class=\"trial-dashboard\""), 0) << "no trial runs";
}

}  // namespace
}  // namespace polis::tune
