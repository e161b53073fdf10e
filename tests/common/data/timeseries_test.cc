// Tests for the CSV reader and TimeSeriesDataset. Each test writes its own
// small CSV files into a fresh temp directory; one test reads the real UCI
// bike-sharing hour.csv when it is present and skips otherwise.
#include "common/data/timeseries.h"
#include "tests/prereq.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <iostream>
#include <numbers>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/data/csv.h"
#include "common/data/dataset.h"
#include "common/fs.h"

namespace polis::data {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::Each;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using Spec = proto::TimeSeriesSpec;
using TS = TimeSeriesDataset;

constexpr int64_t kHour = 3600;
const int64_t k2011 = 1293840000;  // 2011-01-01 00:00:00

class TimeSeriesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("polis_ts_test_{}_{}", getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    std::string path = (dir_ / name).string();
    EXPECT_TRUE(WriteFileAtomic(path, text).ok());
    return path;
  }

  // "time,load,temp,weather,holiday" rows, one per hour from `start`;
  // row(i) gives "load,temp,weather,holiday" for hour i.
  static std::string Hourly(int64_t start, int n, const std::function<std::string(int)>& row) {
    std::string out = "time,load,temp,weather,holiday\n";
    for (int i = 0; i < n; ++i) out += FormatTimestamp(start + i * kHour) + "," + row(i) + "\n";
    return out;
  }

  // Target "load", lookback 2, horizon 1, calendar features off.
  static Spec BaseSpec(const std::string& path) {
    Spec spec;
    spec.set_path(path);
    spec.set_timestamp_column("time");
    spec.set_target_column("load");
    spec.set_lookback(2);
    spec.set_horizon(1);
    auto* cal = spec.mutable_calendar_features();
    cal->set_hour(false);
    cal->set_weekday(false);
    cal->set_month(false);
    return spec;
  }

  // Window i of split s, un-standardised feature 0 (the target) per step,
  // rounded to 1e-3 (the floats carry ~1e-6 relative error).
  static std::vector<double> InputTargets(const TS& ds, TS::Split s, int64_t i) {
    std::vector<float> x(ds.lookback() * ds.num_features()), y(ds.horizon());
    ds.Gather(s, &i, 1, x.data(), y.data());
    std::vector<double> out;
    for (int64_t l = 0; l < ds.lookback(); ++l) out.push_back(std::round(1000 * ds.TargetToOriginal(x[l * ds.num_features()])) / 1000);
    return out;
  }

  fs::path dir_;
};

// ------------------------------------------------------------------ CSV

TEST_F(TimeSeriesTest, CsvParsesQuotedFieldsAndKeepsLineNumbers) {
  const std::string text =
      "\xEF\xBB\xBF" "a, b ,c\r\n"
      "1,\"x, y\",\"say \"\"hi\"\"\"\r\n"
      "\r\n"
      "2,\"two\nlines\",3\n"
      "\n"
      "4,5\n"
      "6,\"q\"junk,7\n"
      "8,9,10";  // no final newline
  auto t = ParseCsv(text, "q.csv");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->header, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(t->blank_lines, 2);
  ASSERT_EQ(t->records.size(), 5u);
  EXPECT_EQ(t->records[0].line, 2);
  EXPECT_EQ(t->records[0].fields, (std::vector<std::string>{"1", "x, y", "say \"hi\""}));
  EXPECT_TRUE(t->records[0].error.empty());
  EXPECT_EQ(t->records[1].line, 4);
  EXPECT_EQ(t->records[1].fields, (std::vector<std::string>{"2", "two\nlines", "3"}));
  EXPECT_EQ(t->records[2].line, 7);  // the quoted newline and the blank line both counted
  EXPECT_THAT(t->records[2].error, HasSubstr("has 2 fields; the header has 3"));
  EXPECT_EQ(t->records[3].line, 8);
  EXPECT_THAT(t->records[3].error, HasSubstr("text after its closing quote"));
  EXPECT_EQ(t->records[4].fields, (std::vector<std::string>{"8", "9", "10"}));
  EXPECT_EQ(t->Where(t->records[3]), "q.csv:8: ");

  auto open_quote = ParseCsv("a,b\n1,2\n3,\"never closed\n4,5\n", "u.csv");
  ASSERT_FALSE(open_quote.ok());
  EXPECT_THAT(open_quote.status().message(), HasSubstr("u.csv:3: the quote opened in field 2 is never closed"));
  auto dup_header = ParseCsv("a,b,a\n1,2,3\n", "d.csv");
  ASSERT_FALSE(dup_header.ok());
  EXPECT_THAT(dup_header.status().message(), HasSubstr("d.csv:1: header names column 'a' twice"));

  auto line = SplitCsvLine("2011-01-01,\"a,b\",3");
  ASSERT_TRUE(line.ok());
  EXPECT_EQ(*line, (std::vector<std::string>{"2011-01-01", "a,b", "3"}));
  // A quote inside an unquoted value is an error; a '\r' that does not end
  // the line belongs to the value; a blank value is kept as it is.
  auto inner = ParseCsv("a,b,c\n1,x\"y,2\n3,p\rq, \r\n", "i.csv");
  ASSERT_TRUE(inner.ok()) << inner.status().ToString();
  ASSERT_EQ(inner->records.size(), 2u);
  EXPECT_THAT(inner->records[0].error, HasSubstr("field 2 has a quote inside an unquoted value"));
  EXPECT_TRUE(inner->records[1].error.empty());
  EXPECT_EQ(inner->records[1].fields, (std::vector<std::string>{"3", "p\rq", " "}));
}

TEST_F(TimeSeriesTest, QuotedValuesReachTheDataset) {
  std::string csv = "time,load,temp,weather,holiday\n";
  for (int i = 0; i < 5; ++i) {
    csv += fmt::format("\"{}\",\"{}\",{},\"rain, heavy\",0\r\n", FormatTimestamp(k2011 + i * kHour),
                       10 * (i + 1), i);
  }
  Spec spec = BaseSpec(Write("q.csv", csv));
  auto* cat = spec.add_categorical_features();
  cat->set_column("weather");
  auto ds = TS::Open(spec);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->feature_names(), (std::vector<std::string>{"load", "weather=<unknown>", "weather=rain, heavy"}));
  EXPECT_EQ(ds->size(TS::kTrain), 3);
  EXPECT_EQ(InputTargets(*ds, TS::kTrain, 1), (std::vector<double>{20, 30}));
}

// ------------------------------------------------------------ timestamps

TEST_F(TimeSeriesTest, TimestampParsing) {
  EXPECT_EQ(*ParseTimestamp("2011-01-01", "%Y-%m-%d"), k2011);
  EXPECT_EQ(*ParseTimestamp(" 2012-10-29 18:30:05 ", "%F %T"), 1351535405);
  EXPECT_EQ(*ParseTimestamp("29/10/12 18h", "%d/%m/%y %Hh"), 1351533600);
  EXPECT_EQ(*ParseTimestamp("2000-02-29", "%Y-%m-%d"), 951782400);
  EXPECT_EQ(FormatTimestamp(1351533600), "2012-10-29 18:00:00");
  EXPECT_THAT(ParseTimestamp("2011-02-29", "%Y-%m-%d").status().message(),
              HasSubstr("day 29 is out of range for 2011-02"));
  EXPECT_THAT(ParseTimestamp("2011-01-01 24:00:00", "%F %T").status().message(),
              HasSubstr("hour 24 is out of range"));
  EXPECT_THAT(ParseTimestamp("2011-01-01x", "%Y-%m-%d").status().message(), HasSubstr("unexpected 'x'"));
  EXPECT_THAT(ParseTimestamp("01/01/2011", "%Y-%m-%d").status().message(),
              HasSubstr("expected 4 digits for %Y"));
}

// ------------------------------------------------------------ malformed

TEST_F(TimeSeriesTest, WrongColumnCountFailsNamingTheLineOrIsDropped) {
  std::string csv = Hourly(k2011, 8, [](int i) { return fmt::format("{},1,a,0", i); });
  csv.replace(csv.find("3,1,a,0"), 7, "3,1,a");  // line 5 (hour 3) loses a field
  Spec spec = BaseSpec(Write("cols.csv", csv));
  auto failed = TS::Open(spec);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(failed.status().message(), HasSubstr("cols.csv:5: has 4 fields; the header has 5"));

  // Dropped, the row leaves a gap, which missing_policy then handles.
  spec.set_malformed_policy(Spec::Malformed::DROP);
  auto gap_fails = TS::Open(spec);
  ASSERT_FALSE(gap_fails.ok());
  EXPECT_THAT(gap_fails.status().message(), HasSubstr("cols.csv:6: 1 missing step (2011-01-01 03:00:00)"));
  spec.set_missing_policy(Spec::Missing::DROP);
  auto ds = TS::Open(spec);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_THAT(ds->report(), HasSubstr("malformed rows: 1 (dropped)"));
  EXPECT_THAT(ds->report(), HasSubstr("cols.csv:5: has 4 fields"));
  // In lines, as a job prints it and its model card keeps it.
  const std::vector<std::string> lines = data::ReportLines(ds->report());
  EXPECT_THAT(lines, Contains("  malformed rows: 1 (dropped)"));
  EXPECT_THAT(lines, Each(Not(IsEmpty())));
  EXPECT_EQ(lines.front().rfind("time series '", 0), 0u) << lines.front();
  // Rows 0-2 give one window (0,1 -> 2); rows 4-7 give two.
  EXPECT_EQ(ds->size(TS::kTrain), 3);
}

TEST_F(TimeSeriesTest, NonNumericValueFailsNamingLineAndColumnOrIsDropped) {
  std::string csv = Hourly(k2011, 6, [](int i) { return i == 4 ? "4,abc,a,0" : fmt::format("{},1.5,a,0", i); });
  Spec spec = BaseSpec(Write("num.csv", csv));
  spec.add_numeric_features("temp");
  auto failed = TS::Open(spec);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(), HasSubstr("num.csv:6: column 'temp': 'abc' is not a number"));
  spec.set_malformed_policy(Spec::Malformed::DROP);
  spec.set_missing_policy(Spec::Missing::FORWARD_FILL);
  auto ds = TS::Open(spec);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_THAT(ds->report(), HasSubstr("malformed rows: 1 (dropped)"));
  EXPECT_THAT(ds->report(), HasSubstr("1 steps forward-filled"));
  // Hour 4 is filled from hour 3, so it may be an input but never a target:
  // windows ending at hours 2, 3, 5 only.
  EXPECT_EQ(ds->size(TS::kTrain), 3);
  EXPECT_EQ(InputTargets(*ds, TS::kTrain, 2), (std::vector<double>{3, 3}));
}

TEST_F(TimeSeriesTest, BadTimestampFailsNamingTheLineOrIsDropped) {
  std::string csv = Hourly(k2011, 6, [](int i) { return fmt::format("{},1,a,0", i); });
  csv.replace(csv.find("2011-01-01 02:00:00"), 19, "2011-01-01 02:00:0x");
  Spec spec = BaseSpec(Write("ts.csv", csv));
  auto failed = TS::Open(spec);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(),
              HasSubstr("ts.csv:4: column 'time': '2011-01-01 02:00:0x' does not match '%Y-%m-%d %H:%M:%S'"));
  spec.set_malformed_policy(Spec::Malformed::DROP);
  spec.set_missing_policy(Spec::Missing::DROP);
  auto ds = TS::Open(spec);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->size(TS::kTrain), 1);  // only hours 3,4 -> 5 are consecutive
  EXPECT_EQ(InputTargets(*ds, TS::kTrain, 0), (std::vector<double>{3, 4}));

  // Off the hourly grid is malformed too.
  std::string off = Hourly(k2011, 4, [](int i) { return fmt::format("{},1,a,0", i); });
  off.replace(off.find("2011-01-01 02:00:00"), 19, "2011-01-01 02:30:00");
  auto off_grid = TS::Open(BaseSpec(Write("off.csv", off)));
  ASSERT_FALSE(off_grid.ok());
  EXPECT_THAT(off_grid.status().message(), HasSubstr("off.csv:4: timestamp 2011-01-01 02:30:00 is not on the 3600 s grid"));
}

TEST_F(TimeSeriesTest, DuplicateHoursFailOrKeepFirstOrLast) {
  std::string csv = Hourly(k2011, 6, [](int i) { return fmt::format("{},1,a,0", i * 10); });
  csv += FormatTimestamp(k2011 + 2 * kHour) + ",99,1,a,0\n";  // line 8 repeats hour 2 (line 4)
  Spec spec = BaseSpec(Write("dup.csv", csv));
  auto failed = TS::Open(spec);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(), HasSubstr("dup.csv:8: timestamp 2011-01-01 02:00:00 repeats line 4"));
  spec.set_duplicate_policy(Spec::Duplicate::KEEP_FIRST);
  auto first = TS::Open(spec);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(InputTargets(*first, TS::kTrain, 1), (std::vector<double>{10, 20}));
  EXPECT_THAT(first->report(), HasSubstr("duplicate timestamps: 1 (kept the first)"));
  EXPECT_THAT(first->report(), HasSubstr("rows out of time order: 1 (sorted)"));
  spec.set_duplicate_policy(Spec::Duplicate::KEEP_LAST);
  auto last = TS::Open(spec);
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  EXPECT_EQ(InputTargets(*last, TS::kTrain, 1), (std::vector<double>{10, 99}));
}

TEST_F(TimeSeriesTest, MissingHoursFailOrBreakTheSeriesOrAreFilled) {
  // Hours 0..9 without 4 and 5.
  std::string csv = "time,load,temp,weather,holiday\n";
  for (int i = 0; i < 10; ++i) {
    if (i != 4 && i != 5) csv += fmt::format("{},{},1,a,0\n", FormatTimestamp(k2011 + i * kHour), i);
  }
  Spec spec = BaseSpec(Write("gap.csv", csv));
  auto failed = TS::Open(spec);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(),
              HasSubstr("gap.csv:6: 2 missing steps (2011-01-01 04:00:00 .. 2011-01-01 05:00:00) between line 5 and this row"));

  spec.set_missing_policy(Spec::Missing::DROP);
  auto dropped = TS::Open(spec);
  ASSERT_TRUE(dropped.ok()) << dropped.status().ToString();
  // 0..3 gives 2 windows, 6..9 gives 2; none spans the gap.
  ASSERT_EQ(dropped->size(TS::kTrain), 4);
  for (int64_t i = 0; i < 4; ++i) {
    auto w = dropped->window_times(TS::kTrain, i);
    EXPECT_EQ(w.last_target - w.first_input, 2 * kHour);
  }
  EXPECT_THAT(dropped->report(), HasSubstr("gaps in time: 1 (2 missing steps of 3600 s; 0 steps forward-filled, 1 gaps left as breaks)"));

  spec.set_missing_policy(Spec::Missing::FORWARD_FILL);
  auto filled = TS::Open(spec);
  ASSERT_TRUE(filled.ok()) << filled.status().ToString();
  // 10 rows; windows end at targets 2,3,6,7,8,9 (4 and 5 are filled).
  ASSERT_EQ(filled->size(TS::kTrain), 6);
  EXPECT_EQ(InputTargets(*filled, TS::kTrain, 2), (std::vector<double>{3, 3}));  // inputs hours 4,5 -> 6
  // max_fill_steps below the gap's length leaves it as a break.
  spec.set_max_fill_steps(1);
  auto limited = TS::Open(spec);
  ASSERT_TRUE(limited.ok());
  EXPECT_EQ(limited->size(TS::kTrain), 4);
}

TEST_F(TimeSeriesTest, MissingValuesFailOrDropOrForwardFill) {
  std::string csv = Hourly(k2011, 6, [](int i) { return i == 3 ? "30,NA,a,0" : fmt::format("{},{},a,0", i * 10, i); });
  Spec spec = BaseSpec(Write("mv.csv", csv));
  spec.add_numeric_features("temp");
  auto failed = TS::Open(spec);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(), HasSubstr("mv.csv:5: column 'temp' has no value"));
  spec.set_missing_policy(Spec::Missing::DROP);
  auto dropped = TS::Open(spec);
  ASSERT_TRUE(dropped.ok()) << dropped.status().ToString();
  EXPECT_EQ(dropped->size(TS::kTrain), 1);  // 0,1 -> 2 only; 4,5 has no target after it
  spec.set_missing_policy(Spec::Missing::FORWARD_FILL);
  auto filled = TS::Open(spec);
  ASSERT_TRUE(filled.ok()) << filled.status().ToString();
  EXPECT_EQ(filled->size(TS::kTrain), 4);  // the target of hour 3 was read, only temp filled
  std::vector<float> x(2 * 2), y(1);
  int64_t i = 2;  // inputs hours 2, 3
  filled->Gather(TS::kTrain, &i, 1, x.data(), y.data());
  EXPECT_FLOAT_EQ(x[1], x[3]);  // temp at hour 3 == temp at hour 2
  EXPECT_THAT(filled->report(), HasSubstr("rows with missing values: 1 (1 cells forward-filled, 0 rows dropped)"));
}

// ------------------------------------------------------------- features

TEST_F(TimeSeriesTest, CalendarFeaturesAreExactForKnownDates) {
  // 2012-01-01 was a Sunday; hours 0..23 of it.
  const int64_t jan1 = 1325376000;
  Spec spec = BaseSpec(Write("cal.csv", Hourly(jan1, 24, [](int i) { return fmt::format("{},1,a,{}", i, i == 5 ? 1 : 0); })));
  spec.set_lookback(1);
  auto* cal = spec.mutable_calendar_features();
  cal->set_hour(true);
  cal->set_weekday(true);
  cal->set_month(true);
  cal->set_holiday_column("holiday");
  auto ds = TS::Open(spec);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  ASSERT_EQ(ds->feature_names(), (std::vector<std::string>{"load", "hour_sin", "hour_cos", "weekday_sin",
                                                           "weekday_cos", "month_sin", "month_cos", "holiday"}));
  std::vector<float> x(8), y(1);
  int64_t i = 6;  // 06:00
  ds->Gather(TS::kTrain, &i, 1, x.data(), y.data());
  EXPECT_NEAR(x[1], 1, 1e-6);   // sin(2 pi 6/24)
  EXPECT_NEAR(x[2], 0, 1e-6);
  EXPECT_NEAR(x[3], 0, 1e-6);   // Sunday = 0
  EXPECT_NEAR(x[4], 1, 1e-6);
  EXPECT_NEAR(x[5], 0, 1e-6);   // January = 0
  EXPECT_NEAR(x[6], 1, 1e-6);
  EXPECT_EQ(x[7], 0);
  i = 5;
  ds->Gather(TS::kTrain, &i, 1, x.data(), y.data());
  EXPECT_EQ(x[7], 1);  // holiday passes through unscaled

  // Other dates through the serving path. 2012-10-29 18:00 was a Monday in
  // October; 2011-04-16 12:00 a Saturday in April.
  const std::vector<std::string> header = {"time", "load", "temp", "weather", "holiday"};
  const double sin17 = std::sin(2 * std::numbers::pi / 7), cos17 = std::cos(2 * std::numbers::pi / 7);
  struct Case { std::string time; double hs, hc, ws, wc, ms, mc; };
  for (const Case& c : {Case{"2012-10-29 18:00:00", -1, 0, sin17, cos17, -1, 0},
                        Case{"2011-04-16 12:00:00", 0, -1, -sin17, cos17, 1, 0}}) {
    auto w = ds->PreprocessWindow(header, {{c.time, "1", "0", "a", "0"}});
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_NEAR((*w)[1], c.hs, 1e-6) << c.time;
    EXPECT_NEAR((*w)[2], c.hc, 1e-6) << c.time;
    EXPECT_NEAR((*w)[3], c.ws, 1e-6) << c.time;
    EXPECT_NEAR((*w)[4], c.wc, 1e-6) << c.time;
    EXPECT_NEAR((*w)[5], c.ms, 1e-6) << c.time;
    EXPECT_NEAR((*w)[6], c.mc, 1e-6) << c.time;
  }
}

TEST_F(TimeSeriesTest, OneHotMapsAnUnseenTestCategoryToUnknown) {
  // January is train, February is test; "snow" appears only in February.
  const int n = (31 + 29) * 24;  // 2012 is a leap year
  const int64_t jan1 = 1325376000;
  std::string csv = Hourly(jan1, n, [](int i) {
    const char* w = i >= 31 * 24 + 100 ? "snow" : (i % 2 ? "rain" : "clear");
    return fmt::format("{},1,{},0", i % 7, w);
  });
  Spec spec = BaseSpec(Write("cat.csv", csv));
  spec.set_test_months(1);
  auto* cat = spec.add_categorical_features();
  cat->set_column("weather");
  auto ds = TS::Open(spec);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  ASSERT_EQ(ds->feature_names(),
            (std::vector<std::string>{"load", "weather=<unknown>", "weather=clear", "weather=rain"}));
  EXPECT_EQ(ds->stats().vocabularies[0].categories, (std::vector<std::string>{"clear", "rain"}));
  std::vector<float> x(2 * 4), y(1);
  int64_t last = ds->size(TS::kTest) - 1;
  ds->Gather(TS::kTest, &last, 1, x.data(), y.data());
  EXPECT_EQ(std::vector<float>(x.begin() + 1, x.begin() + 4), (std::vector<float>{1, 0, 0}));
  int64_t first = 0;  // test hours 0,1 of February: clear, rain
  ds->Gather(TS::kTest, &first, 1, x.data(), y.data());
  EXPECT_EQ(std::vector<float>(x.begin() + 1, x.begin() + 4), (std::vector<float>{0, 1, 0}));
  EXPECT_EQ(std::vector<float>(x.begin() + 5, x.begin() + 8), (std::vector<float>{0, 0, 1}));

  cat->set_encoding(Spec::Categorical::EMBEDDING_INDEX);
  auto idx = TS::Open(spec);
  ASSERT_TRUE(idx.ok());
  ASSERT_EQ(idx->feature_names(), (std::vector<std::string>{"load", "weather#index"}));
  std::vector<float> xi(2 * 2), yi(1);
  idx->Gather(TS::kTest, &last, 1, xi.data(), yi.data());
  EXPECT_EQ(xi[1], 0);  // unknown
  idx->Gather(TS::kTest, &first, 1, xi.data(), yi.data());
  EXPECT_EQ(xi[1], 1);  // clear
  EXPECT_EQ(xi[3], 2);  // rain
}

// --------------------------------------------------------------- splits

TEST_F(TimeSeriesTest, SplitsByTimeWithNoWindowStraddlingABoundary) {
  const int n = 365 * 24;  // 2011
  Spec spec = BaseSpec(Write("year.csv", Hourly(k2011, n, [](int i) { return fmt::format("{},{},a,0", i % 24, i % 5); })));
  spec.set_lookback(24);
  spec.set_horizon(3);
  spec.set_stride(5);
  spec.set_test_months(2);
  spec.set_validation_months(1);
  auto ds = TS::Open(spec);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  const int64_t oct1 = *ParseTimestamp("2011-10-01", "%Y-%m-%d");
  const int64_t nov1 = *ParseTimestamp("2011-11-01", "%Y-%m-%d");
  const int64_t jan1 = *ParseTimestamp("2012-01-01", "%Y-%m-%d");
  EXPECT_EQ(ds->split_range(TS::kTrain), std::make_pair(k2011, oct1));
  EXPECT_EQ(ds->split_range(TS::kValidation), std::make_pair(oct1, nov1));
  EXPECT_EQ(ds->split_range(TS::kTest), std::make_pair(nov1, jan1));
  // floor((rows - 27) / 5) + 1 windows per split.
  auto expect = [](int64_t rows) { return (rows - 27) / 5 + 1; };
  EXPECT_EQ(ds->size(TS::kTrain), expect(273 * 24));
  EXPECT_EQ(ds->size(TS::kValidation), expect(31 * 24));
  EXPECT_EQ(ds->size(TS::kTest), expect(61 * 24));
  for (TS::Split s : {TS::kTrain, TS::kValidation, TS::kTest}) {
    const auto [begin, end] = ds->split_range(s);
    for (int64_t i = 0; i < ds->size(s); ++i) {
      const auto w = ds->window_times(s, i);
      ASSERT_GE(w.first_input, begin);
      ASSERT_LT(w.last_target, end);
      ASSERT_EQ(w.last_target - w.first_input, 26 * kHour);
      ASSERT_EQ(w.first_target, w.last_input + kHour);
    }
  }
  EXPECT_EQ(ds->window_times(TS::kTest, 0).first_input, nov1);

  // Explicit starts give the same split.
  spec.clear_test_months();
  spec.clear_validation_months();
  spec.set_validation_start("2011-10-01");
  spec.set_test_start("2011-11-01 00:00");
  auto explicit_ds = TS::Open(spec);
  ASSERT_TRUE(explicit_ds.ok()) << explicit_ds.status().ToString();
  EXPECT_EQ(explicit_ds->size(TS::kTest), ds->size(TS::kTest));
  EXPECT_EQ(explicit_ds->split_range(TS::kValidation), std::make_pair(oct1, nov1));
  spec.set_test_months(1);
  EXPECT_THAT(TS::Open(spec).status().message(), HasSubstr("not both"));
}

TEST_F(TimeSeriesTest, StandardisationIsFittedOnTrainOnly) {
  // January train, February test; only February differs between the files.
  const int n = (31 + 28) * 24;
  auto make = [&](double feb_scale) {
    return Hourly(k2011, n, [&](int i) {
      const double s = i >= 31 * 24 ? feb_scale : 1;
      return fmt::format("{},{},a,0", (i % 10) * s, (i % 4) * s);
    });
  };
  Spec a = BaseSpec(Write("a.csv", make(1)));
  a.add_numeric_features("temp");
  a.set_test_months(1);
  Spec b = a;
  b.set_path(Write("b.csv", make(100)));
  auto da = TS::Open(a), db = TS::Open(b);
  ASSERT_TRUE(da.ok() && db.ok());
  EXPECT_EQ(da->stats().mean, db->stats().mean);
  EXPECT_EQ(da->stats().stddev, db->stats().stddev);
  EXPECT_EQ(da->stats().target_mean, db->stats().target_mean);
  // Hand values: January load cycles 0..9 over 744 hours = 74 cycles + 0..3.
  double sum = 0, sq = 0;
  for (int i = 0; i < 744; ++i) sum += i % 10;
  const double mean = sum / 744;
  for (int i = 0; i < 744; ++i) sq += (i % 10 - mean) * (i % 10 - mean);
  EXPECT_DOUBLE_EQ(da->stats().target_mean, mean);
  EXPECT_DOUBLE_EQ(da->stats().target_stddev, std::sqrt(sq / 744));
  EXPECT_DOUBLE_EQ(da->stats().mean[1], 1.5);  // temp 0..3 over whole cycles
  EXPECT_EQ(da->stats().train_rows, 744);
  // Train windows agree bit for bit; test windows do not.
  std::vector<float> xa(4), ya(1), xb(4), yb(1);
  int64_t i = 100;
  da->Gather(TS::kTrain, &i, 1, xa.data(), ya.data());
  db->Gather(TS::kTrain, &i, 1, xb.data(), yb.data());
  EXPECT_EQ(xa, xb);
  da->Gather(TS::kTest, &i, 1, xa.data(), ya.data());
  db->Gather(TS::kTest, &i, 1, xb.data(), yb.data());
  EXPECT_NE(ya, yb);
}

// ------------------------------------------------------ gather, baselines

TEST_F(TimeSeriesTest, GatherGivesHandCheckedShapesAndValues) {
  const double temps[] = {0, 2, 4, 6, 8, 10};
  Spec spec = BaseSpec(Write("g.csv", Hourly(k2011, 6, [&](int i) { return fmt::format("{},{},a,0", i + 1, temps[i]); })));
  spec.add_numeric_features("temp");
  spec.set_horizon(2);
  auto ds = TS::Open(spec);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->sample_shape(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(ds->size(TS::kTrain), 3);  // 6 rows, windows of 4
  EXPECT_EQ(ds->size(TS::kTest), 0);
  // load 1..6: mean 3.5, population stddev sqrt(35/12); temp: mean 5, stddev sqrt(35/3).
  const double sl = std::sqrt(35.0 / 12), st = std::sqrt(35.0 / 3);
  std::vector<float> x(2 * 2 * 2), y(2 * 2);
  const int64_t idx[] = {2, 0};
  ds->Gather(TS::kTrain, idx, 2, x.data(), y.data());
  const std::vector<double> want_x = {(3 - 3.5) / sl, (4 - 5) / st, (4 - 3.5) / sl, (6 - 5) / st,
                                      (1 - 3.5) / sl, (0 - 5) / st, (2 - 3.5) / sl, (2 - 5) / st};
  const std::vector<double> want_y = {(5 - 3.5) / sl, (6 - 3.5) / sl, (3 - 3.5) / sl, (4 - 3.5) / sl};
  for (size_t k = 0; k < want_x.size(); ++k) EXPECT_NEAR(x[k], want_x[k], 1e-6) << k;
  for (size_t k = 0; k < want_y.size(); ++k) EXPECT_NEAR(y[k], want_y[k], 1e-6) << k;
  EXPECT_NEAR(ds->TargetToOriginal(y[0]), 5, 1e-5);

  // The serving path gives the same floats for the same rows, also from
  // stats that went through JSON.
  const std::vector<std::string> header = {"time", "load", "temp", "weather", "holiday"};
  const std::vector<std::vector<std::string>> rows = {
      {FormatTimestamp(k2011 + 2 * kHour), "3", "4", "a", "0"},
      {FormatTimestamp(k2011 + 3 * kHour), "4", "6", "a", "0"}};
  auto w = ds->PreprocessWindow(header, rows);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(*w, std::vector<float>(x.begin(), x.begin() + 4));
  auto stats = TimeSeriesStats::FromJson(ds->stats().ToJson());
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  auto w2 = PreprocessTimeSeriesWindow(spec, *stats, header, rows);
  ASSERT_TRUE(w2.ok());
  EXPECT_EQ(*w2, *w);
  auto gap = ds->PreprocessWindow(header, {rows[0], {FormatTimestamp(k2011 + 5 * kHour), "4", "6", "a", "0"}});
  // missing_policy FAIL: the gap is refused as training refuses it.
  EXPECT_THAT(gap.status().message(),
              HasSubstr("window row 2: 2 missing steps (2011-01-01 03:00:00 .. 2011-01-01 04:00:00)"));
  auto bad = ds->PreprocessWindow(header, {rows[0], {FormatTimestamp(k2011 + 3 * kHour), "4", "x", "a", "0"}});
  EXPECT_THAT(bad.status().message(), HasSubstr("window row 2: column 'temp': 'x' is not a number"));
}

// A served window's CSV lines (WindowPreprocessor::Preprocess on lines, which
// encodes clean windows without the row policies' copies) give the floats,
// or the message, of the same rows split first and sent through the row
// policies (PreprocessTimeSeriesWindow): clean windows, and windows that need
// each policy.
TEST_F(TimeSeriesTest, ServedLinesGiveTheSameWindowAsSplitRows) {
  const int n = 14 * 24;
  std::string csv = Hourly(k2011, n, [](int i) {
    return fmt::format("{},{},{},{}", 40 + i % 24, 0.5 * (i % 11), i % 3 ? "rain" : "clear", i % 24 == 5 ? 1 : 0);
  });
  Spec spec = BaseSpec(Write("w.csv", csv));
  spec.set_lookback(4);
  spec.add_numeric_features("temp");
  spec.add_categorical_features()->set_column("weather");
  auto* cal = spec.mutable_calendar_features();
  cal->set_hour(true);
  cal->set_weekday(true);
  cal->set_month(true);
  cal->set_holiday_column("holiday");
  spec.set_duplicate_policy(Spec::Duplicate::KEEP_FIRST);
  spec.set_missing_policy(Spec::Missing::FORWARD_FILL);
  spec.set_max_fill_steps(2);
  spec.set_malformed_policy(Spec::Malformed::DROP);
  auto ds = TS::Open(spec);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  const std::vector<std::string> header = {"time", "load", "temp", "weather", "holiday"};
  auto pre = WindowPreprocessor::Create(spec, ds->stats(), header);
  ASSERT_TRUE(pre.ok()) << pre.status().ToString();
  ASSERT_EQ(pre->elements(), 4 * ds->num_features());

  auto line = [](int h, const std::string& rest) { return FormatTimestamp(k2011 + h * kHour) + "," + rest; };
  struct Case {
    const char* what;
    std::vector<std::string> lines;
    const char* error;  // nullptr: both succeed
  };
  const std::vector<Case> cases = {
      {"clean", {line(30, "46,1,rain,0"), line(31, "47,1.5,clear,0"), line(32, "48,2,rain,0"), line(33, "49,2.5,rain,0")}, nullptr},
      {"CRLF and blanks", {line(30, "46,1,rain,0\r"), line(31, " 47 , 1.5,clear ,0\r"), line(32, "48,2,rain,1\r"), line(33, "49,2.5,rain,0")}, nullptr},
      {"more lines than the lookback", {line(28, "44,0,rain,0"), line(29, "45,0.5,rain,1"), line(30, "46,1,rain,0"), line(31, "47,1.5,clear,0"), line(32, "48,2,rain,0"), line(33, "49,2.5,snow,0")}, nullptr},
      {"quoted fields", {line(30, "\"46\",1,\"rain\",0"), line(31, "47,1.5,\"cl\"\"ear\",0"), line(32, "48,2,rain,0"), line(33, "49,2.5,rain,0")}, nullptr},
      {"a duplicate", {line(29, "45,1,rain,0"), line(30, "46,1,rain,0"), line(30, "99,9,clear,0"), line(31, "47,1.5,clear,0"), line(32, "48,2,rain,0"), line(33, "49,2.5,rain,0")}, nullptr},
      {"a short gap", {line(29, "45,1,rain,0"), line(30, "46,1,rain,0"), line(32, "48,2,rain,0"), line(33, "49,2.5,rain,0")}, nullptr},
      {"a missing value", {line(30, "46,1,rain,0"), line(31, "47,NA,clear,0"), line(32, "48,,rain,0"), line(33, "49,2.5,rain,0")}, nullptr},
      {"an empty category", {line(30, "46,1,rain,0"), line(31, "47,1.5,,0"), line(32, "48,2,rain,0"), line(33, "49,2.5,rain,0")}, nullptr},
      {"a malformed row", {line(29, "45,1,rain,0"), line(30, "46,1,rain,0"), line(31, "47,x,clear,0"), line(31, "47,1.5,clear"), line(32, "48,2,rain,0"), line(33, "49,2.5,rain,0")}, nullptr},
      {"out of order", {line(31, "47,1.5,clear,0"), line(30, "46,1,rain,0"), line(32, "48,2,rain,0"), line(33, "49,2.5,rain,0")}, nullptr},
      {"a long gap", {line(26, "42,1,rain,0"), line(30, "46,1,rain,0"), line(31, "47,1.5,clear,0"), line(32, "48,2,rain,0"), line(36, "49,2.5,rain,0")}, "window row 5: timestamp 2011-01-02 12:00:00; expected"},
      {"too few rows", {line(30, "46,1,rain,0"), line(31, "47,1.5,clear,0"), line(32, "48,2,rain,0")}, "window has 3 rows (3 sent"},
      {"beyond a float", {line(30, "46,1,rain,0"), line(31, "47,1e300,clear,0"), line(32, "48,2,rain,0"), line(33, "49,2.5,rain,0")}, "window row 2: feature 'temp': 1e+300 standardises to"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<std::string_view> views(c.lines.begin(), c.lines.end());
    std::vector<std::vector<std::string>> rows;
    for (const std::string& l : c.lines) {
      std::string_view v = l;
      if (!v.empty() && v.back() == '\r') v.remove_suffix(1);
      auto fields = SplitCsvLine(v);
      ASSERT_TRUE(fields.ok()) << fields.status().ToString();
      rows.push_back(*fields);
    }
    auto want = PreprocessTimeSeriesWindow(spec, ds->stats(), header, rows);
    std::vector<float> got(static_cast<size_t>(pre->elements()), -7.f);
    const Status st = pre->Preprocess(views, got.data());
    if (c.error == nullptr) {
      ASSERT_TRUE(want.ok()) << want.status().ToString();
      ASSERT_TRUE(st.ok()) << st.ToString();
      EXPECT_EQ(got, *want);
    } else {
      ASSERT_FALSE(want.ok());
      ASSERT_FALSE(st.ok());
      EXPECT_EQ(st.message(), want.status().message());
      EXPECT_THAT(st.message(), HasSubstr(c.error));
    }
  }
  // The clean window is the dataset's own: hours 30..33 are train window 30.
  std::vector<float> x(static_cast<size_t>(pre->elements())), y(1);
  const int64_t i = 30;
  ds->Gather(TS::kTrain, &i, 1, x.data(), y.data());
  std::vector<std::string> own;
  for (int h = 30; h < 34; ++h) {
    own.push_back(line(h, fmt::format("{},{},{},{}", 40 + h % 24, 0.5 * (h % 11), h % 3 ? "rain" : "clear", h % 24 == 5 ? 1 : 0)));
  }
  std::vector<std::string_view> own_views(own.begin(), own.end());
  std::vector<float> served(x.size());
  ASSERT_TRUE(pre->Preprocess(own_views, served.data()).ok());
  EXPECT_EQ(served, x);
  // A quote never closed names the row.
  std::vector<std::string> open = {line(30, "46,1,\"rain,0"), line(31, "47,1.5,clear,0"), line(32, "48,2,rain,0"), line(33, "49,2.5,rain,0")};
  std::vector<std::string_view> open_views(open.begin(), open.end());
  EXPECT_EQ(pre->Preprocess(open_views, served.data()).message(),
            "window row 1: the quote opened in field 4 is never closed");
}

TEST_F(TimeSeriesTest, BaselinesOnATinySeriesMatchHandComputation) {
  const double v[] = {10, 0, 12, 2, 14, 4, 16, 6};
  Spec spec = BaseSpec(Write("b.csv", Hourly(k2011, 8, [&](int i) { return fmt::format("{},1,a,0", v[i]); })));
  spec.set_lookback(4);
  spec.set_horizon(2);
  auto ds = TS::Open(spec);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  ASSERT_EQ(ds->size(TS::kTrain), 3);
  // Season 2: targets 14,4 | 4,16 | 16,6 predicted by 12,2 | 2,14 | 14,4.
  TS::Metrics sn = ds->SeasonalNaive(TS::kTrain, 2);
  EXPECT_EQ(sn.count, 6);
  EXPECT_DOUBLE_EQ(sn.mae, 2);
  EXPECT_DOUBLE_EQ(sn.rmse, 2);
  EXPECT_NEAR(sn.mape, 100 * (2 / 14.0 + 2 / 4.0 + 2 / 4.0 + 2 / 16.0 + 2 / 16.0 + 2 / 6.0) / 6, 1e-9);
  EXPECT_NEAR(sn.smape, 100 * (4 / 26.0 + 4 / 6.0 + 4 / 6.0 + 4 / 30.0 + 4 / 30.0 + 4 / 10.0) / 6, 1e-9);
  // Last value: 2 | 14 | 4 for both steps: errors 12,2 | 10,2 | 12,2.
  TS::Metrics lv = ds->LastValue(TS::kTrain);
  EXPECT_EQ(lv.count, 6);
  EXPECT_DOUBLE_EQ(lv.mae, 40.0 / 6);
  EXPECT_DOUBLE_EQ(lv.rmse, std::sqrt(400.0 / 6));
  // Season 1 over horizon 2 goes back whole seasons into the inputs: the
  // same as last value.
  EXPECT_DOUBLE_EQ(ds->SeasonalNaive(TS::kTrain, 1).mae, lv.mae);
  // A limit scores only the first windows (those a test_limit evaluates):
  // window 0's errors 2,2 and 12,2.
  EXPECT_EQ(ds->SeasonalNaive(TS::kTrain, 2, 1).count, 2);
  EXPECT_DOUBLE_EQ(ds->SeasonalNaive(TS::kTrain, 2, 1).mae, 2);
  EXPECT_DOUBLE_EQ(ds->LastValue(TS::kTrain, 1).mae, 7);
  EXPECT_DOUBLE_EQ(ds->LastValue(TS::kTrain, 99).mae, lv.mae);
  EXPECT_EQ(ds->LastValue(TS::kTrain, 0).count, 0);
  const auto limited = nlohmann::json::parse(ds->BaselinesJson(TS::kTrain, 1));
  EXPECT_DOUBLE_EQ(limited["last_value_mae"].get<double>(), 7);

  // MAPE skips zero actuals; sMAPE counts 0 vs 0 as no error.
  TS::Metrics m = TS::Score({1, 2, 0}, {2, 0, 0});
  EXPECT_DOUBLE_EQ(m.mae, 1);
  EXPECT_EQ(m.mape_count, 1);
  EXPECT_DOUBLE_EQ(m.mape, 50);
  EXPECT_NEAR(m.smape, 100 * (2.0 / 3 + 2.0) / 3, 1e-9);
  EXPECT_TRUE(std::isnan(TS::Score({}, {}).mae));
}

TEST_F(TimeSeriesTest, SpecErrorsAreSentences) {
  Spec spec = BaseSpec(Write("s.csv", Hourly(k2011, 10, [](int i) { return fmt::format("{},1,a,0", i); })));
  spec.add_numeric_features("load");
  EXPECT_THAT(TS::Open(spec).status().message(), HasSubstr("column 'load' is both target_column and numeric_features"));
  spec.clear_numeric_features();
  spec.add_numeric_features("pressure");
  EXPECT_THAT(TS::Open(spec).status().message(),
              HasSubstr("timeseries.numeric_features names column 'pressure', which the header lacks"));
  spec.clear_numeric_features();
  spec.set_lookback(20);
  EXPECT_THAT(TS::Open(spec).status().message(), HasSubstr("the train split"));
  spec.set_lookback(2);
  spec.set_timestamp_format("%Y-%m-%d %Q");
  EXPECT_THAT(TS::Open(spec).status().message(), HasSubstr("'%Q' is not supported"));
}

// ------------------------------------------------------------ real data

TEST_F(TimeSeriesTest, BikeSharingHourlyBaselines) {
  const std::string path = POLIS_SOURCE_DIR "/../shared/data/bike-sharing/hour.csv";
  if (!PathExists(path)) POLIS_MISSING_PREREQ() << "no bike-sharing data at " << path;
  Spec spec;
  spec.set_path(path);
  spec.set_timestamp_column("dteday");
  spec.set_timestamp_format("%Y-%m-%d");
  spec.set_hour_column("hr");
  spec.set_target_column("cnt");
  for (const char* c : {"temp", "atemp", "hum", "windspeed", "workingday"}) spec.add_numeric_features(c);
  spec.add_categorical_features()->set_column("weathersit");
  spec.mutable_calendar_features()->set_holiday_column("holiday");
  spec.set_lookback(168);
  spec.set_horizon(1);
  spec.set_test_months(3);
  spec.set_missing_policy(Spec::Missing::DROP);
  for (auto policy : {Spec::Missing::DROP, Spec::Missing::FORWARD_FILL}) {
    spec.set_missing_policy(policy);
    auto ds = TS::Open(spec);
    ASSERT_TRUE(ds.ok()) << ds.status().ToString();
    const char* name = policy == Spec::Missing::DROP ? "DROP" : "FORWARD_FILL";
    std::cout << "[bike-sharing, missing_policy " << name << "]\n" << ds->report();
    EXPECT_THAT(ds->report(), HasSubstr("17379 records read (2 blank lines skipped)"));
    EXPECT_THAT(ds->report(), HasSubstr("gaps in time: 75 (165 missing steps"));
    EXPECT_EQ(ds->split_range(TS::kTest).first, *ParseTimestamp("2012-10-01", "%Y-%m-%d"));
    EXPECT_EQ(ds->num_features(), 1 + 5 + 5 + 6 + 1);
    ASSERT_GT(ds->size(TS::kTest), 0);
    const TS::Metrics sn = ds->SeasonalNaive(TS::kTest, 168);
    const TS::Metrics lv = ds->LastValue(TS::kTest);
    std::cout << fmt::format(
        "  windows: train {} validation {} test {}\n"
        "  test seasonal naive (168 h): MAE {:.2f} RMSE {:.2f} sMAPE {:.1f}% (n={})\n"
        "  test last value:             MAE {:.2f} RMSE {:.2f} sMAPE {:.1f}% (n={})\n",
        ds->size(TS::kTrain), ds->size(TS::kValidation), ds->size(TS::kTest), sn.mae, sn.rmse, sn.smape,
        sn.count, lv.mae, lv.rmse, lv.smape, lv.count);
    EXPECT_EQ(sn.count, ds->size(TS::kTest));
    EXPECT_GT(sn.mae, 0);
    EXPECT_GT(lv.mae, 0);
  }
}

}  // namespace
}  // namespace polis::data
