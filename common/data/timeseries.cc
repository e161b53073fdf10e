#include "common/data/timeseries.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <numbers>
#include <set>
#include <span>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "common/data/csv.h"
#include "common/echo.h"
#include "common/log.h"

namespace polis::data {
namespace {

using Spec = proto::TimeSeriesSpec;
constexpr int64_t kDay = 86400;
constexpr size_t kMaxExamples = 5;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// FORWARD_FILL may insert at most this many rows per row read.
constexpr int64_t kMaxFilledPerRow = 10;

// ---------------------------------------------------------------- civil time
// Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian).

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

int64_t DaysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  const int64_t era = FloorDiv(y, 400);
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

struct Civil {
  int64_t year;
  int month, day, weekday;  // weekday 0 = Sunday
  int64_t second_of_day;
};

Civil ToCivil(int64_t t) {
  const int64_t z0 = FloorDiv(t, kDay);
  Civil c{};
  c.second_of_day = t - z0 * kDay;
  c.weekday = static_cast<int>(((z0 % 7) + 11) % 7);  // 1970-01-01 was a Thursday (4)
  const int64_t z = z0 + 719468;
  const int64_t era = FloorDiv(z, 146097);
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  c.day = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  c.month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  c.year = yoe + era * 400 + (c.month <= 2);
  return c;
}

bool IsLeap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int DaysInMonth(int64_t y, int m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeap(y) ? 29 : kDays[m - 1];
}

// t moved by `months` calendar months, the day clamped to the month's length.
int64_t AddMonths(int64_t t, int64_t months) {
  const Civil c = ToCivil(t);
  const int64_t mi = c.year * 12 + (c.month - 1) + months;
  const int64_t y = FloorDiv(mi, 12);
  const int m = static_cast<int>(mi - y * 12 + 1);
  const int d = std::min(c.day, DaysInMonth(y, m));
  return DaysFromCivil(y, m, d) * kDay + c.second_of_day;
}

// ------------------------------------------------------------------- values

// Numeric cells that mean "no value" (compared case-insensitively).
bool IsMissingNumber(std::string_view s) {
  if (s.empty()) return true;
  if (s.size() > 4) return false;  // longer than every token
  static constexpr std::string_view kTokens[] = {"na", "n/a", "nan", "null", "none"};
  for (std::string_view tok : kTokens) {
    if (s.size() == tok.size() && std::tolower(static_cast<unsigned char>(s[0])) == tok[0] &&
        std::equal(s.begin(), s.end(), tok.begin(),
                   [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; })) {
      return true;
    }
  }
  return false;
}

enum class Cell { kOk, kMissing, kBad };

// Well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF): categories are stored as JSON strings in the model artifact.
bool IsUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    int n = 0;
    uint32_t cp = 0;
    if (b < 0x80) { ++i; continue; }
    if (b >= 0xc2 && b <= 0xdf) { n = 1; cp = b & 0x1f; }
    else if (b >= 0xe0 && b <= 0xef) { n = 2; cp = b & 0x0f; }
    else if (b >= 0xf0 && b <= 0xf4) { n = 3; cp = b & 0x07; }
    else return false;
    if (s.size() - i <= static_cast<size_t>(n)) return false;
    for (int k = 1; k <= n; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xc0) != 0x80) return false;
      cp = cp << 6 | (c & 0x3f);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
      return false;
    i += n + 1;
  }
  return true;
}

Cell ParseNumber(std::string_view raw, double* out) {
  std::string_view s = TrimBlanks(raw);
  if (IsMissingNumber(s)) return Cell::kMissing;
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  double v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(v)) return Cell::kBad;
  *out = v;
  return Cell::kOk;
}

bool ReadDigits(std::string_view text, size_t& p, int min_n, int max_n, int64_t* out) {
  int n = 0;
  int64_t v = 0;
  while (n < max_n && p < text.size() && text[p] >= '0' && text[p] <= '9') {
    v = v * 10 + (text[p] - '0');
    ++p;
    ++n;
  }
  *out = v;
  return n >= min_n;
}

std::string ExpandFormat(std::string_view format) {
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] == '%' && i + 1 < format.size()) {
      if (format[i + 1] == 'F') { out += "%Y-%m-%d"; ++i; continue; }
      if (format[i + 1] == 'T') { out += "%H:%M:%S"; ++i; continue; }
      out += format.substr(i, 2);
      ++i;
      continue;
    }
    out.push_back(format[i]);
  }
  return out;
}

Status CheckTimestampFormat(std::string_view format) {
  if (format.empty()) return InvalidArgument("timeseries.timestamp_format is empty");
  const std::string f = ExpandFormat(format);
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '%') continue;
    if (i + 1 >= f.size()) {
      return InvalidArgument("timeseries.timestamp_format '{}' ends with a lone '%'", format);
    }
    if (std::string_view("YymdHMS%").find(f[i + 1]) == std::string_view::npos) {
      return InvalidArgument(
          "timeseries.timestamp_format '{}': '%{}' is not supported (use %Y %y %m %d %H %M %S "
          "%F %T %%)", format, f[i + 1]);
    }
    ++i;
  }
  return Status::Ok();
}

// ----------------------------------------------------------------- problems

// Problems of one kind: all counted, the first few kept as examples.
struct Problems {
  int64_t count = 0;
  std::vector<std::string> examples;

  void Add(std::string message) {
    ++count;
    if (examples.size() < kMaxExamples) examples.push_back(std::move(message));
  }
  Status ToStatus() const {
    std::string msg = examples.empty() ? std::string("unknown problem") : examples[0];
    if (count > 1) {
      std::vector<std::string> rest(examples.begin() + 1, examples.end());
      msg += fmt::format(" (and {} more: {}{})", count - 1, fmt::join(rest, "; "),
                         count > static_cast<int64_t>(examples.size()) ? "; ..." : "");
    }
    return InvalidArgument("{}", msg);
  }
};

// ------------------------------------------------------------------ columns

struct Columns {
  int ts = -1, hour = -1, target = -1, holiday = -1;
  std::vector<int> numeric;
  std::vector<int> categorical;
  std::vector<std::string> names;  // the header, for messages
};

// Slots in RawRow::num: the target, the numeric features, then the holiday flag.
size_t HolidaySlot(const Spec& spec) { return 1 + static_cast<size_t>(spec.numeric_features_size()); }
bool HasHoliday(const Spec& spec) {
  return spec.has_calendar_features() && !spec.calendar_features().holiday_column().empty();
}
size_t NumSlots(const Spec& spec) { return HolidaySlot(spec) + (HasHoliday(spec) ? 1 : 0); }

StatusOr<Columns> BindColumns(const Spec& spec, const std::vector<std::string>& header,
                              const std::string& source, bool need_target) {
  Columns c;
  c.names = header;
  auto find = [&](const std::string& name, const char* field, int* out) -> Status {
    auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) {
      return InvalidArgument("{}: timeseries.{} names column '{}', which the header lacks (it has: {})",
                             source, field, name, fmt::join(header, ", "));
    }
    *out = static_cast<int>(it - header.begin());
    return Status::Ok();
  };
  POLIS_RETURN_IF_ERROR(find(spec.timestamp_column(), "timestamp_column", &c.ts));
  if (!spec.hour_column().empty()) POLIS_RETURN_IF_ERROR(find(spec.hour_column(), "hour_column", &c.hour));
  if (need_target) POLIS_RETURN_IF_ERROR(find(spec.target_column(), "target_column", &c.target));
  for (const std::string& name : spec.numeric_features()) {
    int idx = -1;
    POLIS_RETURN_IF_ERROR(find(name, "numeric_features", &idx));
    c.numeric.push_back(idx);
  }
  for (const auto& cat : spec.categorical_features()) {
    int idx = -1;
    POLIS_RETURN_IF_ERROR(find(cat.column(), "categorical_features.column", &idx));
    c.categorical.push_back(idx);
  }
  if (HasHoliday(spec)) {
    POLIS_RETURN_IF_ERROR(
        find(spec.calendar_features().holiday_column(), "calendar_features.holiday_column", &c.holiday));
  }
  return c;
}

// ---------------------------------------------------------------------- rows

struct RawRow {
  int64_t line = 0;                  // file line (or 1-based row for serving)
  int64_t time = 0;
  std::vector<double> num;           // see HolidaySlot; NaN = missing
  std::vector<std::string> cat;      // categorical values, trimmed
  std::vector<uint8_t> cat_missing;  // 1 where the categorical cell is empty
  bool inserted = false;             // added to fill a gap
  bool target_imputed = false;       // target came from an earlier row
};

bool HasMissing(const RawRow& r, std::string* first_column, const Spec& spec, const Columns& c) {
  for (size_t k = 0; k < r.num.size(); ++k) {
    if (!std::isnan(r.num[k])) continue;
    const int col = k == 0 ? c.target : k == HolidaySlot(spec) ? c.holiday : c.numeric[k - 1];
    *first_column = c.names[col];
    return true;
  }
  for (size_t k = 0; k < r.cat_missing.size(); ++k) {
    if (r.cat_missing[k]) {
      *first_column = c.names[c.categorical[k]];
      return true;
    }
  }
  return false;
}

// Parses the fields a spec uses. A cell that is missing becomes NaN (or
// cat_missing); a cell that cannot be read fills *why and returns false.
// Fields: a vector of std::string (a file's records) or of std::string_view
// (a served window's lines).
template <typename Fields>
bool ParseRow(const Spec& spec, const Columns& c, const Fields& fields, RawRow* row,
              std::string* why) {
  const std::string_view ts_text = fields[c.ts];
  auto ts = ParseTimestamp(ts_text, spec.timestamp_format());
  if (!ts.ok()) {
    *why = fmt::format("column '{}': {}", c.names[c.ts], ts.status().message());
    return false;
  }
  row->time = *ts;
  if (c.hour >= 0) {
    double h = 0;
    if (ParseNumber(fields[c.hour], &h) != Cell::kOk || h != std::floor(h) || h < 0 || h > 23) {
      *why = fmt::format("column '{}': '{}' is not an hour (an integer 0-23)", c.names[c.hour],
                         fields[c.hour]);
      return false;
    }
    row->time += static_cast<int64_t>(h) * 3600;
  }
  row->num.assign(NumSlots(spec), kNaN);
  auto number = [&](int col, size_t slot) {
    if (col < 0) {  // serving without the target column: not an input
      row->num[slot] = 0;
      return true;
    }
    double v = 0;
    switch (ParseNumber(fields[col], &v)) {
      case Cell::kOk: row->num[slot] = v; return true;
      case Cell::kMissing: return true;
      case Cell::kBad:
        *why = fmt::format("column '{}': '{}' is not a number", EchoValue(c.names[col]), EchoValue(fields[col]));
        return false;
    }
    return false;
  };
  if (!number(c.target, 0)) return false;
  for (size_t i = 0; i < c.numeric.size(); ++i) {
    if (!number(c.numeric[i], 1 + i)) return false;
  }
  if (c.holiday >= 0) {
    const size_t slot = HolidaySlot(spec);
    if (!number(c.holiday, slot)) return false;
    const double v = row->num[slot];
    if (!std::isnan(v) && v != 0 && v != 1) {
      *why = fmt::format("column '{}': '{}' is not 0 or 1", c.names[c.holiday], fields[c.holiday]);
      return false;
    }
  }
  row->cat.resize(c.categorical.size());
  row->cat_missing.assign(c.categorical.size(), 0);
  for (size_t i = 0; i < c.categorical.size(); ++i) {
    row->cat[i] = std::string(TrimBlanks(fields[c.categorical[i]]));
    row->cat_missing[i] = row->cat[i].empty();
    if (!IsUtf8(row->cat[i])) {
      *why = fmt::format("column '{}': '{}' is not valid UTF-8 (categories are kept as JSON text "
                         "in the model)", c.names[c.categorical[i]], EchoValue(row->cat[i]));
      return false;
    }
  }
  return true;
}

// Why a value cannot be a standardised float input.
std::string OutOfFloat(double value, double mean, double stddev) {
  return fmt::format("{} standardises to {} ((x - {}) / {}), beyond what a float holds", value,
                     (value - mean) / stddev, mean, stddev);
}

// Copies every missing cell of `row` from `prev`.
void ForwardFill(const RawRow& prev, RawRow* row, int64_t* cells) {
  for (size_t k = 0; k < row->num.size(); ++k) {
    if (std::isnan(row->num[k])) {
      row->num[k] = prev.num[k];
      ++*cells;
      if (k == 0) row->target_imputed = true;
    }
  }
  for (size_t k = 0; k < row->cat.size(); ++k) {
    if (row->cat_missing[k]) {
      row->cat[k] = prev.cat[k];
      row->cat_missing[k] = 0;
      ++*cells;
    }
  }
}

// ------------------------------------------------------------------ encoding

// Row -> F unstandardised feature values, in feature_names order.
class Encoder {
 public:
  Encoder(const Spec& spec, const std::vector<TimeSeriesStats::Vocabulary>& vocab)
      : spec_(spec), vocab_(vocab) {
    if (spec.target_as_feature()) Add(spec.target_column(), true);
    for (const std::string& name : spec.numeric_features()) Add(name, true);
    index_.resize(vocab.size());
    for (size_t i = 0; i < vocab.size(); ++i) {
      const auto& v = vocab[i];
      for (size_t k = 0; k < v.categories.size(); ++k) index_[i][v.categories[k]] = static_cast<int>(k + 1);
      cat_offset_.push_back(static_cast<int>(names_.size()));
      if (spec.categorical_features(static_cast<int>(i)).encoding() ==
          Spec::Categorical::EMBEDDING_INDEX) {
        Add(v.column + "#index", false);
      } else {
        Add(v.column + "=<unknown>", false);
        for (const std::string& cat : v.categories) Add(v.column + "=" + cat, false);
      }
    }
    const auto& cal = spec.calendar_features();
    if (cal.hour()) { Add("hour_sin", false); Add("hour_cos", false); }
    if (cal.weekday()) { Add("weekday_sin", false); Add("weekday_cos", false); }
    if (cal.month()) { Add("month_sin", false); Add("month_cos", false); }
    if (HasHoliday(spec)) Add(cal.holiday_column(), false);
  }

  int64_t size() const { return static_cast<int64_t>(names_.size()); }
  const std::vector<std::string>& names() const { return names_; }
  bool standardised(int64_t f) const { return standardised_[f]; }

  void Encode(const RawRow& row, double* out) const {
    std::fill(out, out + size(), 0.0);
    size_t f = 0;
    if (spec_.target_as_feature()) out[f++] = row.num[0];
    for (int i = 0; i < spec_.numeric_features_size(); ++i) out[f++] = row.num[1 + i];
    for (size_t i = 0; i < vocab_.size(); ++i) {
      auto it = index_[i].find(row.cat[i]);
      const int idx = it == index_[i].end() ? 0 : it->second;
      const size_t base = static_cast<size_t>(cat_offset_[i]);
      if (spec_.categorical_features(static_cast<int>(i)).encoding() ==
          Spec::Categorical::EMBEDDING_INDEX) {
        out[base] = idx;
        f = base + 1;
      } else {
        out[base + idx] = 1;
        f = base + 1 + vocab_[i].categories.size();
      }
    }
    const auto& cal = spec_.calendar_features();
    const Civil c = ToCivil(row.time);
    constexpr double kTwoPi = 2 * std::numbers::pi;
    auto pair = [&](double phase) {
      out[f++] = std::sin(kTwoPi * phase);
      out[f++] = std::cos(kTwoPi * phase);
    };
    if (cal.hour()) pair(static_cast<double>(c.second_of_day) / kDay);
    if (cal.weekday()) pair(c.weekday / 7.0);
    if (cal.month()) pair((c.month - 1) / 12.0);
    if (HasHoliday(spec_)) out[f++] = row.num[HolidaySlot(spec_)];
  }

 private:
  void Add(std::string name, bool standardised) {
    names_.push_back(std::move(name));
    standardised_.push_back(standardised);
  }

  const Spec& spec_;
  const std::vector<TimeSeriesStats::Vocabulary>& vocab_;
  std::vector<std::string> names_;
  std::vector<uint8_t> standardised_;
  std::vector<std::unordered_map<std::string, int>> index_;
  std::vector<int> cat_offset_;
};

void Standardise(const TimeSeriesStats& stats, const double* raw, float* out) {
  for (size_t f = 0; f < stats.mean.size(); ++f) {
    out[f] = static_cast<float>((raw[f] - stats.mean[f]) / stats.stddev[f]);
  }
}

// Sorted categories: numerically when every one is a number, else by bytes.
std::vector<std::string> SortCategories(const std::set<std::string>& seen) {
  std::vector<std::string> out(seen.begin(), seen.end());
  std::vector<double> values;
  for (const std::string& s : out) {
    double v = 0;
    if (ParseNumber(s, &v) != Cell::kOk) return out;
    values.push_back(v);
  }
  std::vector<size_t> order(out.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return values[a] < values[b]; });
  std::vector<std::string> sorted;
  for (size_t i : order) sorted.push_back(out[i]);
  return sorted;
}

StatusOr<int64_t> ParseSplitTime(const std::string& text, const char* field) {
  for (const char* f : {"%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"}) {
    auto t = ParseTimestamp(text, f);
    if (t.ok()) return *t;
  }
  return InvalidArgument("timeseries.{} is '{}'; expected \"YYYY-MM-DD\" or \"YYYY-MM-DD HH:MM[:SS]\"",
                         field, text);
}

Status ValidateSpec(const Spec& spec) {
  if (spec.path().empty()) return InvalidArgument("timeseries.path is required");
  if (spec.timestamp_column().empty()) return InvalidArgument("timeseries.timestamp_column is required");
  if (spec.target_column().empty()) return InvalidArgument("timeseries.target_column is required");
  POLIS_RETURN_IF_ERROR(CheckTimestampFormat(spec.timestamp_format()));
  auto positive = [](int64_t v, const char* field) -> Status {
    if (v < 1) return InvalidArgument("timeseries.{} is {}; expected >= 1", field, v);
    return Status::Ok();
  };
  POLIS_RETURN_IF_ERROR(positive(spec.frequency_seconds(), "frequency_seconds"));
  POLIS_RETURN_IF_ERROR(positive(spec.lookback(), "lookback"));
  POLIS_RETURN_IF_ERROR(positive(spec.horizon(), "horizon"));
  POLIS_RETURN_IF_ERROR(positive(spec.stride(), "stride"));
  if (spec.validation_months() < 0 || spec.test_months() < 0) {
    return InvalidArgument("timeseries.validation_months / test_months must be >= 0 (got {} / {})",
                           spec.validation_months(), spec.test_months());
  }
  const bool months = spec.validation_months() > 0 || spec.test_months() > 0;
  const bool explicit_starts = spec.has_validation_start() || spec.has_test_start();
  if (months && explicit_starts) {
    return InvalidArgument("timeseries: set validation_months/test_months or "
                           "validation_start/test_start, not both");
  }
  if (spec.max_fill_steps() < 0) {
    return InvalidArgument("timeseries.max_fill_steps is {}; expected >= 0 (0 = no limit)",
                           spec.max_fill_steps());
  }
  if (!spec.hour_column().empty() && spec.frequency_seconds() < 3600) {
    return InvalidArgument("timeseries.hour_column gives hourly timestamps but frequency_seconds "
                           "is {}", spec.frequency_seconds());
  }
  // Each column plays one role.
  std::unordered_map<std::string, std::string> role;
  auto claim = [&](const std::string& name, const std::string& what) -> Status {
    if (name.empty()) return InvalidArgument("timeseries.{}: empty column name", what);
    auto [it, fresh] = role.emplace(name, what);
    if (!fresh) {
      return InvalidArgument("timeseries: column '{}' is both {} and {}{}", name, it->second, what,
                             name == spec.target_column()
                                 ? " (the target's past is an input already: target_as_feature)"
                                 : "");
    }
    return Status::Ok();
  };
  POLIS_RETURN_IF_ERROR(claim(spec.target_column(), "target_column"));
  for (const auto& n : spec.numeric_features()) POLIS_RETURN_IF_ERROR(claim(n, "numeric_features"));
  for (const auto& c : spec.categorical_features()) {
    POLIS_RETURN_IF_ERROR(claim(c.column(), "categorical_features"));
  }
  if (HasHoliday(spec)) {
    POLIS_RETURN_IF_ERROR(claim(spec.calendar_features().holiday_column(), "calendar_features.holiday_column"));
  }
  if (spec.has_validation_start()) POLIS_RETURN_IF_ERROR(ParseSplitTime(spec.validation_start(), "validation_start").status());
  if (spec.has_test_start()) POLIS_RETURN_IF_ERROR(ParseSplitTime(spec.test_start(), "test_start").status());
  return Status::Ok();
}

const char* SplitName(int s) {
  static constexpr const char* kNames[] = {"train", "validation", "test"};
  return kNames[s];
}

}  // namespace

// ---------------------------------------------------------------- timestamps

StatusOr<int64_t> ParseTimestamp(std::string_view raw, std::string_view format) {
  const std::string_view text = TrimBlanks(raw);
  const std::string f = ExpandFormat(format);
  int64_t year = 1970, month = 1, day = 1, hour = 0, minute = 0, second = 0;
  auto fail = [&](const std::string& why) -> Status {
    return InvalidArgument("'{}' does not match '{}': {}", EchoValue(raw), EchoValue(format), why);
  };
  size_t p = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '%') {
      if (p >= text.size() || text[p] != f[i]) {
        return fail(fmt::format("expected '{}' at character {}", f[i], p + 1));
      }
      ++p;
      continue;
    }
    if (++i >= f.size()) return InvalidArgument("timestamp format '{}' ends with a lone '%'", format);
    const char d = f[i];
    int64_t* out = nullptr;
    int min_n = 1, max_n = 2;
    switch (d) {
      case 'Y': out = &year; min_n = max_n = 4; break;
      case 'y': out = &year; min_n = max_n = 2; break;
      case 'm': out = &month; break;
      case 'd': out = &day; break;
      case 'H': out = &hour; break;
      case 'M': out = &minute; break;
      case 'S': out = &second; break;
      case '%':
        if (p >= text.size() || text[p] != '%') return fail(fmt::format("expected '%' at character {}", p + 1));
        ++p;
        continue;
      default:
        return InvalidArgument("timestamp format '{}': '%{}' is not supported", format, d);
    }
    if (!ReadDigits(text, p, min_n, max_n, out)) {
      return fail(fmt::format("expected {} digit{} for %{} at character {}", min_n == max_n ? fmt::format("{}", min_n) : "1-2",
                              max_n == 1 ? "" : "s", d, p + 1));
    }
    if (d == 'y') year += year < 69 ? 2000 : 1900;  // POSIX: 69-99 -> 19xx, 00-68 -> 20xx
  }
  if (p != text.size()) return fail(fmt::format("unexpected '{}' after the timestamp", text.substr(p)));
  if (month < 1 || month > 12) return fail(fmt::format("month {} is out of range", month));
  if (day < 1 || day > DaysInMonth(year, static_cast<int>(month))) {
    return fail(fmt::format("day {} is out of range for {:04}-{:02}", day, year, month));
  }
  if (hour > 23) return fail(fmt::format("hour {} is out of range", hour));
  if (minute > 59) return fail(fmt::format("minute {} is out of range", minute));
  if (second > 59) return fail(fmt::format("second {} is out of range", second));
  return DaysFromCivil(year, static_cast<int>(month), static_cast<int>(day)) * kDay + hour * 3600 +
         minute * 60 + second;
}

std::string FormatTimestamp(int64_t seconds) {
  const Civil c = ToCivil(seconds);
  return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", c.year, c.month, c.day,
                     c.second_of_day / 3600, c.second_of_day / 60 % 60, c.second_of_day % 60);
}

// --------------------------------------------------------------------- stats

std::string TimeSeriesStats::ToJson() const {
  nlohmann::json vocab = nlohmann::json::array();
  for (const auto& v : vocabularies) vocab.push_back({{"column", v.column}, {"categories", v.categories}});
  nlohmann::json j = {{"feature_names", feature_names}, {"mean", mean},
                      {"stddev", stddev},               {"target_mean", target_mean},
                      {"target_stddev", target_stddev}, {"vocabularies", vocab},
                      {"train_rows", train_rows}};
  return j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace);
}

StatusOr<TimeSeriesStats> TimeSeriesStats::FromJson(std::string_view json) {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return DataLoss("time-series stats: not a JSON object");
  TimeSeriesStats s;
  try {
    s.feature_names = j.at("feature_names").get<std::vector<std::string>>();
    s.mean = j.at("mean").get<std::vector<double>>();
    s.stddev = j.at("stddev").get<std::vector<double>>();
    s.target_mean = j.at("target_mean").get<double>();
    s.target_stddev = j.at("target_stddev").get<double>();
    s.train_rows = j.at("train_rows").get<int64_t>();
    for (const auto& v : j.at("vocabularies")) {
      s.vocabularies.push_back({v.at("column").get<std::string>(),
                                v.at("categories").get<std::vector<std::string>>()});
    }
  } catch (const nlohmann::json::exception& e) {
    return DataLoss("time-series stats: {}", e.what());
  }
  if (s.mean.size() != s.feature_names.size() || s.stddev.size() != s.feature_names.size()) {
    return DataLoss("time-series stats: {} feature names but {} means and {} stddevs",
                    s.feature_names.size(), s.mean.size(), s.stddev.size());
  }
  for (size_t f = 0; f < s.stddev.size(); ++f) {
    if (!(s.stddev[f] > 0)) return DataLoss("time-series stats: stddev of '{}' is {}", s.feature_names[f], s.stddev[f]);
  }
  if (!(s.target_stddev > 0)) return DataLoss("time-series stats: target stddev is {}", s.target_stddev);
  return s;
}

// ---------------------------------------------------------- row policies

// A series after the job's row policies (steps 1-6 of reading it): parsed,
// in time order, on the frequency grid, duplicates and missing values and
// gaps handled as `malformed_policy`, `duplicate_policy`, `missing_policy`
// and `max_fill_steps` say. Training (TimeSeriesDataset::Open) and serving
// (PreprocessTimeSeriesWindow) both go through RegulariseRows, so a window
// cut from the training file is served exactly as it was trained on.
struct RegularSeries {
  std::vector<RawRow> rows;
  Problems malformed, off_grid, duplicates, missing_values, gaps;
  int64_t out_of_order = 0, cells_filled = 0, rows_dropped_missing = 0, missing_steps = 0,
          steps_filled = 0, gaps_left = 0;
};

// at(line): the prefix of a message about a record ("hour.csv:12: ",
// "window row 3: "); source names the whole input.
StatusOr<RegularSeries> RegulariseRows(const Spec& spec, const Columns& cols,
                                       const std::vector<CsvRecord>& records,
                                       const std::function<std::string(int64_t)>& at,
                                       const std::string& source) {
  const int64_t freq = spec.frequency_seconds();
  const bool fail_malformed = spec.malformed_policy() == Spec::Malformed::FAIL;
  const auto missing_policy = spec.missing_policy();
  RegularSeries out;
  std::vector<RawRow>& rows = out.rows;
  Problems &malformed = out.malformed, &off_grid = out.off_grid, &duplicates = out.duplicates,
           &missing_values = out.missing_values, &gaps = out.gaps;
  int64_t &out_of_order = out.out_of_order, &cells_filled = out.cells_filled,
          &rows_dropped_missing = out.rows_dropped_missing, &missing_steps = out.missing_steps,
          &steps_filled = out.steps_filled, &gaps_left = out.gaps_left;
  // 1. Parse every record; a record that cannot be read is malformed.
  rows.reserve(records.size());
  for (const CsvRecord& rec : records) {
    if (!rec.error.empty()) {
      malformed.Add(at(rec.line) + rec.error);
      continue;
    }
    RawRow row;
    row.line = rec.line;
    std::string why;
    if (!ParseRow(spec, cols, rec.fields, &row, &why)) {
      malformed.Add(at(rec.line) + why);
      continue;
    }
    rows.push_back(std::move(row));
  }
  if (malformed.count > 0 && fail_malformed) return malformed.ToStatus();

  // 2. Time order. Sorting is stable, so "first" still means first in the file.
  for (size_t i = 1; i < rows.size(); ++i) out_of_order += rows[i].time < rows[i - 1].time;
  std::stable_sort(rows.begin(), rows.end(),
                   [](const RawRow& a, const RawRow& b) { return a.time < b.time; });
  if (rows.empty()) {
    return InvalidArgument("{}: no usable rows ({} records, {} malformed{})", source,
                           records.size(), malformed.count,
                           malformed.examples.empty() ? "" : ": " + malformed.examples[0]);
  }

  // 3. Every timestamp on the grid that starts at the first one.
  {
    const int64_t t0 = rows[0].time;
    std::vector<RawRow> kept;
    kept.reserve(rows.size());
    for (RawRow& r : rows) {
      if ((r.time - t0) % freq != 0) {
        off_grid.Add(at(r.line) + fmt::format("timestamp {} is not on the {} s grid that starts at {}",
                                              FormatTimestamp(r.time), freq, FormatTimestamp(t0)));
        continue;
      }
      kept.push_back(std::move(r));
    }
    rows = std::move(kept);
  }
  if (off_grid.count > 0 && fail_malformed) return off_grid.ToStatus();

  // 4. Duplicate timestamps.
  {
    std::vector<RawRow> kept;
    kept.reserve(rows.size());
    for (RawRow& r : rows) {
      if (!kept.empty() && kept.back().time == r.time) {
        duplicates.Add(at(r.line) + fmt::format("timestamp {} repeats line {}", FormatTimestamp(r.time),
                                                kept.back().line));
        if (spec.duplicate_policy() == Spec::Duplicate::KEEP_LAST) kept.back() = std::move(r);
        continue;
      }
      kept.push_back(std::move(r));
    }
    rows = std::move(kept);
  }
  if (duplicates.count > 0 && spec.duplicate_policy() == Spec::Duplicate::FAIL) {
    return duplicates.ToStatus();
  }

  // 5. Missing values, then 6. gaps in time: both follow missing_policy.
  {
    std::vector<RawRow> kept;
    kept.reserve(rows.size());
    for (RawRow& r : rows) {
      std::string column;
      if (HasMissing(r, &column, spec, cols)) {
        missing_values.Add(at(r.line) + fmt::format("column '{}' has no value", column));
        if (missing_policy == Spec::Missing::FORWARD_FILL && !kept.empty()) {
          ForwardFill(kept.back(), &r, &cells_filled);
        } else {
          ++rows_dropped_missing;  // DROP, FAIL (which stops below), or nothing to fill from
          continue;
        }
      }
      kept.push_back(std::move(r));
    }
    rows = std::move(kept);
  }
  // Under FAIL, stop here: the rows just set aside would also show up as gaps.
  if (missing_policy == Spec::Missing::FAIL && missing_values.count > 0) return missing_values.ToStatus();
  if (rows.empty()) {
    return InvalidArgument("{}: every row has a missing value (first: {})", source,
                           missing_values.examples.empty() ? "" : missing_values.examples[0]);
  }
  if (missing_policy == Spec::Missing::FORWARD_FILL) {
    // One mistyped year would otherwise fill millions of rows (and memory):
    // a series that would be mostly invented is refused, naming the gap.
    int64_t to_fill = 0, widest = 0;
    size_t widest_at = 0;
    for (size_t i = 1; i < rows.size(); ++i) {
      const int64_t absent = (rows[i].time - rows[i - 1].time) / freq - 1;
      if (absent <= 0 || (spec.max_fill_steps() > 0 && absent > spec.max_fill_steps())) continue;
      to_fill += absent;
      if (absent > widest) {
        widest = absent;
        widest_at = i;
      }
    }
    const int64_t budget = kMaxFilledPerRow * static_cast<int64_t>(rows.size());
    if (to_fill > budget) {
      return InvalidArgument(
          "{}forward-filling would insert {} rows into {} read (at most {} per row read); the "
          "widest gap is {} missing steps ({} .. {}) after line {}: check the timestamps, or set "
          "timeseries.max_fill_steps so that long gaps break the series instead",
          at(rows[widest_at].line), to_fill, rows.size(), kMaxFilledPerRow, widest,
          FormatTimestamp(rows[widest_at - 1].time + freq), FormatTimestamp(rows[widest_at].time - freq),
          rows[widest_at - 1].line);
    }
  }
  {
    std::vector<RawRow> filled;
    filled.reserve(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      if (i > 0) {
        const RawRow& prev = rows[i - 1];
        const int64_t absent = (rows[i].time - prev.time) / freq - 1;
        if (absent > 0) {
          missing_steps += absent;
          gaps.Add(at(rows[i].line) +
                   fmt::format("{} missing step{} ({}{}) between line {} and this row", absent,
                               absent == 1 ? "" : "s", FormatTimestamp(prev.time + freq),
                               absent == 1 ? "" : " .. " + FormatTimestamp(rows[i].time - freq),
                               prev.line));
          const bool fill = missing_policy == Spec::Missing::FORWARD_FILL &&
                            (spec.max_fill_steps() == 0 || absent <= spec.max_fill_steps());
          if (fill) {
            for (int64_t k = 1; k <= absent; ++k) {
              RawRow r = filled.back();
              r.time = prev.time + k * freq;
              r.inserted = true;
              r.target_imputed = true;
              filled.push_back(std::move(r));
            }
            steps_filled += absent;
          } else {
            ++gaps_left;
          }
        }
      }
      filled.push_back(std::move(rows[i]));
    }
    rows = std::move(filled);
  }
  if (missing_policy == Spec::Missing::FAIL && gaps.count > 0) return gaps.ToStatus();

  return out;
}

// ---------------------------------------------------------------------- Open

StatusOr<TimeSeriesDataset> TimeSeriesDataset::Open(const Spec& spec) {
  POLIS_RETURN_IF_ERROR(ValidateSpec(spec));
  POLIS_ASSIGN_OR_RETURN(CsvTable table, ReadCsvFile(spec.path()));
  POLIS_ASSIGN_OR_RETURN(Columns cols, BindColumns(spec, table.header, table.source, true));
  const int64_t freq = spec.frequency_seconds();
  const bool fail_malformed = spec.malformed_policy() == Spec::Malformed::FAIL;
  auto at = [&](int64_t line) { return fmt::format("{}:{}: ", table.source, line); };

  POLIS_ASSIGN_OR_RETURN(RegularSeries series, RegulariseRows(spec, cols, table.records, at, table.source));
  std::vector<RawRow>& rows = series.rows;
  const Problems &malformed = series.malformed, &off_grid = series.off_grid,
                 &duplicates = series.duplicates, &missing_values = series.missing_values,
                 &gaps = series.gaps;
  const int64_t out_of_order = series.out_of_order, cells_filled = series.cells_filled,
                rows_dropped_missing = series.rows_dropped_missing,
                missing_steps = series.missing_steps, steps_filled = series.steps_filled,
                gaps_left = series.gaps_left;

  // 7. Split by time.
  const int64_t first_time = rows.front().time;
  const int64_t end_time = rows.back().time + freq;  // exclusive
  int64_t test_start = end_time, val_start = end_time;
  if (spec.has_test_start() || spec.has_validation_start()) {
    if (spec.has_test_start()) test_start = *ParseSplitTime(spec.test_start(), "test_start");
    val_start = spec.has_validation_start() ? *ParseSplitTime(spec.validation_start(), "validation_start")
                                            : test_start;
  } else {
    test_start = AddMonths(end_time, -spec.test_months());
    val_start = AddMonths(test_start, -spec.validation_months());
  }
  if (val_start > test_start) {
    return InvalidArgument("{}: validation_start {} is after test_start {}", table.source,
                           FormatTimestamp(val_start), FormatTimestamp(test_start));
  }
  if (val_start <= first_time) {
    return InvalidArgument("{}: the training split is empty: the data start at {} and validation/test "
                           "start at {}", table.source, FormatTimestamp(first_time), FormatTimestamp(val_start));
  }
  const int64_t bounds[4] = {first_time, val_start, test_start, end_time};
  auto split_of = [&](int64_t t) { return t < val_start ? kTrain : t < test_start ? kValidation : kTest; };

  TimeSeriesDataset ds;
  ds.spec_ = spec;
  ds.lookback_ = spec.lookback();
  ds.horizon_ = spec.horizon();
  for (int s = 0; s < 3; ++s) ds.split_range_[s] = {bounds[s], std::max(bounds[s], bounds[s + 1])};

  // 8. Vocabularies from the training rows only.
  TimeSeriesStats& stats = ds.stats_;
  for (int i = 0; i < spec.categorical_features_size(); ++i) {
    std::set<std::string> seen;
    for (const RawRow& r : rows) {
      if (split_of(r.time) == kTrain) seen.insert(r.cat[i]);
    }
    stats.vocabularies.push_back({spec.categorical_features(i).column(), SortCategories(seen)});
  }

  // 9. Encode, fit mean/std on the training rows read from the file, standardise.
  Encoder enc(ds.spec_, stats.vocabularies);
  const int64_t F = enc.size();
  const int64_t n = static_cast<int64_t>(rows.size());
  ds.num_features_ = F;
  stats.feature_names = enc.names();
  std::vector<double> raw(static_cast<size_t>(n * F));
  for (int64_t r = 0; r < n; ++r) enc.Encode(rows[r], raw.data() + r * F);
  std::vector<std::string> constant;
  auto fit = [&](auto value, auto use, double* mean, double* stddev, const std::string& name) {
    double sum = 0;
    int64_t count = 0;
    for (int64_t r = 0; r < n; ++r) {
      if (use(r)) { sum += value(r); ++count; }
    }
    *mean = count > 0 ? sum / count : 0;
    double sq = 0;
    for (int64_t r = 0; r < n; ++r) {
      if (use(r)) sq += (value(r) - *mean) * (value(r) - *mean);
    }
    *stddev = count > 0 ? std::sqrt(sq / count) : 0;
    if (!(*stddev > 1e-12 * std::max(1.0, std::abs(*mean)))) {
      *stddev = 1;  // constant on train: centred, not scaled
      constant.push_back(name);
    }
    return count;
  };
  auto train_observed = [&](int64_t r) { return split_of(rows[r].time) == kTrain && !rows[r].inserted; };
  stats.train_rows = fit([&](int64_t r) { return rows[r].num[0]; },
                         [&](int64_t r) { return train_observed(r) && !rows[r].target_imputed; },
                         &stats.target_mean, &stats.target_stddev, spec.target_column());
  stats.mean.assign(F, 0.0);
  stats.stddev.assign(F, 1.0);
  for (int64_t f = 0; f < F; ++f) {
    if (!enc.standardised(f)) continue;
    if (f == 0 && spec.target_as_feature()) {
      stats.mean[0] = stats.target_mean;
      stats.stddev[0] = stats.target_stddev;
      continue;
    }
    fit([&](int64_t r) { return raw[r * F + f]; }, train_observed, &stats.mean[f], &stats.stddev[f],
        stats.feature_names[f]);
  }
  // Sums of squares of values near 1e200 overflow: such a column cannot be
  // standardised (and the stats could not be stored as JSON).
  for (int64_t f = -1; f < F; ++f) {
    const double mean = f < 0 ? stats.target_mean : stats.mean[f];
    const double stddev = f < 0 ? stats.target_stddev : stats.stddev[f];
    if (!std::isfinite(mean) || !std::isfinite(stddev))
      return InvalidArgument("{}: {} '{}' has training mean {} and standard deviation {}: its values "
                             "are too large to standardise", table.source, f < 0 ? "column" : "feature",
                             f < 0 ? spec.target_column() : stats.feature_names[f], mean, stddev);
  }
  ds.x_.resize(static_cast<size_t>(n * F));
  ds.y_.resize(static_cast<size_t>(n));
  ds.target_raw_.resize(static_cast<size_t>(n));
  ds.time_.resize(static_cast<size_t>(n));
  std::vector<uint8_t> target_imputed(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    Standardise(stats, raw.data() + r * F, ds.x_.data() + r * F);
    ds.target_raw_[r] = rows[r].num[0];
    ds.y_[r] = static_cast<float>((rows[r].num[0] - stats.target_mean) / stats.target_stddev);
    ds.time_[r] = rows[r].time;
    target_imputed[r] = rows[r].target_imputed;
  }
  // A value far outside the training range (1e102 among values near 10)
  // standardises beyond float: refused, naming the cell, rather than
  // training on infinities.
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t f = 0; f < F; ++f) {
      if (!std::isfinite(ds.x_[r * F + f]))
        return InvalidArgument("{}feature '{}': {}", at(rows[r].line), stats.feature_names[f],
                               OutOfFloat(raw[r * F + f], stats.mean[f], stats.stddev[f]));
    }
    if (!std::isfinite(ds.y_[r]))
      return InvalidArgument("{}column '{}': {}", at(rows[r].line), spec.target_column(),
                             OutOfFloat(rows[r].num[0], stats.target_mean, stats.target_stddev));
  }

  // 10. Windows: within one split, over consecutive rows, targets observed.
  const int64_t L = ds.lookback_, H = ds.horizon_, span = L + H;
  int64_t rows_in[3] = {0, 0, 0}, skipped_imputed[3] = {0, 0, 0};
  for (int64_t r = 0; r < n; ++r) ++rows_in[split_of(ds.time_[r])];
  int64_t run_begin = 0;
  for (int64_t r = 1; r <= n; ++r) {
    const bool run_ends = r == n || ds.time_[r] - ds.time_[r - 1] != freq ||
                          split_of(ds.time_[r]) != split_of(ds.time_[r - 1]);
    if (!run_ends) continue;
    const int s = split_of(ds.time_[run_begin]);
    for (int64_t start = run_begin; start + span <= r; start += spec.stride()) {
      bool imputed = false;
      for (int64_t k = start + L; k < start + span; ++k) imputed |= target_imputed[k] != 0;
      if (imputed) {
        ++skipped_imputed[s];
        continue;
      }
      ds.windows_[s].push_back(start);
    }
    run_begin = r;
  }
  const bool requested[3] = {true, val_start < test_start, test_start < end_time};
  for (int s = 0; s < 3; ++s) {
    if (requested[s] && ds.windows_[s].empty()) {
      return InvalidArgument(
          "{}: the {} split ({} .. {}, {} rows) holds no window of lookback {} + horizon {} "
          "consecutive steps{}", table.source, SplitName(s), FormatTimestamp(bounds[s]),
          FormatTimestamp(std::max(bounds[s], bounds[s + 1]) - freq), rows_in[s], L, H,
          gaps_left > 0 ? fmt::format(" ({} gaps break the series)", gaps_left) : "");
    }
  }

  // 11. The report.
  std::string& rep = ds.report_;
  rep += fmt::format("time series '{}': {} records read ({} blank lines skipped), {} rows kept\n",
                     table.source, table.records.size(), table.blank_lines, n - steps_filled);
  auto policy = [&](const Problems& p, const char* what, const char* action) {
    if (p.count == 0) return;
    rep += fmt::format("  {}: {} ({})\n", what, p.count, action);
    for (const auto& e : p.examples) rep += fmt::format("    {}\n", e);
  };
  const char* mal = fail_malformed ? "fail" : "dropped";
  policy(malformed, "malformed rows", mal);
  policy(off_grid, "timestamps off the grid", mal);
  if (out_of_order > 0) rep += fmt::format("  rows out of time order: {} (sorted)\n", out_of_order);
  policy(duplicates, "duplicate timestamps",
         spec.duplicate_policy() == Spec::Duplicate::KEEP_LAST ? "kept the last" : "kept the first");
  if (missing_values.count > 0) {
    rep += fmt::format("  rows with missing values: {} ({} cells forward-filled, {} rows dropped)\n",
                       missing_values.count, cells_filled, rows_dropped_missing);
    for (const auto& e : missing_values.examples) rep += fmt::format("    {}\n", e);
  }
  if (gaps.count > 0) {
    rep += fmt::format("  gaps in time: {} ({} missing steps of {} s; {} steps forward-filled, {} gaps "
                       "left as breaks)\n", gaps.count, missing_steps, freq, steps_filled, gaps_left);
    for (const auto& e : gaps.examples) rep += fmt::format("    {}\n", e);
  }
  if (!constant.empty()) {
    rep += fmt::format("  constant on the training split (centred, not scaled): {}\n", fmt::join(constant, ", "));
  }
  rep += fmt::format("  features ({}): {}\n", F, fmt::join(stats.feature_names, ", "));
  rep += fmt::format("  target '{}': train mean {:.6g}, stddev {:.6g}; lookback {}, horizon {}, stride {}\n",
                     spec.target_column(), stats.target_mean, stats.target_stddev, L, H, spec.stride());
  for (int s = 0; s < 3; ++s) {
    const std::string range = bounds[s] < bounds[s + 1]
                                  ? FormatTimestamp(bounds[s]) + " .. " + FormatTimestamp(bounds[s + 1] - freq)
                                  : std::string("(empty)");
    rep += fmt::format("  {:<10} {:<42} {:>7} rows {:>7} windows", SplitName(s), range, rows_in[s],
                       ds.windows_[s].size());
    if (skipped_imputed[s] > 0) rep += fmt::format(" ({} skipped: a forward-filled target)", skipped_imputed[s]);
    rep += "\n";
  }
  POLIS_LOG(kInfo, kData, "{}", rep);
  return ds;
}

// -------------------------------------------------------------- hot path etc.

void TimeSeriesDataset::Gather(Split s, const int64_t* indices, int64_t n, float* x, float* y) const {
  const std::vector<int64_t>& w = windows_[s];
  const int64_t xs = lookback_ * num_features_;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = indices[k];
    POLIS_ENFORCE_GE(i, int64_t{0});
    POLIS_ENFORCE_LT(i, static_cast<int64_t>(w.size()));
    const int64_t start = w[i];
    std::memcpy(x + k * xs, row_x(start), sizeof(float) * xs);
    std::memcpy(y + k * horizon_, y_.data() + start + lookback_, sizeof(float) * horizon_);
  }
}

TimeSeriesDataset::WindowTimes TimeSeriesDataset::window_times(Split s, int64_t i) const {
  POLIS_ENFORCE_GE(i, int64_t{0});
  POLIS_ENFORCE_LT(i, size(s));
  const int64_t start = windows_[s][i];
  return {time_[start], time_[start + lookback_ - 1], time_[start + lookback_],
          time_[start + lookback_ + horizon_ - 1]};
}

namespace {

// The first `limit` of `windows` (all of them when limit < 0).
std::span<const int64_t> FirstWindows(const std::vector<int64_t>& windows, int64_t limit) {
  const size_t n = limit < 0 ? windows.size() : std::min(windows.size(), static_cast<size_t>(limit));
  return {windows.data(), n};
}

}  // namespace

TimeSeriesDataset::Metrics TimeSeriesDataset::SeasonalNaive(Split s, int64_t season, int64_t limit) const {
  POLIS_ENFORCE_GE(season, int64_t{1});
  POLIS_ENFORCE_LE(season, lookback_);
  std::vector<double> pred, actual;
  for (int64_t start : FirstWindows(windows_[s], limit)) {
    for (int64_t h = 0; h < horizon_; ++h) {
      const int64_t t = start + lookback_ + h;
      const int64_t back = (h / season + 1) * season;  // whole seasons, into the inputs
      pred.push_back(target_raw_[t - back]);
      actual.push_back(target_raw_[t]);
    }
  }
  return Score(pred, actual);
}

TimeSeriesDataset::Metrics TimeSeriesDataset::LastValue(Split s, int64_t limit) const {
  std::vector<double> pred, actual;
  for (int64_t start : FirstWindows(windows_[s], limit)) {
    for (int64_t h = 0; h < horizon_; ++h) {
      pred.push_back(target_raw_[start + lookback_ - 1]);
      actual.push_back(target_raw_[start + lookback_ + h]);
    }
  }
  return Score(pred, actual);
}

TimeSeriesDataset::Metrics TimeSeriesDataset::Score(const std::vector<double>& predicted,
                                                    const std::vector<double>& actual) {
  POLIS_ENFORCE_EQ(predicted.size(), actual.size());
  Metrics m{kNaN, kNaN, kNaN, kNaN, static_cast<int64_t>(actual.size()), 0};
  if (actual.empty()) return m;
  double abs_sum = 0, sq_sum = 0, ape_sum = 0, sape_sum = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double e = std::abs(predicted[i] - actual[i]);
    abs_sum += e;
    sq_sum += e * e;
    if (actual[i] != 0) {
      ape_sum += e / std::abs(actual[i]);
      ++m.mape_count;
    }
    const double denom = std::abs(actual[i]) + std::abs(predicted[i]);
    if (denom > 0) sape_sum += 2 * e / denom;
  }
  const double count = static_cast<double>(actual.size());
  m.mae = abs_sum / count;
  m.rmse = std::sqrt(sq_sum / count);
  m.mape = m.mape_count > 0 ? 100 * ape_sum / static_cast<double>(m.mape_count) : kNaN;
  m.smape = 100 * sape_sum / count;
  return m;
}

StatusOr<std::vector<float>> TimeSeriesDataset::PreprocessWindow(
    const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) const {
  return PreprocessTimeSeriesWindow(spec_, stats_, header, rows);
}

// --------------------------------------------------------- serving windows

struct WindowPreprocessor::Impl {
  Impl(const Spec& s, const TimeSeriesStats& st, Columns c)
      : spec(s), stats(st), cols(std::move(c)), enc(spec, stats.vocabularies) {}
  Spec spec;
  TimeSeriesStats stats;
  Columns cols;
  Encoder enc;  // refers to spec and stats above

  // Rows after splitting (records[i].line = i + 1) -> the window.
  Status Window(const std::vector<CsvRecord>& records, float* out) const;
  // The same for lines that need none of the row policies, without copies.
  bool PlainWindow(const std::vector<std::string_view>& lines, float* out) const;
};

namespace {

// The fields of a line that holds no quote and no newline, as views into
// it (a '\r' ending the line is not part of the last field, as in
// RecordParser); false for any other line.
bool SplitPlainLine(std::string_view line, std::vector<std::string_view>* fields) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  fields->clear();
  size_t start = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == ',') {
      fields->push_back(line.substr(start, i - start));
      start = i + 1;
    } else if (c == '"' || c == '\n') {
      return false;
    }
  }
  fields->push_back(line.substr(start));
  return true;
}

}  // namespace

// Most served windows are clean: every line reads, no value is missing and
// each step follows the last. Then RegulariseRows would return the rows as
// they are, so they are encoded as they are read: one RawRow and one field
// list reused, no per-row allocation. Anything else (a quote, a malformed
// or incomplete row, a duplicate, a gap, a value out of a float's range)
// returns false, and Preprocess takes the general path, which applies the
// policies and words the problem.
bool WindowPreprocessor::Impl::PlainWindow(const std::vector<std::string_view>& lines,
                                           float* out) const {
  const int64_t L = spec.lookback(), n = static_cast<int64_t>(lines.size()), F = enc.size();
  if (n < L) return false;
  const size_t width = cols.names.size();
  std::vector<std::string_view> fields;
  fields.reserve(width);
  std::vector<double> raw(static_cast<size_t>(F));
  RawRow row;
  std::string why, column;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t previous = row.time;
    if (!SplitPlainLine(lines[i], &fields) || fields.size() != width ||
        !ParseRow(spec, cols, fields, &row, &why) || HasMissing(row, &column, spec, cols) ||
        (i > 0 && row.time != previous + spec.frequency_seconds())) {
      return false;
    }
    if (i < n - L) continue;  // before the window: checked, not encoded
    float* x = out + (i - (n - L)) * F;
    enc.Encode(row, raw.data());
    Standardise(stats, raw.data(), x);
    for (int64_t f = 0; f < F; ++f) {
      if (!std::isfinite(x[f])) return false;
    }
  }
  return true;
}

StatusOr<WindowPreprocessor> WindowPreprocessor::Create(const Spec& spec, const TimeSeriesStats& stats,
                                                        const std::vector<std::string>& header) {
  POLIS_RETURN_IF_ERROR(ValidateSpec(spec));
  POLIS_ASSIGN_OR_RETURN(Columns cols, BindColumns(spec, header, "window", spec.target_as_feature()));
  if (static_cast<int>(stats.vocabularies.size()) != spec.categorical_features_size()) {
    return FailedPrecondition("stats hold {} vocabularies but the spec has {} categorical features",
                              stats.vocabularies.size(), spec.categorical_features_size());
  }
  auto impl = std::make_shared<Impl>(spec, stats, std::move(cols));
  if (impl->enc.names() != stats.feature_names) {
    return FailedPrecondition("stats were fitted for features [{}] but this spec gives [{}]",
                              fmt::join(stats.feature_names, ", "), fmt::join(impl->enc.names(), ", "));
  }
  return WindowPreprocessor(std::move(impl));
}

int64_t WindowPreprocessor::elements() const { return impl_->spec.lookback() * impl_->enc.size(); }

Status WindowPreprocessor::Preprocess(const std::vector<std::string_view>& lines, float* out) const {
  if (impl_->PlainWindow(lines, out)) return Status::Ok();
  const size_t fields = impl_->cols.names.size();
  std::vector<CsvRecord> records(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    CsvRecord& rec = records[i];
    rec.line = static_cast<int64_t>(i + 1);
    rec.fields.reserve(fields);
    if (Status st = SplitCsvLineInto(lines[i], &rec); !st.ok()) {
      // "line:K: why" -> "window row K: why"
      const std::string& msg = st.message();
      const size_t colon = msg.find(": ");
      return InvalidArgument("window row {}: {}", i + 1,
                             colon == std::string::npos ? msg : msg.substr(colon + 2));
    }
    if (rec.error.empty() && rec.fields.size() != fields)
      rec.error = fmt::format("has {} fields; the header has {}", rec.fields.size(), fields);
  }
  return impl_->Window(records, out);
}

Status WindowPreprocessor::Preprocess(const std::vector<std::vector<std::string>>& rows,
                                      float* out) const {
  const size_t fields = impl_->cols.names.size();
  std::vector<CsvRecord> records(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    records[i].line = static_cast<int64_t>(i + 1);
    if (rows[i].size() != fields)
      records[i].error = fmt::format("has {} fields; the header has {}", rows[i].size(), fields);
    else
      records[i].fields = rows[i];
  }
  return impl_->Window(records, out);
}

Status WindowPreprocessor::Impl::Window(const std::vector<CsvRecord>& records, float* out) const {
  auto at = [](int64_t line) { return fmt::format("window row {}: ", line); };
  POLIS_ASSIGN_OR_RETURN(RegularSeries series, RegulariseRows(spec, cols, records, at, "window"));
  const int64_t L = spec.lookback(), n = static_cast<int64_t>(series.rows.size());
  if (n < L) {
    return InvalidArgument("window has {} rows ({} sent, after the job's row policies); the model takes "
                           "lookback = {} consecutive steps",
                           n, records.size(), L);
  }
  // The last `lookback` steps: a window.
  const RawRow* parsed = series.rows.data() + (n - L);
  for (int64_t i = 1; i < L; ++i) {
    const int64_t expected = parsed[i - 1].time + spec.frequency_seconds();
    if (parsed[i].time != expected) {
      return InvalidArgument("window row {}: timestamp {}; expected {} (a gap that the job's missing_policy "
                             "and max_fill_steps leave as a break: {} consecutive steps are needed)",
                             parsed[i].line, FormatTimestamp(parsed[i].time), FormatTimestamp(expected), L);
    }
  }
  const int64_t F = enc.size();
  std::vector<double> raw(static_cast<size_t>(F));
  for (int64_t i = 0; i < L; ++i) {
    float* row_out = out + i * F;
    enc.Encode(parsed[i], raw.data());
    Standardise(stats, raw.data(), row_out);
    for (int64_t f = 0; f < F; ++f) {
      if (!std::isfinite(row_out[f]))
        return InvalidArgument("window row {}: feature '{}': {}", parsed[i].line, stats.feature_names[f],
                               OutOfFloat(raw[f], stats.mean[f], stats.stddev[f]));
    }
  }
  return Status::Ok();
}

StatusOr<std::vector<float>> PreprocessTimeSeriesWindow(
    const proto::TimeSeriesSpec& spec, const TimeSeriesStats& stats,
    const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  POLIS_ASSIGN_OR_RETURN(WindowPreprocessor pre, WindowPreprocessor::Create(spec, stats, header));
  std::vector<float> out(static_cast<size_t>(pre.elements()));
  POLIS_RETURN_IF_ERROR(pre.Preprocess(rows, out.data()));
  return out;
}


std::string TimeSeriesDataset::BaselinesJson(Split s, int64_t limit) const {
  const Metrics sn = SeasonalNaive(s, std::min<int64_t>(168, lookback_), limit), lv = LastValue(s, limit);
  const nlohmann::json j = {{"seasonal_naive_mae", sn.mae}, {"seasonal_naive_rmse", sn.rmse},
                            {"seasonal_naive_mape", sn.mape}, {"seasonal_naive_smape", sn.smape},
                            {"last_value_mae", lv.mae}, {"last_value_rmse", lv.rmse},
                            {"last_value_mape", lv.mape}, {"last_value_smape", lv.smape}};
  return j.dump();
}

std::string TimeSeriesDataset::PreprocessingJson() const {
  auto j = nlohmann::json::parse(stats_.ToJson(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return stats_.ToJson();
  std::ifstream in(spec_.path());
  std::string line;
  if (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("\xEF\xBB\xBF", 0) == 0) line = line.substr(3);
    nlohmann::json names = nlohmann::json::array();
    std::stringstream ss(line);
    std::string name;
    while (std::getline(ss, name, ',')) {
      if (name.size() >= 2 && name.front() == '"' && name.back() == '"') name = name.substr(1, name.size() - 2);
      names.push_back(name);
    }
    j["header"] = names;
  }
  return j.dump();
}

}  // namespace polis::data
